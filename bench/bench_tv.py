"""TV baseline benchmark: ``bip.baselines.tv_search`` before and after diagonal preconditioning.

For each spec, the inputs ``bip.baselines.classical`` gets from ``bip.problems.build`` (the
test observation, the 4 validation pairs; the prior is not built), Wiener's chosen weight
(TV's grid is relative to it), then the TV weight search twice, side by side:

- before: scalar PDHG steps (``||A||``), the old ``TV_ITERATIONS`` (500 up to 64x64, 2500
  above);
- after: ``preconditioner="auto"`` (Pock-Chambolle diagonal steps for these non-negative
  operators) and the current ``bip.baselines.TV_ITERATIONS``.

Each row: the chosen weight, the test image's PSNR there, the search's CPU seconds
(``time.process_time``: all threads, compilation included), and the PSNR of a converged
solve at that weight (diagonal steps, ``REFERENCE_ITERATIONS``, no early stop).

Measured (float64, 2 cores shared with other jobs: CPU seconds, compilation included)::

    spec                   run     solver            weight    PSNR converged   CPU s
    ct-phantom-16          before  scalar x500        6.043  28.294    28.394     3.2
    ct-phantom-16          after   diagonal x500      6.043  28.370    28.394     2.4
    ct-phantom-8           before  scalar x500        3.924  27.759    27.799     2.6
    ct-phantom-8           after   diagonal x500      3.924  27.783    27.799     2.0
    deblur-phantom         before  scalar x500      0.01433  28.382    28.246     3.3
    deblur-phantom         after   diagonal x500    0.01433  28.637    28.246     2.5
    inpaint-digits         before  scalar x500     0.002933  18.866    18.901     1.8
    inpaint-digits         after   diagonal x500   0.004656  18.842    18.883     1.2
    ct-ellipses-128-exact  before  scalar x2500       9.254  39.786    39.813   177.6
    ct-ellipses-128-exact  after   diagonal x1000     9.254  39.763    39.813    72.1

At 128x128 the search is one round (the best weight is inside the first grid), so warm
starts across rounds would not help there.

    python -m bench.bench_tv                                  # the 32x32 specs and 128x128
    python -m bench.bench_tv problems/ct-phantom-16.toml      # chosen specs
    python -m bench.bench_tv --single     # one 128x128 Shepp-Logan solve, float32 and 64
"""

from __future__ import annotations

import sys
import time
from functools import partial

import jax

SPECS = (
    "problems/ct-phantom-16.toml",
    "problems/ct-phantom-8.toml",
    "problems/deblur-phantom.toml",
    "problems/inpaint-digits.toml",
    "problems/ct-ellipses-128-exact.toml",
)
OLD_ITERATIONS = ((64 * 64, 500), (float("inf"), 2500))
REFERENCE_ITERATIONS = 20000


def _inputs(path: str):
    """``(op, y, truth, validation)`` exactly as ``bip.problems.build`` passes them to
    ``bip.baselines.classical`` (same keys), without building the prior."""
    from bip import baselines, laws, problems

    spec = problems.as_spec(problems.load(path))
    k_truth, k_noise = jax.random.split(jax.random.key(spec.sampler.seed))
    law = laws.data_law(spec.data)
    truth = problems._truth(spec, law, k_truth)
    op = problems._operator(spec, tuple(truth.shape))
    y = problems._simulate(spec, op, truth, k_noise)
    key = jax.random.fold_in(jax.random.key(spec.sampler.seed), 0x7A11D)
    k_images, k_noise = jax.random.split(key)
    truths, _ = baselines.validation_images(k_images, law, spec.data.index, name=spec.data.source)
    return op, y, truth, (problems._simulate(spec, op, truths, k_noise), truths)


def _wiener_weight(op, y, truth, validation) -> float:
    """Wiener's weight as ``classical`` chooses it (TV's grid is relative to it)."""
    import jax.numpy as jnp

    from bip import baselines

    def estimate(ys, values):
        weights = jnp.zeros((values.shape[0], 2), values.dtype).at[:, 1].set(values)
        return baselines._regularised_grid(op, ys, weights)

    found, _ = baselines._choose(estimate, 1e-4, 1e2, y, truth, validation)
    return found["value"]


