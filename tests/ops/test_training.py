"""Training ops: Iter, every LearningRate policy against hand-computed values, WeightedSum and its
gradient, and the optimizer updates against their formulas."""
import math

import numpy as np
import pytest

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.compiler.ops.registry import TensorType, lookup
from netjit.compiler.reference import run_operator_once
from netjit.proto.args import make_op
from netjit.runtime.workspace import Workspace
from tests.ops.harness import check_gradient, check_infer, run_op

RNG = np.random.default_rng(3)


# ---------------------------------------------------------------------------------------------
# Iter
# ---------------------------------------------------------------------------------------------
def test_iter_in_place_counts_and_keeps_input_array():
    ws = Workspace("t")
    start = np.zeros(1, np.int64)
    ws.feed("it", start)
    op = make_op("Iter", ["it"], ["it"])
    for expect in (1, 2, 3):
        run_operator_once(op, ws)
        got = ws.fetch("it")
        assert got.dtype == np.int64 and got.shape == (1,) and got[0] == expect
    assert start[0] == 0  # the fed array was not written through
    opdef = lookup("Iter")
    args = opdef.decode_args(op)
    assert opdef.infer(args, [TensorType((1,), np.dtype(np.int64))]) == [TensorType((1,), np.dtype(np.int64))]
    assert opdef.infer(opdef.decode_args(make_op("Iter", [], ["it"])), []) == [TensorType((1,), np.dtype(np.int64))]


def test_iter_without_input_starts_from_zero():
    ws = Workspace("t")
    op = make_op("Iter", [], ["it"])
    run_operator_once(op, ws)
    np.testing.assert_array_equal(ws.fetch("it"), np.array([1], np.int64))
    run_operator_once(op, ws)
    assert ws.fetch("it")[0] == 2


@pytest.mark.parametrize("value,match", [
    (np.array([1], np.int16), "int64 tensor with one element"),   # int32 is accepted, as in Caffe2
    (np.array([1, 2], np.int64), "int64 tensor with one element"),
    (np.array([-1], np.int64), "negative"),
])
def test_iter_bad_counter(value, match):
    ws = Workspace("t")
    ws.feed("it", value)
    with pytest.raises(Exception, match=match):
        run_operator_once(make_op("Iter", ["it"], ["it"]), ws)


def test_iter_must_be_in_place():
    with pytest.raises(Exception, match="must be the same blob"):
        run_op("Iter", [np.zeros(1, np.int64)])


def test_iter_and_lr_have_no_gradient():
    assert gradient_ops_for(make_op("Iter", ["i"], ["i"]), ["i_grad"]) == ([], [None])
    op = make_op("LearningRate", ["i"], ["lr"], base_lr=0.1, policy="fixed")
    assert gradient_ops_for(op, ["lr_grad"]) == ([], [None])


# ---------------------------------------------------------------------------------------------
# LearningRate
# ---------------------------------------------------------------------------------------------
def lr(it, **kw):
    (out,) = check_infer("LearningRate", [np.array([it], np.int64)], **kw)
    assert out.shape == () and out.dtype == np.float32
    return float(out)


# (policy args, [(iter, hand-computed multiplier)]) with base_lr = -0.5.
POLICIES = [
    ({"policy": "fixed"}, [(0, 1.0), (1000, 1.0)]),
    ({"policy": "step", "stepsize": 10, "gamma": 0.5}, [(0, 1.0), (9, 1.0), (10, 0.5), (25, 0.25)]),
    ({"policy": "exp", "gamma": 0.9}, [(0, 1.0), (1, 0.9), (3, 0.729)]),
    ({"policy": "inv", "gamma": 0.1, "power": 2.0}, [(0, 1.0), (10, 0.25), (30, 1 / 16)]),
    ({"policy": "poly", "max_iter": 100, "power": 2.0}, [(0, 1.0), (50, 0.25), (90, 0.01)]),
    ({"policy": "linearWarmup", "start_multiplier": 0.2, "num_iter": 4},
     [(0, 0.2), (1, 0.4), (3, 0.8), (4, 1.0), (100, 1.0)]),
    ({"policy": "constantWarmup", "multiplier": 0.1, "num_iter": 3}, [(0, 0.1), (2, 0.1), (3, 1.0)]),
    ({"policy": "constantWarmup", "num_iter": 2}, [(1, 0.5), (2, 1.0)]),   # multiplier defaults to 0.5
    ({"policy": "alter", "active_period": 2, "inactive_period": 3},
     [(0, 1.0), (1, 1.0), (2, 0.0), (4, 0.0), (5, 1.0), (7, 0.0)]),
    ({"policy": "alter", "active_period": 2, "inactive_period": 3, "active_first": 0},
     [(0, 0.0), (2, 0.0), (3, 1.0), (4, 1.0), (5, 0.0)]),
    ({"policy": "hill", "num_iter": 4, "start_multiplier": 0.2, "gamma": 1.0, "power": 1.0,
      "end_multiplier": 0.3}, [(0, 0.2), (2, 0.6), (4, 1.0), (5, 0.5), (6, 1 / 3), (20, 0.3)]),
]


