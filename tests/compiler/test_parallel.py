"""codegen/parallel.py: kernels that cut their work across threads while the driver pins OpenBLAS
to one thread. Each threaded path is checked against the same kernel's serial path (OpenBLAS not
pinned, which the single-threaded tests in test_registry_compiled.py check against numpy), the
driver's pin against the caller's OpenBLAS setting, and a forked child against its parent."""
from __future__ import annotations

import multiprocessing
import os
import sys
from contextlib import contextmanager
from typing import Iterator

import numba
import numpy as np
import pytest

from netjit.compiler.codegen import blas, parallel, windows
from tests.compiler.helpers import assert_same_blobs, netdef, op, plan_of, run_compiled, run_reference

THREADED = parallel.PARALLEL and numba.get_num_threads() > 1 and "OpenBLAS" in blas.PROVIDER


@contextmanager
def pinned() -> Iterator[None]:
    """What a compiled run does around its kernels: OpenBLAS on one thread."""
    prev = blas.blas_threads(1)
    try:
        yield
    finally:
        blas.blas_threads(prev)


def test_team_follows_the_pin():
    big = parallel.MIN_WORK * 4
    with pinned():
        assert blas.team(big) == (numba.get_num_threads() if parallel.PARALLEL else 1)
        assert blas.team(parallel.MIN_WORK - 1) == 1
    if "OpenBLAS" in blas.PROVIDER:
        prev = blas.blas_threads(2)     # OpenBLAS free to thread: kernels leave the threading to it
        try:
            assert blas.team(big) == 1
        finally:
            blas.blas_threads(prev)


def test_part_covers_the_range_with_aligned_cuts():
    for total, parts, align in [(100, 2, 16), (7, 3, 1), (5, 4, 16), (0, 2, 1), (1000, 7, 8)]:
        cuts = [parallel.part(total, parts, t, align) for t in range(parts)]
        assert cuts[0][0] == 0 and cuts[-1][1] == total
        for (lo, hi), (lo2, _) in zip(cuts, cuts[1:]):
            assert hi == lo2 and lo % align == 0 or lo == total


@pytest.mark.skipif(not THREADED, reason="needs numba's OpenMP/TBB layer, 2+ threads and numpy's OpenBLAS")
@pytest.mark.parametrize("m,n,k", [(300, 40, 70), (40, 300, 70), (129, 131, 50)])   # rows, columns, near-square
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_pgemm_blocks_match_numpy(m, n, k, ta, tb):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    # Embedded at an offset in larger buffers, with C's leading dimension wider than n.
    af = np.concatenate([np.zeros(3, np.float32), a.ravel()])
    bf = np.concatenate([np.zeros(5, np.float32), b.ravel()])
    c = np.full((m, n + 2), 7.0, np.float32)
    with pinned():
        assert blas.team(m * n * k) > 1
        blas.pgemm(ta, tb, m, n, k, 1.0, af, 3, a.shape[1], bf, 5, b.shape[1], 0.0, c.reshape(-1), 0, n + 2)
    want = (a.T if ta else a) @ (b.T if tb else b)
    np.testing.assert_allclose(c[:, :n], want, rtol=1e-4, atol=1e-4)
    assert (c[:, n:] == 7.0).all()          # the padding columns between rows are untouched


# (N, C, H, W, M, group, KH, stride, pad, dilation): each reaches one threaded path of conv2d.
CONV_CASES = {
    "batch cut by images": (6, 8, 12, 12, 16, 1, 3, 1, 1, 1),
    "batch pointwise": (4, 32, 10, 10, 24, 1, 1, 1, 0, 1),
    "batch grouped strided": (3, 16, 15, 13, 24, 2, 3, 2, 1, 1),
    "one image, row bands": (1, 16, 24, 24, 32, 1, 3, 1, 1, 1),
    "one image, row bands dilated": (1, 8, 23, 21, 16, 1, 3, 1, 2, 2),
    "one image, narrow map cut by channels": (1, 64, 7, 7, 96, 1, 3, 1, 1, 1),
    "one image, pointwise": (1, 64, 14, 14, 80, 1, 1, 1, 0, 1),
    "one image, grouped bands": (1, 16, 24, 24, 32, 4, 3, 1, 1, 1),
}


