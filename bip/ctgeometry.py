"""CT acquisition geometries (parallel and flat-detector fan beam) and their rays.

``parallel_geometry`` and ``fan_geometry`` build a ``Geometry`` (a pytree whose only leaf is
the view angles); ``bip.tomography.projector`` projects along its rays, the kernels of
``bip.ctkernels`` trace them and ``bip.ctphantoms.ellipse_sinogram`` integrates ellipses
along them exactly. All are re-exported by ``bip.tomography``.

Geometry (pixel units, ``x`` = column, ``y`` = row): the rotation axis passes through pixel
``(n // 2, n // 2)`` and detector bin ``num_detectors // 2`` sees the central ray
(scikit-image's ``radon`` convention; for even ``n`` it is half a pixel from the image's
geometric centre). At angle ``theta`` the central ray runs along ``e = (sin, cos)`` and the
detector axis is ``u = (cos, -sin)``: the parallel ray of bin ``d`` passes through
``C + t_d u`` with ``t_d = (d - num_detectors // 2) * detector_spacing``, exactly the rays of
``skimage.transform.radon``. Fan beam (flat detector): the source sits at
``C - source_distance e``, the detector line at ``C + detector_distance e``, bin ``d`` at
``C + detector_distance e + t_d u``. Values are line integrals in pixel units.

Example:
    >>> import jax.numpy as jnp
    >>> from bip import ctgeometry
    >>> ctgeometry.parallel_geometry(64, jnp.arange(0.0, 180.0, 6.0)).sinogram_shape
    (64, 30)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from bip import _checks

Array = jax.Array

__all__ = ["Geometry", "fan_geometry", "parallel_geometry"]


# --------------------------------------------------------------------------- geometry


@struct.dataclass
class Geometry:
    """A 2-D CT acquisition: parallel or flat-detector fan beam (a pytree; angles are a leaf).

    Attributes:
        angles: ``(num_angles,)`` view angles in degrees (skimage's ``theta``).
        image_size: side ``n`` of the square image, in pixels (static).
        num_detectors: number of detector bins (static).
        detector_spacing: bin spacing in pixel units (static).
        source_distance: source to rotation axis, pixels; ``None`` for parallel beam (static).
        detector_distance: rotation axis to detector line, pixels; ``None`` for parallel.
    """

    angles: Array
    image_size: int = struct.field(pytree_node=False)
    num_detectors: int = struct.field(pytree_node=False)
    detector_spacing: float = struct.field(pytree_node=False, default=1.0)
    source_distance: float | None = struct.field(pytree_node=False, default=None)
    detector_distance: float | None = struct.field(pytree_node=False, default=None)

    @property
    def beam(self) -> str:
        """``"parallel"`` or ``"fan"``."""
        return "parallel" if self.source_distance is None else "fan"

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        """``(num_detectors, num_angles)``."""
        return (self.num_detectors, int(self.angles.shape[0]))


def _angles(angles, dtype) -> Array:
    _checks.finite("angles", angles)
    angles = jnp.asarray(angles)
    if dtype is not None:
        angles = angles.astype(dtype)
    elif not jnp.issubdtype(angles.dtype, jnp.floating):
        angles = angles.astype(jnp.result_type(float))
    if angles.ndim != 1 or angles.shape[0] < 1:
        raise ValueError(f"angles must be a 1-D array of degrees, got shape {angles.shape}")
    return angles


def parallel_geometry(
    image_size: int,
    angles: Array,
    num_detectors: int | None = None,
    detector_spacing: float = 1.0,
    dtype=None,
) -> Geometry:
    """Parallel-beam geometry: ``image_size`` pixels square, views at ``angles`` (degrees).

    Args:
        image_size: side ``n`` of the square image.
        angles: ``(num_angles,)`` view angles in degrees (any values).
        num_detectors: detector bins (default ``n``, skimage's ``circle=True`` sinogram).
        detector_spacing: bin spacing in pixels (> 0, default 1).
        dtype: float dtype of the angles (default: their float dtype).

    Returns:
        A ``Geometry``.

    Example:
        >>> parallel_geometry(128, jnp.arange(0.0, 180.0, 6.0)).sinogram_shape
        (128, 30)
    """
    n = _checks.integer("image_size", image_size, minimum=2)
    nd = n if num_detectors is None else _checks.integer("num_detectors", num_detectors, minimum=1)
    _checks.positive("detector_spacing", detector_spacing)
    return Geometry(_angles(angles, dtype), n, nd, float(detector_spacing))


def fan_geometry(
    image_size: int,
    angles: Array,
    source_distance: float,
    detector_distance: float,
    num_detectors: int,
    detector_spacing: float,
    dtype=None,
) -> Geometry:
    """Fan-beam geometry with a flat detector (distances and spacing in pixel units).

    Args:
        image_size: side ``n`` of the square image.
        angles: ``(num_angles,)`` source angles in degrees.
        source_distance: source to rotation axis; must exceed the image's half-diagonal
            plus a pixel, ``sqrt(2) (n // 2 + 1) + 1`` (the source outside the image).
        detector_distance: rotation axis to detector line (>= 0).
        num_detectors: number of detector bins.
        detector_spacing: bin spacing on the detector (> 0); the magnification is
            ``(source_distance + detector_distance) / source_distance``.
        dtype: float dtype of the angles.

    Returns:
        A ``Geometry``.

    Example:
        >>> g = fan_geometry(128, jnp.arange(0.0, 360.0, 3.0), 256.0, 256.0, 256, 1.0)
        >>> g.beam, g.sinogram_shape
        ('fan', (256, 120))
    """
    n = _checks.integer("image_size", image_size, minimum=2)
    nd = _checks.integer("num_detectors", num_detectors, minimum=1)
    _checks.positive("detector_spacing", detector_spacing)
    _checks.finite("detector_distance", detector_distance)
    if float(detector_distance) < 0:
        raise ValueError(f"detector_distance must be >= 0, got {detector_distance}")
    radius = math.sqrt(2) * (n // 2 + 1) + 1.0
    if not float(source_distance) > radius:
        raise ValueError(
            f"source_distance must exceed the image half-diagonal plus a pixel, {radius:.2f} "
            f"pixels (the source outside the image), got {source_distance}"
        )
    return Geometry(
        _angles(angles, dtype),
        n,
        nd,
        float(detector_spacing),
        float(source_distance),
        float(detector_distance),
    )


# --------------------------------------------------------------------------- ray geometry


def _detector_offsets(g: Geometry, d: Array) -> Array:
    return (d - g.num_detectors // 2) * g.detector_spacing


def _rays(g: Geometry, cos: Array, sin: Array, d: Array):
    """Point ``(px, py)`` and direction ``(vx, vy)`` of the ray of (float) bin ``d`` at one view."""
    m = g.image_size // 2
    t = _detector_offsets(g, d)
    if g.beam == "parallel":
        return m + t * cos, m - t * sin, sin + 0 * t, cos + 0 * t
    sod, sdd = g.source_distance, g.source_distance + g.detector_distance
    return m - sod * sin, m - sod * cos, sdd * sin + t * cos, sdd * cos - t * sin


def _bins(g: Geometry, cos: Array, sin: Array, x: Array, y: Array) -> Array:
    """Continuous detector bin seen from point ``(x, y)`` (the inverse of ``_rays``)."""
    m = g.image_size // 2
    along = (x - m) * cos - (y - m) * sin  # coordinate on the detector axis u
    if g.beam == "parallel":
        t = along
    else:
        depth = g.source_distance + (x - m) * sin + (y - m) * cos  # distance along e
        t = along * (g.source_distance + g.detector_distance) / depth
    return t / g.detector_spacing + g.num_detectors // 2
