"""Canonical problems as declarative TOML specs, validated, and ``solve`` that runs one.

A spec names the data (ground truth), the forward operator, the noise model, the prior
(exact on a known manifold, or a shipped trained prior from ``priors/``), the prior kind
(generic or maximum-entropy with ``alpha``), sigma and its annealing schedule, the sampler
settings and the seed. ``load(path)`` validates it: an unknown section or key, or a bad value,
is a ``SpecError`` naming the file and the key.

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

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bip import likelihoods, manifolds, operators, priors

Array = jax.Array


class SpecError(ValueError):
    """A problem spec is malformed: the message names the file and the key."""


_REQUIRED = object()

# section -> key -> (type(s), default); _REQUIRED marks required keys
SCHEMA: dict[str, dict[str, tuple[Any, Any]]] = {
    "": {"name": (str, _REQUIRED), "description": (str, "")},
    "data": {
        "source": (str, _REQUIRED),  # circle | phantom | digits | faces | shepp-logan
        "size": (int, 32),
        "index": (int, 0),
        "kappa": ((int, float), 4.0),
        "loc": ((int, float), math.pi),
        "angle": ((int, float), 2.0),  # circle: ground-truth angle (radians)
    },
    "operator": {
        "kind": (str, _REQUIRED),  # radon | gaussian_blur | mask | coordinate_projection | identity
        "views": (int, 16),
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
}

CHOICES = {
    ("data", "source"): ("circle", "phantom", "digits", "faces", "shepp-logan"),
    ("operator", "kind"): ("radon", "gaussian_blur", "mask", "coordinate_projection", "identity"),
    ("operator", "boundary"): ("zero", "circular"),
    ("noise", "kind"): ("gaussian", "student_t"),
    ("prior", "kind"): ("generic", "maxent"),
    ("sampler", "method"): ("ula", "mala"),
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
    ("noise", "df"),
    ("sampler", "anneal_levels"),
    ("sampler", "steps_per_level"),
}


def validate(raw: dict, origin: str = "<spec>") -> dict:
    """Check a parsed spec against ``SCHEMA``; return it with defaults filled in."""
    spec: dict[str, Any] = {}
    for key in raw:
        if key not in SCHEMA[""] and key not in SCHEMA:
            allowed = sorted((set(SCHEMA) | set(SCHEMA[""])) - {""})
            raise SpecError(f"{origin}: unknown key {key!r} (allowed: {allowed})")
    for section, fields in SCHEMA.items():
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
                raise SpecError(f"{origin}: {name!r} must be {types}, got {value!r}")
            choices = CHOICES.get((section, key))
            if choices is not None and value not in choices:
                raise SpecError(f"{origin}: {name!r} must be one of {choices}, got {value!r}")
            if (section, key) in POSITIVE and not value > 0:
                raise SpecError(f"{origin}: {name!r} must be > 0, got {value!r}")
            out[key] = value
    alpha = spec["prior"]["alpha"]
    if not 0 <= alpha < 2:
        raise SpecError(f"{origin}: 'prior.alpha' must lie in [0, 2), got {alpha!r}")
    if spec["sampler"]["steps"] < spec["sampler"]["thin"]:
        raise SpecError(f"{origin}: 'sampler.steps' must be at least 'sampler.thin'")
    return spec


def load(path: str | Path) -> dict:
    """Read and validate a TOML spec; ``SpecError`` names the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"problem spec {str(path)!r} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from err
    spec = validate(raw, str(path))
    spec["_path"] = str(path)
    return spec


@dataclass(frozen=True)
class Problem:
    """A built problem: ground truth, operator, observation and the posterior's pieces."""

    spec: dict
    truth: Array
    operator: operators.Operator
    y: Array
    likelihood: likelihoods.Likelihood
    prior: priors.ScorePrior
    alpha: float
    manifold: Any
    baseline: dict


def _truth_and_manifold(data: dict, key) -> tuple[Array, Any, Any]:
    """Return (truth, manifold or None, exact data law or None)."""
    source = data["source"]
    if source == "circle":
        circle = manifolds.Circle()
        law = manifolds.VonMises(circle, kappa=float(data["kappa"]), loc=float(data["loc"]))
        return circle.chart(jnp.asarray(float(data["angle"]))), circle, law
    from bip import images

    if source == "phantom":
        manifold = images.PhantomManifold(size=data["size"])
        law = images.PhantomLaw(manifold)
        truth = law.sample(jax.random.fold_in(key, data["index"]), ())
        return truth, manifold, law
    if source == "digits":
        return jnp.asarray(images.digits(data["size"])[data["index"]]), None, None
    if source == "faces":
        return jnp.asarray(images.faces()[data["index"]]), None, None
    return jnp.asarray(images.phantom(data["size"])), None, None


