"""A Plan is what the executor runs: an ordered list of steps over named blobs.

The compiler produces plans (runtime never imports the compiler). A step is either one op's
reference (the reference backend, and host ops inside compiled plans) or a compiled kernel
group; either way it is a callable from input values to output values, plus where it came from
so failures can name the op.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from netjit.runtime.context import OpContext


@dataclass
class Step:
    index: int                         # NetDef op index (first op of a fused group)
    op_type: str                       # op type, or a "Fused(...)" description
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    fn: Callable[[OpContext, list[Any]], list[Any]]
    ctx: OpContext
    # For fused/compiled steps: the NetDef indices and types it covers, for error messages.
    covers: tuple[tuple[int, str], ...] = ()


@dataclass
class Plan:
    net_name: str
    steps: list[Step]
    info: dict[str, Any] = field(default_factory=dict)
