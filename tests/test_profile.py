"""bip.profile's denoising (Tweedie) error profile against the exact-score profile, and the
local ellipse chart it needs for laws with a random number of ellipses."""

import jax
import jax.numpy as jnp
import numpy as np

from bip import ellipses, errors, images, priors, profile


def test_denoising_profile_equals_the_exact_score_profile_on_a_phantom_law():
    # A prior with a known error: the exact-chart score plus a smooth random error of size
    # 10 sigma^-1 (relative error about 0.6, the n / sigma^2 floor about 6% of the loss).
    # Tweedie's identity with that floor must give the errors of the direct comparison with
    # the exact score (same draws).
    law = images.PhantomLaw(images.PhantomManifold(size=16))
    exact = priors.exact(law)
    field = errors.smooth_random_field(jax.random.key(3), (16, 16))
    noisy = priors.with_error(exact, field, size=10.0, beta=-1.0)
    sigmas = np.array([0.01, 0.02, 0.04])
    key = jax.random.key(0)
    direct = profile.score_error_profile(key, noisy, exact, law, sigmas, num_samples=32)
    tweedie = profile.denoising_error_profile(key, noisy, law, sigmas, num_samples=32)
    np.testing.assert_allclose(tweedie["rel_error"], direct["rel_error"], rtol=0.03)
    assert abs(tweedie["beta"] - direct["beta"]) < 0.03
    assert np.all(tweedie["floor_fraction"] < 0.1)


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
