"""``netjit bench``: per-call time of RunNet, RunNetOnce, the reference executor and a compiled net.

    netjit bench                                   # the basics tutorial net (3 GaussianFill + FC)
    netjit bench predict_net.pb --init init_net.pb --input data=1,3,224,224 --per-op
    netjit bench net.pbtxt --repeat 9 --warmup 20 --json
    netjit bench --device cuda                     # on the GPU: RunNet, launches, per-kernel device time

Each row is timed in its own workspace: after ``--warmup`` calls, ``--repeat`` batches of calls are
timed (the batch size is chosen so that one batch takes about ``--batch-seconds``); the table
gives the median per-call time with the min and max over batches (this is a shared VM: look at the
spread). ``--per-op`` adds each op's time through its numpy reference and the compiled plan's steps.

>>> rows = bench_net(small_net(), repeat=3, warmup=2, batch_seconds=0.01)
>>> [r.name for r in rows][:2]
['RunNet (compiled)', 'RunNet (reference)']
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from netjit import core, workspace
from netjit.compiler import api
from netjit.compiler.reference import build_reference_plan
from netjit.proto import caffe2_pb2
from netjit.runtime.executor import run_step
from netjit.runtime.workspace import REGISTRY


@dataclass
class Timing:
    name: str
    median_us: float
    min_us: float
    max_us: float
    calls: int

    def row(self) -> str:
        return f"{self.name:32s} {self.median_us:12.2f} {self.min_us:12.2f} {self.max_us:12.2f} {self.calls:9d}"


def time_calls(name: str, fn: Callable[[], Any], warmup: int = 10, repeat: int = 7,
               batch_seconds: float = 0.2) -> Timing:
    """Median/min/max per-call time (microseconds) of ``fn`` over ``repeat`` timed batches."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    one = max(time.perf_counter() - start, 1e-7)
    number = max(1, min(200_000, int(batch_seconds / one)))
    per_call = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        per_call.append((time.perf_counter() - start) / number * 1e6)
    return Timing(name, statistics.median(per_call), min(per_call), max(per_call), number * repeat)


def small_net() -> caffe2_pb2.NetDef:
    """The basics tutorial's RunNet-overhead net: X [2,3], W [5,3], b [5] from GaussianFill, then FC."""
    net = core.Net("bench_small")
    x = net.GaussianFill([], ["X"], mean=0.0, std=1.0, shape=[2, 3], run_once=0)
    w = net.GaussianFill([], ["W"], mean=0.0, std=1.0, shape=[5, 3], run_once=0)
    b = net.GaussianFill([], ["b"], mean=0.0, std=1.0, shape=[5], run_once=0)
    x.FC([w, b], ["Y"])
    return net.Proto()


@contextmanager
def executor(name: str) -> Iterator[None]:
    """Nets created inside the block use this netjit executor ("compiled" or "reference")."""
    old = os.environ.get("NETJIT_EXECUTOR")
    os.environ["NETJIT_EXECUTOR"] = name
    try:
        yield
    finally:
        if old is None:
            del os.environ["NETJIT_EXECUTOR"]
        else:
            os.environ["NETJIT_EXECUTOR"] = old


def _fresh_workspace(tag: str, init_net: caffe2_pb2.NetDef | None, feeds: dict[str, np.ndarray]) -> None:
    workspace.SwitchWorkspace(f"bench-{tag}", True)
    workspace.ResetWorkspace()
    if init_net is not None:
        with executor("reference"):
            workspace.RunNetOnce(init_net)
    for name, value in feeds.items():
        workspace.FeedBlob(name, value)


def bench_net(net: caffe2_pb2.NetDef, init_net: caffe2_pb2.NetDef | None = None,
              feeds: dict[str, np.ndarray] | None = None, warmup: int = 10, repeat: int = 7,
              batch_seconds: float = 0.2) -> list[Timing]:
    feeds = feeds or {}
    previous = REGISTRY.current.name
    rows: list[Timing] = []
    try:
        for choice in ("compiled", "reference"):
            _fresh_workspace(f"runnet-{choice}", init_net, feeds)
            with executor(choice):
                workspace.CreateNet(net, overwrite=True)
            rows.append(time_calls(f"RunNet ({choice})", lambda: workspace.RunNet(net.name), warmup, repeat,
                                   batch_seconds))
        for choice in ("compiled", "reference"):
            _fresh_workspace(f"once-{choice}", init_net, feeds)
            with executor(choice):     # RunNetOnce reads the executor choice at every call
                rows.append(time_calls(f"RunNetOnce ({choice})", lambda: workspace.RunNetOnce(net), warmup,
                                       repeat, batch_seconds))
        _fresh_workspace("compiled-net", init_net, feeds)
        exe = api.compile(net)
        ws = REGISTRY.current
        rows.append(time_calls("compiled net exe.run(ws)", lambda: exe.run(ws), warmup, repeat, batch_seconds))
    finally:
        workspace.SwitchWorkspace(previous)
    return rows


