"""SequenceMask: every mode against a loop over (row, column), inference, the gradient op (grad=1
zeroes what the forward filled) and a numerical gradient check."""
from __future__ import annotations

import math

import numpy as np
import pytest

from netjit.compiler.ops.gradients import gradient_ops_for
from netjit.proto.args import make_op
from netjit.runtime.errors import OpError
from tests.ops.harness import check_gradient, check_infer, run_op

RULES = {"upper": lambda i, j, s: j > i, "lower": lambda i, j, s: j < i, "upperdiag": lambda i, j, s: j >= i,
         "lowerdiag": lambda i, j, s: j <= i, "sequence": lambda i, j, s: j >= s[i],
         "window": lambda i, j, s: j > s[i] + 1 or j < s[i] - 1}


@pytest.mark.parametrize("mode", sorted(RULES))
def test_sequence_mask_modes(mode):
    x = np.random.default_rng(0).standard_normal((3, 2, 2)).astype(np.float32)   # axis 1: 3 rows x 4 columns
    second = np.array([1, 3, 0], np.int32)
    inputs = [x, second] if mode in ("sequence", "window") else [x]
    (y,) = check_infer("SequenceMask", inputs, mode=mode, radius=1)
    want = x.reshape(3, 4).copy()
    for i in range(3):
        for j in range(4):
            if RULES[mode](i, j, second):
                want[i, j] = -math.inf
    np.testing.assert_array_equal(y, want.reshape(x.shape))
    (y0,) = run_op("SequenceMask", inputs, mode=mode, radius=1, fill_val=-5.0, grad=1)
    np.testing.assert_array_equal(y0, np.where(np.isinf(want), 0, want).reshape(x.shape))


def test_sequence_mask_gradient():
    rng = np.random.default_rng(1)
    x, lengths = rng.standard_normal((3, 4)).astype(np.float32), np.array([2, 4, 0], np.int32)
    # A finite fill keeps the finite differences finite; the masked entries get no gradient.
    grads = check_gradient("SequenceMask", [x, lengths], wrt=[0], mode="sequence", fill_val=-3.0)
    assert (grads[0][0, 2:] == 0).all() and (grads[0][2] == 0).all()
    (op,), g_input = gradient_ops_for(make_op("SequenceMask", ["x"], ["y"], mode="upper", axis=1), ["dy"])
    assert op.type == "SequenceMask" and list(op.input) == ["dy"] and g_input == ["x_grad"]
    assert {a.name: a for a in op.arg}["grad"].i == 1


def test_sequence_mask_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(OpError, match="mode 'diagonal' is not one of"):
        run_op("SequenceMask", [x], mode="diagonal")
    with pytest.raises(OpError, match="takes two inputs"):
        run_op("SequenceMask", [x], mode="sequence")
    with pytest.raises(OpError, match="has 3 entries for 2 rows"):
        run_op("SequenceMask", [x, np.array([1, 2, 3], np.int32)], mode="sequence")
