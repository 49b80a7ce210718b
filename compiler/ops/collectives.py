"""Caffe2's collective ops on MPI: CreateCommonWorld, CloneCommonWorld, DestroyCommonWorld,
Allreduce, Broadcast, Allgather, ReduceScatter, Barrier, and the rendezvous store ops
FileStoreHandlerCreate / RedisStoreHandlerCreate.

All are HOST ops: the compiled executor plans and fuses the segments between them and runs them in
Python against the workspace. Tensors are reduced in place through mpi4py's buffer interface
(``MPI.IN_PLACE`` on the blob's own numpy array: no staging copy, unless another blob shares that
array). Nets written for Gloo (``engine="GLOO"``) run on MPI unchanged; netjit says so once per
process. ``Allreduce(..., netjit_async=1)`` only starts its reduction; the next collective finishes it.

    init.FileStoreHandlerCreate([], ["store"], path="/tmp/rdv", prefix="job")
    init.CreateCommonWorld(["store"], ["cw"], size=2, rank=shard_id, engine="GLOO")
    net.Allreduce(["cw", "w_grad"], ["w_grad"], engine="GLOO")      # sum over ranks, in place
    net.Broadcast(["cw", "w"], ["w"], root=0, engine="MPI")

Semantics (Caffe2's, with Gloo's rules for several local tensors): Allreduce sums its inputs and
the ranks and writes the sum into every input; Broadcast copies the root rank's first input into
every input of every rank; Allgather writes the inputs of all ranks, rank-major, into one 1-D blob;
ReduceScatter sums like Allreduce and leaves, in every input, this rank's ``recv_counts[rank]``
elements of the sum at this rank's offset (the rest of the tensor as it was).
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Callable

import numpy as np

from netjit.compiler.ops.registry import HOST, INF, arg, defop
from netjit.runtime import mpi_world
from netjit.runtime.mpi_world import CommonWorld, StoreHandler

_NO_GRAD = "collective ops have no gradient (Caffe2: SHOULD_NOT_DO_GRADIENT)"
_warned_engines: set[str] = set()
# MPI reduces these with SUM; others (bool, float16, object) it cannot.
_REDUCIBLE = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
                                             np.uint8, np.uint16, np.uint32, np.uint64))


def _note_engine(ctx: Any) -> None:
    engine = ctx.op.engine or "MPI"
    if engine != "MPI" and engine not in _warned_engines:
        _warned_engines.add(engine)
        warnings.warn(f"collective ops with engine={engine!r} run on MPI in netjit (first seen: net "
                      f"{ctx.net_name!r} op #{ctx.index} ({ctx.op.type})); the rendezvous is mpiexec's",
                      RuntimeWarning, stacklevel=2)


def _world(ctx: Any, value: Any) -> CommonWorld:
    if not isinstance(value, CommonWorld):
        got = "an empty blob" if value is None else type(value).__name__
        raise ctx.error(f"input 0 must be a common world (made by CreateCommonWorld), got {got}",
                        blob=ctx.input_name(0))
    if value.closed:
        raise ctx.error(f"common world {value.name!r} was destroyed (DestroyCommonWorld)", blob=ctx.input_name(0))
    return value


def _tensors(ctx: Any, xs: tuple[Any, ...], reducible: bool = True, inplace: bool = True) -> list[np.ndarray]:
    """The op's tensors as writable C-contiguous arrays: the blobs' own arrays whenever that is safe.
    A folded constant, a strided view, or (for ops that write in place) an array another blob also
    holds (the compiler gives a Copy's output its input's array) is copied once, and the copy
    becomes this blob's value, so writing it in place changes this blob only, as in Caffe2."""
    out = []
    for i, x in enumerate(xs, start=1):
        if not isinstance(x, np.ndarray):
            raise ctx.error(f"input {i} must be a tensor, got {type(x).__name__}", blob=ctx.input_name(i))
        if reducible and x.dtype not in _REDUCIBLE:
            raise ctx.error(f"input {i} is {x.dtype}; MPI sums float32/float64/int8-64/uint8-64 tensors",
                            blob=ctx.input_name(i))
        if not (x.flags.c_contiguous and x.flags.writeable) or (inplace and _shared(ctx, i, x)):
            x = np.array(x, order="C", copy=True)
        out.append(x)
    first = out[0]
    for i, x in enumerate(out[1:], start=2):
        if x.size != first.size or x.dtype != first.dtype:
            raise ctx.error(f"input {i} is {x.dtype}{list(x.shape)} but input 1 is {first.dtype}"
                            f"{list(first.shape)}; all tensors of one collective must match",
                            blob=ctx.input_name(i))
    return out


