"""Caffe2's ``optimizer`` module: add the update ops for every trained parameter of a model.

After ``model.AddGradientOperators([loss])``, one call appends to ``model.net`` the shared
iteration counter (``optimizer_iteration``, counted by AtomicIter under a mutex), a LearningRate
schedule, and each parameter's update; auxiliary state (momentum, squared sums, Adam's moments) is
created in ``model.param_init_net``, so re-running the init net resets it::

    from caffe2.python import brew, model_helper, optimizer, workspace
    model = model_helper.ModelHelper("reg")
    pred = brew.fc(model, "X", "pred", dim_in=2, dim_out=1)
    loss = model.AveragedLoss(model.SquaredL2Distance([pred, "Y"], "dist"), "loss")
    model.AddGradientOperators([loss])
    optimizer.build_sgd(model, base_learning_rate=0.1, policy="step", stepsize=20, gamma=0.9,
                        momentum=0.9, nesterov=1)

The ops and blob names are Caffe2's (``SgdOptimizer_0_lr_cpu``, ``w_momentum``, ``ONE_0_0``, ...), so
nets built here and nets built by Caffe2 itself look and train alike. Every update op has a compiled
kernel (compiler/codegen/optim_kernels.py).
"""
from __future__ import annotations

from collections import defaultdict, namedtuple
from typing import Any, Iterable

import numpy as np

from netjit import core, scope, workspace
from netjit.gradient_clipping import global_norm_clip, norm_ratio
from netjit.initializers import ParameterInfo
from netjit.proto import caffe2_pb2

_OPTIMIZER_ITERATION_NAME = "optimizer_iteration"
_LEARNING_RATE_INJECTION = "lr_injection"

AuxOptimizerParams = namedtuple("AuxOptimizerParams", ["local", "shared"])
_optimizer_instance_count: dict[str, int] = defaultdict(int)


def _cpu() -> caffe2_pb2.DeviceOption:
    return core.DeviceOption(caffe2_pb2.CPU)


def _one_blob(param_init_net: core.Net, with_node_name: bool = True) -> core.BlobReference:
    """The per-device constant 1.0 (shape [1]) WeightedSum and RmsProp take as a weight."""
    dev = scope.CurrentDeviceScope() or _cpu()
    name = f"ONE_{dev.device_type}_{dev.cuda_gpu_id}" + (dev.node_name if with_node_name else "")
    return param_init_net.ConstantFill([], name, shape=[1], value=1.0)


