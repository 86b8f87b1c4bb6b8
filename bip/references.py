"""Exact reference posteriors for exact-chart priors, sampled in the chart with NumPyro NUTS.

An exact-chart prior is a law on a manifold ``M`` with a chart ``Phi(u)`` and a density
``p(u)`` of the chart coordinates (``bip.manifolds.VonMises``, ``Uniform``,
``VonMisesFisher``, ``bip.images.PhantomLaw``). Its smoothed law is ``p_sigma = p_data *
N(0, sigma^2 I)``: ``x = Phi(u) + sigma z`` with ``u ~ p(u)``, ``z ~ N(0, I_d)``. With a linear
operator ``A`` (matrix ``(m, d)``) and Gaussian noise ``y = A x + e``, ``e ~ N(0, S)``,
``S = diag(s^2)``, the posteriors bip's samplers target are computable exactly:

**Generic posterior at finite sigma** (the law of ``p_sigma(x) p(y | x)``, the target of
``bip.posteriors.sample`` with the exact score and ``alpha = 0``). Given ``u``,
``y = A Phi(u) + sigma A z + e`` is Gaussian with covariance ``C = S + sigma^2 A A^T``, so
``z`` integrates out::

    u | y  ~  p(u) N(y; A Phi(u), C)                                    (NUTS on u)

and, with the residual ``r = y - A Phi(u)``, ``(z, r)`` is jointly Gaussian given ``u``
(``Cov(z, r) = sigma A^T``, ``Cov(r) = C``), so ``x = Phi(u) + sigma z`` is Gaussian given
``(u, y)``::

    x | u, y  ~  N(Phi(u) + sigma^2 A^T C^-1 r,  sigma^2 I - sigma^4 A^T C^-1 A).

It is drawn without factoring the ``(d, d)`` covariance, by Matheron's rule: with fresh
``z0 ~ N(0, I)``, ``e0 ~ N(0, S)``, ``x = Phi(u) + sigma z0 + sigma^2 A^T C^-1 (r - sigma A z0 -
e0)`` has exactly that law. ``A``'s matrix comes from ``jax.jacfwd`` of the operator and ``C``
is factored once (Cholesky), so this suits ``m`` up to a few thousand measurements.

**The sigma -> 0 limits** (SCIENCE.md section 4, Thm 6.1), concentrated on ``M``
(``x = Phi(u)``), for any likelihood with potential ``v(x) = -log p(y | x)``:

- generic prior: ``u ~ p(u) exp(-v(Phi(u)))``;
- maximum-entropy prior (the tempered sampler, ``alpha > 0``): ``u ~ sqrt(det J(u)^T J(u))
  exp(-v(Phi(u)))``, the posterior under the uniform (volume) law on ``M``; ``J = dPhi/du``.

Chart constraints: box coordinates (the phantom parameters, the polar angles of a sphere) are
NumPyro ``Uniform`` sites, so NUTS runs in unconstrained (logit) space; periodic coordinates
(the angle of a circle or ellipse, the last angle of a sphere) are unconstrained reals under a
periodic density and are wrapped to ``(-pi, pi]`` afterwards.

Draws are chains first, ``(chains, draws, ...)``: NumPyro's, ArviZ's and bip's convention
(``Run.samples``).

Example:
    >>> circle = bip.manifolds.Circle()
    >>> law = bip.manifolds.VonMises(circle, kappa=4.0, loc=jnp.pi)
    >>> A = bip.operators.coordinate_projection(2, [0])
    >>> lik = bip.likelihoods.gaussian(A, jnp.array([-0.5]), 0.3)
    >>> ref = bip.references.generic_finite_sigma(jax.random.key(0), law, lik, sigma=0.1,
    ...                                            num_chains=4, num_samples=500)
    >>> ref.x.shape, ref.u.shape            # (chains, draws, 2) and (chains, draws, 1)
    ((4, 500, 2), (4, 500, 1))
    >>> ref.diagnostics["rhat_max"] < 1.05
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.diagnostics
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.infer import MCMC, NUTS

from bip import _checks, metrics

Array = jax.Array


class Reference(NamedTuple):
    """Exact reference draws.

    Attributes:
        u: chart coordinates ``(chains, draws, n)`` (periodic ones in ``(-pi, pi]``).
        x: the events ``(chains, draws, *event)``: ``Phi(u)`` for the sigma -> 0 limits,
            ``Phi(u) + sigma z`` (drawn exactly given ``u``) at finite sigma.
        diagnostics: NUTS diagnostics: ``divergences`` (total), ``rhat`` and ``ess`` per chart
            coordinate ``(n,)`` (NumPyro's split R-hat and ESS; periodic coordinates are read
            about their circular mean), ``rhat_max``, ``ess_min``, ``accept_prob`` (mean) and
            ``num_steps`` (mean leapfrog steps per draw).
    """

    u: Array
    x: Array
    diagnostics: dict


# --------------------------------------------------------------------------- charts


@dataclass(frozen=True)
class Chart:
    """A law's chart as the references use it (build it with ``chart_of``).

    Attributes:
        dim: number ``n`` of chart coordinates.
        chart: ``Phi``, one point ``(n,) -> (*event_shape)``.
        log_density: ``log p(u)`` with respect to ``du``, up to a constant, ``(n,) -> ()``.
        lower, upper: the box ``(k,)`` of the ``k`` non-periodic coordinates.
        periodic: which coordinates are angles of period ``2 pi``.
        event_shape: the shape of ``Phi(u)``.
    """

    dim: int
    chart: Callable[[Array], Array]
    log_density: Callable[[Array], Array]
    lower: np.ndarray
    upper: np.ndarray
    periodic: tuple[bool, ...]
    event_shape: tuple[int, ...]

    def log_volume(self, u: Array) -> Array:
        """``log sqrt(det J^T J)``, the volume element of the chart at one point ``(n,)``."""
        jac = jax.jacfwd(lambda w: self.chart(w).reshape(-1))(u)
        return 0.5 * jnp.linalg.slogdet(jac.T @ jac)[1]


def chart_of(law) -> Chart:
    """The ``Chart`` of an exact-chart law: ``VonMises``/``Uniform`` on a ``Circle`` or
    ``Ellipse`` (one periodic angle), ``VonMisesFisher``/``Uniform`` on a ``Sphere``
    (hyperspherical angles: ``dim - 2`` in ``(0, pi)``, the last periodic) or a
    ``bip.images.PhantomLaw`` (the parameter box, uniform) of one ellipse
    (``PhantomManifold``) or of several (``bip.ellipses.MultiEllipseManifold``: the
    ``ellipse-grid`` and ``shepp-logan-family`` data sources).

    Example:
        >>> chart = bip.references.chart_of(bip.images.PhantomLaw(bip.images.PhantomManifold()))
        >>> chart.dim, chart.event_shape
        (6, (32, 32))
    """
    from bip import images, manifolds

    if isinstance(law, images.PhantomLaw):
        m = law.manifold
        lo, hi = (np.asarray(v, float) for v in m.bounds)
        n = m.intrinsic_dim
        return Chart(
            n, m._chart, lambda u: jnp.zeros((), u.dtype), lo, hi, (False,) * n, m.event_shape
        )
    manifold = getattr(law, "manifold", None)
    if isinstance(manifold, manifolds.Circle | manifolds.Ellipse) and hasattr(
        law, "chart_log_density"
    ):
        return Chart(
            1,
            lambda u: manifold.chart(u[0]),
            lambda u: law.chart_log_density(u[0]),
            np.zeros(0),
            np.zeros(0),
            (True,),
            (2,),
        )
    if isinstance(manifold, manifolds.Sphere) and isinstance(
        law, manifolds.VonMisesFisher | manifolds.Uniform
    ):
        n = manifold.dim - 1
        kappa = getattr(law, "kappa", 0.0)
        mu = getattr(law, "mean_direction", jnp.zeros(manifold.dim))

        def log_density(u):  # vMF (or uniform) w.r.t. area, times the area element
            x = manifold.chart(u)
            volume = jnp.sum(jnp.arange(n - 1, 0, -1) * jnp.log(jnp.abs(jnp.sin(u[:-1]))))
            return kappa * jnp.dot(mu, x) / manifold.radius + volume

        return Chart(
            n,
            manifold.chart,
            log_density,
            np.zeros(n - 1),
            np.full(n - 1, math.pi),
            (False,) * (n - 1) + (True,),
            (manifold.dim,),
        )
    raise TypeError(
        "references need an exact-chart law: bip.manifolds.VonMises / Uniform on a Circle or "
        "Ellipse, VonMisesFisher / Uniform on a Sphere, or bip.images.PhantomLaw; got "
        f"{type(law).__name__}"
    )


def _check_likelihood(likelihood, chart: Chart):
    if likelihood is None:
        return
    if tuple(likelihood.event_shape) != tuple(chart.event_shape):
        raise ValueError(
            f"the likelihood's operator takes inputs of shape {tuple(likelihood.event_shape)} "
            f"but the law's events have shape {tuple(chart.event_shape)}"
        )


# --------------------------------------------------------------------------- NUTS


def _model(chart: Chart, log_target: Callable[[Array], Array]):
    box = [i for i, p in enumerate(chart.periodic) if not p]
    angles = [i for i, p in enumerate(chart.periodic) if p]
    dtype = jnp.result_type(float)
    parts = []
    if box:
        lo, hi = jnp.asarray(chart.lower, dtype), jnp.asarray(chart.upper, dtype)
        parts.append(numpyro.sample("u_box", dist.Uniform(lo, hi).to_event(1)))
    if angles:
        improper = dist.ImproperUniform(constraints.real, (), (len(angles),))
        parts.append(numpyro.sample("u_periodic", improper))
    order = np.argsort(np.asarray(box + angles))
    u = jnp.concatenate(parts)[order]
    numpyro.factor("log_target", log_target(u))


def _wrap(angle):
    return jnp.angle(jnp.exp(1j * angle))


def _draw_coordinates(rng_key, chart, log_target, settings) -> tuple[Array, dict]:
    """NUTS on ``log_target`` over the chart: ``u (chains, draws, n)`` and diagnostics."""
    kernel = NUTS(
        _model,
        dense_mass=settings["dense_mass"],
        target_accept_prob=settings["target_accept_prob"],
    )
    mcmc = MCMC(
        kernel,
        num_warmup=settings["num_warmup"],
        num_samples=settings["num_samples"],
        num_chains=settings["num_chains"],
        thinning=settings["thin"],
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(rng_key, chart, log_target, extra_fields=("diverging", "accept_prob", "num_steps"))
    draws = mcmc.get_samples(group_by_chain=True)
    box = [i for i, p in enumerate(chart.periodic) if not p]
    angles = [i for i, p in enumerate(chart.periodic) if p]
    parts = []
    if box:
        parts.append(draws["u_box"])
    if angles:
        parts.append(_wrap(draws["u_periodic"]))
    u = jnp.concatenate(parts, axis=-1)[..., np.argsort(np.asarray(box + angles))]
    extra = mcmc.get_extra_fields(group_by_chain=True)
    return u, _diagnostics(u, chart, extra)


def _diagnostics(u: Array, chart: Chart, extra: dict) -> dict:
    values = np.array(u, float)
    for i, periodic in enumerate(chart.periodic):
        if periodic:  # read the angle about its circular mean, away from the cut at +-pi
            centre = np.angle(np.mean(np.exp(1j * values[..., i])))
            values[..., i] = centre + np.angle(np.exp(1j * (values[..., i] - centre)))
    rhat = ess = np.full(chart.dim, np.nan)
    if values.shape[1] >= 4:
        rhat = numpyro.diagnostics.split_gelman_rubin(values)
        ess = numpyro.diagnostics.effective_sample_size(values)
    return {
        "divergences": int(np.sum(np.asarray(extra["diverging"]))),
        "rhat": np.asarray(rhat),
        "ess": np.asarray(ess),
        "rhat_max": float(np.max(rhat)),
        "ess_min": float(np.min(ess)),
        "accept_prob": float(np.mean(np.asarray(extra["accept_prob"]))),
        "num_steps": float(np.mean(np.asarray(extra["num_steps"]))),
    }


def _settings(
    num_chains: int = 4,
    num_samples: int = 1000,
    num_warmup: int | None = None,
    thin: int = 1,
    dense_mass: bool = True,
    target_accept_prob: float = 0.8,
) -> dict:
    """Checked NUTS settings (the ``**nuts`` keywords of the reference functions)."""
    num_chains = _checks.integer("num_chains", num_chains)
    num_samples = _checks.integer("num_samples", num_samples)
    thin = _checks.integer("thin", thin)
    num_warmup = num_samples if num_warmup is None else num_warmup
    num_warmup = _checks.integer("num_warmup", num_warmup, minimum=0)
    if not 0 < target_accept_prob < 1:
        raise ValueError(f"target_accept_prob must lie in (0, 1), got {target_accept_prob!r}")
    return {
        "num_chains": num_chains,
        "num_samples": num_samples * thin,
        "num_warmup": num_warmup,
        "thin": thin,
        "dense_mass": bool(dense_mass),
        "target_accept_prob": float(target_accept_prob),
    }


def _raw_key(rng_key):
    if jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(rng_key)
    return rng_key


# --------------------------------------------------------------------------- references


def _linear_gaussian(likelihood):
    """The likelihood's linear operator, refusing what the finite-sigma reference cannot do."""
    from bip.likelihoods import _gaussian_log_prob

    if likelihood is None or likelihood.log_prob_fn is not _gaussian_log_prob:
        raise ValueError(
            "the finite-sigma reference needs a Gaussian likelihood (bip.likelihoods.gaussian)"
        )
    op = likelihood.operator
    if not getattr(op, "linear", False):
        raise ValueError(f"the finite-sigma reference needs a linear operator, got {op.name!r}")
    return op


