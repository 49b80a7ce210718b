"""lmdb: a directory holding ``data.mdb`` and ``lock.mdb``, keys in sorted byte order.

Opened as Caffe2 opens it: a 1 TiB map (the file grows only as data is written), readers
read-only and without a lock file. The ``lmdb`` package's default engine writes the LMDB 0.9
format that Caffe2's liblmdb reads.

Writes are built in a hidden sibling directory (empty for NEW, a copy of the published DB for
WRITE or after a commit) that is swapped in on commit, so the previous DB stays readable until the
new one is complete. The lmdb package refuses to open one environment twice in a process; readers
of the same files therefore share one read-only environment, and a writer never opens the
published files at all.
"""
from __future__ import annotations

import os
import shutil
import threading
from typing import Any

from netjit.runtime.db_base import (DB, Cursor, DBError, Mode, Transaction, as_key_bytes, clean_leftovers,
                                    publish_dir, recover, remove_quietly, sibling_temp_path)

MAP_SIZE = 1 << 40        # Caffe2's LMDB map size: 1 TiB
DIR_MODE = 0o744          # Caffe2 mkdir()s the DB directory with this mode


def _lmdb() -> Any:
    try:
        import lmdb
    except ImportError:
        raise DBError("db_type 'lmdb' needs the lmdb package (pip install lmdb)") from None
    return lmdb


def _explain_open_failure(path: str, err: Exception) -> DBError:
    if not os.path.exists(path):
        return DBError(f"lmdb {path!r} does not exist")
    if not os.path.isdir(path):
        return DBError(f"lmdb {path!r} is a file, but an lmdb is a directory holding data.mdb and "
                       f"lock.mdb (is it a minidb? open it with db_type='minidb')")
    if not os.path.exists(os.path.join(path, "data.mdb")):
        return DBError(f"{path!r} is not an lmdb: the directory has no data.mdb")
    return DBError(f"{path!r} is not a readable lmdb: {err}")


