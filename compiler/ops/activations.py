"""Pointwise activations (Relu, Sigmoid, Tanh, LeakyRelu, Elu), Softmax, and their gradients.

Gradients read the forward *output* Y (not X), as Caffe2's do, so they also work when the forward
op ran in place (X -> X).
"""
from __future__ import annotations

import math

import numpy as np

from netjit.compiler.ops._elementwise import const, infer_float, out, require_float
from netjit.compiler.ops.common import same_as
from netjit.compiler.ops.gradients import simple_gradient
from netjit.compiler.ops.registry import ELEMWISE, REDUCE, Args, Lowering, TensorType, arg, defop

# Caffe2's default alpha is the float 0.01f; an explicit alpha arrives through the 32-bit Argument.f.
# Using the float32 value as the default keeps "absent" and "alpha=0.01" bit-identical.
LEAKY_ALPHA = float(np.float32(0.01))


@defop("Relu", inputs=1, outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=same_as(0),
       expr="max(x0, 0)", gradient=simple_gradient("ReluGradient", ["O0", "GO0"], ["GI0"]))
def relu(ctx, x):
    """Y = max(X, 0)."""
    return np.maximum(x, x.dtype.type(0))


@defop("ReluGradient", inputs=2, outputs=1, inplace=[(1, 0)], category=ELEMWISE, infer=same_as(1),
       expr="x1 if x0 > 0 else 0")
def relu_gradient(ctx, y, dy):
    """dX = dY where Y > 0, else 0 (reads the forward output, so it also works in place)."""
    return np.where(y > 0, dy, dy.dtype.type(0))


# --------------------------------------------------------------------------------------------
# Sigmoid / Tanh
# --------------------------------------------------------------------------------------------
@defop("Sigmoid", inputs=1, outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=infer_float,
       expr="sigmoid(x0)", gradient=simple_gradient("SigmoidGradient", ["O0", "GO0"], ["GI0"]))
def sigmoid(ctx, x):
    """Y = 1 / (1 + exp(-X)), evaluated without overflow for large |X|."""
    x = require_float(ctx, x)
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    one = const(x, 1)
    return out(np.where(x >= 0, one / (one + e), e / (one + e)), x.dtype)


@defop("SigmoidGradient", inputs=2, outputs=1, inplace=[(1, 0)], category=ELEMWISE, infer=same_as(1),
       expr="x1 * x0 * (1 - x0)")
def sigmoid_gradient(ctx, y, dy):
    """[Y, dY] -> dX = dY * Y * (1 - Y)."""
    return out(dy * y * (const(y, 1) - y), dy.dtype)


@defop("Tanh", inputs=1, outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=infer_float,
       expr="tanh(x0)", gradient=simple_gradient("TanhGradient", ["O0", "GO0"], ["GI0"]))
def tanh(ctx, x):
    """Y = tanh(X)."""
    x = require_float(ctx, x)
    return out(np.tanh(x), x.dtype)


@defop("TanhGradient", inputs=2, outputs=1, inplace=[(1, 0)], category=ELEMWISE, infer=same_as(1),
       expr="x1 * (1 - x0 * x0)")
def tanh_gradient(ctx, y, dy):
    """[Y, dY] -> dX = dY * (1 - Y²)."""
    return out(dy * (const(y, 1) - y * y), dy.dtype)


# --------------------------------------------------------------------------------------------
# LeakyRelu / Elu
# --------------------------------------------------------------------------------------------
@defop("LeakyRelu", inputs=1, outputs=1, args=[arg("alpha", "float", LEAKY_ALPHA)], inplace=[(0, 0)],
       category=ELEMWISE, infer=infer_float, expr="x0 if x0 > 0 else alpha * x0",
       gradient=simple_gradient("LeakyReluGradient", ["O0", "GO0"], ["GI0"]))
def leaky_relu(ctx, x):
    """Y = X where X > 0, else alpha·X."""
    x = require_float(ctx, x)
    return out(np.where(x > 0, x, x * const(x, ctx.args.alpha)), x.dtype)


@defop("LeakyReluGradient", inputs=2, outputs=1, args=[arg("alpha", "float", LEAKY_ALPHA)], inplace=[(1, 0)],
       category=ELEMWISE, infer=same_as(1), expr="x1 if x0 > 0 else alpha * x1")
def leaky_relu_gradient(ctx, y, dy):
    """[Y, dY] -> dX = dY where Y > 0, else alpha·dY (alpha comes copied from the forward op)."""
    return out(np.where(y > 0, dy, dy * const(dy, ctx.args.alpha)), dy.dtype)


