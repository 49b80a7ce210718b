"""LpPool: the p-norm of each pooling window, and its gradient.

``Y = (Σ_window |X|^p)^(1/p)`` with the window arguments of MaxPool/AveragePool (kernel, stride,
pads, legacy_pad, global_pooling, NCHW/NHWC); padded positions add nothing. ``p`` is a float
argument (default 2.0). The gradient is ``dX = Σ over windows of dY·X·|X|^(p−2) / Y^(p−1)``, Caffe2's
formula, so an all-zero window gives NaN there as it did in Caffe2.

    >>> from netjit.compiler.ops.registry import lookup
    >>> lookup("LpPool").schema.arg_spec("p").default
    2.0
"""
from __future__ import annotations

import numpy as np

from netjit.compiler.ops import _windows as win
from netjit.compiler.ops.common import same_as
from netjit.compiler.ops.convpool_args import ConvPoolArgError, located
from netjit.compiler.ops.gradients import GradientContext
from netjit.compiler.ops.pool import POOL_ARGS, pool_setup
from netjit.compiler.ops.registry import OPAQUE, Args, TensorType, arg, defop

LP_ARGS = POOL_ARGS + [arg("p", "float", 2.0)]


def _infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    if np.dtype(inputs[0].dtype).kind != "f":
        raise ValueError(f"LpPool needs a floating-point input, got {np.dtype(inputs[0].dtype)}")
    _, _, out_shape = pool_setup(args, inputs[0].shape)
    return [TensorType(out_shape, inputs[0].dtype)]


def _gradient(g: GradientContext) -> tuple[list, list]:
    return [g.make("LpPoolGradient", [g.I(0), g.O(0), g.GO(0)], [g.GI(0)])], [g.GI(0)]


def _kernel_axes(ndim_kernel: int) -> tuple[int, ...]:
    return tuple(range(2, 2 + ndim_kernel))


def _float(x: np.ndarray, operand: int) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise ConvPoolArgError(f"LpPool needs floating-point tensors, got {x.dtype}", operand=operand)
    return x


@defop("LpPool", inputs=1, outputs=1, args=LP_ARGS, category=OPAQUE, infer=_infer, gradient=_gradient)
@located
def lp_pool(ctx, x):
    """Y = the p-norm of each window's in-bounds elements."""
    x = _float(x, 0)
    spec, g, _ = pool_setup(ctx.args, x.shape)
    p = x.dtype.type(ctx.args.p)
    xc = win.to_channel_first(x, spec.channel_first)
    sums = (np.abs(win.windows(win.pad(xc, g), g)) ** p).sum(axis=_kernel_axes(len(g.kernel)))
    y = (sums ** (x.dtype.type(1) / p)).astype(x.dtype, copy=False)
    return win.from_channel_first(y, spec.channel_first)


@defop("LpPoolGradient", inputs=3, outputs=1, args=LP_ARGS, category=OPAQUE, infer=same_as(0))
@located
def lp_pool_gradient(ctx, x, y, dy):
    """[X, Y, dY] -> dX = Σ over windows of dY·X·|X|^(p−2) / Y^(p−1)."""
    x, y, dy = _float(x, 0), _float(y, 1), _float(dy, 2)
    spec, g, out_shape = pool_setup(ctx.args, x.shape)
    for name, t, k in (("Y", y, 1), ("dY", dy, 2)):
        if tuple(t.shape) != out_shape:
            raise ConvPoolArgError(f"{name} has shape {tuple(t.shape)} but the pooled output is {out_shape}",
                                   operand=k)
    cf = spec.channel_first
    p = x.dtype.type(ctx.args.p)
    cols = win.windows(win.pad(win.to_channel_first(x, cf), g), g)
    expand = lambda t: t.reshape(t.shape[:2] + (1,) * len(g.kernel) + t.shape[2:])  # noqa: E731
    yc, dyc = expand(win.to_channel_first(y, cf)), expand(win.to_channel_first(dy, cf))
    with np.errstate(divide="ignore", invalid="ignore"):
        dcols = dyc * cols * np.abs(cols) ** (p - 2) / yc ** (p - 1)
    # Padded positions hold 0 and land outside the interior that scatter keeps.
    return win.from_channel_first(win.scatter(dcols.astype(x.dtype, copy=False), g), cf)
