"""Losses and metrics: SquaredL2Distance, AveragedLoss, LabelCrossEntropy, CrossEntropy,
SoftmaxWithLoss and Accuracy, with their gradient ops.

Caffe2 registers these for float only; the references keep the input's float dtype (so gradient
checks can run in float64) except Accuracy, whose result is always float32 as in Caffe2.
Probabilities go through ``max(p, 1e-20)`` before a log, Caffe2's threshold::

    LabelCrossEntropy([softmax, label], ["xent"])      # xent[i] = -log(softmax[i, label[i]])
    AveragedLoss(["xent"], ["loss"])                   # a 0-d mean
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from netjit.compiler.ops.gradients import GradientContext, simple_gradient
from netjit.compiler.ops.registry import OPAQUE, REDUCE, Args, Lowering, TensorType, arg, defop

LOG_THRESHOLD = 1e-20


def _rows(shape: tuple[int, ...]) -> tuple[int, int]:
    """(N, D) of the [N, D] view these ops take: dim 0 by the rest; a 1-D input is one row."""
    if len(shape) > 1:
        return shape[0], math.prod(shape[1:])
    return 1, (shape[0] if shape else 1)


def _float_input(ctx: Any, x: Any, i: int) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise ctx.error(f"expects a float tensor, got {x.dtype}", blob=ctx.input_name(i))
    return x


def _int_labels(ctx: Any, label: Any, i: int, n: int, d: int) -> np.ndarray:
    """Class labels: int32, [N] or [N, 1], each in [0, D). Errors name the label blob."""
    label = np.asarray(label)
    if label.dtype != np.int32:
        raise ctx.error(f"labels must be int32, got {label.dtype}", blob=ctx.input_name(i))
    if not (label.ndim == 1 or (label.ndim == 2 and label.shape[1] == 1)) or label.shape[0] != n:
        raise ctx.error(f"labels must have shape [{n}] or [{n}, 1], got {list(label.shape)}",
                        blob=ctx.input_name(i))
    flat = label.reshape(-1)
    bad = np.flatnonzero((flat < 0) | (flat >= d))
    if bad.size:
        k = int(bad[0])
        raise ctx.error(f"label {int(flat[k])} at row {k} is out of range: there are {d} classes",
                        blob=ctx.input_name(i))
    return flat.astype(np.intp)


# --------------------------------------------------------------------------------------------
# SquaredL2Distance
# --------------------------------------------------------------------------------------------
def _batch(shape: tuple[int, ...]) -> int:
    return shape[0] if shape else 1


def _sqdist_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x = inputs[0]
    return [TensorType((_batch(x.shape),), x.dtype)]


@defop("SquaredL2Distance", inputs=2, outputs=1, category=REDUCE, infer=_sqdist_infer,
       gradient=simple_gradient("SquaredL2DistanceGradient", ["I0", "I1", "GO0"], ["GI0", "GI1"]),
       lowering={"numba-cpu": Lowering(standalone="netjit.compiler.codegen.reductions:squared_l2_distance")})
def squared_l2_distance(ctx, x, y):
    """Z[i] = ½‖X[i] − Y[i]‖² over each row (dim 0) of equal-shaped X and Y; Z is [N]."""
    x, y = _float_input(ctx, x, 0), _float_input(ctx, y, 1)
    if x.shape != y.shape:
        raise ctx.error(f"X {list(x.shape)} and Y {list(y.shape)} must have the same shape",
                        blob=ctx.input_name(1))
    n = _batch(x.shape)
    diff = (x - y).reshape(n, -1)
    return (0.5 * np.einsum("ij,ij->i", diff, diff)).astype(x.dtype, copy=False)


def _sqdist_grad_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    return [inputs[0], inputs[1]]


@defop("SquaredL2DistanceGradient", inputs=3, outputs=2, category=OPAQUE, infer=_sqdist_grad_infer,
       lowering={"numba-cpu": Lowering(
           standalone="netjit.compiler.codegen.reductions:squared_l2_distance_gradient")})
def squared_l2_distance_gradient(ctx, x, y, dz):
    """[X, Y, dZ] -> [dX, dY]: dX = (X − Y)·dZ[i] per row, dY = −dX."""
    n = _batch(x.shape)
    dz = np.asarray(dz).reshape(n, 1)
    dx = ((x - y).reshape(n, -1) * dz).reshape(x.shape).astype(x.dtype, copy=False)
    return dx, (-dx).astype(y.dtype, copy=False)


# --------------------------------------------------------------------------------------------
# AveragedLoss
# --------------------------------------------------------------------------------------------
def _scalar_like(i: int):
    def infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
        return [TensorType((), inputs[i].dtype)]
    return infer


@defop("AveragedLoss", inputs=1, outputs=1, category=REDUCE, infer=_scalar_like(0),
       gradient=simple_gradient("AveragedLossGradient", ["I0", "GO0"], ["GI0"]),
       lowering={"numba-cpu": Lowering(standalone="netjit.compiler.codegen.reductions:averaged_loss"),
                 "numba-cuda": Lowering(standalone="netjit.compiler.codegen.cuda_ops:averaged_loss")})
def averaged_loss(ctx, x):
    """A 0-d tensor: the mean of all elements of X."""
    x = _float_input(ctx, x, 0)
    return np.asarray(x.sum(dtype=x.dtype) / x.dtype.type(x.size), dtype=x.dtype)


def _same_as_first(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    return [inputs[0]]


@defop("AveragedLossGradient", inputs=2, outputs=1, category=OPAQUE, infer=_same_as_first,
       # dL / numel per element: fuses like an elementwise op when dL holds one element.
       lowering={"numba-cpu": Lowering(loop="netjit.compiler.codegen.elementwise:averaged_loss_gradient_loop")})
def averaged_loss_gradient(ctx, x, dloss):
    """[X, dL] -> dX: every element dL / numel(X)."""
    dloss = np.asarray(dloss)
    if dloss.size != 1:
        raise ctx.error(f"the loss gradient must hold one element, got shape {list(dloss.shape)}",
                        blob=ctx.input_name(1))
    return np.full(x.shape, dloss.reshape(-1)[0] / x.size, dtype=x.dtype)


# --------------------------------------------------------------------------------------------
# LabelCrossEntropy and CrossEntropy
# --------------------------------------------------------------------------------------------
def _xent_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x = inputs[0]
    return [TensorType((_rows(tuple(x.shape))[0],), x.dtype)]


@defop("LabelCrossEntropy", inputs=2, outputs=1, category=OPAQUE, infer=_xent_infer,
       gradient=simple_gradient("LabelCrossEntropyGradient", ["I0", "I1", "GO0"], ["GI0"]),
       lowering={"numba-cuda": Lowering(standalone="netjit.compiler.codegen.cuda_ops:label_cross_entropy")})
def label_cross_entropy(ctx, x, label):
    """Y[i] = −ln max(X[i, label[i]], 1e−20) for X [N, D] and int32 labels [N] or [N, 1]."""
    x = _float_input(ctx, x, 0)
    n, d = _rows(x.shape)
    lab = _int_labels(ctx, label, 1, n, d)
    picked = x.reshape(n, d)[np.arange(n), lab]
    return (-np.log(np.maximum(picked, LOG_THRESHOLD))).astype(x.dtype, copy=False)


@defop("LabelCrossEntropyGradient", inputs=3, outputs=1, category=OPAQUE, infer=_same_as_first,
       lowering={"numba-cuda": Lowering(standalone="netjit.compiler.codegen.cuda_ops:label_cross_entropy_gradient")})
def label_cross_entropy_gradient(ctx, x, label, dy):
    """[X, label, dY] -> dX: −dY[i] / max(X[i, label], 1e−20) at the label, 0 elsewhere."""
    n, d = _rows(x.shape)
    lab = _int_labels(ctx, label, 1, n, d)
    x2 = x.reshape(n, d)
    dx = np.zeros((n, d), dtype=x.dtype)
    rows = np.arange(n)
    dx[rows, lab] = -np.asarray(dy).reshape(n) / np.maximum(x2[rows, lab], LOG_THRESHOLD)
    return dx.reshape(x.shape)


def _prob_labels(ctx: Any, x: np.ndarray, label: Any) -> tuple[np.ndarray, np.ndarray]:
    n, d = _rows(x.shape)
    label = _float_input(ctx, label, 1)
    if label.size != n * d or (label.ndim > 1 and label.shape[0] != n):
        raise ctx.error(f"labels must have X's shape {list(x.shape)}, got {list(label.shape)}",
                        blob=ctx.input_name(1))
    return x.reshape(n, d), label.reshape(n, d)


@defop("CrossEntropy", inputs=2, outputs=1, category=REDUCE, infer=_xent_infer,
       gradient=simple_gradient("CrossEntropyGradient", ["I0", "I1", "GO0"], ["GI0"]))
def cross_entropy(ctx, x, label):
    """Y[i] = −Σ_j label[i, j]·ln max(X[i, j], 1e−20) with float labels shaped like X."""
    x = _float_input(ctx, x, 0)
    x2, l2 = _prob_labels(ctx, x, label)
    return (-(l2 * np.log(np.maximum(x2, LOG_THRESHOLD))).sum(axis=1)).astype(x.dtype, copy=False)


@defop("CrossEntropyGradient", inputs=3, outputs=1, category=OPAQUE, infer=_same_as_first)
def cross_entropy_gradient(ctx, x, label, dy):
    """[X, label, dY] -> dX = −dY[i]·label[i, j] / max(X[i, j], 1e−20)."""
    x2, l2 = _prob_labels(ctx, x, label)
    dy = np.asarray(dy).reshape(-1, 1)
    return (-dy * l2 / np.maximum(x2, LOG_THRESHOLD)).astype(x.dtype, copy=False).reshape(x.shape)


# --------------------------------------------------------------------------------------------
# SoftmaxWithLoss
# --------------------------------------------------------------------------------------------
SWL_ARGS = [arg("scale", "float", 1.0), arg("label_prob", "bool", False), arg("axis", "int", 1)]


def _swl_dims(ctx: Any, x: np.ndarray) -> tuple[int, int]:
    axis = ctx.args.axis + x.ndim if ctx.args.axis < 0 else ctx.args.axis
    if not 0 <= axis <= x.ndim:
        raise ctx.error(f"axis {ctx.args.axis} is out of range for a rank-{x.ndim} input",
                        blob=ctx.input_name(0))
    return math.prod(x.shape[:axis]), math.prod(x.shape[axis:])


def _swl_labels(ctx: Any, label: Any, x: np.ndarray, n: int, d: int) -> np.ndarray:
    """Integer labels flattened to [N], or (label_prob=1) float distributions as [N, D]."""
    label = np.asarray(label)
    if ctx.args.label_prob:
        label = _float_input(ctx, label, 1)
        if label.size != n * d or label.ndim < 2:
            raise ctx.error(f"probability labels must have {n}x{d} elements in rank >= 2, got shape "
                            f"{list(label.shape)}", blob=ctx.input_name(1))
        return label.reshape(n, d)
    if label.dtype != np.int32:
        raise ctx.error(f"labels must be int32, got {label.dtype}", blob=ctx.input_name(1))
    if label.size != n:
        raise ctx.error(f"expected {n} labels, got shape {list(label.shape)}", blob=ctx.input_name(1))
    flat = label.reshape(-1)
    bad = np.flatnonzero((flat < 0) | (flat >= d))
    if bad.size:
        k = int(bad[0])
        raise ctx.error(f"label {int(flat[k])} at row {k} is out of range: there are {d} classes",
                        blob=ctx.input_name(1))
    return flat.astype(np.intp)


def _swl_weights(ctx: Any, weights: Any, n: int, i: int, dtype: np.dtype) -> np.ndarray:
    if weights is None:
        return np.ones(n, dtype)
    weights = np.asarray(weights)
    if weights.size != n:
        raise ctx.error(f"expected {n} weights, got shape {list(weights.shape)}", blob=ctx.input_name(i))
    return weights.reshape(n).astype(dtype, copy=False)


def _swl_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x = inputs[0]
    return [x, TensorType((), x.dtype)]


def _swl_gradient(g: GradientContext) -> tuple[list, list]:
    ins = [g.I(0), g.I(1), g.O(0), g.GO(1)]
    if g.n_inputs == 3:
        ins.insert(2, g.I(2))
    g_input: list[str | None] = [g.GI(0)] + [None] * (g.n_inputs - 1)
    return [g.make("SoftmaxWithLossGradient", ins, [g.GI(0)])], g_input


@defop("SoftmaxWithLoss", inputs=(2, 3), outputs=2, args=SWL_ARGS, category=OPAQUE, infer=_swl_infer,
       gradient=_swl_gradient, lowering={"numba-cuda": Lowering(standalone="netjit.compiler.codegen.cuda_ops:softmax_with_loss")})
def softmax_with_loss(ctx, x, label, weights=None):
    """[logits, labels(, weights)] -> [P, loss]: P = softmax over the [N, D] view at ``axis``;
    loss = scale·Σ_i w_i·(−ln P[i, label_i]) / Σ_i w_i (0 when Σ w = 0). With label_prob=1 the
    labels are distributions and a row's loss is −Σ_j label_ij·ln max(P_ij, 1e−20)."""
    x = _float_input(ctx, x, 0)
    n, d = _swl_dims(ctx, x)
    lab = _swl_labels(ctx, label, x, n, d)
    w = _swl_weights(ctx, weights, n, 2, x.dtype)
    shifted = x.reshape(n, d) - x.reshape(n, d).max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    if ctx.args.label_prob:
        if np.any(lab < 0):
            raise ctx.error("probability labels must be non-negative", blob=ctx.input_name(1))
        sums = lab.sum(axis=1)
        bad = np.flatnonzero(np.abs(sums - 1.0) >= 1e-5)
        if bad.size:
            raise ctx.error(f"label probabilities of row {int(bad[0])} sum to {float(sums[bad[0]])}, not 1",
                            blob=ctx.input_name(1))
        row_loss = -(np.log(np.maximum(p, LOG_THRESHOLD)) * lab).sum(axis=1)
    else:
        row_loss = -log_p[np.arange(n), lab]
    total_w = w.sum()
    loss = (row_loss * w).sum() * ctx.args.scale / total_w if total_w != 0 else 0.0
    return p.reshape(x.shape).astype(x.dtype, copy=False), np.asarray(loss, dtype=x.dtype)


