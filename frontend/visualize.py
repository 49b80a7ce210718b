"""Showing image batches, filters and feature maps as grids, like Caffe2's ``visualize`` module.

``NCHW`` and ``NHWC`` hold the same helpers for the two memory orders: ``ShowSingle`` (one image),
``ShowMultiple`` (a batch as one grid), ``ShowImages`` (one figure per image) and ``ShowChannels``
(each channel of one image as a grayscale tile). Every helper returns a matplotlib ``Figure``
drawn on the Agg canvas (no window ever opens, pyplot's global state is untouched) and saves it
when given ``path``. In a notebook the returned figure displays itself.

>>> import numpy as np
>>> batch = np.random.rand(16, 1, 28, 28).astype(np.float32)  # e.g. MNIST digits, NCHW
>>> fig = NCHW.ShowMultiple(batch, path="digits.png")  # doctest: +SKIP
"""
from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from netjit.proto.io import atomic_write_bytes


def ChannelFirst(arr: np.ndarray) -> np.ndarray:
    """Move the channel axis from last to third-from-last: ``...HWC -> ...CHW``.

    >>> ChannelFirst(np.zeros((2, 5, 6, 3))).shape
    (2, 3, 5, 6)
    """
    arr = np.asarray(arr)
    return np.moveaxis(arr, -1, -3)


def ChannelLast(arr: np.ndarray) -> np.ndarray:
    """Move the channel axis from third-from-last to last: ``...CHW -> ...HWC``.

    >>> ChannelLast(np.zeros((2, 3, 5, 6))).shape
    (2, 5, 6, 3)
    """
    arr = np.asarray(arr)
    return np.moveaxis(arr, -3, -1)


