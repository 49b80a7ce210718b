"""numba-cpu kernels for ``LSTMUnit``, ``GRUUnit`` and their gradients (compiler/ops/lstm.py).

One pass over the batch: each row reads its four gate pre-activations, applies the nonlinearities
and writes H and C (or their gradients) once, where the numpy references build a dozen temporaries.
A row past its sequence end copies (or with ``drop_states`` zeroes) its state, as Caffe2's kernel.
The makers decline anything but float32/float64 [1, N, D] states; the op then runs its reference.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from numba import njit, types
from numba.extending import overload

from netjit.compiler.codegen.approx import sigmoid_f32, sigmoid_f64, tanh_f32
from netjit.compiler.codegen.loops import Param
from netjit.compiler.ir import Node, Value

FLOATS = frozenset({np.dtype(np.float32), np.dtype(np.float64)})
_OPTS = dict(cache=True, error_model="numpy", nogil=True, fastmath={"contract"})
# float32 constants keep float32 rows in float32 (a float64 literal would promote the whole row).
_ONE, _ZERO = np.float32(1.0), np.float32(0.0)


def _sig(v):
    """sigmoid, typed per dtype below."""


def _tanh(v):
    """tanh, typed per dtype below."""


def _like(ref, v):
    """v converted to ref's float type."""


@overload(_sig, jit_options=_OPTS)
def _sig_impl(v):
    # float32: approx.py's vectorisable form (<= 3 ulp), not one libm call per element.
    if v == types.float32:
        return lambda v: sigmoid_f32(v)
    return lambda v: sigmoid_f64(v)


@overload(_tanh, jit_options=_OPTS)
def _tanh_impl(v):
    if v == types.float32:
        return lambda v: tanh_f32(v)
    return lambda v: math.tanh(v)


@overload(_like, jit_options=_OPTS)
def _like_impl(ref, v):
    if ref == types.float32:
        return lambda ref, v: np.float32(v)
    return lambda ref, v: np.float64(v)


@njit(**_OPTS)
def _rows(n, d, hp, cp, x, seq, use_seq, t, fb, drop, h, c):
    hpf, cpf, xf, hf, cf = hp.reshape(-1), cp.reshape(-1), x.reshape(-1), h.reshape(-1), c.reshape(-1)
    sf = seq.reshape(-1)
    bias = _like(xf[0], fb)
    for r in range(n):
        base, gb = r * d, r * 4 * d
        if use_seq and not t < sf[r]:
            for k in range(base, base + d):
                hf[k] = _ZERO if drop else hpf[k]
                cf[k] = _ZERO if drop else cpf[k]
            continue
        for k in range(d):
            i = _sig(xf[gb + k])
            f = _sig(xf[gb + d + k] + bias)
            o = _sig(xf[gb + 2 * d + k])
            g = _tanh(xf[gb + 3 * d + k])
            cv = f * cpf[base + k] + i * g
            cf[base + k] = cv
            hf[base + k] = o * _tanh(cv)


@njit(**_OPTS)
def lstm_unit_seq_kernel(n, d, drop, fb, hp, cp, x, seq, ts, h, c):
    _rows(n, d, hp, cp, x, seq, True, ts.reshape(-1)[0], fb, drop, h, c)


@njit(**_OPTS)
def lstm_unit_kernel(n, d, drop, fb, hp, cp, x, ts, h, c):
    _rows(n, d, hp, cp, x, ts, False, ts.reshape(-1)[0], fb, drop, h, c)


@njit(**_OPTS)
def _grad_rows(n, d, cp, x, seq, use_seq, t, c, dh, dc, fb, drop, dhp, dcp, dx):
    cpf, xf, cf = cp.reshape(-1), x.reshape(-1), c.reshape(-1)
    dhf, dcf, dhpf, dcpf, dxf = dh.reshape(-1), dc.reshape(-1), dhp.reshape(-1), dcp.reshape(-1), dx.reshape(-1)
    sf = seq.reshape(-1)
    bias = _like(xf[0], fb)
    for r in range(n):
        base, gb = r * d, r * 4 * d
        if use_seq and not t < sf[r]:
            for k in range(base, base + d):
                dhpf[k] = _ZERO if drop else dhf[k]
                dcpf[k] = _ZERO if drop else dcf[k]
            for k in range(gb, gb + 4 * d):
                dxf[k] = _ZERO
            continue
        for k in range(d):
            i = _sig(xf[gb + k])
            f = _sig(xf[gb + d + k] + bias)
            o = _sig(xf[gb + 2 * d + k])
            g = _tanh(xf[gb + 3 * d + k])
            tc = _tanh(cf[base + k])
            dct = dcf[base + k] + dhf[base + k] * o * (_ONE - tc * tc)
            dcpf[base + k] = dct * f
            dhpf[base + k] = _ZERO
            dxf[gb + k] = dct * g * i * (_ONE - i)
            dxf[gb + d + k] = dct * cpf[base + k] * f * (_ONE - f)
            dxf[gb + 2 * d + k] = dhf[base + k] * tc * o * (_ONE - o)
            dxf[gb + 3 * d + k] = dct * i * (_ONE - g * g)


