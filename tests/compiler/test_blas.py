"""codegen/blas.py: compiled kernels' GEMM goes to numpy's own OpenBLAS (one thread pool), with a
np.dot callback where numpy carries none; visible outputs of compiled kernels reuse their arrays
only when nothing else holds them."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit

from netjit.compiler.codegen import blas
from tests.compiler.helpers import netdef, op, run_compiled, run_reference, assert_same_blobs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@njit(cache=True)
def _product(a, b, c, ta, tb, alpha, beta):
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    blas.gemm(ta, tb, m, n, k, alpha, a.reshape(-1), 0, max(a.shape[1], 1), b.reshape(-1), 0,
              max(b.shape[1], 1), beta, c.reshape(-1), 0, max(n, 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_matches_numpy(dtype, ta, tb):
    rng = np.random.default_rng(3)
    m, n, k = 7, 5, 11
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    want = 0.5 * ((a.T if ta else a) @ (b.T if tb else b)) + 2.0 * c
    _product(a, b, c, ta, tb, 0.5, 2.0)
    np.testing.assert_allclose(c, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


def test_gemm_offsets_address_submatrices():
    # Element offsets and leading dims select a block of a larger array, as the conv kernels use them.
    rng = np.random.default_rng(4)
    big_a = rng.standard_normal(40).astype(np.float32)
    big_b = rng.standard_normal(60).astype(np.float32)
    c = np.zeros(6, np.float32)

    @njit
    def run(a, b, c):
        blas.gemm(False, False, 2, 3, 4, 1.0, a, 8, 4, b, 10, 3, 0.0, c, 0, 3)
    run(big_a, big_b, c)
    want = big_a[8:16].reshape(2, 4) @ big_b[10:22].reshape(4, 3)
    np.testing.assert_allclose(c.reshape(2, 3), want, rtol=1e-5)


@njit(cache=True)
def _embedded_product(ta, tb, m, n, k, alpha, af, a_off, lda, bf, b_off, ldb, beta, cf, c_off, ldc):
    blas.gemm(ta, tb, m, n, k, alpha, af, a_off, lda, bf, b_off, ldb, beta, cf, c_off, ldc)


def _embed(mat: np.ndarray, off: int, ld: int) -> np.ndarray:
    """``mat`` stored row-major at element ``off`` of a flat buffer with leading dimension ``ld``."""
    rows, cols = mat.shape
    flat = np.full(off + rows * ld + 3, 99.0, mat.dtype)
    for r in range(rows):
        flat[off + r * ld: off + r * ld + cols] = mat[r]
    return flat


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,n", [(1, 9), (9, 1), (1, 1)])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("beta", [0.0, 2.0])
def test_one_row_or_column_products_go_through_gemv(dtype, m, n, ta, tb, beta):
    # Batch-1 FCs and single-column products run as cblas ?gemv (no GEMM packing): every operand
    # layout, offsets and leading dimensions wider than the matrices, C's old NaNs ignored at beta 0.
    rng = np.random.default_rng(6)
    k = 13
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    c = np.full((m, n), np.nan, dtype) if beta == 0 else rng.standard_normal((m, n)).astype(dtype)
    lda, ldb, ldc = a.shape[1] + 2, b.shape[1] + 3, n + 4
    af, bf, cf = _embed(a, 5, lda), _embed(b, 7, ldb), _embed(c, 2, ldc)
    want = 0.5 * ((a.T if ta else a) @ (b.T if tb else b)) + (beta * c if beta else 0)
    _embedded_product(ta, tb, m, n, k, 0.5, af, 5, lda, bf, 7, ldb, beta, cf, 2, ldc)
    got = np.array([cf[2 + r * ldc: 2 + r * ldc + n] for r in range(m)])
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    padding = np.ones(cf.size, bool)
    for r in range(m):
        padding[2 + r * ldc: 2 + r * ldc + n] = False
    assert (cf[padding] == 99.0).all()      # nothing outside C's rows is written


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [2, 3, 5, 8, 9])
@pytest.mark.parametrize("beta", [0.0, 2.0])
def test_few_row_products_with_transposed_b(dtype, m, beta):
    # Small-batch FCs (A @ B^T with at most SMALL_ROWS rows, B of SMALL_ROWS_MIN_B elements or
    # more) run as dot products, four rows of A at a time (m = 3, 5: a partial block); 9 rows go to
    # BLAS: same results, offsets honoured.
    rng = np.random.default_rng(8)
    n, k = 300, 263
    assert n * k >= blas.SMALL_ROWS_MIN_B
    a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((n, k)).astype(dtype)
    c = np.full((m, n), np.nan, dtype) if beta == 0 else rng.standard_normal((m, n)).astype(dtype)
    lda, ldb, ldc = k + 2, k + 3, n + 4
    af, bf, cf = _embed(a, 5, lda), _embed(b, 7, ldb), _embed(c, 2, ldc)
    want = 0.5 * (a.astype(np.float64) @ b.T.astype(np.float64)) + (beta * c if beta else 0)
    _embedded_product(False, True, m, n, k, 0.5, af, 5, lda, bf, 7, ldb, beta, cf, 2, ldc)
    got = np.array([cf[2 + r * ldc: 2 + r * ldc + n] for r in range(m)])
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4)
    padding = np.ones(cf.size, bool)
    for r in range(m):
        padding[2 + r * ldc: 2 + r * ldc + n] = False
    assert (cf[padding] == 99.0).all()


def test_provider_is_named():
    assert "OpenBLAS" in blas.PROVIDER or "callback" in blas.PROVIDER


_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from netjit.compiler.codegen import blas
    from tests.compiler.helpers import netdef, op, run_compiled, run_reference, assert_same_blobs
    rng = np.random.default_rng(0)
    feeds = {"X": rng.standard_normal((2, 3, 6, 6)).astype(np.float32),
             "W": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
             "b": rng.standard_normal(4).astype(np.float32),
             "FW": rng.standard_normal((5, 36)).astype(np.float32),
             "Fb": rng.standard_normal(5).astype(np.float32),
             "V": rng.standard_normal((1, 36)).astype(np.float32)}
    net = netdef("child", [op("Conv", ["X", "W", "b"], ["Y"], kernel=3, pad=1, stride=2),
                           op("FC", ["Y", "FW", "Fb"], ["Z"]),
                           op("FCGradient", ["Y", "FW", "Z"], ["dFW", "dFb", "dY"]),
                           op("ConvGradient", ["X", "W", "dY"], ["dW", "db", "dX"], kernel=3, pad=1, stride=2),
                           op("FC", ["V", "FW", "Fb"], ["U"]),                       # batch 1: gemv
                           op("FCGradient", ["V", "FW", "U"], ["dVW", "dVb", "dV"])])
    ref = run_reference(net, feeds)
    ws, _ = run_compiled(net, feeds, runs=2)
    assert_same_blobs(ref, ws, rtol=2e-5, atol=2e-5)
    print(blas.PROVIDER)
""")


