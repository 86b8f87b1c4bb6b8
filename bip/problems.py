"""Canonical problems as declarative TOML specs, validated, and ``solve`` that runs one.

A spec names the data (ground truth), the forward operator, the noise model, the prior
(exact on a known manifold, or a shipped trained prior from ``priors/``), the prior kind
(generic or maximum-entropy with ``alpha``), sigma and its annealing schedule, the sampler
settings and the seed; an optional ``[robustness]`` table sets up ``bip robustness SPEC``
(error sizes x sigma x alpha, ``bip.experiments.image_sweep``). ``load(path)`` validates it:
an unknown section, key or prior, or a bad value, is a ``SpecError`` naming the file, the
section and the key. The schema is ``bip.specs.ProblemSpec`` (frozen dataclasses; ``[data]``
is the ``DataSpec`` that training recipes share, built into a law by ``bip.laws.data_law``);
``load_spec`` gives it typed, ``load`` as the plain dict it serialises to (what ``bip solve``
records). ``build`` checks the shapes (image against operator and prior, a measurement file
against the operator's output, NaN in the measurement) with errors that name them; the
classical baselines it runs are ``bip.baselines``'.

Your own data: ``[data] source = "file"`` with ``path = "truth.npy"`` (relative to the spec;
the ground truth, for the metrics) and/or ``measurement = "y.npy"`` (the observation to
invert; without it ``y`` is simulated from the truth with the spec's noise).

Example spec (``problems/circle-toy.toml``)::

    name = "circle-toy"
    [data]
    source = "circle"            # von Mises law (bip.specs.DataSpec): kappa, loc
    kappa = 4.0
    loc = 3.141592653589793
    angle = 2.0                  # the truth: the point at this angle
    [operator]
    kind = "coordinate_projection"
    coordinates = [0]
    [noise]
    std = 0.3
    [prior]
    kind = "maxent"
    alpha = 1.0
    [sampler]
    sigma = 0.1
    chains = 2000
    steps = 3000

Example:
    >>> spec = bip.problems.load_spec("problems/circle-toy.toml")
    >>> spec.data.kappa, spec.sampler.chains
    (4.0, 4000)
    >>> problem = bip.problems.build(spec)       # truth, operator, y, prior, likelihood
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bip import baselines, images, laws, likelihoods, operators, priors
from bip._data import shipped
from bip.baselines import tikhonov  # noqa: F401 (re-exported: bip.problems.tikhonov)
from bip.schema import SpecError, located, parse
from bip.specs import PHANTOM_PARAMETERS, ProblemSpec

Array = jax.Array

__all__ = [
    "PHANTOM_PARAMETERS",
    "Problem",
    "ProblemSpec",
    "SpecError",
    "as_spec",
    "available_problems",
    "build",
    "load",
    "load_spec",
    "validate",
]


def as_spec(
    spec: ProblemSpec | Mapping[str, Any] | str | os.PathLike, origin: str = "<spec>"
) -> ProblemSpec:
    """A validated ``ProblemSpec`` from itself, a spec file or shipped name (``load_spec``),
    a parsed TOML table or a dict from ``load`` (whose ``_origin`` and ``_path`` keys say
    where it came from; edited dicts are checked again): what ``bip solve``, ``bip check``,
    ``bip calibrate`` and ``bip robustness`` accept.

    Example:
        >>> spec = as_spec(bip.problems.load("circle-toy"))
        >>> spec.sampler.sigma, spec.data.source
        (0.1, 'circle')
    """
    if isinstance(spec, ProblemSpec):
        return spec
    if not isinstance(spec, Mapping):
        return load_spec(spec)
    path = spec.get("_path")
    origin = path or spec.get("_origin") or origin
    raw = {k: v for k, v in spec.items() if not k.startswith("_")}
    return located(parse(ProblemSpec, raw, origin), origin=origin, path=path)


def _as_dict(spec: ProblemSpec) -> dict:
    """The plain dict of a spec, with ``_origin`` (and ``_path``) saying where it came from."""
    out = spec.to_dict()
    out["_origin"] = spec.origin
    if spec.path:
        out["_path"] = spec.path
    return out


def validate(raw: Mapping[str, Any], origin: str = "<spec>") -> dict:
    """Check a parsed spec against the schema (``bip.specs.ProblemSpec``); return it as a
    plain dict with the defaults filled in (``_origin`` names ``origin`` for later errors).

    Example:
        >>> validate({"name": "t", "data": {"source": "circle"},
        ...           "operator": {"kind": "identity"}, "noise": {"std": 0.3},
        ...           "sampler": {"sigma": 0.1}})["sampler"]["chains"]
        64
    """
    return _as_dict(located(parse(ProblemSpec, raw, origin), origin=origin, path=None))


def available_problems() -> list[str]:
    """Names of the shipped problem specs (``problems/<name>.toml``), for ``load(name)``.

    Example:
        >>> "ct-phantom-16" in bip.problems.available_problems()
        True
    """
    return sorted(p.stem for p in shipped("problems").glob("*.toml"))


def _spec_path(path: str | os.PathLike) -> Path:
    """An existing spec file, else the shipped spec of that bare name (``.toml`` optional)."""
    text = os.fspath(path)
    if Path(text).is_file():
        return Path(text)
    bare = not isinstance(path, os.PathLike) and not any(
        sep in text for sep in (os.sep, os.altsep) if sep
    )
    if bare and text.strip("."):
        named = shipped("problems") / (text if text.endswith(".toml") else f"{text}.toml")
        if named.is_file():
            return named
    raise FileNotFoundError(
        f"problem spec {text!r} does not exist: pass a TOML file or a shipped spec name "
        f"({', '.join(available_problems())})"
    )


def load_spec(path: str | os.PathLike) -> ProblemSpec:
    """Read and validate a TOML spec into a frozen ``ProblemSpec``; ``SpecError`` names the
    file, section and key on any problem.

    ``path`` is a spec file, or the name of a shipped spec (``"ct-phantom-16"``, see
    ``available_problems``) when no file of that name exists.

    Example:
        >>> bip.problems.load_spec("ct-phantom-16").operator.kind
        'radon'
    """
    path = _spec_path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SpecError(str(path), "", "", f"not valid TOML: {err}") from err
    return located(parse(ProblemSpec, raw, str(path)), origin=str(path), path=str(path))


def load(path: str | os.PathLike) -> dict:
    """``load_spec`` as a plain dict (``ProblemSpec.to_dict`` with ``_path``, ``_origin``):
    what ``bip solve`` records in its outputs.

    Example:
        >>> bip.problems.load("ct-phantom-16")["operator"]["kind"]
        'radon'
    """
    return _as_dict(load_spec(path))


@dataclass(frozen=True)
class Problem:
    """A built problem: ground truth, operator, observation and the posterior's pieces.

    ``spec`` is the validated ``ProblemSpec``; ``truth`` is None when a
    measured ``y`` comes without a ground truth; ``manifold`` and ``law`` are the data's
    known manifold and law (None for real images: digits, faces, files; the random-ellipse
    law has no manifold, so no exact prior);
    ``baseline`` is ``bip.baselines.classical``'s report and ``baseline_images`` its
    reconstructions of the test image at the chosen settings.
    """

    spec: ProblemSpec
    truth: Array | None
    operator: operators.Operator
    y: Array
    likelihood: likelihoods.Likelihood
    prior: priors.ScorePrior
    alpha: float
    manifold: Any
    law: Any
    baseline: dict
    baseline_images: dict = field(default_factory=dict)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.operator.input_shape)


def _spec_file(spec: ProblemSpec, key: str) -> Path:
    """The file named by ``data.<key>``, relative to the spec's folder."""
    path = Path(getattr(spec.data, key))
    if not path.is_absolute() and spec.path:
        path = Path(spec.path).parent / path
    return path


