"""Solve every shipped imaging spec and print the table the README quotes (float64).

    python -m bench.specs_table                 # every shipped image spec (128 px: 4-15 min each)
    python -m bench.specs_table ct-phantom-16   # some of them

Each spec runs through ``bip.solve.solve`` exactly as ``bip solve NAME`` does (no output
folder), in float64 like the CLI's default. Columns: posterior-mean PSNR of the raw and of the
Tweedie-denoised draws, 90% coverage of both, the best classical baseline and every
baseline's PSNR at its chosen parameter (interior optima, chosen on validation images), the
prior-fit statistic and its threshold, the median split R-hat, wall seconds.
"""

from __future__ import annotations

import argparse
import json

import jax

jax.config.update("jax_enable_x64", True)

from bip import problems, solve  # noqa: E402


def _row(name: str) -> dict:
    report = solve.solve(name, None, progress=False)
    raw, den = report["raw"], report["denoised"]
    baselines = {k: v["psnr"] for k, v in report.get("baselines", {}).items()}
    best = max(baselines, key=baselines.get) if baselines else None
    fit = report.get("prior_fit", {})
    return {
        "spec": name,
        "alpha": report["alpha"],
        "psnr_raw": raw.get("psnr"),
        "psnr_denoised": den.get("psnr"),
        "coverage_raw": raw.get("coverage_90"),
        "coverage_denoised": den.get("coverage_90"),
        "baselines": baselines,
        "best_baseline": best,
        "all_interior": all(v.get("interior", True) for v in report.get("baselines", {}).values()),
        "prior_fit": fit.get("value"),
        "prior_fit_threshold": fit.get("threshold"),
        "prior_fit_ok": fit.get("ok"),
        "rhat_median": report.get("rhat_median"),
        "seconds": report["seconds"],
        "precision": report["precision"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", help="shipped spec names (default: every image spec)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    names = args.specs or [n for n in problems.available_problems() if n != "circle-toy"]
    rows = []
    print(
        f"{'spec':24} {'a':>3} {'raw':>6} {'den':>6} {'cov r/d':>11} {'best baseline':>20} "
        f"{'fit/thr':>11} {'rhat':>5} {'s':>5}"
    )
    for name in names:
        r = _row(name)
        rows.append(r)
        best = (
            f"{r['best_baseline']} {r['baselines'][r['best_baseline']]:.2f}"
            if r["best_baseline"]
            else "-"
        )
        print(
            f"{name:24} {r['alpha']:3.1f} {r['psnr_raw']:6.2f} {r['psnr_denoised']:6.2f} "
            f"{r['coverage_raw']:5.3f}/{r['coverage_denoised']:5.3f} {best:>20} "
            f"{r['prior_fit']:5.2f}/{r['prior_fit_threshold']:5.2f} {r['rhat_median']:5.2f} "
            f"{r['seconds']:5.0f}",
            flush=True,
        )
        print("    baselines: " + ", ".join(f"{k} {v:.2f}" for k, v in r["baselines"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
