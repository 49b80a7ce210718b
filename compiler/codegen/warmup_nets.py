"""The small nets ``netjit warmup`` compiles: one per common architecture family, at toy sizes.

Generated kernels take their sizes as arguments (compiler/codegen/loops.py), so a kernel compiled
for a 16-channel 8x8 conv + BN + ReLU group is the very kernel a 256-channel 56x56 layer of the same
pattern uses. Each builder here reproduces the op patterns (op types, arguments, fusion groups) of
one family as the real model files spell them: LeNet as brew writes it and as the PyTorch/ONNX
export does, LeNet training with SGD, ResNet bottlenecks, Inception and SqueezeNet modules, DenseNet
layers. Where codegen picks a kernel by size (Winograd for 3x3 layers with enough tiles) a builder
has a layer on each side of the threshold.

>>> net = build("lenet_onnx")
>>> [op.type for op in net.predict.op][:4]
['Conv', 'Add', 'MaxPool', 'Relu']
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from netjit.proto import caffe2_pb2
from netjit.proto.args import make_op


@dataclass
class WarmupNet:
    """A predict (or training) net, the blobs it needs (weights and inputs), and how many times
    to run it (a training step reads what the previous one wrote). ``predictor``: serve it the
    way exported models run, through ``workspace.Predictor`` with the weights as GivenTensorFill
    ops of an init net (only the net's outputs are kept, so its kernels store fewer blobs than
    under ``RunNet``, which keeps every blob visible); else ``CreateNet`` + ``RunNet``."""
    name: str
    predict: caffe2_pb2.NetDef
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    init: caffe2_pb2.NetDef | None = None
    runs: int = 1
    predictor: bool = False
    batches: tuple[int, ...] = (1,)
    """Predictor nets run once per batch size: a loop nest collapses size-1 dims, so batch 1 and
    batch > 1 fuse into different kernels (any batch > 1 shares one)."""
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    """Predictor nets with these also run with the weights fed into the workspace (writable
    arrays) instead of the init net's folded (read-only) constants: numba specialises on that."""


def given_init_net(name: str, weights: dict[str, np.ndarray]) -> caffe2_pb2.NetDef:
    """An init net of GivenTensorFill ops holding ``weights`` (float32), as exporters write it."""
    net = caffe2_pb2.NetDef(name=name + "_init")
    for blob, value in weights.items():
        net.op.append(make_op("GivenTensorFill", [], [blob], shape=list(value.shape),
                              values=[float(v) for v in value.ravel()]))
    return net


class _Builder:
    """Appends ops to one NetDef and makes seeded weights of the right shapes."""

    def __init__(self, name: str, data_shape: tuple[int, ...]) -> None:
        self.net = caffe2_pb2.NetDef(name=name, external_input=["data"])
        self.rng = np.random.default_rng(0)
        self.feeds = {"data": self.rng.standard_normal(data_shape).astype(np.float32)}
        self.channels = {"data": data_shape[1]}
        self.count = 0

    def _param(self, shape: tuple[int, ...], scale: float = 0.1, positive: bool = False) -> str:
        self.count += 1
        name = f"_w{self.count}"
        value = self.rng.standard_normal(shape).astype(np.float32) * scale
        self.feeds[name] = np.abs(value) + 0.5 if positive else value
        self.net.external_input.append(name)
        return name

    def op(self, op_type: str, inputs: list[str], output: str, channels: int | None = None, **args) -> str:
        self.net.op.append(make_op(op_type, inputs, [output], **args))
        self.channels[output] = self.channels[inputs[0]] if channels is None else channels
        return output

    def conv(self, x: str, out: str, m: int, kernel: int, stride: int = 1, pad: int = 0,
             bias: bool = True) -> str:
        c = self.channels[x]
        inputs = [x, self._param((m, c, kernel, kernel))] + ([self._param((m,))] if bias else [])
        return self.op("Conv", inputs, out, m, kernel=kernel, stride=stride, pad=pad)

    def bn(self, x: str, out: str, epsilon: float = 1e-5) -> str:
        c = self.channels[x]
        params = [self._param((c,)), self._param((c,)), self._param((c,)), self._param((c,), positive=True)]
        return self.op("SpatialBN", [x, *params], out, is_test=1, epsilon=epsilon)

    def conv_bn_relu(self, x: str, out: str, m: int, kernel: int, stride: int = 1, pad: int = 0,
                     relu: bool = True) -> str:
        y = self.bn(self.conv(x, out + "_conv", m, kernel, stride, pad, bias=False), out + "_bn")
        return self.op("Relu", [y], out) if relu else y

    def fc_softmax(self, x: str, units: int) -> None:
        k = self.channels[x]
        y = self.op("FC", [x, self._param((units, k)), self._param((units,))], "pred", units)
        self.op("Softmax", [y], "prob")
        self.net.external_output.append("prob")

    def done(self, batches: tuple[int, ...] = (1,)) -> WarmupNet:
        """A Predictor-served net: weights in a GivenTensorFill init net, "data" fed."""
        weights = {k: v for k, v in self.feeds.items() if k != "data"}
        return WarmupNet(self.net.name, self.net, {"data": self.feeds["data"]},
                         init=given_init_net(self.net.name, weights), predictor=True, batches=batches,
                         weights=weights)