@njit(**_OPTS)
def lstm_unit_gradient_seq_kernel(n, d, drop, fb, hp, cp, x, seq, ts, h, c, dh, dc, dhp, dcp, dx):
    _grad_rows(n, d, cp, x, seq, True, ts.reshape(-1)[0], c, dh, dc, fb, drop, dhp, dcp, dx)


@njit(**_OPTS)
def lstm_unit_gradient_kernel(n, d, drop, fb, hp, cp, x, ts, h, c, dh, dc, dhp, dcp, dx):
    _grad_rows(n, d, cp, x, ts, False, ts.reshape(-1)[0], c, dh, dc, fb, drop, dhp, dcp, dx)


def _dims(node: Node, values: Mapping[str, Value]) -> tuple[int, int] | None:
    """(N, D) when every float value is one float dtype and the states are [1, N, D]."""
    hp, cp, x = (values[v] for v in node.inputs[:3])
    outs = [values[o] for o in node.outputs]
    floats = [hp, cp, x] + outs
    if not all(v.typed for v in floats) or len({v.dtype for v in floats}) != 1 or cp.dtype not in FLOATS:
        return None
    if len(cp.shape) != 3 or cp.shape[0] != 1 or hp.shape != cp.shape:
        return None
    n, d = cp.shape[1], cp.shape[2]
    if tuple(x.shape) != (1, n, 4 * d) or n * d == 0:
        return None
    ints = [values[v] for v in node.inputs[3:3 + (2 if node.attrs.get("sequence_lengths", True) else 1)]]
    if not all(v.typed and v.dtype.kind in "iu" for v in ints) or ints[-1].size != 1:
        return None
    if len(ints) == 2 and ints[0].size != n:
        return None
    return n, d


def _head(node: Node, n: int, d: int) -> list[Param]:
    return [Param("dim", n), Param("dim", d), Param("dim", int(bool(node.attrs.get("drop_states", False)))),
            Param("scalar", float(node.attrs.get("forget_bias", 0.0)))]


def lstm_unit(node: Node, values: Mapping[str, Value]):
    dims = _dims(node, values)
    if dims is None:
        return None
    fn = lstm_unit_seq_kernel if node.attrs.get("sequence_lengths", True) else lstm_unit_kernel
    return fn, _head(node, *dims) + [Param("in", v) for v in node.inputs] + [Param("out", o) for o in node.outputs]


def lstm_unit_gradient(node: Node, values: Mapping[str, Value]):
    dims = _dims(node, values)
    if dims is None:
        return None
    rest = [values[v] for v in node.inputs[-4:]]
    if not all(v.typed and v.dtype == values[node.inputs[1]].dtype and v.size == dims[0] * dims[1] for v in rest):
        return None
    seq = node.attrs.get("sequence_lengths", True)
    fn = lstm_unit_gradient_seq_kernel if seq else lstm_unit_gradient_kernel
    return fn, _head(node, *dims) + [Param("in", v) for v in node.inputs] + [Param("out", o) for o in node.outputs]


# --------------------------------------------------------------------------------------------
# GRUUnit / GRUUnitGradient: gates [1, N, 3D] (reset, update, output), state [1, N, D]
# --------------------------------------------------------------------------------------------
@njit(**_OPTS)
def _gru_rows(n, d, hp, x, seq, use_seq, t, drop, h):
    hpf, xf, hf, sf = hp.reshape(-1), x.reshape(-1), h.reshape(-1), seq.reshape(-1)
    for r in range(n):
        base, gb = r * d, r * 3 * d
        if use_seq and not t < sf[r]:
            for k in range(base, base + d):
                hf[k] = _ZERO if drop else hpf[k]
            continue
        for k in range(d):
            u = _sig(xf[gb + d + k])
            hf[base + k] = u * hpf[base + k] + (_ONE - u) * _tanh(xf[gb + 2 * d + k])


