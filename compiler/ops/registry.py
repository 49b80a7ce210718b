"""The operator registry: one ``OpDef`` record per Caffe2 op type.

A record holds everything the rest of netjit needs to know about an op: its schema (input/output
counts, typed arguments, in-place rules), shape/dtype inference, fusion category, the numpy
reference implementation (the op's living definition), an optional scalar expression template for
elementwise ops, per-backend lowering entries (``Lowering``: how each backend compiles it), and the
gradient maker.

Ops are declared with :func:`defop`, decorating the reference::

    @defop("Relu", inputs=1, outputs=1, inplace=[(0, 0)], category=ELEMWISE,
           infer=same_as(0), expr="max({0}, 0)",
           gradient=simple_gradient("ReluGradient", ["O0", "GO0"], ["GI0"]))
    def relu(ctx, x):
        return np.maximum(x, 0)
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np

# Fusion categories (DESIGN.md, "The operator registry"). Plain strings: categories are data.
ELEMWISE = "elemwise"        # y[i] = f(x0[i], x1[i], ...), same shapes
BROADCAST = "broadcast"      # elementwise with Caffe2 legacy or numpy broadcasting
INJECTIVE = "injective"      # each output element reads one input element (Transpose, Slice, ...)
REDUCE = "reduce"            # reductions (AveragedLoss, Softmax rows, ...)
OUT_FUSABLE = "out_fusable"  # FC/Conv/MatMul: an elementwise epilogue may fuse into the output loop
OPAQUE = "opaque"            # compiled, but as its own kernel
HOST = "host"                # runs in Python against the workspace; never compiled
CATEGORIES = frozenset({ELEMWISE, BROADCAST, INJECTIVE, REDUCE, OUT_FUSABLE, OPAQUE, HOST})

INF = 1 << 30  # "any number" of inputs or outputs


class TensorType(NamedTuple):
    """What shape inference knows about a blob: a concrete shape and a numpy dtype."""
    shape: tuple[int, ...]
    dtype: np.dtype


class OpSchemaError(ValueError):
    """An OperatorDef that does not fit its op's schema (counts, in-place, argument types)."""


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------
# Argument kinds and the Argument fields Caffe2 reads each from. Strict: a float is read only
# from `f`, an int or bool only from `i`, a string only from `s` (docs/caffe2-facts.md §2.1).
_FIELD_OF_KIND = {
    "float": "f", "int": "i", "bool": "i", "str": "s", "net": "n",
    "floats": "floats", "ints": "ints", "strs": "strings", "nets": "nets",
}
_KIND_WORDS = {"float": "a float", "int": "an int", "bool": "a bool (int)", "str": "a string",
               "net": "a NetDef", "floats": "a list of floats", "ints": "a list of ints",
               "strs": "a list of strings", "nets": "a list of NetDefs"}


@dataclass(frozen=True)
class ArgSpec:
    """One declared argument. ``kind`` is a key of _FIELD_OF_KIND or "any" (raw value, any field)."""
    name: str
    kind: str
    default: Any = None
    required: bool = False


def arg(name: str, kind: str, default: Any = None, required: bool = False) -> ArgSpec:
    if kind != "any" and kind not in _FIELD_OF_KIND:
        raise ValueError(f"unknown argument kind {kind!r} for {name!r}")
    return ArgSpec(name, kind, default, required)


def _present_fields(a: Any) -> list[str]:
    fields = [f for f in ("f", "i", "s", "n") if a.HasField(f)]
    fields += [f for f in ("floats", "ints", "strings", "nets") if len(getattr(a, f))]
    return fields


def _field_words(fields: list[str]) -> str:
    words = {"f": "a float", "i": "an int", "s": "a string", "n": "a NetDef", "floats": "a list of floats",
             "ints": "a list of ints", "strings": "a list of strings", "nets": "a list of NetDefs"}
    return " and ".join(words[f] for f in fields) if fields else "no value"


