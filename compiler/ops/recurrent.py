"""``RecurrentNetwork`` and ``RecurrentNetworkGradient``: a step net run once per timestep over
time-sliced blobs (Caffe2's RNN meta-operator), and ``RecurrentNetworkBlobFetcher``.

The arguments are Caffe2's (``caffe2.python.recurrent.recurrent_net`` writes them):

- ``step_net`` / ``backward_step_net``: the per-timestep nets (NetDef, or its text format);
- ``recurrent_states`` with ``initial_recurrent_state_ids``: one (T + 1) x N x D states blob per
  recurrent input, its first step filled from the op input at that index;
- ``link_internal/link_external/link_offset/link_window``: step blob <- external[t + offset];
  ``backward_link_*`` the same for gradients;
- ``alias_src/alias_dst/alias_offset``: outputs as views of a states blob from ``offset`` (1: all
  steps after the initial one; -1: the last step);
- ``param`` (input indices with a gradient), ``param_grads`` (their gradient names inside the
  backward step net), ``outputs_with_grads`` (outputs that receive a gradient), ``timestep``.

Inputs are ``[sequence, initial states..., references...]``; outputs the aliases, then the step
workspaces. Both ops are HOST ops: they run in Python against the workspace, and the step nets they
run are compiled by netjit like any other net (see _rnn_steps.py).

>>> from netjit.compiler.ops.registry import lookup
>>> lookup("RecurrentNetwork").category
'host'
"""
from __future__ import annotations

from typing import Any

import numpy as np

from netjit.compiler.ops._rnn_steps import (StepWorkspaces, bind_links, initial_states, net_argument, net_key,
                                            prepare_step_net, read_links, store_links, written_blobs)
from netjit.compiler.ops.gradients import GradientContext
from netjit.compiler.ops.registry import HOST, INF, arg, defop
from netjit.runtime.errors import OpError

RNN_ARGS = [
    arg("step_net", "any"), arg("backward_step_net", "any"), arg("timestep", "str", "timestep"),
    arg("recurrent_states", "strs", []), arg("initial_recurrent_state_ids", "ints", []),
    arg("link_internal", "strs", []), arg("link_external", "strs", []), arg("link_offset", "ints", []),
    arg("link_window", "ints", []), arg("backward_link_internal", "strs", []),
    arg("backward_link_external", "strs", []), arg("backward_link_offset", "ints", []),
    arg("alias_src", "strs", []), arg("alias_dst", "strs", []), arg("alias_offset", "ints", []),
    arg("param", "ints", []), arg("param_grads", "strs", []), arg("outputs_with_grads", "ints", [0]),
    arg("recompute_blobs_on_backward", "strs", []), arg("enable_rnn_executor", "bool", False),
]


def _executor() -> str:
    from netjit.compiler.runner import default_executor  # late: keeps the registry free of the compiler
    return default_executor()


def _step_failed(ctx, err: Exception, t: int, which: str) -> OpError:
    return ctx.error(f"{which} step net failed at timestep {t}: {err}")


def _scratch(ctx) -> StepWorkspaces:
    """The step workspaces of this op's last output, kept across runs as Caffe2 keeps its blob."""
    name = ctx.output_name(ctx.num_outputs - 1)
    held = ctx.ws.blobs.get(name) if ctx.ws is not None else None
    return held if isinstance(held, StepWorkspaces) else StepWorkspaces()


def _forward_setup(ctx) -> tuple[Any, str, list, list, bool]:
    """The prepared step net, its key, the forward links, the aliases and whether a backward step
    net exists, decoded once per op instance."""
    cached = ctx.state.get("forward")
    if cached is None:
        net = net_argument(ctx.args, "step_net")
        if net is None:
            raise ctx.error("argument 'step_net' is required (a NetDef or its text format)")
        links = read_links(ctx.args, "link_internal", "link_external", "link_offset", "link_window")
        aliases = list(zip(ctx.args.alias_src, ctx.args.alias_dst, ctx.args.alias_offset))
        if not len(ctx.args.alias_src) == len(ctx.args.alias_dst) == len(ctx.args.alias_offset):
            raise ctx.error("alias_src, alias_dst and alias_offset must have one entry per alias")
        prepared = prepare_step_net(net, ctx.args.timestep, links)
        # Without a backward pass two workspaces in turn suffice (Caffe2 does the same).
        has_backward = net_argument(ctx.args, "backward_step_net") is not None
        cached = ctx.state["forward"] = (prepared, "forward:" + net_key(prepared), links, aliases, has_backward)
    return cached


def _alias_view(states: np.ndarray, offset: int) -> np.ndarray:
    start = offset if offset >= 0 else states.shape[0] + offset
    return states[start:]


