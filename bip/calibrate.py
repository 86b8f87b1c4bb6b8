"""``bip calibrate``: calibration of a problem's posterior over repeated experiments.

``calibrate(spec, trials, out)`` draws ``K`` truths from the spec's data law and
measurements from its likelihood, samples every trial's posterior with the spec's sampler
and reports the checks of ``bip.calibration`` (SBC rank histograms for the chart
coordinates and a fixed set of pixels, the coverage curve, TARP) as ``summary.json`` and
``calibration.png``.

Vectorised trials: the trials of a batch run as ONE sampler run (``bip.samplers.run`` with
``bip.samplers.ula``, the public API): every chain carries one image per trial (a stacked
event ``(K, *event)``), and the drift applies the posterior drift of trial ``k`` (the
likelihood with observation ``y_k``) to image ``k``. ULA moves every coordinate with its own
noise, so this is exactly ``K`` independent runs, compiled once.

Which truths: the generic posterior at noise level ``sigma`` (``alpha = 0``) is the
posterior of the prior ``p_sigma = p_data * N(0, sigma^2 I)`` (SCIENCE.md section 4), so
its truths are ``x = x0 + sigma z``, ``x0`` from the data law; the maximum-entropy
posterior (``alpha > 0``) targets, as ``sigma -> 0``, the posterior under the uniform
(volume) law on the manifold (Thm 6.1), so its truths are uniform on the manifold
(``uniform_on_manifold``: by rejection on the chart box, with acceptance
``sqrt(det J^T J)``) and its draws, which sit ``sigma^(1 - alpha/2)`` off the manifold by
design, are projected onto it (nearest point: to first order the normal spread does not move
the chart coordinate; Tweedie's denoiser at that level shrinks the draws toward the box
centre instead, measured 0.57 coverage at 90%); at finite sigma it is calibrated only
approximately. Chart coordinates (where the data law has a manifold with
``coordinate``) are the nearest-point coordinates of truths and draws alike: SBC and
coverage hold for any fixed function of the image, so no chart-space sampler is needed. A
learned prior (``phantom32-unet``) is calibrated against the same truths as the exact prior
it learned.

Resumable: the per-trial statistics are saved after every batch, atomically, in ``out``
(``bip.outputs``, marked incomplete), so Ctrl-C keeps the finished batches and the same
call continues (a larger ``trials`` extends a run). Trial ``k``'s truth, reference point
and noise depend only on the seed and ``k``.

Example:
    >>> summary = bip.calibrate.calibrate("ct-phantom-8", 100, "runs/calibrate-ct")
    >>> summary["sbc"]["chart"]["pvalue"], summary["coverage"]["pixels"]
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from bip import _checks, outputs, posteriors, problems, samplers
from bip.calibration import (
    LEVELS,
    covered_from_pit,
    default_bins,
    figure,
    pit,
    pit_uniformity,
    tarp_fractions,
    tarp_summary,
)

Array = jax.Array


@struct.dataclass
class _TrialsDrift:
    """The posterior drifts of ``K`` trials on a stacked event ``(K, *event)``: image ``k``
    moves under ``drift`` with the likelihood's observation replaced by ``ys[k]``. A pytree
    like ``bip.posteriors.Drift``, so ``bip.samplers.run`` traces ``ys`` and ``sigma``."""

    drift: posteriors.Drift
    ys: Array

    def __call__(self, x: Array) -> Array:
        def one(y, image):
            return self.drift.replace(likelihood=self.drift.likelihood.replace(y=y))(image)

        return jax.vmap(one)(self.ys, x)


def _trial_keys(rng_key: Array, first: int, count: int) -> Array:
    """One key per trial ``first, ..., first + count - 1``: trial ``k``'s randomness depends on
    ``k`` alone, not on how the trials are batched."""
    return jax.vmap(lambda i: jax.random.fold_in(rng_key, i))(jnp.arange(first, first + count))


ENVELOPE_FACTOR = 1.25
"""Rejection sampling on a chart box: the envelope is this factor times the largest volume
element over 4096 pilot points of the box."""


def _uniform_points(keys: Array, manifold, proposals: int = 64) -> Array:
    if hasattr(manifold, "sample_uniform"):
        return jax.vmap(lambda k: manifold.sample_uniform(k, ()))(keys)
    if not all(hasattr(manifold, a) for a in ("sample_box", "volume_density", "chart")):
        raise TypeError(
            "uniform_on_manifold needs a manifold with sample_uniform, or a chart box "
            f"(sample_box, volume_density, chart); got {type(manifold).__name__}"
        )
    pilot = manifold.volume_density(manifold.sample_box(jax.random.key(0), (4096,)))
    envelope = ENVELOPE_FACTOR * jnp.max(pilot)

    def one(key):
        k_box, k_accept = jax.random.split(key)
        u = manifold.sample_box(k_box, (proposals,))
        density = manifold.volume_density(u)
        accept = jax.random.uniform(k_accept, (proposals,)) * envelope < density
        return u[jnp.argmax(accept)], jnp.any(accept), jnp.max(density)

    u, found, highest = jax.vmap(one)(keys)
    if not bool(jnp.all(found)):
        raise RuntimeError(f"rejection sampling on the chart box found no point in {proposals}")
    if float(jnp.max(highest)) > float(envelope):  # the envelope must bound the density
        raise RuntimeError(
            f"the volume element reached {float(jnp.max(highest)):.4g}, above the rejection "
            f"envelope {float(envelope):.4g}: raise bip.calibrate.ENVELOPE_FACTOR"
        )
    return manifold.chart(u)


def uniform_on_manifold(rng_key: Array, manifold, num: int) -> Array:
    """``num`` points ``(num, *event)`` uniform on ``manifold`` with respect to its volume
    (density ``sqrt(det J^T J)`` in the chart): the manifold's own ``sample_uniform`` when it
    has one (circle, ellipse, sphere), else rejection sampling on its chart box
    (``bip.images.PhantomManifold``: box-uniform proposals accepted with probability
    ``sqrt(det J^T J) / envelope``, ``ENVELOPE_FACTOR`` above the largest value seen on 4096
    pilot points). Point ``k`` depends only on ``jax.random.fold_in(rng_key, k)``.

    Example:
        >>> m = bip.images.PhantomManifold(size=16, free=("a", "b"))
        >>> bip.calibrate.uniform_on_manifold(jax.random.key(0), m, 5).shape
        (5, 16, 16)
    """
    num = _checks.integer("num", num)
    return _uniform_points(_trial_keys(rng_key, 0, num), manifold)


DATA_LAWS = ("phantom", "ellipse-grid", "shepp-logan-family", "circle", "ellipses")
"""The spec data sources with a law to draw truths from; all but ``"ellipses"`` (a random
number of ellipses) also have a manifold with a chart."""


def _check_spec(spec: problems.ProblemSpec) -> None:
    """What calibration needs of a validated spec, checked before anything is built."""
    origin = spec.origin
    if spec.data.source not in DATA_LAWS:
        raise ValueError(
            f"{origin}: calibration draws its truths from the data law, and data.source = "
            f"{spec.data.source!r} has none: use one of {', '.join(DATA_LAWS)}"
        )
    if spec.data.source == "ellipses" and spec.prior.kind == "maxent":
        raise ValueError(
            f"{origin}: a maximum-entropy calibration draws truths uniform on the data's "
            "manifold, and data.source = 'ellipses' has none"
        )
    if spec.sampler.method != "ula":
        raise ValueError(
            f"{origin}: calibration runs ULA on all trials at once; sampler.method = "
            f"{spec.sampler.method!r} is not supported (use 'ula')"
        )


def draw_truths(rng_key: Array, problem: problems.Problem, first: int, count: int) -> Array:
    """Truths ``(count, *event)`` of trials ``first, ..., first + count - 1`` for the
    posterior the problem's sampler targets: ``x0 + sigma z`` (``x0`` from the data law, the
    prior ``p_sigma``) for a generic prior, uniform on the manifold (``uniform_on_manifold``)
    for a maximum-entropy one.

    Example:
        >>> x = bip.calibrate.draw_truths(key, bip.problems.build(spec), 0, 10)
    """
    _check_spec(problem.spec)
    keys = _trial_keys(rng_key, first, count)
    if problem.alpha > 0:
        return _uniform_points(keys, problem.manifold)
    sigma = problem.spec.sampler.sigma

    def one(key):
        k_law, k_noise = jax.random.split(key)
        x0 = jnp.asarray(problem.law.sample(k_law, ()), problem.y.dtype)
        return x0 + sigma * jax.random.normal(k_noise, x0.shape, x0.dtype)

    return jax.vmap(one)(keys)


def simulate_measurements(keys: Array, problem: problems.Problem, truths: Array) -> Array:
    """``y_k = A(x_k) + noise_k`` ``(K, *obs)`` with the spec's noise model, one key per
    trial ``keys (K,)``."""
    noise = problem.spec.noise
    clean = jax.vmap(problem.operator)(jnp.asarray(truths))

    def eps(key):
        if noise.kind == "student_t":
            return jax.random.t(key, noise.df, clean.shape[1:], clean.dtype)
        return jax.random.normal(key, clean.shape[1:], clean.dtype)

    return clean + noise.std * jax.vmap(eps)(keys)


def _initial_positions(rng_key: Array, problem: problems.Problem, shape: tuple) -> Array:
    """Starts ``(*shape, *event)``: ``[sampler] init = "prior"`` draws from the data law,
    otherwise (``"noise"``, ``"baseline"``) noise at the first annealing level (or 1)."""
    s = problem.spec.sampler
    if s.init == "prior":
        return jnp.asarray(problem.law.sample(rng_key, shape), problem.y.dtype)
    scale = max(s.anneal_from, s.sigma) if s.anneal_from > 0 else 1.0
    return scale * jax.random.normal(rng_key, shape + problem.event_shape, problem.y.dtype)


def solve_trials(rng_key: Array, problem: problems.Problem, ys: Array) -> tuple[np.ndarray, int]:
    """Posterior draws of ``K`` trials (observations ``ys (K, *obs)``) in ONE sampler run:
    every chain carries one image per trial (a stacked event ``(K, *event)``), annealed and
    sampled as the spec's ``[sampler]`` table says (ULA; ``chains`` chains per trial).
    Maximum-entropy draws, which sit ``sigma^(1 - alpha/2)`` off the manifold by design, are
    projected onto it (nearest point, ``manifold.project``).

    Returns:
        ``(draws, diverged)``: draws ``(K, chains * kept, *event)`` (chain-major) and the
        number of stacked chains that diverged.

    Example:
        >>> draws, diverged = bip.calibrate.solve_trials(key, problem, ys)
    """
    _check_spec(problem.spec)
    s = problem.spec.sampler
    ys = jnp.asarray(ys)
    num = ys.shape[0]
    dtype = problem.y.dtype
    drift = posteriors.drift(problem.prior, problem.likelihood, sigma=s.sigma, alpha=problem.alpha)
    target = _TrialsDrift(drift, ys)
    k_init, k_anneal, k_run = jax.random.split(rng_key, 3)
    x = _initial_positions(k_init, problem, (s.chains, num))
    quiet = dict(progress=False, on_divergence="ignore")
    if s.anneal_from > s.sigma:
        levels = samplers.geometric_sigmas(s.anneal_from, s.sigma, s.anneal_levels)
        for i, level in enumerate(np.asarray(levels)):
            h = posteriors.step_size(level, problem.alpha, problem.likelihood, s.c)
            at_level = target.replace(drift=drift.replace(sigma=jnp.asarray(level, dtype)))
            run = samplers.run(
                jax.random.fold_in(k_anneal, i),
                samplers.ula(at_level, h),
                x,
                s.steps_per_level,
                keep_samples=False,
                **quiet,
            )
            x = run.final_state.position
    h = posteriors.step_size(s.sigma, problem.alpha, problem.likelihood, s.c)
    run = samplers.run(
        k_run, samplers.ula(target, h), x, s.steps, thin=s.thin, burn_in=s.burn_in, **quiet
    )
    draws = jnp.asarray(run.samples)  # (chains, kept, K, *event)
    if problem.alpha > 0:
        draws = problem.manifold.project(draws)
    draws = np.moveaxis(np.asarray(draws), 2, 0)  # (K, chains, kept, *event)
    return draws.reshape((num, -1) + problem.event_shape), int(np.sum(run.diverged))


def _chart(problem: problems.Problem):
    """``(coordinates, names, scale)`` of the data's manifold, or None: ``coordinates`` maps
    images ``(..., *event)`` to ``(..., n)`` (nearest point), ``scale`` is the chart box's
    width per coordinate (1 where there is no box)."""
    manifold = problem.manifold
    if manifold is None or not hasattr(manifold, "coordinate"):
        return None
    k = len(problem.event_shape)

    def coordinates(x):
        x = jnp.asarray(x)
        u = np.asarray(manifold.coordinate(x), float)
        return u[..., None] if u.ndim == x.ndim - k else u

    names = tuple(str(n) for n in getattr(manifold, "free", ())) or tuple(
        f"u{i}" for i in range(manifold.intrinsic_dim)
    )
    if len(names) == 1 and not hasattr(manifold, "free"):
        names = ("angle",)
    scale = np.ones(len(names))
    if hasattr(manifold, "bounds"):
        lo, hi = manifold.bounds
        scale = np.asarray(hi, float) - np.asarray(lo, float)
    return coordinates, names, scale


def trial_statistics(
    problem: problems.Problem, truths: Array, draws: Array, references: Array, seed: int = 0
) -> dict:
    """Per-trial calibration statistics of a batch (what ``calibrate`` stores and resumes):

    - ``pit_pixels (K, d)``: the randomised PIT of every pixel (``bip.calibration.pit``;
      ranks and coverage follow from it);
    - ``tarp_image (K,)``: TARP fractions in image space (Euclidean), reference ``references``;
    - with a chart: ``pit_chart (K, n)``, ``tarp_chart (K,)`` (coordinates scaled by the box
      widths) and ``u_truth (K, n)``.

    Example:
        >>> stats = bip.calibrate.trial_statistics(problem, truths, draws, references)
    """
    truths, draws = np.asarray(truths, float), np.asarray(draws, float)
    k, num = draws.shape[:2]
    stats = {
        "pit_pixels": pit(truths.reshape(k, -1), draws.reshape(k, num, -1), seed),
        "tarp_image": tarp_fractions(truths, draws, references, seed=seed + 1),
    }
    chart = _chart(problem)
    if chart is not None:
        coordinates, _, scale = chart
        u_t, u_d, u_r = coordinates(truths), coordinates(draws), coordinates(references)
        stats["pit_chart"] = pit(u_t, u_d, seed + 2)
        stats["tarp_chart"] = tarp_fractions(u_t, u_d, u_r, scale, seed + 3)
        stats["u_truth"] = u_t
    return stats


def summarize(
    stats: dict,
    problem: problems.Problem,
    num_draws: int,
    pixels: np.ndarray,
    bins: int | None = None,
) -> dict:
    """The JSON summary of per-trial statistics ``stats`` (``trial_statistics``, trials
    concatenated): SBC histograms of the randomised ranks (``pit_uniformity``: equal bins
    of the PIT) and chi-square p-values (chart coordinates and the pixels ``pixels``),
    coverage curves (pixel-wise and per chart coordinate, at ``LEVELS``) and TARP (image and
    chart).

    Example:
        >>> out = bip.calibrate.summarize(stats, problem, 64, pixels)
        >>> out["sbc"]["chart"]["pvalue"], out["coverage"]["pixels"]
    """
    trials = int(stats["tarp_image"].shape[0])
    bins = default_bins(trials) if bins is None else _checks.integer("bins", bins, 2)
    s = problem.spec.sampler
    levels = list(LEVELS)
    pixel_ranks = pit_uniformity(stats["pit_pixels"][:, np.asarray(pixels, int)], bins)
    pixel_curve = covered_from_pit(stats["pit_pixels"]).mean(axis=(1, 2))
    out: dict[str, Any] = {
        "name": problem.spec.name,
        "prior": problem.prior.name,
        "kind": "maxent" if problem.alpha > 0 else "generic",
        "alpha": problem.alpha,
        "sigma": s.sigma,
        "truths": (
            "uniform on the manifold (volume measure)"
            if problem.alpha > 0
            else "x0 + sigma z, x0 from the data law (the prior p_sigma)"
        ),
        "draws": "projected onto the manifold" if problem.alpha > 0 else "raw",
        "trials": trials,
        "draws_per_trial": int(num_draws),
        "bins": bins,
        "sbc": {
            "pixels": {
                "indices": np.asarray(pixels, int).tolist(),
                "pvalue": pixel_ranks["pvalue"].tolist(),
                "pvalue_min": float(np.min(pixel_ranks["pvalue"])),
                "histogram": pixel_ranks["histogram"].tolist(),
                "expected": pixel_ranks["expected"].tolist(),
            }
        },
        "coverage": {
            "levels": levels,
            "pixels": pixel_curve.tolist(),
            "pixels_max_abs_error": float(np.max(np.abs(pixel_curve - np.asarray(levels)))),
        },
        "tarp": {"image": tarp_summary(stats["tarp_image"])},
    }
    chart = _chart(problem)
    if chart is not None and "pit_chart" in stats:
        names = list(chart[1])
        chart_ranks = pit_uniformity(stats["pit_chart"], bins)
        chart_curve = covered_from_pit(stats["pit_chart"]).mean(axis=1)  # (levels, n)
        out["sbc"]["chart"] = {
            "names": names,
            "pvalue": chart_ranks["pvalue"].tolist(),
            "statistic": chart_ranks["statistic"].tolist(),
            "histogram": chart_ranks["histogram"].tolist(),
            "expected": chart_ranks["expected"].tolist(),
        }
        out["coverage"]["chart"] = {
            name: chart_curve[:, i].tolist() for i, name in enumerate(names)
        }
        out["tarp"]["chart"] = tarp_summary(stats["tarp_chart"])
    return out


# --------------------------------------------------------------------------- the run


class CalibrationInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``calibrate``: ``trials_done`` of ``trials`` trials are finished and, when
    ``written`` is a folder, saved there (marked incomplete; the same call continues)."""

    def __init__(self, trials_done: int, trials: int, written: Path | None):
        super().__init__(f"interrupted after {trials_done} of {trials} trials")
        self.trials_done, self.trials, self.written = trials_done, trials, written


