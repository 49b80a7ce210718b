"""``caffe2.python.predictor.predictor_exporter``: a predict net and its parameters in one DB.

The DB's first record is the string blob ``!!META_NET_DEF`` (a serialized MetaNetDef holding the
predict-init, global-init and predict nets plus the parameter/input/output lists); the parameter
tensors follow. ``prepare_prediction_net`` reads it back into a ready-to-run net.

>>> from netjit import core, workspace
>>> import numpy as np
>>> net = core.Net("doctest_export")
>>> _ = net.FC(["x", "w", "b"], "y")
>>> _ = workspace.FeedBlob("w", np.ones((2, 3), np.float32))
>>> _ = workspace.FeedBlob("b", np.zeros(2, np.float32))
>>> _ = workspace.FeedBlob("x", np.ones((1, 3), np.float32))
>>> meta = PredictorExportMeta(net, ["w", "b"], ["x"], ["y"], shapes={"x": (1, 3), "y": (1, 2)})
>>> # save_to_db("minidb", "/tmp/model.minidb", meta)
>>> # predict = prepare_prediction_net("/tmp/model.minidb", "minidb"); workspace.RunNet(predict)
"""
from __future__ import annotations

from collections import namedtuple
from typing import Any, Iterable, Sequence

from netjit import core, workspace
from netjit.predictor_constants import predictor_constants
from netjit.predictor_py_utils import (AddBlobs, AddModelIdArg, AddNet, GetBlobs, GetNet,  # noqa: F401
                                       get_comp_name)
from netjit.proto import caffe2_pb2, metanet_pb2
from netjit.proto.args import make_op
from netjit.runtime.errors import NetJitError
from netjit.runtime.workspace import REGISTRY, Workspace

_FIELDS = ["predict_net", "parameters", "inputs", "outputs", "shapes", "name", "extra_init_net",
           "net_type", "num_workers"]


def _names(blobs: Iterable[Any], what: str) -> list[str]:
    if isinstance(blobs, (str, bytes)):
        raise TypeError(f"PredictorExportMeta {what} must be a list of blob names, got the single name {blobs!r}")
    return [b.decode("utf-8") if isinstance(b, bytes) else str(b) for b in blobs]


def _net_def(net: Any, what: str) -> caffe2_pb2.NetDef:
    if isinstance(net, caffe2_pb2.NetDef):
        return net
    if hasattr(net, "Proto"):
        return net.Proto()
    raise TypeError(f"{what} must be a core.Net or a NetDef, got {type(net).__name__}")


class PredictorExportMeta(namedtuple("PredictorExportMeta", _FIELDS)):
    """What to export: the predict net, which blobs are parameters, inputs and outputs, optional
    input/output shapes (else read from the workspace at export time), a model name for the keys,
    an extra init net appended to predict-init, and the predict net's type/num_workers.

    >>> m = PredictorExportMeta(core.Net("doctest_meta"), ["w"], ["x"], ["y"], name="mine")
    >>> m.predict_net_name(), m.parameters_name()
    ('PREDICT_NET_TYPE_mine', 'PARAMETERS_BLOB_TYPE_mine')
    """

    def __new__(cls, predict_net: Any, parameters: Sequence[Any], inputs: Sequence[Any],
                outputs: Sequence[Any], shapes: dict[str, Sequence[int]] | None = None, name: str = "",
                extra_init_net: Any = None, net_type: str | None = None,
                num_workers: int | None = None) -> "PredictorExportMeta":
        inputs = _names(inputs, "inputs")
        outputs = _names(outputs, "outputs")
        parameters = _names(parameters, "parameters")
        if len(set(inputs)) != len(inputs):
            duplicates = sorted({b for b in inputs if inputs.count(b) > 1})
            raise ValueError(f"all predictor inputs must be unique; repeated: {duplicates}")
        for other, what in ((inputs, "inputs"), (outputs, "outputs")):
            shared = sorted(set(parameters) & set(other))
            if shared:
                raise ValueError(f"parameters and {what} must be disjoint; both list {shared}")
        proto = _net_def(predict_net, "predict_net")
        shapes = {str(k): tuple(int(d) for d in v) for k, v in (shapes or {}).items()}
        return super().__new__(cls, proto, parameters, inputs, outputs, shapes, name or "",
                               extra_init_net, net_type, num_workers)

    def inputs_name(self) -> str:
        return get_comp_name(predictor_constants.INPUTS_BLOB_TYPE, self.name)

    def outputs_name(self) -> str:
        return get_comp_name(predictor_constants.OUTPUTS_BLOB_TYPE, self.name)

    def parameters_name(self) -> str:
        return get_comp_name(predictor_constants.PARAMETERS_BLOB_TYPE, self.name)

    def global_init_name(self) -> str:
        return get_comp_name(predictor_constants.GLOBAL_INIT_NET_TYPE, self.name)

    def predict_init_name(self) -> str:
        return get_comp_name(predictor_constants.PREDICT_INIT_NET_TYPE, self.name)

    def predict_net_name(self) -> str:
        return get_comp_name(predictor_constants.PREDICT_NET_TYPE, self.name)

    def train_init_plan_name(self) -> str:
        return get_comp_name(predictor_constants.TRAIN_INIT_PLAN_TYPE, self.name)

    def train_plan_name(self) -> str:
        return get_comp_name(predictor_constants.TRAIN_PLAN_TYPE, self.name)


