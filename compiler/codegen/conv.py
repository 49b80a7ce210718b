"""Conv, ConvGradient and the pooling ops on the numba-cpu backend (kernels in codegen/windows.py).

Conv heads a fused group: the generated kernel calls ``windows.conv2d`` (im2col + BLAS) into the
output buffer, then one loop adds the bias and applies the epilogue (SpatialBN in test mode, ReLU,
per-channel Mul/Add, a residual Sum...) in a single pass. ConvGradient and the pooling ops and their
gradients are standalone kernels.

Channel-first 1-D and 2-D windows compile (1-D as 2-D with a height of 1). NHWC and 3-D convs head
their group through the numpy reference instead (``host=True``); NHWC and 3-D pooling run as host
steps.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from netjit.compiler.codegen import windows
from netjit.compiler.codegen.loops import BUFFER, Param, ProducerCode
from netjit.compiler.ir import Node, Value
from netjit.compiler.ops.conv import conv_setup
from netjit.compiler.ops.convpool_args import ConvPoolArgError, Geometry
from netjit.compiler.ops.per_channel import channel_view
from netjit.compiler.ops.pool import pool_setup

FLOATS = frozenset({np.dtype(np.float32), np.dtype(np.float64)})
DIM_NAMES = ("n", "c", "h", "w", "m", "group", "kh", "kw", "sh", "sw", "pt", "pl", "dh", "dw", "oh", "ow")


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


def conv_dims(node: Node, values: Mapping[str, Value], has_bias: bool) -> tuple[int, ...] | None:
    """The 16 ints ``windows.conv2d`` takes (DIM_NAMES order), or None when the kernel does not apply.
    ``has_bias``: the third input is Conv's bias (ConvGradient's third input is dY)."""
    x, w = values[node.inputs[0]], values[node.inputs[1]]
    b = values[node.inputs[2]] if has_bias and len(node.inputs) > 2 else None
    try:
        s = conv_setup(node.attrs, x.shape, w.shape, None if b is None else b.shape)
    except (ConvPoolArgError, ValueError, TypeError):
        return None
    win = _window_2d(s.g)
    if not s.channel_first or win is None:
        return None
    h, wd, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow = win
    return (s.n, s.c, h, wd, s.m, s.spec.group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)


def _host_head(node: Node, values: Mapping[str, Value], shape: tuple[int, ...], bias_view: Any) -> ProducerCode:
    raw = f"{node.outputs[0]}#raw"
    operands: tuple = ((BUFFER, shape),) if bias_view is None else ((BUFFER, shape), (node.inputs[2], bias_view))
    return ProducerCode(inputs=tuple(node.inputs[:2]), dims=(), pre=lambda names: [],
                        expr="x0" if bias_view is None else "x0 + x1", operands=operands,
                        dtype=values[node.outputs[0]].dtype, host=True, raw=raw)


def conv_head(node: Node, values: Mapping[str, Value]) -> ProducerCode | None:
    ins = [values[i] for i in node.inputs]
    out = values[node.outputs[0]]
    dtype = _typed_floats(values, tuple(node.inputs))
    if dtype is None or not out.typed or out.dtype != dtype:
        return None
    shape = tuple(out.shape)
    bias_view = None
    if len(node.inputs) == 3:
        order = node.attrs.get("order", "NCHW") or "NCHW"
        m = ins[2].size
        try:
            bias_view = channel_view(order, shape, m)
        except ValueError:
            return None
        if int(np.prod(bias_view)) != m:
            return None
    dims = conv_dims(node, values, has_bias=True)
    if dims is None:
        return _host_head(node, values, shape, bias_view)

    def pre(names: dict[str, str]) -> list[str]:
        args = ", ".join(names[d] for d in DIM_NAMES)
        return [f"windows.conv2d({names['in0']}, {names['in1']}, {names['P']}, {args})"]

    operands: tuple = ((BUFFER, shape),) if bias_view is None else ((BUFFER, shape), (node.inputs[2], bias_view))
    return ProducerCode(inputs=tuple(node.inputs[:2]), dims=tuple(zip(DIM_NAMES, dims)), pre=pre,
                        expr="x0" if bias_view is None else "x0 + x1", operands=operands, dtype=dtype)


def conv_gradient(node: Node, values: Mapping[str, Value]) -> tuple[Any, list[Param]] | None:
    """ConvGradient [X, W, dY] -> [dW, (db), (dX)] as one kernel (outputs per ``no_bias`` and count)."""
    if len(node.inputs) != 3 or _typed_floats(values, tuple(node.inputs) + tuple(node.outputs)) is None:
        return None
    x, w = values[node.inputs[0]], values[node.inputs[1]]
    try:
        s = conv_setup(node.attrs, x.shape, w.shape)
    except (ConvPoolArgError, ValueError, TypeError):
        return None
    if tuple(values[node.inputs[2]].shape) != s.out_shape:
        return None
    dims = conv_dims(node, values, has_bias=False)
    if dims is None:
        return None
    no_bias = bool(node.attrs.get("no_bias", False))
    n_out = len(node.outputs)
    with_db = not no_bias
    with_dx = n_out == (2 if no_bias else 3)
    if n_out != 1 + int(with_db) + int(with_dx):
        return None
    fn = {(False, False): windows.conv2d_grad_w, (True, False): windows.conv2d_grad_wb,
          (False, True): windows.conv2d_grad_wx, (True, True): windows.conv2d_grad_wbx}[(with_db, with_dx)]
    params = [Param("in", v) for v in node.inputs] + [Param("out", o) for o in node.outputs] + \
             [Param("dim", d) for d in dims]
    return fn, params


def _pool_dims(node: Node, values: Mapping[str, Value]) -> tuple[int, ...] | None:
    """(planes, h, w, kh, kw, sh, sw, pt, pl, oh, ow) for a channel-first 1-D/2-D pool, else None."""
    x = values[node.inputs[0]]
    if _typed_floats(values, (node.inputs[0],) + tuple(node.outputs)) is None:
        return None
    try:
        spec, g, _ = pool_setup(node.attrs, x.shape)
    except (ConvPoolArgError, ValueError, TypeError):
        return None
    win = _window_2d(g)
    if not spec.channel_first or win is None:
        return None
    h, w, kh, kw, sh, sw, pt, pl, _, _, oh, ow = win
    return (x.shape[0] * x.shape[1], h, w, kh, kw, sh, sw, pt, pl, oh, ow)


def _grad_shapes_ok(node: Node, values: Mapping[str, Value], first: int) -> bool:
    # [X, Y, dY]: Y (when read) and dY must have the pooled shape; the kernel does not check.
    x = values[node.inputs[0]]
    try:
        _, _, out_shape = pool_setup(node.attrs, x.shape)
    except (ConvPoolArgError, ValueError, TypeError):
        return False
    return all(values[v].typed and tuple(values[v].shape) == out_shape and values[v].dtype == x.dtype
               for v in node.inputs[first:])


def max_pool(node: Node, values: Mapping[str, Value]):
    dims = _pool_dims(node, values)
    if dims is None:
        return None
    return windows.max_pool2d, [Param("in", node.inputs[0]), Param("out", node.outputs[0])] + \
        [Param("dim", d) for d in dims]


def average_pool(node: Node, values: Mapping[str, Value]):
    dims = _pool_dims(node, values)
    if dims is None:
        return None
    include = int(bool(node.attrs.get("count_include_pad", False)))
    return windows.average_pool2d, [Param("in", node.inputs[0]), Param("out", node.outputs[0])] + \
        [Param("dim", d) for d in dims] + [Param("dim", include)]


def max_pool_gradient(node: Node, values: Mapping[str, Value]):
    dims = _pool_dims(node, values)
    if dims is None or len(node.inputs) != 3 or not _grad_shapes_ok(node, values, 1):
        return None
    return windows.max_pool2d_gradient, [Param("in", v) for v in node.inputs] + \
        [Param("out", node.outputs[0])] + [Param("dim", d) for d in dims]


def average_pool_gradient(node: Node, values: Mapping[str, Value]):
    dims = _pool_dims(node, values)
    if dims is None or len(node.inputs) != 3 or not _grad_shapes_ok(node, values, 2):
        return None
    include = int(bool(node.attrs.get("count_include_pad", False)))
    return windows.average_pool2d_gradient, [Param("in", node.inputs[2]), Param("out", node.outputs[0])] + \
        [Param("dim", d) for d in dims] + [Param("dim", include)]
