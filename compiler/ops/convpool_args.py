"""Argument decoding shared by every convolution and pooling op (Caffe2's ConvPoolOpBase rules).

Caffe2 lets a net spell each window parameter several ways; exactly one spelling per parameter is
accepted here, and mixing two is an error (Caffe2 silently preferred one, which hides bugs):

- kernel: ``kernel`` | ``kernel_h`` + ``kernel_w`` | ``kernels``
- stride: ``stride`` | ``stride_h`` + ``stride_w`` | ``strides`` (default 1)
- pads: ``pad`` | ``pad_t`` + ``pad_l`` + ``pad_b`` + ``pad_r`` | ``pads`` (default 0)
- dilation: ``dilation`` | ``dilation_h`` + ``dilation_w`` | ``dilations`` (default 1)
- adj (ConvTranspose): ``adj`` | ``adj_h`` + ``adj_w`` | ``adjs`` (default 0)

``pads`` lists every begin pad, then every end pad (2-D: ``[t, l, b, r]``). The single-value
spellings cover any number of spatial dims (Caffe2 itself expanded them to 2-D only). Decoding
happens in two steps: :func:`decode` reads and checks the arguments alone; :meth:`ConvPoolSpec.geometry`
resolves them against an input's spatial size::

    >>> from netjit.compiler.ops.registry import Args
    >>> spec = decode(Args({"kernel": 3, "stride": 2, "pad": 1}, frozenset({"kernel", "stride", "pad"})))
    >>> spec.geometry((7, 7)).out
    (4, 4)
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

from netjit.compiler.ops.registry import arg

# caffe2_legacy.proto LegacyPadding values.
NOTSET, VALID, SAME, CAFFE_LEGACY_POOLING = 0, 1, 2, 3
LEGACY_PAD_NAMES = {NOTSET: "NOTSET", VALID: "VALID", SAME: "SAME", CAFFE_LEGACY_POOLING: "CAFFE_LEGACY_POOLING"}

WINDOW_ARGS = [
    arg("kernel", "int"), arg("kernel_h", "int"), arg("kernel_w", "int"), arg("kernels", "ints"),
    arg("stride", "int"), arg("stride_h", "int"), arg("stride_w", "int"), arg("strides", "ints"),
    arg("pad", "int"), arg("pad_t", "int"), arg("pad_l", "int"), arg("pad_b", "int"), arg("pad_r", "int"),
    arg("pads", "ints"),
    arg("order", "str", "NCHW"), arg("legacy_pad", "int", NOTSET),
    arg("float16_compute", "bool", False), arg("shared_buffer", "bool", False),
]
DILATION_ARGS = [arg("dilation", "int"), arg("dilation_h", "int"), arg("dilation_w", "int"),
                 arg("dilations", "ints")]
ADJ_ARGS = [arg("adj", "int"), arg("adj_h", "int"), arg("adj_w", "int"), arg("adjs", "ints")]
# What Conv and the pooling ops declare; ConvTranspose takes WINDOW_ARGS + ADJ_ARGS + group.
CONV_POOL_ARGS = WINDOW_ARGS + DILATION_ARGS + [arg("group", "int", 1), arg("global_pooling", "bool", False)]


class ConvPoolArgError(ValueError):
    """Window arguments or input shapes that Caffe2 would reject (or silently misread).

    ``operand`` is the index of the input at fault, when one is (None: the arguments themselves).
    """

    def __init__(self, message: str, operand: int | None = None):
        super().__init__(message)
        self.operand = operand


def located(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a reference so a ConvPoolArgError becomes an OpError naming the op and the blob at fault."""
    @functools.wraps(fn)
    def run(ctx: Any, *inputs: Any) -> Any:
        try:
            return fn(ctx, *inputs)
        except ConvPoolArgError as err:
            op = err.operand
            blob = ctx.input_name(op) if op is not None and op < ctx.num_inputs else None
            raise ctx.error(str(err), blob=blob) from None
    return run


@dataclass(frozen=True)
class Spelled:
    """One window parameter as the net spelled it: ``values`` apply to every dim when ``scalar``."""
    name: str
    values: tuple[int, ...]
    scalar: bool

    def per_dim(self, rank: int, per: int = 1) -> tuple[int, ...]:
        """The values for ``rank`` spatial dims (``per`` = 2 for pads: begin pads then end pads)."""
        if self.scalar:
            return self.values * (rank * per)
        if len(self.values) != rank * per:
            want = f"{rank * per} values ({rank} begin pads, then {rank} end pads)" if per == 2 \
                else f"{rank} value(s)"
            raise ConvPoolArgError(f"{self.name} gives {len(self.values)} value(s) {list(self.values)}, but the "
                                   f"input has {rank} spatial dim(s): expected {want}")
        return self.values


class Geometry(NamedTuple):
    """Per spatial dim: the resolved window and the output size (pads after legacy_pad rules)."""
    size: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pad_head: tuple[int, ...]
    pad_tail: tuple[int, ...]
    out: tuple[int, ...]


