"""``python -m bench``: every benchmark, one table of side-by-side ratios, ``bench/results.json``.

Each section runs in its own subprocess (``python -m bench.bench_scaling SECTION``) so that
jax settings (x64, an emulated device count) cannot leak between them; every row is two
measurements taken in the same run and their ratio.

    python -m bench            # everything, about 2 minutes on 2 cores
    python -m bench --quick    # fewer sizes and repeats, about a minute
    python -m bench --memory   # also the 10^4 chains x 10^6 steps peak-RSS run (15+ minutes)
    python -m bench --only chains devices

Sections: overhead (bench_ula.py), projector (bench_projector.py), tomography
(bench_tomography.py: CT projectors vs skimage and ASTRA, if installed), networks
(bench_networks.py), chains and devices (bench_scaling.py), deepinv (only if installed),
memory (with --memory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ORDER = ["overhead", "projector", "tomography", "networks", "chains", "devices", "deepinv"]


def _run_section(name: str, quick: bool, extra: list[str]) -> tuple[list[dict], float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        module, args = (
            ("bench_tomography", []) if name == "tomography" else ("bench_scaling", [name])
        )
        cmd = [sys.executable, "-m", f"bench.{module}", *args, "--json", str(out), *extra]
        if quick:
            cmd.append("--quick")
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            return [_error_row(name, tail[0])], seconds
        return json.loads(out.read_text()), seconds


def _error_row(name: str, message: str) -> dict:
    return {"benchmark": name, "a": "-", "b": "-", "ratio": None, "note": f"failed: {message}"}


def _table(rows: list[dict]) -> str:
    head = ("benchmark", "A", "B", "A:B ratio", "note")
    body = [
        (
            r["benchmark"],
            str(r["a"]),
            str(r["b"]),
            "-" if r["ratio"] is None else f"{r['ratio']:.3g}",
            r.get("note", ""),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(4)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    lines = [fmt.format(*head), "-" * (sum(widths) + 8 + len(head[4]))]
    lines += [fmt.format(*line) for line in body]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about a minute")
    parser.add_argument("--memory", action="store_true", help="also the 10^6-step memory run")
    parser.add_argument("--memory-steps", type=int, default=None)
    parser.add_argument("--only", nargs="+", choices=ORDER + ["memory"], help="these sections")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args(argv)
    sections = args.only or ORDER + (["memory"] if args.memory else [])
    rows, timings = [], {}
    t0 = time.perf_counter()
    for name in sections:
        extra = []
        if name == "memory" and args.memory_steps:
            extra = ["--steps", str(args.memory_steps)]
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        section_rows, seconds = _run_section(name, args.quick, extra)
        timings[name] = seconds
        for row in section_rows:
            row["section"] = name
        rows += section_rows
    total = time.perf_counter() - t0
    print(_table(rows))
    print(
        f"\n{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}; "
        f"{'quick, ' if args.quick else ''}{total:.0f} s: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    )
    import jax

    result = {
        "rows": rows,
        "seconds": timings,
        "total_seconds": total,
        "quick": args.quick,
        "jax": jax.__version__,
        "cores": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
