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

_CURVE_COLORS = ("k", "C2", "C4", "C5")


def angle_histogram_vs_law(
    ax,
    angles,
    law: AngularLaw | Sequence[AngularLaw],
    num_bins: int = 36,
    label: str | Sequence[str] = "target",
    sample_label: str = "samples",
    color=None,
    linestyles: Sequence[str] | None = None,
):
    """The sampled angle histogram as a density, with one or more exact laws' curves over it.

    Args:
        ax: a matplotlib ``Axes``.
        angles: sampled angles in radians, any shape (flattened; e.g. ``(chains, kept)``).
        law: an ``AngularLaw`` (from ``bip.targets``) or a list of them.
        num_bins: histogram bins on ``[-pi, pi)``; the TV in the legend uses the same bins.
        label: the name of each law (one string per law).
        sample_label: the name of the histogram.
        color: histogram colour (matplotlib default if ``None``); the curves are drawn in
            black, green, purple, brown, in order.
        linestyles: one matplotlib line style per law (default: all solid).

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
    styles = ["-"] * len(laws) if linestyles is None else list(linestyles)
    for i, (each, name, style) in enumerate(zip(laws, labels, styles, strict=True)):
        tv = metrics.tv_to_law(angles, each, num_bins)
        ax.plot(
            each.theta,
            each.density,
            lw=1.8,
            ls=style,
            color=_CURVE_COLORS[i % len(_CURVE_COLORS)],
            label=f"{name} (TV {tv:.3f})",
        )
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


def image_panel(ax, image, title: str, cmap: str = "gray", **imshow_kwargs):
    """``image`` ``(h, w)`` on ``ax`` with a colour bar and a title, axes hidden.

    ``imshow_kwargs`` go to ``ax.imshow`` (``vmin``, ``vmax``, ...). Returns the image
    artist.

    Example:
        >>> fig, ax = plt.subplots()
        >>> bip.plots.image_panel(ax, np.eye(4), "identity")
    """
    im = ax.imshow(np.asarray(image), cmap=cmap, **imshow_kwargs)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def sinogram_panel(ax, sinogram, angles, title: str = "sinogram"):
    """A sinogram ``(detectors, views)`` (``bip.operators.radon``'s output) against its angles
    in degrees ``(views,)`` on x and the detector bin on y, each measured value a square
    cell (true aspect), with a colour bar. Returns the image artist.

    Example:
        >>> angles = np.linspace(0, 180, 16, endpoint=False)
        >>> bip.plots.sinogram_panel(ax, np.asarray(radon(x)), angles)
    """
    sinogram, angles = np.asarray(sinogram), np.asarray(angles, float)
    if sinogram.ndim != 2 or sinogram.shape[1] != angles.size:
        raise ValueError(f"sinogram must be (detectors, {angles.size} views), got {sinogram.shape}")
    step = float(angles[1] - angles[0]) if angles.size > 1 else 1.0
    detectors = sinogram.shape[0]
    extent = (angles[0] - step / 2, angles[-1] + step / 2, detectors - 0.5, -0.5)
    im = ax.imshow(sinogram, cmap="gray", extent=extent, aspect=step)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("angle (degrees)", fontsize=8)
    ax.set_ylabel("detector bin", fontsize=8)
    ax.tick_params(labelsize=7)
    return im


def save_figure(fig, path) -> None:
    """Save ``fig`` atomically (temporary file in the same directory, then rename), readable
    by all (mode 0644, like the other files bip writes; a temporary file starts at 0600)."""
    import os
    import tempfile
    from pathlib import Path

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def robustness(sweep):
    """The robustness figure of a ``bip.experiments.Sweep``.

    Left: TV rise over the zero-error law against error size, one panel row per alpha, one
    curve per sigma (solid: sampled, dashed: exact law). Right: ``eps*`` against sigma on
    log-log axes with the fitted slopes (sampled: markers and solid fit; exact: dashed).

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    records = sweep.records
    alphas = sorted({r["alpha"] for r in records})
    sigmas = sorted({r["sigma"] for r in records}, reverse=True)
    fig, axes = plt.subplots(
        len(alphas), 2, figsize=(10, 3.2 * len(alphas)), squeeze=False, constrained_layout=True
    )
    summary = sweep.summary()
    for row, alpha in enumerate(alphas):
        ax = axes[row, 0]
        for k, sigma in enumerate(sigmas):
            cell = sorted(
                (r for r in records if r["alpha"] == alpha and r["sigma"] == sigma),
                key=lambda r: r["error_size"],
            )
            sizes = np.array([r["error_size"] for r in cell[1:]])
            exact = np.array([r["tv_exact"] for r in cell[1:]])
            sampled = np.array([r["tv"] for r in cell])
            color = f"C{k}"
            if np.all(np.isfinite(sampled)):
                ax.semilogx(
                    sizes,
                    sampled[1:] - sampled[0],
                    "-o",
                    ms=3,
                    color=color,
                    label=f"sigma={sigma:g}",
                )
            ax.semilogx(
                sizes,
                exact,
                "--",
                color=color,
                label=None if np.all(np.isfinite(sampled)) else f"sigma={sigma:g}",
            )
        ax.axhline(summary["threshold"], color="gray", lw=0.8)
        ax.set_xlabel("error size eps")
        ax.set_ylabel("TV rise over eps = 0")
        ax.set_title(f"alpha = {alpha:g} (solid: sampled, dashed: exact law)")
        ax.legend(fontsize=7)
        ax = axes[row, 1]
        key = repr(float(alpha))
        modes = (("eps_star", "o-", "slope"), ("eps_star_exact", "s--", "slope_exact"))
        for mode, style, slope_key in modes:
            per_sigma = summary[mode].get(key, {})
            if not per_sigma:
                continue
            s = np.array([float(v) for v in per_sigma])
            e = np.array([per_sigma[v] for v in per_sigma])
            label = "sampled" if mode == "eps_star" else "exact"
            slope = summary[slope_key].get(key, float("nan"))
            ax.loglog(s, e, style, label=f"{label}: slope {slope:.2f}")
        ax.set_xlabel("sigma")
        ax.set_ylabel("critical error eps*")
        ax.set_title(f"alpha = {alpha:g}: expected slope {-alpha:g}")
        ax.legend(fontsize=8)
    return fig


def image_robustness(sweep):
    """The figure of a ``bip.experiments.ImageSweep``: five panels.

    Energy distance to the zero-error posterior against error size (one curve per alpha and
    sigma, the threshold as a grey line); ``eps*`` against sigma on log-log axes with the fitted
    slope per alpha; the PSNR of the posterior mean, the coverage of the truth by the 90%
    intervals and the mean distance of the draws to the manifold against error size.

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    records = sweep.records
    alphas = sorted({r["alpha"] for r in records})
    sigmas = sorted({r["sigma"] for r in records}, reverse=True)
    fig, axes = plt.subplots(1, 5, figsize=(21, 3.8), constrained_layout=True)
    styles = ["-", "--", ":", "-."]
    for i, alpha in enumerate(alphas):
        for k, sigma in enumerate(sigmas):
            cell = sorted(
                (r for r in records if r["alpha"] == alpha and r["sigma"] == sigma),
                key=lambda r: r["error_size"],
            )[1:]
            sizes = np.array([r["error_size"] for r in cell])
            label = f"alpha={alpha:g}, sigma={sigma:g}"
            style = dict(color=f"C{i}", ls=styles[k % len(styles)], marker="o", ms=3)
            key = "energy_distance" if sweep.config["metric"] == "energy" else "chart_mean_shift"
            ed = np.maximum([r[key] for r in cell], 1e-6)
            axes[0].loglog(sizes, ed, label=label, **style)
            if "psnr" in cell[0]:
                axes[2].semilogx(sizes, [r["psnr"] for r in cell], label=label, **style)
                axes[3].semilogx(sizes, [r["coverage_90"] for r in cell], **style)
            axes[4].loglog(sizes, [r["mean_distance_to_manifold"] for r in cell], **style)
    axes[0].axhline(sweep.config["threshold"], color="gray", lw=0.8)
    axes[0].set(
        xlabel="error size eps (L2 norm)",
        ylabel=f"{sweep.config['metric'].replace('_', ' ')} from eps = 0",
        title="departure from the zero-error posterior",
    )
    axes[0].legend(fontsize=7)
    slopes = sweep.slopes()
    for i, alpha in enumerate(alphas):
        per_sigma = sweep.eps_star.get(repr(float(alpha)), {})
        s = np.array([float(v) for v in per_sigma])
        e = np.array([per_sigma[v] for v in per_sigma])
        slope = slopes.get(repr(float(alpha)), float("nan"))
        axes[1].loglog(
            s,
            e,
            "o-",
            color=f"C{i}",
            label=f"alpha={alpha:g}: slope {slope:.2f} (expected {0.0 - alpha:g})",
        )
    axes[1].set(xlabel="sigma", ylabel="critical error eps*", title="critical error vs sigma")
    axes[1].legend(fontsize=8)
    axes[2].set(xlabel="error size eps", ylabel="PSNR of the posterior mean (dB)", title="PSNR")
    axes[3].set(xlabel="error size eps", ylabel="coverage of the truth", title="90% intervals")
    axes[4].set(
        xlabel="error size eps",
        ylabel="mean distance to M",
        title="distance of the draws to the manifold",
    )
    return fig
