"""Render one fused group (a ``Fused`` node) as the source of one ``@njit`` kernel.

The kernel runs an optional producer (FC's GEMM into a buffer), then one loop nest over the
group's iteration shape that reads every operand once per element, evaluates each member's
expression in order (temporaries stay in registers) and stores each materialised output once.

Shapes are not in the source: the iteration shape is collapsed at plan time (size-1 dims dropped,
adjacent dims merged when every operand is either full or broadcast along both) and the kernel
takes the collapsed sizes as arguments, so one kernel serves every shape with the same rank and
broadcast pattern. Operands are read through flat views with per-dim strides derived from the
sizes; along the innermost dim an operand is either contiguous or constant, which is what lets
LLVM vectorise the loop.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from netjit.compiler.codegen import expr as ex
from netjit.compiler.codegen.elementwise import compute_dtype, loop_form
from netjit.compiler.codegen.parallel import MIN_WORK, PARALLEL
from netjit.compiler.ir import Node, Value

BUFFER = "@P"     # the producer's raw result, read by the loop like an operand


@dataclass(frozen=True)
class ProducerCode:
    """What an OUT_FUSABLE op contributes to a fused kernel (see codegen/dense.py)."""
    inputs: tuple[str, ...]                         # values the pre-loop code reads
    dims: tuple[tuple[str, int], ...]               # named int sizes passed to the kernel
    pre: Callable[[dict[str, str]], list[str]]      # lines computing into the flat buffer names["P"]
    expr: str                                       # the op's value per element, over x0, x1, ...
    operands: tuple[tuple[str, tuple[int, ...]], ...]   # (value or BUFFER, view over the op's shape)
    dtype: np.dtype                                 # the buffer's dtype
    # A host head computes the buffer with numpy before the kernel (the op's reference without its
    # bias: BLAS through numpy), and the kernel receives it as an input named ``raw``.
    host: bool = False
    raw: str = ""
    # The pre-code cuts its work across threads (codegen/parallel.py): the driver pins OpenBLAS.
    threaded: bool = False
    # The loop is as large as a conv's output: it also gets a ``prange`` copy (``_split_outer_loop``).
    # Off for FC, whose outputs are small, so its kernels compile without numba's parallel pass.
    split_epilogue: bool = False


@dataclass(frozen=True)
class Param:
    kind: str            # "dim" | "in" | "out" | "scalar"
    value: Any           # int size, value name, or the scalar


@dataclass
class LoopKernel:
    source: str
    params: list[Param]
    description: str
    full_inputs: set[str] = field(default_factory=set)   # inputs read only at the output's index
    # May cut its work across threads (codegen/parallel.py): the driver pins OpenBLAS for the run.
    threaded: bool = False


# A plain loop (no producer) gets a threaded copy of its nest when its planned work, elements times
# the members' per-element cost (expr.cost), reaches this: the copy is compiled with numba's parallel
# pass (~0.4-1 s more per kernel), which only large tensors repay. At run time the kernel still
# splits only when ``blas.team`` says so (MIN_WORK, OpenBLAS pinned), so one kernel serves small
# shapes serially.
SPLIT_PLAN_WORK = 4 * MIN_WORK
# Rank-1 nests are cut at multiples of 16 elements (a 64-byte cache line of float32), so two
# threads never write the same line.
SPLIT_ALIGN = 16


def _cast(dtype: np.dtype) -> str:
    return "np.bool_" if dtype == np.bool_ else f"np.{dtype.name}"


def collapse(shape: tuple[int, ...], patterns: list[tuple[bool, ...]]) -> tuple[list[int], list[tuple[bool, ...]]]:
    """Drop size-1 dims, merge neighbours where every pattern agrees; at least one dim remains."""
    keep = [j for j, d in enumerate(shape) if d != 1]
    dims = [shape[j] for j in keep]
    pats = [[p[j] for j in keep] for p in patterns]
    j = 0
    while j + 1 < len(dims):
        if all(p[j] == p[j + 1] for p in pats):
            dims[j] *= dims[j + 1]
            del dims[j + 1]
            for p in pats:
                del p[j + 1]
        else:
            j += 1
    if not dims:
        return [1], [(True,) for _ in patterns]
    return dims, [tuple(p) for p in pats]


def render_group(node: Node, values: Mapping[str, Value], head: ProducerCode | None) -> LoopKernel:
    shape = tuple(node.attrs["shape"])
    members: tuple[Node, ...] = node.attrs["nodes"]
    body_members = members[1:] if head is not None else members
    produced = {o for m in members for o in m.outputs}

    # Operands: (value, view) pairs read in the loop, in first-use order.
    operands: list[tuple[str, tuple[int, ...]]] = []

    def operand(value: str, view: tuple[int, ...]) -> int:
        key = (value, tuple(view))
        if key not in operands:
            operands.append(key)
        return operands.index(key)

    # Per member: (output value, expression source, operand refs, args, dtypes)
    steps: list[tuple[str, str, list[tuple[str, Any]], dict[str, Any], np.dtype, np.dtype]] = []
    if head is not None:
        refs = [("op", operand(v, view)) for v, view in head.operands]
        out = members[0].outputs[0]
        steps.append((out, head.expr, refs, {}, values[out].dtype, head.dtype))
    for m in body_members:
        form = loop_form(m, values)
        refs = []
        for name, view in zip(m.inputs, form.views):
            refs.append(("tmp", name) if name in produced else ("op", operand(name, view)))
        steps.append((m.outputs[0], form.expr, refs, form.args, values[m.outputs[0]].dtype,
                      compute_dtype(m, values)))

    patterns = [tuple(v == d and d != 1 for v, d in zip(view, shape)) if len(view) == len(shape)
                else tuple(False for _ in shape) for _, view in operands]
    dims, cpats = collapse(shape, patterns + [tuple(True for _ in shape)])
    out_pat = cpats[-1]
    cpats = cpats[:-1]
    rank = len(dims)

    params: list[Param] = [Param("dim", d) for d in dims]
    head_names: dict[str, str] = {}
    lines: list[str] = []
    compiled_head = head is not None and not head.host
    if compiled_head:
        for name, size in head.dims:
            params.append(Param("dim", size))
            head_names[name] = f"n_{name}"
        for i, v in enumerate(head.inputs):
            params.append(Param("in", v))
            head_names[f"in{i}"] = f"h{i}"
    for k, (v, _) in enumerate(operands):
        if v != BUFFER:
            params.append(Param("in", v))
        elif not compiled_head:
            params.append(Param("in", head.raw))
    for j, o in enumerate(node.outputs):
        params.append(Param("out", o))
    scalars: list[tuple[int, str, Any, np.dtype]] = []
    for s, (_, _, _, args, _, cdt) in enumerate(steps):
        for name, value in sorted(args.items()):
            scalars.append((s, name, value, cdt))
            params.append(Param("scalar", value))

    # Signature and prologue ----------------------------------------------------------------
    names = [f"d{j}" for j in range(rank)]
    names += [head_names[n] for n, _ in head.dims] if compiled_head else []
    names += [f"h{i}" for i in range(len(head.inputs))] if compiled_head else []
    names += [f"a{k}" for k, (v, _) in enumerate(operands) if v != BUFFER or not compiled_head]
    names += [f"o{j}" for j in range(len(node.outputs))]
    names += [f"s{s}_{n}" for s, n, _, _ in scalars]
    lines.append(f"def kernel({', '.join(names)}):")
    for s, n, value, cdt in scalars:
        # Args take the computation's dtype, as the references' ``const(x, value)`` does.
        conv = _cast(cdt)
        lines.append(f"    c{s}_{n} = {conv}(s{s}_{n})")
    for j in range(len(node.outputs)):
        lines.append(f"    g{j} = o{j}.reshape(-1)")
    if compiled_head:
        # The producer writes its raw result into an output of the same dtype when there is one
        # (the loop then overwrites it element by element), else into a scratch buffer.
        out_of = {o: j for j, o in enumerate(node.outputs)}
        first = members[0].outputs[0]
        target = out_of.get(first)
        if target is None:
            target = next((j for j, o in enumerate(node.outputs) if values[o].dtype == head.dtype), None)
        if target is not None:
            lines.append(f"    pbuf = g{target}")
        else:
            size = " * ".join(f"d{j}" for j in range(rank))
            lines.append(f"    pbuf = np.empty({size}, {_cast(head.dtype)})")
        head_names["P"] = "pbuf"
        lines += ["    " + ln for ln in head.pre(head_names)]
    for k, (v, _) in enumerate(operands):
        lines.append(f"    f{k} = pbuf" if v == BUFFER and compiled_head else f"    f{k} = a{k}.reshape(-1)")

    # Strides (in elements) of each operand along each collapsed dim ------------------------
    def stride(pat: tuple[bool, ...], j: int) -> str:
        if not pat[j]:
            return "0"
        later = [f"d{l}" for l in range(j + 1, rank) if pat[l]]
        return " * ".join(later) if later else "1"

    all_pats = list(cpats) + [out_pat]
    for k, pat in enumerate(all_pats):
        for j in range(rank - 1):
            if pat[j]:
                lines.append(f"    st{k}_{j} = {stride(pat, j)}")

    # Loop nest -------------------------------------------------------------------------------
    indent = "    "
    for j in range(rank):
        lines.append(f"{indent}for i{j} in range(d{j}):")
        indent += "    "
        if j < rank - 1:
            for k, pat in enumerate(all_pats):
                if pat[j]:
                    earlier = [l for l in range(j) if pat[l]]
                    prev = f"b{k}_{earlier[-1]} + " if earlier else ""
                    lines.append(f"{indent}b{k}_{j} = {prev}i{j} * st{k}_{j}")

    def index(k: int) -> str:
        # Unsigned: numba then skips its negative-index wraparound test, which blocks vectorisation.
        pat = all_pats[k]
        base = f"b{k}_{max(j for j in range(rank - 1) if pat[j])}" if any(pat[:-1]) else None
        last = f"i{rank - 1}" if pat[-1] else None
        parts = [p for p in (base, last) if p]
        return f"np.uint64({' + '.join(parts)})" if parts else "0"

    # Operands constant along the innermost dim (per-channel vectors, scalars) are read once before
    # it, so their math hoists and the inner loop is a plain stream LLVM vectorises. No output can
    # alias them: a broadcast operand is never computed in place.
    outer = indent[:-4]
    loop_line = len(lines) - 1
    hoisted = [f"{outer}x{k} = f{k}[{index(k)}]" for k in range(len(operands)) if not cpats[k][-1]]
    lines[loop_line:loop_line] = hoisted
    for k in range(len(operands)):
        if cpats[k][-1]:
            lines.append(f"{indent}x{k} = f{k}[{index(k)}]")
    tmp_of: dict[str, str] = {}
    for s, (out, src, refs, args, odt, cdt) in enumerate(steps):
        ops = [f"x{r}" if kind == "op" else tmp_of[r] for kind, r in refs]
        rendered = ex.render(src, ops, {n: f"c{s}_{n}" for n in args}, cdt)
        tmp_of[out] = f"t{s}"
        lines.append(f"{indent}t{s} = {_cast(odt)}({rendered})")
    out_index = index(len(all_pats) - 1)
    for j, o in enumerate(node.outputs):
        lines.append(f"{indent}g{j}[{out_index}] = {tmp_of[o]}")

    split = False
    if compiled_head and PARALLEL and head.split_epilogue:
        lines = _split_outer_loop(lines, rank)
    elif not compiled_head and PARALLEL:
        unit = sum(ex.cost(src) for _, src, _, _, _, _ in steps)
        if unit * math.prod(dims) >= SPLIT_PLAN_WORK:
            lines = _split_plain_loop(lines, rank, unit)
            split = True

    full = {v for (v, _), pat in zip(operands, cpats) if v != BUFFER and all(pat) and len(pat) == len(out_pat)}
    desc = "+".join(m.op for m in members)
    threaded = split or (head is not None and head.threaded)
    return LoopKernel("\n".join(lines) + "\n", params, desc, full, threaded)


_NEST_NAMES = re.compile(r"\b(?:d\d+|f\d+|g\d+|st\d+_\d+|c\d+_[A-Za-z_]\w*|x\d+)\b")
_ASSIGNED = re.compile(r"^\s*(\w+) = ", re.M)


def _free_names(nest: list[str]) -> list[str]:
    """The names a loop nest reads but does not assign (what a copy of it in another function needs)."""
    text = "\n".join(nest)
    return sorted(set(_NEST_NAMES.findall(text)) - set(_ASSIGNED.findall(text)),
                  key=lambda n: (n[0], [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]))


def _split_plain_loop(lines: list[str], rank: int, unit: int) -> list[str]:
    """A large plain loop: when ``blas.team`` grants threads at run time, ``_split`` (a ``prange``
    copy of the nest, defined after the kernel) runs one contiguous part of the outer dim per thread,
    each part the same vectorised loop as the serial path."""
    start = lines.index("    for i0 in range(d0):")
    nest = lines[start:]
    args = ", ".join(_free_names(nest))
    size = " * ".join(f"d{j}" for j in range(rank))
    align = SPLIT_ALIGN if rank == 1 else 1
    return (lines[:start]
            + [f"    n_t = blas.team({unit} * {size}) if d0 > 1 else 1",
               "    if n_t > 1:", f"        _split(n_t, {args})", "        return"]
            + nest + ["", "", '@njit(parallel=True, cache=True, error_model="numpy", nogil=True)',
                      f"def _split(n_t, {args}):", "    for t in prange(n_t):",
                      f"        lo, hi = blas.part(d0, n_t, t, {align})",
                      "        for i0 in range(lo, hi):"]
            + ["    " + ln for ln in nest[1:]])


def _split_outer_loop(lines: list[str], rank: int) -> list[str]:
    """A conv's epilogue (bias, SpatialBN, Relu, Sum over the whole output) is as large as the
    conv's output: when the run owns the cores (codegen/parallel.py) its outer loop goes to a
    ``prange`` copy of the nest, ``_nest``, defined after the kernel with its own decorator."""
    start = lines.index("    for i0 in range(d0):")
    nest = lines[start:]
    size = " * ".join(f"d{j}" for j in range(rank))
    args = ", ".join(_free_names(nest))
    return (lines[:start]
            + [f"    if d0 > 1 and blas.team(4 * {size}) > 1:", f"        _nest({args})", "        return"]
            + nest + ["", "", '@njit(parallel=True, cache=True, error_model="numpy", nogil=True)',
                      f"def _nest({args}):", "    for i0 in prange(d0):"] + nest[1:])
