"""Runs a Plan against a workspace.

Outputs are stored only after a step returns, so a failing step leaves every blob it had not
finished writing as it was before the run (DESIGN.md, "Errors").
"""
from __future__ import annotations

from typing import Any

from netjit.runtime.errors import MissingBlobError, NetJitError, OpError
from netjit.runtime.plan import Plan, Step
from netjit.runtime.workspace import Workspace


def _located(err: Exception, plan: Plan, step: Step) -> OpError:
    names = ", ".join(repr(n) for n in step.inputs) or "none"
    if isinstance(err, OpError):
        return err
    detail = f"{type(err).__name__}: {err}" if not isinstance(err, NetJitError) else str(err)
    blob = step.outputs[0] if step.outputs else (step.inputs[0] if step.inputs else None)
    return OpError(f"{detail} (inputs: {names})", net=plan.net_name, index=step.index,
                   op_type=step.op_type, blob=blob)


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
        located = _located(err, plan, step)
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
