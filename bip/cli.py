"""The ``bip`` command line: canonical problems and experiments on shipped defaults.

    bip solve SPEC [--out DIR] [--overwrite]
    bip calibrate SPEC --trials K [--out DIR] [--overwrite]   (SBC, coverage, TARP over K trials)
    bip robustness [--out DIR] [--observe COORD VALUE NOISE] [--full | --fast] [--overwrite]
    bip robustness SPEC [--out DIR] [--overwrite]   (images: a spec with a [robustness] table)
    bip train RECIPE --out DIR
    bip check SPEC [--out DIR] [--overwrite]   (exact-chart problems: against the exact posterior)

Global options (before or after the command): ``--float32`` (default float64),
``--no-compile-cache``; ``bip --version``. Run ``bip COMMAND --help`` for the options.

Every run prints its precision. Output folders are checked before anything is computed and
marked as bip's (``bip.outputs``). Ctrl-C stops a run within seconds: ``bip solve`` keeps the
draws sampled so far (marked incomplete), ``bip robustness`` the finished sweep cells,
``bip train`` its checkpoint; each exits 130 with one line. XLA's compiled programs are cached
in ``$XDG_CACHE_HOME/bip/jax`` (default ``~/.cache/bip/jax``), so a repeated run skips
compilation; ``--no-compile-cache`` or ``BIP_NO_COMPILE_CACHE=1`` turns that off.

JAX is imported only once a command runs, so ``bip --help`` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from bip import __version__, outputs

NO_CACHE_ENV = "BIP_NO_COMPILE_CACHE"
INTERRUPT_GRACE_S = 6.0
"""After Ctrl-C, a run has this long to start saving what it has before the process exits 130
anyway: Python sees the signal only between compiled calls (not while XLA compiles), and a
sampler stops between chunks of about a second."""


def compile_cache_dir() -> Path:
    """Where the CLI keeps XLA's persistent compilation cache: ``$XDG_CACHE_HOME/bip/jax``,
    default ``~/.cache/bip/jax``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "bip" / "jax"


def _enable_compile_cache(disabled: bool) -> None:
    """Turn on JAX's persistent compilation cache in ``compile_cache_dir()``, unless disabled
    or already configured (e.g. by ``JAX_COMPILATION_CACHE_DIR``)."""
    import jax

    if disabled or os.environ.get(NO_CACHE_ENV, "") not in ("", "0"):
        jax.config.update("jax_enable_compilation_cache", False)
        return
    if jax.config.jax_compilation_cache_dir:
        return
    path = compile_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # no writable cache folder: compile every time
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class _InterruptWatch:
    """Ctrl-C while Python waits in compiled code (e.g. while XLA compiles): Python handles a
    signal only between bytecodes, and a chunked sampler stops only between chunks. A thread
    woken by the signal (``signal.set_wakeup_fd``) exits 130 with one line unless, within
    ``grace`` s, the run has started saving what it has (``bip.outputs.SAVING``) or ended."""

    def __init__(self, command: str, grace: float = INTERRUPT_GRACE_S):
        self.command, self.grace, self.saving = command, grace, outputs.SAVING
        self.note = ""  # what is already saved, for the line at a forced exit
        self.saving.clear()
        self._read, self._write = socket.socketpair()
        self._write.setblocking(False)
        self._previous = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            try:
                data = self._read.recv(1)
            except OSError:
                return
            if not data:
                return
            if data[0] == signal.SIGINT and not self.saving.wait(self.grace):
                line = f"bip {self.command}: interrupted{self.note}"
                print(line, file=sys.stderr, flush=True)
                os._exit(130)

    def close(self) -> None:
        self.saving.set()  # the run has ended: nothing left to cut short
        signal.set_wakeup_fd(self._previous)
        self._write.close()
        self._read.close()


def _out(args: argparse.Namespace, default) -> str:
    """``--out``, or the default folder when it is not given (an empty ``--out ""`` is refused
    by ``bip.outputs.check``, not replaced by the default)."""
    return default if args.out is None else args.out


def _announce(args: argparse.Namespace, what: str, out) -> None:
    """The first line of every run: what, where to, and in which precision."""
    precision = outputs.precision()
    hint = " (--float32 for single precision)" if precision == "float64" else ""
    print(f"bip {args.command} {what} -> {out}: {precision}{hint}", flush=True)


