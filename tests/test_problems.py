"""Problem specs: validation with clear errors, and `bip solve` end to end (atomic output)."""

import json

import numpy as np
import pytest

from bip import cli, problems, solve

CIRCLE_SPEC = """
name = "t"
[data]
source = "circle"
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
    data = np.load(out / "samples.npz")
    assert data["samples"].shape == (8, 2000, 2)
    meta = json.loads(str(data["metadata"]))
    assert meta["spec"]["prior"]["kind"] == kind and "jax" in meta["versions"]
    assert (out / "figure.png").stat().st_size > 5000
    # an existing output directory is not clobbered without --overwrite
    with pytest.raises(FileExistsError):
        solve.solve(str(spec), out, progress=False)
    assert not list(tmp_path.glob(".out.partial-*"))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda t: t.replace("[noise]", "[noise]\nlevel = 2"), r"unknown key 'level' in \[noise\]"),
        (lambda t: t + "\n[extra]\nx = 1\n", "unknown key 'extra'"),
        (
            lambda t: t.replace('source = "circle"', 'source = "mars"'),
            "'data.source' must be one of",
        ),
        (lambda t: t.replace("std = 0.3", "std = -0.3"), "'noise.std' must be > 0"),
        (lambda t: t.replace("alpha = 1.0", "alpha = 2.0"), r"'prior.alpha' must lie in \[0, 2\)"),
        (lambda t: t.replace("sigma = 0.1", 'sigma = "small"'), "'sampler.sigma' must be"),
        (lambda t: t.replace('name = "t"', ""), "missing required key 'name'"),
        (
            lambda t: t.replace('kind = "coordinate_projection"', 'kind = "fourier"'),
            "'operator.kind' must be one of",
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
