"""Learned score priors: noise-conditional score networks (flax nnx) and the priors they give.

The network ``ScoreNet`` maps a point ``x`` in ``R^d`` and a noise level ``sigma`` to the
score ``s(x, sigma) ~ grad_x log p_sigma(x)`` of the variance-exploding smoothed data law
(SCIENCE.md section 1). One network covers ``sigma`` in ``[0.01, 50]`` through EDM-style
preconditioning (Karras et al. 2022) with ``sd = sigma_data``:

    c_in = 1 / sqrt(sigma^2 + sd^2)          c_skip = sd^2 / (sigma^2 + sd^2)
    c_out = sigma sd / sqrt(sigma^2 + sd^2)  c_noise = log(sigma)  (sinusoidal embedding)

    D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)          # denoiser, ~ E[x0 | x]
    sigma^2 s   = D - x = -sigma^2 / (sigma^2 + sd^2) x + c_out F   # the paper's net output
    s(x, sigma) = -x / (sigma^2 + sd^2) + sd / (sigma sqrt(sigma^2 + sd^2)) F

Two bodies ``F`` share this preconditioning (``NETWORKS``, picked by ``[net] kind`` in a
recipe): ``ScoreNet`` (``kind = "mlp"``), a residual MLP for points whose blocks are modulated
(FiLM: per-sample scale and shift) by an embedding of ``log(sigma)``; and ``UNet`` (``kind =
"unet"``), a small U-Net for single-channel images ``(h, w)`` (GroupNorm, residual conv
blocks with the same FiLM conditioning, a few resolution levels, optional patch stem), whose
score takes ``x`` of shape ``(..., h, w)`` and a sigma per image. ``F`` is trained by
denoising score matching with the EDM weight ``1 / c_out^2``, i.e. the plain regression
``|F - (x0 - c_skip x) / c_out|^2`` whose target has unit scale at every sigma
(``bip.train``). ``F`` runs in float32; the preconditioning runs in the input's dtype
(float64 under x64), and the score comes back in the input's dtype.

``network_prior`` wraps a network as a ``bip.priors.ScorePrior`` whose ``params`` hold the
weights (an ``nnx.State``) as pytree leaves and the ``nnx.GraphDef`` as static data, so
``tempered``, ``with_error``, ``jit`` and ``vmap`` work unchanged and swapping weights never
retraces. ``load_prior`` rebuilds a shipped prior (``priors/<name>/``) from its recipe
(``bip.recipes``) and its hash-checked ``weights.safetensors`` (``bip.priorfile``, the folder
format); training lives in ``bip.train``.

Example:
    >>> import bip.networks
    >>> prior = bip.networks.load_prior("circle-vonmises")       # offline, hash checked
    >>> prior.score(jnp.array([[1.1, 0.0]]), 0.1).shape           # (1, 2)
    >>> net = bip.networks.ScoreNet(dim=2, width=32, depth=2, rngs=nnx.Rngs(0))
    >>> prior = bip.networks.network_prior(net, (2,), name="untrained")
    >>> phantoms = bip.networks.load_prior("phantom32-unet")       # a U-Net image prior
    >>> phantoms.score(jnp.zeros((4, 32, 32)), jnp.full((4,), 0.1)).shape   # (4, 32, 32)
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from bip import _checks, priorfile
from bip.recipes import build_law, load_recipe, net_config
from bip.scoreprior import ScorePrior

Array = jax.Array

NET_DTYPE = jnp.float32
"""The dtype of the network's weights and of its body ``F`` (the preconditioning follows ``x``)."""

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


