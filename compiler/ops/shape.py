"""Shape ops: Reshape, Flatten, FlattenToVec, ResizeLike, Transpose, ExpandDims, Squeeze.

All but Transpose only relabel the dims of the same row-major data. The references still return a
copy (references never hand out views of their inputs), which is also what Caffe2 does unless the
op runs in place::

    Reshape(["x"], ["y", "old_shape"], shape=[0, -1])   # keep dim 0, infer the rest
    Transpose(["x"], ["xt"], axes=[0, 2, 3, 1])          # NCHW -> NHWC
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from netjit.compiler.ops.common import ShapeDependsOnValues
from netjit.compiler.ops.gradients import GradientContext, simple_gradient
from netjit.compiler.ops.registry import INJECTIVE, Args, TensorType, arg, defop

_I64 = np.dtype(np.int64)


def _copy(x: Any, shape: Sequence[int]) -> np.ndarray:
    return np.array(np.asarray(x).reshape(tuple(shape)), copy=True)


# --------------------------------------------------------------------------------------------
# Reshape
# --------------------------------------------------------------------------------------------
def reshape_target(in_shape: Sequence[int], new_shape: Sequence[int]) -> tuple[int, ...]:
    """Caffe2's Reshape rule: a 0 copies the input dim at that position, one -1 takes what is left,
    and the element count must stay the same. Raises ValueError with the reason."""
    new = [int(d) for d in new_shape]
    for i in range(min(len(new), len(in_shape))):
        if new[i] == 0:
            new[i] = int(in_shape[i])
    total = math.prod(in_shape)
    unknown, size = None, 1
    for i, d in enumerate(new):
        if d == -1:
            if unknown is not None:
                raise ValueError(f"new shape {list(new_shape)} has more than one -1")
            unknown = i
        elif d < 0:
            raise ValueError(f"new shape {list(new_shape)} has a negative dimension other than -1")
        else:
            size *= d
    if size == 0 and total != 0:
        raise ValueError(f"cannot reshape a tensor of {total} elements to {list(new_shape)} (zero size)")
    if unknown is not None:
        if size == 0:
            raise ValueError(f"the -1 in {list(new_shape)} cannot be inferred when the shape contains a 0")
        if total % size:
            raise ValueError(f"new shape {list(new_shape)} does not agree with the input's {total} elements")
        new[unknown] = total // size
    elif total != size:
        raise ValueError(f"new shape {list(new_shape)} has {size} elements but the input has {total}")
    return tuple(new)


def _reshape_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x = inputs[0]
    if len(inputs) == 2:
        raise ShapeDependsOnValues("Reshape", 1)
    if not args.has("shape"):
        raise ValueError("Reshape needs the 'shape' argument or a shape input")
    return [TensorType(reshape_target(x.shape, args.shape), x.dtype), TensorType((len(x.shape),), _I64)]


def _reshape_gradient(g: GradientContext) -> tuple[list, list]:
    dx = g.GI(0)
    g_input: list[str | None] = [dx] + [None] * (g.n_inputs - 1)
    return [g.make("Reshape", [g.GO(0), g.O(1)], [dx, f"_{dx}_dims"])], g_input


@defop("Reshape", inputs=(1, 2), outputs=2, args=[arg("shape", "ints", [])], inplace=[(0, 0)],
       category=INJECTIVE, infer=_reshape_infer, gradient=_reshape_gradient, grad_copy_args=False)
def reshape(ctx, x, shape=None):
    """[X(, shape)] -> [Y, old_shape]: Y is X with the new shape (``shape`` arg xor a 1-D int32/int64
    shape input); old_shape is X's dims, int64 (or the shape input's dtype)."""
    x = np.asarray(x)
    if shape is not None:
        if ctx.args.has("shape"):
            raise ctx.error("the new shape is given by input 1; do not also pass the 'shape' argument",
                            blob=ctx.input_name(1))
        shape = np.asarray(shape)
        if shape.ndim != 1 or shape.dtype not in (np.int32, np.int64):
            raise ctx.error(f"the shape input must be a 1-D int32 or int64 tensor, got {shape.dtype} of shape "
                            f"{list(shape.shape)}", blob=ctx.input_name(1))
        new_shape, old_dtype = [int(v) for v in shape], shape.dtype
    else:
        if not ctx.args.has("shape"):
            raise ctx.error("the 'shape' argument is missing (or give the shape as input 1)",
                            blob=ctx.output_name(0))
        new_shape, old_dtype = ctx.args.shape, _I64
    try:
        target = reshape_target(x.shape, new_shape)
    except ValueError as err:
        raise ctx.error(str(err), blob=ctx.input_name(0)) from None
    return _copy(x, target), np.array(x.shape, dtype=old_dtype)


# --------------------------------------------------------------------------------------------
# Flatten, FlattenToVec, ResizeLike
# --------------------------------------------------------------------------------------------
def _flatten_shape(shape: Sequence[int], axis: int) -> tuple[int, int]:
    if not 0 <= axis <= len(shape):
        raise ValueError(f"axis {axis} is out of range for a rank-{len(shape)} input")
    return math.prod(shape[:axis]), math.prod(shape[axis:])


def _flatten_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x = inputs[0]
    return [TensorType(_flatten_shape(x.shape, args.axis), x.dtype)]


_RESIZE_LIKE_GRAD = simple_gradient("ResizeLike", ["GO0", "I0"], ["GI0"])


@defop("Flatten", inputs=1, outputs=1, args=[arg("axis", "int", 1)], category=INJECTIVE, infer=_flatten_infer,
       gradient=_RESIZE_LIKE_GRAD)
def flatten(ctx, x):
    """A 2-D copy of X: [∏ dims[:axis], ∏ dims[axis:]]."""
    x = np.asarray(x)
    try:
        return _copy(x, _flatten_shape(x.shape, ctx.args.axis))
    except ValueError as err:
        raise ctx.error(str(err), blob=ctx.input_name(0)) from None


def _to_vec_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x = inputs[0]
    return [TensorType((math.prod(x.shape),), x.dtype)]


@defop("FlattenToVec", inputs=1, outputs=1, category=INJECTIVE, infer=_to_vec_infer, gradient=_RESIZE_LIKE_GRAD)
def flatten_to_vec(ctx, x):
    """A 1-D copy of X (rank >= 1)."""
    x = np.asarray(x)
    if x.ndim < 1:
        raise ctx.error("the input must have rank >= 1", blob=ctx.input_name(0))
    return _copy(x, (x.size,))


def _resize_like_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    return [TensorType(tuple(inputs[1].shape), inputs[0].dtype)]


@defop("ResizeLike", inputs=2, outputs=1, inplace=[(0, 0)], category=INJECTIVE, infer=_resize_like_infer,
       no_gradient_reason="Caffe2 does not differentiate ResizeLike")
def resize_like(ctx, x, like):
    """X's data with the shape of the second input (the element counts must match)."""
    x, shape = np.asarray(x), np.shape(like)
    if x.size != math.prod(shape):
        raise ctx.error(f"input 0 has {x.size} elements but input 1 has shape {list(shape)}",
                        blob=ctx.input_name(1))
    return _copy(x, shape)


