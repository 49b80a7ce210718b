"""codegen/winograd.py: F(2x2, 3x3) convs against a float64 direct conv (every pad, odd and even
maps, batches that span several tile chunks), the threaded path against the serial one, the
plan-time choice, and compiled nets that take the path against the reference executor."""
from __future__ import annotations

import numpy as np
import pytest

from netjit.compiler.codegen import blas, winograd
from tests.compiler.helpers import netdef, op, run_compiled, run_reference
from tests.compiler.test_parallel import THREADED, pinned


def direct3x3(x: np.ndarray, w: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
    """Stride-1 3x3 conv in float64 by shifted slices of the zero-padded input (no im2col)."""
    t, l, b, r = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (t, b), (l, r)))
    oh, ow = xp.shape[2] - 2, xp.shape[3] - 2
    y = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(3):
        for j in range(3):
            y += np.einsum("nchw,mc->nmhw", xp[:, :, i:i + oh, j:j + ow], w[:, :, i, j].astype(np.float64))
    return y


# (N, C, H, W, M, pads top/left/bottom/right)
CASES = {
    "same pads, even map": (1, 8, 12, 12, 16, (1, 1, 1, 1)),
    "same pads, odd map": (2, 5, 9, 7, 3, (1, 1, 1, 1)),
    "no pads": (1, 4, 10, 11, 6, (0, 0, 0, 0)),
    "asymmetric pads": (2, 3, 6, 8, 5, (2, 0, 0, 1)),
    "tail pads only": (1, 6, 5, 5, 4, (0, 0, 2, 2)),
    "output one pixel": (3, 2, 3, 3, 4, (0, 0, 0, 0)),
    "one row of output": (1, 3, 3, 17, 2, (0, 1, 0, 1)),
    "batch over several tile chunks": (70, 3, 8, 8, 2, (1, 1, 1, 1)),   # 16 tiles an image: 64 a chunk
}


