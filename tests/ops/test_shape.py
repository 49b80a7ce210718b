"""Shape ops: Reshape rules (0, -1, shape input, old_shape), Flatten/FlattenToVec/ResizeLike,
Transpose and its inverse-permutation gradient, ExpandDims/Squeeze; inference and gradients."""
import numpy as np
import pytest

from netjit.compiler.ops.common import ShapeDependsOnValues
from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.compiler.ops.registry import TensorType, lookup
from netjit.compiler.reference import run_operator_once
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_op
from netjit.runtime.workspace import Workspace
from tests.ops.harness import check_gradient, check_infer, run_op

RNG = np.random.default_rng(4)


# ---------------------------------------------------------------------------------------------
# Reshape
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("in_shape,new,expect", [
    ((2, 3, 4), [6, 4], (6, 4)),
    ((2, 3, 4), [0, -1], (2, 12)),
    ((2, 3, 4), [-1], (24,)),
    ((2, 3, 4), [4, 0, 2], (4, 3, 2)),
    ((2, 3), [3, 2, 1, 1], (3, 2, 1, 1)),
    ((1,), [], ()),
    ((0, 3), [0, 5], (0, 5)),
])
def test_reshape_shape_arg(in_shape, new, expect):
    x = RNG.standard_normal(in_shape)
    y, old = check_infer("Reshape", [x], n_outputs=2, shape=new)
    assert y.shape == expect
    np.testing.assert_array_equal(y.reshape(-1), x.reshape(-1))
    assert old.dtype == np.int64 and list(old) == list(in_shape)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_reshape_shape_input(dtype):
    x = RNG.standard_normal((2, 6))
    y, old = run_op("Reshape", [x, np.array([3, -1], dtype)], n_outputs=2)
    assert y.shape == (3, 4) and old.dtype == dtype and list(old) == [2, 6]
    opdef = lookup("Reshape")
    op = make_op("Reshape", ["x", "s"], ["y", "o"])
    with pytest.raises(ShapeDependsOnValues):
        opdef.infer(opdef.decode_args(op), [TensorType((2, 6), x.dtype), TensorType((2,), np.dtype(dtype))])


@pytest.mark.parametrize("inputs,kw,match", [
    ([np.zeros((2, 3))], {"shape": [-1, -1]}, "more than one -1"),
    ([np.zeros((2, 3))], {"shape": [4, -1]}, "does not agree"),
    ([np.zeros((2, 3))], {"shape": [7]}, "has 7 elements but the input has 6"),
    ([np.zeros((2, 3))], {"shape": [2, 3, 0]}, "zero size"),
    ([np.zeros((0, 3))], {"shape": [0, -1]}, "cannot be inferred when the shape contains a 0"),
    ([np.zeros((2, 3))], {}, "'shape' argument is missing"),
    ([np.zeros((2, 3)), np.array([6], np.int64)], {"shape": [6]}, "do not also pass"),
    ([np.zeros((2, 3)), np.array([6.0])], {}, "1-D int32 or int64"),
])
def test_reshape_errors(inputs, kw, match):
    with pytest.raises(Exception, match=match):
        run_op("Reshape", inputs, n_outputs=2, **kw)


def test_reshape_in_place_and_gradient():
    ws = Workspace("t")
    x = np.arange(6.0).reshape(2, 3)
    ws.feed("x", x)
    run_operator_once(make_op("Reshape", ["x"], ["x", "old"], shape=[3, 2]), ws)
    assert ws.fetch("x").shape == (3, 2) and x.shape == (2, 3)
    check_gradient("Reshape", [RNG.standard_normal((2, 3, 2))], n_outputs=2, grad_outputs=[0], shape=[3, -1],
                   rtol=1e-7, atol=1e-9)
    op = make_op("Reshape", ["X"], ["Y", "Y_old"], shape=[-1], device_option=caffe2_pb2.DeviceOption(device_type=1),
                 engine="X")
    ops, g_input = gradient_ops_for(op, ["Y_grad", None])
    (gop,) = ops
    assert (gop.type, list(gop.input), list(gop.output)) == ("Reshape", ["Y_grad", "Y_old"],
                                                           ["X_grad", "_X_grad_dims"])
    assert len(gop.arg) == 0 and gop.device_option.device_type == 1 and gop.engine == "X"
    assert g_input == ["X_grad"]


# ---------------------------------------------------------------------------------------------
# Flatten, FlattenToVec, ResizeLike
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,axis,expect", [((2, 3, 4), 1, (2, 12)), ((2, 3, 4), 2, (6, 4)),
                                               ((2, 3, 4), 0, (1, 24)), ((2, 3), 2, (6, 1))])
def test_flatten(shape, axis, expect):
    x = RNG.standard_normal(shape)
    (y,) = check_infer("Flatten", [x], axis=axis)
    assert y.shape == expect
    np.testing.assert_array_equal(y.reshape(-1), x.reshape(-1))
    check_gradient("Flatten", [x], axis=axis, rtol=1e-7, atol=1e-9)
    ops, _ = gradient_ops_for(make_op("Flatten", ["X"], ["Y"]), ["Y_grad"])
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [("ResizeLike", ["Y_grad", "X"], ["X_grad"])]


