"""What control flow costs: one While iteration (a condition block and a body block, each a Do op
with its own workspace) and one If (a Do block per branch) per RunNet, compiled vs reference.

    python examples/benchmarks/control_flow.py [ITERATIONS]

Prints a table; the numbers depend on the machine and its load (see RESULTS.md for measured ones).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

ITERATIONS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000


def measure() -> tuple[float, float]:
    """(us per While iteration, us per RunNet of a net holding one If) under this process's executor."""
    from caffe2.python import workspace
    from caffe2.python.net_builder import NetBuilder, ops

    with NetBuilder(_use_control_ops=True) as nb:
        ops.Copy(ops.Const(0), "i")
        ops.Copy(ops.Const(ITERATIONS), "n")
        ops.Copy(ops.Const(1), "one")
        ops.Copy(ops.Const(np.zeros((64, 64), np.float32)), "acc")
        ops.Copy(ops.Const(np.full((64, 64), 0.001, np.float32)), "w")
        with ops.WhileNet():
            with ops.Condition():
                ops.Add(["i", "one"], "i")
                ops.LE(["i", "n"])
            ops.Mul(["acc", "w"], "t")
            ops.Relu("t", "t")
            ops.Add(["acc", "t"], "acc")
    loop = nb.get()[0]
    workspace.CreateNet(loop)
    workspace.RunNet(loop.Name())       # plans and kernels are made on the first run
    start = time.perf_counter()
    workspace.RunNet(loop.Name())
    per_iteration = (time.perf_counter() - start) / ITERATIONS * 1e6

    workspace.FeedBlob("x", np.ones((64, 64), np.float32))
    workspace.FeedBlob("c", np.array(True))
    with NetBuilder(_use_control_ops=True, initial_scope=["x", "c"]) as nb:
        ops.Copy(ops.Const(np.zeros((64, 64), np.float32)), "y")
        with ops.IfNet("c"):
            ops.Mul(["x", "x"], "y")
        with ops.Else():
            ops.Relu("x", "y")
    branch = nb.get()[0]
    workspace.CreateNet(branch)
    workspace.RunNet(branch.Name())
    start = time.perf_counter()
    workspace.RunNet(branch.Name(), num_iter=ITERATIONS)
    per_run = (time.perf_counter() - start) / ITERATIONS * 1e6
    return per_iteration, per_run


if __name__ == "__main__":
    if os.environ.get("_CONTROL_FLOW_CHILD"):
        print(*measure())
        sys.exit(0)
    rows = []
    for executor in ("compiled", "reference"):
        env = dict(os.environ, NETJIT_EXECUTOR=executor, _CONTROL_FLOW_CHILD="1")
        out = subprocess.run([sys.executable, __file__, str(ITERATIONS)], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
        rows.append((executor, float(out[-2]), float(out[-1])))
    print(f"{'executor':10s} {'While iteration (us)':>21s} {'RunNet with If (us)':>20s}")
    for executor, loop_us, if_us in rows:
        print(f"{executor:10s} {loop_us:21.1f} {if_us:20.1f}")
