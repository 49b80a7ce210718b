"""LRN, SpatialBN and Dropout: references vs independent loops/formulas (and torch when installed),
inference vs actual, gradients vs finite differences, gradient op naming, mode/argument errors."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from google.protobuf import text_format

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.compiler.ops.per_channel import per_channel_info
from netjit.compiler.ops.registry import TensorType, lookup
from netjit.compiler.reference import run_operator_once, run_ops
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_op
from netjit.runtime.workspace import Workspace
from tests.conftest import shared_path
from tests.ops.harness import check_gradient, check_infer, run_op

TIGHT = dict(rtol=1e-5, atol=1e-7)


def f32(v: float) -> float:
    """A float argument as the op sees it: Argument.f is a 32-bit float."""
    return float(np.float32(v))


def _nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


# --------------------------------------------------------------------------------------------
# LRN
# --------------------------------------------------------------------------------------------
def naive_lrn(x, size, alpha, beta, bias):
    n, c, h, w = x.shape
    scale = np.zeros_like(x)
    half = (size - 1) // 2
    for ni, ci, hi, wi in itertools.product(range(n), range(c), range(h), range(w)):
        total = sum(x[ni, j, hi, wi] ** 2 for j in range(max(0, ci - half), min(c, ci + half + 1)))
        scale[ni, ci, hi, wi] = bias + alpha / size * total
    return x * scale ** -beta, scale


LRN_CASES = [dict(size=1, alpha=0.5, beta=0.75, bias=1.0), dict(size=3, alpha=0.3, beta=0.75, bias=1.5),
             dict(size=5, alpha=1e-4, beta=0.75, bias=1.0), dict(size=7, alpha=2.0, beta=0.5, bias=2.0)]


@pytest.mark.parametrize("args", LRN_CASES, ids=lambda a: f"size{a['size']}")
@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
def test_lrn(args, order):
    x = np.random.default_rng(0).standard_normal((2, 6, 3, 2))
    y_ref, scale_ref = naive_lrn(x, args["size"], f32(args["alpha"]), f32(args["beta"]), f32(args["bias"]))
    if order == "NHWC":
        x, y_ref, scale_ref = _nhwc(x), _nhwc(y_ref), _nhwc(scale_ref)
    y, scale = check_infer("LRN", [x], n_outputs=2, order=order, **args)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12)
    np.testing.assert_allclose(scale, scale_ref, rtol=1e-12)
    (y1,) = check_infer("LRN", [x.astype(np.float32)], order=order, **args)
    np.testing.assert_allclose(y1, y_ref, rtol=1e-5, atol=1e-6)
    check_gradient("LRN", [x], order=order, **args, **TIGHT)
    check_gradient("LRN", [x], n_outputs=2, grad_outputs=[0], order=order, **args, **TIGHT)
    check_infer("LRNGradient", [x, y, y], order=order, **args)


def test_lrn_gradient_op_and_errors():
    ops, g_in = gradient_ops_for(make_op("LRN", ["X"], ["Y", "Y_scale"], size=5), ["Y_grad", None])
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [("LRNGradient", ["X", "Y", "Y_grad"], ["X_grad"])]
    x = np.ones((1, 4, 2, 2), np.float32)
    with pytest.raises(Exception, match=r"\(LRN\).*size must be a positive odd number, got 4"):
        run_op("LRN", [x], size=4)
    with pytest.raises(Exception, match=r"LRN takes 4-D input"):
        run_op("LRN", [x[0]], size=3)


def test_lrn_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((2, 7, 4, 3)).astype(np.float32)
    for size, alpha, beta, bias in [(5, 1e-4, 0.75, 1.0), (3, 0.5, 0.6, 2.0)]:
        (y,) = run_op("LRN", [x], size=size, alpha=alpha, beta=beta, bias=bias)
        expect = torch.nn.functional.local_response_norm(torch.from_numpy(x), size, alpha, beta, bias).numpy()
        np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-6)


def test_zoo_lrn_op():
    net = caffe2_pb2.NetDef()
    text_format.Parse(shared_path("models", "zoo", "bvlc_alexnet", "predict_net.pbtxt").read_text(), net)
    op = next(o for o in net.op if o.type == "LRN")
    assert len(op.output) == 2
    a = {arg.name: arg for arg in op.arg}
    x = np.random.default_rng(2).standard_normal((1, 8, 3, 3)).astype(np.float32) * 10
    ws = Workspace("zoo")
    ws.feed(op.input[0], x)
    run_ops([op], ws)
    y_ref, scale_ref = naive_lrn(x.astype(np.float64), a["size"].i, a["alpha"].f, a["beta"].f, a["bias"].f)
    np.testing.assert_allclose(ws.fetch(op.output[0]), y_ref, rtol=1e-5)
    np.testing.assert_allclose(ws.fetch(op.output[1]), scale_ref, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# SpatialBN
# --------------------------------------------------------------------------------------------
def _bn_inputs(shape, c, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + 0.5
    scale, bias, mean = rng.standard_normal(c), rng.standard_normal(c), rng.standard_normal(c)
    var = rng.random(c) + 0.5
    return x, scale, bias, mean, var


@pytest.mark.parametrize("shape,order", [((2, 3, 4, 5), "NCHW"), ((2, 4, 5, 3), "NHWC"), ((3, 4, 5), "NCHW"),
                                         ((2, 3, 2, 3, 2), "NCHW"), ((2, 2, 3, 2, 3), "NHWC")])
def test_spatial_bn_test_mode(shape, order):
    c = shape[1] if order == "NCHW" else shape[-1]
    x, scale, bias, mean, var = _bn_inputs(shape, c)
    (y,) = check_infer("SpatialBN", [x, scale, bias, mean, var], is_test=1, epsilon=1e-3, order=order)
    axis = 1 if order == "NCHW" else len(shape) - 1
    expect = np.empty_like(x)
    for ci in range(c):
        idx = (slice(None),) * axis + (ci,)
        expect[idx] = (x[idx] - mean[ci]) / math.sqrt(var[ci] + f32(1e-3)) * scale[ci] + bias[ci]
    np.testing.assert_allclose(y, expect, rtol=1e-12, atol=1e-12)
    as32 = [v.astype(np.float32) for v in (x, scale, bias, mean, var)]
    np.testing.assert_allclose(check_infer("SpatialBN", as32, is_test=1, epsilon=1e-3, order=order)[0], expect,
                               rtol=1e-5, atol=1e-5)
    check_gradient("SpatialBN", [x, scale, bias, mean, var], wrt=[0, 1, 2], is_test=1, epsilon=1e-3, order=order,
                   **TIGHT)
    ops, g_in = gradient_ops_for(make_op("SpatialBN", ["X", "s", "b", "m", "v"], ["Y"], is_test=1), ["dY"])
    assert list(ops[0].input) == ["X", "s", "dY", "m", "v"] and list(ops[0].output) == ["X_grad", "s_grad", "b_grad"]
    assert g_in == ["X_grad", "s_grad", "b_grad", None, None]
    check_infer("SpatialBNGradient", [x, scale, y, mean, var], n_outputs=3, is_test=1, order=order)


def test_spatial_bn_per_channel_expr_agrees():
    x, scale, bias, mean, var = _bn_inputs((2, 3, 2, 2), 3)
    (y,) = run_op("SpatialBN", [x, scale, bias, mean, var], is_test=1, epsilon=1e-2)
    info = per_channel_info("SpatialBN", {"is_test": True})
    assert per_channel_info("SpatialBN", {"is_test": False}) is None
    for idx in np.ndindex(x.shape):
        env = {"x0": x[idx], "epsilon": f32(1e-2), "sqrt": math.sqrt}
        env.update({f"x{i}": v[idx[1]] for i, v in zip(info.channel_inputs, (scale, bias, mean, var))})
        assert math.isclose(eval(info.expr, {"__builtins__": {}}, env), y[idx], rel_tol=1e-12, abs_tol=1e-12)


def _run_bn_train(x, scale, bias, rm, rv, sums=(), **args):
    """Run training-mode SpatialBN with its running stats in place (as Caffe2 requires)."""
    ws = Workspace("bn")
    names = ["X", "scale", "bias", "rm", "rv", "sums", "sumsq"][:5 + len(sums)]
    for name, value in zip(names, (x, scale, bias, rm, rv) + tuple(sums)):
        ws.feed(name, value)
    op = make_op("SpatialBN", names, ["Y", "rm", "rv", "saved_mean", "saved_inv_std"], is_test=0, **args)
    run_operator_once(op, ws)
    return op, ws, [ws.fetch(n) for n in ("Y", "rm", "rv", "saved_mean", "saved_inv_std")]


@pytest.mark.parametrize("shape,order", [((3, 2, 3, 2), "NCHW"), ((2, 3, 2, 3), "NHWC"), ((4, 3, 5), "NCHW")])
def test_spatial_bn_train_mode(shape, order):
    c = shape[1] if order == "NCHW" else shape[-1]
    x, scale, bias, rm, rv = _bn_inputs(shape, c, seed=3)
    args = dict(epsilon=1e-4, momentum=0.8, order=order)
    _, _, (y, rm2, rv2, sm, sis) = _run_bn_train(x, scale, bias, rm, rv, **args)
    xc = np.moveaxis(x, 1 if order == "NCHW" else -1, 0).reshape(c, -1)
    for ci in range(c):
        vals = xc[ci]
        mu = sum(vals) / len(vals)
        var = sum((v - mu) ** 2 for v in vals) / len(vals)  # biased
        assert math.isclose(sm[ci], mu, rel_tol=1e-12, abs_tol=1e-12)
        m = f32(0.8)
        assert math.isclose(sis[ci], 1 / math.sqrt(var + f32(1e-4)), rel_tol=1e-12)
        assert math.isclose(rm2[ci], rm[ci] * m + mu * (1 - m), rel_tol=1e-12, abs_tol=1e-12)
        assert math.isclose(rv2[ci], rv[ci] * m + var * (1 - m), rel_tol=1e-12)
    view = [1] * len(shape)
    view[1 if order == "NCHW" else -1] = c
    np.testing.assert_allclose(y, (x - sm.reshape(view)) * sis.reshape(view) * scale.reshape(view)
                               + bias.reshape(view), rtol=1e-12, atol=1e-12)
    # Inference for every output, against what ran.
    opdef = lookup("SpatialBN")
    op = make_op("SpatialBN", ["X", "s", "b", "rm", "rv"], ["Y", "rm", "rv", "sm", "sis"], is_test=0, **args)
    inferred = opdef.infer(opdef.decode_args(op), [TensorType(v.shape, v.dtype) for v in (x, scale, bias, rm, rv)])
    assert [(t.shape, t.dtype) for t in inferred] == [(v.shape, v.dtype) for v in (y, rm2, rv2, sm, sis)]

    # Gradient of <dY, Y> w.r.t. X, scale, bias against central differences (running stats get none).
    dy = np.random.default_rng(9).standard_normal(shape)
    op, ws, _ = _run_bn_train(x, scale, bias, rm, rv, **args)
    ops, g_in = gradient_ops_for(op, ["dY", None, None, None, None])
    assert list(ops[0].input) == ["X", "scale", "dY", "saved_mean", "saved_inv_std"]
    assert g_in == ["X_grad", "scale_grad", "bias_grad", None, None]
    ws.feed("dY", dy)
    run_ops(ops, ws)
    inputs = [x, scale, bias]
    for i, name in enumerate(("X_grad", "scale_grad", "bias_grad")):
        numeric = np.zeros(inputs[i].shape)
        for j in range(inputs[i].size):
            values = []
            for sign in (1, -1):
                moved = [v.copy() for v in inputs]
                moved[i].reshape(-1)[j] += sign * 1e-4
                values.append(float(np.sum(_run_bn_train(*moved, rm, rv, **args)[2][0] * dy)))
            numeric.reshape(-1)[j] = (values[0] - values[1]) / 2e-4
        np.testing.assert_allclose(ws.fetch(name), numeric, rtol=1e-5, atol=1e-7, err_msg=name)


def test_spatial_bn_num_batches_matches_one_batch():
    """Two identical batches' aggregated sums give the same statistics and gradient as one batch."""
    x, scale, bias, rm, rv = _bn_inputs((2, 3, 2, 2), 3, seed=5)
    axes = (0, 2, 3)
    _, _, one = _run_bn_train(x, scale, bias, rm, rv)
    op, ws, two = _run_bn_train(x, scale, bias, rm, rv, sums=(2 * x.sum(axis=axes), 2 * (x * x).sum(axis=axes)),
                                num_batches=2)
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    dy = np.random.default_rng(1).standard_normal(x.shape)
    single = run_op("SpatialBNGradient", [x, scale, dy, one[3], one[4]], n_outputs=3, is_test=0)
    ops, g_in = gradient_ops_for(op, ["dY", None, None, None, None])
    assert list(ops[0].input) == ["X", "scale", "dY", "saved_mean", "saved_inv_std", "scale_grad", "bias_grad"]
    ws.feed("dY", dy)
    ws.feed("scale_grad", 2 * single[1])
    ws.feed("bias_grad", 2 * single[2])
    run_ops(ops, ws)
    for name, expect in zip(("X_grad", "scale_grad", "bias_grad"), single):
        np.testing.assert_allclose(ws.fetch(name), expect, rtol=1e-10, atol=1e-12)


