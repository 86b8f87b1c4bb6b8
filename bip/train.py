"""Train score networks by denoising score matching, from TOML recipes (``bip.recipes``).

Training draws fresh data every step (``u ~ law``, ``z ~ N(0, I)``, ``log sigma`` uniform),
from ``jax.random.fold_in(key, step)``: the randomness of a step depends on its index only,
so a run resumed from a checkpoint is identical to an uninterrupted one. Steps run in jitted
``lax.scan`` chunks; after each chunk a tqdm bar advances, and every ``checkpoint_every``
steps the full state (weights, optimiser, EMA, loss curve) is written atomically (temp file
in the same folder, then ``os.replace``) to ``checkpoint.npz``.

(U-Nets run the chunk as a loop of jitted steps: XLA:CPU is much slower at convolution
gradients inside a ``lax.scan``.)

The output folder gets ``recipe.toml``, ``weights.safetensors`` (EMA weights), ``model.json``
(sha256 of both files, steps, losses, measured quality) and a ``README.md`` model card
(``bip.priorfile`` holds the format; ``bip.priorfile.load_prior(folder)`` loads it back).
The measured quality comes from ``bip.cards.evaluate``; ``bip.cards.evaluate_folder``
(``bip train ... --eval-only``) measures it again for a trained folder.

Example:
    >>> result = bip.train.train("priors/circle-vonmises/recipe.toml", "runs/circle")
    >>> result.final_loss, result.card["quality"]["rel_error_at_0.1"]
    $ bip train priors/circle-vonmises/recipe.toml --out runs/circle
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bip import cards, networks, outputs, priorfile
from bip.recipes import Recipe, build_law, load_recipe, net_config, recipe_to_toml, training_batch
from bip.scoreprior import ScorePrior
from bip.specs import TrainingSpec

Array = jax.Array

CHECKPOINT_FILE = "checkpoint.npz"
CHECKPOINT_FORMAT = "bip-train-checkpoint/1"


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What ``train`` returns.

    Attributes:
        out_dir: the output folder.
        prior: the EMA network as a ``ScorePrior`` (also for an interrupted run).
        losses: the per-step training loss, ``(steps_done,)`` float32.
        steps_done: the number of optimisation steps taken so far.
        complete: whether all the recipe's steps are done (weights and card written).
        final_loss: mean loss over the last ``min(100, steps_done)`` steps.
        seconds: wall time of this call.
        card: the ``model.json`` content (None for an incomplete run).
    """

    out_dir: Path
    prior: ScorePrior
    losses: np.ndarray
    steps_done: int
    complete: bool
    final_loss: float
    seconds: float
    card: dict[str, Any] | None


def _dsm_loss(graphdef, params, x0, sigma, z):
    """EDM-weighted denoising score matching: ``mean |F - (sigma x0 / sd - sd z) / sqrt(T)|^2``.

    With ``x = x0 + sigma z`` and ``T = sigma^2 + sd^2`` this is ``|D - x0|^2 / c_out^2`` for the
    denoiser ``D = c_skip x + c_out F``, written so that nothing cancels in float32. ``x0`` and
    ``z`` are ``(batch, *event)``, ``sigma`` is ``(batch,)``; the mean runs over every entry.
    """
    model = nnx.merge(graphdef, params)
    sd = jnp.float32(model.sigma_data)
    trail = (1,) * (x0.ndim - 1)
    total = (sigma**2 + sd**2).reshape(sigma.shape + trail)
    sig = sigma.reshape(sigma.shape + trail)
    x = x0 + sig * z
    f = model.body(x * jax.lax.rsqrt(total), jnp.log(sigma))
    target = (sig * x0 / sd - sd * z) / jnp.sqrt(total)
    return jnp.mean((f - target) ** 2)


def _make_optimizer(training: TrainingSpec) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=training.lr,
        warmup_steps=training.warmup,
        decay_steps=training.steps,
        end_value=training.lr * training.final_lr_fraction,
    )
    return optax.chain(
        optax.clip_by_global_norm(training.clip),
        optax.adamw(schedule, weight_decay=training.weight_decay),
    )


