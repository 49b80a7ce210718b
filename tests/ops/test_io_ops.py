"""DB and checkpoint ops through the reference runner: Save/Load on minidb and lmdb, Checkpoint,
DBExists, CreateDB + TensorProtosDBInput (small DBs and the real MNIST digits), and their errors."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from netjit.compiler.ops import io_ops
from netjit.compiler.ops.registry import HOST, lookup
from netjit.compiler.reference import run_operator_once, run_ops
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_op
from netjit.runtime import db_minidb
from netjit.runtime.db import open_db
from netjit.runtime.errors import OpError
from netjit.runtime.serialize import array_to_tensor_proto
from netjit.runtime.workspace import Workspace

DB_TYPES = ["minidb", "lmdb"]
BLOBS = {
    "f32": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
    "f64": np.array([1e-300, 2.5]),
    "f16": np.array([[0.5, -65504.0]], np.float16),
    "i32": np.array([-7, 2 ** 31 - 1], np.int32),
    "i64": np.array([2 ** 40, -1], np.int64),
    "i16": np.array([-300], np.int16),
    "i8": np.array([-128, 127], np.int8),
    "u8": np.arange(250, 256, dtype=np.uint8),
    "u16": np.array([65535], np.uint16),
    "b": np.array([True, False, True]),
    "strs": np.array([b"a", b"\x00bc"], dtype=object),
    "scalar": np.array(4.0, np.float32),
    "empty": np.zeros((0, 2), np.int32),
    "text": b"a string blob",
}


def _ws(tmp_path, name="ws") -> Workspace:
    return Workspace(name, root_folder=str(tmp_path))


def _feed(ws, blobs):
    for k, v in blobs.items():
        ws.feed(k, v)


def _assert_same(got, want):
    if isinstance(want, bytes):
        assert got == want
    else:
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tolist() == want.tolist() if want.dtype == object else np.array_equal(got, want)


def test_all_io_ops_are_host_ops():
    for name in ("CreateDB", "TensorProtosDBInput", "Save", "Load", "Checkpoint", "Snapshot", "DBExists"):
        assert lookup(name).category == HOST


# ---------------------------------------------------------------------------------- Save / Load
@pytest.mark.parametrize("db_type", DB_TYPES)
def test_save_load_roundtrip_every_dtype(tmp_path, db_type):
    ws = _ws(tmp_path)
    _feed(ws, BLOBS)
    run_operator_once(make_op("Save", list(BLOBS), [], db="all.db", db_type=db_type), ws)
    assert os.path.exists(tmp_path / "all.db")            # relative to the root folder
    fresh = _ws(tmp_path, "fresh")
    run_operator_once(make_op("Load", [], list(BLOBS), db="all.db", db_type=db_type), fresh)
    for k, v in BLOBS.items():
        _assert_same(fresh.fetch(k), v)


def _caffe2_w_record() -> tuple[bytes, bytes]:
    """The record Caffe2's Save writes for a float tensor w = [[1, 2]], spelled out on the wire."""
    tensor = (b"\x08\x01" b"\x08\x02"                                # dims 1, 2 (unpacked)
              b"\x10\x01"                                            # data_type FLOAT
              b"\x1a\x08" + struct.pack("<2f", 1.0, 2.0) +            # float_data, packed
              b"\x3a\x01w"                                           # name
              b"\x5a\x04\x08\x00\x10\x02")                            # segment {begin 0, end 2}
    blob = b"\x0a\x01w" b"\x12\x06Tensor" b"\x1a" + bytes([len(tensor)]) + tensor
    return b"w#%0", blob


def test_load_a_minidb_written_byte_by_byte(tmp_path):
    key, value = _caffe2_w_record()
    text = caffe2_pb2.BlobProto(name="s", type="std::string", content=b"hi").SerializeToString()
    raw = b"".join(struct.pack("=ii", len(k), len(v)) + k + v for k, v in [(key, value), (b"s", text)])
    (tmp_path / "caffe2.minidb").write_bytes(raw)
    ws = _ws(tmp_path)
    run_operator_once(make_op("Load", [], ["w", "s"], db="caffe2.minidb", db_type="minidb"), ws)
    assert ws.fetch("w").dtype == np.float32 and ws.fetch("w").tolist() == [[1.0, 2.0]]
    assert ws.fetch("s") == b"hi"
    # And Save writes exactly those bytes back.
    run_operator_once(make_op("Save", ["w", "s"], [], db="ours.minidb", db_type="minidb"), ws)
    assert (tmp_path / "ours.minidb").read_bytes() == raw


