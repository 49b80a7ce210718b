"""The compiled executor behind the Caffe2 API and netjit.compile: visibility, random fillers,
plan and net caching, errors located at ops, parent workspaces, odd inputs, barriers."""
import numpy as np
import pytest

from netjit import core, workspace
from netjit.compiler import api
from netjit.compiler.codegen.modules import kernel_stats
from netjit.compiler.runner import make_runner
from netjit.runtime.errors import MissingBlobError, OpError
from netjit.runtime.workspace import REGISTRY, Workspace
from tests.compiler.helpers import (assert_same_blobs, netdef, op, plan_of, run_compiled, run_reference,
                                    step_kinds)


def basics_net(seed=None):
    net = core.Net("basics")
    kw = {} if seed is None else {"device_option": core.DeviceOption(0, random_seed=seed)}
    X = net.GaussianFill([], ["X"], mean=0.0, std=1.0, shape=[2, 3], run_once=0, **kw)
    W = net.GaussianFill([], ["W"], mean=0.0, std=1.0, shape=[5, 3], run_once=0, **kw)
    b = net.ConstantFill([], ["B"], shape=[5], value=1.0, run_once=0)
    X.FC([W, b], ["Y"])
    return net


def fetch(*names):
    return [workspace.FetchBlob(n) for n in names]


def test_basics_tutorial_net_through_runnet():
    net = basics_net()
    workspace.RunNetOnce(net)
    x, w, b, y = fetch("X", "W", "B", "Y")
    np.testing.assert_allclose(y, x @ w.T + b, rtol=1e-6)
    workspace.CreateNet(net)
    assert workspace._ws().nets[net.Proto().name].executor == "compiled"
    workspace.RunNet(net.Proto().name)
    x2, y2 = fetch("X", "Y")
    assert not np.array_equal(x, x2)          # random fillers draw fresh values every run
    np.testing.assert_allclose(y2, x2 @ fetch("W")[0].T + b, rtol=1e-6)


def test_seeded_fillers_match_the_reference_executor():
    net = basics_net(seed=7).Proto()
    ws_c, ws_r = Workspace("c"), Workspace("r")
    rc, rr = make_runner(net, ws_c, "compiled"), make_runner(net, ws_r, "reference")
    for _ in range(3):
        rc.run()
        rr.run()
        for name in "XWBY":
            np.testing.assert_allclose(ws_c.get(name), ws_r.get(name), rtol=1e-6, err_msg=name)
    again = Workspace("again")
    make_runner(net, again, "compiled").run()          # a new instance restarts the seeded stream
    rc2 = Workspace("first")
    make_runner(net, rc2, "reference").run()
    np.testing.assert_array_equal(again.get("X"), rc2.get("X"))


def test_runnetonce_reuses_the_compiled_net_and_plan():
    net = basics_net().Proto()
    workspace.RunNetOnce(net)
    compiled = api.get_compiled(net)
    plans = list(compiled._plans)
    for _ in range(3):
        workspace.RunNetOnce(net)
    assert api.get_compiled(net) is compiled and list(compiled._plans) == plans


def test_new_shape_replans_without_new_kernels():
    net = netdef("shapes", [op("Relu", ["X"], ["A"]), op("Sigmoid", ["A"], ["B"]), op("Mul", ["B", "X"], ["C"])])
    ws = Workspace("s")
    ws.feed("X", np.ones((3, 4), np.float32))
    runner = make_runner(net, ws)
    runner.run()
    before = kernel_stats()
    for shape in [(5, 7), (1, 9), (16, 3)]:      # same rank: the compiled specialisation serves them all
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        ws.feed("X", x)
        runner.run()
        np.testing.assert_allclose(ws.get("C"), 1 / (1 + np.exp(-np.maximum(x, 0))) * x, rtol=1e-6)
    after = kernel_stats()
    assert after["cache_misses"] == before["cache_misses"] and after["kernels"] == before["kernels"]
    assert len(runner.compiled.plans_at(0)) == 4
    ws.feed("X", np.ones((3, 4), np.float64))      # a new dtype does make a new specialisation
    runner.run()
    assert ws.get("C").dtype == np.float64


