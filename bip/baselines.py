"""Classical reconstructions to beat, each at its best parameter found by an interior search.

Three linear estimators of an image from ``y = A x + noise``, and a nonlinear one:

- ``tikhonov(op, y, weight)``: ``argmin ||A x - y||^2 + weight ||x||^2`` (for a blur, the
  Wiener filter of a white image spectrum);
- ``wiener(op, y, weight)``: ``argmin ||A x - y||^2 + weight ||grad x||^2``, the Wiener filter
  (linear MMSE estimate) of a Gaussian image law with a smooth, ``1 / |k|^2`` spectrum;
- ``fbp(op, y, filter, width)``: filtered back projection (``skimage``'s ``iradon``) of the
  sinogram smoothed along the detector by a Gaussian of ``width`` pixels (a Gaussian
  apodisation of the ramp filter);
- TV: ``argmin_{x >= 0} ||A x - y||^2 / 2 + weight TV(x)`` (``bip.tv.tv_reconstruct``, PDHG
  on the same operator), the classical edge-preserving reconstruction.

Each has a parameter that trades noise against resolution, and a baseline is only fair at its
best value. ``interior_search`` finds it on a log scale: a coarse grid that is extended until
its best point is strictly inside, then refined around that point. ``classical`` runs every
baseline that applies to an operator and reports the chosen parameters, whether each optimum
is interior, and on what the choice was made: on validation images (other draws of the same
law, never the test image; ``chosen_on = "validation"``) when there are any, else on the
ground truth itself (``chosen_on = "oracle"``, an optimistic baseline).

Example:
    >>> op = bip.operators.gaussian_blur((32, 32), 2.0)
    >>> truth = bip.images.phantom(32)
    >>> y = op(truth) + 0.05 * jax.random.normal(jax.random.key(0), (32, 32))
    >>> found = bip.baselines.interior_search(
    ...     lambda w: [bip.metrics.psnr(bip.baselines.tikhonov(op, y, v), truth) for v in w],
    ...     1e-3, 1e1)
    >>> found.interior, found.value                                # doctest: +SKIP
    (True, 0.0131...)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from bip import _checks, ct, metrics, operators, tv
from bip.images import EmpiricalLaw

Array = jax.Array

__all__ = [
    "FBP_FILTERS",
    "SearchResult",
    "classical",
    "fbp",
    "interior_search",
    "tikhonov",
    "tv_search",
    "validation_images",
    "wiener",
]

#: FBP filters ``classical`` chooses among (unfiltered back projection is not a reconstruction).
FBP_FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


# --------------------------------------------------------------------------- the search

_SAME = 1 + 1e-9  # parameters closer than this ratio are one point of the grid


def _distinct(points: np.ndarray) -> np.ndarray:
    """Sorted ``points`` with those within a ratio ``_SAME`` of a kept one dropped."""
    kept = []
    for point in np.sort(points):
        if not kept or point > kept[-1] * _SAME:
            kept.append(point)
    return np.asarray(kept)


@dataclass(frozen=True)
class SearchResult:
    """The outcome of ``interior_search``.

    Attributes:
        value: the best parameter found.
        score: its score.
        interior: whether the best point of the (extended) coarse grid lies strictly inside
            it, so that the optimum is bracketed; False when the grid reached ``limits``.
        bounds: ``(lowest, highest)`` parameter evaluated.
        evaluations: number of parameters scored.
    """

    value: float
    score: float
    interior: bool
    bounds: tuple[float, float]
    evaluations: int


def interior_search(
    score: Callable[[np.ndarray], Sequence[float]],
    lower: float,
    upper: float,
    num: int = 7,
    limits: tuple[float, float] = (1e-12, 1e12),
    refinements: int = 3,
) -> SearchResult:
    """Maximise ``score`` over a positive parameter on a log scale, with the optimum bracketed.

    1. Score a coarse grid of ``num`` log-spaced points from ``lower`` to ``upper``.
    2. While the best point is the first (last) one, extend the grid below (above) by another
       ``num - 1`` points of the same ratio, up to ``limits``.
    3. If the best point is interior, refine ``refinements`` times: score 7 log-spaced points
       strictly between its two neighbours and move to the best (each round shrinks the
       bracket 4x; from a factor-10 grid, 3 rounds end within 3% of the best value).

    Args:
        score: maps a 1-D array of parameters to their scores (one batch per call, so a
            vectorised score runs each round as one program); NaN counts as worst.
        lower, upper: the initial grid's ends, ``0 < lower < upper``.
        num: initial grid size (>= 3).
        limits: how far the grid may be extended, ``limits[0] <= lower < upper <= limits[1]``.
        refinements: refinement rounds (>= 0).

    Returns:
        A ``SearchResult``; ``interior`` is False when the best point stayed at an end of the
        grid with the grid at ``limits`` (the score still improves beyond them: monotone).

    Example:
        >>> found = bip.baselines.interior_search(lambda w: -np.log(w / 300.0) ** 2, 1e-2, 1e1)
        >>> found.interior, round(found.value), found.bounds[1] > 1e1     # extended upwards
        (True, 300, True)
    """
    _checks.positive("lower", lower)
    num = _checks.integer("num", num, minimum=3)
    refinements = _checks.integer("refinements", refinements, minimum=0)
    if not limits[0] <= lower < upper <= limits[1]:
        raise ValueError(
            f"need limits[0] <= lower < upper <= limits[1], got lower={lower}, upper={upper}, "
            f"limits={limits}"
        )
    values: dict[float, float] = {}

    def evaluate(points: np.ndarray) -> None:
        points = np.array([p for p in points if p not in values])
        if points.size:
            scores = np.asarray(score(points), dtype=float).reshape(points.shape)
            scores = np.nan_to_num(scores, nan=-np.inf)
            values.update(zip(points.tolist(), scores.tolist(), strict=True))

    log_step = np.log(upper / lower) / (num - 1)
    grid = np.geomspace(lower, upper, num)
    evaluate(grid)
    while True:
        best = int(np.argmax([values[p] for p in grid]))
        steps = np.exp(log_step * np.arange(1, num))
        if best == 0 and grid[0] < limits[0] * _SAME:
            break
        if best == 0:
            grid = _distinct(np.concatenate([np.maximum(grid[0] / steps, limits[0]), grid]))
        elif best == len(grid) - 1 and grid[-1] * _SAME < limits[1]:
            grid = _distinct(np.concatenate([grid, np.minimum(grid[-1] * steps, limits[1])]))
        else:
            break
        evaluate(grid)
    interior = 0 < best < len(grid) - 1
    if interior:
        low, high = grid[best - 1], grid[best + 1]
        for _ in range(refinements):
            evaluate(np.geomspace(low, high, 9)[1:-1])
            inside = sorted(p for p in values if low <= p <= high)
            i = int(np.argmax([values[p] for p in inside]))
            low, high = inside[max(i - 1, 0)], inside[min(i + 1, len(inside) - 1)]
    value = max(values, key=values.get)
    return SearchResult(
        value=float(value),
        score=float(values[value]),
        interior=bool(interior),
        bounds=(float(min(values)), float(max(values))),
        evaluations=len(values),
    )


# --------------------------------------------------------------------------- the estimators


def _gradient(x: Array) -> Array:
    """Forward differences of an image ``(h, w) -> (2, h, w)``, zero across the last
    row/column (a Neumann boundary: constants have no gradient)."""
    dy = jnp.concatenate([x[1:] - x[:-1], jnp.zeros_like(x[:1])], axis=0)
    dx = jnp.concatenate([x[:, 1:] - x[:, :-1], jnp.zeros_like(x[:, :1])], axis=1)
    return jnp.stack([dy, dx])


def _penalty_gram(x: Array) -> Array:
    """``D^T D x`` for the forward-difference gradient ``D`` of ``_gradient``."""
    _, transpose = jax.vjp(_gradient, x)
    (out,) = transpose(_gradient(x))
    return out


@partial(jax.jit, static_argnames="iterations")
def _regularised(op: operators.Operator, y: Array, weights: Array, iterations: int = 200):
    """``argmin ||A x - y||^2 + weights[0] ||x||^2 + weights[1] ||grad x||^2`` by conjugate
    gradients (one compiled program for both penalties and every weight)."""
    rhs = op.adjoint(y)

    def normal(v):
        return op.gram(v) + weights[0] * v + weights[1] * _penalty_gram(v)

    x, _ = jax.scipy.sparse.linalg.cg(normal, rhs, maxiter=iterations)
    return x


def _weights(y, weight: float, penalty: int) -> Array:
    dtype = jnp.result_type(jnp.asarray(y).dtype, float)
    return jnp.zeros(2, dtype).at[penalty].set(weight)


def tikhonov(op: operators.Operator, y: Array, weight: float, iterations: int = 200) -> Array:
    """``argmin_x ||A x - y||^2 + weight ||x||^2`` by conjugate gradients on the normal
    equations (one compiled program per operator structure; ``weight`` is traced).

    For a blur it is the Wiener filter of an image with a white spectrum (variance
    ``noise_std^2 / weight`` per pixel).

    Args:
        op: a linear operator ``(h, w) -> output_shape``.
        y: one observation, ``op.output_shape``.
        weight: regularisation weight (> 0).
        iterations: at most this many CG iterations (relative residual 1e-5 stops earlier).

    Returns:
        The estimate, ``op.input_shape``.

    Example:
        >>> A = bip.operators.gaussian_blur((16, 16), 1.0)
        >>> bip.baselines.tikhonov(A, A(jnp.ones((16, 16))), 1e-3).shape
        (16, 16)
    """
    return _regularised(op, y, _weights(y, weight, 0), iterations=iterations)


def wiener(op: operators.Operator, y: Array, weight: float, iterations: int = 200) -> Array:
    """``argmin_x ||A x - y||^2 + weight ||grad x||^2`` by conjugate gradients.

    The Wiener filter (the posterior mean) for a Gaussian image law whose spectrum falls like
    ``1 / |k|^2`` (inverse covariance ``D^T D``, ``D`` forward differences with a Neumann
    boundary) and Gaussian noise: for a blur, classical Wiener deconvolution with a smooth
    image model; for inpainting, harmonic interpolation of the missing pixels.

    Args:
        op: a linear operator on images ``(h, w)``.
        y: one observation, ``op.output_shape``.
        weight: regularisation weight (> 0).
        iterations: at most this many CG iterations.

    Returns:
        The estimate, ``(h, w)``.

    Example:
        >>> A = bip.operators.gaussian_blur((16, 16), 1.0)
        >>> bip.baselines.wiener(A, A(jnp.ones((16, 16))), 1e-2).shape
        (16, 16)
    """
    return _regularised(op, y, _weights(y, weight, 1), iterations=iterations)


def _smooth_detector(sinogram: Array, width: Array) -> Array:
    """Gaussian smoothing of ``(..., n, num_angles)`` along the detector (zero outside)."""
    n = sinogram.shape[-2]
    offset = jnp.arange(n, dtype=sinogram.dtype)
    kernel = jnp.exp(-0.5 * ((offset[:, None] - offset[None, :]) / width) ** 2)
    full = jnp.exp(-0.5 * (jnp.arange(-n + 1, n, dtype=sinogram.dtype) / width) ** 2)
    return jnp.einsum("ij,...ja->...ia", kernel / jnp.sum(full), sinogram)


def _fbp(params, filt: Array, sinogram: Array, width: Array) -> Array:
    """FBP (parallel or fan, by the type of ``params``) of the smoothed ``sinogram``."""
    smoothed = _smooth_detector(sinogram, width)
    if isinstance(params, ct.FanParams):
        return ct._fan_fbp(params, filt, smoothed)
    return ct._fbp(params.offsets, filt, smoothed)


def _fbp_filter(op: operators.Operator, name: str, dtype) -> Array:
    """The Fourier weights of filter ``name`` for ``op``'s detector."""
    make = ct._fan_filter if isinstance(op.params, ct.FanParams) else ct._fbp_filter
    return jnp.asarray(make(op.output_shape[0], name), dtype)


