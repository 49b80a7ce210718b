"""Buffer planning: live ranges of kernel-computed values -> offsets in one 64-byte aligned arena.

Only values that compiled kernels write and that no blob exposes get arena space (exposed values
are handed to the workspace, so each run allocates them fresh). Over the scheduled order each
value lives from the step that defines it to its last reader. Offsets are assigned largest first (and in a few other orders, keeping the
smallest result), each into the best-fitting gap left by values whose live ranges overlap it; an elementwise kernel
may write its output over an input that dies at that step (declared *in-place pairs*).

``verify_buffers`` checks that no two values whose live ranges overlap share a byte (in-place
pairs excepted, which must coincide exactly). The plan reports the arena size, the sum of all
planned bytes, and the lower bound: the most bytes live at any one step.

>>> plan = assign([Interval("a", 0, 1, 256), Interval("b", 1, 2, 256), Interval("c", 2, 3, 256)])
>>> plan.arena_bytes, plan.lower_bound
(512, 512)
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterable

from netjit.compiler.ir import Graph, Node
from netjit.runtime.errors import InternalError

ALIGN = 64
_RESTARTS = 64
_BUDGET = 2_000_000


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class Interval:
    """A value's live range [start, end] (inclusive step positions) and its size in bytes."""
    name: str
    start: int
    end: int
    nbytes: int
    inplace_of: str | None = None    # an input this value may overwrite (dies at `start`)

    def overlaps(self, other: "Interval") -> bool:
        return self.start <= other.end and other.start <= self.end


@dataclass(frozen=True)
class BufferPlan:
    intervals: dict[str, Interval]
    offsets: dict[str, int]
    arena_bytes: int
    total_bytes: int                 # sum of every planned value's (aligned) size
    lower_bound: int                 # most bytes live at once (in-place pairs counted once)
    inplace: frozenset[tuple[str, str]] = field(default_factory=frozenset)   # (output, input) taken

    def summary(self) -> str:
        ratio = f"{self.arena_bytes / self.lower_bound:.2f}x bound" if self.lower_bound else "n/a"
        return (f"arena {self.arena_bytes} B for {len(self.offsets)} values "
                f"(sum {self.total_bytes} B, live-set lower bound {self.lower_bound} B, {ratio}, "
                f"{len(self.inplace)} in place)")


class BufferPlanError(InternalError):
    """Two values that are live at the same time share bytes (a planner bug, reported as a netjit
    error naming the net instead of a bare AssertionError)."""


def lower_bound(intervals: Iterable[Interval], inplace: Iterable[tuple[str, str]] = ()) -> int:
    ivs = list(intervals)
    if not ivs:
        return 0
    by_name = {iv.name: iv for iv in ivs}
    steps = sorted({iv.start for iv in ivs} | {iv.end for iv in ivs})
    best = 0
    for s in steps:
        live = sum(_aligned(iv.nbytes) for iv in ivs if iv.start <= s <= iv.end)
        live -= sum(_aligned(by_name[o].nbytes) for o, i in inplace if by_name[o].start == s == by_name[i].end)
        best = max(best, live)
    return best


# Orders to try placing values in; best fit is a heuristic, and which order packs a given set of
# live ranges tightest varies, so the planner keeps the smallest arena among these.
_ORDERS = (
    lambda iv: (-_aligned(iv.nbytes), iv.start, iv.name),                       # largest first
    lambda iv: (-_aligned(iv.nbytes) * (iv.end - iv.start + 1), iv.start, iv.name),   # largest area first
    lambda iv: (-(iv.end - iv.start), -_aligned(iv.nbytes), iv.name),            # longest lived first
    lambda iv: (iv.start, -_aligned(iv.nbytes), iv.name),                        # in program order
)


