"""data_parallel_model inside one process (no MPI needed): several local device copies, the optimizer
builder, and the checkpoint helpers."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from caffe2.python import brew, core, data_parallel_model as dpm, model_helper, workspace

from tests.mpi.launch import REPO

D_IN, CLASSES = 6, 3


def _forward(m, loss_scale):
    h = brew.fc(m, "data", "h", dim_in=D_IN, dim_out=8)
    h = brew.relu(m, h, h)
    p = brew.fc(m, h, "pred", dim_in=8, dim_out=CLASSES)
    _, loss = m.net.SoftmaxWithLoss([p, "label"], ["sm", "loss"])
    return [m.net.Scale(loss, "scaled_loss", scale=loss_scale)]


def _sgd(m):
    it = brew.iter(m, "ITER")
    lr = m.net.LearningRate(it, "lr", base_lr=-0.5, policy="fixed")
    one = m.param_init_net.ConstantFill([], "ONE", shape=[1], value=1.0)
    for param in m.GetParams():
        m.net.WeightedSum([param, one, m.param_to_grad[param], lr], param)


def _train(devices: list[int], x: np.ndarray, y: np.ndarray, steps: int, **options) -> model_helper.ModelHelper:
    m = model_helper.ModelHelper(name=f"local_{len(devices)}")
    with core.NameScope("cpu_0"):
        m.param_init_net.ConstantFill([], "ITER", shape=[1], value=0, dtype=core.DataType.INT64)
    dpm.Parallelize(m, input_builder_fun=lambda m: None, forward_pass_builder_fun=_forward,
                    param_update_builder_fun=_sgd, devices=devices, cpu_device=True, **options)
    for op in m.param_init_net.Proto().op:
        # Seeded by the op's output, so a model that drops some initializers draws the same values.
        op.device_option.random_seed = 7 + sum(map(ord, op.output[0]))
    per = len(x) // len(devices)
    for k, d in enumerate(devices):
        workspace.FeedBlob(f"cpu_{d}/data", x[k * per:(k + 1) * per])
        workspace.FeedBlob(f"cpu_{d}/label", y[k * per:(k + 1) * per])
    dpm.RunInitNet(m)
    dpm.RunNet(m, steps)
    return m


def test_two_local_devices_equal_one_device_with_double_batch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, D_IN)).astype(np.float32)
    y = rng.integers(0, CLASSES, 16).astype(np.int32)
    two = _train([0, 1], x, y, steps=4)
    got = {n: workspace.FetchBlob(f"cpu_0/{n}") for n in ("h_w", "h_b", "pred_w", "pred_b")}
    for n, v in got.items():
        assert np.array_equal(v, workspace.FetchBlob(f"cpu_1/{n}")), n
    # Device 1's initial values were replaced by device 0's (the local broadcast in the init net).
    ops = [op.type for op in two.param_init_net.Proto().op]
    assert ops.count("Copy") >= 4
    assert sum(op.type == "Sum" and op.name == "dpm" for op in two.net.Proto().op) == 4
    workspace.ResetWorkspace()
    _train([0], x, y, steps=4)
    for n, v in got.items():
        np.testing.assert_allclose(v, workspace.FetchBlob(f"cpu_0/{n}"), rtol=0, atol=1e-5, err_msg=n)
    assert not np.allclose(got["h_w"], 0)


def test_checkpoint_helpers_and_learning_rate_names():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, D_IN)).astype(np.float32)
    y = rng.integers(0, CLASSES, 8).astype(np.int32)
    m = _train([0, 1], x, y, steps=1)
    assert sorted(map(str, dpm.GetCheckpointParams(m))) == [
        "cpu_0/ITER", "cpu_0/ONE", "cpu_0/h_b", "cpu_0/h_w", "cpu_0/pred_b", "cpu_0/pred_w"]
    assert dpm.GetLearningRateBlobNames(m) == ["cpu_0/lr", "cpu_1/lr"]
    # A "loaded" checkpoint on device 0 reaches device 1.
    loaded = np.full((8, D_IN), 0.25, np.float32)
    workspace.FeedBlob("cpu_0/h_w", loaded)
    dpm.FinalizeAfterCheckpoint(m)
    np.testing.assert_array_equal(workspace.FetchBlob("cpu_1/h_w"), loaded)
    assert dpm.stripBlobName("cpu_1/h_w") == "h_w"


def test_optimizer_builder_is_called_once_and_named_lr_is_returned():
    calls = []

    class Built:
        def get_cpu_blob_name(self, base: str) -> str:
            return "global_" + base

    def build(m):
        calls.append(m)
        lr = m.param_init_net.ConstantFill([], "global_lr", shape=[1], value=-0.1)
        one = m.param_init_net.ConstantFill([], "global_one", shape=[1], value=1.0)
        for param in m.GetParams():
            with core.DeviceScope(core.DeviceOption(0)):
                m.net.WeightedSum([param, one, m.param_to_grad[param], lr], param)
        return Built()

    m = model_helper.ModelHelper(name="with_optimizer")
    dpm.Parallelize_CPU(m, input_builder_fun=lambda m: None, forward_pass_builder_fun=_forward,
                        optimizer_builder_fun=build, devices=[0, 1])
    assert calls == [m] and isinstance(m._optimizer, Built)
    assert dpm.GetLearningRateBlobNames(m) == ["global_lr"]
    with pytest.raises(ValueError, match="only specify one of"):
        dpm.Parallelize(model_helper.ModelHelper(name="both"), lambda m: None, _forward,
                        param_update_builder_fun=_sgd, optimizer_builder_fun=build, cpu_device=True)


def test_single_host_parallelize_does_not_import_mpi4py():
    code = ("import sys\n"
            "from caffe2.python import data_parallel_model as dpm, model_helper\n"
            "from tests.mpi.test_dpm_local import _forward, _sgd\n"
            "m = model_helper.ModelHelper(name='no_mpi')\n"
            "dpm.Parallelize(m, input_builder_fun=lambda m: None, forward_pass_builder_fun=_forward,\n"
            "                param_update_builder_fun=_sgd, devices=[0, 1], cpu_device=True)\n"
            "assert not any(op.type in ('CreateCommonWorld', 'Allreduce') for op in m.net.Proto().op)\n"
            "assert 'mpi4py' not in sys.modules, 'single-host Parallelize imported mpi4py'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_forward_only_parallelize_and_extract_predictor_net():
    def predict(m, loss_scale):
        return [brew.softmax(m, brew.fc(m, "data", "logits", dim_in=D_IN, dim_out=CLASSES), "prob")]

    m = model_helper.ModelHelper(name="fwd_only")
    dpm.Parallelize(m, input_builder_fun=lambda m: None, forward_pass_builder_fun=predict, devices=[0],
                    cpu_device=True)
    assert not any(op.type.endswith("Gradient") for op in m.net.Proto().op)
    x = np.random.default_rng(2).standard_normal((5, D_IN)).astype(np.float32)
    workspace.FeedBlob("cpu_0/data", x)
    workspace.RunNetOnce(m.param_init_net)
    workspace.RunNetOnce(m.net)
    want = workspace.FetchBlob("cpu_0/prob")
    net, params = dpm.ExtractPredictorNet(m, ["data"], ["prob"], core.DeviceOption(0))
    assert sorted(params) == ["cpu_0/logits_b", "cpu_0/logits_w"]
    assert list(net.Proto().external_output) == ["prob"]
    workspace.FeedBlob("data", x)
    workspace.RunNetOnce(net)
    np.testing.assert_allclose(workspace.FetchBlob("prob"), want, rtol=1e-6)


def test_shared_model_keeps_one_parameter_copy_and_matches_one_device():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((12, D_IN)).astype(np.float32)
    y = rng.integers(0, CLASSES, 12).astype(np.int32)
    m = _train([0, 1], x, y, steps=3, shared_model=True)
    init_outputs = {o for op in m.param_init_net.Proto().op for o in op.output}
    assert "cpu_0/h_w" in init_outputs and "cpu_1/h_w" not in init_outputs
    assert not any("cpu_1/h_w" in op.input for op in m.net.Proto().op)
    assert [str(p) for p in m.params] == ["cpu_0/h_w", "cpu_0/h_b", "cpu_0/pred_w", "cpu_0/pred_b"]
    got = {n: workspace.FetchBlob(f"cpu_0/{n}") for n in ("h_w", "h_b", "pred_w", "pred_b")}
    workspace.ResetWorkspace()
    _train([0], x, y, steps=3, shared_model=True, combine_spatial_bn=True)   # one device: both are no-ops
    for n, v in got.items():
        np.testing.assert_allclose(v, workspace.FetchBlob(f"cpu_0/{n}"), rtol=0, atol=1e-5, err_msg=n)
    with pytest.raises(ValueError, match="combine_spatial_bn"):
        _train([0, 1], x, y, steps=1, combine_spatial_bn=True)
