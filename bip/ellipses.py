"""Random-ellipse phantoms at any size, and their analytic sinograms.

``RandomEllipseLaw(size)`` is a DIVal-style law of CT phantoms: a random number of ellipses
(uniform on ``count``), each with a log-uniform pair of semi-axes, a uniform rotation, a
uniform additive intensity and a centre uniform on the disc that keeps the whole ellipse
inside the circle of radius ``radius`` (so inside the field of view ``[-1, 1]^2`` and inside
the disc that parallel-beam scanners see at every angle). Intensities add up where ellipses
overlap and are non-negative, so images are non-negative; the background is 0.

Conventions are ``bip.tomography``'s (and ``bip.images``'s): a phantom is a table of rows
``(intensity, a, b, x0, y0, phi_degrees)`` in field units (``x`` right with the column, ``y``
down with the row, pixel centres at ``-1 + (2 k + 1) / size``, ``phi`` from ``+x`` towards
``+y``), so ``bip.tomography.ellipse_sinogram(table, geometry)`` is the exact sinogram of a
drawn phantom and ``bip.tomography.ellipse_image(table, size)`` its supersampled
rasterisation. ``RandomEllipseLaw.table`` draws tables (a fixed maximum count of rows, the
unused ones with intensity 0, so draws vmap and jit), ``render`` rasterises them fast: each
pixel gets ``clip(1/2 + d / pixel, 0, 1)`` of each ellipse, ``d`` the signed distance of the
pixel centre to the edge (exact for circles, first-order for ellipses), which is the area
coverage of a straight edge crossing the pixel square along an axis.

Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from bip import ellipses, tomography
    >>> law = ellipses.RandomEllipseLaw(128)
    >>> x = law.sample(jax.random.key(0), (4,))            # (4, 128, 128), >= 0
    >>> t = law.table(jax.random.key(0), (4,))             # (4, 15, 6): the same phantoms
    >>> g = tomography.parallel_geometry(128, jnp.linspace(0.0, 180.0, 30, endpoint=False))
    >>> y = tomography.ellipse_sinogram(t[0], g)           # exact line integrals (128, 30)
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from flax import struct

from bip import _checks

Array = jax.Array

__all__ = ["RandomEllipseLaw", "render"]


def _float():
    return jnp.result_type(float)


# --------------------------------------------------------------------------- rendering


def render(table: Array, size: int) -> Array:
    """Rasterise ellipse tables with anti-aliased edges: ``(..., k, 6) -> (..., size, size)``.

    Each ellipse adds ``intensity * clip(1/2 + d / pixel, 0, 1)`` at each pixel centre, with
    ``pixel = 2 / size`` and ``d`` the signed distance to its edge (positive inside),
    approximated by ``(1 - s) s / |grad s^2| * 2`` with ``s^2 = (u / a)^2 + (v / b)^2`` (exact
    for a circle). Rows with intensity 0 add nothing. Cost: one fused pass over the pixels per
    row (a ``fori_loop`` over rows, memory ``O(batch x pixels)``).

    Args:
        table: rows ``(intensity, a, b, x0, y0, phi_degrees)`` (``bip.tomography``'s), any
            float dtype (the images have it).
        size: image side in pixels.

    Returns:
        Images ``(..., size, size)``, axis 0 = ``y`` (down), axis 1 = ``x``.

    Example:
        >>> disc = jnp.array([[1.0, 0.5, 0.5, 0.0, 0.0, 0.0]])
        >>> float(render(disc, 64).sum() * (2 / 64) ** 2)        # its area, pi / 4
        0.785...
    """
    size = _checks.integer("size", size)
    table = jnp.asarray(table)
    if not jnp.issubdtype(table.dtype, jnp.floating):
        table = table.astype(_float())
    if table.ndim < 2 or table.shape[-1] != 6:
        raise ValueError(f"table must be (..., k, 6) ellipse rows, got shape {table.shape}")
    _checks.finite("table", table)
    if _checks.is_concrete(table) and bool(jnp.any(table[..., 1:3] <= 0)):
        raise ValueError("ellipse semi-axes a, b (table columns 1 and 2) must be > 0")
    batch = table.shape[:-2]
    flat = table.reshape((-1,) + table.shape[-2:])
    return _render(flat, size).reshape(batch + (size, size))


@partial(jax.jit, static_argnums=1)
def _render(table: Array, size: int) -> Array:
    dtype = table.dtype
    centres = -1.0 + (2.0 * jnp.arange(size, dtype=dtype) + 1.0) / size
    gy, gx = centres[None, :, None], centres[None, None, :]
    inverse_pixel = size / 2.0

    def add(i, img):
        row = table[:, i, :]
        rho, a, b, x0, y0, phi = (row[:, c].reshape(-1, 1, 1) for c in range(6))
        cos, sin = jnp.cos(jnp.deg2rad(phi)), jnp.sin(jnp.deg2rad(phi))
        dx, dy = gx - x0, gy - y0
        u = (dx * cos + dy * sin) / a
        v = (dy * cos - dx * sin) / b
        s2 = u * u + v * v
        g2 = (u / a) ** 2 + (v / b) ** 2  # |grad s^2|^2 / 4
        tiny = jnp.finfo(dtype).tiny
        dist = (1.0 - jnp.sqrt(s2)) * jnp.sqrt((s2 + tiny) / (g2 + tiny))
        return img + rho * jnp.clip(0.5 + dist * inverse_pixel, 0.0, 1.0)

    img = jnp.zeros((table.shape[0], size, size), dtype)
    return jax.lax.fori_loop(0, table.shape[1], add, img)


# --------------------------------------------------------------------------- random law


@struct.dataclass
class RandomEllipseLaw:
    """DIVal-style random-ellipse phantoms ``(size, size)``: a data law (``sample``,
    ``event_shape``; no known manifold, ``manifold = None``).

    Per image: ``K`` ellipses, ``K`` uniform on ``count[0] .. count[1]``; per ellipse,
    independently: semi-axes ``a, b`` log-uniform on ``axes`` (field half-widths), rotation
    ``phi`` uniform on ``[0, 180)`` degrees, intensity uniform on ``intensity``, and centre
    uniform on the disc of radius ``radius - max(a, b)``, so the ellipse lies inside the disc
    of radius ``radius``. Images are the sum of the ellipses (``render``), ``>= 0``.

    Attributes:
        size: image side in pixels (>= 8).
        count: ``(min, max)`` number of ellipses per image, ``0 <= min <= max``, ``max >= 1``.
        axes: ``(min, max)`` semi-axis range, ``0 < min <= max < radius``.
        intensity: ``(min, max)`` intensity range, ``0 <= min <= max``, ``max > 0``.
        radius: the ellipses stay inside the disc of this radius, ``0 < radius <= 1``.
        name: the law's name.

    Example:
        >>> law = RandomEllipseLaw(64, count=(3, 6))
        >>> law.sample(jax.random.key(1), (2, 5)).shape
        (2, 5, 64, 64)
    """

    size: int = struct.field(pytree_node=False, default=128)
    count: tuple[int, int] = struct.field(pytree_node=False, default=(5, 15))
    axes: tuple[float, float] = struct.field(pytree_node=False, default=(0.05, 0.4))
    intensity: tuple[float, float] = struct.field(pytree_node=False, default=(0.1, 0.6))
    radius: float = struct.field(pytree_node=False, default=0.9)
    name: str = struct.field(pytree_node=False, default="random-ellipses")

    def __post_init__(self):
        _checks.integer("size", self.size, minimum=8)
        lo, hi = _pair("count", self.count)
        if not (float(lo).is_integer() and float(hi).is_integer() and 0 <= lo <= hi and hi >= 1):
            raise ValueError(f"count must be integers 0 <= min <= max, max >= 1, got {self.count}")
        object.__setattr__(self, "count", (int(lo), int(hi)))
        if not 0 < self.radius <= 1:
            raise ValueError(f"radius must lie in (0, 1], got {self.radius!r}")
        lo, hi = _pair("axes", self.axes)
        if not 0 < lo <= hi < self.radius:
            raise ValueError(
                f"axes must satisfy 0 < min <= max < radius = {self.radius}, got {self.axes}"
            )
        object.__setattr__(self, "axes", (float(lo), float(hi)))
        lo, hi = _pair("intensity", self.intensity)
        if not 0 <= lo <= hi or hi <= 0:
            raise ValueError(
                f"intensity must satisfy 0 <= min <= max, max > 0, got {self.intensity}"
            )
        object.__setattr__(self, "intensity", (float(lo), float(hi)))

    @property
    def event_shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    @property
    def manifold(self) -> None:
        """No known manifold (the number of ellipses varies): score-only priors."""
        return None

    @property
    def max_count(self) -> int:
        """Rows of every table: ``count[1]``."""
        return self.count[1]

    def table(self, rng_key: Array, shape: tuple[int, ...] = (), dtype=None) -> Array:
        """Ellipse tables ``(*shape, max_count, 6)`` (``bip.tomography`` rows; rows past the
        drawn count have intensity 0). ``jit``/``vmap``-friendly; ``dtype`` defaults to the
        default float dtype."""
        dtype = _float() if dtype is None else jnp.dtype(dtype)
        full = tuple(shape) + (self.max_count,)
        k_n, k_a, k_b, k_phi, k_r, k_t, k_i = jax.random.split(rng_key, 7)
        num = jax.random.randint(k_n, tuple(shape) + (1,), self.count[0], self.count[1] + 1)
        active = (jnp.arange(self.max_count).reshape((1,) * len(shape) + (-1,)) < num).astype(dtype)
        log_lo, log_hi = math.log(self.axes[0]), math.log(self.axes[1])
        a = jnp.exp(jax.random.uniform(k_a, full, dtype, log_lo, log_hi))
        b = jnp.exp(jax.random.uniform(k_b, full, dtype, log_lo, log_hi))
        phi = jax.random.uniform(k_phi, full, dtype, 0.0, 180.0)
        reach = (self.radius - jnp.maximum(a, b)) * jnp.sqrt(jax.random.uniform(k_r, full, dtype))
        turn = jax.random.uniform(k_t, full, dtype, 0.0, 2.0 * math.pi)
        rho = jax.random.uniform(k_i, full, dtype, *self.intensity) * active
        return jnp.stack([rho, a, b, reach * jnp.cos(turn), reach * jnp.sin(turn), phi], axis=-1)

    def sample(self, rng_key: Array, shape: tuple[int, ...] = (), dtype=None) -> Array:
        """Phantoms ``(*shape, size, size)``: ``render(table(rng_key, shape), size)``, the
        same draws as ``table`` with the same key."""
        return render(self.table(rng_key, shape, dtype), self.size)


def _pair(name: str, value) -> tuple[float, float]:
    try:
        lo, hi = value
        return float(lo), float(hi)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}") from None