def per_op(net: caffe2_pb2.NetDef, init_net: caffe2_pb2.NetDef | None = None,
           feeds: dict[str, np.ndarray] | None = None, repeat: int = 5, batch_seconds: float = 0.05) -> list[Timing]:
    """Each op's time through its numpy reference (after one full run for its inputs)."""
    previous = REGISTRY.current.name
    try:
        _fresh_workspace("per-op", init_net, feeds or {})
        ws = REGISTRY.current
        plan = build_reference_plan(net, ws)
        for step in plan.steps:
            run_step(plan, step, ws)
        return [time_calls(f"#{s.index} {s.op_type}", lambda s=s: run_step(plan, s, ws), 2, repeat, batch_seconds)
                for s in plan.steps]
    finally:
        workspace.SwitchWorkspace(previous)


def compiled_steps(net: caffe2_pb2.NetDef) -> list[str]:
    compiled = api.get_compiled(net)
    lines = []
    for plan in compiled._plans.values():
        lines.append(f"plan ops [{plan.start}, {plan.stop}): {plan.buffers.summary()}")
        lines += [f"  [{s.kind}] #{s.index} {s.op_type}" for s in plan.driver.steps]
    return lines


def format_table(rows: Sequence[Timing], title: str) -> str:
    head = f"{'':32s} {'median us':>12s} {'min us':>12s} {'max us':>12s} {'calls':>9s}"
    return "\n".join([title, head, *(r.row() for r in rows)])


# --- command line ------------------------------------------------------------------------------
def _parse_input(text: str) -> tuple[str, np.ndarray]:
    name, _, spec = text.partition("=")
    dims, _, dtype = spec.partition(":")
    if not name or not dims:
        raise ValueError(f"--input {text!r}: expected NAME=D0,D1,...[:dtype]")
    shape = tuple(int(d) for d in dims.split(","))
    rng = np.random.default_rng(0)
    return name, rng.standard_normal(shape).astype(np.dtype(dtype or "float32"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("net", nargs="?", help="a NetDef (.pb/.pbtxt); default: the basics tutorial net")
    parser.add_argument("--init", help="an init net to run first (parameters)")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=D0,D1[:dtype]",
                        help="feed a random input blob of this shape (repeatable)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--batch-seconds", type=float, default=0.2)
    parser.add_argument("--per-op", action="store_true", help="also time each op's reference")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: run the net on the GPU (bench_cuda.py): RunNet vs RunNetOnce, kernel "
                             "launches per run, each kernel's device time from CUDA events")


def run(args: argparse.Namespace) -> int:
    from netjit.cli import CommandError
    from netjit.proto.io import load_net

    net = load_net(args.net) if args.net else small_net()
    init_net = load_net(args.init) if args.init else None
    try:
        feeds = dict(_parse_input(t) for t in args.input)
    except ValueError as err:
        raise CommandError(str(err)) from None
    if args.device == "cuda":
        return _run_cuda(net, init_net, feeds, args)
    rows = bench_net(net, init_net, feeds, args.warmup, args.repeat, args.batch_seconds)
    ops = per_op(net, init_net, feeds) if args.per_op else []
    if args.json:
        print(json.dumps({"net": net.name, "rows": [asdict(r) for r in rows], "per_op": [asdict(r) for r in ops]},
                         indent=2))
        return 0
    print(format_table(rows, f"net {net.name!r}: {len(net.op)} ops, per-call time"))
    if ops:
        print()
        print(format_table(ops, "per op (numpy reference)"))
        print()
        print("\n".join(compiled_steps(net)))
    return 0


def _run_cuda(net: caffe2_pb2.NetDef, init_net: caffe2_pb2.NetDef | None, feeds: dict[str, np.ndarray],
              args: argparse.Namespace) -> int:
    from netjit.bench_cuda import report
    from netjit.cli import CommandError
    from netjit.runtime.errors import NetJitError
    try:
        got = report(net, init_net, feeds, args)
    except NetJitError as err:
        raise CommandError(str(err)) from None
    if args.json:
        print(json.dumps({"net": net.name, "device": "cuda", "where": got["where"], "launches_per_run": got["launches"],
                          "rows": [asdict(r) for r in got["rows"]], "kernels": [asdict(r) for r in got["kernels"]]},
                         indent=2))
        return 0
    print(format_table(got["rows"], f"net {net.name!r}: {len(net.op)} ops on {got['where']}, per-call time"))
    print(f"kernel launches per run: {got['launches']}")
    print()
    print(format_table(got["kernels"], "per kernel step, device time (CUDA events)"))
    return 0
