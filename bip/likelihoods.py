"""Likelihoods ``p(y | x)`` from a forward operator and a noise model.

The sampler needs the potential ``v(x) = -log p(y | x)`` and its gradient (autodiff).
``gaussian`` is the fast path; ``numpyro_noise`` takes any NumPyro distribution built from
the prediction ``A(x)`` (Poisson counts for CT, Student-t for outliers, ...).

Example:
    >>> A = bip.operators.coordinate_projection(2, [0])        # observe x_1
    >>> lik = bip.likelihoods.gaussian(A, y=jnp.array([-0.5]), noise_std=0.3)
    >>> lik.potential(jnp.array([0.0, 1.0]))                    # (0 + 0.5)^2 / (2 * 0.09)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

from bip import _checks

Array = jax.Array


def _check_observation(operator, y):
    if not all(hasattr(operator, a) for a in ("input_shape", "output_shape")):
        raise TypeError(
            "operator must be a bip.operators.Operator; wrap a plain JAX function with "
            "bip.operators.from_function(fn, input_shape)"
        )
    y = jnp.asarray(y)
    _checks.finite("y", y)
    if tuple(y.shape) != tuple(operator.output_shape):
        raise ValueError(
            f"y has shape {tuple(y.shape)} but the operator {getattr(operator, 'name', '')!r} "
            f"outputs shape {tuple(operator.output_shape)}"
        )
    if not jnp.issubdtype(y.dtype, jnp.floating):
        y = y.astype(jnp.result_type(float))
    return y


@struct.dataclass
class Likelihood:
    """``v(x) = -log p(y | x)`` for one event ``x`` of shape ``operator.input_shape``.

    Attributes:
        log_prob_fn: ``log_prob_fn(params, prediction, y) -> ()`` (static).
        operator: the forward operator (a pytree).
        y: the observation, shape ``operator.output_shape``.
        params: noise parameters (pytree leaves).
        lipschitz: an upper estimate of the Lipschitz constant of ``grad v`` (``||A||^2/s^2``
            for Gaussian noise and linear A), used by the step-size rule, or None.
    """

    log_prob_fn: Callable = struct.field(pytree_node=False)
    operator: object
    y: Array
    params: object
    lipschitz: float | None = struct.field(pytree_node=False, default=None)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.operator.input_shape)

    def log_likelihood(self, x: Array) -> Array:
        """``log p(y | x)`` for a batch ``(..., *input_shape) -> (...)``."""
        k = len(self.event_shape)
        batch = x.shape[: x.ndim - k]
        flat = x.reshape((-1,) + self.event_shape)
        values = jax.vmap(lambda xi: self.log_prob_fn(self.params, self.operator(xi), self.y))(flat)
        return values.reshape(batch)

    def potential(self, x: Array) -> Array:
        """``v(x) = -log p(y | x)``: ``(..., *input_shape) -> (...)``."""
        return -self.log_likelihood(x)

    def grad_potential(self, x: Array) -> Array:
        """``grad v(x)``, same shape as ``x``."""
        return jax.grad(lambda z: jnp.sum(self.potential(z)))(x)


def _gaussian_log_prob(noise_std, prediction, y):
    r = (prediction - y) / noise_std
    return -0.5 * jnp.sum(r**2)


def gaussian(
    operator, y: Array, noise_std: float | Array, lipschitz: float | None = None
) -> Likelihood:
    """Gaussian noise ``y = A(x) + s z``: ``v(x) = ||A(x) - y||^2 / (2 s^2)`` (up to a constant).

    Args:
        operator: a ``bip.operators.Operator`` (linear or not).
        y: observation of shape ``operator.output_shape``; must be finite.
        noise_std: ``s > 0``, a scalar or an array broadcastable to ``y``.
        lipschitz: Lipschitz constant of ``grad v``; default ``||A||^2 / min(s)^2`` from a power
            method for linear operators, None otherwise.
    """
    y = _check_observation(operator, y)
    _checks.positive("noise_std", noise_std)
    noise_std = jnp.broadcast_to(jnp.asarray(noise_std, y.dtype), y.shape)
    if lipschitz is None and getattr(operator, "linear", False):
        from bip.operators import operator_norm

        norm = float(operator_norm(jax.random.key(0), operator))
        lipschitz = 1.01 * norm**2 / float(jnp.min(noise_std)) ** 2
    return Likelihood(_gaussian_log_prob, operator, y, noise_std, lipschitz)


@struct.dataclass
class _NumPyroParams:
    make: Callable = struct.field(pytree_node=False)


def _numpyro_log_prob(params: _NumPyroParams, prediction, y):
    return jnp.sum(params.make(prediction).log_prob(y))


def numpyro_noise(
    operator, y: Array, noise_model: Callable, lipschitz: float | None = None
) -> Likelihood:
    """Any NumPyro noise model: ``y ~ noise_model(A(x))``, a ``numpyro.distributions`` object.

    Example (Poisson counts for CT, Student-t outliers):
        >>> import numpyro.distributions as dist
        >>> poisson = lambda m: dist.Poisson(1e3 * jnp.exp(-m))
        >>> lik = bip.likelihoods.numpyro_noise(A, counts, poisson)
        >>> lik = bip.likelihoods.numpyro_noise(A, y, lambda m: dist.StudentT(3.0, m, 0.1))
    """
    y = _check_observation(operator, y)
    if not callable(noise_model):
        raise TypeError("noise_model must map the prediction A(x) to a NumPyro distribution")
    return Likelihood(_numpyro_log_prob, operator, y, _NumPyroParams(noise_model), lipschitz)
