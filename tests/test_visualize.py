"""visualize: image grids for NCHW/NHWC batches, written as PNGs without any GUI."""
from __future__ import annotations

import gzip
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="visualize needs matplotlib (the `plot` extra)")

from netjit.visualize import NCHW, NHWC, ChannelFirst, ChannelLast, PatchVisualizer  # noqa: E402
from tests.conftest import shared_path  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def mnist_digits(count: int) -> np.ndarray:
    """The first ``count`` real MNIST test digits as float32 NCHW in [0, 1]."""
    raw = gzip.decompress(shared_path("data", "mnist", "t10k-images-idx3-ubyte.gz").read_bytes())
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16, count=count * 28 * 28)
    return (pixels.reshape(count, 1, 28, 28) / 255.0).astype(np.float32)


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_channel_moves_are_inverse():
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert ChannelLast(x).shape == (2, 4, 5, 3) and ChannelFirst(ChannelLast(x)).tolist() == x.tolist()
    assert ChannelLast(x)[1, 2, 3, 0] == x[1, 0, 2, 3]


def test_nchw_show_multiple_writes_png(tmp_path):
    digits = mnist_digits(16)
    path = tmp_path / "digits.png"
    figure = NCHW.ShowMultiple(digits, path=path, title="MNIST")
    assert path.exists() and min(png_size(path)) > 100
    image = figure.axes[0].images[0].get_array()
    assert image.shape == (4 * 28 + 3, 4 * 28 + 3)            # 4x4 grid, 1-pixel gaps, gray squeezed
    np.testing.assert_array_equal(image[29:57, 0:28], digits[4, 0])  # second row, first column
    assert figure.axes[0].get_title() == "MNIST"
    assert "matplotlib.pyplot" not in sys.modules or not _pyplot_figures()


def _pyplot_figures() -> list:
    import matplotlib.pyplot as plt
    return plt.get_fignums()


def test_nhwc_rgb_grid_and_background(tmp_path):
    rgb = np.random.default_rng(0).uniform(-1, 3, size=(5, 6, 7, 3)).astype(np.float32)
    figure = NHWC.ShowMultiple(rgb, ncols=3, path=tmp_path / "rgb.png", bg_func=lambda a: -5.0)
    shown = figure.axes[0].images[0].get_array()
    assert shown.shape == (2 * 6 + 1, 3 * 7 + 2, 3)
    assert shown.min() >= 0.0 and shown.max() <= 1.0          # stretched into imshow's RGB range
    assert np.all(shown[7:, 16:] == 0.0)                       # empty sixth cell holds the background
    assert png_size(tmp_path / "rgb.png")[0] > 50


def test_grid_layout_and_flattened_patches():
    vis = PatchVisualizer(gap=2)
    flat = np.arange(3 * 16, dtype=np.float32).reshape(3, 16)  # three flattened 4x4 patches
    canvas = vis.grid(flat, bg_func=lambda a: -1)
    assert canvas.shape == (4 + 2 + 4, 4 + 2 + 4, 1)
    np.testing.assert_array_equal(canvas[6:, :4, 0], flat[2].reshape(4, 4))
    assert np.all(canvas[4:6, :, 0] == -1)
    with pytest.raises(ValueError, match="n\\*n"):
        vis.grid(np.zeros((2, 15)))
    with pytest.raises(ValueError, match="NCHW"):
        NCHW.ShowMultiple(np.zeros((28, 28)))


def test_show_single_images_and_channels(tmp_path):
    digits = mnist_digits(3)
    figure = NCHW.ShowSingle(digits[0], path=tmp_path / "one.png")
    assert figure.axes[0].images[0].get_array().shape == (28, 28) and (tmp_path / "one.png").exists()
    figures = NCHW.ShowImages(digits)
    assert len(figures) == 3
    feature_maps = np.random.default_rng(1).normal(size=(6, 5, 5))  # one CHW activation, 6 channels
    grid = NCHW.ShowChannels(feature_maps, path=tmp_path / "channels.svg")
    assert grid.axes[0].images[0].get_array().shape == (2 * 5 + 1, 3 * 5 + 2)  # 2 rows of 3
    assert (tmp_path / "channels.svg").read_text().lstrip().startswith("<?xml")
    uint8 = (digits * 255).astype(np.uint8)
    assert NCHW.ShowMultiple(uint8).axes[0].images[0].get_array().dtype == np.uint8