_fbp_jit = jax.jit(_fbp)


def fbp(op: operators.Operator, y: Array, filter: str = "ramp", width: float = 1.0) -> Array:
    """Filtered back projection of the sinogram smoothed along the detector.

    ``y`` is convolved along the detector with a normalised Gaussian of standard deviation
    ``width`` pixels (zero beyond the detector), which multiplies the FBP ``filter`` by a
    Gaussian window, then reconstructed as ``operators.filtered_back_projection`` does
    (skimage's ``iradon``), or for a fan-beam operator as
    ``bip.ct.fan_filtered_back_projection`` does. ``width -> 0`` is plain FBP.

    Args:
        op: an operator made by ``bip.operators.radon`` or ``bip.ct.fan_beam``.
        y: sinogram(s) ``(*batch, num_detectors, num_angles)``.
        filter: one of ``FBP_FILTERS``.
        width: Gaussian width in detector pixels (> 0; traced: no recompilation).

    Returns:
        ``(*batch, n, n)`` reconstructions.

    Example:
        >>> P = bip.operators.radon(32, jnp.linspace(0.0, 180.0, 16, endpoint=False))
        >>> bip.baselines.fbp(P, P(jnp.ones((32, 32))), "hann", 0.5).shape
        (32, 32)
    """
    if not isinstance(getattr(op, "params", None), ct.RadonParams | ct.FanParams):
        raise TypeError(
            f"op must be made by bip.operators.radon or bip.ct.fan_beam, got {type(op).__name__}"
        )
    if filter not in FBP_FILTERS:
        raise ValueError(f"filter must be one of {FBP_FILTERS}, got {filter!r}")
    _checks.positive("width", width)
    y = jnp.asarray(y)
    _checks.event_shape("y", y, op.output_shape)
    filt = _fbp_filter(op, filter, y.dtype)
    return _fbp_jit(op.params, filt, y, jnp.asarray(width, y.dtype))


