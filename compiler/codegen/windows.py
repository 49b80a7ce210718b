"""numba-cpu kernels for 2-D channel-first sliding windows: Conv (forward, gradient), MaxPool and
AveragePool (forward, gradient).

Conv is im2col + one BLAS GEMM per group and chunk of images (codegen/blas.py: numpy's OpenBLAS,
which threads the product). A 1x1 stride-1 unpadded conv skips im2col: the image itself is the
column matrix. Images are batched into one GEMM until it has about ``COLUMNS`` columns, because
BLAS runs small products (LeNet's 8x8 maps: 64 columns) far below its peak; the batched result is
then scattered back to NCHW. Pooling is direct loops over each (image, channel) plane.

Kernels with enough work cut it across threads when the driver has pinned OpenBLAS to one thread
(codegen/parallel.py, ``blas.team``): images (or output-row bands, or GEMM blocks for one image)
for Conv, images with private dW/db partials for ConvGradient, planes for pooling.

Every kernel takes flat C-contiguous arrays and the geometry as plain ints (``Geometry`` resolved at
plan time: head pads after legacy_pad rules, output sizes), so one compiled specialisation serves
every shape. Out-of-bounds window taps read zero (conv) or are skipped (pooling); tail pads need no
argument because the output size already bounds the windows.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from netjit.compiler.codegen.blas import gemm, pgemm, team
from netjit.compiler.codegen.parallel import PARALLEL, part

_OPTS = dict(cache=True, error_model="numpy", nogil=True)
# Flat indices go through U (uint64): numba then skips its negative-index wraparound test, which
# otherwise blocks vectorisation and made im2col 4x slower (measured on LeNet's conv2).
U = np.uint64

# Target column count of one conv GEMM (images are batched until it is reached), measured on
# LeNet's layers; larger chunks only grow the column buffer past L2.
COLUMNS = 1024
# Most elements of one image's column matrix built at once (~1.2 MB of float32): larger ones are
# built and multiplied in bands of output rows. ResNet-50's 7x7 stem (147 x 12544 columns, 7.4 MB)
# took 4.65 ms whole and 3.13 ms in bands of ~2048 columns on one thread (AMD EPYC Zen 4).
BAND_ELEMENTS = 300_000
_LOWEST = float(-np.finfo(np.float32).max)   # MaxPool starts from -FLT_MAX, as Caffe2's kernel


@njit(**_OPTS)
def chunk_images(n, p):
    """How many images one GEMM covers: enough for ~COLUMNS columns, at least 1."""
    if p >= COLUMNS:
        return 1
    return max(1, min(n, COLUMNS // max(p, 1)))


@njit(**_OPTS)
def _valid_range(o_count, stride, offset, size):
    """Output positions o in [lo, hi) with 0 <= o*stride + offset < size."""
    lo = 0
    if offset < 0:
        lo = (-offset + stride - 1) // stride
    hi = 0
    if size - offset > 0:
        hi = (size - offset + stride - 1) // stride
    lo = min(lo, o_count)
    hi = max(lo, min(hi, o_count))
    return lo, hi


@njit(**_OPTS)
def im2col(x, xbase, c, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, col, ld, cbase, y0, y1):
    """col[q*ld + cbase + (y-y0)*ow + ow_i] = x[xbase + (ci*h + ih)*w + iw] (0 outside) for output
    rows y in [y0, y1), q = (ci, i, j)."""
    zero = col.dtype.type(0)
    for ci in range(c):
        for i in range(kh):
            h_off = i * dh - pt
            h_lo, h_hi = _valid_range(oh, sh, h_off, h)
            for j in range(kw):
                w_off = j * dw - pl
                w_lo, w_hi = _valid_range(ow, sw, w_off, w)
                row = ((ci * kh + i) * kw + j) * ld + cbase - y0 * ow
                for y in range(y0, y1):
                    dst = U(row + y * ow)
                    if y < h_lo or y >= h_hi:
                        for x_ in range(ow):
                            col[dst + U(x_)] = zero
                        continue
                    src = U(xbase + (ci * h + y * sh + h_off) * w + w_off)
                    if w_lo == 0 and w_hi == ow and sw == 1:
                        # The common interior row: one contiguous copy.
                        for x_ in range(ow):
                            col[dst + U(x_)] = x[src + U(x_)]
                        continue
                    for x_ in range(w_lo):
                        col[dst + U(x_)] = zero
                    for x_ in range(w_lo, w_hi):
                        col[dst + U(x_)] = x[src + U(x_ * sw)]
                    for x_ in range(w_hi, ow):
                        col[dst + U(x_)] = zero


@njit(**_OPTS)
def col2im_add(col, ld, cbase, dx, xbase, c, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    """The adjoint of im2col: dx[...] += col[...] over every in-bounds tap. It walks the taps as
    im2col does, spelled out again: one flattened tap loop with a shared helper measured 25 % slower
    on LeNet's conv2."""
    for ci in range(c):
        for i in range(kh):
            h_off = i * dh - pt
            h_lo, h_hi = _valid_range(oh, sh, h_off, h)
            for j in range(kw):
                w_off = j * dw - pl
                w_lo, w_hi = _valid_range(ow, sw, w_off, w)
                row = ((ci * kh + i) * kw + j) * ld + cbase
                for y in range(h_lo, h_hi):
                    src = U(row + y * ow)
                    dst = U(xbase + (ci * h + y * sh + h_off) * w + w_off)
                    if sw == 1:
                        for x_ in range(w_lo, w_hi):
                            dx[dst + U(x_)] += col[src + U(x_)]
                    else:
                        for x_ in range(w_lo, w_hi):
                            dx[dst + U(x_ * sw)] += col[src + U(x_)]


