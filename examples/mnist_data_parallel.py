"""MNIST LeNet trained data-parallel over MPI with Caffe2's ``data_parallel_model``.

One process per shard, started by mpiexec; every rank reads its own shard of the training LMDB
(record i goes to rank i mod N), the gradients are all-reduced after each backward pass, and rank 0
prints progress and writes the checkpoint. Needs the MPI extra (``pip install netjit[mpi]``).

    mpiexec -n 2 python examples/mnist_data_parallel.py                    # 200 iterations, batch 64/rank
    mpiexec -n 2 python examples/mnist_data_parallel.py --resume           # continue from the checkpoint
    mpiexec --with-ft ulfm -n 2 python examples/mnist_data_parallel.py     # a lost rank is named by the others
    mpiexec --hostfile hosts -n 4 python examples/mnist_data_parallel.py --out /shared/mnist_dp

As root, Open MPI also wants ``--allow-run-as-root`` (and ``--oversubscribe`` for more ranks than
cores). ``--out`` (default ./mnist_dp_out) holds the LMDBs (built by rank 0 from ../shared/data/mnist
on first use) and ``mnist_dp_checkpoint.minidb``; across machines it must be a shared folder, or
give each machine a copy of the LMDBs (only rank 0 writes and reads the checkpoint).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from caffe2.python import brew, core, data_parallel_model as dpm, model_helper, workspace

from netjit.mnist_data import DEFAULT_MNIST_DIR, make_mnist_dbs

TEST_BATCH = 100


def add_lenet(model: model_helper.ModelHelper, data: Any) -> Any:
    """LeNet: conv 5x5x20, max pool, conv 5x5x50, max pool, fc 500, relu, fc 10, softmax."""
    conv1 = brew.conv(model, data, "conv1", dim_in=1, dim_out=20, kernel=5)
    pool1 = brew.max_pool(model, conv1, "pool1", kernel=2, stride=2)
    conv2 = brew.conv(model, pool1, "conv2", dim_in=20, dim_out=50, kernel=5)
    pool2 = brew.max_pool(model, conv2, "pool2", kernel=2, stride=2)
    fc3 = brew.fc(model, pool2, "fc3", dim_in=50 * 4 * 4, dim_out=500)
    fc3 = brew.relu(model, fc3, fc3)
    pred = brew.fc(model, fc3, "pred", 500, 10)
    return brew.softmax(model, pred, "softmax")


def input_builder(reader: Any, batch: int):
    def add_input(model: model_helper.ModelHelper) -> None:
        data_uint8, label = model.net.TensorProtosDBInput([reader], ["data_uint8", "label"], batch_size=batch)
        data = model.net.Cast(data_uint8, "data", to=core.DataType.FLOAT)
        data = model.net.Scale(data, data, scale=float(1.0 / 256))
        model.net.StopGradient(data, data)
    return add_input


def forward(model: model_helper.ModelHelper, loss_scale: float) -> list:
    """LeNet's loss, scaled by 1 / (devices x shards) so that the all-reduced sum is the mean."""
    softmax = add_lenet(model, "data")
    xent = model.net.LabelCrossEntropy([softmax, "label"], "xent")
    loss = model.net.AveragedLoss(xent, "loss")
    brew.accuracy(model, [softmax, "label"], "accuracy")
    return [model.net.Scale(loss, "scaled_loss", scale=loss_scale)]


def sgd(model: model_helper.ModelHelper) -> None:
    """Plain SGD as ops (one device's copy): param += lr * grad with a negative, slowly decaying lr."""
    it = brew.iter(model, "ITER")
    lr = model.net.LearningRate(it, "LR", base_lr=-0.2, policy="step", stepsize=1, gamma=0.999)
    one = model.param_init_net.ConstantFill([], "ONE", shape=[1], value=1.0)
    for param in model.GetParams():
        model.net.WeightedSum([param, one, model.param_to_grad[param], lr], param)


def build_dbs(args: argparse.Namespace, rank: int) -> dict[str, str]:
    """Rank 0 builds the LMDBs once; the others wait for it at a barrier."""
    out = Path(args.out)
    dbs = {"train": str(out / "mnist-train-nchw-lmdb"), "test": str(out / "mnist-test-nchw-lmdb")}
    if rank == 0 and not Path(dbs["train"]).exists():
        dbs = make_mnist_dbs(args.mnist_dir, out)
    setup = core.Net("setup_barrier")
    setup.CreateCommonWorld([], ["setup_cw"], engine=args.engine)
    setup.Barrier(["setup_cw"], [], engine=args.engine)
    workspace.RunNetOnce(setup)
    return dbs


