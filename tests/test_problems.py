"""Problem specs: validation with clear errors, and `bip solve` end to end (atomic output)."""

import json
from pathlib import Path

import numpy as np
import pytest

from bip import cli, metrics, problems, solve

CIRCLE_SPEC = """
name = "t"
[data]
source = "circle"
kappa = 4.0
loc = 3.141592653589793
[operator]
kind = "coordinate_projection"
coordinates = [0]
[noise]
std = 0.3
[prior]
kind = "{kind}"
alpha = 1.0
[sampler]
sigma = 0.1
chains = 2000
steps = 4000
thin = 500
burn_in = 1000
"""


def _write(tmp_path, text, name="spec.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("kind", ["generic", "maxent"])
def test_solve_circle_matches_exact_posterior_and_writes_outputs(tmp_path, kind):
    spec = _write(tmp_path, CIRCLE_SPEC.format(kind=kind))
    out = tmp_path / "out"
    assert cli.main(["solve", str(spec), "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["tv_to_exact_posterior"] < 0.05
    assert report["alpha"] == (1.0 if kind == "maxent" else 0.0)
    assert report["diverged_chains"] == 0 and report["rhat_max"] < 1.1
    assert report["mixing"] == "ok"
    data = np.load(out / "samples.npz")
    assert data["samples"].shape == (2000, 8, 2)  # (chains, draws, 2)
    meta = json.loads(str(data["metadata"]))
    assert meta["spec"]["prior"]["kind"] == kind and "jax" in meta["versions"]
    assert (out / "figure.png").stat().st_size > 5000
    # an existing output directory is not clobbered without --overwrite
    with pytest.raises(FileExistsError):
        solve.solve(str(spec), out, progress=False)
    assert not list(tmp_path.glob(".out.partial-*"))


def test_mixing_note_warns_on_unmixed_chains():
    # 4 chains x 200 draws of 5 coordinates; coordinate 2: every chain sits at its own level
    draws = np.random.default_rng(0).normal(size=(200, 4, 5)).swapaxes(0, 1)
    draws[..., 2] += 10.0 * np.arange(4)[:, None]
    rhat = metrics.split_rhat(draws)
    assert rhat[2] > 2.5 and np.all(np.delete(rhat, 2) < 1.05)  # rank-normalised: bounded
    note = metrics.mixing_note(float(rhat.max()), float(np.median(rhat)), 200)
    assert note.startswith(f"mostly mixed: median R-hat {np.median(rhat):.2f}")
    assert f"up to {rhat.max():.2f}" in note and "noisy itself" not in note
    draws[..., :4] += 10.0 * np.arange(4)[:, None, None]  # now 4 of the 5 disagree
    rhat = metrics.split_rhat(draws)
    assert metrics.mixing_note(float(rhat.max()), float(np.median(rhat)), 200).startswith(
        "NOT MIXED"
    )
    assert "only 10 draws a chain" in metrics.mixing_note(2.0, 1.5, 10)
    assert metrics.mixing_note(1.05, 1.01, 10) == "ok"
    assert metrics.mixing_note(float("nan"), float("nan"), 2).startswith("not assessed")


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda t: t.replace("[noise]", "[noise]\nlevel = 2"), r"\[noise\] level: unknown key"),
        (lambda t: t + "\n[extra]\nx = 1\n", "extra: unknown key"),
        (
            lambda t: t.replace('source = "circle"', 'source = "mars"'),
            r"\[data\] source: must be one of",
        ),
        (lambda t: t.replace("std = 0.3", "std = -0.3"), r"\[noise\] std: must be > 0, got -0.3"),
        (
            lambda t: t.replace("alpha = 1.0", "alpha = 2.0"),
            r"\[prior\] alpha: must lie in \[0, 2\)",
        ),
        (
            lambda t: t.replace("sigma = 0.1", 'sigma = "small"'),
            r"\[sampler\] sigma: must be a number, got \"small\"",
        ),
        (lambda t: t.replace('name = "t"', ""), "bad.toml: name: is required"),
        (
            lambda t: t.replace('kind = "coordinate_projection"', 'kind = "fourier"'),
            r"\[operator\] kind: must be one of",
        ),
    ],
)
def test_bad_specs_name_the_file_and_key(tmp_path, edit, match):
    spec = _write(tmp_path, edit(CIRCLE_SPEC.format(kind="maxent")), "bad.toml")
    with pytest.raises(problems.SpecError, match=match) as info:
        problems.load(spec)
    assert "bad.toml" in str(info.value)


