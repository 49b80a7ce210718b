"""The numba-cpu backend: which nodes it compiles, and the kernel for each.

- Fused groups (passes/fuse.py) become one generated ``@njit`` kernel each (codegen/loops.py),
  headed by a producer's code when the group starts with an OUT_FUSABLE op listed in ``HEADS``.
- Ops listed in ``STANDALONE`` run a hand-written ``@njit`` kernel (codegen/dense.py, ...).
- Everything else runs as a host step: the op's numpy reference inside the same plan.

Per-op kernels live here, keyed by op type, so op modules stay backend-free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from netjit.compiler.codegen import conv, dense, reductions, windows
from netjit.compiler.codegen.elementwise import loop_ok
from netjit.compiler.codegen.loops import Param, ProducerCode, render_group
from netjit.compiler.codegen.modules import load_kernel
from netjit.compiler.ir import Node, Value
from netjit.compiler.ops.registry import has_op, lookup
from netjit.compiler.passes.fuse import FusionRules

DEVICE = "cpu"
BACKEND = "numba-cpu"   # the key of this backend's entries in an op record's ``lowering``

# Hand-written kernels from these modules cut their work across threads (generated kernels say so
# through their head's ProducerCode.threaded).
_THREADED_MODULES = frozenset({windows.__name__, dense.__name__})

# OUT_FUSABLE ops that can head a fused group: node -> ProducerCode (None when not applicable).
HEADS: dict[str, Callable[[Node, Mapping[str, Value]], ProducerCode | None]] = {
    "FC": dense.fc_head, "Conv": conv.conv_head, "Conv1D": conv.conv_head, "Conv2D": conv.conv_head,
    "Conv3D": conv.conv_head,
}
# Ops with their own kernel: node -> (dispatcher, params) or None.
STANDALONE: dict[str, Callable[[Node, Mapping[str, Value]], Any]] = {
    "FCGradient": dense.fc_gradient,
    **{name: conv.conv_gradient for name in ("ConvGradient", "Conv1DGradient", "Conv2DGradient")},
    **{f"MaxPool{n}": conv.max_pool for n in ("", "1D", "2D")},
    **{f"AveragePool{n}": conv.average_pool for n in ("", "1D", "2D")},
    **{f"MaxPool{n}Gradient": conv.max_pool_gradient for n in ("", "1D", "2D")},
    **{f"AveragePool{n}Gradient": conv.average_pool_gradient for n in ("", "1D", "2D")},
    "SquaredL2Distance": reductions.squared_l2_distance,
    "SquaredL2DistanceGradient": reductions.squared_l2_distance_gradient,
    "AveragedLoss": reductions.averaged_loss,
    "Softmax": reductions.softmax,
    "SoftmaxGradient": reductions.softmax_gradient,
}


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


def _rule(op_type: str, entry: str, table: Mapping[str, Any]) -> Any:
    """The op record's numba-cpu lowering entry, else the backend's own table row."""
    if op_type not in ("Const", "Fused") and has_op(op_type):
        found = lookup(op_type).lowering_entry(BACKEND, entry)
        if found is not None:
            return found
    return table.get(op_type)


def head_ok(node: Node, values: Mapping[str, Value]) -> bool:
    maker = _rule(node.op, "head", HEADS)
    return (maker is not None and len(node.outputs) == 1 and values[node.outputs[0]].typed
            and maker(node, values) is not None)


RULES = FusionRules(loop_ok=loop_ok, head_ok=head_ok)


def kernel_for(node: Node, values: Mapping[str, Value]) -> KernelCall | None:
    """The compiled kernel for a (fused) node, or None: it then runs as a host step."""
    if node.op == "Fused":
        members = node.attrs["nodes"]
        head = None
        if node.attrs.get("kind") == "producer":
            head = _rule(members[0].op, "head", HEADS)(members[0], values)
            if head is None:
                return None
        lk = render_group(node, values, head)
        kc = KernelCall(load_kernel(lk.source), lk.params, lk.description, lk.source,
                        lk.full_inputs if head is None else set(), threaded=head is not None and head.threaded)
        if head is not None and head.host:
            kc.host_head = members[0]
            kc.raw = (head.raw, head.dtype, tuple(values[members[0].outputs[0]].shape))
        return kc
    maker = _rule(node.op, "standalone", STANDALONE)
    if maker is None:
        return None
    made = maker(node, values)
    if made is None:
        return None
    fn, params = made
    lw = lookup(node.op).lowering.get(BACKEND)
    threaded = (lw is not None and lw.threaded) or getattr(fn, "py_func", fn).__module__ in _THREADED_MODULES
    return KernelCall(fn, params, node.op, threaded=threaded)


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
