"""Building Arguments and OperatorDefs the way Caffe2's Python front end did.

Kept in ``netjit.proto`` because both the front end (``core.CreateOperator``) and the compiler's
gradient makers build OperatorDefs, and neither may import the other.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from google.protobuf.message import Message

from netjit.proto import caffe2_pb2


def _scalar(value: Any) -> Any:
    # Numpy scalars behave like their Python counterparts for the field choice below.
    if isinstance(value, np.generic):
        return value.item()
    return value


def make_argument(name: str, value: Any) -> caffe2_pb2.Argument:
    """One Argument from a Python value, choosing the field by the value's type.

    >>> make_argument("scale", 2.0).f
    2.0
    """
    arg = caffe2_pb2.Argument(name=name)
    value = _scalar(value)
    if isinstance(value, np.ndarray):
        # A float32 array keeps its float type; anything else is flattened into a plain list.
        value = [_scalar(v) for v in value.flatten().tolist()] if value.dtype != np.float32 \
            else [float(v) for v in value.flatten()]
        if not value:
            arg.floats.extend([])
            return arg
    if isinstance(value, bool):
        arg.i = int(value)
    elif isinstance(value, int):
        arg.i = value
    elif isinstance(value, float):
        arg.f = value
    elif isinstance(value, str):
        arg.s = value.encode("utf-8")
    elif isinstance(value, bytes):
        arg.s = value
    elif isinstance(value, caffe2_pb2.NetDef):
        arg.n.CopyFrom(value)
    elif isinstance(value, Message):
        arg.s = value.SerializeToString()
    elif isinstance(value, (list, tuple)):
        items = [_scalar(v) for v in value]
        if not items:
            # Caffe2 leaves an empty list with no field set; the name alone marks it present.
            return arg
        if all(isinstance(v, caffe2_pb2.NetDef) for v in items):
            for v in items:
                arg.nets.add().CopyFrom(v)
        elif all(isinstance(v, (bool, int)) for v in items):
            arg.ints.extend(int(v) for v in items)
        elif all(isinstance(v, (bool, int, float)) for v in items):
            arg.floats.extend(float(v) for v in items)
        elif all(isinstance(v, (str, bytes)) for v in items):
            arg.strings.extend(v.encode("utf-8") if isinstance(v, str) else v for v in items)
        else:
            raise TypeError(
                f"argument {name!r}: cannot encode a list mixing {sorted({type(v).__name__ for v in items})}")
    else:
        raise TypeError(f"argument {name!r}: cannot encode a value of type {type(value).__name__}")
    return arg


def argument_value(arg: caffe2_pb2.Argument) -> Any:
    """The Python value an Argument holds, whichever field carries it (None when empty)."""
    for field in ("f", "i", "s", "n"):
        if arg.HasField(field):
            return getattr(arg, field)
    for field in ("floats", "ints", "strings", "nets"):
        values = getattr(arg, field)
        if len(values):
            return list(values)
    return None


def make_op(op_type: str, inputs: Iterable[str], outputs: Iterable[str], name: str | None = None,
            device_option: caffe2_pb2.DeviceOption | None = None, engine: str | None = None,
            arg: Iterable[caffe2_pb2.Argument] | None = None, **kwargs: Any) -> caffe2_pb2.OperatorDef:
    """An OperatorDef with Caffe2's layout: explicit ``arg`` entries first, then one per kwarg.

    >>> make_op("Relu", ["X"], ["Y"]).type
    'Relu'
    """
    op = caffe2_pb2.OperatorDef(type=op_type)
    op.input.extend(str(i) for i in inputs)
    op.output.extend(str(o) for o in outputs)
    if name is not None:
        op.name = name
    if device_option is not None:
        op.device_option.CopyFrom(device_option)
    if engine is not None:
        op.engine = engine
    if arg is not None:
        op.arg.extend(arg)
    for key, value in kwargs.items():
        if value is None:
            continue
        op.arg.append(make_argument(key, value))
    return op
