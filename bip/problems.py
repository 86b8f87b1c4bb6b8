"""Canonical problems as declarative TOML specs, validated, and ``solve`` that runs one.

A spec names the data (ground truth), the forward operator, the noise model, the prior
(exact on a known manifold, or a shipped trained prior from ``priors/``), the prior kind
(generic or maximum-entropy with ``alpha``), sigma and its annealing schedule, the sampler
settings and the seed; an optional ``[robustness]`` table sets up ``bip robustness SPEC``
(error sizes x sigma x alpha, ``bip.experiments.image_sweep``). ``load(path)`` validates it:
an unknown section, key or prior, or a bad value, is a ``SpecError`` naming the file and the
key; ``build`` checks the shapes (image against operator and prior, a measurement file
against the operator's output, NaN in the measurement) with errors that name them.

Your own data: ``[data] source = "file"`` with ``path = "truth.npy"`` (relative to the spec;
the ground truth, for the metrics) and/or ``measurement = "y.npy"`` (the observation to
invert; without it ``y`` is simulated from the truth with the spec's noise).

Example spec (``problems/circle-toy.toml``)::

    name = "circle-toy"
    [data]
    source = "circle"
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
    >>> spec = bip.problems.load("problems/circle-toy.toml")
    >>> problem = bip.problems.build(spec)       # truth, operator, y, prior, likelihood
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bip import baselines, likelihoods, manifolds, operators, priors
from bip._data import shipped
from bip.baselines import tikhonov  # noqa: F401 (re-exported: bip.problems.tikhonov)

Array = jax.Array

PHANTOM_PARAMETERS = ("cx", "cy", "a", "b", "theta", "I")


class SpecError(ValueError):
    """A problem spec is malformed: the message names the file and the key."""


_REQUIRED = object()

# section -> key -> (type(s), default); _REQUIRED marks required keys
SCHEMA: dict[str, dict[str, tuple[Any, Any]]] = {
    "": {"name": (str, _REQUIRED), "description": (str, "")},
    "data": {
        "source": (str, _REQUIRED),  # circle | phantom | ellipses | ... | file (CHOICES)
        "size": (int, 32),
        "free": (list, list(PHANTOM_PARAMETERS)),  # phantom: the free chart parameters
        "count": (list, [5, 15]),  # ellipses: [min, max] per image; ellipse-grid: [k]
        "path": (str, ""),  # file: the ground truth (.npy), relative to the spec
        "measurement": (str, ""),  # a measured y (.npy) instead of a simulated one
        "index": (int, 0),
        "kappa": ((int, float), 4.0),
        "loc": ((int, float), math.pi),
        "angle": ((int, float), 2.0),  # circle: ground-truth angle (radians)
    },
    "operator": {
        "kind": (str, _REQUIRED),  # radon | fan_beam | gaussian_blur | mask | ... | identity
        "views": (int, 16),
        "source_distance": ((int, float), 0.0),  # fan_beam (pixels; required there)
        "detector_distance": ((int, float), 0.0),  # fan_beam: axis to detector (pixels)
        "num_detectors": (int, 0),  # fan_beam (required there)
        "detector_spacing": ((int, float), 1.0),  # fan_beam (pixels)
        "width": ((int, float), 1.5),
        "boundary": (str, "zero"),
        "keep_fraction": ((int, float), 0.5),
        "mask_seed": (int, 0),
        "coordinates": (list, [0]),
    },
    "noise": {
        "kind": (str, "gaussian"),  # gaussian | student_t
        "std": ((int, float), _REQUIRED),
        "df": ((int, float), 3.0),
    },
    "prior": {
        "source": (str, "exact"),  # exact | a folder name in priors/
        "kind": (str, "generic"),  # generic | maxent
        "alpha": ((int, float), 1.0),
    },
    "sampler": {
        "method": (str, "ula"),
        "init": (str, "prior"),  # prior | noise | baseline (bip.solve.initial_positions)
        "sigma": ((int, float), _REQUIRED),
        "anneal_from": ((int, float), 0.0),  # 0: no annealing
        "anneal_levels": (int, 10),
        "steps_per_level": (int, 100),
        "chains": (int, 64),
        "steps": (int, 1000),
        "thin": (int, 10),
        "burn_in": (int, 0),
        "c": ((int, float), 0.1),
        "seed": (int, 0),
    },
    "robustness": {  # bip robustness SPEC: bip.experiments.image_sweep
        "sigmas": (list, [0.1, 0.05]),
        "alphas": (list, [0.0, 1.0]),
        "size_min": ((int, float), 1.0),
        "size_max": ((int, float), 1000.0),
        "num_sizes": (int, 7),
        "error": (str, "smooth"),  # smooth | smooth_nonconservative
        "lengthscale": ((int, float), 1.0),
        "smoothness": ((int, float), 2.0),
        "beta": ((int, float), 0.0),  # the error is size * sigma^beta * e(x)
        "error_seed": (int, 0),
        "chains": (int, 16),
        "burn_in_time": ((int, float), 0.3),
        "run_time": ((int, float), 0.6),
        "c": ((int, float), 0.25),
        "snapshots": (int, 8),
        "threshold": ((int, float), 0.02),
        "metric": (str, "mean_shift"),  # mean_shift | energy (bip.experiments.image_sweep)
    },
}

OPTIONAL_SECTIONS = {"robustness"}

_TYPE_NAMES = {int: "an integer", (int, float): "a number", str: "a string", list: "a list"}

CHOICES = {
    ("data", "source"): (
        "circle",
        "phantom",
        "ellipses",  # bip.ellipses.RandomEllipseLaw (no exact chart)
        "ellipse-grid",  # PhantomLaw(bip.ellipses.grid_manifold(k)): exact chart
        "shepp-logan-family",  # PhantomLaw(bip.ellipses.shepp_logan_manifold()): exact chart
        "digits",
        "faces",
        "shepp-logan",
        "file",
    ),
    ("robustness", "error"): ("smooth", "smooth_nonconservative"),
    ("robustness", "metric"): ("energy", "mean_shift"),
    ("operator", "kind"): (
        "radon",
        "fan_beam",
        "gaussian_blur",
        "mask",
        "coordinate_projection",
        "identity",
    ),
    ("operator", "boundary"): ("zero", "circular"),
    ("noise", "kind"): ("gaussian", "student_t"),
    ("prior", "kind"): ("generic", "maxent"),
    ("sampler", "method"): ("ula", "mala"),
    ("sampler", "init"): ("prior", "noise", "baseline"),
}

POSITIVE = {
    ("noise", "std"),
    ("sampler", "sigma"),
    ("sampler", "c"),
    ("operator", "width"),
    ("data", "size"),
    ("sampler", "chains"),
    ("sampler", "steps"),
    ("sampler", "thin"),
    ("operator", "views"),
    ("operator", "detector_spacing"),
    ("noise", "df"),
    ("sampler", "anneal_levels"),
    ("sampler", "steps_per_level"),
    ("robustness", "size_min"),
    ("robustness", "size_max"),
    ("robustness", "num_sizes"),
    ("robustness", "lengthscale"),
    ("robustness", "chains"),
    ("robustness", "burn_in_time"),
    ("robustness", "run_time"),
    ("robustness", "c"),
    ("robustness", "snapshots"),
    ("robustness", "threshold"),
}


def validate(raw: dict, origin: str = "<spec>") -> dict:
    """Check a parsed spec against ``SCHEMA``; return it with defaults filled in."""
    spec: dict[str, Any] = {}
    for key in raw:
        if key not in SCHEMA[""] and key not in SCHEMA:
            allowed = sorted((set(SCHEMA) | set(SCHEMA[""])) - {""})
            raise SpecError(f"{origin}: unknown key {key!r} (allowed: {allowed})")
    for section, fields in SCHEMA.items():
        if section in OPTIONAL_SECTIONS and section not in raw:
            continue
        table = raw if section == "" else raw.get(section, {})
        if section and not isinstance(table, dict):
            raise SpecError(f"{origin}: [{section}] must be a table")
        out = spec if section == "" else spec.setdefault(section, {})
        for key in table:
            if section and key not in fields:
                raise SpecError(
                    f"{origin}: unknown key {key!r} in [{section}] (allowed: {sorted(fields)})"
                )
        for key, (types, default) in fields.items():
            name = f"{section}.{key}" if section else key
            if key not in table:
                if default is _REQUIRED:
                    raise SpecError(f"{origin}: missing required key {name!r}")
                out[key] = default
                continue
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, types):
                got = json.dumps(value, default=str)
                raise SpecError(f"{origin}: {name!r} must be {_TYPE_NAMES[types]}, got {got}")
            choices = CHOICES.get((section, key))
            if choices is not None and value not in choices:
                raise SpecError(f"{origin}: {name!r} must be one of {choices}, got {value!r}")
            if (section, key) in POSITIVE and not value > 0:
                raise SpecError(f"{origin}: {name!r} must be > 0, got {value!r}")
            out[key] = value
    if spec["operator"]["kind"] == "fan_beam":
        _check_fan(raw.get("operator", {}), spec["operator"], origin)
    alpha = spec["prior"]["alpha"]
    if not 0 <= alpha < 2:
        raise SpecError(f"{origin}: 'prior.alpha' must lie in [0, 2), got {alpha!r}")
    free = spec["data"]["free"]
    if not free or any(p not in PHANTOM_PARAMETERS for p in free):
        raise SpecError(f"{origin}: 'data.free' must list names from {PHANTOM_PARAMETERS}")
    spec["data"]["free"] = [p for p in PHANTOM_PARAMETERS if p in free]
    count = spec["data"]["count"]
    if not (
        1 <= len(count) <= 2
        and all(isinstance(c, int) and not isinstance(c, bool) for c in count)
        and 0 <= count[0] <= count[-1]
        and count[-1] >= 1
    ):
        raise SpecError(f"{origin}: 'data.count' must be [min, max] or [k], 0 <= min <= max >= 1")
    if spec["data"]["source"] == "ellipse-grid" and count[0] != count[-1]:
        raise SpecError(f"{origin}: data.source = 'ellipse-grid' needs a fixed 'data.count' [k]")
    if spec["data"]["source"] == "file" and not (
        spec["data"]["path"] or spec["data"]["measurement"]
    ):
        raise SpecError(f"{origin}: data.source = 'file' needs 'data.path' or 'data.measurement'")
    source = spec["prior"]["source"]
    if source != "exact":
        from bip import priorfile

        known = priorfile.available_priors()
        if source not in known and not Path(source).is_dir():
            raise SpecError(
                f"{origin}: unknown prior {source!r} in 'prior.source': use 'exact' or one of "
                f"{known} (or a folder path)"
            )
    if "robustness" in spec:
        rob = spec["robustness"]
        for key in ("sigmas", "alphas"):
            values = rob[key]
            if not values or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values
            ):
                raise SpecError(f"{origin}: 'robustness.{key}' must be a list of numbers")
        if not all(v > 0 for v in rob["sigmas"]):
            raise SpecError(f"{origin}: 'robustness.sigmas' must be > 0")
        if not all(0 <= v < 2 for v in rob["alphas"]):
            raise SpecError(f"{origin}: 'robustness.alphas' must lie in [0, 2)")
        if not rob["size_min"] < rob["size_max"]:
            raise SpecError(f"{origin}: 'robustness.size_min' must be below 'size_max'")
    if spec["sampler"]["steps"] < spec["sampler"]["thin"]:
        raise SpecError(f"{origin}: 'sampler.steps' must be at least 'sampler.thin'")
    spec["_origin"] = origin  # later errors (build) name the same file
    return spec


def _check_fan(given: dict, operator: dict, origin: str) -> None:
    """The fan-beam geometry keys: the source distance and detector count are required
    (no default fits every image size), the detector distance is >= 0."""
    for key in ("source_distance", "num_detectors"):
        if key not in given:
            raise SpecError(f"{origin}: operator.kind = 'fan_beam' needs 'operator.{key}'")
        if not operator[key] > 0:
            raise SpecError(f"{origin}: 'operator.{key}' must be > 0, got {operator[key]!r}")
    if operator["detector_distance"] < 0:
        raise SpecError(
            f"{origin}: 'operator.detector_distance' must be >= 0, got "
            f"{operator['detector_distance']!r}"
        )


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


def load(path: str | os.PathLike) -> dict:
    """Read and validate a TOML spec; ``SpecError`` names the file on any problem.

    ``path`` is a spec file, or the name of a shipped spec (``"ct-phantom-16"``, see
    ``available_problems``) when no file of that name exists.

    Example:
        >>> bip.problems.load("ct-phantom-16")["operator"]["kind"]
        'radon'
    """
    path = _spec_path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from err
    spec = validate(raw, str(path))
    spec["_path"] = str(path)
    return spec


@dataclass(frozen=True)
class Problem:
    """A built problem: ground truth, operator, observation and the posterior's pieces.

    ``truth`` is None when a measured ``y`` comes without a ground truth; ``manifold`` and
    ``law`` are the data's known manifold and law (None for real images; the random-ellipse
    law has no manifold, so no exact prior);
    ``baseline`` is ``bip.baselines.classical``'s report and ``baseline_images`` its
    reconstructions of the test image at the chosen settings.
    """

    spec: dict
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


def _origin(spec: dict) -> str:
    return spec.get("_path") or spec.get("_origin") or "<spec>"


def _spec_file(spec: dict, key: str) -> Path:
    """The file named by ``data.<key>``, relative to the spec's folder."""
    name = spec["data"][key]
    path = Path(name)
    if not path.is_absolute() and spec.get("_path"):
        path = Path(spec["_path"]).parent / path
    return path


