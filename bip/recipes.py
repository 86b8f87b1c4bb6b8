"""Training recipes: the TOML schema of a score prior's data, network and optimisation.

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
                                 #   | ellipses (size, count, axes, intensity, radius):
                                 #   bip.ellipses.RandomEllipseLaw, fresh draws every step
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

``load_recipe`` validates a recipe (every error names the file and the key), ``build_law``
gives its data law, ``net_config`` its network config (``bip.networks.build_network``), and
``training_batch`` / ``training_images`` the data that training draws (step by step, from the
recipe's seed). ``bip.train`` trains from a recipe; ``bip.networks.load_prior`` rebuilds a
trained prior from its recipe and weights.

Example:
    >>> recipe = load_recipe({"data": {"manifold": "circle", "law": "vonmises", "kappa": 2.0}})
    >>> law = build_law(recipe)                  # bip.manifolds.VonMises on Circle(radius=1)
    >>> net_config(recipe, law)["dim"]
    2
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bip import ellipses, images, manifolds

Array = jax.Array


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
            ("circle", "ellipse", "sphere", "phantom", "digits", "faces", "ellipses"),
        ),
        "law": ("str", _REQUIRED, ("vonmises", "vmf", "uniform", "empirical", "random")),
        "a": ("float", 1.0, ">0"),
        "b": ("float", 2.0, ">0"),
        "dim": ("int", 3, ">=2"),
        "kappa": ("float", 1.0, ">=0"),
        "loc": ("float", 0.0, "finite"),
        "mean_direction": ("floats", None, None),
        "size": ("int", None, ">=8"),  # default: 32 (phantom), 16 (digits), 128 (ellipses)
        "edge_width": ("float", 1.0, ">0"),
        # ellipses: RandomEllipseLaw's fields (defaults and ranges checked by the law)
        "count": ("intpair", None, None),
        "axes": ("floatpair", None, None),
        "intensity": ("floatpair", None, None),
        "radius": ("float", 1.0, ">0"),  # circle, sphere: 1.0; ellipses: the law's (0.9)
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
    "ellipses": {"size", "count", "axes", "intensity", "radius"},
}
_LAW_KEYS = {
    "vonmises": {"kappa", "loc"},
    "vmf": {"kappa", "mean_direction"},
    "uniform": set(),
    "empirical": set(),
    "random": set(),
}
_LAW_MANIFOLDS = {
    "vonmises": ("circle", "ellipse"),
    "vmf": ("sphere",),
    "uniform": ("circle", "ellipse", "sphere", "phantom"),
    "empirical": ("digits", "faces"),
    "random": ("ellipses",),
}
IMAGE_MANIFOLDS = ("phantom", "digits", "faces", "ellipses")
"""``[data] manifold`` values whose points are single-channel images ``(h, w)``."""
_DEFAULT_LAW = {
    "phantom": "uniform",
    "digits": "empirical",
    "faces": "empirical",
    "ellipses": "random",
}
_DEFAULT_SIZE = {"phantom": 32, "digits": 16, "ellipses": 128}
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
    if kind in ("intpair", "floatpair"):
        numbers = isinstance(value, list) and len(value) == 2
        numbers = numbers and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        )
        if kind == "intpair":
            numbers = numbers and all(float(v).is_integer() for v in value)
        if not numbers:
            what = "integers" if kind == "intpair" else "numbers"
            _fail(source, section, key, f"must be a [min, max] pair of {what}, got {value!r}")
        return [int(v) if kind == "intpair" else float(v) for v in value]
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
    if manifold == "ellipses":
        data = _ellipse_data(source, data, data_raw)
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


def _ellipse_law(data: Mapping[str, Any]) -> ellipses.RandomEllipseLaw:
    fields = ("size", "count", "axes", "intensity", "radius")
    return ellipses.RandomEllipseLaw(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields}
    )


def _ellipse_data(source: str, data: dict[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The ``[data]`` table of an ellipse recipe with the law's defaults filled in; the law's
    own range checks, as a ``RecipeError`` naming the key."""
    given_keys = {k for k in given if k in _MANIFOLD_KEYS["ellipses"]}
    try:
        law = _ellipse_law({k: data[k] for k in given_keys})
    except ValueError as err:
        key = next((k for k in sorted(given_keys) if str(err).startswith(k)), "")
        _fail(source, "data", key or "law", str(err))
    return {
        "manifold": "ellipses",
        "law": data["law"],
        "size": law.size,
        "count": list(law.count),
        "axes": list(law.axes),
        "intensity": list(law.intensity),
        "radius": law.radius,
    }


def build_law(recipe: Recipe | str | os.PathLike | Mapping[str, Any]):
    """The data law that a recipe's ``[data]`` table describes.

    Toy manifolds give a law from ``bip.manifolds``; ``phantom`` a ``bip.images.PhantomLaw``
    (uniform on the parameter box, fresh images every step); ``digits`` and ``faces`` a
    ``bip.images.EmpiricalLaw`` of the fixed data set (``bip.images.digits(size)``,
    ``bip.images.faces()``); ``ellipses`` a ``bip.ellipses.RandomEllipseLaw`` (fresh images
    every step).
    """
    data = load_recipe(recipe).data
    if data["manifold"] == "ellipses":
        return _ellipse_law(data)
    if data["manifold"] in IMAGE_MANIFOLDS:
        if data["manifold"] == "phantom":
            manifold = images.PhantomManifold(size=data["size"], edge_width=data["edge_width"])
            return images.PhantomLaw(manifold)
        if data["manifold"] == "digits":
            pixels = images.digits(data["size"])
        else:
            pixels = images.faces()
        return images.EmpiricalLaw(
            jnp.asarray(np.asarray(pixels, np.float32)), name=data["manifold"]
        )
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


# --------------------------------------------------------------------------- training data


def training_batch(law, train_key: Array, step: Array | int, batch: int, event_shape=None):
    """The data ``x0`` ``(batch, *event_shape)`` (float32) that training step ``step`` draws.

    ``train_key`` is the second half of ``jax.random.split(jax.random.key(seed))``; the draw
    depends on the step index only (resumable runs; ``image_quality`` regenerates the
    phantom training set from it). ``event_shape`` defaults to the law's.
    """
    k_data = jax.random.split(jax.random.fold_in(train_key, step), 3)[0]
    shape = tuple(law.event_shape) if event_shape is None else tuple(event_shape)
    return jnp.asarray(law.sample(k_data, (batch,)), jnp.float32).reshape((batch,) + shape)


def training_images(recipe: Recipe | Mapping[str, Any] | str | os.PathLike, law=None, chunk=50):
    """Yield the training data of a recipe, ``(chunk * batch, *event)`` arrays step by step.

    A ``bip.images.EmpiricalLaw`` yields its fixed data set once; any other law regenerates
    the draws of steps ``0 .. steps - 1`` exactly as training made them (``training_batch``).
    """
    recipe = load_recipe(recipe)
    law = build_law(recipe) if law is None else law
    if isinstance(law, images.EmpiricalLaw):
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
