"""Posterior drifts: prior score (tempered or not) + likelihood score, and their sampling.

The drift composes like optax transforms (SCIENCE.md section 4):

- generic prior (plug-and-play Langevin, eq. 4): ``s_hat(x, sigma) - grad v(x)``;
- maximum-entropy prior (eq. 10): ``sigma^alpha s_hat(x, sigma) - grad v(x)``.

``sample`` runs many chains of ULA (or MALA where the prior has a log density) with the
step rule ``h = c * min(sigma^(2 - alpha), 1 / L)``, ``L`` the likelihood's Lipschitz
constant; ``sample_annealed`` first lowers sigma along a schedule.

Example:
    >>> prior = bip.priors.exact(bip.manifolds.VonMises(bip.manifolds.Circle(), 4.0, jnp.pi))
    >>> A = bip.operators.coordinate_projection(2, [0])
    >>> lik = bip.likelihoods.gaussian(A, jnp.array([-0.5]), 0.3)
    >>> run = bip.posteriors.sample(jax.random.key(0), prior, lik, sigma=0.1, alpha=1.0,
    ...                             num_chains=1000, num_steps=2000, thin=100)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.tree_util import Partial

from bip import _checks, samplers
from bip.likelihoods import Likelihood
from bip.priors import ScorePrior, check_sigma, tempered

Array = jax.Array


def _check_compatible(prior: ScorePrior, likelihood) -> None:
    if likelihood is not None and tuple(likelihood.event_shape) != tuple(prior.event_shape):
        raise ValueError(
            f"the likelihood's operator takes inputs of shape {tuple(likelihood.event_shape)} "
            f"but the prior's events have shape {tuple(prior.event_shape)}"
        )


@struct.dataclass
class _TemperedPosterior:
    prior: ScorePrior
    likelihood: Likelihood | None
    sigma: Array
    alpha: Array


@struct.dataclass
class Drift(_TemperedPosterior):
    """The posterior drift ``x -> sigma^alpha s(x, sigma) - grad v(x)`` for ONE event
    ``(*event) -> (*event)``, as an immutable pytree: the prior's and the likelihood's arrays,
    ``sigma`` and ``alpha`` are leaves, so a jitted sampler (``bip.samplers.run``) compiles
    once for all their values. Build it with ``drift(...)``.

    Example:
        >>> fn = bip.posteriors.drift(prior, lik, sigma=0.1, alpha=1.0)
        >>> fn(jnp.array([0.0, 1.0])).shape
        (2,)
        >>> other = bip.posteriors.drift(prior, lik, sigma=0.05, alpha=0.5)  # same structure
    """

    def __call__(self, x: Array) -> Array:
        out = tempered(self.prior, self.alpha).score(x, self.sigma)
        if self.likelihood is not None:
            out = out - self.likelihood.grad_potential(x)
        return out


@struct.dataclass
class LogDensity(_TemperedPosterior):
    """The posterior log density ``x -> sigma^alpha log p_sigma(x) - v(x)`` for ONE event
    ``(*event) -> ()``, a pytree like ``Drift``. Build it with ``logdensity(...)``.

    Example:
        >>> fn = bip.posteriors.logdensity(prior, lik, sigma=0.1, alpha=1.0)
        >>> fn(jnp.array([0.0, 1.0])).shape
        ()
    """

    def __call__(self, x: Array) -> Array:
        out = tempered(self.prior, self.alpha).logdensity(x, self.sigma)
        if self.likelihood is not None:
            out = out - self.likelihood.potential(x)
        return out


def _posterior_fields(prior: ScorePrior, likelihood, sigma, alpha, allow_extrapolation) -> dict:
    """Checked fields of a ``Drift``/``LogDensity``. The likelihood's ``lipschitz`` (a static
    field that only the step rule reads) is dropped, so another noise level keeps the
    structure; ``sigma`` and ``alpha`` become float arrays (leaves). A sigma outside a learned
    prior's trained range is refused unless ``allow_extrapolation``."""
    _checks.positive("sigma", sigma)
    check_sigma(prior, sigma, allow_extrapolation=allow_extrapolation)
    _checks.alpha(alpha)
    _check_compatible(prior, likelihood)
    if isinstance(likelihood, Likelihood) and likelihood.lipschitz is not None:
        likelihood = likelihood.replace(lipschitz=None)
    dtype = jnp.result_type(float)
    return {
        "prior": prior,
        "likelihood": likelihood,
        "sigma": jnp.asarray(sigma, dtype),
        "alpha": jnp.asarray(alpha, dtype),
    }


