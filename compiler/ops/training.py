"""Training ops: the iteration counter, learning-rate schedules, WeightedSum (the plain SGD step
``param = 1·param + lr·grad`` with a negative lr) and the optimizer update ops.

A typical SGD loop, as the Caffe2 tutorials build it::

    Iter(["ITER"], ["ITER"])                                        # int64 [1], +1 per run
    LearningRate(["ITER"], ["LR"], base_lr=-0.1, policy="step", stepsize=1, gamma=0.999)
    WeightedSum(["w", "ONE", "w_grad", "LR"], ["w"])                # w += LR·w_grad

The optimizer ops follow Caffe2's sign conventions: MomentumSGDUpdate subtracts (it takes a positive
lr); Adagrad and Adam add (Caffe2's optimizer passes them a negative lr).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from netjit.compiler.ops.gradients import GradientContext, no_gradient
from netjit.compiler.ops.registry import INF, OPAQUE, Args, Lowering, TensorType, arg, defop

_I64 = np.dtype(np.int64)
_F32 = np.dtype(np.float32)
# Counter dtypes accepted: int64 (what Iter writes), and int32, which Caffe2 scripts made with
# ConstantFill(..., dtype=INT32) and Caffe2 accepted (its Iter turns the counter into int64).
_ITER_DTYPES = (np.dtype(np.int64), np.dtype(np.int32))


def read_iter(ctx: Any, value: Any, i: int) -> int:
    """The iteration number in an int64 (or int32) iter blob (a CPU tensor with one element)."""
    if not isinstance(value, np.ndarray) or value.dtype not in _ITER_DTYPES or value.size != 1:
        what = (f"a {value.dtype} tensor of shape {list(value.shape)}" if isinstance(value, np.ndarray)
                else type(value).__name__)
        raise ctx.error(f"the iteration blob must be an int64 tensor with one element (or int32), got {what}",
                        blob=ctx.input_name(i))
    return int(value.reshape(-1)[0])


# --------------------------------------------------------------------------------------------
# Iter
# --------------------------------------------------------------------------------------------
def _iter_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    return [TensorType(tuple(inputs[0].shape), _I64)] if inputs else [TensorType((1,), _I64)]


@defop("Iter", inputs=(0, 1), outputs=1, inplace=[(0, 0)], enforce_inplace=[(0, 0)], category=OPAQUE,
       infer=_iter_infer, gradient=no_gradient)
def iter_op(ctx, *inputs):
    """iter + 1 on an int64 [1] counter (in place; an int32 counter comes back as int64, as in
    Caffe2). The legacy 0-input form reads its own output blob from the workspace and starts from
    0 when that blob holds no tensor yet (first run gives 1)."""
    if inputs:
        current, blob_index = inputs[0], 0
    else:
        name = ctx.output_name(0)
        current = ctx.ws.get(name) if ctx.ws is not None and ctx.ws.has(name) else None
        if not isinstance(current, np.ndarray):
            current = np.zeros(1, np.int64)
        blob_index = None
    if not isinstance(current, np.ndarray) or current.dtype not in _ITER_DTYPES or current.size != 1:
        what = (f"a {current.dtype} tensor of shape {list(current.shape)}" if isinstance(current, np.ndarray)
                else "no tensor")
        raise ctx.error(f"the iteration counter must be an int64 tensor with one element (initialise it "
                        f"with ConstantFill(shape=[1], value=0, dtype=INT64)), got {what}",
                        blob=ctx.input_name(blob_index) if blob_index is not None else ctx.output_name(0))
    value = int(current.reshape(-1)[0])
    if value < 0:
        raise ctx.error(f"the previous iteration number is negative ({value})", blob=ctx.output_name(0))
    if value == np.iinfo(np.int64).max:
        raise ctx.error("the iteration counter would overflow", blob=ctx.output_name(0))
    return current.astype(np.int64) + np.int64(1)


# --------------------------------------------------------------------------------------------
# LearningRate
# --------------------------------------------------------------------------------------------
LR_ARGS = [
    arg("base_lr", "float", required=True), arg("policy", "str", required=True),
    arg("gamma", "float", 0.0), arg("power", "float", 0.0), arg("stepsize", "int", 0),
    arg("max_iter", "int", -1), arg("start_multiplier", "float", 0.0), arg("num_iter", "int", 0),
    arg("multiplier", "float", 0.5), arg("end_multiplier", "float", 0.0),
    arg("active_first", "bool", True), arg("active_period", "int", -1), arg("inactive_period", "int", -1),
]

_f32 = np.float32


def _inv(gamma: float, power: float, it: int) -> np.float32:
    return np.power(_f32(1) + _f32(gamma) * _f32(it), -_f32(power))


def _linear_warmup(start: float, n: int, it: int) -> np.float32:
    if it >= n:
        return _f32(1)
    # Caffe2 mixes a double literal in here, so this one step runs in double precision.
    return _f32(float(_f32(start)) + (1.0 - float(_f32(start))) * float(_f32(it)) / float(_f32(n)))


def _alter(args: Args, it: int) -> np.float32:
    active, inactive = args.active_period, args.inactive_period
    if active < 0 or inactive < 0 or active + inactive == 0:
        raise ValueError(f"policy 'alter' needs active_period >= 0 and inactive_period >= 0, not both 0 "
                         f"(got {active} and {inactive})")
    first = active if args.active_first else inactive
    inside = it % (active + inactive) < first
    return _f32(1.0 if inside == args.active_first else 0.0)


def _step(args: Args, it: int) -> np.float32:
    if args.stepsize <= 0:
        raise ValueError(f"policy 'step' needs stepsize > 0, got {args.stepsize}")
    return np.power(_f32(args.gamma), _f32(it // args.stepsize))


def _poly(args: Args, it: int) -> np.float32:
    # Caffe2 keeps max_iter unsigned, so the default -1 means 2**64 - 1 (a multiplier of ~1).
    max_iter = args.max_iter if args.max_iter >= 0 else args.max_iter + 2**64
    return np.power(_f32(1) - _f32(it) / _f32(max_iter), _f32(args.power))


def _hill(args: Args, it: int) -> np.float32:
    if it < args.num_iter:
        return _linear_warmup(args.start_multiplier, args.num_iter, it)
    return max(_f32(args.end_multiplier), _inv(args.gamma, args.power, it - args.num_iter))


LR_POLICIES: dict[str, Callable[[Args, int], np.float32]] = {
    "fixed": lambda a, it: _f32(1),
    "step": _step,
    "exp": lambda a, it: np.power(_f32(a.gamma), _f32(it)),
    "inv": lambda a, it: _inv(a.gamma, a.power, it),
    "poly": _poly,
    "linearWarmup": lambda a, it: _linear_warmup(a.start_multiplier, a.num_iter, it),
    "constantWarmup": lambda a, it: _f32(1) if it >= a.num_iter else _f32(a.multiplier),
    "alter": _alter,
    "hill": _hill,
}


def learning_rate_value(args: Args, it: int) -> np.float32:
    """base_lr · f(iter) in float32 for one of LR_POLICIES; ValueError for an unknown policy."""
    policy = LR_POLICIES.get(args.policy)
    if policy is None:
        raise ValueError(f"unknown learning rate policy {args.policy!r}; known: {', '.join(LR_POLICIES)}")
    return _f32(args.base_lr) * _f32(policy(args, it))


def _lr_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    if args.policy not in LR_POLICIES:
        raise ValueError(f"unknown learning rate policy {args.policy!r}")
    return [TensorType((), _F32)]


def _lr_validate(args: Args) -> None:
    # The schedule's own argument checks run on a probe iteration (they do not depend on it).
    with np.errstate(all="ignore"):
        learning_rate_value(args, 0)


@defop("LearningRate", inputs=1, outputs=1, args=LR_ARGS, category=OPAQUE, infer=_lr_infer,
       gradient=no_gradient, validate=_lr_validate)
def learning_rate(ctx, it):
    """A 0-d float32 tensor: base_lr · f(iter) for the schedule named by ``policy``."""
    step = read_iter(ctx, it, 0)
    try:
        value = learning_rate_value(ctx.args, step)
    except ValueError as err:
        raise ctx.error(str(err), blob=ctx.output_name(0)) from None
    return np.asarray(value, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# WeightedSum
# --------------------------------------------------------------------------------------------
def _weight(ctx: Any, w: Any, i: int) -> Any:
    w = np.asarray(w)
    if w.size != 1:
        raise ctx.error(f"weight input {i} must hold one element, got shape {list(w.shape)}",
                        blob=ctx.input_name(i))
    return w.reshape(-1)[0]


def _ws_counts(n_in: int, n_out: int) -> str | None:
    return None if n_in > 0 and n_in % 2 == 0 else f"takes pairs X0, w0, X1, w1, ... (an even count), got {n_in}"


def _ws_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    return [inputs[0]]


def _ws_gradient(g: GradientContext) -> tuple[list, list]:
    grad_on_w = bool(g.args.get("grad_on_w", False))
    inputs, outputs = [g.GO(0)], []
    for i in range(0, g.n_inputs, 2):
        inputs += [g.I(i), g.I(i + 1)]
        outputs.append(g.GI(i))
    if grad_on_w:
        outputs += [g.GI(i + 1) for i in range(0, g.n_inputs, 2)]
    g_input: list[str | None] = [None] * g.n_inputs
    for i in range(0, g.n_inputs, 2):
        g_input[i] = g.GI(i)
        if grad_on_w:
            g_input[i + 1] = g.GI(i + 1)
    return [g.make("WeightedSumGradient", inputs, outputs)], g_input


@defop("WeightedSum", inputs=(2, INF), outputs=1, args=[arg("grad_on_w", "bool", False)], inplace=[(0, 0)],
       category=OPAQUE, infer=_ws_infer, gradient=_ws_gradient, check_counts=_ws_counts,
       # Elementwise when every weight holds one element and every X has X0's size (SGD's update).
       lowering={"numba-cpu": Lowering(loop="netjit.compiler.codegen.elementwise:weighted_sum_loop")})
def weighted_sum(ctx, *inputs):
    """Y = Σ w_i·X_i over pairs (X_i, w_i); each w_i holds one element, each X_i has X0's size."""
    x0 = np.asarray(inputs[0])
    if x0.size == 0:
        raise ctx.error("X0 must not be empty", blob=ctx.input_name(0))
    y = np.zeros(x0.shape, dtype=x0.dtype)
    for i in range(0, len(inputs), 2):
        x = np.asarray(inputs[i])
        if x.size != x0.size:
            raise ctx.error(f"X{i // 2} has {x.size} elements but X0 has {x0.size}", blob=ctx.input_name(i))
        y += x.reshape(x0.shape) * _weight(ctx, inputs[i + 1], i + 1)
    return y


