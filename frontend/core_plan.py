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


def get_net_name(netlike: Any) -> str:
    """The name of a core.Net, a NetDef, or a name itself."""
    if isinstance(netlike, caffe2_pb2.NetDef):
        return netlike.name
    if hasattr(netlike, "Proto"):
        return netlike.Proto().name
    return str(netlike)


def _add_net_to_dict(net_dict: dict[str, Any], net: Any) -> bool:
    """Record ``net`` under its name; False when that name is already there (the same net)."""
    name = get_net_name(net)
    if name in net_dict:
        known = net_dict[name]
        if known is not None and not isinstance(net, str) and known is not net \
                and as_net_def(known).SerializeToString() != as_net_def(net).SerializeToString():
            raise ValueError(f"two different nets are named {name!r}; give them distinct names")
        return False
    net_dict[name] = None if isinstance(net, str) else net
    return True


def _is_step(item: Any) -> bool:
    return isinstance(item, (ExecutionStep, caffe2_pb2.ExecutionStep))


def _is_net(item: Any) -> bool:
    return isinstance(item, caffe2_pb2.NetDef) or (hasattr(item, "Proto") and not _is_step(item)
                                                    and isinstance(item.Proto(), caffe2_pb2.NetDef))


class ExecutionStep:
    """A step of a plan: run nets (or substeps) ``num_iter`` times or until a stop blob is true.

    >>> ExecutionStep("", []).Name().startswith("step")
    True
    """
    _step_names_used: set[str] = set()

    @staticmethod
    def _get_next_step_name(basename: str) -> str:
        name, index = basename, 1
        while name in ExecutionStep._step_names_used:
            name = f"{basename}_{index}"
            index += 1
        ExecutionStep._step_names_used.add(name)
        return name

    def __init__(self, name: str | None, nets: Any = None, num_iter: int | None = None):
        self._step = caffe2_pb2.ExecutionStep(name=name or ExecutionStep._get_next_step_name("step"))
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

    def _notify_is_used(self) -> None:
        self._is_used = True

    def _assert_can_mutate(self) -> None:
        if self._is_used:
            raise RuntimeError(f"step {self._step.name!r} was already added to a plan; it cannot change")

    def HasNets(self) -> bool:
        return len(self._step.network) > 0

    def HasSubsteps(self) -> bool:
        return len(self._step.substep) > 0

    def Nets(self) -> list[Any]:
        return [n for n in self._net_dict.values() if n is not None]

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
        _add_net_to_dict(self._net_dict, report_net)
        self._step.report_net = get_net_name(report_net)
        self._step.report_interval = report_interval

    def AddSubstep(self, substep: Any) -> "ExecutionStep":
        self._assert_can_mutate()
        if self.HasNets():
            raise ValueError(f"step {self._step.name!r} has nets; a step has nets or substeps, not both")
        if isinstance(substep, ExecutionStep):
            substep._notify_is_used()
            if not substep.HasNets() and not substep.HasSubsteps():
                return self  # an empty step runs nothing; Caffe2 leaves it out
            for net in substep.Nets():
                _add_net_to_dict(self._net_dict, net)
            self._substeps.append(substep)
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
        _add_net_to_dict(self._net_dict, net)
        self._step.network.append(get_net_name(net))
        return self

    def get_all_attributes(self, name: str) -> list:
        return [a for net in self._net_dict.values() if hasattr(net, "get_attributes")
                for a in net.get_attributes(name)]

    def Proto(self) -> caffe2_pb2.ExecutionStep:
        return self._step


def add_nets_in_order(step: ExecutionStep, net_list: list[str]) -> None:
    """Append the names of the nets ``step`` uses, substeps first, in first-use order."""
    for substep in step.Substeps():
        add_nets_in_order(substep, net_list)
    proto = step.Proto()
    for name in proto.network:
        if name not in net_list:
            net_list.append(name)
    if proto.report_net and proto.report_net not in net_list:
        net_list.append(proto.report_net)