def check_finite_sigma_memory(operator, available: int | None = None) -> int:
    """Refuse, before any compute, a finite-sigma reference that would not fit in memory.

    ``generic_finite_sigma`` holds the operator's matrix ``(m, d)`` (``m`` measurements,
    ``d`` pixels) and its whitened copy, the ``(m, m)`` covariance ``C``, its Cholesky factor
    and the ``min(m, d)``-square basis that forms the matrix (reverse mode when ``m <= d``):
    ``(2 m d + 2 m^2 + min(m, d)^2) x 8`` bytes in float64 (16x16 CT with 8 views: 0.9 MB;
    32x32 with 16 views: 15 MB; 128x128 with 30 views: 1.4 GB; 256x256 with 60 views: 22 GB).

    Args:
        operator: the likelihood's linear operator (``bip.operators``).
        available: bytes of memory (default ``bip.memory.available_memory()``).

    Returns:
        The estimate in bytes.

    Raises:
        bip.memory.MemoryBudgetError: the estimate exceeds ``available``; the message names
            the matrix sizes and the ways out (a smaller problem, or the maximum-entropy
            posterior, whose reference needs no matrix).

    Example:
        >>> bip.references.check_finite_sigma_memory(bip.operators.radon(32, angles)) / 1e6
    """
    from bip import memory

    m = int(np.prod(operator.output_shape))
    d = int(np.prod(operator.input_shape))
    itemsize = jnp.dtype(jnp.result_type(float)).itemsize
    estimate = (2 * m * d + 2 * m * m + min(m, d) ** 2) * itemsize
    available = memory.available_memory() if available is None else int(available)
    if available is not None and estimate > available:
        raise memory.MemoryBudgetError(
            f"the exact finite-sigma reference needs the operator's ({m}, {d}) matrix and the "
            f"({m}, {m}) noise covariance, about {estimate / 1e9:.1f} GB, but "
            f"{available / 1e9:.1f} GB of memory is available: check a smaller problem (fewer "
            "pixels or measurements, e.g. data.size = 32) or the maximum-entropy posterior "
            "(prior.kind = 'maxent'), whose sigma -> 0 reference needs no matrix"
        )
    return estimate


