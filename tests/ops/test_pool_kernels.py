"""windows.max_pool2d's three paths (2x2/2, separable stride 1, row-maximum any stride) against the
naive loops, exactly, on geometries where they differ: 'same' stride-1 windows (the flat pass and
its redone edge columns), stride-1 windows narrower than the input, strided and padded windows,
windows wholly in padding, NaN and -inf inputs; serial and cut across threads."""
from __future__ import annotations

import numpy as np
import pytest

from netjit.compiler.codegen import blas, windows
from netjit.compiler.codegen.parallel import MIN_WORK
from tests.compiler.test_parallel import THREADED, pinned
from tests.ops.naive_cnn import naive_pool

# (planes, h, w, kh, kw, sh, sw, pt, pl, pb, pr)
GEOMETRIES = [
    (3, 13, 13, 3, 3, 1, 1, 1, 1, 1, 1),     # inception's 'same' 3x3
    (2, 9, 11, 5, 5, 1, 1, 2, 2, 2, 2),      # 'same' 5x5
    (2, 7, 6, 2, 2, 1, 1, 0, 0, 1, 1),       # 'same' even kernel, tail pads only
    (2, 8, 9, 3, 2, 1, 1, 0, 0, 0, 0),       # stride 1, narrower output (no flat pass)
    (2, 5, 5, 2, 3, 1, 1, 3, 3, 3, 3),       # pads wider than the kernel: padding-only windows
    (3, 15, 15, 3, 3, 2, 2, 0, 0, 0, 0),     # SqueezeNet/inception downsampling
    (2, 12, 11, 3, 3, 2, 2, 1, 1, 1, 1),     # ResNet's padded stem pool
    (2, 10, 9, 4, 3, 3, 2, 2, 1, 1, 2),      # odd sizes and strides
    (2, 8, 8, 2, 2, 2, 2, 0, 0, 0, 0),       # the 2x2/2 fast path
    (1, 6, 7, 3, 5, 2, 3, 4, 4, 4, 4),       # windows wholly in padding, strided
    (64, 27, 27, 3, 3, 1, 1, 1, 1, 1, 1),    # enough work to cut across threads
    (128, 25, 25, 3, 3, 2, 2, 1, 1, 1, 1),
]


def _out(size: int, k: int, s: int, head: int, tail: int) -> int:
    return (size + head + tail - k) // s + 1


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("geom", GEOMETRIES, ids=[str(g) for g in GEOMETRIES])
def test_max_pool_kernel_matches_naive(geom, threads):
    planes, h, w, kh, kw, sh, sw, pt, pl, pb, pr = geom
    oh, ow = _out(h, kh, sh, pt, pb), _out(w, kw, sw, pl, pr)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((planes, h, w)).astype(np.float32)
    x[0, h // 2, w // 2] = np.nan          # NaN wins its windows
    x[-1, 0, :] = -np.inf                  # -inf loses to -FLT_MAX, as in Caffe2
    want = naive_pool(x[None], "max", (kh, kw), (sh, sw), (pt, pl), (oh, ow))[0].astype(np.float32)
    nan_rows = np.zeros((planes, oh, ow), bool)   # naive max() drops NaN; mark its windows
    for a in range(oh):
        for b in range(ow):
            r0, c0 = a * sh - pt, b * sw - pl
            win = x[0, max(r0, 0):max(r0 + kh, 0), max(c0, 0):max(c0 + kw, 0)]
            nan_rows[0, a, b] = bool(np.isnan(win).any())
    want[nan_rows] = np.nan
    y = np.full((planes, oh, ow), 123.0, np.float32)
    if threads == 1:
        windows.max_pool2d(x, y, planes, h, w, kh, kw, sh, sw, pt, pl, oh, ow)   # OpenBLAS not pinned: serial
    else:
        if not THREADED:
            pytest.skip("needs numba's OpenMP/TBB layer, 2+ threads and numpy's OpenBLAS")
        with pinned():     # as a compiled run: kernels with enough work cut it across threads
            work = planes * oh * ow * kh * kw
            assert (blas.team(work) > 1) == (work >= MIN_WORK)
            windows.max_pool2d(x, y, planes, h, w, kh, kw, sh, sw, pt, pl, oh, ow)
    np.testing.assert_array_equal(y, want)
