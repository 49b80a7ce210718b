"""Comparisons (EQ, NE, LT, LE, GT, GE) and boolean logic (And, Or, Xor, Not) with Caffe2's
broadcasting: the condition ops that control flow reads (``ops.stop_if(ops.LE([c, zero]))``,
``If``/``While`` condition blobs). Every output is a bool tensor; the compiled backends fuse them
like any other elementwise op.

>>> # GT([x, zero]) with x = 0.5, zero = 0.0 gives True (a bool scalar tensor)
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from netjit.compiler.ops.arith import BROADCAST_ARGS
from netjit.compiler.ops.broadcasting import BroadcastError, broadcast_views
from netjit.compiler.ops.gradients import no_gradient
from netjit.compiler.ops.registry import BROADCAST, ELEMWISE, Args, TensorType, defop

_COMPARABLE = "iufb"


def _binary_bool_infer(kinds: str, what: str) -> Callable[[Args, list[TensorType]], list[TensorType]]:
    def infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
        a, b = inputs[0], inputs[1]
        if np.dtype(a.dtype) != np.dtype(b.dtype):
            raise ValueError(f"A is {np.dtype(a.dtype)} but B is {np.dtype(b.dtype)}; both must have the same type")
        if np.dtype(a.dtype).kind not in kinds:
            raise ValueError(f"inputs must be {what}, got {np.dtype(a.dtype)}")
        return [TensorType(broadcast_views(args, a.shape, b.shape).out_shape, np.dtype(np.bool_))]
    return infer


_compare_infer = _binary_bool_infer(_COMPARABLE, "numeric or bool tensors")
_logic_infer = _binary_bool_infer("b", "bool tensors")


def _apply(ctx: Any, a: Any, b: Any, fn: Callable[[np.ndarray, np.ndarray], Any], kinds: str,
           what: str) -> np.ndarray:
    """Check both inputs share one dtype of ``kinds``, broadcast by the op's args, apply ``fn``."""
    a, b = np.asarray(a), np.asarray(b)
    for i, x in enumerate((a, b)):
        if x.dtype.kind not in kinds:
            raise ctx.error(f"input {i} must be {what}, got dtype {x.dtype}", blob=ctx.input_name(i))
    if a.dtype != b.dtype:
        raise ctx.error(f"A ({ctx.input_name(0)!r}) is {a.dtype} but B is {b.dtype}; both inputs must have "
                        f"the same type", blob=ctx.input_name(1))
    try:
        views = broadcast_views(ctx.args, a.shape, b.shape)
    except BroadcastError as err:
        raise ctx.error(f"{err} (A {ctx.input_name(0)!r} {a.shape}, B {ctx.input_name(1)!r} {b.shape})",
                        blob=ctx.input_name(err.operand)) from None
    result = fn(a.reshape(views.a_view), b.reshape(views.b_view))
    return np.array(np.broadcast_to(result, views.out_shape), dtype=np.bool_, order="C")   # keeps 0-d 0-d


def _compare(fn: Callable[[np.ndarray, np.ndarray], Any]) -> Callable[..., np.ndarray]:
    def reference(ctx: Any, a: Any, b: Any) -> np.ndarray:
        return _apply(ctx, a, b, fn, _COMPARABLE, "a numeric or bool tensor")
    return reference


def _logic(fn: Callable[[np.ndarray, np.ndarray], Any]) -> Callable[..., np.ndarray]:
    def reference(ctx: Any, a: Any, b: Any) -> np.ndarray:
        return _apply(ctx, a, b, fn, "b", "a bool tensor")
    return reference


# Comparisons and logic have no gradient in Caffe2 (SHOULD_NOT_DO_GRADIENT): a condition blob
# stops the backward pass quietly, which is what If/While gradients rely on.
_CMP = dict(inputs=2, outputs=1, args=BROADCAST_ARGS, inplace=[(0, 0), (1, 0)], category=BROADCAST,
            infer=_compare_infer, gradient=no_gradient)
_LOGIC = dict(inputs=2, outputs=1, args=BROADCAST_ARGS, inplace=[(0, 0), (1, 0)], category=BROADCAST,
              infer=_logic_infer, gradient=no_gradient)

eq = defop("EQ", expr="x0 == x1", **_CMP)(_compare(np.equal))
eq.doc = "C = (A == B), elementwise with Caffe2 broadcasting; a bool tensor."
ne = defop("NE", expr="x0 != x1", **_CMP)(_compare(np.not_equal))
ne.doc = "C = (A != B); a bool tensor."
lt = defop("LT", expr="x0 < x1", **_CMP)(_compare(np.less))
lt.doc = "C = (A < B); a bool tensor."
le = defop("LE", expr="x0 <= x1", **_CMP)(_compare(np.less_equal))
le.doc = "C = (A <= B); a bool tensor."
gt = defop("GT", expr="x0 > x1", **_CMP)(_compare(np.greater))
gt.doc = "C = (A > B); a bool tensor."
ge = defop("GE", expr="x0 >= x1", **_CMP)(_compare(np.greater_equal))
ge.doc = "C = (A >= B); a bool tensor."
logical_and = defop("And", expr="x0 and x1", **_LOGIC)(_logic(np.logical_and))
logical_and.doc = "C = A and B over bool tensors."
logical_or = defop("Or", expr="x0 or x1", **_LOGIC)(_logic(np.logical_or))
logical_or.doc = "C = A or B over bool tensors."
logical_xor = defop("Xor", expr="x0 != x1", **_LOGIC)(_logic(np.logical_xor))
logical_xor.doc = "C = A xor B over bool tensors."


def _not_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    if np.dtype(inputs[0].dtype).kind != "b":
        raise ValueError(f"input must be a bool tensor, got {np.dtype(inputs[0].dtype)}")
    return [TensorType(tuple(inputs[0].shape), np.dtype(np.bool_))]


@defop("Not", inputs=1, outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=_not_infer, expr="not x0",
       gradient=no_gradient)
def logical_not(ctx, x):
    """Y = not X over a bool tensor."""
    x = np.asarray(x)
    if x.dtype.kind != "b":
        raise ctx.error(f"input must be a bool tensor, got dtype {x.dtype}", blob=ctx.input_name(0))
    return np.logical_not(x)
