"""Caffe2's collective ops on 2 MPI ranks, checked against numpy on every rank (rank_collectives.py)."""
from __future__ import annotations

from tests.mpi.launch import HERE, check, run_ranks


def test_collectives_match_numpy_on_two_ranks():
    out = check(run_ranks([str(HERE / "rank_collectives.py")], n=2, timeout=120))
    assert "rank 0 OK" in out and "rank 1 OK" in out, out[-3000:]
