"""Shared helpers for op records: shape/dtype inference rules and dtype tables."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from netjit.compiler.ops.registry import Args, TensorType
from netjit.proto import caffe2_pb2

DT = caffe2_pb2.TensorProto

# Caffe2 DataType <-> numpy dtype. STRING maps to object arrays of bytes.
DTYPE_OF = {
    DT.FLOAT: np.dtype(np.float32), DT.INT32: np.dtype(np.int32), DT.BYTE: np.dtype(np.uint8),
    DT.STRING: np.dtype(object), DT.BOOL: np.dtype(np.bool_), DT.UINT8: np.dtype(np.uint8),
    DT.INT8: np.dtype(np.int8), DT.UINT16: np.dtype(np.uint16), DT.INT16: np.dtype(np.int16),
    DT.INT64: np.dtype(np.int64), DT.FLOAT16: np.dtype(np.float16), DT.DOUBLE: np.dtype(np.float64),
}
DATATYPE_OF = {np.dtype(np.float32): DT.FLOAT, np.dtype(np.int32): DT.INT32, np.dtype(np.uint8): DT.UINT8,
               np.dtype(object): DT.STRING, np.dtype(np.bool_): DT.BOOL, np.dtype(np.int8): DT.INT8,
               np.dtype(np.uint16): DT.UINT16, np.dtype(np.int16): DT.INT16, np.dtype(np.int64): DT.INT64,
               np.dtype(np.float16): DT.FLOAT16, np.dtype(np.float64): DT.DOUBLE}


class ShapeDependsOnValues(ValueError):
    """Raised by an ``infer`` rule when an output shape is read from an input's *values* (Reshape
    with a shape input, fillers with ``input_as_shape=1``), which a TensorType does not carry.
    Callers that know the value (constant folding, a run of the reference) can still get the shape."""

    def __init__(self, op_type: str, input_index: int):
        super().__init__(f"{op_type}: the output shape depends on the values of input {input_index}")
        self.op_type = op_type
        self.input_index = input_index


def dtype_from_arg(value: Any) -> np.dtype:
    """A ``dtype``/``to`` argument: a DataType int or a case-insensitive name like "float"."""
    if isinstance(value, (bytes, str)):
        name = value.decode() if isinstance(value, bytes) else value
        try:
            value = DT.DataType.Value(name.upper())
        except ValueError:
            raise ValueError(f"unknown data type name {name!r}") from None
    if value not in DTYPE_OF:
        raise ValueError(f"unsupported data type {value}")
    return DTYPE_OF[value]


def same_as(i: int = 0, n_outputs: int = 1) -> Callable[[Args, list[TensorType]], list[TensorType]]:
    """Inference rule: every output has input i's shape and dtype."""
    def infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
        return [inputs[i]] * n_outputs
    return infer


def scalar_of(dtype: Any) -> Callable[[Args, list[TensorType]], list[TensorType]]:
    """Inference rule: one 0-d output of a fixed dtype (losses, metrics)."""
    dt = np.dtype(dtype)

    def infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
        return [TensorType((), dt)]
    return infer
