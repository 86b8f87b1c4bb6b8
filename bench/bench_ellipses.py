"""Cost and accuracy of the multi-ellipse exact-chart score (``bip.ellipses``).

    python -m bench.bench_ellipses cost        # one score evaluation, batch 8, 128 / 256 px
    python -m bench.bench_ellipses accuracy    # against importance sampling, 2 ellipses

``cost``: ``bip.priors.exact(PhantomLaw(m)).score`` (jitted) on 8 noisy draws at sigma 0.02,
best of 3 after compilation, float32 and float64, for ``grid_manifold(4)`` (24 chart
coordinates) at 128 and 256 px and ``shepp_logan_manifold`` (16 coordinates, 10 ellipses)
at 256 px. ``accuracy``: the score of ``grid_manifold(2, 32)`` (12 coordinates) at
``x = Phi(u) + sigma z`` against self-normalised importance sampling (Tweedie:
``(E[Phi(U) | x] - x) / sigma^2``) with the Laplace Gaussian, widened 1.5x, as proposal
(``2 x 10^5`` antithetic draws); errors relative to the O(1) part of the score (the score
minus its normal pull ``(Phi(u0) - x) / sigma^2``, the part that carries ``p_data``).

Measured on the shared 2-core machine at load 15-28 (wall times there are 5-10x an idle
machine's, so the CPU seconds of the process, all threads, are the comparable number; 12
Levenberg-Marquardt steps, the default is now 8, about 20% cheaper):

==========================  ======  ==  ================  ================  ===========
manifold                    size    n   float32 CPU-s      float64 CPU-s     compile (s)
==========================  ======  ==  ================  ================  ===========
grid_manifold(4)            128     24  0.70               1.43              70 (loaded)
grid_manifold(4)            256     24  5.5                6.2               155
shepp_logan_manifold        256     16  24.6               (not run)         271
==========================  ======  ==  ================  ================  ===========

(one score of 8 images; the nearest-point search is about two thirds of it). A ULA step of
``ct-ellipses-128-exact`` (4 chains, float64, 8 LM steps) measured 0.46 CPU-s.

Accuracy (``grid_manifold(2, 32)``: semi-axes 1.3-4.5 px, small against the 1-px edges, so a
strongly curved chart), error relative to the O(1) part, importance sampling ESS 1.8e3-2.2e4
(its Monte Carlo error is part of these numbers): sigma 0.02: 5.3%, 2.8%, 1.3% (whole score
2.2e-4, 6.5e-4, 3.8e-5); sigma 0.05: 28%, 12%, 6.1% (whole 7.0e-3, 5.7e-3, 8.0e-4). Larger
ellipses in pixels (128 px) bend the chart less; the 2-parameter quadrature test
(tests/test_ellipses.py, 16 px, semi-axes 2-3 px) measured 5e-4 (sigma 0.02), up to 2.4e-2 (0.05).
"""

from __future__ import annotations

import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bip import _laplace, ellipses, images, priors  # noqa: E402


def _timed(fn, *args, repeats=3):
    """Compile seconds, then the best wall and CPU (all threads) seconds of ``repeats`` calls."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - start
    best, best_cpu = np.inf, np.inf
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    return compile_s, best, best_cpu


def cost() -> list[dict]:
    rows = []
    cases = [
        ("grid_manifold(4)", ellipses.grid_manifold(4, 128)),
        ("grid_manifold(4)", ellipses.grid_manifold(4, 256)),
        ("shepp_logan_manifold", ellipses.shepp_logan_manifold(256)),
    ]
    for name, m in cases:
        law = images.PhantomLaw(m)
        score = jax.jit(priors.exact(law).score)
        clean = law.sample(jax.random.key(0), (8,))
        noise = jax.random.normal(jax.random.key(1), clean.shape)
        for dtype in (jnp.float32, jnp.float64):
            x = (clean + 0.02 * noise).astype(dtype)
            compile_s, best, cpu = _timed(score, x, jnp.asarray(0.02, dtype))
            row = {"manifold": name, "size": m.size, "n": m.intrinsic_dim, "dtype": dtype.__name__}
            row.update(compile_s=round(compile_s, 1), seconds=round(best, 3), cpu_s=round(cpu, 3))
            print(row, flush=True)
            rows.append(row)
    return rows


def _importance_score(m, law, x, sigma, num_draws, key):
    """Tweedie score of one image by importance sampling around its Laplace point."""
    flat = x.reshape(-1)
    z0 = _laplace.nearest(m, x[None], jnp.ones(1), law.margin, 8, 4, 40)[0]
    r = m._render_unit(z0) - flat
    jac = m._jacobian_unit(z0)
    h = jac.T @ jac + m._curvature_unit(z0, r)
    cov = 1.5**2 * sigma**2 * jnp.linalg.inv(0.5 * (h + h.T))
    chol = jnp.linalg.cholesky(cov)
    eps = jax.random.normal(key, (num_draws // 2, m.intrinsic_dim))
    eps = jnp.concatenate([eps, -eps])
    z = z0 + eps @ chol.T
    log_q = -0.5 * jnp.sum(eps**2, axis=-1)
    inside = jnp.all((z >= 0) & (z <= 1), axis=-1)
    images_ = jax.lax.map(m._render_unit, z, batch_size=2048)
    log_w = -jnp.sum((images_ - flat) ** 2, axis=-1) / (2 * sigma**2) - log_q
    log_w = jnp.where(inside, log_w, -jnp.inf)
    w = jnp.exp(log_w - jnp.max(log_w))
    w = w / jnp.sum(w)
    mean = w @ images_
    ess = 1.0 / jnp.sum(w**2)
    return ((mean - flat) / sigma**2).reshape(x.shape), float(ess), m._render_unit(z0)


def accuracy() -> list[dict]:
    m = ellipses.grid_manifold(2, 32)
    law = images.PhantomLaw(m)
    rows = []
    for sigma in (0.02, 0.05):
        u = law.sample_coordinates(jax.random.key(2), (3,))
        x = m.chart(u) + sigma * jax.random.normal(jax.random.key(3), (3, 32, 32))
        _, score = law.smoothed(x, sigma, 1.0)
        for i in range(3):
            ref, ess, phi0 = _importance_score(m, law, x[i], sigma, 200_000, jax.random.key(i))
            o1 = np.asarray(ref).reshape(-1) - np.asarray(phi0 - x[i].reshape(-1)) / sigma**2
            err = np.linalg.norm(np.asarray(score[i] - ref))
            row = {
                "sigma": sigma,
                "image": i,
                "whole": float(err / np.linalg.norm(np.asarray(ref))),
                "o1_part": float(err / np.linalg.norm(o1)),
                "ess": round(ess),
            }
            print(row, flush=True)
            rows.append(row)
    return rows


if __name__ == "__main__":
    {"cost": cost, "accuracy": accuracy}[sys.argv[1] if len(sys.argv) > 1 else "cost"]()
