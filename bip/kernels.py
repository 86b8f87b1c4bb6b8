"""Langevin kernels for ONE chain, BlackJAX style, and the one step rule.

The pieces follow BlackJAX (``blackjax/mcmc/mala.py``): ``State``/``Info`` NamedTuples,
``init``, ``build_kernel`` and a constructor returning ``SamplingAlgorithm(init, step)``
with ``rng_key`` first. Kernels never jit themselves; ``bip.chains.run`` runs them over
many chains.

- ``ula(drift_fn, step_size)``: unadjusted Langevin ``x + h * drift(x) + sqrt(2 h) z``, on
  BlackJAX's ``sgld`` kernel fed the full (exact) drift. Works for score-only priors and for
  pytree positions (e.g. ``(x, log_s)``).
- ``mala(logdensity_fn, step_size)``: BlackJAX's MALA, where a log density exists.
- ``step_rule`` / ``default_step_size``: ``h = c * sigma^(2 - alpha)``, capped at
  ``c / L`` (SCIENCE.md section 3: the drift ``sigma^alpha s`` has stiffness
  ``~ sigma^(alpha - 2)``). Every sampler of bip takes its step from ``step_rule``.

Names across bip: ``step_size`` (BlackJAX's name) is always an absolute step ``h``; ``c`` is
always the step rule's factor (the ``c`` of ``posteriors.sample``, the sweeps and the specs'
``sampler.c``).

Example:
    >>> prior = bip.priors.exact(bip.manifolds.Uniform(bip.manifolds.Circle()))
    >>> algo = bip.kernels.ula(lambda x: prior.score(x, 0.1), 1e-3)
    >>> state, info = algo.step(jax.random.key(0), algo.init(jnp.array([1.0, 0.0])))
    >>> state.position.shape
    (2,)
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm
from jax.tree_util import Partial

from bip import _checks

Array = jax.Array

__all__ = [
    "LangevinState",
    "LangevinInfo",
    "init",
    "build_kernel",
    "ula",
    "mala",
    "step_rule",
    "default_step_size",
]


class LangevinState(NamedTuple):
    """State of an unadjusted Langevin chain: the current position (an array ``(*event)`` or a
    pytree of arrays)."""

    position: Any


class LangevinInfo(NamedTuple):
    """Per-step information: the squared norm of the drift at the old position."""

    drift_sq_norm: Array


def init(position: Any) -> LangevinState:
    """Initial state from a position (an array or a pytree of arrays)."""
    return LangevinState(jax.tree_util.tree_map(jnp.asarray, position))


def build_kernel() -> Callable:
    """The ULA transition ``x + h * drift(x) + sqrt(2 h T) z`` on BlackJAX's SGLD kernel.

    Returns ``kernel(rng_key, state, drift_fn, step_size, temperature=1.0)``; the position
    may be a pytree (BlackJAX ravels it for the noise, so ``(x, s)`` draws the same noise as
    ``concatenate([x.ravel(), s])``).
    """
    sgld_kernel = blackjax.sgld.build_kernel()

    def kernel(rng_key, state: LangevinState, drift_fn, step_size, temperature=1.0):
        drift = drift_fn(state.position)
        new_position = sgld_kernel(
            rng_key, state.position, lambda _x, _batch: drift, None, step_size, temperature
        )
        new_position = jax.tree_util.tree_map(  # BlackJAX noise is float64 under x64
            lambda new, old: new.astype(old.dtype), new_position, state.position
        )
        sq_norm = sum(_sum_of_squares(d) for d in jax.tree_util.tree_leaves(drift))
        return LangevinState(new_position), LangevinInfo(sq_norm)

    return kernel


def _sum_of_squares(x: Array) -> Array:
    """``sum(x**2)``; for 1 to 8 entries as a sum of products, which XLA fuses with the
    drift (a reduce over a short axis is a loop of its own: 12% of a circle chain-step on
    CPU, bench/bench_ula.py)."""
    if not 0 < x.size <= 8:
        return jnp.sum(x**2)
    flat = x.reshape(-1)
    return functools.reduce(operator.add, [flat[i] * flat[i] for i in range(flat.size)])


def ula(drift_fn: Callable[[Any], Any], step_size: float | Array) -> SamplingAlgorithm:
    """Unadjusted Langevin with drift ``drift_fn(x)`` (one chain, ``(*event) -> (*event)``, or
    a pytree position to a drift of the same structure).

    For a prior alone the drift is ``sigma^alpha s(x, sigma)``; for a posterior it is
    ``sigma^alpha s - grad v`` (see ``bip.posteriors``).

    The step is a ``jax.tree_util.Partial`` holding ``drift_fn`` and ``step_size``: ``run``
    traces their arrays (a pytree drift such as ``bip.posteriors.drift(...)``, the step
    size), so a new algorithm with other values reuses the compiled loop.

    Example:
        >>> algo = bip.kernels.ula(lambda x: -x, 0.1)
        >>> algo.step(jax.random.key(0), algo.init(jnp.ones(3)))[1].drift_sq_norm
        Array(3., dtype=float64)
    """
    _checks.positive("step_size", step_size)
    return SamplingAlgorithm(_ula_init, Partial(_ula_step, drift_fn, step_size))


def _ula_init(position, rng_key=None):
    del rng_key
    return init(position)


def _ula_step(drift_fn, step_size, rng_key, state):
    return build_kernel()(rng_key, state, drift_fn, step_size)


def mala(logdensity_fn: Callable[[Array], Array], step_size: float | Array) -> SamplingAlgorithm:
    """BlackJAX's Metropolis-adjusted Langevin for a log density of one chain ``(*event) -> ()``.

    The same algorithm as ``blackjax.mala(logdensity_fn, step_size)``, built as ``Partial``
    pytrees like ``ula`` so that ``run`` traces the step size and a pytree log density.

    Example:
        >>> algo = bip.kernels.mala(lambda x: -0.5 * jnp.sum(x**2), 0.1)
        >>> algo.step(jax.random.key(0), algo.init(jnp.ones(3)))[1].acceptance_rate.shape
        ()
    """
    _checks.positive("step_size", step_size)
    return SamplingAlgorithm(
        Partial(_mala_init, logdensity_fn), Partial(_mala_step, logdensity_fn, step_size)
    )


def _mala_init(logdensity_fn, position, rng_key=None):
    del rng_key
    return blackjax.mala.init(position, logdensity_fn)


def _mala_step(logdensity_fn, step_size, rng_key, state):
    return blackjax.mala.build_kernel()(rng_key, state, logdensity_fn, step_size)


def step_rule(sigma, alpha=0.0, c=0.1, lipschitz=None) -> Array:
    """``h = c * sigma^(2 - alpha)``, capped at ``c / lipschitz`` when given: the step rule,
    traceable (no checks; ``default_step_size`` checks its arguments first).

    Example:
        >>> float(bip.kernels.step_rule(0.1, 1.0, c=0.1, lipschitz=1000.0))
        0.0001
    """
    sigma = jnp.asarray(sigma, dtype=jnp.result_type(float))
    h = c * sigma ** (2.0 - jnp.asarray(alpha, sigma.dtype))
    return h if lipschitz is None else jnp.minimum(h, c / lipschitz)


def default_step_size(
    sigma: float | Array, alpha: float | Array = 0.0, c: float = 0.1, lipschitz: float | None = None
) -> Array:
    """The step rule ``h = c * sigma^(2 - alpha)``, capped at ``c / lipschitz`` if given.

    ``lipschitz`` is the Lipschitz constant of the rest of the drift (for a Gaussian
    likelihood ``||A||^2 / s^2``). ``c = 0.1`` is the paper's ``eta``.

    Example:
        >>> float(bip.samplers.default_step_size(0.1, alpha=0.0))
        0.0010000000000000002
    """
    _checks.positive("sigma", sigma)
    _checks.alpha(alpha)
    _checks.positive("c", c)
    if lipschitz is not None:
        _checks.positive("lipschitz", lipschitz)
    return step_rule(sigma, alpha, c, lipschitz)
