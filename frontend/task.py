"""``caffe2.python.task``: Tasks (an execution step plus the outputs it hands back) gathered in
TaskGroups, which a Session runs. A Task used as a ``with`` block is a NetBuilder: ``net_builder.ops``
inside it build its step, and ``ops.task_init()``/``ops.task_exit()`` blocks become steps that run once
before and after it.

>>> from netjit.net_builder import ops
>>> from netjit.session import LocalSession
>>> with Task() as task:
...     with ops.task_init():
...         one = ops.Const(1)
...     two = ops.Add([one, one])
...     out = final_output(two)
>>> LocalSession().run(task)
>>> int(out.fetch())
2

Nodes are names only here: every task runs in this process (one machine, one "node").
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from netjit import context, core
from netjit.net_builder import LOCAL_SETUP, REPORT_STEP, TASK_INSTANCE_SETUP, TASK_SETUP


@context.define_context(allow_default=True)
class Cluster:
    """The node names tasks used (kept in first-use order)."""

    def __init__(self) -> None:
        self._nodes: list[str] = []
        self._node_kwargs: dict[str, dict] = {}

    def add_node(self, node: "Node") -> None:
        if str(node) not in self._nodes:
            self._nodes.append(str(node))
        self._node_kwargs[str(node)] = {**node.kwargs(), **self._node_kwargs.get(str(node), {})}

    def nodes(self) -> list[str]:
        return self._nodes

    def node_kwargs(self) -> dict[str, dict]:
        return self._node_kwargs


@context.define_context(allow_default=True)
class Node:
    """Tasks made inside ``with Node(name):`` run on that node (tasks on one node share blobs)."""

    def __init__(self, node: str = "local", **kwargs: Any):
        self._name = str(node)
        self._kwargs = kwargs
        Cluster.current().add_node(self)

    def __str__(self) -> str:
        return self._name

    def kwargs(self) -> dict:
        return self._kwargs


class WorkspaceType:
    """PRIVATE: a task group's run gets a fresh child workspace; GLOBAL: it runs in the session's."""
    PRIVATE = "private"
    GLOBAL = "global"


def get_setup_nets(key: str, steps_or_nets: list, target: Any) -> tuple[list, list]:
    """(init nets/steps, exit nets/steps) from the setup objects attached under ``key`` to the nets of
    ``steps_or_nets`` (``ops.task_init()`` blocks, SetupNets); each object is used once."""
    init_net, exit_net = core.Net(key + "/init"), core.Net(key + "/exit")
    init_nets: list = []
    exit_nets: list = []
    objs: list = []
    for item in steps_or_nets:
        if hasattr(item, "get_all_attributes"):
            objs += item.get_all_attributes(key)
        elif hasattr(item, "get_attributes"):
            objs += item.get_attributes(key)
    for obj in objs:
        if getattr(obj, "_setup_used", False) or getattr(obj, "_setup_target", target) != target:
            continue
        for method, into, net in (("setup", init_nets, init_net), ("exit", exit_nets, exit_net)):
            if not hasattr(obj, method):
                continue
            nets = getattr(obj, method)(net)
            if isinstance(nets, (list, tuple)):
                into += nets
            elif isinstance(nets, (core.Net, core.ExecutionStep)):
                into.append(nets)
            elif nets is not None:
                raise TypeError(f"Unsupported type for setup: {type(nets).__name__}")
            obj._setup_used = True
    if len(init_net.Proto().op):
        init_nets.insert(0, init_net)
    if len(exit_net.Proto().op):
        exit_nets.insert(0, exit_net)
    return init_nets, exit_nets


def add_setup_steps(step: Any, init_nets: list, exit_nets: list, name: str) -> Any:
    """``step`` between an init step and an exit step (when there are any)."""
    if not init_nets and not exit_nets:
        return step
    steps = []
    if init_nets:
        steps.append(core.execution_step(f"{name}:init", init_nets))
    steps.append(step)
    if exit_nets:
        steps.append(core.execution_step(f"{name}:exit", exit_nets))
    return core.execution_step(name, steps)


@context.define_context(allow_default=False)
class TaskGroup:
    """Tasks that run together; tasks of one node share a workspace. Run it with a Session."""
    LOCAL_SETUP = LOCAL_SETUP

    def __init__(self, workspace_type: str | None = None):
        self._tasks: list[Task] = []
        self._tasks_to_add: list[Task] = []
        self._already_used = False
        self._report_nets: dict[str, tuple] = {}
        self._report_steps: list[tuple[str, Any]] = []
        self._workspace_type = workspace_type
        self._tasks_by_node: Any = None

    def add(self, task: "Task") -> None:
        if self._already_used:
            raise AssertionError("Cannot add Task to an already used TaskGroup.")
        if self._workspace_type is not None and task._workspace_type is not None \
                and self._workspace_type != task._workspace_type:
            raise AssertionError("a task's workspace type differs from its group's")
        if task._workspace_type is None:
            task._workspace_type = self._workspace_type or WorkspaceType.PRIVATE
        if self._workspace_type is None:
            self._workspace_type = task._workspace_type
        task._notify_used()
        self._tasks.append(task)

    def tasks(self) -> list["Task"]:
        if not self._already_used:
            for task in self._tasks_to_add:
                self.add(task)
            self._tasks_to_add = []
            self._already_used = True
        return self._tasks

    def num_registered_tasks(self) -> int:
        return len(self._tasks_to_add) + len(self._tasks)

    def used_nodes(self) -> list[str]:
        used: list[str] = []
        for task in self._tasks + self._tasks_to_add:
            if task.node not in used:
                used.append(task.node)
        return used

    def report_step(self, step: Any = None, node: Any = None, interval_ms: int = 1000) -> None:
        """A step run every ``interval_ms`` while the group runs, and once after its tasks finish."""
        step = core.to_execution_step(step)
        step.RunEveryMillis(interval_ms)
        self._report_steps.append((str(node or Node.current(node)), step))

    def report_net(self, net: Any = None, node: Any = None, report_interval: int = 5) -> Any:
        """Deprecated in Caffe2 (use report_step): the node's reporter net, made on first use."""
        node = str(node or Node.current(node))
        if node not in self._report_nets:
            self._report_nets[node] = (net if net else core.Net(f"{node}/reporter"), report_interval)
        return self._report_nets[node][0]

    def tasks_by_node(self, node_remap: Any = None) -> "TaskGroup":
        """A TaskGroup with one Task per (remapped) node running that node's tasks concurrently."""
        node_map = {node: node_remap(node) if node_remap else node for node in self.used_nodes()}
        if self._tasks_by_node is not None:
            grouped, previous = self._tasks_by_node
            if previous != node_map:
                raise AssertionError("Cannot call tasks_by_node multiple times.")
            return grouped
        for node, (net, interval) in self._report_nets.items():
            self.report_step(net, node=node, interval_ms=interval * 1000)
        self._report_nets = {}
        by_node: dict[str, list] = defaultdict(list)
        for task in self.tasks():
            by_node[node_map[task.node]].append(task)
        reports: dict[str, list] = defaultdict(list)
        for node, step in self._report_steps:
            reports[node_map[node]].append(step)
        grouped = TaskGroup()
        for node, tasks in by_node.items():
            steps = list(reports[node])
            outputs: list = []
            workspace_type = WorkspaceType.PRIVATE
            for task in tasks:
                step = task.get_step()
                step.SetCreateWorkspace(task.workspace_type() == WorkspaceType.PRIVATE)
                steps.append(step)
                outputs += task.outputs()
                if task.workspace_type() == WorkspaceType.GLOBAL:
                    workspace_type = WorkspaceType.GLOBAL
            if len(steps) == 1:
                step = steps[0]
            else:
                step = core.execution_step(f"{node}:body", steps or [], concurrent_substeps=True)
            inits, exits = get_setup_nets(LOCAL_SETUP, [t.get_step() for t in tasks] + reports[node], self)
            Task(node=node, step=add_setup_steps(step, inits, exits, node), outputs=outputs,
                 name="grouped_by_node", group=grouped, workspace_type=workspace_type)
        self._tasks_by_node = (grouped, node_map)
        return grouped

    def to_task(self, node: Any = None) -> "Task":
        """All tasks as one Task on one node."""
        node = str(Node.current(node))
        tasks = self.tasks_by_node(lambda _: node).tasks()
        return tasks[0] if tasks else Task()

    def workspace_type(self) -> str | None:
        return self._workspace_type


