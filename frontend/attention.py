"""``caffe2.python.attention``: attention steps for decoder cells (``rnn_cell.AttentionCell``).

Each ``apply_*_attention`` adds, to a step net, the ops that turn the decoder's hidden state
``[1, N, D_dec]`` and the encoder's outputs into a context vector ``[1, N, D_enc]``:
logits over the encoder steps, a softmax over them (``SequenceMask`` hides the steps past each
row's ``encoder_lengths`` when given), and the weighted sum of the encoder outputs. Encoder outputs
come transposed, ``[N, D_enc, T_enc]``; ``weighted_encoder_outputs`` is their projection
``[T_enc, N, D_enc]``. Each returns (context, attention weights [N, T_enc, 1], blobs to recompute).

>>> AttentionType.Regular, AttentionType.Dot
(0, 2)
"""
from __future__ import annotations

from typing import Any

from netjit import brew


class AttentionType:
    Regular, Recurrent, Dot, SoftCoverage = tuple(range(4))


def s(scope: Any, name: str) -> str:
    # The step net's blobs are named by hand: they must match across the step and outer nets.
    return f"{scope}/{name}"


def _calc_weighted_context(model: Any, encoder_outputs_transposed: Any, encoder_output_dim: int,
                           attention_weights_3d: Any, scope: Any) -> Any:
    """c = sum_j w_j s_j as [N, D_enc, T_enc] x [N, T_enc, 1], reshaped to [1, N, D_enc]."""
    context = model.net.BatchMatMul([encoder_outputs_transposed, attention_weights_3d],
                                    s(scope, "attention_weighted_encoder_context"))
    context, _ = model.net.Reshape(context, [context, s(scope, "attention_weighted_encoder_context_old_shape")],
                                   shape=[1, -1, encoder_output_dim])
    return context


def _calc_attention_weights(model: Any, attention_logits_transposed: Any, scope: Any,
                            encoder_lengths: Any = None) -> Any:
    """Softmax over the encoder steps of [N, T_enc, 1] logits."""
    if encoder_lengths is not None:
        attention_logits_transposed = model.net.SequenceMask([attention_logits_transposed, encoder_lengths],
                                                             ["masked_attention_logits"], mode="sequence")
    return brew.softmax(model, attention_logits_transposed, s(scope, "attention_weights_3d"), engine="CUDNN",
                        axis=1)


def _calc_attention_logits_from_sum_match(model: Any, decoder_hidden_encoder_outputs_sum: Any,
                                          encoder_output_dim: int, scope: Any) -> Any:
    """e_j = v . tanh(sum_j): [T_enc, N, D_enc] -> [N, T_enc, 1]."""
    summed = model.net.Tanh(decoder_hidden_encoder_outputs_sum, decoder_hidden_encoder_outputs_sum)
    logits = brew.fc(model, summed, s(scope, "attention_logits"), dim_in=encoder_output_dim, dim_out=1, axis=2,
                     freeze_bias=True)
    return brew.transpose(model, logits, s(scope, "attention_logits_transposed"), axes=[1, 0, 2])


def _apply_fc_weight_for_sum_match(model: Any, input: Any, dim_in: int, dim_out: int, scope: Any,  # noqa: A002
                                   name: str) -> Any:
    """An FC over the last axis of a [1, N, dim_in] step blob, squeezed to [N, dim_out]."""
    output = brew.fc(model, input, s(scope, name), dim_in=dim_in, dim_out=dim_out, axis=2)
    return model.net.Squeeze(output, output, dims=[0])


def apply_regular_attention(model: Any, encoder_output_dim: int, encoder_outputs_transposed: Any,
                            weighted_encoder_outputs: Any, decoder_hidden_state_t: Any, decoder_hidden_state_dim: int,
                            scope: Any, encoder_lengths: Any = None) -> tuple:
    """Additive attention (Bahdanau et al.): e_j = v . tanh(W s_j + U h)."""
    weighted_decoder = _apply_fc_weight_for_sum_match(model, decoder_hidden_state_t, decoder_hidden_state_dim,
                                                      encoder_output_dim, scope, "weighted_decoder_hidden_state")
    summed = model.net.Add([weighted_encoder_outputs, weighted_decoder], s(scope, "decoder_hidden_encoder_outputs_sum"),
                           broadcast=1)
    logits = _calc_attention_logits_from_sum_match(model, summed, encoder_output_dim, scope)
    weights = _calc_attention_weights(model, logits, scope, encoder_lengths)
    context = _calc_weighted_context(model, encoder_outputs_transposed, encoder_output_dim, weights, scope)
    return context, weights, [summed]


def apply_recurrent_attention(model: Any, encoder_output_dim: int, encoder_outputs_transposed: Any,
                              weighted_encoder_outputs: Any, decoder_hidden_state_t: Any,
                              decoder_hidden_state_dim: int, attention_weighted_encoder_context_t_prev: Any,
                              scope: Any, encoder_lengths: Any = None) -> tuple:
    """Regular attention that also sees the previous context (RecAtt, arXiv:1601.03317 §4.1)."""
    weighted_prev = _apply_fc_weight_for_sum_match(model, attention_weighted_encoder_context_t_prev,
                                                   encoder_output_dim, encoder_output_dim, scope,
                                                   "weighted_prev_attention_context")
    weighted_decoder = _apply_fc_weight_for_sum_match(model, decoder_hidden_state_t, decoder_hidden_state_dim,
                                                      encoder_output_dim, scope, "weighted_decoder_hidden_state")
    tmp = model.net.Add([weighted_prev, weighted_decoder], s(scope, "decoder_hidden_encoder_outputs_sum_tmp"))
    summed = model.net.Add([weighted_encoder_outputs, tmp], s(scope, "decoder_hidden_encoder_outputs_sum"),
                           broadcast=1)
    logits = _calc_attention_logits_from_sum_match(model, summed, encoder_output_dim, scope)
    weights = _calc_attention_weights(model, logits, scope, encoder_lengths)
    context = _calc_weighted_context(model, encoder_outputs_transposed, encoder_output_dim, weights, scope)
    return context, weights, [summed]


def apply_dot_attention(model: Any, encoder_output_dim: int, encoder_outputs_transposed: Any,
                        decoder_hidden_state_t: Any, decoder_hidden_state_dim: int, scope: Any,
                        encoder_lengths: Any = None) -> tuple:
    """Multiplicative attention: e_j = s_j . h (h projected to D_enc first when the sizes differ)."""
    if decoder_hidden_state_dim != encoder_output_dim:
        weighted = brew.fc(model, decoder_hidden_state_t, s(scope, "weighted_decoder_hidden_state"),
                           dim_in=decoder_hidden_state_dim, dim_out=encoder_output_dim, axis=2)
    else:
        weighted = decoder_hidden_state_t
    squeezed = model.net.Squeeze(weighted, s(scope, "squeezed_weighted_decoder_hidden_state"), dims=[0])
    expanded = model.net.ExpandDims(squeezed, squeezed, dims=[2])
    logits = model.net.BatchMatMul([encoder_outputs_transposed, expanded], s(scope, "attention_logits"), trans_a=1)
    weights = _calc_attention_weights(model, logits, scope, encoder_lengths)
    context = _calc_weighted_context(model, encoder_outputs_transposed, encoder_output_dim, weights, scope)
    return context, weights, []


__all__ = ["AttentionType", "apply_regular_attention", "apply_recurrent_attention", "apply_dot_attention"]
