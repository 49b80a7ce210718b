"""``caffe2.python.gradient_checker``: numerical gradient checks of one op or of a whole net.

``GradientChecker(stepsize, threshold).CheckSimple(op, inputs, i, outputs_with_grads)`` runs ``op``
and its registered gradient ops, with ``loss = ½ Σ_k ‖Y_k‖²`` over the outputs listed (so each
output's gradient is the output itself), and compares the gradient of input ``i`` with central
differences of that loss. It returns ``(ok, analytic, estimate)``::

    >>> import numpy as np
    >>> from netjit import core
    >>> op = core.CreateOperator("Tanh", ["X"], ["Y"])
    >>> ok, grad, est = GradientChecker(0.01, 0.005).CheckSimple(op, [np.array([0.5, -1.0])], 0, [0])
    >>> bool(ok)
    True
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from netjit import core, workspace
from netjit.proto import caffe2_pb2


def getGradientForOp(op: caffe2_pb2.OperatorDef) -> tuple[list, list]:
    """(gradient ops, per-input gradient blob names) of one op, output gradients named ``<out>_grad``."""
    return core.GradientRegistry.GetGradientForOp(op, [s + "_grad" for s in op.output])


def _grad_name(g: Any) -> Any:
    return g if g is None or isinstance(g, (str, core.GradientSlice)) else str(g)


class GradientChecker:
    """Checks one op's gradient against central differences (Caffe2's GradientChecker).

    ``workspace_name``: the named workspace the checks run in (created if needed, emptied and left
    afterwards); ``device_option``: set on the op (netjit runs every device option on the CPU)."""

    def __init__(self, stepsize: float, threshold: float, device_option: caffe2_pb2.DeviceOption | None = None,
                 workspace_name: str = "gradient_check", input_device_options: dict | None = None):
        self._stepsize = stepsize
        self._threshold = threshold
        self._device_option = device_option or caffe2_pb2.DeviceOption()
        self._workspace_name = workspace_name
        self._input_device_options = input_device_options or {}

    def GetLossAndGrad(self, op: caffe2_pb2.OperatorDef, grad_ops: Sequence[Any], inputs: Sequence[np.ndarray],
                       input_names: Sequence[str], input_to_check: int, grad_name: Any,
                       outputs_with_grads: Sequence[int]) -> tuple[float, np.ndarray]:
        for name, value in zip(input_names, inputs):
            workspace.FeedBlob(name, value, self._input_device_options.get(name, self._device_option))
        workspace.RunOperatorOnce(op)
        loss = 0.0
        for idx in outputs_with_grads:
            out = workspace.FetchBlob(op.output[idx])
            # float64 accumulation: the loss differences are what the estimate divides.
            loss += float(np.sum(np.asarray(out, np.float64) ** 2))
            workspace.FeedBlob(op.output[idx] + "_grad", out, self._device_option)
        workspace.RunOperatorsOnce(grad_ops)
        if isinstance(grad_name, core.GradientSlice):
            # A sparse gradient: scatter its values back to a dense array of the input's shape.
            dense = np.zeros_like(inputs[input_to_check])
            idx = workspace.FetchBlob(str(grad_name.indices))
            values = workspace.FetchBlob(str(grad_name.values))
            for i, v in zip(idx.reshape(-1), values.reshape(len(idx.reshape(-1)), -1)):
                dense[int(i)] += v.reshape(dense[int(i)].shape)
            return loss / 2.0, dense
        return loss / 2.0, workspace.FetchBlob(str(grad_name))

    def CheckSimple(self, op: caffe2_pb2.OperatorDef, inputs: Sequence[np.ndarray], input_to_check: int,
                    outputs_with_grads: Sequence[int], grad_ops: Sequence[Any] | None = None,
                    input_device_options: dict | None = None) -> tuple[bool, np.ndarray, np.ndarray]:
        """Check d(loss)/d(inputs[input_to_check]); ``inputs`` are restored afterwards."""
        old = workspace.CurrentWorkspace()
        if self._workspace_name != old:
            workspace.SwitchWorkspace(self._workspace_name, True)
        if input_device_options:
            self._input_device_options = input_device_options
        try:
            op.device_option.CopyFrom(self._device_option)
            if grad_ops is None:
                grad_ops, g_input = getGradientForOp(op)
            else:
                g_input = [name + "_grad" for name in op.input]
            grad_name = _grad_name(g_input[input_to_check])
            if grad_name is None:
                raise ValueError(f"{op.type} gives no gradient for input {input_to_check} ({op.input[input_to_check]!r})")
            inputs = list(inputs)
            _, grad = self.GetLossAndGrad(op, grad_ops, inputs, op.input, input_to_check, grad_name,
                                          outputs_with_grads)
            x = inputs[input_to_check]
            estimate = np.zeros_like(x)
            if estimate.shape != np.shape(grad):
                raise ValueError(f"gradient of input {input_to_check} has shape {np.shape(grad)} but the input "
                                 f"has {estimate.shape}")
            for k in range(x.size):
                original = x.flat[k]
                x.flat[k] = original + self._stepsize
                pos, _ = self.GetLossAndGrad(op, grad_ops, inputs, op.input, input_to_check, grad_name,
                                             outputs_with_grads)
                x.flat[k] = original - self._stepsize
                neg, _ = self.GetLossAndGrad(op, grad_ops, inputs, op.input, input_to_check, grad_name,
                                             outputs_with_grads)
                x.flat[k] = original
                estimate.flat[k] = (pos - neg) / self._stepsize / 2
            bad = ~np.isclose(grad, estimate, atol=self._threshold, rtol=self._threshold)
            if np.any(bad):
                idx = np.flatnonzero(bad)
                print(f"Gradient check of {op.type} input {input_to_check} failed. [idx, grad, estimate]:")
                print(np.vstack([idx, np.asarray(grad).flat[idx], estimate.flat[idx]]).T)
            return not bool(np.any(bad)), grad, estimate
        finally:
            if self._workspace_name != old:
                workspace.ResetWorkspace()
                workspace.SwitchWorkspace(old)


class NetGradientChecker:
    """Gradient checks of a whole net: its gradient net (``AddGradientOperators``, output gradients
    of ones, so the loss is Σ outputs) against central differences."""

    @staticmethod
    def _grad(net: Any, outputs_with_grad: Sequence[Any], input_values: dict, inputs_with_grads: Sequence[str]
              ) -> tuple[list, Any]:
        grad_net = net.Clone(net.Name() + "_copy")
        grad_map = grad_net.AddGradientOperators(list(outputs_with_grad))
        for name, value in input_values.items():
            workspace.FeedBlob(name, value)
        for name in inputs_with_grads:
            if name not in grad_map:
                raise ValueError(f"{name!r} has no gradient in net {net.Name()!r} for outputs {list(outputs_with_grad)}")
        workspace.RunNetOnce(grad_net)
        grads = []
        for name in inputs_with_grads:
            g = grad_map[name]
            grads.append(workspace.FetchBlob(str(g.values if isinstance(g, core.GradientSlice) else g)))
        return grads, grad_net

    @staticmethod
    def CompareNets(nets: Sequence[Any], outputs: Sequence[Sequence[Any]], outputs_with_grad_ids: Sequence[int],
                    inputs_with_grads: Sequence[str], input_values: dict | None = None,
                    threshold: float = 1e-7, print_net_images: bool = False) -> None:
        """Assert that nets computing the same thing two ways agree on their outputs and on the
        gradients of ``inputs_with_grads`` (outputs[i] are net i's output blobs, in one order)."""
        results = []
        for net, outs in zip(nets, outputs):
            with_grad = [outs[i] for i in outputs_with_grad_ids]
            grads, _ = NetGradientChecker._grad(net, with_grad, dict(input_values or {}), inputs_with_grads)
            results.append(([workspace.FetchBlob(str(o)) for o in outs], grads))
        first_outs, first_grads = results[0]
        for k, (outs, grads) in enumerate(results[1:], 1):
            for i, (a, b) in enumerate(zip(first_outs, outs)):
                np.testing.assert_allclose(b, a, atol=threshold, rtol=threshold,
                                           err_msg=f"output {i} of net {k} differs from net 0")
            for name, a, b in zip(inputs_with_grads, first_grads, grads):
                np.testing.assert_allclose(b, a, atol=threshold, rtol=threshold,
                                           err_msg=f"gradient of {name!r} in net {k} differs from net 0")

    @staticmethod
    def Check(net: Any, outputs_with_grad: Sequence[Any], input_values: dict, input_to_check: str,
              step_size: float = 0.0001, threshold: float = 0.05, print_net: bool = True) -> tuple[float, float]:
        """Assert the net's gradient of ``input_to_check`` matches central differences; returns the
        mean and max absolute difference."""
        (analytic,), full_net = NetGradientChecker._grad(net, outputs_with_grad, input_values, [input_to_check])
        base = np.asarray(input_values[input_to_check])

        def loss(value: np.ndarray) -> float:
            workspace.FeedBlob(input_to_check, value)
            workspace.RunNetOnce(full_net)
            return float(sum(np.sum(np.asarray(workspace.FetchBlob(str(o)), np.float64)) for o in outputs_with_grad))

        estimate = np.zeros_like(base)
        for k in range(base.size):
            plus, minus = base.copy(), base.copy()
            plus.flat[k] += step_size
            minus.flat[k] -= step_size
            estimate.flat[k] = (loss(plus) - loss(minus)) / step_size / 2
        workspace.FeedBlob(input_to_check, base)
        message = f"Error in gradient check for net {net.Name()!r}"
        if print_net:
            message += f": {net.Proto()}"
        np.testing.assert_allclose(analytic, estimate, atol=threshold, rtol=threshold, err_msg=message)
        delta = np.abs(estimate - analytic).reshape(-1)
        return float(np.mean(delta)) if delta.size else 0.0, float(np.max(delta)) if delta.size else 0.0
