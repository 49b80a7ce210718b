"""Name and device scopes (thread-local), as ``caffe2.python.scope``.

>>> with NameScope("conv1"):
...     CurrentNameScope()
'conv1/'
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

_SEPARATOR = "/"
_local = threading.local()


def CurrentNameScope() -> str:
    return getattr(_local, "namescope", "")


def CurrentDeviceScope() -> Any:
    return getattr(_local, "devicescope", None)


@contextlib.contextmanager
def NameScope(prefix: str | None, reset: bool = False) -> Iterator[None]:
    """Prefix blob names created inside with ``prefix/`` (nested scopes concatenate)."""
    prefix = "" if prefix is None else str(prefix)
    old = CurrentNameScope()
    if reset:
        new = prefix
    else:
        new = old + prefix
    if new and not new.endswith(_SEPARATOR):
        new += _SEPARATOR
    _local.namescope = new
    try:
        yield
    finally:
        _local.namescope = old


@contextlib.contextmanager
def DeviceScope(device_option: Any, node_name: str | None = None) -> Iterator[None]:
    """Ops created inside get ``device_option`` unless they pass their own."""
    from netjit.proto import caffe2_pb2
    old = CurrentDeviceScope()
    new = caffe2_pb2.DeviceOption()
    if device_option is not None:
        new.CopyFrom(device_option)
    if node_name:
        new.node_name = node_name
    _local.devicescope = new if device_option is not None or node_name else None
    try:
        yield
    finally:
        _local.devicescope = old