def _decode_one(spec: ArgSpec, a: Any) -> Any:
    fields = _present_fields(a)
    if spec.kind == "any":
        if not fields:
            return []
        value = getattr(a, fields[0])
        return list(value) if fields[0] in ("floats", "ints", "strings", "nets") else value
    want = _FIELD_OF_KIND[spec.kind]
    if want in fields:
        value = getattr(a, want)
    elif not fields and want in ("floats", "ints", "strings", "nets"):
        value = []  # an empty list sets no field at all
    else:
        hint = ""
        if spec.kind == "float" and "i" in fields:
            hint = f" (write {spec.name}={float(a.i)!r}, not {a.i})"
        raise OpSchemaError(f"argument {spec.name!r} must be {_KIND_WORDS[spec.kind]}, "
                            f"but it holds {_field_words(fields)}{hint}")
    if spec.kind == "bool":
        return bool(value)
    if spec.kind == "str":
        return value.decode("utf-8")
    if spec.kind == "strs":
        return [v.decode("utf-8") for v in value]
    if spec.kind in ("floats", "ints", "nets"):
        return list(value)
    return value


class Args(dict):
    """Decoded arguments: declared ones typed (or defaulted); undeclared ones kept raw.

    ``args.has(name)`` tells whether the op set an argument explicitly. ``num_inputs`` and
    ``num_outputs`` are the op's blob counts (None when decoded without an op), for inference
    rules whose result depends on them (Split into equal parts, SpatialBN's training outputs).
    """
    def __init__(self, values: dict[str, Any], present: frozenset[str],
                 num_inputs: int | None = None, num_outputs: int | None = None):
        super().__init__(values)
        self.present = present
        self.num_inputs = num_inputs
        self.num_outputs = num_outputs

    def has(self, name: str) -> bool:
        return name in self.present

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# --------------------------------------------------------------------------------------------
# Schema and records
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Schema:
    inputs: tuple[int, int]
    outputs: tuple[int, int]
    args: tuple[ArgSpec, ...] = ()
    # (input index, output index) pairs that may share a blob name; "all" allows any pair.
    inplace: frozenset[tuple[int, int]] | str = frozenset()
    # Pairs that must share a name (Iter; SpatialBN's running statistics in training).
    enforce_inplace: frozenset[tuple[int, int]] = frozenset()
    # Extra count rule, e.g. "outputs == inputs" for WeightedSum-like ops: fn(n_in, n_out) -> msg|None
    check_counts: Callable[[int, int], str | None] | None = None

    def arg_spec(self, name: str) -> ArgSpec | None:
        for spec in self.args:
            if spec.name == name:
                return spec
        return None


GradientMaker = Callable[["GradientContext"], tuple[list, list]]


@dataclass(frozen=True)
class Lowering:
    """How one backend compiles an op: the per-backend part of the op's record.

    Each entry is a callable or a ``"module:attribute"`` string resolved on first use, so op modules
    name their kernels without importing numba (importing the registry stays cheap). Entries, for
    the numba-cpu backend (its one table of rules, ``numba_cpu.ENTRY_RULES``, says what each becomes):

    - ``head(node, values) -> ProducerCode | None``: the op heads a fused group (FC, Conv), its
      elementwise epilogue fused into the output loop;
    - ``standalone(node, values) -> (kernel, params) | None``: the op's own hand-written kernel;
    - ``expr(node) -> str``: an elementwise expression that depends on the instance (Sum's arity);
    - ``loop(node, values) -> LoopForm | None``: the per-element form of an op that is elementwise
      only for some instances (WeightedSum, AveragedLossGradient);
    - ``fill(node, values) -> FillMaker | None``: a host-side fast path for a random filler (shape and
      arguments resolved once at plan time; see codegen/fills.py).
    ``threaded`` says the standalone kernel cuts its work across threads (the driver then pins
    OpenBLAS to one thread for the run; a head says so per instance, ``ProducerCode.threaded``). A ``None`` from a maker is not a failure: that
    instance is simply not compiled this way (it runs its reference as a host step).

        >>> lw = Lowering(standalone="netjit.compiler.codegen.reductions:softmax")
        >>> lw.resolve("standalone").__name__
        'softmax'
    """
    head: Callable[..., Any] | str | None = None
    standalone: Callable[..., Any] | str | None = None
    expr: Callable[..., Any] | str | None = None
    loop: Callable[..., Any] | str | None = None
    threaded: bool = False
    fill: Callable[..., Any] | str | None = None

    def resolve(self, entry: str) -> Callable[..., Any] | None:
        value = getattr(self, entry)
        if isinstance(value, str):
            found = _RESOLVED.get(value)
            if found is None:
                import importlib
                module, _, attr = value.partition(":")
                found = _RESOLVED[value] = getattr(importlib.import_module(module), attr)
            value = found
        return value


