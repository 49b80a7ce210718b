"""Compiled CUDA nets: plans of device kernels and host steps, run against a workspace.

A :class:`CudaNet` is what ``netjit.compile(net, device="cuda")`` returns and what ``CreateNet``
builds for a net whose DeviceOption (or any op's) says CUDA. It plans per input signature with the
CPU pipeline's passes (inference, simplification, fusion with the CUDA rules) and makes each node a
``kernel`` step (numba_cuda.kernel_for), a ``host`` step (the op's reference; inputs copied from the
device, outputs back when the op is placed on the device), a ``copy`` step (CopyCPUToGPU,
CopyGPUToCPU, EnsureCPUOutput) or a folded constant (uploaded once). Blobs written by device steps
stay device arrays in the workspace between ops and runs; ``FetchBlob`` copies them to the host.

>>> # exe = netjit.compile(net, device="cuda"); out = exe(x=batch); print(exe.explain())
"""
from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from netjit.compiler import strict
from netjit.compiler.codegen import numba_cuda
from netjit.compiler.codegen.cuda_kernels import CudaKernel
from netjit.compiler.execution import LazyContext
from netjit.compiler.ir import Graph, Node, import_netdef
from netjit.compiler.ops.registry import TensorType, lookup
from netjit.compiler.passes.fuse import fuse
from netjit.compiler.passes.infer import infer_types, type_of
from netjit.compiler.passes.simplify import eliminate_dead_code, fold_constants
from netjit.compiler.pipeline import describe_signature, segment_graph
from netjit.compiler.reference import net_checks
from netjit.proto import caffe2_pb2
from netjit.runtime import device as dev
from netjit.runtime.errors import OpError
from netjit.runtime.executor import locate
from netjit.runtime.plan import reference_call
from netjit.runtime.workspace import REGISTRY, Workspace


@dataclass
class CudaStep:
    kind: str                     # "kernel" | "host" | "copy" | "const"
    node: Node
    kernel: CudaKernel | None = None
    value: Any = None             # a folded constant (on its device)
    on_device: bool = True        # where the op is placed
    note: str = ""
    copies_in: tuple[str, ...] = ()    # host steps: blobs copied device -> host before it runs
    copies_out: tuple[str, ...] = ()   # ... and host -> device after


@dataclass
class CudaPlan:
    start: int
    stop: int
    graph: Graph
    steps: list[CudaStep]
    signature: tuple
    fallbacks: list[strict.Fallback] = field(default_factory=list)

    @property
    def launches_per_run(self) -> int:
        return sum(len(s.kernel.launches) for s in self.steps if s.kind == "kernel")


def _describe_value(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype}{list(value.shape)} on CPU"
    if dev.is_device_array(value):
        return f"{np.dtype(value.dtype)}{list(value.shape)} on CUDA:0"
    return type(value).__name__


