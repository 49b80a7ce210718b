"""Caffe2's ``memonger``: rename blobs whose lifetimes do not overlap to shared names, so a net
holds fewer (and less) intermediate tensors; plus the checks and statistics around it.

    from caffe2.python import memonger
    grad_map = model.AddGradientOperators([loss])
    optim = memonger.share_grad_blobs(model.net, ["loss"], set(model.param_to_grad.values()),
                                      namescope="", share_activations=False)
    model.net._net = optim                       # same results, fewer gradient blobs
    predict = memonger.optimize_inference_for_dag(predict_net, ["data"])

Lifetimes come from netjit's own graph import (compiler/ir.py: SSA values, each blob version's
defining op and readers) and are expressed as the buffer planner's ``Interval`` (compiler/passes/
buffers.py), whose live-set lower bound ``compute_statistics`` also reports. A blob may take another's
name only when it is first written strictly after the other's last read, so no op gains an in-place
pair it did not have (``verify_inplace_blobs``) and every op reads what it read before
(``verify_graph_equality``).
"""
from __future__ import annotations

import copy
import enum
import logging
from collections import namedtuple
from typing import Any, Callable, Iterable, Sequence

from netjit.compiler.ir import import_netdef
from netjit.compiler.passes.buffers import Interval, lower_bound
from netjit.proto import caffe2_pb2

log = logging.getLogger("memonger")

LiveRange = namedtuple("LiveRange", ["defined", "used", "size"])
Optimization = namedtuple("Optimization", ["net", "assignments", "blob_assignments"])
Statistics = namedtuple("Statistics", ["baseline_nbytes", "optimized_nbytes"])


class AssignmentAlgorithm(enum.Enum):
    GREEDY = 0
    DYNAMIC_PROGRAMMING = 1


class MemongerError(RuntimeError):
    """A net memonger cannot optimise as asked (a gradient op in an inference net, a blob read
    before any op or the caller provides it)."""


def _proto(net: Any) -> caffe2_pb2.NetDef:
    return net.Proto() if hasattr(net, "Proto") else net


# --------------------------------------------------------------------------------------------
# Live ranges (from the IR import) and assignment of blobs to shared names
# --------------------------------------------------------------------------------------------
def compute_ranges(linearized_ops: Sequence[caffe2_pb2.OperatorDef], blob_sizes: dict | None = None
                   ) -> dict[str, LiveRange]:
    """Each blob's LiveRange over ``linearized_ops``: first op writing it, last op reading it
    (None where never written/read), and its size from ``blob_sizes`` (None if not given)."""
    net = caffe2_pb2.NetDef(name="memonger_ranges")
    net.op.extend(linearized_ops)
    graph = import_netdef(net)
    ranges: dict[str, LiveRange] = {}
    for pos, node in enumerate(graph.nodes):
        for name in node.inputs:
            blob = graph.values[name].blob
            r = ranges.get(blob, LiveRange(None, None, None))
            ranges[blob] = r._replace(used=pos if r.used is None else max(r.used, pos))
        for name in node.outputs:
            blob = graph.values[name].blob
            r = ranges.get(blob, LiveRange(None, None, None))
            ranges[blob] = r._replace(defined=pos if r.defined is None else min(r.defined, pos))
    if blob_sizes:
        ranges = {b: r._replace(size=blob_sizes.get(b)) for b, r in ranges.items()}
    return ranges


def _interval(name: str, r: LiveRange, horizon: int) -> Interval:
    start = -1 if r.defined is None else r.defined
    end = horizon if r.used is None else r.used
    return Interval(name, start, max(start, end), int(r.size or 0))


def is_compatible(candidate_range: LiveRange, assignment: list, static_blobs: Iterable[str]) -> bool:
    """May a blob with ``candidate_range`` join ``assignment`` (a list of (blob, LiveRange) sharing one
    name)? Only if it is first written strictly after the last member's last read."""
    name, last = assignment[-1]
    if name in set(static_blobs):
        return False
    if candidate_range.defined is None or last.defined is None or last.used is None:
        return False
    return candidate_range.defined > last.used