def _externals(ctx, known: dict[str, np.ndarray], links: list) -> dict[str, np.ndarray]:
    out = dict(known)
    for link in links:
        if link.external not in out:
            value = ctx.ws.get(link.external)
            if not isinstance(value, np.ndarray):
                raise ctx.error(f"link external {link.external!r} is not a tensor", blob=link.external)
            out[link.external] = value
    return out


def _recurrent_gradient(g: GradientContext) -> tuple[list, list]:
    """Caffe2's maker: inputs [GO(outputs_with_grads)..., all inputs, all outputs]; outputs the
    gradients of the sequence, of each ``param`` and of each initial recurrent state."""
    params, rec_ids = list(g.args.param), list(g.args.initial_recurrent_state_ids)
    with_grads = list(g.args.outputs_with_grads)
    if not with_grads:
        raise ValueError("RecurrentNetwork: outputs_with_grads is empty; no output carries a gradient")
    ins = [g.GO(k) for k in with_grads] + list(g.op.input) + list(g.op.output)
    outs = [g.GI(0)] + [g.GI(p) for p in params] + [g.GI(r) for r in rec_ids]
    g_input: list[str | None] = [None] * g.n_inputs
    for i in [0] + params + rec_ids:
        g_input[i] = g.GI(i)
    return [g.make("RecurrentNetworkGradient", ins, outs)], g_input


@defop("RecurrentNetwork", inputs=(1, INF), outputs=(2, INF), args=RNN_ARGS, category=HOST,
       gradient=_recurrent_gradient)
def recurrent_network(ctx, *inputs):
    """Run ``step_net`` for t = 0..T-1 (T = inputs[0].shape[0]) in per-step workspaces; outputs are
    views of the recurrent states blobs as ``alias_*`` say, then the step workspaces."""
    step_net, key, links, aliases, has_backward = _forward_setup(ctx)
    x = np.asarray(inputs[0])
    if x.ndim < 2:
        raise ctx.error(f"the input sequence must be [T, N, ...], got {list(x.shape)}", blob=ctx.input_name(0))
    seq_len, batch = x.shape[0], x.shape[1]
    states_names, init_ids = list(ctx.args.recurrent_states), list(ctx.args.initial_recurrent_state_ids)
    if len(states_names) != len(init_ids):
        raise ctx.error("recurrent_states and initial_recurrent_state_ids must have one entry per state")
    known: dict[str, np.ndarray] = {ctx.input_name(0): x}
    for state, idx in zip(states_names, init_ids):
        try:
            known[state] = ctx.ws.blobs[state] = initial_states(inputs[idx], seq_len, batch, ctx.input_name(idx))
        except (ValueError, IndexError) as err:
            raise ctx.error(str(err), blob=state) from None
    externals = _externals(ctx, known, links)
    scratch = _scratch(ctx)
    executor = _executor()
    label = ctx.output_name(ctx.num_outputs - 1)
    for t in range(seq_len):
        ws = scratch.workspace(t if has_backward else t % 2, ctx.ws, label)
        ws.blobs[ctx.args.timestep] = np.array([t], np.int32)
        bind_links(ws, links, externals, t)
        try:
            scratch.run(t if has_backward else t % 2, ws, step_net, key, executor)
            store_links(ws, links, externals, t)
        except Exception as err:  # noqa: BLE001 - located at this op, with the step and the inner error
            raise _step_failed(ctx, err, t, "forward") from err
    outs: list[Any] = []
    for name in list(ctx.op.output)[:-1]:
        match = [(src, off) for src, dst, off in aliases if dst == name]
        if not match:
            outs.append(None)
            continue
        src, off = match[0]
        states = known.get(src) if src in known else ctx.ws.get(src)
        outs.append(_alias_view(states, off))
    return outs + [scratch]


def _backward_setup(ctx) -> tuple[Any, str, list, set]:
    cached = ctx.state.get("backward")
    if cached is None:
        net = net_argument(ctx.args, "backward_step_net")
        if net is None:
            raise ctx.error("argument 'backward_step_net' is required: the forward op was built forward-only")
        links = read_links(ctx.args, "link_internal", "link_external", "link_offset", "link_window") + \
            read_links(ctx.args, "backward_link_internal", "backward_link_external", "backward_link_offset", None)
        prepared = prepare_step_net(net, ctx.args.timestep, links)
        cached = ctx.state["backward"] = (prepared, "backward:" + net_key(prepared), links, written_blobs(prepared))
    return cached


