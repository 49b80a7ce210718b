"""Ops the Caffe2 optimizers emit beyond training.py's: RmsProp and Ftrl updates, the iteration
counter's mutex pair (CreateMutex, AtomicIter), gradient clipping (LpNorm, ClipTensorByScaling) and
the float16 <-> float32 copies of multi-precision SGD (HalfToFloat, FloatToHalf).

    RmsProp(["w_grad", "w_ms", "w_mom", "ONE"], ["w_grad_o", "w_ms", "w_mom"], decay=0.9)
    MomentumSGDUpdate(["w_grad_o", "w_mom", "lr", "w"], ["w_grad_o", "w_mom", "w"])
    Ftrl(["w", "w_ftrl_nz", "w_grad"], ["w", "w_ftrl_nz"], alpha=0.01, beta=1e-4)
    LpNorm(["g"], ["g_l2"], p=2); Pow(["g_l2"], ["g_norm"], exponent=0.5)
    ClipTensorByScaling(["g", "g_norm"], ["g"], threshold=1.0)

Signs follow Caffe2: RmsProp adds ``lr·g/√(ε+ms')`` to the momentum (the optimizer feeds it lr = 1
and lets MomentumSGDUpdate subtract the scaled step); Ftrl computes the new weight outright.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from netjit.compiler.ops.gradients import no_gradient, simple_gradient
from netjit.compiler.ops.registry import ELEMWISE, HOST, OPAQUE, REDUCE, Args, Lowering, TensorType, arg, defop, lower
from netjit.compiler.ops.training import iter_op

_F32 = np.dtype(np.float32)
_F16 = np.dtype(np.float16)
_KERNELS = "netjit.compiler.codegen.optim_kernels"
_OPTIMIZER = "an optimizer update has no gradient"

# training.py's update ops get their compiled kernels here, next to the other optimizer kernels'
# records (training.py is shared with the LearningRate work).
lower("numba-cpu", "MomentumSGD", standalone=f"{_KERNELS}:momentum_sgd")
lower("numba-cpu", "MomentumSGDUpdate", standalone=f"{_KERNELS}:momentum_sgd_update")
lower("numba-cpu", "Adagrad", standalone=f"{_KERNELS}:adagrad")
lower("numba-cpu", "Adam", standalone=f"{_KERNELS}:adam")


def _float32(ctx: Any, values: dict[int, Any]) -> dict[int, np.ndarray]:
    """The inputs as float32 arrays (Caffe2 registered these ops for float only)."""
    out = {}
    for i, v in values.items():
        a = np.asarray(v)
        if a.dtype != _F32:
            raise ctx.error(f"input {i} must be a float32 tensor, got {a.dtype}", blob=ctx.input_name(i))
        out[i] = a
    return out


def _scalar(ctx: Any, value: Any, i: int) -> np.float32:
    a = np.asarray(value)
    if a.size != 1:
        raise ctx.error(f"input {i} must hold one element, got shape {list(a.shape)}", blob=ctx.input_name(i))
    return np.float32(a.reshape(-1)[0])


def _check_sizes(ctx: Any, arrays: dict[int, np.ndarray], first: int) -> None:
    n = arrays[first].size
    for i, a in arrays.items():
        if a.size != n:
            raise ctx.error(f"input {i} has {a.size} elements but input {first} has {n}", blob=ctx.input_name(i))
    if n == 0:
        raise ctx.error("the tensors to update are empty", blob=ctx.input_name(first))


def _inputs_at(*indices: int):
    def infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
        return [inputs[i] for i in indices]
    return infer


# --------------------------------------------------------------------------------------------
# RmsProp
# --------------------------------------------------------------------------------------------
@defop("RmsProp", inputs=4, outputs=3,
       args=[arg("decay", "float", 0.9), arg("momentum", "float", 0.0), arg("epsilon", "float", 1e-5)],
       inplace=[(0, 0), (1, 1), (2, 2)], category=OPAQUE, infer=_inputs_at(0, 1, 2),
       no_gradient_reason=_OPTIMIZER,
       lowering={"numba-cpu": Lowering(standalone=f"{_KERNELS}:rms_prop")})
def rms_prop(ctx, grad, mean_squares, mom, lr):
    """[grad, ms, mom, lr] -> [grad_o, ms', mom']: ms' = ms + (1 − decay)·(g² − ms),
    mom' = momentum·mom + lr·g/√(ε + ms'), grad_o = mom'."""
    a = _float32(ctx, {0: grad, 1: mean_squares, 2: mom})
    _check_sizes(ctx, a, 0)
    rate = _scalar(ctx, lr, 3)
    g = a[0].reshape(-1)
    keep = np.float32(1.0 - float(np.float32(ctx.args.decay)))
    ms = a[1].reshape(-1)
    new_ms = ms + keep * (g * g - ms)
    new_mom = a[2].reshape(-1) * np.float32(ctx.args.momentum) + rate * g / np.sqrt(np.float32(ctx.args.epsilon)
                                                                                    + new_ms)
    return new_mom.reshape(a[0].shape), new_ms.reshape(a[1].shape), new_mom.copy().reshape(a[2].shape)