def drift(
    prior: ScorePrior, likelihood=None, *, sigma, alpha=0.0, allow_extrapolation: bool = False
) -> Drift:
    """The posterior drift ``x -> sigma^alpha s(x, sigma) - grad v(x)`` for ONE event
    (a ``Drift`` pytree). A sigma outside a learned prior's ``sigma_range`` is a
    ``ValueError`` unless ``allow_extrapolation=True``."""
    return Drift(**_posterior_fields(prior, likelihood, sigma, alpha, allow_extrapolation))


def logdensity(
    prior: ScorePrior, likelihood=None, *, sigma, alpha=0.0, allow_extrapolation: bool = False
) -> LogDensity:
    """``x -> sigma^alpha log p_sigma(x) - v(x)`` (needs a prior with a log density; a
    ``LogDensity`` pytree)."""
    fields = _posterior_fields(prior, likelihood, sigma, alpha, allow_extrapolation)
    if not prior.has_logdensity:
        raise ValueError(f"prior {prior.name!r} has no log density: use method='ula'")
    return LogDensity(**fields)


def _lipschitz(likelihood) -> float | None:
    """The likelihood's Lipschitz constant ``L`` (None: unknown, or no likelihood)."""
    return getattr(likelihood, "lipschitz", None) if likelihood is not None else None


def step_size(sigma, alpha=0.0, likelihood=None, c: float = 0.1):
    """The step rule's step size ``c * min(sigma^(2 - alpha), 1 / L)`` with ``L`` the
    likelihood's Lipschitz constant and ``c`` the step factor.

    Example:
        >>> float(bip.posteriors.step_size(0.1, alpha=1.0, c=0.2))
        0.020000000000000004
    """
    return samplers.default_step_size(sigma, alpha, c=c, lipschitz=_lipschitz(likelihood))


def _refuse_step(run_kwargs: dict) -> None:
    """A clear error for the argument ``step``, renamed ``step_size`` (issue 14)."""
    if "step" in run_kwargs:
        raise TypeError("the absolute step is called step_size (step was renamed; see CHANGELOG)")


def sample(
    rng_key: Array,
    prior: ScorePrior,
    likelihood=None,
    *,
    sigma: float,
    alpha: float = 0.0,
    num_chains: int = 1000,
    num_steps: int = 1000,
    initial_positions: Array | None = None,
    method: str = "ula",
    step_size: float | None = None,
    c: float = 0.1,
    allow_extrapolation: bool = False,
    **run_kwargs,
) -> samplers.Run:
    """Sample the posterior (or the prior alone when ``likelihood`` is None).

    Args:
        rng_key: PRNG key.
        prior: the (possibly corrupted) score prior; ``alpha > 0`` tempers it.
        likelihood: a ``bip.likelihoods.Likelihood`` or None.
        sigma: noise level of the score. alpha: tempering exponent in [0, 2).
        num_chains, num_steps: chains run in parallel and steps per chain.
        initial_positions: ``(num_chains, *event)``; default: the manifold's uniform law
            when known, else standard normal.
        method: ``"ula"`` (score only) or ``"mala"`` (needs a log density).
        step_size: the absolute step ``h``; default the step rule ``c * min(sigma^(2 -
            alpha), 1 / L)`` (``bip.posteriors.step_size``).
        c: the step rule's step factor (used when ``step_size`` is None).
        allow_extrapolation: sample at a sigma outside the learned prior's ``sigma_range``
            (by default a ``ValueError`` naming the range: the score there is untrained).
        run_kwargs: passed to ``bip.samplers.run`` (thin, burn_in, observe, progress, ...).

    Returns:
        A ``bip.samplers.Run``; ``samples`` is ``(num_chains, num_steps // thin, *event)``
        (chains first), chain ``i`` driven by the keys ``bip.chains.run`` folds for it.

    The drift is a pytree (``Drift``), so repeated calls with the same structure and settings
    run ONE compiled chain: new values of ``y``, the noise level, ``sigma``, ``alpha``,
    ``step_size``, error sizes, network weights, the key or the start do not retrace.

    Example:
        >>> run = bip.posteriors.sample(jax.random.key(0), prior, lik, sigma=0.1,
        ...                             num_chains=3, num_steps=50, thin=10)
        >>> run.samples.shape                  # (chains, draws, *event)
        (3, 5, 2)
    """
    _refuse_step(run_kwargs)
    num_chains = _checks.integer("num_chains", num_chains)
    if step_size is None:
        step_size = samplers.default_step_size(sigma, alpha, c=c, lipschitz=_lipschitz(likelihood))
    fields = dict(sigma=sigma, alpha=alpha, allow_extrapolation=allow_extrapolation)
    if method == "ula":
        algo = samplers.ula(drift(prior, likelihood, **fields), step_size)
    elif method == "mala":
        algo = samplers.mala(logdensity(prior, likelihood, **fields), step_size)
    else:
        raise ValueError(f"method must be 'ula' or 'mala', got {method!r}")
    if initial_positions is None:
        k_init, rng_key = jax.random.split(rng_key)
        initial_positions = default_initial_positions(k_init, prior, num_chains)
    x0 = _initial_positions(None, prior, num_chains, initial_positions)
    return samplers.run(rng_key, algo, x0, num_steps, **run_kwargs)


