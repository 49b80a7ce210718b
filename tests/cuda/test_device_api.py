"""Caffe2's device API on the CUDA backend: placement, blobs on the device, copies, brew under a
GPU scope, the predictor, explain(), and the errors a user can cause."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from netjit import brew, core, model_helper, workspace
from netjit.proto import caffe2_pb2
from netjit.runtime import device as dev
from netjit.runtime.errors import NetJitError, OpError
from tests.cuda.conftest import gpu_option

R = np.random.default_rng(3)


def test_device_queries_and_feed_fetch():
    assert workspace.NumCudaDevices() >= 1 and workspace.has_gpu_support
    x = R.standard_normal((2, 3)).astype(np.float32)
    workspace.FeedBlob("x", x, gpu_option())
    assert dev.is_device_array(workspace._ws().get("x"))
    back = workspace.FetchBlob("x")
    assert isinstance(back, np.ndarray) and np.array_equal(back, x)


def test_blobs_stay_on_the_device_between_ops_and_runs():
    net = core.Net("stay")
    net.Relu(["x"], ["y"])
    net.Scale(["y"], ["x"], scale=0.5)
    net.RunAllOnGPU()
    x = np.array([[-1.0, 4.0]], np.float32)
    workspace.FeedBlob("x", x, gpu_option())
    workspace.CreateNet(net)
    workspace.RunNet("stay", num_iter=2)
    assert dev.is_device_array(workspace._ws().get("x")) and dev.is_device_array(workspace._ws().get("y"))
    np.testing.assert_allclose(workspace.FetchBlob("x"), [[0.0, 1.0]])


def test_device_scope_brew_and_copies_with_explain():
    model = model_helper.ModelHelper(name="m")
    with core.DeviceScope(gpu_option()):
        fc = brew.fc(model, "data", "fc", dim_in=4, dim_out=3)
        relu = brew.relu(model, fc, fc)
        sm = brew.softmax(model, relu, "sm")
    model.net.EnsureCPUOutput([sm], ["sm_cpu"])  # pinned nowhere: the net's ops are on CUDA, this copies
    model.net.Proto().op[-1].device_option.CopyFrom(core.DeviceOption(caffe2_pb2.CPU))
    assert all(op.device_option.device_type == caffe2_pb2.CUDA for op in model.param_init_net.Proto().op)
    workspace.RunNetOnce(model.param_init_net)
    assert dev.is_device_array(workspace._ws().get("fc_w"))
    data = R.standard_normal((2, 4)).astype(np.float32)
    workspace.FeedBlob("data", data, gpu_option())
    workspace.CreateNet(model.net)
    workspace.RunNet(model.net.Name())
    assert isinstance(workspace._ws().get("sm_cpu"), np.ndarray)
    w, b = workspace.FetchBlob("fc_w"), workspace.FetchBlob("fc_b")
    y = np.maximum(data @ w.T + b, 0)
    e = np.exp(y - y.max(1, keepdims=True))
    np.testing.assert_allclose(workspace.FetchBlob("sm_cpu"), e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)
    text = workspace._ws().nets[model.net.Name()].compiled.explain(sources=False)
    assert "Fused(FC,Relu)" in text and "FC+Relu 2x3x4" in text    # Relu in the GEMM epilogue: one launch
    assert "explicit copy device->host" in text and "grid=" in text and "block=" in text


def test_copy_ops_and_host_step_copies():
    net = core.Net("mixed")
    net.CopyCPUToGPU(["h"], ["d"])
    net.Relu(["d"], ["r"])
    net.Print(["r"], [])           # no GPU kernel: runs on the host, its input copied from the device
    net.CopyGPUToCPU(["r"], ["back"])
    for op in net.Proto().op:
        op.device_option.CopyFrom(gpu_option())
    workspace.FeedBlob("h", np.array([-2.0, 3.0], np.float32))
    workspace.CreateNet(net)
    workspace.RunNet("mixed")
    assert isinstance(workspace._ws().get("back"), np.ndarray)
    np.testing.assert_array_equal(workspace._ws().get("back"), [0.0, 3.0])
    text = workspace._ws().nets["mixed"].compiled.explain(sources=False)
    assert "explicit copy host->device" in text


def test_compile_device_cuda_and_explain():
    import netjit.compiler.api as api
    net = caffe2_pb2.NetDef(name="c", external_input=["x"], external_output=["y"])
    from netjit.proto.args import make_op
    net.op.extend([make_op("Exp", ["x"], ["t"]), make_op("Mul", ["t", "t"], ["y"])])
    exe = api.compile(net, device="cuda")
    x = np.array([[0.0, 1.0], [2.0, -1.0]], np.float32)
    out = exe(x=x)["y"]
    np.testing.assert_allclose(out, np.exp(x) ** 2, rtol=1e-5)
    text = exe.explain()
    assert "Fused(Exp,Mul)" in text and "1 kernel launches per run" in text and "cuda.grid(1)" in text


def test_predictor_on_gpu():
    from netjit.proto.args import make_op
    init = caffe2_pb2.NetDef(name="init")
    init.op.extend([make_op("GivenTensorFill", [], ["w"], shape=[2, 3], values=[float(v) for v in range(6)])])
    pred = caffe2_pb2.NetDef(name="pred", external_input=["w", "b", "x"], external_output=["y"])
    pred.op.extend([make_op("FC", ["x", "w", "b"], ["y"])])
    init.op.extend([make_op("ConstantFill", [], ["b"], shape=[2], value=1.0)])
    for n in (init, pred):
        n.device_option.CopyFrom(gpu_option())
    p = workspace.Predictor(init, pred)
    x = np.ones((1, 3), np.float32)
    (y,) = p.run({"x": x})
    np.testing.assert_allclose(np.asarray(y), x @ np.arange(6, dtype=np.float32).reshape(2, 3).T + 1)


# ------------------------------------------------------------------------------- bad input
def test_nonexistent_device_id():
    net = core.Net("bad_id")
    net.Relu(["x"], ["y"])
    net.RunAllOnGPU(gpu_id=7)
    workspace.FeedBlob("x", np.ones(2, np.float32))
    with pytest.raises(OpError, match=r"bad_id.*#0 \(Relu\).*CUDA device 7"):
        workspace.CreateNet(net)
    with pytest.raises(NetJitError, match="CUDA device 7"):
        workspace.FeedBlob("z", np.ones(2, np.float32), core.DeviceOption(caffe2_pb2.CUDA, 7))


def test_blob_on_the_wrong_device_without_a_copy():
    net = core.Net("wrong")
    net.Relu(["x"], ["y"])
    net.RunAllOnGPU()
    workspace.FeedBlob("x", np.ones(2, np.float32))       # fed on the CPU
    workspace.CreateNet(net)
    with pytest.raises(OpError, match=r"wrong.*#0 \(Relu\).*'x' lives on the CPU.*CopyCPUToGPU"):
        workspace.RunNet("wrong")
    cpu = core.Net("wrong2")
    cpu.Relu(["g"], ["h"])
    cpu.Proto().op[0].device_option.CopyFrom(core.DeviceOption(caffe2_pb2.CPU))
    cpu.Sigmoid(["h"], ["k"])
    cpu.Proto().op[1].device_option.CopyFrom(gpu_option())
    workspace.FeedBlob("g", np.ones(2, np.float32), gpu_option())   # fed on the GPU, read by a CPU op
    workspace.CreateNet(cpu)
    with pytest.raises(OpError, match=r"#0 \(Relu\).*'g' lives on CUDA:0.*CopyGPUToCPU"):
        workspace.RunNet("wrong2")


def test_op_without_gpu_kernel_runs_on_host_and_is_reported():
    net = core.Net("hostop")
    net.Accuracy(["p", "l"], ["acc"])
    net.RunAllOnGPU()
    workspace.FeedBlob("p", np.array([[0.1, 0.9], [0.8, 0.2]], np.float32), gpu_option())
    workspace.FeedBlob("l", np.array([1, 1], np.int32), gpu_option())
    workspace.CreateNet(net)
    workspace.RunNet("hostop")
    assert float(workspace.FetchBlob("acc")) == 0.5
    text = workspace._ws().nets["hostop"].compiled.explain(sources=False)
    assert "[host  ] #0 Accuracy" in text and "copies: device->host ['p', 'l']; host->device ['acc']" in text


def test_no_gpu_and_no_simulator_fails_at_create_net():
    code = ("import numpy as np\nfrom netjit import core, workspace\n"
            "n = core.Net('nogpu'); n.Relu(['x'], ['y']); n.RunAllOnGPU()\n"
            "workspace.FeedBlob('x', np.ones(2, np.float32))\n"
            "assert workspace.NumCudaDevices() == 0 and not workspace.has_gpu_support\n"
            "try:\n    workspace.CreateNet(n)\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "NETJIT_CUDA_PROBE")}
    if not dev.simulator_enabled():
        pytest.skip("a real GPU is present")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "DeviceError" in out.stdout and "nogpu" in out.stdout and "#0 (Relu)" in out.stdout
    assert "no GPU" in out.stdout and "NUMBA_ENABLE_CUDASIM" in out.stdout


def test_cpu_op_output_read_by_a_device_kernel_needs_a_copy():
    net = core.Net("cpu_then_gpu")
    net.Relu(["x"], ["h"])
    net.Proto().op[0].device_option.CopyFrom(core.DeviceOption(caffe2_pb2.CPU))
    net.Sigmoid(["h"], ["y"])
    net.Proto().op[1].device_option.CopyFrom(gpu_option())
    workspace.FeedBlob("x", np.ones(2, np.float32))
    workspace.CreateNet(net)
    with pytest.raises(OpError, match=r"#1 \(Sigmoid\).*'h' lives on the CPU.*CopyCPUToGPU"):
        workspace.RunNet("cpu_then_gpu")
    fixed = core.Net("fixed")                       # the same with the copy Caffe2 asks for
    fixed.Relu(["x"], ["h"])
    fixed.CopyCPUToGPU(["h"], ["h_gpu"])
    fixed.Sigmoid(["h_gpu"], ["y"])
    ops = fixed.Proto().op
    ops[0].device_option.CopyFrom(core.DeviceOption(caffe2_pb2.CPU))
    for op in ops[1:]:
        op.device_option.CopyFrom(gpu_option())
    workspace.CreateNet(fixed)
    workspace.RunNet("fixed")
    np.testing.assert_allclose(workspace.FetchBlob("y"), 1 / (1 + np.exp(-np.ones(2))), rtol=1e-6)


def test_compile_follows_the_nets_device_option():
    import netjit.compiler.api as api
    from netjit.compiler.codegen.cuda_runner import CudaNet
    net = core.Net("follows")
    net.Relu(["x"], ["y"])
    assert not isinstance(api.compile(net), CudaNet)
    net.RunAllOnGPU()
    exe = api.compile(net)
    assert isinstance(exe, CudaNet) and not isinstance(api.compile(net, device="cpu"), CudaNet)
    np.testing.assert_array_equal(exe(x=np.array([-1.0, 2.0], np.float32))["y"], [0.0, 2.0])
