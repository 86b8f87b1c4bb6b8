"""Robustness sweeps: score-error size x sigma x alpha, critical errors and their rates.

For a prior on the circle (alone or with a likelihood), inject an error ``eps * e(x)`` and
find, for each sigma and alpha, the critical size ``eps*(sigma)`` at which the law departs
from the zero-error law at the same sigma and alpha: the TV of 36-bin angle histograms to
the exact zero-error law rises by ``threshold`` (0.1) above its ``eps = 0`` value
(SCIENCE.md section 5). Expected: slope 0 of ``log eps*`` against ``log sigma`` for the
generic prior (alpha = 0) and ``-alpha`` for the maximum-entropy prior.

Two versions side by side: ``exact`` (stationary laws by quadrature, no sampling) and
``sampled`` (ULA chains started from the exact zero-error law; all error sizes run as
extra chains of ONE ``bip.chains.run`` whose schedule gives each chain its error size, and
sigma, alpha and the step counts are traced values, so the whole sweep compiles once).
Image posteriors: ``image_sweep`` / ``image_problem_sweep`` (``bip.image_sweeps``); what
both share (critical sizes, slopes, the cell loop): ``bip.sweeps``.

Example:
    >>> sweep = bip.experiments.circle_sweep(sigmas=[0.3, 0.1], alphas=[0.0, 1.0],
    ...                                      sizes=jnp.geomspace(0.05, 50, 16))
    >>> sweep.summary()["slope"]
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bip import _checks, errors, manifolds, metrics, priors, samplers, sharding, sweeps, targets
from bip.image_sweeps import ImageSweep, image_problem_sweep, image_sweep
from bip.sweeps import THRESHOLD, SweepInterrupted, critical_size, decimal_key, fit_slope

Array = jax.Array

__all__ = [
    "THRESHOLD",
    "NUM_BINS",
    "critical_size",
    "fit_slope",
    "Sweep",
    "SweepInterrupted",
    "circle_sweep",
    "ImageSweep",
    "image_sweep",
    "image_problem_sweep",
]

NUM_BINS = 36


@dataclass
class Sweep:
    """Results of a sweep: one record per run plus the critical sizes and slopes."""

    records: list[dict] = field(default_factory=list)
    eps_star: dict = field(default_factory=dict)  # mode -> alpha -> sigma -> eps*
    config: dict = field(default_factory=dict)

    def slopes(self, mode: str = "sampled") -> dict:
        return sweeps.slopes(self.eps_star.get(mode, {}))

    def summary(self) -> dict:
        """``summary.json`` content: eps* and slopes (sampled), and the exact-law versions."""
        primary = "sampled" if "sampled" in self.eps_star else "exact"
        return {
            "eps_star": self.eps_star.get(primary, {}),
            "slope": self.slopes(primary),
            "eps_star_exact": self.eps_star.get("exact", {}),
            "slope_exact": self.slopes("exact"),
            "threshold": THRESHOLD,
            "config": self.config,
        }

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``results.json`` and ``summary.json`` atomically into ``out_dir``."""
        return sweeps.save_sweep(out_dir, self.records, self.summary())


def _zero_error_start(rng_key, law: targets.AngularLaw, num: int) -> Array:
    """Points on the unit circle with angles drawn from ``law`` by inverse CDF."""
    u = jax.random.uniform(rng_key, (num,))
    cdf = np.concatenate([[0.0], law.cdf()])
    edges = -math.pi + np.arange(law.theta.size + 1) * (2 * math.pi / law.theta.size)
    theta = jnp.interp(u, jnp.asarray(cdf / cdf[-1]), jnp.asarray(edges))
    return jnp.stack([jnp.cos(theta), jnp.sin(theta)], -1)


def _make_sampler(base_prior, error, likelihood, num_snapshots: int, mesh=None):
    """``run_cell(rng_key, x0, sizes, sigma, alpha, step_size, num_steps) -> Run`` running all
    (size, chain) pairs of one (sigma, alpha) cell through ``bip.chains.run``: chain ``c``
    has error size ``sizes[c]``; its kept draws are ``num_snapshots`` angles over the second
    half of the run.

    With a ``mesh`` the (size, chain) axis is split over its devices (per-chain keys, so the
    result does not depend on the number of devices)."""

    def run_cell(rng_key, x0, sizes, sigma, alpha, step_size, num_steps):
        schedule = sweeps.cell_schedule(base_prior, error, likelihood, 0.0, sigma, alpha, step_size)
        return sweeps.run_error_chains(
            rng_key, schedule, x0, sizes, num_steps, num_snapshots, observe=_angle, mesh=mesh
        )

    return run_cell


