"""Simplification passes: no-op removal, constant folding, dead-code elimination.

All three are pure ``Graph -> Graph`` functions over a typed graph.

- ``remove_noops``: Dropout in test mode, StopGradient, Alias, Copy and the CPU copy ops produce
  their input unchanged; their output becomes another name for the input value (a visible blob
  then simply holds the same array: compiled code never writes into a visible array).
- ``fold_constants``: values computed only from constants (non-random fillers and ops applied to
  them, and fillers shaped like an input whose shape is known) are computed once at plan time and
  become ``Const`` nodes.
- ``eliminate_dead_code``: nodes whose outputs nobody reads and no blob exposes are dropped, unless
  the op has side effects (host ops).
"""
from __future__ import annotations

import types
from typing import Any, Callable

import numpy as np

from netjit.compiler import strict
from netjit.compiler.ir import Graph, Node, Value
from netjit.compiler.ops.registry import HOST, lookup

# Ops whose output is their input, unchanged (on the CPU).
NOOP_OPS = frozenset({"StopGradient", "Alias", "Copy", "EnsureCPUOutput", "CopyCPUToGPU", "CopyGPUToCPU"})
# Constant folding keeps values up to this many elements (bigger ones are recomputed per run so that
# cached plans do not pin large weight arrays in memory).
FOLD_LIMIT = 1 << 20


def _is_noop(node: Node, values: dict[str, Value]) -> bool:
    if node.op == "Dropout":
        if not node.attrs.get("is_test") or len(node.outputs) != 1:
            return False
    elif node.op not in NOOP_OPS:
        return False
    if len(node.inputs) != 1 or len(node.outputs) != 1:
        return False
    src, dst = values[node.inputs[0]], values[node.outputs[0]]
    return src.typed and dst.typed and src.shape == dst.shape and src.dtype == dst.dtype


def substitute(graph: Graph, mapping: dict[str, str], nodes: list[Node]) -> Graph:
    """Rename uses of values per ``mapping`` in ``nodes`` and in the graph's outputs."""
    def sub(name: str) -> str:
        while name in mapping:
            name = mapping[name]
        return name

    new_nodes = [Node(n.op, tuple(sub(i) for i in n.inputs), n.outputs, n.attrs, n.index, n.proto)
                 if any(i in mapping for i in n.inputs) else n for n in nodes]
    outputs = {b: sub(v) for b, v in graph.outputs.items()}
    return prune_values(graph.with_nodes(new_nodes, outputs=outputs))


def prune_values(graph: Graph) -> Graph:
    used = set(graph.inputs.values()) | set(graph.outputs.values())
    for n in graph.nodes:
        used.update(n.inputs)
        used.update(n.outputs)
        for m in n.members:
            used.update(m.inputs)
            used.update(m.outputs)
    return graph.with_nodes(graph.nodes, values={k: v for k, v in graph.values.items() if k in used})


def remove_noops(graph: Graph) -> Graph:
    values = dict(graph.values)
    mapping: dict[str, str] = {}
    kept: list[Node] = []
    for node in graph.nodes:
        if _is_noop(node, values):
            mapping[node.outputs[0]] = node.inputs[0]
        else:
            kept.append(node)
    return substitute(graph, mapping, kept) if mapping else graph


# --------------------------------------------------------------------------------------------
# Constant folding
# --------------------------------------------------------------------------------------------
def _code_names(fn: Any, depth: int = 3, seen: set | None = None) -> set[str]:
    """Attribute/global names a function (and the netjit helpers it calls) mentions."""
    seen = seen if seen is not None else set()
    code = getattr(fn, "__code__", None)
    if code is None or code in seen or depth < 0:
        return set()
    seen.add(code)
    names = set(code.co_names)
    stack = [code]
    while stack:  # nested code objects (lambdas, comprehensions)
        c = stack.pop()
        for k in c.co_consts:
            if isinstance(k, types.CodeType):
                names.update(k.co_names)
                stack.append(k)
    g = getattr(fn, "__globals__", {})
    for name in list(names):
        f = g.get(name)
        if isinstance(f, types.FunctionType) and f.__module__.startswith("netjit"):
            names |= _code_names(f, depth - 1, seen)
    return names


_DETERMINISTIC: dict[str, bool] = {}


