"""Vectorisable float32 exp / log / tanh / sigmoid for generated kernels.

llvmlite here has no SVML, so ``math.exp`` inside a loop is one scalar libm call per element and
keeps the loop from vectorising (docs/numba-facts.md §5). These versions use only +, -, *, /,
comparisons, selects and bit casts, so LLVM turns a fused loop that calls them into AVX-512 code.

Accuracy, float32 in and out, measured against float64 numpy over the whole float32 range (see
tests/compiler/test_approx.py, which checks these bounds):

- ``exp_f32``: <= 2 ulp (0.9 measured) where the result is a normal float; exact overflow to inf
  above 88.72 and gradual underflow to 0 below -87.3 (absolute error < 2e-45 there); NaN -> NaN.
- ``log_f32``: <= 2 ulp for positive normal and subnormal inputs; log(0) = -inf, log(x<0) = NaN,
  log(inf) = inf.
- ``exp_neg_f32`` (e^a for a <= 0, what sigmoid and tanh use): <= 1 ulp where the result is normal,
  absolute error < 2e-45 below; 0 below -104; NaN -> NaN.
- ``tanh_f32``: <= 3 ulp (1.5 measured); +-1 beyond |x| = 9.1; tanh(-0) = -0; NaN -> NaN.
- ``sigmoid_f32``: <= 3 ulp relative wherever the result is a normal float (both tails, via
  e^-|x|; 2.3 measured); results below 1.2e-38 carry the absolute error of a subnormal (< 3e-45).

They are compiled with FMA contraction (``fastmath={"contract"}`` only: no assumptions about NaN,
infinities or signed zeros). The polynomial coefficients were fitted for this module (reweighted least squares towards the
minimax relative error) on the reduced ranges named in each function.
"""
from __future__ import annotations


import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_F = np.float32
_OPTS = dict(cache=True, error_model="numpy", nogil=True, fastmath={"contract"})


