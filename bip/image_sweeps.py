"""Rate-separation sweeps of image posteriors on a manifold with a known chart.

For each ``(alpha, sigma)`` cell, chains of the zero-error posterior burn in; then every
error size runs from there with the same noise (coupled chains: ``bip.chains.run(...,
shared_noise=num_chains)``), and the departure of the draws' chart coordinates from the
zero-error ones gives the critical error size ``eps*`` (``bip.sweeps``). ``bip robustness
SPEC`` runs ``image_problem_sweep``.

Example:
    >>> sweep = bip.image_sweeps.image_problem_sweep("problems/robustness-phantom.toml")
    >>> sweep.slopes()
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bip import _checks, chains, errors, metrics, posteriors, priors, samplers, sharding, sweeps
from bip.sweeps import critical_size, decimal_key

Array = jax.Array

__all__ = ["ImageSweep", "image_sweep", "image_problem_sweep"]


@dataclass
class ImageSweep:
    """Results of ``image_sweep``: one record per (alpha, sigma, size) and the critical sizes.

    ``eps_star[alpha][sigma]`` (decimal-string keys) is the smallest error size at which the
    energy distance of the standardised chart coordinates to the zero-error posterior reaches
    ``config["threshold"]``; ``slopes()`` fits ``log eps*`` against ``log sigma`` per alpha.
    """

    records: list[dict] = field(default_factory=list)
    eps_star: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def slopes(self) -> dict:
        return sweeps.slopes(self.eps_star)

    def ratio(self, sigma: float, alpha: float, reference_alpha: float = 0.0) -> float:
        """``eps*(alpha) / eps*(reference_alpha)`` at ``sigma``: the gain in tolerated error."""
        return (
            self.eps_star[decimal_key(alpha)][decimal_key(sigma)]
            / self.eps_star[decimal_key(reference_alpha)][decimal_key(sigma)]
        )

    def summary(self) -> dict:
        return {
            "eps_star": self.eps_star,
            "slope": self.slopes(),
            "threshold": self.config.get("threshold"),
            "config": self.config,
        }

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``results.json`` and ``summary.json`` atomically into ``out_dir``."""
        return sweeps.save_sweep(out_dir, self.records, self.summary())


def _run_coupled_cell(
    rng_key,
    base_prior,
    error,
    likelihood,
    x_init,
    sizes,
    *,
    beta,
    sigma,
    alpha,
    step_size,
    burn_steps,
    num_steps,
    num_snapshots,
    mesh=None,
) -> chains.Run:
    """The zero-error burn-in of ``x_init`` ``(num_chains, *event)``, then every error size of
    ``sizes`` (0 first) from there: ``num_snapshots`` kept draws over the second half of
    ``num_steps`` steps, chain ``j * num_chains + i`` of size ``sizes[j]``.

    All sizes share the per-chain noise (chain ``i`` of every size gets the same keys):
    synchronously coupled chains, so the difference between a size and ``eps = 0`` is the
    error's effect and not sampling noise."""
    k_burn, k_run = jax.random.split(rng_key)
    num_chains = x_init.shape[0]
    schedule = sweeps.cell_schedule(base_prior, error, likelihood, beta, sigma, alpha, step_size)
    burn = chains.run(
        k_burn,
        schedule,
        x_init,
        burn_steps,
        thin=burn_steps,
        keep_samples=False,
        chain_params=jnp.zeros(num_chains, x_init.dtype),
        on_divergence="ignore",
        progress=False,
        mesh=mesh,
    )
    sweeps.check_finite(burn, sigma, alpha, "lower c")
    x0 = jnp.tile(burn.final_state.position, (sizes.shape[0],) + (1,) * (x_init.ndim - 1))
    return sweeps.run_error_chains(
        k_run,
        schedule,
        x0,
        jnp.repeat(sizes, num_chains),
        num_steps,
        num_snapshots,
        shared_noise=num_chains,
        mesh=mesh,
    )


