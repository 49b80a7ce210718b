"""Binary arithmetic with Caffe2's broadcasting (Add, Sub, Mul, Div), their gradient helpers
(DivGradient, SumReduceLike), and the n-ary/scalar ops Sum and Scale.

Broadcasting rules live in :mod:`netjit.compiler.ops.broadcasting`. Gradient makers follow Caffe2:
the broadcast path (SumReduceLike for B) is taken when the forward op *has* a ``broadcast`` argument,
whatever its value. Numpy-style broadcasting with ``broadcast`` absent cannot be seen from the
OperatorDef alone; when the caller knows the input shapes it may set ``g.input_shapes`` on the
GradientContext and the makers add the reductions that case needs.
"""
from __future__ import annotations

from functools import reduce
from typing import Any, Callable

import numpy as np

from netjit.compiler.ops._elementwise import const, infer_float, out, require_float, require_numeric
from netjit.compiler.ops.broadcasting import BroadcastError, broadcast_views, reduce_axes, sum_reduce_like
from netjit.compiler.ops.gradients import GradientContext, passthrough_gradient, simple_gradient
from netjit.compiler.ops.registry import (BROADCAST, ELEMWISE, INF, OPAQUE, REDUCE, Args, Lowering, TensorType,
                                          arg, defop)
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_argument

BROADCAST_ARGS = [arg("broadcast", "bool", False), arg("axis", "int", -1), arg("axis_str", "str", ""),
                  arg("order", "str", "NCHW")]
# What Caffe2's Sub/Mul makers pass on to their gradient ops when the forward op lacks the arg.
_BROADCAST_DEFAULTS = {"broadcast": 0, "axis": -1, "axis_str": "", "order": "NCHW"}
_NUMERIC = "iuf"


# --------------------------------------------------------------------------------------------
# Forward references and inference
# --------------------------------------------------------------------------------------------
def binary_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    """C's type: A's dtype; A's shape (legacy broadcast) or the numpy broadcast shape."""
    a, b = inputs[0], inputs[1]
    if np.dtype(a.dtype) != np.dtype(b.dtype):
        raise ValueError(f"A is {np.dtype(a.dtype)} but B is {np.dtype(b.dtype)}; both must have the same type")
    if np.dtype(a.dtype).kind not in _NUMERIC:
        raise ValueError(f"inputs must be numeric (int or float), got {np.dtype(a.dtype)}")
    return [TensorType(broadcast_views(args, a.shape, b.shape).out_shape, a.dtype)]


def apply_binary(ctx: Any, a: Any, b: Any, fn: Callable[[np.ndarray, np.ndarray], Any],
                 kinds: str = _NUMERIC) -> np.ndarray:
    """Check dtypes, broadcast by the op's args, apply ``fn`` to the broadcastable views."""
    what = "numeric (int or float)" if kinds == _NUMERIC else "floating-point"
    a = require_numeric(ctx, a, 0) if kinds == _NUMERIC else require_float(ctx, a, 0)
    b = np.asarray(b)
    if b.dtype != a.dtype:
        raise ctx.error(f"A ({ctx.input_name(0)!r}) is {a.dtype} but B is {b.dtype}; both inputs must have "
                        f"the same {what} type", blob=ctx.input_name(1))
    try:
        views = broadcast_views(ctx.args, a.shape, b.shape)
    except BroadcastError as err:
        raise ctx.error(f"{err} (A {ctx.input_name(0)!r} {a.shape}, B {ctx.input_name(1)!r} {b.shape})",
                        blob=ctx.input_name(err.operand)) from None
    for i, x in enumerate((a, b)):
        # Caffe2 resizes C before reading its inputs: an input sharing C's blob must be C-shaped.
        if ctx.input_name(i) == ctx.output_name(0) and x.shape != views.out_shape:
            raise ctx.error(f"input {i} is written in place but its shape {x.shape} differs from the "
                            f"output shape {views.out_shape}", blob=ctx.input_name(i))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        c = fn(a.reshape(views.a_view), b.reshape(views.b_view))
    return out(c, a.dtype)  # the views broadcast to out_shape: c is a fresh, writeable array


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        return a / b
    if np.any(b == 0):
        raise ZeroDivisionError("integer division by zero")
    # C++ integer division truncates toward zero; numpy's // floors. a - fmod(a, b) is an exact
    # multiple of b, so flooring it is exact.
    return (a - np.fmod(a, b)) // b


