"""Matrix-free CT projectors (parallel and fan beam) fast in both directions, and ellipse phantoms.

``projector(geometry, method=...)`` returns a linear ``bip.operators.Operator``
``(n, n) -> (num_detectors, num_angles)`` (skimage's sinogram layout, batched over leading
axes, float32 or float64) whose adjoint is a hand-written exact transpose, not
``jax.linear_transpose`` of the forward map: the transpose of a gather is a scatter, which
XLA CPU runs slowly (STACK.md: 247 ms vs 74 ms forward for 64 images 64x64). Here both
directions are gathers or in-place slice updates. The pair is one JAX primitive
(``jax.extend.core.Primitive``) with a transpose rule (so ``op.adjoint``, ``op.T``,
``jax.grad`` and ``jax.linear_transpose`` all call the hand-written adjoint), a batching rule
(a batch is one call, the batch axis innermost so every gathered index moves a contiguous
vector) and a JVP rule (it is linear).

The acquisition (``Geometry``, ``parallel_geometry``, ``fan_geometry``) is
``bip.ctgeometry``'s, the two kernels (``"shear"``, ``"joseph"``; their design and the rejected
alternatives) ``bip.ctkernels``'s, the ellipse phantoms and their exact sinograms
(``shepp_logan``, ``ellipse_image``, ``ellipse_sinogram``) ``bip.ctphantoms``'s; this module
re-exports them all, so ``bip.tomography`` is the one name to import.

Design numbers (a 2-core CPU shared with other jobs, load 10+, so +-50%; float32, batch as
given, minimum of 3; ``python -m bench --only tomography`` repeats them side by side):

=============================  ===============  ==============  ========  ==========
forward + adjoint              bip              skimage (loop)  ASTRA     peak RSS
=============================  ===============  ==============  ========  ==========
256 px, 60 views, batch 8      shear 39-52 ms   1.2-1.8 s       690 ms
512 px, 180 views, batch 2     shear 93-100 ms  4.5-7.8 s       1.8-2.1 s 416 MB
fan 256 px, 60 views, batch 8  joseph 370-690   -               1.6-2.7 s
=============================  ===============  ==============  ========  ==========

(skimage: ``radon`` + unfiltered ``iradon``; ASTRA 2.5 CPU ``linear`` / ``line_fanflat``.)
Parallel ``"joseph"``: 256/60/8 forward 40 ms / adjoint 120 ms; 512/180/2 300 / 330 ms.

Example:
    >>> import jax.numpy as jnp
    >>> from bip import tomography
    >>> g = tomography.parallel_geometry(64, jnp.linspace(0.0, 180.0, 30, endpoint=False))
    >>> A = tomography.projector(g)                          # "shear": (64, 64) -> (64, 30)
    >>> x = tomography.shepp_logan(64)
    >>> A(x).shape, A.adjoint(A(x)).shape
    ((64, 30), (64, 64))
    >>> exact = tomography.ellipse_sinogram(tomography.shepp_logan_ellipses(), g)
    >>> bool(jnp.linalg.norm(A(x) - exact) / jnp.linalg.norm(exact) < 0.08)   # 0.069: pixels
    True
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import struct
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from bip.ctgeometry import Geometry, fan_geometry, parallel_geometry
from bip.ctgeometry import _angles as _angles  # bip.ct checks its angles with it
from bip.ctkernels import KERNELS
from bip.ctphantoms import ellipse_image, ellipse_sinogram, shepp_logan, shepp_logan_ellipses
from bip.linop import Operator

Array = jax.Array

__all__ = [
    "METHODS",
    "Geometry",
    "ellipse_image",
    "ellipse_sinogram",
    "fan_geometry",
    "parallel_geometry",
    "projector",
    "radon_shear_apply",
    "shepp_logan",
    "shepp_logan_ellipses",
]

METHODS = ("shear", "joseph")


# --------------------------------------------------------------------------- the primitive
# project_p(data, angles; geometry, method, transpose): data (B, n, n) -> (B, nd, A) when
# transpose=False, (B, nd, A) -> (B, n, n) when True. Linear in data; angles are not
# differentiated (the rules below treat them as constants).

_project_p = Primitive("bip_tomography_project")


def _geometry(template: Geometry, angles: Array) -> Geometry:
    return template.replace(angles=angles)


def _project_impl(data, angles, *, geometry, method, transpose):
    g = _geometry(geometry, angles)
    forward, adjoint = KERNELS[method]
    batch_last = jnp.moveaxis(data, 0, -1)
    if transpose:  # (nd, A, B) -> (A, nd, B) -> image (n, n, B)
        out = adjoint(g, jnp.swapaxes(batch_last, 0, 1))
    else:
        out = jnp.swapaxes(forward(g, batch_last), 0, 1)  # (A, nd, B) -> (nd, A, B)
    return jnp.moveaxis(out, -1, 0)


def _project_abstract(data, angles, *, geometry, method, transpose):
    n, nd, a = geometry.image_size, geometry.num_detectors, angles.shape[0]
    shape = (n, n) if transpose else (nd, a)
    return jax.core.ShapedArray(data.shape[:1] + shape, data.dtype)


def _project_transpose(ct, data, angles, *, geometry, method, transpose):
    if ad.is_undefined_primal(angles):
        raise NotImplementedError("the projector is not linear in its angles")
    if type(ct) is ad.Zero:
        return None, None
    out = _project_p.bind(ct, angles, geometry=geometry, method=method, transpose=not transpose)
    return out, None


def _project_batch(args, dims, *, geometry, method, transpose):
    data, angles = args
    d_dim, a_dim = dims
    if a_dim is not None:  # a batch of geometries: one call each
        size = angles.shape[a_dim]
        data = batching.bdim_at_front(data, d_dim, size)
        angles = jnp.moveaxis(angles, a_dim, 0)
        out = jax.lax.map(
            lambda da: _project_p.bind(
                da[0], da[1], geometry=geometry, method=method, transpose=transpose
            ),
            (data, angles),
        )
        return out, 0
    data = jnp.moveaxis(data, d_dim, 0)  # (b, B, ...) -> one call on b * B events
    b, inner = data.shape[:2]
    out = _project_p.bind(
        data.reshape((b * inner,) + data.shape[2:]),
        angles,
        geometry=geometry,
        method=method,
        transpose=transpose,
    )
    return out.reshape((b, inner) + out.shape[1:]), 0


def _project_jvp(primals, tangents, *, geometry, method, transpose):
    data, angles = primals
    d_dot, a_dot = tangents
    if type(a_dot) is not ad.Zero:
        raise NotImplementedError("the projector is not differentiable in its angles")
    params = dict(geometry=geometry, method=method, transpose=transpose)
    out = _project_p.bind(data, angles, **params)
    if type(d_dot) is ad.Zero:
        return out, ad.Zero(jax.core.get_aval(out).to_tangent_aval())
    return out, _project_p.bind(d_dot, angles, **params)


_project_p.def_impl(
    partial(jax.jit, static_argnames=("geometry", "method", "transpose"))(_project_impl)
)
_project_p.def_abstract_eval(_project_abstract)
ad.primitive_transposes[_project_p] = _project_transpose
ad.primitive_jvps[_project_p] = _project_jvp
batching.primitive_batchers[_project_p] = _project_batch
mlir.register_lowering(_project_p, mlir.lower_fun(_project_impl, multiple_results=False))


@struct.dataclass
class _Static:
    """The hashable, static part of a projector: its geometry without angles and method."""

    geometry: Geometry = struct.field(pytree_node=False)
    method: str = struct.field(pytree_node=False)


def _project_apply(params: tuple[Array, _Static], x: Array) -> Array:
    angles, static = params
    template = static.geometry
    return _project_p.bind(
        x[None], angles.astype(x.dtype), geometry=template, method=static.method, transpose=False
    )[0]


def radon_shear_apply(params, x: Array) -> Array:
    """``bip.operators.radon(method="shear")``'s map: ``RadonParams`` and one ``(n, n)`` image.

    The parallel geometry of ``radon`` (``n`` unit bins) projected with ``"shear"``.
    """
    template = Geometry(None, params.image_size, params.image_size)
    angles = params.angles.astype(x.dtype)
    return _project_p.bind(x[None], angles, geometry=template, method="shear", transpose=False)[0]


# --------------------------------------------------------------------------- public operator


def projector(geometry: Geometry, method: str | None = None) -> Operator:
    """The matrix-free projector of ``geometry``: a linear ``Operator`` with an exact adjoint.

    Args:
        geometry: from ``parallel_geometry`` or ``fan_geometry``.
        method: ``"shear"`` (parallel only; the default for parallel beam) or ``"joseph"``
            (parallel or fan; the default for fan beam). See the module docstring.

    Returns:
        A linear ``Operator`` ``(n, n) -> (num_detectors, num_angles)``. Its ``adjoint``
        (also ``T``, ``jax.grad`` and ``jax.linear_transpose`` through it) runs the
        hand-written transpose; inputs of any float dtype, batched over leading axes.

    Example:
        >>> g = fan_geometry(64, jnp.arange(0.0, 360.0, 10.0), 128.0, 128.0, 96, 1.0)
        >>> A = projector(g)
        >>> A(jnp.ones((3, 64, 64))).shape
        (3, 96, 36)
        >>> bip.operators.dot_test(jax.random.key(0), A) < 1e-12
        True
    """
    if not isinstance(geometry, Geometry):
        raise TypeError(
            f"geometry must be a bip.tomography.Geometry (parallel_geometry or fan_geometry), "
            f"got {type(geometry).__name__}"
        )
    if method is None:
        method = "shear" if geometry.beam == "parallel" else "joseph"
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "shear" and geometry.beam != "parallel":
        raise ValueError('method="shear" is parallel beam only; use method="joseph" for fan beam')
    angles = geometry.angles
    template = geometry.replace(angles=None)
    n = geometry.image_size
    nd, a = geometry.sinogram_shape
    return Operator(
        fn=_project_apply,
        params=(angles, _Static(template, method)),
        input_shape=(n, n),
        output_shape=(nd, a),
        linear=True,
        name=f"projector({geometry.beam}, {n}x{n}, {nd} bins x {a} views, {method})",
    )