# --------------------------------------------------------------------------- robustness


_SWEEP_LEGACY = outputs.holds_exactly("results.json", "summary.json", "robustness.png")
"""A sweep folder written before bip marked its outputs."""


def _image_robustness(args: argparse.Namespace) -> int:
    from bip import experiments, plots

    default = Path("runs") / f"robustness-{Path(args.spec).stem}"
    out = outputs.check(_out(args, default), overwrite=args.overwrite, legacy=_SWEEP_LEGACY)
    _announce(args, args.spec, out)
    start = time.perf_counter()
    try:
        sweep = experiments.image_problem_sweep(
            args.spec, progress=not args.no_progress, on_cell=_save_finished_cells(out)
        )
    except experiments.SweepInterrupted as stop:
        return _robustness_interrupted(stop, out)
    _save_sweep(sweep, out, plots.image_robustness)
    print(
        f"bip robustness {args.spec}: {len(sweep.records)} runs in "
        f"{time.perf_counter() - start:.0f} s"
    )
    print(
        f"error: {sweep.config['error']}, beta = {sweep.config['beta']:g}; "
        f"departure: {sweep.config['metric']} >= {sweep.config['threshold']:g}"
    )
    slopes = sweep.slopes()
    print(f"{'alpha':>6} {'slope':>8}   eps* by sigma")
    for alpha, per_sigma in sweep.eps_star.items():
        cells = "  ".join(f"{s}: {e:.3g}" for s, e in per_sigma.items())
        print(f"{alpha:>6} {slopes[alpha]:8.3f}   {cells}")
    alphas = sorted(sweep.eps_star, key=float)
    if "0.0" in sweep.eps_star:
        for alpha in alphas[1:]:
            for sigma in sweep.eps_star[alpha]:
                ratio = sweep.eps_star[alpha][sigma] / sweep.eps_star["0.0"][sigma]
                print(f"eps*(alpha={alpha}) / eps*(alpha=0) at sigma={sigma}: {ratio:.3g}")
    print(f"expected slopes: 0 (alpha = 0) and -alpha; results in {out.resolve()}")
    return 0


def _save_sweep(sweep, out: Path, figure, complete: bool = True) -> None:
    """``results.json``, ``summary.json`` (and, when complete, ``robustness.png``) into
    ``out``, atomically and marked (``bip.outputs``). ``out`` was checked before the sweep
    (``--overwrite``), and the sweep's own saves of its finished cells replace each other."""
    from bip import plots

    def fill(tmp: Path) -> None:
        sweep.save(tmp)
        if complete:
            plots.save_figure(figure(sweep), tmp / "robustness.png")

    status = "complete" if complete else "incomplete"
    content = outputs.manifest("robustness", status=status)
    outputs.write_folder(out, fill, content, overwrite=True, legacy=_SWEEP_LEGACY)


def _save_finished_cells(out: Path):
    """A sweep's ``on_cell``: save the cells finished so far, marked incomplete, so that even
    a forced exit (Ctrl-C in the middle of a long cell) leaves them."""

    def save(sweep, cells_done: int, cells_total: int) -> None:
        config = {**sweep.config, "complete": False, "cells_done": cells_done}
        _save_sweep(dataclasses.replace(sweep, config=config), out, None, complete=False)
        if _WATCH[0] is not None:
            _WATCH[0].note = f"; {cells_done} of {cells_total} sweep cells in {out} (incomplete)"

    return save


def _robustness_interrupted(stop, out: Path) -> int:
    """Ctrl-C during a sweep: keep the finished cells (marked incomplete), one line, 130."""
    done = f"interrupted after {stop.cells_done} of {stop.cells_total} sweep cells"
    if stop.partial is None:
        print(f"bip robustness: {done}; nothing written", file=sys.stderr)
        return 130
    _save_sweep(stop.partial, out, None, complete=False)
    print(f"bip robustness: {done}; partial results in {out} (marked incomplete)", file=sys.stderr)
    return 130


