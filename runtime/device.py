"""Devices: where a blob lives and where an op runs (Caffe2's DeviceOption), and the CUDA runtime.

A blob on the GPU is a numba device array held in the workspace like any other value; a host blob
is a numpy array. ``numba.cuda`` is imported only when something asks for the GPU, so CPU-only
programs never pay for it (nor for the simulator that ``NUMBA_ENABLE_CUDASIM=1`` selects).

>>> from netjit.proto import caffe2_pb2
>>> op = caffe2_pb2.OperatorDef(type="Relu")
>>> op.device_option.device_type = caffe2_pb2.CUDA
>>> op_device(op, None)
('cuda', 0)
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Any

import numpy as np

from netjit.proto import caffe2_pb2
from netjit.runtime.errors import NetJitError, OpError

CPU = ("cpu", 0)


class DeviceError(OpError):
    """A device that does not exist or cannot run, or a blob on the wrong device for an op."""


def simulator_enabled() -> bool:
    """True when numba's CUDA simulator stands in for a GPU (``NUMBA_ENABLE_CUDASIM=1``)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0").strip() not in ("", "0")


def _driver_present() -> bool:
    # A cheap test before importing numba.cuda (seconds with numba-cuda): no NVIDIA device node and
    # no driver under /proc means no usable GPU. Sandboxed GPU machines may show only some of these;
    # NETJIT_CUDA_PROBE=1 skips the test and asks the driver.
    if os.environ.get("NETJIT_CUDA_PROBE", "").strip() not in ("", "0"):
        return True
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia-uvm",
                                           "/proc/driver/nvidia/version"))


@functools.lru_cache(maxsize=None)
def num_cuda_devices() -> int:
    """How many CUDA devices this process can use: 1 under the simulator, 0 without a GPU.

    >>> isinstance(num_cuda_devices(), int)
    True
    """
    global _PROBE_ERROR
    if simulator_enabled():
        return 1
    if not _driver_present():
        _PROBE_ERROR = "no NVIDIA driver"
        return 0
    try:
        from numba import cuda
        if not cuda.is_available():
            _PROBE_ERROR = "numba.cuda.is_available() is False (see numba.cuda.detect())"
            return 0
        return len(cuda.gpus)
    except Exception as err:  # noqa: BLE001 - a broken driver install counts as no GPU (and says why)
        _PROBE_ERROR = f"numba.cuda failed to start: {type(err).__name__}: {str(err).strip()[:300]}"
        return 0


_PROBE_ERROR: str | None = None


def unavailable_reason() -> str:
    """Why ``num_cuda_devices()`` found no GPU ("" when it found one or was not asked yet)."""
    return _PROBE_ERROR or ""


def gpu_support() -> bool:
    """Whether CUDA nets can run here (a GPU, or the simulator)."""
    return num_cuda_devices() > 0


def cuda() -> Any:
    """The ``numba.cuda`` module (imported on first use)."""
    from numba import cuda as _cuda
    return _cuda


def op_device(op: caffe2_pb2.OperatorDef, net_option: caffe2_pb2.DeviceOption | None) -> tuple[str, int]:
    """("cuda", id) or ("cpu", 0): the op's own DeviceOption, else its net's (Caffe2's rule)."""
    opt = op.device_option if op.HasField("device_option") else net_option
    if opt is not None and opt.device_type == caffe2_pb2.CUDA:
        return ("cuda", int(opt.cuda_gpu_id))
    return CPU


def net_uses_cuda(net: caffe2_pb2.NetDef) -> bool:
    net_opt = net.device_option if net.HasField("device_option") else None
    return any(op_device(op, net_opt)[0] == "cuda" for op in net.op)


def option_device(option: caffe2_pb2.DeviceOption | None) -> tuple[str, int]:
    if option is not None and option.device_type == caffe2_pb2.CUDA:
        return ("cuda", int(option.cuda_gpu_id))
    return CPU


def check_device(device: tuple[str, int], *, net: str | None = None, index: int | None = None,
                 op_type: str | None = None, blob: str | None = None) -> None:
    """Raise DeviceError unless ``device`` can run here (the error names the net and op)."""
    if device[0] != "cuda":
        return
    n = num_cuda_devices()
    if n == 0:
        why = unavailable_reason() or "no NVIDIA driver"
        raise DeviceError("it asks for CUDA device "
                          f"{device[1]} but this machine has no GPU ({why}) and the CUDA "
                          "simulator is off; run it on a GPU machine, set NUMBA_ENABLE_CUDASIM=1 to "
                          "simulate one, or drop the CUDA DeviceOption to run on the CPU",
                          net=net, index=index, op_type=op_type, blob=blob)
    if not 0 <= device[1] < n:
        raise DeviceError(f"it asks for CUDA device {device[1]} but this machine has {n} "
                          f"(ids 0..{n - 1})", net=net, index=index, op_type=op_type, blob=blob)
    if device[1] != 0:
        # One device per process: every kernel launches on the current context's device.
        raise DeviceError(f"CUDA device {device[1]}: netjit runs CUDA ops on device 0 only",
                          net=net, index=index, op_type=op_type, blob=blob)


def is_device_array(value: Any) -> bool:
    """A numba device array (real or simulated)? Cheap when numba.cuda was never imported."""
    if isinstance(value, np.ndarray) or "numba.cuda" not in sys.modules:
        return False
    return hasattr(value, "copy_to_host") and hasattr(value, "shape") and hasattr(value, "dtype")


def where(value: Any) -> tuple[str, int]:
    return ("cuda", 0) if is_device_array(value) else CPU


def describe(device: tuple[str, int]) -> str:
    return "CPU" if device[0] == "cpu" else f"CUDA:{device[1]}"


def to_device(value: Any) -> Any:
    """A device copy of a numeric host array (a device array is returned as is)."""
    if is_device_array(value):
        return value
    arr = np.asarray(value, order="C")   # (np.ascontiguousarray would make a 0-d blob 1-d)
    if arr.dtype == np.dtype(object):
        raise NetJitError("only numeric tensors can live on a CUDA device (this blob holds objects)")
    return cuda().to_device(arr)


def to_host(value: Any) -> Any:
    """A host copy of a device array (anything else is returned as is)."""
    if is_device_array(value):
        out = value.copy_to_host()
        return np.asarray(out).reshape(value.shape)
    return value


def movable(value: Any) -> bool:
    """A host value that may be placed on a GPU: a numeric numpy array."""
    return isinstance(value, np.ndarray) and value.dtype != np.dtype(object) and value.dtype.kind in "biuf"


def synchronize() -> None:
    if "numba.cuda" in sys.modules:
        cuda().synchronize()
