"""Training recipes: a score prior's data, network and optimisation, read from TOML.

A recipe names the data law, the network and the optimisation; everything else is derived
from it and its seed, so the same recipe gives the same weights (on the same machine)::

    name = "circle-vonmises"
    seed = 0

    [data]                       # the data law (bip.specs.DataSpec, as in problem specs)
    source = "circle"            # circle (radius) | ellipse (a, b) | sphere (dim, radius)
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
    source = "phantom"           # phantom (size, edge_width): bip.images.PhantomLaw, fresh
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

The schema is ``bip.specs.Recipe`` (frozen dataclasses, one per table; ``[data]`` is the
``DataSpec`` that problem specs share; the shipped recipes' old key ``manifold`` is read as
``source``). ``load_recipe`` validates a recipe (every error names the file, the table and
the key), ``build_law`` gives its data law (``bip.laws.data_law``), ``net_config`` its
network config (``bip.networks.build_network``), and ``training_batch`` /
``training_images`` the data that training draws (step by step, from the recipe's seed).
``bip.train`` trains from a recipe; ``bip.networks.load_prior`` rebuilds a
trained prior from its recipe and weights.

Example:
    >>> recipe = load_recipe({"data": {"source": "circle", "law": "vonmises", "kappa": 2.0}})
    >>> law = build_law(recipe)                  # bip.manifolds.VonMises on Circle(radius=1)
    >>> net_config(recipe, law)["dim"]
    2
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from bip import images, laws
from bip.schema import SpecError, located, parse
from bip.specs import Recipe

Array = jax.Array

__all__ = [
    "Recipe",
    "RecipeError",
    "build_law",
    "load_recipe",
    "net_config",
    "recipe_to_toml",
    "training_batch",
    "training_images",
]

RecipeError = SpecError
"""A recipe with an unknown key or a bad value (``bip.schema.SpecError``: the message names
the file, the section and the key)."""


def load_recipe(recipe: str | os.PathLike | Mapping[str, Any] | Recipe) -> Recipe:
    """Read and validate a recipe from a TOML file path or a mapping of the same shape.

    Raises:
        FileNotFoundError: the file does not exist.
        RecipeError: invalid TOML, an unknown key, a missing key or a bad value; the message
            names the file and the key (``recipe r.toml: [training] lr: must be > 0, got -1.0``).

    Example:
        >>> recipe = load_recipe({"data": {"source": "circle", "law": "uniform"},
        ...                       "training": {"steps": 100}})
        >>> recipe.training.steps, recipe.data.radius
        (100, 1.0)
    """
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str | os.PathLike):
        path = Path(recipe)
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {path} does not exist")
        origin, text = f"recipe {path}", path.read_text()
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise RecipeError(origin, "", "", f"invalid TOML: {err}") from err
        recipe = parse(Recipe, raw, origin)
        if recipe.name is None:  # named after its folder
            recipe = dataclasses.replace(recipe, name=path.resolve().parent.name)
        return located(recipe, source=str(path), text=text)
    if isinstance(recipe, Mapping):
        return parse(Recipe, recipe, "recipe <mapping>")
    raise TypeError(f"recipe must be a path or a mapping, got {type(recipe).__name__}")


def build_law(recipe: Recipe | str | os.PathLike | Mapping[str, Any]):
    """The data law that a recipe's ``[data]`` table describes (``bip.laws.data_law``).

    Toy manifolds give a law from ``bip.manifolds``; ``phantom`` a ``bip.images.PhantomLaw``
    (uniform on the parameter box, fresh images every step); ``digits`` and ``faces`` a
    ``bip.images.EmpiricalLaw`` of the fixed data set (``bip.images.digits(size)``,
    ``bip.images.faces()``); ``ellipses`` a ``bip.ellipses.RandomEllipseLaw`` (fresh images
    every step).
    """
    return laws.data_law(load_recipe(recipe).data)


def net_config(recipe: Recipe | str | os.PathLike | Mapping[str, Any], law=None) -> dict[str, Any]:
    """The network config of a recipe (``bip.networks.build_network``).

    ``mlp``: the ``ScoreNet`` arguments, ``dim`` from the law's event shape (images are
    flattened); ``unet``: ``kind = "unet"``, ``shape`` the image shape, and the ``UNet``
    arguments.
    """
    recipe = load_recipe(recipe)
    law = build_law(recipe) if law is None else law
    net = recipe.net.to_dict()
    kind = net.pop("kind")
    if kind == "mlp":
        return {"dim": int(math.prod(law.event_shape)), **net}
    return {"kind": kind, "shape": [int(n) for n in law.event_shape], **net}


def recipe_to_toml(recipe: Recipe) -> str:
    """The resolved recipe as TOML text (used when the recipe did not come from a file)."""
    return recipe.to_toml()


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
    batch, total = recipe.training.batch, recipe.training.steps
    draw = jax.jit(
        jax.vmap(lambda t: training_batch(law, train_key, t, batch), in_axes=0),
    )
    for start in range(0, total, chunk):
        steps = jnp.arange(start, min(start + chunk, total), dtype=jnp.int32)
        yield draw(steps).reshape((-1,) + tuple(law.event_shape))
