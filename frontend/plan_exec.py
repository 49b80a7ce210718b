"""Running PlanDefs and ExecutionSteps (``workspace.RunPlan``).

Steps run their nets (or substeps) ``num_iter`` times, or until ``should_stop_blob`` holds true;
``only_once`` substeps run on the first iteration only; ``report_net`` runs every
``report_interval`` iterations; ``create_workspace`` runs the step in a child workspace.
Concurrent substeps run one after another: correct for plans whose substeps do not wait on each
other, which is what Caffe2's own tests and tutorials use.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from netjit.compiler.runner import make_runner
from netjit.proto import caffe2_pb2
from netjit.runtime.errors import NetJitError
from netjit.runtime.workspace import Workspace


def _as_plan(plan_or_step: Any) -> caffe2_pb2.PlanDef:
    if isinstance(plan_or_step, caffe2_pb2.PlanDef):
        return plan_or_step
    proto = plan_or_step.Proto() if hasattr(plan_or_step, "Proto") else plan_or_step
    if isinstance(proto, caffe2_pb2.PlanDef):
        return proto
    if isinstance(proto, caffe2_pb2.ExecutionStep):
        plan = caffe2_pb2.PlanDef(name=proto.name)
        nets = getattr(plan_or_step, "_net_dict", {})
        for net in nets.values():
            plan.network.add().CopyFrom(net.Proto() if hasattr(net, "Proto") else net)
        plan.execution_step.add().CopyFrom(proto)
        return plan
    raise TypeError(f"RunPlan takes a PlanDef, a core.Plan or an ExecutionStep, got {type(plan_or_step).__name__}")


class _PlanRun:
    def __init__(self, plan: caffe2_pb2.PlanDef, ws: Workspace):
        self.plan = plan
        self.nets = {net.name: net for net in plan.network}
        self.runners: dict[tuple[int, str], Any] = {}

    def runner(self, name: str, ws: Workspace) -> Any:
        key = (id(ws), name)
        if key not in self.runners:
            if name in self.nets:
                self.runners[key] = make_runner(self.nets[name], ws)
            elif name in ws.nets:
                self.runners[key] = ws.nets[name]
            else:
                raise NetJitError(f"plan {self.plan.name!r} refers to net {name!r}, which is neither in the "
                                  f"plan nor created in workspace {ws.name!r}")
        return self.runners[key]

    def should_stop(self, step: caffe2_pb2.ExecutionStep, ws: Workspace) -> bool:
        if not step.should_stop_blob:
            return False
        value = ws.get(step.should_stop_blob) if ws.has(step.should_stop_blob) else None
        if value is None:
            return False
        return bool(np.asarray(value).reshape(-1)[0])

    def run_step(self, step: caffe2_pb2.ExecutionStep, ws: Workspace) -> None:
        if step.substep and step.network:
            raise NetJitError(f"execution step {step.name!r} has both substeps and networks")
        if step.create_workspace:
            ws = Workspace(f"{ws.name}/{step.name}", ws.root_folder, parent=ws)
        limit = step.num_iter if step.HasField("num_iter") else (None if step.should_stop_blob else 1)
        iteration = 0
        while limit is None or iteration < limit:
            if self.should_stop(step, ws):
                break
            for sub in step.substep:
                if sub.only_once and iteration > 0:
                    continue
                self.run_step(sub, ws)
            for name in step.network:
                self.runner(name, ws).run()
            iteration += 1
            if step.report_net and step.report_interval > 0 and iteration % step.report_interval == 0:
                self.runner(step.report_net, ws).run()
            if self.should_stop(step, ws):
                break


def run_plan(plan_or_step: Any, ws: Workspace) -> None:
    plan = _as_plan(plan_or_step)
    run = _PlanRun(plan, ws)
    for step in plan.execution_step:
        run.run_step(step, ws)