@defop("Elu", inputs=1, outputs=1, args=[arg("alpha", "float", 1.0)], inplace=[(0, 0)], category=ELEMWISE,
       infer=infer_float, expr="x0 if x0 > 0 else alpha * (exp(x0) - 1)",
       gradient=simple_gradient("EluGradient", ["O0", "GO0"], ["GI0"]))
def elu(ctx, x):
    """Y = X where X > 0, else alpha·(exp(X) - 1)."""
    x = require_float(ctx, x)
    # exp of the clamped value only: the positive branch must not overflow in the unused lane.
    neg = np.expm1(np.minimum(x, const(x, 0))) * const(x, ctx.args.alpha)
    return out(np.where(x > 0, x, neg), x.dtype)


@defop("EluGradient", inputs=2, outputs=1, args=[arg("alpha", "float", 1.0)], inplace=[(1, 0)],
       category=ELEMWISE, infer=same_as(1), expr="x1 if x0 > 0 else x1 * (x0 + alpha)")
def elu_gradient(ctx, y, dy):
    """[Y, dY] -> dX = dY where Y > 0, else dY·(Y + alpha) (= dY·alpha·exp(X))."""
    return out(np.where(y > 0, dy, dy * (y + const(y, ctx.args.alpha))), dy.dtype)


# --------------------------------------------------------------------------------------------
# Softmax
# --------------------------------------------------------------------------------------------
def softmax_rows(shape: tuple[int, ...], axis: int) -> tuple[int, int]:
    """Caffe2's 2-D view of a Softmax input: [prod(dims[:axis]), prod(dims[axis:])]."""
    ndim = len(shape)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for a {ndim}-d input {tuple(shape)}")
    axis = axis + ndim if axis < 0 else axis
    return math.prod(shape[:axis]), math.prod(shape[axis:])


def _softmax_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    softmax_rows(tuple(inputs[0].shape), args.axis)
    return infer_float(args, inputs)


SOFTMAX_ARGS = [arg("axis", "int", 1)]


@defop("Softmax", inputs=1, outputs=1, args=SOFTMAX_ARGS, category=REDUCE, infer=_softmax_infer,
       gradient=simple_gradient("SoftmaxGradient", ["O0", "GO0"], ["GI0"]),
       lowering={"numba-cpu": Lowering(standalone="netjit.compiler.codegen.reductions:softmax"),
                 "numba-cuda": Lowering(standalone="netjit.compiler.codegen.cuda_ops:softmax")})
def softmax(ctx, x):
    """Softmax over the rows of X viewed as [prod(dims[:axis]), prod(dims[axis:])]; the row max is
    subtracted first, so large logits do not overflow."""
    x = require_float(ctx, x)
    try:
        n, d = softmax_rows(x.shape, ctx.args.axis)
    except ValueError as err:
        raise ctx.error(str(err), blob=ctx.input_name(0)) from None
    if x.size == 0:
        return x.copy()
    x2 = x.reshape(n, d)
    e = np.exp(x2 - x2.max(axis=1, keepdims=True))
    return out(e / e.sum(axis=1, keepdims=True), x.dtype).reshape(x.shape)


@defop("SoftmaxGradient", inputs=2, outputs=1, args=SOFTMAX_ARGS, category=REDUCE, infer=same_as(1),
       lowering={"numba-cpu": Lowering(standalone="netjit.compiler.codegen.reductions:softmax_gradient"),
                 "numba-cuda": Lowering(standalone="netjit.compiler.codegen.cuda_ops:softmax_gradient")})
def softmax_gradient(ctx, y, dy):
    """[Y, dY] -> dX = Y ⊙ (dY - rowsum(dY ⊙ Y))."""
    if y.shape != dy.shape:
        raise ctx.error(f"Y {y.shape} and dY {dy.shape} must have the same shape", blob=ctx.input_name(1))
    try:
        n, d = softmax_rows(y.shape, ctx.args.axis)
    except ValueError as err:
        raise ctx.error(str(err), blob=ctx.input_name(0)) from None
    if y.size == 0:
        return dy.copy()
    y2, dy2 = y.reshape(n, d), dy.reshape(n, d)
    dot = (y2 * dy2).sum(axis=1, keepdims=True)
    return out(y2 * (dy2 - dot), dy.dtype).reshape(dy.shape)
