"""A typed, frozen TOML schema: sections are frozen dataclasses, one validator walks them.

A section (``Section`` subclass, ``@dataclass(frozen=True, kw_only=True)``) declares its keys as
fields: the annotation is the type (``int``, ``float``, ``str``, ``bool``, ``tuple[int, ...]``
and the like for TOML arrays, ``X | None`` for a default computed later, or another
``Section`` for a sub-table), the default is the default (none: the key is required), and
``key(...)`` adds the allowed range (``check``), the allowed values (``choices``) and the
allowed list lengths (``length``). ``parse(cls, raw, origin)`` checks a parsed TOML table
against it: unknown keys, missing required keys, types, ranges and choices, then the section's
own cross-key rules (``Section.resolve``), and raises ``SpecError`` naming the file, the
section and the key (``spec.toml: [noise] std: must be > 0, got -0.3``). ``to_dict`` gives
the plain TOML-shaped dict back (``parse(cls, x.to_dict()) == x``) and ``to_toml`` its text.

Example:
    >>> @dataclasses.dataclass(frozen=True, kw_only=True)
    ... class Noise(Section):
    ...     std: float = key(check=">0")
    ...     kind: str = key("gaussian", choices=("gaussian", "student_t"))
    >>> parse(Noise, {"std": 0.3}, "x.toml", "noise")
    Noise(std=0.3, kind='gaussian')
    >>> parse(Noise, {"std": -1}, "x.toml", "noise")
    Traceback (most recent call last):
    bip.schema.SpecError: x.toml: [noise] std: must be > 0, got -1.0
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

S = TypeVar("S", bound="Section")


class SpecError(ValueError):
    """A spec or recipe with an unknown key or a bad value.

    The message names the file, the section and the key; ``origin``, ``section`` and ``key``
    hold them (``section`` is ``""`` for a top-level key).
    """

    def __init__(self, origin: str, section: str = "", key: str = "", message: str | None = None):
        self.origin, self.section, self.key = origin, section, key
        where = f"[{section}] {key}" if section and key else (f"[{section}]" if section else key)
        if message is None:  # SpecError(text): a whole message
            super().__init__(origin)
        else:
            super().__init__(f"{origin}: {where}: {message}" if where else f"{origin}: {message}")


# range checks: name -> (test, what the value must be: "> 0", "in [0, 2)")
CHECKS: dict[str, tuple[Callable[[float], bool], str]] = {
    ">0": (lambda v: math.isfinite(v) and v > 0, "> 0"),
    ">=0": (lambda v: math.isfinite(v) and v >= 0, ">= 0"),
    ">=1": (lambda v: v >= 1, ">= 1"),
    ">=2": (lambda v: v >= 2, ">= 2"),
    ">=8": (lambda v: v >= 8, ">= 8"),
    "finite": (math.isfinite, "finite"),
    "[0,1]": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "[0,1)": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "[0,2)": (lambda v: 0 <= v < 2, "in [0, 2)"),
}
_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_PLURALS = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}


def key(
    default: Any = dataclasses.MISSING,
    *,
    check: str | None = None,
    choices: tuple | None = None,
    length: tuple[int, int | None] | None = None,
) -> Any:
    """A schema key: ``default`` (none: required), ``check`` (a ``CHECKS`` name, for every
    entry of a list), ``choices`` (the allowed values), ``length`` (``(min, max)`` entries of
    a list, ``max`` None: unbounded)."""
    meta = {"check": check, "choices": choices, "length": length}
    return dataclasses.field(default=default, metadata=meta)


def show(value: Any) -> str:
    """A value as TOML writes it (``"a"``, ``true``, ``[1, 2.5]``)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {show(v)}" for k, v in value.items()) + "}"
    return repr(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Section:
    """A TOML table as a frozen dataclass (see the module docstring).

    ``ALIASES`` maps an old key name to its field (read, never written back).
    """

    ALIASES: ClassVar[dict[str, str]] = {}

    def used(self) -> frozenset[str] | None:
        """The keys that apply given the other values (None: all); another given key is an
        error and ``to_dict`` leaves the others out."""
        return None

    def resolve(self, given: frozenset[str], fail: Callable[[str, str], None]) -> Section:
        """Cross-key rules and computed defaults: ``given`` are the keys the table set;
        ``fail(key, message)`` raises the ``SpecError``. Returns the completed section."""
        return self

    def to_dict(self) -> dict[str, Any]:
        """The plain TOML-shaped dict (lists for arrays; keys that do not apply or are None
        left out)."""
        used = self.used()
        out = {}
        for f in _fields(type(self)):
            value = getattr(self, f.name)
            if value is None or (used is not None and f.name not in used):
                continue
            if isinstance(value, Section):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def to_toml(self) -> str:
        """The section as TOML text (sub-tables after the plain keys)."""
        plain, tables = [], []
        for name, value in self.to_dict().items():
            if isinstance(value, dict):
                tables += ["", f"[{name}]"] + [f"{k} = {show(v)}" for k, v in value.items()]
            else:
                plain.append(f"{name} = {show(value)}")
        return "\n".join(plain + tables).strip("\n") + "\n"


@functools.cache
def _fields(cls: type) -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.metadata.get("key", True))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (hint, False)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Section)


