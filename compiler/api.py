"""The compiler's entry points: ``compile(net, ...)`` and the runner behind ``workspace.CreateNet``.

A :class:`CompiledNet` is shared (cached in memory by NetDef hash, mode and device); it owns the
imported graph and the plans made for each input signature. A :class:`CompiledRunner` binds one to a
workspace: it owns what Caffe2 creates per net instance (op contexts with their state and seeded
random generators, the arena) and runs the generated drivers.

>>> import numpy as np
>>> from netjit.proto import caffe2_pb2
>>> from netjit.proto.args import make_op
>>> net = caffe2_pb2.NetDef(name="demo", external_input=["x"], external_output=["y"])
>>> net.op.extend([make_op("Relu", ["x"], ["t"]), make_op("Relu", ["t"], ["y"])])
>>> exe = compile(net, inputs={"x": np.zeros((2, 3), np.float32)})
>>> exe(x=np.array([[-1, 2, -3], [4, -5, 6]], np.float32))["y"].tolist()
[[0.0, 2.0, 0.0], [4.0, 0.0, 6.0]]
"""
from __future__ import annotations

import hashlib
import threading
import weakref
from collections import ChainMap, OrderedDict
from typing import Any, Iterable, Mapping

import numpy as np

from netjit.compiler.ir import Graph, import_netdef, maybe_dump
from netjit.compiler.ops.registry import TensorType
from netjit.compiler.passes.infer import OBJECT, type_of
from netjit.compiler.pipeline import READONLY_INPUTS, SegmentPlan, describe_signature, plan_segment
from netjit.compiler.execution import LazyContext, bind_plan, run_barrier
from netjit.compiler.reference import net_checks
from netjit.proto import caffe2_pb2
from netjit.runtime.errors import InternalError, NetJitError
from netjit.runtime.workspace import REGISTRY, Workspace

DEVICES = ("cpu",)   # compile(device="cuda") returns a codegen/cuda_runner.CudaNet instead
CACHE_SIZE = 64
_CACHE: "OrderedDict[tuple, CompiledNet]" = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _as_netdef(net: Any) -> caffe2_pb2.NetDef:
    if isinstance(net, caffe2_pb2.NetDef):
        return net
    if hasattr(net, "Proto"):
        return net.Proto()
    if isinstance(net, (bytes, bytearray)):
        return caffe2_pb2.NetDef.FromString(bytes(net))
    raise TypeError(f"expected a NetDef, a core.Net or serialized NetDef bytes, got {type(net).__name__}")


def _as_type(value: Any) -> TensorType | str:
    if isinstance(value, str) and value == OBJECT:
        return OBJECT
    if isinstance(value, TensorType):
        return TensorType(tuple(value.shape), np.dtype(value.dtype))
    if isinstance(value, np.ndarray):
        return type_of(value)
    if isinstance(value, tuple) and len(value) == 2 and not isinstance(value[0], (int, np.integer)):
        return TensorType(tuple(int(d) for d in value[0]), np.dtype(value[1]))
    raise TypeError(f"an input signature entry must be an array, a TensorType or (shape, dtype), got {value!r}")


