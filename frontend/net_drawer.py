"""Drawing nets and plans as Graphviz graphs (pydot), with Caffe2's ``net_drawer`` API.

Two views of a net: :func:`GetPydotGraph` shows ops (green boxes) and blobs (octagons, a new node
per write so in-place updates stay readable); :func:`GetPydotGraphMinimal` shows ops only, linked
from each input's producer. :func:`GetPlanGraph` shows a PlanDef's execution steps.
:func:`write_graph` saves a graph: ``.dot`` always works; other formats (svg, png, pdf) need
Graphviz's ``dot`` program.

>>> from netjit.proto import caffe2_pb2
>>> net = caffe2_pb2.NetDef(name="tiny")
>>> _ = net.op.add(type="Relu", input=["X"], output=["Y"])
>>> graph = GetPydotGraph(net)
>>> sorted(n.get_name() for n in graph.get_nodes())
['"Relu (op#0)"', '"X #0"', '"Y #0"']
>>> write_graph(graph, "tiny.dot")  # doctest: +SKIP
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from netjit.proto import caffe2_pb2
from netjit.proto.io import atomic_write_bytes

try:
    import pydot
except ImportError:  # drawing is an optional extra; everything else works without it
    pydot = None

OP_STYLE = {"shape": "box", "color": "#0F9D58", "style": "filled", "fontcolor": "#FFFFFF"}
BLOB_STYLE = {"shape": "octagon"}
# Plan views: steps look like ops; the nets a step runs are plain ellipses.
_SUBSTEP_EDGE = {"style": "dashed", "arrowhead": "dot"}

OpNodeProducer = Callable[[caffe2_pb2.OperatorDef, int], Any]


class GraphvizNotFoundError(RuntimeError):
    """Rendering needs Graphviz's ``dot`` program and it is not on PATH."""


def _require_pydot() -> None:
    if pydot is None:
        raise ImportError("net_drawer needs pydot: pip install 'netjit[draw]' (or pip install pydot)")


def _quote(text: str) -> str:
    # A DOT quoted string: pydot keeps already-quoted ids as they are, which matters because it
    # would otherwise read "name:x" as a node port and leave quotes inside names unescaped.
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _operators(operators_or_net: Any) -> tuple[list[caffe2_pb2.OperatorDef], str | None]:
    if hasattr(operators_or_net, "Proto"):
        operators_or_net = operators_or_net.Proto()
    if isinstance(operators_or_net, caffe2_pb2.NetDef):
        return list(operators_or_net.op), operators_or_net.name or None
    if isinstance(operators_or_net, caffe2_pb2.OperatorDef):
        return [operators_or_net], None
    ops = list(operators_or_net)
    for op in ops:
        if not isinstance(op, caffe2_pb2.OperatorDef):
            raise TypeError("expected a NetDef, an object with .Proto(), or OperatorDefs; "
                            f"got a sequence holding {type(op).__name__}")
    return ops, None


def op_node_text(op: caffe2_pb2.OperatorDef, op_id: int, append_output: bool = False) -> str:
    """The text of an op node: ``"<Type> (op#i)"``, prefixed by ``"<name>/"`` for named ops.

    >>> op_node_text(caffe2_pb2.OperatorDef(type="FC", name="fc1", output=["y"]), 3, append_output=True)
    'fc1/FC (op#3)\\ny'
    """
    text = f"{op.name}/{op.type} (op#{op_id})" if op.name else f"{op.type} (op#{op_id})"
    if append_output:
        text += "".join(f"\n{output}" for output in op.output)
    return text


def GetOpNodeProducer(append_output: bool, **style: Any) -> OpNodeProducer:
    """A function ``(op, op_id) -> pydot.Node`` for op nodes, optionally listing the op's outputs.

    >>> producer = GetOpNodeProducer(False, **OP_STYLE)
    >>> producer(caffe2_pb2.OperatorDef(type="Relu"), 0).get_name()
    '"Relu (op#0)"'
    """
    _require_pydot()

    def produce(op: caffe2_pb2.OperatorDef, op_id: int) -> Any:
        text = _quote(op_node_text(op, op_id, append_output))
        return pydot.Node(text, label=text, **style)

    return produce


def _new_graph(name: str | None, rankdir: str) -> Any:
    return pydot.Dot(_quote(name or "net"), graph_type="digraph", rankdir=rankdir)


def GetPydotGraph(operators_or_net: Any, name: str | None = None, rankdir: str = "LR",
                  node_producer: OpNodeProducer | None = None) -> Any:
    """The op-and-blob graph of a net (NetDef, ``core.Net`` or a list of OperatorDefs).

    Each write of a blob creates a new blob node (``"<blob> #<version>"``), so ``Relu X -> X``
    reads ``X #0`` and writes ``X #1``.

    >>> ops = [caffe2_pb2.OperatorDef(type="Relu", input=["X"], output=["X"])]
    >>> [e.get_source() for e in GetPydotGraph(ops).get_edges()]
    ['"X #0"', '"Relu (op#0)"']
    """
    _require_pydot()
    ops, net_name = _operators(operators_or_net)
    producer = node_producer or GetOpNodeProducer(False, **OP_STYLE)
    graph = _new_graph(name or net_name, rankdir)
    current: dict[str, Any] = {}     # blob -> its node for the latest version
    versions: dict[str, int] = {}

    def blob_node(blob: str) -> Any:
        node = pydot.Node(_quote(f"{blob} #{versions[blob]}"), label=_quote(blob), **BLOB_STYLE)
        graph.add_node(node)
        current[blob] = node
        return node

    for op_id, op in enumerate(ops):
        op_node = producer(op, op_id)
        graph.add_node(op_node)
        for blob in op.input:
            if blob not in current:
                versions[blob] = 0
                blob_node(blob)
            graph.add_edge(pydot.Edge(current[blob], op_node))
        for blob in op.output:
            versions[blob] = versions[blob] + 1 if blob in versions else 0
            graph.add_edge(pydot.Edge(op_node, blob_node(blob)))
    return graph


