"""Side by side: seconds per 1000 Langevin steps at 64 chains, bip against deepinv (torch CPU).

Two imaging problems, built on both sides with each library's own operators, the same 32x32
ellipse phantom, the same noise draw and the same 64 starting images:

- ``ct``: 16-view parallel-beam projection, ``bip.operators.radon(32, linspace(0, 180, 16))``
  (dense system matrix) / ``deepinv.physics.Tomography(angles=16, img_width=32,
  circle=True, normalize=False)`` (rotate-and-sum, adjoint by autograd, deepinv's default);
- ``deblur``: Gaussian blur of width 1.5 px, 11x11 kernel, zero boundary,
  ``bip.operators.gaussian_blur((32, 32), 1.5)`` (FFT) / ``deepinv.physics.Blur(
  deepinv.physics.functional.gaussian_blur(psf_size=(11, 11), sigma=(1.5, 1.5)),
  padding="constant")`` (``conv2d``).

Gaussian noise of standard deviation 1% of ``max |A x|`` on both; score noise level
``sigma = 0.05``; step ``h = 0.1 min(sigma^2, 1 / L)``, ``L = 1.01 ||A||^2 / s^2`` (bip's
rule, each side with its own operator norm); ULA without projection on both sides.

What is timed
-------------
- bip: ``bip.posteriors.sample(key, prior, bip.likelihoods.gaussian(A, y, s), sigma=0.05,
  alpha=0.0, num_chains=64, num_steps=N, thin=N, initial_positions=x0, progress=False)``
  with the shipped U-Net ``load_prior("phantom32-unet")`` (187,988 float32 parameters),
  float32 (x64 stays off), one jitted ``lax.scan`` vmapped over the chains, then
  ``block_until_ready``. Repeated calls of the same structure reuse one compiled program
  (the drift is a pytree whose arrays are traced), so after the first call's compile
  (``compile``) a call costs about 0.01 s (``call``); jax's persistent compilation cache is
  on, in a fresh temporary folder, so that the first compile is really measured.
- deepinv: ``deepinv.sampling.sampling_builder("ULA", deepinv.optim.L2(sigma=s),
  deepinv.optim.ScorePrior(denoiser), params_algo={"step_size": h, "alpha": 1.0,
  "sigma": 0.05}, max_iter=N).sample(y, physics, x_init=x0)`` -- the documented way to run
  ULA (the legacy ``deepinv.sampling.ULA`` class wraps the same iterator), with its default
  bookkeeping (Welford mean and variance of every 10th state after 20% burn-in, the last 5
  states kept by reference): the 64 chains are one batch of 64 images ``(64, 1, 32, 32)``
  (the observation repeated), ``torch.no_grad`` (``sample`` sets it),
  ``torch.set_num_threads(os.cpu_count())``, float32, eager (no ``torch.compile``).
  Three denoisers, one row each:

  1. ``deepinv.models.DnCNN(1, 1, depth=7, nf=64, pretrained=None)``, random weights (seed 0,
     nothing downloaded): 185,857 parameters, as many as the U-Net, but all at full
     resolution, so about 22x the U-Net's FLOPs per image (the row the comparison was
     specified with; its ratio mostly measures the two networks);
  2. the same U-Net, ported to torch in ``torch_unet`` (same weights; its score agrees with
     ``prior.score`` to 6e-7 relative in float32), a ``deepinv.models.Denoiser`` returning
     ``x + sigma^2 s``: the same computation on both sides, so this row measures the
     libraries (XLA:CPU jit of the whole chain vs torch eager + oneDNN, and the operators);
  3. ``DnCNN(1, 1, depth=5, nf=16)``: 7,265 parameters, about the U-Net's FLOPs.

  ``alpha = 1`` there is deepinv's prior weight, the same drift as bip's untempered
  ``alpha = 0``.

Both sides report the steady state ``(t(N2) - t(N1)) / (N2 - N1)`` (so that per-call costs
cancel), with each ``t`` the best of the rounds; the rounds interleave bip and deepinv so that
load from other processes on the shared cores hits both alike; the last row gives the CPU
those other processes used meanwhile (``/proc/stat`` less this process). FLOPs per image:
XLA's cost analysis of the jitted U-Net score at batch 64 (all ops), ``torch.utils.
flop_counter`` of one denoiser call (convolutions and matmuls only), so they differ for the
same U-Net (17.4 vs 19.5 MFLOP).

OpenMP: torch's OpenMP threads spin while they wait (libgomp's default). With another
process busy on one of the 2 cores that made every torch op wait for a descheduled thread:
the U-Net forward at batch 64 took median 344 ms (54 to 1300 ms) with 2 threads against
28 ms with 1 thread or with ``OMP_WAIT_POLICY=PASSIVE`` (2 threads), and a deepinv chain of
20 steps took longer than one of 100. That measures the machine, not deepinv, so the
benchmark sets ``OMP_WAIT_POLICY=PASSIVE`` before importing torch unless the variable is
already set (``OMP_WAIT_POLICY=ACTIVE`` to see the spinning); jax's thread pool was not
affected (bip times moved < 10%).

Install (a separate venv; the project's own venv stays free of torch). The PyPI torchvision
matching the CPU torch wheel is a CUDA build whose C extension does not load beside it, and
deepinv imports torchvision at import time; ``_import_deepinv`` then defines the two
torchvision operator schemas that torchvision registers fake kernels for (``nms``, ``qnms``)
before importing it, so that the pure-Python parts deepinv uses load (no torchvision op runs
here)::

    python3 -m venv /work/deepinv-venv && . /work/deepinv-venv/bin/activate
    pip install torch==2.13.0                      # the local CPU wheel, 2.13.0+cpu
    echo torch==2.13.0 > /tmp/torchpin.txt         # else deepinv pulls torch 2.14.1 + CUDA
    pip install deepinv -c /tmp/torchpin.txt       # deepinv 0.5.0, torchvision 0.28.0+cu130
    pip install -e /work/main -c /tmp/torchpin.txt # bip (jax 0.10.2) in the same process

Run: ``/work/deepinv-venv/bin/python -m bench.bench_deepinv [--quick]`` from the repository
root, or ``BIP_BENCH_DEEPINV_PYTHON=/work/deepinv-venv/bin/python python -m bench --only
deepinv`` from the project venv (the section hands the whole comparison to that interpreter).
About 2 minutes (``--quick`` about 1).

Measured (2 CPU cores, x86_64, python 3.11.7, jax 0.10.2, torch 2.13.0+cpu, deepinv 0.5.0;
a quiet machine: other processes used 0.00 of the 2 cores; 83 s; seconds per 1000 steps of 64
chains, ratio = deepinv / bip):

    problem  deepinv denoiser                   bip     deepinv  ratio   params (bip / deepinv)
    CT       DnCNN(7,64), as many parameters    21.9 s  194 s    8.86    187,988 / 185,857
    CT       same U-Net (torch port)            21.9 s  38.0 s   1.73    187,988 / 187,988
    CT       DnCNN(5,16), as many FLOPs         21.9 s  27.7 s   1.26    187,988 / 7,265
    deblur   DnCNN(7,64), as many parameters    23.7 s  196 s    8.30    187,988 / 185,857
    deblur   same U-Net (torch port)            23.7 s  30.6 s   1.29    187,988 / 187,988
    deblur   DnCNN(5,16), as many FLOPs         23.7 s  15.6 s   0.66    187,988 / 7,265

(An earlier run with another process on one of the two cores: 30 s for bip, ratios 11.5 /
1.43 / 1.25 on CT and 10.6 / 0.77 / 0.69 on deblurring.) bip compiles in about 1.7 s and then
pays about 0.01 s a call. Reading: bip is 2x faster or more against the parameter-matched
DnCNN, and that is mostly the network's 22x FLOPs, not the library. With the same U-Net on
both sides a step costs about one U-Net score on either side, so bip is 1.7x faster on CT,
where deepinv's rotate-and-sum projector with its autograd adjoint adds to every step against
bip's dense matrix, and 1.3x faster on deblurring, where the operators cost little on either
side.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CHAINS = 64
SIZE = 32
NUM_ANGLES = 16
BLUR_WIDTH = 1.5
BLUR_KERNEL = 11  # bip's default 2 * ceil(3 * width) + 1; deepinv's default would be 13
SIGMA = 0.05
NOISE_REL = 0.01
C_STEP = 0.1
PROBLEMS = ("ct", "deblur")
PROBLEM_NAMES = {"ct": "CT 32x32, 16 views", "deblur": "deblur 32x32, Gaussian 1.5 px"}
PRIOR = "phantom32-unet"
# deepinv denoisers: a DnCNN (depth, nf) with the U-Net's parameter count, the bip U-Net
# ported to torch (same weights), and a DnCNN with about the U-Net's FLOPs per image
DENOISERS = {"params": (7, 64), "unet": None, "flops": (5, 16)}
LABELS = {
    "unet": "same U-Net (torch port, same weights)",
    "params": "DnCNN(7,64), as many parameters",
    "flops": "DnCNN(5,16), as many FLOPs",
}
# (N1, N2) step counts per timing: steady state (t(N2) - t(N1)) / (N2 - N1)
STEPS = {"bip": (20, 100), "unet": (20, 100), "params": (5, 25), "flops": (20, 100)}
QUICK_STEPS = {"bip": (10, 50), "unet": (10, 50), "params": (4, 16), "flops": (10, 50)}
HINT = (
    "skipped: needs torch + deepinv (see bench/bench_deepinv.py: pip install torch==2.13.0; "
    "pip install deepinv -c <torch==2.13.0 pin>; then run with that python, or set "
    "BIP_BENCH_DEEPINV_PYTHON)"
)


def _row(benchmark, a, b, ratio, note=""):
    return {"benchmark": benchmark, "a": a, "b": b, "ratio": ratio, "note": note}


# --------------------------------------------------------------------------- shared data


def phantom(size: int = SIZE) -> np.ndarray:
    """A float32 ``size x size`` image of three ellipses, zero outside the inscribed circle."""
    t = (np.arange(size) - size // 2) / (size / 2)
    yy, xx = np.meshgrid(t, t, indexing="ij")
    image = np.zeros((size, size))
    for cx, cy, a, b, theta, value in (
        (0.0, 0.0, 0.55, 0.4, 0.3, 1.0),
        (0.15, -0.1, 0.2, 0.1, -0.5, -0.4),
        (-0.2, 0.15, 0.1, 0.15, 0.0, 0.3),
    ):
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        image += value * ((u / a) ** 2 + (v / b) ** 2 <= 1.0)
    image[xx**2 + yy**2 > 0.95**2] = 0.0
    return image.astype(np.float32)


def _data(measurement_shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The phantom, a standard normal noise draw of ``measurement_shape``, and ``x0``."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal(measurement_shape).astype(np.float32)
    x0 = phantom() + 0.1 * rng.standard_normal((CHAINS, SIZE, SIZE)).astype(np.float32)
    return phantom(), z, x0


def _step(norm_sq: float, noise_std: float) -> float:
    lipschitz = 1.01 * norm_sq / noise_std**2
    return C_STEP * min(SIGMA**2, 1.0 / lipschitz)


def _measurement_shape(problem: str) -> tuple[int, int]:
    return (SIZE, NUM_ANGLES) if problem == "ct" else (SIZE, SIZE)


# --------------------------------------------------------------------------- bip side


_JAX_CACHE: list[str] = []


def _setup_jax():
    """float32 jax with the persistent compilation cache in a fresh folder (see docstring)."""
    import jax

    if not _JAX_CACHE:
        import atexit
        import shutil

        _JAX_CACHE.append(tempfile.mkdtemp(prefix="bip-bench-deepinv-"))
        atexit.register(shutil.rmtree, _JAX_CACHE[0], True)
        jax.config.update("jax_enable_x64", False)
        jax.config.update("jax_compilation_cache_dir", _JAX_CACHE[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return jax


class BipSide:
    """``bip.posteriors.sample`` on one problem with the shipped U-Net prior."""

    def __init__(self, problem: str):
        jax = _setup_jax()
        import jax.numpy as jnp

        import bip

        self.jax = jax
        self.bip = bip
        self.prior = bip.networks.load_prior(PRIOR)
        if problem == "ct":
            op = bip.operators.radon(SIZE, jnp.linspace(0.0, 180.0, NUM_ANGLES, endpoint=False))
        else:
            op = bip.operators.gaussian_blur((SIZE, SIZE), BLUR_WIDTH)
        x, z, x0 = _data(op.output_shape)
        clean = np.asarray(op(jnp.asarray(x)))
        self.noise_std = NOISE_REL * float(np.abs(clean).max())
        y = jnp.asarray(clean + self.noise_std * z)
        self.likelihood = bip.likelihoods.gaussian(op, y, self.noise_std)
        self.step = float(bip.posteriors.step_size(SIGMA, 0.0, self.likelihood, C_STEP))
        self.x0 = jnp.asarray(x0)
        self.operator = op.name
        self.params = int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(self.prior.params)))
        self.finite = True

    def timed(self, steps: int) -> float:
        t0 = time.perf_counter()
        out = self.bip.posteriors.sample(
            self.jax.random.key(0),
            self.prior,
            self.likelihood,
            sigma=SIGMA,
            alpha=0.0,
            num_chains=CHAINS,
            num_steps=steps,
            thin=steps,
            initial_positions=self.x0,
            progress=False,
            on_divergence="ignore",
        )
        self.jax.block_until_ready(out.samples)
        seconds = time.perf_counter() - t0
        self.finite = self.finite and bool(np.isfinite(np.asarray(out.samples)).all())
        self.finite = self.finite and not bool(np.asarray(out.diverged).any())
        return seconds

    def mflop_per_image(self) -> float:
        jnp = self.jax.numpy
        score = self.jax.jit(lambda x: self.prior.score(x, SIGMA))
        cost = score.lower(jnp.zeros((CHAINS, SIZE, SIZE), jnp.float32)).compile()
        cost = cost.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"]) / CHAINS / 1e6


# --------------------------------------------------------------------------- deepinv side


_TV_LIB: list = []


def _import_deepinv():
    """``(torch, deepinv)``; raises ImportError when either is missing.

    A torchvision whose C extension cannot load beside this torch (the PyPI CUDA build next
    to the CPU wheel) fails at import on registering fake kernels for ``torchvision::nms``;
    defining those two schemas first (only then) lets the rest of torchvision import.

    Sets ``OMP_WAIT_POLICY=PASSIVE`` (unless set, and only before torch is first imported):
    see the module docstring.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is not None and spec.submodule_search_locations and not _TV_LIB:
        folder = Path(list(spec.submodule_search_locations)[0])
        libs = sorted(folder.glob("_C.*"))
        try:
            if not libs:
                raise OSError("no torchvision._C")
            torch.ops.load_library(str(libs[0]))
            _TV_LIB.append(None)
        except (OSError, ImportError):
            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
            _TV_LIB.append(lib)
    import deepinv

    return torch, deepinv


