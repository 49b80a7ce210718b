"""@cuda.jit kernels for the numba-cuda backend: launch shapes, fused elementwise groups, reductions.

A fused group (passes/fuse.py) becomes one generated kernel: a grid-stride loop over the group's
collapsed iteration shape that reads each operand once, evaluates every member's expression template
(codegen/expr.py, the CPU renderer's language) and stores each materialised output. Shapes and
strides are literals in the source, so the kernel text is its cache key.

Reductions (softmax rows, the losses, per-channel sums) run one block per row with a shared-memory
tree. Under the CUDA simulator every thread is a Python thread, so launches there use few, small
blocks; each kernel loops over its work, so the result does not depend on the launch shape.

>>> launch_shape(1000)[1] >= 1
True
"""
from __future__ import annotations

import math
import re
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

cuda: Any = None   # numba.cuda, imported on first use

from netjit.compiler.codegen import expr as ex
from netjit.compiler.codegen.elementwise import compute_dtype, loop_form
from netjit.compiler.codegen.loops import collapse
from netjit.compiler.ir import Node, Value
from netjit.runtime import device as dev

SIM = dev.simulator_enabled()
BLOCK = 32 if SIM else 256          # threads per block of elementwise kernels
MAX_BLOCKS = 1 if SIM else 65535    # grid-stride loops cover the rest
RED = 8 if SIM else 128             # threads per block of reductions (a power of two)


@dataclass
class Launch:
    """One kernel launch of a step, as explain() lists it."""
    name: str
    backend: str
    grid: tuple[int, ...]
    block: tuple[int, ...]


@dataclass
class CudaKernel:
    """A compiled node: ``run(inputs, outputs)`` launches on device arrays (outputs preallocated)."""
    run: Callable[[list[Any], list[Any]], None]
    description: str
    launches: list[Launch] = field(default_factory=list)
    source: str | None = None


