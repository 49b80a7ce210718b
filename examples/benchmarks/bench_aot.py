"""Ahead-of-time bundles against the JIT: per-run latency and `netjit aot` build times.

For each net and batch it builds a bundle (timing the build), then times, median over repeats:
- ``jit``: ``workspace.Predictor(init, predict).run([x])`` (compiled, warm; its kernels on numba's
  threads, ``jit-1t``: after ``numba.set_num_threads(1)``, serial like a bundle's);
- ``aot-c``: the bundle's C entry ``NAME_run`` called through ctypes on preallocated buffers, on
  the bundle's own thread pool (``thr``: its ``NAME_get_num_threads()``, the online CPUs unless
  ``--threads``); ``aot-c-1t``: the same after ``NAME_set_num_threads(1)``;
- ``aot-py``: ``netjit.aot.load(folder).run([x])`` (checks inputs, allocates the outputs);
and the max abs difference between the bundle's and the JIT's outputs. ``c/jit`` and ``py/jit`` are
the figures the AOT latency target reads (<= 1.05x). The load average is printed with the table.

    python examples/benchmarks/bench_aot.py                       # LeNet and ResNet-50, batch 1 and 8
    python examples/benchmarks/bench_aot.py --nets lenet --batches 1 --repeat 200
"""
from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numba
import numpy as np

from netjit import aot, mobile_exporter, workspace, zoo
from netjit.compiler.aot import build_bundle
from netjit.proto.io import load_net

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def lenet() -> tuple[Any, Any, str, tuple[int, ...]]:
    root = SHARED / "models" / "lenet_pytorch_export"
    return load_net(root / "init_net.pb"), load_net(root / "predict_net.pb"), "1", (1, 28, 28)


def zoo_net(name: str) -> tuple[Any, Any, str, tuple[int, ...]]:
    net, data, shape = zoo.load_zoo_net(name)
    for blob, value in zoo.random_zoo_weights(name).items():
        workspace.FeedBlob(blob, value)
    init, _ = mobile_exporter.Export(workspace, net, list(zoo.zoo_param_shapes(name)))
    return init, net, data, tuple(shape[1:])


def median_us(fn: Callable[[], Any], repeat: int, budget_s: float = 10.0) -> float:
    fn()
    times = []
    start = time.perf_counter()
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s and len(times) >= 5:
            break
    return statistics.median(times) * 1e6


def c_entry(folder: Path, name: str, x: np.ndarray, out_shape: tuple[int, ...],
            blas_threads: int = 1) -> tuple[Callable[[], int], Callable[[int], int]]:
    """The C entry on preallocated buffers, and a setter of the bundle's thread count (returns the
    count then in force)."""
    lib = ctypes.CDLL(str(folder / f"{name}.so"))
    getattr(lib, f"{name}_set_blas_threads")(blas_threads)
    set_threads, get_threads = getattr(lib, f"{name}_set_num_threads"), getattr(lib, f"{name}_get_num_threads")
    set_threads.argtypes = [ctypes.c_int]
    for f in ("weights_bytes", "scratch_bytes"):
        getattr(lib, f"{name}_{f}").restype = ctypes.c_size_t
    weights = np.fromfile(folder / f"{name}.weights.bin", np.uint8)
    scratch = np.empty(getattr(lib, f"{name}_scratch_bytes")() + 64, np.uint8)
    out = np.empty(out_shape, np.float32)
    ins = (ctypes.c_void_p * 1)(x.ctypes.data)
    outs = (ctypes.c_void_p * 1)(out.ctypes.data)
    run = getattr(lib, f"{name}_run")
    run.argtypes = [ctypes.c_void_p] * 4
    w, s = weights.ctypes.data, scratch.ctypes.data + (-scratch.ctypes.data) % 64
    keep = (weights, scratch, out, x)      # the buffers must outlive the closure's raw pointers

    def call() -> int:
        return run(w, s, ins, outs) + 0 * len(keep)

    def threads(n: int) -> int:
        set_threads(n)
        return get_threads()
    return call, threads


def bench(label: str, make: Callable[[], tuple], batches: list[int], repeat: int, out_root: Path,
          threads: int) -> None:
    init, predict, data, item_shape = make()
    predictor = workspace.Predictor(init, predict)
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch,) + item_shape).astype(np.float32)
        name = f"{label}_b{batch}"
        t = time.perf_counter()
        manifest = build_bundle(init, predict, {data: (batch,) + item_shape}, name, out_root / name, progress=False)
        build_s = time.perf_counter() - t
        bundle = aot.load(out_root / name, num_threads=threads)
        want = predictor.run({data: x})[0]
        got = bundle.run({data: x})[0]
        diff = float(np.abs(got - want).max())
        scale = float(np.abs(want).max())
        jit = median_us(lambda: predictor.run({data: x}), repeat)
        jit_threads = numba.get_num_threads()
        numba.set_num_threads(1)
        jit1 = median_us(lambda: predictor.run({data: x}), repeat)
        numba.set_num_threads(jit_threads)
        call, set_threads = c_entry(out_root / name, name, x, got.shape)
        set_threads(1)
        aot_c1 = median_us(call, repeat)
        aot_threads = set_threads(threads)
        aot_c = median_us(call, repeat)
        aot_py = median_us(lambda: bundle.run({data: x}), repeat)
        print(f"{label:10s} {batch:5d} {jit_threads:3d} {jit:11.1f} {jit1:11.1f} {aot_threads:3d} {aot_c:11.1f} "
              f"{aot_c1:11.1f} {aot_py:11.1f} {aot_c / jit:7.2f}x {aot_py / jit:7.2f}x {diff:9.2e} "
              f"{diff / max(scale, 1e-30):9.2e} {build_s:8.1f} {len(manifest['steps']):5d}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="lenet,resnet50")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="bundle threads (0: the online CPUs)")
    args = parser.parse_args()
    makers = {"lenet": lenet, **{m: (lambda m=m: zoo_net(m)) for m in zoo.zoo_models()}}
    batches = [int(b) for b in args.batches.split(",")]
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'net':10s} {'batch':>5s} {'thr':>3s} {'jit us':>11s} {'jit-1t us':>11s} {'thr':>3s} {'aot-c us':>11s} "
          f"{'aot-c-1t us':>11s} {'aot-py us':>11s} {'c/jit':>8s} {'py/jit':>8s} {'max|diff|':>9s} {'rel diff':>9s} "
          f"{'build s':>8s} {'kern':>5s}")
    with tempfile.TemporaryDirectory(prefix="bench-aot-") as tmp:
        for net in args.nets.split(","):
            bench(net, makers[net], batches, args.repeat, Path(tmp), args.threads)
    print(f"(cores: {os.cpu_count()}; load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"median of up to {args.repeat} runs; build = `netjit aot` wall time with a warm kernel cache)")


if __name__ == "__main__":
    main()
