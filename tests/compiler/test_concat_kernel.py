"""Concat's compiled kernel (codegen/concat.py) against the numpy reference: 2 to 6 inputs, every
axis, NHWC, int32, batch 1 and many, serial and cut across threads; the cases it leaves to the
host (add_axis, 7 inputs) still run as host steps."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from tests.compiler.helpers import assert_same_blobs, netdef, op, plan_of, run_compiled, run_reference, step_kinds
from tests.compiler.test_parallel import THREADED

CASES = [  # (id, shapes, args)
    ("2-channels", [(1, 3, 5, 5), (1, 4, 5, 5)], {}),
    ("3-batch", [(4, 2, 3, 3), (4, 1, 3, 3), (4, 5, 3, 3)], {}),
    ("4-inception", [(2, 8, 6, 6), (2, 12, 6, 6), (2, 4, 6, 6), (2, 4, 6, 6)], {}),
    ("5-axis0", [(1, 3), (2, 3), (3, 3), (1, 3), (2, 3)], dict(axis=0)),
    ("6-last", [(2, 3, 1), (2, 3, 2), (2, 3, 3), (2, 3, 1), (2, 3, 2), (2, 3, 4)], dict(axis=2)),
    ("nhwc", [(2, 4, 4, 3), (2, 4, 4, 5)], dict(order="NHWC")),
    ("big", [(8, 64, 55, 55), (8, 64, 55, 55)], {}),            # enough work for threads
    ("big-batch1", [(1, 256, 27, 27), (1, 128, 27, 27)], {}),    # one image: rows cut within
]


def _run(shapes, args, dtype=np.float32):
    rng = np.random.default_rng(5)
    names = [f"x{i}" for i in range(len(shapes))]
    feeds = {n: (rng.standard_normal(s) * 10).astype(dtype) for n, s in zip(names, shapes)}
    # A Relu after the join keeps it inside a compiled segment, as in SqueezeNet's fire modules.
    net = netdef("concat_kernel", [op("Concat", names, ["y", "info"], **args), op("Relu", ["y"], ["z"])], names,
                 ["z", "info"])
    ref = run_reference(net, feeds)
    ws, runner = run_compiled(net, feeds, runs=2)
    assert_same_blobs(ref, ws, rtol=0, atol=0)
    return step_kinds(plan_of(runner))


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_concat_compiles_and_matches_reference(case, threaded):
    if threaded and not THREADED:
        pytest.skip("needs numba's OpenMP/TBB layer, 2+ threads and numpy's OpenBLAS")
    _, shapes, args = case
    old = numba.get_num_threads()
    numba.set_num_threads(old if threaded else 1)      # 1: every copy on the serial path
    try:
        kinds = _run(shapes, args)
    finally:
        numba.set_num_threads(old)
    assert "host" not in kinds, kinds


def test_concat_int32_compiles():
    rng = np.random.default_rng(1)
    feeds = {"a": rng.integers(-9, 9, (2, 3)).astype(np.int32), "b": rng.integers(-9, 9, (2, 2)).astype(np.int32)}
    net = netdef("concat_int", [op("Concat", ["a", "b"], ["y", "info"], axis=1)], ["a", "b"], ["y", "info"])
    ws, runner = run_compiled(net, feeds)
    assert_same_blobs(run_reference(net, feeds), ws, rtol=0, atol=0)
    assert step_kinds(plan_of(runner)) == ["kernel"]


@pytest.mark.parametrize("n_inputs,args", [(2, dict(add_axis=1)), (7, {})])
def test_concat_outside_the_kernel_stays_a_host_step(n_inputs, args):
    names = [f"x{i}" for i in range(n_inputs)]
    feeds = {n: np.full((2, 3), i, np.float32) for i, n in enumerate(names)}
    net = netdef("concat_host", [op("Concat", names, ["y", "info"], **args)], names, ["y", "info"])
    ws, runner = run_compiled(net, feeds)
    assert_same_blobs(run_reference(net, feeds), ws, rtol=0, atol=0)
    assert "host" in step_kinds(plan_of(runner))
