"""``netjit warmup``: compile the library's kernels once, right after install, in parallel.

A new user's first net used to spend its first minute in numba: the hand-written library kernels
(codegen/windows.py, blas.py, winograd.py, ...) compile on first use, and so does every fused
group. Both are cached on disk, so the cost is paid once per machine; the warmup pays it up front:

- it runs a few toy nets, one per architecture family (compiler/codegen/warmup_nets.py), and the
  nets of any model files given, through the compiled executor;
- the library kernels land in numba's cache beside their modules; the generated kernels land in the
  prebuilt store ``modules.library_dir()`` (inside the virtual environment), which every later
  process consults before compiling, whatever its ``NETJIT_CACHE_DIR``;
- the nets run in worker processes (one per core by default) that all write to the same caches.

numba's cache is specific to the CPU it was built on (its index keys on the CPU name and features),
so the kernels are built on the machine that runs them, not shipped prebuilt.

    netjit warmup                          # every family, one worker per core
    netjit warmup --if-needed              # the same, unless it already ran (examples/setup_env.sh)
    netjit warmup --nets lenet resnet -j 1
    netjit warmup --model init_net.pb predict_net.pb   # also compile this model's own kernels

>>> report = warmup(["lenet"], workers=1)                     # doctest: +SKIP
>>> report[0].name, report[0].stats["kernels"] > 0            # doctest: +SKIP
('lenet', True)
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

from netjit.compiler.codegen.warmup_nets import BUILDERS, WarmupNet, build


@dataclass
class Built:
    """What compiling one warmup net cost: seconds in its worker, and the kernel counts
    (``modules.kernel_stats``: kernels used, numba cache hits and misses)."""
    name: str
    seconds: float
    stats: dict[str, int]


def run_warmup_net(net: WarmupNet) -> dict[str, int]:
    """Run ``net`` through the compiled executor in a workspace of its own; the kernel counts."""
    from netjit import workspace
    from netjit.bench import executor
    from netjit.compiler.codegen.modules import kernel_stats
    from netjit.proto import caffe2_pb2

    before = kernel_stats()
    current = workspace.CurrentWorkspace()
    workspace.SwitchWorkspace(f"netjit_warmup_{net.name}", True)
    try:
        with executor("compiled"):
            if net.predictor:
                predictor = workspace.Predictor(net.init or caffe2_pb2.NetDef(name="init"), net.predict)
                for batch in net.batches:
                    predictor.run({k: _batched(v, batch) for k, v in net.feeds.items()})
                if net.weights:
                    workspace.ResetWorkspace()
                    for name, value in net.weights.items():
                        workspace.FeedBlob(name, value.copy())
                    predictor = workspace.Predictor(caffe2_pb2.NetDef(name="init"), net.predict)
                    for batch in net.batches:
                        predictor.run({k: _batched(v, batch) for k, v in net.feeds.items()})
            else:
                if net.init is not None:
                    workspace.RunNetOnce(net.init)
                for name, value in net.feeds.items():
                    workspace.FeedBlob(name, value)
                workspace.CreateNet(net.predict, overwrite=True)
                for _ in range(net.runs):
                    workspace.RunNet(net.predict.name)
    finally:
        workspace.ResetWorkspace()
        workspace.SwitchWorkspace(current)
    after = kernel_stats()
    return {key: after[key] - before[key] for key in after}


def _batched(value, batch: int):
    """``value`` (batch 1 or more) repeated along axis 0 to ``batch`` rows."""
    import numpy as np
    return np.ascontiguousarray(np.resize(value, (batch, *value.shape[1:])))


def model_net(init_path: Path, predict_path: Path) -> WarmupNet:
    """A model pair (``init_net.pb``, ``predict_net.pb``) as a warmup net: its predict net fed with
    zeros of the shape in ``value_info.json`` beside it, or of [1, 3, 224, 224] without one."""
    import json

    import numpy as np

    from netjit.proto.io import load_net

    init, predict = load_net(init_path), load_net(predict_path)
    initialized = {out for op in init.op for out in op.output}
    inputs = [name for name in predict.external_input if name not in initialized]
    if len(inputs) != 1:
        raise ValueError(f"{predict_path}: expected one data input besides the weights, found {inputs}")
    shape, info = (1, 3, 224, 224), predict_path.parent / "value_info.json"
    if info.exists():
        shape = tuple(json.loads(info.read_text())[inputs[0]][1])
    feeds = {inputs[0]: np.zeros(shape, np.float32)}
    return WarmupNet(predict.name or predict_path.stem, predict, feeds, init=init, predictor=True)


def _worker_setup(root: str) -> None:
    # Generated kernels of a warmup go to the prebuilt store, whatever the caller's cache dir.
    os.environ["NETJIT_CACHE_DIR"] = root
    os.environ["NETJIT_LIBRARY_DIR"] = root


Job = Union[str, tuple[str, str], WarmupNet]


def _build_one(job: Job) -> Built:
    start = time.perf_counter()
    if isinstance(job, WarmupNet):
        net = job
    else:
        net = build(job) if isinstance(job, str) else model_net(Path(job[0]), Path(job[1]))
    stats = run_warmup_net(net)
    return Built(net.name, time.perf_counter() - start, stats)


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                      len(BUILDERS)))


def warmup(nets: Sequence[str | WarmupNet] | None = None, workers: int | None = None,
           models: Sequence[tuple[str, str]] = (), library: Path | None = None) -> list[Built]:
    """Compile the kernels of ``nets`` (default: every family in ``warmup_nets.BUILDERS``) and of
    ``models`` ((init, predict) paths) into the prebuilt store; one Built per net, in job order.
    A net may also be a ``WarmupNet`` of the caller's (it must pickle, for the workers).
    ``workers`` > 1 runs the nets in that many fresh processes at once."""
    from netjit.compiler.codegen.modules import library_dir

    jobs: list[Job] = [*(nets if nets is not None else BUILDERS), *models]
    for job in jobs:
        if isinstance(job, str) and job not in BUILDERS:
            raise ValueError(f"no warmup net {job!r} (known: {', '.join(BUILDERS)})")
    if library is not None:
        os.environ["NETJIT_LIBRARY_DIR"] = str(library)
    root = str(library_dir(create=True).parent)
    workers = default_workers() if workers is None else max(1, workers)
    if workers == 1 or len(jobs) == 1:
        saved = {k: os.environ.get(k) for k in ("NETJIT_CACHE_DIR", "NETJIT_LIBRARY_DIR")}
        _worker_setup(root)
        try:
            return [_build_one(job) for job in jobs]
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    # Fresh interpreters (spawn): a forked copy of a process that already ran numba's threading
    # layer can deadlock, and each worker must see the store in its environment from the start.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                             initializer=_worker_setup, initargs=(root,)) as pool:
        return list(pool.map(_build_one, jobs))


def stamp() -> dict[str, object]:
    """What a finished warmup is valid for: the helper sources, numba, and the CPU (numba's cache
    keys on them). ``--if-needed`` skips a warmup whose stamp matches."""
    import llvmlite.binding as llvm
    import numba

    from netjit.compiler.codegen.modules import helpers_hash

    return {"helpers": helpers_hash(), "numba": numba.__version__, "cpu": llvm.get_host_cpu_name(),
            "nets": sorted(BUILDERS)}


def _stamp_path() -> Path:
    from netjit.compiler.codegen.modules import library_dir
    return library_dir().parent / "warmup.json"


def is_warm() -> bool:
    """Whether a complete default warmup already ran for this code, numba and CPU."""
    import json
    try:
        return json.loads(_stamp_path().read_text()) == stamp()
    except (OSError, ValueError):
        return False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nets", nargs="*", choices=list(BUILDERS), default=None,
                        help="which families to compile (default: all)")
    parser.add_argument("--model", nargs=2, action="append", default=[], metavar=("INIT_NET", "PREDICT_NET"),
                        help="also compile this model's own kernels (repeatable)")
    parser.add_argument("-j", "--workers", type=int, default=None,
                        help="worker processes (default: one per core)")
    parser.add_argument("--if-needed", action="store_true",
                        help="do nothing if a full warmup already ran for this netjit, numba and CPU")


def byte_compile() -> int:
    """Write the bytecode of netjit's own modules, as ``pip install`` does for a wheel: an editable
    install (or ``PYTHONDONTWRITEBYTECODE=1``, set on the test VMs) otherwise recompiles about 150
    modules from source at every start, 0.2-0.45 s of a warm start on the 2-core VM (issue 12).
    Folders that cannot be written are skipped; returns how many folders were handled."""
    import compileall
    import importlib

    done = 0
    for name in ("netjit", "netjit.compiler", "netjit.runtime", "netjit.proto"):
        try:
            folder = Path(importlib.import_module(name).__file__).parent
        except (ImportError, TypeError):
            continue
        if os.access(folder, os.W_OK):
            # Up-to-date files are only stat'ed, so a wheel install (netjit/ holding the others)
            # costs nothing extra.
            compileall.compile_dir(str(folder), quiet=2, workers=1)
            done += 1
    return done


def run(args: argparse.Namespace) -> int:
    from netjit.compiler.codegen.modules import library_dir

    import json

    byte_compile()
    full = args.nets is None
    if args.if_needed and full and not args.model and is_warm():
        print(f"netjit warmup: already done ({library_dir()})")
        return 0
    start = time.perf_counter()
    built = warmup(args.nets, args.workers, [tuple(m) for m in args.model])
    if full:
        _stamp_path().write_text(json.dumps(stamp()))
    for b in built:
        print(f"{b.name:24s} {b.seconds:7.1f} s  {b.stats['kernels']:3d} kernels "
              f"({b.stats['cache_misses']} compiled, {b.stats['cache_hits']} from the cache)")
    print(f"warmup done in {time.perf_counter() - start:.1f} s; prebuilt kernels in {library_dir()}")
    return 0
