"""FCTransposed (W stored [K, N]) and its gradient: equals FC with the transposed weight, axis and
axis_w flattening, inference vs actual, Caffe2's gradient maker, finite differences."""
import numpy as np
import pytest

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.proto.args import make_op
from netjit.runtime.errors import NetJitError
from tests.ops.harness import check_gradient, check_infer, run_op


def test_hand_checked():
    x = np.array([[1.0, 2.0]], np.float32)
    w = np.array([[1.0, 0.0, 2.0], [3.0, 1.0, -1.0]], np.float32)   # K=2, N=3
    (y,) = check_infer("FCTransposed", [x, w, np.array([0.5, 0.0, 1.0], np.float32)])
    assert y.dtype == np.float32 and y.tolist() == [[7.5, 2.0, 1.0]]


@pytest.mark.parametrize("xs,ws,axis,axis_w", [((4, 3), (3, 5), 1, 1), ((2, 3, 4), (12, 6), 1, 1),
                                               ((2, 3, 4), (4, 5), 2, 1), ((3, 4), (2, 2, 5), 1, 2)])
def test_equals_fc_with_transposed_weight(xs, ws, axis, axis_w):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    k = int(np.prod(ws[:axis_w]))
    n = int(np.prod(ws[axis_w:]))
    b = rng.standard_normal(n)
    (y,) = check_infer("FCTransposed", [x, w, b], axis=axis, axis_w=axis_w)
    (want,) = run_op("FC", [x, w.reshape(k, n).T.copy(), b], axis=axis)
    np.testing.assert_allclose(y, want, rtol=1e-12)
    check_gradient("FCTransposed", [x, w, b], eps=1e-6, rtol=1e-5, atol=1e-8, axis=axis, axis_w=axis_w)
    dy = rng.standard_normal(y.shape)
    check_infer("FCTransposedGradient", [x, w, dy], n_outputs=3, axis=axis, axis_w=axis_w)


def test_gradient_maker_matches_fc_convention():
    ops, g = gradient_ops_for(make_op("FCTransposed", ["X", "W", "b"], ["Y"]), ["Y_grad"])
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == \
        [("FCTransposedGradient", ["X", "W", "Y_grad"], ["W_grad", "b_grad", "X_grad"])]
    assert g == ["X_grad", "W_grad", "b_grad"]


def test_errors_name_the_blob():
    x, w = np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32)
    with pytest.raises(NetJitError, match=r"\(FCTransposed\).*3 columns.*4 rows.*'in1'"):
        run_op("FCTransposed", [x, w, np.zeros(5, np.float32)])
    with pytest.raises(NetJitError, match=r"bias has 4 elements but W gives 5.*'in2'"):
        run_op("FCTransposed", [x, np.zeros((3, 5), np.float32), np.zeros(4, np.float32)])
