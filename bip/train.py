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
    sigma_sampling = "loguniform"  # or "lognormal": log sigma ~ N(sigma_log_mean,
                                   #   sigma_log_std^2) truncated to the range (EDM-style)

Image priors (single-channel images, a ``bip.networks.UNet``)::

    [data]
    manifold = "phantom"         # phantom (size, edge_width): bip.images.PhantomLaw, fresh
    size = 32                    #   draws every step | digits (size): bip.images.digits(size),
                                 #   a fixed set | faces: bip.images.faces(), 25x25, fixed
    [net]
    kind = "unet"                # mlp (default; images are flattened) | unet
    channels = 16                # first-level channels; level i has channels * channel_mult[i]
    channel_mult = [1, 2, 2]
    num_res_blocks = 1
    groups = 8                   # GroupNorm groups
    patch = 2                    # space-to-depth stem (1: full resolution)
    sigma_data = 0.2             # RMS of one pixel (default 0.5 for unet, 1.0 for mlp)

    [training]
    sigma_min = 0.01             # pixel values in [0, 1]
    sigma_max = 10.0

Training draws fresh data every step (``u ~ law``, ``z ~ N(0, I)``, ``log sigma`` uniform),
from ``jax.random.fold_in(key, step)``: the randomness of a step depends on its index only,
so a run resumed from a checkpoint is identical to an uninterrupted one. Steps run in jitted
``lax.scan`` chunks; after each chunk a tqdm bar advances, and every ``checkpoint_every``
steps the full state (weights, optimiser, EMA, loss curve) is written atomically (temp file
in the same folder, then ``os.replace``) to ``checkpoint.npz``.

(U-Nets run the chunk as a loop of jitted steps: XLA:CPU is much slower at convolution
gradients inside a ``lax.scan``.)

The output folder gets ``recipe.toml``, ``weights.safetensors`` (EMA weights), ``model.json``
(sha256 of both files, steps, losses, measured quality) and a ``README.md`` model card;
``bip.networks.load_prior(folder)`` loads it back. The measured quality (``evaluate``): the
score-error profile against the exact score where one exists (toys; the exact-chart phantom
prior), for von Mises toys paper Fig. 2 with the network (TS-1 versus standard Langevin), and
for images the distance to the manifold of Langevin samples (phantoms) and reverse-diffusion
samples with their nearest-training-image distances. ``evaluate_folder`` (``bip train ...
--eval-only``) measures it again for a trained folder.

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
from flax import nnx, struct