class TaskOutput:
    """A blob (or list of blobs) a task hands back; ``fetch()`` after the session ran it."""

    def __init__(self, names: Any):
        self._is_scalar = not isinstance(names, (list, tuple))
        self.names = [names] if self._is_scalar else list(names)
        self._values: list | None = None
        self._fetch_func: Any = None

    def set(self, values: list, _fetch_func: Any = None) -> None:
        if len(values) != len(self.names):
            raise AssertionError("Wrong number of output values.")
        self._values = values
        self._fetch_func = _fetch_func

    def get(self) -> Any:
        if self._values is None:
            raise AssertionError("Output value not set yet.")
        return self._values[0] if self._is_scalar else self._values

    def fetch(self) -> Any:
        if self._fetch_func is None:
            raise AssertionError("Cannot fetch value for this output: run its task with a Session first.")
        values = [self._fetch_func(v) for v in self._values or []]
        return values[0] if self._is_scalar else values


def final_output(blob_or_record: Any) -> TaskOutput:
    """Make a blob an output of the current Task (or of a new Task when none is active)."""
    task = Task.current(required=False) or Task()
    return task.add_output(blob_or_record)


class TaskOutputList:
    """The outputs of a task, in order."""

    def __init__(self, outputs: list | None = None):
        self.outputs = outputs or []

    def names(self) -> list:
        return [name for o in self.outputs for name in o.names]

    def set_values(self, values: list, _fetch_func: Any = None) -> None:
        offset = 0
        for o in self.outputs:
            o.set(values[offset:offset + len(o.names)], _fetch_func)
            offset += len(o.names)
        if offset != len(values):
            raise AssertionError("Wrong number of output values.")