@pytest.mark.parametrize("kw,points", POLICIES, ids=[p[0]["policy"] for p in POLICIES])
def test_learning_rate_policies(kw, points):
    for it, mult in points:
        assert lr(it, base_lr=-0.5, **kw) == pytest.approx(-0.5 * mult, rel=1e-6, abs=1e-7), (it, mult)


def test_poly_default_max_iter_is_unsigned():
    # Caffe2 stores max_iter unsigned: the default -1 makes the multiplier ~1 forever.
    assert lr(10**6, base_lr=1.0, policy="poly", power=1.0) == pytest.approx(1.0)


@pytest.mark.parametrize("kw,match", [
    ({"base_lr": 0.1, "policy": "multistep"}, "unknown learning rate policy 'multistep'"),
    ({"base_lr": 0.1, "policy": "step"}, "stepsize > 0"),
    ({"base_lr": 0.1, "policy": "alter"}, "active_period"),
    ({"policy": "fixed"}, "'base_lr' is required"),
    ({"base_lr": 0.1}, "'policy' is required"),
    ({"base_lr": 1, "policy": "fixed"}, "'base_lr' must be a float"),
])
def test_learning_rate_errors(kw, match):
    with pytest.raises(Exception, match=match):
        run_op("LearningRate", [np.array([0], np.int64)], **kw)


def test_learning_rate_needs_int64_iter():
    with pytest.raises(Exception, match=r"int64 tensor with one element.*'in0'"):
        run_op("LearningRate", [np.array([0], np.float32)], base_lr=0.1, policy="fixed")


# ---------------------------------------------------------------------------------------------
# WeightedSum
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4,), (2, 3), (2, 1, 3)])
@pytest.mark.parametrize("pairs", [1, 2, 3])
def test_weighted_sum(shape, pairs):
    xs = [RNG.standard_normal(shape) for _ in range(pairs)]
    ws = [RNG.standard_normal(1) for _ in range(pairs)]
    inputs = [v for pair in zip(xs, ws) for v in pair]
    (y,) = check_infer("WeightedSum", inputs)
    np.testing.assert_allclose(y, sum(w[0] * x for x, w in zip(xs, ws)), rtol=1e-12)
    x_idx = list(range(0, 2 * pairs, 2))
    check_gradient("WeightedSum", inputs, wrt=x_idx, rtol=1e-7, atol=1e-9)
    check_gradient("WeightedSum", inputs, grad_on_w=1, rtol=1e-7, atol=1e-9)
    check_infer("WeightedSumGradient", [y] + inputs, n_outputs=pairs)
    check_infer("WeightedSumGradient", [y] + inputs, n_outputs=2 * pairs, grad_on_w=1)


def test_weighted_sum_sizes_not_shapes_and_float32():
    x0 = np.ones((2, 3), np.float32)
    x1 = np.arange(6, dtype=np.float32)
    (y,) = run_op("WeightedSum", [x0, np.array([2.0], np.float32), x1, np.array([0.5], np.float32)])
    assert y.dtype == np.float32 and y.shape == (2, 3)
    np.testing.assert_allclose(y.reshape(-1), 2 + 0.5 * np.arange(6))


