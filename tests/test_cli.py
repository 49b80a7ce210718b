"""The netjit command line: --version, show, draw, and the subcommand table."""
from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import version

import pytest

from netjit import cli
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_argument
from netjit.proto.io import save_net
from tests.conftest import shared_path


def lenet_predict():
    return shared_path("models", "lenet_pytorch_export", "predict_net.pb")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"netjit {version('netjit')}"


def test_console_entry_point_module():
    result = subprocess.run([sys.executable, "-m", "netjit.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("netjit ")


def test_help_and_usage_errors(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and "show" in out and "draw" in out
    assert run_cli(capsys, )[0] == 2
    code, _, err = run_cli(capsys, "frobnicate")
    assert code == 2 and "invalid choice" in err
    code, _, err = run_cli(capsys, "draw", str(lenet_predict()))
    assert code == 2 and "-o/--output" in err


def test_show_lenet(capsys):
    code, out, _ = run_cli(capsys, "show", str(lenet_predict()))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == 'net "torch-jit-export_predict": 11 ops'
    assert lines[1] == "  external inputs (9): 1, 2, 3, 4, 5, 6, 7, 8, 9"
    assert lines[2] == "  external outputs (1): 26"
    ops = [line for line in lines if line.startswith("  [")]
    assert len(ops) == 11
    assert ops[0] == "  [ 0] Conv  1, 2 -> 11  dilations=[1, 1] strides=[1, 1] pads=[0, 0, 0, 0] group=1 kernels=[5, 5]"
    assert ops[1] == "  [ 1] Add  11, 3 -> 12  broadcast=1 axis=1"
    assert ops[8] == "  [ 8] Reshape  19 -> 20, OC2_DUMMY_0  shape=[-1, 800]"


def test_show_text_net_shortens_long_lists(capsys):
    path = shared_path("models", "zoo", "resnet50", "predict_net.pbtxt")
    code, out, _ = run_cli(capsys, "show", str(path))
    assert code == 0 and out.startswith('net "resnet50": 175 ops\n')
    assert "... (253 more)" in out
    assert "  [  1] SpatialBN  gpu_0/conv1, gpu_0/res_conv1_bn_s" in out and "epsilon=1e-05 is_test=1 order='NCHW'" in out
    code, out, _ = run_cli(capsys, "show", "--all", str(path))
    assert "more)" not in out.splitlines()[1] and "gpu_0/res5_2_branch2c_bn_riv" in out


def test_show_details_and_several_files(tmp_path, capsys):
    net = caffe2_pb2.NetDef(name="detail", type="dag", num_workers=4)
    net.device_option.device_type = caffe2_pb2.CUDA
    net.device_option.cuda_gpu_id = 1
    op = net.op.add(type="Conv", name="conv1", input=["X", "W"], output=["Y"], engine="CUDNN")
    op.arg.append(make_argument("values", [0.25] * 20))
    op.arg.append(make_argument("order", "NCHW"))
    op.arg.append(make_argument("raw", b"\xff\x00"))
    op.arg.append(make_argument("step", caffe2_pb2.NetDef(name="inner", op=[caffe2_pb2.OperatorDef(type="Relu")])))
    op.device_option.random_seed = 7
    net.op.add(type="ConstantFill", output=["Z"], control_input=["Y"], is_gradient_op=True)
    save_net(net, tmp_path / "a.pbtxt")
    save_net(caffe2_pb2.NetDef(name="empty"), tmp_path / "b.pb")
    code, out, _ = run_cli(capsys, "show", str(tmp_path / "a.pbtxt"), str(tmp_path / "b.pb"))
    assert code == 0
    assert out.splitlines()[:5] == [
        f"# {tmp_path / 'a.pbtxt'}", 'net "detail": 2 ops, type dag, 4 workers',
        "  external inputs (0): (none)", "  external outputs (0): (none)", "  device: CUDA:1"]
    assert ('  [0] Conv "conv1"  X, W -> Y  values=[0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, ... (20 floats)] '
            "order='NCHW' raw=b'\\xff\\x00' step=<net 'inner': 1 ops> engine=CUDNN device=CPU seed=7") in out
    assert "  [1] ConstantFill  () -> Z  control_input=[Y] gradient" in out
    assert out.endswith(f"\n# {tmp_path / 'b.pb'}\n" + 'net "empty": 0 ops\n'
                        "  external inputs (0): (none)\n  external outputs (0): (none)\n")


def test_show_reports_bad_files(tmp_path, capsys):
    bad = tmp_path / "cut.pb"
    bad.write_bytes(lenet_predict().read_bytes()[:-6])
    code, out, err = run_cli(capsys, "show", str(bad))
    assert code == 1 and out == ""
    assert err.startswith(f"netjit show: error: {bad}: not a valid caffe2.NetDef") and "truncated" in err
    assert "Traceback" not in err
    code, _, err = run_cli(capsys, "show", str(tmp_path / "missing.pb"))
    assert code == 1 and "missing.pb: No such file or directory" in err


def test_draw_dot_without_graphviz(tmp_path, capsys, monkeypatch):
    pytest.importorskip("pydot")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    code, out, _ = run_cli(capsys, "draw", str(lenet_predict()), "-o", str(tmp_path / "lenet.dot"))
    assert code == 0 and out.strip() == f"wrote {tmp_path / 'lenet.dot'} (11 ops)"
    text = (tmp_path / "lenet.dot").read_text()
    assert '"Conv (op#0)"' in text and '"26 #0"' in text
    code, _, err = run_cli(capsys, "draw", str(lenet_predict()), "-o", str(tmp_path / "lenet.svg"))
    assert code == 1 and "Graphviz" in err and "install" in err.lower()
    assert not (tmp_path / "lenet.svg").exists()


def test_draw_minimal_dot(tmp_path, capsys):
    pytest.importorskip("pydot")
    code, _, _ = run_cli(capsys, "draw", str(lenet_predict()), "-o", str(tmp_path / "m.dot"), "--minimal",
                         "--rankdir", "TB")
    text = (tmp_path / "m.dot").read_text()
    assert code == 0 and "rankdir=TB" in text and "#0\"" not in text  # ops only, no blob nodes
    assert text.count("->") == 10


def test_draw_svg(tmp_path, capsys):
    pytest.importorskip("pydot")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz `dot` is not installed (apt-get install graphviz)")
    code, _, _ = run_cli(capsys, "draw", str(lenet_predict()), "-o", str(tmp_path / "lenet.svg"))
    assert code == 0 and "<svg" in (tmp_path / "lenet.svg").read_text()


def test_register_command_functions_and_lazy_module(tmp_path, capsys, monkeypatch):
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "netjit_test_lazy_cmd.py").write_text(
        "def add_arguments(parser):\n    parser.add_argument('--times', type=int, default=1)\n"
        "def run(args):\n    print('lazy ' * args.times)\n    return 3\n")
    monkeypatch.syspath_prepend(str(module_dir))
    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))
    calls = []
    cli.register_command("echo", lambda p: p.add_argument("word"), lambda a: calls.append(a.word) or 0,
                         help="echo a word")
    cli.register_command("lazy", module="netjit_test_lazy_cmd", help="a lazily imported command")
    with pytest.raises(ValueError):
        cli.register_command("echo", module="x")
    with pytest.raises(ValueError):
        cli.register_command("both", lambda p: None, lambda a: 0, module="x")
    assert run_cli(capsys, "echo", "hi")[0] == 0 and calls == ["hi"]
    assert "netjit_test_lazy_cmd" not in sys.modules  # other commands never import it
    code, out, _ = run_cli(capsys, "--help")
    assert "a lazily imported command" in out and "netjit_test_lazy_cmd" not in sys.modules
    code, out, _ = run_cli(capsys, "lazy", "--times", "2")
    assert code == 3 and out == "lazy lazy \n"
    monkeypatch.delitem(sys.modules, "netjit_test_lazy_cmd")


def test_command_error_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))

    def fail(args):
        raise cli.CommandError("the thing is wrong")

    cli.register_command("fail", lambda p: None, fail)
    assert run_cli(capsys, "fail") == (1, "", "netjit fail: error: the thing is wrong\n")
