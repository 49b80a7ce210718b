"""Conv and ConvTranspose: reference vs direct nested loops (and torch when installed), inference vs
actual for every argument spelling and legacy_pad mode, gradients vs finite differences, gradient op
naming, argument errors, and a real LeNet (exported by Caffe2) on real MNIST digits."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.compiler.reference import run_ops
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_op
from netjit.runtime.workspace import Workspace
from tests.conftest import shared_path
from tests.ops.harness import check_gradient, check_infer, run_op
from tests.ops.naive_cnn import naive_conv, naive_conv_transpose, same_pads

TIGHT = dict(rtol=1e-5, atol=1e-7)  # conv is linear in each input: differences are exact up to rounding

# id, X shape (NCHW), W shape, args, (stride, head pads, tail pads, dilation, group) for the naive loops
CONV_CASES = [
    ("2d", (2, 3, 6, 5), (4, 3, 3, 3), dict(kernel=3), ((1, 1), (0, 0), (0, 0), (1, 1), 1)),
    ("stride-pad", (2, 3, 7, 6), (4, 3, 3, 3), dict(kernel=3, stride=2, pad=1), ((2, 2), (1, 1), (1, 1), (1, 1), 1)),
    ("hw-spellings", (1, 2, 7, 6), (3, 2, 3, 2),
     dict(kernel_h=3, kernel_w=2, stride_h=2, stride_w=1, pad_t=1, pad_l=0, pad_b=2, pad_r=1),
     ((2, 1), (1, 0), (2, 1), (1, 1), 1)),
    ("list-spellings", (1, 2, 8, 7), (2, 2, 2, 3),
     dict(kernels=[2, 3], strides=[1, 2], pads=[1, 0, 0, 2], dilations=[2, 1]),
     ((1, 2), (1, 0), (0, 2), (2, 1), 1)),
    ("dilation", (1, 2, 7, 7), (3, 2, 3, 3), dict(kernel=3, dilation=2, pad=2), ((1, 1), (2, 2), (2, 2), (2, 2), 1)),
    ("dilation-hw", (1, 2, 7, 8), (2, 2, 2, 2), dict(kernel=2, dilation_h=2, dilation_w=3),
     ((1, 1), (0, 0), (0, 0), (2, 3), 1)),
    ("group2", (2, 4, 5, 5), (6, 2, 3, 3), dict(kernel=3, group=2, pad=1), ((1, 1), (1, 1), (1, 1), (1, 1), 2)),
    ("depthwise", (1, 4, 5, 4), (4, 1, 3, 3), dict(kernel=3, group=4, stride=2), ((2, 2), (0, 0), (0, 0), (1, 1), 4)),
    ("1d", (2, 3, 9), (4, 3, 3), dict(kernels=[3], strides=[2], pads=[1, 2]), ((2,), (1,), (2,), (1,), 1)),
    ("1d-scalar", (2, 3, 9), (2, 3, 4), dict(kernel=4, dilation=2), ((1,), (0,), (0,), (2,), 1)),
    ("3d", (1, 2, 4, 5, 3), (3, 2, 2, 3, 2), dict(kernels=[2, 3, 2], pads=[1, 0, 1, 0, 1, 0], strides=[1, 2, 1]),
     ((1, 2, 1), (1, 0, 1), (0, 1, 0), (1, 1, 1), 1)),
    ("valid", (1, 2, 7, 6), (2, 2, 3, 3), dict(kernel=3, stride=2, legacy_pad=1), ((2, 2), (0, 0), (0, 0), (1, 1), 1)),
    ("same-s2", (1, 2, 6, 5), (2, 2, 3, 3), dict(kernel=3, stride=2, legacy_pad=2),
     ((2, 2),) + tuple(zip(same_pads(6, 3, 2), same_pads(5, 3, 2))) + ((1, 1), 1)),
    ("same-even-kernel", (1, 2, 5, 4), (2, 2, 2, 4), dict(kernels=[2, 4], legacy_pad=2),
     ((1, 1),) + tuple(zip(same_pads(5, 2, 1), same_pads(4, 4, 1))) + ((1, 1), 1)),
    ("legacy-ceil", (1, 2, 6, 6), (2, 2, 3, 3), dict(kernel=3, stride=2, legacy_pad=3),
     ((2, 2), (0, 0), (2, 2), (1, 1), 1)),  # Caffe: ⌈(6-3)/2⌉+1 = 3 (floor would give 2)
]
NHWC_CASES = [c for c in CONV_CASES if len(c[1]) == 4 and c[4][4] == 1]


def _nhwc(a: np.ndarray) -> np.ndarray:
    # Contiguous: the harness perturbs inputs through reshape(-1), which must be a view.
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _data(x_shape, w_shape, seed=0, bias=True):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    return [x, w, rng.standard_normal(w_shape[0])] if bias else [x, w]


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_nchw(case):
    _, xs, ws, args, (stride, heads, tails, dilation, group) = case
    x, w, b = _data(xs, ws)
    (y,) = check_infer("Conv", [x, w, b], **args)
    np.testing.assert_allclose(y, naive_conv(x, w, b, stride, heads, tails, dilation, group), rtol=1e-10, atol=1e-12)
    (y32,) = check_infer("Conv", [x.astype(np.float32), w.astype(np.float32), b.astype(np.float32)], **args)
    np.testing.assert_allclose(y32, y, rtol=1e-4, atol=1e-4)
    check_gradient("Conv", [x, w, b], **args, **TIGHT)
    check_infer("ConvGradient", [x, w, y], n_outputs=3, **args)
    # Without a bias input: same result minus the bias, and the gradient flows to X and W only.
    (y_nb,) = check_infer("Conv", [x, w], **args)
    np.testing.assert_allclose(y_nb, y - b.reshape((1, -1) + (1,) * (x.ndim - 2)), rtol=1e-10, atol=1e-12)
    check_gradient("Conv", [x, w], **args, **TIGHT)


@pytest.mark.parametrize("case", NHWC_CASES, ids=[c[0] for c in NHWC_CASES])
def test_conv_nhwc(case):
    _, xs, ws, args, (stride, heads, tails, dilation, group) = case
    x, w, b = _data(xs, ws, seed=1)
    x_nhwc, w_nhwc = _nhwc(x), _nhwc(w)
    (y,) = check_infer("Conv", [x_nhwc, w_nhwc, b], order="NHWC", **args)
    expect = naive_conv(x, w, b, stride, heads, tails, dilation, group).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(y, expect, rtol=1e-10, atol=1e-12)
    check_gradient("Conv", [x_nhwc, w_nhwc, b], order="NHWC", **args, **TIGHT)
    check_infer("ConvGradient", [x_nhwc, w_nhwc, y], n_outputs=3, order="NHWC", **args)


def test_conv_aliases_and_gradient_names():
    x, w, b = _data((1, 2, 5, 5), (3, 2, 3, 3))
    (y,) = run_op("Conv", [x, w, b], kernel=3)
    for alias in ("Conv2D",):
        np.testing.assert_array_equal(run_op(alias, [x, w, b], kernel=3)[0], y)
    (y1,) = run_op("Conv1D", [x[:, :, 0], w[:, :, 0]], kernels=[3])
    np.testing.assert_allclose(y1, naive_conv(x[:, :, 0], w[:, :, 0], None, (1,), (0,), (0,), (1,)), rtol=1e-10)
    x3, w3 = np.random.default_rng(0).standard_normal((1, 2, 3, 3, 3)), np.ones((1, 2, 2, 2, 2))
    (y3,) = check_infer("Conv3D", [x3, w3], kernel=2)
    assert y3.shape == (1, 1, 2, 2, 2)

    def grads(op_type, inputs, **args):
        op = make_op(op_type, inputs, ["Y"], **args)
        return gradient_ops_for(op, ["Y_grad"])

    ops, g_in = grads("Conv2D", ["X", "W", "b"], kernel=3)
    assert [o.type for o in ops] == ["Conv2DGradient"]
    assert list(ops[0].input) == ["X", "W", "Y_grad"] and list(ops[0].output) == ["W_grad", "b_grad", "X_grad"]
    assert g_in == ["X_grad", "W_grad", "b_grad"] and ops[0].is_gradient_op
    assert [a.name for a in ops[0].arg] == ["kernel"]
    ops, g_in = grads("Conv", ["X", "W"], kernel=3)
    assert list(ops[0].output) == ["W_grad", "X_grad"] and g_in == ["X_grad", "W_grad"]
    assert (ops[0].arg[0].name, ops[0].arg[0].i) == ("no_bias", 1)
    ops, g_in = grads("Conv", ["X", "W", "b"], kernel=3, no_gradient_to_input=1)
    assert list(ops[0].output) == ["W_grad", "b_grad"] and g_in == [None, "W_grad", "b_grad"]
    ops, g_in = grads("Conv", ["X", "W"], kernel=3, no_gradient_to_input=1)
    assert list(ops[0].output) == ["W_grad"] and g_in == [None, "W_grad"]


@pytest.mark.parametrize("with_bias,no_dx", [(True, False), (True, True), (False, False), (False, True)])
def test_conv_gradient_output_layouts(with_bias, no_dx):
    """Every ConvGradient layout gives the same numbers as the full [dW, db, dX] one."""
    x, w, b = _data((2, 2, 5, 4), (3, 2, 2, 3))
    dy = np.random.default_rng(5).standard_normal((2, 3, 4, 2))
    full = run_op("ConvGradient", [x, w, dy], n_outputs=3, kernels=[2, 3])
    args = dict(kernels=[2, 3], no_gradient_to_input=int(no_dx))
    ws = Workspace("t")
    for name, value in (("X", x), ("W", w), ("b", b), ("dY", dy)):
        ws.feed(name, value)
    ops, g_in = gradient_ops_for(make_op("Conv", ["X", "W", "b"] if with_bias else ["X", "W"], ["Y"], **args),
                                 ["dY"])
    run_ops(ops, ws)
    np.testing.assert_allclose(ws.fetch("W_grad"), full[0], rtol=1e-12)
    if with_bias:
        np.testing.assert_allclose(ws.fetch("b_grad"), full[1], rtol=1e-12)
    if no_dx:
        assert g_in[0] is None and not ws.has("X_grad")
    else:
        np.testing.assert_allclose(ws.fetch("X_grad"), full[2], rtol=1e-12)


@pytest.mark.parametrize("args,inputs,match", [
    (dict(kernel=3, kernels=[3, 3]), None, r"conflicting spellings of kernel: kernel and kernels"),
    (dict(kernel=3, kernel_h=3, kernel_w=3), None, r"conflicting spellings of kernel"),
    (dict(kernel=3, stride=1, strides=[1, 1]), None, r"conflicting spellings of stride"),
    (dict(kernel=3, pad=1, pad_t=1, pad_l=1, pad_b=1, pad_r=1), None, r"conflicting spellings of pad"),
    (dict(kernel=3, dilation=1, dilations=[1, 1]), None, r"conflicting spellings of dilation"),
    (dict(kernel=3, pad_t=1, pad_b=1), None, r"pad_t, pad_b is set without pad_l, pad_r"),
    (dict(kernel_h=3), None, r"kernel_h is set without kernel_w"),
    (dict(kernel=3, legacy_pad=2, pad=1), None, r"legacy_pad SAME computes the padding itself"),
    (dict(kernel=3, legacy_pad=1, pads=[0, 0, 0, 0]), None, r"legacy_pad VALID"),
    (dict(kernel=3, legacy_pad=7), None, r"unknown legacy_pad 7"),
    (dict(kernel=3, legacy_pad=2, dilation=2), None, r"SAME does not support dilation"),
    (dict(kernel=3, group=2, dilation=2), "group", r"group and dilation cannot be combined"),
    (dict(), None, r"kernel size is not set"),
    (dict(kernel=5), None, r"kernel \[5, 5\] does not match the filter's spatial dims \[3, 3\].*'in1'"),
    (dict(kernels=[3]), None, r"kernels gives 1 value\(s\) \[3\], but the input has 2 spatial dim"),
    (dict(kernel=3, pads=[1, 1]), None, r"pads gives 2 value\(s\).*4 values \(2 begin pads, then 2 end pads\)"),
    (dict(kernel=3, stride=0), None, r"stride \[0\] must be positive"),
    (dict(kernel=3, pad=-1), None, r"must not be negative"),
    (dict(kernel=3, order="NCWH"), None, r"order 'NCWH' is not NCHW or NHWC"),
    (dict(kernel=3, global_pooling=1), None, r"global_pooling is an argument of the pooling ops"),
])
def test_conv_argument_errors(args, inputs, match):
    x, w, b = _data((1, 4, 6, 6), (2, 4, 3, 3))
    if inputs == "group":
        w = w[:, :2]
    with pytest.raises(Exception, match=r"op #0 \(Conv\).*" + match):
        run_op("Conv", [x, w, b], **args)


@pytest.mark.parametrize("xs,ws,bs,args,match", [
    ((1, 4, 6, 6), (2, 3, 3, 3), 2, dict(kernel=3), r"X has 4 channels but the filter .* takes 3 per group x 1.*'in1'"),
    ((1, 4, 6, 6), (3, 2, 3, 3), 3, dict(kernel=3, group=2), r"3 output channels do not divide into 2 groups"),
    ((1, 4, 6, 6), (2, 4, 3, 3), 3, dict(kernel=3), r"bias has shape \(3,\).*must be \[2\].*'in2'"),
    ((1, 6, 6, 4), (2, 3, 3, 2), 2, dict(kernel=3, order="NHWC", group=2), r"NHWC does not support group"),
    ((1, 4, 6), (2, 4, 3), 2, dict(kernel=3, order="NHWC"), r"NHWC takes 4-D input"),
    ((1, 1, 3, 3, 3, 3), (1, 1, 2, 2, 2, 2), 1, dict(kernel=2), r"1 to 3 spatial dims.*'in0'"),
    ((1, 4, 2, 6), (2, 4, 3, 3), 2, dict(kernel=3), r"input size 2 plus pads \(0, 0\) is smaller than the dilated"),
    ((1, 4, 6, 6), (2, 4, 3), 2, dict(kernel=3), r"needs a 4-D filter"),
])
def test_conv_shape_errors(xs, ws, bs, args, match):
    rng = np.random.default_rng(0)
    with pytest.raises(Exception, match=match):
        run_op("Conv", [rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(bs)], **args)


def test_conv_strict_argument_types():
    x, w, b = _data((1, 2, 5, 5), (2, 2, 3, 3))
    with pytest.raises(Exception, match=r"argument 'kernel' must be an int"):
        run_op("Conv", [x, w, b], kernel=3.0)


# --------------------------------------------------------------------------------------------
# ConvTranspose
# --------------------------------------------------------------------------------------------
# id, X (NCHW), W [Cin, Cout, kh, kw], args, (stride, heads, tails, adj)
CONVT_CASES = [
    ("basic", (2, 3, 3, 4), (3, 2, 3, 3), dict(kernel=3), ((1, 1), (0, 0), (0, 0), (0, 0))),
    ("stride-pad-adj", (1, 2, 3, 3), (2, 3, 3, 3), dict(kernel=3, stride=2, pad=1, adj=1),
     ((2, 2), (1, 1), (1, 1), (1, 1))),
    ("hw-spellings", (1, 2, 3, 4), (2, 2, 3, 2),
     dict(kernel_h=3, kernel_w=2, stride_h=2, stride_w=3, pad_t=1, pad_l=0, pad_b=0, pad_r=2, adj_h=1, adj_w=0),
     ((2, 3), (1, 0), (0, 2), (1, 0))),
    ("list-spellings-adj-eq-stride", (1, 2, 2, 3), (2, 1, 2, 3),
     dict(kernels=[2, 3], strides=[2, 1], pads=[0, 1, 1, 0], adjs=[2, 1]), ((2, 1), (0, 1), (1, 0), (2, 1))),
    ("valid", (1, 2, 3, 3), (2, 2, 2, 2), dict(kernel=2, stride=2, legacy_pad=1), ((2, 2), (0, 0), (0, 0), (0, 0))),
]


@pytest.mark.parametrize("case", CONVT_CASES, ids=[c[0] for c in CONVT_CASES])
@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
def test_conv_transpose(case, order):
    _, xs, ws, args, (stride, heads, tails, adj) = case
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[1])
    expect = naive_conv_transpose(x, w, b, stride, heads, tails, adj)
    if order == "NHWC":
        x, w, expect = _nhwc(x), _nhwc(w), _nhwc(expect)
    (y,) = check_infer("ConvTranspose", [x, w, b], order=order, **args)
    np.testing.assert_allclose(y, expect, rtol=1e-10, atol=1e-12)
    check_gradient("ConvTranspose", [x, w, b], order=order, **args, **TIGHT)
    check_gradient("ConvTranspose", [x, w], order=order, **args, **TIGHT)
    check_infer("ConvTransposeGradient", [x, w, y], n_outputs=3, order=order, **args)
    ops, _ = gradient_ops_for(make_op("ConvTranspose", ["X", "W"], ["Y"], order=order, **args), ["dY"])
    assert ops[0].type == "ConvTransposeGradient" and list(ops[0].output) == ["W_grad", "X_grad"]


@pytest.mark.parametrize("args,match", [
    (dict(kernel=3, stride=1, adj=2), r"adj 2 must not exceed stride 1"),
    (dict(kernel=3, group=2), r"does not support group"),
    (dict(kernel=3, dilation=2), r"does not support dilation"),
    (dict(kernel=3, legacy_pad=3), r"does not support legacy_pad CAFFE_LEGACY_POOLING"),
    (dict(kernel=3, adj=1, adjs=[1, 1]), r"conflicting spellings of adj"),
    (dict(kernel=3, pad=2), r"output size would be"),
])
def test_conv_transpose_errors(args, match):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 1, 1)), rng.standard_normal((2, 2, 3, 3))
    with pytest.raises(Exception, match=match):
        run_op("ConvTranspose", [x, w], **args)


# --------------------------------------------------------------------------------------------
# torch as a second, optional oracle
# --------------------------------------------------------------------------------------------
def test_conv_matches_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(11)
    fns = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
    for trial in range(24):
        rank = 1 + trial % 3
        group = [1, 2, 3][trial % 3] if trial % 4 else 1
        c, m = group * int(rng.integers(1, 3)), group * int(rng.integers(1, 3))
        kernel = [int(k) for k in rng.integers(1, 4, rank)]
        stride = [int(s) for s in rng.integers(1, 3, rank)]
        dilation = [int(d) for d in rng.integers(1, 3, rank)] if group == 1 else [1] * rank
        pads = [int(p) for p in rng.integers(0, 3, 2 * rank)]
        size = [int(s) for s in rng.integers(5, 8, rank)]
        x = rng.standard_normal([2, c] + size).astype(np.float32)
        w = rng.standard_normal([m, c // group] + kernel).astype(np.float32)
        b = rng.standard_normal(m).astype(np.float32)
        (y,) = check_infer("Conv", [x, w, b], kernels=kernel, strides=stride, dilations=dilation, pads=pads,
                           group=group)
        torch_pad = []
        for d in reversed(range(rank)):  # F.pad lists the last dim first
            torch_pad += [pads[d], pads[rank + d]]
        xt = F.pad(torch.from_numpy(x), torch_pad)
        expect = fns[rank](xt, torch.from_numpy(w), torch.from_numpy(b), stride=stride, dilation=dilation,
                           groups=group).numpy()
        np.testing.assert_allclose(y, expect, rtol=1e-4, atol=1e-4, err_msg=f"trial {trial}")


def test_conv_transpose_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    for trial in range(8):
        kernel = [int(k) for k in rng.integers(1, 4, 2)]
        stride = [int(s) for s in rng.integers(1, 4, 2)]
        adj = [int(rng.integers(0, s)) for s in stride]
        pads = [int(rng.integers(0, k)) for k in kernel * 2]
        x = rng.standard_normal((2, 3, 4, 3)).astype(np.float32)
        w = rng.standard_normal([3, 2] + kernel).astype(np.float32)
        b = rng.standard_normal(2).astype(np.float32)
        (y,) = check_infer("ConvTranspose", [x, w, b], kernels=kernel, strides=stride, pads=pads, adjs=adj)
        # torch crops pads symmetrically; crop the unpadded result ourselves for asymmetric pads.
        full = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                                    stride=stride, output_padding=adj).numpy()
        expect = full[:, :, pads[0]:full.shape[2] - pads[2], pads[1]:full.shape[3] - pads[3]]
        np.testing.assert_allclose(y, expect, rtol=1e-4, atol=1e-4, err_msg=f"trial {trial}")


# --------------------------------------------------------------------------------------------
# Real model, real data: the Caffe2-exported LeNet's Conv/MaxPool ops (kernels/strides/pads/dilations)
# --------------------------------------------------------------------------------------------
def _load_lenet():
    model = shared_path("models", "lenet_pytorch_export")
    init, predict = caffe2_pb2.NetDef(), caffe2_pb2.NetDef()
    init.ParseFromString((model / "init_net.pb").read_bytes())
    predict.ParseFromString((model / "predict_net.pb").read_bytes())
    weights = {}
    for op in init.op:
        a = {x.name: x for x in op.arg}
        weights[op.output[0]] = np.array(a["values"].floats, np.float32).reshape(list(a["shape"].ints))
    return predict, weights


def _mnist(n: int) -> tuple[np.ndarray, np.ndarray]:
    data = shared_path("data", "mnist")
    with gzip.open(data / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16)[:n * 784]
    with gzip.open(data / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return images.reshape(n, 1, 28, 28).astype(np.float32) / 255, labels


def test_lenet_conv_pool_on_real_digits():
    predict, weights = _load_lenet()
    x, labels = _mnist(500)
    convs = [op for op in predict.op if op.type == "Conv"]
    pools = [op for op in predict.op if op.type == "MaxPool"]
    assert {a.name for a in convs[0].arg} >= {"kernels", "strides", "pads", "dilations"}

    def run(op, inputs):
        ws = Workspace("lenet")
        for name, value in zip(op.input, inputs):
            ws.feed(name, value)
        run_ops([op], ws)
        return ws.fetch(op.output[0])

    # Layer 1 against the direct loops on a few digits, then the whole net's accuracy.
    y1 = run(convs[0], [x, weights["2"]])
    np.testing.assert_allclose(y1[:2], naive_conv(x[:2].astype(np.float64), weights["2"].astype(np.float64), None,
                                                  (1, 1), (0, 0), (0, 0), (1, 1)), rtol=1e-4, atol=1e-5)
    h = np.maximum(run(pools[0], [y1 + weights["3"].reshape(1, -1, 1, 1)]), 0)
    h = run(convs[1], [h, weights["4"]]) + weights["5"].reshape(1, -1, 1, 1)
    h = np.maximum(run(pools[1], [h]), 0).reshape(len(x), -1)
    logits = (h @ weights["6"].T + weights["7"]) @ weights["8"].T + weights["9"]
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    assert accuracy >= 0.97, accuracy
