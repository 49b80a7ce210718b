"""MatMul and BatchMatMul: products vs einsum, axes/trans flags, the third "shape like" input,
Caffe2's suffix broadcasting, inference and gradients (incl. the gradient ops' layout)."""
import numpy as np
import pytest

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.proto.args import make_op
from tests.ops.harness import check_gradient, check_infer, run_op

RNG = np.random.default_rng(5)
TRANS = [(0, 0), (0, 1), (1, 0), (1, 1)]


def mat(x, axis):
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("a_shape,b_shape,axis_a,axis_b", [
    ((3, 4), (4, 5), 1, 1),
    ((2, 3, 4), (12, 5), 1, 1),      # A flattened to 2x12
    ((2, 3, 4), (4, 5), 2, 1),       # A flattened to 6x4
    ((3, 4), (2, 2, 5), 1, 2),       # B flattened to 4x5
    ((2, 3, 4), (4, 5), -1, -1),
])
def test_matmul(ta, tb, a_shape, b_shape, axis_a, axis_b):
    a2 = RNG.standard_normal(mat(np.empty(a_shape), axis_a % len(a_shape)).shape)
    b2 = RNG.standard_normal(mat(np.empty(b_shape), axis_b % len(b_shape)).shape)
    # Build inputs whose flattened (and possibly transposed) views multiply.
    if ta:
        a2 = a2.T.copy()
    if tb:
        b2 = b2.T.copy()
    a_shape = a_shape if not ta else a2.shape
    b_shape = b_shape if not tb else b2.shape
    a, b = a2.reshape(a_shape), b2.reshape(b_shape)
    ax_a = axis_a if not ta else 1
    ax_b = axis_b if not tb else 1
    kw = dict(axis_a=ax_a, axis_b=ax_b, trans_a=ta, trans_b=tb)
    (y,) = check_infer("MatMul", [a, b], **kw)
    expect = np.einsum("mk,kn->mn", a2.T if ta else a2, b2.T if tb else b2)
    np.testing.assert_allclose(y, expect, rtol=1e-12)
    check_gradient("MatMul", [a, b], rtol=1e-7, atol=1e-9, **kw)


def test_matmul_with_axes_gradient_reshapes_back():
    a, b = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((2, 2, 5))
    (y,) = check_infer("MatMul", [a, b], axis_a=2, axis_b=2, trans_b=0)
    assert y.shape == (6, 5)
    grads = check_gradient("MatMul", [a, b], axis_a=2, axis_b=2, rtol=1e-7, atol=1e-9)
    assert grads[0].shape == a.shape and grads[1].shape == b.shape


@pytest.mark.parametrize("ta,tb", TRANS)
def test_matmul_axes_with_trans(ta, tb):
    # A (4, 2, 3) at axis_a=1 is 4x6, B (2, 3, 5) at axis_b=2 is 6x5 (or their transposes).
    a = RNG.standard_normal((6, 2, 2) if ta else (4, 2, 3))
    b = RNG.standard_normal((5, 2, 3) if tb else (2, 3, 5))
    kw = dict(axis_a=1, axis_b=1 if tb else 2, trans_a=ta, trans_b=tb)
    (y,) = check_infer("MatMul", [a, b], **kw)
    a2, b2 = mat(a, 1), mat(b, kw["axis_b"])
    np.testing.assert_allclose(y, (a2.T if ta else a2) @ (b2.T if tb else b2), rtol=1e-12)
    check_gradient("MatMul", [a, b], rtol=1e-7, atol=1e-9, **kw)


def test_matmul_shape_like_input_and_float32():
    a, b = RNG.standard_normal((2, 3)).astype(np.float32), RNG.standard_normal((3, 4)).astype(np.float32)
    (y,) = check_infer("MatMul", [a, b, np.zeros((2, 2, 2))])
    assert y.shape == (2, 2, 2) and y.dtype == np.float32
    with pytest.raises(Exception, match=r"8 elements but input 2 has shape \[3\].*'in2'"):
        run_op("MatMul", [a, b, np.zeros(3)])


@pytest.mark.parametrize("kw,match", [({}, "gives 2x3 but B"), ({"axis_a": 2}, "axis_a 2 is out of range")])
def test_matmul_errors(kw, match):
    with pytest.raises(Exception, match=match):
        run_op("MatMul", [np.zeros((2, 3)), np.zeros((4, 5))], **kw)