_STATS_FILE = "trials.npz"
_CONFIG_FILE = "config.json"


def _config(spec: problems.ProblemSpec, seed: int, batch: int, pixels: int) -> dict:
    """What a resumed run must share with the folder's trials."""
    return {
        "spec": json.loads(json.dumps(spec.to_dict())),
        "seed": seed,
        "batch": batch,
        "pixels": pixels,
        "precision": outputs.precision(),
    }


def _resume(path: Path, config: dict, overwrite: bool) -> dict:
    """Per-trial statistics saved in ``path`` by an earlier run with the same ``config``."""
    if overwrite or not path.is_dir() or not any(path.iterdir()):
        return {}
    manifest = outputs.read_manifest(path) or {}
    try:
        saved = json.loads((path / _CONFIG_FILE).read_text())
    except (OSError, ValueError):
        saved = None
    if manifest.get("command") != "calibrate" or saved != config:
        what = (
            "another bip output"
            if manifest.get("command") != "calibrate"
            else ("a calibration with other settings (spec, seed, batch, pixels or precision)")
        )
        raise FileExistsError(
            f"output folder {str(path)!r} holds {what}: use --overwrite to replace it, or "
            "another --out"
        )
    with np.load(path / _STATS_FILE) as data:
        return {k: data[k] for k in data.files}