def launch_shape(n: int) -> tuple[int, int]:
    """(blocks, threads) for a grid-stride loop over ``n`` items."""
    threads = BLOCK if n >= BLOCK else max(1, n)
    return max(1, min(MAX_BLOCKS, -(-n // threads))), threads


_FLAT: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def flat(a: Any) -> Any:
    """A 1-D view of a contiguous device array (0-d arrays become 1 element). Views are cached per
    array: a device array's reshape costs tens of microseconds, paid once per buffer, not per launch."""
    if len(a.shape) == 1:
        return a
    try:
        view = _FLAT.get(a)
    except TypeError:       # not weakly referenceable: no cache
        return a.reshape((max(1, int(np.prod(a.shape))),))
    if view is None:
        view = _FLAT[a] = a.reshape((max(1, int(np.prod(a.shape))),))
    return view


_KERNELS: dict[str, Any] = {}


_DEVICE_FNS: dict[str, Any] = {}


def _device_functions() -> dict[str, Any]:
    """The helpers generated kernels call, made once: a fresh device dispatcher per kernel would
    be compiled again for each (seconds over a test run on a GPU)."""
    if not _DEVICE_FNS:
        _DEVICE_FNS.update(_make_device_functions())
    return _DEVICE_FNS


def _make_device_functions() -> dict[str, Any]:
    @cuda.jit(device=True, inline=True)
    def sigmoid(x):
        # Either branch's exp has a non-positive argument: no overflow for any finite x.
        if x >= 0:
            return 1 / (1 + math.exp(-x))
        e = math.exp(x)
        return e / (1 + e)
    # The CPU renderer names float32 approximations; on the GPU the native functions are fast.
    fns = (np.exp, np.log, np.tanh) if SIM else (math.exp, math.log, math.tanh)
    return {"exp_f32": fns[0], "log_f32": fns[1], "tanh_f32": fns[2], "sigmoid_f32": sigmoid,
            "sigmoid_f64": sigmoid}


def compile_source(source: str, name: str = "kernel") -> Any:
    """``cuda.jit`` of generated source (cached by text)."""
    fn = _KERNELS.get(source)
    if fn is None:
        reduce_kernels()   # sets the module's ``cuda``
        env: dict[str, Any] = {"np": np, "math": math, "cuda": cuda, "inf": math.inf, "nan": math.nan,
                               **_device_functions()}   # literals render inf/nan by name
        exec(compile(source, f"<netjit-cuda {name}>", "exec"), env)  # noqa: S102 - our own generated code
        fn = _KERNELS[source] = cuda.jit(env[name])
    return fn


_NP_MATH = re.compile(r"\bnp\.(sqrt|floor|ceil|exp|log|tanh)\(")


def _gpu_math(src: str) -> str:
    # The simulator runs kernels as Python: numpy's functions give the GPU's nan/inf where Python's
    # math module would raise (log of a negative, exp overflow).
    return src if SIM else _NP_MATH.sub(lambda m: f"math.{m.group(1)}(", src)


def _cast(dtype: np.dtype) -> str:
    return "np.bool_" if dtype == np.bool_ else f"np.{dtype.name}"


def render_elementwise(members: tuple[Node, ...], outputs: tuple[str, ...], shape: tuple[int, ...],
                       values: Mapping[str, Value]) -> tuple[str, list[str]] | None:
    """(kernel source, input value names in parameter order) for an elementwise group, or None
    when a member has no per-element form."""
    produced = {o for m in members for o in m.outputs}
    operands: list[tuple[str, tuple[int, ...]]] = []
    steps = []
    for m in members:
        form = loop_form(m, values)
        if form is None:
            return None
        refs = []
        for name, view in zip(m.inputs, form.views):
            if name in produced:
                refs.append(("tmp", name))
            else:
                if (name, tuple(view)) not in operands:
                    operands.append((name, tuple(view)))
                refs.append(("op", operands.index((name, tuple(view)))))
        steps.append((m.outputs[0], form.expr, refs, form.args, values[m.outputs[0]].dtype,
                      compute_dtype(m, values)))
    patterns = [tuple(v == d and d != 1 for v, d in zip(view, shape)) if len(view) == len(shape)
                else tuple(False for _ in shape) for _, view in operands]
    dims, cpats = collapse(tuple(shape), patterns)
    total = math.prod(dims)
    rank = len(dims)
    names = [f"a{k}" for k in range(len(operands))] + [f"o{j}" for j in range(len(outputs))]
    lines = [f"def kernel({', '.join(names)}):",
             "    i = cuda.grid(1)",
             "    step = cuda.gridsize(1)",
             f"    while i < {total}:"]
    ind = "        "
    full = [all(p) and len(p) == rank for p in cpats]
    if not all(full):
        lines.append(f"{ind}r = i")
        for j in range(rank - 1, -1, -1):
            if j:
                lines += [f"{ind}i{j} = r % {dims[j]}", f"{ind}r = r // {dims[j]}"]
            else:
                lines.append(f"{ind}i0 = r")
    for k, pat in enumerate(cpats):
        if full[k]:
            idx = "i"
        else:
            terms = []
            for j in range(rank):
                if pat[j]:
                    stride = math.prod(dims[l] for l in range(j + 1, rank) if pat[l])
                    terms.append(f"i{j} * {stride}" if stride != 1 else f"i{j}")
            idx = " + ".join(terms) or "0"
        lines.append(f"{ind}x{k} = a{k}[{idx}]")
    tmp_of: dict[str, str] = {}
    for s, (out, src, refs, args, odt, cdt) in enumerate(steps):
        ops = [f"x{r}" if kind == "op" else tmp_of[r] for kind, r in refs]
        arg_src = {n: ex.literal(v, cdt) for n, v in args.items()}
        rendered = _gpu_math(ex.render(src, ops, arg_src, cdt))
        tmp_of[out] = f"t{s}"
        lines.append(f"{ind}t{s} = {_cast(odt)}({rendered})")
    for j, o in enumerate(outputs):
        lines.append(f"{ind}o{j}[i] = {tmp_of[o]}")
    lines.append(f"{ind}i += step")
    return "\n".join(lines) + "\n", [v for v, _ in operands]


def elementwise_kernel(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    """A fused group or a single elementwise node -> one generated kernel."""
    if node.op == "Fused":
        if node.attrs.get("kind") != "elementwise":
            return None
        members, shape = node.attrs["nodes"], tuple(node.attrs["shape"])
    else:
        if len(node.outputs) != 1 or loop_form(node, values) is None:
            return None
        members, shape = (node,), tuple(values[node.outputs[0]].shape)
    if any(values[o].dtype == np.dtype(object) for o in node.outputs):
        return None
    made = render_elementwise(members, tuple(node.outputs), shape, values)
    if made is None:
        return None
    source, operand_values = made
    fn = compile_source(source)
    order = [node.inputs.index(v) for v in operand_values]
    total = max(1, math.prod(shape))
    blocks, threads = launch_shape(total)

    launch = fn[blocks, threads]    # configured once: a launch is then one call

    def run(ins: list[Any], outs: list[Any]) -> None:
        launch(*[flat(ins[k]) for k in order], *[flat(o) for o in outs])
    desc = "+".join(m.op for m in members)
    return CudaKernel(run, desc, [Launch(desc, "numba-cuda", (blocks,), (threads,))], source)


# ---------------------------------------------------------------------------------------------
# Reductions (hand-written; compiled once per process)
# ---------------------------------------------------------------------------------------------
_REDUCE: dict[str, Any] = {}


def reduce_kernels() -> dict[str, Any]:
    """The reduction kernels, built on first use (numba.cuda is imported lazily)."""
    if _REDUCE:
        return _REDUCE
    global cuda   # a module global: the simulator swaps it for its fake module inside kernels
    from numba import cuda, float32

    @cuda.jit(device=True, inline=True)
    def block_sum(sm, tid):
        s = RED // 2
        while s > 0:
            cuda.syncthreads()
            if tid < s:
                sm[tid] += sm[tid + s]
            s //= 2
        cuda.syncthreads()
        return sm[0]

    @cuda.jit(device=True, inline=True)
    def block_max(sm, tid):
        s = RED // 2
        while s > 0:
            cuda.syncthreads()
            if tid < s:
                sm[tid] = max(sm[tid], sm[tid + s])
            s //= 2
        cuda.syncthreads()
        return sm[0]

    @cuda.jit
    def softmax_rows(x, y, rows, d):
        # One block per row (grid-stride over rows): max, sum of exp, then normalise.
        sm = cuda.shared.array(RED, float32)
        tid = cuda.threadIdx.x
        row = cuda.blockIdx.x
        while row < rows:
            base = row * d
            m = float32(-3.4028234663852886e38)
            j = tid
            while j < d:
                m = max(m, x[base + j])
                j += RED
            sm[tid] = m
            m = block_max(sm, tid)
            cuda.syncthreads()
            acc = float32(0)
            j = tid
            while j < d:
                e = math.exp(x[base + j] - m)
                y[base + j] = e
                acc += e
                j += RED
            sm[tid] = acc
            total = block_sum(sm, tid)
            j = tid
            while j < d:
                y[base + j] = y[base + j] / total
                j += RED
            cuda.syncthreads()
            row += cuda.gridDim.x

    @cuda.jit
    def softmax_grad_rows(y, dy, dx, rows, d):
        sm = cuda.shared.array(RED, float32)
        tid = cuda.threadIdx.x
        row = cuda.blockIdx.x
        while row < rows:
            base = row * d
            acc = float32(0)
            j = tid
            while j < d:
                acc += y[base + j] * dy[base + j]
                j += RED
            sm[tid] = acc
            dot = block_sum(sm, tid)
            j = tid
            while j < d:
                dx[base + j] = y[base + j] * (dy[base + j] - dot)
                j += RED
            cuda.syncthreads()
            row += cuda.gridDim.x

    @cuda.jit
    def sum_scaled(x, out, n, scale):
        # One block: out[0] = scale * sum(x) (AveragedLoss, the softmax loss).
        sm = cuda.shared.array(RED, float32)
        tid = cuda.threadIdx.x
        acc = float32(0)
        j = tid
        while j < n:
            acc += x[j]
            j += RED
        sm[tid] = acc
        total = block_sum(sm, tid)
        if tid == 0:
            out[0] = total * scale

    @cuda.jit
    def channel_sums(x, out, n, c, p):
        # out[ch] = sum over (batch, position) of x[N, C, P]: one block per channel.
        sm = cuda.shared.array(RED, float32)
        tid = cuda.threadIdx.x
        ch = cuda.blockIdx.x
        while ch < c:
            acc = float32(0)
            j = tid
            while j < n * p:
                b = j // p
                acc += x[(b * c + ch) * p + j - b * p]
                j += RED
            sm[tid] = acc
            total = block_sum(sm, tid)
            if tid == 0:
                out[ch] = total
            cuda.syncthreads()
            ch += cuda.gridDim.x

    @cuda.jit
    def label_xent(x, label, y, rows, d):
        i = cuda.grid(1)
        while i < rows:
            y[i] = -math.log(max(x[i * d + label[i]], float32(1e-20)))
            i += cuda.gridsize(1)

    @cuda.jit
    def label_xent_grad(x, label, dy, dx, rows, d):
        i = cuda.grid(1)
        while i < rows * d:
            r = i // d
            col = i - r * d
            dx[i] = -dy[r] / max(x[i], float32(1e-20)) if col == label[r] else float32(0)
            i += cuda.gridsize(1)

    @cuda.jit
    def nll_terms(p, label, t, rows, d):
        i = cuda.grid(1)
        while i < rows:
            t[i] = -math.log(max(p[i * d + label[i]], float32(1.1754943508222875e-38)))
            i += cuda.gridsize(1)

    @cuda.jit
    def softmax_loss_grad(p, label, dloss, dx, rows, d, scale):
        i = cuda.grid(1)
        while i < rows * d:
            r = i // d
            hit = float32(1) if i - r * d == label[r] else float32(0)
            dx[i] = (p[i] - hit) * dloss[0] * scale
            i += cuda.gridsize(1)

    @cuda.jit
    def reduce_mid(x, y, outer, r, inner, scale):
        # x seen as [outer, r, inner]: y[o, i] = scale * sum over j of x[o, j, i]; one block per output.
        sm = cuda.shared.array(RED, float32)
        tid = cuda.threadIdx.x
        q = cuda.blockIdx.x
        while q < outer * inner:
            o = q // inner
            i = q - o * inner
            acc = float32(0)
            j = tid
            while j < r:
                acc += x[(o * r + j) * inner + i]
                j += RED
            sm[tid] = acc
            total = block_sum(sm, tid)
            if tid == 0:
                y[q] = total * scale
            cuda.syncthreads()
            q += cuda.gridDim.x

    @cuda.jit
    def spread_mid(dy, dx, total, r, inner, scale):
        # The adjoint of reduce_mid: dx[o, j, i] = scale * dy[o, i].
        t = cuda.grid(1)
        while t < total:
            i = t % inner
            o = t // (r * inner)
            dx[t] = dy[o * inner + i] * scale
            t += cuda.gridsize(1)

    _REDUCE.update(reduce_mid=reduce_mid, spread_mid=spread_mid)
    _REDUCE.update(block_sum=block_sum, block_max=block_max, softmax_rows=softmax_rows,
                   softmax_grad_rows=softmax_grad_rows, sum_scaled=sum_scaled,
                   channel_sums=channel_sums, label_xent=label_xent, label_xent_grad=label_xent_grad,
                   nll_terms=nll_terms, softmax_loss_grad=softmax_loss_grad)
    return _REDUCE


def row_blocks(rows: int) -> int:
    return max(1, min(rows, 4 if SIM else 65535))