@njit(**_OPTS)
def _is_pointwise(h, w, kh, kw, sh, sw, pt, pl, oh, ow):
    return kh == 1 and kw == 1 and sh == 1 and sw == 1 and pt == 0 and pl == 0 and oh == h and ow == w


@njit(**_OPTS)
def _mm(split, trans_a, trans_b, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    """``pgemm`` (cut across threads) when ``split``, else one BLAS call: code already running on
    one of several threads must not start another parallel region."""
    if split:
        pgemm(trans_a, trans_b, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc)
    else:
        gemm(trans_a, trans_b, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc)


@njit(**_OPTS)
def _pointwise_images(xf, wf, yf, n0, n1, split, c, h, w, m, group):
    """1x1 stride-1 unpadded convs of images [n0, n1): each image is its own column matrix."""
    cg, mg = c // group, m // group
    p = h * w
    for i in range(n0, n1):
        for g in range(group):
            _mm(split, False, False, mg, p, cg, 1.0, wf, g * mg * cg, cg, xf, (i * c + g * cg) * p, p,
                0.0, yf, (i * m + g * mg) * p, p)


@njit(**_OPTS)
def _conv_rows(xf, wf, yf, i, g, y0, y1, col, c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    """Output rows [y0, y1) of image ``i``, group ``g``: im2col and one GEMM per band of rows whose
    column matrix stays under BAND_ELEMENTS (``col`` holds at least one band)."""
    cg, mg = c // group, m // group
    k = cg * kh * kw
    p = oh * ow
    rows = max(1, min(y1 - y0, BAND_ELEMENTS // max(1, k * ow)))
    for b0 in range(y0, y1, rows):
        b1 = min(y1, b0 + rows)
        cols = (b1 - b0) * ow
        im2col(xf, (i * c + g * cg) * h * w, cg, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, col, cols, 0, b0, b1)
        gemm(False, False, mg, cols, k, 1.0, wf, g * mg * k, k, col, 0, cols, 0.0, yf, (i * m + g * mg) * p + b0 * ow, p)


@njit(**_OPTS)
def _conv_images(xf, wf, yf, n0, n1, nb, col, tmp, c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    """Images [n0, n1) in chunks of ``nb``: im2col, one GEMM per group and chunk, and (chunks of
    several images) a scatter of the (Mg, images*P) product back to NCHW."""
    cg, mg = c // group, m // group
    k = cg * kh * kw
    p = oh * ow
    for c0 in range(n0, n1, nb):
        b = min(nb, n1 - c0)
        ld = b * p
        for g in range(group):
            if b == 1:
                _conv_rows(xf, wf, yf, c0, g, 0, oh, col, c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)
                continue
            for i in range(b):
                im2col(xf, ((c0 + i) * c + g * cg) * h * w, cg, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow,
                       col, ld, i * p, 0, oh)
            gemm(False, False, mg, ld, k, 1.0, wf, g * mg * k, k, col, 0, ld, 0.0, tmp, 0, ld)
            for i in range(b):
                for r in range(mg):
                    dst = ((c0 + i) * m + g * mg + r) * p
                    src = r * ld + i * p
                    for q in range(p):
                        yf[U(dst + q)] = tmp[U(src + q)]


@njit(parallel=PARALLEL, **_OPTS)
def conv2d(x, wt, y, n, c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    """y (N, M, OH, OW) = conv of x (N, C, H, W) with wt (M, C/group, KH, KW), no bias.

    Threads (parallel.py): a batch is cut into one run of images per thread; a single image into
    one band of output rows per thread (its own im2col and GEMM), or, when the bands would be
    narrow, one im2col and a GEMM cut by output channels."""
    xf = x.reshape(x.size)
    wf = wt.reshape(wt.size)
    yf = y.reshape(y.size)
    cg, mg = c // group, m // group
    k = cg * kh * kw
    p = oh * ow
    if n == 0 or m == 0 or p == 0:
        return
    if k == 0:
        yf[:] = 0
        return
    t_count = team(n * m * p * k)
    pointwise = _is_pointwise(h, w, kh, kw, sh, sw, pt, pl, oh, ow)
    if t_count > 1 and n >= t_count:
        for t in prange(t_count):
            n0, n1 = part(n, t_count, t, 1)
            nb = chunk_images(n1 - n0, p)
            if nb == 1 and pointwise:
                _pointwise_images(xf, wf, yf, n0, n1, False, c, h, w, m, group)
                continue
            col = np.empty(k * nb * p, x.dtype)
            tmp = np.empty(mg * nb * p if nb > 1 else 0, x.dtype)
            _conv_images(xf, wf, yf, n0, n1, nb, col, tmp, c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw,
                         oh, ow)
        return
    nb = chunk_images(n, p)
    if nb == 1 and pointwise:
        _pointwise_images(xf, wf, yf, 0, n, True, c, h, w, m, group)
        return
    if t_count > 1 and oh >= t_count and p >= 128 * t_count:
        # Bands of output rows: each thread builds the columns of its band and multiplies them.
        for t in prange(t_count):
            y0, y1 = part(oh, t_count, t, 1)
            col = np.empty(k * min(y1 - y0, max(1, BAND_ELEMENTS // max(1, k * ow))) * ow, x.dtype)
            for i in range(n):
                for g in range(group):
                    _conv_rows(xf, wf, yf, i, g, y0, y1, col, c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw,
                               oh, ow)
        return
    if t_count > 1:
        # Narrow maps: one column matrix per image and group, built by channel ranges in
        # parallel, then the GEMM cut across threads.
        col = np.empty(k * p, x.dtype)
        for i in range(n):
            for g in range(group):
                for t in prange(t_count):
                    c0, c1 = part(cg, t_count, t, 1)
                    im2col(xf, (i * c + g * cg + c0) * h * w, c1 - c0, h, w, kh, kw, sh, sw, pt, pl, dh, dw,
                           oh, ow, col, p, c0 * kh * kw * p, 0, oh)
                pgemm(False, False, mg, p, k, 1.0, wf, g * mg * k, k, col, 0, p, 0.0, yf, (i * m + g * mg) * p, p)
        return
    col = np.empty(k * nb * p, x.dtype)
    tmp = np.empty(mg * nb * p if nb > 1 else 0, x.dtype)
    _conv_images(xf, wf, yf, 0, n, nb, col, tmp, c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)


@njit(**_OPTS)
def _conv_grad_images(xf, wf, dyf, dwf, dxf, with_dx, split, n0, n1, nb, col, dcol, gdy, pointwise,
                      c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    """dW += (images [n0, n1)) and, with ``with_dx``, their dX (already zero), in chunks of ``nb``.
    ``split``: cut each GEMM across threads (the caller runs on one thread)."""
    cg, mg = c // group, m // group
    k = cg * kh * kw
    p = oh * ow
    for c0 in range(n0, n1, nb):
        b = min(nb, n1 - c0)
        ld = b * p
        for g in range(group):
            # The columns (K, ld) and this group's dY as (Mg, ld): views when one image, copies else.
            if pointwise:
                cbuf, coff = xf, (c0 * c + g * cg) * h * w
            else:
                for i in range(b):
                    im2col(xf, ((c0 + i) * c + g * cg) * h * w, cg, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow,
                           col, ld, i * p, 0, oh)
                cbuf, coff = col, 0
            if b == 1:
                ybuf, yoff = dyf, (c0 * m + g * mg) * p
            else:
                for i in range(b):
                    for r in range(mg):
                        src = ((c0 + i) * m + g * mg + r) * p
                        dst = r * ld + i * p
                        for q in range(p):
                            gdy[U(dst + q)] = dyf[U(src + q)]
                ybuf, yoff = gdy, 0
            # dW_g (Mg, K) += dY_g (Mg, ld) @ cols^T (ld, K)
            _mm(split, False, True, mg, k, ld, 1.0, ybuf, yoff, ld, cbuf, coff, ld, 1.0, dwf, g * mg * k, k)
            if not with_dx:
                continue
            # dcols (K, ld) = W_g^T (K, Mg) @ dY_g (Mg, ld), then scattered back onto dX.
            if pointwise:
                _mm(split, True, False, k, ld, mg, 1.0, wf, g * mg * k, k, ybuf, yoff, ld, 0.0, dxf,
                    (c0 * c + g * cg) * h * w, ld)
                continue
            _mm(split, True, False, k, ld, mg, 1.0, wf, g * mg * k, k, ybuf, yoff, ld, 0.0, dcol, 0, ld)
            for i in range(b):
                col2im_add(dcol, ld, i * p, dxf, ((c0 + i) * c + g * cg) * h * w, cg, h, w, kh, kw, sh, sw,
                           pt, pl, dh, dw, oh, ow)


@njit(**_OPTS)
def _bias_grad(dyf, acc, n0, n1, m, p):
    """acc[r] += sum of dY over images [n0, n1) and positions, channel r (float64 sums)."""
    for r in range(m):
        total = 0.0
        for i in range(n0, n1):
            base = (i * m + r) * p
            for q in range(p):
                total += dyf[U(base + q)]
        acc[r] += total


@njit(parallel=PARALLEL, **_OPTS)
def conv2d_gradient(x, wt, dy, dw_, db, dx, with_db, with_dx,
                    n, c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    """ConvGradient: dW (M, C/group, KH, KW), db (M) when ``with_db``, dX (N, C, H, W) when ``with_dx``.

    A batch is cut into one run of images per thread, each with its own dW (and db) partial sums,
    added up at the end; dX rows of different images never overlap. Fewer images than threads: one
    thread walks the images and each GEMM is cut across threads."""
    xf = x.reshape(x.size)
    wf = wt.reshape(wt.size)
    dyf = dy.reshape(dy.size)
    dwf = dw_.reshape(dw_.size)
    dxf = dx.reshape(dx.size)
    cg, mg = c // group, m // group
    k = cg * kh * kw
    p = oh * ow
    dwf[:] = 0
    empty = n == 0 or m == 0 or p == 0 or k == 0
    t_count = 1 if empty else team(n * m * p * k)
    pointwise = _is_pointwise(h, w, kh, kw, sh, sw, pt, pl, oh, ow)
    if t_count > 1 and n >= t_count:
        dw_parts = np.zeros((t_count, dwf.size), dwf.dtype)
        db_parts = np.zeros((t_count, m), np.float64)
        image = c * h * w
        for t in prange(t_count):
            n0, n1 = part(n, t_count, t, 1)
            if with_db:
                _bias_grad(dyf, db_parts[t], n0, n1, m, p)
            if with_dx:
                dxf[n0 * image:n1 * image] = 0
            nb = chunk_images(n1 - n0, p)
            flat = nb == 1 and pointwise
            col = np.empty(0 if flat else k * nb * p, x.dtype)
            dcol = np.empty(k * nb * p if with_dx and not flat else 0, x.dtype)
            gdy = np.empty(mg * nb * p if nb > 1 else 0, x.dtype)
            _conv_grad_images(xf, wf, dyf, dw_parts[t], dxf, with_dx, False, n0, n1, nb, col, dcol, gdy, flat,
                              c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)
        for t in range(t_count):
            for q in range(dwf.size):
                dwf[q] += dw_parts[t, q]
        if with_db:
            for r in range(m):
                total = 0.0
                for t in range(t_count):
                    total += db_parts[t, r]
                db[r] = total
        return
    if with_dx:
        dxf[:] = 0
    if with_db:
        acc = np.zeros(m, np.float64)
        _bias_grad(dyf, acc, 0, n, m, p)
        for r in range(m):
            db[r] = acc[r]
    if empty:
        return
    nb = chunk_images(n, p)
    flat = nb == 1 and pointwise
    col = np.empty(0 if flat else k * nb * p, x.dtype)
    dcol = np.empty(k * nb * p if with_dx and not flat else 0, x.dtype)
    gdy = np.empty(mg * nb * p if nb > 1 else 0, x.dtype)
    _conv_grad_images(xf, wf, dyf, dwf, dxf, with_dx, t_count > 1, 0, n, nb, col, dcol, gdy, flat,
                      c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)


# --------------------------------------------------------------------------------------------
# Pooling: planes = N*C, each (H, W) -> (OH, OW). Each output row is built tap by tap: for a
# kernel tap (i, j), one branch-free pass over the row's outputs reads the input at stride sw.
# Visiting windows one by one instead branched on every compare and mispredicted on ties (2x slower
# on LeNet's pools).
# --------------------------------------------------------------------------------------------
@njit(**_OPTS)
def _nanmax(a, b):
    # The larger, NaN if either is NaN (as numpy's max, which the reference uses).
    # `|`, not `or`: a short-circuit is a branch, and it kept LLVM from vectorising every pool
    # loop (0.9 -> 0.14 ns per element measured, float32 on AVX-512).
    return a if (a > b) | (a != a) else b


@njit(**_OPTS)
def _max_pool_2x2(xf, yf, p0, p1, h, w, oh, ow, lowest):
    """2x2 windows at stride 2, no padding, every window inside: the usual CNN downsampling."""
    for p_ in range(p0, p1):
        for a in range(oh):
            r0 = U(p_ * h * w + 2 * a * w)
            r1 = r0 + U(w)
            yrow = U(p_ * oh * ow + a * ow)
            for b in range(ow):
                c0 = U(2 * b)
                top = _nanmax(_nanmax(xf[r0 + c0], xf[r0 + c0 + U(1)]), _nanmax(xf[r1 + c0], xf[r1 + c0 + U(1)]))
                yf[yrow + U(b)] = _nanmax(top, lowest)


@njit(**_OPTS)
def _row_taps(xb, a, h, w, kh, kw, sh, pt, pl, sw, ow, rows, los, his):
    """The in-bounds kernel taps of output row ``a``: for tap t, outputs b in [los[t], his[t]) read
    input element rows[t] + b*sw. Returns the tap count (rows/los/his hold kh*kw entries)."""
    n = 0
    for i in range(kh):
        ih = a * sh - pt + i
        if ih < 0 or ih >= h:
            continue
        for j in range(kw):
            off = j - pl
            lo, hi = _valid_range(ow, sw, off, w)
            rows[n] = U(xb + ih * w + off)
            los[n] = lo
            his[n] = hi
            n += 1
    return n


@njit(**_OPTS)
def _hmax_rows(xf, xb, hf, h, w, kw, pl, ow, lowest):
    """Stride-1 row maxima: hf[r*ow + b] = max(lowest, x[r, b - pl + j] over in-bounds taps j).
    'Same' rows (ow == w) go as one flat pass per tap over the whole plane, long enough to
    vectorise (13-wide rows alone run mostly in the scalar remainder), and the edge columns,
    whose flat window strayed into the neighbouring row, are redone within their row."""
    flat = ow == w
    n = h * ow
    for q in range(n):
        hf[U(q)] = lowest
    for j in range(kw):
        off = j - pl
        if flat:
            src = U(xb + off)
            for q in range(max(0, -off), min(n, n - off)):
                hf[U(q)] = _nanmax(xf[src + U(q)], hf[U(q)])
            continue
        lo, hi = _valid_range(ow, 1, off, w)
        for r in range(h):
            src = U(xb + r * w + off)
            for b in range(lo, hi):
                hf[U(r * ow + b)] = _nanmax(xf[src + U(b)], hf[U(r * ow + b)])
    if not flat:
        return
    left = min(pl, ow)
    right = max(left, ow - (kw - 1 - pl))
    for r in range(h):
        for e in range(left + ow - right):
            b = e if e < left else right + e - left
            v = lowest
            for j in range(kw):
                iw = b + j - pl
                if 0 <= iw < w:
                    v = _nanmax(xf[U(xb + r * w + iw)], v)
            hf[U(r * ow + b)] = v


@njit(**_OPTS)
def _max_pool_separable(xf, yf, p0, p1, h, w, kh, kw, pt, pl, oh, ow, lowest):
    """Stride-1 windows as row maxima then column maxima (kh + kw instead of kh * kw compares);
    the output rows whose whole window is inside take one flat pass per kernel row."""
    hf = np.empty(h * ow, xf.dtype)
    a_lo = min(oh, pt)                       # first output row with tap 0 inside
    a_hi = max(a_lo, min(oh, h - kh + 1 + pt))   # rows [a_lo, a_hi) have every tap inside
    for p_ in range(p0, p1):
        _hmax_rows(xf, p_ * h * w, hf, h, w, kw, pl, ow, lowest)
        yb = p_ * oh * ow
        n = (a_hi - a_lo) * ow
        dst = U(yb + a_lo * ow)
        for q in range(n):
            yf[dst + U(q)] = lowest
        for i in range(kh):
            src = U((a_lo - pt + i) * ow)
            for q in range(n):
                yf[dst + U(q)] = _nanmax(hf[src + U(q)], yf[dst + U(q)])
        for e in range(a_lo + oh - a_hi):
            a = e if e < a_lo else a_hi + e - a_lo
            dst = U(yb + a * ow)
            for b in range(ow):
                yf[dst + U(b)] = lowest
            for i in range(kh):
                ih = a - pt + i
                if 0 <= ih < h:
                    for b in range(ow):
                        yf[dst + U(b)] = _nanmax(hf[U(ih * ow + b)], yf[dst + U(b)])


@njit(**_OPTS)
def _max_pool_rows(xf, yf, p0, p1, h, w, kh, kw, sh, sw, pt, pl, oh, ow, lowest):
    """Any stride, per output row: the maximum over the kernel's input rows first (whole
    contiguous rows: vectorised), then the taps along that one row. With a stride the interior
    columns take a stride-1 sliding maximum over the whole row (contiguous, vectorised) and then
    pick every sw-th value: strided reads of 3 taps each were 3 gathers per 16 outputs, this is 1
    (SqueezeNet's 3x3/2 pools, one thread, Zen 4: 64x111x111 0.32 -> 0.25 ms, 256x27x27
    0.113 -> 0.081 ms)."""
    v = np.empty(w, xf.dtype)
    t = np.empty(w, xf.dtype)   # a separate buffer: reading v while writing it in place made
    # LLVM's runtime alias check fail and the loop fall back to scalar code (2x slower, measured)
    b_lo = min(ow, (pl + sw - 1) // sw)
    b_hi = max(b_lo, min(ow, (w - kw + pl) // sw + 1)) if w - kw + pl >= 0 else b_lo
    ww = U(w)
    for p_ in range(p0, p1):
        xb = p_ * h * w
        for a in range(oh):
            top = a * sh - pt
            if kh == 3 and top >= 0 and top + 2 < h:
                # the usual case, all three rows inside: one fused pass instead of four
                s0 = U(xb + top * w)
                for c in range(ww):
                    v[c] = _nanmax(_nanmax(xf[s0 + c], xf[s0 + ww + c]), _nanmax(xf[s0 + ww + ww + c], lowest))
            else:
                for c in range(ww):
                    v[c] = lowest
                for i in range(kh):
                    ih = top + i
                    if 0 <= ih < h:
                        src = U(xb + ih * w)
                        for c in range(ww):
                            v[c] = _nanmax(xf[src + c], v[c])
            yrow = U(p_ * oh * ow + a * ow)
            for e in range(b_lo + ow - b_hi):
                b = e if e < b_lo else b_hi + e - b_lo
                m = lowest
                for j in range(kw):
                    iw = b * sw + j - pl
                    if 0 <= iw < w:
                        m = _nanmax(v[iw], m)
                yf[yrow + U(b)] = m
            if b_hi > b_lo and sw > 1:
                # interior windows start at columns b*sw - pl, b in [b_lo, b_hi), all inside
                c0 = U(b_lo * sw - pl)
                n = U((b_hi - 1 - b_lo) * sw + 1)
                if kw == 3:
                    for c in range(n):
                        t[c] = _nanmax(_nanmax(v[c0 + c], v[c0 + c + U(1)]), v[c0 + c + U(2)])
                else:
                    for c in range(n):
                        t[c] = v[c0 + c]
                    for j in range(1, kw):
                        for c in range(n):
                            t[c] = _nanmax(v[c0 + c + U(j)], t[c])
                ydst = yrow + U(b_lo)
                step = U(sw)
                for b in range(U(b_hi - b_lo)):
                    yf[ydst + b] = t[step * b]
            elif kw == 3 and sw == 1:
                for b in range(b_lo, b_hi):
                    q = b - pl
                    yf[yrow + U(b)] = _nanmax(_nanmax(v[q], v[q + 1]), v[q + 2])
            else:
                for b in range(b_lo, b_hi):
                    q = b * sw - pl
                    m = v[q]
                    for j in range(1, kw):
                        m = _nanmax(v[q + j], m)
                    yf[yrow + U(b)] = m


@njit(**_OPTS)
def _max_pool_planes(xf, yf, p0, p1, h, w, kh, kw, sh, sw, pt, pl, oh, ow, lowest):
    if kh == 2 and kw == 2 and sh == 2 and sw == 2 and pt == 0 and pl == 0 and 2 * oh <= h and 2 * ow <= w:
        _max_pool_2x2(xf, yf, p0, p1, h, w, oh, ow, lowest)
    elif sh == 1 and sw == 1:
        _max_pool_separable(xf, yf, p0, p1, h, w, kh, kw, pt, pl, oh, ow, lowest)
    else:
        _max_pool_rows(xf, yf, p0, p1, h, w, kh, kw, sh, sw, pt, pl, oh, ow, lowest)


@njit(parallel=PARALLEL, **_OPTS)
def max_pool2d(x, y, planes, h, w, kh, kw, sh, sw, pt, pl, oh, ow):
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    lowest = x.dtype.type(_LOWEST)
    t_count = team(planes * oh * ow * kh * kw)
    if t_count > 1 and planes >= t_count:
        for t in prange(t_count):
            p0, p1 = part(planes, t_count, t, 1)
            _max_pool_planes(xf, yf, p0, p1, h, w, kh, kw, sh, sw, pt, pl, oh, ow, lowest)
        return
    _max_pool_planes(xf, yf, 0, planes, h, w, kh, kw, sh, sw, pt, pl, oh, ow, lowest)


@njit(**_OPTS)
def _max_pool_grad_planes(xf, yf, dyf, dxf, p0, p1, h, w, kh, kw, sh, sw, pt, pl, oh, ow):
    zero = dxf.dtype.type(0)
    if kh == 2 and kw == 2 and sh == 2 and sw == 2 and pt == 0 and pl == 0 and 2 * oh == h and 2 * ow == w:
        # 2x2 windows tiling the input exactly: every dX element is written once, no zeroing.
        for p_ in range(p0, p1):
            for a in range(oh):
                r0 = U(p_ * h * w + 2 * a * w)
                r1 = r0 + U(w)
                yrow = U(p_ * oh * ow + a * ow)
                for b in range(ow):
                    top = yf[yrow + U(b)]
                    g = dyf[yrow + U(b)]
                    c0 = U(2 * b)
                    c1 = c0 + U(1)
                    dxf[r0 + c0] = g if xf[r0 + c0] == top else zero
                    dxf[r0 + c1] = g if xf[r0 + c1] == top else zero
                    dxf[r1 + c0] = g if xf[r1 + c0] == top else zero
                    dxf[r1 + c1] = g if xf[r1 + c1] == top else zero
        return
    dxf[p0 * h * w:p1 * h * w] = 0
    overlap = kh > sh or kw > sw
    for p_ in range(p0, p1):
        xb = p_ * h * w
        yb = p_ * oh * ow
        for a in range(oh):
            for i in range(kh):
                ih = a * sh - pt + i
                if ih < 0 or ih >= h:
                    continue
                xrow = xb + ih * w
                for b in range(ow):
                    top = yf[U(yb + a * ow + b)]
                    g = dyf[U(yb + a * ow + b)]
                    w0 = max(b * sw - pl, 0)
                    w1 = min(b * sw - pl + kw, w)
                    if overlap:
                        for iw in range(w0, w1):
                            k = U(xrow + iw)
                            dxf[k] += g if xf[k] == top else zero
                    else:
                        for iw in range(w0, w1):
                            k = U(xrow + iw)
                            dxf[k] = g if xf[k] == top else zero


@njit(parallel=PARALLEL, **_OPTS)
def max_pool2d_gradient(x, y, dy, dx, planes, h, w, kh, kw, sh, sw, pt, pl, oh, ow):
    """dX += dY at every window element equal to the window's Y (ties all receive it).
    Windows that do not overlap (kernel <= stride) store instead of accumulating."""
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    t_count = team(planes * h * w + planes * oh * ow * kh * kw)
    if t_count > 1 and planes >= t_count:
        for t in prange(t_count):
            p0, p1 = part(planes, t_count, t, 1)
            _max_pool_grad_planes(xf, yf, dyf, dxf, p0, p1, h, w, kh, kw, sh, sw, pt, pl, oh, ow)
        return
    _max_pool_grad_planes(xf, yf, dyf, dxf, 0, planes, h, w, kh, kw, sh, sw, pt, pl, oh, ow)


@njit(**_OPTS)
def _divisor(a, b, h, w, kh, kw, sh, sw, pt, pl, include_pad):
    if include_pad:
        return kh * kw
    h0 = max(a * sh - pt, 0)
    h1 = min(a * sh - pt + kh, h)
    w0 = max(b * sw - pl, 0)
    w1 = min(b * sw - pl + kw, w)
    return max(h1 - h0, 0) * max(w1 - w0, 0)


@njit(fastmath=True, **_OPTS)
def _plane_sum(xf, base, count):
    """Float64 sum of ``count`` elements from ``base``; ``fastmath`` lets it run in SIMD lanes (a
    strict left-to-right sum was 4x slower on SqueezeNet's 1000x13x13 global pool)."""
    total = 0.0
    for q in range(count):
        total += xf[base + U(q)]
    return total


@njit(**_OPTS)
def _average_pool_planes(xf, yf, p0, p1, h, w, kh, kw, sh, sw, pt, pl, oh, ow, include_pad):
    if oh == 1 and ow == 1 and kh == h and kw == w and pt == 0 and pl == 0:
        # One window covering the plane (global pooling): a plain sum per plane.
        for p_ in range(p0, p1):
            yf[p_] = _plane_sum(xf, U(p_ * h * w), h * w) / (h * w)
        return
    acc = np.zeros(ow, np.float64)
    rows, los, his = np.empty(kh * kw, np.uint64), np.empty(kh * kw, np.int64), np.empty(kh * kw, np.int64)
    for p_ in range(p0, p1):
        for a in range(oh):
            yrow = U(p_ * oh * ow + a * ow)
            acc[:] = 0
            for t in range(_row_taps(p_ * h * w, a, h, w, kh, kw, sh, pt, pl, sw, ow, rows, los, his)):
                for b in range(los[t], his[t]):
                    acc[b] += xf[rows[t] + U(b * sw)]
            # A window wholly in padding divides 0 by 0: NaN, as the reference (and Caffe2).
            for b in range(ow):
                yf[yrow + U(b)] = acc[b] / _divisor(a, b, h, w, kh, kw, sh, sw, pt, pl, include_pad)


@njit(parallel=PARALLEL, **_OPTS)
def average_pool2d(x, y, planes, h, w, kh, kw, sh, sw, pt, pl, oh, ow, include_pad):
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    t_count = team(planes * oh * ow * kh * kw)
    if t_count > 1 and planes >= t_count:
        for t in prange(t_count):
            p0, p1 = part(planes, t_count, t, 1)
            _average_pool_planes(xf, yf, p0, p1, h, w, kh, kw, sh, sw, pt, pl, oh, ow, include_pad)
        return
    _average_pool_planes(xf, yf, 0, planes, h, w, kh, kw, sh, sw, pt, pl, oh, ow, include_pad)


@njit(**_OPTS)
def _average_pool_grad_planes(dyf, dxf, p0, p1, h, w, kh, kw, sh, sw, pt, pl, oh, ow, include_pad):
    dxf[p0 * h * w:p1 * h * w] = 0
    share = np.empty(ow, dxf.dtype)
    rows, los, his = np.empty(kh * kw, np.uint64), np.empty(kh * kw, np.int64), np.empty(kh * kw, np.int64)
    for p_ in range(p0, p1):
        for a in range(oh):
            yrow = U(p_ * oh * ow + a * ow)
            for b in range(ow):
                share[b] = dyf[yrow + U(b)] / _divisor(a, b, h, w, kh, kw, sh, sw, pt, pl, include_pad)
            for t in range(_row_taps(p_ * h * w, a, h, w, kh, kw, sh, pt, pl, sw, ow, rows, los, his)):
                for b in range(los[t], his[t]):
                    dxf[rows[t] + U(b * sw)] += share[b]


@njit(parallel=PARALLEL, **_OPTS)
def average_pool2d_gradient(dy, dx, planes, h, w, kh, kw, sh, sw, pt, pl, oh, ow, include_pad):
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    t_count = team(planes * h * w + planes * oh * ow * kh * kw)
    if t_count > 1 and planes >= t_count:
        for t in prange(t_count):
            p0, p1 = part(planes, t_count, t, 1)
            _average_pool_grad_planes(dyf, dxf, p0, p1, h, w, kh, kw, sh, sw, pt, pl, oh, ow, include_pad)
        return
    _average_pool_grad_planes(dyf, dxf, 0, planes, h, w, kh, kw, sh, sw, pt, pl, oh, ow, include_pad)


# ConvGradient's output sets, one entry point each (the driver passes only real outputs).
@njit(**_OPTS)
def conv2d_grad_w(x, wt, dy, dw_, n, c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    conv2d_gradient(x, wt, dy, dw_, np.empty(0, wt.dtype), np.empty(0, x.dtype), False, False,
                    n, c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)


@njit(**_OPTS)
def conv2d_grad_wb(x, wt, dy, dw_, db, n, c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    conv2d_gradient(x, wt, dy, dw_, db, np.empty(0, x.dtype), True, False,
                    n, c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)


@njit(**_OPTS)
def conv2d_grad_wx(x, wt, dy, dw_, dx, n, c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    conv2d_gradient(x, wt, dy, dw_, np.empty(0, wt.dtype), dx, False, True,
                    n, c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)


@njit(**_OPTS)
def conv2d_grad_wbx(x, wt, dy, dw_, db, dx, n, c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    conv2d_gradient(x, wt, dy, dw_, db, dx, True, True,
                    n, c, h, w, m, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)
