"""Fillers: value/dtype rules, shapes from args or inputs, seeded randomness and its moments,
inferred vs actual types, and their (absent) gradients."""
import math

import numpy as np
import pytest

from netjit.compiler.ops.common import ShapeDependsOnValues
from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.compiler.ops.registry import TensorType, lookup
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_op
from netjit.runtime.workspace import Workspace
from tests.ops.harness import check_infer, run_op

DT = caffe2_pb2.TensorProto
RANDOM = ["UniformFill", "UniformIntFill", "GaussianFill", "XavierFill", "MSRAFill"]
N = 100_000


def seeded(seed):
    return caffe2_pb2.DeviceOption(random_seed=seed)


# ---------------------------------------------------------------------------------------------
# ConstantFill
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,dtype,value", [
    ({}, np.float32, 0.0),
    ({"value": 2.5}, np.float32, 2.5),
    ({"value": 7}, np.int64, 7),                      # an int value without dtype gives INT64
    ({"value": 0}, np.int64, 0),
    ({"value": 1.5, "dtype": DT.DOUBLE}, np.float64, 1.5),
    ({"value": 1, "dtype": DT.BOOL}, np.bool_, True),
    ({"value": -3, "dtype": DT.INT8}, np.int8, -3),
    ({"value": 300, "dtype": DT.INT16}, np.int16, 300),
    ({"value": 5, "dtype": DT.INT32}, np.int32, 5),
    ({"value": 2**40, "dtype": DT.INT64}, np.int64, 2**40),
    ({"value": 255, "dtype": DT.UINT8}, np.uint8, 255),
    ({"value": 65535, "dtype": DT.UINT16}, np.uint16, 65535),
    ({"dtype": DT.INT32}, np.int32, 0),
    ({"value": "hi", "dtype": DT.STRING}, object, b"hi"),
    ({"dtype": DT.STRING}, object, b""),
])
@pytest.mark.parametrize("shape", [[2, 3], [4], []])
def test_constant_fill_value_and_dtype(kw, dtype, value, shape):
    (y,) = check_infer("ConstantFill", [], shape=shape, **kw)
    assert y.dtype == np.dtype(dtype) and y.shape == tuple(shape)
    assert all(v == value for v in y.reshape(-1))


def test_constant_fill_shape_from_input_and_extra_shape():
    x = np.zeros((2, 5), np.float64)
    (y,) = check_infer("ConstantFill", [x], value=3.0, extra_shape=[4])
    assert y.shape == (2, 5, 4) and y.dtype == np.float32 and np.all(y == 3)


def test_constant_fill_input_as_shape():
    dims = np.array([3, 1, 2], np.int64)
    (y,) = run_op("ConstantFill", [dims], value=1.0, input_as_shape=1)
    assert y.shape == (3, 1, 2)
    opdef = lookup("ConstantFill")
    op = make_op("ConstantFill", ["s"], ["y"], value=1.0, input_as_shape=1)
    with pytest.raises(ShapeDependsOnValues):
        opdef.infer(opdef.decode_args(op), [TensorType((3,), np.dtype(np.int64))])
    with pytest.raises(Exception, match="1-D int64"):
        run_op("ConstantFill", [dims.astype(np.int32)], value=1.0, input_as_shape=1)


def test_constant_fill_in_place_leaves_input_array_alone():
    ws = Workspace("t")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    ws.feed("x", x)
    from netjit.compiler.reference import run_operator_once
    run_operator_once(make_op("ConstantFill", ["x"], ["x"], value=9.0), ws)
    assert np.all(ws.fetch("x") == 9) and ws.fetch("x").shape == (2, 3)
    np.testing.assert_array_equal(x, np.arange(6).reshape(2, 3))


