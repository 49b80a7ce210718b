"""Every tutorial script runs as a user would run it (a subprocess, output into a temp dir), and
prints/produces what the tutorial promises."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from netjit.proto import caffe2_pb2

TUTORIALS = Path(__file__).resolve().parents[2] / "examples" / "tutorials"


def _run(script: str, *args: str, env: dict | None = None, timeout: float = 120) -> str:
    full_env = dict(os.environ)
    full_env.pop("NETJIT_TUTORIAL_OUT", None)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, str(TUTORIALS / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=str(TUTORIALS.parents[1]))
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_intro(tmp_path):
    stdout = _run("intro.py", str(tmp_path))
    assert "(4, 3, 2)" in stdout
    assert 'type: "SoftmaxWithLoss"' in stdout and "is_gradient_op: true" in stdout
    net = text_format.Parse((tmp_path / "intro_net.pbtxt").read_text(), caffe2_pb2.NetDef())
    assert [op.type for op in net.op] == ["FC", "Sigmoid", "SoftmaxWithLoss", "ConstantFill",
                                          "SoftmaxWithLossGradient", "SigmoidGradient", "FCGradient"]
    init = text_format.Parse((tmp_path / "intro_init_net.pbtxt").read_text(), caffe2_pb2.NetDef())
    assert [op.output[0] for op in init.op] == ["fc_w", "fc_b"]
    assert "Gradient blobs: data_grad, fc1_grad, fc_b_grad, fc_w_grad, loss_autogen_grad, pred_grad" in stdout


def test_basics(tmp_path):
    stdout = _run("basics.py", str(tmp_path), "50")
    assert "Workspace has blob 'X'? False" in stdout and "Workspace has blob 'X'? True" in stdout
    assert "Current workspace: gutentag" in stdout
    assert "As expected, fetching a missing blob fails" in stdout
    assert "Blobs in the workspace after execution: ['W', 'X', 'Y', 'b']" in stdout
    assert "Run time per RunNetOnce:" in stdout and "Run time per RunNet:" in stdout
    assert "Python op: 2 * [3.] = [6.]" in stdout and "Python op reading the workspace: [6.]" in stdout
    assert 'type: "PythonGradient"' in stdout and "x_grad = [2.]" in stdout
    assert (tmp_path / "my_first_net.dot").read_text().count("->") >= 5


def test_toy_regression_converges(tmp_path):
    stdout = _run("toy_regression.py", env={"NETJIT_TUTORIAL_OUT": str(tmp_path)})
    result = json.loads((tmp_path / "toy_regression.json").read_text())
    assert result["iterations"] == 100
    np.testing.assert_allclose(result["W"], [2.0, 1.5], atol=0.1)
    np.testing.assert_allclose(result["B"], [0.5], atol=0.1)
    assert np.mean(result["losses"][-10:]) < 0.5 * np.mean(result["losses"][:5])
    assert 'type: "SquaredL2DistanceGradient"' in stdout and "After training, W is:" in stdout
    if _has_matplotlib():
        assert (tmp_path / "toy_regression.png").stat().st_size > 1000
    # A fixed seed gives the same run twice.
    again = tmp_path / "again"
    _run("toy_regression.py", str(again))
    assert json.loads((again / "toy_regression.json").read_text())["W"] == result["W"]


def test_learn_more_trains_lenet_on_mnist(tmp_path, shared_dir):
    pytest.importorskip("lmdb")
    stdout = _run("learn_more.py", str(tmp_path), "100",
                  env={"NETJIT_MNIST_DIR": str(shared_dir / "data" / "mnist")})
    assert "Parameters: ['fc1_w', 'fc1_b']" in stdout
    assert "the first gradient op is AveragedLossGradient" in stdout
    result = json.loads((tmp_path / "learn_more.json").read_text())
    losses = result["losses"]
    assert len(losses) == 100 and np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    assert result["test_accuracy"] > 0.8
    assert (tmp_path / "mnist-train-lmdb" / "data.mdb").exists()


def test_control_ops_tutorial():
    stdout = _run("control_ops.py")
    for line in ("if/else: x = 0.5, y = 1.0", "nested if: y = 2.0, local_blob in workspace: False",
                 "while: i = 8, y = 28", "plain nets while: i = [8], y = [28]", "step loop: c = 0, d = 20",
                 "if gradient: x = 0.5, z = 16.0, y_grad = 8.0", "if gradient: x = -0.5, z = 64.0, y_grad = 48.0",
                 "while gradient: x_grad = 32.0", "while gradient: y_grad = 6.0", "while gradient: z_grad = 12.0"):
        assert line in stdout, f"missing {line!r} in:\n{stdout}"
    assert _run("control_ops.py", env={"NETJIT_EXECUTOR": "reference"}) == stdout
