"""netjit cache: listing, age/size pruning and clearing the on-disk kernel cache; a cleared cache
is rebuilt on demand."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from netjit import kernel_cache
from netjit.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NETJIT_CACHE_DIR", str(tmp_path))
    root = tmp_path / "kernels"
    root.mkdir()
    (root / "__pycache__").mkdir()
    return root


def _fake_kernel(root, key: str, days_old: float, size: int = 1000) -> None:
    files = [root / f"{key}.py", root / "__pycache__" / f"{key}.kernel-9.py311.nbi",
             root / "__pycache__" / f"{key}.kernel-9.py311.1.nbc"]
    stamp = time.time() - days_old * 86400
    for path in files:
        path.write_bytes(b"x" * size)
        os.utime(path, (stamp, stamp))


def test_listing_groups_a_kernels_files(cache):
    _fake_kernel(cache, "nj_a", 10)
    _fake_kernel(cache, "nj_b", 1)
    found = kernel_cache.kernels(cache)
    assert [k.key for k in found] == ["nj_a", "nj_b"]           # oldest first
    assert all(len(k.files) == 3 and k.size == 3000 for k in found)


def test_prune_by_age_then_size(cache, capsys):
    for key, age in (("nj_old", 40), ("nj_mid", 20), ("nj_new", 1)):
        _fake_kernel(cache, key, age)
    assert main(["cache", "--older-than", "30"]) == 0
    assert {k.key for k in kernel_cache.kernels(cache)} == {"nj_mid", "nj_new"}
    assert "removed 1 kernels" in capsys.readouterr().out
    assert main(["cache", "--max-size", "0.004"]) == 0          # 4 kB: only the newest (3 kB) fits
    assert [k.key for k in kernel_cache.kernels(cache)] == ["nj_new"]
    assert main(["cache", "--older-than", "-1"]) == 2


_CHILD = ("import numpy as np\n"
          "from tests.compiler.helpers import netdef, op, run_compiled\n"
          "net = netdef('n', [op('Relu', ['X'], ['Y']), op('Scale', ['Y'], ['Z'], scale=3.0)])\n"
          "ws, _ = run_compiled(net, {'X': np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)})\n"
          "assert float(ws.blobs['Z'].max()) == 6.0\n")


def _compile_in_a_new_process() -> None:
    # A fresh process: this one may already hold the kernel in memory and then writes nothing.
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", _CHILD], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def test_clear_then_compile_again(cache, capsys):
    _compile_in_a_new_process()
    assert kernel_cache.kernels(cache), "the compiled run wrote no kernel to NETJIT_CACHE_DIR"
    assert main(["cache", "--clear"]) == 0
    assert kernel_cache.kernels(cache) == []
    _compile_in_a_new_process()
    assert kernel_cache.kernels(cache), "a new process did not write the cleared kernel again"
    assert main(["cache"]) == 0
    assert "kernels" in capsys.readouterr().out
