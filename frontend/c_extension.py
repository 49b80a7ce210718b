"""What Caffe2's C extension (``workspace.C``, ``caffe2.python._import_c_extension``) gave Python:
workspace objects independent of the named-workspace registry, blob handles, device queries and
the engine-preference calls.

Caffe2's own test base class builds a private workspace with ``workspace.C.Workspace()``::

    >>> import numpy as np
    >>> from netjit import core, workspace
    >>> ws = workspace.C.Workspace()
    >>> _ = ws.create_blob("x").feed(np.array([-1.0, 2.0], np.float32))
    >>> _ = ws.run(core.CreateOperator("Relu", ["x"], ["y"]))
    >>> ws.blobs["y"].fetch()
    array([0., 2.], dtype=float32)
    >>> workspace.HasBlob("y")       # the global current workspace is untouched
    False

This build runs on the CPU only: ``num_cuda_devices()`` is 0, ``get_cudnn_version()`` 0, and
``has_gpu_support`` False.
"""
from __future__ import annotations

import contextlib
import itertools
import os
from typing import Any, Iterator

import numpy as np

from netjit.proto import caffe2_pb2
from netjit.runtime.errors import BlobNotFound, NetJitError
from netjit.runtime.workspace import REGISTRY
from netjit.runtime.workspace import Workspace as _RtWorkspace

has_gpu_support = False
has_cuda_support = False
has_hip_support = False
use_mkldnn = False
use_ideep = False
use_trt = False
is_asan = False
define_caffe2_no_operator_schema = False

_COUNTER = itertools.count()


def num_cuda_devices() -> int:
    """0: this build has no CUDA devices."""
    return 0


def get_cuda_version() -> int:
    return 0


def get_cudnn_version() -> int:
    """0, as a Caffe2 build without cuDNN answers."""
    return 0


@contextlib.contextmanager
def _current(ws: _RtWorkspace) -> Iterator[None]:
    """Make ``ws`` the current workspace for one call, so the ``workspace`` module's functions (and
    their error messages) serve C.Workspace objects too; the previous one is restored after."""
    previous = REGISTRY.current
    REGISTRY.current = ws
    try:
        yield
    finally:
        REGISTRY.current = previous


# --------------------------------------------------------------------------------------------
# Blobs and tensors
# --------------------------------------------------------------------------------------------
class TensorCPU:
    """A blob's tensor: ``data`` (the stored array itself), ``shape``, ``fetch()`` and ``feed()``."""

    def __init__(self, ws: _RtWorkspace, name: str):
        self._ws, self._name = ws, name

    @property
    def data(self) -> np.ndarray:
        return self._ws.get(self._name)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    _shape = shape

    def fetch(self) -> np.ndarray:
        return np.array(self.data, copy=True)

    def feed(self, value: Any) -> bool:
        return Blob(self._ws, self._name).feed(value)


class Blob:
    """A handle on one blob of a workspace (``ws.create_blob(name)``, ``ws.blobs[name]``)."""

    def __init__(self, ws: _RtWorkspace, name: str):
        self._ws, self._name = ws, name

    def __repr__(self) -> str:
        return f"<Blob {self._name!r} in workspace {self._ws.name!r}>"

    def feed(self, arg: Any, device_option: Any = None) -> bool:
        """Store a copy of ``arg`` (array, bytes/str, TensorProto) in the blob."""
        from netjit import workspace
        with _current(self._ws):
            return workspace.FeedBlob(self._name, arg, device_option)

    _feed = feed

    def fetch(self) -> Any:
        from netjit import workspace
        with _current(self._ws):
            return workspace.FetchBlob(self._name)

    def is_tensor(self) -> bool:
        return self._ws.has(self._name) and isinstance(self._ws.get(self._name), np.ndarray)

    def tensor(self) -> TensorCPU:
        if not self.is_tensor():
            raise NetJitError(f"blob {self._name!r} does not hold a tensor")
        return TensorCPU(self._ws, self._name)

    as_tensor = tensor

    def serialize(self, name: str | None = None) -> bytes:
        from netjit.runtime.serialize import serialize_blob
        return serialize_blob(name or self._name, self._ws.get(self._name))

    def deserialize(self, serialized: bytes) -> None:
        from netjit.runtime.serialize import deserialize_blob
        self._ws.feed(self._name, deserialize_blob(serialized))


