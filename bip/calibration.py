"""Calibration over repeated experiments: SBC rank statistics, coverage curves and TARP.

A posterior sampler is calibrated when, over experiments whose truth is drawn from the prior
and whose measurement is drawn from the likelihood, the truth looks like one more posterior
draw. Three checks read that off ``K`` trials, each with a truth ``(...)`` and ``L`` posterior
draws ``(L, ...)``:

- **Simulation-based calibration** (Talts et al. 2018): the rank of the truth among the
  draws, ``#{draws < truth}`` (ties broken at random), is uniform on ``{0, ..., L}`` for
  every coordinate when the draws are exact and independent. ``rank_histogram`` bins the
  ranks, ``rank_uniformity`` runs a chi-square test (``scipy.stats.chisquare``) of each
  coordinate's histogram against its exact expected counts. Too narrow a posterior piles
  ranks into the end bins, too wide a one into the middle, a biased one to one side.
- **Coverage curve**: the fraction of trials whose truth lies inside the central
  ``level`` interval of the draws, against the nominal level (5% to 95%), per coordinate or
  pooled over pixels. The interval is read from the truth's randomised PIT ``(rank + U) /
  (L + 1)`` (``pit``, ``covered``), so exact draws cover exactly ``level`` for any ``L``
  (``np.quantile`` intervals cover about ``level (L - 1) / (L + 1)``).
- **TARP** (Lemos et al. 2023, "Sampling-based accuracy testing of posterior estimators
  for general inference", ICML): for a reference point ``r`` drawn independently of the
  trial, ``f`` = the share of draws closer to ``r`` than the truth (randomised like the
  PIT); the expected coverage probability ``ECP(level) = P(f < level)`` equals ``level``
  for every level when the posterior is right (for every reference law: then ``f`` is
  uniform, which ``tarp_summary`` tests with a Kolmogorov-Smirnov test), jointly over all
  coordinates of the event.

The functions are pure, on arrays: truths ``(K, ...)`` and draws ``(K, L, ...)`` (``L`` =
chains x draws, pooled); ``figure`` and ``report_lines`` read the summary that
``bip.calibrate`` (``bip calibrate SPEC --trials K``) writes.

Example:
    >>> rng = np.random.default_rng(0)
    >>> truths = rng.normal(size=(200, 3))                       # theta ~ N(0, I)
    >>> y = truths + rng.normal(size=truths.shape)               # y = theta + noise
    >>> draws = y[:, None] / 2 + rng.normal(size=(200, 99, 3)) / np.sqrt(2)  # exact posterior
    >>> r = bip.calibration.ranks(truths, draws)
    >>> bool(np.all(bip.calibration.rank_uniformity(r, 99, 10)["pvalue"] > 0.01))
    True
    >>> curve = bip.calibration.coverage_curve(truths, draws, [0.5, 0.9])   # about 0.5, 0.9
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike

from bip import _checks

LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""The nominal levels of the coverage curve: 5%, 10%, ..., 95%."""

TARP_LEVELS = tuple(round(0.05 * i, 2) for i in range(21))
"""The credibility levels at which TARP's expected coverage is read: 0, 0.05, ..., 1."""


# --------------------------------------------------------------------------- statistics


def _pair(truths, draws) -> tuple[np.ndarray, np.ndarray]:
    truths, draws = np.asarray(truths, float), np.asarray(draws, float)
    if (
        truths.ndim < 1
        or draws.ndim != truths.ndim + 1
        or draws.shape[0] != truths.shape[0]
        or draws.shape[2:] != truths.shape[1:]
    ):
        raise ValueError(
            f"draws must be (K, L, ...) with truths (K, ...) of the same K and event shape; got "
            f"truths {truths.shape} and draws {draws.shape}"
        )
    if truths.shape[0] < 1 or draws.shape[1] < 1:
        raise ValueError(f"need at least one trial and one draw, got draws {draws.shape}")
    _checks.finite("truths", truths)
    _checks.finite("draws", draws)
    return truths, draws


def ranks(truths: ArrayLike, draws: ArrayLike, seed: int = 0) -> np.ndarray:
    """SBC ranks: ``#{draws < truth}`` per trial and coordinate, ties broken uniformly at
    random (so a coordinate where truth and draws coincide, e.g. a clamped box boundary, still
    gets uniform ranks).

    Args:
        truths: ``(K, ...)``.
        draws: ``(K, L, ...)``, the ``L`` posterior draws of each trial.
        seed: seed of the tie-breaking.

    Returns:
        Integer ranks ``(K, ...)`` in ``{0, ..., L}``.

    Example:
        >>> bip.calibration.ranks([[0.5]], [[[0.1], [0.7], [0.3]]])
        array([[2]])
    """
    truths, draws = _pair(truths, draws)
    below = np.sum(draws < truths[:, None], axis=1)
    ties = np.sum(draws == truths[:, None], axis=1)
    extra = np.random.default_rng(seed).integers(0, ties + 1) if np.any(ties) else 0
    return below + extra


