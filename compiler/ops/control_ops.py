"""Control-flow operators: If, While, Do and the scope ops CreateScope/HasScope.

They are HOST ops: each runs sub-nets (NetDef arguments) against the workspace. A sub-net runs
through the executor that ran the op itself: inside a compiled net (``workspace.RunNet``,
``RunPlan``) its sub-nets are compiled too, each planned and cached like any net; under the
reference executor (``NETJIT_EXECUTOR=reference``, ``RunOperatorOnce``) they run their references.

- ``If(cond, ...)``: runs ``then_net`` when the scalar bool ``cond`` holds, else ``else_net`` (if
  given), in the op's own workspace.
- ``While(cond, ...)``: runs ``cond_net`` (if given) then, while ``cond`` holds, ``loop_net``.
- ``Do(..., ws_blob)``: runs ``net`` in a child workspace that sees only the blobs bound by
  ``inner_blobs``/``outer_blobs_idx``; the child comes from a stack of workspaces kept in
  ``ws_blob`` (made by ``CreateScope``). A forward Do pushes one, a gradient Do (``is_gradient_op``)
  pops the matching forward one, so gradient nets read what the forward pass computed locally.
  With ``copy_external_blobs`` the child keeps copies of its bound tensors as they were after
  its run (what a While's gradient needs, one workspace per iteration).

In a compiled net every op that runs sub-nets is a barrier (compiler/passes/infer.py), with or
without declared outputs: later ops read the workspace afresh, so they see whatever the sub-nets
wrote, declared or not (control_ops_util declares them, as Caffe2's does).

>>> # If([cond, x], [y], then_net=<NetDef: Copy(x) -> y>) copies x into y when cond is True
"""
from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import Any, Iterator

import numpy as np

from netjit.compiler.ops.gradients import no_gradient
from netjit.compiler.ops.registry import HOST, INF, arg, defop
from netjit.runtime.workspace import Workspace


# --------------------------------------------------------------------------------------------
# Child workspaces and the workspace stack
# --------------------------------------------------------------------------------------------
class _ForwardingBlobs(MutableMapping):
    """A child workspace's blob table: forwarded names read and write the outer workspace's blob
    (under its outer name), every other name is local to the child."""

    def __init__(self, owner: "ScopeWorkspace"):
        self.owner = owner
        self.local: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        fwd = self.owner.forwarded.get(name)
        if fwd is not None:
            return self.owner.outer.get(fwd)
        return self.local[name]

    def __setitem__(self, name: str, value: Any) -> None:
        fwd = self.owner.forwarded.get(name)
        if fwd is not None:
            self.owner.outer.feed(fwd, value)
        else:
            self.local[name] = value

    def __delitem__(self, name: str) -> None:
        del self.local[name]

    def __contains__(self, name: object) -> bool:
        fwd = self.owner.forwarded.get(name)  # type: ignore[arg-type]
        if fwd is not None:
            return self.owner.outer.has(fwd)
        return name in self.local

    def __iter__(self) -> Iterator[str]:
        yield from self.local
        for name, fwd in self.owner.forwarded.items():
            if name not in self.local and self.owner.outer.has(fwd):
                yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)


class ScopeWorkspace(Workspace):
    """A Do op's workspace: it sees only the outer blobs forwarded to it (inner name -> outer
    name); anything else its net writes stays local and disappears with it."""

    def __init__(self, name: str, outer: Workspace, bindings: dict[str, str]):
        super().__init__(name, outer.root_folder)
        self.outer = outer
        self.forwarded: dict[str, str] = {}
        self.blobs = _ForwardingBlobs(self)  # type: ignore[assignment]
        self.add_mapping(bindings)

    def add_mapping(self, bindings: dict[str, str], skip_defined: bool = False) -> None:
        for inner, outer_name in bindings.items():
            if not self.outer.has(outer_name):
                raise KeyError(f"blob {outer_name!r} does not exist in workspace {self.outer.name!r}")
            current = self.forwarded.get(inner)
            if current is not None:
                if current != outer_name:
                    raise ValueError(f"blob {inner!r} is already bound to {current!r}, not {outer_name!r}")
                continue
            if inner in self.blobs.local:
                if skip_defined:
                    continue  # a gradient pass keeps the forward pass's local copy
                raise ValueError(f"blob {inner!r} is already defined in workspace {self.name!r}")
            self.forwarded[inner] = outer_name

    def copy_forwarded(self, names: Any) -> None:
        """Replace forwarded tensors by local copies of their current values."""
        for name in names:
            outer_name = self.forwarded.get(name)
            if outer_name is None or not self.outer.has(outer_name):
                continue
            value = self.outer.get(outer_name)
            if isinstance(value, (np.ndarray, bytes)):
                del self.forwarded[name]
                self.blobs.local[name] = value.copy() if isinstance(value, np.ndarray) else value


