"""net_drawer: graph structure for small nets, LeNet and plans; writing .dot and rendering with Graphviz."""
from __future__ import annotations

import re
import shutil

import pytest

pydot = pytest.importorskip("pydot", reason="net_drawer needs pydot (the `draw` extra)")

from netjit import net_drawer  # noqa: E402
from netjit.net_drawer import (BLOB_STYLE, OP_STYLE, GetOpNodeProducer, GetPlanGraph, GetPydotGraph,  # noqa: E402
                               GetPydotGraphMinimal, GraphvizNotFoundError, write_graph)
from netjit.proto import caffe2_pb2  # noqa: E402
from netjit.proto.io import parse_net_bytes  # noqa: E402
from tests.conftest import shared_path  # noqa: E402


def unquote(text: str) -> str:
    if not text.startswith('"'):
        return text
    return re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), text[1:-1])


def structure(graph) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """{node id: label} and [(source, target)] with DOT quoting removed."""
    nodes = {unquote(n.get_name()): unquote(n.get("label") or n.get_name()) for n in graph.get_nodes()}
    edges = [(unquote(e.get_source()), unquote(e.get_destination())) for e in graph.get_edges()]
    return nodes, edges


def small_net() -> caffe2_pb2.NetDef:
    net = caffe2_pb2.NetDef(name="small")
    net.op.add(type="FC", name="fc1", input=["X", "W", "b"], output=["H"])
    net.op.add(type="Relu", input=["H"], output=["H"])
    net.op.add(type="Add", input=["H", "X"], output=["Y"])
    return net


def test_full_graph_structure():
    graph = GetPydotGraph(small_net())
    nodes, edges = structure(graph)
    assert nodes == {
        "fc1/FC (op#0)": "fc1/FC (op#0)", "Relu (op#1)": "Relu (op#1)", "Add (op#2)": "Add (op#2)",
        "X #0": "X", "W #0": "W", "b #0": "b", "H #0": "H", "H #1": "H", "Y #0": "Y"}
    assert edges == [
        ("X #0", "fc1/FC (op#0)"), ("W #0", "fc1/FC (op#0)"), ("b #0", "fc1/FC (op#0)"), ("fc1/FC (op#0)", "H #0"),
        ("H #0", "Relu (op#1)"), ("Relu (op#1)", "H #1"),
        ("H #1", "Add (op#2)"), ("X #0", "Add (op#2)"), ("Add (op#2)", "Y #0")]
    assert unquote(graph.get_name()) == "small" and graph.get("rankdir") == "LR"
    styles = {unquote(n.get_name()): n.get_attributes() for n in graph.get_nodes()}
    for key, value in OP_STYLE.items():
        assert styles["Relu (op#1)"][key] == value
    assert styles["X #0"]["shape"] == BLOB_STYLE["shape"] == "octagon"
    assert OP_STYLE == {"shape": "box", "color": "#0F9D58", "style": "filled", "fontcolor": "#FFFFFF"}


def test_accepts_netdef_proto_objects_and_op_lists():
    net = small_net()

    class HasProto:
        def Proto(self):
            return net

    expected = structure(GetPydotGraph(net))
    assert structure(GetPydotGraph(HasProto())) == expected
    assert structure(GetPydotGraph(list(net.op))) == expected
    assert unquote(GetPydotGraph(list(net.op), name="custom", rankdir="TB").get_name()) == "custom"
    with pytest.raises(TypeError):
        GetPydotGraph(["not an op"])


def test_minimal_graph_and_minimal_dependency():
    net = small_net()
    nodes, edges = structure(GetPydotGraphMinimal(net))
    assert set(nodes) == {"fc1/FC (op#0)\nH", "Relu (op#1)\nH", "Add (op#2)\nY"}
    assert edges == [("fc1/FC (op#0)\nH", "Relu (op#1)\nH"), ("Relu (op#1)\nH", "Add (op#2)\nY")]
    # A diamond plus a shortcut: C reads a (from A) and b (from B, which read a): A->C is implied.
    ops = [caffe2_pb2.OperatorDef(type=t, input=i, output=o)
           for t, i, o in [("A", [], ["a"]), ("B", ["a"], ["b"]), ("C", ["a", "b"], ["c"]), ("D", ["c", "x"], ["d"])]]
    full = structure(GetPydotGraphMinimal(ops, node_producer=GetOpNodeProducer(False)))[1]
    minimal = structure(GetPydotGraphMinimal(ops, minimal_dependency=True,
                                             node_producer=GetOpNodeProducer(False)))[1]
    assert ("A (op#0)", "C (op#2)") in full and ("A (op#0)", "C (op#2)") not in minimal
    assert minimal == [("A (op#0)", "B (op#1)"), ("B (op#1)", "C (op#2)"), ("C (op#2)", "D (op#3)")]