class Optimizer:
    """Base class: ``opt(net, param_init_net, param, grad)`` or ``opt(net, init_net, param_info)``
    appends the update of one parameter. Subclasses implement ``_run``."""

    def __init__(self) -> None:
        self._aux_params = AuxOptimizerParams(local=[], shared=[])
        self._instance_num = _optimizer_instance_count[type(self).__name__]
        _optimizer_instance_count[type(self).__name__] += 1
        self._lr_multiplier: Any = None
        self._lr_multiplier_on_gpu = False

    def __call__(self, net: core.Net, param_init_net: core.Net, param: Any, grad: Any = None) -> None:
        if grad is None:
            if not isinstance(param, ParameterInfo) or param.grad is None:
                raise ValueError("give a ParameterInfo with its gradient set, or a parameter and its gradient")
        else:
            if isinstance(param, str):
                param = core.BlobReference(param)
            param = ParameterInfo(param_id=None, param=param, grad=grad)
        self._run(net, param_init_net, param)

    def _run(self, net: core.Net, param_init_net: core.Net, param_info: ParameterInfo) -> None:
        raise TypeError(f"{type(self).__name__} is an abstract optimizer: use a subclass such as SgdOptimizer")

    # ------------------------------------------------------------------- blob names and the LR
    def get_cpu_blob_name(self, base_str: str, node_name: str = "") -> str:
        return f"{type(self).__name__}_{self._instance_num}_{base_str}{node_name}_cpu"

    def get_gpu_blob_name(self, base_str: str, gpu_id: int, node_name: str) -> str:
        return f"{type(self).__name__}_{self._instance_num}_{base_str}{node_name}_gpu{gpu_id}"

    def make_unique_blob_name(self, base_str: str) -> str:
        """A blob name unique to this optimizer instance and the current device."""
        dev = scope.CurrentDeviceScope()
        if dev is None:
            return self.get_cpu_blob_name(base_str)
        if dev.device_type == caffe2_pb2.CUDA:
            return self.get_gpu_blob_name(base_str, dev.cuda_gpu_id, dev.node_name)
        return self.get_cpu_blob_name(base_str, dev.node_name)

    def build_lr(self, net: core.Net, param_init_net: core.Net, base_learning_rate: float,
                 learning_rate_blob: str | None = None, policy: str = "fixed", iter_val: int = 0,
                 **kwargs: Any) -> tuple[core.BlobReference, core.BlobReference]:
        """The LR blob (``-base_learning_rate`` times the policy's factor: descent) and the shared
        iteration blob, created once per net."""
        if learning_rate_blob is None:
            learning_rate_blob = self.make_unique_blob_name("lr")
        if not param_init_net.BlobIsDefined(_OPTIMIZER_ITERATION_NAME):
            with core.DeviceScope(_cpu()):
                iteration = param_init_net.ConstantFill([], _OPTIMIZER_ITERATION_NAME, shape=[1],
                                                        value=int(iter_val), dtype=core.DataType.INT64)
                mutex = param_init_net.CreateMutex([], ["iteration_mutex"])
                net.AtomicIter([mutex, iteration], [iteration])
        else:
            iteration = param_init_net.GetBlobRef(_OPTIMIZER_ITERATION_NAME)
        if not net.BlobIsDefined(learning_rate_blob):
            lr = net.LearningRate([iteration], learning_rate_blob, base_lr=-float(base_learning_rate),
                                  policy=policy, **_float_args(kwargs))
        else:
            lr = net.GetBlobRef(learning_rate_blob)
        if self._lr_multiplier is not None:
            multiplier = net.Copy(self._lr_multiplier, self.make_unique_blob_name("lr_multiplier"))
            # The [1]-shaped multiplier first: legacy broadcasting lets the 0-d LR broadcast over it.
            lr = net.Mul([multiplier, lr], self.make_unique_blob_name("scaled_lr"), broadcast=1)
        return lr, iteration

    def add_lr_multiplier(self, lr_multiplier: Any, is_gpu_blob: bool = False) -> None:
        """Scale this optimizer's LR by a blob (gradient clipping's norm ratio, lr injection)."""
        self._lr_multiplier = lr_multiplier
        self._lr_multiplier_on_gpu = is_gpu_blob

    @staticmethod
    def dedup(net: core.Net, sparse_dedup_aggregator: Any, grad: Any) -> Any:
        if not isinstance(grad, core.GradientSlice):
            raise TypeError("dedup takes a GradientSlice")
        if sparse_dedup_aggregator:
            return net.DeduplicateGradientSlices(grad, aggregator=sparse_dedup_aggregator)
        return grad

    def get_auxiliary_parameters(self) -> AuxOptimizerParams:
        """The optimizer's extra state: ``local`` blobs belong to one parameter each (momentum,
        squared sums, moments); ``shared`` ones serve every parameter (the iteration, ONE)."""
        return self._aux_params

    def scale_learning_rate(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"{type(self).__name__} does not support scale_learning_rate")

    def _dense_only(self, grad: Any, op_name: str) -> None:
        # The sparse update ops (SparseAdagrad, ScatterWeightedSum, ...) are not in netjit's registry.
        if isinstance(grad, core.GradientSlice):
            raise ValueError(f"{type(self).__name__}: sparse gradients (GradientSlice {grad.values!r}) need "
                             f"{op_name}, which netjit does not provide; build the model with "
                             f"ModelHelper(skip_sparse_optim=True) or densify the gradient")


