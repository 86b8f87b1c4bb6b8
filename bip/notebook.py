"""Settings shared by the notebooks: full (paper) or fast mode, and where their results go.

The notebooks import only the installed package, so they run from any folder (copied out of
``notebooks/`` too). ``BIP_FAST=1`` in the environment selects the fast mode (fewer chains and
steps; what the test suite runs). ``record(results)`` prints one ``RESULT {json}`` line and,
when ``BIP_NOTEBOOK_RESULTS`` names a file, writes the same JSON there (the tests read it and
check the claims). ``show(fig, name)`` shows a figure and, when ``BIP_NOTEBOOK_FIGURES`` names a
folder, also saves it there as ``name.png``.

Example:
    >>> from bip.notebook import fast_mode, pick
    >>> chains = pick(full=10_000, fast=2_000)  # 2000 when BIP_FAST=1
"""

from __future__ import annotations

import json
import os
from typing import Any, TypeVar

T = TypeVar("T")


def fast_mode() -> bool:
    """Whether ``BIP_FAST`` selects the fast mode (set and not ``0``/``false``/``no``/empty).

    Example:
        >>> os.environ["BIP_FAST"] = "1"; fast_mode()
        True
    """
    return os.environ.get("BIP_FAST", "0").strip().lower() not in ("", "0", "false", "no")


def pick(full: T, fast: T) -> T:
    """``fast`` in fast mode, ``full`` otherwise.

    Example:
        >>> os.environ["BIP_FAST"] = "0"; pick(full=5000, fast=500)
        5000
    """
    return fast if fast_mode() else full


def record(results: dict[str, Any]) -> None:
    """Print ``RESULT {json}`` (with ``"fast"``) and write it to ``$BIP_NOTEBOOK_RESULTS`` if set.

    Example:
        >>> os.environ.pop("BIP_NOTEBOOK_RESULTS", None); os.environ["BIP_FAST"] = "1"
        >>> record({"tv": 0.03})
        RESULT {"fast": true, "tv": 0.03}
    """
    text = json.dumps({"fast": fast_mode(), **results}, sort_keys=True)
    print("RESULT " + text)
    path = os.environ.get("BIP_NOTEBOOK_RESULTS")
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")


def show(fig, name: str) -> None:
    """``plt.show()``, and save ``fig`` to ``$BIP_NOTEBOOK_FIGURES/name.png`` if that is set.

    Example:
        >>> import matplotlib.pyplot as plt
        >>> show(plt.figure(), "empty")  # shown inline in Jupyter; saved when asked
    """
    import matplotlib.pyplot as plt

    folder = os.environ.get("BIP_NOTEBOOK_FIGURES")
    if folder:
        os.makedirs(folder, exist_ok=True)
        fig.savefig(os.path.join(folder, name + ".png"), dpi=110)
    plt.show()
