"""Learned score priors: a noise-conditional score network (flax nnx) and its weights on disk.

The network ``ScoreNet`` maps a point ``x`` in ``R^d`` and a noise level ``sigma`` to the
score ``s(x, sigma) ~ grad_x log p_sigma(x)`` of the variance-exploding smoothed data law
(SCIENCE.md section 1). One network covers ``sigma`` in ``[0.01, 50]`` through EDM-style
preconditioning (Karras et al. 2022) with ``sd = sigma_data``:

    c_in = 1 / sqrt(sigma^2 + sd^2)          c_skip = sd^2 / (sigma^2 + sd^2)
    c_out = sigma sd / sqrt(sigma^2 + sd^2)  c_noise = log(sigma)  (sinusoidal embedding)

    D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)          # denoiser, ~ E[x0 | x]
    sigma^2 s   = D - x = -sigma^2 / (sigma^2 + sd^2) x + c_out F   # the paper's net output
    s(x, sigma) = -x / (sigma^2 + sd^2) + sd / (sigma sqrt(sigma^2 + sd^2)) F

``F`` is a residual MLP whose blocks are modulated (FiLM: per-sample scale and shift) by an
embedding of ``log(sigma)``. It is trained by denoising score matching with the EDM weight
``1 / c_out^2``, i.e. the plain regression ``|F - (x0 - c_skip x) / c_out|^2`` whose target has
unit scale at every sigma (``bip.train``). ``F`` runs in float32; the preconditioning runs in
the input's dtype (float64 under x64), and the score comes back in the input's dtype.

``network_prior`` wraps a network as a ``bip.priors.ScorePrior`` whose ``params`` hold the
weights (an ``nnx.State``) as pytree leaves and the ``nnx.GraphDef`` as static data, so
``tempered``, ``with_error``, ``jit`` and ``vmap`` work unchanged and swapping weights never
retraces. ``load_prior`` rebuilds a shipped prior (``priors/<name>/``) from its recipe and its
hash-checked ``weights.safetensors``.

Example:
    >>> import bip.networks
    >>> prior = bip.networks.load_prior("circle-vonmises")       # offline, hash checked
    >>> prior.score(jnp.array([[1.1, 0.0]]), 0.1).shape           # (1, 2)
    >>> net = bip.networks.ScoreNet(dim=2, width=32, depth=2, rngs=nnx.Rngs(0))
    >>> prior = bip.networks.network_prior(net, (2,), name="untrained")
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from bip import _checks
from bip.priors import ScorePrior

Array = jax.Array

NET_DTYPE = jnp.float32
"""The dtype of the network's weights and of its body ``F`` (the preconditioning follows ``x``)."""

WEIGHTS_FILE = "weights.safetensors"
RECIPE_FILE = "recipe.toml"
CARD_FILE = "model.json"
FORMAT = "bip-score-prior/1"

PRIORS_DIR = Path(__file__).resolve().parent.parent / "priors"
"""Where named priors live: ``priors/<name>/`` at the repository root."""


class WeightsError(ValueError):
    """A weights file that is truncated, altered or does not match its recipe."""


# --------------------------------------------------------------------------- the network


def _embed_log_sigma(log_sigma: Array, num_frequencies: int) -> Array:
    """Sinusoidal features ``(..., 2K + 1)`` of ``log(sigma)``; periods from 32 down to 0.5.

    ``log(sigma)`` spans about 8.5 over ``sigma`` in ``[0.01, 50]``, so the slowest feature
    is monotone over the range and the fastest resolves a factor of about 1.6 in sigma.
    """
    freqs = np.geomspace(1 / 32, 2.0, num_frequencies).astype(np.float32)
    freqs = freqs.reshape((1,) * log_sigma.ndim + (num_frequencies,))  # explicit broadcast
    angle = 2 * np.float32(np.pi) * log_sigma[..., None] * freqs
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle), log_sigma[..., None] / 4], axis=-1)


