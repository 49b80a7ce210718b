"""The Python op: tokens, TensorCPU handles, pass_workspace, builders, gradients (PythonGradient)."""
from __future__ import annotations

import numpy as np
import pytest

from netjit import core, workspace
from netjit.compiler.ops import python_op
from netjit.compiler.ops.python_op import register_python_function


def _double(inputs, outputs):
    outputs[0].feed(2 * inputs[0].data)


def _double_grad(inputs, outputs):
    # inputs: [x, y, dy]; outputs: [dx]
    outputs[0].reshape(inputs[2].shape)
    outputs[0].data[...] = 2 * inputs[2].data


def test_forward_feed_and_op_layout():
    net = core.Net("py")
    y = net.Python(_double)(["x"], ["y"])
    assert str(y) == "y"
    op = net.Proto().op[0]
    assert op.type == "Python"
    assert [a.name for a in op.arg] == ["grad_output_indices", "grad_input_indices", "token"]
    assert op.arg[2].s.decode().startswith("_double")
    workspace.FeedBlob("x", np.array([3.0, -1.0], np.float32))
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob("y"), [6.0, -2.0])


def test_tokens_are_numbered_per_function_name():
    def same_name(inputs, outputs):
        pass
    first = register_python_function(same_name)
    second = register_python_function(same_name)
    assert second != first and second.startswith(first.split(":")[0] + ":")
    assert python_op.registered_function(first).func is same_name


def test_reshape_then_write_data_in_place():
    def f_reshape(inputs, outputs):
        outputs[0].reshape(inputs[0].shape)
        outputs[0].data[...] = 2 * inputs[0].data

    net = core.Net("py_reshape")
    net.Python(f_reshape)(["x"], ["y"])
    workspace.FeedBlob("x", np.arange(6, dtype=np.float64).reshape(2, 3))
    workspace.RunNetOnce(net)
    y = workspace.FetchBlob("y")
    assert y.dtype == np.float32  # reshape of a fresh tensor gives float data, as Caffe2's did
    np.testing.assert_array_equal(y, 2 * np.arange(6).reshape(2, 3))


def test_in_place_and_input_mutation_land_in_the_workspace():
    def bump(inputs, outputs):
        inputs[0].data[...] += 1          # same blob as outputs[0]
        outputs[1].init([2], core.DataType.INT32)
        outputs[1].data[:] = [7, 8]

    def scale_input(inputs, outputs):
        inputs[0].data[...] *= 10         # an input that is not an output

    net = core.Net("py_inplace")
    net.Python(bump)(["x"], ["x", "k"])
    net.Python(scale_input)(["x"], [])
    workspace.FeedBlob("x", np.zeros(3, np.float32))
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob("x"), [10, 10, 10])
    k = workspace.FetchBlob("k")
    assert k.dtype == np.int32 and list(k) == [7, 8]


def test_failure_leaves_blobs_untouched():
    def broken(inputs, outputs):
        outputs[0].feed(np.ones(2))
        inputs[0].data[...] = 5
        raise RuntimeError("boom")

    net = core.Net("py_fail")
    net.Python(broken)(["x"], ["y"])
    workspace.FeedBlob("x", np.zeros(2, np.float32))
    with pytest.raises(Exception, match="boom"):
        workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob("x"), [0, 0])


def test_pass_workspace_reads_other_blobs():
    def f_workspace(inputs, outputs, workspace):
        outputs[0].feed(2 * workspace.blobs["x"].fetch())

    net = core.Net("py_ws")
    net.Python(f_workspace, pass_workspace=True)([], ["y"])
    workspace.FeedBlob("x", np.array([1.5], np.float32))
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob("y"), [3.0])


def test_reading_an_unset_output_explains():
    def read_unset(inputs, outputs):
        outputs[0].data[...] = 1

    net = core.Net("py_unset")
    net.Python(read_unset)([], ["fresh"])
    with pytest.raises(Exception, match="holds no tensor yet"):
        workspace.RunNetOnce(net)


# Builders must be importable (pickled by reference): the op rebuilds f from (func, args, kwargs).
def make_scaler(factor):
    def scaler(inputs, outputs):
        outputs[0].feed(factor * inputs[0].data)
    return scaler


def make_scaler_grad(factor):
    def scaler_grad(inputs, outputs):
        outputs[0].feed(factor * inputs[2].data)
    return scaler_grad


