"""CT forward operators: parallel-beam Radon transform (scikit-image's discretisation or the
matrix-free shear projector), flat-detector fan beam, and filtered back projection.

- ``radon(image_size, angles, method)``: sparse-view parallel-beam projection, equal to
  ``skimage.transform.radon(image, angles, circle=True)`` with ``"dense"`` / ``"interp"``;
  ``"shear"`` is ``bip.tomography``'s matrix-free projector on the same rays; ``"auto"``
  picks the dense matrix while it fits ``RADON_DENSE_MAX_ENTRIES``, else ``"shear"``.
- ``fan_beam(image_size, angles, source_distance, detector_distance, num_detectors,
  detector_spacing, method)``: flat-detector fan beam, ``bip.tomography``'s Joseph model;
  ``"auto"`` precomputes its dense matrix up to ``FAN_DENSE_MAX_ENTRIES`` (where it is the
  faster), else runs it matrix-free.
- ``filtered_back_projection``: the matching ``skimage.transform.iradon`` baseline;
  ``fan_filtered_back_projection``: the weighted FBP of a full-scan fan-beam sinogram.

The projections are linear ``bip.linop.Operator``s; ``bip.operators`` re-exports the public
names here (``bip.operators.radon is bip.ct.radon``).

Example:
    >>> P = bip.ct.radon(32, jnp.linspace(0.0, 180.0, 16, endpoint=False))
    >>> P.name, P(jnp.ones((32, 32))).shape
    ('radon(32x32, 16 angles, dense)', (32, 16))
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.scipy.ndimage import map_coordinates

from bip import _checks, tomography
from bip.linop import Operator

Array = jax.Array

__all__ = [
    "FAN_DENSE_MAX_ENTRIES",
    "FAN_METHODS",
    "FBP_FILTERS",
    "RADON_DENSE_MAX_ENTRIES",
    "RADON_METHODS",
    "FanParams",
    "fan_beam",
    "fan_filtered_back_projection",
    "filtered_back_projection",
    "radon",
    "radon_matrix",
]

RADON_METHODS = ("auto", "dense", "interp", "shear")
FAN_METHODS = ("auto", "dense", "joseph")
FBP_FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann", None)
#: ``radon(method="auto")`` precomputes the dense system matrix when it has at most this many
#: entries (64 x 64 images with up to 64 angles; 128 MiB in float64), else it runs the
#: matrix-free ``"shear"`` projector of ``bip.tomography`` (fast in both directions).
RADON_DENSE_MAX_ENTRIES = 2**24
#: ``fan_beam(method="auto")`` precomputes the dense matrix when it has at most this many
#: entries (16 MiB in float64; e.g. 32 x 32 images, 64 bins, 32 views), else it runs the
#: matrix-free Joseph projector. Dense costs O(n^4) per image and Joseph O(n^3): measured
#: (loaded 2-core CPU, float64, 64 images 32x32, forward + adjoint), dense is 3.3x faster at
#: 2^19.6 entries (48 bins x 16 views), 2.2x at 2^20.6 (48 x 32), 2.1x slower at 2^21.9.
FAN_DENSE_MAX_ENTRIES = 2**21


# --------------------------------------------------------------------------- parallel beam


@struct.dataclass
class RadonParams:
    """Parameters of ``radon``: the angles, their rotation tables and, for ``method="dense"``,
    the system matrix.

    Attributes:
        angles: ``(num_angles,)`` projection angles in degrees (skimage's ``theta``).
        offsets: ``(2, num_angles, image_size)`` rotated pixel offsets
            ``cos(theta_a) (k - n // 2)`` and ``sin(theta_a) (k - n // 2)``, ``k = 0..n-1``,
            computed once on the host in float64 (``_rotation_tables``). A function of the
            angles: build a new operator to change the angles.
        matrix: ``(image_size * num_angles, image_size**2)`` system matrix (rows ordered
            detector-major: row ``d * num_angles + a``) or ``None`` for ``method="interp"``.
        image_size: side ``n`` of the square image (static).
    """

    angles: Array
    offsets: Array
    matrix: Array | None
    image_size: int = struct.field(pytree_node=False)


# Why the sampling coordinates are built the way they are. A coordinate that is a whole pixel
# position up to rounding (k - 1e-13 here, k + 1e-13 there) is dangerous when it is computed
# twice: XLA duplicates elementwise work into several fusions and contracts products and sums
# into fused multiply-adds differently in each, so the floor that picks the pixel and the
# difference that weighs it can see different values; the sample is then one whole pixel off
# (seen on AMD EPYC: 1.9% of the sinogram's maximum on white noise at 45 and 135 degrees).
# ``optimization_barrier`` does not help on CPU (XLA removes it). So:
# 1. every product is taken once, on the host, in float64 (``_rotation_tables``): inside a
#    program the coordinates are sums of those tables only, and a sum has one IEEE result
#    however XLA fuses it (no multiply to contract, no reassociation without fast-math);
# 2. coordinates within ``_snap_tolerance`` of a whole pixel are snapped onto it (``_snap``),
#    so that the structured near-integers (45 degrees, where cos and sin differ by one ulp)
#    are exact integers, and node and weight come from that one value (``_floor_and_weight``);
# 3. the dense matrix is built in NumPy (float64, in one fixed order), the same under jit
#    (a ``pure_callback``) and eagerly.


def _cos_sin_degrees(angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``cos`` and ``sin`` of ``angles`` in degrees (float64 NumPy), exactly 0 and +-1 at
    multiples of 90: the angle is reduced to ``a - 90 q`` in [-45, 45] degrees and rotated
    back by ``q`` quarter turns, so ``cos(90)`` is 0, not 6e-17."""
    quarter = np.round(angles / 90)
    rest = np.deg2rad(angles - 90 * quarter)
    c, s = np.cos(rest), np.sin(rest)
    turn = np.mod(quarter, 4)
    cos = np.select([turn == 0, turn == 1, turn == 2], [c, -s, -c], s)
    sin = np.select([turn == 0, turn == 1, turn == 2], [s, c, -s], -c)
    return cos, sin


def _rotation_tables(angles: np.ndarray, n: int) -> np.ndarray:
    """``(2, num_angles, n)`` float64 tables ``cos(theta_a) (k - n // 2)`` and
    ``sin(theta_a) (k - n // 2)``, ``k = 0..n-1``."""
    cos, sin = _cos_sin_degrees(np.asarray(angles, np.float64))
    k = np.arange(n, dtype=np.float64) - n // 2
    return np.stack([cos[:, None] * k[None, :], sin[:, None] * k[None, :]])


def _on_host(fn: Callable[[np.ndarray], np.ndarray], angles: Array, shape, dtype) -> Array:
    """``fn(angles)`` computed in float64 NumPy, cast to ``dtype``: directly for concrete
    angles, through ``jax.pure_callback`` for traced ones (the same code either way)."""
    if _checks.is_concrete(angles):
        return jnp.asarray(fn(np.asarray(angles, np.float64)).astype(dtype))
    return jax.pure_callback(
        lambda a: fn(np.asarray(a, np.float64)).astype(dtype),
        jax.ShapeDtypeStruct(shape, dtype),
        angles,
        vmap_method="sequential",
    )


def _snap_tolerance(image_size: int, dtype) -> float:
    """How close (in pixels) a sampling coordinate must be to a whole pixel position to be
    snapped onto it: ``16 * eps * image_size``, a few rounding errors of the coordinates
    (1.1e-13 for 32 x 32 images in float64, 6e-5 in float32); the interpolated values are
    continuous in the coordinate, so snapping changes them by at most that much."""
    return 16 * float(np.finfo(dtype).eps) * max(int(image_size), 1)


def _snap(coordinate, tol: float):
    """``coordinate`` (NumPy or JAX) with entries within ``tol`` of an integer set to it."""
    xp = np if isinstance(coordinate, np.ndarray) else jnp
    nearest = xp.round(coordinate)
    return xp.where(xp.abs(coordinate - nearest) <= tol, nearest, coordinate)


def _floor_and_weight(coordinate, tol: float):
    """Linear-interpolation lower node and upper weight of ``coordinate`` (NumPy or JAX),
    both from one snapped value ``s``: ``index + weight == s`` exactly, ``0 <= weight < 1``,
    and ``k - 1e-13`` and ``k + 1e-13`` both give ``(k, 0)`` (for ``tol`` above 1e-13)."""
    xp = np if isinstance(coordinate, np.ndarray) else jnp
    snapped = _snap(coordinate, tol)
    lower = xp.floor(snapped)
    return lower.astype(xp.int32), snapped - lower


def _rotated_grid(offsets, n: int):
    """Sampling coordinates (row, col), each ``(num_angles, n, n)``, of skimage's ``radon``.

    For angle ``theta`` the output pixel (row ``r``, col ``c``) samples the image at
    ``col' = cos(theta) (c - m) + sin(theta) (r - m) + m`` and
    ``row' = -sin(theta) (c - m) + cos(theta) (r - m) + m``, with centre ``m = n // 2``
    (skimage's ``warp`` with its rotation matrix); the projection sums over ``r``. Sums of
    the host-computed ``offsets`` tables only, snapped (``_snap``); NumPy or JAX in, same out.
    """
    m = n // 2
    cos_k, sin_k = offsets[0], offsets[1]  # (angle, k)
    tol = _snap_tolerance(n, offsets.dtype)
    col = _snap((cos_k[:, None, :] + sin_k[:, :, None]) + m, tol)
    row = _snap((cos_k[:, :, None] - sin_k[:, None, :]) + m, tol)
    return row, col


def _radon_interp(params: RadonParams, x: Array) -> Array:
    row, col = _rotated_grid(params.offsets.astype(x.dtype), params.image_size)
    samples = map_coordinates(x, [row, col], order=1, mode="constant")  # (angle, r, detector)
    # The ray sum as a contraction, not samples.sum(axis=1): under jit, XLA CPU (jaxlib
    # 0.10.2) fuses that gather + reduce into a YNNPACK fusion that returns wrong sums (1e-4 to
    # 3e-3 relative vs skimage; correct with XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=).
    return jnp.einsum("arc,r->ca", samples, jnp.ones(params.image_size, samples.dtype))


def _radon_dense(params: RadonParams, x: Array) -> Array:
    n = params.image_size
    return (params.matrix @ x.reshape(n * n)).reshape(n, params.angles.shape[0])


def _radon_apply(params: RadonParams, x: Array) -> Array:
    if params.matrix is None:
        return _radon_interp(params, x)
    return _radon_dense(params, x)


def radon_matrix(image_size: int, angles: Array, dtype=None) -> Array:
    """The dense system matrix of ``radon(image_size, angles)``.

    Built from the bilinear interpolation weights of the rotated sampling grid (the weights
    ``jax.scipy.ndimage.map_coordinates(order=1, mode="constant")`` gives ``method="interp"``
    at the same coordinates), so ``(matrix @ x.ravel()).reshape(n, num_angles)`` is the
    projection of ``x`` (to ~1e-16). Computed in float64 NumPy and cast to ``dtype``: the
    same matrix, bit for bit, on any CPU, eagerly or with traced angles under ``jit`` (where
    it runs as a ``jax.pure_callback``; not differentiable in the angles).

    Args:
        image_size: side ``n`` of the square image.
        angles: ``(num_angles,)`` angles in degrees.
        dtype: float dtype (default: the angles' float dtype).

    Returns:
        ``(n * num_angles, n * n)`` array; row ``d * num_angles + a`` is detector ``d`` at
        angle ``a``, column ``i * n + j`` is pixel ``(i, j)``.

    Example:
        >>> bip.ct.radon_matrix(8, jnp.array([0.0, 90.0])).shape
        (16, 64)
    """
    n = _checks.integer("image_size", image_size, minimum=1)
    angles = tomography._angles(angles, dtype)
    shape = (n * angles.shape[0], n * n)
    return _on_host(partial(_radon_matrix, n), angles, shape, angles.dtype)


def _radon_matrix(n: int, angles: np.ndarray) -> np.ndarray:
    """The system matrix in float64 NumPy: the four bilinear taps of every sample, summed
    into their entries in one fixed order (``np.bincount``)."""
    num_angles = angles.shape[0]
    row, col = _rotated_grid(_rotation_tables(angles, n), n)  # (angle, r, detector)
    tol = _snap_tolerance(n, np.float64)
    r0, wr1 = _floor_and_weight(row, tol)
    c0, wc1 = _floor_and_weight(col, tol)
    out_row = np.arange(n)[None, None, :] * num_angles + np.arange(num_angles)[:, None, None]
    flat, vals = [], []
    for dr, wr in ((0, 1 - wr1), (1, wr1)):
        for dc, wc in ((0, 1 - wc1), (1, wc1)):
            i, j = r0 + dr, c0 + dc
            valid = (i >= 0) & (i < n) & (j >= 0) & (j < n)
            flat.append((out_row * (n * n) + i * n + j)[valid])
            vals.append((wr * wc)[valid])
    size = n * num_angles * n * n
    matrix = np.bincount(np.concatenate(flat), np.concatenate(vals), minlength=size)
    return matrix.reshape(n * num_angles, n * n)


def _auto_radon_method(n: int, num_angles: int) -> str:
    return "dense" if n**3 * num_angles <= RADON_DENSE_MAX_ENTRIES else "shear"


def radon(image_size: int, angles: Array, method: str = "auto", dtype=None) -> Operator:
    """Parallel-beam projection (Radon transform) of ``n x n`` images at any set of angles.

    With ``method="dense"`` or ``"interp"`` (``"auto"`` up to 64x64), equal to
    ``skimage.transform.radon(image, theta=angles, circle=True)`` (to ~1e-15 in float64): for
    each angle the image is sampled by bilinear interpolation on the grid
    rotated about pixel ``(n // 2, n // 2)`` (zero outside the image) and summed along the
    rays. Detector bins are pixels (unit spacing), values are in pixel units (a ray sum).
    skimage warns when the image is not zero outside the inscribed circle; this operator
    applies the same map to any image.

    Output layout is skimage's: ``(n, num_angles)``, detector first, one column per angle.

    Methods (dense and interp are the same linear map, their adjoint ``jax.linear_transpose``):

    - ``"dense"``: precompute the ``(n * num_angles, n^2)`` system matrix (``radon_matrix``,
      a leaf): forward and adjoint are matrix products.
    - ``"interp"``: ``jax.scipy.ndimage.map_coordinates`` on the fly (no memory, but its
      transpose is a scatter, slow on CPU).
    - ``"shear"``: ``bip.tomography``'s matrix-free parallel projector on the same rays, a
      different discretisation (Joseph's ray-driven model, detector resampled once more):
      0.5% from skimage on smooth images, as close to exact line integrals (1.6% vs 1.3%
      for Shepp-Logan at 256 px). Both directions fast (hand-written exact adjoint).
    - ``"auto"`` (default): ``"dense"`` when the matrix has at most
      ``RADON_DENSE_MAX_ENTRIES`` (2^24) entries, i.e. up to 64x64 images with 64 angles,
      else ``"shear"``.

    Measured (2 CPU cores, 64 images 64x64, 16 angles, float64, forward / adjoint): dense
    6 / 6 ms, interp 61 / 164 ms, sparse BCOO matrix 170-230 / 150-270 ms on a quiet
    machine; in one loaded run of ``bench/bench_projector.py`` dense 35 / 29, interp
    187 / 570, BCOO 344 / 299, skimage ``radon`` / unfiltered ``iradon`` loops 262 / 162.
    In that run, for one image the two are even (fwd + adj: dense 6 ms, interp 7 ms at 16
    angles) and for 64 images at 64 angles dense stays far ahead (235 ms vs 2980 ms).
    Pass the operator to jitted functions as an argument: closed over, its matrix becomes a
    compile-time constant (compiling takes seconds for a 128 MiB matrix).

    Args:
        image_size: side ``n`` of the square image.
        angles: ``(num_angles,)`` angles in degrees (a leaf; any values, e.g. sparse views).
        method: ``"auto"``, ``"dense"``, ``"interp"`` or ``"shear"``.
        dtype: float dtype of the parameters (default: the angles' float dtype).

    Returns:
        A linear ``Operator`` ``(n, n) -> (n, num_angles)`` with ``RadonParams`` params.

    Example:
        >>> P = bip.ct.radon(64, jnp.linspace(0.0, 180.0, 16, endpoint=False))
        >>> P(jnp.ones((8, 64, 64))).shape
        (8, 64, 16)
        >>> x_fbp = bip.ct.filtered_back_projection(P, P(jnp.ones((64, 64))))
    """
    if method not in RADON_METHODS:
        raise ValueError(f"method must be one of {RADON_METHODS}, got {method!r}")
    n = _checks.integer("image_size", image_size, minimum=1)
    angles = tomography._angles(angles, dtype)
    num_angles = angles.shape[0]
    if method == "auto":
        method = _auto_radon_method(n, num_angles)
    offsets = _on_host(partial(_rotation_tables, n=n), angles, (2, num_angles, n), angles.dtype)
    matrix = radon_matrix(n, angles) if method == "dense" else None
    fn = tomography.radon_shear_apply if method == "shear" else _radon_apply
    return Operator(
        fn=fn,
        params=RadonParams(angles=angles, offsets=offsets, matrix=matrix, image_size=n),
        input_shape=(n, n),
        output_shape=(n, num_angles),
        linear=True,
        name=f"radon({n}x{n}, {num_angles} angles, {method})",
    )


def _fourier_filter(size: int, filter_name: str | None) -> np.ndarray:
    """skimage's ``_get_fourier_filter`` (Kak & Slaney ch. 3 eq. 61), shape ``(size,)``."""
    k = np.concatenate(
        (np.arange(1, size / 2 + 1, 2, dtype=int), np.arange(size / 2 - 1, 0, -2, dtype=int))
    )
    f = np.zeros(size)
    f[0] = 0.25
    f[1::2] = -1 / (np.pi * k) ** 2
    filt = 2 * np.real(np.fft.fft(f))
    if filter_name == "shepp-logan":
        omega = np.pi * np.fft.fftfreq(size)[1:]
        filt[1:] *= np.sin(omega) / omega
    elif filter_name == "cosine":
        filt *= np.fft.fftshift(np.sin(np.linspace(0, np.pi, size, endpoint=False)))
    elif filter_name == "hamming":
        filt *= np.fft.fftshift(np.hamming(size))
    elif filter_name == "hann":
        filt *= np.fft.fftshift(np.hanning(size))
    elif filter_name is None:
        filt[:] = 1
    return filt


def _fbp_sizes(n: int) -> tuple[int, int]:
    """skimage's detector length ``diag`` for a circle-sinogram of ``n`` bins
    (``_sinogram_circle_to_square``) and its zero-padded FFT length."""
    diag = int(np.ceil(np.sqrt(2) * n))
    return diag, max(64, int(2 ** np.ceil(np.log2(2 * diag))))


def _fbp_filter(n: int, filter_name: str | None) -> np.ndarray:
    """The Fourier weights FBP applies to the padded sinograms of ``n`` detector bins."""
    return _fourier_filter(_fbp_sizes(n)[1], filter_name)


def _interpolate(rows: Array, pos: Array) -> Array:
    """``rows (a, m)`` at fractional positions ``pos (a, p)`` along each row, linearly, zero
    outside ``[0, m - 1]`` (``np.interp(left=0, right=0)``)."""
    size = rows.shape[1]
    lo = jnp.clip(jnp.floor(pos), 0, size - 2)
    w = pos - lo
    lo = lo.astype(jnp.int32)
    f_lo = jnp.take_along_axis(rows, lo, axis=1)
    f_hi = jnp.take_along_axis(rows, lo + 1, axis=1)
    inside = (pos >= 0) & (pos <= size - 1)
    return jnp.where(inside, (1 - w) * f_lo + w * f_hi, 0)


def _fbp_single(offsets: Array, filt: Array, sinogram: Array) -> Array:
    n, num_angles = sinogram.shape
    dtype = sinogram.dtype
    diag, size = _fbp_sizes(n)
    pad_before = diag // 2 - n // 2
    padded = jnp.pad(sinogram, ((pad_before, size - n - pad_before), (0, 0)))
    spectrum = jnp.fft.fft(padded, axis=0) * filt[:, None]
    filtered = jnp.real(jnp.fft.ifft(spectrum, axis=0))[:diag].astype(dtype)  # (diag, angle)

    radius = n // 2
    xpr, ypr = np.mgrid[:n, :n] - radius
    # fractional index into the detector, t = cos (j - radius) - sin (i - radius) + diag // 2
    # for pixel (i, j): sums of the host tables, snapped, node and weight from one value (see
    # _rotated_grid)
    cos_k, sin_k = offsets.astype(dtype)
    pos = (cos_k[:, None, :] - sin_k[:, :, None]) + diag // 2
    pos = _snap(pos.reshape(num_angles, n * n), _snap_tolerance(diag, dtype))
    values = _interpolate(filtered.T, pos)
    recon = jnp.einsum("ap,a->p", values, jnp.ones(num_angles, dtype)).reshape(n, n)  # see
    # _radon_interp: a contraction rather than .sum(axis=0), safe from the YNN fusion bug
    recon = jnp.where(jnp.asarray(xpr**2 + ypr**2 <= radius**2), recon, 0)
    return recon * (np.pi / (2 * num_angles))


def filtered_back_projection(
    op_or_params: Operator | RadonParams, sinogram: Array, filter: str | None = "ramp"
) -> Array:
    """Filtered back projection: the classic CT reconstruction, skimage's ``iradon``.

    Reproduces ``skimage.transform.iradon(sinogram, theta=angles, circle=True,
    filter_name=filter, interpolation="linear")`` (tested to 1e-10 relative in float64):
    the sinogram is zero-padded as skimage does, filtered in Fourier space, back-projected
    with linear interpolation, set to zero outside the inscribed circle and scaled by
    ``pi / (2 num_angles)``. It is a linear map of the sinogram (jittable, differentiable);
    it is not ``A^T`` and not an exact inverse (streaks with few angles): a baseline.

    Args:
        op_or_params: an operator from ``radon`` (or its ``RadonParams``).
        sinogram: ``(*batch, n, num_angles)`` (the layout of ``radon``'s output).
        filter: ``"ramp"``, ``"shepp-logan"``, ``"cosine"``, ``"hamming"``, ``"hann"`` or
            ``None`` (no filtering).

    Returns:
        ``(*batch, n, n)`` reconstructions.

    Example:
        >>> P = bip.ct.radon(32, jnp.linspace(0.0, 180.0, 32, endpoint=False))
        >>> x = jnp.zeros((32, 32)).at[12:20, 12:20].set(1.0)
        >>> bip.ct.filtered_back_projection(P, P(x)).shape
        (32, 32)
    """
    params = op_or_params.params if isinstance(op_or_params, Operator) else op_or_params
    if not isinstance(params, RadonParams):
        raise TypeError(
            "op_or_params must be an operator made by bip.operators.radon (or its RadonParams), "
            f"got {type(op_or_params).__name__}"
        )
    if filter not in FBP_FILTERS:
        raise ValueError(f"filter must be one of {FBP_FILTERS}, got {filter!r}")
    n, num_angles = params.image_size, params.angles.shape[0]
    _checks.event_shape("sinogram", sinogram, (n, num_angles))
    sinogram = jnp.asarray(sinogram)
    dtype = jnp.result_type(sinogram.dtype, params.angles.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return _fbp(params.offsets, jnp.asarray(_fbp_filter(n, filter), dtype), sinogram.astype(dtype))


@jax.jit
def _fbp(offsets: Array, filt: Array, sinogram: Array) -> Array:
    """FBP of ``(*batch, n, num_angles)`` sinograms with the Fourier weights ``filt``
    (``_fbp_filter``; an argument, so every filter shares one compiled program)."""
    n, num_angles = sinogram.shape[-2:]
    batch = sinogram.shape[:-2]
    single = partial(_fbp_single, offsets, filt)
    if not batch:
        return single(sinogram)
    # lax.map, not vmap: XLA CPU runs the batched gather 5-10x slower than a loop of single
    # ones (64 sinograms 64x16: 17 ms looped, 90 ms vmapped).
    recon = jax.lax.map(single, sinogram.reshape((-1, n, num_angles)))
    return recon.reshape(batch + (n, n))


# --------------------------------------------------------------------------- fan beam


@struct.dataclass
class FanParams:
    """Parameters of ``fan_beam``.

    Attributes:
        angles: ``(num_angles,)`` source angles in degrees (a leaf).
        matrix: ``(num_detectors * num_angles, n^2)`` system matrix (row ``d * num_angles +
            a``, column ``i * n + j``) for ``method="dense"``, else None (matrix-free).
        geometry: the ``bip.tomography.Geometry`` without its angles (static).
    """

    angles: Array
    matrix: Array | None
    geometry: tomography.Geometry = struct.field(pytree_node=False)


def _fan_apply(params: FanParams, x: Array) -> Array:
    if params.matrix is None:
        static = tomography._Static(params.geometry, "joseph")
        return tomography._project_apply((params.angles, static), x)
    shape = (params.geometry.num_detectors, params.angles.shape[0])
    return (params.matrix @ x.reshape(-1)).reshape(shape)


#: Pixel columns of the fan-beam matrix built per projector call (memory ``chunk x n^2``).
_FAN_CHUNK = 256


def _fan_matrix(geometry: tomography.Geometry) -> Array:
    """The Joseph fan-beam projector's matrix, column by column (projections of the pixel
    basis images, ``_FAN_CHUNK`` at a time): the same linear map, to rounding."""
    op = tomography.projector(geometry, "joseph")
    n = geometry.image_size
    dtype = geometry.angles.dtype
    columns = []
    for start in range(0, n * n, _FAN_CHUNK):
        pixels = jnp.arange(start, min(start + _FAN_CHUNK, n * n))
        basis = jax.nn.one_hot(pixels, n * n, dtype=dtype).reshape(-1, n, n)
        columns.append(op(basis).reshape(pixels.shape[0], -1))
    return jnp.concatenate(columns).T


def _auto_fan_method(n: int, num_detectors: int, num_angles: int) -> str:
    return "dense" if n * n * num_detectors * num_angles <= FAN_DENSE_MAX_ENTRIES else "joseph"


def fan_beam(
    image_size: int,
    angles: Array,
    source_distance: float,
    detector_distance: float,
    num_detectors: int,
    detector_spacing: float = 1.0,
    method: str = "auto",
    dtype=None,
) -> Operator:
    """Flat-detector fan-beam projection of ``n x n`` images (``bip.tomography``'s geometry).

    The source circles the rotation axis (pixel ``(n // 2, n // 2)``) at ``source_distance``;
    the flat detector of ``num_detectors`` bins, ``detector_spacing`` apart, faces it at
    ``detector_distance`` beyond the axis (distances and spacing in pixels; bin
    ``num_detectors // 2`` sees the central ray). Values are line integrals in pixel units
    (Joseph's ray-driven model; ``bip.tomography.ellipse_sinogram`` gives the exact ones).

    Methods (the same linear map, to rounding):

    - ``"joseph"``: ``bip.tomography.projector``, matrix-free, both directions gathers.
    - ``"dense"``: its ``(num_detectors * num_angles, n^2)`` matrix, built once from the
      projections of the pixel basis: forward and adjoint are matrix products.
    - ``"auto"`` (default): ``"dense"`` when the matrix has at most
      ``FAN_DENSE_MAX_ENTRIES`` (2^21) entries, where it is the faster of the two, and the
      angles are concrete; else ``"joseph"``. Building the matrix costs one compilation of
      the projector (2-4 s at 32x32 on a loaded machine).

    Args:
        image_size: side ``n`` of the square image.
        angles: ``(num_angles,)`` source angles in degrees (a full scan is 360 degrees).
        source_distance: source to rotation axis, beyond the image's half-diagonal plus a
            pixel; detector_distance: rotation axis to detector (>= 0).
        num_detectors: detector bins; detector_spacing: their spacing (> 0).
        method: ``"auto"``, ``"dense"`` or ``"joseph"``.
        dtype: float dtype (default: the angles' float dtype).

    Returns:
        A linear ``Operator`` ``(n, n) -> (num_detectors, num_angles)`` with ``FanParams``.

    Example:
        >>> A = bip.ct.fan_beam(32, jnp.arange(0.0, 360.0, 20.0), 64.0, 64.0, 64, 1.0)
        >>> A.name, A(jnp.ones((2, 32, 32))).shape
        ('fan_beam(32x32, 64 bins x 18 views, dense)', (2, 64, 18))
    """
    if method not in FAN_METHODS:
        raise ValueError(f"method must be one of {FAN_METHODS}, got {method!r}")
    geometry = tomography.fan_geometry(
        image_size,
        angles,
        source_distance,
        detector_distance,
        num_detectors,
        detector_spacing,
        dtype,
    )
    n, (nd, num_angles) = geometry.image_size, geometry.sinogram_shape
    concrete = _checks.is_concrete(geometry.angles)
    if method == "auto":
        method = _auto_fan_method(n, nd, num_angles) if concrete else "joseph"
    if method == "dense" and not concrete:
        raise ValueError('method="dense" needs concrete angles (not traced under jit)')
    matrix = _fan_matrix(geometry) if method == "dense" else None
    return Operator(
        fn=_fan_apply,
        params=FanParams(geometry.angles, matrix, geometry.replace(angles=None)),
        input_shape=(n, n),
        output_shape=(nd, num_angles),
        linear=True,
        name=f"fan_beam({n}x{n}, {nd} bins x {num_angles} views, {method})",
    )


def _fan_fbp_single(params: FanParams, filt: Array, sinogram: Array) -> Array:
    g = params.geometry
    n, (nd, num_angles) = g.image_size, sinogram.shape
    dtype = sinogram.dtype
    sod, sdd = g.source_distance, g.source_distance + g.detector_distance
    spacing = g.detector_spacing * sod / sdd  # bins on the virtual detector through the axis
    s = (jnp.arange(nd, dtype=dtype) - nd // 2) * spacing
    weighted = sinogram * (sod / jnp.sqrt(sod * sod + s * s))[:, None]
    padded = jnp.pad(weighted, ((0, filt.shape[0] - nd), (0, 0)))
    spectrum = jnp.fft.fft(padded, axis=0) * filt[:, None]
    filtered = jnp.real(jnp.fft.ifft(spectrum, axis=0))[:nd].astype(dtype) / spacing

    theta = jnp.deg2rad(params.angles.astype(dtype))[:, None]
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    row, col = (jnp.asarray(c, dtype).reshape(1, -1) - n // 2 for c in np.mgrid[:n, :n])
    depth = sod + col * sin + row * cos  # (angle, pixel): source-to-pixel along the axis
    pos = (col * cos - row * sin) * sdd / depth / g.detector_spacing + nd // 2
    values = _interpolate(filtered.T, pos) * (sod / depth) ** 2
    recon = jnp.einsum("ap,a->p", values, jnp.ones(num_angles, dtype)).reshape(n, n)
    return recon * (np.pi / (2 * num_angles))


@jax.jit
def _fan_fbp(params: FanParams, filt: Array, sinogram: Array) -> Array:
    """Fan-beam FBP of ``(*batch, num_detectors, num_angles)`` sinograms, Fourier weights
    ``filt`` (``_fan_filter``)."""
    batch = sinogram.shape[:-2]
    single = partial(_fan_fbp_single, params, filt)
    if not batch:
        return single(sinogram)
    recon = jax.lax.map(single, sinogram.reshape((-1,) + sinogram.shape[-2:]))  # see _fbp
    return recon.reshape(batch + recon.shape[-2:])


def _fan_filter(num_detectors: int, filter_name: str | None) -> np.ndarray:
    """The Fourier weights of ``fan_filtered_back_projection`` for ``num_detectors`` bins
    (zero-padded to a power of two, at least twice the detector, as skimage does)."""
    size = max(64, int(2 ** np.ceil(np.log2(2 * num_detectors))))
    return _fourier_filter(size, filter_name)


def fan_filtered_back_projection(
    op: Operator, sinogram: Array, filter: str | None = "ramp"
) -> Array:
    """Weighted filtered back projection of a full-scan flat-detector fan-beam sinogram.

    The equispaced-detector fan-beam FBP (Kak and Slaney, ch. 3.4.2): the bins are scaled
    to a virtual detector through the rotation axis (spacing ``detector_spacing *
    source_distance / (source_distance + detector_distance)``), each bin is weighted by the
    cosine ``D / sqrt(D^2 + s^2)`` of its ray (``D`` the source distance, ``s`` the virtual
    bin position), the views are filtered as in ``filtered_back_projection`` (skimage's
    filters, zero-padded), and back-projected along the fan with linear interpolation and the
    distance weight ``(D / depth)^2``, ``depth`` the pixel's distance from the source along
    the central ray; the sum over views is scaled by ``pi / (2 num_angles)`` (each ray is
    seen twice in 360 degrees). It assumes views equally spaced over 360 degrees.

    Checked against the exact line integrals of ellipses (``tests/test_ct.py``): on the
    analytic Shepp-Logan sinogram it is as close to the phantom as parallel-beam FBP is.

    Args:
        op: an operator from ``fan_beam``.
        sinogram: ``(*batch, num_detectors, num_angles)``.
        filter: ``"ramp"``, ``"shepp-logan"``, ``"cosine"``, ``"hamming"``, ``"hann"`` or
            ``None``.

    Returns:
        ``(*batch, n, n)`` reconstructions.

    Example:
        >>> A = bip.ct.fan_beam(32, jnp.arange(0.0, 360.0, 10.0), 64.0, 64.0, 64, 1.0)
        >>> x = bip.tomography.shepp_logan(32)
        >>> bip.ct.fan_filtered_back_projection(A, A(x)).shape
        (32, 32)
    """
    if not isinstance(getattr(op, "params", None), FanParams):
        raise TypeError(f"op must be made by bip.ct.fan_beam, got {type(op).__name__}")
    if filter not in FBP_FILTERS:
        raise ValueError(f"filter must be one of {FBP_FILTERS}, got {filter!r}")
    sinogram = jnp.asarray(sinogram)
    _checks.event_shape("sinogram", sinogram, op.output_shape)
    dtype = jnp.result_type(sinogram.dtype, op.params.angles.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    filt = jnp.asarray(_fan_filter(op.output_shape[0], filter), dtype)
    return _fan_fbp(op.params, filt, sinogram.astype(dtype))
