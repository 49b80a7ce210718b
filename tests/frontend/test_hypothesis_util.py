"""Caffe2-style op tests run unchanged on netjit's hypothesis_test_util/test_util/gradient_checker,
and the helpers themselves: strategies, checkers that must fail on a wrong op, GPU-only skips."""
import unittest

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

import caffe2.python.hypothesis_test_util as hu
from caffe2.python import core, device_checker, gradient_checker, test_util, workspace


# --------------------------------------------------------------------------------------------
# Tests written as in caffe2/python/operator_test/*_test.py
# --------------------------------------------------------------------------------------------
class TestOpsLikeCaffe2(hu.HypothesisTestCase):
    @given(X=hu.tensor(), inplace=st.booleans(), **hu.gcs)
    @settings(max_examples=10)
    def test_relu(self, X, inplace, gc, dc):
        op = core.CreateOperator("Relu", ["X"], ["X" if inplace else "Y"])
        X[np.abs(X) < 0.02] += 0.1   # away from the kink, for the finite differences

        def relu_ref(X):
            return [np.maximum(X, 0.0)]

        self.assertReferenceChecks(gc, op, [X], relu_ref)
        self.assertDeviceChecks(dc, op, [X], [0])
        if not inplace:
            self.assertGradientChecks(gc, op, [X], 0, [0])

    @given(n=st.integers(1, 4), m=st.integers(1, 4), k=st.integers(1, 4), **hu.gcs)
    @settings(max_examples=10)
    def test_fc(self, n, m, k, gc, dc):
        X = np.random.rand(m, k).astype(np.float32) - 0.5
        W = np.random.rand(n, k).astype(np.float32) - 0.5
        b = np.random.rand(n).astype(np.float32) - 0.5
        op = core.CreateOperator("FC", ["X", "W", "b"], "out")

        def fc_op(X, W, b):
            return [np.dot(X, W.T) + b]

        self.assertReferenceChecks(gc, op, [X, W, b], fc_op)
        self.assertDeviceChecks(dc, op, [X, W, b], [0])
        for i in range(3):
            self.assertGradientChecks(gc, op, [X, W, b], i, [0])

    @given(X=hu.tensor(), **hu.gcs)
    @settings(max_examples=10)
    def test_softsign_and_swish(self, X, gc, dc):
        for name, ref in (("Softsign", lambda X: (X / (1 + np.abs(X)),)),
                          ("Swish", lambda X: (X / (1 + np.exp(-X)),))):
            op = core.CreateOperator(name, ["X"], ["Y"])
            self.assertReferenceChecks(gc, op, [X], ref)
            self.assertDeviceChecks(dc, op, [X], [0])
            self.assertGradientChecks(gc, op, [X], 0, [0])

    @given(inputs=hu.tensors(n=3), **hu.gcs)
    @settings(max_examples=10)
    def test_max(self, inputs, gc, dc):
        op = core.CreateOperator("Max", ["X", "Y", "Z"], ["mx"])

        def max_ref(X, Y, Z):
            return [np.maximum(np.maximum(X, Y), Z)]

        self.assertReferenceChecks(gc, op, inputs, max_ref)
        self.assertDeviceChecks(dc, op, inputs, [0])
        # Ties (equal draws) make Max non-differentiable: spread the values first.
        X, Y, Z = inputs
        self.assertGradientChecks(gc, op, [X, Y + 3, Z - 3], 1, [0])

    @given(X=hu.tensor(min_dim=2, max_dim=2), **hu.gcs_cpu_only)
    @settings(max_examples=10)
    def test_cosine_similarity_validation(self, X, gc, dc):
        Y = X[::-1].copy() + 0.5
        op = core.CreateOperator("CosineSimilarity", ["X", "Y"], ["cos"])

        def within_unit(X, Y, cos):
            self.assertEqual(cos.shape, (X.shape[0],))
            self.assertTrue(np.all(np.abs(cos) <= 1 + 1e-5))

        self.assertValidationChecks(gc, op, [X, Y], within_unit)

    @given(data_and_lengths=hu.lengths_tensor(dtype=np.float32), **hu.gcs_cpu_only)
    @settings(max_examples=10)
    def test_lengths_range_fill(self, data_and_lengths, gc, dc):
        _, lengths = data_and_lengths
        op = core.CreateOperator("LengthsRangeFill", ["L"], ["R"])
        self.assertReferenceChecks(
            gc, op, [lengths], lambda L: (np.concatenate([np.arange(v) for v in L] + [[]]).astype(np.int32),))