# --------------------------------------------------------------------------------------------
# Gradient makers
# --------------------------------------------------------------------------------------------
def forward_args(g: GradientContext, names: tuple[str, ...]) -> list[caffe2_pb2.Argument]:
    """The forward op's Arguments by name (copied as they are), Caffe2's defaults where absent."""
    found = {a.name: a for a in g.op.arg}
    # make_op's arg.extend copies the messages, so the forward op is never aliased.
    return [found[name] if name in found else make_argument(name, _BROADCAST_DEFAULTS[name]) for name in names]


def numpy_reductions(g: GradientContext) -> tuple[bool, bool]:
    """Whether A and B were numpy-broadcast (so their gradients need summing down), judged from
    ``g.input_shapes`` when the caller provides it; (False, False) when unknown or legacy."""
    shapes = getattr(g, "input_shapes", None)
    if not shapes or len(shapes) < 2 or shapes[0] is None or shapes[1] is None or g.args.broadcast:
        return False, False
    a, b = tuple(shapes[0]), tuple(shapes[1])
    c = tuple(np.broadcast_shapes(a, b))
    return a != c, b != c


_REDUCE_ARGS = ("axis", "axis_str", "order")


def _add_gradient(g: GradientContext) -> tuple[list, list]:
    a_red, b_red = numpy_reductions(g)
    dc = g.GO(0)
    ops, ga, gb = [], dc, dc
    if g.args.has("broadcast") or b_red:
        ops.append(g.make("SumReduceLike", [dc, g.I(1)], [g.GI(1)]))
        gb = g.GI(1)
    if a_red:
        ops.append(g.make("SumReduceLike", [dc, g.I(0)], [g.GI(0)]))
        ga = g.GI(0)
    return ops, [ga, gb]


def _sub_gradient(g: GradientContext) -> tuple[list, list]:
    a_red, b_red = numpy_reductions(g)
    dc = g.GO(0)
    ga = dc
    if not g.args.has("broadcast") and not b_red:
        ops = [g.make("Negative", [dc], [g.GI(1)])]
    else:
        pre = g.GI(1) + "_autogen_pre_red"
        ops = [g.make("Negative", [dc], [pre]),
               g.make("SumReduceLike", [pre, g.I(1)], [g.GI(1)], arg=forward_args(g, _REDUCE_ARGS))]
    if a_red:
        ops.append(g.make("SumReduceLike", [dc, g.I(0)], [g.GI(0)], arg=forward_args(g, _REDUCE_ARGS)))
        ga = g.GI(0)
    return ops, [ga, g.GI(1)]


def _mul_gradient(g: GradientContext) -> tuple[list, list]:
    if g.O(0) in (g.I(0), g.I(1)):
        raise ValueError(f"Mul {list(g.op.input)} -> {list(g.op.output)} runs in place, so its inputs are "
                         f"gone and its gradient cannot be computed; write the product to a new blob")
    a_red, b_red = numpy_reductions(g)
    dc = g.GO(0)
    if not g.args.has("broadcast") and not (a_red or b_red):
        return [g.make("Mul", [dc, g.I(1)], [g.GI(0)]), g.make("Mul", [dc, g.I(0)], [g.GI(1)])], [g.GI(0), g.GI(1)]
    ga = g.GI(0) + "_autogen_pre_red" if a_red else g.GI(0)
    pre = g.GI(1) + "_autogen_pre_red"
    ops = [g.make("Mul", [dc, g.I(1)], [ga], name="mul_grad_1st_op",
                  arg=forward_args(g, ("broadcast",) + _REDUCE_ARGS)),
           g.make("Mul", [dc, g.I(0)], [pre], name="mul_gradient_2nd_op"),
           g.make("SumReduceLike", [pre, g.I(1)], [g.GI(1)], name="mul_with_broadcast_grad_3",
                  arg=forward_args(g, _REDUCE_ARGS))]
    if a_red:
        ops.append(g.make("SumReduceLike", [ga, g.I(0)], [g.GI(0)], arg=forward_args(g, _REDUCE_ARGS)))
    return ops, [g.GI(0), g.GI(1)]


