"""Tiled @cuda.jit GEMM, and FC, MatMul, Conv (im2col + GEMM), their gradients, and pooling.

One GEMM kernel serves them all: ``C = alpha · op(A) · op(B)`` over shared-memory tiles, each operand
read through (row stride, column stride) or, for a convolution's [N, C, P] tensors seen as a
[C, N·P] matrix, through the "channel layout" (``p`` > 0). The epilogue (a per-column bias for FC,
per-row for Conv, then Relu) runs on the accumulator before the one store, so FC+Relu and
Conv+Relu are one launch.

cuBLAS (through cupy) takes the GEMMs whose operands are plain strided matrices (FC, MatMul, the
forward Conv's W · im2col, whose result it writes in the channel layout) on a real GPU when cupy
imports and ``NETJIT_CUDA_CUBLAS=1`` says a measurement found it faster (examples/benchmarks/
bench_gpu.py measures both); never under the simulator.

>>> tiles(33, 16)
3
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping

import numpy as np

cuda: Any = None   # numba.cuda, imported on first use

from netjit.compiler.codegen.cuda_kernels import (CudaKernel, Launch, RED, SIM, flat, launch_shape,
                                                  reduce_kernels, row_blocks)
from netjit.compiler.ir import Node, Value

TILE = 4 if SIM else 16
# The simulator runs every thread as a Python thread and every syncthreads() as a barrier between
# them, which makes the tiled kernel minutes slow at LeNet sizes there: the simulator runs the plain
# kernel (one output per thread) unless NETJIT_CUDA_TILED=1; tests run the tiled one explicitly.
TILED = not SIM or os.environ.get("NETJIT_CUDA_TILED", "0") == "1"
MAX_TILE_GRID = 2 if SIM else 65535
F32 = np.dtype(np.float32)
_K: dict[str, Any] = {}


def tiles(n: int, t: int = TILE) -> int:
    return -(-n // t)


def cublas_enabled() -> bool:
    """cuBLAS through cupy: a real GPU, cupy importable, and opted in by measurement."""
    if SIM or os.environ.get("NETJIT_CUDA_CUBLAS", "0") != "1":
        return False
    try:
        import cupy  # noqa: F401
        return True
    except Exception:  # noqa: BLE001 - absent or broken: the numba kernels run
        return False


def kernels() -> dict[str, Any]:
    if _K:
        return _K
    global cuda   # a module global: the simulator swaps it for its fake module inside kernels
    from numba import cuda, float32

    @cuda.jit(device=True, inline=True)
    def at(r, j, rs, cs, p, rows):
        if p > 0:
            return (j // p) * rows * p + r * p + (j % p)
        return r * rs + j * cs

    @cuda.jit
    def gemm(a, b, c, bias, m, n, k, alpha, a_rs, a_cs, a_p, b_rs, b_cs, b_p, c_p, bias_mode, relu):
        sa = cuda.shared.array((TILE, TILE), float32)
        sb = cuda.shared.array((TILE, TILE), float32)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tm = cuda.blockIdx.y
        while tm < (m + TILE - 1) // TILE:
            tn = cuda.blockIdx.x
            while tn < (n + TILE - 1) // TILE:
                row = tm * TILE + ty
                col = tn * TILE + tx
                acc = float32(0)
                for t in range((k + TILE - 1) // TILE):
                    ka = t * TILE + tx
                    kb = t * TILE + ty
                    sa[ty, tx] = a[at(row, ka, a_rs, a_cs, a_p, m)] if row < m and ka < k else float32(0)
                    sb[ty, tx] = b[at(kb, col, b_rs, b_cs, b_p, k)] if kb < k and col < n else float32(0)
                    cuda.syncthreads()
                    for q in range(TILE):
                        acc += sa[ty, q] * sb[q, tx]
                    cuda.syncthreads()
                if row < m and col < n:
                    v = acc * alpha
                    if bias_mode == 1:
                        v += bias[col]
                    elif bias_mode == 2:
                        v += bias[row]
                    if relu and v < 0:
                        v = float32(0)
                    c[at(row, col, n, 1, c_p, m)] = v
                tn += cuda.gridDim.x
            tm += cuda.gridDim.y

    @cuda.jit
    def gemm_plain(a, b, c, bias, m, n, k, alpha, a_rs, a_cs, a_p, b_rs, b_cs, b_p, c_p, bias_mode, relu):
        i = cuda.grid(1)
        while i < m * n:
            row = i // n
            col = i - row * n
            acc = float32(0)
            for q in range(k):
                acc += a[at(row, q, a_rs, a_cs, a_p, m)] * b[at(q, col, b_rs, b_cs, b_p, k)]
            v = acc * alpha
            if bias_mode == 1:
                v += bias[col]
            elif bias_mode == 2:
                v += bias[row]
            if relu and v < 0:
                v = float32(0)
            c[at(row, col, n, 1, c_p, m)] = v
            i += cuda.gridsize(1)

    @cuda.jit
    def im2col(x, col, nb, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
        # col[K = c·kh·kw, N·P]: column n·P + p holds the window of output position p of image n.
        i = cuda.grid(1)
        p_all = oh * ow
        total = c * kh * kw * nb * p_all
        while i < total:
            kk = i // (nb * p_all)
            rest = i - kk * nb * p_all
            img = rest // p_all
            p = rest - img * p_all
            ch = kk // (kh * kw)
            r = kk - ch * kh * kw
            ky = r // kw
            kx = r - ky * kw
            y = (p // ow) * sh - ph + ky * dh
            z = (p % ow) * sw - pw + kx * dw
            col[i] = x[((img * c + ch) * h + y) * w + z] if 0 <= y < h and 0 <= z < w else float32(0)
            i += cuda.gridsize(1)

    @cuda.jit
    def col2im(dcol, dx, nb, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
        # The adjoint of im2col as a gather (no atomics): each input element sums its windows.
        i = cuda.grid(1)
        p_all = oh * ow
        total = nb * c * h * w
        while i < total:
            z = i % w
            y = (i // w) % h
            ch = (i // (w * h)) % c
            img = i // (w * h * c)
            acc = float32(0)
            for ky in range(kh):
                ty = y + ph - ky * dh
                if ty >= 0 and ty % sh == 0 and ty // sh < oh:
                    for kx in range(kw):
                        tz = z + pw - kx * dw
                        if tz >= 0 and tz % sw == 0 and tz // sw < ow:
                            kk = (ch * kh + ky) * kw + kx
                            acc += dcol[kk * nb * p_all + img * p_all + (ty // sh) * ow + tz // sw]
            dx[i] = acc
            i += cuda.gridsize(1)

    @cuda.jit
    def pool(x, y, nc, h, w, kh, kw, sh, sw, ph, pw, oh, ow, is_max, include_pad):
        i = cuda.grid(1)
        while i < nc * oh * ow:
            q = i % (oh * ow)
            plane = i // (oh * ow)
            y0 = (q // ow) * sh - ph
            z0 = (q % ow) * sw - pw
            best = float32(-3.4028234663852886e38)
            acc = float32(0)
            cnt = 0
            for ky in range(kh):
                for kx in range(kw):
                    yy = y0 + ky
                    zz = z0 + kx
                    if 0 <= yy < h and 0 <= zz < w:
                        v = x[(plane * h + yy) * w + zz]
                        best = max(best, v)
                        acc += v
                        cnt += 1
            if is_max:
                y[i] = best
            else:
                y[i] = acc / (kh * kw if include_pad else cnt)
            i += cuda.gridsize(1)

    @cuda.jit
    def pool_grad(x, y, dy, dx, nc, h, w, kh, kw, sh, sw, ph, pw, oh, ow, is_max, include_pad):
        # Gather: each input element sums dY over the windows that contain it (max: where X == Y).
        i = cuda.grid(1)
        while i < nc * h * w:
            z = i % w
            yy = (i // w) % h
            plane = i // (w * h)
            acc = float32(0)
            for ky in range(kh):
                ty = yy + ph - ky
                if ty >= 0 and ty % sh == 0 and ty // sh < oh:
                    for kx in range(kw):
                        tz = z + pw - kx
                        if tz >= 0 and tz % sw == 0 and tz // sw < ow:
                            o = (plane * oh + ty // sh) * ow + tz // sw
                            if is_max:
                                if x[i] == y[o]:
                                    acc += dy[o]
                            else:
                                y0 = (ty // sh) * sh - ph
                                z0 = (tz // sw) * sw - pw
                                if include_pad:
                                    cnt = kh * kw
                                else:
                                    cnt = (min(y0 + kh, h) - max(y0, 0)) * (min(z0 + kw, w) - max(z0, 0))
                                acc += dy[o] / cnt
            dx[i] = acc
            i += cuda.gridsize(1)

    _K.update(gemm=gemm, gemm_plain=gemm_plain, im2col=im2col, col2im=col2im, pool=pool, pool_grad=pool_grad)
    return _K


class Gemm:
    """One configured GEMM launch: shapes, operand layouts and epilogue fixed at plan time."""

    def __init__(self, m: int, n: int, k: int, a: tuple[int, int, int], b: tuple[int, int, int],
                 c_p: int = 0, bias_mode: int = 0, relu: bool = False, alpha: float = 1.0,
                 tiled: bool | None = None):
        self.m, self.n, self.k = m, n, k
        self.a, self.b, self.c_p = a, b, c_p
        self.bias_mode, self.relu, self.alpha = bias_mode, int(relu), np.float32(alpha)
        self.tiled = TILED if tiled is None else tiled
        # cuBLAS reads plain strided operands only (not the channel layout); it may write it.
        self.cublas = a[2] == 0 and b[2] == 0 and cublas_enabled()
        if self.tiled:
            self.grid = (max(1, min(tiles(n), MAX_TILE_GRID)), max(1, min(tiles(m), MAX_TILE_GRID)))
            self.block = (TILE, TILE)
        else:
            blocks, threads = launch_shape(m * n)
            self.grid, self.block = (blocks,), (threads,)

    def __call__(self, a: Any, b: Any, c: Any, bias: Any = None) -> None:
        if self.cublas:
            self._cublas(a, b, c, bias)
            return
        launch = self.__dict__.get("_launch")
        if launch is None:      # configured once per GEMM
            launch = self._launch = kernels()["gemm" if self.tiled else "gemm_plain"][self.grid, self.block]
        bias = flat(bias) if bias is not None else flat(c)
        launch(flat(a), flat(b), flat(c), bias, self.m, self.n, self.k, self.alpha,
               *self.a, *self.b, self.c_p, self.bias_mode, self.relu)

    def _cublas(self, a: Any, b: Any, c: Any, bias: Any) -> None:
        """The same product through cupy (cuBLAS) on the numba arrays' memory, epilogue in cupy."""
        import cupy as cp
        from cupy.lib.stride_tricks import as_strided
        f = np.dtype(np.float32).itemsize
        am = as_strided(cp.asarray(flat(a)), (self.m, self.k), (self.a[0] * f, self.a[1] * f))
        bm = as_strided(cp.asarray(flat(b)), (self.k, self.n), (self.b[0] * f, self.b[1] * f))
        if self.c_p:
            # C[m, N·P] in the channel layout [N, m, P]: one product, then one transposing copy
            # (a batched product would copy W once per image).
            p = self.c_p
            out = cp.asarray(flat(c)).reshape(self.n // p, self.m, p)
            out[...] = cp.matmul(am, bm).reshape(self.m, self.n // p, p).transpose(1, 0, 2)
        else:
            out = cp.asarray(flat(c)).reshape(self.m, self.n)
            cp.matmul(am, bm, out=out)
        if self.alpha != 1:
            out *= self.alpha
        if self.bias_mode:
            vec = cp.asarray(flat(bias))
            if self.c_p:      # C's rows are the channel axis of [N, m, P]; its columns (n, p)
                out += vec[None, :, None] if self.bias_mode == 2 else vec.reshape(-1, 1, self.c_p)
            else:
                out += vec[None, :] if self.bias_mode == 1 else vec[:, None]
        if self.relu:
            cp.maximum(out, 0, out=out)

    def launch(self, what: str) -> Launch:
        if self.cublas:
            return Launch(f"cublas {what} {self.m}x{self.n}x{self.k}", "cublas", (), ())
        kind = "gemm" if self.tiled else "gemm(plain)"
        return Launch(f"{kind} {what} {self.m}x{self.n}x{self.k}", "numba-cuda", self.grid, self.block)


def _f32(values: Mapping[str, Value], names: Any) -> bool:
    return all(values[v].typed and values[v].dtype == F32 for v in names)


def _fc_dims(node: Node, values: Mapping[str, Value]) -> tuple[int, int, int] | None:
    x, w = values[node.inputs[0]].shape, values[node.inputs[1]].shape
    axis, axis_w = int(node.attrs.get("axis", 1)), int(node.attrs.get("axis_w", 1))
    if not 0 < axis <= len(x) or not 0 < axis_w <= len(w):
        return None
    n, k = math.prod(x[:axis]), math.prod(x[axis:])
    m, kw = math.prod(w[:axis_w]), math.prod(w[axis_w:])
    return (n, m, k) if k == kw else None


def fc_gemm(node: Node, values: Mapping[str, Value], relu: bool = False) -> Gemm | None:
    if not _f32(values, node.inputs) or node.attrs.get("transpose_W", False) is True:
        return None
    dims = _fc_dims(node, values)
    if dims is None:
        return None
    n, m, k = dims
    # Y[n, m] = X[n, k] · W[m, k]^T + b[m]
    return Gemm(n, m, k, (k, 1, 0), (1, k, 0), bias_mode=1, relu=relu)


def fc(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    g = fc_gemm(node, values)
    if g is None:
        return None

    def run(ins: list[Any], outs: list[Any]) -> None:
        g(ins[0], ins[1], outs[0], ins[2])
    return CudaKernel(run, "FC", [g.launch("FC")])


def fc_gradient(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    if not _f32(values, node.inputs):
        return None
    dims = _fc_dims(node, values)
    if dims is None:
        return None
    n, m, k = dims
    dw = Gemm(m, k, n, (1, m, 0), (k, 1, 0))          # dW[m, k] = dY^T · X
    dx = Gemm(n, k, m, (m, 1, 0), (k, 1, 0))          # dX[n, k] = dY · W
    sums = reduce_kernels()["channel_sums"]
    grid = row_blocks(m)
    want_dx = len(node.outputs) > 2

    def run(ins: list[Any], outs: list[Any]) -> None:
        x, w, dy = ins
        dw(dy, x, outs[0])
        sums[grid, RED](flat(dy), flat(outs[1]), n, m, 1)
        if want_dx:
            dx(dy, w, outs[2])
    launches = [dw.launch("dW"), Launch("channel_sums db", "numba-cuda", (grid,), (RED,))]
    return CudaKernel(run, "FCGradient", launches + ([dx.launch("dX")] if want_dx else []))


def matmul(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    if len(node.inputs) != 2 or not _f32(values, node.inputs):
        return None
    a, b = values[node.inputs[0]].shape, values[node.inputs[1]].shape
    if len(a) != 2 or len(b) != 2 or node.attrs.get("axis_a", 1) != 1 or node.attrs.get("axis_b", 1) != 1:
        return None
    ta, tb = bool(node.attrs.get("trans_a", 0)), bool(node.attrs.get("trans_b", 0))
    m, k = (a[1], a[0]) if ta else a
    kb, n = (b[1], b[0]) if tb else b
    if k != kb:
        return None
    g = Gemm(m, n, k, (1, m, 0) if ta else (k, 1, 0), (1, k, 0) if tb else (n, 1, 0))

    def run(ins: list[Any], outs: list[Any]) -> None:
        g(ins[0], ins[1], outs[0])
    return CudaKernel(run, "MatMul", [g.launch("MatMul")])


def _conv_geometry(node: Node, values: Mapping[str, Value]) -> Any:
    from netjit.compiler.ops.conv import conv_setup
    x, w = values[node.inputs[0]], values[node.inputs[1]]
    b = values[node.inputs[2]].shape if len(node.inputs) > 2 and node.op == "Conv" else None
    try:
        s = conv_setup(node.attrs, x.shape, w.shape, b)
    except Exception:  # noqa: BLE001 - the reference reports it when it runs
        return None
    if not s.spec.channel_first or s.spec.group != 1 or len(s.g.kernel) != 2:
        return None
    return s


class _Im2col:
    def __init__(self, s: Any):
        g = s.g
        self.n, self.c, self.m = s.n, s.c, s.m
        self.h, self.w = g.size
        self.kh, self.kw = g.kernel
        self.oh, self.ow = g.out
        self.p = self.oh * self.ow
        self.kdim = self.c * self.kh * self.kw
        self.geom = (self.n, self.c, self.h, self.w, self.kh, self.kw, *g.stride, *g.pad_head, *g.dilation,
                     self.oh, self.ow)
        self.shape = launch_shape(self.kdim * self.n * self.p)
        self.back = launch_shape(self.n * self.c * self.h * self.w)

    def cols(self, x: Any) -> Any:
        from netjit.runtime.device import cuda
        col = cuda().device_array(self.kdim * self.n * self.p, np.float32)
        kernels()["im2col"][self.shape](flat(x), col, *self.geom)
        return col


def conv_gemm(node: Node, values: Mapping[str, Value], relu: bool = False) -> tuple[_Im2col, Gemm] | None:
    if not _f32(values, node.inputs):
        return None
    s = _conv_geometry(node, values)
    if s is None:
        return None
    ic = _Im2col(s)
    # Y[m, n·P] (channel layout) = W[m, K] · col[K, n·P] + b[m]
    g = Gemm(ic.m, ic.n * ic.p, ic.kdim, (ic.kdim, 1, 0), (ic.n * ic.p, 1, 0), c_p=ic.p,
             bias_mode=2 if len(node.inputs) > 2 else 0, relu=relu)
    return ic, g


def conv(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    made = conv_gemm(node, values)
    if made is None:
        return None
    ic, g = made

    def run(ins: list[Any], outs: list[Any]) -> None:
        g(ins[1], ic.cols(ins[0]), outs[0], ins[2] if len(ins) > 2 else None)
    return CudaKernel(run, "Conv", [Launch("im2col", "numba-cuda", (ic.shape[0],), (ic.shape[1],)), g.launch("Conv")])


def conv_gradient(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    if not _f32(values, node.inputs):
        return None
    s = _conv_geometry(node, values)
    if s is None:
        return None
    ic = _Im2col(s)
    no_bias = bool(node.attrs.get("no_bias", False))
    np_ = ic.n * ic.p
    dw = Gemm(ic.m, ic.kdim, np_, (0, 0, ic.p), (1, np_, 0))          # dW = dY[m, nP] · col^T
    dcol = Gemm(ic.kdim, np_, ic.m, (1, ic.kdim, 0), (0, 0, ic.p))    # dcol = W^T · dY
    sums = reduce_kernels()["channel_sums"]
    grid = row_blocks(ic.m)
    want_dx = len(node.outputs) == (2 if no_bias else 3)
    k = kernels()

    def run(ins: list[Any], outs: list[Any]) -> None:
        from netjit.runtime.device import cuda
        x, w, dy = ins
        dw(dy, ic.cols(x), outs[0])
        if not no_bias:
            sums[grid, RED](flat(dy), flat(outs[1]), ic.n, ic.m, ic.p)
        if want_dx:
            buf = cuda().device_array(ic.kdim * np_, np.float32)
            dcol(w, dy, buf)
            k["col2im"][ic.back](buf, flat(outs[-1]), *ic.geom)
    launches = [Launch("im2col", "numba-cuda", (ic.shape[0],), (ic.shape[1],)), dw.launch("dW")]
    if not no_bias:
        launches.append(Launch("channel_sums db", "numba-cuda", (grid,), (RED,)))
    if want_dx:
        launches += [dcol.launch("dcol"), Launch("col2im", "numba-cuda", (ic.back[0],), (ic.back[1],))]
    return CudaKernel(run, "ConvGradient", launches)


def _pool_geometry(node: Node, values: Mapping[str, Value]) -> Any:
    from netjit.compiler.ops.pool import pool_setup
    x = values[node.inputs[0]]
    if not _f32(values, node.inputs):
        return None
    try:
        spec, g, _ = pool_setup(node.attrs, x.shape)
    except Exception:  # noqa: BLE001 - the reference reports it
        return None
    if not spec.channel_first or len(g.kernel) != 2:
        return None
    n, c = x.shape[:2]
    return (n * c, *g.size, *g.kernel, *g.stride, *g.pad_head, *g.out)


def _pool(node: Node, values: Mapping[str, Value], grad: bool) -> CudaKernel | None:
    geom = _pool_geometry(node, values)
    if geom is None:
        return None
    is_max = int(node.op.startswith("MaxPool"))
    include_pad = int(bool(node.attrs.get("count_include_pad", False)))
    nc, h, w, oh, ow = geom[0], geom[1], geom[2], geom[-2], geom[-1]
    shape = launch_shape(nc * (h * w if grad else oh * ow))
    name = "pool_grad" if grad else "pool"

    def run(ins: list[Any], outs: list[Any]) -> None:
        k = kernels()[name]
        k[shape](*[flat(a) for a in ins], flat(outs[0]), *geom, is_max, include_pad)
    return CudaKernel(run, node.op, [Launch(name, "numba-cuda", (shape[0],), (shape[1],))])


def pool(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    return _pool(node, values, grad=False)


def pool_gradient(node: Node, values: Mapping[str, Value]) -> CudaKernel | None:
    return _pool(node, values, grad=True)
