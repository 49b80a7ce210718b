"""SigmoidCrossEntropyWithLogits (plain, log-D trick, unjoined), its weighted form, and
SpatialSoftmaxWithLoss: per-element formulas checked by hand, inference vs actual, Caffe2's
gradient makers, and finite-difference gradient checks."""
import math

import numpy as np
import pytest

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.proto.args import make_op
from netjit.runtime.errors import NetJitError
from tests.ops.harness import check_gradient, check_infer, run_op


def _sig(v):
    return 1 / (1 + math.exp(-v))


def _xent(x, t):
    return -(t * math.log(_sig(x)) + (1 - t) * math.log(1 - _sig(x)))


def test_sigmoid_xent_hand_checked():
    x = np.array([[0.0, 2.0], [-1.0, 3.0]], np.float32)
    t = np.array([[1.0, 0.0], [0.5, 1.0]], np.float32)
    (loss,) = check_infer("SigmoidCrossEntropyWithLogits", [x, t])
    # Row 0: ln 2 and 2 + ln(1 + e^-2); the op averages over the last dim.
    want = [(math.log(2) + 2 + math.log(1 + math.exp(-2))) / 2, (_xent(-1, 0.5) + _xent(3, 1)) / 2]
    assert loss.dtype == np.float32 and loss.shape == (2,)
    np.testing.assert_allclose(loss, want, rtol=1e-6)


def test_sigmoid_xent_log_d_trick_and_unjoined():
    x, t = np.array([[1.5, -0.5]]), np.array([[1.0, 0.0]])
    (d,) = run_op("SigmoidCrossEntropyWithLogits", [x, t], log_D_trick=1)
    # (2t - 1)(x - ln(1 + e^x)) = (2t - 1) ln σ(x), negated and averaged.
    np.testing.assert_allclose(d, [-(math.log(_sig(1.5)) - math.log(_sig(-0.5))) / 2], rtol=1e-12)
    (u,) = run_op("SigmoidCrossEntropyWithLogits", [x, t], unjoined_lr_loss=1)
    # t = 1: x·t + 0 − 0 = 1.5 for x ≥ 0; t = 0: −ln(1 + e^x) for x < 0.
    np.testing.assert_allclose(u, [-(1.5 - math.log(1 + math.exp(-0.5))) / 2], rtol=1e-12)
    with pytest.raises(NetJitError, match="cannot both be set"):
        run_op("SigmoidCrossEntropyWithLogits", [x, t], log_D_trick=1, unjoined_lr_loss=1)


def test_sigmoid_xent_extreme_logits_stay_finite():
    x = np.array([-500.0, 500.0], np.float32)
    with np.errstate(over="raise", invalid="raise"):
        (loss,) = run_op("SigmoidCrossEntropyWithLogits", [x, np.array([0.0, 1.0], np.float32)])
    assert loss.shape == () and loss == 0.0
    (loss,) = run_op("SigmoidCrossEntropyWithLogits", [x, np.array([1.0, 0.0], np.float32)])
    assert loss == 500.0


@pytest.mark.parametrize("shape", [(), (4,), (3, 4), (2, 2, 3)])
@pytest.mark.parametrize("args", [{}, {"log_D_trick": 1}, {"unjoined_lr_loss": 1}])
def test_sigmoid_xent_gradient(shape, args):
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal(shape) * 2, rng.random(shape)
    check_infer("SigmoidCrossEntropyWithLogits", [x, t], **args)
    check_gradient("SigmoidCrossEntropyWithLogits", [x, t], wrt=[0], eps=1e-6, rtol=1e-5, atol=1e-8, **args)


def test_weighted_sigmoid_xent():
    rng = np.random.default_rng(2)
    x, t, w = rng.standard_normal((3, 4)), rng.random((3, 4)), rng.random((3, 4))
    (loss,) = check_infer("WeightedSigmoidCrossEntropyWithLogits", [x, t, w])
    want = [-sum(-_xent(x[i, j], t[i, j]) * w[i, j] for j in range(4)) / 4 for i in range(3)]
    np.testing.assert_allclose(loss, want, rtol=1e-10)
    check_gradient("WeightedSigmoidCrossEntropyWithLogits", [x, t, w], wrt=[0], eps=1e-6, rtol=1e-5, atol=1e-8)
    with pytest.raises(NetJitError, match=r"input 2 has shape \[3\].*'in2'"):
        run_op("WeightedSigmoidCrossEntropyWithLogits", [x, t, w[:, 0]])


@pytest.mark.parametrize("name,n_in", [("SigmoidCrossEntropyWithLogits", 2), ("WeightedSigmoidCrossEntropyWithLogits", 3)])
def test_sigmoid_xent_gradient_maker(name, n_in):
    ins = ["X", "T", "W"][:n_in]
    ops, g = gradient_ops_for(make_op(name, ins, ["L"]), ["L_grad"])
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [(name + "Gradient", ["L_grad"] + ins, ["X_grad"])]
    assert g == ["X_grad"] + [None] * (n_in - 1)