class _Block(nnx.Module):
    """Pre-norm residual MLP block with FiLM conditioning: ``h + W2 silu(W1 film(LN(h))))``."""

    def __init__(self, width: int, hidden: int, *, rngs: nnx.Rngs):
        kw = dict(dtype=NET_DTYPE, param_dtype=NET_DTYPE, rngs=rngs)
        self.norm = nnx.LayerNorm(width, use_scale=False, use_bias=False, **kw)
        self.film = nnx.Linear(width, 2 * width, kernel_init=nnx.initializers.zeros, **kw)
        self.up = nnx.Linear(width, hidden, **kw)
        self.down = nnx.Linear(hidden, width, kernel_init=nnx.initializers.zeros, **kw)

    def __call__(self, h: Array, cond: Array) -> Array:
        scale, shift = jnp.split(self.film(cond), 2, axis=-1)
        y = self.norm(h) * (1 + scale) + shift
        return h + self.down(nnx.silu(self.up(y)))


class ScoreNet(nnx.Module):
    """Noise-conditional score network for points in ``R^dim`` (see the module docstring).

    Args:
        dim: dimension ``d`` of the points.
        width: width of the residual stream.
        depth: number of residual blocks.
        mlp_ratio: hidden width of a block is ``mlp_ratio * width``.
        num_frequencies: number ``K`` of sinusoidal frequencies embedding ``log(sigma)``.
        sigma_data: the data scale ``sd`` of the preconditioning (RMS of one coordinate).
        rngs: initialisation keys, e.g. ``nnx.Rngs(0)``.

    Shapes: ``x`` is ``(..., dim)``; ``sigma`` broadcasts to ``x.shape[:-1]``.

    Example:
        >>> net = ScoreNet(dim=2, width=32, depth=2, rngs=nnx.Rngs(0))
        >>> net.score(jnp.ones((5, 2)), jnp.full((5,), 0.1)).shape
        (5, 2)
    """

    def __init__(
        self,
        dim: int,
        width: int = 128,
        depth: int = 4,
        mlp_ratio: int = 2,
        num_frequencies: int = 16,
        sigma_data: float = 1.0,
        *,
        rngs: nnx.Rngs,
    ):
        self.dim = _checks.integer("dim", dim)
        self.width = _checks.integer("width", width)
        self.depth = _checks.integer("depth", depth)
        self.mlp_ratio = _checks.integer("mlp_ratio", mlp_ratio)
        self.num_frequencies = _checks.integer("num_frequencies", num_frequencies)
        _checks.positive("sigma_data", sigma_data)
        self.sigma_data = float(sigma_data)
        kw = dict(dtype=NET_DTYPE, param_dtype=NET_DTYPE, rngs=rngs)
        self.embed_in = nnx.Linear(2 * num_frequencies + 1, width, **kw)
        self.embed_out = nnx.Linear(width, width, **kw)
        self.inp = nnx.Linear(dim, width, **kw)
        self.blocks = nnx.List([_Block(width, mlp_ratio * width, rngs=rngs) for _ in range(depth)])
        self.out_norm = nnx.LayerNorm(width, use_scale=False, use_bias=False, **kw)
        self.out = nnx.Linear(width, dim, kernel_init=nnx.initializers.zeros, **kw)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (without ``rngs``): rebuilds the same architecture."""
        return dict(
            dim=self.dim,
            width=self.width,
            depth=self.depth,
            mlp_ratio=self.mlp_ratio,
            num_frequencies=self.num_frequencies,
            sigma_data=self.sigma_data,
        )

    def body(self, x_in: Array, log_sigma: Array) -> Array:
        """The raw network ``F``: ``(..., dim), (...) -> (..., dim)``, float32 throughout."""
        x_in = jnp.asarray(x_in, NET_DTYPE)
        log_sigma = jnp.asarray(log_sigma, NET_DTYPE)
        cond = _embed_log_sigma(log_sigma, self.num_frequencies)
        cond = nnx.silu(self.embed_out(nnx.silu(self.embed_in(cond))))
        h = self.inp(x_in)
        for block in self.blocks:
            h = block(h, cond)
        return self.out(nnx.silu(self.out_norm(h)))

    def _coefficients(self, x: Array, sigma: Array):
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else NET_DTYPE
        x = jnp.asarray(x, dtype)
        sigma = jnp.broadcast_to(jnp.asarray(sigma, dtype), x.shape[:-1])
        total = sigma**2 + self.sigma_data**2
        c_in = jax.lax.rsqrt(total)
        f = self.body(x * c_in[..., None], jnp.log(sigma)).astype(dtype)
        return x, sigma, total, f

    def __call__(self, x: Array, sigma: Array | float) -> Array:
        """The paper's output ``sigma^2 s(x, sigma)`` (= denoiser minus ``x``), shape of ``x``."""
        x, sigma, total, f = self._coefficients(x, sigma)
        c_out = sigma * self.sigma_data * jax.lax.rsqrt(total)
        return -(sigma**2 / total)[..., None] * x + c_out[..., None] * f

    def score(self, x: Array, sigma: Array | float) -> Array:
        """The score ``s(x, sigma)``: ``(..., dim), (...) -> (..., dim)`` in the dtype of ``x``."""
        x, sigma, total, f = self._coefficients(x, sigma)
        gain = self.sigma_data / (sigma * jnp.sqrt(total))
        return -x / total[..., None] + gain[..., None] * f

    def denoise(self, x: Array, sigma: Array | float) -> Array:
        """Tweedie's denoiser ``E[x0 | x] ~ x + sigma^2 s(x, sigma)``, shape of ``x``."""
        return x + self(x, sigma)


