"""Model files run no code without consent: a Python op whose builder is pickled inside a file is
refused at CreateNet / RunNetOnce / Predictor unless the user opted in (issue #13)."""
from __future__ import annotations

import pathlib
import pickle

import numpy as np
import pytest

from netjit import core, workspace
from netjit.cli import main as cli_main
from netjit.compiler.ops import python_op
from netjit.proto import caffe2_pb2
from netjit.proto.io import load_net, save_net
from netjit.runtime.errors import OpError, PickledCodeError


class _TouchOnUnpickle:
    """What an attacker would put in a file: unpickling it alone runs code (here: creates a file)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def make_marking_op(marker: str):
    """A builder that runs code when the op is built, and gives a working op (x -> x + 1)."""
    pathlib.Path(marker).touch()

    def plus_one(inputs, outputs):
        outputs[0].feed(inputs[0].data + 1)
    return plus_one


def _file_net(tmp_path, payload: bytes, name: str = "from_file") -> caffe2_pb2.NetDef:
    """A net written to disk and read back, as a user's model file would be."""
    net = caffe2_pb2.NetDef(name=name, external_input=["x"], external_output=["y"])
    net.op.add().CopyFrom(core.CreateOperator("Python", ["x"], ["y"], pickled_builder=payload))
    path = tmp_path / f"{name}.pb"
    save_net(net, path)
    return load_net(path)


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "PWNED"


@pytest.fixture(autouse=True)
def _no_consent(monkeypatch):
    monkeypatch.setattr(python_op, "_allowed", None)
    monkeypatch.delenv("NETJIT_ALLOW_PICKLED_CODE", raising=False)
    workspace.ResetWorkspace()
    workspace.FeedBlob("x", np.array([1.0, 2.0], np.float32))


@pytest.mark.parametrize("entry", ["CreateNet", "RunNetOnce"])
def test_refused_without_consent_and_nothing_runs(tmp_path, marker, entry):
    net = _file_net(tmp_path, pickle.dumps(_TouchOnUnpickle(str(marker))))
    with pytest.raises(PickledCodeError) as info:
        getattr(workspace, entry)(net)
    err = info.value
    assert isinstance(err, RuntimeError) and isinstance(err, OpError)
    assert (err.net, err.index, err.op_type) == ("from_file", 0, "Python")
    text = str(err)
    assert "net 'from_file' op #0 (Python)" in text and "pickled_builder" in text
    assert "AllowPickledPythonOps(True)" in text and "allow_pickled_code=True" in text
    assert not marker.exists()


def test_workspace_switch_runs_the_payload(tmp_path, marker):
    net = _file_net(tmp_path, pickle.dumps((make_marking_op, (str(marker),), {})))
    assert workspace.AllowPickledPythonOps(True) is False
    try:
        workspace.RunNetOnce(net)
    finally:
        workspace.AllowPickledPythonOps(False)
    assert marker.exists()
    np.testing.assert_array_equal(workspace.FetchBlob("y"), [2.0, 3.0])
    marker.unlink()
    with pytest.raises(PickledCodeError):
        workspace.CreateNet(net)
    assert not marker.exists()


def test_environment_variable_opts_in(tmp_path, marker, monkeypatch):
    net = _file_net(tmp_path, pickle.dumps((make_marking_op, (str(marker),), {})))
    monkeypatch.setenv("NETJIT_ALLOW_PICKLED_CODE", "1")
    workspace.RunNetOnce(net)
    assert marker.exists()


