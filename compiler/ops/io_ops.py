"""DB and checkpoint ops: CreateDB, TensorProtosDBInput, Save, Load, Checkpoint/Snapshot, DBExists.

All are HOST ops: they run in Python against the workspace and the file system and are never
compiled. Save/Load/Checkpoint/DBExists resolve a relative ``db`` against the workspace's root
folder unless ``absolute_path=1``; CreateDB, like Caffe2's, opens its ``db`` path as given.

    Save(["w", "b"], [], db="params.minidb", db_type="minidb")
    Load([], ["w", "b"], db="params.minidb", db_type="minidb")
    Checkpoint(["iter", "w"], [], db="ckpt_%05d.lmdb", db_type="lmdb", every=100)
"""
from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from netjit.compiler.ops.gradients import no_gradient
from netjit.compiler.ops.registry import HOST, INF, alias, arg, defop
from netjit.proto import caffe2_pb2
from netjit.runtime.db import DBError, DBReader, Mode, db_exists, open_db
from netjit.runtime.serialize import (CHUNK_ID_SEPARATOR, CHUNK_SIZE, BlobAssembler, SerializationError,
                                      parse_blob_proto, serialize_blob_records, tensor_proto_to_array)

_SAVE_ARGS = [
    arg("db_type", "str", required=True),
    arg("absolute_path", "int", 0),
    arg("strip_prefix", "str", ""),
    arg("blob_name_overrides", "strs", []),
    # Elements per record (Caffe2's caffe2_tensor_chunk_size); -1 writes each tensor as one record.
    arg("chunk_size", "int", CHUNK_SIZE),
]


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------
@defop("CreateDB", inputs=0, outputs=1, category=HOST, gradient=no_gradient,
       args=[arg("db", "str", required=True), arg("db_type", "str", "leveldb"),
             arg("num_shards", "int", 1), arg("shard_id", "int", 0)])
def create_db(ctx):
    """A DBReader blob over ``db`` (a path used as given), positioned on this shard's first record."""
    if not ctx.args.db:
        raise ctx.error("argument 'db' must name a DB path")
    try:
        return DBReader(ctx.args.db_type, ctx.args.db, ctx.args.num_shards, ctx.args.shard_id)
    except DBError as err:
        raise ctx.error(str(err), blob=ctx.output_name(0)) from None


def _reader_input(ctx: Any, value: Any, i: int) -> DBReader:
    if not isinstance(value, DBReader):
        raise ctx.error(f"input {i} must be a DB reader (made by CreateDB), got "
                        f"{'an empty blob' if value is None else type(value).__name__}", blob=ctx.input_name(i))
    return value


def _record_tensors(ctx: Any, reader: DBReader, key: bytes, value: bytes) -> list[np.ndarray]:
    protos = caffe2_pb2.TensorProtos()
    where = f"record {key!r} of {reader.db_type} {reader.source!r}"
    try:
        protos.ParseFromString(value)
    except DecodeError as err:
        raise ctx.error(f"{where} is not a serialized TensorProtos ({err})") from None
    if len(protos.protos) != ctx.num_outputs:
        raise ctx.error(f"{where} holds {len(protos.protos)} tensor(s), but the op has "
                        f"{ctx.num_outputs} output(s); each record must hold exactly one tensor per output")
    try:
        return [tensor_proto_to_array(p) for p in protos.protos]
    except SerializationError as err:
        raise ctx.error(f"{where}: {err}") from None


@defop("TensorProtosDBInput", inputs=1, outputs=(1, INF), category=HOST, gradient=no_gradient,
       args=[arg("batch_size", "int", 0)])
def tensor_protos_db_input(ctx, reader):
    """Read ``batch_size`` TensorProtos records; output i is [batch_size] + record tensor i's dims.

    ``batch_size=0`` reads one record and outputs its tensors as they are. The reader wraps around
    at the end of the DB. Caffe2 reads in a prefetch thread; here each run reads synchronously.
    """
    reader = _reader_input(ctx, reader, 0)
    batch = ctx.args.batch_size
    if batch < 0:
        raise ctx.error(f"batch_size must be >= 0, got {batch}")
    outs: list[np.ndarray] | None = None
    for item in range(max(batch, 1)):
        try:
            key, value = reader.read()
        except DBError as err:
            raise ctx.error(str(err), blob=ctx.input_name(0)) from None
        tensors = _record_tensors(ctx, reader, key, value)
        if batch == 0:
            return tuple(tensors)
        if outs is None:
            outs = [np.empty((batch,) + t.shape, dtype=t.dtype) for t in tensors]
        for i, (out, t) in enumerate(zip(outs, tensors)):
            if out.shape[1:] != t.shape or out.dtype != t.dtype:
                raise ctx.error(f"record {key!r} tensor {i} is {list(t.shape)} {t.dtype}, but the batch's "
                                f"first record had {list(out.shape[1:])} {out.dtype}", blob=ctx.output_name(i))
            out[item] = t
    return tuple(outs)


