"""caffe2.python.helpers.*: Caffe2's module layout for brew's helpers, one implementation."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from netjit import brew_helpers

MODULES = ["algebra", "array_helpers", "conv", "fc", "nonlinearity", "normalization", "pooling",
           "dropout", "train", "db_input", "control_ops"]


@pytest.mark.parametrize("name", MODULES)
def test_each_module_reexports_brew_helpers(name):
    mod = importlib.import_module(f"caffe2.python.helpers.{name}")
    assert mod.__all__
    for fn in mod.__all__:
        assert getattr(mod, fn) is getattr(brew_helpers, fn)


def test_helper_called_directly_builds_the_same_op_as_brew():
    from caffe2.python import brew, model_helper, workspace
    from caffe2.python.helpers.fc import fc
    from caffe2.python.helpers.nonlinearity import relu
    workspace.ResetWorkspace()
    m = model_helper.ModelHelper(name="helpers_direct")
    relu(m, fc(m, "x", "h", dim_in=3, dim_out=2), "y")
    b = model_helper.ModelHelper(name="helpers_brew")
    brew.relu(b, brew.fc(b, "x", "h", dim_in=3, dim_out=2), "y")
    assert [op.type for op in m.net.Proto().op] == [op.type for op in b.net.Proto().op] == ["FC", "Relu"]
    workspace.FeedBlob("x", np.ones((4, 3), np.float32))
    workspace.RunNetOnce(m.param_init_net)
    workspace.RunNetOnce(m.net)
    assert workspace.FetchBlob("y").shape == (4, 2)
