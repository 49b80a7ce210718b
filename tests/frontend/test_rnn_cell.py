"""rnn_cell: LSTM, MILSTM, BasicRNN and stacked cells build Caffe2's nets and train (the loss
falls), the compiled executor giving the reference executor's numbers; recurrent_net options."""
from __future__ import annotations

import numpy as np
import pytest

from netjit import brew, core, gru_cell, model_helper, recurrent, rnn_cell, workspace
from netjit.compiler.ops.registry import has_op

T, N, D, H, V = 5, 4, 6, 8, 6


def build(cell: str, layers: int = 1, seq_lengths: bool = True):
    """A next-token model: RNN over one-hot inputs -> FC -> softmax loss -> SGD."""
    model = model_helper.ModelHelper(name=f"{cell}_model")
    dim_out = H if layers == 1 else [H] * layers
    seq = "seq" if seq_lengths else None
    if cell == "lstm":
        outs = rnn_cell.LSTM(model, "x", seq, None, D, dim_out, scope="rnn")
    elif cell == "milstm":
        outs = rnn_cell.MILSTM(model, "x", seq, None, D, dim_out, scope="rnn")
    elif cell == "gru":
        outs = gru_cell.GRU(model, "x", seq, None, D, dim_out, scope="rnn")
    else:
        cell_obj = rnn_cell.BasicRNNCell(D, H, forget_bias=0.0, memory_optimization=False, activation="tanh",
                                         name="rnn", initializer=rnn_cell.LSTMInitializer(H))
        h0 = model.param_init_net.ConstantFill([], "h0", shape=[H], value=0.0)
        outs = cell_obj.apply_over_sequence(model, "x", seq, initial_states=[h0])[1]
    logits = brew.fc(model, outs[0], "logits", dim_in=H, dim_out=V, axis=2)
    flat, _ = model.net.Reshape(logits, ["flat", "_old_shape"], shape=[-1, V])
    _, loss = model.net.SoftmaxWithLoss([flat, "labels"], ["probs", "loss"])
    model.AddGradientOperators([loss])
    iteration = brew.iter(model, "iter")
    lr = model.net.LearningRate(iteration, "lr", base_lr=-2.0, policy="fixed")
    one = model.param_init_net.ConstantFill([], "ONE", shape=[1], value=1.0)
    for p in model.params:
        model.net.WeightedSum([p, one, model.param_to_grad[p], lr], p)
    for i, op in enumerate(model.param_init_net.Proto().op):
        op.device_option.random_seed = 100 + i
    return model, outs


