"""Bundle inputs from a predictor export: a DB that ``predictor_exporter.save_to_db`` wrote (its first
record a MetaNetDef, the parameters after it), or a serialized MetaNetDef ``.pb`` whose init nets
fill the parameters themselves.

The nets run as ``prepare_prediction_net`` would run them (global-init loads the parameters,
predict-init zero-fills the inputs at their exported shapes), but in a private workspace with the
reference executor: the caller's workspaces are not touched. What comes back is what
``build_bundle`` needs: the parameters, the predict net and the declared inputs' shapes and dtypes.

>>> # params, predict_net, inputs = read_export("model.minidb")        # db type: minidb by default
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netjit.compiler.aot.common import AotError
from netjit.proto import caffe2_pb2, metanet_pb2


@dataclass
class Export:
    params: dict[str, np.ndarray]
    predict_net: caffe2_pb2.NetDef
    inputs: dict[str, tuple[list[int], str]]      # blob -> (shape, dtype name), as exported


def _entry(meta: metanet_pb2.MetaNetDef, const: str, what: str, source: str) -> caffe2_pb2.NetDef:
    # Caffe2 keys the nets by the constant, or "<constant>_<model name>" for a named export.
    found = [e.value for e in meta.nets if e.key == const or e.key.startswith(const + "_")]
    if len(found) != 1:
        keys = [e.key for e in meta.nets]
        raise AotError(f"{source}: the MetaNetDef has {'no' if not found else 'several'} {what} net "
                       f"({const!r}; its nets: {keys})")
    return found[0]


def _blob_list(meta: metanet_pb2.MetaNetDef, const: str) -> list[str]:
    for entry in meta.blobs:
        if entry.key == const or entry.key.startswith(const + "_"):
            return list(entry.value)
    return []


def _parse_meta(data: bytes) -> metanet_pb2.MetaNetDef | None:
    from netjit.predictor_constants import predictor_constants as pc
    meta = metanet_pb2.MetaNetDef()
    try:
        meta.ParseFromString(data)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError: not a MetaNetDef
        return None
    keys = [e.key for e in meta.nets]
    return meta if any(k == pc.PREDICT_NET_TYPE or k.startswith(pc.PREDICT_NET_TYPE + "_") for k in keys) else None


def is_meta_net_def(path: str | os.PathLike) -> bool:
    """Whether the file is a serialized MetaNetDef with a predict net (not a DB, not a NetDef)."""
    p = Path(path)
    return p.is_file() and p.stat().st_size < (1 << 31) and _parse_meta(p.read_bytes()) is not None


def read_export(path: str | os.PathLike, db_type: str | None = None) -> Export:
    """Parameters, predict net and declared inputs of a predictor export (see the module doc)."""
    from netjit.compiler.runner import make_runner
    from netjit.predictor_constants import predictor_constants as pc
    from netjit.proto.args import make_op
    from netjit.runtime.errors import NetJitError
    from netjit.runtime.workspace import Workspace
    source = str(path)
    if not Path(path).exists():
        raise AotError(f"{source}: no such file or DB")
    ws = Workspace("aot-export", tempfile.gettempdir())

    def run(net: caffe2_pb2.NetDef, what: str) -> None:
        try:
            make_runner(net, ws, executor="reference").run()
        except NetJitError as err:
            raise AotError(f"{source}: running the export's {what} net failed: {err}") from None

    meta = None if db_type else (_parse_meta(Path(path).read_bytes()) if Path(path).is_file() else None)
    reader = pc.PREDICTOR_DBREADER
    if meta is None:
        kind = db_type or "minidb"
        boot = caffe2_pb2.NetDef(name="aot-export-open")
        boot.op.extend([make_op("CreateDB", [], [reader], db=source, db_type=kind),
                        make_op("Load", [reader], [pc.META_NET_DEF])])
        run(boot, f"{kind} DB open")
        blob = ws.get(pc.META_NET_DEF)
        meta = _parse_meta(blob.encode() if isinstance(blob, str) else bytes(blob))
        if meta is None:
            raise AotError(f"{source}: the first record of this {kind} DB is not a MetaNetDef with a predict "
                           f"net (not a predictor_exporter.save_to_db export?)")
    else:
        global_init = _entry(meta, pc.GLOBAL_INIT_NET_TYPE, "global-init", source)
        if reader in global_init.external_input:
            raise AotError(f"{source}: this MetaNetDef loads its parameters from a DB ({reader!r}); pass the DB "
                           f"file that holds it (what predictor_exporter.save_to_db wrote) instead")
    run(_entry(meta, pc.GLOBAL_INIT_NET_TYPE, "global-init", source), "global-init")
    run(_entry(meta, pc.PREDICT_INIT_NET_TYPE, "predict-init", source), "predict-init")
    predict = _entry(meta, pc.PREDICT_NET_TYPE, "predict", source)
    inputs = _blob_list(meta, pc.INPUTS_BLOB_TYPE) or [b for b in predict.external_input if not ws.has(b)]
    outputs = set(_blob_list(meta, pc.OUTPUTS_BLOB_TYPE)) | set(predict.external_output)
    declared = {}
    for blob in inputs:
        value = ws.get(blob) if ws.has(blob) else None
        if isinstance(value, np.ndarray):
            declared[blob] = ([int(d) for d in value.shape], value.dtype.name)
    skip = set(inputs) | outputs | {reader, pc.META_NET_DEF}
    params = {b: ws.get(b) for b in ws.blobs if b not in skip and isinstance(ws.get(b), np.ndarray)}
    return Export(params, predict, declared)
