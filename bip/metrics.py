"""Metrics on samples: angle histograms, total variation, circular Wasserstein-1, energy
distance, image quality (PSNR, SSIM, credible-interval coverage and a verdict on it), data
misfit against the noise model, distance to the manifold, ESS and R-hat (NumPyro's
implementations) and a mixing verdict read from R-hat.

Example:
    >>> angles = jnp.arctan2(x[..., 1], x[..., 0])
    >>> bip.metrics.tv_to_law(angles, law)       # law: a bip.targets.AngularLaw
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial.distance import cdist

from bip import _checks
from bip.targets import AngularLaw

Array = jax.Array


def angle_histogram(angles: Array, num_bins: int = 36) -> np.ndarray:
    """Fraction of ``angles`` (radians, any shape) in each of ``num_bins`` bins of ``[-pi, pi)``."""
    num_bins = _checks.integer("num_bins", num_bins)
    a = np.asarray(angles, dtype=float).ravel()
    _checks.finite("angles", a)
    wrapped = np.mod(a + math.pi, 2 * math.pi)
    index = np.minimum((wrapped / (2 * math.pi) * num_bins).astype(int), num_bins - 1)
    counts = np.bincount(index, minlength=num_bins)
    return counts / max(a.size, 1)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """``1/2 sum |p - q|`` between two probability vectors of the same length."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    if p.shape != q.shape:
        raise ValueError(f"probability vectors differ in shape: {p.shape} vs {q.shape}")
    return float(0.5 * np.abs(p - q).sum())


def tv_to_law(angles: Array, law: AngularLaw, num_bins: int = 36) -> float:
    """Total variation between the angle histogram and ``law`` on ``num_bins`` fixed bins."""
    return total_variation(angle_histogram(angles, num_bins), law.bin_probabilities(num_bins))


