"""Reverse-mode gradient construction over NetDefs: ``Net.AddGradientOperators`` (caffe2-facts §4).

The forward ops are replayed with an SSA version per blob name; then the ops are swept from last
to first, each one that has an output gradient asking its gradient maker (the op registry's, else a
maker registered here with ``GradientRegistry.RegisterGradient``) for gradient ops. When one blob
version feeds several ops that each produce a gradient for it, the gradients are renamed apart and
summed right after the gradient ops of the blob's first reader.

>>> from netjit.proto.args import make_op
>>> ops = [make_op("FC", ["X", "W", "b"], ["Y"]), make_op("Relu", ["Y"], ["Y"])]
>>> grad_ops, grad_map = add_gradient_operators(ops, ["Y"])
>>> [op.type for op in grad_ops], grad_map["W"]
(['ConstantFill', 'ReluGradient', 'FCGradient'], 'W_grad')
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple, Sequence

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.compiler.ops.registry import UnknownOpError
from netjit.core import BlobReference, GradientSlice
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_op
from netjit.scope import CurrentDeviceScope, CurrentNameScope

OperatorDef = caffe2_pb2.OperatorDef
PythonMaker = Callable[[OperatorDef, list], tuple[Any, list]]


class GradientConstructionError(RuntimeError):
    """The gradient of a net cannot be built (blob versions clash, a maker fails, ...)."""


# --------------------------------------------------------------------------------------------
# The Python-side gradient registry
# --------------------------------------------------------------------------------------------
class GradientRegistry:
    """Python gradient makers, consulted when the op registry has none for an op type.

    >>> @GradientRegistry.RegisterGradient("MyOp")
    ... def _my_op_grad(op, g_output):
    ...     return [], [g_output[0]]
    """
    gradient_registry_: dict[str, PythonMaker] = {}

    @classmethod
    def RegisterGradient(cls, op_type: str) -> Callable[[PythonMaker], PythonMaker]:
        def wrapper(func: PythonMaker) -> PythonMaker:
            cls.gradient_registry_[op_type] = func
            return func
        return wrapper

    @classmethod
    def GetGradientForOp(cls, op: OperatorDef, g_output: Sequence[Any]) -> tuple[list, list]:
        """The registry's maker first (with Caffe2's copy rules); a Python maker only if that fails."""
        try:
            grad_ops, g_input = gradient_ops_for(op, [_as_name_or_slice(g) for g in g_output])
            for gop in grad_ops:
                # Caffe2's C++ makers always set a name, even an empty one, and it shows in Proto().
                if not gop.HasField("name"):
                    gop.name = ""
        except (UnknownOpError, ValueError, KeyError, IndexError, TypeError) as err:
            maker = cls.gradient_registry_.get(op.type)
            if maker is None:
                raise GradientConstructionError(
                    f"cannot build the gradient of {op.type} (inputs {list(op.input)}, outputs "
                    f"{list(op.output)}): {err}") from err
            grad_ops, g_input = maker(op, list(g_output))
        if grad_ops is None:
            grad_ops = []
        elif isinstance(grad_ops, OperatorDef):
            grad_ops = [grad_ops]
        return list(grad_ops), [_as_name_or_slice(g) for g in g_input]

    @classmethod
    def GetBackwardPass(cls, operators: Iterable[OperatorDef], ys: Any,
                        ys_generate_gradient: bool = False) -> tuple[list, dict]:
        """The gradient ops of ``ys`` over ``operators`` and, as Caffe2 returned it, a map from
        BlobReference to its gradient's BlobReference (or GradientSlice of BlobReferences); blobs
        with no gradient are left out.

        >>> from netjit import core
        >>> ops = [core.CreateOperator("Relu", ["x"], ["y"])]
        >>> _, grads = GradientRegistry.GetBackwardPass(ops, ["y"])
        >>> type(grads[core.BlobReference("x")]).__name__, str(grads[core.BlobReference("x")])
        ('BlobReference', 'x_grad')
        """
        grad_ops, grad_map = add_gradient_operators(list(operators), ys)
        out: dict[Any, Any] = {}
        for blob, grad in grad_map.items():
            if grad is None:
                continue
            if isinstance(grad, GradientSlice):
                out[BlobReference(str(blob))] = GradientSlice(BlobReference(str(grad.indices)),
                                                              BlobReference(str(grad.values)))
            else:
                out[BlobReference(str(blob))] = BlobReference(str(grad))
        return grad_ops, out


def _as_name_or_slice(g: Any) -> Any:
    """None, a blob name (str), or a GradientSlice of names: makers may hand back BlobReferences
    or plain (indices, values) tuples."""
    if g is None:
        return None
    if isinstance(g, GradientSlice) or (isinstance(g, tuple) and len(g) == 2):
        return GradientSlice(str(g[0]), str(g[1]))
    return str(g)


# --------------------------------------------------------------------------------------------
# SSA replay and gradient generators
# --------------------------------------------------------------------------------------------
@dataclass
class _OpSSA:
    op: OperatorDef
    in_versions: dict[str, int]
    out_versions: dict[str, int]


class _DenseGen(NamedTuple):
    """Where one contribution to a dense gradient comes from: output ``idx`` of ``grad_op``, or,
    with grad_op None, a blob passed straight through from an output gradient (Add, Sum)."""
    grad_op: OperatorDef | None
    idx: int
    gradient: str
    device_option: Any


class _SparseGen(NamedTuple):
    """The same for a sparse gradient: the ops writing its indices and its values."""
    op_i: OperatorDef | None
    idx_i: int
    op_v: OperatorDef | None
    idx_v: int
    gradient: GradientSlice
    device_option: Any


def _index_in(grads: Sequence[Any], name: str) -> int | None:
    """Which entry of a gradient list ``name`` belongs to (dense name, or either half of a slice)."""
    for i, g in enumerate(grads):
        if g is None:
            continue
        if isinstance(g, GradientSlice):
            if name in (g.indices, g.values):
                return i
        elif g == name:
            return i
    return None


def _same_device(a: Any, b: Any) -> bool:
    # Node names and random seeds do not matter; CPU options match whatever their gpu id says.
    if a is None or b is None:
        return a is b
    if not a.device_type or not b.device_type:
        return not a.device_type and not b.device_type
    return a.device_type == b.device_type and a.cuda_gpu_id == b.cuda_gpu_id


class _Tape:
    """The forward ops with SSA versions, and the bookkeeping of the reverse sweep."""

    def __init__(self, ops: Sequence[OperatorDef]):
        self.ssa: list[_OpSSA] = []
        self.frontier: dict[str, int] = defaultdict(int)       # latest version of each blob
        self.readers: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        self.out_history: dict[str, list[tuple[OperatorDef, int]]] = defaultdict(list)
        self.in_history: dict[str, list[tuple[OperatorDef, int]]] = defaultdict(list)
        # Version of each blob the gradient now in the map stands for.
        self.grad_frontier: dict[str, int] = {}
        self.generators: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
        for op in ops:
            self._play(op)
        self._check_stop_gradients(ops)

    def _play(self, op: OperatorDef) -> None:
        index = len(self.ssa)
        in_versions: dict[str, int] = {}
        for name in op.input:
            in_versions[name] = self.frontier[name]
            self.readers[name][self.frontier[name]].append(index)
            self.in_history[name].append((op, self.frontier[name]))
        out_versions: dict[str, int] = {}
        for name in op.output:
            # The first write of a never-read name is version 0; every later write bumps it.
            if name in self.frontier:
                self.frontier[name] += 1
            else:
                self.frontier[name] = 0
            out_versions[name] = self.frontier[name]
            self.out_history[name].append((op, self.frontier[name]))
        self.ssa.append(_OpSSA(op, in_versions, out_versions))

    def _check_stop_gradients(self, ops: Sequence[OperatorDef]) -> None:
        for op in ops:
            if op.type == "StopGradient" and op.output[0] not in self.readers:
                raise GradientConstructionError(
                    f"the output {op.output[0]!r} of StopGradient is never read by another op, so it "
                    f"stops nothing; use the same blob as input and output (StopGradient X -> X). "
                    f"Op: {_describe(op)}")

    # ---------------------------------------------------------------------------- checks
    def _history(self, name: str, written: bool) -> str:
        entries = self.out_history[name] if written else self.in_history[name]
        verb = "written by" if written else "read by"
        lines = [f"  version {v} {verb} {_describe(op)}" for op, v in entries]
        hint = ("was the same output blob used by two different ops?" if written
                else "was the blob overwritten by a later op?")
        return f"\nVersion history of {name!r} ({hint}):\n" + "\n".join(lines)

    def check_grad_op_input(self, name: str, g_output: Sequence[Any], fwd: _OpSSA,
                            local: set[str]) -> None:
        """A gradient op may read: an output gradient (of the version the forward op wrote), a
        forward input/output (still at the version the forward op saw), or a blob an earlier
        gradient op of the same forward op wrote."""
        k = _index_in(g_output, name)
        if k is not None:
            out = fwd.op.output[k]
            if fwd.out_versions[out] != self.grad_frontier.get(out):
                raise GradientConstructionError(
                    f"gradient blob {name!r} should belong to version {fwd.out_versions[out]} of {out!r}, "
                    f"but the gradient at hand is for version {self.grad_frontier.get(out)}."
                    + self._history(out, written=True))
        elif name in fwd.out_versions:
            if self.frontier[name] != fwd.out_versions[name]:
                raise GradientConstructionError(
                    f"the gradient of {fwd.op.type} needs its output {name!r} at version "
                    f"{fwd.out_versions[name]}, but a later op overwrote it (the net ends with version "
                    f"{self.frontier[name]})." + self._history(name, written=True))
        elif name in fwd.in_versions:
            if self.frontier[name] != fwd.in_versions[name]:
                raise GradientConstructionError(
                    f"the gradient of {fwd.op.type} needs its input {name!r} at version "
                    f"{fwd.in_versions[name]}, but a later op overwrote it (the net ends with version "
                    f"{self.frontier[name]})." + self._history(name, written=False))
        elif name not in local:
            raise GradientConstructionError(
                f"a gradient op of {fwd.op.type} reads {name!r}, which is neither an input or output of "
                f"the forward op nor written by one of its gradient ops. Op: {_describe(fwd.op)}")

    # ----------------------------------------------------------------------- generators
    def record_generators(self, fwd_index: int, grad_ops: list, g_output: list, g_input: list) -> None:
        """Check the gradient ops' inputs; note which op (output) produces each input gradient."""
        fwd = self.ssa[fwd_index]
        local: set[str] = set()
        sparse: dict[str, list[_SparseGen]] = defaultdict(list)
        for gop in grad_ops:
            for name in gop.input:
                self.check_grad_op_input(name, g_output, fwd, local)
            local.update(gop.output)
            for out_idx, out in enumerate(gop.output):
                k = _index_in(g_input, out)
                if k is None:
                    continue
                in_name = fwd.op.input[k]
                version = fwd.in_versions[in_name]
                g = g_input[k]
                if isinstance(g, GradientSlice):
                    if g.indices == out:
                        sparse[in_name].append(_SparseGen(gop, out_idx, None, 0, g, gop.device_option))
                    else:
                        sparse[in_name].append(_SparseGen(None, 0, gop, out_idx, g, gop.device_option))
                else:
                    self.generators[in_name][version].append(_DenseGen(gop, out_idx, g, gop.device_option))
        for in_name, parts in sparse.items():
            self.generators[in_name][fwd.in_versions[in_name]].append(_merge_sparse(in_name, parts))
        # Gradients handed through without an op (Add, Sum, Alias) still count as contributions.
        for k, g in enumerate(g_input):
            if not g:
                continue
            in_name = fwd.op.input[k]
            version = fwd.in_versions[in_name]
            if isinstance(g, GradientSlice):
                if g.indices not in local and g.values not in local:
                    self.generators[in_name][version].append(
                        _SparseGen(None, 0, None, 0, g, fwd.op.device_option))
            elif g not in local:
                self.generators[in_name][version].append(_DenseGen(None, 0, g, fwd.op.device_option))
        for k, g in enumerate(g_input):
            if g is not None:
                in_name = fwd.op.input[k]
                self.grad_frontier[in_name] = fwd.in_versions[in_name]

    # ---------------------------------------------------------------------- accumulation
    def accumulate(self, fwd_index: int) -> tuple[list, dict[str, Any]]:
        """Sum ops for the inputs whose first reader is this op and that got ≥2 gradients."""
        fwd = self.ssa[fwd_index]
        sum_ops: list = []
        new_grads: dict[str, Any] = {}
        for name in dict.fromkeys(fwd.op.input):  # unique, in input order
            version = fwd.in_versions[name]
            readers = self.readers[name][version]
            if len(readers) <= 1 or readers[0] != fwd_index:
                continue
            gens = self.generators[name][version]
            if not self._needs_sum(name, gens):
                continue
            ops, g = self._sum_ops(name, gens)
            self.generators[name][version] = [_DenseGen(ops[0], 0, ops[0].output[0], ops[0].device_option)]
            sum_ops.extend(ops)
            new_grads[name] = g
        return sum_ops, new_grads

    @staticmethod
    def _needs_sum(name: str, gens: list) -> bool:
        if len({type(g) for g in gens}) > 1:
            raise GradientConstructionError(
                f"blob {name!r} receives both sparse and dense gradients; accumulating a mix of the two "
                f"is not supported")
        if len(gens) < 2:
            return False
        devices = [g.device_option for g in gens if g.device_option is not None]
        if any(not _same_device(d, devices[0]) for d in devices[1:]):
            raise GradientConstructionError(
                f"the gradients of {name!r} come from ops on different devices; they cannot be summed")
        return True

    @staticmethod
    def _base_name(name: str, gens: list) -> str:
        for g in gens:
            if isinstance(g, _DenseGen):
                if g.grad_op is not None:
                    return g.grad_op.output[g.idx]
            else:
                if g.op_i is not None:
                    return _strip(g.op_i.output[g.idx_i], "_indices")
                if g.op_v is not None:
                    return _strip(g.op_v.output[g.idx_v], "_values")
        return name + "_grad"

    def _sum_ops(self, name: str, gens: list) -> tuple[list, Any]:
        base = self._base_name(name, gens)
        if isinstance(gens[0], _DenseGen):
            ops, g = _dense_sum(gens, base)
        else:
            ops, g = _sparse_concat(gens, base)
        # The sum runs where the contributions were computed (they all agree, checked above).
        for gen in gens:
            op = gen.grad_op if isinstance(gen, _DenseGen) else (gen.op_v or gen.op_i)
            if op is not None:
                if op.HasField("device_option"):
                    for s in ops:
                        s.device_option.CopyFrom(op.device_option)
                break
        return ops, g


