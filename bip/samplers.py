"""Langevin samplers on BlackJAX kernels, many chains at once, with divergence reports.

The pieces follow BlackJAX (``blackjax/mcmc/mala.py``): ``State``/``Info`` NamedTuples,
``init``, ``build_kernel`` and a constructor returning ``SamplingAlgorithm(init, step)``
with ``rng_key`` first. Kernels never jit themselves: ``run`` jits one program that advances
all chains (the step ``vmap``ped over chains) by a traced number of steps, and calls it from a
host loop over chunks of about a second.

- ``ula(drift_fn, step_size)``: unadjusted Langevin ``x + h * drift(x) + sqrt(2 h) z``, on
  BlackJAX's ``sgld`` kernel fed the full (exact) drift. Works for score-only priors.
- ``mala(logdensity_fn, step_size)``: BlackJAX's MALA, where a log density exists.
- ``run(rng_key, algorithm, positions, num_steps, ...)``: the chunked multi-chain loop with
  thinning, burn-in, a progress bar and divergence detection; ``statistics=`` folds every
  kept draw into streaming statistics (``bip.streaming``; with ``keep_samples=False`` memory
  is O(chains), not O(chains x steps)) and ``mesh=`` shards the chains over devices
  (``bip.sharding.chain_mesh()``; the same seed gives the same draws on any device count,
  and for any chunk size). Kept draws are copied to host memory after each chunk.
- Ctrl-C stops ``run`` (and annealing, reverse diffusion) between chunks, within a few
  seconds: ``Interrupted`` (a ``KeyboardInterrupt``) carries the partial ``Run``
  (``complete=False``, ``steps_done``) in ``.partial``; a second Ctrl-C aborts at once.
- ``estimate_memory`` / ``check_memory``: the bytes a run keeps, and a ``MemoryBudgetError``
  (a ``ValueError``) naming the estimate and the fixes when they exceed the available
  memory; ``run`` checks before compiling.
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

import collections
import functools
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
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
    "Interrupted",
    "MemoryBudgetError",
    "estimate_memory",
    "check_memory",
    "available_memory",
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
        complete: False for the partial result of an interrupted run (``Interrupted.partial``).
        steps_done: steps run after burn-in (``num_steps`` when complete; None when unknown).

    ``samples`` is a host NumPy array (a pytree of them for a pytree ``observe``), None when
    ``run(..., keep_samples=False)``.
    """

    samples: Any
    final_state: Any
    diverged: Array
    diverged_at: Array
    info_mean: Any
    divergence: DivergenceReport
    statistics: Any = None
    complete: bool = True
    steps_done: int | None = None

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


# --------------------------------------------------------------------------- interruption


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a chunked loop between two chunks.

    A ``KeyboardInterrupt``, so a plain script still stops; ``partial`` holds what the
    interrupted function would have returned, built from the work done so far (for ``run``
    and ``bip.posteriors.sample``: a ``Run`` with ``complete=False``, ``steps_done`` and the
    draws kept so far), or None when nothing usable exists yet (annealing, reverse diffusion).

    Example:
        >>> try:
        ...     result = bip.samplers.run(key, algo, x0, 10**7, thin=100)
        ... except bip.samplers.Interrupted as stop:
        ...     result = stop.partial        # result.complete is False
    """

    def __init__(self, message: str, partial: Any = None):
        super().__init__(message)
        self.partial = partial


class _SigintFlag:
    """While inside (main thread only), the first SIGINT sets ``raised`` and restores the
    previous handler, so that a second Ctrl-C aborts as it normally would. A process that
    ignores SIGINT keeps ignoring it."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous not in (signal.SIG_IGN, None):
                self._previous = previous
                signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.raised = True
        signal.signal(signal.SIGINT, self._previous)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class _Pacer:
    """Chunk lengths (in units: steps or levels) aimed at ``target`` seconds of compute.

    Starts at one unit (the first chunk also compiles), grows 8-fold while chunks are too
    short to time, then follows the measured rate (at most 8-fold growth per chunk). A fixed
    ``size`` turns the timing off."""

    target = 1.0

    def __init__(self, size: int | None = None):
        self.fixed = size is not None
        self.size = size if size is not None else 1
        self.measured = self.fixed

    def record(self, units: int, seconds: float) -> None:
        if self.fixed:
            return
        if seconds < 0.05 * self.target:
            self.size = max(self.size, 8 * units)
            return
        self.size = max(1, min(8 * units, int(units * self.target / seconds)))
        self.measured = True