# --------------------------------------------------------------------------- choosing


_VALUES_PER_CALL = 7  # interior_search's coarse grid, extension blocks and refinement rounds

#: PDHG iterations of each TV solve in ``classical`` (from zero, no early stop; every weight
#: of a search round and every image in one batch; ``bip.tv``'s diagonal steps for these
#: non-negative operators): ``(pixels at most, iterations)``, the first that fits. Measured
#: (``python -m bench.bench_tv``, float64; test PSNR at the chosen weight, then the
#: converged PSNR there (20000 iterations), then the scalar steps' 500 as before): at 32x32
#: 500 iterations give ct-phantom-16 28.37 (28.39; scalar 28.29), ct-phantom-8 27.78 (27.80;
#: 27.76), deblur-phantom 28.64 (28.25: the unconverged iterate is smoother; 28.38),
#: inpaint-digits 18.84 at one grid step above the scalar steps' weight (18.88; 18.87); search
#: CPU 2.4, 2.0, 2.5, 1.2 s vs 3.2, 2.6, 3.3, 1.8 (compilation included, loaded machine).
#: At 128x128 (ct-ellipses-128-exact, 30 views) 1000 iterations give 39.76 dB at weight 9.25
#: (converged 39.81) in one search round of 35 solves, 79 CPU-s; the scalar steps with 2500
#: chose the same weight, 39.79 dB, 178 CPU-s (loaded machine). A tolerance would not stop
#: these runs earlier: at weight 10 the relative dual residual is 1.6e-3 after 1000
#: iterations and below 1e-5 only after ~60000.
TV_ITERATIONS = ((64 * 64, 500), (math.inf, 1000))
#: TV's weight grid, relative to Wiener's chosen weight: 7 weights from ``1/40`` to ``1/2.5``
#: of it (a ratio of 1.59 between neighbours), extended by ``interior_search`` until the best
#: is inside, not refined (each round is a batch of PDHG solves). On the shipped specs the best
#: TV weight is 0.08 to 0.15 times Wiener's (2.5 times for inpainting, where the grid extends).
#: Measured against a factor-100 grid with one refinement round (twice the solves): nearly the
#: same weight on ct-phantom-16, ct-phantom-8 and inpaint-digits, test PSNR within 0.35 dB
#: elsewhere, half the CPU time (ct-phantom-16 1.7 s vs 2.5 s, deblur-phantom 1.2 vs 2.4).
TV_GRID = (1 / 40, 1 / 2.5)


