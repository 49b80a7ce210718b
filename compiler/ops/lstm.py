"""The ops Caffe2's recurrent cells emit inside a step net: ``LSTMUnit`` (one timestep of an LSTM
given its pre-activation gates), ``GRUUnit`` (the same for a GRU) and ``ElementwiseLinear`` (MILSTM's
``X * w + b`` along the last axes), with their gradients.

Layouts follow Caffe2: hidden and cell states are ``[1, N, D]``, gates ``[1, N, 4D]`` ordered
input, forget, output, cell candidate. A row ``n`` whose sequence has ended (``t >= seq_lengths[n]``)
keeps its previous state (or zeros with ``drop_states``) and passes its gradient straight through.

>>> import numpy as np
>>> from netjit.compiler.ops.lstm import lstm_unit_numpy
>>> h, c = lstm_unit_numpy(np.zeros((1, 1, 2)), np.ones((1, 1, 2)), np.zeros((1, 1, 8)), None, 0)
>>> np.round(c, 3).tolist()
[[[0.5, 0.5]]]
"""
from __future__ import annotations

import math

import numpy as np

from netjit.compiler.ops.gradients import GradientContext
from netjit.compiler.ops.registry import OPAQUE, Args, Lowering, TensorType, arg, defop

LSTM_ARGS = [arg("forget_bias", "float", 0.0), arg("sequence_lengths", "bool", True),
             arg("drop_states", "bool", False)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _valid_rows(seq_lengths: np.ndarray | None, t: int, n: int) -> np.ndarray:
    """[1, N, 1] mask of rows still inside their sequence at timestep t."""
    if seq_lengths is None:
        return np.ones((1, n, 1), bool)
    return (t < np.asarray(seq_lengths).reshape(-1)).reshape(1, n, 1)


def _split_gates(x: np.ndarray, forget_bias: float) -> tuple[np.ndarray, ...]:
    d = x.shape[-1] // 4
    fb = x.dtype.type(forget_bias)
    return (_sigmoid(x[..., :d]), _sigmoid(x[..., d:2 * d] + fb), _sigmoid(x[..., 2 * d:3 * d]),
            np.tanh(x[..., 3 * d:]))


def lstm_unit_numpy(h_prev: np.ndarray, c_prev: np.ndarray, gates: np.ndarray, seq_lengths: np.ndarray | None,
                    t: int, forget_bias: float = 0.0, drop_states: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One LSTM step: (H, C) from the previous states and the gate pre-activations."""
    i, f, o, g = _split_gates(gates, forget_bias)
    c = f * c_prev + i * g
    h = o * np.tanh(c)
    valid = _valid_rows(seq_lengths, t, c_prev.shape[1])
    keep_h = np.zeros_like(h_prev) if drop_states else h_prev
    keep_c = np.zeros_like(c_prev) if drop_states else c_prev
    return (np.where(valid, h, keep_h).astype(c_prev.dtype, copy=False),
            np.where(valid, c, keep_c).astype(c_prev.dtype, copy=False))


def _lstm_check(ctx, h_prev, c_prev, gates, seq_lengths) -> None:
    if c_prev.ndim != 3 or gates.ndim != 3 or h_prev.shape != c_prev.shape:
        raise ctx.error(f"expects hidden and cell states [1, N, D] and gates [1, N, 4D], got "
                        f"{list(h_prev.shape)}, {list(c_prev.shape)} and {list(gates.shape)}", blob=ctx.input_name(2))
    if gates.shape[2] != 4 * c_prev.shape[2] or gates.shape[1] != c_prev.shape[1]:
        raise ctx.error(f"gates {list(gates.shape)} must be [1, N, 4D] for states {list(c_prev.shape)}",
                        blob=ctx.input_name(2))
    if seq_lengths is not None and np.asarray(seq_lengths).size != c_prev.shape[1]:
        raise ctx.error(f"seq_lengths has {np.asarray(seq_lengths).size} entries for a batch of "
                        f"{c_prev.shape[1]}", blob=ctx.input_name(3))


def _timestep(ctx, value) -> int:
    value = np.asarray(value)
    if value.size != 1 or value.dtype.kind not in "iu":
        raise ctx.error(f"the timestep must be one integer, got {value.dtype}{list(value.shape)}")
    return int(value.reshape(-1)[0])


def _lstm_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    c_prev = inputs[1]
    return [c_prev, c_prev]


def _lstm_unit_gradient(g: GradientContext) -> tuple[list, list]:
    n_fwd = g.n_inputs  # 5 with sequence lengths, 4 without
    ins = [g.I(i) for i in range(n_fwd)] + [g.O(0), g.O(1), g.GO(0), g.GO(1)]
    outs = [g.GI(0), g.GI(1), g.GI(2)]
    return [g.make("LSTMUnitGradient", ins, outs)], outs + [None] * (n_fwd - 3)


@defop("LSTMUnit", inputs=(4, 5), outputs=2, args=LSTM_ARGS, category=OPAQUE, infer=_lstm_infer,
       gradient=_lstm_unit_gradient,
       lowering={"numba-cpu": Lowering(standalone="netjit.compiler.codegen.lstm:lstm_unit")})
def lstm_unit(ctx, h_prev, c_prev, gates, *rest):
    """[H_prev, C_prev, gates, seq_lengths?, timestep] -> [H, C] (``sequence_lengths=0`` drops the
    seq_lengths input: every row is valid)."""
    seq, ts = _seq_and_timestep(ctx, rest)
    _lstm_check(ctx, h_prev, c_prev, gates, seq)
    return lstm_unit_numpy(h_prev, c_prev, gates, seq, _timestep(ctx, ts), ctx.args.forget_bias,
                           ctx.args.drop_states)


def _seq_and_timestep(ctx, rest: tuple) -> tuple[np.ndarray | None, np.ndarray]:
    """Split the optional seq_lengths input from the timestep as ``sequence_lengths`` says."""
    if ctx.args.sequence_lengths:
        if len(rest) < 2:
            raise ctx.error("sequence_lengths=1 (the default) needs a seq_lengths input before the timestep; "
                            "pass sequence_lengths=0 to leave it out")
        return rest[0], rest[1]
    return None, rest[0]


def lstm_unit_gradient_numpy(c_prev, gates, seq_lengths, t, c, dh, dc, forget_bias=0.0, drop_states=False):
    """[dH_prev, dC_prev, dGates] of one LSTM step (Caffe2's formulas: H_prev reaches H only through
    the gates, so a valid row's dH_prev is 0; the FC that made the gates carries it back)."""
    i, f, o, g = _split_gates(gates, forget_bias)
    tanh_c = np.tanh(c)
    dc_total = dc + dh * o * (1 - tanh_c * tanh_c)
    d_gates = np.concatenate([dc_total * g * i * (1 - i), dc_total * c_prev * f * (1 - f),
                              dh * tanh_c * o * (1 - o), dc_total * i * (1 - g * g)], axis=-1)
    valid = _valid_rows(seq_lengths, t, c_prev.shape[1])
    zero = np.zeros_like(c_prev)
    dh_prev = np.where(valid, zero, zero if drop_states else dh)
    dc_prev = np.where(valid, dc_total * f, zero if drop_states else dc)
    d_gates = np.where(valid, d_gates, np.zeros_like(gates))
    dt = c_prev.dtype
    return dh_prev.astype(dt, copy=False), dc_prev.astype(dt, copy=False), d_gates.astype(dt, copy=False)


def _lstm_grad_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    return [inputs[0], inputs[1], inputs[2]]


@defop("LSTMUnitGradient", inputs=(8, 9), outputs=3, args=LSTM_ARGS, category=OPAQUE, infer=_lstm_grad_infer,
       lowering={"numba-cpu": Lowering(standalone="netjit.compiler.codegen.lstm:lstm_unit_gradient")})
def lstm_unit_gradient(ctx, h_prev, c_prev, gates, *rest):
    """[H_prev, C_prev, gates, seq_lengths?, timestep, H, C, dH, dC] -> [dH_prev, dC_prev, dGates]."""
    seq, ts = _seq_and_timestep(ctx, rest)
    h, c, dh, dc = rest[-4:]
    _lstm_check(ctx, h_prev, c_prev, gates, seq)
    return lstm_unit_gradient_numpy(c_prev, gates, seq, _timestep(ctx, ts), c, dh, dc, ctx.args.forget_bias,
                                    ctx.args.drop_states)


# --------------------------------------------------------------------------------------------
# ElementwiseLinear: Y[n, d] = X[n, d] * w[d] + b[d], X viewed as [prod(dims[:axis]), prod(dims[axis:])]
# --------------------------------------------------------------------------------------------
def _ewl_dims(shape: tuple[int, ...], axis: int) -> tuple[int, int]:
    axis = axis + len(shape) if axis < 0 else axis
    if not 0 <= axis <= len(shape):
        raise ValueError(f"axis {axis} is out of range for a rank-{len(shape)} input")
    return math.prod(shape[:axis]), math.prod(shape[axis:])


def _ewl_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x, w, b = inputs
    _, d = _ewl_dims(tuple(x.shape), args.axis)
    if math.prod(w.shape) != d or math.prod(b.shape) != d:
        raise ValueError("w and b must have prod(X.shape[axis:]) elements")
    return [x]


@defop("ElementwiseLinear", inputs=3, outputs=1, args=[arg("axis", "int", 1)], category=OPAQUE,
       infer=_ewl_infer,
       gradient=lambda g: ([g.make("ElementwiseLinearGradient", [g.GO(0), g.I(0), g.I(1)],
                                   [g.GI(0), g.GI(1), g.GI(2)])], [g.GI(0), g.GI(1), g.GI(2)]))
def elementwise_linear(ctx, x, w, b):
    """Y = X * w + b, w and b broadcast along the leading ``axis`` dims of X."""
    try:
        n, d = _ewl_dims(x.shape, ctx.args.axis)
    except ValueError as err:
        raise ctx.error(str(err), blob=ctx.input_name(0)) from None
    for k, v in ((1, w), (2, b)):
        if v.size != d:
            raise ctx.error(f"has {v.size} elements but X {list(x.shape)} has {d} per row at axis "
                            f"{ctx.args.axis}", blob=ctx.input_name(k))
    y = x.reshape(n, d) * w.reshape(1, d) + b.reshape(1, d)
    return y.astype(x.dtype, copy=False).reshape(x.shape)


def _ewl_grad_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    _, x, w = inputs
    return [x, w, w]


@defop("ElementwiseLinearGradient", inputs=3, outputs=3, args=[arg("axis", "int", 1)], category=OPAQUE,
       infer=_ewl_grad_infer)
def elementwise_linear_gradient(ctx, dy, x, w):
    """[dY, X, w] -> [dX, dw, db]."""
    n, d = _ewl_dims(x.shape, ctx.args.axis)
    dy2, x2 = dy.reshape(n, d), x.reshape(n, d)
    dt = x.dtype
    return ((dy2 * w.reshape(1, d)).astype(dt, copy=False).reshape(x.shape),
            (dy2 * x2).sum(axis=0).astype(dt, copy=False).reshape(w.shape),
            dy2.sum(axis=0).astype(dt, copy=False).reshape(w.shape))


# --------------------------------------------------------------------------------------------
# GRUUnit: H = u * H_prev + (1 - u) * tanh(o), u = sigmoid(gates[update]); the reset gate was
# applied by the cell's own ops before (gru_cell.py), so its slice only passes through.
# --------------------------------------------------------------------------------------------
GRU_ARGS = [arg("sequence_lengths", "bool", True), arg("drop_states", "bool", False)]


def gru_unit_numpy(h_prev, gates, seq_lengths, t, drop_states=False):
    d = h_prev.shape[-1]
    u = _sigmoid(gates[..., d:2 * d])
    h = u * h_prev + (1 - u) * np.tanh(gates[..., 2 * d:])
    valid = _valid_rows(seq_lengths, t, h_prev.shape[1])
    return np.where(valid, h, np.zeros_like(h_prev) if drop_states else h_prev).astype(h_prev.dtype, copy=False)


def _gru_check(ctx, h_prev, gates, seq_lengths) -> None:
    if h_prev.ndim != 3 or gates.shape != h_prev.shape[:2] + (3 * h_prev.shape[2],):
        raise ctx.error(f"expects the hidden state [1, N, D] and gates [1, N, 3D], got {list(h_prev.shape)} and "
                        f"{list(gates.shape)}", blob=ctx.input_name(1))
    if seq_lengths is not None and np.asarray(seq_lengths).size != h_prev.shape[1]:
        raise ctx.error(f"seq_lengths has {np.asarray(seq_lengths).size} entries for a batch of "
                        f"{h_prev.shape[1]}", blob=ctx.input_name(2))


def _gru_unit_gradient(g: GradientContext) -> tuple[list, list]:
    ins = [g.I(i) for i in range(g.n_inputs)] + [g.O(0), g.GO(0)]
    outs = [g.GI(0), g.GI(1)]
    return [g.make("GRUUnitGradient", ins, outs)], outs + [None] * (g.n_inputs - 2)


@defop("GRUUnit", inputs=(3, 4), outputs=1, args=GRU_ARGS, category=OPAQUE,
       infer=lambda args, inputs: [inputs[0]], gradient=_gru_unit_gradient,
       lowering={"numba-cpu": Lowering(standalone="netjit.compiler.codegen.lstm:gru_unit")})
def gru_unit(ctx, h_prev, gates, *rest):
    """[H_prev, gates (reset, update, output), seq_lengths?, timestep] -> H."""
    seq, ts = _seq_and_timestep(ctx, rest)
    _gru_check(ctx, h_prev, gates, seq)
    return gru_unit_numpy(h_prev, gates, seq, _timestep(ctx, ts), ctx.args.drop_states)


def gru_unit_gradient_numpy(h_prev, gates, seq_lengths, t, dh, drop_states=False):
    d = h_prev.shape[-1]
    u = _sigmoid(gates[..., d:2 * d])
    o = np.tanh(gates[..., 2 * d:])
    d_gates = np.concatenate([np.zeros_like(u), dh * (h_prev - o) * u * (1 - u), dh * (1 - u) * (1 - o * o)],
                             axis=-1)
    valid = _valid_rows(seq_lengths, t, h_prev.shape[1])
    zero = np.zeros_like(h_prev)
    dh_prev = np.where(valid, dh * u, zero if drop_states else dh)
    d_gates = np.where(valid, d_gates, np.zeros_like(gates))
    return dh_prev.astype(h_prev.dtype, copy=False), d_gates.astype(h_prev.dtype, copy=False)


@defop("GRUUnitGradient", inputs=(5, 6), outputs=2, args=GRU_ARGS, category=OPAQUE,
       infer=lambda args, inputs: [inputs[0], inputs[1]],
       lowering={"numba-cpu": Lowering(standalone="netjit.compiler.codegen.lstm:gru_unit_gradient")})
def gru_unit_gradient(ctx, h_prev, gates, *rest):
    """[H_prev, gates, seq_lengths?, timestep, H, dH] -> [dH_prev, dGates] (dGates' reset slice is 0)."""
    seq, ts = _seq_and_timestep(ctx, rest)
    _gru_check(ctx, h_prev, gates, seq)
    return gru_unit_gradient_numpy(h_prev, gates, seq, _timestep(ctx, ts), rest[-1], ctx.args.drop_states)
