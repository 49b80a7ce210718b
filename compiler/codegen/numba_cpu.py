"""The numba-cpu backend: which nodes it compiles, and the kernel for each.

What to compile comes from the op records: each op's ``lowering["numba-cpu"]`` (a ``Lowering``,
compiler/ops/registry.py) names its makers, and ``ENTRY_RULES`` below is this backend's one table of
how each kind of entry becomes part of a plan:

- ``head``: a fused group (passes/fuse.py) that the op starts becomes one generated ``@njit`` kernel
  (codegen/loops.py) running the head's code, then the epilogue loop;
- ``standalone``: the node runs the op's hand-written ``@njit`` kernel (codegen/dense.py, ...);
- ``fill``: a random filler left as a host step gets a plan-time fast path (codegen/fills.py);
- ``expr``/``loop`` and the record's ``per_channel`` are read by codegen/elementwise.py, which
  decides what fuses into an elementwise loop (``RULES.loop_ok``).

Everything else runs as a host step: the op's numpy reference inside the same plan. A maker that
returns None only says "not this instance" (NHWC pools, 3-D convs); that is not a fallback.
"""
from __future__ import annotations

from netjit.compiler.codegen import numba_start

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from netjit.compiler.codegen.elementwise import loop_ok
from netjit.compiler.codegen.fills import FillMaker
from netjit.compiler.codegen.loops import Param, ProducerCode, render_group
from netjit.compiler.codegen.modules import load_kernel
from netjit.compiler.ir import Node, Value
from netjit.compiler.ops.registry import has_op, lookup
from netjit.compiler.passes.fuse import FusionRules

DEVICE = "cpu"
BACKEND = "numba-cpu"   # the key of this backend's entries in an op record's ``lowering``


@dataclass
class KernelCall:
    fn: Any                          # numba dispatcher
    params: list[Param]
    description: str
    source: str | None = None        # generated source (None for hand-written kernels)
    full_inputs: set[str] = field(default_factory=set)   # may be overwritten in place by an output
    host_head: Node | None = None    # a head computed by its reference first (see ProducerCode.host)
    raw: tuple[str, np.dtype, tuple[int, ...]] | None = None   # that head's result: name, dtype, shape
    threaded: bool = False           # may split its work across threads (needs OpenBLAS pinned, parallel.py)


def entry(op_type: str, name: str) -> Callable[..., Any] | None:
    """The op record's numba-cpu lowering entry ``name`` (resolved), or None."""
    if op_type in ("Const", "Fused") or not has_op(op_type):
        return None
    return lookup(op_type).lowering_entry(BACKEND, name)


def _threaded(op_type: str) -> bool:
    lw = lookup(op_type).lowering.get(BACKEND)
    return lw is not None and lw.threaded


def _group_kernel(make_head: Callable[..., ProducerCode | None] | None, node: Node,
                  values: Mapping[str, Value]) -> KernelCall | None:
    """A fused group -> one generated kernel; a producer group runs its head's code first."""
    members = node.attrs["nodes"]
    head = None
    if node.attrs.get("kind") == "producer":
        head = make_head(members[0], values) if make_head is not None else None
        if head is None:
            return None
    lk = render_group(node, values, head)
    kc = KernelCall(load_kernel(lk.source), lk.params, lk.description, lk.source,
                    lk.full_inputs if head is None else set(),
                    threaded=lk.threaded)
    if head is not None and head.host:
        kc.host_head = members[0]
        kc.raw = (head.raw, head.dtype, tuple(values[members[0].outputs[0]].shape))
    return kc


def _standalone_kernel(make: Callable[..., Any], node: Node, values: Mapping[str, Value]) -> KernelCall | None:
    """A node -> its op's hand-written kernel: ``make`` gives (dispatcher, params) or None."""
    made = make(node, values)
    if made is None:
        return None
    fn, params = made
    return KernelCall(fn, params, node.op, threaded=_threaded(node.op))


def _fill_maker(make: Callable[..., Any], node: Node, values: Mapping[str, Value]) -> FillMaker | None:
    return make(node, values)


# This backend's one table of rules: for each kind of Lowering entry, what it makes of a node
# (given the resolved entry). A new kind of entry is a new ``Lowering`` field and one row here.
ENTRY_RULES: dict[str, Callable[[Any, Node, Mapping[str, Value]], Any]] = {
    "head": _group_kernel,             # a Fused group whose first member has it -> KernelCall
    "standalone": _standalone_kernel,  # a plain node -> KernelCall of its hand-written kernel
    "fill": _fill_maker,               # a filler host step -> FillMaker (plan-time fast path)
}


def head_ok(node: Node, values: Mapping[str, Value]) -> bool:
    """May ``node`` head a fused group (fusion asks before grouping)?"""
    maker = entry(node.op, "head")
    return (maker is not None and len(node.outputs) == 1 and values[node.outputs[0]].typed
            and maker(node, values) is not None)


RULES = FusionRules(loop_ok=loop_ok, head_ok=head_ok)


def kernel_for(node: Node, values: Mapping[str, Value]) -> KernelCall | None:
    """The compiled kernel for a (fused) node, or None: it then runs as a host step."""
    if node.op == "Fused":
        return ENTRY_RULES["head"](entry(node.attrs["nodes"][0].op, "head"), node, values)
    maker = entry(node.op, "standalone")
    return ENTRY_RULES["standalone"](maker, node, values) if maker is not None else None


def fill_for(node: Node, values: Mapping[str, Value]) -> FillMaker | None:
    """The plan-time fast path of a random filler (its record's ``fill`` entry), or None."""
    maker = entry(node.op, "fill")
    return ENTRY_RULES["fill"](maker, node, values) if maker is not None else None


def inplace_pairs(node: Node, kernel: KernelCall | None, values: Mapping[str, Value]) -> list[tuple[str, str]]:
    """(output, input) pairs a kernel may compute in place: elementwise, read at the output's
    index only, same element size and count."""
    if kernel is None or not kernel.full_inputs:
        return []
    pairs = []
    for out in node.outputs:
        o = values[out]
        for inp in node.inputs:
            i = values[inp]
            if inp in kernel.full_inputs and i.typed and i.dtype.itemsize == o.dtype.itemsize and i.size == o.size:
                pairs.append((out, inp))
    return pairs


def _numba_type(param: Param, values: Mapping[str, Value], readonly: set[str], kernel: KernelCall) -> Any:
    from numba import from_dtype, types
    if param.kind == "dim":
        return types.int64
    if param.kind == "scalar":
        return types.float64 if isinstance(param.value, float) else types.int64
    if kernel.raw is not None and param.value == kernel.raw[0]:
        return types.Array(from_dtype(kernel.raw[1]), len(kernel.raw[2]), "C")
    val = values[param.value]
    return types.Array(from_dtype(val.dtype), max(len(val.shape), 0), "C",
                       readonly=param.value in readonly and param.kind == "in")


def precompile(kernel: KernelCall, values: Mapping[str, Value], readonly: set[str]) -> None:
    """Compile (or load from the disk cache) the specialisation a plan will call, at plan time, so
    a kernel that numba cannot type is found before the run (the node then runs as a host step)."""
    sig = tuple(_numba_type(p, values, readonly, kernel) for p in kernel.params)
    kernel.fn.compile(sig)
    numba_start.settle()
