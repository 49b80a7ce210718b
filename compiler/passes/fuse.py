"""Fusion: group elementwise/broadcast chains (and epilogues of FC-like producers) into one kernel.

A group is a set of nodes that one loop computes: optionally a *producer* head (an OUT_FUSABLE op
such as FC, whose kernel writes its result and then runs the loop over it), followed by elementwise
members whose outputs all have the group's iteration shape. Inputs may broadcast into that shape.

Rules (``FusionRules`` says which nodes the backend can put in a loop or use as a head):

- a node joins the group of one of its inputs' producers when its output shape is the group's
  shape, the group is below ``max_nodes``/``max_inputs``, and no node already placed outside the
  group reads a value the group computes (the group runs where its last member stood, so such a
  reader would run too early; this is also what keeps the contracted graph acyclic);
- a value computed inside a group is written out only when a blob exposes it or a node outside the
  group reads it (single consumer or post-dominated values stay in registers).

Each group becomes one ``Fused`` node placed at its last member's position::

    Y@1: f32[2,5] = Fused[producer](X, W, b, Z)  #3,4,5
        | t@1 = FC(X, W, b)  #3
        | ...
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from netjit.compiler.ir import Graph, Node, Value

NodeCheck = Callable[[Node, Mapping[str, Value]], bool]


@dataclass(frozen=True)
class FusionRules:
    loop_ok: NodeCheck                 # the node can be computed per element inside a loop
    head_ok: NodeCheck                 # the node can head a group (producer with an epilogue loop)
    max_nodes: int = 16
    max_inputs: int = 12


@dataclass
class _Group:
    kind: str                          # "elementwise" | "producer"
    shape: tuple[int, ...]
    members: list[int] = field(default_factory=list)      # node positions, in order
    produced: set[str] = field(default_factory=set)
    reads: set[str] = field(default_factory=set)          # values read from outside the group


def _out_shape(node: Node, values: Mapping[str, Value]) -> tuple[int, ...] | None:
    v = values[node.outputs[0]] if node.outputs else None
    return tuple(v.shape) if v is not None and v.typed else None


def fuse(graph: Graph, rules: FusionRules) -> Graph:
    values = graph.values
    producer_pos = {out: pos for pos, node in enumerate(graph.nodes) for out in node.outputs}
    consumers: dict[str, list[int]] = {}
    for pos, node in enumerate(graph.nodes):
        for name in node.inputs:
            consumers.setdefault(name, []).append(pos)
    group_of: dict[int, int] = {}
    groups: list[_Group] = []

    def can_join(gid: int, pos: int, node: Node) -> bool:
        g = groups[gid]
        if _out_shape(node, values) != g.shape or len(g.members) >= rules.max_nodes:
            return False
        new_reads = {i for i in node.inputs if i not in g.produced} - g.reads
        if len(g.reads) + len(new_reads) > rules.max_inputs:
            return False
        # Nothing outside the group, placed before `pos`, may read what the group computes.
        for name in g.produced:
            for c in consumers.get(name, ()):
                if c < pos and group_of.get(c) != gid:
                    return False
        return True

    def add(gid: int, pos: int, node: Node) -> None:
        g = groups[gid]
        g.members.append(pos)
        g.reads |= {i for i in node.inputs if i not in g.produced}
        g.produced |= set(node.outputs)
        group_of[pos] = gid

    for pos, node in enumerate(graph.nodes):
        if rules.head_ok(node, values):
            groups.append(_Group("producer", _out_shape(node, values)))
            add(len(groups) - 1, pos, node)
            continue
        if not rules.loop_ok(node, values):
            continue
        joined = False
        for name in node.inputs:
            src = producer_pos.get(name)
            gid = group_of.get(src) if src is not None else None
            if gid is not None and can_join(gid, pos, node):
                add(gid, pos, node)
                joined = True
                break
        if not joined:
            groups.append(_Group("elementwise", _out_shape(node, values)))
            add(len(groups) - 1, pos, node)

    return _contract(graph, groups, group_of)


def _contract(graph: Graph, groups: list[_Group], group_of: dict[int, int]) -> Graph:
    last = {gid: g.members[-1] for gid, g in enumerate(groups)}
    member_set = [set(g.members) for g in groups]
    exposed = set(graph.outputs.values())
    made_by = {name: gid for gid, g in enumerate(groups) for name in g.produced}
    read_outside: dict[int, set[str]] = {gid: set() for gid in range(len(groups))}
    for pos, node in enumerate(graph.nodes):
        gid = group_of.get(pos)
        for name in node.inputs:
            other = made_by.get(name)
            if other is not None and other != gid:
                read_outside[other].add(name)
    nodes: list[Node] = []
    for pos, node in enumerate(graph.nodes):
        gid = group_of.get(pos)
        if gid is None:
            nodes.append(node)
            continue
        if pos != last[gid]:
            continue
        g = groups[gid]
        members = tuple(graph.nodes[p] for p in sorted(member_set[gid]))
        inputs: list[str] = []
        produced: set[str] = set()
        for m in members:
            for name in m.inputs:
                if name not in produced and name not in inputs:
                    inputs.append(name)
            produced.update(m.outputs)
        outputs = tuple(o for m in members for o in m.outputs if o in exposed or o in read_outside[gid])
        nodes.append(Node("Fused", tuple(inputs), outputs,
                          {"nodes": members, "shape": g.shape, "kind": g.kind}, members[0].index))
    return graph.with_nodes(nodes)
