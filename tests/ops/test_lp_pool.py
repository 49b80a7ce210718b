"""LpPool and LpPoolGradient: a per-window loop as the independent formula, NCHW and NHWC, pads and
strides, p = 1, 2, 3, inference vs actual, and finite-difference gradient checks."""
import math

import numpy as np
import pytest

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.proto.args import make_op
from netjit.runtime.errors import NetJitError
from tests.compiler.helpers import assert_same_blobs, netdef, op, run_compiled, run_reference
from tests.ops.harness import check_gradient, check_infer, run_op


def _loop_lp(x, k, s, pad, p):
    """Caffe2's NCHW loop: windows clipped to the image, Σ|x|^p then the 1/p power."""
    n, c, h, w = x.shape
    oh, ow = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    y = np.zeros((n, c, oh, ow))
    for i, j, ph, pw in np.ndindex(n, c, oh, ow):
        h0, w0 = ph * s - pad, pw * s - pad
        acc = sum(abs(x[i, j, hh, ww]) ** p for hh in range(max(h0, 0), min(h0 + k, h))
                  for ww in range(max(w0, 0), min(w0 + k, w)))
        y[i, j, ph, pw] = acc ** (1 / p)
    return y


def test_hand_checked_window():
    x = np.array([[[[3.0, -4.0], [0.0, 0.0]]]], np.float32)
    (y,) = check_infer("LpPool", [x], kernel=2)
    assert y.shape == (1, 1, 1, 1) and y.dtype == np.float32 and y.item() == 5.0
    (y1,) = run_op("LpPool", [x], kernel=2, p=1.0)
    assert y1.item() == 7.0


@pytest.mark.parametrize("args", [{"kernel": 2, "stride": 2}, {"kernel": 3, "stride": 2, "pad": 1},
                                  {"kernel": 3, "stride": 1, "pad": 1, "p": 3.0}, {"kernel": 2, "p": 1.0}])
def test_matches_loop(args):
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 6))
    (y,) = check_infer("LpPool", [x], **args)
    want = _loop_lp(x, args["kernel"], args.get("stride", 1), args.get("pad", 0), args.get("p", 2.0))
    np.testing.assert_allclose(y, want, rtol=1e-12)
    # NHWC gives the same values transposed.
    (yt,) = check_infer("LpPool", [np.ascontiguousarray(x.transpose(0, 2, 3, 1))], order="NHWC", **args)
    np.testing.assert_allclose(yt, want.transpose(0, 2, 3, 1), rtol=1e-12)


@pytest.mark.parametrize("args", [{"kernel": 2, "stride": 2}, {"kernel": 3, "stride": 2, "pad": 1},
                                  {"kernel": 2, "stride": 1, "p": 3.0}])
@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
def test_gradient(args, order):
    x = np.random.default_rng(2).standard_normal((2, 2, 4, 5) if order == "NCHW" else (2, 4, 5, 2))
    check_gradient("LpPool", [x], eps=1e-6, rtol=1e-5, atol=1e-8, order=order, **args)


def test_gradient_maker_and_errors():
    ops, g = gradient_ops_for(make_op("LpPool", ["X"], ["Y"], kernel=2, p=3.0), ["Y_grad"])
    assert [(o.type, list(o.input), list(o.output)) for o in ops] == [("LpPoolGradient", ["X", "Y", "Y_grad"], ["X_grad"])]
    assert {a.name for a in ops[0].arg} == {"kernel", "p"}
    with pytest.raises(NetJitError, match=r"\(LpPool\).*floating-point.*'in0'"):
        run_op("LpPool", [np.zeros((1, 1, 2, 2), np.int32)], kernel=2)
    with pytest.raises(NetJitError, match=r"\(LpPoolGradient\).*dY has shape.*'in2'"):
        x = np.ones((1, 1, 4, 4))
        run_op("LpPoolGradient", [x, np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3))], kernel=2, stride=2)
    with pytest.raises(NetJitError, match="argument 'p' must be a float"):
        run_op("LpPool", [np.ones((1, 1, 2, 2))], kernel=2, p=2)


def test_in_a_compiled_plan():
    feeds = {"x": np.random.default_rng(3).standard_normal((1, 2, 6, 6)).astype(np.float32)}
    net = netdef("lp", [op("LpPool", ["x"], ["y"], kernel=2, stride=2), op("Relu", ["y"], ["z"])])
    ws, _ = run_compiled(net, feeds)
    assert_same_blobs(run_reference(net, feeds), ws)
    assert math.isfinite(float(ws.fetch("z").sum()))
