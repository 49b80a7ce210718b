"""Running PlanDefs and ExecutionSteps (``workspace.RunPlan``), with Caffe2's plan-executor rules.

- A step runs its nets (or its substeps, in order) ``num_iter`` times (default once), or, with
  ``should_stop_blob``, until that scalar bool blob is true. The blob is checked after every net and
  every substep (never before the first), and ends only the step that names it. A stop blob that does
  not exist yet, or holds nothing yet, reads as false.
- ``only_once`` (with a stop blob) runs one iteration. ``create_workspace`` runs the step in a fresh
  child workspace each time: the parent's blobs are shared (read and written), blobs it creates
  disappear with it.
- Substeps with ``run_every_ms`` and a step's ``report_net`` are reporters: Caffe2 ran them on a
  timer thread. Here they run between iterations once their interval has passed, and once more after
  the step ends (Caffe2's guarantee).
- ``concurrent_substeps`` and ``num_concurrent_instances`` run their substeps one after another:
  correct for plans whose substeps do not wait on each other, which is what Caffe2's tests and
  tutorials use.
- The plan's nets are created in the workspace the first time a step runs them (so
  ``workspace.RunNet(name)`` works afterwards); a net of that name created before is replaced once.
  Each net runs through the default executor (compiled unless ``NETJIT_EXECUTOR=reference``).

>>> from netjit import core, workspace
>>> net = core.Net("plan_doc_net"); _ = net.ConstantFill([], "plan_doc_y", shape=[1], value=2.0)
>>> workspace.RunPlan(core.Plan(core.execution_step("plan_doc_step", net)))
True
"""
from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any, Iterator

import numpy as np

from netjit.compiler.runner import make_runner
from netjit.proto import caffe2_pb2
from netjit.runtime.errors import NetJitError
from netjit.runtime.workspace import Workspace


def as_plan(plan_or_step: Any) -> caffe2_pb2.PlanDef:
    """A PlanDef from a PlanDef, a core.Plan, an ExecutionStep (with the nets it holds) or a
    NetBuilder (through ``to_execution_step``)."""
    if isinstance(plan_or_step, caffe2_pb2.PlanDef):
        return plan_or_step
    from netjit.net_builder import NetBuilder
    if isinstance(plan_or_step, NetBuilder):
        from netjit.core_plan import to_execution_step
        plan_or_step = to_execution_step(plan_or_step)
    proto = plan_or_step.Proto() if hasattr(plan_or_step, "Proto") else plan_or_step
    if isinstance(proto, caffe2_pb2.PlanDef):
        return proto
    if isinstance(proto, caffe2_pb2.ExecutionStep):
        from netjit.core_plan import Plan
        if hasattr(plan_or_step, "Proto"):
            return Plan(plan_or_step).Proto()
        plan = caffe2_pb2.PlanDef(name=proto.name)
        plan.execution_step.add().CopyFrom(proto)
        return plan
    raise TypeError(f"RunPlan takes a PlanDef, a core.Plan, an ExecutionStep or a NetBuilder, got "
                    f"{type(plan_or_step).__name__}")


class _SharedBlobs(MutableMapping):
    """A child workspace's blobs as Caffe2 shares them: a name the parent holds is the parent's blob
    (read and written there); any other name is created locally and dies with the child."""

    def __init__(self, parent: Workspace):
        self.parent = parent
        self.local: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name in self.local:
            return self.local[name]
        if self.parent.has(name):
            return self.parent.get(name)
        raise KeyError(name)

    def __setitem__(self, name: str, value: Any) -> None:
        if name not in self.local and self.parent.has(name):
            self.parent.feed(name, value)
        else:
            self.local[name] = value

    def __delitem__(self, name: str) -> None:
        del self.local[name]

    def __contains__(self, name: object) -> bool:
        return name in self.local or self.parent.has(name)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        yield from self.local
        yield from (n for n in self.parent.names() if n not in self.local)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def child_workspace(parent: Workspace, name: str) -> Workspace:
    """A child workspace with Caffe2's sharing rule (what ``create_workspace`` steps and private
    tasks run in): the parent's blobs are shared, new blobs stay in the child."""
    ws = Workspace(f"{parent.name}/{name}", parent.root_folder)
    ws.blobs = _SharedBlobs(parent)  # type: ignore[assignment]
    return ws


def _written_blobs(plan: caffe2_pb2.PlanDef) -> set[str]:
    return {o for net in plan.network for op in net.op for o in op.output}


