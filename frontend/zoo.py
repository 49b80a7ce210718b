"""The Caffe2 model-zoo predict nets (../shared/models/zoo) with parameters of the right shapes.

Their weights were never published, and a predict net does not record parameter shapes: a Conv's
output channel count appears nowhere in it. This module supplies that missing knowledge as a
compact width table per architecture, and one walker that propagates channels (and, through each
op's registered shape inference, full shapes) through the net in order:

- Conv: ``W = [M, C/group, kh, kw]`` (M from the width table, C from the input), ``b = [M]``;
- FC: ``W = [N, K]`` with K the input flattened at ``axis`` and N from the table (``axis_w > 1``
  prepends ones: W is ``[1, ..., N, K]`` so that the first ``axis_w`` dims multiply to N);
- SpatialBN scale/bias/mean/var and per-channel ``Mul``/``Add`` (``broadcast=1, axis=1``)
  operands: ``[C]`` of their input;
- Concat sums channels, every other op is shape-inferred by the registry.

>>> zoo_models()                                                  # doctest: +SKIP
['bvlc_alexnet', 'densenet121', 'inception_v1', 'inception_v2', 'resnet50', 'vgg19', 'zfnet512']
>>> zoo_param_shapes("resnet50")["gpu_0/res2_0_branch2c_w"]       # doctest: +SKIP
(256, 64, 1, 1)
"""
from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np

from netjit.compiler.ops.convpool_args import decode as decode_window_args
from netjit.compiler.ops.registry import TensorType, lookup
from netjit.proto import caffe2_pb2
from netjit.proto.io import load_net

ZOO_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "zoo"

# A width is a channel count, or a rule of the input channel count (DenseNet transitions halve).
Width = Union[int, Callable[[int], int]]


def _half(channels: int) -> int:
    return channels // 2


def _inception_rows(columns: Sequence[str], rows: dict[str, Sequence[int | None]]) -> list[tuple[str, Width]]:
    """One exact-name rule per (module, branch conv); None marks a branch the module lacks."""
    return [(re.escape(f"inception_{module}/{column}"), width)
            for module, widths in rows.items() for column, width in zip(columns, widths) if width is not None]


