"""Exact manifold scores against brute-force quadrature, and the prior transforms."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

import bip

SIGMAS = [0.5, 0.1, 0.02]


def _gamma(process, sigma):
    return 1.0 if process == "ve" else np.sqrt(1 - sigma**2)


def _tweedie(points, log_w, x, sigma, gamma):
    """Brute-force log p_sigma(x) and score from weighted nodes on the manifold (numpy)."""
    d = x.shape[-1]
    d2 = np.sum((x[None, :] - gamma * points) ** 2, axis=-1)
    logits = log_w - d2 / (2 * sigma**2)
    logp = logsumexp(logits) - 0.5 * d * np.log(2 * np.pi * sigma**2)
    w = np.exp(logits - logsumexp(logits))
    return logp, (gamma * (w @ points) - x) / sigma**2


def _near_points(rng, d, sigma, n=5):
    u = rng.normal(size=(n, d))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    return u * (1 + sigma * rng.normal(size=(n, 1))) + sigma * rng.normal(size=(n, d)) * 0.5


@pytest.mark.parametrize("process", ["ve", "vp"])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_circle_score_matches_quadrature(process, sigma):
    kappa, loc = 4.0, np.pi
    data = bip.manifolds.VonMises(bip.manifolds.Circle(), kappa=kappa, loc=loc)
    prior = bip.priors.exact(data, process=process)
    theta = np.linspace(-np.pi, np.pi, 100_000, endpoint=False)
    points = np.stack([np.cos(theta), np.sin(theta)], axis=-1)
    log_w = kappa * np.cos(theta - loc) + np.log(2 * np.pi / theta.size)
    log_w -= logsumexp(log_w)
    x = _near_points(np.random.default_rng(0), 2, sigma)
    gamma = _gamma(process, sigma)
    for xi in x:
        logp_ref, score_ref = _tweedie(points, log_w, xi, sigma, gamma)
        score = np.asarray(prior.score(jnp.asarray(xi), sigma))
        np.testing.assert_allclose(score, score_ref, rtol=1e-6, atol=1e-6 * np.abs(score_ref).max())
        np.testing.assert_allclose(
            float(prior.logdensity(jnp.asarray(xi), sigma)), logp_ref, rtol=1e-8
        )


def _sphere_nodes(d, xhat, z):
    """Nodes on S^(d-1) in the frame u = t xhat + sqrt(1 - t^2) w, dense near t = 1."""
    breaks = [0.0, min(60.0 / z, 2.0), 2.0]
    s_nodes, s_weights = [], []
    g, gw = np.polynomial.legendre.leggauss(500)
    for a, b in zip(breaks[:-1], breaks[1:], strict=False):
        if b > a:
            s_nodes.append(0.5 * (b - a) * g + 0.5 * (a + b))
            s_weights.append(0.5 * (b - a) * gw)
    s, sw = np.concatenate(s_nodes), np.concatenate(s_weights)
    t = 1 - s
    # an orthonormal basis of the complement of xhat
    basis = np.linalg.qr(np.concatenate([xhat[:, None], np.eye(d)], axis=1))[0][:, 1:d]
    if d == 3:
        phi = np.linspace(0, 2 * np.pi, 256, endpoint=False)
        w = np.stack([np.cos(phi), np.sin(phi)], -1)
        ww = np.full(phi.size, 2 * np.pi / phi.size)
    else:  # d == 4: S^2 by Gauss-Legendre in cos x uniform in phi
        c, cw = np.polynomial.legendre.leggauss(40)
        phi = np.linspace(0, 2 * np.pi, 80, endpoint=False)
        cc, pp = np.meshgrid(c, phi, indexing="ij")
        sn = np.sqrt(1 - cc**2)
        w = np.stack([cc, sn * np.cos(pp), sn * np.sin(pp)], -1).reshape(-1, 3)
        ww = (cw[:, None] * np.full(phi.size, 2 * np.pi / phi.size)[None, :]).reshape(-1)
    radial = np.sqrt(np.clip(1 - t**2, 0, None))
    points = t[:, None, None] * xhat + radial[:, None, None] * (w @ basis.T)[None]
    jac = radial ** (d - 3)
    log_w = np.log(sw * jac)[:, None] + np.log(ww)[None, :]
    return points.reshape(-1, d), log_w.reshape(-1)


@pytest.mark.parametrize("d", [3, pytest.param(4, marks=pytest.mark.slow)])
@pytest.mark.parametrize("process", ["ve", "vp"])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_sphere_score_matches_quadrature(d, process, sigma):
    kappa = 2.0
    mu = np.ones(d) / np.sqrt(d)
    data = bip.manifolds.VonMisesFisher(bip.manifolds.Sphere(dim=d), kappa=kappa, mean_direction=mu)
    prior = bip.priors.exact(data, process=process)
    gamma = _gamma(process, sigma)
    # normalise the vMF density on the unit sphere numerically (the same rule, uniform weight)
    mu_nodes, mu_log_w = _sphere_nodes(d, mu, 1.0)
    log_norm = logsumexp(kappa * mu_nodes @ mu + mu_log_w)
    for xi in _near_points(np.random.default_rng(d), d, sigma, n=3):
        z = gamma * np.linalg.norm(xi) / sigma**2
        points, log_w = _sphere_nodes(d, xi / np.linalg.norm(xi), z)
        log_w = log_w + kappa * points @ mu
        logp_ref, score_ref = _tweedie(points, log_w - log_norm, xi, sigma, gamma)
        score = np.asarray(prior.score(jnp.asarray(xi), sigma))
        np.testing.assert_allclose(score, score_ref, rtol=1e-6, atol=1e-6 * np.abs(score_ref).max())
        np.testing.assert_allclose(
            float(prior.logdensity(jnp.asarray(xi), sigma)), logp_ref, atol=1e-6
        )


@pytest.mark.parametrize("sigma", SIGMAS)
def test_ellipse_score_matches_dense_quadrature(sigma):
    ellipse = bip.manifolds.Ellipse(1.0, 2.0)
    data = bip.manifolds.VonMises(ellipse, kappa=1.0, loc=0.3)
    prior = bip.priors.exact(data)
    t = np.linspace(-np.pi, np.pi, 100_000, endpoint=False)
    points = np.stack([np.cos(t), 2 * np.sin(t)], -1)
    log_w = np.cos(t - 0.3) + np.log(2 * np.pi / t.size)
    log_w -= logsumexp(log_w)
    rng = np.random.default_rng(1)
    tt = rng.uniform(-np.pi, np.pi, 4)
    x = np.stack([np.cos(tt), 2 * np.sin(tt)], -1) + sigma * rng.normal(size=(4, 2))
    for xi in x:
        logp_ref, score_ref = _tweedie(points, log_w, xi, sigma, 1.0)
        score = np.asarray(prior.score(jnp.asarray(xi), sigma))
        np.testing.assert_allclose(score, score_ref, rtol=1e-5, atol=1e-5 * np.abs(score_ref).max())
        np.testing.assert_allclose(
            float(prior.logdensity(jnp.asarray(xi), sigma)), logp_ref, rtol=1e-6
        )


@pytest.mark.parametrize(
    "data",
    [
        bip.manifolds.VonMises(bip.manifolds.Circle(), 4.0, 1.0),
        bip.manifolds.Uniform(bip.manifolds.Ellipse(1.0, 2.0)),
        bip.manifolds.VonMisesFisher(bip.manifolds.Sphere(dim=3), 3.0),
        bip.manifolds.Uniform(bip.manifolds.Sphere(dim=4)),
    ],
)
@pytest.mark.slow
def test_score_is_gradient_of_logdensity_batched_and_float32(data):
    prior = bip.priors.exact(data)
    d = data.event_shape[0]
    x = jax.random.normal(jax.random.key(0), (3, 4, d)) * 0.3 + jnp.eye(d)[0][None, None]
    score = prior.score(x, 0.2)
    assert score.shape == (3, 4, d)
    grad = jax.grad(lambda y: jnp.sum(prior.logdensity(y, 0.2)))(x)
    np.testing.assert_allclose(score, grad, rtol=1e-8, atol=1e-8)
    score32 = prior.score(x.astype(jnp.float32), jnp.float32(0.2))
    assert score32.dtype == jnp.float32
    np.testing.assert_allclose(score32, score, rtol=2e-4, atol=2e-4 * float(jnp.abs(score).max()))


@pytest.mark.slow
def test_tempered_and_error_transforms():
    data = bip.manifolds.VonMises(bip.manifolds.Circle(), 4.0, np.pi)
    prior = bip.priors.exact(data)
    x = jnp.array([[0.3, 1.1], [-0.9, -0.2]])
    sigma = 0.1
    np.testing.assert_allclose(
        bip.priors.tempered(prior, 1.5).score(x, sigma), sigma**1.5 * prior.score(x, sigma)
    )
    for error in [
        bip.errors.quartic_pull(),
        bip.errors.angular_cosine(2.0),
        bip.errors.random_fourier(jax.random.key(3), (2,), conservative=True),
    ]:
        corrupted = bip.priors.with_error(prior, error, size=0.7, beta=-1.0)
        expected = prior.score(x, sigma) + 0.7 * sigma**-1.0 * error.field(x)
        np.testing.assert_allclose(corrupted.score(x, sigma), expected, rtol=1e-12)
        # a conservative error keeps a log density whose gradient is the corrupted score
        grad = jax.grad(lambda y, p=corrupted: jnp.sum(p.logdensity(y, sigma)))(x)
        np.testing.assert_allclose(grad, expected, rtol=1e-9)
    # the paper's Fig. 4 error and the tangential cos(2 theta) error in closed form
    c = jnp.array([[1.0, 0.0]])
    np.testing.assert_allclose(
        bip.errors.quartic_pull().field(x),
        -2 * jnp.sum((x - c) ** 2, -1, keepdims=True) * (x - c),
    )
    theta = jnp.arctan2(x[:, 1], x[:, 0])
    r2 = jnp.sum(x**2, -1)
    tangential = bip.errors.angular_cosine(2.0).field(x)
    np.testing.assert_allclose(jnp.sum(tangential * x, -1), 0.0, atol=1e-14)
    np.testing.assert_allclose(
        tangential, (-2 * jnp.sin(2 * theta) / r2)[:, None] * jnp.stack([-x[:, 1], x[:, 0]], -1)
    )
    # non-conservative kinds: no log density, but a score
    for error in [bip.errors.rotational(), bip.errors.random_fourier(jax.random.key(1), (2,))]:
        corrupted = bip.priors.with_error(prior, error, size=0.5)
        assert not corrupted.has_logdensity
        np.testing.assert_allclose(
            corrupted.score(x, sigma), prior.score(x, sigma) + 0.5 * error.field(x)
        )
    rot = bip.errors.rotational().field(x)
    np.testing.assert_allclose(rot, jnp.stack([-x[:, 1], x[:, 0]], -1))
    # curl of the rotational field is 2 (not a gradient)
    jac = jax.jacfwd(lambda y: bip.errors.rotational().field(y))(x[0])
    assert float(jac[1, 0] - jac[0, 1]) == pytest.approx(2.0)


def test_random_fourier_field_is_seeded_smooth_and_unit_rms():
    a = bip.errors.random_fourier(jax.random.key(7), (8, 8), num_features=256)
    b = bip.errors.random_fourier(jax.random.key(7), (8, 8), num_features=256)
    x = jax.random.normal(jax.random.key(0), (512, 8, 8))
    np.testing.assert_array_equal(a.field(x), b.field(x))
    assert a.field(x).shape == (512, 8, 8)
    rms = float(jnp.sqrt(jnp.mean(a.field(x) ** 2)))
    assert 0.7 < rms < 1.3


def test_sweeping_parameters_does_not_retrace():
    data = bip.manifolds.VonMises(bip.manifolds.Circle(), 4.0, np.pi)
    prior = bip.priors.exact(data)
    error = bip.errors.angular_cosine(2.0)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def drift(p, x):
        return p.score(x, 0.1)

    x = jnp.ones((4, 2))
    for alpha in [0.0, 0.5, 1.0, 1.5]:
        for size in [0.0, 1.0, 3.0]:
            drift(bip.priors.tempered(bip.priors.with_error(prior, error, size), alpha), x)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p.score(jnp.ones(2), 0.0), "sigma must be > 0"),
        (lambda p: p.score(jnp.ones(2), -0.1), "sigma must be > 0"),
        (lambda p: p.score(jnp.ones(3), 0.1), "x must have trailing shape"),
        (lambda p: bip.priors.tempered(p, 2.0), "alpha must lie in"),
        (lambda p: bip.priors.tempered(p, -0.1), "alpha must lie in"),
        (lambda p: bip.manifolds.VonMises(bip.manifolds.Circle(), kappa=-1.0), "kappa"),
        (lambda p: bip.priors.with_error(p, bip.errors.rotational(), size=-1.0), "size"),
        (lambda p: bip.priors.exact(bip.manifolds.Circle()), "data law"),
        (
            lambda p: bip.priors.exact(bip.manifolds.Uniform(bip.manifolds.Circle()), "ode"),
            "process",
        ),
    ],
)
def test_bad_input_is_a_clear_error(make, match):
    prior = bip.priors.exact(bip.manifolds.Uniform(bip.manifolds.Circle()))
    with pytest.raises((ValueError, TypeError), match=match):
        make(prior)
