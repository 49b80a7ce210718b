"""numba-cpu kernels for row reductions: the losses of the tutorials' training nets
(SquaredL2Distance, its gradient, AveragedLoss) and Softmax with its gradient. Sums accumulate in
float64 and round once (the references sum in the input dtype; results agree to float32 rounding)."""
from __future__ import annotations

from typing import Mapping

import numpy as np
from numba import njit

from netjit.compiler.codegen.loops import Param
from netjit.compiler.ir import Node, Value
from netjit.compiler.ops.activations import softmax_rows

FLOATS = frozenset({np.dtype(np.float32), np.dtype(np.float64)})
_OPTS = dict(cache=True, error_model="numpy", nogil=True)


@njit(**_OPTS)
def squared_l2_distance_kernel(n, d, x, y, z):
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    for i in range(n):
        acc = 0.0
        for j in range(i * d, i * d + d):
            diff = xf[j] - yf[j]           # rounded in the input dtype, as the reference's X - Y
            acc += diff * diff
        z[i] = 0.5 * acc


@njit(**_OPTS)
def squared_l2_distance_gradient_kernel(n, d, x, y, dz, dx, dy):
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    dzf = dz.reshape(-1)
    dxf = dx.reshape(-1)
    dyf = dy.reshape(-1)
    for i in range(n):
        g = dzf[i]
        for j in range(i * d, i * d + d):
            v = (xf[j] - yf[j]) * g
            dxf[j] = v
            dyf[j] = -v


@njit(**_OPTS)
def averaged_loss_kernel(x, out):
    xf = x.reshape(-1)
    acc = 0.0
    for j in range(xf.size):
        acc += xf[j]
    out.reshape(-1)[0] = acc / xf.size if xf.size else np.nan


def _rows(node: Node, values: Mapping[str, Value]) -> tuple[int, int] | None:
    ins = [values[i] for i in node.inputs]
    outs = [values[o] for o in node.outputs]
    if not all(v.typed for v in ins + outs) or len({v.dtype for v in ins + outs}) != 1 or ins[0].dtype not in FLOATS:
        return None
    x, y = ins[0], ins[1]
    if x.shape != y.shape:
        return None
    n = x.shape[0] if x.shape else 1
    d = x.size // n if n else 0
    return n, d


def squared_l2_distance(node: Node, values: Mapping[str, Value]):
    rows = _rows(node, values)
    if rows is None or values[node.outputs[0]].size != rows[0]:
        return None
    params = [Param("dim", rows[0]), Param("dim", rows[1])] + [Param("in", v) for v in node.inputs] + \
             [Param("out", node.outputs[0])]
    return squared_l2_distance_kernel, params


def squared_l2_distance_gradient(node: Node, values: Mapping[str, Value]):
    rows = _rows(node, values)
    if rows is None or values[node.inputs[2]].size != rows[0]:
        return None
    params = [Param("dim", rows[0]), Param("dim", rows[1])] + [Param("in", v) for v in node.inputs] + \
             [Param("out", o) for o in node.outputs]
    return squared_l2_distance_gradient_kernel, params


def averaged_loss(node: Node, values: Mapping[str, Value]):
    x, out = values[node.inputs[0]], values[node.outputs[0]]
    if not (x.typed and out.typed) or x.dtype not in FLOATS or out.dtype != x.dtype or x.size == 0:
        return None
    return averaged_loss_kernel, [Param("in", node.inputs[0]), Param("out", node.outputs[0])]


# --------------------------------------------------------------------------------------------
# Softmax over Caffe2's [prod(dims[:axis]), prod(dims[axis:])] view
# --------------------------------------------------------------------------------------------
@njit(**_OPTS)
def softmax_kernel(n, d, x, y):
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    for i in range(n):
        base = i * d
        top = xf[base]
        for j in range(base + 1, base + d):
            v = xf[j]
            top = v if (v > top or v != v) else top    # NaN propagates, as numpy's max
        acc = 0.0
        for j in range(base, base + d):
            e = np.exp(xf[j] - top)
            yf[j] = e
            acc += e
        total = yf.dtype.type(acc)
        for j in range(base, base + d):
            yf[j] = yf[j] / total


@njit(**_OPTS)
def softmax_gradient_kernel(n, d, y, dy, dx):
    yf = y.reshape(-1)
    dyf = dy.reshape(-1)
    dxf = dx.reshape(-1)
    for i in range(n):
        base = i * d
        acc = 0.0
        for j in range(base, base + d):
            acc += yf[j] * dyf[j]
        dot = dxf.dtype.type(acc)
        for j in range(base, base + d):
            dxf[j] = yf[j] * (dyf[j] - dot)


def _softmax_rows(node: Node, values: Mapping[str, Value]) -> tuple[int, int] | None:
    vals = [values[v] for v in node.inputs + node.outputs]
    if not all(v.typed for v in vals) or len({v.dtype for v in vals}) != 1 or vals[0].dtype not in FLOATS:
        return None
    if len({tuple(v.shape) for v in vals}) != 1 or vals[0].size == 0:
        return None
    try:
        return softmax_rows(tuple(vals[0].shape), node.attrs.get("axis", 1))
    except ValueError:
        return None


def softmax(node: Node, values: Mapping[str, Value]):
    rows = _softmax_rows(node, values)
    if rows is None:
        return None
    return softmax_kernel, [Param("dim", rows[0]), Param("dim", rows[1]), Param("in", node.inputs[0]),
                            Param("out", node.outputs[0])]


def softmax_gradient(node: Node, values: Mapping[str, Value]):
    rows = _softmax_rows(node, values)
    if rows is None:
        return None
    return softmax_gradient_kernel, [Param("dim", rows[0]), Param("dim", rows[1])] + \
        [Param("in", v) for v in node.inputs] + [Param("out", node.outputs[0])]