class _SharedEnvs:
    """Read-only environments shared by every reader of the same data.mdb (by inode), counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._envs: dict[tuple[int, int], list[Any]] = {}    # key -> [env, users]

    def acquire(self, path: str) -> tuple[Any, tuple[int, int]]:
        lmdb = _lmdb()
        data = os.path.join(path, "data.mdb")
        try:
            st = os.stat(data)
        except OSError as err:
            raise _explain_open_failure(path, err) from None
        key = (st.st_dev, st.st_ino)
        with self._lock:
            entry = self._envs.get(key)
            if entry is None:
                try:
                    env = lmdb.open(path, readonly=True, lock=False, subdir=True, create=False,
                                    max_readers=1024)
                except lmdb.Error as err:
                    raise _explain_open_failure(path, err) from None
                entry = self._envs[key] = [env, 0]
            entry[1] += 1
            return entry[0], key

    def release(self, key: tuple[int, int]) -> None:
        with self._lock:
            entry = self._envs.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del self._envs[key]
                entry[0].close()


_READERS = _SharedEnvs()


class LMDBCursor(Cursor):
    def __init__(self, env: Any, path: str):
        self.path = path
        self._txn = env.begin(buffers=False)
        self._cursor = self._txn.cursor()
        self._valid = False
        self.seek_to_first()

    def seek_to_first(self) -> None:
        self._valid = self._cursor.first()

    def supports_seek(self) -> bool:
        return True

    def seek(self, key: bytes | str) -> None:
        self._valid = self._cursor.set_range(as_key_bytes(key))

    def valid(self) -> bool:
        return self._valid

    def key(self) -> bytes:
        self._check_valid("key")
        return self._cursor.key()

    def value(self) -> bytes:
        self._check_valid("value")
        return self._cursor.value()

    def next(self) -> None:
        self._check_valid("next")
        self._valid = self._cursor.next()

    def close(self) -> None:
        self._valid = False
        try:
            self._txn.abort()   # a read transaction: abort just releases the snapshot
        except Exception:       # the environment may already be closed
            pass


class LMDBTransaction(Transaction):
    def __init__(self, db: "LMDB"):
        self.db = db

    def put(self, key: bytes | str, value: bytes) -> None:
        self.db.put(as_key_bytes(key), bytes(value))

    def commit(self) -> None:
        self.db.commit()


class LMDB(DB):
    db_type = "lmdb"

    def __init__(self, path: str, mode: Mode):
        super().__init__(path, mode)
        self._lmdb = _lmdb()
        self._reader_key: tuple[int, int] | None = None
        self._env: Any = None          # reading: the shared env; writing: the temp directory's env
        self._txn: Any = None
        self._tmp: str | None = None
        self._published = False
        self._cursors: list[LMDBCursor] = []
        recover(path)        # a writer killed mid-swap: put the previous DB back first
        if mode == Mode.READ:
            if not os.path.isdir(path):
                raise _explain_open_failure(path, FileNotFoundError(path))
            self._env, self._reader_key = _READERS.acquire(path)
        elif os.path.exists(path) and not os.path.isdir(path):
            raise DBError(f"cannot write lmdb {path!r}: a file is in the way (an lmdb is a directory)")
        else:
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise DBError(f"cannot write lmdb {path!r}: directory {parent!r} does not exist")
            if mode == Mode.WRITE and os.path.isdir(path) and os.listdir(path) \
                    and not os.path.exists(os.path.join(path, "data.mdb")):
                raise DBError(f"cannot add to {path!r}: it is a non-empty directory with no data.mdb")

    def new_cursor(self) -> LMDBCursor:
        self._check_read()
        if self.mode != Mode.READ:
            raise DBError(f"lmdb {self.path!r} is open for writing; open it with mode 'read' to read")
        cursor = LMDBCursor(self._env, self.path)
        self._cursors.append(cursor)
        return cursor

    def new_transaction(self) -> LMDBTransaction:
        self._check_write()
        return LMDBTransaction(self)

    # Writing ------------------------------------------------------------------------------------
    def _start_temp(self) -> None:
        clean_leftovers(self.path)
        tmp = sibling_temp_path(self.path, "tmp")
        os.mkdir(tmp, DIR_MODE)
        self._tmp = tmp
        data = os.path.join(self.path, "data.mdb")
        if (self.mode == Mode.WRITE or self._published) and os.path.exists(data):
            # LMDB pages are self-contained: a copy of data.mdb is the whole DB (lock.mdb is rebuilt).
            shutil.copyfile(data, os.path.join(tmp, "data.mdb"))
        try:
            self._env = self._lmdb.open(tmp, map_size=MAP_SIZE, subdir=True, create=False)
        except self._lmdb.Error as err:
            raise _explain_open_failure(self.path, err) from None

    def put(self, key: bytes, value: bytes) -> None:
        self._check_write()
        if not key:
            raise DBError(f"lmdb {self.path!r}: keys must be non-empty")
        try:
            if self._env is None:
                self._start_temp()
            if self._txn is None:
                self._txn = self._env.begin(write=True)
            self._txn.put(key, value)
        except self._lmdb.BadValsizeError:
            raise DBError(f"lmdb {self.path!r}: key {key[:40]!r} is {len(key)} bytes, over lmdb's "
                          f"limit of {self._env.max_key_size()}") from None
        except (self._lmdb.Error, OSError) as err:
            self.abort()
            raise DBError(f"writing lmdb {self.path!r} failed ({err}); the previous DB is unchanged") from err

    def commit(self) -> None:
        self._check_write()
        try:
            if self._env is None:
                if self._published or (self.mode == Mode.WRITE and os.path.isdir(self.path)
                                       and os.path.exists(os.path.join(self.path, "data.mdb"))):
                    return                  # nothing new to publish
                self._start_temp()          # NEW (or WRITE to nothing) with no records: an empty DB
            if self._txn is not None:
                self._txn.commit()
                self._txn = None
            self._env.sync(True)
            self._env.close()
            self._env = None
            publish_dir(self._tmp, self.path)
            self._tmp = None
            self._published = True
        except (self._lmdb.Error, OSError) as err:
            self.abort()
            raise DBError(f"committing lmdb {self.path!r} failed ({err}); the previous DB is unchanged") from err

    def close(self) -> None:
        if self.closed:
            return
        if self.mode != Mode.READ:
            self.commit()
        self._release()
        super().close()

    def abort(self) -> None:
        if self._txn is not None:
            try:
                self._txn.abort()
            except self._lmdb.Error:
                pass
            self._txn = None
        self._release()
        remove_quietly(self._tmp)
        self._tmp = None
        super().abort()

    def _release(self) -> None:
        for cursor in self._cursors:
            cursor.close()
        self._cursors.clear()
        if self._reader_key is not None:
            _READERS.release(self._reader_key)
            self._reader_key = None
        elif self._env is not None:
            self._env.close()
        self._env = None

    def __del__(self) -> None:
        if getattr(self, "_tmp", None) is not None or getattr(self, "_reader_key", None) is not None:
            try:
                self.abort()
            except Exception:   # at interpreter exit the module globals may already be gone
                pass
