"""``workspace.Predictor(init_net, predict_net)``: run the init net once, then predict repeatedly.

Each net may be a NetDef, a ``core.Net``, serialized bytes (binary or text format) or a path to a
``.pb``/``.pbtxt`` file; bytes that are not a NetDef fail with an error naming which net it was.
Python ops whose code is pickled inside the nets run only with ``allow_pickled_code=True`` (or
``workspace.AllowPickledPythonOps(True)``); the check happens before the init net runs.

>>> # p = Predictor(init_net, predict_net); probs, = p.run([images])
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

import os

from netjit.compiler.ops.python_op import allow_pickled_code_in, check_consent
from netjit.compiler.runner import make_runner
from netjit.core_plan import as_net_def
from netjit.proto import caffe2_pb2
from netjit.proto.io import ProtoFormatError, check_net_names, load_net, parse_net_bytes
from netjit.runtime.errors import NetJitError
from netjit.runtime.workspace import REGISTRY, Workspace


class PredictorNetError(NetJitError, ValueError):
    """An init or predict net that cannot be read (the message says which one, and why)."""


def _read_net(net: Any, role: str) -> caffe2_pb2.NetDef:
    try:
        if isinstance(net, (str, os.PathLike)) and os.path.isfile(net):
            return load_net(net)
        if isinstance(net, (bytes, bytearray, str)):
            return parse_net_bytes(bytes(net) if not isinstance(net, str) else net, source=f"{role} bytes")
        return as_net_def(net)
    except ProtoFormatError as err:
        raise PredictorNetError(f"Predictor: the {role} is not a valid NetDef ({err})") from None
    except (TypeError, OSError) as err:
        raise PredictorNetError(f"Predictor: cannot read the {role}: {err}") from None


class Predictor:
    """Parameters live in a child workspace of the current one; ``run`` binds inputs to the predict
    net's external inputs (positionally for a list, by name for a dict) and returns its outputs."""

    def __init__(self, init_net: Any, predict_net: Any, parent: Workspace | None = None,
                 allow_pickled_code: bool = False):
        self.init_net = _read_net(init_net, "init_net")
        self.predict_net = _read_net(predict_net, "predict_net")
        parent = parent or REGISTRY.current
        # Both nets are checked before anything runs: the init net is where a payload would go.
        check_net_names(self.init_net)
        check_net_names(self.predict_net)
        check_consent(self.init_net, parent, allow=allow_pickled_code)
        check_consent(self.predict_net, parent, allow=allow_pickled_code)
        self.ws = Workspace(f"{parent.name}/predictor", parent.root_folder, parent=parent)
        if allow_pickled_code:
            allow_pickled_code_in(self.ws)
        make_runner(self.init_net, self.ws).run()
        for name in self.predict_net.external_input:
            if not self.ws.has(name):
                self.ws.feed(name, np.zeros((0,), np.float32))
        # Nothing outside sees this workspace, so the compiled predict net keeps its intermediates
        # private (fused away, in its arena); run() reads only the external outputs.
        self._runner = make_runner(self.predict_net, self.ws,
                                   private_outputs=list(self.predict_net.external_output) or None)
        self.inputs = list(self.predict_net.external_input)
        self.outputs = list(self.predict_net.external_output)

    def run(self, inputs: Sequence[Any] | dict[str, Any]) -> list[np.ndarray]:
        if isinstance(inputs, dict):
            for name, value in inputs.items():
                if name not in self.inputs:
                    raise NetJitError(f"predict net {self.predict_net.name!r} has no input {name!r} "
                                      f"(inputs: {self.inputs})")
                self.ws.feed(name, np.asarray(value, order="C"))
        else:
            if len(inputs) > len(self.inputs):
                raise NetJitError(f"predict net {self.predict_net.name!r} takes at most {len(self.inputs)} "
                                  f"inputs, got {len(inputs)}")
            for name, value in zip(self.inputs, inputs):
                self.ws.feed(name, np.asarray(value, order="C"))
        self._runner.run()
        return [np.array(self.ws.get(name), copy=True) for name in self.outputs]
