"""Accuracy of the vectorisable float32 exp/log/tanh/sigmoid over the whole float32 range,
including overflow, underflow, subnormals, signed zeros, infinities and NaN."""
import numpy as np
import pytest
from numba import njit

from netjit.compiler.codegen import approx

F32 = np.float32


@njit(error_model="numpy")
def _apply(which, x, y):
    for i in range(x.size):
        if which == 0:
            y[i] = approx.exp_f32(x[i])
        elif which == 1:
            y[i] = approx.log_f32(x[i])
        elif which == 2:
            y[i] = approx.tanh_f32(x[i])
        elif which == 3:
            y[i] = approx.sigmoid_f32(x[i])
        else:
            y[i] = approx.exp_neg_f32(x[i])


def apply(which: int, x: np.ndarray) -> np.ndarray:
    y = np.empty_like(x)
    _apply(which, x, y)
    return y


def ulps(got: np.ndarray, want64: np.ndarray) -> np.ndarray:
    spacing = np.spacing(np.abs(want64.astype(np.float32))).astype(np.float64)
    return np.abs(got.astype(np.float64) - want64) / spacing


def grid(lo: float, hi: float, n: int = 400_000) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([np.linspace(lo, hi, n), rng.uniform(lo, hi, n)]).astype(F32)


def test_exp():
    x = grid(-110, 90)
    got, want = apply(0, x), np.exp(x.astype(np.float64))
    normal = (want >= np.finfo(F32).tiny) & (want <= np.finfo(F32).max)
    assert ulps(got[normal], want[normal]).max() <= 2
    sub = want < np.finfo(F32).tiny
    assert np.abs(got[sub] - want[sub]).max() < 2e-45
    assert np.all(np.isinf(got[want > 3.5e38]))
    special = apply(0, np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 88.72, 88.73, -103.0, -104.5], F32))
    assert special[0] == np.inf and special[1] == 0 and np.isnan(special[2]) and special[3] == special[4] == 1
    assert np.isfinite(special[5]) and special[6] == np.inf and 0 < special[7] < 1e-44 and special[8] == 0


def test_exp_of_non_positive_arguments():
    x = np.concatenate([grid(-110, 0), -np.random.default_rng(2).uniform(0, 1, 200_000).astype(F32)])
    got, want = apply(4, x), np.exp(x.astype(np.float64))
    normal = want >= np.finfo(F32).tiny
    assert ulps(got[normal], want[normal]).max() <= 1
    assert np.abs(got[~normal] - want[~normal]).max() < 2e-45
    special = apply(4, np.array([0.0, -0.0, -np.inf, np.nan, -104.5, -103.0], F32))
    assert special[0] == special[1] == 1 and special[2] == 0 and np.isnan(special[3])
    assert special[4] == 0 and 0 < special[5] < 1e-44


def test_log():
    rng = np.random.default_rng(1)
    x = (rng.uniform(1, 2, 800_000) * 2.0 ** rng.integers(-149, 128, 800_000)).astype(F32)
    x = x[(x > 0) & np.isfinite(x)]
    assert ulps(apply(1, x), np.log(x.astype(np.float64))).max() <= 2
    special = apply(1, np.array([0.0, -0.0, -1.0, np.inf, np.nan, 1.0, 1e-45], F32))
    assert special[0] == special[1] == -np.inf and np.isnan(special[2]) and special[3] == np.inf
    assert np.isnan(special[4]) and special[5] == 0 and abs(special[6] - np.log(1.401298464324817e-45)) < 1e-5


def test_tanh():
    x = grid(-12, 12)
    assert ulps(apply(2, x), np.tanh(x.astype(np.float64))).max() <= 3
    tiny = np.array([1e-30, -1e-30, 1e-40], F32)
    np.testing.assert_array_equal(apply(2, tiny), tiny)
    special = apply(2, np.array([np.inf, -np.inf, np.nan, -0.0, 50.0], F32))
    assert special[0] == 1 and special[1] == -1 and np.isnan(special[2]) and special[4] == 1
    assert special[3] == 0 and np.signbit(special[3])


def test_sigmoid_both_tails():
    x = grid(-105, 105)
    want = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    got = apply(3, x)
    normal = want >= np.finfo(F32).tiny
    assert ulps(got[normal], want[normal]).max() <= 3
    assert np.abs(got[~normal] - want[~normal]).max() < 3e-45
    special = apply(3, np.array([np.inf, -np.inf, np.nan, 0.0], F32))
    assert special[0] == 1 and special[1] == 0 and np.isnan(special[2]) and special[3] == 0.5


@pytest.mark.parametrize("fn", ["exp_f32", "log_f32", "tanh_f32", "sigmoid_f32", "exp_neg_f32"])
def test_scalar_calls_match_the_loop(fn):
    f = getattr(approx, fn)
    xs = np.array([0.3, 1.7, 5.0, 20.0], F32)
    which = ["exp_f32", "log_f32", "tanh_f32", "sigmoid_f32", "exp_neg_f32"].index(fn)
    xs = -xs if fn == "exp_neg_f32" else xs
    np.testing.assert_array_equal(apply(which, xs), np.array([f(v) for v in xs], F32))
