"""Sharded chains: the same draws on 1 device and on a 4-device mesh, and truly sharded.

The 4 CPU devices are emulated with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``,
which must be set before jax is imported, so that part runs in a subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bip
from bip import sharding

SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    import bip
    from bip import experiments, sharding, streaming

    out = {"devices": len(jax.devices())}
    mesh = sharding.chain_mesh()
    one = sharding.chain_mesh(jax.devices()[:1])
    prior = bip.priors.exact(bip.manifolds.VonMises(bip.manifolds.Circle(), 4.0, np.pi))
    algo = bip.samplers.ula(lambda x: prior.score(x, 0.1), 1e-3)
    x0 = prior.manifold.sample_uniform(jax.random.key(0), (64,))
    angle = lambda x: jnp.arctan2(x[1], x[0])
    stats = [streaming.mean_var(), streaming.histogram(angle, 36, (-np.pi, np.pi))]
    runs = {
        name: bip.samplers.run(jax.random.key(1), algo, x0, 200, thin=20, statistics=stats,
                               mesh=m, progress=False)
        for name, m in (("none", None), ("one", one), ("four", mesh))
    }
    ref = np.asarray(runs["none"].samples)
    for name, r in runs.items():
        out[f"run_{name}_max_diff"] = float(np.max(np.abs(np.asarray(r.samples) - ref)))
        out[f"run_{name}_stats_diff"] = max(
            float(np.max(np.abs(np.asarray(a, float) - np.asarray(b, float))))
            for a, b in zip(jax.tree_util.tree_leaves(r.statistics),
                            jax.tree_util.tree_leaves(runs["none"].statistics))
        )
    four = runs["four"]
    pos = four.final_state.position
    out["run_devices"] = len(pos.sharding.device_set)
    out["run_shard_shapes"] = sorted({s.data.shape for s in pos.addressable_shards})
    out["samples_host"] = [type(four.samples).__name__, list(four.samples.shape)]
    out["hist_shard_shapes"] = sorted(
        {s.data.shape for s in four.statistics[1].counts.addressable_shards})
    try:
        bip.samplers.run(jax.random.key(1), algo, x0[:10], 5, mesh=mesh)
    except ValueError as e:
        out["error"] = str(e)

    sigmas = bip.samplers.geometric_sigmas(2.0, 0.01, 40)
    diff = [bip.samplers.reverse_diffusion(jax.random.key(3), prior, 64, sigmas,
                                           corrector_steps=1, mesh=m) for m in (None, mesh)]
    out["diffusion_max_diff"] = float(np.max(np.abs(
        np.asarray(diff[0].positions) - np.asarray(diff[1].positions))))
    out["diffusion_devices"] = len(diff[1].positions.sharding.device_set)

    kwargs = dict(sigmas=[0.3, 0.2], alphas=[1.0], sizes=[0.3, 3.0, 30.0], num_chains=8,
                  mixing_time=0.2, num_snapshots=5, progress=False)
    sweeps = [experiments.circle_sweep(**kwargs, mesh=m) for m in (None, mesh)]
    out["sweep_records"] = [s.records for s in sweeps]
    out["sweep_eps_star"] = [s.eps_star for s in sweeps]
    # the sweep's chain arrays are sharded: call its jitted cell directly
    cell = experiments._make_sampler(prior, bip.errors.angular_cosine(2.0), None, 5, mesh)
    xs, sizes = sharding.put((x0, jnp.repeat(jnp.arange(4.0), 16)), mesh)
    cell_run = cell(jax.random.key(2), xs, sizes, 0.2, 1.0, 0.02, 50)
    x = cell_run.final_state.position
    out["sweep_devices"] = [len(x.sharding.device_set), len(cell_run.diverged.sharding.device_set)]
    out["sweep_shard_shapes"] = sorted({s.data.shape for s in x.addressable_shards})
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def four_devices():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.mark.slow
def test_sampler_same_draws_on_one_and_four_devices(four_devices):
    out = four_devices
    assert out["devices"] == 4
    assert out["run_one_max_diff"] == 0.0  # a 1-device mesh is the unsharded program
    # 4 devices: the same per-chain keys and arithmetic; XLA may vectorise differently
    assert out["run_four_max_diff"] <= 1e-12
    assert out["run_four_stats_diff"] <= 1e-12
    assert out["diffusion_max_diff"] <= 1e-12


@pytest.mark.slow
def test_chain_arrays_are_sharded_over_four_devices(four_devices):
    out = four_devices
    assert out["run_devices"] == 4
    assert out["run_shard_shapes"] == [[16, 2]]  # 64 chains / 4 devices
    assert out["samples_host"] == ["ndarray", [64, 10, 2]]  # kept draws go to host memory
    assert out["hist_shard_shapes"] == [[16, 36]]
    assert out["diffusion_devices"] == 4
    assert out["sweep_devices"] == [4, 4]
    assert out["sweep_shard_shapes"] == [[16, 2]]


@pytest.mark.slow
def test_sweep_same_results_on_one_and_four_devices(four_devices):
    plain, sharded = four_devices["sweep_records"]
    assert len(plain) == len(sharded) == 2 * 4
    for a, b in zip(plain, sharded, strict=True):
        assert a.keys() == b.keys()
        for name in ("tv", "tv_exact", "mean_distance"):
            assert b[name] == pytest.approx(a[name], abs=1e-12), name
        assert a["steps"] == b["steps"]
    eps = [json.dumps(e, sort_keys=True) for e in four_devices["sweep_eps_star"]]
    assert eps[0] == eps[1]


@pytest.mark.slow
def test_divisibility_error_names_both_numbers(four_devices):
    message = four_devices["error"]
    assert "(10)" in message and "(4)" in message


def test_chain_mesh_and_single_device_mesh_in_process(key):
    mesh = sharding.chain_mesh()
    assert mesh.axis_names == ("chains",) and mesh.size == len(jax.devices())
    prior = bip.priors.exact(bip.manifolds.Uniform(bip.manifolds.Circle()))
    algo = bip.samplers.ula(lambda x: prior.score(x, 0.2), 1e-3)
    x0 = prior.manifold.sample_uniform(key, (8,))
    plain = bip.samplers.run(key, algo, x0, 30, thin=10, progress=False)
    meshed = bip.samplers.run(key, algo, x0, 30, thin=10, progress=False, mesh=mesh)
    np.testing.assert_array_equal(np.asarray(plain.samples), np.asarray(meshed.samples))
    with pytest.raises(ValueError, match=r"chains \(10\) must be divisible .* \(4\)"):
        sharding.check_divisible(10, _FourDevices())
    sharding.check_divisible(12, _FourDevices())
    assert sharding.to_host(jnp.arange(3)).tolist() == [0, 1, 2]


class _FourDevices:  # only .size is read by check_divisible
    size = 4
