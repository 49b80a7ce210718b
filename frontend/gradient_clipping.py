"""Gradient clipping as Caffe2 had it: ``GradientClipping`` (a NetModifier that clips each gradient by
its own norm or by value, ``caffe2.python.modeling.gradient_clipping``) and the global-norm clipping of
``optimizer.build_*(max_gradient_norm=...)``.

    from caffe2.python.modeling.gradient_clipping import GradientClipping
    grad_map = model.AddGradientOperators([loss])
    GradientClipping(grad_clip_method="by_norm", clip_norm_type="l2_norm", clip_threshold=1.0)(
        model.net, grad_map=grad_map)

By norm, each gradient g becomes g·(t/‖g‖) where ‖g‖ > t (``LpNorm`` → ``Pow`` → ``ClipTensorByScaling``);
with ``use_parameter_norm`` the threshold is t·‖w‖. Global clipping scales every gradient by
clip/max(‖(g1, g2, ...)‖, clip), Caffe2's ClipByGlobalNorm, built from the same ops.
"""
from __future__ import annotations

from typing import Any, Sequence

from netjit import core


class NetModifier:
    """Caffe2's base for objects that append ops to a net: ``modifier(net, init_net, grad_map, ...)``."""

    def __call__(self, net: Any, init_net: Any = None, grad_map: dict | None = None,
                 blob_to_device: dict | None = None, modify_output_record: bool = False) -> None:
        self.modify_net(net, init_net=init_net, grad_map=grad_map, blob_to_device=blob_to_device,
                        modify_output_record=modify_output_record)

    def modify_net(self, net: Any, init_net: Any = None, grad_map: dict | None = None,
                   blob_to_device: dict | None = None, modify_output_record: bool = False) -> None:
        raise TypeError(f"{type(self).__name__} must define modify_net")


class GradientClipping(NetModifier):
    """Clip each parameter's gradient in place, by its norm (``by_norm``) or by value (``by_value``)."""

    L1_NORM = "l1_norm"
    L2_NORM = "l2_norm"
    BY_NORM = "by_norm"
    BY_VALUE = "by_value"
    GRAD_CLIP_METHODS = [BY_NORM, BY_VALUE]
    CLIP_GRADIENT_NORM_TYPES = [L2_NORM, L1_NORM]

    def __init__(self, grad_clip_method: str, clip_norm_type: str = "l2_norm", clip_threshold: float = 0.1,
                 use_parameter_norm: bool = False, compute_norm_ratio: bool = False, clip_max: float = 1,
                 clip_min: float = -1, blobs_to_include: Sequence[str] | None = None,
                 blobs_to_exclude: Sequence[str] | None = None):
        if grad_clip_method not in self.GRAD_CLIP_METHODS:
            raise ValueError(f"unknown grad_clip_method {grad_clip_method!r}; use one of {self.GRAD_CLIP_METHODS}")
        if clip_norm_type is not None and clip_norm_type not in self.CLIP_GRADIENT_NORM_TYPES:
            raise ValueError(f"unknown clip_norm_type {clip_norm_type!r}; use one of "
                             f"{self.CLIP_GRADIENT_NORM_TYPES}")
        self.grad_clip_method = grad_clip_method
        self.clip_norm_type = clip_norm_type
        self.clip_threshold = float(clip_threshold)
        self.use_parameter_norm = use_parameter_norm
        self.compute_norm_ratio = compute_norm_ratio
        self.clip_max = float(clip_max)
        self.clip_min = float(clip_min)
        self.blobs_to_include = blobs_to_include
        self.blobs_to_exclude = blobs_to_exclude

    def _selected(self, net: Any, grad_map: dict) -> dict:
        if self.blobs_to_include is None:
            chosen = dict(grad_map)
        else:
            chosen = {}
            for blob in self.blobs_to_include:
                if str(blob) not in {str(k) for k in grad_map} and not net.BlobIsDefined(blob):
                    raise ValueError(f"param {blob} is not defined in net {net.Name()}")
                chosen[str(blob)] = grad_map[str(blob)]
        for blob in self.blobs_to_exclude or ():
            chosen = {k: v for k, v in chosen.items() if str(k) != str(blob)}
        return chosen

    def _norm(self, net: Any, blob: Any, p: int) -> Any:
        norm = net.LpNorm([blob], net.NextScopedBlob(prefix=f"{blob}_l{p}_norm"), p=p)
        return net.Pow([norm], net.NextScopedBlob(prefix=f"{blob}_l{p}_norm_sqrt"), exponent=0.5) if p == 2 else norm

    def modify_net(self, net: Any, init_net: Any = None, grad_map: dict | None = None,
                   blob_to_device: dict | None = None, modify_output_record: bool = False) -> None:
        if grad_map is None:
            raise ValueError("GradientClipping needs grad_map (what AddGradientOperators returned)")
        from netjit.optimizer import get_param_device   # late: optimizer imports this module
        cpu = core.DeviceOption(0)
        for param, grad in self._selected(net, grad_map).items():
            if isinstance(grad, core.GradientSlice):
                continue   # Caffe2 left sparse gradients unclipped too
            device = get_param_device(str(param), grad, param_to_device=blob_to_device, default_device=cpu)
            with core.DeviceScope(device):
                if self.grad_clip_method == self.BY_VALUE:
                    net.Clip([grad], [grad], max=self.clip_max, min=self.clip_min)
                    continue
                p = 2 if self.clip_norm_type == self.L2_NORM else 1
                grad_norm = self._norm(net, grad, p)
                inputs = [grad, grad_norm]
                if self.use_parameter_norm:
                    param_norm = self._norm(net, param, p)
                    inputs.append(param_norm)
                    if self.compute_norm_ratio:
                        net.Div([grad_norm, param_norm], [net.NextScopedBlob(prefix=f"{param}_norm_ratio")])
                net.ClipTensorByScaling(inputs, [grad], threshold=self.clip_threshold)


def _global_norm(model: Any, grads: Sequence[Any]) -> Any:
    squares = [model.net.LpNorm(g, f"grad_{i}_squared_sum", p=2) for i, g in enumerate(grads)]
    total = model.net.Sum(squares, "grad_squared_full_sum")
    return model.net.Pow(total, "global_norm", exponent=0.5)


def global_norm_clip(model: Any, grads: Sequence[Any], max_gradient_norm: float, name_scope: str) -> None:
    """Scale every gradient in place by clip/max(global L2 norm, clip)."""
    with core.NameScope(name_scope):
        norm = _global_norm(model, grads)
        for g in grads:
            model.net.ClipTensorByScaling([g, norm], [g], threshold=max_gradient_norm)


def norm_ratio(model: Any, grads: Sequence[Any], max_gradient_norm: float, name_scope: str) -> Any:
    """A blob holding clip/max(global L2 norm, clip), for optimizers to multiply their LR by
    (Caffe2's clip_using_lr_multiplier)."""
    with core.NameScope(name_scope):
        norm = _global_norm(model, grads)
        one = model.param_init_net.ConstantFill([], "norm_ratio_one", shape=[1], value=1.0)
        return model.net.ClipTensorByScaling([one, norm], "norm_ratio", threshold=max_gradient_norm)
