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

__all__ = ["core", "workspace", "__version__"]