class _Bar:
    """A tqdm bar updated from the host between chunks (created on the first update)."""

    def __init__(self, total: int, enabled: bool, desc: str, unit: str = "step"):
        self.total, self.enabled, self.desc, self.unit, self.bar = total, enabled, desc, unit, None

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, leave=False)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


_SEEN_PROGRAMS: set = set()


def _note_compile(program, args, enabled: bool, what: str) -> None:
    """One line on stderr before ``program`` first runs on arguments of these shapes."""
    leaves = jax.tree_util.tree_leaves(args)
    signature = (
        id(program),
        tuple((np.shape(a), str(getattr(a, "dtype", type(a)))) for a in leaves),
    )
    fresh = getattr(program, "_cache_size", lambda: 1)() == 0  # a new closure compiles
    if enabled and (fresh or signature not in _SEEN_PROGRAMS):
        print(f"compiling the {what} (first call; cached afterwards)...", file=sys.stderr)
    _SEEN_PROGRAMS.add(signature)


def _drive(advance, carry, total: int, plan, *, collect=None, chunk_size=None, bar=None):
    """The host loop over jitted chunks: ``carry, out = advance(carry, *args)`` where
    ``units, args = plan(done, wanted)`` covers units ``[done, done + units)`` of ``total``.

    Chunks are dispatched one ahead of the one being collected (``collect(args, out)`` runs
    in order, after its chunk finished), so the device never waits for the host. Between
    chunks a Ctrl-C stops the loop (the chunks in flight finish first). Returns ``(carry,
    units_done, interrupted)``."""
    pacer = _Pacer(chunk_size)
    pending: collections.deque = collections.deque()
    done = dispatched = 0
    last = None
    with _SigintFlag() as flag:
        while True:
            size, measured, stop = _agree(pacer.size, pacer.measured, flag.raised)
            depth = 2 if measured else 1
            while dispatched < total and len(pending) < depth and not stop:
                units, args = plan(dispatched, size)
                started = time.perf_counter()
                carry, out = advance(carry, *args)
                pending.append((units, args, carry, out, started))
                dispatched += units
            if not pending:
                break
            units, args, chunk_carry, out, started = pending.popleft()
            jax.block_until_ready(chunk_carry)
            if collect is not None:
                collect(args, out)
            now = time.perf_counter()
            if last is not None:  # the first chunk's time is mostly compilation
                pacer.record(units, now - max(started, last))
            last = now
            done += units
            if bar is not None:
                bar.update(done)
        return carry, done, stop


def _agree(size: int, measured: bool, raised: bool) -> tuple[int, bool, bool]:
    """The chunk plan every process follows: in a multi-process run (``jax.distributed``)
    all processes must run the same chunks, so they take the smallest chunk size, pipeline
    only when all have timed a chunk, and stop when any was interrupted."""
    if jax.process_count() == 1:
        return size, measured, raised
    from jax.experimental import multihost_utils

    local = np.array([size, int(measured), int(raised)], np.int64)
    every = np.asarray(multihost_utils.process_allgather(local)).reshape(-1, 3)
    return int(every[:, 0].min()), bool(every[:, 1].all()), bool(every[:, 2].any())


def _drive_range(
    advance, carry, total: int, *, progress: bool, desc: str, what: str, unit: str = "step"
):
    """``_drive`` over ``total`` units where ``carry = advance(carry, first, count)`` runs
    units ``[first, first + count)``: ``(carry, units_done, interrupted)``. ``what`` names
    the program in the line shown before it compiles (with ``progress``)."""

    def plan(done, wanted):
        count = min(wanted, total - done)
        return count, (done, count)

    def step(carry, first, count):
        return advance(carry, first, count), None

    _note_compile(advance, (carry,), progress, what)
    bar = _Bar(total, progress, desc, unit)
    try:
        return _drive(step, carry, total, plan, bar=bar)
    finally:
        bar.close()