@njit(**_OPTS)
def gru_unit_seq_kernel(n, d, drop, hp, x, seq, ts, h):
    _gru_rows(n, d, hp, x, seq, True, ts.reshape(-1)[0], drop, h)


@njit(**_OPTS)
def gru_unit_kernel(n, d, drop, hp, x, ts, h):
    _gru_rows(n, d, hp, x, ts, False, ts.reshape(-1)[0], drop, h)


@njit(**_OPTS)
def _gru_grad_rows(n, d, hp, x, seq, use_seq, t, dh, drop, dhp, dx):
    hpf, xf, dhf, dhpf, dxf, sf = hp.reshape(-1), x.reshape(-1), dh.reshape(-1), dhp.reshape(-1), dx.reshape(-1), \
        seq.reshape(-1)
    for r in range(n):
        base, gb = r * d, r * 3 * d
        valid = not (use_seq and not t < sf[r])
        for k in range(d):
            g = dhf[base + k]
            dxf[gb + k] = _ZERO
            if not valid:
                dhpf[base + k] = _ZERO if drop else g
                dxf[gb + d + k] = _ZERO
                dxf[gb + 2 * d + k] = _ZERO
                continue
            u = _sig(xf[gb + d + k])
            o = _tanh(xf[gb + 2 * d + k])
            dhpf[base + k] = g * u
            dxf[gb + d + k] = g * (hpf[base + k] - o) * u * (_ONE - u)
            dxf[gb + 2 * d + k] = g * (_ONE - u) * (_ONE - o * o)


@njit(**_OPTS)
def gru_unit_gradient_seq_kernel(n, d, drop, hp, x, seq, ts, h, dh, dhp, dx):
    _gru_grad_rows(n, d, hp, x, seq, True, ts.reshape(-1)[0], dh, drop, dhp, dx)


@njit(**_OPTS)
def gru_unit_gradient_kernel(n, d, drop, hp, x, ts, h, dh, dhp, dx):
    _gru_grad_rows(n, d, hp, x, ts, False, ts.reshape(-1)[0], dh, drop, dhp, dx)


def _gru_dims(node: Node, values: Mapping[str, Value], n_tail: int) -> tuple[int, int] | None:
    """(N, D) for float [1, N, D] states with [1, N, 3D] gates and integer lengths/timestep."""
    hp, x = values[node.inputs[0]], values[node.inputs[1]]
    floats = [hp, x] + [values[v] for v in node.inputs[len(node.inputs) - n_tail:]] + \
        [values[o] for o in node.outputs]
    if not all(v.typed for v in floats) or len({v.dtype for v in floats}) != 1 or hp.dtype not in FLOATS:
        return None
    if len(hp.shape) != 3 or hp.shape[0] != 1 or hp.shape[1] * hp.shape[2] == 0:
        return None
    n, d = hp.shape[1], hp.shape[2]
    if tuple(x.shape) != (1, n, 3 * d) or any(v.size != n * d for v in floats[2:2 + n_tail]):
        return None
    ints = [values[v] for v in node.inputs[2:2 + (2 if node.attrs.get("sequence_lengths", True) else 1)]]
    if not all(v.typed and v.dtype.kind in "iu" for v in ints) or ints[-1].size != 1:
        return None
    if len(ints) == 2 and ints[0].size != n:
        return None
    return n, d


def _gru_params(node: Node, n: int, d: int) -> list[Param]:
    return [Param("dim", n), Param("dim", d), Param("dim", int(bool(node.attrs.get("drop_states", False))))] + \
        [Param("in", v) for v in node.inputs] + [Param("out", o) for o in node.outputs]


def gru_unit(node: Node, values: Mapping[str, Value]):
    dims = _gru_dims(node, values, 0)
    if dims is None:
        return None
    fn = gru_unit_seq_kernel if node.attrs.get("sequence_lengths", True) else gru_unit_kernel
    return fn, _gru_params(node, *dims)


def gru_unit_gradient(node: Node, values: Mapping[str, Value]):
    dims = _gru_dims(node, values, 2)
    if dims is None:
        return None
    fn = gru_unit_gradient_seq_kernel if node.attrs.get("sequence_lengths", True) else gru_unit_gradient_kernel
    return fn, _gru_params(node, *dims)
