"""Concat on the numba-cpu backend: a copy kernel per input count (2 to 6 inputs).

As a host step, Concat ran numpy's ``concatenate`` into a fresh array each run: on SqueezeNet at
batch 8 its eight joins of up to 12 MB took 5-8 ms of page faults and copies (onnxruntime: 1.8 ms).
The kernel writes into the plan's arena buffer instead, the copies cut across threads when the
driver owns the cores (parallel.py), and it fills the second output (the int32 sizes along the
axis) as the reference does. ``add_axis=1``, other input counts and mixed dtypes stay host steps.

Each input i is seen as (outer, part_i) with part_i = its size along the axis times the inner
size; the output as (outer, sum of parts): row ``o`` of the output is row ``o`` of each input in
turn.

>>> # Concat [a (1, 2, 3, 3), b (1, 4, 3, 3)] -> y (1, 6, 3, 3): outer 1, parts 18 and 36
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from numba import njit, prange

from netjit.compiler.codegen.blas import team
from netjit.compiler.codegen.loops import Param
from netjit.compiler.codegen.parallel import PARALLEL, part
from netjit.compiler.ir import Node, Value

_OPTS = dict(cache=True, error_model="numpy", nogil=True)
U = np.uint64
MAX_INPUTS = 6


@njit(**_OPTS)
def _copy_rows(xf, yf, r0, r1, part_len, total, offset):
    """y[o*total + offset + j] = x[o*part_len + j] for rows o in [r0, r1)."""
    for o in range(r0, r1):
        src = U(o * part_len)
        dst = U(o * total + offset)
        for j in range(part_len):
            yf[dst + U(j)] = xf[src + U(j)]


@njit(**_OPTS)
def _copy(xf, yf, outer, part_len, total, offset, t, t_count):
    """Thread ``t`` of ``t_count``'s share of one input: rows of it when there are enough, else a
    slice of every row (one image's channels, batch 1)."""
    if outer >= t_count:
        r0, r1 = part(outer, t_count, t, 1)
        _copy_rows(xf, yf, r0, r1, part_len, total, offset)
        return
    j0, j1 = part(part_len, t_count, t, 16)
    for o in range(outer):
        src = U(o * part_len)
        dst = U(o * total + offset)
        for j in range(j0, j1):
            yf[dst + U(j)] = xf[src + U(j)]


@njit(parallel=PARALLEL, **_OPTS)
def _join(x, y, outer, part_len, total, offset):
    """One input's rows into their columns of the output, cut across threads when worth it."""
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    t_count = team(outer * part_len)
    if t_count > 1:
        for t in prange(t_count):
            _copy(xf, yf, outer, part_len, total, offset, t, t_count)
        return
    _copy_rows(xf, yf, 0, outer, part_len, total, offset)


# One entry point per input count (the driver passes arrays and ints positionally); each input
# is its own call, so read-only and writable inputs mix freely.
@njit(**_OPTS)
def concat2(x0, x1, y, info, outer, s0, s1, inner):
    total = (s0 + s1) * inner
    info[0], info[1] = s0, s1
    _join(x0, y, outer, s0 * inner, total, 0)
    _join(x1, y, outer, s1 * inner, total, s0 * inner)


@njit(**_OPTS)
def concat3(x0, x1, x2, y, info, outer, s0, s1, s2, inner):
    total = (s0 + s1 + s2) * inner
    info[0], info[1], info[2] = s0, s1, s2
    _join(x0, y, outer, s0 * inner, total, 0)
    _join(x1, y, outer, s1 * inner, total, s0 * inner)
    _join(x2, y, outer, s2 * inner, total, (s0 + s1) * inner)


@njit(**_OPTS)
def concat4(x0, x1, x2, x3, y, info, outer, s0, s1, s2, s3, inner):
    total = (s0 + s1 + s2 + s3) * inner
    info[0], info[1], info[2], info[3] = s0, s1, s2, s3
    _join(x0, y, outer, s0 * inner, total, 0)
    _join(x1, y, outer, s1 * inner, total, s0 * inner)
    _join(x2, y, outer, s2 * inner, total, (s0 + s1) * inner)
    _join(x3, y, outer, s3 * inner, total, (s0 + s1 + s2) * inner)


@njit(**_OPTS)
def concat5(x0, x1, x2, x3, x4, y, info, outer, s0, s1, s2, s3, s4, inner):
    total = (s0 + s1 + s2 + s3 + s4) * inner
    info[0], info[1], info[2], info[3], info[4] = s0, s1, s2, s3, s4
    _join(x0, y, outer, s0 * inner, total, 0)
    _join(x1, y, outer, s1 * inner, total, s0 * inner)
    _join(x2, y, outer, s2 * inner, total, (s0 + s1) * inner)
    _join(x3, y, outer, s3 * inner, total, (s0 + s1 + s2) * inner)
    _join(x4, y, outer, s4 * inner, total, (s0 + s1 + s2 + s3) * inner)


@njit(**_OPTS)
def concat6(x0, x1, x2, x3, x4, x5, y, info, outer, s0, s1, s2, s3, s4, s5, inner):
    total = (s0 + s1 + s2 + s3 + s4 + s5) * inner
    info[0], info[1], info[2], info[3], info[4], info[5] = s0, s1, s2, s3, s4, s5
    _join(x0, y, outer, s0 * inner, total, 0)
    _join(x1, y, outer, s1 * inner, total, s0 * inner)
    _join(x2, y, outer, s2 * inner, total, (s0 + s1) * inner)
    _join(x3, y, outer, s3 * inner, total, (s0 + s1 + s2) * inner)
    _join(x4, y, outer, s4 * inner, total, (s0 + s1 + s2 + s3) * inner)
    _join(x5, y, outer, s5 * inner, total, (s0 + s1 + s2 + s3 + s4) * inner)


KERNELS = {2: concat2, 3: concat3, 4: concat4, 5: concat5, 6: concat6}


def concat(node: Node, values: Mapping[str, Value]):
    """Concat's standalone kernel and its params, or None (a host step) when it does not apply."""
    from netjit.compiler.ops.tensor_ops import _concat_plan   # the reference's own axis rules
    kernel = KERNELS.get(len(node.inputs))
    if kernel is None or len(node.outputs) != 2 or node.attrs.get("add_axis", False):
        return None
    ins = [values[v] for v in node.inputs]
    outs = [values[v] for v in node.outputs]
    if not all(v.typed for v in ins + outs) or len({v.dtype for v in ins}) != 1:
        return None
    if outs[0].dtype != ins[0].dtype or outs[1].dtype != np.dtype(np.int32):
        return None
    try:
        axis, shape = _concat_plan(node.attrs, [tuple(v.shape) for v in ins], [v.dtype for v in ins])
    except (ValueError, TypeError):
        return None
    if tuple(outs[0].shape) != tuple(shape):
        return None
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    sizes = [int(v.shape[axis]) for v in ins]
    return kernel, [Param("in", v) for v in node.inputs] + [Param("out", o) for o in node.outputs] + \
        [Param("dim", outer)] + [Param("dim", s) for s in sizes] + [Param("dim", inner)]
