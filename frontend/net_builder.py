"""``caffe2.python.net_builder``: build nets, loops and conditionals with ``with`` blocks.

Inside ``with NetBuilder() as nb:``, ``ops.<OpType>(...)`` adds an op to the builder's current net;
``ops.loop()``, ``ops.If()``, ``ops.stop_if()`` split the work into execution steps (a loop is a step
with a stop blob), and ``ops.IfNet()``/``ops.Else()``/``ops.WhileNet()``/``ops.Condition()`` build
``If``/``While`` operators instead (one net; blobs first written inside a block are local to it).
``core.to_execution_step(nb)`` turns the builder into a step for ``core.Plan``/``workspace.RunPlan``.

>>> from netjit import core, workspace
>>> with NetBuilder() as nb:
...     c = ops.Const(5)
...     d = ops.Const(0)
...     with ops.loop():
...         ops.stop_if(ops.LE([c, ops.Const(0)]))
...         _ = ops.Add([c, ops.Const(-1)], [c])
...         with ops.If(ops.GE([c, ops.Const(3)])):
...             _ = ops.Add([d, ops.Const(10)], [d])
>>> workspace.RunPlan(core.Plan(core.to_execution_step(nb)))
True
>>> int(workspace.FetchBlob(str(d)))
20
"""
from __future__ import annotations

from typing import Any

from netjit import context, core
from netjit.control_ops_util import add_if_op, add_while_op

# Net attribute keys a Task reads its setup/teardown steps from (Caffe2's task.Task constants).
TASK_SETUP = "task_setup"
TASK_INSTANCE_SETUP = "task_instance_setup"
REPORT_STEP = "report_step"
LOCAL_SETUP = "local_setup"


