"""Table-driven over the op registry: every op the numba-cpu backend compiles (an elementwise
``expr``, a fused-group head, or a standalone kernel) gives the reference's result, on several
dtypes, shapes, broadcast modes and argument values. Ops added to the registry later are picked up
automatically; the case generator only needs to know argument values an op cannot default."""
from __future__ import annotations

import itertools
import zlib
from typing import Any

import numpy as np
import pytest

from netjit.compiler.codegen import numba_cpu
from netjit.compiler.ops.registry import BROADCAST, ELEMWISE, all_ops
from netjit.proto import caffe2_pb2
from netjit.runtime.errors import NetJitError
from tests.compiler.helpers import assert_same_blobs, netdef, op, plan_of, run_compiled, run_reference
from tests.ops.harness import run_op

DT = caffe2_pb2.TensorProto
# Values for arguments an op requires (no default), and non-default values to exercise.
REQUIRED = {"Cast": [{"to": DT.FLOAT}, {"to": DT.INT32}, {"to": DT.DOUBLE}, {"to": DT.BOOL}]}
SAMPLES = {"scale": 2.5, "alpha": 0.3, "min": -0.5, "max": 0.7, "exponent": 3.0}
DTYPES = [np.float32, np.float64, np.int32]
BOOL_ONLY = ("And", "Or", "Xor", "Not")   # logic ops take bool tensors only


def compilable_ops() -> list[str]:
    ops = []
    for name, opdef in sorted(all_ops().items()):
        lw = opdef.lowering.get(numba_cpu.BACKEND)
        if opdef.category in (ELEMWISE, BROADCAST) and (opdef.expr or (lw is not None and lw.expr)):
            ops.append(name)
        elif (lw is not None and (lw.head or lw.standalone or lw.loop)) or opdef.per_channel is not None:
            # Kernels of non-elementwise ops need inputs with roles: the generators below cover
            # these; ops with their own module of tests (optimizers, ...) are checked there.
            if name in CASE_GENERATORS:
                ops.append(name)
    return ops