from bip import manifolds, networks, outputs
from bip.cli import add_train as add_cli  # the parser lives in bip.cli (no JAX import)
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
        "manifold": (
            "str",
            _REQUIRED,
            ("circle", "ellipse", "sphere", "phantom", "digits", "faces"),
        ),
        "law": ("str", _REQUIRED, ("vonmises", "vmf", "uniform", "empirical")),
        "radius": ("float", 1.0, ">0"),
        "a": ("float", 1.0, ">0"),
        "b": ("float", 2.0, ">0"),
        "dim": ("int", 3, ">=2"),
        "kappa": ("float", 1.0, ">=0"),
        "loc": ("float", 0.0, "finite"),
        "mean_direction": ("floats", None, None),
        "size": ("int", None, ">=8"),  # default: 32 (phantom), 16 (digits)
        "edge_width": ("float", 1.0, ">0"),
    },
    "net": {
        "kind": ("str", "mlp", ("mlp", "unet")),
        "width": ("int", 128, ">=1"),
        "depth": ("int", 4, ">=1"),
        "mlp_ratio": ("int", 2, ">=1"),
        "channels": ("int", 32, ">=1"),
        "channel_mult": ("ints", [1, 2], ">=1"),
        "num_res_blocks": ("int", 1, ">=1"),
        "groups": ("int", 8, ">=1"),
        "patch": ("int", 1, ">=1"),
        "num_frequencies": ("int", 16, ">=1"),
        "sigma_data": ("float", None, ">0"),  # default: 1.0 (mlp), 0.5 (unet)
        "final_norm": ("bool", True, None),  # mlp only
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
        "sigma_sampling": ("str", "loguniform", ("loguniform", "lognormal")),
        "sigma_log_mean": ("float", None, "finite"),  # lognormal only; default: mid log range
        "sigma_log_std": ("float", 1.2, ">0"),  # lognormal only
        "chunk": ("int", 100, ">=1"),
        "checkpoint_every": ("int", 500, ">=1"),
    },
}
_EXECUTION_KEYS = ("chunk", "checkpoint_every")  # change them freely when resuming
_MANIFOLD_KEYS = {
    "circle": {"radius"},
    "ellipse": {"a", "b"},
    "sphere": {"dim", "radius"},
    "phantom": {"size", "edge_width"},
    "digits": {"size"},
    "faces": set(),
}
_LAW_KEYS = {
    "vonmises": {"kappa", "loc"},
    "vmf": {"kappa", "mean_direction"},
    "uniform": set(),
    "empirical": set(),
}
_LAW_MANIFOLDS = {
    "vonmises": ("circle", "ellipse"),
    "vmf": ("sphere",),
    "uniform": ("circle", "ellipse", "sphere", "phantom"),
    "empirical": ("digits", "faces"),
}
IMAGE_MANIFOLDS = ("phantom", "digits", "faces")
"""``[data] manifold`` values whose points are single-channel images ``(h, w)``."""
_DEFAULT_LAW = {"phantom": "uniform", "digits": "empirical", "faces": "empirical"}
_DEFAULT_SIZE = {"phantom": 32, "digits": 16}
_NET_KEYS = {
    "mlp": {"kind", "width", "depth", "mlp_ratio", "num_frequencies", "sigma_data", "final_norm"},
    "unet": {
        "kind",
        "channels",
        "channel_mult",
        "num_res_blocks",
        "groups",
        "patch",
        "num_frequencies",
        "sigma_data",
    },
}
_DEFAULT_SIGMA_DATA = {"mlp": 1.0, "unet": 0.5}
_NONE = object()
_HASH_NEUTRAL = {
    ("net", "kind"): "mlp",
    ("net", "final_norm"): True,
    ("training", "sigma_sampling"): "loguniform",
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
        # keys added later are left out at their default value, so recipes written before
        # they existed keep their hash (and their checkpoints)
        training = {
            k: v
            for k, v in self.training.items()
            if k not in _EXECUTION_KEYS and _HASH_NEUTRAL.get(("training", k), _NONE) != v
        }
        net = {k: v for k, v in self.net.items() if _HASH_NEUTRAL.get(("net", k), _NONE) != v}
        core = {"seed": self.seed, "data": self.data, "net": net, "training": training}
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
    if kind == "bool":
        if not isinstance(value, bool):
            _fail(source, section, key, f"must be true or false, got {value!r}")
        return value
    if kind == "ints":
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
        ):
            _fail(source, section, key, f"must be a non-empty list of integers >= 1, got {value!r}")
        return [int(v) for v in value]
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
        ">=8": lambda v: v >= 8,
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
            ">=8": "be >= 8",
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
            out[key] = list(default) if isinstance(default, list) else default
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
    if "manifold" not in data_raw:
        _fail(source, "data", "manifold", "is required")
    schema = _SCHEMA["data"]
    manifold = _check_value(
        source, "data", "manifold", data_raw["manifold"], "str", schema["manifold"][2]
    )
    if "law" not in data_raw:
        if manifold not in _DEFAULT_LAW:
            _fail(source, "data", "law", "is required")
        data_raw = {**data_raw, "law": _DEFAULT_LAW[manifold]}
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
    if "size" in data and data["size"] is None:
        data["size"] = _DEFAULT_SIZE[manifold]
    if data.get("mean_direction") is None:
        data.pop("mean_direction", None)
    elif len(data["mean_direction"]) != data["dim"] or not any(data["mean_direction"]):
        _fail(
            source,
            "data",
            "mean_direction",
            f"must be a non-zero list of dim={data['dim']} numbers, got {data['mean_direction']}",
        )
    net_raw = raw.get("net", {})
    if not isinstance(net_raw, Mapping):
        _fail(source, "", "net", f"must be a table, got {net_raw!r}")
    kind = _check_value(
        source, "net", "kind", net_raw.get("kind", "mlp"), "str", _SCHEMA["net"]["kind"][2]
    )
    net = _validate_section(source, "net", net_raw, _NET_KEYS[kind])
    if net["sigma_data"] is None:
        net["sigma_data"] = _DEFAULT_SIGMA_DATA[kind]
    if kind == "unet" and manifold not in IMAGE_MANIFOLDS:
        _fail(
            source,
            "net",
            "kind",
            f"'unet' needs image data ([data] manifold = {' | '.join(IMAGE_MANIFOLDS)}), "
            f"got manifold {manifold!r}",
        )
    training_raw = raw.get("training", {})
    if not isinstance(training_raw, Mapping):
        _fail(source, "", "training", f"must be a table, got {training_raw!r}")
    sampling = _check_value(
        source,
        "training",
        "sigma_sampling",
        training_raw.get("sigma_sampling", "loguniform"),
        "str",
        _SCHEMA["training"]["sigma_sampling"][2],
    )
    allowed_training = set(_SCHEMA["training"])
    if sampling == "loguniform":
        allowed_training -= {"sigma_log_mean", "sigma_log_std"}
    training = _validate_section(source, "training", training_raw, allowed_training)
    if sampling == "lognormal" and training["sigma_log_mean"] is None:
        training["sigma_log_mean"] = 0.5 * (
            math.log(training["sigma_min"]) + math.log(training["sigma_max"])
        )
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


@struct.dataclass
class EmpiricalLaw:
    """The empirical law of a fixed training set: ``sample`` draws examples with replacement.

    Attributes:
        data: the training examples ``(N, *event_shape)``.
        name: the data set's name.
    """

    data: Array
    name: str = struct.field(pytree_node=False, default="empirical")

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    @property
    def manifold(self) -> None:
        """No known manifold (score-only priors, no exact reference)."""
        return None

    @property
    def num_examples(self) -> int:
        return int(self.data.shape[0])

    def sample(self, rng_key: Array, shape: tuple[int, ...] = ()) -> Array:
        """Training examples ``(*shape, *event_shape)`` drawn uniformly with replacement."""
        index = jax.random.randint(rng_key, tuple(shape), 0, self.data.shape[0])
        return self.data[index]


