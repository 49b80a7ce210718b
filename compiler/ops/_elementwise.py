"""Shared pieces of the elementwise op modules (activations, arith, unary): dtype checks that fail
like Caffe2's typed kernels (naming the blob), scalar constants in the input's dtype, and
inference rules. Private: not an op module, so the registry loader skips it."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from netjit.compiler.ops.registry import Args, TensorType

FLOAT_KINDS = "f"
NUMERIC_KINDS = "iuf"


def require_kind(ctx: Any, x: Any, i: int, kinds: str, what: str) -> np.ndarray:
    """Return input ``i`` as an array, or raise an OpError naming its blob when its dtype is not
    one of ``kinds`` (numpy dtype kind letters)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in kinds:
        raise ctx.error(f"input {i} must be a {what} tensor, got dtype {arr.dtype}", blob=ctx.input_name(i))
    return arr


def require_float(ctx: Any, x: Any, i: int = 0) -> np.ndarray:
    return require_kind(ctx, x, i, FLOAT_KINDS, "floating-point")


def require_numeric(ctx: Any, x: Any, i: int = 0) -> np.ndarray:
    return require_kind(ctx, x, i, NUMERIC_KINDS, "numeric (int or float)")


def infer_kind(kinds: str, what: str, i: int = 0) -> Callable[[Args, list[TensorType]], list[TensorType]]:
    """Inference rule: output like input ``i``, which must have one of the dtype ``kinds``."""
    def infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
        t = inputs[i]
        if np.dtype(t.dtype).kind not in kinds:
            raise ValueError(f"input {i} must be a {what} tensor, got dtype {np.dtype(t.dtype)}")
        return [t]
    return infer


infer_float = infer_kind(FLOAT_KINDS, "floating-point")
infer_numeric = infer_kind(NUMERIC_KINDS, "numeric (int or float)")


def const(x: np.ndarray, value: float) -> Any:
    """``value`` as a scalar of x's dtype, so float32 math stays float32 (no Python-float promotion)."""
    return x.dtype.type(value)


def out(value: Any, dtype: np.dtype) -> np.ndarray:
    """An ndarray (never a numpy scalar, which 0-d math returns) of exactly ``dtype``."""
    return np.asarray(value).astype(dtype, copy=False)
