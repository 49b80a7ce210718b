"""Crash-safe publishing: a writer killed at ANY file operation leaves the path holding the old
complete DB or the new complete one, and the next successful write leaves no leftovers.

Each case forks a writer whose file operations (os.rename/replace/mkdir/unlink/rmdir/fsync/open/chmod, open,
shutil.copyfile and the exchange-rename) are counted; the k-th one calls ``os._exit`` (a kill:
no cleanup, no finally blocks), for k = 1, 2, ... until a writer gets through. After every kill
the DB is opened and compared with both versions, then a third version is saved and the
directory must hold nothing but the DB.
"""
from __future__ import annotations

import builtins
import os
import shutil
import sys

import numpy as np
import pytest

from netjit import core, workspace
from netjit.proto import caffe2_pb2
from netjit.runtime import db_base
from netjit.runtime.db import open_db

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork to kill a writer")

KILLED = 77
_FILE_OPS = [(os, "rename"), (os, "replace"), (os, "mkdir"), (os, "unlink"), (os, "rmdir"), (os, "fsync"),
             (os, "open"), (os, "chmod"),
             (builtins, "open"), (shutil, "copyfile"), (db_base, "exchange_paths")]
OLD = {b"a": b"old-a" * 50, b"b": b"old-b" * 50}
NEW = {b"a": b"new-a" * 70, b"c": b"new-c" * 70, b"d": b"new-d"}


def _write(path: str, db_type: str, records: dict[bytes, bytes]) -> None:
    with open_db(path, db_type, "new") as db:
        txn = db.new_transaction()
        for key, value in records.items():
            txn.put(key, value)
        txn.commit()


def _read(path: str, db_type: str) -> dict[bytes, bytes]:
    with open_db(path, db_type, "read") as db:
        cursor = db.new_cursor()
        out = {}
        while cursor.valid():
            out[cursor.key()] = cursor.value()
            cursor.next()
        return out


def _killed_at(k: int, action, no_exchange: bool) -> int:
    """Run ``action`` in a forked child that dies at its k-th file operation; its exit code."""
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            count = [0]
            for module, name in _FILE_OPS:
                original = getattr(module, name)

                def counted(*args, _original=original, **kwargs):
                    count[0] += 1
                    if count[0] == k:
                        os._exit(KILLED)
                    return _original(*args, **kwargs)
                setattr(module, name, counted)
            if no_exchange:
                db_base._renameat2 = None
            action()
            os._exit(0)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _leftovers(path: str) -> list[str]:
    return sorted(e for e in os.listdir(os.path.dirname(path)) if e != os.path.basename(path))


def _kill_everywhere(path: str, write_old, write_new, write_next, read, old, new,
                     no_exchange: bool = False) -> int:
    """Kill the writer of ``new`` at each of its file operations in turn; returns how many there were."""
    for k in range(1, 200):
        write_old()
        assert read() == old
        code = _killed_at(k, write_new, no_exchange)
        if code == 0:
            assert read() == new
            return k - 1
        assert code == KILLED, f"the writer failed at operation {k} (exit {code}) instead of being killed"
        if not no_exchange and db_base._renameat2 is not None:
            assert os.path.lexists(path), f"nothing at the path after a kill at operation {k}"
        got = read()
        assert got in (old, new), f"kill at file operation {k}: the DB is neither the old nor the new one"
        # The next successful write cleans up after the killed one.
        write_next()
        assert _leftovers(path) == [], f"kill at operation {k} left {_leftovers(path)}"
    raise AssertionError("the writer never finished")


# Files are published by os.replace; only directory DBs (lmdb) need the exchange, and its fallback.
@pytest.mark.parametrize("db_type,no_exchange", [("minidb", False), ("protodb", False), ("lmdb", False),
                                                 ("lmdb", True)],
                         ids=["minidb", "protodb", "lmdb-exchange", "lmdb-rename-aside"])
