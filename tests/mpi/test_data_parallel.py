"""data_parallel_model on 2 MPI ranks (dp_train.py): exactness against one process with the doubled
batch, and the fault path (a SIGKILLed rank is named by the survivor; training resumes from the last
checkpoint to the same parameters as an uninterrupted run)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.mpi.launch import HERE, REPO, check, rank_env, run_ranks

SCRIPT = str(HERE / "dp_train.py")
STEPS, BATCH = 8, 8


def _params(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dp_full")
    check(run_ranks([SCRIPT, "--out", str(out), "--steps", str(STEPS), "--batch", str(BATCH), "--ckpt-every", "2"]))
    return out


def test_two_ranks_bitwise_identical_and_equal_to_one_process_with_double_batch(uninterrupted, tmp_path):
    r0, r1 = _params(uninterrupted / "params_rank0.npz"), _params(uninterrupted / "params_rank1.npz")
    assert set(r0) == set(r1) and {"cpu_0__h_w", "cpu_0__pred_b", "cpu_0__h_w_momentum", "cpu_0__ITER", "optimizer_iteration"} <= set(r0)
    for k in r0:
        assert np.array_equal(r0[k], r1[k]), f"{k} differs between ranks"
    # One process, batch 2B, numpy reference executor: the oracle for the compiled 2-rank run.
    env = dict(rank_env(), NETJIT_EXECUTOR="reference")
    proc = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path), "--steps", str(STEPS),
                           "--batch", str(BATCH), "--single"], capture_output=True, text=True, timeout=120,
                          env=env, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = _params(tmp_path / "params_rank0.npz")
    assert int(r0["cpu_0__ITER"][0]) == STEPS
    moved = 0.0
    for k, v in single.items():
        np.testing.assert_allclose(r0[k], v, rtol=0, atol=1e-5, err_msg=k)
        moved = max(moved, float(np.abs(v).max()))
    assert moved > 0


def test_killed_rank_is_named_and_training_resumes_from_checkpoint(uninterrupted, tmp_path):
    kill_at = 5
    start = time.time()
    proc = run_ranks([SCRIPT, "--out", str(tmp_path), "--steps", str(STEPS), "--batch", str(BATCH),
                      "--ckpt-every", "2", "--kill-rank", "1", "--kill-at", str(kill_at)], ft=True, timeout=90)
    end = time.time()
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    killed = float((tmp_path / "killed_at").read_text())
    assert start < killed and end - killed < 30, f"survivor took {end - killed:.1f} s to exit"
    assert "rank 1 of common world" in out and "was lost" in out, out[-3000:]
    # The last checkpoint (after step 4) is intact, and a fresh job resumes from it.
    assert (tmp_path / "ckpt.minidb").exists()
    resumed = check(run_ranks([SCRIPT, "--out", str(tmp_path), "--steps", str(STEPS), "--batch", str(BATCH),
                               "--ckpt-every", "2", "--resume"]))
    assert "rank 1: resumed at step 4" in resumed, resumed[-3000:]
    full = _params(uninterrupted / "params_rank0.npz")
    for r in (0, 1):
        got = _params(tmp_path / f"params_rank{r}.npz")
        for k, v in full.items():
            assert np.array_equal(got[k], v), f"rank {r}: {k} differs from the uninterrupted run"


def test_default_mode_launcher_names_the_lost_rank(tmp_path):
    # Without --with-ft, Open MPI's launcher itself reports the dead rank and ends the job.
    start = time.time()
    # (The script says engine="GLOO", as old Caffe2 scripts do: it runs on MPI all the same.)
    proc = run_ranks([SCRIPT, "--out", str(tmp_path), "--steps", "4", "--batch", "4", "--engine", "GLOO",
                      "--kill-rank", "1", "--kill-at", "1"], timeout=90)
    end = time.time()
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert end - float((tmp_path / "killed_at").read_text()) < 30
    assert "rank 1" in out and ("signal 9" in out or "Killed" in out), out[-3000:]
    assert "rank 0: step 0 loss" in out and "engine='GLOO' run on MPI" in out, out[-3000:]


def test_hung_rank_trips_the_watchdog(tmp_path):
    # A frozen rank (SIGSTOP) neither dies nor answers: the waiting rank's watchdog ends the job.
    proc = run_ranks([SCRIPT, "--out", str(tmp_path), "--steps", "4", "--batch", "4", "--kill-rank", "1",
                      "--kill-at", "2", "--signal", "STOP"], timeout=90, env={"NETJIT_MPI_TIMEOUT": "3"})
    end = time.time()
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert end - float((tmp_path / "killed_at").read_text()) < 30
    assert "waited 3.0 s for the other ranks" in out and "Aborting the job" in out, out[-3000:]
