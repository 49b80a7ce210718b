"""Hypothesis-generated nets (elementwise chains with broadcasting, fan-out, in-place writes, FC,
Softmax, losses): the compiled executor equals the reference within float32 tolerances, under both
visibility rules, and every buffer plan passes its verifier."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from netjit.compiler.api import compile as nj_compile
from netjit.compiler.passes.buffers import verify_buffers
from tests.compiler.helpers import assert_same_blobs, netdef, op, run_compiled, run_reference

# float32 chains: approximations are within 3 ulp and GEMM summation order differs from numpy's.
RTOL, ATOL = 2e-4, 2e-4
UNARY = ["Relu", "Sigmoid", "Tanh", "Negative", "Abs", "Scale", "LeakyRelu", "Elu", "Clip"]
BINARY = ["Add", "Sub", "Mul", "Sum"]


@st.composite
def nets(draw):
    n, c = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    feeds = {"X": rng.standard_normal((n, c)).astype(np.float32),
             "V": rng.standard_normal(c).astype(np.float32),
             "R": rng.standard_normal((n, 1)).astype(np.float32),
             "W": (rng.standard_normal((c, c)) * 0.5).astype(np.float32),
             "b": rng.standard_normal(c).astype(np.float32)}
    full = ["X"]               # blobs of shape (n, c)
    ops = []
    for k in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["unary", "unary", "binary", "broadcast", "fc", "softmax"]))
        src = draw(st.sampled_from(full))
        inplace = draw(st.booleans()) and src != "X" and kind not in ("fc", "softmax")
        dst = src if inplace else f"t{k}"
        if kind == "unary":
            name = draw(st.sampled_from(UNARY))
            args = {"Scale": {"scale": 0.75}, "LeakyRelu": {"alpha": 0.2}, "Clip": {"min": -0.5, "max": 0.8}}.get(name, {})
            ops.append(op(name, [src], [dst], **args))
        elif kind == "binary":
            other = draw(st.sampled_from(full))
            name = draw(st.sampled_from(BINARY))
            if other == src:
                dst = f"t{k}"          # no op may take the same blob as two inputs and write it
            ops.append(op(name, [src, other], [dst]))
        elif kind == "broadcast":
            name = draw(st.sampled_from(["Add", "Mul", "Sub"]))
            if draw(st.booleans()):
                ops.append(op(name, [src, "V"], [dst], broadcast=1, axis=1))
            else:
                ops.append(op(name, [src, "R"], [dst]))          # numpy-style (n,1) against (n,c)
        elif kind == "fc":
            ops.append(op("FC", [src, "W", "b"], [dst]))
        else:
            ops.append(op("Softmax", [src], [dst]))
        if dst not in full:
            full.append(dst)
    last = full[-1]
    if draw(st.booleans()):
        ops.append(op("SquaredL2Distance", [last, "X"], ["dist"]))
        ops.append(op("AveragedLoss", ["dist"], ["loss"]))
        last = "loss"
    return netdef("random", ops, external_input=list(feeds), external_output=[last]), feeds


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(nets())
def test_random_net_compiled_equals_reference(case):
    net, feeds = case
    ref = run_reference(net, feeds, runs=2)
    got, runner = run_compiled(net, feeds, runs=2)
    assert_same_blobs(ref, got, rtol=RTOL, atol=ATOL)
    for plan in runner.compiled._plans.values():
        verify_buffers(plan.buffers)
    # Declared-outputs mode: intermediates may be fused away and their memory reused.
    exe = nj_compile(net, inputs=feeds)
    out = net.external_output[0]
    np.testing.assert_allclose(exe(**feeds)[out], ref.blobs[out], rtol=RTOL, atol=ATOL)
    for plan in exe._plans.values():
        verify_buffers(plan.buffers)