@pytest.mark.parametrize("inputs,kw,match", [
    ([], {"shape": [2], "value": 1, "dtype": DT.FLOAT}, r"must be a float for dtype FLOAT, got 1 \(write value=1.0\)"),
    ([], {"shape": [2], "value": 1.0, "dtype": DT.INT32}, "must be an int for dtype INT32"),
    ([], {"shape": [2], "value": "s"}, "needs dtype=STRING"),
    ([], {"shape": [2], "value": 300, "dtype": DT.INT8}, "does not fit"),
    ([], {"shape": [2], "dtype": DT.FLOAT16}, "does not support dtype FLOAT16"),
    ([], {"shape": [2], "dtype": DT.UNDEFINED}, "UNDEFINED"),
    ([], {"shape": 2}, "'shape' must be a list"),
    ([], {"shape": [2, -1]}, "negative"),
    ([], {"extra_shape": [2]}, "'extra_shape' needs an input"),
    ([], {"input_as_shape": 1}, "needs an input"),
    ([np.zeros(2)], {"shape": [2]}, "cannot set the 'shape' argument and pass an input"),
])
def test_constant_fill_errors(inputs, kw, match):
    with pytest.raises(Exception, match=match) as info:
        run_op("ConstantFill", inputs, **kw)
    assert "ConstantFill" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Random fillers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op_type", RANDOM)
def test_seed_repeats_and_seeds_differ(op_type):
    kw = {"shape": [50, 40]}
    if op_type == "UniformIntFill":
        kw.update(min=0, max=1000)
    (a,) = run_op(op_type, [], device_option=seeded(7), **kw)
    (b,) = run_op(op_type, [], device_option=seeded(7), **kw)
    (c,) = run_op(op_type, [], device_option=seeded(8), **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("op_type", RANDOM)
def test_random_fill_types_and_shapes(op_type):
    check_infer(op_type, [], shape=[3, 4, 5])
    (y,) = check_infer(op_type, [np.zeros((2, 3), np.int32)], extra_shape=[4])
    assert y.shape == (2, 3, 4)


def test_uniform_fill_moments():
    (y,) = run_op("UniformFill", [], shape=[N], min=-2.0, max=3.0, device_option=seeded(1))
    assert y.dtype == np.float32 and y.min() >= -2 and y.max() <= 3
    assert abs(y.mean() - 0.5) < 0.03 and abs(y.std() - 5 / math.sqrt(12)) < 0.02


def test_uniform_int_fill_closed_range():
    (y,) = run_op("UniformIntFill", [], shape=[N], min=-3, max=4, device_option=seeded(2))
    assert y.dtype == np.int32
    assert set(np.unique(y)) == set(range(-3, 5))
    assert abs(y.mean() - 0.5) < 0.05


def test_uniform_fill_requires_min_below_max():
    with pytest.raises(Exception, match=r"max \(1.0\) must be bigger than min \(1.0\)"):
        run_op("UniformFill", [], shape=[2], min=1.0, max=1.0)


def test_uniform_fill_min_max_inputs():
    like = np.zeros((5, 2), np.float32)
    (y,) = run_op("UniformFill", [like, np.array([2.0], np.float32), np.array([3.0], np.float32)])
    assert y.shape == (5, 2) and np.all((y >= 2) & (y <= 3))
    (e,) = run_op("UniformFill", [like, np.array([3.0], np.float32), np.array([2.0], np.float32)])
    assert e.shape == (0, 2) and e.dtype == np.float32  # min > max: an empty batch, not an error
    (i,) = run_op("UniformIntFill", [like, np.array([4], np.int32), np.array([4], np.int32)])
    assert i.dtype == np.int32 and np.all(i == 4)
    with pytest.raises(Exception, match="must not be set"):
        run_op("UniformFill", [like, np.float32(0), np.float32(1)], min=0.0)
    with pytest.raises(Exception, match="0, 1 or 3 inputs"):
        run_op("UniformFill", [like, np.float32(0)])


def test_gaussian_fill_moments():
    (y,) = run_op("GaussianFill", [], shape=[N], mean=1.5, std=0.5, device_option=seeded(3))
    assert y.dtype == np.float32
    assert abs(y.mean() - 1.5) < 0.01 and abs(y.std() - 0.5) < 0.01


def test_xavier_fill_bounds_and_moments():
    shape = [64, 25, 2, 2]                     # fan_in = numel / dim0 = 100
    (y,) = run_op("XavierFill", [], shape=shape, device_option=seeded(4))
    scale = math.sqrt(3 / 100)
    assert np.abs(y).max() <= scale + 1e-7
    assert abs(y.mean()) < 0.005 and abs(y.std() - scale / math.sqrt(3)) < 0.003


def test_msra_fill_moments():
    shape = [1000, 10, 10]                     # fan_out = numel / dim1 = 10_000
    (y,) = run_op("MSRAFill", [], shape=shape, device_option=seeded(5))
    assert abs(y.mean()) < 0.001 and abs(y.std() - math.sqrt(2 / 10_000)) < 0.0005


def test_fan_needs_rank():
    with pytest.raises(Exception, match="rank > 1"):
        run_op("MSRAFill", [], shape=[4])


# ---------------------------------------------------------------------------------------------
# GivenTensor*Fill and RangeFill
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op_type,values,dtype", [
    ("GivenTensorFill", [1.0, -2.5, 3.0, 0.25, 5.0, 6.0], np.float32),
    ("GivenTensorDoubleFill", [1.0, -2.5, 3.0, 0.125, 5.0, 6.0], np.float64),
    ("GivenTensorBoolFill", [1, 0, 0, 1, 1, 0], np.bool_),
    ("GivenTensorIntFill", [1, -2, 3, 2**31 - 1, 5, 6], np.int32),
    ("GivenTensorInt64Fill", [1, -2, 3, 2**62, 5, 6], np.int64),
    ("GivenTensorStringFill", [b"a", b"bc", b"\x00\xff", b"", b"e", b"f"], object),
])
def test_given_tensor_fills(op_type, values, dtype):
    (y,) = check_infer(op_type, [], shape=[2, 3], values=values)
    assert y.dtype == np.dtype(dtype) and y.shape == (2, 3)
    assert list(y.reshape(-1)) == [np.dtype(dtype).type(v) if dtype is not object else v for v in values]


