"""bip.profile's denoising (Tweedie) error profile against the exact-score profile, and the
local ellipse chart it needs for laws with a random number of ellipses."""

import jax
import jax.numpy as jnp
import numpy as np

from bip import ellipses, errors, manifolds, priors, profile


def test_denoising_profile_equals_the_exact_score_profile():
    # A prior with a known error: the exact score of a von Mises law on the circle plus a
    # rotational error of size 0.5 sigma^-1 (relative error 0.50). Tweedie's identity with the
    # floor n / sigma^2 (n = 1; 80% of the loss here, so its form is what is tested) gives the
    # errors of the direct comparison with the exact score on the same draws: measured 0.503
    # vs 0.499, beta -1.0004 vs -0.9997 (the floor's leading-order form is off by O(sigma)).
    law = manifolds.VonMises(manifolds.Circle(), kappa=2.0)
    exact = priors.exact(law)
    noisy = priors.with_error(exact, errors.rotational(), size=0.5, beta=-1.0)
    sigmas = np.array([0.005, 0.01, 0.02])
    key = jax.random.key(0)
    direct = profile.score_error_profile(key, noisy, exact, law, sigmas, num_samples=20000)
    tweedie = profile.denoising_error_profile(key, noisy, law, sigmas, num_samples=20000)
    np.testing.assert_allclose(tweedie["rel_error"], direct["rel_error"], rtol=0.03)
    assert abs(tweedie["beta"] - direct["beta"]) < 0.01
    np.testing.assert_allclose(tweedie["floor_fraction"], 0.8, atol=0.01)


def test_local_ellipse_chart_distance_recovers_the_normal_part_of_the_noise():
    law = ellipses.RandomEllipseLaw(32, count=(2, 3))
    x, chart = law.local_manifold(jax.random.key(0), 3)
    assert np.all(np.isin(np.asarray(chart.intrinsic_dims), [12, 18]))
    # a move along the manifold (perturbed tables) is fitted back: distance ~ 0
    moved = ellipses.render(chart.tables + 0.003 * (chart.tables[..., :1] > 0), 32)
    assert float(jnp.max(chart.distance(moved))) < 1e-3 * float(jnp.linalg.norm(moved[0]))
    # white noise: the distance is its normal part, sqrt(d - n) sigma, within a few per cent
    z = jax.random.normal(jax.random.key(1), x.shape)
    got = np.asarray(chart.distance(moved + 0.01 * z))
    theory = np.sqrt(32 * 32 - np.asarray(chart.intrinsic_dims)) * 0.01
    np.testing.assert_allclose(got, theory, rtol=0.06)
