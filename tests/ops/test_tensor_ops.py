"""Concat, Split, Slice, ChannelShuffle, ResizeNearest and PRelu: references vs explicit index loops,
inference vs actual, gradients vs finite differences, gradient op naming, argument errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.compiler.ops.per_channel import per_channel_info
from netjit.compiler.ops.registry import TensorType, lookup
from netjit.compiler.ops.tensor_ops import DataDependentShape
from netjit.compiler.reference import run_operator_once, run_ops
from netjit.proto.args import make_op
from netjit.runtime.workspace import Workspace
from tests.ops.harness import check_gradient, check_infer, run_op

TIGHT = dict(rtol=1e-6, atol=1e-8)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _grad_ops(op_type, inputs, outputs, g_output, **args):
    return gradient_ops_for(make_op(op_type, inputs, outputs, **args), g_output)


# --------------------------------------------------------------------------------------------
# Concat
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shapes,args,axis", [
    ([(2, 3, 4, 2), (2, 1, 4, 2), (2, 2, 4, 2)], {}, 1),                 # no args: order NCHW -> axis 1
    ([(2, 3, 4, 2), (2, 3, 4, 5)], dict(order="NHWC"), 3),
    ([(2, 3), (2, 4)], dict(axis=-1), 1),
    ([(1, 3), (4, 3)], dict(axis=0), 0),
    ([(5, 2)], dict(axis=1), 1),
])
def test_concat(shapes, args, axis):
    xs = [_rand(*s, seed=i) for i, s in enumerate(shapes)]
    y, info = check_infer("Concat", xs, n_outputs=2, **args)
    assert info.dtype == np.int32 and info.tolist() == [s[axis] for s in shapes]
    start = 0
    for x in xs:  # every input sits at its offset along the axis
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + x.shape[axis])
        np.testing.assert_array_equal(y[tuple(index)], x)
        start += x.shape[axis]
    assert y.shape[axis] == start
    check_gradient("Concat", xs, n_outputs=2, grad_outputs=[0], **args, **TIGHT)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_concat_add_axis(axis):
    xs = [_rand(2, 3, seed=i) for i in range(4)]
    y, info = check_infer("Concat", xs, n_outputs=2, axis=axis, add_axis=1)
    assert info.tolist() == [1, 1, 1, 1]
    for i, x in enumerate(xs):
        np.testing.assert_array_equal(np.take(y, i, axis=axis), x)
    check_gradient("Concat", xs, n_outputs=2, grad_outputs=[0], axis=axis, add_axis=1, **TIGHT)


def test_concat_gradient_names_and_ints():
    ops, g_in = _grad_ops("Concat", ["a", "b"], ["y", "y_info"], ["y_grad", None], order="NHWC")
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [("Split", ["y_grad", "y_info"], ["a_grad", "b_grad"])]
    assert g_in == ["a_grad", "b_grad"] and [a.name for a in ops[0].arg] == ["order"]
    a, b = np.arange(6, dtype=np.int32).reshape(2, 3), np.arange(2, dtype=np.int32).reshape(2, 1)
    y, _ = check_infer("Concat", [a, b], n_outputs=2)
    assert y.dtype == np.int32 and y.tolist() == [[0, 1, 2, 0], [3, 4, 5, 1]]
    with pytest.raises(Exception, match=r"dtype int32, input 0 has float64"):
        run_op("Concat", [np.zeros((1, 2)), np.zeros((1, 2), np.int32)], n_outputs=2)


@pytest.mark.parametrize("xs,args,match", [
    ([(2, 3), (2, 3)], dict(axis=1, order="NCHW"), r"set either axis or order, not both"),
    ([(2, 3), (3, 3)], dict(axis=1), r"input 1 has shape \(3, 3\), which does not match input 0 \(2, 3\) off axis 1"),
    ([(2, 3), (2, 3, 1)], dict(axis=1), r"does not match"),
    ([(2, 3), (2, 4)], dict(axis=0, add_axis=1), r"exactly \(add_axis=1\)"),
    ([(2, 3), (2, 3)], dict(axis=2), r"axis 2 is out of range for 2-D"),
])
def test_concat_errors(xs, args, match):
    with pytest.raises(Exception, match=r"\(Concat\).*" + match):
        run_op("Concat", [np.zeros(s) for s in xs], n_outputs=2, **args)


# --------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,args,sizes,axis", [
    ((2, 6, 3), dict(split=[1, 3, 2]), [1, 3, 2], 1),
    ((2, 6, 3), {}, [2, 2, 2], 1),                                     # equal parts along order's C
    ((4, 3, 2, 5), dict(order="NHWC", split=[4, 1]), [4, 1], 3),
    ((6, 2), dict(axis=0, split=[0, 6]), [0, 6], 0),
    ((3, 4), dict(axis=-1), [2, 2], 1),
])
def test_split(shape, args, sizes, axis):
    x = _rand(*shape)
    parts = check_infer("Split", [x], n_outputs=len(sizes), **args)
    start = 0
    for part, size in zip(parts, sizes):
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + size)
        np.testing.assert_array_equal(part, x[tuple(index)])
        start += size
    check_gradient("Split", [x], n_outputs=len(sizes), **args, **TIGHT)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_split_sizes_as_input(dtype):
    x = _rand(2, 5)
    sizes = np.array([2, 3], dtype)
    a, b = run_op("Split", [x, sizes], n_outputs=2, axis=1)
    np.testing.assert_array_equal(a, x[:, :2])
    np.testing.assert_array_equal(b, x[:, 2:])
    opdef = lookup("Split")
    op = make_op("Split", ["x", "s"], ["a", "b"], axis=1)
    with pytest.raises(DataDependentShape, match=r"depend on its values"):
        opdef.infer(opdef.decode_args(op), [TensorType(x.shape, x.dtype), TensorType((2,), np.dtype(dtype))])
    ops, g_in = _grad_ops("Split", ["x", "s"], ["a", "b"], ["a_g", "b_g"], axis=1)
    assert g_in == ["x_grad", None]
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [("Concat", ["a_g", "b_g"], ["x_grad", "_x_grad_dims"])]


def test_split_add_axis_and_partial_gradients():
    x = _rand(2, 3, 4)
    parts = check_infer("Split", [x], n_outputs=3, axis=1, add_axis=1)
    for i, part in enumerate(parts):
        np.testing.assert_array_equal(part, x[:, i])
    check_gradient("Split", [x], n_outputs=3, axis=1, add_axis=1, **TIGHT)
    # Caffe2 concatenates only the gradients that exist.
    ops, g_in = _grad_ops("Split", ["x"], ["a", "b", "c"], [None, "b_g", "c_g"], axis=1)
    assert list(ops[0].input) == ["b_g", "c_g"] and g_in == ["x_grad"]
    assert _grad_ops("Split", ["x"], ["a", "b"], [None, None], axis=1) == ([], [None])


@pytest.mark.parametrize("inputs,n_out,args,match", [
    ([np.zeros((2, 5))], 2, dict(axis=1), r"dim 1 of size 5 does not divide into 2 equal parts"),
    ([np.zeros((2, 5))], 2, dict(axis=1, split=[2, 2]), r"sizes \[2, 2\] do not add up to dim 1 of size 5"),
    ([np.zeros((2, 5))], 3, dict(axis=1, split=[2, 3]), r"2 sizes \[2, 3\] for 3 outputs"),
    ([np.zeros((2, 5)), np.array([2, 3], np.int32)], 2, dict(axis=1, split=[2, 3]), r"not both"),
    ([np.zeros((2, 4))], 2, dict(axis=1, add_axis=1), r"every part must have size 1"),
])
def test_split_errors(inputs, n_out, args, match):
    with pytest.raises(Exception, match=r"\(Split\).*" + match):
        run_op("Split", inputs, n_outputs=n_out, **args)


# --------------------------------------------------------------------------------------------
# Slice
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,starts,ends,expect_index", [
    ((3, 5, 2), [0, 1], [-1, 3], (slice(0, 3), slice(1, 3), slice(0, 2))),
    ((3, 5, 2), [0, 2, 0], [-1, -1, -1], (slice(0, 3), slice(2, 5), slice(0, 2))),
    ((3, 5, 2), [0, 0, 1], [3, 5, -1], (slice(0, 3), slice(0, 5), slice(1, 2))),
    ((4, 3), [-3, 0], [-2, 3], (slice(2, 3), slice(0, 3))),           # -3 -> 4+1-3 = 2; -2 -> 3
    ((4, 3), [1], [9], (slice(1, 4), slice(0, 3))),                   # an end past the dim is clamped
    ((4, 3), [0, 0], [-1, -1], (slice(0, 4), slice(0, 3))),           # nothing cut: a copy
])
def test_slice(shape, starts, ends, expect_index):
    x = _rand(*shape)
    (y,) = check_infer("Slice", [x], starts=starts, ends=ends)
    np.testing.assert_array_equal(y, x[expect_index])
    check_gradient("Slice", [x], starts=starts, ends=ends, **TIGHT)
    for dtype in (np.int32, np.int64):
        s, e = np.array(starts, dtype), np.array(ends, dtype)
        (y2,) = run_op("Slice", [x, s, e])
        np.testing.assert_array_equal(y2, y)
        check_gradient("Slice", [x, s, e], wrt=[0], **TIGHT)
    (dx,) = check_infer("SliceGradient", [x, y], starts=starts, ends=ends)
    expect = np.zeros_like(x)
    expect[expect_index] = y
    np.testing.assert_array_equal(dx, expect)


def test_slice_gradient_names():
    ops, g_in = _grad_ops("Slice", ["x"], ["y"], ["y_g"], starts=[0, 1], ends=[-1, 2])
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [("SliceGradient", ["x", "y_g"], ["x_grad"])]
    ops, g_in = _grad_ops("Slice", ["x", "s", "e"], ["y"], ["y_g"])
    assert list(ops[0].input) == ["x", "s", "e", "y_g"] and g_in == ["x_grad", None, None]
    opdef = lookup("Slice")
    with pytest.raises(DataDependentShape):
        opdef.infer(opdef.decode_args(make_op("Slice", ["x", "s", "e"], ["y"])),
                    [TensorType((2, 2), np.dtype(np.float32))] + [TensorType((2,), np.dtype(np.int32))] * 2)


@pytest.mark.parametrize("inputs,args,match", [
    ([np.zeros((3, 4))], dict(starts=[1, 1], ends=[2, 3]), r"can cut only one dimension.*cut dims \[0, 1\]"),
    ([np.zeros((3, 4))], dict(starts=[2], ends=[1]), r"empty or reversed range"),
    ([np.zeros((3, 4))], dict(starts=[0, 0], ends=[1]), r"differ in length"),
    ([np.zeros((3, 4))], dict(starts=[0, 0, 0], ends=[1, 1, 1]), r"3 starts for 2-D data"),
    ([np.zeros((3, 4)), np.array([0], np.int32), np.array([1], np.int32)], dict(starts=[0], ends=[1]), r"not both"),
    ([np.zeros((3, 4)), np.array([0], np.int32)], {}, r"takes 1 input \(data\) or 3"),
])
def test_slice_errors(inputs, args, match):
    with pytest.raises(Exception, match=r"\(Slice\).*" + match):
        run_op("Slice", inputs, **args)


# --------------------------------------------------------------------------------------------
# ChannelShuffle
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,group", [((2, 6, 3, 2), 2), ((2, 6, 3, 2), 3), ((1, 12, 2, 2), 4), ((2, 4, 3), 1),
                                         ((1, 6, 2, 2, 2), 6)])
def test_channel_shuffle(shape, group):
    x = _rand(*shape)
    (y,) = check_infer("ChannelShuffle", [x], group=group)
    k = shape[1] // group
    for g in range(group):
        for i in range(k):
            np.testing.assert_array_equal(y[:, i * group + g], x[:, g * k + i])
    check_gradient("ChannelShuffle", [x], group=group, **TIGHT)
    (back,) = check_infer("ChannelShuffleGradient", [y], group=group)
    np.testing.assert_array_equal(back, x)
    ops, _ = _grad_ops("ChannelShuffle", ["x"], ["y"], ["y_g"], group=group)
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [("ChannelShuffleGradient", ["y_g"], ["x_grad"])]


def test_channel_shuffle_errors():
    with pytest.raises(Exception, match=r"6 channels do not divide into group=4"):
        run_op("ChannelShuffle", [np.zeros((1, 6, 2, 2))], group=4)
    with pytest.raises(Exception, match=r"order NCHW only"):
        run_op("ChannelShuffle", [np.zeros((1, 2, 2, 6))], group=2, order="NHWC")


# --------------------------------------------------------------------------------------------
# ResizeNearest
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hs,ws", [(2.0, 2.0), (1.5, 0.5), (0.6, 1.7), (1.0, 1.0), (3.0, 1.0)])
def test_resize_nearest(hs, ws):
    x = _rand(2, 3, 5, 4)
    (y,) = check_infer("ResizeNearest", [x], height_scale=hs, width_scale=ws)
    h32, w32 = np.float32(hs), np.float32(ws)  # float arguments are 32-bit, and Caffe2 computes in float
    assert y.shape == (2, 3, int(np.float32(5) * h32), int(np.float32(4) * w32))
    for oy in range(y.shape[2]):
        for ox in range(y.shape[3]):
            iy = min(int(np.float32(oy) / h32), 4)
            ix = min(int(np.float32(ox) / w32), 3)
            np.testing.assert_array_equal(y[:, :, oy, ox], x[:, :, iy, ix])
    check_gradient("ResizeNearest", [x], height_scale=hs, width_scale=ws, **TIGHT)
    (dx,) = check_infer("ResizeNearestGradient", [y, x], height_scale=hs, width_scale=ws)
    assert dx.shape == x.shape
    ops, g_in = _grad_ops("ResizeNearest", ["x"], ["y"], ["y_g"], height_scale=hs, width_scale=ws)
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [("ResizeNearestGradient", ["y_g", "x"],
                                                                        ["x_grad"])]


def test_resize_nearest_errors():
    with pytest.raises(Exception, match=r"order NCHW only"):
        run_op("ResizeNearest", [np.zeros((1, 2, 2, 3))], order="NHWC")
    with pytest.raises(Exception, match=r"scales must be positive"):
        run_op("ResizeNearest", [np.zeros((1, 2, 2, 3))], width_scale=0.0)
    with pytest.raises(Exception, match=r"output size 0x6 is empty"):
        run_op("ResizeNearest", [np.zeros((1, 2, 2, 3))], height_scale=0.25, width_scale=2.0)
    with pytest.raises(Exception, match=r"4-D NCHW"):
        run_op("ResizeNearest", [np.zeros((2, 2, 3))])


# --------------------------------------------------------------------------------------------
# PRelu
# --------------------------------------------------------------------------------------------
def _away_from_zero(x):
    return np.where(np.abs(x) < 0.05, 0.5, x)


@pytest.mark.parametrize("shape,order,slope_size", [((2, 3, 4, 2), "NCHW", 3), ((2, 4, 2, 3), "NHWC", 3),
                                                    ((2, 3, 4, 2), "NCHW", 1), ((5, 4), "NCHW", 4), ((7,), "NCHW", 1)])
def test_prelu(shape, order, slope_size):
    x = _away_from_zero(_rand(*shape))
    slope = _rand(slope_size, seed=1)
    (y,) = check_infer("PRelu", [x, slope], order=order)
    axis = 1 if order == "NCHW" else len(shape) - 1
    for idx in np.ndindex(x.shape):
        a = slope[0] if slope_size == 1 else slope[idx[axis]]
        assert y[idx] == (x[idx] if x[idx] > 0 else a * x[idx])
    check_gradient("PRelu", [x, slope], order=order, **TIGHT)
    check_infer("PReluGradient", [y, y, x, slope], n_outputs=2, order=order)
    ops, g_in = _grad_ops("PRelu", ["x", "w"], ["y"], ["y_g"], order=order)
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [("PReluGradient", ["y", "y_g", "x", "w"],
                                                                        ["x_grad", "w_grad"])]
    # The per-channel expression the fuser renders agrees with the reference.
    info = per_channel_info("PRelu", {"order": order})
    for idx in np.ndindex(x.shape):
        a = slope[0] if slope_size == 1 else slope[idx[axis]]
        got = eval(info.expr, {"__builtins__": {}}, {"x0": x[idx], "x1": a})
        assert math.isclose(got, y[idx], rel_tol=1e-15)


def test_prelu_in_place_and_errors():
    ws = Workspace("p")
    x = np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32)
    ws.feed("X", x)
    ws.feed("W", np.array([0.5, 0.25], np.float32))
    run_operator_once(make_op("PRelu", ["X", "W"], ["X"]), ws)
    np.testing.assert_array_equal(ws.fetch("X"), [[-0.5, 2.0], [3.0, -1.0]])
    with pytest.raises(Exception, match=r"slope has shape \(3,\); expected \[1\] or \[2\]"):
        run_op("PRelu", [x, np.ones(3, np.float32)])
    ops, _ = _grad_ops("PRelu", ["X", "W"], ["X"], ["X_g"])
    ws.feed("X_g", np.ones((2, 2), np.float32))
    run_ops(ops, ws)  # reads X (already overwritten) as Caffe2 does when PRelu runs in place
    assert ws.fetch("W_grad").shape == (2,)
