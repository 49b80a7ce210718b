"""Buffer planning: the overlap verifier, in-place reuse, and arena size against the live-set
lower bound on a long random chain compiled end to end."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from netjit.compiler.api import compile as nj_compile
from netjit.compiler.passes.buffers import BufferPlan, BufferPlanError, Interval, assign, verify_buffers
from tests.compiler.helpers import netdef, op


def test_reuse_after_death():
    plan = assign([Interval("a", 0, 1, 1000), Interval("b", 1, 2, 1000), Interval("c", 2, 3, 1000)])
    assert plan.offsets["a"] == plan.offsets["c"] and plan.offsets["a"] != plan.offsets["b"]
    assert plan.arena_bytes == 2048 == plan.lower_bound


def test_inplace_pair_shares_bytes():
    plan = assign([Interval("a", 0, 1, 256), Interval("b", 1, 2, 256, inplace_of="a")])
    assert plan.offsets["a"] == plan.offsets["b"] and ("b", "a") in plan.inplace
    assert plan.arena_bytes == 256 == plan.lower_bound


def test_verifier_rejects_overlap():
    ivs = {"a": Interval("a", 0, 2, 128), "b": Interval("b", 1, 3, 128)}
    bad = BufferPlan(ivs, {"a": 0, "b": 64}, 256, 256, 256)
    with pytest.raises(BufferPlanError, match="live together and overlap"):
        verify_buffers(bad)
    misaligned = BufferPlan(ivs, {"a": 0, "b": 130}, 512, 256, 256)
    with pytest.raises(BufferPlanError, match="misaligned"):
        verify_buffers(misaligned)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 8), st.integers(1, 5000)), min_size=1, max_size=40))
def test_random_intervals_never_overlap(specs):
    ivs = [Interval(f"v{i}", s, s + d, n) for i, (s, d, n) in enumerate(specs)]
    plan = assign(ivs)          # assign() runs the verifier itself; check the bound as well
    verify_buffers(plan)
    assert plan.lower_bound <= plan.arena_bytes <= plan.total_bytes


def _random_chain(n_ops: int, seed: int):
    """A 50-op chain of FCs with random widths, ReLUs after some, and a few skip connections
    (Add of an earlier same-width activation) so live ranges vary."""
    rng = np.random.default_rng(seed)
    batch = 16
    widths = [int(w) for w in rng.integers(8, 300, size=n_ops + 1)]
    ops, feeds, last_of_width = [], {"x0": rng.standard_normal((batch, widths[0])).astype(np.float32)}, {}
    cur = "x0"
    for i in range(n_ops):
        k, n = widths[i], widths[i + 1]
        feeds[f"w{i}"] = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
        feeds[f"b{i}"] = rng.standard_normal(n).astype(np.float32)
        ops.append(op("FC", [cur, f"w{i}", f"b{i}"], [f"h{i}"]))
        cur = f"h{i}"
        if n in last_of_width and rng.random() < 0.7:
            ops.append(op("Add", [cur, last_of_width[n]], [f"s{i}"]))
            cur = f"s{i}"
        elif rng.random() < 0.3:
            ops.append(op("Softmax", [cur], [f"p{i}"]))      # a host step reading cur, then more math
            ops.append(op("Relu", [cur], [f"r{i}"]))
            cur = f"r{i}"
        last_of_width[n] = cur
    return netdef(f"chain{seed}", ops, external_input=list(feeds), external_output=[cur]), feeds, cur


@pytest.mark.parametrize("seed", range(6))
def test_arena_close_to_lower_bound_on_random_chain(seed):
    net, feeds, out = _random_chain(50, seed)
    exe = nj_compile(net, inputs=feeds)
    (plan,) = exe.plans_at(0)
    buf = plan.buffers
    verify_buffers(buf)
    assert len(buf.offsets) >= 40
    assert buf.arena_bytes <= 1.10 * buf.lower_bound, buf.summary()
    assert buf.arena_bytes < buf.total_bytes / 4
    # And the planned, reused memory computes the right answer.
    x = feeds["x0"]
    ref = _reference(net, feeds)
    got = exe(**feeds)[out]
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-4)
    del x


def _reference(net, feeds):
    from tests.compiler.helpers import run_reference
    ws = run_reference(net, feeds)
    return ws.blobs[net.external_output[0]]


def test_elementwise_output_reuses_a_dying_input():
    rng = np.random.default_rng(3)
    feeds = {"X": rng.standard_normal((8, 6)).astype(np.float32), "W": rng.standard_normal((6, 6)).astype(np.float32),
             "b": rng.standard_normal(6).astype(np.float32)}
    net = netdef("inplace", [op("FC", ["X", "W", "b"], ["A"]), op("Softmax", ["A"], ["S"]),
                             op("Relu", ["A"], ["B"]), op("FC", ["B", "W", "b"], ["C"])],
                 external_input=list(feeds), external_output=["S", "C"])
    exe = nj_compile(net, inputs=feeds)
    (plan,) = exe.plans_at(0)
    assert len(plan.buffers.inplace) == 1, plan.buffers.summary()
    (out, inp), = plan.buffers.inplace
    assert plan.buffers.offsets[out] == plan.buffers.offsets[inp]
    ref = {k: v for k, v in _run_ref_all(net, feeds).items() if k in ("S", "C")}
    got = exe(**feeds)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-5)


def _run_ref_all(net, feeds):
    from tests.compiler.helpers import run_reference
    return run_reference(net, feeds).blobs
