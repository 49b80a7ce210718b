"""``caffe2.python.gru_cell``: the GRU cell and ``GRU`` (a GRU network built like ``rnn_cell.LSTM``).

The reset gate feeds the output gate inside the step, so the cell computes it with ordinary ops
(Split, FC, Sum, Sigmoid, Mul) and leaves the update and the new state to ``GRUUnit``.

>>> from netjit import model_helper
>>> model = model_helper.ModelHelper(name="gru")
>>> h_all, h_last = GRU(model, "x", "seq_lengths", ("h0",), dim_in=8, dim_out=16, scope="GRU")
>>> str(h_all)
'GRU/hidden_t_all'
"""
from __future__ import annotations

from typing import Any

from netjit import brew, rnn_cell
from netjit.initializers import Initializer


class GRUInitializer:
    """The initial hidden state as a parameter of zeros ([hidden_size], repeated over the batch)."""

    def __init__(self, hidden_size: int):
        self.hidden_size = hidden_size

    def create_states(self, model: Any) -> list:
        return [model.create_param(param_name="initial_hidden_state",
                                   initializer=Initializer(operator_name="ConstantFill", value=0.0),
                                   shape=[self.hidden_size])]


class GRUCell(rnn_cell.RNNCell):
    """A GRU step. ``linear_before_reset=True`` applies the reset gate after the recurrent FC (cuDNN's
    variant); ``forget_bias`` is accepted for the shared ``_LSTM`` signature and unused, as in Caffe2."""

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float, memory_optimization: bool,
                 drop_states: bool = False, linear_before_reset: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.initializer = GRUInitializer(hidden_size=hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.forget_bias = float(forget_bias)
        self.memory_optimization = memory_optimization
        self.drop_states = drop_states
        self.linear_before_reset = linear_before_reset

    def _apply(self, model, input_t, seq_lengths, states, timestep, extra_inputs=None):
        hidden_t_prev = states[0]
        s, dim = self.scope, self.hidden_size
        input_t_reset, input_t_update, input_t_output = model.net.Split(
            [input_t], [s("input_t_reset"), s("input_t_update"), s("input_t_output")], axis=2)
        reset_gate_t = brew.fc(model, hidden_t_prev, s("reset_gate_t"), dim_in=dim, dim_out=dim, axis=2)
        update_gate_t = brew.fc(model, hidden_t_prev, s("update_gate_t"), dim_in=dim, dim_out=dim, axis=2)
        reset_gate_t = model.net.Sum([reset_gate_t, input_t_reset], s("reset_gate_t"))
        reset_gate_t_sigmoid = model.net.Sigmoid(reset_gate_t, s("reset_gate_t_sigmoid"))
        if self.linear_before_reset:
            output_gate_fc = brew.fc(model, hidden_t_prev, s("output_gate_t"), dim_in=dim, dim_out=dim, axis=2)
            output_gate_t = model.net.Mul([reset_gate_t_sigmoid, output_gate_fc], s("output_gate_t_mul"))
        else:
            modified = model.net.Mul([reset_gate_t_sigmoid, hidden_t_prev], s("modified_hidden_t_prev"))
            output_gate_t = brew.fc(model, modified, s("output_gate_t"), dim_in=dim, dim_out=dim, axis=2)
        update_gate_t = model.net.Sum([update_gate_t, input_t_update], s("update_gate_t"))
        output_gate_t = model.net.Sum([output_gate_t, input_t_output], s("output_gate_t_summed"))
        gates_t, _ = model.net.Concat([reset_gate_t, update_gate_t, output_gate_t],
                                      [s("gates_t"), s("_gates_t_concat_dims")], axis=2)
        inputs = [hidden_t_prev, gates_t] + ([seq_lengths] if seq_lengths is not None else []) + [timestep]
        hidden_t = model.net.GRUUnit(inputs, list(self.get_state_names()), drop_states=self.drop_states,
                                     sequence_lengths=seq_lengths is not None)
        model.net.AddExternalOutputs(hidden_t)
        return (hidden_t,)

    def prepare_input(self, model, input_blob):
        return brew.fc(model, input_blob, self.scope("i2h"), dim_in=self.input_size, dim_out=3 * self.hidden_size,
                       axis=2)

    def get_state_names(self):
        return (self.scope("hidden_t"),)

    def get_output_dim(self):
        return self.hidden_size


def GRU(model: Any, input_blob: Any, seq_lengths: Any, initial_states: Any, dim_in: int, dim_out: int,
        scope: str | None = None, outputs_with_grads: tuple = (0,), **kwargs: Any) -> tuple:
    """A one-layer GRU over ``input_blob`` [T, N, dim_in]: returns (hidden_all, hidden_last).

    Caffe2 defined GRU as ``rnn_cell._LSTM`` with this cell, which counts four outputs per layer;
    a GRU has two, so stacked layers (a list ``dim_out``) are refused here rather than mis-indexed."""
    if isinstance(dim_out, (list, tuple)):
        if len(dim_out) != 1:
            raise ValueError("GRU builds one layer; stack GRUCells with rnn_cell.MultiRNNCell for more")
        dim_out = dim_out[0]
    return rnn_cell._LSTM(GRUCell, model, input_blob, seq_lengths, initial_states, dim_in, dim_out, scope=scope,
                          outputs_with_grads=outputs_with_grads, **kwargs)


__all__ = ["GRUCell", "GRUInitializer", "GRU"]
