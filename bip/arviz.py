"""ArviZ output: bip runs and exact references as ``xarray.DataTree`` (``arviz-base``).

ArviZ's convention is chains first, ``(chain, draw, ...)``, and so is bip's: ``Run.samples``
is ``(chains, draws, ...)`` and goes in as it is. bip's sampler statistics are per
chain (ULA/MALA: whether and when a chain diverged, the mean over steps of each info field);
they go into ``sample_stats`` broadcast over draws (``diverging``: the chain diverged at some
step; ``<field>_chain_mean``: the per-chain mean of an info field). A ``Reference``
(``bip.references``) converts with its chart coordinates ``u`` and events ``x``.

Needs the optional ``arviz-base`` (on Python 3.11: 0.8.x); ``arviz-stats[xarray]`` computes
rank-normalised split R-hat and bulk/tail ESS from the result:

Example:
    >>> dt = bip.arviz.to_datatree(run)
    >>> dt["posterior"].dataset.azstats.rhat()          # needs arviz-stats[xarray]
"""

from __future__ import annotations

import numpy as np

from bip import samplers


def _arviz_base():
    try:
        import arviz_base
    except ImportError as err:  # pragma: no cover - optional dependency
        raise ImportError(
            "bip.arviz needs arviz-base (pip install arviz-base 'arviz-stats[xarray]')"
        ) from err
    return arviz_base


def _info_fields(info_mean) -> dict:
    if info_mean is None:
        return {}
    if hasattr(info_mean, "_asdict"):
        return {k: np.asarray(v) for k, v in info_mean._asdict().items()}
    if isinstance(info_mean, dict):
        return {k: np.asarray(v) for k, v in info_mean.items()}
    return {}


def to_datatree(result, var_name: str = "x", attrs: dict | None = None):
    """An ArviZ ``DataTree`` of a bip ``Run`` or a ``bip.references.Reference``.

    Args:
        result: ``bip.samplers.Run`` (``samples`` ``(chains, draws, *event)``; a pytree of
            samples becomes one variable per leaf) or a ``Reference`` (``u`` and ``x``).
        var_name: name of the posterior variable of a ``Run`` with array samples.
        attrs: extra attributes of the tree's root (e.g. the spec's name).

    Returns:
        ``xarray.DataTree`` with a ``posterior`` group (chains first) and ``sample_stats``
        (``(chain, draw)`` each): ``diverging`` and ``<info field>_chain_mean`` for a ``Run``;
        the reference's NUTS totals go to the attributes.

    Example:
        >>> dt = bip.arviz.to_datatree(run)
        >>> dt["posterior"]["x"].shape                 # (chains, draws, *event)
    """
    from bip.references import Reference

    arviz_base = _arviz_base()
    attrs = dict(attrs or {})
    if isinstance(result, Reference):
        posterior = {"u": np.asarray(result.u), "x": np.asarray(result.x)}
        for key in ("divergences", "rhat_max", "ess_min", "accept_prob", "num_steps"):
            attrs[f"nuts_{key}"] = float(result.diagnostics[key])
        tree = arviz_base.from_dict({"posterior": posterior})
        tree.attrs = attrs
        return tree
    if not isinstance(result, samplers.Run):
        raise TypeError(f"to_datatree takes a bip Run or Reference, got {type(result).__name__}")
    if result.samples is None:
        raise ValueError("the run kept no samples: run(..., keep_samples=True)")
    if isinstance(result.samples, dict):
        leaves = result.samples
    elif hasattr(result.samples, "_asdict"):
        leaves = result.samples._asdict()
    else:
        leaves = {var_name: result.samples}
    posterior = {k: np.asarray(v) for k, v in leaves.items()}
    num_chains, num_draws = next(iter(posterior.values())).shape[:2]
    shape = (num_chains, num_draws)
    stats = {"diverging": np.broadcast_to(np.asarray(result.diverged)[:, None], shape)}
    for name, value in _info_fields(result.info_mean).items():
        if value.shape == (num_chains,):
            stats[f"{name}_chain_mean"] = np.broadcast_to(value[:, None], shape)
    attrs["divergence"] = str(result.divergence)
    tree = arviz_base.from_dict({"posterior": posterior, "sample_stats": stats})
    tree.attrs = attrs
    return tree
