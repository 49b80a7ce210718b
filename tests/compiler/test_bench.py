"""The bench command runs end to end (numbers are printed, never asserted: this is a shared VM)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from netjit.bench import bench_net, per_op, small_net
from netjit.cli import main
from netjit.proto.io import save_net


def test_bench_rows_and_per_op():
    rows = bench_net(small_net(), warmup=1, repeat=2, batch_seconds=0.002)
    assert [r.name for r in rows] == ["RunNet (compiled)", "RunNet (reference)", "RunNetOnce (compiled)",
                                      "RunNetOnce (reference)", "compiled net exe.run(ws)"]
    assert all(0 < r.min_us <= r.median_us <= r.max_us for r in rows)
    ops = per_op(small_net(), repeat=1, batch_seconds=0.002)
    assert [r.name for r in ops] == ["#0 GaussianFill", "#1 GaussianFill", "#2 GaussianFill", "#3 FC"]


def test_bench_cli_on_a_net_file(tmp_path, capsys):
    path = tmp_path / "net.pbtxt"
    net = small_net()
    save_net(net, str(path))
    assert main(["bench", str(path), "--repeat", "1", "--warmup", "1", "--batch-seconds", "0.002", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["net"] == net.name and len(out["rows"]) == 5
    assert main(["bench", "--repeat", "1", "--warmup", "1", "--batch-seconds", "0.002", "--per-op"]) == 0
    text = capsys.readouterr().out
    assert "RunNet (compiled)" in text and "per op (numpy reference)" in text and "[kernel]" in text
    assert main(["bench", "--input", "bad"]) == 1


@pytest.mark.parametrize("script", ["bench_runnet.py", "bench_fusion.py"])
def test_benchmark_scripts_run(script):
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(repo / "examples" / "benchmarks" / script), "--quick", "--repeat", "2"],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert ("compiled speed-up" in proc.stdout) if script == "bench_runnet.py" else ("fused chain" in proc.stdout)
