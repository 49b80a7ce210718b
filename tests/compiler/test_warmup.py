"""``netjit warmup``: the prebuilt store it fills serves later processes whatever their
NETJIT_CACHE_DIR, and parallel workers build exactly the kernels a serial warmup builds.

The nets here are tiny elementwise/softmax nets so the test compiles a few small kernels; the
families of compiler/codegen/warmup_nets.py are checked against the reference executor without
compiling (their kernels take minutes on a cold machine; examples/benchmarks/bench_compile.py
times them)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netjit.compiler.codegen import prebuild, warmup_nets
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_op
from netjit.proto.io import save_net

REPO = Path(__file__).resolve().parents[2]

NETS = r"""
import numpy as np
from netjit.compiler.codegen.warmup_nets import WarmupNet
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_op

def tiny_nets():
    rng = np.random.default_rng(0)
    a = caffe2_pb2.NetDef(name="tiny_a", external_input=["x", "s"], external_output=["y"])
    a.op.extend([make_op("Relu", ["x"], ["t"]), make_op("Sigmoid", ["t"], ["u"]),
                 make_op("Mul", ["u", "s"], ["y"], broadcast=1)])
    b = caffe2_pb2.NetDef(name="tiny_b", external_input=["x"], external_output=["p"])
    b.op.extend([make_op("Tanh", ["x"], ["t"]), make_op("Scale", ["t"], ["u"], scale=3.0),
                 make_op("Softmax", ["u"], ["p"])])
    x = rng.standard_normal((4, 5)).astype(np.float32)
    return [WarmupNet("tiny_a", a, {"x": x, "s": np.full(1, 2.0, np.float32)}), WarmupNet("tiny_b", b, {"x": x})]
"""

WARMUP = NETS + r"""
import json, sys
from netjit.compiler.codegen.prebuild import warmup
built = warmup(tiny_nets(), workers=int(sys.argv[1]))
print(json.dumps([b.stats for b in built]))
"""

USE = NETS + r"""
import json
import numpy as np
from netjit import workspace
from netjit.bench import executor
from netjit.compiler.codegen.modules import kernel_stats
got = {}
for net in tiny_nets():
    for ex in ("compiled", "reference"):
        workspace.SwitchWorkspace(net.name + ex, True)
        with executor(ex):
            for k, v in net.feeds.items():
                workspace.FeedBlob(k, v)
            workspace.CreateNet(net.predict)
            workspace.RunNet(net.predict.name)
        got[ex] = workspace.FetchBlob(net.predict.external_output[0])
    np.testing.assert_allclose(got["compiled"], got["reference"], rtol=1e-5, atol=1e-6)
