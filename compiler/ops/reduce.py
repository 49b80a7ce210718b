"""Axis reductions: ReduceSum and ReduceMean over ``axes``, and the front/back reducers
ReduceFrontSum, ReduceBackSum, ReduceFrontMean, ReduceBackMean over the first/last
``num_reduce_dim`` dims (with an optional ``lengths`` input), with the front/back gradient ops.

ReduceSum/ReduceMean's gradient ops take [dY, X, Y] as Caffe2's later reduce_ops did (the 2018
archive had none yet); the front/back ones take [dY, X, (lengths)]. Every op reduces in the input's
float dtype::

    ReduceMean(["x"], ["m"], axes=[2, 3], keepdims=0)      # [N, C, H, W] -> [N, C]
    ReduceFrontSum(["x"], ["s"], num_reduce_dim=1)         # [B, D] -> [D], the column sums
    ReduceBackMean(["x", "lengths"], ["m"])                # row i: the mean of its first lengths[i]
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from netjit.compiler.ops.gradients import GradientContext
from netjit.compiler.ops.registry import OPAQUE, REDUCE, Args, Lowering, TensorType, arg, defop

_CUDA = "netjit.compiler.codegen.cuda_ops"


def reduce_axes(args: Args, ndim: int) -> tuple[int, ...]:
    """The sorted, distinct axes to reduce (default: all), each in [0, ndim)."""
    if not args.has("axes") or len(args.axes) == 0:
        return tuple(range(ndim))
    axes = sorted(set(int(a) for a in args.axes))
    if axes[0] < 0 or axes[-1] >= ndim:
        raise ValueError(f"axes {list(args.axes)} out of range for a {ndim}-d input")
    return tuple(axes)


def _kept_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _float(ctx: Any, x: Any, i: int = 0) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise ctx.error(f"expects a float tensor, got {x.dtype}", blob=ctx.input_name(i))
    return x


def _axes_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x = inputs[0]
    axes = reduce_axes(args, len(x.shape))
    return [TensorType(_kept_shape(tuple(x.shape), axes, bool(args.keepdims)), x.dtype)]


def _axes_reduce(ctx: Any, x: Any, mean: bool) -> np.ndarray:
    x = _float(ctx, x)
    try:
        axes = reduce_axes(ctx.args, x.ndim)
    except ValueError as err:
        raise ctx.error(str(err), blob=ctx.input_name(0)) from None
    total = x.sum(axis=axes, keepdims=bool(ctx.args.keepdims), dtype=x.dtype)
    if mean:
        count = math.prod(x.shape[a] for a in axes)
        total = total / x.dtype.type(count) if count else np.full_like(total, np.nan)
    return np.array(total, dtype=x.dtype)


def _axes_grad(ctx: Any, dy: Any, x: Any, mean: bool) -> np.ndarray:
    x = _float(ctx, x, 1)
    try:
        axes = reduce_axes(ctx.args, x.ndim)
    except ValueError as err:
        raise ctx.error(str(err), blob=ctx.input_name(1)) from None
    kept = _kept_shape(x.shape, axes, True)
    dy = np.asarray(dy, dtype=x.dtype)
    if dy.size != math.prod(kept):
        raise ctx.error(f"the output gradient has shape {list(dy.shape)}; the forward output had "
                        f"{math.prod(kept)} elements", blob=ctx.input_name(0))
    dx = np.broadcast_to(dy.reshape(kept), x.shape)
    if mean:
        count = math.prod(x.shape[a] for a in axes)
        dx = dx / x.dtype.type(count)
    return np.array(dx, dtype=x.dtype)


def _axes_gradient(name: str):
    def maker(g: GradientContext) -> tuple[list, list]:
        return [g.make(name, [g.GO(0), g.I(0), g.O(0)], [g.GI(0)])], [g.GI(0)]
    return maker


def _like_input(i: int):
    def infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
        return [TensorType(tuple(inputs[i].shape), inputs[i].dtype)]
    return infer


AXES_ARGS = [arg("axes", "ints", []), arg("keepdims", "int", 1)]


@defop("ReduceSum", inputs=1, outputs=1, args=AXES_ARGS, category=REDUCE, infer=_axes_infer,
       gradient=_axes_gradient("ReduceSumGradient"),
       lowering={"numba-cuda": Lowering(standalone=f"{_CUDA}:reduce_axes_sum")})
def reduce_sum(ctx, x):
    """The sum over ``axes`` (default all); ``keepdims`` (default 1) keeps them as size-1 dims."""
    return _axes_reduce(ctx, x, mean=False)


@defop("ReduceMean", inputs=1, outputs=1, args=AXES_ARGS, category=REDUCE, infer=_axes_infer,
       gradient=_axes_gradient("ReduceMeanGradient"),
       lowering={"numba-cuda": Lowering(standalone=f"{_CUDA}:reduce_axes_mean")})
def reduce_mean(ctx, x):
    """The mean over ``axes`` (default all); ``keepdims`` (default 1) keeps them as size-1 dims."""
    return _axes_reduce(ctx, x, mean=True)


@defop("ReduceSumGradient", inputs=3, outputs=1, args=AXES_ARGS, category=OPAQUE, infer=_like_input(1),
       lowering={"numba-cuda": Lowering(standalone=f"{_CUDA}:reduce_axes_sum_gradient")})
def reduce_sum_gradient(ctx, dy, x, y):
    """[dY, X, Y] -> dX: dY broadcast back over the reduced axes."""
    return _axes_grad(ctx, dy, x, mean=False)


@defop("ReduceMeanGradient", inputs=3, outputs=1, args=AXES_ARGS, category=OPAQUE, infer=_like_input(1),
       lowering={"numba-cuda": Lowering(standalone=f"{_CUDA}:reduce_axes_mean_gradient")})
def reduce_mean_gradient(ctx, dy, x, y):
    """[dY, X, Y] -> dX: dY / (elements reduced per output) broadcast back over the reduced axes."""
    return _axes_grad(ctx, dy, x, mean=True)


# --------------------------------------------------------------------------------------------
# Front/back reducers: X seen as [rows, cols], reducing the rows (front) or the columns (back)
# --------------------------------------------------------------------------------------------
FB_ARGS = [arg("num_reduce_dim", "int", 1), arg("num_reduce_dims", "int", None)]


def num_reduce(args: Args, ndim: int) -> int:
    """``num_reduce_dim`` (what Caffe2's kernels read; ``num_reduce_dims``, the documented
    spelling, is taken when only it is given), within [0, ndim]."""
    k = args.num_reduce_dim if args.has("num_reduce_dim") or args.num_reduce_dims is None \
        else args.num_reduce_dims
    k = int(k)
    if not 0 <= k <= ndim:
        raise ValueError(f"num_reduce_dim {k} is out of range for a {ndim}-d input")
    return k


def front_back_dims(shape: tuple[int, ...], k: int, front: bool) -> tuple[int, int, tuple[int, ...]]:
    """(rows, cols, output shape) of the [rows, cols] view."""
    split = k if front else len(shape) - k
    rows, cols = math.prod(shape[:split]), math.prod(shape[split:])
    return rows, cols, tuple(shape[split:] if front else shape[:split])


def _fb_infer(front: bool):
    def infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
        x = inputs[0]
        return [TensorType(front_back_dims(tuple(x.shape), num_reduce(args, len(x.shape)), front)[2], x.dtype)]
    return infer


def _lengths(ctx: Any, lengths: Any, i: int, n: int, bound: int) -> np.ndarray:
    lengths = np.asarray(lengths)
    if lengths.dtype.kind not in "iu" or lengths.size != n:
        raise ctx.error(f"lengths must be {n} integers, got {lengths.dtype}{list(lengths.shape)}",
                        blob=ctx.input_name(i))
    flat = lengths.reshape(-1).astype(np.int64)
    if flat.size and (flat.min() < 0 or flat.max() > bound):
        raise ctx.error(f"lengths must lie in [0, {bound}], got {flat.min()}..{flat.max()}",
                        blob=ctx.input_name(i))
    return flat


def _fb_view(ctx: Any, x: Any, front: bool) -> tuple[np.ndarray, int, int, tuple[int, ...]]:
    x = _float(ctx, x)
    try:
        k = num_reduce(ctx.args, x.ndim)
    except ValueError as err:
        raise ctx.error(str(err), blob=ctx.input_name(0)) from None
    rows, cols, out_shape = front_back_dims(x.shape, k, front)
    # Front reduces over rows: put the reduced axis last so both kinds reduce over axis 1.
    view = x.reshape(rows, cols)
    return (view.T if front else view), rows, cols, out_shape


def _fb_reduce(ctx: Any, x: Any, lengths: Any, front: bool, mean: bool) -> np.ndarray:
    view, rows, cols, out_shape = _fb_view(ctx, x, front)
    n_out, n_red = view.shape
    if lengths is None:
        counts = np.full(n_out, n_red, np.int64)
    else:
        counts = _lengths(ctx, lengths, 1, n_out, n_red)
    mask = np.arange(n_red)[None, :] < counts[:, None]
    total = np.where(mask, view, 0).sum(axis=1, dtype=view.dtype)
    if mean:
        with np.errstate(invalid="ignore", divide="ignore"):
            total = total / counts.astype(view.dtype)
    return np.array(total.reshape(out_shape), dtype=view.dtype)


def _fb_grad(ctx: Any, dy: Any, x: Any, lengths: Any, front: bool, mean: bool) -> np.ndarray:
    view, rows, cols, out_shape = _fb_view(ctx, x, front)
    dy = np.asarray(dy, dtype=view.dtype).reshape(-1)
    n_out, n_red = view.shape
    if dy.size != n_out:
        raise ctx.error(f"the output gradient has {dy.size} elements, the forward output {n_out}",
                        blob=ctx.input_name(0))
    counts = np.full(n_out, n_red, np.int64) if lengths is None else _lengths(ctx, lengths, 2, n_out, n_red)
    mask = np.arange(n_red)[None, :] < counts[:, None]
    scale = dy / counts.astype(view.dtype) if mean else dy
    dx = np.where(mask, scale[:, None], 0).astype(view.dtype)
    return np.ascontiguousarray(dx.T if front else dx).reshape(np.shape(x))


def _fb_gradient(name: str):
    def maker(g: GradientContext) -> tuple[list, list]:
        ins = [g.GO(0), g.I(0)] + ([g.I(1)] if g.n_inputs == 2 else [])
        return [g.make(name, ins, [g.GI(0)])], [g.GI(0)] + [None] * (g.n_inputs - 1)
    return maker


def _register(front: bool, mean: bool) -> None:
    name = f"Reduce{'Front' if front else 'Back'}{'Mean' if mean else 'Sum'}"
    where = "first" if front else "last"
    what = "mean" if mean else "sum"

    def forward(ctx, x, lengths=None):
        return _fb_reduce(ctx, x, lengths, front, mean)
    forward.__doc__ = (f"The {what} over the {where} ``num_reduce_dim`` dims (default 1); with "
                       f"``lengths``, output j takes only the first lengths[j] of its elements.")

    def backward(ctx, dy, x, lengths=None):
        return _fb_grad(ctx, dy, x, lengths, front, mean)
    backward.__doc__ = f"[dY, X, (lengths)] -> dX of {name}: dY spread over the reduced elements."

    defop(name, inputs=(1, 2), outputs=1, args=FB_ARGS, category=REDUCE, infer=_fb_infer(front),
          gradient=_fb_gradient(name + "Gradient"),
          lowering={"numba-cuda": Lowering(standalone=f"{_CUDA}:reduce_front_back")})(forward)
    defop(name + "Gradient", inputs=(2, 3), outputs=1, args=FB_ARGS, category=OPAQUE, infer=_like_input(1),
          lowering={"numba-cuda": Lowering(standalone=f"{_CUDA}:reduce_front_back_gradient")})(backward)


for _front in (True, False):
    for _mean in (False, True):
        _register(_front, _mean)