def test_unknown_spec_file_and_unknown_prior(tmp_path, capsys):
    assert cli.main(["solve", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    spec = _write(
        tmp_path,
        CIRCLE_SPEC.format(kind="maxent").replace("[prior]", '[prior]\nsource = "no-such-prior"'),
    )
    with pytest.raises((ValueError, FileNotFoundError), match="no-such-prior"):
        solve.solve(str(spec), tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_shipped_specs_validate():
    from pathlib import Path

    specs = sorted((Path(__file__).resolve().parent.parent / "problems").glob("*.toml"))
    assert specs
    for path in specs:
        problems.load(path)


# --------------------------------------------------------------------------- imaging specs

PROBLEMS = Path(__file__).resolve().parent.parent / "problems"
# Solved here with the spec's data, operator, noise, prior and step factor, and (but for
# inpaint-digits) a fifth to a half of its sampler steps (SHORTER: the same number of kept
# draws), so that the run stays under 10 minutes on 2 cores (as shipped, ct-phantom-16 alone
# took 140 s of the suite). `python -m bench.specs_table` solves every spec as shipped and
# prints the README's table. The other image specs are solved elsewhere in the suite:
# deblur-digits and ct-phantom-16-learned are the problems of notebooks/imaging.ipynb (same
# truth, operator, noise and prior, fewer chains; its test asserts the same margins over the
# best baseline), robustness-phantom is the zero-error cell of the imaging rate-separation
# notebook (tests/test_notebook_imaging.py) and of tests/test_report.py. The exact-chart spec
# specs at 128 and 256 px (ct-ellipses-128-exact, ct-shepp-256) cost minutes per solve (0.7-1.4
# CPU-s per score of 8 images at 128 px, bench/bench_ellipses.py): tests/test_ellipses.py loads
# them as shipped and builds their laws at 24 px.
SHORTER = {
    "ct-phantom-16.toml": dict(steps_per_level=20, steps=300, thin=15),
    "ct-phantom-8.toml": dict(steps_per_level=25, steps=150, thin=15),
    "deblur-phantom.toml": dict(steps_per_level=25, steps=150, thin=15),
    # as shipped: its U-Net posterior needs the whole annealing from sigma = 1 (with 30 steps
    # per level and 300 steps its mean reached 12.0 dB, not 19.5)
    "inpaint-digits.toml": {},
}
COVERED_ELSEWHERE = {
    "deblur-digits.toml",
    "ct-phantom-16-learned.toml",
    "robustness-phantom.toml",
    "ct-ellipses-128-exact.toml",
    "ct-shepp-256.toml",  # about 35 minutes as shipped (60 views at 256 px)
    # the learned 128x128 specs: 5-15 minutes each as shipped (bench.specs_table solves them);
    # test_learned_128_spec_short below solves ct-ellipses-128 with a shortened sampler
    "ct-ellipses-128.toml",
    "ct-ellipses-128-maxent.toml",
    "ct-fan-ellipses-128.toml",
    "deblur-ellipses-128.toml",
}
IMAGE_SPECS = sorted(
    p.name
    for p in PROBLEMS.glob("*.toml")
    if p.name != "circle-toy.toml" and p.name not in COVERED_ELSEWHERE
)


def test_every_image_spec_is_solved_somewhere():
    shipped = {p.name for p in PROBLEMS.glob("*.toml")} - {"circle-toy.toml"}
    assert shipped == set(IMAGE_SPECS) | COVERED_ELSEWHERE
    assert set(SHORTER) == set(IMAGE_SPECS)


@pytest.mark.slow
@pytest.mark.parametrize("name", IMAGE_SPECS)
def test_shipped_image_specs_beat_the_classical_baselines(name):
    """Every shipped imaging spec runs (sampler shortened: SHORTER) and beats every classical
    baseline (bip.baselines: FBP, Tikhonov, Wiener, TV, each at an interior optimum chosen on 4
    validation images), by 3 dB for CT and 2 dB otherwise; the estimate is the posterior mean
    (of the Tweedie-denoised draws for a maximum-entropy prior, whose raw draws sit off the
    manifold).

    Measured (float64, sampler step factor c = 0.2, posterior vs best baseline): ct-phantom-16
    (maxent) denoised 41.1 dB (raw mean 22.1) vs TV 28.3 (FBP 26.3, Wiener 25.7, Tikhonov
    20.5); ct-phantom-8 36.7 vs TV 27.8 (FBP 24.2); ct-phantom-16-learned 35.8 vs TV 28.3;
    robustness-phantom 23.2 vs TV 18.8 (FBP 18.5); deblur-phantom 39.2 vs TV 28.4 (Wiener
    27.7); deblur-digits 25.4 vs Wiener 21.2; inpaint-digits 19.5 vs Tikhonov 9.2, but Wiener
    (harmonic inpainting) reaches 20.8 and TV 18.9: the U-Net posterior does not beat them by
    the margin, asserted here so that the claim cannot drift. TV: bip.baselines, 500 PDHG
    iterations.
    """
    spec = problems.load(PROBLEMS / name)
    spec["sampler"].update(SHORTER[name])
    report = solve.solve(spec, progress=False)
    base = report["baselines"]
    assert report["diverged_chains"] == 0, report["divergence"]
    raw = report["raw"]
    assert np.isfinite(raw["psnr"]) and np.isfinite(report["denoised"]["psnr"])
    assert report["prior_fit"]["ok"], report["prior_fit"]  # no shipped spec is flagged
    estimate = report["denoised" if spec["prior"]["kind"] == "maxent" else "raw"]["psnr"]
    margin = 3.0 if spec["operator"]["kind"] == "radon" else 2.0
    for kind, found in base.items():
        assert found["interior"] and found["chosen_on"] == "validation", (kind, found)
        if name == "inpaint-digits.toml" and kind in ("wiener", "tv"):  # known exceptions
            assert abs(estimate - found["psnr"]) < 2.0, (estimate, found)
        else:
            assert estimate >= found["psnr"] + margin, (kind, estimate, base)
    if spec["data"]["source"] == "phantom" and spec["prior"]["source"] == "exact":
        # Raw draws carry white noise of std sigma^(1 - alpha/2) per pixel (0.05 generic, 0.22
        # maxent), far above the posterior mean's error (RMSE 10^(-PSNR/20) = 0.013 at 37.5 dB),
        # so the truth leaves their 90% intervals (half-width >= 1.645 x that std) almost
        # nowhere: measured 1.000 on ct-phantom-8, ct-phantom-16 and deblur-phantom, flagged
        # "intervals too wide". Calibrated intervals (0.90 +- 0.009, binomial on 1024 pixels)
        # fail this. (The denoised draws: 0.979, 0.946, 0.870 at c = 0.2; one phantom's pixels
        # are far from independent trials, so they carry no binomial bound.)
        assert raw["coverage_90"] >= 0.99, raw["coverage_90"]
        assert raw["coverage_note"].startswith("intervals too wide"), raw["coverage_note"]
        # the denoised draws lie on the manifold (relative to the image norm)
        assert report["denoised"]["distance_to_manifold_samples"] < 0.1 * report["truth_norm"]


@pytest.fixture(scope="module")
def phantom8_baseline_start():
    """ct-phantom-8 with ``init = "baseline"`` and 3 chains, built once (its baselines' search)."""
    spec = problems.load(PROBLEMS / "ct-phantom-8.toml")
    spec["sampler"].update(init="baseline", chains=3)
    return problems.build(spec)


def test_baseline_init_starts_chains_at_the_tikhonov_estimate(phantom8_baseline_start):
    # init = "baseline": each chain is the Tikhonov estimate (at the weight the baselines chose)
    # plus N(0, s^2 I) noise, s the first annealing level (0.2 for ct-phantom-8)
    import jax

    problem = phantom8_baseline_start
    starts = np.asarray(solve.initial_positions(jax.random.key(0), problem))
    assert starts.shape == (3, 32, 32)
    weight = problem.baseline["tikhonov"]["weight"]
    estimate = np.asarray(problems.tikhonov(problem.operator, problem.y, weight))
    noise = starts - estimate[None]
    # 3072 standard normal draws: the sample std is within 3 x 1/sqrt(2 n) = 0.038 of 1
    assert np.std(noise) / 0.2 == pytest.approx(1.0, abs=0.04)
    assert abs(np.mean(noise)) < 3 * 0.2 / np.sqrt(noise.size)


def test_solve_says_when_it_builds_the_baselines(capsys, monkeypatch, phantom8_baseline_start):
    # bip solve's status lines around the baselines' search (a minute at 128x128): before, and
    # after with each baseline's PSNR as the report has it; nothing without progress
    monkeypatch.setattr(problems, "build", lambda spec: phantom8_baseline_start)
    spec = phantom8_baseline_start.spec
    problem = solve._build_with_status(spec, progress=True)
    before, after = capsys.readouterr().err.splitlines()
    assert before.startswith("bip solve ct-phantom-8: building the problem and the classical")
    assert after.startswith("bip solve ct-phantom-8: baselines in ")
    for kind, found in problem.baseline.items():
        assert f"{kind} {found['psnr']:.1f} dB" in after
    solve._build_with_status(spec, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_learned_128_spec_short():
    """ct-ellipses-128 (ellipses128-unet, 30 views, 1% noise) with a shortened sampler (4
    chains, 5 x 40 annealing steps, 400 steps): the learned posterior runs at 128x128 without
    a diverged chain and its mean beats FBP and Tikhonov at their best by 3 dB, with its
    denoised 90% intervals covering 80-99% of the truth's pixels. As shipped (8 chains,
    10 x 100 + 2000 steps) it is 32 dB against FBP's 26.6; TV (35.7 dB) stays ahead of it:
    the README says so.

    Measured (this shortening, float64, 163 s on 2 loaded cores): raw mean 30.27 dB (FBP 26.59,
    Tikhonov 25.78: +3.7 dB), denoised 30.96, denoised coverage 0.959, median R-hat 1.21.
    """
    spec = problems.load(PROBLEMS / "ct-ellipses-128.toml")
    spec["sampler"].update(chains=4, anneal_levels=5, steps_per_level=40, steps=400, thin=20)
    report = solve.solve(spec, progress=False)
    assert report["prior"] == "ellipses128-unet"
    assert report["diverged_chains"] == 0, report["divergence"]
    base = report["baselines"]
    for kind in ("fbp", "tikhonov"):
        assert report["raw"]["psnr"] >= base[kind]["psnr"] + 3.0, (kind, report["raw"], base)
    assert 0.8 <= report["denoised"]["coverage_90"] <= 0.99, report["denoised"]


def _image_spec(tmp_path, **edits):
    text = (PROBLEMS / "deblur-digits.toml").read_text()
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    return _write(tmp_path, text, "bad.toml")


@pytest.mark.parametrize(
    "edits, error, match",
    [
        (
            {'source = "digits16-unet"': 'source = "no-such-prior"'},
            problems.SpecError,
            r"\[prior\] source: unknown prior 'no-such-prior'.*digits16-unet",
        ),
        (
            {"size = 16": "size = 32"},
            problems.SpecError,
            r"takes images of shape \(16, 16\).*"
            r"data has shape \(32, 32\)",
        ),
        (
            {'kind = "gaussian_blur"': 'kind = "fourier"'},
            problems.SpecError,
            r"\[operator\] kind: must be one of",
        ),
        (
            {"width = 1.5": "width = 1.5\nradius = 2"},
            problems.SpecError,
            r"\[operator\] radius: unknown key",
        ),
        (
            {'source = "digits"\nsize = 16\nindex = 0\n': 'source = "file"\n'},
            problems.SpecError,
            r"\[data\] path: source 'file' needs 'path' \(the truth\) or 'measurement'",
        ),
    ],
)
def test_bad_image_specs_are_clear_errors(tmp_path, edits, error, match):
    spec = _image_spec(tmp_path, **edits)
    with pytest.raises(error, match=match) as info:
        problems.build(problems.load(spec))
    assert "bad.toml" in str(info.value)
    # through the CLI: exit code 2, the message, and no output directory at all
    out = tmp_path / "out"
    assert cli.main(["solve", str(spec), "--out", str(out), "--no-progress"]) == 2
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_measurement_files_are_checked(tmp_path):
    """A user's own measurement: NaN and a shape that does not match the operator are named."""
    y = np.ones((16, 16))
    y[3, 4] = np.nan
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "y_small.npy", np.ones((8, 8)))
    spec = _image_spec(tmp_path, **{"index = 0": 'index = 0\nmeasurement = "y.npy"'})
    with pytest.raises(problems.SpecError, match=r"y\.npy.*1 NaN or infinite"):
        problems.build(problems.load(spec))
    spec = _image_spec(tmp_path, **{"index = 0": 'index = 0\nmeasurement = "y_small.npy"'})
    with pytest.raises(problems.SpecError, match=r"shape \(8, 8\).*gives \(16, 16\)"):
        problems.build(problems.load(spec))
    spec = _image_spec(tmp_path, **{"index = 0": 'index = 0\nmeasurement = "missing.npy"'})
    with pytest.raises(problems.SpecError, match="missing.npy.*does not exist"):
        problems.build(problems.load(spec))
    # a clean measured y with no ground truth: the problem builds, y is the file's
    np.save(tmp_path / "y_ok.npy", np.full((16, 16), 0.25))
    spec = _image_spec(
        tmp_path,
        **{
            'source = "digits"\nsize = 16\nindex = 0\n': (
                'source = "file"\nmeasurement = "y_ok.npy"\n'
            )
        },
    )
    problem = problems.build(problems.load(spec))
    assert problem.truth is None and float(problem.y[0, 0]) == 0.25
    assert problem.event_shape == (16, 16)


def test_interrupted_solve_leaves_no_complete_looking_output(tmp_path, monkeypatch):
    """An error while writing (here: the figure) removes the partial folder; nothing at out."""
    spec = _write(
        tmp_path, CIRCLE_SPEC.format(kind="maxent").replace("chains = 2000", "chains = 50")
    )

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(solve, "_figure", broken)
    with pytest.raises(KeyboardInterrupt):
        solve.solve(str(spec), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial-*"))