def evaluate(test_db: str, batches: int) -> float:
    """Accuracy of the trained parameters (cpu_0/...) on the held-out digits, on this rank alone."""
    test = model_helper.ModelHelper(name="mnist_dp_test", init_params=False)
    reader = test.param_init_net.CreateDB([], "test_reader", db=test_db, db_type="lmdb")

    def test_forward(model: model_helper.ModelHelper, loss_scale: float) -> list:
        softmax = add_lenet(model, "data")
        return [brew.accuracy(model, [softmax, "label"], "accuracy")]
    dpm.Parallelize(test, input_builder_fun=input_builder(reader, TEST_BATCH), forward_pass_builder_fun=test_forward,
                    devices=[0], cpu_device=True)
    workspace.RunNetOnce(test.param_init_net)
    workspace.CreateNet(test.net)
    accs = []
    for _ in range(batches):
        workspace.RunNet(test.net)
        accs.append(float(workspace.FetchBlob("cpu_0/accuracy")))
    return float(np.mean(accs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=200, help="training iterations (each: one batch per rank)")
    p.add_argument("--batch", type=int, default=64, help="images per rank per iteration")
    p.add_argument("--out", default="mnist_dp_out", help="LMDBs and checkpoint (shared by the ranks)")
    p.add_argument("--mnist-dir", default=str(DEFAULT_MNIST_DIR))
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--engine", default="MPI", help="MPI, or GLOO as old scripts say (runs on MPI)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    # Caffe2's rendezvous dict, numbered by the MPI world: {kv_handler, shard_id, num_shards, engine}.
    rendezvous = dpm.MPIRendezvous(engine=args.engine)
    rank, size = rendezvous["shard_id"], rendezvous["num_shards"]
    model = model_helper.ModelHelper(name="mnist_dp_train")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    dbs = build_dbs(args, rank)
    # One reader per process, outside the device scopes: rank r reads records r, r+N, r+2N, ...
    reader = model.param_init_net.CreateDB([], "train_reader", db=dbs["train"], db_type="lmdb",
                                           num_shards=size, shard_id=rank)
    dpm.Parallelize(model, input_builder_fun=input_builder(reader, args.batch), forward_pass_builder_fun=forward,
                    param_update_builder_fun=sgd, devices=[0], cpu_device=True, rendezvous=rendezvous)
    for i, op in enumerate(model.param_init_net.Proto().op):
        op.device_option.random_seed = args.seed + i   # reproducible; rank 0's values are broadcast anyway
    dpm.RunInitNet(model)

    ckpt = str(Path(args.out).resolve() / "mnist_dp_checkpoint.minidb")
    saved = sorted(str(b) for b in dpm.GetCheckpointParams(model))
    start = 0
    if args.resume:
        if rank == 0:
            workspace.RunOperatorOnce(core.CreateOperator("Load", [], saved, db=ckpt, db_type="minidb",
                                                          absolute_path=1))
        dpm.FinalizeAfterCheckpoint(model)   # rank 0's loaded blobs to every rank
        start = int(workspace.FetchBlob("cpu_0/ITER")[0])
        # Put the reader where the interrupted run had it, so the resumed run sees the same batches.
        skip = core.Net("skip_batches")
        skip.TensorProtosDBInput([reader], ["skip_data", "skip_label"], batch_size=args.batch)
        workspace.CreateNet(skip)
        workspace.RunNet(skip, start)
        if rank == 0:
            print(f"resumed from {ckpt} at iteration {start}", flush=True)

    save = core.CreateOperator("Save", saved, [], db=ckpt, db_type="minidb", absolute_path=1)
    every = max(1, min(args.checkpoint_every, 10))
    t0, done = time.perf_counter(), start
    while done < args.iters:
        n = min(every - done % every, args.iters - done)
        dpm.RunNet(model, n)
        done += n
        if rank == 0:
            rate = (done - start) * args.batch * size / (time.perf_counter() - t0)
            print(f"iter {done}/{args.iters}  loss {float(workspace.FetchBlob('cpu_0/loss')):.4f}  "
                  f"batch accuracy {float(workspace.FetchBlob('cpu_0/accuracy')):.3f}  "
                  f"({size} ranks x {args.batch} images, {rate:.0f} images/s)", flush=True)
            if done % args.checkpoint_every == 0 or done == args.iters:
                workspace.RunOperatorOnce(save)   # atomic: the previous checkpoint survives a crash here
    if rank == 0:
        acc = evaluate(dbs["test"], 2000 // TEST_BATCH)
        print(f"held-out accuracy {acc:.4f} after {args.iters} iterations; checkpoint {ckpt}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
