"""Swish, Softsign, Sign, Max/Min (+gradients), NanCheck and Size: hand-checked values, inference vs
actual, expr vs reference, compiled vs reference, gradients vs finite differences."""
import math

import numpy as np
import pytest

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.proto.args import make_op
from netjit.runtime.errors import NetJitError
from tests.compiler.helpers import assert_same_blobs, netdef, op, plan_of, run_compiled, run_reference
from tests.ops.exprcheck import check_expr
from tests.ops.harness import check_gradient, check_infer, run_op

FLOATS = [np.float32, np.float64]


def _sample(shape, dtype=np.float64, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 2).astype(dtype)


# Hand-checked values: swish(1) = 1/(1+e^-1) = 0.7310586, softsign(3) = 0.75, sign(-0.0) = 0.
HAND = [
    ("Swish", [-1.0, 0.0, 1.0, 2.0], [-0.26894142, 0.0, 0.73105858, 1.76159416]),
    ("Softsign", [-3.0, -1.0, 0.0, 0.5, 3.0], [-0.75, -0.5, 0.0, 1 / 3, 0.75]),
    ("Sign", [-2.5, -0.0, 0.0, 1e-30, np.nan], [-1.0, 0.0, 0.0, 1.0, 0.0]),
]


@pytest.mark.parametrize("name,x,want", HAND, ids=[h[0] for h in HAND])
@pytest.mark.parametrize("dtype", FLOATS)
def test_hand_checked_values(name, x, want, dtype):
    (y,) = check_infer(name, [np.array(x, dtype)])
    assert y.dtype == dtype
    np.testing.assert_allclose(y, np.array(want, dtype), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["Swish", "Softsign", "Sign"])
@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 4)])
def test_expr_matches_reference(name, shape):
    for dtype in FLOATS:
        check_expr(name, [_sample(shape, dtype, seed=1)])


@pytest.mark.parametrize("name,grad", [("Swish", "SwishGradient"), ("Softsign", "SoftsignGradient")])
def test_gradients(name, grad):
    x = _sample((3, 4), seed=2)
    check_gradient(name, [x], eps=1e-6, rtol=1e-5, atol=1e-8)
    (y,) = run_op(name, [x])
    dy = _sample((3, 4), seed=3)
    ins = [x, y, dy] if name == "Swish" else [x, dy]
    check_infer(grad, ins)
    check_expr(grad, ins)


def test_gradient_op_names_follow_caffe2():
    ops, g = gradient_ops_for(make_op("Swish", ["X"], ["Y"]), ["Y_grad"])
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [("SwishGradient", ["X", "Y", "Y_grad"], ["X_grad"])]
    ops, g = gradient_ops_for(make_op("Softsign", ["X"], ["Y"]), ["Y_grad"])
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [("SoftsignGradient", ["X", "Y_grad"], ["X_grad"])]
    with pytest.raises(ValueError, match="in place"):
        gradient_ops_for(make_op("Softsign", ["X"], ["X"]), ["X_grad"])
    with pytest.raises(ValueError, match="Sign"):
        gradient_ops_for(make_op("Sign", ["X"], ["Y"]), ["Y_grad"])


