"""MaxPool and AveragePool: reference vs direct loops (and torch when installed), inference vs
actual for every spelling, legacy_pad mode and global pooling, gradients vs finite differences, and
the pooling ops exactly as the model-zoo nets write them."""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.compiler.reference import run_ops
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_op
from netjit.runtime.workspace import Workspace
from tests.conftest import shared_path
from tests.ops.harness import check_gradient, check_infer, run_op
from tests.ops.naive_cnn import FLT_MAX, caffe_ceil_out, naive_pool, same_pads

TIGHT = dict(rtol=1e-5, atol=1e-7)

# id, X (NCHW), args, (kernel, stride, head pads, out) for the naive loops
POOL_CASES = [
    ("k2s2", (2, 3, 6, 6), dict(kernel=2, stride=2), ((2, 2), (2, 2), (0, 0), (3, 3))),
    ("k3s2p1", (2, 2, 7, 6), dict(kernel=3, stride=2, pad=1), ((3, 3), (2, 2), (1, 1), (4, 3))),
    ("tlbr", (1, 2, 13, 13), dict(kernel=3, stride=2, pad_t=0, pad_l=0, pad_b=1, pad_r=1),
     ((3, 3), (2, 2), (0, 0), (6, 6))),
    ("hw", (1, 2, 5, 6), dict(kernel_h=3, kernel_w=2, stride_h=1, stride_w=2), ((3, 2), (1, 2), (0, 0), (3, 3))),
    ("lists", (1, 2, 5, 5), dict(kernels=[2, 3], strides=[2, 1], pads=[1, 0, 0, 1]), ((2, 3), (2, 1), (1, 0), (3, 4))),
    ("valid", (1, 2, 8, 7), dict(kernel=3, stride=2, legacy_pad=1), ((3, 3), (2, 2), (0, 0), (3, 3))),
    ("same", (1, 2, 6, 5), dict(kernel=3, stride=2, legacy_pad=2),
     ((3, 3), (2, 2), (same_pads(6, 3, 2)[0], same_pads(5, 3, 2)[0]), (3, 3))),
    ("same-even", (1, 2, 5, 4), dict(kernel=2, legacy_pad=2), ((2, 2), (1, 1), (0, 0), (5, 4))),
    ("caffe-ceil", (1, 2, 6, 6), dict(kernel=3, stride=2, legacy_pad=3),
     ((3, 3), (2, 2), (0, 0), (caffe_ceil_out(6, 3, 2, 0),) * 2)),
    ("caffe-ceil-pad", (1, 2, 6, 5), dict(kernel=3, stride=2, pad=1, legacy_pad=3),
     ((3, 3), (2, 2), (1, 1), (caffe_ceil_out(6, 3, 2, 1), caffe_ceil_out(5, 3, 2, 1)))),
    ("caffe-ceil-clipped", (1, 2, 5, 5), dict(kernel=2, stride=2, pad=1, legacy_pad=3),
     ((2, 2), (2, 2), (1, 1), (caffe_ceil_out(5, 2, 2, 1),) * 2)),
    ("global", (2, 3, 5, 4), dict(global_pooling=1), ((5, 4), (1, 1), (0, 0), (1, 1))),
    ("global-densenet", (1, 3, 7, 7), dict(kernel=0, stride=1, pad=0, global_pooling=1),
     ((7, 7), (1, 1), (0, 0), (1, 1))),
    ("1d", (2, 3, 9), dict(kernels=[3], strides=[2], pads=[1, 1]), ((3,), (2,), (1,), (5,))),
    ("1d-scalar", (2, 3, 7), dict(kernel=3), ((3,), (1,), (0,), (5,))),
    ("3d", (1, 2, 4, 5, 4), dict(kernels=[2, 3, 2], strides=[2, 1, 2], pads=[0, 1, 1, 1, 0, 1]),
     ((2, 3, 2), (2, 1, 2), (0, 1, 1), (2, 4, 3))),
    ("3d-global", (1, 2, 3, 2, 4), dict(global_pooling=1), ((3, 2, 4), (1, 1, 1), (0, 0, 0), (1, 1, 1))),
]