def _operator(spec_op: dict, event_shape: tuple[int, ...]) -> operators.Operator:
    kind = spec_op["kind"]
    if kind == "coordinate_projection":
        return operators.coordinate_projection(event_shape[0], spec_op["coordinates"])
    if kind == "identity":
        return operators.from_function(lambda x: x, event_shape, linear=True, name="identity")
    if len(event_shape) != 2 or event_shape[0] != event_shape[1]:
        raise SpecError(f"operator {kind!r} needs square images, the data has shape {event_shape}")
    n = event_shape[0]
    if kind == "radon":
        angles = jnp.linspace(0.0, 180.0, spec_op["views"], endpoint=False)
        return operators.radon(n, angles)
    if kind == "gaussian_blur":
        return operators.gaussian_blur(event_shape, spec_op["width"], boundary=spec_op["boundary"])
    keep = jax.random.uniform(jax.random.key(spec_op["mask_seed"]), event_shape)
    return operators.mask((keep < spec_op["keep_fraction"]).astype(jnp.result_type(float)))


def _prior(spec_prior: dict, law, event_shape) -> priors.ScorePrior:
    if spec_prior["source"] == "exact":
        if law is None:
            raise SpecError(
                "prior.source = 'exact' needs data on a known manifold (circle, phantom); "
                "name a trained prior from priors/ instead"
            )
        return priors.exact(law)
    from bip import networks

    prior = networks.load_prior(spec_prior["source"])
    if tuple(prior.event_shape) != tuple(event_shape):
        raise SpecError(
            f"prior {spec_prior['source']!r} has event shape {tuple(prior.event_shape)}, "
            f"the data has shape {tuple(event_shape)}"
        )
    return prior


def build(spec: dict) -> Problem:
    """Ground truth, operator, noisy observation (seeded), likelihood and prior of a spec."""
    key = jax.random.key(spec["sampler"]["seed"])
    k_truth, k_noise = jax.random.split(key)
    truth, manifold, law = _truth_and_manifold(spec["data"], k_truth)
    event_shape = tuple(truth.shape)
    op = _operator(spec["operator"], event_shape)
    noise = spec["noise"]
    clean = op(truth)
    eps = jax.random.normal(k_noise, clean.shape, clean.dtype)
    if noise["kind"] == "student_t":
        eps = jax.random.t(k_noise, noise["df"], clean.shape, clean.dtype)
    y = clean + noise["std"] * eps
    if noise["kind"] == "gaussian":
        lik = likelihoods.gaussian(op, y, noise["std"])
    else:
        import numpyro.distributions as dist

        df, std = float(noise["df"]), float(noise["std"])
        lik = likelihoods.numpyro_noise(op, y, lambda mean: dist.StudentT(df, mean, std))
    prior = _prior(spec["prior"], law, event_shape)
    alpha = float(spec["prior"]["alpha"]) if spec["prior"]["kind"] == "maxent" else 0.0
    baseline = _baseline(spec, op, y, truth)
    return Problem(spec, truth, op, y, lik, prior, alpha, manifold, baseline)


def psnr(estimate, truth) -> float:
    """Peak signal-to-noise ratio in dB with the truth's dynamic range as the peak."""
    estimate, truth = np.asarray(estimate, float), np.asarray(truth, float)
    peak = float(truth.max() - truth.min()) or 1.0
    mse = float(np.mean((estimate - truth) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(peak**2 / mse)


def _baseline(spec: dict, op, y, truth) -> dict:
    """Classical reconstructions to beat: FBP for CT, Tikhonov at its best weight otherwise."""
    if truth.ndim != 2:
        return {}
    out = {}
    if spec["operator"]["kind"] == "radon":
        fbp = operators.filtered_back_projection(op, y)
        out["fbp"] = {"psnr": psnr(fbp, truth)}
    if op.linear:
        best = None
        for weight in np.geomspace(1e-4, 10.0, 21):
            estimate = _tikhonov(op, y, float(weight))
            score = psnr(estimate, truth)
            if best is None or score > best[0]:
                best = (score, float(weight))
        out["tikhonov"] = {"psnr": best[0], "weight": best[1]}
    return out


def _tikhonov(op, y, weight: float, iterations: int = 200) -> Array:
    """``argmin ||A x - y||^2 + weight ||x||^2`` by conjugate gradients on the normal equations."""
    rhs = op.adjoint(y)
    x, _ = jax.scipy.sparse.linalg.cg(lambda v: op.gram(v) + weight * v, rhs, maxiter=iterations)
    return x