def main(paths: tuple[str, ...]) -> None:
    """The before/after table over ``paths``."""
    import math

    from bip import baselines, metrics, tv

    print(
        f"{'spec':28} {'run':7} {'solver':18} {'weight':>8} {'PSNR':>7} {'converged':>9} "
        f"{'CPU s':>7}"
    )
    for path in paths:
        op, y, truth, validation = _inputs(path)
        wiener = _wiener_weight(op, y, truth, validation)
        pixels = math.prod(op.input_shape)
        old = next(k for most, k in OLD_ITERATIONS if pixels <= most)
        for run, preconditioner, iterations in (
            ("before", "scalar", old),
            ("after", "auto", None),
        ):
            cpu = time.process_time()
            found = baselines.tv_search(
                op, y, truth, validation, wiener, iterations, preconditioner
            )
            cpu = time.process_time() - cpu
            x, info = tv.tv_reconstruct(
                op, y, found["weight"], num_iterations=REFERENCE_ITERATIONS, tol=0.0
            )
            steps = "diagonal" if preconditioner == "auto" and info.preconditioned else "scalar"
            solver = f"{steps} x{found['iterations']}"
            print(
                f"{path.split('/')[-1][:-5]:28} {run:7} {solver:18}"
                f" {found['weight']:8.4g} {found['psnr']:7.3f} "
                f"{float(metrics.psnr(x, truth)):9.3f} {cpu:7.1f}",
                flush=True,
            )


def _timed(f) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(f())
    return time.perf_counter() - wall, time.process_time() - cpu


def single_solve() -> None:
    """One 128x128 30-view Shepp-Logan solve at weight 0.3 (float32 and float64): first and
    warm calls, iterations, ms per iteration, PSNR; then 7 weights in one call."""
    import jax.numpy as jnp

    from bip import metrics, operators, tomography, tv

    n, views, weight = 128, 30, 0.3
    for dtype in (jnp.float32, jnp.float64):
        angles = jnp.linspace(0.0, 180.0, views, endpoint=False, dtype=dtype)
        op = tomography.projector(tomography.parallel_geometry(n, angles))
        truth = tomography.shepp_logan(n, dtype=dtype)
        clean = op(truth)
        noise = jax.random.normal(jax.random.key(0), clean.shape, dtype)
        y = clean + 0.01 * jnp.max(clean) * noise
        norm = operators.operator_norm(jax.random.key(0), op)

        def solve(w, y=y, op=op, norm=norm):
            return tv.tv_reconstruct(op, y, w, operator_norm=norm)

        first, _ = _timed(lambda: solve(weight))
        wall, cpu = min(_timed(lambda: solve(weight)) for _ in range(3))
        x, info = solve(weight)
        iterations = int(info.iterations)
        print(
            f"{jnp.dtype(dtype).name} {n}x{n} {views} views weight {weight}: first {first:.2f} s,"
            f" warm {wall:.2f} s wall / {cpu:.2f} s CPU, {iterations} iterations "
            f"({1e3 * wall / iterations:.2f} ms each), PSNR {float(metrics.psnr(x, truth)):.2f} dB"
        )
        if dtype == jnp.float32:
            weights = jnp.geomspace(0.03, 3.0, 7, dtype=dtype)
            first, _ = _timed(partial(solve, weights))
            xs, info = solve(weights)
            psnrs = ", ".join(f"{float(metrics.psnr(x, truth)):.2f}" for x in xs)
            print(
                f"  7 weights in one call: {first:.2f} s (compilation included), "
                f"{int(info.iterations)} iterations, PSNR {psnrs} dB"
            )


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    if sys.argv[1:] == ["--single"]:
        single_solve()
    else:
        main(tuple(sys.argv[1:]) or SPECS)
