"""The README's main demo runs and prints what it promises."""
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, shared_path


def test_demo_runs(tmp_path):
    shared_path("models", "lenet_pytorch_export")
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "demo.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "RunNet:" in out and "RunNetOnce:" in out
    assert "Ground truth W is: [[2.  1.5]]" in out
    assert "results agree to 1e-5" in out
    accuracy = float(out.split("top-1 accuracy ")[1].split("%")[0])
    assert accuracy >= 99.0
    assert (Path(tmp_path) / "toy_regression.json").exists()
