"""The engines bench_lenet.py times, each built from the same weights and the same real digits:
netjit (compiled or reference executor) through the Caffe2 API, PyTorch eager, onnxruntime.

``build(engine, case, batch, mnist_dir, threads)`` returns ``(call, check)``: ``call()`` runs one
training step or one prediction; ``check`` is what it produced first (softmax, or the loss and
parameters after one SGD step), for comparing engines numerically before timing them.

Cases: "train" (LeNet, batch 64: forward + backward + SGD update), "predict" (LeNet softmax),
"resnet50" (model-zoo ResNet-50 predict net with ``zoo.random_zoo_weights``).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
for _path in (HERE.parent, HERE):  # examples/ holds mnist.py (the tutorial's model); here c2_to_onnx.py
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from caffe2.python import brew, core, model_helper, workspace  # noqa: E402
from caffe2.python.predictor import mobile_exporter  # noqa: E402
from caffe2.proto import caffe2_pb2  # noqa: E402

import mnist  # noqa: E402
from netjit.bench import executor  # noqa: E402
from netjit.mnist_data import IMAGES_FILE, LABELS_FILE, read_idx  # noqa: E402

ENGINES = ("netjit compiled", "netjit reference", "torch eager", "onnxruntime")
CASES = ("train", "predict", "resnet50")
LENET_PARAMS = ["conv1_w", "conv1_b", "conv2_w", "conv2_b", "fc3_w", "fc3_b", "pred_w", "pred_b"]
LR = 0.1
TRAIN_BATCH = 64


def mnist_batch(mnist_dir: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n real test digits as the tutorial feeds them: float [n,1,28,28] in [0,1), labels."""
    images = read_idx(mnist_dir / IMAGES_FILE)[:n, None].astype(np.float32) / 256
    return np.ascontiguousarray(images), read_idx(mnist_dir / LABELS_FILE)[:n].astype(np.int64)


# ------------------------------------------------------------------------------ LeNet nets
def lenet_train_model() -> model_helper.ModelHelper:
    """The tutorial's training net fed by blobs (data float [64,1,28,28], label int32), with a
    fixed learning rate so that one step compares with PyTorch's SGD; initializers seeded."""
    model = model_helper.ModelHelper(name="bench_lenet_train", arg_scope=mnist.ARG_SCOPE)
    data = model.StopGradient("data", "data")
    softmax = mnist.AddLeNetModel(model, data)
    xent = model.LabelCrossEntropy([softmax, "label"], "xent")
    loss = model.AveragedLoss(xent, "loss")
    model.AddGradientOperators([loss])
    iteration = brew.iter(model, "iter")
    lr = model.LearningRate(iteration, "LR", base_lr=-LR, policy="fixed")
    one = model.param_init_net.ConstantFill([], "ONE", shape=[1], value=1.0)
    for param in model.params:
        model.WeightedSum([param, one, model.param_to_grad[param], lr], param)
    mnist.seed_initializers(model.param_init_net, 0)
    return model


def lenet_deploy_net() -> core.Net:
    model = model_helper.ModelHelper(name="bench_lenet_deploy", arg_scope=mnist.ARG_SCOPE, init_params=False)
    mnist.AddLeNetModel(model, "data")
    return model.net


def lenet_weights() -> dict[str, np.ndarray]:
    """The seeded initial LeNet parameters (identical in every process)."""
    workspace.SwitchWorkspace("bench_lenet_weights", True)
    workspace.ResetWorkspace()
    with executor("reference"):
        workspace.RunNetOnce(lenet_train_model().param_init_net)
    weights = {p: workspace.FetchBlob(p) for p in LENET_PARAMS}
    workspace.SwitchWorkspace("default")
    return weights


def torch_lenet(weights: dict[str, np.ndarray]) -> Any:
    import torch
    from torch import nn

    class LeNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
            self.fc3, self.pred = nn.Linear(800, 500), nn.Linear(500, 10)

        def forward(self, x: Any) -> Any:   # logits; the loss or the caller applies softmax
            x = nn.functional.max_pool2d(self.conv1(x), 2)
            x = nn.functional.max_pool2d(self.conv2(x), 2)
            return self.pred(torch.relu(self.fc3(x.flatten(1))))

    net = LeNet()
    with torch.no_grad():
        for name in LENET_PARAMS:
            torch_param(net, name).copy_(torch.from_numpy(weights[name]))
    return net


def torch_param(net: Any, name: str) -> Any:
    """The PyTorch parameter behind a Caffe2 parameter name (conv1_w -> conv1.weight)."""
    layer = getattr(net, name.rsplit("_", 1)[0])
    return layer.weight if name.endswith("_w") else layer.bias


def ort_session(model: Any, threads: int | None) -> Any:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def blob_shapes(net: core.Net | Any, feeds: dict[str, np.ndarray], weights: dict[str, np.ndarray]) -> dict:
    """Every blob's shape after one reference run (for the ONNX converter's window geometry)."""
    workspace.SwitchWorkspace("bench_shapes", True)
    workspace.ResetWorkspace()
    for name, value in {**weights, **feeds}.items():
        workspace.FeedBlob(name, value)
    with executor("reference"):
        workspace.RunNetOnce(net)
    shapes = {b: workspace.FetchBlob(b).shape for b in workspace.Blobs()}
    workspace.SwitchWorkspace("default")
    return shapes


