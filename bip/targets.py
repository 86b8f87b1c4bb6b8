"""Exact reference laws by quadrature, to draw every sampled histogram against.

For a conservative drift ``grad log pi`` in the plane, the Langevin stationary law is
``pi(x)``; its angular marginal ``p(theta) = int pi(r, theta) r dr`` is a 2-D integral done
here on a polar grid (Gauss-Legendre in r around the manifold radius, uniform in theta).
With ``pi = exp(sigma^alpha (log p_sigma + size * g) - v)`` this gives the exact finite-sigma
target of tempered Langevin with a gradient-type error and a likelihood (SCIENCE.md
sections 3-5); the sigma -> 0 limits are 1-D laws on the manifold.

Example:
    >>> prior = bip.priors.exact(bip.manifolds.VonMises(bip.manifolds.Circle(), 4.0, 3.14159))
    >>> law = bip.targets.stationary_angular_law(prior, sigma=0.1, alpha=1.0)
    >>> law.bin_probabilities(36).sum()
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from bip import _checks

Array = jax.Array


class AngularLaw(NamedTuple):
    """A density on angles ``(-pi, pi]`` tabulated at cell centres ``theta`` (uniform grid).

    ``density`` integrates to 1 against ``dtheta = 2 pi / len(theta)``.
    """

    theta: np.ndarray
    density: np.ndarray

    def bin_probabilities(self, num_bins: int = 36) -> np.ndarray:
        """Probability of each of ``num_bins`` equal bins on ``[-pi, pi)`` ``(num_bins,)``."""
        n = self.theta.size
        if n % num_bins:
            raise ValueError(f"the grid of {n} nodes does not divide into {num_bins} bins")
        cell = self.density * (2 * math.pi / n)
        return cell.reshape(num_bins, -1).sum(axis=1)

    def cdf(self) -> np.ndarray:
        """Cumulative probability at the right edge of each grid cell."""
        return np.cumsum(self.density) * (2 * math.pi / self.theta.size)

    def mean_resultant(self) -> complex:
        """``E[exp(i theta)]``."""
        return complex(
            np.sum(self.density * np.exp(1j * self.theta)) * 2 * math.pi / self.theta.size
        )


def _theta_grid(num_theta: int) -> np.ndarray:
    return -math.pi + (np.arange(num_theta) + 0.5) * (2 * math.pi / num_theta)


def from_log_density(
    log_density_theta: Callable[[Array], Array], num_theta: int = 1440
) -> AngularLaw:
    """Normalise a 1-D log density on the angle (e.g. a sigma -> 0 limit) into an ``AngularLaw``."""
    theta = _theta_grid(num_theta)
    logd = np.asarray(log_density_theta(jnp.asarray(theta)), dtype=float)
    logd = logd - (logsumexp(logd) + math.log(2 * math.pi / num_theta))
    return AngularLaw(theta, np.exp(logd))


def planar_angular_marginal(
    log_density_fn: Callable[[Array], Array],
    radial_range: tuple[float, float],
    num_theta: int = 1440,
    num_r: int = 400,
) -> AngularLaw:
    """Angular marginal of an unnormalised planar law ``exp(log_density_fn(x))``, ``x (..., 2)``.

    ``int exp(log pi(r cos t, r sin t)) r dr`` by Gauss-Legendre on ``radial_range``
    (``num_r`` nodes), tabulated on ``num_theta`` angles, computed in log space.
    """
    lo, hi = float(radial_range[0]), float(radial_range[1])
    if not 0 <= lo < hi:
        raise ValueError(f"radial_range must satisfy 0 <= lo < hi, got {radial_range}")
    theta = _theta_grid(num_theta)
    logd = np.asarray(angular_log_marginal(log_density_fn, lo, hi, num_theta, num_r), float)
    if not np.all(np.isfinite(logd)):
        raise ValueError("the log density is not finite on the quadrature grid")
    logd = logd - (logsumexp(logd) + math.log(2 * math.pi / num_theta))
    return AngularLaw(theta, np.exp(logd))


def angular_log_marginal(log_density_fn, lo, hi, num_theta: int = 1440, num_r: int = 400):
    """Traceable core of ``planar_angular_marginal``: ``log int exp(log pi(r, t)) r dr`` on
    the cell centres of ``num_theta`` angles (unnormalised); ``lo, hi`` may be traced."""
    nodes, weights = np.polynomial.legendre.leggauss(num_r)
    half, mid = 0.5 * (hi - lo), 0.5 * (hi + lo)
    r = half * jnp.asarray(nodes) + mid
    log_w = jnp.log(half * jnp.asarray(weights) * r)
    t = jnp.asarray(_theta_grid(num_theta))[:, None]
    rr = r[None, :]
    x = jnp.stack([rr * jnp.cos(t), rr * jnp.sin(t)], axis=-1)  # (num_theta, num_r, 2)
    return logsumexp(log_density_fn(x) + log_w[None, :], axis=-1)


def radial_window(
    sigma: float, alpha: float, radii: tuple[float, float] = (1.0, 1.0), width: float = 12.0
):
    """A radial range holding the law ``p_sigma^(sigma^alpha)`` near a curve whose distance
    to the origin lies in ``radii``; that law has radial width ``sigma^(1 - alpha/2)``
    (SCIENCE.md section 3)."""
    w = sigma ** (1 - alpha / 2)
    return (max(0.0, radii[0] - width * w), radii[1] + width * w)


def _radii(manifold) -> tuple[float, float]:
    """Smallest and largest distance from the origin to a planar curve (circle or ellipse)."""
    if manifold is None:
        return (1.0, 1.0)
    extent = [
        float(getattr(manifold, name)) for name in ("radius", "a", "b") if hasattr(manifold, name)
    ]
    return (min(extent), max(extent))


def stationary_angular_law(
    prior,
    sigma: float,
    alpha: float = 0.0,
    potential: Callable[[Array], Array] | None = None,
    num_theta: int = 1440,
    num_r: int = 400,
) -> AngularLaw:
    """Exact angular law of the Langevin diffusion ``dX = (sigma^alpha s - grad v) dt + sqrt 2 dW``.

    Needs a planar prior with a log density (exact priors, and those with a conservative
    error): the stationary density is ``exp(sigma^alpha log p(x) - v(x))``.

    Args:
        prior: a ``ScorePrior`` on ``(2,)`` events with ``logdensity`` (not yet tempered).
        sigma: noise level > 0.
        alpha: tempering exponent in [0, 2).
        potential: the likelihood potential ``v(x) = -log p(y | x)``, batched ``(..., 2) -> (...)``.
    """
    _checks.positive("sigma", sigma)
    _checks.alpha(alpha)
    if tuple(prior.event_shape) != (2,):
        raise ValueError(
            f"angular laws need a planar prior (event shape (2,)), got {prior.event_shape}"
        )
    if not prior.has_logdensity:
        raise ValueError(
            f"prior {prior.name!r} has no log density: the stationary law of a non-conservative "
            "drift has no closed form"
        )
    scale = float(sigma) ** float(alpha)

    def log_pi(x):
        out = scale * prior.logdensity(x, sigma)
        if potential is not None:
            out = out - potential(x)
        return out

    window = radial_window(float(sigma), float(alpha), _radii(prior.manifold))
    return planar_angular_marginal(log_pi, window, num_theta=num_theta, num_r=num_r)


def limit_angular_law(
    data,
    alpha: float = 0.0,
    potential: Callable[[Array], Array] | None = None,
    num_theta: int = 1440,
) -> AngularLaw:
    """The sigma -> 0 limit of the (posterior) law on a planar curve, in its chart parameter.

    Generic prior (``alpha = 0``): ``p(y | Phi(t)) p_data(t)``. Maximum-entropy prior
    (``alpha > 0``): ``p(y | Phi(t)) |Phi'(t)|``, the posterior under the uniform (volume)
    prior on the manifold (SCIENCE.md section 4).

    Args:
        data: a law on a Circle or Ellipse with ``chart_log_density`` (e.g. ``VonMises``).
        alpha: tempering exponent in [0, 2).
        potential: ``v(x) = -log p(y | x)`` batched over ``(..., 2)``, or None (prior alone).
    """
    _checks.alpha(alpha)
    manifold = data.manifold

    def log_density(t):
        out = (
            data.chart_log_density(t) if float(alpha) == 0 else jnp.log(manifold.volume_density(t))
        )
        if potential is not None:
            out = out - potential(manifold.chart(t))
        return out

    return from_log_density(log_density, num_theta)
