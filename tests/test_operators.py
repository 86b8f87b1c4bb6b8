"""Tests for bip.operators: adjoints, reference implementations, norms, custom operators."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.data
from skimage.transform import iradon, resize
from skimage.transform import radon as sk_radon

from bip import ct
from bip import operators as ops

# The resized phantom is not exactly zero outside the inscribed circle: skimage warns, and
# both sides still compute the same map.
pytestmark = pytest.mark.filterwarnings("ignore:Radon transform:UserWarning")

ODD_ANGLES = np.array([3.0, 17.5, 40.0, 91.0, 133.3, 178.0, 250.0])


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _phantom(n: int) -> np.ndarray:
    return resize(skimage.data.shepp_logan_phantom(), (n, n), anti_aliasing=True)


def _grad2d(x):
    """Forward-difference gradient (n, m) -> (2, n, m), zero on the last row/column."""
    dy = jnp.concatenate([x[1:] - x[:-1], jnp.zeros_like(x[:1])], axis=0)
    dx = jnp.concatenate([x[:, 1:] - x[:, :-1], jnp.zeros_like(x[:, :1])], axis=1)
    return jnp.stack([dy, dx])


# Every shipped linear operator, at several sizes: name -> factory(dtype) -> Operator.
LINEAR_OPERATORS = {
    "blur-zero-fft-16": lambda dt: ops.blur(_rng(1).random((5, 5)), (16, 16), dtype=dt),
    "blur-zero-fft-24x20": lambda dt: ops.gaussian_blur((24, 20), 1.5, dtype=dt),
    "blur-zero-bigkernel": lambda dt: ops.blur(_rng(2).random((13, 11)), (8, 8), dtype=dt),
    "blur-circular-fft-16": lambda dt: ops.blur(
        _rng(3).random((5, 3)), (16, 16), "circular", dtype=dt
    ),
    "blur-circular-fft-bigkernel": lambda dt: ops.blur(
        _rng(4).random((13, 13)), (9, 8), "circular", dtype=dt
    ),
    "blur-zero-direct-12": lambda dt: ops.gaussian_blur((12, 12), 1.0, method="direct", dtype=dt),
    "blur-circular-direct-12x15": lambda dt: ops.blur(
        _rng(5).random((3, 5)), (12, 15), "circular", "direct", dtype=dt
    ),
    "radon-dense-16": lambda dt: ops.radon(16, ODD_ANGLES, method="dense", dtype=dt),
    "radon-dense-33": lambda dt: ops.radon(33, np.linspace(0, 180, 8, endpoint=False), dtype=dt),
    "radon-interp-16": lambda dt: ops.radon(16, ODD_ANGLES, method="interp", dtype=dt),
    "radon-interp-21": lambda dt: ops.radon(21, ODD_ANGLES[:3], method="interp", dtype=dt),
    "mask-10x12": lambda dt: ops.mask(_rng(6).random((10, 12)) < 0.5, dtype=dt),
    "mask-7": lambda dt: ops.mask(_rng(7).random(7) < 0.5, dtype=dt),
    "subsample-indices": lambda dt: ops.subsample((8, 8), indices=jnp.array([0, 5, 5, 63, 17])),
    "subsample-boolean": lambda dt: ops.subsample((6, 5), indices=_rng(8).random((6, 5)) < 0.3),
    "subsample-stride": lambda dt: ops.subsample((9, 10), stride=(2, 3)),
    "matrix-7x5": lambda dt: ops.matrix(_rng(9).standard_normal((7, 5)), dtype=dt),
    "matrix-3x40": lambda dt: ops.matrix(_rng(10).standard_normal((3, 40)), dtype=dt),
    "coordinate-2-0": lambda dt: ops.coordinate_projection(2, [0]),
    "coordinate-5-024": lambda dt: ops.coordinate_projection(5, [0, 2, 4]),
    "custom-gradient": lambda dt: ops.from_function(_grad2d, (6, 7), linear=True),
    "compose-subsample-blur": lambda dt: (
        ops.subsample((16, 16), stride=2) @ ops.gaussian_blur((16, 16), 1.0, dtype=dt)
    ),
    "transpose-radon": lambda dt: ops.radon(12, ODD_ANGLES[:4], dtype=dt).T,
    "gram-blur": lambda dt: (lambda a: a.T @ a)(
        ops.gaussian_blur((10, 10), 0.8, boundary="circular", dtype=dt)
    ),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(LINEAR_OPERATORS))
def test_adjoint_dot_test(name, dtype, key):
    dtype = jnp.dtype(dtype)
    op = LINEAR_OPERATORS[name](dtype)
    assert op.linear
    err = ops.dot_test(key, op, dtype=dtype)
    assert err < (1e-12 if dtype == jnp.float64 else 1e-5), err
    # both maps really run in the requested precision: no float64 anywhere in the program
    u = jnp.ones(op.input_shape, dtype)
    v = jnp.ones(op.output_shape, dtype)
    assert op(u).dtype == dtype and op.adjoint(v).dtype == dtype
    if dtype == jnp.float32:
        program = str(jax.make_jaxpr(lambda op, u, v: (op(u), op.adjoint(v)))(op, u, v))
        assert "f64" not in program


# 16 equispaced views hold 0, 45, 90 and 135 degrees (where sampling points fall on whole
# pixels up to rounding); the rest are off-grid and beyond 180 degrees.
RADON_ANGLES = np.concatenate([np.linspace(0.0, 180.0, 16, endpoint=False), ODD_ANGLES, [270.0]])


@pytest.mark.parametrize("n", [8, 9, 16, 17, 31, 32, 33, 45, 64])
def test_radon_matches_skimage_on_white_noise(n):
    # White noise: a sample one whole pixel off changes the sum by O(1) (a smooth image hides
    # it: 4e-5). Documented: 1e-10 relative; in fact ~1e-14.
    images = {"noise": _rng(n).standard_normal((n, n)), "smooth": _phantom(n)}
    for method in ("dense", "interp"):
        op = ops.radon(n, RADON_ANGLES, method=method)
        out = op(jnp.stack(list(images.values())))
        for img, got in zip(images.values(), out, strict=True):
            ref = sk_radon(img, RADON_ANGLES, circle=True)
            assert got.shape == ref.shape == (n, len(RADON_ANGLES))
            err = float(jnp.max(jnp.abs(got - ref))) / np.abs(ref).max()
            assert err < 1e-10, (method, err)


def test_floor_and_weight_agree_at_whole_pixels():
    # The hazard: the two roundings of the same whole pixel position floor to different pixels;
    # index and weight taken from different roundings put the sample one pixel off.
    k = 5.0
    assert np.floor(k - 1e-13) == k - 1 and np.floor(k + 1e-13) == k
    tol = ct._snap_tolerance(64, np.float64)
    assert 1e-13 < tol < 1e-12
    coords = np.array([k - 1e-13, k + 1e-13, k, k - 0.25, k + 0.75, -1e-13, k - 2 * tol])
    jitted = jax.jit(lambda c: ct._floor_and_weight(c, tol))
    for index, weight in (ct._floor_and_weight(coords, tol), jitted(jnp.asarray(coords))):
        index, weight = np.asarray(index), np.asarray(weight)
        np.testing.assert_array_equal(index, [5, 5, 5, 4, 5, 0, 4])
        np.testing.assert_array_equal(weight[:3], 0.0)  # both roundings: pixel k, weight 0
        np.testing.assert_array_equal(weight[3:6], [0.75, 0.75, 0.0])
        assert 1 - 1e-12 < weight[6] < 1  # beyond the tolerance: not snapped
        assert np.all((weight >= 0) & (weight < 1))


def test_radon_grid_is_exact_and_the_same_everywhere():
    n, angles = 33, np.array([0.0, 45.0, 90.0, 135.0, 180.0, 270.0, 17.5])
    cos, sin = ct._cos_sin_degrees(np.array([0.0, 90.0, 180.0, 270.0, -90.0, 360.0]))
    np.testing.assert_array_equal(cos, [1, 0, -1, 0, 0, 1])
    np.testing.assert_array_equal(sin, [0, 1, 0, -1, -1, 0])
    tables = ct._rotation_tables(angles, n)
    row, col = ct._rotated_grid(tables, n)  # NumPy: the coordinates of the dense build
    m, k = n // 2, np.arange(n)
    # whole pixels exactly: every sample at 0/90/180/270 degrees, the diagonal at 45
    np.testing.assert_array_equal(row[0], np.broadcast_to(k[:, None], (n, n)))
    np.testing.assert_array_equal(col[2], np.broadcast_to(k[:, None], (n, n)))
    np.testing.assert_array_equal(row[2], np.broadcast_to(2 * m - k[None, :], (n, n)))
    np.testing.assert_array_equal(row[1][k, k], m)
    # the interp method's coordinates, computed under jit, equal the NumPy ones bit for bit
    params = ops.radon(n, angles, method="interp").params
    grid = jax.jit(ct._rotated_grid, static_argnums=1)(params.offsets, n)
    for got, ref in zip(grid, (row, col), strict=True):
        np.testing.assert_array_equal(np.asarray(got), ref)
    # the dense matrix: the same bits eagerly and with traced angles under jit
    eager = np.asarray(ops.radon_matrix(n, angles))
    np.testing.assert_array_equal(
        np.asarray(jax.jit(lambda a: ops.radon_matrix(n, a))(angles)), eager
    )
    np.testing.assert_array_equal(np.asarray(ops.radon(n, angles).params.matrix), eager)


def test_radon_auto_method_and_traced_angles():
    assert ct._auto_radon_method(64, 64) == "dense"  # 2^24 entries
    assert ops.radon(64, np.zeros(65)).params.matrix is None
    assert ops.radon(16, ODD_ANGLES).params.matrix.shape == (16 * 7, 16 * 16)
    img = _phantom(16)
    under_jit = jax.jit(lambda a: ops.radon(16, a)(img))(jnp.asarray(ODD_ANGLES))
    np.testing.assert_allclose(under_jit, sk_radon(img, ODD_ANGLES), atol=1e-12)


@pytest.mark.parametrize("n", [32, 45])
@pytest.mark.parametrize("filter_name", ["ramp", "hann", None])
def test_filtered_back_projection_matches_iradon(n, filter_name):
    # documented tolerance: 1e-10 relative (max abs error / max abs value); in fact ~1e-14
    sino = sk_radon(_phantom(n), ODD_ANGLES, circle=True)
    ref = iradon(sino, ODD_ANGLES, circle=True, filter_name=filter_name)
    op = ops.radon(n, ODD_ANGLES)
    out = ops.filtered_back_projection(op, sino, filter=filter_name)
    assert float(jnp.max(jnp.abs(out - ref))) / np.abs(ref).max() < 1e-10
    batch = ops.filtered_back_projection(op.params, jnp.stack([sino, 2 * sino]), filter_name)
    np.testing.assert_allclose(batch[1], 2 * out, rtol=1e-12, atol=1e-12)


def test_filtered_back_projection_arguments():
    op = ops.radon(16, ODD_ANGLES)
    with pytest.raises(ValueError, match="sinogram"):
        ops.filtered_back_projection(op, jnp.zeros((16, 3)))
    with pytest.raises(ValueError, match="filter"):
        ops.filtered_back_projection(op, jnp.zeros((16, 7)), filter="box")
    with pytest.raises(TypeError, match="radon"):
        ops.filtered_back_projection(ops.mask(jnp.ones((16, 7))), jnp.zeros((16, 7)))


@pytest.mark.parametrize("method", ["fft", "direct"])
@pytest.mark.parametrize("boundary,mode", [("zero", "constant"), ("circular", "wrap")])
def test_gaussian_blur_matches_scipy(boundary, mode, method):
    x = _rng(11).random((30, 26))
    width = 1.5
    radius = int(np.ceil(3 * width))
    out = np.asarray(ops.gaussian_blur(x.shape, width, boundary=boundary, method=method)(x))
    # same truncation radius: equal everywhere
    ref = ndi.gaussian_filter(x, width, mode=mode, radius=radius)
    np.testing.assert_allclose(out, ref, atol=1e-12)
    # scipy's default (reflect boundary, longer kernel) agrees in the interior to 1e-5
    ref_default = ndi.gaussian_filter(x, width, truncate=3.0 + 1e-9, mode="reflect")
    inner = (slice(radius, -radius), slice(radius, -radius))
    np.testing.assert_allclose(out[inner], ref_default[inner], atol=1e-5)


@pytest.mark.parametrize("method", ["fft", "direct"])
@pytest.mark.parametrize("boundary,mode", [("zero", "constant"), ("circular", "wrap")])
def test_blur_matches_ndimage_convolve(boundary, mode, method):
    x = _rng(12).random((17, 20))
    kernel = _rng(13).random((5, 7))  # asymmetric: checks convolution (not correlation)
    out = ops.blur(kernel, x.shape, boundary=boundary, method=method)(x)
    np.testing.assert_allclose(out, ndi.convolve(x, kernel, mode=mode, cval=0.0), atol=1e-12)


def test_blur_arguments():
    with pytest.raises(ValueError, match="odd"):
        ops.blur(jnp.ones((4, 3)), (8, 8))
    with pytest.raises(ValueError, match="boundary"):
        ops.blur(jnp.ones((3, 3)), (8, 8), boundary="reflect")
    with pytest.raises(ValueError, match="width"):
        ops.gaussian_blur((8, 8), -1.0)
    assert ops.gaussian_kernel(2.0).shape == (13, 13)
    np.testing.assert_allclose(jnp.sum(ops.gaussian_kernel(0.7)), 1.0, rtol=1e-14)


def _dense(op: ops.Operator) -> np.ndarray:
    size = int(np.prod(op.input_shape))
    basis = jnp.eye(size).reshape((size,) + op.input_shape)
    return np.asarray(op(basis)).reshape(size, -1).T


@pytest.mark.parametrize(
    "make",
    [
        lambda: ops.gaussian_blur((10, 10), 1.0),
        lambda: ops.blur(_rng(14).random((3, 3)), (9, 9), "circular"),
        lambda: ops.radon(16, ODD_ANGLES),
        lambda: ops.matrix(_rng(15).standard_normal((7, 5))),
        lambda: ops.subsample((6, 6), stride=2) @ ops.gaussian_blur((6, 6), 0.7),
    ],
)
def test_operator_norm_matches_dense_svd(make, key):
    op = make()
    dense = _dense(op)
    # the adjoint, applied to a batch (the output basis), is the transpose matrix
    basis = jnp.eye(dense.shape[0]).reshape((-1,) + op.output_shape)
    np.testing.assert_allclose(
        np.asarray(op.adjoint(basis)).reshape(dense.shape), dense, atol=1e-13
    )
    exact = np.linalg.norm(dense, 2)
    estimate = float(ops.operator_norm(key, op, num_iterations=200))
    assert estimate <= exact * (1 + 1e-12)
    assert abs(estimate - exact) / exact < 1e-3
    assert float(ops.operator_norm(key, op)) <= exact * (1 + 1e-12)


def test_radon_matrix_is_the_operator():
    op = ops.radon(12, ODD_ANGLES, method="interp")
    np.testing.assert_allclose(_dense(op), ops.radon_matrix(12, ODD_ANGLES), atol=1e-14)


def test_batches_transpose_and_composition():
    op = ops.gaussian_blur((8, 9), 1.0, boundary="circular")
    x = jnp.asarray(_rng(16).standard_normal((2, 3, 8, 9)))
    y = op(x)
    assert y.shape == (2, 3, 8, 9)
    np.testing.assert_allclose(y[1, 2], op(x[1, 2]), atol=1e-14)
    np.testing.assert_allclose(op.adjoint(y)[0, 1], op.adjoint(y[0, 1]), atol=1e-14)
    np.testing.assert_allclose(op.gram(x), op.adjoint(op(x)), atol=1e-14)
    np.testing.assert_allclose(op.T(y), op.adjoint(y), atol=1e-14)
    np.testing.assert_allclose(op.T.adjoint(x), op(x), atol=1e-14)
    assert op.T.T is op
    assert op.T.input_shape == op.output_shape
    np.testing.assert_allclose(op @ x, op(x), atol=0)
    # integer images are cast to the operator's float dtype
    assert op(jnp.ones((8, 9), jnp.int32)).dtype == op.dtype
    # composition: shapes, linearity, adjoint
    s = ops.subsample((8, 9), stride=(2, 3))
    comp = s @ op
    assert comp.input_shape == (8, 9) and comp.output_shape == (4, 3) and comp.linear
    np.testing.assert_allclose(comp(x), s(op(x)), atol=1e-14)
    z = jnp.ones((4, 3))
    np.testing.assert_allclose(comp.adjoint(z), op.adjoint(s.adjoint(z)), atol=1e-14)
    np.testing.assert_allclose(ops.compose(s, op)(x), comp(x), atol=0)


def test_coordinate_projection_on_circle():
    op = ops.coordinate_projection(2, [0])
    points = jnp.array([[0.6, 0.8], [1.0, 0.0], [0.0, -1.0]])
    np.testing.assert_allclose(op(points), points[:, :1])
    np.testing.assert_allclose(op.adjoint(jnp.array([2.0])), jnp.array([2.0, 0.0]))
    with pytest.raises(ValueError, match="indices"):
        ops.coordinate_projection(2, [2])


def test_from_function_linear_and_nonlinear(key):
    grad = ops.from_function(_grad2d, (5, 6), linear=True, name="grad")
    assert grad.output_shape == (2, 5, 6) and grad.name == "grad"
    assert ops.dot_test(key, grad) < 1e-12
    # the adjoint of the forward difference is minus a backward difference (interior)
    y = jnp.asarray(_rng(17).standard_normal((2, 5, 6)))
    div = grad.adjoint(y)
    np.testing.assert_allclose(
        div[2:4, 2:4],
        (y[0, 1:3, 2:4] - y[0, 2:4, 2:4]) + (y[1, 2:4, 1:3] - y[1, 2:4, 2:4]),
        atol=1e-14,
    )

    w = jnp.asarray(_rng(18).standard_normal((3, 4)))
    nonlinear = ops.from_function(lambda x: jnp.tanh(w @ x), (4,))
    assert not nonlinear.linear and nonlinear.output_shape == (3,)
    x = jnp.asarray(_rng(19).standard_normal((10, 4)))
    np.testing.assert_allclose(nonlinear(x), jnp.tanh(x @ w.T), atol=1e-14)
    for call in (lambda: nonlinear.adjoint(jnp.ones(3)), lambda: nonlinear.T):
        with pytest.raises(ValueError, match="nonlinear"):
            call()
    with pytest.raises(ValueError, match="nonlinear"):
        ops.dot_test(key, nonlinear)
    assert not (nonlinear @ ops.matrix(jnp.eye(4))).linear
    # declared linear but is not: rejected structurally, or caught by the dot test (affine)
    with pytest.raises(ValueError, match="linear_transpose"):
        ops.from_function(jnp.tanh, (3,), linear=True)
    assert ops.dot_test(key, ops.from_function(lambda x: x + 1.0, (3,), linear=True)) > 1e-3


@pytest.mark.parametrize(
    "fn,error",
    [
        (lambda x: np.asarray(x) * 2, "TracerArrayConversionError"),
        (lambda x: x if x.sum() > 0 else -x, "TracerBoolConversionError"),
        (lambda x: jnp.dot(x, jnp.ones(4)), "TypeError"),
    ],
)
def test_from_function_not_traceable(fn, error):
    with pytest.raises(TypeError, match="JAX-traceable") as info:
        ops.from_function(fn, (3,))
    assert error in str(info.value)
    with pytest.raises(TypeError, match="single array"):
        ops.from_function(lambda x: (x, x), (3,))


def test_shape_errors_name_the_shapes():
    op = ops.gaussian_blur((16, 16), 1.0)
    with pytest.raises(ValueError, match=r"x .*\(16, 16\).*\(3, 16, 15\)"):
        op(jnp.ones((3, 16, 15)))
    with pytest.raises(ValueError, match=r"y .*\(16, 16\).*\(4,\)"):
        op.adjoint(jnp.ones(4))
    small = ops.matrix(jnp.ones((3, 2)))
    with pytest.raises(
        ValueError, match=r"inner.output_shape \(3,\).*outer.input_shape \(16, 16\)"
    ):
        ops.compose(op, small)
    with pytest.raises(ValueError, match=r"\(3,\).*\(16, 16\)"):
        op @ small
    with pytest.raises(ValueError, match="stride"):
        ops.subsample((4, 4), stride=(2, 2, 2))
    with pytest.raises(ValueError, match="M must be"):
        ops.matrix(jnp.ones(3))


def test_new_parameters_do_not_retrace():
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def apply(op, x):
        return op.adjoint(op(x))

    x = jnp.ones((12, 12))
    outs = [
        apply(ops.gaussian_blur((12, 12), width, kernel_size=7), x) for width in (0.5, 1.0, 2.0)
    ]
    outs.append(apply(ops.blur(_rng(20).random((7, 7)), (12, 12)), x))
    assert not np.allclose(outs[0], outs[1])

    @jax.jit
    @chex.assert_max_traces(n=1)
    def project(op, x):
        return op(x)

    for offset in (0.0, 7.0):
        project(ops.radon(12, ODD_ANGLES + offset), x)
    # a traced width under jit: one compilation for all widths
    blur_width = jax.jit(
        chex.assert_max_traces(n=1)(lambda w, x: ops.gaussian_blur((12, 12), w, kernel_size=7)(x))
    )
    for width in (0.5, 1.5):
        blur_width(width, x)
