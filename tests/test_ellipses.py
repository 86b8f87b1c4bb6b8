"""Random-ellipse phantoms: the law's support, its rasterisation and its analytic sinograms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_images import _brute_force

import bip.priors
import bip.references
from bip import ellipses, images, problems, tomography
from bip._laplace import BoxChart


def test_random_law_images_nonnegative_inside_disc(key):
    law = ellipses.RandomEllipseLaw(33, count=(2, 6), radius=0.8)
    table = law.table(key, (40,))
    x = law.sample(key, (40,))
    assert x.shape == (40, 33, 33) and law.event_shape == (33, 33) and law.manifold is None
    assert float(x.min()) == 0.0 and float(x.max()) > 0.1
    counts = np.sum(np.asarray(table[..., 0]) > 0, axis=-1)
    assert counts.min() == 2 and counts.max() == 6  # uniform on 2..6: both ends in 40 draws
    a, b = np.asarray(table[..., 1]), np.asarray(table[..., 2])
    assert a.min() >= 0.05 and max(a.max(), b.max()) <= 0.4
    reach = np.hypot(table[..., 3], table[..., 4]) + np.maximum(a, b)
    assert reach.max() <= 0.8  # every ellipse inside the disc of radius 0.8
    centres = -1 + (2 * np.arange(33) + 1) / 33
    outside = np.hypot(centres[None, :], centres[:, None]) > 0.8 + 2 / 33  # half a pixel diagonal
    assert float(jnp.max(jnp.abs(x[:, outside]))) == 0.0


def test_render_matches_supersampled_raster(key):
    # anti-aliased edges vs the 16 x 16 supersampled raster: measured 0.035 here (0.036 for the
    # 4 x 4 supersampled raster), 0.0078 / 0.0047 at 128 px (4 x 4: 0.012 / 0.0083)
    table = ellipses.RandomEllipseLaw(32, count=(4, 4)).table(key)
    fine = tomography.ellipse_image(table, 32, supersample=16)
    coarse = tomography.ellipse_image(table, 32, supersample=4)
    fast = ellipses.render(table, 32)
    error = float(jnp.linalg.norm(fast - fine) / jnp.linalg.norm(fine))
    assert error < 0.04 and error < float(jnp.linalg.norm(coarse - fine) / jnp.linalg.norm(fine))
    disc = jnp.array([[1.0, 0.5, 0.5, 0.0, 0.0, 0.0]])
    area = float(ellipses.render(disc, 64).sum()) * (2 / 64) ** 2
    assert abs(area - np.pi / 4) < 2e-3


def test_analytic_sinogram_matches_projector(key):
    law = ellipses.RandomEllipseLaw(32, count=(3, 5))
    table = law.table(key)
    g = tomography.parallel_geometry(32, jnp.linspace(0.0, 180.0, 13, endpoint=False))
    exact = tomography.ellipse_sinogram(table, g)
    project = tomography.projector(g)

    def error(image):
        return float(jnp.linalg.norm(project(image) - exact) / jnp.linalg.norm(exact))

    # the projector's discretisation error at 32 px, measured 0.103 (the 16 x 16 supersampled
    # raster: 0.102); at 128 px 0.0084-0.014 (tomography's tests bound it per method)
    assert error(law.sample(key)) < 0.11
    assert error(law.sample(key)) < 1.02 * error(tomography.ellipse_image(table, 32, 16))


def test_random_law_jit_vmap_float32(key):
    law = ellipses.RandomEllipseLaw(16, count=(1, 3))
    keys = jax.random.split(key, 3)
    batched = jax.jit(jax.vmap(lambda k: law.sample(k, (2,), jnp.float32)))(keys)
    assert batched.dtype == jnp.float32 and batched.shape == (3, 2, 16, 16)
    np.testing.assert_allclose(batched[1], law.sample(keys[1], (2,), jnp.float32), atol=1e-5)


def test_random_law_bad_input():
    with pytest.raises(ValueError, match="count"):
        ellipses.RandomEllipseLaw(32, count=(3, 2))
    with pytest.raises(ValueError, match="axes"):
        ellipses.RandomEllipseLaw(32, axes=(0.1, 0.95))
    with pytest.raises(ValueError, match="intensity"):
        ellipses.RandomEllipseLaw(32, intensity=(-0.1, 1.0))
    with pytest.raises(ValueError, match="size"):
        ellipses.RandomEllipseLaw(4)
    with pytest.raises(ValueError, match="semi-axes"):
        ellipses.render(jnp.array([[1.0, 0.0, 0.5, 0.0, 0.0, 0.0]]), 8)
    with pytest.raises(ValueError, match="rows"):
        ellipses.render(jnp.ones((3, 5)), 8)


# --------------------------------------------------------------------------- exact chart


def test_one_ellipse_is_the_phantom_manifold():
    """k = 1 with PhantomManifold's box: the same chart, and the same smoothed law."""
    pm = images.PhantomManifold(size=16)
    mm = ellipses.MultiEllipseManifold(pm.lower[None], pm.upper[None], size=16)
    u = images.PhantomLaw(pm).sample_coordinates(jax.random.key(0), (3,))
    np.testing.assert_array_equal(mm.chart(u), pm.chart(u))
    x = pm.chart(u) + 0.05 * jax.random.normal(jax.random.key(1), (3, 16, 16))
    logp, score = images.PhantomLaw(pm).smoothed(x, 0.05, 1.0)
    same = images.PhantomLaw(mm, num_starts=8, num_refined=4, num_iterations=20)
    logp_m, score_m = same.smoothed(x, 0.05, 1.0)
    np.testing.assert_allclose(score_m, score, rtol=1e-7, atol=1e-7 * float(jnp.abs(score).max()))
    np.testing.assert_allclose(logp_m, logp, rtol=1e-9)