def GetPydotGraphMinimal(operators_or_net: Any, name: str | None = None, rankdir: str = "LR",
                         minimal_dependency: bool = False,
                         node_producer: OpNodeProducer | None = None) -> Any:
    """The op-only graph: an edge from the op that last wrote each input to its reader.

    Op nodes list their outputs. With ``minimal_dependency=True`` an edge is dropped when the
    parent is already an ancestor of another parent (the dependency is implied).

    >>> ops = [caffe2_pb2.OperatorDef(type="A", output=["a"]),
    ...        caffe2_pb2.OperatorDef(type="B", input=["a"], output=["b"]),
    ...        caffe2_pb2.OperatorDef(type="C", input=["a", "b"], output=["c"])]
    >>> len(GetPydotGraphMinimal(ops).get_edges()), len(GetPydotGraphMinimal(ops, minimal_dependency=True).get_edges())
    (3, 2)
    """
    _require_pydot()
    ops, net_name = _operators(operators_or_net)
    producer = node_producer or GetOpNodeProducer(True, **OP_STYLE)
    graph = _new_graph(name or net_name, rankdir)
    nodes: list[Any] = []
    ancestors: list[set[int]] = []
    last_writer: dict[str, int] = {}
    for op_id, op in enumerate(ops):
        node = producer(op, op_id)
        graph.add_node(node)
        parents = {last_writer[blob] for blob in op.input if blob in last_writer}
        implied = set().union(*(ancestors[p] for p in parents))
        drawn = parents - implied if minimal_dependency else parents
        for parent in sorted(drawn):
            graph.add_edge(pydot.Edge(nodes[parent], node))
        nodes.append(node)
        ancestors.append(parents | implied)
        for blob in op.output:
            last_writer[blob] = op_id
    return graph


def _step_text(step: caffe2_pb2.ExecutionStep) -> str:
    lines = [step.name or "(unnamed step)"]
    if step.num_iter:
        lines.append(f"x{step.num_iter}")
    if step.report_net:
        lines.append(f"reporter: {step.report_net}")
    if step.should_stop_blob:
        lines.append(f"stop blob: {step.should_stop_blob}")
    if step.concurrent_substeps:
        lines.append("concurrent")
    if step.only_once:
        lines.append("once")
    return "\n".join(lines)


def GetPlanGraph(plan_def: Any, name: str | None = None, rankdir: str = "TB") -> Any:
    """The execution steps of a PlanDef (or ``core.Plan``): steps as boxes, the nets they run as ellipses.

    Solid edges follow the order things run in; dashed edges go from a step to its contents
    (to every substep when they run concurrently).

    >>> plan = caffe2_pb2.PlanDef(name="p")
    >>> _ = plan.execution_step.add(name="train", network=["net"], num_iter=10)
    >>> len(GetPlanGraph(plan).get_nodes())
    2
    """
    _require_pydot()
    if hasattr(plan_def, "Proto"):
        plan_def = plan_def.Proto()
    graph = _new_graph(name or plan_def.name or "plan", rankdir)
    counter = iter(range(1 << 62))  # unique node ids: step and net names may repeat

    def add_node(text: str, **style: Any) -> Any:
        node = pydot.Node(f"n{next(counter)}", label=_quote(text), **style)
        graph.add_node(node)
        return node

    def draw_steps(steps: Iterable[caffe2_pb2.ExecutionStep], chain: bool) -> list[Any]:
        drawn: list[Any] = []
        for step in steps:
            node = add_node(_step_text(step), **OP_STYLE)
            if chain and drawn:
                graph.add_edge(pydot.Edge(drawn[-1], node))
            drawn.append(node)
            if step.substep:
                children = draw_steps(step.substep, chain=not step.concurrent_substeps)
            else:
                children = []
                for net_name in step.network:
                    child = add_node(net_name)
                    if children:
                        graph.add_edge(pydot.Edge(children[-1], child))
                    children.append(child)
            targets = children if step.concurrent_substeps else children[:1]
            for child in targets:
                graph.add_edge(pydot.Edge(node, child, **_SUBSTEP_EDGE))
        return drawn

    draw_steps(plan_def.execution_step, chain=True)
    return graph


def dot_available() -> bool:
    """Whether Graphviz's ``dot`` program is on PATH (needed for every format but ``.dot``)."""
    return shutil.which("dot") is not None


def render(graph: Any, fmt: str) -> bytes:
    """The graph rendered by Graphviz in ``fmt`` (``"svg"``, ``"png"``, ``"pdf"``...), or its DOT source for ``"dot"``."""
    fmt = fmt.lower().lstrip(".")
    if fmt in ("dot", "gv"):
        return graph.to_string().encode("utf-8")
    if not dot_available():
        raise GraphvizNotFoundError(
            f"rendering {fmt.upper()} needs Graphviz's `dot` program, which is not on PATH. Install "
            "Graphviz (apt-get install graphviz, brew install graphviz, conda install graphviz), or "
            "write a .dot file instead and render it elsewhere.")
    return graph.create(prog="dot", format=fmt)


def write_graph(graph: Any, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Save ``graph`` to ``path``, in the format its extension names unless ``fmt`` is given.

    ``.dot`` needs nothing else; other formats need Graphviz (:class:`GraphvizNotFoundError`).
    The file is written atomically; returns its path.
    """
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".")
    if not fmt:
        raise ValueError(f"{path}: no extension to pick a format from; use .dot, .svg, .png or .pdf")
    atomic_write_bytes(path, render(graph, fmt))
    return path
