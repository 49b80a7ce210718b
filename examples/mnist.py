"""MNIST: the Caffe2 tutorial, end to end, on real handwritten digits.

A LeNet convnet (conv 5x5x20 -> max pool -> conv 5x5x50 -> max pool -> fc 500 -> relu -> fc 10 ->
softmax) is built with ``model_helper`` and ``brew``, trained with plain SGD from ops (Iter,
LearningRate, WeightedSum), checked on held-out digits by a test model that shares the trained
parameters, checkpointed and restored, and deployed three ways: a deploy model in the training
workspace, a ``predictor_exporter`` minidb reloaded in a fresh workspace, and the ``mobile_exporter``
(init_net, predict_net) pair run by ``workspace.Predictor``.

Data: only the 10,000-digit MNIST *test* set ships here (../shared/data/mnist). This script splits
it: its first 8,000 digits train the model, its last 2,000 are held out and never trained on.

    python examples/mnist.py                        # 400 iterations of batch 64, ~3 epochs
    python examples/mnist.py --iters 40 --out /tmp/mnist --executor reference --seed 1

Everything it writes goes to ``--out`` (default: a fresh temporary folder), which is also the
workspace root folder: the LMDBs, Print/Summarize logs, checkpoints, the curve PNG, the exported
model files and ``mnist_summary.json`` (the numbers printed at the end).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from caffe2.python import brew, core, model_helper, workspace
from caffe2.python.predictor import mobile_exporter
from caffe2.python.predictor import predictor_exporter as pe

from netjit.mnist_data import DEFAULT_MNIST_DIR, make_mnist_dbs

BATCH_SIZE = 64
TEST_BATCH_SIZE = 100
N_TRAIN = 8000
ARG_SCOPE = {"order": "NCHW"}


# --------------------------------------------------------------------------------- the model
def AddInput(model: model_helper.ModelHelper, batch_size: int, db: str, db_type: str) -> tuple[Any, Any]:
    """Read (uint8 image, int32 label) batches from the DB and turn the images into floats in [0, 1)."""
    data_uint8, label = model.TensorProtosDBInput([], ["data_uint8", "label"], batch_size=batch_size,
                                                  db=db, db_type=db_type)
    data = model.Cast(data_uint8, "data", to=core.DataType.FLOAT)
    data = model.Scale(data, data, scale=float(1.0 / 256))
    # The input needs no gradient: stopping it here saves autodiff from computing data_grad.
    data = model.StopGradient(data, data)
    return data, label


def AddLeNetModel(model: model_helper.ModelHelper, data: Any) -> Any:
    """LeNet: two conv/pool stages, then two fully connected layers; returns the softmax blob."""
    conv1 = brew.conv(model, data, "conv1", dim_in=1, dim_out=20, kernel=5)        # 28x28 -> 24x24
    pool1 = brew.max_pool(model, conv1, "pool1", kernel=2, stride=2)                # -> 12x12
    conv2 = brew.conv(model, pool1, "conv2", dim_in=20, dim_out=50, kernel=5)      # -> 8x8
    pool2 = brew.max_pool(model, conv2, "pool2", kernel=2, stride=2)                # -> 4x4
    fc3 = brew.fc(model, pool2, "fc3", dim_in=50 * 4 * 4, dim_out=500)
    relu = brew.relu(model, fc3, fc3)
    pred = brew.fc(model, relu, "pred", 500, 10)
    return brew.softmax(model, pred, "softmax")


def AddAccuracy(model: model_helper.ModelHelper, softmax: Any, label: Any) -> Any:
    """Fraction of the batch whose top-scoring class is the label."""
    return brew.accuracy(model, [softmax, label], "accuracy")


def AddTrainingOperators(model: model_helper.ModelHelper, softmax: Any, label: Any,
                         checkpoint_every: int) -> None:
    """Loss, gradients, and an SGD step written as ops: param += LR * grad with a negative LR."""
    xent = model.LabelCrossEntropy([softmax, label], "xent")
    loss = model.AveragedLoss(xent, "loss")
    AddAccuracy(model, softmax, label)
    model.AddGradientOperators([loss])
    iteration = brew.iter(model, "iter")
    # "step" policy: lr = base_lr * gamma ** floor(iter / stepsize), so it decays slowly every iteration.
    # base_lr is twice the usual tutorial's 0.1: with only 8,000 training digits, 0.2 reaches ~98% on the
    # held-out digits in 400 iterations (measured over seeds 0-3), where 0.1 needs about 600.
    lr = model.LearningRate(iteration, "LR", base_lr=-0.2, policy="step", stepsize=1, gamma=0.999)
    one = model.param_init_net.ConstantFill([], "ONE", shape=[1], value=1.0)
    for param in model.params:
        grad = model.param_to_grad[param]
        model.WeightedSum([param, one, grad, lr], param)
    # Every `checkpoint_every` iterations, save the counter and all parameters to a fresh LMDB
    # (relative to the workspace root folder), named by the iteration.
    model.Checkpoint([iteration] + model.params, [], db="mnist_lenet_checkpoint_%05d.lmdb",
                     db_type="lmdb", every=checkpoint_every)


def AddBookkeepingOperators(model: model_helper.ModelHelper) -> None:
    """Debug output that does not change training: Print appends the blob to <root>/<blob>.log,
    Summarize appends [min, max, mean, std] to <root>/<blob>.summary on every run."""
    model.Print("accuracy", [], to_file=1)
    model.Print("loss", [], to_file=1)
    for param in model.params:
        model.Summarize(param, [], to_file=1)
        model.Summarize(model.param_to_grad[param], [], to_file=1)


# ------------------------------------------------------------------------------ helpers
class Progress:
    """An iteration progress bar on stderr: tqdm when installed, else a plain text line."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.count, self.start = total, desc, 0, time.perf_counter()
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, file=sys.stderr)
        except ImportError:
            self.bar = None

    def update(self, **info: float) -> None:
        self.count += 1
        text = " ".join(f"{k} {v:.3f}" for k, v in info.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
            return
        if self.count % max(1, self.total // 50) and self.count != self.total:
            return  # redraw about 50 times, not every iteration
        width = 30
        done = width * self.count // self.total
        rate = self.count / max(time.perf_counter() - self.start, 1e-9)
        sys.stderr.write(f"\r{self.desc} [{'#' * done}{'.' * (width - done)}] {self.count}/{self.total} "
                         f"({rate:.1f} it/s) {text}")
        if self.count == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def seed_initializers(net: core.Net, seed: int) -> None:
    """Give every op of an init net its own random seed, so that fillers are reproducible and
    two weights of the same shape still differ."""
    for i, op in enumerate(net.Proto().op):
        op.device_option.random_seed = seed + i


def save_curve(path: Path, losses: list[float], accuracies: list[float]) -> Path | None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no training curve plot")
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(losses, "b", label="loss")
    ax.plot(accuracies, "r", label="batch accuracy")
    ax.set_xlabel("iteration")
    ax.set_title("LeNet on MNIST (8,000 training digits, batch 64)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def fetch_all(names: Iterable[Any]) -> dict[str, np.ndarray]:
    return {str(n): workspace.FetchBlob(str(n)) for n in names}


# --------------------------------------------------------------------------------- the run
def train(train_model: model_helper.ModelHelper, iters: int, every: int) -> dict[str, Any]:
    """Initialize and run the training net; keep the loss/accuracy curve, the time of every
    iteration, and a copy of what the last Checkpoint saved (to check the DB against)."""
    params = [str(p) for p in train_model.params]
    workspace.RunNetOnce(train_model.param_init_net)
    workspace.CreateNet(train_model.net, overwrite=True)
    losses, accuracies, times = [], [], []
    snapshot: dict[str, Any] = {}
    progress = Progress(iters, "train")
    for _ in range(iters):
        start = time.perf_counter()
        workspace.RunNet(train_model.net)
        times.append(time.perf_counter() - start)
        losses.append(float(workspace.FetchBlob("loss")))
        accuracies.append(float(workspace.FetchBlob("accuracy")))
        step = int(workspace.FetchBlob("iter")[0])
        if step % every == 0:
            snapshot = {"iter": step, **fetch_all(params)}  # what the Checkpoint op just saved
        progress.update(loss=losses[-1], acc=accuracies[-1])
    progress.close()
    # The first iteration includes compiling the net; the median says what a step costs after that.
    step_ms = 1000 * float(np.median(times[1:] if len(times) > 1 else times))
    print(f"Trained {iters} iterations ({iters * BATCH_SIZE / N_TRAIN:.2f} epochs): first iteration "
          f"{times[0]:.2f} s (includes compiling), then {step_ms:.2f} ms per iteration (median)")
    print(f"Last 20 iterations: loss {np.mean(losses[-20:]):.4f}, batch accuracy {np.mean(accuracies[-20:]):.4f}")
    return {"losses": losses, "accuracies": accuracies, "ms_per_iter": step_ms, "first_iter_s": times[0],
            "snapshot": snapshot}


def evaluate(test_model: model_helper.ModelHelper, n_test: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Accuracy over the held-out digits (the reader visits each once, in batches of 100), then
    one more batch (the reader wrapped around: the first 100 held-out digits) whose input and
    softmax serve as the reference for the deployed models."""
    workspace.RunNetOnce(test_model.param_init_net)
    workspace.CreateNet(test_model.net, overwrite=True)
    correct = 0.0
    for _ in range(n_test // TEST_BATCH_SIZE):
        workspace.RunNet(test_model.net)
        correct += float(workspace.FetchBlob("accuracy")) * TEST_BATCH_SIZE
    accuracy = correct / n_test
    print(f"Held-out accuracy on the {n_test:,} test digits (never trained on): {100 * accuracy:.2f}%")
    workspace.RunNet(test_model.net)
    return accuracy, workspace.FetchBlob("data"), workspace.FetchBlob("softmax")


def check_checkpoint(root: Path, params: list[str], snapshot: dict[str, Any]) -> tuple[Path, bool]:
    """Load the last checkpoint DB into a fresh workspace and compare it with what was saved."""
    ckpt_db = root / f"mnist_lenet_checkpoint_{snapshot['iter']:05d}.lmdb"
    workspace.SwitchWorkspace("checkpoint_check", True)
    workspace.RunOperatorOnce(core.CreateOperator("Load", [], ["iter"] + params, db=str(ckpt_db),
                                                  db_type="lmdb", absolute_path=1))
    equal = int(workspace.FetchBlob("iter")[0]) == snapshot["iter"] and all(
        np.array_equal(workspace.FetchBlob(p), snapshot[p]) for p in params)
    print(f"Checkpoint {ckpt_db.name} (iteration {snapshot['iter']}) loaded back: "
          f"{'values equal' if equal else 'VALUES DIFFER'}")
    workspace.SwitchWorkspace("default")
    return ckpt_db, equal


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


def deploy(root: Path, deploy_model: model_helper.ModelHelper, test_model: model_helper.ModelHelper,
           params: list[str], check_data: np.ndarray, trained_softmax: np.ndarray) -> dict[str, Any]:
    """Run the trained parameters four ways and compare each softmax with the trained net's:
    the deploy net, ExtractPredictorNet of the test net, a predictor_exporter minidb reloaded in
    a fresh workspace, and the mobile_exporter pair through workspace.Predictor."""
    # The deploy net runs in the training workspace, on the trained parameters.
    workspace.FeedBlob("data", check_data)
    workspace.RunNetOnce(deploy_model.param_init_net)
    workspace.CreateNet(deploy_model.net, overwrite=True)
    workspace.RunNet(deploy_model.net)
    result: dict[str, Any] = {"deploy_max_diff": max_diff(workspace.FetchBlob("softmax"), trained_softmax)}
    # ExtractPredictorNet cuts the inference ops out of the test net. Its input "data" is the Cast
    # output, so the extracted net starts with the in-place Scale: it takes float pixels in [0, 255].
    extracted, export_blobs = model_helper.ExtractPredictorNet(test_model.net.Proto(), ["data"], ["softmax"])
    workspace.FeedBlob("data", check_data * 256)
    workspace.RunNetOnce(extracted)
    result["extracted_max_diff"] = max_diff(workspace.FetchBlob("softmax"), trained_softmax)
    print(f"ExtractPredictorNet from the test net: {[op.type for op in extracted.Proto().op]} with parameters "
          f"{export_blobs}; on raw pixels its max |softmax diff| is {result['extracted_max_diff']:.2e}")

    # predictor_exporter: one minidb holding the nets and the parameters.
    model_path = str(root / "mnist_model.minidb")
    pe_meta = pe.PredictorExportMeta(predict_net=deploy_model.net.Proto(), parameters=params,
                                     inputs=["data"], outputs=["softmax"])
    pe.save_to_db("minidb", model_path, pe_meta)
    print(f"Exported the predictor to {model_path}")
    result["model"] = model_path
    init_net, predict_net = mobile_exporter.Export(workspace, deploy_model.net, params)
    (root / "mnist_init_net.pb").write_bytes(init_net.SerializeToString())
    (root / "mnist_predict_net.pb").write_bytes(predict_net.SerializeToString())

    workspace.SwitchWorkspace("reloaded", True)
    workspace.ResetWorkspace(str(root))
    predict = pe.prepare_prediction_net(model_path, "minidb")
    print(f"Reloaded in a fresh workspace: blobs {workspace.Blobs()}")
    workspace.FeedBlob("data", check_data)
    workspace.RunNet(predict, 1)
    reloaded_softmax = workspace.FetchBlob("softmax")
    result["reload_max_diff"] = max_diff(reloaded_softmax, trained_softmax)
    agree = float((reloaded_softmax.argmax(1) == trained_softmax.argmax(1)).mean())
    print(f"Reloaded predictor vs trained net on {len(check_data)} held-out digits: max |softmax diff| "
          f"{result['reload_max_diff']:.2e}, same predicted digit for {100 * agree:.0f}%")

    # The mobile exporter's (init_net, predict_net) pair, read back from the .pb files.
    mobile = workspace.Predictor((root / "mnist_init_net.pb").read_bytes(),
                                 (root / "mnist_predict_net.pb").read_bytes())
    result["mobile_max_diff"] = max_diff(mobile.run([check_data])[0], trained_softmax)
    print(f"workspace.Predictor from mobile_exporter files: max |softmax diff| {result['mobile_max_diff']:.2e}")
    workspace.SwitchWorkspace("default")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=400, help="training iterations (batch 64; default 400)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: a new temp folder)")
    parser.add_argument("--executor", choices=["compiled", "reference"], default=None,
                        help="netjit executor for every net (default: $NETJIT_EXECUTOR, else compiled)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the parameter initializers")
    parser.add_argument("--mnist-dir", type=Path, default=DEFAULT_MNIST_DIR,
                        help="folder holding t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error("--iters must be >= 1")
    if args.executor:
        os.environ["NETJIT_EXECUTOR"] = args.executor
    root = (args.out or Path(tempfile.mkdtemp(prefix="netjit_mnist_"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    executor = os.environ.get("NETJIT_EXECUTOR", "compiled")
    print(f"Output folder (workspace root): {root}; executor: {executor}")
    core.GlobalInit(["caffe2", "--caffe2_log_level=0"])
    workspace.ResetWorkspace(str(root))

    # ---- data: 8,000 training digits and 2,000 held-out test digits, both from MNIST's test set
    print(f"Data: the MNIST training set is not available offline, so the 10,000 real digits of the MNIST "
          f"test set are split: the first {N_TRAIN:,} train the model, the last {10000 - N_TRAIN:,} are held "
          f"out for testing.")
    dbs = make_mnist_dbs(args.mnist_dir, root, n_train=N_TRAIN, db_type="lmdb")
    n_test = 10000 - N_TRAIN

    # ---- the training model, checkpointed 4 times over the run
    every = max(1, args.iters // 4)
    train_model = model_helper.ModelHelper(name="mnist_train", arg_scope=ARG_SCOPE)
    data, label = AddInput(train_model, BATCH_SIZE, dbs["train"], "lmdb")
    softmax = AddLeNetModel(train_model, data)
    AddTrainingOperators(train_model, softmax, label, checkpoint_every=every)
    AddBookkeepingOperators(train_model)
    seed_initializers(train_model.param_init_net, args.seed)
    params = [str(p) for p in train_model.params]
    print(f"Parameters: {params}")
    print(f"Training net: {len(train_model.net.Proto().op)} ops "
          f"({sum(op.is_gradient_op for op in train_model.net.Proto().op)} gradient ops)")

    # ---- the test model reads the held-out DB; init_params=False: no initializers of its own,
    # it uses the parameter blobs the training leaves in the workspace (same names).
    test_model = model_helper.ModelHelper(name="mnist_test", arg_scope=ARG_SCOPE, init_params=False)
    data, label = AddInput(test_model, TEST_BATCH_SIZE, dbs["test"], "lmdb")
    softmax = AddLeNetModel(test_model, data)
    AddAccuracy(test_model, softmax, label)

    # ---- the deploy model: just the network, fed by a "data" blob
    deploy_model = model_helper.ModelHelper(name="mnist_deploy", arg_scope=ARG_SCOPE, init_params=False)
    AddLeNetModel(deploy_model, "data")

    run = train(train_model, args.iters, every)
    curve = save_curve(root / "mnist_training_curve.png", run["losses"], run["accuracies"])
    if curve is not None:
        print(f"Saved the training curve: {curve}")
    logs = sorted(p.name for p in root.iterdir() if p.suffix in (".log", ".summary"))
    print(f"Bookkeeping files in the root folder: {len(logs)} ({', '.join(logs[:4])}, ...)")

    test_accuracy, check_data, trained_softmax = evaluate(test_model, n_test)
    ckpt_db, checkpoint_equal = check_checkpoint(root, params, run["snapshot"])
    deployed = deploy(root, deploy_model, test_model, params, check_data, trained_softmax)

    diffs = {k: v for k, v in deployed.items() if k.endswith("_max_diff")}
    summary = {
        "iters": args.iters, "batch_size": BATCH_SIZE, "executor": executor, "seed": args.seed,
        "n_train": N_TRAIN, "n_test": n_test, "test_accuracy": test_accuracy,
        "final_loss": float(np.mean(run["losses"][-20:])), "ms_per_iter": run["ms_per_iter"],
        "first_iter_s": run["first_iter_s"], "losses": run["losses"], "accuracies": run["accuracies"],
        "checkpoint": {"db": str(ckpt_db), "iter": run["snapshot"]["iter"], "equal": checkpoint_equal},
        **diffs, "params": params, "model": deployed["model"], "curve_png": str(curve) if curve else None,
    }
    (root / "mnist_summary.json").write_text(json.dumps(summary, indent=1))
    np.save(root / "check_data.npy", check_data)
    np.save(root / "trained_softmax.npy", trained_softmax)
    print("\n=== Summary ===")
    print(f"held-out accuracy: {100 * test_accuracy:.2f}% on {n_test:,} digits (trained on {N_TRAIN:,}, "
          f"{args.iters} iterations of batch {BATCH_SIZE}, executor {executor})")
    print(f"time per training iteration: {run['ms_per_iter']:.2f} ms (median; first iteration "
          f"{run['first_iter_s']:.2f} s)")
    print(f"checkpoint reload equal: {checkpoint_equal}; max |softmax diff| vs the trained net: "
          + ", ".join(f"{k[:-len('_max_diff')]} {v:.2e}" for k, v in diffs.items()))
    print(f"files in {root}")
    return 0 if checkpoint_equal and max(diffs.values()) < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