def test_swish_extremes_stay_finite():
    x = np.array([-1000, -50, 0, 50, 1000], np.float32)
    with np.errstate(over="raise", invalid="raise"):
        (y,) = run_op("Swish", [x])
    np.testing.assert_allclose(y, [0, -50 * math.exp(-50), 0, 50, 1000], rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("name", ["Swish", "Softsign", "Sign"])
def test_float_only(name):
    with pytest.raises(NetJitError, match=rf"\({name}\).*floating-point.*'in0'"):
        run_op(name, [np.arange(3, dtype=np.int32)])


# --------------------------------------------------------------------------------------------
# Max / Min
# --------------------------------------------------------------------------------------------
def test_max_min_hand_checked():
    a = np.array([1.0, 5.0, -2.0, 0.0], np.float32)
    b = np.array([3.0, 4.0, -2.0, -1.0], np.float32)
    c = np.array([2.0, 6.0, -3.0, 0.5], np.float32)
    np.testing.assert_array_equal(check_infer("Max", [a, b, c])[0], [3, 6, -2, 0.5])
    np.testing.assert_array_equal(check_infer("Min", [a, b, c])[0], [1, 4, -3, -1])
    np.testing.assert_array_equal(run_op("Max", [a])[0], a)
    ints = [np.array([1, 9], np.int32), np.array([4, 2], np.int32)]
    assert run_op("Max", ints)[0].tolist() == [4, 9] and run_op("Min", ints)[0].dtype == np.int32


def test_max_nan_follows_std_max():
    # std::max(a, b) = a < b ? b : a: a NaN first operand wins, a NaN later one is skipped.
    nan = np.nan
    (y,) = run_op("Max", [np.array([nan, 1.0]), np.array([2.0, nan])])
    assert np.isnan(y[0]) and y[1] == 1.0
    (y,) = run_op("Min", [np.array([nan, 1.0]), np.array([2.0, nan])])
    assert np.isnan(y[0]) and y[1] == 1.0


def test_max_min_gradient_and_ties():
    a, b, c = (_sample((2, 3), seed=s) for s in (4, 5, 6))
    for name in ("Max", "Min"):
        check_gradient(name, [a, b, c], eps=1e-6, rtol=1e-5, atol=1e-8)
    fwd = make_op("Max", ["A", "B"], ["Y"])
    ops, g = gradient_ops_for(fwd, ["Y_grad"])
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == \
        [("MaxGradient", ["Y", "Y_grad", "A", "B"], ["A_grad", "B_grad"])]
    assert g == ["A_grad", "B_grad"]
    # Ties: every input equal to the max receives the whole gradient, as in Caffe2.
    x = np.array([1.0, 2.0]), np.array([1.0, 3.0])
    (y,) = run_op("Max", list(x))
    da, db = check_infer("MaxGradient", [y, np.array([10.0, 20.0]), *x], n_outputs=2)
    assert da.tolist() == [10, 0] and db.tolist() == [10, 20]


def test_max_mismatch_names_blob():
    with pytest.raises(NetJitError, match=r"\(Max\).*input 1 has shape \[3\].*'in1'"):
        run_op("Max", [np.zeros(2), np.zeros(3)])
    with pytest.raises(NetJitError, match=r"\(Min\).*same type.*'in1'"):
        run_op("Min", [np.zeros(2), np.zeros(2, np.float32)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("n", [1, 2, 4])
def test_max_min_compiled_match_reference(dtype, n):
    rng = np.random.default_rng(7)
    feeds = {f"x{i}": (rng.standard_normal((3, 5)) * 4).astype(dtype) for i in range(n)}
    net = netdef("maxmin", [op("Max", list(feeds), ["hi"]), op("Min", list(feeds), ["lo"]),
                            op("Sub", ["hi", "lo"], ["spread"])])
    ws, runner = run_compiled(net, feeds)
    assert_same_blobs(run_reference(net, feeds), ws, rtol=0, atol=0)
    assert "kernel" in [s.kind for s in plan_of(runner).driver.steps]


def test_new_elementwise_ops_fuse_and_match_reference():
    rng = np.random.default_rng(8)
    feeds = {k: rng.standard_normal((4, 6)).astype(np.float32) * 3 for k in "abc"}
    feeds["b"][0, 0] = np.nan
    net = netdef("fused", [op("Max", ["a", "b", "c"], ["m"]), op("Swish", ["m"], ["s"]),
                           op("Softsign", ["s"], ["q"]), op("Sign", ["q"], ["g"]),
                           op("SwishGradient", ["a", "s", "c"], ["sg"]), op("SoftsignGradient", ["a", "q"], ["qg"])])
    ws, runner = run_compiled(net, feeds)
    assert_same_blobs(run_reference(net, feeds), ws, rtol=2e-6, atol=1e-6)
    plan = plan_of(runner)
    assert [s.kind for s in plan.driver.steps].count("kernel") >= 1 and not plan.fallbacks


# --------------------------------------------------------------------------------------------
# NanCheck / Size
# --------------------------------------------------------------------------------------------
def test_nan_check_passes_finite_values_and_names_the_bad_blob():
    x = _sample((2, 3), seed=9)
    (y,) = check_infer("NanCheck", [x])
    np.testing.assert_array_equal(y, x)
    bad = x.copy()
    bad[1, 2] = np.inf
    with pytest.raises(NetJitError, match=r"\(NanCheck\).*NaN or inf.*inf at index \[1, 2\].*'in0'"):
        run_op("NanCheck", [bad])
    bad[0, 1] = np.nan
    with pytest.raises(NetJitError, match=r"2 of 6 values.*NaN at index \[0, 1\]"):
        run_op("NanCheck", [bad, x])
    ops, g = gradient_ops_for(make_op("NanCheck", ["X"], ["Y"]), ["Y_grad"])
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [("NanCheck", ["Y_grad"], ["X_grad"])]


@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3, 4)])
def test_size(shape):
    (n,) = check_infer("Size", [np.zeros(shape, np.float32)])
    assert n.shape == () and n.dtype == np.int64 and int(n) == int(np.prod(shape))
