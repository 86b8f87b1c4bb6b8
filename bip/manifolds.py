"""Known data manifolds and data laws on them.

A manifold ``M`` in ``R^d`` comes with a chart ``Phi(u)``, the nearest-point projection
and distance, and its uniform (volume) law. A data law is a density on ``M`` in chart
coordinates; it knows the exact score and log density of its Gaussian-smoothed version
``p_sigma = p_data * N(0, sigma^2 I)`` (variance exploding, ``gamma = 1``) or of
``gamma Phi(u) + sigma z`` (variance preserving, ``gamma = sqrt(1 - sigma^2)``); see
SCIENCE.md sections 1 and 6.

Everything here is an immutable pytree (``flax.struct.dataclass``): parameters such as
``kappa`` are leaves, so a jitted function taking a law does not retrace when they change.

Example:
    >>> import bip
    >>> circle = bip.manifolds.Circle()
    >>> data = bip.manifolds.VonMises(circle, kappa=4.0, loc=3.141592653589793)
    >>> x = data.sample(jax.random.key(0), (5,))   # (5, 2) points on the circle
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from flax import struct
from jax.scipy.special import logsumexp

from bip import _checks
from bip.bessel import bessel_ratio, log_bessel_iv

Array = jax.Array


# --------------------------------------------------------------------------- manifolds


@struct.dataclass
class Circle:
    """The circle of radius ``radius`` centred at 0 in R^2; chart ``Phi(t) = r (cos t, sin t)``."""

    radius: float = 1.0

    ambient_dim = 2
    intrinsic_dim = 1

    def __post_init__(self):
        _checks.positive("radius", self.radius)

    def chart(self, t: Array) -> Array:
        """Chart: angles ``(...)`` in radians -> points ``(..., 2)``."""
        t = jnp.asarray(t)
        return self.radius * jnp.stack([jnp.cos(t), jnp.sin(t)], axis=-1)

    def coordinate(self, x: Array) -> Array:
        """Angle in ``(-pi, pi]`` of the nearest point: ``(..., 2) -> (...)``."""
        _checks.event_shape("x", x, (2,))
        return jnp.arctan2(x[..., 1], x[..., 0])

    def project(self, x: Array) -> Array:
        """Nearest point on the circle: ``(..., 2) -> (..., 2)`` (the origin maps to angle 0)."""
        return self.chart(self.coordinate(x))

    def distance(self, x: Array) -> Array:
        """Euclidean distance to the circle: ``(..., 2) -> (...)``."""
        _checks.event_shape("x", x, (2,))
        return jnp.abs(jnp.linalg.norm(x, axis=-1) - self.radius)

    def volume_density(self, t: Array) -> Array:
        """Speed ``|Phi'(t)|`` (the volume element in the chart): ``(...) -> (...)``."""
        return jnp.full(jnp.shape(t), self.radius, dtype=jnp.result_type(float))

    @property
    def volume(self) -> float:
        """Length of the circle."""
        return 2 * math.pi * self.radius

    def sample_uniform(self, rng_key: Array, shape: tuple[int, ...] = ()) -> Array:
        """Points ``(*shape, 2)`` drawn from the uniform (arc-length) law."""
        return self.chart(jax.random.uniform(rng_key, shape, minval=-jnp.pi, maxval=jnp.pi))


