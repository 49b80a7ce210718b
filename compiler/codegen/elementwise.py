"""What the numba-cpu backend can compute per element: which nodes, with which expression, and how
each input maps onto the node's output shape (broadcast views).

A node is loop-compatible when it is ELEMWISE/BROADCAST, has one typed output of a kernel dtype,
an expression (the record's ``expr``, or its numba-cpu ``Lowering.expr`` for ops whose expression
depends on their arity or mode), numeric args for every name the expression uses, and inputs whose
broadcast views fit the output shape. An op the registry files as OPAQUE fuses too where its record
says how: a ``Lowering.loop`` form (WeightedSum) or a ``per_channel`` entry (SpatialBN in test mode).

The ``sum_expr``/``pow_expr``/``*_loop`` functions here are what those records name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from netjit.compiler.codegen import expr as ex
from netjit.compiler.ir import Node, Value
from netjit.compiler.ops.broadcasting import BroadcastError, broadcast_views
from netjit.compiler.ops.per_channel import channel_view, per_channel_info
from netjit.compiler.ops.registry import BROADCAST, ELEMWISE, lookup

KERNEL_DTYPES = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
                                                np.uint8, np.uint16, np.uint32, np.uint64, np.bool_))


BACKEND = "numba-cpu"


def sum_expr(node: Node) -> str:
    """Sum's expression for its arity: ``x0 + x1 + ...``."""
    return " + ".join(f"x{i}" for i in range(len(node.inputs)))


def pow_expr(node: Node) -> str:
    """Pow's expression: the exponent from the second input, else the ``exponent`` argument."""
    return "x0 ** x1" if len(node.inputs) == 2 else "x0 ** exponent"


def node_expr(node: Node) -> str | None:
    """The expression of an ELEMWISE/BROADCAST node: its record's ``expr``, else the one its
    numba-cpu lowering builds for this instance (Sum, Pow)."""
    if node.op in ("Const", "Fused"):
        return None
    opdef = lookup(node.op)
    if opdef.category not in (ELEMWISE, BROADCAST):
        return None
    if opdef.expr:
        return opdef.expr
    maker = opdef.lowering_entry(BACKEND, "expr")
    return maker(node) if maker else None


@dataclass(frozen=True)
class LoopForm:
    """How one node is computed per element: its expression, each input's broadcast view over
    the output shape, and the numeric args the expression names (declared or derived)."""
    expr: str
    views: list[tuple[int, ...]]
    args: dict[str, float | int]


def _flat_or_scalar(values: Mapping[str, Value], names: tuple[str, ...], out: tuple[int, ...],
                    scalar: set[int]) -> list[tuple[int, ...]] | None:
    views = []
    for i, name in enumerate(names):
        size = values[name].size
        if i in scalar:
            if size != 1:
                return None
            views.append((1,) * len(out))
        elif size == math.prod(out):
            views.append(out)
        else:
            return None
    return views


def weighted_sum_loop(node: Node, values: Mapping[str, Value]) -> LoopForm | None:
    # Y = X0*w0 + X1*w1 + ..., each product rounded, then summed left to right (the reference's
    # accumulation into zeros gives the same roundings).
    n = len(node.inputs)
    if n % 2 or len({values[i].dtype for i in node.inputs}) != 1:
        return None
    out = tuple(values[node.outputs[0]].shape)
    views = _flat_or_scalar(values, node.inputs, out, set(range(1, n, 2)))
    if views is None or math.prod(out) == 0:
        return None
    return LoopForm(" + ".join(f"x{i} * x{i + 1}" for i in range(0, n, 2)), views, {})


def averaged_loss_gradient_loop(node: Node, values: Mapping[str, Value]) -> LoopForm | None:
    x, dl = (values[i] for i in node.inputs)
    out = tuple(values[node.outputs[0]].shape)
    views = _flat_or_scalar(values, node.inputs, out, {1})
    if views is None or x.dtype != values[node.outputs[0]].dtype or x.dtype.kind != "f":
        return None
    return LoopForm("x1 / numel", views, {"numel": x.size})


def _per_channel(node: Node, values: Mapping[str, Value]) -> LoopForm | None:
    info = per_channel_info(node.op, node.attrs)
    if info is None:
        return None
    x = values[node.inputs[0]]
    out = tuple(values[node.outputs[0]].shape)
    if tuple(x.shape) != out or any(values[i].dtype != x.dtype for i in node.inputs):
        return None
    order = node.attrs.get("order", "NCHW") or "NCHW"
    views = []
    for i, name in enumerate(node.inputs):
        if i == 0:
            views.append(out)
        elif i in info.channel_inputs:
            try:
                view = channel_view(order, out, values[name].size)
            except ValueError:
                return None
            if math.prod(view) != values[name].size:
                return None
            views.append(view)
        else:
            return None
    args = expr_args(node, info.expr)
    return LoopForm(info.expr, views, args) if args is not None else None


def loop_form(node: Node, values: Mapping[str, Value]) -> LoopForm | None:
    """The per-element form of a node, or None when it cannot be computed in a loop."""
    if node.op in ("Const", "Fused") or len(node.outputs) != 1 or not node.inputs:
        return None
    if any(not values[v].typed for v in (*node.inputs, *node.outputs)):
        return None
    override = lookup(node.op).lowering_entry(BACKEND, "loop")
    if override is not None:
        return override(node, values)
    if per_channel_info(node.op, node.attrs) is not None:
        return _per_channel(node, values)
    src = node_expr(node)
    if src is None:
        return None
    views = input_views(node, values)
    args = expr_args(node, src)
    if views is None or args is None:
        return None
    return LoopForm(src, views, args)


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
    form = loop_form(node, values)
    if form is None:
        return False
    out = values[node.outputs[0]]
    if out.dtype not in KERNEL_DTYPES or any(values[i].dtype not in KERNEL_DTYPES for i in node.inputs):
        return False
    try:
        n_operands, _, _ = ex.used_names(form.expr)
        dtype = compute_dtype(node, values)
        if n_operands > len(node.inputs):
            return False
        ex.render(form.expr, [f"x{i}" for i in range(len(node.inputs))], {k: k for k in form.args}, dtype)
    except ex.ExprError:
        return False
    if dtype.kind in "iub":
        if ex.has_division(form.expr):
            return False   # C++ integer division/power semantics differ from a float expression
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            # The reference converts args to the input dtype and fails when one does not fit (an
            # infinite Clip bound on ints): leave those to it.
            if any(not (isinstance(v, (int, float)) and math.isfinite(v) and info.min <= v <= info.max)
                   for v in form.args.values()):
                return False
    return True
