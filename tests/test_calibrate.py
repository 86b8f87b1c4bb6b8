"""``bip calibrate``: an exact-chart CT posterior is calibrated over 100 repeated experiments,
and the run survives Ctrl-C and continues where it stopped.

The problem is made cheap and fast-mixing: an 8x8 phantom with two free chart coordinates
(centre ``cx`` and intensity ``I``), 8 views, noise 0.4 on the sinogram (so the likelihood's
stiffness ``||A||^2 / s^2 = 344`` matches the prior's ``1 / sigma^2 = 400`` and every
direction relaxes in tens of steps), ULA at ``c = 0.1`` (std inflated by about
``(1 - c/2)^(-1/2) = 1.026``), 2 chains x 10 draws per trial. The truths are ``x0 + sigma
z`` with ``x0`` from the phantom law: the prior of the generic posterior at ``sigma``.
"""

import json

import numpy as np
import pytest
import scipy.stats

from bip import calibrate, cli, images, outputs

TINY_CT = """
name = "ct-phantom-tiny"
[data]
source = "phantom"
size = 8
free = ["cx", "I"]
[operator]
kind = "radon"
views = 8
[noise]
std = 0.4
[prior]
kind = "generic"
[sampler]
sigma = 0.05
chains = 2
steps = 200
thin = 20
burn_in = 100
c = 0.1
"""


@pytest.mark.slow
def test_exact_chart_ct_is_calibrated_and_a_run_resumes_after_ctrl_c(tmp_path, monkeypatch, capsys):
    spec = tmp_path / "ct-tiny.toml"
    spec.write_text(TINY_CT)
    out = tmp_path / "calibration"
    solve, calls = calibrate.solve_trials, [0]

    def interrupt_the_second_batch(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return solve(*args, **kwargs)

    monkeypatch.setattr(calibrate, "solve_trials", interrupt_the_second_batch)
    argv = ["calibrate", str(spec), "--trials", "100", "--batch", "50", "--out", str(out)]
    argv.append("--no-progress")
    assert cli.main(argv) == 130
    assert capsys.readouterr().err == (
        f"bip calibrate: interrupted after 50 of 100 trials; finished trials in {out} "
        "(the same command continues)\n"
    )
    assert outputs.read_manifest(out)["status"] == "incomplete"
    with np.load(out / "trials.npz") as data:
        first = {k: data[k] for k in data.files}
    assert first["tarp_image"].shape == (50,) and first["pit_pixels"].shape == (50, 64)
    assert not (out / "summary.json").exists()

    # the same command continues with the second batch only, and keeps the first as it was
    assert cli.main(argv) == 0 and calls[0] == 3
    assert "SBC chi-square p (10 bins), chart coordinates: cx" in capsys.readouterr().out
    assert outputs.read_manifest(out)["status"] == "complete"
    assert (out / "calibration.png").stat().st_size > 10_000
    with np.load(out / "trials.npz") as data:
        for key, value in first.items():
            np.testing.assert_array_equal(data[key][:50], value)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 100 and summary["draws_per_trial"] == 20
    assert summary["diverged_chains"] == 0

    # the must-show: uniform SBC ranks for every chart coordinate, nominal pixel coverage
    assert summary["sbc"]["chart"]["names"] == ["cx", "I"]
    assert min(summary["sbc"]["chart"]["pvalue"]) > 0.01, summary["sbc"]["chart"]
    levels = summary["coverage"]["levels"]
    for level in (0.5, 0.8, 0.9, 0.95):
        covered = summary["coverage"]["pixels"][levels.index(level)]
        assert abs(covered - level) < 0.05, (level, covered)

    # another seed is another calibration: refused without --overwrite
    assert cli.main([*argv, "--seed", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_calibration_refuses_what_it_cannot_run_before_any_compute(tmp_path, capsys):
    spec = tmp_path / "digits.toml"
    spec.write_text(
        TINY_CT.replace('source = "phantom"', 'source = "digits"')
        .replace('free = ["cx", "I"]', "")
        .replace("[prior]", '[prior]\nsource = "digits16-unet"')  # exact: a spec error
    )
    assert cli.main(["calibrate", str(spec), "--trials", "10", "--out", str(tmp_path / "x")]) == 2
    assert "calibration draws its truths from the data law" in capsys.readouterr().err
    spec.write_text(TINY_CT.replace("c = 0.1", 'c = 0.1\nmethod = "mala"'))
    assert cli.main(["calibrate", str(spec), "--trials", "10", "--out", str(tmp_path / "x")]) == 2
    assert "method = 'mala' is not supported" in capsys.readouterr().err
    assert cli.main(["calibrate", str(spec), "--trials", "0", "--out", str(tmp_path / "x")]) == 2
    assert "trials must be an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_uniform_on_manifold_follows_the_volume_element():
    """Points uniform on a 1-parameter phantom family (the major semi-axis a) have the chart
    density ``|dPhi/da| / integral``: a KS test against that law passes, against the
    box-uniform law it fails."""
    manifold = images.PhantomManifold(size=8, free=("a",))
    points = calibrate.uniform_on_manifold(calibrate.jax.random.key(3), manifold, 4000)
    assert points.shape == (4000, 8, 8)
    a = np.asarray(manifold.coordinate(points))[:, 0]
    lo, hi = (float(v[0]) for v in manifold.bounds)
    grid = np.linspace(lo, hi, 401)
    density = np.asarray(manifold.volume_density(grid[:, None]))
    cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2)])
    cdf /= cdf[-1]
    assert density.max() / density.min() > 1.4  # the volume element varies enough to tell
    assert scipy.stats.kstest(a, lambda v: np.interp(v, grid, cdf)).pvalue > 0.01
    assert scipy.stats.kstest(a, "uniform", args=(lo, hi - lo)).pvalue < 1e-4
