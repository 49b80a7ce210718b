"""The compiler pipeline: import -> infer -> simplify -> fuse -> schedule -> plan buffers -> codegen.

``PASSES`` is the one ordered list of graph passes (pure ``Graph -> Graph`` functions). Planning
works per *segment*: inference types the nodes from a given start until one cannot be typed before
it runs (a barrier, see passes/infer.py); the segment is everything before the barrier.

Set ``NETJIT_DUMP_AFTER`` to a pass name (or a comma list, or ``all``) to print the graph after it;
``import``, ``infer`` and ``buffers`` are dump points too.
"""
from __future__ import annotations

import contextvars
import itertools
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from netjit.compiler import strict
from netjit.compiler.codegen import driver, numba_cpu
from netjit.compiler.ir import Graph, Node, maybe_dump, verify
from netjit.compiler.ops.common import ShapeDependsOnValues
from netjit.compiler.ops.tensor_ops import DataDependentShape
from netjit.compiler.ops.registry import TensorType, lookup
from netjit.compiler.passes.buffers import BufferPlan, plan_buffers
from netjit.compiler.passes.fuse import fuse
from netjit.compiler.passes.infer import infer_types
from netjit.compiler.passes.schedule import schedule
from netjit.compiler.passes.simplify import eliminate_dead_code, fold_constants, prune_values, remove_noops

# Input values the caller's arrays hold read-only (weights an init net folded into constants): their
# kernels are precompiled for read-only arrays, the type the run will pass, instead of compiling a
# writable specialisation that is never called and then the read-only one at the first run.
READONLY_INPUTS: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("readonly_inputs",
                                                                                 default=frozenset())

PASSES: list[tuple[str, Callable[[Graph], Graph]]] = [
    ("remove_noops", remove_noops),
    ("fold_constants", fold_constants),
    ("dce", eliminate_dead_code),
    ("fuse", lambda g: fuse(g, numba_cpu.RULES)),
    ("schedule", schedule),
]
_PLAN_IDS = itertools.count()


@dataclass
class SegmentPlan:
    """A compiled plan for nodes [start, stop) of a net under one input signature."""
    start: int
    stop: int
    graph: Graph
    buffers: BufferPlan
    driver: driver.DriverSpec
    signature: tuple
    fallbacks: list[strict.Fallback] = field(default_factory=list)   # what fell back to references, and why

    @property
    def empty(self) -> bool:
        return self.start == self.stop

    @property
    def shareable(self) -> bool:
        """No per-instance state: no host steps (op contexts), no seeded generator, no arena. All
        runners may then share one binding, which makes constructing a seen net (RunNetOnce) cheap."""
        spec = self.driver
        return (not spec.host_nodes and spec.arena_bytes == 0
                and not any(n.proto is not None and n.proto.device_option.HasField("random_seed")
                            for _, n in spec.fills))


def segment_graph(graph: Graph, start: int, stop: int, visible: set[str] | None) -> Graph:
    """The sub-graph of nodes [start, stop): inputs are the values it reads from the workspace,
    outputs the latest value of each blob it writes that is visible (``visible`` None: all, the
    Caffe2 rule) or that a later node reads (later segments read it back from the workspace)."""
    nodes = graph.nodes[start:stop]
    defined = {o for n in nodes for o in n.outputs}
    inputs: dict[str, str] = {}
    latest: dict[str, str] = {}
    for n in nodes:
        for i in n.inputs:
            if i not in defined:
                inputs.setdefault(graph.values[i].blob, i)
        for o in n.outputs:
            latest[graph.values[o].blob] = o
    read_later = {i for n in graph.nodes[stop:] for i in n.inputs}
    outputs = {b: v for b, v in latest.items() if visible is None or b in visible or v in read_later}
    sub = Graph(graph.name, graph.values, tuple(nodes), inputs, outputs, latest)
    return prune_values(sub)


def run_passes(graph: Graph, check: bool = True) -> Graph:
    for name, fn in PASSES:
        graph = fn(graph)
        if check:
            verify(graph)
        maybe_dump(graph, name)
    return graph


