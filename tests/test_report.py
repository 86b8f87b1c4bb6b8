"""bip solve's report: the prior-fit check, raw vs denoised uncertainty, report.md, figure."""

import copy
import json
import stat

import numpy as np
import pytest

import bip.metrics
import bip.problems
import bip.solve

# small runs: the U-Net priors compile once per image size, alpha is a traced leaf
SMALL = dict(anneal_from=1.0, anneal_levels=5, steps_per_level=20, chains=8, steps=100, thin=10)


def _small(name: str, **changes) -> dict:
    spec = copy.deepcopy(bip.problems.load(f"problems/{name}.toml"))
    spec["sampler"].update(SMALL)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        spec[section][key] = value
    return spec


@pytest.fixture(scope="module")
def camera_spec(tmp_path_factory):
    """skimage's camera, 32x32 in [0, 1], deblurred with the phantom prior: a misfit."""
    from skimage import data, transform

    image = transform.resize(data.camera() / 255.0, (32, 32), anti_aliasing=True)
    path = tmp_path_factory.mktemp("camera") / "camera32.npy"
    np.save(path, image)
    spec = _small("deblur-phantom", prior__source="phantom32-unet")
    spec["data"] = {"source": "file", "path": str(path)}  # the phantom law's keys do not apply
    return spec


@pytest.fixture(scope="module")
def maxent_run(tmp_path_factory):
    """robustness-phantom (exact chart prior, 4-view CT of 16x16 phantoms), made
    maximum-entropy (alpha = 1), small, written out."""
    spec = copy.deepcopy(bip.problems.load("problems/robustness-phantom.toml"))
    spec["prior"].update(kind="maxent", alpha=1.0)
    spec["sampler"].update(chains=8, steps=100, thin=10)
    out = tmp_path_factory.mktemp("runs") / "maxent"
    return out, bip.solve.solve(spec, out, progress=False)


@pytest.mark.slow
def test_prior_fit_flags_camera_under_the_phantom_prior(camera_spec):
    report = bip.solve.solve(camera_spec, progress=False)
    fit = report["prior_fit"]
    assert not fit["ok"], fit
    assert fit["value"] > fit["threshold"] > fit["reference_range"][1], fit
    assert "PRIOR DOES NOT FIT THE DATA" in fit["message"] and "phantom32-unet" in fit["message"]
    assert report["raw"]["psnr"] < 20.0  # the estimate is indeed poor


@pytest.mark.slow
def test_prior_fit_passes_on_shipped_specs_generic_and_maxent(maxent_run):
    generic = bip.solve.solve(_small("deblur-digits"), progress=False)
    _, maxent = maxent_run
    for report in (generic, maxent):
        fit = report["prior_fit"]
        assert fit["ok"] and fit["value"] < fit["reference_range"][1], fit
    assert generic["prior_fit"]["statistic"].endswith("of the posterior mean")
    assert maxent["prior_fit"]["statistic"].endswith("of the denoised posterior mean")


@pytest.mark.slow
def test_maxent_raw_intervals_flagged_denoised_ones_tighter(maxent_run):
    _, report = maxent_run
    raw, denoised = report["raw"], report["denoised"]
    assert denoised["level"] == pytest.approx(0.05**0.5)
    # the raw draws' white normal spread (about 0.22 a pixel) covers every pixel
    assert raw["coverage_90"] == 1.0 and raw["coverage_note"].startswith("intervals too wide")
    assert raw["mean_std"] == pytest.approx(0.05**0.5, rel=0.1)
    assert denoised["coverage_90"] < raw["coverage_90"]
    assert denoised["mean_std"] < 0.2 * raw["mean_std"]
    assert denoised["psnr"] > raw["psnr"] + 5.0


def test_coverage_note_thresholds():
    assert bip.metrics.coverage_note(1.0).startswith("intervals too wide: 1.00")
    assert bip.metrics.coverage_note(0.99).startswith("intervals too wide")
    assert bip.metrics.coverage_note(0.98) == "ok"
    assert bip.metrics.coverage_note(0.46) == "ok"
    assert bip.metrics.coverage_note(0.44).startswith("intervals too narrow")


def test_misfit_and_its_reference_range():
    residual = np.array([0.1, -0.1, 0.2, 0.0])
    assert bip.metrics.misfit(residual, 0.1) == pytest.approx((1 + 1 + 4 + 0) / 4)
    t = bip.metrics.misfit(residual, 0.1, df=3.0)
    assert t == pytest.approx(np.mean(4 * np.log1p(np.array([1, 1, 4, 0]) / 3)))
    lo, hi = bip.metrics.misfit_range(1024, 0.05)
    # chi2_1024 / 1024: central 99% from scipy
    from scipy.stats import chi2

    assert lo == pytest.approx(chi2.ppf(0.005, 1024) / 1024, abs=0.01)
    assert hi == pytest.approx(chi2.ppf(0.995, 1024) / 1024, abs=0.01)


@pytest.mark.slow
def test_report_md_explains_every_key_and_outputs_are_0644(maxent_run):
    out, report = maxent_run
    missing = [k for k in bip.solve.report_keys(report) if bip.solve.explain(k) is None]
    assert not missing, missing
    on_disk = json.loads((out / "report.json").read_text())
    text = (out / "report.md").read_text()
    for key in bip.solve.report_keys(on_disk):
        assert f"`{key}`" in text, key
    assert "(not documented)" not in text
    assert "`denoised.coverage_90` = " in text and "`prior_fit.ok` = True" in text
    # the classical baselines, TV among them, in report.json, report.md and the figure (a third
    # row of panels: 8 of the posterior and 4 baselines; 2 rows are about 720 px at 120 dpi)
    assert sorted(on_disk["baselines"]) == ["fbp", "tikhonov", "tv", "wiener"]
    assert "`baselines.tv.psnr` = " in text and "`baselines.fbp.psnr_by_filter.ramp` = " in text
    import matplotlib.image

    assert matplotlib.image.imread(out / "figure.png").shape[0] > 960
    for name in ("figure.png", "report.json", "report.md", "samples.npz"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    with np.load(out / "samples.npz") as saved:
        assert saved["std_denoised"].shape == saved["std"].shape == (16, 16)


def test_sinogram_and_image_panels_are_labelled_with_colour_bars():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import bip.plots

    fig, (a, b) = plt.subplots(1, 2)
    angles = np.linspace(0.0, 180.0, 16, endpoint=False)
    im = bip.plots.sinogram_panel(a, np.ones((32, 16)), angles)
    assert a.get_xlabel() == "angle (degrees)" and a.get_ylabel() == "detector bin"
    # cells centred on the angles (11.25 degrees apart) and on the 32 detector bins
    np.testing.assert_allclose(im.get_extent(), [-5.625, 174.375, 31.5, -0.5])
    assert a.get_aspect() == pytest.approx(11.25)  # one square cell per measured value
    bip.plots.image_panel(b, np.eye(4), "identity")
    assert len(fig.axes) == 4  # two panels, two colour bars
    with pytest.raises(ValueError, match="sinogram must be"):
        bip.plots.sinogram_panel(a, np.ones((32, 15)), angles)
    plt.close(fig)
