"""Training: reproducibility, resumption from atomic checkpoints, recipes, the CLI."""

import argparse
import json
import os

import jax
import numpy as np
import pytest

import bip.networks as networks
import bip.train as train_mod
from bip.train import RecipeError, load_recipe, train

TINY = {
    "name": "tiny",
    "seed": 3,
    "data": {"manifold": "circle", "law": "vonmises", "kappa": 1.0},
    "net": {"width": 32, "depth": 1, "num_frequencies": 4, "sigma_data": 0.7},
    "training": {
        "steps": 100,
        "batch": 64,
        "warmup": 10,
        "chunk": 25,
        "checkpoint_every": 50,
    },
}


def _weights(result):
    return [np.asarray(x) for x in jax.tree.leaves(result.prior.params.state)]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """One uninterrupted tiny run, shared by the tests that compare against it."""
    out = tmp_path_factory.mktemp("reference")
    return train(TINY, out, resume=False, progress=False, evaluate=False)


def test_tiny_run_writes_a_loadable_prior(reference_run):
    out = reference_run.out_dir
    assert reference_run.complete and reference_run.steps_done == 100
    assert reference_run.losses.shape == (100,) and np.all(np.isfinite(reference_run.losses))
    # DSM with the EDM weight starts near E|target|^2 ~ 1 and must go down
    assert reference_run.losses[-25:].mean() < reference_run.losses[:5].mean()
    for name in ("recipe.toml", "weights.safetensors", "model.json", "README.md"):
        assert (out / name).is_file(), name
    card = json.loads((out / "model.json").read_text())
    assert card["weights_sha256"] == networks.sha256_file(out / "weights.safetensors")
    assert card["steps"] == 100
    assert card["final_loss"] == pytest.approx(reference_run.final_loss)
    loaded = networks.load_prior(out)
    x = np.array([[1.1, 0.2], [-0.3, 0.9]])
    np.testing.assert_allclose(
        loaded.score(x, 0.1), reference_run.prior.score(x, 0.1), rtol=1e-6, atol=1e-6
    )
    assert type(loaded.manifold).__name__ == "Circle"


