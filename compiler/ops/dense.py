"""Fully connected and matrix-product ops."""
from __future__ import annotations

import math

import numpy as np

from netjit.compiler.ops.gradients import GradientContext, simple_gradient
from netjit.compiler.ops.registry import OUT_FUSABLE, Args, Lowering, TensorType, arg, defop


def _fc_dims(x_shape, w_shape, axis: int, axis_w: int) -> tuple[int, int, int]:
    # Caffe2's canonical_axis_index_: an axis outside [-ndim, ndim) is an error, not an empty slice.
    for name, a, shape in (("axis", axis, x_shape), ("axis_w", axis_w, w_shape)):
        if not -len(shape) <= a < len(shape):
            raise ValueError(f"FC: {name} {a} is out of range for a rank-{len(shape)} input")
    axis = axis if axis >= 0 else axis + len(x_shape)
    axis_w = axis_w if axis_w >= 0 else axis_w + len(w_shape)
    m = math.prod(x_shape[:axis])
    k = math.prod(x_shape[axis:])
    n = math.prod(w_shape[:axis_w])
    if math.prod(w_shape[axis_w:]) != k:
        raise ValueError(f"FC: X flattened at axis {axis} has {k} columns but W {tuple(w_shape)} "
                         f"flattened at axis_w {axis_w} has {math.prod(w_shape[axis_w:])}")
    return m, k, n


def _fc_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x, w = inputs[0], inputs[1]
    _, _, n = _fc_dims(x.shape, w.shape, args.axis, args.axis_w)
    axis = args.axis if args.axis >= 0 else args.axis + len(x.shape)
    return [TensorType(tuple(x.shape[:axis]) + (n,), x.dtype)]


FC_ARGS = [arg("axis", "int", 1), arg("axis_w", "int", 1), arg("float16_compute", "bool", False)]


@defop("FC", inputs=3, outputs=1, args=FC_ARGS, category=OUT_FUSABLE, infer=_fc_infer,
       gradient=simple_gradient("FCGradient", ["I0", "I1", "GO0"], ["GI1", "GI2", "GI0"]),
       lowering={"numba-cpu": Lowering(head="netjit.compiler.codegen.dense:fc_head"),
                 "numba-cuda": Lowering(head="netjit.compiler.codegen.cuda_gemm:fc_gemm", standalone="netjit.compiler.codegen.cuda_gemm:fc")})
def fc(ctx, x, w, b):
    """Y = X·Wᵀ + b, with X flattened to 2-D at ``axis`` and W at ``axis_w``."""
    m, k, n = _fc_dims(x.shape, w.shape, ctx.args.axis, ctx.args.axis_w)
    if b.size != n:
        raise ctx.error(f"bias has {b.size} elements but W gives {n} outputs", blob=ctx.input_name(2))
    axis = ctx.args.axis if ctx.args.axis >= 0 else ctx.args.axis + x.ndim
    y = x.reshape(m, k) @ w.reshape(n, k).T + b.reshape(1, n)
    return y.astype(x.dtype, copy=False).reshape(tuple(x.shape[:axis]) + (n,))


def _fc_grad_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x, w, _ = inputs
    _, _, n = _fc_dims(x.shape, w.shape, args.axis, args.axis_w)
    return [w, TensorType((n,), w.dtype), x]


@defop("FCGradient", inputs=3, outputs=(2, 3), args=FC_ARGS, category=OUT_FUSABLE, infer=_fc_grad_infer,
       lowering={"numba-cpu": Lowering(standalone="netjit.compiler.codegen.dense:fc_gradient", threaded=True),
                 "numba-cuda": Lowering(standalone="netjit.compiler.codegen.cuda_gemm:fc_gradient")})
def fc_gradient(ctx, x, w, dy):
    """[X, W, dY] -> [dW, db, dX]."""
    m, k, n = _fc_dims(x.shape, w.shape, ctx.args.axis, ctx.args.axis_w)
    x2, dy2 = x.reshape(m, k), dy.reshape(m, n)
    dw = (dy2.T @ x2).astype(w.dtype, copy=False).reshape(w.shape)
    db = dy2.sum(axis=0).astype(w.dtype, copy=False)
    outs = [dw, db]
    if ctx.num_outputs == 3:
        outs.append((dy2 @ w.reshape(n, k)).astype(x.dtype, copy=False).reshape(x.shape))
    return outs


# --------------------------------------------------------------------------------------------
# MatMul
# --------------------------------------------------------------------------------------------
MATMUL_ARGS = [arg("axis_a", "int", 1), arg("axis_b", "int", 1), arg("trans_a", "bool", False),
               arg("trans_b", "bool", False)]


def _canonical_axis(axis: int, ndim: int, name: str) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name} {axis} is out of range for a rank-{ndim} input")
    return axis + ndim if axis < 0 else axis