def deepinv_missing() -> str | None:
    """None when torch and deepinv import here, else why not (the exception, one line)."""
    try:
        _import_deepinv()
    except Exception as err:  # ImportError, or a torch/torchvision that fails another way
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


class DeepinvSide:
    """deepinv's ULA sampler on one problem with the ported U-Net (``denoiser=None``) or a
    random DnCNN of ``denoiser = (depth, nf)``."""

    def __init__(self, problem: str, denoiser: tuple[int, int] | None):
        torch, dinv = _import_deepinv()
        import warnings

        self.torch = torch
        torch.set_num_threads(os.cpu_count() or 1)
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if problem == "ct":
                physics = dinv.physics.Tomography(
                    angles=NUM_ANGLES, img_width=SIZE, circle=True, normalize=False
                )
            else:
                kernel = dinv.physics.functional.gaussian_blur(
                    psf_size=(BLUR_KERNEL, BLUR_KERNEL), sigma=(BLUR_WIDTH, BLUR_WIDTH)
                )
                physics = dinv.physics.Blur(kernel, padding="constant")
        x, z, x0 = _data(_measurement_shape(problem))
        clean = physics.A(torch.from_numpy(x)[None, None])
        self.noise_std = NOISE_REL * float(clean.abs().max())
        y = clean + self.noise_std * torch.from_numpy(z)[None, None]
        self.y = y.expand(CHAINS, -1, -1, -1).contiguous()
        self.x0 = torch.from_numpy(x0)[:, None]
        start = torch.randn(1, 1, SIZE, SIZE)
        if hasattr(physics, "compute_sqnorm"):
            norm_sq = float(physics.compute_sqnorm(start, verbose=False))
        else:  # older deepinv: compute_norm is the squared norm
            norm_sq = float(physics.compute_norm(start, verbose=False))
        self.step = _step(norm_sq, self.noise_std)
        self.physics = physics
        if denoiser is None:
            self.denoiser = torch_unet(torch, dinv)
        else:
            depth, nf = denoiser
            self.denoiser = dinv.models.DnCNN(1, 1, depth=depth, nf=nf, pretrained=None)
        self.denoiser.eval()
        self.params = sum(p.numel() for p in self.denoiser.parameters())
        self.dinv = dinv
        self.data_fidelity = dinv.optim.L2(sigma=self.noise_std)
        self.score_prior = dinv.optim.ScorePrior(self.denoiser)
        self.finite = True

    def sampler(self, steps: int):
        return self.dinv.sampling.sampling_builder(
            "ULA",
            self.data_fidelity,
            self.score_prior,
            params_algo={"step_size": self.step, "alpha": 1.0, "sigma": SIGMA},
            max_iter=steps,
        )

    def timed(self, steps: int) -> float:
        sampler = self.sampler(steps)
        t0 = time.perf_counter()
        mean, _ = sampler.sample(self.y, self.physics, x_init=self.x0, seed=0)
        seconds = time.perf_counter() - t0
        last = sampler.get_chain()[-1]["x"]
        self.finite = self.finite and bool(self.torch.isfinite(last).all())
        self.finite = self.finite and bool(self.torch.isfinite(mean).all())
        return seconds

    def mflop_per_image(self) -> float:
        from torch.utils.flop_counter import FlopCounterMode

        with self.torch.no_grad(), FlopCounterMode(display=False) as counter:
            self.denoiser(self.x0, SIGMA)
        return counter.get_total_flops() / CHAINS / 1e6


