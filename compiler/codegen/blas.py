"""One BLAS for the whole process: compiled kernels call the OpenBLAS that numpy itself uses.

``np.dot`` inside ``@njit`` reaches scipy's bundled OpenBLAS (docs/numba-facts.md §4), a second
library with its own thread pool. With numpy's references and numba's kernels in one plan the two
pools spin against each other on a small machine (measured on this 2-core VM: a LeNet training
step ran 1.7x faster with one pool capped). So compiled kernels call ``cblas_?gemm`` from numpy's
library instead, through a symbol registered with LLVM under a fixed name: the cached object code
refers to the name, never to an address, so disk-cached kernels stay valid in a new process.

The ABI is fixed (row-major cblas with 64-bit integers, as in numpy's ``scipy_openblas64``). Where
numpy carries no such library (an MKL or Accelerate build), the name is bound to a ctypes callback
that runs the same product with ``np.dot``: slower, same results, and still one BLAS.
``NETJIT_BLAS=callback`` selects that fallback on purpose.

A product with a single row or column of C (a batch-1 FC) goes to ``cblas_?gemv`` instead of GEMM,
which would pack the whole weight matrix first on every call.
"""
from __future__ import annotations

import ctypes
import glob
import os
from typing import Any

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, prange, types
from numba.core.extending import intrinsic

from netjit.compiler.codegen.parallel import MIN_WORK, PARALLEL, part, team_size

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
SGEMM_SYMBOL = "netjit_cblas_sgemm_ilp64"
DGEMM_SYMBOL = "netjit_cblas_dgemm_ilp64"
SGEMV_SYMBOL = "netjit_cblas_sgemv_ilp64"
DGEMV_SYMBOL = "netjit_cblas_dgemv_ilp64"
SET_THREADS_SYMBOL = "netjit_blas_set_num_threads"
GET_THREADS_SYMBOL = "netjit_blas_get_num_threads"

_i32, _i64 = ctypes.c_int32, ctypes.c_int64
_P = ctypes.c_void_p


def _argtypes(real: Any) -> list[Any]:
    return [_i32, _i32, _i32, _i64, _i64, _i64, real, _P, _i64, _P, _i64, real, _P, _i64]


def _gemv_argtypes(real: Any) -> list[Any]:
    return [_i32, _i32, _i64, _i64, real, _P, _i64, _P, _i64, real, _P, _i64]


# What is bound from numpy's OpenBLAS, in the order of ``_register``'s symbols.
_OPENBLAS_NAMES = ("cblas_sgemm", "cblas_dgemm", "cblas_sgemv", "cblas_dgemv", "openblas_set_num_threads",
                   "openblas_get_num_threads")


def _find_numpy_openblas() -> tuple[Any, ...] | None:
    """(sgemm, dgemm, sgemv, dgemv, set_num_threads, get_num_threads, library path) from the
    OpenBLAS numpy loaded, or None."""
    import numpy
    root = os.path.dirname(os.path.dirname(numpy.__file__))
    candidates = sorted(glob.glob(os.path.join(root, "numpy.libs", "*openblas*")))
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_", "64_"), ("", "64_")):
            found = [getattr(lib, f"{prefix}{name}{suffix}", None) for name in _OPENBLAS_NAMES]
            if all(fn is not None for fn in found):
                return (*found, path)
    return None


def _view(dtype: type, ptr: int, rows: int, cols: int, ld: int) -> np.ndarray:
    """The (rows, cols) row-major matrix at address ``ptr`` with leading dimension ``ld``."""
    if rows == 0 or cols == 0:
        return np.zeros((rows, cols), dtype)
    size = np.dtype(dtype).itemsize
    buf = (ctypes.c_char * (((rows - 1) * ld + cols) * size)).from_address(ptr)
    return np.ndarray((rows, cols), dtype, buf, strides=(ld * size, size))


