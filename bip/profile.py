"""Score-error profiles: how far a (learned) score is from a reference, sigma by sigma.

For each noise level ``sigma`` the error is measured on the noised data law
``x = Phi(u) + sigma z`` (``u ~ data law``, ``z ~ N(0, I)``, variance exploding):

    abs_error(sigma) = sqrt(E |s_hat(x, sigma) - s_ref(x, sigma)|^2)
    rel_error(sigma) = abs_error(sigma) / sqrt(E |s_ref(x, sigma)|^2)

The exponent ``beta`` of ``abs_error ~ sigma^beta`` is fitted by least squares on log-log.
The tempered (maximum-entropy) prior ``sigma^alpha s_hat`` tolerates an error
``o(sigma^beta)`` for ``max(-beta, 0) < alpha < 2`` (SCIENCE.md section 3); this RMS exponent
is the practical proxy for the sup-norm rate of the theorem.

The same draws ``(u, z)`` are used at every sigma (common random numbers), so the fitted
``beta`` is not blurred by sampling noise from one sigma to the next.

Example:
    >>> import bip, bip.profile
    >>> law = bip.manifolds.VonMises(bip.manifolds.Circle(), kappa=1.0)
    >>> exact = bip.priors.exact(law)
    >>> noisy = bip.priors.with_error(exact, bip.errors.rotational(), size=0.1, beta=-1.0)
    >>> prof = bip.profile.score_error_profile(
    ...     jax.random.key(0), noisy, exact, law, jnp.geomspace(0.01, 0.3, 8))
    >>> round(prof["beta"], 1)            # the injected exponent is recovered
    -1.0
    >>> prof["alpha_range"]                # (max(-beta, 0), 2), about (1.0, 2.0)
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bip import _checks, posteriors
from bip.priors import ScorePrior

Array = jax.Array


@jax.jit
def _score(prior: ScorePrior, x: Array, sigma: Array) -> Array:
    # one compiled program per prior structure: two equal priors give bitwise equal scores
    return prior.score_fn(prior.params, x, sigma)


@jax.jit
def _mean_sq(diff: Array) -> Array:  # (N, *event) -> mean over N of the squared norm
    return jnp.mean(jnp.sum(diff**2, axis=tuple(range(1, diff.ndim))))


def fit_exponent(sigmas: Array, errors: Array) -> float:
    """Least-squares slope of ``log(errors)`` on ``log(sigmas)``.

    Zero errors carry no rate information and are left out; if fewer than two errors are
    positive the error is ``o(sigma^b)`` for every ``b`` and the slope is ``inf``.
    """
    sigmas = np.asarray(sigmas, dtype=float)
    errors = np.asarray(errors, dtype=float)
    keep = errors > 0
    if np.count_nonzero(keep) < 2:
        return math.inf
    slope, _ = np.polyfit(np.log(sigmas[keep]), np.log(errors[keep]), 1)
    return float(slope)


def _sigma_grid(sigmas) -> np.ndarray:
    """Noise levels ``(S,)`` as float64 numpy, checked 1-D and positive."""
    sigmas_np = np.atleast_1d(np.asarray(sigmas, dtype=float))
    if sigmas_np.ndim != 1:
        raise ValueError(f"sigmas must be a 1-D array, got shape {sigmas_np.shape}")
    _checks.positive("sigmas", sigmas_np)
    return sigmas_np


def admissible_alpha(beta: float) -> tuple[float, float] | None:
    """The tempering range ``(max(-beta, 0), 2)`` for an error ``~ sigma^beta``; None if empty."""
    low = max(-beta, 0.0)
    return (float(low), 2.0) if low < 2.0 else None


def score_error_profile(
    rng_key: Array,
    prior: ScorePrior,
    reference_prior: ScorePrior,
    data_law: Any,
    sigmas: Array,
    num_samples: int = 4096,
) -> dict[str, Any]:
    """Relative and absolute L2 score error of ``prior`` against ``reference_prior`` per sigma.

    Args:
        rng_key: PRNG key for the draws ``(u, z)``, shared by all sigmas.
        prior: the score to assess (any ``ScorePrior``: a network, an exact prior with an
            injected error ...).
        reference_prior: the reference score, usually ``bip.priors.exact(data_law)``.
        data_law: a law from ``bip.manifolds`` with ``sample(key, shape) -> (*shape, *event)``.
        sigmas: noise levels ``(S,)``, all > 0 (at least two for the fit).
        num_samples: number of points ``x ~ p_sigma`` per sigma.

    Returns:
        A dict with ``sigmas``, ``abs_error``, ``rel_error``, ``ref_norm`` (RMS of the
        reference score), all ``(S,)`` numpy arrays; ``beta`` (float; ``inf`` when the error
        is zero), ``alpha_range`` (``(max(-beta, 0), 2)`` or ``None`` if ``beta <= -2``) and
        ``num_samples``.

    Example:
        >>> prof = score_error_profile(jax.random.key(0), net_prior, bip.priors.exact(law),
        ...                            law, jnp.geomspace(0.01, 1.0, 9))
    """
    if not isinstance(prior, ScorePrior) or not isinstance(reference_prior, ScorePrior):
        raise TypeError("prior and reference_prior must be bip.priors.ScorePrior instances")
    if tuple(prior.event_shape) != tuple(reference_prior.event_shape):
        raise ValueError(
            f"prior has event shape {tuple(prior.event_shape)} but reference_prior has "
            f"{tuple(reference_prior.event_shape)}"
        )
    if not hasattr(data_law, "sample"):
        raise TypeError(f"data_law must have a sample(key, shape) method, got {data_law!r}")
    num_samples = _checks.integer("num_samples", num_samples)
    sigmas_np = _sigma_grid(sigmas)
    dtype = jnp.result_type(float)
    k_data, k_noise = jax.random.split(rng_key)
    x0 = jnp.asarray(data_law.sample(k_data, (num_samples,)), dtype)
    _checks.event_shape("data_law.sample(...)", x0, reference_prior.event_shape)
    z = jax.random.normal(k_noise, x0.shape, dtype)
    abs_sq, ref_sq = [], []
    for sigma in sigmas_np:
        sigma = jnp.asarray(sigma, dtype)
        x = x0 + sigma * z
        s_hat = _score(prior, x, sigma).astype(dtype)
        s_ref = _score(reference_prior, x, sigma).astype(dtype)
        abs_sq.append(float(_mean_sq(s_hat - s_ref)))
        ref_sq.append(float(_mean_sq(s_ref)))
    abs_error = np.sqrt(np.asarray(abs_sq))
    ref_norm = np.sqrt(np.asarray(ref_sq))
    rel_error = abs_error / ref_norm
    beta = fit_exponent(sigmas_np, abs_error)
    return {
        "sigmas": sigmas_np,
        "abs_error": abs_error,
        "rel_error": rel_error,
        "ref_norm": ref_norm,
        "beta": beta,
        "alpha_range": admissible_alpha(beta),
        "num_samples": num_samples,
    }


def _local_draws(data_law: Any, rng_key: Array, num: int) -> tuple[Array, Any]:
    """``num`` data draws and the manifold they lie on: the law's own, or for a law with no
    global manifold (a random number of ellipses) the local chart of the draws
    (``local_manifold``, e.g. ``bip.ellipses.RandomEllipseLaw``)."""
    if getattr(data_law, "manifold", None) is not None:
        return data_law.sample(rng_key, (num,)), data_law.manifold
    if not hasattr(data_law, "local_manifold"):
        raise TypeError(
            f"data_law {data_law!r} has neither a manifold nor local_manifold(key, num): "
            "its intrinsic dimension is unknown"
        )
    return data_law.local_manifold(rng_key, num)


def denoising_error_profile(
    rng_key: Array,
    prior: ScorePrior,
    data_law: Any,
    sigmas: Array,
    num_samples: int = 256,
    batch: int = 32,
) -> dict[str, Any]:
    """The score-error profile of ``prior`` against the exact score of ``data_law``'s
    ``p_sigma``, without that score: from the denoising loss (Tweedie's identity).

    With ``x = x0 + sigma z`` and ``s*`` the exact score of ``p_sigma``,
    ``E[x0 | x] = x + sigma^2 s*(x)``, so ``s* + z / sigma`` is orthogonal to every function
    of ``x`` and

        E |s - s*|^2 = E |s(x) + z / sigma|^2 - E |s*(x) + z / sigma|^2,

    the second term being ``mmse(sigma) / sigma^4``. Near a manifold of dimension ``n`` the
    posterior of ``x0`` given ``x`` is Gaussian along the tangent space to leading order, so
    ``mmse = n sigma^2 (1 + O(sigma))`` and the floor is ``n / sigma^2``; likewise
    ``E |s*|^2 = (d - n) / sigma^2``. Both use ``n`` per draw (``intrinsic_dim`` of the law's
    manifold, or ``intrinsic_dims`` of its local chart for laws with a random number of
    parts). Checked against ``score_error_profile`` with the exact-chart score (phantom32-unet,
    256 draws): relative errors 0.2020 / 0.1282 / 0.0939 / 0.0646 vs 0.2020 / 0.1282 / 0.0957
    / 0.0700 at sigma = 0.01 / 0.032 / 0.1 / 0.2 (the exact floor ``mmse / sigma^2`` is 5.90
    to 5.63 for ``n = 6``): use it at small sigma, where ``floor_fraction`` is small.

    Args:
        rng_key: PRNG key for the draws ``(x0, z)``, shared by all sigmas.
        prior: the score to assess.
        data_law: a law with ``sample`` and a ``manifold`` (``intrinsic_dim``), or with
            ``local_manifold(key, num) -> (x0, chart)`` (``chart.intrinsic_dims``).
        sigmas: noise levels ``(S,)``, all > 0.
        num_samples: draws per sigma.
        batch: draws per score evaluation (memory ``O(batch x pixels)``).

    Returns:
        ``score_error_profile``'s dict (``sigmas``, ``abs_error``, ``rel_error``, ``ref_norm``,
        ``beta``, ``alpha_range``, ``num_samples``) plus ``floor_fraction`` ``(S,)``: the
        share of the denoising loss that is the ``n / sigma^2`` floor (an estimate is only as
        good as the floor's leading-order form where this is not small).

    Example:
        >>> law = bip.ellipses.RandomEllipseLaw(128)
        >>> prof = denoising_error_profile(jax.random.key(0), bip.priors.load("ellipses128-unet"),
        ...                                law, jnp.geomspace(0.01, 0.1, 5))
        >>> prof["rel_error"], prof["beta"]
    """
    if not isinstance(prior, ScorePrior):
        raise TypeError("prior must be a bip.priors.ScorePrior")
    num_samples = _checks.integer("num_samples", num_samples)
    batch = _checks.integer("batch", batch)
    sigmas_np = _sigma_grid(sigmas)
    dtype = jnp.result_type(float)
    k_data, k_noise = jax.random.split(rng_key)
    x0, chart = _local_draws(data_law, k_data, num_samples)
    x0 = jnp.asarray(x0, dtype)
    _checks.event_shape("data_law's draws", x0, prior.event_shape)
    dims = np.broadcast_to(
        np.asarray(getattr(chart, "intrinsic_dims", chart.intrinsic_dim), float), (num_samples,)
    )
    ambient = float(np.prod(prior.event_shape))
    z = jax.random.normal(k_noise, x0.shape, dtype)
    loss = []
    for sigma in sigmas_np:
        sigma_j = jnp.asarray(sigma, dtype)
        total = 0.0
        for lo in range(0, num_samples, batch):
            x = x0[lo : lo + batch] + sigma_j * z[lo : lo + batch]
            residual = _score(prior, x, sigma_j).astype(dtype) + z[lo : lo + batch] / sigma_j
            total += float(_mean_sq(residual)) * x.shape[0]
        loss.append(total / num_samples)
    loss = np.asarray(loss)
    floor = float(np.mean(dims)) / sigmas_np**2
    abs_error = np.sqrt(np.maximum(loss - floor, 0.0))
    ref_norm = np.sqrt((ambient - float(np.mean(dims))) / sigmas_np**2)
    beta = fit_exponent(sigmas_np, abs_error)
    return {
        "sigmas": sigmas_np,
        "abs_error": abs_error,
        "rel_error": abs_error / ref_norm,
        "ref_norm": ref_norm,
        "floor_fraction": floor / loss,
        "beta": beta,
        "alpha_range": admissible_alpha(beta),
        "num_samples": num_samples,
    }


# --------------------------------------------------------------------------- sampling checks


def langevin(
    rng_key: Array,
    prior: ScorePrior,
    initial_positions: Array,
    sigma: float,
    alpha: float,
    num_steps: int,
    *,
    thin: int | None = None,
    observe=None,
    on_divergence: str = "warn",
):
    """Tempered ULA at one noise level: drift ``sigma^alpha s(x, sigma)``, step
    ``bip.samplers.default_step_size(sigma, alpha)`` (``alpha = 0``: standard Langevin).

    Returns the ``bip.samplers.Run`` (``samples`` ``(chains, draws, ...)``: every
    ``thin``-th step, default the last).

    Example:
        >>> run = bip.profile.langevin(jax.random.key(0), prior, x0, 0.1, 1.0, 100)
        >>> run.samples.shape                  # (chains, 1, *event): the last step
    """
    from bip import priors, samplers

    drift_prior = priors.tempered(prior, alpha) if float(alpha) else prior
    step_size = samplers.default_step_size(sigma, alpha)
    algo = samplers.ula(lambda x: drift_prior.score(x, sigma), step_size)
    return samplers.run(
        rng_key,
        algo,
        initial_positions,
        num_steps,
        thin=num_steps if thin is None else thin,
        observe=observe,
        on_divergence=on_divergence,
    )


def toy_langevin_check(
    rng_key: Array,
    prior: ScorePrior,
    data_law: Any,
    *,
    sigma: float = 0.01,
    ts_chains: int = 4000,
    ts_steps: int = 4000,
    std_chains: int = 2000,
    std_steps: int = 10_000,
    num_bins: int = 36,
) -> dict[str, Any]:
    """Paper Fig. 2 with a (learned) prior on a planar curve: TS-1 versus standard Langevin.

    Both start from the data law and run ULA at ``sigma`` with the default step
    ``0.1 sigma^(2 - alpha)``: TS-1 (``alpha = 1``) for ``ts_steps`` steps (a time of
    ``0.1 sigma ts_steps``), standard Langevin (``alpha = 0``) for ``std_steps`` steps (a time of
    only ``0.1 sigma^2 std_steps``: it cannot mix along the curve, SCIENCE.md sec. 3). The last
    position of each chain gives a ``num_bins``-bin histogram of the chart parameter, compared
    by total variation with ``p_data`` and with the uniform (volume) law on the curve.

    Returns:
        ``{"sigma", "tv_p_data_uniform", "ts1": {...}, "standard": {...}}``; each run has
        ``chains``, ``steps``, ``step_size``, ``time``, ``tv_uniform``, ``tv_p_data``,
        ``histogram_noise`` (mean TV of ``chains`` exact draws to their law, ``~0.77
        sqrt(bins / chains) / 2`` ...: the floor), ``diverged`` and ``seconds``.
    """
    import time

    from bip import metrics, targets

    manifold = data_law.manifold
    p_data = targets.from_log_density(data_law.chart_log_density)
    uniform = targets.from_log_density(lambda t: jnp.log(manifold.volume_density(t)))
    bins = {name: law.bin_probabilities(num_bins) for name, law in (("p", p_data), ("u", uniform))}
    out: dict[str, Any] = {
        "sigma": float(sigma),
        "num_bins": num_bins,
        "tv_p_data_uniform": metrics.total_variation(bins["p"], bins["u"]),
    }
    k_ts, k_std = jax.random.split(rng_key)
    for name, alpha, chains, steps, key in (
        ("ts1", 1.0, ts_chains, ts_steps, k_ts),
        ("standard", 0.0, std_chains, std_steps, k_std),
    ):
        k0, k1 = jax.random.split(key)
        x0 = data_law.sample(k0, (chains,))
        start = time.perf_counter()
        run = langevin(k1, prior, x0, sigma, alpha, steps, observe=manifold.coordinate)
        seconds = time.perf_counter() - start
        angles = np.asarray(run.healthy_samples[:, -1])
        h = float(_samplers_step(sigma, alpha))
        out[name] = {
            "alpha": alpha,
            "chains": chains,
            "steps": steps,
            "step_size": h,
            "time": h * steps,
            "tv_uniform": metrics.tv_to_law(angles, uniform, num_bins),
            "tv_p_data": metrics.tv_to_law(angles, p_data, num_bins),
            "histogram_noise": histogram_noise(num_bins, chains),
            "diverged": int(np.sum(np.asarray(run.diverged))),
            "seconds": round(seconds, 1),
            "histogram": [float(v) for v in metrics.angle_histogram(angles, num_bins)],
        }
    return out


def _samplers_step(sigma, alpha):
    from bip import samplers

    return samplers.default_step_size(sigma, alpha)


def histogram_noise(num_bins: int, num_samples: int, seed: int = 0, reps: int = 200) -> float:
    """Mean TV between the ``num_bins``-bin histogram of ``num_samples`` uniform draws and the
    uniform law: the sampling-noise floor of the TVs above (Monte Carlo, ``reps`` repeats;
    ``seed`` seeds NumPy's generator)."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(num_samples, np.full(num_bins, 1 / num_bins), size=reps)
    return float(np.mean(0.5 * np.abs(counts / num_samples - 1 / num_bins).sum(axis=1)))


def nearest_distances(samples: Array, references, exclude_self: bool = False) -> np.ndarray:
    """Euclidean distance from each sample to its nearest reference (any event shape).

    Args:
        samples: ``(S, *event)``.
        references: ``(N, *event)``, or an iterable of such chunks (a large or generated set).
        exclude_self: leave out an exact match (distance 0) -- for distances within one set,
            ``nearest_distances(data, data, exclude_self=True)``: leave-one-out.

    Returns:
        ``(S,)`` float64 distances.
    """
    a = np.asarray(samples, np.float64).reshape(np.shape(samples)[0], -1)
    a_sq = np.sum(a**2, axis=1)
    best = np.full(a.shape[0], np.inf)
    chunks = [references] if hasattr(references, "shape") else references
    for chunk in chunks:
        b = np.asarray(chunk, np.float64).reshape(np.shape(chunk)[0], -1)
        d2 = a_sq[:, None] + np.sum(b**2, axis=1)[None, :] - 2.0 * a @ b.T
        d2 = np.maximum(d2, 0.0)
        if exclude_self:
            d2 = np.where(d2 < 1e-12, np.inf, d2)
        best = np.minimum(best, d2.min(axis=1))
    return np.sqrt(best)


def diffusion_samples(
    rng_key: Array,
    prior: ScorePrior,
    num_samples: int,
    *,
    sigma_max: float = 10.0,
    sigma_min: float = 0.01,
    num_levels: int = 500,
    corrector_steps: int = 0,
    denoise: bool = True,
) -> tuple[Array, Array]:
    """Reverse-diffusion samples (``bip.samplers.reverse_diffusion``, geometric levels from
    ``sigma_max`` to ``sigma_min``) and, if ``denoise``, their Tweedie denoising at the last
    level ``x + sigma_min^2 s(x, sigma_min)`` (``bip.posteriors.denoise``; the usual final
    step of a diffusion sampler).

    Returns ``(raw, denoised)``, each ``(num_samples, *event)`` (``denoised is raw`` when
    ``denoise`` is False).
    """
    from bip import samplers

    sigmas = samplers.geometric_sigmas(sigma_max, sigma_min, num_levels)
    out = samplers.reverse_diffusion(
        rng_key, prior, num_samples, sigmas, corrector_steps=corrector_steps
    )
    raw = out.positions
    if not denoise:
        return raw, raw
    return raw, posteriors.denoise(prior, raw[None], sigma_min)[0]


def manifold_distance_check(
    rng_key: Array,
    prior: ScorePrior,
    data_law: Any,
    *,
    sigma: float = 0.01,
    alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0),
    num_chains: int = 64,
    num_steps: dict | int = 500,
) -> dict[str, Any]:
    """Distance to the manifold of tempered-Langevin samples of an image prior at ``sigma``.

    Chains start from the data law (for a law without one manifold, e.g. a random number of
    ellipses, the distance is to the local chart of each start: ``local_manifold``) and run
    ULA with drift ``sigma^alpha s`` and step
    ``0.1 sigma^(2 - alpha)`` for ``num_steps`` steps (an int, or a dict by alpha; the normal
    directions relax in ~10 steps, the rest tests that chains stay near M). The law of
    TS-alpha at ``sigma`` is ``p_sigma^(sigma^alpha)``, Gaussian across the manifold with
    standard deviation ``sigma' = sigma^(1 - alpha/2)`` per normal direction, so with the exact
    score its samples sit at distance ``~ sqrt(d - n) sigma'`` (SCIENCE.md sec. 3): in ``d =
    1024`` dimensions at ``sigma = 0.01`` that is 0.32 (alpha = 0) to 3.2 (alpha = 1).

    Reported per alpha: the mean distance of the chains' last positions (``distance``), the same
    relative to the mean norm of data images (``relative``), the prediction ``sqrt(d - n)
    sigma'`` for the exact score (``theory``), and the mean distance after one Tweedie
    denoising step at the matching level, ``x + sigma'^2 s(x, sigma')`` (``denoised``,
    ``denoised_relative``).
    """
    k0, k1 = jax.random.split(rng_key)
    x0, manifold = _local_draws(data_law, k0, num_chains)
    d, n = manifold.ambient_dim, manifold.intrinsic_dim
    norm = float(jnp.mean(jnp.sqrt(jnp.sum(x0**2, axis=(-2, -1)))))
    out: dict[str, Any] = {
        "sigma": float(sigma),
        "chains": num_chains,
        "data_norm": norm,
        "ambient_dim": int(d),
        "intrinsic_dim": int(n),
    }
    runs = {}
    for i, alpha in enumerate(alphas):
        alpha = float(alpha)
        sigma_eff = float(sigma) ** (1 - alpha / 2)
        steps = int(num_steps[alpha] if isinstance(num_steps, dict) else num_steps)
        run = langevin(jax.random.fold_in(k1, i), prior, x0, sigma, alpha, steps)
        x = run.final_state.position
        dist = np.asarray(manifold.distance(x))
        denoised = posteriors.denoise(prior, x[None], sigma_eff)[0]
        dist_dn = np.asarray(manifold.distance(denoised))
        runs[f"{alpha:g}"] = {
            "alpha": alpha,
            "steps": steps,
            "step_size": float(_samplers_step(sigma, alpha)),
            "distance": float(np.mean(dist)),
            "relative": float(np.mean(dist) / norm),
            "theory": float(math.sqrt(d - n) * sigma_eff),
            "denoised_at": sigma_eff,
            "denoised": float(np.mean(dist_dn)),
            "denoised_relative": float(np.mean(dist_dn) / norm),
            "diverged": int(np.sum(np.asarray(run.diverged))),
        }
    out["runs"] = runs
    return out
