"""Ellipse phantoms at any size: the Shepp-Logan table, rasterisation, exact sinograms.

``ellipse_sinogram(ellipses, geometry)`` gives the exact line integrals of ellipse phantoms
(no discretisation), ``ellipse_image(ellipses, size)`` rasterises them (supersampled), and
``shepp_logan_ellipses()`` is the (modified, Toft) Shepp-Logan table, so the phantom and its
sinogram exist at any size. Ellipse coordinates are those of ``bip.images``: the field of view
is ``[-1, 1]^2``, ``x`` grows with the column, ``y`` with the row (downwards), pixel centres at
``-1 + (2 k + 1) / n``. The rays are ``bip.ctgeometry``'s; ``bip.tomography`` re-exports
every public name here.

Example:
    >>> import jax.numpy as jnp
    >>> from bip import ctgeometry, ctphantoms
    >>> g = ctgeometry.parallel_geometry(64, jnp.linspace(0.0, 180.0, 30, endpoint=False))
    >>> ctphantoms.shepp_logan(64).shape, ctphantoms.ellipse_sinogram(
    ...     ctphantoms.shepp_logan_ellipses(), g).shape
    ((64, 64), (64, 30))
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from bip import _checks
from bip.ctgeometry import Geometry, _rays

Array = jax.Array

__all__ = [
    "ellipse_image",
    "ellipse_sinogram",
    "shepp_logan",
    "shepp_logan_ellipses",
]


def shepp_logan_ellipses() -> np.ndarray:
    """The modified Shepp-Logan phantom (Toft) as ``(10, 6)`` ellipses.

    Columns ``(intensity, a, b, x0, y0, phi)``: additive intensity, semi-axes, centre (field
    half-widths, ``x`` right, ``y`` down as in ``bip.images``) and rotation of the ``a`` axis
    from ``+x`` towards ``+y`` in degrees. The textbook table (``y`` up) has its ``y0`` and
    ``phi`` negated here, so the phantom renders upright. Values lie in ``[0, 1]``.

    Example:
        >>> shepp_logan_ellipses().shape
        (10, 6)
    """
    table = np.array(
        [
            [1.0, 0.69, 0.92, 0.0, 0.0, 0.0],
            [-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0],
            [-0.2, 0.11, 0.31, 0.22, 0.0, -18.0],
            [-0.2, 0.16, 0.41, -0.22, 0.0, 18.0],
            [0.1, 0.21, 0.25, 0.0, 0.35, 0.0],
            [0.1, 0.046, 0.046, 0.0, 0.1, 0.0],
            [0.1, 0.046, 0.046, 0.0, -0.1, 0.0],
            [0.1, 0.046, 0.023, -0.08, -0.605, 0.0],
            [0.1, 0.023, 0.023, 0.0, -0.606, 0.0],
            [0.1, 0.023, 0.046, 0.06, -0.605, 0.0],
        ]
    )
    table[:, 4] *= -1
    table[:, 5] *= -1
    return table


def _check_ellipses(ellipses) -> np.ndarray:
    _checks.finite("ellipses", ellipses)
    e = np.asarray(ellipses, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] != 6:
        raise ValueError(
            "ellipses must be (k, 6) rows (intensity, a, b, x0, y0, phi_degrees), got shape "
            f"{e.shape}"
        )
    if np.any(e[:, 1:3] <= 0):
        raise ValueError("ellipse semi-axes a, b (columns 1 and 2) must be > 0")
    return e


def ellipse_image(ellipses, size: int, supersample: int = 4, dtype=None) -> Array:
    """Rasterise ellipses: the mean of each pixel's ``supersample^2`` sub-pixel samples.

    Args:
        ellipses: ``(k, 6)`` rows ``(intensity, a, b, x0, y0, phi_degrees)`` (see
            ``shepp_logan_ellipses``), in field-of-view units (``[-1, 1]^2``).
        size: image side ``n``.
        supersample: sub-samples per pixel and axis (>= 1): edge pixels get the covered
            fraction to about ``1 / supersample``.
        dtype: float dtype (default float dtype).

    Returns:
        ``(n, n)`` image, axis 0 = ``y`` (down), axis 1 = ``x``.

    Example:
        >>> ellipse_image([[1.0, 0.5, 0.5, 0.0, 0.0, 0.0]], 8, supersample=1)[4, 4]
        Array(1., dtype=float64)
    """
    e = _check_ellipses(ellipses)
    n = _checks.integer("size", size, minimum=1)
    ss = _checks.integer("supersample", supersample, minimum=1)
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    return _raster(jnp.asarray(e, dtype), n, ss)


@partial(jax.jit, static_argnums=(1, 2))
def _raster(e: Array, n: int, ss: int) -> Array:
    dtype = e.dtype
    sub = (jnp.arange(ss, dtype=dtype) + 0.5) / ss - 0.5  # sub-pixel offsets, pixel units
    centres = jnp.arange(n, dtype=dtype) + 0.5
    coords = (-1.0 + 2.0 * (centres[:, None] + sub[None, :]) / n).reshape(n * ss)
    y, x = coords[:, None], coords[None, :]
    img = jnp.zeros((n * ss, n * ss), dtype)
    for i in range(e.shape[0]):
        rho, a, b, x0, y0, phi = (e[i, c] for c in range(6))
        c, s = jnp.cos(jnp.deg2rad(phi)), jnp.sin(jnp.deg2rad(phi))
        u = (x - x0) * c + (y - y0) * s
        v = -(x - x0) * s + (y - y0) * c
        img = img + rho * ((u / a) ** 2 + (v / b) ** 2 <= 1.0)
    return img.reshape(n, ss, n, ss).mean(axis=(1, 3))


def shepp_logan(size: int, supersample: int = 4, dtype=None) -> Array:
    """The modified Shepp-Logan phantom at any size: ``ellipse_image(shepp_logan_ellipses())``.

    Example:
        >>> shepp_logan(256).shape
        (256, 256)
    """
    return ellipse_image(shepp_logan_ellipses(), size, supersample, dtype)


def ellipse_sinogram(ellipses, geometry: Geometry, dtype=None) -> Array:
    """Exact line integrals of ellipses along the rays of ``geometry`` (no discretisation).

    A ray ``{p : p . nu = s}`` (unit normal ``nu``) crosses an ellipse of semi-axes
    ``(a, b)`` centred at ``c`` along ``2 a b sqrt(r^2 - s'^2) / r^2`` for ``|s'| < r``, with
    ``s' = s - c . nu`` and ``r^2 = a^2 cos^2 psi + b^2 sin^2 psi``, ``psi`` the angle of
    ``nu`` from the ``a`` axis. Rays are those of the projectors (bin centres); the field
    ``[-1, 1]^2`` spans the ``n`` pixels, and values are in pixel units (``n / 2`` per field
    unit), comparable with ``projector(geometry)(ellipse_image(ellipses, n))``.

    Args:
        ellipses: ``(k, 6)`` rows ``(intensity, a, b, x0, y0, phi_degrees)``.
        geometry: a parallel or fan ``Geometry``.
        dtype: float dtype (default: the angles' dtype).

    Returns:
        ``(num_detectors, num_angles)`` sinogram.

    Example:
        >>> g = ctgeometry.parallel_geometry(64, jnp.array([0.0, 45.0]))
        >>> s = ellipse_sinogram([[1.0, 0.5, 0.5, 0.0, 0.0, 0.0]], g)   # a disc of radius 16 px
        >>> float(s[32, 0])                                            # its chord: nearly 32 px
        31.98...
    """
    if not isinstance(geometry, Geometry):
        raise TypeError(f"geometry must be a bip.tomography.Geometry, got {type(geometry)}")
    e = _check_ellipses(ellipses)
    dtype = geometry.angles.dtype if dtype is None else jnp.dtype(dtype)
    return _ellipse_sinogram(
        jnp.asarray(e, dtype), geometry.replace(angles=geometry.angles.astype(dtype))
    )


@jax.jit
def _ellipse_sinogram(e: Array, g: Geometry) -> Array:
    dtype = e.dtype
    n = g.image_size
    theta = jnp.deg2rad(g.angles)[None, :]
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    d = jnp.arange(g.num_detectors, dtype=dtype)[:, None]
    px, py, vx, vy = _rays(g, cos, sin, d)
    norm = jnp.sqrt(vx * vx + vy * vy)
    nux, nuy = vy / norm, -vx / norm  # unit normal of each ray
    to_field = 2.0 / n  # pixel -> field units, pixel centre k at -1 + (2 k + 1) / n
    s = ((px + 0.5) * to_field - 1.0) * nux + ((py + 0.5) * to_field - 1.0) * nuy
    total = jnp.zeros(s.shape, dtype)
    for i in range(e.shape[0]):
        rho, a, b, x0, y0, phi = (e[i, c] for c in range(6))
        shifted = s - (x0 * nux + y0 * nuy)
        cpsi = nux * jnp.cos(jnp.deg2rad(phi)) + nuy * jnp.sin(jnp.deg2rad(phi))
        r2 = a * a * cpsi * cpsi + b * b * (1 - cpsi * cpsi)
        chord = 2 * a * b * jnp.sqrt(jnp.maximum(r2 - shifted * shifted, 0)) / r2
        total = total + rho * chord
    return total / to_field
