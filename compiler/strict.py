"""Fallbacks and strict mode.

Where the compiler gives up on something and lets the reference do it instead, it records a
:class:`Fallback` on the plan (``CompiledNet.explain()`` lists them with their reasons). Some are by
design and never recorded: an op with no kernel, or a kernel maker that declines an instance (NHWC
pools), simply runs its numpy reference as a host step. The ones recorded are failures:

- ``kernel``: building or compiling a kernel raised; its nodes run their references instead;
- ``infer``: an op's shape rule raised; the op becomes a barrier and runs before the rest is planned;
- ``fold``: constant folding ran an op's reference at plan time and it raised; the op stays in the plan.

An ``infer`` or ``fold`` failure that is the net's own fault (an error the op reports again when it
runs) is expected. An unexpected one is a netjit bug that costs speed silently: a kernel that does
not build, a shape rule that raises where the reference runs fine, a rule or reference failing with
a programming error (``TypeError``, ``IndexError``, ...). With ``NETJIT_STRICT=1`` (CI sets it)
those raise :class:`StrictModeError` instead of degrading.

>>> fb = Fallback("kernel", 3, "Conv", "TypingError: cannot unify", unexpected=True)
>>> str(fb)
'kernel: op #3 (Conv): TypingError: cannot unify'
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass
from typing import Any, Iterator

from netjit.runtime.errors import NetJitError, OpError

STAGES = ("kernel", "infer", "fold")


def strict_enabled() -> bool:
    """``NETJIT_STRICT`` set to anything but empty or 0 (read on each plan: tests may flip it)."""
    return os.environ.get("NETJIT_STRICT", "").strip() not in ("", "0")


class StrictModeError(OpError):
    """Under ``NETJIT_STRICT=1``: the compiler would have fallen back for a reason that is a bug."""


@dataclass(frozen=True)
class Fallback:
    stage: str          # one of STAGES
    index: int          # NetDef op index of the node (the first op of a fused group)
    op_type: str        # op type, or the fused group's description
    reason: str         # the exception, one line
    unexpected: bool    # a bug (strict mode raises), not the net's own error

    def __str__(self) -> str:
        return f"{self.stage}: op #{self.index} ({self.op_type}): {self.reason}"


def reason_of(err: BaseException) -> str:
    lines = str(err).splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def user_error(err: BaseException) -> bool:
    """Errors an op raises for a bad net or bad values (its own checks), not for a bug."""
    return isinstance(err, (NetJitError, ValueError, ArithmeticError))


def check(fallback: Fallback, net_name: str) -> Fallback:
    """Raise StrictModeError for an unexpected fallback when strict mode is on; else return it."""
    if fallback.unexpected and strict_enabled():
        raise StrictModeError(f"the compiler would fall back to the reference ({fallback.stage}): "
                              f"{fallback.reason} (NETJIT_STRICT=1 makes this an error; unset it to run "
                              f"the reference instead, and please report it)",
                              net=net_name, index=fallback.index, op_type=fallback.op_type)
    return fallback


# Failures noted inside passes (which return graphs, not reports) go to the planner's collector.
_COLLECTOR: contextvars.ContextVar[list[Fallback] | None] = contextvars.ContextVar("netjit_fallbacks", default=None)


@contextlib.contextmanager
def collecting() -> Iterator[list[Fallback]]:
    """Collect the failures that passes ``note`` while the block runs."""
    found: list[Fallback] = []
    token = _COLLECTOR.set(found)
    try:
        yield found
    finally:
        _COLLECTOR.reset(token)


def note(stage: str, node: Any, err: BaseException) -> None:
    """Record a failure a pass swallowed (``node``: an IR node) with the planner's collector, if any."""
    found = _COLLECTOR.get()
    if found is not None:
        found.append(Fallback(stage, node.index, node.op, reason_of(err), unexpected=not user_error(err)))