def _load_array(spec: ProblemSpec, key: str) -> Array:
    path = _spec_file(spec, key)

    def fail(message: str) -> SpecError:
        return SpecError(spec.origin, "data", key, f"file {str(path)!r} {message}")

    if not path.is_file():
        raise fail("does not exist")
    try:
        value = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise fail(f"cannot be read: {err}") from err
    if not np.issubdtype(value.dtype, np.number):
        raise fail("is not numeric")
    if not np.all(np.isfinite(value)):
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        raise fail(f"has {bad} NaN or infinite entries: clean or mask them before solving")
    return jnp.asarray(value, dtype=jnp.result_type(float))


def _truth(spec: ProblemSpec, law, key) -> Array | None:
    """The test image (point) of a spec, or None (a file without ``path``): the point at
    ``angle`` on the circle, the centre of the Shepp-Logan family's box, image ``index`` of
    a fixed collection, or draw ``index`` of a generative law."""
    data = spec.data
    if data.source == "file":
        return _load_array(spec, "path") if data.path else None
    if data.source == "circle":
        return law.manifold.chart(jnp.asarray(data.angle))
    if data.source == "shepp-logan-family":  # the phantom itself: the centre of the box
        return law.manifold.chart(0.5 * (law.manifold.bounds[0] + law.manifold.bounds[1]))
    if law is not None and not isinstance(law, images.EmpiricalLaw):
        return law.sample(jax.random.fold_in(key, data.index), ())
    collection = law.data if law is not None else images.phantom(data.size)[None]
    if not data.index < collection.shape[0]:
        raise SpecError(
            spec.origin,
            "data",
            "index",
            f"must be below {collection.shape[0]}, the number of images of "
            f"{data.source!r}, got {data.index}",
        )
    return jnp.asarray(collection[data.index])


