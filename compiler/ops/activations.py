"""Pointwise activations and their gradients."""
from __future__ import annotations

import numpy as np

from netjit.compiler.ops.common import same_as
from netjit.compiler.ops.gradients import simple_gradient
from netjit.compiler.ops.registry import ELEMWISE, defop


@defop("Relu", inputs=1, outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=same_as(0),
       expr="max(x0, 0)", gradient=simple_gradient("ReluGradient", ["O0", "GO0"], ["GI0"]))
def relu(ctx, x):
    """Y = max(X, 0)."""
    return np.maximum(x, x.dtype.type(0))


@defop("ReluGradient", inputs=2, outputs=1, inplace=[(1, 0)], category=ELEMWISE, infer=same_as(1),
       expr="x1 if x0 > 0 else 0")
def relu_gradient(ctx, y, dy):
    """dX = dY where Y > 0, else 0 (reads the forward output, so it also works in place)."""
    return np.where(y > 0, dy, dy.dtype.type(0))