@pytest.mark.parametrize("ta,tb,expect", [
    (0, 0, [(["dY", "B", "A"], {"trans_b": 1, "axis_b": 1}), (["A", "dY", "B"], {"trans_a": 1, "axis_a": 1})]),
    (0, 1, [(["dY", "B", "A"], {"axis_b": 1}), (["dY", "A", "B"], {"trans_a": 1, "axis_b": 1})]),
    (1, 0, [(["B", "dY", "A"], {"trans_b": 1, "axis_a": 1}), (["A", "dY", "B"], {"axis_a": 1})]),
    (1, 1, [(["B", "dY", "A"], {"trans_a": 1, "trans_b": 1, "axis_a": 1}),
            (["dY", "A", "B"], {"trans_a": 1, "trans_b": 1, "axis_b": 1})]),
])
def test_matmul_gradient_ops_layout(ta, tb, expect):
    op = make_op("MatMul", ["A", "B"], ["Y"], trans_a=ta, trans_b=tb, engine="E")
    ops, g_input = gradient_ops_for(op, ["dY"])
    assert g_input == ["A_grad", "B_grad"]
    got = [(list(o.input), {a.name: a.i for a in o.arg}) for o in ops]
    assert got == expect
    assert [list(o.output) for o in ops] == [["A_grad"], ["B_grad"]]
    assert all(o.type == "MatMul" and o.engine == "E" and o.is_gradient_op for o in ops)


# ---------------------------------------------------------------------------------------------
# BatchMatMul
# ---------------------------------------------------------------------------------------------
def swap(x, t):
    return np.swapaxes(x, -1, -2) if t else x


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_batch_matmul(ta, tb, batch):
    m, k, n = 2, 3, 4
    a = RNG.standard_normal(batch + ((k, m) if ta else (m, k)))
    b = RNG.standard_normal(batch + ((n, k) if tb else (k, n)))
    (y,) = check_infer("BatchMatMul", [a, b], trans_a=ta, trans_b=tb)
    assert y.shape == batch + (m, n)
    expect = np.einsum("...mk,...kn->...mn", swap(a, ta), swap(b, tb))
    np.testing.assert_allclose(y, expect, rtol=1e-12)
    check_gradient("BatchMatMul", [a, b], trans_a=ta, trans_b=tb, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("a_shape,b_shape,ta,tb,out_shape", [
    ((5, 2, 3), (3, 4), 0, 0, (5, 2, 4)),            # B's batch dims () are a suffix of (5,)
    ((2, 3), (6, 5, 3, 4), 0, 0, (6, 5, 2, 4)),
    ((7, 2, 3), (6, 7, 3, 4), 0, 0, (6, 7, 2, 4)),
    ((7, 3, 2), (6, 7, 4, 3), 1, 1, (6, 7, 2, 4)),
    ((3,), (5, 3, 4), 0, 0, (5, 4)),                  # 1-D A: [1, K], the 1 is dropped
    ((5, 2, 3), (3,), 0, 0, (5, 2)),                  # 1-D B: [K, 1], the 1 is dropped
    ((3,), (3,), 0, 0, (1,)),                         # vector-vector gives [1]
])
def test_batch_matmul_broadcast(a_shape, b_shape, ta, tb, out_shape):
    a, b = RNG.standard_normal(a_shape), RNG.standard_normal(b_shape)
    (y,) = check_infer("BatchMatMul", [a, b], broadcast=1, trans_a=ta, trans_b=tb)
    assert y.shape == out_shape
    expect = np.matmul(swap(a, ta and a.ndim > 1), swap(b, tb and b.ndim > 1))
    np.testing.assert_allclose(y.reshape(-1), np.reshape(expect, -1), rtol=1e-12)


@pytest.mark.parametrize("a_shape,b_shape,kw,match", [
    ((2, 3), (3,), {}, "need broadcast=1"),
    ((2, 2, 3), (3, 4), {}, "need broadcast=1"),
    ((2, 2, 3), (3, 3, 4), {"broadcast": 1}, "one must be a suffix"),
    ((1, 2, 3), (4, 3, 4), {"broadcast": 1}, "one must be a suffix"),   # no size-1 broadcasting
    ((2, 3), (2, 4), {}, "inner dims 3 and 2"),
    ((3,), (4,), {"broadcast": 1}, "equal sizes"),
])
def test_batch_matmul_errors(a_shape, b_shape, kw, match):
    with pytest.raises(Exception, match=match):
        run_op("BatchMatMul", [np.zeros(a_shape), np.zeros(b_shape)], **kw)


def test_batch_matmul_gradient_ops():
    op = make_op("BatchMatMul", ["A", "B"], ["Y"], trans_b=1, use_scratch=1)
    ops, g_input = gradient_ops_for(op, ["dY"])
    assert [(list(o.input), list(o.output), {a.name: a.i for a in o.arg}) for o in ops] == [
        (["dY", "B"], ["A_grad"], {"use_scratch": 1}),
        (["dY", "A"], ["B_grad"], {"trans_a": 1, "use_scratch": 1})]
    assert g_input == ["A_grad", "B_grad"]
    with pytest.raises(ValueError, match="only for broadcast=0"):
        gradient_ops_for(make_op("BatchMatMul", ["A", "B"], ["Y"], broadcast=1), ["dY"])


def test_batch_matmul_float32():
    a, b = RNG.standard_normal((2, 2, 3)).astype(np.float32), RNG.standard_normal((2, 3, 2)).astype(np.float32)
    (y,) = check_infer("BatchMatMul", [a, b])
    assert y.dtype == np.float32
