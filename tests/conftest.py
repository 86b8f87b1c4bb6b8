"""Test configuration: float64 and strict rank promotion everywhere, fixed seeds."""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

import pytest  # noqa: E402


@pytest.fixture
def key():
    """A fixed PRNG key; every test that draws randomness starts from it."""
    return jax.random.key(20261123)