class _BlobMap:
    """``ws.blobs``: a read-only mapping of blob names to Blob handles."""

    def __init__(self, ws: _RtWorkspace):
        self._ws = ws

    def __getitem__(self, name: str) -> Blob:
        name = str(name)
        if not self._ws.has(name):
            raise BlobNotFound(f"Can't find blob: {name} (workspace {self._ws.name!r})")
        return Blob(self._ws, name)

    def __contains__(self, name: Any) -> bool:
        return self._ws.has(str(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._ws.names())

    def __len__(self) -> int:
        return len(self._ws.names())

    def keys(self) -> list[str]:
        return self._ws.names()

    def items(self) -> list[tuple[str, Blob]]:
        return [(n, Blob(self._ws, n)) for n in self._ws.names()]

    def values(self) -> list[Blob]:
        return [Blob(self._ws, n) for n in self._ws.names()]


class Net:
    """A created net (``ws.create_net(net)``, ``ws.nets[name]``): ``run()`` runs it once."""

    def __init__(self, ws: _RtWorkspace, name: str):
        self._ws, self._name = ws, name

    @property
    def name(self) -> str:
        return self._name

    def run(self) -> bool:
        from netjit import workspace
        with _current(self._ws):
            return workspace.RunNet(self._name)


# --------------------------------------------------------------------------------------------
# Workspace
# --------------------------------------------------------------------------------------------
class _CurrentDescriptor:
    """``Workspace.current``: the workspace that the ``workspace`` module functions use now."""

    def __get__(self, obj: Any, owner: type) -> "Workspace":
        return owner._wrap(REGISTRY.current)


class Workspace:
    """A workspace of its own (Caffe2's ``C.Workspace``), not one of the named workspaces that
    ``workspace.SwitchWorkspace`` selects. ``Workspace(parent)`` makes a child that also sees the
    parent's blobs (as Caffe2's shared workspaces did).

        >>> ws = Workspace()
        >>> _ = ws.feed_blob("a", [1, 2])
        >>> ws.fetch_blob("a").tolist(), ws.has_blob("b")
        ([1, 2], False)
    """
    current = _CurrentDescriptor()

    def __init__(self, parent: "Workspace | None" = None):
        if isinstance(parent, Workspace):
            rt = _RtWorkspace(f"c_workspace_{next(_COUNTER)}", parent._rt.root_folder, parent=parent._rt)
        else:
            rt = _RtWorkspace(f"c_workspace_{next(_COUNTER)}", os.getcwd())
        self._rt = rt
        self._last_failed_op_net_position = -1

    @classmethod
    def _wrap(cls, rt: _RtWorkspace) -> "Workspace":
        ws = cls.__new__(cls)
        ws._rt = rt
        ws._last_failed_op_net_position = -1
        return ws

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Workspace) and other._rt is self._rt

    def __hash__(self) -> int:
        return id(self._rt)

    def __repr__(self) -> str:
        return f"<C.Workspace {self._rt.name!r}: {len(self._rt.names())} blobs, {len(self._rt.nets)} nets>"

    # blobs ----------------------------------------------------------------------------------
    @property
    def blobs(self) -> _BlobMap:
        return _BlobMap(self._rt)

    @property
    def root_folder(self) -> str:
        return self._rt.root_folder

    def create_blob(self, name: Any) -> Blob:
        name = str(name)
        self._rt.create_blob(name)
        return Blob(self._rt, name)

    def has_blob(self, name: Any) -> bool:
        return self._rt.has(str(name))

    def fetch_blob(self, name: Any) -> Any:
        return Blob(self._rt, str(name)).fetch()

    def feed_blob(self, name: Any, arr: Any, device_option: Any = None) -> bool:
        return self.create_blob(name).feed(arr, device_option)

    def remove_blob(self, name: Any) -> None:
        if self._rt.blobs.pop(str(name), _MISSING) is _MISSING:
            raise BlobNotFound(f"Can't find blob: {name} (workspace {self._rt.name!r})")

    _remove_blob = remove_blob

    # nets and running ---------------------------------------------------------------------------
    @property
    def nets(self) -> dict[str, Net]:
        return {name: Net(self._rt, name) for name in self._rt.nets}

    def create_net(self, net: Any, overwrite: bool = False) -> Net:
        """Create ``net`` (a core.Net, NetDef or its bytes) here; returns its handle."""
        from netjit import workspace
        from netjit.core_plan import as_net_def
        proto = as_net_def(net)
        with _current(self._rt):
            workspace.CreateNet(proto, overwrite=overwrite)
        return Net(self._rt, proto.name)

    def _create_net(self, serialized: bytes, overwrite: bool = False) -> Net:
        return self.create_net(serialized, overwrite)

    def run(self, obj: Any) -> bool:
        """Run an OperatorDef, a net (core.Net or NetDef: once, without keeping it) or a plan."""
        from netjit import workspace
        if hasattr(obj, "Proto"):
            obj = obj.Proto()
        with _current(self._rt):
            if isinstance(obj, caffe2_pb2.OperatorDef):
                return workspace.RunOperatorOnce(obj)
            if isinstance(obj, caffe2_pb2.NetDef):
                return workspace.RunNetOnce(obj)
            if isinstance(obj, caffe2_pb2.PlanDef) or type(obj).__name__ == "ExecutionStep":
                return workspace.RunPlan(obj)
        raise ValueError(f"Don't know how to do Workspace.run() on {type(obj).__name__}")

    def _run_net(self, serialized: bytes) -> bool:
        return self.run(caffe2_pb2.NetDef.FromString(serialized))

    def _run_operator(self, serialized: bytes) -> bool:
        return self.run(caffe2_pb2.OperatorDef.FromString(serialized))

    def _run_plan(self, serialized: bytes) -> bool:
        return self.run(caffe2_pb2.PlanDef.FromString(serialized))