def _save(path: Path, config, stats, summary, complete: bool) -> None:
    def fill(tmp: Path) -> None:
        outputs.atomic_write_json(tmp / _CONFIG_FILE, config)
        with open(tmp / _STATS_FILE, "wb") as f:
            np.savez(f, **stats)
        if summary is not None:
            outputs.atomic_write_json(tmp / "summary.json", summary)
        if complete:
            from bip import plots

            plots.save_figure(figure(summary), tmp / "calibration.png")

    status = "complete" if complete else "incomplete"
    done = int(stats["tarp_image"].shape[0]) if stats else 0
    content = outputs.manifest(
        "calibrate", status=status, spec=config["spec"]["name"], trials_done=done
    )
    outputs.write_folder(path, fill, content, overwrite=True)


def calibrate(
    spec: str | os.PathLike | dict | problems.ProblemSpec | problems.Problem,
    trials: int,
    out: str | os.PathLike | None = None,
    *,
    batch: int = 25,
    pixels: int = 16,
    bins: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict:
    """Calibrate a problem's posterior over ``trials`` repeated experiments.

    Each trial draws a truth (``draw_truths``), a measurement from the likelihood
    (``simulate_measurements``) and posterior draws with the spec's sampler; ``batch``
    trials run as ONE vectorised sampler run (``solve_trials``). The per-trial statistics
    (``trial_statistics``) are saved after every batch, atomically, into ``out`` (marked
    incomplete; ``bip.outputs``), so Ctrl-C keeps the finished batches and the same call
    continues from them; a complete run adds ``summary.json`` and ``calibration.png``.
    Trial ``k``'s truth, reference point and noise depend only on ``seed`` and ``k``.

    Args:
        spec: a problem spec (path, shipped name, dict, ``ProblemSpec``) or a built
            ``bip.problems.Problem``
            (its ``spec`` gives the sampler settings; its own truth and ``y`` are unused).
        trials: ``K``. out: output folder, or None to keep nothing on disk.
        batch: trials per sampler run. pixels: how many fixed pixels get SBC ranks (a seeded
            random choice). bins: rank-histogram bins (default ``default_bins``).
        seed: seed of the truths, measurements, chains and pixel choice.
        overwrite: start afresh in an ``out`` that holds a calibration (default: continue it).
        progress: a progress bar over trials. on_batch: called ``on_batch(done, trials)``
            after each saved batch.

    Returns:
        The summary (``summarize``), plus ``seconds`` and ``diverged_chains``.

    Raises:
        CalibrationInterrupted: on Ctrl-C, naming the trials finished (saved when ``out``).

    Example:
        >>> summary = bip.calibrate.calibrate("ct-phantom-16", 100, "runs/calibrate-ct")
        >>> summary["sbc"]["chart"]["pvalue"], summary["coverage"]["pixels"]
    """
    trials = _checks.integer("trials", trials)
    batch = _checks.integer("batch", batch)
    pixels = _checks.integer("pixels", pixels)
    seed = _checks.integer("seed", seed, minimum=0)
    path = None if out is None else outputs.check(out, overwrite=overwrite, resume=True)
    start = time.perf_counter()
    validated = spec.spec if isinstance(spec, problems.Problem) else problems.as_spec(spec)
    _check_spec(validated)
    config = _config(validated, seed, batch, pixels)
    stats = _resume(path, config, overwrite) if path is not None else {}
    problem = spec if isinstance(spec, problems.Problem) else problems.build(validated)
    size = math.prod(problem.event_shape)
    chosen = np.sort(np.random.default_rng(seed).choice(size, min(pixels, size), replace=False))
    key = jax.random.key(seed)
    k_truth, k_reference, k_noise, k_run = (jax.random.fold_in(key, i) for i in range(4))
    done = int(stats["tarp_image"].shape[0]) if stats else 0
    from tqdm.auto import tqdm

    bar = tqdm(total=trials, initial=min(done, trials), disable=not progress, unit="trial")
    try:
        while done < trials:
            count = min(batch, trials - done)
            truths = draw_truths(k_truth, problem, done, count)
            references = draw_truths(k_reference, problem, done, count)
            ys = simulate_measurements(_trial_keys(k_noise, done, count), problem, truths)
            draws, diverged = solve_trials(jax.random.fold_in(k_run, done), problem, ys)
            new = trial_statistics(problem, truths, draws, references, seed + 4 * done)
            new["num_draws"] = np.full(count, draws.shape[1])
            new["diverged"] = np.full(count, diverged)
            stats = {k: np.concatenate([stats[k], v]) if stats else v for k, v in new.items()}
            if path is not None:
                _save(path, config, stats, None, complete=False)
            done += count  # after the save: an interrupted save leaves the earlier trials
            bar.update(count)
            if on_batch is not None:
                on_batch(done, trials)
    except KeyboardInterrupt:
        raise CalibrationInterrupted(done, trials, path if done else None) from None
    finally:
        bar.close()
    first = {k: v[:trials] for k, v in stats.items()}
    summary = summarize(first, problem, int(first["num_draws"][0]), chosen, bins)
    summary["diverged_chains"] = int(np.sum(first["diverged"][::batch]))  # one count per batch
    summary["seconds"] = time.perf_counter() - start
    if path is not None:
        _save(path, config, stats, summary, complete=True)
    return summary
