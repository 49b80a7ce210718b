"""Runs tests/cuda under numba's CUDA simulator in a separate pytest process, so that
NUMBA_ENABLE_CUDASIM=1 is set before numba.cuda is first imported there and never leaks into the
CPU tests of this process. On a machine with a GPU, examples/benchmarks/gpu_check.sh runs the same
tests for real instead."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.cudasim
def test_cuda_backend_under_the_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/cuda"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert "NUMBA_ENABLE_CUDASIM" not in os.environ      # set in the child's environment only
    tail = (out.stdout + out.stderr)[-4000:]
    assert out.returncode == 0, tail
    assert " passed" in out.stdout and " failed" not in out.stdout, tail


def test_cpu_tests_never_import_numba_cuda_nor_set_the_simulator():
    """The CPU suite (this process) must not turn the simulator on or import numba.cuda: a CUDA
    module imported in simulator mode would stay so for every later test. Tests collected before
    this one (alphabetical: every tests/ folder) have run by now; a fresh interpreter that imports
    every netjit module, the CUDA backend's included, must not import numba.cuda either."""
    from netjit.runtime import device as dev
    assert os.environ.get("NUMBA_ENABLE_CUDASIM", "0") in ("", "0")
    if dev._driver_present():
        pytest.skip("a GPU driver is here: importing numba.cuda to ask it is expected")
    assert "numba.cuda" not in sys.modules, "a CPU test imported numba.cuda"
    code = ("import sys, netjit, netjit.compiler\n"
            "from netjit import workspace\n"
            "import netjit.compiler.codegen.numba_cuda, netjit.compiler.codegen.cuda_runner\n"
            "import netjit.compiler.codegen.cuda_gemm, netjit.compiler.codegen.cuda_ops, netjit.bench_cuda\n"
            "assert workspace.NumCudaDevices() == 0 and not workspace.has_gpu_support\n"
            "print('numba.cuda' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "NETJIT_CUDA_PROBE")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "False", out.stdout


@pytest.mark.cudasim
def test_gpu_check_script_dry_run(tmp_path):
    """examples/benchmarks/gpu_check.sh's setup under the simulator, as on a GPU machine: a Python
    found, netjit imported from the checkout without installing it, the smoke kernels compiled and
    checked, the log written under $OUT (the test and bench stages are left to the GPU session)."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "NETJIT_ZOO_DIR")}
    env.update(OUT=str(tmp_path), PYTHON=sys.executable, NETJIT_FORCE_SHIM="1", GPU_CHECK_SIMULATE="1",
               GPU_CHECK_ENV_ONLY="1")
    out = subprocess.run(["bash", str(REPO / "examples" / "benchmarks" / "gpu_check.sh")], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    log = (tmp_path / "gpu_check.log").read_text()
    assert out.returncode == 0, log + out.stderr
    assert "netjit from this checkout through" in log and "CUDA devices: 1" in log
    assert "smoke kernels compiled, ran and matched numpy" in log and " 0 host steps" in log