def test_every_written_blob_is_visible_with_caffe2_values():
    rng = np.random.default_rng(1)
    feeds = {"X": rng.standard_normal((4, 5)).astype(np.float32), "S": rng.standard_normal(5).astype(np.float32)}
    net = netdef("vis", [op("Relu", ["X"], ["Y"]), op("Sigmoid", ["Y"], ["Y"]), op("Add", ["Y", "X"], ["Z"]),
                         op("Mul", ["Z", "S"], ["Z"], broadcast=1), op("StopGradient", ["Z"], ["W"]),
                         op("Scale", ["W"], ["X"], scale=0.5)])
    ref = run_reference(net, feeds, runs=2)
    got, runner = run_compiled(net, feeds, runs=2)
    assert_same_blobs(ref, got)
    assert "kernel" in step_kinds(plan_of(runner))


def test_failures_name_the_op_and_keep_earlier_results():
    x = np.ones((2, 3), np.float32)
    net = netdef("fails", [op("Relu", ["X"], ["Y"]), op("Add", ["Y", "Z"], ["Q"])])
    ws = Workspace("f")
    ws.feed("X", x)
    ws.feed("Z", np.ones((4,), np.float32))
    runner = make_runner(net, ws)
    with pytest.raises(OpError, match=r"net 'fails' op #1 \(Add\)") as err:
        runner.run()
    assert err.value.index == 1 and err.value.op_type == "Add"
    np.testing.assert_array_equal(ws.get("Y"), x)       # op #0 finished before #1 failed


def test_host_step_error_inside_a_compiled_plan():
    net = netdef("badfc", [op("Relu", ["X"], ["X2"]), op("FC", ["X2", "W", "b"], ["Y"])])
    feeds = {"X": np.ones((2, 3), np.float32), "W": np.ones((4, 3), np.float32), "b": np.ones(5, np.float32)}
    with pytest.raises(OpError, match=r"op #1 \(FC\).*bias has 5 elements.*'b'"):
        run_compiled(net, feeds)


def test_missing_blob_at_construction_and_at_run():
    net = netdef("missing", [op("Relu", ["X"], ["Y"])])
    with pytest.raises(MissingBlobError, match=r"op #0 \(Relu\).*'X' does not exist"):
        make_runner(net, Workspace("m"))
    ws = Workspace("m2")
    ws.feed("X", np.ones(3, np.float32))
    runner = make_runner(net, ws)
    runner.run()
    del ws.blobs["X"]
    with pytest.raises(MissingBlobError, match=r"op #0 \(Relu\).*'X'"):
        runner.run()


def test_declared_inputs_are_enforced():
    net = netdef("decl", [op("Relu", ["X"], ["Y"])], external_input=["Q"])
    ws = Workspace("d")
    ws.feed("X", np.ones(2, np.float32))
    with pytest.raises(OpError, match="neither an external input"):
        make_runner(net, ws)


def test_child_workspace_reads_parent_blobs():
    parent = Workspace("parent")
    parent.feed("W", np.full((3, 2), 2.0, np.float32))
    parent.feed("b", np.zeros(3, np.float32))
    child = Workspace("child", parent=parent)
    child.feed("X", np.ones((4, 2), np.float32))
    net = netdef("pred", [op("FC", ["X", "W", "b"], ["Y"]), op("Relu", ["Y"], ["Y"])])
    runner = make_runner(net, child)
    runner.run()
    runner.run()
    np.testing.assert_array_equal(child.get("Y"), np.full((4, 3), 4.0, np.float32))
    assert "Y" not in parent.blobs


def test_non_contiguous_and_odd_inputs():
    base = np.arange(24, dtype=np.float32).reshape(4, 6) - 10
    feeds = {"X": base[:, ::2]}
    net = netdef("nc", [op("Relu", ["X"], ["Y"]), op("Scale", ["Y"], ["Z"], scale=3.0)])
    ws = Workspace("nc")
    ws.blobs["X"] = feeds["X"]        # straight into the store: no copy on feed
    runner = make_runner(net, ws)
    for _ in range(2):
        runner.run()
        np.testing.assert_array_equal(ws.get("Z"), np.maximum(base[:, ::2], 0) * 3)
    ws.blobs["X"] = np.asarray(np.float32(-2.0))       # a 0-d array
    runner.run()
    assert ws.get("Z").shape == () and ws.get("Z") == 0


