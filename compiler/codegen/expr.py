"""Scalar expression templates (the registry's ``expr``) -> numba source.

A template is Python syntax over the op's inputs ``x0, x1, ...``, its numeric args by name,
numeric literals, arithmetic and comparison operators, ``a if c else b``, and the functions
exp, log, tanh, sigmoid, sqrt, abs, max, min, floor, ceil. Rendering substitutes operand and arg
variables, gives literals the computation's dtype (so float32 math stays float32, as numpy's does)
and maps exp/log/tanh/sigmoid to the vectorisable approximations for float32.

>>> render("x1 if x0 > 0 else 0", ["a", "b"], {}, np.dtype("float32"))
'(b if (a > np.float32(0.0)) else np.float32(0.0))'
>>> render("sigmoid(x0)", ["a"], {}, np.dtype("float64"))
'sigmoid_f64(a)'
"""
from __future__ import annotations

import ast
import functools
import re
from typing import Mapping

import numpy as np

FUNCTIONS = frozenset({"exp", "log", "tanh", "sigmoid", "sqrt", "abs", "max", "min", "floor", "ceil"})
# Names the approximations module exports for float32 (and sigmoid for float64).
APPROX_F32 = {"exp": "exp_f32", "log": "log_f32", "tanh": "tanh_f32", "sigmoid": "sigmoid_f32"}
_OPERAND = re.compile(r"x(\d+)$")

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.Mod: "%",
           ast.FloorDiv: "//"}
_CMPOPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_UNARY = {ast.USub: "-", ast.UAdd: "+", ast.Not: "not "}


class ExprError(ValueError):
    """A template outside the supported language (the op then runs as a host step)."""


@functools.lru_cache(maxsize=None)
def parse(src: str) -> ast.expr:
    try:
        tree = ast.parse(src.strip(), mode="eval").body
    except SyntaxError as err:
        raise ExprError(f"expr {src!r} is not a Python expression: {err}") from None
    _check(tree, src)
    return tree


def _check(node: ast.AST, src: str) -> None:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            if not isinstance(sub.func, ast.Name) or sub.func.id not in FUNCTIONS or sub.keywords:
                raise ExprError(f"expr {src!r}: only calls of {sorted(FUNCTIONS)} are allowed")
        elif isinstance(sub, ast.Constant):
            if not isinstance(sub.value, (int, float, bool)):
                raise ExprError(f"expr {src!r}: literal {sub.value!r} is not a number")
        elif isinstance(sub, ast.BinOp) and type(sub.op) not in _BINOPS:
            raise ExprError(f"expr {src!r}: operator {type(sub.op).__name__} is not supported")
        elif isinstance(sub, ast.Compare) and any(type(o) not in _CMPOPS for o in sub.ops):
            raise ExprError(f"expr {src!r}: comparison not supported")
        elif isinstance(sub, ast.UnaryOp) and type(sub.op) not in _UNARY:
            raise ExprError(f"expr {src!r}: unary operator not supported")
        elif not isinstance(sub, (ast.Call, ast.Constant, ast.BinOp, ast.Compare, ast.UnaryOp, ast.Name,
                                  ast.IfExp, ast.BoolOp, ast.Load, ast.And, ast.Or, *_BINOPS, *_CMPOPS,
                                  *_UNARY)):
            raise ExprError(f"expr {src!r}: {type(sub).__name__} is not part of the template language")


@functools.lru_cache(maxsize=None)
def used_names(src: str) -> tuple[int, frozenset[str], frozenset[str]]:
    """(number of operands referenced, arg names, functions called)."""
    tree = parse(src)
    n, args, funcs = 0, set(), set()
    callee_ids = {id(c.func) for c in ast.walk(tree) if isinstance(c, ast.Call)}
    for sub in ast.walk(tree):
        if isinstance(sub, ast.Name) and id(sub) not in callee_ids:
            m = _OPERAND.match(sub.id)
            if m:
                n = max(n, int(m.group(1)) + 1)
            else:
                args.add(sub.id)
        elif isinstance(sub, ast.Call):
            funcs.add(sub.func.id)
    return n, frozenset(args), frozenset(funcs)


