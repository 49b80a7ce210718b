"""Unary math (Exp, Log, Sqrt, Pow, Clip, Negative, Abs, Sqr, Reciprocal), Cast and the copy ops:
reference vs independent per-element formulas, inference vs actual, expr vs reference, gradient op
lists as Caffe2 builds them, and gradients vs finite differences."""
import math

import numpy as np
import pytest

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.compiler.ops.registry import BROADCAST, ELEMWISE, all_ops, has_op, lookup
from netjit.compiler.reference import run_ops
from netjit.proto.args import argument_value, make_op
from netjit.runtime.workspace import Workspace
from tests.ops.exprcheck import check_expr, evaluate
from tests.ops.harness import check_gradient, check_infer, run_op

SHAPES = [(), (1,), (7,), (2, 3, 4)]
FLOATS = [np.float32, np.float64]


def _sample(shape, dtype, seed=0, low=-3.0, high=3.0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "i":
        return rng.integers(-9, 10, size=shape).astype(dtype)
    return rng.uniform(low, high, size=shape).astype(dtype)


def _per_element(fn, x, dtype):
    if x.size == 0:
        return x.copy()
    return np.vectorize(lambda v: fn(v.item() if isinstance(v, np.generic) else v), otypes=[object])(x).astype(dtype)


def _ops(ops):
    return [(o.type, list(o.input), list(o.output)) for o in ops]


def _args(op):
    return {a.name: argument_value(a) for a in op.arg}


def _grad(op, inputs, **args):
    return check_gradient(op, inputs, eps=1e-5, rtol=1e-5, atol=1e-7, **args)


UNARY = [
    # op, formula, sample range (kept away from poles, kinks and domain edges), dtypes, args
    ("Exp", math.exp, (-3, 3), FLOATS, {}),
    ("Log", math.log, (0.1, 5), FLOATS, {}),
    ("Sqrt", math.sqrt, (0.1, 5), FLOATS, {}),
    ("Negative", lambda v: -v, (-3, 3), FLOATS + [np.int32, np.int64], {}),
    ("Abs", abs, (-3, 3), FLOATS + [np.int32], {}),
    ("Sqr", lambda v: v * v, (-3, 3), FLOATS + [np.int32], {}),
    ("Reciprocal", lambda v: 1 / v, (0.2, 4), FLOATS, {}),
    ("Clip", lambda v: min(max(v, -1.0), 1.5), (-3, 3), FLOATS, {"min": -1.0, "max": 1.5}),
    ("Clip", lambda v: max(v, 0.5), (-3, 3), FLOATS, {"min": 0.5}),
    ("Clip", lambda v: v, (-3, 3), FLOATS, {}),
    ("Pow", lambda v: v ** float(np.float32(2.5)), (0.1, 3), FLOATS, {"exponent": 2.5}),
    ("Pow", lambda v: v ** 3, (-3, 3), FLOATS, {"exponent": 3.0}),
]
CASES = [(op, f, r, dt, a) for op, f, r, dts, a in UNARY for dt in dts]


@pytest.mark.parametrize("op,formula,rng,dtype,args", CASES, ids=[f"{c[0]}-{np.dtype(c[3])}-{c[4]}" for c in CASES])
@pytest.mark.parametrize("shape", SHAPES)
def test_unary_forward(op, formula, rng, dtype, args, shape):
    x = _sample(shape, dtype, 1, *rng)
    (y,) = check_infer(op, [x], **args)
    assert isinstance(y, np.ndarray) and y.dtype == dtype and y.shape == shape
    expected = _per_element(formula, x, dtype)
    if np.dtype(dtype).kind == "f":
        np.testing.assert_allclose(y, expected, rtol=2e-6 if dtype == np.float32 else 1e-13)
    else:
        np.testing.assert_array_equal(y, expected)
    if lookup(op).expr:
        check_expr(op, [x], **args)


GRADIENT_CASES = [(op, r, a) for op, f, r, dts, a in UNARY]


@pytest.mark.parametrize("op,rng,args", GRADIENT_CASES, ids=[f"{c[0]}-{c[2]}" for c in GRADIENT_CASES])
@pytest.mark.parametrize("shape", [(), (5,), (2, 3)])
def test_unary_gradient(op, rng, args, shape):
    x = _sample(shape, np.float64, 2, *rng)
    if op == "Abs":
        x = np.where(np.abs(x) < 0.1, 0.5, x)
    if op == "Clip":  # keep samples off the clip bounds
        for bound in (args.get("min"), args.get("max")):
            if bound is not None:
                x = np.where(np.abs(x - bound) < 0.05, bound + 0.3, x)
    _grad(op, [x], **args)


@pytest.mark.parametrize("op", ["Exp", "Log", "Sqrt", "Reciprocal", "Clip", "Pow"])
def test_float_only_ops_reject_ints(op):
    args = {"exponent": 2.0} if op == "Pow" else {}
    with pytest.raises(Exception, match=rf"\({op}\).*floating-point.*int32.*'in0'"):
        run_op(op, [np.arange(4, dtype=np.int32)], **args)


def test_domain_edges_are_values_not_warnings():
    with np.errstate(all="raise"):
        (lg,) = run_op("Log", [np.array([0, -1, 1], np.float32)])
        (sq,) = run_op("Sqrt", [np.array([-1, 4], np.float32)])
        (ex,) = run_op("Exp", [np.array([1000], np.float32)])
        (rc,) = run_op("Reciprocal", [np.array([0, -0.0], np.float32)])
    assert lg[0] == -np.inf and np.isnan(lg[1]) and lg[2] == 0
    assert np.isnan(sq[0]) and sq[1] == 2
    assert ex[0] == np.inf
    assert rc[0] == np.inf and rc[1] == -np.inf


# --------------------------------------------------------------------------------------------
# Gradient op lists
# --------------------------------------------------------------------------------------------
def test_unary_gradient_op_lists():
    assert _ops(gradient_ops_for(make_op("Exp", ["X"], ["Y"]), ["Y_grad"])[0]) == [("Mul", ["Y", "Y_grad"], ["X_grad"])]
    assert _ops(gradient_ops_for(make_op("Log", ["X"], ["Y"]), ["Y_grad"])[0]) == [("Div", ["Y_grad", "X"], ["X_grad"])]
    ops, _ = gradient_ops_for(make_op("Sqrt", ["X"], ["Y"]), ["Y_grad"])
    assert _ops(ops) == [("Scale", ["Y_grad"], ["X_grad"]), ("Div", ["X_grad", "Y"], ["X_grad"])]
    assert _args(ops[0]) == {"scale": 0.5}
    assert _ops(gradient_ops_for(make_op("Negative", ["X"], ["Y"]), ["Y_grad"])[0]) == \
        [("Negative", ["Y_grad"], ["X_grad"])]
    assert _ops(gradient_ops_for(make_op("Abs", ["X"], ["Y"]), ["Y_grad"])[0]) == \
        [("AbsGradient", ["X", "Y_grad"], ["X_grad"])]
    ops, _ = gradient_ops_for(make_op("Clip", ["X"], ["X"], min=0.0, max=6.0), ["X_grad"])
    assert _ops(ops) == [("ClipGradient", ["X", "X_grad"], ["X_grad"])]
    assert _args(ops[0]) == {"min": 0.0, "max": 6.0}
    assert _ops(gradient_ops_for(make_op("Reciprocal", ["X"], ["Y"]), ["Y_grad"])[0]) == \
        [("ReciprocalGradient", ["Y", "Y_grad"], ["X_grad"])]
    ops, _ = gradient_ops_for(make_op("Sqr", ["X"], ["Y"]), ["Y_grad"])
    assert _ops(ops) == [("Scale", ["Y_grad"], ["X_grad"]), ("Mul", ["X_grad", "X"], ["X_grad"])]
    assert _args(ops[0]) == {"scale": 2.0}
    # Gradients that read X refuse the in-place form (X is overwritten); those reading Y accept it.
    for op in ("Log", "Abs", "Sqr"):
        with pytest.raises(ValueError, match=rf"{op} \['X'\] -> \['X'\] runs in place"):
            gradient_ops_for(make_op(op, ["X"], ["X"]), ["X_grad"])
    for op in ("Exp", "Sqrt", "Reciprocal", "Negative"):
        assert gradient_ops_for(make_op(op, ["X"], ["X"]), ["X_grad"])[0]


def test_pow_gradient_op_lists():
    ops, g = gradient_ops_for(make_op("Pow", ["X"], ["Y"], exponent=3.0), ["Y_grad"])
    assert _ops(ops) == [("Pow", ["X"], ["X_grad"]), ("Mul", ["X_grad", "Y_grad"], ["X_grad"]),
                         ("Scale", ["X_grad"], ["X_grad"])]
    assert _args(ops[0]) == {"exponent": 2.0} and _args(ops[1]) == {} and _args(ops[2]) == {"scale": 3.0}
    # In place, X^(e-1) is recovered from Y as Y^((e-1)/e).
    ops, _ = gradient_ops_for(make_op("Pow", ["X"], ["X"], exponent=4.0), ["X_grad"])
    assert _ops(ops) == [("Pow", ["X"], ["X_grad_autogen_pow"]), ("Mul", ["X_grad_autogen_pow", "X_grad"], ["X_grad"]),
                         ("Scale", ["X_grad"], ["X_grad"])]
    assert _args(ops[0]) == {"exponent": 0.75}
    with pytest.raises(ValueError, match="exponent 0"):
        gradient_ops_for(make_op("Pow", ["X"], ["X"], exponent=0.0), ["X_grad"])
    ops, g = gradient_ops_for(make_op("Pow", ["X", "E"], ["Y"]), ["Y_grad"])
    assert [o.type for o in ops] == ["ConstantFill", "Sub", "Pow", "Mul", "Mul", "Log", "Mul", "Mul"]
    assert g == ["X_grad", "E_grad"] and ops[-1].output[0] == "E_grad"
    ops, g = gradient_ops_for(make_op("Pow", ["X", "E"], ["Y"], broadcast=1, axis=1), ["Y_grad"])
    assert ops[-1].type == "SumReduceLike" and _args(ops[-1]) == {"axis": 1, "axis_str": b"", "order": b"NCHW"}
    with pytest.raises(ValueError, match="runs in place"):
        gradient_ops_for(make_op("Pow", ["X", "E"], ["X"]), ["X_grad"])


def test_pow_in_place_gradient_values():
    x = _sample((2, 3), np.float64, 3, 0.5, 2.0)
    ws = Workspace("pow")
    ws.feed("X", x)
    fwd = make_op("Pow", ["X"], ["X"], exponent=3.0)
    run_ops([fwd], ws)
    ws.feed("X_grad", np.ones_like(x))
    ops, g = gradient_ops_for(fwd, ["X_grad"])
    run_ops(ops, ws)
    # Y^((e-1)/e) is computed from a float32 exponent argument: close, not exact.
    np.testing.assert_allclose(ws.fetch(g[0]), 3 * x ** 2, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Pow with a second input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("x_shape,e_shape,args,view", [
    ((2, 3), (2, 3), {}, lambda e: e),
    ((2, 3, 4), (3,), {"broadcast": 1, "axis": 1}, lambda e: e[None, :, None]),
    ((2, 3, 4), (1,), {"broadcast": 1}, lambda e: e.reshape(())),
    ((3, 1), (1, 4), {}, lambda e: e),
])
@pytest.mark.parametrize("dtype", FLOATS)
def test_pow_tensor_exponent(x_shape, e_shape, args, view, dtype):
    x, e = _sample(x_shape, dtype, 4, 0.2, 3.0), _sample(e_shape, dtype, 5, -2.0, 2.0)
    (y,) = check_infer("Pow", [x, e], **args)
    out_shape = np.broadcast_shapes(x_shape, view(e).shape)
    assert y.shape == out_shape and y.dtype == dtype
    expected = np.broadcast_to(x, out_shape).astype(np.float64) ** np.broadcast_to(view(e), out_shape)
    np.testing.assert_allclose(y, expected, rtol=1e-5)


@pytest.mark.parametrize("x_shape,e_shape,args", [((2, 3), (2, 3), {}), ((2, 3, 4), (3,), {"broadcast": 1, "axis": 1})])
def test_pow_tensor_exponent_gradient(x_shape, e_shape, args):
    if not has_op("ConstantFill"):
        pytest.skip("Pow's tensor-exponent gradient uses ConstantFill, which is not registered")
    # Caffe2's maker fills ones with ConstantFill's default dtype (float), so Pow's two-input gradient
    # is float32 only, as Pow itself was in Caffe2.
    x = _sample(x_shape, np.float32, 6, 0.5, 2.0)
    e = _sample(e_shape, np.float32, 7, -1.5, 1.5)
    check_gradient("Pow", [x, e], eps=1e-2, rtol=2e-2, atol=2e-3, **args)


def test_pow_argument_errors():
    with pytest.raises(Exception, match=r"\(Pow\).*needs an 'exponent' argument"):
        run_op("Pow", [np.ones(3, np.float32)])
    with pytest.raises(Exception, match=r"\(Pow\).*not both"):
        run_op("Pow", [np.ones(3, np.float32), np.ones(3, np.float32)], exponent=2.0)
    with pytest.raises(Exception, match=r"argument 'exponent' must be a float"):
        run_op("Pow", [np.ones(3, np.float32)], exponent=2)


# --------------------------------------------------------------------------------------------
# Clip details
# --------------------------------------------------------------------------------------------
def test_clip_nan_and_crossed_bounds():
    x = np.array([np.nan, -5, 0, 5], np.float32)
    (y,) = run_op("Clip", [x], min=-1.0, max=1.0)
    assert np.isnan(y[0]) and list(y[1:]) == [-1, 0, 1]
    (y,) = run_op("Clip", [x[1:]], min=2.0, max=1.0)  # min > max: max wins, as min(max(x, lo), hi)
    np.testing.assert_array_equal(y, [1, 1, 1])
    check_expr("Clip", [x[1:]], min=2.0, max=1.0)


def test_clip_gradient_is_strict():
    y = np.array([0.0, 0.5, 6.0, 3.0, np.nan], np.float32)
    dy = np.ones(5, np.float32)
    (dx,) = check_infer("ClipGradient", [y, dy], min=0.0, max=6.0)
    np.testing.assert_array_equal(dx, [0, 1, 0, 1, 1])  # bounds themselves block; NaN passes (C++ compares)
    check_expr("ClipGradient", [y, dy], min=0.0, max=6.0)


@pytest.mark.parametrize("op,inputs", [
    ("AbsGradient", [np.array([-2.0, 0.0, 3.0]), np.array([1.0, 1.0, 2.0])]),
    ("ReciprocalGradient", [np.array([0.5, -2.0, 4.0]), np.array([1.0, 3.0, -1.0])]),
])
@pytest.mark.parametrize("dtype", FLOATS)
def test_gradient_ops_direct(op, inputs, dtype):
    inputs = [x.astype(dtype) for x in inputs]
    (dx,) = check_infer(op, inputs)
    x, dy = (v.astype(np.float64) for v in inputs)
    expected = np.sign(x) * dy if op == "AbsGradient" else -dy * x * x
    np.testing.assert_allclose(dx, expected, rtol=1e-6)
    check_expr(op, inputs)


# --------------------------------------------------------------------------------------------
# Cast
# --------------------------------------------------------------------------------------------
CAST = [
    (np.array([1.7, -1.7, 0.2, -0.0, 3.0]), "int32", np.int32, [1, -1, 0, 0, 3]),
    (np.array([1.7, -1.7, 0.2, 0.0, 3.0]), 2, np.int32, [1, -1, 0, 0, 3]),
    (np.array([1.5, 0.0, -2.0, 0.25]), "bool", np.bool_, [True, False, True, True]),
    (np.array([1, -2, 3], np.int32), "FLOAT", np.float32, [1.0, -2.0, 3.0]),
    (np.array([1, -2, 3], np.int32), "int64", np.int64, [1, -2, 3]),
    (np.array([0.1, 2.5], np.float32), "double", np.float64, [float(np.float32(0.1)), 2.5]),
    (np.array([True, False]), "float", np.float32, [1.0, 0.0]),
    (np.array(2.5, np.float32), "int8", np.int8, 2),
    (np.array([[300, -1]], np.int32), "uint8", np.uint8, [[44, 255]]),
]


@pytest.mark.parametrize("x,to,dtype,expected", CAST)
def test_cast(x, to, dtype, expected):
    (y,) = check_infer("Cast", [x], to=to)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, np.array(expected, dtype))
    assert not np.shares_memory(y, x)


def test_cast_errors():
    x = np.ones(3, np.float32)
    with pytest.raises(Exception, match=r"\(Cast\).*argument 'to' is required"):
        run_op("Cast", [x])
    with pytest.raises(Exception, match=r"\(Cast\).*Cast to STRING is not supported"):
        run_op("Cast", [x], to="string")
    with pytest.raises(Exception, match=r"\(Cast\).*unknown data type name 'floaty'"):
        run_op("Cast", [x], to="floaty")


def test_cast_gradient():
    ops, g = gradient_ops_for(make_op("Cast", ["X"], ["Y"], to="float", from_type="double"), ["Y_grad"])
    assert _ops(ops) == [("Cast", ["Y_grad"], ["X_grad"])]
    assert _args(ops[0]) == {"to": 13, "from_type": 1}  # swapped, as DataType ints; nothing else copied
    x = _sample((3, 4), np.float64, 8)
    grads = check_gradient("Cast", [x], eps=1e-3, rtol=1e-3, atol=1e-4, to="float", from_type="double")
    assert grads[0].dtype == np.float64
    with pytest.raises(ValueError, match="no 'from_type'"):
        gradient_ops_for(make_op("Cast", ["X"], ["Y"], to="float"), ["Y_grad"])


# --------------------------------------------------------------------------------------------
# Copies, Alias, StopGradient
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Copy", "CopyCPUToGPU", "CopyGPUToCPU", "EnsureCPUOutput", "StopGradient"])
@pytest.mark.parametrize("x", [np.arange(6, dtype=np.float32).reshape(2, 3), np.array(3, np.int64), np.zeros(0)])
def test_copies(op, x):
    (y,) = check_infer(op, [x])
    np.testing.assert_array_equal(y, x)
    assert y.dtype == x.dtype and not np.shares_memory(y, x)
    if x.size:
        check_expr(op, [x])


def test_copy_gradients():
    assert _ops(gradient_ops_for(make_op("Copy", ["X"], ["Y"]), ["Y_grad"])[0]) == \
        [("CopyOnDeviceLike", ["Y_grad", "X"], ["X_grad"])]
    assert _ops(gradient_ops_for(make_op("CopyCPUToGPU", ["X"], ["Y"]), ["Y_grad"])[0]) == \
        [("CopyGPUToCPU", ["Y_grad"], ["X_grad"])]
    assert _ops(gradient_ops_for(make_op("CopyGPUToCPU", ["X"], ["Y"]), ["Y_grad"])[0]) == \
        [("CopyCPUToGPU", ["Y_grad"], ["X_grad"])]
    x = _sample((2, 3), np.float64, 9)
    for op in ("Copy", "CopyCPUToGPU", "CopyGPUToCPU"):
        _grad(op, [x])
    (y,) = check_infer("CopyOnDeviceLike", [x, np.zeros(1)])
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("op", ["StopGradient", "EnsureCPUOutput"])
def test_no_gradient_through(op):
    assert gradient_ops_for(make_op(op, ["X"], ["Y"]), ["Y_grad"]) == ([], [None])
    assert gradient_ops_for(make_op("StopGradient", ["X"], ["X"]), ["X_grad"]) == ([], [None])


def test_alias_shares_the_array_and_passes_gradient():
    x = np.arange(4.0)
    ws = Workspace("alias")
    ws.feed("X", x)
    run_ops([make_op("Alias", ["X"], ["Y"])], ws)
    assert ws.fetch("Y") is x
    (y,) = check_infer("Alias", [x])
    assert gradient_ops_for(make_op("Alias", ["X"], ["Y"]), ["Y_grad"]) == ([], ["Y_grad"])


# --------------------------------------------------------------------------------------------
# Registry invariants for this family
# --------------------------------------------------------------------------------------------
MINE = ["Relu", "ReluGradient", "Sigmoid", "SigmoidGradient", "Tanh", "TanhGradient", "LeakyRelu",
        "LeakyReluGradient", "Elu", "EluGradient", "Softmax", "SoftmaxGradient", "Add", "Sub", "Mul", "Div",
        "DivGradient", "SumReduceLike", "Sum", "Scale", "Exp", "Log", "Sqrt", "Pow", "Clip", "ClipGradient",
        "Negative", "Abs", "AbsGradient", "Sqr", "Reciprocal", "ReciprocalGradient", "Cast", "StopGradient",
        "Copy", "CopyOnDeviceLike", "Alias", "EnsureCPUOutput", "CopyCPUToGPU", "CopyGPUToCPU"]
NO_EXPR = {"Sum": "depends on the input count", "Pow": "two forms (argument or input exponent)"}


@pytest.mark.parametrize("op", MINE)
def test_records_are_complete(op):
    opdef = all_ops()[op]
    assert opdef.infer is not None
    assert opdef.doc
    if opdef.category in (ELEMWISE, BROADCAST) and op not in NO_EXPR:
        assert opdef.expr, f"{op} is {opdef.category} but has no expr"
        env = {f"x{i}": 1.5 for i in range(4)}
        env.update({s.name: 0.5 for s in opdef.schema.args if s.kind in ("float", "int", "bool")})
        evaluate(opdef.expr, env)  # parses within the promised grammar and names only inputs/args
    is_gradient_op = op.endswith("Gradient") or op in ("SumReduceLike", "CopyOnDeviceLike")
    if not is_gradient_op:
        assert opdef.gradient is not None, f"{op} has no gradient maker"