def _spelling(args: Any, param: str, pair: Sequence[str], many: str, default: int | None) -> Spelled | None:
    """Read one parameter; exactly one of its spellings may be present."""
    forms = []
    if args.has(param):
        forms.append(param)
    if any(args.has(p) for p in pair):
        forms.append("/".join(pair))
    if args.has(many):
        forms.append(many)
    if len(forms) > 1:
        raise ConvPoolArgError(f"conflicting spellings of {param}: {' and '.join(forms)} are both set "
                               f"(use only one of them)")
    if args.has(param):
        return Spelled(param, (int(args[param]),), True)
    if any(args.has(p) for p in pair):
        missing = [p for p in pair if not args.has(p)]
        if missing:
            raise ConvPoolArgError(f"{', '.join(p for p in pair if args.has(p))} is set without "
                                   f"{', '.join(missing)}: give all of {', '.join(pair)} or use {param}/{many}")
        return Spelled("/".join(pair), tuple(int(args[p]) for p in pair), False)
    if args.has(many):
        values = tuple(int(v) for v in args[many])
        if not values:
            raise ConvPoolArgError(f"{many} is empty")
        return Spelled(many, values, False)
    return None if default is None else Spelled(param, (default,), True)


@dataclass(frozen=True)
class ConvPoolSpec:
    """The decoded window arguments of one conv/pool op; :meth:`geometry` resolves them per input."""
    kernel: Spelled | None
    stride: Spelled
    pads: Spelled
    dilation: Spelled
    adj: Spelled
    group: int
    order: str
    legacy_pad: int
    global_pooling: bool

    @property
    def channel_first(self) -> bool:
        return self.order == "NCHW"

    def channel_axis(self, ndim: int) -> int:
        return 1 if self.channel_first else ndim - 1

    def spatial_axes(self, ndim: int) -> tuple[int, ...]:
        return tuple(range(2, ndim)) if self.channel_first else tuple(range(1, ndim - 1))

    def spatial_dims(self, shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(shape[a] for a in self.spatial_axes(len(shape)))

    def adjs(self, rank: int) -> tuple[int, ...]:
        return self.adj.per_dim(rank)

    def geometry(self, size: Sequence[int]) -> Geometry:
        """Resolve kernel, stride, dilation and pads for an input of spatial ``size``; compute the
        output size by the legacy_pad rule."""
        size = tuple(int(s) for s in size)
        rank = len(size)
        if rank < 1:
            raise ConvPoolArgError("the input has no spatial dims")
        stride = self.stride.per_dim(rank)
        dilation = self.dilation.per_dim(rank)
        if self.global_pooling:
            return Geometry(size, size, (1,) * rank, (1,) * rank, (0,) * rank, (0,) * rank, (1,) * rank)
        if self.kernel is None:
            raise ConvPoolArgError("the kernel size is not set (give kernel, kernel_h/kernel_w or kernels)")
        kernel = self.kernel.per_dim(rank)
        if any(k < 1 for k in kernel):
            raise ConvPoolArgError(f"kernel {list(kernel)} must be positive in every dim")
        pads = self.pads.per_dim(rank, 2)
        heads, tails, outs = [], [], []
        for d in range(rank):
            out, head, tail = output_size(size[d], kernel[d], stride[d], dilation[d], self.legacy_pad,
                                          pads[d], pads[rank + d])
            if out < 1:
                raise ConvPoolArgError(f"spatial dim {d}: input size {size[d]} with kernel {kernel[d]}, stride "
                                       f"{stride[d]}, pads ({head}, {tail}) gives output size {out}")
            heads.append(head)
            tails.append(tail)
            outs.append(out)
        return Geometry(size, kernel, stride, dilation, tuple(heads), tuple(tails), tuple(outs))


def _trunc_div(a: int, b: int) -> int:
    """C's integer division (rounds toward zero), which Caffe2's size rules use."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def output_size(size: int, kernel: int, stride: int, dilation: int, legacy_pad: int,
                pad_head: int, pad_tail: int) -> tuple[int, int, int]:
    """(out, pad_head, pad_tail) for one spatial dim, following ConvPoolOpBase::ComputeSizeAndPad.

    >>> output_size(7, 3, 2, 1, NOTSET, 1, 1)
    (4, 1, 1)
    >>> output_size(14, 3, 2, 1, CAFFE_LEGACY_POOLING, 0, 0)   # Caffe's ceil mode: the tail pad grows
    (7, 0, 2)
    """
    dk = dilation * (kernel - 1) + 1
    if legacy_pad == NOTSET:
        if size + pad_head + pad_tail < dk:
            raise ConvPoolArgError(f"input size {size} plus pads ({pad_head}, {pad_tail}) is smaller than the "
                                   f"dilated kernel size {dk}")
        return (size + pad_head + pad_tail - dk) // stride + 1, pad_head, pad_tail
    if legacy_pad == VALID:
        if size < dk:
            raise ConvPoolArgError(f"legacy_pad VALID: input size {size} is smaller than the kernel size {dk}")
        return (size - dk) // stride + 1, 0, 0
    if legacy_pad == SAME:
        if dilation != 1:
            raise ConvPoolArgError("legacy_pad SAME does not support dilation")
        target = (size + stride - 1) // stride
        needed = (target - 1) * stride + kernel - size
        head = _trunc_div(needed, 2)  # the tail gets the odd pixel (CAFFE2_PAD_HEAD_MORE is off)
        return (size + needed - dk) // stride + 1, head, needed - head
    if legacy_pad == CAFFE_LEGACY_POOLING:
        # Caffe rounds the output size up, but never lets the last window start in the padding;
        # the extra window's pixels come from a bigger tail pad. Only pad_head is read.
        span = size + 2 * pad_head - kernel
        out = -((-span) // stride) + 1
        if pad_head > 0 and (out - 1) * stride >= size + pad_head:
            out -= 1
        standard = _trunc_div(span, stride) + 1 if span >= 0 else 0
        if out < standard:
            raise ConvPoolArgError("CAFFE_LEGACY_POOLING output size is below the standard size")
        return out, pad_head, pad_head + stride * (out - standard)
    raise ConvPoolArgError(f"unknown legacy_pad {legacy_pad}; expected one of "
                           f"{', '.join(f'{v} ({n})' for v, n in LEGACY_PAD_NAMES.items())}")


def _value(args: Any, name: str, default: Any) -> Any:
    value = args.get(name, default)
    return default if value is None else value


def decode(args: Any, *, has_dilation: bool = True, has_adj: bool = False) -> ConvPoolSpec:
    """Read and check the window arguments of a conv/pool op (everything that needs no input shape).

    ``has_dilation=False`` (ConvTranspose) rejects a dilation other than 1; ``has_adj`` reads the
    output adjustment of ConvTranspose.
    """
    kernel = _spelling(args, "kernel", ("kernel_h", "kernel_w"), "kernels", None)
    stride = _spelling(args, "stride", ("stride_h", "stride_w"), "strides", 1)
    pads = _spelling(args, "pad", ("pad_t", "pad_l", "pad_b", "pad_r"), "pads", 0)
    dilation = _spelling(args, "dilation", ("dilation_h", "dilation_w"), "dilations", 1) \
        if has_dilation else Spelled("dilation", (1,), True)
    adj = _spelling(args, "adj", ("adj_h", "adj_w"), "adjs", 0) if has_adj else Spelled("adj", (0,), True)
    assert stride is not None and pads is not None and dilation is not None and adj is not None
    order = _value(args, "order", "NCHW")
    order = order.decode() if isinstance(order, bytes) else str(order)
    if order not in ("NCHW", "NHWC"):
        raise ConvPoolArgError(f"order {order!r} is not NCHW or NHWC")
    legacy_pad = int(_value(args, "legacy_pad", NOTSET))
    if legacy_pad not in LEGACY_PAD_NAMES:
        raise ConvPoolArgError(f"unknown legacy_pad {legacy_pad}; expected one of "
                               f"{', '.join(f'{v} ({n})' for v, n in LEGACY_PAD_NAMES.items())}")
    explicit_pads = any(args.has(p) for p in ("pad", "pad_t", "pad_l", "pad_b", "pad_r", "pads"))
    if legacy_pad in (VALID, SAME) and explicit_pads:
        raise ConvPoolArgError(f"legacy_pad {LEGACY_PAD_NAMES[legacy_pad]} computes the padding itself; "
                               f"do not also set pad/pads/pad_t/pad_l/pad_b/pad_r")
    group = int(_value(args, "group", 1))
    global_pooling = bool(_value(args, "global_pooling", False))
    if kernel is not None and not global_pooling and any(k < 1 for k in kernel.values):
        raise ConvPoolArgError(f"{kernel.name} {list(kernel.values)} must be positive")
    if any(s < 1 for s in stride.values):
        raise ConvPoolArgError(f"{stride.name} {list(stride.values)} must be positive")
    if any(d < 1 for d in dilation.values):
        raise ConvPoolArgError(f"{dilation.name} {list(dilation.values)} must be positive")
    if not has_dilation and any(args.has(n) for n in ("dilation", "dilation_h", "dilation_w", "dilations")):
        raise ConvPoolArgError("this op does not support dilation")
    if any(p < 0 for p in pads.values):
        raise ConvPoolArgError(f"{pads.name} {list(pads.values)} must not be negative")
    if any(a < 0 for a in adj.values):
        raise ConvPoolArgError(f"{adj.name} {list(adj.values)} must not be negative")
    if group < 1:
        raise ConvPoolArgError(f"group {group} must be positive")
    if group != 1 and any(d != 1 for d in dilation.values):
        raise ConvPoolArgError("group and dilation cannot be combined (Caffe2 does not support dilated "
                               "grouped convolution)")
    if global_pooling and (any(p != 0 for p in pads.values) or any(s != 1 for s in stride.values)
                           or any(d != 1 for d in dilation.values)):
        raise ConvPoolArgError("global_pooling takes the whole spatial extent: pad, stride and dilation "
                               "must stay at their defaults")
    return ConvPoolSpec(kernel=kernel, stride=stride, pads=pads, dilation=dilation, adj=adj, group=group,
                        order=order, legacy_pad=legacy_pad, global_pooling=global_pooling)
