"""rnn_cell.LSTMWithAttention with attention.py's Regular, Recurrent and Dot attention: the forward
pass against numpy, the gradient against finite differences, and the compiled executor against the
reference one."""
from __future__ import annotations

import numpy as np
import pytest

from netjit import model_helper, rnn_cell, workspace
from netjit.attention import AttentionType
from tests.ops.test_recurrent_ops import lstm_rows

T, N, DIN, H, TE, DE = 3, 2, 4, 5, 4, 6


def build(attention_type: int, dtype=np.float32, seed: int = 0, masked: bool = False):
    model = model_helper.ModelHelper(name=f"att{attention_type}")
    res = rnn_cell.LSTMWithAttention(model, "dec_in", "dec_len", "h0", "c0", "ctx0", DE, "enc_out",
                                     "enc_len" if masked else None, DIN, H, scope="A", attention_type=attention_type)
    cat, _ = model.net.Concat([res[0], res[4]], ["cat", "cat_dims"], axis=2)
    model.net.AddExternalInput("d_cat")
    model.AddGradientOperators({cat: "d_cat"})
    for i, op in enumerate(model.param_init_net.Proto().op):
        op.device_option.random_seed = seed * 100 + i
    workspace.RunNetOnce(model.param_init_net)
    rng = np.random.default_rng(seed)
    feeds = {"dec_in": rng.standard_normal((T, N, DIN)), "enc_out": rng.standard_normal((TE, N, DE)),
             "h0": rng.standard_normal((1, N, H)) * 0.3, "c0": rng.standard_normal((1, N, H)) * 0.3,
             "ctx0": rng.standard_normal((1, N, DE)) * 0.3, "d_cat": rng.standard_normal((T, N, H + DE))}
    feeds.update({str(p): workspace.FetchBlob(p) for p in model.params})
    # freeze_bias keeps the attention logits' bias out of model.params; it is an input all the same.
    if attention_type != AttentionType.Dot:
        feeds["A/attention_logits_b"] = workspace.FetchBlob("A/attention_logits_b")
    feeds = {k: np.asarray(v, dtype) for k, v in feeds.items()}
    feeds["dec_len"] = np.array([3, 2], np.int32)
    if masked:
        feeds["enc_len"] = np.array([TE, 2], np.int32)
    return model, res, feeds


def fc(x, p, feeds):
    return x @ feeds[p + "_w"].T + feeds[p + "_b"]


def softmax_axis1(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def numpy_decoder(attention_type, feeds):
    """The attention decoder step by step in numpy: (hidden_all, context_all)."""
    enc = feeds["enc_out"].astype(np.float64)
    enc_t = enc.transpose(1, 2, 0)                                       # [N, DE, TE]
    proj = fc(feeds["dec_in"], "A/decoder/i2h", feeds)
    h, c, ctx = feeds["h0"], feeds["c0"], feeds["ctx0"]
    hs, ctxs = [], []
    for t in range(T):
        gates = fc(np.concatenate([h, ctx], axis=2), "A/decoder/gates_t", feeds) + proj[t:t + 1]
        h, c = lstm_rows(h, c, gates, feeds["dec_len"], t)
        if attention_type == AttentionType.Dot:
            hd = fc(h, "A/weighted_decoder_hidden_state", feeds) if H != DE else h   # projected to DE
            logits = np.einsum("ndt,nd->nt", enc_t, hd[0])[..., None]                # [N, TE, 1]
        else:
            summed = fc(enc, "A/weighted_encoder_outputs", feeds) + fc(h, "A/weighted_decoder_hidden_state", feeds)[0]
            if attention_type == AttentionType.Recurrent:
                summed = summed + fc(ctx, "A/weighted_prev_attention_context", feeds)[0]
            logits = fc(np.tanh(summed), "A/attention_logits", feeds).transpose(1, 0, 2)
        if "enc_len" in feeds:      # encoder steps past each row's length get no attention
            logits = np.where(np.arange(TE)[None, :, None] >= feeds["enc_len"][:, None, None], -np.inf, logits)
        weights = softmax_axis1(logits)
        ctx = (enc_t @ weights).reshape(1, N, DE)
        hs.append(h[0])
        ctxs.append(ctx[0])
    return np.stack(hs), np.stack(ctxs)


def run(net, feeds):
    for k, v in feeds.items():
        workspace.FeedBlob(k, v)
    workspace.RunNetOnce(net)


@pytest.mark.parametrize("attention_type,masked", [(AttentionType.Regular, False), (AttentionType.Recurrent, False),
                                                   (AttentionType.Dot, False), (AttentionType.Regular, True)])
def test_attention_decoder_forward_and_executors_agree(attention_type, masked, monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", "reference")
    model, res, feeds = build(attention_type, masked=masked)
    run(model.net, feeds)
    want_h, want_ctx = numpy_decoder(attention_type, feeds)
    np.testing.assert_allclose(workspace.FetchBlob(res[0]), want_h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(workspace.FetchBlob(res[4]), want_ctx, rtol=1e-4, atol=1e-5)
    grads = {str(p): workspace.FetchBlob(model.param_to_grad[p]) for p in model.params}
    monkeypatch.setenv("NETJIT_EXECUTOR", "compiled")
    workspace.ResetWorkspace()
    run(model.net, feeds)
    np.testing.assert_allclose(workspace.FetchBlob(res[0]), want_h, rtol=1e-4, atol=1e-5)
    for name, want in grads.items():
        np.testing.assert_allclose(workspace.FetchBlob(name + "_grad"), want, rtol=1e-3, atol=1e-5, err_msg=name)


def test_attention_decoder_gradient_matches_finite_differences(monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", "reference")
    model, res, feeds = build(AttentionType.Regular, np.float64, seed=1)
    first_grad = next(i for i, op in enumerate(model.net.Proto().op) if op.is_gradient_op)
    fwd = model.net.Clone("att_forward", op_id_mask=range(first_grad))
    run(model.net, feeds)
    names = ["A/weighted_encoder_outputs_w", "A/attention_logits_w", "A/decoder/gates_t_w", "enc_out", "ctx0", "h0"]
    analytic = {n: workspace.FetchBlob(n + "_grad") for n in names}

    def loss(name, value):
        run(fwd, dict(feeds, **{name: value}))
        cat = np.concatenate([workspace.FetchBlob(res[0]), workspace.FetchBlob(res[4])], axis=2)
        return float(np.sum(cat * feeds["d_cat"]))

    eps = 1e-6
    for name in names:
        base = feeds[name]
        numeric = np.zeros(base.shape)
        for j in range(base.size):
            plus, minus = base.copy(), base.copy()
            plus.reshape(-1)[j] += eps
            minus.reshape(-1)[j] -= eps
            numeric.reshape(-1)[j] = (loss(name, plus) - loss(name, minus)) / (2 * eps)
        np.testing.assert_allclose(analytic[name], numeric, rtol=1e-5, atol=1e-7, err_msg=name)


def test_soft_coverage_is_refused_with_a_reason():
    model = model_helper.ModelHelper(name="cov")
    with pytest.raises(ValueError, match="SoftCoverage"):
        rnn_cell.LSTMWithAttention(model, "d", None, "h0", "c0", "x0", DE, "enc", None, DIN, H, scope="C",
                                   attention_type=AttentionType.SoftCoverage)
