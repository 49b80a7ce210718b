"""protodb: one serialized TensorProtos file; each record is one TensorProto keyed by its name.

A put parses the value as a TensorProto and stores it under the key as its ``name``; the whole
file is rewritten (to a temp file, then swapped in) on commit.
"""
from __future__ import annotations

import os

from google.protobuf.message import DecodeError

from netjit.proto import caffe2_pb2
from netjit.runtime.db_base import (DB, BufferedTransaction, Cursor, DBError, Mode, as_key_bytes, fsync_file,
                                    clean_leftovers, publish_file, recover, remove_quietly,
                                    sibling_temp_path)


def _read_protos(path: str) -> caffe2_pb2.TensorProtos:
    protos = caffe2_pb2.TensorProtos()
    try:
        with open(path, "rb") as handle:
            protos.ParseFromString(handle.read())
    except DecodeError as err:
        raise DBError(f"protodb {path!r} is not a serialized TensorProtos: {err}") from None
    except OSError as err:
        raise DBError(f"cannot read protodb {path!r}: {err.strerror or err}") from None
    return protos


class ProtoDBCursor(Cursor):
    def __init__(self, protos: caffe2_pb2.TensorProtos):
        self._protos = protos
        self._index = 0

    def seek_to_first(self) -> None:
        self._index = 0

    def valid(self) -> bool:
        return self._index < len(self._protos.protos)

    def key(self) -> bytes:
        self._check_valid("key")
        return self._protos.protos[self._index].name.encode("utf-8")

    def value(self) -> bytes:
        self._check_valid("value")
        return self._protos.protos[self._index].SerializeToString()

    def next(self) -> None:
        self._check_valid("next")
        self._index += 1


class ProtoDB(DB):
    db_type = "protodb"

    def __init__(self, path: str, mode: Mode):
        super().__init__(path, mode)
        recover(path)
        if os.path.isdir(path):
            raise DBError(f"protodb {path!r} is a directory, not a TensorProtos file")
        if mode == Mode.READ and not os.path.exists(path):
            raise DBError(f"protodb {path!r} does not exist")
        if mode == Mode.NEW or (mode == Mode.WRITE and not os.path.exists(path)):
            self._protos = caffe2_pb2.TensorProtos()
            self._dirty = mode == Mode.NEW
        else:
            self._protos = _read_protos(path)
            self._dirty = False

    def new_cursor(self) -> ProtoDBCursor:
        self._check_read()
        return ProtoDBCursor(self._protos)

    def new_transaction(self) -> BufferedTransaction:
        self._check_write()
        return BufferedTransaction(self)

    def put(self, key: bytes, value: bytes) -> None:
        self._check_write()
        proto = self._protos.protos.add()
        try:
            proto.ParseFromString(value)
        except DecodeError as err:
            del self._protos.protos[-1]
            raise DBError(f"protodb {self.path!r}: the value for key {key[:40]!r} is not a "
                          f"TensorProto ({err}); a protodb holds bare TensorProtos (what "
                          f"TensorProtosDBInput reads), while Save writes BlobProto records: save "
                          f"to a minidb, lmdb or leveldb instead") from None
        proto.name = key.decode("utf-8")
        self._dirty = True

    def commit(self) -> None:
        self._check_write()
        if not self._dirty:
            return
        clean_leftovers(self.path)
        tmp = sibling_temp_path(self.path, "tmp")
        try:
            with open(tmp, "wb") as handle:
                handle.write(self._protos.SerializeToString())
                fsync_file(handle)
            publish_file(tmp, self.path)
        except OSError as err:
            remove_quietly(tmp)
            raise DBError(f"writing protodb {self.path!r} failed ({err.strerror or err}); "
                          f"the previous file is unchanged") from err
        self._dirty = False

    def close(self) -> None:
        if self.closed:
            return
        if self.mode != Mode.READ:
            self.commit()
        super().close()