class NetBuilder(context.Managed):
    """Scope-driven builder of nets and execution steps.

    ``name``: the builder's name (nested builders join names with "/"); ``initial_scope``: blobs
    defined outside that its blocks may read and write. ``_use_control_ops=True`` makes the whole
    builder one net (If/While ops instead of execution steps), as needed for gradients.
    """

    def __init__(self, name: str | None = None, initial_scope: Any = None, _stop_blob_required: bool = False,
                 _stop_blob: Any = None, _fullname: str | None = None, _use_control_ops: bool = False):
        parent = NetBuilder.current(required=False)
        if _fullname and name:
            raise ValueError("give a NetBuilder either name or _fullname, not both")
        if _use_control_ops and (_stop_blob_required or _stop_blob):
            raise ValueError("a NetBuilder with control ops has no stop blob")
        self.name = _fullname or "/".join(n for n in (parent.name if parent else None, name) if n)
        self._frozen = False
        self._current_net: Any = None
        self._children: list[Any] = []
        if parent:
            parent._update_lexical_scope()
        self._init_lexical_scope = set(parent._lexical_scope) if parent else set()
        if initial_scope:
            self._init_lexical_scope |= {str(b) for b in initial_scope}
        self._lexical_scope = set(self._init_lexical_scope)
        self._stop_blob = _stop_blob
        self._stop_blob_required = _stop_blob_required
        self._use_control_ops = _use_control_ops

    def stop_blob(self) -> core.BlobReference:
        """This builder's stop blob, created (False) on first use."""
        if self._use_control_ops:
            raise ValueError("stop blobs are not used with control ops (use WhileNet/IfNet instead)")
        if self._stop_blob is None:
            net = self.current_net()
            self._stop_blob = core.BlobReference(net.NextName("stop_blob"), net=net)
            net.Const(False, blob_out=self._stop_blob)
            if self._current_net is not self._children[0]:
                # Initialise it before the first net too, so the step's first check reads False.
                self._children.insert(0, core.Net("stop_blob_init"))
                self._children[0].Const(False, blob_out=self._stop_blob)
        return self._stop_blob

    def stop_if(self, blob: Any) -> None:
        stop_blob = self.stop_blob()
        ops.Or([stop_blob, blob], [stop_blob])
        # The step checks its stop blob between nets: what follows goes into a new net.
        self._current_net = None

    def _assert_mutable(self) -> None:
        if self._frozen:
            raise AssertionError(f"This NetBuilder ({self.name}) has been built already.")

    def _update_lexical_scope(self) -> None:
        self._lexical_scope = set(self._init_lexical_scope)
        for child in self._children:
            if isinstance(child, core.Net):
                self._lexical_scope |= child.UsedBlobNames()
            elif isinstance(child, NetBuilder) and child._use_control_ops:
                self._lexical_scope |= child._lexical_scope

    def _reset_children(self) -> None:
        self._current_net = None
        self._children = []
        self._lexical_scope = set(self._init_lexical_scope)

    def add(self, child: Any) -> Any:
        self._assert_mutable()
        if self._use_control_ops and not (isinstance(child, core.Net) or
                                          (isinstance(child, NetBuilder) and child._use_control_ops)):
            raise TypeError("a NetBuilder with control ops takes nets or control-op builders only")
        self._current_net = None
        self._children.append(child)
        if isinstance(child, core.Net):
            self._current_net = child
        self._update_lexical_scope()
        return child

    def current_net(self, name: str | None = None) -> core.Net:
        self._assert_mutable()
        if self._current_net is None or name is not None:
            self.add(core.Net(name or "net"))
        return self._current_net

    def freeze(self) -> None:
        for child in self._children:
            if hasattr(child, "freeze"):
                child.freeze()
        self._current_net = None
        self._frozen = True

    def get(self) -> list[Any]:
        """The builder's children (nets and nested builders), frozen."""
        self.freeze()
        return self._children

    def __exit__(self, etype: Any, *args: Any) -> None:
        super().__exit__(etype, *args)
        if self._use_control_ops and self._children:
            children = self._children
            self._reset_children()
            merged = NetBuilder.merge_nets(children, self._lexical_scope)
            self._children = [merged]
        self.freeze()
        if etype is not None:
            return
        if self._stop_blob_required and self._stop_blob is None:
            raise AssertionError(f"This NetBuilder ({self.name}) requires a stop condition to be set with "
                                 f"`stop` or `stop_if`")

    @staticmethod
    def merge_nets(nets_or_builders: list[Any], outer_blob_names: set[str]) -> core.Net | None:
        """Append the nets (and control-op builders' nets) into one; keep as external outputs only the
        names visible outside (a blob local to a block must not leak out of it)."""
        net = None
        for n in nets_or_builders:
            if isinstance(n, NetBuilder):
                if not n._use_control_ops:
                    raise TypeError("only control-op NetBuilders can be merged into one net")
                nets = n.get()
                if len(nets) != 1 or not isinstance(nets[0], core.Net):
                    raise AssertionError("a control-op NetBuilder must build exactly one net")
                cur = nets[0]
            else:
                cur = n
            net = cur if net is None else net.AppendNet(cur)
        if net is not None:
            kept = [o for o in net.Proto().external_output if o in outer_blob_names]
            net.Proto().external_output[:] = kept
        return net

    def __str__(self) -> str:
        return self.name or "Un-named NetBuilder"


