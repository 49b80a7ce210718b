"""A training net with Allreduce ops still fuses and plans buffers around them (one process: MPI's
singleton world of size 1, where Allreduce leaves the gradient as it is). The check runs in a child
process, so the test session itself never initialises MPI."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import netjit
from caffe2.python import brew, model_helper, workspace

from tests.mpi.launch import REPO

pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install netjit[mpi])")


def _train_net():
    m = model_helper.ModelHelper("allreduce_train")
    h = brew.fc(m, "x", "h", dim_in=8, dim_out=16)
    h = brew.relu(m, h, h)
    p = brew.fc(m, h, "p", dim_in=16, dim_out=4)
    _, loss = m.net.SoftmaxWithLoss([p, "label"], ["sm", "loss"])
    m.AddGradientOperators([loss])
    m.param_init_net.CreateCommonWorld([], "cw", engine="MPI")
    first_allreduce = len(m.net.Proto().op)
    for prm in m.params:
        g = m.param_to_grad[prm]
        m.net.Allreduce(["cw", g], [g], engine="MPI")
    m.param_init_net.ConstantFill([], "lr", shape=[1], value=-0.1)
    m.param_init_net.ConstantFill([], "one", shape=[1], value=1.0)
    for prm in m.params:
        m.net.WeightedSum([prm, "one", m.param_to_grad[prm], "lr"], prm)
    return m, first_allreduce


def test_segments_around_allreduce_fuse_and_match_reference():
    code = "from tests.mpi.test_compiled_with_allreduce import check; check()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "compiled == reference" in proc.stdout


def check() -> None:
    m, first = _train_net()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    label = np.array([0, 1, 2, 3], np.int32)
    results = {}
    for executor in ("reference", "compiled"):
        os.environ["NETJIT_EXECUTOR"] = executor
        ws = workspace.CurrentWorkspace()
        workspace.SwitchWorkspace(f"ws_{executor}", True)
        for i, op in enumerate(m.param_init_net.Proto().op):
            op.device_option.random_seed = 5 + i
        workspace.RunNetOnce(m.param_init_net)
        workspace.FeedBlob("x", x)
        workspace.FeedBlob("label", label)
        if executor == "compiled":
            exe = netjit.compile(m.net)
            for _ in range(3):
                exe.run()
            explained = exe.explain(sources=False)
        else:
            workspace.CreateNet(m.net)
            workspace.RunNet(m.net, 3)
        results[executor] = {str(p): workspace.FetchBlob(str(p)) for p in m.params}
        workspace.SwitchWorkspace(ws)
    n = len(m.net.Proto().op)
    # The segment before the Allreduces (forward + backward) and the one after (the updates) are
    # compiled plans with fused groups; the Allreduces are host steps between them.
    assert f"plan for ops [0, {first})" in explained, explained
    assert f"plan for ops [{first + len(m.params)}, {n})" in explained, explained
    assert "Fused(FC,Relu)" in explained and "Fused(WeightedSum)" in explained, explained
    assert "buffers: arena" in explained
    for name, ref in results["reference"].items():
        np.testing.assert_allclose(results["compiled"][name], ref, rtol=1e-5, atol=1e-6)
    print("compiled == reference")
