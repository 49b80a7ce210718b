"""``workspace.InferShapesAndTypes``: shapes and DataTypes by walking nets through each op's
registered inference rule, starting from workspace blobs or caller-given dimensions."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from netjit.compiler.ops.common import DATATYPE_OF, DTYPE_OF
from netjit.compiler.ops.registry import TensorType, lookup
from netjit.proto import caffe2_pb2
from netjit.runtime.workspace import Workspace


def infer_shapes_and_types(nets: Sequence[caffe2_pb2.NetDef], ws: Workspace,
                           blob_dimensions: dict[str, Sequence[int]] | None = None,
                           blob_types: dict[str, int] | None = None) -> tuple[dict[str, list[int]], dict[str, int]]:
    known: dict[str, TensorType] = {}
    if blob_dimensions is None:
        for name in ws.names():
            value = ws.get(name)
            if isinstance(value, np.ndarray):
                known[name] = TensorType(value.shape, value.dtype)
    else:
        for name, dims in blob_dimensions.items():
            dtype = DTYPE_OF[(blob_types or {}).get(name, caffe2_pb2.TensorProto.FLOAT)]
            known[name] = TensorType(tuple(int(d) for d in dims), dtype)
    for net in nets:
        for op in net.op:
            opdef = lookup(op.type)
            if opdef.infer is None or any(name not in known for name in op.input):
                continue
            try:
                outs = opdef.infer(opdef.decode_args(op), [known[name] for name in op.input])
            except (ValueError, KeyError, IndexError):
                continue  # Caffe2 also leaves blobs it cannot infer out of the result
            for name, tt in zip(op.output, outs):
                known[name] = tt
    shapes = {name: list(tt.shape) for name, tt in known.items()}
    types = {name: DATATYPE_OF.get(np.dtype(tt.dtype), caffe2_pb2.TensorProto.UNDEFINED) for name, tt in known.items()}
    return shapes, types