def _load_array(spec: dict, key: str) -> Array:
    path = _spec_file(spec, key)
    if not path.is_file():
        raise SpecError(f"{_origin(spec)}: 'data.{key}' names {str(path)!r}, which does not exist")
    try:
        value = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise SpecError(f"{_origin(spec)}: 'data.{key}' file {str(path)!r}: {err}") from err
    if not np.issubdtype(value.dtype, np.number):
        raise SpecError(f"{_origin(spec)}: 'data.{key}' file {str(path)!r} is not numeric")
    if not np.all(np.isfinite(value)):
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        raise SpecError(
            f"{_origin(spec)}: 'data.{key}' file {str(path)!r} has {bad} NaN or infinite "
            "entries: clean or mask them before solving"
        )
    return jnp.asarray(value, dtype=jnp.result_type(float))


def _truth_and_manifold(spec: dict, key) -> tuple[Array | None, Any, Any]:
    """Return (truth or None, manifold or None, data law or None: exact where the manifold is
    known)."""
    data = spec["data"]
    source = data["source"]
    if source == "circle":
        circle = manifolds.Circle()
        law = manifolds.VonMises(circle, kappa=float(data["kappa"]), loc=float(data["loc"]))
        return circle.chart(jnp.asarray(float(data["angle"]))), circle, law
    if source == "file":
        return (_load_array(spec, "path") if data["path"] else None), None, None
    from bip import images

    if source in ("phantom", "ellipses", "ellipse-grid", "shepp-logan-family"):
        law = _image_law(data)
        if source == "shepp-logan-family":  # the phantom itself: the centre of the box
            truth = law.manifold.chart(0.5 * (law.manifold.bounds[0] + law.manifold.bounds[1]))
        else:
            truth = law.sample(jax.random.fold_in(key, data["index"]), ())
        return truth, law.manifold, law
    collection = {"digits": lambda: images.digits(data["size"]), "faces": images.faces}.get(
        source, lambda: images.phantom(data["size"])[None]
    )()
    if not 0 <= data["index"] < collection.shape[0]:
        raise SpecError(
            f"{_origin(spec)}: 'data.index' = {data['index']} is outside the "
            f"{collection.shape[0]} images of {source!r}"
        )
    return jnp.asarray(collection[data["index"]]), None, None


