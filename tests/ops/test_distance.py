"""DotProduct, L1Distance, CosineSimilarity and their gradients: hand-checked rows, inference vs
actual, Caffe2's gradient names, finite-difference checks, and errors naming the blob."""
import math

import numpy as np
import pytest

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.proto.args import make_op
from netjit.runtime.errors import NetJitError
from tests.compiler.helpers import assert_same_blobs, netdef, op, run_compiled, run_reference
from tests.ops.harness import check_gradient, check_infer, run_op

OPS = ["DotProduct", "L1Distance", "CosineSimilarity"]
X = np.array([[1.0, 2.0, 2.0], [3.0, 0.0, -4.0]], np.float32)
Y = np.array([[2.0, -1.0, 2.0], [0.0, 0.0, 0.0]], np.float32)
# Row 0: x·y = 2 - 2 + 4 = 4, |x| = 3, |y| = 3 -> cos 4/9; L1 = 1 + 3 + 0 = 4.
# Row 1: y = 0 -> cos 0 (the clamped norm avoids 0/0); L1 = 3 + 4 = 7.
HAND = {"DotProduct": [4.0, 0.0], "L1Distance": [4.0, 7.0], "CosineSimilarity": [4 / 9, 0.0]}


@pytest.mark.parametrize("name", OPS)
def test_hand_checked_rows(name):
    (z,) = check_infer(name, [X, Y])
    assert z.dtype == np.float32 and z.shape == (2,)
    np.testing.assert_allclose(z, HAND[name], rtol=1e-6)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("shape", [(), (5,), (4, 3), (2, 3, 2)])
def test_shapes_and_inference(name, shape):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal(shape), rng.standard_normal(shape)
    (z,) = check_infer(name, [x, y])
    n = shape[0] if shape else 1
    x2, y2 = x.reshape(n, -1), y.reshape(n, -1)
    want = {"DotProduct": (x2 * y2).sum(1), "L1Distance": np.abs(x2 - y2).sum(1),
            "CosineSimilarity": (x2 * y2).sum(1) / np.sqrt((x2 * x2).sum(1) * (y2 * y2).sum(1))}[name]
    np.testing.assert_allclose(z, want, rtol=1e-12)


@pytest.mark.parametrize("name", OPS)
def test_gradient(name):
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    check_gradient(name, [x, y], eps=1e-6, rtol=1e-5, atol=1e-8)
    ops, g = gradient_ops_for(make_op(name, ["X", "Y"], ["Z"]), ["Z_grad"])
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == \
        [(name + "Gradient", ["X", "Y", "Z_grad"], ["X_grad", "Y_grad"])]
    check_infer(name + "Gradient", [x, y, rng.standard_normal(3)], n_outputs=2)


def test_l1_gradient_is_zero_where_equal():
    x = np.array([[1.0, 2.0, 3.0]])
    dx, dy = run_op("L1DistanceGradient", [x, np.array([[0.0, 2.0, 5.0]]), np.array([2.0])], n_outputs=2)
    assert dx.tolist() == [[2, 0, -2]] and dy.tolist() == [[-2, 0, 2]]


def test_cosine_of_parallel_vectors_is_one():
    x = np.array([[1.0, 2.0], [-3.0, 4.0]])
    (z,) = run_op("CosineSimilarity", [x, 2.5 * x])
    np.testing.assert_allclose(z, [1, 1], rtol=1e-12)
    assert math.isclose(run_op("CosineSimilarity", [x[:1], -x[:1]])[0][0], -1.0)


@pytest.mark.parametrize("name", OPS)
def test_errors_name_the_blob(name):
    with pytest.raises(NetJitError, match=rf"\({name}\).*same shape.*'in1'"):
        run_op(name, [np.zeros((2, 3)), np.zeros((3, 2))])
    with pytest.raises(NetJitError, match=rf"\({name}\).*floating-point.*'in0'"):
        run_op(name, [np.zeros(3, np.int32), np.zeros(3, np.int32)])
    with pytest.raises(NetJitError, match=r"gradient must have shape \[2\].*'in2'"):
        run_op(name + "Gradient", [np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(3)], n_outputs=2)


def test_compiled_net_matches_reference():
    rng = np.random.default_rng(3)
    feeds = {"x": rng.standard_normal((5, 4)).astype(np.float32), "y": rng.standard_normal((5, 4)).astype(np.float32)}
    net = netdef("dist", [op(n, ["x", "y"], [n.lower()]) for n in OPS] + [op("Relu", ["l1distance"], ["r"])])
    ws, _ = run_compiled(net, feeds)
    assert_same_blobs(run_reference(net, feeds), ws, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Through Caffe2's hypothesis helpers, as Caffe2's distance_op_test was written
# --------------------------------------------------------------------------------------------
import hypothesis.strategies as st  # noqa: E402
from hypothesis import given, settings  # noqa: E402

import caffe2.python.hypothesis_test_util as hu  # noqa: E402
from caffe2.python import core  # noqa: E402


class TestDistanceHypothesis(hu.HypothesisTestCase):
    @given(n=st.integers(1, 3), d=st.integers(1, 4), **hu.gcs)
    @settings(max_examples=6)
    def test_dot_and_cosine(self, n, d, gc, dc):
        rng = np.random.default_rng(n * 10 + d)
        X = rng.standard_normal((n, d)).astype(np.float32)
        Y = rng.standard_normal((n, d)).astype(np.float32)
        for name, ref in (("DotProduct", lambda X, Y: ((X * Y).sum(axis=1),)),
                          ("CosineSimilarity", lambda X, Y: ((X * Y).sum(axis=1) / np.sqrt(
                              (X * X).sum(axis=1) * (Y * Y).sum(axis=1)),))):
            op = core.CreateOperator(name, ["X", "Y"], ["out"])
            self.assertReferenceChecks(gc, op, [X, Y], ref)
            self.assertDeviceChecks(dc, op, [X, Y], [0])
            self.assertGradientChecks(gc, op, [X, Y], 0, [0], stepsize=0.01, threshold=0.01)
            self.assertGradientChecks(gc, op, [X, Y], 1, [0], stepsize=0.01, threshold=0.01)
