"""``caffe2.python.workspace``: blobs in, nets run, blobs out.

>>> from netjit import core, workspace
>>> import numpy as np
>>> _ = workspace.FeedBlob("x", np.array([-1.0, 2.0], np.float32))
>>> _ = workspace.RunOperatorOnce(core.CreateOperator("Relu", ["x"], ["y"]))
>>> workspace.FetchBlob("y")
array([0., 2.], dtype=float32)
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from netjit.compiler import runner as _runner
from netjit.compiler.ops.registry import all_ops, has_op
from netjit.compiler.reference import run_operator_once
from netjit.core_plan import as_net_def, get_net_name
from netjit.proto import caffe2_pb2
from netjit.runtime.errors import BadNameError, BlobNotFound, NetJitError
from netjit.runtime.workspace import REGISTRY, Workspace

# Caffe2 exposed these from its C extension; scripts check them. A GPU (or the CUDA simulator,
# NUMBA_ENABLE_CUDASIM=1) makes them True: CUDA nets then run on the numba-cuda backend.
from netjit.runtime import device as _device  # noqa: E402
has_gpu_support = has_cuda_support = _device.gpu_support()
is_asan = False

# The C extension's objects (C.Workspace, C.Blob, ...) and the device queries of a CPU-only build.
from netjit import c_extension as C  # noqa: E402
has_hip_support = False
GpuDeviceType = caffe2_pb2.CUDA
NumCudaDevices = NumGpuDevices = _device.num_cuda_devices
GetCUDAVersion = C.get_cuda_version
GetCuDNNVersion = C.get_cudnn_version


def _ws() -> Workspace:
    return REGISTRY.current


def StringifyBlobName(name: Any) -> str:
    if isinstance(name, bytes):
        try:
            return name.decode("utf-8")
        except UnicodeDecodeError:
            raise BadNameError(f"name {name!r} is not valid UTF-8 text") from None
    return str(name)


def StringifyNetName(name: Any) -> str:
    if isinstance(name, caffe2_pb2.NetDef) or hasattr(name, "Proto"):
        return get_net_name(name)
    return StringifyBlobName(name)   # a plain name, checked as text


# ------------------------------------------------------------------------------- workspaces
def CurrentWorkspace() -> str:
    return _ws().name


def Workspaces() -> list[str]:
    return sorted(REGISTRY.workspaces)


def SwitchWorkspace(name: str, create_if_missing: bool | None = None) -> None:
    REGISTRY.switch(str(name), bool(create_if_missing))


def ResetWorkspace(root_folder: str | None = None) -> bool:
    """Empty the current workspace (blobs and nets); keep or set its root folder."""
    _ws().reset(root_folder)
    return True


def RootFolder() -> str:
    return _ws().root_folder


def GlobalInit(args: Sequence[str]) -> bool:
    from netjit.core import GlobalInit as _global_init
    return _global_init(args)


def RegisteredOperators() -> list[str]:
    return sorted(all_ops())


def IsOperator(op_type: str) -> bool:
    return has_op(op_type)


# ------------------------------------------------------------------------------------ blobs
def _to_blob_value(value: Any) -> Any:
    if isinstance(value, caffe2_pb2.TensorProto):
        from netjit.runtime.serialize import tensor_proto_to_numpy
        return tensor_proto_to_numpy(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SU":
            return np.array([v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in value.flat],
                            dtype=object).reshape(value.shape)
        # The workspace owns its tensors: later edits of the caller's array must not leak in.
        return np.array(value, copy=True, order="C")
    if isinstance(value, (np.generic, int, float, bool, list, tuple)):
        return np.array(value)
    return value


def FeedBlob(name: Any, arr: Any, device_option: caffe2_pb2.DeviceOption | None = None) -> bool:
    """Store a copy of ``arr`` (numpy array, bytes/str, or a TensorProto) as blob ``name``; with a
    CUDA ``device_option`` the blob lives on that GPU (a numba device array)."""
    value = _to_blob_value(arr)
    place = _device.option_device(device_option)
    if place[0] == "cuda":
        _device.check_device(place, blob=StringifyBlobName(name))
        if not _device.movable(value):
            raise NetJitError(f"blob {StringifyBlobName(name)!r}: only numeric tensors can be fed to a GPU")
        value = _device.to_device(value)
    _ws().feed(StringifyBlobName(name), value)
    return True


def FetchBlob(name: Any) -> Any:
    """A copy of blob ``name``: a numpy array for tensors, bytes for strings."""
    name = StringifyBlobName(name)
    ws = _ws()
    if not ws.has(name):
        raise BlobNotFound(f"Can't find blob: {name} (workspace {ws.name!r} holds {len(ws.names())} blobs)")
    value = ws.get(name)
    if value is None:
        raise NetJitError(f"blob {name!r} exists but holds nothing yet (it was created but never written)")
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, bytes):
        return value
    if _device.is_device_array(value):   # a blob on the GPU: copied to the host
        return _device.to_host(value)
    # Other blob types (DB readers, Python-op state) come back as a short description, as in Caffe2.
    describe = getattr(value, "describe", None)
    text = describe() if callable(describe) else f"<{type(value).__name__}>"
    return text.encode("utf-8")


def FetchBlobs(names: Iterable[Any]) -> list[Any]:
    return [FetchBlob(n) for n in names]


def Blobs() -> list[str]:
    return _ws().names()


def HasBlob(name: Any) -> bool:
    return _ws().has(StringifyBlobName(name))


def CreateBlob(name: Any) -> bool:
    _ws().create_blob(StringifyBlobName(name))
    return True


def SerializeBlob(name: Any) -> bytes:
    """The blob as one serialized BlobProto (a single chunk, as Caffe2's SerializeBlob)."""
    from netjit.runtime.serialize import serialize_blob
    name = StringifyBlobName(name)
    return serialize_blob(name, _ws().get(name))


def DeserializeBlob(name: Any, serialized: bytes) -> None:
    from netjit.runtime.serialize import deserialize_blob
    _ws().feed(StringifyBlobName(name), deserialize_blob(serialized))


class _BlobsView:
    """``workspace.blobs``: dict-like access to the current workspace's blobs."""

    def __getitem__(self, name: Any) -> Any:
        return FetchBlob(name)

    def __setitem__(self, name: Any, value: Any) -> None:
        FeedBlob(name, value)

    def __contains__(self, name: Any) -> bool:
        return HasBlob(name)

    def __len__(self) -> int:
        return len(Blobs())

    def __iter__(self) -> Iterator[str]:
        return iter(Blobs())

    def keys(self) -> list[str]:
        return Blobs()


blobs = _BlobsView()


# --------------------------------------------------------------------------------- running
def _net_proto(net: Any) -> caffe2_pb2.NetDef:
    """``as_net_def``, but bytes that are not a NetDef raise netjit's ProtoFormatError (naming what
    is wrong) instead of protobuf's bare DecodeError."""
    if isinstance(net, (bytes, bytearray)):
        from netjit.proto.io import parse_net_bytes
        return parse_net_bytes(bytes(net), source="serialized NetDef")
    return as_net_def(net)


# Digests of nets already admitted that hold no Python op (their verdict cannot change), so that
# RunNetOnce in a loop pays one serialization and hash instead of walking every op each time.
_ADMITTED: "OrderedDict[bytes, None]" = OrderedDict()


def _admit(net: caffe2_pb2.NetDef, key: bytes | None = None) -> None:
    """What every entry point checks before constructing a net: names are text, and no code from a
    file runs without consent (Python ops with pickled builders). ``key``: the net's content digest
    (``compiler.api.net_digest``) when the caller has it."""
    from netjit.compiler.ops.python_op import check_consent
    from netjit.proto.io import check_net_names
    if key is None:
        key = hashlib.blake2b(net.SerializeToString(), digest_size=16).digest()
    if key in _ADMITTED:
        return
    check_net_names(net)
    if not check_consent(net, _ws()):
        _ADMITTED[key] = None
        if len(_ADMITTED) > 256:
            _ADMITTED.popitem(last=False)


def AllowPickledPythonOps(allow: bool = True) -> bool:
    """Let Python ops whose builder is pickled inside a model file run (process-wide; also
    ``NETJIT_ALLOW_PICKLED_CODE=1``). Off by default: loading a file must not run its code. Python
    ops your own script made with ``net.Python(...)`` never need this. Returns the previous setting.

    >>> previous = AllowPickledPythonOps(False); _ = AllowPickledPythonOps(previous)
    """
    from netjit.compiler.ops.python_op import allow_pickled_python_ops
    return allow_pickled_python_ops(allow)


def RunOperatorOnce(operator: caffe2_pb2.OperatorDef) -> bool:
    from netjit.proto.io import check_op_names
    check_op_names(operator, 0, "RunOperatorOnce")
    if operator.type in ("Python", "PythonGradient") or any(a.HasField("n") or len(a.nets) for a in operator.arg):
        _admit(caffe2_pb2.NetDef(name="RunOperatorOnce", op=[operator]))
    run_operator_once(operator, _ws())
    return True


def RunOperatorsOnce(operators: Iterable[caffe2_pb2.OperatorDef]) -> bool:
    for op in operators:
        RunOperatorOnce(op)
    return True


def CreateNet(net: Any, overwrite: bool = False, input_blobs: Iterable[Any] | None = None) -> bool:
    """Construct ``net`` in the current workspace and register it under its name."""
    ws = _ws()
    for blob in input_blobs or ():
        ws.create_blob(StringifyBlobName(blob))
    proto = _net_proto(net)
    _admit(proto)
    if proto.name in ws.nets and not overwrite:
        raise NetJitError(f"a net named {proto.name!r} already exists in workspace {ws.name!r}; pass "
                          f"overwrite=True to replace it")
    # The registered net keeps its own copy: later edits to the Python Net need a new CreateNet.
    ws.nets[proto.name] = _runner.make_runner(caffe2_pb2.NetDef.FromString(proto.SerializeToString()), ws)
    return True


def RunNet(name: Any, num_iter: int = 1, allow_fail: bool = False) -> bool:
    """Run a created net ``num_iter`` times."""
    runner = _ws().nets.get(name) if isinstance(name, str) else _ws().nets.get(StringifyNetName(name))
    if runner is None:
        raise NetJitError(f"net {StringifyNetName(name)!r} does not exist in workspace {_ws().name!r}; call "
                          f"CreateNet first (nets: {sorted(_ws().nets)})")
    try:
        for _ in range(num_iter):
            runner.run()
    except NetJitError:
        if allow_fail:
            return False
        raise
    return True


def RunNetOnce(net: Any) -> bool:
    """Construct ``net``, run it once, and forget it (the compiled plan stays cached)."""
    proto = _net_proto(net)
    digest = hashlib.blake2b(proto.SerializeToString(), digest_size=16).digest()
    _admit(proto, digest)
    _runner.make_runner(proto, _ws(), digest=digest).run()
    return True


def Nets() -> list[str]:
    return sorted(_ws().nets)


def RunPlan(plan_or_step: Any) -> bool:
    """Run a PlanDef, a ``core.Plan`` or an ExecutionStep in the current workspace."""
    from netjit.plan_exec import run_plan
    run_plan(plan_or_step, _ws())
    return True


def InferShapesAndTypes(nets: Sequence[Any], blob_dimensions: dict[str, Sequence[int]] | None = None,
                        nets_proto: bool = False, blob_types: dict[str, int] | None = None
                        ) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Shapes and DataTypes of every blob the nets touch, from the workspace (or the given dims)."""
    from netjit.shape_inference import infer_shapes_and_types
    return infer_shapes_and_types([as_net_def(n) for n in nets], _ws(), blob_dimensions, blob_types)


def Predictor(init_net: Any, predict_net: Any, allow_pickled_code: bool = False) -> Any:
    """Run ``init_net`` once, then ``p.run(inputs)`` runs ``predict_net``. ``allow_pickled_code``:
    let Python ops pickled inside these nets run (only for files you trust)."""
    from netjit.predictor import Predictor as _Predictor
    return _Predictor(init_net, predict_net, allow_pickled_code=allow_pickled_code)