class _Preconditioned:
    """EDM preconditioning shared by the networks (see the module docstring).

    A subclass defines ``event_shape`` (the shape of one point), ``sigma_data`` and
    ``body(x_in, log_sigma)``: ``(..., *event_shape), (...) -> (..., *event_shape)``.
    """

    event_shape: tuple[int, ...]
    sigma_data: float

    def _coefficients(self, x: Array, sigma: Array):
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else NET_DTYPE
        x = jnp.asarray(x, dtype)
        k = len(self.event_shape)
        batch = x.shape[: x.ndim - k]
        sigma = jnp.broadcast_to(jnp.asarray(sigma, dtype), batch)
        total = sigma**2 + self.sigma_data**2
        c_in = jax.lax.rsqrt(total)
        f = self.body(x * _trail(c_in, k), jnp.log(sigma)).astype(dtype)
        return x, sigma, total, f

    def __call__(self, x: Array, sigma: Array | float) -> Array:
        """The paper's output ``sigma^2 s(x, sigma)`` (= denoiser minus ``x``), shape of ``x``."""
        x, sigma, total, f = self._coefficients(x, sigma)
        k = len(self.event_shape)
        c_out = sigma * self.sigma_data * jax.lax.rsqrt(total)
        return -_trail(sigma**2 / total, k) * x + _trail(c_out, k) * f

    def score(self, x: Array, sigma: Array | float) -> Array:
        """The score ``s(x, sigma)``: ``(..., *event), (...) -> (..., *event)``, dtype of ``x``."""
        x, sigma, total, f = self._coefficients(x, sigma)
        k = len(self.event_shape)
        gain = self.sigma_data / (sigma * jnp.sqrt(total))
        return -x / _trail(total, k) + _trail(gain, k) * f

    def denoise(self, x: Array, sigma: Array | float) -> Array:
        """Tweedie's denoiser ``E[x0 | x] ~ x + sigma^2 s(x, sigma)``, shape of ``x``."""
        return x + self(x, sigma)


def _trail(a: Array, k: int) -> Array:
    """``a`` with ``k`` trailing singleton axes (explicit broadcasting for strict rank rules)."""
    return a.reshape(a.shape + (1,) * k)


