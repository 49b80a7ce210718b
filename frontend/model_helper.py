"""``caffe2.python.model_helper``: a training net and its parameter-init net, built together.

>>> from netjit import brew
>>> model = ModelHelper(name="mlp")
>>> y = brew.fc(model, "data", "fc1", dim_in=4, dim_out=2)
>>> [str(p) for p in model.params], [op.type for op in model.param_init_net.Proto().op]
(['fc1_w', 'fc1_b'], ['XavierFill', 'ConstantFill'])
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Sequence

from netjit import core
from netjit.initializers import ExternalInitializer, Initializer, ParameterInfo, ParameterTags
from netjit.proto import caffe2_pb2
from netjit.scope import CurrentNameScope

log = logging.getLogger(__name__)

# Ops ModelHelper forwards to its net without a warning (Caffe2's list of "known working" ops).
KNOWN_WORKING_OPS = frozenset([
    "Accuracy", "Adam", "Add", "Adagrad", "SparseAdagrad", "AveragedLoss", "Cast", "Checkpoint",
    "ConstantFill", "Copy", "CopyGPUToCPU", "CopyCPUToGPU", "DequeueBlobs", "EnsureCPUOutput", "ExpandDims",
    "Flatten", "FlattenToVec", "LabelCrossEntropy", "LearningRate", "MakeTwoClass", "MatMul",
    "NCCLAllreduce", "NHWC2NCHW", "PackSegments", "Print", "PRelu", "ReduceFrontSum", "Scale",
    "ScatterWeightedSum", "Sigmoid", "SortedSegmentSum", "Snapshot", "Softmax", "SoftmaxWithLoss",
    "SquaredL2Distance", "Squeeze", "StopGradient", "Summarize", "Tanh", "Transpose", "UnpackSegments",
    "WeightedSum", "YellowFin",
])

_DEFAULT_ARG_SCOPE = {"order": "NCHW", "use_cudnn": True, "cudnn_exhaustive_search": False}


class ModelHelper:
    """A model: ``net`` (the training/inference ops), ``param_init_net`` (parameter initializers),
    ``params`` and, after AddGradientOperators, ``param_to_grad``.

    ``arg_scope`` holds the defaults brew helpers start from (order, use_cudnn, ...).
    """

    def __init__(self, name: str | None = None, init_params: bool = True, allow_not_known_ops: bool = True,
                 skip_sparse_optim: bool = False, param_model: "ModelHelper | None" = None,
                 arg_scope: dict | None = None):
        self.name = name or "model"
        self.net = core.Net(self.name)
        if param_model is not None:
            # Share parameters (and their init net) with another model, e.g. a test model.
            self.param_init_net = param_model.param_init_net
            self.param_to_grad = param_model.param_to_grad
            self.params = param_model.params
            self._parameters_info = param_model._parameters_info
            self._computed_params = param_model._computed_params
        else:
            self.param_init_net = core.Net(self.name + "_init")
            self.param_to_grad: dict = {}
            self.params: list = []
            self._parameters_info: dict[str, ParameterInfo] = {}
            self._computed_params: list = []
        self._devices: list = []
        self.gradient_ops_added = False
        self.grad_map: dict = {}
        self.init_params = init_params
        self.allow_not_known_ops = allow_not_known_ops
        self.skip_sparse_optim = skip_sparse_optim
        self.weights: list = []
        self.biases: list = []
        self._arg_scope = dict(_DEFAULT_ARG_SCOPE)
        if arg_scope is not None:
            self._arg_scope.update(arg_scope)

    # --------------------------------------------------------------------------- basics
    @property
    def arg_scope(self) -> dict:
        return self._arg_scope

    def get_name(self) -> str:
        return self.name

    def Proto(self) -> caffe2_pb2.NetDef:
        return self.net.Proto()

    def InitProto(self) -> caffe2_pb2.NetDef:
        return self.param_init_net.Proto()

    def RunAllOnGPU(self, *args: Any, **kwargs: Any) -> None:
        self.param_init_net.RunAllOnGPU(*args, **kwargs)
        self.net.RunAllOnGPU(*args, **kwargs)

    def CreateDB(self, blob_out: Any, db: str, db_type: str, **kwargs: Any) -> core.BlobReference:
        return self.param_init_net.CreateDB([], blob_out, db=db, db_type=db_type, **kwargs)

    def TensorProtosDBInput(self, unused_blob_in: Sequence, blob_out: Any, batch_size: int, db: str,
                            db_type: str, **kwargs: Any) -> Any:
        """A DB reader in the init net (``dbreader_<db>``) and a TensorProtosDBInput in the net."""
        if len(unused_blob_in) != 0:
            raise ValueError("ModelHelper.TensorProtosDBInput creates its own reader; pass [] as the first "
                             "argument (or call model.net.TensorProtosDBInput with a reader)")
        from netjit.brew import db_input
        return db_input(self, blob_out, batch_size, db, db_type, **kwargs)

    def GetDevices(self) -> list:
        if not self._devices:
            raise RuntimeError("this model runs on no explicit device list")
        return self._devices

    # ------------------------------------------------------------------------ parameters
    @staticmethod
    def _normalize_tags(tags: Any) -> set:
        tags = tags or []
        return set(tags) if isinstance(tags, (list, tuple, set)) else {tags}

    def create_param(self, param_name: Any, shape: Sequence[int], initializer: Any,
                     tags: Any = None) -> core.BlobReference:
        """A parameter blob ``<name scope><param_name>`` initialized in param_init_net.

        Asking again for the same name (and shape) returns the existing blob: parameter sharing.
        """
        if isinstance(param_name, core.BlobReference):
            param_name = str(param_name)
        elif isinstance(param_name, str):
            param_name = CurrentNameScope() + param_name
        else:
            raise TypeError(f"a parameter name must be a string or BlobReference, got {param_name!r}")
        if param_name in self._parameters_info:
            info = self._parameters_info[param_name]
            if list(info.shape) != list(shape):
                raise ValueError(f"parameter {param_name!r} already exists with shape {list(info.shape)}, "
                                 f"not {list(shape)}")
            return info.blob
        info = initializer.create_param(param_name=core.BlobReference(param_name),
                                        init_net=self.param_init_net, shape=shape)
        self._parameters_info[param_name] = info
        self.AddParameter(info.blob, tags)
        return info.blob

    def get_param_info(self, param: Any) -> ParameterInfo | None:
        return self._parameters_info.get(str(param))

    def AddParameter(self, param: core.BlobReference, tags: Any = None) -> None:
        if not isinstance(param, core.BlobReference):
            raise TypeError(f"a parameter must be a BlobReference, got {param!r}")
        tags = self._normalize_tags(tags)
        if ParameterTags.COMPUTED_PARAM in tags:
            self._computed_params.append(param)
        else:
            self.params.append(param)
        if ParameterTags.WEIGHT in tags:
            self.weights.append(param)
        if ParameterTags.BIAS in tags:
            self.biases.append(param)

    @staticmethod
    def _normalize_namescope(namescope: str | None) -> str:
        if namescope is None:
            return CurrentNameScope()
        if namescope == "" or namescope.endswith("/"):
            return namescope
        return namescope + "/"

    def GetParams(self, namescope: str | None = None, top_scope: bool = False) -> list:
        """Parameters whose name scope starts with ``namescope`` (default: the current scope)."""
        namescope = self._normalize_namescope(namescope)
        if namescope == "":
            return self.params[:]
        return [p for p in self.params if p.GetNameScope().startswith(namescope)]

    def GetComputedParams(self, namescope: str | None = None) -> list:
        """Parameters computed from data rather than trained (SpatialBN running statistics)."""
        namescope = self._normalize_namescope(namescope)
        if namescope == "":
            return self._computed_params[:]
        return [p for p in self._computed_params if p.GetNameScope().startswith(namescope)]

    def GetAllParams(self, namescope: str | None = None) -> list:
        return self.GetParams(namescope) + self.GetComputedParams(namescope)

    def GetWeights(self, namescope: str | None = None) -> list:
        namescope = self._normalize_namescope(namescope)
        return [w for w in self.weights if namescope == "" or w.GetNameScope().startswith(namescope)]

    def GetBiases(self, namescope: str | None = None) -> list:
        namescope = self._normalize_namescope(namescope)
        return [b for b in self.biases if namescope == "" or b.GetNameScope().startswith(namescope)]

    def Validate(self) -> None:
        names = [str(p) for p in self.params]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise AssertionError(f"Duplicate params: {dupes}")

    # ------------------------------------------------------------------------- gradients
    def AddGradientOperators(self, *args: Any, **kwargs: Any) -> dict:
        """Append the net's gradient ops (once); fill ``param_to_grad``; return the gradient map."""
        if self.gradient_ops_added:
            raise RuntimeError("You cannot run AddGradientOperators twice.")
        self.Validate()
        self.gradient_ops_added = True
        self.grad_map = self.net.AddGradientOperators(*args, **kwargs)
        self.param_to_grad = self.get_param_to_grad(self.params)
        for param, grad in self.param_to_grad.items():
            info = self.get_param_info(param)
            if info is not None:
                info.grad = grad
            else:
                self._parameters_info[str(param)] = ParameterInfo(param_id=None, param=param, grad=grad)
        return self.grad_map

    def get_param_to_grad(self, params: Iterable[Any]) -> dict:
        if not self.gradient_ops_added:
            raise RuntimeError("You need to run AddGradientOperators first.")
        return {p: self.grad_map[str(p)] for p in params if str(p) in self.grad_map}

    def GetOptimizationParamInfo(self, params: Iterable[Any] | None = None) -> list[ParameterInfo]:
        """ParameterInfo (with its gradient) of every trained parameter that has a gradient."""
        if not self.gradient_ops_added:
            raise RuntimeError("Need to call AddGradientOperators first")
        param_to_grad = self.get_param_to_grad(params) if params else self.param_to_grad
        return [self.get_param_info(p) for p, g in param_to_grad.items()
                if not self.skip_sparse_optim or not isinstance(g, core.GradientSlice)]

    # ----------------------------------------------------------------------- op methods
    def __getattr__(self, op_type: str) -> Any:
        """Any registered op type, added to ``self.net`` (unknown-to-ModelHelper ones warn)."""
        if op_type.startswith("_"):
            raise AttributeError(op_type)
        if not core.IsOperator(op_type):
            raise AttributeError(f"Method {op_type} is not a registered operator.")
        if op_type not in KNOWN_WORKING_OPS:
            if not self.allow_not_known_ops:
                raise AttributeError(f"Operator {op_type} is not known to be safe")
            log.warning("You are creating an op that the ModelHelper does not recognize: %s.", op_type)
        return getattr(self.net, op_type)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | KNOWN_WORKING_OPS)


