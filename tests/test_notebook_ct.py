"""``notebooks/ct.ipynb`` runs headless in fast mode, and its numbers back the CT claims.

Fast mode: 32x32 phantoms of two ellipses (``bip.ellipses.grid_manifold(2, 32)``), 30
parallel-beam views, noise 1% of the sinogram's maximum, the exact-chart prior; FBP and TV
chosen on 4 validation phantoms; 4 chains of 200 + 400 steps at c = 0.5; the rate-separation
sweep at sigma = 0.05, 0.025 with 4 error sizes and one coupled chain each. Measured (loaded
2 cores, warm compilation cache: 33 CPU-s, 57 s wall): FBP 35.91 dB, TV 39.80, posterior mean
57.88 (denoised draws; the 4 chain means lie within about 1 dB of one another); 90% coverage
0.857 (denoised), 0.993 (raw); split R-hat median 1.11; eps* generic 2700 / 2322 (slope 0.22),
maximum-entropy 71237 / 141440 (slope -0.99), 61x the generic's at sigma = 0.025 (1/sigma = 40).
Full-mode (128x128, 4 ellipses) numbers are in the notebook's markdown and the README.
"""

import pytest
from test_notebooks import NOTEBOOKS, _execute


@pytest.mark.slow
def test_ct_notebook(tmp_path, monkeypatch):
    out = _execute("ct.ipynb", tmp_path, monkeypatch)
    post = out["posterior"]
    assert out["size"] == 32 and out["dot_test"] < 1e-12, out
    # the baselines at their validated best: TV above FBP (measured +3.9 dB)
    assert out["tv_psnr"] >= out["fbp_psnr"] + 2.0, out
    # the exact prior knows the law: the posterior mean is far above both (measured +18 dB over
    # TV; chain-to-chain spread of the PSNR about 1 dB)
    assert post["psnr"] >= out["tv_psnr"] + 10.0, out
    assert post["diverged"] == 0, post
    # denoised draws: near-calibrated intervals (measured 0.857 at 90%, 0.46 at 50%, from 4 x 40
    # correlated draws, R-hat 1.11); the raw draws' white noise (std sigma) over-covers (0.993)
    assert 0.75 <= post["coverage"]["0.9"] <= 0.97, post
    assert 0.3 <= post["coverage"]["0.5"] <= 0.7, post
    assert post["raw_coverage"]["0.9"] >= 0.97, post
    covered = [post["coverage"][level] for level in sorted(post["coverage"], key=float)]
    assert covered == sorted(covered), post
    assert post["rhat_median"] < 1.3, post  # not mixed to 1.05 in fast mode; a stuck chain fails
    # rate separation: generic eps* flat, maximum-entropy ~ sigma^-1, far apart at sigma = 0.025
    sweep = out["sweep"]
    assert sweep["slope"]["0.0"] == pytest.approx(0.0, abs=0.35), sweep
    assert sweep["slope"]["1.0"] == pytest.approx(-1.0, abs=0.35), sweep
    assert sweep["slope"]["1.0"] <= sweep["slope"]["0.0"] - 0.7, sweep
    assert sweep["ratio_0.025"] >= 10.0, sweep


def test_ct_notebook_is_stored_without_outputs():
    import nbformat

    notebook = nbformat.read(NOTEBOOKS / "ct.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
