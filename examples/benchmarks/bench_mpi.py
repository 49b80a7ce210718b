"""MPI collectives and data-parallel training: netjit's Allreduce op against mpi4py's own, and LeNet
training throughput on 2 ranks against 1.

    python examples/benchmarks/bench_mpi.py [--rounds 2] [--steps 40] [--mb 25]

The script launches itself under ``mpiexec`` for each measurement (as root it adds Open MPI's
allow-run-as-root switches) and prints one table. Each rank runs on one core (numba and OpenBLAS
pinned to one thread), so "2 ranks x 1 core" is compared with "1 rank x 1 core" at the same per-rank
batch. A third row runs two 1-rank jobs side by side with no communication at all: the most a second
process can add on this machine now (on a shared VM, much less than 2x). Targets (issue #15): Allreduce through netjit <= 1.1x mpi4py on the same 25 MB float32
buffer; 2-rank LeNet throughput >= 1.6x one rank.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ on the ranks
def rank_allreduce(mb: float, reps: int) -> dict:
    """Per call, median over ``reps``: mpi4py's Allreduce(IN_PLACE) and netjit's Allreduce op, taking
    turns on one buffer (the workspace blob itself)."""
    from netjit.runtime.mpi_world import load_mpi
    MPI = load_mpi()
    from caffe2.python import core, workspace
    from netjit.runtime.workspace import REGISTRY
    comm = MPI.COMM_WORLD
    init = core.Net("bench_init")
    init.CreateCommonWorld([], ["cw"], engine="MPI")
    workspace.RunNetOnce(init)
    # Zeros stay zeros under repeated in-place sums (no overflow to inf over the repetitions).
    workspace.FeedBlob("x", np.zeros(int(mb * 2**20 / 4), np.float32))
    net = core.Net("bench_allreduce")
    net.Allreduce(["cw", "x"], ["x"], engine="MPI")
    workspace.CreateNet(net)
    buf = REGISTRY.current.blobs["x"]
    direct, through = [], []
    for i in range(reps + 3):
        comm.Barrier()
        t = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        d = time.perf_counter() - t
        comm.Barrier()
        t = time.perf_counter()
        workspace.RunNet(net)
        n = time.perf_counter() - t
        if i >= 3:
            direct.append(d)
            through.append(n)
    assert REGISTRY.current.blobs["x"] is buf, "the op reduced a copy, not the blob"
    return {"mpi4py_ms": 1e3 * statistics.median(direct), "netjit_ms": 1e3 * statistics.median(through),
            "bytes": buf.nbytes, "ranks": comm.Get_size()}


def rank_lenet(batch: int, steps: int) -> dict:
    """Training steps per second of the data-parallel LeNet (fed batches; no DB in the loop)."""
    from netjit.runtime.mpi_world import load_mpi
    MPI = load_mpi()
    from caffe2.python import data_parallel_model as dpm, model_helper, workspace
    sys.path.insert(0, str(REPO / "examples"))
    from mnist_data_parallel import forward, sgd
    comm = MPI.COMM_WORLD
    model = model_helper.ModelHelper(name="bench_lenet")
    rendezvous = dict(kv_handler=None, shard_id=None, num_shards=None, engine="MPI")
    dpm.Parallelize(model, input_builder_fun=lambda m: None, forward_pass_builder_fun=forward,
                    param_update_builder_fun=sgd, devices=[0], cpu_device=True, rendezvous=rendezvous)
    rng = np.random.default_rng(comm.Get_rank())
    workspace.FeedBlob("cpu_0/data", rng.random((batch, 1, 28, 28), dtype=np.float32))
    workspace.FeedBlob("cpu_0/label", rng.integers(0, 10, batch).astype(np.int32))
    dpm.RunInitNet(model)
    dpm.RunNet(model, 5)                      # compile and warm up
    comm.Barrier()
    t = time.perf_counter()
    dpm.RunNet(model, steps)
    comm.Barrier()
    elapsed = time.perf_counter() - t
    size = comm.Get_size()
    return {"ranks": size, "batch": batch, "steps": steps, "step_ms": 1e3 * elapsed / steps,
            "images_per_s": size * batch * steps / elapsed}


# ------------------------------------------------------------------------------ the driver
def launch(n: int, part: str, args: argparse.Namespace, copies: int = 1) -> list[dict]:
    """Run ``part`` on ``n`` ranks; ``copies`` independent jobs at once (the machine's own ceiling
    for two processes, with no communication between them). One result per job."""
    mpiexec = Path(sys.executable).parent / "mpiexec"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [str(mpiexec if mpiexec.exists() else "mpiexec"), "--oversubscribe", "-n", str(n),
           sys.executable, __file__, "--part", part, "--steps", str(args.steps), "--mb", str(args.mb),
           "--batch", str(args.batch), "--reps", str(args.reps)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(copies)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-2000:]}{err[-2000:]}")
        line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][0]
        results.append(json.loads(line[len("RESULT "):]))
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2, help="alternating 1-rank/2-rank LeNet runs")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--mb", type=float, default=25.0)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--part", choices=["allreduce", "lenet"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.part:
        from netjit.runtime.mpi_world import load_mpi   # netjit's MPI settings (waiting ranks yield)
        MPI = load_mpi()
        result = rank_allreduce(args.mb, args.reps) if args.part == "allreduce" else rank_lenet(args.batch, args.steps)
        if MPI.COMM_WORLD.Get_rank() == 0:
            print("RESULT " + json.dumps(result), flush=True)
        return 0

    load = os.getloadavg()[0]
    ar = launch(2, "allreduce", args)[0]
    one, two, apart = [], [], []
    for _ in range(args.rounds):
        one.append(launch(1, "lenet", args)[0]["images_per_s"])
        two.append(launch(2, "lenet", args)[0]["images_per_s"])
        apart.append(sum(r["images_per_s"] for r in launch(1, "lenet", args, copies=2)))
    load_after = os.getloadavg()[0]
    ratio = ar["netjit_ms"] / ar["mpi4py_ms"]
    speedup = max(two) / max(one)
    rows = [
        ("Allreduce %.0f MB f32, 2 ranks: mpi4py" % (ar["bytes"] / 2**20), f"{ar['mpi4py_ms']:.2f} ms", ""),
        ("  netjit Allreduce op (RunNet)", f"{ar['netjit_ms']:.2f} ms", f"{ratio:.3f}x mpi4py (target <= 1.1x)"),
        (f"LeNet train b{args.batch}/rank, 1 rank x 1 core", f"{max(one):.0f} img/s",
         "runs: " + ", ".join(f"{v:.0f}" for v in one)),
        (f"LeNet train b{args.batch}/rank, 2 ranks x 1 core", f"{max(two):.0f} img/s",
         "runs: " + ", ".join(f"{v:.0f}" for v in two)),
        ("  2 ranks / 1 rank (best runs)", f"{speedup:.2f}x", "target >= 1.6x"),
        ("2 independent 1-rank jobs at once (sum)", f"{max(apart):.0f} img/s",
         f"{max(apart) / max(one):.2f}x one rank: what the machine gives a second process"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"bench_mpi ({time.strftime('%Y-%m-%d %H:%M')}; load average {load:.2f} before, {load_after:.2f} after)")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
