"""Winograd F(2x2, 3x3) for stride-1, undilated, ungrouped 3x3 channel-first convs.

A 3x3 conv computed directly costs 9 multiply-adds per output and input channel; F(2x2, 3x3)
computes each 2x2 output tile from a 4x4 input tile with 16, i.e. 4 per output: 2.25x fewer.
The work becomes 16 independent GEMMs (one per position ``xi`` of the 4x4 transformed tile),
each (M x C) times (C x tiles), which go to the same one BLAS as every other product
(codegen/blas.py):

    U[xi] = (G g G^T)[xi]     per (output, input) channel pair: the weights, transformed each run
    V[xi] = (B^T d B)[xi]     per input channel and tile: the input, zero-padded
    M[xi] = U[xi] . V[xi]     16 GEMMs (blas.gemm)
    y     = A^T M A           per output channel and tile: the 2x2 outputs

The weights are an input of the plan (a workspace blob a later FeedBlob or training step may
change), so they are transformed on every run; that reads 9 and writes 16 values per channel
pair, which is why ``worth_it`` (codegen/conv.py asks it at plan time) keeps this path to layers
whose feature maps are large next to their weights. In float32 the transforms add rounding error
of a few float32 ulps of the tile's inputs (the factors are 0, +-1 and 1/2); the tests bound it
against the direct conv.

Threads (parallel.py, ``blas.team``): one image: each of the four steps is cut into one part per
thread (output channels for the weights and outputs, input channels for the inputs, the 16 GEMMs
between threads), each part a one-thread BLAS call; a batch of at least one image per thread: the
weights so, then one run of images per thread.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from netjit.compiler.codegen.blas import gemm, team
from netjit.compiler.codegen.parallel import PARALLEL, part

_OPTS = dict(cache=True, error_model="numpy", nogil=True)
U = np.uint64          # unsigned flat indices: see windows.py
TILE_COLUMNS = 1024    # images are batched until one GEMM has about this many tiles


def worth_it(n: int, c: int, m: int, oh: int, ow: int) -> bool:
    """Whether the Winograd path beats im2col + GEMM for this layer (plan time).

    Measured on ResNet-50's 3x3 layers at batch 1 (examples/benchmarks/RESULTS.md): it won with
    784, 196 and 49 tiles against 64, 128 and 256 channels; on the 7x7 maps (16 tiles, 512
    channels) the weight transform alone cost about what the multiplies saved. Hence: at least one
    tile per 8 channels."""
    tiles = n * ((oh + 1) // 2) * ((ow + 1) // 2)
    return c >= 8 and m >= 8 and tiles * 8 >= max(c, m)


@njit(**_OPTS)
def plane(size):
    """Elements between two of the 16 transformed planes: ``size`` rounded up to 4 KiB of float32
    plus one cache line. Each transform writes (or reads) the 16 planes at once; planes a multiple
    of 4 KiB apart land in the same L1 sets and evict each other (measured on one thread: the input
    transform of a 64-channel 56x56 map ran 5.6x slower, the weight transform 3.5-4x)."""
    return (size + 1023) // 1024 * 1024 + 16


@njit(**_OPTS)
def _weight_row(u, o, q, su, t0, t1, t2):
    """Row ``q // 4`` of (G g) G^T from row (t0, t1, t2) of G g: t0, (t0+t1+t2)/2, (t0-t1+t2)/2, t2."""
    half = 0.5
    u[U(q * su) + o] = t0
    u[U((q + 1) * su) + o] = half * (t0 + t1 + t2)
    u[U((q + 2) * su) + o] = half * (t0 - t1 + t2)
    u[U((q + 3) * su) + o] = t2


@njit(**_OPTS)
def _weights(wf, u, su, m0, m1, c):
    """u[xi*su + r*C + ci] = (G g G^T)[xi] for output channels r in [m0, m1)."""
    half = 0.5
    for r in range(m0, m1):
        for ci in range(c):
            b = U((r * c + ci) * 9)
            o = U(r * c + ci)
            g00, g01, g02 = wf[b], wf[b + U(1)], wf[b + U(2)]
            g10, g11, g12 = wf[b + U(3)], wf[b + U(4)], wf[b + U(5)]
            g20, g21, g22 = wf[b + U(6)], wf[b + U(7)], wf[b + U(8)]
            # G g: rows g0., (g0.+g1.+g2.)/2, (g0.-g1.+g2.)/2, g2.
            _weight_row(u, o, 0, su, g00, g01, g02)
            _weight_row(u, o, 4, su, half * (g00 + g10 + g20), half * (g01 + g11 + g21), half * (g02 + g12 + g22))
            _weight_row(u, o, 8, su, half * (g00 - g10 + g20), half * (g01 - g11 + g21), half * (g02 - g12 + g22))
            _weight_row(u, o, 12, su, g20, g21, g22)


