"""Optimizer updates: the numpy reference against the compiled kernel, per update of one parameter.

Each update op runs in place on a float32 parameter of N elements (MomentumSGDUpdate, Adagrad, Adam,
RmsProp, Ftrl); the table gives the median milliseconds per RunNet over the repeats.

    python examples/benchmarks/bench_optimizers.py                  # N = 2**20
    python examples/benchmarks/bench_optimizers.py --size 4096 --repeat 200
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from netjit import core, workspace

UPDATES = {
    "MomentumSGDUpdate": lambda n: n.MomentumSGDUpdate(["g", "m", "lr", "w"], ["g", "m", "w"], momentum=0.9),
    "Adagrad": lambda n: n.Adagrad(["w", "v", "g", "lr"], ["w", "v"]),
    "Adam": lambda n: n.Adam(["w", "m", "v", "g", "lr", "it"], ["w", "m", "v"]),
    "RmsProp": lambda n: n.RmsProp(["g", "v", "m", "one"], ["g", "v", "m"]),
    "Ftrl": lambda n: n.Ftrl(["w", "nz", "g"], ["w", "nz"]),
}


def _feed(size: int) -> None:
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)   # noqa: E731
    blobs = {"w": f(size), "g": f(size), "m": np.zeros(size, np.float32), "v": np.zeros(size, np.float32),
             "lr": np.array(-0.01, np.float32), "it": np.array([1], np.int64), "one": np.array([1.0], np.float32),
             "nz": np.abs(f(size, 2))}
    for name, value in blobs.items():
        workspace.FeedBlob(name, value)


def time_update(name: str, executor: str, size: int, repeat: int) -> float:
    os.environ["NETJIT_EXECUTOR"] = executor
    workspace.ResetWorkspace()
    _feed(size)
    net = core.Net(f"bench_{name}_{executor}")
    UPDATES[name](net)
    workspace.CreateNet(net)
    workspace.RunNet(net.Proto().name)          # compiles (or loads the cached kernel)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        workspace.RunNet(net.Proto().name)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1 << 20)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    print(f"float32 parameter of {args.size} elements, median of {args.repeat} runs")
    print(f"{'update':20s} {'reference ms':>13s} {'compiled ms':>12s} {'speed-up':>9s}")
    for name in UPDATES:
        ref = time_update(name, "reference", args.size, args.repeat)
        comp = time_update(name, "compiled", args.size, args.repeat)
        print(f"{name:20s} {ref:13.3f} {comp:12.3f} {ref / comp:8.1f}x")


if __name__ == "__main__":
    main()
