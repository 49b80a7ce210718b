"""Caffe2's ``utils`` module: numpy <-> TensorProto, arguments, reading protobufs of unknown kind, the
optimizer's iteration counter, blob resets and a post-mortem debugger wrapper.

    from caffe2.python import utils
    tp = utils.NumpyArrayToCaffe2Tensor(np.eye(2, dtype=np.float32), "I")
    utils.Caffe2TensorToNumpyArray(tp)            # array([[1., 0.], [0., 1.]], dtype=float32)
    op.arg.extend([utils.MakeArgument("kernel", 3)])

Tensor conversion goes through netjit's serializer (runtime/serialize.py), so every dtype Caffe2
stored (float, double, float16, ints, bool, uint8, strings) round-trips, not only float/int32.
"""
from __future__ import annotations

import functools
import pdb
import sys
from typing import Any, Callable, Iterable

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import DecodeError, Message

from netjit.proto import caffe2_pb2
from netjit.proto.args import make_argument
from netjit.runtime.serialize import array_to_tensor_proto, tensor_proto_to_array


def CaffeBlobToNumpyArray(blob: Any) -> np.ndarray:
    """A (legacy) Caffe BlobProto as a float32 array: num/channels/height/width when ``num`` is set,
    else its ``shape.dim``."""
    data = np.asarray(blob.data, dtype=np.float32)
    if blob.num != 0:
        return data.reshape(blob.num, blob.channels, blob.height, blob.width)
    return data.reshape(list(blob.shape.dim))


def Caffe2TensorToNumpyArray(tensor: caffe2_pb2.TensorProto) -> np.ndarray:
    """The array a TensorProto holds, in its own dtype and shape."""
    return tensor_proto_to_array(tensor)


def NumpyArrayToCaffe2Tensor(arr: np.ndarray, name: str | None = None) -> caffe2_pb2.TensorProto:
    """A TensorProto holding ``arr`` (dims, data_type and data), named ``name`` when given."""
    return array_to_tensor_proto(np.asarray(arr), name or "", set_segment=False)


def MakeArgument(key: str, value: Any) -> caffe2_pb2.Argument:
    """An Argument named ``key``, the field chosen by the value's type (float -> f, int/bool -> i,
    str/bytes -> s, NetDef -> n, protobuf message -> serialized s, lists -> floats/ints/strings/nets).

        >>> MakeArgument("pads", [1, 1, 1, 1]).ints
        [1, 1, 1, 1]
    """
    try:
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, Message) and
                                                              not isinstance(v, caffe2_pb2.NetDef) for v in value):
            arg = caffe2_pb2.Argument(name=key)
            arg.strings.extend(v.SerializeToString() for v in value)
            return arg
        return make_argument(key, value)
    except TypeError as err:
        raise ValueError(f"Unknown argument type: key={key} value={value!r}, value type={type(value)}: {err}") \
            from None


def TryReadProtoWithClass(cls: type, s: str | bytes) -> Message:
    """Parse ``s`` (text or binary protobuf) as a ``cls``; DecodeError when it is neither."""
    obj = cls()
    try:
        text_format.Parse(s if isinstance(s, str) else s.decode("utf-8"), obj)
        return obj
    except (text_format.ParseError, UnicodeDecodeError):
        obj = cls()
        obj.ParseFromString(s if isinstance(s, bytes) else s.encode("utf-8", "surrogateescape"))
        return obj


def GetContentFromProto(obj: Any, function_map: dict) -> Any:
    """Apply the function ``function_map`` gives for ``obj``'s exact protobuf class (None if none)."""
    for cls, func in function_map.items():
        if type(obj) is cls:
            return func(obj)
    return None


def GetContentFromProtoString(s: str | bytes, function_map: dict) -> Any:
    """Parse ``s`` with each class of ``function_map`` in turn and apply the first one that fits."""
    for cls, func in function_map.items():
        try:
            obj = TryReadProtoWithClass(cls, s)
        except DecodeError:
            continue
        return func(obj)
    raise DecodeError("Cannot find a fit protobuffer class.")


def ConvertProtoToBinary(proto_class: type, filename: str, out_filename: str) -> None:
    """Rewrite a text-format protobuf file of ``proto_class`` as binary."""
    with open(filename, "rb") as f:
        proto = TryReadProtoWithClass(proto_class, f.read())
    with open(out_filename, "wb") as f:
        f.write(proto.SerializeToString())


