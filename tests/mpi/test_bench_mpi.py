"""examples/benchmarks/bench_mpi.py runs end to end (numbers are printed, never asserted: shared VM)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.mpi.launch import REPO, mpiexec_path, rank_env


@pytest.mark.slow
def test_bench_mpi_prints_its_table():
    mpiexec_path()  # skip (or fail under CI) without the MPI extra
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "benchmarks" / "bench_mpi.py"), "--rounds", "1",
                           "--steps", "2", "--batch", "32", "--mb", "1", "--reps", "2"],
                          capture_output=True, text=True, timeout=300, env=rank_env(), cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for row in ("netjit Allreduce op (RunNet)", "x mpi4py (target <= 1.1x)", "2 ranks x 1 core", "2 ranks / 1 rank"):
        assert row in proc.stdout, proc.stdout