class ScoreNet(_Preconditioned, nnx.Module):
    """Noise-conditional score network for points in ``R^dim`` (see the module docstring).

    Args:
        dim: dimension ``d`` of the points.
        width: width of the residual stream.
        depth: number of residual blocks.
        mlp_ratio: hidden width of a block is ``mlp_ratio * width``.
        num_frequencies: number ``K`` of sinusoidal frequencies embedding ``log(sigma)``.
        sigma_data: the data scale ``sd`` of the preconditioning (RMS of one coordinate).
        final_norm: normalise the residual stream (parameter-free LayerNorm) before the output
            layer. ``False`` lets ``F`` grow linearly away from the data (the input projection
            reaches the output unnormalised), which extrapolates the steep normal part of the
            score at small sigma far better: tempered Langevin samples at ``sigma^(1 -
            alpha/2)`` from M, where DSM never trained the net (the weights are the same either
            way).
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
        final_norm: bool = True,
        *,
        rngs: nnx.Rngs,
    ):
        self.dim = _checks.integer("dim", dim)
        self.final_norm = bool(final_norm)
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
    def event_shape(self) -> tuple[int, ...]:
        """The shape ``(dim,)`` of one point."""
        return (self.dim,)

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
            final_norm=self.final_norm,
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
        return self.out(nnx.silu(self.out_norm(h) if self.final_norm else h))


def _num_groups(channels: int, groups: int) -> int:
    return math.gcd(channels, groups)


class _ResBlock(nnx.Module):
    """Residual conv block: ``skip(h) + conv2(silu(film(GN(conv1(silu(GN(h)))))))``.

    FiLM (per-sample scale and shift from the sigma embedding) modulates the second
    normalisation; ``conv2`` starts at zero, so a fresh block is the identity (or its skip).
    """

    def __init__(self, cin: int, cout: int, cond_dim: int, groups: int, *, rngs: nnx.Rngs):
        kw = dict(dtype=NET_DTYPE, param_dtype=NET_DTYPE, rngs=rngs)
        self.norm1 = nnx.GroupNorm(cin, num_groups=_num_groups(cin, groups), **kw)
        self.conv1 = nnx.Conv(cin, cout, (3, 3), **kw)
        self.film = nnx.Linear(cond_dim, 2 * cout, kernel_init=nnx.initializers.zeros, **kw)
        self.norm2 = nnx.GroupNorm(
            cout, num_groups=_num_groups(cout, groups), use_scale=False, use_bias=False, **kw
        )
        self.conv2 = nnx.Conv(cout, cout, (3, 3), kernel_init=nnx.initializers.zeros, **kw)
        self.skip = nnx.Conv(cin, cout, (1, 1), **kw) if cin != cout else None

    def __call__(self, h: Array, cond: Array) -> Array:  # h (N, H, W, C), cond (N, E)
        y = self.conv1(nnx.silu(self.norm1(h)))
        scale, shift = jnp.split(self.film(cond)[:, None, None, :], 2, axis=-1)
        y = self.conv2(nnx.silu(self.norm2(y) * (1 + scale) + shift))
        return (h if self.skip is None else self.skip(h)) + y


class UNet(_Preconditioned, nnx.Module):
    """Noise-conditional U-Net for single-channel images ``(h, w)`` (sizes about 16 to 64).

    ``F`` is a small U-Net: an optional ``patch x patch`` space-to-depth stem (``patch = 2``
    runs the whole net at half resolution, four times cheaper), ``len(channel_mult)``
    resolution levels of ``num_res_blocks`` residual blocks each (GroupNorm, SiLU, 3x3
    convolutions, FiLM on the embedding of ``log(sigma)``), strided-convolution downsampling,
    nearest-neighbour upsampling plus a convolution, skip connections by concatenation, and a
    zero-initialised output convolution (a fresh net has ``F = 0``: the Gaussian score).
    Images whose sides are not multiples of ``patch * 2^(levels - 1)`` are zero-padded and
    cropped back. The EDM preconditioning is the point net's (module docstring), applied
    pixel-wise with a scalar ``sigma`` per image.

    Args:
        shape: the image shape ``(h, w)``.
        channels: channels of the first level; level ``i`` has ``channels * channel_mult[i]``.
        channel_mult: channel multipliers, one per resolution level.
        num_res_blocks: residual blocks per level on the way down (and up).
        groups: GroupNorm groups (reduced to a divisor of the channel count).
        patch: space-to-depth factor of the stem (1: full resolution).
        num_frequencies: sinusoidal frequencies embedding ``log(sigma)``.
        sigma_data: the data scale ``sd`` of the preconditioning (RMS of one pixel).
        rngs: initialisation keys.

    Shapes: ``x`` is ``(..., h, w)``; ``sigma`` broadcasts to ``x.shape[:-2]``.

    Example:
        >>> net = UNet((16, 16), channels=16, rngs=nnx.Rngs(0))
        >>> net.score(jnp.ones((5, 16, 16)), 0.1).shape
        (5, 16, 16)
    """

    def __init__(
        self,
        shape: tuple[int, int],
        channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2),
        num_res_blocks: int = 1,
        groups: int = 8,
        patch: int = 1,
        num_frequencies: int = 16,
        sigma_data: float = 0.5,
        *,
        rngs: nnx.Rngs,
    ):
        shape = tuple(shape)
        if len(shape) != 2:
            raise ValueError(f"shape must be (h, w), got {shape!r}")
        self.shape = tuple(_checks.integer("shape", n) for n in shape)
        self.channels = _checks.integer("channels", channels)
        mult = tuple(_checks.integer("channel_mult", m) for m in channel_mult)
        if not mult:
            raise ValueError("channel_mult must list at least one level")
        self.channel_mult = mult
        self.num_res_blocks = _checks.integer("num_res_blocks", num_res_blocks)
        self.groups = _checks.integer("groups", groups)
        self.patch = _checks.integer("patch", patch)
        self.num_frequencies = _checks.integer("num_frequencies", num_frequencies)
        _checks.positive("sigma_data", sigma_data)
        self.sigma_data = float(sigma_data)
        kw = dict(dtype=NET_DTYPE, param_dtype=NET_DTYPE, rngs=rngs)
        chans = [channels * m for m in mult]
        cond_dim = 4 * channels
        self.embed_in = nnx.Linear(2 * num_frequencies + 1, cond_dim, **kw)
        self.embed_out = nnx.Linear(cond_dim, cond_dim, **kw)
        pp = self.patch**2
        self.stem = nnx.Conv(pp, chans[0], (3, 3), **kw)
        res = lambda cin, cout: _ResBlock(cin, cout, cond_dim, self.groups, rngs=rngs)
        self.down = nnx.List(
            [nnx.List([res(c, c) for _ in range(self.num_res_blocks)]) for c in chans]
        )
        self.downsample = nnx.List(
            [
                nnx.Conv(a, b, (3, 3), strides=2, **kw)
                for a, b in zip(chans[:-1], chans[1:], strict=True)
            ]
        )
        self.mid = res(chans[-1], chans[-1])
        self.up = nnx.List(
            [nnx.List([res(2 * c, c) for _ in range(self.num_res_blocks)]) for c in chans]
        )
        self.upsample = nnx.List(
            [nnx.Conv(b, a, (3, 3), **kw) for a, b in zip(chans[:-1], chans[1:], strict=True)]
        )
        self.out_norm = nnx.GroupNorm(chans[0], num_groups=_num_groups(chans[0], self.groups), **kw)
        self.out = nnx.Conv(chans[0], pp, (3, 3), kernel_init=nnx.initializers.zeros, **kw)

    @property
    def event_shape(self) -> tuple[int, ...]:
        """The image shape ``(h, w)``."""
        return self.shape

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (without ``rngs``) and ``kind = "unet"``."""
        return dict(
            kind="unet",
            shape=list(self.shape),
            channels=self.channels,
            channel_mult=list(self.channel_mult),
            num_res_blocks=self.num_res_blocks,
            groups=self.groups,
            patch=self.patch,
            num_frequencies=self.num_frequencies,
            sigma_data=self.sigma_data,
        )

    def body(self, x_in: Array, log_sigma: Array) -> Array:
        """The raw network ``F``: ``(..., h, w), (...) -> (..., h, w)``, float32 throughout."""
        h, w = self.shape
        batch = x_in.shape[:-2]
        x = jnp.asarray(x_in, NET_DTYPE).reshape((-1, h, w))
        n = x.shape[0]
        log_sigma = jnp.broadcast_to(jnp.asarray(log_sigma, NET_DTYPE), batch).reshape((n,))
        cond = _embed_log_sigma(log_sigma, self.num_frequencies)
        cond = nnx.silu(self.embed_out(nnx.silu(self.embed_in(cond))))
        p = self.patch
        m = p * 2 ** (len(self.channel_mult) - 1)
        hp, wp = -(-h // m) * m, -(-w // m) * m
        x = jnp.pad(x, ((0, 0), (0, hp - h), (0, wp - w)))
        x = x.reshape(n, hp // p, p, wp // p, p).transpose(0, 1, 3, 2, 4)
        hid = self.stem(x.reshape(n, hp // p, wp // p, p * p))
        skips = []
        for level, blocks in enumerate(self.down):
            for block in blocks:
                hid = block(hid, cond)
                skips.append(hid)
            if level < len(self.downsample):
                hid = self.downsample[level](hid)
        hid = self.mid(hid, cond)
        for level in reversed(range(len(self.up))):
            for block in self.up[level]:
                hid = block(jnp.concatenate([hid, skips.pop()], axis=-1), cond)
            if level > 0:
                hid = jnp.repeat(jnp.repeat(hid, 2, axis=1), 2, axis=2)
                hid = self.upsample[level - 1](hid)
        out = self.out(nnx.silu(self.out_norm(hid)))  # (n, hp/p, wp/p, p*p)
        out = out.reshape(n, hp // p, wp // p, p, p).transpose(0, 1, 3, 2, 4)
        return out.reshape(n, hp, wp)[:, :h, :w].reshape(batch + (h, w))


NETWORKS = {"mlp": ScoreNet, "unet": UNet}
"""Network kinds by name (``[net] kind`` of a recipe; ``config["kind"]``, default ``mlp``)."""


def _hashable(value):
    return tuple(_hashable(v) for v in value) if isinstance(value, list | tuple) else value


def hashable_items(mapping: Mapping[str, Any]) -> tuple:
    """``mapping``'s items, sorted, lists turned into tuples: a cache key."""
    return tuple(sorted((k, _hashable(v)) for k, v in dict(mapping).items()))


def _construct(config: Mapping[str, Any], rngs: nnx.Rngs):
    config = dict(config)
    kind = config.pop("kind", "mlp")
    if kind not in NETWORKS:
        raise ValueError(f"unknown network kind {kind!r}; known kinds: {', '.join(NETWORKS)}")
    return NETWORKS[kind](**config, rngs=rngs)


def build_network(config: Mapping[str, Any], rng_key: Array | int = 0) -> ScoreNet | UNet:
    """A network from a config mapping (``net.config``), initialised from ``rng_key``.

    ``config["kind"]`` picks the class (``"mlp"``: ``ScoreNet``, the default; ``"unet"``:
    ``UNet``). The initialisation runs as one jitted program, compiled once per config
    (op-by-op initialisation is slow on a CPU).
    """
    key = jax.random.key(rng_key) if isinstance(rng_key, int) else rng_key
    graphdef, init = _initializer(hashable_items(config))
    return nnx.merge(graphdef, init(key))


@functools.lru_cache(maxsize=32)
def _initializer(config_items: tuple):
    config = dict(config_items)
    graphdef, _ = nnx.split(abstract_network(config))
    return graphdef, jax.jit(lambda k: nnx.split(_construct(config, nnx.Rngs(k)))[1])


def abstract_network(config: Mapping[str, Any]) -> ScoreNet | UNet:
    """A network of the given config whose weights are shapes only (no compute, no memory)."""
    return nnx.eval_shape(lambda: _construct(config, nnx.Rngs(0)))


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
    flat = x.reshape(batch + tuple(model.event_shape))
    score = model.score(flat, jnp.broadcast_to(sigma, batch))
    return score.reshape(x.shape)


def network_prior(
    model_or_state: ScoreNet | tuple[Any, nnx.State],
    event_shape: tuple[int, ...],
    manifold: Any = None,
    name: str = "network",
    sigma_range: tuple[float, float] | None = None,
) -> ScorePrior:
    """A score-only ``ScorePrior`` backed by a ``ScoreNet`` or a ``UNet``.

    Args:
        model_or_state: a network, or its ``(graphdef, state)`` from ``nnx.split``.
        event_shape: the shape of one point: the U-Net's ``(h, w)``; for a ``ScoreNet`` any
            shape of ``dim`` entries (points are flattened, e.g. images for an MLP).
        manifold: the data manifold, if known (metrics use it).
        name: a short description.
        sigma_range: ``(sigma_min, sigma_max)`` the network was trained on; sampling outside
            it is refused (``bip.priors.check_sigma``) unless the caller opts in. ``None``:
            no check.

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
            "model_or_state must be a ScoreNet, a UNet or a (graphdef, state) pair from nnx.split, "
            f"got {type(model_or_state).__name__}"
        )
    event_shape = tuple(int(n) for n in event_shape)
    model = nnx.merge(graphdef, state)
    net_shape = tuple(model.event_shape)
    if isinstance(model, UNet) and event_shape != net_shape:
        raise ValueError(
            f"event_shape {event_shape} differs from the U-Net's image shape {net_shape}"
        )
    if math.prod(event_shape) != math.prod(net_shape):
        raise ValueError(
            f"event_shape {event_shape} has {math.prod(event_shape)} entries but the network "
            f"takes points of dimension {math.prod(net_shape)}"
        )
    return ScorePrior(
        score_fn=_network_score,
        params=NetworkParams(state=state, graphdef=graphdef, event_shape=event_shape),
        event_shape=event_shape,
        logdensity_fn=None,
        manifold=manifold,
        name=name,
        sigma_range=_sigma_range(sigma_range),
    )


def _sigma_range(sigma_range) -> tuple[float, float] | None:
    if sigma_range is None:
        return None
    lo, hi = (float(v) for v in sigma_range)
    if not 0 < lo < hi:
        raise ValueError(
            f"sigma_range must be (low, high) with 0 < low < high, got {sigma_range!r}"
        )
    return (lo, hi)


# --------------------------------------------------------------------------- a prior folder


def load_prior(path_or_name: str | os.PathLike, verify: bool = True) -> ScorePrior:
    """Load a learned score prior shipped as ``recipe.toml`` + ``weights.safetensors`` + card.

    Args:
        path_or_name: a name in ``priors/`` (``"circle-vonmises"``, ``"ellipse-vonmises"``,
            ``"phantom32-unet"``, ``"digits16-unet"``) or a path to a prior folder (or to a
            file inside it).
        verify: check the sha256 of the weights and the recipe against ``model.json``.

    Returns:
        A score-only ``ScorePrior`` (``network_prior``) on the recipe's manifold (``None``
        for an empirical image data set such as digits), whose ``sigma_range`` is the
        recipe's ``[training] sigma_min, sigma_max``: sampling outside it is refused unless
        the caller passes ``allow_extrapolation=True``.

    Raises:
        ValueError: unknown name (the message lists the available priors).
        FileNotFoundError: a missing folder, card, recipe or weights file (named).
        bip.priorfile.WeightsError: a truncated or altered weights file (named).

    Example:
        >>> prior = load_prior("circle-vonmises")
        >>> prior.manifold
        Circle(radius=1.0)
    """
    folder = priorfile.resolve_prior_dir(path_or_name)
    card = priorfile.read_card(folder)
    recipe_path = folder / priorfile.RECIPE_FILE
    if not recipe_path.is_file():
        raise FileNotFoundError(f"recipe {recipe_path} is missing")
    if verify and priorfile.sha256_file(recipe_path) != card["recipe_sha256"]:
        raise priorfile.WeightsError(
            f"recipe {recipe_path} was altered: its sha256 differs from the card"
        )
    recipe = load_recipe(recipe_path)
    law = build_law(recipe)
    config = net_config(recipe, law)
    model = priorfile.load_weights(
        folder / card.get("weights", priorfile.WEIGHTS_FILE),
        abstract_network(config),
        card["weights_sha256"] if verify else None,
    )
    name = card.get("name") or recipe.name or folder.name
    trained = (recipe.training.sigma_min, recipe.training.sigma_max)
    return network_prior(
        model, tuple(law.event_shape), manifold=law.manifold, name=name, sigma_range=trained
    )