def energy_distance(x: Array, y: Array) -> float:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` between two samples ``(n, k)``
    and ``(m, k)`` (Szekely and Rizzo; V-statistic, Euclidean norm).

    Zero iff the laws agree; for two 1-D unit Gaussians a mean shift ``delta`` gives about
    ``0.56 delta^2``. Both samples must be finite. Memory ``O(n m)`` (``scipy.spatial``'s
    ``cdist``), so image draws (``k`` = pixels) fit.

    Example:
        >>> bip.metrics.energy_distance(jnp.zeros((5, 2)), jnp.ones((5, 2)))   # 2 sqrt(2)
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"samples must be (n, k) and (m, k), got {x.shape} and {y.shape}")
    _checks.finite("x", x)
    _checks.finite("y", y)

    def mean_norm(a, b):  # scipy's cdist: exact distances, memory O(n m), not O(n m k)
        return float(np.mean(cdist(a, b)))

    return 2.0 * mean_norm(x, y) - mean_norm(x, x) - mean_norm(y, y)


def psnr(estimate: Array, truth: Array) -> float:
    """Peak signal-to-noise ratio in dB, the truth's dynamic range as the peak."""
    estimate, truth = np.asarray(estimate, float), np.asarray(truth, float)
    if estimate.shape != truth.shape:
        raise ValueError(f"estimate {estimate.shape} and truth {truth.shape} differ in shape")
    peak = float(truth.max() - truth.min()) or 1.0
    mse = float(np.mean((estimate - truth) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(peak**2 / mse)


def ssim(estimate: Array, truth: Array) -> float:
    """Structural similarity (scikit-image) with the truth's dynamic range."""
    from skimage.metrics import structural_similarity

    estimate, truth = np.asarray(estimate, float), np.asarray(truth, float)
    data_range = float(truth.max() - truth.min()) or 1.0
    return float(structural_similarity(estimate, truth, data_range=data_range))


def coverage(samples: Array, truth: Array, level: float = 0.9) -> float:
    """Fraction of the entries of ``truth`` inside the pixel-wise central ``level`` credible
    intervals of ``samples`` ``(..., *truth.shape)`` (all leading axes pooled, e.g. ``(chains,
    draws)``)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    samples, truth = np.asarray(samples, float), np.asarray(truth, float)
    flat = samples.reshape((-1,) + truth.shape)
    lo, hi = np.quantile(flat, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return float(np.mean((truth >= lo) & (truth <= hi)))


def coverage_note(coverage_value: float, level: float = 0.9) -> str:
    """``"ok"``, or what a pixel-wise coverage far from ``level`` says about the intervals.

    A coverage at or above 0.99 (where ``level`` of the pixels are expected inside) means the
    intervals are too wide: the raw draws of a score-prior posterior sit ``sigma^(1 -
    alpha/2)`` off the manifold (``sigma`` for the generic prior; far more in a
    maximum-entropy run), a white-noise spread that covers everything (read the denoised
    draws' coverage instead). Below ``level / 2`` they are too narrow (overconfident).

    Example:
        >>> bip.metrics.coverage_note(1.0)[:21]
        'intervals too wide: 1'
        >>> bip.metrics.coverage_note(0.88)
        'ok'
    """
    if coverage_value >= 0.99:
        return (
            f"intervals too wide: {coverage_value:.2f} of the pixels lie inside the {level:.0%} "
            f"intervals, where about {level:.2f} would if they were calibrated; the draws "
            "spread more than the uncertainty about the image (raw draws of a score prior "
            "carry white noise of size sigma^(1 - alpha/2) off the manifold: read the "
            "denoised draws' std and coverage)"
        )
    if coverage_value < level / 2:
        return (
            f"intervals too narrow: only {coverage_value:.2f} of the pixels lie inside the "
            f"{level:.0%} intervals (overconfident: unmixed chains, or a prior that does not "
            "fit the data)"
        )
    return "ok"


def misfit(residual: Array, std: float, df: float | None = None) -> float:
    """Data misfit per measurement: ``mean((r / s)^2)`` for Gaussian noise (chi-square per
    measurement, about 1 at the truth), ``mean((df + 1) log(1 + (r / s)^2 / df))`` for
    Student-t noise (twice the negative log-likelihood per measurement, up to a constant).

    Args:
        residual: ``y - A(x)``, any shape. std: the noise scale ``s``. df: Student-t degrees
            of freedom, or None for Gaussian noise.

    Example:
        >>> bip.metrics.misfit(np.array([0.1, -0.1]), 0.1)
        1.0
    """
    _checks.positive("std", std)
    z2 = (np.asarray(residual, float) / std) ** 2
    if df is None:
        return float(np.mean(z2))
    return float(np.mean((df + 1) * np.log1p(z2 / df)))


def misfit_range(
    size: int, std: float, df: float | None = None, level: float = 0.99, num: int = 2000
) -> tuple[float, float]:
    """The central ``level`` range of ``misfit`` at the truth: the misfit of ``size``
    measurements of pure noise (``num`` seeded simulations; Gaussian: ``chi2_size / size``).
    An estimate that explains the data fits at least about this well.

    Example:
        >>> lo, hi = bip.metrics.misfit_range(1024, 0.05)     # about (0.92, 1.08)
    """
    size = _checks.integer("size", size)
    rng = np.random.default_rng(0)
    shape = (num, size)
    noise = rng.standard_normal(shape) if df is None else rng.standard_t(df, shape)
    values = [misfit(row * std, std, df) for row in noise]
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def mean_distance(manifold, x: Array) -> float:
    """Mean Euclidean distance of the points ``x`` ``(..., d)`` to ``manifold``."""
    return float(jnp.mean(manifold.distance(jnp.asarray(x))))


TAIL_PROB = (0.05, 0.95)
"""The quantiles of the tail ESS: those of the central 90% intervals bip's reports cover with."""


def effective_sample_size(samples: Array, method: str = "bulk") -> np.ndarray:
    """ESS per coordinate of ``samples`` ``(num_chains, num_draws, ...)`` (arviz-stats).

    ``method="bulk"``: the rank-normalised split ESS (Vehtari et al. 2021), the ESS of the
    mean for any monotone transform of the draws; ``"tail"``: the smaller ESS of the
    indicators of the 5% and 95% quantiles (``TAIL_PROB``), which the 90% intervals rest on.
    NaN with fewer than 4 draws a chain. (bip's jitted ``bip.streaming.diagnostics`` ESS is an
    AR(1) estimate on the raw values: close to the bulk ESS for Gaussian-like draws, about
    half the tail ESS there, and up to twice the bulk ESS on skewed ones; tests/test_arviz.py.)

    Example:
        >>> x = np.random.default_rng(0).normal(size=(4, 1000, 2))
        >>> ess = bip.metrics.effective_sample_size(x, "tail")   # iid draws: near 4000
        >>> bool(np.all((ess > 3400) & (ess < 4600)))
        True
    """
    from arviz_stats.base import array_stats

    if method not in ("bulk", "tail"):
        raise ValueError(f"method must be 'bulk' or 'tail', got {method!r}")
    prob = TAIL_PROB if method == "tail" else None
    s = np.asarray(samples, float)
    return np.asarray(array_stats.ess(s, chain_axis=0, draw_axis=1, method=method, prob=prob))


def split_rhat(samples: Array) -> np.ndarray:
    """Rank-normalised split R-hat per coordinate of ``samples`` ``(num_chains, num_draws,
    ...)`` (arviz-stats; Vehtari et al. 2021): the larger of the bulk and the folded R-hat."""
    from arviz_stats.base import array_stats

    s = np.asarray(samples, float)
    return np.asarray(array_stats.rhat(s, chain_axis=0, draw_axis=1, method="rank"))


def mixing_note(
    rhat_max: float, rhat_median: float, draws_per_chain: int, threshold: float = 1.1
) -> str:
    """``"ok"``, or what the split R-hat (per coordinate) says about mixing.

    The verdict rests on the median over coordinates: the maximum over many pixels of a noisy
    estimate exceeds ``threshold`` by chance even in mixed chains, so a high maximum alone is
    reported as a caution. With few draws a chain R-hat itself is noisy, and the note says so.

    Example:
        >>> bip.metrics.mixing_note(rhat_max=1.05, rhat_median=1.01, draws_per_chain=50)
        'ok'
        >>> bip.metrics.mixing_note(1.8, 1.3, 10)[:9]
        'NOT MIXED'
    """
    if not np.isfinite(rhat_max):
        return "not assessed: fewer than 4 draws per chain"
    if rhat_max <= threshold:
        return "ok"
    if rhat_median > threshold:
        note = (
            f"NOT MIXED: median R-hat {rhat_median:.2f} > {threshold} (up to {rhat_max:.2f}): "
            "the chains disagree in most coordinates (slow mixing, or different modes); the "
            "mean, std and coverage describe these chains more than the posterior: run more "
            "steps or more chains"
        )
    else:
        note = (
            f"mostly mixed: median R-hat {rhat_median:.2f} <= {threshold}, up to "
            f"{rhat_max:.2f} in some coordinates (the largest of many noisy estimates; run "
            "longer to confirm them)"
        )
    if draws_per_chain < 20:
        note += (
            f" (only {draws_per_chain} draws a chain: R-hat is noisy itself; keep 20 or more "
            "draws a chain, i.e. a smaller thin, to tell)"
        )
    return note
