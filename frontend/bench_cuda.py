"""``netjit bench --device cuda``: RunNet and RunNetOnce of a net placed on the GPU, kernel launches
per run, and each kernel step's device time measured with CUDA events.

    netjit bench --device cuda                                  # the basics tutorial net, on the GPU
    netjit bench predict_net.pb --init init_net.pb --input data=32,3,224,224 --device cuda

Every timed call ends with a device synchronize, so a row is the wall time of a whole run. Under the
CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the numbers measure the simulator, not a GPU.

>>> # rows, kernels, launches = bench_cuda(small_net(), repeat=3, warmup=1)
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

import numpy as np

from netjit import workspace
from netjit.bench import Timing, time_calls
from netjit.proto import caffe2_pb2
from netjit.runtime import device as dev
from netjit.runtime.workspace import REGISTRY


def on_gpu(net: caffe2_pb2.NetDef, gpu_id: int = 0) -> caffe2_pb2.NetDef:
    """A copy of ``net`` placed on the GPU (Caffe2's ``RunAllOnGPU``), ops' own options kept."""
    out = caffe2_pb2.NetDef.FromString(net.SerializeToString())
    out.device_option.device_type = caffe2_pb2.CUDA
    out.device_option.cuda_gpu_id = gpu_id
    return out


def _fresh(tag: str, init_net: caffe2_pb2.NetDef | None, feeds: dict[str, np.ndarray]) -> None:
    workspace.SwitchWorkspace(f"bench-cuda-{tag}", True)
    workspace.ResetWorkspace()
    if init_net is not None:
        workspace.RunNetOnce(on_gpu(init_net))
    gpu = caffe2_pb2.DeviceOption(device_type=caffe2_pb2.CUDA)
    for name, value in feeds.items():
        workspace.FeedBlob(name, value, gpu)


def bench_cuda(net: caffe2_pb2.NetDef, init_net: caffe2_pb2.NetDef | None = None,
               feeds: dict[str, np.ndarray] | None = None, warmup: int = 10, repeat: int = 7,
               batch_seconds: float = 0.2) -> tuple[list[Timing], list[Timing], int]:
    """(RunNet/RunNetOnce rows, per-kernel-step device times in microseconds, launches per run)."""
    dev.check_device(("cuda", 0), net=net.name)
    feeds = feeds or {}
    gnet = on_gpu(net)
    previous = REGISTRY.current.name
    rows: list[Timing] = []
    try:
        _fresh("runnet", init_net, feeds)
        workspace.CreateNet(gnet, overwrite=True)

        def run_net() -> None:
            workspace.RunNet(gnet.name)
            dev.synchronize()
        rows.append(time_calls("RunNet (cuda)", run_net, warmup, repeat, batch_seconds))
        runner = REGISTRY.current.nets[gnet.name]
        before = runner.kernel_launches
        workspace.RunNet(gnet.name)
        launches = runner.kernel_launches - before
        times: dict[str, list[float]] = defaultdict(list)
        runner.profile = lambda step, ms: times[f"#{step.node.index} {step.kernel.description}"].append(ms * 1e3)
        for _ in range(max(1, repeat)):
            workspace.RunNet(gnet.name)
        runner.profile = None
        kernels = [Timing(name, statistics.median(v), min(v), max(v), len(v)) for name, v in times.items()]

        _fresh("once", init_net, feeds)

        def run_once() -> None:
            workspace.RunNetOnce(gnet)
            dev.synchronize()
        rows.append(time_calls("RunNetOnce (cuda)", run_once, warmup, repeat, batch_seconds))
    finally:
        workspace.SwitchWorkspace(previous)
    return rows, kernels, launches


def report(net: caffe2_pb2.NetDef, init_net: Any, feeds: dict[str, np.ndarray], args: Any) -> dict[str, Any]:
    rows, kernels, launches = bench_cuda(net, init_net, feeds, args.warmup, args.repeat, args.batch_seconds)
    return {"rows": rows, "kernels": kernels, "launches": launches,
            "where": "CUDA simulator" if dev.simulator_enabled() else "GPU"}
