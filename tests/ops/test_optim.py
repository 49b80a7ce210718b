"""Optimizer ops (compiler/ops/optim.py and training.py's updates): references against their formulas
written out in numpy here, shape inference, gradients, and the compiled kernels against the references
over several in-place runs."""
import threading

import numpy as np
import pytest

from netjit.compiler.ops.registry import lookup
from netjit.proto.args import make_op
from netjit.runtime.workspace import Workspace
from netjit.compiler.reference import run_operator_once
from tests.compiler.helpers import assert_same_blobs, netdef, op, plan_of, run_compiled, run_reference, step_kinds
from tests.ops.harness import check_gradient, check_infer

RNG = np.random.default_rng(11)
F32 = np.float32


def _rand(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, size=shape).astype(F32)


# ---------------------------------------------------------------------------------------------
# References against the formulas
# ---------------------------------------------------------------------------------------------
def test_rms_prop_formula_and_inference():
    g, ms, mom = _rand(3, 4), _rand(3, 4, lo=0.0), _rand(3, 4)
    lr = np.array([0.5], F32)
    out = check_infer("RmsProp", [g, ms, mom, lr], 3, decay=0.8, momentum=0.3, epsilon=1e-4)
    new_ms = ms + F32(0.2) * (g * g - ms)
    new_mom = mom * F32(0.3) + F32(0.5) * g / np.sqrt(F32(1e-4) + new_ms)
    np.testing.assert_allclose(out[1], new_ms, rtol=1e-6)
    np.testing.assert_allclose(out[2], new_mom, rtol=1e-6)
    np.testing.assert_array_equal(out[0], out[2])


def _ftrl_numpy(w, nz, g, alpha, beta, l1, l2):
    w, g = w.astype(np.float64).ravel(), g.astype(np.float64).ravel()
    n, z = nz.astype(np.float64).reshape(-1, 2).T
    new_n = n + g * g
    sigma = (np.sqrt(new_n) - np.sqrt(n)) / alpha
    new_z = z + g - sigma * w
    new_w = np.where(np.abs(new_z) > l1, (l1 * np.sign(new_z) - new_z) / ((beta + np.sqrt(new_n)) / alpha + l2), 0)
    return new_w, np.stack([new_n, new_z], 1).ravel()


