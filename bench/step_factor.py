"""What the ULA step factor ``c`` (``h = c min(sigma^(2 - alpha), 1/L)``) does to the shipped
CT specs: each spec is solved as ``bip solve NAME`` would, with ``c`` replaced and the
integration time kept (steps, thinning, annealing steps per level and burn-in scaled by
``c_spec / c``, so the number of kept draws stays the same), and, for a generic exact-chart
problem, compared with its exact reference (``bip.references.generic_finite_sigma``, computed
once per problem): energy distance against the reference-vs-reference floor at equal sample
counts, pixel means within 3 Monte Carlo standard errors, median pixel-std ratio. A
maximum-entropy spec also runs as its generic variant (``--generic``: same truth, operator,
noise and sampler, ``alpha = 0``), where the reference is exact.

    python -m bench.step_factor ct-phantom-8 --c 0.1 0.2 0.3
    python -m bench.step_factor ct-phantom-16 --generic --c 0.1 0.2 0.3

Results (one JSON line per run) are appended to ``bench/step_factor.jsonl``.

Measured (float64, 2 cores under load ~17, so wall times are not comparable; reference
1600 NUTS draws):

- ``ct-phantom-8`` at c = 0.2 (16 chains x 10 draws): energy-distance ratio 1.17, 99.5% of
  pixel means within 3 Monte Carlo SE, median pixel std 1.048x the exact posterior's, median
  R-hat 1.02 (max 1.24), bulk ESS median 220, tail ESS min 62.
- ``ct-phantom-16 --generic`` at c = 0.2 (16 chains x 20 draws): ratio 1.09, 100% within 3
  SE, std 1.042x, median R-hat 1.006 (max 1.06), bulk ESS median 387, tail ESS min 164.
- For comparison (``bench/check_references.py``, same 32x32 problem, other schedules): c = 0.5
  ratio 2.07, std 1.128x; c = 0.1 ratio 1.08, std 1.019x. The shipped specs use c = 0.2.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from bip import problems, references, solve  # noqa: E402

HERE = Path(__file__).resolve().parent


def scaled(spec: dict, c: float) -> dict:
    """``spec`` with step factor ``c`` and its integration time kept (module docstring)."""
    spec = copy.deepcopy(spec)
    s = spec["sampler"]
    factor = s["c"] / c
    draws = s["steps"] // s["thin"]
    s["thin"] = max(1, round(s["thin"] * factor))
    s["steps"] = draws * s["thin"]
    s["steps_per_level"] = max(1, round(s["steps_per_level"] * factor))
    s["burn_in"] = round(s["burn_in"] * factor)
    s["c"] = c
    return spec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--c", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--generic", action="store_true", help="alpha = 0 variant")
    parser.add_argument("--reference-draws", type=int, default=1600)
    parser.add_argument("--json", type=Path, default=HERE / "step_factor.jsonl")
    args = parser.parse_args(argv)
    spec = problems.load(args.spec)
    if args.generic:
        spec["prior"]["kind"] = "generic"
    problem = problems.build(spec)
    ref = None
    if problem.alpha == 0 and spec["prior"]["source"] == "exact":
        t0 = time.perf_counter()
        ref = references.generic_finite_sigma(
            jax.random.key(1), problem.law, problem.likelihood, spec["sampler"]["sigma"],
            num_chains=8, num_samples=args.reference_draws // 8, num_warmup=400, thin=2,
        )  # fmt: skip
        print(f"reference: {time.perf_counter() - t0:.0f} s, {ref.diagnostics}", flush=True)
    for c in args.c:
        run_spec = scaled(spec, c)
        with tempfile.TemporaryDirectory() as tmp:
            report = solve.solve(run_spec, Path(tmp) / "out", progress=False)
            samples = np.load(Path(tmp) / "out" / "samples.npz")["samples"].astype(float)
        row = {
            "spec": args.spec + (" (generic)" if args.generic else ""),
            "c": c,
            "sampler": run_spec["sampler"],
            "seconds": report["seconds"],
            "psnr_raw": report["raw"].get("psnr"),
            "psnr_denoised": report["denoised"].get("psnr"),
            "coverage_raw": report["raw"].get("coverage_90"),
            "coverage_denoised": report["denoised"].get("coverage_90"),
            "rhat_median": report["rhat_median"],
            "rhat_max": report["rhat_max"],
            "ess_median": report["ess_median"],
            "ess_tail_min": report.get("ess_tail_min"),
        }
        if ref is not None:
            out = references.compare(jax.random.key(2), samples, ref)
            row.update(
                ratio=out["ratio"],
                energy_distance=out["energy_distance"],
                floor=out["floor"],
                within_3se=out["fraction_within_3se"],
                std_ratio=out["std_ratio_median"],
            )
        print(json.dumps(row), flush=True)
        with open(args.json, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