@struct.dataclass
class Ellipse:
    """The ellipse ``(x/a)^2 + (y/b)^2 = 1``; chart ``Phi(t) = (a cos t, b sin t)``.

    The chart parameter ``t`` is not the polar angle (unless ``a == b``); ``coordinate``
    returns the ``t`` of the nearest point, found on a 64-node grid refined by Newton steps.
    """

    a: float = 1.0
    b: float = 2.0

    ambient_dim = 2
    intrinsic_dim = 1

    def __post_init__(self):
        _checks.positive("a", self.a)
        _checks.positive("b", self.b)

    def chart(self, t: Array) -> Array:
        """Chart: parameters ``(...)`` -> points ``(..., 2)``."""
        t = jnp.asarray(t)
        return jnp.stack([self.a * jnp.cos(t), self.b * jnp.sin(t)], axis=-1)

    def _tangent(self, t):
        return jnp.stack([-self.a * jnp.sin(t), self.b * jnp.cos(t)], axis=-1)

    def coordinate(self, x: Array) -> Array:
        """Chart parameter ``t`` in ``(-pi, pi]`` of the nearest point: ``(..., 2) -> (...)``."""
        _checks.event_shape("x", x, (2,))
        grid = jnp.linspace(-jnp.pi, jnp.pi, 64, endpoint=False)
        nodes = jnp.broadcast_to(self.chart(grid), x.shape[:-1] + (64, 2))
        d2 = jnp.sum((x[..., None, :] - nodes) ** 2, axis=-1)
        t = grid[jnp.argmin(d2, axis=-1)]
        for _ in range(8):  # Newton on f(t) = <Phi'(t), Phi(t) - x>, curvature clamped > 0
            diff = self.chart(t) - x
            tangent = self._tangent(t)
            f = jnp.sum(tangent * diff, axis=-1)
            h = jnp.sum(-self.chart(t) * diff, axis=-1) + jnp.sum(tangent**2, axis=-1)
            step = f / jnp.maximum(h, 0.5 * jnp.minimum(self.a, self.b) ** 2)
            t = t - jnp.clip(step, -0.1, 0.1)
        return jnp.angle(jnp.exp(1j * t))

    def project(self, x: Array) -> Array:
        """Nearest point on the ellipse: ``(..., 2) -> (..., 2)``."""
        return self.chart(self.coordinate(x))

    def distance(self, x: Array) -> Array:
        """Euclidean distance to the ellipse: ``(..., 2) -> (...)``."""
        return jnp.linalg.norm(x - self.project(x), axis=-1)

    def volume_density(self, t: Array) -> Array:
        """Speed ``|Phi'(t)| = sqrt(a^2 sin^2 t + b^2 cos^2 t)``: ``(...) -> (...)``."""
        t = jnp.asarray(t)
        return jnp.sqrt((self.a * jnp.sin(t)) ** 2 + (self.b * jnp.cos(t)) ** 2)

    def _arclength_table(self, num_nodes: int = 4097):
        t = jnp.linspace(-jnp.pi, jnp.pi, num_nodes)
        speed = self.volume_density(t)
        cumulative = jnp.concatenate(
            [jnp.zeros(1), jnp.cumsum(0.5 * (speed[1:] + speed[:-1]) * (t[1] - t[0]))]
        )
        return t, cumulative

    @property
    def volume(self) -> Array:
        """Perimeter of the ellipse (trapezoid rule, spectrally accurate)."""
        t = jnp.linspace(-jnp.pi, jnp.pi, 2048, endpoint=False)
        return jnp.mean(self.volume_density(t)) * 2 * jnp.pi

    def sample_uniform(self, rng_key: Array, shape: tuple[int, ...] = ()) -> Array:
        """Points ``(*shape, 2)`` from the uniform arc-length law (inverse CDF on a table)."""
        t, cumulative = self._arclength_table()
        u = jax.random.uniform(rng_key, shape) * cumulative[-1]
        return self.chart(jnp.interp(u, cumulative, t))