def test_spatial_bn_errors():
    x, scale, bias, mean, var = [v.astype(np.float32) for v in _bn_inputs((2, 3, 2, 2), 3)]
    with pytest.raises(Exception, match=r"\(SpatialBN\).*argument 'is_test' is required"):
        run_op("SpatialBN", [x, scale, bias, mean, var])
    with pytest.raises(Exception, match=r"training mode \(is_test=0\) SpatialBN has 5 outputs"):
        run_op("SpatialBN", [x, scale, bias, mean, var], is_test=0)
    ws = Workspace("bn")
    for n, v in zip("XsbMV", (x, scale, bias, mean, var)):
        ws.feed(n, v)
    with pytest.raises(Exception, match=r"test mode \(is_test=1\) SpatialBN has exactly 1 output"):
        run_operator_once(make_op("SpatialBN", list("XsbMV"), ["Y", "M", "V", "sm", "sv"], is_test=1), ws)
    with pytest.raises(Exception, match=r"output 1 \('rm'\) must be the same blob as input 3 \('M'\)"):
        run_operator_once(make_op("SpatialBN", list("XsbMV"), ["Y", "rm", "rv", "sm", "sv"], is_test=0), ws)
    with pytest.raises(Exception, match=r"mean has shape \(2,\), expected \[3\]"):
        run_op("SpatialBN", [x, scale, bias, mean[:2], var], is_test=1)
    with pytest.raises(Exception, match=r"rank 3 to 5"):
        run_op("SpatialBN", [x[:, :, 0, 0], scale, bias, mean, var], is_test=1)
    with pytest.raises(Exception, match=r"takes 5 inputs .* or 7 with num_batches > 1, got 6"):
        run_op("SpatialBN", [x, scale, bias, mean, var, var], is_test=1)