# ------------------------------------------------------------------------------ the three nets
def _blob_shape(meta: PredictorExportMeta, blob: str, ws: Workspace) -> tuple[int, ...]:
    if blob in meta.shapes:
        return meta.shapes[blob]
    value = ws.get(blob) if ws.has(blob) else None
    shape = getattr(value, "shape", None)
    if shape is None:
        raise NetJitError(f"cannot export {blob!r}: its shape is not in PredictorExportMeta.shapes and the "
                          f"workspace {ws.name!r} holds no tensor of that name to read it from")
    return tuple(int(d) for d in shape)


def _append_net(target: caffe2_pb2.NetDef, extra: caffe2_pb2.NetDef) -> None:
    # core.Net.AppendNet's rules: new external inputs unless defined here, outputs de-duplicated.
    defined = set(target.external_input) | {o for op in target.op for o in op.output}
    target.external_input.extend(b for b in extra.external_input if b not in defined)
    target.external_output.extend(b for b in extra.external_output if b not in target.external_output)
    target.op.extend(extra.op)


def create_predict_init_net(ws: Workspace, meta: PredictorExportMeta) -> caffe2_pb2.NetDef:
    """Zero-filled inputs and outputs (so the predict net can be created before real data
    arrives), then the extra init net. The fills carry no device option: the loader decides."""
    net = caffe2_pb2.NetDef(name="predict-init")
    blobs = meta.inputs + meta.outputs
    for blob in blobs:
        net.op.append(make_op("ConstantFill", [], [blob], shape=list(_blob_shape(meta, blob, ws)), value=0.0))
    net.external_input.extend(blobs)
    if meta.extra_init_net is not None:
        _append_net(net, _net_def(meta.extra_init_net, "extra_init_net"))
    AddModelIdArg(meta.predict_net, net)
    return net


def create_global_init_net(meta: PredictorExportMeta) -> caffe2_pb2.NetDef:
    """Loads every parameter from the DB reader blob ``!!PREDICTOR_DBREADER``."""
    reader = predictor_constants.PREDICTOR_DBREADER
    net = caffe2_pb2.NetDef(name="global-init")
    net.op.append(make_op("Load", [reader], meta.parameters))
    net.external_input.append(reader)
    net.external_output.extend(meta.parameters)
    AddModelIdArg(meta.predict_net, net)
    return net


def create_predict_net(meta: PredictorExportMeta) -> caffe2_pb2.NetDef:
    """The original ops and net args, with the export's inputs + parameters as external inputs
    and its outputs as external outputs. The net keeps its own name ("predict" when unnamed)."""
    original = meta.predict_net
    net = caffe2_pb2.NetDef(name=original.name or "predict")
    net.op.extend(original.op)
    net.external_input.extend(meta.inputs + meta.parameters)
    net.external_output.extend(meta.outputs)
    net.arg.extend(original.arg)
    if original.HasField("device_option"):
        net.device_option.CopyFrom(original.device_option)
    if meta.net_type is not None:
        net.type = meta.net_type
    if meta.num_workers is not None:
        net.num_workers = int(meta.num_workers)
    return net