def test_barrier_splits_the_plan():
    net = netdef("barrier", [op("Relu", ["X"], ["A"]),
                             op("ConstantFill", ["S"], ["Z"], input_as_shape=1, value=2.0),
                             op("Mul", ["Z", "A"], ["B"], broadcast=1), op("Sigmoid", ["B"], ["C"])])
    feeds = {"X": np.array([-1.0, 3.0], np.float32), "S": np.array([3, 2], np.int64)}
    ref = run_reference(net, feeds, runs=2)
    got, runner = run_compiled(net, feeds, runs=2)
    assert_same_blobs(ref, got)
    first = runner.compiled.plans_at(0)[0]
    assert first.stop == 1 and runner.compiled.plans_at(2)
    assert "kernel" in step_kinds(runner.compiled.plans_at(2)[0])


def test_host_ops_run_in_place_inside_plans(capsys):
    net = netdef("printing", [op("Relu", ["X"], ["A"]), op("Print", ["A"], []), op("Sigmoid", ["A"], ["B"])])
    got, runner = run_compiled(net, {"X": np.array([-1.0, 2.0], np.float32)})
    assert step_kinds(plan_of(runner)) == ["kernel", "host", "kernel"]
    assert "2" in capsys.readouterr().out


def test_compile_api_outputs_params_and_explain():
    rng = np.random.default_rng(2)
    feeds = {"X": rng.standard_normal((8, 3)).astype(np.float32), "W": rng.standard_normal((4, 3)).astype(np.float32),
             "b": rng.standard_normal(4).astype(np.float32), "lr": np.array([-0.1], np.float32),
             "one": np.array([1.0], np.float32), "gb": np.ones(4, np.float32)}
    net = netdef("train", [op("FC", ["X", "W", "b"], ["Y"]), op("Relu", ["Y"], ["Y"]), op("Sigmoid", ["Y"], ["P"]),
                           op("Scale", ["P"], ["G"], scale=0.01), op("WeightedSum", ["b", "one", "gb", "lr"], ["b"])],
                 external_input=list(feeds), external_output=["P"])
    exe = api.compile(net, inputs=feeds)
    assert exe.params == ["b"]
    ws = Workspace("c")
    for k, v in feeds.items():
        ws.feed(k, v)
    exe.run(ws)
    assert "P" in ws.blobs and "Y" not in ws.blobs and "G" not in ws.blobs
    np.testing.assert_allclose(ws.get("b"), feeds["b"] - 0.1, rtol=1e-6)
    y = np.maximum(feeds["X"] @ feeds["W"].T + feeds["b"], 0)
    np.testing.assert_allclose(ws.get("P"), 1 / (1 + np.exp(-y)), rtol=1e-5)
    REGISTRY.current.feed("W", feeds["W"])
    out = exe(**{k: v for k, v in feeds.items() if k != "W"})
    assert set(out) == {"P"} and out["P"].shape == (8, 4)
    text = exe.explain()
    assert "Fused(FC,Relu,Sigmoid)" in text and "def kernel(" in text and "arena" in text and "def body(" in text
    assert "Scale" not in text.split("--- kernel")[0]          # dead: nothing reads G
    sources = exe.sources()
    assert any(k.endswith("/driver") for k in sources) and any("def kernel(" in v for v in sources.values())
    with pytest.raises(ValueError, match="not supported"):
        api.compile(net, device="tpu")
    with pytest.raises(ValueError, match="lacks"):
        api.compile(net, inputs={"X": feeds["X"]})


def test_stateful_and_training_ops_keep_state_across_runs():
    net = netdef("iters", [op("Iter", ["it"], ["it"]),
                           op("LearningRate", ["it"], ["lr"], base_lr=-0.1, policy="step", stepsize=1, gamma=0.5)])
    ws = Workspace("i")
    ws.feed("it", np.zeros(1, np.int64))
    runner = make_runner(net, ws)
    for k in range(1, 4):
        runner.run()
        assert int(ws.get("it")[0]) == k
        np.testing.assert_allclose(ws.get("lr"), -0.1 * 0.5 ** k, rtol=1e-6)


def test_compiled_nets_do_not_keep_workspaces_alive():
    import gc
    import weakref
    net = netdef("noleak", [op("Relu", ["X"], ["Y"])], external_output=["Y"])
    exe = api.compile(net)
    ws = Workspace("short-lived")
    ws.feed("X", np.ones(3, np.float32))
    exe.run(ws)
    REGISTRY.current.feed("X", np.ones(2, np.float32))
    assert exe(X=np.ones(2, np.float32))["Y"].shape == (2,)
    ref = weakref.ref(ws)
    del ws
    gc.collect()
    assert ref() is None
