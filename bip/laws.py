"""The data law of a ``[data]`` section: one builder for ``bip train`` and ``bip solve``.

``data_law(data)`` turns a validated ``bip.specs.DataSpec`` (a recipe's or a problem spec's
``[data]`` table) into the law it names: toy manifolds give a law from ``bip.manifolds``
(``VonMises``, ``VonMisesFisher``, ``Uniform``); ``phantom``, ``ellipse-grid`` and
``shepp-logan-family`` a ``bip.images.PhantomLaw`` (uniform on the chart's parameter box,
an exact chart); ``ellipses`` a ``bip.ellipses.RandomEllipseLaw`` (fresh images, no
manifold); ``digits`` and ``faces`` a ``bip.images.EmpiricalLaw`` of the fixed data set.
A problem's ``shepp-logan`` (one image) and ``file`` sources have no law (None).

Example:
    >>> data = bip.specs.parse(bip.specs.DataSpec, {"source": "circle", "kappa": 2.0}, "x")
    >>> data_law(data)                   # VonMises(Circle(radius=1.0), kappa=2.0, loc=0.0)
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from bip import ellipses, images, manifolds
from bip.specs import DataSpec


def data_law(data: DataSpec) -> Any:
    """The law that a validated ``[data]`` section names, or None (``shepp-logan``,
    ``file``); its ``sample(rng_key, shape)`` gives ``(*shape, *event_shape)`` draws.

    Example:
        >>> law = data_law(bip.recipes.load_recipe("priors/phantom32-unet/recipe.toml").data)
        >>> law.event_shape
        (32, 32)
    """
    source = data.source
    if source == "ellipses":
        return ellipses.RandomEllipseLaw(
            data.size,
            count=(data.count[0], data.count[-1]),
            axes=data.axes,
            intensity=data.intensity,
            radius=data.radius,
        )
    if source == "ellipse-grid":
        return images.PhantomLaw(ellipses.grid_manifold(data.count[0], data.size, data.edge_width))
    if source == "shepp-logan-family":
        return images.PhantomLaw(
            ellipses.shepp_logan_manifold(data.size, edge_width=data.edge_width)
        )
    if source == "phantom":
        manifold = images.PhantomManifold(
            size=data.size, free=data.free, edge_width=data.edge_width
        )
        return images.PhantomLaw(manifold)
    if source in ("digits", "faces"):
        pixels = images.digits(data.size) if source == "digits" else images.faces()
        return images.EmpiricalLaw(jnp.asarray(pixels), name=source)
    if source == "circle":
        manifold = manifolds.Circle(radius=data.radius)
    elif source == "ellipse":
        manifold = manifolds.Ellipse(a=data.a, b=data.b)
    elif source == "sphere":
        manifold = manifolds.Sphere(dim=data.dim, radius=data.radius)
    else:
        return None
    if data.law == "vonmises":
        return manifolds.VonMises(manifold, kappa=data.kappa, loc=data.loc)
    if data.law == "vmf":
        return manifolds.VonMisesFisher(
            manifold, kappa=data.kappa, mean_direction=data.mean_direction
        )
    return manifolds.Uniform(manifold)
