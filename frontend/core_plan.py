"""ExecutionStep and Plan builders (``core.ExecutionStep``, ``core.Plan``, ``core.execution_step``).

>>> step = ExecutionStep("train", [], num_iter=10)
>>> step.Proto().num_iter
10
"""
from __future__ import annotations

from typing import Any, Sequence

from netjit.proto import caffe2_pb2


def as_net_def(net: Any) -> caffe2_pb2.NetDef:
    """The NetDef behind ``net``: a NetDef itself, a ``core.Net`` (anything with ``.Proto()``), or
    serialized NetDef bytes."""
    if isinstance(net, caffe2_pb2.NetDef):
        return net
    if isinstance(net, (bytes, bytearray)):
        return caffe2_pb2.NetDef.FromString(bytes(net))
    if hasattr(net, "Proto"):
        return net.Proto()
    raise TypeError(f"expected a core.Net, a NetDef or serialized NetDef bytes, got {type(net).__name__}")


class ExecutionStep:
    """A step of a plan: run nets (or substeps) ``num_iter`` times or until a stop blob is true."""

    def __init__(self, name: str, nets: Any = None, num_iter: int | None = None):
        self._step = caffe2_pb2.ExecutionStep(name=name or "")
        self._net_dict: dict[str, Any] = {}
        self._is_used = False
        self._substeps: list[ExecutionStep] = []
        if nets is not None:
            for net in (nets if isinstance(nets, (list, tuple)) else [nets]):
                self.AddNet(net)
        if num_iter is not None:
            self._step.num_iter = num_iter

    def get_net(self, name: str) -> Any:
        return self._net_dict[name]

    def Name(self) -> str:
        return self._step.name

    def __str__(self) -> str:
        return self._step.name

    def _assert_can_mutate(self) -> None:
        if self._is_used:
            raise RuntimeError(f"step {self._step.name!r} was already added to a plan; it cannot change")

    def HasNets(self) -> bool:
        return len(self._step.network) > 0

    def HasSubsteps(self) -> bool:
        return len(self._step.substep) > 0

    def Nets(self) -> list[Any]:
        return list(self._net_dict.values())

    def Substeps(self) -> list["ExecutionStep"]:
        return list(self._substeps)

    def SetIter(self, num_iter: int) -> None:
        self._assert_can_mutate()
        self._step.num_iter = num_iter

    def SetCreateWorkspace(self, create_workspace: bool) -> None:
        self._assert_can_mutate()
        self._step.create_workspace = create_workspace

    def SetNumConcurrentInstances(self, num: int) -> None:
        self._assert_can_mutate()
        self._step.num_concurrent_instances = num

    def SetOnlyOnce(self, only_once: bool) -> None:
        self._assert_can_mutate()
        self._step.only_once = only_once

    def SetShouldStopBlob(self, should_stop_blob: Any) -> None:
        self._assert_can_mutate()
        self._step.should_stop_blob = str(should_stop_blob)

    def RunEveryMillis(self, interval: int) -> None:
        self._assert_can_mutate()
        self._step.run_every_ms = interval

    def SetReportNet(self, report_net: Any, report_interval: int) -> None:
        self._assert_can_mutate()
        self._net_dict[str(report_net)] = report_net
        self._step.report_net = str(report_net)
        self._step.report_interval = report_interval

    def AddSubstep(self, substep: Any) -> "ExecutionStep":
        self._assert_can_mutate()
        if self.HasNets():
            raise ValueError(f"step {self._step.name!r} has nets; a step has nets or substeps, not both")
        if isinstance(substep, ExecutionStep):
            substep._is_used = True
            self._substeps.append(substep)
            self._net_dict.update(substep._net_dict)
            proto = substep.Proto()
        else:
            proto = substep
        self._step.substep.add().CopyFrom(proto)
        return self

    def SetConcurrentSubsteps(self, concurrent: bool) -> None:
        self._assert_can_mutate()
        self._step.concurrent_substeps = concurrent

    def AddNet(self, net: Any) -> "ExecutionStep":
        self._assert_can_mutate()
        if self.HasSubsteps():
            raise ValueError(f"step {self._step.name!r} has substeps; a step has nets or substeps, not both")
        name = str(net) if hasattr(net, "Proto") else net.name
        self._net_dict[name] = net
        self._step.network.append(name)
        return self

    def get_all_attributes(self, name: str) -> list:
        return [a for net in self._net_dict.values() if hasattr(net, "get_attributes")
                for a in net.get_attributes(name)]

    def Proto(self) -> caffe2_pb2.ExecutionStep:
        return self._step


class Plan:
    """A PlanDef under construction; adding a step also adds the nets it references, in first-use order."""

    def __init__(self, name_or_step: Any):
        self._plan = caffe2_pb2.PlanDef()
        self._net_dict: dict[str, Any] = {}
        self._steps: list[ExecutionStep] = []
        if isinstance(name_or_step, ExecutionStep):
            self._plan.name = name_or_step.Name()
            self.AddStep(name_or_step)
        else:
            self._plan.name = str(name_or_step)

    def __str__(self) -> str:
        return self._plan.name

    def Proto(self) -> caffe2_pb2.PlanDef:
        return self._plan

    def AddNets(self, nets: Sequence[Any]) -> None:
        for net in nets:
            name = str(net) if hasattr(net, "Proto") else net.name
            if name not in self._net_dict:
                self._net_dict[name] = net
                self._plan.network.add().CopyFrom(as_net_def(net))

    def Nets(self) -> list[Any]:
        return list(self._net_dict.values())

    def AddStep(self, step: Any) -> None:
        if isinstance(step, ExecutionStep):
            step._is_used = True
            self._steps.append(step)
            self.AddNets(list(step._net_dict.values()))
            step = step.Proto()
        self._plan.execution_step.add().CopyFrom(step)

    def Steps(self) -> list[ExecutionStep]:
        return list(self._steps)

    def get_all_attributes(self, name: str) -> list:
        return [a for step in self._steps for a in step.get_all_attributes(name)]


def execution_step(default_name: str, steps_or_nets: Any, num_iter: int | None = None,
                   report_net: Any = None, report_interval: int | None = None,
                   concurrent_substeps: bool | None = None, should_stop_blob: Any = None,
                   only_once: bool | None = None, num_concurrent_instances: int | None = None,
                   create_workspace: bool = False, run_every_ms: int | None = None) -> ExecutionStep:
    """Build an ExecutionStep from nets or steps; with no stop blob it runs once by default."""
    if should_stop_blob is None and num_iter is None:
        num_iter = 1
    step = ExecutionStep(default_name)
    if should_stop_blob is not None:
        step.SetShouldStopBlob(should_stop_blob)
    if num_iter is not None:
        step.SetIter(num_iter)
    if only_once is not None:
        step.SetOnlyOnce(only_once)
    if concurrent_substeps is not None:
        step.SetConcurrentSubsteps(concurrent_substeps)
    if report_net is not None:
        step.SetReportNet(report_net, report_interval or 1)
    if num_concurrent_instances is not None:
        step.SetNumConcurrentInstances(num_concurrent_instances)
    if create_workspace:
        step.SetCreateWorkspace(True)
    if run_every_ms:
        step.RunEveryMillis(run_every_ms)
    items = steps_or_nets if isinstance(steps_or_nets, (list, tuple)) else [steps_or_nets]
    for item in items:
        if isinstance(item, (ExecutionStep, caffe2_pb2.ExecutionStep)):
            step.AddSubstep(item)
        else:
            step.AddNet(item)
    return step
