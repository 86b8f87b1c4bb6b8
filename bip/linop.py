"""``Operator``: a forward map ``x -> A x`` between fixed event shapes, and ``compose``.

The base of ``bip.operators`` (the catalogue: blur, mask, Radon ...) and ``bip.tomography``
(matrix-free projectors), kept apart so that both can build operators without importing each
other; ``bip.operators.Operator`` and ``bip.operators.compose`` are these.

Example:
    >>> import jax.numpy as jnp
    >>> from bip.linop import Operator
    >>> double = Operator(fn=lambda p, x: p * x, params=jnp.asarray(2.0), input_shape=(3,),
    ...                   output_shape=(3,), linear=True, name="2x")
    >>> double.adjoint(jnp.ones(3))                     # [2., 2., 2.]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from bip import _checks

Array = jax.Array


def _param_dtype(params) -> Any:
    """The promoted dtype of the inexact (float/complex) leaves of ``params``, or None."""
    dtypes = [
        jnp.result_type(leaf)
        for leaf in jax.tree_util.tree_leaves(params)
        if hasattr(leaf, "dtype") and jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return jnp.result_type(*dtypes) if dtypes else None


def _map_events(f: Callable, x: Array, event_ndim: int) -> Array:
    """Apply the single-event function ``f`` to ``x``; leading axes beyond the event are batch."""
    batch = x.shape[: x.ndim - event_ndim]
    if not batch:
        return f(x)
    flat = x.reshape((math.prod(batch),) + x.shape[len(batch) :])
    y = jax.vmap(f)(flat)
    return y.reshape(batch + y.shape[1:])


@struct.dataclass
class Operator:
    """A forward operator ``A: R^input_shape -> R^output_shape`` (an immutable pytree).

    Attributes:
        fn: ``fn(params, x) -> y`` on ONE event: ``x`` of shape ``input_shape`` to ``y`` of
            shape ``output_shape``. A module-level function (static: part of the treedef).
        params: pytree of parameters (arrays are leaves: traced, never baked in).
        input_shape: shape of one input event (static).
        output_shape: shape of one output event (static).
        linear: whether ``fn`` is linear in ``x`` (enables ``adjoint``, ``T``, ``gram``).
        name: a short description holding only static information (shapes, boundary), so
            operators that differ only in parameter values share one compiled function.

    Calling conventions: ``op(x)`` accepts ``x`` of shape ``(*batch, *input_shape)`` and
    returns ``(*batch, *output_shape)``; leading axes are batch axes (mapped with
    ``jax.vmap``). Integer inputs are cast to the operator's float dtype. ``A @ B`` composes
    two operators (``x -> A(B(x))``); ``A @ x`` with an array is ``A(x)``.

    Example:
        >>> M = bip.operators.matrix(jnp.array([[1.0, 2.0], [0.0, 1.0], [3.0, 0.0]]))
        >>> M(jnp.array([1.0, 1.0]))          # (2,) -> (3,)
        Array([3., 1., 3.], dtype=float64)
        >>> M.adjoint(jnp.ones(3))            # M^T y, via jax.linear_transpose
        Array([4., 3.], dtype=float64)
        >>> (M.T @ M)(jnp.ones((5, 2))).shape  # batch of 5
        (5, 2)
    """

    fn: Callable = struct.field(pytree_node=False)
    params: Any
    input_shape: tuple[int, ...] = struct.field(pytree_node=False)
    output_shape: tuple[int, ...] = struct.field(pytree_node=False)
    linear: bool = struct.field(pytree_node=False, default=False)
    name: str = struct.field(pytree_node=False, default="operator")

    # ---------------------------------------------------------------- properties

    @property
    def dtype(self):
        """The float dtype of the parameters (default float dtype when there are none)."""
        dtype = _param_dtype(self.params)
        return jnp.result_type(float) if dtype is None else dtype

    @property
    def T(self) -> Operator:  # noqa: N802 (matrix notation)
        """The adjoint as an ``Operator`` (``output_shape -> input_shape``); linear only."""
        self._require_linear("T")
        if self.fn is _transpose_apply:
            return self.params
        return Operator(
            fn=_transpose_apply,
            params=self,
            input_shape=self.output_shape,
            output_shape=self.input_shape,
            linear=True,
            name=f"{self.name}.T",
        )

    # ---------------------------------------------------------------- single events

    def _apply_single(self, x: Array) -> Array:
        return self.fn(self.params, x)

    def _adjoint_single(self, y: Array) -> Array:
        if self.fn is _transpose_apply:  # (A^T)^T = A: no transpose of a transpose
            return self.params._apply_single(y)
        pdtype = _param_dtype(self.params)
        in_dtype = y.dtype if pdtype is None else jnp.result_type(y.dtype, pdtype)
        spec = jax.ShapeDtypeStruct(self.input_shape, in_dtype)
        forward = partial(self.fn, self.params)
        out = jax.eval_shape(forward, spec)
        (x,) = jax.linear_transpose(forward, spec)(y.astype(out.dtype))
        return x

    def _require_linear(self, what: str) -> None:
        if not self.linear:
            raise ValueError(
                f"operator {self.name!r} is nonlinear, so it has no {what}; use jax.vjp of the "
                "forward map for vector-Jacobian products (or construct it with linear=True if "
                "it is in fact linear)"
            )

    def _prepare(self, name: str, value, shape: tuple[int, ...]) -> Array:
        _checks.event_shape(f"{name} (for operator {self.name!r})", value, shape)
        value = jnp.asarray(value)
        if not jnp.issubdtype(value.dtype, jnp.inexact):
            value = value.astype(self.dtype)
        return value

    # ---------------------------------------------------------------- public maps

    def __call__(self, x: Array) -> Array:
        """Forward map ``A(x)``: ``(*batch, *input_shape) -> (*batch, *output_shape)``."""
        return _forward(self, self._prepare("x", x, self.input_shape))

    def adjoint(self, y: Array) -> Array:
        """Adjoint ``A^T y``: ``(*batch, *output_shape) -> (*batch, *input_shape)``.

        Computed with ``jax.linear_transpose`` of the single-event forward map (exact up to
        rounding). Raises ``ValueError`` for a nonlinear operator.
        """
        self._require_linear("adjoint")
        return _adjoint(self, self._prepare("y", y, self.output_shape))

    def gram(self, x: Array) -> Array:
        """Normal operator ``A^T A x``: ``(*batch, *input_shape) -> (*batch, *input_shape)``."""
        self._require_linear("gram operator")
        return _gram(self, self._prepare("x", x, self.input_shape))

    def __matmul__(self, other):
        if isinstance(other, Operator):
            return compose(self, other)
        return self(other)


# The public maps are jitted with the operator as an argument: called eagerly they compile
# one program per (operator structure, shape, dtype), not one per primitive, and parameter
# arrays stay arguments (a large system matrix is never baked into the program). Under an
# outer jit they are inlined.


@jax.jit
def _forward(op: Operator, x: Array) -> Array:
    return _map_events(op._apply_single, x, len(op.input_shape))


@jax.jit
def _adjoint(op: Operator, y: Array) -> Array:
    return _map_events(op._adjoint_single, y, len(op.output_shape))


@jax.jit
def _gram(op: Operator, x: Array) -> Array:
    return _map_events(lambda u: op._adjoint_single(op._apply_single(u)), x, len(op.input_shape))


def _transpose_apply(op: Operator, y: Array) -> Array:
    return op._adjoint_single(y)


def _compose_apply(params: tuple[Operator, Operator], x: Array) -> Array:
    outer, inner = params
    return outer._apply_single(inner._apply_single(x))


def compose(outer: Operator, inner: Operator) -> Operator:
    """The composition ``x -> outer(inner(x))`` (also written ``outer @ inner``).

    Args:
        outer: applied second; its ``input_shape`` must equal ``inner.output_shape``.
        inner: applied first.

    Returns:
        An ``Operator`` ``inner.input_shape -> outer.output_shape``, linear when both are;
        its adjoint is ``inner^T outer^T`` (by ``jax.linear_transpose``).

    Example:
        >>> A = bip.operators.gaussian_blur((32, 32), 1.0)
        >>> S = bip.operators.subsample((32, 32), stride=2)      # (32, 32) -> (16, 16)
        >>> (S @ A)(jnp.ones((32, 32))).shape
        (16, 16)
    """
    for arg, value in (("outer", outer), ("inner", inner)):
        if not isinstance(value, Operator):
            raise TypeError(f"{arg} must be a bip.operators.Operator, got {type(value).__name__}")
    if tuple(inner.output_shape) != tuple(outer.input_shape):
        raise ValueError(
            f"cannot compose: inner.output_shape {tuple(inner.output_shape)} (of "
            f"{inner.name!r}) must equal outer.input_shape {tuple(outer.input_shape)} (of "
            f"{outer.name!r})"
        )
    return Operator(
        fn=_compose_apply,
        params=(outer, inner),
        input_shape=inner.input_shape,
        output_shape=outer.output_shape,
        linear=outer.linear and inner.linear,
        name=f"{outer.name} @ {inner.name}",
    )
