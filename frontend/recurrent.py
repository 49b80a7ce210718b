"""``caffe2.python.recurrent``: build a ``RecurrentNetwork`` op (and its backward step net) from a
step net.

>>> from netjit import core
>>> net, step = core.Net("outer"), core.Net("step")
>>> x_t, h_prev = step.AddExternalInputs("x_t", "h_prev")
>>> h = step.Add([h_prev, x_t], "h")
>>> _ = step.AddExternalOutput(h)
>>> h_all, h_last = recurrent_net(net, step, inputs=[(x_t, "x")], initial_cell_inputs=[(h_prev, "h0")],
...                               links={h_prev: h}, scope="acc")
>>> str(h_all), [op.type for op in net.Proto().op]
('h_all', ['RecurrentNetwork'])
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from netjit import core, workspace
from netjit.control_ops_util import get_undefined_blobs


def _versions(ops: Iterable[Any]) -> dict[str, int]:
    """How many times each blob is written (Caffe2's get_ssa versions: 0 = only read)."""
    versions: dict[str, int] = {}
    for op in ops:
        for name in op.input:
            versions.setdefault(name, 0)
        for name in op.output:
            versions[name] = versions.get(name, 0) + 1
    return versions


def _backward_step_net(cell_net: core.Net, recompute: set[str] | None) -> tuple[core.Net, dict[str, Any]]:
    """The cell net's gradient (netjit's autodiff, every external output seeded with ``<name>_grad``),
    preceded by the forward ops to recompute."""
    proto = cell_net.Proto()
    grads = {o: o + "_grad" for o in proto.external_output}
    backward_ops, mapping = core.GradientRegistry.GetBackwardPass(list(proto.op), grads)
    mapping = {str(k): v for k, v in mapping.items()}
    backward = core.Net("RecurrentBackwardStep")
    if recompute:
        for op in proto.op:
            if not recompute.isdisjoint(op.output):
                if not set(op.output) <= recompute:
                    raise ValueError(f"recompute_blobs_on_backward: {op.type} also writes "
                                     f"{sorted(set(op.output) - recompute)}, which are not listed")
                backward.Proto().op.add().CopyFrom(op)
    backward.Proto().op.extend(backward_ops)
    # Forward intermediates the backward ops read become inputs of the backward net.
    undefined = get_undefined_blobs(backward.Proto().op)
    scratches = [b for b, ver in _versions(proto.op).items()
                 if ver > 0 and b in undefined and b not in proto.external_output]
    backward.Proto().external_input.extend(scratches)
    backward.Proto().type = "simple"
    return backward, mapping


def _accumulate_into_inputs(backward: core.Net) -> None:
    """A backward op writing one of the net's external inputs (a gradient that also arrives through a
    link) writes a ``_accum`` blob instead, summed into the input: the two gradients add up."""
    proto = backward.Proto()
    ops = list(proto.op)
    del proto.op[:]
    for op in ops:
        new = proto.op.add()
        new.CopyFrom(op)
        for j, out in enumerate(op.output):
            if out in proto.external_input and out not in op.input:
                new.output[j] = out + "_accum"
                proto.op.add().CopyFrom(core.CreateOperator("Sum", [out, out + "_accum"], [out]))


def recurrent_net(net: core.Net, cell_net: core.Net, inputs: Sequence[tuple], initial_cell_inputs: Sequence[tuple],
                  links: dict, timestep: Any = None, scope: str | None = None,
                  outputs_with_grads: Sequence[int] = (0,), recompute_blobs_on_backward: Iterable[Any] | None = None,
                  forward_only: bool = False) -> tuple:
    """Add a RecurrentNetwork op running ``cell_net`` once per step of the sequence to ``net``.

    ``inputs``: [(cell input name, T x N x ... sequence blob)] (one sequence);
    ``initial_cell_inputs``: [(cell input name, initial value blob)], one per recurrent state;
    ``links``: {cell input at t+1: cell output at t}; ``timestep``: the cell's timestep blob
    ("timestep" by default); ``scope``: prefix of the op's internal blobs;
    ``outputs_with_grads``: output positions that receive a gradient from outside;
    ``recompute_blobs_on_backward``: cell blobs the backward step recomputes;
    ``forward_only``: build no backward step net.

    Returns the outputs ``(state_1_all, state_1_last, state_2_all, ...)``: for each recurrent state,
    its value after every step ([T, N, D]) and after the last one ([1, N, D]).
    """
    if len(inputs) != 1:
        raise ValueError(f"recurrent_net supports one input sequence, got {len(inputs)}")
    input_blobs = [str(i[0]) for i in inputs]
    initial_input_blobs = [str(x[1]) for x in initial_cell_inputs]
    op_name = net.NextName("recurrent")

    def s(name: str) -> str:
        return f"{scope if scope is not None else op_name}/{name}"

    known = set(input_blobs + initial_input_blobs + [str(x[0]) for x in initial_cell_inputs])
    if timestep is not None:
        known.add(str(timestep))
    references = [core.BlobReference(b) for b in cell_net.Proto().external_input if b not in known]

    backward = mapping = None
    recompute = {str(b) for b in recompute_blobs_on_backward} if recompute_blobs_on_backward else set()
    if not forward_only:
        backward, mapping = _backward_step_net(cell_net, recompute)
        backward_written = {b for b, v in _versions(backward.Proto().op).items() if v > 0}
    all_inputs = [i[1] for i in inputs] + [x[1] for x in initial_cell_inputs] + references
    all_inputs_str = [str(b) for b in all_inputs]
    all_outputs: list[str] = []
    cell_net.Proto().type = "simple"

    link_map = {str(k): str(v) for k, v in links.items()}
    forward_links, backward_links, aliases, recurrent_states = [], [], [], []
    for cell_input, _ in initial_cell_inputs:
        cell_input = str(cell_input)
        state = s(cell_input + "_states")
        states_grad = state + "_grad"
        if cell_input not in link_map:
            raise ValueError(f"links has no cell output for the recurrent input {cell_input!r}")
        cell_output = link_map[cell_input]
        forward_links += [(cell_input, state, 0), (cell_output, state, 1)]
        aliases += [(state, cell_output + "_all", 1), (state, cell_output + "_last", -1)]
        all_outputs += [cell_output + "_all", cell_output + "_last"]
        recurrent_states.append(state)
        if backward is not None:
            backward_links.append((cell_output + "_grad", states_grad, 1))
            backward.Proto().external_input.append(cell_output + "_grad")
            input_grad = cell_input + "_grad"
            # No op writes the recurrent input's gradient when it passes straight through (a Sum
            # first in the cell): link the blob that holds it instead.
            source = input_grad if input_grad in backward_written else mapping.get(cell_input)
            if source is not None:
                backward_links.append((str(source), states_grad, 0))
    for input_t, input_blob in inputs:
        forward_links.append((str(input_t), str(input_blob), 0))

    backward_args: dict[str, Any] = {}
    if backward is not None:
        for input_t, input_blob in inputs:
            backward_links.append((str(mapping[str(input_t)]), str(input_blob) + "_grad", 0))
        backward.Proto().external_input.extend(cell_net.Proto().external_input)
        backward.Proto().external_input.extend(cell_net.Proto().external_output)
        _accumulate_into_inputs(backward)
        params = [str(x) for x in references if str(x) in mapping]
        backward_args = {
            "param": [all_inputs_str.index(p) for p in params],
            "param_grads": [str(mapping[p]) for p in params],
            "backward_link_internal": [b[0] for b in backward_links],
            "backward_link_external": [b[1] for b in backward_links],
            "backward_link_offset": [b[2] for b in backward_links],
            "outputs_with_grads": list(outputs_with_grads),
            "recompute_blobs_on_backward": sorted(recompute),
        }
        if len(backward.Proto().op):
            backward_args["backward_step_net"] = backward.Proto()

    results = net.RecurrentNetwork(
        all_inputs, all_outputs + [s("step_workspaces")],
        alias_src=[a[0] for a in aliases], alias_dst=[a[1] for a in aliases], alias_offset=[a[2] for a in aliases],
        recurrent_states=recurrent_states,
        initial_recurrent_state_ids=[all_inputs_str.index(str(x[1])) for x in initial_cell_inputs],
        link_internal=[f[0] for f in forward_links], link_external=[f[1] for f in forward_links],
        link_offset=[f[2] for f in forward_links], enable_rnn_executor=1, step_net=cell_net.Proto(),
        timestep="timestep" if timestep is None else str(timestep), **backward_args)
    # The last output holds the step workspaces, needed only by the gradient.
    return tuple(results[:-1])


def set_rnn_executor_config(rnn_op: Any, num_threads: int | None = None, max_cuda_streams: int | None = None) -> None:
    """Record Caffe2's RNN executor settings on the op (``rnn_executor.*`` arguments). netjit runs
    the steps in order on one thread, compiled; the arguments are kept so the NetDef round-trips."""
    if rnn_op.type not in ("RecurrentNetwork", "RecurrentNetworkGradient"):
        raise ValueError(f"set_rnn_executor_config expects a RecurrentNetwork(Gradient) op, got {rnn_op.type}")
    for key, value in (("num_threads", num_threads), ("max_cuda_streams", max_cuda_streams)):
        if value is not None:
            rnn_op.arg.add(name="rnn_executor." + key, i=int(value))


def retrieve_step_blobs(net: core.Net, prefix: str = "rnn") -> list:
    """Copy the blobs of every step workspace of every RecurrentNetwork op of ``net`` into the current
    workspace (as ``<prefix>_<blob><t>``); return their names."""
    names: list = []
    count = 1
    for op in net.Proto().op:
        if op.type == "RecurrentNetwork":
            blob_name = f"{prefix}_{count}"
            count += 1
            workspace.RunOperatorOnce(core.CreateOperator("RecurrentNetworkBlobFetcher", [op.output[-1]],
                                                          [blob_name], prefix=prefix))
            names += workspace.FetchBlob(blob_name).tolist()
    return names


__all__ = ["recurrent_net", "set_rnn_executor_config", "retrieve_step_blobs"]