class _PlanRun:
    """One run of a plan: its nets by name, which of them were created in which workspace."""

    def __init__(self, plan: caffe2_pb2.PlanDef, ws: Workspace):
        self.plan = plan
        self.nets: dict[str, caffe2_pb2.NetDef] = {}
        for net in plan.network:
            if net.name in self.nets:
                raise NetJitError(f"plan {plan.name!r} holds two networks named {net.name!r}; net names in a "
                                  f"plan must be unique")
            self.nets[net.name] = net
        self.created: set[tuple[int, str]] = set()
        self.written = _written_blobs(plan)

    def runner(self, name: str, ws: Workspace, step: caffe2_pb2.ExecutionStep) -> Any:
        key = (id(ws), name)
        # (A child workspace of a create_workspace step may reuse a dead one's id: check its nets too.)
        if key not in self.created or name not in ws.nets:
            if name in self.nets:
                ws.nets[name] = make_runner(self.nets[name], ws)
            elif name not in ws.nets:
                raise NetJitError(f"execution step {step.name!r} of plan {self.plan.name!r} uses net {name!r}, "
                                  f"which is neither in the plan nor created in workspace {ws.name!r}")
            self.created.add(key)
        return ws.nets[name]

    def should_stop(self, step: caffe2_pb2.ExecutionStep, ws: Workspace) -> bool:
        name = step.should_stop_blob
        if not name or not ws.has(name):
            return False
        value = ws.get(name)
        if value is None:
            return False
        arr = np.asarray(value)
        if arr.dtype != np.bool_ or arr.size != 1:
            raise NetJitError(f"execution step {step.name!r}: should_stop_blob {name!r} must be a scalar bool "
                              f"tensor, got {arr.dtype} of shape {arr.shape}")
        return bool(arr.reshape(-1)[0])

    def iterations(self, step: caffe2_pb2.ExecutionStep) -> int | None:
        if step.should_stop_blob:
            if step.HasField("num_iter"):
                raise NetJitError(f"execution step {step.name!r} sets both num_iter and should_stop_blob")
            return 1 if step.only_once else None
        if step.only_once:
            raise NetJitError(f"execution step {step.name!r}: only_once needs a should_stop_blob")
        return step.num_iter if step.HasField("num_iter") else 1

    def run_step(self, step: caffe2_pb2.ExecutionStep, ws: Workspace) -> None:
        if step.substep and step.network:
            raise NetJitError(f"execution step {step.name!r} has both substeps and networks; a step has one "
                              f"or the other")
        if step.create_workspace:
            ws = child_workspace(ws, step.name)
        limit = self.iterations(step)
        recurring = [s for s in step.substep if not s.HasField("run_every_ms")]
        reporters = [[s, time.monotonic()] for s in step.substep if s.HasField("run_every_ms")]
        nets = [self.runner(n, ws, step) for n in step.network]
        stop = step.should_stop_blob
        if stop and not ws.has(stop) and stop not in self.written \
                and not any(stop in op.output for r in nets for op in getattr(getattr(r, "net", None), "op", ())):
            raise NetJitError(f"execution step {step.name!r}: should_stop_blob {stop!r} does not exist and no "
                              f"net of plan {self.plan.name!r} writes it")
        report = self.runner(step.report_net, ws, step) if step.report_net else None
        last_report = time.monotonic()
        copies = max(1, step.num_concurrent_instances) if step.HasField("num_concurrent_instances") else 1
        iteration = 0
        while limit is None or iteration < limit:
            if self._iterate(step, ws, recurring, nets, copies):
                break
            iteration += 1
            now = time.monotonic()
            for entry in reporters:
                if (now - entry[1]) * 1000.0 >= entry[0].run_every_ms:
                    self.run_step(entry[0], ws)
                    entry[1] = now
            if report is not None and now - last_report >= step.report_interval:
                report.run()
                last_report = now
        for sub, _ in reporters:
            self.run_step(sub, ws)
        if report is not None:
            report.run()

    def _iterate(self, step: caffe2_pb2.ExecutionStep, ws: Workspace, recurring: list, nets: list,
                 copies: int) -> bool:
        """One iteration of a step; True when its stop blob ended it."""
        for sub in recurring:
            for _ in range(copies):
                self.run_step(sub, ws)
            if self.should_stop(step, ws):
                return True
        for net in nets:
            net.run()
            if self.should_stop(step, ws):
                return True
        return False


def run_plan(plan_or_step: Any, ws: Workspace) -> None:
    """Run every execution step of the plan, in order, against ``ws``."""
    plan = as_plan(plan_or_step)
    # A plan from a file is data: its nets (and the sub-nets of their If/While/Do ops) run pickled
    # Python-op code only with the user's consent, as for CreateNet.
    from netjit.compiler.ops.python_op import check_consent
    for net in plan.network:
        check_consent(net, ws)
    run = _PlanRun(plan, ws)
    for step in plan.execution_step:
        run.run_step(step, ws)