def build_network(config: Mapping[str, Any], rng_key: Array | int = 0) -> ScoreNet:
    """A ``ScoreNet`` from a config mapping (``ScoreNet.config``), initialised from ``rng_key``.

    The initialisation runs as one jitted program, compiled once per config (op-by-op
    initialisation is slow on a CPU).
    """
    key = jax.random.key(rng_key) if isinstance(rng_key, int) else rng_key
    graphdef, init = _initializer(tuple(sorted(dict(config).items())))
    return nnx.merge(graphdef, init(key))


@functools.lru_cache(maxsize=32)
def _initializer(config_items: tuple):
    config = dict(config_items)
    graphdef, _ = nnx.split(abstract_network(config))
    return graphdef, jax.jit(lambda k: nnx.split(ScoreNet(**config, rngs=nnx.Rngs(k)))[1])


def abstract_network(config: Mapping[str, Any]) -> ScoreNet:
    """A ``ScoreNet`` of the given config whose weights are shapes only (no compute, no memory)."""
    return nnx.eval_shape(lambda: ScoreNet(**dict(config), rngs=nnx.Rngs(0)))


# --------------------------------------------------------------------------- the prior


@struct.dataclass
class NetworkParams:
    """The parameters of a network prior: weights as pytree leaves, architecture static."""

    state: nnx.State
    graphdef: Any = struct.field(pytree_node=False)
    event_shape: tuple[int, ...] = struct.field(pytree_node=False, default=())


def _network_score(params: NetworkParams, x: Array, sigma: Array) -> Array:
    model = nnx.merge(params.graphdef, params.state)
    batch = x.shape[: x.ndim - len(params.event_shape)]
    flat = x.reshape(batch + (model.dim,))
    score = model.score(flat, jnp.broadcast_to(sigma, batch))
    return score.reshape(x.shape)


def network_prior(
    model_or_state: ScoreNet | tuple[Any, nnx.State],
    event_shape: tuple[int, ...],
    manifold: Any = None,
    name: str = "network",
) -> ScorePrior:
    """A score-only ``ScorePrior`` backed by a ``ScoreNet``.

    Args:
        model_or_state: a ``ScoreNet``, or its ``(graphdef, state)`` from ``nnx.split``.
        event_shape: the shape of one point; its size must equal the network's ``dim``.
        manifold: the data manifold, if known (metrics use it).
        name: a short description.

    Returns:
        A ``ScorePrior`` with ``params = NetworkParams(state, graphdef)``: the weights are the
        pytree leaves, so ``prior.replace(params=prior.params.replace(state=other))`` swaps
        weights without retracing a jitted function of the prior (so does a second prior
        built from a net of the same architecture, with the same ``name`` and manifold type:
        those are part of the pytree structure). ``logdensity_fn`` is None.

    Example:
        >>> net = ScoreNet(dim=2, width=32, depth=2, rngs=nnx.Rngs(0))
        >>> prior = network_prior(net, (2,), manifold=bip.manifolds.Circle())
        >>> bip.priors.tempered(prior, 1.0).score(jnp.ones((3, 2)), 0.1).shape
        (3, 2)
    """
    if isinstance(model_or_state, nnx.Module):
        graphdef, state = nnx.split(model_or_state)
    elif isinstance(model_or_state, tuple) and len(model_or_state) == 2:
        graphdef, state = model_or_state
    else:
        raise TypeError(
            "model_or_state must be a ScoreNet or a (graphdef, state) pair from nnx.split, "
            f"got {type(model_or_state).__name__}"
        )
    event_shape = tuple(int(n) for n in event_shape)
    dim = nnx.merge(graphdef, state).dim
    if math.prod(event_shape) != dim:
        raise ValueError(
            f"event_shape {event_shape} has {math.prod(event_shape)} entries but the network "
            f"takes points of dimension {dim}"
        )
    return ScorePrior(
        score_fn=_network_score,
        params=NetworkParams(state=state, graphdef=graphdef, event_shape=event_shape),
        event_shape=event_shape,
        logdensity_fn=None,
        manifold=manifold,
        name=name,
    )