def _image_law(data: dict):
    """The random image law of a ``data`` table (phantom and ellipse sources)."""
    from bip import ellipses, images

    size, source = data["size"], data["source"]
    if source == "ellipses":
        return ellipses.RandomEllipseLaw(size, count=(data["count"][0], data["count"][-1]))
    if source == "ellipse-grid":
        return images.PhantomLaw(ellipses.grid_manifold(data["count"][0], size))
    if source == "shepp-logan-family":
        return images.PhantomLaw(ellipses.shepp_logan_manifold(size))
    return images.PhantomLaw(images.PhantomManifold(size=size, free=tuple(data["free"])))


def _operator(spec: dict, event_shape: tuple[int, ...]) -> operators.Operator:
    spec_op = spec["operator"]
    kind = spec_op["kind"]
    if kind == "coordinate_projection":
        return operators.coordinate_projection(event_shape[0], spec_op["coordinates"])
    if kind == "identity":
        return operators.from_function(lambda x: x, event_shape, linear=True, name="identity")
    if len(event_shape) != 2 or event_shape[0] != event_shape[1]:
        raise SpecError(
            f"{_origin(spec)}: operator {kind!r} needs square images, the data has shape "
            f"{event_shape}"
        )
    n = event_shape[0]
    if kind == "radon":
        angles = jnp.linspace(0.0, 180.0, spec_op["views"], endpoint=False)
        return operators.radon(n, angles)
    if kind == "fan_beam":  # a full scan; the source outside the image is checked here
        angles = jnp.linspace(0.0, 360.0, spec_op["views"], endpoint=False)
        geometry = (spec_op[k] for k in ("source_distance", "detector_distance"))
        try:
            return operators.fan_beam(
                n, angles, *geometry, spec_op["num_detectors"], spec_op["detector_spacing"]
            )
        except ValueError as err:  # fan_geometry's messages start with the key's name
            key, _, rest = str(err).partition(" ")
            raise SpecError(f"{_origin(spec)}: 'operator.{key}' {rest}") from None
    if kind == "gaussian_blur":
        return operators.gaussian_blur(event_shape, spec_op["width"], boundary=spec_op["boundary"])
    keep = jax.random.uniform(jax.random.key(spec_op["mask_seed"]), event_shape)
    return operators.mask((keep < spec_op["keep_fraction"]).astype(jnp.result_type(float)))


