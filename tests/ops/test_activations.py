"""Sigmoid, Tanh, LeakyRelu, Elu, Softmax and their gradient ops: reference vs an independent
per-element formula, inference vs actual, expr vs reference, gradients vs finite differences."""
import math

import numpy as np
import pytest

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.compiler.ops.registry import TensorType, lookup
from netjit.proto.args import make_op
from tests.ops.exprcheck import check_expr
from tests.ops.harness import check_gradient, check_infer, run_op

SHAPES = [(), (1,), (7,), (3, 4), (2, 3, 4)]
FLOATS = [np.float32, np.float64]


def _sample(shape, dtype, seed=0, scale=2.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def _per_element(fn, x, dtype):
    """An independent formula: Python math per element, rounded to the dtype at the end."""
    return np.vectorize(lambda v: fn(float(v)), otypes=[np.float64])(x).astype(dtype) if x.size else x.copy()


def _logistic(v):
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


# Argument.f is a 32-bit float: an alpha of 0.2 arrives as float32(0.2), as in Caffe2.
A02, A05 = float(np.float32(0.2)), float(np.float32(0.5))
POINTWISE = [
    # op, args, formula(v, args), gradient op
    ("Sigmoid", {}, lambda v, a: _logistic(v), "SigmoidGradient"),
    ("Tanh", {}, lambda v, a: math.tanh(v), "TanhGradient"),
    ("LeakyRelu", {}, lambda v, a: v if v > 0 else float(np.float32(0.01)) * v, "LeakyReluGradient"),
    ("LeakyRelu", {"alpha": 0.2}, lambda v, a: v if v > 0 else A02 * v, "LeakyReluGradient"),
    ("Elu", {}, lambda v, a: v if v > 0 else math.exp(v) - 1, "EluGradient"),
    ("Elu", {"alpha": 0.5}, lambda v, a: v if v > 0 else A05 * (math.exp(v) - 1), "EluGradient"),
]


@pytest.mark.parametrize("op,args,formula,grad_op", POINTWISE, ids=lambda p: str(p) if isinstance(p, str) else None)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_pointwise_forward(op, args, formula, grad_op, shape, dtype):
    x = _sample(shape, dtype)
    (y,) = check_infer(op, [x], **args)
    assert isinstance(y, np.ndarray) and y.dtype == dtype and y.shape == shape
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, _per_element(lambda v: formula(v, args), x, dtype), rtol=rtol, atol=rtol)
    check_expr(op, [x], **args)


@pytest.mark.parametrize("op,args,formula,grad_op", POINTWISE, ids=lambda p: str(p) if isinstance(p, str) else None)
@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4)])
def test_pointwise_gradient(op, args, formula, grad_op, shape):
    x = _sample(shape, np.float64, seed=3)
    x = np.where(np.abs(x) < 0.05, 0.5, x)  # away from the kink at 0
    check_gradient(op, [x], eps=1e-5, rtol=1e-5, atol=1e-7, **args)
    (y,) = run_op(op, [x], **args)
    dy = _sample(shape, np.float64, seed=4)
    for dtype in FLOATS:
        check_infer(grad_op, [y.astype(dtype), dy.astype(dtype)], **args)
        check_expr(grad_op, [y.astype(dtype), dy.astype(dtype)], **args)


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh", "LeakyRelu", "Elu"])
def test_pointwise_gradient_names_and_inplace(op):
    # Gradients read Y, so the in-place form X -> X differentiates too (Caffe2's naming).
    fwd = make_op(op, ["X"], ["X"])
    ops, g_in = gradient_ops_for(fwd, ["X_grad"])
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [(op + "Gradient", ["X", "X_grad"], ["X_grad"])]
    assert g_in == ["X_grad"]
    x = np.linspace(-3, 3, 13)
    x = x[np.abs(x) > 0.1]
    (y,) = run_op(op, [x])
    (y2,) = run_op(op + "Gradient", [y, np.ones_like(y)])
    assert y2.shape == x.shape


