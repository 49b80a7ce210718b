"""Helpers for the table-driven op tests: run an op's reference, check its shape/dtype inference
against what it produced, and check its gradient ops against central finite differences."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.compiler.ops.registry import TensorType, lookup
from netjit.compiler.reference import run_operator_once, run_ops
from netjit.proto.args import make_op
from netjit.runtime.workspace import Workspace


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def run_op(op_type: str, inputs: Sequence[Any], n_outputs: int = 1, ws: Workspace | None = None,
           **args: Any) -> list[Any]:
    """Run one op on positional inputs (fed as blobs in0, in1, ...); return its outputs."""
    ws = ws or Workspace("test")
    in_names, out_names = _names("in", len(inputs)), _names("out", n_outputs)
    for name, value in zip(in_names, inputs):
        ws.feed(name, value)
    run_operator_once(make_op(op_type, in_names, out_names, **args), ws)
    return [ws.fetch(n) for n in out_names]


def check_infer(op_type: str, inputs: Sequence[np.ndarray], n_outputs: int = 1, **args: Any) -> list[Any]:
    """Assert the op's inferred shapes and dtypes equal those its reference produces."""
    outs = run_op(op_type, inputs, n_outputs, **args)
    opdef = lookup(op_type)
    assert opdef.infer is not None, f"{op_type} has no shape inference"
    op = make_op(op_type, _names("in", len(inputs)), _names("out", n_outputs), **args)
    inferred = opdef.infer(opdef.decode_args(op), [TensorType(tuple(np.shape(x)), np.asarray(x).dtype)
                                                   for x in inputs])
    assert len(inferred) >= n_outputs, f"{op_type}: inferred {len(inferred)} outputs, ran {n_outputs}"
    for k, (got, out) in enumerate(zip(inferred, outs)):
        out = np.asarray(out)
        assert tuple(got.shape) == out.shape, f"{op_type} output {k}: inferred {got.shape}, actual {out.shape}"
        assert np.dtype(got.dtype) == out.dtype, f"{op_type} output {k}: inferred {got.dtype}, actual {out.dtype}"
    return outs


def check_gradient(op_type: str, inputs: Sequence[np.ndarray], n_outputs: int = 1,
                   wrt: Sequence[int] | None = None, grad_outputs: Sequence[int] | None = None,
                   eps: float = 1e-3, rtol: float = 2e-2, atol: float = 2e-3, seed: int = 0,
                   **args: Any) -> dict[int, np.ndarray]:
    """Compare the op's registered gradient against central differences of L = Σ_k <dY_k, Y_k>.

    ``wrt``: input indices to check (default: every floating input); ``grad_outputs``: outputs that
    get a gradient (default all; others are passed as None to the maker). Returns the analytic grads.
    """
    rng = np.random.default_rng(seed)
    in_names, out_names = _names("in", len(inputs)), _names("out", n_outputs)
    op = make_op(op_type, in_names, out_names, **args)
    ws = Workspace("grad")
    for name, value in zip(in_names, inputs):
        ws.feed(name, value)
    run_operator_once(op, ws)
    outs = [np.asarray(ws.fetch(n)) for n in out_names]
    grad_outputs = list(range(n_outputs)) if grad_outputs is None else list(grad_outputs)
    d_out = {k: rng.standard_normal(outs[k].shape).astype(outs[k].dtype) for k in grad_outputs}
    g_output = [f"{out_names[k]}_grad" if k in d_out else None for k in range(n_outputs)]
    for k, d in d_out.items():
        ws.feed(g_output[k], d)
    grad_ops, g_input = gradient_ops_for(op, g_output)
    run_ops(grad_ops, ws, net_name=f"{op_type}_grad")

    def loss(values: Sequence[np.ndarray]) -> float:
        outs_k = run_op(op_type, values, n_outputs, **args)
        return float(sum(np.sum(np.asarray(outs_k[k], np.float64) * d.astype(np.float64))
                         for k, d in d_out.items()))

    if wrt is None:
        wrt = [i for i, x in enumerate(inputs) if np.asarray(x).dtype.kind == "f"]
    analytic = {}
    for i in wrt:
        assert g_input[i] is not None, f"{op_type}: no gradient for input {i}"
        got = np.asarray(ws.fetch(g_input[i]), np.float64)
        x = np.asarray(inputs[i])
        numeric = np.zeros(x.shape, np.float64)
        flat = numeric.reshape(-1)
        for j in range(x.size):
            # C-order copies: reshape(-1) of a non-contiguous view would be a copy and the nudge lost.
            plus = [np.array(v, copy=True, order="C") for v in inputs]
            minus = [np.array(v, copy=True, order="C") for v in inputs]
            plus[i].reshape(-1)[j] += eps
            minus[i].reshape(-1)[j] -= eps
            flat[j] = (loss(plus) - loss(minus)) / (2 * eps)
        assert got.shape == numeric.shape, f"{op_type} d(input {i}): shape {got.shape} vs {numeric.shape}"
        np.testing.assert_allclose(got, numeric, rtol=rtol, atol=atol,
                                   err_msg=f"{op_type}: gradient of input {i} disagrees with finite differences")
        analytic[i] = got
    return analytic
