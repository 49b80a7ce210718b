"""``caffe2.python.control_ops_grad``: gradients of the Do, If and While operators.

- Do: the gradient is a Do over the sub-net's gradient ops, marked ``is_gradient_op`` so that it
  pops the forward Do's workspace off the shared stack and reads the local blobs the forward pass
  left there (``saved_fwd_blobs``). Output gradients enter through bindings
  ``<inner>/_DO_OPERATOR_INNER_GRAD_`` -> outer gradient; input gradients leave as ``<outer>_grad``.
- If: the gradient is an If on the same condition over the gradient nets of the two branches. A
  gradient only one branch computes is zeroed (or copied from the incoming gradient) in the other.
- While: the gradient is a While over the loop body's gradient (the body must be a single Do op,
  as control_ops_util builds it). Its condition is ``HasScope`` on the body's workspace stack, so it
  runs once per forward iteration, last first; between iterations the input gradients are copied
  back onto the output gradients they feed. Unlike Caffe2, which kept one iteration's gradient of a
  blob the body only reads, such gradients are summed over the iterations.

The makers register themselves with ``core.GradientRegistry`` (autodiff consults them for op types
whose registry record has no gradient), so ``net.AddGradientOperators`` differentiates through
control flow built by NetBuilder (``_use_control_ops=True``) or control_ops_util.

>>> # net.AddGradientOperators(["z"]) on a net with an If op emits an If over the branch gradients
"""
from __future__ import annotations

from typing import Any, Sequence

from netjit.autodiff import GradientRegistry, add_gradient_operators
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_argument, make_op

OperatorDef = caffe2_pb2.OperatorDef


def _net_argument(op: OperatorDef, name: str) -> caffe2_pb2.NetDef | None:
    for a in op.arg:
        if a.name == name:
            if not a.HasField("n"):
                raise ValueError(f"{op.type} argument {name!r} must hold a NetDef")
            return a.n
    return None


def _subgradient_pass(subnet: caffe2_pb2.NetDef, init_grad: dict[str, str]) -> tuple[list, dict[str, str]]:
    """Gradient ops of ``subnet``'s ops seeded with ``init_grad`` (blob -> its gradient blob)."""
    if not len(subnet.op):
        return [], dict(init_grad)
    grad_ops, grad_map = add_gradient_operators(list(subnet.op), dict(init_grad))
    return grad_ops, {str(b): str(g) for b, g in grad_map.items() if g is not None}


def _gradient_net(subnet: caffe2_pb2.NetDef, grad_ops: list) -> caffe2_pb2.NetDef:
    net = caffe2_pb2.NetDef()
    net.CopyFrom(subnet)
    if net.name:
        net.name += "_grad"
    del net.op[:]
    net.op.extend(grad_ops)
    del net.external_input[:]
    del net.external_output[:]
    return net


def _subnet_gradient(subnet: caffe2_pb2.NetDef, init_grad: dict[str, str]
                     ) -> tuple[caffe2_pb2.NetDef, dict[str, str], set[str], set[str]]:
    """(gradient net, blob -> gradient map, blobs it reads from outside, blobs it writes)."""
    grad_ops, grad_map = _subgradient_pass(subnet, init_grad)
    inputs: set[str] = set()
    outputs: set[str] = set()
    for gop in grad_ops:
        inputs.update(i for i in gop.input if i not in outputs)
        outputs.update(gop.output)
    return _gradient_net(subnet, grad_ops), grad_map, inputs, outputs


def dedupe_g_output(op: OperatorDef, g_output: Sequence[Any]) -> tuple[list, list]:
    """One distinct gradient blob per output (a Do binds names one to one): a gradient blob given
    for two outputs is copied under a second name for the later one."""
    grad_ops: list = []
    deduped: list = []
    by_output: dict[str, str] = {}
    for output, grad in zip(op.output, g_output):
        if not grad:
            deduped.append(grad)
            continue
        grad = str(grad)
        if output in by_output:
            deduped.append(by_output[output])
        elif grad not in by_output.values():
            by_output[output] = grad
            deduped.append(grad)
        else:
            renamed = f"{output}_{grad}_DEDUP"
            grad_ops.append(make_op("Copy", [grad], [renamed]))
            by_output[output] = renamed
            deduped.append(renamed)
    return grad_ops, deduped


