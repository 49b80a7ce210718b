"""Losses and metrics: references vs loop formulas, inferred vs actual types, gradients vs finite
differences, and errors that name the offending blob."""
import math

import numpy as np
import pytest

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.proto.args import make_op
from tests.ops.harness import check_gradient, check_infer, run_op

RNG = np.random.default_rng(0)


def probs(n, d, dtype=np.float64):
    """Rows of positive numbers away from the log threshold."""
    return RNG.uniform(0.1, 1.0, (n, d)).astype(dtype)


# ---------------------------------------------------------------------------------------------
# SquaredL2Distance
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4,), (3, 5), (2, 3, 4)])
def test_squared_l2_distance(shape):
    x, y = RNG.standard_normal(shape), RNG.standard_normal(shape)
    (z,) = check_infer("SquaredL2Distance", [x, y])
    expect = [0.5 * sum(v * v for v in (x[i] - y[i]).reshape(-1).tolist()) for i in range(shape[0])]
    np.testing.assert_allclose(z, expect, rtol=1e-12)
    check_gradient("SquaredL2Distance", [x, y], rtol=1e-6, atol=1e-8)
    check_infer("SquaredL2DistanceGradient", [x, y, z], n_outputs=2)


def test_squared_l2_distance_float32_and_errors():
    x = RNG.standard_normal((3, 2)).astype(np.float32)
    (z,) = check_infer("SquaredL2Distance", [x, np.zeros_like(x)])
    assert z.dtype == np.float32
    with pytest.raises(Exception, match=r"same shape.*'in1'"):
        run_op("SquaredL2Distance", [x, np.zeros((3, 3), np.float32)])


