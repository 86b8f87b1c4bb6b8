"""The robustness notebook runs headless in fast mode and shows the rate separation."""

import pytest
from test_notebooks import _execute

EXPECTED = {"0.0": 0.0, "1.0": -1.0, "1.5": -1.5}


@pytest.mark.slow
def test_robustness_notebook_slopes(tmp_path, monkeypatch):
    out = _execute("robustness.ipynb", tmp_path, monkeypatch)
    for label in ("prior", "posterior"):
        for alpha, slope in EXPECTED.items():
            assert out[label]["slope_exact"][alpha] == pytest.approx(slope, abs=0.25)
            # two sigmas, 300 chains: a rough check that sampling sees the same separation
            assert out[label]["slope_sampled"][alpha] == pytest.approx(slope, abs=0.5)
