"""Training: reproducibility, resumption from atomic checkpoints, recipes, the CLI."""

import argparse
import functools
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

import bip.cards as cards
import bip.cli
import bip.ellipses as ellipses
import bip.networks as networks
import bip.priorfile as priorfile
import bip.profile as profile
import bip.recipes as recipes
from bip.recipes import RecipeError, load_recipe
from bip.train import train

TINY = {
    "name": "tiny",
    "seed": 3,
    "data": {"source": "circle", "law": "vonmises", "kappa": 1.0},
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
    assert card["weights_sha256"] == priorfile.sha256_file(out / "weights.safetensors")
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
        sha = priorfile.sha256_file
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
    # no temp files: the checkpoint and the output manifest (bip.outputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bip-output.json", "checkpoint.npz"]
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
    assert recipe.net.width == 16 and recipe.net.depth == 4
    assert recipe.training.sigma_min == 0.01 and recipe.training.sigma_max == 50.0
    law = recipes.build_law(recipe)
    assert type(law.manifold).__name__ == "Ellipse" and law.manifold.b == 2.0
    assert recipes.net_config(recipe)["dim"] == 2
    # a mapping and its TOML rendering give the same recipe
    again = load_recipe(_write(tmp_path, recipes.recipe_to_toml(recipe)))
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
            r"\[training\] steps: must be an integer, got true",
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
        (("a = 1.0\nb", "radius = 1.0\nb"), r"\[data\] radius: is not used here"),
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
    assert load_recipe({"data": {"source": "circle"}}).data.law == "vonmises"  # its default
    with pytest.raises(RecipeError, match=r"recipe <mapping>: \[data\] source: is required"):
        load_recipe({"training": {"steps": 10}})
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_recipe(tmp_path / "nope.toml")
    with pytest.raises(TypeError, match="recipe"):
        load_recipe(42)
    with pytest.raises(ValueError, match="stop_after"):
        train(TINY, tmp_path, stop_after=-1, progress=False)


def test_cli_train_subcommand(tmp_path, capsys):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(recipes.recipe_to_toml(load_recipe(TINY)))
    parser = argparse.ArgumentParser(prog="bip")
    bip.cli.add_train(parser.add_subparsers(dest="command"))
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


# --------------------------------------------------------------------------- image recipes

TINY_PHANTOM = {
    "name": "tiny-phantom",
    "seed": 1,
    "data": {"source": "phantom", "size": 16},
    "net": {"kind": "unet", "channels": 8, "channel_mult": [1, 2], "groups": 4, "patch": 2},
    "training": {
        "steps": 12,
        "batch": 8,
        "warmup": 2,
        "chunk": 4,
        "checkpoint_every": 6,
        "sigma_min": 0.01,
        "sigma_max": 10.0,
        "sigma_sampling": "lognormal",
        "sigma_log_std": 1.5,
    },
}


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    return train(TINY_PHANTOM, out, resume=False, progress=False, evaluate=False)


@pytest.mark.slow
def test_tiny_unet_recipe_trains_and_loads(phantom_run):
    assert phantom_run.complete and phantom_run.losses.shape == (12,)
    assert np.all(np.isfinite(phantom_run.losses))
    recipe = load_recipe(TINY_PHANTOM)
    assert recipe.data.to_dict() == {
        "source": "phantom",
        "law": "uniform",
        "size": 16,
        "edge_width": 1.0,
        "free": ["cx", "cy", "a", "b", "theta", "I"],
    }
    assert recipe.net.sigma_data == 0.5 and recipe.net.num_res_blocks == 1
    # lognormal sigmas: the mean defaults to the middle of the log range
    assert recipe.training.sigma_log_mean == pytest.approx(0.5 * np.log(0.01 * 10.0))
    card = json.loads((phantom_run.out_dir / "model.json").read_text())
    assert card["net"]["kind"] == "unet" and card["net"]["shape"] == [16, 16]
    assert card["event_shape"] == [16, 16]
    assert "U-Net" in (phantom_run.out_dir / "README.md").read_text()
    loaded = networks.load_prior(phantom_run.out_dir)
    assert loaded.event_shape == (16, 16) and type(loaded.manifold).__name__ == "PhantomManifold"
    x = recipes.build_law(recipe).sample(jax.random.key(0), (3,))
    np.testing.assert_allclose(
        loaded.score(x, 0.1), phantom_run.prior.score(x, 0.1), rtol=1e-6, atol=1e-6
    )


@pytest.mark.slow  # with the test above, the only users of the phantom_run fixture
def test_tiny_unet_run_resumes_to_the_same_weights(phantom_run, tmp_path):
    half = train(TINY_PHANTOM, tmp_path, stop_after=6, progress=False, evaluate=False)
    assert not half.complete and half.steps_done == 6
    full = train(TINY_PHANTOM, tmp_path, progress=False, evaluate=False)
    assert full.complete
    np.testing.assert_array_equal(full.losses, phantom_run.losses)
    for a, b in zip(_weights(full), _weights(phantom_run), strict=True):
        np.testing.assert_array_equal(a, b)


def test_training_images_regenerates_the_draws(phantom_run):
    recipe = load_recipe(TINY_PHANTOM)
    law = recipes.build_law(recipe)
    chunks = list(recipes.training_images(recipe, law, chunk=5))
    assert [c.shape for c in chunks] == [(40, 16, 16), (40, 16, 16), (16, 16, 16)]
    train_key = jax.random.split(jax.random.key(recipe.seed))[1]
    step7 = recipes.training_batch(law, train_key, 7, 8)
    np.testing.assert_array_equal(chunks[1][16:24], step7)


@pytest.mark.slow
def test_digits_and_faces_recipes(tmp_path):
    digits = {
        "data": {"source": "digits", "size": 8},
        "net": {"kind": "unet", "channels": 8, "channel_mult": [1, 2], "groups": 4},
        "training": {"steps": 10, "batch": 8, "warmup": 1, "chunk": 5, "sigma_max": 10.0},
    }
    recipe = load_recipe(digits)
    assert recipe.data.to_dict() == {"source": "digits", "law": "empirical", "size": 8}
    law = recipes.build_law(recipe)
    assert law.event_shape == (8, 8) and law.num_examples == 1797 and law.manifold is None
    x = law.sample(jax.random.key(0), (4, 2))
    assert x.shape == (4, 2, 8, 8) and float(x.min()) >= 0 and float(x.max()) <= 1
    result = train(digits, tmp_path, progress=False, evaluate=False)
    assert result.complete and np.all(np.isfinite(result.losses))
    assert networks.load_prior(tmp_path).manifold is None
    (chunk,) = recipes.training_images(recipe, law)
    assert chunk.shape == (1797, 8, 8)
    faces = load_recipe({"data": {"source": "faces"}, "net": {"kind": "unet"}})
    config = recipes.net_config(faces)
    assert config["shape"] == [25, 25] and config["kind"] == "unet"  # odd: padded inside
    # an MLP on flattened images is allowed too
    flat = load_recipe({"data": {"source": "digits", "size": 8}, "net": {"width": 16}})
    assert recipes.net_config(flat)["dim"] == 64 and "kind" not in recipes.net_config(flat)


def test_mlp_recipe_hash_unchanged_by_the_net_kind():
    # recipes written before [net] kind existed keep their config hash (and checkpoints)
    plain = load_recipe(TINY)
    explicit = load_recipe(dict(TINY, net=dict(TINY["net"], kind="mlp")))
    assert plain.net.kind == "mlp" and plain.config_sha256 == explicit.config_sha256
    shipped = load_recipe(priorfile.PRIORS_DIR / "circle-vonmises" / "recipe.toml")
    card = priorfile.read_card(priorfile.PRIORS_DIR / "circle-vonmises")
    assert shipped.config_sha256 == card["recipe_config_sha256"]


@pytest.mark.parametrize(
    ("recipe", "needle"),
    [
        (
            {"data": {"source": "circle", "law": "uniform"}, "net": {"kind": "unet"}},
            r"\[net\] kind: 'unet' needs image data",
        ),
        (
            {"data": {"source": "phantom"}, "net": {"kind": "unet", "width": 8}},
            r"\[net\] width: is not used here",
        ),
        (
            {"data": {"source": "phantom"}, "net": {"channels": 8}},
            r"\[net\] channels: is not used here",
        ),
        (
            {"data": {"source": "phantom"}, "net": {"kind": "unet", "channel_mult": []}},
            r"\[net\] channel_mult: must be a non-empty list of integers",
        ),
        (
            {"data": {"source": "phantom"}, "net": {"kind": "unet", "channel_mult": [1, 0]}},
            r"\[net\] channel_mult: must be a non-empty list of integers",
        ),
        ({"data": {"source": "phantom"}, "net": {"kind": "vit"}}, r"\[net\] kind: must be one"),
        ({"data": {"source": "phantom", "size": 4}}, r"\[data\] size: must be >= 8"),
        ({"data": {"source": "phantom", "law": "vonmises"}}, r"'vonmises' is not defined"),
        ({"data": {"source": "digits", "law": "uniform"}}, r"'uniform' is not defined"),
        ({"data": {"source": "faces", "size": 32}}, r"\[data\] size: is not used here"),
        ({"data": {"source": "circle", "law": "uniform", "size": 8}}, r"size: is not used"),
        (
            {"data": {"source": "phantom"}, "training": {"sigma_log_std": 1.0}},
            r"\[training\] sigma_log_std: is not used here",
        ),
        (
            {"data": {"source": "phantom"}, "training": {"sigma_sampling": "normal"}},
            r"\[training\] sigma_sampling: must be one of",
        ),
        ({"data": {"source": "ellipses", "count": [5, 6, 7]}}, r"\[data\] count: must be a list"),
        ({"data": {"source": "ellipses", "count": [1.5, 3]}}, r"count: .* 1 or 2 integers"),
        ({"data": {"source": "ellipses", "count": [6, 3]}}, r"\[data\] count: count must"),
        ({"data": {"source": "ellipses", "axes": [0.1, 0.95]}}, r"\[data\] axes: .*< radius"),
        ({"data": {"source": "ellipses", "radius": 1.5}}, r"\[data\] radius: .*\(0, 1\]"),
        ({"data": {"source": "ellipses", "edge_width": 1.0}}, r"edge_width: is not used"),
        ({"data": {"source": "ellipses", "law": "uniform"}}, r"'uniform' is not defined"),
        ({"data": {"source": "phantom", "count": [1, 2]}}, r"\[data\] count: is not used"),
    ],
)
def test_bad_image_recipes(recipe, needle):
    with pytest.raises(RecipeError, match=needle):
        load_recipe(recipe)


def test_ellipses128_recipe(tmp_path):
    # the shipped recipe of the 128x128 random-ellipse prior: the law it names, with the
    # law's defaults filled in, and a network under the 10 MB of float32 weights
    path = priorfile.PRIORS_DIR / "ellipses128-unet" / "recipe.toml"
    recipe = load_recipe(path)
    assert recipe.name == "ellipses128-unet"
    assert recipe.data.to_dict() == {
        "source": "ellipses",
        "law": "random",
        "size": 128,
        "count": [5, 15],
        "axes": [0.05, 0.4],
        "intensity": [0.1, 0.6],
        "radius": 0.9,
    }
    assert recipes.build_law(recipe) == ellipses.RandomEllipseLaw(128)
    defaults = load_recipe({"data": {"source": "ellipses"}})
    assert defaults.data == recipe.data  # law "random", size 128 and the law's defaults
    again = load_recipe(_write(tmp_path, recipes.recipe_to_toml(recipe)))
    assert again.data == recipe.data and again.config_sha256 == recipe.config_sha256
    config = recipes.net_config(recipe)
    assert config["shape"] == [128, 128] and config["patch"] == 4
    model = networks.abstract_network(config)
    num_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert num_params == 1_049_072 and 4 * num_params < 10e6
    small = load_recipe(
        {"data": {"source": "ellipses", "size": 16, "count": [1, 2], "axes": [0.2, 0.3]}}
    )
    x = recipes.build_law(small).sample(jax.random.key(0), (3,))
    assert x.shape == (3, 16, 16) and float(x.min()) >= 0 and float(x.max()) > 0.1


@pytest.mark.slow
def test_ellipse_card_baseline_is_fresh_draws(monkeypatch):
    # a generative image law without a manifold: the card's nearest-neighbour baseline is fresh
    # draws of the law against the regenerated training draws (no fixed data set to leave out)
    recipe = load_recipe(
        {
            "name": "tiny-ellipses",
            "data": {"source": "ellipses", "size": 16, "count": [1, 3], "axes": [0.2, 0.4]},
            "net": {"kind": "unet", "channels": 4, "channel_mult": [1], "groups": 2},
            "training": {"steps": 3, "batch": 4, "warmup": 1, "sigma_max": 5.0},
        }
    )
    monkeypatch.setattr(
        cards, "IMAGE_EVAL", dict(num_samples=4, num_levels=4, profile_samples=4, nn_baseline=5)
    )
    monkeypatch.setattr(cards, "LOCAL_CHART_CHAINS", 2)
    short = functools.partial(profile.manifold_distance_check, num_steps=20)  # test budget
    monkeypatch.setattr(profile, "manifold_distance_check", short)
    law = recipes.build_law(recipe)
    model = networks.build_network(recipes.net_config(recipe, law), 0)  # F = 0: untrained
    prior = networks.network_prior(nnx.split(model), law.event_shape, manifold=law.manifold)
    quality = cards.evaluate(prior, law, recipe)
    samples = quality["samples"]
    assert samples["num_training_images"] == 12
    assert samples["nn_baseline_is"] == "fresh draws of the law to the training draws"
    train_key = jax.random.split(jax.random.key(recipe.seed))[1]
    seen = np.concatenate([recipes.training_batch(law, train_key, t, 4) for t in range(3)])
    fresh = np.asarray(law.sample(jax.random.fold_in(jax.random.key(recipe.seed + 1), 3), (5,)))
    d = np.sqrt(((fresh[:, None] - seen[None]) ** 2).sum((-2, -1))).min(axis=1)
    assert samples["nn_baseline"]["median"] == pytest.approx(np.median(d), rel=1e-6)
    assert samples["nn_baseline"]["min"] == pytest.approx(d.min(), rel=1e-6)
    # no exact score for a random number of ellipses: the profile comes from the denoising
    # loss over its n / sigma^2 floor, the distance check from each start's local chart
    prof = quality["profile"]
    assert prof["reference"] == cards.TWEEDIE_REFERENCE and len(prof["floor_fraction"]) == 5
    untrained = profile.denoising_error_profile(
        jax.random.key(recipe.seed + 1), prior, law, np.asarray(cards.PHANTOM_EVAL_SIGMAS), 4
    )
    np.testing.assert_allclose(prof["rel_error"], untrained["rel_error"], rtol=1e-12)
    distance = quality["manifold_distance"]
    assert distance["chains"] == 2 and "LocalEllipseChart" in distance["manifold"]
    assert [r["steps"] for r in distance["runs"].values()] == [20] * 4
    text = cards._profile_method_text(prof, 4) + "\n".join(cards._distance_markdown(distance))
    assert "denoising_error_profile" in text and "LocalEllipseChart" in text


def test_nearest_neighbour_check_caps_the_regenerated_training_draws(monkeypatch):
    # a fresh-draw law regenerates its training draws for the card's nearest-neighbour check:
    # at most NN_TRAINING_MAX of them (whole 50-step chunks, the first in training order)
    recipe = load_recipe(
        {
            "data": {"source": "ellipses", "size": 8, "count": [1, 2], "axes": [0.2, 0.4]},
            "training": {"steps": 120, "batch": 2},
        }
    )
    law = recipes.build_law(recipe)
    monkeypatch.setattr(cards, "NN_TRAINING_MAX", 150)  # 2 chunks of 100 draws
    chunks, count = cards._training_draws(recipe, law)
    drawn = np.concatenate(list(chunks))
    assert count == 200 and drawn.shape == (200, 8, 8)
    first = next(iter(recipes.training_images(recipe, law)))
    np.testing.assert_array_equal(drawn[:100], first)
    monkeypatch.setattr(cards, "NN_TRAINING_MAX", 10**6)  # no cap: all 240
    assert cards._training_draws(recipe, law)[1] == 240
