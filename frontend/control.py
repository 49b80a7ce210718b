"""``caffe2.python.control``: loops and branches made of execution steps.

Each function returns an ExecutionStep (run it with ``workspace.RunPlan``). A condition is a scalar
bool blob, or a net whose last external output is that blob (the net then runs first, each time
the condition is needed). Steps stop through ``should_stop_blob``, which the plan executor checks
after every net and substep.

>>> from netjit import core, workspace
>>> import numpy as np
>>> init = core.Net("ctl_doc_init"); _ = init.ConstantFill([], "ctl_doc_x", shape=[1], value=0.0)
>>> body = core.Net("ctl_doc_body"); _ = body.Add(["ctl_doc_x", "ctl_doc_one"], "ctl_doc_x")
>>> _ = init.ConstantFill([], "ctl_doc_one", shape=[1], value=1.0)
>>> workspace.RunPlan(core.Plan(Do("ctl_doc", init, For("ctl_doc_loop", body, 3))))
True
>>> workspace.FetchBlob("ctl_doc_x")
array([3.], dtype=float32)
"""
from __future__ import annotations

from typing import Any

from netjit import core

_used_step_names: set[str] = set()
_next_index = [1]


def _get_next_step_name(control_name: str, base_name: str) -> str:
    joined = f"{base_name}/{control_name}"
    name = joined
    while name in _used_step_names:
        name = f"{joined}_{_next_index[0]}"
        _next_index[0] += 1
    _used_step_names.add(name)
    return name


def _MakeList(items: tuple) -> list:
    """(a, b) -> [a, b]; (a,) -> [a]; ([a, b],) -> [a, b]."""
    if not items:
        raise ValueError("input cannot be empty.")
    if len(items) == 1:
        return list(items[0]) if isinstance(items[0], list) else [items[0]]
    return list(items)


def _IsNets(nets_or_steps: Any) -> bool:
    if isinstance(nets_or_steps, list):
        return all(isinstance(n, core.Net) for n in nets_or_steps)
    return isinstance(nets_or_steps, core.Net)


def _PrependNets(nets_or_steps: Any, *nets: Any) -> list:
    nets_or_steps = _MakeList((nets_or_steps,))
    nets_list = _MakeList(nets)
    if _IsNets(nets_or_steps):
        return nets_list + nets_or_steps
    return [Do("prepend", nets_list)] + nets_or_steps


def _AppendNets(nets_or_steps: Any, *nets: Any) -> list:
    nets_or_steps = _MakeList((nets_or_steps,))
    nets_list = _MakeList(nets)
    if _IsNets(nets_or_steps):
        return nets_or_steps + nets_list
    return nets_or_steps + [Do("append", nets_list)]


def GetConditionBlobFromNet(condition_net: Any) -> core.BlobReference:
    """The condition a net computes: its last external output (a scalar bool)."""
    outputs = condition_net.Proto().external_output
    if not len(outputs):
        raise ValueError(f"condition net {condition_net.Name()!r} must have at least one external output")
    # A BlobReference, so later ops do not add the current name scope to it again.
    return core.BlobReference(outputs[-1])


def BoolNet(*blobs_with_bool_value: Any) -> core.Net:
    """A net setting each ``(blob, bool)`` pair's blob to that constant (scalar bool).

    >>> [op.type for op in BoolNet(("a_done", False), ("b_done", True)).Proto().op]
    ['ConstantFill', 'ConstantFill']
    """
    pairs = _MakeList(blobs_with_bool_value)
    bool_net = core.Net("bool_net")
    for blob, value in pairs:
        out = bool_net.ConstantFill([], [blob], shape=[], value=bool(value), dtype=core.DataType.BOOL)
        bool_net.AddExternalOutput(out)
    return bool_net


def NotNet(condition_blob_or_net: Any) -> tuple[core.Net, core.BlobReference]:
    """(a net computing NOT the condition, its output blob)."""
    if isinstance(condition_blob_or_net, core.Net):
        condition_blob = GetConditionBlobFromNet(condition_blob_or_net)
    else:
        condition_blob = condition_blob_or_net
    not_net = core.Net("not_net")
    out = not_net.Not(condition_blob)
    not_net.AddExternalOutput(out)
    return not_net, out


def _CopyConditionBlobNet(condition_blob: Any) -> tuple[core.Net, core.BlobReference]:
    net = core.Net("copy_condition_blob_net")
    out = net.Copy(condition_blob)
    net.AddExternalOutput(out)
    return net, out


def MergeConditionNets(name: str, condition_nets: Any, relation: str) -> Any:
    """One condition net holding the ops of all ``condition_nets`` and combining their conditions
    with ``relation`` ("And" or "Or")."""
    if not isinstance(condition_nets, list):
        return condition_nets
    if len(condition_nets) <= 1:
        return condition_nets[0] if condition_nets else None
    merged = core.Net(name)
    last = None
    for net in condition_nets:
        proto = net.Proto()
        if proto.device_option != merged.Proto().device_option or proto.type != merged.Proto().type:
            raise ValueError(f"condition net {proto.name!r} has another device option or net type than {name!r}")
        merged.AppendNet(net)
        del merged.Proto().external_output[:]  # the combined condition replaces them
        cond = GetConditionBlobFromNet(net)
        last = cond if last is None else getattr(merged, relation)([last, cond])
        for key, values in net._attr_dict.items():
            merged._attr_dict.setdefault(key, []).extend(values)
    merged.AddExternalOutput(last)
    return merged