# --------------------------------------------------------------------------- memory guard


class MemoryBudgetError(ValueError):
    """A run would keep more than the available memory (``check_memory``)."""


_STATE_COPIES = 4  # position, proposal, drift and noise of every chain live at once


def estimate_memory(
    num_chains: int,
    num_kept: int,
    event_shape: Sequence[int],
    dtype: Any = float,
    keep_samples: bool = True,
) -> int:
    """Bytes a run keeps: ``num_chains x num_kept x prod(event_shape) x itemsize`` for the
    kept draws (0 with ``keep_samples=False``) plus the chain state (``4 x num_chains x
    event`` values: position, proposal, drift, noise).

    Example:
        >>> bip.samplers.estimate_memory(1000, 100, (32, 32), jnp.float64) / 1e9   # GB
        0.851968
    """
    num_chains = _checks.integer("num_chains", num_chains)
    num_kept = _checks.integer("num_kept", num_kept, minimum=0)
    event = math.prod(int(d) for d in event_shape)
    per_chain = event * np.dtype(jnp.dtype(dtype)).itemsize
    kept = num_kept * per_chain if keep_samples else 0
    return num_chains * (kept + _STATE_COPIES * per_chain)


def available_memory() -> int | None:
    """Bytes of memory available to this process: ``MemAvailable`` of ``/proc/meminfo``,
    capped by a cgroup limit (containers), else ``os.sysconf``; None if unknown."""
    available = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            available = None
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            limit = fh.read().strip()
        with open("/sys/fs/cgroup/memory.current") as fh:
            used = int(fh.read().strip())
        if limit != "max":
            room = max(int(limit) - used, 0)
            available = room if available is None else min(available, room)
    except (OSError, ValueError):
        pass
    return available


def check_memory(
    num_chains: int,
    num_kept: int,
    event_shape: Sequence[int],
    dtype: Any = float,
    keep_samples: bool = True,
    available: int | None = None,
) -> int:
    """Raise ``MemoryBudgetError`` if ``estimate_memory(...)`` exceeds ``available`` bytes
    (default ``available_memory()``; no check when unknown), else return the estimate.

    The message gives the estimate and the available memory in GB and the fixes: thin more,
    ``keep_samples=False`` with streaming statistics, fewer chains. ``run`` calls it before
    compiling; call it yourself before building a large problem.

    Example:
        >>> bip.samplers.check_memory(10**7, 10, (32, 32), jnp.float64)
        Traceback (most recent call last):
        MemoryBudgetError: the run would keep about 1147.0 GB ...
    """
    estimate = estimate_memory(num_chains, num_kept, event_shape, dtype, keep_samples)
    event = "x".join(str(int(d)) for d in event_shape) or "scalar"
    kept = f"{num_kept} kept draws x " if keep_samples else ""
    what = f"{num_chains} chains x {kept}{event} {jnp.dtype(dtype).name} values"
    return _refuse_if_over(estimate, what, available)


def _refuse_if_over(estimate: int, what: str, available: int | None) -> int:
    available = available_memory() if available is None else int(available)
    if available is not None and estimate > available:
        raise MemoryBudgetError(
            f"the run would keep about {estimate / 1e9:.1f} GB ({what}, plus the chain state) "
            f"but {available / 1e9:.1f} GB of memory is available: thin more (fewer kept "
            "draws), keep_samples=False with streaming statistics (bip.streaming), or fewer "
            "chains"
        )
    return estimate


# --------------------------------------------------------------------------- the chunked run


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


class _Program(NamedTuple):
    start: Callable
    chunk: Callable
    finalize: Callable | None


