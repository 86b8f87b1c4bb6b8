"""TV reconstruction benchmark: ``bip.tv.tv_reconstruct`` on 128x128 sparse-view CT.

One run: the Shepp-Logan phantom, 30 parallel views (``bip.tomography``'s ``"shear"``
projector), Gaussian noise at 1% of the sinogram's maximum, weight 0.3 (near the best PSNR),
default stopping rule (``tol = 1e-5``). Prints, for float32 and float64, the first call
(compilation included), the best of 3 warm calls (wall and CPU seconds), the iterations, ms
per iteration and the PSNR; then one batched call over 7 weights (0.03 to 3, float32).

    python -m bench.bench_tv
"""

from __future__ import annotations

import time
from functools import partial

import jax
import jax.numpy as jnp


def _timed(f) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(f())
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    jax.config.update("jax_enable_x64", True)
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
    main()
