"""Normalisation and regularisation: LRN, SpatialBN, Dropout, and their gradients.

SpatialBN in test mode is a per-channel affine map of X; its record's ``per_channel`` entry gives its
expression so the fuser can fold it into a Conv epilogue (the reference computes the same formula).
"""
from __future__ import annotations

import numpy as np

from netjit.compiler.ops.common import same_as
from netjit.compiler.ops.gradients import GradientContext, simple_gradient
from netjit.compiler.ops.per_channel import PerChannel, channel_axis, channel_view
from netjit.compiler.ops.registry import OPAQUE, Args, Lowering, TensorType, arg, defop


def _order(args: Args) -> str:
    order = args.get("order", "NCHW") or "NCHW"
    order = order.decode() if isinstance(order, bytes) else order
    if order not in ("NCHW", "NHWC"):
        raise ValueError(f"order {order!r} is not NCHW or NHWC")
    return order


# --------------------------------------------------------------------------------------------
# LRN: scale = bias + (alpha/size)·Σ x² over `size` channels centred on c; Y = X·scale^(-beta)
# --------------------------------------------------------------------------------------------
LRN_ARGS = [arg("size", "int", 0), arg("alpha", "float", 0.0), arg("beta", "float", 0.0),
            arg("bias", "float", 1.0), arg("order", "str", "NCHW")]


def _lrn_check(args: Args, shape: tuple[int, ...]) -> int:
    size = args.size
    if size <= 0 or size % 2 == 0:
        raise ValueError(f"LRN size must be a positive odd number, got {size}")
    if len(shape) != 4:
        raise ValueError(f"LRN takes 4-D input, got shape {shape}")
    return channel_axis(_order(args), 4)


