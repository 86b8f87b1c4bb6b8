"""Benchmark the shipped learned score priors: score evaluations/s and training steps/s.

Usage: ``python bench/bench_networks.py [--seconds 2] [--train-steps 200]``

For each prior in ``priors/`` (the toy MLPs and the image U-Nets): score-network evaluations
per second (jitted, batch 256, float32 points or images, one sigma per point), and
optimisation steps per second of its recipe (the trainer's own chunks of DSM steps with fresh
data -- one ``lax.scan`` for MLPs, a loop of jitted steps for U-Nets -- at the recipe's batch
size).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from flax import nnx

from bip import networks, priorfile, recipes
from bip import train as train_mod

BATCH = 256


def _timeit(fn, seconds: float) -> float:
    """Seconds per call of ``fn()`` (already compiled), repeated for about ``seconds``."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls


def bench_score(name: str, seconds: float) -> float:
    """Score-network evaluations (points) per second, batch 256, float32."""
    prior = networks.load_prior(name)
    key = jax.random.key(0)
    x = jax.random.normal(key, (BATCH, *prior.event_shape), jnp.float32)
    sigma = jnp.exp(
        jax.random.uniform(jax.random.fold_in(key, 1), (BATCH,), jnp.float32, -4.6, 3.9)
    )
    score = jax.jit(lambda prior, x, sigma: prior.score_fn(prior.params, x, sigma))
    run = lambda: score(prior, x, sigma).block_until_ready()
    return BATCH / _timeit(run, seconds)


def bench_train(name: str, steps: int, seconds: float) -> tuple[float, int]:
    """Training steps per second of the prior's recipe, and its batch size."""
    recipe = recipes.load_recipe(priorfile.PRIORS_DIR / name / priorfile.RECIPE_FILE)
    law = recipes.build_law(recipe)
    model = networks.build_network(recipes.net_config(recipe, law), jax.random.key(0))
    graphdef, params = nnx.split(model)
    tx, run_chunk = train_mod._chunk_fn(
        graphdef,
        recipe.training,
        tuple(model.event_shape),
        isinstance(model, networks.UNet),
    )
    carry = (params, tx.init(params), params)
    indices = jnp.arange(steps, dtype=jnp.int32)
    key = jax.random.key(1)

    def run():
        out = run_chunk(carry, indices, law, key)
        jax.block_until_ready(out)

    return steps / _timeit(run, seconds), recipe.training.batch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="timing budget per entry")
    parser.add_argument("--train-steps", type=int, default=200, help="steps per timed chunk")
    parser.add_argument("--unet-train-steps", type=int, default=20, help="the same, U-Nets")
    parser.add_argument("names", nargs="*", help="priors to time (default: all in priors/)")
    args = parser.parse_args(argv)
    names = args.names or priorfile.available_priors()
    if not names:
        print("no priors found in", priorfile.PRIORS_DIR)
        return
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, batch {BATCH} float32")
    rows = []
    for name in names:
        card = priorfile.read_card(priorfile.PRIORS_DIR / name)
        unet = card["net"].get("kind", "mlp") == "unet"
        evals = bench_score(name, args.seconds)
        train_steps = args.unet_train_steps if unet else args.train_steps
        steps, batch = bench_train(name, train_steps, args.seconds)
        shape = "x".join(str(n) for n in card["event_shape"])
        kind = card["net"].get("kind", "mlp")
        rows.append((name, kind, shape, card.get("num_params", 0), evals, steps, batch))
    header = (
        f"{'prior':<20} {'net':>5} {'event':>6} {'params':>8} {'score evals/s':>14} "
        f"{'train steps/s':>14} {'batch':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, kind, shape, params, evals, steps, batch in rows:
        print(
            f"{name:<20} {kind:>5} {shape:>6} {params:>8d} {evals:>14.3g} {steps:>14.1f} "
            f"{batch:>6d}"
        )


if __name__ == "__main__":
    main()