def _float_args(kwargs: dict) -> dict:
    """LearningRate's float arguments as floats (Caffe2 scripts often write gamma=1 or power=1)."""
    floats = {"gamma", "power", "start_multiplier", "multiplier", "end_multiplier"}
    return {k: float(v) if k in floats and isinstance(v, int) and not isinstance(v, bool) else v
            for k, v in kwargs.items()}


class SgdOptimizer(Optimizer):
    """Plain SGD (``WeightedSum``: w += lr·g) or, with momentum > 0, ``MomentumSGDUpdate``
    (nesterov by default, as Caffe2's)."""

    def __init__(self, base_learning_rate: float = 0.01, policy: str = "fixed", momentum: float = 0.0,
                 nesterov: int = 1, lars: float | None = None, sparse_dedup_aggregator: Any = None,
                 **kwargs: Any):
        super().__init__()
        self.base_learning_rate = base_learning_rate
        self.policy = policy
        self.momentum = momentum
        self.nesterov = nesterov
        self.lars = lars
        self.sparse_dedup_aggregator = sparse_dedup_aggregator
        self.init_kwargs = kwargs
        if lars is not None:
            raise ValueError("SgdOptimizer(lars=...) needs the Lars op, which netjit does not provide")

    def _run(self, net, param_init_net, param_info):
        param, grad = param_info.blob, param_info.grad
        if self.base_learning_rate == 0:
            return
        if self.base_learning_rate < 0:
            raise ValueError(f"base_learning_rate must be positive, got {self.base_learning_rate}")
        self._dense_only(grad, "ScatterWeightedSum / SparseMomentumSGDUpdate")
        # MomentumSGDUpdate subtracts its step, WeightedSum adds lr·g: the LR's sign differs.
        lr_sign = -1 if self.momentum else 1
        lr, _ = self.build_lr(net, param_init_net, base_learning_rate=self.base_learning_rate * lr_sign,
                              policy=self.policy, **self.init_kwargs)
        one = _one_blob(param_init_net)
        self._aux_params.shared.append(one)
        if self.momentum > 0:
            momentum_data = param_init_net.ConstantFill(param, str(param) + "_momentum", value=0.0)
            self._aux_params.local.append(momentum_data)
            net.MomentumSGDUpdate([grad, momentum_data, lr, param], [grad, momentum_data, param],
                                  momentum=float(self.momentum), nesterov=int(self.nesterov))
        else:
            net.WeightedSum([param, one, grad, lr], param)

    def scale_learning_rate(self, scale: float) -> None:
        self.base_learning_rate *= scale


class MultiPrecisionSgdOptimizer(SgdOptimizer):
    """Momentum SGD for float16 parameters with a float32 master copy.

    A parameter whose ParameterInfo has ``blob_copy = {core.DataType.FLOAT: "w_fp32"}`` is updated in
    float32 (``HalfToFloat`` of its float16 gradient, ``MomentumSGDUpdate`` on the master copy,
    ``FloatToHalf`` back into the float16 parameter); a parameter without a copy trains as with
    SgdOptimizer. On the CPU float16 arithmetic is emulated, so the master copy is where the update's
    precision comes from, exactly as on Caffe2's GPUs.
    """

    def __init__(self, base_learning_rate: float = 0.1, momentum: float = 0.0, policy: str = "fixed",
                 nesterov: int = 1, sparse_dedup_aggregator: Any = None, **kwargs: Any):
        super().__init__(base_learning_rate=base_learning_rate, policy=policy, momentum=momentum,
                         nesterov=nesterov, sparse_dedup_aggregator=sparse_dedup_aggregator, **kwargs)

    def _run(self, net, param_init_net, param_info):
        copies = getattr(param_info, "blob_copy", None)
        param_fp32 = copies.get(core.DataType.FLOAT) if copies else None
        if param_fp32 is None:
            return SgdOptimizer._run(self, net, param_init_net, param_info)
        param, grad = param_info.blob, param_info.grad
        if self.base_learning_rate == 0:
            return
        if self.base_learning_rate < 0:
            raise ValueError(f"base_learning_rate must be positive, got {self.base_learning_rate}")
        self._dense_only(grad, "a sparse multi-precision update")
        lr, _ = self.build_lr(net, param_init_net, base_learning_rate=-self.base_learning_rate,
                              policy=self.policy, **self.init_kwargs)
        momentum_data = param_init_net.ConstantFill(param_fp32, str(param) + "_momentum", value=0.0)
        self._aux_params.local.append(momentum_data)
        grad_fp32 = net.HalfToFloat(grad, str(grad) + "_fp32")
        net.MomentumSGDUpdate([grad_fp32, momentum_data, lr, param_fp32], [grad_fp32, momentum_data, param_fp32],
                              momentum=float(self.momentum), nesterov=int(self.nesterov))
        net.FloatToHalf(param_fp32, param)