def test_sigmoid_tanh_extremes_stay_finite():
    x = np.array([-1000, -100, -20, 0, 20, 100, 1000], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        (s,) = run_op("Sigmoid", [x])
        (t,) = run_op("Tanh", [x])
        (e,) = run_op("Elu", [x])
    assert s.dtype == np.float32 and np.all(np.isfinite(s))
    np.testing.assert_array_equal(s[[0, -2, -1]], [0, 1, 1])
    assert 0 < s[1] < 1e-40  # e^-100 survives as a float32 subnormal
    np.testing.assert_array_equal(t[[0, -1]], [-1, 1])
    np.testing.assert_array_equal(e[[0, -1]], [-1, 1000])


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh", "LeakyRelu", "Elu", "Softmax"])
def test_float_only(op):
    with pytest.raises(Exception, match=rf"\({op}\).*floating-point.*int32.*'in0'"):
        run_op(op, [np.arange(6, dtype=np.int32).reshape(2, 3)])


def test_leaky_relu_alpha_must_be_float():
    with pytest.raises(Exception, match="argument 'alpha' must be a float"):
        run_op("LeakyRelu", [np.ones(3, np.float32)], alpha=1)


# --------------------------------------------------------------------------------------------
# Softmax
# --------------------------------------------------------------------------------------------
def _softmax_rows(x, axis):
    """Independent formula: explicit loop over rows of the 2-D view, exp of shifted values."""
    axis = axis % x.ndim
    n = int(np.prod(x.shape[:axis]))
    x2 = x.reshape(n, -1).astype(np.float64)
    y = np.empty_like(x2)
    for i in range(n):
        row = [math.exp(v - max(x2[i])) for v in x2[i]]
        y[i] = [r / sum(row) for r in row]
    return y.reshape(x.shape)


SOFTMAX_CASES = [((3, 4), 1), ((1, 1), 1), ((2, 3, 4), 1), ((2, 3, 4), 2), ((2, 3, 4), -1), ((2, 3, 4, 5), 0),
                 ((7,), 0), ((5,), -1)]


@pytest.mark.parametrize("shape,axis", SOFTMAX_CASES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax(shape, axis, dtype):
    x = _sample(shape, dtype, seed=5, scale=3.0)
    (y,) = check_infer("Softmax", [x], axis=axis)
    assert y.dtype == dtype
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, _softmax_rows(x, axis), rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("shape,axis", [((3, 4), 1), ((2, 3, 4), 2), ((2, 3, 4), 1), ((6,), 0)])
def test_softmax_gradient(shape, axis):
    x = _sample(shape, np.float64, seed=6)
    check_gradient("Softmax", [x], eps=1e-5, rtol=1e-5, atol=1e-7, axis=axis)
    (y,) = run_op("Softmax", [x], axis=axis)
    check_infer("SoftmaxGradient", [y, np.ones_like(y)], axis=axis)
    ops, _ = gradient_ops_for(make_op("Softmax", ["X"], ["Y"], axis=axis), ["Y_grad"])
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [("SoftmaxGradient", ["Y", "Y_grad"], ["X_grad"])]
    assert [a.name for a in ops[0].arg] == ["axis"]  # the forward args are copied


def test_softmax_is_stable_for_large_logits():
    x = np.array([[1000, 1001, 1002], [-1000, -1000, -1000]], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        (y,) = run_op("Softmax", [x])
    np.testing.assert_allclose(y[0], _softmax_rows(np.array([[0, 1, 2]], np.float64), 1)[0], rtol=1e-6)
    np.testing.assert_allclose(y[1], [1 / 3] * 3, rtol=1e-6)


def test_softmax_axis_out_of_range_names_op_and_blob():
    with pytest.raises(Exception, match=r"\(Softmax\).*axis 1 is out of range.*'in0'"):
        run_op("Softmax", [np.ones(4, np.float32)])
    opdef = lookup("Softmax")
    with pytest.raises(ValueError, match="out of range"):
        opdef.infer(opdef.decode_args(make_op("Softmax", ["X"], ["Y"])), [TensorType((4,), np.dtype(np.float32))])


def test_softmax_empty_batch():
    (y,) = check_infer("Softmax", [np.zeros((0, 5), np.float32)])
    assert y.shape == (0, 5)
