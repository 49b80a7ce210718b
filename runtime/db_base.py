"""The key/value DB interface every backend implements, and the atomic-publish helpers they share.

A DB is opened in one of three modes (Caffe2's ``db::Mode``): READ, WRITE (add to what is there)
or NEW (start empty). Reading goes through a cursor (``seek_to_first``/``valid``/``key``/``value``/
``next``); writing through a transaction (``put``/``commit``). Writers never touch the published
DB until a commit: they build the new contents beside it and swap them in (``os.replace`` for a
file, an exchange-rename for a directory), so a crash, a kill or a full disk at any step leaves the
previous complete DB or the new complete one at the path. The next open finishes an interrupted
swap; the next write removes what killed writers left behind.
"""
from __future__ import annotations

import abc
import ctypes
import enum
import errno
import os
import re
import shutil
import sys
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
# Crash-safe publication
# --------------------------------------------------------------------------------------------
# Hidden siblings are named ".<name>.<tag>-<pid>-<hex8>": "tmp" while a writer builds the new
# contents, "old" when the previous directory DB was moved aside (only where an exchange-rename is
# unavailable). The pid says whether their writer may still be alive; a dead writer's siblings
# are leftovers the next write removes, and an "old" one with no DB at the path is the complete
# previous DB, which opening puts back.
_SIBLING = re.compile(r"^\.(?P<name>.+)\.(?P<tag>tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$")
_ACTIVE: set[str] = set()        # siblings this process is using right now
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def sibling_temp_path(path: str, tag: str) -> str:
    """A unique hidden name in ``path``'s directory (same filesystem, so renames are atomic)."""
    head, tail = os.path.split(os.path.abspath(path))
    name = os.path.join(head, f".{tail}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    _ACTIVE.add(name)
    return name


def release_temp(name: str | None) -> None:
    """Forget a sibling once it is published or removed."""
    if name is not None:
        _ACTIVE.discard(name)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:          # exists, owned by someone else
        return True
    return True


def _dead_siblings(path: str, tag: str | None = None) -> list[str]:
    """Hidden siblings of ``path`` whose writer is gone (another pid that no longer runs, or this
    process's own that it no longer uses), oldest first."""
    head, tail = os.path.split(os.path.abspath(path))
    try:
        entries = os.listdir(head or ".")
    except OSError:
        return []
    found = []
    for entry in entries:
        m = _SIBLING.match(entry)
        if m is None or m["name"] != tail or (tag is not None and m["tag"] != tag):
            continue
        full = os.path.join(head, entry)
        pid = int(m["pid"])
        if full in _ACTIVE or (pid != os.getpid() and _pid_alive(pid)):
            continue
        try:
            found.append((os.lstat(full).st_mtime_ns, full))
        except FileNotFoundError:
            continue
    return [name for _, name in sorted(found)]


def recover(path: str) -> None:
    """Finish a publish that a killed writer interrupted: with nothing at ``path`` and the previous
    DB moved aside, put it back (the newest such copy). Opening a DB calls this."""
    if os.path.lexists(path):
        return
    olds = _dead_siblings(path, "old")
    if olds:
        try:
            os.rename(olds[-1], path)
        except OSError:
            return
        fsync_dir(os.path.dirname(os.path.abspath(path)))


def clean_leftovers(path: str) -> None:
    """Remove what killed writers of ``path`` left behind (after recovering a moved-aside DB)."""
    recover(path)
    for name in _dead_siblings(path):
        remove_quietly(name)


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
    """``os.replace``: readers see the old file or the new one, never neither."""
    os.replace(tmp, path)
    release_temp(tmp)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def _load_renameat2() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2() if sys.platform.startswith("linux") else None


def exchange_paths(a: str, b: str) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE). False where
    the platform or filesystem cannot; OSError for a real failure."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), a)


def publish_dir(tmp_dir: str, path: str) -> None:
    """Swap directory ``tmp_dir`` in as ``path``; at every instant ``path`` is the old complete DB
    or the new one. With an exchange-rename the swap is one step and the old copy (now at the temp
    name) is removed after; without one, the old copy is renamed aside first, and if the writer dies
    before the new one is in place, :func:`recover` puts the old one back when the DB is next opened."""
    head = os.path.dirname(os.path.abspath(path))
    if os.path.lexists(path):
        if not os.path.isdir(path) or os.path.islink(path):
            raise DBError(f"cannot replace {path!r} with a DB directory: it is not a directory")
        if exchange_paths(tmp_dir, path):
            fsync_dir(head)
            remove_quietly(tmp_dir)       # now the old DB
            release_temp(tmp_dir)
            return
        old = sibling_temp_path(path, "old")
        os.rename(path, old)
        try:
            os.rename(tmp_dir, path)
        except OSError:
            os.rename(old, path)
            release_temp(old)
            raise
        release_temp(tmp_dir)
        fsync_dir(head)
        remove_quietly(old)
        release_temp(old)
        return
    os.rename(tmp_dir, path)
    release_temp(tmp_dir)
    fsync_dir(head)


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
    release_temp(path)
