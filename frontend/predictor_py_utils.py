"""``caffe2.python.predictor.predictor_py_utils``: reading and writing MetaNetDef maps.

A MetaNetDef keeps its nets, blob lists and plans as repeated key/value entries (proto2 has no
map type there); these helpers look entries up by key and append new ones.

>>> from netjit.proto import metanet_pb2
>>> meta = metanet_pb2.MetaNetDef()
>>> AddBlobs(meta, "INPUTS_BLOB_TYPE", ["data"])
>>> GetBlobs(meta, "INPUTS_BLOB_TYPE")
['data']
"""
from __future__ import annotations

from typing import Any, Iterable

from netjit.core_plan import as_net_def
from netjit.proto import caffe2_pb2, metanet_pb2


def get_comp_name(string: str, name: str | None) -> str:
    """A MetaNetDef key: ``<CONST>`` or, for a named model, ``<CONST>_<name>``."""
    return f"{string}_{name}" if name else string


def _proto_map_get(entries: Iterable[Any], key: str, what: str) -> Any:
    entries = list(entries)
    for entry in entries:
        if entry.key == key:
            return entry.value
    raise KeyError(f"MetaNetDef has no {what} under key {key!r} (keys: {[e.key for e in entries]})")


def GetNet(meta_net_def: metanet_pb2.MetaNetDef, key: str) -> caffe2_pb2.NetDef:
    """A copy of the net stored under ``key`` (callers may edit it freely)."""
    net = caffe2_pb2.NetDef()
    net.CopyFrom(_proto_map_get(meta_net_def.nets, key, "net"))
    return net


def GetNetOriginal(meta_net_def: metanet_pb2.MetaNetDef, key: str) -> caffe2_pb2.NetDef:
    """The stored net itself (edits change the MetaNetDef)."""
    return _proto_map_get(meta_net_def.nets, key, "net")


def GetPlan(meta_net_def: metanet_pb2.MetaNetDef, key: str) -> caffe2_pb2.PlanDef:
    plan = caffe2_pb2.PlanDef()
    plan.CopyFrom(_proto_map_get(meta_net_def.plans, key, "plan"))
    return plan


def GetPlanOriginal(meta_net_def: metanet_pb2.MetaNetDef, key: str) -> caffe2_pb2.PlanDef:
    return _proto_map_get(meta_net_def.plans, key, "plan")


def GetBlobs(meta_net_def: metanet_pb2.MetaNetDef, key: str) -> list[str]:
    """The blob names stored under ``key``; an absent key gives an empty list, as in Caffe2."""
    try:
        return list(_proto_map_get(meta_net_def.blobs, key, "blob list"))
    except KeyError:
        return []


def GetApplicationSpecificInfo(meta_net_def: metanet_pb2.MetaNetDef) -> dict[str, str]:
    return {entry.key: entry.value for entry in meta_net_def.applicationSpecificInfo}


def AddNet(meta_net_def: metanet_pb2.MetaNetDef, key: str, net_def: Any) -> None:
    entry = meta_net_def.nets.add()
    entry.key = key
    entry.value.CopyFrom(as_net_def(net_def))


def AddPlan(meta_net_def: metanet_pb2.MetaNetDef, key: str, plan_def: caffe2_pb2.PlanDef) -> None:
    entry = meta_net_def.plans.add()
    entry.key = key
    entry.value.CopyFrom(plan_def)


def AddBlobs(meta_net_def: metanet_pb2.MetaNetDef, key: str, blob_names: Iterable[Any]) -> None:
    entry = meta_net_def.blobs.add()
    entry.key = key
    entry.value.extend(str(b) for b in blob_names)


def GetArgumentByName(net_def: caffe2_pb2.NetDef, arg_name: str) -> caffe2_pb2.Argument | None:
    for argument in net_def.arg:
        if argument.name == arg_name:
            return argument
    return None


def AddModelIdArg(predict_net: caffe2_pb2.NetDef, net_def: caffe2_pb2.NetDef) -> None:
    """Copy the predict net's ``model_id`` int argument (when it has one) onto ``net_def``: the
    init nets then carry the same model id as the net they prepare."""
    model_id = GetArgumentByName(predict_net, "model_id")
    if model_id is None or not model_id.HasField("i"):
        return
    existing = GetArgumentByName(net_def, "model_id")
    if existing is None:
        existing = net_def.arg.add(name="model_id")
    existing.i = model_id.i
