"""Host-side fast paths for the random fillers inside compiled plans.

A random filler cannot be folded or compiled (it must draw fresh values every run, from the op's
own generator so that ``random_seed`` gives the reference executor's values). Its reference
re-derives the shape and re-checks the args on every call, which dominates a small net's RunNet;
here the shape and args are resolved once at plan time and a run is one generator call plus the
affine map, in the reference's order of float32 operations, so values are bit-identical to the
reference given the same generator (tests/compiler/test_fills.py). A multiply by 1 or add of 0
is skipped (identical except that the sign of an exact zero can differ).

Each filler's record names its maker here (``Lowering(fill="netjit.compiler.codegen.fills:gaussian")``);
``numba_cpu.fill_for`` reads it.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, Mapping

import numpy as np

from netjit.compiler.ir import Node, Value

_F32 = np.dtype(np.float32)
# Given the op's generator (bound once per runner), the per-run draw.
FillMaker = Callable[[np.random.Generator], Callable[[], np.ndarray]]


def _static(node: Node, values: Mapping[str, Value]) -> tuple[int, ...] | None:
    if node.inputs or len(node.outputs) != 1:
        return None
    out = values[node.outputs[0]]
    if not out.typed or out.dtype != _F32 or tuple(node.attrs.get("shape") or ()) != tuple(out.shape):
        return None
    return tuple(out.shape)


# Small fills draw this many elements' worth of runs at once (see _pooled).
POOL_ELEMENTS = 4096
POOL_RUNS = 64


def _apply(z: np.ndarray, scale: np.float32, shift: np.float32) -> np.ndarray:
    if scale != 1:
        z *= scale
    if shift != 0:
        z += shift
    return z


def _pooled(sample: Callable[[tuple[int, ...]], np.ndarray], shape: tuple[int, ...], scale: np.float32,
            shift: np.float32) -> Callable[[], np.ndarray]:
    """The per-run draw. A small fill samples ``k`` runs' values in one generator call and hands
    out one slice per run: the generator fills elements in order, so run i gets exactly the values
    k separate calls would have given it (the op's generator is its own, or shared by unseeded
    ops whose values are arbitrary anyway); each run still gets fresh, distinct memory."""
    size = math.prod(shape)
    k = min(POOL_RUNS, POOL_ELEMENTS // size) if size else 1
    if k <= 1:
        return lambda: _apply(sample(shape), scale, shift)
    pool: list = [None, k]       # [the drawn block, index of the next run in it]

    def draw() -> np.ndarray:
        i = pool[1]
        if i == k:
            pool[0] = _apply(sample((k,) + shape), scale, shift)
            i = 0
        pool[1] = i + 1
        return pool[0][i]
    return draw


def gaussian(node: Node, values: Mapping[str, Value]) -> FillMaker | None:
    shape = _static(node, values)
    std, mean = node.attrs.get("std"), node.attrs.get("mean")
    if shape is None or not isinstance(std, float) or not isinstance(mean, float) or std < 0:
        return None
    scale, shift = np.float32(std), np.float32(mean)

    def make(rng: np.random.Generator) -> Callable[[], np.ndarray]:
        return _pooled(partial(rng.standard_normal, dtype=np.float32), shape, scale, shift)
    return make


def uniform(node: Node, values: Mapping[str, Value]) -> FillMaker | None:
    shape = _static(node, values)
    lo, hi = node.attrs.get("min"), node.attrs.get("max")
    if shape is None or not isinstance(lo, float) or not isinstance(hi, float) or not lo < hi:
        return None
    span, shift = np.float32(hi) - np.float32(lo), np.float32(lo)

    def make(rng: np.random.Generator) -> Callable[[], np.ndarray]:
        return _pooled(partial(rng.random, dtype=np.float32), shape, span, shift)
    return make


def _fan(shape: tuple[int, ...], dim: int) -> int | None:
    numel = math.prod(shape)
    if len(shape) <= dim or shape[dim] == 0 or numel == 0:
        return None
    return numel // shape[dim]


def xavier(node: Node, values: Mapping[str, Value]) -> FillMaker | None:
    shape = _static(node, values)
    fan = _fan(shape, 0) if shape is not None else None
    if fan is None:
        return None
    scale = np.float32(math.sqrt(3.0 / fan))

    def make(rng: np.random.Generator) -> Callable[[], np.ndarray]:
        return _pooled(partial(rng.random, dtype=np.float32), shape, 2 * scale, -scale)
    return make


def msra(node: Node, values: Mapping[str, Value]) -> FillMaker | None:
    shape = _static(node, values)
    fan = _fan(shape, 1) if shape is not None else None
    if fan is None:
        return None
    std = np.float32(math.sqrt(2.0 / fan))

    def make(rng: np.random.Generator) -> Callable[[], np.ndarray]:
        return _pooled(partial(rng.standard_normal, dtype=np.float32), shape, std, np.float32(0))
    return make
