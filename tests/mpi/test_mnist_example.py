"""examples/mnist_data_parallel.py on 2 ranks from the real digits: progress from rank 0, a checkpoint,
and a resumed run that ends with the parameters of an uninterrupted one."""
from __future__ import annotations

import numpy as np
from caffe2.python import core, workspace

from tests.conftest import shared_path
from tests.mpi.launch import REPO, check, run_ranks

EXAMPLE = str(REPO / "examples" / "mnist_data_parallel.py")


def _checkpoint(path) -> dict[str, np.ndarray]:
    names = ["cpu_0/ITER", "cpu_0/conv1_w", "cpu_0/conv2_b", "cpu_0/fc3_w", "cpu_0/pred_b"]
    workspace.RunOperatorOnce(core.CreateOperator("Load", [], names, db=str(path), db_type="minidb",
                                                  absolute_path=1))
    return {n: workspace.FetchBlob(n) for n in names}


def test_example_trains_checkpoints_and_resumes(tmp_path):
    mnist = shared_path("data", "mnist")
    common = ["--mnist-dir", str(mnist), "--batch", "32", "--checkpoint-every", "10"]
    full, part = tmp_path / "full", tmp_path / "part"
    out = check(run_ranks([EXAMPLE, "--out", str(full), "--iters", "30", *common], timeout=240))
    assert "iter 30/30" in out and "2 ranks x 32 images" in out and "held-out accuracy" in out, out[-3000:]
    assert out.count("iter 10/30") == 1, "progress comes from rank 0 only"
    check(run_ranks([EXAMPLE, "--out", str(part), "--iters", "20", *common], timeout=240))
    out = check(run_ranks([EXAMPLE, "--out", str(part), "--iters", "30", "--resume", *common], timeout=240))
    assert "at iteration 20" in out, out[-3000:]
    a = _checkpoint(full / "mnist_dp_checkpoint.minidb")
    b = _checkpoint(part / "mnist_dp_checkpoint.minidb")
    assert int(a["cpu_0/ITER"][0]) == 30
    for name in a:
        assert np.array_equal(a[name], b[name]), name