def _distinct(shape, seed=0):
    # Values at least 0.01 apart: no ties, so finite differences of max pooling are well defined.
    n = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(n).reshape(shape) * 0.01 - n * 0.005


def _nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


@pytest.mark.parametrize("case", POOL_CASES, ids=[c[0] for c in POOL_CASES])
@pytest.mark.parametrize("op_type,kind", [("MaxPool", "max"), ("AveragePool", "avg")])
@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
def test_pool(case, op_type, kind, order):
    _, xs, args, (kernel, stride, heads, out) = case
    x = _distinct(xs)
    expect = naive_pool(x, kind, kernel, stride, heads, out)
    if order == "NHWC":
        x, expect = _nhwc(x), _nhwc(expect)
    (y,) = check_infer(op_type, [x], order=order, **args)
    np.testing.assert_allclose(y, expect, rtol=1e-12, atol=1e-12)
    (y32,) = check_infer(op_type, [x.astype(np.float32)], order=order, **args)
    np.testing.assert_allclose(y32, expect, rtol=1e-5, atol=1e-5)
    check_gradient(op_type, [x], order=order, **args, **TIGHT)
    check_infer(op_type + "Gradient", [x, y, y], order=order, **args)


@pytest.mark.parametrize("case", [c for c in POOL_CASES if c[0] in ("k3s2p1", "lists", "caffe-ceil-pad", "1d", "3d")],
                         ids=lambda c: c[0])
def test_average_pool_count_include_pad(case):
    _, xs, args, (kernel, stride, heads, out) = case
    x = _distinct(xs, seed=2)
    (y,) = check_infer("AveragePool", [x], count_include_pad=1, **args)
    np.testing.assert_allclose(y, naive_pool(x, "avg", kernel, stride, heads, out, count_include_pad=True),
                               rtol=1e-12, atol=1e-12)
    check_gradient("AveragePool", [x], count_include_pad=1, **args, **TIGHT)


def test_max_pool_ties_and_padding_only_windows():
    x = np.array([[[[1.0, 3.0], [3.0, 2.0]]]])
    (y,) = run_op("MaxPool", [x], kernel=2)
    assert y.item() == 3.0
    (dx,) = run_op("MaxPoolGradient", [x, y, np.full_like(y, 5.0)], kernel=2)
    np.testing.assert_array_equal(dx, [[[[0.0, 5.0], [5.0, 0.0]]]])  # every tied maximum gets dY
    # Pads wider than the kernel: the first and last windows see only padding.
    (y,) = run_op("MaxPool", [x.astype(np.float32)], kernel=2, stride=2, pad=2)
    np.testing.assert_array_equal(y, naive_pool(x, "max", (2, 2), (2, 2), (2, 2), (3, 3)).astype(np.float32))
    assert y[0, 0, 0, 0] == np.float32(-FLT_MAX) and y[0, 0, 1, 1] == 3.0
    # Caffe's ceil rule clips the last window only when there is padding: with kernel 1 < stride 2 over
    # 6 pixels it keeps a 4th window that starts past the input and sees nothing.
    row = np.arange(6.0).reshape(1, 1, 1, 6)
    (y,) = check_infer("MaxPool", [row], kernels=[1, 1], strides=[1, 2], legacy_pad=3)
    np.testing.assert_array_equal(y, [[[[0.0, 2.0, 4.0, -FLT_MAX]]]])
    # -inf inputs: the maximum starts from -FLT_MAX, as Caffe2's does.
    (y,) = run_op("MaxPool", [np.full((1, 1, 2, 2), -np.inf, np.float32)], kernel=2)
    assert y.item() == np.float32(-FLT_MAX)


