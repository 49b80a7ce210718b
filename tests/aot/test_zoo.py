"""Zoo nets (random weights) and a brew-built SqueezeNet as bundles, against the JIT Predictor.

Slow: each build compiles its kernels (serial variants, a cache of their own) and the JIT side
compiles the same net again; CI still runs it, except DenseNet-121 (about 7 minutes from an empty
cache on 2 cores: ``NETJIT_HEAVY_TESTS=1`` runs it)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from netjit import aot, brew, mobile_exporter, model_helper, workspace, zoo
from netjit.compiler.aot import build_bundle
from tests.conftest import shared_path

pytestmark = pytest.mark.slow


def _fire(model, blob, name, dim_in, squeeze, expand):
    s = brew.relu(model, brew.conv(model, blob, f"{name}_s", dim_in, squeeze, kernel=1), f"{name}_s_relu")
    e1 = brew.relu(model, brew.conv(model, s, f"{name}_e1", squeeze, expand, kernel=1), f"{name}_e1_relu")
    e3 = brew.relu(model, brew.conv(model, s, f"{name}_e3", squeeze, expand, kernel=3, pad=1), f"{name}_e3_relu")
    out, _ = model.net.Concat([e1, e3], [f"{name}_concat", f"{name}_split"], axis=1)
    return out


def squeezenet(classes: int = 10) -> tuple:
    """SqueezeNet 1.1's layout (fire modules: 1x1 squeeze, 1x1 + 3x3 expand, concat), narrowed."""
    workspace.ResetWorkspace()
    model = model_helper.ModelHelper(name="squeezenet")
    x = brew.relu(model, brew.conv(model, "data", "conv1", 3, 16, kernel=3, stride=2), "relu1")
    x = brew.max_pool(model, x, "pool1", kernel=3, stride=2)
    x = _fire(model, x, "fire2", 16, 8, 16)
    x = _fire(model, x, "fire3", 32, 8, 16)
    x = brew.max_pool(model, x, "pool3", kernel=3, stride=2)
    x = _fire(model, x, "fire4", 32, 16, 32)
    x = model.net.Dropout(x, "drop", ratio=0.5, is_test=1)     # an alias in a bundle
    x = brew.relu(model, brew.conv(model, x, "conv10", 64, classes, kernel=1), "relu10")
    x = brew.average_pool(model, x, "pool10", global_pooling=True)
    brew.softmax(model, model.net.Flatten(x, "flat"), "prob")
    workspace.RunNetOnce(model.param_init_net)
    params = [p for p in workspace.Blobs() if p != "data"]
    return mobile_exporter.Export(workspace, model.net, params)


def _zoo_nets(name: str) -> tuple:
    net, data, shape = zoo.load_zoo_net(name)
    for blob, value in zoo.random_zoo_weights(name).items():
        workspace.FeedBlob(blob, value)
    init, _ = mobile_exporter.Export(workspace, net, list(zoo.zoo_param_shapes(name)))
    return init, net, data, shape


def _check(init, predict, data, shape, name, tmp_path, target="native"):
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    manifest = build_bundle(init, predict, {data: shape}, name, tmp_path / name, target=target, progress=False)
    assert manifest["target"] == target
    bundle = aot.load(tmp_path / name)
    assert bundle.outputs == list(predict.external_output)
    gots = bundle.run([x])
    wants = workspace.Predictor(init, predict).run({data: x})
    for got, want in zip(gots, wants, strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        # Absolute 1e-5 where outputs are O(1) (softmax), relative to the largest output otherwise.
        scale = max(1.0, float(np.abs(want).max()))
        assert float(np.abs(got.astype(np.float64) - want).max()) <= 1e-5 * scale
    return manifest


@pytest.mark.parametrize("name", ["resnet50", "inception_v1",
                                  pytest.param("densenet121", marks=pytest.mark.heavy)])
def test_zoo_net_matches_jit(name, tmp_path):
    shared_path("models", "zoo")
    init, predict, data, shape = _zoo_nets(name)
    manifest = _check(init, predict, data, shape, name, tmp_path)
    kernels = {s["kernel"] for s in manifest["steps"]}
    if name != "resnet50":
        assert "Concat" in kernels                  # AOT's own kernels (compiler/aot/kernels.py)
    if name == "inception_v1":
        assert "LRN" in kernels


def test_squeezenet_portable_target(tmp_path):
    init, predict = squeezenet()
    # The exporter lists every blob written and never read as an output: Concat's split sizes too
    # (constants of the plan, copied out of the weights).
    assert "fire2_split" in predict.external_output
    manifest = _check(init, predict, "data", (2, 3, 64, 64), "squeezenet", tmp_path, target="x86-64-v3")
    assert "avx2" in manifest["cpu_features"] and "avx512f" not in manifest["cpu_features"]
    assert json.loads((tmp_path / "squeezenet" / "bundle.json").read_text())["cpu"] == "x86-64-v3"
