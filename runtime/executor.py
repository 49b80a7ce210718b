"""Runs a Plan against a workspace, and locates failures at their op.

Outputs are stored only after a step returns, so a failing step leaves every blob it had not
finished writing as it was before the run (DESIGN.md, "Errors"). ``locate`` is the one place an
exception raised inside an op becomes an ``OpError`` naming the net, op index, type and blob: the
reference executor and the compiled drivers (compiler/execution.py) both use it.

>>> str(locate(ZeroDivisionError("division by zero"), "n", 2, "Div", ("a", "b"), ("c",)))
"net 'n' op #2 (Div): ZeroDivisionError: division by zero (inputs: 'a', 'b') [blob 'c']"
"""
from __future__ import annotations

from typing import Any, Sequence

from netjit.runtime.errors import MissingBlobError, NetJitError, OpError
from netjit.runtime.plan import Plan, Step
from netjit.runtime.workspace import Workspace


def locate(err: Exception, net_name: str, index: int, op_type: str, inputs: Sequence[str],
           outputs: Sequence[str]) -> OpError:
    """``err`` raised by op #index as an OpError naming it (an OpError is returned unchanged)."""
    if isinstance(err, OpError):
        return err
    names = ", ".join(repr(n) for n in inputs) or "none"
    detail = f"{type(err).__name__}: {err}" if not isinstance(err, NetJitError) else str(err)
    blob = outputs[0] if outputs else (inputs[0] if inputs else None)
    return OpError(f"{detail} (inputs: {names})", net=net_name, index=index, op_type=op_type, blob=blob)


def gather_inputs(plan: Plan, step: Step, ws: Workspace) -> list[Any]:
    values = []
    blobs = ws.blobs
    for name in step.inputs:
        if name in blobs:
            values.append(blobs[name])
        elif ws.has(name):
            values.append(ws.get(name))
        else:
            raise MissingBlobError(f"input blob {name!r} does not exist in workspace {ws.name!r}",
                                   net=plan.net_name, index=step.index, op_type=step.op_type, blob=name)
    return values


def run_step(plan: Plan, step: Step, ws: Workspace) -> None:
    values = gather_inputs(plan, step, ws)
    try:
        outs = step.fn(step.ctx, values)
    except Exception as err:  # every failure leaves the run located at its op
        located = locate(err, plan.net_name, step.index, step.op_type, step.inputs, step.outputs)
        if located is err:
            raise
        raise located from err
    blobs = ws.blobs
    for name, value in zip(step.outputs, outs):
        if value is not None:
            blobs[name] = value


def execute(plan: Plan, ws: Workspace) -> None:
    """Run every step of ``plan`` in order against ``ws``."""
    for step in plan.steps:
        run_step(plan, step, ws)