def data(seed: int = 0):
    """Sequences whose next token is the current one plus one: learnable by any of the cells."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, size=(T, N))
    x = np.eye(D, dtype=np.float32)[tokens]
    labels = ((tokens + 1) % V).astype(np.int32).reshape(-1)
    return {"x": x, "labels": labels, "seq": np.array([5, 5, 4, 3], np.int32)}


def train(cell: str, executor: str, monkeypatch, steps: int = 12, **kw) -> tuple[list[float], dict]:
    monkeypatch.setenv("NETJIT_EXECUTOR", executor)
    workspace.ResetWorkspace()
    model, _ = build(cell, **kw)
    workspace.RunNetOnce(model.param_init_net)
    for k, v in data().items():
        workspace.FeedBlob(k, v)
    workspace.CreateNet(model.net)
    losses = []
    for _ in range(steps):
        workspace.RunNet(model.net.Name())
        losses.append(float(workspace.FetchBlob("loss")))
    return losses, {str(p): workspace.FetchBlob(p) for p in model.params}


@pytest.mark.parametrize("cell,kw", [("lstm", {}), ("milstm", {}), ("basic", {"seq_lengths": False}), ("gru", {}),
                                     ("lstm", {"layers": 2, "seq_lengths": False})])
def test_cells_train_and_executors_agree(cell, kw, monkeypatch):
    ref_losses, ref_params = train(cell, "reference", monkeypatch, **kw)
    assert ref_losses[-1] < 0.85 * ref_losses[0], ref_losses
    got_losses, got_params = train(cell, "compiled", monkeypatch, **kw)
    np.testing.assert_allclose(got_losses, ref_losses, rtol=2e-4, atol=1e-5)
    for name, want in ref_params.items():
        np.testing.assert_allclose(got_params[name], want, rtol=1e-3, atol=1e-5, err_msg=name)


def test_lstm_builds_caffe2_names_and_params():
    model = model_helper.ModelHelper(name="names")
    h_all, h_last, c_all, c_last, params = rnn_cell.LSTM(model, "x", "seq", ("h0", "c0"), D, H, scope="LSTM",
                                                         return_params=True)
    assert [str(b) for b in (h_all, h_last, c_all, c_last)] == [
        "LSTM/hidden_state_all", "LSTM/hidden_state_last", "LSTM/cell_state_all", "LSTM/cell_state_last"]
    assert params == {"input": {"weights": "LSTM/i2h_w", "biases": "LSTM/i2h_b"},
                      "recurrent": {"weights": "LSTM/gates_t_w", "biases": "LSTM/gates_t_b"}}
    assert sorted(str(p) for p in model.params) == ["LSTM/gates_t_b", "LSTM/gates_t_w", "LSTM/i2h_b", "LSTM/i2h_w"]
    rnn = model.net.Proto().op[-1]
    args = {a.name: a for a in rnn.arg}
    assert rnn.type == "RecurrentNetwork" and list(rnn.input) == ["LSTM/i2h", "h0", "c0", "LSTM/gates_t_w",
                                                                   "LSTM/gates_t_b", "seq"]
    assert [op.type for op in args["step_net"].n.op] == ["FC", "Sum", "LSTMUnit"]
    assert "LSTMUnitGradient" in [op.type for op in args["backward_step_net"].n.op]
    assert list(args["param"].ints) == [3, 4] and list(args["outputs_with_grads"].ints) == [0]
    assert list(args["link_offset"].ints) == [0, 1, 0, 1, 0]


def test_forward_only_has_no_backward_step_net_and_runs(monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", "compiled")
    model = model_helper.ModelHelper(name="fwd")
    h_all, *_ = rnn_cell.LSTM(model, "x", "seq", None, D, H, scope="F", forward_only=True)
    assert "backward_step_net" not in {a.name for a in model.net.Proto().op[-1].arg}
    workspace.RunNetOnce(model.param_init_net)
    for k, v in data().items():
        workspace.FeedBlob(k, v)
    workspace.RunNetOnce(model.net)
    out = workspace.FetchBlob(h_all)
    assert out.shape == (T, N, H) and np.isfinite(out).all()
    # Rows past their length keep their state: row 3 (length 3) is constant from step 3 on.
    np.testing.assert_array_equal(out[3, 3], out[2, 3])


def test_memory_optimization_recomputes_gates_on_backward(monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", "reference")
    model = model_helper.ModelHelper(name="memopt")
    rnn_cell.LSTM(model, "x", "seq", None, D, H, scope="M", memory_optimization=True)
    rnn = model.net.Proto().op[-1]
    args = {a.name: a for a in rnn.arg}
    assert [s.decode() for s in args["recompute_blobs_on_backward"].strings] == ["M/gates_t"]
    assert [op.type for op in args["backward_step_net"].n.op][:2] == ["FC", "Sum"]


def test_recurrent_net_with_a_custom_cell(monkeypatch):
    """recurrent_net on a hand-built step net: h_t = tanh(W h_{t-1} + b + x_t), checked in numpy."""
    monkeypatch.setenv("NETJIT_EXECUTOR", "compiled")
    net, step = core.Net("outer"), core.Net("step")
    x_t, h_prev = step.AddExternalInputs("x_t", "h_prev")
    h = step.Tanh(step.Add([step.FC([h_prev, "W", "b"], "hw", axis=2), x_t], "pre"), "h")
    step.AddExternalOutput(h)
    h_all, h_last = recurrent.recurrent_net(net, step, inputs=[(x_t, "xs")], initial_cell_inputs=[(h_prev, "h0")],
                                            links={h_prev: h}, scope="custom")
    rng = np.random.default_rng(1)
    xs, h0 = rng.standard_normal((3, 2, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    w, b = rng.standard_normal((4, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    for k, v in dict(xs=xs, h0=h0, W=w, b=b).items():
        workspace.FeedBlob(k, v)
    workspace.RunNetOnce(net)
    hcur, want = np.broadcast_to(h0, (2, 4)), []
    for t in range(3):
        hcur = np.tanh(hcur @ w.T + b + xs[t])
        want.append(hcur)
    np.testing.assert_allclose(workspace.FetchBlob(h_all), np.stack(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(workspace.FetchBlob(h_last)[0], want[-1], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not (has_op("GT") and has_op("LE")), reason="BasicRNN's length mask needs the GT/LE ops")
def test_basic_rnn_with_sequence_lengths_keeps_ended_rows(monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", "reference")
    model = model_helper.ModelHelper(name="basic_seq")
    h_all, *_ = rnn_cell.BasicRNN(model, "x", "seq", ("h0",), D, H, scope="B", activation="relu")
    workspace.RunNetOnce(model.param_init_net)
    for k, v in dict(data(), h0=np.zeros((1, N, H), np.float32)).items():
        workspace.FeedBlob(k, v)
    workspace.RunNetOnce(model.net)
    out = workspace.FetchBlob(h_all)
    np.testing.assert_array_equal(out[4, 2], out[3, 2])


def test_multi_rnn_cell_with_residual_and_dropout_cells(monkeypatch):
    """Two LSTM layers of equal width, the second with a residual connection, each wrapped in a
    DropoutCell (is_test: dropout is the identity); forward and backward run, and the output
    sequence is the sum of the two layers' hidden states."""
    monkeypatch.setenv("NETJIT_EXECUTOR", "compiled")
    model = model_helper.ModelHelper(name="stack")
    cells = [rnn_cell.DropoutCell(rnn_cell.LSTMCell(D if i == 0 else H, H, forget_bias=0.0, memory_optimization=False,
                                                    name=f"l{i}"), dropout_ratio=0.5, is_test=1, name=f"d{i}")
             for i in range(2)]
    stack = rnn_cell.MultiRNNCell(cells, residual_output_layers=[1], name="stack")
    # DropoutCell has no initializer (as in Caffe2): the initial states are given.
    output, states = stack.apply_over_sequence(model, "x", "seq", initial_states=["h0", "c0", "h1", "c1"],
                                               outputs_with_grads=[4])
    assert len(states) == 8 and str(output) == "stack/residual_output_sequence"
    loss = model.net.AveragedLoss(output, "loss")
    model.AddGradientOperators([loss])
    workspace.RunNetOnce(model.param_init_net)
    for k, v in data().items():
        workspace.FeedBlob(k, v)
    for name in ("h0", "c0", "h1", "c1"):
        workspace.FeedBlob(name, np.full((1, N, H), 0.1, np.float32))
    workspace.RunNetOnce(model.net)
    h0_all, h1_all = workspace.FetchBlob(states[0]), workspace.FetchBlob(states[4])
    np.testing.assert_allclose(workspace.FetchBlob(output), h0_all + h1_all, rtol=1e-5, atol=1e-6)
    grads = [workspace.FetchBlob(model.param_to_grad[p]) for p in model.params]
    assert all(np.isfinite(g).all() for g in grads) and any(np.abs(g).sum() > 0 for g in grads)


def test_init_from_lstm_params_packs_gates_in_caffe2_order():
    model = model_helper.ModelHelper(name="packed")
    *_, params = rnn_cell.LSTM(model, "x", None, ("h0", "c0"), D, H, scope="P", return_params=True)
    workspace.RunNetOnce(model.param_init_net)
    names = rnn_cell.GetLSTMParamNames()
    rng = np.random.default_rng(4)
    values = {kind: {**{w: rng.standard_normal((H, D if kind == "input" else H)) for w in names["weights"]},
                     **{b: rng.standard_normal(H) for b in names["biases"]}} for kind in ("input", "recurrent")}
    rnn_cell.InitFromLSTMParams(params, values)
    for kind in ("input", "recurrent"):
        w = workspace.FetchBlob(params[kind]["weights"])
        assert w.dtype == np.float32 and w.shape == (4 * H, D if kind == "input" else H)
        np.testing.assert_allclose(w[H:2 * H], values[kind]["forget_gate_w"], rtol=1e-6)
        np.testing.assert_allclose(workspace.FetchBlob(params[kind]["biases"])[3 * H:], values[kind]["cell_b"],
                                   rtol=1e-6)
