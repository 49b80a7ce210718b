"""``caffe2.python.predictor.mobile_exporter``: a net and its workspace parameters as the
``(init_net, predict_net)`` pair that ``workspace.Predictor`` (and Caffe2 mobile) load.

The init net holds each parameter as a GivenTensor*Fill op with its values inline, plus a
placeholder fill for every data input, so the predict net can be created right after it runs.

>>> from netjit import core, workspace
>>> import numpy as np
>>> net = core.Net("doctest_mobile")
>>> _ = net.FC(["x", "w", "b"], "y")
>>> _ = workspace.FeedBlob("w", np.ones((2, 3), np.float32))
>>> _ = workspace.FeedBlob("b", np.zeros(2, np.float32))
>>> init_net, predict_net = Export(workspace, net, ["w", "b"])
>>> [op.type for op in init_net.op], list(predict_net.external_input), list(predict_net.external_output)
(['GivenTensorFill', 'GivenTensorFill', 'GivenTensorFill'], ['x', 'x', 'w', 'b'], ['y'])
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from netjit.proto import caffe2_pb2
from netjit.proto.args import make_argument, make_op

# Caffe2's exporter knows the first four; double and bool are netjit additions so that such
# parameters export instead of failing (both fillers exist in the registry). Doubles pass through
# the float32 `floats` field, so they keep only float32 precision.
_FILL_OP_OF_DTYPE = {
    np.dtype(np.float32): "GivenTensorFill",
    np.dtype(np.int32): "GivenTensorIntFill",
    np.dtype(np.int64): "GivenTensorInt64Fill",
    np.dtype(np.uint8): "GivenTensorStringFill",
    np.dtype(np.float64): "GivenTensorDoubleFill",
    np.dtype(np.bool_): "GivenTensorBoolFill",
}


def add_tensor(net: caffe2_pb2.NetDef, name: str, blob: np.ndarray) -> None:
    """Append one fill op that recreates ``blob`` as ``name``. uint8 tensors travel as a single
    string of raw bytes (``shape=[1]``), which is far smaller than one int per byte."""
    blob = np.asarray(blob)
    op_type = _FILL_OP_OF_DTYPE.get(blob.dtype)
    if op_type is None:
        raise TypeError(f"cannot export parameter {name!r}: dtype {blob.dtype} has no GivenTensor*Fill op "
                        f"(supported: {sorted(str(d) for d in _FILL_OP_OF_DTYPE)})")
    if blob.dtype == np.uint8:
        shape: list[int] = [1]
        values: Any = [np.ascontiguousarray(blob).tobytes()]
    else:
        shape = [int(d) for d in blob.shape]
        values = blob.reshape(-1)
        if blob.dtype == np.bool_:
            values = values.astype(np.int64)  # bool values are stored in `ints`
    net.op.append(make_op(op_type, [], [name],
                          arg=[make_argument("shape", shape), make_argument("values", values)]))


def _blob_versions(proto: caffe2_pb2.NetDef) -> tuple[dict[str, int], set[str]]:
    """Caffe2's SSA bookkeeping: every blob's write count (external inputs first, or, for a net
    with no external inputs, op inputs in first-use order) and the set of blobs any op reads."""
    versions: dict[str, int] = {name: 0 for name in proto.external_input}
    read: set[str] = set()
    for op in proto.op:
        if not proto.external_input:
            for name in op.input:
                versions.setdefault(name, 0)
        read.update(op.input)
        for name in op.output:
            versions[name] = versions.get(name, 0) + 1
    return versions, read


def Export(workspace: Any, net: Any, params: Iterable[Any]) -> tuple[caffe2_pb2.NetDef, caffe2_pb2.NetDef]:
    """``(init_net, predict_net)`` for ``net`` with the given parameters taken from ``workspace``
    (the ``workspace`` module, or any object with ``FetchBlob``).

    - init_net: one GivenTensor*Fill per parameter, then a ``[1, 1]`` zero placeholder for every
      blob the net reads but never writes that is not a parameter (the data inputs);
    - predict_net: a copy of ``net`` whose external inputs are those data inputs followed by the
      original external inputs (so positional Predictor feeding binds the data first), and whose
      external outputs are the blobs written but never read.
    """
    proto = net if isinstance(net, caffe2_pb2.NetDef) else net.Proto()
    params = [str(p) for p in params]
    param_set = set(params)
    predict_net = caffe2_pb2.NetDef()
    predict_net.CopyFrom(proto)
    init_net = caffe2_pb2.NetDef()

    versions, read = _blob_versions(proto)
    input_blobs = [b for b, v in versions.items() if v == 0 and b not in param_set]
    output_blobs = [b for b, v in versions.items() if v != 0 and b not in read]

    for name in params:
        add_tensor(init_net, name, workspace.FetchBlob(name))
    for name in input_blobs:
        init_net.op.append(make_op("GivenTensorFill", [], [name],
                                   arg=[make_argument("shape", [1, 1]), make_argument("values", [0.0])]))

    del predict_net.external_input[:]
    predict_net.external_input.extend(input_blobs)
    predict_net.external_input.extend(proto.external_input)
    del predict_net.external_output[:]
    predict_net.external_output.extend(output_blobs)
    return init_net, predict_net


__all__ = ["Export", "add_tensor"]
