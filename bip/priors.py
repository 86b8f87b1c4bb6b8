"""Score priors and the transforms that compose them.

A ``ScorePrior`` is an immutable pytree holding a score function ``s(x, sigma)`` (and, where
one exists, the log density of the smoothed law) together with its parameters. Transforms
wrap a prior into a new one, the optax way:

- ``exact(data)``: the exact score of a data law on a known manifold (SCIENCE.md sec. 6);
- ``tempered(prior, alpha)``: the maximum-entropy prior ``sigma^alpha * s`` (sec. 3);
- ``with_error(prior, error, size, beta)``: ``s + size * sigma^beta * e(x)`` (sec. 5).

A learned prior knows the noise levels it was trained on (``sigma_range``; the transforms
keep it) and ``check_sigma`` refuses others unless the caller opts in.

Parameters (``alpha``, ``size``, ``kappa`` ...) are pytree leaves and the functions are
module-level, so sweeping a parameter under ``jit``/``vmap`` never retraces.

Example:
    >>> import bip
    >>> circle = bip.manifolds.Circle()
    >>> data = bip.manifolds.VonMises(circle, kappa=4.0, loc=3.141592653589793)
    >>> prior = bip.priors.exact(data)           # prior.score(x, sigma): (..., 2) -> (..., 2)
    >>> maxent = bip.priors.tempered(prior, alpha=1.0)
    >>> maxent.score(jnp.array([0.0, 1.1]), 0.1).shape
    (2,)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from bip import _checks
from bip.scoreprior import ScorePrior

Array = jax.Array

PROCESSES = ("ve", "vp")


def check_sigma(
    prior: ScorePrior,
    sigma,
    *,
    allow_extrapolation: bool = False,
    name: str = "sigma",
) -> None:
    """Refuse noise levels outside the range a learned prior was trained on.

    Args:
        prior: any score prior; one with ``sigma_range = None`` (exact priors) accepts all.
        sigma: a noise level or an array of them (an annealing schedule). Concrete values
            are checked; traced ones (inside ``jit``) cannot be and pass, so call this from
            Python where sigma is known (``bip.posteriors.sample`` and friends do).
        allow_extrapolation: accept levels outside the range (the score there is the
            network's extrapolation, which nothing in training constrained).
        name: what to call ``sigma`` in the message (e.g. ``"sampler.sigma"``).

    Raises:
        ValueError: naming the prior, the range and the offending value(s).

    Example:
        >>> prior = bip.priors.load("phantom32-unet")          # trained on [0.01, 10]
        >>> bip.priors.check_sigma(prior, 0.05)                 # fine
        >>> bip.priors.check_sigma(prior, 1e-5)                 # ValueError
        >>> bip.priors.check_sigma(prior, 1e-5, allow_extrapolation=True)
    """
    if prior.sigma_range is None or allow_extrapolation:
        return
    try:
        values = np.atleast_1d(np.asarray(sigma, dtype=float))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return
    lo, hi = prior.sigma_range
    tol = 1e-9
    outside = values[(values < lo * (1 - tol)) | (values > hi * (1 + tol))]
    if outside.size:
        shown = ", ".join(f"{v:g}" for v in outside[:3]) + (" ..." if outside.size > 3 else "")
        raise ValueError(
            f"{name} = {shown} lies outside [{lo:g}, {hi:g}], the noise levels prior "
            f"{prior.name!r} was trained on: its score there is an untrained extrapolation "
            "(pick sigma inside the range; from Python, allow_extrapolation=True samples anyway)"
        )


# --------------------------------------------------------------------------- exact priors


def _gamma(process: str, sigma):
    if process == "ve":
        return jnp.ones_like(sigma)
    return jnp.sqrt(jnp.clip(1 - sigma**2, 0.0, 1.0))


@struct.dataclass
class _ExactParams:
    data: Any
    process: str = struct.field(pytree_node=False, default="ve")


def _exact_smoothed(params: _ExactParams, x, sigma):
    batch = x.shape[: x.ndim - len(params.data.event_shape)]
    sigma = jnp.broadcast_to(sigma, batch)
    return params.data.smoothed(x, sigma, _gamma(params.process, sigma))


def _exact_score(params: _ExactParams, x, sigma):
    return _exact_smoothed(params, x, sigma)[1]


def _exact_logdensity(params: _ExactParams, x, sigma):
    return _exact_smoothed(params, x, sigma)[0]


def exact(data, process: str = "ve") -> ScorePrior:
    """The exact score prior of a data law on a known manifold.

    Args:
        data: a law from ``bip.manifolds`` (``VonMises``, ``VonMisesFisher``, ``Uniform``).
        process: ``"ve"`` (variance exploding, ``x = Phi(u) + sigma z``) or ``"vp"``
            (variance preserving, ``x = sqrt(1 - sigma^2) Phi(u) + sigma z``, needs sigma < 1).

    Returns:
        A ``ScorePrior`` with both ``score`` and a normalised ``logdensity``.

    Example:
        >>> circle = bip.manifolds.Circle()
        >>> prior = bip.priors.exact(bip.manifolds.Uniform(circle))
        >>> prior.score(jnp.array([2.0, 0.0]), 1.0)   # pulls back toward the circle
    """
    if process not in PROCESSES:
        raise ValueError(f"process must be one of {PROCESSES}, got {process!r}")
    if not hasattr(data, "smoothed"):
        raise TypeError(f"exact() needs a data law from bip.manifolds, got {type(data).__name__}")
    return ScorePrior(
        score_fn=_exact_score,
        params=_ExactParams(data=data, process=process),
        event_shape=tuple(data.event_shape),
        logdensity_fn=_exact_logdensity,
        manifold=data.manifold,
        name=f"exact({type(data).__name__}, {process})",
    )


def load(path_or_name: str):
    """Load a shipped trained prior (``priors/<name>/``) or one at a path; see
    ``bip.networks.load_prior``. The weights' sha256 is checked.

    Example:
        >>> prior = bip.priors.load("circle-vonmises")
    """
    from bip import networks  # imported here: `import bip.priors` stays free of flax.nnx

    return networks.load_prior(path_or_name)


# --------------------------------------------------------------------------- transforms


def _expand(sigma, x, event_ndim: int):
    """Give ``sigma`` trailing singleton axes so it broadcasts against ``x``'s event axes."""
    sigma = jnp.asarray(sigma)
    batch_ndim = x.ndim - event_ndim
    sigma = jnp.broadcast_to(sigma, x.shape[:batch_ndim]) if sigma.ndim else sigma
    return sigma.reshape(sigma.shape + (1,) * event_ndim) if sigma.ndim else sigma


@struct.dataclass
class _TemperedParams:
    base: ScorePrior
    alpha: Array


def _tempered_score(params: _TemperedParams, x, sigma):
    k = len(params.base.event_shape)
    return _expand(sigma, x, k) ** params.alpha * params.base.score_fn(params.base.params, x, sigma)


def _tempered_logdensity(params: _TemperedParams, x, sigma):
    return sigma**params.alpha * params.base.logdensity_fn(params.base.params, x, sigma)


def tempered(prior: ScorePrior, alpha: float | Array) -> ScorePrior:
    """The maximum-entropy prior: the score ``sigma^alpha * s(x, sigma)``, ``0 <= alpha < 2``.

    Its Langevin stationary law is ``p_sigma^(sigma^alpha)``, which tends to the uniform law on
    the manifold as ``sigma -> 0`` and tolerates score errors of size ``o(sigma^-alpha)``
    (SCIENCE.md section 3). ``alpha = 0`` returns a prior equal to ``prior``.

    Example:
        >>> maxent = bip.priors.tempered(prior, alpha=1.0)
    """
    _checks.alpha(alpha)
    alpha = jnp.asarray(alpha, dtype=jnp.result_type(float))
    return ScorePrior(
        score_fn=_tempered_score,
        params=_TemperedParams(base=prior, alpha=alpha),
        event_shape=prior.event_shape,
        logdensity_fn=_tempered_logdensity if prior.has_logdensity else None,
        manifold=prior.manifold,
        name=f"tempered({prior.name})",
        sigma_range=prior.sigma_range,
    )


@struct.dataclass
class _ErrorParams:
    base: ScorePrior
    error: Any
    size: Array
    beta: Array


def _error_scale(params: _ErrorParams, sigma):
    return params.size * sigma**params.beta


def _with_error_score(params: _ErrorParams, x, sigma):
    k = len(params.base.event_shape)
    scale = _error_scale(params, _expand(sigma, x, k))
    return params.base.score_fn(params.base.params, x, sigma) + scale * params.error.field(x)


def _with_error_logdensity(params: _ErrorParams, x, sigma):
    base = params.base.logdensity_fn(params.base.params, x, sigma)
    return base + _error_scale(params, sigma) * params.error.potential(x)


def with_error(
    prior: ScorePrior, error, size: float | Array, beta: float | Array = 0.0
) -> ScorePrior:
    """The prior with an injected score error: ``s(x, sigma) + size * sigma^beta * e(x)``.

    Args:
        prior: any score prior.
        error: a field from ``bip.errors`` (conservative, rotational or random Fourier).
        size: error size ``eps >= 0`` (``size = 0`` gives the unchanged score).
        beta: exponent of the sigma scaling; ``beta = 0`` is a constant-size error.

    The result keeps a log density when both the prior and the error have one (a
    conservative error ``e = grad g`` adds ``size * sigma^beta * g``).

    Example:
        >>> err = bip.errors.angular_cosine(frequency=2)
        >>> corrupted = bip.priors.with_error(prior, err, size=0.5)
    """
    _checks.nonnegative("size", size)
    _checks.finite("beta", beta)
    error_shape = getattr(error, "event_shape", None)
    if error_shape is not None and tuple(error_shape) != tuple(prior.event_shape):
        raise ValueError(
            f"error acts on events of shape {tuple(error_shape)} but the prior's event shape "
            f"is {tuple(prior.event_shape)}"
        )
    dtype = jnp.result_type(float)
    conservative = prior.has_logdensity and getattr(error, "conservative", False)
    return ScorePrior(
        score_fn=_with_error_score,
        params=_ErrorParams(
            base=prior,
            error=error,
            size=jnp.asarray(size, dtype=dtype),
            beta=jnp.asarray(beta, dtype=dtype),
        ),
        event_shape=prior.event_shape,
        logdensity_fn=_with_error_logdensity if conservative else None,
        manifold=prior.manifold,
        name=f"with_error({prior.name}, {getattr(error, 'name', type(error).__name__)})",
        sigma_range=prior.sigma_range,
    )
