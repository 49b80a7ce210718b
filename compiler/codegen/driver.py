"""The generated driver: one straight-line Python function per planned segment.

Instead of looping over steps (a Python call, a dict lookup and a list per op), a plan becomes
source code that reads its inputs, checks them against the plan's signature with inline
comparisons, calls each kernel / host step with its arguments spelled out, and stores every
visible value into the workspace right after the step that computes it (so a failing step leaves
earlier results written, as the reference executor does). ``bind(E)`` closes the code over one
runner's objects (op contexts, random generators, arena views) and returns ``(run, body)``:

- ``run(W, R)``: read the inputs from ``R`` (the workspace, parents included), check them, run;
  returns None without side effects when an input does not fit the plan (the caller re-plans);
- ``body(W, *inputs)``: run with already checked (contiguous) input values.
"""
from __future__ import annotations

import linecache
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from netjit.compiler.codegen.fills import FillMaker
from netjit.compiler.codegen.parallel import PARALLEL
from netjit.compiler.codegen.numba_cpu import KernelCall
from netjit.compiler.ir import Graph, Node, Value
from netjit.compiler.passes.buffers import BufferPlan


@dataclass(frozen=True)
class StepInfo:
    """Where a step came from, for error messages and explain()."""
    kind: str                        # "kernel" | "host" | "fill" | "const"
    index: int                       # NetDef op index (a group's first member)
    op_type: str
    inputs: tuple[str, ...]          # blob names
    outputs: tuple[str, ...]
    description: str = ""


@dataclass
class DriverSpec:
    source: str
    filename: str
    inputs: list[tuple[str, str]]                 # (blob, value) read by the segment, in call order
    input_types: list[Value]
    steps: list[StepInfo]
    kernels: list[KernelCall] = field(default_factory=list)
    consts: list[np.ndarray] = field(default_factory=list)
    dtypes: list[np.dtype] = field(default_factory=list)
    host_nodes: list[Node] = field(default_factory=list)
    fills: list[tuple[FillMaker, Node]] = field(default_factory=list)
    arena: list[tuple[int, tuple[int, ...], np.dtype]] = field(default_factory=list)   # offset, shape, dtype
    arena_bytes: int = 0
    factory: Callable[[Any], tuple[Callable, Callable]] | None = None


# Elements across a threaded kernel's arrays below which a plan does not pin OpenBLAS.
PIN_ELEMENTS = 4096


def _arrays_size(kernel: KernelCall, values: Mapping[str, Value]) -> int:
    return sum(values[p.value].size for p in kernel.params
               if p.kind in ("in", "out") and p.value in values and values[p.value].typed)


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, acc = [], itemsize
    for d in reversed(shape):
        strides.append(acc)
        acc *= max(d, 1)
    return tuple(reversed(strides))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)


