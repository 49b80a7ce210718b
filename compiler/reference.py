"""The reference backend, and net construction shared with the compiled executor.

``build_reference_plan`` makes a ``runtime.Plan`` that runs each op's numpy reference in NetDef
order: the oracle the compiled backends are checked against. Construction follows Caffe2 for both
executors: every op is checked against its schema (``check_op``, also used by IR import), every
input must exist in the workspace or be an earlier op's output, and outputs are created as empty
blobs (``NetChecks``, computed once per net; the compiled runner keeps it with its CompiledNet).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from netjit.compiler.ops.registry import OpDef, OpSchemaError, UnknownOpError, lookup
from netjit.proto import caffe2_pb2
from netjit.runtime.context import OpContext, op_rng
from netjit.runtime.errors import MissingBlobError, OpError
from netjit.runtime.executor import execute
from netjit.runtime.plan import Plan, Step, as_blob_values, reference_call  # noqa: F401 - re-exported
from netjit.runtime.workspace import Workspace


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
                fn=reference_call(opdef.reference), ctx=ctx)


@dataclass
class NetChecks:
    """Caffe2's CreateNet checks for one net, precomputed so constructing a seen net stays cheap."""
    net_name: str
    static_error: OpError | None                # an input neither declared nor written earlier
    required: list[tuple[str, int, str]]        # (blob read from the workspace, first reader index, type)
    external_outputs: list[str]                 # declared outputs no op produces (must exist)
    written: list[str]

    def check(self, ws: Workspace) -> None:
        """Raise the first construction error against ``ws``; else create the written blobs (empty)."""
        if self.static_error is not None:
            raise self.static_error
        for blob, index, op_type in self.required:
            if not ws.has(blob):
                raise MissingBlobError(f"input blob {blob!r} does not exist in workspace {ws.name!r}",
                                       net=self.net_name, index=index, op_type=op_type, blob=blob)
        for blob in self.external_outputs:
            if not ws.has(blob):
                raise OpError(f"external output {blob!r} is not produced by any op", net=self.net_name, blob=blob)
        blobs = ws.blobs
        for blob in self.written:
            if blob not in blobs and not ws.has(blob):
                blobs[blob] = None


def net_checks(net: caffe2_pb2.NetDef) -> NetChecks:
    """Caffe2's construction rule: each input exists in the workspace or is written by an earlier op;
    with a non-empty external_input list, it must be listed there or written earlier."""
    declared = set(net.external_input)
    produced: set[str] = set()
    error = None
    required: list[tuple[str, int, str]] = []
    seen: set[str] = set()
    for index, op in enumerate(net.op):
        for blob in op.input:
            if blob in produced:
                continue
            if declared and blob not in declared and error is None:
                error = OpError(f"input blob {blob!r} is neither an external input of the net nor written by "
                                f"an earlier op", net=net.name, index=index, op_type=op.type, blob=blob)
            if blob not in seen:
                seen.add(blob)
                required.append((blob, index, op.type))
        produced.update(op.output)
    outs = [b for b in net.external_output if b not in produced and b not in declared]
    written = list(dict.fromkeys(b for op in net.op for b in op.output))
    return NetChecks(net.name, error, required, outs, written)


def build_reference_plan(net: caffe2_pb2.NetDef, ws: Workspace, check_inputs: bool = True) -> Plan:
    """Check and construct every op of ``net`` against ``ws`` (schemas first, then inputs, as the
    compiled executor does); create output blobs as empty."""
    net_device = net.device_option if net.HasField("device_option") else None
    steps = [make_step(op, i, net.name, ws, net_device) for i, op in enumerate(net.op)]
    if check_inputs:
        net_checks(net).check(ws)
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
