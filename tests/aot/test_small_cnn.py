"""A small CNN built with brew as a bundle: numbers against the JIT Predictor, and every bad input
the issue names (host ops, wrong shapes/dtypes/names, a truncated weights file, a CPU without the
needed features, null or misaligned pointers into the C entry)."""
from __future__ import annotations

import ctypes
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from netjit import aot, brew, mobile_exporter, model_helper, workspace
from netjit.compiler.aot import AotError, build_bundle

BATCH = 2


def _small_cnn(with_print: bool = False):
    workspace.ResetWorkspace()
    model = model_helper.ModelHelper(name="small_cnn")
    conv1 = brew.conv(model, "data", "conv1", dim_in=1, dim_out=4, kernel=3, pad=1)
    relu1 = brew.relu(model, conv1, "relu1")
    pool1 = brew.max_pool(model, relu1, "pool1", kernel=2, stride=2)
    conv2 = brew.conv(model, pool1, "conv2", dim_in=4, dim_out=8, kernel=3)
    bn = brew.spatial_bn(model, conv2, "bn", dim_in=8, is_test=True)
    relu2 = brew.relu(model, bn, "relu2")
    pool2 = brew.average_pool(model, relu2, "pool2", kernel=2, stride=2)
    flat = model.net.Flatten(pool2, "flat")
    fc = brew.fc(model, flat, "fc", dim_in=8 * 2 * 2, dim_out=5)
    if with_print:
        model.net.Print([fc], [])
    brew.softmax(model, fc, "prob")
    workspace.RunNetOnce(model.param_init_net)
    rng = np.random.default_rng(7)
    for name in ("bn_s", "bn_b", "bn_rm"):      # non-trivial batch-norm statistics
        workspace.FeedBlob(name, rng.uniform(0.5, 1.5, 8).astype(np.float32))
    workspace.FeedBlob("bn_riv", rng.uniform(0.5, 2.0, 8).astype(np.float32))
    params = [p for p in workspace.Blobs() if p != "data"]
    init_net, predict_net = mobile_exporter.Export(workspace, model.net, params)
    return init_net, predict_net


@pytest.fixture(scope="module")
def cnn_bundle(tmp_path_factory) -> tuple[Path, tuple]:
    nets = _small_cnn()
    out = tmp_path_factory.mktemp("aot") / "cnn"
    build_bundle(*nets, {"data": (BATCH, 1, 12, 12)}, "small_cnn", out, progress=False)
    return out, nets


def test_small_cnn_matches_jit_predictor(cnn_bundle):
    out, (init_net, predict_net) = cnn_bundle
    x = np.random.default_rng(0).standard_normal((BATCH, 1, 12, 12)).astype(np.float32)
    bundle = aot.load(out)
    got, = bundle.run({"data": x})
    want, = workspace.Predictor(init_net, predict_net).run([x])
    assert got.shape == want.shape == (BATCH, 5)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-5)
    # The buffers are reused run after run: a second input gives its own answer.
    x2 = x[::-1].copy()
    np.testing.assert_allclose(bundle.run([x2])[0], want[::-1], rtol=0, atol=1e-5)