def test_db_writer_killed_at_each_file_operation(tmp_path, db_type, no_exchange):
    path = str(tmp_path / f"data.{db_type}")
    if db_type == "protodb":  # values must be TensorProtos
        def proto(v: bytes) -> bytes:
            return core.caffe2_pb2.TensorProto(dims=[len(v)], data_type=2, byte_data=v).SerializeToString()
        old = {k: proto(v) for k, v in OLD.items()}
        new = {k: proto(v) for k, v in NEW.items()}
    else:
        old, new = OLD, NEW

    def read():
        got = _read(path, db_type)
        if db_type == "protodb":  # names are stored inside the records
            got = {k: core.caffe2_pb2.TensorProto.FromString(v) for k, v in got.items()}
            return {k: proto(p.byte_data) for k, p in got.items()}
        return got

    newer = {b"z": proto(b"newest")} if db_type == "protodb" else {b"z": b"newest"}
    n = _kill_everywhere(path, lambda: _write(path, db_type, old), lambda: _write(path, db_type, new),
                         lambda: _write(path, db_type, newer), read, old, new, no_exchange)
    assert n >= 3  # the sequence really was interrupted at several steps


def test_lmdb_checkpoint_op_killed_at_each_file_operation(tmp_path):
    """The issue's reproducer: a Save (Checkpoint) to lmdb killed between its steps."""
    path = str(tmp_path / "ckpt.lmdb")

    def save(values: dict[str, np.ndarray]) -> None:
        workspace.ResetWorkspace()
        for name, value in values.items():
            workspace.FeedBlob(name, value)
        workspace.RunOperatorOnce(core.CreateOperator("Save", sorted(values), [], db=path, db_type="lmdb",
                                                      absolute_path=1))

    old_blobs = {"w": np.arange(6, dtype=np.float32)}
    new_blobs = {"w": np.full(6, 7, np.float32), "b": np.ones(3, np.float32)}

    def read():
        return {k.decode(): v for k, v in _read(path, "lmdb").items()}

    save(old_blobs)
    old = read()
    save(new_blobs)
    new = read()
    assert len(old) == 1 and len(new) == 2 and old != new
    n = _kill_everywhere(path, lambda: save(old_blobs), lambda: save(new_blobs),
                         lambda: save({"z": np.zeros(1, np.float32)}), read, old, new)
    assert n >= 3


def test_model_file_writer_killed_at_each_file_operation(tmp_path):
    """save_net (netjit.proto.io.atomic_write_bytes) replaces a .pb the same way."""
    from netjit.proto.io import load_net, save_net
    path = str(tmp_path / "predict_net.pb")
    nets = {}
    for tag, n in (("old", 1), ("new", 3), ("next", 2)):
        net = caffe2_pb2.NetDef(name=tag)
        net.op.extend([core.CreateOperator("Relu", ["x"], ["x"])] * n)
        nets[tag] = net
    n = _kill_everywhere(path, lambda: save_net(nets["old"], path), lambda: save_net(nets["new"], path),
                         lambda: save_net(nets["next"], path), lambda: load_net(path),
                         nets["old"], nets["new"])
    assert n >= 3


def test_recovery_at_open_puts_a_moved_aside_db_back(tmp_path):
    """Without an exchange-rename a writer killed between its two renames leaves the previous DB
    in a hidden .old-<pid>-* folder; opening the path puts it back."""
    path = str(tmp_path / "x.lmdb")
    _write(path, "lmdb", OLD)
    aside = os.path.join(str(tmp_path), ".x.lmdb.old-999999999-0123abcd")  # no such pid
    os.rename(path, aside)
    assert _read(path, "lmdb") == OLD
    assert not os.path.exists(aside)


def test_live_writers_siblings_are_left_alone(tmp_path):
    path = str(tmp_path / "y.minidb")
    _write(path, "minidb", OLD)
    busy = db_base.sibling_temp_path(path, "tmp")   # this process is using it
    with open(busy, "wb") as handle:
        handle.write(b"partial")
    try:
        _write(path, "minidb", NEW)
        assert os.path.exists(busy)
    finally:
        db_base.remove_quietly(busy)
    assert _leftovers(path) == []