def _initial_positions(rng_key, prior: ScorePrior, num_chains: int, initial_positions):
    """``initial_positions`` checked to be ``(num_chains, *event)``, or the default start."""
    if initial_positions is None:
        return default_initial_positions(rng_key, prior, num_chains)
    if tuple(jnp.shape(initial_positions)) != (num_chains,) + tuple(prior.event_shape):
        raise ValueError(
            f"initial_positions must have shape {(num_chains,) + tuple(prior.event_shape)}, "
            f"got {tuple(jnp.shape(initial_positions))}"
        )
    return jnp.asarray(initial_positions)


def spread(sigma: float, alpha: float = 0.0) -> float:
    """``sigma^(1 - alpha/2)``: the normal spread of the tempered law ``p_sigma^(sigma^alpha)``
    about the manifold, per ambient direction (SCIENCE.md section 3)."""
    _checks.positive("sigma", sigma)
    _checks.alpha(alpha)
    return float(sigma) ** (1.0 - float(alpha) / 2.0)


DENOISE_BATCH = 8
"""Events per score call in ``denoise``: memory ``O(DENOISE_BATCH x event)`` whatever the
leading shape (an exact-chart score of one chain's 60 draws at 128x128 at once did not finish
in 400 s where 240 single draws took 31 CPU-s)."""


@jax.jit
def _tweedie(prior: ScorePrior, x: Array, sigma: Array) -> Array:
    event = x.shape[x.ndim - len(prior.event_shape) :]
    flat = x.reshape((-1,) + tuple(event))
    out = jax.lax.map(
        lambda xi: xi + sigma**2 * prior.score(xi, sigma), flat, batch_size=DENOISE_BATCH
    )
    return out.reshape(x.shape)


def denoise(prior: ScorePrior, samples: Array, sigma: float) -> Array:
    """Tweedie's denoiser ``x + sigma^2 s(x, sigma)`` (the prior's ``E[x_0 | x]`` at level
    ``sigma``) applied to ``samples`` ``(num, *batch, *event)`` (``run.samples``
    ``(chains, draws, *event)``; a batch of events ``x``: ``denoise(prior, x[None],
    sigma)[0]``), ``DENOISE_BATCH`` events per score call. bip's one Tweedie step.

    For the draws of a tempered posterior use ``sigma = spread(sigma, alpha)``: it maps points
    sitting ``sigma^(1 - alpha/2)`` off the manifold back onto it (``bip solve`` reports the
    PSNR of this "denoised" mean beside the raw one).

    Example:
        >>> clean = bip.posteriors.denoise(prior, run.samples, bip.posteriors.spread(0.05, 1.0))
    """
    _checks.positive("sigma", sigma)
    x = jnp.asarray(samples)
    k = len(prior.event_shape)
    if x.ndim < k + 1 or tuple(x.shape[x.ndim - k :]) != tuple(prior.event_shape):
        raise ValueError(
            f"samples must be (num, ..., *{tuple(prior.event_shape)}), got {tuple(x.shape)}"
        )
    return _tweedie(prior, x, jnp.asarray(sigma, x.dtype))


def default_initial_positions(rng_key: Array, prior: ScorePrior, num_chains: int) -> Array:
    """Uniform draws on the prior's manifold when it has one, else ``N(0, I)`` events."""
    if prior.manifold is not None and hasattr(prior.manifold, "sample_uniform"):
        return prior.manifold.sample_uniform(rng_key, (num_chains,))
    return jax.random.normal(rng_key, (num_chains,) + tuple(prior.event_shape))