class CompiledNet:
    """A net compiled for one device; plans are made per input signature and cached.

    ``visible``: the blobs a run must leave in the workspace (None: every blob the net writes, the
    Caffe2 rule). Use :func:`compile` to make one.
    """

    def __init__(self, net: caffe2_pb2.NetDef, visible: Iterable[str] | None = None,
                 outputs: Iterable[str] | None = None, device: str = "cpu"):
        if device not in DEVICES:
            raise ValueError(f"device {device!r} is not supported by this compiler (supported: {DEVICES})")
        self.net = net
        self.device = device
        self.graph: Graph = import_netdef(net)
        maybe_dump(self.graph, "import")
        written = set(self.graph.final)
        self.params = sorted(written & set(self.graph.inputs))
        self.visible = None if visible is None else set(visible) | set(self.params)
        self.outputs = list(outputs) if outputs is not None else sorted(written)
        self.checks = net_checks(net)
        self._plans: dict[tuple, SegmentPlan] = {}
        self._by_start: dict[int, list[SegmentPlan]] = {}
        self._lock = threading.RLock()
        # Blobs read before being written by nodes[start:], per start: a plan's signature.
        self._exposed: dict[int, list[str]] = {}

    # Planning ---------------------------------------------------------------------------------
    def exposed_reads(self, start: int) -> list[str]:
        if start not in self._exposed:
            written: set[str] = set()
            seen: dict[str, None] = {}
            for node in self.graph.nodes[start:]:
                for i in node.inputs:
                    blob = self.graph.values[i].blob
                    if blob not in written:
                        seen.setdefault(blob, None)
                for o in node.outputs:
                    written.add(self.graph.values[o].blob)
            self._exposed[start] = list(seen)
        return self._exposed[start]

    def plan(self, start: int, signature: Mapping[str, TensorType | str]) -> SegmentPlan:
        key = (start, tuple(sorted(signature.items(), key=lambda kv: kv[0])))
        with self._lock:
            plan = self._plans.get(key)
            if plan is None:
                try:
                    plan = plan_segment(self.graph, start, signature, self.visible)
                except NetJitError:
                    raise
                except Exception as err:  # an internal check or a compiler bug: never a bare error
                    raise InternalError(f"net {self.net.name!r}: planning ops from #{start} failed inside "
                                        f"the compiler ({type(err).__name__}: {err}); this is a netjit bug "
                                        f"- please report it; NETJIT_EXECUTOR=reference runs the net "
                                        f"without the compiler") from err
                self._plans[key] = plan
                self._by_start.setdefault(start, []).append(plan)
            return plan

    def plans_at(self, start: int) -> list[SegmentPlan]:
        return self._by_start.get(start, [])

    def prepare(self, inputs: Mapping[str, Any]) -> list[SegmentPlan]:
        """Plan (and compile the kernels of) the segments reachable from a signature without running:
        barriers stop it, as their outputs are unknown until they run."""
        signature = {b: _as_type(v) for b, v in inputs.items()}
        missing = [b for b in self.exposed_reads(0) if b not in signature]
        if missing:
            raise ValueError(f"net {self.net.name!r}: the input signature lacks {missing} (give their "
                             f"arrays or (shape, dtype), or pass ws= to read them from a workspace)")
        return [self.plan(0, {b: signature[b] for b in self.exposed_reads(0)})]

    # Running ----------------------------------------------------------------------------------
    def runner(self, ws: Workspace | None = None) -> "CompiledRunner":
        ws = ws if ws is not None else REGISTRY.current
        runners = _per_workspace(ws, "_netjit_runners")
        r = runners.get(self)
        if r is None:
            r = runners[self] = CompiledRunner(self, ws, check=False)
        return r

    def run(self, ws: Workspace | None = None) -> None:
        """Run once against ``ws`` (default: the current workspace), reading inputs and parameters
        from it and writing the visible blobs back."""
        self.runner(ws).run()

    def __call__(self, **feeds: Any) -> dict[str, Any]:
        """Run on a private child of the current workspace (parameters are read from it, nothing
        is written to it) with ``feeds`` as inputs; return the declared outputs by name."""
        base = REGISTRY.current
        children = _per_workspace(base, "_netjit_private")
        private = children.get(self)
        if private is None:
            private = children[self] = Workspace(f"{base.name}/{self.net.name}:compiled", base.root_folder,
                                                 parent=base)
        for name, value in feeds.items():
            private.blobs[name] = np.asarray(value, order="C") if isinstance(value, np.ndarray) else value
        self.runner(private).run()
        result = {}
        for name in self.outputs:
            value = private.get(name)
            if isinstance(value, np.ndarray) and not value.flags.writeable:
                value = value.copy()
            result[name] = value
        return result

    # Introspection ----------------------------------------------------------------------------
    def sources(self) -> dict[str, str]:
        """Every generated source of every plan so far: ``plan<i>/kernel<k>`` and ``plan<i>/driver``
        (write them out to read or diff them; kernels also live in $NETJIT_CACHE_DIR/kernels)."""
        out: dict[str, str] = {}
        for i, plan in enumerate(self._plans.values()):
            for k, kc in enumerate(plan.driver.kernels):
                if kc.source:
                    out[f"plan{i}/kernel{k}"] = kc.source
            out[f"plan{i}/driver"] = plan.driver.source
        return out

    def fallbacks(self) -> list[Any]:
        """Every fallback of every plan so far (``strict.Fallback``: stage, op, reason); ``explain()``
        lists them too. Under ``NETJIT_STRICT=1`` an unexpected one raises instead.

        >>> # [str(f) for f in exe.fallbacks()] -> ['kernel: op #3 (Conv): TypingError: ...']
        """
        return [f for plan in self._plans.values() for f in plan.fallbacks]

    def explain(self, sources: bool = True) -> str:
        """What the compiler did: per plan, the signature, fused groups, kernels, host steps,
        the buffer plan, fallbacks, and (``sources=True``) the generated code."""
        lines = [f"net {self.net.name!r}: {len(self.graph.nodes)} ops, device {self.device}, "
                 f"{'all written blobs visible (Caffe2 rule)' if self.visible is None else f'visible: {sorted(self.visible)}'}"]
        if not self._plans:
            lines.append("  (no plans yet: run it, or compile with inputs=...)")
        for plan in self._plans.values():
            lines += explain_plan(plan, sources)
        return "\n".join(lines)


