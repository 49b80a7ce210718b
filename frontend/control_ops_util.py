"""``caffe2.python.control_ops_util``: add If and While ops whose branches run as Do blocks.

Which blobs of a branch are *outer* (shared with the enclosing net) and which are *local* (they
live in the branch's own workspace and vanish with it) follows the lexical scope: names visible
to the enclosing code are outer; a name a branch reads must be one of them; everything else the
branch writes is local. Each branch becomes a one-op net ``Do(outer inputs..., ws) -> (outer
outputs..., ws)`` whose workspace stack blob ``ws`` a ``CreateScope`` op sets up first.

>>> from netjit import core
>>> outer, then = core.Net("cou_outer"), core.Net("cou_then")
>>> _ = then.Copy("one", "y")
>>> add_if_op(outer, "cond", {"cond", "one", "y"}, then)
>>> [op.type for op in outer.Proto().op]
['CreateScope', 'If']
"""
from __future__ import annotations

from typing import Any, Iterable

from netjit import core


def get_undefined_blobs(ops: Iterable[Any]) -> set[str]:
    """Blob names the ops read before any of them writes it (what they need from outside)."""
    written: set[str] = set()
    undefined: set[str] = set()
    for op in ops:
        undefined.update(b for b in op.input if b not in written)
        written.update(op.output)
    return undefined


def get_external_blob_names(net: Any, lexical_scope: Iterable[str]) -> tuple[set[str], set[str]]:
    """(outer blobs ``net`` reads, outer blobs it writes) given the names visible around it."""
    scope = {str(b) for b in lexical_scope}
    proto = net.Proto()
    input_names = get_undefined_blobs(proto.op)
    for name in sorted(input_names):
        if name not in scope:
            raise ValueError(f"net {proto.name!r} reads blob {name!r}, which is undefined in its scope (write it "
                             f"first, or declare it visible, e.g. NetBuilder(initial_scope=[...]))")
    output_names = {o for op in proto.op for o in op.output if o in scope}
    return input_names, output_names


def _do_net(name: str, subnet: Any, inputs: list[str], outputs: list[str], ws_blob: Any,
            copy_external_blobs: bool = False) -> Any:
    """A net holding one Do op that runs ``subnet`` with ``inputs``/``outputs`` bound by name."""
    ordered = inputs + outputs
    outer_names = list(dict.fromkeys(ordered))
    do_net = core.Net(name)
    kwargs: dict[str, Any] = dict(net=subnet.Proto(), inner_blobs=outer_names,
                                  outer_blobs_idx=[ordered.index(b) for b in outer_names])
    if copy_external_blobs:
        kwargs["copy_external_blobs"] = True
    refs_in = [core.BlobReference(b) for b in inputs] + [ws_blob]
    refs_out = [core.BlobReference(b) for b in outputs] + [ws_blob]
    do_net.Do(refs_in, refs_out, **kwargs)
    do_net.AddExternalOutput(*refs_out)
    return do_net


def add_if_op(if_net: Any, cond_blob: Any, lexical_scope: Iterable[str], then_net: Any,
              else_net: Any = None) -> None:
    """Append ``CreateScope`` op(s) and an ``If`` on ``cond_blob`` to ``if_net``, with ``then_net``
    (and ``else_net``) wrapped as Do blocks over the outer blobs they use."""
    scope = {str(b) for b in lexical_scope}
    then_in, then_out = get_external_blob_names(then_net, scope)
    else_in: set[str] = set()
    else_out: set[str] = set()
    if else_net is not None:
        else_in, else_out = get_external_blob_names(else_net, scope)
    if_inputs: list[Any] = [cond_blob] + [core.BlobReference(b) for b in sorted(then_in | else_in)]
    if_outputs: list[Any] = [core.BlobReference(b) for b in sorted(then_out | else_out)]

    then_ws = if_net.NextScopedBlob(if_net.Name() + "/workspace_if_then")
    if_inputs.append(then_ws)
    if_outputs.append(then_ws)
    args = {"then_net": _do_net("do_then_net", then_net, sorted(then_in), sorted(then_out), then_ws).Proto()}
    else_ws = None
    if else_net is not None:
        else_ws = if_net.NextScopedBlob(if_net.Name() + "/workspace_if_else")
        if_inputs.append(else_ws)
        if_outputs.append(else_ws)
        args["else_net"] = _do_net("do_else_net", else_net, sorted(else_in), sorted(else_out), else_ws).Proto()
    if_net.CreateScope([], [then_ws])
    if else_ws is not None:
        if_net.CreateScope([], [else_ws])
    if_net.If(if_inputs, if_outputs, **args)
    if_net.AddExternalOutput(*if_outputs)


def add_while_op(while_net: Any, cond_blob: Any, lexical_scope: Iterable[str], loop_body_net: Any,
                 condition_body_net: Any = None) -> None:
    """Append ``CreateScope`` op(s) and a ``While`` on ``cond_blob`` to ``while_net``. The body runs as a
    Do block that keeps a copy of its outer tensors per iteration (what the While gradient reads);
    ``condition_body_net``, when given, runs before every iteration and must write ``cond_blob``."""
    scope = {str(b) for b in lexical_scope}
    body_in, body_out = get_external_blob_names(loop_body_net, scope)
    # The body may run zero times: what it would write must then keep its old value, so it is an input.
    body_in = body_in | body_out
    while_inputs: list[Any] = [cond_blob] + [core.BlobReference(b) for b in sorted(body_in)]
    while_outputs: list[Any] = [core.BlobReference(b) for b in sorted(body_out)]
    body_ws = while_net.NextScopedBlob(while_net.Name() + "/workspace_loop_body")
    while_inputs.append(body_ws)
    while_outputs.append(body_ws)
    args = {"loop_net": _do_net("do_loop_body_net", loop_body_net, sorted(body_in), sorted(body_out), body_ws,
                                copy_external_blobs=True).Proto()}
    cond_ws = None
    if condition_body_net is not None:
        cond_in, cond_out = get_external_blob_names(condition_body_net, scope)
        cond_name = str(cond_blob)
        if not any(cond_name in op.output for op in condition_body_net.Proto().op):
            raise ValueError(f"the condition net {condition_body_net.Name()!r} does not write the condition "
                             f"blob {cond_name!r}")
        cond_out = cond_out | {cond_name}
        cond_ws = while_net.NextScopedBlob(while_net.Name() + "/workspace_loop_cond")
        args["cond_net"] = _do_net("do_loop_condition_net", condition_body_net, sorted(cond_in),
                                   sorted(cond_out), cond_ws).Proto()
        while_inputs += [core.BlobReference(b) for b in sorted(cond_in) if b not in body_in]
        while_inputs.append(cond_ws)
        while_outputs += [core.BlobReference(b) for b in sorted(cond_out) if b not in body_out]
        while_outputs.append(cond_ws)
        if cond_name not in scope:
            while_net.ConstantFill([], cond_blob, dtype=core.DataType.BOOL, value=False)
    while_net.CreateScope([], [body_ws])
    if cond_ws is not None:
        while_net.CreateScope([], [cond_ws])
    while_net.While(while_inputs, while_outputs, **args)
    while_net.AddExternalOutput(*while_outputs)