# --------------------------------------------------------------------------------------------
# Save / Checkpoint
# --------------------------------------------------------------------------------------------
def _strip(name: str, prefix: str) -> str:
    """Drop everything up to and including the first occurrence of ``prefix`` (if it occurs)."""
    if not prefix:
        return name
    at = name.find(prefix)
    return name if at < 0 else name[at + len(prefix):]


def _save_validate(args: Any) -> None:
    # Caffe2's SaveOp refused this combination when the op was built: overrides name every blob
    # exactly, so there is nothing for strip_prefix to strip.
    if args.blob_name_overrides and args.strip_prefix:
        raise ValueError("strip_prefix and blob_name_overrides cannot be used together")


def _save(ctx: Any, values: tuple[Any, ...], db: str) -> None:
    args = ctx.args
    inputs = list(ctx.op.input)
    if not db:
        raise ctx.error("argument 'db' must name a DB path")
    if args.blob_name_overrides:
        if len(args.blob_name_overrides) != len(inputs):
            raise ctx.error(f"blob_name_overrides has {len(args.blob_name_overrides)} name(s) for "
                            f"{len(inputs)} input(s)")
        if any(not n for n in args.blob_name_overrides):
            raise ctx.error("blob_name_overrides may not contain an empty name")
        names = list(args.blob_name_overrides)
    else:
        names = [_strip(n, args.strip_prefix) for n in inputs]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ctx.error(f"two inputs would be saved under the same name {name!r}")
        seen.add(name)
    path = ctx.ws.resolve_path(db, bool(args.absolute_path))
    try:
        # The DB publishes only when the block completes: a failure leaves the old DB as it was.
        with open_db(path, args.db_type, Mode.NEW) as out:
            txn = out.new_transaction()
            for i, (name, value) in enumerate(zip(names, values)):
                try:
                    records = serialize_blob_records(name, value, args.chunk_size)
                except SerializationError as err:
                    raise ctx.error(f"cannot save input {i}: {err}", blob=inputs[i]) from None
                for key, record in records:
                    txn.put(key, record)
            txn.commit()
    except DBError as err:
        raise ctx.error(str(err)) from None


@defop("Save", inputs=(1, INF), outputs=0, category=HOST, gradient=no_gradient,
       args=[arg("db", "str", required=True)] + _SAVE_ARGS, validate=_save_validate)
def save(ctx, *values):
    """Write every input blob into a new DB (tensors chunked as ``<name>#%<k>``, strings as ``<name>``)."""
    _save(ctx, values, ctx.args.db)


def _format_pattern(ctx: Any, pattern: str, iteration: int) -> str:
    # Caffe2 printf()s the pattern with the iteration; a pattern without a directive is used as is.
    if "%" not in pattern:
        return pattern
    try:
        return pattern % iteration
    except (TypeError, ValueError) as err:
        raise ctx.error(f"db pattern {pattern!r} must hold one integer directive like %d ({err})") from None


@defop("Checkpoint", inputs=(1, INF), outputs=0, category=HOST, gradient=no_gradient,
       args=[arg("db", "str", required=True), arg("every", "int", 1)] + _SAVE_ARGS, validate=_save_validate)
def checkpoint(ctx, iteration, *values):
    """When ``iter % every == 0``, Save every input (the iter blob too) to ``db % iter``."""
    if ctx.args.every <= 0:
        raise ctx.error(f"every must be > 0, got {ctx.args.every}")
    it = np.asarray(iteration) if iteration is not None else None
    if it is None or it.dtype != np.int64 or it.size < 1:
        desc = "an empty blob" if it is None else f"{it.dtype} {list(it.shape)}"
        raise ctx.error(f"input 0 must be the int64 iteration counter (from Iter), got {desc}",
                        blob=ctx.input_name(0))
    step = int(it.reshape(-1)[0])
    if step % ctx.args.every == 0:
        _save(ctx, (iteration,) + values, _format_pattern(ctx, ctx.args.db, step))


alias("Snapshot", "Checkpoint")