class WeightDecayBuilder(Optimizer):
    """grad += weight_decay·param (L2 regularisation), before the optimizer's update."""

    def __init__(self, weight_decay: float):
        super().__init__()
        self.weight_decay = weight_decay

    def _run(self, net, param_init_net, param_info):
        dev = scope.CurrentDeviceScope() or _cpu()
        one = _one_blob(param_init_net, with_node_name=False)
        wd = param_init_net.ConstantFill([], f"wd_{dev.device_type}_{dev.cuda_gpu_id}", shape=[1],
                                         value=float(self.weight_decay))
        self._dense_only(param_info.grad, "a sparse weight decay")
        net.WeightedSum([param_info.grad, one, param_info.blob, wd], param_info.grad)


class AdagradOptimizer(Optimizer):
    """Adagrad: h += g² (times ``decay`` first), w += lr·g/(√h + ε)."""

    def __init__(self, alpha: float = 0.01, epsilon: float = 1e-4, decay: float = 1, policy: str = "fixed",
                 sparse_dedup_aggregator: Any = None, rowWise: bool = False, engine: str = "", **kwargs: Any):
        super().__init__()
        self.alpha = alpha
        self.epsilon = epsilon
        self.decay = decay
        self.policy = policy
        self.sparse_dedup_aggregator = sparse_dedup_aggregator
        self.rowWise = rowWise
        self.engine = engine
        self.init_kwargs = kwargs

    def _run(self, net, param_init_net, param_info):
        param, grad = param_info.blob, param_info.grad
        if self.alpha <= 0:
            return
        self._dense_only(grad, "RowWiseSparseAdagrad" if self.rowWise else "SparseAdagrad")
        if self.rowWise:
            raise ValueError("rowWise Adagrad is for sparse gradients only (RowWiseSparseAdagrad)")
        lr, _ = self.build_lr(net, param_init_net, base_learning_rate=self.alpha, policy=self.policy,
                              **self.init_kwargs)
        squared_sum = param_init_net.ConstantFill([param], str(param) + "_squared_sum", value=0.0)
        self._aux_params.local.append(squared_sum)
        net.Adagrad([param, squared_sum, grad, lr], [param, squared_sum], epsilon=float(self.epsilon),
                    decay=float(self.decay), engine=self.engine)

    def scale_learning_rate(self, scale: float) -> None:
        self.alpha *= scale


class FtrlOptimizer(Optimizer):
    """FTRL-proximal (``Ftrl``), its (n, z) state in ``<param>_ftrl_nz`` of shape param.shape + [2]."""

    def __init__(self, alpha: float = 0.01, beta: float = 1e-4, lambda1: float = 0, lambda2: float = 0,
                 sparse_dedup_aggregator: Any = None, engine: str = ""):
        super().__init__()
        self.alpha = alpha
        self.beta = beta
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.sparse_dedup_aggregator = sparse_dedup_aggregator
        self.engine = engine

    def _run(self, net, param_init_net, param_info):
        param, grad = param_info.blob, param_info.grad
        if self.alpha <= 0:
            return
        self._dense_only(grad, "SparseFtrl")
        nz = param_init_net.ConstantFill([param], str(param) + "_ftrl_nz", extra_shape=[2], value=0.0)
        self._aux_params.local.append(nz)
        net.Ftrl([param, nz, grad], [param, nz], engine=self.engine, alpha=float(self.alpha),
                 beta=float(self.beta), lambda1=float(self.lambda1), lambda2=float(self.lambda2))

    def scale_learning_rate(self, scale: float) -> None:
        self.alpha *= scale