def compute_assignments(ranges: dict[str, LiveRange], static_blobs: Iterable[str],
                        algo: AssignmentAlgorithm = AssignmentAlgorithm.GREEDY) -> list[list]:
    """Group blobs into assignments (lists of (blob, LiveRange) that may share one name).
    Blobs are taken in order of first write; each joins the compatible group whose largest member is
    closest to its size (best fit), else starts a group. Static blobs stay alone. The dynamic
    programming variant of Caffe2 is served by the same best-fit pass."""
    static = set(static_blobs)
    order = sorted(ranges.items(), key=lambda kv: (kv[1].defined is None, kv[1].defined or 0, kv[0]))
    groups: list[list] = []
    for name, r in order:
        if name in static or r.defined is None:
            groups.append([(name, r)])
            continue
        size = r.size or 0
        best, best_gap = None, None
        for g in groups:
            if g[0][0] in static or not is_compatible(r, g, static):
                continue
            gap = abs(max((m[1].size or 0) for m in g) - size)
            if best is None or gap < best_gap:
                best, best_gap = g, gap
        if best is None:
            groups.append([(name, r)])
        else:
            best.append((name, r))
    verify_assignments(groups)
    return groups


def verify_assignments(assignments: list[list]) -> None:
    """No two members of one assignment are live at the same time."""
    for group in assignments:
        for (a, ra), (b, rb) in zip(group, group[1:]):
            if ra.used is None or rb.defined is None or not ra.used < rb.defined:
                raise MemongerError(f"blobs {a!r} and {b!r} share a name but their lifetimes overlap")


def compute_blob_assignments(assignments: list[list]) -> dict[str, str]:
    """blob -> the name it takes (the group's last member, as Caffe2 named them), for groups of 2+."""
    return {blob: group[-1][0] for group in assignments if len(group) > 1 for blob, _ in group}


def apply_assignments(net: caffe2_pb2.NetDef, blob_assignments: dict[str, str]) -> None:
    """Rename every op input and output of ``net`` in place."""
    for op in net.op:
        for i, name in enumerate(op.input):
            op.input[i] = blob_assignments.get(name, name)
        for i, name in enumerate(op.output):
            op.output[i] = blob_assignments.get(name, name)


def compute_interference_graph(ops: Sequence[caffe2_pb2.OperatorDef]) -> dict[int, set[int]]:
    """op index -> indices of the later ops that read one of its outputs."""
    graph: dict[int, set[int]] = {i: set() for i in range(len(ops))}
    writer: dict[str, int] = {}
    for j, op in enumerate(ops):
        for b in op.input:
            if b in writer:
                graph[writer[b]].add(j)
        for b in op.output:
            writer[b] = j
    return graph


def topological_sort_traversal(g: dict[int, set[int]]) -> list[int]:
    """A topological order of the interference graph, lowest op index first among ready ops (the
    NetDef's own order when that is valid)."""
    indegree = {n: 0 for n in g}
    for succ in g.values():
        for s in succ:
            indegree[s] += 1
    ready = sorted(n for n, d in indegree.items() if d == 0)
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for s in sorted(g[n]):
            indegree[s] -= 1
            if indegree[s] == 0:
                ready.append(s)
                ready.sort()
    return order


def optimize_inference_fast(net: caffe2_pb2.NetDef, static_blobs: Iterable[str]) -> caffe2_pb2.NetDef:
    """Caffe2's C++ fast path for inference nets: the net of ``optimize_interference`` here."""
    return optimize_interference(net, static_blobs).net


