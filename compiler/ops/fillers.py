"""Fillers: ops that make a tensor from arguments (ConstantFill, the random fills, GivenTensor*Fill).

Every filler takes 0 or 1 input (UniformFill also 3) and gives one output; in place is allowed and
none has a gradient (Caffe2's NO_GRADIENT). The output shape comes from, in this order:

- with an input and ``input_as_shape=1``: the input's values (a 1-D int64 tensor);
- with an input: the input's shape, followed by ``extra_shape``;
- otherwise the ``shape`` argument (a list; no ``shape`` gives a 0-d tensor).

Random fillers draw from ``ctx.rng``, which ``DeviceOption.random_seed`` seeds, so a seeded op gives
the same values each time it is created::

    ConstantFill([], ["x"], shape=[2, 3], value=1.0)     # float32 ones
    ConstantFill([], ["i"], shape=[1], value=0)          # no dtype, int value: int64
    GaussianFill(["like"], ["g"], extra_shape=[4], std=0.1)
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from netjit.compiler.ops.common import DT, ShapeDependsOnValues, dtype_from_arg
from netjit.compiler.ops.gradients import no_gradient
from netjit.compiler.ops.registry import OPAQUE, Args, Lowering, TensorType, arg, defop

FILLER_ARGS = [
    arg("shape", "ints", []),
    arg("extra_shape", "ints", []),
    arg("input_as_shape", "bool", False),
    # Older Caffe2 filled only on the first run unless run_once=0; the 2018 snapshot no longer reads
    # it and refills on every run, as we do. Declared so old nets that set it decode cleanly.
    arg("run_once", "bool", True),
]


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------
def _arg_conflict(args: Args, n_inputs: int) -> str | None:
    """Caffe2's construction checks on the shape arguments, as a message (None when fine)."""
    if n_inputs:
        if args.shape:
            return "cannot set the 'shape' argument and pass an input at the same time"
    else:
        if args.extra_shape:
            return "'extra_shape' needs an input (the output shape is the input's shape + extra_shape)"
        if args.input_as_shape:
            return "'input_as_shape=1' needs an input holding the shape"
    return None


def _checked_dims(dims: Sequence[int], what: str) -> tuple[int, ...]:
    dims = tuple(int(d) for d in dims)
    if any(d < 0 for d in dims):
        raise ValueError(f"{what} {list(dims)} has a negative dimension")
    return dims


def static_shape(op_type: str, args: Args, inputs: Sequence[TensorType]) -> tuple[int, ...]:
    """The output shape a filler will produce, from its args and input types (no values)."""
    msg = _arg_conflict(args, len(inputs))
    if msg:
        raise ValueError(f"{op_type}: {msg}")
    if not inputs:
        return _checked_dims(args.shape, "shape")
    if args.input_as_shape:
        raise ShapeDependsOnValues(op_type, 0)
    return tuple(inputs[0].shape) + _checked_dims(args.extra_shape, "extra_shape")


def run_shape(ctx: Any, inputs: Sequence[Any]) -> tuple[int, ...]:
    """The output shape at run time; errors name the filler's input or output blob."""
    args = ctx.args
    msg = _arg_conflict(args, len(inputs))
    blob = ctx.output_name(0)
    if msg:
        raise ctx.error(msg, blob=blob)
    try:
        if not inputs:
            return _checked_dims(args.shape, "shape")
        x = inputs[0]
        if args.input_as_shape:
            x = np.asarray(x)
            if x.ndim != 1 or x.dtype != np.int64:
                raise ctx.error(f"with input_as_shape=1 the input must be a 1-D int64 tensor, got "
                                f"{x.dtype} of shape {x.shape}", blob=ctx.input_name(0))
            dims = tuple(int(v) for v in x)
        else:
            dims = tuple(np.shape(x))
        return _checked_dims(dims + tuple(args.extra_shape), "output shape")
    except ValueError as err:
        raise ctx.error(str(err), blob=blob) from None


def _infer_with(op_type: str, dtype_of: Callable[[Args], np.dtype]
                ) -> Callable[[Args, list[TensorType]], list[TensorType]]:
    def infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
        return [TensorType(static_shape(op_type, args, inputs[:1]), dtype_of(args))]
    return infer