def _gaussian_parts(likelihood, chart: Chart, sigma: float):
    """``(W, w0, L)``: the whitened operator ``W = L^-1 M`` ``(m, d)`` and observation
    ``w0 = L^-1 y`` ``(m,)``, with ``M`` the operator's matrix and ``L`` the Cholesky factor of
    ``C = diag(s^2) + sigma^2 M M^T``, so that ``log N(y; M phi, C) = -|w0 - W phi|^2 / 2``
    up to a constant (one matrix product per evaluation, no triangular solve). ``M`` comes
    from reverse mode (``m`` pullbacks) when ``m <= d``, else forward mode (``d`` pushes)."""
    op = _linear_gaussian(likelihood)
    check_finite_sigma_memory(op)
    y = jnp.ravel(likelihood.y)
    d = int(np.prod(chart.event_shape))
    zero = jnp.zeros(chart.event_shape, y.dtype)
    jacobian = jax.jacrev if y.size <= d else jax.jacfwd
    matrix = jacobian(lambda x: jnp.ravel(op(x)))(zero).reshape(y.size, d)
    noise_std = jnp.ravel(likelihood.params)
    chol = jnp.linalg.cholesky(jnp.diag(noise_std**2) + sigma**2 * matrix @ matrix.T)
    solve_lower = jax.scipy.linalg.solve_triangular
    return solve_lower(chol, matrix, lower=True), solve_lower(chol, y, lower=True), noise_std, chol


