"""Ops that are elementwise over X with some inputs indexed by X's channel (SpatialBN in test mode,
PRelu). Their registry category is OPAQUE (SpatialBN's training mode reduces, PRelu's slope does
not follow the Add/Mul broadcast rules), so their record's ``per_channel`` entry (a ``PerChannel``,
given to ``defop(..., per_channel=...)``) is where the fuser learns how to render them as a
per-channel elementwise step, e.g. as a Conv epilogue.

``expr`` uses the registry's expression language: ``x0`` is X's element, ``x<i>`` for i in
``channel_inputs`` is input i's value at that element's channel (input i has shape [C], or [1] for a
shared PRelu slope), and numeric args appear by name::

    >>> info = per_channel_info("PRelu", {"order": "NCHW"})
    >>> info.expr, info.channel_inputs
    ('x0 if x0 > 0 else x1 * x0', (1,))
    >>> per_channel_info("SpatialBN", {"is_test": False}) is None   # training mode reduces
    True
    >>> channel_view("NCHW", (8, 16, 7, 7), 16)
    (1, 16, 1, 1)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from netjit.compiler.ops.registry import has_op, lookup


@dataclass(frozen=True)
class PerChannel:
    expr: str
    channel_inputs: tuple[int, ...]
    # Whether a given op instance is per-channel elementwise (SpatialBN: only with is_test=1).
    applies: Callable[[Mapping[str, Any]], bool] = lambda args: True


def per_channel_info(op_type: str, args: Mapping[str, Any]) -> PerChannel | None:
    """The op's per-channel elementwise form (its record's ``per_channel``) when this instance has
    one, else None."""
    if not has_op(op_type):
        return None
    info = lookup(op_type).per_channel
    return info if info is not None and info.applies(args) else None


def channel_axis(order: str | bytes, ndim: int) -> int:
    order = order.decode() if isinstance(order, bytes) else order
    if order not in ("NCHW", "NHWC"):
        raise ValueError(f"order {order!r} is not NCHW or NHWC")
    return 1 if order == "NCHW" else ndim - 1


def channel_view(order: str | bytes, x_shape: Sequence[int], size: int) -> tuple[int, ...]:
    """Shape that lays a [size] per-channel vector over X for numpy broadcasting (size C or 1)."""
    view = [1] * len(x_shape)
    if size != 1:
        view[channel_axis(order, len(x_shape))] = size
    return tuple(view)