@context.define_context()
class Task:
    """An execution step and its outputs; joins the current TaskGroup and Node when made."""
    TASK_SETUP = TASK_SETUP
    TASK_INSTANCE_SETUP = TASK_INSTANCE_SETUP
    REPORT_STEP = REPORT_STEP
    _global_names_used: set[str] = set()

    @staticmethod
    def _get_next_name(node: str, group: Any, name: str) -> str:
        base = f"{node}/{name}"
        used = Task._global_names_used if group is None else {t.name for t in group._tasks_to_add}
        current, i = base, 0
        while current in used:
            i += 1
            current = f"{base}:{i}"
        return current

    def __init__(self, step: Any = None, outputs: Any = None, workspace_type: str | None = None,
                 group: Any = None, node: Any = None, name: str | None = None, num_instances: int | None = None):
        if not name and isinstance(step, core.ExecutionStep):
            name = step.Proto().name
        name = name or "task"
        self.node = str(Node.current(None if node is None else Node(node)))
        self.group = TaskGroup.current(group, required=False)
        self.name = Task._get_next_name(self.node, self.group, name)
        if self.group is not None:
            self.group._tasks_to_add.append(self)
        self._already_used = False
        self._step: Any = None
        self._step_with_setup: Any = None
        self._outputs: list[TaskOutput] = []
        self._net_builder: Any = None
        if step is not None:
            self.set_step(step)
        if outputs is not None:
            self.add_outputs(outputs)
        self._workspace_type = workspace_type
        self._num_instances = num_instances

    def __enter__(self) -> "Task":
        # Leave the group's list while building, so tasks made inside come first.
        if self.group is not None:
            self.group._tasks_to_add.remove(self)
        self._assert_not_used()
        if self._step is not None:
            raise AssertionError("This Task already has an execution step.")
        from netjit.net_builder import NetBuilder
        self._net_builder = NetBuilder(_fullname=self.name)
        self._net_builder.__enter__()
        return self

    def __exit__(self, etype: Any, value: Any, traceback: Any) -> None:
        self._net_builder.__exit__(etype, value, traceback)
        if etype is None:
            self.set_step(self._net_builder)
        if self.group is not None:
            self.group._tasks_to_add.append(self)
        self._net_builder = None

    def workspace_type(self) -> str | None:
        return self._workspace_type

    def _assert_not_used(self) -> None:
        if self._already_used:
            raise AssertionError("Cannot modify task since it is already been used.")

    def add_output(self, output: Any) -> TaskOutput:
        self._assert_not_used()
        output = output if isinstance(output, TaskOutput) else TaskOutput(output)
        self._outputs.append(output)
        return output

    def add_outputs(self, outputs: Any) -> Any:
        self._assert_not_used()
        if not isinstance(outputs, (list, tuple)):
            return self.add_output(outputs)
        return [self.add_output(o) for o in outputs]

    def set_step(self, step: Any) -> None:
        self._assert_not_used()
        self._step = core.to_execution_step(step)

    def get_step(self) -> Any:
        """The task's step with its report steps and its setup/teardown steps around it."""
        if self._step_with_setup is not None:
            return self._step_with_setup
        if self._step is None:
            self._step_with_setup = core.execution_step(self.name, [])
            return self._step_with_setup
        reports = [s for s in self._step.get_all_attributes(REPORT_STEP) if not hasattr(s, "_report_step_used")]
        for step in reports:
            step._report_step_used = True
            if not step.Proto().run_every_ms:
                step.RunEveryMillis(1000)
        task_init, task_exit = get_setup_nets(TASK_SETUP, [self._step] + reports, self)
        inst_init, inst_exit = get_setup_nets(TASK_INSTANCE_SETUP, [self._step] + reports, self)
        body = self._step if not reports else core.execution_step(f"{self.name}:body", reports + [self._step])
        with_instance = add_setup_steps(body, inst_init, inst_exit, self.name + ":instance")
        if self._num_instances and self._num_instances > 1:
            with_instance.SetCreateWorkspace(True)
            with_instance = core.execution_step(f"{self.name}:parallel", [with_instance],
                                                num_concurrent_instances=self._num_instances)
        self._step_with_setup = add_setup_steps(with_instance, task_init, task_exit, self.name)
        return self._step_with_setup

    def output_list(self) -> TaskOutputList:
        return TaskOutputList(self._outputs)

    def outputs(self) -> list[TaskOutput]:
        return self._outputs

    def _notify_used(self) -> None:
        self.get_step()
        self._already_used = True


class SetupNets:
    """Nets to run once when a Task (attribute Task.TASK_SETUP) or a TaskGroup's node
    (TaskGroup.LOCAL_SETUP) starts and finishes: ``net.AddAttribute(Task.TASK_SETUP, SetupNets([init]))``."""

    def __init__(self, init_nets: Any = None, exit_nets: Any = None):
        self.init_nets = init_nets
        self.exit_nets = exit_nets

    def setup(self, init_net: Any) -> Any:
        return self.init_nets

    def exit(self, exit_net: Any) -> Any:
        return self.exit_nets