@functools.lru_cache(maxsize=16)
def _chunk_fn(graphdef, training: TrainingSpec, event_shape: tuple, per_step: bool = False):
    """``(optimizer, run_chunk)`` for a network architecture and a ``[training]`` table.

    ``run_chunk(carry, steps, law, train_key) -> (carry, losses)`` is jitted and scans the
    optimisation step over the step indices ``steps``; cached so that repeated runs in one
    process (tests, sweeps) compile once per architecture, recipe and chunk length.
    ``event_shape`` is the network's point shape (``model.event_shape``). ``per_step``: run
    the chunk as a Python loop of jitted steps instead of one ``lax.scan`` (convolutional
    nets; the same numbers, the randomness of a step depending on its index only).
    """
    tx = _make_optimizer(training)
    batch = training.batch
    log_lo = math.log(training.sigma_min)
    log_hi = math.log(training.sigma_max)
    ema_rate = training.ema
    lognormal = training.sigma_sampling == "lognormal"
    log_mean, log_std = training.sigma_log_mean, training.sigma_log_std
    f32 = jnp.float32

    def step(carry, t, law, train_key):
        params, opt_state, ema = carry
        _, k_sigma, k_noise = jax.random.split(jax.random.fold_in(train_key, t), 3)
        x0 = training_batch(law, train_key, t, batch, event_shape)
        if lognormal:  # log sigma ~ N(mean, std^2) truncated to [log sigma_min, log sigma_max]
            u = jax.random.truncated_normal(
                k_sigma, (log_lo - log_mean) / log_std, (log_hi - log_mean) / log_std, (batch,), f32
            )
            sigma = jnp.exp(log_mean + log_std * u)
        else:
            sigma = jnp.exp(jax.random.uniform(k_sigma, (batch,), f32, log_lo, log_hi))
        z = jax.random.normal(k_noise, x0.shape, f32)
        loss, grads = jax.value_and_grad(lambda p: _dsm_loss(graphdef, p, x0, sigma, z))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        tf = t.astype(f32)
        decay = jnp.minimum(f32(ema_rate), (1 + tf) / (10 + tf))
        ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, params)
        return (params, opt_state, ema), loss

    if not per_step:

        @jax.jit
        def run_chunk(carry, steps, law, train_key):
            return jax.lax.scan(lambda c, t: step(c, t, law, train_key), carry, steps)

        return tx, run_chunk

    step_jit = jax.jit(step)

    def run_chunk(carry, steps, law, train_key):
        # XLA:CPU runs the gradients of convolutions ~25x slower inside a while loop
        # (lax.scan) than as a top-level program: one jitted call per step instead
        losses = []
        for t in np.asarray(steps):
            carry, loss = step_jit(carry, jnp.asarray(t, jnp.int32), law, train_key)
            losses.append(loss)
        return carry, jnp.stack(losses)

    return tx, run_chunk


def _is_training_folder(folder: Path) -> bool:
    """A folder ``bip train`` wrote before output manifests existed: a checkpoint or a card."""
    return (folder / CHECKPOINT_FILE).is_file() or (folder / priorfile.CARD_FILE).is_file()


def _mark(out_dir: Path, recipe: Recipe, step: int, complete: bool) -> None:
    """The output manifest of a training folder (``bip.outputs``)."""
    content = outputs.manifest(
        "train",
        status="complete" if complete else "incomplete",
        recipe=recipe.name,
        steps_done=int(step),
        steps=recipe.training.steps,
    )
    outputs.write_manifest(out_dir, content)


class TrainInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``train``: the checkpoint at ``steps_done`` of ``steps`` was saved in
    ``checkpoint`` (the same call resumes from it)."""

    def __init__(self, steps_done: int, steps: int, checkpoint: Path):
        super().__init__(f"interrupted at step {steps_done} of {steps}")
        self.steps_done, self.steps, self.checkpoint = steps_done, steps, checkpoint


def _save_checkpoint(out_dir: Path, recipe: Recipe, carry, step: int, losses: np.ndarray):
    leaves = jax.tree.leaves(jax.device_get(carry))
    arrays = {
        "format": np.array(CHECKPOINT_FORMAT),
        "recipe_sha256": np.array(recipe.config_sha256),
        "step": np.array(step, dtype=np.int64),
        "losses": np.asarray(losses, dtype=np.float32),
    }
    arrays.update({f"leaf_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    outputs.atomic_write_bytes(out_dir / CHECKPOINT_FILE, buffer.getvalue())
    _mark(out_dir, recipe, step, complete=False)


def _load_checkpoint(path: Path, recipe: Recipe, carry):
    try:
        with np.load(path, allow_pickle=False) as f:
            stored = {k: f[k] for k in f.files}
    except Exception as err:
        raise ValueError(
            f"checkpoint {path} is unreadable ({err}); delete it or train with resume=False"
        ) from err
    if str(stored.get("format")) != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path} is not a {CHECKPOINT_FORMAT} file")
    if str(stored["recipe_sha256"]) != recipe.config_sha256:
        raise ValueError(
            f"checkpoint {path} was written by a different recipe; use another output folder "
            "or resume=False (--no-resume) to start over"
        )
    leaves, treedef = jax.tree.flatten(carry)
    new_leaves = []
    for i, leaf in enumerate(leaves):
        value = stored.get(f"leaf_{i:05d}")
        if value is None or value.shape != leaf.shape or value.dtype != leaf.dtype:
            raise ValueError(f"checkpoint {path} does not match the recipe's network (leaf {i})")
        new_leaves.append(jnp.asarray(value))
    step = int(stored["step"])
    return jax.tree.unflatten(treedef, new_leaves), step, stored["losses"].astype(np.float32)


def _final_loss(losses: np.ndarray) -> float:
    return float(np.mean(losses[-100:])) if len(losses) else math.nan


def _versions() -> dict[str, str]:
    import flax

    return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__}


def train(
    recipe: str | os.PathLike | Mapping[str, Any] | Recipe,
    out_dir: str | os.PathLike,
    resume: bool = True,
    *,
    stop_after: int | None = None,
    progress: bool = True,
    evaluate: bool = True,
    keep_checkpoint: bool = True,
    machine: str | None = None,
) -> TrainResult:
    """Train a score network by denoising score matching as ``recipe`` says.

    Args:
        recipe: a TOML recipe path, a mapping of the same shape, or a ``Recipe``.
        out_dir: output folder (created); gets ``checkpoint.npz`` during training and
            ``recipe.toml``, ``weights.safetensors``, ``model.json``, ``README.md`` at the end.
        resume: continue from ``out_dir/checkpoint.npz`` if there is one (it must come from
            the same recipe); ``False`` starts over.
        stop_after: stop once this many steps are done, leaving a checkpoint, as if the run
            were interrupted there (for tests and for splitting a long run).
        progress: show a tqdm progress bar (updated once per jitted chunk).
        evaluate: measure the score-error profile against the exact prior of the recipe's
            law (``bip.profile.score_error_profile``, sigmas 0.01..1) and put it in the card.
        keep_checkpoint: keep ``checkpoint.npz`` after a complete run (resuming it is then a
            no-op); ``False`` deletes it so the folder holds just the prior.
        machine: a description of the machine, recorded in the card next to the timings.

    Returns:
        A ``TrainResult`` (``.prior``, ``.losses``, ``.card`` ...).

    Example:
        >>> result = train("priors/circle-vonmises/recipe.toml", "runs/circle")
        >>> prior = bip.networks.load_prior("runs/circle")
    """
    start_time = time.perf_counter()
    recipe = load_recipe(recipe)
    if stop_after is not None and (isinstance(stop_after, bool) or int(stop_after) < 0):
        raise ValueError(f"stop_after must be an integer >= 0, got {stop_after!r}")
    out_dir = outputs.check(out_dir, resume=True, legacy=_is_training_folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    training = recipe.training
    total = training.steps
    law = build_law(recipe)
    event_shape = tuple(law.event_shape)

    init_key, train_key = jax.random.split(jax.random.key(recipe.seed))
    model = networks.build_network(net_config(recipe, law), init_key)
    graphdef, params = nnx.split(model)
    tx, run_chunk = _chunk_fn(
        graphdef,
        training,
        tuple(model.event_shape),
        isinstance(model, networks.UNet),
    )
    carry = (params, tx.init(params), params)
    step, losses = 0, np.zeros((0,), np.float32)
    checkpoint = out_dir / CHECKPOINT_FILE
    if resume and checkpoint.is_file():
        carry, step, losses = _load_checkpoint(checkpoint, recipe, carry)

    target = total if stop_after is None else min(total, int(stop_after))
    chunk, every = training.chunk, training.checkpoint_every
    loss_chunks = [losses]
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total,
        initial=step,
        disable=not progress,
        desc=recipe.name or "train",
        unit="step",
        dynamic_ncols=True,
    )
    try:
        while step < target:
            length = min(chunk, target - step, every - step % every)
            steps = jnp.arange(step, step + length, dtype=jnp.int32)
            carry, chunk_losses = run_chunk(carry, steps, law, train_key)
            chunk_losses = np.asarray(chunk_losses, np.float32)
            if not np.all(np.isfinite(chunk_losses)):
                raise FloatingPointError(
                    f"training loss became non-finite between steps {step} and {step + length}; "
                    "lower [training] lr or raise [training] clip"
                )
            step += length
            loss_chunks.append(chunk_losses)
            bar.update(length)
            bar.set_postfix(loss=f"{float(np.mean(chunk_losses)):.4f}")
            if step % every == 0 or step == target:
                _save_checkpoint(out_dir, recipe, carry, step, np.concatenate(loss_chunks))
    except KeyboardInterrupt:
        outputs.SAVING.set()
        _save_checkpoint(out_dir, recipe, carry, step, np.concatenate(loss_chunks))
        bar.close()
        raise TrainInterrupted(step, total, checkpoint) from None
    bar.close()
    losses = np.concatenate(loss_chunks)
    ema = carry[2]
    prior = networks.network_prior(
        (graphdef, ema), event_shape, manifold=law.manifold, name=recipe.name or "network"
    )
    complete = step >= total
    card = None
    if complete:
        card = _export(out_dir, recipe, law, prior, ema, losses, evaluate, start_time, machine)
        if not keep_checkpoint:
            checkpoint.unlink(missing_ok=True)
    return TrainResult(
        out_dir=out_dir,
        prior=prior,
        losses=losses,
        steps_done=step,
        complete=complete,
        final_loss=_final_loss(losses),
        seconds=time.perf_counter() - start_time,
        card=card,
    )


def _export(
    out_dir, recipe, law, prior, ema, losses, evaluate, start_time, machine=None
) -> dict[str, Any]:
    recipe_text = recipe.text if recipe.text is not None else recipe_to_toml(recipe)
    recipe_path = out_dir / priorfile.RECIPE_FILE
    if not (recipe_path.is_file() and recipe_path.read_text() == recipe_text):
        outputs.atomic_write_bytes(recipe_path, recipe_text.encode())
    weights = priorfile.weights_to_bytes(ema, {"name": recipe.name or ""})
    outputs.atomic_write_bytes(out_dir / priorfile.WEIGHTS_FILE, weights)
    train_seconds = round(time.perf_counter() - start_time, 1)
    eval_start = time.perf_counter()
    quality = cards.evaluate(prior, law, recipe) if evaluate else None
    eval_seconds = round(time.perf_counter() - eval_start, 1) if evaluate else None
    chunk_means = [float(np.mean(c)) for c in np.array_split(losses, min(len(losses), 50))]
    num_params = sum(int(np.size(x)) for x in jax.tree.leaves(ema))
    card = {
        "format": priorfile.FORMAT,
        "name": recipe.name,
        "description": recipe.description,
        "weights": priorfile.WEIGHTS_FILE,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "weights_bytes": len(weights),
        "recipe": priorfile.RECIPE_FILE,
        "recipe_sha256": hashlib.sha256(recipe_text.encode()).hexdigest(),
        "recipe_config_sha256": recipe.config_sha256,
        "event_shape": list(law.event_shape),
        "net": net_config(recipe, law),
        "num_params": num_params,
        "parametrisation": "EDM preconditioning; the net F gives sigma^2 s = "
        "-sigma^2/(sigma^2+sd^2) x + c_out F(c_in x, log sigma)",
        "steps": int(len(losses)),
        "final_loss": _final_loss(losses),
        "loss_curve_50": chunk_means,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "quality": quality,
        "versions": _versions(),
    }
    if machine:
        card["machine"] = machine
    cards.write(out_dir, card, recipe)
    _mark(out_dir, recipe, card["steps"], complete=True)
    return card