def _per_workspace(ws: Workspace, attr: str) -> "weakref.WeakKeyDictionary[CompiledNet, Any]":
    # Kept on the workspace (weakly keyed by the compiled net), so a runner - which holds its
    # workspace - lives exactly as long as that workspace, and evicted nets do not pin either.
    table = ws.__dict__.get(attr)
    if table is None:
        table = ws.__dict__[attr] = weakref.WeakKeyDictionary()
    return table


def explain_plan(plan: SegmentPlan, sources: bool = True) -> list[str]:
    sig = describe_signature(dict(plan.signature))
    lines = [f"plan for ops [{plan.start}, {plan.stop}) given {{{sig}}}"]
    groups = [n for n in plan.graph.nodes if n.op == "Fused"]
    lines.append(f"  {len(plan.graph.nodes)} steps, {len(groups)} fused groups, "
                 f"{sum(s.kind == 'host' for s in plan.driver.steps)} host steps, "
                 f"{sum(s.kind == 'const' for s in plan.driver.steps)} folded constants")
    for s in plan.driver.steps:
        lines.append(f"    [{s.kind:6s}] #{s.index} {s.op_type}: {list(s.inputs)} -> {list(s.outputs)}")
    lines.append(f"  buffers: {plan.buffers.summary()}")
    for f in plan.fallbacks:
        lines.append(f"  fallback to references ({'unexpected' if f.unexpected else 'expected'}): {f}")
    if sources:
        for k, kc in enumerate(plan.driver.kernels):
            if kc.source:
                lines.append(f"  --- kernel K{k} ({kc.description}) ---")
                lines += ["    " + ln for ln in kc.source.splitlines()]
        lines.append("  --- driver ---")
        lines += ["    " + ln for ln in plan.driver.source.splitlines()]
    return lines