@intrinsic
def f32_from_bits(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as float32 (an LLVM bitcast, which vectorises)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        if bits.bitwidth > 32:
            value = builder.trunc(value, ir.IntType(32))
        elif bits.bitwidth < 32:
            value = builder.sext(value, ir.IntType(32)) if bits.signed else builder.zext(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())
    return types.float32(bits), codegen


@intrinsic
def f32_to_bits(typingctx, value):
    """Reinterpret a float32 as int32."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


_LOG2E = _F(1.4426950408889634)
_LN2_HI = _F(0.693359375)            # ln 2 split so that k * _LN2_HI is exact for |k| <= 2^9
_LN2_LO = _F(-2.12194440e-4)
_EXP_LO, _EXP_HI = _F(-104.0), _F(89.0)
_HALF, _ONE, _TWO, _ZERO = _F(0.5), _F(1.0), _F(2.0), _F(0.0)
_TWO_M32 = _F(2.0 ** -32)
# e^r on |r| <= ln2/2 to 0.07 ulp: 1 + r + c2 r^2 + ... + c6 r^6 (fitted for this module).
_C2, _C3, _C4, _C5, _C6 = (_F(0.4999999403953552), _F(0.1666651964187622), _F(0.041668400168418884),
                           _F(0.00836885068565607), _F(0.0013814320554956794))
# Adding 1.5 * 2^23 rounds a float below 2^22 in size to an integer, kept in the sum's low mantissa
# bits; the offset adds an exponent bias to it (so the bits shifted left by 23 are a power of two).
_ROUND = _F(12582912.0)
_EXP_SHIFT = _ROUND + _F(127.0)


@njit(**_OPTS)
def exp_f32(x):
    """e^x. Range reduction x = k ln2 + r, |r| <= ln2/2 (k rounded by the shifter, see _ROUND);
    e^r by a degree-6 polynomial; 2^k applied as 2^(k+32) * 2^-32 for x < 0 and 2^(k-1) * 2 for
    x >= 0: the first factor keeps the product normal and exact, the second rounds once (also into
    the subnormals and to inf). NaN stays NaN through the clamp and the products."""
    x = _F(x)
    xc = _EXP_LO if x < _EXP_LO else (_EXP_HI if x > _EXP_HI else x)
    t = xc * _LOG2E + _EXP_SHIFT
    k = t - _EXP_SHIFT
    r = (xc - k * _LN2_HI) - k * _LN2_LO
    p = _ONE + r * (_ONE + r * (_C2 + r * (_C3 + r * (_C4 + r * (_C5 + r * _C6)))))
    neg = xc < _ZERO
    first = f32_from_bits((f32_to_bits(t) + (32 if neg else -1)) << 23)
    return p * first * (_TWO_M32 if neg else _TWO)


# e^a for a <= 0, the form sigmoid and tanh need, cheaper than exp_f32 (one scale multiply, no
# selects; a fused loop with a sigmoid is compute-bound: examples/benchmarks/RESULTS.md "Fused 6-op
# elementwise chain"):
# - k = round(a log2 e) by adding the shifter 1.5 * 2^23 + 159: the sum's low mantissa bits hold
#   k + 159, so 2^(k + 32) is that sum's bits shifted left by 23 (no round/convert instructions; the
#   exponent field wraps the shifter's own bits out);
# - p(r) ~ e^r of degree 6 (0.07 ulp on |r| <= ln2/2), its coefficients pre-scaled by 2^-32, so that
#   p * 2^(k + 32) is one multiply that rounds once, also where the result is subnormal (k + 32
#   stays >= -118 for a >= -104, so the scale itself is a normal float).
_SHIFT = _ROUND + _F(159.0)
_NEG_LO = _F(-104.0)                 # e^-104 < 2^-150 rounds to 0
_P = tuple(_F(c * _TWO_M32) for c in (_ONE, _ONE, _C2, _C3, _C4, _C5, _C6))
_P0, _P1, _P2, _P3, _P4, _P5, _P6 = _P


@njit(**_OPTS)
def exp_neg_f32(a):
    """e^a for a <= 0 (callers pass -|x|): <= 1 ulp where normal, a subnormal's absolute error
    below; -inf -> 0; NaN -> NaN (the clamp keeps it, and NaN times the scale stays NaN)."""
    a = _F(a)
    a = _NEG_LO if a < _NEG_LO else a
    t = a * _LOG2E + _SHIFT
    k = t - _SHIFT
    r = (a - k * _LN2_HI) - k * _LN2_LO
    p = _P0 + r * (_P1 + r * (_P2 + r * (_P3 + r * (_P4 + r * (_P5 + r * _P6)))))
    return p * f32_from_bits(f32_to_bits(t) << 23)


_SQRT2 = _F(1.4142135623730951)
_LN2 = _F(0.6931471805599453)
_L = (_F(0.3333330750465393), _F(-0.2500069737434387), _F(0.2000291645526886), _F(-0.16628409922122955),
      _F(0.1417006552219391), _F(-0.13082292675971985), _F(0.12939316034317017), _F(-0.0805247351527214))
_L0, _L1, _L2, _L3, _L4, _L5, _L6, _L7 = _L
_TWO23 = _F(8388608.0)
_MIN_NORMAL = _F(1.1754943508222875e-38)
_INF = _F(np.inf)
_NAN = _F(np.nan)


@njit(**_OPTS)
def log_f32(x):
    """ln x. x = m 2^e with m in [sqrt(1/2), sqrt(2)); ln(1+f) = f - f^2/2 + f^3 P(f), P degree 7."""
    x = _F(x)
    sub = x < _MIN_NORMAL
    xs = x * _TWO23 if sub else x                  # lift subnormals into the normal range
    bits = f32_to_bits(xs)
    e = ((bits >> 23) & 0xFF) - 127 - (23 if sub else 0)
    m = f32_from_bits((bits & 0x7FFFFF) | 0x3F800000)
    big = m > _SQRT2
    m = m * _HALF if big else m
    e = e + 1 if big else e
    f = m - _ONE
    p = _L0 + f * (_L1 + f * (_L2 + f * (_L3 + f * (_L4 + f * (_L5 + f * (_L6 + f * _L7))))))
    ef = _F(e)
    y = (f - _HALF * f * f + f * f * f * p) + ef * _LN2
    y = -_INF if x == _ZERO else y
    y = _NAN if x < _ZERO else y
    y = x if (x == _INF or x != x) else y
    return y


_T0, _T1, _T2, _T3, _T4, _T5 = (_F(-0.3333333134651184), _F(0.13333234190940857), _F(-0.05394991114735603),
                                _F(0.02171630784869194), _F(-0.008212733082473278), _F(0.002172877313569188))
_TANH_SMALL = _F(0.625)


@njit(**_OPTS)
def tanh_f32(x):
    """tanh x: x (1 + x^2 T(x^2)) for |x| < 0.625 (T degree 5), else sign(x) (1 - e) / (1 + e) with
    e = e^(-2|x|) <= 0.29."""
    x = _F(x)
    a = abs(x)
    z = x * x
    # x * (1 + ...) rather than x + x*...: keeps the sign of -0.0
    small = x * (_ONE + z * (_T0 + z * (_T1 + z * (_T2 + z * (_T3 + z * (_T4 + z * _T5))))))
    e = exp_neg_f32(-(a + a))
    big = (_ONE - e) / (_ONE + e)
    big = big if x >= _ZERO else -big
    return small if a < _TANH_SMALL else big


@njit(**_OPTS)
def sigmoid_f32(x):
    """1 / (1 + e^-x) as 1/(1+e) for x >= 0 and e/(1+e) for x < 0, e = e^-|x| in (0, 1]:
    one division, no overflow."""
    x = _F(x)
    e = exp_neg_f32(-abs(x))
    return (_ONE if x >= _ZERO else e) / (_ONE + e)


@njit(**_OPTS)
def sigmoid_f64(x):
    e = np.exp(-abs(x))
    s = 1.0 / (1.0 + e)
    return s if x >= 0.0 else e * s

