"""Test configuration: float64 and strict rank promotion everywhere, fixed seeds, and one XLA
compilation cache shared by every test, pytest-xdist worker and notebook kernel of a run.

Many tests compile the same programs (the same prior, operator and chain shapes); the
persistent cache (a folder in the system temp dir, keyed by the program and the jax version)
compiles each once. It changes no result: only XLA's compilation is skipped, tracing (and
so ``chex.assert_max_traces``) is not.
"""

import os
import signal
import tempfile

import jax

_CACHE = os.path.join(tempfile.gettempdir(), f"bip-tests-xla-cache-{os.getuid()}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)  # inherited by notebook kernels
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

import pytest  # noqa: E402

# A run started in the background by a shell without job control (`(pytest ... &)`, some CI
# launchers) inherits SIGINT *ignored*, and bip rightly keeps ignoring it; the Ctrl-C tests
# (in this process and in the CLI processes they start) need it delivered.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def key():
    """A fixed PRNG key; every test that draws randomness starts from it."""
    return jax.random.key(20261123)


def pytest_collection_modifyitems(config, items):
    """Run the long (``slow``) tests first: with ``-n 2 --dist worksteal`` the two workers
    then end on short tests and finish together instead of one waiting on a long tail."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
