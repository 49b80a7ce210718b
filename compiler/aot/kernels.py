"""Kernels for ops the JIT runs as host steps but a bundle must compile: Concat and LRN (the zoo's
Inception, DenseNet and AlexNet-family nets need them).

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
    def lrn_nchw(x, y, scale, with_scale, n, c, hw, size, alpha, beta, bias):
        """Caffe2's LRN across channels of NCHW ``x`` (flat): scale = bias + alpha/size * (sum of
        x^2 over the ``size`` channels centred on each), y = x * scale^-beta, in x's precision and
        in the reference's order of summation."""
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
                    for j in range(lo, hi):
                        v = x[base + j * hw + p]
                        acc += v * v
                    sc = b + k * acc
                    idx = base + ch * hw + p
                    y[idx] = x[idx] * sc ** e
                    if with_scale:
                        scale[idx] = sc
    return lrn_nchw


LRN_KERNELS = {np.dtype(np.float32): _lrn_kernel(np.float32), np.dtype(np.float64): _lrn_kernel(np.float64)}


def _arg(node: Node, name: str, default: Any) -> Any:
    value = node.attrs.get(name, default)
    return default if value is None else value


def lrn(node: Node, values: Mapping[str, Value]) -> list[Call] | None:
    x = values[node.inputs[0]]
    order = _arg(node, "order", "NCHW")
    order = order.decode() if isinstance(order, bytes) else order
    if order != "NCHW" or len(x.shape) != 4 or x.dtype not in LRN_KERNELS:
        return None
    n, c, h, w = x.shape
    with_scale = len(node.outputs) > 1
    scale = ("flat", node.outputs[1]) if with_scale else ("flat", node.outputs[0])
    return [Call(LRN_KERNELS[x.dtype], "LRN", (("flat", node.inputs[0]), ("flat", node.outputs[0]), scale,
                                               int(with_scale), n, c, h * w, int(_arg(node, "size", 0)),
                                               float(_arg(node, "alpha", 0.0)), float(_arg(node, "beta", 0.0)),
                                               float(_arg(node, "bias", 1.0))))]


def _concat_axis(node: Node, values: Mapping[str, Value]) -> int | None:
    # The axis is where the output's shape differs from the first input's (the registry's shape
    # inference resolved Caffe2's axis/order rules); none differs when the other inputs are empty.
    out = values[node.outputs[0]]
    first = values[node.inputs[0]]
    if _arg(node, "add_axis", 0) or len(first.shape) != len(out.shape):
        return None
    differs = [k for k, (a, b) in enumerate(zip(first.shape, out.shape)) if a != b]
    return None if len(differs) > 1 else differs[0] if differs else 0


def concat(node: Node, values: Mapping[str, Value]) -> list[Call] | None:
    axis = _concat_axis(node, values)
    if axis is None:
        return None
    out = values[node.outputs[0]]
    outer = int(np.prod(out.shape[:axis], dtype=np.int64))
    inner = int(np.prod(out.shape[axis + 1:], dtype=np.int64))
    dst_inner = out.shape[axis] * inner
    calls, offset = [], 0
    for name in node.inputs:
        part = values[name].shape[axis] * inner
        calls.append(Call(place_block, "Concat", (("flat", name), ("flat", node.outputs[0]), outer, part,
                                                  dst_inner, offset)))
        offset += part
    return calls


def concat_constants(node: Node, values: Mapping[str, Value]) -> dict[str, np.ndarray]:
    """Concat's second output, the int32 sizes along the axis: known when the plan is made."""
    axis = _concat_axis(node, values)
    if len(node.outputs) < 2 or axis is None:
        return {}
    return {node.outputs[1]: np.array([values[i].shape[axis] for i in node.inputs], np.int32)}


# op type -> maker of its calls; op type -> outputs that are constants of the plan (weights).
MAKERS: dict[str, Callable[[Node, Mapping[str, Value]], list[Call] | None]] = {"LRN": lrn, "Concat": concat}
CONSTANT_OUTPUTS: dict[str, Callable[[Node, Mapping[str, Value]], dict[str, np.ndarray]]] = {
    "Concat": concat_constants}
