"""Robustness sweeps: score-error size x sigma x alpha, critical errors and their rates.

For a prior on the circle (alone or with a likelihood), inject an error ``eps * e(x)`` and
find, for each sigma and alpha, the critical size ``eps*(sigma)`` at which the law departs
from the zero-error law at the same sigma and alpha: the TV of 36-bin angle histograms to
the exact zero-error law rises by ``threshold`` (0.1) above its ``eps = 0`` value
(SCIENCE.md section 5). Expected: slope 0 of ``log eps*`` against ``log sigma`` for the
generic prior (alpha = 0) and ``-alpha`` for the maximum-entropy prior.

Two versions side by side: ``exact`` (stationary laws by quadrature, no sampling) and
``sampled`` (ULA chains started from the exact zero-error law; all error sizes run as
extra chains of ONE jitted scan, and sigma, alpha and the step count are traced values, so
the whole sweep compiles once).

Example:
    >>> sweep = bip.experiments.circle_sweep(sigmas=[0.3, 0.1], alphas=[0.0, 1.0],
    ...                                      sizes=jnp.geomspace(0.05, 50, 16))
    >>> sweep.summary()["slope"]
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

from bip import (
    _checks,
    errors,
    manifolds,
    metrics,
    outputs,
    posteriors,
    priors,
    samplers,
    sharding,
    targets,
)

Array = jax.Array

THRESHOLD = 0.1
NUM_BINS = 36


def critical_size(
    sizes: Sequence[float],
    rise: Sequence[float],
    threshold: float = THRESHOLD,
    log_values: bool = False,
) -> float:
    """Smallest size where ``rise`` reaches ``threshold``, interpolated in ``log size``.

    ``sizes`` ascending, ``rise[i]`` the TV increase at ``sizes[i]``; NaN if never reached.
    ``log_values=True`` interpolates ``log rise`` too (power laws, e.g. an energy distance
    ``~ size^2``, are then exact between grid points; needs ``rise > 0`` around the crossing).
    """
    sizes, rise = np.asarray(sizes, float), np.asarray(rise, float)
    above = np.flatnonzero(rise >= threshold)
    if above.size == 0:
        return float("nan")
    i = int(above[0])
    if i == 0:
        return float(sizes[0])
    x0, x1 = math.log(sizes[i - 1]), math.log(sizes[i])
    r0, r1, t = rise[i - 1], rise[i], threshold
    if log_values and r0 > 0:
        r0, r1, t = math.log(r0), math.log(r1), math.log(t)
    frac = (t - r0) / (r1 - r0) if r1 != r0 else 1.0
    return float(math.exp(x0 + frac * (x1 - x0)))


def fit_slope(sigmas: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of ``log values`` against ``log sigmas`` (NaN entries dropped)."""
    s, v = np.asarray(sigmas, float), np.asarray(values, float)
    keep = np.isfinite(v) & (v > 0)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(s[keep]), np.log(v[keep]), 1)[0])


def _key(value: float) -> str:
    """Decimal-string key for JSON: 1.5 -> "1.5", 0.05 -> "0.05"."""
    return repr(float(value))


@dataclass
class Sweep:
    """Results of a sweep: one record per run plus the critical sizes and slopes."""

    records: list[dict] = field(default_factory=list)
    eps_star: dict = field(default_factory=dict)  # mode -> alpha -> sigma -> eps*
    config: dict = field(default_factory=dict)

    def slopes(self, mode: str = "sampled") -> dict:
        return _slopes(self.eps_star.get(mode, {}))

    def summary(self) -> dict:
        """``summary.json`` content: eps* and slopes (sampled), and the exact-law versions."""
        primary = "sampled" if "sampled" in self.eps_star else "exact"
        return {
            "eps_star": self.eps_star.get(primary, {}),
            "slope": self.slopes(primary),
            "eps_star_exact": self.eps_star.get("exact", {}),
            "slope_exact": self.slopes("exact"),
            "threshold": THRESHOLD,
            "config": self.config,
        }

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``results.json`` and ``summary.json`` atomically into ``out_dir``."""
        return _save_sweep(out_dir, self.records, self.summary())


def _slopes(eps_star: dict) -> dict:
    """``{alpha: slope of log eps* against log sigma}`` from ``{alpha: {sigma: eps*}}``."""
    out = {}
    for a, per_sigma in eps_star.items():
        sig = sorted(per_sigma, key=float)
        out[a] = fit_slope([float(s) for s in sig], [per_sigma[s] for s in sig])
    return out


def _save_sweep(out_dir, records: list, summary: dict) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outputs.atomic_write_json(out / "results.json", records)
    outputs.atomic_write_json(out / "summary.json", summary)
    return out


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep. ``partial`` is the sweep of the cells finished so far (its
    ``config["complete"]`` is False and ``config["cells_done"]`` counts them), or None when
    no cell finished."""

    def __init__(self, partial, cells_done: int, cells_total: int):
        super().__init__(f"interrupted after {cells_done} of {cells_total} sweep cells")
        self.partial = partial
        self.cells_done = cells_done
        self.cells_total = cells_total


