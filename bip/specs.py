"""The schema of problem specs (``problems/*.toml``) and recipes (``priors/*/recipe.toml``).

Both are frozen dataclasses of ``bip.schema`` sections, checked by its one validator
(``bip.schema.parse``; errors are ``SpecError`` naming the file, section and key). They share
the ``[data]`` section: ``DataSpec`` names a data law (``source`` and ``law``, and the law's
keys), which ``bip.laws.data_law`` builds for ``bip train`` and ``bip solve`` alike; a
problem's ``ProblemData`` adds how its test image is chosen (``index``, ``angle``) or read
(``path``, ``measurement``). Old recipes' ``manifold`` key is read as ``source``.

``[data]`` keys that apply (another given key is an error, ``to_dict`` leaves the rest out):

====================  ==========================================  =======================
source                keys                                        law (default first)
====================  ==========================================  =======================
circle                radius                                      vonmises, uniform
ellipse               a, b                                        vonmises, uniform
sphere                dim, radius                                 vmf, uniform
phantom               size, edge_width, free                      uniform
ellipse-grid          size, edge_width, count ([k])               uniform
shepp-logan-family    size, edge_width                            uniform
ellipses              size, count, axes, intensity, radius        random
digits                size                                        empirical
faces                                                             empirical
shepp-logan (spec)    size                                        (one image, no law)
file (spec)           path, measurement                           (no law)
====================  ==========================================  =======================

Law keys: ``vonmises``: kappa, loc; ``vmf``: kappa, mean_direction. Problem specs add
``index`` (which draw or image is the truth), ``angle`` (circle) and ``measurement``.

Example:
    >>> spec = parse(ProblemSpec, tomllib.loads(Path("problems/circle-toy.toml").read_text()),
    ...              "circle-toy.toml")
    >>> spec.sampler.sigma, spec.data.law
    (0.1, 'vonmises')
    >>> parse(ProblemSpec, spec.to_dict(), "again") == spec
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from bip import ellipses, priorfile
from bip.images import PARAMETERS as PHANTOM_PARAMETERS
from bip.schema import Section, SpecError, key, parse, where

__all__ = [
    "DataSpec",
    "NetSpec",
    "NoiseSpec",
    "OperatorSpec",
    "PriorSpec",
    "ProblemData",
    "ProblemSpec",
    "Recipe",
    "RobustnessSpec",
    "SamplerSpec",
    "SpecError",
    "TrainingSpec",
    "parse",
]

Fail = Callable[[str, str], None]

# source -> its own keys
SOURCE_KEYS = {
    "circle": {"radius"},
    "ellipse": {"a", "b"},
    "sphere": {"dim", "radius"},
    "phantom": {"size", "edge_width", "free"},
    "ellipse-grid": {"size", "edge_width", "count"},
    "shepp-logan-family": {"size", "edge_width"},
    "ellipses": {"size", "count", "axes", "intensity", "radius"},
    "digits": {"size"},
    "faces": set(),
}
# law -> (its keys, the sources it is defined on); DEFAULT_LAW: a source's law when not given
LAWS = {
    "vonmises": ({"kappa", "loc"}, ("circle", "ellipse")),
    "vmf": ({"kappa", "mean_direction"}, ("sphere",)),
    "uniform": (
        set(),
        ("circle", "ellipse", "sphere", "phantom", "ellipse-grid", "shepp-logan-family"),
    ),
    "empirical": (set(), ("digits", "faces")),
    "random": (set(), ("ellipses",)),
}
DEFAULT_LAW = {
    source: next(law for law, (_, on) in LAWS.items() if source in on) for source in SOURCE_KEYS
}
IMAGE_SOURCES = ("phantom", "ellipse-grid", "shepp-logan-family", "ellipses", "digits", "faces")
"""``[data] source`` values whose points are single-channel images ``(h, w)``."""
MANIFOLD_SOURCES = ("circle", "ellipse", "sphere", "phantom", "ellipse-grid", "shepp-logan-family")
"""Sources whose law lives on a known manifold (an exact prior exists)."""
PROBLEM_SOURCES = ("circle", "phantom", "ellipses", "ellipse-grid", "shepp-logan-family")
PROBLEM_SOURCES += ("digits", "faces", "shepp-logan", "file")
"""``[data] source`` values of a problem spec (``shepp-logan``: the one phantom image;
``file``: your own data)."""
_DEFAULT_SIZE = {"digits": 16, "ellipses": 128}  # else 32
_ELLIPSE_LAW_KEYS = ("size", "count", "axes", "intensity", "radius")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataSpec(Section):
    """``[data]``: a data law (the table in the module docstring)."""

    ALIASES: ClassVar[dict[str, str]] = {"manifold": "source"}
    source: str = key(choices=tuple(SOURCE_KEYS))
    law: str | None = key(None, choices=tuple(LAWS))
    a: float = key(1.0, check=">0")
    b: float = key(2.0, check=">0")
    dim: int = key(3, check=">=2")
    kappa: float = key(1.0, check=">=0")
    loc: float = key(0.0, check="finite")
    mean_direction: tuple[float, ...] | None = key(None, check="finite", length=(1, None))
    size: int | None = key(None, check=">=8")  # default: 16 digits, 128 ellipses, else 32
    edge_width: float = key(1.0, check=">0")
    free: tuple[str, ...] = key(PHANTOM_PARAMETERS, choices=PHANTOM_PARAMETERS, length=(1, None))
    count: tuple[int, ...] | None = key(None, check=">=0", length=(1, 2))  # [min, max] or [k]
    axes: tuple[float, ...] | None = key(None, check=">0", length=(2, 2))
    intensity: tuple[float, ...] | None = key(None, check=">=0", length=(2, 2))
    radius: float | None = key(None, check=">0")  # default: 1 (circle, sphere), 0.9 ellipses

    def used(self) -> frozenset[str]:
        law = self.law or DEFAULT_LAW[self.source]
        return frozenset({"source", "law"} | SOURCE_KEYS[self.source] | LAWS[law][0])

    def resolve(self, given: frozenset[str], fail: Fail) -> DataSpec:
        law = self.law or DEFAULT_LAW[self.source]
        if self.source not in LAWS[law][1]:
            on = ", ".join(k for k, v in LAWS.items() if self.source in v[1])
            fail("law", f"{law!r} is not defined on a {self.source} (use one of: {on})")
        out = dataclasses.replace(
            self,
            law=law,
            size=self.size or _DEFAULT_SIZE.get(self.source, 32),
            free=tuple(p for p in PHANTOM_PARAMETERS if p in self.free),
        )
        if out.source in ("circle", "sphere") and out.radius is None:
            out = dataclasses.replace(out, radius=1.0)
        if out.source == "ellipses":
            out = _ellipse_defaults(out, given, fail)
        if out.source == "ellipse-grid" and (out.count is None or len(set(out.count)) != 1):
            fail("count", "source 'ellipse-grid' needs a fixed count [k] (one ellipse a cell)")
        if out.count is not None and max(out.count) < 1:
            fail("count", f"must be [min, max] or [k] with max >= 1, got {list(out.count)}")
        if out.mean_direction is not None and (
            len(out.mean_direction) != out.dim or not any(out.mean_direction)
        ):
            fail(
                "mean_direction",
                f"must be a non-zero list of dim={out.dim} numbers, got {list(out.mean_direction)}",
            )
        return out


def _ellipse_defaults(data: DataSpec, given: frozenset[str], fail: Fail) -> DataSpec:
    """The random-ellipse law's defaults filled in, and its own range checks (min <= max,
    axes below the radius) as errors naming the key."""
    fields = {k: getattr(data, k) for k in _ELLIPSE_LAW_KEYS if k in given or k == "size"}
    if "count" in fields:
        fields["count"] = (fields["count"][0], fields["count"][-1])
    try:
        law = ellipses.RandomEllipseLaw(**fields)
    except ValueError as err:  # the law's messages start with the key's name
        fail(next((k for k in sorted(given) if str(err).startswith(k)), "law"), str(err))
    return dataclasses.replace(
        data, count=law.count, axes=law.axes, intensity=law.intensity, radius=law.radius
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProblemData(DataSpec):
    """A problem's ``[data]``: the law (``DataSpec``) and its test image: the draw ``index``
    (a collection's image ``index``), the point at ``angle`` on the circle, or a ``file``'s
    ``path`` (the truth, ``.npy``, relative to the spec) and ``measurement`` (a measured y
    instead of a simulated one)."""

    source: str = key(choices=PROBLEM_SOURCES)
    index: int = key(0, check=">=0")
    angle: float = key(2.0, check="finite")  # circle: the truth's angle (radians)
    path: str = key("")
    measurement: str = key("")

    def used(self) -> frozenset[str]:
        if self.source == "file":
            return frozenset({"source", "path", "measurement"})
        if self.source == "shepp-logan":  # bip.images.phantom(size): one image
            return frozenset({"source", "size", "index", "measurement"})
        truth = {"circle": {"angle"}, "shepp-logan-family": set()}.get(self.source, {"index"})
        return frozenset(super().used() | truth | {"measurement"})

    def resolve(self, given: frozenset[str], fail: Fail) -> ProblemData:
        if self.source == "file":
            if not (self.path or self.measurement):
                fail("path", "source 'file' needs 'path' (the truth) or 'measurement' (y)")
            return self
        if self.source == "shepp-logan":
            return dataclasses.replace(self, size=self.size or 32)
        return super().resolve(given, fail)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperatorSpec(Section):
    """``[operator]``: the forward operator (``bip.problems``)."""

    kind: str = key(
        choices=("radon", "fan_beam", "gaussian_blur", "mask", "coordinate_projection")
        + ("identity",)
    )
    views: int = key(16, check=">=1")
    source_distance: float = key(0.0, check=">=0")  # fan_beam (pixels; required there)
    detector_distance: float = key(0.0, check=">=0")  # fan_beam: axis to detector (pixels)
    num_detectors: int = key(0, check=">=0")  # fan_beam (required there)
    detector_spacing: float = key(1.0, check=">0")  # fan_beam (pixels)
    width: float = key(1.5, check=">0")
    boundary: str = key("zero", choices=("zero", "circular"))
    keep_fraction: float = key(0.5, check="[0,1]")
    mask_seed: int = key(0)
    coordinates: tuple[int, ...] = key((0,), check=">=0", length=(1, None))

    def resolve(self, given: frozenset[str], fail: Fail) -> OperatorSpec:
        if self.kind == "fan_beam":  # no default fits every image size
            for name in ("source_distance", "num_detectors"):
                if name not in given:
                    fail(name, "is required for kind = 'fan_beam'")
                if not getattr(self, name) > 0:
                    fail(name, f"must be > 0, got {getattr(self, name)!r}")
        return self


@dataclasses.dataclass(frozen=True, kw_only=True)
class NoiseSpec(Section):
    """``[noise]``: the observation noise."""

    kind: str = key("gaussian", choices=("gaussian", "student_t"))
    std: float = key(check=">0")
    df: float = key(3.0, check=">0")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PriorSpec(Section):
    """``[prior]``: ``exact`` (the data law's, on its known manifold) or a trained prior
    (a folder name in ``priors/`` or a folder path); generic or maximum-entropy."""

    source: str = key("exact")
    kind: str = key("generic", choices=("generic", "maxent"))
    alpha: float = key(1.0, check="[0,2)")

    def resolve(self, given: frozenset[str], fail: Fail) -> PriorSpec:
        if self.source != "exact":
            known = priorfile.available_priors()
            if self.source not in known and not Path(self.source).is_dir():
                fail(
                    "source",
                    f"unknown prior {self.source!r}: use 'exact' or one of {known} "
                    "(or a folder path)",
                )
        return self


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplerSpec(Section):
    """``[sampler]``: sigma, its annealing, the chains and the ULA/MALA settings."""

    method: str = key("ula", choices=("ula", "mala"))
    init: str = key("prior", choices=("prior", "noise", "baseline"))
    sigma: float = key(check=">0")
    anneal_from: float = key(0.0, check=">=0")  # 0: no annealing
    anneal_levels: int = key(10, check=">=1")
    steps_per_level: int = key(100, check=">=1")
    chains: int = key(64, check=">=1")
    steps: int = key(1000, check=">=1")
    thin: int = key(10, check=">=1")
    burn_in: int = key(0, check=">=0")
    c: float = key(0.1, check=">0")
    seed: int = key(0)

    def resolve(self, given: frozenset[str], fail: Fail) -> SamplerSpec:
        if self.steps < self.thin:
            fail("steps", f"must be at least thin = {self.thin}, got {self.steps}")
        return self


@dataclasses.dataclass(frozen=True, kw_only=True)
class RobustnessSpec(Section):
    """``[robustness]``: ``bip robustness SPEC`` (``bip.experiments.image_sweep``)."""

    sigmas: tuple[float, ...] = key((0.1, 0.05), check=">0", length=(1, None))
    alphas: tuple[float, ...] = key((0.0, 1.0), check="[0,2)", length=(1, None))
    size_min: float = key(1.0, check=">0")
    size_max: float = key(1000.0, check=">0")
    num_sizes: int = key(7, check=">=1")
    error: str = key("smooth", choices=("smooth", "smooth_nonconservative"))
    lengthscale: float = key(1.0, check=">0")
    smoothness: float = key(2.0, check=">0")
    beta: float = key(0.0, check="finite")  # the error is size * sigma^beta * e(x)
    error_seed: int = key(0)
    chains: int = key(16, check=">=1")
    burn_in_time: float = key(0.3, check=">0")
    run_time: float = key(0.6, check=">0")
    c: float = key(0.25, check=">0")
    snapshots: int = key(8, check=">=1")
    threshold: float = key(0.02, check=">0")
    metric: str = key("mean_shift", choices=("energy", "mean_shift"))

    def resolve(self, given: frozenset[str], fail: Fail) -> RobustnessSpec:
        if not self.size_min < self.size_max:
            fail("size_min", f"must be below size_max = {self.size_max}, got {self.size_min}")
        return self


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProblemSpec(Section):
    """A problem spec (``bip.problems``): data, operator, noise, prior, sampler and the
    optional ``[robustness]`` sweep."""

    name: str = key()
    description: str = key("")
    data: ProblemData = key()
    operator: OperatorSpec = key()
    noise: NoiseSpec = key()
    prior: PriorSpec = key()
    sampler: SamplerSpec = key()
    robustness: RobustnessSpec | None = key(None)
    origin: str = where("<spec>")  # the file (or a label) that errors name
    path: str | None = where(None)  # the spec file: data files are relative to its folder

    def resolve(self, given: frozenset[str], fail: Fail) -> ProblemSpec:
        if self.prior.source == "exact" and self.data.source not in MANIFOLD_SOURCES:
            fail(
                "prior.source",
                f"'exact' needs data on a known manifold ([data] source = "
                f"{' | '.join(s for s in MANIFOLD_SOURCES if s in PROBLEM_SOURCES)}), "
                f"got {self.data.source!r}: name a trained prior from priors/ instead",
            )
        return self


# --------------------------------------------------------------------------- recipes

_NET_KEYS = {
    "mlp": {"kind", "width", "depth", "mlp_ratio", "num_frequencies", "sigma_data", "final_norm"},
    "unet": {"kind", "channels", "channel_mult", "num_res_blocks", "groups", "patch"}
    | {"num_frequencies", "sigma_data"},
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class NetSpec(Section):
    """``[net]``: a ``bip.networks.ScoreNet`` (``mlp``) or ``UNet`` (``unet``)."""

    kind: str = key("mlp", choices=("mlp", "unet"))
    width: int = key(128, check=">=1")
    depth: int = key(4, check=">=1")
    mlp_ratio: int = key(2, check=">=1")
    channels: int = key(32, check=">=1")
    channel_mult: tuple[int, ...] = key((1, 2), check=">=1", length=(1, None))
    num_res_blocks: int = key(1, check=">=1")
    groups: int = key(8, check=">=1")
    patch: int = key(1, check=">=1")
    num_frequencies: int = key(16, check=">=1")
    sigma_data: float | None = key(None, check=">0")  # default: 1.0 (mlp), 0.5 (unet)
    final_norm: bool = key(True)  # mlp only

    def used(self) -> frozenset[str]:
        return frozenset(_NET_KEYS[self.kind])

    def resolve(self, given: frozenset[str], fail: Fail) -> NetSpec:
        default = {"mlp": 1.0, "unet": 0.5}[self.kind]
        return dataclasses.replace(self, sigma_data=self.sigma_data or default)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingSpec(Section):
    """``[training]``: AdamW with warmup and cosine decay, EMA, and the sigma law."""

    steps: int = key(2000, check=">=1")
    batch: int = key(512, check=">=1")
    lr: float = key(3e-3, check=">0")
    warmup: int | None = key(None, check=">=0")  # default: min(100, steps // 10)
    final_lr_fraction: float = key(0.01, check="[0,1]")
    weight_decay: float = key(1e-4, check=">=0")
    clip: float = key(1.0, check=">0")
    ema: float = key(0.999, check="[0,1)")
    sigma_min: float = key(0.01, check=">0")
    sigma_max: float = key(50.0, check=">0")
    sigma_sampling: str = key("loguniform", choices=("loguniform", "lognormal"))
    sigma_log_mean: float | None = key(None, check="finite")  # default: mid log range
    sigma_log_std: float = key(1.2, check=">0")
    chunk: int = key(100, check=">=1")
    checkpoint_every: int = key(500, check=">=1")

    def used(self) -> frozenset[str] | None:
        if self.sigma_sampling == "loguniform":
            return frozenset(f.name for f in dataclasses.fields(self)) - {
                "sigma_log_mean",
                "sigma_log_std",
            }
        return None

    def resolve(self, given: frozenset[str], fail: Fail) -> TrainingSpec:
        if self.sigma_min >= self.sigma_max:
            fail("sigma_min", f"must be below sigma_max={self.sigma_max}, got {self.sigma_min}")
        warmup = min(100, self.steps // 10) if self.warmup is None else self.warmup
        if warmup >= self.steps:
            fail("warmup", f"must be below steps={self.steps}, got {warmup}")
        mid = 0.5 * (math.log(self.sigma_min) + math.log(self.sigma_max))
        log_mean = self.sigma_log_mean if self.sigma_log_mean is not None else mid
        return dataclasses.replace(self, warmup=warmup, sigma_log_mean=log_mean)


# keys added after the first recipes, left out of the hash at these values: recipes written
# before them keep their config hash (and their checkpoints)
_HASH_NEUTRAL = {
    ("data", "free"): list(PHANTOM_PARAMETERS),
    ("net", "kind"): "mlp",
    ("net", "final_norm"): True,
    ("training", "sigma_sampling"): "loguniform",
}
_EXECUTION_KEYS = ("chunk", "checkpoint_every")  # change them freely when resuming
_NONE = object()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe(Section):
    """A validated training recipe (``bip.recipes``), every key filled in.

    Attributes:
        name: the prior's name (``load_recipe``: defaults to the recipe file's folder name).
        description: free text.
        seed: the seed of ``jax.random.key``.
        data, net, training: the sections.
        source: the file it was read from, or ``"<mapping>"`` (not a key).
        text: the TOML text as read (written back verbatim next to the weights), or None.
    """

    name: str | None = key(None)
    description: str = key("")
    seed: int = key(0, check=">=0")
    data: DataSpec = key()
    net: NetSpec = key()
    training: TrainingSpec = key()
    source: str = where("<mapping>")
    text: str | None = where(None)

    def resolve(self, given: frozenset[str], fail: Fail) -> Recipe:
        if self.net.kind == "unet" and self.data.source not in IMAGE_SOURCES:
            fail(
                "net.kind",
                f"'unet' needs image data ([data] source = {' | '.join(IMAGE_SOURCES)}), "
                f"got {self.data.source!r}",
            )
        return self

    @property
    def config_sha256(self) -> str:
        """Hash of what determines the weights: seed, data, net and training, except the
        execution knobs ``chunk`` and ``checkpoint_every`` (not the name or the text).

        ``[data] source`` is hashed under its first name ``manifold``, and keys added later
        are left out at their default value, so older recipes keep their hash."""
        parts = {"data": self.data.to_dict(), "net": self.net.to_dict()}
        parts["training"] = {
            k: v for k, v in self.training.to_dict().items() if k not in _EXECUTION_KEYS
        }
        parts["data"] = {("manifold" if k == "source" else k): v for k, v in parts["data"].items()}
        core = {
            section: {k: v for k, v in table.items() if _HASH_NEUTRAL.get((section, k), _NONE) != v}
            for section, table in parts.items()
        }
        core["seed"] = self.seed
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()