def _matmul_dims(a_shape, b_shape, args: Args) -> tuple[tuple[int, int], tuple[int, int], int, int]:
    """A and B as matrices (flattened at axis_a/axis_b), and Y's [M, N] after the trans flags."""
    ca = _canonical_axis(args.axis_a, len(a_shape), "axis_a")
    cb = _canonical_axis(args.axis_b, len(b_shape), "axis_b")
    a2 = (math.prod(a_shape[:ca]), math.prod(a_shape[ca:]))
    b2 = (math.prod(b_shape[:cb]), math.prod(b_shape[cb:]))
    m, k = (a2[1], a2[0]) if args.trans_a else a2
    kb, n = (b2[1], b2[0]) if args.trans_b else b2
    if k != kb:
        raise ValueError(f"A {list(a_shape)} (axis_a={args.axis_a}, trans_a={int(args.trans_a)}) gives {m}x{k} "
                         f"but B {list(b_shape)} (axis_b={args.axis_b}, trans_b={int(args.trans_b)}) gives {kb}x{n}")
    return a2, b2, m, n


def _matmul_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    a, b = inputs[0], inputs[1]
    _, _, m, n = _matmul_dims(a.shape, b.shape, args)
    if len(inputs) == 3:
        if math.prod(inputs[2].shape) != m * n:
            raise ValueError(f"the product has {m * n} elements but input 2 has shape {list(inputs[2].shape)}")
        return [TensorType(tuple(inputs[2].shape), a.dtype)]
    return [TensorType((m, n), a.dtype)]


def _matmul_gradient(g: GradientContext) -> tuple[list, list]:
    # Y = op(A)·op(B); each case's two ops follow Caffe2, with the forward input as the third
    # input so the product is reshaped back to that input's shape.
    ta, tb = bool(g.args.trans_a), bool(g.args.trans_b)
    ax_a, ax_b = g.args.axis_a, g.args.axis_b
    a, b, dy, da, db = g.I(0), g.I(1), g.GO(0), g.GI(0), g.GI(1)
    if ta and tb:      # dA = B'·G', dB = G'·A'
        ops = [g.make("MatMul", [b, dy, a], [da], trans_a=1, trans_b=1, axis_a=ax_b),
               g.make("MatMul", [dy, a, b], [db], trans_a=1, trans_b=1, axis_b=ax_a)]
    elif ta:           # dA = B·G', dB = A·G
        ops = [g.make("MatMul", [b, dy, a], [da], trans_b=1, axis_a=ax_b),
               g.make("MatMul", [a, dy, b], [db], axis_a=ax_a)]
    elif tb:           # dA = G·B, dB = G'·A
        ops = [g.make("MatMul", [dy, b, a], [da], axis_b=ax_b),
               g.make("MatMul", [dy, a, b], [db], trans_a=1, axis_b=ax_a)]
    else:              # dA = G·B', dB = A'·G
        ops = [g.make("MatMul", [dy, b, a], [da], trans_b=1, axis_b=ax_b),
               g.make("MatMul", [a, dy, b], [db], trans_a=1, axis_a=ax_a)]
    return ops, [da, db] + [None] * (g.n_inputs - 2)


@defop("MatMul", inputs=(2, 3), outputs=1, args=MATMUL_ARGS, category=OUT_FUSABLE, infer=_matmul_infer,
       gradient=_matmul_gradient, grad_copy_args=False,
       lowering={"numba-cuda": Lowering(standalone="netjit.compiler.codegen.cuda_gemm:matmul")})
def matmul(ctx, a, b, shape_like=None):
    """Y [M, N] = op(A)·op(B): A flattened to 2-D at axis_a, B at axis_b, op = transpose when
    trans_a/trans_b. A third input only lends Y its shape (the gradient ops use it)."""
    a, b = np.asarray(a), np.asarray(b)
    try:
        a2, b2, m, n = _matmul_dims(a.shape, b.shape, ctx.args)
    except ValueError as err:
        raise ctx.error(str(err), blob=ctx.input_name(1)) from None
    am, bm = a.reshape(a2), b.reshape(b2)
    y = (am.T if ctx.args.trans_a else am) @ (bm.T if ctx.args.trans_b else bm)
    y = y.astype(a.dtype, copy=False)
    if shape_like is not None:
        shape = np.shape(shape_like)
        if math.prod(shape) != m * n:
            raise ctx.error(f"the product has {m * n} elements but input 2 has shape {list(shape)}",
                            blob=ctx.input_name(2))
        y = y.reshape(shape)
    return y


# --------------------------------------------------------------------------------------------
# BatchMatMul
# --------------------------------------------------------------------------------------------
BATCH_MATMUL_ARGS = [arg("trans_a", "bool", False), arg("trans_b", "bool", False),
                     arg("broadcast", "bool", False),
                     arg("use_scratch", "bool", False)]  # a CUDA workspace hint; no effect here


