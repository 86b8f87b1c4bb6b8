"""The host loop over jitted chunks that makes long runs stoppable with Ctrl-C.

``bip.chains.run`` advances all chains by a traced number of steps per call of one compiled
program, and ``drive`` calls it from the host in chunks of about a second (``_Pacer``),
one chunk dispatched ahead of the one being collected. Between chunks a Ctrl-C (SIGINT)
stops the loop: ``Interrupted`` (a ``KeyboardInterrupt``) carries the partial result; a
second Ctrl-C aborts at once. In a multi-process run (``jax.distributed``) the processes
agree on every chunk (``_agree``).

Example:
    >>> try:
    ...     result = bip.samplers.run(key, algo, x0, 10**7, thin=100)
    ... except bip.hostloop.Interrupted as stop:
    ...     result = stop.partial        # result.complete is False
"""

from __future__ import annotations

import collections
import signal
import sys
import threading
import time
from typing import Any

import jax
import numpy as np

__all__ = ["Interrupted"]


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


class Bar:
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


def note_compile(program, args, enabled: bool, what: str) -> None:
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


def drive(advance, carry, total: int, plan, *, collect=None, chunk_size=None, bar=None):
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