@pytest.mark.parametrize("which", ["grid", "shepp-logan"])
def test_closed_form_derivatives_match_autodiff(which):
    m = ellipses.grid_manifold(3, 16) if which == "grid" else ellipses.shepp_logan_manifold(16)
    z = jax.random.uniform(jax.random.key(2), (m.intrinsic_dim,))
    r = jax.random.normal(jax.random.key(3), (16 * 16,))
    jac, auto_jac = jax.jit(lambda z: (m._jacobian_unit(z), BoxChart._jacobian_unit(m, z)))(z)
    both = jax.jit(lambda z, r: (m._curvature_unit(z, r), BoxChart._curvature_unit(m, z, r)))
    curv, auto_curv = both(z, r)
    assert float(jnp.abs(jac - auto_jac).max()) < 1e-12 * float(jnp.abs(auto_jac).max())
    assert float(jnp.abs(curv - auto_curv).max()) < 1e-12 * float(jnp.abs(auto_curv).max())


def test_multi_ellipse_score_matches_quadrature():
    """Two ellipses, two free parameters (the first one's centre x, the second one's major
    semi-axis): the Laplace score against Gauss-Legendre quadrature (test_images' brute force)."""
    lower = jnp.array([[-0.5, 0.0, 0.4, 0.3, 0.4, 0.8], [0.45, 0.0, 0.3, 0.25, -0.3, 0.6]])
    upper = lower.at[0, 0].add(0.2).at[1, 2].add(0.1)
    m = ellipses.MultiEllipseManifold(lower, upper, size=16)
    law = images.PhantomLaw(m)
    sigma = 0.02
    z_true = jnp.array([[0.3, 0.6], [0.7, 0.4]])
    x = m.chart(m._from_unit(z_true)) + sigma * jax.random.normal(jax.random.key(4), (2, 16, 16))
    logp, score = law.smoothed(x, sigma, 1.0)
    u_hat = m.coordinate(x)
    z_hat = np.asarray(m._to_unit(u_hat))
    # posterior standard deviations of the normalised coordinates: sigma sqrt(diag g^-1) / width
    width = np.asarray(m.bounds[1] - m.bounds[0])
    sds = sigma * np.sqrt(np.diagonal(np.linalg.inv(m.metric(u_hat)), axis1=-2, axis2=-1))
    for i in range(2):
        logp_ref, score_ref = _brute_force(m, x[i], sigma, z_hat[i], 10 * sds[i] / width)
        normal = np.asarray(m.chart(m._from_unit(jnp.asarray(z_hat[i]))) - x[i])
        o1 = score_ref - normal / sigma**2  # the Theta(1) part, which carries p_data
        error = np.linalg.norm(np.asarray(score[i]) - score_ref)
        # measured 5.2e-4 and 5.7e-4 of the O(1) part (2.4e-2 and 4.5e-3 at sigma = 0.05)
        assert error < 2e-3 * np.linalg.norm(o1), error / np.linalg.norm(o1)
        assert abs(float(logp[i]) - logp_ref) < 1e-3  # measured 2.3e-4, 1.9e-4


