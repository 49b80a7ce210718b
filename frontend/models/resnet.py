"""Caffe2's ResNet builders (``caffe2.python.models.resnet``), made of brew helpers: ResNet-50 for
ImageNet-sized inputs and the CIFAR-style residual net for 32x32 images (He et al. 2015, sec. 4.2).

    from caffe2.python import model_helper
    from caffe2.python.models import resnet
    model = model_helper.ModelHelper(name="resnet50", arg_scope={"order": "NCHW"})
    softmax, loss = resnet.create_resnet50(model, "data", num_input_channels=3, num_labels=1000,
                                           label="label")
    softmax = resnet.create_resnet_32x32(model, "data", num_input_channels=3, num_groups=1,
                                         num_labels=10)

Blob names follow Caffe2's (``conv1``, ``comp_0_conv_1``, ``comp_0_spatbn_1``, ``shortcut_projection_0``,
``comp_0_sum_3``, ``final_avg``, ``last_out_L1000``, ...), so weights saved by Caffe2's trainers load
into these nets.
"""
from __future__ import annotations

from typing import Any

from netjit import brew


class ResNetBuilder:
    """Appends residual components to ``model`` starting from ``prev_blob``; each component is
    numbered (``comp_<n>_...``), and ``prev_blob`` follows the last output."""

    def __init__(self, model: Any, prev_blob: Any, no_bias: Any, is_test: bool, spatial_bn_mom: float = 0.9):
        self.model = model
        self.comp_count = 0
        self.comp_idx = 0
        self.prev_blob = prev_blob
        self.is_test = is_test
        self.spatial_bn_mom = spatial_bn_mom
        self.no_bias = 1 if no_bias else 0

    def add_conv(self, in_filters: int, out_filters: int, kernel: int, stride: int = 1, pad: int = 0) -> Any:
        self.comp_idx += 1
        self.prev_blob = brew.conv(self.model, self.prev_blob, f"comp_{self.comp_count}_conv_{self.comp_idx}",
                                   in_filters, out_filters, weight_init=("MSRAFill", {}), kernel=kernel,
                                   stride=stride, pad=pad, no_bias=self.no_bias)
        return self.prev_blob

    def add_relu(self) -> Any:
        self.prev_blob = brew.relu(self.model, self.prev_blob, self.prev_blob)   # in place
        return self.prev_blob

    def add_spatial_bn(self, num_filters: int) -> Any:
        self.prev_blob = brew.spatial_bn(self.model, self.prev_blob, f"comp_{self.comp_count}_spatbn_{self.comp_idx}",
                                         num_filters, epsilon=1e-3, momentum=self.spatial_bn_mom,
                                         is_test=self.is_test)
        return self.prev_blob

    def _shortcut(self, shortcut: Any, in_filters: int, out_filters: int, down_sampling: bool,
                  spatial_batch_norm: bool, momentum: float | None) -> Any:
        # A 1x1 projection (strided when the block down-samples) where the widths differ.
        shortcut = brew.conv(self.model, shortcut, f"shortcut_projection_{self.comp_count}", in_filters, out_filters,
                             weight_init=("MSRAFill", {}), kernel=1, stride=2 if down_sampling else 1,
                             no_bias=self.no_bias)
        if spatial_batch_norm:
            extra = {} if momentum is None else {"momentum": momentum}
            shortcut = brew.spatial_bn(self.model, shortcut, f"shortcut_projection_{self.comp_count}_spatbn",
                                       out_filters, epsilon=1e-3, is_test=self.is_test, **extra)
        return shortcut

    def _finish(self, shortcut: Any, last: Any) -> None:
        self.prev_blob = brew.sum(self.model, [shortcut, last], f"comp_{self.comp_count}_sum_{self.comp_idx}")
        self.comp_idx += 1
        self.add_relu()
        self.comp_count += 1

    def add_bottleneck(self, input_filters: int, base_filters: int, output_filters: int,
                       down_sampling: bool = False, spatial_batch_norm: bool = True) -> None:
        """1x1 (reduce) -> 3x3 (strided when down-sampling) -> 1x1 (expand), plus the shortcut (He et al.
        Figure 3, right)."""
        self.comp_idx = 0
        shortcut = self.prev_blob
        self.add_conv(input_filters, base_filters, kernel=1, stride=1)
        if spatial_batch_norm:
            self.add_spatial_bn(base_filters)
        self.add_relu()
        self.add_conv(base_filters, base_filters, kernel=3, stride=2 if down_sampling else 1, pad=1)
        if spatial_batch_norm:
            self.add_spatial_bn(base_filters)
        self.add_relu()
        last = self.add_conv(base_filters, output_filters, kernel=1)
        if spatial_batch_norm:
            last = self.add_spatial_bn(output_filters)
        if output_filters > input_filters:
            shortcut = self._shortcut(shortcut, input_filters, output_filters, down_sampling, spatial_batch_norm,
                                      self.spatial_bn_mom)
        self._finish(shortcut, last)

    def add_simple_block(self, input_filters: int, num_filters: int, down_sampling: bool = False,
                         spatial_batch_norm: bool = True) -> None:
        """Two 3x3 convolutions (the first strided when down-sampling) plus the shortcut."""
        self.comp_idx = 0
        shortcut = self.prev_blob
        self.add_conv(input_filters, num_filters, kernel=3, stride=2 if down_sampling else 1, pad=1)
        if spatial_batch_norm:
            self.add_spatial_bn(num_filters)
        self.add_relu()
        last = self.add_conv(num_filters, num_filters, kernel=3, pad=1)
        if spatial_batch_norm:
            last = self.add_spatial_bn(num_filters)
        if num_filters != input_filters:
            shortcut = self._shortcut(shortcut, input_filters, num_filters, down_sampling, spatial_batch_norm, None)
        self._finish(shortcut, last)


