"""Conv, ConvGradient and the pooling ops on the numba-cpu backend (kernels in codegen/windows.py).

Conv heads a fused group: the generated kernel calls ``windows.conv2d`` (im2col + BLAS), or for
the stride-1 3x3 layers where it pays ``winograd.conv3x3`` (F(2x2, 3x3)), into the output buffer,
then one loop adds the bias and applies the epilogue (SpatialBN in test mode, ReLU, per-channel
Mul/Add, a residual Sum...) in a single pass. ConvGradient and the pooling ops and their
gradients are standalone kernels.

Channel-first 1-D and 2-D windows compile (1-D as 2-D with a height of 1). NHWC and 3-D convs head
their group through the numpy reference instead (``host=True``); NHWC and 3-D pooling run as host
steps.

Where Conv's parts live: the record (schema, inference, reference, gradient maker and its
``lowering`` entries naming the makers here) in ops/conv.py, argument decoding in
ops/convpool_args.py, the reference's window views in ops/_windows.py; the kernels in
codegen/windows.py (im2col, pools, ConvGradient), codegen/winograd.py and codegen/blas.py, their
thread split in codegen/parallel.py, and the epilogue loop in codegen/loops.py.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from netjit.compiler.codegen import windows, winograd
from netjit.compiler.codegen.loops import BUFFER, Param, ProducerCode
from netjit.compiler.ir import Node, Value
from netjit.compiler.ops.conv import conv_setup
from netjit.compiler.ops.convpool_args import ConvPoolArgError, Geometry
from netjit.compiler.ops.per_channel import channel_view
from netjit.compiler.ops.pool import pool_setup

FLOATS = frozenset({np.dtype(np.float32), np.dtype(np.float64)})
DIM_NAMES = ("n", "c", "h", "w", "m", "group", "kh", "kw", "sh", "sw", "pt", "pl", "dh", "dw", "oh", "ow")
WINOGRAD_DIMS = ("n", "c", "h", "w", "m", "pt", "pl", "oh", "ow")    # winograd.conv3x3's ints


def _window_2d(g: Geometry) -> tuple[int, ...] | None:
    """(h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow) of a 1-D or 2-D geometry; None for 3-D."""
    if len(g.size) == 1:
        return (1, g.size[0], 1, g.kernel[0], 1, g.stride[0], 0, g.pad_head[0], 1, g.dilation[0], 1, g.out[0])
    if len(g.size) == 2:
        return (g.size[0], g.size[1], g.kernel[0], g.kernel[1], g.stride[0], g.stride[1], g.pad_head[0],
                g.pad_head[1], g.dilation[0], g.dilation[1], g.out[0], g.out[1])
    return None


def _typed_floats(values: Mapping[str, Value], names: tuple[str, ...]) -> np.dtype | None:
    vals = [values[v] for v in names]
    if not all(v.typed for v in vals) or len({v.dtype for v in vals}) != 1 or vals[0].dtype not in FLOATS:
        return None
    return vals[0].dtype


def _conv_window(node: Node, values: Mapping[str, Value], has_bias: bool):
    """(ConvSetup, the 16 ints ``windows.conv2d`` takes in DIM_NAMES order or None when the kernel
    does not apply (NHWC, 3-D)), or None when the shapes do not check. ``has_bias``: the third
    input is Conv's bias (ConvGradient's third input is dY)."""
    x, w = values[node.inputs[0]], values[node.inputs[1]]
    b = values[node.inputs[2]] if has_bias and len(node.inputs) > 2 else None
    try:
        s = conv_setup(node.attrs, x.shape, w.shape, None if b is None else b.shape)
    except (ConvPoolArgError, ValueError, TypeError):
        return None
    win = _window_2d(s.g)
    if not s.channel_first or win is None:
        return s, None
    h, wd, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow = win
    return s, (s.n, s.c, h, wd, s.m, s.spec.group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)


def conv_head(node: Node, values: Mapping[str, Value]) -> ProducerCode | None:
    """Conv's raw result from ``windows.conv2d`` (NCHW 1-D/2-D) or from its numpy reference (a host
    head: NHWC, 3-D), then ``+ bias`` per element in the group's loop."""
    out = values[node.outputs[0]]
    dtype = _typed_floats(values, tuple(node.inputs))
    window = _conv_window(node, values, has_bias=True)
    if dtype is None or not out.typed or out.dtype != dtype or window is None:
        return None
    shape = tuple(out.shape)
    operands: tuple = ((BUFFER, shape),)
    if len(node.inputs) == 3:
        m = values[node.inputs[2]].size
        try:
            bias_view = channel_view(node.attrs.get("order", "NCHW") or "NCHW", shape, m)
        except ValueError:
            return None
        if int(np.prod(bias_view)) != m:
            return None
        operands += ((node.inputs[2], bias_view),)
    expr = "x0" if len(operands) == 1 else "x0 + x1"
    dims = window[1]
    if dims is None:
        return ProducerCode(inputs=tuple(node.inputs[:2]), dims=(), pre=lambda names: [], expr=expr,
                            operands=operands, dtype=dtype, host=True, raw=f"{node.outputs[0]}#raw")

    named = dict(zip(DIM_NAMES, dims))
    kernel, dim_names = "windows.conv2d", DIM_NAMES
    if _winograd_applies(named):
        kernel, dim_names = "winograd.conv3x3", WINOGRAD_DIMS

    def pre(names: dict[str, str]) -> list[str]:
        args = ", ".join(names[d] for d in dim_names)
        return [f"{kernel}({names['in0']}, {names['in1']}, {names['P']}, {args})"]

    return ProducerCode(inputs=tuple(node.inputs[:2]), dims=tuple((d, named[d]) for d in dim_names), pre=pre,
                        expr=expr, operands=operands, dtype=dtype, threaded=True, split_epilogue=True)


