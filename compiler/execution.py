"""Run-time support for compiled plans: per-runner op contexts, binding a plan's generated driver to
a runner, and barrier steps. Construction checks (``reference.NetChecks``), the reference calling
convention (``runtime.plan.reference_call``) and error location (``runtime.executor.locate``) are
the reference executor's own: a net fails the same way under either.

Kept apart from the generated code so that the driver source stays straight-line: everything it
needs arrives through one environment object at bind time.
"""
from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from netjit.compiler import strict
from netjit.compiler.codegen.blas import blas_threads
from netjit.compiler.ir import Node
from netjit.compiler.ops.registry import lookup
from netjit.runtime.context import OpContext, op_rng
from netjit.runtime.errors import OpError
from netjit.runtime.executor import locate, run_step
from netjit.runtime.plan import Plan, Step, reference_call

# Unseeded random ops in compiled plans share one generator: values are fresh every run (as in
# Caffe2) without paying ~10 us per op to create a generator each time a net is constructed.
_SHARED_RNG = np.random.default_rng()


class LazyContext(OpContext):
    """An OpContext whose generator is made on first use: an op seeded by
    ``device_option.random_seed`` gets its own (the reference executor's stream), others share one."""

    def _get_rng(self) -> np.random.Generator:
        rng = self.__dict__.get("_rng")
        if rng is None:
            op = self.op
            opt = op.device_option if op is not None and op.HasField("device_option") else None
            rng = op_rng(opt) if opt is not None and opt.HasField("random_seed") else _SHARED_RNG
            self.__dict__["_rng"] = rng
        return rng

    def _set_rng(self, value: np.random.Generator | None) -> None:
        self.__dict__["_rng"] = value

    rng = property(_get_rng, _set_rng)


class _Env:
    """What a generated ``bind(E)`` reads (see codegen/driver.py)."""
    ndarray = np.ndarray
    empty = staticmethod(np.empty)
    # order="C" keeps a 0-d array 0-d (np.ascontiguousarray makes it shape (1,)).
    contig = staticmethod(lambda a: np.asarray(a, order="C"))
    refcount = staticmethod(sys.getrefcount)
    inf = math.inf
    nan = math.nan
    blas_threads = staticmethod(blas_threads)


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype}{list(value.shape)}"
    return type(value).__name__


def bind_plan(plan: Any, runner: Any) -> tuple[Any, Any]:
    """Close the plan's driver over this runner's contexts, generators and a fresh arena."""
    spec = plan.driver
    net_name = runner.net.name
    env = _Env()
    env.kernels = [kc.fn for kc in spec.kernels]
    env.consts = list(spec.consts)
    env.dtypes = list(spec.dtypes)
    env.refs = [lookup(n.op).reference for n in spec.host_nodes]
    env.contexts = [runner.context(n) for n in spec.host_nodes]
    env.fills = [maker(runner.context(node).rng) for maker, node in spec.fills]
    arena = np.empty(spec.arena_bytes + 64, np.uint8)
    base = (-arena.ctypes.data) % 64
    env.arena = []
    for offset, shape, dtype in spec.arena:
        n = math.prod(shape) * dtype.itemsize
        env.arena.append(arena[base + offset: base + offset + n].view(dtype).reshape(shape) if n else
                         np.empty(shape, dtype))
    steps = spec.steps
    graph = plan.graph

    def fail(s: int, err: BaseException) -> None:
        if not isinstance(err, Exception) or isinstance(err, OpError) or s < 0:
            raise err
        info = steps[s]
        raise locate(err, net_name, info.index, info.op_type, info.inputs, info.outputs) from err

    def fix(s: int, value: Any, k: int) -> np.ndarray:
        node = graph.nodes[s]
        want = graph.values[node.outputs[k]]
        if isinstance(value, np.generic):      # a reference's numpy scalar from 0-d inputs
            value = np.asarray(value)
        if isinstance(value, np.ndarray) and value.shape == want.shape and value.dtype == want.dtype:
            return np.asarray(value, order="C")
        raise OpError(f"output {k} is {_describe(value)} but its shape inference promised {want.type_str()}; "
                      f"the op's infer rule disagrees with its reference", net=net_name, index=node.index,
                      op_type=node.op, blob=graph.values[node.outputs[k]].blob)

    env.fail = fail
    env.fix = fix
    return spec.factory(env)


def run_barrier(runner: Any, node: Node, plan: Any = None) -> None:
    """Run a node whose outputs could not be typed ahead (a host op, a value-dependent shape) the
    way the reference executor does, with this runner's context for it. ``plan``: the segment
    planned before it; when its shape rule raised there and the op now runs fine, the rule is
    wrong (strict mode raises)."""
    # The runner's barriers form one runtime.Plan of reference steps, made as they are met.
    barriers: Plan | None = runner.__dict__.get("_barriers")
    if barriers is None:
        barriers = runner.__dict__["_barriers"] = Plan(net_name=runner.net.name, steps=[])
        runner.__dict__["_barrier_steps"] = {}   # index -> Step (tests look steps up here)
    at: dict[int, Step] = runner.__dict__["_barrier_steps"]
    step = at.get(node.index)
    if step is None:
        step = at[node.index] = Step(index=node.index, op_type=node.op, inputs=tuple(node.proto.input),
                                     outputs=tuple(node.proto.output), fn=reference_call(lookup(node.op).reference),
                                     ctx=runner.context(node))
        barriers.steps.append(step)
    run_step(barriers, step, runner.ws)
    if plan is not None and plan.fallbacks and strict.strict_enabled():
        for f in plan.fallbacks:
            if f.stage == "infer" and f.index == node.index:
                raise strict.StrictModeError(f"its shape rule raised ({f.reason}) but its reference ran fine "
                                             f"on the same inputs: the rule is wrong (NETJIT_STRICT=1)",
                                             net=runner.net.name, index=node.index, op_type=node.op)