def _wsg_counts(n_in: int, n_out: int) -> str | None:
    if n_in < 3 or n_in % 2 == 0:
        return f"takes dY then pairs X_i, w_i (an odd count >= 3), got {n_in}"
    pairs = n_in // 2
    return None if n_out in (pairs, 2 * pairs) else f"produces {pairs} or {2 * pairs} outputs, got {n_out}"


def _wsg_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    pairs = len(inputs) // 2
    out = [inputs[0]] * pairs
    if args.grad_on_w:
        out += [TensorType((1,), inputs[2 * k + 2].dtype) for k in range(pairs)]
    return out


@defop("WeightedSumGradient", inputs=(3, INF), outputs=(1, INF), args=[arg("grad_on_w", "bool", False)],
       category=OPAQUE, infer=_wsg_infer, check_counts=_wsg_counts)
def weighted_sum_gradient(ctx, dy, *pairs):
    """[dY, X0, w0, X1, w1, ...] -> [dX0, dX1, ...] (dX_i = w_i·dY, shaped like dY), then with
    grad_on_w=1 also [dw0, dw1, ...] (dw_i = <dY, X_i>, shape [1])."""
    n = len(pairs) // 2
    if ctx.num_outputs != (2 * n if ctx.args.grad_on_w else n):
        raise ctx.error(f"with grad_on_w={int(ctx.args.grad_on_w)} this op produces "
                        f"{2 * n if ctx.args.grad_on_w else n} outputs, got {ctx.num_outputs}")
    dy = np.asarray(dy)
    weights = [_weight(ctx, pairs[2 * k + 1], 2 * k + 2) for k in range(n)]
    outs: list[np.ndarray] = [(dy * w).astype(dy.dtype, copy=False) for w in weights]
    if ctx.args.grad_on_w:
        for k in range(n):
            x = np.asarray(pairs[2 * k])
            if x.size != dy.size:
                raise ctx.error(f"X{k} has {x.size} elements but dY has {dy.size}", blob=ctx.input_name(2 * k + 1))
            w_dtype = np.asarray(pairs[2 * k + 1]).dtype
            outs.append(np.array([np.dot(dy.reshape(-1), x.reshape(-1))], dtype=w_dtype))
    return outs


