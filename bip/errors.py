"""Score errors to inject into a prior: ``s_hat = s + size * sigma^beta * e(x)``.

An error is a vector field ``e(x)`` on events of a given shape. Conservative errors carry
their potential ``g`` (``e = grad g``), so the corrupted prior keeps a log density and its
exact stationary law can be computed (``bip.targets``). Kinds (SCIENCE.md section 5,
Thm 5.2 for the non-conservative case):

- ``gradient(potential)``: any smooth potential you write;
- ``quartic_pull(center)``: the paper's Fig. 4 error ``-grad(1/2 |x - c|^4)``;
- ``angular_cosine(frequency)``: the tangential potential ``cos(k theta(x))``;
- ``rotational()``: the non-conservative rotation ``(-x_2, x_1, 0, ...)``;
- ``random_fourier(key, event_shape)``: a seeded smooth random field (random Fourier
  features), conservative or not, RMS about 1 per coordinate;
- ``smooth_random_field(key, image_shape)``: the image version, random Fourier features
  along smooth random images, RMS norm about 1 for the whole event (``size`` is then the
  L2 norm of the score error, the unit of ``bip.profile``'s ``abs_error``).

Example:
    >>> err = bip.errors.angular_cosine(frequency=2)
    >>> err.field(jnp.array([0.0, 1.0]))      # tangent to the circle
    Array([ 0., -0.], dtype=float64)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from bip import _checks

Array = jax.Array


@struct.dataclass
class ScoreError:
    """A vector field ``e(x)`` added to a score; ``potential`` is ``g`` with ``e = grad g``.

    Attributes:
        field_fn: ``field_fn(params, x) -> (..., *event)``, batched over leading axes.
        params: pytree of parameters.
        potential_fn: ``potential_fn(params, x) -> (...)`` or ``None`` (non-conservative).
        event_shape: the event shape it acts on, or ``None`` for any point in R^d, d >= 2.
        name: description.
    """

    field_fn: Callable = struct.field(pytree_node=False)
    params: Any
    potential_fn: Callable | None = struct.field(pytree_node=False, default=None)
    event_shape: tuple[int, ...] | None = struct.field(pytree_node=False, default=None)
    name: str = struct.field(pytree_node=False, default="error")

    @property
    def conservative(self) -> bool:
        return self.potential_fn is not None

    def field(self, x: Array) -> Array:
        """The error vector at ``x``, same shape as ``x``."""
        return self.field_fn(self.params, jnp.asarray(x))

    def potential(self, x: Array) -> Array:
        """The potential ``g(x)``: ``(..., *event) -> (...)``."""
        if self.potential_fn is None:
            raise ValueError(f"error {self.name!r} is not conservative: it has no potential")
        return self.potential_fn(self.params, jnp.asarray(x))


def _grad_of_batched(potential_fn):
    def field(params, x):
        return jax.grad(lambda y: jnp.sum(potential_fn(params, y)))(x)

    return field


@struct.dataclass
class _UserPotential:
    fn: Callable = struct.field(pytree_node=False)


def _user_potential(params: _UserPotential, x):
    return params.fn(x)


_user_field = _grad_of_batched(_user_potential)


def gradient(potential: Callable[[Array], Array], name: str = "gradient") -> ScoreError:
    """A conservative error ``e = grad g`` for a potential ``g: (..., *event) -> (...)``.

    ``g`` must be batched over leading axes (write it with ``x[..., i]`` and ``axis=-1``).

    Example:
        >>> err = bip.errors.gradient(lambda x: jnp.sin(3 * x[..., 0]))
    """
    if not callable(potential):
        raise TypeError(f"potential must be a callable, got {type(potential).__name__}")
    return ScoreError(
        field_fn=_user_field,
        params=_UserPotential(potential),
        potential_fn=_user_potential,
        name=name,
    )


def _quartic_potential(center, x):
    return -0.5 * jnp.sum((x - jnp.broadcast_to(center, x.shape)) ** 2, axis=-1) ** 2


def _quartic_field(center, x):
    diff = x - jnp.broadcast_to(center, x.shape)
    return -2.0 * jnp.sum(diff**2, axis=-1, keepdims=True) * diff


def quartic_pull(center: Array | tuple = (1.0, 0.0)) -> ScoreError:
    """The paper's Fig. 4 error ``e(x) = -grad(1/2 |x - c|^4) = -2 |x - c|^2 (x - c)``.

    Its potential ``g = -1/2 |x - c|^4`` pulls mass toward ``c``.
    """
    center = jnp.asarray(center, dtype=jnp.result_type(float))
    _checks.finite("center", center)
    return ScoreError(
        field_fn=_quartic_field,
        params=center,
        potential_fn=_quartic_potential,
        event_shape=tuple(center.shape),
        name="quartic_pull",
    )


@struct.dataclass
class _AngularParams:
    frequency: Array
    phase: Array


def _angular_potential(params: _AngularParams, x):
    theta = jnp.arctan2(x[..., 1], x[..., 0])
    return jnp.cos(params.frequency * theta - params.phase)


def _angular_field(params: _AngularParams, x):
    theta = jnp.arctan2(x[..., 1], x[..., 0])
    r2 = jnp.maximum(x[..., 0] ** 2 + x[..., 1] ** 2, 1e-12)
    coefficient = -params.frequency * jnp.sin(params.frequency * theta - params.phase) / r2
    plane = jnp.stack([-x[..., 1] * coefficient, x[..., 0] * coefficient], axis=-1)
    return jnp.concatenate([plane, jnp.zeros_like(x[..., 2:])], axis=-1)


def angular_cosine(frequency: float = 2.0, phase: float = 0.0) -> ScoreError:
    """The tangential potential ``g(x) = cos(k theta(x) - phase)``, ``theta = atan2(x_2, x_1)``.

    With ``k = 2`` this is the error of the rate-separation experiment (SCIENCE.md sec. 5).
    Its field ``-k sin(k theta - phase) (-x_2, x_1) / r^2`` is tangent to circles about 0.
    """
    dtype = jnp.result_type(float)
    _checks.finite("frequency", frequency)
    return ScoreError(
        field_fn=_angular_field,
        params=_AngularParams(jnp.asarray(frequency, dtype), jnp.asarray(phase, dtype)),
        potential_fn=_angular_potential,
        name=f"angular_cosine(k={frequency})",
    )


def _rotational_field(center, x):
    shifted = x[..., :2] - jnp.broadcast_to(center, x.shape[:-1] + (2,))
    plane = jnp.stack([-shifted[..., 1], shifted[..., 0]], axis=-1)
    return jnp.concatenate([plane, jnp.zeros_like(x[..., 2:])], axis=-1)


def rotational(center: Array | tuple = (0.0, 0.0)) -> ScoreError:
    """The non-conservative rotation ``e(x) = (-(x_2 - c_2), x_1 - c_1, 0, ...)`` (curl 2).

    On the unit circle about ``c`` it is the unit tangent field: it drives a rotation along
    the manifold that no potential can produce.
    """
    center = jnp.asarray(center, dtype=jnp.result_type(float))
    _checks.event_shape("center", center, (2,))
    return ScoreError(field_fn=_rotational_field, params=center, name="rotational")


@struct.dataclass
class _FourierParams:
    frequencies: Array  # (F, D)
    phases: Array  # (F,)
    amplitudes: Array  # (F, D) field amplitudes, or (F,) potential weights
    lengthscale: Array
    event_shape: tuple[int, ...] = struct.field(pytree_node=False)


def _fourier_phase(params: _FourierParams, x):
    batch = x.shape[: x.ndim - len(params.event_shape)]
    flat = x.reshape(batch + (-1,))
    phase = flat @ params.frequencies.T
    return phase + jnp.broadcast_to(params.phases, phase.shape), batch  # (..., F)


def _fourier_field(params: _FourierParams, x):
    phase, batch = _fourier_phase(params, x)
    return (jnp.cos(phase) @ params.amplitudes).reshape(batch + params.event_shape)


def _fourier_potential(params: _FourierParams, x):
    phase, _ = _fourier_phase(params, x)
    return params.lengthscale * (jnp.cos(phase) @ params.amplitudes)


def _fourier_gradient(params: _FourierParams, x):
    phase, batch = _fourier_phase(params, x)
    weights = (
        -params.lengthscale * jnp.sin(phase) * jnp.broadcast_to(params.amplitudes, phase.shape)
    )
    return (weights @ params.frequencies).reshape(batch + params.event_shape)


def random_fourier(
    rng_key: Array,
    event_shape: tuple[int, ...] | int,
    num_features: int = 64,
    lengthscale: float = 1.0,
    conservative: bool = False,
) -> ScoreError:
    """A seeded smooth random field from random Fourier features (RMS about 1 per coordinate).

    Non-conservative: ``e(x) = sqrt(2/F) sum_f a_f cos(w_f . x + b_f)`` with ``a_f ~ N(0, I)``.
    Conservative: ``e = grad g``, ``g(x) = l sqrt(2/F) sum_f c_f cos(w_f . x + b_f)``.
    Frequencies ``w_f ~ N(0, I / l^2)`` set the smoothness; the same key gives the same field.

    Args:
        rng_key: PRNG key.
        event_shape: the shape of one point (``(2,)``, or ``(32, 32)`` for images).
        num_features: number of Fourier features ``F``.
        lengthscale: correlation length ``l`` of the field, in the units of ``x``.
        conservative: whether to return a gradient field (with its potential).

    Example:
        >>> err = bip.errors.random_fourier(jax.random.key(0), (2,), lengthscale=0.5)
    """
    shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
    num_features = _checks.integer("num_features", num_features)
    _checks.positive("lengthscale", lengthscale)
    dim = math.prod(shape)
    k_w, k_b, k_a = jax.random.split(rng_key, 3)
    dtype = jnp.result_type(float)
    frequencies = jax.random.normal(k_w, (num_features, dim), dtype) / lengthscale
    phases = jax.random.uniform(k_b, (num_features,), dtype, 0.0, 2 * jnp.pi)
    amp_shape = (num_features,) if conservative else (num_features, dim)
    amplitudes = jax.random.normal(k_a, amp_shape, dtype) * math.sqrt(2.0 / num_features)
    params = _FourierParams(
        frequencies, phases, amplitudes, jnp.asarray(lengthscale, dtype), event_shape=shape
    )
    return _fourier_error(params, conservative, f"random_fourier({{kind}}, l={lengthscale})")


def _fourier_error(params: _FourierParams, conservative: bool, name: str) -> ScoreError:
    """The ``ScoreError`` of Fourier features; ``name`` may hold ``{kind}``."""
    kind = "conservative" if conservative else "non-conservative"
    return ScoreError(
        field_fn=_fourier_gradient if conservative else _fourier_field,
        params=params,
        potential_fn=_fourier_potential if conservative else None,
        event_shape=params.event_shape,
        name=name.format(kind=kind),
    )


def _smooth_directions(rng_key, num: int, shape: tuple[int, ...], smoothness: float):
    """``num`` unit-norm random images: white noise blurred by a Gaussian (circular)."""
    from bip import operators

    dtype = jnp.result_type(float)
    noise = jax.random.normal(rng_key, (num,) + shape, dtype)
    if smoothness > 0:
        noise = operators.gaussian_blur(shape, smoothness, boundary="circular")(noise)
    flat = noise.reshape(num, -1)
    return flat / jnp.linalg.norm(flat, axis=-1, keepdims=True)


def smooth_random_field(
    rng_key: Array,
    event_shape: tuple[int, ...],
    num_features: int = 64,
    lengthscale: float = 1.0,
    smoothness: float = 2.0,
    conservative: bool = True,
) -> ScoreError:
    """A seeded smooth random score error on images, of RMS norm about 1 per event.

    Random Fourier features along smooth directions: ``w_f = d_f / l`` with ``d_f`` a unit-norm
    random image (white noise blurred by a Gaussian of ``smoothness`` pixels, circular), so
    the field varies by O(1) when an image moves by ``l`` (pixel-intensity L2 units) along a
    smooth pattern and hardly at all along pixel noise.

    - conservative: ``g(x) = l sqrt(2/F) sum_f c_f cos(w_f . x + b_f)``, ``e = grad g =
      -sqrt(2/F) sum_f c_f sin(.) d_f`` (``c_f ~ N(0, 1)``);
    - non-conservative: ``e(x) = sqrt(2/F) sum_f cos(w_f . x + b_f) a_f`` with ``a_f`` unit
      smooth random images (independent of the ``d_f``).

    In both ``E|e(x)|^2 = 1`` (the whole event), so ``with_error(prior, err, size)`` is a score
    error of L2 norm about ``size``: compare it with ``bip.profile``'s ``abs_error``.

    Args:
        rng_key: PRNG key (the same key gives the same field).
        event_shape: the image shape ``(h, w)`` (any shape whose last two axes are an image).
        num_features: number of features ``F``.
        lengthscale: ``l``, in the units of ``x``.
        smoothness: blur width of the directions in pixels (0: white directions).
        conservative: gradient field with a potential (default) or not.

    Example:
        >>> err = bip.errors.smooth_random_field(jax.random.key(0), (32, 32))
        >>> float(jnp.linalg.norm(err.field(jnp.zeros((32, 32)))))   # about 1
    """
    shape = tuple(int(n) for n in event_shape)
    if len(shape) < 2:
        raise ValueError(f"smooth_random_field needs an image shape (h, w), got {shape!r}")
    num_features = _checks.integer("num_features", num_features)
    _checks.positive("lengthscale", lengthscale)
    _checks.nonnegative("smoothness", smoothness)
    k_w, k_b, k_a = jax.random.split(rng_key, 3)
    dtype = jnp.result_type(float)
    directions = _smooth_directions(k_w, num_features, shape, smoothness)
    phases = jax.random.uniform(k_b, (num_features,), dtype, 0.0, 2 * jnp.pi)
    if conservative:
        amplitudes = jax.random.normal(k_a, (num_features,), dtype) * math.sqrt(2.0 / num_features)
    else:
        amplitudes = _smooth_directions(k_a, num_features, shape, smoothness)
        amplitudes = amplitudes * math.sqrt(2.0 / num_features)
    params = _FourierParams(
        directions / lengthscale,
        phases,
        amplitudes,
        jnp.asarray(lengthscale, dtype),
        event_shape=shape,
    )
    name = f"smooth_random_field({{kind}}, l={lengthscale}, smoothness={smoothness})"
    return _fourier_error(params, conservative, name)