def lenet_onnx() -> WarmupNet:
    """LeNet as Caffe2 exported it from PyTorch through ONNX: bias-free Conv + broadcast Add."""
    b = _Builder("lenet_onnx", (1, 1, 28, 28))
    x = "data"
    for i, m in enumerate((20, 50)):
        y = b.conv(x, f"c{i}", m, 5, bias=False)
        y = b.op("Add", [y, b._param((m,))], f"a{i}", broadcast=1, axis=1)
        y = b.op("MaxPool", [y], f"p{i}", kernels=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0])
        x = b.op("Relu", [y], f"r{i}")
    b.net.op.append(make_op("Reshape", [x], ["flat", "old_shape"], shape=[-1, 800]))
    h = b.op("FC", ["flat", b._param((500, 800)), b._param((500,))], "fc3", 500)
    b.op("FC", [h, b._param((10, 500)), b._param((10,))], "logits", 10)
    b.net.external_output.append("logits")
    return b.done(batches=(1, 8))


def _lenet_model(train: bool):
    from netjit import brew, model_helper
    arg_scope = {"order": "NCHW"}
    model = model_helper.ModelHelper(name="warmup_lenet_train" if train else "warmup_lenet",
                                     arg_scope=arg_scope, init_params=True)
    data = model.StopGradient("data", "data") if train else "data"
    conv1 = brew.conv(model, data, "conv1", dim_in=1, dim_out=20, kernel=5)
    pool1 = brew.max_pool(model, conv1, "pool1", kernel=2, stride=2)
    conv2 = brew.conv(model, pool1, "conv2", dim_in=20, dim_out=50, kernel=5)
    pool2 = brew.max_pool(model, conv2, "pool2", kernel=2, stride=2)
    fc3 = brew.fc(model, pool2, "fc3", dim_in=50 * 4 * 4, dim_out=500)
    relu = brew.relu(model, fc3, fc3)
    pred = brew.fc(model, relu, "pred", 500, 10)
    softmax = brew.softmax(model, pred, "softmax")
    if train:
        xent = model.LabelCrossEntropy([softmax, "label"], "xent")
        loss = model.AveragedLoss(xent, "loss")
        model.AddGradientOperators([loss])
        iteration = brew.iter(model, "iter")
        lr = model.LearningRate(iteration, "LR", base_lr=-0.1, policy="fixed")
        one = model.param_init_net.ConstantFill([], "ONE", shape=[1], value=1.0)
        for param in model.params:
            model.WeightedSum([param, one, model.param_to_grad[param], lr], param)
    return model