def is_deterministic(op_type: str) -> bool:
    """True when the op's reference neither draws random numbers nor keeps per-instance state, so
    running it once at plan time gives the value every run would (host ops never qualify)."""
    if op_type not in _DETERMINISTIC:
        opdef = lookup(op_type)
        names = _code_names(opdef.reference)
        _DETERMINISTIC[op_type] = opdef.category != HOST and not ({"rng", "state", "ws"} & names)
    return _DETERMINISTIC[op_type]


def _evaluate(node: Node, inputs: list[Any], net_name: str) -> list[Any] | None:
    from netjit.runtime.context import OpContext
    opdef = lookup(node.op)
    ctx = OpContext(args=node.attrs, op=node.proto, index=node.index, net_name=net_name)
    try:
        out = opdef.reference(ctx, *inputs)
    except Exception as err:  # noqa: BLE001 - leave it to fail at run time with the op's own error
        strict.note("fold", node, err)   # listed by explain(); a bug in the reference raises under strict
        return None
    out = list(out) if isinstance(out, (list, tuple)) else [out]
    if len(out) < len(node.outputs) or not all(isinstance(o, np.ndarray) for o in out[:len(node.outputs)]):
        return None
    return out[:len(node.outputs)]


# Fillers whose output depends only on their input's shape (unless input_as_shape reads values).
SHAPE_ONLY_FILLERS = frozenset({"ConstantFill", "RangeFill", "GivenTensorFill", "GivenTensorDoubleFill",
                                "GivenTensorBoolFill", "GivenTensorIntFill", "GivenTensorInt64Fill"})


def _shape_only(node: Node, values: dict[str, Value]) -> bool:
    return (node.op in SHAPE_ONLY_FILLERS and len(node.inputs) == 1 and not node.attrs.get("input_as_shape")
            and values[node.inputs[0]].typed)


def fold_constants(graph: Graph, limit: int = FOLD_LIMIT) -> Graph:
    consts: dict[str, np.ndarray] = {}
    nodes: list[Node] = []
    for node in graph.nodes:
        if node.op == "Const":
            consts[node.outputs[0]] = node.attrs["value"]
            nodes.append(node)
            continue
        shape_only = _shape_only(node, graph.values)
        foldable = (node.op != "Fused" and node.outputs
                    and (shape_only or all(i in consts for i in node.inputs))
                    and all(graph.values[o].typed and graph.values[o].size <= limit for o in node.outputs)
                    and is_deterministic(node.op))
        if foldable and shape_only:
            # The op reads only its input's shape (a filler shaped like its input): any values do.
            ins = [np.zeros(graph.values[i].shape, graph.values[i].dtype) for i in node.inputs]
        else:
            ins = [consts.get(i) for i in node.inputs]
        outs = _evaluate(node, ins, graph.name) if foldable else None
        if outs is None or any(o.shape != graph.values[n].shape or o.dtype != graph.values[n].dtype
                               for o, n in zip(outs, node.outputs)):
            nodes.append(node)
            continue
        for name, arr in zip(node.outputs, outs):
            arr = np.asarray(arr, order="C")  # np.ascontiguousarray would make a 0-d value (1,)
            if arr.base is not None or not arr.flags.owndata:
                arr = arr.copy()
            # Shared by every run (and every workspace that runs this plan): never written again.
            arr.flags.writeable = False
            consts[name] = arr
            nodes.append(Node("Const", (), (name,), {"value": arr, "source": node.op}, node.index, node.proto))
    return graph.with_nodes(nodes)


# --------------------------------------------------------------------------------------------
# Dead code
# --------------------------------------------------------------------------------------------
def has_side_effects(node: Node) -> bool:
    if node.op in ("Const", "Fused"):
        return False
    if not node.outputs:
        return True
    return lookup(node.op).category == HOST


def eliminate_dead_code(graph: Graph, keep: Callable[[Node], bool] = has_side_effects) -> Graph:
    live = set(graph.outputs.values())
    kept: list[Node] = []
    for node in reversed(graph.nodes):
        if keep(node) or any(o in live for o in node.outputs):
            kept.append(node)
            live.update(node.inputs)
    if len(kept) == len(graph.nodes):
        return graph
    return prune_values(graph.with_nodes(reversed(kept)))