# --------------------------------------------------------------------------------------------
# Optimizer updates
# --------------------------------------------------------------------------------------------
def _same_size(ctx: Any, arrays: dict[int, Any]) -> None:
    sizes = {i: np.size(a) for i, a in arrays.items()}
    first = next(iter(sizes))
    for i, size in sizes.items():
        if size != sizes[first]:
            raise ctx.error(f"input {i} has {size} elements but input {first} has {sizes[first]}",
                            blob=ctx.input_name(i))
    if sizes[first] == 0:
        raise ctx.error("the tensors to update are empty", blob=ctx.input_name(first))


def _shapes_of(*indices: int) -> Callable[[Args, list[TensorType]], list[TensorType]]:
    def infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
        return [inputs[i] for i in indices]
    return infer


def _momentum_step(ctx, grad, moment, lr):
    rate = _weight(ctx, lr, 2)
    mu = ctx.args.momentum
    g = np.asarray(grad)
    m = np.asarray(moment).reshape(g.shape)
    if not ctx.args.nesterov:
        new_m = rate * g + mu * m
        new_g = new_m
    else:
        new_m = mu * m + rate * g
        new_g = (1 + mu) * new_m - mu * m
    return new_g.astype(g.dtype, copy=False), new_m.astype(np.asarray(moment).dtype, copy=False).reshape(np.shape(moment))


