"""workspace: blobs, nets, plans, predictor, and how failures leave the workspace."""
import numpy as np
import pytest

from caffe2.proto import caffe2_pb2
from caffe2.python import core, workspace
from netjit.runtime.errors import NetJitError, OpError


def _fc_net(name="fcnet"):
    net = core.Net(name)
    net.FC(["X", "W", "b"], "Y").Relu([], "Z")
    return net


def _feed_fc():
    rng = np.random.default_rng(0)
    workspace.FeedBlob("X", rng.standard_normal((4, 3)).astype(np.float32))
    workspace.FeedBlob("W", rng.standard_normal((2, 3)).astype(np.float32))
    workspace.FeedBlob("b", np.zeros(2, np.float32))


def test_feed_and_fetch_copy_values():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert workspace.FeedBlob("a", a)
    a[0, 0] = 100
    got = workspace.FetchBlob("a")
    assert got[0, 0] == 0 and got.dtype == np.float32
    got[0, 1] = 50
    assert workspace.FetchBlob("a")[0, 1] == 1
    workspace.FeedBlob("s", "text")
    assert workspace.FetchBlob("s") == b"text"
    workspace.FeedBlob(core.BlobReference("ref"), np.ones(2))
    assert workspace.HasBlob("ref") and workspace.FetchBlob("ref").dtype == np.float64
    assert workspace.Blobs() == ["a", "ref", "s"]
    with pytest.raises(KeyError, match="Can't find blob: nope"):
        workspace.FetchBlob("nope")
    workspace.blobs["v"] = np.zeros(3, np.int32)
    assert "v" in workspace.blobs and workspace.blobs["v"].dtype == np.int32 and len(workspace.blobs) == 4


def test_switch_and_reset_workspaces(tmp_path):
    workspace.FeedBlob("x", np.ones(1))
    workspace.SwitchWorkspace("other", True)
    assert workspace.CurrentWorkspace() == "other" and not workspace.HasBlob("x")
    with pytest.raises(NetJitError, match="does not exist"):
        workspace.SwitchWorkspace("missing")
    workspace.SwitchWorkspace("default")
    assert workspace.HasBlob("x") and set(workspace.Workspaces()) == {"default", "other"}
    root = tmp_path / "newroot"
    assert workspace.ResetWorkspace(str(root))
    assert workspace.Blobs() == [] and workspace.RootFolder() == str(root) and root.is_dir()


def test_create_and_run_net():
    _feed_fc()
    net = _fc_net()
    assert workspace.CreateNet(net)
    with pytest.raises(NetJitError, match="already exists"):
        workspace.CreateNet(net)
    assert workspace.CreateNet(net, overwrite=True)
    assert workspace.RunNet(net.Name(), num_iter=3)
    assert workspace.RunNet(net)
    x, w = workspace.FetchBlob("X"), workspace.FetchBlob("W")
    np.testing.assert_allclose(workspace.FetchBlob("Z"), np.maximum(x @ w.T, 0), rtol=1e-5)
    with pytest.raises(NetJitError, match="does not exist"):
        workspace.RunNet("never_created")


def test_create_net_needs_inputs_and_creates_input_blobs():
    net = core.Net("needs_x")
    net.Relu("in_x", "out")
    with pytest.raises(OpError, match=r"op #0 \(Relu\).*'in_x' does not exist"):
        workspace.CreateNet(net)
    workspace.CreateNet(net, input_blobs=["in_x"])
    assert workspace.HasBlob("in_x") and workspace.HasBlob("out")


def test_failed_run_keeps_blobs_it_had_not_written():
    _feed_fc()
    workspace.FeedBlob("Z", np.full(2, 7.0, np.float32))
    net = _fc_net("breaks")
    workspace.CreateNet(net)
    workspace.FeedBlob("b", np.zeros(5, np.float32))  # wrong bias size: FC fails at run time
    with pytest.raises(OpError, match=r"net 'breaks' op #0 \(FC\).*bias"):
        workspace.RunNet("breaks")
    np.testing.assert_array_equal(workspace.FetchBlob("Z"), np.full(2, 7.0, np.float32))
    with pytest.raises(NetJitError, match="holds nothing yet"):
        workspace.FetchBlob("Y")  # created by CreateNet, never written by the failed run
    assert workspace.RunNet("breaks", allow_fail=True) is False


def test_run_net_once_and_operator_once():
    _feed_fc()
    assert workspace.RunNetOnce(_fc_net("once"))
    assert workspace.HasBlob("Z") and "once" not in workspace.Nets()
    assert workspace.RunOperatorOnce(core.CreateOperator("Relu", ["X"], ["R"]))
    np.testing.assert_array_equal(workspace.FetchBlob("R"), np.maximum(workspace.FetchBlob("X"), 0))


