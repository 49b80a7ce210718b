"""codegen/loops.py: large plain elementwise loops get a threaded copy of their nest (``_split``),
chosen again at run time by size. Each case is checked against the numpy reference executor, and
the threaded run against the same kernel's serial path (one numba thread), which must agree bit
for bit: every element is computed by the same code either way."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from netjit.compiler.codegen import blas, loops, parallel
from tests.compiler.helpers import assert_same_blobs, netdef, op, plan_of, run_compiled, run_reference

THREADED = parallel.PARALLEL and numba.get_num_threads() > 1 and "OpenBLAS" in blas.PROVIDER


def chain(n: int):
    """bench_fusion's chain: y = sigmoid(relu(x*2 + 1) - 0.5) * x over ``n`` float32 values."""
    net = netdef("chain6", [op("Scale", ["x"], ["t1"], scale=2.0),
                            op("Add", ["t1", "one"], ["t2"], broadcast=1),
                            op("Relu", ["t2"], ["t3"]),
                            op("Sub", ["t3", "half"], ["t4"], broadcast=1),
                            op("Sigmoid", ["t4"], ["t5"]),
                            op("Mul", ["t5", "x"], ["y"])],
                 external_input=["x", "one", "half"], external_output=["y"])
    rng = np.random.default_rng(3)
    feeds = {"x": (rng.standard_normal(n) * 4).astype(np.float32), "one": np.ones(1, np.float32),
             "half": np.full(1, 0.5, np.float32)}
    return net, feeds


def rows_and_columns():
    """A rank-2 nest: a per-column scale (contiguous along the inner dim), a per-row bias (hoisted
    out of the inner loop), then Tanh."""
    net = netdef("rows", [op("Mul", ["x", "s"], ["t1"], broadcast=1),
                          op("Add", ["t1", "b"], ["t2"], broadcast=1, axis=0),
                          op("Tanh", ["t2"], ["y"])],
                 external_input=["x", "s", "b"], external_output=["y"])
    rng = np.random.default_rng(4)
    feeds = {"x": rng.standard_normal((257, 611)).astype(np.float32),
             "s": rng.standard_normal(611).astype(np.float32),
             "b": rng.standard_normal(257).astype(np.float32)}
    return net, feeds


def serial_rerun(runner, name: str) -> np.ndarray:
    """The same compiled run with one numba thread (the kernel's serial path)."""
    prev = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        runner.run()
    finally:
        numba.set_num_threads(prev)
    return runner.ws.fetch(name).copy()


@pytest.mark.skipif(not parallel.PARALLEL, reason="needs numba's OpenMP/TBB threading layer")
@pytest.mark.parametrize("case", ["rank 1, odd length", "rank 2, broadcast rows and columns"])
def test_large_loop_splits_and_matches_reference_and_serial(case):
    net, feeds = chain((1 << 17) + 37) if case.startswith("rank 1") else rows_and_columns()
    got, runner = run_compiled(net, feeds, runs=2)
    plan = plan_of(runner)
    kernels = [k for k in plan.driver.kernels if k.source]
    assert len(kernels) == 1 and "_split(" in kernels[0].source and kernels[0].threaded
    assert "_pin = _blas(1)" in plan.driver.source          # the run owns the cores
    assert_same_blobs(run_reference(net, feeds), got, rtol=3e-6, atol=1e-7, names=["y"])
    threaded = got.fetch("y").copy()
    if THREADED:
        with_pin = blas.blas_threads(1)
        try:
            assert blas.team(10 * threaded.size) > 1           # so the run above took the split
        finally:
            blas.blas_threads(with_pin)
    np.testing.assert_array_equal(serial_rerun(runner, "y"), threaded)


def test_small_loop_stays_serial_and_unpinned():
    # Below SPLIT_PLAN_WORK no threaded copy is generated (it would cost numba's parallel
    # compile for nothing) and the run does not touch OpenBLAS's thread count.
    net, feeds = chain(1000)
    got, runner = run_compiled(net, feeds)
    plan = plan_of(runner)
    kernels = [k for k in plan.driver.kernels if k.source]
    assert len(kernels) == 1 and "_split" not in kernels[0].source and not kernels[0].threaded
    assert "_blas(" not in plan.driver.source.split("def run")[0].split("def body")[1]
    assert 13 * 1000 < loops.SPLIT_PLAN_WORK
    assert_same_blobs(run_reference(net, feeds), got, rtol=3e-6, atol=1e-7, names=["y"])
