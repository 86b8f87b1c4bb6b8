"""Benchmark sections for ``python -m bench``: throughput against chains and devices, memory.

Each section is a function returning table rows (dicts with ``benchmark``, ``a``, ``b``,
``ratio``, ``note``); ``python -m bench`` runs each in its own subprocess (so that the jax
configuration of one, x64 or a device count, cannot leak into another) and prints one table.

- ``chains``: library ``bip.samplers.run`` chain-steps per second on the exact circle prior
  (von Mises, kappa 4, sigma 0.1, ULA, float64) for 1 ... 10^5 chains, in steady state:
  ``chains * (S - 1) / (t(S) - t(1))`` so that ``run``'s per-call cost (trace, lowering,
  compile-cache look-up) cancels; XLA's persistent compilation cache is on so that the
  repeats do not recompile. Timings are best-of-2 and still move +-30% on 2 shared cores.
- ``devices``: the same at 10^4 chains on a ``bip.sharding.chain_mesh()`` of 1, 2 and 4 CPU
  devices, each in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``.
- ``memory``: peak RSS (``resource.getrusage``) of a subprocess running 10^4 chains for
  10^6 steps (by default) with streaming statistics and ``keep_samples=False``.
- ``overhead``, ``projector``, ``networks``, ``deepinv``: wrappers around
  ``bench/bench_ula.py``, ``bench/bench_projector.py``, ``bench/bench_networks.py`` and
  ``bench/bench_deepinv.py`` (seconds per 1000 Langevin steps at 64 chains, CT and
  deblurring, bip against deepinv's ULA; only if ``import deepinv`` works here or
  ``BIP_BENCH_DEEPINV_PYTHON`` names an interpreter where it does, else one "skipped" row).

Run one section: ``python -m bench.bench_scaling chains [--quick] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(tempfile.gettempdir()) / "bip-bench-xla-cache"
SIGMA = 0.1
STEP = 1e-3  # default_step_size(0.1, alpha=0)
DEEPINV_HINT = (
    "skipped: pip install torch==2.13.0, then deepinv with torch pinned (bench/bench_deepinv.py); "
    "run with that python or set BIP_BENCH_DEEPINV_PYTHON"
)


def _row(benchmark, a, b, ratio, note=""):
    return {"benchmark": benchmark, "a": a, "b": b, "ratio": ratio, "note": note}


def _setup_jax(x64: bool = True, cache: bool = True):
    import jax

    jax.config.update("jax_enable_x64", x64)
    if cache:
        jax.config.update("jax_compilation_cache_dir", str(CACHE))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return jax


def _circle():
    import numpy as np

    import bip

    prior = bip.priors.exact(bip.manifolds.VonMises(bip.manifolds.Circle(), 4.0, np.pi))
    algo = bip.samplers.ula(lambda x: prior.score(x, SIGMA), STEP)
    return bip, prior, algo


def _throughput(num_chains: int, budget_s: float, repeats: int, mesh=None) -> dict:
    """Steady-state chain-steps/s of ``run``: ``chains * (S - 1) / (t(S) - t(1))``.

    ``t(1)``, a 1-step call, is ``run``'s per-call cost (trace, lowering, compile-cache
    look-up, transfers); ``S`` is grown until ``t(S) - t(1)`` is about ``budget_s``. Best of
    ``repeats`` calls each.
    """
    jax = _setup_jax()
    bip, prior, algo = _circle()
    x0 = prior.manifold.sample_uniform(jax.random.key(0), (num_chains,))

    def timed(steps):
        t0 = time.perf_counter()
        out = bip.samplers.run(
            jax.random.key(1), algo, x0, steps, thin=steps, progress=False, mesh=mesh
        )
        jax.block_until_ready(out.samples)
        return time.perf_counter() - t0

    timed(1)  # compile (or fill the persistent cache)
    fixed = min(timed(1) for _ in range(repeats + 1))
    # a first guess from 2 cores (3 us a step + 0.1 us a chain-step), then one correction
    steps = max(20, int(budget_s / (3e-6 + 0.1e-6 * num_chains)))
    for _ in range(3):
        timed(steps)
        work = min(timed(steps) for _ in range(repeats)) - fixed
        if work >= 0.6 * budget_s:
            break
        steps = int(steps * min(budget_s / max(work, 1e-3), 20.0))
    return {
        "chains": num_chains,
        "steps": steps,
        "rate": num_chains * (steps - 1) / max(work, 1e-9),
        "call_s": fixed,
        "work_s": work,
    }


# --------------------------------------------------------------------------- sections


def section_chains(quick: bool) -> list[dict]:
    counts = [100, 10_000] if quick else [1, 10, 100, 1000, 10_000, 100_000]
    budget, repeats = (0.5, 2) if quick else (1.0, 2)
    results = {n: _throughput(n, budget, repeats) for n in counts}
    rows = []
    first = counts[0]
    base = results[first]["rate"]
    for n, r in results.items():
        rows.append(
            _row(
                f"chain-steps/s, {n} chains (exact circle, ULA, f64)",
                f"{r['rate'] / 1e6:.3g} M/s",
                f"{base / 1e6:.3g} M/s ({first} chain{'s' if first > 1 else ''})",
                r["rate"] / base,
                f"{r['steps']} steps in {r['work_s']:.2f} s + {r['call_s']:.2f} s a call",
            )
        )
    ratio = results[10_000]["rate"] / results[100]["rate"]
    rows.append(
        _row(
            "chain-steps/s, 10^4 chains / 100 chains",
            f"{results[10_000]['rate'] / 1e6:.3g} M/s",
            f"{results[100]['rate'] / 1e6:.3g} M/s",
            ratio,
            "target >= 20" + ("" if ratio >= 20 else ": NOT met, see README (Scaling)"),
        )
    )
    return rows


_DEVICE_SCRIPT = """
import json, os, sys
sys.path.insert(0, {root!r})
from bench.bench_scaling import _throughput
import jax
from bip import sharding
n = len(jax.devices())
r = _throughput({chains}, {budget}, {repeats}, mesh=sharding.chain_mesh())
print("RESULT" + json.dumps({{"devices": n, "rate": r["rate"]}}))
"""


def _subprocess_json(code: str, env_extra: dict, timeout: float = 900) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(env_extra)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def section_devices(quick: bool) -> list[dict]:
    chains = 10_000
    budget, repeats = (0.6, 1) if quick else (1.0, 2)
    devices = [1, 2] if quick else [1, 2, 4]
    rates = {}
    for d in devices:
        code = _DEVICE_SCRIPT.format(root=str(ROOT), chains=chains, budget=budget, repeats=repeats)
        flags = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={d}"}
        rates[d] = _subprocess_json(code, flags)["rate"]
    cores = os.cpu_count()
    return [
        _row(
            f"chain-steps/s, {chains} chains on a mesh of {d} CPU device(s)",
            f"{rates[d] / 1e6:.3g} M/s",
            f"{rates[1] / 1e6:.3g} M/s (1 device)",
            rates[d] / rates[1],
            f"XLA_FLAGS device count {d}, {cores} cores",
        )
        for d in devices
    ]


_MEMORY_SCRIPT = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import bip
from bip import streaming
prior = bip.priors.exact(bip.manifolds.VonMises(bip.manifolds.Circle(), 4.0, np.pi))
algo = bip.samplers.ula(lambda x: prior.score(x, 0.1), 1e-3)
x0 = prior.manifold.sample_uniform(jax.random.key(0), ({chains},))
angle = lambda x: jnp.arctan2(x[1], x[0])
stats = [streaming.mean_var(), streaming.histogram(angle, 36, (-np.pi, np.pi)),
         streaming.diagnostics(angle), streaming.keep_last(10)]
t0 = time.perf_counter()
r = bip.samplers.run(jax.random.key(1), algo, x0, {steps}, keep_samples=False,
                     statistics=stats, progress=False)
jax.block_until_ready(r.statistics)
seconds = time.perf_counter() - t0
hist = r.statistics[1]
print("RESULT" + json.dumps({{
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "seconds": seconds, "counted": float(hist.pooled.sum()),
    "rhat": float(r.statistics[2].rhat), "diverged": int(r.diverged.sum())}}))
"""


