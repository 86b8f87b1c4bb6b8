"""Train score networks by denoising score matching, from small declarative TOML recipes.

A recipe names the data law, the network and the optimisation; everything else is derived
from it and its seed, so the same recipe gives the same weights (on the same machine)::

    name = "circle-vonmises"
    seed = 0

    [data]                       # the data law on a toy manifold
    manifold = "circle"          # circle (radius) | ellipse (a, b) | sphere (dim, radius)
    law = "vonmises"             # vonmises (kappa, loc) | vmf (kappa, mean_direction) | uniform
    kappa = 1.0
    loc = 0.0

    [net]                        # bip.networks.ScoreNet
    width = 64
    depth = 3

    [training]
    steps = 4000
    batch = 512
    lr = 3e-3                    # AdamW peak rate: linear warmup, then cosine decay
    weight_decay = 1e-4
    clip = 1.0                   # global-norm gradient clipping
    ema = 0.999                  # EMA of the weights (the EMA weights are exported)
    sigma_min = 0.01             # sigma ~ log-uniform on [sigma_min, sigma_max]
    sigma_max = 50.0

Training draws fresh data every step (``u ~ law``, ``z ~ N(0, I)``, ``log sigma`` uniform),
from ``jax.random.fold_in(key, step)``: the randomness of a step depends on its index only,
so a run resumed from a checkpoint is identical to an uninterrupted one. Steps run in jitted
``lax.scan`` chunks; after each chunk a tqdm bar advances, and every ``checkpoint_every``
steps the full state (weights, optimiser, EMA, loss curve) is written atomically (temp file
in the same folder, then ``os.replace``) to ``checkpoint.npz``.

The output folder gets ``recipe.toml``, ``weights.safetensors`` (EMA weights), ``model.json``
(sha256 of both files, steps, losses, measured quality) and a ``README.md`` model card;
``bip.networks.load_prior(folder)`` loads it back.

Example:
    >>> result = bip.train.train("priors/circle-vonmises/recipe.toml", "runs/circle")
    >>> result.final_loss, result.card["quality"]["rel_error_at_0.1"]
    $ bip train priors/circle-vonmises/recipe.toml --out runs/circle
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import sys
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bip import manifolds, networks
from bip.priors import ScorePrior

Array = jax.Array

CHECKPOINT_FILE = "checkpoint.npz"
CHECKPOINT_FORMAT = "bip-train-checkpoint/1"
EVAL_SIGMAS = tuple(float(s) for s in np.geomspace(0.01, 1.0, 9))
QUALITY_SIGMA = 0.1


class RecipeError(ValueError):
    """A recipe with an unknown key or a bad value; the message names the file and the key."""


# --------------------------------------------------------------------------- recipe schema

# (kind, default, constraint); kind: "int", "float", "str", "floats"; default None = required.
_REQUIRED = object()
_SCHEMA: dict[str, dict[str, tuple]] = {
    "": {
        "name": ("str", None, None),
        "description": ("str", "", None),
        "seed": ("int", 0, ">=0"),
    },
    "data": {
        "manifold": ("str", _REQUIRED, ("circle", "ellipse", "sphere")),
        "law": ("str", _REQUIRED, ("vonmises", "vmf", "uniform")),
        "radius": ("float", 1.0, ">0"),
        "a": ("float", 1.0, ">0"),
        "b": ("float", 2.0, ">0"),
        "dim": ("int", 3, ">=2"),
        "kappa": ("float", 1.0, ">=0"),
        "loc": ("float", 0.0, "finite"),
        "mean_direction": ("floats", None, None),
    },
    "net": {
        "width": ("int", 128, ">=1"),
        "depth": ("int", 4, ">=1"),
        "mlp_ratio": ("int", 2, ">=1"),
        "num_frequencies": ("int", 16, ">=1"),
        "sigma_data": ("float", 1.0, ">0"),
    },
    "training": {
        "steps": ("int", 2000, ">=1"),
        "batch": ("int", 512, ">=1"),
        "lr": ("float", 3e-3, ">0"),
        "warmup": ("int", None, ">=0"),  # default: min(100, steps // 10)
        "final_lr_fraction": ("float", 0.01, "[0,1]"),
        "weight_decay": ("float", 1e-4, ">=0"),
        "clip": ("float", 1.0, ">0"),
        "ema": ("float", 0.999, "[0,1)"),
        "sigma_min": ("float", 0.01, ">0"),
        "sigma_max": ("float", 50.0, ">0"),
        "chunk": ("int", 100, ">=1"),
        "checkpoint_every": ("int", 500, ">=1"),
    },
}
_EXECUTION_KEYS = ("chunk", "checkpoint_every")  # change them freely when resuming
_MANIFOLD_KEYS = {"circle": {"radius"}, "ellipse": {"a", "b"}, "sphere": {"dim", "radius"}}
_LAW_KEYS = {"vonmises": {"kappa", "loc"}, "vmf": {"kappa", "mean_direction"}, "uniform": set()}
_LAW_MANIFOLDS = {
    "vonmises": ("circle", "ellipse"),
    "vmf": ("sphere",),
    "uniform": ("circle", "ellipse", "sphere"),
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A validated training recipe (every key filled in, defaults included).

    Attributes:
        name: the prior's name (defaults to the recipe file's folder name).
        description: free text.
        seed: the seed of ``jax.random.key``.
        data, net, training: the validated sections as plain dicts.
        source: the file it was read from, or ``"<mapping>"``.
        text: the TOML text as read (written back verbatim next to the weights), or None.
    """

    name: str | None
    description: str
    seed: int
    data: dict[str, Any]
    net: dict[str, Any]
    training: dict[str, Any]
    source: str = "<mapping>"
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as a TOML-shaped dict."""
        top = {"name": self.name, "description": self.description, "seed": self.seed}
        top = {k: v for k, v in top.items() if v is not None}
        return {
            **top,
            "data": dict(self.data),
            "net": dict(self.net),
            "training": dict(self.training),
        }

    @property
    def config_sha256(self) -> str:
        """Hash of what determines the weights: seed, data, net and training, except the
        execution knobs ``chunk`` and ``checkpoint_every`` (not the name or the text)."""
        training = {k: v for k, v in self.training.items() if k not in _EXECUTION_KEYS}
        core = {"seed": self.seed, "data": self.data, "net": self.net, "training": training}
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


def _fail(source: str, section: str, key: str, message: str):
    where = f"[{section}] {key}" if section else key
    raise RecipeError(f"recipe {source}: {where}: {message}")


def _check_value(source, section, key, value, kind, constraint):
    if kind == "str":
        if not isinstance(value, str):
            _fail(source, section, key, f"must be a string, got {value!r}")
        if isinstance(constraint, tuple) and value not in constraint:
            _fail(source, section, key, f"must be one of {', '.join(constraint)}, got {value!r}")
        return value
    if kind == "floats":
        if not isinstance(value, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        ):
            _fail(source, section, key, f"must be a list of numbers, got {value!r}")
        return [float(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(source, section, key, f"must be a number, got {value!r}")
    if kind == "int":
        if not (isinstance(value, int) or float(value).is_integer()):
            _fail(source, section, key, f"must be an integer, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    ok = {
        ">0": lambda v: math.isfinite(v) and v > 0,
        ">=0": lambda v: math.isfinite(v) and v >= 0,
        ">=1": lambda v: v >= 1,
        ">=2": lambda v: v >= 2,
        "finite": math.isfinite,
        "[0,1]": lambda v: 0 <= v <= 1,
        "[0,1)": lambda v: 0 <= v < 1,
        None: lambda v: True,
    }[constraint](value)
    if not ok:
        need = {
            ">0": "be > 0",
            ">=0": "be >= 0",
            ">=1": "be >= 1",
            ">=2": "be >= 2",
            "finite": "be finite",
            "[0,1]": "lie in [0, 1]",
            "[0,1)": "lie in [0, 1)",
        }[constraint]
        _fail(source, section, key, f"must {need}, got {value!r}")
    return value


def _validate_section(source, section, given, allowed=None):
    schema = _SCHEMA[section]
    if not isinstance(given, Mapping):
        _fail(source, "", section, f"must be a table, got {given!r}")
    out = {}
    for key, value in given.items():
        if key not in schema or (allowed is not None and key not in allowed):
            if key in schema:
                _fail(
                    source,
                    section,
                    key,
                    f"is not used here (allowed keys: {', '.join(sorted(allowed))})",
                )
            known = sorted(k for k in schema if allowed is None or k in allowed)
            if not section:
                known += ["[data]", "[net]", "[training]"]
            _fail(source, section, key, f"unknown key (known keys: {', '.join(known)})")
        kind, _, constraint = schema[key]
        out[key] = _check_value(source, section, key, value, kind, constraint)
    for key, (_, default, _) in schema.items():
        if allowed is not None and key not in allowed:
            continue
        if key not in out:
            if default is _REQUIRED:
                _fail(source, section, key, "is required")
            out[key] = default
    return out


def load_recipe(recipe: str | os.PathLike | Mapping[str, Any] | Recipe) -> Recipe:
    """Read and validate a recipe from a TOML file path or a mapping of the same shape.

    Raises:
        FileNotFoundError: the file does not exist.
        RecipeError: invalid TOML, an unknown key, a missing key or a bad value; the message
            names the file and the key (``recipe r.toml: [training] lr: must be > 0, got -1.0``).

    Example:
        >>> recipe = load_recipe({"data": {"manifold": "circle", "law": "uniform"},
        ...                       "training": {"steps": 100}})
    """
    if isinstance(recipe, Recipe):
        return recipe
    text = None
    if isinstance(recipe, str | os.PathLike):
        path = Path(recipe)
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {path} does not exist")
        source = str(path)
        text = path.read_text()
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise RecipeError(f"recipe {source}: invalid TOML: {err}") from err
        default_name = path.resolve().parent.name
    elif isinstance(recipe, Mapping):
        source, raw, default_name = "<mapping>", dict(recipe), None
    else:
        raise TypeError(f"recipe must be a path or a mapping, got {type(recipe).__name__}")

    sections = {"data", "net", "training"}
    top_given = {k: v for k, v in raw.items() if k not in sections}
    top = _validate_section(source, "", top_given)
    if "data" not in raw:
        _fail(source, "", "data", "the [data] table is required")
    data_raw = raw["data"]
    if not isinstance(data_raw, Mapping):
        _fail(source, "", "data", f"must be a table, got {data_raw!r}")
    for key in ("manifold", "law"):
        if key not in data_raw:
            _fail(source, "data", key, "is required")
    schema = _SCHEMA["data"]
    manifold = _check_value(
        source, "data", "manifold", data_raw["manifold"], "str", schema["manifold"][2]
    )
    law = _check_value(source, "data", "law", data_raw["law"], "str", schema["law"][2])
    if manifold not in _LAW_MANIFOLDS[law]:
        _fail(
            source,
            "data",
            "law",
            f"{law!r} is not defined on a {manifold} (use one of: "
            f"{', '.join(k for k, v in _LAW_MANIFOLDS.items() if manifold in v)})",
        )
    allowed = {"manifold", "law"} | _MANIFOLD_KEYS[manifold] | _LAW_KEYS[law]
    data = _validate_section(source, "data", data_raw, allowed)
    if data.get("mean_direction") is None:
        data.pop("mean_direction", None)
    elif len(data["mean_direction"]) != data["dim"] or not any(data["mean_direction"]):
        _fail(
            source,
            "data",
            "mean_direction",
            f"must be a non-zero list of dim={data['dim']} numbers, got {data['mean_direction']}",
        )
    net = _validate_section(source, "net", raw.get("net", {}))
    training = _validate_section(source, "training", raw.get("training", {}))
    if training["sigma_min"] >= training["sigma_max"]:
        _fail(
            source,
            "training",
            "sigma_min",
            f"must be below sigma_max={training['sigma_max']}, got {training['sigma_min']}",
        )
    if training["warmup"] is None:
        training["warmup"] = min(100, training["steps"] // 10)
    if training["warmup"] >= training["steps"]:
        _fail(
            source,
            "training",
            "warmup",
            f"must be below steps={training['steps']}, got {training['warmup']}",
        )
    return Recipe(
        name=top["name"] or default_name,
        description=top["description"],
        seed=top["seed"],
        data=data,
        net=net,
        training=training,
        source=source,
        text=text,
    )


def build_law(recipe: Recipe | str | os.PathLike | Mapping[str, Any]):
    """The data law (from ``bip.manifolds``) that a recipe's ``[data]`` table describes."""
    data = load_recipe(recipe).data
    if data["manifold"] == "circle":
        manifold = manifolds.Circle(radius=data["radius"])
    elif data["manifold"] == "ellipse":
        manifold = manifolds.Ellipse(a=data["a"], b=data["b"])
    else:
        manifold = manifolds.Sphere(dim=data["dim"], radius=data["radius"])
    if data["law"] == "vonmises":
        return manifolds.VonMises(manifold, kappa=data["kappa"], loc=data["loc"])
    if data["law"] == "vmf":
        return manifolds.VonMisesFisher(
            manifold, kappa=data["kappa"], mean_direction=data.get("mean_direction")
        )
    return manifolds.Uniform(manifold)


