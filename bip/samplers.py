"""Langevin samplers on BlackJAX kernels, many chains at once, with divergence reports.

The pieces follow BlackJAX (``blackjax/mcmc/mala.py``): ``State``/``Info`` NamedTuples,
``init``, ``build_kernel`` and a constructor returning ``SamplingAlgorithm(init, step)``
with ``rng_key`` first. Kernels never jit themselves: ``run`` jits one ``lax.scan`` over
the whole chain and ``vmap``s the step over chains.

- ``ula(drift_fn, step_size)``: unadjusted Langevin ``x + h * drift(x) + sqrt(2 h) z``, on
  BlackJAX's ``sgld`` kernel fed the full (exact) drift. Works for score-only priors.
- ``mala(logdensity_fn, step_size)``: BlackJAX's MALA, where a log density exists.
- ``run(rng_key, algorithm, positions, num_steps, ...)``: the jitted multi-chain loop with
  thinning, burn-in, a progress bar and divergence detection; ``statistics=`` folds every
  kept draw into streaming statistics (``bip.streaming``; with ``keep_samples=False`` memory
  is O(chains), not O(chains x steps)) and ``mesh=`` shards the chains over devices
  (``bip.sharding.chain_mesh()``; the same seed gives the same draws on any device count).
- ``reverse_diffusion(...)``: VE reverse diffusion (Euler-Maruyama over a geometric sigma
  schedule) and predictor-corrector with a standard or tempered Langevin corrector.

Step-size rule (SCIENCE.md section 3): the drift ``sigma^alpha s`` has stiffness
``~ sigma^(alpha - 2)``, so ``default_step_size(sigma, alpha) = c * sigma^(2 - alpha)``.

Example:
    >>> prior = bip.priors.exact(bip.manifolds.Uniform(bip.manifolds.Circle()))
    >>> drift = lambda x: prior.score(x, 0.1)
    >>> algo = bip.samplers.ula(drift, bip.samplers.default_step_size(0.1, alpha=0.0))
    >>> x0 = jnp.zeros((100, 2)) + jnp.array([1.0, 0.0])
    >>> result = bip.samplers.run(jax.random.key(0), algo, x0, num_steps=1000, thin=100)
    >>> result.samples.shape      # (kept, chains, 2)
    (10, 100, 2)
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm
from jax.sharding import Mesh
from jax.tree_util import Partial

from bip import _checks, sharding, streaming

Array = jax.Array

__all__ = [
    "LangevinState",
    "LangevinInfo",
    "init",
    "build_kernel",
    "ula",
    "mala",
    "default_step_size",
    "run",
    "Run",
    "DivergenceReport",
    "DivergenceWarning",
    "DivergenceError",
    "geometric_sigmas",
    "reverse_diffusion",
]


# --------------------------------------------------------------------------- ULA kernel


class LangevinState(NamedTuple):
    """State of an unadjusted Langevin chain: the current position ``(*event)``."""

    position: Array


class LangevinInfo(NamedTuple):
    """Per-step information: the squared norm of the drift at the old position."""

    drift_sq_norm: Array


def init(position: Array) -> LangevinState:
    """Initial state from a position."""
    return LangevinState(jnp.asarray(position))


def build_kernel() -> Callable:
    """The ULA transition ``x + h * drift(x) + sqrt(2 h T) z`` on BlackJAX's SGLD kernel.

    Returns ``kernel(rng_key, state, drift_fn, step_size, temperature=1.0)``.
    """
    sgld_kernel = blackjax.sgld.build_kernel()

    def kernel(rng_key, state: LangevinState, drift_fn, step_size, temperature=1.0):
        drift = drift_fn(state.position)
        new_position = sgld_kernel(
            rng_key, state.position, lambda _x, _batch: drift, None, step_size, temperature
        )
        new_position = new_position.astype(state.position.dtype)  # BlackJAX noise is float64
        return LangevinState(new_position), LangevinInfo(jnp.sum(drift**2))

    return kernel


def ula(drift_fn: Callable[[Array], Array], step_size: float | Array) -> SamplingAlgorithm:
    """Unadjusted Langevin with drift ``drift_fn(x)`` (one chain, ``(*event) -> (*event)``).

    For a prior alone the drift is ``sigma^alpha s(x, sigma)``; for a posterior it is
    ``sigma^alpha s - grad v`` (see ``bip.posteriors``).

    The step is a ``jax.tree_util.Partial`` holding ``drift_fn`` and ``step_size``: ``run``
    traces their arrays (a pytree drift such as ``bip.posteriors.drift(...)``, the step
    size), so a new algorithm with other values reuses the compiled loop.
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