def test_weighted_sum_gradient_layout():
    op = make_op("WeightedSum", ["a", "wa", "b", "wb"], ["y"], grad_on_w=1)
    ops, g_input = gradient_ops_for(op, ["y_grad"])
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [
        ("WeightedSumGradient", ["y_grad", "a", "wa", "b", "wb"], ["a_grad", "b_grad", "wa_grad", "wb_grad"])]
    assert g_input == ["a_grad", "wa_grad", "b_grad", "wb_grad"]
    ops, g_input = gradient_ops_for(make_op("WeightedSum", ["a", "wa"], ["a"]), ["a_grad"])
    assert list(ops[0].output) == ["a_grad"] and g_input == ["a_grad", None]


@pytest.mark.parametrize("inputs,match", [
    ([np.ones(2), np.ones(1), np.ones(3)], "even count"),
    ([np.ones(2), np.ones(2)], r"weight input 1 must hold one element.*'in1'"),
    ([np.ones(2), np.ones(1), np.ones(3), np.ones(1)], r"X1 has 3 elements but X0 has 2.*'in2'"),
])
def test_weighted_sum_errors(inputs, match):
    with pytest.raises(Exception, match=match):
        run_op("WeightedSum", inputs)


def test_weighted_sum_in_place_only_on_first_input():
    ws = Workspace("t")
    for name in ("a", "b", "w"):
        ws.feed(name, np.ones(1, np.float32))
    with pytest.raises(Exception, match="does not allow in place"):
        run_operator_once(make_op("WeightedSum", ["a", "w", "b", "w"], ["b"]), ws)


# ---------------------------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nesterov", [0, 1])
def test_momentum_sgd_update(nesterov):
    g, m, p = (RNG.standard_normal(5).astype(np.float32) for _ in range(3))
    lr_, mu = np.array([0.1], np.float32), 0.9
    ng, nm, np_ = check_infer("MomentumSGDUpdate", [g, m, lr_, p], n_outputs=3, momentum=mu, nesterov=nesterov)
    for i in range(5):
        if nesterov:
            m_new = mu * m[i] + 0.1 * g[i]
            g_new = (1 + mu) * m_new - mu * m[i]
        else:
            m_new = g_new = 0.1 * g[i] + mu * m[i]
        assert nm[i] == pytest.approx(m_new, rel=1e-5) and ng[i] == pytest.approx(g_new, rel=1e-5, abs=1e-6)
        assert np_[i] == pytest.approx(p[i] - g_new, rel=1e-5, abs=1e-6)
    g2, m2 = check_infer("MomentumSGD", [g, m, lr_], n_outputs=2, momentum=mu, nesterov=nesterov)
    np.testing.assert_array_equal(g2, ng)
    np.testing.assert_array_equal(m2, nm)
    with pytest.raises(ValueError, match="optimizer"):
        gradient_ops_for(make_op("MomentumSGDUpdate", ["g", "m", "lr", "p"], ["g", "m", "p"]), ["x", None, None])


def test_adagrad():
    p, h, g = RNG.standard_normal(6), RNG.uniform(0, 1, 6), RNG.standard_normal(6)
    p, h, g = (a.astype(np.float32) for a in (p, h, g))
    lr_ = np.array([-0.01], np.float32)
    np_, nh = check_infer("Adagrad", [p, h, g, lr_], n_outputs=2, epsilon=1e-4, decay=0.9)
    for i in range(6):
        h_new = 0.9 * h[i] + g[i] ** 2
        assert nh[i] == pytest.approx(h_new, rel=1e-5)
        assert np_[i] == pytest.approx(p[i] - 0.01 * g[i] / (math.sqrt(h_new) + 1e-4), rel=1e-5)


@pytest.mark.parametrize("n_out", [3, 4])
def test_adam(n_out):
    p, m, v, g = RNG.standard_normal(4), RNG.standard_normal(4), RNG.uniform(0, 1, 4), RNG.standard_normal(4)
    p, m, v, g = (a.astype(np.float32) for a in (p, m, v, g))
    lr_, it = np.array([-0.001], np.float32), np.array([9], np.int64)
    outs = check_infer("Adam", [p, m, v, g, lr_, it], n_outputs=n_out, beta1=0.8, beta2=0.99, epsilon=1e-6)
    t = 10
    corr = math.sqrt(1 - 0.99 ** t) / (1 - 0.8 ** t)
    for i in range(4):
        m_new = 0.8 * m[i] + 0.2 * g[i]
        v_new = 0.99 * v[i] + 0.01 * g[i] ** 2
        step = corr * m_new / (math.sqrt(v_new) + 1e-6)
        assert outs[1][i] == pytest.approx(m_new, rel=1e-5, abs=1e-6)
        assert outs[2][i] == pytest.approx(v_new, rel=1e-5)
        assert outs[0][i] == pytest.approx(p[i] - 0.001 * step, rel=1e-5, abs=1e-6)
        if n_out == 4:
            assert outs[3][i] == pytest.approx(step, rel=1e-5, abs=1e-6)


