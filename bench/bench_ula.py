"""Benchmark: cost per ULA chain-step of ``bip.samplers.run`` against a hand-written scan.

The exact circle prior (von Mises, kappa = 4, loc = pi), sigma = 0.1, step
``default_step_size(0.1, 0) = 1e-3``, 10^4 chains started on the data law, 1000 steps, in
float32 and float64 and for each PRNG key implementation (``threefry``, ``rbg``,
``unsafe_rbg``: ``run(..., key_impl=...)``). Timed side by side in the same run:

- ``library``: ``bip.samplers.run(key, bip.samplers.ula(drift, h), x0, steps, thin=steps,
  key_impl=...)``, the whole call as a user makes it (BlackJAX sgld kernel, divergence
  check and freezing, info sums, one kept draw, the chunked host loop);
- ``hand``: a minimal jitted ``lax.scan`` over steps of ``vmap(x + h * prior.score(x,
  sigma) + sqrt(2 h) z)`` with the same RNG usage (per step ``split(fold_in(key, step),
  chains)``, one ``normal`` draw per chain) and the same key implementation;
- the ablation (threefry): the hand loop plus the info sum, plus the old inline divergence
  check (checked in the step that made the state: XLA then recomputes the new state inside
  the check's and the select's fusions, which ``run`` avoids by checking the carried
  candidate in the next step), the library with thinning 10 and streaming statistics
  (``keep_samples=False``), ``run``'s per-call fixed cost (1 step) and
  ``posteriors.sample``.

Times are process CPU time (all threads; steadier than wall time on a loaded machine), the
best of ``--repeats`` calls after a warm-up, interleaved so that the load of the shared
cores falls on all variants alike. float32 runs with x64 off.

Run: ``python bench/bench_ula.py`` (a few minutes on 2 cores) or ``--chains 2000 --steps
500``; ``--chunks`` for the cost of the chunked host loop.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

import bip
from bip.chains import chain_ok, merge_algorithm, split_algorithm, tree_where, with_key_impl
from bip.kernels import LangevinState, build_kernel

SIGMA = 0.1
KAPPA = 4.0
MAX_NORM = 1e8


def _library(prior, h: float, num_steps: int, key_impl: str | None = None, thin=None):
    """``(key, x0) -> final positions`` through ``bip.samplers.run`` (one kept draw; with
    ``thin``, streaming mean and variance of every ``thin``-th state and no kept draws)."""
    algo = bip.samplers.ula(lambda x: prior.score(x, SIGMA), h)
    kwargs = {"thin": num_steps, "key_impl": key_impl, "progress": False}
    if thin is not None:
        kwargs.update(thin=thin, keep_samples=False, statistics=bip.streaming.mean_var())

    def call(key, x0):
        out = bip.samplers.run(key, algo, x0, num_steps, **kwargs)
        return out.final_state.position

    return call


def _posterior(prior, h: float, num_steps: int):
    """The same chain through ``bip.posteriors.sample``: a new drift pytree every call, whose
    compiled loop is reused (only its arrays, the key and ``x0`` are new)."""

    def call(key, x0):
        out = bip.posteriors.sample(
            key,
            prior,
            sigma=SIGMA,
            step_size=h,
            num_chains=x0.shape[0],
            num_steps=num_steps,
            thin=num_steps,
            initial_positions=x0,
            progress=False,
        )
        return out.samples[:, -1]

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


def bench(
    num_chains: int,
    num_steps: int,
    repeats: int,
    dtype,
    key_impl: str = "threefry",
    ablation: bool = True,
    clock=time.process_time,
) -> dict:
    """Best-of-``repeats`` times (s of ``clock``) of every variant for one dtype and key
    implementation; ``ablation`` adds the variants between library and hand."""
    # float32 runs with x64 off: under x64, BlackJAX's generate_gaussian_noise returns float64
    # noise for float32 positions
    jax.config.update("jax_enable_x64", jnp.dtype(dtype) == jnp.float64)
    data = bip.manifolds.VonMises(bip.manifolds.Circle(), kappa=KAPPA, loc=np.pi)
    prior = bip.priors.exact(data)
    h = float(bip.samplers.default_step_size(SIGMA, 0.0))
    x0 = data.sample(jax.random.key(0), (num_chains,)).astype(dtype)
    key = jax.random.key(1)
    hand_key = with_key_impl(key, key_impl)  # what run(..., key_impl=...) does with the key

    def with_hand_key(fn):
        return lambda _key, x: fn(hand_key, x)

    variants = {
        "library run()": _library(prior, h, num_steps, key_impl),
        "hand": with_hand_key(_loop(prior, h, num_steps)),
    }
    if ablation:
        variants |= {
            "hand + info sum": with_hand_key(_loop(prior, h, num_steps, info=True)),
            "hand + info + inline check": with_hand_key(
                _loop(prior, h, num_steps, blackjax=True, check=True, info=True)
            ),
            "library, thin 10 + mean/var stats": _library(prior, h, num_steps, key_impl, 10),
            "run() fixed cost (1 step)": _library(prior, h, 1, key_impl),
            "posteriors.sample() (prior only)": _posterior(prior, h, num_steps),
        }
    final = {name: jax.block_until_ready(fn(key, x0)) for name, fn in variants.items()}
    assert final["library run()"].dtype == dtype, final["library run()"].dtype
    # same arithmetic and noise: the loops agree up to rounding (XLA fuses differently)
    difference = float(jnp.max(jnp.abs(final["library run()"] - final["hand"])))
    times = _interleaved(variants, key, x0, repeats, clock=clock)
    best = {name: min(t) for name, t in times.items()}
    return {
        "dtype": jnp.dtype(dtype).name,
        "key_impl": key_impl,
        "chains": num_chains,
        "steps": num_steps,
        "best_s": best,
        "times_s": times,
        "library_rate": num_chains * num_steps / best["library run()"],
        "hand_rate": num_chains * num_steps / best["hand"],
        "ratio": best["library run()"] / best["hand"],
        "max_abs_difference": difference,
    }


def table(num_chains: int, num_steps: int, repeats: int, dtypes, key_impls) -> list[dict]:
    """``bench`` for every dtype and key implementation (the ablation for threefry only),
    printed as the key-implementation table: ns per chain-step of library and hand, ratio."""
    rows = []
    print(f"{num_chains} chains x {num_steps} steps, exact circle, CPU time per chain-step")
    print(f"{'dtype':8s} {'key_impl':10s} {'library':>9s} {'hand':>9s} {'ratio':>6s}")
    for dtype in dtypes:
        for impl in key_impls:
            r = bench(num_chains, num_steps, repeats, jnp.dtype(dtype), impl, impl == "threefry")
            rows.append(r)
            ns = 1e9 / (num_chains * num_steps)
            print(
                f"{r['dtype']:8s} {impl:10s} {r['best_s']['library run()'] * ns:7.1f}ns "
                f"{r['best_s']['hand'] * ns:7.1f}ns {r['ratio']:6.3f}"
            )
            if len(r["best_s"]) > 2:
                for variant, t in r["best_s"].items():
                    print(
                        f"    {variant:36s} {t * ns:7.1f}ns  {t / r['best_s']['hand']:.3f} x hand"
                    )
    return rows


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
        "max_abs_difference_one_scan": float(  # the old run's draws are step-major
            np.max(np.abs(draws["chunked"] - np.swapaxes(draws["one scan"], 0, 1)))
        ),
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--key-impls", default=",".join(bip.chains.KEY_IMPLS))
    parser.add_argument(
        "--chunks", action="store_true", help="only the chunked-loop cost (float64)"
    )
    parser.add_argument("--thins", default="0,10", help="--chunks: thinnings (0: all steps)")
    args = parser.parse_args(argv)
    if args.chunks:
        return _print_chunk_costs(args)
    return table(
        args.chains, args.steps, args.repeats, args.dtypes.split(","), args.key_impls.split(",")
    )


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