def _prior(spec: dict, law) -> priors.ScorePrior:
    source = spec["prior"]["source"]
    if source == "exact":
        if getattr(law, "manifold", None) is None:
            raise SpecError(
                f"{_origin(spec)}: prior.source = 'exact' needs data on a known manifold "
                "(circle, phantom, ellipse-grid, shepp-logan-family); name a trained prior "
                "from priors/ instead"
            )
        return priors.exact(law)
    from bip import networks

    return networks.load_prior(source)


def build(spec: dict) -> Problem:
    """Ground truth, operator, observation (measured, or simulated with the spec's noise and
    seed), likelihood and prior of a validated spec; shape mismatches are ``SpecError``s."""
    key = jax.random.key(spec["sampler"]["seed"])
    k_truth, k_noise = jax.random.split(key)
    truth, manifold, law = _truth_and_manifold(spec, k_truth)
    prior = _prior(spec, law)
    sampler = spec["sampler"]
    levels = {"sampler.sigma": sampler["sigma"], "sampler.anneal_from": sampler["anneal_from"]}
    for key, value in levels.items():
        try:
            if key == "sampler.sigma" or value > sampler["sigma"]:  # anneal_from 0: none
                priors.check_sigma(prior, value, name=key)
        except ValueError as err:
            raise SpecError(f"{_origin(spec)}: {err}") from None
    event_shape = tuple(truth.shape) if truth is not None else tuple(prior.event_shape)
    if tuple(prior.event_shape) != event_shape:
        raise SpecError(
            f"{_origin(spec)}: prior {spec['prior']['source']!r} ('prior.source') takes images "
            f"of shape {tuple(prior.event_shape)}, but the data has shape {event_shape}"
        )
    op = _operator(spec, event_shape)
    noise = spec["noise"]
    if spec["data"]["measurement"]:
        y = _load_array(spec, "measurement")
        if tuple(y.shape) != tuple(op.output_shape):
            raise SpecError(
                f"{_origin(spec)}: the measurement {str(_spec_file(spec, 'measurement'))!r} "
                f"('data.measurement') has shape {tuple(y.shape)}, but the operator "
                f"{spec['operator']['kind']!r} on images {event_shape} gives "
                f"{tuple(op.output_shape)}"
            )
    elif truth is None:
        raise SpecError(f"{_origin(spec)}: no ground truth to simulate a measurement from")
    else:
        y = _simulate(spec, op, truth, k_noise)
    if noise["kind"] == "gaussian":
        lik = likelihoods.gaussian(op, y, noise["std"])
    else:
        import numpyro.distributions as dist

        df, std = float(noise["df"]), float(noise["std"])
        lik = likelihoods.numpyro_noise(op, y, lambda mean: dist.StudentT(df, mean, std))
    alpha = float(spec["prior"]["alpha"]) if spec["prior"]["kind"] == "maxent" else 0.0
    baseline, images = _baseline(spec, op, y, truth, law) if truth is not None else ({}, {})
    return Problem(spec, truth, op, y, lik, prior, alpha, manifold, law, baseline, images)