def section_memory(quick: bool, steps: int | None = None, chains: int = 10_000) -> list[dict]:
    steps = steps if steps is not None else (10_000 if quick else 1_000_000)
    out = _subprocess_json(
        _MEMORY_SCRIPT.format(root=str(ROOT), chains=chains, steps=steps), {}, timeout=4 * 3600
    )
    kept = chains * steps * 2 * 8 / 2**20
    return [
        _row(
            f"peak RSS, {chains} chains x {steps:.0e} steps, streaming stats",
            f"{out['peak_mb']:.0f} MB",
            f"{kept:.3g} MB (all positions, f64)",
            out["peak_mb"] / kept,
            f"{out['seconds']:.0f} s; target < 1024 MB; R-hat {out['rhat']:.3f}",
        )
    ]


def _import_bench(name: str):
    sys.path.insert(0, str(ROOT))
    try:
        return importlib.import_module(f"bench.{name}")
    except ImportError:
        return None


def _hand_overhead(num_chains: int, num_steps: int, repeats: int) -> dict:
    """Fallback when bench_ula.py is missing: run() against a minimal lax.scan."""
    jax = _setup_jax(cache=False)
    import jax.numpy as jnp

    bip, prior, algo = _circle()
    x0 = prior.manifold.sample_uniform(jax.random.key(0), (num_chains,))

    @jax.jit
    def hand(key, x):
        def step(x, i):
            keys = jax.random.split(jax.random.fold_in(key, i), num_chains)
            z = jax.vmap(lambda k: jax.random.normal(k, (2,), x.dtype))(keys)
            return x + STEP * prior.score(x, SIGMA) + math.sqrt(2 * STEP) * z, None

        return jax.lax.scan(step, x, jnp.arange(num_steps))[0]

    def lib(key, x):
        return bip.samplers.run(key, algo, x, num_steps, thin=num_steps, progress=False).samples

    times = {"library": [], "hand": []}
    for fn in (lib, hand):
        jax.block_until_ready(fn(jax.random.key(1), x0))
    for _ in range(repeats):
        for name, fn in (("library", lib), ("hand", hand)):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(jax.random.key(1), x0))
            times[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    return {
        "ratio": best["library"] / best["hand"],
        "library_rate": num_chains * num_steps / best["library"],
        "hand_rate": num_chains * num_steps / best["hand"],
        "chains": num_chains,
        "steps": num_steps,
    }


def _ula_pair(module, chains: int, steps: int) -> dict:
    """Quick mode: only bench_ula's library and hand variants, one timed call each."""
    import jax
    import numpy as np

    import bip

    jax.config.update("jax_enable_x64", True)
    data = bip.manifolds.VonMises(bip.manifolds.Circle(), kappa=module.KAPPA, loc=np.pi)
    prior = bip.priors.exact(data)
    h = float(bip.samplers.default_step_size(module.SIGMA, 0.0))
    x0 = data.sample(jax.random.key(0), (chains,))
    library, hand = module._library(prior, h, steps), module._loop(prior, h, steps)
    jax.block_until_ready(hand(jax.random.key(1), x0))
    best = {}
    for name, fn in (("library", library), ("hand", hand)):
        best[name] = module._timed(fn, jax.random.key(1), x0)
    return {
        "chains": chains,
        "steps": steps,
        "ratio": best["library"] / best["hand"],
        "library_rate": chains * steps / best["library"],
        "hand_rate": chains * steps / best["hand"],
    }


def section_overhead(quick: bool) -> list[dict]:
    chains, steps, repeats = (2000, 500, 1) if quick else (10_000, 1000, 2)
    module = _import_bench("bench_ula")
    if module is not None and quick and hasattr(module, "_loop"):
        r = _ula_pair(module, chains, steps)
        source = "bench/bench_ula.py (2 variants); library time includes run()'s per-call jit"
    elif module is not None and hasattr(module, "bench"):
        import jax.numpy as jnp

        r = module.bench(chains, steps, repeats, jnp.float64)
        source = "bench/bench_ula.py; library time includes run()'s per-call jit"
    else:
        r = _hand_overhead(chains, steps, repeats)
        source = "bench_scaling fallback"
    rows = [
        _row(
            f"ULA time: library run() / hand lax.scan ({r['chains']} x {r['steps']}, f64)",
            f"{r['library_rate'] / 1e6:.3g} M/s",
            f"{r['hand_rate'] / 1e6:.3g} M/s",
            r["ratio"],
            source,
        )
    ]
    if module is not None and hasattr(module, "chunk_cost"):
        c = module.chunk_cost(chains, steps, 10, repeats + 1)
        rows.append(
            _row(
                f"run() CPU time: host loop over ~1 s chunks / the same program in one call, "
                f"{c['chains']} x {c['steps']} thin 10, f64",
                f"{c['best_cpu_s']['chunked']:.3g} s",
                f"{c['best_cpu_s']['one chunk']:.3g} s",
                c["cpu_ratio"],
                f"bench/bench_ula.py --chunks; target < 1.05; wall ratio {c['ratio']:.3g}",
            )
        )
    return rows


def section_projector(quick: bool) -> list[dict]:
    module = _import_bench("bench_projector")
    if module is None:
        return [_row("CT projector vs scikit-image", "-", "-", None, "bench_projector missing")]
    import jax.numpy as jnp
    import numpy as np
    from skimage.transform import iradon
    from skimage.transform import radon as sk_radon

    from bip import operators

    repeats = 2 if quick else 5
    angles = np.linspace(0.0, 180.0, module.NUM_ANGLES, endpoint=False)
    images = module._phantoms(module.SIZE, module.BATCH)
    sk_fwd = module._time_loop(lambda im: sk_radon(im, angles, circle=True), images, repeats)
    sinos = np.stack([sk_radon(im, angles, circle=True) for im in images])
    sk_adj = module._time_loop(
        lambda s: iradon(s, angles, circle=True, filter_name=None), sinos, repeats
    )
    op = operators.radon(module.SIZE, angles)
    fwd, adj = module._measure(op, jnp.asarray(images), repeats=repeats)
    shape = f"{module.BATCH} x {module.SIZE}^2, {module.NUM_ANGLES} angles"
    return [
        _row(
            f"CT fwd+adj speed-up: bip {op.name} / scikit-image ({shape})",
            f"{fwd + adj:.1f} ms",
            f"{sk_fwd + sk_adj:.1f} ms",
            (sk_fwd + sk_adj) / (fwd + adj),
            f"forward {sk_fwd / fwd:.1f}x, adjoint (iradon no filter) {sk_adj / adj:.1f}x",
        )
    ]


def section_networks(quick: bool) -> list[dict]:
    module = _import_bench("bench_networks")
    if module is None or not hasattr(module, "bench_score"):
        return [_row("score-net evaluations/s", "-", "-", None, "skipped: bench_networks.py")]
    import jax
    import jax.numpy as jnp
    import numpy as np

    import bip
    from bip import priorfile

    seconds = 0.5 if quick else 2.0
    # the exact score of the law the circle net learned (von Mises kappa 1, loc 0), same batch
    exact = bip.priors.exact(bip.manifolds.VonMises(bip.manifolds.Circle(), 1.0, 0.0))
    batch = module.BATCH
    x = jax.random.normal(jax.random.key(0), (batch, 2), jnp.float32)
    sigma = jnp.exp(jax.random.uniform(jax.random.key(1), (batch,), jnp.float32, -4.6, 3.9))
    score = jax.jit(lambda p, x, s: p.score_fn(p.params, x, s))
    exact_rate = batch / module._timeit(lambda: score(exact, x, sigma).block_until_ready(), seconds)
    rows = []
    for name in priorfile.available_priors():
        rate = module.bench_score(name, seconds)
        rows.append(
            _row(
                f"score evals/s: net {name} / exact von Mises score (batch {batch}, f32)",
                f"{rate / 1e6:.3g} M/s",
                f"{exact_rate / 1e6:.3g} M/s",
                rate / exact_rate,
                "" if "circle" in name else "net on other data; exact circle score as yardstick",
            )
        )
    del np
    return rows


def section_deepinv(quick: bool) -> list[dict]:
    """bip vs deepinv: seconds per 1000 Langevin steps at 64 chains (bench/bench_deepinv.py).

    In this process when torch and deepinv import here; else in the interpreter named by
    ``BIP_BENCH_DEEPINV_PYTHON`` (a venv with torch, deepinv and bip, as the module docstring
    installs), which runs both sides; else one row saying how to install.
    """
    title = "s/1000 ULA steps x 64 chains: bip vs deepinv (torch CPU)"
    module = _import_bench("bench_deepinv")
    if module is None:
        return [_row(title, "-", "-", None, "skipped: bench/bench_deepinv.py missing")]
    missing = module.deepinv_missing()
    if missing is None:
        return module.compare(quick)
    python = os.environ.get("BIP_BENCH_DEEPINV_PYTHON")
    if not python:
        return [_row(title, "-", "-", None, f"{DEEPINV_HINT} ({missing})")]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [python, "-m", "bench.bench_deepinv", "--json", str(out)]
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "VIRTUAL_ENV")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run(
            cmd + (["--quick"] if quick else []), cwd=ROOT, env=env, capture_output=True, text=True
        )
        if proc.returncode or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            raise RuntimeError(f"{python} -m bench.bench_deepinv: {tail[0]}")
        return json.loads(out.read_text())


SECTIONS = {
    "overhead": section_overhead,
    "projector": section_projector,
    "networks": section_networks,
    "chains": section_chains,
    "devices": section_devices,
    "deepinv": section_deepinv,
    "memory": section_memory,
}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description="one bip benchmark section")
    parser.add_argument("section", choices=sorted(SECTIONS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--steps", type=int, help="memory: steps (default 10^6)")
    parser.add_argument("--chains", type=int, default=10_000, help="memory: chains")
    args = parser.parse_args(argv)
    if args.section == "memory":
        rows = section_memory(args.quick, args.steps, args.chains)
    else:
        rows = SECTIONS[args.section](args.quick)
    if args.json:
        Path(args.json).write_text(json.dumps(rows))
    else:
        for row in rows:
            print(row)
    return rows


if __name__ == "__main__":
    main()
