"""LeNet (the MNIST tutorial's, examples/mnist.py) and ResNet-50: netjit vs PyTorch vs onnxruntime.

Rows, all on the same weights and the same real MNIST digits (bench_engines.py builds them):
- LeNet training step, batch 64: forward + backward + SGD update. netjit runs the tutorial's
  training net (brew LeNet, LabelCrossEntropy, AveragedLoss, AddGradientOperators, Iter,
  LearningRate, WeightedSum) with ``workspace.RunNet``; PyTorch eager runs the same layers with
  ``cross_entropy`` and ``optim.SGD``.
- LeNet predict latency, batch 1 and 64: ``workspace.Predictor`` over the mobile_exporter pair
  (compiled and reference executors), PyTorch eager under ``inference_mode``, onnxruntime on an
  ONNX graph converted from the same Caffe2 predict net (c2_to_onnx.py).
- ResNet-50 predict latency, batch 1 (model-zoo net, ``zoo.random_zoo_weights``): netjit
  compiled and reference, onnxruntime.

Each engine lives in its own worker process: torch's OpenMP pool, OpenBLAS's and onnxruntime's
threads all spin-wait after work, and in one process on two cores they starve each other (measured
here: a PyTorch LeNet step went from 20 ms to 300 ms with numpy/onnxruntime in the same process).
The workers take turns (round-robin, each round times a batch of calls of every engine), so load
from other processes on this shared VM hits all engines alike. Tables give the median per-call
time over rounds, the min-max spread, and the ratio to PyTorch / onnxruntime; engine outputs are
compared numerically before timing.

    python examples/benchmarks/bench_lenet.py                  # everything, default threads (~2 min)
    python examples/benchmarks/bench_lenet.py --threads 1 --skip-resnet --profile
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_engines as E  # noqa: E402
from netjit.mnist_data import DEFAULT_MNIST_DIR  # noqa: E402

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


# ------------------------------------------------------------------------------ workers
def serve(conn: Any, make: Any) -> None:
    """A worker's loop: ``make()`` builds the engine and returns (call, first output); report that
    output, then time ``n`` calls per request until None. bench_convnets.py serves through it too."""
    try:
        started = time.perf_counter()
        call, check = make()
        conn.send(("ready", check, time.perf_counter() - started))
    except Exception:  # report, do not hang the parent
        conn.send(("error", traceback.format_exc(), 0.0))
        return
    while True:
        n = conn.recv()
        if n is None:
            return
        start = time.perf_counter()
        for _ in range(n):
            call()
        conn.send((time.perf_counter() - start) / n)


def _worker(conn: Any, engine: str, case: str, batch: int, mnist_dir: str, threads: int | None) -> None:
    """Build the engine, report its first output, then time ``n`` calls per request until None."""
    serve(conn, lambda: E.build(engine, case, batch, Path(mnist_dir), threads))


class Worker:
    """One engine in its own process. ``target``: the worker function (``_worker`` here; other
    benchmarks pass their own with the same signature and protocol)."""

    def __init__(self, ctx: Any, engine: str, case: str, batch: int, mnist_dir: Path, threads: int | None,
                 target: Any = None):
        self.engine = engine
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target or _worker,
                                args=(child, engine, case, batch, str(mnist_dir), threads), daemon=True)
        self.proc.start()
        status, self.check, self.build_s = self.conn.recv()
        if status != "ready":
            self.close()
            raise RuntimeError(f"{engine} ({case}) failed to build:\n{self.check}")
        self.calls = 1

    def time(self, n: int) -> float:
        self.conn.send(n)
        return self.conn.recv()

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=10)


def run_case(case: str, batch: int, engines: list[str], rounds: int, batch_s: float, mnist_dir: Path,
             threads: int | None, settle_s: float,
             target: Any = None) -> tuple[dict[str, list[float]], dict[str, Any], dict[str, float]]:
    """Per-call seconds of each engine over interleaved rounds, plus each engine's first output
    and build time (process start to first result, compile included).

    ``settle_s``: a pause before each timed batch. OpenBLAS worker threads busy-wait for about
    0.1 s after a GEMM (and OpenMP's for a while after a parallel region) before they sleep; without
    the pause, the engine timed just before steals one of the two cores from the next one."""
    ctx = mp.get_context("spawn")
    workers: list[Worker] = []
    try:
        for engine in engines:  # one at a time, so build/compile times are not inflated by each other
            workers.append(Worker(ctx, engine, case, batch, mnist_dir, threads, target))
        for w in workers:
            w.time(3)                                   # warm-up
            time.sleep(settle_s)
            w.calls = max(1, int(batch_s / max(w.time(2), 1e-7)))
        samples: dict[str, list[float]] = {w.engine: [] for w in workers}
        for r in range(rounds):
            for w in workers[r % len(workers):] + workers[:r % len(workers)]:
                time.sleep(settle_s)
                samples[w.engine].append(w.time(w.calls))
        return samples, {w.engine: w.check for w in workers}, {w.engine: w.build_s for w in workers}
    finally:
        for w in workers:
            w.close()


# ------------------------------------------------------------------------------ reporting
def table(title: str, samples: dict[str, list[float]], baselines: list[str]) -> str:
    med = {k: statistics.median(v) for k, v in samples.items()}
    present = [b for b in baselines if b in med]
    head = f"{'engine':20s} {'median ms':>10s} {'min-max ms':>19s}" + "".join(f" {'x ' + b:>14s}" for b in present)
    lines = [title, head, "-" * len(head)]
    for name, values in samples.items():
        spread = f"{1e3 * min(values):.3f}-{1e3 * max(values):.3f}"
        lines.append(f"{name:20s} {1e3 * med[name]:10.3f} {spread:>19s}"
                     + "".join(f" {med[name] / med[b]:14.2f}" for b in present))
    return "\n".join(lines)


def compare_notes(case: str, checks: dict[str, Any], build_s: dict[str, float]) -> list[str]:
    notes = [", ".join(f"{e}: {s:.2f} s" for e, s in build_s.items()) + " to build and run once (process start, "
             "imports, compile)"]
    ref = "netjit compiled"
    for engine, check in checks.items():
        if engine == ref or ref not in checks:
            continue
        if case == "train":
            diff = {p: float(np.abs(check[p] - checks[ref][p]).max()) for p in E.LENET_PARAMS}
            dense = max(v for p, v in diff.items() if p.startswith(("fc3", "pred", "conv2_w")))
            conv = max(v for p, v in diff.items() if p.startswith(("conv1", "conv2_b")))
            extra = "" if engine.startswith("netjit") else (
                " (Caffe2's MaxPoolGradient feeds every tied maximum, PyTorch only one; blank MNIST areas tie)")
            notes.append(f"{engine} vs {ref}: loss {check['loss']:.6f} vs {checks[ref]['loss']:.6f}; after one SGD "
                         f"step max |param diff| fc3/pred/conv2_w {dense:.1e}, conv1/conv2_b {conv:.1e}{extra}")
        else:
            notes.append(f"{engine} vs {ref}: max |softmax diff| {np.abs(check - checks[ref]).max():.1e}")
    return notes


# ------------------------------------------------------------------------------ profile
def profile_train(mnist_dir: Path, steps: int = 20) -> str:
    """Where a compiled training step spends its time: cProfile's top functions, each op's numpy
    reference time (as ``netjit bench --per-op``), and the compiled plan's steps."""
    import cProfile
    import io
    import pstats

    from caffe2.python import workspace
    from netjit.bench import compiled_steps, format_table, per_op
    call, _, model = E.netjit_train("compiled", mnist_dir)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        call()
    prof.disable()
    text = io.StringIO()
    text.write(f"cProfile of {steps} compiled training steps (divide by {steps} for one step):\n")
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(15)
    images, labels = E.mnist_batch(mnist_dir, E.TRAIN_BATCH)
    ops = per_op(model.net.Proto(), model.param_init_net.Proto(), {"data": images, "label": labels.astype(np.int32)})
    workspace.SwitchWorkspace("default")
    return "\n".join([text.getvalue(), format_table(ops, "per op (numpy reference), one training step"), "",
                      "\n".join(compiled_steps(model.net.Proto()))])


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def available() -> tuple[list[str], list[str]]:
    """Engines that can run here, and a line per library version (or why a column is missing)."""
    import numba
    engines = ["netjit compiled", "netjit reference"]
    info = [f"numpy {np.__version__}", f"numba {numba.__version__}"]
    try:
        import torch
        engines.append("torch eager")
        info.append(f"torch {torch.__version__}")
    except ImportError:
        info.append("torch not importable: no PyTorch column")
    try:
        import onnx  # noqa: F401
        import onnxruntime
        engines.append("onnxruntime")
        info.append(f"onnxruntime {onnxruntime.__version__}")
    except ImportError:
        info.append("onnx/onnxruntime not installed: no onnxruntime column")
    return engines, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (default 7)")
    parser.add_argument("--batch-seconds", type=float, default=0.25, help="time per engine per round")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for every engine (OpenBLAS, numba, torch, onnxruntime); default: theirs")
    parser.add_argument("--settle", type=float, default=0.3,
                        help="idle seconds before each timed batch, so the previous engine's spinning "
                             "threads go to sleep (default 0.3)")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--only", choices=["train", "predict", "resnet50"], action="append",
                        help="run only these cases (repeatable)")
    parser.add_argument("--profile", action="store_true", help="profile a compiled LeNet training step")
    parser.add_argument("--mnist-dir", type=Path, default=DEFAULT_MNIST_DIR)
    args = parser.parse_args(argv)
    if args.threads is not None:
        for var in THREAD_VARS:  # read by each worker's libraries when they load
            os.environ[var] = str(args.threads)

    engines, info = available()
    baselines = [b for b in ("torch eager", "onnxruntime") if b in engines]
    print(f"machine: {machine()}")
    print(f"{', '.join(info)}; threads per engine: {args.threads or 'library default'}; OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; load average at start {os.getloadavg()[0]:.2f}")
    cases = [("train", E.TRAIN_BATCH, "LeNet training step, batch 64 (forward + backward + SGD update)",
              [e for e in engines if e != "onnxruntime"]),
             ("predict", 1, "LeNet predict, batch 1", engines),
             ("predict", 64, "LeNet predict, batch 64", engines)]
    if not args.skip_resnet:
        cases.append(("resnet50", 1, "ResNet-50 predict, batch 1 (model-zoo net, random weights)",
                      [e for e in engines if e != "torch eager"]))
    cases = [c for c in cases if not args.only or c[0] in args.only]
    for case, batch, title, names in cases:
        rounds = args.rounds if case != "resnet50" else max(3, args.rounds // 2)
        samples, checks, build_s = run_case(case, batch, names, rounds, args.batch_seconds, args.mnist_dir,
                                            args.threads, args.settle)
        print("\n" + table(title, samples, baselines))
        print("\n".join("  " + n for n in compare_notes(case, checks, build_s)))
    if args.profile:
        print("\n" + profile_train(args.mnist_dir))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f} (other processes on this VM skew the numbers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
