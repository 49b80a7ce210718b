"""caffe2.python.memonger: nets compute the same before and after, with fewer blobs and bytes."""
import numpy as np
import pytest

from caffe2.proto import caffe2_pb2
from caffe2.python import brew, core, memonger, model_helper, optimizer, workspace

WIDTHS = [6, 16, 16, 16, 16, 3]


def _mlp(name, train):
    model = model_helper.ModelHelper(name=name)
    blob = "data"
    for i, (a, b) in enumerate(zip(WIDTHS, WIDTHS[1:])):
        blob = brew.fc(model, blob, f"fc{i}", dim_in=a, dim_out=b)
        if i < len(WIDTHS) - 2:
            blob = brew.relu(model, blob, f"relu{i}")
    if not train:
        model.net.AddExternalOutput(brew.softmax(model, blob, "prob"))
        return model
    loss = model.AveragedLoss(model.SquaredL2Distance([blob, "target"], "dist"), "loss")
    model.AddGradientOperators([loss])
    optimizer.build_sgd(model, base_learning_rate=0.1, momentum=0.9)
    return model


def _blobs(net):
    return {b for op in net.op for b in (*op.input, *op.output)}


def _feeds(rng):
    return {"data": rng.standard_normal((5, WIDTHS[0])).astype(np.float32),
            "target": rng.standard_normal((5, WIDTHS[-1])).astype(np.float32)}


