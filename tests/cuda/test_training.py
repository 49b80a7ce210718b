"""The LeNet MNIST training net of examples/mnist.py (conv/pool/FC, gradients, Iter, LearningRate,
SGD through WeightedSum) with every parameter on the device: a few steps at batch 2 under the
simulator, matching the CPU executor step by step."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from netjit import core, model_helper, workspace
from netjit.runtime import device as dev
from tests.cuda.conftest import gpu_option

REPO = Path(__file__).resolve().parents[2]
STEPS = 3


def _mnist_example():
    spec = importlib.util.spec_from_file_location("netjit_examples_mnist_cuda", REPO / "examples" / "mnist.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _small_lenet(model, data):
    """examples/mnist.py's AddLeNetModel, layer for layer, at a size the simulator runs in seconds."""
    from netjit import brew
    conv1 = brew.conv(model, data, "conv1", dim_in=1, dim_out=4, kernel=3)        # 10x10 -> 8x8
    pool1 = brew.max_pool(model, conv1, "pool1", kernel=2, stride=2)               # -> 4x4
    conv2 = brew.conv(model, pool1, "conv2", dim_in=4, dim_out=6, kernel=3)       # -> 2x2
    pool2 = brew.max_pool(model, conv2, "pool2", kernel=2, stride=2)               # -> 1x1
    fc3 = brew.fc(model, pool2, "fc3", dim_in=6, dim_out=16)
    relu = brew.relu(model, fc3, fc3)
    pred = brew.fc(model, relu, "pred", 16, 10)
    return brew.softmax(model, pred, "softmax")


def _build(mnist, scope, full: bool):
    model = model_helper.ModelHelper(name="lenet_train", arg_scope=mnist.ARG_SCOPE)
    lenet = mnist.AddLeNetModel if full else _small_lenet
    with core.DeviceScope(scope):     # scope None: no device option (the CPU)
        softmax = lenet(model, "data")
        mnist.AddTrainingOperators(model, softmax, "label", checkpoint_every=10 ** 6)
    return model


def _train(model, params, data, label, device_option):
    for name, value in params.items():
        workspace.FeedBlob(name, value, device_option)
    workspace.FeedBlob("data", data, device_option)
    workspace.FeedBlob("label", label, device_option)
    workspace.CreateNet(model.net, overwrite=True)
    losses = []
    for _ in range(STEPS):
        workspace.RunNet(model.net.Name())
        losses.append(float(workspace.FetchBlob("loss")))
    return losses, {p: workspace.FetchBlob(p) for p in params}


@pytest.mark.parametrize("full", [False, True], ids=["lenet-small", "lenet-28x28"])
def test_lenet_training_on_the_device_matches_the_cpu(full):
    if full and dev.simulator_enabled():
        pytest.skip("LeNet at 28x28 takes minutes under the simulator: gpu_check.sh runs it on a GPU")
    mnist = _mnist_example()
    rng = np.random.default_rng(0)
    size = 28 if full else 10
    data = rng.random((2, 1, size, size), dtype=np.float32)
    label = np.array([3, 7], np.int32)

    gpu_model = _build(mnist, gpu_option(), full)
    assert all(op.device_option.device_type == 1 for op in gpu_model.net.Proto().op)
    workspace.RunNetOnce(gpu_model.param_init_net)
    names = [str(b) for b in gpu_model.param_init_net.Proto().external_output] or \
        [o for op in gpu_model.param_init_net.Proto().op for o in op.output]
    # Every parameter on the device; the iteration counter stays on the CPU, as brew.iter puts it.
    assert all(dev.is_device_array(workspace._ws().get(n)) for n in names if n != "iter")
    assert isinstance(workspace._ws().get("iter"), np.ndarray)
    params = {n: workspace.FetchBlob(n) for n in names}
    gpu_losses, gpu_params = _train(gpu_model, params, data, label, gpu_option())
    text = workspace._ws().nets[gpu_model.net.Name()].compiled.explain(sources=False)
    # Only the metric, the counter, the learning rate and the checkpoint run on the host.
    host = sorted({ln.split()[3].rstrip(":") for ln in text.splitlines() if ln.strip().startswith("[host")})
    assert host == ["Accuracy", "Checkpoint", "Iter", "LearningRate"], host
    assert "copies: device->host []; host->device ['LR']" in text      # iter stays on the CPU
    assert isinstance(workspace._ws().get("iter"), np.ndarray)

    workspace.ResetWorkspace()
    cpu_model = _build(mnist, None, full)
    cpu_losses, cpu_params = _train(cpu_model, params, data, label, None)

    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-4)
    assert gpu_losses[-1] < gpu_losses[0]       # it learns: the loss on the batch goes down
    for p in cpu_params:
        np.testing.assert_allclose(gpu_params[p], cpu_params[p], rtol=1e-3, atol=1e-5, err_msg=p)
