"""caffe2.python.models.resnet: ResNet-50's structure and shapes (shape inference at 224x224, a
forward pass at 64x64), and the 32x32 CIFAR net: compiled forward against the reference, a few
training steps with the optimizer (loss falls, both executors agree), export through
predictor_exporter and reload."""
import numpy as np
import pytest

from caffe2.python import model_helper, optimizer, workspace
from caffe2.python.models import resnet
from caffe2.python.predictor import predictor_exporter as pe

RNG = np.random.default_rng(7)


def _types(model):
    return [op.type for op in model.net.Proto().op]


def test_resnet50_structure_and_inferred_shapes():
    model = model_helper.ModelHelper(name="resnet50")
    softmax, loss = resnet.create_resnet50(model, "data", num_input_channels=3, num_labels=1000, label="label")
    types = _types(model)
    assert types.count("Conv") == 53 and types.count("SpatialBN") == 53 and types.count("Sum") == 16
    assert types[:4] == ["Conv", "SpatialBN", "Relu", "MaxPool"] and types[-3:] == ["AveragePool", "FC",
                                                                                  "SoftmaxWithLoss"]
    assert (str(softmax), str(loss)) == ("softmax", "loss")
    assert len(model.GetParams()) == 53 * 4 + 2   # conv w and b (no_bias=0), bn scale and bias; FC w, b
    shapes, _ = workspace.InferShapesAndTypes([model.param_init_net, model.net],
                                              {"data": [2, 3, 224, 224], "label": [2]})
    assert shapes["pool1"] == [2, 64, 55, 55]
    assert shapes["comp_2_sum_3"] == [2, 256, 55, 55]
    assert shapes["comp_3_sum_3"] == [2, 512, 28, 28] and shapes["shortcut_projection_3"] == [2, 512, 28, 28]
    assert shapes["final_avg"] == [2, 2048, 1, 1] and shapes["last_out_L1000"] == [2, 1000]
    assert shapes["softmax"] == [2, 1000]
    assert shapes["conv1_w"] == [64, 3, 7, 7]


def test_resnet50_variants():
    plain = model_helper.ModelHelper(name="r50_nobn")
    out = resnet.create_resnet50(plain, "data", 3, 10, no_loss=True, no_bias=1, spatial_batch_norm=False)
    assert str(out) == "last_out_L10" and "SpatialBN" not in _types(plain)
    assert not any(str(p).endswith("_b") and str(p).startswith("comp") for p in plain.GetParams())
    infer = model_helper.ModelHelper(name="r50_infer")
    assert str(resnet.create_resnet50(infer, "data", 3, 10, is_test=True)) == "softmax"
    assert all(a.i == 1 for op in infer.net.Proto().op if op.type == "SpatialBN"
               for a in op.arg if a.name == "is_test")


def test_resnet50_forward_at_64x64(monkeypatch):
    # The reference executor (numpy per op): the compiled conv path is covered by the 32x32 net below.
    monkeypatch.setenv("NETJIT_EXECUTOR", "reference")
    workspace.ResetWorkspace()
    model = model_helper.ModelHelper(name="r50_small")
    resnet.create_resnet50(model, "data", 3, 5, is_test=True, final_avg_kernel=2)
    workspace.FeedBlob("data", RNG.standard_normal((1, 3, 64, 64)).astype(np.float32))
    workspace.RunNetOnce(model.param_init_net)
    workspace.RunNetOnce(model.net)
    prob = workspace.FetchBlob("softmax")
    assert prob.shape == (1, 5) and np.isfinite(prob).all()
    np.testing.assert_allclose(prob.sum(), 1.0, rtol=1e-5)
    assert workspace.FetchBlob("comp_15_sum_3").shape == (1, 2048, 2, 2)


def _cifar_train_model():
    model = model_helper.ModelHelper(name="resnet32x32")
    softmax = resnet.create_resnet_32x32(model, "data", num_input_channels=3, num_groups=1, num_labels=10)
    xent = model.LabelCrossEntropy([softmax, "label"], "xent")
    loss = model.AveragedLoss(xent, "loss")
    model.AddGradientOperators([loss])
    optimizer.build_sgd(model, base_learning_rate=0.05, momentum=0.9, policy="fixed")
    return model