def _strip(s: str, suffix: str) -> str:
    return s[: -len(suffix)] if s.endswith(suffix) else s


def _merge_sparse(name: str, parts: list[_SparseGen]) -> _SparseGen:
    """One generator per sparse gradient: join the ops writing its indices and its values."""
    if len(parts) == 1:
        return parts[0]
    if len(parts) != 2 or parts[0].gradient != parts[1].gradient:
        raise GradientConstructionError(f"the sparse gradient of {name!r} is written by more than one "
                                        f"indices/values pair of ops")
    a, b = parts
    return _SparseGen(a.op_i or b.op_i, a.idx_i + b.idx_i, a.op_v or b.op_v, a.idx_v + b.idx_v,
                      a.gradient, a.device_option)


def _split_name(grad_op: OperatorDef, idx: int, count: int) -> str:
    """Rename one gradient op output apart so that several contributions can coexist."""
    renamed = f"_{grad_op.output[idx]}_autosplit_{count}"
    grad_op.output[idx] = renamed
    return renamed


def _dense_sum(gens: list[_DenseGen], base: str) -> tuple[list, str]:
    inputs: list[str] = []
    count = 0
    first = True
    for gen in gens:
        if gen.grad_op is None:
            inputs.append(gen.gradient)        # passed-through gradients join under their own names
        elif first:
            first = False                       # the first producer in the sweep keeps its name
            inputs.append(gen.grad_op.output[gen.idx])
        else:
            inputs.append(_split_name(gen.grad_op, gen.idx, count))
            count += 1
    if base in inputs:
        # Sum may only run in place on its first input.
        k = inputs.index(base)
        inputs[0], inputs[k] = inputs[k], inputs[0]
    return [_new_op("Sum", inputs, [base])], base