@pytest.mark.parametrize("db_type", DB_TYPES)
def test_tensors_are_chunked_and_merged(tmp_path, db_type):
    ws = _ws(tmp_path)
    w = np.arange(23, dtype=np.float32).reshape(23, 1)
    ws.feed("w", w)
    run_operator_once(make_op("Save", ["w"], [], db="c.db", db_type=db_type, chunk_size=5), ws)
    with open_db(str(tmp_path / "c.db"), db_type, "read") as db:
        cur, keys = db.new_cursor(), []
        while cur.valid():
            keys.append(cur.key())
            cur.next()
    assert sorted(keys) == [b"w#%0", b"w#%1", b"w#%2", b"w#%3", b"w#%4"]
    out = _ws(tmp_path, "out")
    run_operator_once(make_op("Load", [], ["w"], db="c.db", db_type=db_type), out)
    np.testing.assert_array_equal(out.fetch("w"), w)


def test_missing_chunk_is_an_error_unless_allow_incomplete(tmp_path):
    ws = _ws(tmp_path)
    ws.feed("w", np.arange(10, dtype=np.int64))
    run_operator_once(make_op("Save", ["w"], [], db="full.minidb", db_type="minidb", chunk_size=4), ws)
    with open_db(str(tmp_path / "full.minidb"), "minidb", "read") as src, \
            open_db(str(tmp_path / "holed.minidb"), "minidb", "new") as dst:
        cur, txn = src.new_cursor(), dst.new_transaction()
        while cur.valid():
            if cur.key() != b"w#%1":
                txn.put(cur.key(), cur.value())
            cur.next()
        txn.commit()
    with pytest.raises(OpError, match=r"incomplete tensor data.*'w' \(6 of 10 elements\)"):
        run_operator_once(make_op("Load", [], ["w"], db="holed.minidb", db_type="minidb"), ws)
    run_operator_once(make_op("Load", [], ["w"], db="holed.minidb", db_type="minidb", allow_incomplete=True), ws)
    assert ws.fetch("w").tolist() == [0, 1, 2, 3, 0, 0, 0, 0, 8, 9]


def test_name_rewriting_args(tmp_path):
    ws = _ws(tmp_path)
    ws.feed("gpu_0/w", np.ones(2, np.float32))
    ws.feed("gpu_0/b", np.zeros(1, np.float32))
    run_operator_once(make_op("Save", ["gpu_0/w", "gpu_0/b"], [], db="p.minidb", db_type="minidb",
                              strip_prefix="gpu_0/"), ws)
    out = _ws(tmp_path, "o")
    run_operator_once(make_op("Load", [], ["w", "b"], db="p.minidb", db_type="minidb"), out)
    assert out.fetch("w").tolist() == [1.0, 1.0]
    run_operator_once(make_op("Load", [], [], db="p.minidb", db_type="minidb", load_all=1,
                              add_prefix="m/"), out)
    assert {"m/w", "m/b"} <= set(out.names())
    run_operator_once(make_op("Load", [], ["W2"], db="p.minidb", db_type="minidb", source_blob_names=["w"]), out)
    assert out.fetch("W2").tolist() == [1.0, 1.0]
    run_operator_once(make_op("Save", ["gpu_0/w"], [], db="o.minidb", db_type="minidb",
                              blob_name_overrides=["renamed"]), ws)
    run_operator_once(make_op("Load", [], ["renamed"], db="o.minidb", db_type="minidb"), out)
    # strip_prefix on Load cuts through the first occurrence of the prefix.
    run_operator_once(make_op("Load", [], ["named"], db="o.minidb", db_type="minidb", strip_prefix="re"), out)
    assert out.fetch("named").tolist() == [1.0, 1.0]


