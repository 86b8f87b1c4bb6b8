"""The figure notebooks run headless in fast mode, and the numbers they compute back the claims.

Each notebook runs, copied to a temporary folder outside the repository, in a fresh ``python3``
kernel (the venv's own interpreter: jupyter_client maps the kernel spec's ``python`` to
``sys.executable``) with ``BIP_FAST=1`` and ``MPLBACKEND=Agg``, and writes its TVs (36-bin angle
histograms) to the JSON file named by ``BIP_NOTEBOOK_RESULTS``.

Histogram noise: the TV between a 36-bin histogram of N exact draws and their law averages
0.053 / 0.043 / 0.033 / 0.024 for N = 2000 / 3000 / 5000 / 10^4 (sd 0.007 / 0.005 / 0.004 / 0.003).
Fast-mode sizes and values measured (2 shared cores):

- Fig. 2, circle: 5000 chains; standard Langevin TV to p_data 0.032, TS-1 (4 pooled draws)
  TV to uniform 0.016. Ellipse (sigma = 0.03): standard, 3000 chains, 0.030; TS-1, 1000 chains
  x 4 pooled draws (correlated: 0.5 time units apart), 0.049 (with 1500 chains and four other
  seeds: 0.032 to 0.036). TV(p_data, uniform) is 0.29 on both curves.
- Fig. 4 (5000 chains): reverse diffusion with the corrupted score 0.41 from p_data; TS-1
  from there 0.020 from uniform; reverse diffusion with the exact score 0.027 from p_data.

The bounds sit well above the noise floor plus what each run measured, and well below the
distance between the two targets, so they fail when a sampler goes to the wrong law.
"""

import json
import pathlib
import shutil

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
FIGURE_NOTEBOOKS = ["fig2_exact_scores.ipynb", "fig4_corrupted_score.ipynb"]


def _execute(name: str, tmp_path, monkeypatch) -> dict:
    """Run a copy of the notebook in a folder outside the repository (as a user who copied it
    out would): it may use only the installed ``bip`` (helpers in ``bip.notebook``, shipped
    priors and specs by name), no file beside it and no relative path."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    shutil.copy(NOTEBOOKS / name, folder / name)
    assert not folder.resolve().is_relative_to(NOTEBOOKS.parent)
    monkeypatch.chdir(folder)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    results = tmp_path / "results.json"
    monkeypatch.setenv("BIP_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("BIP_NOTEBOOK_RESULTS", str(results))
    monkeypatch.delenv("BIP_NOTEBOOK_FIGURES", raising=False)
    notebook = nbformat.read(folder / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute()
    assert results.exists(), f"{name} did not write its results"
    out = json.loads(results.read_text())
    assert out["fast"] is True
    return out


@pytest.mark.parametrize("name", FIGURE_NOTEBOOKS)
def test_notebooks_are_stored_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{name} is stored with outputs: clear them before committing"
            )


@pytest.mark.slow
def test_fig2_standard_langevin_keeps_p_data_and_ts1_gives_uniform(tmp_path, monkeypatch):
    tvs = _execute("fig2_exact_scores.ipynb", tmp_path, monkeypatch)["fig2"]
    for curve in ("circle", "ellipse"):
        std, ts1 = tvs[f"{curve}/std"], tvs[f"{curve}/ts1"]
        assert std["p_data"] < std["uniform"], (curve, std)
        assert std["p_data"] < 0.08, (curve, std)
        assert ts1["uniform"] < ts1["p_data"], (curve, ts1)
        assert ts1["uniform"] < 0.08, (curve, ts1)


@pytest.mark.slow
def test_fig4_corrupted_diffusion_misses_p_data_and_ts1_gives_uniform(tmp_path, monkeypatch):
    tvs = _execute("fig4_corrupted_score.ipynb", tmp_path, monkeypatch)["fig4"]
    assert tvs["rd_corrupted"]["p_data"] > 0.2, tvs["rd_corrupted"]
    assert tvs["ts1"]["uniform"] < 0.06, tvs["ts1"]
    assert tvs["ts1"]["finite_sigma_target"] < 0.06, tvs["ts1"]
    assert tvs["rd_exact"]["p_data"] < 0.06, tvs["rd_exact"]