def _bin_probabilities(num_draws: int, bins: int) -> np.ndarray:
    """The exact probability of each rank bin under uniform ranks on ``{0, ..., num_draws}``."""
    index = (np.arange(num_draws + 1) * bins) // (num_draws + 1)
    return np.bincount(index, minlength=bins) / (num_draws + 1)


def _check_ranks(rank_values, num_draws: int, bins: int) -> np.ndarray:
    num_draws = _checks.integer("num_draws", num_draws)
    bins = _checks.integer("bins", bins, minimum=2)
    if bins > num_draws + 1:
        raise ValueError(
            f"bins ({bins}) must not exceed the number of ranks L + 1 = {num_draws + 1}"
        )
    r = np.asarray(rank_values)
    if r.ndim < 1 or not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"ranks must be an integer array (K, ...), got {r.dtype} {r.shape}")
    if r.size and (r.min() < 0 or r.max() > num_draws):
        raise ValueError(f"ranks must lie in [0, {num_draws}], got [{r.min()}, {r.max()}]")
    return r


def rank_histogram(rank_values: ArrayLike, num_draws: int, bins: int) -> np.ndarray:
    """Counts of ranks in ``bins`` equal slices of ``{0, ..., L}`` (rank ``r`` falls in bin
    ``floor(r * bins / (L + 1))``).

    Args:
        rank_values: ranks ``(K, ...)`` from ``ranks``.
        num_draws: ``L``, the draws per trial.
        bins: number of bins, ``2 <= bins <= L + 1``.

    Returns:
        ``(bins, ...)`` counts; each coordinate's column sums to ``K``.

    Example:
        >>> bip.calibration.rank_histogram(np.array([0, 1, 2, 3]), 3, 2)
        array([2, 2])
    """
    r = _check_ranks(rank_values, num_draws, bins)
    index = (r * bins) // (num_draws + 1)
    return np.stack([np.sum(index == b, axis=0) for b in range(bins)])


def rank_uniformity(rank_values: ArrayLike, num_draws: int, bins: int) -> dict:
    """Chi-square test of uniform ranks, per coordinate (``scipy.stats.chisquare`` against the
    exact expected counts ``K P(bin)``, ``bins - 1`` degrees of freedom).

    Args:
        rank_values: ranks ``(K, ...)``; ``K`` should give at least 5 expected counts per bin.
        num_draws: ``L``. bins: number of bins.

    Returns:
        ``{"histogram": (bins, ...), "expected": (bins,), "statistic": (...), "pvalue": (...)}``.

    Example:
        >>> out = bip.calibration.rank_uniformity(np.arange(100) % 10, 9, 10)
        >>> float(out["statistic"]), float(out["pvalue"])
        (0.0, 1.0)
    """
    counts = rank_histogram(rank_values, num_draws, bins)
    expected = _bin_probabilities(num_draws, bins) * np.shape(rank_values)[0]
    column = expected.reshape((bins,) + (1,) * (counts.ndim - 1))
    statistic, pvalue = scipy.stats.chisquare(counts, np.broadcast_to(column, counts.shape), axis=0)
    return {
        "histogram": counts,
        "expected": expected,
        "statistic": np.asarray(statistic),
        "pvalue": np.asarray(pvalue),
    }


def _check_levels(levels, name: str = "levels") -> np.ndarray:
    levels = np.atleast_1d(np.asarray(levels, float))
    if levels.ndim != 1 or not np.all((levels > 0) & (levels < 1)):
        raise ValueError(f"{name} must be a list of numbers in (0, 1), got {levels!r}")
    return levels


def pit(truths: ArrayLike, draws: ArrayLike, seed: int = 0) -> np.ndarray:
    """Randomised probability integral transform of each truth under its draws:
    ``(rank + U) / (L + 1)`` with ``rank`` from ``ranks`` (same ``seed``) and ``U`` uniform on
    ``[0, 1)``. Exactly ``Uniform(0, 1)`` when the ``L`` draws and the truth are exchangeable
    (exact, independent posterior draws), for every ``L``; ``floor(pit * (L + 1))`` is the rank.

    Returns:
        ``(K, ...)`` values in ``[0, 1)``.

    Example:
        >>> bip.calibration.pit([[0.5]], [[[0.1], [0.7], [0.3]]]).round(1)   # (2 + U) / 4
        array([[0.7]])
    """
    rank = ranks(truths, draws, seed)
    u = np.random.default_rng([seed, 1]).uniform(size=rank.shape)
    return (rank + u) / (np.shape(draws)[1] + 1)


