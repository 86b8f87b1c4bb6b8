"""The README's Python examples run as written, in their own precision, and print what the
README says they print; its quickstart has exactly two commands.

Each example runs in a fresh interpreter (the test session's x64 switch must not leak into
an example: the README states the precision each one uses).
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def _run(block: str, cwd) -> str:
    done = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, timeout=600, cwd=cwd
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_quickstart_is_two_commands():
    section = README.split("## Quickstart", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) == 2
    assert "pytest" in lines[1] and "bip " in lines[0]


def test_every_example_states_its_precision():
    assert len(BLOCKS) >= 3
    for block in BLOCKS:
        if "jax" in block and "bip.samplers.run" not in block:  # (the sharding example
            assert "jax_enable_x64" in block, block[:200]  # is precision-agnostic)


def test_operator_example_prints_what_the_readme_says(tmp_path):
    block = next(b for b in BLOCKS if "from_function(finite_difference" in b)
    lines = _run(block, tmp_path).splitlines()
    assert lines[0] == "(16, 15)"
    assert float(lines[1]) < 1e-13  # "~1e-16": float64, as the example sets
    assert abs(float(lines[2]) - 2.0) < 0.05  # "~2"


@pytest.mark.slow
def test_other_examples_run(tmp_path):
    for block in BLOCKS:
        if "from_function(finite_difference" in block or "multihost" in block:
            continue
        _run(block, tmp_path)
