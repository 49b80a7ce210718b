"""MNIST as the Caffe2 tutorials use it: IDX files -> a DB of TensorProtos records.

The tutorial DB (Caffe2's make_mnist_db) has one record per digit, key ``"%08d"`` (the index in
the DB), value a serialized TensorProtos ``[image, label]``: the image BYTE with dims [1, 28, 28]
(``channel_first``, as the tutorials build it; [28, 28, 1] otherwise) and its pixels in
``byte_data``, the label INT32 with no dims and one ``int32_data`` value. Reading it with
``TensorProtosDBInput(batch_size=B)`` gives uint8 [B, 1, 28, 28] and int32 [B].

Only the 10,000-digit MNIST *test* set is available offline here (../shared/data/mnist), so
:func:`make_mnist_dbs` splits it: the first ``n_train`` digits become the training DB, the rest
the test DB.

>>> paths = make_mnist_dbs("../shared/data/mnist", "/tmp/mnist")     # doctest: +SKIP
MNIST: ...
"""
from __future__ import annotations

import argparse
import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np

from netjit.proto import caffe2_pb2
from netjit.runtime.db import Mode, open_db

DT = caffe2_pb2.TensorProto
# IDX type codes -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
IMAGES_FILE = "t10k-images-idx3-ubyte.gz"
LABELS_FILE = "t10k-labels-idx1-ubyte.gz"
DEFAULT_MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (gzip-compressed or not) as a numpy array of its declared shape and type.

    >>> read_idx("../shared/data/mnist/t10k-labels-idx1-ubyte.gz")[:5]  # doctest: +SKIP
    array([7, 2, 1, 0, 4], dtype=uint8)
    """
    path = os.fspath(path)
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: damaged gzip data ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic {raw[:4].hex() or 'empty'})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header truncated")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(f"{path}: IDX header says {list(shape)} ({count * dtype.itemsize} data bytes), "
                         f"file has {len(raw) - header}")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def mnist_record(image: np.ndarray, label: int, channel_first: bool = True) -> bytes:
    """One tutorial DB value: TensorProtos [image BYTE, label INT32 scalar]."""
    rows, cols = image.shape
    protos = caffe2_pb2.TensorProtos()
    img = protos.protos.add()
    img.dims.extend([1, rows, cols] if channel_first else [rows, cols, 1])
    img.data_type = DT.BYTE
    img.byte_data = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    lab = protos.protos.add()
    lab.data_type = DT.INT32
    lab.int32_data.append(int(label))
    return protos.SerializeToString()


def _as_array(data: Any) -> np.ndarray:
    return read_idx(data) if isinstance(data, (str, os.PathLike)) else np.asarray(data)


def build_mnist_db(images: Any, labels: Any, out_path: str | os.PathLike, db_type: str = "lmdb",
                   start: int = 0, stop: int | None = None, channel_first: bool = True) -> int:
    """Write digits ``[start, stop)`` as a tutorial MNIST DB at ``out_path``; returns the count.

    ``images`` ([N, rows, cols] uint8) and ``labels`` ([N]) are arrays or IDX file paths. Keys are
    the index within the new DB (``00000000``, ...). The DB is replaced atomically.

    >>> build_mnist_db(np.zeros((3, 28, 28), np.uint8), [1, 2, 3], "/tmp/t.minidb", "minidb")
    3
    """
    images, labels = _as_array(images), _as_array(labels).reshape(-1)
    if images.ndim != 3:
        raise ValueError(f"images must be [N, rows, cols], got shape {list(images.shape)}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    stop = len(images) if stop is None else min(stop, len(images))
    if not 0 <= start <= stop:
        raise ValueError(f"bad range [{start}, {stop}) of {len(images)} digits")
    with open_db(out_path, db_type, Mode.NEW) as db:
        txn = db.new_transaction()
        for index, item in enumerate(range(start, stop)):
            txn.put(f"{index:08d}".encode(), mnist_record(images[item], int(labels[item]), channel_first))
        txn.commit()
    return stop - start


def make_mnist_dbs(mnist_dir: str | os.PathLike, out_dir: str | os.PathLike, n_train: int = 8000,
                   db_type: str = "lmdb", channel_first: bool = True) -> dict[str, str]:
    """Split the 10,000 real digits of the MNIST test set into a training DB (the first ``n_train``)
    and a test DB (the rest): the 60,000-digit MNIST training set is not available offline.

    Returns {"train": path, "test": path}; the DBs are named like the tutorial's
    (``mnist-train-nchw-lmdb``, ``mnist-test-nchw-lmdb``).
    """
    mnist_dir, out_dir = Path(mnist_dir), Path(out_dir)
    images, labels = read_idx(mnist_dir / IMAGES_FILE), read_idx(mnist_dir / LABELS_FILE)
    if not 0 < n_train < len(images):
        raise ValueError(f"n_train must be between 1 and {len(images) - 1}, got {n_train}")
    out_dir.mkdir(parents=True, exist_ok=True)
    order = "nchw" if channel_first else "nhwc"
    paths = {split: str(out_dir / f"mnist-{split}-{order}-{db_type.lower()}") for split in ("train", "test")}
    n_tr = build_mnist_db(images, labels, paths["train"], db_type, 0, n_train, channel_first)
    n_te = build_mnist_db(images, labels, paths["test"], db_type, n_train, None, channel_first)
    print(f"MNIST: only the {len(images)}-digit MNIST test set is available offline, so it is split: "
          f"digits 0..{n_train - 1} -> {paths['train']} ({n_tr} records, for training), digits "
          f"{n_train}..{len(images) - 1} -> {paths['test']} ({n_te} records, for testing)")
    return paths


# --------------------------------------------------------------------------------------------
# Command line: `netjit mnist-db --out DIR`
# --------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory for the train and test DBs")
    parser.add_argument("--mnist-dir", default=str(DEFAULT_MNIST_DIR),
                        help=f"directory with {IMAGES_FILE} and {LABELS_FILE} (default: %(default)s)")
    parser.add_argument("--n-train", type=int, default=8000,
                        help="how many of the 10,000 test digits become the training DB (default 8000)")
    parser.add_argument("--db-type", default="lmdb", choices=["lmdb", "minidb"])
    parser.add_argument("--nhwc", action="store_true", help="images [28,28,1] instead of [1,28,28]")


def run(args: argparse.Namespace) -> int:
    from netjit.cli import CommandError
    from netjit.runtime.db import DBError
    try:
        make_mnist_dbs(args.mnist_dir, args.out, args.n_train, args.db_type, channel_first=not args.nhwc)
    except (ValueError, DBError) as err:
        raise CommandError(str(err)) from err
    return 0


if __name__ == "__main__":
    from netjit.cli import main
    raise SystemExit(main(["mnist-db"] + __import__("sys").argv[1:]))
