"""The checked-in *_pb2.py modules are exactly what `python proto/regen.py` produces."""
from __future__ import annotations

import difflib
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("grpc_tools", reason="regenerating needs grpcio-tools (the `regen` extra)")

from netjit.proto import regen  # noqa: E402

VERSION_LINE = re.compile(r"^# Protobuf Python Version: (.*)$", re.M)


def test_regeneration_is_reproducible(tmp_path):
    fresh = regen.generate(tmp_path)
    assert [p.name for p in fresh] == ["caffe2_pb2.py", "caffe2_legacy_pb2.py", "predictor_consts_pb2.py",
                                       "metanet_pb2.py"]
    for path in fresh:
        checked_in = regen.PROTO_DIR / path.name
        new, old = path.read_text(), checked_in.read_text()
        if new == old:
            continue
        new_version, old_version = VERSION_LINE.search(new), VERSION_LINE.search(old)
        if new_version and old_version and new_version.group(1) != old_version.group(1):
            pytest.skip(f"installed grpcio-tools emits protobuf {new_version.group(1)} code; the checked-in "
                        f"modules were generated for {old_version.group(1)}")
        diff = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), "checked-in", "fresh", n=1))
        pytest.fail(f"{path.name} is stale; run `python proto/regen.py`:\n{diff[:3000]}")


def test_generated_imports_stay_inside_the_package(tmp_path):
    regen.generate(tmp_path)
    metanet = (tmp_path / "metanet_pb2.py").read_text()
    assert "from netjit.proto import caffe2_pb2" in metanet
    assert not re.search(r"^import \w+_pb2", metanet, re.M)


def test_check_command_from_the_repo_root():
    root = Path(regen.__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "proto/regen.py", "--check"], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_check_detects_a_stale_module(tmp_path):
    for name in regen.PROTO_FILES:
        (tmp_path / name).write_bytes((regen.PROTO_DIR / name).read_bytes())
    regen.generate(tmp_path, proto_dir=tmp_path)
    assert regen.check(tmp_path) == []
    (tmp_path / "caffe2_legacy.proto").write_text(
        (tmp_path / "caffe2_legacy.proto").read_text().replace("SAME = 2;", "SAME = 2;\n  EXTRA = 4;"))
    assert regen.check(tmp_path) == ["caffe2_legacy_pb2.py"]
