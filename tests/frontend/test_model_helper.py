"""ModelHelper and CNNModelHelper: nets, parameters, gradients bookkeeping, DB input, op forwarding,
ExtractPredictorNet."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from netjit import brew, core, workspace
from netjit.cnn import CNNModelHelper
from netjit.initializers import ParameterTags
from netjit.model_helper import KNOWN_WORKING_OPS, ExtractPredictorNet, ModelHelper


def _ops(net) -> list[tuple[str, list[str], list[str]]]:
    return [(op.type, list(op.input), list(op.output)) for op in net.Proto().op]


def test_construction_defaults():
    model = ModelHelper()
    assert model.name == "model" and model.net.Name().startswith("model")
    assert model.param_init_net.Name().startswith("model_init")
    assert model.arg_scope == {"order": "NCHW", "use_cudnn": True, "cudnn_exhaustive_search": False}
    assert model.params == [] and model.param_to_grad == {}
    custom = ModelHelper(name="m", arg_scope={"order": "NHWC", "ws_nbytes_limit": 1})
    assert custom.arg_scope == {"order": "NHWC", "use_cudnn": True, "cudnn_exhaustive_search": False,
                                "ws_nbytes_limit": 1}
    assert custom.Proto() is custom.net.Proto() and custom.InitProto() is custom.param_init_net.Proto()


def test_create_param_scopes_shares_and_checks_shape():
    from netjit.initializers import Initializer
    model = ModelHelper(name="p")
    with core.NameScope("layer"):
        w = model.create_param("w", [2, 3], Initializer("GaussianFill", std=0.1), tags=ParameterTags.WEIGHT)
        again = model.create_param("w", [2, 3], Initializer("XavierFill"))
        with pytest.raises(ValueError, match="already exists with shape"):
            model.create_param("w", [3, 3], Initializer("XavierFill"))
    assert str(w) == "layer/w" and again is w
    assert _ops(model.param_init_net) == [("GaussianFill", [], ["layer/w"])]
    args = {a.name: a for a in model.param_init_net.Proto().op[0].arg}
    assert list(args["shape"].ints) == [2, 3] and args["std"].f == pytest.approx(0.1)
    assert model.params == [w] and model.weights == [w] and model.get_param_info(w).shape == [2, 3]


def test_param_lists_by_scope_and_tag():
    model = ModelHelper(name="scopes")
    with core.NameScope("a"):
        fa = brew.fc(model, "x", "fc", 3, 2)
    with core.NameScope("b"):
        brew.spatial_bn(model, "y", "bn", 4, is_test=False)
    names = lambda ps: [str(p) for p in ps]  # noqa: E731
    assert names(model.GetParams()) == ["a/fc_w", "a/fc_b", "b/bn_s", "b/bn_b"]
    assert names(model.GetParams("a")) == ["a/fc_w", "a/fc_b"]
    with core.NameScope("b"):
        assert names(model.GetParams()) == ["b/bn_s", "b/bn_b"]
    assert names(model.GetComputedParams()) == ["b/bn_rm", "b/bn_riv"]
    assert names(model.GetAllParams("b/")) == ["b/bn_s", "b/bn_b", "b/bn_rm", "b/bn_riv"]
    assert names(model.GetWeights()) == ["a/fc_w", "b/bn_s"] and names(model.GetBiases()) == ["a/fc_b", "b/bn_b"]
    assert str(fa) == "a/fc"


def test_add_gradient_operators_once_and_param_to_grad():
    model = ModelHelper(name="grads")
    fc = brew.fc(model, "data", "fc", 3, 2)
    loss = model.AveragedLoss(fc, "loss")
    grad_map = model.AddGradientOperators([loss])
    assert {str(k): str(v) for k, v in model.param_to_grad.items()} == {"fc_w": "fc_w_grad", "fc_b": "fc_b_grad"}
    assert set(map(str, grad_map)) == {"loss", "fc", "fc_w", "fc_b", "data"}
    assert model.grad_map is grad_map
    assert model.get_param_info(model.params[0]).grad == "fc_w_grad"
    assert [i.name for i in model.GetOptimizationParamInfo()] == ["fc_w", "fc_b"]
    with pytest.raises(RuntimeError, match="twice"):
        model.AddGradientOperators([loss])


def test_duplicate_params_are_rejected():
    model = ModelHelper(name="dupes")
    model.AddParameter(core.BlobReference("w"))
    model.AddParameter(core.BlobReference("w"))
    with pytest.raises(AssertionError, match="Duplicate params"):
        model.AddGradientOperators(["w"])


def test_op_forwarding_warns_for_unknown_ops(caplog):
    model = ModelHelper(name="ops")
    with caplog.at_level(logging.WARNING):
        model.Relu("x", "y")           # not on the known list
        model.Softmax("y", "z")        # on it
    warnings = [r.getMessage() for r in caplog.records]
    assert any("does not recognize: Relu" in w for w in warnings)
    assert not any("Softmax" in w for w in warnings)
    assert _ops(model.net) == [("Relu", ["x"], ["y"]), ("Softmax", ["y"], ["z"])]
    strict = ModelHelper(name="strict", allow_not_known_ops=False)
    with pytest.raises(AttributeError, match="not known to be safe"):
        strict.Relu("x", "y")
    with pytest.raises(AttributeError, match="not a registered operator"):
        model.NoSuchOperator("x", "y")
    assert "Softmax" in dir(model) and "StopGradient" in KNOWN_WORKING_OPS


def test_tensor_protos_db_input_emits_reader_and_input_op():
    model = ModelHelper(name="db")
    data, label = model.TensorProtosDBInput([], ["data", "label"], batch_size=4, db="mnist.lmdb", db_type="lmdb")
    assert (str(data), str(label)) == ("data", "label")
    assert _ops(model.param_init_net) == [("CreateDB", [], ["dbreader_mnist.lmdb"])]
    init_args = {a.name: a.s for a in model.param_init_net.Proto().op[0].arg}
    assert init_args == {"db": b"mnist.lmdb", "db_type": b"lmdb"}
    assert _ops(model.net) == [("TensorProtosDBInput", ["dbreader_mnist.lmdb"], ["data", "label"])]
    assert [(a.name, a.i) for a in model.net.Proto().op[0].arg] == [("batch_size", 4)]
    with pytest.raises(ValueError, match="creates its own reader"):
        model.TensorProtosDBInput(["reader"], "x", batch_size=1, db="d", db_type="minidb")
    reader = model.CreateDB("my_reader", db="other.minidb", db_type="minidb")
    assert str(reader) == "my_reader"


def test_tensor_protos_db_input_reads_real_digits(tmp_path, shared_dir):
    from netjit.mnist_data import build_mnist_db, read_idx
    mnist = shared_dir / "data" / "mnist"
    images = read_idx(mnist / "t10k-images-idx3-ubyte.gz")[:6]
    labels = read_idx(mnist / "t10k-labels-idx1-ubyte.gz")[:6]
    db_path = str(tmp_path / "digits.minidb")
    build_mnist_db(images, labels, db_path, "minidb")
    model = ModelHelper(name="digits")
    model.TensorProtosDBInput([], ["data_uint8", "label"], batch_size=3, db=db_path, db_type="minidb")
    workspace.RunNetOnce(model.param_init_net)
    workspace.CreateNet(model.net)
    workspace.RunNet(model.net.Name())
    batch = workspace.FetchBlob("data_uint8")
    assert batch.dtype == np.uint8 and batch.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(batch[:, 0], images[:3])
    np.testing.assert_array_equal(workspace.FetchBlob("label"), labels[:3])


def test_init_params_false_emits_no_initializers():
    model = ModelHelper(name="noinit", init_params=False)
    brew.fc(model, "x", "fc", 3, 2)
    brew.spatial_bn(model, "y", "bn", 2, is_test=True)
    brew.conv_transpose(model, "z", "up", 2, 2, 3)
    assert len(model.param_init_net.Proto().op) == 0
    assert [str(p) for p in model.params] == ["fc_w", "fc_b", "bn_s", "bn_b", "up_w", "up_b"]


def test_param_model_shares_parameters():
    train = ModelHelper(name="train")
    brew.fc(train, "x", "fc", 3, 2)
    test = ModelHelper(name="test", param_model=train, init_params=False)
    brew.fc(test, "x", "fc", 3, 2)   # same name and shape: reuses the trained blob
    assert test.params is train.params and len(train.params) == 2
    assert test.param_init_net is train.param_init_net and len(train.param_init_net.Proto().op) == 2


# ------------------------------------------------------------------------------------------
# ExtractPredictorNet
# ------------------------------------------------------------------------------------------
def _train_model() -> ModelHelper:
    model = ModelHelper(name="clf")
    model.TensorProtosDBInput([], ["raw", "label"], batch_size=2, db="d", db_type="minidb")
    data = model.StopGradient("raw", "data")
    fc = brew.fc(model, data, "fc", 4, 3)
    sm = brew.softmax(model, fc, "softmax")
    xent = model.LabelCrossEntropy([sm, "label"], "xent")
    loss = model.AveragedLoss(xent, "loss")
    model.AddGradientOperators([loss])
    return model


def test_extract_predictor_net_keeps_inference_ops():
    model = _train_model()
    predict, export = ExtractPredictorNet(model.net.Proto(), ["data"], ["softmax"])
    assert _ops(predict) == [("FC", ["data", "fc_w", "fc_b"], ["fc"]), ("Softmax", ["fc"], ["softmax"])]
    assert list(predict.Proto().external_input) == ["data", "fc_w", "fc_b"]
    assert list(predict.Proto().external_output) == ["softmax"]
    assert export == ["fc_w", "fc_b"]
    assert predict.Name().startswith(model.net.Name() + "_predict")


def test_extract_predictor_net_renames_and_device():
    model = _train_model()
    gpu = core.DeviceOption(1, 0)
    predict, export = ExtractPredictorNet(model.net.Proto(), ["data"], ["softmax"], device=gpu,
                                          renames={"data": "input", "softmax": "prob"})
    assert _ops(predict) == [("FC", ["input", "fc_w", "fc_b"], ["fc"]), ("Softmax", ["fc"], ["prob"])]
    assert all(op.device_option.device_type == 1 for op in predict.Proto().op)
    assert list(predict.Proto().external_output) == ["prob"] and export == ["fc_w", "fc_b"]
    # The training net itself is left alone.
    assert not model.net.Proto().op[2].HasField("device_option")


def test_extract_predictor_net_refuses_training_mode_ops():
    model = ModelHelper(name="bn")
    brew.spatial_bn(model, "data", "bn", 3, is_test=0)
    with pytest.raises(ValueError, match="is_test=0"):
        ExtractPredictorNet(model.net.Proto(), ["data"], ["bn"])
    with pytest.raises(ValueError, match="No ops with input"):
        ExtractPredictorNet(model.net.Proto(), ["nothing"], ["bn"])


# ------------------------------------------------------------------------------------------
# CNNModelHelper
# ------------------------------------------------------------------------------------------
def test_cnn_model_helper_layers_and_settings():
    model = CNNModelHelper(order="NHWC", name="cnn", use_cudnn=False)
    assert model.arg_scope["order"] == "NHWC" and model.arg_scope["use_cudnn"] is False
    conv = model.Conv("data", "conv1", 3, 8, 5)
    pool = model.MaxPool(conv, "pool1", kernel=2, stride=2)
    relu = model.Relu(pool, pool)
    fc = model.FC(relu, "fc", 8 * 4 * 4, 10)
    model.Softmax(fc, "prob")
    model.Tanh(fc, "t")            # not a CNN method: forwarded to the net
    assert [op.type for op in model.net.Proto().op] == ["Conv", "MaxPool", "Relu", "FC", "Softmax", "Tanh"]
    conv_op = model.net.Proto().op[0]
    assert {a.name: a.s for a in conv_op.arg if a.HasField("s")} == {"order": b"NHWC"}
    assert not conv_op.engine  # use_cudnn=False
    shapes = {op.output[0]: list(op.arg[0].ints) for op in model.param_init_net.Proto().op}
    assert shapes["conv1_w"] == [8, 5, 5, 3]  # NHWC weight layout
    with pytest.raises(ValueError, match="storage order"):
        CNNModelHelper(order="CHWN")
    assert model.XavierInit == ("XavierFill", {}) and model.ConstantInit(0.5) == ("ConstantFill", {"value": 0.5})


def test_cnn_model_helper_trains_a_small_net():
    model = CNNModelHelper(name="tiny")
    fc1 = model.FC("data", "fc1", dim_in=6, dim_out=8, weight_init=model.MSRAInit)
    fc1 = model.Relu(fc1, fc1)
    pred = model.FC(fc1, "pred", 8, 3)
    softmax, loss = model.SoftmaxWithLoss([pred, "label"], ["softmax", "loss"])
    model.AddGradientOperators([loss])
    model.Iter("iter")
    lr = model.LearningRate("iter", "lr", base_lr=-0.5, policy="fixed")
    one = model.param_init_net.ConstantFill([], "ONE", shape=[1], value=1.0)
    for param in model.params:
        model.WeightedSum([param, one, model.param_to_grad[param], lr], param)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0).astype(np.int32)
    workspace.FeedBlob("data", x)
    workspace.FeedBlob("label", y)
    workspace.RunNetOnce(model.param_init_net)
    workspace.CreateNet(model.net)
    workspace.RunNet(model.net.Name())
    first = float(workspace.FetchBlob("loss"))
    workspace.RunNet(model.net.Name(), 60)
    assert float(workspace.FetchBlob("loss")) < 0.6 * first
    assert workspace.FetchBlob("iter")[0] == 61
