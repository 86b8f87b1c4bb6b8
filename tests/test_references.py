"""Exact reference posteriors (bip.references) against independent exact laws.

Circle: the references reproduce the quadrature laws of bip.targets. Histogram noise: with
``N`` effective draws (the reference's ESS) and bin probabilities ``p_k``, the expected TV of
an exact sampler is ``sum_k sqrt(p_k (1 - p_k) / (2 pi N))``; each test asserts that floor is
below 0.011 (about half the threshold) before asserting TV < 0.02, so a failure is the law,
not the noise.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from bip import (
    ellipses,
    images,
    likelihoods,
    manifolds,
    memory,
    metrics,
    operators,
    posteriors,
    priors,
    references,
    targets,
)

NUM_BINS = 18
SETTINGS = dict(num_chains=200, num_samples=500, num_warmup=200)


@pytest.fixture(scope="module")
def circle_problem():
    """Von Mises kappa = 4 at pi on the unit circle; observe x1 = -0.5 with noise 0.3."""
    law = manifolds.VonMises(manifolds.Circle(), kappa=4.0, loc=math.pi)
    lik = likelihoods.gaussian(operators.coordinate_projection(2, [0]), jnp.array([-0.5]), 0.3)
    return law, lik


def _angles(ref):
    return np.arctan2(np.asarray(ref.x[..., 1]), np.asarray(ref.x[..., 0]))


def _noise_floor(ref, law) -> float:
    p = law.bin_probabilities(NUM_BINS)
    return float(np.sum(np.sqrt(p * (1 - p) / (2 * math.pi * ref.diagnostics["ess_min"]))))


def _check_reference(ref, law, other_law):
    assert ref.diagnostics["divergences"] == 0
    assert ref.diagnostics["rhat_max"] < 1.01
    assert _noise_floor(ref, law) < 0.011
    angles = _angles(ref)
    assert metrics.tv_to_law(angles, law, NUM_BINS) < 0.02
    assert metrics.tv_to_law(angles, other_law, NUM_BINS) > 0.05  # the check can fail


@pytest.mark.slow
def test_finite_sigma_matches_planar_quadrature(circle_problem, key):
    """sigma = 0.4: the angle of exact draws of p_sigma(x) p(y|x) against the 2-D quadrature
    (stationary_angular_law); the sigma -> 0 limit is 0.10 away in TV (the tube matters)."""
    law, lik = circle_problem
    sigma = 0.4
    ref = references.generic_finite_sigma(key, law, lik, sigma, **SETTINGS)
    assert ref.x.shape == (200, 500, 2) and ref.u.shape == (200, 500, 1)
    exact = targets.stationary_angular_law(priors.exact(law), sigma, 0.0, lik.potential)
    limit = targets.limit_angular_law(law, 0.0, lik.potential)
    _check_reference(ref, exact, limit)


@pytest.mark.slow
def test_generic_limit_matches_quadrature(circle_problem, key):
    law, lik = circle_problem
    ref = references.generic_limit(key, law, lik, **SETTINGS)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(ref.x), axis=-1), 1.0, atol=1e-12)
    exact = targets.limit_angular_law(law, 0.0, lik.potential)
    _check_reference(ref, exact, targets.limit_angular_law(law, 1.0, lik.potential))


@pytest.mark.slow
def test_maxent_limit_matches_quadrature(key):
    """The uniform-on-the-ellipse posterior (volume element sqrt(a^2 sin^2 + b^2 cos^2))."""
    ellipse = manifolds.Ellipse(1.0, 2.0)
    law = manifolds.VonMises(ellipse, kappa=1.0, loc=0.0)
    lik = likelihoods.gaussian(operators.coordinate_projection(2, [0]), jnp.array([0.3]), 0.5)
    ref = references.maxent_limit(key, law, lik, **SETTINGS)
    exact = targets.limit_angular_law(law, 1.0, lik.potential)
    generic = targets.limit_angular_law(law, 0.0, lik.potential)
    t = np.asarray(ref.u[..., 0])  # the chart parameter, not the polar angle, on an ellipse
    assert ref.diagnostics["rhat_max"] < 1.01 and _noise_floor(ref, exact) < 0.011
    assert metrics.tv_to_law(t, exact, NUM_BINS) < 0.02
    assert metrics.tv_to_law(t, generic, NUM_BINS) > 0.05


def test_bad_inputs_are_named(circle_problem, key):
    law, lik = circle_problem
    with pytest.raises(ValueError, match="Gaussian likelihood"):
        references.generic_finite_sigma(key, law, None, 0.1)
    with pytest.raises(ValueError, match="sigma"):
        references.generic_finite_sigma(key, law, lik, -1.0)
    with pytest.raises(TypeError, match="exact-chart law"):
        references.generic_limit(key, priors.exact(law), lik)
    blur = likelihoods.gaussian(operators.coordinate_projection(3, [0]), jnp.array([0.0]), 1.0)
    with pytest.raises(ValueError, match="shape"):
        references.maxent_limit(key, law, blur)


def test_conditional_draws_have_the_closed_form_law(key):
    """x | u, y by Matheron's rule against the closed form N(Phi + sigma^2 A^T C^-1 r,
    sigma^2 I - sigma^4 A^T C^-1 A), C = s^2 I + sigma^2 A A^T (20000 draws: means within 4
    standard errors, covariances within 0.02 of their scale)."""
    law = manifolds.VonMises(manifolds.Circle(), kappa=1.0)
    a = jnp.array([[1.0, 0.5], [-0.3, 2.0], [0.7, 0.2]])
    y = jnp.array([0.4, -0.2, 1.1])
    s, sigma = 0.2, 0.3
    lik = likelihoods.gaussian(operators.matrix(a), y, s)
    chart = references.chart_of(law)
    whitened, w0, noise_std, chol = references._gaussian_parts(lik, chart, sigma)
    u = jnp.full((1, 20000, 1), 0.7)
    x = np.asarray(
        references._conditional_images(key, chart, u, whitened, w0, noise_std, chol, sigma)
    ).reshape(-1, 2)
    phi = np.asarray(chart.chart(u[0, 0]))
    a = np.asarray(a)
    c_inv = np.linalg.inv(s**2 * np.eye(3) + sigma**2 * a @ a.T)
    mean = phi + sigma**2 * a.T @ c_inv @ (np.asarray(y) - a @ phi)
    cov = sigma**2 * np.eye(2) - sigma**4 * a.T @ c_inv @ a
    se = np.sqrt(np.diag(cov) / x.shape[0])
    assert np.all(np.abs(x.mean(0) - mean) < 4 * se)
    np.testing.assert_allclose(np.cov(x.T), cov, atol=0.02 * np.max(np.abs(cov)))


def _small_ct(key):
    """8-view CT of a 16x16 phantom with free centre, noise 0.5; the remaining 4 keys."""
    law = images.PhantomLaw(images.PhantomManifold(size=16, free=("cx", "cy")))
    k_truth, k_noise, *keys = jax.random.split(key, 6)
    radon = operators.radon(16, jnp.linspace(0.0, 180.0, 8, endpoint=False))
    y = radon(law.sample(k_truth)) + 0.5 * jax.random.normal(k_noise, radon.output_shape)
    return law, likelihoods.gaussian(radon, y, 0.5), keys


@pytest.mark.slow
def test_bip_langevin_matches_exact_phantom_posterior(key):
    """A cheap version of bench/check_references.py (there: 32x32, 6 parameters, 16 views):
    8-view CT of a 16x16 phantom with free centre, noise 0.5, sigma = 0.05, alpha = 0. bip's
    ULA (exact Laplace prior, c = 0.1, 16 chains x 20 draws, thinned by 30 steps from starts
    on the manifold) against the exact finite-sigma reference: energy distance within 2x the
    reference-vs-reference floor at 320 draws each, per-pixel means within 3 Monte Carlo
    standard errors for >= 99% of pixels, pixel stds within 6% (ULA at c = 0.1 inflates them
    by about 2%: measured 1.02)."""
    law, lik, (k_ref, k_init, k_run, k_cmp) = _small_ct(key)
    ref = references.generic_finite_sigma(
        k_ref, law, lik, 0.05, num_chains=4, num_samples=400, num_warmup=200, thin=2
    )
    assert ref.diagnostics["rhat_max"] < 1.01 and ref.diagnostics["divergences"] == 0
    chains = 16
    run = posteriors.sample(
        k_run, priors.exact(law), lik, sigma=0.05, num_chains=chains, num_steps=600,
        burn_in=200, thin=30, c=0.1, initial_positions=law.sample(k_init, (chains,)),
        progress=False,
    )  # fmt: skip
    out = references.compare(k_cmp, run.samples, ref)
    assert out["num_draws"] == 320
    assert out["ratio"] < 2.0
    assert out["fraction_within_3se"] >= 0.99
    assert 0.94 < out["std_ratio_median"] < 1.06


@pytest.mark.slow
def test_sphere_von_mises_fisher_mean(key):
    """vMF(kappa = 5) on S^2 through the hyperspherical chart (area element sin u_1):
    E[x] = (coth kappa - 1/kappa) mu; 4 x 2000 draws, Monte Carlo error about 0.003."""
    sphere = manifolds.Sphere(3)
    mu = jnp.array([0.0, 0.6, 0.8])
    law = manifolds.VonMisesFisher(sphere, kappa=5.0, mean_direction=mu)
    ref = references.generic_limit(key, law, None, num_chains=4, num_samples=2000)
    assert ref.diagnostics["rhat_max"] < 1.01
    expected = (1 / math.tanh(5.0) - 1 / 5.0) * np.asarray(mu)
    np.testing.assert_allclose(np.asarray(ref.x).mean(axis=(0, 1)), expected, atol=0.015)


@pytest.mark.parametrize(
    "manifold",
    [ellipses.grid_manifold(2, size=16), ellipses.shepp_logan_manifold(32)],
    ids=["ellipse-grid", "shepp-logan-family"],
)
def test_multi_ellipse_laws_have_exact_charts(manifold):
    """The data laws of the 'ellipse-grid' and 'shepp-logan-family' sources: the references'
    chart is the manifold's (the box, the rendering); on the grid (12 coordinates) its volume
    element (jacfwd of the whole image) agrees with the manifold's metric, which is assembled
    one ellipse at a time (the Shepp-Logan family is the same class)."""
    chart = references.chart_of(images.PhantomLaw(manifold))
    lo, hi = (np.asarray(v) for v in manifold.bounds)
    assert chart.dim == manifold.intrinsic_dim == lo.size
    assert chart.event_shape == (manifold.size, manifold.size)
    np.testing.assert_array_equal(chart.lower, lo)
    np.testing.assert_array_equal(chart.upper, hi)
    u = jnp.asarray(lo + np.linspace(0.2, 0.8, lo.size) * (hi - lo))
    np.testing.assert_allclose(jax.jit(chart.chart)(u), manifold.chart(u), atol=1e-12)
    if manifold.count == 2:
        metric = np.asarray(jax.jit(manifold.metric)(u))
        expected = 0.5 * np.linalg.slogdet(metric)[1]
        np.testing.assert_allclose(float(jax.jit(chart.log_volume)(u)), expected, rtol=1e-9)


def test_finite_sigma_memory_is_estimated_and_refused_before_compute(key, monkeypatch):
    """8-view CT of 16x16 images: m = 128 measurements, d = 256 pixels, (2 m d + 3 m^2) x 8
    bytes; with less memory than that, the reference refuses before NUTS and names the sizes
    and the ways out."""
    radon = operators.radon(16, jnp.linspace(0.0, 180.0, 8, endpoint=False))
    assert references.check_finite_sigma_memory(radon) == (2 * 128 * 256 + 3 * 128**2) * 8
    with pytest.raises(memory.MemoryBudgetError, match=r"\(128, 256\) matrix.*'maxent'"):
        references.check_finite_sigma_memory(radon, available=10**5)
    law = images.PhantomLaw(ellipses.grid_manifold(1, size=16))
    lik = likelihoods.gaussian(radon, jnp.zeros(radon.output_shape), 0.5)
    monkeypatch.setattr(memory, "available_memory", lambda: 10**5)
    with pytest.raises(memory.MemoryBudgetError, match="matrix"):
        references.generic_finite_sigma(key, law, lik, 0.05)


def _ar1(rng, chains, draws, rho, shift=0.0, dim=2):
    """Stationary AR(1) chains ``(chains, draws, dim)`` with N(shift, 1) marginals."""
    x = np.empty((chains, draws, dim))
    x[:, 0] = rng.normal(size=(chains, dim))
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + math.sqrt(1 - rho**2) * rng.normal(size=(chains, dim))
    return x + shift


def test_chain_energy_distance_is_unbiased_on_correlated_chains():
    """48 chains x 20 draws with lag-1 correlation 0.95 against 8 x 250 independent draws of
    the same law, 30 repetitions: the chain-aware distance averages 0 within its Monte Carlo
    error (measured -0.0017, error 0.0024) where the V-statistic averages 0.018, and the
    jackknife standard error (0.018) is within a factor 2 of the spread over repetitions
    (0.013)."""
    rng = np.random.default_rng(0)
    ours, v_stat, se = [], [], []
    for _ in range(30):
        x, y = _ar1(rng, 48, 20, 0.95), rng.normal(size=(8, 250, 2))
        d, s = references.chain_energy_distance(x, y)
        ours.append(d)
        se.append(s)
        v_stat.append(metrics.energy_distance(x.reshape(-1, 2), y.reshape(-1, 2)))
    error = np.std(ours) / math.sqrt(30)
    assert abs(np.mean(ours)) < 3 * error, (np.mean(ours), error)
    assert np.mean(v_stat) > 5 * error, (np.mean(v_stat), error)
    assert 0.5 < np.mean(se) / np.std(ours) < 2.0, (np.mean(se), np.std(ours))


def test_chain_energy_distance_of_a_gaussian_shift():
    """N(0, 1) against N(0.5, 1): ``2 E|X - Y| - 2 E|X - X'|`` with ``X - Y ~ N(-0.5, 2)``
    and ``E|X - X'| = 2 / sqrt(pi)`` (0.1396), from correlated chains (lag-1 0.5)."""
    rng = np.random.default_rng(1)
    delta, s = 0.5, math.sqrt(2.0)
    folded = s * math.sqrt(2 / math.pi) * math.exp(-(delta**2) / 4) + delta * (
        1 - 2 * scipy.stats.norm.cdf(-delta / s)
    )
    exact = 2 * folded - 4 / math.sqrt(math.pi)
    x, y = _ar1(rng, 80, 50, 0.5, dim=1), _ar1(rng, 80, 50, 0.5, shift=delta, dim=1)
    d, se = references.chain_energy_distance(x, y)
    assert abs(d - exact) < 3 * se and se < 0.2 * exact, (d, se, exact)
    with pytest.raises(ValueError, match="chains >= 3"):
        references.chain_energy_distance(x[:2], y)
    with pytest.raises(ValueError, match="same n"):
        references.chain_energy_distance(x, np.zeros((4, 5, 2)))