def test_lenet_predict_net_graph():
    net = parse_net_bytes(shared_path("models", "lenet_pytorch_export", "predict_net.pb").read_bytes())
    nodes, edges = structure(GetPydotGraph(net))
    op_nodes = [n for n in nodes if "(op#" in n]
    assert len(op_nodes) == len(net.op) == 11
    assert op_nodes[0] == "Conv (op#0)"
    assert len(edges) == sum(len(op.input) + len(op.output) for op in net.op)
    # Every external input is drawn once, at version 0, and the output blob 26 exists.
    for blob in net.external_input:
        assert f"{blob} #0" in nodes
    assert nodes["26 #0"] == "26"
    minimal = structure(GetPydotGraphMinimal(net, minimal_dependency=True))
    # LeNet is a chain: every op after the first hangs off exactly its predecessor.
    assert len(minimal[1]) == len(net.op) - 1


def test_awkward_blob_names_survive_dot():
    net = caffe2_pb2.NetDef(name='na"me')
    net.op.add(type="Copy", input=['gpu_0/data:0'], output=['quote"d\\name'])
    graph = GetPydotGraph(net)
    parsed = pydot.graph_from_dot_data(graph.to_string())[0]
    assert structure(parsed) == structure(graph)
    assert structure(parsed)[0] == {"Copy (op#0)": "Copy (op#0)", "gpu_0/data:0 #0": "gpu_0/data:0",
                                    'quote"d\\name #0': 'quote"d\\name'}
    if net_drawer.dot_available():
        svg = net_drawer.render(graph, "svg").decode()
        assert "gpu_0/data:0" in svg and "quote&quot;d\\name" in svg


def test_plan_graph():
    plan = caffe2_pb2.PlanDef(name="train_plan")
    plan.execution_step.add(name="init", network=["init_net"])
    loop = plan.execution_step.add(name="loop", num_iter=100, concurrent_substeps=True)
    loop.substep.add(name="train", network=["train_net", "report_net"])
    loop.substep.add(name="eval", network=["eval_net"], only_once=True)
    graph = GetPlanGraph(plan)
    nodes, edges = structure(graph)
    labels = {label: node for node, label in nodes.items()}
    assert set(labels) == {"init", "init_net", "loop\nx100\nconcurrent", "train", "train_net", "report_net",
                           "eval\nonce", "eval_net"}
    named = [(nodes[a], nodes[b]) for a, b in edges]
    assert sorted(named) == sorted([
        ("init", "loop\nx100\nconcurrent"),                      # top-level steps run in order
        ("init", "init_net"), ("train", "train_net"), ("train_net", "report_net"), ("eval\nonce", "eval_net"),
        ("loop\nx100\nconcurrent", "train"), ("loop\nx100\nconcurrent", "eval\nonce")])  # concurrent: no chain
    assert graph.get("rankdir") == "TB"


def test_dot_output_needs_no_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    graph = GetPydotGraph(small_net())
    path = write_graph(graph, tmp_path / "net.dot")
    text = path.read_text()
    assert text.startswith('digraph "small" {') and '"Relu (op#1)"' in text
    with pytest.raises(GraphvizNotFoundError, match="install"):
        write_graph(graph, tmp_path / "net.svg")
    assert not (tmp_path / "net.svg").exists()
    with pytest.raises(ValueError, match="extension"):
        write_graph(graph, tmp_path / "net")


@pytest.mark.skipif(not net_drawer.dot_available(), reason="Graphviz `dot` is not installed (apt-get install graphviz)")
@pytest.mark.parametrize("fmt,magic", [("svg", b"<svg"), ("png", b"\x89PNG")])
def test_render_with_graphviz(tmp_path, fmt, magic):
    path = write_graph(GetPydotGraph(small_net()), tmp_path / f"net.{fmt}")
    data = path.read_bytes()
    assert magic in data[:400]
    if fmt == "svg":
        assert "Relu (op#1)" in data.decode()
