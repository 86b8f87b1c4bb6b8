"""Matrix-free CT projectors: exact adjoints, analytic ellipse sinograms, batching, phantoms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bip import tomography as T
from bip.operators import dot_test


def _angles(num, full=180.0):
    return jnp.linspace(0.0, full, num, endpoint=False)


def _geometry(beam, n, num_angles=13, dtype=None):
    if beam == "parallel":
        return T.parallel_geometry(n, _angles(num_angles), dtype=dtype)
    return T.fan_geometry(n, _angles(num_angles, 360.0), 3.0 * n, 1.0 * n, 2 * n, 1.0, dtype)


CASES = [("parallel", "shear"), ("parallel", "joseph"), ("fan", "joseph")]


@pytest.mark.parametrize("beam, method", CASES)
@pytest.mark.parametrize("n", [16, 64])
def test_dot_test_float64(beam, method, n):
    op = T.projector(_geometry(beam, n), method)
    assert dot_test(jax.random.key(n), op) < 1e-12


@pytest.mark.parametrize("beam, method", CASES)
def test_dot_test_float32_odd_size(beam, method):
    op = T.projector(_geometry(beam, 33, dtype=jnp.float32), method)
    assert op(jnp.ones((33, 33), jnp.float32)).dtype == jnp.float32
    assert dot_test(jax.random.key(1), op) < 1e-5


def test_dot_test_large():
    # 256 px parallel (the fast method) and 128 px fan beam, 5 views: few compiled programs
    for beam, n in (("parallel", 256), ("fan", 128)):
        assert dot_test(jax.random.key(n), T.projector(_geometry(beam, n, 5))) < 1e-12


# Discretisation error against the exact line integrals (measured, float64): Shepp-Logan
# rasterised with 8x8 sub-samples, relative L2 error of the sinogram, 30 parallel views
#             64 px   128 px  256 px       (skimage radon: 0.059, 0.027, 0.013)
#   shear     0.069   0.033   0.016
#   joseph    0.056   0.026   0.012
# For one ellipse at 256 px: shear 0.0055, joseph 0.0044 (skimage 0.0046). The test runs the
# 13-view geometries of the dot tests (their programs are compiled already), where it
# measured 16 px / 64 px: shear 0.172 / 0.062, joseph 0.161 / 0.054, fan joseph 0.179 / 0.048.
ANALYTIC_64 = {("parallel", "shear"): 0.07, ("parallel", "joseph"): 0.06, ("fan", "joseph"): 0.055}


@pytest.mark.parametrize("beam, method", CASES)
def test_matches_analytic_shepp_logan(beam, method):
    e = T.shepp_logan_ellipses()
    errors = []
    for n in (16, 64):
        g = _geometry(beam, n)
        exact = T.ellipse_sinogram(e, g)
        approx = T.projector(g, method)(T.ellipse_image(e, n, 8))
        errors.append(float(jnp.linalg.norm(approx - exact) / jnp.linalg.norm(exact)))
    assert errors[1] < ANALYTIC_64[beam, method]
    assert errors[1] < 0.5 * errors[0]  # first-order convergence in the pixel size


def test_matches_analytic_ellipse_256():
    e = [[1.0, 0.6, 0.3, 0.1, -0.2, 30.0]]
    g = T.parallel_geometry(256, _angles(30))
    exact = T.ellipse_sinogram(e, g)
    img = T.ellipse_image(e, 256, 8)
    for method, bound in (("shear", 0.0065), ("joseph", 0.0055)):
        approx = T.projector(g, method)(img)
        assert float(jnp.linalg.norm(approx - exact) / jnp.linalg.norm(exact)) < bound


@pytest.mark.parametrize("n", [64, 33])
def test_same_geometry_as_skimage(n):
    """Not skimage's discretisation, but its rays: on a smooth image (45-degree views
    included) both agree with skimage's radon(circle=True) to 1% (measured 0.5%, the
    interpolation difference on a blob of 4 px radius; half a pixel off would be ~20%)."""
    from skimage.transform import radon

    yy, xx = np.mgrid[:n, :n]
    img = np.exp(-((yy - 0.45 * n) ** 2 + (xx - 0.55 * n) ** 2) / (0.12 * n) ** 2)
    angles = np.r_[np.arange(0.0, 180.0, 15.0), 172.5]  # 13 views, as the dot tests
    ref = radon(img, angles, circle=True)
    g = T.parallel_geometry(n, angles)
    for method in ("shear", "joseph"):
        ours = np.asarray(T.projector(g, method)(img))
        assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 1e-2


def test_batching_and_grad():
    # the 16 px fan geometry of the dot tests: its single-event programs are compiled already
    op = T.projector(_geometry("fan", 16))
    x = jax.random.normal(jax.random.key(0), (2, 3, 16, 16))
    y = op(x)  # one primitive call on 6 events, batch innermost
    assert y.shape == (2, 3) + op.output_shape
    np.testing.assert_allclose(y[1, 2], op(x[1, 2]), rtol=1e-12, atol=1e-12)
    back = op.adjoint(y)
    np.testing.assert_allclose(back[1, 2], op.adjoint(y[1, 2]), rtol=1e-12, atol=1e-12)
    # the gradient of a least-squares loss runs the hand-written adjoint (JVP + transpose)
    target = y[0, 0] + 1.0
    loss = jax.jit(jax.grad(lambda z: 0.5 * jnp.sum((op(z) - target) ** 2)))
    np.testing.assert_allclose(loss(x[0, 0]), op.adjoint(y[0, 0] - target), rtol=1e-12, atol=1e-10)


def test_shear_agrees_with_joseph_on_smooth_images():
    n = 64
    yy, xx = np.mgrid[:n, :n]
    img = jnp.asarray(np.exp(-((yy - 30.0) ** 2 + (xx - 25.0) ** 2) / 80.0))
    g = T.parallel_geometry(n, _angles(13))
    a, b = T.projector(g, "shear")(img), T.projector(g, "joseph")(img)
    assert float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b)) < 2e-3


def test_ellipse_sinogram_exact_values():
    n = 64
    g = T.parallel_geometry(n, jnp.array([0.0, 37.0]))
    s = T.ellipse_sinogram([[2.0, 0.5, 0.5, 0.0, 0.0, 0.0]], g)
    # disc of radius 16 px centred at (n - 1) / 2; the central bin's ray passes through pixel
    # n // 2, half a pixel off the centre, along both axes' rotated combination
    for a, theta in enumerate((0.0, 37.0)):
        offset = 0.5 * (np.cos(np.deg2rad(theta)) - np.sin(np.deg2rad(theta)))
        np.testing.assert_allclose(s[n // 2, a], 2.0 * 2 * np.sqrt(16.0**2 - offset**2), rtol=1e-12)
    # fan beam with a far source tends to parallel beam (error ~ image / distance)
    e = T.shepp_logan_ellipses()
    far = T.ellipse_sinogram(e, T.fan_geometry(n, _angles(7), 1e6, 0.0, n, 1.0))
    parallel = T.ellipse_sinogram(e, T.parallel_geometry(n, _angles(7)))
    # measured 2.1e-4 of the maximum at 1e6 px
    assert float(jnp.abs(far - parallel).max()) < 1e-3 * float(parallel.max())


def test_ellipse_image_mass_and_shepp_logan():
    e = [[0.7, 0.5, 0.25, 0.2, -0.1, 25.0]]
    img = T.ellipse_image(e, 128, supersample=4)
    np.testing.assert_allclose(
        float(img.sum()) * (2 / 128) ** 2, 0.7 * np.pi * 0.5 * 0.25, rtol=2e-3
    )
    from skimage.data import shepp_logan_phantom

    ref = shepp_logan_phantom()  # 400 x 400, values in [0, 1]
    ours = np.asarray(T.shepp_logan(400))
    assert np.abs(ours - ref).mean() < 0.01  # measured 0.0048 (flipped upside down: 0.042)
    assert T.shepp_logan(37).shape == (37, 37)


def test_bad_input():
    g = T.parallel_geometry(16, _angles(4))
    with pytest.raises(ValueError, match="method"):
        T.projector(g, "dense")
    with pytest.raises(ValueError, match="parallel beam only"):
        T.projector(_geometry("fan", 16), "shear")
    with pytest.raises(ValueError, match="half-diagonal"):
        T.fan_geometry(64, _angles(4), 40.0, 10.0, 64, 1.0)
    with pytest.raises(TypeError, match="Geometry"):
        T.projector("parallel")
    with pytest.raises(ValueError, match=r"\(k, 6\)"):
        T.ellipse_sinogram([[1.0, 0.5, 0.5]], g)
    with pytest.raises(ValueError, match="angles"):
        T.parallel_geometry(16, jnp.zeros((2, 2)))


def test_radon_auto_picks_shear_above_the_dense_bound():
    from bip import ct, operators

    assert ct._auto_radon_method(64, 64) == "dense"
    assert ct._auto_radon_method(65, 64) == "shear"
    angles = _angles(13)
    op = operators.radon(16, angles, method="shear")
    x = jax.random.normal(jax.random.key(3), (2, 16, 16))
    np.testing.assert_allclose(op(x), T.projector(T.parallel_geometry(16, angles))(x), atol=1e-12)
    assert dot_test(jax.random.key(4), op) < 1e-12
    assert operators.filtered_back_projection(op, op(x)).shape == (2, 16, 16)
