"""Small helpers shared by the tutorial scripts: where to write files, optional plotting, and where
the MNIST digits live. Nothing here is Caffe2 API; the tutorials themselves use only that.

Output files go to, in order of preference: the first command-line argument, the directory named by
the environment variable NETJIT_TUTORIAL_OUT, or a fresh temporary directory.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

OUT_ENV = "NETJIT_TUTORIAL_OUT"
MNIST_ENV = "NETJIT_MNIST_DIR"


def output_dir(argv: list[str] | None = None) -> Path:
    """The directory this run writes its files into (created if needed)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        path = Path(argv[0])
    elif os.environ.get(OUT_ENV):
        path = Path(os.environ[OUT_ENV])
    else:
        path = Path(tempfile.mkdtemp(prefix="netjit_tutorial_"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_plot(path: Path, draw: Callable[[Any], None]) -> Path | None:
    """Draw with matplotlib's Agg backend into a PNG (never a window); None when matplotlib is
    not installed. ``draw(pyplot)`` makes the figure."""
    try:
        import matplotlib
    except ImportError:
        print("(matplotlib is not installed: skipping the plot)")
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    plt.figure()
    try:
        draw(plt)
        plt.savefig(path)
    finally:
        plt.close("all")
    print(f"Saved plot: {path}")
    return path


def mnist_dir() -> Path | None:
    """The directory holding the MNIST IDX files (t10k-*.gz): $NETJIT_MNIST_DIR, else the shared
    data folder beside the repository checkout. None when neither exists."""
    candidates = []
    if os.environ.get(MNIST_ENV):
        candidates.append(Path(os.environ[MNIST_ENV]))
    repo = Path(__file__).resolve().parents[2]
    candidates.append(repo.parent / "shared" / "data" / "mnist")
    for path in candidates:
        if (path / "t10k-images-idx3-ubyte.gz").exists():
            return path
    return None