def _train(model, start, executor, steps, monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", executor)
    workspace.ResetWorkspace()
    workspace.RunNetOnce(model.param_init_net)    # the iteration mutex and counter, fresh
    for name, value in start.items():
        workspace.FeedBlob(name, value.copy())
    workspace.CreateNet(model.net)
    losses, first = [], None
    for _ in range(steps):
        workspace.RunNet(model.net.Proto().name)
        losses.append(float(workspace.FetchBlob("loss")))
        # Training amplifies float32 rounding differences step by step: compare the first step.
        first = first or {str(p): workspace.FetchBlob(str(p)).copy() for p in model.GetParams()}
    return losses, first


@pytest.mark.slow   # ~4 s warm on an idle machine; compiles Conv/ConvGradient kernels on a cold cache
def test_resnet_32x32_trains_on_both_executors_and_exports(tmp_path, monkeypatch):
    model = _cifar_train_model()
    types = _types(model)
    assert types.count("Conv") == 1 + 2 * 6 + 2 and types.count("MomentumSGDUpdate") == len(model.GetParams())
    # One initialisation shared by both executors.
    monkeypatch.setenv("NETJIT_EXECUTOR", "reference")
    workspace.ResetWorkspace()
    workspace.RunNetOnce(model.param_init_net)
    start = {name: workspace.FetchBlob(name) for name in workspace.Blobs()
             if isinstance(workspace.FetchBlob(name), np.ndarray)}
    rng = np.random.default_rng(3)
    start["data"] = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    start["label"] = np.array([1, 7], np.int32)

    ref_losses, ref_params = _train(model, start, "reference", 3, monkeypatch)
    losses, params = _train(model, start, "compiled", 3, monkeypatch)
    assert losses[-1] < 0.5 * losses[0], losses
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-2)
    for name, value in ref_params.items():
        np.testing.assert_allclose(params[name], value, rtol=1e-3, atol=1e-5, err_msg=name)

    # Export the trained weights with a test-mode net (the workspace still holds them); the round
    # trip is executor-independent, so it runs on the reference executor (no more compiling).
    monkeypatch.setenv("NETJIT_EXECUTOR", "reference")
    test_model = model_helper.ModelHelper(name="resnet32x32_test", init_params=False)
    resnet.create_resnet_32x32(test_model, "data", 3, 1, 10, is_test=True)
    feed = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    workspace.FeedBlob("data", feed)
    workspace.RunNetOnce(test_model.net)
    want = workspace.FetchBlob("softmax").copy()
    params_out = [str(p) for p in model.GetParams() + model.GetComputedParams()]
    meta = pe.PredictorExportMeta(predict_net=test_model.net.Proto(), parameters=params_out,
                                  inputs=["data"], outputs=["softmax"])
    db_path = str(tmp_path / "resnet32.minidb")
    pe.save_to_db("minidb", db_path, meta)
    workspace.ResetWorkspace()
    predict_net = pe.prepare_prediction_net(db_path, "minidb")
    workspace.FeedBlob("data", feed)
    workspace.RunNetOnce(predict_net)
    np.testing.assert_allclose(workspace.FetchBlob("softmax"), want, rtol=1e-5, atol=1e-6)


def test_builder_blocks_name_their_blobs():
    model = model_helper.ModelHelper(name="blocks")
    builder = resnet.ResNetBuilder(model, "x", no_bias=1, is_test=True)
    builder.add_simple_block(8, 16, down_sampling=True)
    builder.add_bottleneck(16, 4, 16)
    outs = [o for op in model.net.Proto().op for o in op.output]
    assert {"comp_0_conv_1", "comp_0_spatbn_1", "shortcut_projection_0", "shortcut_projection_0_spatbn",
            "comp_0_sum_2", "comp_1_conv_3", "comp_1_sum_3"} <= set(outs)
    assert "shortcut_projection_1" not in outs   # equal widths: identity shortcut
    assert builder.comp_count == 2 and str(builder.prev_blob) == "comp_1_sum_3"
