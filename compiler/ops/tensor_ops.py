"""Shape and layout ops of CNNs: Concat, Split, Slice, ChannelShuffle, ResizeNearest; and PRelu.

Where an output's shape depends on an input's *values* (Split with a split input, Slice with
starts/ends inputs), shape inference raises ``DataDependentShape``: the shape is known only by running.
"""
from __future__ import annotations

import numpy as np

from netjit.compiler.ops.common import same_as
from netjit.compiler.ops.gradients import GradientContext, simple_gradient
from netjit.compiler.ops.per_channel import PerChannel, channel_axis, channel_view
from netjit.compiler.ops.registry import INF, INJECTIVE, OPAQUE, Args, Lowering, TensorType, arg, defop


class DataDependentShape(ValueError):
    """Shape inference needs an input's values, which a TensorType does not carry."""


def _str(value: object, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def _axis_from_args(args: Args, ndim: int, op: str) -> int:
    """Concat/Split axis: ``axis`` (may be negative), or the position of 'C' in ``order``; not both."""
    if args.has("axis"):
        if args.has("order"):
            raise ValueError(f"{op}: set either axis or order, not both")
        axis = int(args.axis)
    else:
        order = _str(args.get("order"), "NCHW")
        if "C" not in order:
            raise ValueError(f"{op}: order {order!r} has no 'C'")
        axis = order.index("C")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for {ndim}-D data")
    return axis % ndim


# --------------------------------------------------------------------------------------------
# Concat / Split
# --------------------------------------------------------------------------------------------
CONCAT_ARGS = [arg("axis", "int", -1), arg("order", "str", "NCHW"), arg("add_axis", "bool", False)]
SPLIT_ARGS = CONCAT_ARGS + [arg("split", "ints")]


def _concat_plan(args: Args, shapes: list[tuple[int, ...]], dtypes: list[np.dtype]) -> tuple[int, tuple[int, ...]]:
    """(axis, output shape) after checking that the inputs agree off the axis."""
    first = shapes[0]
    add_axis = bool(args.add_axis)
    axis = _axis_from_args(args, len(first) + (1 if add_axis else 0), "Concat")
    for i, (shape, dtype) in enumerate(zip(shapes, dtypes)):
        if dtype != dtypes[0]:
            raise ValueError(f"Concat: input {i} has dtype {dtype}, input 0 has {dtypes[0]}")
        same = shape == first if add_axis else (
            len(shape) == len(first) and all(a == b for k, (a, b) in enumerate(zip(shape, first)) if k != axis))
        if not same:
            raise ValueError(f"Concat: input {i} has shape {shape}, which does not match input 0 {first} "
                             f"{'exactly (add_axis=1)' if add_axis else f'off axis {axis}'}")
    if add_axis:
        return axis, first[:axis] + (len(shapes),) + first[axis:]
    return axis, first[:axis] + (sum(s[axis] for s in shapes),) + first[axis + 1:]


def _concat_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    _, out = _concat_plan(args, [tuple(t.shape) for t in inputs], [np.dtype(t.dtype) for t in inputs])
    return [TensorType(out, inputs[0].dtype), TensorType((len(inputs),), np.dtype(np.int32))]


def _concat_gradient_maker(g: GradientContext) -> tuple[list, list]:
    grads = [g.GI(i) for i in range(g.n_inputs)]
    return [g.make("Split", [g.GO(0), g.O(1)], grads)], grads


@defop("Concat", inputs=(1, INF), outputs=2, args=CONCAT_ARGS, category=INJECTIVE, infer=_concat_infer,
       gradient=_concat_gradient_maker,
       lowering={"numba-cpu": Lowering(standalone="netjit.compiler.codegen.concat:concat", threaded=True)})
def concat(ctx, *xs):
    """Join inputs along ``axis`` (or stack on a new one with add_axis=1); 2nd output: int32 sizes."""
    axis, _ = _concat_plan(ctx.args, [tuple(x.shape) for x in xs], [x.dtype for x in xs])
    if ctx.args.add_axis:
        return np.stack(xs, axis=axis), np.ones(len(xs), dtype=np.int32)
    return np.concatenate(xs, axis=axis), np.array([x.shape[axis] for x in xs], dtype=np.int32)


def _split_sizes(args: Args, shape: tuple[int, ...], n_out: int, split_input: np.ndarray | None) -> tuple[int, list[int]]:
    axis = _axis_from_args(args, len(shape), "Split")
    if split_input is not None:
        if args.has("split"):
            raise ValueError("Split: give the sizes either as the split argument or as the 2nd input, not both")
        sizes = [int(v) for v in np.asarray(split_input).reshape(-1)]
    elif args.has("split"):
        sizes = [int(v) for v in args.split]
    else:
        if shape[axis] % n_out:
            raise ValueError(f"Split: dim {axis} of size {shape[axis]} does not divide into {n_out} equal parts")
        sizes = [shape[axis] // n_out] * n_out
    if len(sizes) != n_out:
        raise ValueError(f"Split: {len(sizes)} sizes {sizes} for {n_out} outputs")
    if sum(sizes) != shape[axis] or any(s < 0 for s in sizes):
        raise ValueError(f"Split: sizes {sizes} do not add up to dim {axis} of size {shape[axis]}")
    if args.add_axis and any(s != 1 for s in sizes):
        raise ValueError(f"Split with add_axis=1 removes the axis, so every part must have size 1, got {sizes}")
    return axis, sizes


def _split_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    if len(inputs) > 1:
        raise DataDependentShape("Split with a split input: the output shapes depend on its values")
    if args.num_outputs is None:
        raise ValueError("Split: shape inference needs the op's output count")
    x = inputs[0]
    shape = tuple(x.shape)
    axis, sizes = _split_sizes(args, shape, args.num_outputs, None)
    if args.add_axis:
        return [TensorType(shape[:axis] + shape[axis + 1:], x.dtype)] * len(sizes)
    return [TensorType(shape[:axis] + (s,) + shape[axis + 1:], x.dtype) for s in sizes]


def _split_gradient_maker(g: GradientContext) -> tuple[list, list]:
    # Caffe2 concatenates only the outputs that have gradients.
    present = [g.GO(i) for i in range(len(g.op.output)) if g.has_GO(i)]
    g_input: list[str | None] = [None] * g.n_inputs
    if not present:
        return [], g_input
    g_input[0] = g.GI(0)
    return [g.make("Concat", present, [g.GI(0), "_" + g.GI(0) + "_dims"])], g_input


@defop("Split", inputs=(1, 2), outputs=(1, INF), args=SPLIT_ARGS, category=INJECTIVE, infer=_split_infer,
       gradient=_split_gradient_maker)
def split(ctx, x, split_input=None):
    """Cut X along ``axis`` into parts of the sizes given by ``split`` (arg or input), else equal parts."""
    axis, sizes = _split_sizes(ctx.args, tuple(x.shape), ctx.num_outputs, split_input)
    bounds = np.cumsum([0] + sizes)
    parts = [np.take(x, np.arange(bounds[i], bounds[i + 1]), axis=axis) for i in range(len(sizes))]
    if ctx.args.add_axis:
        parts = [np.squeeze(p, axis=axis) for p in parts]
    return parts


# --------------------------------------------------------------------------------------------
# Slice
# --------------------------------------------------------------------------------------------
SLICE_ARGS = [arg("starts", "ints"), arg("ends", "ints")]


def _slice_counts(n_in: int, n_out: int) -> str | None:
    return None if n_in in (1, 3) else f"takes 1 input (data) or 3 (data, starts, ends), got {n_in}"


def _slice_bounds(shape: tuple[int, ...], starts: list[int], ends: list[int]) -> tuple[slice, ...]:
    """Index of the kept region. A negative index i means dim + 1 + i (-1: through the end);
    indices past the end are clamped. Only one dimension may actually be cut."""
    if len(starts) != len(ends):
        raise ValueError(f"Slice: starts {starts} and ends {ends} differ in length")
    if len(starts) > len(shape):
        raise ValueError(f"Slice: {len(starts)} starts for {len(shape)}-D data")
    index, cut = [], []
    for i, dim in enumerate(shape):
        if i >= len(starts):
            index.append(slice(0, dim))
            continue
        start, end = starts[i], ends[i]
        start = dim + 1 + start if start < 0 else start
        end = dim + 1 + end if end < 0 else end
        start, end = min(start, dim), min(end, dim)
        if start < 0 or end < 0 or end < start:
            raise ValueError(f"Slice: dim {i} of size {dim}: start {starts[i]} and end {ends[i]} give an empty "
                             f"or reversed range")
        if start > 0 or end < dim:
            cut.append(i)
        index.append(slice(start, end))
    if len(cut) > 1:
        raise ValueError(f"Slice can cut only one dimension, but starts {starts} / ends {ends} cut dims {cut}")
    return tuple(index)


def _slice_indices(args: Args, data_shape: tuple[int, ...], starts=None, ends=None) -> tuple[slice, ...]:
    if starts is not None:
        if args.has("starts") or args.has("ends"):
            raise ValueError("Slice: give starts/ends either as arguments or as inputs, not both")
        s = [int(v) for v in np.asarray(starts).reshape(-1)]
        e = [int(v) for v in np.asarray(ends).reshape(-1)]
    else:
        s, e = [int(v) for v in args.starts], [int(v) for v in args.ends]
    return _slice_bounds(tuple(data_shape), s, e)


def _slice_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    if len(inputs) > 1:
        raise DataDependentShape("Slice with starts/ends inputs: the output shape depends on their values")
    index = _slice_indices(args, tuple(inputs[0].shape))
    return [TensorType(tuple(s.stop - s.start for s in index), inputs[0].dtype)]


def _slice_gradient_maker(g: GradientContext) -> tuple[list, list]:
    ins = [g.I(0), g.I(1), g.I(2), g.GO(0)] if g.n_inputs > 1 else [g.I(0), g.GO(0)]
    return [g.make("SliceGradient", ins, [g.GI(0)])], [g.GI(0)] + [None] * (g.n_inputs - 1)


@defop("Slice", inputs=(1, 3), outputs=1, args=SLICE_ARGS, check_counts=_slice_counts, category=INJECTIVE,
       infer=_slice_infer, gradient=_slice_gradient_maker)
def slice_op(ctx, data, starts=None, ends=None):
    """Y = data[starts:ends] (per dim; negative indices count from dim + 1)."""
    return data[_slice_indices(ctx.args, tuple(data.shape), starts, ends)].copy()


def _slice_grad_counts(n_in: int, n_out: int) -> str | None:
    return None if n_in in (2, 4) else f"takes 2 inputs (X, dY) or 4 (X, starts, ends, dY), got {n_in}"


@defop("SliceGradient", inputs=(2, 4), outputs=1, args=SLICE_ARGS, check_counts=_slice_grad_counts,
       category=OPAQUE, infer=same_as(0))
def slice_gradient(ctx, x, *rest):
    """[X, (starts, ends,) dY] -> dX: zeros shaped like X with dY in the sliced region."""
    dy = rest[-1]
    index = _slice_indices(ctx.args, tuple(x.shape), *rest[:-1]) if len(rest) == 3 \
        else _slice_indices(ctx.args, tuple(x.shape))
    dx = np.zeros(x.shape, dtype=dy.dtype)
    dx[index] = dy
    return dx


# --------------------------------------------------------------------------------------------
# ChannelShuffle
# --------------------------------------------------------------------------------------------
SHUFFLE_ARGS = [arg("group", "int", 1), arg("order", "str", "NCHW")]


def _shuffle_check(args: Args, shape: tuple[int, ...]) -> tuple[int, int]:
    if _str(args.get("order"), "NCHW") != "NCHW":
        raise ValueError("ChannelShuffle supports order NCHW only")
    if len(shape) < 2:
        raise ValueError(f"ChannelShuffle needs N and C dims, got shape {shape}")
    g, c = int(args.group), shape[1]
    if g < 1 or c % g:
        raise ValueError(f"ChannelShuffle: {c} channels do not divide into group={g}")
    return g, c // g


def _shuffle_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    _shuffle_check(args, tuple(inputs[0].shape))
    return [inputs[0]]


def _regroup(x: np.ndarray, a: int, b: int) -> np.ndarray:
    """View channels as (a, b), swap to (b, a): output channel j·a + i takes input channel i·b + j."""
    n, rest = x.shape[0], x.shape[2:]
    return x.reshape((n, a, b) + rest).swapaxes(1, 2).reshape(x.shape).copy()


@defop("ChannelShuffle", inputs=1, outputs=1, args=SHUFFLE_ARGS, category=INJECTIVE, infer=_shuffle_infer,
       gradient=simple_gradient("ChannelShuffleGradient", ["GO0"], ["GI0"]))
def channel_shuffle(ctx, x):
    """With K = C/group: input channel g·K + k moves to output channel k·group + g."""
    g, k = _shuffle_check(ctx.args, tuple(x.shape))
    return _regroup(x, g, k)


@defop("ChannelShuffleGradient", inputs=1, outputs=1, args=SHUFFLE_ARGS, category=INJECTIVE, infer=_shuffle_infer)
def channel_shuffle_gradient(ctx, dy):
    """[dY] -> dX: the inverse permutation (channel k·group + g goes back to g·K + k)."""
    g, k = _shuffle_check(ctx.args, tuple(dy.shape))
    return _regroup(dy, k, g)


# --------------------------------------------------------------------------------------------
# ResizeNearest (NCHW)
# --------------------------------------------------------------------------------------------
RESIZE_ARGS = [arg("width_scale", "float", 1.0), arg("height_scale", "float", 1.0), arg("order", "str", "NCHW")]


def _resize_plan(args: Args, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Source row and column of every output pixel, computed in float32 as Caffe2 does."""
    if _str(args.get("order"), "NCHW") != "NCHW":
        raise ValueError("ResizeNearest supports order NCHW only")
    if len(shape) != 4:
        raise ValueError(f"ResizeNearest takes 4-D NCHW input, got shape {shape}")
    hs, ws = np.float32(args.height_scale), np.float32(args.width_scale)
    if hs <= 0 or ws <= 0:
        raise ValueError(f"ResizeNearest scales must be positive, got height {hs}, width {ws}")
    h, w = shape[2], shape[3]
    out_h, out_w = int(np.float32(h) * hs), int(np.float32(w) * ws)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"ResizeNearest: output size {out_h}x{out_w} is empty")
    rows = np.minimum((np.arange(out_h, dtype=np.float32) / hs).astype(np.int64), h - 1)
    cols = np.minimum((np.arange(out_w, dtype=np.float32) / ws).astype(np.int64), w - 1)
    return rows, cols


def _resize_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x = inputs[0]
    rows, cols = _resize_plan(args, tuple(x.shape))
    return [TensorType(tuple(x.shape[:2]) + (len(rows), len(cols)), x.dtype)]


@defop("ResizeNearest", inputs=1, outputs=1, args=RESIZE_ARGS, category=INJECTIVE, infer=_resize_infer,
       gradient=simple_gradient("ResizeNearestGradient", ["GO0", "I0"], ["GI0"]))
def resize_nearest(ctx, x):
    """Y [N, C, ⌊H·height_scale⌋, ⌊W·width_scale⌋]; Y[.., y, x] = X[.., min(⌊y/hs⌋, H-1), min(⌊x/ws⌋, W-1)]."""
    rows, cols = _resize_plan(ctx.args, tuple(x.shape))
    return x[:, :, rows[:, None], cols[None, :]]


def _resize_grad_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    return [TensorType(tuple(inputs[1].shape), inputs[0].dtype)]


@defop("ResizeNearestGradient", inputs=2, outputs=1, args=RESIZE_ARGS, category=OPAQUE, infer=_resize_grad_infer)
def resize_nearest_gradient(ctx, dy, x):
    """[dY, X] -> dX: each dY pixel added to the X pixel it was copied from."""
    rows, cols = _resize_plan(ctx.args, tuple(x.shape))
    want = tuple(x.shape[:2]) + (len(rows), len(cols))
    if tuple(dy.shape) != want:
        raise ctx.error(f"dY has shape {tuple(dy.shape)}, expected {want}", blob=ctx.input_name(0))
    dx = np.zeros(x.shape, dtype=dy.dtype)
    np.add.at(dx, (slice(None), slice(None), rows[:, None], cols[None, :]), dy)
    return dx


# --------------------------------------------------------------------------------------------
# PRelu: Y = X where X > 0, else slope·X; the slope is shared ([1]) or per channel ([C])
# --------------------------------------------------------------------------------------------
PRELU_ARGS = [arg("order", "str", "NCHW")]


def _slope_view(args: Args, x_shape: tuple[int, ...], slope_shape: tuple[int, ...]) -> tuple[int, ...]:
    size = int(np.prod(slope_shape))
    order = _str(args.get("order"), "NCHW")
    if size == 1:
        return channel_view(order, x_shape, 1)
    if len(x_shape) < 2:
        raise ValueError(f"PRelu with a per-channel slope needs a channel dim, X has shape {x_shape}")
    c = x_shape[channel_axis(order, len(x_shape))]
    if len(slope_shape) != 1 or size != c:
        raise ValueError(f"PRelu slope has shape {slope_shape}; expected [1] or [{c}] (one per channel)")
    return channel_view(order, x_shape, c)


def _prelu_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    _slope_view(args, tuple(inputs[0].shape), tuple(inputs[1].shape))
    return [inputs[0]]


@defop("PRelu", inputs=2, outputs=1, args=PRELU_ARGS, inplace=[(0, 0)], category=OPAQUE, infer=_prelu_infer,
       gradient=simple_gradient("PReluGradient", ["O0", "GO0", "I0", "I1"], ["GI0", "GI1"]),
       per_channel=PerChannel(expr="x0 if x0 > 0 else x1 * x0", channel_inputs=(1,)))
def prelu(ctx, x, slope):
    """Y = X if X > 0 else slope[c]·X."""
    s = slope.reshape(_slope_view(ctx.args, tuple(x.shape), tuple(slope.shape))).astype(x.dtype, copy=False)
    return np.where(x > 0, x, x * s)


def _prelu_grad_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    _slope_view(args, tuple(inputs[2].shape), tuple(inputs[3].shape))
    return [inputs[2], inputs[3]]


@defop("PReluGradient", inputs=4, outputs=2, args=PRELU_ARGS, category=OPAQUE, infer=_prelu_grad_infer)
def prelu_gradient(ctx, y, dy, x, slope):
    """[Y, dY, X, slope] -> [dX, dslope]: dX = dY where X > 0, else slope·dY; dslope = Σ dY·X over X ≤ 0."""
    view = _slope_view(ctx.args, tuple(x.shape), tuple(slope.shape))
    s = slope.reshape(view).astype(x.dtype, copy=False)
    dx = np.where(x > 0, dy, dy * s)
    contrib = np.where(x > 0, dy.dtype.type(0), dy * x)
    axes = tuple(i for i, v in enumerate(view) if v == 1)
    dslope = contrib.sum(axis=axes).reshape(slope.shape)
    return dx.astype(x.dtype, copy=False), dslope.astype(slope.dtype, copy=False)
