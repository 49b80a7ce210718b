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


# ---------------------------------------------------------------------------------------------
# ReduceSum/ReduceMean over a contiguous block of axes, the front/back reducers and their gradients:
# X seen as [outer, r, inner], reduced over r (no ``lengths`` input: those run on the host)
# ---------------------------------------------------------------------------------------------
def _reduce_kernel(name: str, outer: int, r: int, inner: int, scale: float) -> CudaKernel:
    k = reduce_kernels()["reduce_mid"]
    grid = row_blocks(outer * inner)
    s = np.float32(scale)

    def run(ins: list[Any], outs: list[Any]) -> None:
        k[grid, RED](flat(ins[0]), flat(outs[0]), outer, r, inner, s)
    return CudaKernel(run, name, [Launch(f"reduce_mid {outer}x{r}x{inner}", "numba-cuda", (grid,), (RED,))])


def _axes_dims(node: Node, values: Mapping[str, Value], x_name: str) -> tuple[int, int, int] | None:
    """(outer, r, inner) of X when the reduced axes are one contiguous block (else None: host)."""
    from netjit.compiler.ops.reduce import reduce_axes
    if not _f32(values, *node.inputs):
        return None
    shape = tuple(values[x_name].shape)
    try:
        axes = reduce_axes(node.attrs, len(shape))        # the node's decoded args
    except Exception:  # noqa: BLE001 - the reference reports it
        return None
    if not axes:
        return None
    if list(axes) != list(range(axes[0], axes[-1] + 1)):
        return None                      # not one block of axes: the host runs it
    outer, r = math.prod(shape[:axes[0]]), math.prod(shape[axes[0]:axes[-1] + 1])
    inner = math.prod(shape[axes[-1] + 1:])
    return (outer, r, inner) if r else None


def _spread_kernel(name: str, outer: int, r: int, inner: int, scale: float) -> CudaKernel:
    k = reduce_kernels()["spread_mid"]
    total = outer * r * inner
    blocks, threads = launch_shape(total)
    s = np.float32(scale)

    def run(ins: list[Any], outs: list[Any]) -> None:
        k[blocks, threads](flat(ins[0]), flat(outs[0]), total, r, inner, s)
    return CudaKernel(run, name, [Launch("spread_mid", "numba-cuda", (blocks,), (threads,))])


