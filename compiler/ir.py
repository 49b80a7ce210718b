"""The compiler's IR: a small, typed, printable SSA graph between a NetDef and codegen.

Caffe2 nets rewrite blobs in place (``Relu X -> X``, ``WeightedSum`` into a parameter). Import
renames every write to a new *version* of its blob, so each :class:`Value` is defined once: version 0
of blob ``X`` is the value the workspace holds before the run (named ``X``), later writes are
``X@1``, ``X@2``... The graph remembers, per blob, the value that is the blob's final content.

>>> from netjit.proto.args import make_op
>>> from netjit.proto import caffe2_pb2
>>> net = caffe2_pb2.NetDef(name="n")
>>> net.op.extend([make_op("Relu", ["X"], ["X"]), make_op("Relu", ["X"], ["Y"])])
>>> g = import_netdef(net)
>>> print(g)
graph n(X) -> (X=X@1, Y=Y@1)
  X@1 = Relu(X)  #0
  Y@1 = Relu(X@1)  #1

Protobuf does not go past import except as an opaque payload: a node keeps its (effective)
OperatorDef so that a node the compiler cannot compile runs its numpy reference with the same
OpContext the reference executor would build.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

import numpy as np

from netjit.proto import caffe2_pb2

VERSION_SEP = "@"


@dataclass(frozen=True)
class Value:
    """One SSA value: version ``version`` of workspace blob ``blob``; shape/dtype once inferred.

    ``dtype is None`` means "not known yet"; ``kind == "object"`` marks a non-tensor blob
    (a DB reader, bytes) that only host steps may touch.
    """
    name: str
    blob: str
    version: int
    shape: tuple[int, ...] | None = None
    dtype: np.dtype | None = None
    kind: str = "tensor"

    @property
    def typed(self) -> bool:
        return self.kind == "tensor" and self.shape is not None and self.dtype is not None

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape or ():
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * (self.dtype.itemsize if self.dtype is not None else 0)

    def type_str(self) -> str:
        if self.kind != "tensor":
            return self.kind
        if not self.typed:
            return "?"
        return f"{_short_dtype(self.dtype)}[{','.join(str(d) for d in self.shape)}]"


def _short_dtype(dt: np.dtype) -> str:
    return {"float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64", "bool": "bool",
            "uint8": "u8", "int8": "i8", "int16": "i16", "uint16": "u16", "float16": "f16"}.get(dt.name, dt.name)


@dataclass(frozen=True, eq=False)
class Node:
    """One operation. ``attrs`` are the decoded args (registry ``Args``) for registry ops; pseudo
    ops keep their own data there (``Const``: ``value``; ``Fused``: ``nodes``, ``shape``, ``kind``)."""
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    index: int = -1                      # NetDef op index (a fused node: its first member's)
    proto: caffe2_pb2.OperatorDef | None = field(default=None, compare=False, repr=False)

    @property
    def members(self) -> tuple["Node", ...]:
        """The NetDef ops this node stands for (itself, or a fused node's members)."""
        return tuple(self.attrs["nodes"]) if self.op == "Fused" else (self,)

    def describe(self) -> str:
        if self.op == "Fused":
            return "Fused(" + ",".join(m.op for m in self.members) + ")"
        return self.op


@dataclass(frozen=True, eq=False)
class Graph:
    """Nodes in a valid execution order over SSA values.

    ``inputs``: blob -> value read from the workspace (version 0). ``outputs``: blob -> value the
    blob must hold after a run (what a run leaves visible). ``final``: blob -> last value written
    to it in the net, whether visible or not.
    """
    name: str
    values: Mapping[str, Value]
    nodes: tuple[Node, ...]
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    final: Mapping[str, str] = field(default_factory=dict)

    def value(self, name: str) -> Value:
        return self.values[name]

    def with_nodes(self, nodes: Iterable[Node], **changes: Any) -> "Graph":
        return replace(self, nodes=tuple(nodes), **changes)

    def producers(self) -> dict[str, Node]:
        return {out: node for node in self.nodes for out in node.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        uses: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                uses.setdefault(name, []).append(node)
        return uses

    def __str__(self) -> str:
        return format_graph(self)


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------
def import_netdef(net: caffe2_pb2.NetDef) -> Graph:
    """NetDef -> SSA graph. Every op is checked against its schema (errors are ``OpError`` naming
    the net, op index, type and blob, as when the reference executor constructs the net)."""
    from netjit.compiler.reference import check_op, effective_op  # late: reference imports the registry

    net_device = net.device_option if net.HasField("device_option") else None
    blob_names = {b for op in net.op for b in (*op.input, *op.output)}
    current: dict[str, str] = {}          # blob -> its current value name
    versions: dict[str, int] = {}
    values: dict[str, Value] = {}
    inputs: dict[str, str] = {}
    nodes: list[Node] = []

    def read(blob: str) -> str:
        if blob not in current:
            values[blob] = Value(blob, blob, 0)
            current[blob] = blob
            inputs[blob] = blob
        return current[blob]

    def write(blob: str) -> str:
        if blob not in current:        # written before ever read: version 0 is never used
            read(blob)
            del inputs[blob]
        k = versions.get(blob, 0) + 1
        versions[blob] = k
        name = f"{blob}{VERSION_SEP}{k}"
        while name in blob_names or name in values:  # a blob literally named like a version
            name += "'"
        values[name] = Value(name, blob, k)
        current[blob] = name
        return name

    for index, op in enumerate(net.op):
        op = effective_op(op, net_device)
        _, args = check_op(op, index, net.name)
        ins = tuple(read(b) for b in op.input)
        outs = tuple(write(b) for b in op.output)
        nodes.append(Node(op.type, ins, outs, args, index, op))
    final = {blob: name for blob, name in current.items() if values[name].version > 0}
    used = {name for node in nodes for name in (*node.inputs, *node.outputs)}
    values = {k: v for k, v in values.items() if k in used}
    return Graph(net.name, values, tuple(nodes), inputs, dict(final), final)


# --------------------------------------------------------------------------------------------
# Printing and verification
# --------------------------------------------------------------------------------------------
def _fmt_attr(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"<{v.dtype}{list(v.shape)}>"
    if isinstance(v, (list, tuple)) and len(v) > 6:
        return f"[{', '.join(map(repr, v[:6]))}, ...]"
    return repr(v)


def format_node(node: Node, values: Mapping[str, Value] | None = None, indent: str = "  ") -> str:
    def typed(name: str) -> str:
        v = values.get(name) if values else None
        return f"{name}: {v.type_str()}" if v is not None and v.typed else name

    outs = ", ".join(typed(o) for o in node.outputs) or "()"
    if node.op == "Fused":
        head = (f"{indent}{outs} = Fused[{node.attrs.get('kind', '')}]({', '.join(node.inputs)})"
                f"  #{','.join(str(m.index) for m in node.members)}")
        body = [format_node(m, values, indent + "    | ") for m in node.members]
        return "\n".join([head, *body])
    shown = {k: v for k, v in node.attrs.items()
             if getattr(node.attrs, "has", None) is None or node.attrs.has(k)} if node.op != "Const" else {}
    attrs = " {" + ", ".join(f"{k}={_fmt_attr(v)}" for k, v in shown.items()) + "}" if shown else ""
    if node.op == "Const":
        attrs = f" {_fmt_attr(node.attrs['value'])}"
    return f"{indent}{outs} = {node.op}({', '.join(node.inputs)}){attrs}  #{node.index}"


def format_graph(graph: Graph) -> str:
    outs = ", ".join(f"{b}={v}" for b, v in sorted(graph.outputs.items()))
    lines = [f"graph {graph.name}({', '.join(graph.inputs)}) -> ({outs})"]
    lines += [format_node(n, graph.values) for n in graph.nodes]
    return "\n".join(lines)


class VerifyError(AssertionError):
    """The graph breaks an IR invariant (a pass bug, not a user error)."""


def verify(graph: Graph) -> Graph:
    """Check SSA and ordering invariants; return the graph (for chaining) or raise VerifyError."""
    defined: set[str] = set()
    for blob, name in graph.inputs.items():
        if name not in graph.values:
            raise VerifyError(f"input {blob!r} -> {name!r} has no Value")
        defined.add(name)

    def check_node(node: Node, scope: set[str], where: str) -> None:
        for name in node.inputs:
            if name not in scope:
                raise VerifyError(f"{where}: input {name!r} is used before it is defined")
            if name not in graph.values:
                raise VerifyError(f"{where}: input {name!r} has no Value")
        for name in node.outputs:
            if name in scope:
                raise VerifyError(f"{where}: {name!r} is defined twice")
            if name not in graph.values:
                raise VerifyError(f"{where}: output {name!r} has no Value")

    for pos, node in enumerate(graph.nodes):
        where = f"node {pos} ({node.describe()} #{node.index})"
        check_node(node, defined, where)
        if node.op == "Fused":
            inner = set(defined) | set(node.inputs)
            produced: set[str] = set()
            for m in node.members:
                for name in m.inputs:
                    if name not in inner and name not in produced:
                        raise VerifyError(f"{where}: member {m.op} #{m.index} reads {name!r}, which is "
                                          f"neither a group input nor computed earlier in the group")
                produced.update(m.outputs)
            missing = [o for o in node.outputs if o not in produced]
            if missing:
                raise VerifyError(f"{where}: outputs {missing} are not computed by any member")
            undeclared = [i for m in node.members for i in m.inputs
                          if i not in produced and i not in node.inputs]
            if undeclared:
                raise VerifyError(f"{where}: members read {undeclared} without declaring them as inputs")
        defined.update(node.outputs)
    for blob, name in graph.outputs.items():
        if name not in defined:
            raise VerifyError(f"output {blob!r} -> {name!r} is never defined")
    return graph


def maybe_dump(graph: Graph, pass_name: str) -> None:
    """Print the graph after ``pass_name`` when NETJIT_DUMP_AFTER names it (comma list or "all")."""
    want = os.environ.get("NETJIT_DUMP_AFTER", "")
    if want and (want == "all" or pass_name in {w.strip() for w in want.split(",")}):
        import sys
        print(f"--- after {pass_name} ---\n{format_graph(graph)}", file=sys.stderr)
