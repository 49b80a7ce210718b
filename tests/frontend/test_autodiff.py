"""AddGradientOperators: op lists of the tutorials' nets, fan-out accumulation, in-place ops,
StopGradient, the returned map, error cases, and gradients checked against finite differences."""
from __future__ import annotations

import numpy as np
import pytest

from netjit import brew, core, workspace
from netjit.autodiff import GradientConstructionError, GradientRegistry, add_gradient_operators
from netjit.model_helper import ModelHelper
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_op


def _listing(ops) -> list[tuple[str, list[str], list[str]]]:
    return [(op.type, list(op.input), list(op.output)) for op in ops]


def _grad_part(net: core.Net, n_forward: int) -> list[tuple[str, list[str], list[str]]]:
    return _listing(net.Proto().op[n_forward:])


# ------------------------------------------------------------------------------------------
# The tutorials' nets
# ------------------------------------------------------------------------------------------
def _lenet_training_model() -> tuple[ModelHelper, int]:
    """The MNIST tutorial's LeNet with its input preprocessing and training ops."""
    model = ModelHelper(name="mnist_train")
    data = model.Cast("data_uint8", "data", to=core.DataType.FLOAT)
    data = model.Scale(data, data, scale=float(1.0 / 256))
    data = model.StopGradient(data, data)
    conv1 = brew.conv(model, data, "conv1", dim_in=1, dim_out=20, kernel=5)
    pool1 = brew.max_pool(model, conv1, "pool1", kernel=2, stride=2)
    conv2 = brew.conv(model, pool1, "conv2", dim_in=20, dim_out=50, kernel=5)
    pool2 = brew.max_pool(model, conv2, "pool2", kernel=2, stride=2)
    fc3 = brew.fc(model, pool2, "fc3", dim_in=50 * 4 * 4, dim_out=500)
    relu = brew.relu(model, fc3, fc3)
    pred = brew.fc(model, relu, "pred", 500, 10)
    softmax = brew.softmax(model, pred, "softmax")
    xent = model.LabelCrossEntropy([softmax, "label"], "xent")
    loss = model.AveragedLoss(xent, "loss")
    brew.accuracy(model, [softmax, "label"], "accuracy")
    n_forward = len(model.net.Proto().op)
    model.AddGradientOperators([loss])
    return model, n_forward


def test_mnist_lenet_gradient_ops_in_order():
    model, n = _lenet_training_model()
    assert _grad_part(model.net, n) == [
        ("ConstantFill", ["loss"], ["loss_autogen_grad"]),
        ("AveragedLossGradient", ["xent", "loss_autogen_grad"], ["xent_grad"]),
        ("LabelCrossEntropyGradient", ["softmax", "label", "xent_grad"], ["softmax_grad"]),
        ("SoftmaxGradient", ["softmax", "softmax_grad"], ["pred_grad"]),
        ("FCGradient", ["fc3", "pred_w", "pred_grad"], ["pred_w_grad", "pred_b_grad", "fc3_grad"]),
        ("ReluGradient", ["fc3", "fc3_grad"], ["fc3_grad"]),
        ("FCGradient", ["pool2", "fc3_w", "fc3_grad"], ["fc3_w_grad", "fc3_b_grad", "pool2_grad"]),
        ("MaxPoolGradient", ["conv2", "pool2", "pool2_grad"], ["conv2_grad"]),
        ("ConvGradient", ["pool1", "conv2_w", "conv2_grad"], ["conv2_w_grad", "conv2_b_grad", "pool1_grad"]),
        ("MaxPoolGradient", ["conv1", "pool1", "pool1_grad"], ["conv1_grad"]),
        ("ConvGradient", ["data", "conv1_w", "conv1_grad"], ["conv1_w_grad", "conv1_b_grad", "data_grad"]),
    ]
    ops = model.net.Proto().op[n:]
    assert not ops[0].is_gradient_op  # the seed is an ordinary op
    assert all(op.is_gradient_op for op in ops[1:])
    # The seed fills ones shaped like the loss.
    assert [(a.name, a.f) for a in ops[0].arg] == [("value", 1.0)]


def test_mnist_param_to_grad_and_stop_gradient():
    model, _ = _lenet_training_model()
    assert {str(p): str(g) for p, g in model.param_to_grad.items()} == {
        f"{layer}_{s}": f"{layer}_{s}_grad" for layer in ("conv1", "conv2", "fc3", "pred") for s in ("w", "b")}
    grad_map = {str(k): str(v) for k, v in model.grad_map.items()}
    # The loss maps to its seed; data passed through StopGradient (in place), so it has no entry.
    assert grad_map["loss"] == "loss_autogen_grad"
    assert grad_map["softmax"] == "softmax_grad" and grad_map["pool1"] == "pool1_grad"
    assert "data" not in grad_map and "data_uint8" not in grad_map
    assert all(isinstance(k, core.BlobReference) for k in model.grad_map)