def build_law(recipe: Recipe | str | os.PathLike | Mapping[str, Any]):
    """The data law that a recipe's ``[data]`` table describes.

    Toy manifolds give a law from ``bip.manifolds``; ``phantom`` a ``bip.images.PhantomLaw``
    (uniform on the parameter box, fresh images every step); ``digits`` and ``faces`` an
    ``EmpiricalLaw`` of the fixed data set (``bip.images.digits(size)``, ``bip.images.faces()``).
    """
    data = load_recipe(recipe).data
    if data["manifold"] in IMAGE_MANIFOLDS:
        from bip import images

        if data["manifold"] == "phantom":
            manifold = images.PhantomManifold(size=data["size"], edge_width=data["edge_width"])
            return images.PhantomLaw(manifold)
        if data["manifold"] == "digits":
            pixels = images.digits(data["size"])
        else:
            pixels = images.faces()
        return EmpiricalLaw(jnp.asarray(np.asarray(pixels, np.float32)), name=data["manifold"])
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
    """The network config of a recipe (``bip.networks.build_network``).

    ``mlp``: the ``ScoreNet`` arguments, ``dim`` from the law's event shape (images are
    flattened); ``unet``: ``kind = "unet"``, ``shape`` the image shape, and the ``UNet``
    arguments.
    """
    recipe = load_recipe(recipe)
    law = build_law(recipe) if law is None else law
    net = dict(recipe.net)
    kind = net.pop("kind", "mlp")
    if kind == "mlp":
        return {"dim": int(math.prod(law.event_shape)), **net}
    return {"kind": kind, "shape": [int(n) for n in law.event_shape], **net}


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


def training_batch(law, train_key: Array, step: Array | int, batch: int, event_shape=None):
    """The data ``x0`` ``(batch, *event_shape)`` (float32) that training step ``step`` draws.

    ``train_key`` is the second half of ``jax.random.split(jax.random.key(seed))``; the draw
    depends on the step index only (resumable runs; ``image_quality`` regenerates the
    phantom training set from it). ``event_shape`` defaults to the law's.
    """
    k_data = jax.random.split(jax.random.fold_in(train_key, step), 3)[0]
    shape = tuple(law.event_shape) if event_shape is None else tuple(event_shape)
    return jnp.asarray(law.sample(k_data, (batch,)), jnp.float32).reshape((batch,) + shape)


@functools.lru_cache(maxsize=16)
def _chunk_fn(graphdef, training_items: tuple, event_shape: tuple, per_step: bool = False):
    """``(optimizer, run_chunk)`` for a network architecture and a ``[training]`` table.

    ``run_chunk(carry, steps, law, train_key) -> (carry, losses)`` is jitted and scans the
    optimisation step over the step indices ``steps``; cached so that repeated runs in one
    process (tests, sweeps) compile once per architecture, recipe and chunk length.
    ``event_shape`` is the network's point shape (``model.event_shape``). ``per_step``: run
    the chunk as a Python loop of jitted steps instead of one ``lax.scan`` (convolutional
    nets; the same numbers, the randomness of a step depending on its index only).
    """
    training = dict(training_items)
    tx = _make_optimizer(training)
    batch = training["batch"]
    log_lo = math.log(training["sigma_min"])
    log_hi = math.log(training["sigma_max"])
    ema_rate = training["ema"]
    lognormal = training.get("sigma_sampling", "loguniform") == "lognormal"
    log_mean = training.get("sigma_log_mean") or 0.0
    log_std = training.get("sigma_log_std") or 1.0
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
    return (folder / CHECKPOINT_FILE).is_file() or (folder / networks.CARD_FILE).is_file()