def _winograd_applies(d: Mapping[str, int]) -> bool:
    """Stride-1, undilated, ungrouped 3x3 windows on maps where F(2x2, 3x3) was measured faster
    (codegen/winograd.py). ``NETJIT_WINOGRAD=0`` keeps every conv on im2col + GEMM."""
    if os.environ.get("NETJIT_WINOGRAD", "1") == "0":
        return False
    if (d["kh"], d["kw"], d["sh"], d["sw"], d["dh"], d["dw"], d["group"]) != (3, 3, 1, 1, 1, 1, 1):
        return False
    return winograd.worth_it(d["n"], d["c"], d["m"], d["oh"], d["ow"])


_GRADIENT_KERNELS = {(False, False): windows.conv2d_grad_w, (True, False): windows.conv2d_grad_wb,
                     (False, True): windows.conv2d_grad_wx, (True, True): windows.conv2d_grad_wbx}


def conv_gradient(node: Node, values: Mapping[str, Value]) -> tuple[Any, list[Param]] | None:
    """ConvGradient [X, W, dY] -> [dW, (db), (dX)] as one kernel (outputs per ``no_bias`` and count)."""
    if len(node.inputs) != 3 or _typed_floats(values, tuple(node.inputs) + tuple(node.outputs)) is None:
        return None
    window = _conv_window(node, values, has_bias=False)
    if window is None or window[1] is None or tuple(values[node.inputs[2]].shape) != window[0].out_shape:
        return None
    no_bias = bool(node.attrs.get("no_bias", False))
    n_out = len(node.outputs)
    with_db = not no_bias
    with_dx = n_out == (2 if no_bias else 3)
    if n_out != 1 + int(with_db) + int(with_dx):
        return None
    params = [Param("in", v) for v in node.inputs] + [Param("out", o) for o in node.outputs] + \
             [Param("dim", d) for d in window[1]]
    return _GRADIENT_KERNELS[(with_db, with_dx)], params


def _pool_window(node: Node, values: Mapping[str, Value], n_inputs: int):
    """(planes, h, w, kh, kw, sh, sw, pt, pl, oh, ow) of a channel-first 1-D/2-D pool whose inputs
    after X (a gradient's Y, dY) have the pooled shape; None otherwise."""
    x = values[node.inputs[0]]
    if len(node.inputs) != n_inputs or _typed_floats(values, tuple(node.inputs) + tuple(node.outputs)) is None:
        return None
    try:
        spec, g, out_shape = pool_setup(node.attrs, x.shape)
    except (ConvPoolArgError, ValueError, TypeError):
        return None
    win = _window_2d(g)
    if not spec.channel_first or win is None:
        return None
    if any(tuple(values[v].shape) != out_shape for v in node.inputs[1:]):
        return None     # the kernels do not check Y/dY themselves
    h, w, kh, kw, sh, sw, pt, pl, _, _, oh, ow = win
    return (x.shape[0] * x.shape[1], h, w, kh, kw, sh, sw, pt, pl, oh, ow)


def _pool_kernel(fn: Any, n_inputs: int, reads: slice, with_include: bool):
    def make(node: Node, values: Mapping[str, Value]):
        dims = _pool_window(node, values, n_inputs)
        if dims is None:
            return None
        extra = [Param("dim", int(bool(node.attrs.get("count_include_pad", False))))] if with_include else []
        return fn, [Param("in", v) for v in node.inputs[reads]] + [Param("out", node.outputs[0])] + \
            [Param("dim", d) for d in dims] + extra
    return make


max_pool = _pool_kernel(windows.max_pool2d, 1, slice(0, 1), False)
average_pool = _pool_kernel(windows.average_pool2d, 1, slice(0, 1), True)
max_pool_gradient = _pool_kernel(windows.max_pool2d_gradient, 3, slice(0, 3), False)
average_pool_gradient = _pool_kernel(windows.average_pool2d_gradient, 3, slice(2, 3), True)   # reads dY only