def _shared(ctx: Any, i: int, x: np.ndarray) -> bool:
    """Whether a workspace blob other than input ``i`` holds (part of) ``x``'s memory. A bounds test
    per blob: about 1 us each, so tens of microseconds per collective on a training workspace."""
    ws = ctx.ws
    if ws is None:
        return False
    name = ctx.input_name(i)
    return any(other != name and isinstance(v, np.ndarray) and np.may_share_memory(v, x)
               for other, v in ws.blobs.items())


def _run(ctx: Any, cw: CommonWorld, what: str, call: Callable[[], Any], arm: bool | None = None) -> Any:
    """Run one MPI call under the watchdog; turn MPI errors into OpErrors that name lost ranks."""
    mpi = mpi_world.load_mpi()
    if arm is None:
        # The first run of an op also waits for peers that are still JIT-compiling the net before
        # it: only later runs are held to the common world's timeout.
        arm = _ran_before(ctx)
    if arm:
        mpi_world.WATCHDOG.arm(cw.timeout_s, f"{ctx.op.type} in net {ctx.net_name!r} op #{ctx.index} ({what})")
    try:
        return call()
    except mpi.Exception as err:
        raise ctx.error(mpi_world.failure_message(cw, err), blob=ctx.input_name(0)) from None
    finally:
        if arm:
            mpi_world.WATCHDOG.disarm()


def _ran_before(ctx: Any) -> bool:
    runs = ctx.state.get("runs", 0)
    ctx.state["runs"] = runs + 1
    return runs > 0


# Allreduces started with netjit_async=1 and not finished yet: (request, finish, ctx, world, ran
# before). The next collective of any kind completes them first, so their sums are in place.
_PENDING: list[tuple[Any, Callable[[], None], Any, CommonWorld, bool]] = []


def _complete_pending() -> None:
    if not _PENDING:
        return
    pending = list(_PENDING)
    _PENDING.clear()
    mpi = mpi_world.load_mpi()
    ctx, cw = pending[-1][2], pending[-1][3]
    _run(ctx, cw, f"completing {len(pending)} started Allreduce(s)",
         lambda: mpi.Request.Waitall([p[0] for p in pending]), arm=all(p[4] for p in pending))
    for p in pending:
        p[1]()


def _blob_list(ctx: Any) -> str:
    return ", ".join(repr(b) for b in ctx.op.input[1:]) or "none"


# --------------------------------------------------------------------------------------------
# Rendezvous stores (unused under MPI, accepted so Caffe2 init nets run unchanged)
# --------------------------------------------------------------------------------------------
@defop("FileStoreHandlerCreate", inputs=0, outputs=1, category=HOST, no_gradient_reason=_NO_GRAD,
       args=[arg("path", "str", ""), arg("prefix", "str", "")])
def file_store_handler_create(ctx):
    """A store-handler blob for the folder ``path`` (created, as Caffe2's FileStoreHandler did)."""
    if not ctx.args.path:
        raise ctx.error("argument 'path' must name a folder shared by the ranks")
    os.makedirs(ctx.args.path, exist_ok=True)
    return StoreHandler("file", ctx.args.path, ctx.args.prefix)


@defop("RedisStoreHandlerCreate", inputs=0, outputs=1, category=HOST, no_gradient_reason=_NO_GRAD,
       args=[arg("host", "str", ""), arg("port", "int", 6379), arg("prefix", "str", "")])
def redis_store_handler_create(ctx):
    """A store-handler blob naming a Redis server; nothing connects to it (mpiexec did the rendezvous)."""
    return StoreHandler("redis", f"{ctx.args.host}:{ctx.args.port}", ctx.args.prefix)


# --------------------------------------------------------------------------------------------
# Common worlds
# --------------------------------------------------------------------------------------------
_CW_ARGS = [arg("size", "int", 0), arg("rank", "int", 0), arg("timeout_ms", "int", -1),
            arg("transport", "str", "tcp"), arg("interface", "str", ""), arg("mpi_rendezvous", "bool", False),
            arg("status_blob", "str", ""), arg("sync", "bool", False)]