def test_run_plan_with_steps_and_stop_blob():
    workspace.FeedBlob("x", np.array([1.0, -2.0], np.float32))
    counter = {"runs": 0}

    def count(inputs, outputs):
        counter["runs"] += 1
        outputs[0].feed(np.array([counter["runs"] >= 3]))

    net = core.Net("plan_body")
    net.Relu("x", "y")
    stopper = core.Net("plan_stop")
    stopper.Python(count)([], ["stop"])
    step = core.execution_step("loop", [net, stopper], should_stop_blob="stop")
    plan = core.Plan("plan")
    plan.AddStep(step)
    assert workspace.RunPlan(plan)
    assert counter["runs"] == 3
    np.testing.assert_array_equal(workspace.FetchBlob("y"), [1.0, 0.0])
    fixed = core.execution_step("fixed", [stopper], num_iter=2)
    workspace.RunPlan(fixed)
    assert counter["runs"] == 5


def test_predictor_runs_init_once_and_predicts():
    rng = np.random.default_rng(1)
    init = caffe2_pb2.NetDef(name="init")
    w = rng.standard_normal((2, 3)).astype(np.float32)
    for name, value in (("W", w), ("b", np.ones(2, np.float32))):
        workspace.FeedBlob(name, value)
    predict = caffe2_pb2.NetDef(name="predict")
    predict.op.add().CopyFrom(core.CreateOperator("FC", ["data", "W", "b"], ["out"]))
    predict.external_input.extend(["data", "W", "b"])
    predict.external_output.append("out")
    p = workspace.Predictor(init, predict)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    (out,) = p.run([x])
    np.testing.assert_allclose(out, x @ w.T + 1, rtol=1e-5)
    (out2,) = p.run({"data": x[:1]})
    np.testing.assert_allclose(out2, out[:1], rtol=1e-6)
    assert not workspace.HasBlob("out"), "predictions stay in the predictor's child workspace"


def _conv_predict_net():
    net = caffe2_pb2.NetDef(name="convpredict")
    ops = [core.CreateOperator("Conv", ["data", "cw", "cb"], ["conv"], kernel=3, pad=1),
           core.CreateOperator("Relu", ["conv"], ["conv"]),
           core.CreateOperator("MaxPool", ["conv"], ["pool"], kernel=2, stride=2),
           core.CreateOperator("FC", ["pool", "fw", "fb"], ["logits"]),
           core.CreateOperator("Softmax", ["logits"], ["prob"])]
    net.op.extend(ops)
    net.external_input.extend(["data", "cw", "cb", "fw", "fb"])
    net.external_output.append("prob")
    return net


def test_compiled_predictor_keeps_intermediates_private_and_matches_reference():
    from netjit.bench import executor
    rng = np.random.default_rng(2)
    for name, shape in (("cw", (4, 2, 3, 3)), ("cb", (4,)), ("fw", (3, 4 * 3 * 3)), ("fb", (3,))):
        workspace.FeedBlob(name, rng.standard_normal(shape).astype(np.float32))
    init = caffe2_pb2.NetDef(name="init")
    with executor("compiled"):
        fast = workspace.Predictor(init, _conv_predict_net())
    with executor("reference"):
        slow = workspace.Predictor(init, _conv_predict_net())
    for batch in (5, 5, 1):                 # a repeat run and a new batch size (a new plan)
        x = rng.standard_normal((batch, 2, 6, 6)).astype(np.float32)
        (got,), (want,) = fast.run([x]), slow.run([x])
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    # The compiled predictor writes only its output: the intermediates live in its arena (their
    # blobs exist, created empty as Caffe2's CreateNet does, but hold nothing).
    assert isinstance(fast.ws.get("prob"), np.ndarray) and fast.ws.get("pool") is None
    assert isinstance(slow.ws.get("pool"), np.ndarray)


@pytest.mark.parametrize("executor_name", ["compiled", "reference"])
@pytest.mark.parametrize("make,message", [
    (lambda n: n.LearningRate(["it"], ["lr"], base_lr=0.1, policy="bogus"), "unknown learning rate policy"),
    (lambda n: n.LearningRate(["it"], ["lr"], base_lr=0.1, policy="step", stepsize=0), "stepsize > 0"),
    (lambda n: n.LearningRate(["it"], ["lr"], base_lr=0.1, policy="alter", active_period=0, inactive_period=0),
     "active_period"),
    (lambda n: n.ConstantFill([], ["c"], shape=[2], value=1.5, dtype=caffe2_pb2.TensorProto.INT32), "must be an int"),
    (lambda n: n.ConstantFill([], ["c"], shape=[2], value=300, dtype=caffe2_pb2.TensorProto.UINT8), "does not fit"),
])
def test_bad_argument_values_fail_at_create_net(executor_name, make, message):
    from netjit.bench import executor
    net = core.Net("badargs")
    make(net)
    workspace.FeedBlob("it", np.array([3], np.int64))
    with executor(executor_name), pytest.raises(OpError, match=message) as info:
        workspace.CreateNet(net)
    assert "badargs" in str(info.value) and "op #0" in str(info.value)
