"""Shape and dtype inference: type every value from an input signature with each op's ``infer``.

Inference walks the nodes in order and stops at the first node whose outputs it cannot type (a
host op without ``infer``, an input that is not a tensor, an ``infer`` that raises, e.g. because
the shape depends on values). That node is a *barrier*: the compiler plans the nodes before it,
runs the barrier as a host step, and plans the rest once the barrier's outputs exist.

>>> from netjit.proto.args import make_op
>>> from netjit.proto import caffe2_pb2
>>> from netjit.compiler.ir import import_netdef
>>> net = caffe2_pb2.NetDef(name="n"); net.op.extend([make_op("Relu", ["X"], ["Y"])])
>>> typed, barrier = infer_types(import_netdef(net), {"X": TensorType((2, 3), np.dtype("float32"))})
>>> typed.value("Y@1").type_str(), barrier
('f32[2,3]', 1)
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from netjit.compiler.ir import Graph, Node, Value
from netjit.compiler.ops.registry import TensorType, lookup

# What a signature entry may be: a TensorType, or a kind word for a non-tensor blob.
OBJECT = "object"


def type_of(value: Any) -> TensorType | str:
    """The signature entry of one workspace blob: its TensorType, or "object" (None, bytes, readers)."""
    if isinstance(value, np.ndarray) and value.dtype != np.dtype(object):
        return TensorType(value.shape, value.dtype)
    return OBJECT


def infer_node(node: Node, in_types: list[Value]) -> list[TensorType] | None:
    """The output types of one registry node, or None when they cannot be known before it runs."""
    if not node.outputs:
        # A node that runs sub-nets (If, While, Do...) may write any blob of the workspace without
        # declaring it; segments are ordered and fused by declared blobs only, so such a node must
        # end its segment: what runs after it then reads the workspace afresh.
        return None if _runs_subnets(node) else []
    if any(not v.typed for v in in_types):
        return None
    opdef = lookup(node.op)
    if opdef.infer is None:
        return None
    try:
        outs = opdef.infer(node.attrs, [TensorType(tuple(v.shape), np.dtype(v.dtype)) for v in in_types])
    except Exception:  # noqa: BLE001 - any failure means "unknown until run"; the op reports at run time
        return None
    if outs is None or len(outs) < len(node.outputs):
        return None
    result = []
    for t in outs[:len(node.outputs)]:
        if t is None or t.shape is None or t.dtype is None:
            return None
        result.append(TensorType(tuple(int(d) for d in t.shape), np.dtype(t.dtype)))
    return result


def _runs_subnets(node: Node) -> bool:
    if node.op in ("Fused", "Const"):
        return False
    try:
        schema = lookup(node.op).schema
    except Exception:  # noqa: BLE001 - an unknown op is reported elsewhere, not here
        return False
    return any(spec.kind in ("net", "nets") and node.attrs.get(spec.name) for spec in schema.args)


def infer_types(graph: Graph, signature: Mapping[str, TensorType | str], start: int = 0) -> tuple[Graph, int]:
    """Type the values of ``graph.nodes[start:]`` given the types of the blobs they read from the
    workspace (``signature``: blob -> TensorType or "object"). Returns the graph with typed values
    and the position of the first node that could not be typed (``len(nodes)`` when none)."""
    values = dict(graph.values)
    producers = {out: pos for pos, node in enumerate(graph.nodes) for out in node.outputs}

    def set_type(name: str, t: TensorType | str) -> None:
        v = values[name]
        if isinstance(t, str):
            values[name] = replace(v, shape=None, dtype=None, kind=t)
        else:
            values[name] = replace(v, shape=tuple(t.shape), dtype=np.dtype(t.dtype), kind="tensor")

    # Values the segment reads but does not define come from the workspace: type them from it.
    for node in graph.nodes[start:]:
        for name in node.inputs:
            if producers.get(name, -1) < start:
                blob = values[name].blob
                if blob in signature:
                    set_type(name, signature[blob])
    barrier = len(graph.nodes)
    for pos in range(start, len(graph.nodes)):
        node = graph.nodes[pos]
        outs = infer_node(node, [values[i] for i in node.inputs])
        if outs is None:
            barrier = pos
            break
        for name, t in zip(node.outputs, outs):
            set_type(name, t)
    return replace(graph, values=values), barrier
