"""Sliding-window helpers for the conv/pool references: pad, gather windows (im2col), scatter back.

Every helper works on channel-first arrays ``(N, C, *spatial)`` with any number of spatial dims, so
the references stay short: a conv is ``windows`` + one matmul, its input gradient is a matmul +
``scatter``. ``windows`` returns ``(N, C, *kernel, *out)``: element ``[n, c, k..., o...]`` is the
padded input at ``o*stride + k*dilation``.
"""
from __future__ import annotations

import numpy as np

from netjit.compiler.ops.convpool_args import Geometry


def padded_size(g: Geometry) -> tuple[int, ...]:
    """Spatial size of the padded input: big enough for every window (a SAME tail pad can be negative)."""
    return tuple(max(g.pad_head[d] + g.size[d] + max(g.pad_tail[d], 0),
                     (g.out[d] - 1) * g.stride[d] + g.dilation[d] * (g.kernel[d] - 1) + 1)
                 for d in range(len(g.size)))


def pad(x: np.ndarray, g: Geometry, fill: float = 0.0) -> np.ndarray:
    """x (N, C, *size) placed at the head pads inside a ``fill``-valued array of padded_size."""
    full = padded_size(g)
    out = np.full(x.shape[:2] + full, fill, dtype=x.dtype)
    out[interior(g)] = x
    return out


def interior(g: Geometry) -> tuple[slice, ...]:
    """Index of the unpadded input inside a padded array."""
    return (slice(None), slice(None)) + tuple(slice(h, h + s) for h, s in zip(g.pad_head, g.size))


def _tap(g: Geometry, offsets: tuple[int, ...]) -> tuple[slice, ...]:
    # The padded-input positions that kernel tap `offsets` reads, one per output position.
    return (slice(None), slice(None)) + tuple(
        slice(k * d, k * d + (o - 1) * s + 1, s)
        for k, d, s, o in zip(offsets, g.dilation, g.stride, g.out))


def windows(xp: np.ndarray, g: Geometry) -> np.ndarray:
    """Gather (N, C, *kernel, *out) from a padded input (im2col, unflattened)."""
    cols = np.empty(xp.shape[:2] + tuple(g.kernel) + tuple(g.out), dtype=xp.dtype)
    for offsets in np.ndindex(*g.kernel):
        cols[(slice(None), slice(None)) + offsets] = xp[_tap(g, offsets)]
    return cols


def scatter(cols: np.ndarray, g: Geometry) -> np.ndarray:
    """The adjoint of ``pad`` + ``windows``: sum (N, C, *kernel, *out) back onto (N, C, *size)."""
    acc = np.zeros(cols.shape[:2] + padded_size(g), dtype=cols.dtype)
    for offsets in np.ndindex(*g.kernel):
        # One tap's positions are distinct (stride >= 1), so an in-place add on the view is exact.
        acc[_tap(g, offsets)] += cols[(slice(None), slice(None)) + offsets]
    return acc[interior(g)].copy()


def to_channel_first(x: np.ndarray, channel_first: bool) -> np.ndarray:
    return x if channel_first else np.moveaxis(x, -1, 1)


def from_channel_first(x: np.ndarray, channel_first: bool) -> np.ndarray:
    return x if channel_first else np.ascontiguousarray(np.moveaxis(x, 1, -1))
