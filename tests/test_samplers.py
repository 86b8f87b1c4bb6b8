"""Samplers: sampled laws against exact finite-sigma targets, Fig. 4, divergence reports."""

import warnings

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bip

SIGMA = 0.1
CIRCLE = bip.manifolds.Circle()
DATA = bip.manifolds.VonMises(CIRCLE, kappa=4.0, loc=np.pi)
PRIOR = bip.priors.exact(DATA)


def _angles(x):
    return jnp.arctan2(x[..., 1], x[..., 0])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ula", "mala"])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_sampled_angle_law_matches_exact_finite_sigma_target(method, alpha):
    law = bip.targets.stationary_angular_law(PRIOR, SIGMA, alpha)
    target = bip.priors.tempered(PRIOR, alpha)
    h = bip.samplers.default_step_size(SIGMA, alpha)
    if method == "ula":
        algo = bip.samplers.ula(lambda x: target.score(x, SIGMA), h)
    else:
        algo = bip.samplers.mala(lambda x: target.logdensity(x, SIGMA), 3 * h)
    x0 = DATA.sample(jax.random.key(1), (10_000,))
    result = bip.samplers.run(
        jax.random.key(2), algo, x0, num_steps=2000, thin=500, observe=_angles
    )
    assert not result.divergence.any
    # 10^4 chains, histogram pooled over the last three draws (500 steps apart). Exact draws
    # give a TV of 0.5 sum_k sqrt(2 p_k (1 - p_k) / (pi n)) on average (n = 3 * 10^4: 0.0091
    # at alpha 0, 0.0135 at 1); measured over seeds 0-7 (keys 1 + 100 s, 2 + 100 s):
    # ula 0.0098 +- 0.0020 / 0.0136 +- 0.0013, mala 0.0085 +- 0.0015 / 0.0134 +- 0.0017, the
    # floor itself (no visible step-size bias). Bound: the floor + 4 sd (0.008).
    p = np.asarray(law.bin_probabilities())
    floor = 0.5 * np.sum(np.sqrt(2 * p * (1 - p) / (np.pi * 3 * result.samples.shape[0])))
    tv = bip.metrics.tv_to_law(result.samples[:, -3:], law)
    assert tv < floor + 0.008, f"TV {tv:.4f} to the exact target p_sigma^(sigma^alpha)"
    if method == "mala":
        # mean over 10^4 chains x 2000 steps: 0.962622 +- 0.000011 (alpha 0), 0.957227 +-
        # 0.000026 (alpha 1) over the same 8 seeds; 1.3e-4 is 5 sd of the larger
        acceptance = float(jnp.mean(result.info_mean.acceptance_rate))
        assert acceptance == pytest.approx({0.0: 0.96262, 1.0: 0.95723}[alpha], abs=1.3e-4)


def test_tempered_target_differs_from_untempered():
    """The check above can fail: the alpha = 1 samples are far from the alpha = 0 target."""
    law0 = bip.targets.stationary_angular_law(PRIOR, SIGMA, 0.0)
    law1 = bip.targets.stationary_angular_law(PRIOR, SIGMA, 1.0)
    # quadrature, no noise: 0.510963 on the default grid, 0.510962 on one twice as fine
    tv = bip.metrics.total_variation(law0.bin_probabilities(), law1.bin_probabilities())
    assert tv == pytest.approx(0.51096, abs=1e-4)


# Fig. 4 (reverse diffusion with the corrupted score misses p_data, TS-1 recovers the uniform
# law, the exact score reaches p_data): tests/test_notebooks.py runs the notebook's fast mode
# and asserts the same numbers (5000 chains).


def test_predictor_corrector_with_tempered_corrector_runs_to_the_manifold():
    sigmas = bip.samplers.geometric_sigmas(1.0, 0.05, 50)
    out = bip.samplers.reverse_diffusion(
        jax.random.key(3), PRIOR, 2000, sigmas, corrector_steps=5, corrector_alpha=1.0
    )
    # samples of the tempered corrector sit at distance ~ sigma^(1 - alpha/2) of the circle
    # (0.22 at sigma 0.05): measured 0.1609 +- 0.0032 over 40 seeds (keys 3 + 100 s, s < 40;
    # 2000 chains), so the band is 4 sd
    assert bip.metrics.mean_distance(CIRCLE, out.positions) == pytest.approx(0.161, abs=0.013)