def _do_bindings(op: OperatorDef) -> tuple[caffe2_pb2.NetDef, dict[str, str], dict[str, str], str]:
    """(sub-net, outer -> inner, inner -> outer, workspace blob) of a Do op, checked."""
    if op.type != "Do":
        raise ValueError(f"expected a Do op, got {op.type}")
    subnet = _net_argument(op, "net")
    if subnet is None:
        raise ValueError("the Do op has no 'net' argument")
    inner = next((list(a.strings) for a in op.arg if a.name == "inner_blobs"), [])
    idx = next((list(a.ints) for a in op.arg if a.name == "outer_blobs_idx"), [])
    inner = [s.decode("utf-8") if isinstance(s, bytes) else s for s in inner]
    if len(inner) != len(idx):
        raise ValueError("the Do op's inner_blobs and outer_blobs_idx differ in length")
    if op.input[-1] != op.output[-1]:
        raise ValueError("the Do op's last input and output must be the same workspace blob")
    outer = list(op.input[:-1]) + list(op.output[:-1])
    outer_to_inner: dict[str, str] = {}
    inner_to_outer: dict[str, str] = {}
    for name, i in zip(inner, idx):
        outer_to_inner[outer[i]] = name
        inner_to_outer[name] = outer[i]
    if set(outer_to_inner) != set(outer):
        raise ValueError("not every input and output of the Do op is bound to an inner blob")
    return subnet, outer_to_inner, inner_to_outer, op.output[-1]


def gen_do_gradient(op: OperatorDef, g_output: Sequence[Any]) -> tuple[list, list]:
    """The gradient Do of a forward Do; returns (gradient ops, gradient of each input)."""
    subnet, outer_to_inner, inner_to_outer, ws_blob = _do_bindings(op)
    grad_ops, g_output = dedupe_g_output(op, g_output)
    op_inputs, op_outputs = list(op.input[:-1]), list(op.output[:-1])
    seed: dict[str, str] = {}
    inner_grad_to_outer: dict[str, str] = {}
    for outer_out, outer_grad in zip(op_outputs, g_output):
        if outer_grad:
            inner_out = outer_to_inner[outer_out]
            inner_grad = inner_out + "/_DO_OPERATOR_INNER_GRAD_"
            seed[inner_out] = inner_grad
            inner_grad_to_outer[inner_grad] = str(outer_grad)
    if not seed:
        return [], [None] * len(op.input)
    inner_ops, inner_map = _subgradient_pass(subnet, seed)
    if not inner_ops:
        return [], [None] * len(op.input)

    copies: list = []
    g_input: list = []
    new_outputs: list[str] = []
    bindings: dict[str, str] = {}
    for outer_in in op_inputs:
        inner_in = outer_to_inner[outer_in]
        if inner_in in inner_map:
            # The inner gradient may already be bound to another outer blob (an output gradient
            # passed straight through): export it under a copy so the bindings stay one to one.
            exported = inner_in + "/_DO_OPERATOR_INNER_GRAD_COPY_"
            copies.append(make_op("Copy", [inner_map[inner_in]], [exported]))
            bindings[exported] = outer_in + "_grad"
            new_outputs.append(outer_in + "_grad")
            g_input.append(outer_in + "_grad")
        else:
            g_input.append(None)
    g_input.append(None)  # the workspace blob

    new_inputs: list[str] = []
    overwritten: set[str] = set()
    saved: set[str] = set()
    for gop in inner_ops:
        for name in gop.input:
            if name in overwritten:
                continue
            outer_name = inner_to_outer.get(name) or inner_grad_to_outer.get(name)
            if outer_name:
                if outer_name not in new_inputs:
                    new_inputs.append(outer_name)
                bindings[name] = outer_name
            else:
                saved.add(name)  # a local blob of the forward pass, read from its workspace
        overwritten.update(gop.output)

    grad_net = _gradient_net(subnet, inner_ops + copies)
    ordered = new_inputs + new_outputs
    inner_names = list(bindings)
    grad_do = OperatorDef()
    grad_do.CopyFrom(op)
    if grad_do.name:
        grad_do.name += "_grad"
    del grad_do.input[:]
    grad_do.input.extend(new_inputs + [ws_blob])
    del grad_do.output[:]
    grad_do.output.extend(new_outputs + [ws_blob])
    del grad_do.arg[:]
    grad_do.arg.extend([make_argument("net", grad_net), make_argument("inner_blobs", inner_names),
                        make_argument("outer_blobs_idx", [ordered.index(bindings[b]) for b in inner_names]),
                        make_argument("saved_fwd_blobs", sorted(saved))])
    del grad_do.control_input[:]
    grad_do.is_gradient_op = True
    _do_bindings(grad_do)  # the gradient Do must itself be well formed
    return grad_ops + [grad_do], g_input


