"""bip.tv: TV reconstruction by PDHG against scikit-image's Chambolle denoiser, an L-BFGS-B
solution of the (Huber-smoothed) CT problem, exact duality gaps, and its guarantees."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize
from skimage.restoration import denoise_tv_chambolle

from bip import images, operators, tv


def _noisy_squares(n: int, noise: float, seed: int) -> np.ndarray:
    truth = np.zeros((n, n))
    truth[n // 4 : 3 * n // 4, n // 4 : 3 * n // 4] = 1.0
    truth[1 : n // 3, n // 2 : n - 1] = 0.5
    return truth + noise * np.random.default_rng(seed).standard_normal((n, n))


def _identity(n: int) -> operators.Operator:
    return operators.mask(jnp.ones((n, n)))


def _grad_transpose(g: jax.Array) -> jax.Array:
    """``grad^T g`` by transposing ``tv.gradient`` (independent of the solver's own)."""
    (out,) = jax.linear_transpose(tv.gradient, jnp.zeros(g.shape[1:]))(g)
    return out


def test_gradient_and_total_variation_match_numpy():
    x = np.random.default_rng(0).standard_normal((5, 7))
    g = np.zeros((2, 5, 7))
    g[0, :-1] = np.diff(x, axis=0)
    g[1, :, :-1] = np.diff(x, axis=1)
    np.testing.assert_allclose(tv.gradient(jnp.asarray(x)), g, rtol=0, atol=1e-15)
    expected = np.sqrt(g[0] ** 2 + g[1] ** 2).sum()
    np.testing.assert_allclose(tv.total_variation(jnp.asarray(x)), expected, rtol=1e-14)


def test_identity_matches_skimage_denoise_tv_chambolle():
    # skimage minimises ||x - y||^2 / 2 + weight TV(x) (its weight is 1 / lambda of ROF),
    # isotropic forward differences, Neumann boundary; 20000 iterations, no early stop
    y = _noisy_squares(16, 0.2, seed=1)
    reference = denoise_tv_chambolle(y, weight=0.15, eps=0.0, max_num_iter=20000)
    x, info = tv.tv_reconstruct(
        _identity(16), y, 0.15, nonnegative=False, tol=1e-8, num_iterations=20000
    )
    assert bool(info.converged)
    error = float(np.linalg.norm(np.asarray(x) - reference) / np.linalg.norm(reference))
    assert error < 3e-5, error  # measured 1.3e-5: skimage's own error (gap 1.8e-6 vs 6e-10)
    gap_pdhg = float(info.objective) - _rof_dual(y, info.dual, nonnegative=False)
    objective = tv.tv_objective(_identity(16), jnp.asarray(y), 0.15, jnp.asarray(reference))
    gap_skimage = float(objective) - _rof_dual(y, info.dual, nonnegative=False)
    assert 0 <= gap_pdhg < 1e-8 < gap_skimage, (gap_pdhg, gap_skimage)


def _rof_dual(y: np.ndarray, dual: jax.Array, nonnegative: bool) -> float:
    """The dual objective of ``min_x ||x - y||^2 / 2 + lam TV(x)`` (``x >= 0`` optional) at a
    feasible TV dual field ``|dual| <= lam``: ``min_x ||x - y||^2 / 2 + <grad^T dual, x>``,
    a lower bound on the minimum (weak duality), by pixel in closed form."""
    w = np.asarray(_grad_transpose(dual))
    x = np.maximum(y - w, 0.0) if nonnegative else y - w
    return float(0.5 * np.sum((x - y) ** 2) + np.sum(w * x))


@pytest.mark.parametrize("nonnegative", [False, True])
def test_identity_duality_gap_closes(nonnegative):
    y = _noisy_squares(16, 0.3, seed=2) - 0.3  # negative pixels: the constraint is active
    gaps = []
    for iterations in (30, 300, 10000):
        x, info = tv.tv_reconstruct(
            _identity(16), y, 0.2, num_iterations=iterations, tol=0.0, nonnegative=nonnegative
        )
        assert int(info.iterations) == iterations
        assert float(jnp.max(jnp.linalg.norm(info.dual, axis=0))) <= 0.2 * (1 + 1e-12)
        gaps.append(float(info.objective) - _rof_dual(y, info.dual, nonnegative))
    assert min(gaps) >= -1e-9  # weak duality
    assert gaps[0] > gaps[1] > gaps[2], gaps
    assert gaps[2] < 1e-9 * float(info.objective), gaps  # measured 5e-11 relative
    if nonnegative:
        assert float(x.min()) == 0.0 and int(jnp.sum(x == 0.0)) > 10  # exactly, and active


def _smoothed_tv_lbfgs(matrix: np.ndarray, y: np.ndarray, lam: float, n: int) -> np.ndarray:
    """``argmin_{x >= 0} ||M x - y||^2 / 2 + lam sum sqrt(|grad x|^2 + eps^2)`` by scipy's
    L-BFGS-B, continued down to eps = 1e-8 (a different method and a different code path)."""

    def value_and_grad(flat, eps):
        x = flat.reshape(n, n)
        r = matrix @ flat - y
        g = np.zeros((2, n, n))
        g[0, :-1] = np.diff(x, axis=0)
        g[1, :, :-1] = np.diff(x, axis=1)
        s = np.sqrt(g[0] ** 2 + g[1] ** 2 + eps**2)
        q = g / s
        tv_grad = np.zeros((n, n))
        tv_grad[1:] += q[0, :-1]
        tv_grad[:-1] -= q[0, :-1]
        tv_grad[:, 1:] += q[1, :, :-1]
        tv_grad[:, :-1] -= q[1, :, :-1]
        return 0.5 * r @ r + lam * s.sum(), matrix.T @ r + lam * tv_grad.ravel()

    flat = np.zeros(n * n)
    for eps in (1e-2, 1e-4, 1e-6, 1e-8):
        flat = minimize(
            value_and_grad,
            flat,
            args=(eps,),
            jac=True,
            method="L-BFGS-B",
            bounds=[(0.0, None)] * flat.size,
            options={"maxiter": 3000, "ftol": 1e-16, "gtol": 1e-12, "maxcor": 30},
        ).x
    return flat.reshape(n, n)


@pytest.mark.slow
def test_ct_matches_lbfgs_on_smoothed_tv_and_long_pdhg():
    n, lam = 8, 0.5
    angles = jnp.linspace(0.0, 180.0, 5, endpoint=False)
    op = operators.radon(n, angles)
    matrix = np.asarray(operators.radon_matrix(n, angles)).reshape(-1, n * n)
    truth = _noisy_squares(n, 0.0, seed=0)
    y = np.asarray(op(jnp.asarray(truth))) + 0.3 * np.random.default_rng(3).standard_normal(
        op.output_shape
    )
    long, _ = tv.tv_reconstruct(op, y, lam, num_iterations=20000, tol=0.0)
    reference = _smoothed_tv_lbfgs(matrix, y.ravel(), lam, n)

    def objective(z):
        return float(tv.tv_objective(op, jnp.asarray(y), lam, jnp.asarray(z)))

    # tol 1e-9: measured 2350 scalar and 1475 diagonal iterations, 1.2e-9 and 5.8e-8 from
    # the long run (at tol 1e-8 the diagonal steps stop 3e-7 away, the scalar ones 3e-9)
    for preconditioner in ("scalar", "diagonal"):
        x, info = tv.tv_reconstruct(op, y, lam, tol=1e-9, preconditioner=preconditioner)
        assert bool(info.converged) and int(info.iterations) < 5000
        # smoothing by eps = 1e-8 changes the objective by at most lam * 64 * 1e-8
        assert abs(objective(x) / objective(reference) - 1) < 1e-7  # measured 3e-9
        assert abs(objective(x) - objective(long)) < 1e-10 * objective(long)
        assert objective(x) <= objective(reference) * (1 + 1e-9)
        np.testing.assert_allclose(x, long, rtol=0, atol=1e-7)
        np.testing.assert_allclose(x, reference, rtol=0, atol=1e-4)  # measured 5e-6
        assert float(x.min()) == 0.0  # non-negativity holds exactly (and is active)


@pytest.mark.slow
def test_batched_weights_float32_and_blur():
    n = 24
    op = operators.gaussian_blur((n, n), 1.5)
    y = np.asarray(op(jnp.asarray(_noisy_squares(n, 0.0, seed=0))))
    y = y + 0.05 * np.random.default_rng(4).standard_normal(y.shape)
    weights = jnp.array([0.01, 0.1])
    xs, info = tv.tv_reconstruct(op, jnp.stack([y, y])[None], weights[:, None], tol=1e-7)
    assert xs.shape == (2, 2, n, n) and info.objective.shape == (2, 2)
    for i, weight in enumerate([0.01, 0.1]):
        single, _ = tv.tv_reconstruct(op, y, weight, tol=1e-7)
        np.testing.assert_allclose(xs[i, 1], single, rtol=0, atol=1e-5)
    op32 = operators.gaussian_blur((n, n), 1.5, dtype=jnp.float32)
    x32, info32 = tv.tv_reconstruct(op32, jnp.asarray(y, jnp.float32), 0.1, tol=1e-6)
    assert x32.dtype == jnp.float32 and bool(info32.converged)
    objective32 = float(tv.tv_objective(op, jnp.asarray(y), 0.1, x32.astype(jnp.float64)))
    assert abs(objective32 / float(info.objective[1, 0]) - 1) < 1e-5  # measured 2.6e-6
    # float32 data with a float64 operator run in the promoted dtype
    promoted, _ = tv.tv_reconstruct(op, jnp.asarray(y, jnp.float32), 0.1, num_iterations=3)
    assert promoted.dtype == jnp.float64


def test_bad_input_is_refused_before_compute():
    op = _identity(4)
    y = jnp.ones((4, 4))
    with pytest.raises(ValueError, match="weight must be > 0"):
        tv.tv_reconstruct(op, y, 0.0)
    with pytest.raises(ValueError, match="trailing shape"):
        tv.tv_reconstruct(op, jnp.ones((4, 5)), 0.1)
    with pytest.raises(ValueError, match="does not broadcast"):
        tv.tv_reconstruct(op, jnp.ones((3, 4, 4)), jnp.ones(2))
    with pytest.raises(ValueError, match="nonlinear"):
        tv.tv_reconstruct(operators.from_function(jnp.tanh, (4, 4)), y, 0.1)
    with pytest.raises(ValueError, match="num_iterations"):
        tv.tv_reconstruct(op, y, 0.1, num_iterations=0)


@pytest.mark.parametrize("n, source", [(8, "noise"), (9, "phantom")])
def test_diagonal_preconditioning_reaches_the_scalar_steps_minimiser(n, source):
    # Pock and Chambolle's diagonal steps (A 1, A^T 1) and the scalar ones (||A||) solve the
    # same problem; on CT they take fewer iterations (measured 277 vs 699 on noise at n = 8,
    # relative distance 3e-10, objectives 1e-11 apart)
    rng = np.random.default_rng(n)
    truth = rng.uniform(size=(n, n)) if source == "noise" else images.phantom(n)
    op = operators.radon(n, jnp.linspace(0.0, 180.0, 12, endpoint=False))
    y = op(jnp.asarray(truth)) + 0.1 * jnp.asarray(rng.standard_normal(op.output_shape))
    runs = {
        p: tv.tv_reconstruct(op, y, 0.3, tol=1e-10, num_iterations=50000, preconditioner=p)
        for p in ("scalar", "diagonal", "auto")
    }
    (xs, scalar), (xd, diagonal), (xa, auto) = runs.values()
    assert bool(scalar.converged) and bool(diagonal.converged)
    assert not bool(scalar.preconditioned) and bool(diagonal.preconditioned)
    assert bool(auto.preconditioned) and int(auto.iterations) == int(diagonal.iterations)
    np.testing.assert_array_equal(xa, xd)
    assert float(jnp.linalg.norm(xd - xs) / jnp.linalg.norm(xs)) < 1e-6
    assert abs(float(diagonal.objective) / float(scalar.objective) - 1) < 1e-10
    assert int(diagonal.iterations) < int(scalar.iterations)


def _dense_k(op: operators.Operator) -> np.ndarray:
    """``K = [A; grad]`` as a dense matrix (rows: observations, then TV components)."""
    size = int(np.prod(op.input_shape))
    basis = jnp.eye(size).reshape((size,) + op.input_shape)
    a = np.asarray(op(basis)).reshape(size, -1).T
    g = np.asarray(tv.gradient(basis)).reshape(size, -1).T
    return np.concatenate([a, g])


@pytest.mark.parametrize(
    "op",
    [
        operators.radon(7, jnp.linspace(0.0, 180.0, 5, endpoint=False)),
        operators.gaussian_blur((6, 6), 1.0),
        operators.mask(jnp.asarray(np.random.default_rng(0).uniform(size=(6, 6)) < 0.5)),
    ],
    ids=["radon", "blur", "mask"],
)
def test_diagonal_steps_are_pock_chambolles_and_bounded(op):
    # tau_j = 1 / sum_i |K_ij| and sigma_i = 1 / sum_j |K_ij| (alpha = 1; 1/2 on the TV rows,
    # whose sums are 2 or 0) give ||Sigma^(1/2) K T^(1/2)|| <= 1 (their Lemma 2); the power
    # method's safety factor may shrink them all by one factor of at most 1.01
    k = _dense_k(op)
    assert k.min() >= -1 - 1e-12  # grad's -1; A itself is non-negative
    tau, sigma_data, sigma_tv = tv._diagonal_steps(op, jnp.float64)
    absolute = np.abs(k)
    rows = absolute[: sigma_data.size].sum(axis=1)
    factor = float(sigma_tv) / 0.5
    assert 1 / 1.01 - 1e-12 <= factor <= 1
    np.testing.assert_allclose(np.ravel(tau), factor / absolute.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(np.ravel(sigma_data)[rows > 0], factor / rows[rows > 0], rtol=1e-12)
    s = np.concatenate([np.ravel(sigma_data), np.full(k.shape[0] - sigma_data.size, sigma_tv)])
    scaled = np.sqrt(s)[:, None] * k * np.sqrt(np.ravel(tau))[None, :]
    assert np.linalg.norm(scaled, 2) <= 1 + 1e-12


def test_signed_operators_take_the_scalar_steps():
    # a forward difference has negative column sums: not non-negative, scalar steps
    diff = operators.from_function(lambda x: x[1:] - x[:-1], (6, 6), linear=True)
    assert tv._diagonal_steps(diff, jnp.float64) is None
    y = jnp.asarray(np.random.default_rng(5).standard_normal(diff.output_shape))
    x, info = tv.tv_reconstruct(diff, y, 0.1, num_iterations=5)
    assert not bool(info.preconditioned)
    with pytest.raises(ValueError, match="non-negative row and column sums"):
        tv.tv_reconstruct(diff, y, 0.1, preconditioner="diagonal")
    with pytest.raises(ValueError, match="preconditioner must be one of"):
        tv.tv_reconstruct(diff, y, 0.1, preconditioner="jacobi")