def generic_finite_sigma(
    rng_key: Array,
    law,
    likelihood,
    sigma: float,
    **nuts: Any,
) -> Reference:
    """The exact generic posterior at finite sigma, ``p_sigma(x) p(y | x)``, for a linear
    Gaussian likelihood: ``u | y`` by NUTS, then ``x | u, y`` exactly (module docstring).

    Args:
        rng_key: PRNG key.
        law: an exact-chart law (see ``chart_of``).
        likelihood: ``bip.likelihoods.gaussian`` with a linear operator.
        sigma: the prior's noise level ``> 0``.
        nuts: NUTS settings, all optional: ``num_chains`` (4, vectorized), ``num_samples``
            (1000 kept draws per chain), ``num_warmup`` (adaptation steps, default
            ``num_samples``), ``thin`` (1: keep every ``thin``-th draw), ``dense_mass`` (True)
            and ``target_accept_prob`` (0.8).

    Returns:
        ``Reference`` with ``u (chains, draws, n)`` and ``x (chains, draws, *event)``.

    Example:
        >>> ref = bip.references.generic_finite_sigma(key, law, lik, 0.05, num_chains=4)
        >>> ref.x.mean(axis=(0, 1))            # the exact posterior mean
    """
    _checks.positive("sigma", sigma)
    settings = _settings(**nuts)
    chart = chart_of(law)
    _check_likelihood(likelihood, chart)
    sigma = float(sigma)
    whitened, w0, noise_std, chol = _gaussian_parts(likelihood, chart, sigma)

    def log_target(u):
        w = w0 - whitened @ chart.chart(u).reshape(-1)
        return chart.log_density(u) - 0.5 * jnp.dot(w, w)

    k_u, k_x = jax.random.split(rng_key)
    u, diagnostics = _draw_coordinates(_raw_key(k_u), chart, log_target, settings)
    x = _conditional_images(k_x, chart, u, whitened, w0, noise_std, chol, sigma)
    return Reference(u, x, diagnostics)


