"""netjit: run and compile Caffe2 networks on modern Python.

>>> from netjit import core, workspace
>>> net = core.Net("demo")
"""
from __future__ import annotations

import importlib

__all__ = ["compile", "core", "workspace", "__version__"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("netjit")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+src"


def __getattr__(name: str):
    # core/workspace (the op registry) and __version__ (package metadata, ~30 ms) resolve on first
    # use, so that a serving process importing only netjit.aot (a bundle loader) stays light.
    if name in ("core", "workspace"):
        return importlib.import_module(f"netjit.{name}")
    if name == "__version__":
        globals()["__version__"] = value = _version()
        return value
    # netjit.compile pulls in numba; resolve it on first use so `import netjit` stays light.
    if name == "compile":
        from netjit.compiler.api import compile as _compile
        return _compile
    raise AttributeError(f"module 'netjit' has no attribute {name!r}")