def _finished_cells(table: dict, done: set) -> dict:
    """``{alpha: {sigma: value}}`` restricted to the ``(alpha, sigma)`` keys in ``done``."""
    kept = {a: {s: v for s, v in per.items() if (a, s) in done} for a, per in table.items()}
    return {a: per for a, per in kept.items() if per}


class _CellLoop:
    """Context of a sweep's loop over its ``(alpha, sigma)`` cells: a progress bar (with
    ``progress``), ``on_cell(sweep, cells_done, cells_total)`` after every cell but the last,
    and Ctrl-C inside becomes ``SweepInterrupted`` with the cells marked ``finished``
    (``by_mode``: ``eps_star`` is keyed by mode first, as ``Sweep``'s)."""

    def __init__(self, sweep, cells: list, desc: str, progress: bool, by_mode: bool, on_cell):
        self.sweep, self.cells, self.by_mode, self.done = sweep, cells, by_mode, 0
        self.on_cell = on_cell
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(cells), desc=desc, unit="cell")

    def __enter__(self):
        return self

    def finished(self, index: int) -> None:
        self.done = index + 1
        if self.bar is not None:
            self.bar.update(1)
        if self.on_cell is not None and self.done < len(self.cells):
            self.on_cell(self.sweep, self.done, len(self.cells))

    def __exit__(self, kind, value, traceback):
        if self.bar is not None:
            self.bar.close()
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            outputs.SAVING.set()
            raise _interrupted(self.sweep, self.cells, self.done, self.by_mode) from None
        return False


def _interrupted(sweep, cells: list, num_done: int, by_mode: bool) -> SweepInterrupted:
    """The ``SweepInterrupted`` of a sweep stopped after its first ``num_done`` cells: records
    and critical sizes of a cell that was running are dropped."""
    if num_done == 0:
        return SweepInterrupted(None, 0, len(cells))
    done = {(_key(a), _key(s)) for a, s in cells[:num_done]}
    sweep.records = [r for r in sweep.records if (_key(r["alpha"]), _key(r["sigma"])) in done]
    if by_mode:
        sweep.eps_star = {m: _finished_cells(t, done) for m, t in sweep.eps_star.items()}
    else:
        sweep.eps_star = _finished_cells(sweep.eps_star, done)
    sweep.config.update(complete=False, cells_done=num_done)
    return SweepInterrupted(sweep, num_done, len(cells))


def _zero_error_start(rng_key, law: targets.AngularLaw, num: int) -> Array:
    """Points on the unit circle with angles drawn from ``law`` by inverse CDF."""
    u = jax.random.uniform(rng_key, (num,))
    cdf = np.concatenate([[0.0], law.cdf()])
    edges = -math.pi + np.arange(law.theta.size + 1) * (2 * math.pi / law.theta.size)
    theta = jnp.interp(u, jnp.asarray(cdf / cdf[-1]), jnp.asarray(edges))
    return jnp.stack([jnp.cos(theta), jnp.sin(theta)], -1)


