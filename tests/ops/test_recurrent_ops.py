"""LSTMUnit, ElementwiseLinear and RecurrentNetwork: numerics against plain numpy written from
Caffe2's formulas, shape inference, numerical gradient checks, and the compiled kernels and step
nets against the reference executor."""
from __future__ import annotations

import numpy as np
import pytest

from netjit import model_helper, rnn_cell, workspace
from netjit.compiler.ops._rnn_steps import StepWorkspaces
from netjit.proto import caffe2_pb2
from netjit.runtime.errors import OpError
from netjit.runtime.workspace import REGISTRY
from tests.compiler.helpers import assert_same_blobs, netdef, op, plan_of, run_compiled, run_reference
from tests.ops.harness import check_gradient, check_infer, run_op


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lstm_rows(h_prev, c_prev, gates, seq, t, forget_bias=0.0, drop_states=False):
    """Caffe2's LSTMUnit written row by row, element by element."""
    _, n, d = c_prev.shape
    h, c = np.zeros_like(c_prev), np.zeros_like(c_prev)
    for r in range(n):
        if seq is not None and not t < seq[r]:
            h[0, r] = 0 if drop_states else h_prev[0, r]
            c[0, r] = 0 if drop_states else c_prev[0, r]
            continue
        for k in range(d):
            i, f = sigmoid(gates[0, r, k]), sigmoid(gates[0, r, d + k] + forget_bias)
            o, g = sigmoid(gates[0, r, 2 * d + k]), np.tanh(gates[0, r, 3 * d + k])
            c[0, r, k] = f * c_prev[0, r, k] + i * g
            h[0, r, k] = o * np.tanh(c[0, r, k])
    return h, c


def lstm_inputs(n=3, d=4, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((1, n, d)).astype(dtype), rng.standard_normal((1, n, d)).astype(dtype),
            rng.standard_normal((1, n, 4 * d)).astype(dtype))


@pytest.mark.parametrize("forget_bias,drop_states", [(0.0, False), (1.0, False), (0.5, True)])
def test_lstm_unit_matches_row_by_row_numpy(forget_bias, drop_states):
    h_prev, c_prev, gates = lstm_inputs()
    seq, t = np.array([3, 1, 2], np.int32), np.array([1], np.int32)   # row 1 has ended at t = 1
    h, c = check_infer("LSTMUnit", [h_prev, c_prev, gates, seq, t], 2, forget_bias=forget_bias,
                       drop_states=drop_states)
    want_h, want_c = lstm_rows(h_prev, c_prev, gates, seq, 1, forget_bias, drop_states)
    np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, want_c, rtol=1e-5, atol=1e-6)
    assert (h[0, 1] == (0 if drop_states else h_prev[0, 1])).all()


def test_lstm_unit_without_sequence_lengths_runs_every_row():
    h_prev, c_prev, gates = lstm_inputs()
    h, c = run_op("LSTMUnit", [h_prev, c_prev, gates, np.array([7], np.int32)], 2, sequence_lengths=0)
    want_h, want_c = lstm_rows(h_prev, c_prev, gates, None, 7)
    np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, want_c, rtol=1e-5, atol=1e-6)


def test_lstm_unit_errors_name_the_blob():
    h_prev, c_prev, gates = lstm_inputs()
    with pytest.raises(OpError, match="gates .* must be \\[1, N, 4D\\]"):
        run_op("LSTMUnit", [h_prev, c_prev, gates[..., :8], np.array([3, 3, 3], np.int32), np.array([0], np.int32)], 2)
    with pytest.raises(OpError, match="seq_lengths has 2 entries"):
        run_op("LSTMUnit", [h_prev, c_prev, gates, np.array([3, 3], np.int32), np.array([0], np.int32)], 2)


@pytest.mark.parametrize("drop_states", [False, True])
def test_lstm_unit_gradient(drop_states):
    h_prev, c_prev, gates = lstm_inputs(n=3, d=2, seed=1)
    seq, t = np.array([2, 0, 5], np.int32), np.array([1], np.int32)
    check_gradient("LSTMUnit", [h_prev, c_prev, gates, seq, t], 2, wrt=[0, 1, 2], forget_bias=0.5,
                   drop_states=drop_states)
    h, c = run_op("LSTMUnit", [h_prev, c_prev, gates, seq, t], 2, forget_bias=0.5)
    check_infer("LSTMUnitGradient", [h_prev, c_prev, gates, seq, t, h, c, h, c], 3, forget_bias=0.5,
                drop_states=drop_states)


