"""Row-wise similarity ops: DotProduct, L1Distance, CosineSimilarity and their gradients.

Each takes X and Y of equal shape and views them as N rows (dim 0; a 0-d input is one row) of
D = size / N values; the output is [N]. Gradients take ``[X, Y, dZ]`` and give ``[dX, dY]``, as
Caffe2's makers do.

    >>> from netjit.compiler.ops.registry import lookup
    >>> lookup("CosineSimilarity").category
    'reduce'
"""
from __future__ import annotations

from typing import Any

import numpy as np

from netjit.compiler.ops.gradients import simple_gradient
from netjit.compiler.ops.registry import OPAQUE, REDUCE, Args, TensorType, defop

# Caffe2 clamps squared norms at this before dividing (CosineSimilarity), and treats differences
# within it as zero (L1DistanceGradient).
EPS = 1e-12


def _rows(shape: tuple[int, ...], size: int) -> tuple[int, int]:
    n = shape[0] if shape else 1
    return n, (size // n if n else 0)


def _pair(ctx: Any, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray, int, int]:
    x, y = np.asarray(x), np.asarray(y)
    for i, a in enumerate((x, y)):
        if a.dtype.kind != "f":
            raise ctx.error(f"input {i} must be a floating-point tensor, got {a.dtype}", blob=ctx.input_name(i))
    if x.shape != y.shape:
        raise ctx.error(f"X {list(x.shape)} and Y {list(y.shape)} must have the same shape", blob=ctx.input_name(1))
    if y.dtype != x.dtype:
        raise ctx.error(f"X is {x.dtype} but Y is {y.dtype}", blob=ctx.input_name(1))
    n, d = _rows(x.shape, x.size)
    return x.reshape(n, d), y.reshape(n, d), n, d


def _row_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    x, y = inputs
    if tuple(x.shape) != tuple(y.shape):
        raise ValueError(f"X {tuple(x.shape)} and Y {tuple(y.shape)} must have the same shape")
    if np.dtype(x.dtype).kind != "f":
        raise ValueError(f"inputs must be floating-point, got {np.dtype(x.dtype)}")
    return [TensorType((x.shape[0] if x.shape else 1,), x.dtype)]


def _pair_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    return [inputs[0], inputs[1]]


def _dz(ctx: Any, dz: Any, n: int) -> np.ndarray:
    dz = np.asarray(dz)
    if dz.ndim != 1 or dz.shape[0] != n:
        raise ctx.error(f"the output gradient must have shape [{n}], got {list(dz.shape)}", blob=ctx.input_name(2))
    return dz.reshape(n, 1)


def _grad_pair(dx: np.ndarray, dy: np.ndarray, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    return dx.reshape(x.shape).astype(x.dtype, copy=False), dy.reshape(y.shape).astype(y.dtype, copy=False)


# --------------------------------------------------------------------------------------------
# DotProduct
# --------------------------------------------------------------------------------------------
@defop("DotProduct", inputs=2, outputs=1, category=REDUCE, infer=_row_infer,
       gradient=simple_gradient("DotProductGradient", ["I0", "I1", "GO0"], ["GI0", "GI1"]))
def dot_product(ctx, x, y):
    """Z[i] = Σ_j X[i, j]·Y[i, j]."""
    x2, y2, n, _ = _pair(ctx, x, y)
    return np.einsum("ij,ij->i", x2, y2).astype(x2.dtype, copy=False)


@defop("DotProductGradient", inputs=3, outputs=2, category=OPAQUE, infer=_pair_infer)
def dot_product_gradient(ctx, x, y, dz):
    """[X, Y, dZ] -> [dX = dZ[i]·Y, dY = dZ[i]·X]."""
    x2, y2, n, _ = _pair(ctx, x, y)
    dz2 = _dz(ctx, dz, n)
    return _grad_pair(dz2 * y2, dz2 * x2, x, y)


# --------------------------------------------------------------------------------------------
# L1Distance
# --------------------------------------------------------------------------------------------
@defop("L1Distance", inputs=2, outputs=1, category=REDUCE, infer=_row_infer,
       gradient=simple_gradient("L1DistanceGradient", ["I0", "I1", "GO0"], ["GI0", "GI1"]))
def l1_distance(ctx, x, y):
    """Z[i] = Σ_j |X[i, j] − Y[i, j]|."""
    x2, y2, n, _ = _pair(ctx, x, y)
    return np.abs(x2 - y2).sum(axis=1).astype(x2.dtype, copy=False)


@defop("L1DistanceGradient", inputs=3, outputs=2, category=OPAQUE, infer=_pair_infer)
def l1_distance_gradient(ctx, x, y, dz):
    """[X, Y, dZ] -> dX = dZ[i]·sign(X − Y) (0 where |X − Y| <= 1e-12), dY = −dX."""
    x2, y2, n, _ = _pair(ctx, x, y)
    dz2 = _dz(ctx, dz, n)
    diff = x2 - y2
    s = np.where(diff > EPS, 1, np.where(diff < -EPS, -1, 0)).astype(x2.dtype)
    dx = s * dz2
    return _grad_pair(dx, -dx, x, y)


# --------------------------------------------------------------------------------------------
# CosineSimilarity
# --------------------------------------------------------------------------------------------
def _norms(x2: np.ndarray, y2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    eps = x2.dtype.type(EPS)
    xx = np.maximum(np.einsum("ij,ij->i", x2, x2), eps)
    yy = np.maximum(np.einsum("ij,ij->i", y2, y2), eps)
    return xx, yy, np.einsum("ij,ij->i", x2, y2)


@defop("CosineSimilarity", inputs=2, outputs=1, category=REDUCE, infer=_row_infer,
       gradient=simple_gradient("CosineSimilarityGradient", ["I0", "I1", "GO0"], ["GI0", "GI1"]))
def cosine_similarity(ctx, x, y):
    """Z[i] = X[i]·Y[i] / sqrt(max(‖X[i]‖², 1e-12)·max(‖Y[i]‖², 1e-12))."""
    x2, y2, n, _ = _pair(ctx, x, y)
    xx, yy, xy = _norms(x2, y2)
    return (xy / np.sqrt(xx * yy)).astype(x2.dtype, copy=False)


@defop("CosineSimilarityGradient", inputs=3, outputs=2, category=OPAQUE, infer=_pair_infer)
def cosine_similarity_gradient(ctx, x, y, dz):
    """[X, Y, dZ] -> dX = dZ·(Y/(‖X‖‖Y‖) − (X·Y)·X/(‖X‖³‖Y‖)), and dY symmetrically (norms clamped
    as in the forward)."""
    x2, y2, n, _ = _pair(ctx, x, y)
    dz2 = _dz(ctx, dz, n)
    xx, yy, xy = _norms(x2, y2)
    xn, yn = np.sqrt(xx)[:, None], np.sqrt(yy)[:, None]
    xyn, xy = xn * yn, xy[:, None]
    dx = dz2 / xyn * y2 - dz2 * xy / (xn * xn * xyn) * x2
    dy = dz2 / xyn * x2 - dz2 * xy / (yn * yn * xyn) * y2
    return _grad_pair(dx, dy, x, y)