def test_same_seed_same_result_and_thinning_shapes():
    algo = bip.samplers.ula(lambda x: PRIOR.score(x, SIGMA), 1e-3)
    x0 = DATA.sample(jax.random.key(1), (64,))
    a = bip.samplers.run(jax.random.key(5), algo, x0, num_steps=100, thin=10, burn_in=5)
    b = bip.samplers.run(jax.random.key(5), algo, x0, num_steps=100, thin=10, burn_in=5)
    c = bip.samplers.run(jax.random.key(6), algo, x0, num_steps=100, thin=10, burn_in=5)
    assert a.samples.shape == (64, 10, 2)  # (chains, draws, *event)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.allclose(a.samples, c.samples)
    # the kernel is exactly x + h * drift + sqrt(2 h) z (BlackJAX sgld fed the full drift)
    state = bip.samplers.init(x0[0])
    key = jax.random.key(9)
    new, info = bip.samplers.build_kernel()(key, state, lambda x: PRIOR.score(x, SIGMA), 1e-3)
    z = jax.random.normal(key, (2,))
    expected = x0[0] + 1e-3 * PRIOR.score(x0[0], SIGMA) + jnp.sqrt(2e-3) * z
    np.testing.assert_allclose(new.position, expected, rtol=1e-12)


def test_diverging_chains_are_reported_by_index_not_returned_as_nan():
    # a well around 0 that repels beyond |x| = 10^(1/2): chains started far out explode
    algo = bip.samplers.ula(lambda x: -x + 0.01 * x * jnp.sum(x**2) ** 2, 0.1)
    x0 = jnp.array([[0.01, 0.0], [5.0, 0.0], [0.0, 0.02], [-4.0, 3.0]])
    with pytest.warns(bip.samplers.DivergenceWarning, match="2 of 4 chains diverged: 1"):
        result = bip.samplers.run(jax.random.key(0), algo, x0, num_steps=50, max_norm=1e6)
    np.testing.assert_array_equal(np.asarray(result.diverged), [False, True, False, True])
    assert np.all(np.isfinite(np.asarray(result.samples)))
    assert np.all(np.asarray(result.diverged_at)[[1, 3]] >= 0)
    assert result.healthy_samples.shape == (2, 50, 2)
    assert "step size" in result.divergence.hint
    with pytest.raises(bip.samplers.DivergenceError, match="diverged"):
        bip.samplers.run(jax.random.key(0), algo, x0, num_steps=50, on_divergence="raise")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: bip.samplers.ula(lambda x: x, float("nan")), "step_size must be finite"),
        (lambda: bip.samplers.ula(lambda x: x, float("inf")), "step_size must be finite"),
        (lambda: bip.samplers.ula(lambda x: x, 0.0), "step_size must be > 0"),
        (lambda: bip.samplers.default_step_size(0.0, 1.0), "sigma must be > 0"),
        (lambda: bip.samplers.default_step_size(0.1, 2.5), "alpha must lie in"),
        (
            lambda: bip.samplers.run(
                jax.random.key(0), bip.samplers.ula(lambda x: x, 0.1), jnp.ones((2, 2)), 0
            ),
            "num_steps",
        ),
        (
            lambda: bip.samplers.run(
                jax.random.key(0), bip.samplers.ula(lambda x: x, 0.1), jnp.full((2, 2), jnp.nan), 5
            ),
            "initial_positions has 4 non-finite",
        ),
        (lambda: bip.samplers.geometric_sigmas(0.1, 1.0, 10), "sigma_min"),
    ],
)
def test_bad_sampler_input_is_a_clear_error(call, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=match):
            call()


def test_run_traces_pytree_algorithms_once_for_all_their_values():
    traces = []

    def drift(sigma, x):  # a Partial pytree drift: sigma is a traced leaf
        traces.append(None)
        return PRIOR.score(x, sigma)

    x0 = DATA.sample(jax.random.key(1), (32,))
    out = [
        bip.samplers.run(
            jax.random.key(seed),
            bip.samplers.ula(jax.tree_util.Partial(drift, sigma), step),
            x0 + shift,
            num_steps=20,
            thin=10,
        ).samples
        for seed, sigma, step, shift in [(0, 0.1, 1e-3, 0.0), (1, 0.2, 2e-3, 0.1)]
    ]
    assert len(traces) == 2  # eval_shape of the step and the loop, in the first call only
    assert not np.allclose(out[0], out[1])
    # the second values are used: a closure with them baked in gives the same draws
    closure = bip.samplers.ula(lambda x: PRIOR.score(x, 0.2), 2e-3)
    expected = bip.samplers.run(jax.random.key(1), closure, x0 + 0.1, num_steps=20, thin=10)
    np.testing.assert_allclose(out[1], expected.samples, rtol=1e-12, atol=1e-12)
    # a new closure is a new structure: it compiles again, as it always did
    bip.samplers.run(
        jax.random.key(0), bip.samplers.ula(lambda x: drift(0.1, x), 1e-3), x0, 20, thin=10
    )
    assert len(traces) == 4