def test_load_from_several_dbs_and_duplicates(tmp_path):
    ws = _ws(tmp_path)
    ws.feed("a", np.array([1], np.int32))
    ws.feed("b", np.array([2], np.int32))
    run_operator_once(make_op("Save", ["a"], [], db="a.minidb", db_type="minidb"), ws)
    run_operator_once(make_op("Save", ["b"], [], db="b.lmdb", db_type="lmdb"), ws)
    run_operator_once(make_op("Save", ["a", "b"], [], db="ab.minidb", db_type="minidb"), ws)
    out = _ws(tmp_path, "o")
    run_operator_once(make_op("Save", ["b"], [], db="bonly.minidb", db_type="minidb"), ws)
    run_operator_once(make_op("Load", [], ["a", "b"], dbs=["a.minidb", "bonly.minidb"], db_type="minidb"), out)
    assert out.fetch("a").tolist() == [1] and out.fetch("b").tolist() == [2]
    with pytest.raises(OpError, match="'a' is in more than one of the DBs"):
        run_operator_once(make_op("Load", [], ["a", "b"], dbs=["a.minidb", "ab.minidb"], db_type="minidb"), out)
    with pytest.raises(OpError, match="names a DB twice"):
        run_operator_once(make_op("Load", [], ["a"], dbs=["a.minidb", "a.minidb"], db_type="minidb"), out)
    fresh = _ws(tmp_path, "readers")
    run_ops([make_op("CreateDB", [], ["ra"], db=str(tmp_path / "a.minidb"), db_type="minidb"),
             make_op("CreateDB", [], ["rb"], db=str(tmp_path / "b.lmdb"), db_type="lmdb"),
             make_op("Load", ["ra", "rb"], ["a", "b"])], fresh)
    assert fresh.fetch("a").tolist() == [1] and fresh.fetch("b").tolist() == [2]


def test_absolute_path(tmp_path):
    ws = Workspace("abs", root_folder=str(tmp_path / "root_that_is_not_used"))
    ws.feed("x", np.arange(3, dtype=np.float64))
    target = str(tmp_path / "abs.lmdb")
    run_operator_once(make_op("Save", ["x"], [], db=target, db_type="lmdb", absolute_path=1), ws)
    run_operator_once(make_op("Load", [], ["y"], db=target, db_type="lmdb", absolute_path=True,
                              source_blob_names=["x"]), ws)
    assert ws.fetch("y").tolist() == [0.0, 1.0, 2.0]


def test_load_errors(tmp_path):
    ws = _ws(tmp_path)
    ws.feed("x", np.ones(1, np.float32))
    run_operator_once(make_op("Save", ["x"], [], db="x.minidb", db_type="minidb"), ws)
    with pytest.raises(OpError, match=r"not found in the DB\(s\): \['nope'\]"):
        run_operator_once(make_op("Load", [], ["x", "nope"], db="x.minidb", db_type="minidb"), ws)
    run_operator_once(make_op("Load", [], ["x", "nope"], db="x.minidb", db_type="minidb",
                              allow_incomplete=True), ws)
    with pytest.raises(OpError, match=r"\(Load\): minidb '.*missing.minidb' does not exist"):
        run_operator_once(make_op("Load", [], ["x"], db="missing.minidb", db_type="minidb"), ws)
    with pytest.raises(OpError, match=r"unknown db_type 'bogus'; available types"):
        run_operator_once(make_op("Load", [], ["x"], db="x.minidb", db_type="bogus"), ws)
    with pytest.raises(OpError, match="is a file.*db_type='minidb'"):
        run_operator_once(make_op("Load", [], ["x"], db="x.minidb", db_type="lmdb"), ws)
    with pytest.raises(OpError, match="'db_type' is required"):
        run_operator_once(make_op("Load", [], ["x"], db="x.minidb"), ws)
    with pytest.raises(OpError, match="source_blob_names has 2 name"):
        run_operator_once(make_op("Load", [], ["x"], db="x.minidb", db_type="minidb",
                                  source_blob_names=["a", "b"]), ws)
    (tmp_path / "junk.minidb").write_bytes(b"\x04\x00\x00\x00\x03\x00\x00\x00x#%0\xff\xff\xff")
    with pytest.raises(OpError, match=r"key 'x#%0'.*not a valid BlobProto"):
        run_operator_once(make_op("Load", [], ["x"], db="junk.minidb", db_type="minidb"), ws)
    before = ws.fetch("x")
    assert before.tolist() == [1.0]        # failed loads left the blob alone


