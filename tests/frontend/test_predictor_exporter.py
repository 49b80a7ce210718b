"""predictor_exporter: PredictorExportMeta, the MetaNetDef layout, and the DB round trip."""
from __future__ import annotations

import numpy as np
import pytest

from netjit import core, workspace
from netjit import predictor_exporter as pe
from netjit.predictor_constants import predictor_constants as pc
from netjit.proto import caffe2_pb2, metanet_pb2
from netjit.runtime.db import Mode, open_db

RNG = np.random.default_rng(7)


def _small_net(name: str = "exp_net") -> core.Net:
    """x -> FC(w1,b1) -> Relu -> FC(w2,b2) -> Softmax; parameters fed into the workspace."""
    net = core.Net(name)
    h = net.FC(["x", "w1", "b1"], "h")
    h = net.Relu(h, "h_relu")
    logits = net.FC([h, "w2", "b2"], "logits")
    net.Softmax(logits, "prob")
    for blob, shape in (("w1", (5, 4)), ("b1", (5,)), ("w2", (3, 5)), ("b2", (3,))):
        workspace.FeedBlob(blob, RNG.standard_normal(shape).astype(np.float32))
    workspace.FeedBlob("x", RNG.standard_normal((2, 4)).astype(np.float32))
    return net


PARAMS = ["w1", "b1", "w2", "b2"]


def _reference_prob(net: core.Net, x: np.ndarray) -> np.ndarray:
    workspace.FeedBlob("x", x)
    workspace.RunNetOnce(net)
    return workspace.FetchBlob("prob")


# ------------------------------------------------------------------------------ the meta tuple
def test_meta_names_are_strings_and_keys_follow_the_model_name():
    net = _small_net()
    meta = pe.PredictorExportMeta(net, [core.BlobReference(p) for p in PARAMS], [b"x"], ["prob"])
    assert meta.parameters == PARAMS and meta.inputs == ["x"] and meta.outputs == ["prob"]
    assert isinstance(meta.predict_net, caffe2_pb2.NetDef)
    assert meta.shapes == {} and meta.name == ""
    assert (meta.predict_init_name(), meta.global_init_name(), meta.predict_net_name()) == \
        ("PREDICT_INIT_NET_TYPE", "GLOBAL_INIT_NET_TYPE", "PREDICT_NET_TYPE")
    assert (meta.parameters_name(), meta.inputs_name(), meta.outputs_name()) == \
        ("PARAMETERS_BLOB_TYPE", "INPUTS_BLOB_TYPE", "OUTPUTS_BLOB_TYPE")
    named = meta._replace(name="mymodel")
    assert named.global_init_name() == "GLOBAL_INIT_NET_TYPE_mymodel"
    assert named.train_init_plan_name() == "TRAIN_INIT_PLAN_TYPE_mymodel"
    assert named.train_plan_name() == "TRAIN_PLAN_TYPE_mymodel"