def GetGPUMemoryUsageStats() -> dict:
    """Caffe2 read CUDA memory counters here. netjit runs on the CPU (its GPU backend has no memory
    tracking), so this raises RuntimeError saying so rather than inventing numbers."""
    raise RuntimeError("GetGPUMemoryUsageStats: netjit runs on the CPU here and tracks no GPU memory "
                       "(Caffe2 needed a CUDA build and --caffe2_gpu_memory_tracking)")


def ResetBlobs(blobs: Iterable[Any]) -> None:
    """Drop the contents of ``blobs`` in the current workspace (they stay, empty: Caffe2's Free)."""
    from netjit import workspace
    ws = workspace._ws()
    for name in blobs:
        name = workspace.StringifyBlobName(name)
        if not ws.has(name):
            raise RuntimeError(f"ResetBlobs: blob {name!r} does not exist in workspace {ws.name!r}")
        ws.feed(name, None)


def BuildUniqueMutexIter(init_net: Any, net: Any, iter: Any = None, iter_mutex: Any = None,
                         iter_val: int = 0) -> Any:
    """The iteration blob (int64 [1], starting at ``iter_val``) and its mutex, created once in
    ``init_net``, counted by ``AtomicIter`` in ``net``; returns the iteration blob."""
    from netjit import core
    iter = iter if iter is not None else "optimizer_iteration"
    iter_mutex = iter_mutex if iter_mutex is not None else "iteration_mutex"
    if not init_net.BlobIsDefined(iter):
        with core.DeviceScope(core.DeviceOption(caffe2_pb2.CPU)):
            it = init_net.ConstantFill([], iter, shape=[1], value=int(iter_val), dtype=core.DataType.INT64)
            mutex = init_net.CreateMutex([], [iter_mutex])
            net.AtomicIter([mutex, it], [it])
    else:
        it = init_net.GetBlobRef(iter)
    return it


def EnumClassKeyVals(cls: type) -> dict[str, str]:
    """The "enum" of a class of string constants: its all-capital attributes with string values.

        >>> class Mode: TRAIN = "train"; EVAL = "eval"; other = "x"
        >>> sorted(EnumClassKeyVals(Mode).items())
        [('EVAL', 'eval'), ('TRAIN', 'train')]
    """
    if not isinstance(cls, type):
        raise TypeError(f"EnumClassKeyVals takes a class, got {type(cls).__name__}")
    enum: dict[str, str] = {}
    for key in dir(cls):
        value = getattr(cls, key)
        if key == key.upper() and isinstance(value, str):
            if value in enum.values():
                raise ValueError(f"duplicate value {value!r} in enum class {cls.__name__}")
            enum[key] = value
    return enum


def ArgsToDict(args: Iterable[caffe2_pb2.Argument]) -> dict[str, Any]:
    """An op's arguments as {name: value}, the value read from whichever field is set."""
    out: dict[str, Any] = {}
    for arg in args:
        for field in ("f", "i", "s", "n"):
            if arg.HasField(field):
                out[arg.name] = getattr(arg, field)
                break
        else:
            for field in ("floats", "ints", "strings", "nets"):
                if len(getattr(arg, field)):
                    out[arg.name] = list(getattr(arg, field))
                    break
            else:
                out[arg.name] = []
    return out


class DebugMode:
    """Run a function; on an unhandled exception print it and open pdb's post-mortem debugger::

        if __name__ == "__main__":
            DebugMode.run(main)
    """

    @classmethod
    def run(cls, func: Callable[[], Any]) -> Any:
        try:
            return func()
        except KeyboardInterrupt:
            raise
        except Exception:
            print('Entering interactive debugger. Type "bt" to print the full stacktrace. '
                  'Type "help" to see command listing.')
            print(sys.exc_info()[1])
            print("")
            pdb.post_mortem(sys.exc_info()[2])
            sys.exit(1)


def debug(f: Callable) -> Callable:
    """Decorate ``f`` so an exception in it drops into the debugger (DebugMode)."""
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return DebugMode.run(lambda: f(*args, **kwargs))
    return wrapper
