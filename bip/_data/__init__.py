"""Where the data shipped with bip lives: trained priors and canonical problem specs.

The repository keeps them in top-level ``priors/`` and ``problems/`` folders; the wheel ships
the same files as package data inside this package (``bip/_data/priors/``,
``bip/_data/problems/``; ``pyproject.toml`` maps the two folders here). ``shipped`` returns
the installed copy when there is one, and the checkout's folder otherwise (an editable
install, or ``import bip`` from the repository root).

Example:
    >>> from bip._data import shipped
    >>> sorted(p.name for p in shipped("problems").glob("circle-*.toml"))
    ['circle-toy.toml']
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

KINDS = ("priors", "problems")
"""The shipped folders."""


def shipped(kind: str) -> Path:
    """The folder of shipped ``kind`` (``"priors"`` or ``"problems"``).

    Package data first (a wheel or ``pip install .``), then the repository checkout that
    ``bip`` was imported from.

    Raises:
        ValueError: ``kind`` is not one of ``KINDS``.
        FileNotFoundError: neither location holds the folder (both are named).

    Example:
        >>> shipped("priors").name
        'priors'
    """
    if kind not in KINDS:
        raise ValueError(f"unknown shipped data {kind!r}: use one of {KINDS}")
    package = Path(str(importlib.resources.files(__name__)))
    candidates = (package / kind, package.parent.parent / kind)
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise FileNotFoundError(
        f"bip's shipped {kind} are missing: neither {candidates[0]} (package data) nor "
        f"{candidates[1]} (repository checkout) exists; reinstall bip"
    )
