"""Counter ops: a blob holding a mutable int64 count (CreateCounter) that other ops move and read.
``control.For`` runs its body while ``CountDown`` reports the counter is not yet done.

>>> c = Counter(2); [c.count_down(), c.count_down(), c.count_down()]
[False, False, True]
"""
from __future__ import annotations

import threading

import numpy as np

from netjit.compiler.ops.gradients import no_gradient
from netjit.compiler.ops.registry import HOST, arg, defop


class Counter:
    """A thread-safe int64 count (Caffe2's Counter<int64_t>)."""

    def __init__(self, count: int = 0):
        self._count = int(count)
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"Counter({self._count})"

    def count_up(self) -> int:
        with self._lock:
            previous = self._count
            self._count += 1
            return previous

    def count_down(self) -> bool:
        """Decrement if positive and say False; at zero (or below) say True, leaving it."""
        with self._lock:
            if self._count > 0:
                self._count -= 1
                return False
            return True

    def check_if_done(self) -> bool:
        with self._lock:
            return self._count <= 0

    def reset(self, count: int) -> int:
        with self._lock:
            previous = self._count
            self._count = int(count)
            return previous

    def retrieve(self) -> int:
        with self._lock:
            return self._count


def _counter(ctx, value) -> Counter:
    if not isinstance(value, Counter):
        raise ctx.error("input must be a counter blob made by CreateCounter", blob=ctx.input_name(0))
    return value


@defop("CreateCounter", inputs=0, outputs=1, args=[arg("init_count", "int", 0)], category=HOST,
       gradient=no_gradient)
def create_counter(ctx):
    """A new counter starting at ``init_count``."""
    return Counter(ctx.args.init_count)


@defop("ResetCounter", inputs=1, outputs=(0, 1), args=[arg("init_count", "int", 0)], category=HOST,
       gradient=no_gradient)
def reset_counter(ctx, counter):
    """Set the counter to ``init_count``; output (optional) its previous value."""
    previous = _counter(ctx, counter).reset(ctx.args.init_count)
    return [np.array(previous, np.int64)] if ctx.num_outputs else []


@defop("CountDown", inputs=1, outputs=1, category=HOST, gradient=no_gradient)
def count_down(ctx, counter):
    """Output False and decrement while the count is positive; output True once it reaches zero."""
    return np.array(_counter(ctx, counter).count_down())


@defop("CheckCounterDone", inputs=1, outputs=1, category=HOST, gradient=no_gradient)
def check_counter_done(ctx, counter):
    """True when the count is zero or below."""
    return np.array(_counter(ctx, counter).check_if_done())


@defop("CountUp", inputs=1, outputs=1, category=HOST, gradient=no_gradient)
def count_up(ctx, counter):
    """Increment the count; output its previous value (int64)."""
    return np.array(_counter(ctx, counter).count_up(), np.int64)


@defop("RetrieveCount", inputs=1, outputs=1, category=HOST, gradient=no_gradient)
def retrieve_count(ctx, counter):
    """The current count (int64)."""
    return np.array(_counter(ctx, counter).retrieve(), np.int64)