def test_failed_load_all_writes_nothing(tmp_path):
    ws = _ws(tmp_path)
    ws.feed("a", np.ones(2, np.float32))
    run_operator_once(make_op("Save", ["a"], [], db="g.minidb", db_type="minidb"), ws)
    with open(tmp_path / "g.minidb", "ab") as f:   # a second record, cut short
        f.write(b"\x01\x00\x00\x00\x50\x00\x00\x00bshort")
    out = _ws(tmp_path, "o")
    with pytest.raises(OpError, match=r"byte offset \d+ is truncated"):
        run_operator_once(make_op("Load", [], [], db="g.minidb", db_type="minidb", load_all=1), out)
    assert "a" not in out.names()


@pytest.mark.parametrize("db_type", DB_TYPES)
def test_failed_save_keeps_previous_db(tmp_path, db_type):
    ws = _ws(tmp_path)
    ws.feed("w", np.arange(4, dtype=np.float32))
    run_operator_once(make_op("Save", ["w"], [], db="keep.db", db_type=db_type), ws)
    ws.feed("w", np.full(4, 9, np.float32))
    ws.feed("bad", object())                      # fails after "w" was already written
    with pytest.raises(OpError, match=r"cannot save input 1: .*no serializer"):
        run_operator_once(make_op("Save", ["w", "bad"], [], db="keep.db", db_type=db_type), ws)
    out = _ws(tmp_path, "o")
    run_operator_once(make_op("Load", [], ["w"], db="keep.db", db_type=db_type), out)
    assert out.fetch("w").tolist() == [0, 1, 2, 3]
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_save_survives_a_writer_failing_midway(tmp_path, monkeypatch):
    ws = _ws(tmp_path)
    ws.feed("w", np.arange(30, dtype=np.float32))
    run_operator_once(make_op("Save", ["w"], [], db="m.minidb", db_type="minidb"), ws)
    before = (tmp_path / "m.minidb").read_bytes()
    calls = []
    real = db_minidb.write_record

    def flaky(handle, key, value):
        calls.append(key)
        if len(calls) > 2:
            raise OSError(28, "No space left on device")
        real(handle, key, value)
    monkeypatch.setattr(db_minidb, "write_record", flaky)
    ws.feed("w", np.zeros(30, np.float32))
    with pytest.raises(OpError, match="No space left on device"):
        run_operator_once(make_op("Save", ["w"], [], db="m.minidb", db_type="minidb", chunk_size=7), ws)
    assert (tmp_path / "m.minidb").read_bytes() == before


def test_save_errors(tmp_path):
    ws = _ws(tmp_path)
    ws.feed("a/x", np.ones(1))
    ws.feed("b/x", np.ones(1))
    with pytest.raises(OpError, match="same name 'x'"):
        run_operator_once(make_op("Save", ["a/x", "b/x"], [], db="d.minidb", db_type="minidb", strip_prefix="/"), ws)
    with pytest.raises(OpError, match="blob_name_overrides has 1 name"):
        run_operator_once(make_op("Save", ["a/x", "b/x"], [], db="d.minidb", db_type="minidb",
                                  blob_name_overrides=["only"]), ws)
    with pytest.raises(OpError, match="'db_type' is required"):
        run_operator_once(make_op("Save", ["a/x"], [], db="d.minidb"), ws)
    ws.create_blob("unset")
    with pytest.raises(OpError, match="never written"):
        run_operator_once(make_op("Save", ["unset"], [], db="d.minidb", db_type="minidb"), ws)
    assert not os.path.exists(tmp_path / "d.minidb")


# ---------------------------------------------------------------------------------- Checkpoint
@pytest.mark.parametrize("op_type", ["Checkpoint", "Snapshot"])
def test_checkpoint_pattern_and_every(tmp_path, op_type):
    ws = _ws(tmp_path)
    ws.feed("w", np.ones(3, np.float32))
    for step in range(6):
        ws.feed("iter", np.array([step], np.int64))
        run_operator_once(make_op(op_type, ["iter", "w"], [], db="ckpt_%03d.minidb", db_type="minidb",
                                  every=2), ws)
    assert sorted(n for n in os.listdir(tmp_path)) == ["ckpt_000.minidb", "ckpt_002.minidb", "ckpt_004.minidb"]
    out = _ws(tmp_path, "o")
    run_operator_once(make_op("Load", [], [], db="ckpt_004.minidb", db_type="minidb", load_all=1), out)
    assert out.fetch("iter").tolist() == [4] and out.fetch("iter").dtype == np.int64   # iter saved too
    assert out.fetch("w").tolist() == [1, 1, 1]