class CompiledRunner:
    """Runs a CompiledNet against one workspace (what ``workspace.CreateNet`` keeps)."""
    executor = "compiled"

    def __init__(self, compiled: CompiledNet, ws: Workspace, check: bool = True):
        self.compiled = compiled
        self.net = compiled.net
        self.ws = ws
        if check:
            compiled.checks.check(ws)
        self._W = ws.blobs
        chain, p = [ws.blobs], ws.parent
        while p is not None:
            chain.append(p.blobs)
            p = p.parent
        self._R = ws.blobs if len(chain) == 1 else ChainMap(*chain)
        self.contexts: dict[int, LazyContext] = {}
        self._bound: dict[int, tuple[Any, Any]] = {}
        self._fast = None

    def context(self, node: Any) -> LazyContext:
        ctx = self.contexts.get(node.index)
        if ctx is None:
            ctx = LazyContext(args=node.attrs, op=node.proto, index=node.index, net_name=self.net.name, ws=self.ws)
            self.contexts[node.index] = ctx
        return ctx

    def bound(self, plan: SegmentPlan) -> tuple[Any, Any]:
        fns = self._bound.get(id(plan))
        if fns is None:
            if plan.shareable:
                fns = plan.__dict__.get("_shared")
                if fns is None:
                    fns = plan.__dict__["_shared"] = bind_plan(plan, self)
            else:
                fns = bind_plan(plan, self)
            self._bound[id(plan)] = fns
        return fns

    def run(self) -> None:
        fast = self._fast
        if fast is not None and fast(self._W, self._R) is not None:
            return
        self._run_slow()

    def _run_slow(self) -> None:
        compiled = self.compiled
        n = len(compiled.graph.nodes)
        start = 0
        while start < n:
            plan = None
            for candidate in compiled.plans_at(start):
                run, _ = self.bound(candidate)
                if run(self._W, self._R) is not None:
                    plan = candidate
                    break
            if plan is None:
                plan = self._plan_and_run(start)
            if plan.start == 0 and plan.stop == n and not plan.empty:
                self._fast = self.bound(plan)[0]
            start = plan.stop
            if start < n:
                run_barrier(self, compiled.graph.nodes[start], plan)
                start += 1

    def _plan_and_run(self, start: int) -> SegmentPlan:
        compiled = self.compiled
        values: dict[str, Any] = {}
        signature: dict[str, TensorType | str] = {}
        for blob in compiled.exposed_reads(start):
            try:
                value = self._R[blob]
            except KeyError:
                continue
            values[blob] = value
            signature[blob] = type_of(value)
        token = READONLY_INPUTS.set(frozenset(b for b, v in values.items()
                                              if isinstance(v, np.ndarray) and not v.flags.writeable))
        try:
            plan = compiled.plan(start, signature)
        finally:
            READONLY_INPUTS.reset(token)
        if not plan.empty or plan.driver.steps:
            _, body = self.bound(plan)
            args = []
            for (blob, _), val in zip(plan.driver.inputs, plan.driver.input_types):
                value = values[blob]
                if val.typed:
                    value = np.asarray(value, order="C")  # keeps 0-d blobs 0-d
                args.append(value)
            body(self._W, *args)
        return plan


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------
def net_digest(net: caffe2_pb2.NetDef) -> bytes:
    """The content key of a NetDef: RunNetOnce computes it once and hands it on (serialising a net
    costs about a microsecond per few ops; RunNetOnce used to do it three times)."""
    return hashlib.blake2b(net.SerializeToString(), digest_size=16).digest()


def _cache_key(net: caffe2_pb2.NetDef, visible: Iterable[str] | None, outputs: Iterable[str] | None,
               device: str, digest: bytes | None = None) -> tuple:
    if digest is None:
        digest = net_digest(net)
    return (digest, None if visible is None else tuple(sorted(visible)),
            None if outputs is None else tuple(outputs), device)


def get_compiled(net: caffe2_pb2.NetDef, visible: Iterable[str] | None = None,
                 outputs: Iterable[str] | None = None, device: str = "cpu",
                 digest: bytes | None = None) -> CompiledNet:
    """The cached CompiledNet for this exact NetDef (by content), mode and device. ``digest``:
    ``net_digest(net)`` when the caller has it already."""
    key = _cache_key(net, visible, outputs, device, digest)
    with _CACHE_LOCK:
        compiled = _CACHE.get(key)
        if compiled is not None:
            _CACHE.move_to_end(key)
            return compiled
    compiled = CompiledNet(caffe2_pb2.NetDef.FromString(net.SerializeToString()), visible, outputs, device)
    with _CACHE_LOCK:
        _CACHE[key] = compiled
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return compiled


