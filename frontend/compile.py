"""``netjit.compile``: compile a Caffe2 net once, run it many times.

>>> import numpy as np
>>> from netjit import core
>>> from netjit.compile import compile
>>> net = core.Net("demo")
>>> y = net.Relu(["x"], ["y"])
>>> exe = compile(net, inputs={"x": np.zeros(3, np.float32)}, outputs=["y"])
>>> exe(x=np.array([-1.0, 0.5, 2.0], np.float32))["y"].tolist()
[0.0, 0.5, 2.0]
>>> "Fused(Relu)" in exe.explain()
True

See :func:`netjit.compiler.api.compile` for the arguments and :class:`CompiledNet` for
``run(ws)``, ``exe(**feeds)`` and ``explain()``.
"""
from __future__ import annotations

from netjit.compiler.api import CompiledNet, clear_cache, compile

__all__ = ["CompiledNet", "clear_cache", "compile"]