def test_pickled_builder_survives_serialization():
    net = core.Net("py_pickled")
    net.Python((make_scaler, [3.0], {}), (make_scaler_grad, [3.0], {}))(["x"], ["y"])
    op = net.Proto().op[0]
    assert {a.name for a in op.arg} >= {"pickled_builder", "pickled_grad_builder", "pass_workspace"}
    assert "token" not in {a.name for a in op.arg}
    net.AddGradientOperators(["y"])
    reloaded = core.Net(type(net.Proto()).FromString(net.Proto().SerializeToString()))
    workspace.FeedBlob("x", np.array([1.0, 2.0], np.float32))
    workspace.RunNetOnce(reloaded)
    np.testing.assert_array_equal(workspace.FetchBlob("y"), [3.0, 6.0])
    np.testing.assert_array_equal(workspace.FetchBlob("x_grad"), [3.0, 3.0])
    with pytest.raises(ValueError, match="both f and grad_f"):
        net.Python((make_scaler, [1.0], {}), make_scaler_grad(1.0))


def test_gradient_op_layout_and_values():
    net = core.Net("py_grad")
    net.Python(_double, _double_grad)(["x"], ["y"])
    grad_map = net.AddGradientOperators(["y"])
    grad_op = net.Proto().op[-1]
    assert grad_op.type == "PythonGradient" and grad_op.is_gradient_op
    assert list(grad_op.input) == ["x", "y", "y_autogen_grad"] and list(grad_op.output) == ["x_grad"]
    assert grad_map[core.BlobReference("x")] == "x_grad"
    workspace.FeedBlob("x", np.array([3.0], np.float32))
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob("x_grad"), [2.0])


def test_gradient_index_subsets():
    def two_out(inputs, outputs):
        a, b = inputs[0].data, inputs[1].data
        outputs[0].feed(a * b)
        outputs[1].feed(a + b)

    def two_out_grad(inputs, outputs):
        # inputs: [a, b, prod, total, d prod]; outputs: [d b] only
        a, d_prod = inputs[0].data, inputs[4].data
        outputs[0].feed(d_prod * a)

    net = core.Net("py_subsets")
    prod, _ = net.Python(two_out, two_out_grad, grad_output_indices=[0], grad_input_indices=[1])(
        ["a", "b"], ["prod", "total"])
    grad_map = net.AddGradientOperators([prod])
    grad_op = net.Proto().op[-1]
    assert list(grad_op.input) == ["a", "b", "prod", "total", "prod_autogen_grad"]
    assert list(grad_op.output) == ["b_grad"]
    assert core.BlobReference("a") not in grad_map
    workspace.FeedBlob("a", np.array([2.0, 5.0], np.float32))
    workspace.FeedBlob("b", np.array([1.0, 1.0], np.float32))
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob("b_grad"), [2.0, 5.0])


def test_python_func_type_supplies_forward_and_backward():
    class Cube:
        def __init__(self, payload):
            self.payload = payload

        def forward(self, inputs, outputs):
            outputs[0].feed(inputs[0].data ** 3)

        def backward(self, inputs, outputs):
            x, dy = inputs[0].data, inputs[2].data
            outputs[0].feed(3 * x ** 2 * dy)

    net = core.Net("py_type")
    net.Python(None, python_func_type=Cube)(["x"], ["y"])
    net.AddGradientOperators(["y"])
    workspace.FeedBlob("x", np.array([2.0], np.float32))
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob("y"), [8.0])
    np.testing.assert_array_equal(workspace.FetchBlob("x_grad"), [12.0])


def test_missing_token_is_a_clear_error():
    op = core.CreateOperator("Python", ["x"], ["y"], token="never_registered_fn")
    workspace.FeedBlob("x", np.zeros(1, np.float32))
    with pytest.raises(Exception, match="never_registered_fn"):
        workspace.RunOperatorOnce(op)


def test_python_op_inside_training_loop_keeps_state_between_runs():
    calls = []

    def counter(inputs, outputs):
        calls.append(1)
        outputs[0].feed(np.array([len(calls)], np.int64))

    net = core.Net("py_loop")
    net.Python(counter)([], ["n"])
    workspace.CreateNet(net)
    workspace.RunNet(net.Name(), 3)
    assert workspace.FetchBlob("n")[0] == 3