def test_zoo_spatial_bn_op():
    net = caffe2_pb2.NetDef()
    text_format.Parse(shared_path("models", "zoo", "resnet50", "predict_net.pbtxt").read_text(), net)
    op = next(o for o in net.op if o.type == "SpatialBN")
    eps = next(a.f for a in op.arg if a.name == "epsilon")
    x, scale, bias, mean, var = [v.astype(np.float32) for v in _bn_inputs((1, 4, 3, 3), 4)]
    ws = Workspace("zoo")
    for name, value in zip(op.input, (x, scale, bias, mean, var)):
        ws.feed(name, value)
    run_ops([op], ws)
    view = (1, 4, 1, 1)
    expect = (x - mean.reshape(view)) / np.sqrt(var.reshape(view) + eps) * scale.reshape(view) + bias.reshape(view)
    np.testing.assert_allclose(ws.fetch(op.output[0]), expect, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------------
def _seeded(seed: int) -> caffe2_pb2.DeviceOption:
    return caffe2_pb2.DeviceOption(random_seed=seed)


def test_dropout_test_mode():
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    y, mask = check_infer("Dropout", [x], n_outputs=2, is_test=1, ratio=0.4)
    np.testing.assert_array_equal(y, x)
    assert mask.dtype == np.bool_ and mask.all()
    ws = Workspace("d")
    ws.feed("X", x)
    run_operator_once(make_op("Dropout", ["X"], ["X", "mask"], is_test=1), ws)  # in place, as the zoo nets do
    np.testing.assert_array_equal(ws.fetch("X"), x)
    check_gradient("Dropout", [x.astype(np.float64)], n_outputs=2, grad_outputs=[0], is_test=1, **TIGHT)
    ops, _ = gradient_ops_for(make_op("Dropout", ["X"], ["Y", "m"], is_test=1), ["dY", None])
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [("DropoutGrad", ["dY"], ["X_grad"])]


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.75])
def test_dropout_train_mode(ratio):
    x = np.random.default_rng(1).standard_normal((100, 100)).astype(np.float32)
    y, mask = check_infer("Dropout", [x], n_outputs=2, is_test=0, ratio=ratio, device_option=_seeded(7))
    assert mask.dtype == np.bool_
    assert abs(mask.mean() - (1 - ratio)) < 0.02
    np.testing.assert_allclose(y, np.where(mask, x / np.float32(1 - ratio), 0), rtol=1e-6)
    y2, mask2 = run_op("Dropout", [x], n_outputs=2, is_test=0, ratio=ratio, device_option=_seeded(7))
    np.testing.assert_array_equal(mask2, mask)  # the same seed gives the same mask
    if ratio:
        _, mask3 = run_op("Dropout", [x], n_outputs=2, is_test=0, ratio=ratio, device_option=_seeded(8))
        assert (mask3 != mask).any()
    # Every forward run in the finite differences re-creates the op with the same seed: same mask.
    small = np.random.default_rng(2).standard_normal((3, 5))
    check_gradient("Dropout", [small], n_outputs=2, grad_outputs=[0], is_test=0, ratio=ratio,
                   device_option=_seeded(3), **TIGHT)
    ops, _ = gradient_ops_for(make_op("Dropout", ["X"], ["Y", "m"], is_test=0, ratio=ratio), ["dY", None])
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [("DropoutGrad", ["dY", "m"], ["X_grad"])]
    dy = np.ones_like(x)
    (dx,) = check_infer("DropoutGrad", [dy, mask], is_test=0, ratio=ratio)
    np.testing.assert_allclose(dx, mask / np.float32(1 - ratio), rtol=1e-6)


def test_dropout_errors():
    x = np.ones((2, 2), np.float32)
    with pytest.raises(Exception, match=r"\(Dropout\).*argument 'is_test' is required"):
        run_op("Dropout", [x])
    with pytest.raises(Exception, match=r"ratio must be in \[0, 1\), got 1.0"):
        run_op("Dropout", [x], is_test=0, ratio=1.0)
    with pytest.raises(Exception, match=r"needs the mask as its 2nd input"):
        run_op("DropoutGrad", [x], is_test=0)
    with pytest.raises(ValueError, match=r"needs its mask output"):
        gradient_ops_for(make_op("Dropout", ["X"], ["Y"], is_test=0), ["dY"])
