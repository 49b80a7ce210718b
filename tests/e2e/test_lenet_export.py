"""A LeNet exported by real Caffe2 (binary NetDefs, legacy args) on the whole real MNIST test set.

An independent reference implementation scores 99.04% top-1 with this model, so >= 99.0% here
means every op on the path (legacy Conv/MaxPool args, broadcast Add, Reshape, FC) agrees.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from netjit import workspace
from netjit.compiler.runner import ReferenceRunner
from netjit.proto.io import load_net
from tests.conftest import REPO, shared_path

BATCH = 500


def _model() -> tuple:
    root = shared_path("models", "lenet_pytorch_export")
    return load_net(root / "init_net.pb"), load_net(root / "predict_net.pb")


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    from netjit.mnist_data import read_idx
    root = shared_path("data", "mnist")
    images = read_idx(root / "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    labels = read_idx(root / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return images[:, None], labels


def _compiler_available() -> bool:
    return importlib.util.find_spec("netjit.compiler.api") is not None


def test_model_files_use_legacy_args():
    init_net, predict_net = _model()
    assert list(predict_net.external_input) == [str(i) for i in range(1, 10)]
    assert list(predict_net.external_output) == ["26"]
    assert [op.type for op in predict_net.op] == \
        ["Conv", "Add", "MaxPool", "Relu", "Conv", "Add", "MaxPool", "Relu", "Reshape", "FC", "FC"]
    conv = {a.name for a in predict_net.op[0].arg}
    assert {"kernels", "strides", "pads", "dilations"} <= conv
    assert {(a.name, a.i) for a in predict_net.op[1].arg} == {("broadcast", 1), ("axis", 1)}
    assert {op.type for op in init_net.op} == {"GivenTensorFill"}


def test_whole_mnist_test_set_accuracy(mnist):
    images, labels = mnist
    predictor = workspace.Predictor(*_model())
    if _compiler_available():
        # The default executor is the compiler once it exists: this test must exercise it.
        assert not isinstance(predictor._runner, ReferenceRunner)
    correct = 0
    for start in range(0, len(labels), BATCH):
        logits, = predictor.run([images[start:start + BATCH]])
        assert logits.shape == (len(labels[start:start + BATCH]), 10) and logits.dtype == np.float32
        correct += int((logits.argmax(axis=1) == labels[start:start + BATCH]).sum())
    assert len(labels) == 10_000
    accuracy = correct / len(labels)
    assert accuracy >= 0.990, f"top-1 accuracy {accuracy:.4f}"


def test_compiled_matches_reference_on_a_batch(mnist, monkeypatch):
    images, _ = mnist
    batch = images[1000:1000 + BATCH]
    monkeypatch.setenv("NETJIT_EXECUTOR", "reference")
    reference = workspace.Predictor(*_model())
    assert isinstance(reference._runner, ReferenceRunner)
    want, = reference.run([batch])
    monkeypatch.delenv("NETJIT_EXECUTOR")
    compiled = workspace.Predictor(*_model())
    got, = compiled.run([batch])
    # float32 sums in another order: logits are O(10), so 1e-4 absolute is ~1e-5 relative.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got.argmax(axis=1), want.argmax(axis=1))


def test_reexport_through_predictor_exporter_and_mobile_exporter(mnist, tmp_path):
    """Load the real pair, export it again both ways, and get the same logits back."""
    from netjit import mobile_exporter, predictor_exporter
    images, _ = mnist
    batch = images[:64]
    init_net, predict_net = _model()
    want, = workspace.Predictor(init_net, predict_net).run([batch])

    workspace.RunNetOnce(init_net)
    params = list(predict_net.external_input[1:])
    workspace.FeedBlob("1", batch)
    meta = predictor_exporter.PredictorExportMeta(predict_net, params, ["1"], ["26"],
                                                  shapes={"26": (64, 10)})
    path = str(tmp_path / "lenet.minidb")
    predictor_exporter.save_to_db("minidb", path, meta)
    mobile_init, mobile_predict = mobile_exporter.Export(workspace, predict_net, params)

    workspace.ResetWorkspace()
    net = predictor_exporter.prepare_prediction_net(path, "minidb")
    workspace.FeedBlob("1", batch)
    workspace.RunNet(net)
    np.testing.assert_allclose(workspace.FetchBlob("26"), want, rtol=1e-5, atol=1e-5)

    # Every blob written but never read is an output: Reshape's old-shape output too.
    assert sorted(mobile_predict.external_output) == ["26", "OC2_DUMMY_0"]
    outputs = workspace.Predictor(mobile_init, mobile_predict).run([batch])
    got = outputs[list(mobile_predict.external_output).index("26")]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_example_script(capsys):
    shared_path("models", "lenet_pytorch_export")
    shared_path("data", "mnist")
    path = Path(REPO) / "examples" / "lenet_export_predict.py"
    spec = importlib.util.spec_from_file_location("lenet_export_predict", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--limit", "1000", "--batch-size", "250"]) == 0
    out = capsys.readouterr().out
    assert "1000 MNIST test digits" in out and "top-1 accuracy" in out
    accuracy = float(out.split("top-1 accuracy ")[1].split("%")[0])
    assert accuracy >= 98.0
    assert "7->7, 2->2, 1->1" in out  # the first test digits are 7, 2, 1