def default_step_size(
    sigma: float | Array, alpha: float | Array = 0.0, c: float = 0.1, lipschitz: float | None = None
) -> Array:
    """The step rule ``h = c * sigma^(2 - alpha)``, capped at ``c / lipschitz`` if given.

    ``lipschitz`` is the Lipschitz constant of the rest of the drift (for a Gaussian
    likelihood ``||A||^2 / s^2``). ``c = 0.1`` is the paper's ``eta``.
    """
    _checks.positive("sigma", sigma)
    _checks.alpha(alpha)
    _checks.positive("c", c)
    h = c * jnp.asarray(sigma, dtype=jnp.result_type(float)) ** (2.0 - jnp.asarray(alpha))
    if lipschitz is not None:
        _checks.positive("lipschitz", lipschitz)
        h = jnp.minimum(h, c / lipschitz)
    return h


# --------------------------------------------------------------------------- the run loop


class DivergenceReport(NamedTuple):
    """Chains that left the finite world: their indices and the step at which they did."""

    indices: np.ndarray
    steps: np.ndarray
    num_chains: int
    hint: str

    @property
    def any(self) -> bool:
        return bool(self.indices.size)

    def __str__(self) -> str:
        if not self.any:
            return f"no divergence in {self.num_chains} chains"
        pairs = zip(self.indices[:10], self.steps[:10], strict=True)
        shown = ", ".join(f"{i} (step {s})" for i, s in pairs)
        more = "" if self.indices.size <= 10 else f" and {self.indices.size - 10} more"
        return (
            f"{self.indices.size} of {self.num_chains} chains diverged: {shown}{more}. {self.hint}"
        )


class DivergenceWarning(UserWarning):
    """Some chains diverged; they are frozen at their last finite position and flagged."""


class DivergenceError(RuntimeError):
    """Raised by ``run(..., on_divergence="raise")`` when a chain diverges."""


class Run(NamedTuple):
    """Result of ``run``.

    Attributes:
        samples: kept draws ``(num_kept, num_chains, ...)`` of ``observe(position)``.
        final_state: the last state of every chain (batched over chains).
        diverged: ``(num_chains,)`` bool, chains that hit a non-finite or exploding value.
        diverged_at: ``(num_chains,)`` step index of the divergence (-1 if none).
        info_mean: per-chain mean over all steps of every info field (e.g. MALA acceptance).
        divergence: the human-readable report.
        statistics: the finalized ``bip.streaming`` statistics (same structure as passed to
            ``run(statistics=...)``), or None.

    ``samples`` is None when ``run(..., keep_samples=False)``.
    """

    samples: Any
    final_state: Any
    diverged: Array
    diverged_at: Array
    info_mean: Any
    divergence: DivergenceReport
    statistics: Any = None

    @property
    def healthy_samples(self):
        """``samples`` restricted to chains that never diverged."""
        if self.samples is None:
            raise ValueError("no samples were kept: run(..., keep_samples=False)")
        keep = ~sharding.to_host(self.diverged)
        return jax.tree_util.tree_map(lambda s: s[:, keep], self.samples)


_DEFAULT_HINT = (
    "Diverged chains are frozen at their last finite position and flagged in "
    "Run.diverged. Lower the step size: for the drift sigma^alpha * s use "
    "h = c * sigma^(2 - alpha) with c <= 0.1 (bip.samplers.default_step_size), and cap it "
    "by c / L for a likelihood with Lipschitz constant L."
)


def _report(diverged, diverged_at, on_divergence: str) -> DivergenceReport:
    diverged = sharding.to_host(diverged)
    bad = np.flatnonzero(diverged)
    report = DivergenceReport(bad, sharding.to_host(diverged_at)[bad], diverged.size, _DEFAULT_HINT)
    if report.any and on_divergence == "raise":
        raise DivergenceError(str(report))
    if report.any and on_divergence == "warn":
        warnings.warn(str(report), DivergenceWarning, stacklevel=3)
    return report


def _check_on_divergence(on_divergence: str) -> None:
    if on_divergence not in ("warn", "raise", "ignore"):
        raise ValueError(
            f"on_divergence must be 'warn', 'raise' or 'ignore', got {on_divergence!r}"
        )


def _tree_where(mask, new, old):
    def pick(n, o):
        m = mask.reshape(mask.shape + (1,) * (n.ndim - mask.ndim))
        return jnp.where(m, n, o)

    return jax.tree_util.tree_map(pick, new, old)