class CudaNet:
    """A net compiled for CUDA (ops without a DeviceOption run where ``default`` says)."""
    device = "cuda"

    def __init__(self, net: caffe2_pb2.NetDef, visible: Iterable[str] | None = None,
                 outputs: Iterable[str] | None = None, default: tuple[str, int] | None = None):
        self.net = net
        self.graph = import_netdef(net)
        written = set(self.graph.final)
        self.params = sorted(written & set(self.graph.inputs))
        self.visible = None if visible is None else set(visible) | set(self.params)
        self.outputs = list(outputs) if outputs is not None else sorted(written)
        self.checks = net_checks(net)
        net_opt = net.device_option if net.HasField("device_option") else None
        self.placement: dict[int, tuple[str, int]] = {}
        for i, op in enumerate(net.op):
            place = dev.op_device(op, net_opt)
            if default is not None and not op.HasField("device_option") and net_opt is None:
                place = default
            self.placement[i] = place
            dev.check_device(place, net=net.name, index=i, op_type=op.type)
        self.rules = numba_cuda.make_rules(self.on_device)
        self._plans: dict[tuple, CudaPlan] = {}
        self._by_start: dict[int, list[CudaPlan]] = {}
        self._lock = threading.RLock()
        self._exposed: dict[int, list[str]] = {}
        # Ops run between plans (outputs typed only when they run): op index -> (op type, blobs
        # copied device->host, host->device) at their last run, for explain().
        self.barriers: dict[int, tuple[str, tuple[str, ...], tuple[str, ...]]] = {}

    def on_device(self, node: Node) -> bool:
        if node.op == "Fused":
            return all(self.on_device(m) for m in node.attrs["nodes"])
        return self.placement.get(node.index, dev.CPU)[0] == "cuda"

    # Planning ---------------------------------------------------------------------------------
    def exposed_reads(self, start: int) -> list[str]:
        if start not in self._exposed:
            written: set[str] = set()
            seen: dict[str, None] = {}
            for node in self.graph.nodes[start:]:
                for i in node.inputs:
                    if self.graph.values[i].blob not in written:
                        seen.setdefault(self.graph.values[i].blob, None)
                written.update(self.graph.values[o].blob for o in node.outputs)
            self._exposed[start] = list(seen)
        return self._exposed[start]

    def plan(self, start: int, signature: Mapping[str, Any]) -> CudaPlan:
        key = (start, tuple(sorted(signature.items(), key=lambda kv: kv[0])))
        with self._lock:
            plan = self._plans.get(key)
            if plan is None:
                plan = self._plan(start, {b: t for b, (t, _) in signature.items()}, key[1])
                self._plans[key] = plan
                self._by_start.setdefault(start, []).append(plan)
            return plan

    def _plan(self, start: int, types: Mapping[str, Any], sig: tuple) -> CudaPlan:
        typed, stop = infer_types(self.graph, types, start)
        seg = segment_graph(typed, start, stop, self.visible)
        # No remove_noops: it would turn the device copies (CopyCPUToGPU, ...) into aliases.
        for fn in (fold_constants, eliminate_dead_code, lambda g: fuse(g, self.rules)):
            seg = fn(seg)
        steps: list[CudaStep] = []
        fallbacks: list[strict.Fallback] = []
        for node in seg.nodes:
            steps += self._steps_for(node, seg, fallbacks)
        self._mark_copies(seg, steps, dict(sig))
        return CudaPlan(start, stop, seg, steps, sig, fallbacks)

    def _mark_copies(self, seg: Graph, steps: list[CudaStep], sig: Mapping[str, Any]) -> None:
        """Which blobs each host step copies (explain() lists them): where every value lives."""
        on_gpu = {vid for blob, vid in seg.inputs.items() if blob in sig and sig[blob][1] == "cuda"}
        for s in steps:
            outs = s.node.outputs
            if s.kind == "kernel" or (s.kind in ("const", "copy") and s.on_device):
                on_gpu.update(outs)
            elif s.kind == "host" and s.on_device:
                s.copies_in = tuple(seg.values[v].blob for v in s.node.inputs if v in on_gpu)
                if s.node.op not in numba_cuda.KEEP_ON_HOST:
                    s.copies_out = tuple(seg.values[v].blob for v in outs)
                    on_gpu.update(outs)

    def _steps_for(self, node: Node, seg: Graph, fallbacks: list[strict.Fallback]) -> list[CudaStep]:
        here = self.on_device(node)
        if node.op == "Const":
            value = node.attrs["value"]
            if here and dev.movable(value):
                return [CudaStep("const", node, value=dev.to_device(value), on_device=True)]
            return [CudaStep("const", node, value=value, on_device=False)]
        if node.op in numba_cuda.TO_DEVICE | numba_cuda.TO_HOST:
            return [CudaStep("copy", node, on_device=node.op in numba_cuda.TO_DEVICE)]
        kernel = None
        if here:
            try:
                kernel = numba_cuda.kernel_for(node, seg.values)
            except Exception as err:  # noqa: BLE001 - recorded (strict mode raises); the host runs it
                fallbacks.append(strict.check(strict.Fallback("kernel", node.index, node.describe(),
                                                              strict.reason_of(err), unexpected=True),
                                              self.net.name))
        if kernel is not None:
            return [CudaStep("kernel", node, kernel=kernel)]
        if node.op == "Fused":
            out: list[CudaStep] = []
            for m in node.attrs["nodes"]:
                out += self._steps_for(m, seg, fallbacks)
            return out
        note = "host (no GPU kernel)" if here else "host (op placed on CPU)"
        return [CudaStep("host", node, on_device=here, note=note)]

    # Running ----------------------------------------------------------------------------------
    def runner(self, ws: Workspace | None = None) -> "CudaRunner":
        ws = ws if ws is not None else REGISTRY.current
        table = ws.__dict__.setdefault("_netjit_cuda_runners", weakref.WeakKeyDictionary())
        r = table.get(self)
        if r is None:
            r = table[self] = CudaRunner(self, ws, check=False)
        return r

    def run(self, ws: Workspace | None = None) -> None:
        self.runner(ws).run()

    def __call__(self, **feeds: Any) -> dict[str, Any]:
        """Run on a private child of the current workspace; array feeds are uploaded to the device
        (an explicit compile for CUDA); outputs come back as host arrays."""
        base = REGISTRY.current
        table = base.__dict__.setdefault("_netjit_cuda_private", weakref.WeakKeyDictionary())
        private = table.get(self)
        if private is None:
            private = table[self] = Workspace(f"{base.name}/{self.net.name}:cuda", base.root_folder, parent=base)
        for name, value in feeds.items():
            value = np.asarray(value, order="C") if isinstance(value, (np.ndarray, list, float, int)) else value
            private.blobs[name] = dev.to_device(value) if dev.movable(value) else value
        self.runner(private).run()
        return {name: dev.to_host(private.get(name)) for name in self.outputs}

    # Introspection ----------------------------------------------------------------------------
    def plans(self) -> list[CudaPlan]:
        return list(self._plans.values())

    def fallbacks(self) -> list[Any]:
        return [f for p in self._plans.values() for f in p.fallbacks]

    def sources(self) -> dict[str, str]:
        out = {}
        for i, plan in enumerate(self._plans.values()):
            for k, s in enumerate(st for st in plan.steps if st.kind == "kernel"):
                if s.kernel.source:
                    out[f"plan{i}/kernel{k}"] = s.kernel.source
        return out

    def explain(self, sources: bool = True) -> str:
        """Per plan: each step with its kernels (backend, grid, block), host steps with their copies,
        and (``sources=True``) the generated kernel sources."""
        lines = [f"net {self.net.name!r}: {len(self.graph.nodes)} ops, device cuda "
                 f"({'simulator' if dev.simulator_enabled() else 'GPU'})"]
        if not self._plans:
            lines.append("  (no plans yet: run it)")
        for plan in self._plans.values():
            sig = describe_signature({b: t for b, (t, _) in plan.signature})
            lines.append(f"plan for ops [{plan.start}, {plan.stop}) given {{{sig}}}")
            lines.append(f"  {len(plan.steps)} steps, {plan.launches_per_run} kernel launches per run, "
                         f"{sum(s.kind == 'host' for s in plan.steps)} host steps")
            for s in plan.steps:
                n = s.node
                blobs = lambda names: [plan.graph.values[v].blob for v in names]  # noqa: E731
                head = f"    [{s.kind:6s}] #{n.index} {n.describe() if n.op == 'Fused' else n.op}: " \
                       f"{blobs(n.inputs)} -> {blobs(n.outputs)}"
                if s.kind == "kernel":
                    lines.append(head)
                    for ln in s.kernel.launches:
                        lines.append(f"        kernel {ln.name} backend={ln.backend} grid={ln.grid} block={ln.block}")
                elif s.kind == "host":
                    lines.append(f"{head}  {s.note}")
                    if s.copies_in or s.copies_out:
                        lines.append(f"        copies: device->host {list(s.copies_in)}; "
                                     f"host->device {list(s.copies_out)}")
                elif s.kind == "copy":
                    lines.append(f"{head}  explicit copy {'host->device' if s.on_device else 'device->host'}")
                else:
                    lines.append(f"{head}  folded constant on {'CUDA:0' if s.on_device else 'CPU'}")
            for f in plan.fallbacks:
                lines.append(f"  fallback to the host: {f}")
            for index in sorted(self.barriers):
                if index == plan.stop:
                    op_type, down, up = self.barriers[index]
                    lines.append(f"then [host  ] #{index} {op_type}: run between plans (its outputs are typed "
                                 f"when it runs)")
                    if down or up:
                        lines.append(f"        copies: device->host {list(down)}; host->device {list(up)}")
            if sources:
                for k, s in enumerate(st for st in plan.steps if st.kind == "kernel" and st.kernel.source):
                    lines.append(f"  --- cuda kernel K{k} ({s.kernel.description}) ---")
                    lines += ["    " + ln for ln in s.kernel.source.splitlines()]
        return "\n".join(lines)