def _make_sampler(base_prior, error, likelihood, num_snapshots: int, mesh=None):
    """One jitted function running all (size, chain) pairs of one (sigma, alpha) cell.

    With a ``mesh`` the (size, chain) axis is split over its devices (per-chain keys, so the
    result does not depend on the number of devices)."""
    kernel = samplers.build_kernel()

    def shard(tree, chain_axis=0):
        return sharding.constrain(tree, mesh, chain_axis)

    @jax.jit
    def run_cell(rng_key, x0, sizes, sigma, alpha, step, num_steps):
        def drift_for(size):
            target = priors.tempered(priors.with_error(base_prior, error, size), alpha)

            def fn(x):
                out = target.score(x, sigma)
                if likelihood is not None:
                    out = out - likelihood.grad_potential(x)
                return out

            return fn

        first = num_steps // 2
        spacing = jnp.maximum((num_steps - first) // num_snapshots, 1)

        def body(i, carry):
            x, snaps = carry
            keys = shard(jax.random.split(jax.random.fold_in(rng_key, i), x.shape[0]))
            x = jax.vmap(
                lambda k, xi, s: (
                    kernel(k, samplers.LangevinState(xi), drift_for(s), step)[0].position
                )
            )(keys, x, sizes)
            slot = (i + 1 - first) // spacing - 1
            take = (i + 1 - first > 0) & ((i + 1 - first) % spacing == 0) & (slot < num_snapshots)
            angles = jnp.arctan2(x[:, 1], x[:, 0])
            snaps = jax.lax.cond(
                take,
                lambda s: jax.lax.dynamic_update_index_in_dim(s, angles, slot, 0),
                lambda s: s,
                snaps,
            )
            return shard(x), shard(snaps, 1)

        snaps = shard(jnp.zeros((num_snapshots, x0.shape[0]), x0.dtype), 1)
        return jax.lax.fori_loop(0, num_steps, body, (shard(x0), snaps))

    return run_cell


def _make_exact(base_prior, error, potential, num_theta: int = 720, num_r: int = 200):
    """Jitted exact bin probabilities ``(sizes,) -> (sizes, 36)`` for one (sigma, alpha)."""

    @jax.jit
    def bins(sizes, sigma, alpha):
        w = sigma ** (1 - alpha / 2)
        lo, hi = jnp.maximum(0.0, 1.0 - 12 * w), 1.0 + 12 * w

        def one(size):
            corrupted = priors.with_error(base_prior, error, size)

            def log_pi(x):
                out = sigma**alpha * corrupted.logdensity(x, sigma)
                return out - potential(x) if potential is not None else out

            logd = targets.angular_log_marginal(log_pi, lo, hi, num_theta, num_r)
            p = jax.nn.softmax(logd)
            return p.reshape(NUM_BINS, -1).sum(axis=1)

        return jax.lax.map(one, sizes)

    return bins


def circle_sweep(
    sigmas: Sequence[float] = (0.3, 0.2, 0.1, 0.05),
    alphas: Sequence[float] = (0.0, 1.0, 1.5),
    sizes: Sequence[float] | None = None,
    *,
    kappa: float = 4.0,
    loc: float = math.pi,
    error: errors.ScoreError | None = None,
    observe: tuple[int, float, float] | None = None,
    num_chains: int = 2000,
    mixing_time: float = 1.5,
    c: float = 0.1,
    num_snapshots: int = 20,
    seed: int = 0,
    sample: bool = True,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    on_cell: Callable | None = None,
) -> Sweep:
    """Rate-separation sweep on the unit circle with a von Mises data law.

    Args:
        sigmas, alphas: the grid; every alpha in [0, 2), every sigma > 0.
        sizes: error sizes ``eps`` (ascending, first > 0); default 24 sizes from 0.03 to 200.
        kappa, loc: the von Mises data law.
        error: conservative error field (default ``angular_cosine(2)``, the ``cos 2 theta``
            potential of SCIENCE.md section 5).
        observe: ``(coordinate, value, noise_std)`` adds the likelihood "observe
            x[coordinate] = value with Gaussian noise noise_std"; None samples the prior alone.
        num_chains: chains per error size (and for eps = 0).
        mixing_time: Langevin time simulated per cell; steps = mixing_time / h with
            ``h = c * min(sigma^(2 - alpha), 1/L)``.
        num_snapshots: histogram draws pooled over the second half of each run.
        sample: also run the sampled version (else exact laws only).
        mesh: a ``jax.sharding.Mesh`` (e.g. ``bip.sharding.chain_mesh()``) to split the chains
            of each cell (``(len(sizes) + 1) * num_chains`` of them, which must be a multiple
            of ``mesh.size``) over its devices; the results do not depend on it.
        on_cell: called as ``on_cell(sweep, cells_done, cells_total)`` after each cell but
            the last, e.g. to save the finished cells (``bip robustness`` does).

    Ctrl-C raises ``SweepInterrupted`` whose ``partial`` holds the finished cells.
    """
    for s in sigmas:
        _checks.positive("sigma", s)
    for a in alphas:
        _checks.alpha(a)
    sizes = np.geomspace(0.03, 200.0, 24) if sizes is None else np.asarray(sizes, float)
    if sizes.ndim != 1 or np.any(sizes <= 0) or np.any(np.diff(sizes) <= 0):
        raise ValueError("sizes must be a 1-D ascending array of positive error sizes")
    num_chains = _checks.integer("num_chains", num_chains)
    if sample:
        sharding.check_divisible(
            (sizes.size + 1) * num_chains, mesh, "chains per cell ((len(sizes) + 1) * num_chains)"
        )
    error = error if error is not None else errors.angular_cosine(2.0)
    circle = manifolds.Circle()
    prior = priors.exact(manifolds.VonMises(circle, kappa=kappa, loc=loc))
    likelihood = None
    if observe is not None:
        from bip import likelihoods, operators

        coordinate, value, noise_std = observe
        likelihood = likelihoods.gaussian(
            operators.coordinate_projection(2, [int(coordinate)]),
            jnp.array([float(value)]),
            noise_std,
        )
    potential = likelihood.potential if likelihood is not None else None
    all_sizes = np.concatenate([[0.0], sizes])
    config = {
        "kappa": kappa,
        "loc": loc,
        "error": error.name,
        "observe": observe,
        "sigmas": list(map(float, sigmas)),
        "alphas": list(map(float, alphas)),
        "sizes": list(map(float, sizes)),
        "num_chains": num_chains,
        "mixing_time": mixing_time,
        "c": c,
        "seed": seed,
        "threshold": THRESHOLD,
        "bins": NUM_BINS,
    }
    sweep = Sweep(config=config)
    run_cell = _make_sampler(prior, error, likelihood, num_snapshots, mesh) if sample else None
    exact_bins = _make_exact(prior, error, potential)
    cells = [(a, s) for a in alphas for s in sigmas]
    key = jax.random.key(seed)
    with _CellLoop(sweep, cells, "robustness sweep", progress, True, on_cell) as loop:
        for index, (alpha, sigma) in enumerate(cells):
            exact = np.asarray(exact_bins(jnp.asarray(all_sizes), sigma, alpha))
            if not np.all(np.isfinite(exact)):
                raise FloatingPointError(f"exact law not finite at sigma={sigma}, alpha={alpha}")
            p0 = exact[0]
            tv_exact = [metrics.total_variation(q, p0) for q in exact]
            sweep.eps_star.setdefault("exact", {}).setdefault(_key(alpha), {})[_key(sigma)] = (
                critical_size(sizes, np.asarray(tv_exact[1:]))
            )
            tv_sampled = [float("nan")] * all_sizes.size
            distances = [float("nan")] * all_sizes.size
            num_steps = 0
            if sample:
                h = float(
                    samplers.default_step_size(
                        sigma, alpha, c=c, lipschitz=getattr(likelihood, "lipschitz", None)
                    )
                )
                # at least 10 steps between pooled snapshots in the second half of the run
                num_steps = max(int(math.ceil(mixing_time / h)), 20 * num_snapshots)
                k_start, k_run = jax.random.split(jax.random.fold_in(key, index))
                law0 = targets.stationary_angular_law(prior, sigma, alpha, potential, 720, 200)
                x0 = _zero_error_start(k_start, law0, all_sizes.size * num_chains)
                chain_sizes = jnp.repeat(jnp.asarray(all_sizes), num_chains)
                x0, chain_sizes = sharding.put((x0, chain_sizes), mesh)
                x, snaps = run_cell(k_run, x0, chain_sizes, sigma, alpha, h, num_steps)
                x, snaps = sharding.to_host(x), sharding.to_host(snaps)
                if not np.all(np.isfinite(x)):
                    raise FloatingPointError(
                        f"chains diverged in the sweep cell sigma={sigma}, alpha={alpha}: lower c "
                        f"(now {c})"
                    )
                for j in range(all_sizes.size):
                    sl = slice(j * num_chains, (j + 1) * num_chains)
                    tv_sampled[j] = metrics.total_variation(
                        metrics.angle_histogram(snaps[:, sl], NUM_BINS), p0
                    )
                    distances[j] = float(np.mean(np.abs(np.linalg.norm(x[sl], axis=-1) - 1.0)))
                rise = np.asarray(tv_sampled[1:]) - tv_sampled[0]
                sweep.eps_star.setdefault("sampled", {}).setdefault(_key(alpha), {})[
                    _key(sigma)
                ] = critical_size(sizes, rise)
            for j, size in enumerate(all_sizes):
                sweep.records.append(
                    {
                        "sigma": float(sigma),
                        "alpha": float(alpha),
                        "error_size": float(size),
                        "error_kind": error.name,
                        "tv": tv_sampled[j],
                        "tv_exact": tv_exact[j],
                        "mean_distance": distances[j],
                        "chains": num_chains if sample else 0,
                        "steps": num_steps,
                        "seed": seed,
                        "likelihood": None if observe is None else list(observe),
                    }
                )
            loop.finished(index)
    return sweep


# --------------------------------------------------------------------------- images


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
        return _slopes(self.eps_star)

    def ratio(self, sigma: float, alpha: float, reference_alpha: float = 0.0) -> float:
        """``eps*(alpha) / eps*(reference_alpha)`` at ``sigma``: the gain in tolerated error."""
        return (
            self.eps_star[_key(alpha)][_key(sigma)]
            / self.eps_star[_key(reference_alpha)][_key(sigma)]
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
        return _save_sweep(out_dir, self.records, self.summary())


def _make_coupled_cell(
    base_prior, error, likelihood, num_chains, num_snapshots, beta=0.0, mesh=None
):
    """One jitted function running the zero-error burn-in and then every error size.

    All sizes share the per-chain noise (chain ``j`` of every size gets the same keys):
    synchronously coupled chains, so the difference between a size and ``eps = 0`` is the
    error's effect and not sampling noise."""
    kernel = samplers.build_kernel()

    def shard(tree, chain_axis=0):
        return sharding.constrain(tree, mesh, chain_axis)

    def drift_for(size, sigma, alpha):
        target = priors.tempered(priors.with_error(base_prior, error, size, beta), alpha)

        def fn(x):
            out = target.score(x, sigma)
            if likelihood is not None:
                out = out - likelihood.grad_potential(x)
            return out

        return fn

    @jax.jit
    def run_cell(rng_key, x_init, sizes, sigma, alpha, step, burn_steps, num_steps):
        k_burn, k_run = jax.random.split(rng_key)
        num_sizes = sizes.shape[0]

        def burn(i, x):
            keys = jax.random.split(jax.random.fold_in(k_burn, i), num_chains)
            fn = drift_for(jnp.zeros((), x.dtype), sigma, alpha)
            return jax.vmap(lambda k, xi: kernel(k, samplers.LangevinState(xi), fn, step)[0])(
                keys, x
            ).position

        x0 = jax.lax.fori_loop(0, burn_steps, burn, x_init)
        x = shard(jnp.tile(x0, (num_sizes,) + (1,) * (x0.ndim - 1)))
        chain_sizes = shard(jnp.repeat(sizes, num_chains))
        first = num_steps // 2
        spacing = jnp.maximum((num_steps - first) // num_snapshots, 1)

        def body(i, carry):
            x, snaps = carry
            keys = jax.random.split(jax.random.fold_in(k_run, i), num_chains)
            keys = shard(jnp.tile(keys, num_sizes))
            x = jax.vmap(
                lambda k, xi, s: (
                    kernel(k, samplers.LangevinState(xi), drift_for(s, sigma, alpha), step)[
                        0
                    ].position
                )
            )(keys, x, chain_sizes)
            slot = (i + 1 - first) // spacing - 1
            take = (i + 1 - first > 0) & ((i + 1 - first) % spacing == 0) & (slot < num_snapshots)
            snaps = jax.lax.cond(
                take,
                lambda s: jax.lax.dynamic_update_index_in_dim(s, x, slot, 0),
                lambda s: s,
                snaps,
            )
            return shard(x), shard(snaps, 1)

        snaps = shard(jnp.zeros((num_snapshots,) + x.shape, x.dtype), 1)
        return jax.lax.fori_loop(0, num_steps, body, (x, snaps))

    return run_cell


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
    run_cell = _make_coupled_cell(
        prior, error, likelihood, num_chains, num_snapshots, float(beta), mesh
    )
    cells = [(a, s) for a in alphas for s in sigmas]
    key = jax.random.key(seed)
    coordinate = jax.jit(manifold.coordinate)
    with _CellLoop(sweep, cells, "image robustness sweep", progress, False, on_cell) as loop:
        for index, (alpha, sigma) in enumerate(cells):
            h = float(samplers.default_step_size(sigma, alpha, c=c, lipschitz=lipschitz))
            burn_steps = int(math.ceil(burn_in_time / h))
            num_steps = max(int(math.ceil(run_time / h)), 4 * num_snapshots)
            x, snaps = run_cell(
                jax.random.fold_in(key, index),
                sharding.put(x_init, mesh),
                jnp.asarray(all_sizes),
                sigma,
                alpha,
                h,
                burn_steps,
                num_steps,
            )
            snaps = sharding.to_host(snaps)  # (K, (S + 1) * N, *event)
            if not np.all(np.isfinite(snaps)):
                raise FloatingPointError(
                    f"chains diverged in the sweep cell sigma={sigma}, alpha={alpha}: lower c "
                    f"(now {c}) or the largest error size"
                )
            per_size = snaps.reshape((num_snapshots, all_sizes.size, num_chains) + event)
            per_size = np.swapaxes(per_size, 0, 1).reshape((all_sizes.size, -1) + event)
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
            sweep.eps_star.setdefault(_key(alpha), {})[_key(sigma)] = eps
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

    spec = problems.load(spec_or_path) if not isinstance(spec_or_path, dict) else spec_or_path
    origin = spec.get("_path") or "<spec>"
    if "robustness" not in spec:
        raise problems.SpecError(f"{origin}: no [robustness] table: nothing to sweep")
    problem = problems.build(spec)
    if problem.manifold is None or not hasattr(problem.manifold, "coordinate"):
        raise problems.SpecError(
            f"{origin}: bip robustness on images needs data on a manifold with a known chart "
            "(data.source = 'phantom')"
        )
    rob = spec["robustness"]
    error = errors.smooth_random_field(
        jax.random.key(rob["error_seed"]),
        problem.event_shape,
        lengthscale=float(rob["lengthscale"]),
        smoothness=float(rob["smoothness"]),
        conservative=rob["error"] == "smooth",
    )
    x0 = jnp.broadcast_to(problem.truth, (rob["chains"],) + problem.event_shape)
    sweep = image_sweep(
        problem.prior,
        problem.likelihood,
        problem.manifold,
        error,
        x0,
        sigmas=rob["sigmas"],
        alphas=rob["alphas"],
        sizes=np.geomspace(rob["size_min"], rob["size_max"], rob["num_sizes"]),
        truth=problem.truth,
        beta=float(rob["beta"]),
        burn_in_time=float(rob["burn_in_time"]),
        run_time=float(rob["run_time"]),
        c=float(rob["c"]),
        num_snapshots=rob["snapshots"],
        threshold=float(rob["threshold"]),
        metric=rob["metric"],
        seed=spec["sampler"]["seed"],
        progress=progress,
        mesh=mesh,
        on_cell=on_cell,
    )
    sweep.config["spec"] = {k: v for k, v in spec.items() if not k.startswith("_")}
    return sweep