# --------------------------------------------------------------------------------------------
# Transpose
# --------------------------------------------------------------------------------------------
def transpose_axes(args: Args, ndim: int) -> tuple[int, ...]:
    """The permutation: ``axes`` when given (a permutation of range(ndim)), else the reversed dims."""
    if not args.has("axes"):
        return tuple(range(ndim - 1, -1, -1))
    axes = tuple(int(a) for a in args.axes)
    if sorted(axes) != list(range(ndim)):
        raise ValueError(f"axes {list(axes)} is not a permutation of the {ndim} dims of the input")
    return axes


def _transpose_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x = inputs[0]
    axes = transpose_axes(args, len(x.shape))
    return [TensorType(tuple(x.shape[a] for a in axes), x.dtype)]


def _transpose_gradient(g: GradientContext) -> tuple[list, list]:
    # Caffe2 copies the forward args itself and swaps `axes` for the inverse permutation in place.
    op = g.make("Transpose", [g.GO(0)], [g.GI(0)])
    for a in g.op.arg:
        new = op.arg.add()
        new.CopyFrom(a)
        if a.name == "axes":
            inverse = [0] * len(a.ints)
            for i, axis in enumerate(a.ints):
                inverse[axis] = i
            del new.ints[:]
            new.ints.extend(inverse)
    return [op], [g.GI(0)]


