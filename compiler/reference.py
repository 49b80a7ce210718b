"""The reference backend: a Plan that runs each op's numpy reference in NetDef order.

This is the oracle the compiled backends are checked against, and the fallback for host ops.
Construction follows Caffe2: every op is checked against its schema, every input must exist (in
the workspace or as an earlier op's output), and outputs are created as empty blobs.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from netjit.compiler.ops.registry import OpDef, OpSchemaError, UnknownOpError, lookup
from netjit.proto import caffe2_pb2
from netjit.runtime.context import OpContext, op_rng
from netjit.runtime.errors import MissingBlobError, OpError
from netjit.runtime.executor import execute
from netjit.runtime.plan import Plan, Step
from netjit.runtime.workspace import Workspace


def as_blob_values(out: Any) -> list[Any]:
    """A reference's result as a list of blob values. numpy hands back scalars (np.float32) for
    most operations on 0-d arrays; a blob holds a 0-d array instead, as Caffe2's tensors did."""
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    return [np.asarray(o) if isinstance(o, np.generic) else o for o in outs]


def _call_reference(fn):
    def run(ctx: OpContext, values: list[Any]) -> list[Any]:
        return as_blob_values(fn(ctx, *values))
    return run


def effective_op(op: caffe2_pb2.OperatorDef, net_device: caffe2_pb2.DeviceOption | None) -> caffe2_pb2.OperatorDef:
    """The op as Caffe2 constructs it: the net's device option fills in where the op has none."""
    if net_device is not None and not op.HasField("device_option"):
        op = caffe2_pb2.OperatorDef.FromString(op.SerializeToString())
        op.device_option.CopyFrom(net_device)
    return op


def check_op(op: caffe2_pb2.OperatorDef, index: int, net_name: str) -> tuple[OpDef, Any]:
    """Look the op up and check it against its schema; errors name the net, index, type and blob."""
    try:
        opdef = lookup(op.type)
    except UnknownOpError as err:
        raise OpError(str(err), net=net_name, index=index, op_type=op.type) from None
    try:
        args = opdef.check(op)
    except (OpSchemaError, ValueError) as err:
        blob = op.output[0] if len(op.output) else (op.input[0] if len(op.input) else None)
        raise OpError(str(err), net=net_name, index=index, op_type=op.type, blob=blob) from None
    return opdef, args


def make_step(op: caffe2_pb2.OperatorDef, index: int, net_name: str, ws: Workspace,
              net_device: caffe2_pb2.DeviceOption | None = None) -> Step:
    op = effective_op(op, net_device)
    opdef, args = check_op(op, index, net_name)
    ctx = OpContext(args=args, op=op, index=index, net_name=net_name, ws=ws,
                    rng=op_rng(op.device_option if op.HasField("device_option") else None))
    return Step(index=index, op_type=op.type, inputs=tuple(op.input), outputs=tuple(op.output),
                fn=_call_reference(opdef.reference), ctx=ctx)


def check_net_inputs(net: caffe2_pb2.NetDef, ws: Workspace) -> None:
    """Caffe2's construction rule: each input exists in the workspace or is written by an earlier op;
    with a non-empty external_input list, it must be listed there or written earlier."""
    name = net.name
    declared = set(net.external_input)
    produced: set[str] = set()
    for index, op in enumerate(net.op):
        for blob in op.input:
            if blob in produced:
                continue
            if declared and blob not in declared:
                raise OpError(f"input blob {blob!r} is neither an external input of the net nor written by "
                              f"an earlier op", net=name, index=index, op_type=op.type, blob=blob)
            if not ws.has(blob):
                raise MissingBlobError(f"input blob {blob!r} does not exist in workspace {ws.name!r}",
                                       net=name, index=index, op_type=op.type, blob=blob)
        produced.update(op.output)
    for blob in net.external_output:
        if blob not in produced and blob not in declared and not ws.has(blob):
            raise OpError(f"external output {blob!r} is not produced by any op", net=name, blob=blob)


def build_reference_plan(net: caffe2_pb2.NetDef, ws: Workspace, check_inputs: bool = True) -> Plan:
    """Check and construct every op of ``net`` against ``ws``; create output blobs as empty."""
    if check_inputs:
        check_net_inputs(net, ws)
    net_device = net.device_option if net.HasField("device_option") else None
    steps = [make_step(op, i, net.name, ws, net_device) for i, op in enumerate(net.op)]
    for step in steps:
        for blob in step.outputs:
            ws.create_blob(blob)
    return Plan(net_name=net.name, steps=steps)


def run_operator_once(op: caffe2_pb2.OperatorDef, ws: Workspace, net_name: str = "RunOperatorOnce") -> None:
    """Construct one op and run it once (Caffe2's RunOperatorOnce)."""
    net = caffe2_pb2.NetDef(name=net_name)
    net.op.add().CopyFrom(op)
    execute(build_reference_plan(net, ws), ws)


def run_ops(ops: Iterable[caffe2_pb2.OperatorDef], ws: Workspace, net_name: str = "ops") -> None:
    net = caffe2_pb2.NetDef(name=net_name)
    net.op.extend(ops)
    execute(build_reference_plan(net, ws), ws)
