"""Copy-like ops: Cast, Copy and the device copies, Alias, StopGradient, EnsureCPUOutput.

The runtime is CPU-only, so the GPU/CPU copies are plain copies kept for models and model_helper's
list of known ops. Each returns a fresh array (except Alias, which by definition shares its input).
"""
from __future__ import annotations

import numpy as np

from netjit.compiler.ops.common import DTYPE_OF, DT, dtype_from_arg, same_as
from netjit.compiler.ops.gradients import GradientContext, passthrough_gradient, simple_gradient
from netjit.compiler.ops.registry import ELEMWISE, OPAQUE, Args, TensorType, arg, defop

# Cast targets Caffe2's CPU kernel cannot produce.
_NO_CAST = {DT.UNDEFINED: "UNDEFINED", DT.STRING: "STRING", DT.FLOAT16: "FLOAT16", DT.BYTE: "BYTE"}


def _data_type(value: object, name: str) -> int:
    """A ``to``/``from_type`` value (DataType int, or a case-insensitive name) as a DataType int."""
    if isinstance(value, (bytes, str)):
        text = value.decode() if isinstance(value, bytes) else value
        try:
            return DT.DataType.Value(text.upper())
        except ValueError:
            raise ValueError(f"argument {name!r}: unknown data type name {text!r}") from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"argument {name!r} must be a DataType int or a type name, got {value!r}")
    return value


def _cast_target(args: Args) -> np.dtype:
    to = _data_type(args.to, "to")
    if to in _NO_CAST:
        raise ValueError(f"Cast to {_NO_CAST[to]} is not supported on CPU")
    if to not in DTYPE_OF:
        raise ValueError(f"argument 'to': unknown DataType {to}")
    return dtype_from_arg(to)


def _cast_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    return [TensorType(tuple(inputs[0].shape), _cast_target(args))]


def _cast_gradient(g: GradientContext) -> tuple[list, list]:
    if not g.args.has("from_type"):
        raise ValueError(f"Cast {list(g.op.input)} -> {list(g.op.output)} has no 'from_type' argument, "
                         f"which its gradient (a Cast back) needs")
    to, from_type = _data_type(g.args.to, "to"), _data_type(g.args.from_type, "from_type")
    return [g.make("Cast", [g.GO(0)], [g.GI(0)], to=from_type, from_type=to)], [g.GI(0)]


@defop("Cast", inputs=1, outputs=1, args=[arg("to", "any", required=True), arg("from_type", "any")],
       category=ELEMWISE, infer=_cast_infer, expr="x0", gradient=_cast_gradient, grad_copy_args=False)
def cast(ctx, x):
    """Y = X converted to ``to`` (a DataType int or a name such as "float"); float -> int truncates
    toward zero, like C++'s static_cast. ``from_type`` is only read by the gradient.

    >>> # Cast(X, to="int32") turns [1.7, -1.7] into [1, -1]
    """
    try:
        dtype = _cast_target(ctx.args)
    except ValueError as err:
        raise ctx.error(str(err), blob=ctx.output_name(0)) from None
    x = np.asarray(x)
    if x.dtype == object:
        raise ctx.error("Cast from STRING is not supported", blob=ctx.input_name(0))
    with np.errstate(invalid="ignore", over="ignore"):
        return np.array(x, dtype=dtype, copy=True)


def _no_gradient(g: GradientContext) -> tuple[list, list]:
    """Nothing flows back: no ops, and no gradient for the input."""
    return [], [None] * g.n_inputs


def _copy(ctx, x):
    return np.array(x, copy=True)


@defop("StopGradient", inputs=1, outputs=1, inplace=[(0, 0)], category=ELEMWISE, infer=same_as(0), expr="x0",
       gradient=_no_gradient)
def stop_gradient(ctx, x):
    """Y = X; autodiff sends no gradient back through it."""
    return _copy(ctx, x)


@defop("Copy", inputs=1, outputs=1, category=ELEMWISE, infer=same_as(0), expr="x0",
       gradient=simple_gradient("CopyOnDeviceLike", ["GO0", "I0"], ["GI0"]))
def copy(ctx, x):
    """Y = a copy of X."""
    return _copy(ctx, x)


@defop("CopyOnDeviceLike", inputs=2, outputs=1, category=OPAQUE, infer=same_as(0))
def copy_on_device_like(ctx, x, like):
    """Y = a copy of X, placed on the device of the second input (always the CPU here)."""
    return _copy(ctx, x)


@defop("CopyCPUToGPU", inputs=1, outputs=1, category=ELEMWISE, infer=same_as(0), expr="x0",
       gradient=simple_gradient("CopyGPUToCPU", ["GO0"], ["GI0"]))
def copy_cpu_to_gpu(ctx, x):
    """Y = a copy of X (on a GPU in Caffe2; this runtime keeps blobs on the CPU)."""
    return _copy(ctx, x)


@defop("CopyGPUToCPU", inputs=1, outputs=1, category=ELEMWISE, infer=same_as(0), expr="x0",
       gradient=simple_gradient("CopyCPUToGPU", ["GO0"], ["GI0"]))
def copy_gpu_to_cpu(ctx, x):
    """Y = a copy of X on the CPU."""
    return _copy(ctx, x)


@defop("EnsureCPUOutput", inputs=1, outputs=1, category=ELEMWISE, infer=same_as(0), expr="x0",
       gradient=_no_gradient)
def ensure_cpu_output(ctx, x):
    """Y = a CPU copy of X. Caffe2 gives it no gradient (nothing flows back), kept here."""
    return _copy(ctx, x)


@defop("Alias", inputs=1, outputs=1, category=ELEMWISE, infer=same_as(0), expr="x0",
       gradient=passthrough_gradient)
def alias(ctx, x):
    """Y is X itself: the same array object, no copy. References never write their inputs, so sharing
    is safe; the gradient passes straight through (Y's gradient blob is X's)."""
    return x