def _mark(out_dir: Path, recipe: Recipe, step: int, complete: bool) -> None:
    """The output manifest of a training folder (``bip.outputs``)."""
    content = outputs.manifest(
        "train",
        status="complete" if complete else "incomplete",
        recipe=recipe.name,
        steps_done=int(step),
        steps=int(recipe.training["steps"]),
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


def _profile_summary(prof: Mapping[str, Any], reference: str) -> dict[str, Any]:
    i = int(np.argmin(np.abs(prof["sigmas"] - QUALITY_SIGMA)))
    return {
        "rel_error_at_0.1": float(prof["rel_error"][i]),
        "num_samples": prof["num_samples"],
        "profile": {
            "reference": reference,
            "sigmas": [float(s) for s in prof["sigmas"]],
            "rel_error": [float(v) for v in prof["rel_error"]],
            "abs_error": [float(v) for v in prof["abs_error"]],
            "beta": prof["beta"],
            "alpha_range": list(prof["alpha_range"]) if prof["alpha_range"] else None,
        },
    }


TOY_LANGEVIN = dict(sigma=0.01, ts_chains=4000, ts_steps=4000, std_chains=2000, std_steps=10_000)
"""Sizes of the Fig. 2 check in the card of a von Mises prior on a circle or an ellipse."""

PHANTOM_EVAL_SIGMAS = tuple(float(s) for s in np.geomspace(0.01, 0.1, 5))
"""Sigmas of the phantom profile: where the exact-chart (Laplace) reference is accurate."""

IMAGE_EVAL = dict(num_samples=64, num_levels=500, profile_samples=256, nn_baseline=256)
"""Sizes of the image-prior evaluation (reverse-diffusion samples, profile, baselines)."""


def _evaluate(prior: ScorePrior, law, recipe: Recipe) -> dict[str, Any]:
    """The measured quality that goes into ``model.json`` (see ``evaluate_folder``)."""
    from bip import priors, profile

    seed = recipe.seed
    if recipe.data["manifold"] in IMAGE_MANIFOLDS:
        return _evaluate_images(prior, law, recipe)
    reference = priors.exact(law)
    prof = profile.score_error_profile(
        prior, reference, law, np.asarray(EVAL_SIGMAS), jax.random.key(seed + 1), 4096
    )
    quality = _profile_summary(prof, "bip.priors.exact(law)")
    if recipe.data["law"] == "vonmises":  # paper Fig. 2: TS-1 versus standard Langevin
        quality["langevin"] = profile.toy_langevin_check(
            prior, law, jax.random.key(seed + 2), **TOY_LANGEVIN
        )
    return quality


def training_images(recipe: Recipe | Mapping[str, Any] | str | os.PathLike, law=None, chunk=50):
    """Yield the training data of a recipe, ``(chunk * batch, *event)`` arrays step by step.

    An ``EmpiricalLaw`` yields its fixed data set once; any other law regenerates the draws
    of steps ``0 .. steps - 1`` exactly as training made them (``training_batch``).
    """
    recipe = load_recipe(recipe)
    law = build_law(recipe) if law is None else law
    if isinstance(law, EmpiricalLaw):
        yield law.data
        return
    train_key = jax.random.split(jax.random.key(recipe.seed))[1]
    batch, total = recipe.training["batch"], recipe.training["steps"]
    draw = jax.jit(
        jax.vmap(lambda t: training_batch(law, train_key, t, batch), in_axes=0),
    )
    for start in range(0, total, chunk):
        steps = jnp.arange(start, min(start + chunk, total), dtype=jnp.int32)
        yield draw(steps).reshape((-1,) + tuple(law.event_shape))


def _quantiles(values) -> dict[str, float]:
    v = np.asarray(values, float)
    return {
        "mean": float(np.mean(v)),
        "min": float(np.min(v)),
        "q05": float(np.quantile(v, 0.05)),
        "median": float(np.median(v)),
        "q95": float(np.quantile(v, 0.95)),
    }


def _evaluate_images(prior: ScorePrior, law, recipe: Recipe) -> dict[str, Any]:
    from bip import images, priors, profile

    key = jax.random.key(recipe.seed + 1)
    t = recipe.training
    quality: dict[str, Any] = {}
    phantom = isinstance(law, images.PhantomLaw)
    if phantom:
        prof = profile.score_error_profile(
            prior,
            priors.exact(law),
            law,
            np.asarray(PHANTOM_EVAL_SIGMAS),
            key,
            IMAGE_EVAL["profile_samples"],
        )
        quality.update(
            _profile_summary(prof, "bip.priors.exact(PhantomLaw) (Laplace, exact chart)")
        )
        quality["manifold_distance"] = profile.manifold_distance_check(
            prior, law, jax.random.fold_in(key, 1)
        )
    num = IMAGE_EVAL["num_samples"]
    raw, samples = profile.diffusion_samples(
        prior,
        num,
        jax.random.fold_in(key, 2),
        sigma_max=t["sigma_max"],
        sigma_min=t["sigma_min"],
        num_levels=IMAGE_EVAL["num_levels"],
    )
    nn = profile.nearest_distances(samples, training_images(recipe, law))
    if phantom:
        held_out = law.sample(jax.random.fold_in(key, 3), (IMAGE_EVAL["nn_baseline"],))
        baseline = profile.nearest_distances(held_out, training_images(recipe, law))
        baseline_what = "fresh draws of the law to the training draws"
        num_train = t["steps"] * t["batch"]
    else:
        baseline = profile.nearest_distances(law.data, law.data, exclude_self=True)
        baseline_what = "each training image to the others (leave-one-out)"
        num_train = law.num_examples
    norms = np.sqrt(np.sum(np.asarray(samples, float) ** 2, axis=(-2, -1)))
    entry = {
        "num_samples": num,
        "sampler": f"bip.samplers.reverse_diffusion, {IMAGE_EVAL['num_levels']} geometric "
        f"levels {t['sigma_max']} -> {t['sigma_min']}, then x + sigma_min^2 s(x, sigma_min)",
        "num_training_images": int(num_train),
        "nn_distance": _quantiles(nn),
        "nn_baseline": _quantiles(baseline),
        "nn_baseline_is": baseline_what,
        "nn_ratio_median": float(np.median(nn) / np.median(baseline)),
        "copies": int(np.sum(nn < 0.25 * np.quantile(baseline, 0.05))),
        "copies_rule": "samples closer to a training image than 1/4 of the 5% quantile of the "
        "baseline",
        "sample_norm_mean": float(np.mean(norms)),
        "pixel_range": [float(np.min(samples)), float(np.max(samples))],
    }
    if phantom:
        dist = np.asarray(law.manifold.distance(samples))
        entry["manifold_distance"] = _quantiles(dist)
        entry["manifold_distance_relative"] = float(
            np.mean(dist) / quality["manifold_distance"]["data_norm"]
        )
    quality["samples"] = entry
    return quality


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
    total = training["steps"]
    law = build_law(recipe)
    event_shape = tuple(law.event_shape)

    init_key, train_key = jax.random.split(jax.random.key(recipe.seed))
    model = networks.build_network(net_config(recipe, law), init_key)
    graphdef, params = nnx.split(model)
    tx, run_chunk = _chunk_fn(
        graphdef,
        networks.hashable_items(training),
        tuple(model.event_shape),
        isinstance(model, networks.UNet),
    )
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


def _export(
    out_dir, recipe, law, prior, ema, losses, evaluate, start_time, machine=None
) -> dict[str, Any]:
    recipe_text = recipe.text if recipe.text is not None else recipe_to_toml(recipe)
    recipe_path = out_dir / networks.RECIPE_FILE
    if not (recipe_path.is_file() and recipe_path.read_text() == recipe_text):
        outputs.atomic_write_bytes(recipe_path, recipe_text.encode())
    weights = networks.weights_to_bytes(ema, {"name": recipe.name or ""})
    outputs.atomic_write_bytes(out_dir / networks.WEIGHTS_FILE, weights)
    train_seconds = round(time.perf_counter() - start_time, 1)
    eval_start = time.perf_counter()
    quality = _evaluate(prior, law, recipe) if evaluate else None
    eval_seconds = round(time.perf_counter() - eval_start, 1) if evaluate else None
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
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "quality": quality,
        "versions": _versions(),
    }
    if machine:
        card["machine"] = machine
    outputs.atomic_write_bytes(
        out_dir / networks.CARD_FILE, (json.dumps(card, indent=2) + "\n").encode()
    )
    outputs.atomic_write_bytes(out_dir / "README.md", model_card_markdown(card, recipe).encode())
    _mark(out_dir, recipe, card["steps"], complete=True)
    return card


