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
    tail = (out.stdout + out.stderr)[-4000:]
    assert out.returncode == 0, tail
    assert " passed" in out.stdout and " failed" not in out.stdout, tail