def _zero_init_ops(init_grad: dict[str, str], grad_map: dict[str, str], grad_outputs: set[str]) -> list:
    """For gradients only the other branch computes: copy the incoming gradient of that blob, or
    fill zeros shaped like the blob itself."""
    ops = []
    for grad in sorted(grad_outputs):
        blob = next((b for b, g in grad_map.items() if g == grad), None)
        if blob is None:
            raise ValueError(f"unknown gradient output {grad!r}")
        if blob in init_grad:
            if init_grad[blob] != grad:
                ops.append(make_op("Copy", [init_grad[blob]], [grad]))
        else:
            ops.append(make_op("ConstantFill", [blob], [grad], value=0.0))
    return ops


def gen_if_gradient(op: OperatorDef, g_output: Sequence[Any]) -> tuple[list, list]:
    """The gradient of an If: an If on the same condition over the branches' gradient nets."""
    if op.type != "If" or not len(op.input):
        raise ValueError("expected an If op with a condition input")
    grad_ops, g_output = dedupe_g_output(op, g_output)
    init_grad = {o: str(g) for o, g in zip(op.output, g_output) if g}
    if not init_grad:
        raise ValueError("the If op has no output gradient")
    then_net = _net_argument(op, "then_net")
    if then_net is None:
        raise ValueError("the If op has no then_net")
    then_grad, then_map, then_in, then_out = _subnet_gradient(then_net, init_grad)
    grad_map = dict(then_map)
    else_in: set[str] = set()
    else_out: set[str] = set()
    else_map: dict[str, str] = {}
    else_grad = None
    else_net = _net_argument(op, "else_net")
    if else_net is not None:
        else_grad, else_map, else_in, else_out = _subnet_gradient(else_net, init_grad)
        for blob, g in else_map.items():
            t = then_map.get(blob)
            if t is None or t == g:
                grad_map[blob] = g
            elif t == init_grad.get(blob):
                grad_map[blob] = g      # only the else branch touches it
            elif g != init_grad.get(blob):
                raise ValueError(f"the branches of If name the gradient of {blob!r} differently: {t!r}, {g!r}")
    common = then_out & else_out
    zero_then = _zero_init_ops(init_grad, then_map, {o for o in then_out - common if o in then_map.values()})
    if else_grad is not None:
        else_grad.op.extend(zero_then)
    elif zero_then:
        else_grad = _gradient_net(then_net, zero_then)
        if else_grad.name:
            else_grad.name += "_auto_else_zero_blobs_"
    zero_else = _zero_init_ops(init_grad, else_map, {o for o in else_out - common if o in else_map.values()})
    then_grad.op.extend(zero_else)

    cond = op.input[0]
    grad_if = OperatorDef()
    grad_if.CopyFrom(op)
    del grad_if.input[:]
    grad_if.input.extend([cond] + sorted((then_in | else_in) - {cond}))
    del grad_if.output[:]
    grad_if.output.extend(sorted(then_out | else_out))
    del grad_if.arg[:]
    grad_if.arg.append(make_argument("then_net", then_grad))
    if else_grad is not None:
        grad_if.arg.append(make_argument("else_net", else_grad))
    if grad_if.name:
        grad_if.name += "_grad"
    del grad_if.control_input[:]
    grad_if.is_gradient_op = True
    return grad_ops + [grad_if], [grad_map.get(i) for i in op.input]


