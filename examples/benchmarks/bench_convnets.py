"""Conv-net predict latency, netjit against onnxruntime, side by side with issue 12's targets.

Rows: LeNet (the MNIST tutorial's deploy net, real digits) at batch 1, 8 and 64; SqueezeNet 1.1
(built as bench_compile.py builds it, seeded random weights), inception_v1 and ResNet-50 (model-zoo
predict nets, ``zoo.random_zoo_weights``) at batch 1 and 8, all at 224x224. netjit serves each net
through ``workspace.Predictor`` with the compiled executor; onnxruntime runs an ONNX graph
converted from the very same Caffe2 net and weights (c2_to_onnx.py), all graph optimisations on.
Outputs are compared before timing (the ``max|diff|`` column: the softmax outputs).

Each engine runs in its own worker process and the workers take turns (bench_lenet.py's harness:
its docstring says why). Both engines get the same thread count (default 2, issue 12's setting):
numba's and OpenBLAS's for netjit, ``intra_op_num_threads`` for onnxruntime.

    python examples/benchmarks/bench_convnets.py                       # every row (~3 min)
    python examples/benchmarks/bench_convnets.py --nets resnet50 --batches 1
    python examples/benchmarks/bench_convnets.py --nets inception_v1 --rounds 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_lenet as L  # noqa: E402
from netjit.mnist_data import DEFAULT_MNIST_DIR  # noqa: E402

NETS = ("lenet", "squeezenet", "inception_v1", "resnet50")
BATCHES = {"lenet": (1, 8, 64), "squeezenet": (1, 8), "inception_v1": (1, 8), "resnet50": (1, 8)}
ENGINES = ("netjit compiled", "onnxruntime")


def target(net: str, batch: int) -> float:
    """Issue 12: within 1.3x of onnxruntime, LeNet batch 64 within 1.0x."""
    return 1.0 if (net, batch) == ("lenet", 64) else 1.3


# ------------------------------------------------------------------------------ the nets
def conv_net(name: str, batch: int) -> tuple[Any, dict[str, np.ndarray], str, np.ndarray]:
    """``(predict NetDef, weights, input blob, input of this batch)`` for a 224x224 net."""
    if name == "squeezenet":
        import bench_compile
        from netjit.compiler.codegen import warmup_nets
        b = bench_compile._squeezenet(warmup_nets)
        weights = {k: v for k, v in b.feeds.items() if k != "data"}
        net, data, shape = b.net, "data", b.feeds["data"].shape
    else:
        from netjit import zoo
        net, data, shape = zoo.load_zoo_net(name)
        weights = zoo.random_zoo_weights(name)
    x = np.random.default_rng(1).standard_normal((batch,) + tuple(shape[1:])).astype(np.float32)
    return net, weights, data, x


def build(engine: str, case: str, batch: int, mnist_dir: Path, threads: int | None) -> tuple[Callable[[], Any], Any]:
    """``(call, first output)`` of one engine on one net at one batch size."""
    import bench_engines as E
    if case == "lenet":
        return E.build(engine, "predict", batch, mnist_dir, threads)
    from caffe2.python import workspace
    from netjit.bench import executor
    from netjit.proto import caffe2_pb2
    net, weights, data, x = conv_net(case, batch)
    out = net.external_output[0]
    if engine.startswith("netjit"):
        workspace.SwitchWorkspace(f"bench_{case}", True)
        workspace.ResetWorkspace()
        for name, value in weights.items():
            workspace.FeedBlob(name, value)
        with executor(engine.split()[1]):
            predictor = workspace.Predictor(caffe2_pb2.NetDef(name=f"{case}_init"), net)
        feed = {data: x}
        return (lambda: predictor.run(feed)), predictor.run(feed)[0]
    if engine == "onnxruntime":
        from c2_to_onnx import netdef_to_onnx
        shapes = E.blob_shapes(net, {data: x}, weights)
        model = netdef_to_onnx(net, weights, {data: x.shape}, [out], shapes)
        session = E.ort_session(model, threads)
        feed = {data: x}
        return (lambda: session.run(None, feed)), session.run(None, feed)[0]
    raise ValueError(f"no engine {engine!r} for {case}")


def _worker(conn: Any, engine: str, case: str, batch: int, mnist_dir: str, threads: int | None) -> None:
    """bench_lenet's worker protocol over this module's ``build``."""
    def make() -> tuple[Callable[[], Any], np.ndarray]:
        call, check = build(engine, case, batch, Path(mnist_dir), threads)
        return call, np.asarray(check)
    L.serve(conn, make)


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", choices=NETS, default=list(NETS))
    parser.add_argument("--batches", nargs="+", type=int, help="only these batch sizes (default: each net's)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    parser.add_argument("--batch-seconds", type=float, default=0.25, help="time per engine per round")
    parser.add_argument("--threads", type=int, default=2, help="threads for both engines (default 2)")
    parser.add_argument("--settle", type=float, default=0.3, help="idle seconds before each timed batch")
    parser.add_argument("--mnist-dir", type=Path, default=DEFAULT_MNIST_DIR)
    args = parser.parse_args(argv)
    for var in L.THREAD_VARS:  # read by each worker's libraries when they load
        os.environ[var] = str(args.threads)
    _, info = L.available()
    print(f"machine: {L.machine()}")
    print(f"{', '.join(info)}; {args.threads} threads per engine; load average at start {os.getloadavg()[0]:.2f}")
    head = (f"{'net':13s} {'batch':>5s} {'netjit ms':>9s} {'(min-max)':>17s} {'ort ms':>9s} {'(min-max)':>17s}"
            f" {'ratio':>6s} {'target':>6s} {'met':>4s} {'max|diff|':>9s} {'build s nj/ort':>14s}")
    rows = [head, "-" * len(head)]
    print("\n" + head, flush=True)
    for net in args.nets:
        for batch in BATCHES[net]:
            if args.batches and batch not in args.batches:
                continue
            samples, checks, build_s = L.run_case(net, batch, list(ENGINES), args.rounds, args.batch_seconds,
                                                  args.mnist_dir, args.threads, args.settle, target=_worker)
            nj, ort = (statistics.median(samples[e]) for e in ENGINES)
            ratio = nj / ort
            diff = float(np.abs(checks[ENGINES[0]] - checks[ENGINES[1]]).max())
            spread = ["{:.3f}-{:.3f}".format(1e3 * min(samples[e]), 1e3 * max(samples[e])) for e in ENGINES]
            row = (f"{net:13s} {batch:5d} {1e3 * nj:9.3f} {spread[0]:>17s} {1e3 * ort:9.3f} {spread[1]:>17s}"
                   f" {ratio:6.2f} {target(net, batch):6.1f} {'yes' if ratio <= target(net, batch) else 'NO':>4s}"
                   f" {diff:9.1e} {build_s[ENGINES[0]]:6.1f}/{build_s[ENGINES[1]]:<6.1f}")
            rows.append(row)
            print(row, flush=True)
    print(f"\nmedian over {args.rounds} rounds; load average at the end {os.getloadavg()[0]:.2f} "
          "(other processes on this VM skew the numbers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