def optimize_interference(net: caffe2_pb2.NetDef, static_blobs: Iterable[str],
                          ordering_function: Callable = topological_sort_traversal,
                          blob_sizes: dict | None = None,
                          algo: AssignmentAlgorithm = AssignmentAlgorithm.GREEDY) -> Optimization:
    """Share names among every blob except ``static_blobs`` (inputs, outputs, parameters you keep)."""
    net = copy.deepcopy(_proto(net))
    static_blobs = set(static_blobs) | blobs_in_subnets(net)
    order = ordering_function(compute_interference_graph(net.op))
    ops = [net.op[i] for i in order]
    del net.op[:]
    net.op.extend(ops)
    assignments = compute_assignments(compute_ranges(net.op, blob_sizes), static_blobs, algo)
    blob_assignments = compute_blob_assignments(assignments)
    apply_assignments(net, blob_assignments)
    return Optimization(net=net, assignments=assignments, blob_assignments=blob_assignments)


# --------------------------------------------------------------------------------------------
# Caffe2's two entry points: gradients of a training net, activations of an inference net
# --------------------------------------------------------------------------------------------
def _subnets(op: caffe2_pb2.OperatorDef) -> list[caffe2_pb2.NetDef]:
    nets = []
    for a in op.arg:
        if a.HasField("n"):
            nets.append(a.n)
        nets.extend(a.nets)
        if a.name.endswith("step_net") and a.HasField("s"):   # RecurrentNetwork keeps its nets as text
            from google.protobuf import text_format
            try:
                nets.append(text_format.Parse(a.s.decode("utf-8"), caffe2_pb2.NetDef()))
            except (text_format.ParseError, UnicodeDecodeError):
                pass
    return nets


def blobs_in_subnets(netproto: caffe2_pb2.NetDef) -> set[str]:
    """Every blob named inside the nets that ops carry as arguments (If/While branches, Do bodies,
    RecurrentNetwork step nets), recursively: renaming them outside would break those nets."""
    found: set[str] = set()
    stack = [sub for op in netproto.op for sub in _subnets(op)]
    while stack:
        sub = stack.pop()
        found |= set(sub.external_input) | set(sub.external_output)
        for op in sub.op:
            found |= set(op.input) | set(op.output)
            stack.extend(_subnets(op))
    return found


def _share(netproto: caffe2_pb2.NetDef, shareable: set[str], namescope: str, blob_sizes: dict | None,
           op_indices: Sequence[int] | None = None) -> caffe2_pb2.NetDef:
    ranges = compute_ranges(netproto.op, blob_sizes)
    shareable = shareable - blobs_in_subnets(netproto)
    if op_indices is not None:
        # Blobs an op outside the given set touches keep their names (Caffe2 shared only within them).
        allowed = set(op_indices)
        for i, op in enumerate(netproto.op):
            if i not in allowed:
                shareable -= set(op.input) | set(op.output)
    static = set(ranges) - shareable
    assignments = compute_assignments(ranges, static)
    renames, k = {}, 0
    for group in assignments:
        if len(group) > 1:
            for blob, _ in group:
                renames[blob] = f"{namescope}__m{k}_shared"
            k += 1
    optim = copy.deepcopy(netproto)
    apply_assignments(optim, renames)
    if not verify_graph_equality(netproto, optim):
        raise MemongerError("memonger changed which op reads which op's result (a bug: please report)")
    if not verify_inplace_blobs(netproto, optim):
        raise MemongerError("memonger added an in-place pair (a bug: please report)")
    log.info("memonger: %d blobs share %d names", len(renames), k)
    return optim


