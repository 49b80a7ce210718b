"""A 6-op elementwise chain over 4M float32 values: compiled (one fused kernel) vs numpy op by op
vs a plain copy's bandwidth.

    python examples/benchmarks/bench_fusion.py [--n 4194304] [--repeat 15] [--quick]

The chain is y = sigmoid(relu(x*2 + 1) - 0.5) * x as Caffe2 ops (Scale, Add, Relu, Sub, Sigmoid,
Mul). Effective bandwidth counts 8 bytes per element (read x, write y), as for the copy. The fused
kernel cuts a loop this large across numba's threads (compiler/codegen/loops.py); the "1 thread" row
runs the same kernel with ``numba.set_num_threads(1)`` (its serial path).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numba
import numpy as np

from netjit import core
from netjit.compiler import api
from netjit.compiler.runner import make_runner
from netjit.runtime.workspace import Workspace


def chain_net() -> core.Net:
    net = core.Net("chain6")
    x, one, half = "x", "one", "half"
    t1 = net.Scale([x], ["t1"], scale=2.0)
    t2 = net.Add([t1, one], ["t2"], broadcast=1)
    t3 = net.Relu([t2], ["t3"])
    t4 = net.Sub([t3, half], ["t4"], broadcast=1)
    t5 = net.Sigmoid([t4], ["t5"])
    net.Mul([t5, x], ["y"])
    net.Proto().external_output.append("y")
    return net


def timed(fn, repeat: int) -> tuple[float, float, float]:
    fn()
    ts = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - start) * 1e3)
    return statistics.median(ts), min(ts), max(ts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="64K elements, 3 repeats: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeat = 65536, 3
    rng = np.random.default_rng(0)
    x = rng.standard_normal(args.n).astype(np.float32)
    y = np.empty_like(x)
    feeds = {"x": x, "one": np.ones(1, np.float32), "half": np.full(1, 0.5, np.float32)}
    net = chain_net().Proto()

    def numpy_temporaries() -> np.ndarray:
        return 1 / (1 + np.exp(-(np.maximum(x * 2 + 1, 0) - 0.5))) * x

    t = np.empty_like(x)

    def numpy_out() -> np.ndarray:
        np.multiply(x, np.float32(2), out=t)
        np.add(t, np.float32(1), out=t)
        np.maximum(t, np.float32(0), out=t)
        np.subtract(t, np.float32(0.5), out=t)
        np.negative(t, out=t)
        np.exp(t, out=t)
        np.add(t, np.float32(1), out=t)
        np.divide(np.float32(1), t, out=t)
        np.multiply(t, x, out=y)
        return y

    ws_c = Workspace("compiled")
    ws_r = Workspace("reference")
    ws_v = Workspace("visible")
    for ws in (ws_c, ws_r, ws_v):
        for k, v in feeds.items():
            ws.feed(k, v)
    exe = api.compile(net, inputs=feeds)
    ref_runner = make_runner(net, ws_r, "reference")
    vis_runner = make_runner(net, ws_v, "compiled")
    def one_thread() -> None:
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            exe.run(ws_c)
        finally:
            numba.set_num_threads(threads)

    rows = [
        ("copy (np.copyto)", lambda: np.copyto(y, x)),
        ("numpy expression (temporaries)", numpy_temporaries),
        ("numpy op by op, out= buffers", numpy_out),
        ("reference executor (RunNet)", ref_runner.run),
        ("compiled, all blobs visible", vis_runner.run),
        ("compiled, fused, 1 thread", one_thread),
        ("compiled, outputs=[y] (fused)", lambda: exe.run(ws_c)),
    ]
    results = {name: timed(fn, args.repeat) for name, fn in rows}
    exe.run(ws_c)
    err = float(np.max(np.abs(ws_c.get("y").astype(np.float64) - numpy_temporaries())))
    nbytes = 8 * args.n
    print(f"6-op chain over {args.n} float32 ({nbytes / 1e6:.1f} MB moved at 8 B/element); "
          f"{args.repeat} repeats; max abs error of the fused result vs numpy: {err:.2e}")
    print(f"{'':34s} {'median ms':>10s} {'min ms':>8s} {'max ms':>8s} {'GB/s':>7s} {'vs numpy':>9s}")
    base = results["numpy op by op, out= buffers"][0]
    for name, (med, lo, hi) in results.items():
        print(f"{name:34s} {med:10.2f} {lo:8.2f} {hi:8.2f} {nbytes / med / 1e6:7.1f} {base / med:8.1f}x")
    fused, copy = results["compiled, outputs=[y] (fused)"][0], results["copy (np.copyto)"][0]
    print(f"fused chain ({numba.get_num_threads()} threads): {base / fused:.1f}x numpy op by op (out=), "
          f"{results['numpy expression (temporaries)'][0] / fused:.1f}x numpy with temporaries, "
          f"{copy / fused * 100:.0f}% of copy bandwidth (targets: >= 5x, >= 70%)")
    single = results["compiled, fused, 1 thread"][0]
    print(f"fused chain (1 thread): {base / single:.1f}x numpy op by op, {copy / single * 100:.0f}% of copy bandwidth")


if __name__ == "__main__":
    main()
