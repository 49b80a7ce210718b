"""``caffe2.python.rnn_cell``: recurrent cells (LSTM, MILSTM, basic RNN, stacks of them) that build
a step net and run it over a sequence with one ``RecurrentNetwork`` op.

A cell implements one timestep (``apply_override``: step-net ops from the input and the previous
states to the new states); ``apply_over_sequence`` wraps it into a RecurrentNetwork op whose
backward step net netjit's autodiff derives. Sequences are ``[T, N, D]``.

>>> from netjit import model_helper
>>> model = model_helper.ModelHelper(name="lm")
>>> h_all, h_last, c_all, c_last = LSTM(model, "x", "seq_lengths", ("h0", "c0"), dim_in=8, dim_out=16,
...                                     scope="LSTM")
>>> str(h_all), [op.type for op in model.net.Proto().op]
('LSTM/hidden_state_all', ['FC', 'RecurrentNetwork'])
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Sequence

import numpy as np

from netjit import brew, core, recurrent, workspace
from netjit.attention import (AttentionType, apply_dot_attention, apply_recurrent_attention,
                              apply_regular_attention)
from netjit.initializers import Initializer
from netjit.model_helper import ModelHelper
from netjit.scope import NameScope


def _RectifyName(blob_reference_or_name: Any) -> core.BlobReference | None:
    if blob_reference_or_name is None:
        return None
    if isinstance(blob_reference_or_name, str):
        return core.ScopedBlobReference(blob_reference_or_name)
    if not isinstance(blob_reference_or_name, core.BlobReference):
        raise TypeError(f"expected a blob name or BlobReference, got {blob_reference_or_name!r}")
    return blob_reference_or_name


def _RectifyNames(blob_references_or_names: Sequence[Any] | None) -> list | None:
    if blob_references_or_names is None:
        return None
    return [_RectifyName(b) for b in blob_references_or_names]


class RNNCell:
    """Base class of recurrent cells: subclasses give ``apply_override`` (one step) and
    ``get_state_names_override``; ``apply_over_sequence`` runs the step over a whole sequence."""

    def __init__(self, name: str | None = None, forward_only: bool = False, initializer: Any = None):
        self.name = name
        self.recompute_blobs: list = []
        self.forward_only = forward_only
        self._initializer = initializer

    @property
    def initializer(self) -> Any:
        return self._initializer

    @initializer.setter
    def initializer(self, value: Any) -> None:
        self._initializer = value

    def scope(self, name: str) -> str:
        return self.name + "/" + name if self.name is not None else name

    def apply_over_sequence(self, model: ModelHelper, inputs: Any, seq_lengths: Any = None,
                            initial_states: Sequence[Any] | None = None,
                            outputs_with_grads: Sequence[int] | None = None) -> tuple[Any, tuple]:
        """Add a RecurrentNetwork op applying the cell to every step of ``inputs`` ([T, N, D]).

        Returns (output sequence, states): states alternates each state's all-steps and last-step
        blobs, (state_1_all, state_1_last, state_2_all, ...)."""
        if initial_states is None:
            with NameScope(self.name):
                if self.initializer is None:
                    raise ValueError("Either initial states or initializer have to be set")
                initial_states = self.initializer.create_states(model)
        preprocessed_inputs = self.prepare_input(model, inputs)
        step_model = ModelHelper(name=self.name, param_model=model)
        input_t, timestep = step_model.net.AddScopedExternalInputs("input_t", "timestep")
        if len(initial_states) != len(self.get_state_names()):
            raise ValueError(f"{len(initial_states)} initial state values for {len(self.get_state_names())} "
                             f"states ({list(self.get_state_names())})")
        states_prev = step_model.net.AddScopedExternalInputs(*[s + "_prev" for s in self.get_state_names()])
        states = self._apply(model=step_model, input_t=input_t, seq_lengths=seq_lengths, states=states_prev,
                             timestep=timestep)
        external_outputs = set(step_model.net.Proto().external_output)
        for state in states:
            if str(state) not in external_outputs:
                step_model.net.AddExternalOutput(state)
        if outputs_with_grads is None:
            outputs_with_grads = [self.get_output_state_index() * 2]
        states_for_all_steps = recurrent.recurrent_net(
            net=model.net, cell_net=step_model.net, inputs=[(input_t, preprocessed_inputs)],
            initial_cell_inputs=list(zip(states_prev, initial_states)), links=dict(zip(states_prev, states)),
            timestep=timestep, scope=self.name, forward_only=self.forward_only,
            outputs_with_grads=outputs_with_grads, recompute_blobs_on_backward=self.recompute_blobs)
        output = self._prepare_output_sequence(model, states_for_all_steps)
        return output, states_for_all_steps

    def apply(self, model: ModelHelper, input_t: Any, seq_lengths: Any, states: Sequence[Any],
              timestep: Any) -> tuple[Any, Any]:
        """One step outside a RecurrentNetwork (in an unrolled net): (output, new states)."""
        input_t = self.prepare_input(model, input_t)
        states = self._apply(model, input_t, seq_lengths, states, timestep)
        return self._prepare_output(model, states), states

    def _apply(self, model: ModelHelper, input_t: Any, seq_lengths: Any, states: Sequence[Any], timestep: Any,
               extra_inputs: Any = None) -> Any:
        # Inputs keep the caller's scope (rectified to references first); outputs get the cell's.
        args = self._rectify_apply_inputs(input_t, seq_lengths, states, timestep, extra_inputs)
        with NameScope(self.name):
            return self.apply_override(model, *args)

    def _rectify_apply_inputs(self, input_t: Any, seq_lengths: Any, states: Any, timestep: Any,
                              extra_inputs: Any) -> list:
        input_t, seq_lengths, timestep = _RectifyNames([input_t, seq_lengths, timestep])
        states = _RectifyNames(states)
        if extra_inputs:
            names, sizes = zip(*extra_inputs)
            extra_inputs = list(zip(_RectifyNames(names), sizes))
        rectified = [input_t, seq_lengths, states, timestep]
        if "extra_inputs" in inspect.signature(self.apply_override).parameters:
            rectified.append(extra_inputs)
        return rectified

    def apply_override(self, model: ModelHelper, input_t: Any, seq_lengths: Any, states: Any, timestep: Any,
                       extra_inputs: Any = None) -> tuple:
        """One step of the cell: add its ops to ``model`` and return the new states. Every cell
        class defines it; the base class has no step of its own."""
        raise TypeError(f"{type(self).__name__} must define apply_override (one step of the cell)")

    def prepare_input(self, model: ModelHelper, input_blob: Any) -> Any:
        """Work on the whole input sequence done once before the steps (an input projection)."""
        return input_blob

    def get_output_state_index(self) -> int:
        return 0

    def get_state_names(self) -> list[str]:
        return [self.scope(n) for n in self.get_state_names_override()]

    def get_state_names_override(self) -> list[str]:
        raise TypeError(f"{type(self).__name__} must define get_state_names_override (its state names)")

    def get_output_dim(self) -> int:
        raise TypeError(f"{type(self).__name__} must define get_output_dim")

    def _prepare_output(self, model: ModelHelper, states: Sequence[Any]) -> Any:
        return states[self.get_output_state_index()]

    def _prepare_output_sequence(self, model: ModelHelper, state_outputs: Sequence[Any]) -> Any:
        # state_outputs alternates all-steps and last-step blobs per state.
        return state_outputs[2 * self.get_output_state_index()]


class LSTMInitializer:
    """Initial hidden and cell states as parameters of zeros ([hidden_size], repeated over the batch)."""

    def __init__(self, hidden_size: int):
        self.hidden_size = hidden_size

    def create_states(self, model: ModelHelper) -> list:
        return [model.create_param(param_name=name, initializer=Initializer(operator_name="ConstantFill", value=0.0),
                                   shape=[self.hidden_size])
                for name in ("initial_hidden_state", "initial_cell_state")]


class BasicRNNCell(RNNCell):
    """h_t = activation(W_i x_t + b_i + W_h h_{t-1} + b_h), activation "tanh" or "relu"."""

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float, memory_optimization: bool,
                 drop_states: bool = False, initializer: Any = None, activation: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.drop_states = drop_states
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.activation = activation
        if self.activation not in ("relu", "tanh"):
            raise ValueError(f"BasicRNNCell with unknown activation function ({self.activation}); use 'tanh' "
                             f"or 'relu'")

    def apply_override(self, model, input_t, seq_lengths, states, timestep, extra_inputs=None):
        hidden_t_prev = states[0]
        gates_t = brew.fc(model, hidden_t_prev, "gates_t", dim_in=self.hidden_size, dim_out=self.hidden_size,
                          axis=2)
        brew.sum(model, [gates_t, input_t], gates_t)
        act = model.net.Tanh if self.activation == "tanh" else model.net.Relu
        # With a length mask the state is the masked sum; Caffe2 rewrote hidden_t in place there,
        # which leaves the mask's Mul without the input version its gradient needs.
        hidden_t = act(gates_t, "hidden_t" if seq_lengths is None else "hidden_t_unmasked")
        if seq_lengths is not None:
            # Rows whose sequence ended keep their state (or drop it); the step runs on the CPU, so
            # Caffe2's CopyFromCPUInput of the timestep is not needed.
            valid = model.net.Cast(model.net.GT([seq_lengths, timestep], "valid_b", broadcast=1), "valid",
                                   to="float")
            invalid = model.net.Cast(model.net.LE([seq_lengths, timestep], "invalid_b", broadcast=1),
                                     "invalid", to="float")
            # The masks are not differentiable (a bool Cast has no gradient).
            valid, invalid = model.net.StopGradient(valid, valid), model.net.StopGradient(invalid, invalid)
            hidden_valid = model.net.Mul([hidden_t, valid], "hidden_valid", broadcast=1, axis=1)
            if self.drop_states:
                hidden_t = model.net.Copy(hidden_valid, "hidden_t")
            else:
                hidden_invalid = model.net.Mul([hidden_t_prev, invalid], "hidden_invalid", broadcast=1, axis=1)
                hidden_t = model.net.Add([hidden_valid, hidden_invalid], "hidden_t")
        return (hidden_t,)

    def prepare_input(self, model, input_blob):
        return brew.fc(model, input_blob, self.scope("i2h"), dim_in=self.input_size, dim_out=self.hidden_size,
                       axis=2)

    def get_state_names(self):
        return (self.scope("hidden_t"),)

    def get_output_dim(self):
        return self.hidden_size


class LSTMCell(RNNCell):
    """The standard LSTM: gates = W_i x_t + b_i + W_h h_{t-1} + b_h, then LSTMUnit."""

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float, memory_optimization: bool,
                 drop_states: bool = False, initializer: Any = None, **kwargs: Any):
        super().__init__(initializer=initializer, **kwargs)
        self.initializer = initializer or LSTMInitializer(hidden_size=hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.forget_bias = float(forget_bias)
        self.memory_optimization = memory_optimization
        self.drop_states = drop_states
        self.gates_size = 4 * self.hidden_size

    def _gates_input(self, model, hidden_t_prev, extra_inputs, name: str) -> tuple[Any, int]:
        if extra_inputs is None:
            return hidden_t_prev, self.hidden_size
        blobs, sizes = zip(*extra_inputs)
        concat = brew.concat(model, [hidden_t_prev] + list(blobs), name, axis=2)
        return concat, self.hidden_size + sum(sizes)

    def _lstm_unit(self, model, hidden_t_prev, cell_t_prev, gates_t, seq_lengths, timestep, names):
        inputs = [hidden_t_prev, cell_t_prev, gates_t] + ([seq_lengths] if seq_lengths is not None else []) + \
            [timestep]
        return model.net.LSTMUnit(inputs, names, forget_bias=self.forget_bias, drop_states=self.drop_states,
                                  sequence_lengths=seq_lengths is not None)

    def apply_override(self, model, input_t, seq_lengths, states, timestep, extra_inputs=None):
        hidden_t_prev, cell_t_prev = states
        fc_input, fc_input_dim = self._gates_input(model, hidden_t_prev, extra_inputs, "gates_concatenated_input_t")
        gates_t = brew.fc(model, fc_input, "gates_t", dim_in=fc_input_dim, dim_out=self.gates_size, axis=2)
        brew.sum(model, [gates_t, input_t], gates_t)
        hidden_t, cell_t = self._lstm_unit(model, hidden_t_prev, cell_t_prev, gates_t, seq_lengths, timestep,
                                           ["hidden_state", "cell_state"])
        model.net.AddExternalOutputs(hidden_t, cell_t)
        if self.memory_optimization:
            self.recompute_blobs = [gates_t]
        return hidden_t, cell_t

    def get_input_params(self) -> dict:
        return {"weights": self.scope("i2h") + "_w", "biases": self.scope("i2h") + "_b"}

    def get_recurrent_params(self) -> dict:
        return {"weights": self.scope("gates_t") + "_w", "biases": self.scope("gates_t") + "_b"}

    def prepare_input(self, model, input_blob):
        return brew.fc(model, input_blob, self.scope("i2h"), dim_in=self.input_size, dim_out=self.gates_size,
                       axis=2)

    def get_state_names_override(self):
        return ["hidden_t", "cell_t"]

    def get_output_dim(self):
        return self.hidden_size


class MILSTMCell(LSTMCell):
    """Multiplicative-integration LSTM (Wu et al. 2016): gates = alpha * Wx * Uh + beta_h * Uh +
    beta_i * Wx + b instead of Wx + Uh + b."""

    def _apply(self, model, input_t, seq_lengths, states, timestep, extra_inputs=None):
        hidden_t_prev, cell_t_prev = states
        fc_input, fc_input_dim = self._gates_input(model, hidden_t_prev, extra_inputs,
                                                   self.scope("gates_concatenated_input_t"))
        prev_t = brew.fc(model, fc_input, self.scope("prev_t"), dim_in=fc_input_dim, dim_out=self.gates_size,
                         axis=2)

        def param(name: str, value: float):
            return model.create_param(self.scope(name), shape=[self.gates_size],
                                      initializer=Initializer("ConstantFill", value=value))
        alpha, beta_h, beta_i, b = param("alpha", 1.0), param("beta1", 1.0), param("beta2", 1.0), param("b", 0.0)
        # (alpha * x + beta_h) * Uh + (beta_i * x + b), x = the projected input [1, N, 4H]
        alpha_x_beta_h = model.net.ElementwiseLinear([input_t, alpha, beta_h],
                                                     self.scope("alpha_by_input_t_plus_beta_h"), axis=2)
        by_prev = model.net.Mul([alpha_x_beta_h, prev_t], self.scope("alpha_by_input_t_plus_beta_h_by_prev_t"))
        beta_i_x_b = model.net.ElementwiseLinear([input_t, beta_i, b], self.scope("beta_i_by_input_t_plus_b"),
                                                 axis=2)
        gates_t = brew.sum(model, [by_prev, beta_i_x_b], self.scope("gates_t"))
        hidden_t, cell_t = self._lstm_unit(model, hidden_t_prev, cell_t_prev, gates_t, seq_lengths, timestep,
                                           [self.scope("hidden_t_intermediate"), self.scope("cell_t")])
        model.net.AddExternalOutputs(cell_t, hidden_t)
        if self.memory_optimization:
            self.recompute_blobs = [gates_t]
        return hidden_t, cell_t


class DropoutCell(RNNCell):
    """Wraps a cell, applying dropout to its output (not to the recurrent connection)."""

    def __init__(self, internal_cell: RNNCell, dropout_ratio: float | None = None, use_cudnn: bool = False,
                 **kwargs: Any):
        self.internal_cell = internal_cell
        self.dropout_ratio = dropout_ratio
        if "is_test" not in kwargs:
            raise ValueError("Argument 'is_test' is required")
        self.is_test = kwargs.pop("is_test")
        self.use_cudnn = use_cudnn
        super().__init__(**kwargs)
        self.prepare_input = internal_cell.prepare_input
        self.get_output_state_index = internal_cell.get_output_state_index
        self.get_state_names = internal_cell.get_state_names
        self.get_output_dim = internal_cell.get_output_dim
        self.mask = 0

    def _apply(self, model, input_t, seq_lengths, states, timestep, extra_inputs=None):
        return self.internal_cell._apply(model, input_t, seq_lengths, states, timestep, extra_inputs)

    def _prepare_output(self, model, states):
        return self._apply_dropout(model, self.internal_cell._prepare_output(model, states))

    def _prepare_output_sequence(self, model, state_outputs):
        return self._apply_dropout(model, self.internal_cell._prepare_output_sequence(model, state_outputs))

    def _apply_dropout(self, model, output):
        if self.dropout_ratio and not self.forward_only:
            with NameScope(self.name or ""):
                output = brew.dropout(model, output, str(output) + f"_with_dropout_mask{self.mask}",
                                      ratio=float(self.dropout_ratio), is_test=self.is_test,
                                      use_cudnn=self.use_cudnn)
                self.mask += 1
        return output


class MultiRNNCellInitializer:
    def __init__(self, cells: Sequence[RNNCell]):
        self.cells = cells

    def create_states(self, model: ModelHelper) -> list:
        states = []
        for i, cell in enumerate(self.cells):
            if cell.initializer is None:
                raise ValueError("Either initial states or initializer have to be set")
            with NameScope(f"layer_{i}"), NameScope(cell.name):
                states.extend(cell.initializer.create_states(model))
        return states


class MultiRNNCell(RNNCell):
    """Layers of cells: each layer's output is the next one's input (``residual_output_layers``
    adds a layer's input to its output). The cells' states follow one another."""

    def __init__(self, cells: Sequence[RNNCell], residual_output_layers: Sequence[int] | None = None,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.cells = list(cells)
        self.residual_output_layers = list(residual_output_layers or [])
        output_index_per_layer, base_index = [], 0
        for cell in self.cells:
            output_index_per_layer.append(base_index + cell.get_output_state_index())
            base_index += len(cell.get_state_names())
        self.output_connected_layers: list[int] = []
        self.output_indices: list[int] = []
        for i in range(len(self.cells) - 1):
            if (i + 1) in self.residual_output_layers:
                self.output_connected_layers.append(i)
                self.output_indices.append(output_index_per_layer[i])
            else:
                self.output_connected_layers, self.output_indices = [], []
        self.output_connected_layers.append(len(self.cells) - 1)
        self.output_indices.append(output_index_per_layer[-1])
        self.state_names: list[str] = []
        for i, cell in enumerate(self.cells):
            self.state_names.extend(map(self.layer_scoper(i), cell.get_state_names()))
        self.initializer = MultiRNNCellInitializer(self.cells)

    def layer_scoper(self, layer_id: int):
        def helper(name: str) -> str:
            return f"{self.name}/layer_{layer_id}/{name}"
        return helper

    def prepare_input(self, model, input_blob):
        return self.cells[0].prepare_input(model, input_blob)

    def _apply(self, model, input_t, seq_lengths, states, timestep, extra_inputs=None):
        input_t, seq_lengths, states, timestep, extra_inputs = self._rectify_all(
            input_t, seq_lengths, states, timestep, extra_inputs)
        per_layer = [len(cell.get_state_names()) for cell in self.cells]
        if len(states) != sum(per_layer):
            raise ValueError(f"{len(states)} states for layers holding {sum(per_layer)}")
        next_states, index, layer_input = [], 0, input_t
        for i, cell in enumerate(self.cells):
            with NameScope(self.name), NameScope(f"layer_{i}"):
                layer_states = states[index:index + per_layer[i]]
                index += per_layer[i]
                prepared = cell.prepare_input(model, layer_input) if i > 0 else layer_input
                layer_next = cell._apply(model, prepared, seq_lengths, layer_states, timestep,
                                         extra_inputs=None if i > 0 else extra_inputs)
                if i != len(self.cells) - 1:
                    layer_output = cell._prepare_output(model, layer_next)
                    if i > 0 and i in self.residual_output_layers:
                        layer_input = brew.sum(model, [layer_output, layer_input],
                                               self.scope(f"residual_output_{i}"))
                    else:
                        layer_input = layer_output
                next_states.extend(layer_next)
        return next_states

    def _rectify_all(self, input_t, seq_lengths, states, timestep, extra_inputs):
        input_t, seq_lengths, timestep = _RectifyNames([input_t, seq_lengths, timestep])
        if extra_inputs:
            names, sizes = zip(*extra_inputs)
            extra_inputs = list(zip(_RectifyNames(names), sizes))
        return input_t, seq_lengths, _RectifyNames(states), timestep, extra_inputs

    def get_state_names(self):
        return self.state_names

    def get_output_state_index(self):
        return sum(len(c.get_state_names()) for c in self.cells[:-1]) + self.cells[-1].get_output_state_index()

    def _connected(self, model, states, per_state: int, prepare, name: str):
        outputs, index = [], 0
        for i, cell in enumerate(self.cells):
            n = per_state * len(cell.get_state_names())
            if i in self.output_connected_layers:
                outputs.append(prepare(cell)(model, states[index:index + n]))
            index += n
        return brew.sum(model, outputs, self.scope(name)) if len(outputs) > 1 else outputs[0]

    def _prepare_output(self, model, states):
        return self._connected(model, states, 1, lambda c: c._prepare_output, "residual_output")

    def _prepare_output_sequence(self, model, states):
        return self._connected(model, states, 2, lambda c: c._prepare_output_sequence,
                               "residual_output_sequence")


class AttentionCell(RNNCell):
    """A decoder cell with attention over encoder outputs: each step feeds the previous context to
    the decoder cell, then computes a new context from the decoder's output (``attention.py``).
    Its states are the decoder's (output renamed ``hidden_t_external``) plus the context."""

    def __init__(self, encoder_output_dim: int, encoder_outputs: Any, encoder_lengths: Any, decoder_cell: RNNCell,
                 decoder_state_dim: int, attention_type: int, weighted_encoder_outputs: Any,
                 attention_memory_optimization: bool, **kwargs: Any):
        super().__init__(**kwargs)
        if attention_type not in (AttentionType.Regular, AttentionType.Recurrent, AttentionType.Dot):
            raise ValueError(f"attention_type {attention_type}: netjit has Regular, Recurrent and Dot attention "
                             f"(SoftCoverage needs ops it does not have)")
        self.encoder_output_dim = encoder_output_dim
        self.encoder_outputs = encoder_outputs
        self.encoder_lengths = encoder_lengths
        self.decoder_cell = decoder_cell
        self.decoder_state_dim = decoder_state_dim
        self.weighted_encoder_outputs = weighted_encoder_outputs
        self.encoder_outputs_transposed = None
        self.attention_type = attention_type
        self.attention_memory_optimization = attention_memory_optimization

    def _apply(self, model, input_t, seq_lengths, states, timestep, extra_inputs=None):
        if extra_inputs is not None:
            raise ValueError("AttentionCell takes no extra_inputs: the context is its own extra input")
        decoder_prev_states, context_prev = states[:-1], states[-1]
        decoder_states = self.decoder_cell._apply(model, input_t, seq_lengths, decoder_prev_states, timestep,
                                                  extra_inputs=[(context_prev, self.encoder_output_dim)])
        self.hidden_t_intermediate = self.decoder_cell._prepare_output(model, decoder_states)
        common = dict(model=model, encoder_output_dim=self.encoder_output_dim,
                      encoder_outputs_transposed=self.encoder_outputs_transposed,
                      decoder_hidden_state_t=self.hidden_t_intermediate,
                      decoder_hidden_state_dim=self.decoder_state_dim, scope=self.name,
                      encoder_lengths=self.encoder_lengths)
        if self.attention_type == AttentionType.Recurrent:
            context, self.attention_weights_3d, blobs = apply_recurrent_attention(
                weighted_encoder_outputs=self.weighted_encoder_outputs,
                attention_weighted_encoder_context_t_prev=context_prev, **common)
        elif self.attention_type == AttentionType.Regular:
            context, self.attention_weights_3d, blobs = apply_regular_attention(
                weighted_encoder_outputs=self.weighted_encoder_outputs, **common)
        else:
            context, self.attention_weights_3d, blobs = apply_dot_attention(**common)
        if self.attention_memory_optimization:
            self.recompute_blobs.extend(blobs)
        output = list(decoder_states) + [context]
        k = self.decoder_cell.get_output_state_index()
        output[k] = model.net.Copy(output[k], self.scope("hidden_t_external"))
        model.net.AddExternalOutputs(*output)
        return output

    def get_attention_weights(self) -> Any:
        return self.attention_weights_3d          # [N, T_enc, 1]

    def prepare_input(self, model, input_blob):
        if self.encoder_outputs_transposed is None:
            self.encoder_outputs_transposed = brew.transpose(model, self.encoder_outputs,
                                                             self.scope("encoder_outputs_transposed"), axes=[1, 2, 0])
        if self.weighted_encoder_outputs is None and self.attention_type != AttentionType.Dot:
            self.weighted_encoder_outputs = brew.fc(model, self.encoder_outputs, self.scope("weighted_encoder_outputs"),
                                                    dim_in=self.encoder_output_dim, dim_out=self.encoder_output_dim,
                                                    axis=2)
        return self.decoder_cell.prepare_input(model, input_blob)

    def get_state_names(self):
        names = list(self.decoder_cell.get_state_names())
        names[self.get_output_state_index()] = self.scope("hidden_t_external")
        return names + [self.scope("attention_weighted_encoder_context_t")]

    def get_output_dim(self):
        return self.decoder_state_dim + self.encoder_output_dim

    def get_output_state_index(self):
        return self.decoder_cell.get_output_state_index()

    def _prepare_output(self, model, states):
        with NameScope(self.name or ""):
            return brew.concat(model, [self.hidden_t_intermediate, states[-1]], "states_and_context_combination",
                               axis=2)

    def _prepare_output_sequence(self, model, state_outputs):
        decoder_output = self.decoder_cell._prepare_output_sequence(model, state_outputs[:-2])
        context_index = 2 * (len(self.get_state_names()) - 1)
        with NameScope(self.name or ""):
            return brew.concat(model, [decoder_output, state_outputs[context_index]], "states_and_context_combination",
                               axis=2)


class LSTMWithAttentionCell(AttentionCell):
    def __init__(self, encoder_output_dim, encoder_outputs, encoder_lengths, decoder_input_dim, decoder_state_dim,
                 name, attention_type, weighted_encoder_outputs, forget_bias, lstm_memory_optimization,
                 attention_memory_optimization, forward_only=False):
        decoder_cell = LSTMCell(input_size=decoder_input_dim, hidden_size=decoder_state_dim, forget_bias=forget_bias,
                                memory_optimization=lstm_memory_optimization, name=f"{name}/decoder",
                                forward_only=False, drop_states=False)
        super().__init__(encoder_output_dim=encoder_output_dim, encoder_outputs=encoder_outputs,
                         encoder_lengths=encoder_lengths, decoder_cell=decoder_cell,
                         decoder_state_dim=decoder_state_dim, name=name, attention_type=attention_type,
                         weighted_encoder_outputs=weighted_encoder_outputs,
                         attention_memory_optimization=attention_memory_optimization, forward_only=forward_only)


class MILSTMWithAttentionCell(AttentionCell):
    def __init__(self, encoder_output_dim, encoder_outputs, decoder_input_dim, decoder_state_dim, name,
                 attention_type, weighted_encoder_outputs, forget_bias, lstm_memory_optimization,
                 attention_memory_optimization, forward_only=False):
        decoder_cell = MILSTMCell(input_size=decoder_input_dim, hidden_size=decoder_state_dim,
                                  forget_bias=forget_bias, memory_optimization=lstm_memory_optimization,
                                  name=f"{name}/decoder", forward_only=False, drop_states=False)
        super().__init__(encoder_output_dim=encoder_output_dim, encoder_outputs=encoder_outputs,
                         encoder_lengths=None, decoder_cell=decoder_cell, decoder_state_dim=decoder_state_dim,
                         name=name, attention_type=attention_type, weighted_encoder_outputs=weighted_encoder_outputs,
                         attention_memory_optimization=attention_memory_optimization, forward_only=forward_only)


def _LSTM(cell_class: type, model: ModelHelper, input_blob: Any, seq_lengths: Any, initial_states: Any,
          dim_in: int, dim_out: int | Sequence[int], scope: str | None = None, outputs_with_grads: Sequence[int] = (0,),
          return_params: bool = False, memory_optimization: bool = False, forget_bias: float = 0.0,
          forward_only: bool = False, drop_states: bool = False, return_last_layer_only: bool = True,
          **cell_kwargs: Any) -> tuple:
    """Add a (multi-layer when ``dim_out`` is a list) recurrent network of ``cell_class`` cells.

    ``input_blob``: [T, N, dim_in]; ``seq_lengths``: [N] int32 (or None: every row runs T steps);
    ``initial_states``: 2 blobs per layer for LSTMs (hidden, cell), or None for zero parameters.
    Returns (hidden_all, hidden_last, cell_all, cell_last) of the last layer (all layers' with
    ``return_last_layer_only=False``), plus the parameter names with ``return_params``.
    """
    dim_out = list(dim_out) if isinstance(dim_out, (list, tuple)) else [dim_out]
    num_layers = len(dim_out)
    cells = [cell_class(input_size=dim_in if i == 0 else dim_out[i - 1], hidden_size=dim_out[i],
                        forget_bias=forget_bias, memory_optimization=memory_optimization,
                        name=scope if num_layers == 1 else None, forward_only=forward_only,
                        drop_states=drop_states, **cell_kwargs) for i in range(num_layers)]
    cell = MultiRNNCell(cells, name=scope, forward_only=forward_only) if num_layers > 1 else cells[0]
    # outputs_with_grads counts the last layer's outputs: (h_all, h_last, c_all, c_last).
    outputs_with_grads = [4 * (num_layers - 1) + i for i in outputs_with_grads]
    _, result = cell.apply_over_sequence(model=model, inputs=input_blob, seq_lengths=seq_lengths,
                                         initial_states=initial_states, outputs_with_grads=outputs_with_grads)
    if return_last_layer_only:
        result = result[4 * (num_layers - 1):]
    if return_params:
        result = list(result) + [{"input": cell.get_input_params(), "recurrent": cell.get_recurrent_params()}]
    return tuple(result)


LSTM = functools.partial(_LSTM, LSTMCell)
BasicRNN = functools.partial(_LSTM, BasicRNNCell)
MILSTM = functools.partial(_LSTM, MILSTMCell)


def LSTMWithAttention(model: ModelHelper, decoder_inputs: Any, decoder_input_lengths: Any,
                      initial_decoder_hidden_state: Any, initial_decoder_cell_state: Any,
                      initial_attention_weighted_encoder_context: Any, encoder_output_dim: int, encoder_outputs: Any,
                      encoder_lengths: Any, decoder_input_dim: int, decoder_state_dim: int, scope: str,
                      attention_type: int = 0, outputs_with_grads: Sequence[int] = (0, 4),
                      weighted_encoder_outputs: Any = None, lstm_memory_optimization: bool = False,
                      attention_memory_optimization: bool = False, forget_bias: float = 0.0,
                      forward_only: bool = False) -> tuple:
    """An LSTM decoder over ``decoder_inputs`` [T, N, D] attending to ``encoder_outputs`` [T_enc, N, D_enc].
    Returns the states (hidden_all, hidden_last, cell_all, cell_last, context_all, context_last)."""
    cell = LSTMWithAttentionCell(encoder_output_dim=encoder_output_dim, encoder_outputs=encoder_outputs,
                                 encoder_lengths=encoder_lengths, decoder_input_dim=decoder_input_dim,
                                 decoder_state_dim=decoder_state_dim, name=scope, attention_type=attention_type,
                                 weighted_encoder_outputs=weighted_encoder_outputs, forget_bias=forget_bias,
                                 lstm_memory_optimization=lstm_memory_optimization,
                                 attention_memory_optimization=attention_memory_optimization,
                                 forward_only=forward_only)
    initial_states = [initial_decoder_hidden_state, initial_decoder_cell_state,
                      initial_attention_weighted_encoder_context]
    _, result = cell.apply_over_sequence(model=model, inputs=decoder_inputs, seq_lengths=decoder_input_lengths,
                                         initial_states=initial_states, outputs_with_grads=outputs_with_grads)
    return result


def GetLSTMParamNames() -> dict:
    return {"weights": ["input_gate_w", "forget_gate_w", "output_gate_w", "cell_w"],
            "biases": ["input_gate_b", "forget_gate_b", "output_gate_b", "cell_b"]}


def InitFromLSTMParams(lstm_pblobs: dict, param_values: dict) -> None:
    """Feed an LSTM's packed weight/bias blobs from per-gate arrays (``GetLSTMParamNames`` order)."""
    names = GetLSTMParamNames()
    for input_type, values in param_values.items():
        wmat = np.concatenate([np.asarray(values[w]).ravel() for w in names["weights"]])
        bm = np.concatenate([np.asarray(values[b]).ravel() for b in names["biases"]])
        weights_blob, bias_blob = lstm_pblobs[input_type]["weights"], lstm_pblobs[input_type]["biases"]
        cur_w, cur_b = workspace.FetchBlob(weights_blob), workspace.FetchBlob(bias_blob)
        workspace.FeedBlob(weights_blob, wmat.reshape(cur_w.shape).astype(np.float32))
        workspace.FeedBlob(bias_blob, bm.reshape(cur_b.shape).astype(np.float32))


__all__ = ["RNNCell", "LSTMCell", "MILSTMCell", "BasicRNNCell", "DropoutCell", "MultiRNNCell", "LSTMInitializer",
           "MultiRNNCellInitializer", "AttentionCell", "LSTMWithAttentionCell", "MILSTMWithAttentionCell",
           "AttentionType", "LSTM", "MILSTM", "BasicRNN", "LSTMWithAttention", "GetLSTMParamNames",
           "InitFromLSTMParams"]
