"""Kernels for ops the JIT runs as host steps but a bundle must compile: Concat (also add_axis=1)
and LRN (NCHW and NHWC); the zoo's Inception, DenseNet and AlexNet-family nets need them.

A maker returns the calls that replace the op, each ``Call(fn, description, args)`` with args
that are ints, floats, ``("value", name)`` (the value's array) or ``("flat", name)`` (its bytes as
a 1-D array of its dtype); the planner gives every value its home and the entry calls them in order.
The makers return None when the case is not covered (the op then fails the build by name).

>>> # calls = MAKERS["Concat"](node, values)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
from numba import njit

from netjit.compiler.ir import Node, Value


@dataclass(frozen=True)
class Call:
    fn: Any
    description: str
    args: tuple[Any, ...]


@njit(cache=True, nogil=True, error_model="numpy")
def place_block(src, dst, outer, inner, dst_inner, offset):
    """Row r of ``src`` viewed (outer, inner) goes to ``dst`` viewed (outer, dst_inner) at column
    ``offset``: one input of a Concat."""
    for r in range(outer):
        s = r * inner
        d = r * dst_inner + offset
        for i in range(inner):
            dst[d + i] = src[s + i]


@njit(cache=True, nogil=True, error_model="numpy")
def copy_flat(src, dst):
    """dst[:] = src (an output that is an input, a weight or a view of another value)."""
    for i in range(src.size):
        dst[i] = src[i]


def _lrn_kernel(real: Any) -> Any:
    @njit(nogil=True, error_model="numpy")
    def lrn(x, y, scale, with_scale, n, c, hw, c_step, p_step, size, alpha, beta, bias):
        """Caffe2's LRN across channels of ``x`` (flat; channel ``ch`` of pixel ``p`` of image
        ``img`` at ``img*c*hw + ch*c_step + p*p_step``: NCHW is (hw, 1), NHWC (1, c)): scale =
        bias + alpha/size * (sum of x^2 over the ``size`` channels centred on each), y = x *
        scale^-beta, in x's precision and in the reference's order of summation."""
        half = (size - 1) // 2
        k = real(alpha) / real(size)
        b = real(bias)
        e = real(-beta)
        for img in range(n):
            base = img * c * hw
            for ch in range(c):
                lo = max(0, ch - half)
                hi = min(c, ch - half + size)
                for p in range(hw):
                    acc = real(0.0)
                    at = base + p * p_step
                    for j in range(lo, hi):
                        v = x[at + j * c_step]
                        acc += v * v
                    sc = b + k * acc
                    idx = at + ch * c_step
                    y[idx] = x[idx] * sc ** e
                    if with_scale:
                        scale[idx] = sc
    return lrn


LRN_KERNELS = {np.dtype(np.float32): _lrn_kernel(np.float32), np.dtype(np.float64): _lrn_kernel(np.float64)}


def _arg(node: Node, name: str, default: Any) -> Any:
    value = node.attrs.get(name, default)
    return default if value is None else value


def lrn(node: Node, values: Mapping[str, Value]) -> list[Call] | None:
    x = values[node.inputs[0]]
    order = _arg(node, "order", "NCHW")
    order = order.decode() if isinstance(order, bytes) else order
    if order not in ("NCHW", "NHWC") or len(x.shape) != 4 or x.dtype not in LRN_KERNELS:
        return None
    if order == "NCHW":
        n, c, h, w = x.shape
        c_step, p_step = h * w, 1
    else:
        n, h, w, c = x.shape
        c_step, p_step = 1, c
    with_scale = len(node.outputs) > 1
    scale = ("flat", node.outputs[1]) if with_scale else ("flat", node.outputs[0])
    return [Call(LRN_KERNELS[x.dtype], "LRN", (("flat", node.inputs[0]), ("flat", node.outputs[0]), scale,
                                               int(with_scale), n, c, h * w, c_step, p_step,
                                               int(_arg(node, "size", 0)),
                                               float(_arg(node, "alpha", 0.0)), float(_arg(node, "beta", 0.0)),
                                               float(_arg(node, "bias", 1.0))))]


def _concat_axis(node: Node, values: Mapping[str, Value]) -> int | None:
    """The output axis the inputs are joined along (with add_axis: the new axis they are stacked
    on), by the op's own rules (axis/order/add_axis)."""
    from netjit.compiler.ops.tensor_ops import _concat_plan
    try:
        axis, shape = _concat_plan(node.attrs, [tuple(values[i].shape) for i in node.inputs],
                                   [np.dtype(values[i].dtype) for i in node.inputs])
    except (ValueError, AttributeError):
        return None
    return axis if tuple(shape) == tuple(values[node.outputs[0]].shape) else None


def concat(node: Node, values: Mapping[str, Value]) -> list[Call] | None:
    axis = _concat_axis(node, values)
    if axis is None:
        return None
    out = values[node.outputs[0]]
    stacked = bool(_arg(node, "add_axis", 0))
    outer = int(np.prod(out.shape[:axis], dtype=np.int64))
    inner = int(np.prod(out.shape[axis + 1:], dtype=np.int64))
    dst_inner = out.shape[axis] * inner
    calls, offset = [], 0
    for name in node.inputs:
        # stacked (add_axis=1): each input is one slice of the new axis
        part = (1 if stacked else values[name].shape[axis]) * inner
        calls.append(Call(place_block, "Concat", (("flat", name), ("flat", node.outputs[0]), outer, part,
                                                  dst_inner, offset)))
        offset += part
    return calls


def concat_constants(node: Node, values: Mapping[str, Value]) -> dict[str, np.ndarray]:
    """Concat's second output, the int32 sizes along the axis: known when the plan is made."""
    axis = _concat_axis(node, values)
    if len(node.outputs) < 2 or axis is None:
        return {}
    if _arg(node, "add_axis", 0):
        return {node.outputs[1]: np.ones(len(node.inputs), np.int32)}
    return {node.outputs[1]: np.array([values[i].shape[axis] for i in node.inputs], np.int32)}


# op type -> maker of its calls; op type -> outputs that are constants of the plan (weights).
MAKERS: dict[str, Callable[[Node, Mapping[str, Value]], list[Call] | None]] = {"LRN": lrn, "Concat": concat}
CONSTANT_OUTPUTS: dict[str, Callable[[Node, Mapping[str, Value]], dict[str, np.ndarray]]] = {
    "Concat": concat_constants}
