"""MPI behind Caffe2's common worlds: the lazily imported mpi4py, the communicator a
``CreateCommonWorld`` blob holds, rendezvous store handles, lost-rank reports and a collective watchdog.

mpi4py is an optional extra (``pip install netjit[mpi]``): nothing imports it until a common world is
made, so the rest of netjit runs without it. Under ``mpiexec`` the MPI world *is* the rendezvous: a
rank learns its place from ``MPI.COMM_WORLD``, never from a key/value store.

    >>> cw = create_world(name="allreduce_cw", size=0, rank=None)   # doctest: +SKIP
    >>> cw.rank, cw.size                                            # doctest: +SKIP
    (0, 2)

Faults. With Open MPI's default error mode a rank killed mid-run makes ``mpiexec`` print the lost
rank and terminate the others within a second (measured); started as ``mpiexec --with-ft ulfm``
the survivors' collectives fail instead and :func:`failure_message` names the lost ranks
(``MPI_Comm_get_failed``). A rank that hangs without dying is caught by :class:`Watchdog`.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

INSTALL_HINT = "pip install netjit[mpi]"
# Seconds a collective may wait for its peers when the common world sets no timeout_ms.
DEFAULT_TIMEOUT_S = 600.0


class MPIUnavailableError(ImportError):
    """mpi4py (or an MPI library under it) is not installed."""


def load_mpi() -> Any:
    """``mpi4py.MPI``, imported on first use; a clear error naming the extra when it is missing."""
    if "mpi4py.MPI" not in sys.modules:
        # Open MPI busy-polls inside blocking calls; a rank waiting in Allreduce then takes the core
        # its peer needs to finish the step. Measured on the 2-core VM under load: a 2-rank LeNet step
        # went from 412 to 146 ms when waiting ranks yield. Read at MPI_Init; the user's value wins.
        os.environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
    first = "mpi4py.MPI" not in sys.modules
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise MPIUnavailableError(
            f"collective ops run on MPI through mpi4py, which is not installed ({err}); install the "
            f"extra with `{INSTALL_HINT}` (it brings mpi4py and Open MPI), then launch ranks with "
            f"`mpiexec -n N python script.py`") from None
    if first:
        share_cores()
    return MPI


def share_cores() -> int:
    """Give each of the ranks on this machine its share of the cores for the compiled kernels'
    threads (``numba.set_num_threads``), unless NUMBA_NUM_THREADS says otherwise: a compiled plan
    owns the cores it runs on, and two ranks that each start a thread per core fight over them.
    Returns the thread count in effect."""
    import numba
    local = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE") or os.environ.get("MPI_LOCALNRANKS") or 1)
    if local > 1 and "NUMBA_NUM_THREADS" not in os.environ:
        share = max(1, len(os.sched_getaffinity(0)) // local)
        if share < numba.get_num_threads():
            numba.set_num_threads(share)
    return numba.get_num_threads()


@dataclass
class StoreHandler:
    """What FileStoreHandlerCreate / RedisStoreHandlerCreate leave in their blob: where Gloo would
    have met its peers. Kept so Caffe2 scripts run unchanged; under MPI ``mpiexec`` already did the
    rendezvous and the store is never read."""
    kind: str
    where: str
    prefix: str = ""

    def __repr__(self) -> str:
        return f"<{self.kind} store {self.where!r} prefix={self.prefix!r} (unused: MPI does the rendezvous)>"


@dataclass
class CommonWorld:
    """A communicator and what the collectives report about it (the blob CreateCommonWorld writes)."""
    comm: Any
    name: str
    rank: int
    size: int
    timeout_s: float
    engine: str = "MPI"
    closed: bool = False

    def __repr__(self) -> str:
        state = "destroyed" if self.closed else f"rank {self.rank} of {self.size}"
        return f"<CommonWorld {self.name!r} on MPI: {state}>"


def world_rank_size() -> tuple[int, int]:
    """(rank, size) of this process in ``MPI.COMM_WORLD`` (imports mpi4py)."""
    mpi = load_mpi()
    return mpi.COMM_WORLD.Get_rank(), mpi.COMM_WORLD.Get_size()


def create_world(name: str, timeout_s: float | None = None, base: CommonWorld | None = None) -> CommonWorld:
    """A new common world: a duplicate of ``base``'s communicator (CloneCommonWorld) or of
    ``MPI.COMM_WORLD``. Collective: every rank must call it, in the same order."""
    mpi = load_mpi()
    parent = base.comm if base is not None else mpi.COMM_WORLD
    comm = parent.Dup()
    # Errors come back as exceptions (so a lost peer can be named), not as an abort inside MPI.
    comm.Set_errhandler(mpi.ERRORS_RETURN)
    if timeout_s is None:
        timeout_s = base.timeout_s if base is not None else _env_timeout()
    return CommonWorld(comm=comm, name=name, rank=comm.Get_rank(), size=comm.Get_size(),
                       timeout_s=timeout_s, engine=base.engine if base is not None else "MPI")


def destroy_world(cw: CommonWorld) -> None:
    if not cw.closed:
        cw.closed = True
        try:
            cw.comm.Free()
        except Exception:  # noqa: BLE001 - a communicator with a failed peer may refuse; nothing to free then
            pass


def _env_timeout() -> float:
    value = os.environ.get("NETJIT_MPI_TIMEOUT", "")
    return float(value) if value else DEFAULT_TIMEOUT_S


def timeout_from_ms(timeout_ms: int) -> float:
    """Caffe2's ``timeout_ms`` (-1: unset). ``NETJIT_MPI_TIMEOUT`` (seconds) overrides both."""
    if os.environ.get("NETJIT_MPI_TIMEOUT"):
        return _env_timeout()
    return timeout_ms / 1000.0 if timeout_ms > 0 else DEFAULT_TIMEOUT_S


