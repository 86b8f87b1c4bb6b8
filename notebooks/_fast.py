"""Settings shared by the notebooks: full (paper) or fast mode, and where results go.

``BIP_FAST=1`` in the environment selects the fast mode (fewer chains and steps; what the
test suite runs). ``record(results)`` prints one ``RESULT {json}`` line and, when
``BIP_NOTEBOOK_RESULTS`` names a file, writes the same JSON there (``tests/test_notebooks.py``
reads it and checks the claims). ``show(fig, name)`` shows a figure and, when
``BIP_NOTEBOOK_FIGURES`` names a folder, also saves it there as ``name.png``.
"""

from __future__ import annotations

import json
import os

FAST = os.environ.get("BIP_FAST", "0").strip().lower() not in ("", "0", "false", "no")


def pick(full, fast):
    """``fast`` in fast mode, ``full`` otherwise."""
    return fast if FAST else full


def record(results: dict) -> None:
    """Print ``RESULT {json}`` and write the JSON to ``$BIP_NOTEBOOK_RESULTS`` if set."""
    results = {"fast": FAST, **results}
    text = json.dumps(results, sort_keys=True)
    print("RESULT " + text)
    path = os.environ.get("BIP_NOTEBOOK_RESULTS")
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")


def show(fig, name: str) -> None:
    """``plt.show()``, and save ``fig`` to ``$BIP_NOTEBOOK_FIGURES/name.png`` if that is set."""
    import matplotlib.pyplot as plt

    folder = os.environ.get("BIP_NOTEBOOK_FIGURES")
    if folder:
        os.makedirs(folder, exist_ok=True)
        fig.savefig(os.path.join(folder, name + ".png"), dpi=110)
    plt.show()