def _chain_ok(position, max_norm):
    flat = position.reshape(position.shape[0], -1)
    finite = jnp.all(jnp.isfinite(flat), axis=-1)
    small = jnp.max(jnp.abs(jnp.where(jnp.isfinite(flat), flat, 0.0)), axis=-1) < max_norm
    return finite & small


class _Progress:
    """A tqdm bar fed from inside the jitted loop by ``jax.debug.callback``."""

    def __init__(self, total: int, enabled: bool, desc: str):
        self.enabled = enabled
        self.total = total
        self.bar = None
        self.desc = desc

    def update(self, done):
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=self.total, desc=self.desc, unit="step", leave=False, mininterval=1.0
            )
        self.bar.n = int(done)
        self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


_ACTIVE_BAR: list = [None]


def _identity(x):
    return x


def _update_active_bar(done):
    if _ACTIVE_BAR[0] is not None:
        _ACTIVE_BAR[0].update(done)


def _is_traced(leaf) -> bool:
    """Leaves of an algorithm that ``run`` passes to its jitted loop as traced arguments."""
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic, float, complex))


def _split(algorithm):
    """``algorithm -> (structure, arrays)``: its array leaves and floats (traced) apart from
    the rest (functions, ints: the hashable ``structure``, with None in the traced slots)."""
    leaves, treedef = jax.tree_util.tree_flatten(algorithm)
    static = tuple(None if _is_traced(leaf) else leaf for leaf in leaves)
    arrays = [leaf if _is_traced(leaf) else None for leaf in leaves]
    return (treedef, static), arrays