@struct.dataclass
class Sphere:
    """The sphere ``S^(dim-1)`` of radius ``radius`` in ``R^dim`` (``dim >= 2``).

    The chart is hyperspherical: angles ``(..., dim - 1)``, the last one in ``(-pi, pi]``.
    """

    dim: int = struct.field(pytree_node=False, default=3)
    radius: float = 1.0

    intrinsic_dim = property(lambda self: self.dim - 1)
    ambient_dim = property(lambda self: self.dim)

    def __post_init__(self):
        _checks.integer("dim", self.dim, minimum=2)
        _checks.positive("radius", self.radius)

    def chart(self, u: Array) -> Array:
        """Hyperspherical angles ``(..., dim - 1)`` -> points ``(..., dim)``."""
        u = jnp.asarray(u)
        _checks.event_shape("u", u, (self.dim - 1,))
        sines = jnp.cumprod(jnp.sin(u), axis=-1)
        ones = jnp.ones(u.shape[:-1] + (1,), u.dtype)
        prefix = jnp.concatenate([ones, sines], axis=-1)  # prod_{j<i} sin u_j
        cosines = jnp.concatenate([jnp.cos(u), ones], axis=-1)
        return self.radius * prefix * cosines

    def coordinate(self, x: Array) -> Array:
        """Hyperspherical angles of the nearest point: ``(..., dim) -> (..., dim - 1)``."""
        _checks.event_shape("x", x, (self.dim,))
        tail = jnp.sqrt(jnp.cumsum((x[..., ::-1] ** 2), axis=-1)[..., ::-1])  # |x_{i:}|
        angles = jnp.arctan2(tail[..., 1:-1], x[..., :-2])
        last = jnp.arctan2(x[..., -1], x[..., -2])
        return jnp.concatenate([angles, last[..., None]], axis=-1)

    def project(self, x: Array) -> Array:
        """Nearest point ``r x / |x|``: ``(..., dim) -> (..., dim)``."""
        _checks.event_shape("x", x, (self.dim,))
        return self.radius * x / jnp.linalg.norm(x, axis=-1, keepdims=True)

    def distance(self, x: Array) -> Array:
        """Distance ``| |x| - r |``: ``(..., dim) -> (...)``."""
        _checks.event_shape("x", x, (self.dim,))
        return jnp.abs(jnp.linalg.norm(x, axis=-1) - self.radius)

    @property
    def volume(self) -> float:
        """Surface area ``2 pi^(d/2) r^(d-1) / Gamma(d/2)``."""
        d = self.dim
        return 2 * math.pi ** (d / 2) / math.gamma(d / 2) * self.radius ** (d - 1)

    def sample_uniform(self, rng_key: Array, shape: tuple[int, ...] = ()) -> Array:
        """Points ``(*shape, dim)`` from the uniform (surface) law."""
        z = jax.random.normal(rng_key, tuple(shape) + (self.dim,))
        return self.project(z)


# --------------------------------------------------------------------------- smoothing


def _vmf_smoothed(x, sigma, gamma, radius, kappa, mean_direction):
    """Log density and score of ``gamma r U + sigma Z`` with ``U ~ vMF(mu, kappa)`` on S^(d-1).

    ``p(x) = kappa^nu I_nu(|v|) / (|v|^nu I_nu(kappa)) (2 pi sigma^2)^(-d/2)
    exp(-(|x|^2 + gamma^2 r^2) / (2 sigma^2))`` with ``v = gamma r x / sigma^2 + kappa mu``
    and ``nu = d/2 - 1``; score ``-x / sigma^2 + gamma r A_nu(|v|) v / (|v| sigma^2)``.
    """
    d = x.shape[-1]
    nu = d / 2 - 1
    s2 = (sigma**2)[..., None]
    scale = (gamma * radius)[..., None]
    v = scale * x / s2 + jnp.broadcast_to(kappa * mean_direction, x.shape)
    z = jnp.linalg.norm(v, axis=-1)
    zs = jnp.maximum(z, 1e-30)

    def log_iv_over_pow(zz):  # log(I_nu(z) / z^nu), finite at z = 0
        tiny = zz < 1e-3
        zc = jnp.where(tiny, 1.0, zz)
        big = log_bessel_iv(nu, zc) - nu * jnp.log(zc)
        small = -nu * math.log(2) - math.lgamma(nu + 1) + jnp.log1p(zz**2 / (4 * (nu + 1)))
        return jnp.where(tiny, small, big)

    sq = jnp.sum(x**2, axis=-1)
    logp = (
        log_iv_over_pow(z)
        - log_iv_over_pow(jnp.asarray(kappa, dtype=z.dtype))
        - 0.5 * d * jnp.log(2 * jnp.pi * sigma**2)
        - (sq + (gamma * radius) ** 2) / (2 * sigma**2)
    )
    ratio_over_z = jnp.where(z < 1e-8, 1.0 / (d if d > 0 else 1), bessel_ratio(nu, zs) / zs)
    score = (-x + scale * ratio_over_z[..., None] * v) / s2
    return logp, score