@defop("SoftmaxWithLossGradient", inputs=(4, 5), outputs=1, args=SWL_ARGS, category=OPAQUE,
       infer=_same_as_first, lowering={"numba-cuda": Lowering(standalone="netjit.compiler.codegen.cuda_ops:softmax_with_loss_gradient")})
def softmax_with_loss_gradient(ctx, x, label, *rest):
    """[X, labels, (weights,) P, dloss] -> dX = (P − onehot(label))·w_i · scale·dloss / Σ w
    (label_prob=1: P − label). Unscaled when Σ w = 0."""
    weights = rest[0] if len(rest) == 3 else None
    p, dloss = rest[-2], rest[-1]
    n, d = _swl_dims(ctx, x)
    lab = _swl_labels(ctx, label, x, n, d)
    w = _swl_weights(ctx, weights, n, 2, x.dtype)
    dx = np.array(np.asarray(p).reshape(n, d), dtype=x.dtype, copy=True)
    if ctx.args.label_prob:
        dx -= lab
    else:
        dx[np.arange(n), lab] -= 1
    dx *= w[:, None]
    total_w = w.sum()
    if total_w > 0:
        dx *= ctx.args.scale / total_w * np.asarray(dloss).reshape(-1)[0]
    return dx.reshape(x.shape)


# --------------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------------
def _accuracy_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    return [TensorType((), np.dtype(np.float32))]


@defop("Accuracy", inputs=2, outputs=1, args=[arg("top_k", "int", 1)], category=OPAQUE,
       infer=_accuracy_infer, no_gradient_reason="Accuracy is a metric and has no gradient")
def accuracy(ctx, pred, label):
    """0-d float32: the fraction of rows of pred [N, D] whose label ranks within the top k; an entry
    ranks above the label's if it is larger, or equal and at a lower index."""
    pred = np.asarray(pred)
    if pred.ndim != 2:
        raise ctx.error(f"predictions must be 2-D [N, D], got shape {list(pred.shape)}", blob=ctx.input_name(0))
    n, d = pred.shape
    lab = _int_labels(ctx, label, 1, n, d)
    label_score = pred[np.arange(n), lab][:, None]
    cols = np.arange(d)[None, :]
    ahead = (pred > label_score) | ((pred == label_score) & (cols < lab[:, None]))
    correct = int((ahead.sum(axis=1) < ctx.args.top_k).sum())
    return np.asarray(correct / n if n else np.nan, dtype=np.float32)  # 0/0 as in Caffe2