def _robustness(args: argparse.Namespace) -> int:
    if args.spec is not None:
        return _image_robustness(args)
    from bip import experiments, plots

    out = outputs.check(
        _out(args, "runs/robustness"), overwrite=args.overwrite, legacy=_SWEEP_LEGACY
    )
    _announce(args, "(circle)", out)
    sigmas = [0.3, 0.2, 0.1, 0.05] + ([0.02] if args.full else [])
    observe = tuple(args.observe) if args.observe is not None else None
    if observe is not None:
        observe = (int(observe[0]), float(observe[1]), float(observe[2]))
    chains = args.chains if args.chains else (500 if args.fast else 2000)
    start = time.perf_counter()
    try:
        sweep = experiments.circle_sweep(
            sigmas=sigmas,
            alphas=args.alphas,
            observe=observe,
            num_chains=chains,
            seed=args.seed,
            sample=not args.exact_only,
            progress=not args.no_progress,
            on_cell=_save_finished_cells(out),
        )
    except experiments.SweepInterrupted as stop:
        return _robustness_interrupted(stop, out)
    _save_sweep(sweep, out, plots.robustness)
    summary = sweep.summary()
    print(f"bip robustness: {len(sweep.records)} runs in {time.perf_counter() - start:.0f} s")
    what = (
        "prior alone"
        if observe is None
        else f"posterior, observe x[{observe[0]}]={observe[1]} (noise {observe[2]})"
    )
    print(f"circle, von Mises kappa=4, theta0=pi, error cos(2 theta); {what}")
    print(f"{'alpha':>6} {'slope':>8} {'exact':>8}   eps* by sigma (sampled / exact)")
    for alpha in summary["eps_star_exact"]:
        slope = summary["slope"].get(alpha, float("nan"))
        cells = "  ".join(
            f"{s}: {summary['eps_star'].get(alpha, {}).get(s, float('nan')):.3g}/{e:.3g}"
            for s, e in summary["eps_star_exact"][alpha].items()
        )
        print(f"{alpha:>6} {slope:8.3f} {summary['slope_exact'][alpha]:8.3f}   {cells}")
    print(f"expected slopes: 0 (alpha = 0) and -alpha; results in {out.resolve()}")
    return 0


