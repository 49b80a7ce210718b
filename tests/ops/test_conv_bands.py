"""windows.conv2d building an image's column matrix in bands of output rows (when it would
exceed BAND_ELEMENTS): serial and cut across threads, against a float64 numpy conv."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from netjit.compiler.codegen import blas, windows
from tests.compiler.test_parallel import THREADED, pinned

# (N, C, H, W, M, group, K, stride, pad): column matrices of 367K and 845K elements per image.
CASES = [(1, 3, 100, 100, 8, 1, 7, 2, 3), (2, 4, 130, 130, 6, 2, 5, 1, 2), (1, 3, 224, 224, 4, 1, 7, 2, 3)]


def _reference(x: np.ndarray, wt: np.ndarray, stride: int, pad: int, group: int) -> np.ndarray:
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = wt.shape[2]
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]   # N C OH OW K K
    cg, mg = x.shape[1] // group, wt.shape[0] // group
    outs = [np.einsum("ncyxij,mcij->nmyx", win[:, g * cg:(g + 1) * cg], wt[g * mg:(g + 1) * mg].astype(np.float64))
            for g in range(group)]
    return np.concatenate(outs, axis=1)


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_banded_conv_matches_numpy(case, threaded):
    if threaded and not THREADED:
        pytest.skip("needs numba's OpenMP/TBB layer, 2+ threads and numpy's OpenBLAS")
    n, c, h, w, m, group, k, s, pad = case
    oh = ow = (h + 2 * pad - k) // s + 1
    assert (c // group) * k * k * oh * ow > windows.BAND_ELEMENTS      # the case does take bands
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((m, c // group, k, k)).astype(np.float32)
    y = np.full((n, m, oh, ow), np.nan, np.float32)
    args = (n, c, h, w, m, group, k, k, s, s, pad, pad, 1, 1, oh, ow)
    if threaded:
        with pinned():
            assert blas.team(n * m * oh * ow * (c // group) * k * k) > 1
            windows.conv2d(x, wt, y, *args)
    else:
        windows.conv2d(x, wt, y, *args)
    np.testing.assert_allclose(y, _reference(x, wt, s, pad, group), rtol=1e-4, atol=1e-4)