def _problem(name: str, dtype: type, seed: int = 0):
    n, c, h, w, m, pads = CASES[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((m, c, 3, 3)).astype(dtype)
    oh, ow = h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2
    return x, wt, (n, c, h, w, m, pads[0], pads[1], oh, ow), pads


def _bound(x: np.ndarray, wt: np.ndarray, pads: tuple[int, int, int, int], ulps: float) -> np.ndarray:
    """``ulps`` float32 ulps of the magnitudes each output sums (|x| conv |w|)."""
    return ulps * np.finfo(np.float32).eps * direct3x3(np.abs(x), np.abs(wt), pads)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv3x3_matches_direct_conv(name, dtype):
    x, wt, dims, pads = _problem(name, dtype)
    want = direct3x3(x, wt, pads)
    y = np.full(want.shape, np.nan, dtype)
    winograd.conv3x3(x, wt, y, *dims)
    if dtype == np.float64:
        np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    else:
        # The transforms round a handful of times more than a direct sum; the error stays within a
        # few dozen float32 ulps of the summed magnitudes (measured: at most 3.1).
        assert (np.abs(y - want) <= _bound(x, wt, pads, 32)).all()


def test_conv3x3_empty_and_channel_free_inputs():
    y = np.full((1, 2, 3, 3), 7.0, np.float32)
    winograd.conv3x3(np.zeros((1, 0, 3, 3), np.float32), np.zeros((2, 0, 3, 3), np.float32), y,
                     1, 0, 3, 3, 2, 1, 1, 3, 3)
    assert (y == 0).all()
    empty = np.zeros((0, 2, 3, 3), np.float32)
    winograd.conv3x3(np.zeros((0, 4, 3, 3), np.float32), np.ones((2, 4, 3, 3), np.float32), empty,
                     0, 4, 3, 3, 2, 1, 1, 3, 3)


@pytest.mark.skipif(not THREADED, reason="needs numba's OpenMP/TBB layer, 2+ threads and numpy's OpenBLAS")
@pytest.mark.parametrize("shape", [(1, 32, 28, 28, 48), (3, 16, 15, 13, 24), (1, 64, 14, 14, 64), (5, 24, 27, 27, 40)])
def test_conv3x3_threaded_matches_serial(shape):
    n, c, h, w, m = shape
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((m, c, 3, 3)).astype(np.float32)
    serial, threaded = (np.full((n, m, h, w), np.nan, np.float32) for _ in range(2))
    winograd.conv3x3(x, wt, serial, n, c, h, w, m, 1, 1, h, w)
    with pinned():
        assert blas.team(16 * n * m * c * ((h + 1) // 2) * ((w + 1) // 2)) > 1
        winograd.conv3x3(x, wt, threaded, n, c, h, w, m, 1, 1, h, w)
    np.testing.assert_array_equal(threaded, serial)     # the same sums in the same order


@pytest.mark.parametrize("n,c,hw,m,chosen", [
    (1, 64, 56, 64, True), (1, 128, 28, 128, True), (1, 256, 14, 256, True),   # ResNet-50's stride-1 3x3s
    (1, 512, 7, 512, False),        # 16 tiles: transforming 512x512 weights costs more than it saves
    (64, 512, 7, 512, True),        # ...unless a batch supplies the tiles
    (1, 3, 224, 64, False),         # too few input channels for the 16 GEMMs to pay
])
def test_worth_it_follows_the_measured_rule(n, c, hw, m, chosen):
    assert winograd.worth_it(n, c, m, hw, hw) is chosen


def _conv_net(kernel: int, stride: int, pad: int, group: int = 1, name: str = "wino"):
    return netdef(name, [
        op("Conv", ["x", "w", "b"], ["y"], kernel=kernel, stride=stride, pad=pad, group=group),
        op("Relu", ["y"], ["z"]),
    ], external_input=["x", "w", "b"], external_output=["z"])


def _feeds(n, c, h, m, kernel, group=1, seed=1):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, c, h, h)).astype(np.float32),
            "w": (rng.standard_normal((m, c // group, kernel, kernel)) * 0.2).astype(np.float32),
            "b": rng.standard_normal(m).astype(np.float32)}


def _kernel_sources(runner) -> str:
    return "\n".join(src for key, src in runner.compiled.sources().items() if "/kernel" in key)


def test_compiled_stride1_3x3_conv_takes_winograd_and_matches_reference():
    net, feeds = _conv_net(3, 1, 1), _feeds(2, 16, 20, 24, 3)
    ref = run_reference(net, feeds)
    got, runner = run_compiled(net, feeds, runs=2)     # the second run reuses the plan and its arrays
    assert "winograd.conv3x3(" in _kernel_sources(runner)
    want = ref.fetch("z")
    bound = _bound(feeds["x"], feeds["w"], (1, 1, 1, 1), 32) + 1e-6
    assert (np.abs(got.fetch("z") - want) <= bound).all()


@pytest.mark.parametrize("kernel,stride,pad,group", [(3, 2, 1, 1), (3, 1, 1, 2), (5, 1, 2, 1), (1, 1, 0, 1)])
def test_other_convs_keep_im2col(kernel, stride, pad, group):
    net, feeds = _conv_net(kernel, stride, pad, group), _feeds(1, 16, 20, 24, kernel, group)
    got, runner = run_compiled(net, feeds)
    src = _kernel_sources(runner)
    assert "windows.conv2d(" in src and "winograd.conv3x3(" not in src
    np.testing.assert_allclose(got.fetch("z"), run_reference(net, feeds).fetch("z"), rtol=1e-5, atol=1e-5)


def test_netjit_winograd_0_turns_the_path_off(monkeypatch):
    monkeypatch.setenv("NETJIT_WINOGRAD", "0")     # read when a plan is made: a net not planned yet
    net, feeds = _conv_net(3, 1, 1, name="wino_off"), _feeds(2, 16, 20, 24, 3)
    got, runner = run_compiled(net, feeds)
    assert "winograd.conv3x3(" not in _kernel_sources(runner)
    np.testing.assert_allclose(got.fetch("z"), run_reference(net, feeds).fetch("z"), rtol=1e-5, atol=1e-5)
