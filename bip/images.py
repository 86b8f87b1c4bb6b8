"""Image manifolds with a known chart, their exact-chart score priors, and offline image data.

``PhantomManifold`` is a synthetic image manifold: every image is one smooth-edged ellipse
on a zero background, rendered differentiably from ``n <= 6`` parameters, so the chart
``Phi(u)``, its Jacobian and its second derivatives are available exactly (``jax.jacfwd``).
``PhantomLaw`` is the uniform law on the parameter box; its ``smoothed(x, sigma, gamma)``
gives ``(log p_sigma(x), score)`` of ``gamma Phi(U) + sigma Z`` by a truncated Laplace
approximation in the chart (SCIENCE.md section 2), so ``bip.priors.exact(PhantomLaw(...))``
is an image prior with a known manifold (the nearest-point and Laplace machinery lives in
``bip._laplace``; ``PhantomLaw`` also takes ``bip.ellipses.MultiEllipseManifold``, ``k``
ellipses). ``EmpiricalLaw`` is the law of a fixed image set
(``digits``, ``faces``): it draws examples with replacement and has no known manifold.

Chart (image axes: axis 0 is ``y``, axis 1 is ``x``; pixel centres at
``-1 + (2k + 1) / size`` in ``[-1, 1]``, so the field of view is the square ``[-1, 1]^2``)::

    q(p)   = (R_theta (p - c))_x^2 / a^2 + (R_theta (p - c))_y^2 / b^2
    Phi(u) = intensity * sigmoid((1 - q(p)) * sqrt(a b) / (2 w)),   w = edge_width * 2 / size

``(1 - q) sqrt(a b) / 2`` is the signed distance to the edge (exact for a circle, to first
order at the edge), so the edge is a logistic ramp of scale ``edge_width`` pixels. Parameters,
in this order (``PARAMETERS``), with the default box:

====== ============================== ===================== =========================
name   meaning                        units                 default box
====== ============================== ===================== =========================
cx     centre, horizontal              field half-widths     [-0.2, 0.2]
cy     centre, vertical                field half-widths     [-0.2, 0.2]
a      major semi-axis                 field half-widths     [0.4, 0.6]
b      minor semi-axis                 field half-widths     [0.15, 0.3]
theta  rotation of the major axis      radians, from +x      [-1, 1]
I      intensity inside the ellipse    pixel intensity       [0.5, 1.0]
====== ============================== ===================== =========================

``a > b`` throughout the box and ``theta`` spans less than ``pi``, so the chart is injective
and an immersion (the rotation is identifiable). ``free=`` picks a sub-family: the other
parameters stay at ``anchor`` (default: the box centre), which keeps 1- and 2-parameter
families whose exact scores can be brute-forced by quadrature.

Offline data: ``digits`` (scikit-learn), ``faces`` and ``phantom`` (scikit-image).

Example:
    >>> import bip.images
    >>> m = bip.images.PhantomManifold(size=32)
    >>> law = bip.images.PhantomLaw(m)
    >>> x = law.sample(jax.random.key(0), (4,))          # (4, 32, 32) images
    >>> prior = bip.priors.exact(law)                    # prior.score(x, 0.05): (4, 32, 32)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from bip import _checks, _laplace
from bip._laplace import BoxChart

Array = jax.Array

PARAMETERS = _laplace.PARAMETERS
_DEFAULT_LOWER = (-0.2, -0.2, 0.4, 0.15, -1.0, 0.5)
_DEFAULT_UPPER = (0.2, 0.2, 0.6, 0.3, 1.0, 1.0)


def _float():
    return jnp.result_type(float)


# --------------------------------------------------------------------------- manifold


@struct.dataclass
class PhantomManifold(BoxChart):
    """Images ``(size, size)`` of one smooth-edged ellipse; chart ``u (..., n) -> (..., h, w)``.

    Attributes:
        size: image side in pixels (>= 8).
        free: names of the chart parameters (a sub-tuple of ``PARAMETERS``, in that order);
            ``intrinsic_dim = len(free)``.
        edge_width: logistic edge scale in pixels (> 0); wider edges give a flatter manifold.
        lower, upper: the parameter box, all six parameters in ``PARAMETERS`` order.
        anchor: values of the parameters that are not free (default: the box centre).
    """

    size: int = struct.field(pytree_node=False, default=32)
    free: tuple[str, ...] = struct.field(pytree_node=False, default=PARAMETERS)
    edge_width: float = 1.0
    lower: Array | None = None
    upper: Array | None = None
    anchor: Array | None = None

    def __post_init__(self):
        _checks.integer("size", self.size, minimum=8)
        free = tuple(self.free)
        if not free or any(name not in PARAMETERS for name in free):
            raise ValueError(f"free must be a non-empty sub-tuple of {PARAMETERS}, got {free!r}")
        if free != tuple(p for p in PARAMETERS if p in free):
            raise ValueError(f"free must list parameters in the order {PARAMETERS}, got {free!r}")
        object.__setattr__(self, "free", free)
        _checks.positive("edge_width", self.edge_width)
        for name, default in (("lower", _DEFAULT_LOWER), ("upper", _DEFAULT_UPPER)):
            value = getattr(self, name)
            value = default if value is None else value
            if _checks.is_concrete(value):
                value = jnp.asarray(value, dtype=_float())
                _checks.event_shape(name, value, (len(PARAMETERS),))
                _checks.finite(name, value)
            object.__setattr__(self, name, value)
        if self.anchor is None:
            object.__setattr__(self, "anchor", 0.5 * (self.lower + self.upper))
        elif _checks.is_concrete(self.anchor):
            anchor = jnp.asarray(self.anchor, dtype=_float())
            _checks.event_shape("anchor", anchor, (len(PARAMETERS),))
            _checks.finite("anchor", anchor)
            object.__setattr__(self, "anchor", anchor)
        if _checks.is_concrete((self.lower, self.upper, self.anchor)):
            lo, hi, anc = (
                np.asarray(v, dtype=float) for v in (self.lower, self.upper, self.anchor)
            )
            idx = list(self._free_index)
            if not np.all(lo[idx] < hi[idx]):
                raise ValueError(f"lower must be < upper for the free parameters, got {lo}, {hi}")
            is_free = np.isin(np.arange(len(PARAMETERS)), idx)
            _laplace.check_box(np.where(is_free, lo, anc), np.where(is_free, hi, anc))

    # ---- static structure

    @property
    def _free_index(self) -> tuple[int, ...]:
        return tuple(PARAMETERS.index(name) for name in self.free)

    @property
    def intrinsic_dim(self) -> int:
        return len(self.free)

    @property
    def bounds(self) -> tuple[Array, Array]:
        """``(lower, upper)`` of the free parameters, each ``(n,)``: the chart domain."""
        idx = jnp.asarray(self._free_index)
        return self.lower[idx], self.upper[idx]

    def full_parameters(self, u: Array) -> Array:
        """The six parameters ``(..., 6)`` of chart coordinates ``u (..., n)``."""
        u = jnp.asarray(u)
        _checks.event_shape("u", u, (self.intrinsic_dim,))
        columns = []
        for i, name in enumerate(PARAMETERS):
            if name in self.free:
                columns.append(u[..., self.free.index(name)])
            else:
                columns.append(jnp.broadcast_to(self.anchor[i], u.shape[:-1]).astype(u.dtype))
        return jnp.stack(columns, axis=-1)

    # ---- chart

    def _chart(self, u: Array) -> Array:
        p = self.full_parameters(u)
        gx, gy = (jnp.asarray(g, u.dtype) for g in self._grid())
        flat = p.reshape((-1, len(PARAMETERS)))
        scale = self.size / (4.0 * self.edge_width)
        images = jax.vmap(lambda q: _laplace.ellipse(q, gx, gy, scale))(flat)
        return images.reshape(u.shape[:-1] + self.event_shape)

    def _render_unit(self, z: Array) -> Array:
        """Chart for one box-normalised point ``z (n,)`` -> flat image ``(size * size,)``."""
        values, k = [], 0
        for i, name in enumerate(PARAMETERS):
            if name in self.free:
                values.append(self.lower[i] + z[k] * (self.upper[i] - self.lower[i]))
                k += 1
            else:
                values.append(self.anchor[i])
        p = jnp.stack([v.astype(z.dtype) for v in values])
        gx, gy = (jnp.asarray(g.reshape(-1), z.dtype) for g in self._grid())
        return _laplace.ellipse(p, gx, gy, self.size / (4.0 * self.edge_width))

    def _starts(self, img: Array, num_starts: int) -> Array:
        """Solver starts ``(num_starts, n)`` in box-normalised coordinates: the image-moment
        estimate, then the box centre and fixed quasi-random points."""
        lo, hi = (v.astype(img.dtype) for v in self.bounds)
        gx, gy = (jnp.asarray(g, img.dtype) for g in self._grid())
        moments = _laplace.moment_start(gx, gy, img, jnp.ones_like(img))
        moments = (moments[jnp.asarray(self._free_index)] - lo) / (hi - lo)
        return _laplace.starts_from(moments, num_starts)


# --------------------------------------------------------------------------- data law


@struct.dataclass
class PhantomLaw:
    """The uniform law on the parameter box of a ``PhantomManifold`` (or another box-chart
    manifold: ``bip.ellipses.MultiEllipseManifold``), with its smoothed score.

    ``smoothed`` uses the Laplace approximation of SCIENCE.md section 2 around the nearest
    point ``u0`` of ``gamma M`` (searched on the box widened by ``margin`` box widths), with
    the full ``H = J^T J + <d^2 Phi, Phi - x>`` (Gauss-Newton ``J^T J`` where that is not
    positive definite), truncated to the box: the posterior ``N(u0, sigma^2 H^-1)`` gets the
    log mass ``sum_i log P(lower_i < u_i < upper_i)`` of its coordinate marginals, exact when at
    most one coordinate is near the boundary. The score is the exact gradient of that log density
    (the nearest point is differentiated by the implicit function theorem), so it is conservative.

    Validity: the posterior of ``u`` given ``x`` must be close to Gaussian, which needs its width
    ``sigma / |d Phi/du|`` small against the scale on which the chart bends (the edge width).
    Measured with the default box, ``size=32``, ``edge_width=1``, at ``x = Phi(u) + sigma z``
    (relative errors in the Euclidean norm; "O(1) part" = score minus its normal pull
    ``(Phi(u0) - x) / sigma^2``, the part that carries ``p_data``):

    - 2-parameter families (``("cx", "cy")``, ``("a", "theta")``) against Gauss-Legendre
      quadrature: whole score <= 3.1e-4 (sigma <= 0.1), <= 1.4e-3 (sigma <= 0.3); O(1) part
      in the interior about 1e-4, 1e-3 and 3e-3 at sigma = 0.02, 0.05, 0.1 (at most 3e-3), and
      up to 2e-2 for a point within a posterior width of the box boundary; log density to
      6e-3 (sigma <= 0.1).
    - all 6 parameters against antithetic importance sampling (1e5 draws): whole score
      <= 6e-5, O(1) part 0.4-1.1% at sigma in {0.05, 0.1}.

    Errors grow like ``sigma^2``; beyond ``sigma ~ 0.3`` (noise norm ``32 sigma`` comparable to
    the image norm) the nearest point stops being well defined. A point whose nearest chart
    point lies beyond the widened box is outside the model's validity.

    Attributes:
        manifold: the ``PhantomManifold`` (or ``MultiEllipseManifold``).
        margin: how far (in box widths) beyond the box the nearest point is searched.
        num_starts, num_refined, num_iterations: nearest-point solver settings: the best
            ``num_refined`` of ``num_starts`` starts get ``num_iterations`` Levenberg-Marquardt
            steps (see ``coordinate``; default: the manifold's ``solver_defaults``).
    """

    manifold: BoxChart
    margin: float = struct.field(pytree_node=False, default=0.25)
    num_starts: int | None = struct.field(pytree_node=False, default=None)
    num_iterations: int | None = struct.field(pytree_node=False, default=None)
    num_refined: int | None = struct.field(pytree_node=False, default=None)

    def __post_init__(self):
        if not isinstance(self.manifold, BoxChart):
            raise TypeError(
                "PhantomLaw lives on a PhantomManifold or bip.ellipses.MultiEllipseManifold, "
                f"got {type(self.manifold).__name__}"
            )
        if not 0 <= self.margin <= 0.25:
            raise ValueError(f"margin must lie in [0, 0.25], got {self.margin!r}")
        starts, refined, iterations = self.manifold.solver_defaults
        starts = starts if self.num_starts is None else self.num_starts
        defaults = {"num_starts": starts, "num_iterations": iterations}
        defaults["num_refined"] = min(refined, starts)
        for name, default in defaults.items():
            value = default if getattr(self, name) is None else getattr(self, name)
            object.__setattr__(self, name, _checks.integer(name, value))
        if self.num_refined > self.num_starts:
            raise ValueError(
                f"num_refined = {self.num_refined} exceeds num_starts = {self.num_starts}"
            )

    @property
    def event_shape(self) -> tuple[int, int]:
        return self.manifold.event_shape

    def chart_log_density(self, u: Array) -> Array:
        """Log density of the chart coordinates ``(..., n) -> (...)``: ``-log box volume``
        inside the box, ``-inf`` outside."""
        z = self.manifold._to_unit(u)
        inside = jnp.all((z >= 0) & (z <= 1), axis=-1)
        return jnp.where(inside, -self.manifold.log_box_volume, -jnp.inf)

    def sample_coordinates(self, rng_key: Array, shape: tuple[int, ...] = ()) -> Array:
        """Chart coordinates ``(*shape, n)``, uniform on the box."""
        return self.manifold.sample_box(rng_key, shape)

    def sample(self, rng_key: Array, shape: tuple[int, ...] = ()) -> Array:
        """Images ``(*shape, size, size)`` on the manifold."""
        return self.manifold.chart(self.sample_coordinates(rng_key, shape))

    def smoothed(self, x: Array, sigma: Array, gamma: Array) -> tuple[Array, Array]:
        """``(log p_sigma(x), score)`` of ``gamma Phi(U) + sigma Z``: shapes ``(...)`` and ``x``'s.

        ``x`` is ``(..., size, size)``; ``sigma`` and ``gamma`` broadcast to the batch shape
        ``x.shape[:-2]``. The log density is normalised (up to the Laplace error).
        """
        x = self.manifold._check_images(x)
        _checks.positive("sigma", sigma)
        _checks.positive("gamma", gamma)
        batch = x.shape[:-2]
        sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), batch)
        gamma = jnp.broadcast_to(jnp.asarray(gamma, x.dtype), batch)
        return _laplace.smoothed(self, x, sigma, gamma)


@struct.dataclass
class EmpiricalLaw:
    """The empirical law of a fixed training set: ``sample`` draws examples with replacement.

    Attributes:
        data: the training examples ``(N, *event_shape)``.
        name: the data set's name.

    Example:
        >>> law = EmpiricalLaw(bip.images.digits(16), name="digits")
        >>> law.sample(jax.random.key(0), (4,)).shape
        (4, 16, 16)
    """

    data: Array
    name: str = struct.field(pytree_node=False, default="empirical")

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    @property
    def manifold(self) -> None:
        """No known manifold (score-only priors, no exact reference)."""
        return None

    @property
    def num_examples(self) -> int:
        return int(self.data.shape[0])

    def sample(self, rng_key: Array, shape: tuple[int, ...] = ()) -> Array:
        """Training examples ``(*shape, *event_shape)`` drawn uniformly with replacement."""
        index = jax.random.randint(rng_key, tuple(shape), 0, self.data.shape[0])
        return self.data[index]


# --------------------------------------------------------------------------- offline data


def _resize(images: np.ndarray, size: int) -> Array:
    images = jnp.asarray(images, dtype=_float())
    out = jax.image.resize(images, images.shape[:-2] + (size, size), method="linear")
    return jnp.clip(out, 0.0, 1.0)


def digits(size: int = 16, return_labels: bool = False):
    """Handwritten digits: ``(1797, size, size)`` floats in ``[0, 1]`` (and labels ``(1797,)``).

    Source: scikit-learn's ``load_digits()`` (a copy of the test set of the UCI "Optical
    Recognition of Handwritten Digits" data, E. Alpaydin and C. Kaynak, 1998; UCI lists it under
    CC BY 4.0; ships inside scikit-learn, BSD-3), 8x8 images in ``0..16`` divided by 16 and
    resized bilinearly (``jax.image.resize``, ``method="linear"``) to ``size x size``.
    """
    size = _checks.integer("size", size, minimum=2)
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - dependency declared in pyproject
        raise ImportError("digits() needs scikit-learn (pip install scikit-learn)") from err
    data = load_digits()
    images = _resize(np.asarray(data.images, dtype=float) / 16.0, size)
    if return_labels:
        return images, jnp.asarray(data.target)
    return images


def faces() -> Array:
    """Faces: ``(100, 25, 25)`` floats in ``[0, 1]``.

    Source: the first 100 images (the faces; the other 100 are non-face background crops) of
    ``skimage.data.lfw_subset()``, 25x25 grey crops from Labeled Faces in the Wild (Huang et
    al., UMass Amherst; http://vis-www.cs.umass.edu/lfw/), shipped inside scikit-image (BSD-3).
    LFW images are news photographs collected for face-recognition research; no explicit
    licence is attached: use them for research and testing, not for redistribution.
    """
    data = _skimage_data()
    return jnp.clip(jnp.asarray(data.lfw_subset()[:100], dtype=_float()), 0.0, 1.0)


def phantom(size: int = 64) -> Array:
    """The Shepp-Logan head phantom: ``(size, size)`` floats in ``[0, 1]``.

    Source: ``skimage.data.shepp_logan_phantom()`` (400x400, Shepp and Logan, IEEE TNS 21,
    1974; a mathematical definition, free of rights; the file ships inside scikit-image,
    BSD-3), resized with ``jax.image.resize(method="linear")`` (antialiased when shrinking).
    """
    size = _checks.integer("size", size, minimum=2)
    data = _skimage_data()
    return _resize(data.shepp_logan_phantom(), size)


def _skimage_data():
    try:
        from skimage import data
    except ImportError as err:  # pragma: no cover - test extra in pyproject
        raise ImportError(
            "faces() and phantom() need scikit-image (pip install scikit-image)"
        ) from err
    return data