print(json.dumps(kernel_stats()))
"""


def _python(script: str, env: dict[str, str], *args: str) -> list | dict:
    proc = subprocess.run([sys.executable, "-c", script, *args], env={**os.environ, **env}, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _kernels(root: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (root / "kernels").glob("nj_*.py")}


def test_parallel_warmup_fills_the_store_and_a_new_process_hits_it(tmp_path):
    lib = tmp_path / "lib"
    built = _python(WARMUP, {"NETJIT_LIBRARY_DIR": str(lib), "NETJIT_CACHE_DIR": str(tmp_path / "c0")}, "2")
    assert [b["kernels"] for b in built] == [1, 1]          # each net fuses into one kernel
    assert _kernels(lib) and len(_kernels(lib)) == 2
    assert not list((tmp_path / "c0").glob("kernels/nj_*.py"))   # the caller's cache is left alone
    # A new process with an empty cache of its own compiles nothing: it loads the prebuilt kernels.
    user = tmp_path / "user"
    stats = _python(USE, {"NETJIT_LIBRARY_DIR": str(lib), "NETJIT_CACHE_DIR": str(user)})
    assert stats == {"kernels": 2, "cache_hits": 2, "cache_misses": 0}
    assert not list(user.glob("kernels/nj_*.py"))
    # Without the store the same process compiles both kernels into its own cache.
    stats = _python(USE, {"NETJIT_LIBRARY_DIR": str(tmp_path / "none"), "NETJIT_CACHE_DIR": str(user)})
    assert stats == {"kernels": 2, "cache_hits": 0, "cache_misses": 2}
    assert set(_kernels(user)) == set(_kernels(lib))


def test_serial_warmup_builds_the_same_kernels(tmp_path):
    parallel, serial = tmp_path / "parallel", tmp_path / "serial"
    _python(WARMUP, {"NETJIT_LIBRARY_DIR": str(parallel), "NETJIT_CACHE_DIR": str(tmp_path / "c")}, "2")
    built = _python(WARMUP, {"NETJIT_LIBRARY_DIR": str(serial), "NETJIT_CACHE_DIR": str(tmp_path / "c")}, "1")
    assert [b["cache_misses"] for b in built] == [1, 1]
    assert _kernels(serial) == _kernels(parallel)


def test_model_net_feeds_the_data_input(tmp_path):
    init = caffe2_pb2.NetDef(name="init")
    init.op.extend([make_op("ConstantFill", [], ["w"], shape=[3], value=1.0)])
    predict = caffe2_pb2.NetDef(name="pred", external_input=["w", "data"], external_output=["y"])
    predict.op.extend([make_op("Mul", ["data", "w"], ["y"], broadcast=1)])
    save_net(init, tmp_path / "init_net.pb")
    save_net(predict, tmp_path / "predict_net.pb")
    (tmp_path / "value_info.json").write_text(json.dumps({"data": [1, [2, 3]]}))
    net = prebuild.model_net(tmp_path / "init_net.pb", tmp_path / "predict_net.pb")
    assert net.name == "pred" and list(net.feeds) == ["data"] and net.feeds["data"].shape == (2, 3)
    with pytest.raises(ValueError, match="no warmup net 'nope'"):
        prebuild.warmup(["nope"])


@pytest.mark.parametrize("name", list(warmup_nets.BUILDERS))
def test_warmup_families_run_on_the_reference_executor(name):
    from netjit import workspace
    from netjit.bench import executor

    net = warmup_nets.build(name)
    workspace.SwitchWorkspace(f"test_warmup_{name}", True)
    try:
        with executor("reference"):
            if net.predictor:
                outs = workspace.Predictor(net.init, net.predict).run(net.feeds)
                assert len(outs) == len(net.predict.external_output) >= 1
            else:
                if net.init is not None:
                    workspace.RunNetOnce(net.init)
                for key, value in net.feeds.items():
                    workspace.FeedBlob(key, value)
                workspace.CreateNet(net.predict)
                for _ in range(net.runs):
                    workspace.RunNet(net.predict.name)
                outs = [workspace.FetchBlob(b) for b in net.predict.external_output or ["softmax"]]
        assert all(np.isfinite(out).all() for out in outs)
    finally:
        workspace.ResetWorkspace()
        workspace.SwitchWorkspace("default")


def test_if_needed_stamp_tracks_code_numba_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("NETJIT_LIBRARY_DIR", str(tmp_path))
    (tmp_path / "kernels").mkdir()
    assert not prebuild.is_warm()
    stamp = prebuild.stamp()
    assert set(stamp) == {"helpers", "numba", "cpu", "nets"} and stamp["nets"] == sorted(warmup_nets.BUILDERS)
    (tmp_path / "warmup.json").write_text(json.dumps(stamp))
    assert prebuild.is_warm()
    (tmp_path / "warmup.json").write_text(json.dumps({**stamp, "cpu": "another-cpu"}))
    assert not prebuild.is_warm()
    # `netjit warmup --if-needed` returns at once when the stamp matches.
    (tmp_path / "warmup.json").write_text(json.dumps(stamp))
    from netjit.cli import main
    assert main(["warmup", "--if-needed"]) == 0


PREDICT_ONCE = r"""
import json
import numpy as np
from netjit import workspace
from netjit.bench import executor
from netjit.compiler.codegen.modules import kernel_stats
from netjit.compiler.codegen.warmup_nets import given_init_net
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_op
rng = np.random.default_rng(0)
w = rng.standard_normal(6).astype(np.float32)
predict = caffe2_pb2.NetDef(name="ro_weights", external_input=["data", "w"], external_output=["y"])
predict.op.extend([make_op("Mul", ["data", "w"], ["t"], broadcast=1), make_op("Tanh", ["t"], ["y"])])
x = rng.standard_normal((3, 6)).astype(np.float32)
out = {}
for ex in ("compiled", "reference"):
    with executor(ex):
        out[ex] = workspace.Predictor(given_init_net("ro", {"w": w}), predict).run([x])[0]
np.testing.assert_allclose(out["compiled"], out["reference"], rtol=1e-5, atol=1e-6)
print(json.dumps(kernel_stats()))
"""


def test_read_only_weights_compile_one_specialisation(tmp_path):
    # The init net's weights are folded into read-only constants; the kernel is precompiled for
    # read-only arrays, so the first run calls that specialisation instead of compiling another.
    stats = _python(PREDICT_ONCE, {"NETJIT_LIBRARY_DIR": str(tmp_path / "none"),
                                   "NETJIT_CACHE_DIR": str(tmp_path / "c")})
    assert stats == {"kernels": 1, "cache_hits": 0, "cache_misses": 1}
