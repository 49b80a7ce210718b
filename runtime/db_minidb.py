"""minidb: Caffe2's headerless record file.

The file is records back to back, each ``int32 key_len, int32 value_len, key bytes, value bytes``
with the integers in native byte order and both lengths > 0; records keep insertion order and
there is no index, so a cursor cannot seek. NEW truncates, WRITE appends. Here every write goes to
a temporary copy beside the file that replaces it on commit, so an interrupted write never leaves
a damaged file behind.

>>> from netjit.runtime.db import open_db
>>> with open_db("/tmp/doc2.minidb", "minidb", "new") as db:
...     t = db.new_transaction(); t.put(b"a", b"1"); t.put(b"b", b"22"); t.commit()
>>> c = open_db("/tmp/doc2.minidb", "minidb", "read").new_cursor(); (c.key(), c.value())
(b'a', b'1')
"""
from __future__ import annotations

import mmap
import os
import shutil
import struct
from typing import Any, BinaryIO

from netjit.runtime.db_base import (DB, BufferedTransaction, Cursor, DBError, Mode, as_key_bytes, fsync_file,
                                    clean_leftovers, publish_file, recover, remove_quietly,
                                    sibling_temp_path)

_HEADER = struct.Struct("=ii")      # native order, standard 4-byte ints: Caffe2 fwrite()s two int32s
_INT32_MAX = (1 << 31) - 1


def write_record(handle: BinaryIO, key: bytes, value: bytes) -> None:
    """Append one record to an open minidb file."""
    handle.write(_HEADER.pack(len(key), len(value)))
    handle.write(key)
    handle.write(value)


class MiniDBCursor(Cursor):
    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as handle:
            self.size = os.fstat(handle.fileno()).st_size
            # An empty file cannot be mapped; it simply has no records.
            self._buf: Any = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if self.size else b""
        self._offset = 0
        self._record: tuple[int, int, int] | None = None   # (key start, key len, value len)
        self.seek_to_first()

    def _load(self, offset: int) -> None:
        self._offset = offset
        if offset >= self.size:
            self._record = None
            return
        where = f"minidb {self.path!r}: record at byte offset {offset}"
        if offset + _HEADER.size > self.size:
            raise DBError(f"{where} is truncated: {self.size - offset} byte(s) left, a record header "
                          f"needs {_HEADER.size} (the file is damaged or was not fully written)")
        key_len, value_len = _HEADER.unpack_from(self._buf, offset)
        if key_len <= 0 or value_len <= 0:
            raise DBError(f"{where} is corrupt: key length {key_len}, value length {value_len} (both must "
                          f"be > 0); is this really a minidb?")
        end = offset + _HEADER.size + key_len + value_len
        if end > self.size:
            raise DBError(f"{where} is truncated: it needs {key_len}+{value_len} bytes of key and value "
                          f"but the file ends at byte {self.size}")
        self._record = (offset + _HEADER.size, key_len, value_len)

    def seek_to_first(self) -> None:
        self._load(0)

    def valid(self) -> bool:
        return self._record is not None

    def key(self) -> bytes:
        self._check_valid("key")
        start, key_len, _ = self._record
        return bytes(self._buf[start:start + key_len])

    def value(self) -> bytes:
        self._check_valid("value")
        start, key_len, value_len = self._record
        return bytes(self._buf[start + key_len:start + key_len + value_len])

    def offset(self) -> int:
        """Byte offset of the current record (for error messages)."""
        return self._offset

    def next(self) -> None:
        self._check_valid("next")
        start, key_len, value_len = self._record
        self._load(start + key_len + value_len)

    def close(self) -> None:
        if isinstance(self._buf, mmap.mmap):
            self._buf.close()
        self._buf = b""
        self._record = None


class MiniDB(DB):
    """One minidb file. Writers fill a hidden sibling temp file; ``commit()`` fsyncs it and
    os.replace()s it over the path, so readers only ever see a complete file."""

    db_type = "minidb"

    def __init__(self, path: str, mode: Mode):
        super().__init__(path, mode)
        self._tmp: str | None = None
        self._handle: BinaryIO | None = None
        self._published = False
        recover(path)
        if mode == Mode.READ:
            if os.path.isdir(path):
                hint = (" (it holds data.mdb: open it with db_type='lmdb')"
                        if os.path.exists(os.path.join(path, "data.mdb")) else "")
                raise DBError(f"minidb {path!r} is a directory, not a minidb file{hint}")
            if not os.path.exists(path):
                raise DBError(f"minidb {path!r} does not exist")
        elif os.path.isdir(path):
            raise DBError(f"cannot write minidb {path!r}: a directory is in the way")
        else:
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise DBError(f"cannot write minidb {path!r}: directory {parent!r} does not exist")

    def new_cursor(self) -> MiniDBCursor:
        self._check_read()
        try:
            return MiniDBCursor(self.path)
        except OSError as err:
            raise DBError(f"cannot read minidb {self.path!r}: {err.strerror or err}") from None

    def new_transaction(self) -> BufferedTransaction:
        self._check_write()
        return BufferedTransaction(self)

    # Writing ------------------------------------------------------------------------------------
    def _start_temp(self) -> BinaryIO:
        clean_leftovers(self.path)
        self._tmp = sibling_temp_path(self.path, "tmp")
        # NEW starts empty the first time; otherwise (WRITE, or after a commit) we extend what is
        # published, so the temp file starts as a copy of it.
        if (self.mode == Mode.WRITE or self._published) and os.path.exists(self.path):
            shutil.copyfile(self.path, self._tmp)
            return open(self._tmp, "ab")
        return open(self._tmp, "wb")

    def put(self, key: bytes, value: bytes) -> None:
        self._check_write()
        if not key or not value:
            raise DBError(f"minidb {self.path!r}: keys and values must be non-empty "
                          f"(key {key[:40]!r}, value of {len(value)} bytes)")
        if len(key) > _INT32_MAX or len(value) > _INT32_MAX:
            raise DBError(f"minidb {self.path!r}: record for key {key[:40]!r} is over 2 GiB")
        try:
            if self._handle is None:
                self._handle = self._start_temp()
            write_record(self._handle, key, value)
        except OSError as err:
            self.abort()
            raise DBError(f"writing minidb {self.path!r} failed ({err.strerror or err}); "
                          f"the previous file is unchanged") from err

    def commit(self) -> None:
        self._check_write()
        try:
            if self._handle is None:
                if self._published or self.mode == Mode.WRITE and os.path.exists(self.path):
                    return          # nothing new to publish
                self._handle = self._start_temp()   # NEW with no records: publish an empty file
            fsync_file(self._handle)
            self._handle.close()
            self._handle = None
            publish_file(self._tmp, self.path)
            self._tmp = None
            self._published = True
        except OSError as err:
            self.abort()
            raise DBError(f"committing minidb {self.path!r} failed ({err.strerror or err}); "
                          f"the previous file is unchanged") from err

    def close(self) -> None:
        if self.closed:
            return
        if self.mode != Mode.READ:
            self.commit()
        super().close()

    def abort(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError:
                pass
            self._handle = None
        remove_quietly(self._tmp)
        self._tmp = None
        super().abort()

    def __del__(self) -> None:
        # Never publish from the garbage collector: only clean up an unfinished temp file.
        if getattr(self, "_tmp", None) is not None:
            try:
                self.abort()
            except Exception:   # at interpreter exit the module globals may already be gone
                pass