# Rough cost of one call per element, in units of one arithmetic instruction, for the loop's
# threading decision (codegen/loops.py): the float32 approximations are ~20 vector instructions.
CALL_COST = {"exp": 8, "log": 8, "tanh": 8, "sigmoid": 8, "sqrt": 2}


@functools.lru_cache(maxsize=None)
def cost(src: str) -> int:
    """Per-element work of a template, about one unit per operator (``CALL_COST`` for calls).

    >>> cost("sigmoid(x0) * x1")
    9
    """
    total = 0
    for sub in ast.walk(parse(src)):
        if isinstance(sub, ast.Call):
            total += CALL_COST.get(sub.func.id, 1)
        elif isinstance(sub, (ast.BinOp, ast.Compare, ast.IfExp, ast.UnaryOp, ast.BoolOp)):
            total += 1
    return max(1, total)


def has_division(src: str) -> bool:
    return any(isinstance(s, ast.BinOp) and isinstance(s.op, (ast.Div, ast.Pow, ast.Mod, ast.FloorDiv))
               for s in ast.walk(parse(src)))


def literal(value: float | int | bool, dtype: np.dtype | None) -> str:
    if isinstance(value, bool) or dtype is None or dtype.kind == "b":
        return repr(value)
    if dtype.kind == "f":
        return f"np.{dtype.name}({float(value)!r})"
    return f"np.{dtype.name}({value!r})"   # integer math: literals in the computation's dtype


def render(src: str, operands: list[str], args: Mapping[str, str], dtype: np.dtype | None) -> str:
    """Numba source for template ``src``: operand i -> ``operands[i]``, arg -> ``args[name]``;
    ``dtype`` types the literals and picks float32 approximations."""
    def go(node: ast.expr) -> str:
        if isinstance(node, ast.Name):
            m = _OPERAND.match(node.id)
            if m:
                i = int(m.group(1))
                if i >= len(operands):
                    raise ExprError(f"expr {src!r} reads x{i} but the op has {len(operands)} input(s)")
                return operands[i]
            if node.id not in args:
                raise ExprError(f"expr {src!r} uses {node.id!r}, which is not a numeric argument")
            return args[node.id]
        if isinstance(node, ast.Constant):
            return literal(node.value, dtype)
        if isinstance(node, ast.BinOp):
            right = node.right
            if (isinstance(node.op, ast.Pow) and isinstance(right, ast.Constant)
                    and float(right.value).is_integer() and abs(right.value) <= 16):
                return f"({go(node.left)} ** {int(right.value)})"   # integer powers become multiplies
            return f"({go(node.left)} {_BINOPS[type(node.op)]} {go(right)})"
        if isinstance(node, ast.UnaryOp):
            return f"({_UNARY[type(node.op)]}{go(node.operand)})"
        if isinstance(node, ast.Compare):
            parts = [go(node.left)]
            for op, comp in zip(node.ops, node.comparators):
                parts += [_CMPOPS[type(op)], go(comp)]
            return "(" + " ".join(parts) + ")"
        if isinstance(node, ast.BoolOp):
            word = " and " if isinstance(node.op, ast.And) else " or "
            return "(" + word.join(go(v) for v in node.values) + ")"
        if isinstance(node, ast.IfExp):
            return f"({go(node.body)} if {go(node.test)} else {go(node.orelse)})"
        if isinstance(node, ast.Call):
            fn, xs = node.func.id, [go(a) for a in node.args]
            return _call(fn, xs, dtype, src)
        raise ExprError(f"expr {src!r}: cannot render {type(node).__name__}")
    return go(parse(src))


def _call(fn: str, xs: list[str], dtype: np.dtype | None, src: str) -> str:
    if fn in ("max", "min"):
        if len(xs) < 2:
            raise ExprError(f"expr {src!r}: {fn} needs at least two arguments")
        return f"{fn}({', '.join(xs)})"
    if len(xs) != 1:
        raise ExprError(f"expr {src!r}: {fn} takes one argument")
    x = xs[0]
    if fn == "abs":
        return f"abs({x})"
    if fn in ("sqrt", "floor", "ceil"):
        return f"np.{fn}({x})"
    if dtype is not None and dtype == np.float32:
        return f"{APPROX_F32[fn]}({x})"
    if fn == "sigmoid":
        return f"sigmoid_f64({x})"
    return f"np.{fn}({x})"