def test_lstm_unit_gradient_without_sequence_lengths():
    h_prev, c_prev, gates = lstm_inputs(n=2, d=2, seed=2)
    check_gradient("LSTMUnit", [h_prev, c_prev, gates, np.array([0], np.int32)], 2, wrt=[1, 2],
                   sequence_lengths=0)


def test_elementwise_linear_numerics_and_gradient():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 4)).astype(np.float32)
    w, b = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    (y,) = check_infer("ElementwiseLinear", [x, w, b], axis=2)
    np.testing.assert_allclose(y, x * w + b, rtol=1e-6)
    check_gradient("ElementwiseLinear", [x, w, b], axis=2)
    dx, dw, db = check_infer("ElementwiseLinearGradient", [np.ones_like(x), x, w], 3, axis=2)
    np.testing.assert_allclose(dw, x.reshape(3, 4).sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(db, np.full(4, 3.0), rtol=1e-6)
    (y1,) = run_op("ElementwiseLinear", [x.reshape(3, 4), w, b])            # default axis 1
    np.testing.assert_allclose(y1, x.reshape(3, 4) * w + b, rtol=1e-6)
    with pytest.raises(OpError, match="has 3 elements"):
        run_op("ElementwiseLinear", [x, w[:3], b], axis=2)


def test_lstm_unit_kernels_compile_and_match_reference():
    h_prev, c_prev, gates = lstm_inputs(n=5, d=3, seed=4)
    rng = np.random.default_rng(5)
    feeds = {"h": h_prev, "c": c_prev, "g": gates, "seq": np.array([2, 0, 1, 4, 3], np.int32),
             "t": np.array([1], np.int32), "dh": rng.standard_normal((1, 5, 3)).astype(np.float32),
             "dc": rng.standard_normal((1, 5, 3)).astype(np.float32)}
    for drop in (0, 1):
        net = netdef(f"lstm_unit_{drop}", [
            op("LSTMUnit", ["h", "c", "g", "seq", "t"], ["H", "C"], forget_bias=0.25, drop_states=drop),
            op("LSTMUnitGradient", ["h", "c", "g", "seq", "t", "H", "C", "dh", "dc"], ["dhp", "dcp", "dg"],
               forget_bias=0.25, drop_states=drop),
            op("LSTMUnit", ["h", "c", "g", "t"], ["H2", "C2"], sequence_lengths=0)])
        ref = run_reference(net, feeds)
        got, runner = run_compiled(net, feeds)
        assert_same_blobs(ref, got, rtol=1e-5, atol=1e-6)
        kinds = {s.op_type: s.kind for s in plan_of(runner).driver.steps}
        assert kinds["LSTMUnit"] == "kernel" and kinds["LSTMUnitGradient"] == "kernel"


def gru_rows(h_prev, gates, seq, t, drop_states=False):
    """Caffe2's GRUUnit, element by element."""
    _, n, d = h_prev.shape
    h = np.zeros_like(h_prev)
    for r in range(n):
        for k in range(d):
            if seq is not None and not t < seq[r]:
                h[0, r, k] = 0 if drop_states else h_prev[0, r, k]
            else:
                u, o = sigmoid(gates[0, r, d + k]), np.tanh(gates[0, r, 2 * d + k])
                h[0, r, k] = u * h_prev[0, r, k] + (1 - u) * o
    return h


@pytest.mark.parametrize("drop_states", [False, True])
def test_gru_unit_numerics_gradient_and_kernels(drop_states):
    rng = np.random.default_rng(11)
    h_prev = rng.standard_normal((1, 3, 4)).astype(np.float32)
    gates = rng.standard_normal((1, 3, 12)).astype(np.float32)
    seq, t = np.array([2, 1, 3], np.int32), np.array([1], np.int32)
    (h,) = check_infer("GRUUnit", [h_prev, gates, seq, t], drop_states=drop_states)
    np.testing.assert_allclose(h, gru_rows(h_prev, gates, seq, 1, drop_states), rtol=1e-5, atol=1e-6)
    check_gradient("GRUUnit", [h_prev, gates, seq, t], wrt=[0, 1], drop_states=drop_states)
    check_gradient("GRUUnit", [h_prev, gates, t], wrt=[0, 1], sequence_lengths=0)
    check_infer("GRUUnitGradient", [h_prev, gates, seq, t, h, h], 2, drop_states=drop_states)
    feeds = {"h": h_prev, "g": gates, "seq": seq, "t": t, "dh": rng.standard_normal((1, 3, 4)).astype(np.float32)}
    net = netdef(f"gru_{int(drop_states)}", [
        op("GRUUnit", ["h", "g", "seq", "t"], ["H"], drop_states=int(drop_states)),
        op("GRUUnitGradient", ["h", "g", "seq", "t", "H", "dh"], ["dhp", "dg"], drop_states=int(drop_states)),
        op("GRUUnit", ["h", "g", "t"], ["H2"], sequence_lengths=0),
        op("GRUUnitGradient", ["h", "g", "t", "H2", "dh"], ["dhp2", "dg2"], sequence_lengths=0)])
    ref = run_reference(net, feeds)
    got, runner = run_compiled(net, feeds)
    assert_same_blobs(ref, got, rtol=1e-5, atol=1e-6)
    assert all(s.kind == "kernel" for s in plan_of(runner).driver.steps if s.op_type.startswith("GRU"))


# --------------------------------------------------------------------------------------------
# RecurrentNetwork, built by rnn_cell.LSTM
# --------------------------------------------------------------------------------------------
T, N, DIN, H = 4, 3, 5, 6


def build_lstm(dtype=np.float32, initial_states=True, outputs_with_grads=(0,), seed=0):
    """An LSTM over x [T, N, DIN] with explicit weights fed; returns (model, outputs, weights)."""
    model = model_helper.ModelHelper(name="lstm_test")
    init = ("h0", "c0") if initial_states else None
    outs = rnn_cell.LSTM(model, "x", "seq", init, DIN, H, scope="L", outputs_with_grads=outputs_with_grads,
                         forget_bias=0.5)
    rng = np.random.default_rng(seed)
    weights = {"L/i2h_w": rng.standard_normal((4 * H, DIN)) * 0.4, "L/i2h_b": rng.standard_normal(4 * H) * 0.1,
               "L/gates_t_w": rng.standard_normal((4 * H, H)) * 0.4, "L/gates_t_b": rng.standard_normal(4 * H) * 0.1}
    feeds = {"x": rng.standard_normal((T, N, DIN)), "seq": np.array([4, 2, 3], np.int32)}
    if initial_states:
        feeds.update(h0=rng.standard_normal((1, N, H)) * 0.5, c0=rng.standard_normal((1, N, H)) * 0.5)
    else:
        weights.update({"L/initial_hidden_state": rng.standard_normal(H) * 0.5,
                        "L/initial_cell_state": rng.standard_normal(H) * 0.5})
    feeds.update(weights)
    feeds = {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in feeds.items()}
    return model, outs, feeds


def numpy_lstm(feeds):
    """The same LSTM unrolled in numpy: (h_all, c_all) [T, N, H]."""
    x = feeds["x"].astype(np.float64)
    proj = x @ feeds["L/i2h_w"].T + feeds["L/i2h_b"]
    h = np.broadcast_to(feeds.get("h0", feeds.get("L/initial_hidden_state")), (1, N, H)).astype(np.float64)
    c = np.broadcast_to(feeds.get("c0", feeds.get("L/initial_cell_state")), (1, N, H)).astype(np.float64)
    hs, cs = [], []
    for t in range(T):
        gates = proj[t:t + 1] + h @ feeds["L/gates_t_w"].T + feeds["L/gates_t_b"]
        h, c = lstm_rows(h, c, gates, feeds["seq"], t, forget_bias=0.5)
        hs.append(h[0])
        cs.append(c[0])
    return np.stack(hs), np.stack(cs)


def run_net(net, feeds):
    for k, v in feeds.items():
        workspace.FeedBlob(k, v)
    workspace.RunNetOnce(net)


@pytest.mark.parametrize("executor", ["reference", "compiled"])
@pytest.mark.parametrize("initial_states", [True, False])
def test_recurrent_network_forward_matches_unrolled_numpy(executor, initial_states, monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", executor)
    model, (h_all, h_last, c_all, c_last), feeds = build_lstm(initial_states=initial_states)
    run_net(model.net, feeds)
    want_h, want_c = numpy_lstm(feeds)
    np.testing.assert_allclose(workspace.FetchBlob(h_all), want_h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(workspace.FetchBlob(c_all), want_c, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(workspace.FetchBlob(h_last), want_h[-1:], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(workspace.FetchBlob(c_last), want_c[-1:], rtol=1e-4, atol=1e-5)
    # The recurrent states live in the workspace as in Caffe2: initial step, then one per timestep.
    states = workspace.FetchBlob("L/L/hidden_t_prev_states")   # Caffe2 scopes the scoped name again
    assert states.shape == (T + 1, N, H)
    scratch = REGISTRY.current.blobs["L/step_workspaces"]
    assert isinstance(scratch, StepWorkspaces) and len(scratch.workspaces) == T
    runner_types = {type(r).__name__ for r in scratch.runners.values()}
    assert runner_types == {"CompiledRunner" if executor == "compiled" else "ReferenceRunner"}


def gradients_of(model, outs, feeds, d_outs, executor, monkeypatch):
    """Analytic gradients of L = sum_k <d_k, out_k> for the outputs in d_outs."""
    monkeypatch.setenv("NETJIT_EXECUTOR", executor)
    for k in d_outs:
        model.net.AddExternalInput(f"d_out{k}")
    grad_map = model.net.AddGradientOperators({outs[k]: f"d_out{k}" for k in d_outs})
    run_net(model.net, dict(feeds, **{f"d_out{k}": d for k, d in d_outs.items()}))
    loss = sum(float(np.sum(workspace.FetchBlob(outs[k]).astype(np.float64) * d)) for k, d in d_outs.items())
    return loss, {name: workspace.FetchBlob(grad_map[name]) for name in feeds if name in grad_map}


@pytest.mark.parametrize("initial_states,with_grads", [(True, (0,)), (False, (0, 1, 3))])
def test_recurrent_network_gradient_matches_finite_differences(initial_states, with_grads, monkeypatch):
    """float64 through the reference executor: central differences are then exact to ~1e-8."""
    model, outs, feeds = build_lstm(np.float64, initial_states, with_grads, seed=7)
    rng = np.random.default_rng(8)
    d_outs = {k: rng.standard_normal(workspace_shape(k)) for k in with_grads}
    fwd = model.net.Clone("lstm_forward")
    _, grads = gradients_of(model, outs, feeds, d_outs, "reference", monkeypatch)
    assert set(grads) >= {"x", "L/i2h_w", "L/gates_t_w", "L/gates_t_b"}

    def loss_at(name, value):
        run_net(fwd, dict(feeds, **{name: value}))
        return sum(float(np.sum(workspace.FetchBlob(outs[k]) * d)) for k, d in d_outs.items())

    eps = 1e-6
    for name, analytic in grads.items():
        base = feeds[name]
        numeric = np.zeros(base.shape)
        for j in range(base.size):
            plus, minus = base.copy(), base.copy()
            plus.reshape(-1)[j] += eps
            minus.reshape(-1)[j] -= eps
            numeric.reshape(-1)[j] = (loss_at(name, plus) - loss_at(name, minus)) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7, err_msg=name)


def workspace_shape(k):
    return [(T, N, H), (1, N, H), (T, N, H), (1, N, H)][k]


def test_recurrent_network_gradient_compiled_matches_reference(monkeypatch):
    model, outs, feeds = build_lstm(np.float32, True, (0, 1), seed=9)
    rng = np.random.default_rng(10)
    d_outs = {0: rng.standard_normal((T, N, H)).astype(np.float32),
              1: rng.standard_normal((1, N, H)).astype(np.float32)}
    ref_loss, ref = gradients_of(model, outs, feeds, d_outs, "reference", monkeypatch)
    model2, outs2, _ = build_lstm(np.float32, True, (0, 1), seed=9)
    workspace.ResetWorkspace()
    got_loss, got = gradients_of(model2, outs2, feeds, d_outs, "compiled", monkeypatch)
    assert got_loss == pytest.approx(ref_loss, rel=1e-5)
    assert set(got) == set(ref)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_recurrent_network_errors_name_the_op(monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", "reference")
    model, _, feeds = build_lstm()
    feeds["seq"] = np.array([4, 2], np.int32)       # 2 lengths for a batch of 3
    for k, v in feeds.items():
        workspace.FeedBlob(k, v)
    with pytest.raises(OpError, match=r"RecurrentNetwork.*forward step net failed at timestep 0.*seq_lengths has 2"):
        workspace.RunNetOnce(model.net)


def test_blob_fetcher_copies_step_blobs(monkeypatch):
    from netjit import recurrent
    monkeypatch.setenv("NETJIT_EXECUTOR", "reference")
    model, _, feeds = build_lstm()
    run_net(model.net, feeds)
    names = recurrent.retrieve_step_blobs(model.net, "rnn")
    assert b"rnn_L/cell_state0" in names and b"rnn_L/cell_state3" in names
    np.testing.assert_array_equal(workspace.FetchBlob("rnn_L/cell_state3"), workspace.FetchBlob("L/cell_state_last"))


def test_text_format_nets_and_a_pb_round_trip(monkeypatch):
    """Older Caffe2 wrote step_net and backward_step_net in text format (string arguments); a
    training net saved to .pb bytes and parsed back runs the same in a fresh workspace."""
    monkeypatch.setenv("NETJIT_EXECUTOR", "compiled")
    model, (h_all, *_), feeds = build_lstm()
    model.net.AddExternalInput("d_h")
    grad_map = model.net.AddGradientOperators({h_all: "d_h"})
    feeds["d_h"] = np.random.default_rng(12).standard_normal((T, N, H)).astype(np.float32)
    run_net(model.net, feeds)
    want = {name: workspace.FetchBlob(grad_map[name]) for name in ("x", "L/gates_t_w", "h0")}
    for op in model.net.Proto().op:
        for a in op.arg:
            if a.name in ("step_net", "backward_step_net"):
                text = str(a.n)
                a.ClearField("n")
                a.s = text.encode()
    restored = caffe2_pb2.NetDef.FromString(model.net.Proto().SerializeToString())
    workspace.ResetWorkspace()
    run_net(restored, feeds)
    np.testing.assert_allclose(workspace.FetchBlob(h_all), numpy_lstm(feeds)[0], rtol=1e-4, atol=1e-5)
    for name, value in want.items():
        np.testing.assert_allclose(workspace.FetchBlob(grad_map[name]), value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_step_runners_follow_the_executor_and_the_step_net(monkeypatch):
    """One step-workspaces blob, reused by runs under both executors and by a rebuilt model whose
    step net differs (forget_bias): each run uses a runner made for its own executor and net."""
    model, (h_all, *_), feeds = build_lstm()
    monkeypatch.setenv("NETJIT_EXECUTOR", "reference")
    run_net(model.net, feeds)
    first = workspace.FetchBlob(h_all)
    monkeypatch.setenv("NETJIT_EXECUTOR", "compiled")
    run_net(model.net, feeds)
    np.testing.assert_allclose(workspace.FetchBlob(h_all), first, rtol=1e-5, atol=1e-6)
    scratch = REGISTRY.current.blobs["L/step_workspaces"]
    assert {key[2] for key in scratch.runners} == {"reference", "compiled"}
    other = model_helper.ModelHelper(name="rebuilt")
    outs = rnn_cell.LSTM(other, "x", "seq", ("h0", "c0"), DIN, H, scope="L", forget_bias=0.0)
    run_net(other.net, feeds)
    assert REGISTRY.current.blobs["L/step_workspaces"] is scratch
    assert not np.allclose(workspace.FetchBlob(outs[0]), first)        # forget_bias 0.0, not 0.5