def covered_from_pit(pit_values: ArrayLike, levels: Sequence[float] = LEVELS) -> np.ndarray:
    """Whether each PIT value lies in the central ``level`` slice ``[(1 - level)/2, (1 +
    level)/2]``: booleans ``(len(levels), K, ...)`` (see ``covered``)."""
    levels = _check_levels(levels).reshape((-1,) + (1,) * np.ndim(pit_values))
    return np.abs(np.asarray(pit_values, float)[None] - 0.5) <= levels / 2


def covered(
    truths: ArrayLike, draws: ArrayLike, levels: Sequence[float] = LEVELS, seed: int = 0
) -> np.ndarray:
    """Whether each truth lies in the central ``level`` interval of its draws, read from its
    randomised PIT (``pit``): covered when ``(1 - level)/2 <= pit <= (1 + level)/2``, i.e.
    the truth lies between the order statistics that bound the central ``level`` share of
    the ``L + 1`` rank slots, the slot at each end shared at random. Exact draws then cover
    with probability exactly ``level`` for every ``L``, where the interval between
    ``np.quantile``'s quantiles (``bip.metrics.coverage``) covers about ``level (L - 1) /
    (L + 1)`` (0.92 for ``level = 0.95`` and 64 draws).

    Args:
        truths: ``(K, ...)``. draws: ``(K, L, ...)``.
        levels: nominal levels in ``(0, 1)``. seed: seed of the randomisation.

    Returns:
        Booleans ``(len(levels), K, ...)``.

    Example:
        >>> draws = np.arange(99.0).reshape(1, 99)           # 0, 1, ..., 98
        >>> bip.calibration.covered([93.5], draws, [0.8, 0.9])[:, 0]   # rank 94 of 0..99
        array([False,  True])
    """
    return covered_from_pit(pit(truths, draws, seed), levels)


def coverage_curve(
    truths: ArrayLike, draws: ArrayLike, levels: Sequence[float] = LEVELS, seed: int = 0
) -> np.ndarray:
    """Empirical coverage per level and coordinate: ``covered(...)`` averaged over trials,
    ``(len(levels), ...)``; average the result over coordinates for a pixel-wise curve.

    Example:
        >>> bip.calibration.coverage_curve(truths, draws, [0.5, 0.9]).mean(axis=1)
    """
    return covered(truths, draws, levels, seed).mean(axis=1)


def tarp_fractions(
    truths: ArrayLike,
    draws: ArrayLike,
    references: ArrayLike,
    scale: ArrayLike | None = None,
    seed: int = 0,
) -> np.ndarray:
    """TARP's per-trial statistic: the share of draws closer to the reference point ``r_k``
    than the truth (Euclidean distance over the whole event, each coordinate divided by
    ``scale``), randomised like ``pit``: ``f_k = (#{i: |draw_ki - r_k| < |truth_k - r_k|} +
    U) / (L + 1)``, exactly ``Uniform(0, 1)`` for exact draws (Lemos et al. use the plain
    share ``#{...} / L``, the same for large ``L``).

    Args:
        truths: ``(K, ...)``. draws: ``(K, L, ...)``.
        references: reference points ``(K, ...)``, drawn independently of the trials.
        scale: ``(...)`` positive coordinate scales (default 1). seed: randomisation seed.

    Returns:
        ``(K,)`` values in ``[0, 1)``.

    Example:
        >>> f = bip.calibration.tarp_fractions([[0.0]], [[[1.0], [-0.4], [3.0]]], [[0.5]])
        >>> bool(0.25 <= f[0] < 0.5)                   # (1 + U) / 4: one draw is closer
        True
    """
    truths, draws = _pair(truths, draws)
    references = np.asarray(references, float)
    if references.shape != truths.shape:
        raise ValueError(
            f"references must have the truths' shape {truths.shape}, got {references.shape}"
        )
    _checks.finite("references", references)
    scale = np.ones(truths.shape[1:]) if scale is None else np.asarray(scale, float)
    _checks.positive("scale", scale)
    k = truths.shape[0]
    t = ((truths - references) / scale).reshape(k, -1)
    d = ((draws - references[:, None]) / scale).reshape(k, draws.shape[1], -1)
    return pit(np.linalg.norm(t, axis=-1), np.linalg.norm(d, axis=-1), seed)