def CombineConditions(name: str, condition_nets: Any, relation: str) -> Any:
    """A net combining the conditions of ``condition_nets`` with ``relation`` without their ops (run
    the condition nets yourself first)."""
    if not condition_nets:
        return None
    if not isinstance(condition_nets, list):
        raise ValueError("condition_nets must be a list of nets.")
    if len(condition_nets) == 1:
        net, _ = _CopyConditionBlobNet(GetConditionBlobFromNet(condition_nets[0]))
        return net
    combined = core.Net(name)
    last = None
    for net in condition_nets:
        cond = GetConditionBlobFromNet(net)
        last = cond if last is None else getattr(combined, relation)([last, cond])
    combined.AddExternalOutput(last)
    return combined


def Do(name: str, *nets_or_steps: Any) -> core.ExecutionStep:
    """Run the nets or steps once, in order."""
    items = _MakeList(nets_or_steps)
    if len(items) == 1 and isinstance(items[0], core.ExecutionStep):
        return items[0]
    return core.scoped_execution_step(_get_next_step_name("Do", name), items)


def DoParallel(name: str, *nets_or_steps: Any) -> core.ExecutionStep:
    """Run the nets or steps as concurrent substeps and wait for all (netjit runs them in order)."""
    items = _MakeList(nets_or_steps)
    if len(items) == 1 and isinstance(items[0], core.ExecutionStep):
        return items[0]
    return core.scoped_execution_step(_get_next_step_name("DoParallel", name), items, concurrent_substeps=True)


def _RunOnceIf(name: str, condition_blob_or_net: Any, nets_or_steps: Any) -> core.ExecutionStep:
    """Run once if the condition holds (a condition net runs first)."""
    not_net, stop_blob = NotNet(condition_blob_or_net)
    if isinstance(condition_blob_or_net, core.Net):
        nets_or_steps = _PrependNets(nets_or_steps, condition_blob_or_net, not_net)
    else:
        nets_or_steps = _PrependNets(nets_or_steps, not_net)

    def if_step(control_name: str) -> core.ExecutionStep:
        return core.scoped_execution_step(_get_next_step_name(control_name, name), nets_or_steps,
                                          should_stop_blob=stop_blob, only_once=True)

    if _IsNets(nets_or_steps):
        return Do(f"{name}/_RunOnceIf", BoolNet((stop_blob, False)), if_step("_RunOnceIf-inner"))
    return if_step("_RunOnceIf")


def _RunOnceIfNot(name: str, condition_blob_or_net: Any, nets_or_steps: Any) -> core.ExecutionStep:
    """Run once if the condition does not hold."""
    if isinstance(condition_blob_or_net, core.Net):
        condition_blob = GetConditionBlobFromNet(condition_blob_or_net)
        nets_or_steps = _PrependNets(nets_or_steps, condition_blob_or_net)
    else:
        copy_net, condition_blob = _CopyConditionBlobNet(condition_blob_or_net)
        nets_or_steps = _PrependNets(nets_or_steps, copy_net)
    return core.scoped_execution_step(_get_next_step_name("_RunOnceIfNot", name), nets_or_steps,
                                      should_stop_blob=condition_blob, only_once=True)


def For(name: str, nets_or_steps: Any, iter_num: int) -> core.ExecutionStep:
    """Run the nets or steps ``iter_num`` times (a CreateCounter/CountDown pair counts)."""
    init_net = core.Net("init-net")
    counter = init_net.CreateCounter([], init_count=iter_num)
    iter_net = core.Net("For-iter")
    done = iter_net.CountDown([counter])
    for_step = core.scoped_execution_step(_get_next_step_name("For-inner", name),
                                          _PrependNets(nets_or_steps, iter_net), should_stop_blob=done)
    return Do(f"{name}/For", Do(f"{name}/For-init-net", init_net), for_step)


def While(name: str, condition_blob_or_net: Any, nets_or_steps: Any) -> core.ExecutionStep:
    """Run the nets or steps while the condition holds (checked before each pass)."""
    not_net, stop_blob = NotNet(condition_blob_or_net)
    if isinstance(condition_blob_or_net, core.Net):
        nets_or_steps = _PrependNets(nets_or_steps, condition_blob_or_net, not_net)
    else:
        nets_or_steps = _PrependNets(nets_or_steps, not_net)

    def while_step(control_name: str) -> core.ExecutionStep:
        return core.scoped_execution_step(_get_next_step_name(control_name, name), nets_or_steps,
                                          should_stop_blob=stop_blob)

    if _IsNets(nets_or_steps):
        # A stop blob left True by an earlier run would end the loop early: reset it first.
        return Do(f"{name}/While", BoolNet((stop_blob, False)), while_step("While-inner"))
    return while_step("While")


