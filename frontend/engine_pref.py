"""Engine preferences (Caffe2's ``SetEnginePref`` family).

Caffe2 could hold several implementations ("engines": CUDNN, NNPACK, ...) of one op per device and
picked among them by an op's ``engine`` field, then by these preferences. netjit has one
implementation per op and device (its reference, compiled when it can be), so preferences never
change a result; they are checked as Caffe2 checked them and kept, so scripts that set them run
and can read them back.

    >>> from caffe2.proto import caffe2_pb2
    >>> SetEnginePref({caffe2_pb2.CPU: {"Conv": ["NNPACK"]}}, {caffe2_pb2.CPU: ["EIGEN"]})
    >>> GetEnginePref()
    ({0: {'Conv': ['NNPACK']}}, {0: ['EIGEN']})
    >>> SetEnginePref({}, {})
"""
from __future__ import annotations

import copy
from typing import Mapping, Sequence

from netjit.proto import caffe2_pb2
from netjit.runtime.errors import NetJitError

PerOpEnginePref = Mapping[int, Mapping[str, Sequence[str]]]
GlobalEnginePref = Mapping[int, Sequence[str]]

# Device types this build registers operators for: the CPU only (a Caffe2 CPU build refused the
# others with "Device type N not registered").
REGISTERED_DEVICES = frozenset({caffe2_pb2.CPU})

_per_op: dict[int, dict[str, list[str]]] = {}
_global: dict[int, list[str]] = {}


def _check_device(device_type: int) -> int:
    if device_type not in REGISTERED_DEVICES:
        names = dict(caffe2_pb2.DeviceType.items())
        name = next((k for k, v in names.items() if v == device_type), str(device_type))
        raise NetJitError(f"Device type {device_type} ({name}) not registered: this netjit build runs "
                          f"operators on the CPU only")
    return int(device_type)


def _engines(value: Sequence[str], what: str) -> list[str]:
    if isinstance(value, (str, bytes)) or not all(isinstance(e, str) for e in value):
        raise TypeError(f"{what}: engine preferences are a list of engine names, got {value!r}")
    return list(value)


def set_per_op_engine_pref(pref: PerOpEnginePref) -> None:
    """Replace the per-op preferences: ``{device_type: {op_type: [engine, ...]}}``."""
    from netjit.compiler.ops.registry import has_op
    checked: dict[int, dict[str, list[str]]] = {}
    for device_type, ops in pref.items():
        device = _check_device(device_type)
        for op_type, engines in ops.items():
            if not has_op(op_type):
                raise NetJitError(f"Cannot set engine preference for operator type {op_type!r}: it is not a "
                                  f"registered operator")
            checked.setdefault(device, {})[op_type] = _engines(engines, op_type)
    _per_op.clear()
    _per_op.update(checked)


def set_global_engine_pref(pref: GlobalEnginePref) -> None:
    """Replace the global preferences: ``{device_type: [engine, ...]}``."""
    checked = {_check_device(d): _engines(e, f"device {d}") for d, e in pref.items()}
    _global.clear()
    _global.update(checked)


def set_engine_pref(per_op_pref: PerOpEnginePref, global_pref: GlobalEnginePref) -> None:
    set_per_op_engine_pref(per_op_pref)
    set_global_engine_pref(global_pref)


def set_op_engine_pref(op_type: str, op_pref: Mapping[int, Sequence[str]]) -> None:
    """Set one op's preferences on each device given, keeping other ops'."""
    merged = copy.deepcopy(_per_op)
    for device_type, engines in op_pref.items():
        merged.setdefault(int(device_type), {})[op_type] = list(engines)
    set_per_op_engine_pref(merged)


# Caffe2's Python spellings (caffe2.python.core).
def SetPerOpEnginePref(op_engine_pref_map: PerOpEnginePref) -> None:
    set_per_op_engine_pref(op_engine_pref_map)


def SetGlobalEnginePref(global_engine_pref: GlobalEnginePref) -> None:
    set_global_engine_pref(global_engine_pref)


def SetEnginePref(op_engine_pref_map: PerOpEnginePref, global_engine_pref: GlobalEnginePref) -> None:
    set_engine_pref(op_engine_pref_map, global_engine_pref)


def SetOpEnginePref(op_type: str, op_engine_pref: Mapping[int, Sequence[str]]) -> None:
    set_op_engine_pref(op_type, op_engine_pref)


def GetEnginePref() -> tuple[dict[int, dict[str, list[str]]], dict[int, list[str]]]:
    """(per-op, global) preferences as last set (copies)."""
    return copy.deepcopy(_per_op), copy.deepcopy(_global)
