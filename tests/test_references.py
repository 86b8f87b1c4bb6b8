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

from bip import (
    images,
    likelihoods,
    manifolds,
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