def test_loader_rejects_bad_inputs(cnn_bundle):
    bundle = aot.load(cnn_bundle[0])
    x = np.zeros((BATCH, 1, 12, 12), np.float32)
    with pytest.raises(aot.BundleError, match=r"input 'data': expected shape \[2, 1, 12, 12\], got \[1, 1, 12, 12\]"):
        bundle.run([x[:1]])
    with pytest.raises(aot.BundleError, match="expected dtype float32, got float64"):
        bundle.run([x.astype(np.float64)])
    with pytest.raises(aot.BundleError, match="has no input 'image'"):
        bundle.run({"image": x})
    with pytest.raises(aot.BundleError, match="takes 1 input"):
        bundle.run([x, x])
    assert np.isfinite(bundle.run([np.asfortranarray(x)])[0]).all()    # any layout is made contiguous


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_truncated_weights_and_foreign_cpu(cnn_bundle, tmp_path):
    copy = _copy(cnn_bundle[0], tmp_path / "b")
    weights = copy / "small_cnn.weights.bin"
    weights.write_bytes(weights.read_bytes()[:-64])
    with pytest.raises(aot.BundleError, match="expected .* bytes of weights, found"):
        aot.load(copy)
    copy2 = _copy(cnn_bundle[0], tmp_path / "c")
    manifest = json.loads((copy2 / "bundle.json").read_text())
    manifest["cpu_features"].append("netjit_imaginary_feature")
    (copy2 / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(aot.BundleError, match="needs CPU features this machine lacks: netjit_imaginary_feature"):
        aot.load(copy2)
    with pytest.raises(aot.BundleError, match="no bundle.json"):
        aot.load(tmp_path)


def test_c_entry_checks_pointers(cnn_bundle):
    folder = cnn_bundle[0]
    lib = ctypes.CDLL(str(folder / "small_cnn.so"))
    run = lib.small_cnn_run
    run.argtypes = [ctypes.c_void_p] * 4
    for f in ("small_cnn_weights_bytes", "small_cnn_scratch_bytes"):
        getattr(lib, f).restype = ctypes.c_size_t
    weights = np.zeros(lib.small_cnn_weights_bytes() // 4 + 16, np.float32)
    scratch = np.zeros(lib.small_cnn_scratch_bytes() // 4 + 16, np.float32)
    x = np.zeros((BATCH, 1, 12, 12), np.float32)
    y = np.zeros((BATCH, 5), np.float32)
    ins = (ctypes.c_void_p * 1)(x.ctypes.data)
    outs = (ctypes.c_void_p * 1)(y.ctypes.data)
    null_out = (ctypes.c_void_p * 1)(None)
    assert run(None, scratch.ctypes.data, ins, outs) == 1
    assert run(weights.ctypes.data, None, ins, outs) == 1
    assert run(weights.ctypes.data, scratch.ctypes.data, None, outs) == 1
    assert run(weights.ctypes.data, scratch.ctypes.data, ins, null_out) == 1
    assert run(weights.ctypes.data + 4, scratch.ctypes.data, ins, outs) == 3
    assert run(weights.ctypes.data, scratch.ctypes.data, ins, outs) == 0
    lib.small_cnn_strerror.restype = ctypes.c_char_p
    assert lib.small_cnn_strerror(1) == b"a null pointer was passed"
    lib.small_cnn_input_name.restype = ctypes.c_char_p
    assert lib.small_cnn_input_name(0) == b"data" and lib.small_cnn_input_name(1) is None


def test_host_op_fails_before_writing(cnn_bundle, tmp_path):
    nets = _small_cnn(with_print=True)
    out = tmp_path / "printing"
    with pytest.raises(AotError, match=r"op #\d+ \(Print\).*no compiled kernel"):
        build_bundle(*nets, {"data": (BATCH, 1, 12, 12)}, "printing", out, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # An existing bundle survives a failed rebuild untouched.
    kept = _copy(cnn_bundle[0], tmp_path / "kept")
    before = {p.name: p.stat().st_mtime_ns for p in kept.iterdir()}
    with pytest.raises(AotError, match=r"op #0 \(Conv\): cannot infer .*data: .* \(from the init net\).*--input"):
        build_bundle(*cnn_bundle[1], {}, "small_cnn", kept, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in kept.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


def test_cli_reports_errors(tmp_path, capsys):
    from netjit.cli import main
    init_net, predict_net = _small_cnn(with_print=True)
    (tmp_path / "init.pb").write_bytes(init_net.SerializeToString())
    (tmp_path / "predict.pb").write_bytes(predict_net.SerializeToString())
    base = ["aot", str(tmp_path / "init.pb"), str(tmp_path / "predict.pb"), "-o", str(tmp_path / "out"), "--quiet"]
    assert main(base + ["--input", "data=2,1,12,12"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"netjit aot: error: net 'small_cnn\w*' op #\d+ \(Print\): has no compiled kernel", err), err
    assert main(base + ["--input", "data"]) == 1
    assert "bad --input 'data'" in capsys.readouterr().err
    assert main(base + ["--input", "data=2,1,12,12", "--name", "9lives"]) == 1
    assert "must be a C identifier" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
