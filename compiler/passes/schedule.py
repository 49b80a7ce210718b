"""Scheduling: a linear order of the (fused) nodes.

Fusion already places each group where its last member stood, which keeps NetDef order for
everything else (host ops with side effects keep their relative order). This pass makes the order
an explicit, checked property: a stable topological sort that keeps the incoming order whenever
it is valid, and repairs it (rather than producing wrong code) when a pass left it out of order.
"""
from __future__ import annotations

import heapq

from netjit.compiler.ir import Graph


def schedule(graph: Graph) -> Graph:
    producer = {out: pos for pos, node in enumerate(graph.nodes) for out in node.outputs}
    deps: list[set[int]] = []
    users: list[list[int]] = [[] for _ in graph.nodes]
    for pos, node in enumerate(graph.nodes):
        d = {producer[i] for i in node.inputs if i in producer and producer[i] != pos}
        deps.append(d)
        for p in d:
            users[p].append(pos)
    waiting = [len(d) for d in deps]
    ready = [pos for pos, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        pos = heapq.heappop(ready)
        order.append(pos)
        for u in users[pos]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(graph.nodes):
        stuck = [graph.nodes[p].describe() for p, n in enumerate(waiting) if n > 0]
        raise ValueError(f"graph {graph.name!r} has a cycle through {stuck[:5]}")
    if order == list(range(len(graph.nodes))):
        return graph
    return graph.with_nodes(graph.nodes[p] for p in order)