def expected_coverage(fractions: ArrayLike, levels: Sequence[float] = TARP_LEVELS) -> np.ndarray:
    """TARP's expected coverage probability ``ECP(level) = mean_k [f_k < level]``,
    ``(len(levels),)``; equal to ``levels`` for a calibrated posterior.

    Example:
        >>> bip.calibration.expected_coverage([0.1, 0.3, 0.6, 0.9], [0.5, 1.0])
        array([0.5, 1. ])
    """
    f = np.asarray(fractions, float)
    levels = np.asarray(levels, float)
    if f.ndim != 1 or not np.all((f >= 0) & (f <= 1)):
        raise ValueError(f"fractions must be a 1-d array in [0, 1], got shape {f.shape}")
    return np.mean(f[None, :] < levels[:, None], axis=1)


def tarp_summary(fractions: ArrayLike, levels: Sequence[float] = TARP_LEVELS) -> dict:
    """``{"levels", "ecp", "max_abs_error", "ks_pvalue"}`` of TARP fractions ``(K,)``:
    the ECP curve, its largest distance to the diagonal, and the Kolmogorov-Smirnov p-value
    of ``f ~ Uniform(0, 1)`` (``scipy.stats.kstest``).

    Example:
        >>> bip.calibration.tarp_summary(np.linspace(0.01, 0.99, 99))["max_abs_error"] < 0.02
        True
    """
    levels = np.asarray(levels, float)
    ecp = expected_coverage(fractions, levels)
    return {
        "levels": levels.tolist(),
        "ecp": ecp.tolist(),
        "max_abs_error": float(np.max(np.abs(ecp - levels))),
        "ks_pvalue": float(scipy.stats.kstest(np.asarray(fractions, float), "uniform").pvalue),
    }


def tarp(
    truths: ArrayLike,
    draws: ArrayLike,
    references: ArrayLike | None = None,
    seed: int = 0,
    levels: Sequence[float] = TARP_LEVELS,
) -> dict:
    """TARP (Lemos et al. 2023) of a set of trials: ``tarp_summary`` of ``tarp_fractions``.

    Without ``references`` it follows the ``tarp`` package's default: every coordinate is
    rescaled to ``[0, 1]`` by the truths' range, and each trial's reference point is uniform
    on that box.

    Args:
        truths: ``(K, ...)``. draws: ``(K, L, ...)``.
        references: ``(K, ...)`` reference points in the truths' units, or None.
        seed: seed of the random references. levels: credibility levels in ``[0, 1]``.

    Returns:
        ``tarp_summary`` plus ``"fractions"`` ``(K,)``.

    Example:
        >>> out = bip.calibration.tarp(truths, draws)
        >>> out["ks_pvalue"] > 0.01                   # exact posterior draws
        True
    """
    truths, draws = _pair(truths, draws)
    scale = None
    if references is None:
        lo, hi = truths.min(axis=0), truths.max(axis=0)
        scale = np.where(hi > lo, hi - lo, 1.0)
        u = np.random.default_rng(seed).uniform(size=truths.shape)
        references = lo + u * scale
    fractions = tarp_fractions(truths, draws, references, scale)
    return {**tarp_summary(fractions, levels), "fractions": fractions}


def ranks_from_pit(pit_values: ArrayLike, num_draws: int) -> np.ndarray:
    """The ranks ``floor(pit * (L + 1))`` ``(K, ...)`` of PIT values from ``pit``."""
    p = np.asarray(pit_values, float)
    return np.minimum(np.floor(p * (num_draws + 1)).astype(int), num_draws)


def pit_uniformity(pit_values: ArrayLike, bins: int) -> dict:
    """``rank_uniformity`` of PIT values ``(K, ...)`` binned in ``bins`` equal slices of
    ``[0, 1)`` (the ranks ``floor(pit * bins)``): the randomised PIT is exactly uniform for
    exact draws, so every bin expects ``K / bins`` whatever the number of draws ``L`` (rank
    bins of ``{0, ..., L}`` are unequal unless ``bins`` divides ``L + 1``).

    Example:
        >>> out = bip.calibration.pit_uniformity(bip.calibration.pit(truths, draws), 10)
        >>> out["expected"]                    # K / 10 in every bin
    """
    return rank_uniformity(ranks_from_pit(pit_values, bins - 1), bins - 1, bins)