def _fixed(dtype: Any) -> Callable[[Args], np.dtype]:
    dt = np.dtype(dtype)
    return lambda args: dt


def _defiller(op_type: str, args: Sequence[Any] = (), inputs: int | tuple[int, int] = (0, 1),
              dtype_of: Callable[[Args], np.dtype] = _fixed(np.float32), **kw: Any):
    """defop with the filler conventions: 0-1 inputs, one output, in place allowed, NO_GRADIENT."""
    return defop(op_type, inputs=inputs, outputs=1, args=[*FILLER_ARGS, *args], inplace=[(0, 0)],
                 category=OPAQUE, infer=_infer_with(op_type, dtype_of), gradient=no_gradient, **kw)


# --------------------------------------------------------------------------------------------
# ConstantFill
# --------------------------------------------------------------------------------------------
# DataTypes ConstantFill accepts, and the Argument field its `value` must come from for each.
_CONSTANT_TYPES = {DT.FLOAT: "f", DT.DOUBLE: "f", DT.BOOL: "i", DT.INT8: "i", DT.INT16: "i",
                   DT.INT32: "i", DT.INT64: "i", DT.UINT8: "i", DT.UINT16: "i", DT.STRING: "s"}


def _value_field(value: Any) -> str:
    return "f" if isinstance(value, float) else "i" if isinstance(value, int) else "s"


def constant_fill_type(args: Args) -> tuple[int, Any]:
    """(DataType, value) of a ConstantFill, by Caffe2's rules: ``dtype`` if given (default FLOAT);
    without it, a float ``value`` gives FLOAT and an int ``value`` gives INT64."""
    value = args.get("value")
    if args.has("dtype"):
        dtype = args.dtype
        if dtype == DT.UNDEFINED:
            raise ValueError("ConstantFill cannot have dtype UNDEFINED")
        if dtype not in _CONSTANT_TYPES:
            name = DT.DataType.Name(dtype) if dtype in DT.DataType.values() else str(dtype)
            raise ValueError(f"ConstantFill does not support dtype {name}")
    elif args.has("value"):
        field = _value_field(value)
        if field == "s":
            raise ValueError("a string 'value' needs dtype=STRING")
        dtype = DT.FLOAT if field == "f" else DT.INT64
    else:
        dtype = DT.FLOAT
    want = _CONSTANT_TYPES[dtype]
    if not args.has("value"):
        return dtype, {"f": 0.0, "i": 0, "s": b""}[want]
    if _value_field(value) != want:
        words = {"f": "a float", "i": "an int", "s": "a string"}
        hint = f" (write value={float(value)!r})" if want == "f" and isinstance(value, int) else ""
        raise ValueError(f"argument 'value' must be {words[want]} for dtype {DT.DataType.Name(dtype)}, "
                         f"got {value!r}{hint}")
    np_dtype = _constant_np_dtype(dtype)
    if want == "i" and np_dtype != np.bool_:
        info = np.iinfo(np_dtype)
        if not info.min <= value <= info.max:
            raise ValueError(f"value {value} does not fit dtype {DT.DataType.Name(dtype)}")
    return dtype, value


def _constant_np_dtype(dtype: int) -> np.dtype:
    return np.dtype(object) if dtype == DT.STRING else dtype_from_arg(dtype)


def _constant_dtype(args: Args) -> np.dtype:
    return _constant_np_dtype(constant_fill_type(args)[0])


@_defiller("ConstantFill", args=[arg("value", "any"), arg("dtype", "int", DT.FLOAT)],
           dtype_of=_constant_dtype, validate=constant_fill_type)
def constant_fill(ctx, *inputs):
    """Every element = ``value``; dtype by Caffe2's ConstantFill rules (see constant_fill_type)."""
    try:
        dtype, value = constant_fill_type(ctx.args)
    except ValueError as err:
        raise ctx.error(str(err), blob=ctx.output_name(0)) from None
    shape = run_shape(ctx, inputs)
    np_dtype = _constant_np_dtype(dtype)
    if dtype == DT.STRING:
        out = np.empty(shape, dtype=object)
        out.fill(value)  # np.full would try to interpret bytes as a sequence of items
        return out
    return np.full(shape, value, dtype=np_dtype)


