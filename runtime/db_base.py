"""The key/value DB interface every backend implements, and the atomic-publish helpers they share.

A DB is opened in one of three modes (Caffe2's ``db::Mode``): READ, WRITE (add to what is there)
or NEW (start empty). Reading goes through a cursor (``seek_to_first``/``valid``/``key``/``value``/
``next``); writing through a transaction (``put``/``commit``). Writers never touch the published
DB until a commit: they build the new contents beside it and swap them in, so a crash or a full
disk mid-write leaves the previous DB readable.
"""
from __future__ import annotations

import abc
import enum
import os
import shutil
import uuid
from typing import Any

from netjit.runtime.errors import NetJitError


class DBError(NetJitError):
    """A DB that cannot be opened, read or written; the message names the path."""


class Mode(enum.IntEnum):
    """Caffe2's db::Mode numbering."""
    READ = 0
    WRITE = 1
    NEW = 2


def parse_mode(mode: Any) -> Mode:
    """``Mode``, its int, or a name ("read"/"write"/"new", any case)."""
    if isinstance(mode, Mode):
        return mode
    if isinstance(mode, (bytes, str)):
        text = mode.decode() if isinstance(mode, bytes) else mode
        try:
            return Mode[text.upper()]
        except KeyError:
            pass
    elif isinstance(mode, int):
        try:
            return Mode(mode)
        except ValueError:
            pass
    raise DBError(f"unknown DB mode {mode!r}; use 'read', 'write' or 'new'")


class Cursor(abc.ABC):
    """Iterates a DB's records in the DB's order (insertion order for minidb, key order for lmdb)."""

    @abc.abstractmethod
    def seek_to_first(self) -> None:
        """Position on the first record (the cursor starts there)."""

    def supports_seek(self) -> bool:
        return False

    def seek(self, key: bytes) -> None:
        """Move to the first record whose key is >= ``key`` (only where ``supports_seek()``)."""
        raise DBError(f"{type(self).__name__} cannot seek to a key")

    @abc.abstractmethod
    def valid(self) -> bool:
        """True while the cursor is on a record."""

    @abc.abstractmethod
    def key(self) -> bytes:
        """The current record's key."""

    @abc.abstractmethod
    def value(self) -> bytes:
        """The current record's value."""

    @abc.abstractmethod
    def next(self) -> None:
        """Advance to the next record (``valid()`` turns False past the last)."""

    def close(self) -> None:
        pass

    def _check_valid(self, what: str) -> None:
        if not self.valid():
            raise DBError(f"{what}() on a cursor past the last record")


class Transaction(abc.ABC):
    """Buffers puts; ``commit()`` makes them durable and visible."""

    @abc.abstractmethod
    def put(self, key: bytes | str, value: bytes) -> None:
        """Add one record; later puts of the same key win where the backend has unique keys."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Make every put so far durable and visible to new readers."""


class BufferedTransaction(Transaction):
    """For backends whose DB object buffers puts itself (minidb, protodb): forward to it."""

    def __init__(self, db: "DB"):
        self.db = db

    def put(self, key: bytes | str, value: bytes) -> None:
        self.db.put(as_key_bytes(key), bytes(value))

    def commit(self) -> None:
        self.db.commit()


class DB(abc.ABC):
    """An open DB. Use as a context manager: leaving the block normally commits and closes;
    leaving it with an exception discards everything not yet committed.

    >>> from netjit.runtime.db import open_db
    >>> with open_db("/tmp/doc.minidb", "minidb", "new") as db:
    ...     txn = db.new_transaction(); txn.put("k", b"v"); txn.commit()
    """

    db_type = "?"

    def __init__(self, path: str, mode: Mode):
        self.path = path
        self.mode = mode
        self.closed = False

    @abc.abstractmethod
    def new_cursor(self) -> Cursor:
        """A cursor over the records, positioned on the first."""

    @abc.abstractmethod
    def new_transaction(self) -> Transaction:
        """A transaction for writing (modes NEW and WRITE only)."""

    def close(self) -> None:
        """Commit pending writes (Caffe2 commits on destruction) and release the DB."""
        self.closed = True

    def abort(self) -> None:
        """Close without publishing anything that was not committed."""
        self.closed = True

    def __enter__(self) -> "DB":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _check_write(self) -> None:
        if self.mode == Mode.READ:
            raise DBError(f"{self.db_type} {self.path!r} is open for reading; open it with mode "
                          f"'new' or 'write' to write")
        if self.closed:
            raise DBError(f"{self.db_type} {self.path!r} is closed")

    def _check_read(self) -> None:
        if self.closed:
            raise DBError(f"{self.db_type} {self.path!r} is closed")


def as_key_bytes(key: bytes | str) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


# --------------------------------------------------------------------------------------------
# Atomic publication helpers
# --------------------------------------------------------------------------------------------
def sibling_temp_path(path: str, tag: str) -> str:
    """A unique hidden name in ``path``'s directory (same filesystem, so os.replace is atomic)."""
    head, tail = os.path.split(os.path.abspath(path))
    return os.path.join(head, f".{tail}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def fsync_file(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def fsync_dir(path: str) -> None:
    """Make a rename in directory ``path`` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish_file(tmp: str, path: str) -> None:
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def publish_dir(tmp_dir: str, path: str) -> None:
    """Swap directory ``tmp_dir`` in as ``path``. The old one is renamed aside first and removed
    only after the new one is in place, so at every instant one complete copy exists on disk."""
    old = None
    if os.path.lexists(path):
        if not os.path.isdir(path) or os.path.islink(path):
            raise DBError(f"cannot replace {path!r} with a DB directory: it is not a directory")
        old = sibling_temp_path(path, "old")
        os.rename(path, old)
    try:
        os.rename(tmp_dir, path)
    except OSError:
        if old is not None:
            os.rename(old, path)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_quietly(path: str | None) -> None:
    if path is None:
        return
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
