"""MaxPool and AveragePool (+1D/2D/3D names) and their gradients.

Both orders (NCHW, NHWC) and 1 to 3 spatial dims. Window arguments follow ConvPoolOpBase
(``convpool_args``): legacy_pad modes including Caffe's ceil-mode CAFFE_LEGACY_POOLING, and
``global_pooling`` (the window is the whole spatial extent, output 1x...x1).

- MaxPool: the largest in-bounds element, starting from -FLT_MAX (padding never wins).
- AveragePool: the sum of in-bounds elements divided by their count (padding excluded), or by the
  full kernel size with ``count_include_pad=1``.
- ``<Type>Gradient [X, Y, dY] -> dX``: MaxPool sends dY to every window element equal to Y (ties
  all receive it, as Caffe2's CPU kernel does); AveragePool spreads dY / divisor over the window.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from netjit.compiler.ops import _windows as win
from netjit.compiler.ops.common import same_as
from netjit.compiler.ops.convpool_args import CONV_POOL_ARGS, ConvPoolArgError, ConvPoolSpec, Geometry, decode, located
from netjit.compiler.ops.gradients import GradientContext
from netjit.compiler.ops.registry import OPAQUE, Args, Lowering, TensorType, alias, arg, defop

POOL_ARGS = CONV_POOL_ARGS + [arg("count_include_pad", "bool", False)]
_LOWEST = float(-np.finfo(np.float32).max)  # Caffe2's max starts from -FLT_MAX


def pool_setup(args: Args, x_shape: Sequence[int]) -> tuple[ConvPoolSpec, Geometry, tuple[int, ...]]:
    """Decode a pooling op's args against X's shape: (spec, geometry, output shape)."""
    spec = decode(args)
    x_shape = tuple(x_shape)
    rank = len(x_shape) - 2
    if not 1 <= rank <= 3:
        raise ConvPoolArgError(f"X has shape {x_shape}; pooling takes N, C and 1 to 3 spatial dims", operand=0)
    if any(d != 1 for d in spec.dilation.values):
        raise ConvPoolArgError("pooling does not support dilation")
    g = spec.geometry(spec.spatial_dims(x_shape))
    n, c = x_shape[0], x_shape[spec.channel_axis(len(x_shape))]
    out_shape = (n, c) + g.out if spec.channel_first else (n,) + g.out + (c,)
    return spec, g, out_shape


def _pool_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    _, _, out_shape = pool_setup(args, inputs[0].shape)
    return [TensorType(out_shape, inputs[0].dtype)]


def _kernel_axes(g: Geometry) -> tuple[int, ...]:
    return tuple(range(2, 2 + len(g.kernel)))


def _expand(y: np.ndarray, g: Geometry) -> np.ndarray:
    """(N, C, *out) -> (N, C, 1..., *out): broadcastable against windows (N, C, *kernel, *out)."""
    return y.reshape(y.shape[:2] + (1,) * len(g.kernel) + y.shape[2:])


def _avg_divisor(g: Geometry, include_pad: bool, dtype: np.dtype) -> np.ndarray:
    """Per output position, what the window sum is divided by: (1, 1, *out)."""
    if include_pad:
        return np.full((1, 1) + g.out, math.prod(g.kernel), dtype=dtype)
    inside = win.pad(np.ones((1, 1) + g.size, dtype=dtype), g, fill=0.0)
    return win.windows(inside, g).sum(axis=_kernel_axes(g))


def _pool_gradient_maker(g: GradientContext) -> tuple[list, list]:
    return [g.make(g.op.type + "Gradient", [g.I(0), g.O(0), g.GO(0)], [g.GI(0)])], [g.GI(0)]


def _check_y(y: np.ndarray, out_shape: tuple[int, ...], name: str, operand: int) -> None:
    if tuple(y.shape) != out_shape:
        raise ConvPoolArgError(f"{name} has shape {tuple(y.shape)} but the pooled output is {out_shape}",
                               operand=operand)


@defop("MaxPool", inputs=1, outputs=1, args=POOL_ARGS, category=OPAQUE, infer=_pool_infer,
       gradient=_pool_gradient_maker,
       lowering={"numba-cpu": Lowering(standalone="netjit.compiler.codegen.conv:max_pool", threaded=True),
                 "numba-cuda": Lowering(standalone="netjit.compiler.codegen.cuda_gemm:pool")})
@located
def max_pool(ctx, x):
    """Y = the maximum over each window's in-bounds elements."""
    spec, g, _ = pool_setup(ctx.args, x.shape)
    xc = win.to_channel_first(x, spec.channel_first)
    cols = win.windows(win.pad(xc, g, fill=_LOWEST), g)
    y = np.maximum(cols.max(axis=_kernel_axes(g)), x.dtype.type(_LOWEST))
    return win.from_channel_first(y, spec.channel_first)


