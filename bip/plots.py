"""Matplotlib helpers for the figures: angle histograms against exact laws, points on a manifold.

Every helper draws on a given ``Axes`` and returns its ``Figure``; nothing here calls
``plt.show`` or picks a backend, so the helpers work headless (``MPLBACKEND=Agg``).

Example:
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> law = bip.targets.from_log_density(data.chart_log_density)
    >>> bip.plots.angle_histogram_vs_law(ax, circle.coordinate(x), law, label="p_data")
    >>> fig.savefig("hist.png")
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bip import metrics
from bip.targets import AngularLaw


def angle_histogram_vs_law(
    ax,
    angles,
    law: AngularLaw | Sequence[AngularLaw],
    num_bins: int = 36,
    label: str | Sequence[str] = "target",
    sample_label: str = "samples",
    color=None,
):
    """The sampled angle histogram as a density, with one or more exact laws' curves over it.

    Args:
        ax: a matplotlib ``Axes``.
        angles: sampled angles in radians, any shape (flattened; e.g. ``(kept, chains)``).
        law: an ``AngularLaw`` (from ``bip.targets``) or a list of them.
        num_bins: histogram bins on ``[-pi, pi)``; the TV in the legend uses the same bins.
        label: the name of each law (one string per law).
        sample_label: the name of the histogram.
        color: histogram colour (matplotlib default if ``None``).

    Returns:
        The ``Figure`` holding ``ax``. Each curve's legend entry carries
        ``TV = bip.metrics.tv_to_law(angles, law, num_bins)``.
    """
    laws = [law] if isinstance(law, AngularLaw) else list(law)
    labels = [label] if isinstance(label, str) else list(label)
    if len(labels) != len(laws):
        raise ValueError(f"got {len(laws)} laws but {len(labels)} labels")
    probabilities = metrics.angle_histogram(angles, num_bins)
    width = 2 * math.pi / num_bins
    edges = -math.pi + width * np.arange(num_bins + 1)
    ax.stairs(probabilities / width, edges, fill=True, alpha=0.45, color=color, label=sample_label)
    for each, name in zip(laws, labels, strict=True):
        tv = metrics.tv_to_law(angles, each, num_bins)
        ax.plot(each.theta, each.density, lw=1.8, label=f"{name} (TV {tv:.3f})")
    ax.set_xlim(-math.pi, math.pi)
    ax.set_xticks([-math.pi, -math.pi / 2, 0, math.pi / 2, math.pi])
    ax.set_xticklabels(["$-\\pi$", "$-\\pi/2$", "0", "$\\pi/2$", "$\\pi$"])
    ax.set_ylim(bottom=0)
    ax.set_ylabel("density")
    ax.legend(fontsize="small", loc="best")
    return ax.figure


def scatter_on_manifold(ax, x, manifold, max_points: int = 2000, **scatter_kwargs):
    """Points ``x`` ``(..., 2)`` (flattened to ``(n, 2)``, at most ``max_points`` drawn) with the
    curve ``manifold`` (a ``Circle`` or ``Ellipse`` from ``bip.manifolds``) drawn under them.

    Returns:
        The ``Figure`` holding ``ax`` (equal aspect).
    """
    points = np.asarray(x, dtype=float).reshape(-1, 2)
    if points.shape[0] > max_points:
        keep = np.linspace(0, points.shape[0] - 1, max_points).astype(int)
        points = points[keep]
    curve = np.asarray(manifold.chart(np.linspace(-math.pi, math.pi, 400)))
    ax.plot(curve[:, 0], curve[:, 1], color="k", lw=1.0)
    options = {"s": 2, "alpha": 0.4}
    options.update(scatter_kwargs)
    ax.scatter(points[:, 0], points[:, 1], **options)
    ax.set_aspect("equal")
    return ax.figure
