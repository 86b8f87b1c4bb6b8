"""Chains across devices: a 1-D device mesh and the helpers that shard the chain axis.

Samplers run every chain independently, so the chain axis is the one to split across
devices. ``bip.samplers.run``, ``bip.samplers.reverse_diffusion`` and
``bip.experiments.circle_sweep`` take ``mesh=``; with a mesh, their one jitted program is
partitioned by XLA (``jax.sharding.NamedSharding`` on the chain axis, ``jit`` with sharding
constraints, no ``pmap``) and each device steps its own block of chains with no
communication between steps. Random keys are drawn per chain from the whole chain axis
(``split(fold_in(key, step), num_chains)``, threefry partitionable), so the same seed gives
the same draws on 1, 2 or 8 devices.

- ``chain_mesh(devices=None)``: a 1-D ``Mesh`` named ``"chains"`` over ``jax.devices()``
  (the local devices; after ``jax.distributed.initialize()`` the devices of all hosts).
- ``check_divisible(num_chains, mesh)``: the chain count must be a multiple of the device
  count; a ``ValueError`` names both numbers otherwise.
- ``put(tree, mesh)`` / ``constrain(tree, mesh)``: place / constrain arrays whose leading
  axis is the chain axis (identity when ``mesh`` is None).
- ``to_host(x)``: a NumPy copy, gathered from all hosts when the array spans several.

Example (emulate 4 CPU devices: set the flag before importing jax):
    $ XLA_FLAGS=--xla_force_host_platform_device_count=4 python script.py
    >>> mesh = bip.sharding.chain_mesh()          # 4 devices on axis "chains"
    >>> result = bip.samplers.run(key, algo, x0, 1000, mesh=mesh)   # x0: (4k, ...) chains
    >>> result.final_state.position.sharding      # NamedSharding(mesh, P('chains'))
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "chains"

__all__ = ["AXIS", "chain_mesh", "chain_spec", "check_divisible", "constrain", "put", "to_host"]


def chain_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = AXIS) -> Mesh:
    """A 1-D mesh over ``devices`` (default ``jax.devices()``) with axis ``axis_name``.

    In a single process ``jax.devices()`` are the local devices (GPUs, or CPU devices emulated
    with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``); after
    ``jax.distributed.initialize()`` they are the devices of every host, in the same order
    on every host, which is what a multi-host mesh needs.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("chain_mesh needs at least one device")
    return Mesh(np.asarray(devices, dtype=object), (axis_name,))


def chain_spec(mesh: Mesh, chain_axis: int = 0) -> PartitionSpec:
    """``PartitionSpec`` splitting axis ``chain_axis`` over all the mesh's axes."""
    axes = tuple(mesh.axis_names)
    return PartitionSpec(*([None] * chain_axis), axes if len(axes) > 1 else axes[0])


def check_divisible(num_chains: int, mesh: Mesh | None, what: str = "chains") -> None:
    """Raise a ``ValueError`` naming both numbers unless ``num_chains % mesh.size == 0``."""
    if mesh is None:
        return
    if num_chains % mesh.size:
        raise ValueError(
            f"the number of {what} ({num_chains}) must be divisible by the number of devices "
            f"in the mesh ({mesh.size}): use a multiple of {mesh.size}, e.g. "
            f"{(num_chains // mesh.size + 1) * mesh.size}"
        )


def _sharding(mesh: Mesh, x, chain_axis: int) -> NamedSharding:
    spec = chain_spec(mesh, chain_axis) if np.ndim(x) > chain_axis else PartitionSpec()
    return NamedSharding(mesh, spec)


def constrain(tree, mesh: Mesh | None, chain_axis: int = 0):
    """``with_sharding_constraint`` splitting axis ``chain_axis`` of every leaf (inside jit).

    Leaves with fewer axes (scalars) are replicated. The identity when ``mesh`` is None.
    """
    if mesh is None:
        return tree
    return jax.tree_util.tree_map(
        lambda x: jax.lax.with_sharding_constraint(x, _sharding(mesh, x, chain_axis)), tree
    )


def put(tree, mesh: Mesh | None, chain_axis: int = 0):
    """Place every leaf split along ``chain_axis`` over ``mesh`` (outside jit).

    Works across hosts: each host provides the full array (the same on every host, e.g. drawn
    from the same seed) and keeps only its own blocks. The identity when ``mesh`` is None.
    """
    if mesh is None:
        return tree

    def one(x):
        sharding = _sharding(mesh, x, chain_axis)
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(one, tree)


def to_host(x) -> np.ndarray:
    """A NumPy copy of ``x``; an array spread over several hosts is gathered first."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