def _curve_smoothed(chart, log_weight, x, sigma, gamma, num_nodes):
    """Log density and score of ``gamma Phi(T) + sigma Z`` for a closed curve by quadrature.

    ``T`` has density ``exp(log_weight(t))`` on ``[-pi, pi)``; the periodic trapezoid rule
    on ``num_nodes`` nodes is spectrally accurate once the node spacing is below the width
    ``sigma / |Phi'|`` of the posterior of ``t`` given ``x``. The score is Tweedie's
    ``(gamma E[Phi(T) | x] - x) / sigma^2``.
    """
    t = jnp.linspace(-jnp.pi, jnp.pi, num_nodes, endpoint=False)
    points = chart(t)  # (N, 2)
    log_w = log_weight(t) + math.log(2 * math.pi / num_nodes)
    s2 = sigma**2
    shifted = gamma[..., None, None] * jnp.broadcast_to(points, x.shape[:-1] + points.shape)
    d2 = jnp.sum((x[..., None, :] - shifted) ** 2, axis=-1)  # (..., N)
    logits = jnp.broadcast_to(log_w, d2.shape) - d2 / (2 * s2[..., None])
    logp = logsumexp(logits, axis=-1) - jnp.log(2 * jnp.pi * s2)
    weights = jax.nn.softmax(logits, axis=-1)
    mean = jnp.einsum("...n,nd->...d", weights, points)
    score = (gamma[..., None] * mean - x) / s2[..., None]
    return logp, score.astype(x.dtype)


# --------------------------------------------------------------------------- data laws


@struct.dataclass
class VonMises:
    """Von Mises law ``exp(kappa cos(t - loc)) / (2 pi I_0(kappa))`` on a curve's chart parameter.

    On a ``Circle`` this is the von Mises-Fisher law and the smoothed score is closed form
    (Bessel ratios); on an ``Ellipse`` the smoothed score is computed by quadrature over
    ``num_nodes`` chart nodes (default 2048: relative accuracy better than 1e-8 for
    ``sigma >= 0.01`` on the (1, 2) ellipse).
    """

    manifold: Circle | Ellipse
    kappa: float = 0.0
    loc: float = 0.0
    num_nodes: int = struct.field(pytree_node=False, default=2048)

    def __post_init__(self):
        if not isinstance(self.manifold, Circle | Ellipse):
            raise TypeError(
                f"VonMises lives on a Circle or an Ellipse, got {type(self.manifold).__name__}"
            )
        _checks.nonnegative("kappa", self.kappa)
        _checks.finite("loc", self.loc)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (2,)

    def chart_log_density(self, t: Array) -> Array:
        """Log density w.r.t. ``dt`` of the chart parameter: ``(...) -> (...)``."""
        kappa = jnp.asarray(self.kappa, dtype=jnp.result_type(float))
        return (
            kappa * jnp.cos(t - self.loc)
            - jnp.log(2 * jnp.pi * jax.scipy.special.i0e(kappa))
            - kappa
        )

    def sample_coordinates(self, rng_key: Array, shape: tuple[int, ...] = ()) -> Array:
        """Chart parameters ``(*shape)`` in ``(-pi, pi]``."""
        t = dist.VonMises(jnp.asarray(self.loc, float), jnp.asarray(self.kappa, float)).sample(
            rng_key, tuple(shape)
        )
        return jnp.angle(jnp.exp(1j * t))

    def sample(self, rng_key: Array, shape: tuple[int, ...] = ()) -> Array:
        """Points ``(*shape, 2)`` on the manifold."""
        return self.manifold.chart(self.sample_coordinates(rng_key, shape))

    def smoothed(self, x: Array, sigma: Array, gamma: Array) -> tuple[Array, Array]:
        """``(log p_sigma(x), score)`` with shapes ``(...)`` and ``(..., 2)``."""
        if isinstance(self.manifold, Circle):
            mean_direction = jnp.stack([jnp.cos(self.loc), jnp.sin(self.loc)])
            return _vmf_smoothed(
                x, sigma, gamma, self.manifold.radius, self.kappa, mean_direction.astype(x.dtype)
            )
        return _curve_smoothed(
            self.manifold.chart, self.chart_log_density, x, sigma, gamma, self.num_nodes
        )