class AdamOptimizer(Optimizer):
    """Adam with Caffe2's bias correction (``Adam`` op); moments in ``<param>_first_moment`` and
    ``<param>_second_moment``."""

    def __init__(self, alpha: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8,
                 policy: str = "fixed", sparse_dedup_aggregator: Any = None, rowWise: bool = False,
                 engine: str = "", **kwargs: Any):
        super().__init__()
        self.alpha = alpha
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.policy = policy
        self.sparse_dedup_aggregator = sparse_dedup_aggregator
        self.rowWise = rowWise
        self.engine = engine
        self.init_kwargs = kwargs

    def _run(self, net, param_init_net, param_info):
        param, grad = param_info.blob, param_info.grad
        if self.alpha <= 0:
            return
        self._dense_only(grad, "RowWiseSparseAdam" if self.rowWise else "SparseAdam")
        if self.rowWise:
            raise ValueError("rowWise Adam is for sparse gradients only (RowWiseSparseAdam)")
        lr, iteration = self.build_lr(net, param_init_net, base_learning_rate=self.alpha, policy=self.policy,
                                      **self.init_kwargs)
        m1 = param_init_net.ConstantFill([param], str(param) + "_first_moment", value=0.0)
        m2 = param_init_net.ConstantFill([param], str(param) + "_second_moment", value=0.0)
        self._aux_params.shared.append(iteration)
        self._aux_params.local.extend([m1, m2])
        net.Adam([param, m1, m2, grad, lr, iteration], [param, m1, m2], beta1=float(self.beta1),
                 beta2=float(self.beta2), epsilon=float(self.epsilon))

    def scale_learning_rate(self, scale: float) -> None:
        self.alpha *= scale


class RmsPropOptimizer(Optimizer):
    """RMSProp: ``RmsProp`` (mean squares and momentum) followed by ``MomentumSGDUpdate`` with the LR."""

    def __init__(self, alpha: float = 0.01, decay: float = 0.9, momentum: float = 0.0, epsilon: float = 1e-5,
                 policy: str = "fixed", engine: str = "", **kwargs: Any):
        super().__init__()
        self.alpha = alpha
        self.decay = decay
        self.momentum = momentum
        self.epsilon = epsilon
        self.policy = policy
        self.engine = engine
        self.init_kwargs = kwargs

    def _run(self, net, param_init_net, param_info):
        param, grad = param_info.blob, param_info.grad
        if self.alpha <= 0:
            raise ValueError(f"RmsPropOptimizer needs alpha > 0, got {self.alpha}")
        self._dense_only(grad, "a sparse RmsProp")
        one = _one_blob(param_init_net, with_node_name=False)
        lr, _ = self.build_lr(net, param_init_net, base_learning_rate=-self.alpha, policy=self.policy,
                              **self.init_kwargs)
        grad_o = param_init_net.ConstantFill([param], str(param) + "_grad_o", value=0.0)
        ms = param_init_net.ConstantFill([param], str(param) + "_mean_squares", value=0.0)
        mom = param_init_net.ConstantFill([param], str(param) + "_momentum", value=0.0)
        self._aux_params.local.extend([ms, mom])
        net.RmsProp([grad, ms, mom, one], [grad_o, ms, mom], decay=float(self.decay),
                    momentum=float(self.momentum), epsilon=float(self.epsilon), engine=self.engine)
        net.MomentumSGDUpdate([grad_o, mom, lr, param], [grad_o, mom, param])

    def scale_learning_rate(self, scale: float) -> None:
        self.alpha *= scale