class WorkspaceStack:
    """What a CreateScope blob holds: the Do op's workspaces, reused across runs (Caffe2's
    detail::WorkspaceStack). ``top`` indexes the innermost live one (-1: none)."""

    def __init__(self) -> None:
        self.workspaces: list[ScopeWorkspace] = []
        self.top = -1

    def describe(self) -> str:
        return f"WorkspaceStack({self.top + 1} live of {len(self.workspaces)})"

    def push_forward(self, parent: Workspace, bindings: dict[str, str]) -> ScopeWorkspace:
        if self.top == len(self.workspaces) - 1:
            self.workspaces.append(ScopeWorkspace(f"{parent.name}/do{len(self.workspaces)}", parent, bindings))
        else:
            ws = self.workspaces[self.top + 1]
            ws.outer = parent
            # Drop local copies a previous run left of blobs that are forwarded again now.
            for inner in bindings:
                ws.blobs.local.pop(inner, None)
            ws.add_mapping(bindings)
        self.top += 1
        return self.workspaces[self.top]

    def pop_gradient(self, parent: Workspace, grad_bindings: dict[str, str]) -> ScopeWorkspace | None:
        if self.top < 0:
            return None
        ws = self.workspaces[self.top]
        ws.add_mapping(grad_bindings, skip_defined=True)
        self.top -= 1
        return ws

    def reuse_last_forward(self, parent: Workspace, bindings: dict[str, str]) -> ScopeWorkspace | None:
        if self.top < 0:
            return None
        ws = self.workspaces[self.top]
        ws.add_mapping(bindings)
        return ws

    def clear(self) -> None:
        self.top = -1

    def empty(self) -> bool:
        return self.top < 0


# --------------------------------------------------------------------------------------------
# Running sub-nets
# --------------------------------------------------------------------------------------------
def _executor_of(ctx: Any) -> str:
    # Compiled runners give their host steps a LazyContext; the reference executor a plain one.
    # (No import: when the compiled executor was never loaded, this cannot be one of its contexts.)
    execution = sys.modules.get("netjit.compiler.execution")
    return "compiled" if execution is not None and isinstance(ctx, execution.LazyContext) else "reference"


def _runner(ctx: Any, ws: Workspace, net: Any, key: str) -> Any:
    """The runner of sub-net ``net`` on ``ws``, made once per op instance and workspace."""
    from netjit.compiler.runner import make_runner
    cache = ctx.state.setdefault("runners", {})
    k = (key, id(ws))
    entry = cache.get(k)
    if entry is None or entry[0] is not ws:
        entry = cache[k] = (ws, make_runner(net, ws, executor=_executor_of(ctx)))
    return entry[1]


def _condition(ctx: Any, value: Any, what: str) -> bool:
    arr = value if isinstance(value, np.ndarray) else None
    if arr is None or arr.size != 1:
        shape = "a non-tensor" if arr is None else f"a tensor of shape {arr.shape}"
        raise ctx.error(f"the condition of {what} must be a single-value tensor, got {shape}",
                        blob=ctx.input_name(0))
    if arr.dtype != np.bool_:
        raise ctx.error(f"the condition of {what} must be a bool tensor, got dtype {arr.dtype} (compare "
                        f"with GT/LT/EQ..., or Cast to bool)", blob=ctx.input_name(0))
    return bool(arr.reshape(-1)[0])


def _outputs(ctx: Any) -> list[Any]:
    """The op's outputs as its sub-nets left them (None where a blob was never written)."""
    ws = ctx.ws
    return [ws.get(name) if ws.has(name) else None for name in ctx.op.output]


def _net_arg(ctx: Any, name: str) -> Any:
    net = ctx.args.get(name)
    return net if net is not None and ctx.args.has(name) else None


@defop("If", inputs=(1, INF), outputs=(0, INF), inplace="all", category=HOST,
       args=[arg("then_net", "net", required=True), arg("else_net", "net")])
def if_op(ctx, cond, *rest):
    """Run ``then_net`` when the scalar bool ``cond`` is true, else ``else_net`` (when given), in this
    op's workspace. Outputs: the blobs the branches write, as they left them."""
    if _condition(ctx, cond, "If"):
        _runner(ctx, ctx.ws, ctx.args.then_net, "then").run()
    else:
        else_net = _net_arg(ctx, "else_net")
        if else_net is not None:
            _runner(ctx, ctx.ws, else_net, "else").run()
    return _outputs(ctx)


@defop("While", inputs=(1, INF), outputs=(0, INF), inplace="all", category=HOST,
       args=[arg("loop_net", "net", required=True), arg("cond_net", "net")])