def test_gradient_ops_copy_forward_args_and_engine():
    model, n = _lenet_training_model()
    conv_grad = model.net.Proto().op[-1]
    assert conv_grad.type == "ConvGradient"
    names = [a.name for a in conv_grad.arg]
    assert names[:2] == ["kernel", "order"] and "exhaustive_search" in names
    assert conv_grad.engine == "CUDNN"  # copied from the forward Conv (brew's leaked default)


def _toy_regression_net() -> tuple[core.Net, int, dict]:
    init_net = core.Net("toy_init")
    w = init_net.UniformFill([], "W", shape=[1, 2], min=-1.0, max=1.0)
    b = init_net.ConstantFill([], "B", shape=[1], value=0.0)
    w_gt = init_net.GivenTensorFill([], "W_gt", shape=[1, 2], values=[2.0, 1.5])
    b_gt = init_net.GivenTensorFill([], "B_gt", shape=[1], values=[0.5])
    train = core.Net("toy_train")
    x = train.GaussianFill([], "X", shape=[64, 2], mean=0.0, std=1.0, run_once=0)
    y_gt = x.FC([w_gt, b_gt], "Y_gt")
    noise = train.GaussianFill([], "noise", shape=[64, 1], mean=0.0, std=1.0, run_once=0)
    y_noise = y_gt.Add(noise, "Y_noise")
    y_noise = y_noise.StopGradient([], "Y_noise")
    y_pred = x.FC([w, b], "Y_pred")
    dist = train.SquaredL2Distance([y_noise, y_pred], "dist")
    loss = dist.AveragedLoss([], ["loss"])
    n = len(train.Proto().op)
    return train, n, train.AddGradientOperators([loss])


def test_toy_regression_gradient_ops():
    train, n, grad_map = _toy_regression_net()
    assert _grad_part(train, n) == [
        ("ConstantFill", ["loss"], ["loss_autogen_grad"]),
        ("AveragedLossGradient", ["dist", "loss_autogen_grad"], ["dist_grad"]),
        ("SquaredL2DistanceGradient", ["Y_noise", "Y_pred", "dist_grad"], ["Y_noise_grad", "Y_pred_grad"]),
        ("FCGradient", ["X", "W", "Y_pred_grad"], ["W_grad", "B_grad", "X_grad"]),
    ]
    assert {str(k): str(v) for k, v in grad_map.items()} == {
        "loss": "loss_autogen_grad", "dist": "dist_grad", "Y_pred": "Y_pred_grad", "W": "W_grad",
        "B": "B_grad", "X": "X_grad"}  # Y_noise's entry is cleared by the in-place StopGradient


# ------------------------------------------------------------------------------------------
# Fan-out accumulation
# ------------------------------------------------------------------------------------------
def test_fan_out_sum_comes_right_after_first_readers_gradient():
    ops = [make_op("Relu", ["X"], ["H"]), make_op("FC", ["H", "W", "b"], ["F"]),
           make_op("Mul", ["F", "H"], ["M"]), make_op("AveragedLoss", ["M"], ["loss"])]
    grad_ops, grad_map = add_gradient_operators(ops, ["loss"])
    assert _listing(grad_ops) == [
        ("ConstantFill", ["loss"], ["loss_autogen_grad"]),
        ("AveragedLossGradient", ["M", "loss_autogen_grad"], ["M_grad"]),
        ("Mul", ["M_grad", "H"], ["F_grad"]),
        ("Mul", ["M_grad", "F"], ["H_grad"]),
        # The later generator in the sweep is renamed apart; the sum follows H's first reader (FC).
        ("FCGradient", ["H", "W", "F_grad"], ["W_grad", "b_grad", "_H_grad_autosplit_0"]),
        ("Sum", ["H_grad", "_H_grad_autosplit_0"], ["H_grad"]),
        ("ReluGradient", ["H", "H_grad"], ["X_grad"]),
    ]
    assert grad_map["H"] == "H_grad" and grad_map["X"] == "X_grad"
    assert not grad_ops[5].is_gradient_op and grad_ops[5].HasField("name")


