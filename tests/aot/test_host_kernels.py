"""The bundle's own kernels for ops the JIT runs on the host (compiler/aot/kernels.py): LRN in NHWC
and NCHW (with its scale output) and Concat with add_axis=1, against the JIT Predictor and numpy."""
from __future__ import annotations

import numpy as np

from netjit import aot, core, workspace
from netjit.compiler.aot import build_bundle

ALPHA, BETA, BIAS, SIZE = 2e-2, 0.75, 1.5, 3


def _lrn_ref(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    sq = np.moveaxis(x.astype(np.float64) ** 2, axis, 0)
    half = SIZE // 2
    acc = np.zeros_like(sq)
    for ch in range(sq.shape[0]):
        acc[ch] = sq[max(0, ch - half):ch + half + 1].sum(0)
    scale = np.moveaxis(BIAS + ALPHA / SIZE * acc, 0, axis)
    return x * scale ** -BETA, scale


def test_lrn_nhwc_nchw_and_stacking_concat(tmp_path):
    net = core.Net("aot_host_kernels")
    net.LRN(["x"], ["y", "y_scale"], size=SIZE, alpha=ALPHA, beta=BETA, bias=BIAS, order="NHWC")
    net.LRN(["x_nchw"], ["y_nchw"], size=SIZE, alpha=ALPHA, beta=BETA, bias=BIAS, order="NCHW")
    net.Concat(["y", "x"], ["stack1", "stack1_dims"], axis=1, add_axis=1)
    net.Concat(["x", "y", "x"], ["stack_last", "stack_last_dims"], axis=-1, add_axis=1)
    net.Proto().external_input.extend(["x", "x_nchw"])
    net.Proto().external_output.extend(["y_scale", "y_nchw", "stack1", "stack_last", "stack_last_dims"])
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 5, 4, 7)).astype(np.float32)          # NHWC, 7 channels
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    out = tmp_path / "host"
    build_bundle({}, net.Proto(), {"x": x.shape, "x_nchw": x_nchw.shape}, "host_kernels", out, progress=False)
    bundle = aot.load(out)
    got = dict(zip(bundle.outputs, bundle.run({"x": x, "x_nchw": x_nchw})))
    want = dict(zip(bundle.outputs, workspace.Predictor(core.Net("aot_host_init").Proto(), net.Proto())
                    .run({"x": x, "x_nchw": x_nchw})))
    for name in bundle.outputs:
        assert got[name].shape == want[name].shape and got[name].dtype == want[name].dtype, name
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6, err_msg=name)
    # and against numpy, independently of the JIT
    y, scale = _lrn_ref(x, 3)
    np.testing.assert_allclose(got["y_scale"], scale, rtol=1e-5)
    np.testing.assert_allclose(got["y_nchw"], y.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["stack1"], np.stack([y, x], axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["stack_last"][..., 0], x)
    np.testing.assert_allclose(got["stack_last"], np.stack([x, y, x], axis=-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["stack_last_dims"], [1, 1, 1])