# --------------------------------------------------------------------------------------------
# Load / DBExists
# --------------------------------------------------------------------------------------------
class _LoadRun:
    """One Load: which names to take, the chunks gathered so far, and where each key came from."""

    def __init__(self, ctx: Any):
        self.ctx = ctx
        args = ctx.args
        self.add_prefix, self.strip_prefix = args.add_prefix, args.strip_prefix
        self.load_all = bool(args.load_all)
        sources = list(args.source_blob_names)
        outputs = list(ctx.op.output)
        if sources and len(sources) != len(outputs):
            raise ctx.error(f"source_blob_names has {len(sources)} name(s) for {len(outputs)} output(s)")
        if sources and self.strip_prefix:
            raise ctx.error("strip_prefix and source_blob_names cannot be used together")
        if sources and self.load_all:
            raise ctx.error("load_all cannot be used with source_blob_names")
        self.wanted: dict[str, int] = {}
        if not self.load_all:
            for i, name in enumerate(sources or outputs):
                if name in self.wanted:
                    raise ctx.error(f"blob name {name!r} is asked for twice")
                self.wanted[name] = i
        self.assembler = BlobAssembler(allow_incomplete=bool(args.allow_incomplete))
        self.db_of_name: dict[str, int] = {}

    def name_of_key(self, key: bytes) -> str:
        text = key.decode("utf-8", errors="surrogateescape")
        cut = text.find(CHUNK_ID_SEPARATOR)
        return self.add_prefix + _strip(text if cut < 0 else text[:cut], self.strip_prefix)

    def done(self) -> bool:
        return not self.load_all and all(self.assembler.is_complete(n) for n in self.wanted)

    def extract(self, db_index: int, cursor: Any, label: str) -> None:
        ctx = self.ctx
        while cursor.valid():
            key = cursor.key()
            name = self.name_of_key(key)
            first = self.db_of_name.setdefault(name, db_index)
            if first != db_index:
                raise ctx.error(f"blob {name!r} is in more than one of the DBs being loaded (again in {label})")
            if self.load_all or name in self.wanted:
                where = f"{label}, key {key.decode('utf-8', errors='replace')!r}"
                proto = parse_blob_proto(cursor.value(), where)
                self.assembler.add(name, proto, where=where)
                if self.done():
                    return
            cursor.next()

    def results(self) -> dict[str, Any]:
        return self.assembler.finish()


def _load_from(ctx: Any, run: _LoadRun, readers: tuple[Any, ...]) -> None:
    args = ctx.args
    if readers:
        for i, value in enumerate(readers):
            reader = _reader_input(ctx, value, i)
            with reader.lock:   # reads on from the reader's current position, as Caffe2 does
                run.extract(i, reader.cursor, f"{reader.db_type} {reader.source!r}")
        return
    if not args.db_type:
        raise ctx.error("argument 'db_type' is required when Load has no DB reader inputs")
    if args.dbs:
        paths = list(args.dbs)
        if any(not p for p in paths):
            raise ctx.error("argument 'dbs' may not contain an empty path")
        if len(set(paths)) != len(paths):
            raise ctx.error(f"argument 'dbs' names a DB twice: {paths}")
    elif args.db:
        paths = [args.db]
    else:
        raise ctx.error("Load needs a 'db' (or 'dbs') argument or DB reader inputs")
    for i, db in enumerate(paths):
        path = ctx.ws.resolve_path(db, bool(args.absolute_path))
        with open_db(path, args.db_type, Mode.READ) as source:
            cursor = source.new_cursor()
            try:
                run.extract(i, cursor, f"{args.db_type} {path!r}")
            finally:
                cursor.close()


@defop("Load", inputs=(0, INF), outputs=(0, INF), category=HOST, gradient=no_gradient,
       args=[arg("db", "str", ""), arg("dbs", "strs", []), arg("db_type", "str", ""),
             arg("absolute_path", "int", 0), arg("add_prefix", "str", ""), arg("strip_prefix", "str", ""),
             arg("keep_device", "int", 0), arg("load_all", "int", 0), arg("allow_incomplete", "bool", False),
             arg("source_blob_names", "strs", [])])
def load(ctx, *readers):
    """Load blobs from DB(s) or DB reader inputs into the outputs (or, with load_all, every blob
    in the DBs into the workspace). Tensors are merged from their chunks; host arrays carry no
    device, so ``keep_device`` changes nothing here."""
    run = _LoadRun(ctx)
    try:
        _load_from(ctx, run, readers)
        loaded = run.results()
    except (DBError, SerializationError) as err:
        raise ctx.error(str(err)) from None
    outputs = list(ctx.op.output)
    if run.load_all:
        # Every blob lands in the workspace under its (prefixed) key name; nothing was written
        # before all records decoded, so a failure above leaves the workspace untouched.
        ctx.ws.blobs.update(loaded)
        return tuple(loaded.get(name) for name in outputs)
    by_output: list[Any] = [None] * len(outputs)
    for name, i in run.wanted.items():
        if name in loaded:
            by_output[i] = loaded[name]
    missing = [outputs[i] for name, i in run.wanted.items() if name not in loaded]
    if missing and not ctx.args.allow_incomplete:
        raise ctx.error(f"expected to load {len(outputs)} blob(s), got {len(outputs) - len(missing)}; "
                        f"not found in the DB(s): {missing}", blob=missing[0])
    return tuple(by_output)


@defop("DBExists", inputs=0, outputs=1, category=HOST, gradient=no_gradient,
       args=[arg("db_name", "str", ""), arg("db_type", "str", ""), arg("absolute_path", "int", 0)])
def db_exists_op(ctx):
    """A 0-d bool: whether ``db_name`` opens as a ``db_type`` DB."""
    path = ctx.ws.resolve_path(ctx.args.db_name, bool(ctx.args.absolute_path))
    try:
        return np.array(db_exists(path, ctx.args.db_type), dtype=np.bool_)
    except DBError as err:
        raise ctx.error(str(err), blob=ctx.output_name(0)) from None
