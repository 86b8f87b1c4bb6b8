"""Langevin samplers on BlackJAX kernels, many chains at once, with divergence reports.

The public face of four modules, one idea each:

- ``bip.kernels``: ``ula(drift_fn, step_size)`` (unadjusted Langevin ``x + h * drift(x) +
  sqrt(2 h) z`` on BlackJAX's ``sgld`` kernel fed the full drift; works for score-only
  priors and pytree positions), ``mala(logdensity_fn, step_size)`` (BlackJAX's MALA),
  ``LangevinState``/``LangevinInfo``/``init``/``build_kernel``, and the one step rule
  ``default_step_size(sigma, alpha) = c * sigma^(2 - alpha)`` (SCIENCE.md section 3: the
  drift ``sigma^alpha s`` has stiffness ``~ sigma^(alpha - 2)``);
- ``bip.chains``: ``run(rng_key, algorithm, positions, num_steps, ...)``, the one chain
  loop every multi-chain sampler of bip goes through: folded per-chain keys (``key_impl``:
  threefry, rbg, unsafe_rbg), ``vmap`` over chains, divergence freezing and reporting by
  chain index, burn-in, thinning, streaming statistics (``statistics=``, with
  ``keep_samples=False`` memory is O(chains)), device sharding (``mesh=``; the same seed
  gives the same draws on any device count and for any chunk size), schedules (a step's
  algorithm may depend on the step index and on per-chain parameters);
- ``bip.hostloop``: the host loop over jitted chunks of about a second: Ctrl-C stops a run
  between chunks within a few seconds, ``Interrupted`` (a ``KeyboardInterrupt``) carries the
  partial ``Run`` (``complete=False``, ``steps_done``) in ``.partial``; a second Ctrl-C aborts
  at once;
- ``bip.memory``: ``estimate_memory`` / ``check_memory``, a ``MemoryBudgetError`` (a
  ``ValueError``) naming the estimate and the fixes; ``run`` checks before compiling;
- ``bip.diffusion``: ``reverse_diffusion(...)``, VE reverse diffusion (Euler-Maruyama over a
  geometric sigma schedule) and predictor-corrector with a standard or tempered Langevin
  corrector, a schedule of ``run``.

Example:
    >>> prior = bip.priors.exact(bip.manifolds.Uniform(bip.manifolds.Circle()))
    >>> drift = lambda x: prior.score(x, 0.1)
    >>> algo = bip.samplers.ula(drift, bip.samplers.default_step_size(0.1, alpha=0.0))
    >>> x0 = jnp.zeros((100, 2)) + jnp.array([1.0, 0.0])
    >>> result = bip.samplers.run(jax.random.key(0), algo, x0, num_steps=1000, thin=100)
    >>> result.samples.shape      # (chains, kept, 2)
    (100, 10, 2)
"""

from __future__ import annotations

from bip import chains, diffusion, hostloop, kernels, memory
from bip.chains import *  # noqa: F403  (the public names of each module, re-exported)
from bip.diffusion import *  # noqa: F403
from bip.hostloop import *  # noqa: F403
from bip.kernels import *  # noqa: F403
from bip.memory import *  # noqa: F403

__all__ = [
    *kernels.__all__,
    *chains.__all__,
    *hostloop.__all__,
    *memory.__all__,
    *diffusion.__all__,
]