def _angle(x):
    return jnp.arctan2(x[1], x[0])


def _make_exact(base_prior, error, potential, num_theta: int = 720, num_r: int = 200):
    """Jitted exact bin probabilities ``(sizes,) -> (sizes, 36)`` for one (sigma, alpha)."""

    @jax.jit
    def bins(sizes, sigma, alpha):
        w = sigma ** (1 - alpha / 2)
        lo, hi = jnp.maximum(0.0, 1.0 - 12 * w), 1.0 + 12 * w

        def one(size):
            corrupted = priors.with_error(base_prior, error, size)

            def log_pi(x):
                out = sigma**alpha * corrupted.logdensity(x, sigma)
                return out - potential(x) if potential is not None else out

            logd = targets.angular_log_marginal(log_pi, lo, hi, num_theta, num_r)
            p = jax.nn.softmax(logd)
            return p.reshape(NUM_BINS, -1).sum(axis=1)

        return jax.lax.map(one, sizes)

    return bins


def circle_sweep(
    sigmas: Sequence[float] = (0.3, 0.2, 0.1, 0.05),
    alphas: Sequence[float] = (0.0, 1.0, 1.5),
    sizes: Sequence[float] | None = None,
    *,
    kappa: float = 4.0,
    loc: float = math.pi,
    error: errors.ScoreError | None = None,
    observe: tuple[int, float, float] | None = None,
    num_chains: int = 2000,
    mixing_time: float = 1.5,
    c: float = 0.1,
    num_snapshots: int = 20,
    seed: int = 0,
    sample: bool = True,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    on_cell: Callable | None = None,
) -> Sweep:
    """Rate-separation sweep on the unit circle with a von Mises data law.

    Args:
        sigmas, alphas: the grid; every alpha in [0, 2), every sigma > 0.
        sizes: error sizes ``eps`` (ascending, first > 0); default 24 sizes from 0.03 to 200.
        kappa, loc: the von Mises data law.
        error: conservative error field (default ``angular_cosine(2)``, the ``cos 2 theta``
            potential of SCIENCE.md section 5).
        observe: ``(coordinate, value, noise_std)`` adds the likelihood "observe
            x[coordinate] = value with Gaussian noise noise_std"; None samples the prior alone.
        num_chains: chains per error size (and for eps = 0).
        mixing_time: Langevin time simulated per cell; steps = mixing_time / h with
            ``h = c * min(sigma^(2 - alpha), 1/L)``.
        num_snapshots: histogram draws pooled over the second half of each run.
        sample: also run the sampled version (else exact laws only).
        mesh: a ``jax.sharding.Mesh`` (e.g. ``bip.sharding.chain_mesh()``) to split the chains
            of each cell (``(len(sizes) + 1) * num_chains`` of them, which must be a multiple
            of ``mesh.size``) over its devices; the results do not depend on it.
        on_cell: called as ``on_cell(sweep, cells_done, cells_total)`` after each cell but
            the last, e.g. to save the finished cells (``bip robustness`` does).

    Ctrl-C raises ``SweepInterrupted`` whose ``partial`` holds the finished cells.
    """
    for s in sigmas:
        _checks.positive("sigma", s)
    for a in alphas:
        _checks.alpha(a)
    sizes = np.geomspace(0.03, 200.0, 24) if sizes is None else np.asarray(sizes, float)
    if sizes.ndim != 1 or np.any(sizes <= 0) or np.any(np.diff(sizes) <= 0):
        raise ValueError("sizes must be a 1-D ascending array of positive error sizes")
    num_chains = _checks.integer("num_chains", num_chains)
    if sample:
        sharding.check_divisible(
            (sizes.size + 1) * num_chains, mesh, "chains per cell ((len(sizes) + 1) * num_chains)"
        )
    error = error if error is not None else errors.angular_cosine(2.0)
    circle = manifolds.Circle()
    prior = priors.exact(manifolds.VonMises(circle, kappa=kappa, loc=loc))
    likelihood = None
    if observe is not None:
        from bip import likelihoods, operators

        coordinate, value, noise_std = observe
        likelihood = likelihoods.gaussian(
            operators.coordinate_projection(2, [int(coordinate)]),
            jnp.array([float(value)]),
            noise_std,
        )
    potential = likelihood.potential if likelihood is not None else None
    all_sizes = np.concatenate([[0.0], sizes])
    config = {
        "kappa": kappa,
        "loc": loc,
        "error": error.name,
        "observe": observe,
        "sigmas": list(map(float, sigmas)),
        "alphas": list(map(float, alphas)),
        "sizes": list(map(float, sizes)),
        "num_chains": num_chains,
        "mixing_time": mixing_time,
        "c": c,
        "seed": seed,
        "threshold": THRESHOLD,
        "bins": NUM_BINS,
    }
    sweep = Sweep(config=config)
    run_cell = _make_sampler(prior, error, likelihood, num_snapshots, mesh) if sample else None
    exact_bins = _make_exact(prior, error, potential)
    cells = [(a, s) for a in alphas for s in sigmas]
    key = jax.random.key(seed)
    with sweeps.CellLoop(sweep, cells, "robustness sweep", progress, True, on_cell) as loop:
        for index, (alpha, sigma) in enumerate(cells):
            exact = np.asarray(exact_bins(jnp.asarray(all_sizes), sigma, alpha))
            if not np.all(np.isfinite(exact)):
                raise FloatingPointError(f"exact law not finite at sigma={sigma}, alpha={alpha}")
            p0 = exact[0]
            tv_exact = [metrics.total_variation(q, p0) for q in exact]
            sweep.eps_star.setdefault("exact", {}).setdefault(decimal_key(alpha), {})[
                decimal_key(sigma)
            ] = critical_size(sizes, np.asarray(tv_exact[1:]))
            tv_sampled = [float("nan")] * all_sizes.size
            distances = [float("nan")] * all_sizes.size
            num_steps = 0
            if sample:
                h = float(
                    samplers.default_step_size(
                        sigma, alpha, c=c, lipschitz=getattr(likelihood, "lipschitz", None)
                    )
                )
                # at least 10 steps between pooled snapshots in the second half of the run
                num_steps = max(int(math.ceil(mixing_time / h)), 20 * num_snapshots)
                k_start, k_run = jax.random.split(jax.random.fold_in(key, index))
                law0 = targets.stationary_angular_law(prior, sigma, alpha, potential, 720, 200)
                x0 = _zero_error_start(k_start, law0, all_sizes.size * num_chains)
                chain_sizes = jnp.repeat(jnp.asarray(all_sizes), num_chains)
                x0, chain_sizes = sharding.put((x0, chain_sizes), mesh)
                run = run_cell(k_run, x0, chain_sizes, sigma, alpha, h, num_steps)
                sweeps.check_finite(run, sigma, alpha, f"lower c (now {c})")
                x, snaps = sharding.to_host(run.final_state.position), run.samples
                first, spacing = sweeps.snapshot_plan(num_steps, num_snapshots)
                num_steps = first + spacing * num_snapshots  # none after the last snapshot
                for j in range(all_sizes.size):
                    sl = slice(j * num_chains, (j + 1) * num_chains)
                    tv_sampled[j] = metrics.total_variation(
                        metrics.angle_histogram(snaps[sl], NUM_BINS), p0
                    )
                    distances[j] = float(np.mean(np.abs(np.linalg.norm(x[sl], axis=-1) - 1.0)))
                rise = np.asarray(tv_sampled[1:]) - tv_sampled[0]
                sweep.eps_star.setdefault("sampled", {}).setdefault(decimal_key(alpha), {})[
                    decimal_key(sigma)
                ] = critical_size(sizes, rise)
            for j, size in enumerate(all_sizes):
                sweep.records.append(
                    {
                        "sigma": float(sigma),
                        "alpha": float(alpha),
                        "error_size": float(size),
                        "error_kind": error.name,
                        "tv": tv_sampled[j],
                        "tv_exact": tv_exact[j],
                        "mean_distance": distances[j],
                        "chains": num_chains if sample else 0,
                        "steps": num_steps,
                        "seed": seed,
                        "likelihood": None if observe is None else list(observe),
                    }
                )
            loop.finished(index)
    return sweep
