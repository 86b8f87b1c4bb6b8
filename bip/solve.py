"""Run a canonical problem end to end and write its results atomically.

``solve(spec)`` builds the problem (``bip.problems``), samples the generic or maximum-entropy
posterior with many chains (annealed if the spec asks), and writes to ``out_dir``:

- ``samples.npz``: thinned posterior samples ``(draws, chains, *event)`` (float32,
  compressed), truth, observation, mean, std, and a ``metadata`` JSON string (the spec, bip and
  JAX versions, seed);
- ``report.json``: PSNR/SSIM of the posterior mean, coverage of the ground truth by the
  pixel-wise 90% credible intervals, distance to the manifold (when known), ESS and R-hat,
  diverged chains, the classical baselines (FBP, Tikhonov at its best weight) and timings;
- ``figure.png``: truth, measurement, mean, std and a few samples.

Everything is written into a temporary folder beside ``out_dir`` and renamed into place at
the end, so an interrupted run never leaves a folder that looks complete.

Example:
    >>> report = bip.solve.solve("problems/circle-toy.toml", "runs/circle-toy")
    >>> report["tv_to_exact_posterior"]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bip import metrics, outputs, posteriors, problems, samplers, targets

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
    s = problem.spec["sampler"]
    common = dict(
        alpha=problem.alpha,
        num_chains=s["chains"],
        num_steps=s["steps"],
        thin=s["thin"],
        burn_in=s["burn_in"],
        c=s["c"],
        progress=progress,
    )
    key = jax.random.key(s["seed"] + 1)
    k_init, key = jax.random.split(key)
    common["initial_positions"] = initial_positions(k_init, problem)
    if s["anneal_from"] > s["sigma"]:
        sigmas = samplers.geometric_sigmas(s["anneal_from"], s["sigma"], s["anneal_levels"])
        return posteriors.sample_annealed(
            key,
            problem.prior,
            problem.likelihood,
            sigmas=sigmas,
            steps_per_level=s["steps_per_level"],
            **common,
        )
    return posteriors.sample(
        key, problem.prior, problem.likelihood, sigma=s["sigma"], method=s["method"], **common
    )


def initial_positions(rng_key, problem: problems.Problem) -> jax.Array:
    """Chain starts ``(chains, *event)`` by ``[sampler] init``: ``"prior"`` draws from the
    known data law (exact priors; else falls back to noise), ``"noise"`` is ``N(0, s^2 I)``
    with ``s`` the first annealing level (or 1), ``"baseline"`` the Tikhonov estimate at its
    best weight plus that noise."""
    s = problem.spec["sampler"]
    shape = (s["chains"],) + problem.event_shape
    scale = max(s["anneal_from"], s["sigma"]) if s["anneal_from"] > 0 else 1.0
    noise = scale * jax.random.normal(rng_key, shape, problem.y.dtype)
    if s["init"] == "prior" and problem.law is not None and hasattr(problem.law, "sample"):
        return jnp.asarray(problem.law.sample(rng_key, (s["chains"],)), problem.y.dtype)
    if s["init"] == "baseline" and problem.operator.linear:
        weight = problem.baseline.get("tikhonov", {}).get("weight", 1e-2)
        return problems.tikhonov(problem.operator, problem.y, weight) + noise
    return noise


def _image_report(problem, samples: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict:
    report = {"mean_std": float(std.mean())}
    flat = samples.reshape((-1,) + mean.shape)
    if problem.truth is not None:
        truth = np.asarray(problem.truth, float)
        report.update(
            psnr=metrics.psnr(mean, truth),
            ssim=metrics.ssim(mean, truth),
            coverage_90=metrics.coverage(flat, truth, COVERAGE_LEVEL),
            truth_norm=float(np.linalg.norm(truth)),
        )
    if problem.manifold is not None:
        some = jnp.asarray(flat[:: max(1, flat.shape[0] // 64)])
        report["distance_to_manifold_mean"] = float(problem.manifold.distance(jnp.asarray(mean)))
        report["distance_to_manifold_samples"] = float(jnp.mean(problem.manifold.distance(some)))
    return report


def _denoised_report(problem, denoised: np.ndarray) -> dict:
    """PSNR of the mean of the Tweedie-denoised draws, and their distance to the manifold."""
    report = {}
    mean = denoised.mean(axis=(0, 1))
    if problem.truth is not None:
        report["psnr"] = metrics.psnr(mean, problem.truth)
    if problem.manifold is not None:
        flat = denoised.reshape((-1,) + mean.shape)
        some = jnp.asarray(flat[:: max(1, flat.shape[0] // 64)])
        report["distance_to_manifold_samples"] = float(jnp.mean(problem.manifold.distance(some)))
    return report


def _circle_report(problem, samples: np.ndarray) -> dict:
    s = problem.spec["sampler"]
    angles = np.arctan2(samples[..., 1], samples[..., 0])
    law = targets.stationary_angular_law(
        problem.prior, s["sigma"], problem.alpha, problem.likelihood.potential
    )
    return {
        "tv_to_exact_posterior": metrics.tv_to_law(angles, law),
        "mean_distance_to_circle": float(np.mean(np.abs(np.linalg.norm(samples, axis=-1) - 1))),
    }


def _diagnostics(samples: np.ndarray, run: samplers.Run) -> dict:
    flat = samples.reshape(samples.shape[:2] + (-1,))
    ess = metrics.effective_sample_size(flat) if samples.shape[0] >= 4 else np.full(1, np.nan)
    rhat = metrics.split_rhat(flat) if samples.shape[0] >= 4 else np.full(1, np.nan)
    rhat_max, rhat_median = float(np.nanmax(rhat)), float(np.nanmedian(rhat))
    return {
        "ess_min": float(np.nanmin(ess)),
        "ess_median": float(np.nanmedian(ess)),
        "rhat_max": rhat_max,
        "rhat_median": rhat_median,
        "mixing": metrics.mixing_note(rhat_max, rhat_median, samples.shape[0]),
        "diverged_chains": int(np.sum(np.asarray(run.diverged))),
        "divergence": str(run.divergence),
    }


def _figure(problem, samples, arrays: dict, path: Path) -> None:
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
    else:
        panels = [("truth", truth)] if truth is not None else []
        panels += [
            ("measurement", np.asarray(problem.y)),
            ("posterior mean", arrays["mean"]),
            ("posterior std", arrays["std"]),
        ]
        if "mean_denoised" in arrays:
            panels.append(("denoised mean", arrays["mean_denoised"]))
        panels += [(f"sample {i}", samples[-1, i]) for i in range(min(3, samples.shape[1]))]
        fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.6))
        for ax, (title, img) in zip(axes, panels, strict=True):
            shape = tuple(problem.event_shape)
            ax.imshow(img, cmap="gray", aspect="auto" if img.shape != shape else "equal")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
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


def event_shape(spec: dict) -> tuple[int, ...]:
    """The shape of one draw of a validated spec's posterior, without building the problem
    (for the size check before anything is computed)."""
    source = spec["prior"]["source"]
    if source != "exact":
        from bip import networks

        return tuple(networks.read_card(networks._resolve_prior_dir(source))["event_shape"])
    data = spec["data"]
    if data["source"] == "circle":
        return (2,)
    if data["source"] == "file" and data["path"]:
        path = problems._spec_file(spec, "path")
        if path.is_file():
            return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
    if data["source"] == "faces":
        from bip import images

        return tuple(images.faces().shape[1:])
    return (data["size"], data["size"])


def check_size(spec: dict) -> None:
    """Refuse a spec whose kept draws (chains x steps // thin x event) do not fit in memory
    (``bip.samplers.check_memory``: ``MemoryBudgetError`` with the estimate and the fixes)."""
    s = spec["sampler"]
    try:
        samplers.check_memory(
            s["chains"], s["steps"] // s["thin"], event_shape(spec), jnp.result_type(float)
        )
    except samplers.MemoryBudgetError as err:
        origin = spec.get("_path") or spec["name"]
        raise samplers.MemoryBudgetError(
            f"{origin}: {err}; in the spec: a larger sampler.thin (now {s['thin']}), fewer "
            f"sampler.chains (now {s['chains']}) or sampler.steps (now {s['steps']})"
        ) from None


def _write(out: Path, spec: dict, problem, samples, arrays, report, overwrite, status) -> Path:
    """Write ``samples.npz``, ``report.json`` (and for a complete run ``figure.png``) into
    ``out`` atomically, marked with ``status`` (``bip.outputs``)."""

    def fill(tmp: Path) -> None:
        metadata = {
            "spec": {k: v for k, v in spec.items() if not k.startswith("_")},
            "spec_path": spec.get("_path"),
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
        if status == "complete":
            _figure(problem, samples, arrays, tmp / "figure.png")

    content = outputs.manifest("solve", status=status, spec=spec.get("_path") or spec["name"])
    return outputs.write_folder(out, fill, content, overwrite=overwrite, legacy=LEGACY)


def _interrupted(stop, spec, problem, out, overwrite, start) -> SolveInterrupted:
    """Keep what an interrupted run sampled: its draws and a short report, marked incomplete;
    nothing when no draw was kept yet (or there is no ``out``)."""
    outputs.SAVING.set()
    total = spec["sampler"]["steps"]  # after burn-in, as Run.steps_done counts
    run = stop.partial
    if run is None:
        return SolveInterrupted(0, total, None)
    samples = np.asarray(run.samples)
    if out is None or samples.shape[0] == 0:
        return SolveInterrupted(run.steps_done, total, None)
    report = {
        "name": spec["name"],
        "complete": False,
        "steps_done": int(run.steps_done),
        "steps": total,
        "draws": int(samples.shape[0]),
        "seconds": time.perf_counter() - start,
        "precision": outputs.precision(),
    }
    arrays = {"mean": samples.mean(axis=(0, 1)), "std": samples.std(axis=(0, 1))}
    written = _write(out, spec, problem, samples, arrays, report, overwrite, "incomplete")
    return SolveInterrupted(run.steps_done, total, written)


def solve(spec_or_path, out_dir=None, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Solve a problem spec (a path or a validated dict); return the report dict.

    With ``out_dir`` the results are written there atomically and marked as bip's
    (``bip.outputs``). Before anything is computed, the output location is checked
    (``bip.outputs.check``: an existing bip output folder needs ``overwrite=True``, a folder
    bip did not write is never replaced) and so is the memory the kept draws need
    (``check_size``).

    Ctrl-C while sampling raises ``SolveInterrupted`` after writing the draws sampled so far
    to ``out_dir``, marked incomplete (``report.json`` has ``"complete": false``).
    """
    spec = problems.load(spec_or_path) if not isinstance(spec_or_path, dict) else spec_or_path
    out = None if out_dir is None else outputs.check(out_dir, overwrite=overwrite, legacy=LEGACY)
    check_size(spec)
    start = time.perf_counter()
    problem = problems.build(spec)
    try:
        run = _sample(problem, progress)
    except samplers.Interrupted as stop:
        raise _interrupted(stop, spec, problem, out, overwrite, start) from None
    elapsed = time.perf_counter() - start
    samples = np.asarray(run.healthy_samples if run.divergence.any else run.samples)
    mean, std = samples.mean(axis=(0, 1)), samples.std(axis=(0, 1))
    report = {
        "name": spec["name"],
        "complete": True,
        "seconds": elapsed,
        "precision": outputs.precision(),
        "alpha": problem.alpha,
        "prior": problem.prior.name,
        "sigma": spec["sampler"]["sigma"],
    }
    arrays = {"mean": mean, "std": std}
    if len(problem.event_shape) == 1:
        report.update(_circle_report(problem, samples))
    else:
        report.update(_image_report(problem, samples, mean, std))
        level = posteriors.spread(spec["sampler"]["sigma"], problem.alpha)
        denoised = np.asarray(posteriors.denoise(problem.prior, jnp.asarray(samples), level))
        arrays["mean_denoised"] = denoised.mean(axis=(0, 1))
        report["denoised"] = {"level": level, **_denoised_report(problem, denoised)}
        report["baselines"] = problem.baseline
    report.update(_diagnostics(samples, run))
    if out is not None:
        _write(out, spec, problem, samples, arrays, report, overwrite, "complete")
    return report
