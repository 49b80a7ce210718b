"""Free: drop the contents of blobs (memonger.release_blobs_when_used inserts it after a blob's last
use). The blobs stay in the workspace holding an empty tensor of their dtype (shape [0]): the memory
is released, and a reader finds no data, as after Caffe2's Free.

    Free(["fc1", "relu1"], ["fc1", "relu1"])
"""
from __future__ import annotations

import numpy as np

from netjit.compiler.ops.gradients import no_gradient
from netjit.compiler.ops.registry import HOST, Args, TensorType, defop


def _free_counts(n_in: int, n_out: int) -> str | None:
    return None if n_in == n_out else f"takes as many inputs as outputs (in place), got {n_in} and {n_out}"


def _free_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    return [TensorType((0,), t.dtype) for t in inputs]


def _emptied(value):
    return np.empty((0,), value.dtype) if isinstance(value, np.ndarray) else np.empty((0,), np.float32)


@defop("Free", inputs=(1, 1 << 30), outputs=(1, 1 << 30), inplace="all", category=HOST, gradient=no_gradient,
       check_counts=_free_counts, infer=_free_infer)
def free(ctx, *blobs):
    """[X0, X1, ...] -> the same blobs, emptied (each written in place: output i is input i)."""
    for i in range(ctx.num_outputs):
        if ctx.input_name(i) != ctx.output_name(i):
            raise ctx.error(f"output {i} ({ctx.output_name(i)!r}) must be the same blob as input {i}",
                            blob=ctx.output_name(i))
    empty = tuple(_emptied(b) for b in blobs)
    return empty if len(empty) > 1 else empty[0]
