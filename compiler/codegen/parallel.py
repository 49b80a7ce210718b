"""Who runs on which core during a compiled kernel.

Measured on the 2-core VM (examples/benchmarks/RESULTS.md): OpenBLAS's own second thread bought
1.2-1.3x on LeNet's GEMMs, and everything around the GEMMs (im2col, scatter, pooling) ran on one
core, so a batch-64 LeNet step was only 10 % slower with OpenBLAS pinned to one thread. Kernels
that have enough work therefore split it themselves: ``prange`` over ``blas.team(work)`` parts,
each part calling a one-thread BLAS (``blas.pgemm`` and the conv/pool kernels in windows.py).

The generated driver pins OpenBLAS to one thread for the whole run (codegen/driver.py) and puts the
caller's count back at the end. Pinning inside each kernel instead was measured 2-3x slower: an
OpenBLAS worker that ran the previous multi-threaded GEMM keeps spinning (OpenBLAS idles its
workers in a busy loop for a long while) against our threads. Kernels called outside a pinned run
(OpenBLAS free to thread) stay serial and leave the threading to OpenBLAS, as before.

That needs a threading layer with cheap launches: numba's OpenMP or TBB layer (about 2 us per
parallel region here). The workqueue layer costs ~130 us per region and cannot run two regions
from two Python threads at once, so without OpenMP or TBB kernels stay serial (``PARALLEL`` False)
and OpenBLAS threads each GEMM as before. ``numba.set_num_threads(1)`` (or NUMBA_NUM_THREADS=1)
makes every kernel serial at run time. (Which layer exists is read once: numba's disk cache does not
track it, so kernels cached with one choice keep it.)

GNU OpenMP does not survive ``fork``: a child that starts a parallel region after its parent used
one is terminated by numba. A forked child of a process that ran parallel kernels is therefore set
to one thread, which keeps every kernel on its serial path (no region is started).
"""
from __future__ import annotations

import os

import numba
from numba import njit, types

# Below this many multiply-adds a kernel stays on one thread: a parallel region's start and join
# (~2 us) would cost more than the second core saves.
MIN_WORK = 1 << 17


def _fast_layer() -> str | None:
    """Start numba's threading layer and name it when it is one with cheap, thread-safe launches
    (OpenMP or TBB), else None. Starting it now also registers the C symbol ``get_num_threads``
    that ``team_size`` calls by name: numba's own ``get_num_threads()`` overload goes through a
    ctypes pointer, which would keep every kernel that calls it out of the disk cache."""
    if str(numba.config.THREADING_LAYER).lower() == "workqueue":
        return None
    # GNU OpenMP's spin at each join is left at its default (libgomp reads GOMP_SPINCOUNT and
    # OMP_WAIT_POLICY when it loads, just below). On a busy machine the spinning thread holds a core
    # while its partner waits for a time slice: on the 2-core VM under load, ResNet-50 took 347-872
    # ms per run (median) by default and 95 ms with GOMP_SPINCOUNT=1000; but on a quiet machine
    # 1000 rounds cost SqueezeNet 5.1 -> 6.7 ms (waking the partner per region). Users sharing
    # their cores can set it themselves (examples/benchmarks/RESULTS.md).
    from numba.np.ufunc import parallel as layer
    try:
        layer._launch_threads()
        name = numba.threading_layer()
    except (ImportError, OSError, ValueError, RuntimeError):
        return None
    return name if name in ("omp", "tbb") else None


LAYER = _fast_layer()
PARALLEL = LAYER is not None
_team_size = types.ExternalFunction("get_num_threads", types.intc()) if PARALLEL else None


if PARALLEL and hasattr(os, "register_at_fork"):
    # The layer was started above, so every child forked from now on inherits a used OpenMP.
    os.register_at_fork(after_in_child=lambda: numba.set_num_threads(1))


if PARALLEL:
    @njit(cache=True, nogil=True)
    def team_size():
        """numba's thread count for the calling thread (``numba.set_num_threads``)."""
        return max(1, _team_size())
else:
    @njit(cache=True, nogil=True)
    def team_size():
        return 1


@njit(cache=True, nogil=True)
def part(total, parts, index, align):
    """[lo, hi) of part ``index`` when ``total`` items are cut into ``parts`` near-equal pieces,
    each boundary a multiple of ``align`` (the last piece takes the remainder)."""
    units = (total + align - 1) // align
    lo = min(total, (units * index // parts) * align)
    hi = min(total, (units * (index + 1) // parts) * align)
    return lo, hi
