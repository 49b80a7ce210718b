"""Unary math ops (Exp, Log, Sqrt, Pow, Clip, Negative, Abs, Sqr, Reciprocal) and their gradients.

Gradients are built from other registry ops the way Caffe2 builds them (Exp: Mul; Log: Div; Sqrt:
Scale then Div; Pow: Pow, Mul, Scale), so autodiff emits the same op lists as Caffe2.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from netjit.compiler.ops._elementwise import (const, infer_float, infer_numeric, out, require_float,
                                              require_numeric)
from netjit.compiler.ops.arith import BROADCAST_ARGS, apply_binary, binary_infer, forward_args
from netjit.compiler.ops.common import same_as
from netjit.compiler.ops.gradients import GradientContext, simple_gradient
from netjit.compiler.ops.registry import BROADCAST, ELEMWISE, Args, Lowering, TensorType, arg, defop


def _quiet(fn: Any, x: np.ndarray) -> np.ndarray:
    # log(0) = -inf, sqrt(-1) = NaN, exp(1000) = inf: values, as in C++, not warnings.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return out(fn(x), x.dtype)


def _reads_input(maker: Any) -> Any:
    """Wrap the maker of a gradient that reads the forward *input*: after an in-place run (X -> X)
    that input is gone, and Caffe2 would silently differentiate at the wrong point."""
    def checked(g: GradientContext) -> tuple[list, list]:
        if g.I(0) == g.O(0):
            raise ValueError(f"{g.op.type} {list(g.op.input)} -> {list(g.op.output)} runs in place, so its input "
                             f"is gone and its gradient (which reads it) cannot be computed")
        return maker(g)
    return checked


@defop("Exp", inputs=1, outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=infer_float, expr="exp(x0)",
       gradient=simple_gradient("Mul", ["O0", "GO0"], ["GI0"]))
def exp(ctx, x):
    """Y = e^X; dX = Y·dY."""
    return _quiet(np.exp, require_float(ctx, x))


@defop("Log", inputs=1, outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=infer_float, expr="log(x0)",
       gradient=_reads_input(simple_gradient("Div", ["GO0", "I0"], ["GI0"])))
def log(ctx, x):
    """Y = ln X; dX = dY / X."""
    return _quiet(np.log, require_float(ctx, x))


def _sqrt_gradient(g: GradientContext) -> tuple[list, list]:
    return [g.make("Scale", [g.GO(0)], [g.GI(0)], scale=0.5),
            g.make("Div", [g.GI(0), g.O(0)], [g.GI(0)])], [g.GI(0)]


@defop("Sqrt", inputs=1, outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=infer_float, expr="sqrt(x0)",
       gradient=_sqrt_gradient)
def sqrt(ctx, x):
    """Y = √X; dX = (0.5·dY) / Y."""
    return _quiet(np.sqrt, require_float(ctx, x))


# --------------------------------------------------------------------------------------------
# Pow
# --------------------------------------------------------------------------------------------
POW_ARGS = [arg("exponent", "float")] + BROADCAST_ARGS


def _pow_mode_error(args: Args, n_inputs: int) -> str | None:
    if n_inputs == 1 and not args.has("exponent"):
        return "needs an 'exponent' argument or a second input holding the exponent"
    if n_inputs == 2 and args.has("exponent"):
        return "takes the exponent from the 'exponent' argument or from a second input, not both"
    return None


def _pow_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    msg = _pow_mode_error(args, len(inputs))
    if msg:
        raise ValueError(msg)
    return binary_infer(args, inputs) if len(inputs) == 2 else infer_float(args, inputs)


def _pow_gradient(g: GradientContext) -> tuple[list, list]:
    if g.args.has("exponent"):
        e = float(g.args.exponent)
        if g.I(0) != g.O(0):
            e_minus_1 = e - 1.0
        else:
            # In place, X is gone: X^(e-1) = Y^((e-1)/e) (Caffe2's trick; loses some precision).
            if abs(e) <= 1e-12:
                raise ValueError("the gradient of in-place Pow with exponent 0 cannot be computed")
            e_minus_1 = (e - 1.0) / e
        # In place, dX and dY share one blob: X^(e-1) must not overwrite dY before the Mul reads it.
        base = g.GI(0) if g.GI(0) != g.GO(0) else g.GI(0) + "_autogen_pow"
        return [g.make("Pow", [g.I(0)], [base], exponent=e_minus_1),
                g.make("Mul", [base, g.GO(0)], [g.GI(0)]),
                g.make("Scale", [g.GI(0)], [g.GI(0)], scale=e)], [g.GI(0)]
    if g.O(0) in (g.I(0), g.I(1)):
        raise ValueError(f"Pow {list(g.op.input)} -> {list(g.op.output)} runs in place, so its inputs are "
                         f"gone and its gradient cannot be computed")
    bflag = g.args.has("broadcast")
    bargs = forward_args(g, ("broadcast", "axis", "axis_str", "order")) if bflag else []
    pre = g.GI(1) + "_autogen_pre_red"
    # d/dX = E·X^(E-1)·dY;  d/dE = ln(X)·Y·dY (summed down to E's shape under broadcast).
    ops = [g.make("ConstantFill", [g.I(1)], [g.GI(1)], value=1.0),
           g.make("Sub", [g.I(1), g.GI(1)], [g.GI(1)]),
           g.make("Pow", [g.I(0), g.GI(1)], [g.GI(0)], arg=bargs),
           g.make("Mul", [g.GI(0), g.GO(0)], [g.GI(0)]),
           g.make("Mul", [g.GI(0), g.I(1)], [g.GI(0)], arg=bargs),
           g.make("Log", [g.I(0)], [pre]),
           g.make("Mul", [pre, g.O(0)], [pre])]
    if bflag:
        ops += [g.make("Mul", [pre, g.GO(0)], [pre]),
                g.make("SumReduceLike", [pre, g.I(1)], [g.GI(1)], arg=bargs[1:])]
    else:
        ops.append(g.make("Mul", [pre, g.GO(0)], [g.GI(1)]))
    return ops, [g.GI(0), g.GI(1)]


@defop("Pow", inputs=(1, 2), outputs=1, args=POW_ARGS, inplace=[(0, 0), (1, 0)], category=BROADCAST,
       infer=_pow_infer, gradient=_pow_gradient, grad_copy_args=False,
       lowering={"numba-cpu": Lowering(expr="netjit.compiler.codegen.elementwise:pow_expr")})
def pow_(ctx, x, *exponent):
    """Y = X^exponent, the exponent a float argument or a second input (broadcast like Mul's B).

    No ``expr``: the two forms differ (``x0 ** exponent`` vs ``x0 ** x1``)."""
    msg = _pow_mode_error(ctx.args, 1 + len(exponent))
    if msg:
        raise ctx.error(msg, blob=ctx.input_name(0))
    if exponent:
        return apply_binary(ctx, x, exponent[0], np.power, kinds="f")
    x = require_float(ctx, x)
    e = const(x, ctx.args.exponent)
    return _quiet(lambda v: np.power(v, e), x)


# --------------------------------------------------------------------------------------------
# Clip
# --------------------------------------------------------------------------------------------
CLIP_ARGS = [arg("min", "float", float("-inf")), arg("max", "float", float("inf"))]


@defop("Clip", inputs=1, outputs=1, args=CLIP_ARGS, inplace=[(0, 0)], category=ELEMWISE, infer=infer_float,
       # min(max(x, lo), hi) written with conditionals only: the args are *named* min and max.
       expr="max if max < (min if x0 < min else x0) else (min if x0 < min else x0)",
       gradient=simple_gradient("ClipGradient", ["O0", "GO0"], ["GI0"]))
def clip(ctx, x):
    """Y = min(max(X, min), max); NaN stays NaN."""
    x = require_float(ctx, x)
    return out(np.minimum(np.maximum(x, const(x, ctx.args.min)), const(x, ctx.args.max)), x.dtype)


@defop("ClipGradient", inputs=2, outputs=1, args=CLIP_ARGS, inplace=[(1, 0)], category=ELEMWISE,
       infer=same_as(1), expr="0 if x0 <= min else (0 if x0 >= max else x1)")
def clip_gradient(ctx, y, dy):
    """[Y, dY] -> dX = 0 where Y <= min or Y >= max, else dY (strictly inside passes)."""
    blocked = (y <= const(y, ctx.args.min)) | (y >= const(y, ctx.args.max))
    return out(np.where(blocked, dy.dtype.type(0), dy), dy.dtype)


# --------------------------------------------------------------------------------------------
# Negative, Abs, Sqr, Reciprocal
# --------------------------------------------------------------------------------------------
@defop("Negative", inputs=1, outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=infer_numeric, expr="-x0",
       gradient=simple_gradient("Negative", ["GO0"], ["GI0"]))
def negative(ctx, x):
    """Y = -X."""
    x = require_numeric(ctx, x)
    return out(np.negative(x), x.dtype)


@defop("Abs", inputs=1, outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=infer_numeric, expr="abs(x0)",
       gradient=_reads_input(simple_gradient("AbsGradient", ["I0", "GO0"], ["GI0"])))
def abs_(ctx, x):
    """Y = |X|."""
    x = require_numeric(ctx, x)
    return out(np.abs(x), x.dtype)


@defop("AbsGradient", inputs=2, outputs=1, inplace=[(1, 0)], category=ELEMWISE, infer=same_as(1),
       expr="x1 if x0 > 0 else (-x1 if x0 < 0 else 0)")
def abs_gradient(ctx, x, dy):
    """[X, dY] -> dX = sign(X)·dY (0 at X = 0)."""
    return out(np.where(x > 0, dy, np.where(x < 0, -dy, dy.dtype.type(0))), dy.dtype)


def _sqr_gradient(g: GradientContext) -> tuple[list, list]:
    # Caffe2 scales dY in place first; scaling into dX leaves the output gradient untouched.
    return [g.make("Scale", [g.GO(0)], [g.GI(0)], scale=2.0),
            g.make("Mul", [g.GI(0), g.I(0)], [g.GI(0)])], [g.GI(0)]


@defop("Sqr", inputs=1, outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=infer_numeric, expr="x0 * x0",
       gradient=_reads_input(_sqr_gradient))
def sqr(ctx, x):
    """Y = X²."""
    x = require_numeric(ctx, x)
    return _quiet(np.square, x)


@defop("Reciprocal", inputs=1, outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=infer_float,
       expr="1 / x0", gradient=simple_gradient("ReciprocalGradient", ["O0", "GO0"], ["GI0"]))
def reciprocal(ctx, x):
    """Y = 1 / X."""
    x = require_float(ctx, x)
    return _quiet(lambda v: const(v, 1) / v, x)


@defop("ReciprocalGradient", inputs=2, outputs=1, inplace=[(1, 0)], category=ELEMWISE, infer=same_as(1),
       expr="-x1 * x0 * x0")
def reciprocal_gradient(ctx, y, dy):
    """[Y, dY] -> dX = -dY·Y²."""
    with np.errstate(over="ignore", invalid="ignore"):
        return out(-dy * y * y, dy.dtype)