def _batch_matmul_shape(a_shape, b_shape, args: Args) -> tuple[int, ...]:
    """Y's shape. Without ``broadcast`` both inputs have the same rank >= 2 and equal batch dims.
    With it, a 1-D A is [1, K] and a 1-D B is [K, 1] (that dim is dropped from Y, and the trans flag
    of a 1-D input is ignored), and the shorter input's batch dims must equal the longer's trailing
    batch dims (Caffe2 broadcasts by suffix, not by size-1 dims)."""
    na, nb = len(a_shape), len(b_shape)
    if not args.broadcast and (na != nb or na < 2):
        raise ValueError(f"inputs of rank {na} and {nb} need broadcast=1 (without it both must have the same "
                         f"rank >= 2)")
    if na == 1 and nb == 1:
        if a_shape[0] != b_shape[0]:
            raise ValueError(f"a vector-vector product needs equal sizes, got {a_shape[0]} and {b_shape[0]}")
        return (1,)
    a_mat = (1, a_shape[0]) if na == 1 else tuple(a_shape[-2:])
    b_mat = (b_shape[0], 1) if nb == 1 else tuple(b_shape[-2:])
    m, k = (a_mat[1], a_mat[0]) if args.trans_a and na > 1 else a_mat
    kb, n = (b_mat[1], b_mat[0]) if args.trans_b and nb > 1 else b_mat
    if k != kb:
        raise ValueError(f"A {list(a_shape)} (trans_a={int(args.trans_a)}) and B {list(b_shape)} "
                         f"(trans_b={int(args.trans_b)}) have inner dims {k} and {kb}")
    batch_a, batch_b = tuple(a_shape[:-2]), tuple(b_shape[:-2])
    short, long_ = sorted((batch_a, batch_b), key=len)
    if short != long_[len(long_) - len(short):]:
        raise ValueError(f"batch dims {list(batch_a)} of A and {list(batch_b)} of B do not match "
                         f"(one must be a suffix of the other)")
    return long_ + ((m,) if na > 1 else ()) + ((n,) if nb > 1 else ())


def _batch_matmul_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    a, b = inputs
    return [TensorType(_batch_matmul_shape(a.shape, b.shape, args), a.dtype)]


def _batch_matmul_gradient(g: GradientContext) -> tuple[list, list]:
    if g.args.broadcast:
        raise ValueError("BatchMatMul's gradient is implemented only for broadcast=0")
    scratch = {"use_scratch": int(g.args.use_scratch)} if g.args.has("use_scratch") else {}
    ta, tb = bool(g.args.trans_a), bool(g.args.trans_b)
    a, b, dy, da, db = g.I(0), g.I(1), g.GO(0), g.GI(0), g.GI(1)

    def bmm(x: str, y: str, out: str, **flags: int):
        return g.make("BatchMatMul", [x, y], [out], **flags, **scratch)
    if ta and tb:      # dA = B'·G', dB = G'·A'
        ops = [bmm(b, dy, da, trans_a=1, trans_b=1), bmm(dy, a, db, trans_a=1, trans_b=1)]
    elif ta:           # dA = B·G', dB = A·G
        ops = [bmm(b, dy, da, trans_b=1), bmm(a, dy, db)]
    elif tb:           # dA = G·B, dB = G'·A
        ops = [bmm(dy, b, da), bmm(dy, a, db, trans_a=1)]
    else:              # dA = G·B', dB = A'·G
        ops = [bmm(dy, b, da, trans_b=1), bmm(a, dy, db, trans_a=1)]
    return ops, [da, db]


@defop("BatchMatMul", inputs=2, outputs=1, args=BATCH_MATMUL_ARGS, category=OUT_FUSABLE,
       infer=_batch_matmul_infer, gradient=_batch_matmul_gradient, grad_copy_args=False)
def batch_matmul(ctx, a, b):
    """Per-batch op(A)·op(B) over the last two dims (see _batch_matmul_shape for the shape rules)."""
    a, b = np.asarray(a), np.asarray(b)
    try:
        shape = _batch_matmul_shape(a.shape, b.shape, ctx.args)
    except ValueError as err:
        raise ctx.error(str(err), blob=ctx.input_name(1)) from None
    if a.ndim == 1 and b.ndim == 1:
        return np.array([np.dot(a, b)], dtype=a.dtype)
    at = np.swapaxes(a, -1, -2) if ctx.args.trans_a and a.ndim > 1 else a
    bt = np.swapaxes(b, -1, -2) if ctx.args.trans_b and b.ndim > 1 else b
    return np.ascontiguousarray(np.matmul(at, bt), dtype=a.dtype).reshape(shape)
