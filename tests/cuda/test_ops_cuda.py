"""Table-driven: every op the numba-cuda backend claims, CUDA (simulator or GPU) vs the numpy
reference, forward and gradient ops; tiny shapes (the simulator costs ~0.1 ms per thread)."""
from __future__ import annotations

import numpy as np
import pytest

from netjit.compiler.codegen import numba_cuda
from netjit.proto.args import make_op
from tests.cuda.conftest import run_reference_and_cuda

R = np.random.default_rng(7)


def f32(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


def pos(*shape: int) -> np.ndarray:
    return (R.random(shape) * 0.9 + 0.05).astype(np.float32)


X4 = f32(2, 2, 5, 5)
W4 = f32(3, 2, 3, 3)
POOL = dict(kernel=2, stride=2)
CASES = [
    # (id, op type, inputs, outputs, args)
    ("FC", "FC", dict(X=f32(3, 4), W=f32(5, 4), b=f32(5)), ["Y"], {}),
    ("FCGradient", "FCGradient", dict(X=f32(3, 4), W=f32(5, 4), dY=f32(3, 5)), ["dW", "db", "dX"], {}),
    ("MatMul", "MatMul", dict(A=f32(3, 4), B=f32(5, 4)), ["Y"], dict(trans_b=1)),
    ("Conv", "Conv", dict(X=X4, W=W4, b=f32(3)), ["Y"], dict(kernel=3, pad=1, stride=2)),
    ("ConvGradient", "ConvGradient", dict(X=X4, W=W4, dY=f32(2, 3, 3, 3)), ["dW", "db", "dX"],
     dict(kernel=3, pad=1, stride=2)),
    ("MaxPool", "MaxPool", dict(X=f32(2, 2, 4, 4)), ["Y"], POOL),
    ("AveragePool", "AveragePool", dict(X=f32(2, 2, 5, 5)), ["Y"], dict(kernel=3, stride=2, pad=1)),
    ("Softmax", "Softmax", dict(X=f32(3, 6)), ["Y"], {}),
    ("SoftmaxGradient", "SoftmaxGradient", dict(Y=pos(3, 6), dY=f32(3, 6)), ["dX"], {}),
    ("AveragedLoss", "AveragedLoss", dict(X=f32(4, 3)), ["L"], {}),
    ("LabelCrossEntropy", "LabelCrossEntropy", dict(X=pos(3, 5), L=np.array([0, 4, 2], np.int32)), ["Y"], {}),
    ("LabelCrossEntropyGradient", "LabelCrossEntropyGradient",
     dict(X=pos(3, 5), L=np.array([0, 4, 2], np.int32), dY=f32(3)), ["dX"], {}),
    ("SoftmaxWithLoss", "SoftmaxWithLoss", dict(X=f32(3, 5), L=np.array([1, 0, 4], np.int32)), ["P", "loss"], {}),
    ("SoftmaxWithLossGradient", "SoftmaxWithLossGradient",
     dict(X=f32(3, 5), L=np.array([1, 0, 4], np.int32), P=pos(3, 5), dL=np.array(0.7, np.float32)), ["dX"], {}),
    ("SpatialBN (train)", "SpatialBN",
     dict(X=f32(2, 3, 2, 2), s=pos(3), b=f32(3), m=f32(3), v=pos(3)), ["Y", "m", "v", "sm", "si"],
     dict(is_test=0, epsilon=1e-3, momentum=0.8)),
    ("SpatialBNGradient", "SpatialBNGradient",
     dict(X=f32(2, 3, 2, 2), s=pos(3), dY=f32(2, 3, 2, 2), sm=f32(3), si=pos(3)), ["dX", "ds", "db"],
     dict(is_test=0, epsilon=1e-3)),
    ("ReduceSum (axes 2,3)", "ReduceSum", dict(X=f32(2, 3, 2, 2)), ["Y"], dict(axes=[2, 3], keepdims=0)),
    ("ReduceMean (all)", "ReduceMean", dict(X=f32(2, 3, 4)), ["Y"], {}),
    ("ReduceSumGradient", "ReduceSumGradient", dict(dY=f32(2, 1, 1, 2), X=f32(2, 3, 2, 2), Y=f32(2, 1, 1, 2)),
     ["dX"], dict(axes=[1, 2])),
    ("ReduceMeanGradient", "ReduceMeanGradient", dict(dY=f32(2, 3), X=f32(2, 3, 4), Y=f32(2, 3)), ["dX"],
     dict(axes=[2], keepdims=0)),
    ("ReduceFrontSum", "ReduceFrontSum", dict(X=f32(3, 2, 2)), ["Y"], {}),
    ("ReduceBackMean", "ReduceBackMean", dict(X=f32(2, 3, 5)), ["Y"], dict(num_reduce_dim=2)),
    ("ReduceFrontMeanGradient", "ReduceFrontMeanGradient", dict(dY=f32(2, 2), X=f32(3, 2, 2)), ["dX"], {}),
    ("ReduceBackSumGradient", "ReduceBackSumGradient", dict(dY=f32(2, 3), X=f32(2, 3, 4)), ["dX"], {}),
    ("elementwise chain", None, None, None, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op_matches_reference(case):
    name, op_type, inputs, outputs, args = case
    if op_type is None:
        x, y = f32(2, 3), f32(3)
        ops = [make_op("Sigmoid", ["x"], ["s"]), make_op("Add", ["s", "y"], ["t"], broadcast=1),
               make_op("Tanh", ["t"], ["u"]), make_op("Mul", ["u", "x"], ["v"])]
        ref, got, text = run_reference_and_cuda(ops, dict(x=x, y=y), ["v", "t"])
        assert "Fused(Sigmoid,Add,Tanh,Mul)" in text and text.count("backend=numba-cuda") == 1
    else:
        ops = [make_op(op_type, list(inputs), outputs, **args)]
        ref, got, text = run_reference_and_cuda(ops, inputs, outputs)
        assert "[kernel]" in text and "host steps" in text and " 0 host steps" in text, text
        assert "backend=numba-cuda" in text
    for b in ref:
        assert got[b].shape == ref[b].shape and got[b].dtype == ref[b].dtype, b
        np.testing.assert_allclose(got[b], ref[b], rtol=2e-4, atol=2e-5, err_msg=f"{name}: {b}")


def test_every_claimed_op_is_in_the_table():
    from netjit.compiler.ops.registry import lookup
    tested = {c[1] for c in CASES if c[1]} | {"MaxPoolGradient", "AveragePoolGradient"}
    tested |= {"ReduceFrontMean", "ReduceBackSum", "ReduceFrontSumGradient", "ReduceBackMeanGradient"}  # below
    tested_refs = {lookup(t).reference for t in tested}
    # Aliases (Conv2D, MaxPool1D, ...) share their op's record and kernels.
    untested = [op for op in numba_cuda.claimed_ops() if lookup(op).reference not in tested_refs]
    assert not untested, untested


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_gradient_matches_reference_and_finite_differences(op):
    x = f32(1, 2, 4, 4)
    args = dict(kernel=2, stride=2) if op == "MaxPool" else dict(kernel=3, stride=1, pad=1)
    ops = [make_op(op, ["X"], ["Y"], **args), make_op(op + "Gradient", ["X", "Y", "dY"], ["dX"], **args)]
    from netjit.compiler.ops.pool import pool_setup
    from netjit.compiler.ops.registry import lookup
    out_shape = pool_setup(lookup(op).decode_args(ops[0]), x.shape)[2]
    dy = f32(*out_shape)
    ref, got, _ = run_reference_and_cuda(ops, dict(X=x, dY=dy), ["Y", "dX"])
    for b in ref:
        np.testing.assert_allclose(got[b], ref[b], rtol=1e-4, atol=1e-5)
    # Numerical gradient of sum(Y * dY) through the CUDA forward, at a few positions.
    from netjit import workspace
    from tests.cuda.conftest import gpu_option
    def loss(xv):
        workspace.FeedBlob("X", xv, gpu_option())
        workspace.RunNet("t")
        return float((workspace.FetchBlob("Y").astype(np.float64) * dy).sum())
    eps = 1e-2
    for idx in [(0, 0, 1, 2), (0, 1, 3, 3)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        assert abs((loss(xp) - loss(xm)) / (2 * eps) - got["dX"][idx]) < 2e-2


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "plain"])
def test_gemm_kernels_against_numpy(tiled):
    """Both GEMM kernels (the simulator's default is the plain one), every operand layout: plain,
    transposed, and the channel layout of a convolution's [N, C, P] tensors, with the epilogue."""
    from netjit.compiler.codegen.cuda_gemm import Gemm
    from netjit.runtime.device import cuda
    m, n, k = 5, 6, 7
    a, b, bias = f32(m, k), f32(k, n), f32(n)
    c = cuda().device_array((m, n), np.float32)
    Gemm(m, n, k, (k, 1, 0), (n, 1, 0), bias_mode=1, relu=True, tiled=tiled)(
        cuda().to_device(a), cuda().to_device(b), c, cuda().to_device(bias))
    np.testing.assert_allclose(c.copy_to_host(), np.maximum(a @ b + bias, 0), rtol=1e-5, atol=1e-5)
    at = np.ascontiguousarray(a.T)
    Gemm(m, n, k, (1, m, 0), (n, 1, 0), alpha=0.5, tiled=tiled)(cuda().to_device(at), cuda().to_device(b), c)
    np.testing.assert_allclose(c.copy_to_host(), 0.5 * a @ b, rtol=1e-5, atol=1e-5)
    # Channel layout: B is dY [N=2, C=k, P=3] seen as [k, 2*3]; C written as [N=2, m, P=3].
    dy = f32(2, k, 3)
    out = cuda().device_array((2, m, 3), np.float32)
    Gemm(m, 6, k, (k, 1, 0), (0, 0, 3), c_p=3, bias_mode=2, tiled=tiled)(
        cuda().to_device(a), cuda().to_device(dy), out, cuda().to_device(bias[:m].copy()))
    want = np.einsum("mk,nkp->nmp", a, dy) + bias[:m][None, :, None]
    np.testing.assert_allclose(out.copy_to_host(), want, rtol=1e-5, atol=1e-5)


GRAD_CASES = [
    # (forward op, its inputs, args, gradient op inputs (names), index of dX among the gradient's outputs)
    ("FC", dict(X=f32(2, 3), W=f32(4, 3), b=f32(4)), {}, ["X", "W", "dY"], ["gW", "gb", "dX"], 2),
    ("Conv", dict(X=f32(1, 2, 4, 4), W=f32(2, 2, 3, 3), b=f32(2)), dict(kernel=3, pad=1),
     ["X", "W", "dY"], ["gW", "gb", "dX"], 2),
    ("Softmax", dict(X=f32(2, 4)), {}, ["Y", "dY"], ["dX"], 0),
    ("SpatialBN", dict(X=f32(2, 2, 2, 2), s=pos(2), b=f32(2), m=f32(2), v=pos(2)), dict(is_test=0, epsilon=1e-3),
     ["X", "s", "dY", "sm", "si"], ["dX", "ds", "db"], 0),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_gradient_op_on_device_matches_finite_differences(case):
    """d/dX of sum(Y * dY), Y from the CUDA forward, against the CUDA gradient op."""
    from netjit import workspace
    from tests.cuda.conftest import gpu_option
    op_type, inputs, args, grad_inputs, grad_outputs, k = case
    outputs = ["Y", "m", "v", "sm", "si"] if op_type == "SpatialBN" else ["Y"]
    ops = [make_op(op_type, list(inputs), outputs, **args)]
    ref, got, _ = run_reference_and_cuda(ops, inputs, ["Y"])
    dy = f32(*ref["Y"].shape)
    ops.append(make_op(op_type + "Gradient", grad_inputs, grad_outputs, **args))
    x = inputs["X"]
    _, got, _ = run_reference_and_cuda(ops, dict(inputs, dY=dy), [grad_outputs[k]])
    dx = got[grad_outputs[k]]

    def loss(xv):
        workspace.FeedBlob("X", xv, gpu_option())
        for name in ("m", "v"):        # SpatialBN updates its running statistics in place
            if name in inputs:
                workspace.FeedBlob(name, inputs[name], gpu_option())
        workspace.RunNet("t")
        return float((workspace.FetchBlob("Y").astype(np.float64) * dy).sum())
    eps = 1e-2
    for idx in [(0,) * x.ndim, tuple(d - 1 for d in x.shape)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        num = (loss(xp) - loss(xm)) / (2 * eps)
        assert abs(num - dx[idx]) < 2e-2 * max(1.0, abs(num)), (idx, num, dx[idx])


def test_cublas_is_opt_in_and_never_in_the_simulator(monkeypatch):
    from netjit.compiler.codegen import cuda_gemm
    from netjit.runtime import device as dev
    monkeypatch.delenv("NETJIT_CUDA_CUBLAS", raising=False)
    assert not cuda_gemm.cublas_enabled()
    monkeypatch.setenv("NETJIT_CUDA_CUBLAS", "1")
    if dev.simulator_enabled():
        assert not cuda_gemm.cublas_enabled()
    g = cuda_gemm.Gemm(2, 3, 4, (4, 1, 0), (3, 1, 0))
    assert g.launch("x").backend == ("cublas" if g.cublas else "numba-cuda")


def _cupy_on_a_gpu() -> bool:
    from netjit.runtime import device as dev
    if dev.simulator_enabled():
        return False
    try:
        import cupy  # noqa: F401
        return True
    except Exception:  # noqa: BLE001
        return False


def test_cublas_layouts_with_numpy_standing_in_for_cupy(monkeypatch):
    """The cuBLAS path's operand views, channel-layout write and epilogues, checked without a GPU:
    numpy has the cupy calls it makes (asarray, as_strided, matmul, reshape, maximum)."""
    import sys
    import types
    from numpy.lib import stride_tricks
    from netjit.compiler.codegen.cuda_gemm import Gemm
    fake = types.ModuleType("cupy")
    fake.asarray, fake.matmul, fake.maximum = np.asarray, np.matmul, np.maximum
    fake.lib = types.SimpleNamespace(stride_tricks=stride_tricks)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "cupy.lib", fake.lib)
    monkeypatch.setitem(sys.modules, "cupy.lib.stride_tricks", stride_tricks)
    m, k, nb, p = 3, 4, 2, 5
    w, col, bias = f32(m, k), f32(k, nb * p), f32(m)
    out = np.zeros((nb, m, p), np.float32)
    Gemm(m, nb * p, k, (k, 1, 0), (nb * p, 1, 0), c_p=p, bias_mode=2, relu=True)._cublas(w, col, out, bias)
    want = np.maximum((w @ col).reshape(m, nb, p).transpose(1, 0, 2) + bias[None, :, None], 0)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    x, wt, b = f32(4, k), f32(m, k), f32(m)              # FC: X · W^T + b, W read transposed
    y = np.zeros((4, m), np.float32)
    Gemm(4, m, k, (k, 1, 0), (1, k, 0), bias_mode=1, alpha=2.0)._cublas(x, wt, y, b)
    np.testing.assert_allclose(y, 2 * x @ wt.T + b, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not _cupy_on_a_gpu(), reason="cuBLAS runs through cupy on a real GPU only")
def test_cublas_gemms_and_conv_match_numpy(monkeypatch):
    """NETJIT_CUDA_CUBLAS=1: FC, MatMul-style transposes and the forward Conv (written in the
    channel layout, bias and Relu after) through cuBLAS, against numpy and the reference."""
    from netjit.compiler.codegen import cuda_runner
    from netjit.compiler.codegen.cuda_gemm import Gemm
    from netjit.runtime.device import cuda
    monkeypatch.setenv("NETJIT_CUDA_CUBLAS", "1")
    m, n, k = 5, 6, 7
    a, b, bias = f32(m, k), f32(k, n), f32(n)
    c = cuda().device_array((m, n), np.float32)
    g = Gemm(m, n, k, (k, 1, 0), (n, 1, 0), bias_mode=1, relu=True)
    assert g.cublas and g.launch("x").backend == "cublas"
    g(cuda().to_device(a), cuda().to_device(b), c, cuda().to_device(bias))
    np.testing.assert_allclose(c.copy_to_host(), np.maximum(a @ b + bias, 0), rtol=1e-5, atol=1e-5)
    Gemm(m, n, k, (1, m, 0), (n, 1, 0), alpha=0.5)(cuda().to_device(np.ascontiguousarray(a.T)),
                                                   cuda().to_device(b), c)
    np.testing.assert_allclose(c.copy_to_host(), 0.5 * a @ b, rtol=1e-5, atol=1e-5)
    cuda_runner._CACHE.clear()          # plans made before the switch keep their kernels
    inputs = dict(X=f32(2, 3, 5, 5), W=f32(4, 3, 3, 3), b=f32(4))
    ops = [make_op("Conv", ["X", "W", "b"], ["y"], kernel=3, pad=1, stride=2), make_op("Relu", ["y"], ["y"])]
    ref, got, text = run_reference_and_cuda(ops, inputs, ["y"])
    assert "backend=cublas" in text and "Conv+Relu" in text, text
    np.testing.assert_allclose(got["y"], ref["y"], rtol=1e-4, atol=1e-5)
    cuda_runner._CACHE.clear()


def test_conv_with_batchnorm_and_relu_epilogue():
    """ResNet's Conv -> SpatialBN(is_test) -> Relu written in place: one producer group, the GEMM
    then one generated epilogue kernel reading its result (per-channel operands broadcast)."""
    inputs = dict(X=f32(2, 3, 5, 5), W=f32(4, 3, 3, 3), s=pos(4), b=f32(4), m=f32(4), v=pos(4))
    ops = [make_op("Conv", ["X", "W"], ["y"], kernel=3, pad=1),
           make_op("SpatialBN", ["y", "s", "b", "m", "v"], ["y"], is_test=1, epsilon=1e-3),
           make_op("Relu", ["y"], ["y"]),
           make_op("Add", ["y", "b"], ["z"], broadcast=1, axis=1)]
    ref, got, text = run_reference_and_cuda(ops, inputs, ["y", "z"])
    assert "Fused(Conv,SpatialBN,Relu" in text and " 0 host steps" in text, text
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", ["ReduceFrontMean", "ReduceBackSum"])
def test_front_back_reducer_gradient_on_device_matches_finite_differences(op):
    """The forward and its gradient op as device kernels; d/dX of sum(Y * dY) by central differences
    through the device forward. (Same kernels as the table's Front/Back Sum/Mean cases.)"""
    from netjit import workspace
    from tests.cuda.conftest import gpu_option
    x = f32(3, 2, 2)
    fwd = make_op(op, ["X"], ["Y"], num_reduce_dim=1)
    ref, _, text = run_reference_and_cuda([fwd], dict(X=x), ["Y"])
    assert " 0 host steps" in text, text
    dy = f32(*ref["Y"].shape)
    ops = [fwd, make_op(op + "Gradient", ["dY", "X"], ["dX"], num_reduce_dim=1)]
    ref, got, text = run_reference_and_cuda(ops, dict(X=x, dY=dy), ["Y", "dX"])
    assert " 0 host steps" in text and "spread_mid" in text, text
    np.testing.assert_allclose(got["dX"], ref["dX"], rtol=1e-5, atol=1e-6)

    def loss(xv):
        workspace.FeedBlob("X", xv, gpu_option())
        workspace.RunNet("t")
        return float((workspace.FetchBlob("Y").astype(np.float64) * dy).sum())
    eps = 1e-2
    for idx in [(0, 0, 0), (2, 1, 1)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        assert abs((loss(xp) - loss(xm)) / (2 * eps) - got["dX"][idx]) < 1e-2


def test_reduce_over_scattered_axes_or_with_lengths_runs_on_the_host():
    x = f32(2, 3, 4)
    ops = [make_op("ReduceSum", ["X"], ["Y"], axes=[0, 2]),
           make_op("ReduceBackMean", ["X", "L"], ["Z"], num_reduce_dim=1)]
    ref, got, text = run_reference_and_cuda(ops, dict(X=x, L=np.array([4, 1, 2, 3, 0, 4], np.int32)), ["Y", "Z"])
    assert "[host  ] #0 ReduceSum" in text and "[host  ] #1 ReduceBackMean" in text, text
    for b in ref:
        np.testing.assert_allclose(got[b], ref[b], rtol=1e-5, atol=1e-6, equal_nan=True)

