"""Control-flow ops (If, While, Do, CreateScope/HasScope), counters, comparisons and logic: results on
hand-checked values, compiled runs against the reference executor, the Do workspace rules, errors
that name the op and blob, and If/While gradients against central differences."""
import re

import warnings

import numpy as np
import pytest

from netjit import core, workspace
from netjit.compiler.runner import make_runner
from netjit.control_ops_util import add_if_op, add_while_op
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_op
from netjit.runtime.errors import OpError
from netjit.runtime.workspace import Workspace
from tests.ops.harness import check_infer, run_op

EXECUTORS = ("reference", "compiled")


def _net(name, *ops, external_output=()):
    net = caffe2_pb2.NetDef(name=name)
    net.op.extend(ops)
    net.external_output.extend(external_output)
    return net


def _run(net, feeds, executor, fetch):
    ws = Workspace(f"t_{executor}")
    for k, v in feeds.items():
        ws.feed(k, v)
    make_runner(net, ws, executor=executor).run()
    return [ws.get(b) for b in fetch], ws


# ---------------------------------------------------------------------------------------------
# Comparisons and logic
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op_type,fn", [("EQ", np.equal), ("NE", np.not_equal), ("LT", np.less),
                                        ("LE", np.less_equal), ("GT", np.greater), ("GE", np.greater_equal)])
def test_comparisons_match_numpy_and_infer(op_type, fn):
    a = np.array([[1.0, 2.0, 3.0], [4.0, 2.0, 0.0]], np.float32)
    b = np.array([2.0, 2.0, 1.0], np.float32)
    (out,) = check_infer(op_type, [a, b])
    np.testing.assert_array_equal(out, fn(a, b))
    assert out.dtype == np.bool_
    # Legacy broadcast of a scalar B, and ints.
    (out,) = run_op(op_type, [np.arange(4, dtype=np.int32), np.array([2], np.int32)], broadcast=1)
    np.testing.assert_array_equal(out, fn(np.arange(4), 2))


@pytest.mark.parametrize("op_type,fn", [("And", np.logical_and), ("Or", np.logical_or),
                                        ("Xor", np.logical_xor)])
def test_logic_ops(op_type, fn):
    a = np.array([True, True, False, False])
    b = np.array([True, False, True, False])
    (out,) = check_infer(op_type, [a, b])
    np.testing.assert_array_equal(out, fn(a, b))
    (out,) = check_infer("Not", [a])
    np.testing.assert_array_equal(out, ~a)


def test_logic_ops_reject_non_bool_and_mixed_types():
    with pytest.raises(OpError, match="bool tensor.*in0"):
        run_op("And", [np.ones(2, np.float32), np.ones(2, np.float32)])
    with pytest.raises(OpError, match="same type"):
        run_op("GT", [np.ones(2, np.float32), np.ones(2, np.int32)])


def test_comparison_chain_compiled_equals_reference():
    net = _net("cmp", make_op("GT", ["x", "zero"], ["pos"], broadcast=1),
               make_op("LE", ["x", "one"], ["small"], broadcast=1),
               make_op("And", ["pos", "small"], ["both"]), make_op("Not", ["both"], ["neither"]),
               make_op("Xor", ["pos", "neither"], ["out"]))
    rng = np.random.default_rng(3)
    feeds = {"x": rng.standard_normal((4, 5)).astype(np.float32), "zero": np.zeros(1, np.float32),
             "one": np.ones(1, np.float32)}
    ref, _ = _run(net, feeds, "reference", ["both", "out"])
    comp, _ = _run(net, feeds, "compiled", ["both", "out"])
    for r, c in zip(ref, comp):
        np.testing.assert_array_equal(r, c)
    x = feeds["x"]
    np.testing.assert_array_equal(ref[0], (x > 0) & (x <= 1))


