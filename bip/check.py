"""Posterior checks against exact references: is bip's posterior the right one?

``check(spec)`` (``bip check SPEC``) runs bip's sampler on a spec's problem exactly as ``bip
solve`` does and, for a problem whose data law has an exact chart (``bip.references.chart_of``:
the phantom laws of one ellipse, of an ellipse grid or of the Shepp-Logan family, the circle,
ellipse and sphere laws) with a linear Gaussian likelihood, compares its draws with an exact
reference posterior (``bip.references``) of the same problem:

- **generic spec** (``alpha = 0``): against ``generic_finite_sigma`` at the spec's sigma: the
  energy distance of the draws (``bip.metrics.energy_distance``) against its
  reference-vs-reference floor at equal sample counts (``bip.references.compare``; a ratio
  near 1 is agreement, 2 is the issue's bound); per-coordinate (pixel) mean differences in
  units of their Monte Carlo error (``bip.references.mean_z_and_std_ratio``) and std ratios;
  and the chart-coordinate marginals: the chart coordinates of the nearest manifold point of
  every bip and reference draw (``manifold.coordinate``), their mean z-scores, std ratios
  and two-sample Kolmogorov-Smirnov statistics against the reference-vs-reference floor.
- **maximum-entropy spec** (``alpha > 0``): there is no exact finite-sigma reference, but the
  posterior tends to the maximum-entropy limit (``maxent_limit``, Thm 6.1) as sigma -> 0.
  bip samples at a decreasing ladder of sigmas (default the spec's sigma times 4, 2, 1,
  1/2) and the chart coordinates of its draws are compared with the limit's (scaled: box
  coordinates divided by their box width, angles by 2 pi about the limit's circular mean):
  the ``discrepancy``, ``bip.references.chain_energy_distance`` (within-chain pairs left
  out, so correlated draws do not inflate it; zero in expectation for the same law) and its
  jackknife standard error; the energy distance (V-statistic) with its floor; the largest
  mean shift in limit stds; std ratios. ``monotone`` says whether the discrepancy falls at
  every step. A maximum-entropy check needs at least 3 chains (``sampler.chains``).

The reference gets at least twice as many draws as bip keeps (NUTS, 8 chains, thinned by 2),
so that the floor uses disjoint reference sets. ``check`` refuses, before any compute, a spec
whose data law has no exact chart (real images, digits) or whose likelihood is not linear
Gaussian (the finite-sigma reference needs both), and a generic spec whose finite-sigma
reference would not fit in memory (it holds the operator's matrix: ``(m, d)`` for ``m``
measurements of ``d`` pixels, 1.4 GB for the 128x128 30-view ``ct-ellipses-128-exact``;
``bip.references.check_finite_sigma_memory``).

Outputs (``out_dir``, marked as bip's, written atomically): ``check.json`` (everything above,
the settings and timings) and ``check.png`` (generic: the pixel z-map and std-ratio map and
the coordinate histograms; maximum-entropy: the distance against sigma and the coordinate
histograms at the smallest sigma against the limit).

Example:
    >>> result = bip.check.check("ct-phantom-8", "runs/check-ct-phantom-8")
    >>> result["energy_distance"]["ratio"], result["pixels"]["fraction_within_3se"]
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from bip import laws, metrics, outputs, priors, problems, references, solve

REFERENCE_CHAINS = 8
LADDER = (4.0, 2.0, 1.0, 0.5)
"""The default sigma ladder of a maximum-entropy check, in units of the spec's sigma."""


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"bip check: {message}", file=sys.stderr, flush=True)


EXACT_SOURCES = ("circle", "phantom", "ellipse-grid", "shepp-logan-family")
"""The spec data sources whose law has an exact chart (``bip.laws.data_law``: ``VonMises`` on
the circle, ``PhantomLaw`` of one ellipse or of a ``bip.ellipses.MultiEllipseManifold``)."""