def get_meta_net_def(meta: PredictorExportMeta, ws: Workspace | None = None) -> metanet_pb2.MetaNetDef:
    """The MetaNetDef for ``meta``: nets predict-init, global-init, predict (in that order), then
    the parameter, input and output blob lists."""
    ws = ws or REGISTRY.current
    meta_net_def = metanet_pb2.MetaNetDef()
    AddNet(meta_net_def, meta.predict_init_name(), create_predict_init_net(ws, meta))
    AddNet(meta_net_def, meta.global_init_name(), create_global_init_net(meta))
    AddNet(meta_net_def, meta.predict_net_name(), create_predict_net(meta))
    AddBlobs(meta_net_def, meta.parameters_name(), meta.parameters)
    AddBlobs(meta_net_def, meta.inputs_name(), meta.inputs)
    AddBlobs(meta_net_def, meta.outputs_name(), meta.outputs)
    return meta_net_def


# ------------------------------------------------------------------------------- DB round trip
def save_to_db(db_type: str, db_destination: str, predictor_export_meta: PredictorExportMeta) -> None:
    """Write the MetaNetDef (first record) and every parameter from the current workspace into a
    new ``db_type`` DB at ``db_destination`` (an absolute path or one relative to the process'
    working directory, not the workspace root)."""
    meta_net_def = get_meta_net_def(predictor_export_meta)
    workspace.FeedBlob(predictor_constants.META_NET_DEF, meta_net_def.SerializeToString(),
                       core.DeviceOption(caffe2_pb2.CPU))
    blobs = [predictor_constants.META_NET_DEF] + list(predictor_export_meta.parameters)
    workspace.RunOperatorOnce(core.CreateOperator("Save", blobs, [], absolute_path=True,
                                                  db=str(db_destination), db_type=db_type))


def load_from_db(filename: str, db_type: str,
                 device_option: caffe2_pb2.DeviceOption | None = None) -> metanet_pb2.MetaNetDef:
    """Open the DB as the reader blob ``!!PREDICTOR_DBREADER``, load its first record (the
    MetaNetDef) and return it parsed. The reader stays positioned for global-init's Load. A given
    (or scoped) device option replaces every op's device option."""
    reader = predictor_constants.PREDICTOR_DBREADER
    workspace.RunOperatorOnce(core.CreateOperator("CreateDB", [], [reader], db=str(filename), db_type=db_type))
    workspace.RunOperatorOnce(core.CreateOperator("Load", [reader], [predictor_constants.META_NET_DEF]))
    blob = workspace.FetchBlob(predictor_constants.META_NET_DEF)
    if isinstance(blob, str):
        blob = blob.encode("utf-8")
    meta_net_def = metanet_pb2.MetaNetDef()
    try:
        meta_net_def.ParseFromString(bytes(blob))
    except Exception as err:  # protobuf raises DecodeError; say which file was bad
        raise NetJitError(f"{db_type} {filename!r}: record {predictor_constants.META_NET_DEF!r} is not a "
                          f"serialized MetaNetDef ({err})") from None
    if device_option is None:
        device_option = core.CurrentDeviceScope()
    if device_option is not None:
        for entry in meta_net_def.nets:
            for op in entry.value.op:
                op.device_option.CopyFrom(device_option)
    return meta_net_def


def _get_net(meta_net_def: metanet_pb2.MetaNetDef, const: str) -> caffe2_pb2.NetDef:
    # Caffe2 looks up the unnamed key only; a DB written with a model name has "<CONST>_<name>"
    # keys, so fall back to the single such key rather than fail on a named export.
    keys = [entry.key for entry in meta_net_def.nets]
    if const not in keys:
        named = [k for k in keys if k.startswith(const + "_")]
        if len(named) == 1:
            return GetNet(meta_net_def, named[0])
    return GetNet(meta_net_def, const)


def prepare_prediction_net(filename: str, db_type: str,
                           device_option: caffe2_pb2.DeviceOption | None = None) -> core.Net:
    """Load the DB, run global-init (parameters) and predict-init (zero inputs/outputs), create the
    predict net in the current workspace and return it, ready for ``workspace.RunNet``."""
    meta_net_def = load_from_db(filename, db_type, device_option)
    workspace.RunNetOnce(_get_net(meta_net_def, predictor_constants.GLOBAL_INIT_NET_TYPE))
    workspace.RunNetOnce(_get_net(meta_net_def, predictor_constants.PREDICT_INIT_NET_TYPE))
    predict_net = core.Net(_get_net(meta_net_def, predictor_constants.PREDICT_NET_TYPE))
    workspace.CreateNet(predict_net, overwrite=True)
    return predict_net


__all__ = ["PredictorExportMeta", "save_to_db", "load_from_db", "prepare_prediction_net", "get_meta_net_def",
           "create_predict_init_net", "create_global_init_net", "create_predict_net"]