@defop("AveragePool", inputs=1, outputs=1, args=POOL_ARGS, category=OPAQUE, infer=_pool_infer,
       gradient=_pool_gradient_maker,
       lowering={"numba-cpu": Lowering(standalone="netjit.compiler.codegen.conv:average_pool", threaded=True),
                 "numba-cuda": Lowering(standalone="netjit.compiler.codegen.cuda_gemm:pool")})
@located
def average_pool(ctx, x):
    """Y = the window sum over in-bounds elements / their count (or / kernel size, count_include_pad=1)."""
    spec, g, _ = pool_setup(ctx.args, x.shape)
    xc = win.to_channel_first(x, spec.channel_first)
    sums = win.windows(win.pad(xc, g), g).sum(axis=_kernel_axes(g))
    with np.errstate(invalid="ignore", divide="ignore"):  # a window wholly in padding gives NaN, as in Caffe2
        y = (sums / _avg_divisor(g, ctx.args.count_include_pad, x.dtype)).astype(x.dtype, copy=False)
    return win.from_channel_first(y, spec.channel_first)


@defop("MaxPoolGradient", inputs=3, outputs=1, args=POOL_ARGS, category=OPAQUE, infer=same_as(0),
       lowering={"numba-cpu": Lowering(standalone="netjit.compiler.codegen.conv:max_pool_gradient", threaded=True),
                 "numba-cuda": Lowering(standalone="netjit.compiler.codegen.cuda_gemm:pool_gradient")})
@located
def max_pool_gradient(ctx, x, y, dy):
    """dX = Σ over windows of dY where X equals the window's Y."""
    spec, g, out_shape = pool_setup(ctx.args, x.shape)
    _check_y(y, out_shape, "Y", 1)
    _check_y(dy, out_shape, "dY", 2)
    cf = spec.channel_first
    # NaN padding never equals Y, so padded positions take no gradient.
    cols = win.windows(win.pad(win.to_channel_first(x, cf), g, fill=np.nan), g)
    hit = cols == _expand(win.to_channel_first(y, cf), g)
    dcols = np.where(hit, _expand(win.to_channel_first(dy, cf), g), dy.dtype.type(0))
    return win.from_channel_first(win.scatter(dcols, g).astype(x.dtype, copy=False), cf)


@defop("AveragePoolGradient", inputs=3, outputs=1, args=POOL_ARGS, category=OPAQUE, infer=same_as(0),
       lowering={"numba-cpu": Lowering(standalone="netjit.compiler.codegen.conv:average_pool_gradient",
                                       threaded=True),
                 "numba-cuda": Lowering(standalone="netjit.compiler.codegen.cuda_gemm:pool_gradient")})
@located
def average_pool_gradient(ctx, x, y, dy):
    """dX = Σ over windows containing the element of dY / divisor (the forward's divisor)."""
    spec, g, out_shape = pool_setup(ctx.args, x.shape)
    _check_y(dy, out_shape, "dY", 2)
    cf = spec.channel_first
    share = win.to_channel_first(dy, cf) / _avg_divisor(g, ctx.args.count_include_pad, dy.dtype)
    dcols = np.broadcast_to(_expand(share, g), share.shape[:2] + g.kernel + g.out)
    return win.from_channel_first(win.scatter(dcols, g).astype(x.dtype, copy=False), cf)


for _kind in ("MaxPool", "AveragePool"):
    for _n in (1, 2, 3):
        alias(f"{_kind}{_n}D", _kind)
        alias(f"{_kind}{_n}DGradient", f"{_kind}Gradient")
del _kind, _n
