"""Bounded fuzzing in CI: mutated model files (the real LeNet and small generated nets) and random
nets from tests/compiler/test_random_nets.py, fixed seeds. Every outcome is a success or a netjit
error (a RuntimeError naming the net and op), and random nets that run give the same blobs
compiled as through the reference executor. examples/fuzz.py runs longer campaigns."""
from __future__ import annotations

import importlib.util
import io
import random
import subprocess
import sys
from collections import Counter

import pytest

from tests.conftest import REPO, shared_path


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("netjit_examples_fuzz", REPO / "examples" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fuzz = _fuzz_module()


def test_mutated_model_files_give_results_or_netjit_errors():
    shared_path("models", "lenet_pytorch_export", "predict_net.pb")
    counts: Counter = Counter()
    bad: list[str] = []
    fuzz.fuzz_files(160, random.Random(13), counts, bad)
    assert not bad, "\n".join(bad[:5])
    assert sum(v for k, v in counts.items() if k.startswith("file/")) == 160
    assert sum(v for k, v in counts.items() if k.startswith("show/")) == 160
    # The mutations reach every stage: parsing, construction, running, and some nets still run.
    for outcome in ("file/ok", "file/netjit:OpError", "file/netjit:ProtoFormatError", "show/rc=0", "show/rc=1"):
        assert counts[outcome] > 0, counts


def test_corrupted_dbs_load_or_fail_with_netjit_errors():
    counts: Counter = Counter()
    bad: list[str] = []
    fuzz.fuzz_dbs(60, random.Random(13), counts, bad)
    assert not bad, "\n".join(bad[:5])
    assert counts["db/netjit:OpError"] > 0 and sum(counts.values()) == 60, counts


def test_random_nets_agree_and_fail_only_with_netjit_errors():
    counts: Counter = Counter()
    bad: list[str] = []
    fuzz.fuzz_nets(160, 13, counts, bad)
    assert not bad, "\n".join(bad[:3])
    assert counts["net/reference/ok"] == counts["net/compiled/ok"] > 40, counts
    assert counts["net/compiled/netjit:OpError"] > 10, counts


def test_classify_calls_raw_errors_bad():
    from netjit.runtime.errors import MissingBlobError, OpError
    assert fuzz.classify(None) == "ok"
    assert fuzz.classify(OpError("x", net="n", index=0, op_type="Relu")) == "netjit:OpError"
    assert fuzz.classify(MissingBlobError("gone", net="n", index=1, op_type="FC")) == "netjit:MissingBlobError"
    for raw in (AssertionError("a"), TypeError("t"), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
                IndexError("i"), KeyError("k")):
        assert fuzz.classify(raw).startswith("BAD:")


def test_mutations_are_deterministic():
    data = b"\n\x03abc\x12\x0f\n\x01x\x12\x02yy\x1a\x00\"\x04Relu:\x01x"
    first = [fuzz.mutate(data, random.Random(5)) for _ in range(3)]
    assert first == [fuzz.mutate(data, random.Random(5)) for _ in range(3)]
    assert any(m != data for m in first)


@pytest.mark.slow
def test_fuzz_script_runs_with_a_tiny_count():
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "fuzz.py"), "--count", "6", "--seed", "3"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 bad outcomes" in proc.stdout
    assert "net/reference/ok" in proc.stdout


def test_run_prints_counts_by_outcome():
    out = io.StringIO()
    counts, bad = fuzz.run(4, 9, nets_count=4, out=out)
    assert not bad
    text = out.getvalue()
    for key in counts:
        assert key in text
    assert "bad outcomes" in text