def test_predictor_needs_its_argument(tmp_path, marker):
    init = caffe2_pb2.NetDef(name="init")
    init.op.add().CopyFrom(core.CreateOperator("ConstantFill", [], ["x"], shape=[2], value=1.0))
    init.op.add().CopyFrom(core.CreateOperator(
        "Python", ["x"], ["x"], pickled_builder=pickle.dumps((make_marking_op, (str(marker),), {}))))
    predict = caffe2_pb2.NetDef(name="predict", external_input=["x"], external_output=["y"])
    predict.op.add().CopyFrom(core.CreateOperator("Scale", ["x"], ["y"], scale=3.0))
    init_bytes, predict_bytes = init.SerializeToString(), predict.SerializeToString()
    with pytest.raises(PickledCodeError, match=r"net 'init' op #1 \(Python\)"):
        workspace.Predictor(init_bytes, predict_bytes)
    assert not marker.exists()
    p = workspace.Predictor(init_bytes, predict_bytes, allow_pickled_code=True)
    assert marker.exists()
    np.testing.assert_array_equal(p.run([])[0], [6.0, 6.0])
    # The argument opened that one predictor, not the process.
    marker.unlink()
    with pytest.raises(PickledCodeError):
        workspace.Predictor(init_bytes, predict_bytes)
    assert not marker.exists()


def test_compile_path_refuses_at_run(tmp_path, marker):
    import netjit
    net = _file_net(tmp_path, pickle.dumps(_TouchOnUnpickle(str(marker))), name="compiled_file")
    exe = netjit.compile(net)
    with pytest.raises(PickledCodeError, match=r"net 'compiled_file' op #0 \(Python\)"):
        exe.run()
    assert not marker.exists()


def test_pickled_gradient_builder_is_refused_too(tmp_path, marker):
    net = caffe2_pb2.NetDef(name="grad_file")
    net.op.add().CopyFrom(core.CreateOperator(
        "PythonGradient", ["x", "x", "x"], ["dx"], pickled_builder=pickle.dumps((make_marking_op, ("z",), {})),
        pickled_grad_builder=pickle.dumps(_TouchOnUnpickle(str(marker)))))
    with pytest.raises(PickledCodeError, match="op #0 \\(PythonGradient\\)"):
        workspace.RunNetOnce(net)
    assert not marker.exists()


def test_nets_nested_in_arguments_are_checked(marker):
    inner = caffe2_pb2.NetDef(name="then_branch")
    inner.op.add().CopyFrom(core.CreateOperator("Python", ["x"], ["y"],
                                                pickled_builder=pickle.dumps(_TouchOnUnpickle(str(marker)))))
    outer = caffe2_pb2.NetDef(name="outer")
    op = outer.op.add()
    op.CopyFrom(core.CreateOperator("If", ["cond"], []))
    op.arg.add(name="then_net").n.CopyFrom(inner)
    with pytest.raises(PickledCodeError, match=r"net 'then_branch' op #0 \(Python\)"):
        workspace.CreateNet(outer)
    assert not marker.exists()


def test_show_never_executes(tmp_path, marker, capsys):
    net = caffe2_pb2.NetDef(name="shown")
    net.op.add().CopyFrom(core.CreateOperator("Python", ["x"], ["y"],
                                              pickled_builder=pickle.dumps(_TouchOnUnpickle(str(marker)))))
    path = tmp_path / "shown.pb"
    save_net(net, path)
    assert cli_main(["show", str(path)]) == 0
    assert "Python" in capsys.readouterr().out
    assert not marker.exists()


def test_scripts_own_python_ops_need_no_consent():
    net = core.Net("own")
    net.Python((make_marking_op_quiet, [], {}))(["x"], ["y"])
    reloaded = caffe2_pb2.NetDef.FromString(net.Proto().SerializeToString())
    workspace.CreateNet(reloaded)
    workspace.RunNet("own")
    np.testing.assert_array_equal(workspace.FetchBlob("y"), [2.0, 3.0])


def make_marking_op_quiet():
    def plus_one(inputs, outputs):
        outputs[0].feed(inputs[0].data + 1)
    return plus_one


def test_unregistered_token_fails_at_create_net():
    net = caffe2_pb2.NetDef(name="tok")
    net.op.add().CopyFrom(core.CreateOperator("Python", ["x"], ["y"], token="nobody_registered_this"))
    with pytest.raises(OpError, match=r"net 'tok' op #0 \(Python\).*nobody_registered_this"):
        workspace.CreateNet(net)
