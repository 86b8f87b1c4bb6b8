"""The one chain loop: any BlackJAX-style kernel over many chains, in chunks, stoppable.

``run(rng_key, algorithm, initial_positions, num_steps, ...)`` is the only multi-chain loop
of bip: ``bip.posteriors.sample``, ``sample_annealed``, ``sample_with_noise_level``,
``bip.samplers.reverse_diffusion`` and the robustness sweeps (``bip.experiments``) all go
through it. What it does for all of them:

- keys: step ``i`` of chain ``c`` uses ``split(fold_in(rng_key, i), num_chains)[c]``, so the
  same seed gives the same draws for any chunking and on any number of devices;
  ``shared_noise=n`` gives chains ``c`` and ``c + n`` the same keys (coupled chains), and
  ``key_impl`` picks the PRNG (``"threefry"``, ``"rbg"``, ``"unsafe_rbg"``);
- ``vmap`` of the one-chain step over chains; positions may be arrays ``(num_chains,
  *event)`` or pytrees of them;
- divergence: a chain whose position has a non-finite entry or one above ``max_norm`` (or
  whose state has another non-finite float, e.g. MALA's log density) is frozen at its last
  good state and reported by index (``Run.divergence``), never returned as NaN;
- burn-in, thinning, ``observe``, streaming statistics (``bip.streaming``) and kept draws
  copied to host memory after each chunk, returned chains first, ``(chains, draws,
  *event)``, like NumPyro and ArviZ;
- ``mesh=``: the chains sharded over devices (``bip.sharding``);
- the host loop over jitted chunks of about a second (``bip.hostloop``): Ctrl-C raises
  ``Interrupted`` with the partial ``Run``.

``algorithm`` is a BlackJAX ``SamplingAlgorithm`` for ONE chain, or a schedule: a callable
``algorithm(step_index) -> SamplingAlgorithm`` (annealing, reverse diffusion: the step's
level depends on the global step index, burn-in included), or with ``chain_params``
``algorithm(step_index, params) -> SamplingAlgorithm`` where ``params`` is one chain's slice
of ``chain_params`` (a sweep's per-chain error size). Build schedules as
``jax.tree_util.Partial`` pytrees so that their arrays are traced and the compiled loop is
reused.

Example:
    >>> prior = bip.priors.exact(bip.manifolds.Uniform(bip.manifolds.Circle()))
    >>> algo = bip.kernels.ula(lambda x: prior.score(x, 0.1), 1e-3)
    >>> x0 = jnp.zeros((100, 2)) + jnp.array([1.0, 0.0])
    >>> result = bip.chains.run(jax.random.key(0), algo, x0, num_steps=1000, thin=100)
    >>> result.samples.shape      # (chains, kept, 2)
    (100, 10, 2)
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm
from jax.sharding import Mesh

from bip import _checks, hostloop, memory, sharding, streaming

Array = jax.Array

__all__ = [
    "run",
    "Run",
    "DivergenceReport",
    "DivergenceWarning",
    "DivergenceError",
    "KEY_IMPLS",
]

KEY_IMPLS = ("threefry", "rbg", "unsafe_rbg")


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
        samples: kept draws ``(num_chains, num_kept, ...)`` of ``observe(position)``, chains
            first like NumPyro and ArviZ.
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
    ``run(..., keep_samples=False)``; it is a chains-first view of the buffer the loop fills
    draw by draw (``np.ascontiguousarray`` gives C order).
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
        return jax.tree_util.tree_map(lambda s: s[keep], self.samples)


_DEFAULT_HINT = (
    "Diverged chains are frozen at their last finite position and flagged in "
    "Run.diverged. Lower the step size: for the drift sigma^alpha * s use "
    "h = c * sigma^(2 - alpha) with c <= 0.1 (bip.samplers.default_step_size), and cap it "
    "by c / L for a likelihood with Lipschitz constant L."
)


def report(diverged, diverged_at, on_divergence: str) -> DivergenceReport:
    """The ``DivergenceReport`` of flags ``(num_chains,)``; warns or raises per
    ``on_divergence`` (``"warn"``, ``"raise"``, ``"ignore"``) when a chain diverged."""
    diverged = sharding.to_host(diverged)
    bad = np.flatnonzero(diverged)
    out = DivergenceReport(bad, sharding.to_host(diverged_at)[bad], diverged.size, _DEFAULT_HINT)
    if out.any and on_divergence == "raise":
        raise DivergenceError(str(out))
    if out.any and on_divergence == "warn":
        warnings.warn(str(out), DivergenceWarning, stacklevel=3)
    return out


def check_on_divergence(on_divergence: str) -> None:
    if on_divergence not in ("warn", "raise", "ignore"):
        raise ValueError(
            f"on_divergence must be 'warn', 'raise' or 'ignore', got {on_divergence!r}"
        )


def tree_where(mask, new, old):
    """Per chain: ``new`` where ``mask`` ``(num_chains,)``, else ``old`` (pytrees alike)."""

    def pick(n, o):
        m = mask.reshape(mask.shape + (1,) * (n.ndim - mask.ndim))
        return jnp.where(m, n, o)

    return jax.tree_util.tree_map(pick, new, old)


def chain_ok(state, max_norm):
    """``(num_chains,)``: every entry of the chains' positions (pytrees) below ``max_norm`` in
    absolute value (one comparison: NaN and inf fail it), and every other float of the state
    (e.g. MALA's log density and gradient) finite."""
    rest = state._replace(position=()) if hasattr(state, "_replace") else ()
    checks = [
        jnp.abs(leaf) < jnp.asarray(max_norm, leaf.dtype)
        for leaf in jax.tree_util.tree_leaves(state.position)
    ]
    checks += [
        jnp.isfinite(leaf)
        for leaf in jax.tree_util.tree_leaves(rest)
        if jnp.issubdtype(leaf.dtype, jnp.inexact)
    ]
    ok = None
    for check in checks:
        leaf_ok = jnp.all(check.reshape(check.shape[0], -1), axis=-1)
        ok = leaf_ok if ok is None else ok & leaf_ok
    return ok


def with_key_impl(rng_key: Array, key_impl: str | None) -> Array:
    """``rng_key`` as a key of the PRNG ``key_impl`` (``"threefry"``, ``"rbg"``,
    ``"unsafe_rbg"``; None: unchanged). A key of another implementation is turned into one of
    this one deterministically (its random bits become the new key's data)."""
    if key_impl is None:
        return rng_key
    if key_impl not in KEY_IMPLS:
        raise ValueError(f"key_impl must be one of {KEY_IMPLS} or None, got {key_impl!r}")
    name = {"threefry": "threefry2x32"}.get(key_impl, key_impl)
    if not jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
        rng_key = jax.random.wrap_key_data(rng_key)
    if str(jax.random.key_impl(rng_key)) == name:
        return rng_key
    shape = jax.random.key_data(jax.random.key(0, impl=name)).shape
    return jax.random.wrap_key_data(jax.random.bits(rng_key, shape, jnp.uint32), impl=name)


# --------------------------------------------------------------------------- the program


def _is_traced(leaf) -> bool:
    """Leaves of an algorithm that ``run`` passes to its jitted loop as traced arguments."""
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic, float, complex))