def failure_message(cw: CommonWorld, err: BaseException) -> str:
    """Words for an MPI error raised by a collective; names the lost ranks when MPI knows them."""
    mpi = load_mpi()
    code = err.Get_error_class() if isinstance(err, mpi.Exception) else None
    lost_codes = {getattr(mpi, n) for n in ("ERR_PROC_FAILED", "ERR_PROC_FAILED_PENDING", "ERR_REVOKED")
                  if hasattr(mpi, n)}
    if code in lost_codes:
        lost = lost_ranks(cw)
        if lost:
            which = ", ".join(str(r) for r in lost)
            return (f"rank {which} of common world {cw.name!r} ({cw.size} ranks) was lost (its process "
                    f"died); this rank {cw.rank} stops. Restart the job from the last checkpoint")
        return (f"a peer of common world {cw.name!r} was lost (MPI: {err}); this rank {cw.rank} stops. "
                f"Restart the job from the last checkpoint")
    return f"MPI failed on common world {cw.name!r} (rank {cw.rank} of {cw.size}): {err}"


def lost_ranks(cw: CommonWorld) -> list[int]:
    """Ranks of ``cw`` that MPI reports as failed (needs an MPI with ULFM: ``mpiexec --with-ft ulfm``)."""
    mpi = load_mpi()
    try:
        failed = cw.comm.Get_failed()
        n = failed.Get_size()
        if n == 0:
            return []
        return sorted(mpi.Group.Translate_ranks(failed, list(range(n)), cw.comm.Get_group()))
    except Exception:  # noqa: BLE001 - an MPI without the fault-tolerance extension
        return []


class Watchdog:
    """Ends the job when one collective waits longer than its common world's timeout.

    A blocking MPI call cannot be interrupted from Python, so a thread watches the deadline of the
    collective in progress and, past it, prints what was waiting and aborts every rank (the
    alternative is a job that hangs forever on a stopped peer). Arming costs two attribute writes.
    """

    def __init__(self) -> None:
        self._deadline: float | None = None
        self._what = ""
        self._timeout = 0.0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def arm(self, timeout_s: float, what: str) -> None:
        self._what, self._timeout = what, timeout_s
        self._deadline = time.monotonic() + timeout_s
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._watch, name="netjit-mpi-watchdog", daemon=True)
                    self._thread.start()

    def disarm(self) -> None:
        self._deadline = None

    def _watch(self) -> None:
        while True:
            deadline = self._deadline
            now = time.monotonic()
            if deadline is None or now < deadline:
                time.sleep(0.5 if deadline is None else min(0.5, deadline - now + 0.01))
                continue
            rank = os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "?"))
            sys.stderr.write(f"netjit: rank {rank}: {self._what} waited {self._timeout:.1f} s for the other "
                             f"ranks (the common world's timeout; NETJIT_MPI_TIMEOUT overrides it): a rank "
                             f"is hung or unreachable. Aborting the job.\n")
            sys.stderr.flush()
            try:
                load_mpi().COMM_WORLD.Abort(70)
            finally:
                os._exit(70)


WATCHDOG = Watchdog()
