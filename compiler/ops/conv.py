"""Convolution (Conv, Conv1D/2D/3D) and transposed convolution, with their gradients.

The references are im2col + matmul on channel-first arrays (``_windows``); NHWC inputs are moved to
channel-first and back. Layouts (Caffe2):

- Conv NCHW: X [N, C, *S], W [M, C/group, *k], b [M] -> Y [N, M, *out]; 1 to 3 spatial dims.
- Conv NHWC: X [N, H, W, C], W [M, kh, kw, C] -> Y [N, outH, outW, M]; 2-D only, group 1.
- ConvTranspose NCHW: X [N, Cin, H, W], W [Cin, Cout, kh, kw], b [Cout]; NHWC: W [Cin, kh, kw, Cout].
  2-D only, group 1; out = (in - 1)·stride + k + adj - pad_head - pad_tail.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from netjit.compiler.ops import _windows as win
from netjit.compiler.ops.convpool_args import (
    ADJ_ARGS, CAFFE_LEGACY_POOLING, CONV_POOL_ARGS, WINDOW_ARGS, ConvPoolArgError, ConvPoolSpec, Geometry,
    decode, located)
from netjit.compiler.ops.gradients import GradientContext
from netjit.compiler.ops.registry import OPAQUE, OUT_FUSABLE, Args, Lowering, TensorType, alias, arg, defop

CONV_ARGS = CONV_POOL_ARGS + [arg("no_gradient_to_input", "bool", False)]
CONV_GRAD_ARGS = CONV_ARGS + [arg("no_bias", "bool", False)]
CONV_TRANSPOSE_ARGS = WINDOW_ARGS + ADJ_ARGS + [arg("group", "int", 1), arg("no_gradient_to_input", "bool", False)]
CONV_TRANSPOSE_GRAD_ARGS = CONV_TRANSPOSE_ARGS + [arg("no_bias", "bool", False)]


class ConvSetup:
    """A conv's decoded args checked against its input shapes: geometry, channel counts, output shape."""

    def __init__(self, spec: ConvPoolSpec, g: Geometry, n: int, c: int, m: int, out_shape: tuple[int, ...]):
        self.spec, self.g, self.n, self.c, self.m, self.out_shape = spec, g, n, c, m, out_shape

    @property
    def channel_first(self) -> bool:
        return self.spec.channel_first


def _check_bias(b_shape: Sequence[int] | None, m: int) -> None:
    if b_shape is not None and tuple(b_shape) != (m,):
        raise ConvPoolArgError(f"bias has shape {tuple(b_shape)} but the filter gives {m} output channels, so it "
                               f"must be [{m}]", operand=2)


def conv_setup(args: Args, x_shape: Sequence[int], w_shape: Sequence[int],
               b_shape: Sequence[int] | None = None) -> ConvSetup:
    """Check a Conv's shapes (Caffe2's rules) and compute its geometry and output shape."""
    spec = decode(args)
    if spec.global_pooling:
        raise ConvPoolArgError("global_pooling is an argument of the pooling ops, not of Conv")
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    ndim = len(x_shape)
    rank = ndim - 2
    if spec.channel_first and not 1 <= rank <= 3:
        raise ConvPoolArgError(f"X has shape {x_shape}; Conv NCHW takes N, C and 1 to 3 spatial dims", operand=0)
    if not spec.channel_first:
        if rank != 2:
            raise ConvPoolArgError(f"X has shape {x_shape}; Conv NHWC takes 4-D input (2 spatial dims only)",
                                   operand=0)
        if spec.group != 1:
            raise ConvPoolArgError("Conv NHWC does not support group != 1; use order NCHW")
    if len(w_shape) != ndim:
        raise ConvPoolArgError(f"filter has shape {w_shape}, but X {x_shape} needs a {ndim}-D filter", operand=1)
    n, m = x_shape[0], w_shape[0]
    if spec.channel_first:
        c, w_in, w_kernel = x_shape[1], w_shape[1], w_shape[2:]
    else:
        c, w_in, w_kernel = x_shape[-1], w_shape[-1], w_shape[1:-1]
    group = spec.group
    if w_in * group != c:
        raise ConvPoolArgError(f"X has {c} channels but the filter {w_shape} takes {w_in} per group x {group} "
                               f"group(s)", operand=1)
    if m % group:
        raise ConvPoolArgError(f"the filter's {m} output channels do not divide into {group} groups", operand=1)
    g = spec.geometry(spec.spatial_dims(x_shape))
    if g.kernel != tuple(w_kernel):
        raise ConvPoolArgError(f"kernel {list(g.kernel)} does not match the filter's spatial dims "
                               f"{list(w_kernel)} (filter {w_shape})", operand=1)
    _check_bias(b_shape, m)
    out_shape = (n, m) + g.out if spec.channel_first else (n,) + g.out + (m,)
    return ConvSetup(spec, g, n, c, m, out_shape)