@pytest.mark.parametrize("alpha_input", [False, True])
def test_ftrl_formula(alpha_input):
    w, g = _rand(5, 3), _rand(5, 3)
    nz = np.stack([_rand(5, 3, lo=0.0, hi=2.0), _rand(5, 3)], -1)
    args = dict(alpha=0.1, beta=1.0, lambda1=0.05, lambda2=0.01)
    inputs = [w, nz, g] + ([np.array([0.2], F32)] if alpha_input else [])
    new_w, new_nz = check_infer("Ftrl", inputs, 2, **args)
    want_w, want_nz = _ftrl_numpy(w, nz, g, 0.2 if alpha_input else 0.1, 1.0, 0.05, 0.01)
    np.testing.assert_allclose(new_w.ravel(), want_w, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(new_nz.ravel(), want_nz, rtol=2e-5, atol=1e-6)
    assert (new_w == 0).any() and (new_w != 0).any()   # both branches of the proximal step ran


def test_ftrl_nz_size_error_names_blob():
    with pytest.raises(Exception, match="2 values per weight") as err:
        check_infer("Ftrl", [_rand(4), _rand(4), _rand(4)], 2)
    assert "in1" in str(err.value)


@pytest.mark.parametrize("p,average", [(1, False), (2, False), (2, True), (1, True)])
def test_lp_norm_and_gradient(p, average):
    x = _rand(4, 5)
    (n,) = check_infer("LpNorm", [x], p=p, average=average)
    want = (np.abs(x.astype(np.float64)).sum() if p == 1 else (x.astype(np.float64) ** 2).sum())
    want /= x.size if average else 1
    np.testing.assert_allclose(n, [want], rtol=1e-6)
    check_gradient("LpNorm", [x], p=p, average=average)


def test_lp_norm_rejects_p3():
    with pytest.raises(Exception, match="p = 1 or 2"):
        lookup("LpNorm").check(make_op("LpNorm", ["x"], ["y"], p=3))


@pytest.mark.parametrize("norm,extra,scaled", [(4.0, None, True), (0.5, None, False), (4.0, 2.0, True),
                                               (4.0, 5.0, False)])
def test_clip_tensor_by_scaling(norm, extra, scaled):
    x = _rand(3, 4)
    inputs = [x, np.array([norm], F32)] + ([np.array([extra], F32)] if extra else [])
    (y,) = check_infer("ClipTensorByScaling", inputs, threshold=1.0)
    thr = 1.0 * (extra or 1.0)
    np.testing.assert_allclose(y, x * (thr / norm) if scaled else x, rtol=1e-6)


def test_half_float_round_trip_and_gradients():
    x = _rand(6)
    (h,) = check_infer("FloatToHalf", [x])
    assert h.dtype == np.float16
    (f,) = check_infer("HalfToFloat", [h])
    np.testing.assert_array_equal(f, x.astype(np.float16).astype(F32))
    grad_ops = __import__("netjit.compiler.ops.gradients", fromlist=["x"]).gradient_ops_for(
        make_op("HalfToFloat", ["h"], ["f"]), ["f_grad"])[0]
    assert [o.type for o in grad_ops] == ["FloatToHalf"]


def test_atomic_iter_counts_under_its_mutex():
    ws = Workspace("t")
    run_operator_once(make_op("CreateMutex", [], ["mu"]), ws)
    mutex = ws.fetch("mu")
    assert hasattr(mutex, "acquire")
    ws.feed("it", np.zeros(1, np.int64))
    step = make_op("AtomicIter", ["mu", "it"], ["it"])
    threads = [threading.Thread(target=lambda: [run_operator_once(step, ws) for _ in range(50)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ws.fetch("it")[0] == 200
    ws.feed("nomutex", np.zeros(1, F32))
    with pytest.raises(Exception, match="mutex made by CreateMutex"):
        run_operator_once(make_op("AtomicIter", ["nomutex", "it"], ["it"]), ws)


# ---------------------------------------------------------------------------------------------
# Compiled kernels against the references, several in-place runs
# ---------------------------------------------------------------------------------------------
def _state(n=37):
    return {"w": _rand(n), "g": _rand(n), "m": _rand(n), "v": _rand(n, lo=0.0), "lr": np.array(-0.05, F32),
            "it": np.array([3], np.int64), "nz": np.abs(_rand(n, 2)), "one": np.array([1.0], F32)}


CASES = {
    "MomentumSGD": [op("MomentumSGD", ["g", "m", "lr"], ["g", "m"], momentum=0.9, nesterov=1)],
    "MomentumSGDUpdate": [op("MomentumSGDUpdate", ["g", "m", "lr", "w"], ["g", "m", "w"], momentum=0.9)],
    "MomentumSGDUpdate-nesterov": [op("MomentumSGDUpdate", ["g", "m", "lr", "w"], ["g", "m", "w"], momentum=0.5,
                                      nesterov=1)],
    "Adagrad": [op("Adagrad", ["w", "v", "g", "lr"], ["w", "v"], epsilon=1e-4, decay=0.95)],
    "Adam": [op("Adam", ["w", "m", "v", "g", "lr", "it"], ["w", "m", "v"], beta1=0.8)],
    "Adam-step": [op("Adam", ["w", "m", "v", "g", "lr", "it"], ["w", "m", "v", "step"])],
    "RmsProp": [op("RmsProp", ["g", "v", "m", "one"], ["g_o", "v", "m"], momentum=0.5),
                op("MomentumSGDUpdate", ["g_o", "m", "lr", "w"], ["g_o", "m", "w"])],
    "Ftrl": [op("Ftrl", ["w", "nz", "g"], ["w", "nz"], alpha=0.1, beta=1.0, lambda1=0.001, lambda2=0.01)],
    "LpNorm+Clip": [op("LpNorm", ["g"], ["g_l2"], p=2), op("Pow", ["g_l2"], ["g_norm"], exponent=0.5),
                    op("ClipTensorByScaling", ["g", "g_norm"], ["g"], threshold=0.5),
                    op("LpNorm", ["w"], ["w_l1"], p=1, average=1)],
    "LpNormGradient": [op("LpNormGradient", ["w", "lr"], ["dw1"], p=1, average=1),
                       op("LpNormGradient", ["w", "one"], ["dw2"], p=2)],
}


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_updates_match_reference(name):
    net = netdef(f"opt_{name}", CASES[name], external_input=list(_state()))
    feeds = _state()
    ref = run_reference(net, feeds, runs=3)
    got, runner = run_compiled(net, feeds, runs=3)
    assert_same_blobs(ref, got, rtol=2e-6, atol=1e-7)
    # Every op ran as a compiled kernel, none as its numpy reference.
    assert set(step_kinds(plan_of(runner))) == {"kernel"}


def test_clip_float64_fails_on_both_executors():
    from netjit.runtime.errors import NetJitError
    net = netdef("clip64", [op("ClipTensorByScaling", ["x", "n"], ["y"], threshold=1.0)], external_input=["x", "n"])
    feeds = {"x": np.ones(4), "n": np.array([2.0])}
    with pytest.raises(NetJitError, match="float32"):
        run_reference(net, feeds)
    with pytest.raises(NetJitError, match="float32"):
        run_compiled(net, feeds)
