"""``caffe2.python.core``: building NetDefs from Python.

>>> net = Net("my_first_net")
>>> X = net.GaussianFill([], ["X"], mean=0.0, std=1.0, shape=[2, 3], run_once=0)
>>> Y = X.Relu([], "Y")
>>> [op.type for op in net.Proto().op]
['GaussianFill', 'Relu']
"""
from __future__ import annotations

import difflib
from collections import namedtuple
from typing import Any, Iterable, Sequence

import numpy as np

from netjit.compiler.ops.registry import all_ops, has_op
from netjit.core_plan import (ExecutionStep, Plan, add_nets_in_order, execution_step,  # noqa: F401  (re-exported API)
                              get_net_name, scoped_execution_step, to_execution_step)
from netjit.proto import caffe2_pb2
from netjit.proto.args import make_argument
from netjit.scope import CurrentDeviceScope, CurrentNameScope, DeviceScope, NameScope  # noqa: F401
from netjit.engine_pref import (SetEnginePref, SetGlobalEnginePref, SetOpEnginePref,  # noqa: F401  (re-exported API)
                                SetPerOpEnginePref)

DataType = caffe2_pb2.TensorProto
DeviceType = caffe2_pb2.DeviceType
GradientSlice = namedtuple("GradientSlice", ["indices", "values"])


def GlobalInit(args: Sequence[str]) -> bool:
    """Accepted for compatibility: netjit has no C++ flags to set (e.g. ``--caffe2_log_level``)."""
    if not isinstance(args, (list, tuple)) or not all(isinstance(a, str) for a in args):
        raise TypeError("GlobalInit expects a list of strings, e.g. ['caffe2', '--caffe2_log_level=0']")
    return True


def IsOperator(op_type: str) -> bool:
    return has_op(op_type)


def RegisteredOperators() -> list[str]:
    return sorted(all_ops())


def DeviceOption(device_type: int, cuda_gpu_id: int = 0, random_seed: int | None = None,
                 node_name: str | None = None, numa_node_id: int | None = None) -> caffe2_pb2.DeviceOption:
    option = caffe2_pb2.DeviceOption(device_type=device_type, cuda_gpu_id=cuda_gpu_id)
    if random_seed is not None:
        option.random_seed = random_seed
    if node_name is not None:
        option.node_name = node_name
    if numa_node_id is not None:
        option.numa_node_id = numa_node_id
    return option


def ScopedName(name: str) -> str:
    return CurrentNameScope() + name


def ScopedBlobReference(name: str, *args: Any, **kwargs: Any) -> "BlobReference":
    return BlobReference(ScopedName(name), *args, **kwargs)


class BlobReference:
    """A blob name, optionally tied to the net that defines it so ops can be chained from it.

    ``X.FC([W, b], "Y")`` is ``X.Net().FC([X, W, b], "Y")``.
    """

    def __init__(self, name: str, net: "Net | None" = None):
        self._name = name.decode("utf-8") if isinstance(name, bytes) else str(name)
        self._from_net = net

    def __hash__(self) -> int:
        return hash(self._name)

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, str):
            return self._name == other
        if isinstance(other, BlobReference):
            return self._name == other._name
        return False

    def __ne__(self, other: Any) -> bool:
        return not self == other

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"BlobReference(\"{self._name}\")"

    def __add__(self, other: Any) -> "BlobReference":
        if not isinstance(other, str):
            raise RuntimeError("cannot append a non-string to a BlobReference name")
        return BlobReference(self._name + other, self._from_net)

    def __radd__(self, other: Any) -> "BlobReference":
        if not isinstance(other, str):
            raise RuntimeError("cannot prepend a non-string to a BlobReference name")
        return BlobReference(other + self._name, self._from_net)

    def Net(self) -> "Net | None":
        return self._from_net

    def GetNameScope(self) -> str:
        return self._name[: self._name.rfind("/") + 1]

    def GetUnscopedName(self) -> str:
        return self._name[self._name.rfind("/") + 1:]

    def _CreateAndAddToNet(self, op_type: str, inputs: Any = None, *args: Any, **kwargs: Any) -> Any:
        inputs = _rectify(inputs) if inputs is not None else []
        inputs.insert(0, self)
        return self._from_net.__getattr__(op_type)(inputs, *args, **kwargs)

    def __getattr__(self, op_type: str) -> Any:
        if op_type.startswith("__"):
            raise AttributeError(op_type)
        if self._from_net is None:
            raise AttributeError(f"You cannot use a blob reference that does not have a net source to "
                                 f"create operators: {self._name!r} has no net (method {op_type!r})")
        if not IsOperator(op_type):
            raise AttributeError(_unknown_method_message(op_type))
        return lambda *args, **kwargs: self._CreateAndAddToNet(op_type, *args, **kwargs)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(all_ops()))


