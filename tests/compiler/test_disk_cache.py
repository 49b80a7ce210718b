"""Generated kernels are cached on disk: a second process compiling the same net compiles nothing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = r"""
import json, numpy as np
from netjit.compiler.api import compile
from netjit.compiler.codegen.modules import kernel_stats
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_op
net = caffe2_pb2.NetDef(name="cached", external_input=["X", "W", "b", "S"], external_output=["Z", "Q"])
net.op.extend([make_op("FC", ["X", "W", "b"], ["Y"]), make_op("Tanh", ["Y"], ["Y"]),
               make_op("Mul", ["Y", "S"], ["Z"], broadcast=1), make_op("Softmax", ["Z"], ["P"]),
               make_op("Sigmoid", ["P"], ["Q"])])
x = np.ones((3, 4), np.float32); w = np.ones((2, 4), np.float32); b = np.zeros(2, np.float32)
exe = compile(net, inputs={"X": x, "W": w, "b": b, "S": np.ones(1, np.float32)})
out = exe(X=x, W=w, b=b, S=np.full(1, 2.0, np.float32))["Z"]
print(json.dumps({**kernel_stats(), "z": float(out[0, 0])}))
"""


def _run(cache: Path) -> dict:
    # No prebuilt store (netjit warmup's): this test is about the user cache alone.
    env = dict(os.environ, NETJIT_CACHE_DIR=str(cache), NETJIT_LIBRARY_DIR=str(cache / "no-library"))
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=repo, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_loads_kernels_from_disk(tmp_path):
    first = _run(tmp_path)
    assert first["kernels"] == 2 and first["cache_misses"] == 2 and first["cache_hits"] == 0
    files = sorted(p.name for p in (tmp_path / "kernels").glob("nj_*.py"))
    assert len(files) == 2
    second = _run(tmp_path)
    assert second["kernels"] == 2 and second["cache_misses"] == 0 and second["cache_hits"] == 2
    assert second["z"] == first["z"] and abs(first["z"] - 2 * np.tanh(4.0)) < 1e-6
    assert sorted(p.name for p in (tmp_path / "kernels").glob("nj_*.py")) == files