def test_pool_aliases_and_gradient_names():
    x = _distinct((1, 2, 4, 4))
    for base in ("MaxPool", "AveragePool"):
        (y,) = run_op(base, [x], kernel=2)
        for n, xin in ((1, x[:, :, 0]), (2, x), (3, np.repeat(x[:, :, None], 4, axis=2))):
            (y_alias,) = check_infer(f"{base}{n}D", [xin], kernels=[2] * (xin.ndim - 2))
            assert y_alias.shape == (1, 2) + (3,) * (xin.ndim - 2)
        np.testing.assert_array_equal(run_op(f"{base}2D", [x], kernel=2)[0], y)
        ops, g_in = gradient_ops_for(make_op(f"{base}2D", ["X"], ["Y"], kernel=2), ["Y_grad"])
        assert [o.type for o in ops] == [f"{base}2DGradient"] and g_in == ["X_grad"]
        assert list(ops[0].input) == ["X", "Y", "Y_grad"] and list(ops[0].output) == ["X_grad"]
        ws = Workspace("g")
        for name, value in (("X", x), ("Y", y), ("Y_grad", np.ones_like(y))):
            ws.feed(name, value)
        run_ops(ops, ws)
        np.testing.assert_array_equal(ws.fetch("X_grad"), run_op(f"{base}Gradient", [x, y, np.ones_like(y)],
                                                                  kernel=2)[0])


@pytest.mark.parametrize("op_type,xs,args,match", [
    ("MaxPool", (1, 1, 5, 5), dict(kernel=2, dilation=2), r"pooling does not support dilation"),
    ("MaxPool", (1, 1, 5, 5), dict(stride=2), r"kernel size is not set"),
    ("AveragePool", (1, 1, 5, 5), dict(global_pooling=1, pad=1), r"global_pooling .* must stay at their defaults"),
    ("AveragePool", (1, 1, 5, 5), dict(global_pooling=1, stride=2), r"global_pooling"),
    ("MaxPool", (1, 1, 2, 2, 2, 2), dict(kernel=1), r"1 to 3 spatial dims.*'in0'"),
    ("MaxPool", (1, 1, 5, 5), dict(kernel=2, kernels=[2, 2]), r"conflicting spellings of kernel"),
    ("MaxPool", (1, 1, 5, 5), dict(kernel=2, pad_l=1), r"pad_l is set without pad_t, pad_b, pad_r"),
    ("AveragePool", (1, 1, 5, 5), dict(kernel=3, legacy_pad=1, pad=0), r"legacy_pad VALID computes"),
    ("MaxPool", (1, 1, 2, 2), dict(kernel=3), r"smaller than the dilated kernel size 3"),
    ("AveragePool", (1, 1, 2, 2), dict(kernel=3, legacy_pad=1), r"VALID: input size 2 is smaller"),
    ("MaxPool", (1, 1, 5, 5), dict(kernel=2, order="CHWN"), r"order 'CHWN'"),
])
def test_pool_errors(op_type, xs, args, match):
    with pytest.raises(Exception, match=rf"\({op_type}\).*" + match):
        run_op(op_type, [np.zeros(xs, np.float32)], **args)


def test_pool_gradient_checks_shapes():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(Exception, match=r"dY has shape \(1, 1, 3, 3\) but the pooled output is \(1, 1, 2, 2\).*'in2'"):
        run_op("MaxPoolGradient", [x, np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3))], kernel=2, stride=2)