def _unknown_method_message(op_type: str) -> str:
    close = difflib.get_close_matches(op_type, list(all_ops()), n=3, cutoff=0.6)
    hint = f" Did you mean: {close}?" if close else ""
    return f"Method {op_type} is not a registered operator.{hint}"


def _rectify(blobs: Any, net: "Net | None" = None) -> list[BlobReference]:
    """Strings, BlobReferences, or lists of them -> a list of BlobReferences (strings scoped)."""
    if isinstance(blobs, (bytes, str)):
        return [ScopedBlobReference(blobs.decode() if isinstance(blobs, bytes) else blobs, net=net)]
    if isinstance(blobs, BlobReference):
        return [blobs]
    if isinstance(blobs, (list, tuple)):
        out = []
        for blob in blobs:
            if isinstance(blob, (bytes, str)):
                out.append(ScopedBlobReference(blob.decode() if isinstance(blob, bytes) else blob, net=net))
            elif isinstance(blob, BlobReference):
                out.append(blob)
            else:
                raise TypeError(f"a blob must be a string or BlobReference, got {type(blob).__name__}: {blob!r}")
        return out
    raise TypeError(f"blobs must be a string, a BlobReference, or a list of them, got {type(blobs).__name__}")


def CreateOperator(operator_type: str, inputs: Any, outputs: Any, name: str = "", control_input: Any = None,
                   device_option: caffe2_pb2.DeviceOption | None = None, arg: Iterable | None = None,
                   engine: str | None = None, debug_info: str | None = None, **kwargs: Any) -> caffe2_pb2.OperatorDef:
    """An OperatorDef with Caffe2's rules: scoped string names, the DeviceScope's option unless one is
    given, ``random_seed=`` into the device option, ``arg`` entries first and then one per kwarg.

    >>> CreateOperator("Scale", ["X"], ["Y"], scale=2.0).arg[0].f
    2.0
    """
    op = caffe2_pb2.OperatorDef()
    op.type = operator_type
    op.name = name
    op.input.extend(str(b) for b in _rectify(inputs))
    op.output.extend(str(b) for b in _rectify(outputs))
    if control_input:
        op.control_input.extend(str(b) for b in _rectify(control_input))
    if device_option is not None:
        op.device_option.CopyFrom(device_option)
    elif CurrentDeviceScope() is not None:
        op.device_option.CopyFrom(CurrentDeviceScope())
    if engine is not None:
        op.engine = engine
    if debug_info is not None:
        op.debug_info = debug_info
    if "random_seed" in kwargs:
        op.device_option.random_seed = kwargs.pop("random_seed")
    if arg is not None:
        op.arg.extend(arg)
    for key, value in kwargs.items():
        if value is not None:
            op.arg.append(make_argument(key, value))
    return op


def CreatePythonOperator(f: Any, inputs: Any, outputs: Any, grad_f: Any = None, pass_workspace: bool = False,
                         python_func_type: Any = None, *args: Any, **kwargs: Any) -> caffe2_pb2.OperatorDef:
    """A ``Python`` OperatorDef running ``f(inputs, outputs[, workspace])``, registered in this process
    (so it runs without any opt-in): ``CreatePythonOperator(f, ["x"], ["y"])``."""
    from netjit.compiler.ops.python_op import register_python_function
    kwargs["token"] = register_python_function(f, grad_f, python_func_type, pass_workspace=pass_workspace)
    return CreateOperator("Python", inputs, outputs, *args, **kwargs)


def _copy_net(proto: caffe2_pb2.NetDef) -> caffe2_pb2.NetDef:
    copy = caffe2_pb2.NetDef()
    copy.CopyFrom(proto)
    return copy


