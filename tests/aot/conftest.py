"""Bundles built once per test session (each build is a child process that compiles kernels)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_path

LENET_BATCH = 100


@pytest.fixture(scope="session")
def lenet_files() -> tuple[Path, Path]:
    root = shared_path("models", "lenet_pytorch_export")
    return root / "init_net.pb", root / "predict_net.pb"


@pytest.fixture(scope="session")
def lenet_bundle(tmp_path_factory, lenet_files) -> Path:
    from netjit.compiler.aot import build_bundle
    out = tmp_path_factory.mktemp("aot") / "lenet"
    build_bundle(*lenet_files, {"1": (LENET_BATCH, 1, 28, 28)}, "lenet", out, progress=False)
    return out


@pytest.fixture(scope="session")
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    from netjit.mnist_data import read_idx
    root = shared_path("data", "mnist")
    images = read_idx(root / "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    labels = read_idx(root / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return images[:, None], labels
