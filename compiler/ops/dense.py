"""Fully connected and matrix-product ops."""
from __future__ import annotations

import math

import numpy as np

from netjit.compiler.ops.gradients import simple_gradient
from netjit.compiler.ops.registry import OUT_FUSABLE, Args, TensorType, arg, defop


def _fc_dims(x_shape, w_shape, axis: int, axis_w: int) -> tuple[int, int, int]:
    axis = axis if axis >= 0 else axis + len(x_shape)
    axis_w = axis_w if axis_w >= 0 else axis_w + len(w_shape)
    m = math.prod(x_shape[:axis])
    k = math.prod(x_shape[axis:])
    n = math.prod(w_shape[:axis_w])
    if math.prod(w_shape[axis_w:]) != k:
        raise ValueError(f"FC: X flattened at axis {axis} has {k} columns but W {tuple(w_shape)} "
                         f"flattened at axis_w {axis_w} has {math.prod(w_shape[axis_w:])}")
    return m, k, n


def _fc_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x, w = inputs[0], inputs[1]
    _, _, n = _fc_dims(x.shape, w.shape, args.axis, args.axis_w)
    axis = args.axis if args.axis >= 0 else args.axis + len(x.shape)
    return [TensorType(tuple(x.shape[:axis]) + (n,), x.dtype)]


FC_ARGS = [arg("axis", "int", 1), arg("axis_w", "int", 1), arg("float16_compute", "bool", False)]


@defop("FC", inputs=3, outputs=1, args=FC_ARGS, category=OUT_FUSABLE, infer=_fc_infer,
       gradient=simple_gradient("FCGradient", ["I0", "I1", "GO0"], ["GI1", "GI2", "GI0"]))
def fc(ctx, x, w, b):
    """Y = X·Wᵀ + b, with X flattened to 2-D at ``axis`` and W at ``axis_w``."""
    m, k, n = _fc_dims(x.shape, w.shape, ctx.args.axis, ctx.args.axis_w)
    if b.size != n:
        raise ctx.error(f"bias has {b.size} elements but W gives {n} outputs", blob=ctx.input_name(2))
    axis = ctx.args.axis if ctx.args.axis >= 0 else ctx.args.axis + x.ndim
    y = x.reshape(m, k) @ w.reshape(n, k).T + b.reshape(1, n)
    return y.astype(x.dtype, copy=False).reshape(tuple(x.shape[:axis]) + (n,))


def _fc_grad_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x, w, _ = inputs
    _, _, n = _fc_dims(x.shape, w.shape, args.axis, args.axis_w)
    return [w, TensorType((n,), w.dtype), x]


@defop("FCGradient", inputs=3, outputs=(2, 3), args=FC_ARGS, category=OUT_FUSABLE, infer=_fc_grad_infer)
def fc_gradient(ctx, x, w, dy):
    """[X, W, dY] -> [dW, db, dX]."""
    m, k, n = _fc_dims(x.shape, w.shape, ctx.args.axis, ctx.args.axis_w)
    x2, dy2 = x.reshape(m, k), dy.reshape(m, n)
    dw = (dy2.T @ x2).astype(w.dtype, copy=False).reshape(w.shape)
    db = dy2.sum(axis=0).astype(w.dtype, copy=False)
    outs = [dw, db]
    if ctx.num_outputs == 3:
        outs.append((dy2 @ w.reshape(n, k)).astype(x.dtype, copy=False).reshape(x.shape))
    return outs
