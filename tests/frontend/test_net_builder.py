"""NetBuilder and ops as the control-ops tutorial and Caffe2's net_builder tests use them: loops with
stop_if, step conditionals (If/Elif/Else), IfNet/Else/WhileNet/Condition with local blobs, stop
guards, task setup, the gradients through IfNet/WhileNet, and compiled == reference executor."""
import numpy as np
import pytest

from netjit import core, workspace
from netjit.core import Plan, to_execution_step
from netjit.net_builder import TASK_SETUP, NetBuilder, ops


def run_plan(nb):
    plan = Plan("test_plan")
    plan.AddStep(to_execution_step(nb))
    assert workspace.RunPlan(plan)


def fetch(blob):
    return workspace.FetchBlob(str(blob))


@pytest.fixture(params=["compiled", "reference"])
def executor(request, monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", request.param)
    return request.param


def test_counter_loop_with_stop_if_and_if(executor):
    with NetBuilder() as nb:
        c = ops.Const(5)
        d = ops.Const(0)
        with ops.loop():
            ops.stop_if(ops.LE([c, ops.Const(0)]))
            ops.Add([c, ops.Const(-1)], [c])
            with ops.If(ops.GE([c, ops.Const(3)])):
                ops.Add([d, ops.Const(10)], [d])
    run_plan(nb)
    # c goes 5 -> 0; d gains 10 while c (after the decrement) is 4 or 3.
    assert int(fetch(c).reshape(-1)[0]) == 0 and int(fetch(d).reshape(-1)[0]) == 20


def test_loop_with_iteration_count_and_blob_count(executor):
    with NetBuilder() as nb:
        total = ops.Const(0)
        with ops.loop(4) as loop:
            ops.Add([total, loop.iter()], [total])
        n = ops.Const(3)
        seen = ops.Const(0)
        with ops.loop(n):
            ops.Add([seen, ops.Const(1)], [seen])
    run_plan(nb)
    assert int(fetch(total).reshape(-1)[0]) == 0 + 1 + 2 + 3
    assert int(fetch(seen).reshape(-1)[0]) == 3


def test_step_if_elif_else_and_stop_guard(executor):
    with NetBuilder() as nb:
        x = ops.Const(2)
        picked = ops.Const(0)
        with ops.If(ops.LT([x, ops.Const(1)])) as branch:
            ops.Copy(ops.Const(1), [picked])
        with branch.Elif(ops.LT([x, ops.Const(3)])):
            ops.Copy(ops.Const(2), [picked])
        with branch.Else():
            ops.Copy(ops.Const(3), [picked])
        with ops.stop_guard() as stopped:
            ops.stop_if(ops.Const(True))
            ops.Copy(ops.Const(99), [picked])
        with ops.stop_guard() as ran:
            ops.stop_if(ops.Const(False))
    run_plan(nb)
    assert int(fetch(picked).reshape(-1)[0]) == 2
    assert bool(fetch(stopped.has_stopped()).reshape(-1)[0]) is True
    assert bool(fetch(ran.has_stopped()).reshape(-1)[0]) is False


def test_stop_ends_a_step_before_later_nets(executor):
    with NetBuilder() as nb:
        a = ops.Const(1)
        with ops.stop_guard():
            ops.Add([a, ops.Const(1)], [a])
            ops.stop()
            ops.Add([a, ops.Const(100)], [a])
    run_plan(nb)
    assert int(fetch(a).reshape(-1)[0]) == 2


@pytest.mark.parametrize("x,want", [(1.5, 2.0), (0.5, 1.0), (-1.0, 0.0)])
def test_if_net_else_with_nested_blocks_and_local_blob(executor, x, want):
    with NetBuilder() as nb:
        ops.Const(0.0, blob_out="zero")
        ops.Const(1.0, blob_out="one")
        ops.Const(2.0, blob_out="two")
        ops.Const(x, blob_out="x")
        ops.Const(0.0, blob_out="y")
        with ops.IfNet(ops.GT(["x", "zero"])):
            ops.Copy("x", "local_blob")
            with ops.IfNet(ops.LE(["local_blob", "one"])):
                ops.Copy("one", "y")
            with ops.Else():
                ops.Copy("two", "y")
        with ops.Else():
            ops.Copy("zero", "y")
    run_plan(nb)
    assert float(fetch("y").reshape(-1)[0]) == want
    assert not workspace.HasBlob("local_blob")


def test_while_net_with_condition(executor):
    with NetBuilder() as nb:
        ops.Const(0, blob_out="i")
        ops.Const(0, blob_out="y")
        with ops.WhileNet():
            with ops.Condition():
                ops.Add(["i", ops.Const(1)], ["i"])
                ops.LE(["i", ops.Const(7)])
            ops.Add(["i", "y"], ["y"])
    run_plan(nb)
    assert int(fetch("i").reshape(-1)[0]) == 8 and int(fetch("y").reshape(-1)[0]) == 28


def test_block_errors():
    with pytest.raises(AssertionError, match="stop condition"):
        with NetBuilder():
            with ops.loop():
                ops.Const(1)
    with pytest.raises(AssertionError, match="Else builder"):
        with NetBuilder():
            ops.Const(1.0, blob_out="a")
            with ops.Else():
                pass
    with pytest.raises(ValueError, match="reads blob 'nowhere'.*undefined"):
        with NetBuilder():
            with ops.IfNet(ops.Const(True)):
                ops.Copy("nowhere", "y")
    with pytest.raises(AttributeError, match="No active NetBuilder"):
        ops.Relu


def test_task_init_and_exit_attach_setup_steps():
    with NetBuilder() as nb:
        with ops.task_init():
            ops.Const(1.0, blob_out="initialised")
        with ops.task_exit():
            ops.Const(2.0, blob_out="finished")
        ops.Const(3.0, blob_out="body")
    step = to_execution_step(nb)
    setups = step.get_all_attributes(TASK_SETUP)
    assert len(setups) == 2
    init_steps = [s.setup(None) for s in setups if s.setup(None) is not None]
    exit_steps = [s.exit(None) for s in setups if s.exit(None) is not None]
    workspace.RunPlan(core.Plan(core.execution_step("task", init_steps + [step] + exit_steps)))
    assert [float(fetch(b).reshape(-1)[0]) for b in ("initialised", "body", "finished")] == [1.0, 3.0, 2.0]


def test_tutorial_if_and_while_gradients(executor):
    # z = y^2 if x > 0 else y^3 (y = 4), then the loop: x -> x^4, y -> y^2, z -> z^3.
    workspace.FeedBlob("x", np.array(0.5, dtype="float32"))
    with NetBuilder(_use_control_ops=True, initial_scope=["x"]) as nb:
        ops.Const(0.0, blob_out="zero")
        ops.Const(4.0, blob_out="y")
        ops.Const(0.0, blob_out="z")
        with ops.IfNet(ops.GT(["x", "zero"])):
            ops.Pow("y", "z", exponent=2.0)
        with ops.Else():
            ops.Pow("y", "z", exponent=3.0)
    assert len(nb.get()) == 1
    net = nb.get()[0]
    net.AddGradientOperators(["z"])
    workspace.RunNetOnce(net)
    assert (float(fetch("z")), float(fetch("y_grad"))) == (16.0, 8.0)
    workspace.FeedBlob("x", np.array(-0.5, dtype="float32"))
    workspace.RunNetOnce(net)
    assert (float(fetch("z")), float(fetch("y_grad"))) == (64.0, 48.0)

    with NetBuilder(_use_control_ops=True) as nb:
        ops.Copy(ops.Const(0), "i")
        ops.Copy(ops.Const(1), "one")
        ops.Copy(ops.Const(2), "two")
        ops.Copy(ops.Const(2.0), "x")
        ops.Copy(ops.Const(3.0), "y")
        ops.Copy(ops.Const(2.0), "z")
        with ops.WhileNet():
            with ops.Condition():
                ops.Add(["i", "one"], "i")
                ops.LE(["i", "two"])
            ops.Pow("x", "x", exponent=2.0)
            with ops.IfNet(ops.LT(["i", "two"])):
                ops.Pow("y", "y", exponent=2.0)
            with ops.Else():
                ops.Pow("z", "z", exponent=3.0)
        ops.Add(["x", "y"], "x_plus_y")
        ops.Add(["x_plus_y", "z"], "s")
    net = nb.get()[0]
    net.AddGradientOperators(["s"])
    workspace.RunNetOnce(net)
    got = {b: float(fetch(b).reshape(-1)[0]) for b in ("x", "x_grad", "y", "y_grad", "z", "z_grad")}
    # x0 = 2 -> x0^4; y0 = 3 -> y0^2; z0 = 2 -> z0^3; gradients 4 x0^3, 2 y0, 3 z0^2.
    assert got == {"x": 16.0, "x_grad": 32.0, "y": 9.0, "y_grad": 6.0, "z": 8.0, "z_grad": 12.0}


def test_python_op_and_explicit_nets_in_a_builder():
    seen = []

    def record(inputs, outputs):
        seen.append(float(inputs[0].data.reshape(-1)[0]))

    with NetBuilder() as nb:
        a = ops.Const(3.0)
        ops.Python(record)([a], [])
        extra = core.Net("nb_extra")
        extra.ConstantFill([], "nb_extra_out", shape=[1], value=4.0)
        ops.net(extra)
        with ops.loop(2):
            ops.Python(record)([a], [])
    run_plan(nb)
    assert seen == [3.0, 3.0, 3.0]
    assert float(fetch("nb_extra_out")[0]) == 4.0


def test_log_info_in_a_counted_loop_and_add_attribute(capsys):
    with NetBuilder() as nb:
        with ops.loop(3) as loop:
            ops.LogInfo("tick", loop.iter())
    run_plan(nb)
    lines = capsys.readouterr().out.splitlines()
    assert [ln.rsplit(": ", 1)[1] for ln in lines] == ["tick", "0", "tick", "1", "tick", "2"]
    net = core.Net("attributes")
    net.add_attribute("key", "value")
    assert net.get_attributes("key") == ["value"]


def _random_program(rng):
    """A NetBuilder program of nested WhileNet/IfNet blocks over a few float and int blobs."""
    floats, ints = ["f0", "f1", "f2"], ["k0", "k1"]

    def body(depth):
        for _ in range(int(rng.integers(1, 4))):
            kind = rng.choice(["arith", "if", "while"] if depth < 2 else ["arith"])
            if kind == "arith":
                a, b = rng.choice(floats, 2)
                op = rng.choice(["Add", "Mul", "Sub"])
                ops.Relu(getattr(ops, op)([str(a), str(b)]), str(rng.choice(floats)))
                ops.Add([str(rng.choice(ints)), "k_one"], str(rng.choice(ints)))
            elif kind == "if":
                with ops.IfNet(ops.GT([str(rng.choice(floats)), str(rng.choice(floats))])):
                    body(depth + 1)
                if rng.random() < 0.5:
                    with ops.Else():
                        body(depth + 1)
            else:
                counter = f"loop{depth}_{int(rng.integers(1 << 30))}"
                ops.Copy(ops.Const(0), counter)
                with ops.WhileNet():
                    with ops.Condition():
                        ops.Add([counter, "k_one"], counter)
                        ops.LE([counter, ops.Const(int(rng.integers(0, 4)))])
                    body(depth + 1)

    with NetBuilder(_use_control_ops=True) as nb:
        for name in floats:
            ops.Copy(ops.Const(np.array(rng.uniform(-1, 1), np.float32)), name)
        for name in ints:
            ops.Copy(ops.Const(0), name)
        ops.Copy(ops.Const(1), "k_one")
        body(0)
    return nb.get()[0], floats + ints


@pytest.mark.parametrize("seed", range(6))
def test_random_control_programs_compiled_equals_reference(seed, monkeypatch):
    net, blobs = _random_program(np.random.default_rng(seed))
    results = {}
    for executor in ("reference", "compiled"):
        monkeypatch.setenv("NETJIT_EXECUTOR", executor)
        workspace.ResetWorkspace()
        workspace.RunNetOnce(net)
        results[executor] = [workspace.FetchBlob(b) for b in blobs]
    for ref, comp in zip(results["reference"], results["compiled"]):
        np.testing.assert_array_equal(ref, comp)