def clear_cache() -> None:
    """Forget every cached CompiledNet (plans, folded constants); disk-cached kernels stay."""
    with _CACHE_LOCK:
        _CACHE.clear()


def compile(net: Any, inputs: Mapping[str, Any] | None = None, outputs: Iterable[str] | None = None,
            device: str | None = None, ws: Workspace | None = None) -> CompiledNet:
    """Compile ``net`` (a NetDef, core.Net or serialized bytes).

    ``outputs``: blobs a run must produce (default: the net's external_output, or every blob it
    writes when it declares none); those and the parameters the net updates are written back,
    other intermediates may be fused away. ``inputs``: blob -> array, TensorType or (shape, dtype)
    to plan and compile kernels now (blobs not given are typed from ``ws`` when passed);
    otherwise planning happens at the first run.
    ``device``: "cpu", "cuda" (the numba-cuda backend: a ``CudaNet``, planned at its first run), or
    None for what the net's DeviceOptions say.

    >>> # exe = netjit.compile(net, inputs={"data": batch}); exe.run(ws); out = exe(data=batch)
    """
    from netjit.proto.io import check_net_names, parse_net_bytes  # late: keeps the import graph light
    proto = parse_net_bytes(bytes(net)) if isinstance(net, (bytes, bytearray)) else _as_netdef(net)
    check_net_names(proto)
    if outputs is None and len(proto.external_output):
        outputs = list(proto.external_output)
    if device is None:      # as the net says: a CUDA DeviceOption on it or an op picks the GPU
        from netjit.runtime.device import net_uses_cuda
        device = "cuda" if net_uses_cuda(proto) else "cpu"
    if device == "cuda":    # the numba-cuda backend (codegen/cuda_runner.py): ops run on CUDA unless pinned
        from netjit.compiler.codegen.cuda_runner import get_cuda_net
        compiled = get_cuda_net(proto, outputs, outputs, default=("cuda", 0))
        if inputs is not None or ws is not None:
            raise ValueError("compile(device='cuda') plans at the first run; call it with the inputs instead")
        return compiled
    compiled = get_compiled(proto, outputs, outputs, device)
    if inputs is not None or ws is not None:
        signature = {b: _as_type(v) for b, v in (inputs or {}).items()}
        if ws is not None:
            for blob in compiled.exposed_reads(0):
                if blob not in signature and ws.has(blob):
                    signature[blob] = type_of(ws.get(blob))
        compiled.prepare(signature)
    return compiled


# digest -> whether that net places any op on a GPU (RunNetOnce meets the same nets again and again).
_USES_CUDA: "OrderedDict[bytes, bool]" = OrderedDict()


def compiled_runner(net: caffe2_pb2.NetDef, ws: Workspace, outputs: list[str] | None = None,
                    digest: bytes | None = None) -> CompiledRunner:
    """The runner ``workspace.CreateNet``/``RunNet``/``RunNetOnce`` use: Caffe2's construction
    checks, then compiled runs that leave every written blob visible with Caffe2's value; with
    ``outputs`` (a private workspace, as a Predictor's) only those blobs and updated parameters.
    ``digest``: ``net_digest(net)`` when the caller has it already."""
    from netjit.runtime.device import net_uses_cuda
    if digest is None:
        digest = net_digest(net)
    uses_cuda = _USES_CUDA.get(digest)
    if uses_cuda is None:
        uses_cuda = _USES_CUDA[digest] = net_uses_cuda(net)
        if len(_USES_CUDA) > CACHE_SIZE:
            _USES_CUDA.popitem(last=False)
    if uses_cuda:   # placed on a GPU (DeviceOption CUDA): the numba-cuda backend runs it
        from netjit.compiler.codegen.cuda_runner import cuda_runner
        return cuda_runner(net, ws, outputs)
    return CompiledRunner(get_compiled(net, outputs, outputs, digest=digest), ws, check=True)

