"""Broadcasting rules of Caffe2's binary elementwise ops (Add/Sub/Mul/Div/Pow) and SumReduceLike.

Two modes, chosen by the ``broadcast`` argument:

- ``broadcast=1`` (legacy Caffe2): C has A's shape. A one-element B is a scalar. Otherwise B is laid
  over A's dims starting at ``axis`` (``-1``: as a suffix; ``axis_str`` names the dim by a letter of
  ``order``); B's dims, leading and trailing 1s aside, must equal A's dims there.
- ``broadcast`` 0 or absent: numpy broadcasting (what later Caffe2 did); equal shapes are the common
  case. C has the broadcast shape.

Both reduce to "reshape A and B to views of C's rank, then numpy-broadcast the views", which is what
:func:`broadcast_views` returns; the references compute with the views and the compiler can map
indices with them::

    >>> broadcast_views({"broadcast": True, "axis": 1}, (2, 3, 4, 5), (3, 4)).b_view
    (1, 3, 4, 1)
"""
from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np


class BroadcastError(ValueError):
    """Shapes that the op's broadcasting rule does not accept; ``operand`` is the input at fault."""

    def __init__(self, message: str, operand: int = 1):
        super().__init__(message)
        self.operand = operand


class BroadcastViews(NamedTuple):
    out_shape: tuple[int, ...]
    a_view: tuple[int, ...]   # A reshaped to len(out_shape) dims (same data, 1s inserted)
    b_view: tuple[int, ...]   # B reshaped likewise; numpy broadcasting of the views gives C


def _get(args: Mapping[str, Any], name: str, default: Any) -> Any:
    value = args.get(name, default)
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    return default if value is None else value


def legacy_axis(args: Mapping[str, Any]) -> int:
    """The ``axis`` of a legacy broadcast, resolving ``axis_str`` against ``order`` (NCHW/NHWC)."""
    axis_str = _get(args, "axis_str", "")
    axis = int(_get(args, "axis", -1))
    if not axis_str:
        return axis
    # By value, as Caffe2 checks it: gradient makers pass axis=-1 alongside a real axis_str.
    if axis != -1:
        raise BroadcastError(f"arguments axis={axis} and axis_str={axis_str!r} cannot be used together")
    order = _get(args, "order", "NCHW")
    if len(axis_str) != 1 or axis_str not in order:
        raise BroadcastError(f"axis_str {axis_str!r} must be one letter of order {order!r}")
    return order.index(axis_str)


def legacy_b_view(a_shape: Sequence[int], b_shape: Sequence[int], axis: int) -> tuple[int, ...]:
    """B's shape laid over A's rank by the legacy rule (B is not a scalar here)."""
    a, b = tuple(a_shape), tuple(b_shape)
    if len(b) > len(a):
        raise BroadcastError(f"B {b} has more dims than A {a}; with broadcast=1, B must be a scalar or "
                             f"match a run of A's dims")
    if axis == -1:
        axis = len(a) - len(b)
    if not 0 <= axis <= len(a) - len(b):
        raise BroadcastError(f"broadcast axis {axis} is out of range [0, {len(a) - len(b)}] for A {a} and B {b}")
    nonone = [i for i, d in enumerate(b) if d != 1]
    view = [1] * len(a)
    if nonone:
        # Caffe2 lays B (untrimmed) at `axis`; only its run between the first and last non-1 dims
        # has to match, so leading/trailing 1s of B may sit over any size of A.
        for i in range(nonone[0], nonone[-1] + 1):
            if a[axis + i] != b[i]:
                raise BroadcastError(
                    f"B {b} does not match A {a} at axis {axis}: B dim {i} is {b[i]} but A dim "
                    f"{axis + i} is {a[axis + i]} (with broadcast=1, B's dims must equal A's dims from "
                    f"axis {axis} on)")
            view[axis + i] = b[i]
    return tuple(view)


def numpy_views(a_shape: Sequence[int], b_shape: Sequence[int]) -> BroadcastViews:
    a, b = tuple(a_shape), tuple(b_shape)
    try:
        out = tuple(np.broadcast_shapes(a, b))
    except ValueError:
        raise BroadcastError(f"shapes A {a} and B {b} do not broadcast (numpy rules apply because "
                             f"'broadcast' is not 1; set broadcast=1 and axis for Caffe2's legacy rule)") from None
    n = len(out)
    return BroadcastViews(out, (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b)


def broadcast_views(args: Mapping[str, Any], a_shape: Sequence[int], b_shape: Sequence[int]) -> BroadcastViews:
    """How A and B combine under the op's ``broadcast``/``axis``/``axis_str``/``order`` args."""
    a, b = tuple(a_shape), tuple(b_shape)
    if not _get(args, "broadcast", False):
        if a == b:
            return BroadcastViews(a, a, b)
        return numpy_views(a, b)
    if math.prod(b) == 1:
        return BroadcastViews(a, a, (1,) * len(a))
    return BroadcastViews(a, a, legacy_b_view(a, b, legacy_axis(args)))


def reduce_axes(x_shape: Sequence[int], like_shape: Sequence[int], args: Mapping[str, Any]) -> tuple[int, ...]:
    """The axes of ``x_shape`` that SumReduceLike sums to reach ``like_shape`` (kept as size-1 dims,
    then reshaped). A one-element target sums everything; an explicit ``axis``/``axis_str`` uses the
    legacy layout; otherwise numpy's right-aligned rule, a superset of legacy suffix matching."""
    x, like = tuple(x_shape), tuple(like_shape)
    if math.prod(like) == 1:
        return tuple(range(len(x)))
    axis = legacy_axis(args)
    view = legacy_b_view(x, like, axis) if axis != -1 else _numpy_target_view(x, like)
    return tuple(i for i, (d, v) in enumerate(zip(x, view)) if v == 1 and d != 1)


def sum_reduce_like(x: np.ndarray, like_shape: Sequence[int], args: Mapping[str, Any]) -> np.ndarray:
    """Sum ``x`` down to ``like_shape``: the adjoint of broadcasting a tensor of that shape up to
    ``x.shape`` (SumReduceLike). Accumulates in x's own dtype, as Caffe2 does."""
    axes = reduce_axes(x.shape, like_shape, args)
    return np.asarray(x.sum(axis=axes, dtype=x.dtype, keepdims=True)).reshape(tuple(like_shape))


def _numpy_target_view(x_shape: tuple[int, ...], like: tuple[int, ...]) -> tuple[int, ...]:
    extra = len(like) - len(x_shape)
    if extra > 0:
        if any(d != 1 for d in like[:extra]):
            raise BroadcastError(f"cannot sum {x_shape} down to {like}: the target has more dims")
        like_view = like[extra:]
    else:
        like_view = (1,) * (-extra) + like
    for d, v in zip(x_shape, like_view):
        if v != d and v != 1:
            raise BroadcastError(f"cannot sum {x_shape} down to {like}: {like} does not broadcast to {x_shape}")
    return like_view