def image_sweep(
    prior: priors.ScorePrior,
    likelihood,
    manifold,
    error: errors.ScoreError,
    initial_positions: Array,
    *,
    sigmas: Sequence[float] = (0.1, 0.05),
    alphas: Sequence[float] = (0.0, 1.0),
    sizes: Sequence[float] | None = None,
    truth: Array | None = None,
    beta: float = 0.0,
    burn_in_time: float = 0.5,
    run_time: float = 1.0,
    c: float = 0.1,
    num_snapshots: int = 8,
    threshold: float = 0.02,
    metric: str = "mean_shift",
    denoise: bool = True,
    seed: int = 0,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    on_cell: Callable | None = None,
) -> ImageSweep:
    """Rate-separation sweep for an image posterior on a manifold with a known chart.

    For each ``(alpha, sigma)`` cell, ``num_chains = len(initial_positions)`` ULA chains of
    the zero-error posterior (drift ``sigma^alpha s - grad v``, step ``c * min(sigma^(2 -
    alpha), 1/L)``) run for ``burn_in_time``; then every error size runs from there for
    ``run_time`` with the same noise (coupled chains), and ``num_snapshots`` draws of the second
    half are kept. Their nearest chart points (``manifold.coordinate``, after one Tweedie step
    with ``denoise``) give the departure from the zero-error posterior: the shift of the mean
    chart coordinates in box units (``metric="mean_shift"``) or the energy distance of the
    standardised coordinates (``"energy"``); ``eps*`` is where it reaches ``threshold``.
    Expected (SCIENCE.md sections 4-5): ``eps*`` flat in sigma for ``alpha = 0``,
    ``~ sigma^-alpha`` for the maximum-entropy prior, as sigma -> 0. At finite sigma the
    tempered draws spread ``sigma^(1 - alpha/2)`` off the manifold, which also blurs what the
    likelihood sees (its noise grows by that spread through ``A``): the posterior on the
    manifold is broader at larger sigma, so the fitted slope of the max-entropy ``eps*`` is
    shallower than ``-alpha`` where that blur is comparable to the measurement noise.

    Args:
        prior: the score prior (e.g. ``bip.priors.exact(PhantomLaw(...))`` or a learned one).
        likelihood: a ``bip.likelihoods.Likelihood`` (or None for the prior alone).
        manifold: has ``coordinate(x) -> (..., n)`` and ``chart(u)`` (``PhantomManifold``).
        error: the injected error field (e.g. ``bip.errors.smooth_random_field``).
        initial_positions: ``(num_chains, *event)`` starts of the zero-error burn-in.
        sigmas, alphas, sizes: the grid (sizes ascending, > 0; default 12 from 0.3 to 3000).
        truth: ground truth image, for the PSNR of each posterior mean.
        beta: the error is ``size * sigma^beta * e(x)`` (``beta < 0``: an error that grows as
            sigma -> 0, like a learned score's; ``bip.profile`` measures it).
        burn_in_time, run_time: Langevin time of the burn-in and of the coupled runs.
        c: step-size constant. num_snapshots: kept draws per chain.
        metric: what departs from the zero-error posterior: ``"energy"``, the energy distance
            of the standardised chart coordinates (the whole law), or ``"mean_shift"``, the
            shift of the posterior mean of the chart coordinates in box units (the parameter
            ranges); the coupled chains make the latter nearly free of sampling noise.
        denoise: locate each draw on the manifold after one Tweedie step of the zero-error
            prior at the posterior's normal spread ``sigma^(1 - alpha/2)``
            (``bip.posteriors.denoise``): tempered draws sit that far off the manifold, so the
            nearest chart point of a raw draw mixes the on-manifold law with normal noise.
        threshold: tolerance of the metric (energy: 0.1, a mean shift of about 0.4 posterior
            standard deviations in one chart coordinate; mean_shift: e.g. 0.02, 2% of the
            parameter ranges). ``eps*`` interpolates the metric log-log between sizes.
        mesh: split the ``(len(sizes) + 1) * num_chains`` coupled chains over devices.
        on_cell: called as ``on_cell(sweep, cells_done, cells_total)`` after each cell but
            the last. Ctrl-C raises ``SweepInterrupted`` with the finished cells.

    Returns:
        An ``ImageSweep``; ``records`` hold per size the energy distance, the relative change
        of the posterior mean ``|m_eps - m_0| / |m_0|``, the PSNR of the mean and the coverage of
        the truth by the pixel-wise 90% intervals (with ``truth``), the mean distance of the draws
        to the manifold and the chart-coordinate mean shift in posterior stds.
    """
    for s in sigmas:
        _checks.positive("sigma", s)
    for a in alphas:
        _checks.alpha(a)
    _checks.positive("burn_in_time", burn_in_time)
    _checks.positive("run_time", run_time)
    _checks.positive("threshold", threshold)
    if metric not in ("energy", "mean_shift"):
        raise ValueError(f"metric must be 'energy' or 'mean_shift', got {metric!r}")
    sizes = np.geomspace(0.3, 3000.0, 12) if sizes is None else np.asarray(sizes, float)
    if sizes.ndim != 1 or np.any(sizes <= 0) or np.any(np.diff(sizes) <= 0):
        raise ValueError("sizes must be a 1-D ascending array of positive error sizes")
    x_init = jnp.asarray(initial_positions)
    event = tuple(prior.event_shape)
    if x_init.shape[1:] != event:
        raise ValueError(
            f"initial_positions must be (num_chains, *{event}), got {tuple(x_init.shape)}"
        )
    _checks.finite("initial_positions", x_init)
    num_chains = x_init.shape[0]
    num_snapshots = _checks.integer("num_snapshots", num_snapshots)
    all_sizes = np.concatenate([[0.0], sizes])
    sharding.check_divisible(
        all_sizes.size * num_chains, mesh, "chains per cell ((len(sizes) + 1) * num_chains)"
    )
    lipschitz = getattr(likelihood, "lipschitz", None) if likelihood is not None else None
    config = {
        "prior": prior.name,
        "error": error.name,
        "beta": float(beta),
        "sigmas": list(map(float, sigmas)),
        "alphas": list(map(float, alphas)),
        "sizes": list(map(float, sizes)),
        "num_chains": int(num_chains),
        "burn_in_time": burn_in_time,
        "run_time": run_time,
        "c": c,
        "num_snapshots": num_snapshots,
        "threshold": threshold,
        "seed": seed,
        "metric": metric,
        "denoise": bool(denoise),
    }
    sweep = ImageSweep(config=config)
    cells = [(a, s) for a in alphas for s in sigmas]
    key = jax.random.key(seed)
    coordinate = jax.jit(manifold.coordinate)
    with sweeps.CellLoop(sweep, cells, "image robustness sweep", progress, False, on_cell) as loop:
        for index, (alpha, sigma) in enumerate(cells):
            h = float(samplers.default_step_size(sigma, alpha, c=c, lipschitz=lipschitz))
            burn_steps = int(math.ceil(burn_in_time / h))
            num_steps = max(int(math.ceil(run_time / h)), 4 * num_snapshots)
            run = _run_coupled_cell(
                jax.random.fold_in(key, index),
                prior,
                error,
                likelihood,
                x_init,
                jnp.asarray(all_sizes),
                beta=float(beta),
                sigma=sigma,
                alpha=alpha,
                step_size=h,
                burn_steps=burn_steps,
                num_steps=num_steps,
                num_snapshots=num_snapshots,
                mesh=mesh,
            )
            sweeps.check_finite(run, sigma, alpha, f"lower c (now {c}) or the largest error size")
            snaps = run.samples  # ((S + 1) * N, K, *event), host memory
            first, spacing = sweeps.snapshot_plan(num_steps, num_snapshots)
            num_steps = first + spacing * num_snapshots  # none after the last snapshot
            per_size = snaps.reshape((all_sizes.size, -1) + event)  # (S + 1, N * K, *event)
            level = posteriors.spread(sigma, alpha)
            located = [
                posteriors.denoise(prior, jnp.asarray(d), level) if denoise else jnp.asarray(d)
                for d in per_size
            ]
            coords = np.stack([np.asarray(coordinate(d)) for d in located])
            lo, hi = (np.asarray(b, float) for b in manifold.bounds)
            z = (coords - lo) / (hi - lo)  # box units
            center, scale = z[0].mean(axis=0), z[0].std(axis=0) + 1e-12
            standard = (z - center) / scale
            means = per_size.mean(axis=1)
            norm0 = float(np.linalg.norm(means[0])) or 1.0
            distances = [
                float(
                    np.mean(
                        np.linalg.norm(
                            (d - np.asarray(manifold.chart(jnp.asarray(u)))).reshape(
                                d.shape[0], -1
                            ),
                            axis=-1,
                        )
                    )
                )
                for d, u in zip(per_size, coords, strict=True)
            ]
            ed = [metrics.energy_distance(standard[j], standard[0]) for j in range(all_sizes.size)]
            shift = [
                float(np.linalg.norm(z[j].mean(axis=0) - z[0].mean(axis=0)))
                for j in range(all_sizes.size)
            ]
            departure = np.asarray(ed if metric == "energy" else shift)
            eps = critical_size(sizes, departure[1:], threshold, log_values=True)
            sweep.eps_star.setdefault(decimal_key(alpha), {})[decimal_key(sigma)] = eps
            for j, size in enumerate(all_sizes):
                record = {
                    "sigma": float(sigma),
                    "alpha": float(alpha),
                    "error_size": float(size),
                    "energy_distance": ed[j],
                    "mean_shift_std": float(np.max(np.abs(standard[j].mean(axis=0)))),
                    "chart_mean_shift": shift[j],
                    "relative_mean_change": float(np.linalg.norm(means[j] - means[0]) / norm0),
                    "mean_distance_to_manifold": distances[j],
                    "chains": int(num_chains),
                    "steps": num_steps,
                    "burn_in_steps": burn_steps,
                    "step_size": h,
                }
                if truth is not None:
                    record["psnr"] = metrics.psnr(means[j], truth)
                    record["coverage_90"] = metrics.coverage(per_size[j], truth, 0.9)
                sweep.records.append(record)
            loop.finished(index)
    return sweep