def gen_while_gradient(op: OperatorDef, g_output: Sequence[Any]) -> tuple[list, list]:
    """The gradient of a While whose loop_net is one Do op: a While over that Do's gradient, run
    while the Do's workspace stack still holds forward iterations."""
    if op.type != "While" or not len(op.input):
        raise ValueError("expected a While op with a condition input")
    grad_ops, g_output = dedupe_g_output(op, g_output)
    init_grad = {o: str(g) for o, g in zip(op.output, g_output) if g}
    if not init_grad:
        raise ValueError("the While op has no output gradient")
    loop_net = _net_argument(op, "loop_net")
    if loop_net is None or len(loop_net.op) != 1 or loop_net.op[0].type != "Do":
        raise ValueError("the gradient of While needs a loop_net made of a single Do op (build the loop "
                         "with NetBuilder's WhileNet or control_ops_util.add_while_op)")
    do_op = loop_net.op[0]
    if any(a.name == "reuse_workspace" and a.i for a in do_op.arg):
        raise ValueError("the gradient of While needs a loop body Do without reuse_workspace")
    ws_blob = do_op.output[-1]
    loop_grad, loop_map, loop_in, loop_out = _subnet_gradient(loop_net, init_grad)

    cond_blob = "gradient_loop_cond_net/cond"
    taken = set(op.input) | set(op.output)
    k = 0
    while cond_blob in taken:
        k += 1
        cond_blob = f"gradient_loop_cond_net/cond_{k}"
    cond_net = caffe2_pb2.NetDef(name="gradient_loop_cond_net")
    init_ops = [make_op("HasScope", [ws_blob], [cond_blob])]
    cond_net.op.append(make_op("HasScope", [ws_blob], [cond_blob]))
    for blob, g in init_grad.items():
        computed = loop_map.get(blob)
        if computed is not None and computed != g:
            # The next (earlier) iteration's output gradient is this iteration's input gradient.
            cond_net.op.append(make_op("Copy", [computed], [g]))
            init_ops.append(make_op("Copy", [g], [computed]))
    # Blobs the body only reads get a gradient from every iteration: sum them (Caffe2 kept the
    # last one computed, i.e. the first iteration's, only).
    final_ops = []
    for blob in dict.fromkeys(op.input[1:]):
        grad = loop_map.get(blob)
        if blob in op.output or blob == ws_blob or grad is None:
            continue
        total = grad + "_while_sum"
        init_ops.append(make_op("Scale", [blob], [total], scale=0.0))
        loop_grad.op.append(make_op("Add", [total, grad], [total]))
        loop_in.add(total)
        loop_out.add(total)
        loop_out.discard(grad)      # a per-iteration value; the sum below is the gradient
        final_ops.append(make_op("Copy", [total], [grad]))
    grad_while = OperatorDef()
    grad_while.CopyFrom(op)
    if grad_while.name:
        grad_while.name += "_grad"
    del grad_while.arg[:]
    grad_while.arg.extend([make_argument("loop_net", loop_grad), make_argument("cond_net", cond_net)])
    del grad_while.control_input[:]
    del grad_while.input[:]
    grad_while.input.extend([cond_blob] + sorted(loop_in))
    del grad_while.output[:]
    grad_while.output.extend(sorted(loop_out))
    grad_while.is_gradient_op = True
    return grad_ops + init_ops + [grad_while] + final_ops, [loop_map.get(i) for i in op.input]


GradientRegistry.RegisterGradient("Do")(gen_do_gradient)
GradientRegistry.RegisterGradient("If")(gen_if_gradient)
GradientRegistry.RegisterGradient("While")(gen_while_gradient)
