"""Key/value DBs as Caffe2 has them (minidb, lmdb, protodb), and the DBReader blob.

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "demo.minidb")
>>> with open_db(path, "minidb", "new") as db:
...     txn = db.new_transaction(); txn.put("a", b"1"); txn.commit()
>>> reader = DBReader("minidb", path)
>>> reader.read()
(b'a', b'1')
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable

from netjit.proto import caffe2_pb2
from netjit.runtime.db_base import DB, Cursor, DBError, Mode, Transaction, parse_mode
from netjit.runtime.db_lmdb import LMDB
from netjit.runtime.db_minidb import MiniDB
from netjit.runtime.db_protodb import ProtoDB

__all__ = ["DB", "Cursor", "Transaction", "DBError", "Mode", "DBReader", "open_db", "db_exists",
           "known_db_types", "register_db_type"]

# db_type names are matched case-insensitively (Caffe2 registers "minidb" and "MiniDB", ...).
_BACKENDS: dict[str, Callable[[str, Mode], DB]] = {"minidb": MiniDB, "lmdb": LMDB, "protodb": ProtoDB}
# Types Caffe2 knows that have no backend here, with why.
_UNAVAILABLE = {
    "leveldb": "LevelDB is not supported by netjit (no maintained Python binding); convert the DB "
               "to lmdb or minidb with a tool that can read it",
    "rocksdb": "RocksDB is not supported by netjit",
    "zmqdb": "ZmqDB is not supported by netjit",
}


def register_db_type(name: str, factory: Callable[[str, Mode], DB]) -> None:
    """Add a backend: ``factory(path, mode) -> DB`` under ``name`` (case-insensitive)."""
    _BACKENDS[name.lower()] = factory


def known_db_types() -> list[str]:
    return sorted(_BACKENDS)


def _backend(db_type: str | bytes) -> Callable[[str, Mode], DB]:
    name = db_type.decode() if isinstance(db_type, bytes) else str(db_type)
    key = name.lower()
    if key in _BACKENDS:
        return _BACKENDS[key]
    known = ", ".join(repr(k) for k in known_db_types())
    if key in _UNAVAILABLE:
        raise DBError(f"db_type {name!r}: {_UNAVAILABLE[key]}; available types: {known}")
    if not name:
        raise DBError(f"no db_type given; available types: {known}")
    raise DBError(f"unknown db_type {name!r}; available types: {known}")


def open_db(path: str | os.PathLike, db_type: str | bytes, mode: Any = Mode.READ) -> DB:
    """Open the DB at ``path``. ``mode``: "read", "write" (add records) or "new" (start empty).

    >>> open_db("/nonexistent/x", "minidb", "read")
    Traceback (most recent call last):
    ...
    netjit.runtime.db_base.DBError: minidb '/nonexistent/x' does not exist
    """
    return _backend(db_type)(os.fspath(path), parse_mode(mode))


def db_exists(path: str | os.PathLike, db_type: str | bytes) -> bool:
    """Whether ``path`` opens for reading as a ``db_type`` DB (Caffe2's DBExists). An unknown
    ``db_type`` is an error rather than an answer."""
    backend = _backend(db_type)
    try:
        db = backend(os.fspath(path), Mode.READ)
    except DBError:
        return False
    try:
        cursor = db.new_cursor()
        cursor.close()
    except DBError:
        return False
    finally:
        db.close()
    return True


class DBReader:
    """The blob CreateDB makes: an open DB plus one shared cursor, read record by record.

    Each ``read()`` returns the current record and then skips ``num_shards`` records, wrapping to the
    first record (plus ``shard_id``) at the end, exactly as Caffe2's reader does.
    """

    def __init__(self, db_type: str, source: str, num_shards: int = 1, shard_id: int = 0):
        if num_shards < 1:
            raise DBError(f"DB reader for {source!r}: num_shards must be >= 1, got {num_shards}")
        if not 0 <= shard_id < num_shards:
            raise DBError(f"DB reader for {source!r}: shard_id must be in [0, {num_shards}), got {shard_id}")
        self.db_type = db_type
        self.source = source
        self.num_shards = num_shards
        self.shard_id = shard_id
        self.lock = threading.Lock()
        self.db = open_db(source, db_type, Mode.READ)
        self.cursor = self.db.new_cursor()
        self.move_to_beginning()

    def __repr__(self) -> str:
        return f"DBReader({self.db_type!r}, {self.source!r}, shard {self.shard_id} of {self.num_shards})"

    def move_to_beginning(self) -> None:
        self.cursor.seek_to_first()
        for skipped in range(self.shard_id):
            if not self.cursor.valid():
                raise DBError(f"DB {self.source!r} has fewer records ({skipped}) than shard id {self.shard_id}")
            self.cursor.next()
        if self.shard_id and not self.cursor.valid():
            raise DBError(f"DB {self.source!r} has fewer records than shard id {self.shard_id} + 1")

    def read(self) -> tuple[bytes, bytes]:
        """The current (key, value); then advance by ``num_shards`` records, wrapping around."""
        with self.lock:
            if not self.cursor.valid():
                raise DBError(f"{self.db_type} {self.source!r} has no records to read")
            key, value = self.cursor.key(), self.cursor.value()
            for _ in range(self.num_shards):
                self.cursor.next()
                if not self.cursor.valid():
                    self.move_to_beginning()
                    break
            return key, value

    def to_dbreader_proto(self, name: str) -> caffe2_pb2.DBReaderProto:
        """What Save stores for this blob; the key only where the cursor can seek back to it."""
        proto = caffe2_pb2.DBReaderProto(name=name, source=self.source, db_type=self.db_type)
        if self.cursor.supports_seek() and self.cursor.valid():
            proto.key = self.cursor.key().decode("utf-8")
        return proto

    @classmethod
    def from_dbreader_proto(cls, proto: caffe2_pb2.DBReaderProto) -> "DBReader":
        reader = cls(proto.db_type, proto.source)
        if proto.HasField("key"):
            if not reader.cursor.supports_seek():
                raise DBError(f"DB reader {proto.name!r}: the saved position needs seeking, which "
                              f"db_type {proto.db_type!r} cannot do")
            reader.cursor.seek(proto.key.encode("utf-8"))
        return reader

    def close(self) -> None:
        self.cursor.close()
        self.db.close()