def torch_unet(torch, dinv, name: str = PRIOR):
    """The shipped bip U-Net ported to torch (same weights), as a deepinv ``Denoiser``.

    Reads ``priors/<name>/model.json`` and ``weights.safetensors`` with numpy only and mirrors
    ``bip.networks.UNet.body`` and its EDM preconditioning layer by layer (NCHW instead of
    NHWC; flax ``SAME`` padding, GroupNorm epsilon 1e-6). ``forward(x, sigma)`` returns
    Tweedie's denoiser ``x + sigma^2 s(x, sigma)``, so deepinv's ``ScorePrior`` gives back
    bip's score ``s``.
    """
    import safetensors.numpy

    F = torch.nn.functional
    folder = ROOT / "priors" / name
    net = json.loads((folder / "model.json").read_text())["net"]
    raw = safetensors.numpy.load_file(str(folder / "weights.safetensors"))
    levels = len(net["channel_mult"])
    chans = [net["channels"] * m for m in net["channel_mult"]]
    groups = {c: math.gcd(c, net["groups"]) for c in chans + [2 * c for c in chans]}

    def tensor(key):
        value = raw[key]
        if key.endswith("kernel") and value.ndim == 4:  # (kh, kw, cin, cout) -> (cout, cin, ..)
            value = value.transpose(3, 2, 0, 1)
        elif key.endswith("kernel"):  # (in, out) -> (out, in)
            value = value.T
        return torch.nn.Parameter(torch.from_numpy(value.copy()), requires_grad=False)

    class UNet(dinv.models.Denoiser):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.ParameterDict({k.replace("/", "_"): tensor(k) for k in raw})
            freqs = np.geomspace(1 / 32, 2.0, net["num_frequencies"]).astype(np.float32)
            self.register_buffer("freqs", torch.from_numpy(freqs))
            self.sigma_data = float(net["sigma_data"])
            self.patch = int(net["patch"])

        def conv(self, name, h, stride=1):
            weight, bias = self.w[name + "_kernel"], self.w[name + "_bias"]
            k = weight.shape[-1]
            if stride == 1:
                return F.conv2d(h, weight, bias, padding=k // 2)
            pad_h = max((-(-h.shape[2] // stride) - 1) * stride + k - h.shape[2], 0)
            pad_w = max((-(-h.shape[3] // stride) - 1) * stride + k - h.shape[3], 0)
            h = F.pad(h, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
            return F.conv2d(h, weight, bias, stride=stride)

        def linear(self, name, h):
            return F.linear(h, self.w[name + "_kernel"], self.w[name + "_bias"])

        def norm(self, name, h, affine=True):
            c = h.shape[1]
            if affine:
                weight, bias = self.w[name + "_scale"], self.w[name + "_bias"]
                return F.group_norm(h, groups[c], weight, bias, eps=1e-6)
            return F.group_norm(h, groups[c], eps=1e-6)

        def block(self, name, h, cond):
            y = self.conv(name + "_conv1", F.silu(self.norm(name + "_norm1", h)))
            scale, shift = self.linear(name + "_film", cond)[:, :, None, None].chunk(2, dim=1)
            y = F.silu(self.norm(name + "_norm2", y, affine=False) * (1 + scale) + shift)
            y = self.conv(name + "_conv2", y)
            skip = h if name + "_skip_kernel" not in self.w else self.conv(name + "_skip", h)
            return skip + y

        def body(self, x, log_sigma):  # x (n, 1, h, w), log_sigma (n,)
            angle = 2 * math.pi * log_sigma[:, None] * self.freqs
            cond = torch.cat([angle.sin(), angle.cos(), log_sigma[:, None] / 4], dim=1)
            cond = F.silu(self.linear("embed_out", F.silu(self.linear("embed_in", cond))))
            h, w = x.shape[-2:]
            m = self.patch * 2 ** (levels - 1)
            x = F.pad(x, (0, -(-w // m) * m - w, 0, -(-h // m) * m - h))
            hid = self.conv("stem", F.pixel_unshuffle(x, self.patch))
            skips = []
            for level in range(levels):
                for i in range(net["num_res_blocks"]):
                    hid = self.block(f"down_{level}_{i}", hid, cond)
                    skips.append(hid)
                if level < levels - 1:
                    hid = self.conv(f"downsample_{level}", hid, stride=2)
            hid = self.block("mid", hid, cond)
            for level in reversed(range(levels)):
                for i in range(net["num_res_blocks"]):
                    hid = self.block(f"up_{level}_{i}", torch.cat([hid, skips.pop()], 1), cond)
                if level > 0:
                    hid = F.interpolate(hid, scale_factor=2, mode="nearest")
                    hid = self.conv(f"upsample_{level - 1}", hid)
            out = self.conv("out", F.silu(self.norm("out_norm", hid)))
            return F.pixel_shuffle(out, self.patch)[..., :h, :w]

        def score(self, x, sigma):
            sigma = torch.as_tensor(sigma, dtype=x.dtype).expand(x.shape[0])
            total = (sigma**2 + self.sigma_data**2)[:, None, None, None]
            f = self.body(x * total.rsqrt(), sigma.log())
            gain = self.sigma_data / (sigma[:, None, None, None] * total.sqrt())
            return -x / total + gain * f

        def forward(self, x, sigma, **kwargs):
            sigma_t = torch.as_tensor(sigma, dtype=x.dtype)
            return x + sigma_t**2 * self.score(x, sigma)

    return UNet()


# --------------------------------------------------------------------------- comparison


def _busy_jiffies() -> tuple[float, float] | None:
    """(busy, total) CPU jiffies of the whole machine from ``/proc/stat`` (None elsewhere)."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def _own_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LoadMonitor:
    """CPU cores used by OTHER processes while the benchmark ran (average over the run)."""

    def __init__(self):
        self.start = _busy_jiffies(), _own_cpu_seconds(), time.perf_counter()

    def other_cores(self) -> float | None:
        (j0, own0, t0), j1 = self.start, _busy_jiffies()
        if j0 is None or j1 is None:
            return None
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        busy = (j1[0] - j0[0]) / hz
        own = _own_cpu_seconds() - own0
        return max(busy - own, 0.0) / max(time.perf_counter() - t0, 1e-9)


def _steady(times: dict[int, list[float]], counts: tuple[int, int]) -> tuple[float, float, bool]:
    """Seconds per step, per-call seconds (best time of each step count), and t(N2) > t(N1)."""
    n1, n2 = counts
    t1, t2 = min(times[n1]), min(times[n2])
    per_step = max(t2 - t1, 1e-9) / (n2 - n1)
    return per_step, max(t1 - n1 * per_step, 0.0), t2 > t1


def compare(quick: bool = False, rounds: int | None = None, log=None) -> list[dict]:
    """Run both sides on both problems, interleaved; return the table rows."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    steps = QUICK_STEPS if quick else STEPS
    rounds = rounds if rounds is not None else (1 if quick else 2)
    t_start = time.perf_counter()
    monitor = LoadMonitor()
    sides, times, info = {}, {}, {}
    for problem in PROBLEMS:
        bip_side = BipSide(problem)
        sides[problem, "bip"] = bip_side
        n1, n2 = steps["bip"]
        t0 = time.perf_counter()
        first = bip_side.timed(n1)
        bip_side.timed(n2)  # a second length: compiled (and cached) once too
        info[problem, "bip"] = {
            "first_s": first,
            "warmup_s": time.perf_counter() - t0,
            "mflop": bip_side.mflop_per_image(),
        }
        for key, denoiser in DENOISERS.items():
            side = DeepinvSide(problem, denoiser)
            sides[problem, key] = side
            side.timed(2)  # first call: lazy autograd adjoint, allocator warm-up
            info[problem, key] = {"mflop": side.mflop_per_image()}
        log(f"[deepinv bench] {problem}: set up and warmed up")
    for name in sides:
        times[name] = {n: [] for n in steps[name[1]]}
    for r in range(rounds):
        for problem in PROBLEMS:
            for kind in ("bip", *DENOISERS):
                for n in steps[kind]:
                    times[problem, kind][n].append(sides[problem, kind].timed(n))
            log(f"[deepinv bench] round {r + 1}/{rounds} {problem}: {_brief(times, problem)}")
    rows = []
    for problem in PROBLEMS:
        b = sides[problem, "bip"]
        bip_step, bip_call, bip_ok = _steady(times[problem, "bip"], steps["bip"])
        bip_info = info[problem, "bip"]
        compile_s = bip_info["first_s"] - bip_call - steps["bip"][0] * bip_step
        for key in DENOISERS:
            d = sides[problem, key]
            d_step, _, d_ok = _steady(times[problem, key], steps[key])
            note = (
                f"params {b.params:,} vs {d.params:,}; MFLOP/img/score "
                f"{bip_info['mflop']:.1f} vs {info[problem, key]['mflop']:.1f}; "
                f"bip compile {compile_s:.1f} s + {bip_call:.2f} s a call"
            )
            if not (b.finite and d.finite):
                note += f"; NON-FINITE (bip {b.finite}, deepinv {d.finite})"
            if not (bip_ok and d_ok):
                note += "; t(N2) <= t(N1): too noisy, rerun"
            rows.append(
                _row(
                    f"s/1000 ULA steps x {CHAINS} chains, {PROBLEM_NAMES[problem]}: "
                    f"bip U-Net / deepinv {LABELS[key]}",
                    f"{1000 * bip_step:.3g} s",
                    f"{1000 * d_step:.3g} s",
                    d_step / bip_step if bip_ok and d_ok else None,
                    note,
                )
            )
    seconds = time.perf_counter() - t_start
    other = monitor.other_cores()
    torch = sides[PROBLEMS[0], "unet"].torch
    rows.append(
        _row(
            "deepinv bench setup (bip side: jax, deepinv side: torch)",
            f"jax {b.jax.__version__}",
            f"torch {torch.__version__}, deepinv {_version('deepinv')}",
            None,
            f"{CHAINS} chains, steps {steps['bip']} / {steps['params']} (DnCNN 7,64) x "
            f"{rounds} rounds, {seconds:.0f} s; torch threads {torch.get_num_threads()}, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; other processes "
            + ("?" if other is None else f"{other:.2f}")
            + f" of {os.cpu_count()} cores",
        )
    )
    log(f"[deepinv bench] {seconds:.0f} s")
    return rows


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def _brief(times, problem) -> str:
    return ", ".join(
        f"{kind} " + "/".join(f"{v[-1]:.2f}" for v in times[problem, kind].values()) + " s"
        for kind in ("bip", *DENOISERS)
    )


def _print_table(rows: list[dict]) -> None:
    try:
        sys.path.insert(0, str(ROOT))
        from bench.__main__ import _table

        print(_table(rows))
    except ImportError:
        for row in rows:
            print(row)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, one round")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    missing = deepinv_missing()
    if missing is not None:
        rows = [_row("s/1000 ULA steps x 64 chains: bip vs deepinv", "-", "-", None, HINT)]
        print(f"[deepinv bench] {missing}", file=sys.stderr)
    else:
        rows = compare(args.quick, args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(rows))
    _print_table(rows)
    return rows


if __name__ == "__main__":
    main()