def _anneal_step(target: Drift, sigmas, c, lipschitz, steps_per_level, step_index):
    """The ULA algorithm of annealing step ``step_index``: ``target`` at level
    ``sigmas[step_index // steps_per_level]`` (the last level from then on), step size
    ``step_rule(sigma, alpha, c, lipschitz)``."""
    level = jnp.minimum(step_index // steps_per_level, sigmas.shape[0] - 1)
    sigma = sigmas[level]
    h = samplers.step_rule(sigma, target.alpha, c, lipschitz)
    return samplers.ula(target.replace(sigma=sigma), h)


def sample_annealed(
    rng_key: Array,
    prior: ScorePrior,
    likelihood=None,
    *,
    sigmas: Array,
    alpha: float = 0.0,
    steps_per_level: int = 100,
    num_chains: int = 1000,
    num_steps: int = 1000,
    c: float = 0.1,
    initial_positions: Array | None = None,
    allow_extrapolation: bool = False,
    **run_kwargs,
) -> samplers.Run:
    """Annealed Langevin: ``steps_per_level`` ULA steps at each of the decreasing ``sigmas``,
    then ``num_steps`` at ``sigmas[-1]`` whose draws are kept, all in ONE
    ``bip.samplers.run`` (the annealing is its burn-in, a schedule of step sizes ``c *
    min(sigma^(2 - alpha), 1 / L)``). A chain that diverges while annealing is frozen and
    reported by index like any other. Ctrl-C raises ``bip.samplers.Interrupted``: while
    annealing with ``partial=None``, while sampling with the partial ``Run``. Every level
    must lie in a learned prior's ``sigma_range`` unless ``allow_extrapolation=True``.

    Repeated calls with the same structure (prior, likelihood, shapes, number of levels,
    ``steps_per_level``) reuse one compiled loop, whatever ``sigmas``, ``alpha``, ``c``, the
    key or the parameters' values.

    Example:
        >>> run = bip.posteriors.sample_annealed(key, prior, lik, alpha=1.0,
        ...     sigmas=bip.samplers.geometric_sigmas(1.0, 0.1, 10), num_chains=100)
    """
    sigmas = jnp.asarray(sigmas, dtype=jnp.result_type(float))
    _checks.positive("sigmas", sigmas)
    check_sigma(prior, sigmas, allow_extrapolation=allow_extrapolation, name="sigmas")
    steps_per_level = _checks.integer("steps_per_level", steps_per_level)
    num_chains = _checks.integer("num_chains", num_chains)
    _checks.positive("c", c)
    target = drift(
        prior, likelihood, sigma=sigmas[-1], alpha=alpha, allow_extrapolation=allow_extrapolation
    )
    k_init, k_run = jax.random.split(rng_key)
    x0 = _initial_positions(k_init, prior, num_chains, initial_positions)
    schedule = Partial(
        _anneal_step, target, sigmas, float(c), _lipschitz(likelihood), steps_per_level
    )
    annealing = sigmas.shape[0] * steps_per_level
    burn_in = annealing + run_kwargs.pop("burn_in", 0)
    try:
        return samplers.run(k_run, schedule, x0, num_steps, burn_in=burn_in, **run_kwargs)
    except samplers.Interrupted as stop:
        if stop.partial.steps_done:
            raise
        raise samplers.Interrupted(
            f"annealing interrupted ({sigmas.shape[0]} levels of {steps_per_level} steps, then "
            f"{num_steps} steps) before any draw was kept",
            None,
        ) from None


class NoiseLevelRun(NamedTuple):
    """Joint draws, chains first: ``x`` ``(chains, draws, *event)``, noise level
    ``noise_std`` ``(chains, draws)``."""

    x: Array
    noise_std: Array
    run: samplers.Run


def sample_with_noise_level(
    rng_key: Array,
    prior: ScorePrior,
    operator,
    y: Array,
    noise_prior,
    *,
    sigma: float,
    alpha: float = 0.0,
    num_chains: int = 1000,
    num_steps: int = 1000,
    initial_positions: Array | None = None,
    step_size: float | None = None,
    c: float = 0.1,
    allow_extrapolation: bool = False,
    **run_kwargs,
) -> NoiseLevelRun:
    """Sample ``x`` and an unknown Gaussian noise level ``s`` jointly (ULA).

    ``y = A(x) + s z`` with a NumPyro hyperprior ``s ~ noise_prior`` (positive support, e.g.
    ``dist.HalfNormal(0.5)`` or ``dist.LogNormal(...)``). The chain's position is the pytree
    ``(x, log s)``:
    the ``x`` drift is ``sigma^alpha s_hat(x, sigma) + grad_x log p(y | x, s)``, the ``log s``
    drift the gradient of ``log p(y | x, s) + log p(s) + log s`` (autodiff). The default
    ``step_size`` is ``c * min(sigma^(2 - alpha), s_lo^2 / ||A||^2)`` with ``s_lo`` the
    hyperprior's 10% quantile (estimated from 4096 draws). A sigma outside a learned prior's
    ``sigma_range`` is refused unless ``allow_extrapolation=True``.

    Example:
        >>> import numpyro.distributions as dist
        >>> out = bip.posteriors.sample_with_noise_level(key, prior, A, y, dist.HalfNormal(0.5),
        ...                                              sigma=0.1, num_chains=1000)
        >>> out.noise_std.mean()
    """
    from numpyro.distributions import constraints

    from bip.likelihoods import _check_observation

    _refuse_step(run_kwargs)
    y = _check_observation(operator, y)
    if getattr(noise_prior, "support", None) is not constraints.positive:
        raise ValueError("noise_prior must be a NumPyro distribution on (0, inf), e.g. HalfNormal")
    event = tuple(prior.event_shape)
    if tuple(operator.input_shape) != event:
        raise ValueError(
            f"the operator takes inputs of shape {tuple(operator.input_shape)} but the prior's "
            f"events have shape {event}"
        )
    num_chains = _checks.integer("num_chains", num_chains)
    _checks.positive("sigma", sigma)
    check_sigma(prior, sigma, allow_extrapolation=allow_extrapolation)
    target = tempered(prior, alpha)

    def log_joint(x, log_s):
        s = jnp.exp(log_s)
        r = (operator(x) - y) / s
        log_lik = -0.5 * jnp.sum(r**2) - y.size * log_s
        return log_lik + noise_prior.log_prob(s) + log_s

    def drift(position):  # the chain's position is the pytree (x, log s)
        x, log_s = position
        gx, gs = jax.grad(log_joint, argnums=(0, 1))(x, log_s)
        return gx + target.score(x, sigma), gs

    k_lo, k_init, k_run = jax.random.split(rng_key, 3)
    draws = noise_prior.sample(k_lo, (4096,))
    s_lo = float(jnp.quantile(draws, 0.1))
    if step_size is None:
        norm = 1.0
        if getattr(operator, "linear", False):
            from bip.operators import operator_norm

            norm = float(operator_norm(jax.random.key(0), operator))
        step_size = samplers.default_step_size(sigma, alpha, c=c, lipschitz=norm**2 / s_lo**2)
    x0 = _initial_positions(k_init, prior, num_chains, initial_positions)
    log_s0 = jnp.full((num_chains,), jnp.log(jnp.median(draws)), x0.dtype)

    def joint(run: samplers.Run) -> NoiseLevelRun:
        if run.samples is None:  # keep_samples=False: the statistics are in run
            return NoiseLevelRun(None, None, run)
        x, log_s = run.samples
        return NoiseLevelRun(x, np.exp(log_s), run)

    try:
        algo = samplers.ula(drift, step_size)
        run = samplers.run(k_run, algo, (x0, log_s0), num_steps, **run_kwargs)
    except samplers.Interrupted as stop:  # the partial draws, split like a complete result
        raise samplers.Interrupted(str(stop), joint(stop.partial)) from None
    return joint(run)


def marginal_noise_potential(operator, y: Array, noise_prior, num_nodes: int = 400):
    """``v(x) = -log int N(y; A(x), s^2 I) p(s) ds`` by quadrature in ``log s`` (for exact
    references of ``sample_with_noise_level``); batched ``(..., *event) -> (...)``."""
    draws = noise_prior.sample(jax.random.key(0), (4096,))
    lo, hi = jnp.log(jnp.quantile(draws, 1e-4)), jnp.log(jnp.quantile(draws, 1 - 1e-4))
    log_s = jnp.linspace(lo, hi, num_nodes)
    weight = jnp.log(hi - lo) - jnp.log(num_nodes) + noise_prior.log_prob(jnp.exp(log_s)) + log_s
    y = jnp.asarray(y)

    def potential(x):
        pred = operator(x)
        diff = pred - jnp.broadcast_to(y, pred.shape)
        sq = jnp.sum(diff**2, axis=tuple(range(pred.ndim - y.ndim, pred.ndim)))
        scale = jnp.broadcast_to(jnp.exp(2 * log_s), sq.shape + log_s.shape)
        log_lik = -0.5 * sq[..., None] / scale - jnp.broadcast_to(
            y.size * log_s + 0.5 * y.size * jnp.log(2 * jnp.pi), scale.shape
        )
        return -jax.scipy.special.logsumexp(log_lik + jnp.broadcast_to(weight, scale.shape), -1)

    return potential