# ---------------------------------------------------------------------------------------------
# AveragedLoss
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_averaged_loss(shape, dtype):
    x = RNG.standard_normal(shape).astype(dtype)
    (y,) = check_infer("AveragedLoss", [x])
    assert y.shape == () and y.dtype == dtype
    np.testing.assert_allclose(y, math.fsum(x.reshape(-1).tolist()) / x.size, rtol=1e-5)
    if dtype == np.float64:
        check_gradient("AveragedLoss", [x], rtol=1e-7, atol=1e-9)
    check_infer("AveragedLossGradient", [x, np.asarray(2.0, dtype)])
    (dx,) = run_op("AveragedLossGradient", [x, np.asarray(2.0, dtype)])
    np.testing.assert_allclose(dx, np.full(shape, 2.0 / x.size), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# LabelCrossEntropy
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,d,label_shape", [(4, 3, "flat"), (5, 6, "column"), (1, 4, "flat")])
def test_label_cross_entropy(n, d, label_shape):
    x = probs(n, d)
    label = RNG.integers(0, d, n).astype(np.int32)
    lab = label if label_shape == "flat" else label.reshape(n, 1)
    (y,) = check_infer("LabelCrossEntropy", [x, lab])
    np.testing.assert_allclose(y, [-math.log(x[i, label[i]]) for i in range(n)], rtol=1e-12)
    check_gradient("LabelCrossEntropy", [x, lab], eps=1e-6, rtol=1e-5, atol=1e-7)
    check_infer("LabelCrossEntropyGradient", [x, lab, y])


def test_label_cross_entropy_threshold_and_1d_input():
    x = np.array([[0.0, 1.0]], np.float32)
    (y,) = run_op("LabelCrossEntropy", [x, np.array([0], np.int32)])
    np.testing.assert_allclose(y, [-math.log(1e-20)], rtol=1e-6)
    (y1,) = check_infer("LabelCrossEntropy", [np.array([0.25, 0.75], np.float32), np.array([1], np.int32)])
    np.testing.assert_allclose(y1, [-math.log(0.75)], rtol=1e-6)


@pytest.mark.parametrize("label,match", [
    (np.array([0, 3], np.int32), r"label 3 at row 1 is out of range: there are 3 classes.*'in1'"),
    (np.array([-1, 0], np.int32), r"label -1 at row 0 is out of range"),
    (np.array([0, 1], np.int64), r"labels must be int32, got int64.*'in1'"),
    (np.array([0, 1, 2], np.int32), r"shape \[2\] or \[2, 1\]"),
])
def test_label_cross_entropy_bad_labels(label, match):
    with pytest.raises(Exception, match=match):
        run_op("LabelCrossEntropy", [probs(2, 3, np.float32), label])


# ---------------------------------------------------------------------------------------------
# CrossEntropy
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,d", [(3, 4), (2, 7)])
def test_cross_entropy(n, d):
    x = probs(n, d)
    label = RNG.uniform(0, 1, (n, d))
    (y,) = check_infer("CrossEntropy", [x, label])
    expect = [-sum(label[i, j] * math.log(x[i, j]) for j in range(d)) for i in range(n)]
    np.testing.assert_allclose(y, expect, rtol=1e-12)
    check_gradient("CrossEntropy", [x, label], wrt=[0], eps=1e-6, rtol=1e-5, atol=1e-7)
    check_infer("CrossEntropyGradient", [x, label, y])


def test_cross_entropy_label_shape_error():
    with pytest.raises(Exception, match=r"labels must have X's shape.*'in1'"):
        run_op("CrossEntropy", [probs(2, 3), np.ones((2, 4))])


# ---------------------------------------------------------------------------------------------
# SoftmaxWithLoss
# ---------------------------------------------------------------------------------------------
def softmax_rows(x2):
    e = np.exp(x2 - x2.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("shape,axis", [((4, 5), 1), ((2, 3, 4), 1), ((2, 3, 4), 2), ((3, 2, 2), -1)])
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_with_loss(shape, axis, weighted):
    x = RNG.standard_normal(shape)
    ax = axis % len(shape)
    n, d = math.prod(shape[:ax]), math.prod(shape[ax:])
    label = RNG.integers(0, d, n).astype(np.int32).reshape(shape[:ax])
    w = RNG.uniform(0.5, 2.0, n) if weighted else None
    inputs = [x, label] + ([w] if weighted else [])
    p, loss = check_infer("SoftmaxWithLoss", inputs, n_outputs=2, axis=axis, scale=0.5)
    ref_p = softmax_rows(x.reshape(n, d))
    np.testing.assert_allclose(p.reshape(n, d), ref_p, rtol=1e-12)
    ww = np.ones(n) if w is None else w
    flat = label.reshape(-1)
    expect = 0.5 * sum(-math.log(ref_p[i, flat[i]]) * ww[i] for i in range(n)) / ww.sum()
    assert loss.shape == () and abs(float(loss) - expect) < 1e-12
    check_gradient("SoftmaxWithLoss", inputs, n_outputs=2, grad_outputs=[1], wrt=[0], axis=axis, scale=0.5,
                   rtol=1e-5, atol=1e-7)
    check_infer("SoftmaxWithLossGradient", [x, label] + ([w] if weighted else []) + [p, np.asarray(1.0)],
                axis=axis, scale=0.5)


def test_softmax_with_loss_label_prob():
    x = RNG.standard_normal((3, 4))
    label = RNG.uniform(0.1, 1, (3, 4))
    label /= label.sum(axis=1, keepdims=True)
    p, loss = check_infer("SoftmaxWithLoss", [x, label], n_outputs=2, label_prob=1)
    ref_p = softmax_rows(x)
    expect = sum(-(label[i] * np.log(ref_p[i])).sum() for i in range(3)) / 3
    assert abs(float(loss) - expect) < 1e-12
    check_gradient("SoftmaxWithLoss", [x, label], n_outputs=2, grad_outputs=[1], wrt=[0], label_prob=1,
                   rtol=1e-5, atol=1e-7)
    with pytest.raises(Exception, match="sum to"):
        run_op("SoftmaxWithLoss", [x, label * 2], n_outputs=2, label_prob=1)


def test_softmax_with_loss_float32_and_gradient_op_layout():
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    label = np.array([2, 0], np.int32)
    p, loss = run_op("SoftmaxWithLoss", [x, label], n_outputs=2)
    assert p.dtype == np.float32 and loss.dtype == np.float32
    op = make_op("SoftmaxWithLoss", ["X", "L", "W"], ["P", "loss"], scale=2.0)
    ops, g_input = gradient_ops_for(op, [None, "loss_grad"])
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [
        ("SoftmaxWithLossGradient", ["X", "L", "W", "P", "loss_grad"], ["X_grad"])]
    assert g_input == ["X_grad", None, None]
    assert [a.name for a in ops[0].arg] == ["scale"]


def test_softmax_with_loss_zero_weights_give_zero_loss():
    x = RNG.standard_normal((2, 3))
    _, loss = run_op("SoftmaxWithLoss", [x, np.array([0, 1], np.int32), np.zeros(2)], n_outputs=2)
    assert float(loss) == 0.0


def test_softmax_with_loss_bad_label():
    with pytest.raises(Exception, match=r"label 5 at row 1 is out of range.*'in1'"):
        run_op("SoftmaxWithLoss", [np.zeros((2, 3), np.float32), np.array([0, 5], np.int32)], n_outputs=2)


# ---------------------------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------------------------
def accuracy_loop(pred, label, k):
    correct = 0
    for i, row in enumerate(pred):
        rank = 1 + sum(1 for j, v in enumerate(row) if v > row[label[i]] or (v == row[label[i]] and j < label[i]))
        correct += rank <= k
    return correct / len(pred)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_accuracy(top_k):
    pred = RNG.integers(0, 4, (50, 5)).astype(np.float32)   # many ties
    label = RNG.integers(0, 5, 50).astype(np.int32)
    (acc,) = check_infer("Accuracy", [pred, label], top_k=top_k)
    assert acc.shape == () and acc.dtype == np.float32
    assert float(acc) == pytest.approx(accuracy_loop(pred, label, top_k))


def test_accuracy_ties_go_to_lower_index():
    pred = np.array([[0.5, 0.5], [0.5, 0.5]], np.float32)
    (acc,) = run_op("Accuracy", [pred, np.array([0, 1], np.int32)])
    assert float(acc) == 0.5


def test_accuracy_has_no_gradient():
    with pytest.raises(ValueError, match="Accuracy is a metric"):
        gradient_ops_for(make_op("Accuracy", ["p", "l"], ["a"]), ["a_grad"])