@jax.jit
def _matheron(key, phi, whitened, w0, noise_std, chol, sigma):
    """Exact draws of ``x | u, y`` for flat chart images ``phi (k, d)`` (Matheron's rule in
    whitened form: ``sigma^2 A^T C^-1 v = sigma^2 W^T L^-1 v``)."""
    k_z, k_e = jax.random.split(key)
    z0 = jax.random.normal(k_z, phi.shape, phi.dtype)
    e0 = noise_std[None, :] * jax.random.normal(k_e, (phi.shape[0], w0.size), phi.dtype)
    e0_white = jax.scipy.linalg.solve_triangular(chol, e0.T, lower=True).T
    # L^-1 (r - sigma A z0 - e0)
    innovation = w0[None, :] - (phi + sigma * z0) @ whitened.T - e0_white
    return phi + sigma * z0 + sigma**2 * innovation @ whitened


def _conditional_images(key, chart, u, whitened, w0, noise_std, chol, sigma):
    flat_u = u.reshape((-1, chart.dim))
    phi = jax.vmap(chart.chart)(flat_u).reshape(flat_u.shape[0], -1)
    x = _matheron(key, phi, whitened, w0, noise_std, chol, jnp.asarray(sigma, phi.dtype))
    return x.reshape(u.shape[:2] + tuple(chart.event_shape))


def _limit(rng_key, law, likelihood, maxent: bool, settings) -> Reference:
    chart = chart_of(law)
    _check_likelihood(likelihood, chart)

    def log_target(u):
        out = chart.log_volume(u) if maxent else chart.log_density(u)
        if likelihood is not None:
            out = out - likelihood.potential(chart.chart(u))
        return out

    u, diagnostics = _draw_coordinates(_raw_key(rng_key), chart, log_target, settings)
    x = jax.vmap(jax.vmap(chart.chart))(u)
    return Reference(u, x, diagnostics)


def generic_limit(
    rng_key: Array,
    law,
    likelihood=None,
    **nuts: Any,
) -> Reference:
    """The sigma -> 0 limit of the generic posterior: ``u ~ p(u) exp(-v(Phi(u)))`` (NUTS),
    ``x = Phi(u)``. Any likelihood (or None: the prior itself). ``nuts``: as in
    ``generic_finite_sigma``.

    Example:
        >>> ref = bip.references.generic_limit(key, law, lik, num_chains=4)
        >>> ref.u.shape                       # (4, 1000, n)
    """
    settings = _settings(**nuts)
    return _limit(rng_key, law, likelihood, False, settings)


