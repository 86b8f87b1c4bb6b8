"""Image manifolds with a known chart, their exact-chart score priors, and offline image data.

``PhantomManifold`` is a synthetic image manifold: every image is one smooth-edged ellipse
on a zero background, rendered differentiably from ``n <= 6`` parameters, so the chart
``Phi(u)``, its Jacobian and its second derivatives are available exactly (``jax.jacfwd``).
``PhantomLaw`` is the uniform law on the parameter box; its ``smoothed(x, sigma, gamma)``
gives ``(log p_sigma(x), score)`` of ``gamma Phi(U) + sigma Z`` by a truncated Laplace
approximation in the chart (SCIENCE.md section 2), so ``bip.priors.exact(PhantomLaw(...))``
is an image prior with a known manifold. ``EmpiricalLaw`` is the law of a fixed image set
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

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.scipy.special import log_ndtr

from bip import _checks

Array = jax.Array

PARAMETERS = ("cx", "cy", "a", "b", "theta", "I")
_DEFAULT_LOWER = (-0.2, -0.2, 0.4, 0.15, -1.0, 0.5)
_DEFAULT_UPPER = (0.2, 0.2, 0.6, 0.3, 1.0, 1.0)


def _float():
    return jnp.result_type(float)


# --------------------------------------------------------------------------- manifold


@struct.dataclass
class PhantomManifold:
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
            # the box that smoothed() searches (margin 0.25 box widths) must keep a > b > 0
            ext_lo, ext_hi = lo - 0.25 * (hi - lo), hi + 0.25 * (hi - lo)
            a_lo = ext_lo[2] if "a" in free else anc[2]
            b_lo = ext_lo[3] if "b" in free else anc[3]
            b_hi = ext_hi[3] if "b" in free else anc[3]
            if not b_lo > 0:
                raise ValueError("the semi-axis b must stay > 0 on the box widened by 25%")
            if "theta" in free and not a_lo > b_hi:
                raise ValueError(
                    "with theta free, the box widened by 25% must keep a > b (the rotation of a "
                    f"circle is not identifiable): a >= {a_lo:.3g}, b <= {b_hi:.3g}"
                )
            if "theta" in free and not 1.5 * (hi[4] - lo[4]) < math.pi:
                raise ValueError("the theta range widened by 25% must be shorter than pi")

    # ---- static structure

    @property
    def _free_index(self) -> tuple[int, ...]:
        return tuple(PARAMETERS.index(name) for name in self.free)

    @property
    def event_shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    @property
    def ambient_dim(self) -> int:
        return self.size * self.size

    @property
    def intrinsic_dim(self) -> int:
        return len(self.free)

    @property
    def bounds(self) -> tuple[Array, Array]:
        """``(lower, upper)`` of the free parameters, each ``(n,)``: the chart domain."""
        idx = jnp.asarray(self._free_index)
        return self.lower[idx], self.upper[idx]

    @property
    def box_volume(self) -> Array:
        """Lebesgue volume of the chart domain (product of the free parameter ranges)."""
        lo, hi = self.bounds
        return jnp.prod(hi - lo)

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

    def _grid(self):
        centres = -1.0 + (2.0 * np.arange(self.size) + 1.0) / self.size
        y, x = np.meshgrid(centres, centres, indexing="ij")
        return x, y

    # ---- chart

    def chart(self, u: Array) -> Array:
        """Render chart coordinates ``u (..., n)`` as images ``(..., size, size)`` (smooth in u)."""
        u = jnp.asarray(u)
        if not jnp.issubdtype(u.dtype, jnp.floating):
            u = u.astype(_float())
        _checks.event_shape("u", u, (self.intrinsic_dim,))
        return _chart(self, u)

    def _chart(self, u: Array) -> Array:
        p = self.full_parameters(u)
        gx, gy = self._grid()
        shape = u.shape[:-1] + (1, 1)
        cx, cy, a, b, th, inten = (p[..., i].reshape(shape) for i in range(len(PARAMETERS)))
        gx = jnp.asarray(gx, u.dtype).reshape((1,) * (u.ndim - 1) + gx.shape)
        gy = jnp.asarray(gy, u.dtype).reshape((1,) * (u.ndim - 1) + gy.shape)
        dx, dy = gx - cx, gy - cy
        c, s = jnp.cos(th), jnp.sin(th)
        xr = c * dx + s * dy
        yr = -s * dx + c * dy
        q = (xr / a) ** 2 + (yr / b) ** 2
        w = self.edge_width * 2.0 / self.size
        return inten * jax.nn.sigmoid((1.0 - q) * jnp.sqrt(a * b) / (2.0 * w))

    def _render_unit(self, z: Array) -> Array:
        """Lean chart for one box-normalised point ``z (n,)`` -> flat image ``(size * size,)``
        (the same map as ``chart``, written with few operations for nested autodiff)."""
        values, k = [], 0
        for i, name in enumerate(PARAMETERS):
            if name in self.free:
                values.append(self.lower[i] + z[k] * (self.upper[i] - self.lower[i]))
                k += 1
            else:
                values.append(self.anchor[i])
        cx, cy, a, b, th, inten = (v.astype(z.dtype) for v in values)
        gx, gy = (jnp.asarray(g.reshape(-1), z.dtype) for g in self._grid())
        dx, dy = gx - cx, gy - cy
        c, s = jnp.cos(th), jnp.sin(th)
        q = ((c * dx + s * dy) / a) ** 2 + ((c * dy - s * dx) / b) ** 2
        scale = jnp.sqrt(a * b) * self.size / (4.0 * self.edge_width)
        return inten * jax.nn.sigmoid((1.0 - q) * scale)

    def jacobian(self, u: Array) -> Array:
        """``d Phi / d u``: ``(..., n) -> (..., size, size, n)``."""
        u = jnp.asarray(u, dtype=_float())
        flat = u.reshape((-1, self.intrinsic_dim))
        jac = _jacobian_flat(self, flat)
        return jac.reshape(u.shape[:-1] + self.event_shape + (self.intrinsic_dim,))

    def metric(self, u: Array) -> Array:
        """Induced metric ``g = J^T J``: ``(..., n) -> (..., n, n)``."""
        jac = self.jacobian(u)
        return jnp.einsum("...hwi,...hwj->...ij", jac, jac)

    def volume_density(self, u: Array) -> Array:
        """Volume element ``sqrt(det g(u))`` in the chart: ``(..., n) -> (...)``."""
        return jnp.sqrt(jnp.linalg.det(self.metric(u)))

    # ---- nearest point

    def coordinate(self, x: Array, num_starts: int = 8, num_iterations: int = 20) -> Array:
        """Chart coordinates of the nearest point in the box: ``(..., size, size) -> (..., n)``.

        Projected Levenberg-Marquardt on ``||Phi(u) - x||^2`` in box-normalised coordinates,
        from the best 4 of ``num_starts`` starts (an image-moment estimate, the box centre
        and fixed quasi-random points), ``num_iterations`` steps each; jit- and vmap-friendly.
        The result is clamped to the box (a point beyond the boundary maps to the boundary).
        """
        x = self._check_images(x)
        ones = jnp.ones(x.shape[:-2], x.dtype)
        z = _nearest(self, x, ones, 0.0, num_starts, num_iterations)
        return self._from_unit(z)

    def project(self, x: Array) -> Array:
        """Nearest chart point (box-clamped): ``(..., size, size) -> (..., size, size)``."""
        return self.chart(self.coordinate(x))

    def distance(self, x: Array) -> Array:
        """Euclidean (Frobenius, pixel-intensity units) distance to the manifold: ``(...)``."""
        x = self._check_images(x)
        return jnp.sqrt(jnp.sum((x - self.project(x)) ** 2, axis=(-2, -1)))

    def sample_box(self, rng_key: Array, shape: tuple[int, ...] = ()) -> Array:
        """Chart coordinates ``(*shape, n)`` uniform on the box."""
        shape = tuple(shape) + (self.intrinsic_dim,)
        return self._from_unit(jax.random.uniform(rng_key, shape, dtype=_float()))

    def _from_unit(self, z: Array) -> Array:
        """Box-normalised coordinates ``z`` (box = ``[0, 1]^n``) -> chart coordinates ``u``."""
        z = jnp.asarray(z)
        lo, hi = (v.astype(z.dtype).reshape((1,) * (z.ndim - 1) + v.shape) for v in self.bounds)
        return lo + z * (hi - lo)

    def _to_unit(self, u: Array) -> Array:
        """Chart coordinates ``u`` -> box-normalised coordinates ``z``."""
        u = jnp.asarray(u)
        lo, hi = (v.astype(u.dtype).reshape((1,) * (u.ndim - 1) + v.shape) for v in self.bounds)
        return (u - lo) / (hi - lo)

    def _check_images(self, x):
        _checks.event_shape("x", x, self.event_shape)
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(_float())
        return x


@jax.jit
def _chart(manifold, u):
    return manifold._chart(u)


@jax.jit
def _jacobian_flat(manifold, u):
    return jax.vmap(jax.jacfwd(manifold._chart))(u)


# --------------------------------------------------------------------------- solver


def _moment_start(manifold: PhantomManifold, img: Array) -> Array:
    """Ellipse parameters ``(6,)`` from the moments of the half-maximum region of ``img``."""
    gx, gy = (jnp.asarray(g, img.dtype) for g in manifold._grid())
    mask = (img > 0.5 * jnp.max(img)).astype(img.dtype)
    count = jnp.maximum(jnp.sum(mask), 1.0)
    cx = jnp.sum(mask * gx) / count
    cy = jnp.sum(mask * gy) / count
    cxx = jnp.sum(mask * (gx - cx) ** 2) / count
    cyy = jnp.sum(mask * (gy - cy) ** 2) / count
    cxy = jnp.sum(mask * (gx - cx) * (gy - cy)) / count
    half_trace = 0.5 * (cxx + cyy)
    root = jnp.sqrt(0.25 * (cxx - cyy) ** 2 + cxy**2)
    a = 2.0 * jnp.sqrt(jnp.maximum(half_trace + root, 1e-6))
    b = 2.0 * jnp.sqrt(jnp.maximum(half_trace - root, 1e-6))
    theta = 0.5 * jnp.arctan2(2.0 * cxy, cxx - cyy)
    inten = jnp.sum(mask * img) / count
    return jnp.stack([cx, cy, a, b, theta, inten])


def _quasi_random_starts(n: int, count: int) -> np.ndarray:
    """Fixed starts in ``[0.1, 0.9]^n``: the centre and an additive-recurrence sequence."""
    # R_n sequence (Roberts 2018): fractional parts of k * alpha, alpha from the n-dim golden ratio
    phi = 2.0
    for _ in range(50):
        phi = (1.0 + phi) ** (1.0 / (n + 1))
    alpha = (1.0 / phi) ** np.arange(1, n + 1)
    k = np.arange(1, max(count, 1))[:, None]
    pts = np.mod(0.5 + k * alpha[None, :], 1.0)
    pts = np.concatenate([np.full((1, n), 0.5), pts], axis=0)[:count]
    return 0.1 + 0.8 * pts


def _lm_single(residual, z0, zlo, zhi, num_iterations):
    """Projected Levenberg-Marquardt from ``z0`` on ``0.5 ||residual(z)||^2`` in ``[zlo, zhi]``."""

    def objective(z):
        r = residual(z)
        return 0.5 * jnp.sum(r**2)

    n = z0.shape[-1]

    def body(_, state):
        z, f, lam = state
        r = residual(z)
        jac = jax.jacfwd(residual)(z)
        grad = jac.T @ r
        jtj = jac.T @ jac
        # projected LM: coordinates held at a bound by the gradient are frozen (active set)
        active = ((z <= zlo) & (grad > 0)) | ((z >= zhi) & (grad < 0))
        keep = (~active).astype(z.dtype)
        eye = jnp.eye(n, dtype=z.dtype)
        system = keep[:, None] * jtj * keep[None, :] + jnp.diag(1.0 - keep)
        damp = lam * (jnp.diag(jnp.diag(system)) + 1e-9 * eye)
        step = jnp.linalg.solve(system + damp, keep * grad)
        z_new = jnp.clip(z - step, zlo, zhi)
        f_new = objective(z_new)
        better = f_new < f
        z = jnp.where(better, z_new, z)
        f = jnp.where(better, f_new, f)
        lam = jnp.where(better, jnp.maximum(lam / 3.0, 1e-9), jnp.minimum(lam * 4.0, 1e9))
        return z, f, lam

    z0 = jnp.clip(z0, zlo, zhi)
    state = (z0, objective(z0), jnp.asarray(1e-2, z0.dtype))
    z, f, _ = jax.lax.fori_loop(0, num_iterations, body, state)
    return z, f


def _nearest_single(manifold, img, gamma, margin, num_starts, num_iterations):
    """Normalised chart coordinate ``z`` (box = [0, 1]^n) of the point of ``gamma M`` nearest
    to ``img``, searched on the box widened by ``margin`` box widths on each side."""
    lo, hi = manifold.bounds
    lo, hi = lo.astype(img.dtype), hi.astype(img.dtype)
    n = manifold.intrinsic_dim
    idx = jnp.asarray(manifold._free_index)

    flat = img.reshape(-1)

    def residual(z):
        return gamma * manifold._render_unit(z) - flat

    moments = (_moment_start(manifold, img / gamma)[idx] - lo) / (hi - lo)
    starts = jnp.concatenate(
        [
            jnp.clip(moments, 0.02, 0.98)[None, :],
            jnp.asarray(_quasi_random_starts(n, max(num_starts - 1, 1)), img.dtype),
        ],
        axis=0,
    )
    f0 = jax.vmap(lambda z: jnp.sum(residual(z) ** 2))(starts)
    keep = min(4, starts.shape[0])
    _, best = jax.lax.top_k(-f0, keep)
    zlo, zhi = -margin, 1.0 + margin
    zs, fs = jax.vmap(lambda z0: _lm_single(residual, z0, zlo, zhi, num_iterations))(starts[best])
    return zs[jnp.argmin(fs)]


@functools.partial(jax.jit, static_argnums=(4, 5))
def _nearest_flat(manifold, flat, gamma, margin, num_starts, num_iterations):
    solve = lambda img, gm: _nearest_single(manifold, img, gm, margin, num_starts, num_iterations)
    return jax.vmap(solve)(flat, gamma)


def _nearest(manifold, x, gamma, margin, num_starts, num_iterations):
    """Batched nearest point ``(..., size, size) -> (..., n)``; compiled per flat batch size."""
    batch = x.shape[:-2]
    flat = x.reshape((-1,) + x.shape[-2:])
    g = jnp.broadcast_to(jnp.asarray(gamma, x.dtype), batch).reshape(-1)
    margin = jnp.asarray(margin, x.dtype)
    z = _nearest_flat(manifold, flat, g, margin, num_starts, num_iterations)
    return jax.lax.stop_gradient(z).reshape(batch + (manifold.intrinsic_dim,))


# --------------------------------------------------------------------------- data law


def _log_ndtr_diff(a, b):
    """``log(Phi(b) - Phi(a))`` for ``a < b``, stable in both tails."""
    flip = a > 0
    lo = jnp.where(flip, -b, a)
    hi = jnp.where(flip, -a, b)
    l_hi, l_lo = log_ndtr(hi), log_ndtr(lo)
    return l_hi + jnp.log(-jnp.expm1(jnp.minimum(l_lo - l_hi, -1e-300)))


def _laplace_log_density(law, z, x, sigma, gamma):
    """Truncated-Laplace ``log p_sigma(x)`` around the normalised chart point ``z``, as a
    function of ``(z, x)``; aux: the Hessian ``H`` used and the Jacobian ``J`` of ``gamma Phi``."""
    manifold = law.manifold
    n = manifold.intrinsic_dim
    d = manifold.ambient_dim

    def g(w):
        return gamma * manifold._render_unit(w)

    r = g(z) - x
    jac = jax.jacfwd(g)(z)  # (d, n)
    curvature = jax.hessian(lambda w: jnp.dot(r, g(w)))(z)  # <d^2 (gamma Phi), gamma Phi - x>
    gn = jac.T @ jac
    full = gn + 0.5 * (curvature + curvature.T)
    stopped = jax.lax.stop_gradient(full)
    pd = jnp.min(jnp.linalg.eigvalsh(stopped)) > 1e-8 * jnp.trace(jax.lax.stop_gradient(gn))
    h = jnp.where(pd, full, gn)  # full H where positive definite, else Gauss-Newton J^T J
    chol = jnp.linalg.cholesky(h)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    hinv_diag = jnp.diag(jax.scipy.linalg.cho_solve((chol, True), jnp.eye(n, dtype=h.dtype)))
    scale = sigma * jnp.sqrt(hinv_diag)
    log_mass = jnp.sum(_log_ndtr_diff(-z / scale, (1.0 - z) / scale))
    logp = (
        -jnp.sum(r**2) / (2.0 * sigma**2)
        - 0.5 * logdet
        + log_mass
        - 0.5 * (d - n) * jnp.log(2.0 * jnp.pi * sigma**2)
        - jnp.log(manifold.box_volume).astype(x.dtype)
    )
    return logp, (jax.lax.stop_gradient(h), jax.lax.stop_gradient(jac))


def _laplace_single(law, img, sigma, gamma, z_star):
    """``(log p_sigma(img), score)`` for one image; the nearest point ``z(x)`` enters through the
    implicit function theorem: ``dz/dx = H^-1 J^T``, so ``score = d_x A + J H^-1 d_z A``."""
    z = jax.lax.stop_gradient(z_star)
    x = img.reshape(-1)
    value_and_grad = jax.value_and_grad(_laplace_log_density, argnums=(1, 2), has_aux=True)
    (logp, (h, jac)), (grad_z, grad_x) = value_and_grad(law, z, x, sigma, gamma)
    score = grad_x + jac @ jnp.linalg.solve(h, grad_z)
    return logp, score.reshape(img.shape)


@jax.jit
def _laplace_flat(law, flat, sigma, gamma, z_star):
    return jax.vmap(lambda i, s, gm, zz: _laplace_single(law, i, s, gm, zz))(
        flat, sigma, gamma, z_star
    )


def _smoothed_impl(law, x, sigma, gamma):
    batch = x.shape[:-2]
    flat = x.reshape((-1,) + x.shape[-2:])
    z_star = _nearest(
        law.manifold, flat, gamma.reshape(-1), law.margin, law.num_starts, law.num_iterations
    )
    logp, score = _laplace_flat(law, flat, sigma.reshape(-1), gamma.reshape(-1), z_star)
    return logp.reshape(batch), score.reshape(x.shape)


@struct.dataclass
class PhantomLaw:
    """The uniform law on the parameter box of a ``PhantomManifold``, with its smoothed score.

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
        manifold: the ``PhantomManifold``.
        margin: how far (in box widths) beyond the box the nearest point is searched.
        num_starts, num_iterations: nearest-point solver settings (see ``coordinate``).
    """

    manifold: PhantomManifold
    margin: float = struct.field(pytree_node=False, default=0.25)
    num_starts: int = struct.field(pytree_node=False, default=8)
    num_iterations: int = struct.field(pytree_node=False, default=20)

    def __post_init__(self):
        if not isinstance(self.manifold, PhantomManifold):
            raise TypeError(
                f"PhantomLaw lives on a PhantomManifold, got {type(self.manifold).__name__}"
            )
        if not 0 <= self.margin <= 0.25:
            raise ValueError(f"margin must lie in [0, 0.25], got {self.margin!r}")
        _checks.integer("num_starts", self.num_starts)
        _checks.integer("num_iterations", self.num_iterations)

    @property
    def event_shape(self) -> tuple[int, int]:
        return self.manifold.event_shape

    def chart_log_density(self, u: Array) -> Array:
        """Log density of the chart coordinates ``(..., n) -> (...)``: ``-log box volume``
        inside the box, ``-inf`` outside."""
        z = self.manifold._to_unit(u)
        inside = jnp.all((z >= 0) & (z <= 1), axis=-1)
        return jnp.where(inside, -jnp.log(self.manifold.box_volume), -jnp.inf)

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
        return _smoothed_impl(self, x, sigma, gamma)


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
