"""Chunked loops: the same draws for any chunk size, Ctrl-C keeps a partial result, one compiled
program for every chunk, and the memory guard refuses oversized runs before compiling."""

import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bip
from bip import hostloop, memory, samplers, streaming

CIRCLE = bip.manifolds.Circle()
DATA = bip.manifolds.VonMises(CIRCLE, kappa=4.0, loc=np.pi)
PRIOR = bip.priors.exact(DATA)
X0 = DATA.sample(jax.random.key(1), (32,))
STATS = streaming.mean_var()  # one object: every run below shares one compiled program


def _algorithm(traces: list | None = None):
    def drift(sigma, x):  # a Partial pytree drift; each trace of it is counted
        if traces is not None:
            traces.append(None)
        return PRIOR.score(x, sigma)

    return samplers.ula(jax.tree_util.Partial(drift, 0.1), 1e-3)


def _run(algo, num_steps=95, **kwargs):
    kwargs = {"thin": 10, "burn_in": 5, "statistics": STATS, "progress": False, **kwargs}
    return samplers.run(jax.random.key(2), algo, X0, num_steps, **kwargs)


def test_same_draws_for_any_chunk_size_from_one_compiled_program():
    traces = []
    algo = _algorithm(traces)
    # 100 steps (5 burn-in + 95, 9 kept draws and 5 trailing steps) in one chunk, in chunks
    # of 7 (dividing neither the draws nor the thinning), 30 (3 draws, then part of a block)
    # and timed chunks
    runs = {size: _run(algo, chunk_size=size) for size in (100, 7, 30, None)}
    # one trace for the shapes of the step's info, one for the chunk program: every chunk
    # of every run reuses it (its step counts are traced arguments)
    assert len(traces) == 2
    ref = runs[100]
    assert ref.samples.shape == (32, 9, 2) and ref.complete and ref.steps_done == 95
    assert isinstance(ref.samples, np.ndarray)
    for size, r in runs.items():
        np.testing.assert_array_equal(r.samples, ref.samples, err_msg=f"chunk_size={size}")
        np.testing.assert_array_equal(r.final_state.position, ref.final_state.position)
        np.testing.assert_array_equal(r.info_mean.drift_sq_norm, ref.info_mean.drift_sq_norm)
        np.testing.assert_array_equal(r.statistics.mean, ref.statistics.mean)
    # the statistics saw exactly the kept draws
    np.testing.assert_allclose(ref.statistics.mean, ref.samples.mean(axis=1), rtol=1e-12)
    # the draws are the kernel's: step i uses fold_in(key, i), the 15th step is the first kept
    x = X0
    kernel = samplers.build_kernel()
    for i in range(15):
        keys = jax.random.split(jax.random.fold_in(jax.random.key(2), i), 32)
        x = jax.vmap(lambda k, p: kernel(k, samplers.LangevinState(p), algo.step.args[0], 1e-3))(
            keys, x
        )[0].position
    np.testing.assert_allclose(ref.samples[:, 0], x, rtol=1e-12, atol=1e-14)


class _SignalAfter:
    """Patches ``_Pacer.record`` (called on the host after each chunk but the first) to run
    ``action`` at its ``calls``-th call: a deterministic point in the middle of a run."""

    def __init__(self, monkeypatch, calls: int, action):
        self.count, self.calls, self.action = 0, calls, action
        original = hostloop._Pacer.record

        def record(pacer, units, seconds):
            original(pacer, units, seconds)
            self.count += 1
            if self.count == self.calls:
                self.action()

        monkeypatch.setattr(hostloop._Pacer, "record", record)


def test_ctrl_c_between_chunks_keeps_the_draws_so_far(monkeypatch):
    previous = signal.getsignal(signal.SIGINT)
    algo = _algorithm()
    full = _run(algo, num_steps=995, chunk_size=10)
    _SignalAfter(monkeypatch, 1, lambda: signal.raise_signal(signal.SIGINT))
    with pytest.raises(
        samplers.Interrupted, match=r"after 20 of 995 steps \(2 of 99 draws"
    ) as info:
        _run(algo, num_steps=995, chunk_size=10)
    assert signal.getsignal(signal.SIGINT) == previous  # the handler is restored
    partial = info.value.partial
    assert isinstance(info.value, KeyboardInterrupt) and isinstance(partial, samplers.Run)
    # chunks 1 (the 5 burn-in steps) and 2 had finished when the signal came, chunk 3 was in
    # flight: 20 steps after burn-in, 2 kept draws, equal to the first 2 of the full run
    assert not partial.complete and partial.steps_done == 20
    np.testing.assert_array_equal(partial.samples, full.samples[:, :2])
    np.testing.assert_allclose(partial.statistics.mean, full.samples[:, :2].mean(axis=1))
    short = _run(algo, num_steps=20, chunk_size=10)
    np.testing.assert_array_equal(partial.final_state.position, short.final_state.position)


@pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="needs Python's default SIGINT handler",
)
def test_second_ctrl_c_aborts_at_once(monkeypatch):
    def twice():
        signal.raise_signal(signal.SIGINT)  # sets the flag, restores the previous handler
        signal.raise_signal(signal.SIGINT)  # that handler raises KeyboardInterrupt here

    _SignalAfter(monkeypatch, 1, twice)
    with pytest.raises(KeyboardInterrupt) as info:
        _run(_algorithm(), num_steps=995, chunk_size=10)
    assert not isinstance(info.value, samplers.Interrupted)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigint_from_outside_stops_a_long_run_within_seconds(monkeypatch):
    algo = _algorithm()
    kwargs = {"keep_samples": False, "statistics": None, "thin": 1, "burn_in": 0}
    _run(algo, num_steps=10, **kwargs)  # compile first: the timing is of a running loop
    sent = []

    def kill_soon():
        def kill():
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)

        threading.Timer(0.5, kill).start()

    _SignalAfter(monkeypatch, 1, kill_soon)
    try:  # 10^9 steps would take hours
        _run(algo, num_steps=10**9, **kwargs)
    except KeyboardInterrupt as stop:
        stopped = time.perf_counter()
        assert isinstance(stop, samplers.Interrupted)
        partial = stop.partial
    assert stopped - sent[0] < 5.0, f"{stopped - sent[0]:.1f} s from SIGINT to Interrupted"
    assert not partial.complete and 0 < partial.steps_done < 10**9
    assert partial.samples is None and partial.final_state.position.shape == (32, 2)


@pytest.mark.parametrize("where", ["annealing", "reverse diffusion"])
def test_annealing_and_reverse_diffusion_are_interruptible(monkeypatch, where):
    _SignalAfter(monkeypatch, 1, lambda: signal.raise_signal(signal.SIGINT))
    sigmas = samplers.geometric_sigmas(1.0, 0.1, 8)
    with pytest.raises(samplers.Interrupted, match=where) as info:
        if where == "annealing":
            bip.posteriors.sample_annealed(
                jax.random.key(0), PRIOR, sigmas=sigmas, steps_per_level=1, num_chains=8
            )
        else:
            samplers.reverse_diffusion(jax.random.key(0), PRIOR, 8, sigmas)
    assert info.value.partial is None


def test_memory_guard_refuses_ten_million_chains_quickly_with_the_estimate():
    start = time.perf_counter()
    with pytest.raises(samplers.MemoryBudgetError) as info:
        samplers.check_memory(10**7, 10, (32, 32), jnp.float64, available=64 * 10**9)
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    # 10^7 chains x (10 draws + 4 state copies) x 1024 values x 8 bytes
    assert "1146.9 GB" in message and "64.0 GB" in message, message
    for fix in ("thin", "keep_samples=False", "streaming", "fewer chains"):
        assert fix in message
    assert isinstance(info.value, ValueError)  # the CLI prints ValueErrors as one line
    # with the machine's own available memory, and without kept draws: the state alone is
    # 328 GB
    with pytest.raises(samplers.MemoryBudgetError, match="327.7 GB"):
        samplers.check_memory(10**7, 10, (32, 32), jnp.float64, keep_samples=False)
    assert samplers.estimate_memory(1000, 100, (32, 32), jnp.float64) == 1000 * 104 * 1024 * 8
    assert samplers.estimate_memory(1000, 100, (2,), jnp.float32, keep_samples=False) == 32_000
    # a normal size passes and returns its estimate
    assert samplers.check_memory(100, 100, (16, 16), jnp.float64) == 100 * 104 * 256 * 8
    assert samplers.available_memory() is None or samplers.available_memory() > 0


def test_run_checks_memory_before_compiling(monkeypatch):
    traces = []
    monkeypatch.setattr(memory, "available_memory", lambda: 5000)
    with pytest.raises(samplers.MemoryBudgetError, match=r"32 chains x 9 kept draws of 16 bytes"):
        _run(_algorithm(traces))
    assert traces == []  # refused before tracing the drift
    _run(_algorithm(), keep_samples=False, statistics=None)  # 4 x 32 x 16 bytes: 2 kB


def test_a_line_on_stderr_while_compiling_when_progress_is_on(capsys):
    algo = samplers.ula(lambda x: PRIOR.score(x, 0.2), 1e-3)  # a new closure: compiles
    samplers.run(jax.random.key(0), algo, X0, 20, progress=True)
    assert "compiling the sampler (first call; cached afterwards)..." in capsys.readouterr().err
    samplers.run(jax.random.key(1), algo, X0, 20, progress=True)
    assert "compiling" not in capsys.readouterr().err
    samplers.run(jax.random.key(1), samplers.ula(lambda x: PRIOR.score(x, 0.2), 1e-3), X0, 20)
    assert capsys.readouterr().err == ""  # small runs are quiet by default