def _child(env_extra: dict[str, str]) -> str:
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", _CHILD], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_kernels_never_call_numbas_dot():
    # numba's np.dot/@ reach scipy's OpenBLAS, a second thread pool; every compiled GEMM must go
    # through blas.gemm instead. (numba itself imports scipy.linalg at start-up, so loading alone
    # is no evidence; the kernel sources are.)
    import re
    from pathlib import Path
    codegen = Path(blas.__file__).parent
    for path in sorted(codegen.glob("*.py")):
        if path.name == "blas.py":
            continue
        code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
        assert not re.search(r"np\.(dot|matmul|linalg)|\s@\s", code), f"{path.name} calls numba's BLAS"


def test_compiled_conv_fc_in_a_fresh_process():
    out = _child({})
    assert "OpenBLAS" in out or "callback" in out, out


def test_callback_fallback_gives_the_same_results():
    out = _child({"NETJIT_BLAS": "callback"})
    assert "callback" in out, out


# --------------------------------------------------------------------------------------------
# Visible outputs reuse last run's array only when nobody else can see it
# --------------------------------------------------------------------------------------------
def _relu_net():
    return netdef("reuse", [op("Relu", ["X"], ["Y"]), op("Scale", ["Y"], ["Z"], scale=2.0)])


def test_unshared_output_array_is_reused():
    ws, runner = run_compiled(_relu_net(), {"X": np.arange(-4, 4, dtype=np.float32)})
    first = id(ws.blobs["Z"])
    runner.run()
    assert id(ws.blobs["Z"]) == first


def test_held_output_is_never_overwritten():
    x = np.arange(-4, 4, dtype=np.float32)
    ws, runner = run_compiled(_relu_net(), {"X": x})
    held = ws.blobs["Z"]
    view = ws.blobs["Y"][2:]
    before_held, before_view = held.copy(), view.copy()
    ws.feed("X", -x)
    runner.run()
    np.testing.assert_array_equal(held, before_held)
    np.testing.assert_array_equal(view, before_view)
    ref = run_reference(_relu_net(), {"X": -x})
    assert_same_blobs(ref, ws)


def test_empty_inner_dimension_writes_zeros():
    # k == 0 with beta 0: C is set to zero even where it held NaN (FC over zero features).
    @njit
    def run(a, b, c):
        blas.gemm(False, True, 2, 3, 0, 1.0, a, 0, 1, b, 0, 1, 0.0, c, 0, 3)
    c = np.full(6, np.nan, np.float32)
    run(np.zeros(1, np.float32), np.zeros(1, np.float32), c)
    np.testing.assert_array_equal(c, np.zeros(6, np.float32))