def _build_program(structure, num_chains, observe, max_norm, stat, capacity, mesh) -> _Program:
    """The jitted pieces of ``run`` for the algorithm ``_merge(structure, arrays)``:

    - ``start(arrays, rng_key, positions) -> carry``: chain states, divergence flags, info
      sums and the statistics' state;
    - ``chunk(arrays, rng_key, carry, first_step, steps_per_block, num_blocks, keep) ->
      (carry, buffer)``: ``num_blocks`` blocks of ``steps_per_block`` steps from the global
      step ``first_step``; after each block, if ``keep``, the draw ``observe(position)``
      updates the statistics; rows ``[0, num_blocks)`` of ``buffer`` ``(capacity, chains,
      ...)`` hold the blocks' draws (None without a capacity, when ``num_blocks`` is
      unbounded). All counts are traced: one program serves every chunk, burn-in included;
    - ``finalize(stat_state)``: the statistics' results.

    Step ``i`` draws its keys from ``fold_in(rng_key, i)`` whatever the chunking, so the same
    seed gives the same draws for any chunk size."""

    def shard(tree):
        return sharding.constrain(tree, mesh)

    def one_step(algorithm, rng_key, chains, step_index):
        state, diverged, diverged_at, info_sum = chains
        keys = shard(jax.random.split(jax.random.fold_in(rng_key, step_index), num_chains))
        new_state, info = jax.vmap(algorithm.step)(keys, state)
        ok = _chain_ok(new_state.position, max_norm) & ~diverged
        newly = ~ok & ~diverged
        state = _tree_where(ok, new_state, state)
        diverged_at = jnp.where(newly, step_index, diverged_at).astype(diverged_at.dtype)
        info_sum = jax.tree_util.tree_map(
            lambda s, i: s + jnp.where(ok, i, 0.0).astype(s.dtype), info_sum, info
        )
        return shard((state, diverged | newly, diverged_at, info_sum))

    @jax.jit
    def start(arrays, rng_key, positions):
        algorithm = _merge(structure, arrays)
        state = shard(jax.vmap(algorithm.init)(shard(positions)))
        _, info_shape = jax.eval_shape(
            jax.vmap(algorithm.step), jax.random.split(rng_key, num_chains), state
        )
        info_sum = jax.tree_util.tree_map(
            lambda s: jnp.zeros(s.shape, jnp.result_type(s.dtype, float)), info_shape
        )
        flags = (jnp.zeros(num_chains, bool), jnp.full(num_chains, -1, jnp.result_type(int)))
        chains = shard((state, *flags, info_sum))
        stat_state = None if stat is None else stat.init(jax.vmap(observe)(state.position))
        return chains, stat_state

    @jax.jit
    def chunk(arrays, rng_key, carry, first_step, steps_per_block, num_blocks, keep):
        algorithm = _merge(structure, arrays)

        def block(carry, i):
            chains, stat_state = carry
            first = first_step + i * steps_per_block
            chains = jax.lax.fori_loop(
                0,
                jnp.where(i < num_blocks, steps_per_block, 0),
                lambda j, c: one_step(algorithm, rng_key, c, first + j),
                chains,
            )
            draws = shard(jax.vmap(observe)(chains[0].position))
            if stat is not None:
                stat_state = jax.lax.cond(
                    keep & (i < num_blocks),
                    lambda s: stat.update(s, draws, ~chains[1]),
                    lambda s: s,
                    stat_state,
                )
            return (chains, stat_state), draws

        if capacity is None:
            carry = jax.lax.fori_loop(0, num_blocks, lambda i, c: block(c, i)[0], carry)
            return carry, None
        # a scan's stacked output is written row by row, never zero-filled first; blocks past
        # num_blocks run no step and leave rows the host ignores
        carry, buffer = jax.lax.scan(block, carry, jnp.arange(capacity))
        return carry, sharding.constrain(buffer, mesh, chain_axis=1)

    finalize = None if stat is None else jax.jit(stat.finalize)
    return _Program(start, chunk, finalize)


# Programs are reused across calls with the same algorithm structure and settings, so a second
# ``run`` costs no compilation: the key, the positions and the algorithm's arrays and floats (a
# pytree drift's parameters, the step size), the step counts and the thinning are traced.
_cached_program = functools.lru_cache(maxsize=32)(_build_program)

# A chunk's draw buffer holds at most this many bytes (and at most _MAX_BLOCKS draws): it
# bounds the device memory of kept draws; they are copied to host memory after each chunk.
_BUFFER_BYTES = 16 * 2**20
_MAX_BLOCKS = 1024