class TestTestUtil(test_util.TestCase):
    def test_fresh_workspaces(self):
        test_util.randBlobFloat32("X", 2, 3, offset=-0.5)
        test_util.randBlobsFloat32(["A", "B"], 4)
        x = workspace.FetchBlob("X")
        self.assertEqual((x.dtype, x.shape), (np.float32, (2, 3)))
        self.assertTrue(np.all((x >= -0.5) & (x < 0.5)))
        self.assertEqual(sorted(workspace.Blobs()), ["A", "B", "X"])
        self.ws.create_blob("private").feed(np.ones(2))
        self.assertFalse(workspace.HasBlob("private"))
        self.assertTrue(test_util.str_compare(b"abc", "abc"))
        net = core.Net("n")
        net.Relu(["X"], ["Y"])
        self.assertEqual(test_util.numOps(net), 1)
        self.assertEqual(test_util.rand_array(3, 2).dtype, np.float32)

    def test_workspace_is_empty_again(self):
        self.assertEqual(workspace.Blobs(), [])
        self.assertEqual(list(self.ws.blobs), [])


# --------------------------------------------------------------------------------------------
# The checkers must catch wrong ops, not just pass right ones
# --------------------------------------------------------------------------------------------
def test_gradient_checker_catches_a_wrong_gradient():
    from netjit.compiler.ops.gradients import simple_gradient
    from netjit.compiler.ops.registry import lookup
    x = np.array([[0.3, -0.7, 1.2]], np.float32)
    op = core.CreateOperator("Sigmoid", ["X"], ["Y"])
    checker = gradient_checker.GradientChecker(stepsize=0.01, threshold=0.005)
    ok, grad, est = checker.CheckSimple(op, [x.copy()], 0, [0])
    assert ok and grad.shape == est.shape == x.shape
    record = lookup("Sigmoid")
    saved = record.gradient
    record.gradient = simple_gradient("TanhGradient", ["O0", "GO0"], ["GI0"])   # deliberately wrong
    try:
        ok, _, _ = checker.CheckSimple(op, [x.copy()], 0, [0])
    finally:
        record.gradient = saved
    assert not ok
    assert workspace.CurrentWorkspace() == "default"


def test_net_gradient_checker():
    net = core.Net("two_ops")
    net.Tanh(["x"], ["t"])
    net.Scale(["t"], ["y"], scale=3.0)
    mean, worst = gradient_checker.NetGradientChecker.Check(
        net, ["y"], {"x": np.array([0.1, -0.4, 0.9], np.float64)}, "x", step_size=1e-5, threshold=1e-6)
    assert worst < 1e-6


def test_device_checker_compares_both_executors():
    from caffe2.proto import caffe2_pb2
    dc = device_checker.DeviceChecker(1e-6, [caffe2_pb2.DeviceOption()])
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    assert dc.CheckSimple(core.CreateOperator("Softsign", ["X"], ["Y"]), [x], [0])
    net = core.Net("n")
    net.Swish(["X"], ["Y"])
    assert dc.CheckNet(net, {"X": x})


def test_reference_check_fails_on_a_wrong_reference():
    case = hu.HypothesisTestCase()
    op = core.CreateOperator("Softsign", ["X"], ["Y"])
    with pytest.raises(AssertionError, match="not matching the reference"):
        case.assertReferenceChecks(hu.cpu_do, op, [np.array([1.0, 2.0], np.float32)], lambda X: (X,))
    with pytest.raises(RuntimeError, match="tuple/list"):
        case.assertReferenceChecks(hu.cpu_do, op, [np.array([1.0], np.float32)], lambda X: X)


@given(data=hu.lengths_tensor(min_segments=2, max_segments=4), ids=hu.segment_ids(6, is_sorted=True),
       sparse=hu.sparse_lengths_tensor(), t1=hu.tensor1d(max_len=5), d=hu.dims(2, 3),
       many=hu.ntensors(1, 3, max_dim=2))
