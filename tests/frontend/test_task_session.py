"""task and session as Caffe2's net_builder tests use them: a Task built with net_builder ops, its
task_init/task_exit setup, final outputs fetched after LocalSession.run, TaskGroups over nodes,
private and global workspaces, SetupNets and report steps."""
import pytest

from netjit import core, workspace
from netjit.net_builder import ops
from netjit.session import LocalSession
from netjit.task import Node, SetupNets, Task, TaskGroup, WorkspaceType, final_output


@pytest.fixture(params=["compiled", "reference"])
def executor(request, monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", request.param)
    return request.param


def test_nested_loops_with_branches_in_a_task(executor):
    with Task() as task:
        total, large, small, tiny = (ops.Const(0) for _ in range(4))
        with ops.loop(10) as loop:
            outer = ops.Mul([loop.iter(), ops.Const(10)])
            with ops.loop(loop.iter()) as inner:
                val = ops.Add([outer, inner.iter()])
                with ops.If(ops.GE([val, ops.Const(80)])) as c:
                    ops.Add([large, val], [large])
                with c.Elif(ops.GE([val, ops.Const(50)])) as c:
                    ops.Add([small, val], [small])
                with c.Else():
                    ops.Add([tiny, val], [tiny])
                ops.Add([total, val], total)
        outs = [final_output(b) for b in (total, large, small, tiny)]
    want = [0, 0, 0, 0]
    for i in range(10):
        for j in range(i):
            v = 10 * i + j
            want[1 if v >= 80 else 2 if v >= 50 else 3] += v
            want[0] += v
    with LocalSession() as session:
        session.run(task)
        assert [int(o.fetch()) for o in outs] == want
    # A private run leaves only the outputs in the session's workspace.
    assert sorted(workspace.Blobs()) == sorted(str(b) for o in outs for b in o.names)


def test_task_init_and_exit_run_around_the_body(executor):
    with Task() as task:
        with ops.task_init():
            one = ops.Const(1)
        two = ops.Add([one, one])
        with ops.task_init():
            three = ops.Const(3)
        accum = ops.Add([two, three])
        with ops.task_exit():
            seven_1 = ops.Add([accum, one])   # runs after the body: accum is 6 by then
        six = ops.Add([accum, one])
        ops.Add([accum, one], [accum])
        seven_2 = ops.Add([accum, one])
        outs = [final_output(b) for b in (six, seven_1, seven_2)]
    LocalSession().run(task)
    assert [int(o.fetch()) for o in outs] == [6, 7, 7]


def test_task_group_over_nodes_global_workspace_and_setup_nets():
    init = core.Net("tg_init")
    init.ConstantFill([], "tg_base", shape=[1], value=10.0)
    step_a = core.Net("tg_a")
    step_a.Scale("tg_base", "tg_a_out", scale=2.0)
    step_a.AddAttribute(TaskGroup.LOCAL_SETUP, SetupNets([init]))
    step_b = core.Net("tg_b")
    step_b.Scale("tg_base", "tg_b_out", scale=3.0)
    report = core.Net("tg_report")
    report.ConstantFill([], "tg_reported", shape=[1], value=1.0)
    with TaskGroup(workspace_type=WorkspaceType.GLOBAL) as group:
        with Node("trainer"):
            Task(step=step_a, outputs=["tg_a_out"])
        with Node("reader"):
            Task(step=step_b)
        group.report_step(report, node="trainer", interval_ms=10 ** 6)
    assert group.used_nodes() == ["trainer", "reader"]
    LocalSession().run(group)
    # Global: every blob stays; one node here, so the setup net ran before both tasks.
    assert [float(workspace.FetchBlob(b)[0]) for b in ("tg_a_out", "tg_b_out", "tg_reported")] == [20.0, 30.0, 1.0]


def test_session_runs_nets_and_steps_and_checks_use():
    net = core.Net("sess_net")
    net.ConstantFill([], "sess_y", shape=[1], value=5.0)
    with LocalSession() as session:
        session.run(net, workspace_type=WorkspaceType.GLOBAL)
        assert float(workspace.FetchBlob("sess_y")[0]) == 5.0
        session.run(core.execution_step("sess_step", net), workspace_type=WorkspaceType.GLOBAL)
    assert not session.is_open()
    with pytest.raises(RuntimeError, match="closed"):
        session.run(net)
    task = Task(step=net)
    LocalSession().run(task)
    with pytest.raises(AssertionError, match="already been used"):
        task.add_output("sess_y")
    with pytest.raises(AssertionError, match="Session first"):
        Task(step=net, outputs=["sess_y"]).outputs()[0].fetch()


def test_reporters_and_local_setup_in_a_task_group(executor):
    # GLOBAL: the node's exit step reads the task's blobs (a PRIVATE task's would be gone by then).
    with TaskGroup(workspace_type=WorkspaceType.GLOBAL) as group:
        with Task():
            with ops.local_init():
                ops.Const(100, blob_out="lr_base")
            count = ops.Const(0)
            with ops.loop(3):
                ops.Add([count, ops.Const(1)], [count])
            with ops.task_reporter(interval_ms=10 ** 6):
                ops.Copy(count, "lr_seen_by_reporter")
            with ops.local_exit():
                ops.Add(["lr_base", count], "lr_total")
            seen = final_output("lr_seen_by_reporter")
            total = final_output("lr_total")
    LocalSession().run(group)
    # The reporter ran once after the body; the node's exit step after the task.
    assert int(seen.fetch()) == 3 and int(total.fetch()) == 103
