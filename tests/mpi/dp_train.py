"""A small data-parallel training run the MPI tests launch (``mpiexec -n 2 python dp_train.py ...``)
or run as one process (``--single``: no rendezvous, one shard doing the whole global batch).

An MLP (FC 12->16, Relu, FC 16->4, softmax loss) trained with MomentumSGDUpdate on synthetic data:
step ``s`` draws a global batch of ``ranks * batch`` rows from a generator seeded by ``s``, and shard
``r`` takes rows ``[r * batch, (r + 1) * batch)``, so N ranks of batch B see exactly the rows one
process of batch N*B sees. Rank 0 writes its parameters (and every rank its own, for the bitwise
check) to ``--out``; ``--ckpt-every`` saves a checkpoint with Caffe2's Save op; ``--resume`` loads
it on rank 0 and broadcasts it with FinalizeAfterCheckpoint; ``--kill-rank/--kill-at`` SIGKILLs (or, with
``--signal STOP``, freezes) one rank just before a step.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
from caffe2.python import brew, core, data_parallel_model as dpm, model_helper, workspace

D_IN, HIDDEN, CLASSES = 12, 16, 4


def batch_for(step: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + step)
    x = rng.standard_normal((rows, D_IN)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=rows).astype(np.int32)
    return x, y


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--ranks", type=int, default=2, help="global shards the data is cut for")
    p.add_argument("--single", action="store_true", help="one process, batch ranks*batch, no rendezvous")
    p.add_argument("--ckpt-every", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--kill-rank", type=int, default=-1)
    p.add_argument("--kill-at", type=int, default=-1)
    p.add_argument("--signal", default="KILL", choices=["KILL", "STOP"], help="STOP: a hung rank, not a dead one")
    p.add_argument("--engine", default="MPI")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    if a.single:
        rendezvous, rank, batch = None, 0, a.ranks * a.batch
    else:
        init = core.Net("rdv")
        init.FileStoreHandlerCreate([], ["store"], path=str(out / "rdv"), prefix="dp")
        workspace.RunNetOnce(init)
        rendezvous = dict(kv_handler="store", shard_id=None, num_shards=a.ranks, engine=a.engine)
        rank, batch = None, a.batch

    model = model_helper.ModelHelper(name="dp_mlp")

    def add_input(m):
        pass  # data and label are fed each step

    def add_forward(m, loss_scale):
        h = brew.fc(m, "data", "h", dim_in=D_IN, dim_out=HIDDEN)
        h = brew.relu(m, h, h)
        pred = brew.fc(m, h, "pred", dim_in=HIDDEN, dim_out=CLASSES)
        _, loss = m.net.SoftmaxWithLoss([pred, "label"], ["softmax", "loss"])
        return [m.net.Scale(loss, "scaled_loss", scale=loss_scale)]

    def add_update(m):
        it = brew.iter(m, "ITER")
        lr = m.net.LearningRate(it, "lr", base_lr=0.1, policy="fixed")
        for param in m.GetParams():
            grad = m.param_to_grad[param]
            mom = m.param_init_net.ConstantFill(param, param + "_momentum", value=0.0)
            m.net.MomentumSGDUpdate([grad, mom, lr, param], [grad, mom, param], momentum=0.9)

    with core.NameScope("cpu_0"):
        model.param_init_net.ConstantFill([], "ITER", shape=[1], value=0, dtype=core.DataType.INT64)
    # An un-scoped counter too, as Caffe2's optimizers make: FinalizeAfterCheckpoint must broadcast it.
    model.param_init_net.ConstantFill([], "optimizer_iteration", shape=[1], value=0, dtype=core.DataType.INT64)
    model.net.Iter("optimizer_iteration", "optimizer_iteration")
    # ITER lives in the device scope (created above, before Parallelize groups the param init net).
    dpm.Parallelize(model, input_builder_fun=add_input, forward_pass_builder_fun=add_forward,
                    param_update_builder_fun=add_update, devices=[0], cpu_device=True, rendezvous=rendezvous)
    # The summed loss over shards, every step (AddDistributedBlobSync: an Allreduce at the net's end).
    model.net.Copy("cpu_0/loss", "cpu_0/loss_all")
    dpm.AddDistributedBlobSync(model, ["cpu_0/loss_all"])
    if rendezvous is not None:
        rank = rendezvous["shard_id"]
    # Seeded initializers, so the single-process run starts from the parameters rank 0 broadcasts.
    for i, op in enumerate(model.param_init_net.Proto().op):
        op.device_option.random_seed = 17 + i
    ckpt = out / "ckpt.minidb"
    params = sorted(str(b) for b in dpm.GetCheckpointParams(model))
    workspace.FeedBlob("cpu_0/data", np.zeros((batch, D_IN), np.float32))
    workspace.FeedBlob("cpu_0/label", np.zeros(batch, np.int32))
    dpm.RunInitNet(model)
    start = 0
    if a.resume:
        if rank == 0:
            workspace.RunOperatorOnce(core.CreateOperator("Load", [], params, db=str(ckpt), db_type="minidb",
                                                          absolute_path=1))
        dpm.FinalizeAfterCheckpoint(model)
        start = int(workspace.FetchBlob("cpu_0/ITER")[0])
        print(f"rank {rank}: resumed at step {start}", flush=True)
    save = core.CreateOperator("Save", params, [], db=str(ckpt), db_type="minidb", absolute_path=1)
    for step in range(start, a.steps):
        x, y = batch_for(step, a.ranks * a.batch)
        lo = 0 if a.single else rank * batch
        workspace.FeedBlob("cpu_0/data", x[lo:lo + batch])
        workspace.FeedBlob("cpu_0/label", y[lo:lo + batch])
        if step == a.kill_at and rank == a.kill_rank:
            print(f"rank {rank}: sending myself SIG{a.signal} at step {step}", flush=True)
            (out / "killed_at").write_text(repr(time.time()))
            os.kill(os.getpid(), getattr(signal, "SIG" + a.signal))
        dpm.RunNet(model, 1)
        if a.ckpt_every and (step + 1) % a.ckpt_every == 0 and rank == 0:
            workspace.RunOperatorOnce(save)
        loss = float(workspace.FetchBlob("cpu_0/loss"))
        if not a.single:
            from mpi4py import MPI
            total = MPI.COMM_WORLD.allreduce(loss)
            assert abs(float(workspace.FetchBlob("cpu_0/loss_all")) - total) < 1e-5 * max(1.0, abs(total))
        print(f"rank {rank}: step {step} loss {loss:.6f}", flush=True)
    blobs = {b: workspace.FetchBlob(b) for b in params}
    np.savez(out / f"params_rank{rank}.npz", **{k.replace("/", "__"): v for k, v in blobs.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