def _conv_problem(name, seed):
    """(geometry args for windows.conv2d*, x, wt, dY) for a CONV_CASES entry."""
    n, c, h, w, m, group, kh, s, pad, d = CONV_CASES[name]
    oh = (h + 2 * pad - d * (kh - 1) - 1) // s + 1
    ow = (w + 2 * pad - d * (kh - 1) - 1) // s + 1
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((m, c // group, kh, kh)).astype(np.float32)
    dy = rng.standard_normal((n, m, oh, ow)).astype(np.float32)
    return (n, c, h, w, m, group, kh, kh, s, s, pad, pad, d, d, oh, ow), x, wt, dy


@pytest.mark.skipif(not THREADED, reason="needs numba's OpenMP/TBB layer, 2+ threads and numpy's OpenBLAS")
@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv2d_threaded_matches_serial(name):
    args, x, wt, dy = _conv_problem(name, 6)
    serial, threaded = (np.full(dy.shape, np.nan, np.float32) for _ in range(2))
    windows.conv2d(x, wt, serial, *args)
    with pinned():
        assert blas.team(dy.size * wt[0].size) > 1
        windows.conv2d(x, wt, threaded, *args)
    np.testing.assert_allclose(threaded, serial, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not THREADED, reason="needs numba's OpenMP/TBB layer, 2+ threads and numpy's OpenBLAS")
@pytest.mark.parametrize("name", ["batch cut by images", "batch pointwise", "batch grouped strided",
                                  "one image, row bands"])
@pytest.mark.parametrize("outputs", ["w", "wb", "wx", "wbx"])
def test_conv2d_gradient_threaded_matches_serial(name, outputs):
    args, x, wt, dy = _conv_problem(name, 7)
    fn = getattr(windows, f"conv2d_grad_{outputs}")

    def run():
        outs = [np.full(wt.shape, np.nan, np.float32)]
        if "b" in outputs:
            outs.append(np.full(wt.shape[0], np.nan, np.float32))
        if "x" in outputs:
            outs.append(np.full(x.shape, np.nan, np.float32))
        fn(x, wt, dy, *outs, *args)
        return outs
    serial = run()
    with pinned():
        threaded = run()
    for s, t in zip(serial, threaded):
        np.testing.assert_allclose(t, s, rtol=1e-4, atol=1e-3)


# (planes, H, W, KH, stride, pad): 2x2 fast path, overlapping 3x3 windows with padding, global.
POOL_CASES = [(256, 24, 24, 2, 2, 0), (160, 29, 27, 3, 2, 1), (3000, 7, 7, 7, 1, 0)]


@pytest.mark.skipif(not THREADED, reason="needs numba's OpenMP/TBB layer, 2+ threads and numpy's OpenBLAS")
@pytest.mark.parametrize("case", POOL_CASES)
def test_pools_threaded_match_serial(case):
    planes, h, w, k, s, pad = case
    oh, ow = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    geo = (planes, h, w, k, k, s, s, pad, pad, oh, ow)
    rng = np.random.default_rng(8)
    # Rounded values tie inside windows: every tied maximum takes the gradient.
    x = np.round(rng.standard_normal((planes, h, w)), 1).astype(np.float32)
    dy = rng.standard_normal((planes, oh, ow)).astype(np.float32)

    def run():
        y, ya = np.full((planes, oh, ow), np.nan, np.float32), np.full((planes, oh, ow), np.nan, np.float32)
        dx, dxa = np.full(x.shape, np.nan, np.float32), np.full(x.shape, np.nan, np.float32)
        windows.max_pool2d(x, y, *geo)
        windows.max_pool2d_gradient(x, y, dy, dx, *geo)
        windows.average_pool2d(x, ya, *geo, False)
        windows.average_pool2d_gradient(dy, dxa, *geo, False)
        return y, dx, ya, dxa
    serial = run()
    with pinned():
        assert blas.team(planes * oh * ow * k * k) > 1
        threaded = run()
    for s_, t_ in zip(serial, threaded):
        np.testing.assert_allclose(t_, s_, rtol=1e-6, atol=1e-6)


def _conv_net(fail: bool = False):
    ops = [op("Conv", ["x", "w", "b"], ["y"], kernel=3, pad=1), op("Relu", ["y"], ["r"]),
           op("MaxPool", ["r"], ["p"], kernel=2, stride=2)]
    if fail:
        # Reshape to an impossible shape fails at run time, after the threaded kernels ran.
        ops.append(op("Reshape", ["p", "bad_shape"], ["q", "old"]))
    return netdef("conv_pin", ops, external_input=["x", "w", "b"] + (["bad_shape"] if fail else []),
                  external_output=["q" if fail else "p"])


def _conv_feeds():
    rng = np.random.default_rng(9)
    return {"x": rng.standard_normal((4, 8, 20, 20)).astype(np.float32),
            "w": rng.standard_normal((16, 8, 3, 3)).astype(np.float32),
            "b": rng.standard_normal(16).astype(np.float32)}


def test_compiled_run_pins_openblas_and_restores_it():
    feeds = _conv_feeds()
    before = blas.blas_threads(2)
    try:
        got, runner = run_compiled(_conv_net(), feeds)
        assert blas.blas_threads(2) == 2        # the caller's setting is back after the run
        assert "_blas(1)" in plan_of(runner).driver.source
        assert_same_blobs(run_reference(_conv_net(), feeds), got, rtol=1e-4, atol=1e-4, names=["p"])
    finally:
        blas.blas_threads(before)


def test_failed_run_still_restores_openblas():
    feeds = dict(_conv_feeds(), bad_shape=np.array([7, 7, 7], np.int64))
    before = blas.blas_threads(2)
    try:
        with pytest.raises(Exception) as err:
            run_compiled(_conv_net(fail=True), feeds)
        assert "Reshape" in str(err.value)
        assert blas.blas_threads(2) == 2
    finally:
        blas.blas_threads(before)


def _child_run(queue) -> None:
    feeds = _conv_feeds()
    queue.put(run_compiled(_conv_net(), feeds)[0].fetch("p"))


@pytest.mark.skipif(not (parallel.PARALLEL and sys.platform.startswith("linux")), reason="fork + OpenMP case")
def test_forked_child_runs_compiled_nets_serially():
    # GNU OpenMP cannot start a parallel region in a child forked after the parent used one:
    # numba would terminate the child. netjit sets such a child to one thread instead.
    feeds = _conv_feeds()
    parent = run_compiled(_conv_net(), feeds)[0].fetch("p")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_run, args=(queue,))
    child.start()
    got = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_allclose(got, parent, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not THREADED, reason="needs numba's OpenMP/TBB layer, 2+ threads and numpy's OpenBLAS")
def test_conv_epilogue_runs_as_a_parallel_nest():
    # A conv large enough to be cut across threads also runs its fused bias/SpatialBN/Relu loop
    # through the generated ``prange`` copy of the nest.
    rng = np.random.default_rng(10)
    net = netdef("conv_bn", [op("Conv", ["x", "w", "b"], ["y"], kernel=3, pad=1),
                             op("SpatialBN", ["y", "s", "o", "m", "v"], ["z"], is_test=1, epsilon=1e-5),
                             op("Relu", ["z"], ["r"])],
                 external_input=["x", "w", "b", "s", "o", "m", "v"], external_output=["r"])
    feeds = {"x": rng.standard_normal((2, 8, 48, 48)).astype(np.float32),
             "w": rng.standard_normal((16, 8, 3, 3)).astype(np.float32),
             "b": rng.standard_normal(16).astype(np.float32),
             "s": rng.random(16).astype(np.float32), "o": rng.standard_normal(16).astype(np.float32),
             "m": rng.standard_normal(16).astype(np.float32), "v": (rng.random(16) + 0.5).astype(np.float32)}
    got, runner = run_compiled(net, feeds, runs=2)
    sources = [k.source for k in plan_of(runner).driver.kernels if k.source]
    assert any("_nest(" in s and "prange(d0)" in s for s in sources)
    assert_same_blobs(run_reference(net, feeds), got, rtol=1e-4, atol=1e-4, names=["r"])


def test_tiny_gemm_plan_skips_the_pin():
    # RunNet's per-call cost: a plan whose threaded kernels could never split does not touch
    # OpenBLAS's thread count.
    net = netdef("tiny_fc", [op("FC", ["x", "w", "b"], ["y"])], external_input=["x", "w", "b"],
                 external_output=["y"])
    feeds = {"x": np.ones((2, 3), np.float32), "w": np.ones((5, 3), np.float32), "b": np.ones(5, np.float32)}
    got, runner = run_compiled(net, feeds)
    assert "_blas(" not in plan_of(runner).driver.source.split("def run")[0].split("def body")[1]
    np.testing.assert_allclose(got.fetch("y"), np.full((2, 5), 4.0, np.float32))
