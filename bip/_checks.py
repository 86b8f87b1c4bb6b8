"""Argument checks shared by the public API.

Each check raises a ``ValueError`` (or ``TypeError``) whose message names the offending
argument. Checks only look at concrete values: inside ``jit`` the arguments are tracers and
the checks are skipped, so validated functions stay traceable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np


def is_concrete(value) -> bool:
    """True when ``value`` holds data (not a JAX tracer), so it can be checked."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value))


def positive(name: str, value) -> None:
    """Raise if a concrete ``value`` has an entry that is not finite and > 0."""
    if value is None or not is_concrete(value):
        return
    arr = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if not np.all(arr > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")


def nonnegative(name: str, value) -> None:
    """Raise if a concrete ``value`` has an entry that is not finite and >= 0."""
    if value is None or not is_concrete(value):
        return
    arr = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(arr)) or not np.all(arr >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")


def finite(name: str, value) -> None:
    """Raise if a concrete array has a NaN or infinite entry."""
    if value is None or not is_concrete(value):
        return
    arr = np.asarray(value)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} has {bad} non-finite (NaN or inf) entries")


def alpha(value) -> None:
    """The tempering exponent must lie in [0, 2) (SCIENCE.md section 3)."""
    if value is None or not is_concrete(value):
        return
    arr = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(arr)) or not np.all((arr >= 0) & (arr < 2)):
        raise ValueError(f"alpha must lie in [0, 2), got {value!r}")


def event_shape(name: str, x, shape: Sequence[int]) -> None:
    """Raise unless the trailing axes of ``x`` are exactly ``shape``."""
    shape = tuple(shape)
    xs = tuple(np.shape(x))
    k = len(shape)
    if len(xs) < k or xs[len(xs) - k :] != shape:
        raise ValueError(
            f"{name} must have trailing shape {shape} (batch axes first), got shape {xs}"
        )


def integer(name: str, value, minimum: int = 1) -> int:
    """Return ``value`` as an int, raising unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not float(value).is_integer() or not math.isfinite(value):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
