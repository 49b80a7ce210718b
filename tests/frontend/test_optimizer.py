"""caffe2.python.optimizer: a small regression model trained with each optimizer, step for step against
a numpy implementation of the update rule (float64), on the compiled and the reference executor."""
import math
import re

import numpy as np
import pytest

from caffe2.python import brew, core, model_helper, optimizer, workspace
from netjit.gradient_clipping import GradientClipping

STEPS = 6
N, D_IN, D_OUT = 8, 3, 2


def _batches(seed=5):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((N, D_IN)).astype(np.float32), rng.standard_normal((N, D_OUT)).astype(np.float32))
            for _ in range(STEPS)]


def _model(name):
    model = model_helper.ModelHelper(name=name)
    pred = brew.fc(model, "X", "pred", dim_in=D_IN, dim_out=D_OUT)
    dist = model.SquaredL2Distance([pred, "T"], "dist")
    loss = model.AveragedLoss(dist, "loss")
    model.AddGradientOperators([loss])
    return model


def _grads(w, b, x, t):
    y = x @ w.T + b
    dy = (y - t) / len(x)
    return dy.T @ x, dy.sum(0), float(np.mean(0.5 * ((y - t) ** 2).sum(1)))


def _train(model, executor, monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", executor)
    workspace.ResetWorkspace()
    batches = _batches()
    workspace.FeedBlob("X", batches[0][0])
    workspace.FeedBlob("T", batches[0][1])
    workspace.RunNetOnce(model.param_init_net)
    workspace.CreateNet(model.net)
    start = (workspace.FetchBlob("pred_w").astype(np.float64), workspace.FetchBlob("pred_b").astype(np.float64))
    history = []
    for x, t in batches:
        workspace.FeedBlob("X", x)
        workspace.FeedBlob("T", t)
        workspace.RunNet(model.net.Proto().name)
        history.append((workspace.FetchBlob("pred_w").copy(), workspace.FetchBlob("pred_b").copy(),
                        float(workspace.FetchBlob("loss"))))
    return start, batches, history


def _check(start, batches, history, update, grad_hook=None):
    """Replay the training in numpy; ``update(name, p, g, state, k)`` returns the new p (k: 1-based
    iteration as the net's AtomicIter has counted it when the update runs)."""
    w, b = start
    states = {"w": {}, "b": {}}
    for k, ((x, t), (got_w, got_b, got_loss)) in enumerate(zip(batches, history), start=1):
        dw, db, loss = _grads(w, b, x.astype(np.float64), t.astype(np.float64))
        assert math.isclose(got_loss, loss, rel_tol=1e-4, abs_tol=1e-6), (k, got_loss, loss)
        if grad_hook is not None:
            dw, db = grad_hook(w, b, dw, db)
        w = update("w", w, dw, states["w"], k)
        b = update("b", b, db, states["b"], k)
        np.testing.assert_allclose(got_w, w, rtol=2e-4, atol=2e-5, err_msg=f"W after step {k}")
        np.testing.assert_allclose(got_b, b, rtol=2e-4, atol=2e-5, err_msg=f"b after step {k}")


EXECUTORS = ["compiled", "reference"]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_sgd_step_policy(executor, monkeypatch):
    model = _model("sgd")
    optimizer.build_sgd(model, base_learning_rate=0.2, policy="step", stepsize=2, gamma=0.5)
    types = [op.type for op in model.net.Proto().op]
    assert types[-4:] == ["AtomicIter", "LearningRate", "WeightedSum", "WeightedSum"]
    assert re.fullmatch(r"SgdOptimizer_\d+_lr_cpu", model.net.Proto().op[-3].output[0])

    def sgd(name, p, g, state, k):
        return p - 0.2 * 0.5 ** (k // 2) * g
    _check(*_train(model, executor, monkeypatch), sgd)


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("nesterov", [0, 1])
def test_momentum_sgd_with_weight_decay(executor, nesterov, monkeypatch):
    model = _model("momentum")
    optimizer.add_weight_decay(model, 0.01)
    opt = optimizer.build_sgd(model, base_learning_rate=0.1, momentum=0.9, nesterov=nesterov)
    assert [str(b) for b in opt.get_auxiliary_parameters().local] == ["pred_w_momentum", "pred_b_momentum"]

    def momentum(name, p, g, state, k):
        m = state.get("m", np.zeros_like(p))
        new_m = 0.9 * m + 0.1 * g
        state["m"] = new_m
        return p - ((1.9 * new_m - 0.9 * m) if nesterov else new_m)

    def decay(w, b, dw, db):   # weights only, biases untouched
        return dw + 0.01 * w, db
    _check(*_train(model, executor, monkeypatch), momentum, decay)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_adagrad_inv_policy(executor, monkeypatch):
    model = _model("adagrad")
    optimizer.build_adagrad(model, base_learning_rate=0.3, epsilon=1e-4, policy="inv", gamma=0.1, power=0.5)

    def adagrad(name, p, g, state, k):
        h = state.get("h", np.zeros_like(p)) + g * g
        state["h"] = h
        return p - 0.3 * (1 + 0.1 * k) ** -0.5 * g / (np.sqrt(h) + 1e-4)
    _check(*_train(model, executor, monkeypatch), adagrad)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_adam(executor, monkeypatch):
    model = _model("adam")
    opt = optimizer.build_adam(model, base_learning_rate=0.05, beta1=0.8, beta2=0.99, epsilon=1e-6)
    assert [str(b) for b in opt.get_auxiliary_parameters().shared] == ["optimizer_iteration"] * 2

    def adam(name, p, g, state, k):
        m = 0.8 * state.get("m", 0.0) + 0.2 * g
        v = 0.99 * state.get("v", 0.0) + 0.01 * g * g
        state.update(m=m, v=v)
        t = k + 1                     # Caffe2's Adam reads the counter after AtomicIter and adds 1
        corr = math.sqrt(1 - 0.99 ** t) / (1 - 0.8 ** t)
        return p - 0.05 * corr * m / (np.sqrt(v) + 1e-6)
    _check(*_train(model, executor, monkeypatch), adam)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_rms_prop(executor, monkeypatch):
    model = _model("rmsprop")
    optimizer.build_rms_prop(model, base_learning_rate=0.05, decay=0.9, momentum=0.5, epsilon=1e-5)

    def rms(name, p, g, state, k):
        ms = state.get("ms", np.zeros_like(p))
        ms = ms + 0.1 * (g * g - ms)
        mom = 0.5 * state.get("mom", np.zeros_like(p)) + g / np.sqrt(1e-5 + ms)
        # Caffe2's optimizer follows RmsProp with a plain MomentumSGDUpdate that writes lr·mom back
        # into the momentum blob; the next RmsProp reads that value.
        state.update(ms=ms, mom=0.05 * mom)
        return p - 0.05 * mom
    _check(*_train(model, executor, monkeypatch), rms)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_ftrl(executor, monkeypatch):
    model = _model("ftrl")
    optimizer.build_ftrl(model, engine="", alpha=0.5, beta=1.0, lambda1=0.001, lambda2=0.01)

    def ftrl(name, p, g, state, k):
        n, z = state.get("n", np.zeros_like(p)), state.get("z", np.zeros_like(p))
        new_n = n + g * g
        z = z + g - (np.sqrt(new_n) - np.sqrt(n)) / 0.5 * p
        state.update(n=new_n, z=z)
        return np.where(np.abs(z) > 0.001, (0.001 * np.sign(z) - z) / ((1.0 + np.sqrt(new_n)) / 0.5 + 0.01), 0.0)
    _check(*_train(model, executor, monkeypatch), ftrl)


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("via_lr", [False, True])
def test_sgd_with_global_norm_clipping(executor, via_lr, monkeypatch):
    model = _model("clip")
    optimizer.build_sgd(model, base_learning_rate=0.5, max_gradient_norm=0.3, clip_using_lr_multiplier=via_lr)

    def clip(w, b, dw, db):
        norm = math.sqrt((dw ** 2).sum() + (db ** 2).sum())
        ratio = 0.3 / max(norm, 0.3)
        return dw * ratio, db * ratio

    def sgd(name, p, g, state, k):
        return p - 0.5 * g
    _check(*_train(model, executor, monkeypatch), sgd, clip)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_gradient_clipping_modifier_by_norm(executor, monkeypatch):
    model = model_helper.ModelHelper(name="gc")
    pred = brew.fc(model, "X", "pred", dim_in=D_IN, dim_out=D_OUT)
    loss = model.AveragedLoss(model.SquaredL2Distance([pred, "T"], "dist"), "loss")
    grad_map = model.AddGradientOperators([loss])
    GradientClipping(grad_clip_method="by_norm", clip_norm_type="l2_norm", clip_threshold=0.2)(
        model.net, grad_map=grad_map, blob_to_device={})
    optimizer.build_sgd(model, base_learning_rate=0.5)

    def clip_each(w, b, dw, db):
        return tuple(g * min(1.0, 0.2 / np.sqrt((g ** 2).sum())) for g in (dw, db))

    def sgd(name, p, g, state, k):
        return p - 0.5 * g
    _check(*_train(model, executor, monkeypatch), sgd, clip_each)


def test_lr_injection_scales_the_step(monkeypatch):
    model = _model("inject")
    optimizer.build_sgd(model, base_learning_rate=0.1, allow_lr_injection=True)
    monkeypatch.setenv("NETJIT_EXECUTOR", "compiled")
    workspace.ResetWorkspace()
    x, t = _batches()[0]
    workspace.FeedBlob("X", x)
    workspace.FeedBlob("T", t)
    workspace.RunNetOnce(model.param_init_net)
    optimizer.set_lr_injection(0.0)
    w0 = workspace.FetchBlob("pred_w").copy()
    workspace.RunNetOnce(model.net)
    np.testing.assert_array_equal(workspace.FetchBlob("pred_w"), w0)   # a zero multiplier freezes training
    assert optimizer.get_lr_injection()[0] == 0.0


def test_multi_precision_sgd_updates_fp32_master_copy(monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", "compiled")
    workspace.ResetWorkspace()
    net, init = core.Net("mp"), core.Net("mp_init")
    init.GivenTensorFill([], "w32", shape=[4], values=[1.0, 2.0, 3.0, 4.0])
    init.FloatToHalf(["w32"], ["w"])
    workspace.FeedBlob("w_grad", np.array([0.5, -0.5, 1.0, 0.0], np.float16))

    class Model:   # the pieces of a model the optimizer reads, for a hand-built float16 parameter
        param_init_net, weights = init, []

        def __init__(self):
            self.net = net
            info = optimizer.ParameterInfo(param_id=None, param=core.BlobReference("w"), grad="w_grad")
            info.blob_copy = {core.DataType.FLOAT: "w32"}
            self.infos = [info]

        def Validate(self):
            pass

        def GetOptimizationParamInfo(self):
            return self.infos

    optimizer.build_multi_precision_sgd(Model(), base_learning_rate=0.1, momentum=0.0)
    assert [op.type for op in net.Proto().op][-3:] == ["HalfToFloat", "MomentumSGDUpdate", "FloatToHalf"]
    workspace.RunNetOnce(init)
    workspace.RunNetOnce(net)
    np.testing.assert_allclose(workspace.FetchBlob("w32"), [0.95, 2.05, 2.9, 4.0], rtol=1e-6)
    assert workspace.FetchBlob("w").dtype == np.float16


def test_sparse_gradient_is_refused_with_a_reason():
    opt = optimizer.AdagradOptimizer(alpha=0.1)
    with pytest.raises(ValueError, match="SparseAdagrad"):
        opt(core.Net("n"), core.Net("i"), "emb", core.GradientSlice("idx", "vals"))


def test_caffe2_module_names():
    from caffe2.python.modeling.gradient_clipping import GradientClipping as GC
    from caffe2.python.modeling.net_modifier import NetModifier
    assert GC is GradientClipping and issubclass(GC, NetModifier)
    with pytest.raises(ValueError, match="grad_clip_method"):
        GC(grad_clip_method="by_magic")


LR_POLICY_ARGS = {
    "fixed": {}, "step": {"stepsize": 2, "gamma": 0.5}, "exp": {"gamma": 0.9}, "inv": {"gamma": 0.1, "power": 0.5},
    "poly": {"power": 2, "max_iter": 10}, "linearWarmup": {"start_multiplier": 0.1, "num_iter": 4},
    "constantWarmup": {"multiplier": 0.3, "num_iter": 2},
    "alter": {"active_first": True, "active_period": 2, "inactive_period": 1},
    "hill": {"num_iter": 2, "start_multiplier": 0.2, "gamma": 0.1, "power": 1, "end_multiplier": 0.05},
}


def test_every_learning_rate_policy_reaches_the_lr_blob(monkeypatch):
    # The LR wiring, not the kernels (those are checked above): the reference executor is quicker here.
    monkeypatch.setenv("NETJIT_EXECUTOR", "reference")
    from netjit.compiler.ops.training import LR_POLICIES, learning_rate_value
    from netjit.compiler.ops.registry import lookup
    from netjit.proto.args import make_op
    assert set(LR_POLICY_ARGS) == set(LR_POLICIES)
    for policy, kwargs in LR_POLICY_ARGS.items():
        model = _model(f"lr_{policy}")
        opt = optimizer.build_sgd(model, base_learning_rate=0.2, policy=policy, **kwargs)
        lr_blob = opt.get_cpu_blob_name("lr")
        workspace.ResetWorkspace()
        x, t = _batches()[0]
        workspace.FeedBlob("X", x)
        workspace.FeedBlob("T", t)
        workspace.RunNetOnce(model.param_init_net)
        workspace.CreateNet(model.net)
        lr_op = next(op for op in model.net.Proto().op if op.type == "LearningRate")
        args = lookup("LearningRate").decode_args(make_op("LearningRate", ["i"], ["o"], **{
            a.name: (a.f if a.HasField("f") else a.i if a.HasField("i") else a.s.decode()) for a in lr_op.arg}))
        for k in range(1, 6):
            workspace.RunNet(model.net.Proto().name)
            assert float(workspace.FetchBlob(lr_blob)) == pytest.approx(float(learning_rate_value(args, k)),
                                                                        rel=1e-6), (policy, k)
        assert float(learning_rate_value(args, 1)) <= 0   # descent: the LR blob is negative
