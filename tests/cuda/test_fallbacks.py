"""Kernels numba cannot compile for the device run on the host (reported; strict mode raises), and
host-only ops (Python ops, DB readers) inside GPU nets get the copies they need."""
from __future__ import annotations

import numpy as np
import pytest

from netjit import core, workspace
from netjit.compiler.codegen import cuda_runner, numba_cuda
from netjit.compiler.strict import StrictModeError
from netjit.proto import caffe2_pb2
from netjit.runtime import device as dev
from netjit.runtime.errors import OpError
from tests.cuda.conftest import gpu_option

X = np.array([[-1.5, 0.25, 2.0]], np.float32)


def _broken_kernels(monkeypatch, error: Exception) -> list[int]:
    """Every device kernel raises ``error`` when launched (as numba does when it cannot compile)."""
    calls: list[int] = []
    real = numba_cuda.kernel_for

    def kernel_for(node, values):
        k = real(node, values)
        if k is not None:
            def run(ins, outs):
                calls.append(1)
                raise error
            k.run = run
        return k
    monkeypatch.setattr(numba_cuda, "kernel_for", kernel_for)
    return calls


def _net(name: str) -> core.Net:
    net = core.Net(name)
    net.Relu(["x"], ["r"])
    net.Sigmoid(["r"], ["y"])
    net.RunAllOnGPU()
    return net


def test_a_kernel_that_does_not_compile_runs_on_the_host(monkeypatch):
    from numba.core.errors import TypingError
    monkeypatch.delenv("NETJIT_STRICT", raising=False)
    calls = _broken_kernels(monkeypatch, TypingError("np.floor is not supported on this target"))
    workspace.FeedBlob("x", X, gpu_option())
    workspace.CreateNet(_net("no_compile"))
    for _ in range(2):
        workspace.RunNet("no_compile")
        np.testing.assert_allclose(workspace.FetchBlob("y"), 1 / (1 + np.exp(-np.maximum(X, 0))), rtol=1e-6)
    assert len(calls) == 1                      # tried once; the step stays on the host afterwards
    assert dev.is_device_array(workspace._ws().get("y"))      # its outputs still live on the device
    compiled = workspace._ws().nets["no_compile"].compiled
    assert [f.stage for f in compiled.fallbacks()] == ["kernel"]
    assert "TypingError" in str(compiled.fallbacks()[0])
    text = compiled.explain(sources=False)
    assert "host (its GPU kernel failed to compile)" in text and "0 kernel launches per run" in text
    assert "fallback to the host: kernel: op #0" in text


def test_strict_mode_raises_instead(monkeypatch):
    from numba.core.errors import LoweringError
    monkeypatch.setenv("NETJIT_STRICT", "1")
    _broken_kernels(monkeypatch, LoweringError("cannot lower"))
    workspace.FeedBlob("x", X, gpu_option())
    workspace.CreateNet(_net("no_compile_strict"))
    with pytest.raises(StrictModeError, match=r"no_compile_strict.*#0.*LoweringError"):
        workspace.RunNet("no_compile_strict")


def test_a_kernel_failing_for_another_reason_is_an_op_error(monkeypatch):
    _broken_kernels(monkeypatch, RuntimeError("launch failed"))
    workspace.FeedBlob("x", X, gpu_option())
    workspace.CreateNet(_net("launch_fails"))
    with pytest.raises(OpError, match=r"launch_fails.*#0 \(Relu\).*launch failed"):
        workspace.RunNet("launch_fails")
    assert not cuda_runner.compile_error(RuntimeError("x"))


def test_python_op_and_db_reader_in_a_gpu_net(tmp_path):
    """Caffe2's layout: the reader pinned to the CPU, a copy up, GPU ops, a Python op (host-only:
    its input comes down and its output goes back up), explain() listing each copy."""
    db = str(tmp_path / "data.minidb")
    rows = np.arange(12, dtype=np.float32).reshape(4, 3) - 5
    workspace.FeedBlob("rows", rows)
    workspace.FeedBlob("labels", np.arange(4, dtype=np.int32))
    writer = core.Net("write")
    writer.Save(["rows", "labels"], [], db=db, db_type="minidb", absolute_path=1)
    workspace.RunNetOnce(writer)

    seen: list[type] = []

    def halve(inputs, outputs):
        seen.append(type(inputs[0].data))
        outputs[0].feed(inputs[0].data * 0.5)

    net = core.Net("mixed_host")
    with core.DeviceScope(core.DeviceOption(caffe2_pb2.CPU)):      # the reader stays on the CPU
        net.Load([], ["rows_in", "labels_in"], db=db, db_type="minidb", absolute_path=1,
                 source_blob_names=["rows", "labels"])
    with core.DeviceScope(gpu_option()):
        net.CopyCPUToGPU(["rows_in"], ["rows_gpu"])
        net.Relu(["rows_gpu"], ["r"])
        net.Python(halve)(["r"], ["h"])
        net.Scale(["h"], ["y"], scale=4.0)
    workspace.CreateNet(net)
    workspace.RunNet("mixed_host")
    np.testing.assert_allclose(workspace.FetchBlob("y"), np.maximum(rows, 0) * 2.0)
    assert seen == [np.ndarray]                     # the Python function saw a host array
    assert dev.is_device_array(workspace._ws().get("y"))
    assert isinstance(workspace._ws().get("labels_in"), np.ndarray)      # never placed on the GPU
    text = workspace._ws().nets["mixed_host"].compiled.explain(sources=False)
    assert "explicit copy host->device" in text
    assert "then [host  ] #3 Python" in text and "copies: device->host ['r']; host->device ['h']" in text, text