def create_resnet50(model: Any, data: Any, num_input_channels: int, num_labels: int, label: Any = None,
                    is_test: bool = False, no_loss: bool = False, no_bias: int = 0, conv1_kernel: int = 7,
                    conv1_stride: int = 2, final_avg_kernel: int = 7, spatial_batch_norm: bool = True) -> Any:
    """ResNet-50. Returns ``last_out`` with no_loss=True, ``(softmax, loss)`` given a label, else the
    softmax. ``conv1_kernel``/``conv1_stride``/``final_avg_kernel`` adapt it to other input sizes
    (final_avg_kernel=7 fits 224x224)."""
    brew.conv(model, data, "conv1", num_input_channels, 64, weight_init=("MSRAFill", {}), kernel=conv1_kernel,
              stride=conv1_stride, pad=3, no_bias=no_bias)
    conv1 = "conv1"
    if spatial_batch_norm:
        conv1 = brew.spatial_bn(model, "conv1", "conv1_spatbn_relu", 64, epsilon=1e-3, momentum=0.1,
                                is_test=is_test)
    brew.relu(model, conv1, conv1)
    brew.max_pool(model, conv1, "pool1", kernel=3, stride=2)

    builder = ResNetBuilder(model, "pool1", no_bias=no_bias, is_test=is_test, spatial_bn_mom=0.1)
    # (input width, inner width, output width, blocks) per stage, Table 1 of He et al.
    stages = [(64, 64, 256, 3), (256, 128, 512, 4), (512, 256, 1024, 6), (1024, 512, 2048, 3)]
    for s, (width_in, base, width_out, blocks) in enumerate(stages):
        builder.add_bottleneck(width_in, base, width_out, s > 0, spatial_batch_norm)
        for _ in range(1, blocks):
            builder.add_bottleneck(width_out, base, width_out, False, spatial_batch_norm)

    final_avg = brew.average_pool(model, builder.prev_blob, "final_avg", kernel=final_avg_kernel, stride=1)
    last_out = brew.fc(model, final_avg, f"last_out_L{num_labels}", 2048, num_labels)
    if no_loss:
        return last_out
    if label is not None:
        softmax, loss = model.SoftmaxWithLoss([last_out, label], ["softmax", "loss"])
        return softmax, loss
    return brew.softmax(model, last_out, "softmax")


def create_resnet_32x32(model: Any, data: Any, num_input_channels: int, num_groups: int, num_labels: int,
                        is_test: bool = False) -> Any:
    """The residual net for 32x32 images: a 3x3 conv, then 3 stages (16, 32, 64 filters) of
    ``2·num_groups`` simple blocks each (``num_groups`` is the paper's n), average pool, FC, softmax."""
    brew.conv(model, data, "conv1", num_input_channels, 16, kernel=3, stride=1)
    brew.spatial_bn(model, "conv1", "conv1_spatbn", 16, epsilon=1e-3, is_test=is_test)
    brew.relu(model, "conv1_spatbn", "relu1")
    filters = [16, 32, 64]
    builder = ResNetBuilder(model, "relu1", no_bias=0, is_test=is_test)
    prev_filters = 16
    for group, width in enumerate(filters):
        for block in range(2 * num_groups):
            builder.add_simple_block(prev_filters if block == 0 else width, width,
                                     down_sampling=block == 0 and group > 0)
        prev_filters = width
    brew.average_pool(model, builder.prev_blob, "final_avg", kernel=8, stride=1)
    brew.fc(model, "final_avg", "last_out", 64, num_labels)
    return brew.softmax(model, "last_out", "softmax")
