"""Score-error profiles: how far a (learned) score is from a reference, sigma by sigma.

For each noise level ``sigma`` the error is measured on the noised data law
``x = Phi(u) + sigma z`` (``u ~ data law``, ``z ~ N(0, I)``, variance exploding):

    abs_error(sigma) = sqrt(E |s_hat(x, sigma) - s_ref(x, sigma)|^2)
    rel_error(sigma) = abs_error(sigma) / sqrt(E |s_ref(x, sigma)|^2)

The exponent ``beta`` of ``abs_error ~ sigma^beta`` is fitted by least squares on log-log.
The tempered (maximum-entropy) prior ``sigma^alpha s_hat`` tolerates an error
``o(sigma^beta)`` for ``max(-beta, 0) < alpha < 2`` (SCIENCE.md section 3); this RMS exponent
is the practical proxy for the sup-norm rate of the theorem.

The same draws ``(u, z)`` are used at every sigma (common random numbers), so the fitted
``beta`` is not blurred by sampling noise from one sigma to the next.

Example:
    >>> import bip, bip.profile
    >>> law = bip.manifolds.VonMises(bip.manifolds.Circle(), kappa=1.0)
    >>> exact = bip.priors.exact(law)
    >>> noisy = bip.priors.with_error(exact, bip.errors.rotational(), size=0.1, beta=-1.0)
    >>> prof = bip.profile.score_error_profile(
    ...     noisy, exact, law, jnp.geomspace(0.01, 0.3, 8), jax.random.key(0))
    >>> round(prof["beta"], 1)            # the injected exponent is recovered
    -1.0
    >>> prof["alpha_range"]                # (max(-beta, 0), 2), about (1.0, 2.0)
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bip import _checks
from bip.priors import ScorePrior

Array = jax.Array


@jax.jit
def _score(prior: ScorePrior, x: Array, sigma: Array) -> Array:
    # one compiled program per prior structure: two equal priors give bitwise equal scores
    return prior.score_fn(prior.params, x, sigma)


@jax.jit
def _mean_sq(diff: Array) -> Array:  # (N, *event) -> mean over N of the squared norm
    return jnp.mean(jnp.sum(diff**2, axis=tuple(range(1, diff.ndim))))


def fit_exponent(sigmas: Array, errors: Array) -> float:
    """Least-squares slope of ``log(errors)`` on ``log(sigmas)``.

    Zero errors carry no rate information and are left out; if fewer than two errors are
    positive the error is ``o(sigma^b)`` for every ``b`` and the slope is ``inf``.
    """
    sigmas = np.asarray(sigmas, dtype=float)
    errors = np.asarray(errors, dtype=float)
    keep = errors > 0
    if np.count_nonzero(keep) < 2:
        return math.inf
    slope, _ = np.polyfit(np.log(sigmas[keep]), np.log(errors[keep]), 1)
    return float(slope)


def admissible_alpha(beta: float) -> tuple[float, float] | None:
    """The tempering range ``(max(-beta, 0), 2)`` for an error ``~ sigma^beta``; None if empty."""
    low = max(-beta, 0.0)
    return (float(low), 2.0) if low < 2.0 else None


def score_error_profile(
    prior: ScorePrior,
    reference_prior: ScorePrior,
    data_law: Any,
    sigmas: Array,
    rng_key: Array,
    num_samples: int = 4096,
) -> dict[str, Any]:
    """Relative and absolute L2 score error of ``prior`` against ``reference_prior`` per sigma.

    Args:
        prior: the score to assess (any ``ScorePrior``: a network, an exact prior with an
            injected error ...).
        reference_prior: the reference score, usually ``bip.priors.exact(data_law)``.
        data_law: a law from ``bip.manifolds`` with ``sample(key, shape) -> (*shape, *event)``.
        sigmas: noise levels ``(S,)``, all > 0 (at least two for the fit).
        rng_key: PRNG key for the draws ``(u, z)``, shared by all sigmas.
        num_samples: number of points ``x ~ p_sigma`` per sigma.

    Returns:
        A dict with ``sigmas``, ``abs_error``, ``rel_error``, ``ref_norm`` (RMS of the
        reference score), all ``(S,)`` numpy arrays; ``beta`` (float; ``inf`` when the error
        is zero), ``alpha_range`` (``(max(-beta, 0), 2)`` or ``None`` if ``beta <= -2``) and
        ``num_samples``.

    Example:
        >>> prof = score_error_profile(net_prior, bip.priors.exact(law), law,
        ...                            jnp.geomspace(0.01, 1.0, 9), jax.random.key(0))
    """
    if not isinstance(prior, ScorePrior) or not isinstance(reference_prior, ScorePrior):
        raise TypeError("prior and reference_prior must be bip.priors.ScorePrior instances")
    if tuple(prior.event_shape) != tuple(reference_prior.event_shape):
        raise ValueError(
            f"prior has event shape {tuple(prior.event_shape)} but reference_prior has "
            f"{tuple(reference_prior.event_shape)}"
        )
    if not hasattr(data_law, "sample"):
        raise TypeError(f"data_law must have a sample(key, shape) method, got {data_law!r}")
    num_samples = _checks.integer("num_samples", num_samples)
    sigmas_np = np.atleast_1d(np.asarray(sigmas, dtype=float))
    if sigmas_np.ndim != 1:
        raise ValueError(f"sigmas must be a 1-D array, got shape {sigmas_np.shape}")
    _checks.positive("sigmas", sigmas_np)
    dtype = jnp.result_type(float)
    k_data, k_noise = jax.random.split(rng_key)
    x0 = jnp.asarray(data_law.sample(k_data, (num_samples,)), dtype)
    _checks.event_shape("data_law.sample(...)", x0, reference_prior.event_shape)
    z = jax.random.normal(k_noise, x0.shape, dtype)
    abs_sq, ref_sq = [], []
    for sigma in sigmas_np:
        sigma = jnp.asarray(sigma, dtype)
        x = x0 + sigma * z
        s_hat = _score(prior, x, sigma).astype(dtype)
        s_ref = _score(reference_prior, x, sigma).astype(dtype)
        abs_sq.append(float(_mean_sq(s_hat - s_ref)))
        ref_sq.append(float(_mean_sq(s_ref)))
    abs_error = np.sqrt(np.asarray(abs_sq))
    ref_norm = np.sqrt(np.asarray(ref_sq))
    rel_error = abs_error / ref_norm
    beta = fit_exponent(sigmas_np, abs_error)
    return {
        "sigmas": sigmas_np,
        "abs_error": abs_error,
        "rel_error": rel_error,
        "ref_norm": ref_norm,
        "beta": beta,
        "alpha_range": admissible_alpha(beta),
        "num_samples": num_samples,
    }