class Operations:
    """``ops``: operations added to the active NetBuilder (``ops.Relu(...)``, ``ops.loop()``, ...)."""

    def net(self, net: Any = None, name: str | None = None) -> Any:
        """The current net (made on demand), a new current net called ``name``, or add ``net``."""
        if name is not None and net is not None:
            raise ValueError("Cannot provide both `net` and `name`.")
        if net is not None:
            NetBuilder.current().add(net)
            return net
        return NetBuilder.current().current_net(name=name)

    def __getattr__(self, op_type: str) -> Any:
        if op_type.startswith("__"):
            raise AttributeError(op_type)
        # hasattr(ops, "X") must work with no active builder.
        if NetBuilder.current(required=False) is None:
            raise AttributeError("No active NetBuilder.")
        return getattr(self.net(), op_type)

    def stop(self) -> None:
        """Stop the current execution step here."""
        return self.stop_if(ops.Const(True))

    def stop_if(self, blob: Any) -> None:
        """Stop the current execution step when the scalar bool ``blob`` is true (checked after the
        net that computes it)."""
        return NetBuilder.current().stop_if(blob)

    def loop(self, iters: Any = None, name: str | None = None) -> "_Loop":
        """A block run repeatedly: ``iters`` times (an int or a blob), or until ``stop``/``stop_if``."""
        return NetBuilder.current().add(_Loop(iters, name=name))

    def stop_guard(self, has_stopped_blob: Any = None, name: str | None = None) -> "_StopGuard":
        """A block run once; ``guard.has_stopped()`` tells afterwards whether it was stopped early."""
        return NetBuilder.current().add(_StopGuard(has_stopped_blob=has_stopped_blob, name=name))

    def If(self, cond: Any, name: str | None = None) -> "_RunIf":
        """A block run once if the scalar bool ``cond`` is true (an execution step; see IfNet)."""
        return NetBuilder.current().add(_RunIf(cond, name=name))

    def IfNet(self, cond: Any, name: str | None = None) -> "_RunIfNet":
        """Like If, but as one ``If`` operator (follow with ``ops.Else()`` for an else branch)."""
        return NetBuilder.current().add(_RunIfNet(cond, name=name))

    def Else(self, name: str | None = None) -> "_RunElseNet":
        """The else branch of the IfNet right before it."""
        return _RunElseNet(name=name)

    def WhileNet(self, name: str | None = None) -> "_RunWhileNet":
        """A loop as one ``While`` operator; its first block must be ``ops.Condition()``."""
        return NetBuilder.current().add(_RunWhileNet(name=name))

    def Condition(self, name: str | None = None) -> "_RunWhileCondition":
        """The condition of the enclosing WhileNet: its last op writes the scalar bool condition."""
        if not isinstance(NetBuilder.current(), _RunWhileNet):
            raise AssertionError("Use of Condition outside of WhileNet")
        return _RunWhileCondition(name=name)

    def task_init(self) -> "_SetupBuilder":
        """Ops run once when the task starts (attached to the current net; see netjit.task)."""
        setup = _SetupBuilder(_SetupBuilder.INIT)
        self.net().AddAttribute(TASK_SETUP, setup)
        return setup

    def task_exit(self) -> "_SetupBuilder":
        """Ops run once when the task finishes."""
        setup = _SetupBuilder(_SetupBuilder.EXIT)
        self.net().AddAttribute(TASK_SETUP, setup)
        return setup

    def task_instance_init(self) -> "_SetupBuilder":
        setup = _SetupBuilder(_SetupBuilder.INIT)
        self.net().AddAttribute(TASK_INSTANCE_SETUP, setup)
        return setup

    def task_instance_exit(self) -> "_SetupBuilder":
        setup = _SetupBuilder(_SetupBuilder.EXIT)
        self.net().AddAttribute(TASK_INSTANCE_SETUP, setup)
        return setup

    def local_init(self) -> "_SetupBuilder":
        """Ops run once per node before any task of the TaskGroup starts there."""
        setup = _SetupBuilder(_SetupBuilder.INIT)
        self.net().AddAttribute(LOCAL_SETUP, setup)
        return setup

    def local_exit(self, name: str | None = None) -> "_SetupBuilder":
        """Ops run once per node after every task of the TaskGroup finished there."""
        setup = _SetupBuilder(_SetupBuilder.EXIT, name)
        self.net().AddAttribute(LOCAL_SETUP, setup)
        return setup

    def task_reporter(self, interval_ms: int = 1000, name: str | None = None) -> "_ReporterBuilder":
        """Ops run every ``interval_ms`` while the task runs, and once after it finishes."""
        return _ReporterBuilder(interval_ms, net=self.net(), name=name)

    def local_reporter(self, interval_ms: int = 1000, name: str | None = None) -> "_ReporterBuilder":
        """Like task_reporter, for as long as any task of the current TaskGroup runs."""
        return _ReporterBuilder(interval_ms, name=name)


ops = Operations()


class _ReporterBuilder(NetBuilder):
    def __init__(self, interval_ms: int, net: Any = None, name: str | None = None):
        NetBuilder.__init__(self, name)
        self._net = net
        self.interval_ms = interval_ms

    def __exit__(self, etype: Any, *args: Any) -> None:
        if etype is None:
            step = core.to_execution_step(self)
            step.RunEveryMillis(self.interval_ms)
            if self._net is not None:
                self._net.AddAttribute(REPORT_STEP, step)
            else:
                from netjit.task import TaskGroup
                TaskGroup.current().report_step(step, interval_ms=self.interval_ms)
        NetBuilder.__exit__(self, etype, *args)