# --------------------------------------------------------------------------------------------
# torch as a second, optional oracle (ceil_mode = Caffe's legacy pooling)
# --------------------------------------------------------------------------------------------
def test_pool_matches_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(21)
    for trial in range(30):
        rank = 1 + trial % 3
        kernel = [int(k) for k in rng.integers(1, 4, rank)]
        stride = [int(s) for s in rng.integers(1, 3, rank)]
        pad = [int(rng.integers(0, k // 2 + 1)) for k in kernel]
        ceil = bool(trial % 2)
        if ceil:  # with kernel < stride Caffe keeps a last window that lies wholly past the input; torch drops it
            stride = [min(s, k) for s, k in zip(stride, kernel)]
        x = rng.standard_normal([2, 3] + [int(s) for s in rng.integers(4, 8, rank)]).astype(np.float32)
        args = dict(kernels=kernel, strides=stride, pads=pad + pad, legacy_pad=3 if ceil else 0)
        xt = torch.from_numpy(x)
        max_fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank]
        avg_fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]
        (y,) = check_infer("MaxPool", [x], **args)
        np.testing.assert_array_equal(y, max_fn(xt, kernel, stride, pad, ceil_mode=ceil).numpy(),
                                      err_msg=f"trial {trial}")
        (y,) = check_infer("AveragePool", [x], **args)
        expect = avg_fn(xt, kernel, stride, pad, ceil_mode=ceil, count_include_pad=False).numpy()
        np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-6, err_msg=f"trial {trial}")
        if not ceil:
            (y,) = check_infer("AveragePool", [x], count_include_pad=1, **args)
            expect = avg_fn(xt, kernel, stride, pad, count_include_pad=True).numpy()
            np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-6, err_msg=f"trial {trial}")


# --------------------------------------------------------------------------------------------
# The pooling ops exactly as the model-zoo predict nets write them
# --------------------------------------------------------------------------------------------
def _zoo_ops(model: str, op_type: str) -> list[caffe2_pb2.OperatorDef]:
    net = caffe2_pb2.NetDef()
    text_format.Parse(shared_path("models", "zoo", model, "predict_net.pbtxt").read_text(), net)
    return [op for op in net.op if op.type == op_type]


def _run_def(op: caffe2_pb2.OperatorDef, x: np.ndarray) -> np.ndarray:
    ws = Workspace("zoo")
    ws.feed(op.input[0], x)
    run_ops([op], ws)
    return ws.fetch(op.output[0])


def test_zoo_pool_ops():
    rng = np.random.default_rng(4)
    # alexnet pool5: Caffe ceil mode written as pad_b = pad_r = 1; conv5's 13x13 pools to 6x6.
    pool5 = [op for op in _zoo_ops("bvlc_alexnet", "MaxPool") if any(a.name == "pad_b" for a in op.arg)]
    assert len(pool5) == 1
    x = rng.standard_normal((1, 4, 13, 13)).astype(np.float32)
    y = _run_def(pool5[0], x)
    assert y.shape == (1, 4, 6, 6)
    np.testing.assert_array_equal(y, naive_pool(x, "max", (3, 3), (2, 2), (0, 0), (6, 6)).astype(np.float32))
    # inception_v1 pool5: k7 over 6x6 with pad_b = pad_r = 1: one window, average over in-bounds only.
    (avg,) = _zoo_ops("inception_v1", "AveragePool")
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    y = _run_def(avg, x)
    assert y.shape == (1, 4, 1, 1)
    np.testing.assert_allclose(y[..., 0, 0], x.mean(axis=(2, 3)), rtol=1e-5)
    # densenet121's last AveragePool: global_pooling with kernel 0.
    (glob,) = [op for op in _zoo_ops("densenet121", "AveragePool") if any(a.name == "global_pooling" for a in op.arg)]
    x = rng.standard_normal((1, 4, 7, 7)).astype(np.float32)
    np.testing.assert_allclose(_run_def(glob, x)[..., 0, 0], x.mean(axis=(2, 3)), rtol=1e-5)
    # inception_v2's asymmetric MaxPools keep every Concat input aligned: 112 -> 56 with pad_b/pad_r.
    for op in _zoo_ops("inception_v2", "MaxPool"):
        args = {a.name: a.i for a in op.arg if a.HasField("i")}
        if "pad_b" in args:
            y = _run_def(op, rng.standard_normal((1, 2, 14, 14)).astype(np.float32))
            assert y.shape[2:] == ((14 + args["pad_t"] + args["pad_b"] - args["kernel"]) // args["stride"] + 1,) * 2
