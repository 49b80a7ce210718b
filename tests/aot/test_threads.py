"""The bundle's own thread pool (compiler/aot/pool.c): the pool alone under nested regions and
concurrent callers, and the LeNet bundle's kernels threaded against one thread, against the JIT, and
from two host threads at once on scratch arenas of their own."""
from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from netjit import aot
from tests.aot.conftest import LENET_BATCH
from tests.conftest import REPO

POOL_C = REPO / "compiler" / "aot" / "pool.c"


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
@pytest.mark.parametrize("threads,callers", [(1, 2), (2, 0), (4, 3)])
def test_pool_regions_nested_and_concurrent(tmp_path, threads, callers):
    """A sum split into numba-style schedule divisions, per-thread slots indexed by get_thread_id:
    every total right with one host thread, with several at once, and with nested regions."""
    exe = tmp_path / "pool_check"
    subprocess.run(["cc", "-O2", "-Wall", "-Werror", f'-DPOOL_C="{POOL_C}"',
                    str(Path(__file__).with_name("pool_check.c")), "-o", str(exe), "-lpthread"], check=True)
    done = subprocess.run([str(exe), str(threads), str(callers)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"ok threads={threads} workers={threads - 1} bad=0"), done.stdout


def _c_runner(bundle_dir: Path) -> tuple[ctypes.CDLL, np.ndarray, int]:
    m = json.loads((bundle_dir / "bundle.json").read_text())
    lib = ctypes.CDLL(str(bundle_dir / m["library"]))
    lib.lenet_run.argtypes = [ctypes.c_void_p] * 4
    lib.lenet_set_num_threads.argtypes = [ctypes.c_int]
    weights = np.fromfile(bundle_dir / m["weights"]["file"], np.uint8)
    return lib, weights, m["scratch_bytes"]


def _run(lib: ctypes.CDLL, weights: np.ndarray, scratch: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = np.empty((LENET_BATCH, 10), np.float32)
    ins = (ctypes.c_void_p * 1)(x.ctypes.data)
    outs = (ctypes.c_void_p * 1)(out.ctypes.data)
    assert lib.lenet_run(weights.ctypes.data, scratch.ctypes.data, ins, outs) == 0
    return out


def _scratch(nbytes: int) -> np.ndarray:
    raw = np.zeros(nbytes + 64, np.uint8)
    start = (-raw.ctypes.data) % 64
    return raw[start:start + nbytes]


def test_threaded_equals_one_thread(lenet_bundle, mnist_digits):
    m = json.loads((lenet_bundle / "bundle.json").read_text())
    assert m["threaded"], "the bundle was built with serial kernels (no OpenMP/TBB layer in numba?)"
    images, _ = mnist_digits
    x = np.ascontiguousarray(images[:LENET_BATCH])
    bundle = aot.load(lenet_bundle, num_threads=2)
    assert bundle.num_threads == 2
    threaded, = bundle.run([x])
    bundle.set_num_threads(1)
    assert bundle.num_threads == 1
    serial, = bundle.run([x])
    bundle.set_num_threads(0)
    np.testing.assert_allclose(threaded, serial, rtol=0, atol=1e-5)
    assert np.isfinite(threaded).all()


def test_two_host_threads_at_once(lenet_bundle, mnist_digits):
    """Two callers, each with its own scratch arena and input, calling NAME_run concurrently
    (ctypes drops the GIL): every result matches the same input's result run alone (to 1e-5: a
    caller that finds the pool busy runs its regions serially, which sums in another order)."""
    images, _ = mnist_digits
    lib, weights, scratch_bytes = _c_runner(lenet_bundle)
    lib.lenet_set_num_threads(2)
    xs = [np.ascontiguousarray(images[k * LENET_BATCH:(k + 1) * LENET_BATCH]) for k in range(2)]
    alone = [_run(lib, weights, _scratch(scratch_bytes), x) for x in xs]
    failures: list[str] = []

    def caller(k: int) -> None:
        scratch = _scratch(scratch_bytes)
        for rep in range(30):
            got = _run(lib, weights, scratch, xs[k])
            if not np.allclose(got, alone[k], rtol=0, atol=1e-5):
                failures.append(f"caller {k} run {rep}: max diff {np.abs(got - alone[k]).max()}")

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    assert not failures, failures[:3]


def test_threaded_so_dependencies(lenet_bundle):
    """The pool needs nothing beyond libc/libpthread: ldd resolves every library, none of them
    Python, numba's or an OpenMP runtime."""
    so = lenet_bundle / "lenet.so"
    out = subprocess.run(["ldd", str(so)], capture_output=True, text=True, check=True).stdout
    assert "not found" not in out, out
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert not any(k in n for n in names for k in ("python", "omp", "tbb", "numba", "llvm")), names
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert "lenet_set_num_threads" in symbols and "numba_parallel_for" not in symbols
