"""Strict mode: fallbacks are recorded with a reason and listed by explain(); NETJIT_STRICT=1 turns
the unexpected ones (a kernel that does not build, a shape rule or reference failing for a bug, a
rule that raises where the reference runs) into StrictModeError, while by-design host steps and
the net's own errors stay as they are."""
from __future__ import annotations

import numpy as np
import pytest

from netjit.compiler import strict
from netjit.compiler.api import clear_cache
from netjit.compiler.codegen import numba_cpu
from netjit.compiler.ops.registry import lookup
from netjit.runtime.errors import OpError
from tests.compiler.helpers import assert_same_blobs, netdef, op, plan_of, run_compiled, run_reference

X = {"X": np.array([[-1.0, 2.0, -3.0], [4.0, -5.0, 6.0]], np.float32)}


@pytest.fixture(autouse=True)
def _fresh_plans(monkeypatch):
    # Plans are cached by NetDef content: each case must plan again under its own patches.
    monkeypatch.delenv("NETJIT_STRICT", raising=False)
    clear_cache()
    yield
    clear_cache()


def _failing_precompile(op_type):
    real = numba_cpu.precompile

    def precompile(kernel, values, readonly):
        if op_type in kernel.description:
            raise TypeError(f"cannot type {op_type} (simulated)")
        return real(kernel, values, readonly)
    return precompile


def test_kernel_build_failure_is_recorded_and_runs_the_reference(monkeypatch):
    monkeypatch.setattr(numba_cpu, "precompile", _failing_precompile("Sigmoid"))
    net = netdef("strict_kernel", [op("Sigmoid", ["X"], ["Y"]), op("Relu", ["X"], ["Z"])])
    got, runner = run_compiled(net, X)
    assert_same_blobs(run_reference(net, X), got)
    (fb,) = runner.compiled.fallbacks()
    assert (fb.stage, fb.index, fb.unexpected) == ("kernel", 0, True)
    assert "cannot type Sigmoid" in fb.reason
    assert "fallback to references (unexpected): kernel: op #0" in runner.compiled.explain(sources=False)
    assert [s.kind for s in plan_of(runner).driver.steps] == ["host", "kernel"]


def test_strict_mode_raises_on_a_kernel_build_failure(monkeypatch):
    monkeypatch.setattr(numba_cpu, "precompile", _failing_precompile("Sigmoid"))
    monkeypatch.setenv("NETJIT_STRICT", "1")
    net = netdef("strict_kernel_raise", [op("Sigmoid", ["X"], ["Y"])])
    with pytest.raises(strict.StrictModeError, match=r"op #0 \(Fused\(Sigmoid\)\).*cannot type Sigmoid.*NETJIT_STRICT=1"):
        run_compiled(net, X)


def test_ops_without_kernels_are_not_fallbacks(monkeypatch):
    monkeypatch.setenv("NETJIT_STRICT", "1")
    # Print is a host op; NHWC MaxPool's kernel maker declines the instance: both by design.
    x4 = {"X": np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)}
    net = netdef("strict_by_design", [op("Relu", ["X"], ["A"]), op("Print", ["A"], []),
                                      op("MaxPool", ["A"], ["P"], kernel=2, stride=2, order="NHWC")])
    got, runner = run_compiled(net, x4)
    assert_same_blobs(run_reference(net, x4), got)
    assert runner.compiled.fallbacks() == []
    assert "host" in [s.kind for s in plan_of(runner).driver.steps]


def test_a_shape_rule_with_a_bug_is_unexpected(monkeypatch):
    def broken(args, inputs):
        raise TypeError("'NoneType' object is not subscriptable")
    monkeypatch.setattr(lookup("Sigmoid"), "infer", broken)
    net = netdef("strict_infer_bug", [op("Relu", ["X"], ["A"]), op("Sigmoid", ["A"], ["B"])])
    got, runner = run_compiled(net, X)      # without strict: a barrier, the reference runs it
    assert_same_blobs(run_reference(net, X), got)
    (fb,) = runner.compiled.fallbacks()
    assert (fb.stage, fb.index, fb.op_type, fb.unexpected) == ("infer", 1, "Sigmoid", True)
    clear_cache()
    monkeypatch.setenv("NETJIT_STRICT", "1")
    with pytest.raises(strict.StrictModeError, match=r"op #1 \(Sigmoid\).*TypeError"):
        run_compiled(net, X)


def test_a_shape_rule_that_rejects_what_the_reference_runs_raises_under_strict(monkeypatch):
    def too_strict(args, inputs):
        raise ValueError("X must be 4-D")
    monkeypatch.setattr(lookup("Sigmoid"), "infer", too_strict)
    monkeypatch.setenv("NETJIT_STRICT", "1")
    net = netdef("strict_infer_disagrees", [op("Relu", ["X"], ["A"]), op("Sigmoid", ["A"], ["B"])])
    with pytest.raises(strict.StrictModeError, match=r"op #1 \(Sigmoid\): its shape rule raised .*X must be 4-D"):
        run_compiled(net, X)


def test_the_nets_own_errors_stay_op_errors_under_strict(monkeypatch):
    monkeypatch.setenv("NETJIT_STRICT", "1")
    feeds = {"X": np.ones((2, 3), np.float32), "W": np.ones((4, 3), np.float32), "b": np.ones(5, np.float32)}
    net = netdef("strict_user_error", [op("FC", ["X", "W", "b"], ["Y"])])
    with pytest.raises(OpError, match="bias has 5 elements") as info:
        run_compiled(net, feeds)
    assert not isinstance(info.value, strict.StrictModeError)


def test_a_folding_failure_is_recorded_and_strict_raises_for_a_bug(monkeypatch):
    net = netdef("strict_fold", [op("ConstantFill", [], ["C"], shape=[2, 3], value=-2.0),
                                 op("Relu", ["C"], ["R"]), op("Add", ["X", "R"], ["Y"])])
    ref = run_reference(net, X)

    def relu(ctx, x):       # a reference with a bug; the compiled Relu never calls it
        raise IndexError("tuple index out of range")
    monkeypatch.setattr(lookup("Relu"), "reference", relu)
    got, runner = run_compiled(net, X)
    assert_same_blobs(ref, got)
    folds = [f for f in runner.compiled.fallbacks() if f.stage == "fold"]
    assert [(f.index, f.op_type, f.unexpected) for f in folds] == [(1, "Relu", True)]
    assert "fold: op #1 (Relu): IndexError" in runner.compiled.explain(sources=False)
    clear_cache()
    monkeypatch.setenv("NETJIT_STRICT", "1")
    with pytest.raises(strict.StrictModeError, match=r"op #1 \(Relu\).*fold"):
        run_compiled(net, X)


def test_strict_switch_values(monkeypatch):
    for value, on in (("1", True), ("0", False), ("", False), ("yes", True)):
        monkeypatch.setenv("NETJIT_STRICT", value)
        assert strict.strict_enabled() is on