def Until(name: str, condition_blob_or_net: Any, nets_or_steps: Any) -> core.ExecutionStep:
    """Run the nets or steps until the condition holds (checked before each pass)."""
    if isinstance(condition_blob_or_net, core.Net):
        stop_blob = GetConditionBlobFromNet(condition_blob_or_net)
        nets_or_steps = _PrependNets(nets_or_steps, condition_blob_or_net)
    else:
        stop_blob = core.BlobReference(str(condition_blob_or_net))
    return core.scoped_execution_step(_get_next_step_name("Until", name), nets_or_steps,
                                      should_stop_blob=stop_blob)


def DoWhile(name: str, condition_blob_or_net: Any, nets_or_steps: Any) -> core.ExecutionStep:
    """Run the nets or steps, then again while the condition holds (checked after each pass)."""
    not_net, stop_blob = NotNet(condition_blob_or_net)
    if isinstance(condition_blob_or_net, core.Net):
        nets_or_steps = _AppendNets(nets_or_steps, condition_blob_or_net, not_net)
    else:
        nets_or_steps = _AppendNets(nets_or_steps, not_net)
    inner = core.scoped_execution_step(_get_next_step_name("DoWhile-inner", name), nets_or_steps,
                                       should_stop_blob=stop_blob)
    return Do(f"{name}/DoWhile", BoolNet((stop_blob, False)), inner)


def DoUntil(name: str, condition_blob_or_net: Any, nets_or_steps: Any) -> core.ExecutionStep:
    """Run the nets or steps, then again until the condition holds. A condition *blob* already True
    ends the loop after the first net or step."""
    if not isinstance(condition_blob_or_net, core.Net):
        return core.scoped_execution_step(_get_next_step_name("DoUntil", name), nets_or_steps,
                                          should_stop_blob=core.BlobReference(str(condition_blob_or_net)))
    nets_or_steps = _AppendNets(nets_or_steps, condition_blob_or_net)
    stop_blob = GetConditionBlobFromNet(condition_blob_or_net)
    inner = core.scoped_execution_step(_get_next_step_name("DoUntil-inner", name), nets_or_steps,
                                       should_stop_blob=stop_blob)
    return Do(f"{name}/DoUntil", BoolNet((stop_blob, False)), inner)


def Switch(name: str, *conditions: Any) -> core.ExecutionStep:
    """Run every ``(condition, nets_or_steps)`` whose condition holds (each condition net runs once)."""
    pairs = _MakeList(conditions)
    return core.scoped_execution_step(_get_next_step_name("Switch", name),
                                      [_RunOnceIf(f"{name}/Switch", cond, step) for cond, step in pairs])


def SwitchNot(name: str, *conditions: Any) -> core.ExecutionStep:
    """Run every ``(condition, nets_or_steps)`` whose condition does not hold."""
    pairs = _MakeList(conditions)
    return core.scoped_execution_step(_get_next_step_name("SwitchNot", name),
                                      [_RunOnceIfNot(f"{name}/SwitchNot", cond, step) for cond, step in pairs])


def If(name: str, condition_blob_or_net: Any, true_nets_or_steps: Any,
       false_nets_or_steps: Any = None) -> core.ExecutionStep:
    """Run ``true_nets_or_steps`` if the condition holds, else ``false_nets_or_steps`` (if given)."""
    if not false_nets_or_steps:
        return _RunOnceIf(f"{name}/If", condition_blob_or_net, true_nets_or_steps)
    if isinstance(condition_blob_or_net, core.Net):
        condition_blob = GetConditionBlobFromNet(condition_blob_or_net)
    else:
        condition_blob = condition_blob_or_net
    return Do(f"{name}/If",
              _RunOnceIf(f"{name}/If-true", condition_blob_or_net, true_nets_or_steps),
              _RunOnceIfNot(f"{name}/If-false", condition_blob, false_nets_or_steps))


def IfNot(name: str, condition_blob_or_net: Any, true_nets_or_steps: Any,
          false_nets_or_steps: Any = None) -> core.ExecutionStep:
    """Run ``true_nets_or_steps`` if the condition does not hold, else ``false_nets_or_steps``."""
    if not false_nets_or_steps:
        return _RunOnceIfNot(f"{name}/IfNot", condition_blob_or_net, true_nets_or_steps)
    if isinstance(condition_blob_or_net, core.Net):
        condition_blob = GetConditionBlobFromNet(condition_blob_or_net)
    else:
        condition_blob = condition_blob_or_net
    return Do(f"{name}/IfNot",
              _RunOnceIfNot(f"{name}/IfNot-true", condition_blob_or_net, true_nets_or_steps),
              _RunOnceIf(f"{name}/IfNot-false", condition_blob, false_nets_or_steps))
