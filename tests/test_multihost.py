"""Multi-host sampling for real: two ``jax.distributed`` processes on localhost (CPU, gloo).

Each process owns one CPU device; ``chain_mesh()`` spans both, every process passes the same
``x0`` and keeps its own half of the chains. The draws and the streaming statistics must equal
those of one process with two emulated devices (and those of no mesh at all), which is what
the README's multi-host recipe promises.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

WORKER = textwrap.dedent(
    """
    import json, os, sys
    mode = sys.argv[1]
    if mode == "single":
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    jax.config.update("jax_enable_x64", True)
    if mode == "multi":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            os.environ["COORDINATOR"], 2, int(os.environ["PROCESS_ID"]), local_device_ids=[0]
        )
    import jax.numpy as jnp, numpy as np
    import bip
    from bip import sharding, streaming

    prior = bip.priors.exact(bip.manifolds.VonMises(bip.manifolds.Circle(), 4.0, np.pi))
    algo = bip.samplers.ula(lambda x: prior.score(x, 0.1), 1e-3)
    x0 = prior.manifold.sample_uniform(jax.random.key(0), (64,))
    angle = lambda x: jnp.arctan2(x[1], x[0])
    stats = [streaming.mean_var(), streaming.histogram(angle, 36, (-np.pi, np.pi))]
    mesh = None if mode == "plain" else sharding.chain_mesh()
    run = bip.samplers.run(jax.random.key(1), algo, x0, 200, thin=20, statistics=stats,
                           mesh=mesh, progress=False)
    out = {
        "processes": jax.process_count(),
        "devices": len(jax.devices()),
        "samples": sharding.to_host(run.samples).tolist(),
        "mean": sharding.to_host(run.statistics[0].mean).tolist(),
        "counts": sharding.to_host(run.statistics[1].counts).tolist(),
        "diverged": int(sharding.to_host(run.diverged).sum()),
    }
    if jax.process_index() == 0:
        print("RESULT " + json.dumps(out))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", **extra)
    return env


def _result(stdout: str) -> dict:
    line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), "multi"],
            env=_env(COORDINATOR=coordinator, PROCESS_ID=str(i)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=240)
            assert p.returncode == 0, stderr[-3000:]
            outs.append(stdout)
    finally:
        for p in procs:
            p.kill()
    multi = _result(outs[0])
    assert (multi["processes"], multi["devices"]) == (2, 2)

    refs = {}
    for mode in ("single", "plain"):
        done = subprocess.run(
            [sys.executable, str(script), mode],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        refs[mode] = _result(done.stdout)
    assert refs["single"]["devices"] == 2

    for ref in refs.values():
        np.testing.assert_allclose(multi["samples"], ref["samples"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(multi["mean"], ref["mean"], rtol=0, atol=1e-12)
        assert multi["counts"] == ref["counts"]
        assert multi["diverged"] == ref["diverged"] == 0
    # The samples are real draws of p_sigma, sigma = 0.1: radii about N(1 + sigma^2 / 2, sigma^2)
    # (the circle smoothed by N(0, sigma^2 I)). 640 draws, 20 steps (twice the radial
    # relaxation time sigma^2) apart: the mean's sd is about 0.1 / sqrt(640) = 0.004, the std's
    # 0.1 / sqrt(2 * 640) = 0.003 (measured 1.0087 and 0.104); bounds of 5 sds.
    radii = np.linalg.norm(np.asarray(multi["samples"]), axis=-1)
    assert np.asarray(multi["samples"]).shape == (64, 10, 2)  # (chains, draws, 2)
    assert radii.mean() == pytest.approx(1 + 0.1**2 / 2, abs=0.02)
    assert radii.std() == pytest.approx(0.1, abs=0.015)
