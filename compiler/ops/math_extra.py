"""Elementwise ops from Caffe2 that netjit lacked: Swish, Softsign, Sign, the n-ary Max/Min (and
their gradients), plus the two small utility ops NanCheck and Size.

Max/Min fold left to right with C++'s ``std::max``/``std::min`` rule (``b if a < b else a``), which
is also what Python's and numba's two-argument ``max``/``min`` do, so a NaN in the first operand
wins and a NaN in a later one is skipped, identically in the reference and the compiled loop.

    >>> from netjit.compiler.ops.registry import lookup
    >>> lookup("Swish").expr
    'x0 * sigmoid(x0)'
"""
from __future__ import annotations

from typing import Any

import numpy as np

from netjit.compiler.ops._elementwise import const, infer_float, out, require_float, require_numeric
from netjit.compiler.ops.common import same_as
from netjit.compiler.ops.gradients import GradientContext, simple_gradient
from netjit.compiler.ops.registry import ELEMWISE, INF, OPAQUE, Args, Lowering, TensorType, defop


def _all_float(i_out: int):
    """Inference rule: every input floating-point (as the reference demands); output like input i_out."""
    def infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
        for i, t in enumerate(inputs):
            if np.dtype(t.dtype).kind != "f":
                raise ValueError(f"input {i} must be a floating-point tensor, got dtype {np.dtype(t.dtype)}")
        return [inputs[i_out]]
    return infer


def _stable_sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    one = const(x, 1)
    return np.where(x >= 0, one / (one + e), e / (one + e))


# --------------------------------------------------------------------------------------------
# Swish
# --------------------------------------------------------------------------------------------
@defop("Swish", inputs=1, outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=infer_float,
       expr="x0 * sigmoid(x0)",
       gradient=simple_gradient("SwishGradient", ["I0", "O0", "GO0"], ["GI0"]))
def swish(ctx, x):
    """Y = X·sigmoid(X) (also called SiLU)."""
    x = require_float(ctx, x)
    return out(x * _stable_sigmoid(x), x.dtype)


@defop("SwishGradient", inputs=3, outputs=1, inplace=[(2, 0)], category=ELEMWISE, infer=_all_float(2),
       expr="x2 * (x1 + (1 - x1) * sigmoid(x0))")
def swish_gradient(ctx, x, y, dy):
    """[X, Y, dY] -> dX = dY·(Y + (1 − Y)·sigmoid(X))."""
    x, y, dy = require_float(ctx, x, 0), require_float(ctx, y, 1), require_float(ctx, dy, 2)
    _same_shapes(ctx, [x, y, dy])
    return out(dy * (y + (const(y, 1) - y) * _stable_sigmoid(x)), dy.dtype)


# --------------------------------------------------------------------------------------------
# Softsign
# --------------------------------------------------------------------------------------------
def _softsign_gradient(g: GradientContext) -> tuple[list, list]:
    # The gradient reads X, so Caffe2 refuses an in-place Softsign.
    if g.I(0) == g.O(0):
        raise ValueError(f"Softsign {g.I(0)!r} -> {g.O(0)!r} runs in place, so X is gone and its gradient "
                         f"cannot be computed; write the output to a new blob")
    return [g.make("SoftsignGradient", [g.I(0), g.GO(0)], [g.GI(0)])], [g.GI(0)]


@defop("Softsign", inputs=1, outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=infer_float,
       expr="x0 / (1 + abs(x0))", gradient=_softsign_gradient)
def softsign(ctx, x):
    """Y = X / (1 + |X|)."""
    x = require_float(ctx, x)
    return out(x / (const(x, 1) + np.abs(x)), x.dtype)


@defop("SoftsignGradient", inputs=2, outputs=1, inplace=[(1, 0)], category=ELEMWISE, infer=_all_float(1),
       expr="x1 / ((1 + abs(x0)) * (1 + abs(x0)))")
