"""The on-disk format of a trained score prior: a folder of recipe, weights and card.

A prior folder (``priors/<name>/`` for the shipped ones) holds

- ``recipe.toml``: the training recipe (``bip.recipes``), which fixes the data law and the
  network's architecture;
- ``weights.safetensors``: the network's float32 weights keyed by their nnx paths
  (``weights_to_bytes`` / ``load_weights``);
- ``model.json``: the card (``read_card`` / ``write_card``): format, sha256 of the weights
  and of the recipe, training record and measured quality;
- ``README.md``: the card as Markdown (``bip.cards``).

``resolve_prior_dir`` turns a name or a path into a folder (named priors live in
``PRIORS_DIR``). This module knows files, bytes and hashes only, no network architecture
and no training: ``bip.networks.load_prior`` rebuilds a prior from a folder with it.

Example:
    >>> import bip.priorfile
    >>> bip.priorfile.available_priors()
    ['circle-vonmises', 'digits16-unet', 'ellipse-vonmises', 'phantom32-unet']
    >>> card = bip.priorfile.read_card(bip.priorfile.resolve_prior_dir("circle-vonmises"))
    >>> card["format"], card["event_shape"]
    ('bip-score-prior/1', [2])
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from bip import outputs
from bip._data import shipped

WEIGHTS_FILE = "weights.safetensors"
RECIPE_FILE = "recipe.toml"
CARD_FILE = "model.json"
FORMAT = "bip-score-prior/1"

PRIORS_DIR = shipped("priors")
"""Where named priors live: ``priors/<name>/`` (the wheel's package data, else the checkout's)."""


class WeightsError(ValueError):
    """A weights file that is truncated, altered or does not match its recipe."""


def _path_key(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def weights_to_bytes(model_or_state: nnx.Module | nnx.State, metadata: dict | None = None) -> bytes:
    """The safetensors encoding of a network's weights, keyed by their nnx paths (``a/0/b``).

    ``metadata`` (str -> str) goes into the file's header next to the format name.

    Example:
        >>> net = bip.networks.build_network({"dim": 2, "width": 8, "depth": 1})
        >>> data = weights_to_bytes(net, {"name": "tiny"})     # bytes, loads with load_weights
    """
    import safetensors.numpy

    state = nnx.state(model_or_state) if isinstance(model_or_state, nnx.Module) else model_or_state
    tensors = {
        _path_key(path): np.ascontiguousarray(np.asarray(var.get_value()))
        for path, var in nnx.to_flat_state(state)
    }
    # one metadata key: safetensors orders several keys arbitrarily, one keeps the bytes stable
    meta = {"format": FORMAT, **{str(k): str(v) for k, v in (metadata or {}).items()}}
    return safetensors.numpy.save(tensors, metadata={"bip": json.dumps(meta, sort_keys=True)})


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_weights(
    path: str | os.PathLike, like: nnx.Module, expected_sha256: str | None = None
) -> nnx.Module:
    """The network ``like`` (its architecture; its weights may be abstract, from
    ``bip.networks.abstract_network``) with the weights stored at ``path``.

    Raises ``FileNotFoundError`` if the file is missing and ``WeightsError`` (naming the file)
    if its sha256 differs from ``expected_sha256``, it does not parse as safetensors, or its
    tensors do not match the architecture.

    Example:
        >>> like = bip.networks.abstract_network({"dim": 2, "width": 64, "depth": 3})
        >>> net = load_weights(PRIORS_DIR / "circle-vonmises" / WEIGHTS_FILE, like)
    """
    import safetensors.numpy

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} is missing")
    data = path.read_bytes()
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise WeightsError(
                f"weights file {path} is truncated or altered: its sha256 is {actual}, "
                f"the card expects {expected_sha256}"
            )
    try:
        tensors = safetensors.numpy.load(data)
    except Exception as err:  # safetensors raises its own SafetensorError (and others)
        raise WeightsError(f"weights file {path} is not valid safetensors: {err}") from err
    graphdef, abstract = nnx.split(like)
    flat = []
    expected_keys = set()
    for p, var in nnx.to_flat_state(abstract):
        key = _path_key(p)
        expected_keys.add(key)
        if key not in tensors:
            raise WeightsError(f"weights file {path} lacks tensor {key!r} of the network")
        value = tensors[key]
        if value.shape != var.shape or value.dtype != var.dtype:
            raise WeightsError(
                f"weights file {path}: tensor {key!r} has shape {value.shape} {value.dtype}, "
                f"the network needs {var.shape} {var.dtype}"
            )
        flat.append((p, var.replace(jnp.asarray(value))))
    extra = sorted(set(tensors) - expected_keys)
    if extra:
        raise WeightsError(f"weights file {path} has tensors the network lacks: {extra[:5]}")
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def available_priors(root: str | os.PathLike | None = None) -> list[str]:
    """Names of the priors shipped in ``priors/`` (folders holding a ``model.json``)."""
    root = PRIORS_DIR if root is None else Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / CARD_FILE).is_file())


def resolve_prior_dir(path_or_name: str | os.PathLike) -> Path:
    text = os.fspath(path_or_name)
    separators = [sep for sep in (os.sep, os.altsep) if sep]
    explicit = (
        isinstance(path_or_name, os.PathLike)
        or any(sep in text for sep in separators)
        or text in (".", "..")
    )
    if not explicit:  # a bare name: priors/<name>/ first, then a folder in the working dir
        for folder in (PRIORS_DIR / text, Path(text)):
            if (folder / CARD_FILE).is_file():
                return folder
        names = available_priors()
        raise ValueError(
            f"unknown prior {text!r}: available priors in {PRIORS_DIR} are "
            f"{', '.join(names) if names else '(none)'}; or pass a folder path"
        )
    candidate = Path(text)
    if candidate.is_file():
        return candidate.parent
    if candidate.is_dir():
        return candidate
    raise FileNotFoundError(f"prior folder {candidate} does not exist")


def read_card(folder: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``model.json`` of a prior folder (error naming the file if missing/invalid)."""
    card_path = Path(folder) / CARD_FILE
    if not card_path.is_file():
        raise FileNotFoundError(f"model card {card_path} is missing")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"model card {card_path} is not valid JSON: {err}") from err
    for key in ("weights_sha256", "recipe_sha256"):
        if key not in card:
            raise ValueError(f"model card {card_path} lacks the key {key!r}")
    return card


def write_card(folder: str | os.PathLike, card: Mapping[str, Any]) -> None:
    """Write ``card`` as the ``model.json`` of a prior folder (atomically; 2-space JSON).

    Example:
        >>> write_card("runs/circle", {**read_card("runs/circle"), "machine": "laptop"})
    """
    text = json.dumps(card, indent=2) + "\n"
    outputs.atomic_write_bytes(Path(folder) / CARD_FILE, text.encode())
