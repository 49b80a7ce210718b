"""Net runners: what ``workspace.CreateNet`` stores and ``RunNet`` calls.

``make_runner(net, ws)`` constructs a net against a workspace (Caffe2's CreateNet checks) and
returns an object whose ``run()`` executes it once. The reference runner steps through each op's
numpy reference; the compiled runner (compiler/api) replaces it by default.
"""
from __future__ import annotations

import os

from netjit.compiler.reference import build_reference_plan
from netjit.proto import caffe2_pb2
from netjit.runtime.executor import execute
from netjit.runtime.plan import Plan
from netjit.runtime.workspace import Workspace

# "compiled" (default) or "reference"; the environment variable NETJIT_EXECUTOR overrides the default.
EXECUTORS = ("compiled", "reference")


def default_executor() -> str:
    # Set but empty (NETJIT_EXECUTOR=) means the default, as for an unset variable.
    choice = os.environ.get("NETJIT_EXECUTOR", "").strip().lower() or "compiled"
    if choice not in EXECUTORS:
        raise ValueError(f"NETJIT_EXECUTOR={choice!r}: expected one of {EXECUTORS}")
    return choice


class ReferenceRunner:
    """Runs a NetDef op by op through the numpy references (the oracle)."""
    executor = "reference"

    def __init__(self, net: caffe2_pb2.NetDef, ws: Workspace):
        self.net = net
        self.ws = ws
        self.plan: Plan = build_reference_plan(net, ws)

    def run(self) -> None:
        execute(self.plan, self.ws)


def make_runner(net: caffe2_pb2.NetDef, ws: Workspace, executor: str | None = None,
                private_outputs: list[str] | None = None, digest: bytes | None = None):
    """A runner for ``net`` on ``ws``. ``private_outputs``: the workspace is private to its owner
    (a Predictor's), so only these blobs need their values after a run; the compiled executor
    may then keep other intermediates in its arena and fuse them away. ``digest``: the net's
    ``compiler.api.net_digest`` when the caller computed it already."""
    executor = executor or default_executor()
    if executor == "reference":
        return ReferenceRunner(net, ws)
    from netjit.compiler.api import compiled_runner  # late: keeps `import runner` light
    return compiled_runner(net, ws, private_outputs, digest)