@njit(**_OPTS)
def _inputs(xf, xbase, v, ct, pad, c0, c1, h, w, pt, pl, th, tw, tt, t_off):
    """v[xi*ct + ci*tt + t_off + tile] = (B^T d B)[xi] for input channels ci in [c0, c1) of one
    image (at ``xbase``). ``pad`` is one zero-padded (2*th+2, 2*tw+2) plane, zero on entry outside
    the image's place in it: every channel overwrites the same interior, so its border stays zero."""
    ph, pw = 2 * th + 2, 2 * tw + 2
    rows = min(h, ph - pt)
    cols = min(w, pw - pl)
    for ci in range(c0, c1):
        for y in range(rows):
            src = U(xbase + (ci * h + y) * w)
            dst = U((y + pt) * pw + pl)
            for x_ in range(cols):
                pad[dst + U(x_)] = xf[src + U(x_)]
        base = ci * tt + t_off
        for ty in range(th):
            r0 = U(2 * ty * pw)
            o = U(base + ty * tw)
            for tx in range(tw):
                p0 = r0 + U(2 * tx)
                p1 = p0 + U(pw)
                p2 = p1 + U(pw)
                p3 = p2 + U(pw)
                # d B, row by row: (d0 - d2, d1 + d2, d2 - d1, d1 - d3).
                a0, a1, a2, a3 = pad[p0], pad[p0 + U(1)], pad[p0 + U(2)], pad[p0 + U(3)]
                b0, b1, b2, b3 = pad[p1], pad[p1 + U(1)], pad[p1 + U(2)], pad[p1 + U(3)]
                c0_, c1_, c2_, c3_ = pad[p2], pad[p2 + U(1)], pad[p2 + U(2)], pad[p2 + U(3)]
                d0, d1, d2, d3 = pad[p3], pad[p3 + U(1)], pad[p3 + U(2)], pad[p3 + U(3)]
                e00, e01, e02, e03 = a0 - a2, a1 + a2, a2 - a1, a1 - a3
                e10, e11, e12, e13 = b0 - b2, b1 + b2, b2 - b1, b1 - b3
                e20, e21, e22, e23 = c0_ - c2_, c1_ + c2_, c2_ - c1_, c1_ - c3_
                e30, e31, e32, e33 = d0 - d2, d1 + d2, d2 - d1, d1 - d3
                # B^T (d B): rows (e0 - e2, e1 + e2, e2 - e1, e1 - e3).
                k = o + U(tx)
                v[k] = e00 - e20
                v[k + U(ct)] = e01 - e21
                v[k + U(2 * ct)] = e02 - e22
                v[k + U(3 * ct)] = e03 - e23
                v[k + U(4 * ct)] = e10 + e20
                v[k + U(5 * ct)] = e11 + e21
                v[k + U(6 * ct)] = e12 + e22
                v[k + U(7 * ct)] = e13 + e23
                v[k + U(8 * ct)] = e20 - e10
                v[k + U(9 * ct)] = e21 - e11
                v[k + U(10 * ct)] = e22 - e12
                v[k + U(11 * ct)] = e23 - e13
                v[k + U(12 * ct)] = e10 - e30
                v[k + U(13 * ct)] = e11 - e31
                v[k + U(14 * ct)] = e12 - e32
                v[k + U(15 * ct)] = e13 - e33


@njit(**_OPTS)
def _outputs(mx, mt, yf, ybase, r0, r1, oh, ow, th, tw, tt, t_off):
    """y[ybase + (r*OH + ...)*OW + ...] = (A^T M A) for output channels r in [r0, r1) of one image,
    M[xi] at mx[xi*mt:]."""
    full_w = ow // 2           # tiles whose two output columns both exist
    for r in range(r0, r1):
        base = r * tt + t_off
        for ty in range(th):
            two_rows = 2 * ty + 1 < oh
            y0 = U(ybase + (r * oh + 2 * ty) * ow)
            y1 = y0 + U(ow)
            o = U(base + ty * tw)
            for tx in range(tw):
                k = o + U(tx)
                m00, m01, m02, m03 = mx[k], mx[k + U(mt)], mx[k + U(2 * mt)], mx[k + U(3 * mt)]
                m10, m11, m12, m13 = mx[k + U(4 * mt)], mx[k + U(5 * mt)], mx[k + U(6 * mt)], mx[k + U(7 * mt)]
                m20, m21, m22, m23 = mx[k + U(8 * mt)], mx[k + U(9 * mt)], mx[k + U(10 * mt)], mx[k + U(11 * mt)]
                m30, m31, m32, m33 = mx[k + U(12 * mt)], mx[k + U(13 * mt)], mx[k + U(14 * mt)], mx[k + U(15 * mt)]
                # A^T M: rows (m0 + m1 + m2, m1 - m2 - m3); then (.) A by columns alike.
                a00, a01, a02, a03 = m00 + m10 + m20, m01 + m11 + m21, m02 + m12 + m22, m03 + m13 + m23
                a10, a11, a12, a13 = m10 - m20 - m30, m11 - m21 - m31, m12 - m22 - m32, m13 - m23 - m33
                x0 = U(2 * tx)
                yf[y0 + x0] = a00 + a01 + a02
                if tx < full_w:
                    yf[y0 + x0 + U(1)] = a01 - a02 - a03
                if two_rows:
                    yf[y1 + x0] = a10 + a11 + a12
                    if tx < full_w:
                        yf[y1 + x0 + U(1)] = a11 - a12 - a13


