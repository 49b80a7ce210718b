"""Direct nested-loop convolution and pooling, written from the definitions (no im2col, no numpy
windowing): the independent oracle for the conv/pool references. Channel-first, any spatial rank,
small sizes only."""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)


def out_size(size: int, k: int, s: int, d: int, head: int, tail: int) -> int:
    """Caffe2's floor rule: ⌊(in + head + tail − (d(k−1)+1)) / s⌋ + 1."""
    return (size + head + tail - (d * (k - 1) + 1)) // s + 1


def same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """legacy_pad SAME: out = ⌈in/s⌉, total pad (out−1)s + k − in, head gets the smaller half."""
    out = -(-size // s)
    total = (out - 1) * s + k - size
    return total // 2, total - total // 2


def caffe_ceil_out(size: int, k: int, s: int, p: int) -> int:
    """Caffe's pooling output size: rounded up, but the last window must start inside image + pad."""
    out = math.ceil((size + 2 * p - k) / s) + 1
    if p > 0 and (out - 1) * s >= size + p:
        out -= 1
    return out


def _inside(pos: Sequence[int], size: Sequence[int]) -> bool:
    return all(0 <= p < n for p, n in zip(pos, size))


def naive_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: Sequence[int], heads: Sequence[int],
               tails: Sequence[int], dilation: Sequence[int], group: int = 1) -> np.ndarray:
    """Y[n, m, o] = b[m] + Σ_{c in m's group, k} X[n, c, o·s − head + k·d] · W[m, c', k] (zero padding)."""
    n, c = x.shape[:2]
    m, kernel = w.shape[0], w.shape[2:]
    size = x.shape[2:]
    out = tuple(out_size(size[i], kernel[i], stride[i], dilation[i], heads[i], tails[i]) for i in range(len(size)))
    cg, mg = c // group, m // group
    y = np.zeros((n, m) + out)
    for ni, mi in itertools.product(range(n), range(m)):
        gi = mi // mg
        for o in itertools.product(*map(range, out)):
            acc = float(b[mi]) if b is not None else 0.0
            for ci in range(cg):
                for k in itertools.product(*map(range, kernel)):
                    pos = [o[i] * stride[i] - heads[i] + k[i] * dilation[i] for i in range(len(size))]
                    if _inside(pos, size):
                        acc += x[(ni, gi * cg + ci) + tuple(pos)] * w[(mi, ci) + k]
            y[(ni, mi) + o] = acc
    return y


def naive_conv_transpose(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: Sequence[int],
                         heads: Sequence[int], tails: Sequence[int], adj: Sequence[int]) -> np.ndarray:
    """Every input pixel i adds X[n, ci, i]·W[ci, co, k] at output position i·s + k − head."""
    n, cin = x.shape[:2]
    cout, kernel = w.shape[1], w.shape[2:]
    size = x.shape[2:]
    out = tuple((size[i] - 1) * stride[i] + kernel[i] + adj[i] - heads[i] - tails[i] for i in range(len(size)))
    y = np.zeros((n, cout) + out)
    for ni, ci, co in itertools.product(range(n), range(cin), range(cout)):
        for i in itertools.product(*map(range, size)):
            for k in itertools.product(*map(range, kernel)):
                pos = [i[d] * stride[d] + k[d] - heads[d] for d in range(len(size))]
                if _inside(pos, out):
                    y[(ni, co) + tuple(pos)] += x[(ni, ci) + i] * w[(ci, co) + k]
    if b is not None:
        y += b.reshape((1, cout) + (1,) * len(size))
    return y


def naive_pool(x: np.ndarray, kind: str, kernel: Sequence[int], stride: Sequence[int], heads: Sequence[int],
               out: Sequence[int], count_include_pad: bool = False) -> np.ndarray:
    """Max (from −FLT_MAX) or average (÷ in-bounds count, or ÷ kernel size) over each window."""
    n, c, size = x.shape[0], x.shape[1], x.shape[2:]
    y = np.zeros((n, c) + tuple(out))
    for ni, ci in itertools.product(range(n), range(c)):
        for o in itertools.product(*map(range, out)):
            values = []
            for k in itertools.product(*map(range, kernel)):
                pos = [o[d] * stride[d] - heads[d] + k[d] for d in range(len(size))]
                if _inside(pos, size):
                    values.append(x[(ni, ci) + tuple(pos)])
            if kind == "max":
                y[(ni, ci) + o] = max([-FLT_MAX] + values)
            else:
                y[(ni, ci) + o] = sum(values) / (math.prod(kernel) if count_include_pad else len(values))
    return y