def lenet(train: bool = False) -> WarmupNet:
    """The tutorial's LeNet (examples/mnist.py) predicting, or training one SGD step a run."""
    model = _lenet_model(train)
    rng = np.random.default_rng(0)
    batch = 64 if train else 1
    feeds = {"data": rng.random((batch, 1, 28, 28), dtype=np.float32)}
    if train:
        feeds["label"] = rng.integers(0, 10, batch).astype(np.int32)
    return WarmupNet(model.net.Proto().name, model.net.Proto(), feeds, init=model.param_init_net.Proto(),
                     runs=2 if train else 1)


def resnet() -> WarmupNet:
    """ResNet-50's patterns: 7x7/2 stem, 3x3/2 max pool, bottlenecks with projection and identity
    shortcuts (stride 1 and 2), Winograd-sized and im2col-sized 3x3 layers, global average, FC."""
    b = _Builder("warmup_resnet", (1, 3, 32, 32))
    x = b.conv_bn_relu("data", "stem", 16, 7, stride=2, pad=3)
    x = b.op("MaxPool", [x], "pool", kernel=3, stride=2, pad=1)
    for i, (width, stride) in enumerate(((16, 1), (32, 2), (64, 2))):
        for j in range(2):
            s = stride if j == 0 else 1
            name = f"r{i}_{j}"
            y = b.conv_bn_relu(x, name + "a", width, 1, pad=0)
            y = b.conv_bn_relu(y, name + "b", width, 3, stride=s, pad=1)
            y = b.conv_bn_relu(y, name + "c", width * 4, 1, relu=False)
            short = x if j else b.conv_bn_relu(x, name + "s", width * 4, 1, stride=s, relu=False)
            x = b.op("Relu", [b.op("Sum", [y, short], name + "sum")], name)
    x = b.op("AveragePool", [x], "gap", kernel=2, stride=1)
    b.fc_softmax(x, 10)
    return b.done()


def inception() -> WarmupNet:
    """Inception v1's patterns: convs with bias and ReLU, LRN, 1x1/3x3/5x5 branches, the 3x3/1
    max-pool branch, Concat, padded average pool, Dropout (test), FC with axis_w, Softmax."""
    b = _Builder("warmup_inception", (1, 3, 32, 32))
    x = b.op("Relu", [b.conv("data", "c1", 16, 7, stride=2, pad=3)], "r1")
    x = b.op("MaxPool", [x], "p1", kernel=3, stride=2, pad=0)
    x = b.op("LRN", [x], "n1", size=5, alpha=1e-4, beta=0.75, bias=1.0)
    for i in range(2):
        a = b.op("Relu", [b.conv(x, f"i{i}a", 8, 1)], f"i{i}ar")
        m = b.op("Relu", [b.conv(x, f"i{i}b1", 8, 1)], f"i{i}b1r")
        m = b.op("Relu", [b.conv(m, f"i{i}b", 16, 3, pad=1)], f"i{i}br")
        f = b.op("Relu", [b.conv(x, f"i{i}c", 8, 5, pad=2)], f"i{i}cr")
        p = b.op("MaxPool", [x], f"i{i}p", kernel=3, stride=1, pad=1)
        p = b.op("Relu", [b.conv(p, f"i{i}pc", 8, 1)], f"i{i}pr")
        x = b.op("Concat", [a, m, f, p], f"i{i}", 40)
        b.net.op[-1].output.append(f"i{i}_dims")
    x = b.op("AveragePool", [x], "gap", kernel=7, stride=1, pad_t=0, pad_l=0, pad_b=1, pad_r=1)
    x = b.op("Dropout", [x], "drop", is_test=1, ratio=0.4, channels=40 * 2 * 2)  # FC flattens 40x2x2
    b.fc_softmax(x, 10)
    return b.done()