# Per model: (regex fully matching a Conv/FC output blob, output channels / units). First match wins.
_WIDTHS: dict[str, list[tuple[str, Width]]] = {
    # AlexNet (Caffe's bvlc_alexnet; conv2/4/5 use group=2, which the walker reads from the op).
    "bvlc_alexnet": [("conv1", 96), ("conv2", 256), ("conv3", 384), ("conv4", 384), ("conv5", 256),
                     ("fc6", 4096), ("fc7", 4096), ("fc8", 1000)],
    # VGG-19: five stages of 3x3 convs.
    "vgg19": [(rf"conv{stage}_\d", width) for stage, width in enumerate((64, 128, 256, 512, 512), 1)]
    + [("fc6", 4096), ("fc7", 4096), ("fc8", 1000)],
    # ZFNet-512 (Zeiler & Fergus' widened variant: 512/1024/512 maps in layers 3-5).
    "zfnet512": [(r"gpu_0/conv1", 96), (r"gpu_0/conv2", 256), (r"gpu_0/conv3", 512), (r"gpu_0/conv4", 1024),
                 (r"gpu_0/conv5", 512), (r"gpu_0/fc6", 4096), (r"gpu_0/fc7", 4096), (r"gpu_0/pred", 1000)],
    # ResNet-50 bottlenecks: stage s has inner width 64*2^(s-2) and output width 4x that.
    "resnet50": [(r"gpu_0/conv1", 64), (r"gpu_0/pred", 1000)]
    + [rule for stage, inner in ((2, 64), (3, 128), (4, 256), (5, 512))
       for rule in ((rf"gpu_0/res{stage}_\d+_branch2[ab]", inner), (rf"gpu_0/res{stage}_\d+_branch(2c|1)", 4 * inner))],
    # DenseNet-121: growth rate 32, bottleneck 4*32, 64 initial maps, transitions halve, 1x1-conv classifier.
    "densenet121": [("conv1", 64), (r"conv\d+_\d+/x1", 4 * 32), (r"conv\d+_\d+/x2", 32), (r"conv\d+_blk", _half),
                    ("fc6", 1000)],
    # GoogLeNet: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) per inception module.
    "inception_v1": [(r"conv1/7x7_s2", 64), (r"conv2/3x3_reduce", 64), (r"conv2/3x3", 192),
                     (r"loss3/classifier", 1000)]
    + _inception_rows(("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj"), {
        "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
        "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
        "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
        "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
        "5b": (384, 192, 384, 48, 128, 128)}),
    # BN-Inception: (1x1, 3x3 reduce, 3x3, double reduce, double a, double b, pool proj); the
    # stride-2 modules 3c and 4e have no 1x1 or pool-projection branch.
    "inception_v2": [(r"conv1/7x7_s2", 64), (r"conv2/3x3_reduce", 64), (r"conv2/3x3", 192),
                     (r"loss3/classifier", 1000)]
    + _inception_rows(("1x1", "3x3_reduce", "3x3", "double3x3_reduce", "double3x3a", "double3x3b", "pool_proj"), {
        "3a": (64, 64, 64, 64, 96, 96, 32), "3b": (64, 64, 96, 64, 96, 96, 64),
        "3c": (None, 128, 160, 64, 96, 96, None), "4a": (224, 64, 96, 96, 128, 128, 128),
        "4b": (192, 96, 128, 96, 128, 128, 128), "4c": (160, 128, 160, 128, 160, 160, 128),
        "4d": (96, 128, 192, 160, 192, 192, 128), "4e": (None, 128, 192, 192, 256, 256, None),
        "5a": (352, 192, 320, 160, 224, 224, 128), "5b": (352, 192, 320, 192, 224, 224, 128)}),
}


class ZooError(ValueError):
    """A zoo net the width table or the walker cannot account for."""


def zoo_dir() -> Path:
    """Where the zoo lives: ``$NETJIT_ZOO_DIR`` or ../shared/models/zoo beside the checkout."""
    return Path(os.environ.get("NETJIT_ZOO_DIR", ZOO_DIR))


def zoo_models() -> list[str]:
    """The models with both a predict net here and a width table (sorted)."""
    root = zoo_dir()
    return sorted(name for name in _WIDTHS if (root / name / "predict_net.pbtxt").is_file())


def _check_name(name: str) -> None:
    if name not in _WIDTHS:
        raise ZooError(f"unknown zoo model {name!r}; known: {sorted(_WIDTHS)}")


@functools.lru_cache(maxsize=None)
def _load(name: str) -> tuple[bytes, str, tuple[int, ...], int]:
    _check_name(name)
    folder = zoo_dir() / name
    net = load_net(folder / "predict_net.pbtxt")
    info = json.loads((folder / "value_info.json").read_text())
    if len(info) != 1:
        raise ZooError(f"{folder / 'value_info.json'}: expected one input blob, got {sorted(info)}")
    (input_name, (data_type, shape)), = info.items()
    return net.SerializeToString(), input_name, tuple(int(d) for d in shape), int(data_type)


def load_zoo_net(name: str) -> tuple[caffe2_pb2.NetDef, str, tuple[int, ...]]:
    """``(predict_net, input_name, input_shape)``; the NetDef is a fresh copy each call.

    >>> net, data, shape = load_zoo_net("resnet50")                # doctest: +SKIP
    >>> data, shape                                                 # doctest: +SKIP
    ('gpu_0/data', (1, 3, 224, 224))
    """
    data, input_name, shape, _ = _load(name)
    return caffe2_pb2.NetDef.FromString(data), input_name, shape