# --------------------------------------------------------------------------------------------
# Ftrl
# --------------------------------------------------------------------------------------------
FTRL_ARGS = [arg("alpha", "float", 0.005), arg("beta", "float", 1.0), arg("lambda1", "float", 0.001),
             arg("lambda2", "float", 0.001)]


@defop("Ftrl", inputs=(3, 4), outputs=2, args=FTRL_ARGS, inplace=[(0, 0), (1, 1)], category=OPAQUE,
       infer=_inputs_at(0, 1), no_gradient_reason=_OPTIMIZER,
       lowering={"numba-cpu": Lowering(standalone=f"{_KERNELS}:ftrl")})
def ftrl(ctx, var, n_z, grad, *alpha):
    """[w, nz, g(, alpha)] -> [w', nz']: FTRL-proximal. ``nz`` holds (n, z) pairs per weight (shape
    [..., 2]); n' = n + g², σ = (√n' − √n)/α, z' = z + g − σ·w, and w' = (λ1·sign(z') − z') /
    ((β + √n')/α + λ2) where |z'| > λ1, else 0. A fourth input overrides ``alpha`` at run time."""
    a = _float32(ctx, {0: var, 1: n_z, 2: grad})
    w, nz, g = a[0].reshape(-1), a[1].reshape(-1), a[2].reshape(-1)
    if g.size != w.size:
        raise ctx.error(f"grad has {g.size} elements but the weights have {w.size}", blob=ctx.input_name(2))
    if nz.size != 2 * w.size:
        raise ctx.error(f"n_z must hold 2 values per weight ({2 * w.size}), got {nz.size}", blob=ctx.input_name(1))
    alpha = float(_scalar(ctx, alpha[0], 3)) if alpha else float(np.float32(ctx.args.alpha))
    alpha_inv = np.float32(1.0 / alpha)
    beta, l1, l2 = (np.float32(ctx.args[k]) for k in ("beta", "lambda1", "lambda2"))
    n, z = nz[0::2], nz[1::2]
    new_n = n + g * g
    sigma = (np.sqrt(new_n) - np.sqrt(n)) * alpha_inv
    new_z = z + g - sigma * w
    with np.errstate(divide="ignore", invalid="ignore"):
        solved = (l1 * np.sign(new_z) - new_z) / ((beta + np.sqrt(new_n)) * alpha_inv + l2)
    new_w = np.where(np.abs(new_z) > l1, solved, np.float32(0)).astype(_F32)
    out_nz = np.empty_like(nz)
    out_nz[0::2], out_nz[1::2] = new_n, new_z
    return new_w.reshape(a[0].shape), out_nz.reshape(a[1].shape)


# --------------------------------------------------------------------------------------------
# CreateMutex / AtomicIter: the optimizer's shared iteration counter
# --------------------------------------------------------------------------------------------
@defop("CreateMutex", inputs=0, outputs=1, category=HOST, gradient=no_gradient)
def create_mutex(ctx):
    """A mutex blob (a ``threading.Lock``) for AtomicIter."""
    return threading.Lock()


def _atomic_iter_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    return [inputs[1]]


@defop("AtomicIter", inputs=2, outputs=1, inplace=[(1, 0)], enforce_inplace=[(1, 0)], category=OPAQUE,
       infer=_atomic_iter_infer, gradient=no_gradient)
def atomic_iter(ctx, mutex, it):
    """[mutex, iter] -> [iter + 1], in place, holding the mutex while it counts (Iter's checks)."""
    if not hasattr(mutex, "acquire"):
        raise ctx.error(f"input 0 must be a mutex made by CreateMutex, got "
                        f"{'an empty blob' if mutex is None else type(mutex).__name__}", blob=ctx.input_name(0))
    with mutex:
        return iter_op.reference(_ShiftedCtx(ctx), it)


class _ShiftedCtx:
    """AtomicIter's context seen by Iter's reference: Iter's input 0 is AtomicIter's input 1."""

    def __init__(self, ctx: Any):
        self._ctx = ctx

    def input_name(self, i: int) -> str:
        return self._ctx.input_name(i + 1)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


# --------------------------------------------------------------------------------------------
# Gradient clipping: LpNorm and ClipTensorByScaling
# --------------------------------------------------------------------------------------------
LP_ARGS = [arg("p", "int", 2), arg("average", "bool", False)]


def _lp_validate(args: Args) -> None:
    if args.p not in (1, 2):
        raise ValueError(f"LpNorm supports p = 1 or 2, got p={args.p}")


