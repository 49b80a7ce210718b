"""netjit: run and compile Caffe2 networks on modern Python.

>>> from netjit import core, workspace
>>> net = core.Net("demo")
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("netjit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"

from netjit import core, workspace  # noqa: E402

__all__ = ["compile", "core", "workspace", "__version__"]


def __getattr__(name: str):
    # netjit.compile pulls in numba; resolve it on first use so `import netjit` stays light.
    if name == "compile":
        from netjit.compiler.api import compile as _compile
        return _compile
    raise AttributeError(f"module 'netjit' has no attribute {name!r}")