def test_fan_out_with_pass_through_gradient_moves_base_first():
    ops = [make_op("Relu", ["X"], ["H"]), make_op("FC", ["H", "W", "b"], ["F"]),
           make_op("Add", ["F", "H"], ["S"]), make_op("AveragedLoss", ["S"], ["loss"])]
    grad_ops, grad_map = add_gradient_operators(ops, ["loss"])
    assert _listing(grad_ops)[2:] == [
        ("FCGradient", ["H", "W", "S_grad"], ["W_grad", "b_grad", "H_grad"]),
        # Add passed S_grad through under its own name; the FC output is the base, so it goes first.
        ("Sum", ["H_grad", "S_grad"], ["H_grad"]),
        ("ReluGradient", ["H", "H_grad"], ["X_grad"]),
    ]
    assert grad_map["F"] == "S_grad"


def test_three_readers_get_numbered_autosplits():
    ops = [make_op("Relu", ["X"], ["A"]), make_op("Relu", ["X"], ["B"]), make_op("Relu", ["X"], ["C"]),
           make_op("Sum", ["A", "B", "C"], ["S"]), make_op("AveragedLoss", ["S"], ["loss"])]
    grad_ops, _ = add_gradient_operators(ops, ["loss"])
    assert _listing(grad_ops)[2:] == [
        ("ReluGradient", ["C", "S_grad"], ["X_grad"]),
        ("ReluGradient", ["B", "S_grad"], ["_X_grad_autosplit_0"]),
        ("ReluGradient", ["A", "S_grad"], ["_X_grad_autosplit_1"]),
        ("Sum", ["X_grad", "_X_grad_autosplit_0", "_X_grad_autosplit_1"], ["X_grad"]),
    ]


def test_a_y_read_by_another_op_counts_as_a_reader():
    ops = [make_op("FC", ["X", "W", "b"], ["Y"]), make_op("Relu", ["Y"], ["Z"])]
    grad_ops, grad_map = add_gradient_operators(ops, ["Y", "Z"])
    assert _listing(grad_ops) == [
        ("ConstantFill", ["Y"], ["Y_autogen_grad"]),
        ("ConstantFill", ["Z"], ["Z_autogen_grad"]),
        ("ReluGradient", ["Z", "Z_autogen_grad"], ["_Y_grad_autosplit_0"]),
        ("Sum", ["Y_autogen_grad", "_Y_grad_autosplit_0"], ["Y_autogen_grad"]),
        ("FCGradient", ["X", "W", "Y_autogen_grad"], ["W_grad", "b_grad", "X_grad"]),
    ]
    assert grad_map["Y"] == "Y_autogen_grad" and grad_map["Z"] == "Z_autogen_grad"


def test_same_blob_twice_in_one_op_is_accumulated():
    ops = [make_op("Mul", ["X", "X"], ["Y"])]
    grad_ops, grad_map = add_gradient_operators(ops, {"Y": "dY"})
    assert _listing(grad_ops) == [
        ("Mul", ["dY", "X"], ["X_grad"]),
        ("Mul", ["dY", "X"], ["_X_grad_autosplit_0"]),
        ("Sum", ["X_grad", "_X_grad_autosplit_0"], ["X_grad"]),
    ]
    assert grad_map == {"Y": "dY", "X": "X_grad"}
    # Only passed-through contributions: the sum is named <input>_grad.
    grad_ops, grad_map = add_gradient_operators([make_op("Sum", ["X", "X"], ["Y"])], {"Y": "dY"})
    assert _listing(grad_ops) == [("Sum", ["dY", "dY"], ["X_grad"])]
    assert grad_map["X"] == "X_grad"


def test_gradients_from_different_devices_are_not_summed():
    gpu = caffe2_pb2.DeviceOption(device_type=1, cuda_gpu_id=1)
    ops = [make_op("Relu", ["X"], ["A"]), make_op("Relu", ["X"], ["B"], device_option=gpu),
           make_op("Add", ["A", "B"], ["S"])]
    with pytest.raises(GradientConstructionError, match="different devices"):
        add_gradient_operators(ops, ["S"])


def test_sum_takes_the_gradient_ops_device():
    gpu = caffe2_pb2.DeviceOption(device_type=1, cuda_gpu_id=0)
    ops = [make_op("Relu", ["X"], ["A"], device_option=gpu), make_op("Relu", ["X"], ["B"], device_option=gpu),
           make_op("Add", ["A", "B"], ["S"], device_option=gpu)]
    grad_ops, _ = add_gradient_operators(ops, {"S": "dS"})
    assert grad_ops[-1].type == "Sum" and grad_ops[-1].device_option == gpu