def _div_gradient(g: GradientContext) -> tuple[list, list]:
    if g.args.has("broadcast"):
        raise ValueError("the gradient of Div with a 'broadcast' argument is not supported (as in Caffe2); "
                         "use Mul by a Reciprocal, or broadcast B explicitly first")
    a_red, _ = numpy_reductions(g)
    if not a_red:
        return [g.make("DivGradient", [g.I(1), g.O(0), g.GO(0)], [g.GI(0), g.GI(1)])], [g.GI(0), g.GI(1)]
    pre = g.GI(0) + "_autogen_pre_red"
    return [g.make("DivGradient", [g.I(1), g.O(0), g.GO(0)], [pre, g.GI(1)]),
            g.make("SumReduceLike", [pre, g.I(0)], [g.GI(0)])], [g.GI(0), g.GI(1)]


# --------------------------------------------------------------------------------------------
# Add / Sub / Mul / Div
# --------------------------------------------------------------------------------------------
@defop("Add", inputs=2, outputs=1, args=BROADCAST_ARGS, inplace=[(0, 0), (1, 0)], category=BROADCAST,
       infer=binary_infer, expr="x0 + x1", gradient=_add_gradient)
def add(ctx, a, b):
    """C = A + B (``broadcast=1, axis=1`` adds a per-channel B to NCHW A)."""
    return apply_binary(ctx, a, b, np.add)


@defop("Sub", inputs=2, outputs=1, args=BROADCAST_ARGS, inplace=[(0, 0), (1, 0)], category=BROADCAST,
       infer=binary_infer, expr="x0 - x1", gradient=_sub_gradient, grad_copy_args=False)
def sub(ctx, a, b):
    """C = A - B."""
    return apply_binary(ctx, a, b, np.subtract)


@defop("Mul", inputs=2, outputs=1, args=BROADCAST_ARGS, inplace=[(0, 0), (1, 0)], category=BROADCAST,
       infer=binary_infer, expr="x0 * x1", gradient=_mul_gradient, grad_copy_args=False)
def mul(ctx, a, b):
    """C = A * B."""
    return apply_binary(ctx, a, b, np.multiply)


@defop("Div", inputs=2, outputs=1, args=BROADCAST_ARGS, inplace=[(0, 0)], category=BROADCAST,
       infer=binary_infer, expr="x0 / x1", gradient=_div_gradient)
def div(ctx, a, b):
    """C = A / B; integer division truncates toward zero (C++ semantics), and fails on a zero divisor."""
    try:
        return apply_binary(ctx, a, b, _divide)
    except ZeroDivisionError as err:
        raise ctx.error(str(err), blob=ctx.input_name(1)) from None


def _div_grad_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    b, c, dc = inputs
    reduce_axes(c.shape, b.shape, {})  # B must broadcast to C
    return [TensorType(tuple(c.shape), dc.dtype), TensorType(tuple(b.shape), dc.dtype)]


@defop("DivGradient", inputs=3, outputs=2, args=BROADCAST_ARGS, inplace=[(0, 0), (2, 0)], category=OPAQUE,
       infer=_div_grad_infer)