def _add_robustness(subparsers, common) -> None:
    p = subparsers.add_parser(
        "robustness",
        parents=[common],
        help="rate-separation sweep (error size x sigma x alpha): circle, or an image SPEC",
        description=(
            "Sweep the score-error size, sigma and alpha; find the critical error eps*(sigma) "
            "and fit its log-log slope per alpha. Without SPEC: the circle prior (von Mises "
            "kappa=4, theta0=pi, error cos 2theta), alone or with a likelihood. With SPEC: "
            "the image posterior of a problem spec with a [robustness] table (e.g. "
            "problems/robustness-phantom.toml). Writes results.json, summary.json and "
            "robustness.png. Ctrl-C keeps the finished cells (marked incomplete)."
        ),
    )
    p.add_argument(
        "spec",
        nargs="?",
        default=None,
        help="image problem spec (optional): a TOML file or a shipped name (robustness-phantom)",
    )
    p.add_argument("--out", default=None, help="output folder (default runs/robustness[-SPEC])")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an output folder bip wrote before"
    )
    p.add_argument(
        "--observe",
        nargs=3,
        metavar=("COORD", "VALUE", "NOISE"),
        help="circle: add the likelihood, observe x[COORD] = VALUE with Gaussian noise NOISE",
    )
    p.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=[0.0, 1.0, 1.5],
        help="circle: tempering exponents alpha in [0, 2) (default 0 1 1.5)",
    )
    p.add_argument("--full", action="store_true", help="circle: add sigma = 0.02 (slower)")
    p.add_argument("--fast", action="store_true", help="circle: 500 chains per cell (noisier)")
    p.add_argument(
        "--chains", type=int, default=None, help="circle: chains per error size (default 2000)"
    )
    p.add_argument(
        "--exact-only", action="store_true", help="circle: quadrature laws only, no sampling"
    )
    p.add_argument("--seed", type=int, default=0, help="circle: random seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_robustness)


# --------------------------------------------------------------------------- calibrate


def _calibrate(args: argparse.Namespace) -> int:
    from bip import calibrate, calibration

    out = _out(args, str(Path("runs") / f"calibrate-{Path(args.spec).stem}"))
    _announce(args, f"{args.spec} ({args.trials} trials)", out)

    def saved(done: int, total: int) -> None:
        if _WATCH[0] is not None:
            _WATCH[0].note = f"; {done} of {total} trials in {out} (run again to continue)"

    try:
        s = calibrate.calibrate(
            args.spec,
            args.trials,
            out,
            batch=args.batch,
            pixels=args.pixels,
            bins=args.bins,
            seed=args.seed,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            on_batch=saved,
        )
    except calibrate.CalibrationInterrupted as stop:
        where = "nothing written"
        if stop.written is not None:
            where = f"finished trials in {stop.written} (the same command continues)"
        print(
            f"bip calibrate: interrupted after {stop.trials_done} of {stop.trials} trials; {where}",
            file=sys.stderr,
        )
        return 130
    print(
        f"bip calibrate {args.spec}: {s['trials']} trials x {s['draws_per_trial']} draws, "
        f"{s['kind']} posterior, in {s['seconds']:.0f} s -> {Path(out).resolve()}"
    )
    for line in calibration.report_lines(s):
        print(f"  {line}")
    return 0


def _add_calibrate(subparsers, common) -> None:
    p = subparsers.add_parser(
        "calibrate",
        parents=[common],
        help="calibration over repeated experiments: SBC ranks, coverage curve, TARP",
        description=(
            "Draw K truths from the spec's data law (uniform on the manifold for a "
            "maximum-entropy prior) and measurements from its likelihood, sample every "
            "trial's posterior with the spec's sampler (a batch of trials per vectorised run) "
            "and report simulation-based-calibration rank histograms (chart coordinates and "
            "fixed pixels), the coverage curve and TARP (bip.calibrate). Writes summary.json, "
            "calibration.png and the per-trial statistics to --out. Ctrl-C keeps the finished "
            "batches; the same command continues them (a larger --trials extends a run)."
        ),
    )
    p.add_argument("spec", help="problem spec: a TOML file or a shipped name (ct-phantom-8, ...)")
    p.add_argument("--trials", type=int, required=True, help="number K of repeated experiments")
    p.add_argument("--out", default=None, help="output folder (default runs/calibrate-<spec>)")
    p.add_argument(
        "--overwrite", action="store_true", help="start afresh in a folder bip wrote before"
    )
    p.add_argument("--batch", type=int, default=25, help="trials per sampler run (default 25)")
    p.add_argument(
        "--pixels", type=int, default=16, help="fixed pixels with SBC ranks (default 16)"
    )
    p.add_argument("--bins", type=int, default=None, help="rank-histogram bins (default K / 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_calibrate)


# --------------------------------------------------------------------------- solve


def _solve(args: argparse.Namespace) -> int:
    from bip import solve

    out = _out(args, str(Path("runs") / Path(args.spec).stem))
    _announce(args, args.spec, out)
    if _WATCH[0] is not None:  # solve writes only at the end, or what it sampled on Ctrl-C
        _WATCH[0].note = "; nothing written"
    try:
        report = solve.solve(
            args.spec, out, overwrite=args.overwrite, progress=not args.no_progress
        )
    except solve.SolveInterrupted as stop:
        where = (
            f"partial results in {stop.written} (marked incomplete)"
            if stop.written is not None
            else "nothing written"
        )
        print(
            f"bip solve: interrupted after {stop.steps_done} of {stop.num_steps} steps; {where}",
            file=sys.stderr,
        )
        return 130
    print(f"bip solve {args.spec}: done in {report['seconds']:.1f} s -> {Path(out).resolve()}")
    for key, value in report.items():
        if key not in ("name", "divergence"):
            print(f"  {key}: {value}")
    print(f"  {report['divergence']}")
    return 0


def _add_solve(subparsers, common) -> None:
    p = subparsers.add_parser(
        "solve",
        parents=[common],
        help="solve a canonical problem from a spec in problems/",
        description=(
            "Run a problem spec (TOML): sample the posterior, write samples.npz, report.json "
            "and figure.png to --out (default runs/<spec name>), atomically. Ctrl-C keeps the "
            "draws sampled so far, marked incomplete."
        ),
    )
    p.add_argument(
        "spec", help="problem spec: a TOML file or a shipped name (ct-phantom-16, circle-toy, ...)"
    )
    p.add_argument("--out", default=None, help="output folder (default runs/<spec name>)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an output folder bip wrote before"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_solve)


# --------------------------------------------------------------------------- check


def _check(args: argparse.Namespace) -> int:
    from bip import check

    out = _out(args, str(Path("runs") / f"check-{Path(args.spec).stem}"))
    _announce(args, args.spec, out)
    result = check.check(
        args.spec,
        out,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        reference_draws=args.reference_draws,
        sigmas=args.sigmas,
    )
    print(f"bip check {args.spec}: done in {result['seconds']:.0f} s -> {Path(out).resolve()}")
    if result["kind"] == "generic":
        ed, px = result["energy_distance"], result["pixels"]
        print(
            f"  energy distance {ed['energy_distance']:.4g}, floor {ed['floor']:.4g}: ratio "
            f"{ed['ratio']:.2f} (1 is agreement) over {ed['num_draws']} draws"
        )
        if ed["note"] != "ok":
            print(f"  note: {ed['note']}")
        print(
            f"  pixel means within 3 Monte Carlo SE: {px['fraction_within_3se']:.3f} (max |z| "
            f"{px['max_abs_z']:.2f}); median pixel std ratio {px['std_ratio_median']:.3f}"
        )
        c = result["coordinates"]
        for i, (z, r, ks, f) in enumerate(
            zip(c["mean_z"], c["std_ratio"], c["ks"], c["ks_floor"], strict=True)
        ):
            print(
                f"  chart coordinate {i}: mean z {z:+.2f}, std ratio {r:.3f}, "
                f"KS {ks:.3f} (floor {f:.3f})"
            )
    else:
        print("  chart-coordinate energy distance to the sigma -> 0 maximum-entropy limit:")
        for row in result["ladder"]:
            print(
                f"  sigma {row['sigma']:<8g} {row['energy_distance']:.4g} "
                f"(floor {row['floor']:.2g}), largest mean shift "
                f"{row['max_mean_shift_in_std']:.2f} limit stds"
            )
        print(f"  monotone: {result['monotone']}")
    return 0


def _add_check(subparsers, common) -> None:
    p = subparsers.add_parser(
        "check",
        parents=[common],
        help="check a spec's posterior against the exact reference (exact-chart problems)",
        description=(
            "Run bip's sampler on a spec's problem and compare with the exact reference "
            "posterior (bip.check): generic specs against the finite-sigma posterior (energy "
            "distance vs its floor, pixel means in Monte Carlo units, chart-coordinate "
            "marginals), maximum-entropy specs against the sigma -> 0 limit over a sigma "
            "ladder. Writes check.json and check.png to --out (default runs/check-<spec>)."
        ),
    )
    p.add_argument("spec", help="problem spec: a TOML file or a shipped name (ct-phantom-8, ...)")
    p.add_argument("--out", default=None, help="output folder (default runs/check-<spec name>)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an output folder bip wrote before"
    )
    p.add_argument(
        "--reference-draws",
        type=int,
        default=None,
        help="exact reference draws (default and minimum: twice bip's kept draws)",
    )
    p.add_argument(
        "--sigmas",
        type=float,
        nargs="+",
        default=None,
        help="maximum-entropy specs: the sigma ladder (default the spec's sigma x 4, 2, 1, 1/2)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress lines or bar")
    p.set_defaults(func=_check)


# --------------------------------------------------------------------------- train


def _train(args: argparse.Namespace) -> int:
    """``bip train``: train, or re-evaluate with ``--eval-only``; Ctrl-C saves the checkpoint
    and exits 130 with one line."""
    from bip import cards, recipes, train

    if args.eval_only:
        try:
            card = cards.evaluate_folder(args.out, machine=args.machine)
        except (recipes.RecipeError, FileNotFoundError, ValueError) as err:
            print(f"bip train: error: {err}", file=sys.stderr)
            return 2
        print(f"evaluated {args.out} in {card['eval_seconds']} s; card rewritten")
        return 0
    _announce(args, args.recipe, args.out)
    try:
        result = train.train(
            args.recipe,
            args.out,
            resume=not args.no_resume,
            stop_after=args.stop_after,
            progress=not args.no_progress,
            evaluate=not args.no_eval,
            keep_checkpoint=not args.drop_checkpoint,
            machine=args.machine,
        )
    except (recipes.RecipeError, FileNotFoundError, outputs.OutputError) as err:
        print(f"bip train: error: {err}", file=sys.stderr)
        return 2
    except train.TrainInterrupted as stop:
        print(
            f"bip train: interrupted at step {stop.steps_done} of {stop.steps}; checkpoint in "
            f"{stop.checkpoint} (run the same command again to resume)",
            file=sys.stderr,
        )
        return 130
    if not result.complete:
        print(f"stopped at step {result.steps_done}; run again to resume from {args.out}")
        return 0
    q = (result.card or {}).get("quality")
    summary = (
        f"trained {result.steps_done} steps in {result.seconds:.1f} s, "
        f"final loss {result.final_loss:.4f}"
    )
    if q and "profile" in q:
        summary += (
            f", relative score error at sigma=0.1: {q['rel_error_at_0.1']:.4f}, "
            f"beta = {q['profile']['beta']:.3f}"
        )
    print(summary)
    print(f"prior written to {args.out}")
    return 0


def add_train(subparsers, common: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Register ``train`` on an argparse subparsers object: ``bip train RECIPE --out DIR``
    (``bip.train``); ``common`` is a parent parser with the global options.

    The parser's ``func`` default is called as ``func(args) -> exit code``.

    Example:
        >>> parser = argparse.ArgumentParser(prog="bip")
        >>> add_train(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["train", "recipe.toml", "--out", "runs/x"])
        >>> args.func(args)
    """
    p = subparsers.add_parser(
        "train",
        parents=[common] if common is not None else [],
        help="train a score network from a TOML recipe",
        description=(
            "Train a score network by denoising score matching (bip.train). Ctrl-C saves the "
            "checkpoint; the same command resumes from it."
        ),
    )
    p.add_argument("recipe", help="path to a TOML recipe")
    p.add_argument("--out", required=True, help="output folder (weights, card, checkpoint)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="stop after N steps, leaving a checkpoint to resume from",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-eval", action="store_true", help="skip the score-error profile")
    p.add_argument(
        "--drop-checkpoint", action="store_true", help="delete the checkpoint after a complete run"
    )
    p.add_argument(
        "--eval-only",
        action="store_true",
        help="do not train: measure the quality of the trained prior in --out again and "
        "rewrite its model.json and README.md",
    )
    p.add_argument("--machine", default=None, help="a description of the machine, for the card")
    p.set_defaults(func=_train)
    return p


# --------------------------------------------------------------------------- main


def _global_options(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument(
        "--float32",
        action="store_true",
        default=default,
        help="compute in float32 (default float64)",
    )
    parser.add_argument(
        "--no-compile-cache",
        action="store_true",
        default=default,
        help=f"do not cache compiled programs in {compile_cache_dir()} (also: {NO_CACHE_ENV}=1)",
    )


_WATCH: list[_InterruptWatch | None] = [None]  # the running command's watchdog


def build_parser() -> argparse.ArgumentParser:
    """The ``bip`` argument parser (global options also accepted after the command)."""
    parser = argparse.ArgumentParser(
        prog="bip", description="Bayesian inverse problems with learned score priors."
    )
    parser.add_argument("--version", action="version", version=f"bip {__version__}")
    _global_options(parser, False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, argparse.SUPPRESS)  # after the command: set only when given
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="run bip COMMAND --help for its options",
    )
    _add_solve(sub, common)
    _add_robustness(sub, common)
    _add_check(sub, common)
    add_train(sub, common)
    _add_calibrate(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``bip`` with ``argv`` (default ``sys.argv[1:]``); return the exit code (0 done,
    2 bad input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    watch = _WATCH[0] = _InterruptWatch(args.command) if main_thread else None
    try:
        import jax

        jax.config.update("jax_enable_x64", not args.float32)
        _enable_compile_cache(args.no_compile_cache)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if watch is not None:
            watch.saving.set()
        print(f"bip {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, FloatingPointError) as err:
        print(f"bip {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        if watch is not None:
            watch.close()
        _WATCH[0] = None


if __name__ == "__main__":
    sys.exit(main())
