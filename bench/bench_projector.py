"""Benchmark: the CT projector (``bip.operators.radon``) forward and adjoint throughput.

A batch of 64 images 64x64, 16 angles (float64, as the tests run), against scikit-image
(``radon`` and, for the back projection, ``iradon(filter_name=None)`` and ``iradon`` with the
ramp filter, in a Python loop over the batch, in the same run). Also times the projector
formulations that were measured before choosing one, so the choice is documented by numbers:

- ``dense``: precomputed system matrix, forward and adjoint are matrix products (the default
  for sizes up to 64x64 with 64 angles);
- ``interp``: ``jax.scipy.ndimage.map_coordinates`` on the fly, adjoint by
  ``jax.linear_transpose`` (a scatter);
- ``sparse``: the same matrix as a ``jax.experimental.sparse.BCOO`` matrix.

All three are the same linear map (checked here to ~1e-15). Each timing is the median of a
few runs after a jit warm-up, with ``block_until_ready``; expect +-30% noise on 2 shared
cores. Run: ``python bench/bench_projector.py`` (about a minute).
"""

from __future__ import annotations

import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
from jax.experimental import sparse  # noqa: E402
from skimage.transform import iradon, resize  # noqa: E402
from skimage.transform import radon as sk_radon  # noqa: E402

from bip import operators  # noqa: E402

SIZE = 64
BATCH = 64
NUM_ANGLES = 16
REPEATS = 5


def _phantoms(n: int, batch: int, seed: int = 0) -> np.ndarray:
    """Shepp-Logan phantoms ``(batch, n, n)`` with random contrast, zero outside the circle."""
    base = resize(skimage.data.shepp_logan_phantom(), (n, n), anti_aliasing=True)
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 1.5, size=(batch, 1, 1))
    noise = 0.05 * rng.standard_normal((batch, n, n))
    yy, xx = np.mgrid[:n, :n] - n // 2
    inside = (yy**2 + xx**2) <= (n // 2) ** 2
    return np.where(inside, base * scale + noise * (base > 0), 0.0)


def _time(fn, *args, repeats: int = REPEATS) -> float:
    """Median wall time in ms of ``fn(*args)`` (jitted functions warmed up first)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def _time_loop(fn, batch: np.ndarray, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in batch:
            fn(item)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def _row(name: str, fwd: str, adj: str, total: str, note: str) -> None:
    print(f"{name:<14}{fwd:>10}{adj:>10}{total:>10}  {note}")


def _bcoo_apply(params, x):
    matrix, n, num_angles = params["matrix"], x.shape[0], params["angles"].shape[0]
    return (matrix @ x.reshape(n * n)).reshape(n, num_angles)


def _sparse_radon(dense_op: operators.Operator) -> operators.Operator:
    """The dense operator's matrix as a BCOO sparse matrix (same linear map)."""
    matrix = sparse.BCOO.fromdense(dense_op.params.matrix)
    return operators.Operator(
        fn=_bcoo_apply,
        params={"matrix": matrix, "angles": dense_op.params.angles},
        input_shape=dense_op.input_shape,
        output_shape=dense_op.output_shape,
        linear=True,
        name="radon(sparse BCOO)",
    )


def _forward_adjoint(op):
    forward = jax.jit(lambda op, x: op(x))
    adjoint = jax.jit(lambda op, y: op.adjoint(y))
    return forward, adjoint


def _measure(op, images, repeats: int = REPEATS) -> tuple[float, float]:
    forward, adjoint = _forward_adjoint(op)
    sino = forward(op, images)
    return _time(forward, op, images, repeats=repeats), _time(adjoint, op, sino, repeats=repeats)


def main() -> None:
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} device")
    angles = np.linspace(0.0, 180.0, NUM_ANGLES, endpoint=False)
    images = _phantoms(SIZE, BATCH)
    x = jnp.asarray(images)
    print(f"batch {BATCH} images {SIZE}x{SIZE}, {NUM_ANGLES} angles, float64; median of runs (ms)")

    # --- skimage, in a Python loop over the batch
    sk_fwd = _time_loop(lambda im: sk_radon(im, angles, circle=True), images)
    sinos = np.stack([sk_radon(im, angles, circle=True) for im in images])
    sk_bp = _time_loop(
        lambda s: iradon(s, angles, circle=True, filter_name=None), sinos
    )  # unfiltered back projection, skimage's nearest analogue of the adjoint
    sk_fbp = _time_loop(lambda s: iradon(s, angles, circle=True, filter_name="ramp"), sinos)

    # --- bip (auto = dense here), and the alternatives
    dense = operators.radon(SIZE, angles, method="dense")
    interp = operators.radon(SIZE, angles, method="interp")
    sparse_op = _sparse_radon(dense)
    err = {
        name: float(jnp.max(jnp.abs(op(x) - sinos)) / np.max(np.abs(sinos)))
        for name, op in (("dense", dense), ("interp", interp), ("sparse", sparse_op))
    }
    timings = {name: _measure(op, x) for name, op in (("dense", dense), ("interp", interp))}
    timings["sparse"] = _measure(sparse_op, x, repeats=3)
    dense32 = operators.radon(SIZE, angles, method="dense", dtype=jnp.float32)
    timings["dense f32"] = _measure(dense32, x.astype(jnp.float32))
    fbp = jax.jit(lambda op, s: operators.filtered_back_projection(op, s))
    bip_fbp = _time(fbp, dense, jnp.asarray(sinos))

    print()
    _row("formulation", "forward", "adjoint", "fwd+adj", "max rel err vs skimage")
    for name, (fwd, adj) in timings.items():
        e = err.get(name)
        _row(name, f"{fwd:.1f}", f"{adj:.1f}", f"{fwd + adj:.1f}", "" if e is None else f"{e:.1e}")
    total = f"{sk_fwd + sk_bp:.1f}"
    _row("skimage", f"{sk_fwd:.1f}", f"{sk_bp:.1f}", total, "(radon / iradon no filter)")
    fwd, adj = timings["dense"]
    print(
        f"\nbip dense vs skimage: forward {sk_fwd / fwd:.1f}x faster, back projection "
        f"{sk_bp / adj:.1f}x, forward+adjoint {(sk_fwd + sk_bp) / (fwd + adj):.1f}x"
    )
    print(
        f"FBP (ramp): bip {bip_fbp:.1f} ms, skimage iradon {sk_fbp:.1f} ms, {sk_fbp / bip_fbp:.1f}x"
    )

    # --- one image (a single Langevin chain) and 64 angles
    print("\nother sizes (ms, fwd / adj):")
    for batch, num_angles in ((1, 16), (1, 64), (BATCH, 64)):
        th = np.linspace(0.0, 180.0, num_angles, endpoint=False)
        xb = x[:batch]
        row = []
        for method in ("dense", "interp"):
            op = operators.radon(SIZE, th, method=method)
            fwd, adj = _measure(op, xb, repeats=3)
            row.append(f"{method} {fwd:.1f} / {adj:.1f}")
        print(f"  batch {batch:>2}, {num_angles:>2} angles: " + "; ".join(row))
    print(f"auto picks: {operators.radon(SIZE, angles).name}")


if __name__ == "__main__":
    main()
