"""Exact-chart machinery shared by the ellipse image manifolds (``bip.images.PhantomManifold``,
``bip.ellipses.MultiEllipseManifold``): smooth-edged ellipses, the nearest chart point and the
truncated-Laplace smoothed law (``bip.images.PhantomLaw``).

A box-chart manifold (``BoxChart``) renders box-normalised coordinates ``z in [0, 1]^n`` as
flat images (``_render_unit``) and supplies solver starts (``_starts``); the Jacobian and the
curvature ``<d^2 Phi, r>`` default to autodiff of the whole render and may be overridden by
cheaper structured versions (one ellipse at a time for sums of ellipses).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

from bip import _checks

Array = jax.Array

#: The parameters of one ellipse, in chart order.
PARAMETERS = ("cx", "cy", "a", "b", "theta", "I")


def _float():
    return jnp.result_type(float)


def ellipse(p: Array, gx: Array, gy: Array, scale) -> Array:
    """One smooth-edged ellipse at the points ``(gx, gy)``: parameters ``p = (cx, cy, a, b,
    theta, I)`` (``bip.images.PARAMETERS``), edge ``sigmoid((1 - q) sqrt(a b) scale)``."""
    cx, cy, a, b, th, inten = (p[i] for i in range(6))
    dx, dy = gx - cx, gy - cy
    c, s = jnp.cos(th), jnp.sin(th)
    q = ((c * dx + s * dy) / a) ** 2 + ((c * dy - s * dx) / b) ** 2
    return inten * jax.nn.sigmoid((1.0 - q) * jnp.sqrt(a * b) * scale)


def check_box(lo: np.ndarray, hi: np.ndarray, what: str = "") -> None:
    """Validity of one ellipse's box ``(6,)`` (fixed parameters have ``lo == hi``): the box
    widened by 25% (the nearest-point search region) keeps ``a, b > 0``; with ``theta`` free it
    keeps ``a > b`` (the rotation of a circle is not identifiable) and spans less than ``pi``."""
    ext_lo, ext_hi = lo - 0.25 * (hi - lo), hi + 0.25 * (hi - lo)
    if not ext_lo[3] > 0 or not ext_lo[2] > 0:
        raise ValueError(f"{what}the semi-axes a, b must stay > 0 on the box widened by 25%")
    if hi[4] > lo[4] and not ext_lo[2] > ext_hi[3]:
        raise ValueError(
            f"{what}with theta free, the box widened by 25% must keep a > b (the rotation of a "
            f"circle is not identifiable): a >= {ext_lo[2]:.3g}, b <= {ext_hi[3]:.3g}"
        )
    if not 1.5 * (hi[4] - lo[4]) < math.pi:
        raise ValueError(f"{what}the theta range widened by 25% must be shorter than pi")


def moment_start(gx: Array, gy: Array, img: Array, weight: Array) -> Array:
    """Ellipse parameters ``(6,)`` from the moments of the half-maximum region of
    ``img * weight`` (``gx, gy, img, weight`` of one shape)."""
    img = img * weight
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


def starts_from(first: Array, num_starts: int) -> Array:
    """Solver starts ``(num_starts, n)``: ``first`` (box-normalised, clipped to ``[0.02,
    0.98]``), then the box centre and fixed quasi-random points."""
    fixed = quasi_random_starts(first.shape[-1], max(num_starts - 1, 1))
    starts = [jnp.clip(first, 0.02, 0.98)[None, :], jnp.asarray(fixed, first.dtype)]
    return jnp.concatenate(starts, axis=0)[: max(num_starts, 1)]


def quasi_random_starts(n: int, count: int) -> np.ndarray:
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


# --------------------------------------------------------------------------- manifolds


class BoxChart:
    """Mixin of the image manifolds whose chart domain is a box of ``n`` coordinates.

    Subclasses (``flax.struct`` dataclasses with a ``size`` field) define ``bounds``,
    ``intrinsic_dim``, ``_chart(u)`` (batched), ``_render_unit(z)`` (one box-normalised point
    -> flat image) and ``_starts(img, num_starts)``, and set ``solver_defaults = (num_starts,
    num_refined, num_iterations)`` for ``coordinate`` and ``PhantomLaw``.
    """

    solver_defaults = (8, 4, 20)

    @property
    def event_shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    @property
    def ambient_dim(self) -> int:
        return self.size * self.size

    @property
    def box_volume(self) -> Array:
        """Lebesgue volume of the chart domain (product of the free parameter ranges)."""
        return jnp.exp(self.log_box_volume)

    @property
    def log_box_volume(self) -> Array:
        """``log box_volume``, computed as a sum (no underflow with many coordinates)."""
        lo, hi = self.bounds
        return jnp.sum(jnp.log(hi - lo))

    def _grid(self):
        centres = -1.0 + (2.0 * np.arange(self.size) + 1.0) / self.size
        y, x = np.meshgrid(centres, centres, indexing="ij")
        return x, y

    def chart(self, u: Array) -> Array:
        """Render chart coordinates ``u (..., n)`` as images ``(..., size, size)`` (smooth in u)."""
        u = jnp.asarray(u)
        if not jnp.issubdtype(u.dtype, jnp.floating):
            u = u.astype(_float())
        _checks.event_shape("u", u, (self.intrinsic_dim,))
        return _chart(self, u)

    def _jacobian_unit(self, z: Array) -> Array:
        """``d _render_unit / dz``: ``(n,) -> (size * size, n)``."""
        return jax.jacfwd(self._render_unit)(z)

    def _curvature_unit(self, z: Array, r: Array) -> Array:
        """``<d^2 _render_unit(z), r>``: ``(n,), (size * size,) -> (n, n)``."""
        return jax.hessian(lambda w: jnp.dot(r, self._render_unit(w)))(z)

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

    def coordinate(self, x: Array, num_starts: int | None = None, num_iterations=None) -> Array:
        """Chart coordinates of the nearest point in the box: ``(..., size, size) -> (..., n)``.

        Projected Levenberg-Marquardt on ``||Phi(u) - x||^2`` in box-normalised coordinates,
        from the best of ``num_starts`` starts (the manifold's image-moment estimates, the box
        centre, fixed quasi-random points), ``num_iterations`` steps each (defaults:
        ``solver_defaults``); jit- and vmap-friendly. The result is clamped to the box (a point
        beyond the boundary maps to the boundary).
        """
        x = self._check_images(x)
        starts, refined, iterations = self.solver_defaults
        starts = starts if num_starts is None else num_starts
        iterations = iterations if num_iterations is None else num_iterations
        ones = jnp.ones(x.shape[:-2], x.dtype)
        z = nearest(self, x, ones, 0.0, starts, min(refined, starts), iterations)
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


def _lm_single(residual, jacobian, z0, zlo, zhi, num_iterations):
    """Projected Levenberg-Marquardt from ``z0`` on ``0.5 ||residual(z)||^2`` in ``[zlo, zhi]``."""

    def objective(z):
        r = residual(z)
        return 0.5 * jnp.sum(r**2)

    n = z0.shape[-1]

    def body(_, state):
        z, f, lam = state
        r = residual(z)
        jac = jacobian(z)
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


def _nearest_single(manifold, img, gamma, margin, num_starts, num_refined, num_iterations):
    """Normalised chart coordinate ``z`` (box = [0, 1]^n) of the point of ``gamma M`` nearest
    to ``img``: the best ``num_refined`` of the manifold's ``num_starts`` starts refined by
    LM on the box widened by ``margin`` box widths on each side."""
    flat = img.reshape(-1)

    def residual(z):
        return gamma * manifold._render_unit(z) - flat

    def jacobian(z):
        return gamma * manifold._jacobian_unit(z)

    starts = manifold._starts(img / gamma, num_starts).astype(img.dtype)
    f0 = jax.vmap(lambda z: jnp.sum(residual(z) ** 2))(starts)
    _, best = jax.lax.top_k(-f0, num_refined)
    zlo, zhi = -margin, 1.0 + margin
    solve = lambda z0: _lm_single(residual, jacobian, z0, zlo, zhi, num_iterations)  # noqa: E731
    zs, fs = jax.vmap(solve)(starts[best])
    return zs[jnp.argmin(fs)]


@functools.partial(jax.jit, static_argnums=(4, 5, 6))
def _nearest_flat(manifold, flat, gamma, margin, num_starts, num_refined, num_iterations):
    def solve(img, gm):
        return _nearest_single(manifold, img, gm, margin, num_starts, num_refined, num_iterations)

    return jax.vmap(solve)(flat, gamma)


def nearest(manifold, x, gamma, margin, num_starts, num_refined, num_iterations):
    """Batched nearest point ``(..., size, size) -> (..., n)``; compiled per flat batch size."""
    batch = x.shape[:-2]
    flat = x.reshape((-1,) + x.shape[-2:])
    g = jnp.broadcast_to(jnp.asarray(gamma, x.dtype), batch).reshape(-1)
    margin = jnp.asarray(margin, x.dtype)
    z = _nearest_flat(manifold, flat, g, margin, num_starts, num_refined, num_iterations)
    return jax.lax.stop_gradient(z).reshape(batch + (manifold.intrinsic_dim,))


# --------------------------------------------------------------------------- Laplace


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

    r = gamma * manifold._render_unit(z) - x
    jac = gamma * manifold._jacobian_unit(z)  # (d, n)
    curvature = gamma * manifold._curvature_unit(z, r)  # <d^2 (gamma Phi), gamma Phi - x>
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
        - manifold.log_box_volume.astype(x.dtype)
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


def smoothed(law, x, sigma, gamma):
    """``(log p_sigma(x), score)`` of a ``PhantomLaw`` for checked ``x (..., size, size)`` and
    ``sigma``, ``gamma`` of the batch shape."""
    batch = x.shape[:-2]
    flat = x.reshape((-1,) + x.shape[-2:])
    z_star = nearest(
        law.manifold,
        flat,
        gamma.reshape(-1),
        law.margin,
        law.num_starts,
        law.num_refined,
        law.num_iterations,
    )
    logp, score = _laplace_flat(law, flat, sigma.reshape(-1), gamma.reshape(-1), z_star)
    return logp.reshape(batch), score.reshape(x.shape)
