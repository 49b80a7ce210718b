"""Fuzz netjit with mutated model files and random nets; print counts by outcome.

Every outcome must be a success or a netjit error (a ``RuntimeError`` subclass naming the net and
op): never a bare AssertionError, TypeError, UnicodeDecodeError, DecodeError, IndexError...; and a
random net that runs must give the same blobs compiled as through the reference executor.

    python examples/fuzz.py --count 500 --seed 1        # 500 mutated .pb files + 500 random nets

Sources: the real Caffe2-exported LeNet in ../shared/models/lenet_pytorch_export (when present;
its predict net, or a quarter of the time its init net) and small nets from the random-net
generator of tests/compiler/test_random_nets.py, serialized and mutated: as messages (a letter of a
name, ``strides`` -> ``stpides``; an argument's value; a dropped argument, input or op; a repeated
op) or as bytes (flips, small integers, insertions, deletions, truncation, NUL and non-UTF-8 bytes);
and random nets from that generator, half of them broken on purpose (a missing input, a wrong
dtype or shape, bad or out-of-range arguments, a 0-d feed, another op type). Each mutated file also goes through ``netjit show``,
which must list it or refuse it with a message. A quarter as many corrupted minidb/lmdb DBs are
read back with Load. Exit status 1 when any outcome is bad.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:            # the random-net generator lives in the test suite
    sys.path.insert(0, str(REPO))

from hypothesis import HealthCheck, given, seed as hyp_seed, settings, strategies as st  # noqa: E402

from netjit.compiler.runner import make_runner  # noqa: E402
from netjit.proto import caffe2_pb2  # noqa: E402
from netjit.proto.args import make_op  # noqa: E402
from netjit.runtime.errors import NetJitError, OpError  # noqa: E402
from netjit.runtime.workspace import REGISTRY, Workspace  # noqa: E402
from tests.compiler.test_random_nets import ATOL, RTOL, nets  # noqa: E402

LENET = REPO.parent / "shared" / "models" / "lenet_pytorch_export"
# Extra address space one case may take: a mutated size that would need more fails to allocate
# (MemoryError, reported as an OpError) instead of pushing a shared machine into swap.
CASE_MEMORY = 1 << 30
BREAK_RATE = 0.5          # the share of random nets broken on purpose


# ------------------------------------------------------------------------------------ outcomes
def classify(err: BaseException | None) -> str:
    """'ok', 'netjit:<class>' for an acceptable error, 'BAD:<class>: <message>' otherwise."""
    if err is None:
        return "ok"
    if isinstance(err, NetJitError) and isinstance(err, RuntimeError):
        if isinstance(err, OpError) and err.net is None and err.index is not None:
            return f"BAD:{type(err).__name__} without a net name: {err}"
        return f"netjit:{type(err).__name__}"
    return f"BAD:{type(err).__name__}: {str(err)[:200]}"


@contextlib.contextmanager
def memory_cap(extra: int = CASE_MEMORY) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * resource.getpagesize()
    except OSError:
        yield
        return
    cap = used + extra if hard == resource.RLIM_INFINITY else min(hard, used + extra)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _attempt(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        with memory_cap():
            return fn(), None
    except Exception as err:  # noqa: BLE001 - the point is to see what escapes
        return None, err


@contextlib.contextmanager
def _private_workspace(name: str) -> Iterator[Workspace]:
    saved = REGISTRY.current
    ws = Workspace(name)
    REGISTRY.current = ws
    try:
        yield ws
    finally:
        REGISTRY.current = saved


# ------------------------------------------------------------------------------- mutating bytes
def _edit_message(net: caffe2_pb2.NetDef, rng: random.Random) -> None:
    """One edit that keeps the bytes a valid NetDef: a letter of a name (``strides`` ->
    ``stpides``), an argument's value, a removed or repeated argument, input, output or op."""
    if not net.op:
        net.name = net.name[:-1]
        return
    op = net.op[rng.randrange(len(net.op))]
    kind = rng.randrange(7)
    if kind == 0:
        owners = [(op, "type")] + [(a, "name") for a in op.arg] + [(net, "name")]
        owner, field = rng.choice(owners)
        text = getattr(owner, field)
        if text:
            k = rng.randrange(len(text))
            setattr(owner, field, text[:k] + chr(rng.randrange(97, 123)) + text[k + 1:])
    elif kind == 1 and op.arg:
        a = op.arg[rng.randrange(len(op.arg))]
        if a.ints:
            a.ints[rng.randrange(len(a.ints))] = rng.randint(-2, 9)
        elif a.floats:
            a.floats[rng.randrange(len(a.floats))] = rng.choice([0.0, -1.0, float("nan"), float("inf")])
        elif a.HasField("f"):
            a.f = rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e30])
        else:
            a.i = rng.randint(-2, 9)
    elif kind == 2 and op.arg:
        del op.arg[rng.randrange(len(op.arg))]
    elif kind == 3 and op.input:
        del op.input[rng.randrange(len(op.input))]
    elif kind == 4 and op.output:
        blobs = [b for o in net.op for b in (*o.input, *o.output)]
        op.output[rng.randrange(len(op.output))] = rng.choice(blobs)
    elif kind == 5:
        net.op.add().CopyFrom(op)
    else:
        del net.op[rng.randrange(len(net.op))]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random edits: most of them on the message (it still parses, so the net gets
    into netjit), the rest on the bytes (flips, letters, small integers, insertions, deletions,
    truncation, a NUL or non-UTF-8 byte)."""
    if rng.random() < 0.6:
        net = caffe2_pb2.NetDef.FromString(data)
        for _ in range(rng.randint(1, 2)):
            _edit_message(net, rng)
        return net.SerializeToString()
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        if not buf:
            break
        i = rng.randrange(len(buf))
        kind = rng.choice([1, 1, 1, 2, 2, 2, 0, 3, 4, 5, 6])
        if kind == 0:                        # flip one bit
            buf[i] ^= 1 << rng.randrange(8)
        elif kind == 1:                      # change a letter (inside names: strides -> stpides)
            letters = [k for k, b in enumerate(buf) if 97 <= b <= 122]
            if letters:
                buf[rng.choice(letters)] = rng.randrange(97, 123)
        elif kind == 2:                      # a small integer where a small integer was
            small = [k for k, b in enumerate(buf) if b < 16]
            if small:
                buf[rng.choice(small)] = rng.randrange(16)
        elif kind == 3:
            buf.insert(i, rng.randrange(256))
        elif kind == 4:
            del buf[i]
        elif kind == 5:
            del buf[i:]
        else:                                # a non-UTF-8 or NUL byte somewhere
            buf[i] = rng.choice([0x00, 0xFF, 0xC3, 0x80])
    return bytes(buf)


def _small_nets(count: int) -> list[tuple[caffe2_pb2.NetDef, dict[str, np.ndarray]]]:
    """The first few nets of the random-net generator (fixed seed), to serialize and mutate."""
    found: list[tuple[caffe2_pb2.NetDef, dict[str, np.ndarray]]] = []

    @hyp_seed(7)
    @settings(max_examples=count, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(nets())
    def collect(case: Any) -> None:
        if len(found) < count:
            found.append(case)
    collect()
    return found


def fuzz_files(count: int, rng: random.Random, counts: Counter, bad: list[str],
               small_nets: int = 4) -> None:
    """``count`` mutated predict nets: half LeNet's (run through a Predictor with the real init
    net), half small generated nets (run with RunNetOnce on their feeds)."""
    from netjit import workspace
    sources: list[tuple[str, bytes, bytes | None, dict[str, np.ndarray]]] = []
    if (LENET / "predict_net.pb").exists():
        image = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
        sources.append(("lenet", (LENET / "predict_net.pb").read_bytes(),
                        (LENET / "init_net.pb").read_bytes(), {"1": image}))
    for k, (net, feeds) in enumerate(_small_nets(small_nets)):
        net.name = f"small{k}"
        sources.append((net.name, net.SerializeToString(), None, feeds))
    for i in range(count):
        name, data, init, feeds = sources[i % len(sources)]
        if init is not None and rng.random() < 0.25:     # the init net (weights) instead
            name, init, mutated = f"{name} init", mutate(init, rng), data
        else:
            mutated = mutate(data, rng)
        with _private_workspace(f"fuzz_file{i}"):
            if init is not None:
                def case(init: bytes = init, mutated: bytes = mutated) -> None:
                    predictor = workspace.Predictor(init, mutated)
                    predictor.run(feeds)
            else:
                def case() -> None:
                    for blob, value in feeds.items():
                        workspace.FeedBlob(blob, value)
                    workspace.RunNetOnce(mutated)
            _, err = _attempt(case)
        outcome = classify(err)
        counts[f"file/{outcome.split(':')[0] if outcome.startswith('BAD') else outcome}"] += 1
        if outcome.startswith("BAD"):
            bad.append(f"mutated {name} #{i}: {outcome} (bytes {mutated.hex()[:2000]})")
        shown = _show(mutated)
        counts[f"show/{shown.split(':')[0]}"] += 1
        if shown.startswith("BAD"):
            bad.append(f"netjit show of mutated {name} #{i}: {shown} (bytes {mutated.hex()[:2000]})")


def _show(data: bytes) -> str:
    """``netjit show`` on the bytes as a file: 'rc=0' (listed), 'rc=1' (refused with a message) or BAD."""
    from netjit.cli import main as cli_main
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "mutated.pb")
        with open(path, "wb") as handle:
            handle.write(data)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                return f"rc={cli_main(['show', path])}"
        except Exception as err:  # noqa: BLE001 - the point is to see what escapes
            return f"BAD:{type(err).__name__}: {str(err)[:200]}"


# ----------------------------------------------------------------------------------- DB files
def fuzz_dbs(count: int, rng: random.Random, counts: Counter, bad: list[str]) -> None:
    """``count`` corrupted DBs (minidb files, lmdb data.mdb) read back with Load."""
    from netjit import core, workspace
    blobs = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "i": np.arange(5, dtype=np.int64),
             "s": np.array([b"ab", b"c"], dtype=object)}
    with tempfile.TemporaryDirectory() as folder:
        originals = {}
        for db_type in ("minidb", "lmdb"):
            path = os.path.join(folder, f"saved.{db_type}")
            with _private_workspace("fuzz_db_save"):
                for name, value in blobs.items():
                    workspace.FeedBlob(name, value)
                workspace.RunOperatorOnce(core.CreateOperator("Save", sorted(blobs), [], db=path,
                                                              db_type=db_type, absolute_path=1))
            data_file = os.path.join(path, "data.mdb") if db_type == "lmdb" else path
            with open(data_file, "rb") as handle:
                originals[db_type] = (path, data_file, handle.read())
        for i in range(count):
            db_type = ("minidb", "lmdb")[i % 2]
            path, data_file, data = originals[db_type]
            buf = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                k = rng.randrange(len(buf))
                kind = rng.randrange(3) if db_type == "minidb" else 0   # lmdb: same size, pages intact
                if kind == 0:
                    buf[k] = rng.randrange(256)
                elif kind == 1:
                    del buf[k:]
                else:
                    buf.insert(k, rng.randrange(256))
            with open(data_file, "wb") as handle:
                handle.write(bytes(buf))

            def case(path: str = path, db_type: str = db_type) -> None:
                with _private_workspace(f"fuzz_db{i}"):
                    workspace.RunOperatorOnce(core.CreateOperator("Load", [], sorted(blobs), db=path,
                                                                  db_type=db_type, absolute_path=1))
                    workspace.RunOperatorOnce(core.CreateOperator("Load", [], [], db=path, db_type=db_type,
                                                                  absolute_path=1, load_all=1))
            _, err = _attempt(case)
            outcome = classify(err)
            counts[f"db/{outcome.split(':')[0] if outcome.startswith('BAD') else outcome}"] += 1
            if outcome.startswith("BAD"):
                bad.append(f"corrupted {db_type} #{i}: {outcome}")


# --------------------------------------------------------------------------------- random nets
_SWAPPABLE: list[str] = []


def _swappable_ops() -> list[str]:
    """Registered op types a broken net may switch to: deterministic ones (so both executors must
    agree) that run no host code (no files, no Python functions)."""
    if not _SWAPPABLE:
        from netjit.compiler.ops.registry import all_ops
        from netjit.compiler.passes.simplify import is_deterministic
        _SWAPPABLE.extend(sorted(t for t in all_ops() if is_deterministic(t)))
    return _SWAPPABLE


def _break(net: caffe2_pb2.NetDef, feeds: dict[str, np.ndarray], rng: random.Random) -> str:
    """Break a generated net on purpose; returns what was done."""
    op = net.op[rng.randrange(len(net.op))]
    kind = rng.randrange(8)
    if kind == 7:
        from netjit.compiler.ops.registry import lookup
        specs = lookup(op.type).schema.args
        if specs:
            spec = rng.choice(specs)
            value = rng.choice([rng.randint(-3, 5), 1 << 40, rng.choice([0.0, -1.5, float("nan")]), "NHWC", [2, -1]])
            del_args = [k for k, a in enumerate(op.arg) if a.name == spec.name]
            for k in reversed(del_args):
                del op.arg[k]
            op.arg.extend(make_op("Relu", [], [], **{spec.name: value}).arg)
            return f"{op.type} {spec.name}={value!r}"
    if kind == 6:
        op.type = rng.choice(_swappable_ops())
        return f"op type -> {op.type}"
    if kind == 0 and len(op.input) > 1:
        del op.input[-1]
        return "dropped an input"
    if kind == 1:
        op.input[0] = "no_such_blob"
        return "missing input blob"
    if kind == 2:
        key = rng.choice(sorted(feeds))
        feeds[key] = feeds[key].astype(rng.choice([np.float64, np.int32]))
        return f"{key} retyped"
    if kind == 3:
        key = rng.choice(sorted(feeds))
        shape = feeds[key].shape
        feeds[key] = np.zeros(shape[:-1] + (shape[-1] + 1,) if shape else (), np.float32)
        return f"{key} reshaped"
    if kind == 4:
        op.arg.extend(make_op("Relu", [], [], axis=rng.choice([7, -9]), scale=3, broadcast=1).arg)
        return "bad arguments"
    feeds[rng.choice(sorted(feeds))] = np.asarray(np.float32(1.5))
    return "a 0-d feed"


def _run(net: caffe2_pb2.NetDef, feeds: dict[str, np.ndarray], executor: str) -> tuple[Any, BaseException | None]:
    def case() -> dict[str, Any]:
        ws = Workspace(f"fuzz_{executor}")
        for k, v in feeds.items():
            ws.feed(k, v.copy())
        runner = make_runner(net, ws, executor)
        runner.run()
        runner.run()
        return dict(ws.blobs)
    return _attempt(case)


def _same(ref: dict[str, Any], got: dict[str, Any]) -> str | None:
    for name, want in ref.items():
        have = got.get(name)
        if isinstance(want, np.ndarray):
            if not isinstance(have, np.ndarray) or have.shape != want.shape or have.dtype != want.dtype:
                return f"{name}: {getattr(have, 'dtype', type(have).__name__)}{getattr(have, 'shape', '')} " \
                       f"vs reference {want.dtype}{want.shape}"
            if not np.allclose(have, want, rtol=RTOL, atol=ATOL, equal_nan=True):
                return f"{name}: values differ (max {np.nanmax(np.abs(have - want))})"
    return None


def fuzz_nets(count: int, seed: int, counts: Counter, bad: list[str]) -> None:
    """``count`` generated nets, half broken on purpose, each run by both executors."""

    @hyp_seed(seed)
    @settings(max_examples=count, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(nets(), st.integers(0, 2**31 - 1))
    def one(case: Any, case_seed: int) -> None:
        net, feeds = case
        net = caffe2_pb2.NetDef.FromString(net.SerializeToString())
        feeds = dict(feeds)
        rng = random.Random(case_seed)
        what = _break(net, feeds, rng) if rng.random() < BREAK_RATE else "intact"
        ref, ref_err = _run(net, feeds, "reference")
        got, got_err = _run(net, feeds, "compiled")
        for label, err in (("reference", ref_err), ("compiled", got_err)):
            outcome = classify(err)
            counts[f"net/{label}/{outcome.split(':')[0] if outcome.startswith('BAD') else outcome}"] += 1
            if outcome.startswith("BAD"):
                bad.append(f"net ({what}) {label}: {outcome}\n{net}")
        if (ref_err is None) != (got_err is None):
            counts["net/MISMATCH"] += 1
            bad.append(f"net ({what}): reference {classify(ref_err)} but compiled {classify(got_err)}\n{net}")
        elif ref_err is None:
            diff = _same(ref, got)
            if diff is not None:
                counts["net/MISMATCH"] += 1
                bad.append(f"net ({what}): compiled != reference: {diff}\n{net}")
    one()


def run(count: int, seed: int, nets_count: int | None = None, out: Any = sys.stdout) -> tuple[Counter, list[str]]:
    """Fuzz ``count`` mutated files and ``nets_count`` (default ``count``) random nets."""
    counts: Counter = Counter()
    bad: list[str] = []
    start = time.perf_counter()
    fuzz_files(count, random.Random(seed), counts, bad)
    fuzz_dbs(max(2, count // 4), random.Random(seed), counts, bad)
    fuzz_nets(count if nets_count is None else nets_count, seed, counts, bad)
    for key in sorted(counts):
        print(f"{counts[key]:6d}  {key}", file=out)
    print(f"{len(bad)} bad outcomes in {time.perf_counter() - start:.1f} s", file=out)
    return counts, bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="mutated files, and random nets (default 500)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    _, bad = run(args.count, args.seed)
    for line in bad[:20]:
        print("BAD", line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