def generate(graph: Graph, buffers: BufferPlan, kernels: Mapping[int, KernelCall],
             fills: Mapping[int, FillMaker], tag: str) -> DriverSpec:
    """Driver source for a scheduled segment graph. ``kernels``/``fills``: node position -> compiled
    kernel / fill fast path; other registry nodes run their reference."""
    values = graph.values
    var: dict[str, str] = {}

    def v(name: str) -> str:
        if name not in var:
            var[name] = f"v{len(var)}"
        return var[name]

    # compile() refuses a NUL in a filename; a net's name may hold any character.
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in tag)
    spec = DriverSpec(source="", filename=f"<netjit driver {shown}>", inputs=list(graph.inputs.items()),
                      input_types=[values[n] for n in graph.inputs.values()], steps=[])
    dtype_ids: dict[np.dtype, str] = {}

    def dt(d: np.dtype) -> str:
        d = np.dtype(d)
        if d not in dtype_ids:
            dtype_ids[d] = f"D{len(spec.dtypes)}"
            spec.dtypes.append(d)
        return dtype_ids[d]

    def guard_expr(x: str, val: Value) -> str:
        if not val.typed:
            return ""
        shape = tuple(val.shape)
        cond = f"{x}.__class__ is not _nd or {x}.dtype is not {dt(val.dtype)} or {x}.shape != {shape!r}"
        if val.size > 1:
            cond += f" or {x}.strides != {_c_strides(shape, val.dtype.itemsize)!r}"
        return cond

    # Which values a kernel reads (those must be checked contiguous arrays of the planned type).
    kernel_reads = {i for pos, node in enumerate(graph.nodes) if pos in kernels for i in node.inputs}
    by_value: dict[str, list[str]] = {}
    for blob, name in graph.outputs.items():
        by_value.setdefault(name, []).append(blob)
    arena_index = {name: k for k, name in enumerate(sorted(buffers.offsets, key=buffers.offsets.get))}
    for name in sorted(arena_index, key=arena_index.get):
        val = values[name]
        spec.arena.append((buffers.offsets[name], tuple(val.shape), val.dtype))
    spec.arena_bytes = buffers.arena_bytes

    body = _Writer()
    in_vars = [v(name) for _, name in spec.inputs]
    body(1, f"def body(W{''.join(', ' + x for x in in_vars)}):")
    body(2, "s = -1")
    # Kernels that split work across threads want OpenBLAS on one thread while they run (see
    # codegen/parallel.py); the run pins it and puts the caller's setting back however it ends.
    # Plans whose threaded kernels are all tiny skip the pin (~0.45 us of RunNet): none of them
    # would split, and OpenBLAS runs products that small on one thread anyway.
    pin = PARALLEL and any(kc.threaded and _arrays_size(kc, values) >= PIN_ELEMENTS for kc in kernels.values())
    if pin:
        body(2, "_pin = _blas(1)")
    body(2, "try:")
    body(3, "pass")
    for _, name in spec.inputs:
        for blob in by_value.get(name, ()):
            if blob != values[name].blob:
                body(3, f"W[{blob!r}] = {v(name)}")

    def store(name: str, indent: int, maybe_none: bool = False) -> None:
        for blob in by_value.get(name, ()):
            if maybe_none:
                body(indent, f"if {v(name)} is not None: W[{blob!r}] = {v(name)}")
            else:
                body(indent, f"W[{blob!r}] = {v(name)}")

    for pos, node in enumerate(graph.nodes):
        step = len(spec.steps)
        members = node.members
        first = members[0]
        in_blobs = tuple(values[i].blob for i in node.inputs)
        out_blobs = tuple(values[o].blob for o in node.outputs)
        body(3, f"s = {step}")
        if pos in kernels:
            kc = kernels[pos]
            k = len(spec.kernels)
            spec.kernels.append(kc)
            spec.steps.append(StepInfo("kernel", first.index, node.describe(), in_blobs, out_blobs, kc.description))
            args = []
            reuse = None
            if kc.host_head is not None:
                # The head's reference computes the raw result; the kernel finishes it in place.
                h = len(spec.host_nodes)
                spec.host_nodes.append(kc.host_head)
                raw_name, raw_dtype, raw_shape = kc.raw
                body(3, f"r = F{h}(C{h}{''.join(', ' + v(i) for i in kc.host_head.inputs[:2])})")
                body(3, f"{v(raw_name)} = _contig(r[0] if r.__class__ in _seq else r)")
                reuse = next((o for o in node.outputs if values[o].dtype == raw_dtype
                              and tuple(values[o].shape) == raw_shape), None)
            for out in node.outputs:
                val = values[out]
                if out == reuse:
                    body(3, f"{v(out)} = {v(kc.raw[0])}")
                elif out in arena_index:
                    body(3, f"{v(out)} = A{arena_index[out]}")
                elif by_value.get(out):
                    # A visible output reuses the array its blob held after the last run when
                    # nothing else can see it: it owns its memory, has the planned type, and its only
                    # references are the workspace's and ours (the count below includes the call's
                    # own). Fresh large arrays cost page faults on every run.
                    o, shape, d = v(out), tuple(val.shape), dt(val.dtype)
                    body(3, f"{o} = W.get({by_value[out][-1]!r})")
                    body(3, f"if {o}.__class__ is not _nd or {o}.base is not None or {o}.dtype is not {d} or "
                            f"{o}.shape != {shape!r} or _rc({o}) != 3: {o} = _empty({shape!r}, {d})")
                else:
                    body(3, f"{v(out)} = _empty({tuple(val.shape)!r}, {dt(val.dtype)})")
            for p in kc.params:
                if p.kind == "dim":
                    args.append(str(int(p.value)))
                elif p.kind in ("in", "out"):
                    args.append(v(p.value))
                else:
                    args.append(_scalar(p.value))
            body(3, f"K{k}({', '.join(args)})")
            for out in node.outputs:
                store(out, 3)
        elif node.op == "Const":
            c = len(spec.consts)
            spec.consts.append(node.attrs["value"])
            spec.steps.append(StepInfo("const", node.index, node.attrs.get("source", "Const"), (), out_blobs,
                                       "folded constant"))
            body(3, f"{v(node.outputs[0])} = Q{c}")
            store(node.outputs[0], 3)
        elif pos in fills:
            f = len(spec.fills)
            spec.fills.append((fills[pos], node))
            spec.steps.append(StepInfo("fill", node.index, node.op, in_blobs, out_blobs, "fill fast path"))
            body(3, f"{v(node.outputs[0])} = G{f}()")
            store(node.outputs[0], 3)
        else:
            h = len(spec.host_nodes)
            spec.host_nodes.append(node)
            spec.steps.append(StepInfo("host", node.index, node.op, in_blobs, out_blobs, "numpy reference"))
            call = f"F{h}(C{h}{''.join(', ' + v(i) for i in node.inputs)})"
            if not node.outputs:
                body(3, call)
            elif len(node.outputs) == 1:
                body(3, f"r = {call}")
                body(3, f"{v(node.outputs[0])} = r[0] if r.__class__ in _seq else r")
            else:
                body(3, f"r = {call}")
                body(3, f"{', '.join(v(o) for o in node.outputs)}, = r[:{len(node.outputs)}]")
            for k, out in enumerate(node.outputs):
                if out in kernel_reads:
                    cond = guard_expr(v(out), values[out])
                    body(3, f"if {cond}: {v(out)} = _fix({step}, {v(out)}, {k})")
                store(out, 3, maybe_none=True)
    body(2, "except BaseException as e:")
    body(3, "_fail(s, e)")
    if pin:
        body(2, "finally:")
        body(3, "_blas(_pin)")
    body(2, "return True")

    run = _Writer()
    run(1, "def run(W, R):")
    if spec.inputs:
        run(2, "try:")
        for blob, name in spec.inputs:
            run(3, f"{v(name)} = R[{blob!r}]")
        run(2, "except KeyError:")
        run(3, "return None")
        for blob, name in spec.inputs:
            val = values[name]
            # A value planned as a non-tensor only reaches host steps, whatever its class; one that
            # has become an array since is worth a plan that can compile what reads it.
            cond = guard_expr(v(name), val) if val.typed else f"{v(name)}.__class__ is _nd"
            if cond:
                run(2, f"if {cond}: return None")
    run(2, f"return body(W{''.join(', ' + x for x in in_vars)})")

    head = _Writer()
    head(0, "def bind(E):")
    head(1, "_nd = E.ndarray; _empty = E.empty; _fail = E.fail; _fix = E.fix; _seq = (list, tuple)")
    head(1, "_contig = E.contig; _rc = E.refcount")
    head(1, "_inf = E.inf; _nan = E.nan; _blas = E.blas_threads")
    for k in range(len(spec.kernels)):
        head(1, f"K{k} = E.kernels[{k}]")
    for c in range(len(spec.consts)):
        head(1, f"Q{c} = E.consts[{c}]")
    for d, name in dtype_ids.items():
        head(1, f"{name} = E.dtypes[{name[1:]}]")
    for h in range(len(spec.host_nodes)):
        head(1, f"F{h} = E.refs[{h}]; C{h} = E.contexts[{h}]")
    for f in range(len(spec.fills)):
        head(1, f"G{f} = E.fills[{f}]")
    for a in range(len(spec.arena)):
        head(1, f"A{a} = E.arena[{a}]")
    tail = _Writer()
    tail(1, "return run, body")
    spec.source = "\n".join(head.lines + body.lines + run.lines + tail.lines) + "\n"
    spec.factory = _compile(spec.source, spec.filename)
    return spec


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "_inf" if value > 0 else "-_inf"
        if math.isnan(value):
            return "_nan"
    return repr(value)


def _compile(source: str, filename: str) -> Callable:
    # Register the text so tracebacks through generated code show its lines.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {}
    exec(compile(source, filename, "exec"), namespace)
    return namespace["bind"]