@struct.dataclass
class VonMisesFisher:
    """Von Mises-Fisher law ``vMF(mean_direction, kappa)`` on a ``Sphere`` (closed-form scores)."""

    manifold: Sphere
    kappa: float = 0.0
    mean_direction: Array | None = None

    def __post_init__(self):
        if not isinstance(self.manifold, Sphere):
            raise TypeError(f"VonMisesFisher lives on a Sphere, got {type(self.manifold).__name__}")
        _checks.nonnegative("kappa", self.kappa)
        if self.mean_direction is None:
            object.__setattr__(self, "mean_direction", jnp.eye(self.manifold.dim)[0])
        elif _checks.is_concrete(self.mean_direction):
            mu = jnp.asarray(self.mean_direction, dtype=float)
            _checks.event_shape("mean_direction", mu, (self.manifold.dim,))
            _checks.finite("mean_direction", mu)
            norm = float(jnp.linalg.norm(mu))
            if norm == 0:
                raise ValueError("mean_direction must be a non-zero vector")
            object.__setattr__(self, "mean_direction", mu / norm)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.manifold.dim,)

    def sample(self, rng_key: Array, shape: tuple[int, ...] = ()) -> Array:
        """Points ``(*shape, dim)`` by Wood's (1994) rejection sampler (32 proposals per point)."""
        d = self.manifold.dim
        shape = tuple(shape)
        kappa = jnp.asarray(self.kappa, dtype=float)
        mu = jnp.asarray(self.mean_direction, dtype=float)
        if d == 2:
            loc = jnp.arctan2(mu[1], mu[0])
            t = dist.VonMises(loc, kappa).sample(rng_key, shape)
            return self.manifold.chart(t[..., None])
        k_beta, k_unif, k_dir = jax.random.split(rng_key, 3)
        num_proposals = 32
        b = (d - 1) / (2 * kappa + jnp.sqrt(4 * kappa**2 + (d - 1) ** 2))
        x0 = (1 - b) / (1 + b)
        c = kappa * x0 + (d - 1) * jnp.log(1 - x0**2)
        z = jax.random.beta(k_beta, (d - 1) / 2, (d - 1) / 2, shape + (num_proposals,))
        w = (1 - (1 + b) * z) / (1 - (1 - b) * z)
        log_u = jnp.log(jax.random.uniform(k_unif, shape + (num_proposals,)))
        accept = kappa * w + (d - 1) * jnp.log(1 - x0 * w) - c >= log_u
        w = jnp.take_along_axis(w, jnp.argmax(accept, axis=-1)[..., None], axis=-1)[..., 0]
        v = jax.random.normal(k_dir, shape + (d - 1,))
        v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
        y = jnp.concatenate([w[..., None], jnp.sqrt(1 - w**2)[..., None] * v], axis=-1)
        # Householder reflection taking e_1 to mu.
        e1 = jnp.eye(d)[0]
        u = e1 - mu
        unorm2 = jnp.sum(u**2)
        reflected = y - 2 * u * jnp.sum(u * y, axis=-1, keepdims=True) / jnp.maximum(unorm2, 1e-30)
        return self.manifold.radius * jnp.where(unorm2 < 1e-24, y, reflected)

    def smoothed(self, x: Array, sigma: Array, gamma: Array) -> tuple[Array, Array]:
        """``(log p_sigma(x), score)`` with shapes ``(...)`` and ``(..., dim)``."""
        return _vmf_smoothed(
            x, sigma, gamma, self.manifold.radius, self.kappa, self.mean_direction.astype(x.dtype)
        )


@struct.dataclass
class Uniform:
    """The uniform (volume, maximum-entropy) law on a manifold."""

    manifold: Circle | Ellipse | Sphere
    num_nodes: int = struct.field(pytree_node=False, default=2048)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.manifold.ambient_dim,)

    def chart_log_density(self, t: Array) -> Array:
        """Curves only: log density of the chart parameter, ``log |Phi'(t)| - log length``."""
        return jnp.log(self.manifold.volume_density(t)) - jnp.log(self.manifold.volume)

    def sample(self, rng_key: Array, shape: tuple[int, ...] = ()) -> Array:
        """Points ``(*shape, d)`` on the manifold."""
        return self.manifold.sample_uniform(rng_key, shape)

    def smoothed(self, x: Array, sigma: Array, gamma: Array) -> tuple[Array, Array]:
        """``(log p_sigma(x), score)``: closed form on circle/sphere, quadrature on the ellipse."""
        if isinstance(self.manifold, Ellipse):
            return _curve_smoothed(
                self.manifold.chart, self.chart_log_density, x, sigma, gamma, self.num_nodes
            )
        if isinstance(self.manifold, Circle):
            return VonMises(self.manifold, 0.0, 0.0).smoothed(x, sigma, gamma)
        return VonMisesFisher(self.manifold, 0.0).smoothed(x, sigma, gamma)
