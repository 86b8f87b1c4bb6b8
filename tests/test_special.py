"""Direct checks of bip's special functions and sample metrics against SciPy and scikit-image.

``bip.bessel`` (the von Mises-Fisher scores rest on it) against ``scipy.special.ive`` over
integer and half-integer orders and arguments from 1e-6 to 1e4; ``bip.metrics.energy_distance``
against closed forms and SciPy's 1-D energy distance; ``bip.metrics.ssim`` and ``psnr``
against scikit-image on white noise and a smooth image.
"""

import numpy as np
import pytest
import scipy.special
import scipy.stats

from bip import bessel, metrics

ORDERS = [0, 0.5, 1, 1.5, 2, 4.5, 10]
Z = np.concatenate([[1e-6, 1e-4, 5e-4, 2e-3], np.logspace(-2, 4, 61)])


@pytest.mark.parametrize("nu", ORDERS)
def test_bessel_ratio_matches_scipy(nu):
    expected = scipy.special.ive(nu + 1, Z) / scipy.special.ive(nu, Z)
    got = np.asarray(bessel.bessel_ratio(nu, Z))
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize("nu", ORDERS)
def test_log_bessel_iv_matches_scipy(nu):
    expected = np.log(scipy.special.ive(nu, Z)) + Z  # log I_nu = log ive + z
    got = np.asarray(bessel.log_bessel_iv(nu, Z))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)


def test_bessel_rejects_other_orders():
    with pytest.raises(ValueError, match="integer or half-integer"):
        bessel.bessel_ratio(0.3, 1.0)
    with pytest.raises(ValueError, match="integer or half-integer"):
        bessel.log_bessel_iv(-1, 1.0)


def test_energy_distance_closed_forms():
    # Two point masses at distance r: 2 r - 0 - 0.
    assert metrics.energy_distance(np.zeros((5, 2)), np.ones((5, 2))) == pytest.approx(
        2 * np.sqrt(2), rel=1e-14
    )
    # Identical samples: exactly zero.
    x = np.random.default_rng(0).normal(size=(50, 3))
    assert metrics.energy_distance(x, x) == pytest.approx(0.0, abs=1e-14)


def test_energy_distance_matches_scipy_in_one_dimension():
    # SciPy's energy_distance is sqrt(2) times the square root of the (V-statistic) distance
    # for equal-weight 1-D samples: D^2 = 2 E|X-Y| - E|X-X'| - E|Y-Y'| = 2 int (F - G)^2.
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=200), rng.normal(0.5, 1.3, size=150)
    ours = metrics.energy_distance(x[:, None], y[:, None])
    assert ours == pytest.approx(scipy.stats.energy_distance(x, y) ** 2, rel=1e-12)


def test_energy_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(n, k\) and \(m, k\)"):
        metrics.energy_distance(np.zeros((5, 2)), np.zeros((5, 3)))


@pytest.mark.parametrize("size", [16, 33])
def test_ssim_and_psnr_match_skimage(size):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = np.random.default_rng(size)
    yy, xx = np.mgrid[:size, :size] / size
    for truth in (rng.uniform(size=(size, size)), np.sin(4 * xx) * np.cos(3 * yy)):
        estimate = truth + 0.1 * rng.normal(size=truth.shape)
        data_range = truth.max() - truth.min()
        assert metrics.ssim(estimate, truth) == pytest.approx(
            structural_similarity(estimate, truth, data_range=data_range), rel=1e-12
        )
        assert metrics.psnr(estimate, truth) == pytest.approx(
            peak_signal_noise_ratio(truth, estimate, data_range=data_range), rel=1e-12
        )
