"""The layer helpers behind ``brew`` (caffe2-facts §2.5). Call them through ``brew.<name>`` so the
model's arg_scope and any active ``brew.arg_scope`` are merged into their keyword arguments.

Helpers that take ``**kwargs`` pass every unknown keyword to the op as an Argument, which is how
``order``/``use_cudnn``/``cudnn_exhaustive_search`` from ModelHelper.arg_scope end up on FC, Sum,
Softmax... ops exactly as in Caffe2.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from netjit import core
from netjit.initializers import ExternalInitializer, ParameterTags, update_initializer
from netjit.proto import caffe2_pb2
from netjit.scope import CurrentDeviceScope


def _initializers(model: Any, weight_init: Any, bias_init: Any, weight_cls: Any, bias_cls: Any,
                  weight_default: tuple = ("XavierFill", {}), bias_default: tuple = ("ConstantFill", {})
                  ) -> tuple[Any, Any]:
    if not model.init_params:
        return ExternalInitializer(), ExternalInitializer()
    return (update_initializer(weight_cls, weight_init, weight_default),
            update_initializer(bias_cls, bias_init, bias_default))


# --------------------------------------------------------------------------------- dense
def fc(model: Any, blob_in: Any, blob_out: Any, dim_in: int, dim_out: int, weight_init: Any = None,
       bias_init: Any = None, WeightInitializer: Any = None, BiasInitializer: Any = None,
       enable_tensor_core: bool = False, float16_compute: bool = False, **kwargs: Any) -> Any:
    """FC with parameters ``<blob_out>_w`` [dim_out, dim_in] and ``<blob_out>_b`` [dim_out]."""
    w_init, b_init = _initializers(model, weight_init, bias_init, WeightInitializer, BiasInitializer)
    blob_out = blob_out or model.net.NextName()
    bias_tags = [ParameterTags.BIAS]
    if "freeze_bias" in kwargs:
        bias_tags.append(ParameterTags.COMPUTED_PARAM)
    weight = model.create_param(param_name=blob_out + "_w", shape=[dim_out, dim_in], initializer=w_init,
                                tags=ParameterTags.WEIGHT)
    bias = model.create_param(param_name=blob_out + "_b", shape=[dim_out], initializer=b_init, tags=bias_tags)
    if enable_tensor_core:
        kwargs["engine"] = "TENSORCORE"
    if float16_compute:
        kwargs["float16_compute"] = True
    return model.net.FC([blob_in, weight, bias], blob_out, **kwargs)


# ---------------------------------------------------------------------------- activations
def _cudnn(kwargs: dict, use_cudnn: bool) -> dict:
    if use_cudnn:
        kwargs["engine"] = "CUDNN"
    return kwargs


def relu(model: Any, blob_in: Any, blob_out: Any, use_cudnn: bool = False, order: str = "NCHW",
         **kwargs: Any) -> Any:
    return model.net.Relu(blob_in, blob_out, order=order, **_cudnn(kwargs, use_cudnn))


def tanh(model: Any, blob_in: Any, blob_out: Any, use_cudnn: bool = False, order: str = "NCHW",
         **kwargs: Any) -> Any:
    return model.net.Tanh(blob_in, blob_out, order=order, **_cudnn(kwargs, use_cudnn))


def sigmoid(model: Any, blob_in: Any, blob_out: Any, use_cudnn: bool = False, order: str = "NCHW",
            **kwargs: Any) -> Any:
    """Sigmoid, shaped like relu/tanh (cuDNN has a sigmoid activation too)."""
    return model.net.Sigmoid(blob_in, blob_out, order=order, **_cudnn(kwargs, use_cudnn))


def softmax(model: Any, blob_in: Any, blob_out: Any = None, use_cudnn: bool = False, **kwargs: Any) -> Any:
    _cudnn(kwargs, use_cudnn)
    if blob_out is not None:
        return model.net.Softmax(blob_in, blob_out, **kwargs)
    return model.net.Softmax(blob_in, **kwargs)


def prelu(model: Any, blob_in: Any, blob_out: Any, num_channels: int = 1, slope_init: Any = None) -> Any:
    """PRelu with a trained slope ``<blob_out>_slope`` [num_channels] (0.25 by default)."""
    slope_init = slope_init if slope_init else ("ConstantFill", {"value": 0.25})
    if model.init_params:
        slope = getattr(model.param_init_net, slope_init[0])([], blob_out + "_slope", shape=[num_channels],
                                                             **slope_init[1])
    else:
        slope = core.ScopedBlobReference(blob_out + "_slope", model.param_init_net)
    model.AddParameter(slope)
    return model.net.PRelu([blob_in, slope], [blob_out])


def dropout(model: Any, blob_in: Any, blob_out: Any, use_cudnn: bool = False, **kwargs: Any) -> Any:
    """Dropout writing ``_<blob_out>_mask`` too; ``is_test`` must be given."""
    kwargs["engine"] = "CUDNN" if use_cudnn else "DEFAULT"
    if "is_test" not in kwargs:
        raise ValueError("Argument 'is_test' is required")
    return model.net.Dropout(blob_in, [blob_out, "_" + blob_out + "_mask"], **kwargs)[0]


# ---------------------------------------------------------------------------- conv / pool
def _conv_base(model: Any, is_nd: bool, blob_in: Any, blob_out: Any, dim_in: int, dim_out: int, kernel: Any,
               weight_init: Any = None, bias_init: Any = None, WeightInitializer: Any = None,
               BiasInitializer: Any = None, group: int = 1, transform_inputs: Callable | None = None,
               use_cudnn: bool = False, order: str = "NCHW", cudnn_exhaustive_search: bool = False,
               ws_nbytes_limit: Any = None, float16_compute: bool = False, **kwargs: Any) -> Any:
    if is_nd:
        kernels = list(kernel) if isinstance(kernel, list) else [kernel]
    elif isinstance(kernel, list):
        if len(kernel) != 2:
            raise ValueError("Conv support only a 2D kernel.")
        kernels = list(kernel)
    else:
        kernels = [kernel] * 2
    engine = kwargs.get("engine")
    if engine is not None:
        if use_cudnn and engine != "CUDNN":
            raise ValueError('When use_cudnn=True, the only engine you can specify is "CUDNN"')
        if not use_cudnn and engine == "CUDNN":
            raise ValueError('When use_cudnn=False, the only engine you can specify is ""')
    if use_cudnn:
        kwargs["engine"] = "CUDNN"
        kwargs["exhaustive_search"] = cudnn_exhaustive_search
        if ws_nbytes_limit:
            kwargs["ws_nbytes_limit"] = ws_nbytes_limit
    use_bias = not kwargs.get("no_bias", False)
    blob_out = blob_out or model.net.NextName()
    if order == "NCHW":
        weight_shape = [dim_out, int(dim_in / group)] + kernels
    else:
        weight_shape = [dim_out] + kernels + [int(dim_in / group)]
    w_init, b_init = _initializers(model, weight_init, bias_init, WeightInitializer, BiasInitializer)
    weight = model.create_param(param_name=blob_out + "_w", shape=weight_shape, initializer=w_init,
                                tags=ParameterTags.WEIGHT)
    inputs = [blob_in, weight]
    if use_bias:
        inputs.append(model.create_param(param_name=blob_out + "_b", shape=[dim_out], initializer=b_init,
                                         tags=ParameterTags.BIAS))
    if transform_inputs is not None:
        transform_inputs(model, blob_out, inputs)
    if float16_compute:
        kwargs["float16_compute"] = True
    kwargs.pop("no_bias", None)  # the op knows from its input count
    if group != 1:
        kwargs["group"] = group
    if is_nd:
        return model.net.Conv(inputs, blob_out, kernels=kernels, order=order, **kwargs)
    if isinstance(kernel, list):
        return model.net.Conv(inputs, blob_out, kernel_h=kernel[0], kernel_w=kernel[1], order=order, **kwargs)
    return model.net.Conv(inputs, blob_out, kernel=kernel, order=order, **kwargs)


def conv(model: Any, blob_in: Any, blob_out: Any, dim_in: int, dim_out: int, kernel: Any, weight_init: Any = None,
         bias_init: Any = None, WeightInitializer: Any = None, BiasInitializer: Any = None, group: int = 1,
         transform_inputs: Callable | None = None, **kwargs: Any) -> Any:
    """2-D Conv with ``<blob_out>_w`` and (unless no_bias) ``<blob_out>_b``."""
    return _conv_base(model, False, blob_in, blob_out, dim_in, dim_out, kernel, weight_init, bias_init,
                      WeightInitializer, BiasInitializer, group, transform_inputs, **kwargs)


def conv_nd(model: Any, blob_in: Any, blob_out: Any, dim_in: int, dim_out: int, kernel: Any,
            weight_init: Any = None, bias_init: Any = None, WeightInitializer: Any = None,
            BiasInitializer: Any = None, group: int = 1, transform_inputs: Callable | None = None,
            order: str = "NCHW", **kwargs: Any) -> Any:
    """N-d Conv: ``kernel`` is a list (one size per spatial dim), passed as ``kernels``."""
    return _conv_base(model, True, blob_in, blob_out, dim_in, dim_out, kernel, weight_init, bias_init,
                      WeightInitializer, BiasInitializer, group, transform_inputs, order=order, **kwargs)


def group_conv(model: Any, blob_in: Any, blob_out: Any, dim_in: int, dim_out: int, kernel: Any,
               weight_init: Any = None, bias_init: Any = None, group: int = 1, **kwargs: Any) -> Any:
    return conv(model, blob_in, blob_out, dim_in, dim_out, kernel, weight_init=weight_init,
                bias_init=bias_init, group=group, **kwargs)


def conv_transpose(model: Any, blob_in: Any, blob_out: Any, dim_in: int, dim_out: int, kernel: int,
                   weight_init: Any = None, bias_init: Any = None, use_cudnn: bool = False, order: str = "NCHW",
                   cudnn_exhaustive_search: bool = False, ws_nbytes_limit: Any = None, **kwargs: Any) -> Any:
    """ConvTranspose with ``_w`` [dim_in, dim_out, k, k] (NHWC: [dim_in, k, k, dim_out]) and ``_b``."""
    weight_init = weight_init if weight_init else ("XavierFill", {})
    bias_init = bias_init if bias_init else ("ConstantFill", {})
    blob_out = blob_out or model.net.NextName()
    weight_shape = [dim_in, dim_out, kernel, kernel] if order == "NCHW" else [dim_in, kernel, kernel, dim_out]
    if model.init_params:
        weight = getattr(model.param_init_net, weight_init[0])([], blob_out + "_w", shape=weight_shape,
                                                               **weight_init[1])
        bias = getattr(model.param_init_net, bias_init[0])([], blob_out + "_b", shape=[dim_out], **bias_init[1])
    else:
        weight = core.ScopedBlobReference(blob_out + "_w", model.param_init_net)
        bias = core.ScopedBlobReference(blob_out + "_b", model.param_init_net)
    model.AddParameter(weight, ParameterTags.WEIGHT)
    model.AddParameter(bias, ParameterTags.BIAS)
    if use_cudnn:
        kwargs["engine"] = "CUDNN"
        kwargs["exhaustive_search"] = cudnn_exhaustive_search
        if ws_nbytes_limit:
            kwargs["ws_nbytes_limit"] = ws_nbytes_limit
    return model.net.ConvTranspose([blob_in, weight, bias], blob_out, kernel=kernel, order=order, **kwargs)


def max_pool(model: Any, blob_in: Any, blob_out: Any, use_cudnn: bool = False, order: str = "NCHW",
             **kwargs: Any) -> Any:
    return model.net.MaxPool(blob_in, blob_out, order=order, **_cudnn(kwargs, use_cudnn))


def average_pool(model: Any, blob_in: Any, blob_out: Any, use_cudnn: bool = False, order: str = "NCHW",
                 **kwargs: Any) -> Any:
    return model.net.AveragePool(blob_in, blob_out, order=order, **_cudnn(kwargs, use_cudnn))


# --------------------------------------------------------------------------- normalization
def spatial_bn(model: Any, blob_in: Any, blob_out: Any, dim_in: int, init_scale: float = 1.0,
               init_bias: float = 0.0, ScaleInitializer: Any = None, BiasInitializer: Any = None,
               RunningMeanInitializer: Any = None, RunningVarianceInitializer: Any = None,
               order: str = "NCHW", **kwargs: Any) -> Any:
    """SpatialBN with scale ``_s``, bias ``_b`` (trained) and running mean ``_rm`` / variance ``_riv``
    (computed); training mode also writes the saved statistics ``<out>_sm`` and ``<out>_siv``."""
    blob_out = blob_out or model.net.NextName()

    def init(suffix: str, value: float, cls: Any, tags: Any) -> Any:
        initializer = (ExternalInitializer() if not model.init_params
                       else update_initializer(cls, None, ("ConstantFill", {"value": value})))
        return model.create_param(param_name=blob_out + "_" + suffix, shape=[dim_in], initializer=initializer,
                                  tags=tags)

    scale = init("s", init_scale, ScaleInitializer, ParameterTags.WEIGHT)
    bias = init("b", init_bias, BiasInitializer, ParameterTags.BIAS)
    running_mean = init("rm", 0.0, RunningMeanInitializer, ParameterTags.COMPUTED_PARAM)
    running_inv_var = init("riv", 1.0, RunningVarianceInitializer, ParameterTags.COMPUTED_PARAM)
    inputs = [blob_in, scale, bias, running_mean, running_inv_var]
    if kwargs.get("is_test"):
        return model.net.SpatialBN(inputs, [blob_out], order=order, **kwargs)
    outputs = [blob_out, running_mean, running_inv_var, blob_out + "_sm", blob_out + "_siv"]
    return model.net.SpatialBN(inputs, outputs, order=order, **kwargs)[0]


def lrn(model: Any, blob_in: Any, blob_out: Any, order: str = "NCHW", use_cudnn: bool = False,
        **kwargs: Any) -> Any:
    """LRN; on the CPU it also writes the scale blob ``_<blob_out>_scale``."""
    dev = kwargs["device_option"] if "device_option" in kwargs else CurrentDeviceScope()
    is_cpu = dev is None or dev.device_type == caffe2_pb2.CPU
    if use_cudnn and not is_cpu:
        kwargs["engine"] = "CUDNN"
        return model.net.LRN(blob_in, blob_out, order=order, **kwargs)
    return model.net.LRN(blob_in, [blob_out, "_" + blob_out + "_scale"], order=order, **kwargs)[0]


# ---------------------------------------------------------------------------- tensor ops
def concat(model: Any, blobs_in: Sequence[Any], blob_out: Any, **kwargs: Any) -> Any:
    """Concat writing its split sizes to ``_<blob_out>_concat_dims``; ``order`` yields to ``axis``."""
    # Caffe2 tests both for truth, so axis=0 keeps the order argument (and the op then refuses both).
    if kwargs.get("order") and kwargs.get("axis"):
        kwargs.pop("order")
    return model.net.Concat(blobs_in, [blob_out, "_" + blob_out + "_concat_dims"], **kwargs)[0]


def depth_concat(model: Any, blobs_in: Sequence[Any], blob_out: Any, **kwargs: Any) -> Any:
    print("DepthConcat is deprecated. use Concat instead.")
    return concat(model, blobs_in, blob_out, **kwargs)


def sum(model: Any, blob_in: Any, blob_out: Any, **kwargs: Any) -> Any:  # noqa: A001 - Caffe2's name
    return model.net.Sum(blob_in, blob_out, **kwargs)


def transpose(model: Any, blob_in: Any, blob_out: Any, use_cudnn: bool = False, **kwargs: Any) -> Any:
    return model.net.Transpose(blob_in, blob_out, **_cudnn(kwargs, use_cudnn))


# -------------------------------------------------------------------------------- training
def iter(model: Any, blob_out: Any, **kwargs: Any) -> Any:  # noqa: A001 - Caffe2's name
    """An int64 iteration counter: zero in param_init_net (on the CPU), +1 per run in the net."""
    kwargs.pop("device_option", None)
    model.param_init_net.ConstantFill([], blob_out, shape=[1], value=0, dtype=core.DataType.INT64,
                                      device_option=core.DeviceOption(caffe2_pb2.CPU, 0), **kwargs)
    return model.net.Iter(blob_out, blob_out, **kwargs)


def accuracy(model: Any, blob_in: Sequence[Any], blob_out: Any, **kwargs: Any) -> Any:
    """Accuracy of [prediction, label]. On the CPU the op gets no arguments (Caffe2 drops top_k there)."""
    dev = kwargs["device_option"] if "device_option" in kwargs else CurrentDeviceScope()
    is_cpu = dev is None or dev.device_type == caffe2_pb2.CPU
    if not is_cpu and kwargs.get("top_k", 1) > 1:
        pred_host = model.net.CopyGPUToCPU(blob_in[0], blob_in[0] + "_host")
        label_host = model.net.CopyGPUToCPU(blob_in[1], blob_in[1] + "_host")
        kwargs.pop("device_option", None)
        return model.net.Accuracy([pred_host, label_host], blob_out,
                                  device_option=core.DeviceOption(caffe2_pb2.CPU, 0), **kwargs)
    return model.net.Accuracy(blob_in, blob_out)


def add_weight_decay(model: Any, weight_decay: float) -> None:
    """L2 regularisation: grad += weight_decay * w for every weight (run after AddGradientOperators)."""
    if weight_decay <= 0.0:
        return
    wd = model.param_init_net.ConstantFill([], "wd", shape=[1], value=weight_decay)
    one = model.param_init_net.ConstantFill([], "ONE", shape=[1], value=1.0)
    for param in model.GetWeights():
        grad = model.param_to_grad[param]
        model.net.WeightedSum([grad, one, param, wd], grad)


def db_input(model: Any, blobs_out: Any, batch_size: int, db: str, db_type: str) -> Any:
    """A DB reader ``dbreader_<db>`` in param_init_net feeding TensorProtosDBInput in the net."""
    reader = model.param_init_net.CreateDB([], "dbreader_" + db, db=db, db_type=db_type)
    return model.net.TensorProtosDBInput(reader, blobs_out, batch_size=batch_size)


def cond(model: Any, cond_blob: Any, external_blobs: Any, then_model: Any, else_model: Any = None) -> None:
    """An ``If`` op on ``cond_blob`` running ``then_model``'s net (else ``else_model``'s);
    ``external_blobs`` are the outer blobs the branches may read and write."""
    from netjit.control_ops_util import add_if_op   # control_ops_util imports core; brew must not at load
    add_if_op(model.net, cond_blob, external_blobs, then_model.net,
              else_model.net if else_model is not None else None)


def loop(model: Any, cond_blob: Any, external_blobs: Any, loop_model: Any, cond_model: Any = None) -> None:
    """A ``While`` op running ``loop_model``'s net while ``cond_blob`` holds true (``cond_model``'s net,
    when given, recomputes it before every iteration)."""
    from netjit.control_ops_util import add_while_op
    add_while_op(model.net, cond_blob, external_blobs, loop_model.net,
                 cond_model.net if cond_model is not None else None)


HELPERS: dict[str, Callable[..., Any]] = {
    f.__name__: f for f in (fc, relu, tanh, sigmoid, softmax, prelu, dropout, conv, conv_nd, group_conv,
                            conv_transpose, max_pool, average_pool, spatial_bn, lrn, concat, depth_concat,
                            sum, transpose, iter, accuracy, add_weight_decay, db_input, cond, loop)
}