# ------------------------------------------------------------------------------ the cases
def netjit_train(executor_name: str, mnist_dir: Path) -> tuple[Callable[[], Any], Any, model_helper.ModelHelper]:
    """The training net created in workspace "bench_train" and run once: (step, check, model)."""
    images, labels = mnist_batch(mnist_dir, TRAIN_BATCH)
    model = lenet_train_model()
    workspace.SwitchWorkspace("bench_train", True)
    workspace.ResetWorkspace()
    with executor(executor_name):
        workspace.RunNetOnce(model.param_init_net)
        workspace.FeedBlob("data", images)
        workspace.FeedBlob("label", labels.astype(np.int32))
        workspace.CreateNet(model.net, overwrite=True)
        workspace.RunNet(model.net)
    check = {"loss": float(workspace.FetchBlob("loss")), **{p: workspace.FetchBlob(p) for p in LENET_PARAMS}}
    name = model.net.Proto().name
    return (lambda: workspace.RunNet(name)), check, model


def _train(engine: str, mnist_dir: Path) -> tuple[Callable[[], Any], Any]:
    images, labels = mnist_batch(mnist_dir, TRAIN_BATCH)
    if engine.startswith("netjit"):
        call, check, _ = netjit_train(engine.split()[1], mnist_dir)
        return call, check
    if engine == "torch eager":
        import torch
        net = torch_lenet(lenet_weights())
        opt = torch.optim.SGD(net.parameters(), lr=LR)
        x, y = torch.from_numpy(images), torch.from_numpy(labels)
        last = {}

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            last["loss"] = loss
        step()
        check = {"loss": float(last["loss"].detach()),
                 **{p: torch_param(net, p).detach().numpy().copy() for p in LENET_PARAMS}}
        return step, check
    raise ValueError(f"no training engine {engine!r}")


def _predict(engine: str, batch: int, mnist_dir: Path, threads: int | None) -> tuple[Callable[[], Any], Any]:
    x, _ = mnist_batch(mnist_dir, batch)
    weights = lenet_weights()
    deploy = lenet_deploy_net()
    if engine.startswith("netjit"):
        workspace.SwitchWorkspace("bench_predict", True)
        workspace.ResetWorkspace()
        for name, value in weights.items():
            workspace.FeedBlob(name, value)
        init_net, predict_net = mobile_exporter.Export(workspace, deploy, LENET_PARAMS)
        with executor(engine.split()[1]):
            predictor = workspace.Predictor(init_net, predict_net)
        return (lambda: predictor.run([x])), predictor.run([x])[0]
    if engine == "torch eager":
        import torch
        net = torch_lenet(weights).eval()
        tx = torch.from_numpy(x)

        def predict() -> Any:
            with torch.inference_mode():
                return torch.softmax(net(tx), 1)
        return predict, predict().numpy()
    if engine == "onnxruntime":
        from c2_to_onnx import netdef_to_onnx
        shapes = blob_shapes(deploy, {"data": x}, weights)
        session = ort_session(netdef_to_onnx(deploy.Proto(), weights, {"data": ("N", 1, 28, 28)}, ["softmax"],
                                             shapes), threads)
        feed = {"data": x}
        return (lambda: session.run(None, feed)), session.run(None, feed)[0]
    raise ValueError(f"no predict engine {engine!r}")


def _resnet50(engine: str, threads: int | None) -> tuple[Callable[[], Any], Any]:
    from netjit import zoo
    net, data, shape = zoo.load_zoo_net("resnet50")
    weights = zoo.random_zoo_weights("resnet50")
    x = zoo.random_zoo_input("resnet50")
    out = net.external_output[0]
    if engine.startswith("netjit"):
        # Served the way Caffe2 served predict nets: a Predictor over the weights (here already in
        # the workspace, so its init net is empty), input in, softmax out.
        workspace.SwitchWorkspace("bench_resnet", True)
        workspace.ResetWorkspace()
        for name, value in weights.items():
            workspace.FeedBlob(name, value)
        with executor(engine.split()[1]):
            predictor = workspace.Predictor(caffe2_pb2.NetDef(name="resnet50_init"), net)
        return (lambda: predictor.run([x])), predictor.run([x])[0]
    if engine == "onnxruntime":
        from c2_to_onnx import netdef_to_onnx
        shapes = blob_shapes(net, {data: x}, weights)
        session = ort_session(netdef_to_onnx(net, weights, {data: shape}, [out], shapes), threads)
        feed = {data: x}
        return (lambda: session.run(None, feed)), session.run(None, feed)[0]
    raise ValueError(f"no ResNet-50 engine {engine!r}")


def build(engine: str, case: str, batch: int, mnist_dir: Path, threads: int | None) -> tuple[Callable[[], Any], Any]:
    """``(call, check)`` for one engine and case; the first call (compile, plan) has already run."""
    if threads is not None and engine == "torch eager":
        import torch
        torch.set_num_threads(threads)
    if case == "train":
        return _train(engine, mnist_dir)
    if case == "predict":
        return _predict(engine, batch, mnist_dir, threads)
    if case == "resnet50":
        return _resnet50(engine, threads)
    raise ValueError(f"unknown case {case!r} (known: {CASES})")