def model_card_markdown(card: Mapping[str, Any], recipe: Recipe) -> str:
    """A ``README.md`` model card from ``model.json`` content."""
    data = ", ".join(f"{k}={v}" for k, v in recipe.data.items())
    net = card["net"]
    t = recipe.training
    kind = net.get("kind", "mlp")
    event = tuple(card.get("event_shape", [2]))
    shape_text = ", ".join(str(n) for n in event)
    lines = [
        f"# {card['name']}",
        "",
        "<!-- generated by bip.train from model.json; retrain to refresh -->",
        "",
        (card.get("description") or "A learned score prior."),
        "",
        "## Load",
        "",
        "```python",
        "import bip.networks",
        f'prior = bip.networks.load_prior("{card["name"]}")  # hash-checked, offline',
        f"s = prior.score(x, sigma)  # x: (..., {shape_text}), sigma > 0 (scalar or per batch)",
        "```",
        "",
        "## Model",
        "",
        f"- data law: {data}",
    ]
    if kind == "unet":
        lines.append(
            f"- network: U-Net (`bip.networks.UNet`) on {event[0]}x{event[1]} images: "
            f"{len(net['channel_mult'])} resolution levels with {net['channels']} x "
            f"{net['channel_mult']} channels, {net['num_res_blocks']} residual block(s) per "
            f"level, GroupNorm ({net['groups']} groups), FiLM on {net['num_frequencies']} "
            f"sinusoidal frequencies of log(sigma), {net['patch']}x{net['patch']} patch stem, "
            f"{card['num_params']} float32 parameters"
        )
    else:
        lines.append(
            f"- network: residual MLP with FiLM conditioning on log(sigma): width "
            f"{net['width']}, depth {net['depth']}, mlp_ratio {net['mlp_ratio']}, "
            f"{net['num_frequencies']} sinusoidal frequencies, {card['num_params']} float32 "
            "parameters"
        )
    eval_text = f"; evaluation below: {card['eval_seconds']} s" if card.get("eval_seconds") else ""
    lines += [
        f"- parametrisation: EDM preconditioning with sigma_data = {net['sigma_data']}; "
        "`sigma^2 s(x, sigma) = -sigma^2/(sigma^2 + sd^2) x + c_out F(c_in x, log sigma)`, "
        "`c_in = 1/sqrt(sigma^2 + sd^2)`, `c_out = sigma sd/sqrt(sigma^2 + sd^2)`",
        f"- training: denoising score matching, {card['steps']} steps, batch {t['batch']}, "
        f"AdamW lr {t['lr']} (warmup {t['warmup']}, cosine to {t['final_lr_fraction']} x), "
        f"weight decay {t['weight_decay']}, clip {t['clip']}, EMA {t['ema']}, "
        f"sigma {_sigma_law_text(t)}, seed {recipe.seed}",
        f"- final training loss (mean of the last 100 steps, EDM-weighted): "
        f"{card['final_loss']:.4f}",
        f"- training time: {card['train_seconds']} s on the machine below{eval_text} "
        f"(jax {card['versions']['jax']}, flax {card['versions']['flax']})",
        f"- weights: `{card['weights']}` ({card['weights_bytes']} bytes), "
        f"sha256 `{card['weights_sha256']}`",
        "",
    ]
    if card.get("machine"):
        lines[-1:-1] = [f"- machine: {card['machine']}"]
    q = card.get("quality") or {}
    if q:
        lines += ["## Measured quality", ""]
    if q.get("profile"):
        p = q["profile"]
        rng = p["alpha_range"]
        reference = p.get("reference", "bip.priors.exact(law)")
        lines += [
            f"### Score error against `{reference}`",
            "",
            f"On `x = Phi(u) + sigma z`, u ~ law ({q['num_samples']} samples per sigma, the "
            "same draws at every sigma; `bip.profile.score_error_profile`):",
            "",
            f"- **relative L2 score error at sigma = 0.1: {q['rel_error_at_0.1']:.4f}**"
            + (" (bar: < 0.1)" if kind == "mlp" else ""),
            f"- fitted exponent of `abs_error ~ sigma^beta` over sigma in "
            f"{p['sigmas'][0]:.3g}..{p['sigmas'][-1]:.3g}: beta = {p['beta']:.3f}",
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
    if q.get("langevin"):
        lines += _langevin_markdown(q["langevin"])
    if q.get("manifold_distance"):
        lines += _distance_markdown(q["manifold_distance"])
    if q.get("samples"):
        lines += _samples_markdown(q["samples"], card)
    lines += [
        "## Reproduce",
        "",
        "```",
        f"bip train priors/{card['name']}/recipe.toml --out priors/{card['name']} "
        "--drop-checkpoint",
        "```",
        "",
        "Re-measure the quality above without retraining (rewrites `model.json` and this card):",
        "",
        "```",
        f"bip train priors/{card['name']}/recipe.toml --out priors/{card['name']} --eval-only",
        "```",
        "",
    ]
    return "\n".join(lines)


def _sigma_law_text(t: Mapping[str, Any]) -> str:
    if t.get("sigma_sampling", "loguniform") == "lognormal":
        return (
            f"log-normal (log sigma ~ N({t['sigma_log_mean']:.3g}, {t['sigma_log_std']:.3g}^2)) "
            f"truncated to [{t['sigma_min']}, {t['sigma_max']}]"
        )
    return f"log-uniform on [{t['sigma_min']}, {t['sigma_max']}]"


def _langevin_markdown(lv: Mapping[str, Any]) -> list[str]:
    ts, std = lv["ts1"], lv["standard"]
    lines = [
        "### Fig. 2: TS-1 versus standard Langevin with this network",
        "",
        f"ULA at sigma = {lv['sigma']} with the default step `0.1 sigma^(2 - alpha)`, chains "
        f"started from the data law; {lv['num_bins']}-bin histograms of the chart parameter of "
        "the last positions against p_data and the uniform (volume) law on the curve "
        f"(TV(p_data, uniform) = {lv['tv_p_data_uniform']:.3f}; `bip.profile.toy_langevin_check`):",
        "",
        "| sampler | chains | steps | step h | time | TV to uniform | TV to p_data | "
        "noise floor | diverged |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in (("TS-1 (alpha = 1)", ts), ("standard (alpha = 0)", std)):
        lines.append(
            f"| {name} | {r['chains']} | {r['steps']} | {r['step_size']:.0e} | "
            f"{r['time']:.3g} | **{r['tv_uniform']:.3f}** | {r['tv_p_data']:.3f} | "
            f"{r['histogram_noise']:.3f} | {r['diverged']} |"
        )
    verdict = "within" if ts["tv_uniform"] < 0.08 else "NOT within"
    lines += [
        "",
        f"- TS-1 is {verdict} TV 0.08 of the uniform law ({ts['tv_uniform']:.3f}): the "
        "maximum-entropy prior, from a network trained on p_data alone.",
        f"- Standard Langevin stays near its start, p_data (TV {std['tv_p_data']:.3f}; "
        f"{std['tv_uniform']:.3f} from uniform): at h = {std['step_size']:.0e} its "
        f"{std['steps']} steps are a time of {std['time']:.3g}, in which a chain moves about "
        f"{math.sqrt(2 * std['time']):.2f} rad along the curve. Its mixing time along M blows "
        "up as sigma -> 0 (SCIENCE.md sec. 3): it cannot mix in 10^4 steps, and its "
        "histogram says where it started, not what it converges to.",
        "",
    ]
    return lines


def _distance_markdown(md: Mapping[str, Any]) -> list[str]:
    lines = [
        "### Distance to the manifold of tempered-Langevin samples",
        "",
        f"{md['chains']} chains from the data law, ULA with drift `sigma^alpha s` at sigma = "
        f"{md['sigma']}, step `0.1 sigma^(2 - alpha)`; distance of the last positions to the "
        "phantom manifold (`PhantomManifold.distance`), absolute and relative to the mean "
        f"image norm of the data ({md['data_norm']:.3f}). With the exact score the law "
        "`p_sigma^(sigma^alpha)` has standard deviation `sigma' = sigma^(1 - alpha/2)` in each "
        "of the `d - n` normal directions, so its samples sit at `sqrt(d - n) sigma'` (theory "
        "column). `denoised`: after one Tweedie step `x + sigma'^2 s(x, sigma')` "
        "(`bip.profile.manifold_distance_check`).",
        "",
        "| alpha | steps | distance | relative | theory (exact score) | denoised | "
        "denoised relative | diverged |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in md["runs"].values():
        lines.append(
            f"| {r['alpha']:g} | {r['steps']} | {r['distance']:.3f} | **{r['relative']:.3f}** | "
            f"{r['theory']:.3f} | {r['denoised']:.3f} | **{r['denoised_relative']:.3f}** | "
            f"{r['diverged']} |"
        )
    runs = list(md["runs"].values())
    raw_ok = [f"{r['alpha']:g}" for r in runs if r["relative"] < 0.1]
    den_ok = [f"{r['alpha']:g}" for r in runs if r["denoised_relative"] < 0.1]
    worst = max(runs, key=lambda r: r["alpha"])
    norm = md["data_norm"]
    lines += [
        "",
        f"- Below 0.1 of the image norm: the raw samples for alpha in "
        f"{{{', '.join(raw_ok) or 'none'}}}, the denoised ones for alpha in "
        f"{{{', '.join(den_ok) or 'none'}}}.",
        f"- In d = {md.get('ambient_dim', '?')} dimensions the "
        "criterion is out of reach of raw TS samples at this sigma for larger alpha even with "
        f"the exact score (theory / norm = {worst['theory'] / norm:.2f} at alpha = "
        f"{worst['alpha']:g}): the tempered law concentrates on M only as sigma -> 0, at the "
        "rate sigma^(1 - alpha/2) per normal direction.",
        "- Where the chains sit further out than the theory (large alpha), the network is "
        "the limit: the TS law at sigma spreads at sigma' = sigma^(1 - alpha/2) > sigma across "
        "M, noise levels the net never saw with the label sigma (it learns the score of "
        "p_sigma near p_sigma's own samples), and its pull back to M is too weak there.",
        "",
    ]
    return lines


def _samples_markdown(sm: Mapping[str, Any], card: Mapping[str, Any]) -> list[str]:
    nn, base = sm["nn_distance"], sm["nn_baseline"]
    lines = [
        "### Reverse-diffusion samples are new images, not copies",
        "",
        f"{sm['num_samples']} samples ({sm['sampler']}). Nearest-neighbour L2 distance to the "
        f"{sm['num_training_images']} training images, against the baseline: "
        f"{sm['nn_baseline_is']}.",
        "",
        "| | mean | min | 5% | median | 95% |",
        "|---|---:|---:|---:|---:|---:|",
        f"| samples to training set | {nn['mean']:.3f} | {nn['min']:.3f} | {nn['q05']:.3f} | "
        f"{nn['median']:.3f} | {nn['q95']:.3f} |",
        f"| baseline | {base['mean']:.3f} | {base['min']:.3f} | {base['q05']:.3f} | "
        f"{base['median']:.3f} | {base['q95']:.3f} |",
        "",
        f"- median ratio samples / baseline: {sm['nn_ratio_median']:.2f}; near-copies "
        f"({sm['copies_rule']}): {sm['copies']} of {sm['num_samples']}",
        f"- mean sample norm {sm['sample_norm_mean']:.3f}, pixel range "
        f"[{sm['pixel_range'][0]:.3f}, {sm['pixel_range'][1]:.3f}]",
    ]
    if "manifold_distance" in sm:
        md = sm["manifold_distance"]
        lines.append(
            f"- distance of the samples to the phantom manifold: mean {md['mean']:.3f} "
            f"(relative to the data norm: {sm['manifold_distance_relative']:.3f}), median "
            f"{md['median']:.3f}, 95% {md['q95']:.3f}"
        )
    if card.get("samples_figure"):
        lines += ["", f"![samples]({card['samples_figure']})"]
    lines.append("")
    return lines


def evaluate_folder(
    folder: str | os.PathLike, *, figure: bool = True, machine: str | None = None
) -> dict[str, Any]:
    """Measure the quality of a trained prior folder again and rewrite its card.

    Loads the prior (hash-checked), runs the evaluation of ``train(..., evaluate=True)``
    (profile against the exact score where one exists, the Fig. 2 Langevin check for von Mises
    toys, and for images the manifold distance and reverse-diffusion samples), and rewrites
    ``model.json`` (``quality``, ``eval_seconds``) and ``README.md``; the weights and the
    training fields are untouched. For image priors, ``figure`` also writes ``samples.png``
    (samples above their nearest training images).
    """
    folder = Path(folder)
    card = networks.read_card(folder)
    recipe = load_recipe(folder / networks.RECIPE_FILE)
    law = build_law(recipe)
    prior = networks.load_prior(folder)
    start = time.perf_counter()
    card["quality"] = _evaluate(prior, law, recipe)
    card["eval_seconds"] = round(time.perf_counter() - start, 1)
    if machine is not None:
        card["machine"] = machine
    if figure and recipe.data["manifold"] in IMAGE_MANIFOLDS:
        _samples_figure(folder, prior, law, recipe)
        card["samples_figure"] = "samples.png"
    outputs.atomic_write_bytes(
        folder / networks.CARD_FILE, (json.dumps(card, indent=2) + "\n").encode()
    )
    outputs.atomic_write_bytes(folder / "README.md", model_card_markdown(card, recipe).encode())
    return card


def _samples_figure(folder: Path, prior: ScorePrior, law, recipe: Recipe, num: int = 16) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from bip import plots, profile

    t = recipe.training
    _, samples = profile.diffusion_samples(
        prior,
        IMAGE_EVAL["num_samples"],
        jax.random.fold_in(jax.random.key(recipe.seed + 1), 2),
        sigma_max=t["sigma_max"],
        sigma_min=t["sigma_min"],
        num_levels=IMAGE_EVAL["num_levels"],
    )
    samples = np.asarray(samples[:num])
    best_d = np.full(num, np.inf)
    best = np.zeros_like(samples)
    for chunk in training_images(recipe, law):
        chunk = np.asarray(chunk, np.float64)
        d = profile.nearest_distances(samples, chunk)
        flat = chunk.reshape(len(chunk), -1)
        d2 = ((samples.reshape(num, -1)[:, None, :] - flat[None]) ** 2).sum(-1)
        idx = d2.argmin(axis=1)
        better = d < best_d
        best[better] = chunk[idx[better]]
        best_d = np.minimum(best_d, d)
    fig, axes = plt.subplots(2, num, figsize=(num * 0.9, 2.2))
    for i in range(num):
        for row, img in enumerate((samples[i], best[i])):
            ax = axes[row, i]
            ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[1, i].set_xlabel(f"{best_d[i]:.2f}", fontsize=7)
    axes[0, 0].set_ylabel("sample", fontsize=7)
    axes[1, 0].set_ylabel("nearest\ntraining", fontsize=7)
    fig.suptitle(
        f"{recipe.name}: reverse-diffusion samples (top), nearest training image "
        "(bottom, L2 distance below)",
        fontsize=8,
    )
    plots.save_figure(fig, folder / "samples.png")
    plt.close(fig)


# --------------------------------------------------------------------------- command line


def _cli_train(args: argparse.Namespace) -> int:
    """``bip train`` (parser: ``bip.cli.add_train``): train, or re-evaluate with ``--eval-only``;
    Ctrl-C saves the checkpoint and exits 130 with one line."""
    if args.eval_only:
        try:
            card = evaluate_folder(args.out, machine=args.machine)
        except (RecipeError, FileNotFoundError, ValueError) as err:
            print(f"bip train: error: {err}", file=sys.stderr)
            return 2
        print(f"evaluated {args.out} in {card['eval_seconds']} s; card rewritten")
        return 0
    try:
        result = train(
            args.recipe,
            args.out,
            resume=not args.no_resume,
            stop_after=args.stop_after,
            progress=not args.no_progress,
            evaluate=not args.no_eval,
            keep_checkpoint=not args.drop_checkpoint,
            machine=args.machine,
        )
    except (RecipeError, FileNotFoundError, outputs.OutputError) as err:
        print(f"bip train: error: {err}", file=sys.stderr)
        return 2
    except TrainInterrupted as stop:
        print(
            f"bip train: interrupted at step {stop.steps_done} of {stop.steps}; checkpoint in "
            f"{stop.checkpoint} (run the same command again to resume)",
            file=sys.stderr,
        )
        return 130
    if not result.complete:
        print(f"stopped at step {result.steps_done}; run again to resume from {args.out}")
        return 0
    q = (result.card or {}).get("quality")
    summary = (
        f"trained {result.steps_done} steps in {result.seconds:.1f} s, "
        f"final loss {result.final_loss:.4f}"
    )
    if q and "profile" in q:
        summary += (
            f", relative score error at sigma=0.1: {q['rel_error_at_0.1']:.4f}, "
            f"beta = {q['profile']['beta']:.3f}"
        )
    print(summary)
    print(f"prior written to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bip.train RECIPE --out DIR`` (same options as ``bip train``)."""
    parser = argparse.ArgumentParser(prog="python -m bip.train")
    sub = parser.add_subparsers(dest="command", required=True)
    add_cli(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
