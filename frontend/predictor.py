"""``workspace.Predictor(init_net, predict_net)``: run the init net once, then predict repeatedly.

>>> # p = Predictor(init_net, predict_net); probs, = p.run([images])
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from netjit.compiler.runner import make_runner
from netjit.core_plan import as_net_def
from netjit.runtime.errors import NetJitError
from netjit.runtime.workspace import REGISTRY, Workspace


class Predictor:
    """Parameters live in a child workspace of the current one; ``run`` binds inputs to the predict
    net's external inputs (positionally for a list, by name for a dict) and returns its outputs."""

    def __init__(self, init_net: Any, predict_net: Any, parent: Workspace | None = None):
        self.init_net = as_net_def(init_net)
        self.predict_net = as_net_def(predict_net)
        parent = parent or REGISTRY.current
        self.ws = Workspace(f"{parent.name}/predictor", parent.root_folder, parent=parent)
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
                self.ws.feed(name, np.ascontiguousarray(value))
        else:
            if len(inputs) > len(self.inputs):
                raise NetJitError(f"predict net {self.predict_net.name!r} takes at most {len(self.inputs)} "
                                  f"inputs, got {len(inputs)}")
            for name, value in zip(self.inputs, inputs):
                self.ws.feed(name, np.ascontiguousarray(value))
        self._runner.run()
        return [np.array(self.ws.get(name), copy=True) for name in self.outputs]
