"""What an op's reference implementation sees when it runs: its decoded args, its own
OperatorDef, the workspace (for host ops), its random generator and a persistent state dict."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from netjit.runtime.errors import OpError
from netjit.runtime.workspace import Workspace

_ENTROPY = np.random.SeedSequence()


def op_rng(device_option: Any | None) -> np.random.Generator:
    """A generator per op instance: seeded by ``device_option.random_seed`` when the op (or its net)
    sets one, so a seeded filler gives the same values every time it is created; otherwise fresh."""
    if device_option is not None and device_option.HasField("random_seed"):
        return np.random.Generator(np.random.PCG64(device_option.random_seed))
    return np.random.Generator(np.random.PCG64(_ENTROPY.spawn(1)[0]))


@dataclass
class OpContext:
    args: Any                      # registry.Args: decoded, typed arguments
    op: Any                        # the caffe2_pb2.OperatorDef
    index: int = 0                 # position in its net
    net_name: str = ""
    ws: Workspace | None = None
    rng: np.random.Generator | None = None
    # Per-op-instance state that lives as long as the created net (file handles, DB cursors, ...).
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def op_type(self) -> str:
        return self.op.type

    @property
    def num_outputs(self) -> int:
        return len(self.op.output)

    @property
    def num_inputs(self) -> int:
        return len(self.op.input)

    @property
    def device_type(self) -> int:
        return self.op.device_option.device_type if self.op.HasField("device_option") else 0

    def error(self, message: str, blob: str | None = None) -> OpError:
        """An OpError located at this op; references ``raise ctx.error(...)`` for bad input."""
        return OpError(message, net=self.net_name, index=self.index, op_type=self.op.type, blob=blob)

    def input_name(self, i: int) -> str:
        return self.op.input[i]

    def output_name(self, i: int) -> str:
        return self.op.output[i]
