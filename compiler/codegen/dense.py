"""numba-cpu kernels for the dense ops: FC as a fused-group producer (GEMM then the epilogue loop,
which adds the bias and whatever elementwise ops fused after it) and FCGradient as its own kernel.

GEMMs call numpy's own OpenBLAS through codegen/blas.py, cut across netjit's threads (``pgemm``).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from numba import njit

from netjit.compiler.codegen.blas import pgemm
from netjit.compiler.codegen.loops import BUFFER, Param, ProducerCode
from netjit.compiler.ir import Node, Value
from netjit.compiler.ops.dense import _fc_dims

GEMM_DTYPES = frozenset({np.dtype(np.float32), np.dtype(np.float64)})
_OPTS = dict(cache=True, error_model="numpy", nogil=True)


def _fc_sizes(node: Node, values: Mapping[str, Value]) -> tuple[int, int, int] | None:
    ins = [values[i] for i in node.inputs]
    if not all(v.typed for v in ins) or len({v.dtype for v in ins}) != 1 or ins[0].dtype not in GEMM_DTYPES:
        return None
    try:
        m, k, n = _fc_dims(ins[0].shape, ins[1].shape, node.attrs["axis"], node.attrs["axis_w"])
    except (ValueError, IndexError):
        return None
    return m, k, n


def _gemm_pre(names: dict[str, str]) -> list[str]:
    m, k, n, p = names["m"], names["k"], names["n"], names["P"]
    # Y (m, n) = X (m, k) @ W (n, k)^T; an empty k gives zeros (beta 0 scales C to 0).
    return [f"blas.pgemm(False, True, {m}, {n}, {k}, 1.0, {names['in0']}.reshape(-1), 0, max({k}, 1), "
            f"{names['in1']}.reshape(-1), 0, max({k}, 1), 0.0, {p}, 0, {n})"]


def fc_head(node: Node, values: Mapping[str, Value]) -> ProducerCode | None:
    """FC = GEMM into the buffer, then ``P + b`` per element with b laid along the last dim."""
    sizes = _fc_sizes(node, values)
    out = values[node.outputs[0]]
    if sizes is None or not out.typed or len(out.shape) < 1 or out.shape[-1] != sizes[2]:
        return None
    m, k, n = sizes
    if values[node.inputs[2]].size != n:
        return None
    rank = len(out.shape)
    full = tuple(out.shape)
    bias_view = (1,) * (rank - 1) + (n,)
    return ProducerCode(inputs=(node.inputs[0], node.inputs[1]), dims=(("m", m), ("k", k), ("n", n)),
                        pre=_gemm_pre, expr="x0 + x1", operands=((BUFFER, full), (node.inputs[2], bias_view)),
                        dtype=out.dtype, threaded=True)


# --------------------------------------------------------------------------------------------
# FCGradient
# --------------------------------------------------------------------------------------------
@njit(**_OPTS)
def fc_gradient_kernel(m, k, n, x, w, dy, dw, db):
    dy2 = dy.reshape((m, n))
    # dW (n, k) = dY^T (n, m) @ X (m, k); m == 0 gives zeros (beta 0).
    pgemm(True, False, n, k, m, 1.0, dy.reshape(-1), 0, max(n, 1), x.reshape(-1), 0, max(k, 1), 0.0,
         dw.reshape(-1), 0, max(k, 1))
    for j in range(n):
        acc = 0.0
        for i in range(m):
            acc += dy2[i, j]
        db[j] = acc


@njit(**_OPTS)
def fc_gradient_dx_kernel(m, k, n, x, w, dy, dw, db, dx):
    fc_gradient_kernel(m, k, n, x, w, dy, dw, db)
    # dX (m, k) = dY (m, n) @ W (n, k)
    pgemm(False, False, m, k, n, 1.0, dy.reshape(-1), 0, max(n, 1), w.reshape(-1), 0, max(k, 1), 0.0,
         dx.reshape(-1), 0, max(k, 1))


def fc_gradient(node: Node, values: Mapping[str, Value]):
    sizes = _fc_sizes(node, values)
    if sizes is None or any(not values[o].typed for o in node.outputs):
        return None
    if values[node.inputs[2]].size != sizes[0] * sizes[2]:
        return None
    fn = fc_gradient_dx_kernel if len(node.outputs) == 3 else fc_gradient_kernel
    params = [Param("dim", s) for s in sizes] + [Param("in", v) for v in node.inputs] + \
             [Param("out", o) for o in node.outputs]
    return fn, params
