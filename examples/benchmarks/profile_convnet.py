"""Per-layer time of one conv net: netjit's compiled kernels and host steps, then onnxruntime's
own profile (``enable_profiling``) of the same graph, each summed by op kind and listed by layer.

netjit's figures come from timing wrappers put around every kernel and host step of the compiled
plan (a few microseconds each, so sub-millisecond rows read high); onnxruntime's from its JSON
trace. Run each engine alone (this script runs them one after the other in separate processes).

    python examples/benchmarks/profile_convnet.py resnet50 --batch 1 --top 25
    python examples/benchmarks/profile_convnet.py inception_v1 --engine netjit
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _label(fn: Any, args: tuple) -> str:
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "py_func", None), "__name__", "?")
    shapes = [tuple(a.shape) for a in args if isinstance(a, np.ndarray) and a.ndim > 1][:2]
    ints = [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
    return f"{name} {shapes} {ints[:16]}"


def profile_netjit(net_name: str, batch: int, runs: int) -> list[tuple[str, float]]:
    """(label, best seconds over ``runs``) per compiled step, in plan order."""
    import bench_convnets as B
    import netjit.compiler.execution as ex
    from caffe2.python import workspace
    from netjit.bench import executor
    from netjit.proto import caffe2_pb2

    times: dict[int, list[float]] = collections.defaultdict(list)
    labels: dict[int, str] = {}
    counter = [0]

    def timed(fn: Any) -> Any:
        def call(*args: Any) -> Any:
            k = counter[0]
            counter[0] += 1
            start = time.perf_counter()
            out = fn(*args)
            times[k].append(time.perf_counter() - start)
            labels.setdefault(k, _label(fn, args))
            return out
        return call

    class Env(ex._Env):  # every kernel and host reference of a bound plan goes through ``timed``
        def __setattr__(self, name: str, value: Any) -> None:
            if name in ("kernels", "refs"):
                value = [timed(f) for f in value]
            super().__setattr__(name, value)

    ex._Env = Env
    if net_name == "lenet":
        import bench_engines as E
        from caffe2.python.predictor import mobile_exporter
        from netjit.mnist_data import DEFAULT_MNIST_DIR
        x, _ = E.mnist_batch(DEFAULT_MNIST_DIR, batch)
        for name, value in E.lenet_weights().items():
            workspace.FeedBlob(name, value)
        init, predict = mobile_exporter.Export(workspace, E.lenet_deploy_net(), E.LENET_PARAMS)
        with executor("compiled"):
            predictor = workspace.Predictor(init, predict)
        feed: Any = [x]
    else:
        net, weights, data, x = B.conv_net(net_name, batch)
        for name, value in weights.items():
            workspace.FeedBlob(name, value)
        with executor("compiled"):
            predictor = workspace.Predictor(caffe2_pb2.NetDef(name="init"), net)
        feed = {data: x}
    predictor.run(feed)
    predictor.run(feed)
    times.clear()
    for _ in range(runs):
        counter[0] = 0
        predictor.run(feed)
    return [(labels[k], min(v)) for k, v in sorted(times.items())]


def profile_ort(net_name: str, batch: int, runs: int, threads: int) -> list[tuple[str, float]]:
    """(node name and op, median seconds) per onnxruntime node, from its profiling trace."""
    import bench_convnets as B
    import bench_engines as E
    import onnxruntime as ort
    from c2_to_onnx import netdef_to_onnx
    if net_name == "lenet":
        from netjit.mnist_data import DEFAULT_MNIST_DIR
        net, weights, data = E.lenet_deploy_net().Proto(), E.lenet_weights(), "data"
        x, _ = E.mnist_batch(DEFAULT_MNIST_DIR, batch)
        out = "softmax"
    else:
        net, weights, data, x = B.conv_net(net_name, batch)
        out = net.external_output[0]
    shapes = E.blob_shapes(net, {data: x}, weights)
    model = netdef_to_onnx(net, weights, {data: x.shape}, [out], shapes)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for _ in range(runs + 2):
        session.run(None, {data: x})
    trace = json.loads(Path(session.end_profiling()).read_text())
    per: dict[str, list[float]] = collections.defaultdict(list)
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            args = event.get("args", {})
            per[f"{event['name'][:-12]} {args.get('op_name', '')}"].append(event["dur"] * 1e-6)
    return [(k, sorted(v)[len(v) // 2]) for k, v in per.items()]


def report(title: str, rows: list[tuple[str, float]], top: int) -> None:
    total = sum(t for _, t in rows)
    print(f"\n{title}: {1e3 * total:.2f} ms over {len(rows)} steps")
    kinds: dict[str, float] = collections.defaultdict(float)
    for label, t in rows:
        kinds[label.split()[-1] if "[" not in label else label.split()[0]] += t
    for kind, t in sorted(kinds.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {kind:40s} {1e3 * t:8.2f} ms {100 * t / total:5.1f} %")
    print(f"  top {top} steps:")
    for label, t in sorted(rows, key=lambda kv: -kv[1])[:top]:
        print(f"  {1e3 * t:8.3f} ms  {label[:150]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("net", choices=("lenet", "squeezenet", "inception_v1", "resnet50"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--engine", choices=("both", "netjit", "ort"), default="both")
    parser.add_argument("--child", choices=("netjit", "ort"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        rows = (profile_netjit(args.net, args.batch, args.runs) if args.child == "netjit"
                else profile_ort(args.net, args.batch, args.runs, args.threads))
        report(f"{args.child} {args.net} batch {args.batch} (load {os.getloadavg()[0]:.2f})", rows, args.top)
        return 0
    env = {**os.environ, **{v: str(args.threads) for v in
                            ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}}
    for engine in (("netjit", "ort") if args.engine == "both" else (args.engine,)):
        subprocess.run([sys.executable, __file__, args.net, "--batch", str(args.batch), "--runs", str(args.runs),
                        "--top", str(args.top), "--threads", str(args.threads), "--child", engine], env=env,
                       check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