@njit(**_OPTS)
def _step(stage, t, t_count, xf, wf, yf, u, v, mx, i0, b, c, h, w, m, pt, pl, oh, ow, th, tw):
    """Part ``t`` of ``t_count`` of one stage: 0 the weights, 1 the inputs of images [i0, i0+b),
    2 the 16 GEMMs, 3 the outputs."""
    tiles = th * tw
    tt = b * tiles
    su, sv, sm = plane(m * c), plane(c * tt), plane(m * tt)
    if stage == 0:
        r0, r1 = part(m, t_count, t, 1)
        _weights(wf, u, su, r0, r1, c)
    elif stage == 1:
        k0, k1 = part(c, t_count, t, 1)
        pad = np.zeros((2 * th + 2) * (2 * tw + 2), v.dtype)
        for i in range(b):
            _inputs(xf, (i0 + i) * c * h * w, v, sv, pad, k0, k1, h, w, pt, pl, th, tw, tt, i * tiles)
    elif stage == 2:
        q0, q1 = part(16, t_count, t, 1)
        for q in range(q0, q1):
            gemm(False, False, m, tt, c, 1.0, u, q * su, c, v, q * sv, tt, 0.0, mx, q * sm, tt)
    else:
        r0, r1 = part(m, t_count, t, 1)
        for i in range(b):
            _outputs(mx, sm, yf, (i0 + i) * m * oh * ow, r0, r1, oh, ow, th, tw, tt, i * tiles)


@njit(parallel=PARALLEL, **_OPTS)
def conv3x3(x, wt, y, n, c, h, w, m, pt, pl, oh, ow):
    """y (N, M, OH, OW) = the stride-1 3x3 conv of x (N, C, H, W) with wt (M, C, 3, 3), no bias,
    head pads (pt, pl) (the output size already bounds the tail pads)."""
    xf = x.reshape(x.size)
    wf = wt.reshape(wt.size)
    yf = y.reshape(y.size)
    if n == 0 or m == 0 or oh <= 0 or ow <= 0:
        return
    if c == 0:
        yf[:] = 0
        return
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    tiles = th * tw
    nb = max(1, min(n, TILE_COLUMNS // tiles))
    t_count = team(16 * n * m * c * tiles)
    u = np.empty(16 * plane(m * c), x.dtype)
    if t_count > 1 and n >= t_count:
        # A batch: the weights cut across threads, then one run of images per thread, each
        # through the three image stages on its own buffers. Cutting every stage of every chunk
        # instead joined the threads 3 times per chunk (a 55x55 map is one image per chunk):
        # measured 2x slower than im2col at batch 8 on SqueezeNet's fire layers, against 0.8x
        # for one thread alone.
        for t in prange(t_count):
            _step(0, t, t_count, xf, wf, yf, u, u, u, 0, 1, c, h, w, m, pt, pl, oh, ow, th, tw)
        for t in prange(t_count):
            n0, n1 = part(n, t_count, t, 1)
            nbt = max(1, min(n1 - n0, TILE_COLUMNS // tiles))
            vt = np.empty(16 * plane(c * nbt * tiles), x.dtype)
            mt = np.empty(16 * plane(m * nbt * tiles), x.dtype)
            for i0 in range(n0, n1, nbt):
                for stage in range(1, 4):
                    _step(stage, 0, 1, xf, wf, yf, u, vt, mt, i0, min(nbt, n1 - i0), c, h, w, m, pt, pl, oh, ow,
                          th, tw)
        return
    v = np.empty(16 * plane(c * nb * tiles), x.dtype)
    mx = np.empty(16 * plane(m * nb * tiles), x.dtype)
    for i0 in range(0, n, nb):
        b = min(nb, n - i0)
        for stage in range(0 if i0 == 0 else 1, 4):     # the weights once, then per chunk
            if t_count > 1:
                for t in prange(t_count):
                    _step(stage, t, t_count, xf, wf, yf, u, v, mx, i0, b, c, h, w, m, pt, pl, oh, ow, th, tw)
            else:
                _step(stage, 0, 1, xf, wf, yf, u, v, mx, i0, b, c, h, w, m, pt, pl, oh, ow, th, tw)