def test_mala_is_blackjax_mala():
    def logdensity(x):
        return PRIOR.logdensity(x, SIGMA)

    x0 = DATA.sample(jax.random.key(1), (64,))
    ours = bip.samplers.run(jax.random.key(2), bip.samplers.mala(logdensity, 3e-3), x0, 50)
    theirs = bip.samplers.run(jax.random.key(2), blackjax.mala(logdensity, 3e-3), x0, 50)
    np.testing.assert_array_equal(ours.samples, theirs.samples)
    np.testing.assert_array_equal(ours.info_mean.acceptance_rate, theirs.info_mean.acceptance_rate)


def _poisoned(prior):
    """``prior`` whose score is NaN wherever ``x[0] > 2``: a chain that gets there diverges."""

    def score(params, x, sigma):
        return jnp.where(x[..., :1] > 2.0, jnp.nan, PRIOR.score_fn(params, x, sigma))

    return prior.replace(score_fn=score)


def _assert_frozen_and_reported(run, expected, positions, starts=None):
    diverged = np.asarray(run.diverged)
    assert set(expected) <= set(np.flatnonzero(diverged).tolist())
    assert run.divergence.indices.tolist() == np.flatnonzero(diverged).tolist()
    assert np.all(np.asarray(run.diverged_at)[expected] == 0)  # NaN at the first step
    for leaf in jax.tree_util.tree_leaves(positions):
        assert np.all(np.isfinite(np.asarray(leaf)))  # never NaN returned
    if starts is not None:  # frozen at the last finite position: where they started
        np.testing.assert_array_equal(np.asarray(run.final_state.position)[expected], starts)


def test_every_sampler_freezes_and_reports_chains_whose_drift_turns_nan():
    """All multi-chain samplers run through bip.chains.run: chains 1 and 4 start where the
    drift is NaN (MALA: the log density), the others on the circle (a score at sigma = 0.1
    keeps them near it)."""
    prior = _poisoned(PRIOR)
    x0 = DATA.sample(jax.random.key(0), (6,)).at[jnp.array([1, 4])].set(jnp.array([3.0, 0.0]))
    bad = [1, 4]
    lik = bip.likelihoods.gaussian(
        bip.operators.coordinate_projection(2, [0]), jnp.array([-0.5]), 0.3
    )
    common = dict(num_chains=6, num_steps=20, initial_positions=x0, on_divergence="ignore")
    h = 1e-3
    runs = {
        "mala": bip.samplers.run(
            jax.random.key(1),
            bip.samplers.mala(lambda x: jnp.where(x[0] > 2, jnp.nan, -0.5 * x @ x), h),
            x0,
            20,
            on_divergence="ignore",
        ),
        "posterior": bip.posteriors.sample(jax.random.key(1), prior, lik, sigma=SIGMA, **common),
        "annealed": bip.posteriors.sample_annealed(
            jax.random.key(1),
            prior,
            lik,
            sigmas=bip.samplers.geometric_sigmas(0.3, SIGMA, 3),
            steps_per_level=5,
            **common,
        ),
    }
    for name, run in runs.items():
        _assert_frozen_and_reported(run, bad, run.samples, np.asarray(x0)[bad])
        assert not np.any(np.asarray(run.diverged)[[0, 2, 3, 5]]), name
    with pytest.warns(bip.samplers.DivergenceWarning, match=r"2 of 6 chains diverged: 1 \(step 0"):
        bip.posteriors.sample(
            jax.random.key(1), prior, lik, sigma=SIGMA, **{**common, "on_divergence": "warn"}
        )
    joint = bip.posteriors.sample_with_noise_level(
        jax.random.key(1),
        prior,
        bip.operators.coordinate_projection(2, [0]),
        jnp.array([-0.5]),
        __import__("numpyro").distributions.HalfNormal(0.5),
        sigma=SIGMA,
        **common,
    )
    _assert_frozen_and_reported(joint.run, bad, (joint.x, joint.noise_std))
    # reverse diffusion from N(0, 3^2): the chains starting at x[0] > 2 diverge at step 0
    sigmas = bip.samplers.geometric_sigmas(3.0, 0.1, 10)
    out = bip.samplers.reverse_diffusion(
        jax.random.key(2), prior, 64, sigmas, on_divergence="ignore"
    )
    start = 3.0 * jax.random.normal(jax.random.split(jax.random.key(2))[0], (64, 2))
    first = np.flatnonzero(np.asarray(start[:, 0]) > 2.0).tolist()
    assert first  # the check below has something to check
    assert set(first) <= set(out.divergence.indices.tolist())
    assert out.divergence.indices.tolist() == np.flatnonzero(np.asarray(out.diverged)).tolist()
    assert np.all(np.isfinite(np.asarray(out.positions)))
    # the sweeps' cells (bip.experiments, bip.image_sweeps) run their chains through it too
    error = bip.errors.angular_cosine(2.0)
    cell = bip.experiments._make_sampler(prior, error, None, 2)
    cell_run = cell(jax.random.key(3), x0, jnp.arange(6.0), SIGMA, 1.0, h, 8)
    _assert_frozen_and_reported(cell_run, bad, cell_run.samples)
