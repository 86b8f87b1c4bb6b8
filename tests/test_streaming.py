"""Streaming statistics: against NumPy, inside ``run``, and memory independent of steps."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bip
from bip import streaming

PRIOR = bip.priors.exact(bip.manifolds.VonMises(bip.manifolds.Circle(), kappa=4.0, loc=np.pi))


def _angle(x):
    return jnp.arctan2(x[1], x[0])


def test_mean_var_matches_numpy_per_chain_and_pooled():
    rng = np.random.default_rng(0)
    draws = 3.0 + rng.standard_normal((7, 500, 3)) * np.arange(1, 4)  # (chains, draws, 3)
    healthy = np.ones((7, 500), bool)
    healthy[2, 200:] = False  # chain 2 diverged at draw 200: its later draws are skipped
    out = streaming.accumulate(streaming.mean_var(), jnp.asarray(draws), jnp.asarray(healthy))
    counts = healthy.sum(1)
    np.testing.assert_array_equal(out.count, counts)
    for c in range(7):
        d = draws[c, : counts[c]]
        np.testing.assert_allclose(out.mean[c], d.mean(0), rtol=1e-12)
        np.testing.assert_allclose(out.variance[c], d.var(0), rtol=1e-10)
    pooled = np.concatenate([draws[c, : counts[c]] for c in range(7)])
    np.testing.assert_allclose(out.pooled_mean, pooled.mean(0), rtol=1e-12)
    np.testing.assert_allclose(out.pooled_variance, pooled.var(0), rtol=1e-10)


def test_mean_var_of_a_pytree_observable():
    draws = jnp.asarray(np.random.default_rng(1).standard_normal((4, 50, 2)))
    out = streaming.accumulate(streaming.mean_var(lambda x: {"x": x, "r": jnp.sum(x**2)}), draws)
    np.testing.assert_allclose(out.mean["r"], np.sum(np.asarray(draws) ** 2, -1).mean(1))
    assert out.mean["x"].shape == (4, 2) and out.pooled_mean["r"].shape == ()


def test_histogram_matches_numpy_histogram():
    rng = np.random.default_rng(2)
    values = rng.uniform(-4.0, 4.0, (5, 300))  # (chains, draws)
    values[0, 0], values[0, 1], values[0, 2] = np.pi, -np.pi, np.nan  # edges and a NaN
    out = streaming.accumulate(
        streaming.histogram(bins=36, range=(-np.pi, np.pi)), jnp.asarray(values)
    )
    for c in range(5):
        expected, edges = np.histogram(values[c], bins=36, range=(-np.pi, np.pi))
        np.testing.assert_array_equal(out.counts[c], expected)
        assert int(out.outside[c]) == 300 - expected.sum()
    np.testing.assert_allclose(out.edges, edges, atol=1e-15)
    np.testing.assert_array_equal(out.pooled, np.asarray(out.counts).sum(0))
    assert float(jnp.sum(out.probabilities)) == pytest.approx(1.0)


def test_diagnostics_autocorrelation_ess_and_rhat():
    rng = np.random.default_rng(3)
    rho, n, chains = 0.8, 4000, 16
    x = np.zeros((n, chains))
    for t in range(1, n):
        x[t] = rho * x[t - 1] + np.sqrt(1 - rho**2) * rng.standard_normal(chains)
    out = streaming.accumulate(streaming.diagnostics(), jnp.asarray(x.T + 100.0))
    np.testing.assert_allclose(out.mean, x.mean(0) + 100.0, rtol=1e-12)
    np.testing.assert_allclose(out.variance, x.var(0), rtol=1e-8)
    # Noise of the chain-averaged lag-1 estimate: sqrt((1 - rho^2) / n) / sqrt(chains) =
    # 0.0024 (measured over 40 seeds: sd 0.0026, mean 0.799). The AR(1) ESS inherits it as
    # 2 / (1 - rho^2) = 5.6 times that, relatively: 1.3% (measured 1.4%, mean 447 vs 444).
    # R-hat ~ 1 + (tau - 1) / (2 n) with tau = (1 + rho) / (1 - rho) = 9: 1.001, sd about
    # tau / n * sqrt(2 / (chains - 1)) / 2 = 0.0004 (measured mean 1.0009, sd 0.0004).
    # Bounds: 4, 3.8 and 3.7 sds.
    assert float(jnp.mean(out.autocorr)) == pytest.approx(rho, abs=0.01)
    assert float(jnp.mean(out.ess)) == pytest.approx(n * (1 - rho) / (1 + rho), rel=0.05)
    assert float(out.rhat) == pytest.approx(1.001, abs=0.0015)
    shifted = x + np.arange(chains)  # chains that disagree: R-hat far above 1
    assert float(streaming.accumulate(streaming.diagnostics(), jnp.asarray(shifted.T)).rhat) > 2


def test_keep_last_and_reservoir_are_bounded_samples():
    draws = jnp.ones((3, 1)) * jnp.arange(50.0)[None, :]  # (chains, draws): draw i is i
    last = streaming.accumulate(streaming.keep_last(4), draws)
    assert last.draws.shape == (3, 4)  # chains first, like Run.samples
    np.testing.assert_array_equal(last.draws[0], [46, 47, 48, 49])
    np.testing.assert_array_equal(last.index, [46, 47, 48, 49])
    short = streaming.accumulate(streaming.keep_last(4), draws[:, :2])
    np.testing.assert_array_equal(short.draws[0, :2], [0, 1])
    np.testing.assert_array_equal(short.index, [0, 1, -1, -1])
    res = streaming.accumulate(streaming.reservoir(5, seed=1), draws)
    index = np.asarray(res.index)
    assert int(res.num_seen) == 50 and len(set(index)) == 5 and np.all(np.diff(index) > 0)
    np.testing.assert_array_equal(res.draws[2], index)  # each kept draw is the one it names
    # uniform over all draws: over 200 seeds (PRNG keys, vmapped) every draw is kept
    # about 200 * 5 / 50 = 20 times
    keys = jax.random.split(jax.random.key(0), 200)
    index = jax.vmap(
        lambda k: streaming.accumulate(streaming.reservoir(5, seed=k), draws[:1]).index
    )(keys)
    kept = np.bincount(np.asarray(index).ravel(), minlength=50)
    assert kept.sum() == 1000 and kept.min() >= 5 and kept.max() <= 40
    assert np.mean(np.asarray(index)) == pytest.approx(24.5, abs=1.5)


def test_combine_keeps_the_structure():
    draws = jnp.ones((3, 2, 2))
    as_dict = streaming.accumulate({"m": streaming.mean_var(), "k": streaming.keep_last(1)}, draws)
    assert set(as_dict) == {"m", "k"} and isinstance(as_dict["m"], streaming.MeanVar)
    as_list = streaming.accumulate([streaming.mean_var(), streaming.keep_last(1)], draws)
    assert isinstance(as_list, list) and isinstance(as_list[1], streaming.Kept)
    with pytest.raises(TypeError, match="statistics"):
        streaming.combine([lambda x: x])
    with pytest.raises(ValueError, match="bins"):
        streaming.histogram(bins=0)


def test_run_statistics_equal_the_same_statistics_of_the_kept_samples(key):
    algo = bip.samplers.ula(lambda x: PRIOR.score(x, 0.1), 1e-3)
    x0 = PRIOR.manifold.sample_uniform(key, (32,))
    stats = {
        "moments": streaming.mean_var(),
        "angles": streaming.histogram(_angle, bins=36, range=(-np.pi, np.pi)),
        "diag": streaming.diagnostics(_angle),
        "last": streaming.keep_last(3),
    }
    full = bip.samplers.run(key, algo, x0, 300, thin=3, burn_in=10, statistics=stats)
    lean = bip.samplers.run(
        key, algo, x0, 300, thin=3, burn_in=10, statistics=stats, keep_samples=False
    )
    assert lean.samples is None and full.samples.shape == (32, 100, 2)
    offline = streaming.accumulate(stats, full.samples)
    for name in stats:
        for a, b, c in zip(
            jax.tree_util.tree_leaves(full.statistics[name]),
            jax.tree_util.tree_leaves(lean.statistics[name]),
            jax.tree_util.tree_leaves(offline[name]),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-14)
    samples = np.asarray(full.samples)
    np.testing.assert_allclose(full.statistics["moments"].mean, samples.mean(1), rtol=1e-12)
    np.testing.assert_array_equal(full.statistics["last"].draws, samples[:, -3:])
    assert int(full.statistics["angles"].counts.sum()) == 100 * 32
    with pytest.raises(ValueError, match="keep_samples"):
        _ = lean.healthy_samples


def test_diverged_chains_stop_contributing(key):
    algo = bip.samplers.ula(lambda x: 0.6 * x, 1.0)  # x grows by 1.6 a step: diverges
    x0 = jnp.concatenate([jnp.ones((1, 2)) * 1e5, jnp.ones((3, 2)) * 1e-300])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bip.samplers.DivergenceWarning)
        result = bip.samplers.run(
            key, algo, x0, 40, statistics=streaming.mean_var(), keep_samples=False, max_norm=1e6
        )
    assert bool(result.diverged[0])
    count = np.asarray(result.statistics.count)
    assert count[0] == int(result.diverged_at[0]) < 40


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import bip
    from bip import streaming

    def peak_mb():  # VmHWM: the peak resident set size since the last reset
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024

    def reset_peak():  # Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")

    prior = bip.priors.exact(bip.manifolds.VonMises(bip.manifolds.Circle(), 4.0, np.pi))
    algo = bip.samplers.ula(lambda x: prior.score(x, 0.1), 1e-3)
    x0 = prior.manifold.sample_uniform(jax.random.key(0), (64,))
    angle = lambda x: jnp.arctan2(x[1], x[0])
    stats = [streaming.mean_var(), streaming.histogram(angle, 36, (-np.pi, np.pi)),
             streaming.diagnostics(angle), streaming.keep_last(10)]
    peaks = {}
    # a first run warms the allocator and the compiler; then each run's own peak RSS
    for name, steps, keep in (("warm", 1000, False), ("stream_1000", 1000, False),
                              ("stream_100000", 100_000, False), ("keep_100000", 100_000, True)):
        reset_peak()
        r = bip.samplers.run(jax.random.key(1), algo, x0, steps, keep_samples=keep,
                             statistics=None if keep else stats, progress=False)
        jax.block_until_ready((r.samples, r.statistics))
        peaks[name] = peak_mb()
    peaks["kept_mb"] = r.samples.nbytes / 2**20
    print("RESULT" + json.dumps(peaks))
    """
)


@pytest.mark.slow
def test_memory_does_not_grow_with_steps_when_streaming():
    """Peak RSS of a 10^5-step streaming run is that of a 10^3-step one; keeping samples grows
    it by their size (64 chains x 10^5 steps x 2 x 8 B = 98 MB)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    # no emulated devices, and no persistent compilation cache (conftest's): serialising a
    # compiled program into it costs memory of its own, which is not the sampler's
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")
        and not k.startswith("JAX_PERSISTENT_CACHE")
    }
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    peaks = json.loads(line[len("RESULT") :])
    print(peaks)
    assert abs(peaks["stream_100000"] - peaks["stream_1000"]) < 50, peaks
    assert peaks["keep_100000"] - peaks["stream_100000"] > 0.8 * peaks["kept_mb"], peaks
