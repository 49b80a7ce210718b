"""The MNIST tools: IDX reading, the tutorial DB record layout, the train/test split, the CLI."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from netjit import mnist_data
from netjit.proto import caffe2_pb2
from netjit.runtime.db import open_db
from tests.conftest import shared_path

DT = caffe2_pb2.TensorProto


def _records(path, db_type):
    with open_db(path, db_type, "read") as db:
        cur, out = db.new_cursor(), []
        while cur.valid():
            out.append((cur.key(), caffe2_pb2.TensorProtos.FromString(cur.value())))
            cur.next()
        return out


def test_read_idx_real_files():
    root = shared_path("data", "mnist")
    images = mnist_data.read_idx(root / mnist_data.IMAGES_FILE)
    labels = mnist_data.read_idx(root / mnist_data.LABELS_FILE)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]     # the MNIST test set's first digits
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_read_idx_hand_built(tmp_path):
    values = (np.arange(6).reshape(2, 3) - 3).astype(">i4")
    raw = bytes([0, 0, 0x0C, 2]) + struct.pack(">II", 2, 3) + values.tobytes()
    (tmp_path / "a.idx").write_bytes(raw)
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(raw))
    for name in ("a.idx", "a.idx.gz"):
        out = mnist_data.read_idx(tmp_path / name)
        assert out.dtype == np.int32 and out.tolist() == [[-3, -2, -1], [0, 1, 2]]
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        mnist_data.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(raw[:-2])
    with pytest.raises(ValueError, match="file has 22"):
        mnist_data.read_idx(tmp_path / "short")


@pytest.mark.parametrize("db_type", ["lmdb", "minidb"])
def test_build_mnist_db_record_layout(tmp_path, db_type):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    path = str(tmp_path / f"m.{db_type}")
    assert mnist_data.build_mnist_db(images, labels, path, db_type, start=1, stop=4) == 3
    records = _records(path, db_type)
    assert [k for k, _ in records] == [b"00000000", b"00000001", b"00000002"]
    for i, (_, protos) in enumerate(records):
        image, label = protos.protos
        assert image.data_type == DT.BYTE and list(image.dims) == [1, 28, 28]
        assert image.byte_data == images[i + 1].tobytes() and not image.int32_data
        assert label.data_type == DT.INT32 and list(label.dims) == [] and list(label.int32_data) == [labels[i + 1]]
    # The exact bytes Caffe2's make_mnist_db writes: dims, data_type, then the data field.
    first = records[0][1].protos[1].SerializeToString()
    assert first == bytes([0x10, 0x02, 0x22, 0x01, int(labels[1])])


def test_build_mnist_db_nhwc_and_errors(tmp_path):
    images = np.zeros((2, 28, 28), np.uint8)
    path = str(tmp_path / "nhwc.minidb")
    mnist_data.build_mnist_db(images, [0, 1], path, "minidb", channel_first=False)
    assert list(_records(path, "minidb")[0][1].protos[0].dims) == [28, 28, 1]
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        mnist_data.build_mnist_db(images, [0, 1, 2], path, "minidb")
    with pytest.raises(ValueError, match=r"bad range \[3, 2\)"):
        mnist_data.build_mnist_db(images, [0, 1], path, "minidb", start=3)


def test_make_mnist_dbs_splits_the_real_test_digits(tmp_path, capsys):
    root = shared_path("data", "mnist")
    paths = mnist_data.make_mnist_dbs(root, tmp_path / "dbs", n_train=8000, db_type="minidb")
    said = capsys.readouterr().out
    assert "test set" in said and "digits 0..7999" in said and "digits 8000..9999" in said
    assert paths == {"train": str(tmp_path / "dbs" / "mnist-train-nchw-minidb"),
                     "test": str(tmp_path / "dbs" / "mnist-test-nchw-minidb")}
    assert "first" in mnist_data.make_mnist_dbs.__doc__ and "test set" in mnist_data.make_mnist_dbs.__doc__
    images = mnist_data.read_idx(root / mnist_data.IMAGES_FILE)
    train, test = _records(paths["train"], "minidb"), _records(paths["test"], "minidb")
    assert len(train) == 8000 and len(test) == 2000
    assert test[0][0] == b"00000000" and test[0][1].protos[0].byte_data == images[8000].tobytes()
    assert train[-1][1].protos[0].byte_data == images[7999].tobytes()


def test_cli_mnist_db(tmp_path, capsys):
    from netjit.cli import main
    root = shared_path("data", "mnist")
    out = tmp_path / "cli"
    assert main(["mnist-db", "--out", str(out), "--mnist-dir", str(root), "--n-train", "9990",
                 "--db-type", "lmdb"]) == 0
    assert len(_records(str(out / "mnist-test-nchw-lmdb"), "lmdb")) == 10
    assert main(["mnist-db", "--out", str(out), "--mnist-dir", str(root), "--n-train", "0"]) == 1
    assert "n_train must be between" in capsys.readouterr().err