# ------------------------------------------------------------------------------------------
# In-place ops, StopGradient, versions
# ------------------------------------------------------------------------------------------
def test_in_place_relu_gives_in_place_gradient():
    net = core.Net("inplace")
    x = net.FC(["X", "W", "b"], "X1")
    net.Relu(x, x)
    loss = net.AveragedLoss(x, "loss")
    grad_map = net.AddGradientOperators([loss])
    assert _grad_part(net, 3)[2] == ("ReluGradient", ["X1", "X1_grad"], ["X1_grad"])
    assert grad_map[core.BlobReference("X1")] == "X1_grad"


def test_stop_gradient_not_in_place_cuts_the_path():
    ops = [make_op("Relu", ["X"], ["A"]), make_op("StopGradient", ["A"], ["B"]),
           make_op("FC", ["B", "W", "b"], ["Y"])]
    grad_ops, grad_map = add_gradient_operators(ops, ["Y"])
    assert [op.type for op in grad_ops] == ["ConstantFill", "FCGradient"]
    assert "A" not in grad_map and "X" not in grad_map and grad_map["B"] == "B_grad"


def test_orphan_stop_gradient_is_rejected():
    ops = [make_op("Relu", ["X"], ["A"]), make_op("StopGradient", ["A"], ["B"]),
           make_op("AveragedLoss", ["A"], ["loss"])]
    with pytest.raises(GradientConstructionError, match="StopGradient.*never read"):
        add_gradient_operators(ops, ["loss"])


def test_overwritten_forward_blob_is_a_version_error_with_history():
    ops = [make_op("FC", ["X", "W", "b"], ["Y"]), make_op("Relu", ["Y"], ["Y"]), make_op("Relu", ["Y"], ["Y"])]
    with pytest.raises(GradientConstructionError) as info:
        add_gradient_operators(ops, ["Y"])
    message = str(info.value)
    assert "'Y' at version 1" in message and "version 2" in message
    assert "version 1 written by Relu(Y) -> (Y)" in message and "version 2 written by" in message


def test_gradient_of_a_reused_name_must_match_its_version():
    # L is written twice; its seed is the gradient of version 1, so it cannot serve the first writer.
    ops = [make_op("AveragedLoss", ["X"], ["L"]), make_op("Scale", ["X"], ["L"], scale=2.0)]
    with pytest.raises(GradientConstructionError, match="version 0 of 'L'.*version 1"):
        add_gradient_operators(ops, ["L"])


def test_ops_off_the_loss_path_are_skipped_and_skip_drops_ops():
    ops = [make_op("Relu", ["X"], ["A"]), make_op("Accuracy", ["P", "label"], ["acc"]),
           make_op("Print", ["A"], []), make_op("AveragedLoss", ["A"], ["loss"])]
    grad_ops, _ = add_gradient_operators(ops, ["loss"])
    assert [op.type for op in grad_ops] == ["ConstantFill", "AveragedLossGradient", "ReluGradient"]
    grad_ops, grad_map = add_gradient_operators(ops, ["loss"], skip=1)
    assert [op.type for op in grad_ops] == ["ConstantFill", "AveragedLossGradient"]
    assert "X" not in grad_map


def test_given_output_gradient_and_errors_for_bad_ys():
    ops = [make_op("Relu", ["X"], ["Y"])]
    grad_ops, grad_map = add_gradient_operators(ops, {"Y": "my_dY"})
    assert _listing(grad_ops) == [("ReluGradient", ["Y", "my_dY"], ["X_grad"])]
    assert grad_map == {"Y": "my_dY", "X": "X_grad"}
    with pytest.raises(TypeError):
        add_gradient_operators(ops, "Y")
    with pytest.raises(GradientConstructionError, match="Summarize"):
        add_gradient_operators([make_op("Summarize", ["X"], ["S"])], ["S"])


def test_seed_gets_the_device_scope():
    gpu = core.DeviceOption(1, 0)
    net = core.Net("scoped")
    y = net.Relu("X", "Y")
    with core.DeviceScope(gpu):
        net.AddGradientOperators([y])
    assert net.Proto().op[1].type == "ConstantFill" and net.Proto().op[1].device_option == gpu


# ------------------------------------------------------------------------------------------
# Python gradient registry, sparse gradients
# ------------------------------------------------------------------------------------------
def test_python_registry_supplies_missing_makers():
    @GradientRegistry.RegisterGradient("NetjitTestIdentity")
    def _identity_grad(op, g_output):
        return [core.CreateOperator("Copy", [g_output[0]], [op.input[0] + "_grad"])], [op.input[0] + "_grad"]

    assert core.GradientRegistry is GradientRegistry
    ops = [make_op("NetjitTestIdentity", ["X"], ["Y"])]
    grad_ops, grad_map = add_gradient_operators(ops, {"Y": "dY"})
    assert _listing(grad_ops) == [("Copy", ["dY"], ["X_grad"])]
    assert grad_map["X"] == "X_grad"
    with pytest.raises(GradientConstructionError, match="NetjitTestUnknown"):
        add_gradient_operators([make_op("NetjitTestUnknown", ["X"], ["Y"])], ["Y"])


