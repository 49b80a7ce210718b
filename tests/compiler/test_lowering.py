"""One op contract: every backend entry lives in the op's record, every lazy reference resolves, and
a new op or a new kernel is one record: nothing else changes for it to be fused and compiled."""
from __future__ import annotations

import numpy as np
import pytest

from netjit.compiler.api import clear_cache
from netjit.compiler.codegen import numba_cpu
from netjit.compiler.ops import registry
from netjit.compiler.ops.common import same_as
from netjit.compiler.ops.registry import ELEMWISE, OPAQUE, Lowering, all_ops, defop
from tests.compiler.helpers import assert_same_blobs, netdef, op, plan_of, run_compiled, run_reference

ENTRIES = ("head", "standalone", "expr", "loop", "fill")


def test_every_lowering_entry_resolves():
    seen = 0
    for name, opdef in all_ops().items():
        assert set(opdef.lowering) <= {"numba-cpu", "numba-cuda", "aot"}, name
        for backend, lw in opdef.lowering.items():
            assert isinstance(lw, Lowering), f"{name}: {backend} entry is {type(lw).__name__}"
            for entry in ENTRIES:
                if getattr(lw, entry) is not None:
                    assert callable(lw.resolve(entry)), f"{name}.{entry} -> {getattr(lw, entry)!r}"
                    seen += 1
            if lw.threaded:
                assert lw.standalone is not None, f"{name}: threaded says how a standalone kernel runs"
    assert seen >= 25   # FC, Conv, pools, Softmax, losses, fills, Sum, Pow, WeightedSum, optimizers, ...


def test_the_cpu_backend_reads_records_through_one_table():
    assert set(numba_cpu.ENTRY_RULES) == {"head", "standalone", "fill"}
    assert numba_cpu.entry("FC", "head") is numba_cpu.entry("FC", "head")            # resolved once
    assert numba_cpu.entry("Conv2D", "head") is numba_cpu.entry("Conv", "head")      # aliases share
    assert numba_cpu.entry("Relu", "standalone") is None
    assert numba_cpu.entry("Fused", "head") is None and numba_cpu.entry("NoSuchOp", "head") is None
    assert all_ops()["SpatialBN"].per_channel.channel_inputs == (1, 2, 3, 4)
    assert not hasattr(all_ops()["Relu"], "kernels")


def _cube_kernel(node, values):
    """A hand-written kernel for the test op below (lazy-resolved like a real codegen module's)."""
    from numba import njit

    @njit(cache=False)
    def cube(x, y):
        flat, out = x.reshape(-1), y.reshape(-1)
        for i in range(flat.size):
            out[i] = flat[i] * flat[i] * flat[i]
    return cube, [numba_cpu.Param("in", node.inputs[0]), numba_cpu.Param("out", node.outputs[0])]


@pytest.fixture
def scratch_ops():
    """Register test-only ops for one test, then forget them."""
    added: list[str] = []

    def add(op_type: str, **kw):
        def wrap(fn):
            added.append(op_type)
            return defop(op_type, **kw)(fn)
        return wrap
    yield add
    for name in added:
        del registry._REGISTRY[name]
    clear_cache()


def test_a_new_elementwise_op_is_one_record(scratch_ops):
    @scratch_ops("ScratchHalfSquare", inputs=1, outputs=1, category=ELEMWISE, infer=same_as(0),
                 expr="0.5 * x0 * x0")
    def half_square(ctx, x):
        return (0.5 * x * x).astype(x.dtype)

    feeds = {"X": np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)}
    net = netdef("scratch_elementwise", [op("Relu", ["X"], ["A"]), op("ScratchHalfSquare", ["A"], ["B"])])
    got, runner = run_compiled(net, feeds)
    assert_same_blobs(run_reference(net, feeds), got)
    (group,) = [n for n in plan_of(runner).graph.nodes if n.op == "Fused"]
    assert [m.op for m in group.members] == ["Relu", "ScratchHalfSquare"]       # fused with its producer


def test_a_new_kernel_is_one_lowering_entry(scratch_ops):
    @scratch_ops("ScratchCube", inputs=1, outputs=1, category=OPAQUE, infer=same_as(0),
                 lowering={"numba-cpu": Lowering(standalone="tests.compiler.test_lowering:_cube_kernel")})
    def cube(ctx, x):
        return x * x * x

    feeds = {"X": np.arange(-3, 3, dtype=np.float64).reshape(2, 3)}
    net = netdef("scratch_kernel", [op("ScratchCube", ["X"], ["Y"])])
    got, runner = run_compiled(net, feeds)
    assert_same_blobs(run_reference(net, feeds), got)
    assert [s.kind for s in plan_of(runner).driver.steps] == ["kernel"]
    assert plan_of(runner).driver.kernels[0].description == "ScratchCube"
