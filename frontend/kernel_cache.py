"""``netjit cache``: what the on-disk kernel cache holds, and trimming it.

Every generated kernel is one module ``nj_<key>.py`` in ``$NETJIT_CACHE_DIR/kernels`` (default
``~/.cache/netjit/kernels``) plus numba's machine code for it in ``__pycache__/nj_<key>.*``. Nothing
is evicted on its own: each new net shape or op pattern adds a kernel, so a long-lived machine
collects them. Removing any of them is always safe; the next process that needs a kernel writes and
compiles it again (a few seconds per kernel). Age is the newest file's modification time, that is
when the kernel or one of its specialisations was last compiled. The store ``netjit warmup`` fills
(``<sys.prefix>/share/netjit/kernels`` or ``$NETJIT_LIBRARY_DIR/kernels``) is separate: this command
leaves it alone; deleting that folder is safe too (``netjit warmup`` rebuilds it).

    netjit cache                       # count, size, age range
    netjit cache --older-than 30       # drop kernels not (re)compiled for 30 days
    netjit cache --max-size 200        # drop the oldest until at most 200 MB remain
    netjit cache --clear               # drop everything
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from netjit.compiler.codegen.modules import cache_dir

_DAY = 86400.0


@dataclass
class Kernel:
    key: str
    files: list[Path]
    size: int
    newest: float          # mtime of the most recently written file


def kernels(root: Path | None = None) -> list[Kernel]:
    """The cached kernels under ``root`` (the kernels folder), oldest first."""
    root = root or cache_dir()
    found: dict[str, list[Path]] = {}
    for path in root.glob("nj_*.py"):
        found.setdefault(path.stem, []).append(path)
    pycache = root / "__pycache__"
    if pycache.is_dir():
        for path in pycache.glob("nj_*"):
            found.setdefault(path.name.split(".", 1)[0], []).append(path)
    out = []
    for key, files in found.items():
        stats = [p.stat() for p in files if p.exists()]
        if stats:
            out.append(Kernel(key, files, sum(s.st_size for s in stats), max(s.st_mtime for s in stats)))
    return sorted(out, key=lambda k: k.newest)


def remove(items: list[Kernel]) -> tuple[int, int]:
    """Delete these kernels' files; returns (kernels removed, bytes freed). Files another process
    removed meanwhile are skipped."""
    count = freed = 0
    for kernel in items:
        for path in kernel.files:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
        count += 1
        freed += kernel.size
    return count, freed


def select(items: list[Kernel], older_than_days: float | None = None, max_bytes: int | None = None,
           now: float | None = None) -> list[Kernel]:
    """Which kernels a prune drops: those older than the age limit, then the oldest of the rest
    until the total size is at most ``max_bytes``."""
    now = time.time() if now is None else now
    drop = [k for k in items if older_than_days is not None and now - k.newest > older_than_days * _DAY]
    kept = [k for k in items if k not in drop]
    if max_bytes is not None:
        total = sum(k.size for k in kept)
        for k in kept:                      # oldest first
            if total <= max_bytes:
                break
            drop.append(k)
            total -= k.size
    return drop


def describe(items: list[Kernel], root: Path) -> str:
    if not items:
        return f"{root}: no cached kernels"
    size = sum(k.size for k in items)
    age = lambda t: (time.time() - t) / _DAY  # noqa: E731
    return (f"{root}: {len(items)} kernels, {size / 1e6:.1f} MB; newest {age(items[-1].newest):.1f} days old, "
            f"oldest {age(items[0].newest):.1f} days old")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clear", action="store_true", help="remove every cached kernel")
    parser.add_argument("--older-than", type=float, metavar="DAYS",
                        help="remove kernels last compiled more than DAYS days ago")
    parser.add_argument("--max-size", type=float, metavar="MB", help="then remove the oldest until at most MB remain")


def run(args: argparse.Namespace) -> int:
    root = cache_dir()
    items = kernels(root)
    print(describe(items, root))
    if args.clear:
        drop = items
    elif args.older_than is not None or args.max_size is not None:
        if (args.older_than is not None and args.older_than < 0) or (args.max_size is not None and args.max_size < 0):
            print("error: --older-than and --max-size take non-negative numbers")
            return 2
        drop = select(items, args.older_than, None if args.max_size is None else int(args.max_size * 1e6))
    else:
        return 0
    count, freed = remove(drop)
    print(f"removed {count} kernels ({freed / 1e6:.1f} MB); {len(items) - count} remain")
    return 0