def image_problem_sweep(
    spec_or_path, *, progress: bool = True, mesh=None, on_cell: Callable | None = None
) -> ImageSweep:
    """``image_sweep`` on a problem spec with a ``[robustness]`` table (``bip robustness SPEC``).

    The spec's data, operator, noise and prior give the posterior; the data must lie on a
    manifold with a known chart (phantoms), whose coordinates measure the departure. Chains
    start at the ground truth and burn in for ``burn_in_time``.

    Example:
        >>> sweep = bip.experiments.image_problem_sweep("problems/robustness-phantom.toml")
        >>> sweep.ratio(0.05, alpha=1.0)        # eps*(maxent) / eps*(generic) at sigma = 0.05
    """
    from bip import problems

    spec = problems.as_spec(spec_or_path)
    if spec.robustness is None:
        raise problems.SpecError(spec.origin, "", "", "no [robustness] table: nothing to sweep")
    problem = problems.build(spec)
    if problem.manifold is None or not hasattr(problem.manifold, "coordinate"):
        raise problems.SpecError(
            spec.origin,
            "data",
            "source",
            "bip robustness on images needs data on a manifold with a known chart ('phantom')",
        )
    rob = spec.robustness
    error = errors.smooth_random_field(
        jax.random.key(rob.error_seed),
        problem.event_shape,
        lengthscale=float(rob.lengthscale),
        smoothness=float(rob.smoothness),
        conservative=rob.error == "smooth",
    )
    x0 = jnp.broadcast_to(problem.truth, (rob.chains,) + problem.event_shape)
    sweep = image_sweep(
        problem.prior,
        problem.likelihood,
        problem.manifold,
        error,
        x0,
        sigmas=rob.sigmas,
        alphas=rob.alphas,
        sizes=np.geomspace(rob.size_min, rob.size_max, rob.num_sizes),
        truth=problem.truth,
        beta=float(rob.beta),
        burn_in_time=float(rob.burn_in_time),
        run_time=float(rob.run_time),
        c=float(rob.c),
        num_snapshots=rob.snapshots,
        threshold=float(rob.threshold),
        metric=rob.metric,
        seed=spec.sampler.seed,
        progress=progress,
        mesh=mesh,
        on_cell=on_cell,
    )
    sweep.config["spec"] = spec.to_dict()
    return sweep
