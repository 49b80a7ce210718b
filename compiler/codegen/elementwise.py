"""What the numba-cpu backend can compute per element: which nodes, with which expression, and how
each input maps onto the node's output shape (broadcast views).

A node is loop-compatible when it is ELEMWISE/BROADCAST, has one typed output of a kernel dtype,
an expression (the registry's ``expr``, or one of the few built here for ops whose expression
depends on their arity or mode), numeric args for every name the expression uses, and inputs whose
broadcast views fit the output shape.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from netjit.compiler.codegen import expr as ex
from netjit.compiler.ir import Node, Value
from netjit.compiler.ops.broadcasting import BroadcastError, broadcast_views
from netjit.compiler.ops.registry import BROADCAST, ELEMWISE, lookup

KERNEL_DTYPES = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
                                                np.uint8, np.uint16, np.uint32, np.uint64, np.bool_))


def _sum_expr(node: Node) -> str:
    return " + ".join(f"x{i}" for i in range(len(node.inputs)))


def _pow_expr(node: Node) -> str:
    return "x0 ** x1" if len(node.inputs) == 2 else "x0 ** exponent"


# Expressions for elementwise ops whose registry record has none because the template depends on
# the op's arity or mode (documented on those records).
EXTRA_EXPRS: dict[str, Callable[[Node], str]] = {"Sum": _sum_expr, "Pow": _pow_expr}


def node_expr(node: Node) -> str | None:
    if node.op in ("Const", "Fused"):
        return None
    opdef = lookup(node.op)
    if opdef.category not in (ELEMWISE, BROADCAST):
        return None
    if opdef.expr:
        return opdef.expr
    maker = EXTRA_EXPRS.get(node.op)
    return maker(node) if maker else None


def compute_dtype(node: Node, values: Mapping[str, Value]) -> np.dtype:
    """The dtype literals take in the expression: the output's if floating, else a float input's,
    else the output's (integer/bool math)."""
    out = values[node.outputs[0]].dtype
    if out.kind == "f":
        return out
    for name in node.inputs:
        dt = values[name].dtype
        if dt is not None and dt.kind == "f":
            return dt
    return out


def expr_args(node: Node, src: str) -> dict[str, float | int] | None:
    """The numeric args the expression names, with their values (None if one is not numeric)."""
    _, names, _ = ex.used_names(src)
    out: dict[str, float | int] = {}
    for name in sorted(names):
        value = node.attrs.get(name) if hasattr(node.attrs, "get") else None
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, float)):
            return None
        out[name] = value
    return out


def input_views(node: Node, values: Mapping[str, Value]) -> list[tuple[int, ...]] | None:
    """Each input's shape laid over the output's rank (1 where it broadcasts), or None."""
    out = tuple(values[node.outputs[0]].shape)
    shapes = [tuple(values[i].shape) for i in node.inputs]
    opdef = lookup(node.op)
    if len(shapes) == 2 and opdef.schema.arg_spec("broadcast") is not None:
        try:
            views = broadcast_views(node.attrs, shapes[0], shapes[1])
        except BroadcastError:
            return None
        if tuple(views.out_shape) != out:
            return None
        cand = [tuple(views.a_view), tuple(views.b_view)]
    else:
        cand = []
        for s in shapes:
            if s == out or (opdef.category == ELEMWISE and math.prod(s) == math.prod(out)):
                cand.append(out)
            elif len(s) <= len(out):
                cand.append((1,) * (len(out) - len(s)) + s)
            else:
                return None
    for view in cand:
        if len(view) != len(out) or any(v != d and v != 1 for v, d in zip(view, out)):
            return None
    return cand


def loop_ok(node: Node, values: Mapping[str, Value]) -> bool:
    """Can this node be computed inside a generated elementwise loop?"""
    if len(node.outputs) != 1 or not node.inputs:
        return False
    src = node_expr(node)
    if src is None:
        return False
    out = values[node.outputs[0]]
    ins = [values[i] for i in node.inputs]
    if not out.typed or out.dtype not in KERNEL_DTYPES:
        return False
    if any(not v.typed or v.dtype not in KERNEL_DTYPES for v in ins):
        return False
    try:
        n_operands, _, _ = ex.used_names(src)
        dtype = compute_dtype(node, values)
        args = expr_args(node, src)
        if args is None or n_operands > len(ins):
            return False
        ex.render(src, [f"x{i}" for i in range(len(ins))], {k: k for k in args}, dtype)
    except ex.ExprError:
        return False
    if dtype.kind in "iub":
        if ex.has_division(src):
            return False   # C++ integer division/power semantics differ from a float expression
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            # The reference converts args to the input dtype and fails when one does not fit (an
            # infinite Clip bound on ints): leave those to it.
            if any(not (isinstance(v, (int, float)) and math.isfinite(v) and info.min <= v <= info.max)
                   for v in args.values()):
                return False
    return input_views(node, values) is not None