def _special_cases(name: str, rng):
    """(feeds, args, outputs) for ops whose inputs have roles (weights, per-channel vectors, rows)."""
    f = lambda *s, dt=np.float32: np.asarray(rng.standard_normal(s) * 2, dtype=dt)   # noqa: E731
    for dt in (np.float32, np.float64):
        if name == "WeightedSum":
            yield {"X0": f(3, 4, dt=dt), "w0": f(1, dt=dt), "X1": f(3, 4, dt=dt), "w1": f(1, dt=dt)}, {}, ["Y"]
            yield {"X0": f(5, dt=dt), "w0": f(1, dt=dt)}, {}, ["Y"]
        elif name == "AveragedLossGradient":
            yield {"X": f(3, 4, dt=dt), "dL": f(dt=dt)}, {}, ["dX"]
        elif name == "SpatialBN":
            var = lambda c: np.abs(f(c, dt=dt)) + dt(0.1)  # noqa: E731
            for order, xs in (("NCHW", (2, 3, 4, 5)), ("NHWC", (2, 4, 5, 3)), ("NCHW", (2, 3, 7))):
                yield ({"X": f(*xs, dt=dt), "s": f(3, dt=dt), "b": f(3, dt=dt), "m": f(3, dt=dt), "v": var(3)},
                       {"is_test": 1, "epsilon": 1e-3, "order": order}, ["Y"])
        elif name == "PRelu":
            yield {"X": f(2, 3, 4, dt=dt), "slope": f(3, dt=dt)}, {}, ["Y"]
            yield {"X": f(2, 3, 4, dt=dt), "slope": f(1, dt=dt)}, {}, ["Y"]
        elif name == "SquaredL2Distance":
            yield {"X": f(4, 5, dt=dt), "Y": f(4, 5, dt=dt)}, {}, ["Z"]
            yield {"X": f(3, 2, 2, dt=dt), "Y": f(3, 2, 2, dt=dt)}, {}, ["Z"]
        elif name == "SquaredL2DistanceGradient":
            yield {"X": f(4, 5, dt=dt), "Y": f(4, 5, dt=dt), "dZ": f(4, dt=dt)}, {}, ["dX", "dY"]
        elif name in ("Conv", "Conv2D"):
            for xs, ws_, args in CONV_CASES:
                if len(xs) == 4:
                    yield {"X": f(*xs, dt=dt), "W": f(*ws_, dt=dt), "b": f(ws_[0], dt=dt)}, args, ["Y"]
            yield {"X": f(2, 6, 5, 3, dt=dt), "W": f(4, 3, 3, 3, dt=dt), "b": f(4, dt=dt)}, \
                {"kernel": 3, "order": "NHWC"}, ["Y"]
            yield {"X": f(1, 3, 5, 5, dt=dt), "W": f(2, 3, 1, 1, dt=dt)}, {"kernel": 1}, ["Y"]
        elif name == "Conv1D":
            yield {"X": f(2, 3, 9, dt=dt), "W": f(4, 3, 3, dt=dt), "b": f(4, dt=dt)}, {"kernels": [3]}, ["Y"]
        elif name == "Conv3D":
            yield {"X": f(1, 2, 4, 4, 4, dt=dt), "W": f(3, 2, 2, 2, 2, dt=dt), "b": f(3, dt=dt)}, \
                {"kernels": [2, 2, 2]}, ["Y"]
        elif name in CONV_GRADIENTS:
            for xs, ws_, args in CONV_CASES:
                if name == "Conv1DGradient" and len(xs) != 3 or name == "Conv2DGradient" and len(xs) != 4:
                    continue
                x, w = f(*xs, dt=dt), f(*ws_, dt=dt)
                dy = f(*run_op("Conv", [x, w], **args)[0].shape, dt=dt)
                for outs, extra in ((["dW", "db", "dX"], {}), (["dW", "db"], {}), (["dW", "dX"], {"no_bias": 1}),
                                    (["dW"], {"no_bias": 1})):
                    yield {"X": x, "W": w, "dY": dy}, {**args, **extra}, outs
        elif name in POOLS:
            grad = name.endswith("Gradient")
            kind = name.split("Pool")[0] + "Pool"
            for xs, args in POOL_CASES:
                if "1D" in name and len(xs) != 3 or "2D" in name and len(xs) != 4:
                    continue
                # Small integers make ties, which MaxPoolGradient must send to every tied element.
                x = rng.integers(-3, 4, size=xs).astype(dt)
                for extra in ({}, {"count_include_pad": 1}) if kind == "AveragePool" else ({},):
                    a = {**args, **extra}
                    if not grad:
                        yield {"X": x}, a, ["Y"]
                        if kind == "MaxPool":   # NaN wins a window, as numpy's max in the reference
                            xn = x.copy()
                            xn.reshape(-1)[::7] = np.nan
                            yield {"X": xn}, a, ["Y"]
                        continue
                    y = run_op(kind, [x], **a)[0]
                    yield {"X": x, "Y": y, "dY": f(*y.shape, dt=dt)}, a, ["dX"]
        elif name in ("Softmax", "SoftmaxGradient"):
            for shape, args in (((4, 10), {}), ((2, 3, 4), {"axis": 2}), ((2, 3, 4), {}), ((5,), {"axis": 0})):
                x = f(*shape, dt=dt) * 5
                if name == "Softmax":
                    yield {"X": x}, args, ["Y"]
                else:
                    y = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
                    yield {"Y": y.astype(dt), "dY": f(*shape, dt=dt)}, args, ["dX"]
        elif name == "AveragedLoss":
            yield {"X": f(6, 7, dt=dt)}, {}, ["L"]
            yield {"X": f(3, dt=dt)}, {}, ["L"]
        elif name == "ClipTensorByScaling" and dt == np.float32:   # float32 only; val is a norm
            for norm in (5.0, 0.5):
                yield {"X": f(3, 4, dt=dt), "val": np.array([norm], dt)}, {"threshold": 1.0}, ["Y"]
            yield {"X": f(3, 4, dt=dt), "val": np.array([5.0], dt), "t": np.array([2.0], dt)}, {"threshold": 1.0}, ["Y"]