def split_algorithm(algorithm):
    """``algorithm -> (structure, arrays)``: its array leaves and floats (traced) apart from
    the rest (functions, ints: the hashable ``structure``, with None in the traced slots)."""
    leaves, treedef = jax.tree_util.tree_flatten(algorithm)
    static = tuple(None if _is_traced(leaf) else leaf for leaf in leaves)
    arrays = [leaf if _is_traced(leaf) else None for leaf in leaves]
    return (treedef, static), arrays


def merge_algorithm(structure, arrays):
    """The inverse of ``split_algorithm``."""
    treedef, static = structure
    leaves = [a if s is None else s for s, a in zip(static, arrays, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


class _Settings(NamedTuple):
    """Everything static about a run's program (its cache key)."""

    structure: Any
    num_chains: int
    observe: Callable
    max_norm: float
    stat: Any
    capacity: int | None
    mesh: Mesh | None
    schedule: str  # "fixed", "steps" (algorithm(i)) or "chains" (algorithm(i, params))
    shared_noise: int | None


class _Program(NamedTuple):
    start: Callable
    chunk: Callable
    finalize: Callable | None


def _build_program(s: _Settings) -> _Program:
    """The jitted pieces of ``run``:

    - ``start(arrays, params, rng_key, positions) -> carry``: chain states, divergence flags,
      info sums and the statistics' state;
    - ``chunk(arrays, params, rng_key, carry, first_step, steps_per_block, num_blocks, keep)
      -> (carry, buffer)``: ``num_blocks`` blocks of ``steps_per_block`` steps from the global
      step ``first_step``; after each block, if ``keep``, the draw ``observe(position)``
      updates the statistics; rows ``[0, num_blocks)`` of ``buffer`` ``(capacity, chains,
      ...)`` hold the blocks' draws (None without a capacity). All counts are traced: one
      program serves every chunk, burn-in included;
    - ``finalize(stat_state)``: the statistics' results."""
    streams = s.shared_noise or s.num_chains
    copies = None if s.shared_noise is None else np.arange(s.num_chains) % s.shared_noise

    def shard(tree):
        return sharding.constrain(tree, s.mesh)

    def advance(arrays, params, keys, state, step_index):
        algorithm = merge_algorithm(s.structure, arrays)
        if s.schedule == "fixed":
            return jax.vmap(algorithm.step)(keys, state)
        if s.schedule == "steps":
            return jax.vmap(algorithm(step_index).step)(keys, state)
        return jax.vmap(lambda k, x, p: algorithm(step_index, p).step(k, x))(keys, state, params)

    def check(carry, step_index):
        """Freeze the chains whose candidate (the state made by step ``step_index``) diverged
        and add the candidate's info to the sums of the others: ``(state, diverged_at,
        info_sum)`` (``diverged_at`` -1: healthy)."""
        state, candidate, pending, diverged_at, info_sum = carry
        healthy = diverged_at < 0
        ok = chain_ok(candidate, s.max_norm) & healthy
        state = tree_where(ok, candidate, state)
        diverged_at = jnp.where(ok | ~healthy, diverged_at, step_index).astype(diverged_at.dtype)
        kept = tree_where(ok, pending, jax.tree_util.tree_map(jnp.zeros_like, pending))
        info_sum = jax.tree_util.tree_map(jnp.add, info_sum, kept)
        return state, diverged_at, info_sum

    def one_step(arrays, params, rng_key, carry, step_index):
        """Check the previous step's candidate, then make this step's from the checked states.
        The candidate is a loop-carried value, so XLA computes it once; checking it in the
        step that made it let XLA recompute the new state (the normal draw's erf_inv) inside
        both the check's and the select's fusions (12% of a circle chain-step)."""
        state, diverged_at, info_sum = check(carry, step_index - 1)
        keys = jax.random.split(jax.random.fold_in(rng_key, step_index), streams)
        keys = shard(keys if copies is None else keys[copies])
        candidate, info = advance(arrays, params, keys, state, step_index)
        pending = jax.tree_util.tree_map(lambda t, i: i.astype(t.dtype), info_sum, info)
        return shard((state, candidate, pending, diverged_at, info_sum))

    def steps(arrays, params, rng_key, chains, first, count):
        """``count`` steps from global step ``first``: ``chains`` -> ``chains`` (checked)."""
        state, diverged_at, info_sum = chains
        zeros = jax.tree_util.tree_map(jnp.zeros_like, info_sum)
        carry = (state, state, zeros, diverged_at, info_sum)
        carry = jax.lax.fori_loop(
            0, count, lambda j, c: one_step(arrays, params, rng_key, c, first + j), carry
        )
        return shard(check(carry, first + count - 1))

    def observe_all(position):
        return shard(jax.vmap(s.observe)(position))

    @jax.jit
    def start(arrays, params, rng_key, positions):
        algorithm = merge_algorithm(s.structure, arrays)
        positions = shard(positions)
        if s.schedule == "fixed":
            state = jax.vmap(algorithm.init)(positions)
        elif s.schedule == "steps":
            state = jax.vmap(algorithm(0).init)(positions)
        else:
            state = jax.vmap(lambda x, p: algorithm(0, p).init(x))(positions, params)
        state = shard(state)
        keys = jax.random.split(rng_key, s.num_chains)
        _, info_shape = jax.eval_shape(lambda k, x: advance(arrays, params, k, x, 0), keys, state)
        info_sum = jax.tree_util.tree_map(
            lambda i: jnp.zeros(i.shape, jnp.result_type(i.dtype, float)), info_shape
        )
        diverged_at = jnp.full(s.num_chains, -1, jnp.result_type(int))
        chains = shard((state, diverged_at, info_sum))
        stat_state = None if s.stat is None else s.stat.init(observe_all(state.position))
        return chains, stat_state

    @jax.jit
    def chunk(arrays, params, rng_key, carry, first_step, steps_per_block, num_blocks, keep):
        def block(carry, i):
            chains, stat_state = carry
            first = first_step + i * steps_per_block
            count = jnp.where(i < num_blocks, steps_per_block, 0)
            chains = steps(arrays, params, rng_key, chains, first, count)
            draws = observe_all(chains[0].position)
            if s.stat is not None:
                stat_state = jax.lax.cond(
                    keep & (i < num_blocks),
                    lambda st: s.stat.update(st, draws, chains[1] < 0),
                    lambda st: st,
                    stat_state,
                )
            return (chains, stat_state), draws

        if s.capacity is None:
            carry = jax.lax.fori_loop(0, num_blocks, lambda i, c: block(c, i)[0], carry)
            return carry, None
        # a scan's stacked output is written row by row, never zero-filled first; blocks past
        # num_blocks run no step and leave rows the host ignores
        carry, buffer = jax.lax.scan(block, carry, jnp.arange(s.capacity))
        return carry, sharding.constrain(buffer, s.mesh, chain_axis=1)

    finalize = None if s.stat is None else jax.jit(s.stat.finalize)
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


def _identity(x):
    return x


def _checked_positions(initial_positions):
    """The positions as a pytree of arrays with one leading chain axis; their chain count."""
    positions = jax.tree_util.tree_map(jnp.asarray, initial_positions)
    leaves = jax.tree_util.tree_leaves(positions)
    if not leaves or any(leaf.ndim < 1 for leaf in leaves):
        raise ValueError("initial_positions must have a leading chain axis")
    sizes = {leaf.shape[0] for leaf in leaves}
    if len(sizes) != 1:
        raise ValueError(f"initial_positions leaves disagree on the chain count: {sorted(sizes)}")
    for leaf in leaves:
        _checks.finite("initial_positions", leaf)
    return positions, sizes.pop()


def _schedule_kind(algorithm, chain_params) -> str:
    if isinstance(algorithm, SamplingAlgorithm):
        if chain_params is not None:
            raise ValueError(
                "chain_params needs a schedule algorithm(step_index, params), "
                "not a SamplingAlgorithm"
            )
        return "fixed"
    if not callable(algorithm):
        raise TypeError(
            "algorithm must be a BlackJAX SamplingAlgorithm or a callable "
            f"step_index -> SamplingAlgorithm, got {type(algorithm).__name__}"
        )
    return "steps" if chain_params is None else "chains"


def run(
    rng_key: Array,
    algorithm: SamplingAlgorithm | Callable[..., SamplingAlgorithm],
    initial_positions: Any,
    num_steps: int,
    *,
    thin: int = 1,
    burn_in: int = 0,
    observe: Callable[[Any], Any] | None = None,
    max_norm: float = 1e8,
    on_divergence: str = "warn",
    progress: bool | None = None,
    statistics: streaming.StatisticsLike | None = None,
    keep_samples: bool = True,
    mesh: Mesh | None = None,
    chunk_size: int | None = None,
    chain_params: Any = None,
    shared_noise: int | None = None,
    key_impl: str | None = None,
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
            BlackJAX kernel whose state has a ``position``), or a schedule
            ``algorithm(step_index)`` / ``algorithm(step_index, params)`` returning one (the
            global step index, burn-in included; see the module docstring).
        initial_positions: ``(num_chains, *event)``, or a pytree of arrays with a leading
            chain axis each.
        num_steps: steps after burn-in; every ``thin``-th state is kept
            (``num_steps // thin`` draws).
        burn_in: steps run first and discarded.
        observe: maps one chain's position to what is stored (default: the position), e.g.
            an angle, to keep memory small.
        max_norm: a chain whose position has an entry of absolute value above this, or a
            non-finite entry (or whose state has another non-finite float, such as MALA's
            log density), is declared diverged and frozen at its last good state.
        on_divergence: ``"warn"`` (a ``DivergenceWarning`` naming the chains), ``"raise"``
            (``DivergenceError``) or ``"ignore"``; the report is in the result either way.
        progress: a progress bar and a line on stderr while compiling (default: when
            ``num_chains * steps > 10^8``).
        statistics: ``bip.streaming`` statistics (one, a list/tuple, or a dict of them)
            updated with every kept draw ``observe(position)``; diverged chains stop
            contributing. Finalized into ``Run.statistics`` (same structure).
        keep_samples: store every kept draw in ``Run.samples`` (host memory
            ``num_chains x num_steps // thin x draw``, checked against the available memory
            before compiling: ``MemoryBudgetError``); False keeps only the statistics, the
            final state and the diagnostics, so memory does not grow with the number of steps.
        mesh: a ``jax.sharding.Mesh`` (e.g. ``bip.sharding.chain_mesh()``) to split the chains
            over its devices; ``num_chains`` must be a multiple of ``mesh.size``. The chain
            arrays of the result stay sharded. Keys are per chain, so the draws do not depend
            on the number of devices.
        chunk_size: steps per chunk (default: timed to about a second); a chunk ends at a
            kept draw when it spans one.
        chain_params: a pytree of arrays with a leading chain axis, handed chain by chain to
            the schedule ``algorithm(step_index, params)`` (e.g. a sweep's error sizes).
        shared_noise: chains ``c`` and ``c + shared_noise`` get the same keys at every step
            (synchronously coupled groups); ``num_chains`` must be a multiple of it.
        key_impl: the PRNG of the chains' keys: ``"threefry"`` (JAX's default), ``"rbg"`` or
            ``"unsafe_rbg"`` (faster on CPU and GPU, see ``bench/bench_ula.py``); None keeps
            ``rng_key``'s own. Another implementation gives other (equally valid) draws.

    Returns:
        A ``Run`` with host ``samples`` of shape ``(num_chains, num_steps // thin, ...)``.

    The compiled program is reused by every call with the same algorithm structure, shapes
    and settings: the arrays and floats inside the algorithm (those of a pytree drift such as
    ``bip.posteriors.drift(...)``, the step size of ``ula``/``mala``), ``chain_params`` and
    the step counts are traced arguments, the rest of it (functions, ints; a closure as a
    whole) is keyed by identity or value.

    Example:
        >>> algo = bip.kernels.ula(lambda x: -x, 0.1)
        >>> out = bip.chains.run(jax.random.key(0), algo, jnp.zeros((8, 2)), 100, thin=10)
        >>> out.samples.shape, out.divergence.any
        ((8, 10, 2), False)
    """
    num_steps = _checks.integer("num_steps", num_steps, minimum=1)
    thin = _checks.integer("thin", thin, minimum=1)
    burn_in = _checks.integer("burn_in", burn_in, minimum=0)
    if chunk_size is not None:
        chunk_size = _checks.integer("chunk_size", chunk_size)
    check_on_divergence(on_divergence)
    if num_steps < thin:
        raise ValueError(f"num_steps ({num_steps}) must be at least thin ({thin})")
    schedule = _schedule_kind(algorithm, chain_params)
    positions, num_chains = _checked_positions(initial_positions)
    sharding.check_divisible(num_chains, mesh)
    if shared_noise is not None:
        shared_noise = _checks.integer("shared_noise", shared_noise)
        if num_chains % shared_noise:
            raise ValueError(
                f"num_chains ({num_chains}) must be a multiple of shared_noise ({shared_noise})"
            )
    rng_key = with_key_impl(rng_key, key_impl)
    if chain_params is not None:
        chain_params = jax.tree_util.tree_map(jnp.asarray, chain_params)
        if any(p.shape[:1] != (num_chains,) for p in jax.tree_util.tree_leaves(chain_params)):
            raise ValueError(f"chain_params must have a leading axis of {num_chains} chains")
    observe = observe if observe is not None else _identity
    draw_shapes = jax.eval_shape(jax.vmap(observe), positions)
    draw_bytes = sum(d.size * d.dtype.itemsize for d in jax.tree_util.tree_leaves(draw_shapes))
    state_bytes = sum(p.size * p.dtype.itemsize for p in jax.tree_util.tree_leaves(positions))
    num_kept = num_steps // thin
    memory.refuse_if_over(
        (num_kept * draw_bytes if keep_samples else 0) + memory.STATE_COPIES * state_bytes,
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
    structure, arrays = split_algorithm(algorithm)
    settings = _Settings(
        structure,
        num_chains,
        observe,
        float(max_norm),
        stat,
        capacity,
        mesh,
        schedule,
        shared_noise,
    )
    try:
        program = _cached_program(settings)
    except TypeError:  # an unhashable setting: build (and compile) this program once
        program = _build_program(settings)
    params = sharding.put(chain_params, mesh)
    carry = program.start(arrays, params, rng_key, sharding.put(positions, mesh))
    samples = None
    if keep_samples:
        samples = jax.tree_util.tree_map(
            lambda d: np.empty((num_kept, *d.shape), d.dtype), draw_shapes
        )
    kept = [0]

    def advance(carry, *args):
        return program.chunk(arrays, params, rng_key, carry, *args)

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

    hostloop.note_compile(program.chunk, (arrays, carry), bool(progress), "sampler")
    bar = hostloop.Bar(total, bool(progress), "sampling")
    try:
        carry, done, interrupted = hostloop.drive(
            advance, carry, total, plan, collect=collect, chunk_size=chunk_size, bar=bar
        )
    finally:
        bar.close()
    (state, diverged_at, info_sum), stat_state = carry
    diverged = diverged_at >= 0
    steps_ok = jnp.maximum(jnp.where(diverged, diverged_at, done), 1)
    info_mean = jax.tree_util.tree_map(
        lambda x: x / steps_ok.reshape(steps_ok.shape + (1,) * (x.ndim - 1)), info_sum
    )
    results = None if stat is None or not kept[0] else program.finalize(stat_state)
    if samples is not None:
        # filled draw by draw (a scan's output is step-major); chains first as one transpose
        # at the end: a view, no copy (measured, loaded 2-core CPU: copying a chunk of 100
        # circle draws of 10^4 chains transposed took 40 ms, 37x the plain 1.1 ms copy)
        samples = jax.tree_util.tree_map(lambda x: np.swapaxes(x[: kept[0]], 0, 1), samples)
    steps_done = max(done - burn_in, 0)
    divergence = report(diverged, diverged_at, "ignore" if interrupted else on_divergence)
    result = Run(
        samples,
        state,
        diverged,
        diverged_at,
        info_mean,
        divergence,
        results,
        not interrupted,
        steps_done,
    )
    if interrupted:
        raise hostloop.Interrupted(
            f"sampling interrupted after {steps_done} of {num_steps} steps "
            f"({kept[0]} of {num_kept} draws kept); the partial result is in .partial",
            result,
        )
    return result
