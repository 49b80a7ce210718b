"""FCTransposed: a fully connected layer whose weight is stored [K, N] (input by output), the
transpose of FC's [N, K]; and its gradient FCTransposedGradient [X, W, dY] -> [dW, db(, dX)].

X is flattened to [M, K] at ``axis`` and W to [K, N] at ``axis_w``; Y = X·W + b has shape
X.shape[:axis] + [N].

    >>> from netjit.compiler.ops.registry import lookup
    >>> lookup("FCTransposed").gradient is not None
    True
"""
from __future__ import annotations

import math

import numpy as np

from netjit.compiler.ops.dense import FC_ARGS
from netjit.compiler.ops.gradients import simple_gradient
from netjit.compiler.ops.registry import OPAQUE, Args, TensorType, defop


def fct_dims(x_shape, w_shape, axis: int, axis_w: int) -> tuple[int, int, int, int]:
    """(M, K, N, canonical axis) of an FCTransposed, or ValueError naming the mismatch."""
    if not -len(x_shape) <= axis < max(len(x_shape), 1):
        raise ValueError(f"axis {axis} is out of range for X of shape {tuple(x_shape)}")
    if not -len(w_shape) <= axis_w < max(len(w_shape), 1):
        raise ValueError(f"axis_w {axis_w} is out of range for W of shape {tuple(w_shape)}")
    axis = axis + len(x_shape) if axis < 0 else axis
    axis_w = axis_w + len(w_shape) if axis_w < 0 else axis_w
    m, k = math.prod(x_shape[:axis]), math.prod(x_shape[axis:])
    kw, n = math.prod(w_shape[:axis_w]), math.prod(w_shape[axis_w:])
    if kw != k:
        raise ValueError(f"X flattened at axis {axis} has {k} columns but W {tuple(w_shape)} flattened at "
                         f"axis_w {axis_w} has {kw} rows (FCTransposed's W is [K, N])")
    return m, k, n, axis


def _infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x, w = inputs[0], inputs[1]
    _, _, n, axis = fct_dims(x.shape, w.shape, args.axis, args.axis_w)
    return [TensorType(tuple(x.shape[:axis]) + (n,), x.dtype)]


def _grad_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x, w, _ = inputs
    _, _, n, _ = fct_dims(x.shape, w.shape, args.axis, args.axis_w)
    return [w, TensorType((n,), w.dtype), x]


def _dims(ctx, x, w):
    try:
        return fct_dims(x.shape, w.shape, ctx.args.axis, ctx.args.axis_w)
    except ValueError as err:
        raise ctx.error(str(err), blob=ctx.input_name(1)) from None


def _float_inputs(ctx, *arrays):
    out = []
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if a.dtype.kind != "f":
            raise ctx.error(f"input {i} must be a floating-point tensor, got {a.dtype}", blob=ctx.input_name(i))
        out.append(a)
    return out


@defop("FCTransposed", inputs=3, outputs=1, args=FC_ARGS, category=OPAQUE, infer=_infer,
       gradient=simple_gradient("FCTransposedGradient", ["I0", "I1", "GO0"], ["GI1", "GI2", "GI0"]))
def fc_transposed(ctx, x, w, b):
    """Y = X·W + b with W stored [K, N]."""
    x, w, b = _float_inputs(ctx, x, w, b)
    m, k, n, axis = _dims(ctx, x, w)
    if b.size != n:
        raise ctx.error(f"bias has {b.size} elements but W gives {n} outputs", blob=ctx.input_name(2))
    y = x.reshape(m, k) @ w.reshape(k, n) + b.reshape(1, n)
    return y.astype(x.dtype, copy=False).reshape(tuple(x.shape[:axis]) + (n,))


@defop("FCTransposedGradient", inputs=3, outputs=(2, 3), args=FC_ARGS, category=OPAQUE, infer=_grad_infer)
def fc_transposed_gradient(ctx, x, w, dy):
    """[X, W, dY] -> [dW = Xᵀ·dY (shaped like W), db = Σ_rows dY, dX = dY·Wᵀ]."""
    x, w, dy = _float_inputs(ctx, x, w, dy)
    m, k, n, _ = _dims(ctx, x, w)
    if dy.size != m * n:
        raise ctx.error(f"dY has {dy.size} elements but Y has {m}x{n}", blob=ctx.input_name(2))
    x2, dy2 = x.reshape(m, k), dy.reshape(m, n)
    outs = [(x2.T @ dy2).astype(w.dtype, copy=False).reshape(w.shape), dy2.sum(axis=0).astype(w.dtype, copy=False)]
    if ctx.num_outputs == 3:
        outs.append((dy2 @ w.reshape(k, n).T).astype(x.dtype, copy=False).reshape(x.shape))
    return outs