def reduce_axes_sum(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    dims = _axes_dims(node, values, node.inputs[0])
    return _reduce_kernel(node.op, *dims, 1.0) if dims else None


def reduce_axes_mean(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    dims = _axes_dims(node, values, node.inputs[0])
    return _reduce_kernel(node.op, *dims, 1.0 / dims[1]) if dims else None


def reduce_axes_sum_gradient(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    dims = _axes_dims(node, values, node.inputs[1])          # [dY, X, Y]
    return _spread_kernel(node.op, *dims, 1.0) if dims else None


def reduce_axes_mean_gradient(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    dims = _axes_dims(node, values, node.inputs[1])
    return _spread_kernel(node.op, *dims, 1.0 / dims[1]) if dims else None


def _front_back(node: Node, values: Mapping[str, Value], x_name: str) -> tuple[int, int, int, bool] | None:
    """(outer, r, inner, mean) of a front/back reducer or its gradient, without lengths."""
    from netjit.compiler.ops.reduce import front_back_dims, num_reduce
    op = node.op.removesuffix("Gradient")
    plain = 2 if node.op.endswith("Gradient") else 1      # [dY, X] or [X]: no lengths input
    if len(node.inputs) != plain or not _f32(values, *node.inputs):
        return None
    shape = tuple(values[x_name].shape)
    try:
        k = num_reduce(node.attrs, len(shape))
    except Exception:  # noqa: BLE001 - the reference reports it
        return None
    front = op.startswith("ReduceFront")
    rows, cols, _ = front_back_dims(shape, k, front)
    outer, r, inner = (1, rows, cols) if front else (rows, cols, 1)
    return (outer, r, inner, op.endswith("Mean")) if r else None


def reduce_front_back(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    dims = _front_back(node, values, node.inputs[0])
    if dims is None:
        return None
    outer, r, inner, mean = dims
    return _reduce_kernel(node.op, outer, r, inner, 1.0 / r if mean else 1.0)


def reduce_front_back_gradient(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    dims = _front_back(node, values, node.inputs[1])
    if dims is None:
        return None
    outer, r, inner, mean = dims
    return _spread_kernel(node.op, outer, r, inner, 1.0 / r if mean else 1.0)


def device_copy(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    """Copy / CopyOnDeviceLike on the device: a device-to-device copy."""
    if not values[node.inputs[0]].typed:
        return None

    def run(ins: list[Any], outs: list[Any]) -> None:
        outs[0].copy_to_device(ins[0])
    return CudaKernel(run, node.op, [Launch("memcpy d2d", "cuda-runtime", (), ())])


# ---------------------------------------------------------------------------------------------
# SpatialBN in training mode: per-channel statistics as shared-memory reductions (NCHW)
# ---------------------------------------------------------------------------------------------
_BN: dict[str, Any] = {}


def bn_kernels() -> dict[str, Any]:
    if _BN:
        return _BN
    reduce_kernels()        # sets the cuda_kernels module's ``cuda`` global the kernels below use
    from netjit.compiler.codegen import cuda_kernels as ck
    src = '''
def bn_stats(x, mean, var, new_mean, new_var, saved_mean, saved_inv, n, c, p, eps, momentum):
    # One block per channel: the mean, then the biased variance (two passes, as the reference).
    sm = cuda.shared.array(RED, float32)
    tid = cuda.threadIdx.x
    ch = cuda.blockIdx.x
    count = n * p
    while ch < c:
        acc = float32(0)
        j = tid
        while j < count:
            b = j // p
            acc += x[(b * c + ch) * p + j - b * p]
            j += RED
        sm[tid] = acc
        m = block_sum(sm, tid) / count
        cuda.syncthreads()
        acc = float32(0)
        j = tid
        while j < count:
            b = j // p
            d = x[(b * c + ch) * p + j - b * p] - m
            acc += d * d
            j += RED
        sm[tid] = acc
        v = block_sum(sm, tid) / count
        if tid == 0:
            saved_mean[ch] = m
            saved_inv[ch] = 1 / math.sqrt(v + eps)
            new_mean[ch] = mean[ch] * momentum + m * (1 - momentum)
            new_var[ch] = var[ch] * momentum + v * (1 - momentum)
        cuda.syncthreads()
        ch += cuda.gridDim.x


def bn_apply(x, scale, bias, mean, inv, y, total, c, p):
    i = cuda.grid(1)
    while i < total:
        ch = (i // p) % c
        y[i] = (x[i] - mean[ch]) * inv[ch] * scale[ch] + bias[ch]
        i += cuda.gridsize(1)


def bn_grad_sums(x, dy, mean, inv, dscale, dbias, n, c, p):
    sm = cuda.shared.array(RED, float32)
    tid = cuda.threadIdx.x
    ch = cuda.blockIdx.x
    while ch < c:
        acc = float32(0)
        acc2 = float32(0)
        j = tid
        while j < n * p:
            b = j // p
            k = (b * c + ch) * p + j - b * p
            acc += dy[k] * (x[k] - mean[ch]) * inv[ch]
            acc2 += dy[k]
            j += RED
        sm[tid] = acc
        s1 = block_sum(sm, tid)
        cuda.syncthreads()
        sm[tid] = acc2
        s2 = block_sum(sm, tid)
        if tid == 0:
            dscale[ch] = s1
            dbias[ch] = s2
        cuda.syncthreads()
        ch += cuda.gridDim.x


def bn_grad_apply(x, scale, dy, mean, inv, dscale, dbias, dx, total, c, p, count):
    i = cuda.grid(1)
    while i < total:
        ch = (i // p) % c
        xhat = (x[i] - mean[ch]) * inv[ch]
        dx[i] = scale[ch] * inv[ch] * (dy[i] - (dbias[ch] + xhat * dscale[ch]) / count)
        i += cuda.gridsize(1)
'''
    from numba import float32
    env = {"cuda": ck.cuda, "math": math, "float32": float32, "RED": RED,
           "block_sum": ck._REDUCE["block_sum"]}
    exec(compile(src, "<netjit-cuda batchnorm>", "exec"), env)  # noqa: S102 - our own kernels
    for name in ("bn_stats", "bn_apply", "bn_grad_sums", "bn_grad_apply"):
        _BN[name] = ck.cuda.jit(env[name])
    return _BN


def _bn_dims(node: Node, values: Mapping[str, Value], n_in: int, n_out: int) -> tuple[int, int, int] | None:
    order = node.attrs.get("order", "NCHW")
    order = order.decode() if isinstance(order, bytes) else order
    if (node.attrs.get("is_test") or order != "NCHW" or int(node.attrs.get("num_batches", 1)) != 1
            or len(node.inputs) != n_in or len(node.outputs) != n_out or not _f32(values, *node.inputs)):
        return None
    shape = tuple(values[node.inputs[0]].shape)
    # Per-channel operands: all but X (and dY, the gradient's input 2).
    channel = [v for k, v in enumerate(node.inputs) if k and not (node.op == "SpatialBNGradient" and k == 2)]
    if len(shape) < 2 or any(tuple(values[v].shape) != (shape[1],) for v in channel):
        return None
    return shape[0], shape[1], math.prod(shape[2:])


def spatial_bn_train(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    dims = _bn_dims(node, values, 5, 5)
    if dims is None:
        return None
    n, c, p = dims
    eps, mom = np.float32(node.attrs.get("epsilon", 1e-5)), np.float32(node.attrs.get("momentum", 0.9))
    ks = bn_kernels()
    grid = row_blocks(c)
    blocks, threads = launch_shape(n * c * p)

    def run(ins: list[Any], outs: list[Any]) -> None:
        x, scale, bias, mean, var = (flat(a) for a in ins)
        y, new_mean, new_var, saved_mean, saved_inv = (flat(a) for a in outs)
        ks["bn_stats"][grid, RED](x, mean, var, new_mean, new_var, saved_mean, saved_inv, n, c, p, eps, mom)
        ks["bn_apply"][blocks, threads](x, scale, bias, saved_mean, saved_inv, y, n * c * p, c, p)
    return CudaKernel(run, "SpatialBN", [Launch("bn_stats", "numba-cuda", (grid,), (RED,)),
                                         Launch("bn_apply", "numba-cuda", (blocks,), (threads,))])


def spatial_bn_gradient(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    dims = _bn_dims(node, values, 5, 3)
    if dims is None:
        return None
    n, c, p = dims
    ks = bn_kernels()
    grid = row_blocks(c)
    blocks, threads = launch_shape(n * c * p)

    def run(ins: list[Any], outs: list[Any]) -> None:
        x, scale, dy, mean, inv = (flat(a) for a in ins)
        dx, dscale, dbias = (flat(a) for a in outs)
        ks["bn_grad_sums"][grid, RED](x, dy, mean, inv, dscale, dbias, n, c, p)
        ks["bn_grad_apply"][blocks, threads](x, scale, dy, mean, inv, dscale, dbias, dx, n * c * p, c, p,
                                             np.float32(n * p))
    return CudaKernel(run, "SpatialBNGradient", [Launch("bn_grad_sums", "numba-cuda", (grid,), (RED,)),
                                                 Launch("bn_grad_apply", "numba-cuda", (blocks,), (threads,))])
