"""The memory guard: what a run keeps, refused before compiling when it exceeds the memory.

Example:
    >>> bip.memory.estimate_memory(1000, 100, (32, 32), jnp.float64) / 1e9   # GB
    0.851968
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from bip import _checks

__all__ = ["MemoryBudgetError", "estimate_memory", "available_memory", "check_memory"]


class MemoryBudgetError(ValueError):
    """A run would keep more than the available memory (``check_memory``)."""


STATE_COPIES = 4  # position, proposal, drift and noise of every chain live at once


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
    return num_chains * (kept + STATE_COPIES * per_chain)


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
    return refuse_if_over(estimate, what, available)


def refuse_if_over(estimate: int, what: str, available: int | None) -> int:
    available = available_memory() if available is None else int(available)
    if available is not None and estimate > available:
        raise MemoryBudgetError(
            f"the run would keep about {estimate / 1e9:.1f} GB ({what}, plus the chain state) "
            f"but {available / 1e9:.1f} GB of memory is available: thin more (fewer kept "
            "draws), keep_samples=False with streaming statistics (bip.streaming), or fewer "
            "chains"
        )
    return estimate