def _checked_problem(spec: problems.ProblemSpec) -> problems.Problem:
    """Refuse what the references cannot do (before building: the data source and the
    noise; after: the operator's linearity); return the built problem."""
    origin = spec.path or spec.name
    source = spec.data.source
    if source not in EXACT_SOURCES:
        raise ValueError(
            f"{origin}: bip check needs a problem whose data law has an exact chart ('data."
            f"source' {', '.join(map(repr, EXACT_SOURCES))}); {source!r} has none, so there is "
            "no exact reference posterior to compare with"
        )
    if spec.noise.kind != "gaussian" and spec.prior.kind == "generic":
        raise ValueError(
            f"{origin}: bip check needs Gaussian noise for the exact finite-sigma reference "
            f"('noise.kind' is {spec.noise.kind!r})"
        )
    if spec.prior.kind == "generic":  # the reference's matrix, before building
        operator = problems._operator(spec, tuple(laws.data_law(spec.data).event_shape))
        try:
            references.check_finite_sigma_memory(operator)
        except ValueError as err:
            raise type(err)(f"{origin}: {err}") from None
    problem = problems.build(spec)
    if not problem.operator.linear:
        raise ValueError(f"{origin}: bip check needs a linear operator ('operator.kind')")
    return problem


def _draws(problem: problems.Problem, progress: bool) -> np.ndarray:
    """bip's draws ``(chains, draws, *event)`` as ``bip solve`` samples them."""
    run = solve._sample(problem, progress)
    return np.asarray(run.healthy_samples if run.divergence.any else run.samples, float)


def _reference_settings(num_draws: int, reference_draws: int | None) -> dict:
    total = 2 * num_draws if reference_draws is None else reference_draws
    if total < 2 * num_draws:
        raise ValueError(
            f"reference_draws must be at least twice bip's {num_draws} draws, got {total}"
        )
    per_chain = math.ceil(total / REFERENCE_CHAINS)
    return {
        "num_chains": REFERENCE_CHAINS,
        "num_samples": per_chain,
        "num_warmup": max(200, per_chain),
        "thin": 2,
    }


def _coordinates(problem, x: np.ndarray) -> np.ndarray:
    """Chart coordinates ``(..., n)`` of the nearest manifold points of events ``x``."""
    event = len(problem.event_shape)
    flat = jnp.asarray(x.reshape((-1,) + x.shape[-event:]))
    u = np.asarray(jax.jit(problem.manifold.coordinate)(flat), float)
    return u.reshape(x.shape[:-event] + (-1,))