def div_gradient(ctx, b, c, dc):
    """[B, C, dC] -> [dA, dB]: dA = dC / B, dB = -dC·C / B (summed down to B's shape when B was
    numpy-broadcast). Uses C, not A, so it works after an in-place Div."""
    b, c, dc = require_float(ctx, b, 0), require_float(ctx, c, 1), require_float(ctx, dc, 2)
    if c.shape != dc.shape:
        raise ctx.error(f"C {c.shape} and dC {dc.shape} must have the same shape", blob=ctx.input_name(2))
    try:
        axes = reduce_axes(c.shape, b.shape, {})
    except BroadcastError as err:
        raise ctx.error(str(err), blob=ctx.input_name(0)) from None
    bv = b.reshape((1,) * (c.ndim - b.ndim) + b.shape) if b.ndim <= c.ndim else b.reshape(c.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        da = dc / bv
        db_full = -(dc * c) / bv
    db = np.asarray(db_full.sum(axis=axes, dtype=dc.dtype, keepdims=True)).reshape(b.shape)
    return out(da, dc.dtype), out(db, dc.dtype)


def _sum_reduce_like_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    a, b = inputs
    reduce_axes(a.shape, b.shape, args)
    return [TensorType(tuple(b.shape), a.dtype)]


@defop("SumReduceLike", inputs=2, outputs=1, args=BROADCAST_ARGS[1:], category=REDUCE,
       infer=_sum_reduce_like_infer)
def sum_reduce_like_op(ctx, a, b):
    """C = A summed down to B's shape (B's values are unused): the gradient of a broadcast B."""
    a = require_numeric(ctx, a, 0)
    try:
        return sum_reduce_like(a, np.shape(b), ctx.args)
    except BroadcastError as err:
        raise ctx.error(f"{err}", blob=ctx.input_name(1)) from None


# --------------------------------------------------------------------------------------------
# Sum / Scale
# --------------------------------------------------------------------------------------------
def _sum_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    first = inputs[0]
    for i, t in enumerate(inputs[1:], 1):
        if tuple(t.shape) != tuple(first.shape) or np.dtype(t.dtype) != np.dtype(first.dtype):
            raise ValueError(f"input {i} is {np.dtype(t.dtype)} {tuple(t.shape)} but input 0 is "
                             f"{np.dtype(first.dtype)} {tuple(first.shape)}; Sum needs equal shapes and types")
    if np.dtype(first.dtype).kind not in _NUMERIC:
        raise ValueError(f"Sum needs numeric inputs, got {np.dtype(first.dtype)}")
    return [first]


@defop("Sum", inputs=(1, INF), outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=_sum_infer,
       gradient=passthrough_gradient,
       lowering={"numba-cpu": Lowering(expr="netjit.compiler.codegen.elementwise:sum_expr")})
def sum_(ctx, *xs):
    """Y = X0 + X1 + ... (same shapes and types), added left to right.

    No ``expr``: it depends on the number of inputs (``x0 + x1 + ... + x{n-1}``)."""
    first = require_numeric(ctx, xs[0], 0)
    for i, x in enumerate(xs[1:], 1):
        x = np.asarray(x)
        if x.shape != first.shape or x.dtype != first.dtype:
            raise ctx.error(f"input {i} is {x.dtype} {x.shape} but input 0 is {first.dtype} {first.shape}; "
                            f"Sum needs inputs of equal shape and type", blob=ctx.input_name(i))
    return out(reduce(np.add, xs[1:], first.copy()), first.dtype)


@defop("Scale", inputs=1, outputs=1, args=[arg("scale", "float", 1.0)], inplace=[(0, 0)], category=ELEMWISE,
       infer=infer_float, expr="scale * x0", gradient=simple_gradient("Scale", ["GO0"], ["GI0"]))
def scale(ctx, x):
    """Y = scale·X; ``scale`` must be a float argument (``scale=2`` is rejected, as in Caffe2)."""
    x = require_float(ctx, x)
    return out(x * const(x, ctx.args.scale), x.dtype)
