"""numba-cpu kernels for the optimizer updates (MomentumSGD(Update), Adagrad, Adam, RmsProp, Ftrl) and
the norms gradient clipping reads (LpNorm and its gradient).

Each update is one pass over the parameter: every element's new state is computed from its old state
in registers and stored once, so an update written in place (Caffe2's ``[param, moment] ->
[param, moment]``) reads each value before it overwrites it. Caffe2 registered these ops for float32
only; the makers decline other dtypes (the op then runs its numpy reference). Arithmetic stays in
float32, with the float arguments rounded to float32 first, as the references (and Caffe2's C++) do.

Makers take ``(node, values)`` and return ``(dispatcher, params)`` or None, as the numba-cpu backend
expects of a ``Lowering(standalone=...)`` entry.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from numba import njit

from netjit.compiler.codegen.loops import Param
from netjit.compiler.ir import Node, Value

_F32 = np.dtype(np.float32)
_OPTS = dict(cache=True, error_model="numpy", nogil=True)


def _all_f32(node: Node, values: Mapping[str, Value], skip: frozenset[int] = frozenset()) -> bool:
    vals = [values[v] for i, v in enumerate(node.inputs) if i not in skip] + [values[v] for v in node.outputs]
    return all(v.typed and v.dtype == _F32 for v in vals)


def _same_size(values: Mapping[str, Value], names: list[str]) -> bool:
    sizes = {values[n].size for n in names}
    return len(sizes) == 1 and sizes.pop() > 0


def _one(values: Mapping[str, Value], name: str) -> bool:
    return values[name].typed and values[name].size == 1


def _params(node: Node, scalars: list) -> list[Param]:
    return ([Param("in", v) for v in node.inputs] + [Param("scalar", s) for s in scalars]
            + [Param("out", o) for o in node.outputs])


# --------------------------------------------------------------------------------------------
# MomentumSGD / MomentumSGDUpdate
# --------------------------------------------------------------------------------------------
@njit(**_OPTS)
def momentum_sgd_kernel(g, m, lr, mu, nesterov, ng, nm):
    gf, mf, ngf, nmf = g.reshape(-1), m.reshape(-1), ng.reshape(-1), nm.reshape(-1)
    rate = lr.reshape(-1)[0]
    mom = np.float32(mu)
    one = np.float32(1.0)
    # One loop per mode: a branch inside the loop keeps LLVM from vectorising it.
    if nesterov:
        for i in range(gf.size):
            mi = mf[i]
            new_m = mom * mi + rate * gf[i]
            nmf[i] = new_m
            ngf[i] = (one + mom) * new_m - mom * mi
    else:
        for i in range(gf.size):
            new_m = rate * gf[i] + mom * mf[i]
            nmf[i] = new_m
            ngf[i] = new_m


@njit(**_OPTS)
def momentum_sgd_update_kernel(g, m, lr, p, mu, nesterov, ng, nm, np_):
    gf, mf, pf = g.reshape(-1), m.reshape(-1), p.reshape(-1)
    ngf, nmf, npf = ng.reshape(-1), nm.reshape(-1), np_.reshape(-1)
    rate = lr.reshape(-1)[0]
    mom = np.float32(mu)
    one = np.float32(1.0)
    if nesterov:
        for i in range(gf.size):
            mi = mf[i]
            new_m = mom * mi + rate * gf[i]
            step = (one + mom) * new_m - mom * mi
            nmf[i] = new_m
            ngf[i] = step
            npf[i] = pf[i] - step
    else:
        for i in range(gf.size):
            new_m = rate * gf[i] + mom * mf[i]
            nmf[i] = new_m
            ngf[i] = new_m
            npf[i] = pf[i] - new_m


def momentum_sgd(node: Node, values: Mapping[str, Value]):
    if not _all_f32(node, values) or not _same_size(values, [node.inputs[0], node.inputs[1]]) \
            or not _one(values, node.inputs[2]):
        return None
    return momentum_sgd_kernel, _params(node, [float(node.attrs.get("momentum", 0.0)),
                                               int(bool(node.attrs.get("nesterov", False)))])


def momentum_sgd_update(node: Node, values: Mapping[str, Value]):
    if not _all_f32(node, values) or not _same_size(values, [node.inputs[i] for i in (0, 1, 3)]) \
            or not _one(values, node.inputs[2]):
        return None
    return momentum_sgd_update_kernel, _params(node, [float(node.attrs.get("momentum", 0.0)),
                                                      int(bool(node.attrs.get("nesterov", False)))])


# --------------------------------------------------------------------------------------------
# Adagrad
# --------------------------------------------------------------------------------------------
@njit(**_OPTS)
def adagrad_kernel(p, h, g, lr, epsilon, decay, np_, nh):
    pf, hf, gf, npf, nhf = p.reshape(-1), h.reshape(-1), g.reshape(-1), np_.reshape(-1), nh.reshape(-1)
    rate = lr.reshape(-1)[0]
    eps = np.float32(epsilon)
    dec = np.float32(decay)
    for i in range(pf.size):
        gi = gf[i]
        hi = dec * hf[i] + gi * gi
        nhf[i] = hi
        npf[i] = pf[i] + rate * gi / (np.sqrt(hi) + eps)


def adagrad(node: Node, values: Mapping[str, Value]):
    if not _all_f32(node, values) or not _same_size(values, node.inputs[:3]) or not _one(values, node.inputs[3]):
        return None
    return adagrad_kernel, _params(node, [float(node.attrs.get("epsilon", 1e-5)),
                                          float(node.attrs.get("decay", 1.0))])


# --------------------------------------------------------------------------------------------
# Adam
# --------------------------------------------------------------------------------------------
@njit(**_OPTS)
def _adam_correction(it, beta1, beta2):
    # Caffe2 computes the bias correction in double from float32 betas (t = iter + 1).
    t = it.reshape(-1)[0] + 1
    b1 = np.float64(np.float32(beta1))
    b2 = np.float64(np.float32(beta2))
    return np.float32(math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t))


@njit(**_OPTS)
def adam_kernel(p, m, v, g, lr, it, beta1, beta2, epsilon, np_, nm, nv):
    pf, mf, vf, gf = p.reshape(-1), m.reshape(-1), v.reshape(-1), g.reshape(-1)
    npf, nmf, nvf = np_.reshape(-1), nm.reshape(-1), nv.reshape(-1)
    rate = lr.reshape(-1)[0]
    corr = _adam_correction(it, beta1, beta2)
    b1, b2, eps = np.float32(beta1), np.float32(beta2), np.float32(epsilon)
    one = np.float32(1.0)
    for i in range(pf.size):
        gi = gf[i]
        mi = mf[i] * b1 + gi * (one - b1)
        vi = vf[i] * b2 + gi * gi * (one - b2)
        nmf[i] = mi
        nvf[i] = vi
        npf[i] = pf[i] + rate * (corr * mi / (np.sqrt(vi) + eps))


@njit(**_OPTS)
def adam_step_kernel(p, m, v, g, lr, it, beta1, beta2, epsilon, np_, nm, nv, ng):
    pf, mf, vf, gf = p.reshape(-1), m.reshape(-1), v.reshape(-1), g.reshape(-1)
    npf, nmf, nvf, ngf = np_.reshape(-1), nm.reshape(-1), nv.reshape(-1), ng.reshape(-1)
    rate = lr.reshape(-1)[0]
    corr = _adam_correction(it, beta1, beta2)
    b1, b2, eps = np.float32(beta1), np.float32(beta2), np.float32(epsilon)
    one = np.float32(1.0)
    for i in range(pf.size):
        gi = gf[i]
        mi = mf[i] * b1 + gi * (one - b1)
        vi = vf[i] * b2 + gi * gi * (one - b2)
        step = corr * mi / (np.sqrt(vi) + eps)
        nmf[i] = mi
        nvf[i] = vi
        ngf[i] = step
        npf[i] = pf[i] + rate * step


def adam(node: Node, values: Mapping[str, Value]):
    it = values[node.inputs[5]]
    if not _all_f32(node, values, skip=frozenset({5})) or not _same_size(values, node.inputs[:4]) \
            or not _one(values, node.inputs[4]) or not (it.typed and it.dtype == np.int64 and it.size == 1):
        return None
    kernel = adam_step_kernel if len(node.outputs) == 4 else adam_kernel
    return kernel, _params(node, [float(node.attrs.get(k, d)) for k, d in
                                  (("beta1", 0.9), ("beta2", 0.999), ("epsilon", 1e-8))])


# --------------------------------------------------------------------------------------------
# RmsProp
# --------------------------------------------------------------------------------------------
@njit(**_OPTS)
def rms_prop_kernel(g, ms, mom, lr, decay, momentum, epsilon, ng, nms, nmom):
    gf, msf, momf = g.reshape(-1), ms.reshape(-1), mom.reshape(-1)
    ngf, nmsf, nmomf = ng.reshape(-1), nms.reshape(-1), nmom.reshape(-1)
    rate = lr.reshape(-1)[0]
    keep = np.float32(1.0 - np.float64(np.float32(decay)))
    mu, eps = np.float32(momentum), np.float32(epsilon)
    for i in range(gf.size):
        gi = gf[i]
        si = msf[i]
        si = si + keep * (gi * gi - si)
        mi = momf[i] * mu + rate * gi / np.sqrt(eps + si)
        nmsf[i] = si
        nmomf[i] = mi
        ngf[i] = mi


def rms_prop(node: Node, values: Mapping[str, Value]):
    if not _all_f32(node, values) or not _same_size(values, node.inputs[:3]) or not _one(values, node.inputs[3]):
        return None
    return rms_prop_kernel, _params(node, [float(node.attrs.get(k, d)) for k, d in
                                           (("decay", 0.9), ("momentum", 0.0), ("epsilon", 1e-5))])


# --------------------------------------------------------------------------------------------
# Ftrl: n and z interleaved in one [..., 2] blob
# --------------------------------------------------------------------------------------------
@njit(**_OPTS)
def _ftrl_loop(wf, nzf, gf, nwf, nnzf, alpha_inv, beta, l1, l2):
    zero = np.float32(0.0)
    for i in range(wf.size):
        w, n, z, g = wf[i], nzf[2 * i], nzf[2 * i + 1], gf[i]
        new_n = n + g * g
        sigma = (np.sqrt(new_n) - np.sqrt(n)) * alpha_inv
        new_z = z + g - sigma * w
        nnzf[2 * i] = new_n
        nnzf[2 * i + 1] = new_z
        if abs(new_z) > l1:
            sign = np.float32(1.0) if new_z > zero else np.float32(-1.0)
            nwf[i] = (l1 * sign - new_z) / ((beta + np.sqrt(new_n)) * alpha_inv + l2)
        else:
            nwf[i] = zero


@njit(**_OPTS)
def ftrl_kernel(w, nz, g, alpha, beta, lambda1, lambda2, nw, nnz):
    alpha_inv = np.float32(1.0 / np.float64(np.float32(alpha)))
    _ftrl_loop(w.reshape(-1), nz.reshape(-1), g.reshape(-1), nw.reshape(-1), nnz.reshape(-1), alpha_inv,
               np.float32(beta), np.float32(lambda1), np.float32(lambda2))


@njit(**_OPTS)
def ftrl_alpha_kernel(w, nz, g, a, beta, lambda1, lambda2, nw, nnz):
    alpha_inv = np.float32(1.0 / np.float64(a.reshape(-1)[0]))
    _ftrl_loop(w.reshape(-1), nz.reshape(-1), g.reshape(-1), nw.reshape(-1), nnz.reshape(-1), alpha_inv,
               np.float32(beta), np.float32(lambda1), np.float32(lambda2))


def ftrl(node: Node, values: Mapping[str, Value]):
    w, nz, g = (values[v] for v in node.inputs[:3])
    if not _all_f32(node, values) or w.size == 0 or g.size != w.size or nz.size != 2 * w.size:
        return None
    tail = [float(node.attrs.get(k, d)) for k, d in (("beta", 1.0), ("lambda1", 0.001), ("lambda2", 0.001))]
    if len(node.inputs) == 4:
        if not _one(values, node.inputs[3]):
            return None
        return ftrl_alpha_kernel, _params(node, tail)
    return ftrl_kernel, _params(node, [float(node.attrs.get("alpha", 0.005))] + tail)


# --------------------------------------------------------------------------------------------
# LpNorm and its gradient (p = 1: Σ|x|; p = 2: Σx², no square root, as Caffe2's)
# --------------------------------------------------------------------------------------------
@njit(**_OPTS)
def lp_norm_kernel(x, p, average, out):
    # Summed in float64 and rounded once, as the reference does.
    xf = x.reshape(-1)
    acc = 0.0
    if p == 1:
        for i in range(xf.size):
            acc += abs(np.float64(xf[i]))
    else:
        for i in range(xf.size):
            v = np.float64(xf[i])
            acc += v * v
    if average:
        acc = acc / xf.size
    out.reshape(-1)[0] = acc


@njit(**_OPTS)
def lp_norm_gradient_kernel(x, dy, p, average, dx):
    xf, dxf = x.reshape(-1), dx.reshape(-1)
    d = dy.reshape(-1)[0]
    if average:
        d = d / np.float32(xf.size)
    eps = np.float32(1e-12)
    zero = np.float32(0.0)
    two = np.float32(2.0)
    for i in range(xf.size):
        v = xf[i]
        if p == 1:
            dxf[i] = d if v > eps else (-d if v < -eps else zero)
        else:
            dxf[i] = two * v * d


def lp_norm(node: Node, values: Mapping[str, Value]):
    if not _all_f32(node, values) or values[node.inputs[0]].size == 0 or int(node.attrs.get("p", 2)) not in (1, 2):
        return None
    return lp_norm_kernel, _params(node, [int(node.attrs.get("p", 2)), int(bool(node.attrs.get("average", False)))])


def lp_norm_gradient(node: Node, values: Mapping[str, Value]):
    if not _all_f32(node, values) or not _one(values, node.inputs[1]) or int(node.attrs.get("p", 2)) not in (1, 2):
        return None
    return lp_norm_gradient_kernel, _params(node, [int(node.attrs.get("p", 2)),
                                                   int(bool(node.attrs.get("average", False)))])


# --------------------------------------------------------------------------------------------
# ClipTensorByScaling: elementwise over X with its norm (and threshold factor) broadcast
# --------------------------------------------------------------------------------------------
def clip_tensor_by_scaling_loop(node: Node, values: Mapping[str, Value]):
    """The per-element form for float32 X with one-element norms (else None: the reference runs)."""
    from netjit.compiler.codegen.elementwise import LoopForm
    if not _all_f32(node, values) or any(values[v].size != 1 for v in node.inputs[1:]):
        return None
    out = tuple(values[node.outputs[0]].shape)
    if tuple(values[node.inputs[0]].shape) != out:
        return None
    if len(node.inputs) == 3:
        expr = "x0 * (threshold * x2 / x1) if x1 > threshold * x2 else x0"
    else:
        expr = "x0 * (threshold / x1) if x1 > threshold else x0"
    views = [out] + [(1,) * len(out)] * (len(node.inputs) - 1)
    return LoopForm(expr, views, {"threshold": float(node.attrs["threshold"])})
