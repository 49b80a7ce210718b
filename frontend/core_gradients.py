"""The gradient registry pieces Caffe2's gradient tests and custom-op scripts import (Caffe2 kept them
in ``core``; its ``core_gradients_test`` reached them through there): ``GradientRegistry`` for Python
gradient makers, ``GradientSlice`` for sparse gradients, the error a failed construction raises, and
``gradient_ops_for`` (the registry's maker for one OperatorDef).

    from caffe2.python.core_gradients import GradientRegistry
    @GradientRegistry.RegisterGradient("MyOp")
    def my_op_grad(op, g_output):
        return [core.CreateOperator("MyOpGradient", [g_output[0]], [op.input[0] + "_grad"])], \\
               [op.input[0] + "_grad"]
"""
from __future__ import annotations

from netjit.autodiff import GradientConstructionError, GradientRegistry, add_gradient_operators
from netjit.compiler.ops.gradients import GradientContext, gradient_ops_for
from netjit.core import BlobReference, GradientSlice

__all__ = ["GradientRegistry", "GradientSlice", "GradientConstructionError", "GradientContext",
           "BlobReference", "gradient_ops_for", "add_gradient_operators", "GetBackwardPass",
           "GetGradientForOp"]

GetBackwardPass = GradientRegistry.GetBackwardPass
GetGradientForOp = GradientRegistry.GetGradientForOp