def maxent_limit(
    rng_key: Array,
    law,
    likelihood=None,
    **nuts: Any,
) -> Reference:
    """The sigma -> 0 limit of the maximum-entropy posterior (Thm 6.1): ``u ~ sqrt(det J^T J)
    exp(-v(Phi(u)))`` on the law's chart domain (NUTS), ``x = Phi(u)``; only the law's
    manifold and chart domain matter. ``nuts``: as in ``generic_finite_sigma``.

    Example:
        >>> ref = bip.references.maxent_limit(key, law, lik, num_chains=4)
    """
    settings = _settings(**nuts)
    return _limit(rng_key, law, likelihood, True, settings)


# --------------------------------------------------------------------------- checks


def chain_energy_distance(x, y) -> tuple[float, float]:
    """Energy distance between two sets of chains, unbiased however correlated each chain's
    draws are, and its standard error.

    ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` with every pair of ``X - Y`` and, for ``E|X - X'|``
    and ``E|Y - Y'|``, only the pairs of draws from different chains: for independent chains
    at stationarity every term is then unbiased. The V-statistic
    (``bip.metrics.energy_distance``) counts the zero self-distances and the close pairs of
    one chain as independent, which raises it by about ``E|X - X'| / ESS`` (on AR(1)
    chains with lag-1 correlation 0.95, 48 chains x 20 draws: 0.018 where the law is the same,
    tests/test_references.py). Zero in expectation when the laws agree, so it can be
    negative. The standard error is the delete-one-chain jackknife over the chains of ``x``
    and of ``y``, added in quadrature.

    Args:
        x, y: chains first, ``(chains, draws, n)`` each, at least 3 chains each (any numbers
            of draws; independent draws can be split into chains, ``(10, m // 10, n)``).

    Returns:
        ``(distance, standard_error)``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> d, se = bip.references.chain_energy_distance(
        ...     rng.normal(size=(8, 50, 2)), rng.normal(size=(8, 50, 2)))
        >>> abs(d) < 3 * se
        True
    """
    from scipy.spatial.distance import cdist

    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.ndim != 3 or y.ndim != 3 or x.shape[2] != y.shape[2] or min(x.shape[0], y.shape[0]) < 3:
        raise ValueError(
            f"x and y must be (chains >= 3, draws, n) with the same n, got {x.shape} and {y.shape}"
        )
    _checks.finite("x", x)
    _checks.finite("y", y)

    def block_sums(a, b):  # (chains of a, chains of b): sums of the pair distances
        d = cdist(a.reshape(-1, a.shape[2]), b.reshape(-1, b.shape[2]))
        return d.reshape(a.shape[0], a.shape[1], b.shape[0], b.shape[1]).sum(axis=(1, 3))

    xy, xx, yy = block_sums(x, y), block_sums(x, x), block_sums(y, y)

    def within(sums, keep, draws):
        sub = sums[np.ix_(keep, keep)]
        n = keep.sum()
        return (sub.sum() - np.trace(sub)) / (n * (n - 1) * draws**2)

    def value(keep_x, keep_y):
        cross = xy[np.ix_(keep_x, keep_y)].sum() / (keep_x.sum() * keep_y.sum())
        cross /= x.shape[1] * y.shape[1]
        return 2 * cross - within(xx, keep_x, x.shape[1]) - within(yy, keep_y, y.shape[1])

    all_x, all_y = np.ones(x.shape[0], bool), np.ones(y.shape[0], bool)
    variance = 0.0
    for count, left_out in (
        (x.shape[0], lambda keep: value(keep, all_y)),
        (y.shape[0], lambda keep: value(all_x, keep)),
    ):
        loo = np.array([left_out(np.arange(count) != i) for i in range(count)])
        variance += (count - 1) / count * np.sum((loo - loo.mean()) ** 2)
    return float(value(all_x, all_y)), float(np.sqrt(variance))


SPLITS = 4
"""``compare`` averages its energy distances over this many random splits of the reference."""


