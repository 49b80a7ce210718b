"""core.Plan/ExecutionStep and the control module: nested steps and their stop blobs, only_once,
create_workspace, reporters, and each control construct's iteration count, under the compiled and
the reference executor."""
import subprocess
import sys
from pathlib import Path

import pytest

from netjit import control, core, workspace
from netjit.compiler.ops import python_op
from netjit.runtime.errors import NetJitError, PickledCodeError


@pytest.fixture(params=["compiled", "reference"])
def executor(request, monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", request.param)
    return request.param


def _counter_nets(prefix):
    """init: count = 0, one = 1; body: count += 1."""
    init = core.Net(prefix + "_init")
    init.ConstantFill([], prefix + "_count", shape=[1], value=0.0)
    init.ConstantFill([], prefix + "_one", shape=[1], value=1.0)
    body = core.Net(prefix + "_body")
    body.Add([prefix + "_count", prefix + "_one"], prefix + "_count")
    return init, body


def _count(prefix):
    return float(workspace.FetchBlob(prefix + "_count")[0])


def _cond_net(prefix, op, limit):
    """A condition net: count <op> limit, its last external output."""
    net = core.Net(prefix + "_cond")
    lim = net.ConstantFill([], prefix + "_limit", shape=[1], value=float(limit))
    out = getattr(net, op)([prefix + "_count", lim], prefix + "_ok")
    net.AddExternalOutput(out)
    return net


def run(step):
    assert workspace.RunPlan(core.Plan(step))


def test_plan_with_nested_steps_num_iter_and_stop_blobs(executor):
    init, body = _counter_nets("p")
    inner = core.execution_step("inner", body, num_iter=3)
    check = core.Net("p_check")
    limit = check.ConstantFill([], "p_limit", shape=[1], value=7.0)
    check.GE(["p_count", limit], "p_stop")
    outer = core.execution_step("outer", [inner, core.execution_step("check", check)], should_stop_blob="p_stop")
    plan = core.Plan("nested")
    plan.AddStep(core.execution_step("init", init))
    plan.AddStep(outer)
    assert [n.name for n in plan.Proto().network] == [init.Name(), body.Name(), check.Name()]
    workspace.RunPlan(plan)
    # 3 per outer iteration, stop checked after the check step: 3, 6, 9.
    assert _count("p") == 9.0
    # The plan's nets are created in the workspace.
    assert {init.Name(), body.Name(), check.Name()} <= set(workspace.Nets())


def test_only_once_create_workspace_and_reporters(executor):
    init, body = _counter_nets("q")
    flag = core.Net("q_flag")
    flag.ConstantFill([], "q_never", shape=[], value=False, dtype=core.DataType.BOOL)
    once = core.execution_step("once", [flag, body], should_stop_blob="q_never", only_once=True)
    scratch = core.Net("q_scratch")
    scratch.ConstantFill([], "q_tmp", shape=[1], value=5.0)
    isolated = core.execution_step("isolated", scratch, create_workspace=True)
    report = core.Net("q_report")
    report.Add(["q_count", "q_one"], "q_reported")
    reporter = core.execution_step("reporter", report)
    reporter.RunEveryMillis(10 ** 6)
    run(core.execution_step("all", [core.execution_step("init", init), once, isolated, reporter]))
    assert _count("q") == 1.0
    assert not workspace.HasBlob("q_tmp")                     # it lived in the step's own workspace
    assert float(workspace.FetchBlob("q_reported")[0]) == 2.0  # reporters run once after their siblings


def test_step_rules_are_checked():
    n = core.Net("r_net")
    n.ConstantFill([], "r_x", shape=[1], value=1.0)
    with pytest.raises(ValueError, match="not both"):
        core.execution_step("both", n, num_iter=2, should_stop_blob="s")
    with pytest.raises(NetJitError, match="should_stop_blob 'missing' does not exist"):
        run(core.execution_step("stop_missing", n, should_stop_blob="missing"))
    step = core.ExecutionStep("uses_unknown")
    step.Proto().network.append("nowhere")
    with pytest.raises(NetJitError, match="uses net 'nowhere'"):
        workspace.RunPlan(step)
    assert core.to_execution_step(step) is step
    assert core.Plan(core.ExecutionStep("empty")).Proto().execution_step == []
    with core.NameScope("scope"):
        assert core.scoped_execution_step("s", n).Name() == "scope/s"


@pytest.mark.parametrize("name,make,want", [
    ("For", lambda body, p: control.For("f", body, 4), 4),
    ("While", lambda body, p: control.While("w", _cond_net(p, "LT", 3), body), 3),
    ("Until", lambda body, p: control.Until("u", _cond_net(p, "GE", 2), body), 2),
    ("DoWhile", lambda body, p: control.DoWhile("dw", _cond_net(p, "LT", 3), body), 3),
    ("DoUntil", lambda body, p: control.DoUntil("du", _cond_net(p, "GE", 5), body), 5),
    ("If-true", lambda body, p: control.If("i", _cond_net(p, "LT", 1), body), 1),
    ("If-false", lambda body, p: control.If("i", _cond_net(p, "GT", 1), body), 0),
    ("IfNot", lambda body, p: control.IfNot("n", _cond_net(p, "GT", 1), body), 1),
    ("Do", lambda body, p: control.Do("d", body, body), 2),
    ("DoParallel", lambda body, p: control.DoParallel("dp", body, body), 2),
])
def test_control_constructs_count(executor, name, make, want):
    prefix = "c_" + name.replace("-", "_")
    init, body = _counter_nets(prefix)
    run(control.Do("top", init, make(body, prefix)))
    assert _count(prefix) == want


def test_if_else_switch_and_conditions(executor):
    init, _ = _counter_nets("s")
    true_net = core.Net("s_true")
    true_net.ConstantFill([], "s_branch", shape=[1], value=1.0)
    false_net = core.Net("s_false")
    false_net.ConstantFill([], "s_branch", shape=[1], value=2.0)
    run(control.Do("s", init, control.If("pick", _cond_net("s", "GT", 0), true_net, false_net)))
    assert float(workspace.FetchBlob("s_branch")[0]) == 2.0

    bools = control.BoolNet(("s_yes", True), ("s_no", False))
    hits = {k: core.Net(f"s_hit_{k}") for k in ("yes", "no", "not_no")}
    marks = core.Net("s_marks")
    for k, net in hits.items():
        net.ConstantFill([], f"s_mark_{k}", shape=[1], value=1.0)
        marks.ConstantFill([], f"s_mark_{k}", shape=[1], value=0.0)
    run(control.Do("sw", bools, marks, control.Switch("sw", ("s_yes", hits["yes"]), ("s_no", hits["no"])),
                   control.SwitchNot("swn", ("s_no", hits["not_no"]))))
    assert [float(workspace.FetchBlob(f"s_mark_{k}")[0]) for k in ("yes", "no", "not_no")] == [1.0, 0.0, 1.0]

    a = core.Net("s_a")
    a.AddExternalOutput(a.ConstantFill([], "s_a_ok", shape=[], value=True, dtype=core.DataType.BOOL))
    b = core.Net("s_b")
    b.AddExternalOutput(b.ConstantFill([], "s_b_ok", shape=[], value=False, dtype=core.DataType.BOOL))
    both = control.MergeConditionNets("s_both", [a, b], "And")
    either = control.CombineConditions("s_either", [a, b], "Or")
    not_net, not_blob = control.NotNet(either)
    workspace.RunNetOnce(both)
    workspace.RunNetOnce(either)
    workspace.RunNetOnce(not_net)
    assert not bool(workspace.FetchBlob(str(control.GetConditionBlobFromNet(both))))
    assert bool(workspace.FetchBlob(str(control.GetConditionBlobFromNet(either))))
    assert not bool(workspace.FetchBlob(str(not_blob)))


def test_report_net_runs_at_the_end_of_its_step(executor):
    init, body = _counter_nets("rep")
    report = core.Net("rep_report")
    report.Copy("rep_count", "rep_seen")
    step = core.execution_step("reported", body, num_iter=4, report_net=report, report_interval=3600)
    run(control.Do("rep", init, step))
    assert _count("rep") == 4.0 and float(workspace.FetchBlob("rep_seen")[0]) == 4.0


def test_create_workspace_shares_the_parents_blobs(executor):
    init, body = _counter_nets("cw")
    scratch = core.Net("cw_scratch")
    scratch.Scale("cw_count", "cw_tmp", scale=2.0)
    scratch.Add(["cw_tmp", "cw_one"], "cw_count")   # an existing blob: written in the parent
    run(core.execution_step("all", [core.execution_step("init", init),
                                    core.execution_step("child", [body, scratch], create_workspace=True)]))
    assert _count("cw") == 3.0 and not workspace.HasBlob("cw_tmp")


def test_control_flow_benchmark_script_runs():
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(repo / "examples" / "benchmarks" / "control_flow.py"), "20"],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert "While iteration (us)" in lines[0] and [ln.split()[0] for ln in lines[1:]] == ["compiled", "reference"]
    assert all(float(v) > 0 for ln in lines[1:] for v in ln.split()[1:])


def test_run_plan_refuses_pickled_python_ops_in_nested_nets(monkeypatch):
    monkeypatch.setattr(python_op, "_allowed", None)
    monkeypatch.delenv("NETJIT_ALLOW_PICKLED_CODE", raising=False)
    inner = core.Net("consent_inner")
    inner.Proto().op.add().CopyFrom(core.CreateOperator("Python", ["x"], ["y"], pickled_builder=b"not-from-here"))
    outer = core.Net("consent_outer")
    outer.If(["c"], ["y"], then_net=inner.Proto())
    with pytest.raises(PickledCodeError, match=r"net 'consent_inner' op #0 \(Python\)"):
        workspace.RunPlan(core.Plan(core.execution_step("consent", outer)))
