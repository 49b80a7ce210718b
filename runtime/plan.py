"""A Plan is what the executor runs: an ordered list of steps over named blobs.

The compiler produces plans (runtime never imports the compiler). A step is one op's reference:
the reference executor's whole net, and the barrier ops of a compiled net (ops whose outputs are
unknown until they run) are plans of such steps. A compiled segment runs as one generated driver
instead (compiler/codegen/driver.py); both locate failures with ``executor.locate``.

>>> import numpy as np
>>> step = Step(0, "Double", ("x",), ("y",), reference_call(lambda ctx, x: 2 * x), ctx=None)
>>> step.fn(None, [np.ones(2)])
[array([2., 2.])]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from netjit.runtime.context import OpContext

StepFn = Callable[[OpContext, list[Any]], list[Any]]


def as_blob_values(out: Any) -> list[Any]:
    """A reference's result as a list of blob values. numpy hands back scalars (np.float32) for
    most operations on 0-d arrays; a blob holds a 0-d array instead, as Caffe2's tensors did."""
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    return [np.asarray(o) if isinstance(o, np.generic) else o for o in outs]


def reference_call(fn: Callable[..., Any]) -> StepFn:
    """A step function from an op reference ``fn(ctx, *inputs) -> output | tuple``: inputs arrive
    as one list and the outputs leave as one (the executors' calling convention)."""
    def run(ctx: OpContext, values: list[Any]) -> list[Any]:
        return as_blob_values(fn(ctx, *values))
    return run


@dataclass
class Step:
    index: int                         # NetDef op index
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    fn: StepFn
    ctx: OpContext


@dataclass
class Plan:
    net_name: str
    steps: list[Step]
