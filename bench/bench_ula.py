"""Benchmark: ULA chain-steps per second through ``bip.samplers.run`` against a hand-written loop.

The exact circle prior (von Mises, kappa = 4, loc = pi), sigma = 0.1, step
``default_step_size(0.1, 0) = 1e-3``, 10^4 chains started on the data law, 2000 steps, in
float64 and float32. Timed side by side in the same run:

- ``library``: ``bip.samplers.run(key, bip.samplers.ula(drift, h), x0, steps, thin=steps)``,
  the whole call as a user sees it (BlackJAX sgld kernel, divergence check, info
  accumulation, one kept draw, and the jit of a fresh loop that ``run`` builds every call);
- ``hand``: a minimal jitted ``lax.scan`` over steps of
  ``vmap(x + h * prior.score(x, sigma) + sqrt(2 h) z)`` with the same RNG usage
  (per step ``split(fold_in(key, step), chains)``, one ``normal`` draw per chain), compiled once;
- an ablation between the two, each compiled once: the hand loop plus the divergence check
  (``_chain_ok`` + ``_tree_where`` + flags, as in ``run``), plus the info accumulation
  (``sum(drift^2)`` masked and summed), and plus both with the BlackJAX kernel (``run``'s
  step minus the re-jit); ``run``'s per-call fixed cost (a 1-step ``run``); and the
  same chain through ``bip.posteriors.sample`` (a fresh drift every call, no recompile).

All use the same ``prior.score``. Times are the best of ``--repeats`` calls after a warm-up,
interleaved so that the load of the 2 shared cores falls on all variants alike; expect +-20%
noise anyway. float32 runs with x64 off (see the note in ``bench``).

Run: ``python bench/bench_ula.py`` (about two minutes) or ``--chains 2000 --steps 500``.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

import bip
from bip.chains import chain_ok, merge_algorithm, split_algorithm, tree_where
from bip.kernels import LangevinState, build_kernel

SIGMA = 0.1
KAPPA = 4.0
MAX_NORM = 1e8


def _library(prior, h: float, num_steps: int):
    """``(key, x0) -> final positions`` through ``bip.samplers.run`` (one kept draw)."""
    algo = bip.samplers.ula(lambda x: prior.score(x, SIGMA), h)

    def call(key, x0):
        out = bip.samplers.run(key, algo, x0, num_steps, thin=num_steps, progress=False)
        return out.samples[-1]

    return call


def _posterior(prior, h: float, num_steps: int):
    """The same chain through ``bip.posteriors.sample``: a new drift pytree every call, whose
    compiled loop is reused (only its arrays, the key and ``x0`` are new)."""

    def call(key, x0):
        out = bip.posteriors.sample(
            key,
            prior,
            sigma=SIGMA,
            step=h,
            num_chains=x0.shape[0],
            num_steps=num_steps,
            thin=num_steps,
            initial_positions=x0,
            progress=False,
        )
        return out.samples[-1]

    return call


def _loop(prior, h: float, num_steps: int, *, blackjax=False, check=False, info=False, thin=None):
    """The hand-written loop; the flags add the pieces of ``run``'s step one by one. With
    ``thin``, it is the old ``run``: one scan over kept blocks of ``thin`` steps whose stacked
    output (every ``thin``-th position, kept on the device) it returns, with the step size a
    traced argument as ``run`` traces it (a constant ``h`` is folded into the step by XLA,
    which makes it faster than any ``run``)."""
    kernel = build_kernel()

    def drift(x):
        return prior.score(x, SIGMA)

    def one(k, x, h):
        if blackjax:
            state, step_info = kernel(k, LangevinState(x), drift, h)
            return state.position, step_info.drift_sq_norm
        d = drift(x)
        z = jax.random.normal(k, x.shape, x.dtype)
        return x + h * d + jnp.sqrt(2 * h).astype(x.dtype) * z, jnp.sum(d**2)

    def loop(key, x0, h):
        num_chains = x0.shape[0]
        one_h = functools.partial(one, h=h)

        def step(carry, i):
            x, diverged, diverged_at, info_sum = carry
            keys = jax.random.split(jax.random.fold_in(key, i), num_chains)
            new, sq_norm = jax.vmap(one_h)(keys, x)
            ok = True
            if check:
                ok = chain_ok(LangevinState(new), MAX_NORM) & ~diverged
                newly = ~ok & ~diverged
                new = tree_where(ok, new, x)
                diverged, diverged_at = diverged | newly, jnp.where(newly, i, diverged_at)
            if info:
                info_sum = info_sum + jnp.where(ok, sq_norm, 0.0).astype(info_sum.dtype)
            return (new, diverged, diverged_at, info_sum), None

        carry = (
            x0,
            jnp.zeros(num_chains, bool),
            jnp.full(num_chains, -1),
            jnp.zeros(num_chains, jnp.result_type(float)),
        )
        if thin is None:
            carry, _ = jax.lax.scan(step, carry, jnp.arange(num_steps))
            return carry[0]

        def block(carry, b):
            carry, _ = jax.lax.scan(step, carry, b * thin + jnp.arange(thin))
            return carry, carry[0]

        return jax.lax.scan(block, carry, jnp.arange(num_steps // thin))[1]

    if thin is None:
        return jax.jit(functools.partial(loop, h=h))
    traced = jax.jit(loop)
    return lambda key, x0: traced(key, x0, h)


def _old_run(algo, num_steps: int, thin: int):
    """``(key, x0) -> kept positions`` of the ``run`` before chunking (bip 6f1f69e): ONE jitted
    program, a scan over kept blocks of a scan over ``thin`` steps of ``vmap(algo.step)``
    with the divergence check and info sums, the algorithm's arrays traced, the draws stacked
    on the device."""
    structure, arrays = split_algorithm(algo)

    @jax.jit
    def loop(arrays, key, x0):
        algorithm = merge_algorithm(structure, arrays)
        num_chains = x0.shape[0]
        state = jax.vmap(algorithm.init)(x0)
        _, info = jax.eval_shape(jax.vmap(algorithm.step), jax.random.split(key, num_chains), state)
        info_sum = jax.tree_util.tree_map(lambda i: jnp.zeros(i.shape, i.dtype), info)
        carry = (state, jnp.zeros(num_chains, bool), jnp.full(num_chains, -1), info_sum)

        def step(carry, i):
            state, diverged, diverged_at, info_sum = carry
            keys = jax.random.split(jax.random.fold_in(key, i), num_chains)
            new, info = jax.vmap(algorithm.step)(keys, state)
            ok = chain_ok(new, MAX_NORM) & ~diverged
            newly = ~ok & ~diverged
            info_sum = jax.tree_util.tree_map(
                lambda s, a: s + jnp.where(ok, a, 0.0).astype(s.dtype), info_sum, info
            )
            state = tree_where(ok, new, state)
            return (state, diverged | newly, jnp.where(newly, i, diverged_at), info_sum), None

        def block(carry, b):
            carry, _ = jax.lax.scan(step, carry, b * thin + jnp.arange(thin))
            return carry, carry[0].position

        # the final carry is an output, as it was run's: unused, XLA would drop the info sums
        return jax.lax.scan(block, carry, jnp.arange(num_steps // thin))

    return lambda key, x0: loop(arrays, key, x0)[1]


def _timed(fn, *args, clock=time.perf_counter) -> float:
    t0 = clock()
    jax.block_until_ready(fn(*args))
    return clock() - t0


def _interleaved(variants: dict, key, x0, repeats: int, clock=time.perf_counter) -> dict:
    """Times (s, of ``clock``: wall by default) of ``repeats`` calls of every variant,
    interleaved so that the load of the shared cores falls on all alike."""
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(_timed(fn, key, x0, clock=clock))
    return times


def bench(num_chains: int, num_steps: int, repeats: int, dtype) -> dict:
    """Best-of-``repeats`` wall times (s) of every variant for one dtype."""
    # float32 runs with x64 off: under x64, BlackJAX's generate_gaussian_noise returns float64
    # noise for float32 positions, and run()'s scan then rejects the promoted carry
    jax.config.update("jax_enable_x64", jnp.dtype(dtype) == jnp.float64)
    data = bip.manifolds.VonMises(bip.manifolds.Circle(), kappa=KAPPA, loc=np.pi)
    prior = bip.priors.exact(data)
    h = float(bip.samplers.default_step_size(SIGMA, 0.0))
    x0 = data.sample(jax.random.key(0), (num_chains,)).astype(dtype)
    key = jax.random.key(1)

    variants = {
        "library run()": _library(prior, h, num_steps),
        "hand": _loop(prior, h, num_steps),
        "hand + divergence check": _loop(prior, h, num_steps, check=True),
        "hand + info sum": _loop(prior, h, num_steps, info=True),
        "hand + both + BlackJAX kernel": _loop(
            prior, h, num_steps, blackjax=True, check=True, info=True
        ),
        "run() fixed cost (1 step)": _library(prior, h, 1),
        "posteriors.sample() (prior only)": _posterior(prior, h, num_steps),
    }
    final = {name: jax.block_until_ready(fn(key, x0)) for name, fn in variants.items()}
    assert final["library run()"].dtype == dtype, final["library run()"].dtype
    # same arithmetic and noise: the loops agree up to rounding (XLA fuses differently)
    difference = float(jnp.max(jnp.abs(final["library run()"] - final["hand"])))
    times = _interleaved(variants, key, x0, repeats)
    best = {name: min(t) for name, t in times.items()}
    return {
        "dtype": jnp.dtype(dtype).name,
        "chains": num_chains,
        "steps": num_steps,
        "best_s": best,
        "times_s": times,
        "library_rate": num_chains * num_steps / best["library run()"],
        "hand_rate": num_chains * num_steps / best["hand"],
        "ratio": best["library run()"] / best["hand"],
        "max_abs_difference": difference,
    }


def chunk_cost(num_chains: int, num_steps: int, thin: int, repeats: int) -> dict:
    """Float64 wall and CPU times (s) of ``run``'s chunked host loop against one big scan.

    ``chunked``: ``bip.samplers.run`` as is (chunks of about a second, draws copied to host
    memory after each); ``one chunk``: the same program called once (``chunk_size`` = all
    steps); ``one scan``: the old ``run``, one jitted scan over the whole run keeping the
    draws on the device (``_old_run``); ``hand scan``: the same loop hand-written
    (``_loop(..., thin=thin)``, BlackJAX kernel, divergence check, info sum). Best of
    ``repeats``, interleaved; the process CPU time (all threads) is the steadier measure on a
    loaded machine, where wall times move by +-30%. ``ratio``: chunked / one chunk, the cost
    of the host loop. ``hand scan`` returns only the kept positions, so XLA drops its info
    sums: it is faster than any loop that reports them."""
    jax.config.update("jax_enable_x64", True)
    data = bip.manifolds.VonMises(bip.manifolds.Circle(), kappa=KAPPA, loc=np.pi)
    prior = bip.priors.exact(data)
    h = float(bip.samplers.default_step_size(SIGMA, 0.0))
    x0 = data.sample(jax.random.key(0), (num_chains,))
    algo = bip.samplers.ula(lambda x: prior.score(x, SIGMA), h)

    def library(chunk_size):
        def call(key, x):
            return bip.samplers.run(
                key, algo, x, num_steps, thin=thin, progress=False, chunk_size=chunk_size
            ).samples

        return call

    variants = {
        "chunked": library(None),
        "one chunk": library(num_steps),
        "one scan": _old_run(algo, num_steps, thin),
        "hand scan": _loop(prior, h, num_steps, blackjax=True, check=True, info=True, thin=thin),
    }
    key = jax.random.key(1)
    draws = {name: np.asarray(jax.block_until_ready(fn(key, x0))) for name, fn in variants.items()}
    times = _interleaved(variants, key, x0, repeats)
    cpu = _interleaved(variants, key, x0, repeats, clock=time.process_time)
    best = {name: min(t) for name, t in times.items()}
    best_cpu = {name: min(t) for name, t in cpu.items()}
    return {
        "chains": num_chains,
        "steps": num_steps,
        "thin": thin,
        "best_s": best,
        "times_s": times,
        "best_cpu_s": best_cpu,
        "ratio": best["chunked"] / best["one chunk"],
        "cpu_ratio": best_cpu["chunked"] / best_cpu["one chunk"],
        "cpu_ratio_one_scan": best_cpu["chunked"] / best_cpu["one scan"],
        "same_draws_chunked_one_chunk": bool(np.array_equal(draws["chunked"], draws["one chunk"])),
        "max_abs_difference_one_scan": float(np.max(np.abs(draws["chunked"] - draws["one scan"]))),
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument(
        "--chunks", action="store_true", help="only the chunked-loop cost (float64)"
    )
    parser.add_argument("--thins", default="0,10", help="--chunks: thinnings (0: all steps)")
    args = parser.parse_args(argv)
    if args.chunks:
        return _print_chunk_costs(args)
    results = []
    for name in args.dtypes.split(","):
        r = bench(args.chains, args.steps, args.repeats, jnp.dtype(name))
        results.append(r)
        print(
            f"{r['dtype']}, {r['chains']} chains x {r['steps']} steps: "
            f"library {r['library_rate'] / 1e6:.2f} M chain-steps/s, "
            f"hand {r['hand_rate'] / 1e6:.2f} M chain-steps/s, "
            f"library / hand time {r['ratio']:.2f} "
            f"(max |x_library - x_hand| = {r['max_abs_difference']:.1e})"
        )
        for variant, t in r["best_s"].items():
            print(f"    {variant:32s} {t:7.3f} s  ({t / r['best_s']['hand']:.2f} x hand)")
    return results


def _print_chunk_costs(args) -> list[dict]:
    results = []
    for thin in (int(t) or args.steps for t in args.thins.split(",")):
        r = chunk_cost(args.chains, args.steps, thin, args.repeats)
        results.append(r)
        b = r["best_s"]
        print(
            f"float64, {r['chains']} chains x {r['steps']} steps, thin {thin}: chunked "
            f"{b['chunked']:.3f} s, one chunk {b['one chunk']:.3f} s, one scan (old run) "
            f"{b['one scan']:.3f} s; host-loop cost chunked / one chunk {r['ratio']:.3f} (wall), "
            f"{r['cpu_ratio']:.3f} (CPU time); chunked / one scan {r['cpu_ratio_one_scan']:.3f} "
            f"(CPU time); same draws as one chunk: "
            f"{r['same_draws_chunked_one_chunk']}, max |chunked - one scan| "
            f"{r['max_abs_difference_one_scan']:.1e}"
        )
        c = r["best_cpu_s"]
        print(
            f"    CPU time: chunked {c['chunked']:.3f} s, one chunk {c['one chunk']:.3f} s, "
            f"one scan (old run) {c['one scan']:.3f} s, hand scan {c['hand scan']:.3f} s"
        )
    return results


if __name__ == "__main__":
    main()