class Plan:
    """A PlanDef under construction; adding a step also adds the nets it references, in first-use order."""

    def __init__(self, name_or_step: Any):
        self._plan = caffe2_pb2.PlanDef()
        self._net_dict: dict[str, Any] = {}
        self._steps: list[ExecutionStep] = []
        if isinstance(name_or_step, ExecutionStep):
            self._plan.name = name_or_step.Name()
            self.AddStep(name_or_step)
        elif isinstance(name_or_step, str):
            self._plan.name = name_or_step
        else:
            raise ValueError(f"Plan takes a name or an ExecutionStep, got {type(name_or_step).__name__}")

    def __str__(self) -> str:
        return self._plan.name

    def Proto(self) -> caffe2_pb2.PlanDef:
        return self._plan

    def AddNets(self, nets: Sequence[Any]) -> None:
        for net in nets:
            if _add_net_to_dict(self._net_dict, net):
                self._plan.network.add().CopyFrom(as_net_def(net))

    def Nets(self) -> list[Any]:
        return list(self._net_dict.values())

    def AddStep(self, step: Any) -> None:
        if isinstance(step, ExecutionStep):
            step._notify_is_used()
            if not step.HasNets() and not step.HasSubsteps():
                return
            self._steps.append(step)
            self._plan.execution_step.add().CopyFrom(step.Proto())
            # Nets join the plan in the order the steps first use them.
            names: list[str] = []
            add_nets_in_order(step, names)
            self.AddNets([step._net_dict[n] for n in names if step._net_dict.get(n) is not None])
            return
        self._plan.execution_step.add().CopyFrom(step)

    def Steps(self) -> list[ExecutionStep]:
        return list(self._steps)

    def get_all_attributes(self, name: str) -> list:
        return [a for step in self._steps for a in step.get_all_attributes(name)]


def execution_step(default_name: str | None, steps_or_nets: Any, num_iter: int | None = None,
                   report_net: Any = None, report_interval: int | None = None,
                   concurrent_substeps: bool | None = None, should_stop_blob: Any = None,
                   only_once: bool | None = None, num_concurrent_instances: int | None = None,
                   create_workspace: bool = False, run_every_ms: int | None = None) -> ExecutionStep:
    """An ExecutionStep over ``steps_or_nets``: None, a net, a step, a list of nets, or a list of
    steps (anything ``to_execution_step`` takes: NetBuilders too).

    ``should_stop_blob`` (a scalar bool blob) is checked after every net or substep and ends the
    step when true; without it (and without ``num_iter``) the step runs once.

    >>> from netjit.core import Net
    >>> step = execution_step("train", [Net("a_net"), Net("b_net")], num_iter=10)
    >>> list(step.Proto().network), step.Proto().num_iter
    (['a_net', 'b_net'], 10)
    """
    if should_stop_blob is not None and num_iter is not None:
        raise ValueError(f"step {default_name!r}: give should_stop_blob or num_iter, not both")
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
        if report_interval is None:
            raise ValueError(f"step {default_name!r}: report_net needs a report_interval (seconds)")
        step.SetReportNet(report_net, report_interval)
    if num_concurrent_instances is not None:
        step.SetNumConcurrentInstances(num_concurrent_instances)
    if create_workspace:
        step.SetCreateWorkspace(True)
    if run_every_ms:
        step.RunEveryMillis(run_every_ms)
    if isinstance(steps_or_nets, (ExecutionStep, caffe2_pb2.ExecutionStep)):
        step.AddSubstep(steps_or_nets)
    elif isinstance(steps_or_nets, (list, tuple)):
        if all(_is_net(x) for x in steps_or_nets):
            for x in steps_or_nets:
                step.AddNet(x)
        else:
            for x in steps_or_nets:
                step.AddSubstep(to_execution_step(x))
    elif _is_net(steps_or_nets):
        step.AddNet(steps_or_nets)
    elif steps_or_nets:
        raise ValueError(f"steps_or_nets must be a step, a net, or a list of nets or steps, got "
                         f"{type(steps_or_nets).__name__}")
    return step


def to_execution_step(step_or_nets: Any, default_name: str | None = None) -> ExecutionStep:
    """An ExecutionStep from a step (returned as is), a NetBuilder (its nets and stop condition),
    a net or a list of nets/steps.

    >>> from netjit.net_builder import NetBuilder, ops
    >>> with NetBuilder() as nb:
    ...     _ = ops.Const(1.0, blob_out="one")
    >>> to_execution_step(nb).HasNets()
    True
    """
    if isinstance(step_or_nets, ExecutionStep):
        return step_or_nets
    from netjit.net_builder import NetBuilder
    stop_blob = None
    if not default_name and hasattr(step_or_nets, "name"):
        default_name = step_or_nets.name
    if isinstance(step_or_nets, NetBuilder):
        stop_blob = step_or_nets._stop_blob
        step_or_nets = step_or_nets.get()
    return execution_step(default_name, step_or_nets, should_stop_blob=stop_blob)


def scoped_execution_step(name: str | None, *args: Any, **kwargs: Any) -> ExecutionStep:
    """``execution_step`` with the step name under the current ``core.NameScope``."""
    from netjit.scope import CurrentNameScope
    return execution_step(CurrentNameScope() + name if name else name, *args, **kwargs)
