"""Helpers for gradient makers: Caffe2's I/O/GI/GO naming and the common "one op" maker.

A maker is ``fn(g: GradientContext) -> (grad_ops, g_input)``: the gradient OperatorDefs and, per
forward input, the name of its gradient blob (or None). The autodiff engine appends the forward
op's args, engine and device option to the ops it gets, unless the record sets grad_copy_args=False.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from netjit.proto.args import make_op


class GradientContext:
    def __init__(self, op: Any, g_output: Sequence[str | None], args: Any):
        self.op = op
        self.g_output = list(g_output)
        self.args = args

    def I(self, i: int) -> str:  # noqa: E743 - Caffe2's names, kept for readability of makers
        return self.op.input[i]

    def O(self, i: int) -> str:
        return self.op.output[i]

    def GO(self, i: int) -> str:
        g = self.g_output[i]
        if g is None:
            raise ValueError(f"{self.op.type}: output {i} ({self.op.output[i]!r}) has no gradient, "
                             f"but this op's gradient needs it")
        return g

    def GI(self, i: int) -> str:
        return self.op.input[i] + "_grad"

    def has_GO(self, i: int) -> bool:
        return i < len(self.g_output) and self.g_output[i] is not None

    def make(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], **kwargs: Any) -> Any:
        return make_op(op_type, inputs, outputs, **kwargs)

    @property
    def n_inputs(self) -> int:
        return len(self.op.input)


def _resolve(g: GradientContext, token: str) -> str:
    # Tokens: "I0", "O1", "GO0", "GI2" as in Caffe2's makers.
    for prefix, fn in (("GI", g.GI), ("GO", g.GO), ("I", g.I), ("O", g.O)):
        if token.startswith(prefix) and token[len(prefix):].isdigit():
            return fn(int(token[len(prefix):]))
    raise ValueError(f"bad gradient token {token!r}")


def simple_gradient(op_type: str, inputs: Sequence[str], outputs: Sequence[str],
                    **extra: Any) -> Callable[[GradientContext], tuple[list, list]]:
    """The maker of an op whose gradient is one op: ``simple_gradient("ReluGradient", ["O0", "GO0"], ["GI0"])``."""
    def maker(g: GradientContext) -> tuple[list, list]:
        outs = [_resolve(g, t) for t in outputs]
        g_input: list[str | None] = [None] * g.n_inputs
        for t, name in zip(outputs, outs):
            if t.startswith("GI"):
                g_input[int(t[2:])] = name
        return [g.make(op_type, [_resolve(g, t) for t in inputs], outs, **extra)], g_input
    return maker


def no_gradient(g: GradientContext) -> tuple[list, list]:
    """Caffe2's NO_GRADIENT: the op is differentiable "to nothing" (fillers, Iter, LearningRate):
    no ops, and no input gets a gradient. Unlike a missing maker this is not an error."""
    return [], [None] * g.n_inputs


def passthrough_gradient(g: GradientContext) -> tuple[list, list]:
    """Identity-like ops (Alias, in tests also Sum/Add): each input's gradient is the output's."""
    return [], [g.g_output[0]] * g.n_inputs


def gradient_ops_for(op: Any, g_output: Sequence[str | None]) -> tuple[list, list]:
    """Run the registered maker for one forward op and apply Caffe2's copy rules: emitted ops are
    marked ``is_gradient_op`` and, unless the record opts out, get the forward op's device option,
    engine and every forward arg (after the maker's own)."""
    from netjit.compiler.ops.registry import lookup  # the registry imports this module's users

    opdef = lookup(op.type)
    if opdef.gradient is None:
        reason = opdef.no_gradient_reason or "it has no gradient defined"
        raise ValueError(f"cannot differentiate {op.type} (output {list(op.output)}): {reason}")
    ops, g_input = opdef.gradient(GradientContext(op, g_output, opdef.decode_args(op)))
    for gop in ops:
        gop.is_gradient_op = True
        # Caffe2 copies device option and engine even from makers that opt out of copying args
        # (Reshape, Transpose, MatMul): CopyArguments() is a separate switch.
        if op.HasField("device_option") and not gop.HasField("device_option"):
            gop.device_option.CopyFrom(op.device_option)
        if op.HasField("engine") and not gop.HasField("engine"):
            gop.engine = op.engine
        if opdef.grad_copy_args:
            gop.arg.extend(op.arg)
    return ops, list(g_input)
