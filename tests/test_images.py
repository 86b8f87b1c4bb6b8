"""The phantom image manifold, its exact-chart score against brute-force quadrature, data loaders.

Batch shapes are kept fixed per law so each jitted function compiles once.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

import bip.priors
from bip import images

SIZE = 32


@pytest.fixture(scope="module")
def manifold():
    return images.PhantomManifold(size=SIZE)


@pytest.fixture(scope="module")
def family():
    """A 2-parameter sub-family (major semi-axis and rotation): brute-force quadrature works."""
    return images.PhantomLaw(images.PhantomManifold(size=SIZE, free=("a", "theta")))


# --------------------------------------------------------------------------- chart


def test_chart_shapes_and_range(manifold):
    law = images.PhantomLaw(manifold)
    u = law.sample_coordinates(jax.random.key(0), (2, 3))
    assert u.shape == (2, 3, 6)
    x = manifold.chart(u)
    assert x.shape == (2, 3, SIZE, SIZE)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert law.sample(jax.random.key(1), (4,)).shape == (4, SIZE, SIZE)
    assert manifold.event_shape == (SIZE, SIZE)
    assert (manifold.ambient_dim, manifold.intrinsic_dim) == (SIZE * SIZE, 6)
    z = manifold._to_unit(u)
    assert bool(jnp.all((z >= 0) & (z <= 1)))
    lo, hi = manifold.bounds
    assert bool(jnp.all(jnp.isfinite(law.chart_log_density(u))))
    assert float(law.chart_log_density(hi + 0.1)) == -np.inf


def test_chart_jacobian_matches_finite_differences(manifold):
    u = images.PhantomLaw(manifold).sample_coordinates(jax.random.key(2))
    jac = np.asarray(manifold.jacobian(u))  # (size, size, 6)
    for i in range(6):
        h = 1e-6
        e = jnp.zeros(6).at[i].set(h)
        fd = (np.asarray(manifold.chart(u + e)) - np.asarray(manifold.chart(u - e))) / (2 * h)
        np.testing.assert_allclose(jac[..., i], fd, atol=1e-7 * np.abs(jac[..., i]).max() + 1e-9)
    # the metric is positive definite: the chart is an immersion
    assert float(jnp.min(jnp.linalg.eigvalsh(manifold.metric(u)))) > 0
    assert float(manifold.volume_density(u)) > 0


# --------------------------------------------------------------------------- nearest point


def test_coordinate_recovers_clean_and_noisy_images(manifold):
    law = images.PhantomLaw(manifold)
    u = law.sample_coordinates(jax.random.key(3), (8,))
    x = manifold.chart(u)
    lo, hi = manifold.bounds
    np.testing.assert_allclose(manifold.coordinate(x), u, atol=1e-8 * float(jnp.max(hi - lo)))
    np.testing.assert_allclose(manifold.distance(x), 0.0, atol=1e-7)

    sigma = 0.02
    noise = sigma * jax.random.normal(jax.random.key(4), x.shape)
    u_hat = manifold.coordinate(x + noise)
    # posterior standard deviation of u given x: sigma sqrt(diag(g^-1)); allow 6 of them
    sd = sigma * jnp.sqrt(jnp.diagonal(jnp.linalg.inv(manifold.metric(u)), axis1=-2, axis2=-1))
    assert bool(jnp.all(jnp.abs(u_hat - u) < 6 * sd)), np.asarray(jnp.abs(u_hat - u) / sd)
    # the noise is almost all normal to M (n = 6 of d = 1024 directions): distance ~ |noise|
    ratio = manifold.distance(x + noise) / jnp.sqrt(jnp.sum(noise**2, axis=(-2, -1)))
    assert bool(jnp.all((ratio > 0.99) & (ratio <= 1.0))), np.asarray(ratio)
    projected = manifold.project(x + noise)
    assert projected.shape == x.shape
    assert float(jnp.max(jnp.abs(projected - manifold.chart(u_hat)))) < 1e-12


def test_coordinate_clamps_to_the_box(manifold):
    lo, hi = manifold.bounds
    u = 0.5 * (lo + hi)
    u_out = u.at[5].set(hi[5] + 0.3)  # intensity beyond the box
    x = jnp.broadcast_to(manifold.chart(u_out), (8, SIZE, SIZE))
    u_hat = manifold.coordinate(x)
    np.testing.assert_allclose(u_hat[:, 5], hi[5], atol=1e-12)
    assert bool(jnp.all((manifold._to_unit(u_hat) >= 0) & (manifold._to_unit(u_hat) <= 1)))
    # the best point in the box beats simply clamping the intensity (the ellipse grows instead)
    clamped = u.at[5].set(hi[5])
    best = jnp.sum((manifold.chart(u_hat[0]) - x[0]) ** 2)
    assert float(best) < float(jnp.sum((manifold.chart(clamped) - x[0]) ** 2))


# --------------------------------------------------------------------------- exact-chart score


def _brute_force(manifold, x, sigma, z_centre, half_width, nodes=64):
    """log p_sigma(x) and Tweedie score by Gauss-Legendre quadrature over a chart window."""
    g, gw = np.polynomial.legendre.leggauss(nodes)
    axes, weights = [], []
    for c, h in zip(z_centre, half_width, strict=True):
        a, b = max(0.0, c - h), min(1.0, c + h)  # the law lives on the box [0, 1]^n
        axes.append(0.5 * (b - a) * g + 0.5 * (a + b))
        weights.append(0.5 * (b - a) * gw)
    z = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
    w = np.prod(np.stack(np.meshgrid(*weights, indexing="ij"), -1).reshape(z.shape), axis=-1)
    pts = np.asarray(manifold.chart(manifold._from_unit(jnp.asarray(z)))).reshape(len(z), -1)
    xf = np.asarray(x).reshape(-1)
    logits = np.log(w) - np.sum((pts - xf) ** 2, axis=-1) / (2 * sigma**2)
    logp = (
        logsumexp(logits)
        - 0.5 * xf.size * np.log(2 * np.pi * sigma**2)
        - np.log(float(manifold.box_volume))
    )
    post = np.exp(logits - logsumexp(logits))
    return logp, ((post @ pts - xf) / sigma**2).reshape(x.shape)


@pytest.mark.parametrize("sigma", [0.05, 0.1])
def test_exact_chart_score_matches_brute_force(family, sigma):
    m = family.manifold
    rng = np.random.default_rng(int(sigma * 1000))
    z_true = rng.uniform(0.1, 0.9, size=(3, 2))
    z_true[2, 0] = 0.5 * sigma  # one image near the boundary of the box (a ~ its lower bound)
    u = m._from_unit(jnp.asarray(z_true))
    x = m.chart(u) + sigma * jnp.asarray(rng.normal(size=(3, SIZE, SIZE)))
    logp, score = family.smoothed(x, sigma, 1.0)
    assert logp.shape == (3,) and score.shape == x.shape
    z_hat = np.asarray(m._to_unit(m.coordinate(x)))
    jac = np.asarray(m.jacobian(m._from_unit(jnp.asarray(z_hat)))).reshape(3, -1, 2)
    jac = jac * np.asarray(m.bounds[1] - m.bounds[0])
    for i in range(3):
        sd = sigma * np.sqrt(np.diag(np.linalg.inv(jac[i].T @ jac[i])))
        logp_ref, score_ref = _brute_force(m, x[i], sigma, z_hat[i], 10 * sd)
        s = np.asarray(score[i])
        # the whole score (dominated by the Theta(sigma^-2) normal pull): 1e-3 relative
        assert np.linalg.norm(s - score_ref) <= 1e-3 * np.linalg.norm(score_ref)
        # its Theta(1) part, the one that carries p_data (SCIENCE.md sec. 2)
        normal = np.asarray(m.chart(m._from_unit(jnp.asarray(z_hat[i])))) - np.asarray(x[i])
        o1_ref = score_ref - normal / sigma**2
        tol = 1e-2 if i < 2 else 5e-2
        assert np.linalg.norm(s - score_ref) <= tol * np.linalg.norm(o1_ref)
        assert abs(float(logp[i]) - logp_ref) < 2e-2


def test_smoothed_score_is_the_gradient_of_its_log_density(family):
    m = family.manifold
    sigma = 0.05
    x = family.sample(jax.random.key(5), ()) + sigma * jax.random.normal(
        jax.random.key(6), (SIZE, SIZE)
    )
    v = jax.random.normal(jax.random.key(7), (SIZE, SIZE))
    eps = 1e-5
    batch = jnp.stack([x + eps * v, x - eps * v, x])  # the same batch shape as above: no retrace
    logp, score = family.smoothed(batch, sigma, 1.0)
    fd = float(logp[0] - logp[1]) / (2 * eps)
    np.testing.assert_allclose(fd, float(jnp.sum(score[2] * v)), rtol=1e-5)
    assert m.intrinsic_dim == 2


def test_exact_prior_on_images(manifold):
    """bip.priors.exact broadcasts sigma over the batch axes of image events."""
    law = images.PhantomLaw(manifold)
    prior = bip.priors.exact(law)
    assert prior.event_shape == (SIZE, SIZE)
    # batch (2, 4): 8 images, the batch size the coordinate tests compiled the solver for
    x = law.sample(jax.random.key(8), (2, 4)) + 0.05 * jax.random.normal(
        jax.random.key(9), (2, 4, SIZE, SIZE)
    )
    sigma = jnp.array([[0.05], [0.1]])
    score = prior.score(x, sigma)
    assert score.shape == x.shape and bool(jnp.all(jnp.isfinite(score)))
    logp, direct = law.smoothed(x, jnp.broadcast_to(sigma, (2, 4)), 1.0)
    np.testing.assert_allclose(score, direct, rtol=1e-10)
    np.testing.assert_allclose(prior.logdensity(x, sigma), logp, rtol=1e-10)
    # the score pulls toward the manifold: -sigma^2 s ~ x - project(x)
    pull = -(sigma[..., None, None] ** 2) * score
    residual = x - manifold.project(x)
    cos = jnp.sum(pull * residual, axis=(-2, -1)) / jnp.sqrt(
        jnp.sum(pull**2, axis=(-2, -1)) * jnp.sum(residual**2, axis=(-2, -1))
    )
    assert float(jnp.min(cos)) > 0.99
    vp = bip.priors.exact(law, process="vp").score(x, 0.1)
    assert bool(jnp.all(jnp.isfinite(vp)))


# --------------------------------------------------------------------------- data


def test_digits():
    pytest.importorskip("sklearn")
    x, labels = images.digits(return_labels=True)
    assert x.shape == (1797, 16, 16) and labels.shape == (1797,)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.9
    small = images.digits(size=8)
    from sklearn.datasets import load_digits

    np.testing.assert_allclose(small, load_digits().images / 16.0, atol=1e-6)


def test_faces_and_phantom():
    pytest.importorskip("skimage")
    f = images.faces()
    assert f.shape == (100, 25, 25)
    assert float(f.min()) >= 0.0 and float(f.max()) <= 1.0
    p = images.phantom(64)
    assert p.shape == (64, 64)
    assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0 and float(p.max()) > 0.5


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_name_the_shapes(manifold):
    law = images.PhantomLaw(manifold)
    with pytest.raises(ValueError, match=r"\(32, 32\).*\(4, 16, 16\)"):
        manifold.coordinate(jnp.zeros((4, 16, 16)))
    with pytest.raises(ValueError, match=r"\(32, 32\).*\(31, 32\)"):
        law.smoothed(jnp.zeros((31, 32)), 0.1, 1.0)
    with pytest.raises(ValueError, match=r"\(6,\).*\(5,\)"):
        manifold.chart(jnp.zeros(5))
    with pytest.raises(ValueError, match="x must have trailing shape"):
        bip.priors.exact(law).score(jnp.zeros((2, 16, 16)), 0.1)
    with pytest.raises(ValueError, match="sigma"):
        law.smoothed(jnp.zeros((32, 32)), 0.0, 1.0)
    with pytest.raises(ValueError, match="free"):
        images.PhantomManifold(free=("cx", "radius"))
    with pytest.raises(ValueError, match="free"):
        images.PhantomManifold(free=("cy", "cx"))
    with pytest.raises(ValueError, match="a > b"):
        images.PhantomManifold(lower=[-0.2, -0.2, 0.2, 0.15, -1, 0.5])
    with pytest.raises(ValueError, match="size"):
        images.PhantomManifold(size=4)
    with pytest.raises(ValueError, match="edge_width"):
        images.PhantomManifold(edge_width=0.0)
    with pytest.raises(TypeError, match="PhantomManifold"):
        images.PhantomLaw(bip.manifolds.Circle())
