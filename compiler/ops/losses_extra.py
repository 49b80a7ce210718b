"""Sigmoid cross-entropy losses and the per-pixel SpatialSoftmaxWithLoss, with their gradients.

``SigmoidCrossEntropyWithLogits [logits, targets] -> loss`` averages the per-element loss over the
last dim (the output drops it; a 0-d input gives a 0-d loss). The per-element loss is
``-(t·ln σ(x) + (1 − t)·ln(1 − σ(x)))``, evaluated as ``max(x, 0) − x·t + ln(1 + e^−|x|)`` so no
exp overflows. ``log_D_trick=1`` swaps in ``-(2t − 1)·ln σ(x)``-style terms (GANs' log-D trick) and
``unjoined_lr_loss=1`` Caffe2's unjoined logistic loss; the weighted op multiplies each element's
loss by a weight of the same shape.

    >>> from netjit.compiler.ops.registry import lookup
    >>> [a.name for a in lookup("SigmoidCrossEntropyWithLogits").schema.args]
    ['log_D_trick', 'unjoined_lr_loss']
"""
from __future__ import annotations

from typing import Any

import numpy as np

from netjit.compiler.ops.gradients import GradientContext
from netjit.compiler.ops.registry import OPAQUE, Args, TensorType, arg, defop

SCE_ARGS = [arg("log_D_trick", "bool", False), arg("unjoined_lr_loss", "bool", False)]
DONT_CARE = -1  # a SpatialSoftmaxWithLoss label that takes no part in the loss


def _float(ctx: Any, x: Any, i: int) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise ctx.error(f"input {i} must be a floating-point tensor, got {x.dtype}", blob=ctx.input_name(i))
    return x


def _validate_sce(args: Args) -> None:
    if args.log_D_trick and args.unjoined_lr_loss:
        raise ValueError("log_D_trick and unjoined_lr_loss cannot both be set")


def _inner(shape: tuple[int, ...]) -> int:
    return shape[-1] if shape else 1


def _softplus_neg_abs(x: np.ndarray) -> np.ndarray:
    """ln(1 + e^−|x|), never overflowing."""
    return np.log1p(np.exp(-np.abs(x)))


