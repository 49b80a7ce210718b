"""Ops on lengths vectors (Caffe2's ragged-batch encoding) and ranges: LengthsRangeFill,
LengthsToShape, LengthsGather and Range. None has a gradient.

A lengths vector ``[2, 3]`` says the first segment is rows 0-1 and the second rows 2-4 of a tensor
whose rows are concatenated segments::

    LengthsRangeFill([2, 3])                   -> [0, 1, 0, 1, 2]
    LengthsGather(items, [2, 3], indices=[1])  -> items[2:5]
    Range(start=2, stop=8, step=3)             -> [2, 5]

    >>> from netjit.compiler.ops.registry import lookup
    >>> lookup("LengthsToShape").schema.inputs
    (1, 1)
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from netjit.compiler.ops.common import ShapeDependsOnValues
from netjit.compiler.ops.registry import OPAQUE, Args, TensorType, defop

_NOT_DIFFERENTIABLE = "its output is built from integer lengths and indices; Caffe2 gives it no gradient"


def _lengths(ctx: Any, x: Any, i: int, kinds: tuple = (np.int32, np.int64)) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype not in [np.dtype(k) for k in kinds]:
        names = " or ".join(np.dtype(k).name for k in kinds)
        raise ctx.error(f"input {i} must be {names}, got {x.dtype}", blob=ctx.input_name(i))
    if x.ndim != 1:
        raise ctx.error(f"input {i} must be a 1-D vector, got shape {list(x.shape)}", blob=ctx.input_name(i))
    if np.any(x < 0):
        k = int(np.flatnonzero(x < 0)[0])
        raise ctx.error(f"length {int(x[k])} at position {k} is negative", blob=ctx.input_name(i))
    return x


def _depends_on(i: int, op_type: str):
    def infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
        raise ShapeDependsOnValues(op_type, i)
    return infer


# --------------------------------------------------------------------------------------------
# LengthsRangeFill / LengthsToShape
# --------------------------------------------------------------------------------------------
@defop("LengthsRangeFill", inputs=1, outputs=1, category=OPAQUE, infer=_depends_on(0, "LengthsRangeFill"),
       no_gradient_reason=_NOT_DIFFERENTIABLE)
def lengths_range_fill(ctx, lengths):
    """int32 lengths -> int32 [0, 1, ..., l0 − 1, 0, 1, ..., l1 − 1, ...]."""
    lengths = _lengths(ctx, lengths, 0, (np.int32,))
    total = int(lengths.sum(dtype=np.int64))
    starts = np.repeat(np.cumsum(lengths, dtype=np.int64) - lengths, lengths)
    return (np.arange(total, dtype=np.int64) - starts).astype(np.int32)


def _lengths_to_shape_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    if len(inputs[0].shape) != 1:
        raise ValueError(f"lengths must be a 1-D vector, got shape {tuple(inputs[0].shape)}")
    return [TensorType((2,), np.dtype(np.int32))]


@defop("LengthsToShape", inputs=1, outputs=1, category=OPAQUE, infer=_lengths_to_shape_infer,
       no_gradient_reason=_NOT_DIFFERENTIABLE)
def lengths_to_shape(ctx, lengths):
    """Equal int32 lengths [l, l, ..., l] (n of them) -> the int32 shape [n, l] of the dense
    tensor they describe ([0, 0] for no lengths)."""
    lengths = np.asarray(lengths)
    if lengths.dtype != np.int32 or lengths.ndim != 1:
        raise ctx.error(f"lengths must be a 1-D int32 vector, got {lengths.dtype} of shape {list(lengths.shape)}",
                        blob=ctx.input_name(0))
    first = int(lengths[0]) if lengths.size else 0
    differ = np.flatnonzero(lengths != first)
    if differ.size:
        k = int(differ[0])
        raise ctx.error(f"all lengths must be equal: length {k} is {int(lengths[k])} but length 0 is {first}",
                        blob=ctx.input_name(0))
    return np.array([lengths.size, first], dtype=np.int32)


# --------------------------------------------------------------------------------------------
# LengthsGather
# --------------------------------------------------------------------------------------------
@defop("LengthsGather", inputs=3, outputs=1, category=OPAQUE, infer=_depends_on(1, "LengthsGather"),
       no_gradient_reason=_NOT_DIFFERENTIABLE)
def lengths_gather(ctx, items, lengths, indices):
    """[ITEMS, LENGTHS, INDICES] -> the segments of ITEMS (split along dim 0 by LENGTHS) picked by
    INDICES, concatenated: shape [Σ LENGTHS[INDICES], *ITEMS.shape[1:]]."""
    items = np.asarray(items)
    if items.ndim < 1:
        raise ctx.error("ITEMS must have at least one dimension", blob=ctx.input_name(0))
    lengths = _lengths(ctx, lengths, 1)
    indices = np.asarray(indices)
    if indices.dtype not in (np.dtype(np.int32), np.dtype(np.int64)) or indices.ndim != 1:
        raise ctx.error(f"INDICES must be a 1-D int32 or int64 vector, got {indices.dtype} of shape "
                        f"{list(indices.shape)}", blob=ctx.input_name(2))
    total = int(lengths.sum(dtype=np.int64))
    if total != items.shape[0]:
        raise ctx.error(f"the lengths add up to {total} but ITEMS has {items.shape[0]} rows", blob=ctx.input_name(1))
    bad = np.flatnonzero((indices < 0) | (indices >= lengths.size))
    if bad.size:
        k = int(bad[0])
        raise ctx.error(f"index {int(indices[k])} at position {k} is out of range for {lengths.size} segments",
                        blob=ctx.input_name(2))
    offsets = np.cumsum(lengths, dtype=np.int64) - lengths
    rows = [np.arange(offsets[i], offsets[i] + lengths[i]) for i in indices.astype(np.intp)]
    picked = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    return items[picked]


# --------------------------------------------------------------------------------------------
# Range
# --------------------------------------------------------------------------------------------
_RANGE_TYPES = (np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.float32), np.dtype(np.float64))


@defop("Range", inputs=(1, 3), outputs=1, category=OPAQUE, infer=_depends_on(0, "Range"),
       no_gradient_reason=_NOT_DIFFERENTIABLE)
def range_(ctx, *bounds):
    """[stop] or [start, stop] or [start, stop, step] (0-d tensors of one type) -> the 1-D tensor
    start, start + step, ... up to but excluding stop (numpy's arange; empty when the step points away
    from stop)."""
    arrays = [np.asarray(b) for b in bounds]
    for i, a in enumerate(arrays):
        if a.ndim != 0:
            raise ctx.error(f"all inputs must be scalars (0-d), input {i} has shape {list(a.shape)}",
                            blob=ctx.input_name(i))
        if a.dtype not in _RANGE_TYPES:
            raise ctx.error(f"input {i} has unsupported type {a.dtype} (int32, int64, float or double)",
                            blob=ctx.input_name(i))
        if a.dtype != arrays[0].dtype:
            raise ctx.error(f"all inputs must have the same type: input {i} is {a.dtype}, input 0 is "
                            f"{arrays[0].dtype}", blob=ctx.input_name(i))
    dtype = arrays[0].dtype
    start, stop, step = (dtype.type(0), arrays[0][()], dtype.type(1)) if len(arrays) == 1 else \
        (arrays[0][()], arrays[1][()], arrays[2][()] if len(arrays) == 3 else dtype.type(1))
    if step == 0:
        raise ctx.error("Step size cannot be 0", blob=ctx.input_name(len(arrays) - 1))
    if dtype.kind == "i":
        diff, s = int(stop) - int(start), int(step)
        length = -(-diff // s)  # exact ceil of diff / step for any signs
    else:
        length = math.ceil((float(stop) - float(start)) / float(step))
    length = max(int(length), 0)
    return (start + np.arange(length, dtype=dtype) * step).astype(dtype, copy=False)