@defop("RecurrentNetworkGradient", inputs=(3, INF), outputs=(1, INF), args=RNN_ARGS, category=HOST)
def recurrent_network_gradient(ctx, *inputs):
    """Run ``backward_step_net`` for t = T-1..0 in the forward pass's step workspaces, summing
    parameter gradients over the steps and carrying state gradients from step t+1 to step t."""
    step_net, key, links, written = _backward_setup(ctx)
    args = ctx.args
    n_go = len(args.outputs_with_grads)
    scratch = inputs[-1]
    if not isinstance(scratch, StepWorkspaces):
        raise ctx.error("the last input must be the forward RecurrentNetwork's step workspaces",
                        blob=ctx.input_name(len(inputs) - 1))
    x = np.asarray(inputs[n_go])
    seq_len, batch = x.shape[0], x.shape[1]
    if len(scratch.workspaces) < seq_len:
        raise ctx.error(f"the forward pass kept {len(scratch.workspaces)} step workspaces for {seq_len} steps "
                        f"(was it run, with a backward_step_net?)", blob=ctx.input_name(len(inputs) - 1))
    x_name = ctx.input_name(n_go)
    x_grad = np.zeros_like(x)
    known: dict[str, np.ndarray] = {x_name: x, x_name + "_grad": x_grad}
    ctx.ws.blobs[x_name + "_grad"] = x_grad
    # Recurrent state gradients, with the outputs' gradients that feed them.
    alias = list(zip(args.alias_src, args.alias_offset))
    state_grads, per_step = [], []
    for state in args.recurrent_states:
        states = ctx.ws.get(state)
        grad = np.zeros_like(states)
        known[state], known[state + "_grad"] = states, grad
        ctx.ws.blobs[state + "_grad"] = grad
        for k, out_id in enumerate(args.outputs_with_grads):
            if out_id >= len(alias) or alias[out_id][0] != state:
                continue
            if alias[out_id][1] == -1:
                grad[-1] += np.asarray(inputs[k]).reshape(grad[-1].shape)      # the last step's output
            elif alias[out_id][1] == 1:
                per_step.append((grad, np.asarray(inputs[k])))                  # every step's output
            else:
                raise ctx.error(f"an output with a gradient must alias its states at offset 1 or -1, not "
                                f"{alias[out_id][1]}", blob=state)
        state_grads.append(grad)
    externals = _externals(ctx, known, links)
    params = [(ctx.input_name(p + n_go), ctx.output_name(1 + i)) for i, p in enumerate(args.param)]
    inner = list(args.param_grads) or [grad for _, grad in params]
    param_acc = [np.zeros_like(np.asarray(ctx.ws.get(p))) for p, _ in params]
    executor = _executor()
    for t in range(seq_len - 1, -1, -1):
        ws = scratch.workspaces[t]
        ws.blobs[args.timestep] = np.array([t], np.int32)
        for grad, go in per_step:
            grad[t + 1] += go[t]
        bind_links(ws, links, externals, t)
        try:
            scratch.run(t, ws, step_net, key, executor)
            store_links(ws, links, externals, t)
        except Exception as err:  # noqa: BLE001 - located at this op, with the step and the inner error
            raise _step_failed(ctx, err, t, "backward") from err
        for acc, name in zip(param_acc, inner):
            value = ws.blobs.get(name) if name in written else ws.get(name)
            acc += np.asarray(value).reshape(acc.shape)
    outs: list[Any] = [x_grad] + param_acc
    for grad, idx in zip(state_grads, args.initial_recurrent_state_ids):
        init = np.asarray(inputs[idx + n_go])
        if init.ndim >= 2:
            outs.append(grad[:init.size // (grad.shape[1] * grad.shape[2])].reshape(init.shape).copy())
        else:
            outs.append(grad[0].sum(axis=0).astype(grad.dtype, copy=False).reshape(init.shape))
    return outs


@defop("RecurrentNetworkBlobFetcher", inputs=1, outputs=1, args=[arg("prefix", "str", "rnn")], category=HOST,
       no_gradient_reason="it copies step workspaces for inspection")
def recurrent_network_blob_fetcher(ctx, scratch):
    """Copy every blob of every step workspace into the workspace as ``<prefix>_<blob><t>``; the output
    lists the new names (what ``recurrent.retrieve_step_blobs`` reads)."""
    if not isinstance(scratch, StepWorkspaces):
        raise ctx.error("the input must be a RecurrentNetwork's step workspaces", blob=ctx.input_name(0))
    names = []
    for t, ws in enumerate(scratch.workspaces):
        for blob, value in sorted(ws.blobs.items()):
            if isinstance(value, np.ndarray):
                new = f"{ctx.args.prefix}_{blob}{t}"
                ctx.ws.blobs[new] = value.copy()
                names.append(new.encode("utf-8"))
    return np.array(names, dtype=object)