def test_same_seed_same_loss_curve(reference_run, tmp_path):
    again = train(TINY, tmp_path, resume=False, progress=False, evaluate=False)
    np.testing.assert_allclose(again.losses, reference_run.losses, rtol=1e-6, atol=0)
    for a, b in zip(_weights(again), _weights(reference_run), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    other = dict(TINY, seed=4)
    different = train(other, tmp_path / "other", resume=False, progress=False, evaluate=False)
    assert not np.allclose(different.losses, reference_run.losses)


def test_interrupted_run_resumes_to_the_same_weights(reference_run, tmp_path):
    half = train(TINY, tmp_path, stop_after=50, progress=False, evaluate=False)
    assert not half.complete and half.steps_done == 50 and half.card is None
    assert (tmp_path / "checkpoint.npz").is_file()
    assert not (tmp_path / "weights.safetensors").exists()
    np.testing.assert_allclose(half.losses, reference_run.losses[:50], rtol=1e-6)
    # resume with other execution knobs (chunk length, checkpoint period): same recipe hash
    knobs = dict(TINY, training=dict(TINY["training"], chunk=10, checkpoint_every=30))
    full = train(knobs, tmp_path, resume=True, progress=False, evaluate=False)
    assert full.complete and full.steps_done == 100
    np.testing.assert_allclose(full.losses, reference_run.losses, rtol=1e-6, atol=0)
    for a, b in zip(_weights(full), _weights(reference_run), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    if jax.default_backend() == "cpu":  # XLA:CPU is deterministic: bit-identical weights
        sha = networks.sha256_file
        ref = reference_run.out_dir / "weights.safetensors"
        assert sha(tmp_path / "weights.safetensors") == sha(ref)
    # resuming a finished run is a no-op that re-exports the same weights
    again = train(TINY, tmp_path, resume=True, progress=False, evaluate=False)
    assert again.steps_done == 100
    np.testing.assert_array_equal(again.losses, full.losses)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    train(TINY, tmp_path, stop_after=50, progress=False, evaluate=False)
    checkpoint = tmp_path / "checkpoint.npz"
    before = checkpoint.read_bytes()

    def crash(fd):  # the machine dies while the new checkpoint is being written
        raise OSError("simulated crash during checkpoint write")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="simulated crash"):
        train(TINY, tmp_path, stop_after=75, progress=False, evaluate=False)
    monkeypatch.undo()
    assert checkpoint.read_bytes() == before  # the old checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]  # no temp files
    resumed = train(TINY, tmp_path, progress=False, evaluate=False, keep_checkpoint=False)
    assert resumed.steps_done == 100
    assert not checkpoint.exists()


def test_checkpoint_from_another_recipe_is_refused(tmp_path):
    train(TINY, tmp_path, stop_after=25, progress=False, evaluate=False)
    other = dict(TINY, training=dict(TINY["training"], lr=1e-3))
    with pytest.raises(ValueError, match="different recipe"):
        train(other, tmp_path, progress=False, evaluate=False)
    (tmp_path / "checkpoint.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="checkpoint.npz"):
        train(TINY, tmp_path, progress=False, evaluate=False)


def _write(tmp_path, text):
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


GOOD = """
seed = 1
[data]
manifold = "ellipse"
a = 1.0
b = 2.0
law = "vonmises"
kappa = 1.0
[net]
width = 16
[training]
steps = 10
"""


def test_recipe_defaults_and_law(tmp_path):
    recipe = load_recipe(_write(tmp_path, GOOD))
    assert recipe.name == tmp_path.name  # defaults to the folder name
    assert recipe.net["width"] == 16 and recipe.net["depth"] == 4
    assert recipe.training["sigma_min"] == 0.01 and recipe.training["sigma_max"] == 50.0
    law = train_mod.build_law(recipe)
    assert type(law.manifold).__name__ == "Ellipse" and law.manifold.b == 2.0
    assert train_mod.net_config(recipe)["dim"] == 2
    # a mapping and its TOML rendering give the same recipe
    again = load_recipe(_write(tmp_path, train_mod.recipe_to_toml(recipe)))
    assert again.config_sha256 == recipe.config_sha256


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            ("[training]\nsteps = 10", "[training]\nsteps = 10\nlerning_rate = 0.1"),
            r"\[training\] lerning_rate: unknown key",
        ),
        (
            ("[training]\nsteps = 10", "[training]\nsteps = 10\nlr = -1.0"),
            r"\[training\] lr: must be > 0",
        ),
        (
            ("[training]\nsteps = 10", "[training]\nsteps = 10.5"),
            r"\[training\] steps: must be an integer",
        ),
        (
            ("[training]\nsteps = 10", "[training]\nsteps = true"),
            r"\[training\] steps: must be a number",
        ),
        (
            ("[training]\nsteps = 10", "[training]\nsteps = 10\nema = 1.0"),
            r"\[training\] ema: must lie in \[0, 1\)",
        ),
        (
            ("[training]\nsteps = 10", "[training]\nsteps = 10\nsigma_min = 60.0"),
            r"\[training\] sigma_min: must be below sigma_max",
        ),
        (("[net]\nwidth = 16", "[net]\nwidth = 0"), r"\[net\] width: must be >= 1"),
        (("[net]\nwidth = 16", "[net]\nwidht = 16"), r"\[net\] widht: unknown key"),
        (('law = "vonmises"', 'law = "vmf"'), r"\[data\] law: 'vmf' is not defined on a ellipse"),
        (('manifold = "ellipse"', 'manifold = "torus"'), r"\[data\] manifold: must be one of"),
        (("a = 1.0", "radius = 1.0"), r"\[data\] radius: is not used here"),
        (
            ("kappa = 1.0", "kappa = -1.0"),
            r"\[data\] kappa: must be finite and >= 0|\[data\] kappa: must be >= 0",
        ),
        (("seed = 1", "seed = 1\nsede = 2"), r"sede: unknown key"),
        (("seed = 1", "seed = -1"), r"seed: must be >= 0"),
        (("[training]", "[trainig]"), r"trainig: unknown key .*\[training\]"),
        (("seed = 1", "seed = [1"), r"invalid TOML"),
    ],
)
def test_bad_recipe_names_file_and_key(tmp_path, edit, needle):
    old, new = edit
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(RecipeError, match=needle) as info:
        load_recipe(path)
    assert str(path) in str(info.value)


def test_recipe_missing_pieces(tmp_path):
    with pytest.raises(RecipeError, match=r"\[data\] law: is required"):
        load_recipe({"data": {"manifold": "circle"}})
    with pytest.raises(RecipeError, match="data: the \\[data\\] table is required"):
        load_recipe({"training": {"steps": 10}})
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_recipe(tmp_path / "nope.toml")
    with pytest.raises(TypeError, match="recipe"):
        load_recipe(42)
    with pytest.raises(ValueError, match="stop_after"):
        train(TINY, tmp_path, stop_after=-1, progress=False)


def test_cli_train_subcommand(tmp_path, capsys):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(train_mod.recipe_to_toml(load_recipe(TINY)))
    parser = argparse.ArgumentParser(prog="bip")
    train_mod.add_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "run"
    args = parser.parse_args(
        [
            "train",
            str(recipe),
            "--out",
            str(out),
            "--no-progress",
            "--no-eval",
            "--stop-after",
            "50",
        ]
    )
    assert args.func(args) == 0
    assert "stopped at step 50" in capsys.readouterr().out
    args = parser.parse_args(
        ["train", str(recipe), "--out", str(out), "--no-progress", "--no-eval"]
    )
    assert args.func(args) == 0
    assert "trained 100 steps" in capsys.readouterr().out
    assert (out / "weights.safetensors").is_file()
    bad = tmp_path / "bad.toml"
    bad.write_text(recipe.read_text().replace("batch = 64", "batch = 0"))
    args = parser.parse_args(["train", str(bad), "--out", str(tmp_path / "bad")])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "batch" in err and str(bad) in err
