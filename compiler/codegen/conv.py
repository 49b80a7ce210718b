"""Conv as the head of a fused group: numpy computes the convolution without its bias (the
reference's im2col + BLAS matmul, the fastest GEMM available here), then one generated loop adds
the bias and applies the epilogue (SpatialBN in test mode, ReLU, per-channel Mul/Add, a residual
Sum...) in a single pass, writing the result over the raw buffer."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from netjit.compiler.codegen.loops import BUFFER, ProducerCode
from netjit.compiler.ir import Node, Value
from netjit.compiler.ops.per_channel import channel_view

FLOATS = frozenset({np.dtype(np.float32), np.dtype(np.float64)})


def conv_head(node: Node, values: Mapping[str, Value]) -> ProducerCode | None:
    ins = [values[i] for i in node.inputs]
    out = values[node.outputs[0]]
    if not out.typed or not all(v.typed for v in ins) or len({v.dtype for v in ins}) != 1:
        return None
    if ins[0].dtype not in FLOATS or out.dtype != ins[0].dtype:
        return None
    shape = tuple(out.shape)
    raw = f"{node.outputs[0]}#raw"
    if len(node.inputs) == 2:
        return ProducerCode(inputs=tuple(node.inputs[:2]), dims=(), pre=lambda names: [], expr="x0",
                            operands=((BUFFER, shape),), dtype=out.dtype, host=True, raw=raw)
    order = node.attrs.get("order", "NCHW") or "NCHW"
    m = ins[2].size
    try:
        view = channel_view(order, shape, m)
    except ValueError:
        return None
    if int(np.prod(view)) != m:
        return None
    return ProducerCode(inputs=tuple(node.inputs[:2]), dims=(), pre=lambda names: [], expr="x0 + x1",
                        operands=((BUFFER, shape), (node.inputs[2], view)), dtype=out.dtype, host=True, raw=raw)