class CudaRunner:
    """Runs a CudaNet against one workspace (what ``CreateNet`` keeps for a CUDA net)."""
    executor = "compiled"

    def __init__(self, compiled: CudaNet, ws: Workspace, check: bool = True):
        self.compiled = compiled
        self.net = compiled.net
        self.ws = ws
        if check:
            compiled.checks.check(ws)
        self.contexts: dict[int, LazyContext] = {}
        self._buffers: dict[tuple, Any] = {}
        self.kernel_launches = 0      # launches so far (bench reads it)
        # A private workspace (a Predictor's): host feeds go up to the device, outputs come back.
        self.private_outputs: list[str] | None = None
        # Set by ``netjit bench --device cuda``: called with (step, device milliseconds) per kernel step.
        self.profile: Any = None

    def context(self, node: Node) -> LazyContext:
        ctx = self.contexts.get(node.index)
        if ctx is None:
            ctx = LazyContext(args=node.attrs, op=node.proto, index=node.index, net_name=self.net.name, ws=self.ws)
            self.contexts[node.index] = ctx
        return ctx

    def run(self) -> None:
        c = self.compiled
        n = len(c.graph.nodes)
        start = 0
        if self.private_outputs is not None:
            for blob in c.exposed_reads(0):
                if blob in self.ws.blobs and dev.movable(self.ws.blobs[blob]):
                    self.ws.blobs[blob] = dev.to_device(self.ws.blobs[blob])
        self._run_segments(c, n, start)
        if self.private_outputs is not None:
            for blob in self.private_outputs:
                if blob in self.ws.blobs:
                    self.ws.blobs[blob] = dev.to_host(self.ws.blobs[blob])

    def _run_segments(self, c: CudaNet, n: int, start: int) -> None:
        while start < n:
            signature = {}
            for blob in c.exposed_reads(start):
                if self.ws.has(blob):
                    value = self.ws.get(blob)
                    t = TensorType(tuple(value.shape), np.dtype(value.dtype)) if dev.is_device_array(value) \
                        else type_of(value)
                    signature[blob] = (t, dev.where(value)[0])
            plan = c.plan(start, signature)
            self._run_plan(plan)
            start = plan.stop
            if start < n:
                self._barrier(c.graph.nodes[start])
                start += 1

    # One plan ----------------------------------------------------------------------------------
    def _fail(self, node: Node, err: BaseException, graph: Graph) -> None:
        if isinstance(err, OpError) or not isinstance(err, Exception):
            raise err
        if node.op == "Fused":   # name the group's first member, as the CPU driver does
            node = node.attrs["nodes"][0]
        ins = tuple(node.proto.input) if node.proto is not None else ()
        outs = tuple(node.proto.output) if node.proto is not None else ()
        raise locate(err, self.net.name, node.index, node.op, ins, outs) from err

    def _check_inputs(self, node: Node, names: list[str], values: list[Any], on_device: bool,
                      from_ws: set[str] | None = None) -> None:
        group = node.attrs["nodes"] if node.op == "Fused" else (node,)
        for vid, name, value in zip(node.inputs, names, values):
            # Name the member that reads it (a fused group reports its first reader).
            node = next((m for m in group if vid in m.inputs), group[0])
            if on_device and isinstance(value, np.ndarray) and dev.movable(value) and \
                    (from_ws is None or name in from_ws):
                raise dev.DeviceError(f"input blob {name!r} lives on the CPU but the op runs on CUDA:0; feed "
                                      f"it with a CUDA device_option or copy it with CopyCPUToGPU",
                                      net=self.net.name, index=node.index, op_type=node.op, blob=name)
            if not on_device and dev.is_device_array(value):
                raise dev.DeviceError(f"input blob {name!r} lives on CUDA:0 but the op runs on the CPU; "
                                      f"copy it with CopyGPUToCPU (or EnsureCPUOutput) first",
                                      net=self.net.name, index=node.index, op_type=node.op, blob=name)

    def _buffer(self, key: tuple, want: Any, ins: list[Any]) -> Any:
        """The step's output buffer from the last runs: two per output, so that an update written
        back to its own blob (param = WeightedSum(param, ...)) alternates instead of allocating."""
        shape, dtype = tuple(want.shape), want.dtype
        bufs = [b for b in self._buffers.get(key, ()) if tuple(b.shape) == shape and np.dtype(b.dtype) == dtype]
        for buf in bufs:
            if not any(buf is a for a in ins):
                return buf
        buf = dev.cuda().device_array(shape, dtype)
        self._buffers[key] = (bufs + [buf])[-2:]
        return buf

    def _host(self, node: Node, ins: list[Any], on_device: bool) -> list[Any]:
        host_ins = [dev.to_host(v) for v in ins]
        if node.op == "Fused":      # a group whose kernel failed to compile: its members in order
            env = dict(zip(node.inputs, host_ins))
            for m in node.attrs["nodes"]:
                env.update(zip(m.outputs, self._host(m, [env[i] for i in m.inputs], False)))
            outs = [env[o] for o in node.outputs]
            return [dev.to_device(o) if on_device and dev.movable(o) else o for o in outs]
        try:
            outs = reference_call(lookup(node.op).reference)(self.context(node), host_ins)
        except Exception as err:  # noqa: BLE001 - located and re-raised
            self._fail(node, err, None)
        outs = [np.asarray(o) if isinstance(o, np.generic) else o for o in outs]
        if node.op in numba_cuda.KEEP_ON_HOST:
            return outs
        return [dev.to_device(o) if on_device and dev.movable(o) else o for o in outs]

    def _copy(self, node: Node, value: Any) -> Any:
        if node.op in numba_cuda.TO_DEVICE:
            if not (dev.movable(value) or dev.is_device_array(value)):
                raise dev.DeviceError("only numeric tensors can be copied to a GPU", net=self.net.name,
                                      index=node.index, op_type=node.op, blob=node.proto.input[0])
            return dev.cuda().to_device(dev.to_host(value))   # a fresh device copy
        return np.array(dev.to_host(value), copy=True)

    def _run_plan(self, plan: CudaPlan) -> None:
        g = plan.graph
        env: dict[str, Any] = {}
        for blob, vid in g.inputs.items():
            if self.ws.has(blob):
                env[vid] = self.ws.get(blob)
        pid = id(plan)
        for pos, s in enumerate(plan.steps):
            node = s.node
            if s.kind == "const":
                env[node.outputs[0]] = s.value
                continue
            ins = [env[i] for i in node.inputs]
            names = [g.values[i].blob for i in node.inputs]
            if s.kind == "copy":
                env[node.outputs[0]] = self._copy(node, ins[0])
                continue
            # A device op's host step may read host blobs (Caffe2's Iter counter and LearningRate
            # keep theirs on the CPU in GPU nets); a kernel may not.
            self._check_inputs(node, names, ins, s.on_device, None if s.kind == "kernel" else set())
            if s.kind == "host":
                outs = self._host(node, ins, s.on_device)
            else:
                outs = [self._buffer((pid, pos, k), g.values[o], ins) for k, o in enumerate(node.outputs)]
                try:
                    if self.profile is None:
                        s.kernel.run(ins, outs)
                    else:
                        self._timed(s, ins, outs)
                    self.kernel_launches += len(s.kernel.launches)
                except Exception as err:  # noqa: BLE001 - located and re-raised, or a host fallback
                    if not compile_error(err):
                        self._fail(node, err, g)
                    self._demote(plan, s, err)
                    outs = self._host(node, ins, s.on_device)
            env.update(zip(node.outputs, outs))
        for blob, vid in g.outputs.items():
            if vid in env:
                self.ws.blobs[blob] = env[vid]

    def _demote(self, plan: CudaPlan, s: CudaStep, err: BaseException) -> None:
        """A kernel numba could not compile for this device: the step runs its reference on the host
        from now on (explain() and fallbacks() say why; NETJIT_STRICT=1 raises instead)."""
        node = s.node
        first = node.attrs["nodes"][0] if node.op == "Fused" else node
        fb = strict.check(strict.Fallback("kernel", first.index, node.describe(), strict.reason_of(err),
                                          unexpected=True), self.net.name)
        with self.compiled._lock:
            if s.kind == "kernel":
                plan.fallbacks.append(fb)
                s.kind, s.kernel = "host", None
                s.note = "host (its GPU kernel failed to compile)"
                self.compiled._mark_copies(plan.graph, plan.steps, dict(plan.signature))

    def _timed(self, s: CudaStep, ins: list[Any], outs: list[Any]) -> None:
        """Run a kernel step between two CUDA events and report its device time."""
        cuda = dev.cuda()
        start, end = cuda.event(), cuda.event()
        start.record()
        s.kernel.run(ins, outs)
        end.record()
        end.synchronize()
        self.profile(s, start.elapsed_time(end))

    def _barrier(self, node: Node) -> None:
        """A node whose outputs could not be typed ahead: its reference on the host, by blob name."""
        on_device = self.compiled.on_device(node)
        names = list(node.proto.input)
        ins = [self.ws.get(b) for b in names]
        if node.op in numba_cuda.TO_DEVICE | numba_cuda.TO_HOST:
            outs = [self._copy(node, ins[0])]
        else:
            self._check_inputs(node, names, ins, on_device, set())
            # Some host ops read their blobs from the workspace by name (Python ops, as Caffe2's
            # GPU fallback ran them): they see host copies, and blobs they rewrite go back up.
            swapped = {b: (v, dev.to_host(v)) for b, v in zip(names, ins) if dev.is_device_array(v)}
            for b, (_, host) in swapped.items():
                self.ws.blobs[b] = host
            try:
                outs = self._host(node, ins, on_device)
            finally:
                for b, (orig, host) in swapped.items():
                    now = self.ws.blobs.get(b)
                    if now is host or not dev.movable(now):
                        self.ws.blobs[b] = orig
                    else:
                        self.ws.blobs[b] = dev.to_device(now)
            up = tuple(b for b, v in zip(node.proto.output, outs) if dev.is_device_array(v))
            self.compiled.barriers[node.index] = (node.op, tuple(swapped), up)
        for b, v in zip(node.proto.output, outs):
            self.ws.blobs[b] = v


