"""Key/value DBs: minidb byte layout, lmdb directories, protodb, modes, readers, errors, atomicity."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from netjit.proto import caffe2_pb2
from netjit.runtime import db_lmdb, db_minidb
from netjit.runtime.db import DBError, DBReader, Mode, db_exists, known_db_types, open_db

BACKENDS = ["minidb", "lmdb", "protodb"]


def _value(i: int) -> bytes:
    # protodb stores TensorProtos, so every backend gets TensorProto bytes as values.
    return caffe2_pb2.TensorProto(dims=[1], data_type=2, int32_data=[i]).SerializeToString()


def _write(path, db_type, items, mode="new"):
    with open_db(path, db_type, mode) as db:
        txn = db.new_transaction()
        for k, v in items:
            txn.put(k, v)
        txn.commit()


def _read_all(path, db_type):
    with open_db(path, db_type, "read") as db:
        cur = db.new_cursor()
        out = []
        while cur.valid():
            out.append((cur.key(), _unnamed(cur.value()) if db_type == "protodb" else cur.value()))
            cur.next()
        return out


def _unnamed(value: bytes) -> bytes:
    # protodb keeps the key as the TensorProto's name; drop it to compare with what was put.
    proto = caffe2_pb2.TensorProto.FromString(value)
    proto.ClearField("name")
    return proto.SerializeToString()


def _leftovers(directory):
    return [n for n in os.listdir(directory) if n.startswith(".")]


# ---------------------------------------------------------------------------------- minidb layout
def test_minidb_reads_a_file_laid_out_by_hand(tmp_path):
    """The layout real Caffe2 writes: int32 key_len, int32 value_len, key, value, native order."""
    records = [(b"w#%0", b"\x01\x02\x03"), (b"b", b"xyz" * 100), (b"k\x00\xff", b"\x00")]
    raw = b"".join(struct.pack("=ii", len(k), len(v)) + k + v for k, v in records)
    path = tmp_path / "caffe2.minidb"
    path.write_bytes(raw)
    assert _read_all(str(path), "minidb") == records
    assert _read_all(str(path), "MiniDB") == records


def test_minidb_writer_produces_exactly_the_caffe2_bytes(tmp_path):
    path = str(tmp_path / "ours.minidb")
    _write(path, "minidb", [("ab", b"12345"), (b"c", b"6")])
    expected = struct.pack("=ii", 2, 5) + b"ab12345" + struct.pack("=ii", 1, 1) + b"c6"
    assert open(path, "rb").read() == expected
    assert _leftovers(tmp_path) == []


def test_minidb_new_truncates_and_write_appends(tmp_path):
    path = str(tmp_path / "m.minidb")
    _write(path, "minidb", [("a", b"1"), ("b", b"2")])
    _write(path, "minidb", [("c", b"3")], mode="write")
    assert [k for k, _ in _read_all(path, "minidb")] == [b"a", b"b", b"c"]
    _write(path, "minidb", [("d", b"4")], mode="new")
    assert _read_all(path, "minidb") == [(b"d", b"4")]
    # NEW with nothing written still empties the file, as Caffe2's truncating open does.
    with open_db(path, "minidb", "new"):
        pass
    assert os.path.getsize(path) == 0 and _read_all(path, "minidb") == []


def test_minidb_truncated_file_names_file_and_offset(tmp_path):
    path = tmp_path / "t.minidb"
    good = struct.pack("=ii", 1, 2) + b"abc"
    path.write_bytes(good + struct.pack("=ii", 3, 100) + b"key" + b"short")
    with open_db(str(path), "minidb", "read") as db:
        cur = db.new_cursor()
        assert cur.key() == b"a"
        with pytest.raises(DBError, match=rf"{path.name}.*byte offset {len(good)} is truncated"):
            cur.next()
    path.write_bytes(good + b"\x01\x00")
    with pytest.raises(DBError, match=r"byte offset 11 is truncated.*2 byte\(s\) left"):
        _read_all(str(path), "minidb")


def test_minidb_garbage_is_reported_as_corrupt(tmp_path):
    path = tmp_path / "g.minidb"
    path.write_bytes(struct.pack("=ii", -5, 0) + b"junkjunk")
    with pytest.raises(DBError, match=r"g.minidb.*offset 0 is corrupt.*key length -5"):
        _read_all(str(path), "minidb")


# ---------------------------------------------------------------------------------- all backends
@pytest.mark.parametrize("db_type", BACKENDS)
def test_roundtrip_and_modes(tmp_path, db_type):
    path = str(tmp_path / f"x.{db_type}")
    items = [(f"k{i}".encode(), _value(i)) for i in range(5)]
    _write(path, db_type, items)
    assert _read_all(path, db_type) == items
    if db_type == "protodb":
        with open_db(path, db_type, "read") as db:
            assert caffe2_pb2.TensorProto.FromString(db.new_cursor().value()).name == "k0"
    _write(path, db_type, [(b"k9", _value(9))], mode="write")
    assert [k for k, _ in _read_all(path, db_type)] == [b"k0", b"k1", b"k2", b"k3", b"k4", b"k9"]
    _write(path, db_type, [(b"z", _value(1))], mode="new")
    assert _read_all(path, db_type) == [(b"z", _value(1))]
    assert db_exists(path, db_type) and db_exists(path, db_type.upper())
    assert not db_exists(path + ".missing", db_type)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("db_type", BACKENDS)
def test_missing_db_is_a_clear_error(tmp_path, db_type):
    with pytest.raises(DBError, match=rf"{db_type} '.*nothere' does not exist"):
        open_db(str(tmp_path / "nothere"), db_type, "read")


def test_lmdb_layout_sorted_keys_and_seek(tmp_path):
    path = str(tmp_path / "s.lmdb")
    _write(path, "lmdb", [(b"c", b"3"), (b"a", b"1"), (b"b", b"2")])
    assert sorted(os.listdir(path)) == ["data.mdb", "lock.mdb"]
    assert os.stat(path).st_mode & 0o777 == db_lmdb.DIR_MODE & ~_umask()
    assert [k for k, _ in _read_all(path, "LMDB")] == [b"a", b"b", b"c"]
    with open_db(path, "lmdb", "read") as db:
        cur = db.new_cursor()
        assert cur.supports_seek()
        cur.seek(b"b")
        assert cur.key() == b"b"
        cur.seek(b"bb")
        assert cur.key() == b"c"
        cur.next()
        assert not cur.valid()
        with pytest.raises(DBError, match="past the last record"):
            cur.key()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_lmdb_is_readable_by_several_readers_and_replaced_under_them(tmp_path):
    path = str(tmp_path / "shared.lmdb")
    _write(path, "lmdb", [(b"a", b"old")])
    first, second = DBReader("lmdb", path), DBReader("lmdb", path)
    assert first.read() == (b"a", b"old") and second.read() == (b"a", b"old")
    _write(path, "lmdb", [(b"a", b"new")])          # NEW while readers are open
    assert first.read() == (b"a", b"old")           # they keep their snapshot
    third = DBReader("lmdb", path)
    assert third.read() == (b"a", b"new")
    for r in (first, second, third):
        r.close()


# ---------------------------------------------------------------------------------- wrong types
def test_db_type_names_are_case_insensitive_and_unknown_ones_listed(tmp_path):
    assert {"minidb", "lmdb", "protodb"} <= set(known_db_types())
    path = str(tmp_path / "c.minidb")
    _write(path, "MiniDB", [("k", b"v")])
    assert _read_all(path, "MINIDB") == [(b"k", b"v")]
    with pytest.raises(DBError, match=r"unknown db_type 'sqlite'; available types: 'lmdb', 'minidb'"):
        open_db(path, "sqlite", "read")
    with pytest.raises(DBError, match=r"LevelDB is not supported.*available types"):
        open_db(path, "leveldb", "read")
    with pytest.raises(DBError, match="unknown DB mode"):
        open_db(path, "minidb", "append")


def test_wrong_db_type_for_the_file_on_disk(tmp_path):
    lmdb_path, mini_path = str(tmp_path / "a.lmdb"), str(tmp_path / "b.minidb")
    _write(lmdb_path, "lmdb", [("k", b"v")])
    _write(mini_path, "minidb", [("k", b"v")])
    with pytest.raises(DBError, match="is a directory.*db_type='lmdb'"):
        open_db(lmdb_path, "minidb", "read")
    with pytest.raises(DBError, match="is a file.*db_type='minidb'"):
        open_db(mini_path, "lmdb", "read")


def test_directory_that_is_not_an_lmdb(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DBError, match="is not an lmdb: the directory has no data.mdb"):
        open_db(str(empty), "lmdb", "read")
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "data.mdb").write_bytes(b"not an lmdb at all" * 500)
    with pytest.raises(DBError, match="is not a readable lmdb"):
        open_db(str(bogus), "lmdb", "read")
    assert not db_exists(str(bogus), "lmdb")


def test_protodb_rejects_garbage(tmp_path):
    path = tmp_path / "p.protodb"
    path.write_bytes(b"\xff\xff\xff")
    with pytest.raises(DBError, match="not a serialized TensorProtos"):
        open_db(str(path), "protodb", "read")
    with open_db(str(tmp_path / "q.protodb"), "protodb", "new") as db:
        with pytest.raises(DBError, match="not a TensorProto"):
            db.new_transaction().put("k", b"\xff\xff\xff")


def test_save_to_protodb_says_what_to_use_instead(tmp_path):
    """Save writes BlobProto records, which a protodb (bare TensorProtos) cannot hold: the error
    names the op and the DB kinds that can, and no file is written."""
    from netjit import workspace
    from netjit.proto.args import make_op
    from netjit.runtime.errors import OpError

    path = tmp_path / "s.protodb"
    workspace.FeedBlob("protodb_x", np.arange(4, dtype=np.float32))
    op = make_op("Save", ["protodb_x"], [], db=str(path), db_type="protodb", absolute_path=1)
    with pytest.raises(OpError, match=r"\(Save\).*save to a minidb, lmdb or leveldb instead"):
        workspace.RunOperatorOnce(op)
    assert not path.exists()


def test_read_mode_refuses_writes(tmp_path):
    path = str(tmp_path / "r.minidb")
    _write(path, "minidb", [("k", b"v")])
    with open_db(path, "minidb", "read") as db:
        with pytest.raises(DBError, match="open for reading"):
            db.new_transaction()


# ---------------------------------------------------------------------------------- atomicity
def test_minidb_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / "keep.minidb")
    _write(path, "minidb", [("old", b"data")])
    before = open(path, "rb").read()
    real = db_minidb.write_record
    calls = []

    def failing(handle, key, value):
        calls.append(key)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(handle, key, value)
    monkeypatch.setattr(db_minidb, "write_record", failing)
    with pytest.raises(DBError, match="No space left on device.*previous file is unchanged"):
        _write(path, "minidb", [(f"k{i}", b"v") for i in range(5)])
    assert open(path, "rb").read() == before
    assert _read_all(path, "minidb") == [(b"old", b"data")]
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("db_type", BACKENDS)
def test_exception_inside_the_block_publishes_nothing(tmp_path, db_type):
    path = str(tmp_path / f"e.{db_type}")
    _write(path, db_type, [(b"old", _value(0))])
    with pytest.raises(RuntimeError, match="crash"):
        with open_db(path, db_type, "new") as db:
            db.new_transaction().put(b"new", _value(1))
            raise RuntimeError("crash")
    assert _read_all(path, db_type) == [(b"old", _value(0))]
    assert _leftovers(tmp_path) == []


def test_lmdb_failed_publish_keeps_previous_db(tmp_path, monkeypatch):
    path = str(tmp_path / "keep.lmdb")
    _write(path, "lmdb", [(b"old", b"data")])

    def failing_swap(tmp_dir, target):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(db_lmdb, "publish_dir", failing_swap)
    with pytest.raises(DBError, match="Input/output error.*previous DB is unchanged"):
        _write(path, "lmdb", [(b"new", b"x")])
    monkeypatch.undo()
    assert _read_all(path, "lmdb") == [(b"old", b"data")]
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------- DBReader
@pytest.fixture
def five(tmp_path):
    path = str(tmp_path / "five.minidb")
    _write(path, "minidb", [(f"k{i}", b"v%d" % i) for i in range(5)])
    return path


def test_reader_wraps_around(five):
    reader = DBReader("minidb", five)
    assert [reader.read()[0] for _ in range(7)] == [b"k0", b"k1", b"k2", b"k3", b"k4", b"k0", b"k1"]


@pytest.mark.parametrize("shards,shard,expect", [
    (2, 0, [b"k0", b"k2", b"k4", b"k0", b"k2"]),
    # Past the end the reader restarts at shard_id (Caffe2 stops skipping there).
    (2, 1, [b"k1", b"k3", b"k1", b"k3"]),
    (3, 2, [b"k2", b"k2"]),
])
def test_reader_shards(five, shards, shard, expect):
    reader = DBReader("minidb", five, num_shards=shards, shard_id=shard)
    assert [reader.read()[0] for _ in expect] == expect


def test_reader_errors(five, tmp_path):
    with pytest.raises(DBError, match="fewer records"):
        DBReader("minidb", five, num_shards=9, shard_id=7)
    with pytest.raises(DBError, match="shard_id must be in"):
        DBReader("minidb", five, num_shards=2, shard_id=2)
    empty = str(tmp_path / "empty.minidb")
    _write(empty, "minidb", [])
    with pytest.raises(DBError, match="has no records"):
        DBReader("minidb", empty).read()


def test_mode_parsing():
    assert open_db.__doc__ and Mode.NEW == 2 and Mode.WRITE == 1 and Mode.READ == 0
    from netjit.runtime.db_base import parse_mode
    assert parse_mode("New") is Mode.NEW and parse_mode(1) is Mode.WRITE and parse_mode(b"read") is Mode.READ


def test_values_survive_large_records(tmp_path):
    big = np.random.default_rng(0).bytes(3 << 20)
    for db_type in ("minidb", "lmdb"):
        path = str(tmp_path / f"big.{db_type}")
        _write(path, db_type, [(b"big", big)])
        assert _read_all(path, db_type) == [(b"big", big)]