# --------------------------------------------------------------------------------------------
# SpatialSoftmaxWithLoss
# --------------------------------------------------------------------------------------------
def _case(seed=3, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((2, 3, 2, 3)) * 2).astype(dtype)
    label = rng.integers(0, 3, (2, 2, 3)).astype(np.int32)
    label[0, 1, 2] = label[1, 0, 0] = -1   # ignored pixels
    return x, label


def _loop_loss(x, label, w=None):
    """An independent per-pixel loop over (n, y, x), as Caffe2's kernel is written."""
    total = wsum = 0.0
    n, c, h, wd = x.shape
    for i in range(n):
        for yy in range(h):
            for xx in range(wd):
                lab = label[i, yy, xx]
                if lab == -1:
                    continue
                col = [math.exp(x[i, k, yy, xx]) for k in range(c)]
                weight = 1.0 if w is None else w[i, yy, xx]
                total += -math.log(col[lab] / sum(col)) * weight
                wsum += weight
    return total / wsum if wsum else 0.0


def test_spatial_softmax_with_loss_values():
    x, label = _case()
    p, loss = check_infer("SpatialSoftmaxWithLoss", [x, label], n_outputs=2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(loss, _loop_loss(x, label), rtol=1e-12)
    w = np.random.default_rng(4).random((2, 2, 3))
    _, lw = check_infer("SpatialSoftmaxWithLoss", [x, label, w], n_outputs=2)
    np.testing.assert_allclose(lw, _loop_loss(x, label, w), rtol=1e-12)
    # Every pixel ignored: the loss is 0, as in Caffe2.
    _, l0 = run_op("SpatialSoftmaxWithLoss", [x, np.full_like(label, -1)], n_outputs=2)
    assert l0 == 0.0


@pytest.mark.parametrize("weighted", [False, True])
def test_spatial_softmax_with_loss_gradient(weighted):
    x, label = _case(seed=5)
    ins = [x, label] + ([np.random.default_rng(6).random((2, 2, 3))] if weighted else [])
    dx = check_gradient("SpatialSoftmaxWithLoss", ins, n_outputs=2, wrt=[0], grad_outputs=[1],
                        eps=1e-6, rtol=1e-5, atol=1e-8)[0]
    assert np.all(dx[0, :, 1, 2] == 0)   # an ignored pixel gets no gradient
    names = ["X", "L", "W"][:len(ins)]
    ops, g = gradient_ops_for(make_op("SpatialSoftmaxWithLoss", names, ["P", "loss"]), [None, "loss_grad"])
    want_in = ["X", "L"] + (["W"] if weighted else []) + ["P", "loss_grad"]
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == \
        [("SpatialSoftmaxWithLossGradient", want_in, ["X_grad"])]


def test_spatial_softmax_with_loss_errors():
    x, label = _case()
    with pytest.raises(NetJitError, match=r"label 3 at \[0, 0, 0\] is out of range.*'in1'"):
        bad = label.copy()
        bad[0, 0, 0] = 3
        run_op("SpatialSoftmaxWithLoss", [x, bad], n_outputs=2)
    with pytest.raises(NetJitError, match=r"labels must have shape \[2, 2, 3\]"):
        run_op("SpatialSoftmaxWithLoss", [x, label[:, :, :2]], n_outputs=2)
    with pytest.raises(NetJitError, match=r"4-D"):
        run_op("SpatialSoftmaxWithLoss", [x[0], label], n_outputs=2)


# --------------------------------------------------------------------------------------------
# The same ops through Caffe2's own test helpers (hypothesis_test_util)
# --------------------------------------------------------------------------------------------
import hypothesis.strategies as st  # noqa: E402
from hypothesis import given, settings  # noqa: E402

import caffe2.python.hypothesis_test_util as hu  # noqa: E402
from caffe2.python import core  # noqa: E402


class TestSigmoidXentHypothesis(hu.HypothesisTestCase):
    @given(X=hu.tensor(min_dim=1, max_dim=3), log_d=st.booleans(), **hu.gcs)
    @settings(max_examples=6)
    def test_reference_device_and_gradient(self, X, log_d, gc, dc):
        T = (np.abs(X[::-1]) if X.ndim == 1 else np.abs(X)).astype(np.float32)
        X = (X * 4).astype(np.float32)
        op = core.CreateOperator("SigmoidCrossEntropyWithLogits", ["X", "T"], ["L"], log_D_trick=int(log_d))

        def ref(X, T):
            x, t = X.astype(np.float64), T.astype(np.float64)
            ls = -np.logaddexp(0, -x)          # ln σ(x)
            term = (2 * t - 1) * ls if log_d else t * ls + (1 - t) * (ls - x)
            return (-term.mean(axis=-1),)

        self.assertReferenceChecks(gc, op, [X, T], ref)
        self.assertDeviceChecks(dc, op, [X, T], [0])
        self.assertGradientChecks(gc, op, [X, T], 0, [0], stepsize=0.01, threshold=0.01)