# Window geometries for the conv/pool kernels: strides, pads (asymmetric too), dilation, groups,
# legacy_pad, 1x1 convs on both the batched and the direct (>= 1024 pixels per image) paths, and
# batches that do not divide into the kernel's image chunks.
CONV_CASES = [
    ((2, 4, 6, 5), (6, 2, 3, 3), {"kernel": 3, "pad": 1, "group": 2, "stride": 2}),
    ((3, 3, 7, 8), (4, 3, 3, 2), {"kernel_h": 3, "kernel_w": 2, "pad_t": 2, "pad_l": 0, "pad_b": 1, "pad_r": 3,
                                  "stride_h": 1, "stride_w": 3}),
    ((2, 3, 9, 9), (5, 3, 3, 3), {"kernel": 3, "dilation": 2, "pad": 1}),
    ((2, 2, 6, 6), (3, 2, 3, 3), {"kernel": 3, "stride": 2, "legacy_pad": 2}),
    ((1, 3, 32, 33), (4, 3, 1, 1), {"kernel": 1}),
    ((5, 6, 10, 30), (4, 3, 1, 1), {"kernel": 1, "group": 2}),
    ((3, 4, 5, 5), (4, 4, 1, 1), {"kernel": 1, "stride": 2}),
    ((2, 3, 9), (4, 3, 3), {"kernels": [3], "pads": [2, 1], "strides": [2]}),
]
POOL_CASES = [
    ((2, 3, 6, 6), {"kernel": 2, "stride": 2}),
    ((2, 2, 7, 5), {"kernel": 3, "stride": 2, "pad": 1}),
    ((1, 2, 7, 7), {"kernel": 3, "stride": 2, "legacy_pad": 3}),
    ((2, 3, 5, 4), {"global_pooling": 1}),
    ((2, 2, 6, 6), {"kernel_h": 3, "kernel_w": 2, "pad_t": 2, "pad_l": 1, "pad_b": 0, "pad_r": 1, "stride": 1}),
    ((2, 3, 8), {"kernels": [3], "strides": [2], "pads": [1, 1]}),
]
CONV_GRADIENTS = ("ConvGradient", "Conv1DGradient", "Conv2DGradient")
POOLS = tuple(f"{k}{d}{g}" for k in ("MaxPool", "AveragePool") for d in ("", "1D", "2D") for g in ("", "Gradient"))
# Non-elementwise ops with a case generator here (3-D pools and conv gradients share their 2-D
# records' entries through alias(), but the makers decline 3-D windows: no kernel to compare).
CASE_GENERATORS = frozenset({
    "WeightedSum", "AveragedLossGradient", "SpatialBN", "PRelu", "SquaredL2Distance", "SquaredL2DistanceGradient",
    "Conv", "Conv1D", "Conv2D", "Conv3D", *CONV_GRADIENTS, *POOLS, "Softmax", "SoftmaxGradient", "AveragedLoss",
    "FC", "FCGradient"})


def _arg_sets(name: str) -> list[dict[str, Any]]:
    opdef = all_ops()[name]
    if name in REQUIRED:
        return REQUIRED[name]
    declared = {a.name for a in opdef.schema.args}
    sample = {k: v for k, v in SAMPLES.items() if k in declared}
    if name == "Pow":
        return [{"exponent": 2.0}, {"exponent": 0.5}]
    return [{}, sample] if sample else [{}]


def _values(rng, shape, dtype):
    if np.dtype(dtype).kind == "b":
        return rng.random(shape) < 0.5
    if np.dtype(dtype).kind == "i":
        return rng.integers(-5, 6, size=shape).astype(dtype)
    return (rng.standard_normal(shape) * 3).astype(dtype)


def _elementwise_cases(name: str):
    opdef = all_ops()[name]
    lo, hi = opdef.schema.inputs
    counts = [lo] if name not in ("Sum", "Pow") else ([1, 3] if name == "Sum" else [1, 2])
    has_broadcast = opdef.schema.arg_spec("broadcast") is not None
    dtypes = [np.bool_] if name in BOOL_ONLY else DTYPES
    for n_in, dtype, args in itertools.product(counts, dtypes, _arg_sets(name)):
        if name == "Pow" and n_in == 2:
            args = {}
        shapes = [[(3, 4)] * n_in, [(2, 3, 5)] * n_in]
        if has_broadcast and n_in == 2:
            shapes += [[(2, 3, 4), (3,)], [(2, 3, 4), (1,)], [(4, 1), (1, 5)]]
        for sh in shapes:
            extra = dict(args)
            if has_broadcast and n_in == 2 and sh[0] != sh[1] and sh[1] != (1, 5):
                extra.update(broadcast=1, axis=1) if sh[1] == (3,) else extra.update(broadcast=1)
            yield n_in, np.dtype(dtype), sh, extra


