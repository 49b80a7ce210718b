"""Caffe2 "Control Ops" tutorial, as a script: branches and loops built with NetBuilder (If/Else
and While operators), the same with plain nets and control_ops_util, a counter loop made of
execution steps (ops.loop + stop_if), and gradients through If and While.

    python examples/tutorials/control_ops.py

Every net below runs through netjit's compiled executor, the sub-nets inside If/While included
(``NETJIT_EXECUTOR=reference`` runs the numpy references instead; the printed values are the same).
"""
from __future__ import annotations

import numpy as np
from caffe2.python import workspace
from caffe2.python.control_ops_util import add_if_op, add_while_op
from caffe2.python.core import Plan, to_execution_step
from caffe2.python.model_helper import ModelHelper
from caffe2.python.net_builder import NetBuilder, ops


def run_builder(name: str, nb: NetBuilder) -> "workspace.C.Workspace":
    """Run a NetBuilder's step as a plan in a fresh workspace; return the workspace."""
    plan = Plan(name)
    plan.AddStep(to_execution_step(nb))
    ws = workspace.C.Workspace()
    ws.run(plan)
    return ws


# ============================================================== Branches with NetBuilder
# if x > 0: y = 1 else: y = 0. ops.IfNet takes the condition blob; ops.Else must follow it directly.
with NetBuilder() as nb:
    ops.Const(0.0, blob_out="zero")
    ops.Const(1.0, blob_out="one")
    ops.Const(0.5, blob_out="x")
    ops.Const(0.0, blob_out="y")
    with ops.IfNet(ops.GT(["x", "zero"])):
        ops.Copy("one", "y")
    with ops.Else():
        ops.Copy("zero", "y")
ws = run_builder("if_net_test", nb)
print("if/else: x = {}, y = {}".format(ws.blobs["x"].fetch(), ws.blobs["y"].fetch()))

# Blocks have scopes: a blob first written inside a block is local to it and gone afterwards; blobs
# defined outside may be read and updated. Here y ends up 2.0 and local_blob never reaches the workspace.
with NetBuilder() as nb:
    ops.Const(0.0, blob_out="zero")
    ops.Const(1.0, blob_out="one")
    ops.Const(2.0, blob_out="two")
    ops.Const(1.5, blob_out="x")
    ops.Const(0.0, blob_out="y")
    with ops.IfNet(ops.GT(["x", "zero"])):
        ops.Copy("x", "local_blob")
        with ops.IfNet(ops.LE(["local_blob", "one"])):
            ops.Copy("one", "y")
        with ops.Else():
            ops.Copy("two", "y")
    with ops.Else():
        ops.Copy("zero", "y")
ws = run_builder("if_net_test_2", nb)
print("nested if: y = {}, local_blob in workspace: {}".format(ws.blobs["y"].fetch(), "local_blob" in ws.blobs))
assert "local_blob" not in ws.blobs

# =========================================================== Branches with plain nets
# Without NetBuilder's scopes we say which blobs are shared with the branches (the rest are local).
model = ModelHelper(name="test_if_model")
for name, value in (("zero", 0.0), ("one", 1.0), ("x", 0.5), ("y", 0.0)):
    model.param_init_net.ConstantFill([], [name], shape=[1], value=value)
model.param_init_net.GT(["x", "zero"], "cond")
then_model = ModelHelper(name="then_test_model")
then_model.net.Copy("one", "y")
else_model = ModelHelper(name="else_test_model")
else_model.net.Copy("zero", "y")
add_if_op(model.net, "cond", ["x", "y", "zero", "one"], then_model.net, else_model.net)
workspace.RunNetOnce(model.param_init_net)
workspace.RunNetOnce(model.net)
print("plain nets if: ops {} -> y = {}".format([op.type for op in model.net.Proto().op], workspace.FetchBlob("y")))

# ================================================================= Loops with NetBuilder
# i = 0; y = 0; while (++i <= 7): y += i. ops.Condition runs before every iteration; its last op's
# output is the condition.
with NetBuilder() as nb:
    ops.Const(0, blob_out="i")
    ops.Const(0, blob_out="y")
    with ops.WhileNet():
        with ops.Condition():
            ops.Add(["i", ops.Const(1)], ["i"])
            ops.LE(["i", ops.Const(7)])
        ops.Add(["i", "y"], ["y"])
ws = run_builder("while_net_test", nb)
print("while: i = {}, y = {}".format(ws.blobs["i"].fetch(), ws.blobs["y"].fetch()))

# The same loop from plain nets.
model = ModelHelper(name="test_while_model")
for name, value in (("i", 0), ("one", 1), ("seven", 7), ("y", 0)):
    model.param_init_net.ConstantFill([], [name], shape=[1], value=value)
loop_model = ModelHelper(name="loop_test_model")
loop_model.net.Add(["i", "y"], ["y"])
cond_model = ModelHelper(name="cond_test_model")
cond_model.net.Add(["i", "one"], "i")
cond_model.net.LE(["i", "seven"], "cond")
# "cond" is not among the shared blobs, so add_while_op initialises it (False) before the While.
add_while_op(model.net, "cond", ["i", "one", "seven", "y"], loop_model.net, cond_model.net)
workspace.ResetWorkspace()
workspace.RunNetOnce(model.param_init_net)
workspace.RunNetOnce(model.net)
print("plain nets while: i = {}, y = {}".format(workspace.FetchBlob("i"), workspace.FetchBlob("y")))

# A loop made of execution steps: ops.loop repeats its nets until stop_if fires; ops.If runs a block
# once when its condition holds. c counts down from 5; d gains 10 while c is 4 or 3.
with NetBuilder() as nb:
    c = ops.Const(5)
    d = ops.Const(0)
    with ops.loop():
        ops.stop_if(ops.LE([c, ops.Const(0)]))
        ops.Add([c, ops.Const(-1)], [c])
        with ops.If(ops.GE([c, ops.Const(3)])):
            ops.Add([d, ops.Const(10)], [d])
ws = run_builder("counter_loop", nb)
print("step loop: c = {}, d = {}".format(ws.blobs[str(c)].fetch(), ws.blobs[str(d)].fetch()))

# ========================================================================= Gradients
# if x > 0: z = y^2 else: z = y^3, with y = 4. _use_control_ops=True builds one net (If ops rather
# than execution steps), which AddGradientOperators can differentiate.
workspace.ResetWorkspace()
workspace.FeedBlob("x", np.array(0.5, dtype="float32"))
with NetBuilder(_use_control_ops=True, initial_scope=["x"]) as nb:
    ops.Const(0.0, blob_out="zero")
    ops.Const(4.0, blob_out="y")
    ops.Const(0.0, blob_out="z")
    with ops.IfNet(ops.GT(["x", "zero"])):
        ops.Pow("y", "z", exponent=2.0)
    with ops.Else():
        ops.Pow("y", "z", exponent=3.0)
assert len(nb.get()) == 1, "expected a single net"
net = nb.get()[0]
net.AddGradientOperators(["z"])
for x in (0.5, -0.5):
    workspace.FeedBlob("x", np.array(x, dtype="float32"))
    workspace.RunNetOnce(net)
    print("if gradient: x = {}, z = {}, y_grad = {}".format(x, workspace.FetchBlob("z"), workspace.FetchBlob("y_grad")))

# The loop: x = x^2 three times, y = y^2 on the first two passes, z = z^3 on the last; s = x + y + z.
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
for blob in ("x", "x_grad", "y", "y_grad", "z", "z_grad"):
    print("while gradient: {} = {}".format(blob, workspace.FetchBlob(blob)))