def softsign_gradient(ctx, x, dy):
    """[X, dY] -> dX = dY / (1 + |X|)²."""
    x, dy = require_float(ctx, x, 0), require_float(ctx, dy, 1)
    _same_shapes(ctx, [x, dy])
    d = const(x, 1) + np.abs(x)
    return out(dy / (d * d), dy.dtype)


# --------------------------------------------------------------------------------------------
# Sign
# --------------------------------------------------------------------------------------------
@defop("Sign", inputs=1, outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=infer_float,
       expr="1 if x0 > 0 else (-1 if x0 < 0 else 0)",
       no_gradient_reason="Sign is piecewise constant; Caffe2 declares that it should not be differentiated")
def sign(ctx, x):
    """Y = 1, -1 or 0 by the sign of X (NaN gives 0, as C++'s ``(0 < x) - (x < 0)``)."""
    x = require_float(ctx, x)
    return out((x > 0).astype(x.dtype) - (x < 0).astype(x.dtype), x.dtype)


# --------------------------------------------------------------------------------------------
# Max / Min over N inputs
# --------------------------------------------------------------------------------------------
def _same_shapes(ctx: Any, xs: list[np.ndarray]) -> None:
    for i, x in enumerate(xs[1:], 1):
        if x.shape != xs[0].shape:
            raise ctx.error(f"input {i} has shape {list(x.shape)} but input 0 has {list(xs[0].shape)}; "
                            f"they must match", blob=ctx.input_name(i))


def _nary_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    first = inputs[0]
    if np.dtype(first.dtype).kind not in "iuf":
        raise ValueError(f"inputs must be numeric (int or float), got {np.dtype(first.dtype)}")
    for i, t in enumerate(inputs[1:], 1):
        if tuple(t.shape) != tuple(first.shape) or np.dtype(t.dtype) != np.dtype(first.dtype):
            raise ValueError(f"input {i} is {np.dtype(t.dtype)} {tuple(t.shape)} but input 0 is "
                             f"{np.dtype(first.dtype)} {tuple(first.shape)}; all inputs must match")
    return [first]


def _nary_inputs(ctx: Any, xs: tuple) -> list[np.ndarray]:
    arrays = [require_numeric(ctx, xs[0], 0)]
    for i, x in enumerate(xs[1:], 1):
        x = np.asarray(x)
        if x.dtype != arrays[0].dtype:
            raise ctx.error(f"input {i} is {x.dtype} but input 0 is {arrays[0].dtype}; all inputs must have "
                            f"the same type", blob=ctx.input_name(i))
        arrays.append(x)
    _same_shapes(ctx, arrays)
    return arrays


def max_expr(node: Any) -> str:
    """The compiled expression of a Max node: Python's max is std::max's rule, left to right."""
    n = len(node.inputs)
    return "x0" if n == 1 else f"max({', '.join(f'x{i}' for i in range(n))})"


def min_expr(node: Any) -> str:
    n = len(node.inputs)
    return "x0" if n == 1 else f"min({', '.join(f'x{i}' for i in range(n))})"


def _select_gradient(grad_type: str):
    def maker(g: GradientContext) -> tuple[list, list]:
        ins = [g.O(0), g.GO(0)] + [g.I(i) for i in range(g.n_inputs)]
        outs = [g.GI(i) for i in range(g.n_inputs)]
        return [g.make(grad_type, ins, outs)], outs
    return maker


@defop("Max", inputs=(1, INF), outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=_nary_infer,
       gradient=_select_gradient("MaxGradient"),
       lowering={"numba-cpu": Lowering(expr="netjit.compiler.ops.math_extra:max_expr")})
def max_(ctx, *xs):
    """Y = elementwise max of X0, X1, ... (equal shapes and types), folded left to right."""
    arrays = _nary_inputs(ctx, xs)
    y = arrays[0].copy()
    for x in arrays[1:]:
        y = np.where(y < x, x, y)
    return out(y, arrays[0].dtype)