def _scalar(tp: type, value: Any) -> tuple[bool, Any]:
    if tp is bool:
        return isinstance(value, bool), value
    if isinstance(value, bool):
        return False, value
    if tp is float:
        ok = isinstance(value, int | float)
        return ok, float(value) if ok else value
    return isinstance(value, tp), value


def _value(hint: Any, value: Any, meta: Mapping[str, Any]) -> tuple[Any, str | None]:
    """(the checked value, None) or (value, the message after the key)."""
    tp, _ = _optional(hint)
    check = CHECKS.get(meta.get("check")) if meta.get("check") else None
    choices = meta.get("choices")
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        lo, hi = meta.get("length") or (0, None)
        size = {(0, None): "list of", (1, None): "non-empty list of", (1, 2): "list of 1 or 2"}.get(
            (lo, hi), f"list of {lo}"
        )
        need = f" {check[1]}" if check else ""
        need = f" from {', '.join(choices)}" if choices else need
        message = f"must be a {size} {_PLURALS[inner]}{need}, got {show(value)}"
        if not isinstance(value, list | tuple) or not lo <= len(value) <= (hi or len(value)):
            return value, message
        out = []
        for v in value:
            ok, v = _scalar(inner, v)
            if not ok or (check and not check[0](v)) or (choices and v not in choices):
                return value, message
            out.append(v)
        return tuple(out), None
    ok, value = _scalar(tp, value)
    if not ok:
        return value, f"must be {_NAMES[tp]}, got {show(value)}"
    if choices is not None and value not in choices:
        return value, f"must be one of {', '.join(map(str, choices))}, got {show(value)}"
    if check is not None and not check[0](value):
        verb = "lie" if check[1].startswith("in ") else "be"
        return value, f"must {verb} {check[1]}, got {show(value)}"
    return value, None


def parse(cls: type[S], raw: Any, origin: str, section: str = "") -> S:
    """Check the table ``raw`` against the section ``cls`` and return it with the defaults
    filled in; ``SpecError`` names ``origin``, ``section`` and the key on the first problem.
    ``None`` values count as not given (a dict from ``to_dict`` may hold them)."""

    def fail(name: str, message: str) -> None:  # name: a key, or "table.key" below this one
        table, _, name = name.rpartition(".")
        raise SpecError(origin, _sub(section, table) if table else section, name, message)

    if isinstance(raw, Section):
        raw = raw.to_dict()
    if not isinstance(raw, Mapping):
        raise SpecError(origin, "", section, f"must be a table, got {show(raw)}")
    fields = {f.name: f for f in _fields(cls)}
    hints = _hints(cls)
    written = {}  # field -> the key as written (an alias names the old key in errors)
    for name, value in raw.items():
        target = cls.ALIASES.get(name, name)
        if target not in fields:
            known = [n for n in fields if not _is_section(_optional(hints[n])[0])]
            known += [f"[{n}]" for n in fields if _is_section(_optional(hints[n])[0])]
            fail(name, f"unknown key (known keys: {', '.join(known)})")
        if target in written:
            fail(name, f"given twice (as {written[target]!r} and {name!r})")
        if value is not None:
            written[target] = name
    values = {}
    for name, f in fields.items():
        tp, _ = _optional(hints[name])
        if name not in written:
            if _is_section(tp) and f.default is dataclasses.MISSING:
                values[name] = parse(tp, {}, origin, _sub(section, name))
            elif f.default is dataclasses.MISSING:
                fail(name, "is required")
            continue
        value = raw[written[name]]
        if _is_section(tp):
            values[name] = parse(tp, value, origin, _sub(section, name))
            continue
        value, message = _value(hints[name], value, f.metadata)
        if message is not None:
            fail(written[name], message)
        values[name] = value
    out = cls(**values)
    used = out.used()
    if used is not None:
        for name in written:
            if name not in used:
                allowed = ", ".join(n for n in fields if n in used)
                fail(written[name], f"is not used here (allowed keys: {allowed})")
    return out.resolve(frozenset(written), fail)


def _sub(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name


def where(default: Any) -> Any:
    """A non-key attribute of a section (where it was read from): not a TOML key, not
    compared, set by ``located`` and kept by ``dataclasses.replace``."""
    return dataclasses.field(default=default, compare=False, repr=False, metadata={"key": False})


def located(section: S, **attributes: Any) -> S:
    """``section`` with its non-key attributes (``where``) set; the keys stay as validated."""
    return dataclasses.replace(section, **attributes)
