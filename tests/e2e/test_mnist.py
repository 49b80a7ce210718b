"""examples/mnist.py runs as a user runs it (a subprocess, default executor, a temp output folder),
and what it leaves behind is checked here independently of what it prints: the exported model is
reloaded in this process and scored on the held-out digits read straight from the IDX files, the
last checkpoint is compared with the exported parameters, the reloaded predictor with the softmax
the trained net produced, and the curve PNG and bookkeeping files are opened.

The full run (400 iterations, the >= 97% accuracy bar) takes about a minute on two cores, so it is
marked slow; the fast variant (20 iterations) checks every piece of the pipeline without the bar.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netjit import core, workspace
from netjit.mnist_data import IMAGES_FILE, LABELS_FILE, read_idx
from netjit.predictor_exporter import prepare_prediction_net

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "mnist.py"
N_TRAIN = 8000


def run_mnist(out: Path, iters: int, mnist_dir: Path) -> tuple[dict, str]:
    env = dict(os.environ)
    env.pop("NETJIT_EXECUTOR", None)  # the default executor, as a user gets it
    # On this 2-core VM, with other processes running, OpenBLAS's second thread makes LeNet's small
    # GEMMs 5-8x slower (measured: 380-420 vs 53-77 ms per step); one thread keeps the run short.
    # The numbers are the same either way. A caller's own setting wins.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--iters", str(iters), "--out", str(out),
                           "--mnist-dir", str(mnist_dir)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=str(REPO))
    assert proc.returncode == 0, f"mnist.py failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return json.loads((out / "mnist_summary.json").read_text()), proc.stdout


def held_out_digits(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 2,000 digits the script never trains on, scaled as its input layer scales them."""
    images = read_idx(mnist_dir / IMAGES_FILE)[N_TRAIN:]
    labels = read_idx(mnist_dir / LABELS_FILE)[N_TRAIN:]
    return (images[:, None].astype(np.float32) / 256), labels.astype(np.int64)


def reload_and_score(summary: dict, mnist_dir: Path) -> tuple[float, dict[str, np.ndarray]]:
    """Accuracy of the exported minidb on the held-out digits, and its parameters."""
    workspace.SwitchWorkspace("mnist_reload_check", True)
    try:
        predict = prepare_prediction_net(summary["model"], "minidb")
        images, labels = held_out_digits(mnist_dir)
        predicted = []
        for start in range(0, len(images), 500):
            workspace.FeedBlob("data", images[start:start + 500])
            workspace.RunNet(predict)
            predicted.append(workspace.FetchBlob("softmax").argmax(axis=1))
        params = {p: workspace.FetchBlob(p) for p in summary["params"]}
    finally:
        workspace.SwitchWorkspace("default")
    return float((np.concatenate(predicted) == labels).mean()), params


def check_pipeline(out: Path, summary: dict, stdout: str, mnist_dir: Path, iters: int) -> float:
    """Every piece except the accuracy bar; returns the independently measured held-out accuracy."""
    assert "first 8,000 train the model, the last 2,000 are held out" in stdout
    assert summary["iters"] == iters and summary["n_test"] == 2000
    assert len(summary["losses"]) == iters and all(np.isfinite(summary["losses"]))
    assert summary["executor"] == "compiled"

    # The reloaded predictor gives the trained net's softmax on the same held-out batch.
    check_data, trained = np.load(out / "check_data.npy"), np.load(out / "trained_softmax.npy")
    assert check_data.shape == (100, 1, 28, 28) and trained.shape == (100, 10)
    workspace.SwitchWorkspace("mnist_softmax_check", True)
    try:
        predict = prepare_prediction_net(summary["model"], "minidb")
        workspace.FeedBlob("data", check_data)
        workspace.RunNet(predict)
        np.testing.assert_allclose(workspace.FetchBlob("softmax"), trained, rtol=1e-5, atol=1e-6)
    finally:
        workspace.SwitchWorkspace("default")
    for key in ("reload_max_diff", "mobile_max_diff", "deploy_max_diff", "extracted_max_diff"):
        assert summary[key] < 1e-5, (key, summary[key])

    # The accuracy the script reports is what its exported model scores on the held-out digits.
    accuracy, exported = reload_and_score(summary, mnist_dir)
    assert abs(accuracy - summary["test_accuracy"]) < 2e-3, (accuracy, summary["test_accuracy"])

    # Checkpoints: one every iters/4 iterations; the last (at the final iteration) loads back
    # equal to the exported parameters, and the iteration counter comes back too.
    ckpt = summary["checkpoint"]
    assert ckpt["equal"] is True and ckpt["iter"] == iters
    assert len(list(out.glob("mnist_lenet_checkpoint_*.lmdb"))) == 4
    workspace.SwitchWorkspace("mnist_ckpt_check", True)
    try:
        workspace.RunOperatorOnce(core.CreateOperator("Load", [], ["iter"] + summary["params"],
                                                      db=ckpt["db"], db_type="lmdb", absolute_path=1))
        assert int(workspace.FetchBlob("iter")[0]) == iters
        for name, value in exported.items():
            np.testing.assert_array_equal(workspace.FetchBlob(name), value, err_msg=name)
    finally:
        workspace.SwitchWorkspace("default")

    # The curve PNG and the Print/Summarize files in the root folder (one line per iteration).
    png = Path(summary["curve_png"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert len((out / "loss.log").read_text().splitlines()) == iters
    stats = (out / "conv1_w_grad.summary").read_text().splitlines()
    assert len(stats) == iters and len(stats[-1].split()) == 4
    assert {p.name for p in out.glob("*.summary")} == {f"{p}{g}.summary" for p in summary["params"]
                                                       for g in ("", "_grad")}
    return accuracy


def test_mnist_pipeline_fast(tmp_path, shared_dir):
    pytest.importorskip("lmdb")
    pytest.importorskip("matplotlib")
    mnist_dir = shared_dir / "data" / "mnist"
    summary, stdout = run_mnist(tmp_path / "out", 20, mnist_dir)
    accuracy = check_pipeline(tmp_path / "out", summary, stdout, mnist_dir, 20)
    assert accuracy > 0.5  # 20 SGD steps already lift it far above chance (0.1)


@pytest.mark.slow
def test_mnist_reaches_97_percent(tmp_path, shared_dir):
    pytest.importorskip("lmdb")
    pytest.importorskip("matplotlib")
    mnist_dir = shared_dir / "data" / "mnist"
    summary, stdout = run_mnist(tmp_path / "out", 400, mnist_dir)
    accuracy = check_pipeline(tmp_path / "out", summary, stdout, mnist_dir, 400)
    assert accuracy >= 0.97 and summary["test_accuracy"] >= 0.97
    assert np.mean(summary["losses"][-20:]) < 0.25 * np.mean(summary["losses"][:5])