_RESOLVED: dict[str, Any] = {}   # "module:attribute" -> the object (planning asks many times)


@dataclass
class OpDef:
    type: str
    schema: Schema
    category: str
    reference: Callable[..., Any]
    infer: Callable[[Args, list[TensorType]], list[TensorType]] | None = None
    expr: str | None = None
    gradient: GradientMaker | None = None
    # Caffe2 copies the forward op's args/engine/device onto gradient ops unless the maker opts out.
    grad_copy_args: bool = True
    # Ops whose gradient Caffe2 refuses to make (Print, Summarize, Accuracy when asked).
    no_gradient_reason: str | None = None
    doc: str = ""
    # Argument-value checks Caffe2 made when it constructed the op (an unknown LearningRate policy,
    # a ConstantFill value that does not fit its dtype): raise ValueError. Run by ``check``, so a
    # bad net fails at CreateNet, not at its first run.
    validate: Callable[[Args], None] | None = None
    # Per-backend lowering entries ({"numba-cpu": Lowering(...), ...}); see ``Lowering``.
    lowering: dict[str, Lowering] = field(default_factory=dict)
    # Ops elementwise over X with some inputs indexed by X's channel (SpatialBN in test mode, PRelu):
    # a ``per_channel.PerChannel`` (expression + which inputs are per channel), shared by backends
    # like ``expr``; fusion renders such an op as a loop step, e.g. in a Conv epilogue.
    per_channel: Any = None

    def lowering_entry(self, backend: str, entry: str) -> Callable[..., Any] | None:
        """The resolved ``entry`` of this op's lowering for ``backend``, or None."""
        lw = self.lowering.get(backend)
        return lw.resolve(entry) if lw is not None else None

    def decode_args(self, op: Any) -> Args:
        """Decode ``op.arg`` by this schema, strictly typed; raise OpSchemaError naming the argument."""
        values: dict[str, Any] = {spec.name: spec.default for spec in self.schema.args}
        present: set[str] = set()
        for a in op.arg:
            spec = self.schema.arg_spec(a.name)
            if spec is None:
                # Caffe2 ignores arguments an op does not read; brew leaks `order`, `use_cudnn`, ...
                fields = _present_fields(a)
                raw = getattr(a, fields[0]) if fields else []
                values[a.name] = list(raw) if fields and fields[0] in ("floats", "ints", "strings", "nets") else raw
            else:
                values[a.name] = _decode_one(spec, a)
            present.add(a.name)
        for spec in self.schema.args:
            if spec.required and spec.name not in present:
                raise OpSchemaError(f"argument {spec.name!r} is required")
        return Args(values, frozenset(present), len(op.input), len(op.output))

    def check(self, op: Any) -> Args:
        """Check counts, in-place rules and argument types of one OperatorDef; return decoded args."""
        n_in, n_out = len(op.input), len(op.output)
        lo, hi = self.schema.inputs
        if not lo <= n_in <= hi:
            raise OpSchemaError(f"takes {_count_words(lo, hi)} input(s), got {n_in}")
        lo, hi = self.schema.outputs
        if not lo <= n_out <= hi:
            raise OpSchemaError(f"produces {_count_words(lo, hi)} output(s), got {n_out}")
        if self.schema.check_counts is not None:
            msg = self.schema.check_counts(n_in, n_out)
            if msg:
                raise OpSchemaError(msg)
        for o, out in enumerate(op.output):
            for i, inp in enumerate(op.input):
                if inp == out and not self.allows_inplace(i, o):
                    raise OpSchemaError(f"input {i} and output {o} share blob {out!r}, which this op "
                                        f"does not allow in place")
        for i, o in self.schema.enforce_inplace:
            if i < n_in and o < n_out and op.input[i] != op.output[o]:
                raise OpSchemaError(f"output {o} ({op.output[o]!r}) must be the same blob as input {i} "
                                    f"({op.input[i]!r})")
        args = self.decode_args(op)
        if self.validate is not None:
            self.validate(args)
        return args

    def allows_inplace(self, i: int, o: int) -> bool:
        rule = self.schema.inplace
        return rule == "all" or (i, o) in rule


def _count_words(lo: int, hi: int) -> str:
    if lo == hi:
        return str(lo)
    if hi >= INF:
        return f"at least {lo}"
    return f"{lo} to {hi}"