def squeezenet() -> WarmupNet:
    """SqueezeNet's fire modules: 1x1 squeeze, 1x1 and 3x3 expands (bias + ReLU), Concat, max pools,
    a final 1x1 conv, global average pool, Softmax."""
    b = _Builder("warmup_squeezenet", (1, 3, 32, 32))
    x = b.op("Relu", [b.conv("data", "c1", 32, 3, stride=2)], "r1")
    x = b.op("MaxPool", [x], "p1", kernel=3, stride=2)
    for i, (s, e) in enumerate(((8, 16), (16, 32))):
        sq = b.op("Relu", [b.conv(x, f"f{i}s", s, 1)], f"f{i}sr")
        e1 = b.op("Relu", [b.conv(sq, f"f{i}e1", e, 1)], f"f{i}e1r")
        e3 = b.op("Relu", [b.conv(sq, f"f{i}e3", e, 3, pad=1)], f"f{i}e3r")
        x = b.op("Concat", [e1, e3], f"f{i}", 2 * e)
        b.net.op[-1].output.append(f"f{i}_dims")
    x = b.op("Dropout", [x], "drop", is_test=1, ratio=0.5)
    x = b.op("Relu", [b.conv(x, "c10", 10, 1)], "r10")
    x = b.op("AveragePool", [x], "gap", global_pooling=1)
    b.op("Softmax", [x], "prob")
    b.net.external_output.append("prob")
    return b.done()


def densenet() -> WarmupNet:
    """DenseNet's patterns: SpatialBN then per-channel Mul/Add then ReLU before each conv, Concat
    growth, 2x2/2 average-pool transitions, global average pool."""
    b = _Builder("warmup_densenet", (1, 3, 32, 32))

    def bn_scale_relu(x: str, name: str) -> str:
        c = b.channels[x]
        y = b.bn(x, name + "_bn", epsilon=1e-5)
        y = b.op("Mul", [y, b._param((c,), positive=True)], name + "_mul", broadcast=1, axis=1)
        y = b.op("Add", [y, b._param((c,))], name + "_add", broadcast=1, axis=1)
        return b.op("Relu", [y], name + "_relu")

    x = bn_scale_relu(b.conv("data", "c1", 16, 7, stride=2, pad=3, bias=False), "s1")
    x = b.op("MaxPool", [x], "p1", kernel=3, stride=2, pad=1)
    for block in range(2):
        for j in range(2):
            name = f"d{block}_{j}"
            y = b.conv(bn_scale_relu(x, name + "a"), name + "c1", 32, 1, pad=0, bias=False)
            y = b.conv(bn_scale_relu(y, name + "b"), name + "c3", 8, 3, pad=1, bias=False)
            x = b.op("Concat", [x, y], name, b.channels[x] + 8)
            b.net.op[-1].output.append(name + "_dims")
        if block == 0:
            x = b.conv(bn_scale_relu(x, f"t{block}"), f"t{block}c", b.channels[x] // 2, 1, pad=0, bias=False)
            x = b.op("AveragePool", [x], f"t{block}p", kernel=2, stride=2, pad=0)
    x = b.op("AveragePool", [bn_scale_relu(x, "final")], "gap", global_pooling=1, kernel=0, stride=1, pad=0)
    b.op("Softmax", [x], "prob")
    b.net.external_output.append("prob")
    return b.done()


BUILDERS: dict[str, Callable[[], WarmupNet]] = {
    "lenet_train": lambda: lenet(train=True),
    "resnet": resnet,
    "densenet": densenet,
    "inception": inception,
    "squeezenet": squeezenet,
    "lenet_onnx": lenet_onnx,
    "lenet": lenet,
}
"""Heaviest first: a pool of workers takes them in this order."""


def build(name: str) -> WarmupNet:
    """The warmup net ``name`` (one of ``BUILDERS``)."""
    try:
        return BUILDERS[name]()
    except KeyError:
        raise ValueError(f"no warmup net {name!r} (known: {', '.join(BUILDERS)})") from None
