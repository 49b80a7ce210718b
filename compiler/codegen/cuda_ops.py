"""numba-cuda lowering entries of the row reductions and losses (the op records name these).

Each maker is ``(node, values) -> CudaKernel | None``; None means "not this instance" (an unusual
dtype or argument): the node then runs its reference on the host, with copies explain() lists.

>>> # Lowering(standalone="netjit.compiler.codegen.cuda_ops:softmax") in Softmax's record
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from netjit.compiler.codegen.cuda_kernels import CudaKernel, Launch, RED, flat, launch_shape, reduce_kernels, row_blocks
from netjit.compiler.ir import Node, Value

F32 = np.dtype(np.float32)


def _f32(values: Mapping[str, Value], *names: str) -> bool:
    return all(values[n].typed and values[n].dtype == F32 for n in names)


def _int_labels(values: Mapping[str, Value], name: str, rows: int) -> bool:
    v = values[name]
    return v.typed and v.dtype == np.dtype(np.int32) and v.size == rows


def _axis_rows(node: Node, shape: tuple[int, ...]) -> tuple[int, int] | None:
    axis = int(node.attrs.get("axis", 1))
    axis = axis + len(shape) if axis < 0 else axis
    if not 0 <= axis <= len(shape):
        return None
    return math.prod(shape[:axis]), math.prod(shape[axis:])


def _xent_rows(shape: tuple[int, ...]) -> tuple[int, int]:
    return (shape[0], math.prod(shape[1:])) if len(shape) > 1 else (1, shape[0] if shape else 1)


def softmax(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    x = values[node.inputs[0]]
    dims = _axis_rows(node, tuple(x.shape)) if _f32(values, node.inputs[0]) else None
    if dims is None:
        return None
    rows, d = dims
    k = reduce_kernels()["softmax_rows"]
    grid = row_blocks(rows)

    def run(ins: list[Any], outs: list[Any]) -> None:
        k[grid, RED](flat(ins[0]), flat(outs[0]), rows, d)
    return CudaKernel(run, "Softmax", [Launch("softmax_rows", "numba-cuda", (grid,), (RED,))])


def softmax_gradient(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    y = values[node.inputs[0]]
    dims = _axis_rows(node, tuple(y.shape)) if _f32(values, *node.inputs) else None
    if dims is None:
        return None
    rows, d = dims
    k = reduce_kernels()["softmax_grad_rows"]
    grid = row_blocks(rows)

    def run(ins: list[Any], outs: list[Any]) -> None:
        k[grid, RED](flat(ins[0]), flat(ins[1]), flat(outs[0]), rows, d)
    return CudaKernel(run, "SoftmaxGradient", [Launch("softmax_grad_rows", "numba-cuda", (grid,), (RED,))])


def averaged_loss(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    if not _f32(values, node.inputs[0]):
        return None
    n = values[node.inputs[0]].size
    k = reduce_kernels()["sum_scaled"]
    scale = np.float32(1.0 / n) if n else np.float32(np.nan)

    def run(ins: list[Any], outs: list[Any]) -> None:
        k[1, RED](flat(ins[0]), flat(outs[0]), n, scale)
    return CudaKernel(run, "AveragedLoss", [Launch("sum_scaled", "numba-cuda", (1,), (RED,))])


def label_cross_entropy(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    if not _f32(values, node.inputs[0]):
        return None
    rows, d = _xent_rows(tuple(values[node.inputs[0]].shape))
    if not _int_labels(values, node.inputs[1], rows):
        return None
    k = reduce_kernels()["label_xent"]
    blocks, threads = launch_shape(rows)

    def run(ins: list[Any], outs: list[Any]) -> None:
        k[blocks, threads](flat(ins[0]), flat(ins[1]), flat(outs[0]), rows, d)
    return CudaKernel(run, "LabelCrossEntropy", [Launch("label_xent", "numba-cuda", (blocks,), (threads,))])


def label_cross_entropy_gradient(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    if not _f32(values, node.inputs[0], node.inputs[2]):
        return None
    rows, d = _xent_rows(tuple(values[node.inputs[0]].shape))
    if not _int_labels(values, node.inputs[1], rows) or values[node.inputs[2]].size != rows:
        return None
    k = reduce_kernels()["label_xent_grad"]
    blocks, threads = launch_shape(rows * d)

    def run(ins: list[Any], outs: list[Any]) -> None:
        k[blocks, threads](flat(ins[0]), flat(ins[1]), flat(ins[2]), flat(outs[0]), rows, d)
    return CudaKernel(run, "LabelCrossEntropyGradient",
                      [Launch("label_xent_grad", "numba-cuda", (blocks,), (threads,))])


def _swl_plain(node: Node, values: Mapping[str, Value], n_inputs: int) -> tuple[int, int] | None:
    """(rows, d) when the loss is the plain one these kernels compute: int labels, no weights."""
    if len(node.inputs) != n_inputs or node.attrs.get("label_prob") or not _f32(values, node.inputs[0]):
        return None
    dims = _axis_rows(node, tuple(values[node.inputs[0]].shape))
    if dims is None or not _int_labels(values, node.inputs[1], dims[0]) or dims[0] == 0:
        return None
    return dims


def softmax_with_loss(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    dims = _swl_plain(node, values, 2)
    if dims is None:
        return None
    rows, d = dims
    ks = reduce_kernels()
    grid = row_blocks(rows)
    blocks, threads = launch_shape(rows)
    scale = np.float32(float(node.attrs.get("scale", 1.0)) / rows)
    from netjit.runtime.device import cuda

    def run(ins: list[Any], outs: list[Any]) -> None:
        p = flat(outs[0])
        ks["softmax_rows"][grid, RED](flat(ins[0]), p, rows, d)
        terms = cuda().device_array(rows, np.float32)
        ks["nll_terms"][blocks, threads](p, flat(ins[1]), terms, rows, d)
        ks["sum_scaled"][1, RED](terms, flat(outs[1]), rows, scale)
    return CudaKernel(run, "SoftmaxWithLoss", [Launch("softmax_rows", "numba-cuda", (grid,), (RED,)),
                                               Launch("nll_terms", "numba-cuda", (blocks,), (threads,)),
                                               Launch("sum_scaled", "numba-cuda", (1,), (RED,))])


def softmax_with_loss_gradient(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    dims = _swl_plain(node, values, 4)
    if dims is None or not _f32(values, node.inputs[2], node.inputs[3]):
        return None
    rows, d = dims
    k = reduce_kernels()["softmax_loss_grad"]
    blocks, threads = launch_shape(rows * d)
    scale = np.float32(float(node.attrs.get("scale", 1.0)) / rows)

    def run(ins: list[Any], outs: list[Any]) -> None:
        k[blocks, threads](flat(ins[2]), flat(ins[1]), flat(ins[3]), flat(outs[0]), rows, d, scale)
    return CudaKernel(run, "SoftmaxWithLossGradient",
                      [Launch("softmax_loss_grad", "numba-cuda", (blocks,), (threads,))])


def device_copy(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    """Copy / CopyOnDeviceLike on the device: a device-to-device copy."""
    if not values[node.inputs[0]].typed:
        return None

    def run(ins: list[Any], outs: list[Any]) -> None:
        outs[0].copy_to_device(ins[0])
    return CudaKernel(run, node.op, [Launch("memcpy d2d", "cuda-runtime", (), ())])
