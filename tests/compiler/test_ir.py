"""IR import (SSA versions of in-place blobs), printing, verification, graph dumps."""
import pytest

from netjit.compiler.ir import Graph, Node, Value, VerifyError, format_graph, import_netdef, verify
from netjit.runtime.errors import OpError
from tests.compiler.helpers import netdef, op


def test_inplace_writes_become_versions():
    net = netdef("n", [op("Relu", ["X"], ["X"]), op("Relu", ["X"], ["Y"]), op("Relu", ["Y"], ["X"])])
    g = verify(import_netdef(net))
    assert dict(g.inputs) == {"X": "X"}
    assert [n.outputs for n in g.nodes] == [("X@1",), ("Y@1",), ("X@2",)]
    assert [n.inputs for n in g.nodes] == [("X",), ("X@1",), ("Y@1",)]
    assert dict(g.final) == {"X": "X@2", "Y": "Y@1"}
    assert dict(g.outputs) == dict(g.final)
    assert [n.index for n in g.nodes] == [0, 1, 2]
    assert g.value("X@2").blob == "X" and g.value("X@2").version == 2


def test_written_before_read_has_no_input_version():
    net = netdef("n", [op("ConstantFill", [], ["A"], shape=[2], value=1.0), op("Relu", ["A"], ["A"])])
    g = verify(import_netdef(net))
    assert dict(g.inputs) == {}
    assert "A" not in g.values and dict(g.final) == {"A": "A@2"}


def test_version_names_avoid_real_blob_names():
    net = netdef("n", [op("Relu", ["X"], ["X"]), op("Relu", ["X@1"], ["Z"])])
    g = verify(import_netdef(net))
    assert g.nodes[0].outputs == ("X@1'",)
    assert g.nodes[1].inputs == ("X@1",)


def test_printer_one_line_per_node():
    net = netdef("p", [op("Scale", ["X"], ["Y"], scale=2.0), op("Relu", ["Y"], ["Y"])])
    text = format_graph(import_netdef(net))
    lines = text.splitlines()
    assert lines[0] == "graph p(X) -> (Y=Y@2)"
    assert lines[1].strip() == "Y@1 = Scale(X) {scale=2.0}  #0"
    assert lines[2].strip() == "Y@2 = Relu(Y@1)  #1"
    assert str(import_netdef(net)) == text


def test_import_checks_schema_with_location():
    net = netdef("bad", [op("Relu", ["X"], ["Y"]), op("Relu", ["X", "Z"], ["W"])])
    with pytest.raises(OpError, match=r"net 'bad' op #1 \(Relu\).*takes 1 input"):
        import_netdef(net)


def test_import_unknown_op_suggests():
    with pytest.raises(OpError, match=r"op #0 \(Rleu\).*unknown operator type.*Relu"):
        import_netdef(netdef("n", [op("Rleu", ["X"], ["Y"])]))


def _graph(nodes, inputs=("a",), outputs=None):
    names = set(inputs) | {o for n in nodes for o in n.outputs}
    values = {n: Value(n, n.split("@")[0], 0) for n in names}
    return Graph("g", values, tuple(nodes), {i: i for i in inputs}, outputs or {})


def test_verify_catches_use_before_def_and_double_def():
    use_before = _graph([Node("Relu", ("b",), ("c",)), Node("Relu", ("a",), ("b",))])
    with pytest.raises(VerifyError, match="used before it is defined"):
        verify(use_before)
    twice = _graph([Node("Relu", ("a",), ("b",)), Node("Relu", ("a",), ("b",))])
    with pytest.raises(VerifyError, match="defined twice"):
        verify(twice)
    missing_out = _graph([Node("Relu", ("a",), ("b",))], outputs={"z": "zz"})
    with pytest.raises(VerifyError, match="never defined"):
        verify(missing_out)


def test_verify_checks_fused_members():
    inner = (Node("Relu", ("a",), ("b",)), Node("Relu", ("q",), ("c",)))
    bad = _graph([Node("Fused", ("a",), ("c",), {"nodes": inner, "shape": (), "kind": "elementwise"})])
    bad = Graph(bad.name, {**bad.values, "b": Value("b", "b", 1), "q": Value("q", "q", 0)}, bad.nodes,
                bad.inputs, {})
    with pytest.raises(VerifyError, match="reads 'q'"):
        verify(bad)


def test_dump_after_pass(monkeypatch, capsys):
    import numpy as np
    from tests.compiler.helpers import run_compiled
    monkeypatch.setenv("NETJIT_DUMP_AFTER", "fuse")
    net = netdef("dumped", [op("Relu", ["X"], ["Y"]), op("Sigmoid", ["Y"], ["Z"])])
    run_compiled(net, {"X": np.ones((2, 2), np.float32)})
    err = capsys.readouterr().err
    assert "--- after fuse ---" in err and "Fused[elementwise]" in err and "--- after dce" not in err