def _known(law):
    """The law a problem reports: None for a fixed data set (its draws are the collection's
    images, the test image among them)."""
    return None if isinstance(law, images.EmpiricalLaw) else law


def _truth_and_manifold(
    spec: ProblemSpec | Mapping[str, Any], key
) -> tuple[Array | None, Any, Any]:
    """Return (truth or None, manifold or None, data law or None: exact where the manifold is
    known)."""
    spec = as_spec(spec)
    law = laws.data_law(spec.data)
    known = _known(law)
    return _truth(spec, law, key), getattr(known, "manifold", None), known


def _operator(spec: ProblemSpec, event_shape: tuple[int, ...]) -> operators.Operator:
    op = spec.operator
    if op.kind == "coordinate_projection":
        return operators.coordinate_projection(event_shape[0], list(op.coordinates))
    if op.kind == "identity":
        return operators.from_function(lambda x: x, event_shape, linear=True, name="identity")
    if len(event_shape) != 2 or event_shape[0] != event_shape[1]:
        raise SpecError(
            spec.origin,
            "operator",
            "kind",
            f"{op.kind!r} needs square images, the data has shape {event_shape}",
        )
    n = event_shape[0]
    if op.kind == "radon":
        return operators.radon(n, jnp.linspace(0.0, 180.0, op.views, endpoint=False))
    if op.kind == "fan_beam":  # a full scan; the source outside the image is checked here
        angles = jnp.linspace(0.0, 360.0, op.views, endpoint=False)
        try:
            return operators.fan_beam(
                n,
                angles,
                op.source_distance,
                op.detector_distance,
                op.num_detectors,
                op.detector_spacing,
            )
        except ValueError as err:  # fan_geometry's messages start with the key's name
            key, _, rest = str(err).partition(" ")
            raise SpecError(spec.origin, "operator", key, rest) from None
    if op.kind == "gaussian_blur":
        return operators.gaussian_blur(event_shape, op.width, boundary=op.boundary)
    keep = jax.random.uniform(jax.random.key(op.mask_seed), event_shape)
    return operators.mask((keep < op.keep_fraction).astype(jnp.result_type(float)))


def _prior(spec: ProblemSpec | Mapping[str, Any], law) -> priors.ScorePrior:
    """The exact prior of the data law (on its known manifold, which the schema checks) or
    the trained prior that ``prior.source`` names."""
    spec = as_spec(spec)
    if spec.prior.source == "exact":
        return priors.exact(law)
    from bip import networks

    return networks.load_prior(spec.prior.source)


