"""Shared helpers for the compiler tests: build nets, run them through the reference executor and
the compiled one, compare."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from netjit.compiler.api import CompiledRunner, get_compiled
from netjit.compiler.reference import build_reference_plan
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_op
from netjit.runtime.executor import execute
from netjit.runtime.workspace import Workspace


def netdef(name: str, ops: Iterable[Any], external_input: Sequence[str] = (),
           external_output: Sequence[str] = ()) -> caffe2_pb2.NetDef:
    net = caffe2_pb2.NetDef(name=name)
    net.op.extend(ops)
    net.external_input.extend(external_input)
    net.external_output.extend(external_output)
    return net


def op(op_type: str, inputs: Sequence[str], outputs: Sequence[str], **args: Any) -> caffe2_pb2.OperatorDef:
    return make_op(op_type, list(inputs), list(outputs), **args)


def workspace_with(feeds: Mapping[str, Any], name: str = "t") -> Workspace:
    ws = Workspace(name)
    for k, v in feeds.items():
        ws.feed(k, v.copy() if isinstance(v, np.ndarray) else v)
    return ws


def run_reference(net: caffe2_pb2.NetDef, feeds: Mapping[str, Any], runs: int = 1) -> Workspace:
    ws = workspace_with(feeds, "ref")
    plan = build_reference_plan(net, ws)
    for _ in range(runs):
        execute(plan, ws)
    return ws


def run_compiled(net: caffe2_pb2.NetDef, feeds: Mapping[str, Any], runs: int = 1) -> tuple[Workspace, CompiledRunner]:
    ws = workspace_with(feeds, "compiled")
    runner = CompiledRunner(get_compiled(net), ws)
    for _ in range(runs):
        runner.run()
    return ws, runner


def blobs_of(ws: Workspace) -> dict[str, Any]:
    return {k: v for k, v in ws.blobs.items()}


def assert_same_blobs(ref: Workspace, got: Workspace, rtol: float = 1e-6, atol: float = 1e-6,
                      names: Iterable[str] | None = None) -> None:
    """Every blob of the reference run exists in the compiled run with (nearly) the same value."""
    names = list(names) if names is not None else sorted(ref.blobs)
    for name in names:
        want = ref.blobs[name]
        assert name in got.blobs, f"blob {name!r} missing after the compiled run"
        have = got.blobs[name]
        if isinstance(want, np.ndarray):
            assert isinstance(have, np.ndarray), f"{name}: {type(have).__name__} instead of an array"
            assert have.shape == want.shape, f"{name}: shape {have.shape} vs reference {want.shape}"
            assert have.dtype == want.dtype, f"{name}: dtype {have.dtype} vs reference {want.dtype}"
            if want.dtype.kind in "fc":
                np.testing.assert_allclose(have, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=name)
            else:
                np.testing.assert_array_equal(have, want, err_msg=name)
        else:
            assert have == want or (have is None and want is None), f"{name}: {have!r} vs {want!r}"


def plan_of(runner: CompiledRunner, start: int = 0):
    plans = runner.compiled.plans_at(start)
    assert plans, "no plan was made"
    return plans[-1]


def step_kinds(plan) -> list[str]:
    return [s.kind for s in plan.driver.steps]
