"""Run a canonical problem end to end and write its results atomically.

``solve(spec)`` builds the problem (``bip.problems``), samples the generic or maximum-entropy
posterior with many chains (annealed if the spec asks), and writes to ``out_dir``:

- ``samples.npz``: thinned posterior samples ``(chains, draws, *event)`` (float32,
  compressed), truth, observation, mean, std, and a ``metadata`` JSON string (the spec, bip and
  JAX versions, seed);
- ``report.json``: PSNR/SSIM of the posterior mean, coverage of the ground truth by the
  pixel-wise 90% credible intervals, distance to the manifold (when known), ESS and R-hat,
  diverged chains, the classical baselines (FBP, Tikhonov, Wiener, TV at their best settings)
  and timings;
- ``figure.png``: truth, measurement, mean, std and a few samples.

Everything is written into a temporary folder beside ``out_dir`` and renamed into place at
the end, so an interrupted run never leaves a folder that looks complete.

Example:
    >>> report = bip.solve.solve("problems/circle-toy.toml", "runs/circle-toy")
    >>> report["tv_to_exact_posterior"]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bip import ct, metrics, outputs, posteriors, problems, samplers, targets

COVERAGE_LEVEL = 0.9


def _versions() -> dict:
    import blackjax
    import flax
    import numpyro

    import bip

    return {
        "bip": bip.__version__,
        "jax": jax.__version__,
        "blackjax": blackjax.__version__,
        "numpyro": numpyro.__version__,
        "flax": flax.__version__,
    }


def _sample(problem: problems.Problem, progress: bool) -> samplers.Run:
    s = problem.spec.sampler
    common = dict(
        alpha=problem.alpha,
        num_chains=s.chains,
        num_steps=s.steps,
        thin=s.thin,
        burn_in=s.burn_in,
        c=s.c,
        progress=progress,
    )
    key = jax.random.key(s.seed + 1)
    k_init, key = jax.random.split(key)
    common["initial_positions"] = initial_positions(k_init, problem)
    if s.anneal_from > s.sigma:
        sigmas = samplers.geometric_sigmas(s.anneal_from, s.sigma, s.anneal_levels)
        return posteriors.sample_annealed(
            key,
            problem.prior,
            problem.likelihood,
            sigmas=sigmas,
            steps_per_level=s.steps_per_level,
            **common,
        )
    return posteriors.sample(
        key, problem.prior, problem.likelihood, sigma=s.sigma, method=s.method, **common
    )


def initial_positions(rng_key, problem: problems.Problem) -> jax.Array:
    """Chain starts ``(chains, *event)`` by ``[sampler] init``: ``"prior"`` draws from the
    known data law (exact priors; else falls back to noise), ``"noise"`` is ``N(0, s^2 I)``
    with ``s`` the first annealing level (or 1), ``"baseline"`` the Tikhonov estimate at its
    best weight plus that noise."""
    s = problem.spec.sampler
    shape = (s.chains,) + problem.event_shape
    scale = max(s.anneal_from, s.sigma) if s.anneal_from > 0 else 1.0
    noise = scale * jax.random.normal(rng_key, shape, problem.y.dtype)
    if s.init == "prior" and problem.law is not None and hasattr(problem.law, "sample"):
        return jnp.asarray(problem.law.sample(rng_key, (s.chains,)), problem.y.dtype)
    if s.init == "baseline" and problem.operator.linear:
        weight = problem.baseline.get("tikhonov", {}).get("weight", 1e-2)
        return problems.tikhonov(problem.operator, problem.y, weight)[None] + noise
    return noise


PRIOR_FIT_TOLERANCE = 1.5
"""``prior_fit`` flags a misfit above this many times the top of a fitting estimate's range
(room for a learned prior's and the sampler's small biases: the shipped specs stay below 1.0
of the range's top, skimage's camera deblurred with the phantom prior lands at 2.0 (generic)
and 11 (maximum-entropy))."""


def _draws_report(problem, draws: np.ndarray) -> dict:
    """Quality of one set of draws ``(chains, draws, *event)``: PSNR/SSIM of their mean,
    their mean pixel-wise std, the coverage of the truth by their 90% intervals (and a note
    when it is far from 0.9), and their distance to the manifold (when known)."""
    mean, std = draws.mean(axis=(0, 1)), draws.std(axis=(0, 1))
    flat = draws.reshape((-1,) + mean.shape)
    report = {"mean_std": float(std.mean())}
    if problem.truth is not None:
        truth = np.asarray(problem.truth, float)
        covered = metrics.coverage(flat, truth, COVERAGE_LEVEL)
        report.update(
            psnr=metrics.psnr(mean, truth),
            ssim=metrics.ssim(mean, truth),
            coverage_90=covered,
            coverage_note=metrics.coverage_note(covered, COVERAGE_LEVEL),
        )
    if problem.manifold is not None:
        some = jnp.asarray(flat[:: max(1, flat.shape[0] // 64)])
        report["distance_to_manifold_mean"] = float(problem.manifold.distance(jnp.asarray(mean)))
        report["distance_to_manifold_samples"] = float(jnp.mean(problem.manifold.distance(some)))
    return report


def prior_fit(problem, estimate: np.ndarray, name: str) -> dict:
    """Does the prior fit the data? The misfit (``bip.metrics.misfit``, chi-square per
    measurement for Gaussian noise) of ``estimate``, a clean image under the prior, against
    the range a fitting estimate reaches (the truth's misfit under the noise model, central
    99%). A prior that knows the imaged object gives a posterior mean that explains the data
    to within the noise; one that does not (skimage's camera under the phantom prior) pulls
    the estimate onto its own manifold, away from what was measured.

    Returns ``{statistic, value, reference_range, threshold, ok, message}``; ``ok`` is
    ``value <= PRIOR_FIT_TOLERANCE * reference_range[1]``.

    Example:
        >>> fit = bip.solve.prior_fit(problem, draws.mean(axis=(0, 1)), "posterior mean")
        >>> fit["ok"], fit["value"]
    """
    noise = problem.spec.noise
    df = float(noise.df) if noise.kind == "student_t" else None
    residual = np.asarray(problem.y) - np.asarray(problem.operator(jnp.asarray(estimate)))
    value = metrics.misfit(residual, float(noise.std), df)
    lo, hi = metrics.misfit_range(residual.size, float(noise.std), df)
    threshold = PRIOR_FIT_TOLERANCE * hi
    unit = "chi-square per measurement" if df is None else "Student-t misfit per measurement"
    ok = bool(value <= threshold)
    if ok:
        message = f"ok: the {name} explains the measurement to within the noise"
    else:
        message = (
            f"PRIOR DOES NOT FIT THE DATA: the {name} misfits the measurement by {value:.2f} "
            f"({unit}) where an estimate that explains the data reaches at most {hi:.2f}: the "
            f"prior {problem.prior.name!r} pulls the estimate toward images it knows, away "
            "from what was measured (the object is probably not one this prior was trained "
            "on; or the noise level is too small). Do not trust the estimate or its intervals."
        )
    return {
        "statistic": f"{unit} of the {name}",
        "value": value,
        "reference_range": [lo, hi],
        "threshold": threshold,
        "ok": ok,
        "message": message,
    }


def _image_report(problem, samples: np.ndarray, arrays: dict) -> dict:
    """``raw`` and ``denoised`` quality (``_draws_report``), ``prior_fit``, ``truth_norm``;
    adds the denoised draws' mean and std to ``arrays`` (saved and plotted).

    The denoised draws are Tweedie's ``x + l^2 s(x, l)`` at ``l = sigma^(1 - alpha/2)``
    (``bip.posteriors.spread``): in a maximum-entropy run the raw draws sit ``l`` off the
    manifold by design (white noise, the same in every pixel), which the denoised draws remove,
    so their std and coverage are the meaningful uncertainty. ``prior_fit`` reads the raw
    mean for a generic prior (its draws are the posterior's) and the denoised mean for a
    maximum-entropy one (there the raw draws' normal spread is not the posterior's)."""
    s = problem.spec.sampler
    level = posteriors.spread(s.sigma, problem.alpha)
    denoised = np.asarray(posteriors.denoise(problem.prior, jnp.asarray(samples), level))
    arrays["mean_denoised"] = denoised.mean(axis=(0, 1))
    arrays["std_denoised"] = denoised.std(axis=(0, 1))
    report = {
        "raw": _draws_report(problem, samples),
        "denoised": {"level": level, **_draws_report(problem, denoised)},
    }
    if problem.alpha > 0:
        report["prior_fit"] = prior_fit(problem, arrays["mean_denoised"], "denoised posterior mean")
    else:
        report["prior_fit"] = prior_fit(problem, arrays["mean"], "posterior mean")
    if problem.truth is not None:
        report["truth_norm"] = float(np.linalg.norm(np.asarray(problem.truth)))
    return report


_DRAWS_KEYS = {
    "mean_std": "the pixel-wise standard deviation of these draws, averaged over the pixels",
    "psnr": "PSNR (dB) of the mean of these draws against the ground truth (peak: the truth's "
    "range)",
    "ssim": "structural similarity (scikit-image) of the mean of these draws with the truth",
    "coverage_90": "the fraction of pixels whose true value lies inside the central 90% "
    "interval of these draws (calibrated intervals give about 0.90)",
    "coverage_note": "'ok', or a warning: 'intervals too wide' at 0.99 or more (the spread is "
    "not the posterior's), 'intervals too narrow' below 0.45",
    "distance_to_manifold_mean": "Euclidean distance of the mean of these draws to the data "
    "manifold (exact-chart problems only)",
    "distance_to_manifold_samples": "mean Euclidean distance of these draws to the manifold "
    "(exact-chart problems only)",
}

REPORT_KEYS: dict[str, str] = {
    "name": "the problem's name (from the spec)",
    "complete": "true when the run finished; false for a run stopped early (Ctrl-C), whose "
    "draws are partial",
    "seconds": "wall-clock seconds from building the problem to the end of sampling",
    "precision": "the float precision the run computed in (float64 unless --float32)",
    "alpha": "the tempering exponent: 0 is the generic prior, alpha > 0 the maximum-entropy "
    "prior sigma^alpha s(x, sigma)",
    "prior": "the score prior's name (exact chart prior or a shipped learned prior)",
    "sigma": "the noise level of the score the posterior was sampled at (the last annealing level)",
    "truth_norm": "Euclidean norm of the ground-truth image (a scale for the distances)",
    "raw": "quality of the raw draws, as the sampler left them",
    **{f"raw.{k}": f"raw draws: {v}" for k, v in _DRAWS_KEYS.items()},
    "denoised": "quality of the Tweedie-denoised draws x + l^2 s(x, l): the meaningful "
    "uncertainty in a maximum-entropy run, whose raw draws sit l off the manifold by design",
    "denoised.level": "the denoising level l = sigma^(1 - alpha/2), the raw draws' normal "
    "spread about the manifold (l = sigma for the generic prior)",
    **{f"denoised.{k}": f"denoised draws: {v}" for k, v in _DRAWS_KEYS.items()},
    "prior_fit": "does the prior fit the data? (bip.solve.prior_fit)",
    "prior_fit.statistic": "what is measured: the data misfit of the posterior mean (generic) "
    "or of the denoised posterior mean (maximum-entropy)",
    "prior_fit.value": "that misfit: chi-square per measurement for Gaussian noise (about 1, "
    "or less, when the estimate explains the data)",
    "prior_fit.reference_range": "the central 99% range of the misfit of the ground truth "
    "itself under the noise model: what an estimate that explains the data reaches",
    "prior_fit.threshold": "the value above which the check fails: 1.5 times the top of the "
    "reference range",
    "prior_fit.ok": "false when the prior does not fit the data: the estimate and its "
    "intervals are then not to be trusted",
    "prior_fit.message": "the verdict in words, with what to do",
    "baselines": "classical reconstructions to compare with, each at its best setting chosen "
    "on validation images (or on the ground truth, an oracle: see chosen_on)",
    "baselines.*": "one classical baseline (its name: fbp, tikhonov, wiener or tv: total "
    "variation with non-negativity, bip.tv)",
    "baselines.*.psnr": "PSNR (dB) of that baseline reconstruction against the truth",
    "baselines.*.weight": "the regularisation weight that baseline's search chose",
    "baselines.*.filter": "FBP: the chosen filter (ramp, hann, ...)",
    "baselines.*.width": "FBP: the chosen width (pixels) of the Gaussian smoothing along the "
    "detector",
    "baselines.*.psnr_by_filter": "FBP: the PSNR (dB) of each filter at its own best width",
    "baselines.*.psnr_by_filter.*": "FBP: that filter's PSNR (dB) at its best width",
    "baselines.*.iterations": "TV: the PDHG iterations of each TV reconstruction",
    "baselines.*.interior": "true when the chosen setting lies strictly inside the searched "
    "range (a setting at an edge would mean the search stopped too early)",
    "baselines.*.search_range": "the range the setting was searched over (log scale)",
    "baselines.*.chosen_on": "'validation' (chosen on other images of the same law, fair) or "
    "'oracle' (chosen on the ground truth itself)",
    "baselines.*.validation": "which images the setting was chosen on",
    "baselines.*.*": "a detail of that baseline's search (bip.baselines)",
    "ess_min": "smallest bulk effective sample size over the pixels (arviz-stats, "
    "rank-normalised: how many independent draws the pixel means are worth)",
    "ess_median": "median bulk effective sample size over the pixels",
    "ess_tail_min": "smallest tail effective sample size over the pixels (arviz-stats: the ESS "
    "of the 5% and 95% quantiles, which the 90% intervals and their coverage rest on)",
    "rhat_max": "largest rank-normalised split R-hat over the pixels (arviz-stats; 1 when the "
    "chains agree)",
    "rhat_median": "median rank-normalised split R-hat over the pixels",
    "mixing": "'ok', or what R-hat says about mixing and what to do (bip.metrics.mixing_note)",
    "diverged_chains": "number of chains that left the finite numbers (dropped from the "
    "statistics)",
    "divergence": "which chains diverged and when",
    "tv_to_exact_posterior": "circle: total variation between the draws' angle histogram (36 "
    "bins) and the exact posterior's angular law at the same sigma and alpha",
    "mean_distance_to_circle": "circle: mean distance of the draws to the unit circle",
    "steps_done": "an interrupted run: chain steps done (after burn-in)",
    "steps": "an interrupted run: chain steps asked for",
    "draws": "an interrupted run: thinned draws kept per chain",
}
"""Every key ``report.json`` can hold (dotted for nested keys, ``*`` matching any name),
explained in plain words; ``report.md`` is written from it."""


def explain(key: str) -> str | None:
    """The plain-words explanation of a dotted ``report.json`` key (``"raw.psnr"``), or None.

    Example:
        >>> bip.solve.explain("denoised.coverage_90")[:14]
        'denoised draws'
    """
    import fnmatch

    if key in REPORT_KEYS:
        return REPORT_KEYS[key]
    depth = key.count(".")
    for pattern, text in REPORT_KEYS.items():
        if pattern.count(".") == depth and fnmatch.fnmatchcase(key, pattern):
            return text
    return None


def report_keys(report: dict, prefix: str = "") -> list[str]:
    """Every dotted key of a (nested) report, parents before their children."""
    keys = []
    for key, value in report.items():
        keys.append(prefix + key)
        if isinstance(value, dict):
            keys += report_keys(value, f"{prefix}{key}.")
    return keys


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


def report_markdown(report: dict) -> str:
    """``report.md``: each key of ``report`` with its value and its explanation
    (``REPORT_KEYS``), in the order of ``report.json``."""
    lines = [
        f"# bip solve report: {report.get('name', '')}",
        "",
        "Each entry of `report.json`: its value here, then what it means.",
        "",
    ]
    for key in report_keys(report):
        value = report
        for part in key.split("."):
            value = value[part]
        shown = "" if isinstance(value, dict) else f" = {_shown(value)}"
        indent = "  " * key.count(".")
        lines.append(f"{indent}- `{key}`{shown}: {explain(key) or '(not documented)'}")
    return "\n".join(lines) + "\n"


def _circle_report(problem, samples: np.ndarray) -> dict:
    s = problem.spec.sampler
    angles = np.arctan2(samples[..., 1], samples[..., 0])
    law = targets.stationary_angular_law(
        problem.prior, s.sigma, problem.alpha, problem.likelihood.potential
    )
    return {
        "tv_to_exact_posterior": metrics.tv_to_law(angles, law),
        "mean_distance_to_circle": float(np.mean(np.abs(np.linalg.norm(samples, axis=-1) - 1))),
    }


def _diagnostics(samples: np.ndarray, run: samplers.Run) -> dict:
    flat = samples.reshape(samples.shape[:2] + (-1,))
    enough = samples.shape[1] >= 4
    ess = metrics.effective_sample_size(flat) if enough else np.full(1, np.nan)
    tail = metrics.effective_sample_size(flat, "tail") if enough else np.full(1, np.nan)
    rhat = metrics.split_rhat(flat) if enough else np.full(1, np.nan)
    rhat_max, rhat_median = float(np.nanmax(rhat)), float(np.nanmedian(rhat))
    return {
        "ess_min": float(np.nanmin(ess)),
        "ess_median": float(np.nanmedian(ess)),
        "ess_tail_min": float(np.nanmin(tail)),
        "rhat_max": rhat_max,
        "rhat_median": rhat_median,
        "mixing": metrics.mixing_note(rhat_max, rhat_median, samples.shape[1]),
        "diverged_chains": int(np.sum(np.asarray(run.diverged))),
        "divergence": str(run.divergence),
    }


def _baseline_title(name: str, found: dict) -> str:
    """A baseline panel's title: its name and chosen setting (``bip.baselines.classical``)."""
    if name == "fbp":
        return f"FBP ({found['filter']}, width {found['width']:.2g})"
    return f"{'TV' if name == 'tv' else name.capitalize()} (weight {found['weight']:.2g})"


def _figure(problem, samples, arrays: dict, path: Path) -> None:
    """The run's figure: truth, measurement (a labelled sinogram for CT), the raw and the
    denoised posterior means (PSNR/SSIM in their titles), the raw and the denoised std, two
    draws, and the classical baselines at their chosen settings (FBP, Tikhonov, Wiener, TV;
    PSNR/SSIM in their titles); every image panel with its colour bar. The circle: draws on
    the manifold."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from bip import plots

    truth = None if problem.truth is None else np.asarray(problem.truth)
    if len(problem.event_shape) == 1:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        plots.scatter_on_manifold(ax, samples.reshape(-1, truth.size), problem.manifold, s=1)
        ax.plot(*truth, "r*", ms=12, label="truth")
        ax.legend()
        plots.save_figure(fig, path)
        plt.close(fig)
        return

    def scored(title, estimate):
        if truth is None:
            return title
        return (
            f"{title}\nPSNR {metrics.psnr(estimate, truth):.1f} dB, "
            f"SSIM {metrics.ssim(estimate, truth):.2f}"
        )

    params = problem.operator.params
    std_max = float(max(arrays["std"].max(), arrays["std_denoised"].max()))
    panels = [("truth", truth, {})] if truth is not None else []
    panels += [
        ("measurement", np.asarray(problem.y), {}),
        (scored("posterior mean (raw)", arrays["mean"]), arrays["mean"], {}),
        (scored("denoised mean", arrays["mean_denoised"]), arrays["mean_denoised"], {}),
        ("std (raw draws)", arrays["std"], {"vmin": 0, "vmax": std_max}),
        ("std (denoised draws)", arrays["std_denoised"], {"vmin": 0, "vmax": std_max}),
    ]
    panels += [(f"raw draw {i}", samples[i, -1], {}) for i in range(min(2, samples.shape[0]))]
    for name, image in problem.baseline_images.items():
        panels.append((scored(_baseline_title(name, problem.baseline[name]), image), image, {}))
    cols = 4
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (title, img, options) in zip(axes.flat, panels, strict=False):
        if title == "measurement" and isinstance(params, ct.RadonParams | ct.FanParams):
            plots.sinogram_panel(ax, img, np.asarray(params.angles), "measurement (sinogram)")
        elif title == "measurement" and img.shape != tuple(problem.event_shape):
            plots.image_panel(ax, img, title, aspect="auto")
        else:
            plots.image_panel(ax, img, title, **options)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    plots.save_figure(fig, path)
    plt.close(fig)


LEGACY = outputs.holds_exactly("samples.npz", "report.json", "figure.png")
"""An output folder of ``solve`` written before bip marked its outputs (``bip.outputs``)."""


class SolveInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``solve``: ``steps_done`` of ``num_steps`` chain steps ran; ``written``
    is the output folder holding the partial draws (marked incomplete), or None."""

    def __init__(self, steps_done: int, num_steps: int, written: Path | None):
        super().__init__(f"interrupted after {steps_done} of {num_steps} steps")
        self.steps_done, self.num_steps, self.written = steps_done, num_steps, written


def event_shape(spec: problems.ProblemSpec) -> tuple[int, ...]:
    """The shape of one draw of a validated spec's posterior, without building the problem
    (for the size check before anything is computed)."""
    source = spec.prior.source
    if source != "exact":
        from bip import priorfile

        return tuple(priorfile.read_card(priorfile.resolve_prior_dir(source))["event_shape"])
    data = spec.data
    if data.source == "circle":
        return (2,)
    if data.source == "file" and data.path:
        path = problems._spec_file(spec, "path")
        if path.is_file():
            return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
    if data.source == "faces":
        from bip import images

        return tuple(images.faces().shape[1:])
    return (data.size, data.size)


def check_size(spec: problems.ProblemSpec) -> None:
    """Refuse a spec whose kept draws (chains x steps // thin x event) do not fit in memory
    (``bip.samplers.check_memory``: ``MemoryBudgetError`` with the estimate and the fixes)."""
    s = spec.sampler
    try:
        samplers.check_memory(
            s.chains, s.steps // s.thin, event_shape(spec), jnp.result_type(float)
        )
    except samplers.MemoryBudgetError as err:
        origin = spec.path or spec.name
        raise samplers.MemoryBudgetError(
            f"{origin}: {err}; in the spec: a larger sampler.thin (now {s.thin}), fewer "
            f"sampler.chains (now {s.chains}) or sampler.steps (now {s.steps})"
        ) from None


def _write(out: Path, spec, problem, samples, arrays, report, overwrite, status) -> Path:
    """Write ``samples.npz``, ``report.json`` (and for a complete run ``figure.png``) into
    ``out`` atomically, marked with ``status`` (``bip.outputs``)."""

    def fill(tmp: Path) -> None:
        metadata = {
            "spec": spec.to_dict(),
            "spec_path": spec.path,
            "versions": _versions(),
        }
        np.savez_compressed(
            tmp / "samples.npz",
            samples=samples.astype(np.float32),
            truth=np.asarray(np.nan if problem.truth is None else problem.truth),
            y=np.asarray(problem.y),
            **arrays,
            metadata=np.array(json.dumps(metadata)),
        )
        outputs.atomic_write_json(tmp / "report.json", report)
        (tmp / "report.md").write_text(report_markdown(report))
        if status == "complete":
            _figure(problem, samples, arrays, tmp / "figure.png")

    content = outputs.manifest("solve", status=status, spec=spec.path or spec.name)
    return outputs.write_folder(out, fill, content, overwrite=overwrite, legacy=LEGACY)


def _interrupted(stop, spec, problem, out, overwrite, start) -> SolveInterrupted:
    """Keep what an interrupted run sampled: its draws and a short report, marked incomplete;
    nothing when no draw was kept yet (or there is no ``out``)."""
    outputs.SAVING.set()
    total = spec.sampler.steps  # after burn-in, as Run.steps_done counts
    run = stop.partial
    if run is None:
        return SolveInterrupted(0, total, None)
    samples = np.asarray(run.samples)
    if out is None or samples.shape[1] == 0:
        return SolveInterrupted(run.steps_done, total, None)
    report = {
        "name": spec.name,
        "complete": False,
        "steps_done": int(run.steps_done),
        "steps": total,
        "draws": int(samples.shape[1]),
        "seconds": time.perf_counter() - start,
        "precision": outputs.precision(),
    }
    arrays = {"mean": samples.mean(axis=(0, 1)), "std": samples.std(axis=(0, 1))}
    written = _write(out, spec, problem, samples, arrays, report, overwrite, "incomplete")
    return SolveInterrupted(run.steps_done, total, written)


def _build_with_status(spec, progress: bool) -> problems.Problem:
    """``problems.build``, with a line on stderr before and after when ``progress``: on a
    128x128 image the classical baselines' searches take a minute or more before the sampler's
    bar appears."""
    image = spec.operator.kind in ("radon", "fan_beam", "gaussian_blur", "mask")
    if progress and image:
        print(
            f"bip solve {spec.name}: building the problem and the classical baselines (each "
            "parameter searched on validation images) ...",
            file=sys.stderr,
            flush=True,
        )
    start = time.perf_counter()
    problem = problems.build(spec)
    if progress and image and problem.baseline:
        found = ", ".join(f"{k} {v['psnr']:.1f} dB" for k, v in problem.baseline.items())
        print(
            f"bip solve {spec.name}: baselines in {time.perf_counter() - start:.0f} s: {found}",
            file=sys.stderr,
            flush=True,
        )
    return problem


def solve(spec_or_path, out_dir=None, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Solve a problem spec (a path, a shipped name, a dict or a ``ProblemSpec``: anything
    ``bip.problems.as_spec`` takes); return the report dict.

    With ``out_dir`` the results are written there atomically and marked as bip's
    (``bip.outputs``). Before anything is computed, the output location is checked
    (``bip.outputs.check``: an existing bip output folder needs ``overwrite=True``, a folder
    bip did not write is never replaced) and so is the memory the kept draws need
    (``check_size``).

    Ctrl-C while sampling raises ``SolveInterrupted`` after writing the draws sampled so far
    to ``out_dir``, marked incomplete (``report.json`` has ``"complete": false``).
    """
    spec = problems.as_spec(spec_or_path)
    out = None if out_dir is None else outputs.check(out_dir, overwrite=overwrite, legacy=LEGACY)
    check_size(spec)
    start = time.perf_counter()
    problem = _build_with_status(spec, progress)
    try:
        run = _sample(problem, progress)
    except samplers.Interrupted as stop:
        raise _interrupted(stop, spec, problem, out, overwrite, start) from None
    elapsed = time.perf_counter() - start
    samples = np.asarray(run.healthy_samples if run.divergence.any else run.samples)
    mean, std = samples.mean(axis=(0, 1)), samples.std(axis=(0, 1))
    report = {
        "name": spec.name,
        "complete": True,
        "seconds": elapsed,
        "precision": outputs.precision(),
        "alpha": problem.alpha,
        "prior": problem.prior.name,
        "sigma": spec.sampler.sigma,
    }
    arrays = {"mean": mean, "std": std}
    if len(problem.event_shape) == 1:
        report.update(_circle_report(problem, samples))
    else:
        report.update(_image_report(problem, samples, arrays))
        report["baselines"] = problem.baseline
    report.update(_diagnostics(samples, run))
    if out is not None:
        _write(out, spec, problem, samples, arrays, report, overwrite, "complete")
    return report