class Net:
    """A NetDef under construction. Op types are methods: ``net.FC([X, W, b], "Y")``.

    >>> net = Net("demo"); y = net.Relu(["x"], ["y"]); net.Proto().external_input
    ['x']
    """
    _net_names_used: set[str] = set()

    @staticmethod
    def _get_next_net_name(basename: str) -> str:
        name, index = basename, 1
        while name in Net._net_names_used:
            name = f"{basename}_{index}"
            index += 1
        Net._net_names_used.add(name)
        return name

    def __init__(self, name_or_proto: "str | caffe2_pb2.NetDef | Net"):
        self._registered_blob_names: set[str] = set()
        if isinstance(name_or_proto, Net):
            name_or_proto = name_or_proto.Proto()
        if isinstance(name_or_proto, caffe2_pb2.NetDef):
            self._net = _copy_net(name_or_proto)
            Net._net_names_used.add(self._net.name)
        else:
            self._net = caffe2_pb2.NetDef()
            self._net.name = Net._get_next_net_name(str(name_or_proto))
        self._op_outputs: set[str] = {o for op in self._net.op for o in op.output}
        self._external_inputs: set[str] = set(self._net.external_input)
        self._attr_dict: dict[str, list] = {}

    # ------------------------------------------------------------------------------------ basics
    def Name(self) -> str:
        return self._net.name

    def Proto(self) -> caffe2_pb2.NetDef:
        return self._net

    def __str__(self) -> str:
        return self.Name()

    def __repr__(self) -> str:
        return f"Net({self.Name()!r}, {len(self._net.op)} ops)"

    @property
    def external_inputs(self) -> list[BlobReference]:
        return [BlobReference(n, self) for n in self._net.external_input]

    @property
    def external_outputs(self) -> list[BlobReference]:
        return [BlobReference(n, self) for n in self._net.external_output]

    def BlobIsDefined(self, blob: Any) -> bool:
        name = str(blob)
        return name in self._op_outputs or name in self._external_inputs

    def UsesBlob(self, blob: Any) -> bool:
        name = str(blob)
        return any(name in op.input or name in op.output for op in self._net.op)

    def UsedBlobNames(self) -> set[str]:
        return {b for op in self._net.op for b in list(op.input) + list(op.output)}

    def GetBlobRef(self, blob_name: str) -> BlobReference:
        name = str(blob_name)
        if not self.BlobIsDefined(name):
            raise KeyError(f"net {self.Name()!r} does not define blob {name!r}")
        return BlobReference(name, self)

    def AddAttribute(self, name: str, value: Any) -> None:
        self._attr_dict.setdefault(name, []).append(value)

    def add_attribute(self, name: str, obj: Any) -> None:
        """Caffe2's spelling (task.SetupNets, net_builder): attach a user object to the net under ``name``."""
        self.AddAttribute(name, obj)

    def get_attributes(self, name: str) -> list:
        return self._attr_dict.get(name, [])

    def LogInfo(self, *msg_or_blobs: Any) -> None:
        """Print each message (a string constant) or blob when the net runs (net_builder's ops.LogInfo)."""
        for item in msg_or_blobs:
            if not isinstance(item, BlobReference):
                item = self.GivenTensorStringFill([], self.NextName("log"), shape=[], values=[item])
            self.Print(item, [])

    # ------------------------------------------------------------------------- external I/O
    def AddExternalInput(self, *inputs: Any) -> Any:
        if not inputs:
            raise ValueError("AddExternalInput needs at least one blob")
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        refs, seen = [], set()
        for blob in inputs:
            name = str(blob)
            if name in self._external_inputs or name in seen:
                raise AssertionError(f"Net {self.Name()!r} already contains an input named {name!r}")
            seen.add(name)
        for blob in inputs:
            name = str(blob)
            self._net.external_input.append(name)
            self._external_inputs.add(name)
            refs.append(BlobReference(name, self))
        return refs[0] if len(refs) == 1 else refs

    def AddExternalOutput(self, *outputs: Any) -> Any:
        if len(outputs) == 1 and isinstance(outputs[0], (list, tuple)):
            outputs = tuple(outputs[0])
        for blob in outputs:
            if not isinstance(blob, BlobReference):
                raise TypeError(f"AddExternalOutput takes BlobReferences, got {blob!r}")
            if not self.BlobIsDefined(blob):
                raise ValueError(f"net {self.Name()!r} does not define {str(blob)!r}, so it cannot be an "
                                 f"external output")
            self._net.external_output.append(str(blob))
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def AddExternalOutputs(self, *outputs: Any) -> Any:
        return self.AddExternalOutput(*outputs)

    def AddExternalInputs(self, *inputs: Any) -> Any:
        return self.AddExternalInput(*inputs)

    def AddScopedExternalInputs(self, *inputs: Any) -> list[BlobReference]:
        """External inputs named in the current name scope; always a list (step nets of rnn_cell)."""
        refs = self.AddExternalInput(*[ScopedBlobReference(str(b)) for b in inputs])
        return refs if isinstance(refs, list) else [refs]

    def AddScopedExternalOutputs(self, *outputs: Any) -> Any:
        return self.AddExternalOutput(*[ScopedBlobReference(str(b), net=self) for b in outputs])

    # -------------------------------------------------------------------------- blob naming
    def NextName(self, prefix: str | None = None, output_id: int | None = None) -> BlobReference:
        base = f"{self._net.name}/{prefix}" if prefix else self._net.name
        suffix = f":{output_id}" if output_id is not None else ""
        candidate, index = base + suffix, 2
        while self.BlobIsDefined(ScopedName(candidate)) or ScopedName(candidate) in self._registered_blob_names:
            candidate = f"{base}_{index}{suffix}"
            index += 1
        return ScopedBlobReference(candidate, net=self)

    def NextBlob(self, prefix: str) -> BlobReference:
        base = str(prefix)
        candidate, index = base, 0
        while candidate in self._registered_blob_names or self.BlobIsDefined(candidate):
            candidate = f"{base}_auto_{index}"
            index += 1
        self._registered_blob_names.add(candidate)
        return BlobReference(candidate, self)

    def NextScopedBlob(self, prefix: str = "unnamed") -> BlobReference:
        return self.NextBlob(ScopedName(prefix))

    # ----------------------------------------------------------------------------- building
    def _ExtendOps(self, ops: Iterable[caffe2_pb2.OperatorDef]) -> None:
        for op in ops:
            self._net.op.add().CopyFrom(op)
            self._op_outputs.update(op.output)

    def _CreateAndAddToSelf(self, op_type: str, inputs: Any, outputs: Any = None, **kwargs: Any) -> Any:
        inputs = _rectify(inputs)
        for blob in inputs:
            if not self.BlobIsDefined(blob):
                self.AddExternalInput(blob)
        if outputs is None:
            outputs = self.NextName(prefix=op_type)
        elif isinstance(outputs, int):
            outputs = [self.NextName(prefix=op_type, output_id=i) for i in range(outputs)]
        outputs = _rectify(outputs, net=self)
        op = CreateOperator(op_type, inputs, outputs, **kwargs)
        self._ExtendOps([op])
        if len(op.output) == 0:
            return None
        if len(op.output) == 1:
            return BlobReference(op.output[0], self)
        return tuple(BlobReference(o, self) for o in op.output)

    def __getattr__(self, op_type: str) -> Any:
        if op_type.startswith("__") or op_type.startswith("_"):
            raise AttributeError(op_type)
        if not IsOperator(op_type):
            raise AttributeError(_unknown_method_message(op_type))
        return lambda *args, **kwargs: self._CreateAndAddToSelf(op_type, *args, **kwargs)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(all_ops()))

    def Python(self, f: Any, grad_f: Any = None, python_func_type: Any = None, pass_workspace: bool = False,
               grad_output_indices: Sequence[int] | None = None,
               grad_input_indices: Sequence[int] | None = None) -> Any:
        """An op that runs the Python function ``f(inputs, outputs[, workspace])``; returns a builder
        ``(inputs, outputs, **kwargs)`` like any other op method."""
        from netjit.compiler.ops.python_op import python_op_builder
        return python_op_builder(self, f, grad_f=grad_f, python_func_type=python_func_type,
                                 pass_workspace=pass_workspace, grad_output_indices=grad_output_indices,
                                 grad_input_indices=grad_input_indices)

    def Const(self, array: Any, blob_out: Any = None, dtype: Any = None) -> BlobReference:
        """A constant blob, filled by the GivenTensor*Fill op that matches the array's dtype."""
        if isinstance(array, bool):
            return self.ConstantFill([], blob_out or 1, dtype=DataType.BOOL, value=array)
        array = np.array(array) if dtype is None else np.array(array, dtype=dtype)
        if array.dtype == np.int32:
            filler = "GivenTensorIntFill"
        elif array.dtype == np.int64:
            filler = "GivenTensorInt64Fill"
        elif array.dtype.kind in "SUO":
            filler = "GivenTensorStringFill"
        elif array.dtype == np.bool_:
            filler = "GivenTensorBoolFill"
        else:
            # Caffe2 fills every other dtype, float64 included (Const(0.5)), as float32.
            filler = "GivenTensorFill"
        return getattr(self, filler)([], blob_out or 1, shape=list(array.shape), values=array.flatten().tolist())

    # ---------------------------------------------------------------------- whole-net edits
    def AddGradientOperators(self, ys: Any, skip: int = 0) -> dict:
        """Append the gradient ops of ``ys`` (a list, or {y: its gradient blob or None}); return the
        map from every blob with a gradient to that gradient (BlobReference or GradientSlice)."""
        from netjit.autodiff import add_gradient_operators
        grad_ops, grad_map = add_gradient_operators(self._net, ys, skip)
        self._ExtendOps(grad_ops)
        result = {}
        for blob, grad in grad_map.items():
            if isinstance(grad, GradientSlice) or (isinstance(grad, tuple) and hasattr(grad, "indices")):
                result[BlobReference(str(blob), self)] = GradientSlice(
                    BlobReference(str(grad.indices), self), BlobReference(str(grad.values), self))
            else:
                result[BlobReference(str(blob), self)] = BlobReference(str(grad), self) if grad is not None else None
        return result

    def Clone(self, name: str, blob_remap: dict | None = None, op_id_mask: Sequence[int] | None = None,
              remap_funcs: dict | None = None, keep_schema: bool = True,
              update_external_list: bool = False) -> "Net":
        """A copy under a new name, with blobs renamed by ``blob_remap`` and only the ops in ``op_id_mask``."""
        remap = {str(k): str(v) for k, v in (blob_remap or {}).items()}
        new = Net(name)
        proto = new._net
        src = self._net
        keep_name = proto.name
        proto.CopyFrom(src)
        proto.name = keep_name
        del proto.op[:]
        ids = range(len(src.op)) if op_id_mask is None else op_id_mask
        for i in ids:
            op = proto.op.add()
            op.CopyFrom(src.op[i])
            op.input[:] = [remap.get(b, b) for b in op.input]
            op.output[:] = [remap.get(b, b) for b in op.output]
        proto.external_input[:] = [remap.get(b, b) for b in src.external_input]
        proto.external_output[:] = [remap.get(b, b) for b in src.external_output]
        if update_external_list:
            produced = {o for op in proto.op for o in op.output}
            used = {b for op in proto.op for b in op.input}
            proto.external_input[:] = [b for b in proto.external_input if b in used]
            proto.external_output[:] = [b for b in proto.external_output if b in produced]
        new._op_outputs = {o for op in proto.op for o in op.output}
        new._external_inputs = set(proto.external_input)
        new._attr_dict = {k: list(v) for k, v in self._attr_dict.items()}
        return new

    def ClonePartial(self, name: str, inputs: Any, outputs: Any) -> tuple["Net", list[BlobReference]]:
        """The ops on paths from ``inputs`` to ``outputs`` as a new net; other blobs get ``name/``."""
        if isinstance(inputs, dict):
            input_map = {str(k): str(v) for k, v in inputs.items()}
        else:
            input_map = {str(b): str(b) for b in _rectify(inputs)}
        wanted = [str(b) for b in _rectify(outputs)]
        needed, keep = set(wanted), []
        for i in range(len(self._net.op) - 1, -1, -1):
            op = self._net.op[i]
            if any(o in needed for o in op.output):
                keep.append(i)
                needed.update(b for b in op.input if b not in input_map)
        keep.reverse()
        used = {b for i in keep for b in list(self._net.op[i].input) + list(self._net.op[i].output)}
        remap = {b: input_map.get(b, f"{name}/{b}") for b in used}
        new = self.Clone(name, blob_remap=remap, op_id_mask=keep)
        new._net.external_input[:] = [input_map[b] for b in input_map]
        new._net.external_output[:] = [remap[b] for b in wanted]
        new._external_inputs = set(new._net.external_input)
        return new, [BlobReference(remap[b], new) for b in wanted]

    def AppendNet(self, net: Any) -> "Net":
        proto = net.Proto() if isinstance(net, Net) else net
        for blob in proto.external_input:
            if not self.BlobIsDefined(blob):
                self.AddExternalInput(blob)
        self._ExtendOps(proto.op)
        self._net.external_output.extend(b for b in proto.external_output if b not in self._net.external_output)
        return self

    def RunAllOnGPU(self, gpu_id: int = 0, use_cudnn: bool = False) -> None:
        device = DeviceOption(caffe2_pb2.CUDA, gpu_id)
        self._net.device_option.CopyFrom(device)
        for op in self._net.op:
            op.device_option.CopyFrom(device)
            if use_cudnn:
                op.engine = "CUDNN"

    def RunAllOnMKL(self) -> None:
        self._net.device_option.CopyFrom(DeviceOption(caffe2_pb2.MKLDNN))


def _register_gradient_api() -> Any:
    from netjit.autodiff import GradientRegistry
    return GradientRegistry


def __getattr__(name: str) -> Any:
    # GradientRegistry lives with the autodiff engine; resolve it lazily to keep import order simple.
    if name == "GradientRegistry":
        return _register_gradient_api()
    raise AttributeError(name)