def _merge(structure, arrays):
    """The inverse of ``_split``."""
    treedef, static = structure
    leaves = [a if s is None else s for s, a in zip(static, arrays, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _build_loop(
    structure,
    num_chains,
    thin,
    burn_in,
    num_kept,
    observe,
    max_norm,
    progress,
    report_every,
    stat,
    keep_samples,
    mesh,
):
    """The jitted multi-chain loop ``(arrays, rng_key, positions) -> (chains, samples,
    statistics)`` of the algorithm ``_merge(structure, arrays)``."""

    def shard(tree):
        return sharding.constrain(tree, mesh)

    def one_step(algorithm, rng_key, carry, step_index):
        state, diverged, diverged_at, info_sum = carry
        keys = shard(jax.random.split(jax.random.fold_in(rng_key, step_index), num_chains))
        new_state, info = jax.vmap(algorithm.step)(keys, state)
        ok = _chain_ok(new_state.position, max_norm) & ~diverged
        newly = ~ok & ~diverged
        state = _tree_where(ok, new_state, state)
        diverged_at = jnp.where(newly, step_index, diverged_at)
        info_sum = jax.tree_util.tree_map(
            lambda s, i: s + jnp.where(ok, i, 0.0).astype(s.dtype), info_sum, info
        )
        if progress:
            jax.lax.cond(
                (step_index + 1) % report_every == 0,
                lambda: jax.debug.callback(_update_active_bar, step_index + 1),
                lambda: None,
            )
        return shard((state, diverged | newly, diverged_at, info_sum)), None

    def block(algorithm, rng_key, carry, block_index):
        chains, stat_state = carry
        start = burn_in + block_index * thin
        step = functools.partial(one_step, algorithm, rng_key)
        chains, _ = jax.lax.scan(step, chains, start + jnp.arange(thin))
        draws = shard(jax.vmap(observe)(chains[0].position))
        if stat is not None:
            stat_state = stat.update(stat_state, draws, ~chains[1])
        return (chains, stat_state), (draws if keep_samples else None)

    @jax.jit
    def loop(arrays, rng_key, positions):
        algorithm = _merge(structure, arrays)
        state = shard(jax.vmap(algorithm.init)(shard(positions)))
        _, info_shape = jax.eval_shape(
            jax.vmap(algorithm.step), jax.random.split(rng_key, num_chains), state
        )
        info_sum = jax.tree_util.tree_map(
            lambda s: jnp.zeros(s.shape, jnp.result_type(s.dtype, float)), info_shape
        )
        chains = (state, jnp.zeros(num_chains, bool), jnp.full(num_chains, -1), info_sum)
        chains = shard(chains)
        if burn_in:
            chains, _ = jax.lax.scan(
                functools.partial(one_step, algorithm, rng_key), chains, jnp.arange(burn_in)
            )
        stat_state = None
        if stat is not None:
            stat_state = stat.init(jax.vmap(observe)(chains[0].position))
        (chains, stat_state), samples = jax.lax.scan(
            functools.partial(block, algorithm, rng_key), (chains, stat_state), jnp.arange(num_kept)
        )
        results = None if stat is None else stat.finalize(stat_state)
        return chains, samples, results

    return loop


# Compiled loops are reused across calls with the same algorithm structure and settings, so a
# second ``run`` costs no compilation: the key, the positions and the algorithm's arrays and
# floats (a pytree drift's parameters, the step size) are traced arguments of the loop.
_cached_loop = functools.lru_cache(maxsize=32)(_build_loop)


def run(
    rng_key: Array,
    algorithm: SamplingAlgorithm,
    initial_positions: Array,
    num_steps: int,
    *,
    thin: int = 1,
    burn_in: int = 0,
    observe: Callable[[Array], Any] | None = None,
    max_norm: float = 1e8,
    on_divergence: str = "warn",
    progress: bool | None = None,
    statistics: streaming.StatisticsLike | None = None,
    keep_samples: bool = True,
    mesh: Mesh | None = None,
) -> Run:
    """Run ``num_chains`` chains of ``algorithm`` in one jitted ``lax.scan``, vmapped over chains.

    Args:
        rng_key: PRNG key; the same key gives the same result (on any number of devices).
        algorithm: a BlackJAX ``SamplingAlgorithm`` for ONE chain (``ula``, ``mala``, or any
            BlackJAX kernel whose state has a ``position``).
        initial_positions: ``(num_chains, *event)``.
        num_steps: steps after burn-in; every ``thin``-th state is kept
            (``num_steps // thin`` draws).
        burn_in: steps run first and discarded.
        observe: maps one chain's position to what is stored (default: the position), e.g.
            an angle, to keep memory small.
        max_norm: a chain whose position has an entry of absolute value above this, or a
            non-finite entry, is declared diverged and frozen at its last good position.
        on_divergence: ``"warn"`` (a ``DivergenceWarning`` naming the chains), ``"raise"``
            (``DivergenceError``) or ``"ignore"``; the report is in the result either way.
        progress: show a progress bar (default: when ``num_chains * steps > 10^8``).
        statistics: ``bip.streaming`` statistics (one, a list/tuple, or a dict of them)
            updated with every kept draw ``observe(position)``; diverged chains stop
            contributing. Finalized into ``Run.statistics`` (same structure).
        keep_samples: store every kept draw in ``Run.samples`` (memory
            ``num_steps // thin x num_chains``); False keeps only the statistics, the final
            state and the diagnostics, so memory does not grow with the number of steps.
        mesh: a ``jax.sharding.Mesh`` (e.g. ``bip.sharding.chain_mesh()``) to split the chains
            over its devices; ``num_chains`` must be a multiple of ``mesh.size``. The chain
            arrays of the result stay sharded. Keys are per chain, so the draws do not depend
            on the number of devices.

    Returns:
        A ``Run`` with ``samples`` of shape ``(num_steps // thin, num_chains, ...)``.

    The compiled loop is reused by every call with the same algorithm structure, shapes and
    settings: the arrays and floats inside the algorithm (those of a pytree drift such as
    ``bip.posteriors.drift(...)``, the step size of ``ula``/``mala``) are traced arguments,
    the rest of it (functions, ints; a closure as a whole) is keyed by identity or value.
    """
    num_steps = _checks.integer("num_steps", num_steps, minimum=1)
    thin = _checks.integer("thin", thin, minimum=1)
    burn_in = _checks.integer("burn_in", burn_in, minimum=0)
    _check_on_divergence(on_divergence)
    if num_steps < thin:
        raise ValueError(f"num_steps ({num_steps}) must be at least thin ({thin})")
    positions = jnp.asarray(initial_positions)
    if positions.ndim < 1:
        raise ValueError("initial_positions must have a leading chain axis")
    _checks.finite("initial_positions", positions)
    num_chains = positions.shape[0]
    sharding.check_divisible(num_chains, mesh)
    stat = None if statistics is None else streaming.combine(statistics)
    num_kept = num_steps // thin
    total = burn_in + num_kept * thin
    if progress is None:
        progress = num_chains * total > 10**8
    bar = _Progress(total, bool(progress), "sampling")
    observe = observe if observe is not None else _identity
    structure, arrays = _split(algorithm)
    settings = (
        structure,
        num_chains,
        thin,
        burn_in,
        num_kept,
        observe,
        float(max_norm),
        bool(progress),
        max(1, total // 100),
        stat,
        bool(keep_samples),
        mesh,
    )
    try:
        loop = _cached_loop(*settings)
    except TypeError:  # an unhashable setting: build (and compile) this loop once
        loop = _build_loop(*settings)
    _ACTIVE_BAR[0] = bar
    try:
        (state, diverged, diverged_at, info_sum), samples, results = loop(
            arrays, rng_key, sharding.put(positions, mesh)
        )
        jax.block_until_ready((state, samples, results))
    finally:
        _ACTIVE_BAR[0] = None
        bar.close()
    steps_ok = jnp.maximum(jnp.where(diverged, diverged_at, total), 1)
    info_mean = jax.tree_util.tree_map(
        lambda s: s / steps_ok.reshape(steps_ok.shape + (1,) * (s.ndim - 1)), info_sum
    )
    report = _report(diverged, diverged_at, on_divergence)
    return Run(samples, state, diverged, diverged_at, info_mean, report, results)


# --------------------------------------------------------------------------- diffusion


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> Array:
    """``num_levels`` noise levels from ``sigma_max`` down to ``sigma_min``, geometrically."""
    _checks.positive("sigma_max", sigma_max)
    _checks.positive("sigma_min", sigma_min)
    num_levels = _checks.integer("num_levels", num_levels, minimum=2)
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min ({sigma_min}) must be below sigma_max ({sigma_max})")
    return jnp.exp(jnp.linspace(math.log(sigma_max), math.log(sigma_min), num_levels))


class DiffusionResult(NamedTuple):
    """Final positions ``(num_chains, *event)`` of reverse diffusion and its divergence report."""

    positions: Array
    diverged: Array
    divergence: DivergenceReport


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

    Returns:
        ``DiffusionResult`` with positions at the last level ``sigmas[-1]``.
    """
    num_chains = _checks.integer("num_chains", num_chains)
    sharding.check_divisible(num_chains, mesh)
    corrector_steps = _checks.integer("corrector_steps", corrector_steps, minimum=0)
    _check_on_divergence(on_divergence)
    _checks.alpha(corrector_alpha)
    sigmas = jnp.asarray(sigmas, dtype=jnp.result_type(float))
    _checks.positive("sigmas", sigmas)
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must be a 1-D array of at least 2 levels, got {sigmas.shape}")
    if _checks.is_concrete(sigmas) and not bool(jnp.all(jnp.diff(sigmas) < 0)):
        raise ValueError("sigmas must be strictly decreasing")
    event = tuple(prior.event_shape)
    kernel = build_kernel()
    init_key, level_key = jax.random.split(rng_key)

    def shard(tree):
        return sharding.constrain(tree, mesh)

    def corrector(key, x, sigma):
        h = corrector_c * sigma ** (2.0 - corrector_alpha)

        def drift(y):
            return sigma**corrector_alpha * prior.score(y, sigma)

        def body(i, carry):
            state, ok = carry
            keys = shard(jax.random.split(jax.random.fold_in(key, i), num_chains))
            new, _ = jax.vmap(lambda k, s: kernel(k, s, drift, h))(keys, state)
            good = _chain_ok(new.position, max_norm) & ok
            return shard((_tree_where(good, new, state), good))

        return body, LangevinState(x)

    def level(carry, inputs):
        x, ok, diverged_at = carry
        ok_before = ok
        index, sigma, sigma_next = inputs
        k_corr, k_pred = jax.random.split(jax.random.fold_in(level_key, index))
        if corrector_steps:
            body, state = corrector(k_corr, x, sigma)
            state, ok = jax.lax.fori_loop(0, corrector_steps, body, (state, ok))
            x = state.position
        dt = sigma**2 - sigma_next**2
        noise = shard(jax.random.normal(k_pred, x.shape, x.dtype))
        new = x + dt * prior.score(x, sigma) + jnp.sqrt(dt) * noise
        good = _chain_ok(new, max_norm) & ok
        diverged_at = jnp.where(ok_before & ~good, index, diverged_at)
        return shard((_tree_where(good, new, x), good, diverged_at)), None

    @jax.jit
    def loop(sigmas):
        x0 = sigmas[0] * jax.random.normal(init_key, (num_chains,) + event, sigmas.dtype)
        carry = shard((x0, jnp.ones(num_chains, bool), jnp.full(num_chains, -1)))
        levels = (jnp.arange(sigmas.shape[0] - 1), sigmas[:-1], sigmas[1:])
        carry, _ = jax.lax.scan(level, carry, levels)
        return carry

    x, ok, diverged_at = loop(sigmas)
    return DiffusionResult(x, ~ok, _report(~ok, diverged_at, on_divergence))
