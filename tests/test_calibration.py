"""bip.calibration: SBC ranks, coverage curves and TARP against cases whose answer is exact.

The conjugate Gaussian ``theta ~ N(0, I)``, ``y = theta + N(0, s^2 I)`` has the posterior
``N(y / (1 + s^2), s^2 / (1 + s^2) I)``: its exact draws must pass every check, and draws
from a posterior that is too narrow, too wide or shifted must fail them.
"""

import numpy as np
import pytest
import scipy.stats

from bip import calibration

K, L, D, S = 400, 49, 3, 0.7  # trials, draws per trial, coordinates, noise std


def _gaussian_trials(std_factor=1.0, shift=0.0, seed=0):
    """Truths ``(K, D)`` and posterior draws ``(K, L, D)``: exact for ``std_factor = 1``,
    ``shift = 0``, else scaled about the exact mean and shifted (in posterior stds)."""
    rng = np.random.default_rng(seed)
    truths = rng.normal(size=(K, D))
    y = truths + S * rng.normal(size=(K, D))
    mean, std = y / (1 + S**2), S / np.sqrt(1 + S**2)
    draws = mean[:, None] + std * (shift + std_factor * rng.normal(size=(K, L, D)))
    return truths, draws


# --------------------------------------------------------------------------- exact small cases


def test_ranks_count_draws_below_and_break_ties_at_random():
    assert calibration.ranks([[0.5]], [[[0.1], [0.7], [0.3]]]).tolist() == [[2]]
    # a truth equal to all L draws (a clamped boundary) gets a uniform rank on {0, ..., L}
    ties = calibration.ranks(np.zeros((6000, 1)), np.zeros((6000, 4, 1)), seed=3)[:, 0]
    counts = np.bincount(ties, minlength=5)
    assert counts.sum() == 6000 and scipy.stats.chisquare(counts).pvalue > 0.01


def test_rank_histogram_and_exact_bin_probabilities():
    assert calibration.rank_histogram(np.array([0, 1, 2, 3]), 3, 2).tolist() == [2, 2]
    # L = 4: ranks 0..4 fall in bins 0, 0, 0, 1, 1 of 2, so the expected shares are 3/5, 2/5
    out = calibration.rank_uniformity(np.array([0, 1, 2, 3, 4] * 20), 4, 2)
    assert out["histogram"].tolist() == [60, 40]
    np.testing.assert_allclose(out["expected"], [60.0, 40.0])
    assert float(out["statistic"]) == 0.0 and float(out["pvalue"]) == 1.0
    # the statistic and p-value are Pearson's, with bins - 1 degrees of freedom
    r = np.array([[0, 1], [4, 2], [4, 4], [1, 0], [3, 4], [4, 4], [2, 3], [4, 1]])
    out = calibration.rank_uniformity(r, 4, 2)
    counts = out["histogram"]
    expected = np.array([3 / 5, 2 / 5])[:, None] * 8
    statistic = np.sum((counts - expected) ** 2 / expected, axis=0)
    np.testing.assert_allclose(out["statistic"], statistic)
    np.testing.assert_allclose(out["pvalue"], scipy.stats.chi2.sf(statistic, 1))


def test_pit_histograms_have_equal_bins_whatever_the_number_of_draws():
    out = calibration.pit_uniformity(np.arange(0.05, 1.0, 0.1), 10)
    assert out["histogram"].tolist() == [1] * 10 and out["expected"].tolist() == [1.0] * 10
    # 20 draws (21 ranks) in 10 bins: the rank bins are unequal, the PIT bins are not
    truths, draws = _gaussian_trials(seed=2)
    p = calibration.pit(truths, draws[:, :20])
    assert calibration.pit_uniformity(p, 10)["expected"].tolist() == [K / 10] * 10
    assert np.all(calibration.pit_uniformity(p, 10)["pvalue"] > 0.01)


def test_coverage_from_pit_is_exact_for_any_number_of_draws():
    draws = np.arange(99.0).reshape(1, 99)  # 0..98; the truth 93.5 has rank 94 of 0..99
    assert calibration.covered([93.5], draws, [0.8, 0.9])[:, 0].tolist() == [False, True]
    # three exchangeable draws per trial: the randomised PIT covers exactly the nominal level,
    # where np.quantile's interval covers level (L - 1) / (L + 1) = level / 2
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40_000, 4))
    truths, draws = x[:, 0], x[:, 1:]
    curve = calibration.coverage_curve(truths, draws, [0.5, 0.9])
    np.testing.assert_allclose(curve, [0.5, 0.9], atol=4 * np.sqrt(0.25 / 40_000))
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=1)
    assert np.mean((truths >= lo) & (truths <= hi)) < 0.5  # np.quantile's 90% interval
    # the rank is the integer part of pit * (L + 1)
    p = calibration.pit(truths, draws, seed=5)
    np.testing.assert_array_equal(
        calibration.ranks_from_pit(p, 3), calibration.ranks(truths, draws, seed=5)
    )