def assign(intervals: Iterable[Interval]) -> BufferPlan:
    """Best fit (try a few placement orders, keep the smallest arena); honour in-place requests
    when the input's bytes are free."""
    ivs = list(intervals)
    best: tuple[int, dict[str, int], set[tuple[str, str]]] | None = None
    orders = [sorted(ivs, key=order) for order in _ORDERS]
    # Then largest-first with jittered sizes (deterministic), while above the bound and within a
    # work budget of about 2M overlap checks.
    rng = random.Random(0)
    tries = min(_RESTARTS, _BUDGET // max(1, len(ivs) ** 2))
    bound = lower_bound(ivs)
    for attempt in range(len(orders) + tries):
        if attempt < len(orders):
            order = orders[attempt]
        elif best[0] <= bound:
            break
        else:
            order = sorted(ivs, key=lambda iv: -_aligned(iv.nbytes) * rng.uniform(0.3, 1.7))
        offsets, taken = _place(order)
        arena = max((offsets[iv.name] + _aligned(iv.nbytes) for iv in ivs), default=0)
        if best is None or arena < best[0]:
            best = (arena, offsets, taken)
    arena, offsets, taken = best
    total = sum(_aligned(iv.nbytes) for iv in ivs)
    plan = BufferPlan({iv.name: iv for iv in ivs}, offsets, arena, total, lower_bound(ivs, taken), frozenset(taken))
    verify_buffers(plan)
    return plan


def _place(ivs: list[Interval]) -> tuple[dict[str, int], set[tuple[str, str]]]:
    by_name = {iv.name: iv for iv in ivs}
    offsets: dict[str, int] = {}
    taken: set[tuple[str, str]] = set()
    for iv in ivs:
        size = _aligned(iv.nbytes)
        partner = iv.inplace_of if iv.inplace_of in offsets else None
        others = sorted((offsets[o], offsets[o] + _aligned(by_name[o].nbytes)) for o in offsets
                        if by_name[o].overlaps(iv) and o != partner)
        if partner is not None and by_name[partner].nbytes == iv.nbytes:
            off = offsets[partner]
            if all(b <= off or a >= off + size for a, b in others):
                offsets[iv.name] = off
                taken.add((iv.name, partner))
                continue
        # Not in place after all: the partner's bytes are as busy as anyone's (they are live
        # together at this step), so the best fit must avoid them too.
        busy = others if partner is None else sorted(
            others + [(offsets[partner], offsets[partner] + _aligned(by_name[partner].nbytes))])
        offsets[iv.name] = _best_fit(busy, size) if size else 0
    return offsets, taken


def _best_fit(busy: list[tuple[int, int]], size: int) -> int:
    best: tuple[int, int] | None = None       # (gap, offset)
    pos = 0
    for a, b in busy:
        if a - pos >= size and (best is None or a - pos < best[0]):
            best = (a - pos, pos)
        pos = max(pos, b)
    return best[1] if best is not None else pos


def verify_buffers(plan: BufferPlan) -> None:
    names = sorted(plan.offsets)
    for n in names:
        off, iv = plan.offsets[n], plan.intervals[n]
        if off % ALIGN or off < 0 or off + iv.nbytes > plan.arena_bytes:
            raise BufferPlanError(f"{n!r} at offset {off} (+{iv.nbytes}) is misaligned or outside the "
                                  f"{plan.arena_bytes}-byte arena")
    for x, a in enumerate(names):
        ia, oa = plan.intervals[a], plan.offsets[a]
        for b in names[x + 1:]:
            ib, ob = plan.intervals[b], plan.offsets[b]
            if not ia.overlaps(ib) or not (ia.nbytes and ib.nbytes):
                continue
            if oa < ob + ib.nbytes and ob < oa + ia.nbytes:
                pair = (a, b) if (a, b) in plan.inplace else (b, a) if (b, a) in plan.inplace else None
                if pair is not None:
                    out, inp = plan.intervals[pair[0]], plan.intervals[pair[1]]
                    if oa == ob and ia.nbytes == ib.nbytes and out.start == inp.end:
                        continue
                raise BufferPlanError(f"{a!r} [{ia.start},{ia.end}] at {oa}+{ia.nbytes} and {b!r} "
                                      f"[{ib.start},{ib.end}] at {ob}+{ib.nbytes} are live together and overlap")


def plan_buffers(graph: Graph, in_arena: Callable[[Node, str], bool],
                 inplace_pairs: Callable[[Node], list[tuple[str, str]]] = lambda node: []) -> BufferPlan:
    """Plan the arena for a scheduled graph. ``in_arena(node, value)``: the backend writes this
    output into the arena; ``inplace_pairs(node)``: (output, input) pairs the node's kernel can
    compute in place (elementwise, same element size, input read at the output's index)."""
    exposed = set(graph.outputs.values())
    start: dict[str, int] = {}
    last_use: dict[str, int] = {}
    for pos, node in enumerate(graph.nodes):
        for name in node.inputs:
            last_use[name] = pos
        for name in node.outputs:
            if name not in exposed and in_arena(node, name):
                start[name] = pos
    want: dict[str, str] = {}
    used_inputs: set[str] = set()
    for pos, node in enumerate(graph.nodes):
        for out, inp in inplace_pairs(node):
            if (out in start and inp in start and last_use.get(inp) == pos and out not in want
                    and inp not in used_inputs):
                want[out] = inp
                used_inputs.add(inp)
    intervals = [Interval(name, s, max(s, last_use.get(name, s)), graph.values[name].nbytes, want.get(name))
                 for name, s in start.items()]
    return assign(intervals)