def compile_error(err: BaseException) -> bool:
    """numba could not compile a kernel for this device (typing, lowering, NVVM, linking): the
    step can still run on the host. Errors while a compiled kernel runs are not these."""
    try:
        from numba.core.errors import NumbaError
    except ImportError:  # pragma: no cover - numba without numba.core
        NumbaError = ()  # noqa: N806
    names = {"NvvmError", "NvvmSupportError", "NvrtcError", "NvrtcCompilationError", "LinkerError"}
    return isinstance(err, NumbaError) or any(c.__name__ in names for c in type(err).__mro__)


# ---------------------------------------------------------------------------------------------
_CACHE: "OrderedDict[tuple, CudaNet]" = OrderedDict()
_LOCK = threading.Lock()


def get_cuda_net(net: caffe2_pb2.NetDef, visible: Iterable[str] | None = None,
                 outputs: Iterable[str] | None = None, default: tuple[str, int] | None = None) -> CudaNet:
    """The cached CudaNet for this NetDef (by content), mode and default placement."""
    digest = hashlib.blake2b(net.SerializeToString(), digest_size=16).digest()
    key = (digest, None if visible is None else tuple(sorted(visible)),
           None if outputs is None else tuple(outputs), default)
    with _LOCK:
        found = _CACHE.get(key)
        if found is not None:
            _CACHE.move_to_end(key)
            return found
    made = CudaNet(caffe2_pb2.NetDef.FromString(net.SerializeToString()), visible, outputs, default)
    with _LOCK:
        _CACHE[key] = made
        while len(_CACHE) > 64:
            _CACHE.popitem(last=False)
    return made


def cuda_runner(net: caffe2_pb2.NetDef, ws: Workspace, outputs: list[str] | None = None) -> CudaRunner:
    """What ``CreateNet`` builds for a net placed (wholly or partly) on CUDA."""
    runner = CudaRunner(get_cuda_net(net, outputs, outputs), ws, check=True)
    runner.private_outputs = list(outputs) if outputs is not None else None
    return runner
