"""The C-extension API Caffe2 scripts and test suites reach for: workspace.C.Workspace objects and
their blobs/nets, the device queries of a CPU build, engine preferences, CreatePythonOperator."""
import re

import numpy as np
import pytest

from caffe2.proto import caffe2_pb2
from caffe2.python import core, workspace
from netjit.runtime.errors import NetJitError


@pytest.fixture(autouse=True)
def _fresh():
    workspace.ResetWorkspace()
    yield
    workspace.ResetWorkspace()
    core.SetEnginePref({}, {})


def test_import_names_alias_one_module():
    import caffe2.python._import_c_extension as C1
    from caffe2.python import caffe2_pybind11_state as C2
    assert C1 is C2 is workspace.C


def test_cpu_build_device_queries():
    assert workspace.NumCudaDevices() == 0 and workspace.NumGpuDevices() == 0
    assert workspace.GetCuDNNVersion() == 0 and workspace.GetCUDAVersion() == 0
    assert workspace.has_gpu_support is False and workspace.C.has_gpu_support is False
    assert workspace.GpuDeviceType == caffe2_pb2.CUDA


def test_private_workspace_blobs_and_ops():
    ws = workspace.C.Workspace()
    assert ws.create_blob("x").feed(np.array([[-1.0, 3.0]], np.float32))
    assert ws.run(core.CreateOperator("Relu", ["x"], ["y"]))
    np.testing.assert_array_equal(ws.blobs["y"].fetch(), [[0.0, 3.0]])
    assert sorted(ws.blobs) == ["x", "y"] and "y" in ws.blobs and ws.has_blob("x")
    assert ws.blobs["y"].is_tensor() and ws.blobs["y"].tensor().shape == (1, 2)
    # The global (named) current workspace never saw any of it.
    assert not workspace.HasBlob("x") and workspace.Blobs() == []
    ws.feed_blob("s", "text")
    assert ws.fetch_blob("s") == b"text" and not ws.blobs["s"].is_tensor()
    ws.remove_blob("s")
    assert not ws.has_blob("s")
    with pytest.raises(KeyError, match="Can't find blob: nope"):
        ws.blobs["nope"]
    with pytest.raises(RuntimeError, match="nope"):
        ws.fetch_blob("nope")


def test_private_workspace_nets_and_errors_name_the_op():
    ws = workspace.C.Workspace()
    net = core.Net("double")
    net.Scale(["x"], ["y"], scale=2.0)
    ws.feed_blob("x", np.arange(3, dtype=np.float32))
    handle = ws.create_net(net)
    assert handle.run() and list(ws.nets) == [net.Name()]
    np.testing.assert_array_equal(ws.fetch_blob("y"), [0, 2, 4])
    ws.feed_blob("x", np.ones(2, np.float32))
    assert ws.nets[net.Name()].run()
    np.testing.assert_array_equal(ws.fetch_blob("y"), [2, 2])
    with pytest.raises(RuntimeError, match=r"already exists"):
        ws.create_net(net)
    assert ws.create_net(net, overwrite=True).name == net.Name()
    ws.run(net)      # a net object runs once
    bad = core.Net("bad")
    bad.FC(["x", "W", "b"], ["z"])
    # core.Net names are unique per process: another test may already own "bad".
    with pytest.raises(RuntimeError, match=rf"net '{re.escape(bad.Name())}' op #0 \(FC\)"):
        ws.run(bad)


def test_current_and_child_workspaces():
    workspace.FeedBlob("g", np.ones(1))
    cur = workspace.C.Workspace.current
    assert cur == workspace.C.Workspace.current and cur.has_blob("g")
    parent = workspace.C.Workspace()
    parent.feed_blob("p", np.zeros(2))
    child = workspace.C.Workspace(parent)
    assert child.has_blob("p") and not parent.has_blob("c")
    child.feed_blob("c", np.zeros(1))
    assert not parent.has_blob("c")


def test_run_plan_in_private_workspace():
    ws = workspace.C.Workspace()
    net = core.Net("fill")
    net.ConstantFill([], ["k"], shape=[2], value=5.0)
    plan = core.Plan("p")
    plan.AddStep(core.execution_step("s", net))
    assert ws.run(plan)
    np.testing.assert_array_equal(ws.fetch_blob("k"), [5, 5])


def test_engine_preferences():
    from netjit.engine_pref import GetEnginePref
    core.SetEnginePref({caffe2_pb2.CPU: {"Conv": ["NNPACK", "EIGEN"]}}, {caffe2_pb2.CPU: ["DEFAULT"]})
    assert GetEnginePref() == ({0: {"Conv": ["NNPACK", "EIGEN"]}}, {0: ["DEFAULT"]})
    core.SetOpEnginePref("Relu", {caffe2_pb2.CPU: ["X"]})
    assert GetEnginePref()[0][0] == {"Conv": ["NNPACK", "EIGEN"], "Relu": ["X"]}
    workspace.C.set_global_engine_pref({})
    assert GetEnginePref()[1] == {}
    with pytest.raises(RuntimeError, match=r"Device type 1 \(CUDA\) not registered"):
        core.SetGlobalEnginePref({caffe2_pb2.CUDA: ["CUDNN"]})
    with pytest.raises(RuntimeError, match="'Rleu'.*not a registered operator"):
        core.SetPerOpEnginePref({caffe2_pb2.CPU: {"Rleu": ["X"]}})
    # Preferences never change a result: netjit has one implementation per op.
    workspace.FeedBlob("x", np.array([-1.0, 1.0], np.float32))
    workspace.RunOperatorOnce(core.CreateOperator("Relu", ["x"], ["y"]))
    np.testing.assert_array_equal(workspace.FetchBlob("y"), [0, 1])


def test_create_python_operator():
    def double(inputs, outputs):
        outputs[0].feed(inputs[0].data * 2)

    def double_grad(inputs, outputs):
        outputs[0].feed(inputs[2].data * 2)   # [x, y, dy] -> dx

    op = core.CreatePythonOperator(double, ["x"], ["y"], grad_f=double_grad)
    assert op.type == "Python" and any(a.name == "token" for a in op.arg)
    workspace.FeedBlob("x", np.array([1.5, -2.0], np.float32))
    workspace.RunOperatorOnce(op)
    np.testing.assert_array_equal(workspace.FetchBlob("y"), [3.0, -4.0])
    ws = workspace.C.Workspace()
    ws.feed_blob("x", np.ones(2, np.float32))
    ws.run(op)
    np.testing.assert_array_equal(ws.fetch_blob("y"), [2, 2])


def test_module_level_functions():
    C = workspace.C
    assert C.feed_blob("a", np.arange(2)) and C.has_blob("a") and C.blobs() == ["a"]
    np.testing.assert_array_equal(C.fetch_blob("a"), [0, 1])
    assert C.current_workspace() == workspace.CurrentWorkspace() and "Relu" in C.registered_operators()
    assert C.run_operator_once(core.CreateOperator("Relu", ["a"], ["b"]).SerializeToString())
    assert C.has_blob("b")
    with pytest.raises(NetJitError):
        C.run_net("missing")