class _SetupBuilder(NetBuilder):
    INIT = "init"
    EXIT = "exit"

    def __init__(self, type: str, name: str | None = None):  # noqa: A002 - Caffe2's argument name
        NetBuilder.__init__(self, name)
        self.type = type

    def setup(self, net: Any) -> Any:
        return core.to_execution_step(self) if self.type == _SetupBuilder.INIT else None

    def exit(self, net: Any) -> Any:
        return core.to_execution_step(self) if self.type == _SetupBuilder.EXIT else None


class _RunOnce(NetBuilder):
    def __exit__(self, etype: Any, *args: Any) -> None:
        if etype is None and self._stop_blob is not None:
            ops.stop()
        NetBuilder.__exit__(self, etype, *args)


class _StopGuard(_RunOnce):
    def __init__(self, has_stopped_blob: Any = None, name: str | None = None):
        _RunOnce.__init__(self, name)
        self._stopped = has_stopped_blob
        self._ran = False

    def __enter__(self) -> Any:
        r = _RunOnce.__enter__(self)
        self._stopped = ops.Const(True, blob_out=self._stopped)
        return r

    def __exit__(self, etype: Any, *args: Any) -> None:
        if etype is None:
            self._ran = True
            ops.Const(False, blob_out=self._stopped)
        _RunOnce.__exit__(self, etype, *args)

    def has_stopped(self) -> Any:
        """A blob that is True after this block ran iff it was stopped early."""
        if not self._ran:
            raise AssertionError("Context not used yet.")
        return self._stopped


class _Loop(NetBuilder):
    def __init__(self, iters: Any = None, name: str | None = None):
        NetBuilder.__init__(self, name, _stop_blob_required=True)
        self._iter = None
        if iters is not None:
            self._inc = ops.Const(1)
            self._iter = ops.Const(0)
            self._num_iters = iters if isinstance(iters, core.BlobReference) else ops.Const(iters)
        else:
            self._num_iters = None

    def iter(self) -> Any:
        """The blob counting iterations (0, 1, ...) of a loop with ``iters``."""
        if self._num_iters is None:
            raise AssertionError("This loop does not have a number of iterations.")
        return self._iter

    def __enter__(self) -> Any:
        builder = NetBuilder.__enter__(self)
        if self._num_iters is not None:
            ops.stop_if(ops.GE([self._iter, self._num_iters]))
        return builder

    def __exit__(self, etype: Any, *args: Any) -> None:
        if etype is None and self._num_iters is not None:
            self.current_net().Add([self._iter, self._inc], [self._iter])
        NetBuilder.__exit__(self, etype, *args)


class _RunIf(_RunOnce):
    def __init__(self, cond_blob: Any = None, name: str | None = None, _already_ran: Any = None):
        _RunOnce.__init__(self, name)
        if cond_blob is None and _already_ran is None:
            raise ValueError("If needs a condition blob")
        self._is_else = cond_blob is None
        if _already_ran is None:
            self._else_blob = ops.Not(cond_blob)
            self._already_ran = ops.Const(False)
        else:
            self._already_ran = _already_ran
            self._else_blob = _already_ran if cond_blob is None else ops.Or([_already_ran, ops.Not(cond_blob)])

    def __enter__(self) -> Any:
        r = _RunOnce.__enter__(self)
        ops.stop_if(self._else_blob)
        ops.Const(True, blob_out=self._already_ran)
        return r

    def Elif(self, cond: Any, name: str | None = None) -> "_RunIf":
        if self._is_else:
            raise AssertionError("Elif not allowed for an Else.")
        return NetBuilder.current().add(_RunIf(cond, name=name or self.name, _already_ran=self._already_ran))

    def Else(self, name: str | None = None) -> "_RunIf":
        if self._is_else:
            raise AssertionError("Else not allowed for an Else.")
        return NetBuilder.current().add(_RunIf(name=name or self.name, _already_ran=self._already_ran))