# --------------------------------------------------------------------------------------------
# Random fillers
# --------------------------------------------------------------------------------------------
def _uniform_check_counts(n_in: int, n_out: int) -> str | None:
    return None if n_in in (0, 1, 3) else "takes 0, 1 or 3 inputs (shape, min, max)"


def _uniform(ctx, inputs, integer: bool):
    args = ctx.args
    lo, hi = args.min, args.max
    shape = run_shape(ctx, inputs[:1])
    if len(inputs) == 3:
        if args.has("min") or args.has("max"):
            raise ctx.error("with min and max given as inputs, the 'min'/'max' arguments must not be set",
                            blob=ctx.output_name(0))
        for k, name in ((1, "min"), (2, "max")):
            if np.size(inputs[k]) != 1:
                raise ctx.error(f"the {name} input must hold one element, got shape {np.shape(inputs[k])}",
                                blob=ctx.input_name(k))
        lo, hi = np.asarray(inputs[1]).reshape(-1)[0], np.asarray(inputs[2]).reshape(-1)[0]
        if lo > hi:  # Caffe2 gives an empty batch instead of failing
            shape = (0,) + shape[1:] if shape else shape
            return np.zeros(shape, np.int32 if integer else np.float32)
    elif not lo < hi:
        raise ctx.error(f"max ({hi}) must be bigger than min ({lo})", blob=ctx.output_name(0))
    if integer:
        return ctx.rng.integers(int(lo), int(hi), size=shape, dtype=np.int32, endpoint=True)
    span = np.float32(hi) - np.float32(lo)
    return (ctx.rng.random(shape, dtype=np.float32) * span + np.float32(lo)).astype(np.float32, copy=False)


@_defiller("UniformFill", inputs=(0, 3), args=[arg("min", "float", 0.0), arg("max", "float", 1.0)],
           check_counts=_uniform_check_counts,
           lowering={"numba-cpu": Lowering(fill="netjit.compiler.codegen.fills:uniform")})
def uniform_fill(ctx, *inputs):
    """float32 U[min, max). With 3 inputs (shape source, min, max) an empty batch when min > max."""
    return _uniform(ctx, inputs, integer=False)


@_defiller("UniformIntFill", inputs=(0, 3), args=[arg("min", "int", 0), arg("max", "int", 1)],
           check_counts=_uniform_check_counts, dtype_of=_fixed(np.int32))
def uniform_int_fill(ctx, *inputs):
    """int32 uniform on the closed range [min, max]."""
    return _uniform(ctx, inputs, integer=True)


@_defiller("GaussianFill", args=[arg("mean", "float", 0.0), arg("std", "float", 1.0)],
           lowering={"numba-cpu": Lowering(fill="netjit.compiler.codegen.fills:gaussian")})
def gaussian_fill(ctx, *inputs):
    """float32 normal(mean, std)."""
    shape = run_shape(ctx, inputs)
    if ctx.args.std < 0:
        raise ctx.error(f"std must be non-negative, got {ctx.args.std}", blob=ctx.output_name(0))
    z = ctx.rng.standard_normal(shape, dtype=np.float32)
    return (z * np.float32(ctx.args.std) + np.float32(ctx.args.mean)).astype(np.float32, copy=False)


def _fan(ctx, shape: tuple[int, ...], dim: int) -> int:
    numel = math.prod(shape)
    if len(shape) <= dim or shape[dim] == 0 or numel == 0:
        raise ctx.error(f"needs a non-empty output of rank > {dim} to compute its fan, got shape {shape}",
                        blob=ctx.output_name(0))
    return numel // shape[dim]


@_defiller("XavierFill", lowering={"numba-cpu": Lowering(fill="netjit.compiler.codegen.fills:xavier")})
def xavier_fill(ctx, *inputs):
    """float32 U(-s, s) with s = sqrt(3 / fan_in), fan_in = numel / dim0."""
    shape = run_shape(ctx, inputs)
    scale = np.float32(math.sqrt(3.0 / _fan(ctx, shape, 0)))
    return (ctx.rng.random(shape, dtype=np.float32) * (2 * scale) - scale).astype(np.float32, copy=False)


