"""Run on every rank by test_collectives.py (``mpiexec -n 2``): each collective op through a Caffe2 net,
checked against numpy on what every rank fed (rank r feeds values made from r). Prints ``rank R OK``.
"""
from __future__ import annotations

import sys
import warnings

import numpy as np
from caffe2.python import core, data_parallel_model as dpm, workspace

from netjit.runtime.errors import OpError
from netjit.runtime.workspace import REGISTRY


def fed(rank: int, shape: tuple[int, ...], dtype: type, k: int = 0) -> np.ndarray:
    rng = np.random.default_rng(100 * k + rank)
    return (rng.standard_normal(shape) * 10).astype(dtype)


def run(net: core.Net) -> None:
    workspace.RunNetOnce(net)


def expect_error(net: core.Net, *words: str) -> None:
    try:
        run(net)
    except OpError as err:
        for w in words:
            assert w in str(err), f"{w!r} not in {err}"
        return
    raise AssertionError(f"net {net.Name()} should have failed")


def main() -> int:
    from mpi4py import MPI
    rank, size = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
    ranks = range(size)

    init = core.Net("init")
    init.FileStoreHandlerCreate([], ["store"], path="/tmp/netjit_rdv_test", prefix="t")
    init.CreateCommonWorld(["store"], ["cw"], size=size, rank=rank, engine="MPI", name="cw_op")
    init.CloneCommonWorld(["cw"], ["cw2"], engine="MPI")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        init.CreateCommonWorld([], ["gloo_cw"], engine="GLOO")
        init.Barrier(["gloo_cw"], [], engine="GLOO")
        run(init)
    gloo = [w for w in seen if "GLOO" in str(w.message)]
    assert len(gloo) == 1, [str(w.message) for w in seen]   # said once, not per op

    # Allreduce: one float32 tensor, in place in the workspace's own array (no copy).
    blobs = REGISTRY.current.blobs
    workspace.FeedBlob("x", fed(rank, (3, 5), np.float32))
    before = blobs["x"]
    net = core.Net("allreduce")
    net.Allreduce(["cw", "x"], ["x"], engine="MPI")
    workspace.CreateNet(net)
    workspace.RunNet(net)
    want = sum(fed(r, (3, 5), np.float32).astype(np.float64) for r in ranks)
    np.testing.assert_allclose(workspace.FetchBlob("x"), want, rtol=1e-6)
    assert blobs["x"] is before, "Allreduce must reduce the blob's own array in place"

    # The compiled Copy gives 'b' the array of 'a': reducing 'b' in place must leave 'a' as it was.
    workspace.FeedBlob("src", fed(rank, (6,), np.float32, 9))
    net = core.Net("alias")
    net.Relu("src", "a")
    net.Copy("a", "b")
    net.Allreduce(["cw", "b"], ["b"], engine="MPI")
    workspace.CreateNet(net)
    for _ in range(2):
        workspace.RunNet(net)
        np.testing.assert_array_equal(workspace.FetchBlob("a"), np.maximum(fed(rank, (6,), np.float32, 9), 0))
        want = sum(np.maximum(fed(r, (6,), np.float32, 9), 0).astype(np.float64) for r in ranks)
        np.testing.assert_allclose(workspace.FetchBlob("b"), want, rtol=1e-6)

    # Several local tensors (Gloo's rule): the sum over inputs and ranks lands in every input.
    for dt in (np.float64, np.int32):
        workspace.FeedBlob("a", fed(rank, (4,), dt, 1))
        workspace.FeedBlob("b", fed(rank, (4,), dt, 2))
        net = core.Net(f"allreduce2_{np.dtype(dt).name}")
        net.Allreduce(["cw2", "a", "b"], ["a", "b"], engine="GLOO")
        run(net)
        want = sum(fed(r, (4,), dt, 1) + fed(r, (4,), dt, 2) for r in ranks)
        for b in ("a", "b"):
            got = workspace.FetchBlob(b)
            assert got.dtype == np.dtype(dt)
            np.testing.assert_allclose(got, want, rtol=1e-12)

    # netjit_async=1 only starts a reduction; the next collective (Allreduce or Barrier) completes it.
    for i in range(3):
        workspace.FeedBlob(f"s{i}", fed(rank, (1000,), np.float32, 10 + i))
    net = core.Net("async_group")
    net.Allreduce(["cw", "s0"], ["s0"], engine="MPI", netjit_async=1)
    net.Allreduce(["cw2", "s1"], ["s1"], engine="MPI", netjit_async=1)
    net.Allreduce(["cw", "s2"], ["s2"], engine="MPI")
    net.Allreduce(["cw", "s0"], ["s0"], engine="MPI", netjit_async=1)
    net.Barrier(["cw"], [], engine="MPI")
    run(net)
    for i, times in ((0, 2), (1, 1), (2, 1)):
        want = sum(fed(r, (1000,), np.float32, 10 + i).astype(np.float64) for r in ranks) * (size if times == 2 else 1)
        np.testing.assert_allclose(workspace.FetchBlob(f"s{i}"), want, rtol=1e-5)

    # Broadcast from root 1: root's first input everywhere.
    workspace.FeedBlob("p", fed(rank, (2, 3), np.float32, 3))
    workspace.FeedBlob("q", fed(rank, (2, 3), np.float32, 4))
    net = core.Net("bcast")
    net.Broadcast(["cw", "p", "q"], ["p", "q"], root=size - 1, engine="MPI")
    run(net)
    for b in ("p", "q"):
        np.testing.assert_array_equal(workspace.FetchBlob(b), fed(size - 1, (2, 3), np.float32, 3))

    # Allgather: rank-major, then input order, one 1-D blob.
    workspace.FeedBlob("g1", fed(rank, (2, 2), np.float32, 5))
    workspace.FeedBlob("g2", fed(rank, (2, 2), np.float32, 6))
    net = core.Net("gather")
    net.Allgather(["cw", "g1", "g2"], ["gathered"], engine="MPI")
    run(net)
    want = np.concatenate([np.concatenate([fed(r, (2, 2), np.float32, 5).ravel(),
                                           fed(r, (2, 2), np.float32, 6).ravel()]) for r in ranks])
    np.testing.assert_array_equal(workspace.FetchBlob("gathered"), want)

    # ReduceScatter: this rank's slice of the sum at its own offset; the rest untouched.
    counts = np.array([3, 5][:size] if size == 2 else [8 // size] * size, np.int32)
    n = int(counts.sum())
    mine = fed(rank, (n,), np.float32, 7)
    workspace.FeedBlob("rs", mine)
    workspace.FeedBlob("counts", counts)
    net = core.Net("rscatter")
    net.ReduceScatter(["cw", "rs", "counts"], ["rs", "counts"], engine="MPI")
    run(net)
    total = sum(fed(r, (n,), np.float32, 7).astype(np.float64) for r in ranks)
    lo, hi = int(counts[:rank].sum()), int(counts[:rank + 1].sum())
    got = workspace.FetchBlob("rs")
    np.testing.assert_allclose(got[lo:hi], total[lo:hi], rtol=1e-6)
    np.testing.assert_array_equal(np.delete(got, np.s_[lo:hi]), np.delete(mine, np.s_[lo:hi]))

    # Errors a user can cause, each naming the net, op and blob.
    bad = core.Net("bad_size")
    bad.CreateCommonWorld([], ["cw_bad"], size=size + 1, engine="MPI")
    expect_error(bad, "bad_size", "CreateCommonWorld", f"size={size + 1}", f"mpiexec started {size}")
    bad = core.Net("bad_rank")
    bad.CreateCommonWorld([], ["cw_bad"], rank=(rank + 1) % size, engine="MPI")
    expect_error(bad, f"this process is rank {rank}")
    bad = core.Net("not_a_world")
    bad.Allreduce(["x", "x"], ["x"], engine="MPI")
    expect_error(bad, "must be a common world", "'x'")
    try:
        dpm._resolve_rendezvous(dict(kv_handler=None, shard_id=None, num_shards=size + 2, engine="MPI"))
        raise AssertionError("a num_shards mismatch must fail")
    except ValueError as err:
        assert f"num_shards={size + 2}" in str(err) and f"started {size}" in str(err), err
    rdv = dict(kv_handler=None, shard_id=None, num_shards=None, engine="GLOO")
    assert dpm._resolve_rendezvous(rdv) is rdv and (rdv["shard_id"], rdv["num_shards"]) == (rank, size)

    # Destroyed worlds refuse further collectives.
    net = core.Net("destroy")
    net.DestroyCommonWorld(["cw2"], ["cw2"], engine="MPI")
    run(net)
    bad = core.Net("after_destroy")
    bad.Barrier(["cw2"], [], engine="MPI")
    expect_error(bad, "was destroyed")
    print(f"rank {rank} OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