def ExtractPredictorNet(net_proto: caffe2_pb2.NetDef, input_blobs: Iterable[Any], output_blobs: Iterable[Any],
                        device: caffe2_pb2.DeviceOption | None = None, renames: dict | None = None,
                        disabled_inputs: Iterable[Any] | None = None) -> tuple[core.Net, list[str]]:
    """The inference part of a training net: the ops from the first one reading an input to the last
    one writing an output whose inputs are all available, without data readers and gradients.

    Returns ``(predict_net, export_blobs)``; export_blobs are the external inputs other than
    ``input_blobs`` (the parameters to ship with the net). Ops with ``is_test=0`` are refused.
    """
    predict_net = core.Net(net_proto.name + "_predict")
    proto = predict_net.Proto()
    orig_inputs = set(net_proto.external_input)
    orig_outputs = set(net_proto.external_output)
    inputs = [str(b) for b in input_blobs]
    outputs = [str(b) for b in output_blobs]
    renames = {str(k): str(v) for k, v in (renames or {}).items()}
    known = orig_inputs | set(inputs)
    if disabled_inputs is not None:
        known -= {str(b) for b in disabled_inputs}
    # Ordered sets (dicts) keep the result deterministic.
    ext_in = dict.fromkeys(inputs)
    ext_out = dict.fromkeys(outputs)
    ops = list(net_proto.op)
    firsts = [j for j, op in enumerate(ops) if set(inputs) & set(op.input) and op.type != "StopGradient"]
    if not firsts:
        raise ValueError(f"No ops with input={inputs}")
    lasts = [j for j, op in enumerate(ops) if set(outputs) & set(op.output)]
    if not lasts:
        raise ValueError(f"No ops with output={outputs}")
    for op in ops[min(firsts): max(lasts) + 1]:
        if not known.issuperset(op.input):
            log.debug("Op %s had unknown inputs: %s", op.type, set(op.input) - known)
            continue
        new = caffe2_pb2.OperatorDef()
        new.CopyFrom(op)
        if device is not None:
            new.device_option.device_type = device.device_type
            new.device_option.cuda_gpu_id = device.cuda_gpu_id
        for a in new.arg:
            if a.name == "is_test" and a.i == 0:
                raise ValueError(f"An operator had is_test=0, did you try to extract a predictor from a train "
                                 f"model (instead of test model)? Op was: {op}")
        proto.op.append(new)
        known.update(op.output)
        ext_in.update(dict.fromkeys(b for b in op.input if b in orig_inputs))
        ext_out.update(dict.fromkeys(b for b in op.output if b in orig_outputs))
    proto.external_input.extend(renames.get(b, b) for b in ext_in)
    proto.external_output.extend(renames.get(b, b) for b in ext_out)
    for op in proto.op:
        op.input[:] = [renames.get(b, b) for b in op.input]
        op.output[:] = [renames.get(b, b) for b in op.output]
    renamed_inputs = {renames.get(b, b) for b in inputs}
    predict_net = core.Net(proto)  # re-wrap so the Net's own bookkeeping sees the new ops
    return predict_net, [b for b in proto.external_input if b not in renamed_inputs]


__all__ = ["ModelHelper", "ExtractPredictorNet", "KNOWN_WORKING_OPS", "Initializer", "ExternalInitializer",
           "ParameterTags", "copy"]