@defop("Min", inputs=(1, INF), outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=_nary_infer,
       gradient=_select_gradient("MinGradient"),
       lowering={"numba-cpu": Lowering(expr="netjit.compiler.ops.math_extra:min_expr")})
def min_(ctx, *xs):
    """Y = elementwise min of X0, X1, ..., folded left to right."""
    arrays = _nary_inputs(ctx, xs)
    y = arrays[0].copy()
    for x in arrays[1:]:
        y = np.where(x < y, x, y)
    return out(y, arrays[0].dtype)


def _select_grad_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    return [inputs[1]] * (len(inputs) - 2)


def _select_grad_counts(n_in: int, n_out: int) -> str | None:
    if n_out != n_in - 2:
        return f"takes [Y, dY, X0..Xn-1] and gives one gradient per X: {n_in} inputs need {n_in - 2} outputs"
    return None


def _select_grad(ctx: Any, y: Any, dy: Any, xs: tuple) -> tuple[np.ndarray, ...]:
    y, dy = np.asarray(y), require_float(ctx, dy, 1)
    for i, x in enumerate(xs):
        if np.shape(x) != dy.shape:
            raise ctx.error(f"X{i} has shape {list(np.shape(x))} but dY has {list(dy.shape)}",
                            blob=ctx.input_name(i + 2))
    if y.shape != dy.shape:
        raise ctx.error(f"Y {list(y.shape)} and dY {list(dy.shape)} must have the same shape", blob=ctx.input_name(0))
    zero = dy.dtype.type(0)
    # Every input equal to the result takes the whole gradient (ties all receive it, as in Caffe2).
    return tuple(out(np.where(np.asarray(x) == y, dy, zero), dy.dtype) for x in xs)


@defop("MaxGradient", inputs=(3, INF), outputs=(1, INF), category=OPAQUE, infer=_select_grad_infer,
       check_counts=_select_grad_counts)
def max_gradient(ctx, y, dy, *xs):
    """[Y, dY, X0, ..., Xn-1] -> [dX0, ..., dXn-1]: dXi = dY where Xi == Y, else 0."""
    return _select_grad(ctx, y, dy, xs)


@defop("MinGradient", inputs=(3, INF), outputs=(1, INF), category=OPAQUE, infer=_select_grad_infer,
       check_counts=_select_grad_counts)
def min_gradient(ctx, y, dy, *xs):
    """[Y, dY, X0, ..., Xn-1] -> [dX0, ..., dXn-1]: dXi = dY where Xi == Y, else 0."""
    return _select_grad(ctx, y, dy, xs)


# --------------------------------------------------------------------------------------------
# NanCheck / Size
# --------------------------------------------------------------------------------------------
@defop("NanCheck", inputs=(1, INF), outputs=1, inplace=[(0, 0)], category=OPAQUE, infer=same_as(0),
       gradient=simple_gradient("NanCheck", ["GO0"], ["GI0"]))
def nan_check(ctx, x, *others):
    """Y = X, failing the run when X holds a NaN or an infinity (other inputs are only named in the
    message, as Caffe2 printed them). Its gradient checks dY the same way."""
    x = np.asarray(x)
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x)
        if bad.any():
            first = tuple(int(i) for i in np.unravel_index(int(np.flatnonzero(bad.reshape(-1))[0]), x.shape))
            what = "NaN" if np.isnan(x[first]) else "inf"
            rest = f"; other inputs: {list(ctx.op.input[1:])}" if others else ""
            raise ctx.error(f"Tensor contained NaN or inf: {int(bad.sum())} of {x.size} values are not finite "
                            f"(first: {what} at index {list(first)}){rest}", blob=ctx.input_name(0))
    return x.copy()


def _size_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    return [TensorType((), np.dtype(np.int64))]


@defop("Size", inputs=1, outputs=1, category=OPAQUE, infer=_size_infer,
       no_gradient_reason="Size gives an element count, which has no gradient")
def size(ctx, x):
    """Y = the number of elements of X, as a 0-d int64 tensor."""
    return np.asarray(np.size(x), dtype=np.int64)