def compare(rng_key: Array, samples: Array, reference: Reference) -> dict:
    """How far sampler draws are from an exact reference, in units of Monte Carlo noise.

    Args:
        rng_key: PRNG key (which reference draws form the two comparison sets).
        samples: a sampler's draws ``(chains, draws, *event)`` (``Run.samples``' layout).
        reference: a ``Reference`` with at least twice as many draws as ``samples`` (thin it
            so that its draws are nearly independent: the floor assumes so).

    Returns:
        A dict: ``energy_distance`` between the ``N`` samples and ``N`` reference draws,
        ``floor`` (the same between two disjoint sets of ``N`` reference draws), each the mean
        over ``SPLITS`` random splits of the reference draws (a single split's floor is
        noisy), and their
        ``ratio``; per coordinate, the mean difference ``z`` in units of its Monte Carlo
        standard error ``sqrt(se_samples^2 + se_reference^2)`` (each ``std / sqrt(ESS)``,
        NumPyro's ESS over chains): ``fraction_within_3se``, ``max_abs_z``; and
        ``std_ratio_median``, the median over coordinates of the ratio of standard deviations.

    Example:
        >>> out = bip.references.compare(key, run.samples, ref)
        >>> out["ratio"] < 2 and out["fraction_within_3se"] >= 0.99
    """
    draws = np.asarray(samples, float)
    k = len(reference.x.shape) - 2
    if draws.ndim != k + 2 or draws.shape[2:] != tuple(reference.x.shape[2:]):
        raise ValueError(
            f"samples must be (chains, draws, *{tuple(reference.x.shape[2:])}), got {draws.shape}"
        )
    _checks.finite("samples", draws)
    flat_draws = draws.reshape(draws.shape[:2] + (-1,))
    ref = np.asarray(reference.x, float).reshape(reference.x.shape[:2] + (-1,))
    flat_ref = ref.reshape(-1, ref.shape[-1])
    n = flat_draws.shape[0] * flat_draws.shape[1]
    if flat_ref.shape[0] < 2 * n:
        raise ValueError(
            f"the reference has {flat_ref.shape[0]} draws; comparing {n} samples needs {2 * n}"
        )
    flat = flat_draws.reshape(n, -1)
    distance = floor = 0.0
    for key in jax.random.split(rng_key, SPLITS):  # average over splits: a steadier ratio
        order = np.asarray(jax.random.permutation(key, flat_ref.shape[0]))
        set_a, set_b = flat_ref[order[:n]], flat_ref[order[n : 2 * n]]
        distance += metrics.energy_distance(flat, set_a) / SPLITS
        floor += metrics.energy_distance(set_a, set_b) / SPLITS

    z, std_ratio = mean_z_and_std_ratio(flat_draws, ref)
    return {
        "energy_distance": distance,
        "floor": floor,
        "ratio": distance / floor,
        "num_draws": n,
        "fraction_within_3se": float(np.mean(np.abs(z) < 3.0)),
        "max_abs_z": float(np.max(np.abs(z))),
        "std_ratio_median": float(np.median(std_ratio)),
    }


def mean_z_and_std_ratio(draws: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate mean difference in Monte Carlo units, and std ratio, of two draw sets.

    Args:
        draws, reference: chains first, ``(chains, draws, k)`` each (any numbers of chains
            and draws).

    Returns:
        ``z (k,)``: ``(mean - mean_ref) / sqrt(se^2 + se_ref^2)``, each standard error
        ``std / sqrt(ESS)`` with NumPyro's ESS over chains (clipped to ``[1, draws]``); and
        ``std / std_ref (k,)``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> z, ratio = bip.references.mean_z_and_std_ratio(
        ...     rng.normal(size=(4, 500, 3)), rng.normal(size=(4, 500, 3)))
        >>> bool(np.all(np.abs(z) < 4)), bool(np.all(abs(ratio - 1) < 0.1))
        (True, True)
    """

    def moments(x):
        x = np.asarray(x, float)
        ess = np.asarray(numpyro.diagnostics.effective_sample_size(x), float)
        ess = np.clip(np.nan_to_num(ess, nan=1.0), 1.0, x.shape[0] * x.shape[1])
        std = x.std(axis=(0, 1))
        return x.mean(axis=(0, 1)), std / np.sqrt(ess), std

    mean_s, se_s, std_s = moments(draws)
    mean_r, se_r, std_r = moments(reference)
    z = (mean_s - mean_r) / np.sqrt(se_s**2 + se_r**2 + 1e-300)
    return z, std_s / np.maximum(std_r, 1e-300)
