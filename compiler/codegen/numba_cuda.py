"""The numba-cuda backend: which nodes it compiles to @cuda.jit kernels, and the kernel for each.

As on the CPU (codegen/numba_cpu.py), what to compile comes from the op records: an op's
``lowering["numba-cuda"]`` names its makers, and ``ENTRY_RULES`` is this backend's one table of what
each kind of entry becomes:

- ``head``: the op (FC, Conv) heads a fused group; its GEMM runs first with the bias (and a
  following Relu) in the GEMM's epilogue, the rest of the group as one generated elementwise kernel;
- ``standalone``: the node runs the op's hand-written kernel (cuda_gemm.py, cuda_ops.py).

Elementwise ops need no entry: their expression template (the record's ``expr``, or the CPU
backend's ``loop`` form) renders into a generated kernel (cuda_kernels.py). Every other op runs its
numpy reference on the host, its inputs copied from the device and its outputs back (explain()
lists those copies). Ops pinned to the CPU in a CUDA net run the same way, without copies.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from netjit.compiler.codegen.cuda_kernels import CudaKernel, Launch, elementwise_kernel, flat, launch_shape
from netjit.compiler.codegen.cuda_kernels import compile_source, render_elementwise
from netjit.compiler.codegen.elementwise import loop_ok
from netjit.compiler.ir import Node, Value
from netjit.compiler.ops.registry import has_op, lookup
from netjit.compiler.passes.fuse import FusionRules

BACKEND = "numba-cuda"
# Ops that move a blob between devices: the runner does the copy itself (see cuda_runner.py).
TO_DEVICE = frozenset({"CopyCPUToGPU"})
TO_HOST = frozenset({"CopyGPUToCPU", "EnsureCPUOutput"})
# Caffe2 keeps these ops' outputs on the CPU even when the op is placed on a GPU (the iteration
# counter is read on the host by LearningRate and the checkpointing ops).
KEEP_ON_HOST = frozenset({"Iter", "AtomicIter"})


def entry(op_type: str, name: str) -> Callable[..., Any] | None:
    if op_type in ("Const", "Fused") or not has_op(op_type):
        return None
    return lookup(op_type).lowering_entry(BACKEND, name)


def _producer_kernel(make_head: Callable[..., Any] | None, node: Node,
                     values: Mapping[str, Value]) -> CudaKernel | None:
    """A producer group: the head's GEMM with bias (and Relu when it is the group's only other
    member) in its epilogue; any other members as one elementwise kernel over the head's result."""
    from netjit.runtime.device import cuda
    members = node.attrs["nodes"]
    head = members[0]
    head_out = head.outputs[0]
    rest = members[1:]
    relu = len(rest) == 1 and rest[0].op == "Relu" and rest[0].inputs == (head_out,) \
        and head_out not in node.outputs
    made = make_head(head, values, relu=relu) if make_head is not None else None
    if made is None:
        return None
    gemm, pre = (made[1], made[0]) if isinstance(made, tuple) else (made, None)
    h_in = [node.inputs.index(i) for i in head.inputs]
    launches = ([Launch("im2col", "numba-cuda", (pre.shape[0],), (pre.shape[1],))] if pre is not None else [])
    launches.append(gemm.launch(head.op + ("+Relu" if relu else "")))

    def run_head(ins: list[Any], target: Any) -> None:
        a = [ins[i] for i in h_in]
        if pre is None:
            gemm(a[0], a[1], target, a[2] if len(a) > 2 else None)
        else:
            gemm(a[1], pre.cols(a[0]), target, a[2] if len(a) > 2 else None)

    if relu or not rest:
        def run(ins: list[Any], outs: list[Any]) -> None:
            run_head(ins, outs[0])
        return CudaKernel(run, f"{head.op}+Relu (epilogue)" if relu else head.op, launches)
    out_vals = tuple(o for o in node.outputs if o != head_out)
    rendered = render_elementwise(tuple(rest), out_vals, tuple(node.attrs["shape"]), values)
    if rendered is None:
        return None
    source, operand_values = rendered
    fn = compile_source(source)
    shape = tuple(values[head_out].shape)
    dtype = values[head_out].dtype
    slot = {o: j for j, o in enumerate(node.outputs)}
    total = max(1, int(np.prod(node.attrs["shape"])))
    blocks, threads = launch_shape(total)
    launches.append(Launch("+".join(m.op for m in rest), "numba-cuda", (blocks,), (threads,)))

    def run(ins: list[Any], outs: list[Any]) -> None:
        buf = outs[slot[head_out]] if head_out in slot else cuda().device_array(shape, dtype)
        run_head(ins, buf)
        env = dict(zip(node.inputs, ins))
        env[head_out] = buf
        fn[blocks, threads](*[flat(env[v]) for v in operand_values], *[flat(outs[slot[o]]) for o in out_vals])
    return CudaKernel(run, "+".join(m.op for m in members), launches, source)


def _standalone(make: Callable[..., Any], node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    return make(node, values)


# This backend's one table of rules: what each kind of Lowering entry makes of a node.
ENTRY_RULES: dict[str, Callable[[Any, Node, Mapping[str, Value]], Any]] = {
    "head": _producer_kernel,
    "standalone": _standalone,
}


def make_rules(on_device: Callable[[Node], bool]) -> FusionRules:
    """Fusion rules for a CUDA net: only ops placed on the device fuse, never the device copies."""
    def loop_ok_here(node: Node, values: Mapping[str, Value]) -> bool:
        return (on_device(node) and node.op not in TO_DEVICE | TO_HOST and loop_ok(node, values))

    def head_ok(node: Node, values: Mapping[str, Value]) -> bool:
        maker = entry(node.op, "head")
        return (maker is not None and on_device(node) and len(node.outputs) == 1
                and values[node.outputs[0]].typed and maker(node, values) is not None)
    return FusionRules(loop_ok=loop_ok_here, head_ok=head_ok)


def kernel_for(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    """The device kernel of a (fused) node, or None: it then runs on the host."""
    if any(not values[v].typed for v in (*node.inputs, *node.outputs)):
        return None
    if node.op == "Fused":
        if node.attrs.get("kind") == "producer":
            return ENTRY_RULES["head"](entry(node.attrs["nodes"][0].op, "head"), node, values)
        return elementwise_kernel(node, values)
    if node.op in TO_DEVICE | TO_HOST:
        return None
    maker = entry(node.op, "standalone")
    if maker is not None:
        return ENTRY_RULES["standalone"](maker, node, values)
    if len(node.outputs) == 1 and loop_ok(node, values):
        return elementwise_kernel(node, values)
    return None


def claimed_ops() -> list[str]:
    """Op types with a numba-cuda lowering entry (elementwise ops with templates come on top)."""
    from netjit.compiler.ops.registry import all_ops
    return sorted(op for op in all_ops() if BACKEND in lookup(op).lowering)