def net_config(recipe: Recipe | str | os.PathLike | Mapping[str, Any], law=None) -> dict[str, Any]:
    """The ``ScoreNet`` constructor arguments of a recipe (``dim`` from the law's event shape)."""
    recipe = load_recipe(recipe)
    law = build_law(recipe) if law is None else law
    return {"dim": int(math.prod(law.event_shape)), **recipe.net}


# --------------------------------------------------------------------------- training


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
    denoiser ``D = c_skip x + c_out F``, written so that nothing cancels in float32.
    """
    model = nnx.merge(graphdef, params)
    sd = jnp.float32(model.sigma_data)
    total = sigma**2 + sd**2
    x = x0 + sigma[:, None] * z
    f = model.body(x * jax.lax.rsqrt(total)[:, None], jnp.log(sigma))
    target = (sigma[:, None] * x0 / sd - sd * z) / jnp.sqrt(total)[:, None]
    return jnp.mean((f - target) ** 2)


def _make_optimizer(training: Mapping[str, Any]) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=training["lr"],
        warmup_steps=training["warmup"],
        decay_steps=training["steps"],
        end_value=training["lr"] * training["final_lr_fraction"],
    )
    return optax.chain(
        optax.clip_by_global_norm(training["clip"]),
        optax.adamw(schedule, weight_decay=training["weight_decay"]),
    )


@functools.lru_cache(maxsize=16)
def _chunk_fn(graphdef, training_items: tuple):
    """``(optimizer, run_chunk)`` for a network architecture and a ``[training]`` table.

    ``run_chunk(carry, steps, law, train_key) -> (carry, losses)`` is jitted and scans the
    optimisation step over the step indices ``steps``; cached so that repeated runs in one
    process (tests, sweeps) compile once per architecture, recipe and chunk length.
    """
    training = dict(training_items)
    tx = _make_optimizer(training)
    batch = training["batch"]
    log_lo = math.log(training["sigma_min"])
    log_hi = math.log(training["sigma_max"])
    ema_rate = training["ema"]
    f32 = jnp.float32

    def step(carry, t, law, train_key):
        params, opt_state, ema = carry
        k_data, k_sigma, k_noise = jax.random.split(jax.random.fold_in(train_key, t), 3)
        x0 = jnp.asarray(law.sample(k_data, (batch,)), f32).reshape(batch, -1)
        sigma = jnp.exp(jax.random.uniform(k_sigma, (batch,), f32, log_lo, log_hi))
        z = jax.random.normal(k_noise, x0.shape, f32)
        loss, grads = jax.value_and_grad(lambda p: _dsm_loss(graphdef, p, x0, sigma, z))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        tf = t.astype(f32)
        decay = jnp.minimum(f32(ema_rate), (1 + tf) / (10 + tf))
        ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, params)
        return (params, opt_state, ema), loss

    @jax.jit
    def run_chunk(carry, steps, law, train_key):
        return jax.lax.scan(lambda c, t: step(c, t, law, train_key), carry, steps)

    return tx, run_chunk


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
    networks.atomic_write_bytes(out_dir / CHECKPOINT_FILE, buffer.getvalue())


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


def _evaluate(prior: ScorePrior, law, seed: int) -> dict[str, Any]:
    from bip import priors, profile

    reference = priors.exact(law)
    prof = profile.score_error_profile(
        prior, reference, law, np.asarray(EVAL_SIGMAS), jax.random.key(seed + 1), 4096
    )
    i = int(np.argmin(np.abs(prof["sigmas"] - QUALITY_SIGMA)))
    return {
        "rel_error_at_0.1": float(prof["rel_error"][i]),
        "num_samples": prof["num_samples"],
        "profile": {
            "sigmas": [float(s) for s in prof["sigmas"]],
            "rel_error": [float(v) for v in prof["rel_error"]],
            "abs_error": [float(v) for v in prof["abs_error"]],
            "beta": prof["beta"],
            "alpha_range": list(prof["alpha_range"]) if prof["alpha_range"] else None,
        },
    }


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
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    training = recipe.training
    total = training["steps"]
    law = build_law(recipe)
    event_shape = tuple(law.event_shape)

    init_key, train_key = jax.random.split(jax.random.key(recipe.seed))
    model = networks.build_network(net_config(recipe, law), init_key)
    graphdef, params = nnx.split(model)
    tx, run_chunk = _chunk_fn(graphdef, tuple(sorted(training.items())))
    carry = (params, tx.init(params), params)
    step, losses = 0, np.zeros((0,), np.float32)
    checkpoint = out_dir / CHECKPOINT_FILE
    if resume and checkpoint.is_file():
        carry, step, losses = _load_checkpoint(checkpoint, recipe, carry)

    target = total if stop_after is None else min(total, int(stop_after))
    chunk, every = training["chunk"], training["checkpoint_every"]
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
        _save_checkpoint(out_dir, recipe, carry, step, np.concatenate(loss_chunks))
        bar.close()
        print(f"interrupted at step {step}; checkpoint saved in {checkpoint}", file=sys.stderr)
        raise
    bar.close()
    losses = np.concatenate(loss_chunks)
    ema = carry[2]
    prior = networks.network_prior(
        (graphdef, ema), event_shape, manifold=law.manifold, name=recipe.name or "network"
    )
    complete = step >= total
    card = None
    if complete:
        card = _export(out_dir, recipe, law, prior, ema, losses, evaluate, start_time)
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


def _toml_value(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def recipe_to_toml(recipe: Recipe) -> str:
    """The resolved recipe as TOML text (used when the recipe did not come from a file)."""
    d = recipe.to_dict()
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for section in ("data", "net", "training"):
        lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in d[section].items()]
    return "\n".join(lines) + "\n"


def _export(out_dir, recipe, law, prior, ema, losses, evaluate, start_time) -> dict[str, Any]:
    recipe_text = recipe.text if recipe.text is not None else recipe_to_toml(recipe)
    recipe_path = out_dir / networks.RECIPE_FILE
    if not (recipe_path.is_file() and recipe_path.read_text() == recipe_text):
        networks.atomic_write_bytes(recipe_path, recipe_text.encode())
    weights = networks.weights_to_bytes(ema, {"name": recipe.name or ""})
    networks.atomic_write_bytes(out_dir / networks.WEIGHTS_FILE, weights)
    quality = _evaluate(prior, law, recipe.seed) if evaluate else None
    chunk_means = [float(np.mean(c)) for c in np.array_split(losses, min(len(losses), 50))]
    num_params = sum(int(np.size(x)) for x in jax.tree.leaves(ema))
    card = {
        "format": networks.FORMAT,
        "name": recipe.name,
        "description": recipe.description,
        "weights": networks.WEIGHTS_FILE,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "weights_bytes": len(weights),
        "recipe": networks.RECIPE_FILE,
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
        "train_seconds": round(time.perf_counter() - start_time, 1),
        "quality": quality,
        "versions": _versions(),
    }
    networks.atomic_write_bytes(
        out_dir / networks.CARD_FILE, (json.dumps(card, indent=2) + "\n").encode()
    )
    networks.atomic_write_bytes(out_dir / "README.md", model_card_markdown(card, recipe).encode())
    return card


def model_card_markdown(card: Mapping[str, Any], recipe: Recipe) -> str:
    """A ``README.md`` model card from ``model.json`` content."""
    data = ", ".join(f"{k}={v}" for k, v in recipe.data.items())
    net = card["net"]
    t = recipe.training
    lines = [
        f"# {card['name']}",
        "",
        "<!-- generated by bip.train from model.json; retrain to refresh -->",
        "",
        (card.get("description") or "A learned score prior on a toy manifold."),
        "",
        "## Load",
        "",
        "```python",
        "import bip.networks",
        f'prior = bip.networks.load_prior("{card["name"]}")  # hash-checked, offline',
        "s = prior.score(x, sigma)  # x: (..., 2), sigma > 0",
        "```",
        "",
        "## Model",
        "",
        f"- data law: {data}",
        f"- network: residual MLP with FiLM conditioning on log(sigma): width {net['width']}, "
        f"depth {net['depth']}, mlp_ratio {net['mlp_ratio']}, {net['num_frequencies']} "
        f"sinusoidal frequencies, {card['num_params']} float32 parameters",
        f"- parametrisation: EDM preconditioning with sigma_data = {net['sigma_data']}; "
        "`sigma^2 s(x, sigma) = -sigma^2/(sigma^2 + sd^2) x + c_out F(c_in x, log sigma)`, "
        "`c_in = 1/sqrt(sigma^2 + sd^2)`, `c_out = sigma sd/sqrt(sigma^2 + sd^2)`",
        f"- training: denoising score matching, {card['steps']} steps, batch {t['batch']}, "
        f"AdamW lr {t['lr']} (warmup {t['warmup']}, cosine to {t['final_lr_fraction']} x), "
        f"weight decay {t['weight_decay']}, clip {t['clip']}, EMA {t['ema']}, "
        f"sigma log-uniform on [{t['sigma_min']}, {t['sigma_max']}], seed {recipe.seed}",
        f"- final training loss (mean of the last 100 steps, EDM-weighted): "
        f"{card['final_loss']:.4f}",
        f"- training time: {card['train_seconds']} s "
        f"(jax {card['versions']['jax']}, flax {card['versions']['flax']})",
        f"- weights: `{card['weights']}` ({card['weights_bytes']} bytes), "
        f"sha256 `{card['weights_sha256']}`",
        "",
    ]
    q = card.get("quality")
    if q:
        p = q["profile"]
        rng = p["alpha_range"]
        lines += [
            "## Measured quality",
            "",
            f"Against `bip.priors.exact(law)` on `x = Phi(u) + sigma z`, u ~ law "
            f"({q['num_samples']} samples per sigma, the same draws at every sigma):",
            "",
            f"- **relative L2 score error at sigma = 0.1: {q['rel_error_at_0.1']:.4f}** "
            "(bar: < 0.1)",
            f"- fitted exponent of `abs_error ~ sigma^beta` over sigma in 0.01..1: "
            f"beta = {p['beta']:.3f}",
            "- admissible tempering range `max(-beta, 0) < alpha < 2`: "
            + (f"({rng[0]:.3f}, {rng[1]:.0f})" if rng else "empty (beta <= -2)"),
            "",
            "| sigma | relative error | absolute error |",
            "|---:|---:|---:|",
        ]
        lines += [
            f"| {s:.4g} | {r:.4f} | {a:.4g} |"
            for s, r, a in zip(p["sigmas"], p["rel_error"], p["abs_error"], strict=True)
        ]
        lines.append("")
    lines += [
        "## Reproduce",
        "",
        "```",
        f"bip train priors/{card['name']}/recipe.toml --out priors/{card['name']} "
        "--drop-checkpoint",
        "```",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def _cli_train(args: argparse.Namespace) -> int:
    try:
        result = train(
            args.recipe,
            args.out,
            resume=not args.no_resume,
            stop_after=args.stop_after,
            progress=not args.no_progress,
            evaluate=not args.no_eval,
            keep_checkpoint=not args.drop_checkpoint,
        )
    except (RecipeError, FileNotFoundError) as err:
        print(f"bip train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if not result.complete:
        print(f"stopped at step {result.steps_done}; run again to resume from {args.out}")
        return 0
    q = (result.card or {}).get("quality")
    summary = (
        f"trained {result.steps_done} steps in {result.seconds:.1f} s, "
        f"final loss {result.final_loss:.4f}"
    )
    if q:
        summary += (
            f", relative score error at sigma=0.1: {q['rel_error_at_0.1']:.4f}, "
            f"beta = {q['profile']['beta']:.3f}"
        )
    print(summary)
    print(f"prior written to {args.out}")
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``train`` on an argparse subparsers object: ``bip train RECIPE --out DIR``.

    The parser's ``func`` default is called as ``func(args) -> exit code``.

    Example:
        >>> parser = argparse.ArgumentParser(prog="bip")
        >>> add_cli(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["train", "recipe.toml", "--out", "runs/x"])
        >>> args.func(args)
    """
    p = subparsers.add_parser(
        "train",
        help="train a score network from a TOML recipe",
        description="Train a score network by denoising score matching (bip.train).",
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
    p.set_defaults(func=_cli_train)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m bip.train RECIPE --out DIR`` (same options as ``bip train``)."""
    parser = argparse.ArgumentParser(prog="python -m bip.train")
    sub = parser.add_subparsers(dest="command", required=True)
    add_cli(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
