"""Caffe2's ``dyndep``: load a C++ operator library (``.so``) into the op registry.

netjit's operators live in its own registry (compiler/ops); it cannot load Caffe2's C++ libraries,
which were built against Caffe2's C++ runtime. So:

- ``InitOpsLibrary(path)`` of a file that exists raises ``RuntimeError`` naming the path and saying
  why, instead of failing later with "unknown operator";
- of a path that does not exist (Caffe2 scripts name internal buck targets such as
  ``"@/caffe2/caffe2/contrib/gloo:gloo_ops"``), it prints that the path is ignored and returns,
  as Caffe2 did, so such scripts still import.

    from caffe2.python import dyndep
    dyndep.InitOpsLibrary("@/caffe2/caffe2/distributed:file_store_handler_ops")   # prints, returns
"""
from __future__ import annotations

import os

_IMPORTED_DYNDEPS: set[str] = set()


class OpsLibraryError(RuntimeError):
    """A C++ operator library that netjit cannot load."""


def InitOpsLibrary(name: str) -> None:
    """Load a C++ op library: report a missing path (and return); refuse an existing one."""
    if not os.path.exists(name):
        print(f"Ignoring {name} as it is not a valid file.")
        return
    kind = "directory" if os.path.isdir(name) else "file"
    raise OpsLibraryError(
        f"cannot load the C++ operator library {os.path.abspath(name)!r} ({kind}): netjit runs Caffe2 "
        f"operators from its own registry and cannot load libraries built against Caffe2's C++ runtime. "
        f"Register the ops you need as Python ops (core.Net.Python) or as netjit registry records "
        f"(compiler/ops, see README 'Adding an operator').")


def GetImportedOpsLibraries() -> set[str]:
    """The op libraries loaded so far (always empty here: none can be loaded)."""
    return set(_IMPORTED_DYNDEPS)