def _sparse_concat(gens: list[_SparseGen], base: str) -> tuple[list, GradientSlice]:
    indices: list[str] = []
    values: list[str] = []
    count_i = count_v = 0
    for gen in gens:
        if gen.op_i is not None:
            indices.append(_split_name(gen.op_i, gen.idx_i, count_i))
            count_i += 1
        else:
            indices.append(gen.gradient.indices)
        if gen.op_v is not None:
            values.append(_split_name(gen.op_v, gen.idx_v, count_v))
            count_v += 1
        else:
            values.append(gen.gradient.values)
    ops = [_new_op("Concat", indices, [base + "_indices_concat", base + "_indices_concat_split"], axis=0),
           _new_op("Concat", values, [base + "_values_concat", base + "_values_concat_split"], axis=0)]
    return ops, GradientSlice(base + "_indices_concat", base + "_values_concat")


def _new_op(op_type: str, inputs: list[str], outputs: list[str], **kwargs: Any) -> OperatorDef:
    # What core.CreateOperator gives: an explicit empty name and the current DeviceScope.
    return make_op(op_type, inputs, outputs, name="", device_option=CurrentDeviceScope(), **kwargs)


def _describe(op: OperatorDef) -> str:
    return f"{op.type}({', '.join(op.input)}) -> ({', '.join(op.output)})"