# ------------------------------------------------------------------------------------- walker
def _width(name: str, rules: list[tuple[str, Width]], out_blob: str, in_channels: int) -> int:
    for pattern, width in rules:
        if re.fullmatch(pattern, out_blob):
            return width(in_channels) if callable(width) else int(width)
    raise ZooError(f"{name}: no width rule matches the output {out_blob!r} (rules: {[p for p, _ in rules]})")


def _arg_int(op: caffe2_pb2.OperatorDef, arg_name: str, default: int) -> int:
    for a in op.arg:
        if a.name == arg_name:
            return int(a.i)
    return default


def _param_shapes_of_op(name: str, rules: list[tuple[str, Width]], op: caffe2_pb2.OperatorDef,
                        x: tuple[int, ...]) -> dict[int, tuple[int, ...]]:
    """Shapes of this op's parameter inputs (by input index), from its data input's shape ``x``."""
    kind = op.type
    if kind == "Conv":
        spec = decode_window_args(lookup("Conv").decode_args(op))
        if spec.kernel is None:
            raise ZooError(f"{name}: Conv {op.output[0]!r} has no kernel argument")
        channels = x[1] if spec.channel_first else x[-1]
        out = _width(name, rules, op.output[0], channels)
        if channels % spec.group or out % spec.group:
            raise ZooError(f"{name}: Conv {op.output[0]!r} with group {spec.group}: {channels} input and "
                           f"{out} output channels must both divide by it")
        kernel = spec.kernel.per_dim(len(x) - 2)
        w = (out, channels // spec.group) + kernel if spec.channel_first else (out,) + kernel + (channels // spec.group,)
        return {1: w, 2: (out,)} if len(op.input) > 2 else {1: w}
    if kind == "FC":
        axis, axis_w = _arg_int(op, "axis", 1), _arg_int(op, "axis_w", 1)
        k = int(np.prod(x[axis:], dtype=np.int64))
        units = _width(name, rules, op.output[0], k)
        return {1: (1,) * (axis_w - 1) + (units, k), 2: (units,)}
    if kind == "SpatialBN":
        return {i: (x[1],) for i in range(1, len(op.input))}
    if kind in ("Mul", "Add"):
        if _arg_int(op, "broadcast", 0) != 1 or _arg_int(op, "axis", -1) != 1:
            raise ZooError(f"{name}: {kind} {op.output[0]!r} reads a parameter but is not a per-channel "
                           f"(broadcast=1, axis=1) op")
        return {1: (x[1],)}
    return {}


@functools.lru_cache(maxsize=None)
def _walk(name: str) -> tuple[tuple[tuple[str, tuple[int, ...]], ...], tuple[tuple[str, tuple[int, ...]], ...]]:
    """(parameter shapes in external-input order, every blob's final shape), by one pass over the net."""
    net, input_name, input_shape = load_zoo_net(name)
    rules = _WIDTHS[name]
    # resnet50 and zfnet512 also list a data-queue blob that no op reads: not a parameter.
    read = {b for op in net.op for b in op.input}
    params = [b for b in net.external_input if b != input_name and b in read]
    param_set = set(params)
    known: dict[str, TensorType] = {input_name: TensorType(input_shape, np.dtype(np.float32))}
    param_shapes: dict[str, tuple[int, ...]] = {}
    for index, op in enumerate(net.op):
        where = f"{name} op #{index} ({op.type} -> {list(op.output)})"
        data = op.input[0]
        if data not in known:
            raise ZooError(f"{where}: its input {data!r} has no shape yet (is it produced earlier?)")
        wanted = {i: b for i, b in enumerate(op.input) if b in param_set and b not in known}
        if wanted:
            shapes = _param_shapes_of_op(name, rules, op, tuple(known[data].shape))
            for i, blob in wanted.items():
                if i not in shapes:
                    raise ZooError(f"{where}: parameter input {i} {blob!r} has no shape rule for {op.type}")
                param_shapes[blob] = shapes[i]
                known[blob] = TensorType(shapes[i], np.dtype(np.float32))
        opdef = lookup(op.type)
        try:
            outs = opdef.infer(opdef.decode_args(op), [known[b] for b in op.input])
        except Exception as err:  # shape errors here mean a wrong width in the table
            raise ZooError(f"{where}: shape inference failed ({type(err).__name__}: {err})") from err
        for blob, tt in zip(op.output, outs):
            known[blob] = tt
    missing = [b for b in params if b not in param_shapes]
    if missing:
        raise ZooError(f"{name}: external inputs never read as parameters: {missing[:5]}")
    return (tuple((b, param_shapes[b]) for b in params),
            tuple((b, tuple(int(d) for d in tt.shape)) for b, tt in known.items()))


def zoo_param_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Every parameter blob of the model (the predict net's external inputs that some op reads,
    except the data input) with its shape, in external-input order."""
    return dict(_walk(name)[0])


def zoo_blob_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """The final shape of every blob the predict net touches, for a batch-1 input."""
    return dict(_walk(name)[1])


def random_zoo_weights(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 weights of the right shapes, reproducible from ``seed``, scaled so that a batch of
    unit-variance inputs keeps activations O(1)-ish through 100+ layers:

    - Conv/FC weights ~ N(0, 2/fan_in) (MSRA/He), biases ~ N(0, 0.01^2);
    - SpatialBN: scale ~ U(0.5, 1), bias ~ N(0, 0.05^2), mean ~ N(0, 0.05^2), var ~ U(0.5, 1.5)
      (always positive);
    - per-channel Mul ~ U(0.8, 1.2), Add ~ N(0, 0.05^2).

    >>> w = random_zoo_weights("bvlc_alexnet")                   # doctest: +SKIP
    >>> w["conv2_w"].shape        # group 2: 96/2 input channels  # doctest: +SKIP
    (256, 48, 5, 5)
    """
    rng = np.random.default_rng(seed)

    def normal(std: float, shape: tuple[int, ...]) -> np.ndarray:
        # float32 draws directly: VGG-19's 144M weights take ~1 s instead of ~5 in float64.
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    def uniform(low: float, high: float, shape: tuple[int, ...]) -> np.ndarray:
        return rng.random(shape, dtype=np.float32) * np.float32(high - low) + np.float32(low)

    net, _, _ = load_zoo_net(name)
    role: dict[str, tuple[str, int]] = {}
    for op in net.op:
        for i, b in enumerate(op.input):
            role.setdefault(b, (op.type, i))
    bn_init = {1: lambda shape: uniform(0.5, 1.0, shape), 2: lambda shape: normal(0.05, shape),
               3: lambda shape: normal(0.05, shape), 4: lambda shape: uniform(0.5, 1.5, shape)}
    weights: dict[str, np.ndarray] = {}
    for blob, shape in zoo_param_shapes(name).items():
        kind, index = role[blob]
        if kind in ("Conv", "FC") and index == 1:
            fan_in = int(np.prod(shape[1:])) if kind == "Conv" else shape[-1]
            value = normal(np.sqrt(2.0 / fan_in), shape)
        elif kind in ("Conv", "FC"):
            value = normal(0.01, shape)
        elif kind == "SpatialBN":
            value = bn_init[index](shape)
        elif kind == "Mul":
            value = uniform(0.8, 1.2, shape)
        elif kind == "Add":
            value = normal(0.05, shape)
        else:
            raise ZooError(f"{name}: no initializer for {blob!r} (input {index} of {kind})")
        weights[blob] = np.ascontiguousarray(value, dtype=np.float32)
    return weights


def random_zoo_input(name: str, seed: int = 0) -> np.ndarray:
    """A standard-normal float32 input of the model's value_info shape (batch 1)."""
    _, _, shape = load_zoo_net(name)
    return np.random.default_rng(seed + 1).standard_normal(shape).astype(np.float32)


__all__ = ["zoo_models", "load_zoo_net", "zoo_param_shapes", "zoo_blob_shapes", "random_zoo_weights",
           "random_zoo_input", "ZooError", "zoo_dir"]
