"""An independent interpreter of registry ``expr`` templates, for tests: walks the expression's AST
element by element (Python floats/ints), allowing only the grammar DESIGN.md promises the
compiler (x0.., named numeric args, literals, + - * / **, comparisons, ``a if c else b`` and
exp/log/tanh/sigmoid/sqrt/abs/max/min/floor/ceil), and compares it with the op's reference."""
from __future__ import annotations

import ast
import math
from typing import Any, Sequence

import numpy as np

from netjit.compiler.ops.broadcasting import broadcast_views
from netjit.compiler.ops.registry import BROADCAST, lookup
from netjit.proto.args import make_op
from tests.ops.harness import run_op


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


def _safe(fn):
    def call(*a):
        try:
            return fn(*a)
        except OverflowError:
            return math.inf
        except (ValueError, ZeroDivisionError):
            # log(0) / log(<0) / sqrt(<0) are values in C, not exceptions.
            return -math.inf if fn is math.log and a[0] == 0 else math.nan
    return call


FUNCS = {"exp": _safe(math.exp), "log": _safe(math.log), "tanh": math.tanh, "sigmoid": _safe(_sigmoid),
         "sqrt": _safe(math.sqrt), "abs": abs, "max": max, "min": min, "floor": math.floor, "ceil": math.ceil}
_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: _div(a, b), ast.Pow: lambda a, b: a ** b}
_CMPS = {ast.Lt: lambda a, b: a < b, ast.Gt: lambda a, b: a > b, ast.LtE: lambda a, b: a <= b,
         ast.GtE: lambda a, b: a >= b, ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b}


def _div(a: float, b: float) -> float:
    if b == 0:
        return math.nan if a == 0 or a != a else math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def evaluate(expr: str, env: dict[str, Any]) -> Any:
    """Evaluate ``expr`` for one element; ``env`` maps x0.. and arg names to Python numbers."""
    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise AssertionError(f"expr {expr!r} names {node.id!r}, which is neither an input nor an arg")
            return env[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = walk(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMPS:
            return _CMPS[type(node.ops[0])](walk(node.left), walk(node.comparators[0]))
        if isinstance(node, ast.IfExp):
            return walk(node.body) if walk(node.test) else walk(node.orelse)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCS
                and not node.keywords):
            return FUNCS[node.func.id](*[walk(a) for a in node.args])
        raise AssertionError(f"expr {expr!r} uses {ast.dump(node)}, outside the expr grammar")
    return walk(ast.parse(expr, mode="eval"))


def check_expr(op_type: str, inputs: Sequence[np.ndarray], rtol: float = 1e-5, atol: float = 1e-6,
               **args: Any) -> np.ndarray:
    """Assert the op's ``expr`` evaluated per element equals its reference output."""
    opdef = lookup(op_type)
    assert opdef.expr, f"{op_type} has no expr"
    (ref,) = run_op(op_type, inputs, **args)
    ref = np.asarray(ref)
    arrays = [np.asarray(x) for x in inputs]
    decoded = opdef.decode_args(make_op(op_type, [f"i{k}" for k in range(len(inputs))], ["o"], **args))
    if opdef.category == BROADCAST and len(arrays) == 2:
        views = broadcast_views(decoded, arrays[0].shape, arrays[1].shape)
        arrays = [np.broadcast_to(arrays[0].reshape(views.a_view), views.out_shape),
                  np.broadcast_to(arrays[1].reshape(views.b_view), views.out_shape)]
    env_args = {k: v for k, v in decoded.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    got = np.empty(ref.shape, np.float64 if ref.dtype.kind == "f" else object)
    for idx in np.ndindex(ref.shape):
        env = dict(env_args)
        for k, x in enumerate(arrays):
            env[f"x{k}"] = x[idx].item()
        got[idx] = evaluate(opdef.expr, env)
    if ref.dtype.kind == "f":
        np.testing.assert_allclose(got, ref.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True,
                                   err_msg=f"{op_type}: expr {opdef.expr!r} disagrees with the reference")
    else:
        np.testing.assert_array_equal(got.astype(ref.dtype), ref,
                                      err_msg=f"{op_type}: expr {opdef.expr!r} disagrees with the reference")
    return ref
