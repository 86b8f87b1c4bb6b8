"""bip.baselines: the interior search, the estimators against closed forms and skimage, and
the baselines of a shipped CT spec chosen at interior optima on validation images."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi
from skimage.transform import iradon

from bip import baselines, images, metrics, operators, problems, tv

PROBLEMS = Path(__file__).resolve().parent.parent / "problems"


def _peak(at: float):
    """A score with its maximum at ``at`` (a parabola in log w), vectorised."""
    return lambda w: -(np.log(np.asarray(w) / at) ** 2)


@pytest.mark.parametrize("at", [300.0, 3e-7, 0.2])
def test_interior_search_extends_the_grid_until_the_optimum_is_inside(at):
    found = baselines.interior_search(_peak(at), 1e-2, 1e1)
    assert found.interior
    assert abs(np.log(found.value / at)) < np.log(1.03)  # within 3% after 3 refinements
    assert found.bounds[0] < at < found.bounds[1]
    assert (found.bounds[1] > 1e1) == (at > 1e1) and (found.bounds[0] < 1e-2) == (at < 1e-2)


def test_interior_search_flags_a_monotone_score():
    found = baselines.interior_search(lambda w: np.log(w), 1e-2, 1e1, limits=(1e-3, 1e3))
    assert not found.interior and found.value == pytest.approx(1e3)
    assert found.bounds == pytest.approx((1e-2, 1e3))
    low = baselines.interior_search(lambda w: -np.log(w), 1e-2, 1e1, limits=(1e-3, 1e3))
    assert not low.interior and low.value == pytest.approx(1e-3)
    assert low.bounds == pytest.approx((1e-3, 1e1))
    # NaN is the worst score, never the best
    nan_low = baselines.interior_search(lambda w: np.where(w < 1, np.nan, _peak(5.0)(w)), 0.1, 100)
    assert nan_low.interior and abs(np.log(nan_low.value / 5.0)) < np.log(1.03)
    with pytest.raises(ValueError, match="lower < upper"):
        baselines.interior_search(_peak(1.0), 10.0, 1.0)


def _dense(op: operators.Operator) -> np.ndarray:
    size = int(np.prod(op.input_shape))
    basis = jnp.eye(size).reshape((size,) + op.input_shape)
    return np.asarray(op(basis)).reshape(size, -1).T


def test_tikhonov_and_wiener_solve_their_normal_equations():
    op = operators.gaussian_blur((8, 8), 1.0)
    truth = images.phantom(8)
    y = op(truth) + 0.05 * np.random.default_rng(0).standard_normal((8, 8))
    a = _dense(op)
    grad = np.stack(
        [
            _dense(
                operators.from_function(
                    lambda x, i=i: baselines._gradient(x)[i], (8, 8), linear=True
                )
            )
            for i in range(2)
        ]
    )
    d = grad.reshape(-1, 64)
    for estimate, penalty, weight in (
        (baselines.tikhonov, np.eye(64), 0.03),
        (baselines.wiener, d.T @ d, 0.1),
    ):
        normal, rhs = a.T @ a + weight * penalty, a.T @ np.ravel(y)
        got = np.ravel(estimate(op, y, weight))
        # conjugate gradients stop at a relative residual of 1e-5
        assert np.linalg.norm(normal @ got - rhs) <= 1e-5 * np.linalg.norm(rhs)
        exact = np.linalg.solve(normal, rhs)
        np.testing.assert_allclose(got, exact, atol=1e-3 * np.abs(exact).max())
    assert problems.tikhonov is baselines.tikhonov  # the old import path still works


def test_fbp_is_iradon_of_the_smoothed_sinogram():
    angles = np.linspace(0.0, 180.0, 12, endpoint=False)
    op = operators.radon(24, angles)
    sino = np.asarray(op(images.phantom(24)))
    for name, width in (("ramp", 1e-3), ("hann", 1.5), ("shepp-logan", 0.7)):
        smoothed = ndi.gaussian_filter1d(sino, width, axis=0, mode="constant", radius=23)
        ref = iradon(smoothed, angles, circle=True, filter_name=name)
        got = baselines.fbp(op, sino, name, width)
        assert float(np.max(np.abs(got - ref))) / np.abs(ref).max() < 1e-10
    with pytest.raises(ValueError, match="filter"):
        baselines.fbp(op, sino, None, 1.0)
    with pytest.raises(TypeError, match="radon"):
        baselines.fbp(operators.gaussian_blur((24, 24), 1.0), sino)


def test_classical_on_the_truth_is_an_oracle():
    op = operators.gaussian_blur((16, 16), 1.5)
    truth = images.phantom(16)
    y = op(truth) + 0.05 * np.random.default_rng(1).standard_normal((16, 16))
    out = baselines.classical(op, y, truth)
    assert sorted(out) == ["tikhonov", "tv", "wiener"]
    for found in out.values():
        assert found["chosen_on"] == "oracle" and found["interior"]
        lo, hi = found["search_range"]
        assert lo < found["weight"] < hi
    assert baselines.classical(operators.from_function(jnp.tanh, (16, 16)), y, truth) == {}


@pytest.mark.slow
def test_shipped_ct_spec_baselines_are_interior_and_chosen_on_validation_images():
    """ct-phantom-16: every baseline's parameter is strictly inside its searched range and
    chosen on 4 other draws of the phantom law. Measured (float64): FBP hann, width 1.0 px,
    26.3 dB (plain ramp FBP: 16.1; ramp at its best width 26.2); Tikhonov weight 37 (the old
    grid stopped at 10: 19.3 dB), 20.5 dB; Wiener weight 60, 25.7 dB; TV weight 6.0, 28.3 dB
    (500 PDHG iterations; 28.4 converged)."""
    problem = problems.build(problems.load(PROBLEMS / "ct-phantom-16.toml"))
    base = problem.baseline
    assert sorted(base) == ["fbp", "tikhonov", "tv", "wiener"]
    for name, found in base.items():
        value = found["width"] if name == "fbp" else found["weight"]
        lo, hi = found["search_range"]
        assert found["interior"] and lo < value < hi, (name, found)
        assert found["chosen_on"] == "validation" and "phantom law" in found["validation"]
    assert base["tikhonov"]["weight"] > 10.0 and base["tikhonov"]["psnr"] > 19.5
    assert set(base["fbp"]["psnr_by_filter"]) == set(baselines.FBP_FILTERS)
    assert base["fbp"]["psnr"] == base["fbp"]["psnr_by_filter"][base["fbp"]["filter"]]
    # TV (non-negative, edge-preserving) is the best baseline on piecewise-constant phantoms
    assert base["tv"]["psnr"] > base["fbp"]["psnr"] + 1.5, base
    x = baselines.reconstruct(problem.operator, problem.y, "tv", base["tv"])
    assert float(x.min()) >= 0.0
    assert abs(float(metrics.psnr(x, problem.truth)) - base["tv"]["psnr"]) < 1e-6
    plain = operators.filtered_back_projection(problem.operator, problem.y)
    assert base["fbp"]["psnr"] > float(
        10 * np.log10(np.ptp(problem.truth) ** 2 / np.mean((plain - problem.truth) ** 2))
    )


def test_tv_search_with_diagonal_steps_matches_the_scalar_steps_and_the_converged_psnr():
    # 16x16 12-view CT, chosen on the truth: the default search (diagonal steps, 500
    # iterations) picks the weight that the scalar steps pick, and the PSNR of the
    # converged solve there. Measured: weight 0.00992 both, 27.0985 dB (scalar 27.0991,
    # converged 27.0985)
    op = operators.radon(16, jnp.linspace(0.0, 180.0, 12, endpoint=False))
    truth = images.phantom(16)
    y = op(truth) + 0.05 * jnp.asarray(np.random.default_rng(2).standard_normal(op.output_shape))
    found = baselines.tv_search(op, y, truth, None, 1.0)
    scalar = baselines.tv_search(op, y, truth, None, 1.0, preconditioner="scalar")
    assert found["iterations"] == 500 and found["interior"]
    assert found["weight"] == pytest.approx(scalar["weight"], rel=1e-12)
    converged, _ = tv.tv_reconstruct(op, y, found["weight"], num_iterations=20000, tol=0.0)
    assert abs(found["psnr"] - float(metrics.psnr(converged, truth))) < 0.05
    x = baselines.reconstruct(op, y, "tv", found)
    assert abs(float(metrics.psnr(x, truth)) - found["psnr"]) < 1e-6
