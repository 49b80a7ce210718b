"""Each pass on small known graphs: inference and barriers, no-op removal, constant folding,
dead code, fusion groups, scheduling; every result passes verify()."""
import numpy as np
import pytest

from netjit.compiler.codegen import numba_cpu
from netjit.compiler.ir import import_netdef, verify
from netjit.compiler.ops.registry import TensorType
from netjit.compiler.passes.fuse import FusionRules, fuse
from netjit.compiler.passes.infer import OBJECT, infer_types
from netjit.compiler.passes.schedule import schedule
from netjit.compiler.passes.simplify import eliminate_dead_code, fold_constants, is_deterministic, remove_noops
from netjit.compiler.pipeline import run_passes, segment_graph
from tests.compiler.helpers import netdef, op

F32 = np.dtype(np.float32)


def typed(net, sig, visible=None):
    g, stop = infer_types(import_netdef(net), sig)
    return verify(segment_graph(g, 0, stop, visible)), stop


def t(*shape, dtype=F32):
    return TensorType(tuple(shape), np.dtype(dtype))


# Inference --------------------------------------------------------------------------------------
def test_infer_types_every_value():
    net = netdef("n", [op("FC", ["X", "W", "b"], ["Y"]), op("Relu", ["Y"], ["Y"]),
                       op("ConstantFill", [], ["I"], shape=[1], value=0)])
    g, stop = typed(net, {"X": t(4, 3), "W": t(5, 3), "b": t(5)})
    assert stop == 3
    assert g.value("Y@1").type_str() == "f32[4,5]" and g.value("Y@2").type_str() == "f32[4,5]"
    assert g.value("I@1").dtype == np.int64   # an int value without dtype gives int64


def test_barrier_at_value_dependent_shape_and_objects():
    net = netdef("n", [op("Relu", ["X"], ["Y"]), op("ConstantFill", ["S"], ["Z"], input_as_shape=1),
                       op("Relu", ["Z"], ["Q"])])
    g, stop = infer_types(import_netdef(net), {"X": t(2), "S": t(2, dtype=np.int64)})
    assert stop == 1                       # ConstantFill's shape depends on S's values
    g, stop = infer_types(import_netdef(net), {"X": OBJECT, "S": t(2, dtype=np.int64)})
    assert stop == 0                       # Relu of a non-tensor cannot be typed ahead
    g, stop = infer_types(import_netdef(net), {"X": t(2)}, start=2)
    assert stop == 2                       # Z was not typed in the signature: unknown


# Simplification ---------------------------------------------------------------------------------
def test_noops_alias_their_input():
    net = netdef("n", [op("Relu", ["X"], ["A"]), op("StopGradient", ["A"], ["B"]),
                       op("Dropout", ["B"], ["C"], is_test=1, ratio=0.5), op("Sigmoid", ["C"], ["D"])])
    g, _ = typed(net, {"X": t(3)})
    g = verify(remove_noops(g))
    assert [n.op for n in g.nodes] == ["Relu", "Sigmoid"]
    assert g.nodes[1].inputs == ("A@1",)
    assert dict(g.outputs)["B"] == "A@1" and dict(g.outputs)["C"] == "A@1"


def test_training_dropout_is_not_a_noop():
    net = netdef("n", [op("Dropout", ["X"], ["Y", "M"], is_test=0, ratio=0.5)])
    g, _ = typed(net, {"X": t(3)})
    assert [n.op for n in remove_noops(g).nodes] == ["Dropout"]


def test_fold_constants_but_not_random_fillers():
    net = netdef("n", [op("ConstantFill", [], ["A"], shape=[2, 2], value=3.0), op("Scale", ["A"], ["B"], scale=2.0),
                       op("GaussianFill", [], ["G"], shape=[2, 2]), op("Add", ["B", "G"], ["C"])])
    g, _ = typed(net, {})
    g = verify(fold_constants(g))
    assert [n.op for n in g.nodes] == ["Const", "Const", "GaussianFill", "Add"]
    np.testing.assert_array_equal(g.nodes[1].attrs["value"], np.full((2, 2), 6.0, np.float32))
    assert not g.nodes[1].attrs["value"].flags.writeable
    assert is_deterministic("Scale") and not is_deterministic("GaussianFill") and not is_deterministic("Iter")


def test_fold_respects_size_limit():
    net = netdef("n", [op("ConstantFill", [], ["A"], shape=[10, 10], value=1.0)])
    g, _ = typed(net, {})
    assert [n.op for n in fold_constants(g, limit=50).nodes] == ["ConstantFill"]


def test_dead_code_keeps_visible_and_side_effects():
    net = netdef("n", [op("Relu", ["X"], ["T"]), op("Sigmoid", ["X"], ["U"]), op("Relu", ["U"], ["Y"]),
                       op("Print", ["X"], [])])
    g, _ = typed(net, {"X": t(3)}, visible={"Y"})
    g = verify(eliminate_dead_code(g))
    assert [n.op for n in g.nodes] == ["Sigmoid", "Relu", "Print"]
    # Caffe2 rule: every written blob is visible, nothing is dead.
    g, _ = typed(net, {"X": t(3)})
    assert len(eliminate_dead_code(g).nodes) == 4


def test_overwritten_version_is_dead():
    net = netdef("n", [op("Relu", ["X"], ["Y"]), op("Sigmoid", ["X"], ["Y"])])
    g, _ = typed(net, {"X": t(3)})
    assert [n.op for n in eliminate_dead_code(g).nodes] == ["Sigmoid"]


# Fusion -----------------------------------------------------------------------------------------
def fused_groups(g):
    return [[m.op for m in n.members] for n in g.nodes if n.op == "Fused"]