# --------------------------------------------------------------------------- weights on disk


def _path_key(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def weights_to_bytes(model_or_state: ScoreNet | nnx.State, metadata: dict | None = None) -> bytes:
    """The safetensors encoding of a network's weights, keyed by their nnx paths (``a/0/b``)."""
    import safetensors.numpy

    state = nnx.state(model_or_state) if isinstance(model_or_state, nnx.Module) else model_or_state
    tensors = {
        _path_key(path): np.ascontiguousarray(np.asarray(var.get_value()))
        for path, var in nnx.to_flat_state(state)
    }
    # one metadata key: safetensors orders several keys arbitrarily, one keeps the bytes stable
    meta = {"format": FORMAT, **{str(k): str(v) for k, v in (metadata or {}).items()}}
    return safetensors.numpy.save(tensors, metadata={"bip": json.dumps(meta, sort_keys=True)})


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, then ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_weights(
    path: str | os.PathLike, config: Mapping[str, Any], expected_sha256: str | None = None
) -> ScoreNet:
    """Rebuild a ``ScoreNet`` of architecture ``config`` with the weights stored at ``path``.

    Raises ``FileNotFoundError`` if the file is missing and ``WeightsError`` (naming the file)
    if its sha256 differs from ``expected_sha256``, it does not parse as safetensors, or its
    tensors do not match the architecture.
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
    graphdef, abstract = nnx.split(abstract_network(config))
    flat = []
    expected_keys = set()
    for p, var in nnx.to_flat_state(abstract):
        key = _path_key(p)
        expected_keys.add(key)
        if key not in tensors:
            raise WeightsError(f"weights file {path} lacks tensor {key!r} of the recipe's network")
        value = tensors[key]
        if value.shape != var.shape or value.dtype != var.dtype:
            raise WeightsError(
                f"weights file {path}: tensor {key!r} has shape {value.shape} {value.dtype}, "
                f"the recipe's network needs {var.shape} {var.dtype}"
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


def _resolve_prior_dir(path_or_name: str | os.PathLike) -> Path:
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


def load_prior(path_or_name: str | os.PathLike, verify: bool = True) -> ScorePrior:
    """Load a learned score prior shipped as ``recipe.toml`` + ``weights.safetensors`` + card.

    Args:
        path_or_name: a name in ``priors/`` (``"circle-vonmises"``, ``"ellipse-vonmises"``)
            or a path to a prior folder (or to a file inside it).
        verify: check the sha256 of the weights and the recipe against ``model.json``.

    Returns:
        A score-only ``ScorePrior`` (``network_prior``) on the recipe's manifold.

    Raises:
        ValueError: unknown name (the message lists the available priors).
        FileNotFoundError: a missing folder, card, recipe or weights file (named).
        WeightsError: a truncated or altered weights file (named).

    Example:
        >>> prior = load_prior("circle-vonmises")
        >>> prior.manifold
        Circle(radius=1.0)
    """
    from bip import train as _train  # the recipe format lives with the trainer

    folder = _resolve_prior_dir(path_or_name)
    card = read_card(folder)
    recipe_path = folder / RECIPE_FILE
    if not recipe_path.is_file():
        raise FileNotFoundError(f"recipe {recipe_path} is missing")
    if verify and sha256_file(recipe_path) != card["recipe_sha256"]:
        raise WeightsError(f"recipe {recipe_path} was altered: its sha256 differs from the card")
    recipe = _train.load_recipe(recipe_path)
    law = _train.build_law(recipe)
    config = _train.net_config(recipe, law)
    model = load_weights(
        folder / card.get("weights", WEIGHTS_FILE),
        config,
        card["weights_sha256"] if verify else None,
    )
    name = card.get("name") or recipe.name or folder.name
    return network_prior(model, tuple(law.event_shape), manifold=law.manifold, name=name)
