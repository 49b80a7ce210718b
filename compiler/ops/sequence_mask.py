"""``SequenceMask``: set entries of a [rows, columns] view of a tensor to ``fill_val`` (-inf by
default) by position, as attention masks need (``attention.py`` masks logits past each encoder
sequence's length). The view splits the dims at ``axis``. Modes, for row i and column j:

- ``sequence``: j >= lengths[i] (second input: one length per row);
- ``window``: |j - centers[i]| > radius (second input: one center per row);
- ``upper``: j > i; ``lower``: j < i; ``upperdiag``: j >= i; ``lowerdiag``: j <= i.

With ``grad=1`` (the gradient op) masked entries become 0 instead.

>>> import numpy as np
>>> x = np.zeros((2, 3), np.float32)
>>> sequence_mask_numpy(x, "sequence", np.array([1, 2]), fill_val=-1.0).tolist()
[[0.0, -1.0, -1.0], [0.0, 0.0, -1.0]]
"""
from __future__ import annotations

import math

import numpy as np

from netjit.compiler.ops.common import same_as
from netjit.compiler.ops.gradients import GradientContext
from netjit.compiler.ops.registry import OPAQUE, Args, arg, defop

MODES = ("sequence", "window", "upper", "lower", "upperdiag", "lowerdiag")
_WITH_INPUT = ("sequence", "window")


def sequence_mask_numpy(x: np.ndarray, mode: str, second: np.ndarray | None = None, axis: int = 1,
                        radius: int = 10, fill_val: float = -math.inf) -> np.ndarray:
    """The masked copy of ``x`` (see the module docstring)."""
    axis = axis + x.ndim if axis < 0 else axis
    rows, cols = math.prod(x.shape[:axis]), math.prod(x.shape[axis:])
    i = np.arange(rows).reshape(rows, 1)
    j = np.arange(cols).reshape(1, cols)
    if mode == "sequence":
        masked = j >= np.asarray(second).reshape(rows, 1)
    elif mode == "window":
        centers = np.asarray(second).reshape(rows, 1)
        masked = (j > centers + radius) | (j < centers - radius)
    elif mode == "upper":
        masked = j > i
    elif mode == "lower":
        masked = j < i
    elif mode == "upperdiag":
        masked = j >= i
    else:
        masked = j <= i
    out = np.where(masked, x.dtype.type(fill_val), x.reshape(rows, cols))
    return out.astype(x.dtype, copy=False).reshape(x.shape)


def _validate(args: Args) -> None:
    if args.mode not in MODES:
        raise ValueError(f"mode {args.mode!r} is not one of {MODES}")
    if args.num_inputs is not None and (args.num_inputs == 2) != (args.mode in _WITH_INPUT):
        want = "two inputs" if args.mode in _WITH_INPUT else "one input"
        raise ValueError(f"mode {args.mode!r} takes {want}, got {args.num_inputs}")


def _gradient(g: GradientContext) -> tuple[list, list]:
    # Caffe2 copies the forward args itself and adds grad=1 (the record opts out of the default copy).
    ins = [g.GO(0)] + ([g.I(1)] if g.n_inputs == 2 else [])
    op = g.make("SequenceMask", ins, [g.GI(0)])
    op.arg.extend(g.op.arg)
    op.arg.add(name="grad", i=1)
    return [op], [g.GI(0)] + [None] * (g.n_inputs - 1)


@defop("SequenceMask", inputs=(1, 2), outputs=1, category=OPAQUE, infer=same_as(0), validate=_validate,
       args=[arg("mode", "str", required=True), arg("axis", "int", 1), arg("radius", "int", 10),
             arg("grad", "bool", False), arg("fill_val", "float", -math.inf)],
       gradient=_gradient, grad_copy_args=False)
def sequence_mask(ctx, x, *rest):
    """[input, lengths or centers (sequence/window modes)] -> input with masked entries filled."""
    a = ctx.args
    axis = a.axis + x.ndim if a.axis < 0 else a.axis
    if not 0 <= axis <= x.ndim:
        raise ctx.error(f"axis {a.axis} is out of range for a rank-{x.ndim} input", blob=ctx.input_name(0))
    second = rest[0] if rest else None
    if second is not None and np.asarray(second).size != math.prod(x.shape[:axis]):
        raise ctx.error(f"has {np.asarray(second).size} entries for {math.prod(x.shape[:axis])} rows (the dims of "
                        f"{list(x.shape)} before axis {a.axis})", blob=ctx.input_name(1))
    return sequence_mask_numpy(x, a.mode, second, axis, a.radius, 0.0 if a.grad else a.fill_val)
