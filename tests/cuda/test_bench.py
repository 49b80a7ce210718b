"""``netjit bench --device cuda`` and examples/benchmarks/bench_gpu.py --tiny run (under the
simulator their timings mean nothing; the checks are the structure: launches, rows, columns)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from netjit.bench import small_net
from netjit.bench_cuda import bench_cuda

REPO = Path(__file__).resolve().parents[2]


def test_bench_device_cuda_reports_launches_and_kernel_times():
    rows, kernels, launches = bench_cuda(small_net(), repeat=2, warmup=1, batch_seconds=0.01)
    assert [r.name for r in rows] == ["RunNet (cuda)", "RunNetOnce (cuda)"]
    assert launches == 1                       # the FC: one launch per run (the fillers run on the host)
    assert [k.name for k in kernels] == ["#3 FC"] and kernels[0].calls == 2


def test_bench_cli_device_cuda(capsys):
    from netjit.cli import main
    assert main(["bench", "--device", "cuda", "--repeat", "1", "--warmup", "1", "--batch-seconds", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "kernel launches per run: 1" in out and "per kernel step, device time (CUDA events)" in out


def test_bench_gpu_tiny(capsys):
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "examples" / "benchmarks" / "bench_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--tiny", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("fused chain 4096 f32", "ResNet-50 b32", "LeNet train step b2", "tiny net RunNet"):
        assert row in out, out
    assert "FAILED" not in out and "0 row(s) failed" in out, out
    assert out.count("1 launch(es)") == 2, out        # the fused chain and the tiny net: one launch each
