"""A small Caffe2 predict net -> ONNX model converter, for benchmarking onnxruntime on the very same
graph and weights netjit runs (LeNet from brew; ResNet-50 and inception_v1 from the model zoo;
SqueezeNet 1.1 as bench_compile.py builds it).

It covers the inference ops those nets use: Conv, MaxPool, AveragePool (padding excluded from the
divisor unless ``count_include_pad``, as Caffe2's), SpatialBN (is_test), Relu, Sum, FC (``axis``
and ``axis_w``), Softmax, Concat (the split-info output is dropped), LRN (the scale output is
dropped), Dropout (is_test: an Identity). Caffe2 nets rewrite blobs in place (``Relu X -> X``); ONNX wants each
value defined once, so every write gets a fresh versioned name. Window geometry (kernel, stride,
pads) is resolved by netjit's own Caffe2 argument decoder against the input's spatial size, so
the ONNX pads reproduce Caffe2's output sizes; callers should still compare outputs numerically.

>>> # model = netdef_to_onnx(net, weights, {"data": (1, 1, 28, 28)}, ["softmax"], shapes)
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from netjit.compiler.ops.convpool_args import NOTSET, decode
from netjit.compiler.ops.registry import lookup
from netjit.proto import caffe2_pb2

OPSET = 17


class _Names:
    """SSA names for Caffe2 blobs: the current ONNX name of each blob, a fresh one per write."""

    def __init__(self) -> None:
        self.current: dict[str, str] = {}
        self.versions: dict[str, int] = {}

    def read(self, blob: str) -> str:
        if blob not in self.current:
            raise ValueError(f"blob {blob!r} is read before anything defines it")
        return self.current[blob]

    def write(self, blob: str) -> str:
        version = self.versions.get(blob, -1) + 1
        self.versions[blob] = version
        name = blob if version == 0 else f"{blob}__v{version}"
        self.current[blob] = name
        return name


def _window(op: caffe2_pb2.OperatorDef, spatial: Sequence[int]) -> dict[str, Any]:
    spec = decode(lookup(op.type).decode_args(op))
    if spec.order != "NCHW":
        raise ValueError(f"{op.type}: only NCHW converts (got {spec.order})")
    if spec.legacy_pad != NOTSET:
        raise ValueError(f"{op.type}: legacy_pad is not converted")
    geom = spec.geometry(spatial)
    attrs = {"kernel_shape": list(geom.kernel), "strides": list(geom.stride),
             "pads": list(geom.pad_head) + list(geom.pad_tail)}
    if op.type == "Conv":
        attrs["dilations"] = list(geom.dilation)
        attrs["group"] = spec.group
    return attrs


def netdef_to_onnx(net: caffe2_pb2.NetDef, weights: Mapping[str, np.ndarray],
                   inputs: Mapping[str, Sequence[int | str]], outputs: Sequence[str],
                   shapes: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    """ONNX model of ``net``: ``weights`` become initializers, ``inputs`` maps each data input to
    its shape (a str dim is symbolic, e.g. "N" for any batch), ``shapes`` gives each blob's shape
    (any batch) for resolving pooling/conv windows."""
    names = _Names()
    nodes: list[onnx.NodeProto] = []
    inits = [numpy_helper.from_array(np.ascontiguousarray(v), name=k) for k, v in weights.items()]
    for blob in list(weights) + list(inputs):
        names.write(blob)

    def emit(op_type: str, ins: Sequence[str], outs: Sequence[str], **attrs: Any) -> None:
        nodes.append(helper.make_node(op_type, list(ins), list(outs), **attrs))

    for index, op in enumerate(net.op):
        args = lookup(op.type).decode_args(op)
        ins = [names.read(b) for b in op.input]
        if op.type in ("Conv", "MaxPool", "AveragePool"):
            attrs = _window(op, shapes[op.input[0]][2:])
            if op.type == "AveragePool":
                attrs["count_include_pad"] = int(bool(args.count_include_pad))
            emit(op.type, ins, [names.write(op.output[0])], **attrs)  # same names in ONNX
        elif op.type == "SpatialBN":
            if not args.is_test:
                raise ValueError(f"op #{index}: SpatialBN converts only with is_test=1")
            emit("BatchNormalization", ins[:5], [names.write(op.output[0])], epsilon=float(args.epsilon))
        elif op.type in ("Relu", "Sum"):
            emit(op.type, ins, [names.write(op.output[0])])
        elif op.type == "FC":
            axis = int(args.axis) if args.has("axis") else 1
            flat = names.write(op.output[0] + "__flat")
            emit("Flatten", ins[:1], [flat], axis=axis)
            weight = ins[1]
            if op.input[1] in weights and weights[op.input[1]].ndim != 2:  # axis_w: a conv-shaped weight
                axis_w = int(args.axis_w) if args.has("axis_w") else 1
                weight = names.write(op.input[1] + "__2d")
                emit("Flatten", [ins[1]], [weight], axis=axis_w)
            emit("Gemm", [flat, weight, ins[2]], [names.write(op.output[0])], transB=1)
        elif op.type == "Softmax":
            axis = int(args.axis) if args.has("axis") else 1
            shape = shapes[op.input[0]]
            # Caffe2 flattens to 2-D at ``axis``; ONNX (opset 13+) normalises along one axis: the
            # same when the dims after axis 1 are all 1 (a 1x1 global pool's output).
            if axis != 1 or int(np.prod(shape[2:])) != 1:
                raise ValueError(f"op #{index}: Softmax converts on axis 1 with trailing unit dims only")
            emit("Softmax", ins, [names.write(op.output[0])], axis=1)
        elif op.type == "Concat":
            axis = int(args.axis) if args.has("axis") else (3 if args.has("order") and args.order == "NHWC" else 1)
            if args.has("add_axis") and args.add_axis:
                raise ValueError(f"op #{index}: Concat with add_axis is not converted")
            emit("Concat", ins, [names.write(op.output[0])], axis=axis)
        elif op.type == "LRN":
            if args.has("order") and args.order != "NCHW":
                raise ValueError(f"op #{index}: LRN converts in NCHW only")
            # Caffe2 and ONNX both divide alpha by size: the same formula.
            emit("LRN", ins[:1], [names.write(op.output[0])], size=int(args.size), alpha=float(args.alpha),
                 beta=float(args.beta), bias=float(args.bias))
        elif op.type == "Dropout":
            if not args.is_test:
                raise ValueError(f"op #{index}: Dropout converts only with is_test=1")
            emit("Identity", ins[:1], [names.write(op.output[0])])
        else:
            raise ValueError(f"op #{index}: {op.type} has no ONNX conversion here")

    graph_inputs = [helper.make_tensor_value_info(b, TensorProto.FLOAT, list(s)) for b, s in inputs.items()]
    # Outputs keep their Caffe2 names: add an Identity when the final version was renamed.
    graph_outputs = []
    batch = next(iter(inputs.values()))[0]  # the outputs' batch dim: the (first) input's, maybe symbolic
    for blob in outputs:
        final = names.read(blob)
        if final != blob:
            emit("Identity", [final], [blob + "__out"])
            final = blob + "__out"
        shape = [batch] + list(shapes[blob][1:])
        graph_outputs.append(helper.make_tensor_value_info(final, TensorProto.FLOAT, shape))
    graph = helper.make_graph(nodes, net.name or "net", graph_inputs, graph_outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by any recent onnxruntime
    onnx.checker.check_model(model)
    return model