def test_checkpoint_errors(tmp_path):
    ws = _ws(tmp_path)
    ws.feed("iter", np.array([3], np.int32))
    with pytest.raises(OpError, match="must be the int64 iteration counter"):
        run_operator_once(make_op("Checkpoint", ["iter"], [], db="c%d", db_type="minidb"), ws)
    ws.feed("iter", np.array([3], np.int64))
    with pytest.raises(OpError, match="every must be > 0"):
        run_operator_once(make_op("Checkpoint", ["iter"], [], db="c%d", db_type="minidb", every=0), ws)
    with pytest.raises(OpError, match="must hold one integer directive"):
        run_operator_once(make_op("Checkpoint", ["iter"], [], db="c%s%s", db_type="minidb"), ws)
    with pytest.raises(OpError, match="argument 'db' is required"):
        run_operator_once(make_op("Checkpoint", ["iter"], [], db_type="minidb"), ws)


# ---------------------------------------------------------------------------------- DBExists
def test_db_exists(tmp_path):
    ws = _ws(tmp_path)
    ws.feed("x", np.ones(1))
    run_operator_once(make_op("Save", ["x"], [], db="e.lmdb", db_type="lmdb"), ws)
    for name, db_type, want in [("e.lmdb", "lmdb", True), ("e.lmdb", "LMDB", True), ("e.lmdb", "minidb", False),
                                ("nope.lmdb", "lmdb", False)]:
        run_operator_once(make_op("DBExists", [], ["ok"], db_name=name, db_type=db_type), ws)
        got = ws.fetch("ok")
        assert got.dtype == np.bool_ and got.shape == () and bool(got) is want
    run_operator_once(make_op("DBExists", [], ["ok"], db_name=str(tmp_path / "e.lmdb"), db_type="lmdb",
                              absolute_path=1), ws)
    assert bool(ws.fetch("ok"))
    with pytest.raises(OpError, match="unknown db_type"):
        run_operator_once(make_op("DBExists", [], ["ok"], db_name="e.lmdb", db_type="nosuch"), ws)


# ---------------------------------------------------------------------------------- DB input
def _records_db(path, db_type, n=5, extra=None):
    """n records of TensorProtos [float [2] = (i, -i), int32 scalar = i]."""
    with open_db(path, db_type, "new") as db:
        txn = db.new_transaction()
        for i in range(n):
            protos = caffe2_pb2.TensorProtos()
            protos.protos.add().CopyFrom(array_to_tensor_proto(np.array([i, -i], np.float32), set_segment=False))
            lab = protos.protos.add()
            lab.data_type = caffe2_pb2.TensorProto.INT32
            lab.int32_data.append(i)
            if extra is not None and i == extra[0]:
                extra[1](protos)
            txn.put(f"{i:08d}", protos.SerializeToString())
        txn.commit()


@pytest.mark.parametrize("db_type", DB_TYPES)
def test_db_input_batches_wrap_around(tmp_path, db_type):
    path = str(tmp_path / f"r.{db_type}")
    _records_db(path, db_type)
    ws = _ws(tmp_path)
    run_operator_once(make_op("CreateDB", [], ["reader"], db=path, db_type=db_type), ws)
    seen = []
    for _ in range(3):
        run_operator_once(make_op("TensorProtosDBInput", ["reader"], ["data", "label"], batch_size=2), ws)
        data, label = ws.fetch("data"), ws.fetch("label")
        assert data.shape == (2, 2) and data.dtype == np.float32
        assert label.shape == (2,) and label.dtype == np.int32
        np.testing.assert_array_equal(data[:, 0], label)
        seen += label.tolist()
    assert seen == [0, 1, 2, 3, 4, 0]


def test_db_input_batch_zero_and_sharding(tmp_path):
    path = str(tmp_path / "r.minidb")
    _records_db(path, "minidb")
    ws = _ws(tmp_path)
    run_ops([make_op("CreateDB", [], ["r1"], db=path, db_type="minidb", num_shards=2, shard_id=1),
             make_op("TensorProtosDBInput", ["r1"], ["d", "l"])], ws)
    assert ws.fetch("d").tolist() == [1.0, -1.0] and ws.fetch("l").shape == () and int(ws.fetch("l")) == 1
    run_operator_once(make_op("TensorProtosDBInput", ["r1"], ["d", "l"], batch_size=3), ws)
    assert ws.fetch("l").tolist() == [3, 1, 3]