def test_given_tensor_double_fill_values_travel_as_float32():
    # Argument.floats is a float32 field, so doubles lose precision on the way (as in Caffe2).
    (y,) = run_op("GivenTensorDoubleFill", [], shape=[1], values=[0.1])
    assert y.dtype == np.float64 and y[0] == np.float64(np.float32(0.1))


@pytest.mark.parametrize("dtype,values,expect", [
    (DT.DOUBLE, [0.5, 1.5], np.array([0.5, 1.5], np.float64)),
    (DT.INT32, [7, -7], np.array([7, -7], np.int32)),
    (DT.INT64, [2**40, 1], np.array([2**40, 1], np.int64)),
    (DT.BOOL, [0, 3], np.array([False, True])),
    (DT.STRING, ["x", "yz"], np.array([b"x", b"yz"], object)),
    ("int64", [1, 2], np.array([1, 2], np.int64)),   # a dtype name works too
])
def test_given_tensor_fill_dtype_reinterprets_values(dtype, values, expect):
    (y,) = check_infer("GivenTensorFill", [], shape=[2], values=values, dtype=dtype)
    assert y.dtype == expect.dtype
    assert list(y) == list(expect)


@pytest.mark.parametrize("op_type,kw,match", [
    ("GivenTensorFill", {"shape": [3], "values": [1.0, 2.0]}, r"2 values given for shape \[3\]"),
    ("GivenTensorFill", {"shape": [2], "values": [1, 2]}, "must be a list of floats"),
    ("GivenTensorFill", {"shape": [2], "values": [1.0, 2.0], "dtype": DT.INT32}, "must be a list of ints"),
    ("GivenTensorFill", {"shape": [2], "values": [1.0, 2.0], "dtype": DT.FLOAT16}, "does not support"),
    ("GivenTensorIntFill", {"shape": [1], "values": [2**31]}, "does not fit"),
    ("GivenTensorIntFill", {"shape": [1], "values": [1.0]}, "must be a list of ints"),
])
def test_given_tensor_fill_errors(op_type, kw, match):
    with pytest.raises(Exception, match=match):
        run_op(op_type, [], **kw)


def test_given_tensor_fill_from_input_shape():
    (y,) = check_infer("GivenTensorFill", [np.zeros((2,))], extra_shape=[2], values=[1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(y, [[1, 2], [3, 4]])


def test_range_fill():
    (y,) = check_infer("RangeFill", [], shape=[2, 3])
    np.testing.assert_array_equal(y, np.arange(6, dtype=np.float32).reshape(2, 3))


def test_run_once_is_accepted():
    (y,) = run_op("ConstantFill", [], shape=[1], value=1.0, run_once=0)
    assert y[0] == 1


@pytest.mark.parametrize("op_type", RANDOM + ["ConstantFill", "GivenTensorFill", "RangeFill"])
def test_fillers_have_no_gradient(op_type):
    ops, g_input = gradient_ops_for(make_op(op_type, ["x"], ["y"]), ["y_grad"])
    assert ops == [] and g_input == [None]