# --------------------------------------------------------------------------------------------
# The reverse sweep
# --------------------------------------------------------------------------------------------
def _seed_ops(tape: _Tape, ys: dict[Any, Any]) -> tuple[list, dict[str, Any]]:
    """A ConstantFill of ones for every y without a given gradient; these ops come first."""
    ops: list = []
    grads: dict[str, Any] = {}
    for y, g in ys.items():
        name = str(y)
        seed = None
        if g is None:
            # As core.CreateOperator would: plain-string names get the current name scope.
            scope = CurrentNameScope()
            y_in = name if isinstance(y, BlobReference) else scope + name
            seed = _new_op("ConstantFill", [y_in], [scope + name + "_autogen_grad"], value=1.0)
            ops.append(seed)
            g = seed.output[0]
        grads[name] = _as_name_or_slice(g)
        if seed is not None:
            tape.generators[name][tape.frontier[name]].append(_DenseGen(seed, 0, g, seed.device_option))
    return ops, grads


def add_gradient_operators(net_def: Any, ys: Any, skip: int = 0) -> tuple[list, dict[str, Any]]:
    """Gradient ops for ``ys`` over the ops of ``net_def`` (a NetDef or a list of OperatorDefs),
    ignoring its first ``skip`` ops.

    ``ys`` is a list of blobs (each seeded with ones), or a dict {blob: its gradient blob, or None
    to seed it}. Returns the ops to append, in order, and {blob name: gradient name or
    GradientSlice} for every blob that received a gradient.
    """
    ops = list(net_def.op) if isinstance(net_def, caffe2_pb2.NetDef) else list(net_def)
    ops = ops[skip:]
    if isinstance(ys, (list, tuple)):
        ys = {y: None for y in ys}
    elif not isinstance(ys, dict):
        raise TypeError(f"ys must be a list of blobs or a dict {{blob: gradient}}, got {type(ys).__name__}")
    tape = _Tape(ops)
    n = len(tape.ssa)
    for y in ys:
        name = str(y)
        tape.grad_frontier[name] = tape.frontier[name]
        tape.readers[name][tape.frontier[name]].append(n)  # each y counts as one more reader
    all_ops, grads = _seed_ops(tape, ys)

    for index in range(n - 1, -1, -1):
        fwd = tape.ssa[index]
        g_output = [grads.get(name) for name in fwd.op.output]
        if any(g is not None for g in g_output) or fwd.op.type == "ZeroGradient":
            try:
                grad_ops, g_input = GradientRegistry.GetGradientForOp(fwd.op, g_output)
            except GradientConstructionError:
                raise
            except Exception as err:  # a maker's own failure: say which op it was
                raise GradientConstructionError(
                    f"the gradient maker of op #{index + skip} ({_describe(fwd.op)}) failed: {err}") from err
            if len(g_input) != len(fwd.op.input):
                raise GradientConstructionError(
                    f"the gradient maker of {fwd.op.type} returned {len(g_input)} input gradients for "
                    f"{len(fwd.op.input)} inputs")
            tape.record_generators(index, grad_ops, g_output, g_input)
            updates: dict[str, Any] = {}
            for name, g in zip(fwd.op.input, g_input):
                # A None must not erase a gradient another reader gave, unless this op also
                # rewrote the blob (in place): then the older gradient is for another version.
                if g is not None or name not in grads or name in fwd.op.output:
                    updates[name] = g
            grads.update(updates)
            all_ops.extend(grad_ops)
        sum_ops, summed = tape.accumulate(index)
        grads.update(summed)
        all_ops.extend(sum_ops)

    return all_ops, {name: g for name, g in grads.items() if g is not None}


# If/While/Do differentiate through their sub-nets; their makers (which call back into this
# module) live with the control-flow helpers and register with GradientRegistry on import.
import netjit.control_ops_grad  # noqa: E402,F401