MOMENTUM_ARGS = [arg("momentum", "float", 0.0), arg("nesterov", "bool", False)]
_OPTIMIZER = "an optimizer update has no gradient"


@defop("MomentumSGD", inputs=3, outputs=2, args=MOMENTUM_ARGS, inplace=[(0, 0), (1, 1)], category=OPAQUE,
       infer=_shapes_of(0, 1), no_gradient_reason=_OPTIMIZER)
def momentum_sgd(ctx, grad, moment, lr):
    """[grad, moment, lr] -> [adjusted grad, moment]: m' = lr·g + μ·m and g' = m'; with nesterov=1,
    m' = μ·m + lr·g and g' = (1+μ)·m' − μ·m."""
    _same_size(ctx, {0: grad, 1: moment})
    return _momentum_step(ctx, grad, moment, lr)


@defop("MomentumSGDUpdate", inputs=4, outputs=3, args=MOMENTUM_ARGS, inplace=[(0, 0), (1, 1), (3, 2)],
       category=OPAQUE, infer=_shapes_of(0, 1, 3), no_gradient_reason=_OPTIMIZER)
def momentum_sgd_update(ctx, grad, moment, lr, param):
    """[grad, moment, lr, param] -> [grad', moment', param − grad'] (MomentumSGD plus the step)."""
    _same_size(ctx, {0: grad, 1: moment, 3: param})
    new_g, new_m = _momentum_step(ctx, grad, moment, lr)
    p = np.asarray(param)
    return new_g, new_m, (p - new_g.reshape(p.shape)).astype(p.dtype, copy=False)


@defop("Adagrad", inputs=4, outputs=2, args=[arg("epsilon", "float", 1e-5), arg("decay", "float", 1.0)],
       inplace=[(0, 0), (1, 1)], category=OPAQUE, infer=_shapes_of(0, 1), no_gradient_reason=_OPTIMIZER)
def adagrad(ctx, param, moment, grad, lr):
    """[param, moment, grad, lr] -> [param', moment']: h' = decay·h + g², w' = w + lr·g/(√h' + ε)."""
    _same_size(ctx, {0: param, 1: moment, 2: grad})
    rate = _weight(ctx, lr, 3)
    p, h = np.asarray(param), np.asarray(moment)
    g = np.asarray(grad).reshape(p.shape)
    new_h = ctx.args.decay * h.reshape(p.shape) + g * g
    new_p = p + rate * g / (np.sqrt(new_h) + ctx.args.epsilon)
    return new_p.astype(p.dtype, copy=False), new_h.astype(h.dtype, copy=False).reshape(h.shape)


ADAM_ARGS = [arg("beta1", "float", 0.9), arg("beta2", "float", 0.999), arg("epsilon", "float", 1e-8)]


@defop("Adam", inputs=6, outputs=(3, 4), args=ADAM_ARGS, inplace=[(0, 0), (1, 1), (2, 2)], category=OPAQUE,
       infer=_shapes_of(0, 1, 2, 3), no_gradient_reason=_OPTIMIZER)
def adam(ctx, param, m1, m2, grad, lr, it):
    """[param, m, v, grad, lr, iter] -> [param', m', v'(, step)]: m' = β1·m + (1−β1)·g,
    v' = β2·v + (1−β2)·g², step = c·m'/(√v' + ε) with c = √(1−β2^t)/(1−β1^t), t = iter + 1;
    param' = param + lr·step."""
    _same_size(ctx, {0: param, 1: m1, 2: m2, 3: grad})
    rate = _weight(ctx, lr, 4)
    t = read_iter(ctx, it, 5) + 1
    b1, b2, eps = ctx.args.beta1, ctx.args.beta2, ctx.args.epsilon
    correction = math.sqrt(1.0 - float(_f32(b2)) ** t) / (1.0 - float(_f32(b1)) ** t)
    p = np.asarray(param)
    g = np.asarray(grad).reshape(p.shape)
    new_m = np.asarray(m1).reshape(p.shape) * b1 + g * (1 - b1)
    new_v = np.asarray(m2).reshape(p.shape) * b2 + g * g * (1 - b2)
    step = correction * new_m / (np.sqrt(new_v) + eps)
    outs = [(p + rate * step).astype(p.dtype, copy=False),
            new_m.astype(np.asarray(m1).dtype, copy=False).reshape(np.shape(m1)),
            new_v.astype(np.asarray(m2).dtype, copy=False).reshape(np.shape(m2))]
    if ctx.num_outputs == 4:
        outs.append(step.astype(np.asarray(grad).dtype, copy=False).reshape(np.shape(grad)))
    return outs