def _tv_iterations(shape: tuple[int, ...]) -> int:
    pixels = math.prod(shape)
    return next(iterations for most, iterations in TV_ITERATIONS if pixels <= most)


def _mean_psnr(estimates: np.ndarray, truths: np.ndarray) -> float:
    return float(np.mean([metrics.psnr(e, t) for e, t in zip(estimates, truths, strict=True)]))


def _padded(estimate: Callable[[Array, Array], Array], ys: Array, values) -> np.ndarray:
    """``estimate(ys, values)`` with ``values`` padded to a multiple of ``_VALUES_PER_CALL``
    (every search round then reuses one compiled program), padding dropped."""
    values = np.asarray(values, float)
    size = -(-values.size // _VALUES_PER_CALL) * _VALUES_PER_CALL
    padded = np.concatenate([values, np.full(size - values.size, values[-1])])
    return np.asarray(estimate(ys, jnp.asarray(padded, ys.dtype)))[: values.size]


def _choose(
    estimate: Callable[[Array, Array], Array],
    lower: float,
    upper: float,
    y: Array,
    truth: Array,
    validation: tuple[Array, Array] | None,
    refinements: int = 3,
) -> tuple[dict, float]:
    """Search the parameter of ``estimate(ys (k, ...), values (v,)) -> images (v, k, h, w)``
    on the validation pairs (mean PSNR), or on the truth when there are none; return the
    report (with the test image's PSNR at the chosen value) and the score it was chosen on.
    The test image rides along in every call (one compiled program, no extra solve)."""
    ys, truths = y[None], np.asarray(truth)[None]
    if validation is not None:
        ys = jnp.concatenate([jnp.asarray(validation[0], y.dtype), ys])
        truths = np.concatenate([np.asarray(validation[1]), truths])
    test_psnr: dict[float, float] = {}
    test_images: dict[float, np.ndarray] = {}

    def score(values: np.ndarray) -> list[float]:
        scores = []
        for value, images in zip(values.tolist(), _padded(estimate, ys, values), strict=True):
            test_psnr[value], test_images[value] = metrics.psnr(images[-1], truths[-1]), images[-1]
            scores.append(
                test_psnr[value] if validation is None else _mean_psnr(images[:-1], truths[:-1])
            )
        return scores

    chosen = interior_search(score, lower, upper, refinements=refinements)
    report = {
        "psnr": test_psnr[chosen.value],
        "value": chosen.value,
        "interior": chosen.interior,
        "search_range": list(chosen.bounds),
        "chosen_on": "oracle" if validation is None else "validation",
        "image": test_images[chosen.value],
    }
    return report, chosen.score


# ``(op or tables, ys (k, ...), values (v, ...)) -> (v, k, h, w)``: one program per search
_regularised_grid = jax.jit(
    jax.vmap(jax.vmap(_regularised, in_axes=(None, 0, None)), in_axes=(None, None, 0))
)
_fbp_grid = jax.jit(jax.vmap(jax.vmap(_fbp, (None, None, 0, None)), (None, None, None, 0)))


def _tv_grid(
    op: operators.Operator,
    norm: Array,
    iterations: int,
    preconditioner: str,
    ys: Array,
    values: Array,
) -> Array:
    """TV reconstructions of ``ys (k, ...)`` at every weight of ``values (v,)``: one batched
    PDHG run of exactly ``iterations`` (from zero; no early stop, so that ``reconstruct``
    repeats it), ``(v, k, h, w)``."""
    x, _ = tv.tv_reconstruct(
        op,
        ys[None],
        values[:, None],
        num_iterations=iterations,
        tol=0.0,
        operator_norm=norm,
        preconditioner=preconditioner,
    )
    return x


def tv_search(
    op: operators.Operator,
    y: Array,
    truth: Array,
    validation: tuple[Array, Array] | None,
    wiener_weight: float,
    iterations: int | None = None,
    preconditioner: str = "auto",
) -> dict:
    """``classical``'s TV entry: the weight searched on the grid ``TV_GRID`` times
    ``wiener_weight`` (``interior_search``, no refinement), each search round one batched
    PDHG run of ``iterations`` (default ``TV_ITERATIONS``) with ``preconditioner`` (see
    ``bip.tv.tv_reconstruct``). Returns ``{"weight", "iterations", "psnr", "interior",
    "search_range", "chosen_on", "image"}`` (``image``: the test image's reconstruction).

    Example:
        >>> op = bip.operators.gaussian_blur((16, 16), 1.5)
        >>> truth = bip.images.phantom(16)
        >>> found = bip.baselines.tv_search(op, op(truth), truth, None, 1e-3)
        >>> found["chosen_on"], found["iterations"]
        ('oracle', 500)
    """
    iterations = _tv_iterations(op.input_shape) if iterations is None else iterations
    norm = operators.operator_norm(jax.random.key(0), op).astype(y.dtype)
    lower, upper = (wiener_weight * ratio for ratio in TV_GRID)
    estimate = partial(_tv_grid, op, norm, iterations, preconditioner)
    found, _ = _choose(estimate, lower, upper, y, truth, validation, refinements=0)
    return {"weight": found.pop("value"), "iterations": iterations, **found}


def reconstruct(op: operators.Operator, y: Array, name: str, found: dict) -> Array:
    """The reconstruction of baseline ``name`` at the setting ``classical`` chose (``found``,
    its entry of ``classical``'s result): what the report's PSNR was measured on.

    Args:
        op: the operator ``classical`` was given; y: one observation ``op.output_shape``.
        name: ``"fbp"``, ``"tikhonov"``, ``"wiener"`` or ``"tv"``.
        found: ``classical(...)[name]``.

    Returns:
        ``op.input_shape`` image.

    Example:
        >>> op = bip.operators.gaussian_blur((16, 16), 1.5)
        >>> truth = bip.images.phantom(16)
        >>> found = bip.baselines.classical(op, op(truth), truth)
        >>> bip.baselines.reconstruct(op, op(truth), "tv", found["tv"]).shape
        (16, 16)
    """
    if name == "fbp":
        return fbp(op, y, found["filter"], found["width"])
    if name == "tv":
        iterations = found["iterations"]
        x, _ = tv.tv_reconstruct(op, y, found["weight"], num_iterations=iterations, tol=0.0)
        return x
    if name in ("tikhonov", "wiener"):
        return (tikhonov if name == "tikhonov" else wiener)(op, y, found["weight"])
    raise ValueError(f"name must be one of ('fbp', 'tikhonov', 'wiener', 'tv'), got {name!r}")


def classical(
    op: operators.Operator,
    y: Array,
    truth: Array,
    validation: tuple[Array, Array] | None = None,
    validation_note: str = "",
    return_images: bool = False,
) -> dict | tuple[dict, dict]:
    """Every classical baseline that applies to ``op``, each at its best parameter.

    ``fbp`` (for ``radon`` and ``fan_beam`` operators: the best of ``FBP_FILTERS`` and a
    detector smoothing width; ``psnr_by_filter`` gives each filter's PSNR at its own best
    width, ramp and hann among them), ``tikhonov``, ``wiener`` and ``tv`` (linear operators
    on images; TV with non-negativity, ``TV_ITERATIONS`` PDHG iterations, its weight
    searched on the grid ``TV_GRID`` relative to Wiener's). Each parameter is chosen by
    ``interior_search`` (log scale, the optimum bracketed) on the ``validation`` pairs when
    given (mean PSNR over them), else on ``truth`` (an oracle).

    Args:
        op: the forward operator (``input_shape`` ``(h, w)``).
        y: the observation; truth: the ground truth ``(h, w)`` (the test image).
        validation: ``(observations (k, *output_shape), truths (k, h, w))``: other images of
            the same law observed the same way, or None.
        validation_note: what the validation images are (copied into the report).
        return_images: also return ``{name: reconstruction of the test image at the chosen
            setting}`` (``(h, w)`` NumPy arrays, kept from the search: no extra solve).

    Returns:
        ``{name: {"psnr", <parameter>, "interior", "search_range", "chosen_on", ...}}``:
        ``psnr`` is the test image's at the chosen parameter (``weight``; for ``fbp``
        ``filter`` and ``width``; ``reconstruct`` recomputes that image), ``chosen_on`` is
        ``"validation"`` or ``"oracle"`` (with ``validation`` saying what the validation
        images are), ``search_range`` the parameters searched; ``interior`` False flags an
        optimum at the edge of the range (a ``note`` then says so). ``{}`` for a nonlinear
        operator or non-image events. With ``return_images``, ``(that dict, images)``.

    Example:
        >>> op = bip.operators.gaussian_blur((32, 32), 2.0)
        >>> truth = bip.images.phantom(32)
        >>> y = op(truth) + 0.05 * jax.random.normal(jax.random.key(0), (32, 32))
        >>> sorted(bip.baselines.classical(op, y, truth))
        ['tikhonov', 'tv', 'wiener']
    """
    if not op.linear or len(op.input_shape) != 2:
        return ({}, {}) if return_images else {}
    y, truth = jnp.asarray(y), jnp.asarray(truth)
    out = {}
    if isinstance(op.params, ct.RadonParams | ct.FanParams):
        candidates = []
        for name in FBP_FILTERS:
            estimate = partial(_fbp_grid, op.params, _fbp_filter(op, name, y.dtype))
            found, score = _choose(estimate, 0.03, 30.0, y, truth, validation)
            candidates.append((score, {"filter": name, "width": found.pop("value"), **found}))
        out["fbp"] = max(candidates, key=lambda c: c[0])[1]
        out["fbp"]["psnr_by_filter"] = {c[1]["filter"]: c[1]["psnr"] for c in candidates}
    for name, penalty in (("tikhonov", 0), ("wiener", 1)):

        def estimate(ys, values, penalty=penalty):
            weights = jnp.zeros((values.shape[0], 2), values.dtype).at[:, penalty].set(values)
            return _regularised_grid(op, ys, weights)

        found, _ = _choose(estimate, 1e-4, 1e2, y, truth, validation)
        out[name] = {"weight": found.pop("value"), **found}
    out["tv"] = tv_search(op, y, truth, validation, out["wiener"]["weight"])
    images = {name: found.pop("image") for name, found in out.items()}
    for found in out.values():
        if found["chosen_on"] == "validation" and validation_note:
            found["validation"] = validation_note
        if not found["interior"]:
            found["note"] = (
                "the best parameter is at the edge of the searched range "
                f"{found['search_range']}: the baseline may be understated"
            )
    return (out, images) if return_images else out


#: How many validation images choose the baselines' parameters (``validation_images``).
VALIDATION_IMAGES = 4


def validation_images(
    rng_key: Array, law, test_index: int = 0, count: int = VALIDATION_IMAGES, name: str = ""
) -> tuple[Array, str] | None:
    """Images ``(count, h, w)`` to choose the baselines' parameters on, never the test image,
    and a note saying which: for a fixed data set (``bip.images.EmpiricalLaw``) the ``count``
    images after ``test_index`` (cyclically), for a generative law ``count`` fresh draws from
    ``rng_key``; None without a law (a single image, a file).

    Example:
        >>> law = bip.laws.data_law(bip.specs.parse(bip.specs.DataSpec, {"source": "digits"}, "x"))
        >>> truths, note = validation_images(jax.random.key(0), law, 3, name="digits")
        >>> truths.shape, note
        ((4, 16, 16), 'digits images [4, 5, 6, 7] (not the test image)')
    """
    if law is None:
        return None
    name = name or getattr(law, "name", "data")
    if not isinstance(law, EmpiricalLaw):
        return law.sample(rng_key, (count,)), f"{count} other draws of the {name} law"
    others = [(test_index + 1 + i) % law.num_examples for i in range(count)]
    return jnp.asarray(law.data[np.asarray(others)]), f"{name} images {others} (not the test image)"