def _as_hwc_batch(patches: np.ndarray) -> np.ndarray:
    # Accept [N,H,W], [N,H,W,1|3|4], or flattened [N, n*n] / [N, n*n*3] square patches.
    patches = np.asarray(patches)
    if patches.ndim == 2:
        size = patches.shape[1]
        for channels in (1, 3):
            side = math.isqrt(size // channels)
            if side * side * channels == size:
                return patches.reshape(len(patches), side, side, channels)
        raise ValueError(f"flattened patches of {size} values are neither n*n nor n*n*3")
    if patches.ndim == 3:
        return patches[..., np.newaxis]
    if patches.ndim == 4 and patches.shape[-1] in (1, 3, 4):
        return patches
    raise ValueError(f"expected patches shaped [N,H,W] or [N,H,W,C] with C in 1, 3, 4; got {patches.shape}")


def _scaled_rgb(canvas: np.ndarray) -> np.ndarray:
    # imshow needs RGB floats in [0, 1] (or uint8); stretch anything else to that range.
    if canvas.dtype == np.uint8:
        return canvas
    canvas = canvas.astype(np.float64)
    low, high = np.nanmin(canvas), np.nanmax(canvas)
    if low >= 0.0 and high <= 1.0:
        return canvas
    return (canvas - low) / (high - low) if high > low else np.zeros_like(canvas)


def _new_figure(figsize: tuple[float, float] | None, dpi: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize or (6.0, 6.0), dpi=dpi)
    FigureCanvasAgg(figure)  # binds the Agg canvas: rendering never goes through pyplot or a GUI
    return figure


def save_figure(figure: Any, path: str | os.PathLike, dpi: float | None = None) -> None:
    """Save ``figure`` to ``path`` (format from the extension, PNG when there is none), atomically."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


class PatchVisualizer:
    """Lays image patches (HWC) out on a grid with ``gap`` pixels between them."""

    def __init__(self, gap: int = 1) -> None:
        self.gap = gap

    def _show(self, image: np.ndarray, cmap: str | None, title: str | None, path: str | os.PathLike | None,
              figsize: tuple[float, float] | None, dpi: float) -> Any:
        figure = _new_figure(figsize, dpi)
        axes = figure.add_subplot()
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if image.ndim == 2:
            axes.imshow(image, cmap=cmap or "gray", interpolation="nearest")
        else:
            axes.imshow(_scaled_rgb(image), interpolation="nearest")
        axes.set_axis_off()
        if title:
            axes.set_title(title)
        if path is not None:
            save_figure(figure, path)
        return figure

    def ShowSingle(self, patch: np.ndarray, cmap: str | None = None, title: str | None = None,
                   path: str | os.PathLike | None = None, figsize: tuple[float, float] | None = None,
                   dpi: float = 100) -> Any:
        """One HWC (or HW) image as a figure."""
        return self._show(np.asarray(patch), cmap, title, path, figsize, dpi)

    def grid(self, patches: np.ndarray, ncols: int | None = None,
             bg_func: Callable[[np.ndarray], Any] = np.mean) -> np.ndarray:
        """The canvas array: patches row by row, ``ncols`` per row (about square by default),
        gaps and empty cells filled with ``bg_func(patches)``.

        >>> PatchVisualizer(gap=1).grid(np.ones((5, 2, 2)), ncols=3).shape
        (5, 8, 1)
        """
        batch = _as_hwc_batch(patches)
        count, height, width, channels = batch.shape
        if count == 0:
            raise ValueError("no patches to show")
        ncols = ncols or math.ceil(math.sqrt(count))
        nrows = math.ceil(count / ncols)
        gap = self.gap
        dtype = np.result_type(batch.dtype, np.float32) if batch.dtype != np.uint8 else np.uint8
        background = bg_func(batch)
        canvas = np.empty((nrows * height + (nrows - 1) * gap, ncols * width + (ncols - 1) * gap, channels),
                          dtype=dtype)
        canvas[...] = background
        for index in range(count):
            row, col = divmod(index, ncols)
            top, left = row * (height + gap), col * (width + gap)
            canvas[top:top + height, left:left + width] = batch[index]
        return canvas

    def ShowMultiple(self, patches: np.ndarray, ncols: int | None = None, cmap: str | None = None,
                     bg_func: Callable[[np.ndarray], Any] = np.mean, title: str | None = None,
                     path: str | os.PathLike | None = None, figsize: tuple[float, float] | None = None,
                     dpi: float = 100) -> Any:
        """A batch of HWC patches (or flattened square ones) as one grid figure."""
        return self._show(self.grid(patches, ncols, bg_func), cmap, title, path, figsize, dpi)

    def ShowImages(self, patches: np.ndarray, *args: Any, **kwargs: Any) -> list[Any]:
        """One figure per image; extra arguments go to :meth:`ShowSingle` (a ``path`` is not allowed)."""
        if kwargs.get("path") is not None:
            raise ValueError("ShowImages makes one figure per image; save them one by one")
        return [self.ShowSingle(patch, *args, **kwargs) for patch in _as_hwc_batch(patches)]

    def ShowChannels(self, patch: np.ndarray, cmap: str | None = None,
                     bg_func: Callable[[np.ndarray], Any] = np.mean, **kwargs: Any) -> Any:
        """Every channel of one HWC image as a grayscale tile of one grid."""
        patch = np.asarray(patch)
        if patch.ndim != 3:
            raise ValueError(f"expected one HWC image, got shape {patch.shape}")
        return self.ShowMultiple(np.moveaxis(patch, -1, 0), cmap=cmap, bg_func=bg_func, **kwargs)


_DEFAULT = PatchVisualizer()


class NHWC:
    """Helpers for channel-last data: images ``[H,W,C]``, batches ``[N,H,W,C]``.

    >>> NHWC.ShowMultiple(np.zeros((4, 8, 8, 3)), path="grid.png")  # doctest: +SKIP
    """

    @staticmethod
    def ShowSingle(image: np.ndarray, **kwargs: Any) -> Any:
        return _DEFAULT.ShowSingle(image, **kwargs)

    @staticmethod
    def ShowMultiple(data: np.ndarray, **kwargs: Any) -> Any:
        return _DEFAULT.ShowMultiple(data, **kwargs)

    @staticmethod
    def ShowImages(data: np.ndarray, **kwargs: Any) -> list[Any]:
        return _DEFAULT.ShowImages(data, **kwargs)

    @staticmethod
    def ShowChannels(image: np.ndarray, **kwargs: Any) -> Any:
        return _DEFAULT.ShowChannels(image, **kwargs)


def _require_ndim(data: np.ndarray, ndim: int, layout: str) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim != ndim:
        raise ValueError(f"expected {layout} data ({ndim} dims), got shape {data.shape}")
    return data


class NCHW:
    """Helpers for channel-first data (Caffe2's default): images ``[C,H,W]``, batches ``[N,C,H,W]``.

    >>> NCHW.ShowMultiple(np.zeros((16, 1, 28, 28)), path="digits.png")  # doctest: +SKIP
    """

    @staticmethod
    def ShowSingle(image: np.ndarray, **kwargs: Any) -> Any:
        return _DEFAULT.ShowSingle(ChannelLast(_require_ndim(image, 3, "CHW")), **kwargs)

    @staticmethod
    def ShowMultiple(data: np.ndarray, **kwargs: Any) -> Any:
        return _DEFAULT.ShowMultiple(ChannelLast(_require_ndim(data, 4, "NCHW")), **kwargs)

    @staticmethod
    def ShowImages(data: np.ndarray, **kwargs: Any) -> list[Any]:
        return _DEFAULT.ShowImages(ChannelLast(_require_ndim(data, 4, "NCHW")), **kwargs)

    @staticmethod
    def ShowChannels(image: np.ndarray, **kwargs: Any) -> Any:
        return _DEFAULT.ShowChannels(ChannelLast(_require_ndim(image, 3, "CHW")), **kwargs)