@pytest.mark.parametrize("kwargs, message", [
    (dict(parameters=["w1"], inputs=["x", "x"], outputs=["prob"]), "unique"),
    (dict(parameters=["w1", "x"], inputs=["x"], outputs=["prob"]), "disjoint"),
    (dict(parameters=["w1", "prob"], inputs=["x"], outputs=["prob"]), "disjoint"),
    (dict(parameters="w1", inputs=["x"], outputs=["prob"]), "list of blob names"),
])
def test_meta_rejects_bad_blob_lists(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        pe.PredictorExportMeta(core.Net("bad_meta"), **kwargs)


# ------------------------------------------------------------------------------ MetaNetDef layout
def test_meta_net_def_layout():
    net = _small_net()
    net.Proto().arg.add(name="model_id", i=1234)
    extra = core.Net("extra_init")
    extra.ConstantFill([], "extra_blob", shape=[1], value=3.0)
    meta = pe.PredictorExportMeta(net, PARAMS, ["x"], ["prob"], shapes={"prob": (2, 3)},
                                  extra_init_net=extra, net_type="dag", num_workers=2)
    meta_net_def = pe.get_meta_net_def(meta)

    assert [e.key for e in meta_net_def.nets] == \
        [pc.PREDICT_INIT_NET_TYPE, pc.GLOBAL_INIT_NET_TYPE, pc.PREDICT_NET_TYPE]
    assert [(e.key, list(e.value)) for e in meta_net_def.blobs] == \
        [(pc.PARAMETERS_BLOB_TYPE, PARAMS), (pc.INPUTS_BLOB_TYPE, ["x"]), (pc.OUTPUTS_BLOB_TYPE, ["prob"])]

    init, global_init, predict = (e.value for e in meta_net_def.nets)
    assert init.name == "predict-init"
    fills = init.op[:2]
    assert [(op.type, list(op.output)) for op in fills] == [("ConstantFill", ["x"]), ("ConstantFill", ["prob"])]
    # x's shape comes from the workspace blob, prob's from `shapes`.
    assert [list(op.arg[0].ints) for op in fills] == [[2, 4], [2, 3]]
    assert all(op.arg[1].name == "value" and op.arg[1].f == 0.0 for op in fills)
    assert not any(op.HasField("device_option") for op in fills)
    assert [op.type for op in init.op[2:]] == ["ConstantFill"] and init.op[2].output[0] == "extra_blob"
    assert list(init.external_input) == ["x", "prob"]

    assert global_init.name == "global-init"
    assert [(op.type, list(op.input), list(op.output)) for op in global_init.op] == \
        [("Load", [pc.PREDICTOR_DBREADER], PARAMS)]
    assert list(global_init.external_input) == [pc.PREDICTOR_DBREADER]
    assert list(global_init.external_output) == PARAMS

    assert predict.name == net.Name()
    assert [op.type for op in predict.op] == ["FC", "Relu", "FC", "Softmax"]
    assert list(predict.external_input) == ["x"] + PARAMS
    assert list(predict.external_output) == ["prob"]
    assert predict.type == "dag" and predict.num_workers == 2

    for n in (init, global_init, predict):
        ids = [a.i for a in n.arg if a.name == "model_id"]
        assert ids == [1234], n.name


def test_missing_shape_is_a_clear_error():
    net = _small_net()
    meta = pe.PredictorExportMeta(net, PARAMS, ["x"], ["prob"])  # prob never computed, no shape given
    with pytest.raises(Exception, match="prob"):
        pe.get_meta_net_def(meta)


# ------------------------------------------------------------------------------ DB round trip
def _db_keys(path: str, db_type: str) -> list[str]:
    with open_db(path, db_type, Mode.READ) as db:
        cursor = db.new_cursor()
        keys = []
        while cursor.valid():
            keys.append(cursor.key().decode())
            cursor.next()
        cursor.close()
    return keys


def test_save_to_db_writes_the_meta_net_def_first(tmp_path):
    net = _small_net()
    _reference_prob(net, RNG.standard_normal((2, 4)).astype(np.float32))
    path = str(tmp_path / "model.minidb")
    pe.save_to_db("minidb", path, pe.PredictorExportMeta(net, PARAMS, ["x"], ["prob"]))
    assert _db_keys(path, "minidb") == [pc.META_NET_DEF] + [f"{p}#%0" for p in PARAMS]
    meta_net_def = pe.load_from_db(path, "minidb")
    assert isinstance(meta_net_def, metanet_pb2.MetaNetDef)
    assert pe.GetBlobs(meta_net_def, pc.PARAMETERS_BLOB_TYPE) == PARAMS


@pytest.mark.parametrize("db_type", ["minidb", "lmdb"])
def test_round_trip_gives_the_same_outputs(tmp_path, db_type):
    if db_type == "lmdb":
        pytest.importorskip("lmdb")
    net = _small_net()
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    expected = _reference_prob(net, x)
    weights = {p: workspace.FetchBlob(p) for p in PARAMS}
    path = str(tmp_path / f"model.{db_type}")
    pe.save_to_db(db_type, path, pe.PredictorExportMeta(net, PARAMS, ["x"], ["prob"]))

    workspace.ResetWorkspace()
    predict_net = pe.prepare_prediction_net(path, db_type)
    for p in PARAMS:
        np.testing.assert_array_equal(workspace.FetchBlob(p), weights[p])
    # predict-init left zero-filled inputs/outputs of the exported shapes
    assert workspace.FetchBlob("prob").shape == (2, 3)
    workspace.FeedBlob("x", x)
    workspace.RunNet(predict_net.Proto().name)
    np.testing.assert_allclose(workspace.FetchBlob("prob"), expected, rtol=1e-6, atol=1e-7)
    # and on a different batch size
    x3 = RNG.standard_normal((3, 4)).astype(np.float32)
    workspace.FeedBlob("x", x3)
    workspace.RunNet(predict_net)
    got = workspace.FetchBlob("prob")
    workspace.SwitchWorkspace("check", True)
    for p, w in weights.items():
        workspace.FeedBlob(p, w)
    np.testing.assert_allclose(got, _reference_prob(net, x3), rtol=1e-6, atol=1e-7)


def test_named_export_round_trip(tmp_path):
    net = _small_net()
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    expected = _reference_prob(net, x)
    path = str(tmp_path / "named.minidb")
    pe.save_to_db("minidb", path, pe.PredictorExportMeta(net, PARAMS, ["x"], ["prob"], name="clf"))
    workspace.ResetWorkspace()
    meta_net_def = pe.load_from_db(path, "minidb")
    assert [e.key for e in meta_net_def.nets] == \
        ["PREDICT_INIT_NET_TYPE_clf", "GLOBAL_INIT_NET_TYPE_clf", "PREDICT_NET_TYPE_clf"]
    workspace.ResetWorkspace()
    predict_net = pe.prepare_prediction_net(path, "minidb")
    workspace.FeedBlob("x", x)
    workspace.RunNet(predict_net)
    np.testing.assert_allclose(workspace.FetchBlob("prob"), expected, rtol=1e-6)


def test_load_from_db_applies_the_device_option(tmp_path):
    net = _small_net()
    _reference_prob(net, RNG.standard_normal((2, 4)).astype(np.float32))
    path = str(tmp_path / "dev.minidb")
    pe.save_to_db("minidb", path, pe.PredictorExportMeta(net, PARAMS, ["x"], ["prob"]))
    option = core.DeviceOption(caffe2_pb2.CPU, 0, random_seed=5)
    meta_net_def = pe.load_from_db(path, "minidb", device_option=option)
    ops = [op for e in meta_net_def.nets for op in e.value.op]
    assert ops and all(op.device_option == option for op in ops)
    workspace.ResetWorkspace()
    plain = pe.load_from_db(path, "minidb")
    assert not any(op.HasField("device_option") for e in plain.nets for op in e.value.op)


def test_caffe2_import_path_is_the_same_module():
    from caffe2.python.predictor import predictor_exporter
    from caffe2.python.predictor import predictor_py_utils
    assert predictor_exporter is pe
    assert predictor_py_utils.GetNet is pe.GetNet


# ------------------------------------------------------------------------------ a brew model
def _brew_cnn():
    from netjit import brew
    from netjit.model_helper import ModelHelper
    model = ModelHelper(name="export_cnn")
    conv = brew.conv(model, "data", "conv1", dim_in=1, dim_out=4, kernel=3)
    pool = brew.max_pool(model, brew.relu(model, conv, "relu1"), "pool1", kernel=2, stride=2)
    fc = brew.fc(model, pool, "fc1", dim_in=4 * 3 * 3, dim_out=5)
    brew.softmax(model, fc, "softmax")
    workspace.RunNetOnce(model.param_init_net)
    return model


def test_brew_model_round_trip_through_db_and_mobile_exporter(tmp_path):
    from netjit import mobile_exporter
    model = _brew_cnn()
    params = [str(p) for p in model.GetParams()]
    assert params == ["conv1_w", "conv1_b", "fc1_w", "fc1_b"]
    x = RNG.random((3, 1, 8, 8), dtype=np.float32)
    workspace.FeedBlob("data", x)
    workspace.RunNetOnce(model.net)
    expected = workspace.FetchBlob("softmax")

    path = str(tmp_path / "cnn.minidb")
    pe.save_to_db("minidb", path, pe.PredictorExportMeta(model.net, model.GetParams(), ["data"], ["softmax"]))
    init_net, predict_net = mobile_exporter.Export(workspace, model.net, model.GetParams())

    workspace.ResetWorkspace()
    net = pe.prepare_prediction_net(path, "minidb")
    workspace.FeedBlob("data", x)
    workspace.RunNet(net)
    np.testing.assert_allclose(workspace.FetchBlob("softmax"), expected, rtol=1e-6, atol=1e-7)

    workspace.ResetWorkspace()
    got, = workspace.Predictor(init_net, predict_net).run([x])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
