"""What the robustness sweeps share: critical sizes, slopes, the cell loop, their chains.

A sweep runs cells ``(alpha, sigma)``; in each, chains of the posterior with an injected
score error ``size * sigma^beta * e(x)`` run for every error size at once: one
``bip.chains.run`` whose schedule ``error_algorithm`` builds, per chain, the ULA step of the
drift ``posteriors.drift(priors.with_error(prior, error, size, beta), likelihood, ...)``
with the chain's size (``chain_params``). ``critical_size`` finds where a departure from the
zero-error law crosses a threshold, ``fit_slope`` fits ``log eps*`` against ``log sigma``.
``bip.experiments`` (circle) and ``bip.image_sweeps`` (images) build on these.

Example:
    >>> bip.sweeps.critical_size([0.1, 1.0, 10.0], [0.0, 0.05, 0.15])   # sqrt(10)
    3.1622776601683804
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from jax.tree_util import Partial

from bip import chains, outputs, posteriors, priors, samplers

Array = jax.Array

__all__ = ["THRESHOLD", "critical_size", "fit_slope", "SweepInterrupted", "error_algorithm"]

THRESHOLD = 0.1


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


def decimal_key(value: float) -> str:
    """Decimal-string key for JSON: 1.5 -> "1.5", 0.05 -> "0.05"."""
    return repr(float(value))


def slopes(eps_star: dict) -> dict:
    """``{alpha: slope of log eps* against log sigma}`` from ``{alpha: {sigma: eps*}}``."""
    out = {}
    for a, per_sigma in eps_star.items():
        sig = sorted(per_sigma, key=float)
        out[a] = fit_slope([float(s) for s in sig], [per_sigma[s] for s in sig])
    return out


def save_sweep(out_dir, records: list, summary: dict) -> Path:
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


class CellLoop:
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
    done = {(decimal_key(a), decimal_key(s)) for a, s in cells[:num_done]}
    sweep.records = [
        r for r in sweep.records if (decimal_key(r["alpha"]), decimal_key(r["sigma"])) in done
    ]
    if by_mode:
        sweep.eps_star = {m: _finished_cells(t, done) for m, t in sweep.eps_star.items()}
    else:
        sweep.eps_star = _finished_cells(sweep.eps_star, done)
    sweep.config.update(complete=False, cells_done=num_done)
    return SweepInterrupted(sweep, num_done, len(cells))


def error_algorithm(base_prior, error, likelihood, beta, sigma, alpha, step_size, step_index, size):
    """The ULA algorithm of one sweep chain with error size ``size``: the posterior drift of
    ``priors.with_error(base_prior, error, size, beta)`` at ``(sigma, alpha)``, step size
    ``step_size`` (the same at every ``step_index``). A schedule for ``bip.chains.run(...,
    chain_params=sizes)`` as ``Partial(error_algorithm, base_prior, error, likelihood, beta,
    sigma, alpha, step_size)``: its floats are traced, so every cell of a sweep shares one
    program.
    """
    del step_index
    corrupted = priors.with_error(base_prior, error, size, beta)
    drift = posteriors.drift(corrupted, likelihood, sigma=sigma, alpha=alpha)
    return samplers.ula(drift, step_size)


def snapshot_plan(num_steps: int, num_snapshots: int) -> tuple[int, int]:
    """``(burn_in, spacing)``: ``num_snapshots`` draws, ``spacing`` steps apart, pooled over the
    second half of ``num_steps`` steps (the first half is burn-in)."""
    first = num_steps // 2
    return first, max((num_steps - first) // num_snapshots, 1)


def cell_schedule(base_prior, error, likelihood, beta, sigma, alpha, step_size) -> Partial:
    """``error_algorithm`` with a cell's arguments bound (a pytree: floats traced)."""
    values = (float(beta), float(sigma), float(alpha), float(step_size))
    return Partial(error_algorithm, base_prior, error, likelihood, *values)


def run_error_chains(
    rng_key, schedule, x0, chain_sizes, num_steps: int, num_snapshots: int, **run_kwargs
) -> chains.Run:
    """``bip.chains.run`` of the chains of one sweep cell (``schedule`` from
    ``cell_schedule``): chain ``c`` has error size ``chain_sizes[c]``. ``num_snapshots``
    draws are kept over the second half of ``num_steps`` steps (``snapshot_plan``; steps
    after the last snapshot are not run). Divergence is left to the caller
    (``check_finite``)."""
    first, spacing = snapshot_plan(num_steps, num_snapshots)
    return chains.run(
        rng_key,
        schedule,
        x0,
        spacing * num_snapshots,
        burn_in=first,
        thin=spacing,
        chain_params=chain_sizes,
        on_divergence="ignore",
        progress=False,
        **run_kwargs,
    )


def check_finite(run: chains.Run, sigma: float, alpha: float, fix: str) -> None:
    """``FloatingPointError`` naming the cell and the diverged chains if any chain diverged."""
    if run.divergence.any:
        raise FloatingPointError(
            f"chains diverged in the sweep cell sigma={sigma}, alpha={alpha}: {fix} "
            f"({run.divergence.indices.size} of {run.divergence.num_chains} chains, first "
            f"{run.divergence.indices[:5].tolist()})"
        )
