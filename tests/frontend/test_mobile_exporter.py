"""mobile_exporter.Export: (init_net, predict_net) pairs that workspace.Predictor runs."""
from __future__ import annotations

import numpy as np
import pytest

from netjit import core, workspace
from netjit import mobile_exporter as me
from netjit.proto import caffe2_pb2
from netjit.proto.io import load_net, save_net

RNG = np.random.default_rng(11)


def _mlp() -> tuple[core.Net, list[str]]:
    net = core.Net("mobile_mlp")
    h = net.FC(["data", "fc1_w", "fc1_b"], "fc1")
    h = net.Relu(h, h)  # in place, like the tutorials
    out = net.FC([h, "fc2_w", "fc2_b"], "fc2")
    net.Softmax(out, "softmax")
    params = ["fc1_w", "fc1_b", "fc2_w", "fc2_b"]
    for blob, shape in zip(params, [(6, 4), (6,), (3, 6), (3,)]):
        workspace.FeedBlob(blob, RNG.standard_normal(shape).astype(np.float32))
    return net, params


def test_export_then_predictor_matches_the_original_net(tmp_path):
    net, params = _mlp()
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    workspace.FeedBlob("data", x)
    workspace.RunNetOnce(net)
    expected = workspace.FetchBlob("softmax")

    init_net, predict_net = me.Export(workspace, net, params)
    # Through files, as a deployment would: binary init, text predict.
    save_net(init_net, tmp_path / "init_net.pb")
    save_net(predict_net, tmp_path / "predict_net.pbtxt")
    init_net, predict_net = load_net(tmp_path / "init_net.pb"), load_net(tmp_path / "predict_net.pbtxt")

    workspace.ResetWorkspace()
    predictor = workspace.Predictor(init_net, predict_net)
    got, = predictor.run([x])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    got, = predictor.run({"data": x[:2]})
    np.testing.assert_allclose(got, expected[:2], rtol=1e-6, atol=1e-7)


def test_export_layout():
    net, params = _mlp()
    init_net, predict_net = me.Export(workspace, net, params)
    assert [op.type for op in init_net.op] == ["GivenTensorFill"] * 5
    assert [op.output[0] for op in init_net.op] == params + ["data"]
    for op, name in zip(init_net.op, params):
        args = {a.name: a for a in op.arg}
        value = workspace.FetchBlob(name)
        assert list(args["shape"].ints) == list(value.shape)
        np.testing.assert_array_equal(np.array(args["values"].floats, np.float32), value.ravel())
    placeholder = {a.name: a for a in init_net.op[-1].arg}
    assert list(placeholder["shape"].ints) == [1, 1] and list(placeholder["values"].floats) == [0.0]
    # data inputs first, then the original external inputs (which repeat them), as Caffe2 does
    assert list(predict_net.external_input) == ["data"] + list(net.Proto().external_input)
    assert list(predict_net.external_output) == ["softmax"]
    assert [op.type for op in predict_net.op] == ["FC", "Relu", "FC", "Softmax"]
    # the source net is left alone
    assert list(net.Proto().external_output) == []


def test_parameter_dtypes_choose_the_fill_op():
    tensors = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "i32": np.array([[1, -2], [3, 4]], np.int32),
        "i64": np.array([2 ** 40, -5], np.int64),
        "u8": np.array([[0, 7, 255]], np.uint8),
        "f64": np.array([0.5, -0.25], np.float64),  # `floats` are float32: exact values only
        "flag": np.array([True, False, True]),
    }
    for name, value in tensors.items():
        workspace.FeedBlob(name, value)
    net = core.Net("dtype_net")
    net.Copy(["f32"], "f32_copy")
    init_net, _ = me.Export(workspace, net, list(tensors))
    types = {op.output[0]: op.type for op in init_net.op}
    assert types == {"f32": "GivenTensorFill", "i32": "GivenTensorIntFill", "i64": "GivenTensorInt64Fill",
                     "u8": "GivenTensorStringFill", "f64": "GivenTensorDoubleFill",
                     "flag": "GivenTensorBoolFill"}
    u8_args = {a.name: a for a in init_net.op[3].arg}
    assert list(u8_args["shape"].ints) == [1] and list(u8_args["values"].strings) == [bytes([0, 7, 255])]

    workspace.ResetWorkspace()
    workspace.RunNetOnce(init_net)
    for name in ("f32", "i32", "i64", "f64", "flag"):
        got = workspace.FetchBlob(name)
        assert got.dtype == tensors[name].dtype, name
        np.testing.assert_array_equal(got, tensors[name])
    raw = workspace.FetchBlob("u8")
    assert raw.shape == (1,) and bytes(raw[0]) == bytes([0, 7, 255])


def test_unsupported_dtype_is_rejected():
    workspace.FeedBlob("half", np.zeros(3, np.float16))
    with pytest.raises(TypeError, match="float16"):
        me.Export(workspace, core.Net("half_net"), ["half"])


def test_net_without_external_inputs_takes_inputs_in_first_use_order():
    proto = caffe2_pb2.NetDef(name="bare")
    proto.op.add(type="Sum", input=["b", "a"], output=["s"])
    proto.op.add(type="Relu", input=["s"], output=["s"])  # in place: still an output
    proto.op.add(type="Mul", input=["s", "a"], output=["m"])
    init_net, predict_net = me.Export(workspace, proto, [])
    assert list(predict_net.external_input) == ["b", "a"]
    assert list(predict_net.external_output) == ["m"]
    assert [op.output[0] for op in init_net.op] == ["b", "a"]

    a = np.array([1.0, -2.0, 3.0], np.float32)
    b = np.array([0.5, 0.5, -9.0], np.float32)
    got, = workspace.Predictor(init_net, predict_net).run([b, a])
    np.testing.assert_allclose(got, np.maximum(a + b, 0) * a)


def test_caffe2_import_path():
    from caffe2.python.predictor import mobile_exporter
    assert mobile_exporter.Export is me.Export