def share_grad_blobs(net: Any, losses: Sequence[Any], param_grads: Iterable[Any], namescope: str,
                     dont_share_blobs: Iterable[Any] | None = None, share_activations: bool = False,
                     blob_shapes: dict | None = None) -> caffe2_pb2.NetDef:
    """Share names among the gradient blobs passed between layers (``*_grad`` under ``namescope``,
    not the parameter gradients the optimizer reads), and with share_activations=True among the FC/
    Conv outputs too (except the last two). Returns the optimized NetDef (assign to ``net._net``)."""
    if namescope and not namescope.endswith("/"):
        namescope += "/"
    proto = _proto(net)
    param_grads = {str(g) for g in param_grads}
    keep = {str(b) for b in dont_share_blobs or ()} | {str(b) for b in losses} | set(proto.external_output)

    def is_grad_blob(name: str) -> bool:
        return (name.endswith("_grad") and (name.startswith(namescope) or name.startswith("_" + namescope))
                and name not in param_grads)

    shareable = {b for op in proto.op for b in (*op.input, *op.output) if is_grad_blob(b)}
    if share_activations:
        activations = [b for op in proto.op for b in op.output
                       if b + "_w" in op.input and b not in set(proto.external_output)]
        shareable |= set(activations[:-2])   # the last ones are usually read from outside
    shareable -= keep | set(proto.external_input)
    sizes = {b: int(_size_of(s)) for b, s in (blob_shapes or {}).items()}
    return _share(proto, shareable, namescope, sizes or None)