# ---------------------------------------------------------------------------------------------
# If / While
# ---------------------------------------------------------------------------------------------
def _if_net(with_else=True):
    then_net = _net("then", make_op("Mul", ["x", "x"], ["y"]))
    else_net = _net("else", make_op("Scale", ["x"], ["y"], scale=3.0))
    args = {"then_net": then_net}
    if with_else:
        args["else_net"] = else_net
    return _net("if_outer", make_op("GT", ["x", "zero"], ["c"], broadcast=1),
                make_op("If", ["c", "x"], ["y"], **args), make_op("Relu", ["y"], ["r"]))


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("x,want", [(2.0, 4.0), (-2.0, -6.0)])
def test_if_picks_branch(executor, x, want):
    feeds = {"x": np.array([x], np.float32), "zero": np.zeros(1, np.float32), "y": np.zeros(1, np.float32)}
    (y, r), _ = _run(_if_net(), feeds, executor, ["y", "r"])
    np.testing.assert_allclose(y, [want])
    np.testing.assert_allclose(r, [max(want, 0.0)])


@pytest.mark.parametrize("executor", EXECUTORS)
def test_if_without_else_leaves_outputs(executor):
    feeds = {"x": np.array([-1.0], np.float32), "zero": np.zeros(1, np.float32), "y": np.array([7.0], np.float32)}
    (y,), _ = _run(_if_net(with_else=False), feeds, executor, ["y"])
    np.testing.assert_allclose(y, [7.0])


@pytest.mark.parametrize("executor", EXECUTORS)
def test_while_with_cond_net_counts(executor):
    # i = 0; s = 0; while (i < 5): s += i; i += 1  (the condition net recomputes c each time)
    cond_net = _net("cond", make_op("LT", ["i", "five"], ["c"]))
    loop_net = _net("body", make_op("Add", ["s", "i"], ["s"]), make_op("Add", ["i", "one"], ["i"]))
    net = _net("while_outer", make_op("While", ["c", "i", "s", "one", "five"], ["i", "s"],
                                      loop_net=loop_net, cond_net=cond_net))
    feeds = {"i": np.array(0, np.int64), "s": np.array(0, np.int64), "one": np.array(1, np.int64),
             "five": np.array(5, np.int64), "c": np.array(True)}
    (i, s), _ = _run(net, feeds, executor, ["i", "s"])
    assert int(i) == 5 and int(s) == 10


def test_condition_must_be_a_bool_scalar():
    net = _net("bad_if", make_op("If", ["c"], [], then_net=_net("t")))
    with pytest.raises(OpError, match=r"op #0 \(If\).*bool tensor.*\[blob 'c'\]"):
        _run(net, {"c": np.array([1.0], np.float32)}, "reference", [])
    with pytest.raises(OpError, match="single-value tensor"):
        _run(net, {"c": np.array([True, False])}, "compiled", [])


def test_if_needs_then_net():
    net = _net("no_then", make_op("If", ["c"], []))
    with pytest.raises(OpError, match="then_net.*required"):
        _run(net, {"c": np.array(True)}, "reference", [])


def test_sub_net_errors_name_the_inner_op():
    then_net = _net("failing_then", make_op("Relu", ["missing"], ["y"]))
    net = _net("outer", make_op("If", ["c"], ["y"], then_net=then_net))
    with pytest.raises(OpError, match="failing_then.*missing"):
        _run(net, {"c": np.array(True)}, "compiled", [])


# ---------------------------------------------------------------------------------------------
# Do and the workspace stack
# ---------------------------------------------------------------------------------------------
def _do_net(copy=False):
    # inner names a/b bound to outer x (input) and y (output); t stays local to the Do workspace.
    sub = _net("do_sub", make_op("Scale", ["a"], ["t"], scale=2.0), make_op("Add", ["t", "a"], ["b"]))
    args = dict(net=sub, inner_blobs=["a", "b"], outer_blobs_idx=[0, 1])
    if copy:
        args["copy_external_blobs"] = True
    return _net("do_outer", make_op("CreateScope", [], ["ws"]), make_op("Do", ["x", "ws"], ["y", "ws"], **args),
                make_op("HasScope", ["ws"], ["live"]))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_do_binds_outer_blobs_and_keeps_locals_inside(executor):
    feeds = {"x": np.array([1.0, 2.0], np.float32), "y": np.zeros(2, np.float32)}
    (y, live), ws = _run(_do_net(), feeds, executor, ["y", "live"])
    np.testing.assert_allclose(y, [3.0, 6.0])
    assert bool(live) and not ws.has("t") and not ws.has("a")
    stack = ws.get("ws")
    inner = stack.workspaces[0]
    np.testing.assert_allclose(inner.get("t"), [2.0, 4.0])   # the forward local blob stays in its workspace
    assert inner.get("b") is ws.get("y")                      # bound: the same blob as the outer one