@defop("CreateCommonWorld", inputs=(0, 1), outputs=1, category=HOST, no_gradient_reason=_NO_GRAD, args=_CW_ARGS)
def create_common_world(ctx, *store):
    """A common world over every rank ``mpiexec`` started. ``size``/``rank``, where given, must agree
    with the MPI world (a script's own shard numbering that disagrees is an error, not a silent
    renumbering); ``timeout_ms`` bounds how long a collective waits for its peers."""
    _note_engine(ctx)
    if store and store[0] is not None and not isinstance(store[0], StoreHandler):
        raise ctx.error(f"input 0 must be a store handler (FileStoreHandlerCreate), got {type(store[0]).__name__}",
                        blob=ctx.input_name(0))
    try:
        rank, size = mpi_world.world_rank_size()
    except mpi_world.MPIUnavailableError as err:
        raise ctx.error(str(err), blob=ctx.output_name(0)) from None
    args = ctx.args
    if args.has("size") and args.size != size:
        raise ctx.error(f"size={args.size}, but mpiexec started {size} rank(s); launch with "
                        f"`mpiexec -n {args.size}` or pass num_shards={size}", blob=ctx.output_name(0))
    if args.has("rank") and args.rank != rank:
        raise ctx.error(f"rank={args.rank}, but this process is rank {rank} of the MPI world; pass "
                        f"shard_id from the MPI world (or leave it out)", blob=ctx.output_name(0))
    name = ctx.op.name or ctx.output_name(0)
    cw = _run_create(ctx, lambda: mpi_world.create_world(name, mpi_world.timeout_from_ms(args.timeout_ms)))
    cw.engine = ctx.op.engine or "MPI"
    return cw


def _run_create(ctx: Any, make: Callable[[], CommonWorld]) -> CommonWorld:
    mpi = mpi_world.load_mpi()
    try:
        return make()
    except mpi.Exception as err:
        raise ctx.error(f"MPI could not make the common world: {err}", blob=ctx.output_name(0)) from None


@defop("CloneCommonWorld", inputs=1, outputs=1, category=HOST, no_gradient_reason=_NO_GRAD, args=_CW_ARGS[-2:])
def clone_common_world(ctx, existing):
    """A new common world over the same ranks as ``existing`` (its own MPI communicator)."""
    _note_engine(ctx)
    base = _world(ctx, existing)
    return _run_create(ctx, lambda: mpi_world.create_world(ctx.op.name or ctx.output_name(0), base=base))


@defop("DestroyCommonWorld", inputs=1, outputs=1, enforce_inplace=[(0, 0)], inplace=[(0, 0)], category=HOST,
       no_gradient_reason=_NO_GRAD)
def destroy_common_world(ctx, cw):
    """Free the world's communicator; an empty blob or an already destroyed world is left as it is."""
    if isinstance(cw, CommonWorld):
        _complete_pending()
        mpi_world.destroy_world(cw)
    return cw


# --------------------------------------------------------------------------------------------
# Collectives
# --------------------------------------------------------------------------------------------
def _inplace_counts(n_in: int, n_out: int) -> str | None:
    return None if n_out == n_in - 1 else f"takes the common world and N tensors and writes the N tensors " \
                                          f"back in place (N outputs), got {n_in} inputs and {n_out} outputs"


def _enforce_shifted_inplace(ctx: Any) -> None:
    for i, out in enumerate(ctx.op.output):
        if ctx.op.input[i + 1] != out:
            raise ctx.error(f"output {i} ({out!r}) must be the same blob as input {i + 1} "
                            f"({ctx.op.input[i + 1]!r}): this collective works in place", blob=out)


@defop("Allreduce", inputs=(2, INF), outputs=(1, INF), inplace="all", check_counts=_inplace_counts,
       category=HOST, no_gradient_reason=_NO_GRAD, args=[arg("netjit_async", "bool", False)])
def allreduce(ctx, cw, *xs):
    """Sum over the inputs and the ranks, written into every input (in place).

    ``netjit_async=1`` (netjit's own argument; data_parallel_model sets it on all but the last of a
    run of gradient Allreduces) only starts the reduction: the next collective op completes it, so
    a group of Allreduces waits for the other ranks once instead of once per tensor."""
    _note_engine(ctx)
    _enforce_shifted_inplace(ctx)
    cw = _world(ctx, cw)
    ts = _tensors(ctx, xs)
    head = ts[0]
    for t in ts[1:]:
        np.add(head, t.reshape(head.shape), out=head)

    def finish() -> None:
        for t in ts[1:]:
            t.reshape(head.shape)[...] = head
    mpi = mpi_world.load_mpi()
    if cw.size > 1 and ctx.args.netjit_async:
        ran = _ran_before(ctx)
        request = _run(ctx, cw, _blob_list(ctx), lambda: cw.comm.Iallreduce(mpi.IN_PLACE, head, op=mpi.SUM),
                       arm=False)
        _PENDING.append((request, finish, ctx, cw, ran))
        return tuple(ts)
    _complete_pending()
    if cw.size > 1:
        _run(ctx, cw, _blob_list(ctx), lambda: cw.comm.Allreduce(mpi.IN_PLACE, head, op=mpi.SUM))
    finish()
    return tuple(ts)