def _py_gemm(dtype: type) -> Any:
    """A cblas-compatible callback over ``np.dot``, for numpy builds without a reachable OpenBLAS."""
    real = ctypes.c_float if dtype == np.float32 else ctypes.c_double

    def view(ptr: int, rows: int, cols: int, ld: int) -> np.ndarray:
        return _view(dtype, ptr, rows, cols, ld)

    def gemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):  # noqa: ANN001 - ctypes ABI
        am = view(a, k, m, lda).T if ta == TRANS else view(a, m, k, lda)
        bm = view(b, n, k, ldb).T if tb == TRANS else view(b, k, n, ldb)
        cm = view(c, m, n, ldc)
        prod = np.dot(am, bm) * alpha if k else np.zeros((m, n), dtype)
        cm[...] = prod if beta == 0 else beta * cm + prod

    return ctypes.CFUNCTYPE(None, *_argtypes(real))(gemm)


def _py_gemv(dtype: type) -> Any:
    """A cblas_?gemv-compatible callback over ``np.dot`` (the fallback's matrix-vector product)."""
    real = ctypes.c_float if dtype == np.float32 else ctypes.c_double

    def gemv(order, trans, m, n, alpha, a, lda, x, incx, beta, y, incy):  # noqa: ANN001 - ctypes ABI
        am = _view(dtype, a, m, n, lda)
        op = am.T if trans == TRANS else am
        # A vector with stride ``inc`` is one column of a (count, 1) matrix with leading dimension inc.
        xv = _view(dtype, x, op.shape[1], 1, incx)[:, 0]
        yv = _view(dtype, y, op.shape[0], 1, incy)[:, 0]
        prod = np.dot(op, xv) * alpha if op.shape[1] else np.zeros(op.shape[0], dtype)
        yv[...] = prod if beta == 0 else beta * yv + prod

    return ctypes.CFUNCTYPE(None, *_gemv_argtypes(real))(gemv)


def _register() -> str:
    # NETJIT_BLAS=callback forces the np.dot fallback (tests use it to cover that path).
    found = None if os.environ.get("NETJIT_BLAS") == "callback" else _find_numpy_openblas()
    symbols = (SGEMM_SYMBOL, DGEMM_SYMBOL, SGEMV_SYMBOL, DGEMV_SYMBOL, SET_THREADS_SYMBOL, GET_THREADS_SYMBOL)
    if found is not None:
        for symbol, fn in zip(symbols, found):
            llvm.add_symbol(symbol, ctypes.cast(fn, _P).value)
        return f"numpy's OpenBLAS ({os.path.basename(found[-1])})"
    global _CALLBACKS
    # Kept alive: LLVM holds their raw addresses. Without OpenBLAS there is no pool to size: the
    # thread-count pair reads 1 and ignores writes.
    _CALLBACKS = (_py_gemm(np.float32), _py_gemm(np.float64), _py_gemv(np.float32), _py_gemv(np.float64),
                  _THREADS_SET(lambda n: None), _THREADS_GET(lambda: 1))
    for symbol, fn in zip(symbols, _CALLBACKS):
        llvm.add_symbol(symbol, ctypes.cast(fn, _P).value)
    return "np.dot through a ctypes callback (no OpenBLAS found in numpy.libs)"


_THREADS_SET = ctypes.CFUNCTYPE(None, ctypes.c_int)
_THREADS_GET = ctypes.CFUNCTYPE(ctypes.c_int)
_CALLBACKS: tuple[Any, ...] | None = None
PROVIDER = _register()

_sig = [types.int32, types.int32, types.int32, types.int64, types.int64, types.int64, None, types.voidptr,
        types.int64, types.voidptr, types.int64, None, types.voidptr, types.int64]
_sgemm = types.ExternalFunction(SGEMM_SYMBOL, types.void(*[t or types.float32 for t in _sig]))
_dgemm = types.ExternalFunction(DGEMM_SYMBOL, types.void(*[t or types.float64 for t in _sig]))
_vsig = [types.int32, types.int32, types.int64, types.int64, None, types.voidptr, types.int64, types.voidptr,
         types.int64, None, types.voidptr, types.int64]