@_defiller("MSRAFill", lowering={"numba-cpu": Lowering(fill="netjit.compiler.codegen.fills:msra")})
def msra_fill(ctx, *inputs):
    """float32 normal(0, sqrt(2 / fan_out)), fan_out = numel / dim1."""
    shape = run_shape(ctx, inputs)
    std = np.float32(math.sqrt(2.0 / _fan(ctx, shape, 1)))
    return (ctx.rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32, copy=False)


@_defiller("RangeFill")
def range_fill(ctx, *inputs):
    """float32 0, 1, 2, ... over the flattened output."""
    shape = run_shape(ctx, inputs)
    return np.arange(math.prod(shape), dtype=np.float32).reshape(shape)


# --------------------------------------------------------------------------------------------
# GivenTensor*Fill
# --------------------------------------------------------------------------------------------
# Which Argument field a GivenTensor fill reads `values` from, by output dtype.
_VALUES_FIELD = {np.dtype(np.float32): "floats", np.dtype(np.float64): "floats", np.dtype(np.bool_): "ints",
                 np.dtype(np.int32): "ints", np.dtype(np.int64): "ints", np.dtype(object): "strings"}
_FIELD_WORDS = {"floats": "a list of floats", "ints": "a list of ints", "strings": "a list of strings"}


def _values_field(values: list) -> str | None:
    if not values:
        return None
    first = values[0]
    return "floats" if isinstance(first, float) else "ints" if isinstance(first, int) else "strings"


def _given_dtype(args: Args, default: np.dtype, reinterpret: bool) -> np.dtype:
    if not (reinterpret and args.has("dtype")):
        return default
    dtype = dtype_from_arg(args.dtype)
    if dtype not in _VALUES_FIELD:
        raise ValueError(f"GivenTensorFill does not support dtype {dtype}")
    return dtype


def _given_values(ctx, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    values = list(ctx.args["values"])  # Args is a dict: .values is the method
    want = _VALUES_FIELD[dtype]
    got = _values_field(values)
    if got is not None and got != want:
        raise ctx.error(f"argument 'values' must be {_FIELD_WORDS[want]} for a {dtype} tensor, but it "
                        f"holds {_FIELD_WORDS[got]}", blob=ctx.output_name(0))
    if len(values) != math.prod(shape):
        raise ctx.error(f"{len(values)} values given for shape {list(shape)} ({math.prod(shape)} elements)",
                        blob=ctx.output_name(0))
    if dtype == np.dtype(object):
        out = np.empty(len(values), dtype=object)
        out[:] = [bytes(v) for v in values]
        return out.reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        bad = [v for v in values if not info.min <= v <= info.max]
        if bad:
            raise ctx.error(f"value {bad[0]} does not fit {dtype}", blob=ctx.output_name(0))
    if dtype == np.bool_:
        return (np.asarray(values, dtype=np.int64) != 0).reshape(shape)
    return np.asarray(values, dtype=dtype).reshape(shape)


def _given(op_type: str, dtype: Any, reinterpret: bool = False):
    default = np.dtype(dtype)
    extra = [arg("values", "any", [])]
    if reinterpret:
        extra.append(arg("dtype", "any", None))

    def dtype_of(args: Args) -> np.dtype:
        return _given_dtype(args, default, reinterpret)

    def reference(ctx, *inputs):
        try:
            out_dtype = _given_dtype(ctx.args, default, reinterpret)
        except ValueError as err:
            raise ctx.error(str(err), blob=ctx.output_name(0)) from None
        return _given_values(ctx, out_dtype, run_shape(ctx, inputs))

    words = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64", np.dtype(np.bool_): "bool",
             np.dtype(np.int32): "int32", np.dtype(np.int64): "int64", np.dtype(object): "string"}[default]
    reference.__doc__ = (f"A {words} tensor holding the ``values`` argument (len(values) = numel)"
                         + ("; ``dtype`` reinterprets values (read from floats/ints/strings)." if reinterpret
                            else "."))
    return _defiller(op_type, args=extra, dtype_of=dtype_of)(reference)


_given("GivenTensorFill", np.float32, reinterpret=True)
_given("GivenTensorDoubleFill", np.float64)
_given("GivenTensorBoolFill", np.bool_)
_given("GivenTensorIntFill", np.int32)
_given("GivenTensorInt64Fill", np.int64)
_given("GivenTensorStringFill", object)