@defop("Broadcast", inputs=(2, INF), outputs=(1, INF), inplace="all", check_counts=_inplace_counts,
       category=HOST, no_gradient_reason=_NO_GRAD, args=[arg("root", "int", 0)])
def broadcast(ctx, cw, *xs):
    """The root rank's first input, copied into every input of every rank (in place)."""
    _note_engine(ctx)
    _enforce_shifted_inplace(ctx)
    cw = _world(ctx, cw)
    root = ctx.args.root
    if not 0 <= root < cw.size:
        raise ctx.error(f"root={root} is not a rank of common world {cw.name!r} ({cw.size} ranks)")
    _complete_pending()
    ts = _tensors(ctx, xs, reducible=False)
    head = ts[0]
    if cw.size > 1:
        _run(ctx, cw, _blob_list(ctx), lambda: cw.comm.Bcast(head, root=root))
    for t in ts[1:]:
        t.reshape(head.shape)[...] = head
    return tuple(ts)


@defop("Allgather", inputs=(2, INF), outputs=1, category=HOST, no_gradient_reason=_NO_GRAD)
def allgather(ctx, cw, *xs):
    """Every rank's inputs, rank by rank and input by input, in one 1-D tensor of
    ``size * len(inputs) * numel`` elements (Caffe2's layout)."""
    _note_engine(ctx)
    cw = _world(ctx, cw)
    _complete_pending()
    ts = _tensors(ctx, xs, reducible=False, inplace=False)
    send = ts[0].reshape(-1) if len(ts) == 1 else np.concatenate([t.reshape(-1) for t in ts])
    out = np.empty(cw.size * send.size, send.dtype)
    if cw.size > 1:
        _run(ctx, cw, _blob_list(ctx), lambda: cw.comm.Allgather(send, out))
    else:
        out[...] = send
    return out


@defop("ReduceScatter", inputs=(3, INF), outputs=(2, INF), inplace="all", check_counts=_inplace_counts,
       category=HOST, no_gradient_reason=_NO_GRAD)
def reduce_scatter(ctx, cw, *rest):
    """Inputs: the world, tensors X..., and ``recv_counts`` (int, one count per rank). Every X gets
    this rank's ``recv_counts[rank]`` elements of the sum (over inputs and ranks) at this rank's offset."""
    _note_engine(ctx)
    _enforce_shifted_inplace(ctx)
    cw = _world(ctx, cw)
    _complete_pending()
    counts_in = rest[-1]
    ts = _tensors(ctx, rest[:-1])
    counts = np.asarray(counts_in).reshape(-1)
    head = ts[0].reshape(-1)
    if counts.size != cw.size or counts.dtype.kind not in "iu":
        raise ctx.error(f"recv_counts must hold {cw.size} integers (one per rank), got {counts.dtype}"
                        f"{list(counts.shape)}", blob=ctx.input_name(len(rest)))
    if counts.min() < 0 or counts.sum() != head.size:
        raise ctx.error(f"recv_counts {counts.tolist()} must be >= 0 and sum to the tensor's {head.size} elements",
                        blob=ctx.input_name(len(rest)))
    for t in ts[1:]:
        np.add(head, t.reshape(-1), out=head)
    start = int(counts[:cw.rank].sum())
    mine = int(counts[cw.rank])
    if cw.size > 1:
        mpi = mpi_world.load_mpi()
        part = np.empty(mine, head.dtype)
        _run(ctx, cw, _blob_list(ctx),
             lambda: cw.comm.Reduce_scatter(head, part, recvcounts=[int(c) for c in counts], op=mpi.SUM))
        head[start:start + mine] = part
    for t in ts[1:]:
        t.reshape(-1)[start:start + mine] = head[start:start + mine]
    return tuple(ts) + (counts_in,)


@defop("Barrier", inputs=1, outputs=0, category=HOST, no_gradient_reason=_NO_GRAD)
def barrier(ctx, cw):
    """Wait until every rank of the world reaches its Barrier."""
    _note_engine(ctx)
    cw = _world(ctx, cw)
    _complete_pending()
    if cw.size > 1:
        _run(ctx, cw, "barrier", cw.comm.Barrier)
    return ()