def _element_loss(args: Args, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The per-element term Caffe2 sums (the op negates the mean of it)."""
    pos = (x >= 0).astype(x.dtype)
    if args.get("unjoined_lr_loss"):
        return x * t + (t - 1) * x * pos - (1 - t) * _softplus_neg_abs(x)
    if args.get("log_D_trick"):
        partition = x * pos + _softplus_neg_abs(x)   # ln(1 + e^x)
        return (2 * t - 1) * (x - partition)
    return x * (t - pos) - _softplus_neg_abs(x)


def _element_grad(args: Args, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """d(element term)/dx."""
    sig = np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))
    if args.get("unjoined_lr_loss"):
        return t - (1 - t) * sig
    if args.get("log_D_trick"):
        return (2 * t - 1) * (1 - sig)
    return t - sig


def _sce_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x = inputs[0]
    for i, t in enumerate(inputs[1:], 1):
        if tuple(t.shape) != tuple(x.shape):
            raise ValueError(f"input {i} has shape {tuple(t.shape)} but the logits have {tuple(x.shape)}")
    return [TensorType(tuple(x.shape[:-1]), x.dtype)]


def _check_like(ctx: Any, x: np.ndarray, others: list[np.ndarray], first: int) -> None:
    for k, o in enumerate(others):
        if o.shape != x.shape:
            raise ctx.error(f"input {first + k} has shape {list(o.shape)} but the logits have {list(x.shape)}",
                            blob=ctx.input_name(first + k))


def _sce_forward(ctx: Any, x: Any, t: Any, w: Any = None) -> np.ndarray:
    x, t = _float(ctx, x, 0), _float(ctx, t, 1)
    ws = [] if w is None else [_float(ctx, w, 2)]
    _check_like(ctx, x, [t] + ws, 1)
    term = _element_loss(ctx.args, x.astype(np.float64), t.astype(np.float64))
    if ws:
        term = term * ws[0]
    with np.errstate(invalid="ignore", divide="ignore"):   # an empty last dim gives 0/0 = NaN, as in Caffe2
        loss = -term.reshape(x.shape[:-1] + (_inner(x.shape),)).sum(axis=-1) / _inner(x.shape)
    return np.asarray(loss, dtype=x.dtype).reshape(x.shape[:-1])


def _sce_backward(ctx: Any, g: Any, x: Any, t: Any, w: Any = None) -> np.ndarray:
    x, t = _float(ctx, x, 1), _float(ctx, t, 2)
    ws = [] if w is None else [_float(ctx, w, 3)]
    _check_like(ctx, x, [t] + ws, 2)
    g = np.asarray(g)
    if g.shape != x.shape[:-1]:
        raise ctx.error(f"the loss gradient has shape {list(g.shape)} but the loss has {list(x.shape[:-1])}",
                        blob=ctx.input_name(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = -np.asarray(g, np.float64)[..., None] / _inner(x.shape)
    d = _element_grad(ctx.args, x.astype(np.float64), t.astype(np.float64))
    if ws:
        d = d * ws[0]
    return np.asarray(d * factor, dtype=x.dtype).reshape(x.shape)


def _sce_gradient(grad_type: str):
    def maker(g: GradientContext) -> tuple[list, list]:
        ins = [g.GO(0)] + [g.I(i) for i in range(g.n_inputs)]
        return [g.make(grad_type, ins, [g.GI(0)])], [g.GI(0)] + [None] * (g.n_inputs - 1)
    return maker


def _same_as(i: int):
    def infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
        return [inputs[i]]
    return infer


@defop("SigmoidCrossEntropyWithLogits", inputs=2, outputs=1, args=SCE_ARGS, category=OPAQUE,
       infer=_sce_infer, validate=_validate_sce,
       gradient=_sce_gradient("SigmoidCrossEntropyWithLogitsGradient"))
def sigmoid_cross_entropy_with_logits(ctx, logits, targets):
    """[logits, targets] -> loss = mean over the last dim of the sigmoid cross-entropy."""
    return _sce_forward(ctx, logits, targets)


@defop("SigmoidCrossEntropyWithLogitsGradient", inputs=3, outputs=1, args=SCE_ARGS, category=OPAQUE,
       infer=_same_as(1), validate=_validate_sce)
def sigmoid_cross_entropy_with_logits_gradient(ctx, g, logits, targets):
    """[dLoss, logits, targets] -> dLogits = dLoss·(σ(x) − t) / D (the log-D / unjoined variants
    differentiate their own terms)."""
    return _sce_backward(ctx, g, logits, targets)


@defop("WeightedSigmoidCrossEntropyWithLogits", inputs=3, outputs=1, category=OPAQUE, infer=_sce_infer,
       gradient=_sce_gradient("WeightedSigmoidCrossEntropyWithLogitsGradient"))
def weighted_sigmoid_cross_entropy_with_logits(ctx, logits, targets, weights):
    """[logits, targets, weights] -> loss = mean over the last dim of weight·(sigmoid cross-entropy)."""
    return _sce_forward(ctx, logits, targets, weights)


@defop("WeightedSigmoidCrossEntropyWithLogitsGradient", inputs=4, outputs=1, category=OPAQUE,
       infer=_same_as(1))
def weighted_sigmoid_cross_entropy_with_logits_gradient(ctx, g, logits, targets, weights):
    """[dLoss, logits, targets, weights] -> dLogits = dLoss·weight·(σ(x) − t) / D."""
    return _sce_backward(ctx, g, logits, targets, weights)


# --------------------------------------------------------------------------------------------
# SpatialSoftmaxWithLoss
# --------------------------------------------------------------------------------------------
SSWL_ARGS = [arg("scale", "float", 1.0), arg("order", "str", "NCHW")]


def _sswl_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x, label = inputs[0], inputs[1]
    if len(x.shape) != 4 or len(label.shape) != 3:
        raise ValueError(f"logits must be 4-D [N, C, H, W] and labels 3-D [N, H, W], got {tuple(x.shape)} "
                         f"and {tuple(label.shape)}")
    return [x, TensorType((), x.dtype)]


def _sswl_inputs(ctx: Any, x: Any, label: Any, weights: Any, w_index: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X, labels, weights [N, H, W], mask of counted pixels), checked as Caffe2 enforces them."""
    x = _float(ctx, x, 0)
    label = np.asarray(label)
    if x.ndim != 4:
        raise ctx.error(f"logits must be 4-D [N, C, H, W], got shape {list(x.shape)}", blob=ctx.input_name(0))
    n, c, h, w = x.shape
    if label.dtype != np.int32:
        raise ctx.error(f"labels must be int32, got {label.dtype}", blob=ctx.input_name(1))
    if label.shape != (n, h, w):
        raise ctx.error(f"labels must have shape [{n}, {h}, {w}], got {list(label.shape)}", blob=ctx.input_name(1))
    counted = label != DONT_CARE
    bad = counted & ((label < 0) | (label >= c))
    if bad.any():
        where = tuple(int(v) for v in np.argwhere(bad)[0])
        raise ctx.error(f"label {int(label[where])} at {list(where)} is out of range: there are {c} classes "
                        f"(-1 marks a pixel to ignore)", blob=ctx.input_name(1))
    if weights is None:
        wts = np.ones((n, h, w), x.dtype)
    else:
        wts = np.asarray(weights)
        if wts.size != n * h * w:
            raise ctx.error(f"weights must have {n * h * w} elements ([N, H, W]), got shape {list(wts.shape)}",
                            blob=ctx.input_name(w_index))
        wts = wts.reshape(n, h, w).astype(x.dtype, copy=False)
    return x, label, wts, counted


def _spatial_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sswl_gradient(g: GradientContext) -> tuple[list, list]:
    ins = [g.I(0), g.I(1), g.O(0), g.GO(1)]
    if g.n_inputs == 3:
        ins.insert(2, g.I(2))
    return [g.make("SpatialSoftmaxWithLossGradient", ins, [g.GI(0)])], [g.GI(0)] + [None] * (g.n_inputs - 1)


@defop("SpatialSoftmaxWithLoss", inputs=(2, 3), outputs=2, args=SSWL_ARGS, category=OPAQUE,
       infer=_sswl_infer, gradient=_sswl_gradient)
def spatial_softmax_with_loss(ctx, x, label, weights=None):
    """[logits (N, C, H, W), labels (N, H, W) int32 (, weights (N, H, W))] -> [P, loss]: P is the
    softmax over C at every pixel; loss = Σ w·(−ln max(P[label], 1e−20)) / Σ w over pixels whose label
    is not −1 (0 when no weight is counted). As in Caffe2, ``scale`` applies to the gradient only."""
    x, lab, wts, counted = _sswl_inputs(ctx, x, label, weights, 2)
    p = _spatial_softmax(x)
    safe = np.where(counted, lab, 0).astype(np.intp)
    picked = np.take_along_axis(p, safe[:, None], axis=1)[:, 0]
    w = np.where(counted, wts, 0)
    total = w.sum(dtype=np.float64)
    xent = np.where(counted, -np.log(np.maximum(picked, x.dtype.type(1e-20))) * w, 0).sum(dtype=np.float64)
    loss = xent / total if total != 0 else 0.0
    return p.astype(x.dtype, copy=False), np.asarray(loss, dtype=x.dtype)


@defop("SpatialSoftmaxWithLossGradient", inputs=(4, 5), outputs=1, args=SSWL_ARGS, category=OPAQUE,
       infer=_same_as(0))
def spatial_softmax_with_loss_gradient(ctx, x, label, *rest):
    """[X, labels, (weights,) P, dLoss] -> dX = (P − onehot(label))·w · scale·dLoss / Σ w, 0 at
    ignored pixels (not divided when Σ w = 0)."""
    weights = rest[0] if len(rest) == 3 else None
    p, dloss = np.asarray(rest[-2]), np.asarray(rest[-1])
    x, lab, wts, counted = _sswl_inputs(ctx, x, label, weights, 2)
    if p.shape != x.shape:
        raise ctx.error(f"P has shape {list(p.shape)} but X has {list(x.shape)}", blob=ctx.input_name(len(rest)))
    dx = np.array(p, dtype=x.dtype, copy=True)
    safe = np.where(counted, lab, 0).astype(np.intp)
    onehot = np.zeros_like(dx)
    np.put_along_axis(onehot, safe[:, None], 1, axis=1)
    dx -= onehot
    w = np.where(counted, wts, 0).astype(x.dtype)
    dx *= w[:, None]
    total = w.sum(dtype=np.float64)
    if total > 0:
        dx *= x.dtype.type(ctx.args.scale / total)
    dx *= dloss.reshape(-1)[0].astype(x.dtype)
    return dx
