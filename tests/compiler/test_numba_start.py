"""numba's start-up BLAS probe must not import scipy.linalg for netjit (compiler/codegen/numba_start.py),
and must leave numba and scipy as they would be otherwise."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("scipy")

CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from netjit import workspace
    from netjit.proto import caffe2_pb2
    net = caffe2_pb2.NetDef(name="probe")
    op = net.op.add(); op.type = "Relu"; op.input.append("x"); op.output.append("y")
    workspace.FeedBlob("x", np.arange(-2, 2, dtype=np.float32))
    workspace.RunNetOnce(net)
    import numba.np.arraymath as arraymath
    before = "scipy.linalg" in sys.modules
    import scipy.linalg
    out = {"relu": workspace.FetchBlob("y").tolist(), "scipy_linalg_before": before,
           "have_blas": arraymath._HAVE_BLAS, "scipy_linalg_works": hasattr(scipy.linalg, "solve")}
    print(json.dumps(out))
""")


def _run(env_extra: dict[str, str]) -> dict:
    env = {**os.environ, "NETJIT_EXECUTOR": "compiled", **env_extra}
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_compiled_run_does_not_import_scipy_linalg():
    out = _run({})
    assert out["relu"] == [0.0, 0.0, 0.0, 1.0]
    assert out["scipy_linalg_before"] is False
    # numba's flag gets the answer its own probe would have given, and scipy imports normally later.
    assert out["have_blas"] is True
    assert out["scipy_linalg_works"] is True


def test_probe_left_alone_when_asked():
    out = _run({"NETJIT_SCIPY_PROBE": "1"})
    assert out["scipy_linalg_before"] is True
    assert out["have_blas"] is True