def test_db_input_errors(tmp_path):
    path = str(tmp_path / "bad.minidb")
    _records_db(path, "minidb", extra=(1, lambda p: p.protos.add()))      # record 1 has 3 tensors
    ws = _ws(tmp_path)
    run_operator_once(make_op("CreateDB", [], ["r"], db=path, db_type="minidb"), ws)
    with pytest.raises(OpError, match=r"record b'00000001'.*holds 3 tensor\(s\), but the op has 2 output"):
        run_operator_once(make_op("TensorProtosDBInput", ["r"], ["d", "l"], batch_size=2), ws)
    shape_path = str(tmp_path / "shape.minidb")
    _records_db(shape_path, "minidb", extra=(1, lambda p: p.protos[0].CopyFrom(
        array_to_tensor_proto(np.zeros(3, np.float32), set_segment=False))))
    run_operator_once(make_op("CreateDB", [], ["r"], db=shape_path, db_type="minidb"), ws)
    with pytest.raises(OpError, match=r"tensor 0 is \[3\] float32, but the batch's first record had \[2\]"):
        run_operator_once(make_op("TensorProtosDBInput", ["r"], ["d", "l"], batch_size=2), ws)
    ws.feed("notreader", np.zeros(1))
    with pytest.raises(OpError, match="must be a DB reader"):
        run_operator_once(make_op("TensorProtosDBInput", ["notreader"], ["d"]), ws)
    with pytest.raises(OpError, match=r"\(CreateDB\): minidb '.*absent' does not exist"):
        run_operator_once(make_op("CreateDB", [], ["r"], db=str(tmp_path / "absent"), db_type="minidb"), ws)
    with pytest.raises(OpError, match="LevelDB is not supported"):     # Caffe2's default db_type
        run_operator_once(make_op("CreateDB", [], ["r"], db=path), ws)


def test_reader_blob_can_be_saved_and_loaded(tmp_path):
    path = str(tmp_path / "r.lmdb")
    _records_db(path, "lmdb")
    ws = _ws(tmp_path)
    run_ops([make_op("CreateDB", [], ["reader"], db=path, db_type="lmdb"),
             make_op("TensorProtosDBInput", ["reader"], ["d", "l"], batch_size=3),
             make_op("Save", ["reader"], [], db="state.minidb", db_type="minidb")], ws)
    out = _ws(tmp_path, "o")
    run_ops([make_op("Load", [], ["reader"], db="state.minidb", db_type="minidb"),
             make_op("TensorProtosDBInput", ["reader"], ["d", "l"], batch_size=2)], out)
    assert out.fetch("l").tolist() == [3, 4]       # resumes where the saved reader stood


# ---------------------------------------------------------------------------------- real MNIST
@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    from tests.conftest import shared_path
    from netjit.mnist_data import build_mnist_db, read_idx
    root = shared_path("data", "mnist")
    images = read_idx(root / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(root / "t10k-labels-idx1-ubyte.gz")
    out = tmp_path_factory.mktemp("mnist")
    paths = {}
    for db_type in DB_TYPES:
        paths[db_type] = str(out / f"mnist-test-nchw-{db_type}")
        build_mnist_db(images, labels, paths[db_type], db_type, start=8000)
    return images, labels, paths


@pytest.mark.parametrize("db_type", DB_TYPES)
def test_db_input_on_real_mnist(tmp_path, mnist, db_type):
    images, labels, paths = mnist
    ws = _ws(tmp_path)
    run_operator_once(make_op("CreateDB", [], ["dbreader"], db=paths[db_type], db_type=db_type), ws)
    batch = 64
    op = make_op("TensorProtosDBInput", ["dbreader"], ["data", "label"], batch_size=batch)
    for step in range(33):      # 2000 records: step 31 wraps around inside the batch
        run_operator_once(op, ws)
    data, label = ws.fetch("data"), ws.fetch("label")
    assert data.dtype == np.uint8 and data.shape == (batch, 1, 28, 28)
    assert label.dtype == np.int32 and label.shape == (batch,)
    first = (32 * batch) % 2000
    index = [8000 + (first + i) % 2000 for i in range(batch)]
    np.testing.assert_array_equal(data[:, 0], images[index])
    np.testing.assert_array_equal(label, labels[index])


def test_io_ops_module_is_registered():
    assert io_ops.save is lookup("Save") and lookup("Snapshot").reference is lookup("Checkpoint").reference