def test_chain_fuses_into_one_group_and_hides_intermediates():
    net = netdef("n", [op("Relu", ["X"], ["A"]), op("Scale", ["A"], ["B"], scale=2.0), op("Sigmoid", ["B"], ["C"]),
                       op("Add", ["C", "X"], ["D"])])
    g, _ = typed(net, {"X": t(4, 5)}, visible={"D"})
    g = verify(fuse(g, numba_cpu.RULES))
    assert fused_groups(g) == [["Relu", "Scale", "Sigmoid", "Add"]]
    assert g.nodes[0].outputs == ("D@1",) and g.nodes[0].inputs == ("X",)


def test_visible_intermediates_are_written_by_the_group():
    net = netdef("n", [op("Relu", ["X"], ["A"]), op("Sigmoid", ["A"], ["B"])])
    g, _ = typed(net, {"X": t(4)})
    g = verify(fuse(g, numba_cpu.RULES))
    assert fused_groups(g) == [["Relu", "Sigmoid"]] and g.nodes[0].outputs == ("A@1", "B@1")


def test_fan_out_stays_in_group_and_broadcast_inputs_join():
    net = netdef("n", [op("Relu", ["X"], ["A"]), op("Mul", ["A", "S"], ["B"], broadcast=1, axis=1),
                       op("Tanh", ["A"], ["C"]), op("Sum", ["B", "C"], ["D"])])
    g, _ = typed(net, {"X": t(2, 3, 4), "S": t(3)}, visible={"D"})
    g = verify(fuse(g, numba_cpu.RULES))
    assert fused_groups(g) == [["Relu", "Mul", "Tanh", "Sum"]]
    assert set(g.nodes[0].inputs) == {"X", "S"} and g.nodes[0].outputs == ("D@1",)


def test_fc_epilogue_fuses():
    net = netdef("n", [op("FC", ["X", "W", "b"], ["Y"]), op("Relu", ["Y"], ["Y"]), op("FC", ["Y", "W2", "b2"], ["Z"])])
    g, _ = typed(net, {"X": t(4, 3), "W": t(5, 3), "b": t(5), "W2": t(2, 5), "b2": t(2)})
    g = verify(fuse(g, numba_cpu.RULES))
    assert fused_groups(g) == [["FC", "Relu"], ["FC"]]
    assert g.nodes[0].attrs["kind"] == "producer"


def test_shape_change_breaks_the_chain():
    net = netdef("n", [op("Relu", ["B"], ["C"]), op("Add", ["X", "C"], ["Y"], broadcast=1)])
    g, _ = typed(net, {"X": t(4, 3), "B": t(3)})
    assert fused_groups(verify(fuse(g, numba_cpu.RULES))) == [["Relu"], ["Add"]]


def test_reader_between_members_blocks_fusion():
    # Softmax (not loop-compatible) reads A before Sigmoid; fusing Sigmoid into Relu's group would
    # move A's computation after its reader.
    net = netdef("n", [op("Relu", ["X"], ["A"]), op("Softmax", ["A"], ["S"]), op("Sigmoid", ["A"], ["B"])])
    g, _ = typed(net, {"X": t(2, 3)})
    g = verify(fuse(g, numba_cpu.RULES))
    assert fused_groups(g) == [["Relu"], ["Sigmoid"]]
    assert [n.op for n in g.nodes] == ["Fused", "Softmax", "Fused"]


def test_group_size_cap():
    ops = [op("Relu", ["X"], ["A0"])] + [op("Relu", [f"A{i}"], [f"A{i + 1}"]) for i in range(9)]
    g, _ = typed(netdef("n", ops), {"X": t(8)}, visible={"A9"})
    g = verify(fuse(g, FusionRules(numba_cpu.RULES.loop_ok, numba_cpu.RULES.head_ok, max_nodes=4)))
    assert [len(x) for x in fused_groups(g)] == [4, 4, 2]


def test_non_elementwise_and_int_division_stay_out():
    net = netdef("n", [op("Div", ["A", "B"], ["C"]), op("Relu", ["F"], ["G"])])
    g, _ = typed(net, {"A": t(3, dtype=np.int32), "B": t(3, dtype=np.int32), "F": t(3)})
    assert fused_groups(fuse(g, numba_cpu.RULES)) == [["Relu"]]


# Scheduling and the whole list ------------------------------------------------------------------
def test_schedule_repairs_order():
    net = netdef("n", [op("Relu", ["X"], ["A"]), op("Sigmoid", ["A"], ["B"])])
    g, _ = typed(net, {"X": t(3)})
    flipped = g.with_nodes(reversed(g.nodes))
    fixed = verify(schedule(flipped))
    assert [n.op for n in fixed.nodes] == ["Relu", "Sigmoid"]
    assert schedule(g) is g


def test_pipeline_verifies_after_every_pass():
    net = netdef("n", [op("ConstantFill", [], ["one"], shape=[1], value=1.0),
                       op("FC", ["X", "W", "b"], ["Y"]), op("StopGradient", ["Y"], ["Y"]),
                       op("Mul", ["Y", "one"], ["Z"], broadcast=1), op("Relu", ["Z"], ["Z"])])
    g, _ = typed(net, {"X": t(2, 3), "W": t(4, 3), "b": t(4)})
    out = run_passes(g)
    assert [n.op for n in out.nodes] == ["Const", "Fused"]
    assert fused_groups(out) == [["FC", "Mul", "Relu"]]


@pytest.mark.parametrize("bad", ["x0 +", "foo(x0)", "x0.real", "'a'", "[x0]"])
def test_expr_language_is_checked(bad):
    from netjit.compiler.codegen.expr import ExprError, parse
    with pytest.raises(ExprError):
        parse(bad)