def _simulate(spec: dict, op: operators.Operator, truth: Array, key) -> Array:
    """``op(truth)`` plus the spec's noise (``truth`` one image or a batch)."""
    noise = spec["noise"]
    clean = op(truth)
    eps = jax.random.normal(key, clean.shape, clean.dtype)
    if noise["kind"] == "student_t":
        eps = jax.random.t(key, noise["df"], clean.shape, clean.dtype)
    return clean + noise["std"] * eps


#: How many validation images choose the baselines' parameters.
VALIDATION_IMAGES = 4


def _validation(spec: dict, op: operators.Operator, law) -> tuple[Array, Array, str] | None:
    """Validation images for the baselines: other draws of the test image's law (phantom),
    or other images of its collection (digits, faces), observed like it with independent
    noise; None when there are none (a single image, a file)."""
    data = spec["data"]
    key = jax.random.fold_in(jax.random.key(spec["sampler"]["seed"]), 0x7A11D)
    k_images, k_noise = jax.random.split(key)
    if data["source"] in ("phantom", "ellipses", "ellipse-grid", "shepp-logan-family"):
        truths = law.sample(k_images, (VALIDATION_IMAGES,))
        note = f"{VALIDATION_IMAGES} other draws of the {data['source']} law"
    elif data["source"] in ("digits", "faces"):
        from bip import images

        collection = images.digits(data["size"]) if data["source"] == "digits" else images.faces()
        others = [(data["index"] + 1 + i) % collection.shape[0] for i in range(VALIDATION_IMAGES)]
        truths = jnp.asarray(collection[np.asarray(others)])
        note = f"{data['source']} images {others} (not the test image)"
    else:
        return None
    return _simulate(spec, op, truths, k_noise), truths, note


def _baseline(spec: dict, op: operators.Operator, y: Array, truth: Array, law) -> tuple[dict, dict]:
    """Classical reconstructions to beat (``bip.baselines.classical``: FBP for CT, Tikhonov,
    Wiener, TV), each parameter chosen by an interior search on validation images of the same
    law (``chosen_on = "validation"``), or on the truth when there are none (``"oracle"``);
    the report and the reconstructions of the test image."""
    if truth.ndim != 2:
        return {}, {}
    validation = _validation(spec, op, law)
    if validation is None:
        return baselines.classical(op, y, truth, return_images=True)
    ys, truths, note = validation
    return baselines.classical(op, y, truth, (ys, truths), validation_note=note, return_images=True)
