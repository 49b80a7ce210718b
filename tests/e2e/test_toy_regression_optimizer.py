"""The toy-regression tutorial in its model_helper + brew + optimizer form converges with each optimizer."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.e2e.test_tutorials import _run


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_toy_regression_with_optimizer_converges(tmp_path, opt):
    stdout = _run("toy_regression_optimizer.py", str(tmp_path), "--optimizer", opt)
    result = json.loads((tmp_path / "toy_regression_optimizer.json").read_text())
    assert result["iterations"] == 100
    np.testing.assert_allclose(result["W"], [2.0, 1.5], atol=0.15)
    np.testing.assert_allclose(result["B"], [0.5], atol=0.15)
    assert np.mean(result["losses"][-10:]) < 0.5 * np.mean(result["losses"][:5])
    assert 'type: "AtomicIter"' in stdout and 'type: "LearningRate"' in stdout
    assert ('type: "WeightedSum"' if opt == "sgd" else 'type: "Adam"') in stdout
