"""Score networks as priors, the shipped learned priors, and score-error profiles."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import bip.errors
import bip.images
import bip.likelihoods
import bip.manifolds
import bip.networks as networks
import bip.operators
import bip.posteriors
import bip.priorfile as priorfile
import bip.priors
import bip.problems
import bip.profile
from bip.networks import load_prior, network_prior
from bip.priorfile import WeightsError

SHIPPED = ("circle-vonmises", "ellipse-vonmises")
CIRCLE_LAW = bip.manifolds.VonMises(bip.manifolds.Circle(), kappa=1.0, loc=0.0)


CFG = dict(dim=2, width=16, depth=1, num_frequencies=4, sigma_data=1.0)


def _random_net(key, config=CFG, scale=0.3):
    """``(graphdef, state)`` of a net with every weight random (a fresh net outputs F = 0)."""
    graphdef, abstract = nnx.split(networks.abstract_network(config))
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    leaves, treedef = jax.tree.flatten(abstract)
    new = [jnp.asarray(scale * rng.standard_normal(x.shape), x.dtype) for x in leaves]
    return graphdef, jax.tree.unflatten(treedef, new)


@jax.jit
def _jit_score(prior, x, sigma):
    return prior.score(x, sigma)


# --------------------------------------------------------------------------- the network


def test_fresh_net_is_the_gaussian_score_and_outputs_sigma2_s(key):
    # zero-initialised output layer: F = 0, so s = -x / (sigma^2 + sd^2), the score of
    # N(0, (sd^2 + sigma^2) I)
    config = dict(CFG, sigma_data=0.5)
    fresh = networks.build_network(config, 0)
    x = jax.random.normal(key, (7, 2))
    sigma = jnp.linspace(0.01, 50.0, 7)
    apply = jax.jit(
        lambda net, x, sigma: (net.score(x, sigma), net(x, sigma), net.denoise(x, sigma))
    )
    s, _, _ = apply(fresh, x, sigma)
    np.testing.assert_allclose(s, -x / (sigma**2 + 0.25)[:, None], rtol=1e-12)
    graphdef, state = _random_net(key, config)
    net = nnx.merge(graphdef, state)
    s, out, denoised = apply(net, x, sigma)
    np.testing.assert_allclose(out, sigma[:, None] ** 2 * s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(denoised, x + out, rtol=1e-12)
    assert s.dtype == jnp.float64  # the preconditioning follows x (x64 in the tests) ...
    assert apply(net, x.astype(jnp.float32), sigma)[0].dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state))  # ... weights f32
    assert fresh.config == dict(config, mlp_ratio=2, final_norm=True)


def test_network_prior_through_tempered_with_error_and_jit(key):
    circle = bip.manifolds.Circle()
    # two separately built nets of one architecture: equal graphdefs, different weights
    prior_a = network_prior(_random_net(key), (2,), manifold=circle, name="net")
    net_b = networks.build_network(CFG, 1)  # built another way: the graphdef is still equal
    net_b = nnx.merge(nnx.graphdef(net_b), _random_net(jax.random.fold_in(key, 1))[1])
    prior_b = network_prior(net_b, (2,), manifold=circle, name="net")
    assert prior_a.logdensity_fn is None and prior_a.manifold == circle
    x = jax.random.normal(jax.random.fold_in(key, 2), (5, 2))
    sigma = 0.3

    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def score(prior, x, sigma):
        return prior.score(x, sigma)

    s_a = score(prior_a, x, sigma)
    s_b = score(prior_b, x, sigma)  # other weights, same graph: no retrace
    swapped = prior_a.replace(params=prior_a.params.replace(state=prior_b.params.state))
    np.testing.assert_allclose(score(swapped, x, sigma), s_b, rtol=1e-12)
    assert not np.allclose(s_a, s_b)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def tempered_score(prior, alpha, x, sigma):
        return bip.priors.tempered(prior, alpha).score(x, sigma)

    for prior, s, alpha in ((prior_a, s_a, 1.0), (prior_b, s_b, 0.5)):
        np.testing.assert_allclose(
            tempered_score(prior, alpha, x, sigma), sigma**alpha * s, rtol=1e-5, atol=1e-5
        )

    rot = bip.errors.rotational()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def corrupted_score(prior, x, sigma):
        return bip.priors.with_error(prior, rot, size=0.1).score(x, sigma)

    for prior, s in ((prior_a, s_a), (prior_b, s_b)):
        expected = s + 0.1 * rot.field(x)
        np.testing.assert_allclose(corrupted_score(prior, x, sigma), expected, rtol=1e-5, atol=1e-5)
    # eager composition, a batch of sigmas, and vmap over points
    sigmas = jnp.array([0.01, 0.1, 1.0, 10.0, 50.0])
    both = bip.priors.with_error(bip.priors.tempered(prior_a, 1.0), rot, size=0.1)
    out = _jit_score(both, x, sigmas)
    assert out.shape == (5, 2) and np.all(np.isfinite(out))
    vm = jax.jit(jax.vmap(lambda xi, si: prior_a.score(xi, si)))(x, sigmas)
    np.testing.assert_allclose(vm, _jit_score(prior_a, x, sigmas), rtol=1e-5, atol=1e-5)


def test_network_prior_event_shape_and_errors(key):
    graphdef, state = _random_net(key, dict(CFG, dim=4))
    prior = network_prior((graphdef, state), (2, 2))  # 2x2 "images" flattened to R^4
    x = jax.random.normal(key, (3, 2, 2))
    s = _jit_score(prior, x, 0.5)
    assert s.shape == (3, 2, 2)
    flat = jax.jit(lambda st, x: nnx.merge(graphdef, st).score(x, jnp.full((3,), 0.5)))
    np.testing.assert_allclose(s.reshape(3, 4), flat(state, x.reshape(3, 4)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="event_shape"):
        network_prior((graphdef, state), (3,))
    with pytest.raises(TypeError, match="model_or_state"):
        network_prior({"not": "a net"}, (4,))
    with pytest.raises(ValueError, match="x must have trailing shape"):
        prior.score(jnp.ones((3, 4)), 0.5)


# --------------------------------------------------------------------------- shipped priors


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_prior_loads_offline_in_a_fresh_process(name, tmp_path):
    code = (
        "import bip.networks as N, numpy as np\n"
        f"p = N.load_prior({name!r})\n"
        "s = np.asarray(p.score(np.array([[1.2, 0.1]]), 0.1))\n"
        "assert s.shape == (1, 2) and np.isfinite(s).all(), s\n"
        "print(p.name, type(p.manifold).__name__, p.logdensity_fn)\n"
    )
    env = {"PATH": "", "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu", "NO_PROXY": "*"}
    env.update({"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"})
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    manifold = "Circle" if name.startswith("circle") else "Ellipse"
    assert done.stdout.split() == [name, manifold, "None"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_prior_files(name):
    folder = priorfile.PRIORS_DIR / name
    card = priorfile.read_card(folder)
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 10 * 2**20
    assert card["weights_sha256"] == priorfile.sha256_file(folder / "weights.safetensors")
    for fname in ("recipe.toml", "weights.safetensors", "model.json", "README.md"):
        assert (folder / fname).is_file()
    assert card["quality"]["rel_error_at_0.1"] < 0.1
    assert name in priorfile.available_priors()


def test_truncated_or_altered_weights_are_refused(tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(priorfile.PRIORS_DIR / "circle-vonmises", folder)
    weights = folder / "weights.safetensors"
    original = weights.read_bytes()

    weights.write_bytes(original[: len(original) // 2])  # truncated
    with pytest.raises(WeightsError, match="truncated or altered") as info:
        load_prior(folder)
    assert str(weights) in str(info.value)
    with pytest.raises(WeightsError, match="not valid safetensors") as info:
        load_prior(folder, verify=False)  # without the hash, the parser catches it
    assert str(weights) in str(info.value)

    altered = bytearray(original)
    altered[-100] ^= 0xFF  # one flipped byte inside a tensor
    weights.write_bytes(bytes(altered))
    with pytest.raises(WeightsError, match="sha256") as info:
        load_prior(folder)
    assert str(weights) in str(info.value)

    weights.write_bytes(original)
    assert load_prior(folder).name == "circle-vonmises"  # the intact copy loads
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="weights.safetensors"):
        load_prior(folder)


def test_load_prior_errors(tmp_path):
    with pytest.raises(ValueError, match="available priors .*circle-vonmises.*ellipse-vonmises"):
        load_prior("no-such-prior")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prior(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_prior(tmp_path)
    folder = tmp_path / "copy"
    shutil.copytree(priorfile.PRIORS_DIR / "circle-vonmises", folder)
    recipe = folder / "recipe.toml"
    recipe.write_text(recipe.read_text().replace("width = 128", "width = 64"))
    with pytest.raises(WeightsError, match="recipe.toml was altered"):
        load_prior(folder)
    with pytest.raises(WeightsError, match="weights.safetensors: tensor"):
        load_prior(folder, verify=False)  # the weights no longer fit the recipe's net


def test_loaded_circle_prior_meets_the_quality_bar(key):
    prior = load_prior("circle-vonmises")
    exact = bip.priors.exact(CIRCLE_LAW)
    prof = bip.profile.score_error_profile(
        key, prior, exact, CIRCLE_LAW, jnp.array([0.1, 0.2]), num_samples=4096
    )
    assert prof["rel_error"][0] < 0.1, prof
    assert prof["rel_error"][0] > 1e-4  # a real, measured error (not the exact score)


# --------------------------------------------------------------------------- profiles


def test_profile_of_exact_prior_against_itself_is_zero(key):
    exact = bip.priors.exact(CIRCLE_LAW)
    prof = bip.profile.score_error_profile(
        key, exact, exact, CIRCLE_LAW, jnp.geomspace(0.01, 1.0, 5), num_samples=512
    )
    np.testing.assert_array_equal(prof["abs_error"], 0.0)
    np.testing.assert_array_equal(prof["rel_error"], 0.0)
    assert np.all(prof["ref_norm"] > 0)
    assert prof["beta"] == np.inf and prof["alpha_range"] == (0.0, 2.0)


@pytest.mark.parametrize("beta", [-1.5, -0.5, 0.5])
def test_profile_recovers_injected_beta(key, beta):
    exact = bip.priors.exact(CIRCLE_LAW)
    size = 0.05
    noisy = bip.priors.with_error(exact, bip.errors.rotational(), size=size, beta=beta)
    sigmas = jnp.geomspace(0.01, 0.2, 6)
    prof = bip.profile.score_error_profile(key, noisy, exact, CIRCLE_LAW, sigmas, num_samples=1024)
    assert abs(prof["beta"] - beta) < 0.05, prof["beta"]
    # the rotation has norm |x| = sqrt(1 + 2 sigma^2) on average: abs error = size sigma^beta |x|
    expected = size * np.asarray(sigmas) ** beta * np.sqrt(1 + 2 * np.asarray(sigmas) ** 2)
    np.testing.assert_allclose(prof["abs_error"], expected, rtol=0.05)
    assert prof["alpha_range"] == pytest.approx((max(-prof["beta"], 0.0), 2.0))


def test_profile_helpers_and_checks(key):
    assert bip.profile.admissible_alpha(-2.5) is None
    assert bip.profile.admissible_alpha(-1.0) == (1.0, 2.0)
    assert bip.profile.fit_exponent([0.1, 1.0], [0.0, 0.0]) == np.inf
    assert bip.profile.fit_exponent([0.1, 1.0], [10.0, 1.0]) == pytest.approx(-1.0)
    exact = bip.priors.exact(CIRCLE_LAW)
    with pytest.raises(ValueError, match="sigmas"):
        bip.profile.score_error_profile(key, exact, exact, CIRCLE_LAW, [0.1, -1.0])
    with pytest.raises(ValueError, match="num_samples"):
        bip.profile.score_error_profile(key, exact, exact, CIRCLE_LAW, [0.1], num_samples=0)
    sphere = bip.priors.exact(bip.manifolds.Uniform(bip.manifolds.Sphere(3)))
    with pytest.raises(ValueError, match="event shape"):
        bip.profile.score_error_profile(key, exact, sphere, CIRCLE_LAW, [0.1])


# --------------------------------------------------------------------------- the U-Net

UCFG = dict(kind="unet", shape=(12, 10), channels=8, channel_mult=(1, 2), groups=4, patch=2)
IMAGE_SHIPPED = {
    "phantom32-unet": (32, 32),
    "digits16-unet": (16, 16),
    "ellipses128-unet": (128, 128),
}


def _random_unet(key, config=UCFG, scale=0.1):
    """``(graphdef, state)`` of a U-Net with every weight random (a fresh one outputs F = 0)."""
    return _random_net(key, config, scale)


@pytest.mark.slow
def test_unet_shapes_dtypes_and_fresh_gaussian_score(key):
    # 12 x 10 is not a multiple of patch * 2^(levels - 1) = 4: padded and cropped back
    fresh = networks.build_network(UCFG, 0)
    assert isinstance(fresh, networks.UNet) and fresh.event_shape == (12, 10)
    assert fresh.config == dict(
        UCFG,
        shape=[12, 10],
        channel_mult=[1, 2],
        num_res_blocks=1,
        num_frequencies=16,
        sigma_data=0.5,
    )
    x = jax.random.normal(key, (2, 3, 12, 10))
    sigma = jnp.geomspace(0.01, 10.0, 6).reshape(2, 3)  # one sigma per image
    apply = jax.jit(
        lambda net, x, sigma: (net.score(x, sigma), net(x, sigma), net.denoise(x, sigma))
    )
    s, _, _ = apply(fresh, x, sigma)
    expected = -x / (sigma**2 + 0.25)[..., None, None]
    np.testing.assert_allclose(s, expected, rtol=1e-12)  # F = 0: the Gaussian score
    graphdef, state = _random_unet(key)
    net = nnx.merge(graphdef, state)
    s, out, denoised = apply(net, x, sigma)
    assert s.shape == out.shape == denoised.shape == (2, 3, 12, 10)
    assert s.dtype == jnp.float64 and not np.allclose(s, expected, rtol=1e-3)
    np.testing.assert_allclose(out, sigma[..., None, None] ** 2 * s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(denoised, x + out, rtol=1e-12)
    s32 = apply(net, x.astype(jnp.float32), sigma.astype(jnp.float32))[0]
    assert s32.dtype == jnp.float32
    np.testing.assert_allclose(s32, s, rtol=1e-3, atol=1e-3)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state))
    # images are independent (GroupNorm normalises each image on its own)
    changed = apply(net, x.at[0, 0].set(5.0), sigma)[0]
    np.testing.assert_allclose(changed.reshape(6, 12, 10)[1:], s.reshape(6, 12, 10)[1:], rtol=1e-6)
    with pytest.raises(ValueError, match="shape must be"):
        networks.build_network(dict(UCFG, shape=(12,)), 0)
    with pytest.raises(ValueError, match="unknown network kind"):
        networks.build_network(dict(UCFG, kind="transformer"), 0)


def test_unet_prior_through_tempered_with_error_and_jit(key):
    graphdef, state_a = _random_unet(key)
    _, state_b = _random_unet(jax.random.fold_in(key, 1))
    prior_a = network_prior((graphdef, state_a), (12, 10), name="unet")
    prior_b = network_prior(networks.build_network(UCFG, 5), (12, 10), name="unet")
    prior_b = prior_b.replace(params=prior_b.params.replace(state=state_b))
    assert prior_a.logdensity_fn is None and prior_a.event_shape == (12, 10)
    x = jax.random.normal(jax.random.fold_in(key, 2), (2, 3, 12, 10))
    sigma = jnp.array([[0.05, 0.1, 0.2], [0.5, 1.0, 2.0]])  # per image, over two batch axes

    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def score(prior, x, sigma):
        return prior.score(x, sigma)

    s_a = score(prior_a, x, sigma)
    s_b = score(prior_b, x, sigma)  # other weights, same graph: no retrace
    assert s_a.shape == x.shape and not np.allclose(s_a, s_b)
    swapped = prior_a.replace(params=prior_a.params.replace(state=state_b))
    np.testing.assert_allclose(score(swapped, x, sigma), s_b, rtol=1e-12)

    err = bip.errors.random_fourier(jax.random.fold_in(key, 3), (12, 10), lengthscale=3.0)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def composed(prior, alpha, x, sigma):
        return bip.priors.with_error(bip.priors.tempered(prior, alpha), err, 0.1).score(x, sigma)

    for prior, s, alpha in ((prior_a, s_a, 1.0), (prior_b, s_b, 0.5)):
        expected = sigma[..., None, None] ** alpha * s + 0.1 * err.field(x)
        got = composed(prior, alpha, x, sigma)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # vmap over images: the net sees one unbatched (12, 10) image and a scalar sigma
    vm = jax.jit(jax.vmap(lambda xi, si: prior_a.score(xi, si)))
    out = vm(x.reshape(6, 12, 10), sigma.reshape(6))
    np.testing.assert_allclose(out, s_a.reshape(6, 12, 10), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="differs from the U-Net's image shape"):
        network_prior((graphdef, state_a), (120,))
    with pytest.raises(ValueError, match="x must have trailing shape"):
        prior_a.score(jnp.ones((3, 10, 12)), 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(IMAGE_SHIPPED))
def test_shipped_image_prior_loads_offline_in_a_fresh_process(name, tmp_path):
    h, w = IMAGE_SHIPPED[name]
    code = (
        "import bip.networks as N, numpy as np\n"
        f"p = N.load_prior({name!r})\n"
        f"x = np.full((2, {h}, {w}), 0.1)\n"
        "s = np.asarray(p.score(x, np.array([0.05, 1.0])))\n"
        f"assert s.shape == (2, {h}, {w}) and np.isfinite(s).all(), s\n"
        "print(p.name, type(p.manifold).__name__, p.event_shape)\n"
    )
    env = {"PATH": "", "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu", "NO_PROXY": "*"}
    env.update({"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"})
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    manifold = "PhantomManifold" if name.startswith("phantom") else "NoneType"
    assert done.stdout.split()[:2] == [name, manifold]


@pytest.mark.parametrize("name", sorted(IMAGE_SHIPPED))
def test_shipped_image_prior_files_and_card(name, tmp_path):
    folder = priorfile.PRIORS_DIR / name
    card = priorfile.read_card(folder)
    assert sum(p.stat().st_size for p in folder.iterdir()) < 10 * 2**20
    assert card["weights_sha256"] == priorfile.sha256_file(folder / "weights.safetensors")
    assert card["net"]["kind"] == "unet" and card["event_shape"] == list(IMAGE_SHIPPED[name])
    assert name in priorfile.available_priors()
    q = card["quality"]
    samples = q["samples"]
    # reverse-diffusion samples are new images: not closer to the training set than typical
    assert samples["copies"] == 0
    assert samples["nn_distance"]["median"] > 0.5 * samples["nn_baseline"]["median"]
    if name.startswith("phantom"):
        assert q["rel_error_at_0.1"] < 0.2, q["profile"]
        runs = q["manifold_distance"]["runs"]
        assert runs["0"]["relative"] < 0.1  # standard Langevin at sigma = 0.01
        assert runs["0.25"]["denoised_relative"] < 0.1  # TS-0.25, denoised at sigma'
        assert samples["manifold_distance_relative"] < 0.1
    # the hash is checked: one flipped byte is refused
    copy = tmp_path / name
    shutil.copytree(folder, copy)
    weights = copy / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        load_prior(copy)


# --------------------------------------------------------------------------- Fig. 2, learned


@pytest.mark.slow
def test_learned_circle_prior_ts1_gives_uniform_standard_langevin_does_not(key):
    """Issue 4's must-show with the shipped network: TS-1 at sigma = 0.01 (tempered ULA, the
    default step 1e-3, chains from the data law) reaches the uniform law; standard Langevin
    (alpha = 0, h = 1e-5) with the same net stays at p_data, far from uniform.

    TS-1 mixes along the circle in O(1) time (the first harmonic decays as exp(-t)): after
    t = 2.5 and 3.0 (2500 and 3000 steps) the residual of the start is ~0.02 in TV. 2000
    chains x 2 pooled draws give a histogram-noise floor of ~0.04 (36 bins). The card's
    numbers (4000 chains x 4000 steps, standard Langevin 10^4 steps) are larger runs.
    """
    prior = load_prior("circle-vonmises")
    circle = prior.manifold
    p_data = bip.targets.from_log_density(CIRCLE_LAW.chart_log_density)
    uniform = bip.targets.from_log_density(lambda t: jnp.log(circle.volume_density(t)))
    k0, k1, k2 = jax.random.split(key, 3)
    x0 = CIRCLE_LAW.sample(k0, (2000,))
    ts1 = bip.profile.langevin(k1, prior, x0, 0.01, 1.0, 3000, thin=500, observe=circle.coordinate)
    assert not ts1.divergence.any, str(ts1.divergence)
    assert float(bip.samplers.default_step_size(0.01, 1.0)) == pytest.approx(1e-3)
    angles = np.asarray(ts1.samples[:, -2:])
    tv_uniform = bip.metrics.tv_to_law(angles, uniform)
    tv_p_data = bip.metrics.tv_to_law(angles, p_data)
    assert tv_uniform < 0.08, (tv_uniform, tv_p_data)
    assert tv_p_data > 0.2, (tv_uniform, tv_p_data)  # TV(p_data, uniform) = 0.29

    std = bip.profile.langevin(k2, prior, x0, 0.01, 0.0, 1000, observe=circle.coordinate)
    assert not std.divergence.any, str(std.divergence)
    angles = np.asarray(std.samples[:, -1])
    assert bip.metrics.tv_to_law(angles, p_data) < 0.08  # where it started: it barely moves
    assert bip.metrics.tv_to_law(angles, uniform) > 0.2


def test_shipped_circle_card_records_the_fig2_numbers():
    card = priorfile.read_card(priorfile.PRIORS_DIR / "circle-vonmises")
    lv = card["quality"]["langevin"]
    assert lv["sigma"] == 0.01 and lv["ts1"]["step_size"] == pytest.approx(1e-3)
    assert lv["ts1"]["chains"] >= 4000 and lv["ts1"]["steps"] >= 4000
    assert lv["ts1"]["tv_uniform"] < 0.08 and lv["ts1"]["diverged"] == 0
    assert lv["standard"]["steps"] >= 10_000 and lv["standard"]["step_size"] == pytest.approx(1e-5)
    assert lv["standard"]["tv_uniform"] > 0.2 and lv["standard"]["tv_p_data"] < 0.08
    assert (
        "TS-1 is within TV 0.08" in (priorfile.PRIORS_DIR / "circle-vonmises/README.md").read_text()
    )


@pytest.mark.slow
def test_learned_phantom_langevin_samples_stay_near_the_manifold(key):
    """The phantom card's distance claim on a small batch: Langevin with the shipped U-Net at
    sigma = 0.01 from data images keeps its samples within 0.1 of the image norm of the
    phantom manifold (standard Langevin raw; TS-0.25 after one Tweedie step at sigma')."""
    prior = load_prior("phantom32-unet")
    law = bip.images.PhantomLaw(prior.manifold)
    k0, k1, k2 = jax.random.split(key, 3)
    x0 = law.sample(k0, (16,))
    norm = float(jnp.mean(jnp.sqrt(jnp.sum(x0**2, axis=(-2, -1)))))
    std = bip.profile.langevin(k1, prior, x0, 0.01, 0.0, 200).final_state.position
    assert float(jnp.mean(prior.manifold.distance(std))) < 0.1 * norm
    ts = bip.profile.langevin(k2, prior, x0, 0.01, 0.25, 200).final_state.position
    s_eff = 0.01 ** (1 - 0.25 / 2)
    denoised = ts + s_eff**2 * prior.score(ts, s_eff)
    assert float(jnp.mean(prior.manifold.distance(denoised))) < 0.1 * norm


@pytest.mark.slow
def test_learned_prior_refuses_sigma_outside_its_trained_range(key):
    prior = load_prior("phantom32-unet")
    assert prior.sigma_range == (0.01, 10.0)  # the recipe's [training] sigma_min, sigma_max
    blur = bip.operators.gaussian_blur((32, 32), 2.0)
    lik = bip.likelihoods.gaussian(blur, jnp.zeros((32, 32)), 0.05)
    x = jnp.full((32, 32), 0.1)
    circle = bip.priors.exact(bip.manifolds.Uniform(bip.manifolds.Circle()))
    wrapped = [
        prior,
        bip.priors.tempered(prior, 1.0),
        bip.priors.with_error(prior, bip.errors.random_fourier(key, (32, 32), 4), 0.1),
    ]
    for p in wrapped:
        assert p.sigma_range == (0.01, 10.0)
        for sigma in (1e-5, 1e3):
            with pytest.raises(ValueError, match=rf"sigma = {sigma:g} lies outside \[0.01, 10\]"):
                bip.posteriors.sample(key, p, lik, sigma=sigma, num_chains=2, num_steps=2)
            with pytest.raises(ValueError, match="phantom32-unet"):
                bip.posteriors.drift(p, lik, sigma=sigma)
            out = bip.posteriors.drift(p, lik, sigma=sigma, allow_extrapolation=True)(x)
            assert out.shape == (32, 32) and bool(jnp.all(jnp.isfinite(out)))
    # an annealing schedule is checked level by level, before anything is compiled
    with pytest.raises(ValueError, match=r"sigmas = 100, 20 lies outside"):
        bip.posteriors.sample_annealed(
            key, prior, lik, sigmas=[100.0, 20.0, 1.0, 0.05], num_chains=2, num_steps=2
        )
    with pytest.raises(ValueError, match=r"sigmas = 0\.001 lies outside"):
        bip.posteriors.sample_annealed(
            key, prior, lik, sigmas=[1.0, 0.1, 0.001], num_chains=2, num_steps=2
        )
    # exact priors accept any sigma
    assert circle.sigma_range is None
    for sigma in (1e-5, 1e3):
        bip.posteriors.drift(circle, None, sigma=sigma)
        bip.priors.check_sigma(bip.priors.tempered(circle, 1.0), sigma)


def test_spec_with_sigma_outside_the_learned_range_is_a_spec_error():
    raw = tomllib.loads(Path("problems/ct-phantom-16-learned.toml").read_text())
    for key, value in (("sigma", 1e-5), ("anneal_from", 1e3)):
        bad = {**raw, "sampler": {**raw["sampler"], key: value}}
        spec = bip.problems.validate(bad, "bad.toml")
        match = rf"bad.toml: sampler.{key} = .*\[0.01, 10\]"
        with pytest.raises(bip.problems.SpecError, match=match):
            bip.problems.build(spec)