def build(spec: ProblemSpec | Mapping[str, Any] | str | os.PathLike) -> Problem:
    """Ground truth, operator, observation (measured, or simulated with the spec's noise and
    seed), likelihood, prior and classical baselines of a spec (anything ``as_spec`` takes);
    shape mismatches are ``SpecError``s."""
    typed = as_spec(spec)
    origin, sampler = typed.origin, typed.sampler
    key = jax.random.key(sampler.seed)
    k_truth, k_noise = jax.random.split(key)
    law = laws.data_law(typed.data)
    truth = _truth(typed, law, k_truth)
    prior = _prior(typed, law)
    levels = {"sampler.sigma": sampler.sigma, "sampler.anneal_from": sampler.anneal_from}
    for name, value in levels.items():
        try:
            if name == "sampler.sigma" or value > sampler.sigma:  # anneal_from 0: none
                priors.check_sigma(prior, value, name=name)
        except ValueError as err:
            raise SpecError(origin, "", "", str(err)) from None
    event_shape = tuple(truth.shape) if truth is not None else tuple(prior.event_shape)
    if tuple(prior.event_shape) != event_shape:
        raise SpecError(
            origin,
            "prior",
            "source",
            f"prior {typed.prior.source!r} takes images of shape {tuple(prior.event_shape)}, "
            f"but the data has shape {event_shape}",
        )
    op = _operator(typed, event_shape)
    if typed.data.measurement:
        y = _load_array(typed, "measurement")
        if tuple(y.shape) != tuple(op.output_shape):
            raise SpecError(
                origin,
                "data",
                "measurement",
                f"{str(_spec_file(typed, 'measurement'))!r} has shape {tuple(y.shape)}, but "
                f"the operator {typed.operator.kind!r} on images {event_shape} gives "
                f"{tuple(op.output_shape)}",
            )
    else:  # the schema makes sure there is a truth (a file source names a path or y)
        y = _simulate(typed, op, truth, k_noise)
    noise = typed.noise
    if noise.kind == "gaussian":
        lik = likelihoods.gaussian(op, y, noise.std)
    else:
        import numpyro.distributions as dist

        lik = likelihoods.numpyro_noise(
            op, y, lambda mean: dist.StudentT(noise.df, mean, noise.std)
        )
    alpha = typed.prior.alpha if typed.prior.kind == "maxent" else 0.0
    baseline, shown = _baselines(typed, op, y, truth, law)
    known = _known(law)
    manifold = getattr(known, "manifold", None)
    return Problem(typed, truth, op, y, lik, prior, alpha, manifold, known, baseline, shown)


def _simulate(spec: ProblemSpec, op: operators.Operator, truth: Array, key) -> Array:
    """``op(truth)`` plus the spec's noise (``truth`` one image or a batch)."""
    noise = spec.noise
    clean = op(truth)
    eps = jax.random.normal(key, clean.shape, clean.dtype)
    if noise.kind == "student_t":
        eps = jax.random.t(key, noise.df, clean.shape, clean.dtype)
    return clean + noise.std * eps


def _baselines(spec: ProblemSpec, op, y: Array, truth: Array | None, law) -> tuple[dict, dict]:
    """``bip.baselines.classical`` on the test image, each parameter chosen on validation
    images (``bip.baselines.validation_images``: other draws or images of the data law,
    observed like the test image with independent noise), or on the truth when there are
    none; ``({}, {})`` without a 2-D truth."""
    if truth is None or truth.ndim != 2:
        return {}, {}
    key = jax.random.fold_in(jax.random.key(spec.sampler.seed), 0x7A11D)
    k_images, k_noise = jax.random.split(key)
    held = baselines.validation_images(k_images, law, spec.data.index, name=spec.data.source)
    if held is None:
        return baselines.classical(op, y, truth, return_images=True)
    truths, note = held
    validation = (_simulate(spec, op, truths, k_noise), truths)
    return baselines.classical(op, y, truth, validation, validation_note=note, return_images=True)
