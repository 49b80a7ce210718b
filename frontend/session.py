"""``caffe2.python.session``: run Tasks, TaskGroups, steps and nets, and fetch the tasks' outputs.

``LocalSession(ws)`` runs everything in this process: a task group becomes one plan (its tasks as
concurrent substeps, run one after another here) in the session's workspace, or, for PRIVATE
groups (the default), in a child of it that shares its blobs and drops the rest afterwards.

>>> from netjit import core
>>> from netjit.task import Task, final_output
>>> net = core.Net("session_doc"); y = net.ConstantFill([], "session_doc_y", shape=[2], value=3.0)
>>> task = Task(step=net, outputs=[y])
>>> LocalSession().run(task); task.outputs()[0].fetch().tolist()
[3.0, 3.0]
"""
from __future__ import annotations

import threading
from typing import Any

from netjit import core
from netjit.runtime.workspace import REGISTRY, Workspace
from netjit.task import Cluster, Task, TaskGroup, WorkspaceType


class CompiledRunnable:
    """What ``Session.compile`` made of a runnable, for one session class."""

    def __init__(self, obj: Any, session_class: type):
        self.obj = obj
        self.session_class = session_class


class Session:
    """Runs runnables (TaskGroup, Task, ExecutionStep, Net or a list of nets/steps); compiled forms
    are cached per runnable."""
    _compiled_cache: dict = {}

    def __init__(self) -> None:
        self._open = True
        self._lock = threading.Lock()

    def is_open(self) -> bool:
        return self._open

    @classmethod
    def compile(cls, runnable: Any, workspace_type: str | None = None, setup_net_list: Any = None
                ) -> CompiledRunnable:
        if isinstance(runnable, CompiledRunnable):
            if runnable.session_class is not cls:
                raise ValueError("this runnable was compiled for another session class")
            return runnable
        key = (id(runnable), workspace_type)
        cached = cls._compiled_cache.get(key)
        if cached is not None and cached[0] is runnable:
            return cached[1]
        if isinstance(runnable, TaskGroup):
            if workspace_type is not None and runnable.workspace_type() not in (None, workspace_type):
                raise ValueError("the TaskGroup's workspace type differs from the one asked for")
            group = runnable
        else:
            with TaskGroup(workspace_type=workspace_type) as group:
                if isinstance(runnable, Task):
                    group.add(runnable)
                elif isinstance(runnable, core.ExecutionStep):
                    group.add(Task(step=runnable))
                else:
                    group.add(Task(step=core.to_execution_step(runnable)))
        compiled = CompiledRunnable(cls._compile_task_group(group, setup_net_list), session_class=cls)
        cls._compiled_cache[key] = (runnable, compiled)
        return compiled

    def run(self, runnable: Any, workspace_type: str | None = None, setup_net_list: Any = None) -> None:
        """Run ``runnable`` to completion; its tasks' outputs can be fetched afterwards."""
        if not self.is_open():
            raise RuntimeError("the session is closed")
        if runnable is None:
            raise ValueError("nothing to run")
        with self._lock:
            self._run_compiled(self.compile(runnable, workspace_type, setup_net_list).obj)

    def close(self) -> None:
        if self.is_open():
            self._do_close()
            self._open = False

    def fetch_output(self, output: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not fetch outputs")

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, etype: Any, *args: Any) -> None:
        if etype is None:
            self.close()

    @classmethod
    def _compile_task_group(cls, task_group: TaskGroup, setup_net_list: Any = None) -> Any:
        return task_group

    def _run_compiled(self, compiled: Any) -> None:
        raise NotImplementedError

    def _do_close(self) -> None:
        pass


class LocalSession(Session):
    """A Session on a workspace of this process (default: the current one)."""

    def __init__(self, ws: Any = None):
        super().__init__()
        # A workspace.C.Workspace wraps a runtime workspace; use that one.
        self._ws: Workspace = getattr(ws, "_rt", ws) if ws is not None else REGISTRY.current

    @classmethod
    def _compile_task_group(cls, task_group: TaskGroup, setup_net_list: Any = None) -> Any:
        with Cluster():
            task = task_group.to_task()
        plan = core.Plan("task_group_plan")
        plan.AddStep(task.get_step())
        return plan, task.output_list(), task.workspace_type()

    def _run_compiled(self, compiled: Any) -> None:
        from netjit.plan_exec import child_workspace, run_plan
        plan, output_list, workspace_type = compiled
        names = [str(n) for n in output_list.names()]
        # Outputs exist in the session's workspace first, so a private run writes them there.
        for name in names:
            self._ws.create_blob(name)
        output_list.set_values([core.BlobReference(n) for n in names], _fetch_func=self._fetch_output)
        task_ws = child_workspace(self._ws, "task") if workspace_type == WorkspaceType.PRIVATE else self._ws
        run_plan(plan, task_ws)

    def _fetch_output(self, output: Any) -> Any:
        value = self._ws.get(str(output))
        return value.copy() if hasattr(value, "copy") else value

    def fetch_output(self, output: Any) -> Any:
        return output.fetch()