# --------------------------------------------------------------------------------------------
# The registry proper
# --------------------------------------------------------------------------------------------
_REGISTRY: dict[str, OpDef] = {}


class UnknownOpError(KeyError):
    def __init__(self, op_type: str):
        self.op_type = op_type
        close = difflib.get_close_matches(op_type, list(_REGISTRY), n=3, cutoff=0.6)
        lower = [t for t in _REGISTRY if t.lower() == op_type.lower() and t not in close]
        suggestions = lower + close
        hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(f"unknown operator type {op_type!r}{hint}")

    def __str__(self) -> str:
        return self.args[0]


def register(opdef: OpDef) -> OpDef:
    if opdef.type in _REGISTRY:
        raise ValueError(f"operator {opdef.type!r} is registered twice")
    if opdef.category not in CATEGORIES:
        raise ValueError(f"operator {opdef.type!r}: unknown category {opdef.category!r}")
    _REGISTRY[opdef.type] = opdef
    return opdef


def lookup(op_type: str) -> OpDef:
    _ensure_loaded()
    try:
        return _REGISTRY[op_type]
    except KeyError:
        raise UnknownOpError(op_type) from None


def has_op(op_type: str) -> bool:
    _ensure_loaded()
    return op_type in _REGISTRY


def all_ops() -> dict[str, OpDef]:
    _ensure_loaded()
    return dict(_REGISTRY)


def _ensure_loaded() -> None:
    # The op modules register themselves on import; importing the package imports them all.
    import netjit.compiler.ops  # noqa: F401


def _counts(spec: int | tuple[int, int]) -> tuple[int, int]:
    return (spec, spec) if isinstance(spec, int) else (spec[0], spec[1])


def defop(op_type: str, *, inputs: int | tuple[int, int], outputs: int | tuple[int, int],
          args: Sequence[ArgSpec] = (), inplace: Iterable[tuple[int, int]] | str = (),
          enforce_inplace: Iterable[tuple[int, int]] = (), category: str = OPAQUE,
          infer: Callable | None = None, expr: str | None = None, gradient: GradientMaker | None = None,
          grad_copy_args: bool = True, no_gradient_reason: str | None = None,
          check_counts: Callable[[int, int], str | None] | None = None,
          validate: Callable[[Args], None] | None = None,
          lowering: dict[str, Lowering] | None = None, per_channel: Any = None,
          ) -> Callable[[Callable[..., Any]], OpDef]:
    """Declare an op; decorates its numpy reference ``fn(ctx, *inputs) -> output | tuple``."""
    schema = Schema(inputs=_counts(inputs), outputs=_counts(outputs), args=tuple(args),
                    inplace=inplace if isinstance(inplace, str) else frozenset(inplace),
                    enforce_inplace=frozenset(enforce_inplace), check_counts=check_counts)

    def wrap(fn: Callable[..., Any]) -> OpDef:
        return register(OpDef(type=op_type, schema=schema, category=category, reference=fn, infer=infer,
                              expr=expr, gradient=gradient, grad_copy_args=grad_copy_args,
                              no_gradient_reason=no_gradient_reason, doc=(fn.__doc__ or "").strip(),
                              validate=validate, lowering=dict(lowering or {}), per_channel=per_channel))
    return wrap


def lower(backend: str, op_types: str | Iterable[str], **entries: Any) -> None:
    """Add ``backend``'s lowering entries to already registered ops (several names at once for
    Conv/Conv2D-style aliases). Prefer ``defop(..., lowering=...)`` in the op's own block."""
    for op_type in [op_types] if isinstance(op_types, str) else op_types:
        opdef = _REGISTRY[op_type]
        old = opdef.lowering.get(backend, Lowering())
        opdef.lowering[backend] = Lowering(**{**old.__dict__, **entries})


def alias(new_type: str, existing: str) -> OpDef:
    """Register ``new_type`` as another name of ``existing`` (Checkpoint/Snapshot, Conv/Conv2D)."""
    base = _REGISTRY[existing]
    return register(OpDef(type=new_type, schema=base.schema, category=base.category, reference=base.reference,
                          infer=base.infer, expr=base.expr, gradient=base.gradient,
                          grad_copy_args=base.grad_copy_args, no_gradient_reason=base.no_gradient_reason,
                          doc=base.doc, validate=base.validate, lowering=base.lowering,
                          per_channel=base.per_channel))
