"""The ahead-of-time plan: where every value of a predict net lives when its bundle runs.

The JIT pipeline plans the net (inference, constant folding, fusion, scheduling) with the declared
input shapes and only the external outputs visible; this module then requires every step to be a
compiled kernel and gives every value a fixed home:

- ``input``/``output``: the caller's buffers, by position;
- ``weights``: parameters (what the init net writes) and constants folded at plan time, at 64-byte
  aligned offsets of NAME.weights.bin;
- ``scratch``: everything else, at the offsets of one arena planned over the steps' live ranges.

Shape-only ops (Reshape, Flatten, ...) become aliases: the output is the input's bytes under a new
shape. A host step (a Python op, a DB reader, Print, an op without a kernel) is an :class:`AotError`
naming the op index and type.

>>> # plan = make_plan(predict_net, params, {"data": ((1, 1, 28, 28), np.float32)}, "lenet")
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from netjit.compiler.aot import kernels as aot_kernels
from netjit.compiler.aot.common import DTYPES, AotError
from netjit.compiler.aot.kernels import Call
from netjit.compiler.codegen import numba_cpu
from netjit.compiler.ir import Graph, Node, Value, import_netdef
from netjit.compiler.ops.registry import TensorType
from netjit.compiler.passes.buffers import ALIGN, Interval, assign
from netjit.compiler.passes.infer import infer_types
from netjit.compiler.pipeline import run_passes, segment_graph
from netjit.proto import caffe2_pb2

# Ops whose output is their first input's bytes (C order) under another shape or name.
VIEW_OPS = frozenset({"Reshape", "Flatten", "FlattenToVec", "Squeeze", "ExpandDims", "Alias", "Copy",
                      "StopGradient", "EnsureCPUOutput", "CopyFromCPUInput", "Dropout"})


@dataclass(frozen=True)
class Slot:
    """A home for a value: ``region`` is input/output (``index``: the caller's position), weights
    or scratch (``offset`` in bytes)."""
    region: str
    index: int
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype.name, "bytes": self.nbytes}


@dataclass
class Step:
    """One call of the entry: a kernel with its arguments (ints, floats and slots)."""
    kind: str                                  # "kernel"
    index: int                                 # NetDef op index
    op_type: str
    description: str
    kernel: Any = None                         # the numba dispatcher
    args: list[Any] = field(default_factory=list)


@dataclass
class AotPlan:
    name: str
    net_name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    weights: list[tuple[str, Slot]]            # blob (or folded constant) -> slot, in file order
    weights_data: bytes
    scratch_bytes: int
    steps: list[Step]
    source_hash: str

    @property
    def weights_bytes(self) -> int:
        return len(self.weights_data)


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def source_hash(predict_net: caffe2_pb2.NetDef, init_net: caffe2_pb2.NetDef | None,
                params: Mapping[str, np.ndarray]) -> str:
    """sha256 of the predict net and the init net (or, given as arrays, the parameters)."""
    digest = hashlib.sha256(predict_net.SerializeToString(deterministic=True))
    if init_net is not None:
        digest.update(init_net.SerializeToString(deterministic=True))
    else:
        for blob in sorted(params):
            arr = np.ascontiguousarray(params[blob])
            digest.update(f"{blob}:{arr.dtype.str}:{arr.shape}".encode())
            digest.update(arr.tobytes())
    return digest.hexdigest()


def _error(net: str, node: Node, why: str) -> AotError:
    return AotError(f"net {net!r} op #{node.index} ({node.op if node.op != 'Fused' else node.describe()}): {why}")


def make_plan(graph_net: caffe2_pb2.NetDef, params: Mapping[str, np.ndarray],
              inputs: Mapping[str, tuple[tuple[int, ...], np.dtype]], name: str,
              init_net: caffe2_pb2.NetDef | None = None,
              on_kernel: Callable[[int, int, str], None] | None = None) -> AotPlan:
    """Plan ``graph_net`` (a predict net) with ``params`` (blob -> array, from its init net) as
    weights and ``inputs`` (blob -> (shape, dtype)) as the caller's inputs. ``on_kernel(done,
    total, what)`` reports kernel compiles (a progress bar)."""
    net_name = graph_net.name
    graph = import_netdef(graph_net)
    reads = _exposed_reads(graph)
    missing = [b for b in reads if b not in params and b not in inputs]
    if missing:
        raise AotError(f"net {net_name!r}: no shape for input(s) {missing}: give each as --input "
                       f"NAME=D0,D1,... (e.g. --input {missing[0]}=1,3,224,224)")
    unknown = [b for b in inputs if b not in reads]
    if unknown:
        raise AotError(f"net {net_name!r}: --input names {unknown}, which the net does not read "
                       f"(it reads {[b for b in reads if b not in params] or reads})")
    signature: dict[str, TensorType] = {}
    for blob in reads:
        if blob in inputs:
            shape, dtype = inputs[blob]
            signature[blob] = TensorType(tuple(int(d) for d in shape), np.dtype(dtype))
        else:
            arr = np.asarray(params[blob])
            signature[blob] = TensorType(arr.shape, arr.dtype)
    outputs = list(graph_net.external_output) or sorted(graph.final)
    typed, stop = infer_types(graph, signature, 0)
    if stop < len(typed.nodes):
        node = typed.nodes[stop]
        given = ", ".join(f"{typed.values[i].blob}: {typed.values[i].type_str()}"
                          + (" (from the init net)" if typed.values[i].blob in params
                             and typed.values[i].blob not in inputs else "") for i in node.inputs)
        raise _error(net_name, node, f"cannot infer its output shapes from its inputs ({given}), so it cannot "
                     f"be compiled ahead of time; if an input is fed at run time, give its shape with --input")
    seg = run_passes(segment_graph(typed, 0, stop, set(outputs)))
    missing_out = [b for b in outputs if b not in seg.outputs and b not in seg.inputs]
    if missing_out:
        raise AotError(f"net {net_name!r}: external output(s) {missing_out} are never written")
    return _place(seg, params, [b for b in reads if b in inputs], outputs, name, net_name,
                  source_hash(graph_net, init_net, params), on_kernel)


def _exposed_reads(graph: Graph) -> list[str]:
    written: set[str] = set()
    seen: dict[str, None] = {}
    for node in graph.nodes:
        for i in node.inputs:
            blob = graph.values[i].blob
            if blob not in written:
                seen.setdefault(blob, None)
        for o in node.outputs:
            written.add(graph.values[o].blob)
    return list(seen)


def _check_value(net: str, node: Node, val: Value) -> None:
    if not val.typed:
        raise _error(net, node, f"blob {val.blob!r} is not a tensor; a bundle holds tensors only")
    if val.dtype.name not in DTYPES:
        raise _error(net, node, f"blob {val.blob!r} has dtype {val.dtype}, which a bundle does not carry")


def _place(seg: Graph, params: Mapping[str, np.ndarray], input_blobs: list[str], output_blobs: list[str],
           name: str, net_name: str, digest: str,
           on_kernel: Callable[[int, int, str], None] | None) -> AotPlan:
    values = seg.values
    # Kernels (or aliases) for every step, before any compile, so a host op fails fast.
    kernels: dict[int, numba_cpu.KernelCall] = {}
    calls: dict[int, list[Call]] = {}
    constants: dict[str, np.ndarray] = {}      # outputs known at plan time (Concat's split sizes)
    alias_of: dict[str, str] = {}              # value -> the value whose bytes it is
    for pos, node in enumerate(seg.nodes):
        if node.op == "Const":
            continue
        for out in node.outputs:
            _check_value(net_name, node, values[out])
        if node.op in VIEW_OPS and node.inputs and values[node.inputs[0]].typed:
            src, out = values[node.inputs[0]], values[node.outputs[0]]
            if src.nbytes != out.nbytes or src.dtype != out.dtype:
                raise _error(net_name, node, "changes bytes, not only the shape; no kernel for it")
            used_later = any(o in n.inputs for o in node.outputs[1:] for n in seg.nodes[pos + 1:])
            if used_later or any(o in seg.outputs.values() for o in node.outputs[1:]):
                raise _error(net_name, node, "its second output is read; a bundle computes only the first")
            alias_of[node.outputs[0]] = alias_of.get(node.inputs[0], node.inputs[0])
            continue
        try:
            kc = numba_cpu.kernel_for(node, values)
        except Exception as err:  # noqa: BLE001 - the codegen's reason goes into the message
            raise _error(net_name, node, f"no compiled kernel ({type(err).__name__}: {err})") from err
        if kc is not None and kc.host_head is None:
            kernels[pos] = kc
            args = tuple(int(p.value) if p.kind == "dim" else p.value if p.kind == "scalar" else ("value", p.value)
                         for p in kc.params)
            calls[pos] = [Call(kc.fn, kc.description, args)]
            continue
        made = aot_kernels.MAKERS[node.op](node, values) if node.op in aot_kernels.MAKERS else None
        if made is None:
            raise _error(net_name, node, "has no compiled kernel for these shapes (it would run on the host: "
                         "Python ops, DB readers, Print and ops without a kernel cannot go into a bundle)")
        if node.op in aot_kernels.CONSTANT_OUTPUTS:
            constants.update(aot_kernels.CONSTANT_OUTPUTS[node.op](node, values))
        calls[pos] = made
    plan = _assign(seg, params, input_blobs, output_blobs, name, net_name, digest, calls, kernels, alias_of,
                   constants)
    _precompile(plan.steps, on_kernel)
    return plan


def _precompile(steps: list[Step], on_kernel: Callable[[int, int, str], None] | None) -> None:
    # Specialise each kernel for the types the entry passes (mutable C arrays from carray), so the
    # entry's own compile finds them done and a typing error names its op.
    from numba import from_dtype, types
    todo = [s for s in steps if s.kernel is not None]
    for done, step in enumerate(todo):
        if on_kernel is not None:
            on_kernel(done, len(todo), step.description)
        sig = tuple(types.Array(from_dtype(a.dtype), len(a.shape), "C") if isinstance(a, Slot)
                    else types.float64 if isinstance(a, float) else types.int64 for a in step.args)
        step.kernel.compile(sig)
    if on_kernel is not None:
        on_kernel(len(todo), len(todo), "")


def _assign(seg: Graph, params: Mapping[str, np.ndarray], input_blobs: list[str], output_blobs: list[str],
            name: str, net_name: str, digest: str, calls: Mapping[int, list[Call]],
            kernels: Mapping[int, numba_cpu.KernelCall], alias_of: Mapping[str, str],
            constants: Mapping[str, np.ndarray]) -> AotPlan:
    values = seg.values
    slots: dict[str, Slot] = {}
    inputs = []
    for k, blob in enumerate(input_blobs):
        val = values[seg.inputs[blob]]
        inputs.append(TensorSpec(blob, tuple(val.shape), val.dtype))
        slots[seg.inputs[blob]] = Slot("input", k, 0, tuple(val.shape), val.dtype)
    # Weights: parameters the net reads, then folded constants, each 64-byte aligned.
    weights: list[tuple[str, Slot]] = []
    chunks: list[bytes] = []
    offset = 0

    def add_weight(label: str, value_name: str, arr: np.ndarray) -> None:
        nonlocal offset
        arr = np.ascontiguousarray(arr, dtype=values[value_name].dtype).reshape(values[value_name].shape)
        slot = Slot("weights", -1, offset, tuple(arr.shape), arr.dtype)
        slots[value_name] = slot
        weights.append((label, slot))
        data = arr.tobytes()
        chunks.append(data + b"\0" * (_aligned(len(data)) - len(data)))
        offset += _aligned(len(data))

    for blob, value_name in seg.inputs.items():
        if blob not in input_blobs:
            add_weight(blob, value_name, params[blob])
    for node in seg.nodes:
        if node.op == "Const":
            add_weight(f"const:{node.attrs.get('source', 'Const')}#{node.index}:{values[node.outputs[0]].blob}",
                       node.outputs[0], node.attrs["value"])
    for value_name, arr in constants.items():
        add_weight(f"const:{values[value_name].blob}", value_name, arr)
    # Outputs: a kernel writes straight into the caller's buffer unless the value is an input,
    # weight or alias (or leaves under two names): those are copied at the end.
    outputs: list[TensorSpec] = []
    copies: list[tuple[str, Slot]] = []
    for k, blob in enumerate(output_blobs):
        value_name = seg.outputs.get(blob, seg.inputs.get(blob))
        val = values[value_name]
        if not val.typed:
            raise AotError(f"net {net_name!r}: output {blob!r} is not a tensor")
        outputs.append(TensorSpec(blob, tuple(val.shape), val.dtype))
        slot = Slot("output", k, 0, tuple(val.shape), val.dtype)
        if value_name in slots or value_name in alias_of or value_name in {s for s, _ in copies} \
                or not any(value_name in n.outputs for pos, n in enumerate(seg.nodes) if pos in calls):
            copies.append((value_name, slot))
        else:
            slots[value_name] = slot
    scratch_bytes = _plan_scratch(seg, calls, kernels, alias_of, slots)
    steps: list[Step] = []
    for pos, node in enumerate(seg.nodes):
        for call in calls.get(pos, ()):
            args: list[Any] = []
            for a in call.args:
                if isinstance(a, tuple):
                    home = _home(a[1], slots, alias_of)
                    if a[0] == "flat":
                        home = Slot(home.region, home.index, home.offset, (home.nbytes // home.dtype.itemsize,),
                                    home.dtype)
                    args.append(home)
                else:
                    args.append(a)
            steps.append(Step("kernel", node.index, node.describe(), call.description, call.fn, args))
    for value_name, slot in copies:
        src = _home(value_name, slots, alias_of)
        steps.append(Step("kernel", -1, "Copy", f"output {outputs[slot.index].name!r}", aot_kernels.copy_flat,
                          [Slot(src.region, src.index, src.offset, (src.nbytes,), np.dtype(np.uint8)),
                           Slot("output", slot.index, 0, (slot.nbytes,), np.dtype(np.uint8))]))
    return AotPlan(name, net_name, inputs, outputs, weights, b"".join(chunks), scratch_bytes, steps, digest)


def _home(value_name: str, slots: Mapping[str, Slot], alias_of: Mapping[str, str]) -> Slot:
    root = alias_of.get(value_name, value_name)
    return slots[root]


def _plan_scratch(seg: Graph, calls: Mapping[int, list[Call]], kernels: Mapping[int, numba_cpu.KernelCall],
                  alias_of: Mapping[str, str], slots: dict[str, Slot]) -> int:
    """Arena offsets for kernel outputs without a home yet. A value lives from its step to the
    last read of it or of any alias of it; elementwise kernels may overwrite a dying input."""
    values = seg.values
    start: dict[str, int] = {}
    last: dict[str, int] = {}
    for pos, node in enumerate(seg.nodes):
        for name in node.inputs:
            last[alias_of.get(name, name)] = pos
        if pos in calls:
            for name in node.outputs:
                if name not in slots:
                    start[name] = pos
    for name in list(seg.outputs.values()):
        # An alias of a scratch value leaving as an output is copied at the very end.
        root = alias_of.get(name, name)
        if root in start:
            last[root] = len(seg.nodes)
    want: dict[str, str] = {}
    taken: set[str] = set()
    for pos, node in enumerate(seg.nodes):
        if pos not in kernels:
            continue
        for out, inp in numba_cpu.inplace_pairs(node, kernels[pos], values):
            if out in start and inp in start and last.get(inp) == pos and out not in want and inp not in taken:
                want[out] = inp
                taken.add(inp)
    intervals = [Interval(n, s, max(s, last.get(n, s)), values[n].nbytes, want.get(n)) for n, s in start.items()]
    plan = assign(intervals)
    for n in start:
        val = values[n]
        slots[n] = Slot("scratch", -1, plan.offsets[n], tuple(val.shape), val.dtype)
    return plan.arena_bytes


def describe(plan: AotPlan) -> str:
    """A readable listing of a plan: inputs, outputs, weights, scratch and steps."""
    lines = [f"bundle {plan.name!r} of net {plan.net_name!r}: {len(plan.steps)} steps, "
             f"weights {plan.weights_bytes} B, scratch {plan.scratch_bytes} B"]
    lines += [f"  input  {t.name}: {t.dtype}{list(t.shape)}" for t in plan.inputs]
    lines += [f"  output {t.name}: {t.dtype}{list(t.shape)}" for t in plan.outputs]
    for step in plan.steps:
        homes = [f"{a.region}{'' if a.index < 0 else a.index}@{a.offset}" for a in step.args if isinstance(a, Slot)]
        lines.append(f"  #{step.index} {step.op_type} ({step.description}): {', '.join(homes)}")
    return "\n".join(lines)


def tensors_of(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
    return [t.as_json() for t in specs]