class _RunIfNet(NetBuilder):
    """One net holding an ``If`` op (with an else branch when ``ops.Else()`` follows)."""

    def __init__(self, cond_blob: Any, name: str | None = None):
        NetBuilder.__init__(self, name=name, _use_control_ops=True)
        if not cond_blob:
            raise ValueError("Conditional blob is not specified for an If net")
        self._cond_blob = cond_blob
        self._then_net: Any = None
        self._else_net: Any = None

    def __exit__(self, etype: Any, *args: Any) -> None:
        if etype is None:
            then_nets = self._children
            self._reset_children()
            self._then_net = NetBuilder.merge_nets(then_nets, self._lexical_scope) or core.Net("empty_then_net")
            if_net = core.Net(self.name + "/if_net")
            add_if_op(if_net, self._cond_blob, self._lexical_scope, self._then_net, self._else_net)
            self._current_net = if_net
            self._children = [if_net]
        NetBuilder.__exit__(self, etype, *args)


class _RunElseNet(NetBuilder):
    """The else branch of the _RunIfNet just before it: rebuilds that If op with both branches."""

    def __init__(self, name: str | None = None):
        NetBuilder.__init__(self, name=name, _use_control_ops=True)
        parent = NetBuilder.current(required=False)
        if not (parent and parent._children and isinstance(parent._children[-1], _RunIfNet)):
            raise AssertionError("Invalid use of Else builder: it must follow an IfNet block")
        self._if_builder = parent._children[-1]

    def __exit__(self, etype: Any, *args: Any) -> None:
        if etype is None:
            else_nets = self._children
            self._reset_children()
            ifb = self._if_builder
            ifb._else_net = NetBuilder.merge_nets(else_nets, self._lexical_scope)
            if ifb._else_net is not None:
                if_else_net = core.Net(self.name + "/if_else_net")
                add_if_op(if_else_net, ifb._cond_blob, self._lexical_scope, ifb._then_net, ifb._else_net)
                ifb._current_net = if_else_net
                ifb._children = [if_else_net]
        NetBuilder.__exit__(self, etype, *args)


class _RunWhileNet(NetBuilder):
    """One net holding a ``While`` op; the loop's condition comes from its ops.Condition() block."""

    def __init__(self, name: str | None = None):
        NetBuilder.__init__(self, name=name, _use_control_ops=True)
        self._cond_builder: Any = None

    def __exit__(self, etype: Any, *args: Any) -> None:
        if etype is None:
            if self._cond_builder is None:
                raise AssertionError("Condition builder must be specified in While op")
            cond_blob = self._cond_builder._cond_blob
            cond_net = self._cond_builder._cond_net
            body = self._children
            self._reset_children()
            body_net = NetBuilder.merge_nets(body, self._lexical_scope) or core.Net("empty_loop_body_net")
            while_net = core.Net(self.name + "/while_net")
            add_while_op(while_net, cond_blob, self._lexical_scope, body_net, cond_net)
            self._current_net = while_net
            self._children = [while_net]
        NetBuilder.__exit__(self, etype, *args)


class _RunWhileCondition(NetBuilder):
    """The WhileNet's condition: run before every iteration; its last op's single output is the
    condition, and nothing else it creates is visible outside."""

    def __init__(self, name: str | None = None):
        NetBuilder.__init__(self, name=name, _use_control_ops=True)
        parent = NetBuilder.current(required=False)
        if not isinstance(parent, _RunWhileNet):
            raise AssertionError("Invalid use of loop condition builder")
        if parent._cond_builder is not None:
            raise AssertionError("Multiple loop condition builders specified")
        if parent._children:
            raise AssertionError("Condition definition must be specified before the loop's body")
        parent._cond_builder = self
        self._cond_blob: Any = None
        self._cond_net: Any = None

    def __exit__(self, etype: Any, *args: Any) -> None:
        if etype is None:
            body = self._children
            self._reset_children()
            self._cond_net = NetBuilder.merge_nets(body, self._lexical_scope)
            if self._cond_net is None or not len(self._cond_net.Proto().op):
                raise AssertionError("Invalid loop condition specified: the Condition block has no ops")
            last = self._cond_net.Proto().op[-1]
            if len(last.output) != 1:
                raise AssertionError("Invalid condition net: its last op must have exactly one output")
            self._cond_blob = core.BlobReference(last.output[0])
            self._current_net = self._cond_net
            self._children = [self._cond_net]
        NetBuilder.__exit__(self, etype, *args)