def _plan_chunk(done, wanted, *, burn_in, thin, total, capacity):
    """``(steps, (first_step, steps_per_block, num_blocks, keep))`` for the next chunk from
    global step ``done`` of ``total``, about ``wanted`` steps: burn-in steps, whole thinning
    blocks (each ending in a kept draw, at most ``capacity``), or part of one block."""
    if done < burn_in:
        m = min(wanted, burn_in - done)
        return m, (done, m, 1, False)
    into = (done - burn_in) % thin
    remaining = total - done
    if into == 0 and wanted >= thin and remaining >= thin:
        n = min(wanted // thin, remaining // thin, capacity or remaining)
        return n * thin, (done, thin, n, True)
    m = min(wanted, thin - into, remaining)
    return m, (done, m, 1, into + m == thin)


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
    chunk_size: int | None = None,
) -> Run:
    """Run ``num_chains`` chains of ``algorithm``, vmapped over chains, in jitted chunks.

    The loop runs on the host over chunks of steps of one compiled program (about a second
    each, timed after the first, which compiles), so Ctrl-C stops a run within a few seconds
    and keeps what was sampled: it raises ``Interrupted``, whose ``partial`` is a ``Run``
    with ``complete=False``, the draws, statistics and state so far and ``steps_done``. The
    same seed gives the same draws whatever the chunking.

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
        progress: a progress bar and a line on stderr while compiling (default: when
            ``num_chains * steps > 10^8``).
        statistics: ``bip.streaming`` statistics (one, a list/tuple, or a dict of them)
            updated with every kept draw ``observe(position)``; diverged chains stop
            contributing. Finalized into ``Run.statistics`` (same structure).
        keep_samples: store every kept draw in ``Run.samples`` (host memory
            ``num_steps // thin x num_chains x draw``, checked against the available memory
            before compiling: ``MemoryBudgetError``); False keeps only the statistics, the
            final state and the diagnostics, so memory does not grow with the number of steps.
        mesh: a ``jax.sharding.Mesh`` (e.g. ``bip.sharding.chain_mesh()``) to split the chains
            over its devices; ``num_chains`` must be a multiple of ``mesh.size``. The chain
            arrays of the result stay sharded. Keys are per chain, so the draws do not depend
            on the number of devices.
        chunk_size: steps per chunk (default: timed to about a second); a chunk ends at a
            kept draw when it spans one.

    Returns:
        A ``Run`` with host ``samples`` of shape ``(num_steps // thin, num_chains, ...)``.

    The compiled program is reused by every call with the same algorithm structure, shapes
    and settings: the arrays and floats inside the algorithm (those of a pytree drift such as
    ``bip.posteriors.drift(...)``, the step size of ``ula``/``mala``) and the step counts are
    traced arguments, the rest of it (functions, ints; a closure as a whole) is keyed by
    identity or value.
    """
    num_steps = _checks.integer("num_steps", num_steps, minimum=1)
    thin = _checks.integer("thin", thin, minimum=1)
    burn_in = _checks.integer("burn_in", burn_in, minimum=0)
    if chunk_size is not None:
        chunk_size = _checks.integer("chunk_size", chunk_size)
    _check_on_divergence(on_divergence)
    if num_steps < thin:
        raise ValueError(f"num_steps ({num_steps}) must be at least thin ({thin})")
    positions = jnp.asarray(initial_positions)
    if positions.ndim < 1:
        raise ValueError("initial_positions must have a leading chain axis")
    _checks.finite("initial_positions", positions)
    num_chains = positions.shape[0]
    sharding.check_divisible(num_chains, mesh)
    observe = observe if observe is not None else _identity
    draw_shapes = jax.eval_shape(jax.vmap(observe), positions)
    draw_bytes = sum(d.size * d.dtype.itemsize for d in jax.tree_util.tree_leaves(draw_shapes))
    num_kept = num_steps // thin
    kept_bytes = num_kept * draw_bytes if keep_samples else 0
    _refuse_if_over(
        kept_bytes + _STATE_COPIES * positions.size * positions.dtype.itemsize,
        f"{num_chains} chains x {num_kept if keep_samples else 0} kept draws of "
        f"{draw_bytes // num_chains} bytes",
        None,
    )
    stat = None if statistics is None else streaming.combine(statistics)
    total = burn_in + num_steps
    if progress is None:
        progress = num_chains * total > 10**8
    capacity = None
    if keep_samples:
        capacity = max(1, min(_MAX_BLOCKS, num_kept, _BUFFER_BYTES // max(draw_bytes, 1)))
    settings = (_split(algorithm)[0], num_chains, observe, float(max_norm), stat, capacity, mesh)
    try:
        program = _cached_program(*settings)
    except TypeError:  # an unhashable setting: build (and compile) this program once
        program = _build_program(*settings)
    arrays = _split(algorithm)[1]
    carry = program.start(arrays, rng_key, sharding.put(positions, mesh))
    samples = None
    if keep_samples:
        samples = jax.tree_util.tree_map(
            lambda d: np.empty((num_kept, *d.shape), d.dtype), draw_shapes
        )
    kept = [0]

    def advance(carry, *args):
        return program.chunk(arrays, rng_key, carry, *args)

    def collect(args, buffer):
        _, _, n, keep = args
        if samples is not None and keep:
            for host, rows in zip(
                jax.tree_util.tree_leaves(samples), jax.tree_util.tree_leaves(buffer), strict=True
            ):
                host[kept[0] : kept[0] + n] = sharding.to_host(rows)[:n]
        kept[0] += n if keep else 0

    def plan(done, wanted):
        return _plan_chunk(done, wanted, burn_in=burn_in, thin=thin, total=total, capacity=capacity)

    _note_compile(program.chunk, (arrays, carry), bool(progress), "sampler")
    bar = _Bar(total, bool(progress), "sampling")
    try:
        carry, done, interrupted = _drive(
            advance, carry, total, plan, collect=collect, chunk_size=chunk_size, bar=bar
        )
    finally:
        bar.close()
    (state, diverged, diverged_at, info_sum), stat_state = carry
    steps_ok = jnp.maximum(jnp.where(diverged, diverged_at, done), 1)
    info_mean = jax.tree_util.tree_map(
        lambda s: s / steps_ok.reshape(steps_ok.shape + (1,) * (s.ndim - 1)), info_sum
    )
    results = None if stat is None or not kept[0] else program.finalize(stat_state)
    if samples is not None:
        samples = jax.tree_util.tree_map(lambda s: s[: kept[0]], samples)
    steps_done = max(done - burn_in, 0)
    report = _report(diverged, diverged_at, "ignore" if interrupted else on_divergence)
    result = Run(
        samples,
        state,
        diverged,
        diverged_at,
        info_mean,
        report,
        results,
        not interrupted,
        steps_done,
    )
    if interrupted:
        raise Interrupted(
            f"sampling interrupted after {steps_done} of {num_steps} steps "
            f"({kept[0]} of {num_kept} draws kept); the partial result is in .partial",
            result,
        )
    return result


def _identity(x):
    return x


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
    progress: bool = False,
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
        progress: a progress bar over levels and a line on stderr while compiling.

    Returns:
        ``DiffusionResult`` with positions at the last level ``sigmas[-1]``.

    The levels run on the host in jitted chunks of about a second: Ctrl-C raises
    ``Interrupted`` (``partial`` None: positions between levels are no samples) within a few
    seconds.
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
    def start(sigmas):
        x0 = sigmas[0] * jax.random.normal(init_key, (num_chains,) + event, sigmas.dtype)
        return shard((x0, jnp.ones(num_chains, bool), jnp.full(num_chains, -1)))

    @jax.jit
    def advance(carry, first, count):
        def body(index, carry):
            return level(carry, (index, sigmas[index], sigmas[index + 1]))[0]

        return jax.lax.fori_loop(first, first + count, body, carry)

    num_levels = sigmas.shape[0] - 1
    (x, ok, diverged_at), done, interrupted = _drive_range(
        advance,
        start(sigmas),
        num_levels,
        progress=bool(progress),
        desc="reverse diffusion",
        what="reverse diffusion",
        unit="level",
    )
    if interrupted:
        raise Interrupted(f"reverse diffusion interrupted after {done} of {num_levels} levels")
    return DiffusionResult(x, ~ok, _report(~ok, diverged_at, on_divergence))