def test_grid_manifold_nearest_point_and_exact_prior():
    m = ellipses.grid_manifold(4, 24)
    assert (m.count, m.intrinsic_dim) == (4, 24)
    law = images.PhantomLaw(m)
    u = law.sample_coordinates(jax.random.key(5), (4,))
    x = m.chart(u)
    assert float(x.min()) >= 0.0
    np.testing.assert_allclose(m.coordinate(x), u, atol=1e-7)  # from the cells' moments
    prior = bip.priors.exact(law)
    noisy = x + 0.05 * jax.random.normal(jax.random.key(6), x.shape)
    score = prior.score(noisy, 0.05)
    maxent = bip.priors.tempered(prior, 1.0).score(noisy, 0.05)
    np.testing.assert_allclose(maxent, 0.05 * score, rtol=1e-12)
    pull = -(0.05**2) * score  # points back to the manifold: x - project(x)
    residual = noisy - m.project(noisy)
    cos = jnp.sum(pull * residual, axis=(-2, -1)) / jnp.sqrt(
        jnp.sum(pull**2, axis=(-2, -1)) * jnp.sum(residual**2, axis=(-2, -1))
    )
    assert float(jnp.min(cos)) > 0.99
    chart = bip.references.chart_of(law)
    assert (chart.dim, chart.event_shape) == (24, (24, 24))
    np.testing.assert_allclose(chart.chart(u[0]), x[0], atol=1e-14)
    p = m.parameters(u[0])  # (4, 6): (cx, cy, a, b, theta, I) -> bip.tomography's rows
    np.testing.assert_allclose(p.reshape(-1), u[0])
    expected = jnp.stack([p[:, 5], p[:, 2], p[:, 3], p[:, 0], p[:, 1], jnp.rad2deg(p[:, 4])], -1)
    np.testing.assert_allclose(m.table(u[0]), expected)


def test_multi_ellipse_bad_input():
    lower = jnp.array([[0.0, 0.0, 0.3, 0.15, -0.5, 0.5]])
    with pytest.raises(ValueError, match="no free parameter"):
        ellipses.MultiEllipseManifold(lower, lower)
    with pytest.raises(ValueError, match="lower must be <= upper"):
        ellipses.MultiEllipseManifold(lower, lower.at[0, 0].add(-0.1))
    with pytest.raises(ValueError, match=r"\(k, 6\)"):
        ellipses.MultiEllipseManifold(lower[:, :5], lower[:, :5])
    with pytest.raises(ValueError, match="ellipse 0: .*a > b"):
        ellipses.MultiEllipseManifold(lower, lower.at[0, 3].set(0.35).at[0, 4].set(0.5))
    with pytest.raises(ValueError, match="u must have trailing shape"):
        ellipses.grid_manifold(2, 16).chart(jnp.zeros(11))


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    "name, source",
    [("ct-ellipses-128-exact", "ellipse-grid"), ("ct-shepp-256", "shepp-logan-family")],
)
def test_exact_chart_sources_build_small(name, source):
    """The shipped exact-chart CT specs as shipped (128 and 256 px: minutes per solve, see
    bench.specs_table), then their law, manifold and exact prior rebuilt at 24 px."""
    spec = problems.load(name)
    assert spec["prior"]["source"] == "exact" and spec["sampler"]["init"] == "baseline"
    assert spec["sampler"]["c"] <= 0.5  # the spec's comment: ULA's variance bias under 7% here
    assert spec["data"]["source"] == source
    if source == "ellipse-grid":
        assert (spec["data"]["size"], spec["data"]["count"]) == (128, [4])
        spec["data"].update(size=24, source=source)
    else:  # one set of ellipses, its centre the truth
        assert (spec["data"]["size"], spec["operator"]["views"]) == (256, 60)
        spec["data"].update(size=24)
    truth, manifold, law = problems._truth_and_manifold(spec, jax.random.key(0))
    assert truth.shape == (24, 24) and manifold is law.manifold
    assert isinstance(manifold, ellipses.MultiEllipseManifold)
    assert manifold.intrinsic_dim == (24 if source == "ellipse-grid" else 16)
    assert problems._prior(spec, law).event_shape == (24, 24)


def test_random_ellipse_source_has_no_exact_prior():
    raw = {
        "name": "x",
        "data": {"source": "ellipses", "size": 16, "count": [2, 3]},
        "operator": {"kind": "radon"},
        "noise": {"std": 0.1},
        "sampler": {"sigma": 0.05},
    }
    with pytest.raises(problems.SpecError, match=r"\[prior\] source: .*known manifold"):
        problems.validate(raw)
    spec = problems.validate({**raw, "prior": {"source": "phantom32-unet"}})  # a trained prior
    truth, manifold, law = problems._truth_and_manifold(spec, jax.random.key(0))
    assert truth.shape == (16, 16) and manifold is None and law.count == (2, 3)
    raw["data"] = {"source": "ellipse-grid", "count": [2, 3]}
    with pytest.raises(problems.SpecError, match=r"\[data\] count: .*needs a fixed count"):
        problems.validate(raw)
    raw["data"] = {"source": "ellipses", "count": [3, 2]}
    with pytest.raises(problems.SpecError, match=r"\[data\] count: count must"):
        problems.validate(raw)