def test_optimizer_size_mismatch_names_blob():
    with pytest.raises(Exception, match=r"input 2 has 3 elements.*'in2'"):
        run_op("Adagrad", [np.ones(2), np.ones(2), np.ones(3), np.ones(1)], n_outputs=2)


# ---------------------------------------------------------------------------------------------
# The ops together: softmax regression trained on real MNIST digits
# ---------------------------------------------------------------------------------------------
def _mnist(n):
    import gzip

    from tests.conftest import shared_path
    folder = shared_path("data", "mnist")
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)[:n]
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return (images / np.float32(256)).astype(np.float32), labels.astype(np.int32)


def test_softmax_regression_learns_mnist():
    """Fillers, FC, SoftmaxWithLoss, Accuracy, the gradient ops, Iter, LearningRate and WeightedSum
    wired as the tutorials wire them; the first 2,000 test-set digits train, the next 1,000 test."""
    from netjit.compiler.reference import build_reference_plan
    from netjit.proto import caffe2_pb2
    from netjit.runtime.executor import execute

    images, labels = _mnist(3000)
    ws = Workspace("mnist")
    init = caffe2_pb2.NetDef(name="init")
    init.op.extend([
        make_op("XavierFill", [], ["W"], shape=[10, 784], device_option=caffe2_pb2.DeviceOption(random_seed=1)),
        make_op("ConstantFill", [], ["b"], shape=[10], value=0.0),
        make_op("ConstantFill", [], ["ITER"], shape=[1], value=0, dtype=caffe2_pb2.TensorProto.INT64),
        make_op("ConstantFill", [], ["ONE"], shape=[1], value=1.0),
    ])
    execute(build_reference_plan(init, ws), ws)

    fc = make_op("FC", ["X", "W", "b"], ["logits"])
    swl = make_op("SoftmaxWithLoss", ["logits", "label"], ["P", "loss"])
    train = caffe2_pb2.NetDef(name="train")
    train.op.extend([fc, swl, make_op("Accuracy", ["P", "label"], ["acc"]),
                     make_op("ConstantFill", ["loss"], ["loss_grad"], value=1.0)])
    train.op.extend(gradient_ops_for(swl, [None, "loss_grad"])[0])
    train.op.extend(gradient_ops_for(fc, ["logits_grad"])[0])
    train.op.extend([
        make_op("Iter", ["ITER"], ["ITER"]),
        make_op("LearningRate", ["ITER"], ["LR"], base_lr=-0.5, policy="step", stepsize=100, gamma=0.5),
        make_op("WeightedSum", ["W", "ONE", "W_grad", "LR"], ["W"]),
        make_op("WeightedSum", ["b", "ONE", "b_grad", "LR"], ["b"]),
    ])
    ws.feed("X", images[:64])
    ws.feed("label", labels[:64])
    plan = build_reference_plan(train, ws)
    losses = []
    for step in range(200):
        lo = (step * 64) % 2000
        ws.feed("X", images[lo:lo + 64])
        ws.feed("label", labels[lo:lo + 64])
        execute(plan, ws)
        losses.append(float(ws.fetch("loss")))
    assert ws.fetch("ITER")[0] == 200
    assert float(ws.fetch("LR")) == pytest.approx(-0.5 * 0.5 ** 2)
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:5])

    test = caffe2_pb2.NetDef(name="test")
    test.op.extend([fc, swl, make_op("Accuracy", ["P", "label"], ["acc"])])
    ws.feed("X", images[2000:])
    ws.feed("label", labels[2000:])
    execute(build_reference_plan(test, ws), ws)
    assert float(ws.fetch("acc")) > 0.8   # about 0.89 with these settings