def while_op(ctx, cond, *rest):
    """Run ``cond_net`` (when given) and then, while the scalar bool condition blob holds,
    ``loop_net``; repeat. The condition is re-read from the workspace before each iteration."""
    ws = ctx.ws
    cond_net = _net_arg(ctx, "cond_net")
    loop = _runner(ctx, ws, ctx.args.loop_net, "loop")
    check = _runner(ctx, ws, cond_net, "cond") if cond_net is not None else None
    name = ctx.input_name(0)
    while True:
        if check is not None:
            check.run()
        if not _condition(ctx, ws.get(name), "While"):
            break
        loop.run()
    return _outputs(ctx)


def _do_bindings(ctx: Any) -> dict[str, str]:
    """Inner name -> outer name, from ``inner_blobs`` and ``outer_blobs_idx`` over the op's inputs then
    outputs (each without the trailing workspace blob)."""
    op = ctx.op
    if op.input[-1] != op.output[-1]:
        raise ctx.error(f"the last input ({op.input[-1]!r}) and last output ({op.output[-1]!r}) must be the "
                        f"same workspace blob (made by CreateScope)", blob=op.output[-1])
    outer = list(op.input[:-1]) + list(op.output[:-1])
    inner = ctx.args.inner_blobs
    idx = ctx.args.outer_blobs_idx
    if len(inner) != len(idx):
        raise ctx.error(f"inner_blobs has {len(inner)} names but outer_blobs_idx {len(idx)} indices")
    bindings: dict[str, str] = {}
    for name, i in zip(inner, idx):
        if not 0 <= i < len(outer):
            raise ctx.error(f"outer_blobs_idx {i} (inner blob {name!r}) is out of range [0, {len(outer) - 1}]")
        if name in bindings:
            raise ctx.error(f"inner blob {name!r} is bound twice")
        bindings[name] = outer[i]
    if set(bindings.values()) != set(outer):
        missing = sorted(set(outer) - set(bindings.values()))
        raise ctx.error(f"every input and output must be bound to an inner blob; unbound: {missing}")
    return bindings


@defop("Do", inputs=(1, INF), outputs=(1, INF), inplace="all", category=HOST,
       args=[arg("net", "net", required=True), arg("inner_blobs", "strs"), arg("outer_blobs_idx", "ints"),
             arg("saved_fwd_blobs", "strs"), arg("reuse_workspace", "bool", False),
             arg("copy_external_blobs", "bool", False)])
def do_op(ctx, *inputs):
    """Run ``net`` in a child workspace from the stack in the last input/output blob; the child sees
    only the bound blobs. A gradient Do pops the forward Do's workspace instead of pushing one."""
    args = ctx.args
    cached = ctx.state.get("do")
    if cached is None:
        cached = ctx.state["do"] = (_do_bindings(ctx), _executor_of(ctx))
    bindings, executor = cached
    stack = inputs[-1]
    if not isinstance(stack, WorkspaceStack):
        stack = WorkspaceStack()
        ctx.ws.feed(ctx.op.output[-1], stack)
    if ctx.op.is_gradient_op:
        if args.reuse_workspace:
            raise ctx.error("a gradient Do needs stacked workspaces; it cannot set reuse_workspace")
        child = stack.pop_gradient(ctx.ws, bindings)
        if child is None:
            raise ctx.error("the gradient Do found no forward workspace to pop: run the forward pass first",
                            blob=ctx.op.output[-1])
    elif args.reuse_workspace and not stack.empty():
        child = stack.reuse_last_forward(ctx.ws, bindings)
    else:
        child = stack.push_forward(ctx.ws, bindings)
    net = args.net
    runner = child.nets.get(net.name)
    if runner is None or getattr(runner, "executor", None) != executor:
        from netjit.compiler.runner import make_runner
        runner = child.nets[net.name] = make_runner(net, child, executor=executor)
    runner.run()
    if args.copy_external_blobs and not ctx.op.is_gradient_op:
        child.copy_forwarded(bindings)
    return _outputs(ctx)[:-1] + [stack]


@defop("CreateScope", inputs=0, outputs=1, category=HOST, gradient=no_gradient)
def create_scope(ctx):
    """A fresh (or emptied) workspace stack for Do ops; earlier workspaces are kept for reuse."""
    name = ctx.op.output[0]
    current = ctx.ws.get(name) if ctx.ws.has(name) else None
    stack = current if isinstance(current, WorkspaceStack) else WorkspaceStack()
    stack.clear()
    return stack


@defop("HasScope", inputs=1, outputs=1, category=HOST, gradient=no_gradient)
def has_scope(ctx, stack):
    """True while the workspace stack holds a live workspace (a While gradient's condition)."""
    if not isinstance(stack, WorkspaceStack):
        raise ctx.error("input must be a workspace blob made by CreateScope", blob=ctx.input_name(0))
    return np.array(not stack.empty())
