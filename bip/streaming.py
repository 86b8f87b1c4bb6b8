"""Streaming statistics of long runs: O(chains) memory instead of O(chains x steps).

A statistic is three pure functions, the optax way (``init`` / ``update`` and a
``finalize``), so that ``bip.samplers.run`` can carry its state through the jitted scan:

- ``init(draws) -> state``: ``draws`` is one batched draw ``(num_chains, ...)`` (only its
  shapes and dtypes are used);
- ``update(state, draws, healthy) -> state``: fold in one draw of every chain; ``healthy``
  ``(num_chains,)`` is False for diverged chains, which statistics skip (where it makes
  sense) so that a chain frozen after a divergence does not bias them;
- ``finalize(state) -> result``: a NamedTuple of arrays.

``run(..., statistics=[...], keep_samples=False)`` updates them with every kept draw
(every ``thin``-th step after ``burn_in``) of ``observe(position)``. Each statistic keeps
per-chain state (so it shards with the chains over a device mesh and needs no communication
between steps); pooled values are formed once, in ``finalize``.

- ``mean_var(fn=None)``: running per-chain mean and variance (Welford), plus the pooled
  mean and variance (Chan et al.'s parallel merge).
- ``histogram(fn, bins, range)``: per-chain counts on fixed bins of a scalar observable
  (e.g. 36 bins of the angle on ``(-pi, pi)``) and their pooled sum.
- ``diagnostics(fn=None)``: per-chain mean, variance, lag-1 autocorrelation and an AR(1)
  effective sample size, and the Gelman-Rubin R-hat across chains.
- ``keep_last(k)``: the last ``k`` draws of every chain (a ring buffer).
- ``reservoir(k, seed)``: ``k`` draws per chain chosen uniformly from all draws
  (reservoir sampling; the same draw times for all chains).
- ``combine(stats)``: several statistics as one (a list, tuple or dict of them; the
  result has the same structure). ``accumulate(stat, draws)`` folds stored draws
  ``(num_chains, num_draws, ...)`` (``Run.samples``' layout), e.g. to check a statistic
  against NumPy.

Example:
    >>> angle = lambda x: jnp.arctan2(x[1], x[0])
    >>> result = bip.samplers.run(key, algo, x0, 10**6, keep_samples=False, statistics=[
    ...     bip.streaming.mean_var(),
    ...     bip.streaming.histogram(angle, bins=36, range=(-jnp.pi, jnp.pi)),
    ...     bip.streaming.keep_last(10)])
    >>> moments, hist, last = result.statistics
    >>> moments.pooled_mean, hist.pooled / hist.pooled.sum(), last.draws.shape
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = [
    "Statistic",
    "StatisticsLike",
    "MeanVar",
    "Histogram",
    "Diagnostics",
    "Kept",
    "mean_var",
    "histogram",
    "diagnostics",
    "keep_last",
    "reservoir",
    "combine",
    "accumulate",
]


@dataclasses.dataclass(frozen=True)
class Statistic:
    """A streaming statistic: ``init(draws)``, ``update(state, draws, healthy)``,
    ``finalize(state)`` (see the module docstring)."""

    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Array | None], Any]
    finalize: Callable[[Any], Any]
    name: str = "statistic"


StatisticsLike = Statistic | Sequence[Statistic] | Mapping[str, Statistic]
"""What ``combine`` and ``bip.samplers.run(statistics=...)`` take."""


# --------------------------------------------------------------------------- helpers


def _apply(fn, draws):
    """``fn`` applied to each chain's draw (``vmap`` over the leading chain axis)."""
    return draws if fn is None else jax.vmap(fn)(draws)


def _num_chains(tree) -> int:
    return jax.tree_util.tree_leaves(tree)[0].shape[0]


def _healthy(healthy, tree):
    if healthy is None:
        return jnp.ones(_num_chains(tree), bool)
    return jnp.asarray(healthy, bool)