# --------------------------------------------------------------------------------------------
# Devices and the build functions
# --------------------------------------------------------------------------------------------
def _blob_devices(net: core.Net) -> dict[str, caffe2_pb2.DeviceOption]:
    """Each blob's device: the option of the op that writes (or else reads) it, or the net's."""
    proto = net.Proto()
    default = proto.device_option if proto.HasField("device_option") else _cpu()
    found: dict[str, caffe2_pb2.DeviceOption] = {}
    for op in proto.op:
        dev = op.device_option if op.HasField("device_option") else default
        for name in list(op.output) + list(op.input):
            found.setdefault(name, dev)
    return found


def _get_param_to_device(model: Any) -> dict[str, caffe2_pb2.DeviceOption]:
    devices = _blob_devices(model.net)
    devices.update(_blob_devices(model.param_init_net))
    return devices


def get_param_device(param_name: str, grad: Any, param_to_device: dict | None = None,
                     default_device: Any = None) -> Any:
    """The device a parameter lives on: its own, else its gradient's, else ``default_device``."""
    param_to_device = param_to_device or {}
    device = param_to_device.get(str(param_name), default_device)
    if str(param_name) not in param_to_device:
        names = [str(grad.values), str(grad.indices)] if isinstance(grad, core.GradientSlice) else [str(grad)]
        for name in names:
            if name in param_to_device:
                device = param_to_device[name]
                break
    if device is None:
        raise ValueError(f"cannot infer the device of {param_name}: no op creates it")
    return device


def get_lr_injection() -> np.ndarray:
    """The current LR injection (a multiplier on every LR; build with allow_lr_injection=True)."""
    return workspace.FetchBlob(_LEARNING_RATE_INJECTION)


def set_lr_injection(lr_injection_value: float) -> None:
    """Set the LR injection blob (built with allow_lr_injection=True) for the next runs."""
    workspace.FeedBlob(_LEARNING_RATE_INJECTION, np.array([float(lr_injection_value)], dtype=np.float32))


def _build(model: Any, optimizer: Optimizer, weights_only: bool = False, use_param_info_optim: bool = True,
           max_gradient_norm: float | None = None, clip_using_lr_multiplier: bool = False,
           allow_lr_injection: bool = False) -> Optimizer:
    param_to_device = _get_param_to_device(model)
    model.Validate()
    params = [p for p in model.GetOptimizationParamInfo()
              if not weights_only or str(p.blob) in {str(w) for w in model.weights}]
    lr_multiplier = None
    if max_gradient_norm is not None:
        if not params:
            raise ValueError("gradient clipping: the model has no parameters with gradients")
        grads = [p.grad.values if isinstance(p.grad, core.GradientSlice) else p.grad for p in params]
        devices = [get_param_device(str(p.blob), p.grad, param_to_device) for p in params]
        with core.DeviceScope(devices[0]):
            if clip_using_lr_multiplier or any(d != devices[0] for d in devices):
                lr_multiplier = norm_ratio(model, grads, float(max_gradient_norm), "norm_clipped_grad_update")
            else:
                global_norm_clip(model, grads, float(max_gradient_norm), "clipped_grad")
    if allow_lr_injection:
        if not model.net.BlobIsDefined(_LEARNING_RATE_INJECTION):
            injection = model.param_init_net.ConstantFill([], _LEARNING_RATE_INJECTION, shape=[1], value=1.0)
        else:
            injection = core.BlobReference(_LEARNING_RATE_INJECTION)
        lr_multiplier = injection if lr_multiplier is None else model.net.Mul(
            [lr_multiplier, injection], "lr_multiplier", broadcast=1)
    optimizer.add_lr_multiplier(lr_multiplier)
    for info in params:
        device = get_param_device(str(info.blob), info.grad, param_to_device)
        own = getattr(info, "optimizer", None)
        with core.DeviceScope(device):
            (own if own is not None and use_param_info_optim else optimizer)(model.net, model.param_init_net, info)
    return optimizer