def test_do_copy_external_blobs_snapshots_and_stack_reuse():
    ws = Workspace("copy")
    ws.feed("x", np.array([1.0], np.float32))
    ws.feed("y", np.zeros(1, np.float32))
    runner = make_runner(_do_net(copy=True), ws, executor="reference")
    runner.run()
    stack = ws.get("ws")
    ws.feed("x", np.array([5.0], np.float32))
    np.testing.assert_allclose(stack.workspaces[0].get("a"), [1.0])   # a copy, not the outer blob now
    runner.run()      # CreateScope clears the stack; its workspace is reused and rebound
    assert len(stack.workspaces) == 1 and stack.top == 0
    np.testing.assert_allclose(ws.get("y"), [15.0])


def test_do_rejects_bad_bindings_and_gradient_pop_of_empty_stack():
    sub = _net("s", make_op("Copy", ["a"], ["b"]))
    bad = _net("bad", make_op("CreateScope", [], ["ws"]),
               make_op("Do", ["x", "ws"], ["y", "ws"], net=sub, inner_blobs=["a"], outer_blobs_idx=[0]))
    with pytest.raises(OpError, match=r"\(Do\).*unbound: \['y'\]"):
        _run(bad, {"x": np.ones(1, np.float32)}, "reference", [])
    pop = make_op("Do", ["x", "ws"], ["y", "ws"], net=sub, inner_blobs=["a", "b"], outer_blobs_idx=[0, 1])
    pop.is_gradient_op = True
    with pytest.raises(OpError, match="no forward workspace"):
        _run(_net("pop", make_op("CreateScope", [], ["ws"]), pop), {"x": np.ones(1, np.float32)}, "reference", [])


def test_counter_ops():
    net = _net("counters", make_op("CreateCounter", [], ["c"], init_count=2),
               make_op("CountDown", ["c"], ["d1"]), make_op("CountDown", ["c"], ["d2"]),
               make_op("CountDown", ["c"], ["d3"]), make_op("CountUp", ["c"], ["prev"]),
               make_op("RetrieveCount", ["c"], ["now"]), make_op("CheckCounterDone", ["c"], ["done"]),
               make_op("ResetCounter", ["c"], ["old"], init_count=7), make_op("RetrieveCount", ["c"], ["after"]))
    for executor in EXECUTORS:
        vals, _ = _run(net, {}, executor, ["d1", "d2", "d3", "prev", "now", "done", "old", "after"])
        assert [bool(v) for v in vals[:3]] == [False, False, True]
        assert [int(v) for v in vals[3:5]] == [0, 1] and not bool(vals[5])
        assert int(vals[6]) == 1 and int(vals[7]) == 7


# ---------------------------------------------------------------------------------------------
# Gradients, checked against central differences
# ---------------------------------------------------------------------------------------------
def _numeric_grad(f, x, eps=1e-3):
    g = np.zeros_like(x, dtype=np.float64)
    for j in range(x.size):
        xp, xm = x.copy(), x.copy()
        xp.reshape(-1)[j] += eps
        xm.reshape(-1)[j] -= eps
        g.reshape(-1)[j] = (f(xp) - f(xm)) / (2 * eps)
    return g


