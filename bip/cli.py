"""The ``bip`` command line: canonical problems and experiments on shipped defaults.

    bip robustness [--out DIR] [--observe COORD VALUE NOISE] [--full | --fast]
    bip robustness SPEC [--out DIR]        (images: a spec with a [robustness] table)
    bip solve SPEC [--out DIR] [--overwrite]
    bip train RECIPE --out DIR

Run ``bip COMMAND --help`` for the options.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax


def _image_robustness(args: argparse.Namespace) -> int:
    from bip import experiments, plots

    start = time.perf_counter()
    sweep = experiments.image_problem_sweep(args.spec, progress=not args.no_progress)
    out = Path(args.out if args.out else Path("runs") / f"robustness-{Path(args.spec).stem}")
    sweep.save(out)
    plots.save_figure(plots.image_robustness(sweep), out / "robustness.png")
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


def _robustness(args: argparse.Namespace) -> int:
    from bip import experiments, plots

    if args.spec is not None:
        return _image_robustness(args)

    sigmas = [0.3, 0.2, 0.1, 0.05] + ([0.02] if args.full else [])
    observe = tuple(args.observe) if args.observe is not None else None
    if observe is not None:
        observe = (int(observe[0]), float(observe[1]), float(observe[2]))
    chains = args.chains if args.chains else (500 if args.fast else 2000)
    start = time.perf_counter()
    sweep = experiments.circle_sweep(
        sigmas=sigmas,
        alphas=args.alphas,
        observe=observe,
        num_chains=chains,
        seed=args.seed,
        sample=not args.exact_only,
        progress=not args.no_progress,
    )
    out = sweep.save(args.out or "runs/robustness")
    figure = plots.robustness(sweep)
    plots.save_figure(figure, out / "robustness.png")
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
    print(f"expected slopes: 0 (alpha = 0) and -alpha; results in {Path(out).resolve()}")
    return 0


def _add_robustness(subparsers) -> None:
    p = subparsers.add_parser(
        "robustness",
        help="rate-separation sweep (error size x sigma x alpha): circle, or an image SPEC",
        description=(
            "Sweep the score-error size, sigma and alpha; find the critical error eps*(sigma) "
            "and fit its log-log slope per alpha. Without SPEC: the circle prior (von Mises "
            "kappa=4, theta0=pi, error cos 2theta), alone or with a likelihood. With SPEC: "
            "the image posterior of a problem spec with a [robustness] table (e.g. "
            "problems/robustness-phantom.toml). Writes results.json, summary.json and "
            "robustness.png."
        ),
    )
    p.add_argument(
        "spec",
        nargs="?",
        default=None,
        help="image problem spec (optional): a TOML file or a shipped name (robustness-phantom)",
    )
    p.add_argument("--out", default=None, help="output directory (default runs/robustness[-SPEC])")
    p.add_argument(
        "--observe",
        nargs=3,
        metavar=("COORD", "VALUE", "NOISE"),
        help="add the likelihood: observe x[COORD] = VALUE with Gaussian noise NOISE",
    )
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 1.0, 1.5])
    p.add_argument("--full", action="store_true", help="add sigma = 0.02 (slower)")
    p.add_argument("--fast", action="store_true", help="500 chains per cell (noisier)")
    p.add_argument("--chains", type=int, default=None, help="chains per error size")
    p.add_argument("--exact-only", action="store_true", help="quadrature laws only, no sampling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_robustness)


def _solve(args: argparse.Namespace) -> int:
    from bip import solve

    out = args.out or str(Path("runs") / Path(args.spec).stem)
    report = solve.solve(args.spec, out, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"bip solve {args.spec}: done in {report['seconds']:.1f} s -> {Path(out).resolve()}")
    for key, value in report.items():
        if key not in ("name", "divergence"):
            print(f"  {key}: {value}")
    print(f"  {report['divergence']}")
    return 0


def _add_solve(subparsers) -> None:
    p = subparsers.add_parser(
        "solve",
        help="solve a canonical problem from a spec in problems/",
        description=(
            "Run a problem spec (TOML): sample the posterior, write samples.npz, report.json "
            "and figure.png to --out (default runs/<spec name>), atomically."
        ),
    )
    p.add_argument(
        "spec", help="problem spec: a TOML file or a shipped name (ct-phantom-16, circle-toy, ...)"
    )
    p.add_argument("--out", default=None, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_solve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bip", description="Bayesian inverse problems with learned score priors."
    )
    parser.add_argument(
        "--float32", action="store_true", help="compute in float32 (default float64)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_robustness(sub)
    _add_solve(sub)
    from bip import train

    train.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", not args.float32)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, FloatingPointError) as err:
        print(f"bip {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
