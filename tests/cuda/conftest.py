"""The CUDA tests run where numba.cuda can run kernels: under the simulator (NUMBA_ENABLE_CUDASIM=1,
which tests/test_cuda_suite.py sets in a separate pytest process so it never leaks into the CPU
tests) or on a real GPU (examples/benchmarks/gpu_check.sh). Elsewhere they skip."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pytest

from netjit.runtime import device as dev


def pytest_collection_modifyitems(config, items):
    """Mark these tests ``cudasim``; with no GPU and no simulator, deselect them (the main suite's
    tests/test_cuda_suite.py runs them in a simulator process instead)."""
    mine = [item for item in items if "tests/cuda/" in str(item.fspath).replace("\\", "/")]
    for item in mine:
        item.add_marker(pytest.mark.cudasim)
    if mine and dev.num_cuda_devices() == 0:
        config.hook.pytest_deselected(items=mine)
        drop = {id(item) for item in mine}
        items[:] = [item for item in items if id(item) not in drop]


def gpu_option() -> Any:
    from netjit import core
    from netjit.proto import caffe2_pb2
    return core.DeviceOption(caffe2_pb2.CUDA, 0)


def run_reference_and_cuda(ops: Sequence[Any], feeds: dict[str, np.ndarray], fetch: Sequence[str],
                           gpu_feeds: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], Any]:
    """Run ``ops`` once with the numpy reference executor and once as a CUDA net; return both
    results (host arrays) and the CUDA net's explain() text."""
    from netjit import workspace
    from netjit.compiler.runner import make_runner
    from netjit.proto import caffe2_pb2
    from netjit.runtime.workspace import Workspace

    net = caffe2_pb2.NetDef(name="t")
    net.op.extend(ops)
    ref_ws = Workspace("ref")
    for k, v in feeds.items():
        ref_ws.feed(k, np.array(v, copy=True))
    make_runner(net, ref_ws, executor="reference").run()
    ref = {b: np.asarray(ref_ws.get(b)) for b in fetch}

    gnet = caffe2_pb2.NetDef.FromString(net.SerializeToString())
    gnet.device_option.CopyFrom(gpu_option())
    for k, v in feeds.items():
        workspace.FeedBlob(k, v, gpu_option() if gpu_feeds else None)
    workspace.CreateNet(gnet, overwrite=True)
    workspace.RunNet(gnet.name)
    got = {b: workspace.FetchBlob(b) for b in fetch}
    text = workspace._ws().nets[gnet.name].compiled.explain(sources=False)
    return ref, got, text