def _size_of(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def optimize_inference_for_dag(net: Any, input_blobs: Sequence[Any], namescope: str = "") -> caffe2_pb2.NetDef:
    """Share names among an inference net's activations (every blob that is neither an external
    input nor an external output). Gradient ops are refused; so is a blob read before it is written
    that the net does not list as an external input."""
    proto = _proto(net)
    external_in, external_out = set(proto.external_input) | {str(b) for b in input_blobs}, set(proto.external_output)
    written: set[str] = set()
    activations: set[str] = set()
    for i, op in enumerate(proto.op):
        if op.is_gradient_op:
            raise MemongerError(f"optimize_inference_for_dag takes inference nets only; op #{i} ({op.type}) "
                                f"is a gradient op")
        for b in op.input:
            if b not in external_in and b not in external_out:
                if b not in written:
                    raise MemongerError(f"blob {b!r} (read by op #{i}, {op.type}) is neither written before "
                                        f"nor an external input of net {proto.name!r}")
                activations.add(b)
        for b in op.output:
            if b not in external_in and b not in external_out:
                activations.add(b)
        written |= set(op.output)
    return _share(proto, activations, namescope, None)


# --------------------------------------------------------------------------------------------
# Checks, statistics and Free insertion
# --------------------------------------------------------------------------------------------
def _parents(ops: Sequence[caffe2_pb2.OperatorDef]) -> list[list[int]]:
    owner: dict[str, int] = {}
    parents = []
    for i, op in enumerate(ops):
        parents.append([owner[b] for b in op.input if b in owner])
        for b in op.output:
            owner[b] = i
    return parents


def verify_graph_equality(net_a: caffe2_pb2.NetDef, net_b: caffe2_pb2.NetDef) -> bool:
    """Same ops (type, device, engine) in the same order, each reading the results of the same
    earlier ops: the two nets compute the same thing whatever their blob names."""
    net_a, net_b = _proto(net_a), _proto(net_b)
    if len(net_a.op) != len(net_b.op):
        return False
    for a, b in zip(net_a.op, net_b.op):
        if a.type != b.type or a.device_option != b.device_option or a.engine != b.engine:
            return False
    return _parents(net_a.op) == _parents(net_b.op)


def verify_inplace_blobs(net_a: caffe2_pb2.NetDef, net_b: caffe2_pb2.NetDef) -> bool:
    """Every op has the same (input, output) in-place pairs in both nets."""
    def inplace(op: caffe2_pb2.OperatorDef) -> list[tuple[int, int]]:
        outs = list(op.output)
        return [(j, outs.index(b)) for j, b in enumerate(op.input) if b in outs]
    net_a, net_b = _proto(net_a), _proto(net_b)
    return all(a.type == b.type and inplace(a) == inplace(b) for a, b in zip(net_a.op, net_b.op))


def blob_nbytes(blob: str) -> int:
    """The bytes of a blob in the current workspace (0 if it is missing or not a tensor)."""
    from netjit import workspace
    try:
        return int(getattr(workspace.FetchBlob(blob), "nbytes", 0))
    except Exception:
        log.warning("Error when fetching blob %s", blob)
        return 0


def collect_blob_sizes(net: Any) -> dict[str, int]:
    """blob -> bytes in the current workspace, for every blob ``net``'s ops touch."""
    return {b: blob_nbytes(b) for op in _proto(net).op for b in (*op.input, *op.output)}


def compute_statistics(assignments: list[list]) -> Statistics:
    """Bytes the assigned blobs take in the current workspace before (each its own) and after
    sharing (each group as large as its largest member)."""
    sizes = {blob: blob_nbytes(blob) for group in assignments for blob, _ in group}
    return Statistics(baseline_nbytes=sum(sizes.values()),
                      optimized_nbytes=sum(max(sizes[b] for b, _ in group) for group in assignments if group))


def live_lower_bound(net: Any, blob_sizes: dict[str, int]) -> int:
    """The most bytes of ``blob_sizes``' blobs live at any one op of ``net``: no renaming can
    go below it (the buffer planner's bound over the same intervals)."""
    ranges = compute_ranges(_proto(net).op, blob_sizes)
    horizon = len(_proto(net).op)
    return lower_bound(_interval(b, r, horizon) for b, r in ranges.items() if b in blob_sizes)


def release_blobs_when_used(netproto: caffe2_pb2.NetDef, dont_free_blobs: Iterable[str],
                            selector_fun: Callable[[str], bool] | None = None) -> caffe2_pb2.NetDef:
    """A copy of the net with a ``Free`` op after the last read of every blob the net itself writes
    (not external outputs, not ``dont_free_blobs``, not Alias sources; ``selector_fun`` may veto)."""
    netproto = copy.deepcopy(_proto(netproto))
    read: set[str] = set()
    releasable: set[str] = set()
    aliased: set[str] = set()
    for op in netproto.op:
        if op.type == "Alias":
            aliased.add(op.input[0])
            continue
        read |= set(op.input)
        for b in op.output:
            if b not in read and (selector_fun is None or selector_fun(b)):
                releasable.add(b)
    releasable = (releasable & read) - set(netproto.external_output) - set(dont_free_blobs) - aliased
    ops = list(netproto.op)
    for j in reversed(range(len(netproto.op))):
        for b in netproto.op[j].input:
            if b in releasable:
                releasable.discard(b)
                ops.insert(j + 1, caffe2_pb2.OperatorDef(type="Free", input=[b], output=[b]))
    del netproto.op[:]
    netproto.op.extend(ops)
    return netproto


def estimate_memory_usage(protos: Sequence[caffe2_pb2.NetDef], shapes: dict, types: dict,
                          devicescope: caffe2_pb2.DeviceOption) -> tuple[int, int, dict]:
    """(total bytes allocated, high-water mark, bytes by op type) running ``protos`` in order on one
    device, from inferred ``shapes``/``types`` (workspace.InferShapesAndTypes); Free/Alias release."""
    from netjit.compiler.ops.common import DTYPE_OF
    by_op: dict[str, int] = {}
    current = high = total = 0
    allocated: set[str] = set()

    def nbytes(blob: str) -> int:
        if blob not in shapes or blob not in types:
            return 0
        return _size_of(shapes[blob]) * DTYPE_OF[types[blob]].itemsize

    for proto in protos:
        for op in _proto(proto).op:
            if op.device_option != devicescope and op.type not in ("Free", "Alias"):
                continue
            if op.type in ("Free", "Alias"):
                for b in op.output:
                    if b in allocated:
                        current -= nbytes(b)
                        allocated.discard(b)
                continue
            for b in op.output:
                if b not in allocated:
                    n = nbytes(b)
                    total += n
                    current += n
                    high = max(high, current)
                    allocated.add(b)
                    by_op[op.type] = by_op.get(op.type, 0) + n
    return total, high, by_op
