"""VE reverse diffusion and predictor-corrector, as a schedule of the one chain loop.

Both steps are Langevin steps ``x + h * w * s(x, sigma) + sqrt(2 h) z`` of the score at the
current level: the corrector with ``w = sigma^alpha``, ``h = step_rule(sigma, alpha, c)``
(``bip.kernels``); the Euler-Maruyama predictor with ``w = 2``, ``h = (sigma_i^2 -
sigma_(i+1)^2) / 2``. So reverse diffusion is ``bip.chains.run`` of a ULA schedule over
``(levels - 1) * (corrector_steps + 1)`` steps: keys, divergence freezing, sharding and
Ctrl-C are the loop's.

Example:
    >>> prior = bip.priors.exact(bip.manifolds.VonMises(bip.manifolds.Circle(), 4.0, jnp.pi))
    >>> sigmas = bip.diffusion.geometric_sigmas(2.0, 0.01, 200)
    >>> out = bip.diffusion.reverse_diffusion(jax.random.key(0), prior, 1000, sigmas)
    >>> out.positions.shape
    (1000, 2)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.tree_util import Partial

from bip import _checks, chains, hostloop, kernels, sharding

Array = jax.Array

__all__ = ["geometric_sigmas", "DiffusionResult", "reverse_diffusion"]


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> Array:
    """``num_levels`` noise levels from ``sigma_max`` down to ``sigma_min``, geometrically.

    Example:
        >>> bip.samplers.geometric_sigmas(1.0, 0.01, 3)
        Array([1.  , 0.1 , 0.01], dtype=float64)
    """
    _checks.positive("sigma_max", sigma_max)
    _checks.positive("sigma_min", sigma_min)
    num_levels = _checks.integer("num_levels", num_levels, minimum=2)
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min ({sigma_min}) must be below sigma_max ({sigma_max})")
    return jnp.exp(jnp.linspace(math.log(sigma_max), math.log(sigma_min), num_levels))


class DiffusionResult(NamedTuple):
    """Final positions ``(num_chains, *event)`` of reverse diffusion and its divergence report
    (``divergence.steps``: steps of the schedule, ``corrector_steps + 1`` per level)."""

    positions: Array
    diverged: Array
    divergence: chains.DivergenceReport


def _weighted_score(prior, sigma, weight, x):
    return weight * prior.score(x, sigma)


def _level_step(prior, sigmas, alpha, c, corrector_steps, step_index):
    """The ULA algorithm of global step ``step_index``: corrector step ``j < corrector_steps``
    or the predictor (``j = corrector_steps``) of level ``step_index // (corrector_steps +
    1)``."""
    level, j = jnp.divmod(step_index, corrector_steps + 1)
    sigma, sigma_next = sigmas[level], sigmas[level + 1]
    correct = j < corrector_steps
    weight = jnp.where(correct, sigma**alpha, 2.0)
    h = jnp.where(correct, kernels.step_rule(sigma, alpha, c), (sigma**2 - sigma_next**2) / 2)
    return kernels.ula(Partial(_weighted_score, prior, sigma, weight), h)


def reverse_diffusion(
    rng_key: Array,
    prior,
    num_chains: int,
    sigmas: Array,
    *,
    corrector_steps: int = 0,
    corrector_alpha: float = 0.0,
    corrector_c: float = 0.1,
    max_norm: float = 1e8,
    on_divergence: str = "warn",
    mesh: Mesh | None = None,
    progress: bool = False,
    key_impl: str | None = None,
) -> DiffusionResult:
    """VE reverse diffusion, optionally with a Langevin corrector (predictor-corrector).

    Starts from ``N(0, sigma_0^2 I)`` and for each level ``i`` runs ``corrector_steps``
    Langevin steps of the drift ``sigma_i^alpha s(x, sigma_i)`` with step
    ``corrector_c * sigma_i^(2 - alpha)`` (``alpha = 0``: the standard corrector of
    score_sde; ``alpha > 0``: the tempered corrector), then the Euler-Maruyama predictor
    ``x <- x + (sigma_i^2 - sigma_(i+1)^2) s(x, sigma_i) + sqrt(sigma_i^2 - sigma_(i+1)^2) z``.

    Args:
        prior: a ``ScorePrior`` (any score: exact, learned, corrupted).
        num_chains: number of independent samples.
        sigmas: decreasing noise levels ``(L,)``, e.g. ``geometric_sigmas(2.0, 0.01, 1000)``.
        mesh: a ``jax.sharding.Mesh`` to split the chains over its devices (``num_chains``
            a multiple of ``mesh.size``); the draws do not depend on the number of devices.
        progress: a progress bar over steps and a line on stderr while compiling.
        key_impl: the PRNG (``bip.chains.run``'s ``key_impl``).

    Returns:
        ``DiffusionResult`` with positions at the last level ``sigmas[-1]``; diverged chains
        are frozen and reported by index.

    The steps run through ``bip.chains.run``: Ctrl-C raises ``Interrupted`` (``partial``
    None: positions between levels are no samples) within a few seconds.

    Example:
        >>> out = bip.samplers.reverse_diffusion(key, prior, 500, sigmas, corrector_steps=2)
    """
    num_chains = _checks.integer("num_chains", num_chains)
    sharding.check_divisible(num_chains, mesh)
    corrector_steps = _checks.integer("corrector_steps", corrector_steps, minimum=0)
    chains.check_on_divergence(on_divergence)
    _checks.alpha(corrector_alpha)
    _checks.positive("corrector_c", corrector_c)
    sigmas = jnp.asarray(sigmas, dtype=jnp.result_type(float))
    _checks.positive("sigmas", sigmas)
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must be a 1-D array of at least 2 levels, got {sigmas.shape}")
    if _checks.is_concrete(sigmas) and not bool(jnp.all(jnp.diff(sigmas) < 0)):
        raise ValueError("sigmas must be strictly decreasing")
    init_key, run_key = jax.random.split(rng_key)
    shape = (num_chains,) + tuple(prior.event_shape)
    x0 = sigmas[0] * jax.random.normal(init_key, shape, sigmas.dtype)
    schedule = Partial(
        _level_step, prior, sigmas, float(corrector_alpha), float(corrector_c), corrector_steps
    )
    num_levels = sigmas.shape[0] - 1
    total = num_levels * (corrector_steps + 1)
    try:
        out = chains.run(
            run_key,
            schedule,
            x0,
            total,
            thin=total,
            keep_samples=False,
            max_norm=max_norm,
            on_divergence=on_divergence,
            progress=progress,
            mesh=mesh,
            key_impl=key_impl,
        )
    except hostloop.Interrupted as stop:
        levels = stop.partial.steps_done // (corrector_steps + 1)
        raise hostloop.Interrupted(
            f"reverse diffusion interrupted after {levels} of {num_levels} levels"
        ) from None
    return DiffusionResult(out.final_state.position, out.diverged, out.divergence)