@settings(max_examples=10, deadline=None, derandomize=True)
def test_strategies_shapes(data, ids, sparse, t1, d, many):
    x, lengths = data
    assert lengths.dtype == np.int32 and lengths.sum() == x.shape[0] and 1 <= len(lengths) <= 4
    assert ids.shape == (6,) and ids[0] == 0 and np.all(np.diff(ids) >= 0)
    values, indices, seg_lengths = sparse
    assert indices.max(initial=0) < values.shape[0] and seg_lengths.sum() == indices.shape[0]
    assert t1.ndim == 1 and 1 <= t1.size <= 5 and 2 <= d <= 3
    assert 1 <= len(many) <= 3 and len({m.shape for m in many}) == 1
    assert np.all(np.abs(x) <= 1)


def test_gpu_only_strategy_skips():
    class GpuOnly(hu.HypothesisTestCase):   # defined here so pytest does not also collect it
        @given(X=hu.tensor(), **hu.gcs_gpu_only)
        def test_gpu(self, X, gc, dc):
            raise AssertionError("a GPU-only test ran on a CPU-only build")

    result = unittest.TestResult()
    GpuOnly("test_gpu").run(result)
    assert len(result.skipped) == 1 and not result.failures and not result.errors
    assert "no GPU device" in result.skipped[0][1]


def test_grad_reference_and_run_op_raises():
    case = hu.HypothesisTestCase()
    X = np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32)
    op = core.CreateOperator("Softsign", ["X"], ["Y"])

    def grad_ref(g_out, outputs, inputs):
        return (g_out / (1 + np.abs(inputs[0])) ** 2,)

    case.assertReferenceChecks(hu.cpu_do, op, [X], lambda X: (X / (1 + np.abs(X)),), output_to_grad="Y",
                               grad_reference=grad_ref)
    with pytest.raises(AssertionError, match="Gradient X_grad"):
        case.assertReferenceChecks(hu.cpu_do, op, [X], lambda X: (X / (1 + np.abs(X)),), output_to_grad="Y",
                                   grad_reference=lambda g, o, i: (g,))
    rng_op = core.CreateOperator("Range", ["a", "b", "c"], ["r"])
    case.assertRunOpRaises(hu.cpu_do, rng_op, [np.array(1), np.array(5), np.array(0)], exception=RuntimeError,
                           regexp="Step size cannot be 0")
    assert hu.runOpOnInput(hu.cpu_do, rng_op, [np.array(1), np.array(7), np.array(3)])[0].tolist() == [1, 4]


def test_net_gradient_checker_compare_nets():
    a = core.Net("fused")
    a.Swish(["x"], ["y"])
    b = core.Net("split")
    b.Sigmoid(["x"], ["s"])
    b.Mul(["x", "s"], ["y2"])
    values = {"x": np.array([0.5, -1.0, 2.0], np.float32)}   # float32: the output gradients are float32 ones
    gradient_checker.NetGradientChecker.CompareNets([a, b], [["y"], ["y2"]], [0], ["x"], values, threshold=1e-6)
    c = core.Net("wrong")
    c.Tanh(["x"], ["y3"])
    with pytest.raises(AssertionError, match="output 0 of net 1"):
        gradient_checker.NetGradientChecker.CompareNets([a, c], [["y"], ["y3"]], [0], ["x"], values)


@given(pair=hu.tensors(min_n=2, min_dim=1, max_dim=2), some=hu.tensors(min_n=1, max_n=3),
       ragged=hu.tensors(n=2, varying_shape=True), three=hu.tensors(3))
@settings(max_examples=10, deadline=None, derandomize=True)
def test_tensors_both_caffe2_spellings(pair, some, ragged, three):
    # Early 2018: tensors(min_n=, max_n=, varying_shape=); later: tensors(n).
    assert len(pair) == 2 and pair[0].shape == pair[1].shape and 1 <= pair[0].ndim <= 2
    assert 1 <= len(some) <= 3 and len(ragged) == 2 and len(three) == 3
