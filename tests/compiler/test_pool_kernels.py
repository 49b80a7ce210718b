"""codegen/windows.py max-pool kernels against a direct numpy reference, exactly: every path
(2x2/2, separable stride 1, per-row strided with the sliding-maximum-then-pick interior) over odd
and even sizes, kernels 2-5, strides 2-3, head pads, windows hanging past the edge, and NaNs
(which every window containing one must return, as numpy's max)."""
from __future__ import annotations

import numpy as np
import pytest

from netjit.compiler.codegen import windows

LOWEST = np.float32(-np.finfo(np.float32).max)


def reference(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, pt: int, pl: int,
              oh: int, ow: int) -> np.ndarray:
    """Max over the in-bounds taps of each window, starting from -FLT_MAX (Caffe2's kernel)."""
    planes, h, w = x.shape
    padded = np.full((planes, pt + h + kh + sh * oh, pl + w + kw + sw * ow), LOWEST, np.float32)
    padded[:, pt:pt + h, pl:pl + w] = x
    y = np.full((planes, oh, ow), LOWEST, np.float32)
    for i in range(kh):
        for j in range(kw):
            y = np.maximum(y, padded[:, i:i + sh * oh:sh, j:j + sw * ow:sw][:, :oh, :ow])
    return y


# (planes, H, W, KH, KW, stride, pad): SqueezeNet's 3x3/2 shapes (small), padded and uneven ones,
# windows wider than 3 (the generic sliding-maximum loop), stride 3, and 2x2/2.
CASES = [(3, 111, 111, 3, 3, 2, 0), (5, 27, 27, 3, 3, 2, 0), (4, 28, 29, 3, 3, 2, 1),
         (3, 17, 16, 5, 4, 2, 2), (2, 20, 23, 4, 2, 3, 1), (3, 9, 9, 2, 2, 2, 0),
         (2, 13, 13, 3, 3, 1, 1), (2, 6, 5, 3, 3, 2, 2), (2, 4, 4, 7, 7, 3, 3)]


@pytest.mark.parametrize("case", CASES)
def test_max_pool_matches_reference_exactly(case):
    planes, h, w, kh, kw, s, pad = case
    oh, ow = (h + 2 * pad - kh) // s + 1, (w + 2 * pad - kw) // s + 1
    rng = np.random.default_rng(31)
    # Rounded values tie inside windows; a few NaNs and infinities land in some windows.
    x = np.round(rng.standard_normal((planes, h, w)), 1).astype(np.float32)
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, size=max(2, flat.size // 200), replace=False)
    flat[idx[0::3]] = np.nan
    flat[idx[1::3]] = -np.inf
    flat[idx[2::3]] = np.inf
    y = np.full((planes, oh, ow), 7.0, np.float32)
    windows.max_pool2d(x, y, planes, h, w, kh, kw, s, s, pad, pad, oh, ow)
    want = reference(x, kh, kw, s, s, pad, pad, oh, ow)
    np.testing.assert_array_equal(y, want)
    assert np.isnan(want).any() or flat.size < 200