@pytest.mark.parametrize("executor", ["compiled", "reference"])
def test_share_grad_blobs_trains_identically(executor, monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", executor)
    model = _mlp("mem_train", train=True)
    before = model.net.Proto()
    optim = memonger.share_grad_blobs(model.net, ["loss"], set(model.param_to_grad.values()), namescope="",
                                      share_activations=True)
    assert memonger.verify_graph_equality(before, optim) and memonger.verify_inplace_blobs(before, optim)
    assert len(_blobs(optim)) < len(_blobs(before)) - 4
    assert any(b.startswith("__m") and b.endswith("_shared") for b in _blobs(optim))
    # Parameter gradients (the optimizer's inputs) and the loss keep their names.
    assert {str(g) for g in model.param_to_grad.values()} | {"loss"} <= _blobs(optim)

    workspace.ResetWorkspace()
    workspace.RunNetOnce(model.param_init_net)
    start = {str(p): workspace.FetchBlob(str(p)).copy() for p in model.GetParams()}
    results = []
    for proto in (before, optim):
        workspace.ResetWorkspace()
        workspace.RunNetOnce(model.param_init_net)   # momentum, counter, mutex; then one shared init
        for k, v in {**_feeds(np.random.default_rng(2)), **start}.items():
            workspace.FeedBlob(k, v)
        workspace.CreateNet(proto, overwrite=True)
        losses = []
        for _ in range(3):
            workspace.RunNet(proto.name)
            losses.append(float(workspace.FetchBlob("loss")))
        results.append((losses, {str(p): workspace.FetchBlob(str(p)).copy() for p in model.GetParams()}))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-6)
    for name, value in results[0][1].items():
        np.testing.assert_allclose(results[1][1][name], value, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("executor", ["compiled", "reference"])
def test_optimize_inference_for_dag_same_output_fewer_bytes(executor, monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", executor)
    model = _mlp("mem_infer", train=False)
    workspace.ResetWorkspace()
    feeds = _feeds(np.random.default_rng(4))
    workspace.FeedBlob("data", feeds["data"])
    workspace.RunNetOnce(model.param_init_net)
    net = model.net.Proto()
    net.external_input.extend(["data"] + [str(p) for p in model.GetParams()])
    workspace.RunNetOnce(net)
    want = workspace.FetchBlob("prob").copy()

    optim = memonger.optimize_inference_for_dag(net, ["data"])
    assert memonger.verify_graph_equality(net, optim)
    assert len(_blobs(optim)) < len(_blobs(net))
    workspace.RunNetOnce(optim)
    np.testing.assert_array_equal(workspace.FetchBlob("prob"), want)

    # The statistics of the same sharing, from the blobs' sizes in the workspace (the original
    # net's run left every activation there).
    workspace.RunNetOnce(net)
    static = set(net.external_input) | set(net.external_output)
    result = memonger.optimize_interference(net, static)
    stats = memonger.compute_statistics(result.assignments)
    assert stats.optimized_nbytes < stats.baseline_nbytes
    sizes = memonger.collect_blob_sizes(net)
    activations = {b: n for b, n in sizes.items() if b not in static}
    bound = memonger.live_lower_bound(net, activations)
    shared = memonger.compute_statistics([g for g in result.assignments if g[0][0] not in static])
    assert bound <= shared.optimized_nbytes < shared.baseline_nbytes


def test_verify_graph_equality_catches_a_bad_rename():
    net = core.Net("v")
    net.Relu("x", "a")
    net.Relu("a", "b")
    net.Add(["a", "b"], "c")
    bad = net.Proto().__deepcopy__()
    bad.op[1].output[0] = "a"            # b -> a: op 2 would read op 1's result twice
    bad.op[2].input[1] = "a"
    assert memonger.verify_graph_equality(net.Proto(), net.Proto())
    assert not memonger.verify_graph_equality(net.Proto(), bad)
    assert not memonger.verify_inplace_blobs(net.Proto(), bad)


def test_inference_refuses_gradient_ops_and_unknown_inputs():
    model = _mlp("mem_bad", train=True)
    with pytest.raises(memonger.MemongerError, match="gradient op"):
        memonger.optimize_inference_for_dag(model.net, ["data"])
    net = caffe2_pb2.NetDef(name="unknown_in")       # "x" is not declared an external input
    net.op.add(type="Relu", input=["x"], output=["y"])
    with pytest.raises(memonger.MemongerError, match="'x'"):
        memonger.optimize_inference_for_dag(net, [])


@pytest.mark.parametrize("executor", ["compiled", "reference"])
def test_release_blobs_when_used_frees_after_last_read(executor, monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", executor)
    net = core.Net("rel")
    net.Relu("x", "a")
    net.Sigmoid("a", "b")
    c = net.Add(["a", "b"], "c")
    net.AddExternalOutput(c)
    freed = memonger.release_blobs_when_used(net.Proto(), dont_free_blobs=set())
    assert [op.type for op in freed.op] == ["Relu", "Sigmoid", "Add", "Free", "Free"]
    assert sorted(op.input[0] for op in freed.op if op.type == "Free") == ["a", "b"]
    x = np.linspace(-1, 1, 6, dtype=np.float32)
    workspace.ResetWorkspace()
    workspace.FeedBlob("x", x)
    workspace.RunNetOnce(net)
    want = workspace.FetchBlob("c").copy()
    workspace.ResetWorkspace()
    workspace.FeedBlob("x", x)
    workspace.RunNetOnce(freed)
    np.testing.assert_array_equal(workspace.FetchBlob("c"), want)
    assert workspace.FetchBlob("a").size == 0 and workspace.FetchBlob("b").size == 0
    kept = memonger.release_blobs_when_used(net.Proto(), dont_free_blobs={"a"}, selector_fun=lambda b: b != "b")
    assert all(op.type != "Free" for op in kept.op)


def test_estimate_memory_usage_counts_free():
    net = core.Net("est")
    net.Relu("x", "a")
    net.Relu("a", "b")
    freed = memonger.release_blobs_when_used(net.Proto(), set())
    shapes = {"x": [4, 4], "a": [4, 4], "b": [4, 4]}
    types = {k: core.DataType.FLOAT for k in shapes}
    cpu = core.DeviceOption(0)
    for op in freed.op:
        op.device_option.CopyFrom(cpu)
    total, high, by_op = memonger.estimate_memory_usage([freed], shapes, types, cpu)
    assert (total, by_op["Relu"]) == (128, 128)
    assert high == 128    # a is freed only after b is written


def test_free_op_record():
    from netjit.compiler.ops.registry import TensorType, lookup
    from netjit.compiler.reference import run_operator_once
    from netjit.proto.args import make_op
    from netjit.runtime.workspace import Workspace
    ws = Workspace("free")
    ws.feed("x", np.ones((2, 3), np.float32))
    op = make_op("Free", ["x"], ["x"])
    run_operator_once(op, ws)
    out = ws.fetch("x")
    opdef = lookup("Free")
    (inferred,) = opdef.infer(opdef.decode_args(op), [TensorType((2, 3), np.dtype(np.float32))])
    assert out.shape == inferred.shape == (0,) and out.dtype == inferred.dtype == np.float32
    with pytest.raises(Exception, match="must be the same blob"):
        run_operator_once(make_op("Free", ["x"], ["y"]), ws)


def test_blobs_used_inside_subnets_keep_their_names():
    inner = core.Net("branch")
    inner.Relu("a", "b_inner")
    outer = core.Net("outer")
    outer.Relu("x", "a")
    outer.Sigmoid("a", "s")
    outer.Tanh("s", "t")
    outer.Relu("t", "u")
    outer.Proto().op[-1].arg.add(name="then_net").n.CopyFrom(inner.Proto())   # a subnet that reads "a"
    outer.Proto().external_output.append("u")
    assert "a" in memonger.blobs_in_subnets(outer.Proto())
    optim = memonger.optimize_inference_for_dag(outer, ["x"])
    assert "a" in _blobs(optim)
    fast = memonger.optimize_inference_fast(outer.Proto(), {"x", "u"})
    assert "a" in _blobs(fast) and memonger.verify_graph_equality(outer.Proto(), fast)
