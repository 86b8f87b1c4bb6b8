"""ArviZ conversion (bip.arviz) and bip's R-hat/ESS against arviz-stats on the same draws.

bip's reports (``bip.metrics.split_rhat`` / ``effective_sample_size``, outside jit) call
arviz-stats: rank-normalised split R-hat, bulk and tail ESS. The jitted streaming diagnostic
(``bip.streaming.diagnostics``: per-chain AR(1) ESS on the raw values, Gelman-Rubin R-hat) is
an approximation; measured gap (AR(1) chains, rho = 0.5, 4 x 1000 draws, seeds 0 and 1;
analytic bulk ESS 1333, analytic tail ESS 2372: the 5%/95% quantile indicators of a Gaussian
AR(1) chain decorrelate faster than the chain):

- Gaussian coordinates: streaming ESS 1279-1422, arviz-stats bulk 1117-1533, tail 2221-2417:
  the streaming ESS is a bulk estimate, 0.54-0.62x the tail ESS (conservative for intervals);
- skewed coordinate exp(2 z): streaming ESS 2838, bulk 1231-1326 (the streaming one is over
  2x too high), tail 2091-2146 (tail ESS is invariant under monotone maps);
- streaming R-hat within 0.004 of the rank-normalised split R-hat on mixed chains; both
  exceed 1.08 when one chain sits one standard deviation off.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from bip import arviz as bip_arviz
from bip import manifolds, metrics, posteriors, priors, references, streaming

arviz_base = pytest.importorskip("arviz_base")
pytest.importorskip("arviz_stats")
pytest.importorskip("xarray")


def _ar1(rho, num_draws, num_chains, dim, seed):
    """AR(1) chains ``(chains, draws, dim)`` (bip's layout) with unit stationary variance."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((num_draws, num_chains, dim))
    x = np.empty_like(noise)
    x[0] = noise[0]
    for t in range(1, num_draws):
        x[t] = rho * x[t - 1] + np.sqrt(1 - rho**2) * noise[t]
    return np.swapaxes(x, 0, 1)


def _azstats(draws):
    """arviz-stats (xarray accessor) on bip-layout draws ``(chains, draws, k)`` (ArviZ's
    too): rank-normalised split R-hat, bulk ESS, tail ESS at bip's quantiles."""
    ds = arviz_base.from_dict({"posterior": {"x": draws}})["posterior"]
    ds = ds.dataset
    tail = ds.azstats.ess(method="tail", prob=metrics.TAIL_PROB)["x"].values
    return ds.azstats.rhat()["x"].values, ds.azstats.ess(method="bulk")["x"].values, tail


def _tail_ess_ar1(rho, num_draws, p=0.05):
    """Analytic ESS of the indicator of the ``p`` quantile of a Gaussian AR(1) chain."""
    q = scipy.stats.norm.ppf(p)
    lags = [
        scipy.stats.multivariate_normal([0, 0], [[1, rho**k], [rho**k, 1]]).cdf([q, q])
        for k in range(1, 40)
    ]
    return num_draws / (1 + 2 * np.sum((np.array(lags) - p * p) / (p * (1 - p))))


def _streaming(draws):
    """bip's jitted streaming diagnostics folded over bip-layout draws."""
    return streaming.accumulate(streaming.diagnostics(), jnp.asarray(draws))


@pytest.mark.parametrize("seed", [0, 1])
def test_rhat_and_ess_agree_with_arviz_stats(seed):
    rho, num_draws, num_chains = 0.5, 1000, 4
    analytic_ess = num_draws * num_chains * (1 - rho) / (1 + rho)
    analytic_tail = _tail_ess_ar1(rho, num_draws * num_chains)
    assert 2300 < analytic_tail < 2450
    draws = _ar1(rho, num_draws, num_chains, 3, seed)
    draws[..., 2] = np.exp(2 * draws[..., 2])  # skewed: where rank normalisation matters
    rhat_az, ess_az, tail_az = _azstats(draws)
    np.testing.assert_allclose(metrics.split_rhat(draws), rhat_az, rtol=1e-12)
    np.testing.assert_allclose(metrics.effective_sample_size(draws), ess_az, rtol=1e-12)
    np.testing.assert_allclose(metrics.effective_sample_size(draws, "tail"), tail_az, rtol=1e-12)
    np.testing.assert_allclose(ess_az, analytic_ess, rtol=0.2)
    np.testing.assert_allclose(tail_az, analytic_tail, rtol=0.2)
    # the jitted streaming diagnostic: bulk-like on Gaussian draws, not a tail ESS
    diag = _streaming(draws)
    ess_stream = np.asarray(diag.ess).sum(axis=0)
    # over seeds 0-39 (80 coordinates) the streaming ESS is 1.008 +- 0.042 of the analytic
    # one: rtol 0.17 is 4 sd. (arviz-stats' own bulk and tail ESS above scatter 0.998 +- 0.092
    # and 0.959 +- 0.084 of theirs: 0.2 is about 2 sd there, not loosened.)
    np.testing.assert_allclose(ess_stream[:2], analytic_ess, rtol=0.17)
    assert np.all((ess_stream[:2] / tail_az[:2] > 0.45) & (ess_stream[:2] / tail_az[:2] < 0.75))
    assert ess_stream[2] > 1.5 * ess_az[2]  # raw-value AR(1) ESS on a skewed law: too high
    np.testing.assert_allclose(np.asarray(diag.rhat)[:2], rhat_az[:2], atol=0.005)
    shifted = draws[..., :2].copy()
    shifted[0] += 1.0  # one chain off by one standard deviation: not mixed
    rhat = metrics.split_rhat(shifted)
    assert np.all(rhat > 1.08) and np.all(np.asarray(_streaming(shifted).rhat) > 1.08)
    with pytest.raises(ValueError, match="'bulk' or 'tail'"):
        metrics.effective_sample_size(draws, "mean")


def test_run_round_trips(key):
    prior = priors.exact(manifolds.VonMises(manifolds.Circle(), 4.0, np.pi))
    run = posteriors.sample(
        key, prior, None, sigma=0.1, num_chains=4, num_steps=200, thin=10, progress=False
    )
    dt = bip_arviz.to_datatree(run, attrs={"name": "circle"})
    x = dt["posterior"]["x"].values
    assert x.shape == (4, 20, 2) and dt["posterior"]["x"].dims[:2] == ("chain", "draw")
    np.testing.assert_array_equal(x, np.asarray(run.samples))  # the same layout: no transpose
    stats = dt["sample_stats"]
    assert stats["diverging"].shape == (4, 20) and not stats["diverging"].values.any()
    np.testing.assert_allclose(
        stats["drift_sq_norm_chain_mean"].values[:, 0], np.asarray(run.info_mean.drift_sq_norm)
    )
    assert dt.attrs["name"] == "circle"


def test_reference_converts(key):
    law = manifolds.VonMises(manifolds.Circle(), kappa=2.0)
    ref = references.generic_limit(key, law, None, num_chains=2, num_samples=50, num_warmup=50)
    dt = bip_arviz.to_datatree(ref)
    np.testing.assert_array_equal(dt["posterior"]["u"].values, np.asarray(ref.u))
    assert dt["posterior"]["x"].shape == (2, 50, 2)
    assert dt.attrs["nuts_divergences"] == 0
    with pytest.raises(TypeError, match="Run or Reference"):
        bip_arviz.to_datatree(np.zeros((3, 2)))