def default_bins(trials: int) -> int:
    """Rank-histogram bins: ``K / 10`` (about 10 expected counts per bin), from 2 to 20."""
    return int(max(2, min(20, trials // 10)))


# --------------------------------------------------------------------------- report


def figure(summary: dict):
    """The calibration figure of a ``summarize`` output: rank histograms of the chart
    coordinates and of the pixels (pooled), each with the 99% band of uniform ranks; the
    coverage curve against the nominal level; TARP's expected coverage against the
    credibility level.

    Example:
        >>> fig = bip.calibration.figure(summary); fig.savefig("calibration.png")
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    trials, bins = summary["trials"], summary["bins"]
    panels = [("pixels", "pixels (pooled)")]
    if "chart" in summary["sbc"]:
        panels.insert(0, ("chart", "chart coordinates"))
    else:
        axes[0].axis("off")
    for ax, (which, title) in zip(axes[2 - len(panels) : 2], panels, strict=True):
        part = summary["sbc"][which]
        counts = np.asarray(part["histogram"], float)
        expected = np.asarray(part["expected"], float)
        p = expected / trials
        lo = scipy.stats.binom.ppf(0.005, trials, p)
        hi = scipy.stats.binom.ppf(0.995, trials, p)
        edges = np.arange(bins + 1)
        ax.fill_between(
            edges,
            np.append(lo, lo[-1]),
            np.append(hi, hi[-1]),
            step="post",
            color="0.85",
            label="99% band (uniform)",
        )
        if which == "chart":
            for i, name in enumerate(part["names"]):
                p_value = part["pvalue"][i]
                ax.step(
                    edges,
                    np.append(counts[:, i], counts[-1, i]),
                    where="post",
                    label=f"{name} (p = {p_value:.2g})",
                )
        else:
            mean = counts.mean(axis=1)
            ax.step(
                edges,
                np.append(mean, mean[-1]),
                where="post",
                color="k",
                label=f"mean of {counts.shape[1]} pixels (min p = {part['pvalue_min']:.2g})",
            )
        ax.set(title=f"SBC ranks: {title}", xlabel="rank bin", ylabel="trials")
        ax.legend(fontsize=7)
    levels = np.asarray(summary["coverage"]["levels"])
    ax = axes[2]
    ax.plot([0, 1], [0, 1], color="0.6", lw=1)
    ax.plot(levels, summary["coverage"]["pixels"], "k.-", label="pixels")
    for name, curve in summary["coverage"].get("chart", {}).items():
        ax.plot(levels, curve, ".-", lw=1, label=name)
    ax.set(title="coverage of central intervals", xlabel="nominal", ylabel="empirical")
    ax.legend(fontsize=7)
    ax = axes[3]
    ax.plot([0, 1], [0, 1], color="0.6", lw=1)
    for which, part in summary["tarp"].items():
        ax.plot(
            part["levels"], part["ecp"], ".-", label=f"{which} (KS p = {part['ks_pvalue']:.2g})"
        )
    ax.set(title="TARP", xlabel="credibility level", ylabel="expected coverage")
    ax.legend(fontsize=7)
    fig.suptitle(
        f"{summary['name']}: {summary['kind']} posterior, {trials} trials x "
        f"{summary['draws_per_trial']} draws"
    )
    fig.tight_layout()
    return fig


def report_lines(summary: dict) -> list[str]:
    """The calibration summary in a few lines of text (what ``bip calibrate`` prints): SBC
    chi-square p-values, coverage at 50/80/90/95% and TARP.

    Example:
        >>> print("\n".join(bip.calibration.report_lines(summary)))
    """
    lines = []
    sbc = summary["sbc"]
    if "chart" in sbc:
        cells = ", ".join(
            f"{n} {p:.3g}"
            for n, p in zip(sbc["chart"]["names"], sbc["chart"]["pvalue"], strict=True)
        )
        lines.append(f"SBC chi-square p ({summary['bins']} bins), chart coordinates: {cells}")
    pixels = sbc["pixels"]
    low = sum(p < 0.01 for p in pixels["pvalue"])
    lines.append(
        f"SBC chi-square p, {len(pixels['pvalue'])} pixels: min {pixels['pvalue_min']:.3g} "
        f"({low} below 0.01)"
    )
    levels = summary["coverage"]["levels"]
    shown = [levels.index(q) for q in (0.5, 0.8, 0.9, 0.95)]
    rows = {"pixels": summary["coverage"]["pixels"], **summary["coverage"].get("chart", {})}
    lines.append("coverage at nominal " + " / ".join(f"{levels[i]:.2f}" for i in shown) + ":")
    for name, curve in rows.items():
        lines.append(f"  {name:>8}: " + " / ".join(f"{curve[i]:.3f}" for i in shown))
    for which, part in summary["tarp"].items():
        lines.append(
            f"TARP ({which}): KS p {part['ks_pvalue']:.3g}, largest |ECP - level| "
            f"{part['max_abs_error']:.3f}"
        )
    return lines