@defop("Transpose", inputs=1, outputs=1, args=[arg("axes", "ints", [])], category=INJECTIVE,
       infer=_transpose_infer, gradient=_transpose_gradient, grad_copy_args=False)
def transpose(ctx, x):
    """Y = X with its dims permuted: Y.shape[i] = X.shape[axes[i]] (default: reversed)."""
    x = np.asarray(x)
    try:
        axes = transpose_axes(ctx.args, x.ndim)
    except ValueError as err:
        raise ctx.error(str(err), blob=ctx.input_name(0)) from None
    return np.array(np.transpose(x, axes), order="C")   # (ascontiguousarray makes 0-d data 1-d)


# --------------------------------------------------------------------------------------------
# ExpandDims / Squeeze
# --------------------------------------------------------------------------------------------
def sorted_dims(args: Args) -> list[int]:
    """``dims`` sorted with duplicates dropped; must be given and non-negative."""
    dims = sorted(set(int(d) for d in args.dims))
    if not dims:
        raise ValueError("the 'dims' argument must be given")
    if dims[0] < 0:
        raise ValueError(f"dims {list(args.dims)} must be non-negative")
    return dims


def expand_dims_shape(shape: Sequence[int], dims: list[int]) -> tuple[int, ...]:
    if dims[-1] >= len(shape) + len(dims):
        raise ValueError(f"dims {dims} need an input of rank >= {dims[-1] + 1 - len(dims)}, got {len(shape)}")
    out = list(shape)
    for d in dims:
        out.insert(d, 1)
    return tuple(out)


def squeeze_shape(shape: Sequence[int], dims: list[int]) -> tuple[int, ...]:
    if dims[-1] >= len(shape):
        raise ValueError(f"dims {dims} need an input of rank >= {dims[-1] + 1}, got {len(shape)}")
    for d in dims:
        if shape[d] != 1:
            raise ValueError(f"dimension {d} of the input must be 1 to squeeze it, not {shape[d]}")
    return tuple(s for i, s in enumerate(shape) if i not in dims)


def _dims_infer(rule):
    def infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
        x = inputs[0]
        return [TensorType(rule(x.shape, sorted_dims(args)), x.dtype)]
    return infer


def _dims_reference(ctx, x, rule):
    x = np.asarray(x)
    try:
        return _copy(x, rule(x.shape, sorted_dims(ctx.args)))
    except ValueError as err:
        raise ctx.error(str(err), blob=ctx.input_name(0)) from None


@defop("ExpandDims", inputs=1, outputs=1, args=[arg("dims", "ints", [])], inplace=[(0, 0)], category=INJECTIVE,
       infer=_dims_infer(expand_dims_shape), gradient=simple_gradient("Squeeze", ["GO0"], ["GI0"]))
def expand_dims(ctx, x):
    """Insert size-1 dims at the (output) positions ``dims``."""
    return _dims_reference(ctx, x, expand_dims_shape)


@defop("Squeeze", inputs=1, outputs=1, args=[arg("dims", "ints", [])], inplace=[(0, 0)], category=INJECTIVE,
       infer=_dims_infer(squeeze_shape), gradient=simple_gradient("ExpandDims", ["GO0"], ["GI0"]))
def squeeze(ctx, x):
    """Drop the size-1 dims listed in ``dims``."""
    return _dims_reference(ctx, x, squeeze_shape)