def _scaled(chart: references.Chart, u: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Box coordinates divided by their width; angles about ``centre`` divided by 2 pi."""
    out = np.array(u, float)
    box = 0
    for i, periodic in enumerate(chart.periodic):
        if periodic:
            out[..., i] = np.angle(np.exp(1j * (out[..., i] - centre[i]))) / (2 * np.pi)
        else:
            out[..., i] = (out[..., i] - chart.lower[box]) / (chart.upper[box] - chart.lower[box])
            box += 1
    return out


def _circular_centre(chart: references.Chart, u: np.ndarray) -> np.ndarray:
    flat = u.reshape(-1, u.shape[-1])
    return np.array(
        [
            np.angle(np.mean(np.exp(1j * flat[:, i]))) if p else 0.0
            for i, p in enumerate(chart.periodic)
        ]
    )


def _split(key, reference: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random sets of ``n`` rows of ``reference`` ``(m, k)``."""
    order = np.asarray(jax.random.permutation(key, reference.shape[0]))
    return reference[order[:n]], reference[order[n : 2 * n]]


def _marginals(key, u_bip: np.ndarray, u_ref: np.ndarray) -> dict:
    """Per-coordinate comparison of scaled coordinates, chains first ``(chains, draws, n)``."""
    z, std_ratio = references.mean_z_and_std_ratio(u_bip, u_ref)
    flat_bip = u_bip.reshape(-1, u_bip.shape[-1])
    a, b = _split(key, u_ref.reshape(-1, u_ref.shape[-1]), flat_bip.shape[0])
    ks = [scipy.stats.ks_2samp(flat_bip[:, i], a[:, i]).statistic for i in range(a.shape[1])]
    floor = [scipy.stats.ks_2samp(b[:, i], a[:, i]).statistic for i in range(a.shape[1])]
    return {
        "mean_z": z.tolist(),
        "std_ratio": std_ratio.tolist(),
        "ks": [float(v) for v in ks],
        "ks_floor": [float(v) for v in floor],
    }


def _generic(key, problem, draws, settings, progress) -> tuple[dict, dict]:
    s = problem.spec.sampler
    _say(progress, f"exact reference: NUTS, {settings['num_chains']} x {settings['num_samples']}")
    t0 = time.perf_counter()
    k_ref, k_cmp, k_marg = jax.random.split(key, 3)
    ref = references.generic_finite_sigma(
        k_ref, problem.law, problem.likelihood, s.sigma, **settings
    )
    seconds = time.perf_counter() - t0
    _say(progress, f"reference done in {seconds:.0f} s; comparing")
    out = references.compare(k_cmp, draws, ref)
    flat_bip = draws.reshape(draws.shape[:2] + (-1,))
    flat_ref = np.asarray(ref.x, float).reshape(ref.x.shape[:2] + (-1,))
    z, std_ratio = references.mean_z_and_std_ratio(flat_bip, flat_ref)
    chart = references.chart_of(problem.law)
    u_ref_raw = _coordinates(problem, np.asarray(ref.x, float))
    centre = _circular_centre(chart, u_ref_raw)
    u_bip = _scaled(chart, _coordinates(problem, draws), centre)
    u_ref = _scaled(chart, u_ref_raw, centre)
    ed = {k: out[k] for k in ("energy_distance", "floor", "ratio", "num_draws")}
    ed.update(_independence(draws.reshape(draws.shape[:2] + (-1,))))
    result = {
        "energy_distance": ed,
        "pixels": {
            "fraction_within_3se": out["fraction_within_3se"],
            "max_abs_z": out["max_abs_z"],
            "std_ratio_median": out["std_ratio_median"],
        },
        "coordinates": _marginals(k_marg, u_bip, u_ref),
        "reference": _nuts_summary(ref, settings, seconds),
    }
    arrays = {
        "z": z.reshape(problem.event_shape),
        "std_ratio": std_ratio.reshape(problem.event_shape),
        "u_bip": u_bip,
        "u_ref": u_ref,
    }
    return result, arrays


CORRELATED = 0.5
"""Below this median ESS per kept draw, ``check`` notes that bip's draws are too correlated for
the energy-distance floor (which assumes independent draws) to be the right yardstick."""


def _independence(draws: np.ndarray) -> dict:
    """bip's median bulk ESS ``(chains, draws, k)`` per kept draw, and a note when it is low:
    correlated draws raise the energy distance's V-statistic bias above the floor's. On the
    circle (tests/test_check.py), 200 chains x 20 draws 0.03 time units apart gave a ratio of
    6.2 (3.6 with 5x the burn-in) where 1000 x 4 draws 0.3 apart gave 1.24, with the same step
    and reference."""
    ess = float(np.nanmedian(metrics.effective_sample_size(draws)))
    n = draws.shape[0] * draws.shape[1]
    fraction = ess / n
    note = "ok"
    if fraction < CORRELATED:
        note = (
            f"bip's draws are correlated (median ESS {ess:.0f} of {n} draws): the floor "
            "assumes independent draws, so the ratio overstates the "
            "discrepancy; thin more (sampler.thin) or run more chains"
        )
    return {"bip_ess_median": ess, "ess_per_draw": fraction, "note": note}


def _nuts_summary(ref: references.Reference, settings: dict, seconds: float) -> dict:
    d = ref.diagnostics
    keys = ("divergences", "rhat_max", "ess_min", "accept_prob", "num_steps")
    return {**{k: float(d[k]) for k in keys}, "settings": settings, "seconds": seconds}


def _at_sigma(problem, sigma: float):
    """The problem with the sampler's final sigma replaced (annealing only from above)."""
    sampler = dataclasses.replace(problem.spec.sampler, sigma=sigma)
    return dataclasses.replace(problem, spec=dataclasses.replace(problem.spec, sampler=sampler))


def _maxent(key, problem, sigmas, settings, progress) -> tuple[dict, dict]:
    _say(
        progress,
        f"maximum-entropy limit: NUTS, {settings['num_chains']} x {settings['num_samples']}",
    )
    t0 = time.perf_counter()
    k_ref, k_cmp = jax.random.split(key)  # the same reference sets at every sigma
    limit = references.maxent_limit(k_ref, problem.law, problem.likelihood, **settings)
    seconds = time.perf_counter() - t0
    chart = references.chart_of(problem.law)
    centre = _circular_centre(chart, np.asarray(limit.u))
    u_lim = _scaled(chart, np.asarray(limit.u), centre)
    flat_lim = u_lim.reshape(-1, u_lim.shape[-1])
    rows, u_last = [], None
    for sigma in sigmas:
        _say(progress, f"sampling at sigma = {sigma:g}")
        t1 = time.perf_counter()
        draws = _draws(_at_sigma(problem, sigma), progress)
        u = _scaled(chart, _coordinates(problem, draws), centre)
        flat = u.reshape(-1, u.shape[-1])
        a, b = _split(k_cmp, flat_lim, flat.shape[0])
        std_lim = flat_lim.std(0)
        discrepancy, noise = references.chain_energy_distance(u, u_lim)
        rows.append(
            {
                "sigma": sigma,
                "discrepancy": discrepancy,
                "discrepancy_se": noise,
                "energy_distance": metrics.energy_distance(flat, a),
                "floor": metrics.energy_distance(a, b),
                "max_mean_shift_in_std": float(
                    np.max(np.abs(flat.mean(0) - flat_lim.mean(0)) / std_lim)
                ),
                "std_ratio": (flat.std(0) / std_lim).tolist(),
                "seconds": time.perf_counter() - t1,
            }
        )
        _say(
            progress,
            f"sigma = {sigma:g}: discrepancy {discrepancy:.3g} +- {noise:.2g} (energy distance "
            f"{rows[-1]['energy_distance']:.3g}, floor {rows[-1]['floor']:.2g})",
        )
        u_last = u
    distances = [r["discrepancy"] for r in rows]
    result = {
        "ladder": rows,
        "monotone": bool(all(x > y for x, y in zip(distances[:-1], distances[1:], strict=True))),
        "limit": _nuts_summary(limit, settings, seconds),
    }
    return result, {"u_bip": u_last, "u_ref": u_lim, "ladder": rows}


def _figure(problem, result: dict, arrays: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from bip import plots

    n = arrays["u_bip"].shape[-1]
    panels = n + (2 if "z" in arrays and arrays["z"].ndim == 2 else 0) + ("ladder" in arrays)
    cols = min(4, panels)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    flat_axes = list(axes.flat)
    if "ladder" in arrays:
        ax = flat_axes.pop(0)
        sig = [r["sigma"] for r in arrays["ladder"]]
        d = [r["discrepancy"] for r in arrays["ladder"]]
        se = [2 * r["discrepancy_se"] for r in arrays["ladder"]]
        ax.errorbar(sig, d, yerr=se, fmt="o-", capsize=3, label="bip vs limit (2 s.e.)")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("sigma")
        ax.set_title("chart-coordinate discrepancy", fontsize=9)
        ax.legend(fontsize=7)
    elif "z" in arrays and arrays["z"].ndim == 2:
        lim = max(3.0, float(np.abs(arrays["z"]).max()))
        plots.image_panel(
            flat_axes.pop(0),
            arrays["z"],
            "pixel mean z (MC units)",
            cmap="RdBu_r",
            vmin=-lim,
            vmax=lim,
        )
        plots.image_panel(
            flat_axes.pop(0), arrays["std_ratio"], "pixel std / reference std", cmap="viridis"
        )
    label = "limit" if "ladder" in arrays else "exact reference"
    for i in range(n):
        ax = flat_axes.pop(0)
        bip_u, ref_u = arrays["u_bip"][..., i].ravel(), arrays["u_ref"][..., i].ravel()
        bins = np.linspace(min(bip_u.min(), ref_u.min()), max(bip_u.max(), ref_u.max()), 31)
        ax.hist(ref_u, bins, density=True, alpha=0.5, label=label)
        ax.hist(bip_u, bins, density=True, histtype="step", color="k", label="bip")
        ax.set_title(f"chart coordinate {i} (scaled)", fontsize=9)
        ax.legend(fontsize=7)
    for ax in flat_axes:
        ax.axis("off")
    fig.tight_layout()
    plots.save_figure(fig, path)
    plt.close(fig)


def check(
    spec_or_path,
    out_dir=None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    reference_draws: int | None = None,
    sigmas: list[float] | None = None,
    seed: int = 0,
) -> dict:
    """Check bip's posterior for a spec against the exact reference (module docstring).

    Args:
        spec_or_path: a spec path, shipped name, dict or ``ProblemSpec``
            (``bip.problems.as_spec``).
        out_dir: where to write ``check.json`` and ``check.png`` (checked before any compute;
            ``overwrite`` replaces a folder bip wrote); None writes nothing.
        progress: progress lines (stderr) and the sampler's progress bar.
        reference_draws: reference draws (default and minimum: twice bip's kept draws).
        sigmas: the maximum-entropy ladder (default the spec's sigma times 4, 2, 1, 1/2).
        seed: seed of the reference and of the comparison's random splits.

    Returns:
        The ``check.json`` content: ``kind`` (``"generic"`` or ``"maxent"``), the spec name,
        sigma, the draw count; generic: ``energy_distance`` (``energy_distance``, ``floor``,
        ``ratio``), ``pixels`` (``fraction_within_3se``, ``max_abs_z``, ``std_ratio_median``),
        ``coordinates`` (``mean_z``, ``std_ratio``, ``ks``, ``ks_floor`` per chart
        coordinate); maximum-entropy: ``ladder`` (per sigma: ``discrepancy``,
        ``discrepancy_se``, ``energy_distance``, ``floor``, ``max_mean_shift_in_std``,
        ``std_ratio``), ``monotone`` (of the discrepancy); the reference's NUTS diagnostics
        and seconds.

    Raises:
        ValueError: the spec's data law has no exact chart, the noise is not Gaussian, the
            operator is not linear, a ladder sigma is outside a learned prior's range, or
            (``bip.memory.MemoryBudgetError``) a generic spec's finite-sigma reference would
            not fit in memory.

    Example:
        >>> r = bip.check.check("ct-phantom-16", "runs/check-ct16", sigmas=[0.2, 0.1, 0.05])
        >>> r["monotone"], [row["energy_distance"] for row in r["ladder"]]
    """
    spec = problems.as_spec(spec_or_path)
    out = None if out_dir is None else outputs.check(out_dir, overwrite=overwrite)
    solve.check_size(spec)
    s = spec.sampler
    settings = _reference_settings(s.chains * (s.steps // s.thin), reference_draws)
    ladder = [s.sigma * f for f in LADDER] if sigmas is None else [float(v) for v in sigmas]
    if not ladder or not all(v > 0 for v in ladder):
        raise ValueError(f"the sigma ladder must be positive numbers, got {ladder!r}")
    if spec.prior.kind == "maxent" and s.chains < 3:
        raise ValueError(
            f"{spec.path or spec.name}: a maximum-entropy check compares independent chains "
            f"(chain_energy_distance): sampler.chains must be at least 3, got {s.chains}"
        )
    start = time.perf_counter()
    problem = _checked_problem(spec)
    kind = "maxent" if problem.alpha > 0 else "generic"
    key = jax.random.key(seed)
    result = {"name": spec.name, "kind": kind, "alpha": problem.alpha, "sigma": s.sigma}
    if kind == "generic":
        _say(progress, f"sampling bip's posterior at sigma = {s.sigma:g}")
        t0 = time.perf_counter()
        draws = _draws(problem, progress)
        result.update(
            num_draws=int(draws.shape[0] * draws.shape[1]), bip_seconds=time.perf_counter() - t0
        )
        found, arrays = _generic(key, problem, draws, settings, progress)
    else:
        for sigma in ladder:
            _check_ladder_sigma(problem, sigma, spec)
        found, arrays = _maxent(key, problem, ladder, settings, progress)
    result.update(found, precision=outputs.precision(), seconds=time.perf_counter() - start)
    if out is not None:

        def fill(tmp: Path) -> None:
            outputs.atomic_write_json(tmp / "check.json", result)
            _figure(problem, result, arrays, tmp / "check.png")

        content = outputs.manifest("check", spec=spec.path or spec.name)
        outputs.write_folder(out, fill, content, overwrite=overwrite)
    return result


def _check_ladder_sigma(problem, sigma: float, spec: problems.ProblemSpec) -> None:
    try:
        priors.check_sigma(problem.prior, sigma, name="sigma ladder")
    except ValueError as err:
        raise ValueError(f"{spec.path or spec.name}: {err}") from None