def _if_model():
    """y = x*x*w if c else x*w + w; loss = mean(y * dy): built with add_if_op, differentiated."""
    net = core.Net("if_grad")
    then_net = core.Net("if_grad_then")
    then_net.Mul(["x", "x"], "x2")
    then_net.Mul(["x2", "w"], "y")
    else_net = core.Net("if_grad_else")
    else_net.Mul(["x", "w"], "xw")
    else_net.Add(["xw", "w"], "y")
    add_if_op(net, "c", {"c", "x", "w", "y"}, then_net, else_net)
    net.Mul(["y", "dy"], "prod")
    net.AveragedLoss("prod", "loss")
    net.AddGradientOperators(["loss"])
    return net


@pytest.mark.parametrize("cond", [True, False])
@pytest.mark.parametrize("executor", EXECUTORS)
def test_if_gradient_matches_finite_differences(cond, executor, monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", executor)
    rng = np.random.default_rng(7)
    x = rng.standard_normal(4).astype(np.float64)
    w = rng.standard_normal(4).astype(np.float64)
    dy = rng.standard_normal(4).astype(np.float64)
    net = _if_model()
    assert [op.type for op in net.Proto().op].count("If") == 2
    grad_if = [op for op in net.Proto().op if op.type == "If"][1]
    assert grad_if.is_gradient_op and {a.name for a in grad_if.arg} == {"then_net", "else_net"}

    def loss(x_value, w_value):
        workspace.FeedBlob("x", x_value)
        workspace.FeedBlob("w", w_value)
        workspace.FeedBlob("y", np.zeros(4))
        workspace.FeedBlob("c", np.array(cond))
        workspace.FeedBlob("dy", dy)
        workspace.RunNetOnce(net)
        return float(workspace.FetchBlob("loss"))

    loss(x, w)
    gx, gw = workspace.FetchBlob("x_grad"), workspace.FetchBlob("w_grad")
    np.testing.assert_allclose(gx, _numeric_grad(lambda v: loss(v, w), x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gw, _numeric_grad(lambda v: loss(x, v), w), rtol=1e-5, atol=1e-6)


def test_while_gradient_matches_finite_differences():
    # x <- x ** 2, three times (i counts 1..3), then loss = mean(x * dx): d/dx0 = 8 x0^7 dx / n.
    net = core.Net("while_grad")
    cond_net = core.Net("while_grad_cond")
    cond_net.Add(["i", "one"], "i")
    cond_net.LE(["i", "three"], "go")
    body = core.Net("while_grad_body")
    body.Pow("x", "x", exponent=2.0)
    add_while_op(net, "go", {"i", "one", "three", "x"}, body, cond_net)
    net.Mul(["x", "dx"], "prod")
    net.AveragedLoss("prod", "loss")
    net.AddGradientOperators(["loss"])
    types = [op.type for op in net.Proto().op]
    assert types.count("While") == 2 and "HasScope" in types
    rng = np.random.default_rng(11)
    x0 = rng.uniform(0.5, 1.2, 3)
    dx = rng.standard_normal(3)

    def loss(x_value):
        for name, value in (("x", x_value), ("dx", dx), ("i", np.array(0, np.int64)),
                            ("one", np.array(1, np.int64)), ("three", np.array(3, np.int64))):
            workspace.FeedBlob(name, value)
        workspace.RunNetOnce(net)
        return float(workspace.FetchBlob("loss"))

    loss(x0)
    np.testing.assert_allclose(workspace.FetchBlob("x"), x0 ** 8)
    gx = workspace.FetchBlob("x_grad")
    np.testing.assert_allclose(gx, 8 * x0 ** 7 * dx / 3, rtol=1e-6)
    np.testing.assert_allclose(gx, _numeric_grad(loss, x0, eps=1e-5), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_while_gradient_sums_over_iterations_for_read_only_inputs(executor, monkeypatch):
    # acc += x * w, three times: d/dw = 3 x dacc, d/dx = 3 w dacc (x and w are only read by the body).
    monkeypatch.setenv("NETJIT_EXECUTOR", executor)
    net = core.Net("while_sum")
    cond_net = core.Net("while_sum_cond")
    cond_net.Add(["i", "one"], "i")
    cond_net.LE(["i", "three"], "go")
    body = core.Net("while_sum_body")
    body.Mul(["x", "w"], "t")
    body.Add(["acc", "t"], "acc")
    add_while_op(net, "go", {"i", "one", "three", "x", "w", "acc"}, body, cond_net)
    net.Mul(["acc", "dacc"], "prod")
    net.AveragedLoss("prod", "loss")
    net.AddGradientOperators(["loss"])
    rng = np.random.default_rng(5)
    x, w, dacc = (rng.standard_normal(3) for _ in range(3))

    def loss(x_value, w_value):
        for name, value in (("x", x_value), ("w", w_value), ("acc", np.zeros(3)), ("dacc", dacc),
                            ("i", np.array(0, np.int64)), ("one", np.array(1, np.int64)),
                            ("three", np.array(3, np.int64))):
            workspace.FeedBlob(name, value)
        workspace.RunNetOnce(net)
        return float(workspace.FetchBlob("loss"))

    loss(x, w)
    gx, gw = workspace.FetchBlob("x_grad"), workspace.FetchBlob("w_grad")
    np.testing.assert_allclose(gw, 3 * x * dacc / 3, rtol=1e-6)
    np.testing.assert_allclose(gx, _numeric_grad(lambda v: loss(v, w), x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gw, _numeric_grad(lambda v: loss(x, v), w), rtol=1e-5, atol=1e-6)


def test_sub_nets_stay_compiled_inside_compiled_nets():
    then_net = _net("fused_then", make_op("Mul", ["x", "x"], ["t"]), make_op("Relu", ["t"], ["u"]),
                    make_op("Scale", ["u"], ["y"], scale=0.5))
    outer = _net("compiled_outer", make_op("If", ["c", "x"], ["y"], then_net=then_net),
                 make_op("Sigmoid", ["y"], ["s"]))
    workspace.FeedBlob("c", np.array(True))
    workspace.FeedBlob("x", np.arange(6, dtype=np.float32))
    workspace.CreateNet(outer)
    workspace.RunNet("compiled_outer")
    np.testing.assert_allclose(workspace.FetchBlob("y"), np.arange(6) ** 2 * 0.5)
    outer_runner = workspace._ws().nets["compiled_outer"]
    assert outer_runner.executor == "compiled"
    ((_, sub),) = outer_runner.contexts[0].state["runners"].values()   # the If op's context (op #0)
    assert sub.executor == "compiled"
    assert re.search(r"\b[1-9]\d* fused groups", sub.compiled.explain(sources=False))
    # The reference executor keeps sub-nets on the references.
    ref = make_runner(outer, workspace._ws(), executor="reference")
    ref.run()
    ((_, ref_sub),) = ref.plan.steps[0].ctx.state["runners"].values()
    assert ref_sub.executor == "reference"


@pytest.mark.parametrize("cond,expected", [(True, [2.0, 0.0, 4.0]), (False, [3.0, 0.0, 6.0])])
def test_compiled_if_without_declared_outputs_ends_its_segment(cond, expected):
    """An If that declares no outputs still writes through its sub-nets: the ops after it (fused with
    the ones before it otherwise) must see those writes, under both executors."""
    then_net = _net("undeclared_then", make_op("Scale", ["a"], ["b"], scale=2.0))
    else_net = _net("undeclared_else", make_op("Scale", ["a"], ["b"], scale=3.0))
    net = _net("undeclared", make_op("Relu", ["x"], ["a"]),
               make_op("If", ["c"], [], then_net=then_net, else_net=else_net),
               make_op("Relu", ["b"], ["out"]))
    feeds = {"c": np.array(cond), "x": np.array([1.0, -1.0, 2.0], np.float32), "b": np.zeros(3, np.float32)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for executor in ("compiled", "reference"):
            (out,), _ = _run(net, feeds, executor, ["out"])
            np.testing.assert_array_equal(out, np.array(expected, np.float32))