def _float(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def _swap(x):
    """Draws ``(draws, chains, ...)`` (step-major, as a loop keeps them) <-> ``(chains,
    draws, ...)`` (chains first, as bip returns them): one transpose, outside the loop."""
    return jnp.swapaxes(jnp.asarray(x), 0, 1)


def _per_chain(w, x):
    """``w (chains,)`` reshaped to broadcast against ``x (chains, ...)``."""
    return w.reshape(w.shape + (1,) * (x.ndim - 1)).astype(x.dtype)


# --------------------------------------------------------------------------- mean / variance


class MeanVar(NamedTuple):
    """Per-chain and pooled moments.

    Attributes:
        count: ``(num_chains,)`` draws folded in per chain (diverged chains stop counting).
        mean, variance: ``(num_chains, ...)`` per-chain mean and (population) variance.
        pooled_mean, pooled_variance: ``(...)`` over all draws of all chains.
    """

    count: Array
    mean: Any
    variance: Any
    pooled_mean: Any
    pooled_variance: Any


def _pool(count, mean, m2):
    """Chan et al.: merge per-chain (count, mean, M2) into pooled mean and variance."""
    c = _per_chain(count, mean)
    total = jnp.maximum(jnp.sum(count), 1.0).astype(mean.dtype)
    pooled_mean = jnp.sum(c * mean, axis=0, keepdims=True) / total
    pooled_m2 = jnp.sum(m2 + c * (mean - pooled_mean) ** 2, axis=0)
    return pooled_mean[0], pooled_m2 / total


def mean_var(fn: Callable | None = None) -> Statistic:
    """Running per-chain mean and variance (Welford) of ``fn(draw)`` (default: the draw).

    ``fn`` maps one chain's draw to an array or a pytree of arrays. Numerically stable for
    any number of draws; the pooled values merge the per-chain ones once, at the end.
    """
    tree_map = jax.tree_util.tree_map

    def init(draws):
        x = tree_map(_float, _apply(fn, draws))
        count = jnp.zeros(_num_chains(x), jnp.result_type(float))
        return count, tree_map(jnp.zeros_like, x), tree_map(jnp.zeros_like, x)

    def update(state, draws, healthy=None):
        count, mean, m2 = state
        x = tree_map(_float, _apply(fn, draws))
        w = _healthy(healthy, x).astype(count.dtype)
        new_count = count + w
        delta = tree_map(lambda xx, mm: xx - mm, x, mean)
        mean = tree_map(
            lambda mm, d: mm + _per_chain(w / jnp.maximum(new_count, 1.0), d) * d, mean, delta
        )
        m2 = tree_map(lambda s, d, xx, mm: s + _per_chain(w, d) * d * (xx - mm), m2, delta, x, mean)
        return new_count, mean, m2

    def finalize(state):
        count, mean, m2 = state
        variance = tree_map(lambda s: s / _per_chain(jnp.maximum(count, 1.0), s), m2)
        pooled_mean = tree_map(lambda mm, s: _pool(count, mm, s)[0], mean, m2)
        pooled_variance = tree_map(lambda mm, s: _pool(count, mm, s)[1], mean, m2)
        return MeanVar(count, mean, variance, pooled_mean, pooled_variance)

    return Statistic(init, update, finalize, "mean_var")


# --------------------------------------------------------------------------- histogram


class Histogram(NamedTuple):
    """Fixed-bin counts.

    Attributes:
        counts: ``(num_chains, ..., bins)`` int32 counts per chain.
        edges: ``(bins + 1,)`` bin edges.
        outside: ``(num_chains, ...)`` draws outside ``range`` (or not finite), not counted.
        pooled: ``(..., bins)`` counts summed over chains (float, so that 10^10 counts fit).
    """

    counts: Array
    edges: Array
    outside: Array
    pooled: Array

    @property
    def probabilities(self) -> Array:
        """Pooled bin probabilities (sum to 1 over the bins)."""
        return self.pooled / jnp.maximum(jnp.sum(self.pooled, axis=-1, keepdims=True), 1.0)


def histogram(
    fn: Callable | None = None, bins: int = 36, range: tuple[float, float] = (-math.pi, math.pi)
) -> Statistic:
    """Running per-chain histogram of a scalar observable ``fn(draw)`` on fixed bins.

    Bins follow ``numpy.histogram``: ``bins`` equal bins on ``range = (lo, hi)``, the last one
    closed on the right; values outside (or not finite) go to ``outside``. ``fn`` may
    return an array, each entry then gets its own histogram.

    Example (angle of a point on the circle, 36 bins):
        >>> histogram(lambda x: jnp.arctan2(x[1], x[0]), bins=36, range=(-jnp.pi, jnp.pi))
    """
    bins = int(bins)
    if bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins}")
    lo, hi = float(range[0]), float(range[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"range must be finite with lo < hi, got {range}")

    def values(draws):
        return _float(_apply(fn, draws))

    def init(draws):
        v = values(draws)
        return jnp.zeros(v.shape + (bins,), jnp.int32), jnp.zeros(v.shape, jnp.int32)

    def update(state, draws, healthy=None):
        counts, outside = state
        v = values(draws)
        index = jnp.floor((v - lo) * (bins / (hi - lo))).astype(jnp.int32)
        index = jnp.where(v == hi, bins - 1, index)
        inside = (v >= lo) & (v <= hi)
        w = _per_chain(_healthy(healthy, v), v) > 0
        hit = jax.nn.one_hot(index, bins, dtype=jnp.int32) * (inside & w)[..., None]
        return counts + hit, outside + (~inside & w).astype(jnp.int32)

    def finalize(state):
        counts, outside = state
        edges = jnp.linspace(lo, hi, bins + 1, dtype=jnp.result_type(float))
        pooled = jnp.sum(counts.astype(jnp.result_type(float)), axis=0)
        return Histogram(counts, edges, outside, pooled)

    return Statistic(init, update, finalize, "histogram")


# --------------------------------------------------------------------------- diagnostics


class Diagnostics(NamedTuple):
    """Per-chain convergence diagnostics of a (scalar or array) observable.

    Attributes:
        count: ``(num_chains,)`` draws folded in.
        mean, variance: ``(num_chains, ...)`` per chain.
        autocorr: ``(num_chains, ...)`` lag-1 autocorrelation per chain.
        ess: ``(num_chains, ...)`` effective sample size per chain under an AR(1) model,
            ``n (1 - rho) / (1 + rho)`` (a quick on-the-fly estimate, not Geyer's).
        rhat: ``(...)`` Gelman-Rubin potential scale reduction across the healthy chains.
    """

    count: Array
    mean: Array
    variance: Array
    autocorr: Array
    ess: Array
    rhat: Array


def diagnostics(fn: Callable | None = None) -> Statistic:
    """Per-chain mean, variance, lag-1 autocorrelation and AR(1) ESS, and R-hat, on the fly.

    Sums are taken of ``x - x_first`` (the chain's first draw) to avoid cancellation.
    """

    def values(draws):
        return _float(_apply(fn, draws))

    def init(draws):
        v = values(draws)
        z = jnp.zeros_like(v)
        count = jnp.zeros(v.shape[0], v.dtype)
        # count, shift (the first draw), previous y, sum y, sum y^2, sum y_t y_(t-1); y = x - shift
        return count, z, z, z, z, z

    def update(state, draws, healthy=None):
        count, shift, prev, s1, s2, sc = state
        v = values(draws)
        w = _healthy(healthy, v).astype(count.dtype)
        wv = _per_chain(w, v)
        shift = jnp.where(_per_chain(count, v) == 0, v, shift)
        y = v - shift
        has_prev = _per_chain((count > 0).astype(count.dtype), v)
        s1 = s1 + wv * y
        s2 = s2 + wv * y * y
        sc = sc + wv * has_prev * y * prev
        prev = jnp.where(wv > 0, y, prev)
        return count + w, shift, prev, s1, s2, sc

    def finalize(state):
        count, shift, prev, s1, s2, sc = state
        n = _per_chain(jnp.maximum(count, 1.0), s1)
        m = s1 / n
        var = jnp.maximum(s2 / n - m * m, 0.0)
        # lag-1 autocovariance over the n - 1 pairs (y_t, y_(t-1)), t >= 1 (y_0 = 0)
        pairs = jnp.maximum(n - 1.0, 1.0)
        cov = sc / pairs - (s1 / pairs) * ((s1 - prev) / pairs)
        rho = jnp.where(var > 0, cov / jnp.where(var > 0, var, 1.0), 0.0)
        rho = jnp.clip(rho, -0.999, 0.999)
        ess = n * (1 - rho) / (1 + rho)
        mean = m + shift
        # Gelman-Rubin over chains that drew at least two values
        ok = _per_chain((count > 1).astype(count.dtype), s1)
        k = jnp.maximum(jnp.sum(ok, axis=0), 1.0)
        nbar = jnp.sum(ok * n, axis=0) / k
        s2_unbiased = var * n / jnp.maximum(n - 1.0, 1.0)
        within = jnp.sum(ok * s2_unbiased, axis=0) / k
        grand = jnp.sum(ok * mean, axis=0, keepdims=True) / k[None]  # same rank as mean
        between = jnp.sum(ok * (mean - grand) ** 2, axis=0) / jnp.maximum(k - 1.0, 1.0)
        var_plus = (nbar - 1.0) / nbar * within + between
        rhat = jnp.sqrt(var_plus / jnp.where(within > 0, within, jnp.nan))
        return Diagnostics(count, mean, var, rho, ess, rhat)

    return Statistic(init, update, finalize, "diagnostics")


# --------------------------------------------------------------------------- bounded samples


class Kept(NamedTuple):
    """A bounded sample of draws.

    Attributes:
        draws: ``(num_chains, k, ...)`` (chains first, like ``Run.samples``), each chain's
            in chronological order (oldest first); when fewer than ``k`` draws were seen only
            the first ``num_seen`` of them are filled.
        num_seen: the number of draws folded in.
        index: ``(k,)`` which draw (0-based, in the order folded in) each of the ``k`` is;
            -1 if empty.
    """

    draws: Any
    num_seen: Array
    index: Array


def keep_last(k: int, fn: Callable | None = None) -> Statistic:
    """The last ``k`` draws of every chain (of ``fn(draw)`` if given), in a ring buffer."""
    k = int(k)
    if k < 1:
        raise ValueError(f"keep_last needs k >= 1, got {k}")

    def init(draws):
        x = _apply(fn, draws)
        buffer = jax.tree_util.tree_map(lambda a: jnp.zeros((k,) + a.shape, a.dtype), x)
        return jnp.zeros((), jnp.int32), buffer

    def update(state, draws, healthy=None):
        del healthy  # diverged chains keep their frozen value; Run.diverged flags them
        n, buffer = state
        x = _apply(fn, draws)
        slot = n % k
        buffer = jax.tree_util.tree_map(
            lambda b, a: jax.lax.dynamic_update_index_in_dim(b, a.astype(b.dtype), slot, 0),
            buffer,
            x,
        )
        return n + 1, buffer

    def finalize(state):
        n, buffer = state
        start = jnp.where(n >= k, n % k, 0)
        draws = jax.tree_util.tree_map(lambda b: _swap(jnp.roll(b, -start, axis=0)), buffer)
        rows = jnp.arange(k, dtype=jnp.int32)
        index = jnp.where(n >= k, n - k + rows, jnp.where(rows < n, rows, -1))
        return Kept(draws, n, index)

    return Statistic(init, update, finalize, "keep_last")


def reservoir(k: int, seed: int | Array = 0, fn: Callable | None = None) -> Statistic:
    """``k`` draws per chain chosen uniformly at random among all draws (reservoir sampling).

    One random slot per draw is shared by all chains (so the kept draws are taken at the
    same times in every chain and the update is one slice write). ``seed`` is an int or a
    PRNG key; the result is returned in chronological order with each row's draw index.
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"reservoir needs k >= 1, got {k}")

    def init(draws):
        x = _apply(fn, draws)
        buffer = jax.tree_util.tree_map(lambda a: jnp.zeros((k,) + a.shape, a.dtype), x)
        key = seed if isinstance(seed, jax.Array) else jax.random.key(int(seed))
        return jnp.zeros((), jnp.int32), jnp.full((k,), -1, jnp.int32), buffer, key

    def update(state, draws, healthy=None):
        del healthy
        n, index, buffer, key = state
        x = _apply(fn, draws)
        j = jax.random.randint(jax.random.fold_in(key, n), (), 0, jnp.maximum(n + 1, 1))
        slot = jnp.where(n < k, n, j)
        take = slot < k
        slot = jnp.minimum(slot, k - 1)

        def write(b, a):
            row = jnp.where(
                take, a.astype(b.dtype), jax.lax.dynamic_index_in_dim(b, slot, 0, False)
            )
            return jax.lax.dynamic_update_index_in_dim(b, row, slot, 0)

        buffer = jax.tree_util.tree_map(write, buffer, x)
        index = jnp.where(take, index.at[slot].set(n), index)
        return n + 1, index, buffer, key

    def finalize(state):
        n, index, buffer, _ = state
        order = jnp.argsort(jnp.where(index < 0, jnp.iinfo(jnp.int32).max, index))
        draws = jax.tree_util.tree_map(lambda b: _swap(jnp.take(b, order, axis=0)), buffer)
        return Kept(draws, n, index[order])

    return Statistic(init, update, finalize, "reservoir")


# --------------------------------------------------------------------------- composition


def combine(statistics: StatisticsLike) -> Statistic:
    """Several statistics as one; its result has the structure given (list, tuple or dict).

    Example:
        >>> both = combine({"moments": mean_var(), "angles": histogram(angle)})
    """
    if isinstance(statistics, Statistic):
        return statistics
    if isinstance(statistics, Mapping):
        names = list(statistics)
        stats = [statistics[name] for name in names]
        rebuild = lambda values: dict(zip(names, values, strict=True))  # noqa: E731
    else:
        stats = list(statistics)
        rebuild = type(statistics) if isinstance(statistics, tuple) else list
    for s in stats:
        if not isinstance(s, Statistic):
            raise TypeError(f"expected bip.streaming statistics, got {type(s).__name__}")

    def init(draws):
        return tuple(s.init(draws) for s in stats)

    def update(state, draws, healthy=None):
        return tuple(s.update(st, draws, healthy) for s, st in zip(stats, state, strict=True))

    def finalize(state):
        return rebuild([s.finalize(st) for s, st in zip(stats, state, strict=True)])

    return Statistic(init, update, finalize, "+".join(s.name for s in stats))


def accumulate(statistic, draws, healthy: Array | None = None):
    """Fold stored draws ``(num_chains, num_draws, ...)`` (``Run.samples``' layout; a pytree
    of such arrays for a pytree ``observe``) into ``statistic`` and finalize.

    ``statistic`` may be anything ``combine`` takes; ``healthy`` is ``(num_chains,
    num_draws)`` or None. Useful offline and to check a statistic against NumPy.

    Example:
        >>> draws = jnp.arange(12.0).reshape(3, 4)          # 3 chains, 4 draws each
        >>> accumulate(mean_var(), draws).mean
        Array([1.5, 5.5, 9.5], dtype=float64)
    """
    stat = combine(statistic)
    draws = jax.tree_util.tree_map(_swap, draws)  # scanned draw by draw
    first = jax.tree_util.tree_map(lambda d: d[0], draws)
    num = jax.tree_util.tree_leaves(draws)[0].shape[0]
    if healthy is None:
        healthy = jnp.ones((num, _num_chains(first)), bool)
    else:
        healthy = _swap(healthy)

    @jax.jit
    def go(draws, healthy):
        def body(state, inputs):
            d, h = inputs
            return stat.update(state, d, h), None

        state, _ = jax.lax.scan(body, stat.init(first), (draws, healthy))
        return stat.finalize(state)

    return go(draws, healthy)