@defop("LpNorm", inputs=1, outputs=1, args=LP_ARGS, category=REDUCE, validate=_lp_validate,
       infer=lambda args, inputs: [TensorType((1,), inputs[0].dtype)],
       gradient=simple_gradient("LpNormGradient", ["I0", "GO0"], ["GI0"]),
       lowering={"numba-cpu": Lowering(standalone=f"{_KERNELS}:lp_norm")})
def lp_norm(ctx, x):
    """[X] -> [n] of shape [1]: Σ|x| for p=1, Σx² for p=2 (no square root: Caffe2's optimizer takes
    it with Pow(exponent=0.5)); divided by X's size with average=1. Summed in float64."""
    x = np.asarray(x)
    if x.dtype != _F32:
        raise ctx.error(f"X must be a float32 tensor, got {x.dtype}", blob=ctx.input_name(0))
    v = x.astype(np.float64).reshape(-1)
    total = np.sum(np.abs(v)) if ctx.args.p == 1 else np.dot(v, v)
    if ctx.args.average:
        total = total / max(v.size, 1)
    return np.array([total], dtype=_F32)


@defop("LpNormGradient", inputs=2, outputs=1, args=LP_ARGS, category=OPAQUE, validate=_lp_validate,
       infer=lambda args, inputs: [inputs[0]],
       lowering={"numba-cpu": Lowering(standalone=f"{_KERNELS}:lp_norm_gradient")})
def lp_norm_gradient(ctx, x, d_norm):
    """[X, dn] -> dX: sign(x)·dn for p=1 (0 where |x| ≤ 1e-12), 2·x·dn for p=2; /size with average=1."""
    x = np.asarray(x)
    d = _scalar(ctx, d_norm, 1)
    if ctx.args.average:
        d = np.float32(d / np.float32(max(x.size, 1)))
    if ctx.args.p == 1:
        eps = np.float32(1e-12)
        return np.where(x > eps, d, np.where(x < -eps, -d, np.float32(0))).astype(x.dtype)
    return (np.float32(2) * x * d).astype(x.dtype)


@defop("ClipTensorByScaling", inputs=(2, 3), outputs=1, args=[arg("threshold", "float", required=True)],
       inplace=[(0, 0)], category=ELEMWISE, infer=_inputs_at(0), no_gradient_reason="clipping has no gradient",
       # A loop form rather than an expr: it applies only to float32 with one-element norms (the
       # reference's checks), so other instances run the reference and fail as it does.
       lowering={"numba-cpu": Lowering(loop=f"{_KERNELS}:clip_tensor_by_scaling_loop")})
def clip_tensor_by_scaling(ctx, x, val, *extra):
    """[X, val(, t)] -> X·(threshold/val) where val > threshold, else X; a third input multiplies the
    threshold (Caffe2's use_parameter_norm). ``val`` is a norm with one element."""
    x = np.asarray(x)
    if x.dtype != _F32:
        raise ctx.error(f"X must be a float32 tensor, got {x.dtype}", blob=ctx.input_name(0))
    norm = _scalar(ctx, val, 1)
    threshold = np.float32(ctx.args.threshold)
    if extra:
        threshold = np.float32(threshold * _scalar(ctx, extra[0], 2))
    if norm > threshold:
        return x * (threshold / norm)
    return x.copy()


# --------------------------------------------------------------------------------------------
# HalfToFloat / FloatToHalf (multi-precision SGD's master copies)
# --------------------------------------------------------------------------------------------
def _convert_infer(dtype: np.dtype):
    def infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
        return [TensorType(inputs[0].shape, dtype)]
    return infer


# OPAQUE, not ELEMWISE: float16 is no kernel dtype, so the references (numpy's IEEE half) run.
@defop("HalfToFloat", inputs=1, outputs=1, category=OPAQUE, infer=_convert_infer(_F32),
       gradient=simple_gradient("FloatToHalf", ["GO0"], ["GI0"]))
def half_to_float(ctx, x):
    """float16 -> float32, exactly."""
    x = np.asarray(x)
    if x.dtype != _F16:
        raise ctx.error(f"X must be a float16 tensor, got {x.dtype}", blob=ctx.input_name(0))
    return x.astype(_F32)


@defop("FloatToHalf", inputs=1, outputs=1, category=OPAQUE, infer=_convert_infer(_F16),
       gradient=simple_gradient("HalfToFloat", ["GO0"], ["GI0"]))
def float_to_half(ctx, x):
    """float32 -> float16, rounded to nearest even (values past 65504 become inf)."""
    x = np.asarray(x)
    if x.dtype != _F32:
        raise ctx.error(f"X must be a float32 tensor, got {x.dtype}", blob=ctx.input_name(0))
    with np.errstate(over="ignore"):
        return x.astype(_F16)