def inference_failure(graph: Graph, pos: int) -> strict.Fallback | None:
    """Why node ``pos`` could not be typed when the cause is its shape rule raising (inference
    swallows it: the node becomes a barrier). None when it has no rule or reads untyped values:
    those barriers are by design (host ops, value-dependent shapes)."""
    if pos >= len(graph.nodes):
        return None
    node = graph.nodes[pos]
    opdef = lookup(node.op)
    ins = [graph.values[i] for i in node.inputs]
    if opdef.infer is None or not node.outputs or not all(v.typed for v in ins):
        return None
    try:
        opdef.infer(node.attrs, [TensorType(tuple(v.shape), v.dtype) for v in ins])
    except (ShapeDependsOnValues, DataDependentShape):
        return None     # the rule's way to say "known once the op has run": a barrier by design
    except Exception as err:  # noqa: BLE001 - recorded; the op reports its own error when it runs
        return strict.Fallback("infer", node.index, node.op, strict.reason_of(err),
                               unexpected=not strict.user_error(err))
    return None


def _expand(node: Node) -> list[Node]:
    return list(node.members) if node.op == "Fused" else [node]


def plan_segment(graph: Graph, start: int, signature: Mapping[str, TensorType | str],
                 visible: set[str] | None = None, check: bool = True) -> SegmentPlan:
    typed, stop = infer_types(graph, signature, start)
    fallbacks: list[strict.Fallback] = []
    failed = inference_failure(typed, stop)
    if failed is not None:
        fallbacks.append(strict.check(failed, graph.name))
    seg = segment_graph(typed, start, stop, visible)
    maybe_dump(seg, "infer")
    with strict.collecting() as folds:
        seg = run_passes(seg, check)
    fallbacks += [strict.check(f, graph.name) for f in folds]
    kernels: dict[int, numba_cpu.KernelCall] = {}
    consts = {n.outputs[0] for n in seg.nodes if n.op == "Const"} | READONLY_INPUTS.get()
    nodes: list[Node] = []
    for node in seg.nodes:
        if node.op == "Const":
            nodes.append(node)
            continue
        try:
            kc = numba_cpu.kernel_for(node, seg.values)
            if kc is not None:
                numba_cpu.precompile(kc, seg.values, consts)
        except Exception as err:  # noqa: BLE001 - recorded (strict mode raises); the references run instead
            fallbacks.append(strict.check(strict.Fallback("kernel", node.index, node.describe(),
                                                          strict.reason_of(err), unexpected=True), graph.name))
            kc = None
            if node.op == "Fused":
                nodes.extend(_expand(node))
                continue
        if kc is not None:
            kernels[len(nodes)] = kc
        nodes.append(node)
    if any(a is not b for a, b in zip(nodes, seg.nodes)) or len(nodes) != len(seg.nodes):
        seg = seg.with_nodes(nodes)     # a group that fell back (even of one member) is now its members
    pos_of = {id(n): pos for pos, n in enumerate(seg.nodes)}
    buffers = plan_buffers(seg, lambda n, v: pos_of[id(n)] in kernels,
                           lambda n: numba_cpu.inplace_pairs(n, kernels.get(pos_of[id(n)]), seg.values))
    if os.environ.get("NETJIT_DUMP_AFTER") in ("buffers", "all"):
        print(f"--- buffers ---\n{buffers.summary()}", file=sys.stderr)
    fast = {pos: maker for pos, node in enumerate(seg.nodes)
            if pos not in kernels and node.op not in ("Const", "Fused")
            and (maker := numba_cpu.fill_for(node, seg.values)) is not None}
    spec = driver.generate(seg, buffers, kernels, fast, f"{graph.name}#{next(_PLAN_IDS)}")
    sig = tuple(sorted((b, t) for b, t in signature.items()))
    return SegmentPlan(start, stop, seg, buffers, spec, sig, fallbacks)


def describe_signature(signature: Mapping[str, Any]) -> str:
    return ", ".join(f"{b}: {t if isinstance(t, str) else f'{t.dtype}{list(t.shape)}'}"
                     for b, t in sorted(signature.items()))
