"""Relu and FC: reference vs independent formula, inference vs actual, gradients vs finite differences."""
import numpy as np
import pytest

from tests.ops.harness import check_gradient, check_infer, run_op

SHAPES = [(5,), (3, 4), (2, 3, 4)]


@pytest.mark.parametrize("shape", SHAPES)
def test_relu(shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    (y,) = check_infer("Relu", [x])
    np.testing.assert_array_equal(y, np.where(x > 0, x, 0))
    # Keep samples away from the kink so finite differences are meaningful.
    x64 = np.where(np.abs(x) < 0.1, 0.5, x).astype(np.float64)
    check_gradient("Relu", [x64])


@pytest.mark.parametrize("xs,ws,axis,axis_w", [((4, 3), (5, 3), 1, 1), ((2, 3, 4), (6, 12), 1, 1),
                                                ((2, 3, 4), (5, 4), 2, 1), ((3, 4), (2, 5, 4), 1, 2)])
def test_fc(xs, ws, axis, axis_w):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    n = int(np.prod(ws[:axis_w]))
    b = rng.standard_normal(n)
    (y,) = check_infer("FC", [x, w, b], axis=axis, axis_w=axis_w)
    m = int(np.prod(xs[:axis]))
    expect = np.einsum("mk,nk->mn", x.reshape(m, -1), w.reshape(n, -1)) + b
    np.testing.assert_allclose(y.reshape(m, n), expect, rtol=1e-10)
    check_gradient("FC", [x, w, b], axis=axis, axis_w=axis_w, rtol=1e-5, atol=1e-6)
    check_infer("FCGradient", [x, w, y], n_outputs=3, axis=axis, axis_w=axis_w)


def test_fc_bad_bias_names_blob():
    x, w, b = np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), np.ones(5, np.float32)
    with pytest.raises(Exception, match=r"op #0 \(FC\).*bias has 5 elements.*'in2'"):
        run_op("FC", [x, w, b])
