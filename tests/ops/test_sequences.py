"""LengthsRangeFill, LengthsToShape, LengthsGather, Range and DiagonalFill: hand-checked outputs,
inference, edge cases (empty segments, negative steps), errors naming the blob, and a run inside a
compiled plan (these ops run their reference there)."""
import numpy as np
import pytest

from netjit.compiler.ops.common import ShapeDependsOnValues
from netjit.compiler.ops.registry import TensorType, lookup
from netjit.proto.args import make_op
from netjit.runtime.errors import NetJitError
from tests.compiler.helpers import assert_same_blobs, netdef, op, run_compiled, run_reference
from tests.ops.harness import check_infer, run_op

i32 = lambda *v: np.array(v, np.int32)  # noqa: E731


@pytest.mark.parametrize("lengths,want", [([2, 0, 3], [0, 1, 0, 1, 2]), ([], []), ([1], [0]), ([0, 0], [])])
def test_lengths_range_fill(lengths, want):
    (y,) = run_op("LengthsRangeFill", [np.array(lengths, np.int32)])
    assert y.dtype == np.int32 and y.tolist() == want


def test_lengths_to_shape():
    (s,) = check_infer("LengthsToShape", [i32(4, 4, 4)])
    assert s.dtype == np.int32 and s.tolist() == [3, 4]
    assert run_op("LengthsToShape", [i32()])[0].tolist() == [0, 0]
    with pytest.raises(NetJitError, match=r"\(LengthsToShape\).*length 2 is 5 but length 0 is 4.*'in0'"):
        run_op("LengthsToShape", [i32(4, 4, 5)])


def test_lengths_gather():
    items = np.arange(12, dtype=np.float32).reshape(6, 2)
    lengths = i32(2, 0, 3, 1)
    (y,) = run_op("LengthsGather", [items, lengths, np.array([2, 0, 1, 2], np.int64)])
    assert y.dtype == np.float32 and y.shape == (8, 2)
    np.testing.assert_array_equal(y, items[[2, 3, 4, 0, 1, 2, 3, 4]])
    (empty,) = run_op("LengthsGather", [items, lengths, i32()])
    assert empty.shape == (0, 2)
    with pytest.raises(NetJitError, match=r"index 4 at position 0 is out of range for 4 segments.*'in2'"):
        run_op("LengthsGather", [items, lengths, i32(4)])
    with pytest.raises(NetJitError, match=r"add up to 6 but ITEMS has 5 rows.*'in1'"):
        run_op("LengthsGather", [items[:5], lengths, i32(0)])


@pytest.mark.parametrize("bounds,want", [
    ((np.int32(5),), [0, 1, 2, 3, 4]),
    ((np.int64(2), np.int64(9), np.int64(3)), [2, 5, 8]),
    ((np.int32(10), np.int32(0), np.int32(-3)), [10, 7, 4, 1]),
    ((np.int32(0), np.int32(5), np.int32(-1)), []),
    ((np.float32(0.5), np.float32(2.0), np.float32(0.5)), [0.5, 1.0, 1.5]),
    ((np.float64(1.0), np.float64(-1.0), np.float64(-0.75)), [1.0, 0.25, -0.5]),
])
def test_range(bounds, want):
    (y,) = run_op("Range", [np.array(b) for b in bounds])
    assert y.dtype == np.asarray(bounds[0]).dtype and y.ndim == 1
    np.testing.assert_allclose(y, want)
    np.testing.assert_allclose(y, np.arange(*[b.item() for b in bounds]))   # numpy's arange semantics


def test_range_errors():
    with pytest.raises(NetJitError, match=r"\(Range\).*Step size cannot be 0.*'in2'"):
        run_op("Range", [np.array(0), np.array(4), np.array(0)])
    with pytest.raises(NetJitError, match=r"same type.*'in1'"):
        run_op("Range", [np.array(0, np.int32), np.array(4, np.int64)])
    with pytest.raises(NetJitError, match=r"scalars.*'in0'"):
        run_op("Range", [np.array([4])])


@pytest.mark.parametrize("name,n_in", [("Range", 1), ("LengthsRangeFill", 1), ("LengthsGather", 3)])
def test_value_dependent_shapes_are_declared(name, n_in):
    with pytest.raises(ShapeDependsOnValues):
        lookup(name).infer(lookup(name).decode_args(make_op(name, ["a"] * n_in, ["y"])),
                           [TensorType((3,), np.dtype(np.int32))] * n_in)
    assert lookup(name).gradient is None and lookup(name).no_gradient_reason


# --------------------------------------------------------------------------------------------
# DiagonalFill
# --------------------------------------------------------------------------------------------
def test_diagonal_fill_matrix_and_cube():
    (y,) = check_infer("DiagonalFill", [], shape=[3, 3], value=2.5)
    np.testing.assert_array_equal(y, np.eye(3, dtype=np.float32) * 2.5)
    (c,) = check_infer("DiagonalFill", [], shape=[3, 3, 3], value=7)
    assert c.dtype == np.int64 and c.sum() == 21 and all(c[i, i, i] == 7 for i in range(3))
    (w,) = check_infer("DiagonalFill", [], shape=[2, 4], value=1.0)
    np.testing.assert_array_equal(w, np.eye(2, 4, dtype=np.float32))
    # A tall matrix's diagonal wraps round every cols + 1 elements, as Caffe2's does.
    (t,) = run_op("DiagonalFill", [], shape=[4, 2], value=1.0)
    assert t.tolist() == [[1, 0], [0, 1], [0, 0], [1, 0]]
    (d,) = check_infer("DiagonalFill", [], shape=[2, 2], value=1, dtype=2)   # INT32
    assert d.dtype == np.int32 and d.tolist() == [[1, 0], [0, 1]]
    (like,) = check_infer("DiagonalFill", [np.zeros((2, 3))], value=1.0)
    assert like.shape == (2, 3) and like.sum() == 2


def test_diagonal_fill_errors():
    with pytest.raises(NetJitError, match=r"\(DiagonalFill\).*at least 2 dims"):
        run_op("DiagonalFill", [], shape=[4], value=1.0)
    with pytest.raises(NetJitError, match="must be equal"):
        run_op("DiagonalFill", [], shape=[2, 3, 2], value=1.0)


def test_inside_a_compiled_plan():
    feeds = {"lengths": i32(2, 3), "items": np.arange(10, dtype=np.float32).reshape(5, 2),
             "idx": i32(1, 0)}
    net = netdef("seq", [op("LengthsRangeFill", ["lengths"], ["pos"]),
                         op("LengthsGather", ["items", "lengths", "idx"], ["g"]),
                         op("Relu", ["g"], ["r"]), op("Size", ["r"], ["n"]),
                         op("DiagonalFill", [], ["eye"], shape=[3, 3], value=1.0)])
    ws, _ = run_compiled(net, feeds)
    assert_same_blobs(run_reference(net, feeds), ws)
    assert ws.fetch("n") == 10 and ws.fetch("pos").tolist() == [0, 1, 0, 1, 2]
