"""Debug ops: Print and Summarize. Both are HOST ops (they write to stdout or to files under the
workspace root folder) and neither has a gradient; asking for one is an error, as in Caffe2.

Print writes one line per printed run in Caffe2's layout::

    Tensor fc1 of type float. Dims: (2,3,): 0.1,0.2,0.3,0.4,0.5,0.6

Summarize gives [min, max, mean, unbiased std] (float32 [4]) and with ``to_file=1`` appends them
as one line to ``<root>/<blob>.summary`` ('/' in the blob name becomes '#').

Caffe2 truncates the files when the op is constructed; an op here truncates its file on its first
run (per created op, tracked in ``ctx.state``), which differs only for an op that is created and
never run.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from netjit.compiler.ops.registry import HOST, Args, TensorType, arg, defop

PRINT_DEFAULT_LIMIT = 1000

# Caffe2's TypeMeta names of the tensor element types, as Print shows them.
_TYPE_NAMES = {
    np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.int32): "int",
    np.dtype(np.int64): "long", np.dtype(np.bool_): "bool", np.dtype(np.uint8): "unsigned char",
    np.dtype(np.int8): "signed char", np.dtype(np.int16): "short", np.dtype(np.uint16): "unsigned short",
    np.dtype(np.float16): "caffe2::float16", np.dtype(object): "std::string",
}


def format_value(v: Any) -> str:
    """One element as a C++ ostream prints it by default: %g for floats, 1/0 for bools."""
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", errors="backslashreplace")
    if isinstance(v, (bool, np.bool_)):
        return "1" if v else "0"
    if isinstance(v, (float, np.floating)):
        return "%g" % float(v)
    return str(v)


def tensor_line(name: str, x: np.ndarray, limit: int) -> str:
    """Print's line for a tensor: its meta data, then up to ``limit`` comma-separated values.
    uint8/int8 values print as numbers (C++ would print them as characters)."""
    dims = "".join(f"{d}," for d in x.shape)
    type_name = _TYPE_NAMES.get(x.dtype, str(x.dtype))
    values = ",".join(format_value(v) for v in x.reshape(-1)[:limit].tolist())
    return f"Tensor {name} of type {type_name}. Dims: ({dims}): {values}"


def _blob_type(value: Any) -> str:
    if value is None:
        return "nullptr (uninitialized)"
    if isinstance(value, (bytes, str)):
        return "std::string"
    return type(value).__name__


def _write_line(ctx: Any, path: str, line: str) -> None:
    # The first write of an op instance truncates the file (Caffe2 does it at construction).
    mode = "a" if ctx.state.get("file_started") else "w"
    try:
        with open(path, mode, encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError as err:
        raise ctx.error(f"cannot write {path}: {err.strerror}", blob=ctx.input_name(0)) from None
    ctx.state["file_started"] = True


@defop("Print", inputs=1, outputs=0,
       args=[arg("to_file", "bool", False), arg("limit", "int", 0), arg("every_n", "int", 1)],
       category=HOST, no_gradient_reason="Print is a debugging op and has no gradient")
def print_op(ctx, x):
    """Print the tensor's name, type, dims and its first ``limit`` values (0 means 1000) on the 1st,
    (1+every_n)th, ... run; to stdout, or with to_file=1 to ``<root>/<blob>.log``."""
    args = ctx.args
    if args.every_n < 1:
        raise ctx.error(f"every_n must be >= 1, got {args.every_n}", blob=ctx.input_name(0))
    countdown = ctx.state.get("countdown", 0) - 1
    if countdown > 0:
        ctx.state["countdown"] = countdown
        return ()
    ctx.state["countdown"] = args.every_n
    name = ctx.input_name(0)
    if not isinstance(x, np.ndarray):
        print(f"Blob of type: {_blob_type(x)}")
        return ()
    line = tensor_line(name, x, args.limit or PRINT_DEFAULT_LIMIT)
    if args.to_file:
        root = ctx.ws.root_folder if ctx.ws is not None else "."
        _write_line(ctx, os.path.join(root, name + ".log"), line)
    else:
        print(line)
    return ()


def summary_values(x: np.ndarray) -> tuple[Any, Any, float, float]:
    """(min, max, mean, unbiased std): min/max in the input's type, mean and std in double (std is 0
    for a single element), as Caffe2 computes them."""
    flat = np.asarray(x).reshape(-1)
    wide = flat.astype(np.float64)
    n = wide.size
    mean = float(wide.sum() / n)
    std = 0.0 if n == 1 else float(np.sqrt(((wide - mean) ** 2).sum() / (n - 1)))
    return flat.min(), flat.max(), mean, std


def _summarize_infer(args: Args, inputs: list[TensorType]) -> list[TensorType]:
    return [TensorType((4,), np.dtype(np.float32))]


@defop("Summarize", inputs=1, outputs=(0, 1), args=[arg("to_file", "bool", False)], category=HOST,
       infer=_summarize_infer, no_gradient_reason="Summarize is a debugging op and has no gradient")
def summarize(ctx, x):
    """Optional output [min, max, mean, unbiased std] (float32 [4]); with to_file=1 also one line
    "min max mean std" per run in ``<root>/<blob>.summary`` ('/' in the name -> '#')."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise ctx.error(f"expects a numeric tensor, got {x.dtype}", blob=ctx.input_name(0))
    if x.size == 0:
        raise ctx.error("cannot summarize an empty tensor", blob=ctx.input_name(0))
    stats = summary_values(x)
    if ctx.args.to_file:
        root = ctx.ws.root_folder if ctx.ws is not None else "."
        name = ctx.input_name(0).replace("/", "#")
        _write_line(ctx, os.path.join(root, name + ".summary"), " ".join(format_value(v) for v in stats))
    return (np.array([float(v) for v in stats], dtype=np.float32),) if ctx.num_outputs else ()
