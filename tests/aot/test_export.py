"""Bundles from predictor exports: a minidb that predictor_exporter.save_to_db wrote (through the
`netjit aot` command line) and a self-contained MetaNetDef .pb, against prepare_prediction_net
and the JIT Predictor; and the errors for exports a bundle cannot come from."""
from __future__ import annotations

import json

import numpy as np
import pytest

from netjit import aot, brew, model_helper, workspace
from netjit.compiler.aot import AotError, build_bundle
from caffe2.python.predictor import predictor_exporter as pe
from netjit.predictor_constants import predictor_constants as pc
from netjit.proto import caffe2_pb2

BATCH = 3


def _export_model(tmp_path, db_name="model.minidb"):
    """A small conv net exported with save_to_db; returns (db path, meta, input, params)."""
    workspace.ResetWorkspace()
    model = model_helper.ModelHelper(name="exported_cnn")
    conv = brew.conv(model, "data", "conv", dim_in=2, dim_out=4, kernel=3, pad=1)
    relu = brew.relu(model, conv, "relu")
    pool = brew.max_pool(model, relu, "pool", kernel=2, stride=2)
    fc = brew.fc(model, pool, "fc", dim_in=4 * 3 * 3, dim_out=5)
    brew.softmax(model, fc, "prob")
    workspace.RunNetOnce(model.param_init_net)
    x = np.random.default_rng(3).standard_normal((BATCH, 2, 6, 6)).astype(np.float32)
    workspace.FeedBlob("data", x)
    params = [str(p) for p in model.params]
    meta = pe.PredictorExportMeta(model.net, params, ["data"], ["prob"], shapes={"data": x.shape, "prob": (BATCH, 5)})
    path = tmp_path / db_name
    pe.save_to_db("minidb", str(path), meta)
    values = {p: workspace.FetchBlob(p) for p in params}
    return path, meta, x, values


def _reference(path, x):
    """What Caffe2's own loading path gives: prepare_prediction_net, feed, run."""
    workspace.ResetWorkspace()
    net = pe.prepare_prediction_net(str(path), "minidb")
    workspace.FeedBlob("data", x)
    workspace.RunNet(net)
    return workspace.FetchBlob("prob")


def test_minidb_export_through_the_cli(tmp_path):
    from netjit.cli import main
    path, _, x, _ = _export_model(tmp_path)
    out = tmp_path / "bundle"
    assert main(["aot", str(path), "--name", "exported", "-o", str(out), "--quiet"]) == 0
    m = json.loads((out / "bundle.json").read_text())
    # the input and its shape come from the export; the outputs are the export's
    assert m["inputs"] == [{"name": "data", "shape": [BATCH, 2, 6, 6], "dtype": "float32", "bytes": x.nbytes}]
    assert [t["name"] for t in m["outputs"]] == ["prob"]
    got, = aot.load(out).run({"data": x})
    np.testing.assert_allclose(got, _reference(path, x), rtol=0, atol=1e-5)


def test_meta_net_def_pb_with_its_own_parameters(tmp_path):
    """A MetaNetDef whose global-init fills the parameters (GivenTensorFill) instead of loading them
    from a DB: the .pb alone is enough."""
    path, meta, x, values = _export_model(tmp_path)
    meta_net_def = pe.get_meta_net_def(meta)
    for entry in meta_net_def.nets:
        if entry.key == pc.GLOBAL_INIT_NET_TYPE:
            init = caffe2_pb2.NetDef(name="global-init")
            for blob, value in values.items():
                op = init.op.add(type="GivenTensorFill", output=[blob])
                op.arg.add(name="shape", ints=list(value.shape))
                op.arg.add(name="values", floats=value.ravel().tolist())
            entry.value.CopyFrom(init)
    pb = tmp_path / "meta.pb"
    pb.write_bytes(meta_net_def.SerializeToString())
    out = tmp_path / "from_pb"
    build_bundle(str(pb), None, {}, "from_pb", out, progress=False)
    got, = aot.load(out).run([x])
    np.testing.assert_allclose(got, _reference(path, x), rtol=0, atol=1e-5)
    # --input overrides the exported batch
    x8 = np.concatenate([x, x, x[:2]])
    build_bundle(str(pb), None, {"data": x8.shape}, "from_pb8", tmp_path / "from_pb8", progress=False)
    got8, = aot.load(tmp_path / "from_pb8").run([x8])
    np.testing.assert_allclose(got8[:BATCH], got, rtol=0, atol=1e-5)


def test_exports_a_bundle_cannot_come_from(tmp_path):
    path, meta, _, _ = _export_model(tmp_path)
    pb = tmp_path / "meta_only.pb"
    pb.write_bytes(pe.get_meta_net_def(meta).SerializeToString())
    with pytest.raises(AotError, match="loads its parameters from a DB"):
        build_bundle(str(pb), None, {}, "m", tmp_path / "m", progress=False)
    not_export = tmp_path / "plain.minidb"
    from netjit.runtime.db import open_db
    with open_db(not_export, "minidb", "new") as db:
        txn = db.new_transaction()
        txn.put(pc.META_NET_DEF, caffe2_pb2.BlobProto(name=pc.META_NET_DEF, type="std::string",
                                                      content=b"\x08\x01").SerializeToString())
        txn.commit()
    with pytest.raises(AotError, match="not a MetaNetDef"):
        build_bundle(str(not_export), None, {}, "m", tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()