def _filter_cf(w: np.ndarray, channel_first: bool) -> np.ndarray:
    # NHWC filters are [M, *k, C]; channel-first math wants [M, C, *k].
    return w if channel_first else np.moveaxis(w, -1, 1)


def _grouped_cols(xc: np.ndarray, s: ConvSetup) -> np.ndarray:
    """im2col of the channel-first input as (N, group, C/group·∏k, ∏out)."""
    cols = win.windows(win.pad(xc, s.g), s.g)
    return cols.reshape(s.n, s.spec.group, (s.c // s.spec.group) * math.prod(s.g.kernel), math.prod(s.g.out))


def _grouped_filter(wc: np.ndarray, s: ConvSetup) -> np.ndarray:
    return wc.reshape(s.spec.group, s.m // s.spec.group, -1)


# One GEMM per group over the whole batch: (G, a, N·P). A batched matmul over N small GEMMs was
# about 3.5x slower for LeNet-sized layers, since BLAS gets one small product per image.
def _batch_last(t: np.ndarray) -> np.ndarray:
    """(N, G, a, P) -> (G, a, N·P)."""
    n, g, a, p = t.shape
    return t.transpose(1, 2, 0, 3).reshape(g, a, n * p)


def _batch_first(t: np.ndarray, n: int) -> np.ndarray:
    """(G, a, N·P) -> (N, G, a, P)."""
    g, a, np_ = t.shape
    return t.reshape(g, a, n, np_ // n).transpose(2, 0, 1, 3)


def _conv_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    s = conv_setup(args, inputs[0].shape, inputs[1].shape, inputs[2].shape if len(inputs) > 2 else None)
    return [TensorType(s.out_shape, inputs[0].dtype)]


def _conv_gradient_maker(g: GradientContext) -> tuple[list, list]:
    """Conv and ConvTranspose: ``<Type>Gradient [X, W, dY] -> [dW, (db,) (dX)]``; with 2 inputs the op
    gets ``no_bias=1``; ``no_gradient_to_input`` drops dX."""
    compute_dx = not g.args.get("no_gradient_to_input", False)
    outs, extra = [g.GI(1)], {}
    if g.n_inputs == 3:
        outs.append(g.GI(2))
    else:
        extra["no_bias"] = 1
    if compute_dx:
        outs.append(g.GI(0))
    op = g.make(g.op.type + "Gradient", [g.I(0), g.I(1), g.GO(0)], outs, **extra)
    g_input = [g.GI(0) if compute_dx else None, g.GI(1)] + ([g.GI(2)] if g.n_inputs == 3 else [])
    return [op], g_input


def _grad_output_counts(no_bias: bool, num_outputs: int) -> bool:
    """Caffe2's ConvGradient output layout: [dW, db, dX] with a bias, [dW, dX] with no_bias=1;
    the last one (dX) may be left off. Returns whether dX is produced."""
    if no_bias:
        if num_outputs > 2:
            raise ConvPoolArgError("with no_bias=1 the gradient has at most 2 outputs (dW, dX)")
        return num_outputs == 2
    if num_outputs < 2:
        raise ConvPoolArgError("without no_bias=1 the gradient needs at least 2 outputs (dW, db)")
    return num_outputs == 3


@defop("Conv", inputs=(2, 3), outputs=1, args=CONV_ARGS, category=OUT_FUSABLE, infer=_conv_infer,
       gradient=_conv_gradient_maker,
       # im2col + GEMM (or Winograd) into the group's buffer, then bias + epilogue in one loop.
       lowering={"numba-cpu": Lowering(head="netjit.compiler.codegen.conv:conv_head"),
                 "numba-cuda": Lowering(head="netjit.compiler.codegen.cuda_gemm:conv_gemm", standalone="netjit.compiler.codegen.cuda_gemm:conv")})
@located
def conv(ctx, x, w, b=None):
    """Cross-correlation of X with W (groups, stride, dilation, pads), plus the bias when given."""
    s = conv_setup(ctx.args, x.shape, w.shape, None if b is None else b.shape)
    cf = s.channel_first
    cols = _grouped_cols(win.to_channel_first(x, cf), s)
    y = _batch_first(np.matmul(_grouped_filter(_filter_cf(w, cf), s), _batch_last(cols)), s.n)
    y = y.reshape((s.n, s.m) + s.g.out)
    if b is not None:
        y = y + b.reshape((1, s.m) + (1,) * len(s.g.out))
    return win.from_channel_first(y.astype(x.dtype, copy=False), cf)


def _conv_grad_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x, w, _ = inputs
    s = conv_setup(args, x.shape, w.shape)
    outs = [w] + ([] if args.get("no_bias", False) else [TensorType((s.m,), w.dtype)]) + [x]
    return outs


@defop("ConvGradient", inputs=3, outputs=(1, 3), args=CONV_GRAD_ARGS, category=OPAQUE, infer=_conv_grad_infer,
       lowering={"numba-cpu": Lowering(standalone="netjit.compiler.codegen.conv:conv_gradient", threaded=True),
                 "numba-cuda": Lowering(standalone="netjit.compiler.codegen.cuda_gemm:conv_gradient")})
@located
def conv_gradient(ctx, x, w, dy):
    """[X, W, dY] -> [dW, db, dX]; [dW, dX] with no_bias=1; dX left off when it has no output."""
    s = conv_setup(ctx.args, x.shape, w.shape)
    with_dx = _grad_output_counts(ctx.args.no_bias, ctx.num_outputs)
    if tuple(dy.shape) != s.out_shape:
        raise ConvPoolArgError(f"dY has shape {tuple(dy.shape)} but the forward output is {s.out_shape}", operand=2)
    cf = s.channel_first
    group = s.spec.group
    cols = _grouped_cols(win.to_channel_first(x, cf), s)               # (N, G, Kg, P)
    dyc = win.to_channel_first(dy, cf)
    dyg = dyc.reshape(s.n, group, s.m // group, -1)                     # (N, G, Mg, P)
    wc = _filter_cf(w, cf)
    dyt = _batch_last(dyg)                                              # (G, Mg, N·P)
    dw = np.matmul(dyt, _batch_last(cols).transpose(0, 2, 1)).reshape(wc.shape)
    outs = [win.from_channel_first(dw.astype(w.dtype, copy=False), cf)]
    if not ctx.args.no_bias:
        outs.append(dyc.sum(axis=(0,) + tuple(range(2, dyc.ndim))).astype(w.dtype, copy=False))
    if with_dx:
        dcols = _batch_first(np.matmul(_grouped_filter(wc, s).transpose(0, 2, 1), dyt), s.n)  # (N, G, Kg, P)
        dx = win.scatter(dcols.reshape((s.n, s.c) + s.g.kernel + s.g.out), s.g)
        outs.append(win.from_channel_first(dx.astype(x.dtype, copy=False), cf))
    return outs


for _n in (1, 2, 3):
    alias(f"Conv{_n}D", "Conv")
    alias(f"Conv{_n}DGradient", "ConvGradient")


# --------------------------------------------------------------------------------------------
# ConvTranspose
# --------------------------------------------------------------------------------------------
def conv_transpose_setup(args: Args, x_shape: Sequence[int], w_shape: Sequence[int],
                         b_shape: Sequence[int] | None = None) -> ConvSetup:
    """Check a ConvTranspose's shapes. The returned geometry describes the *adjoint* conv: its input
    is Y (size = the transposed conv's output) and its output positions are X's pixels."""
    spec = decode(args, has_dilation=False, has_adj=True)
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    if len(x_shape) != 4:
        raise ConvPoolArgError(f"X has shape {x_shape}; ConvTranspose takes 4-D input only", operand=0)
    if len(w_shape) != 4:
        raise ConvPoolArgError(f"filter has shape {w_shape}; ConvTranspose needs a 4-D filter", operand=1)
    if spec.group != 1:
        raise ConvPoolArgError("ConvTranspose does not support group != 1")
    if spec.legacy_pad == CAFFE_LEGACY_POOLING:
        raise ConvPoolArgError("ConvTranspose does not support legacy_pad CAFFE_LEGACY_POOLING")
    cf = spec.channel_first
    c_in, w_in = (x_shape[1], w_shape[0]) if cf else (x_shape[3], w_shape[0])
    m, w_kernel = (w_shape[1], w_shape[2:]) if cf else (w_shape[3], w_shape[1:3])
    if c_in != w_in:
        raise ConvPoolArgError(f"X has {c_in} channels but the filter {w_shape} takes {w_in}", operand=1)
    if spec.kernel is None:
        raise ConvPoolArgError("the kernel size is not set (give kernel, kernel_h/kernel_w or kernels)")
    kernel = spec.kernel.per_dim(2)
    if kernel != tuple(w_kernel):
        raise ConvPoolArgError(f"kernel {list(kernel)} does not match the filter's spatial dims {list(w_kernel)}",
                               operand=1)
    stride, adj = spec.stride.per_dim(2), spec.adjs(2)
    pads = spec.pads.per_dim(2, 2) if spec.legacy_pad == 0 else (0, 0, 0, 0)
    size_in = spec.spatial_dims(x_shape)
    out = []
    for d in range(2):
        if adj[d] > stride[d]:
            raise ConvPoolArgError(f"adj {adj[d]} must not exceed stride {stride[d]}")
        o = (size_in[d] - 1) * stride[d] + kernel[d] + adj[d] - pads[d] - pads[2 + d]
        if o < 1:
            raise ConvPoolArgError(f"spatial dim {d}: output size would be {o}")
        out.append(o)
    g = Geometry(size=tuple(out), kernel=kernel, stride=stride, dilation=(1, 1), pad_head=pads[:2],
                 pad_tail=pads[2:], out=size_in)
    _check_bias(b_shape, m)
    n = x_shape[0]
    out_shape = (n, m) + tuple(out) if cf else (n,) + tuple(out) + (m,)
    return ConvSetup(spec, g, n, c_in, m, out_shape)


def _convt_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    s = conv_transpose_setup(args, inputs[0].shape, inputs[1].shape, inputs[2].shape if len(inputs) > 2 else None)
    return [TensorType(s.out_shape, inputs[0].dtype)]


def _convt_filter_cf(w: np.ndarray, channel_first: bool) -> np.ndarray:
    # [Cin, Cout, kh, kw] whatever the order (NHWC filters are [Cin, kh, kw, Cout]).
    return w if channel_first else np.moveaxis(w, -1, 1)


@defop("ConvTranspose", inputs=(2, 3), outputs=1, args=CONV_TRANSPOSE_ARGS, category=OUT_FUSABLE,
       infer=_convt_infer, gradient=_conv_gradient_maker)
@located
def conv_transpose(ctx, x, w, b=None):
    """Transposed convolution: each input pixel adds W·x into a stride-spaced window of Y (col2im)."""
    s = conv_transpose_setup(ctx.args, x.shape, w.shape, None if b is None else b.shape)
    cf = s.channel_first
    xc = win.to_channel_first(x, cf)
    wc = _convt_filter_cf(w, cf)
    cols = np.einsum("nchw,cokl->noklhw", xc, wc)
    y = win.scatter(cols, s.g)
    if b is not None:
        y = y + b.reshape(1, s.m, 1, 1)
    return win.from_channel_first(y.astype(x.dtype, copy=False), cf)


def _convt_grad_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x, w, _ = inputs
    s = conv_transpose_setup(args, x.shape, w.shape)
    return [w] + ([] if args.get("no_bias", False) else [TensorType((s.m,), w.dtype)]) + [x]


@defop("ConvTransposeGradient", inputs=3, outputs=(1, 3), args=CONV_TRANSPOSE_GRAD_ARGS, category=OPAQUE,
       infer=_convt_grad_infer)
@located
def conv_transpose_gradient(ctx, x, w, dy):
    """[X, W, dY] -> [dW, db, dX] (no_bias=1: [dW, dX]); dX is a plain conv of dY with W (im2col)."""
    s = conv_transpose_setup(ctx.args, x.shape, w.shape)
    with_dx = _grad_output_counts(ctx.args.no_bias, ctx.num_outputs)
    if tuple(dy.shape) != s.out_shape:
        raise ConvPoolArgError(f"dY has shape {tuple(dy.shape)} but the forward output is {s.out_shape}", operand=2)
    cf = s.channel_first
    xc, dyc = win.to_channel_first(x, cf), win.to_channel_first(dy, cf)
    wc = _convt_filter_cf(w, cf)
    cols = win.windows(win.pad(dyc, s.g), s.g)                       # (N, Cout, kh, kw, H, W)
    dw = np.einsum("nchw,noklhw->cokl", xc, cols)
    outs = [win.from_channel_first(dw.astype(w.dtype, copy=False), cf)]
    if not ctx.args.no_bias:
        outs.append(dyc.sum(axis=(0, 2, 3)).astype(w.dtype, copy=False))
    if with_dx:
        dx = np.einsum("noklhw,cokl->nchw", cols, wc)
        outs.append(win.from_channel_first(dx.astype(x.dtype, copy=False), cf))
    return outs


del _n
