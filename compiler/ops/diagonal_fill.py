"""DiagonalFill: a filler whose output is zero except for ``value`` on its main diagonal.

Shape and dtype follow ConstantFill's rules (``shape``/input/``extra_shape``/``input_as_shape``;
``dtype``, else a float ``value`` gives FLOAT and an int one INT64). The output needs at least 2
dims. As in Caffe2 the diagonal is every ``step``-th element of the flattened output, from 0:
``step = cols + 1`` for a matrix (so a tall matrix's diagonal wraps round: a 4x2 output gets ones at
(0,0), (1,1) and (3,0)), and ``1 + d + d² + ...`` for an n-cube of side d (other n-D shapes fail).

    >>> from netjit.compiler.ops.registry import lookup
    >>> lookup("DiagonalFill").schema.outputs
    (1, 1)
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from netjit.compiler.ops.common import DT, dtype_from_arg
from netjit.compiler.ops.fillers import FILLER_ARGS, constant_fill_type, run_shape, static_shape
from netjit.compiler.ops.gradients import no_gradient
from netjit.compiler.ops.registry import OPAQUE, Args, TensorType, arg, defop


def _dtype(args: Args) -> np.dtype:
    dtype, _ = constant_fill_type(args)
    if dtype == DT.STRING:
        raise ValueError("DiagonalFill does not support dtype STRING")
    return dtype_from_arg(dtype)


def diagonal_step(shape: Sequence[int]) -> int:
    """The stride between diagonal elements of the flattened output (see the module doc)."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"DiagonalFill needs an output of at least 2 dims, got shape {list(shape)}")
    if len(shape) == 2:
        return shape[1] + 1
    if len(set(shape)) != 1:
        raise ValueError(f"all dims of a DiagonalFill output with more than 2 dims must be equal, got {list(shape)}")
    return 1 + sum(math.prod(shape[:k + 1]) for k in range(len(shape) - 1))


def _infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    shape = static_shape("DiagonalFill", args, inputs[:1])
    diagonal_step(shape)
    return [TensorType(shape, _dtype(args))]


def _validate(args: Args) -> None:
    _dtype(args)


@defop("DiagonalFill", inputs=(0, 1), outputs=1, args=[*FILLER_ARGS, arg("value", "any"),
                                                      arg("dtype", "int", DT.FLOAT)],
       inplace=[(0, 0)], category=OPAQUE, infer=_infer, gradient=no_gradient, validate=_validate)
def diagonal_fill(ctx, *inputs):
    """Zeros with ``value`` (default 0) at every ``diagonal_step``-th flattened position."""
    try:
        dtype = _dtype(ctx.args)
        _, value = constant_fill_type(ctx.args)
        shape = run_shape(ctx, inputs)
        step = diagonal_step(shape)
    except ValueError as err:
        raise ctx.error(str(err), blob=ctx.output_name(0)) from None
    y = np.zeros(shape, dtype=dtype)
    y.reshape(-1)[::step] = value
    return y