def _channel_window_sum(v: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Σ of v over the `size` channels centred on each channel (zeros beyond the edges)."""
    v = np.moveaxis(v, axis, 0)
    half = (size - 1) // 2
    padded = np.zeros((v.shape[0] + size - 1,) + v.shape[1:], dtype=v.dtype)
    padded[half:half + v.shape[0]] = v
    acc = np.zeros_like(v)
    for offset in range(size):
        acc += padded[offset:offset + v.shape[0]]
    return np.moveaxis(acc, 0, axis)


def _lrn_scale(args: Args, x: np.ndarray, axis: int) -> np.ndarray:
    t = x.dtype.type
    return t(args.bias) + t(args.alpha) / t(args.size) * _channel_window_sum(x * x, axis, args.size)


def _lrn_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    _lrn_check(args, inputs[0].shape)
    return [inputs[0], inputs[0]]


@defop("LRN", inputs=1, outputs=(1, 2), args=LRN_ARGS, category=OPAQUE, infer=_lrn_infer,
       gradient=simple_gradient("LRNGradient", ["I0", "O0", "GO0"], ["GI0"]))
def lrn(ctx, x):
    """Local response normalisation across channels; the optional 2nd output is the scale."""
    axis = _lrn_check(ctx.args, x.shape)
    scale = _lrn_scale(ctx.args, x, axis)
    y = (x * scale ** x.dtype.type(-ctx.args.beta)).astype(x.dtype, copy=False)
    return [y, scale.astype(x.dtype, copy=False)][:ctx.num_outputs]


@defop("LRNGradient", inputs=3, outputs=1, args=LRN_ARGS, category=OPAQUE, infer=same_as(0))
def lrn_gradient(ctx, x, y, dy):
    """[X, Y, dY] -> dX = dY·scale^(-β) - (2αβ/size)·X·Σ_window(dY·Y/scale) (scale recomputed from X)."""
    a = ctx.args
    axis = _lrn_check(a, x.shape)
    t = x.dtype.type
    scale = _lrn_scale(a, x, axis)
    back = _channel_window_sum(dy * y / scale, axis, a.size)
    dx = dy * scale ** t(-a.beta) - t(2.0 * a.alpha * a.beta / a.size) * x * back
    return dx.astype(x.dtype, copy=False)


# --------------------------------------------------------------------------------------------
# SpatialBN
# --------------------------------------------------------------------------------------------
BN_ARGS = [arg("is_test", "bool", required=True), arg("epsilon", "float", 1e-5), arg("momentum", "float", 0.9),
           arg("order", "str", "NCHW"), arg("num_batches", "int", 1)]
BN_GRAD_ARGS = [arg("is_test", "bool", False)] + BN_ARGS[1:]


def _bn_in_counts(n_in: int, n_out: int) -> str | None:
    return None if n_in in (5, 7) else f"takes 5 inputs (X, scale, bias, mean, var) or 7 with num_batches > 1, got {n_in}"


def _bn_check(args: Args, x_shape: tuple[int, ...], stats: list[tuple[int, ...]], names: list[str]) -> tuple[int, int]:
    if not 3 <= len(x_shape) <= 5:
        raise ValueError(f"SpatialBN takes X of rank 3 to 5, got shape {x_shape}")
    axis = channel_axis(_order(args), len(x_shape))
    c = x_shape[axis]
    for shape, name in zip(stats, names):
        if tuple(shape) != (c,):
            raise ValueError(f"{name} has shape {tuple(shape)}, expected [{c}] (one value per channel)")
    return axis, c


def _bn_mode(args: Args, n_in: int, n_out: int) -> None:
    if args.is_test:
        if n_out != 1:
            raise ValueError(f"in test mode (is_test=1) SpatialBN has exactly 1 output, got {n_out}")
        if n_in != 5:
            raise ValueError("in test mode (is_test=1) SpatialBN takes 5 inputs")
        return
    if n_out != 5:
        raise ValueError(f"in training mode (is_test=0) SpatialBN has 5 outputs (Y, running_mean, running_var, "
                         f"saved_mean, saved_inv_std), got {n_out}")
    if (args.num_batches > 1) != (n_in == 7):
        raise ValueError(f"num_batches={args.num_batches} needs {7 if args.num_batches > 1 else 5} inputs, got {n_in}")


def _bn_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x, scale = inputs[0], inputs[1]
    _, c = _bn_check(args, x.shape, [t.shape for t in inputs[1:5]], ["scale", "bias", "mean", "var"])
    if args.is_test:
        return [x]
    stat = TensorType((c,), scale.dtype)
    return [x, inputs[3], inputs[4], stat, stat]


def _bn_gradient_maker(g: GradientContext) -> tuple[list, list]:
    a = g.args
    if a.is_test:
        ins = [g.I(0), g.I(1), g.GO(0), g.I(3), g.I(4)]
    elif a.num_batches > 1:
        ins = [g.I(0), g.I(1), g.GO(0), g.O(3), g.O(4), g.GI(1), g.GI(2)]
    else:
        ins = [g.I(0), g.I(1), g.GO(0), g.O(3), g.O(4)]
    outs = [g.GI(0), g.GI(1), g.GI(2)]
    return [g.make("SpatialBNGradient", ins, outs)], outs + [None] * (g.n_inputs - 3)


@defop("SpatialBN", inputs=(5, 7), outputs=(1, 5), args=BN_ARGS, check_counts=_bn_in_counts,
       inplace=[(0, 0), (3, 1), (4, 2), (5, 3), (6, 4)], enforce_inplace=[(3, 1), (4, 2)],
       category=OPAQUE, infer=_bn_infer, gradient=_bn_gradient_maker,
       # Test mode, compiled and reference alike, is Caffe2's CPU formula (spatial_batch_norm_op.cc):
       # inv_std = 1/√(var + ε), Y = X·(inv_std·scale) + (bias - mean·inv_std·scale), in X's dtype.
       # The factor and the shift depend on the channel only, so a fused loop computes them once per
       # row and its inner loop is one multiply-add; with one formula both paths agree also where
       # the values overflow (mean 1e30, scale inf give Caffe2's inf/nan, not another rounding).
       per_channel=PerChannel(expr="x0 * ((1 / sqrt(x4 + epsilon)) * x1) + (x2 - x3 * (1 / sqrt(x4 + epsilon)) * x1)",
                              channel_inputs=(1, 2, 3, 4), applies=lambda args: bool(args.get("is_test"))),
       # Training mode on the GPU: batch statistics as per-channel shared-memory reductions.
       lowering={"numba-cuda": Lowering(standalone="netjit.compiler.codegen.cuda_ops:spatial_bn_train")})
def spatial_bn(ctx, x, scale, bias, mean, var, *sums):
    """Test: Y = X·k + (bias - mean·inv_std·scale) with inv_std = 1/√(var + ε), k = inv_std·scale
    (Caffe2's folding of (X - mean)·inv_std·scale + bias, evaluated in X's dtype in this order by
    the reference and the compiled kernels alike). Train: normalise with the batch statistics
    (biased variance), update running = running·momentum + batch·(1 - momentum), and also output
    saved_mean and saved_inv_std = 1/√(batch_var + ε)."""
    a = ctx.args
    _bn_mode(a, ctx.num_inputs, ctx.num_outputs)
    axis, c = _bn_check(a, x.shape, [scale.shape, bias.shape, mean.shape, var.shape], ["scale", "bias", "mean", "var"])
    view = channel_view(_order(a), x.shape, c)
    t = x.dtype.type
    eps = t(a.epsilon)
    if a.is_test:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            inv_std = t(1) / np.sqrt(var.reshape(view) + eps)
            k = inv_std * scale.reshape(view)
            shift = bias.reshape(view) - mean.reshape(view) * inv_std * scale.reshape(view)
            y = x * k + shift
        return y.astype(x.dtype, copy=False)
    axes = tuple(i for i in range(x.ndim) if i != axis)
    count = x.size // c
    if a.num_batches > 1:
        total = a.num_batches * count
        batch_mean = sums[0] / total
        batch_var = sums[1] / total - batch_mean * batch_mean
    else:
        batch_mean = x.mean(axis=axes)
        batch_var = np.square(x - batch_mean.reshape(view)).mean(axis=axes)
    inv_std = 1 / np.sqrt(batch_var + eps)
    y = (x - batch_mean.reshape(view)) * inv_std.reshape(view) * scale.reshape(view) + bias.reshape(view)
    m = scale.dtype.type(a.momentum)
    sd = scale.dtype
    return (y.astype(x.dtype, copy=False),
            (mean * m + batch_mean * (1 - m)).astype(mean.dtype, copy=False),
            (var * m + batch_var * (1 - m)).astype(var.dtype, copy=False),
            batch_mean.astype(sd, copy=False), inv_std.astype(sd, copy=False))


def _bn_grad_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x, scale = inputs[0], inputs[1]
    _bn_check(args, x.shape, [scale.shape, inputs[3].shape, inputs[4].shape], ["scale", "mean", "inv_std"])
    return [x, scale, scale]


@defop("SpatialBNGradient", inputs=(5, 7), outputs=3, args=BN_GRAD_ARGS, check_counts=_bn_in_counts,
       inplace=[(5, 1), (6, 2)], category=OPAQUE, infer=_bn_grad_infer,
       lowering={"numba-cuda": Lowering(standalone="netjit.compiler.codegen.cuda_ops:spatial_bn_gradient")})
def spatial_bn_gradient(ctx, x, scale, dy, mean, inv_std_or_var, *sums):
    """[X, scale, dY, saved_mean, saved_inv_std] -> [dX, dscale, dbias]. With is_test=1 inputs 3 and 4
    are the running mean and variance, and the statistics are constants (dX = dY·scale/√(var+ε)).
    With num_batches > 1, inputs 5 and 6 hold dscale and dbias summed over the batches."""
    a = ctx.args
    axis, c = _bn_check(a, x.shape, [scale.shape, mean.shape, inv_std_or_var.shape], ["scale", "mean", "inv_std"])
    view = channel_view(_order(a), x.shape, c)
    axes = tuple(i for i in range(x.ndim) if i != axis)
    rstd = 1 / np.sqrt(inv_std_or_var + x.dtype.type(a.epsilon)) if a.is_test else inv_std_or_var
    xhat = (x - mean.reshape(view)) * rstd.reshape(view)
    if len(sums) == 2:
        dscale, dbias = sums[0] / a.num_batches, sums[1] / a.num_batches
    else:
        dscale, dbias = (dy * xhat).sum(axis=axes), dy.sum(axis=axes)
    gain = (scale * rstd).reshape(view)
    if a.is_test:
        dx = dy * gain
    else:
        count = x.size // c
        dx = gain * (dy - (dbias.reshape(view) + xhat * dscale.reshape(view)) / count)
    return (dx.astype(x.dtype, copy=False), dscale.astype(scale.dtype, copy=False),
            dbias.astype(scale.dtype, copy=False))



# --------------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------------
DROPOUT_ARGS = [arg("ratio", "float", 0.5), arg("is_test", "bool", required=True)]
DROPOUT_GRAD_ARGS = [arg("ratio", "float", 0.5), arg("is_test", "bool", False)]


def _keep_scale(ratio: float, dtype: np.dtype):
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"Dropout ratio must be in [0, 1), got {ratio}")
    return np.dtype(dtype).type(1.0 / (1.0 - ratio))


def _dropout_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    return [inputs[0], TensorType(inputs[0].shape, np.dtype(np.bool_))]


def _dropout_gradient_maker(g: GradientContext) -> tuple[list, list]:
    if g.args.is_test:
        return [g.make("DropoutGrad", [g.GO(0)], [g.GI(0)])], [g.GI(0)]
    if len(g.op.output) < 2:
        raise ValueError("training-mode Dropout needs its mask output (2nd output) to be differentiated")
    return [g.make("DropoutGrad", [g.GO(0), g.O(1)], [g.GI(0)])], [g.GI(0)]


@defop("Dropout", inputs=1, outputs=(1, 2), args=DROPOUT_ARGS, inplace=[(0, 0)], category=OPAQUE,
       infer=_dropout_infer, gradient=_dropout_gradient_maker)
def dropout(ctx, x):
    """Train: mask ~ Bernoulli(1 - ratio) (bool), Y = X·mask/(1 - ratio). Test: Y = X.

    In test mode Caffe2 leaves the mask blob unwritten; here it is an all-true mask, so the blob
    always holds a tensor of the inferred shape and dtype."""
    a = ctx.args
    scale = _keep_scale(a.ratio, x.dtype)
    if a.is_test:
        outs = [x.copy(), np.ones(x.shape, dtype=np.bool_)]
    else:
        keep = ctx.rng.random(x.shape) < 1.0 - a.ratio
        outs = [(x * scale * keep).astype(x.dtype, copy=False), keep]
    return outs[:ctx.num_outputs]


@defop("DropoutGrad", inputs=(1, 2), outputs=1, args=DROPOUT_GRAD_ARGS, inplace=[(0, 0)], category=OPAQUE,
       infer=same_as(0))
def dropout_grad(ctx, dy, mask=None):
    """[dY, mask] -> dX = dY·mask/(1 - ratio); with is_test=1, [dY] -> dX = dY."""
    a = ctx.args
    scale = _keep_scale(a.ratio, dy.dtype)
    if a.is_test:
        return dy.copy()
    if mask is None:
        raise ValueError("training-mode DropoutGrad needs the mask as its 2nd input")
    if mask.shape != dy.shape:
        raise ctx.error(f"mask has shape {mask.shape} but dY has {dy.shape}", blob=ctx.input_name(1))
    return (dy * scale * mask).astype(dy.dtype, copy=False)
