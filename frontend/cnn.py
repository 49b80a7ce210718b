"""``caffe2.python.cnn.CNNModelHelper``: the older model API with layer methods (``model.FC``,
``model.Conv``, ``model.Relu``...) instead of brew functions. Each method calls the brew helper
with the model's order/cuDNN settings; other op names go to the net as with ModelHelper.

>>> model = CNNModelHelper(name="lenet")
>>> fc = model.FC("data", "fc1", dim_in=4, dim_out=2)
>>> model.net.Proto().op[0].type, [str(p) for p in model.params]
('FC', ['fc1_w', 'fc1_b'])
"""
from __future__ import annotations

import logging
from typing import Any

from netjit import brew
from netjit.model_helper import ModelHelper
from netjit.proto import caffe2_pb2

log = logging.getLogger(__name__)


class CNNModelHelper(ModelHelper):
    """ModelHelper with CNN layer methods; ``order`` is "NCHW" or "NHWC"."""

    def __init__(self, order: str = "NCHW", name: str | None = None, use_cudnn: bool = True,
                 cudnn_exhaustive_search: bool = False, ws_nbytes_limit: int | None = None,
                 init_params: bool = True, skip_sparse_optim: bool = False,
                 param_model: ModelHelper | None = None):
        log.warning("CNNModelHelper is deprecated in Caffe2: prefer ModelHelper with the brew helpers.")
        scope = {"order": order, "use_cudnn": use_cudnn, "cudnn_exhaustive_search": cudnn_exhaustive_search}
        if ws_nbytes_limit:
            scope["ws_nbytes_limit"] = ws_nbytes_limit
        super().__init__(skip_sparse_optim=skip_sparse_optim, name="CNN" if name is None else name,
                         init_params=init_params, param_model=param_model, arg_scope=scope)
        self.order = order
        self.use_cudnn = use_cudnn
        self.cudnn_exhaustive_search = cudnn_exhaustive_search
        self.ws_nbytes_limit = ws_nbytes_limit
        if order not in ("NHWC", "NCHW"):
            raise ValueError(f"Cannot understand the CNN storage order {order}.")

    def _conv_kwargs(self) -> dict[str, Any]:
        return {"use_cudnn": self.use_cudnn, "order": self.order,
                "cudnn_exhaustive_search": self.cudnn_exhaustive_search, "ws_nbytes_limit": self.ws_nbytes_limit}

    # Convolutions ----------------------------------------------------------------------------
    def Conv(self, *args: Any, **kwargs: Any) -> Any:
        return brew.conv(self, *args, **self._conv_kwargs(), **kwargs)

    def ConvNd(self, *args: Any, **kwargs: Any) -> Any:
        return brew.conv_nd(self, *args, **self._conv_kwargs(), **kwargs)

    def ConvTranspose(self, *args: Any, **kwargs: Any) -> Any:
        return brew.conv_transpose(self, *args, **self._conv_kwargs(), **kwargs)

    def GroupConv(self, *args: Any, **kwargs: Any) -> Any:
        return brew.group_conv(self, *args, **self._conv_kwargs(), **kwargs)

    # Layers ----------------------------------------------------------------------------------
    def FC(self, *args: Any, **kwargs: Any) -> Any:
        return brew.fc(self, *args, **kwargs)

    def Dropout(self, *args: Any, **kwargs: Any) -> Any:
        return brew.dropout(self, *args, order=self.order, use_cudnn=self.use_cudnn, **kwargs)

    def LRN(self, *args: Any, **kwargs: Any) -> Any:
        return brew.lrn(self, *args, order=self.order, use_cudnn=self.use_cudnn, **kwargs)

    def Softmax(self, *args: Any, **kwargs: Any) -> Any:
        return brew.softmax(self, *args, use_cudnn=self.use_cudnn, **kwargs)

    def SpatialBN(self, *args: Any, **kwargs: Any) -> Any:
        return brew.spatial_bn(self, *args, order=self.order, **kwargs)

    def Relu(self, *args: Any, **kwargs: Any) -> Any:
        return brew.relu(self, *args, order=self.order, use_cudnn=self.use_cudnn, **kwargs)

    def PRelu(self, *args: Any, **kwargs: Any) -> Any:
        return brew.prelu(self, *args, **kwargs)

    def Concat(self, *args: Any, **kwargs: Any) -> Any:
        return brew.concat(self, *args, order=self.order, **kwargs)

    def DepthConcat(self, *args: Any, **kwargs: Any) -> Any:
        print("DepthConcat is deprecated. use Concat instead.")
        return self.Concat(*args, **kwargs)

    def Sum(self, *args: Any, **kwargs: Any) -> Any:
        return brew.sum(self, *args, **kwargs)

    def Transpose(self, *args: Any, **kwargs: Any) -> Any:
        return brew.transpose(self, *args, use_cudnn=self.use_cudnn, **kwargs)

    def Iter(self, *args: Any, **kwargs: Any) -> Any:
        return brew.iter(self, *args, **kwargs)

    def Accuracy(self, *args: Any, **kwargs: Any) -> Any:
        return brew.accuracy(self, *args, **kwargs)

    def MaxPool(self, *args: Any, **kwargs: Any) -> Any:
        return brew.max_pool(self, *args, use_cudnn=self.use_cudnn, order=self.order, **kwargs)

    def AveragePool(self, *args: Any, **kwargs: Any) -> Any:
        return brew.average_pool(self, *args, use_cudnn=self.use_cudnn, order=self.order, **kwargs)

    def AddWeightDecay(self, weight_decay: float) -> None:
        return brew.add_weight_decay(self, weight_decay)

    # Initializer shorthands, as ("Op", kwargs) tuples for weight_init=/bias_init= -------------
    @property
    def XavierInit(self) -> tuple[str, dict]:
        return ("XavierFill", {})

    def ConstantInit(self, value: float) -> tuple[str, dict]:
        return ("ConstantFill", {"value": value})

    @property
    def MSRAInit(self) -> tuple[str, dict]:
        return ("MSRAFill", {})

    @property
    def ZeroInit(self) -> tuple[str, dict]:
        return ("ConstantFill", {})

    @property
    def CPU(self) -> caffe2_pb2.DeviceOption:
        return caffe2_pb2.DeviceOption(device_type=caffe2_pb2.CPU)

    @property
    def GPU(self, gpu_id: int = 0) -> caffe2_pb2.DeviceOption:
        return caffe2_pb2.DeviceOption(device_type=caffe2_pb2.CUDA, cuda_gpu_id=gpu_id)