def test_sparse_gradients_are_concatenated():
    @GradientRegistry.RegisterGradient("NetjitTestLookup")
    def _lookup_grad(op, g_output):
        w, idx = op.input
        grad = core.CreateOperator("NetjitTestLookupGradient", [idx, g_output[0]],
                                   [w + "_grad_indices", w + "_grad_values"])
        return [grad], [core.GradientSlice(w + "_grad_indices", w + "_grad_values"), None]

    ops = [make_op("NetjitTestLookup", ["W", "i1"], ["A"]), make_op("NetjitTestLookup", ["W", "i2"], ["B"]),
           make_op("Add", ["A", "B"], ["S"])]
    grad_ops, grad_map = add_gradient_operators(ops, {"S": "dS"})
    assert _listing(grad_ops) == [
        ("NetjitTestLookupGradient", ["i2", "dS"], ["_W_grad_indices_autosplit_0", "_W_grad_values_autosplit_0"]),
        ("NetjitTestLookupGradient", ["i1", "dS"], ["_W_grad_indices_autosplit_1", "_W_grad_values_autosplit_1"]),
        ("Concat", ["_W_grad_indices_autosplit_0", "_W_grad_indices_autosplit_1"],
         ["W_grad_indices_concat", "W_grad_indices_concat_split"]),
        ("Concat", ["_W_grad_values_autosplit_0", "_W_grad_values_autosplit_1"],
         ["W_grad_values_concat", "W_grad_values_concat_split"]),
    ]
    assert grad_map["W"] == core.GradientSlice("W_grad_indices_concat", "W_grad_values_concat")
    net = core.Net("sparse")
    net.Proto().op.extend(ops)
    result = net.AddGradientOperators({"S": "dS"})
    assert isinstance(result[core.BlobReference("W")], core.GradientSlice)


# ------------------------------------------------------------------------------------------
# Numbers: gradients agree with finite differences of the loss
# ------------------------------------------------------------------------------------------
def _mlp(net: core.Net) -> core.BlobReference:
    # X feeds both the hidden layer and a skip product, so X's gradient is a Sum of two parts;
    # the hidden Relu runs in place.
    h = net.FC(["X", "W1", "b1"], "h")
    net.Relu(h, h)
    o = net.FC([h, "W2", "b2"], "o")
    skip = net.FC(["X", "W3", "b3"], "skip")
    z = net.Mul([o, skip], "z")
    s = net.Softmax(z, "s")
    xent = net.LabelCrossEntropy([s, "label"], "xent")
    return net.AveragedLoss(xent, "loss")


def test_mlp_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    shapes = {"X": (5, 3), "W1": (4, 3), "b1": (4,), "W2": (3, 4), "b2": (3,), "W3": (3, 3), "b3": (3,)}
    values = {k: rng.standard_normal(s) for k, s in shapes.items()}
    values["b1"] += 0.5  # keep the Relu inputs away from the kink
    for k, v in values.items():
        workspace.FeedBlob(k, v)
    workspace.FeedBlob("label", np.array([0, 1, 2, 1, 0], np.int32))
    forward = core.Net("mlp_fwd")
    _mlp(forward)
    train = core.Net("mlp_train")
    loss = _mlp(train)
    grad_map = train.AddGradientOperators([loss])
    assert any(op.type == "Sum" for op in train.Proto().op)
    workspace.RunNetOnce(train)
    workspace.CreateNet(forward)

    def loss_at(name: str, value: np.ndarray) -> float:
        workspace.FeedBlob(name, value)
        workspace.RunNet(forward.Name())
        return float(workspace.FetchBlob("loss"))

    eps = 1e-6
    for name in shapes:
        analytic = workspace.FetchBlob(str(grad_map[core.BlobReference(name)]))
        numeric = np.zeros(shapes[name])
        base = values[name]
        for j in range(base.size):
            plus, minus = base.copy(), base.copy()
            plus.reshape(-1)[j] += eps
            minus.reshape(-1)[j] -= eps
            numeric.reshape(-1)[j] = (loss_at(name, plus) - loss_at(name, minus)) / (2 * eps)
        workspace.FeedBlob(name, base)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7, err_msg=f"d loss / d {name}")
