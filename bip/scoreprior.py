"""``ScorePrior``: the pytree every score prior is, exact or learned.

It lives apart from ``bip.priors`` (its transforms, exact priors and ``load``) so that the
network layer (``bip.networks``) can build one without importing the layer that loads
networks; ``bip.priors.ScorePrior`` is the same class.

Example:
    >>> import bip.scoreprior
    >>> prior = bip.scoreprior.ScorePrior(
    ...     score_fn=lambda params, x, sigma: -x / (1 + sigma[..., None] ** 2),
    ...     params=None, event_shape=(2,), name="N(0, I)")
    >>> prior.score(jnp.ones((3, 2)), 1.0)              # (3, 2), every entry -0.5
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from bip import _checks

Array = jax.Array


@struct.dataclass
class ScorePrior:
    """A score prior ``s(x, sigma) ~ grad_x log p_sigma(x)`` on events of shape ``event_shape``.

    Attributes:
        score_fn: ``score_fn(params, x, sigma) -> (..., *event_shape)``; ``sigma`` arrives as
            an array broadcastable to the batch shape ``x.shape[:-len(event_shape)]``.
        params: pytree of parameters (arrays, laws, other priors).
        event_shape: shape of one point, ``(d,)`` for points, ``(h, w)`` for images.
        logdensity_fn: ``logdensity_fn(params, x, sigma) -> (...)``, the log density of the
            law whose score this is (up to an additive constant), or ``None`` if the prior is
            score-only (learned nets, non-conservative errors).
        manifold: the data manifold when known (metrics use it), else ``None``.
        name: a short human-readable description.
        sigma_range: ``(sigma_min, sigma_max)``, the noise levels a learned score was trained
            on (outside it the score is an extrapolation: ``check_sigma`` refuses such
            levels unless asked not to); ``None`` (exact priors) accepts any sigma > 0.
    """

    score_fn: Callable = struct.field(pytree_node=False)
    params: Any
    event_shape: tuple[int, ...] = struct.field(pytree_node=False)
    logdensity_fn: Callable | None = struct.field(pytree_node=False, default=None)
    manifold: Any = None
    name: str = struct.field(pytree_node=False, default="prior")
    sigma_range: tuple[float, float] | None = struct.field(pytree_node=False, default=None)

    def _prepare(self, x, sigma):
        _checks.event_shape("x", x, self.event_shape)
        _checks.positive("sigma", sigma)
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        sigma = jnp.asarray(sigma, dtype=x.dtype)
        return x, sigma

    @property
    def has_logdensity(self) -> bool:
        return self.logdensity_fn is not None

    def score(self, x: Array, sigma: Array | float) -> Array:
        """Score at ``x`` ``(..., *event_shape)`` and noise level ``sigma > 0``; same shape as x."""
        x, sigma = self._prepare(x, sigma)
        return self.score_fn(self.params, x, sigma)

    def logdensity(self, x: Array, sigma: Array | float) -> Array:
        """Log density ``(...)`` of the smoothed law at ``x`` (up to a constant in x)."""
        if self.logdensity_fn is None:
            raise ValueError(
                f"prior {self.name!r} is score-only: it has no log density "
                "(use an unadjusted sampler such as bip.samplers.ula)"
            )
        x, sigma = self._prepare(x, sigma)
        return self.logdensity_fn(self.params, x, sigma)
