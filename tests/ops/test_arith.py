"""Add/Sub/Mul/Div (legacy and numpy broadcasting), DivGradient, SumReduceLike, Sum and Scale:
reference vs independent formulas, inference vs actual, expr vs reference, gradient op lists as
Caffe2 builds them, and gradients vs finite differences."""
import operator

import numpy as np
import pytest

from netjit.compiler.ops.gradients import GradientContext, gradient_ops_for
from netjit.compiler.ops.registry import TensorType, lookup
from netjit.compiler.reference import run_ops
from netjit.proto.args import argument_value, make_op
from netjit.runtime.workspace import Workspace
from tests.ops.exprcheck import check_expr
from tests.ops.harness import check_gradient, check_infer, run_op

BINARY = {"Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "Div": operator.truediv}


def _sample(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "i":
        return rng.integers(-9, 10, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _away_from_zero(x):
    return np.where(np.abs(x) < 0.5, np.sign(x) + (x == 0), x).astype(x.dtype)


def _expect(op, a, b):
    """Independent formula in float64 (ints: exact Python ints, division truncating toward zero)."""
    if a.dtype.kind == "i":
        fn = (lambda p, q: int(p / q) if op == "Div" else BINARY[op](p, q))
        return np.vectorize(lambda p, q: fn(int(p), int(q)), otypes=[np.int64])(a, b).astype(a.dtype)
    return BINARY[op](a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)


def _ops(ops):
    return [(o.type, list(o.input), list(o.output)) for o in ops]


def _args(op):
    return {a.name: argument_value(a) for a in op.arg}


# --------------------------------------------------------------------------------------------
# Same shapes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("shape", [(), (1,), (6,), (2, 3, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_binary_same_shape(op, shape, dtype):
    a, b = _sample(shape, dtype, 1), _sample(shape, dtype, 2)
    if op == "Div":
        b = _away_from_zero(b)
    (c,) = check_infer(op, [a, b])
    assert isinstance(c, np.ndarray) and c.dtype == dtype and c.shape == shape
    np.testing.assert_allclose(c, _expect(op, a, b), rtol=1e-6)
    if np.dtype(dtype).kind == "f" or op != "Div":  # `x0 / x1` is true division; int Div truncates
        check_expr(op, [a, b])


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("shape", [(), (5,), (2, 3)])
def test_binary_gradient_same_shape(op, shape):
    a, b = _sample(shape, np.float64, 3), _away_from_zero(_sample(shape, np.float64, 4))
    check_gradient(op, [a, b], eps=1e-5, rtol=1e-5, atol=1e-7)


def test_int_division_truncates_toward_zero():
    a = np.array([7, -7, 7, -7, 6, 0], np.int32)
    b = np.array([2, 2, -2, -2, 3, 5], np.int32)
    (c,) = run_op("Div", [a, b])
    np.testing.assert_array_equal(c, [3, -3, -3, 3, 2, 0])
    assert c.dtype == np.int32
    with pytest.raises(Exception, match=r"\(Div\).*division by zero.*'in1'"):
        run_op("Div", [a, np.zeros(6, np.int32)])


def test_float_division_by_zero_gives_inf_without_warning():
    with np.errstate(all="raise"):
        (c,) = run_op("Div", [np.array([1, -1, 0], np.float32), np.zeros(3, np.float32)])
    assert c[0] == np.inf and c[1] == -np.inf and np.isnan(c[2])


# --------------------------------------------------------------------------------------------
# Legacy broadcast (broadcast=1)
# --------------------------------------------------------------------------------------------
A4 = (2, 3, 4, 5)
LEGACY = [
    # B shape, args, how B lines up with A (an index expression building the broadcast view)
    ((3, 4), {"axis": 1}, lambda b: b[None, :, :, None]),
    ((5,), {}, lambda b: b[None, None, None, :]),
    ((4, 5), {}, lambda b: b[None, None, :, :]),
    ((1,), {}, lambda b: b.reshape(())),
    ((), {}, lambda b: b),
    ((4, 5), {"axis_str": "H", "order": "NCHW"}, lambda b: b[None, None, :, :]),
    ((3,), {"axis_str": "C"}, lambda b: b[None, :, None, None]),
    ((2,), {"axis": 0}, lambda b: b[:, None, None, None]),
    ((3, 1), {"axis": 1}, lambda b: b[None, :, :, None]),      # a trailing 1 of B sits over A's 4
    ((1, 4, 5), {"axis": 1}, lambda b: b[None, :, :, :]),      # a leading 1 sits over A's 3
    (A4, {}, lambda b: b),
]


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("b_shape,args,view", LEGACY)
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_legacy_broadcast(op, b_shape, args, view, dtype):
    a, b = _sample(A4, dtype, 5), _sample(b_shape, dtype, 6)
    if op == "Div":
        b = _away_from_zero(b)
    (c,) = check_infer(op, [a, b], broadcast=1, **args)
    assert c.shape == A4 and c.dtype == dtype
    np.testing.assert_allclose(c, _expect(op, a, np.broadcast_to(view(b), A4)), rtol=1e-6)
    if dtype == np.float32:
        check_expr(op, [a, b], broadcast=1, **args)


def test_legacy_broadcast_nhwc_axis_str():
    a, b = _sample((2, 4, 5, 3), np.float32, 7), _sample((3,), np.float32, 8)
    (c,) = check_infer("Mul", [a, b], broadcast=1, axis_str="C", order="NHWC")
    np.testing.assert_allclose(c, a * b, rtol=1e-6)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul"])
@pytest.mark.parametrize("b_shape,args,view", LEGACY)
def test_legacy_broadcast_gradient(op, b_shape, args, view):
    a, b = _sample(A4, np.float64, 9), _sample(b_shape, np.float64, 10)
    check_gradient(op, [a, b], eps=1e-5, rtol=1e-5, atol=1e-7, broadcast=1, **args)


INVALID_LEGACY = [
    ((3, 5), {"axis": 1}, r"B dim 1 is 5 but A dim 2 is 4"),
    ((4,), {}, r"B dim 0 is 4 but A dim 3 is 5"),
    ((3, 4), {"axis": 3}, r"axis 3 is out of range \[0, 2\]"),
    ((1, 2, 3, 4, 5), {}, r"more dims than A"),
    ((3,), {"axis": 1, "axis_str": "C"}, r"cannot be used together"),
    ((3,), {"axis_str": "X"}, r"axis_str 'X' must be one letter of order 'NCHW'"),
]


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("b_shape,args,message", INVALID_LEGACY)
def test_invalid_legacy_broadcast_names_op_and_blob(op, b_shape, args, message):
    a, b = np.ones(A4, np.float32), np.ones(b_shape, np.float32)
    with pytest.raises(Exception, match=rf"\({op}\).*{message}.*B 'in1'"):
        run_op(op, [a, b], broadcast=1, **args)
    opdef = lookup(op)
    with pytest.raises(ValueError, match=message):
        opdef.infer(opdef.decode_args(make_op(op, ["a", "b"], ["c"], broadcast=1, **args)),
                    [TensorType(a.shape, a.dtype), TensorType(b.shape, b.dtype)])


# --------------------------------------------------------------------------------------------
# Numpy broadcasting (broadcast absent or 0)
# --------------------------------------------------------------------------------------------
NUMPY = [((3, 1), (1, 4)), ((4,), (2, 3, 4)), ((), (2, 3)), ((2, 1, 4), (3, 1)), ((2, 3), (2, 3))]


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("a_shape,b_shape", NUMPY)
@pytest.mark.parametrize("explicit", [False, True])
def test_numpy_broadcast(op, a_shape, b_shape, explicit):
    a, b = _sample(a_shape, np.float32, 11), _away_from_zero(_sample(b_shape, np.float32, 12))
    args = {"broadcast": 0} if explicit else {}
    (c,) = check_infer(op, [a, b], **args)
    expected_shape = np.broadcast_shapes(a_shape, b_shape)
    assert c.shape == expected_shape and c.dtype == np.float32
    np.testing.assert_allclose(c, _expect(op, np.broadcast_to(a, expected_shape), np.broadcast_to(b, expected_shape)),
                               rtol=1e-6)
    check_expr(op, [a, b], **args)


@pytest.mark.parametrize("a_shape,b_shape,args", [((2, 3), (1,), {"broadcast": 1}), ((3, 1), (1, 4), {}),
                                                  ((), (), {}), ((2, 3), (3,), {"broadcast": 1})])
def test_outputs_are_fresh_writeable_arrays(a_shape, b_shape, args):
    a, b = np.ones(a_shape, np.float32), np.ones(b_shape, np.float32)
    for op in BINARY:
        (c,) = run_op(op, [a, b], **args)
        assert type(c) is np.ndarray and c.flags.writeable and c.flags.c_contiguous
        assert not np.shares_memory(c, a) and not np.shares_memory(c, b)


def test_numpy_broadcast_mismatch_names_op():
    with pytest.raises(Exception, match=r"\(Add\).*\(2, 3\) and B \(4,\) do not broadcast"):
        run_op("Add", [np.ones((2, 3), np.float32), np.ones(4, np.float32)])


def test_dtype_mismatch_names_blob():
    with pytest.raises(Exception, match=r"\(Mul\).*float32 but B is float64.*'in1'"):
        run_op("Mul", [np.ones(3, np.float32), np.ones(3, np.float64)])


def test_bool_inputs_rejected():
    with pytest.raises(Exception, match=r"\(Add\).*numeric.*bool"):
        run_op("Add", [np.ones(3, bool), np.ones(3, bool)])


# --------------------------------------------------------------------------------------------
# In-place rules
# --------------------------------------------------------------------------------------------
def _run_net(op, feeds):
    ws = Workspace("inplace")
    for k, v in feeds.items():
        ws.feed(k, v)
    run_ops([op], ws)
    return ws


def test_inplace_rules():
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 3), np.float32)
    ws = _run_net(make_op("Add", ["A", "B"], ["A"]), {"A": a, "B": b})
    np.testing.assert_array_equal(ws.fetch("A"), a + 1)
    np.testing.assert_array_equal(a, np.arange(6).reshape(2, 3))  # the fed array itself is untouched
    ws = _run_net(make_op("Sub", ["A", "B"], ["B"]), {"A": a, "B": b})
    np.testing.assert_array_equal(ws.fetch("B"), a - 1)
    ws = _run_net(make_op("Mul", ["A", "B"], ["A"], broadcast=1), {"A": a, "B": np.float32([2, 3, 4])})
    np.testing.assert_array_equal(ws.fetch("A"), a * [2, 3, 4])
    # A broadcast B cannot receive the (larger) result in place.
    with pytest.raises(Exception, match=r"\(Add\).*input 1 is written in place.*'B'"):
        _run_net(make_op("Add", ["A", "B"], ["B"], broadcast=1), {"A": a, "B": np.float32([2, 3, 4])})
    # Div allows only A -> C.
    with pytest.raises(Exception, match=r"\(Div\).*input 1 and output 0 share blob 'B'"):
        _run_net(make_op("Div", ["A", "B"], ["B"]), {"A": a, "B": b})


# --------------------------------------------------------------------------------------------
# Gradient op lists (Caffe2's makers)
# --------------------------------------------------------------------------------------------
def test_add_gradient_ops():
    ops, g = gradient_ops_for(make_op("Add", ["A", "B"], ["C"]), ["C_grad"])
    assert ops == [] and g == ["C_grad", "C_grad"]
    ops, g = gradient_ops_for(make_op("Add", ["A", "B"], ["C"], broadcast=1, axis=1), ["C_grad"])
    assert _ops(ops) == [("SumReduceLike", ["C_grad", "B"], ["B_grad"])]
    assert _args(ops[0]) == {"broadcast": 1, "axis": 1}  # Add's maker lets the forward args be copied
    assert g == ["C_grad", "B_grad"]


def test_sub_gradient_ops():
    ops, g = gradient_ops_for(make_op("Sub", ["A", "B"], ["C"]), ["C_grad"])
    assert _ops(ops) == [("Negative", ["C_grad"], ["B_grad"])] and _args(ops[0]) == {}
    assert g == ["C_grad", "B_grad"]
    ops, g = gradient_ops_for(make_op("Sub", ["A", "B"], ["C"], broadcast=1, axis_str="C"), ["C_grad"])
    assert _ops(ops) == [("Negative", ["C_grad"], ["B_grad_autogen_pre_red"]),
                         ("SumReduceLike", ["B_grad_autogen_pre_red", "B"], ["B_grad"])]
    assert _args(ops[0]) == {}
    assert _args(ops[1]) == {"axis": -1, "axis_str": b"C", "order": b"NCHW"}  # no broadcast arg


def test_mul_gradient_ops():
    ops, g = gradient_ops_for(make_op("Mul", ["A", "B"], ["C"]), ["C_grad"])
    assert _ops(ops) == [("Mul", ["C_grad", "B"], ["A_grad"]), ("Mul", ["C_grad", "A"], ["B_grad"])]
    assert all(_args(o) == {} for o in ops) and g == ["A_grad", "B_grad"]
    ops, g = gradient_ops_for(make_op("Mul", ["A", "B"], ["C"], broadcast=1, axis=1), ["C_grad"])
    assert _ops(ops) == [("Mul", ["C_grad", "B"], ["A_grad"]), ("Mul", ["C_grad", "A"], ["B_grad_autogen_pre_red"]),
                         ("SumReduceLike", ["B_grad_autogen_pre_red", "B"], ["B_grad"])]
    assert _args(ops[0]) == {"broadcast": 1, "axis": 1, "axis_str": b"", "order": b"NCHW"}
    assert _args(ops[1]) == {} and _args(ops[2]) == {"axis": 1, "axis_str": b"", "order": b"NCHW"}
    with pytest.raises(ValueError, match="runs in place"):
        gradient_ops_for(make_op("Mul", ["A", "B"], ["A"]), ["A_grad"])


def test_div_gradient_ops():
    ops, g = gradient_ops_for(make_op("Div", ["A", "B"], ["C"]), ["C_grad"])
    assert _ops(ops) == [("DivGradient", ["B", "C", "C_grad"], ["A_grad", "B_grad"])]
    with pytest.raises(ValueError, match="Div with a 'broadcast' argument is not supported"):
        gradient_ops_for(make_op("Div", ["A", "B"], ["C"], broadcast=1), ["C_grad"])


def test_in_place_add_and_div_gradients():
    # Div A -> A: DivGradient reads the forward output C (= A's new value), not A.
    a, b = _sample((3, 4), np.float64, 13), _away_from_zero(_sample((3, 4), np.float64, 14))
    ws = Workspace("g")
    ws.feed("A", a)
    ws.feed("B", b)
    fwd = make_op("Div", ["A", "B"], ["A"])
    run_ops([fwd], ws)
    dc = np.ones((3, 4))
    ws.feed("A_grad", dc)
    ops, g = gradient_ops_for(fwd, ["A_grad"])
    run_ops(ops, ws)
    np.testing.assert_allclose(ws.fetch(g[0]), dc / b)
    np.testing.assert_allclose(ws.fetch(g[1]), -dc * a / b ** 2)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("a_shape,b_shape", [((3, 1), (1, 4)), ((4,), (2, 3, 4)), ((2, 3), (3,)), ((2, 3), (2, 3))])
def test_numpy_broadcast_gradient_with_shape_hint(op, a_shape, b_shape):
    """With ``g.input_shapes`` set, the makers sum gradients of numpy-broadcast inputs back down."""
    a, b = _sample(a_shape, np.float64, 15), _away_from_zero(_sample(b_shape, np.float64, 16))
    fwd = make_op(op, ["A", "B"], ["C"])
    ws = Workspace("hint")
    ws.feed("A", a)
    ws.feed("B", b)
    run_ops([fwd], ws)
    c = ws.fetch("C")
    dc = _sample(c.shape, np.float64, 17)
    ws.feed("C_grad", dc)
    opdef = lookup(op)
    ctx = GradientContext(fwd, ["C_grad"], opdef.decode_args(fwd))
    ctx.input_shapes = [a.shape, b.shape]
    ops, g = opdef.gradient(ctx)
    if a_shape == b_shape:  # nothing broadcast: exactly Caffe2's op list
        assert _ops(ops) == _ops(gradient_ops_for(fwd, ["C_grad"])[0])
    if ops:
        run_ops(ops, ws)
    da, db = (ws.fetch(name) for name in g)
    ab, bb = np.broadcast_to(a, c.shape), np.broadcast_to(b, c.shape)
    full_a = {"Add": dc, "Sub": dc, "Mul": dc * bb, "Div": dc / bb}[op]
    full_b = {"Add": dc, "Sub": -dc, "Mul": dc * ab, "Div": -dc * ab / bb ** 2}[op]
    np.testing.assert_allclose(da, _sum_to(full_a, a_shape), rtol=1e-10)
    np.testing.assert_allclose(db, _sum_to(full_b, b_shape), rtol=1e-10)


def _sum_to(x, shape):
    """Independent reduction: loop over axes, summing where the target was broadcast."""
    while x.ndim > len(shape):
        x = x.sum(axis=0)
    for i, d in enumerate(shape):
        if d == 1 and x.shape[i] != 1:
            x = x.sum(axis=i, keepdims=True)
    return x


# --------------------------------------------------------------------------------------------
# DivGradient and SumReduceLike as ops
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("b_shape", [(2, 3), (3,), (1, 3), ()])
def test_div_gradient_op(dtype, b_shape):
    b = _away_from_zero(_sample(b_shape, dtype, 18))
    c, dc = _sample((2, 3), dtype, 19), _sample((2, 3), dtype, 20)
    da, db = check_infer("DivGradient", [b, c, dc], n_outputs=2)
    assert da.dtype == db.dtype == dtype and da.shape == (2, 3) and db.shape == b_shape
    bb = np.broadcast_to(b, (2, 3)).astype(np.float64)
    np.testing.assert_allclose(da, dc / bb, rtol=1e-5)
    np.testing.assert_allclose(db, _sum_to(-dc * c / bb, b_shape), rtol=1e-5)


SUM_REDUCE = [
    ((2, 3, 4, 5), (3, 4), {"axis": 1}),
    ((2, 3, 4, 5), (4, 5), {}),
    ((2, 3, 4, 5), (5,), {}),
    ((2, 3, 4, 5), (1,), {}),
    ((2, 3, 4, 5), (), {}),
    ((2, 3, 4, 5), (3,), {"axis_str": "C", "order": "NCHW"}),
    ((2, 3, 4, 5), (2,), {"axis": 0}),
    ((2, 3, 4, 5), (3, 1, 5), {}),         # numpy: an interior 1 of B is summed over
    ((2, 3, 4, 5), (2, 3, 4, 5), {}),
    ((3, 4), (1, 1, 4), {}),               # target has extra leading 1s
]


@pytest.mark.parametrize("a_shape,b_shape,args", SUM_REDUCE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_sum_reduce_like(a_shape, b_shape, args, dtype):
    a, b = _sample(a_shape, dtype, 21), np.zeros(b_shape, dtype)
    (c,) = check_infer("SumReduceLike", [a, b], **args)
    assert c.shape == b_shape and c.dtype == dtype
    if "axis" in args or "axis_str" in args:
        axis = args.get("axis", "NCHW".find(args.get("axis_str", "")))
        view = (1,) * axis + b_shape + (1,) * (len(a_shape) - axis - len(b_shape))
        expected = _sum_to(a.astype(np.float64), view).reshape(b_shape)
    elif len(b_shape) > len(a_shape):
        expected = _sum_to(a.astype(np.float64), b_shape[len(b_shape) - len(a_shape):]).reshape(b_shape)
    else:
        expected = _sum_to(a.astype(np.float64), b_shape) if int(np.prod(b_shape)) != 1 else \
            np.full(b_shape, a.astype(np.float64).sum())
    np.testing.assert_allclose(c, expected, rtol=1e-5)


def test_sum_reduce_like_mismatch_names_blob():
    with pytest.raises(Exception, match=r"\(SumReduceLike\).*B dim 0 is 4 but A dim 1 is 3.*'in1'"):
        run_op("SumReduceLike", [np.ones((2, 3, 4), np.float32), np.ones(4, np.float32)], axis=1)
    with pytest.raises(Exception, match=r"\(SumReduceLike\).*does not broadcast"):
        run_op("SumReduceLike", [np.ones((2, 3, 4), np.float32), np.ones(3, np.float32)])


# --------------------------------------------------------------------------------------------
# Sum and Scale
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("shape", [(), (1,), (4,), (2, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_sum(n, shape, dtype):
    xs = [_sample(shape, dtype, 30 + k) for k in range(n)]
    (y,) = check_infer("Sum", xs)
    assert y.dtype == dtype and y.shape == shape
    expected = xs[0].astype(np.float64)
    for x in xs[1:]:
        expected = expected + x
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    if n == 1:
        assert not np.shares_memory(y, xs[0])


def test_sum_gradient_and_inplace():
    xs = [_sample((2, 3), np.float64, 40 + k) for k in range(3)]
    check_gradient("Sum", xs, eps=1e-5, rtol=1e-5, atol=1e-7)
    ops, g = gradient_ops_for(make_op("Sum", ["a", "b", "c"], ["s"]), ["s_grad"])
    assert ops == [] and g == ["s_grad"] * 3
    ws = _run_net(make_op("Sum", ["a", "b"], ["a"]), {"a": xs[0], "b": xs[1]})
    np.testing.assert_allclose(ws.fetch("a"), xs[0] + xs[1])
    with pytest.raises(Exception, match=r"\(Sum\).*input 1 and output 0 share blob 'b'"):
        _run_net(make_op("Sum", ["a", "b"], ["b"]), {"a": xs[0], "b": xs[1]})


def test_sum_mismatch_names_blob():
    with pytest.raises(Exception, match=r"\(Sum\).*input 2 is float32 \(3,\).*'in2'"):
        run_op("Sum", [np.ones((2, 3), np.float32), np.ones((2, 3), np.float32), np.ones(3, np.float32)])
    with pytest.raises(Exception, match=r"\(Sum\).*input 1 is float64"):
        run_op("Sum", [np.ones(3, np.float32), np.ones(3, np.float64)])


@pytest.mark.parametrize("shape", [(), (1,), (5,), (2, 3, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [0.1, -2.5, 1.0])
def test_scale(shape, dtype, value):
    x = _sample(shape, dtype, 50)
    (y,) = check_infer("Scale", [x], scale=value)
    assert y.dtype == dtype  # a Python-float scale must not promote float32 to float64
    np.testing.assert_allclose(y, x.astype(np.float64) * float(np.float32(value)), rtol=1e-6)
    check_expr("Scale", [x], scale=value)


def test_scale_default_gradient_and_strict_typing():
    x = _sample((3, 4), np.float64, 51)
    (y,) = run_op("Scale", [x])
    np.testing.assert_array_equal(y, x)
    check_gradient("Scale", [x], eps=1e-5, rtol=1e-5, atol=1e-7, scale=-1.5)
    ops, g = gradient_ops_for(make_op("Scale", ["X"], ["Y"], scale=3.0), ["Y_grad"])
    assert _ops(ops) == [("Scale", ["Y_grad"], ["X_grad"])] and _args(ops[0]) == {"scale": 3.0}
    with pytest.raises(Exception, match=r"\(Scale\).*argument 'scale' must be a float, but it holds an int"):
        run_op("Scale", [x], scale=2)
    with pytest.raises(Exception, match=r"\(Scale\).*floating-point.*int32"):
        run_op("Scale", [np.ones(3, np.int32)], scale=2.0)