def add_weight_decay(model: Any, weight_decay: float) -> None:
    """Add ``weight_decay · w`` to the gradient of every weight (not biases): L2 regularisation.
    Call it before build_sgd/build_adam/..., which read the gradients it changes."""
    _build(model, WeightDecayBuilder(weight_decay=weight_decay), weights_only=True, use_param_info_optim=False)


def build_sgd(model: Any, base_learning_rate: float, max_gradient_norm: float | None = None,
              clip_using_lr_multiplier: bool = False, allow_lr_injection: bool = False, **kwargs: Any) -> Optimizer:
    """SGD on every parameter: ``policy`` (any LearningRate policy, with its arguments such as
    stepsize/gamma/power/max_iter/num_iter), ``momentum``, ``nesterov``; ``max_gradient_norm`` clips
    all gradients together to that global L2 norm first.

        >>> build_sgd(model, 0.1, policy="step", stepsize=1, gamma=0.999, momentum=0.9)  # doctest: +SKIP
    """
    return _build(model, SgdOptimizer(base_learning_rate, **kwargs), max_gradient_norm=max_gradient_norm,
                  clip_using_lr_multiplier=clip_using_lr_multiplier, allow_lr_injection=allow_lr_injection)


def build_multi_precision_sgd(model: Any, base_learning_rate: float, max_gradient_norm: float | None = None,
                              allow_lr_injection: bool = False, **kwargs: Any) -> Optimizer:
    """Momentum SGD with float32 master copies of float16 parameters (see MultiPrecisionSgdOptimizer)."""
    return _build(model, MultiPrecisionSgdOptimizer(base_learning_rate, **kwargs),
                  max_gradient_norm=max_gradient_norm, allow_lr_injection=allow_lr_injection)


def build_ftrl(model: Any, engine: str = "SIMD", **kwargs: Any) -> Optimizer:
    """FTRL on every parameter. Caffe2's default ``engine="SIMD"`` named its vectorised C++ kernel;
    netjit's compiled kernel serves every engine name."""
    return _build(model, FtrlOptimizer(engine=engine, **kwargs))


def build_adagrad(model: Any, base_learning_rate: float, parameters: Iterable[Any] | None = None,
                  max_gradient_norm: float | None = None, clip_using_lr_multiplier: bool = False,
                  allow_lr_injection: bool = False, **kwargs: Any) -> Optimizer:
    """Adagrad on every parameter (``epsilon``, ``decay``, ``policy`` ...)."""
    return _build(model, AdagradOptimizer(alpha=base_learning_rate, **kwargs), max_gradient_norm=max_gradient_norm,
                  clip_using_lr_multiplier=clip_using_lr_multiplier, allow_lr_injection=allow_lr_injection)


def build_adam(model: Any, base_learning_rate: float, max_gradient_norm: float | None = None,
               clip_using_lr_multiplier: bool = False, allow_lr_injection: bool = False, **kwargs: Any) -> Optimizer:
    """Adam on every parameter (``beta1``, ``beta2``, ``epsilon``, ``policy`` ...)."""
    return _build(model, AdamOptimizer(alpha=base_learning_rate, **kwargs), max_gradient_norm=max_gradient_norm,
                  clip_using_lr_multiplier=clip_using_lr_multiplier, allow_lr_injection=allow_lr_injection)


def build_rms_prop(model: Any, base_learning_rate: float, max_gradient_norm: float | None = None,
                   clip_using_lr_multiplier: bool = False, allow_lr_injection: bool = False,
                   **kwargs: Any) -> Optimizer:
    """RMSProp on every parameter (``decay``, ``momentum``, ``epsilon``, ``policy`` ...)."""
    return _build(model, RmsPropOptimizer(alpha=base_learning_rate, **kwargs), max_gradient_norm=max_gradient_norm,
                  clip_using_lr_multiplier=clip_using_lr_multiplier, allow_lr_injection=allow_lr_injection)