def test_flatten_axis_out_of_range():
    with pytest.raises(Exception, match="axis 3 is out of range"):
        run_op("Flatten", [np.zeros((2, 2))], axis=3)


@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 1, 3)])
def test_flatten_to_vec(shape):
    x = RNG.standard_normal(shape)
    (y,) = check_infer("FlattenToVec", [x])
    np.testing.assert_array_equal(y, x.reshape(-1))
    check_gradient("FlattenToVec", [x], rtol=1e-7, atol=1e-9)


def test_resize_like():
    x = np.arange(6, dtype=np.int32)
    (y,) = check_infer("ResizeLike", [x, np.zeros((3, 2), np.float32)])
    assert y.dtype == np.int32 and y.shape == (3, 2)
    with pytest.raises(Exception, match="6 elements but input 1 has shape"):
        run_op("ResizeLike", [x, np.zeros(5)])
    with pytest.raises(ValueError, match="does not differentiate"):
        gradient_ops_for(make_op("ResizeLike", ["a", "b"], ["c"]), ["c_grad"])


# ---------------------------------------------------------------------------------------------
# Transpose
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,axes", [((3, 4), None), ((2, 3, 4), None), ((2, 3, 4), [1, 2, 0]),
                                        ((2, 3, 4, 5), [0, 2, 3, 1])])
def test_transpose(shape, axes):
    x = RNG.standard_normal(shape)
    kw = {} if axes is None else {"axes": axes}
    (y,) = check_infer("Transpose", [x], **kw)
    perm = axes if axes is not None else list(reversed(range(len(shape))))
    for idx in np.ndindex(*y.shape):
        src = [0] * len(shape)
        for i, a in enumerate(perm):
            src[a] = idx[i]
        assert y[idx] == x[tuple(src)]
    check_gradient("Transpose", [x], rtol=1e-7, atol=1e-9, **kw)


def test_transpose_gradient_uses_inverse_permutation():
    op = make_op("Transpose", ["X"], ["Y"], axes=[1, 2, 0], order="NCHW")
    (gop,), g_input = gradient_ops_for(op, ["Y_grad"])
    assert gop.type == "Transpose" and list(gop.input) == ["Y_grad"] and g_input == ["X_grad"]
    assert [a.name for a in gop.arg] == ["axes", "order"]   # forward args once, axes inverted in place
    assert list(gop.arg[0].ints) == [2, 0, 1]


def test_transpose_bad_axes():
    with pytest.raises(Exception, match="not a permutation"):
        run_op("Transpose", [np.zeros((2, 3))], axes=[0, 0])


# ---------------------------------------------------------------------------------------------
# ExpandDims / Squeeze
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,dims,expect", [((3, 4), [0], (1, 3, 4)), ((3, 4), [0, 3], (1, 3, 4, 1)),
                                               ((3, 4), [2, 1, 2], (3, 1, 1, 4)), ((), [0], (1,))])
def test_expand_dims_and_squeeze(shape, dims, expect):
    x = RNG.standard_normal(shape)
    (y,) = check_infer("ExpandDims", [x], dims=dims)
    assert y.shape == expect
    (z,) = check_infer("Squeeze", [y], dims=dims)
    np.testing.assert_array_equal(z, x)
    if x.size > 1:
        check_gradient("ExpandDims", [x], dims=dims, rtol=1e-7, atol=1e-9)
        check_gradient("Squeeze", [y], dims=dims, rtol=1e-7, atol=1e-9)
    ops, _ = gradient_ops_for(make_op("ExpandDims", ["X"], ["Y"], dims=dims), ["Y_grad"])
    assert ops[0].type == "Squeeze" and [a.name for a in ops[0].arg] == ["dims"]


@pytest.mark.parametrize("op_type,shape,dims,match", [
    ("Squeeze", (3, 4), [0], "dimension 0 of the input must be 1"),
    ("Squeeze", (1, 4), [2], "rank >= 3"),
    ("ExpandDims", (3,), [3], "rank >= 3"),
    ("Squeeze", (1,), [], "'dims' argument must be given"),
    ("ExpandDims", (1,), [-1], "non-negative"),
])
def test_dims_errors(op_type, shape, dims, match):
    with pytest.raises(Exception, match=match):
        run_op(op_type, [np.zeros(shape)], dims=dims)


@pytest.mark.parametrize("op_type,inputs", [
    ("Transpose", [np.array(3.0, np.float32)]),
    ("And", [np.array(True), np.array(False)]),
    ("GT", [np.array(3.0, np.float32), np.array(1.0, np.float32)]),
])
def test_zero_dim_data_stays_zero_dim(op_type, inputs):
    """0-d in, 0-d out, as inference says (np.ascontiguousarray would have made it 1-d)."""
    (out,) = check_infer(op_type, inputs)
    assert out.shape == ()
