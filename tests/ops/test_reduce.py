"""ReduceSum/ReduceMean and the front/back reducers: numpy references, shape inference, gradients
(numerical), lengths, errors, and the compiled executor."""
from __future__ import annotations

import numpy as np
import pytest

from netjit.proto.args import make_op
from netjit.runtime.errors import OpError
from tests.ops.harness import check_gradient, check_infer, run_op

R = np.random.default_rng(11)
X = R.standard_normal((2, 3, 4, 5)).astype(np.float32)


@pytest.mark.parametrize("op,np_fn", [("ReduceSum", np.sum), ("ReduceMean", np.mean)])
@pytest.mark.parametrize("axes,keepdims", [([], 1), ([2, 3], 0), ([1], 1), ([0, 2], 0), ([3, 1], 1)])
def test_axes_reducers(op, np_fn, axes, keepdims):
    kwargs = {"keepdims": keepdims} | ({"axes": axes} if axes else {})
    (got,) = check_infer(op, [X], **kwargs)
    want = np_fn(X.astype(np.float64), axis=tuple(axes) if axes else None, keepdims=bool(keepdims))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean"])
@pytest.mark.parametrize("axes,keepdims", [([], 1), ([1, 2], 0), ([0, 2], 1)])
def test_axes_reducer_gradients(op, axes, keepdims):
    kwargs = {"keepdims": keepdims} | ({"axes": axes} if axes else {})
    x = R.standard_normal((2, 3, 2)).astype(np.float64)
    check_gradient(op, [x], eps=1e-6, rtol=1e-6, atol=1e-8, **kwargs)
    (y,) = run_op(op, [x], **kwargs)
    (dx,) = check_infer(op + "Gradient", [np.ones_like(y), x, y], **kwargs)
    assert dx.shape == x.shape


def test_axes_reducers_keep_float64_and_reject_bad_axes():
    (got,) = run_op("ReduceMean", [X.astype(np.float64)], axes=[1])
    assert got.dtype == np.float64 and got.shape == (2, 1, 4, 5)
    with pytest.raises(OpError, match=r"ReduceSum.*axes \[4\] out of range.*in0"):
        run_op("ReduceSum", [X], axes=[4])
    with pytest.raises(OpError, match="float tensor"):
        run_op("ReduceSum", [np.ones(3, np.int32)])


FB = ["ReduceFrontSum", "ReduceFrontMean", "ReduceBackSum", "ReduceBackMean"]


def _fb_numpy(op: str, x: np.ndarray, k: int) -> np.ndarray:
    axes = tuple(range(k)) if "Front" in op else tuple(range(x.ndim - k, x.ndim))
    return (np.mean if op.endswith("Mean") else np.sum)(x.astype(np.float64), axis=axes)


@pytest.mark.parametrize("op", FB)
@pytest.mark.parametrize("k", [1, 2])
def test_front_back_reducers_and_gradients(op, k):
    (got,) = check_infer(op, [X], num_reduce_dim=k)
    np.testing.assert_allclose(got, _fb_numpy(op, X, k), rtol=1e-5, atol=1e-5)
    x64 = X[:1, :2].astype(np.float64)
    check_gradient(op, [x64], num_reduce_dim=k, eps=1e-6, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("op", FB)
def test_lengths_take_the_first_elements(op):
    x = R.standard_normal((4, 3)).astype(np.float64)
    front = "Front" in op
    lengths = np.array([4, 1, 2] if front else [3, 0, 1, 2], np.int32)
    (got,) = run_op(op, [x, lengths])
    view = x.T if front else x
    want = [view[j, :n].sum() / (n if op.endswith("Mean") else 1) if n else (np.nan if op.endswith("Mean") else 0)
            for j, n in enumerate(lengths)]
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
    keep = lengths > 0
    if keep.all():
        check_gradient(op, [x, lengths], wrt=[0], eps=1e-6, rtol=1e-6, atol=1e-8)
    with pytest.raises(OpError, match=r"lengths must lie in"):
        run_op(op, [x, lengths * 9])


def test_num_reduce_dims_spelling_and_range():
    (a,) = run_op("ReduceFrontSum", [X], num_reduce_dims=2)
    np.testing.assert_allclose(a, _fb_numpy("ReduceFrontSum", X, 2), rtol=1e-5, atol=1e-5)
    with pytest.raises(OpError, match="num_reduce_dim 5 is out of range"):
        run_op("ReduceBackMean", [X], num_reduce_dim=5)


def test_compiled_executor_matches_reference():
    from netjit.compiler.runner import make_runner
    from netjit.proto import caffe2_pb2
    from netjit.runtime.workspace import Workspace
    net = caffe2_pb2.NetDef(name="reduce_net")
    net.op.extend([make_op("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
                   make_op("Relu", ["m"], ["r"]),
                   make_op("ReduceBackSum", ["r"], ["s"]),
                   make_op("ReduceBackMeanGradient", ["s", "r"], ["g"])])
    out = {}
    for executor in ("reference", "compiled"):
        ws = Workspace(executor)
        ws.feed("x", X)
        make_runner(net, ws, executor=executor).run()
        out[executor] = [np.asarray(ws.get(b)) for b in ("m", "s", "g")]
    for a, b in zip(out["reference"], out["compiled"]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    want = np.broadcast_to(out["reference"][1][:, None] / 3, (2, 3))
    np.testing.assert_allclose(out["reference"][2], want, rtol=1e-6)


def test_gradient_ops_reject_a_mismatched_output_gradient():
    with pytest.raises(OpError, match=r"ReduceMeanGradient.*output gradient.*in0"):
        run_op("ReduceMeanGradient", [np.ones(5, np.float32), X, np.ones(1, np.float32)],
               axes=[1])