_MISSING = object()


# --------------------------------------------------------------------------------------------
# The module-level functions Caffe2's extension had (the global current workspace)
# --------------------------------------------------------------------------------------------
def _workspace_module() -> Any:
    from netjit import workspace
    return workspace


def blobs() -> list[str]:
    return _workspace_module().Blobs()


def has_blob(name: Any) -> bool:
    return _workspace_module().HasBlob(name)


def create_blob(name: Any) -> bool:
    return _workspace_module().CreateBlob(name)


def feed_blob(name: Any, arr: Any, device_option: Any = None) -> bool:
    return _workspace_module().FeedBlob(name, arr, device_option)


def fetch_blob(name: Any) -> Any:
    return _workspace_module().FetchBlob(name)


def current_workspace() -> str:
    return REGISTRY.current.name


def switch_workspace(name: str, create_if_missing: bool = False) -> None:
    REGISTRY.switch(str(name), bool(create_if_missing))


def reset_workspace(root_folder: str | None = None) -> bool:
    return _workspace_module().ResetWorkspace(root_folder)


def root_folder() -> str:
    return REGISTRY.current.root_folder


def workspaces() -> list[str]:
    return sorted(REGISTRY.workspaces)


def registered_operators() -> list[str]:
    return _workspace_module().RegisteredOperators()


def global_init(args: Any) -> bool:
    return _workspace_module().GlobalInit(args)


def run_operator_once(serialized: Any) -> bool:
    op = caffe2_pb2.OperatorDef.FromString(serialized) if isinstance(serialized, bytes) else serialized
    return _workspace_module().RunOperatorOnce(op)


def run_net_once(serialized: Any) -> bool:
    return _workspace_module().RunNetOnce(serialized)


def create_net(serialized: Any, overwrite: bool = False) -> bool:
    return _workspace_module().CreateNet(serialized, overwrite=overwrite)


def run_net(name: str, num_iter: int = 1, allow_fail: bool = False) -> bool:
    return _workspace_module().RunNet(name, num_iter, allow_fail)


def run_plan(serialized: Any) -> bool:
    plan = caffe2_pb2.PlanDef.FromString(serialized) if isinstance(serialized, bytes) else serialized
    return _workspace_module().RunPlan(plan)


def nets() -> list[str]:
    return _workspace_module().Nets()


def registered_dbs() -> list[str]:
    return ["minidb", "lmdb"]


# Engine preferences (the C++ registry calls; ``core.SetEnginePref`` and friends wrap them).
from netjit.engine_pref import (set_engine_pref, set_global_engine_pref,  # noqa: E402,F401  (re-exported API)
                                set_op_engine_pref, set_per_op_engine_pref)
