"""Print and Summarize: output layout, limit/every_n, files under the workspace root (truncated per
created op, appended per run), statistics, and their refusal to be differentiated."""
import numpy as np
import pytest

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.compiler.reference import build_reference_plan
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_op
from netjit.runtime.executor import execute
from netjit.runtime.workspace import Workspace
from tests.ops.harness import check_infer, run_op


def created(op, ws):
    """Create a one-op net (one op instance, so its state persists) and return a runner."""
    net = caffe2_pb2.NetDef(name="debug")
    net.op.add().CopyFrom(op)
    plan = build_reference_plan(net, ws)
    return lambda: execute(plan, ws)


# ---------------------------------------------------------------------------------------------
# Print
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,line", [
    (np.array([[0.5, 1.0, -2.25], [1e-7, 3.0, 100000.0]], np.float32),
     "Tensor x of type float. Dims: (2,3,): 0.5,1,-2.25,1e-07,3,100000"),
    (np.arange(3, dtype=np.int64), "Tensor x of type long. Dims: (3,): 0,1,2"),
    (np.array([1, -2], np.int32), "Tensor x of type int. Dims: (2,): 1,-2"),
    (np.array(2.5), "Tensor x of type double. Dims: (): 2.5"),
    (np.array([True, False]), "Tensor x of type bool. Dims: (2,): 1,0"),
    (np.array([b"ab", b"c"], dtype=object), "Tensor x of type std::string. Dims: (2,): ab,c"),
    (np.zeros((0, 2), np.float32), "Tensor x of type float. Dims: (0,2,): "),
])
def test_print_to_stdout(capsys, value, line):
    ws = Workspace("t")
    ws.feed("x", value)
    created(make_op("Print", ["x"], []), ws)()
    assert capsys.readouterr().out == line + "\n"


def test_print_limit(capsys):
    ws = Workspace("t")
    ws.feed("x", np.arange(2000, dtype=np.int32))
    created(make_op("Print", ["x"], [], limit=3), ws)()
    assert capsys.readouterr().out.endswith("Dims: (2000,): 0,1,2\n")
    created(make_op("Print", ["x"], []), ws)()       # limit 0 means 1000 values
    out = capsys.readouterr().out
    assert out.endswith(",998,999\n") and out.count(",") == 999 + 1  # 999 separators + the one in "(2000,)"


def test_print_every_n(capsys):
    ws = Workspace("t")
    ws.feed("it", np.array([0], np.int64))
    run = created(make_op("Print", ["it"], [], every_n=3), ws)
    printed = []
    for i in range(1, 8):
        ws.feed("it", np.array([i], np.int64))
        run()
        out = capsys.readouterr().out
        if out:
            printed.append(int(out.strip().rsplit(" ", 1)[1]))
    assert printed == [1, 4, 7]


def test_print_to_file_truncates_per_created_op(tmp_path, capsys):
    ws = Workspace("t", root_folder=str(tmp_path))
    path = tmp_path / "w.log"
    path.write_text("stale\n")
    ws.feed("w", np.array([1.5], np.float32))
    run = created(make_op("Print", ["w"], [], to_file=1), ws)
    run()
    ws.feed("w", np.array([2.5], np.float32))
    run()
    assert path.read_text() == ("Tensor w of type float. Dims: (1,): 1.5\n"
                                "Tensor w of type float. Dims: (1,): 2.5\n")
    assert capsys.readouterr().out == ""
    created(make_op("Print", ["w"], [], to_file=1), ws)()   # a new op starts the file again
    assert path.read_text() == "Tensor w of type float. Dims: (1,): 2.5\n"


def test_print_non_tensor_blob(capsys):
    ws = Workspace("t")
    ws.feed("s", b"hello")
    created(make_op("Print", ["s"], []), ws)()
    assert capsys.readouterr().out == "Blob of type: std::string\n"


def test_print_errors():
    with pytest.raises(Exception, match="every_n must be >= 1"):
        run_op("Print", [np.zeros(1)], n_outputs=0, every_n=0)
    with pytest.raises(ValueError, match="Print is a debugging op"):
        gradient_ops_for(make_op("Print", ["x"], []), [])


def test_print_to_missing_folder_names_blob(tmp_path):
    ws = Workspace("t", root_folder=str(tmp_path))
    ws.feed("scope/x", np.zeros(1, np.float32))
    with pytest.raises(Exception, match=r"cannot write .*scope/x.log.*'scope/x'"):
        created(make_op("Print", ["scope/x"], [], to_file=1), ws)()


# ---------------------------------------------------------------------------------------------
# Summarize
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 2, 5)])
def test_summarize_values(shape):
    x = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    (s,) = check_infer("Summarize", [x])
    assert s.dtype == np.float32 and s.shape == (4,)
    flat = x.astype(np.float64).reshape(-1)
    n = flat.size
    mean = sum(flat) / n
    std = (sum((v - mean) ** 2 for v in flat) / (n - 1)) ** 0.5
    np.testing.assert_allclose(s, [flat.min(), flat.max(), mean, std], rtol=1e-6)


def test_summarize_single_element_has_zero_std():
    (s,) = run_op("Summarize", [np.array([3.0], np.float32)])
    np.testing.assert_array_equal(s, [3, 3, 3, 0])


def test_summarize_to_file(tmp_path):
    ws = Workspace("t", root_folder=str(tmp_path))
    (tmp_path / "scope#x.summary").write_text("stale\n")
    ws.feed("scope/x", np.zeros(1, np.float32))
    run = created(make_op("Summarize", ["scope/x"], [], to_file=1), ws)
    ws.feed("scope/x", np.array([1.0, 2.0, 3.0, 6.0], np.float32))
    run()
    ws.feed("scope/x", np.array([0.5], np.float32))
    run()
    assert (tmp_path / "scope#x.summary").read_text() == "1 6 3 2.16025\n0.5 0.5 0.5 0\n"


def test_summarize_without_output_and_errors(tmp_path):
    assert run_op("Summarize", [np.ones(3, np.float32)], n_outputs=0) == []
    with pytest.raises(Exception, match="empty tensor"):
        run_op("Summarize", [np.zeros(0, np.float32)])
    with pytest.raises(ValueError, match="Summarize is a debugging op"):
        gradient_ops_for(make_op("Summarize", ["x"], ["s"]), ["s_grad"])