def _check(net, feeds, expect_kernel: bool, rtol: float, atol: float):
    try:
        ref = run_reference(net, feeds)
    except NetJitError:
        with pytest.raises(NetJitError):
            run_compiled(net, feeds)
        return False
    ws, runner = run_compiled(net, feeds, runs=2)
    assert_same_blobs(ref, ws, rtol=rtol, atol=atol)
    kinds = [s.kind for s in plan_of(runner).driver.steps]
    if expect_kernel:
        assert "kernel" in kinds, f"{net.op[0].type} did not compile: {kinds} {plan_of(runner).fallbacks}"
    return "kernel" in kinds


@pytest.mark.parametrize("name", compilable_ops())
def test_compiled_matches_reference(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))   # fixed per op (hash() varies per process)
    compiled = 0
    if name in ("FC", "FCGradient"):
        compiled += _dense_cases(name, rng)
    elif any(True for _ in _special_cases(name, rng)):
        for feeds, args, outs in _special_cases(name, rng):
            net = netdef(f"{name}_case", [op(name, list(feeds), outs, **args)])
            tight = next(iter(feeds.values())).dtype == np.float64
            gemm = name.startswith("Conv") or name.startswith("AveragePool")   # summation order differs
            compiled += _check(net, feeds, expect_kernel=True, rtol=1e-12 if tight else (2e-5 if gemm else 2e-6),
                               atol=1e-12 if tight else (2e-5 if gemm else 1e-6))
    else:
        for n_in, dtype, shapes, args in _elementwise_cases(name):
            feeds = {f"in{i}": _values(rng, s, dtype) for i, s in enumerate(shapes)}
            if name in ("Log", "Sqrt"):
                feeds["in0"] = np.abs(feeds["in0"]) if dtype.kind == "f" else feeds["in0"]
            net = netdef(f"{name}_case", [op(name, list(feeds), ["out"], **args)])
            tight = dtype == np.float64
            # float32 transcendental approximations are within 3 ulp (test_approx.py).
            compiled += _check(net, feeds, expect_kernel=False, rtol=1e-12 if tight else 2e-6,
                               atol=1e-12 if tight else 1e-6)
    noop = name in ("StopGradient", "Alias", "Copy", "EnsureCPUOutput", "CopyCPUToGPU", "CopyGPUToCPU")
    assert compiled > 0 or noop, f"no case of {name} ran a compiled kernel"


def _dense_cases(name: str, rng) -> int:
    compiled = 0
    for (xs, ws_, axis, axis_w), dtype in itertools.product(
            [((4, 3), (5, 3), 1, 1), ((2, 3, 4), (6, 12), 1, 1), ((2, 3, 4), (5, 4), 2, 1), ((3, 4), (2, 5, 4), 1, 2),
             ((1, 7), (1, 7), 1, 1)], [np.float32, np.float64]):
        n = int(np.prod(ws_[:axis_w]))
        m = int(np.prod(xs[:axis]))
        x, w, b = _values(rng, xs, dtype), _values(rng, ws_, dtype), _values(rng, (n,), dtype)
        if name == "FC":
            feeds = {"X": x, "W": w, "b": b}
            net = netdef("fc", [op("FC", ["X", "W", "b"], ["Y"], axis=axis, axis_w=axis_w),
                                op("Relu", ["Y"], ["Z"])])
        else:
            dy = _values(rng, tuple(xs[:axis]) + (n,), dtype)
            feeds = {"X": x, "W": w, "dY": dy}
            outs = ["dW", "db", "dX"] if m % 2 else ["dW", "db"]
            net = netdef("fcg", [op("FCGradient", ["X", "W", "dY"], outs, axis=axis, axis_w=axis_w)])
        tol = 1e-10 if dtype == np.float64 else 2e-5
        compiled += _check(net, feeds, expect_kernel=True, rtol=tol, atol=tol)
    return compiled