def test_tarp_fractions_and_expected_coverage_by_hand():
    # one of three draws is closer to the reference 0.5 than the truth 0: f = (1 + U) / 4
    f = calibration.tarp_fractions([[0.0]], [[[1.0], [-0.4], [3.0]]], [[0.5]])
    assert 0.25 <= f[0] < 0.5
    # scale divides each coordinate before the Euclidean distance: with it, the draw (0, 3)
    # (scaled (0, 0.3)) is closer to the reference (0, 0) than the truth (1, 0); without, not
    truth, draws, reference = [[1.0, 0.0]], [[[0.0, 3.0], [2.0, 0.0]]], [[0.0, 0.0]]
    f = calibration.tarp_fractions(truth, draws, reference, scale=[1.0, 10.0])
    assert 1 / 3 <= f[0] < 2 / 3
    assert 0 <= calibration.tarp_fractions(truth, draws, reference)[0] < 1 / 3
    np.testing.assert_array_equal(
        calibration.expected_coverage([0.1, 0.3, 0.6, 0.9], [0.0, 0.5, 1.0]), [0.0, 0.5, 1.0]
    )


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="draws must be"):
        calibration.ranks(np.zeros((3, 2)), np.zeros((3, 5, 4)))
    with pytest.raises(ValueError, match="draws must be"):
        calibration.covered(np.zeros(3), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="truths"):
        calibration.pit([np.nan], [[0.0, 1.0]])
    with pytest.raises(ValueError, match="bins"):
        calibration.rank_histogram(np.array([0, 1]), 3, 5)
    with pytest.raises(ValueError, match="ranks must lie"):
        calibration.rank_histogram(np.array([0, 4]), 3, 2)
    with pytest.raises(ValueError, match="levels"):
        calibration.covered(np.zeros(3), np.zeros((3, 5)), [0.5, 1.0])
    with pytest.raises(ValueError, match="references"):
        calibration.tarp_fractions(np.zeros((3, 2)), np.zeros((3, 5, 2)), np.zeros((3, 1)))


# --------------------------------------------------------------------------- conjugate Gaussian


def test_exact_gaussian_posterior_passes_every_check():
    # (over 60 seeds, 1.1% of the 180 chi-square p-values fall below 0.01 and 3% of the
    # TARP KS p-values below 0.05, as uniform p-values should; seed 1 is one of them)
    truths, draws = _gaussian_trials(seed=1)
    r = calibration.ranks(truths, draws)
    out = calibration.rank_uniformity(r, L, 10)
    assert np.all(out["pvalue"] > 0.01), out["pvalue"]
    curve = calibration.coverage_curve(truths, draws)
    se = np.sqrt(np.asarray(calibration.LEVELS) * (1 - np.asarray(calibration.LEVELS)) / K)
    assert np.all(np.abs(curve - np.asarray(calibration.LEVELS)[:, None]) < 4 * se[:, None])
    tarp = calibration.tarp(truths, draws)
    assert tarp["ks_pvalue"] > 0.01 and tarp["max_abs_error"] < 0.08, tarp


@pytest.mark.parametrize(
    "std_factor, shift, coverage_90",
    [(0.5, 0.0, (0.0, 0.65)), (2.0, 0.0, (0.97, 1.0)), (1.0, 1.0, (0.0, 0.8))],
    ids=["too-narrow", "too-wide", "shifted"],
)
def test_wrong_gaussian_posteriors_fail(std_factor, shift, coverage_90):
    truths, draws = _gaussian_trials(std_factor, shift)
    out = calibration.rank_uniformity(calibration.ranks(truths, draws), L, 10)
    assert np.all(out["pvalue"] < 1e-6), out["pvalue"]
    hist = out["histogram"].sum(axis=1)
    if std_factor < 1:  # ranks pile up at both ends
        assert hist[0] + hist[-1] > 4 * hist[4:6].sum() / 2
    elif std_factor > 1:  # ... or in the middle
        assert hist[4:6].sum() > 3 * (hist[0] + hist[-1])
    else:  # ... or on one side
        assert hist[:5].sum() > 2 * hist[5:].sum()
    level_90 = calibration.LEVELS.index(0.9)
    low, high = coverage_90
    assert np.all((low <= (c := calibration.coverage_curve(truths, draws)[level_90])) & (c <= high))
    tarp = calibration.tarp(truths, draws)
    assert tarp["ks_pvalue"] < 1e-4 and tarp["max_abs_error"] > 0.15, tarp