_sgemv = types.ExternalFunction(SGEMV_SYMBOL, types.void(*[t or types.float32 for t in _vsig]))
_dgemv = types.ExternalFunction(DGEMV_SYMBOL, types.void(*[t or types.float64 for t in _vsig]))
_set_threads = types.ExternalFunction(SET_THREADS_SYMBOL, types.void(types.intc))
_get_threads = types.ExternalFunction(GET_THREADS_SYMBOL, types.intc())


@intrinsic
def ptr_at(typingctx: Any, arr: Any, offset: Any) -> Any:
    """Address of ``arr``'s element at flat ``offset`` (C-contiguous arrays), as a ``void*``."""
    if not isinstance(arr, types.Array) or not isinstance(offset, types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ary = context.make_array(arr)(context, builder, args[0])
        off = context.cast(builder, args[1], signature.args[1], types.intp)
        elem = builder.gep(ary.data, [off])
        return builder.bitcast(elem, ir.IntType(8).as_pointer())
    return types.voidptr(arr, offset), codegen


_OPTS = dict(cache=True, nogil=True)


# C = A @ B^T with at most this many rows (a small-batch FC) runs as dot products of each row of
# B with the rows of A: OpenBLAS's GEMM packs all of B first (LeNet's 500x800 FC weights at batch
# 8: 170 us on two threads, against about 30 us for the dot products).
SMALL_ROWS = 8
SMALL_ROWS_MIN_B = 1 << 16    # and only when B is big enough for its packing to matter


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _nt_dots(m, j0, j1, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    """Columns [j0, j1) of C = alpha * A (m, k) @ B (n, k)^T + beta * C, one dot product each.
    ``fastmath`` lets LLVM split each sum over SIMD lanes, as BLAS's kernels do (float64 sums were
    measured 2x slower: no gain over OpenBLAS at 8 rows)."""
    zero = c.dtype.type(0)
    u = np.uint64   # unsigned indices: no negative-index wraparound test in the loop to vectorise
    for j in range(j0, j1):
        brow = u(b_off + j * ldb)
        for i0 in range(0, m, 4):
            # Four rows of A per pass over B's row: its loads are shared by four sums.
            r0 = u(a_off + i0 * lda)
            r1 = u(a_off + min(i0 + 1, m - 1) * lda)
            r2 = u(a_off + min(i0 + 2, m - 1) * lda)
            r3 = u(a_off + min(i0 + 3, m - 1) * lda)
            s0, s1, s2, s3 = zero, zero, zero, zero
            for q in range(k):
                bq = b[brow + u(q)]
                s0 += a[r0 + u(q)] * bq
                s1 += a[r1 + u(q)] * bq
                s2 += a[r2 + u(q)] * bq
                s3 += a[r3 + u(q)] * bq
            for i, acc in ((i0, s0), (i0 + 1, s1), (i0 + 2, s2), (i0 + 3, s3)):
                if i < m:
                    at = c_off + i * ldc + j
                    c[at] = alpha * acc if beta == 0 else alpha * acc + beta * c[at]


@njit(**_OPTS)
def gemm(trans_a, trans_b, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    """Row-major ``C = alpha * op(A) @ op(B) + beta * C`` on flat views with element offsets.

    ``op(A)`` is m x k, ``op(B)`` k x n; ``trans_*`` are booleans. Empty products write ``beta * C``
    (BLAS itself leaves C alone when k == 0 and beta == 1, and scales it otherwise).
    """
    if m <= 0 or n <= 0:
        return
    if (m == 1 or n == 1) and k > 0:
        _as_gemv(trans_a, trans_b, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc)
        return
    if m <= SMALL_ROWS and trans_b and not trans_a and k * n >= SMALL_ROWS_MIN_B:
        _nt_dots(m, 0, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc)
        return
    ta = TRANS if trans_a else NO_TRANS
    tb = TRANS if trans_b else NO_TRANS
    if c.itemsize == 4:
        _sgemm(ROW_MAJOR, ta, tb, m, n, k, np.float32(alpha), ptr_at(a, a_off), lda, ptr_at(b, b_off), ldb,
               np.float32(beta), ptr_at(c, c_off), ldc)
    else:
        _dgemm(ROW_MAJOR, ta, tb, m, n, k, np.float64(alpha), ptr_at(a, a_off), lda, ptr_at(b, b_off), ldb,
               np.float64(beta), ptr_at(c, c_off), ldc)


@njit(**_OPTS)
def _gemv(trans, rows, cols, alpha, a, a_off, lda, x, x_off, incx, beta, y, y_off, incy):
    t = TRANS if trans else NO_TRANS
    if y.itemsize == 4:
        _sgemv(ROW_MAJOR, t, rows, cols, np.float32(alpha), ptr_at(a, a_off), lda, ptr_at(x, x_off), incx,
               np.float32(beta), ptr_at(y, y_off), incy)
    else:
        _dgemv(ROW_MAJOR, t, rows, cols, np.float64(alpha), ptr_at(a, a_off), lda, ptr_at(x, x_off), incx,
               np.float64(beta), ptr_at(y, y_off), incy)


@njit(**_OPTS)
def _as_gemv(trans_a, trans_b, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    """A product with one row or one column of C as a matrix-vector product. OpenBLAS's GEMM packs
    both operands first: for a batch-1 FC that copies the whole weight matrix on every call
    (measured on an AMD EPYC VM: LeNet's 800x500 FC took 188 us as a GEMM; OpenBLAS builds for
    AVX-512 CPUs take a small-matrix path instead)."""
    if m == 1:
        # C (1, n) = op(A) (1, k) op(B) (k, n): C^T = op(B)^T x with x the row of op(A).
        incx = lda if trans_a else 1
        if trans_b:     # B is stored (n, k)
            _gemv(False, n, k, alpha, b, b_off, ldb, a, a_off, incx, beta, c, c_off, 1)
        else:           # B is stored (k, n)
            _gemv(True, k, n, alpha, b, b_off, ldb, a, a_off, incx, beta, c, c_off, 1)
    else:
        # C (m, 1) = op(A) (m, k) x with x the column of op(B); C's column has stride ldc.
        incx = 1 if trans_b else ldb
        if trans_a:     # A is stored (k, m)
            _gemv(True, k, m, alpha, a, a_off, lda, b, b_off, incx, beta, c, c_off, ldc)
        else:           # A is stored (m, k)
            _gemv(False, m, k, alpha, a, a_off, lda, b, b_off, incx, beta, c, c_off, ldc)


@njit(cache=True, nogil=True)
def blas_threads(n):
    """Set OpenBLAS's thread count; returns the previous one (a no-op returning 1 without OpenBLAS)."""
    prev = _get_threads()
    if n != prev:
        _set_threads(n)
    return prev


@njit(cache=True, nogil=True)
def team(work):
    """How many threads a kernel with ``work`` multiply-adds (or element visits) should use: numba's
    team size when netjit owns the cores (the driver pinned OpenBLAS to one thread for the run, see
    parallel.py), else 1 (the kernel runs serially and OpenBLAS threads its GEMMs as it likes)."""
    if work < MIN_WORK or _get_threads() != 1:
        return 1
    return team_size()


@njit(parallel=PARALLEL, **_OPTS)
def pgemm(trans_a, trans_b, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    """``gemm`` cut into one block per thread (rows of C when it has more rows than columns, else
    columns), each block a one-thread BLAS call. Small products, and calls while OpenBLAS is not
    pinned to one thread, stay one call (see ``team``)."""
    t_count = team(m * n * k)
    if t_count <= 1 or m <= 0 or n <= 0:
        gemm(trans_a, trans_b, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc)
        return
    by_rows = m >= n
    for t in prange(t_count):
        if by_rows:
            lo, hi = part(m, t_count, t, 16)
            gemm(trans_a, trans_b, hi - lo, n, k, alpha, a, a_off + (lo if trans_a else lo * lda), lda,
                 b, b_off, ldb, beta, c, c_off + lo * ldc, ldc)
        else:
            lo, hi = part(n, t_count, t, 16)
            gemm(trans_a, trans_b, m, hi - lo, k, alpha, a, a_off, lda,
                 b, b_off + (lo * ldb if trans_b else lo), ldb, beta, c, c_off + lo, ldc)
