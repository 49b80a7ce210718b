"""``caffe2.python.device_checker``: run one op on several device options and compare the outputs.

netjit runs every device option on the CPU, so it gives each device two runs: the op alone
(``RunOperatorOnce``, the reference) and the op as a one-op net (``RunNetOnce``, the compiled
executor by default). All outputs must agree with the first run within ``threshold``; this is how
Caffe2 op tests written with ``assertDeviceChecks`` cross-check netjit's two executors.

    >>> import numpy as np
    >>> from netjit import core
    >>> from netjit.proto import caffe2_pb2
    >>> dc = DeviceChecker(0.01, [caffe2_pb2.DeviceOption()])
    >>> dc.CheckSimple(core.CreateOperator("Relu", ["X"], ["Y"]), [np.array([-1.0, 2.0], np.float32)], [0])
    True
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np

from netjit import workspace
from netjit.proto import caffe2_pb2


class DeviceChecker:
    def __init__(self, threshold: float, device_options: Sequence[caffe2_pb2.DeviceOption]):
        self._threshold = threshold
        self._device_options = list(device_options)

    def _run(self, op: caffe2_pb2.OperatorDef, inputs: Sequence[Any], as_net: bool,
             input_device_options: dict | None) -> list[Any]:
        for name, value in zip(op.input, inputs):
            option = (input_device_options or {}).get(name, op.device_option)
            workspace.FeedBlob(name, value, option)
        if as_net:
            net = caffe2_pb2.NetDef(name=op.name or "device_check")
            net.op.extend([op])
            workspace.RunNetOnce(net)
        else:
            workspace.RunOperatorOnce(op)
        return [workspace.FetchBlob(name) for name in op.output]

    def CheckSimple(self, op: caffe2_pb2.OperatorDef, inputs: Sequence[Any], outputs_to_check: Sequence[int],
                    input_device_options: dict | None = None) -> bool:
        """True when every device option (and executor) gives the first one's outputs."""
        old = workspace.CurrentWorkspace()
        results: list[tuple[str, list[Any]]] = []
        try:
            workspace.SwitchWorkspace("_device_check_", True)
            for option in self._device_options:
                for as_net in (False, True):
                    workspace.ResetWorkspace()
                    run_op = copy.deepcopy(op)
                    run_op.device_option.CopyFrom(option)
                    label = f"device {option.device_type} ({'compiled net' if as_net else 'operator'})"
                    results.append((label, self._run(run_op, [copy.deepcopy(x) for x in inputs], as_net,
                                                     input_device_options)))
        finally:
            workspace.ResetWorkspace()
            workspace.SwitchWorkspace(old)
        ok = True
        first_label, first = results[0]
        for label, outs in results[1:]:
            for i in outputs_to_check:
                want, got = np.asarray(first[i]), np.asarray(outs[i])
                if want.dtype.kind in "SOU":
                    same = want.shape == got.shape and bool(np.all(want == got))
                else:
                    same = want.shape == got.shape and np.allclose(got, want, atol=self._threshold,
                                                                   rtol=self._threshold, equal_nan=True)
                if not same:
                    print(f"Output {i} ({op.output[i]!r}) of {op.type} differs: {label} vs {first_label}")
                    ok = False
        return ok

    def CheckNet(self, net: Any, inputs: dict | None = None, blobs_to_check: Sequence[str] | None = None,
                 ignore: Sequence[str] = ()) -> bool:
        """Run a whole net once per device option (compiled) and compare the blobs it writes."""
        proto = net.Proto() if hasattr(net, "Proto") else net
        old = workspace.CurrentWorkspace()
        results = []
        try:
            workspace.SwitchWorkspace("_device_check_", True)
            for option in self._device_options:
                workspace.ResetWorkspace()
                run_net = copy.deepcopy(proto)
                run_net.device_option.CopyFrom(option)
                for name, value in (inputs or {}).items():
                    workspace.FeedBlob(name, value, option)
                workspace.RunNetOnce(run_net)
                names = blobs_to_check or [b for b in workspace.Blobs() if b not in ignore]
                results.append({b: workspace.FetchBlob(b) for b in names})
        finally:
            workspace.ResetWorkspace()
            workspace.SwitchWorkspace(old)
        return all(np.allclose(np.asarray(r[b]), np.asarray(results[0][b]), atol=self._threshold,
                               rtol=self._threshold, equal_nan=True)
                   for r in results[1:] for b in results[0])
