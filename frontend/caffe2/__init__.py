"""The ``caffe2`` compatibility package: ``from caffe2.python import core, workspace`` and
``from caffe2.proto import caffe2_pb2`` give netjit's own modules (the same module objects, so
state such as the current workspace is shared).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys


# Caffe2 modules that live under another name here.
_RENAMED = {
    "caffe2.python.modeling.initializers": "netjit.initializers",
    "caffe2.python.modeling.parameter_info": "netjit.initializers",
    "caffe2.python.modeling.gradient_clipping": "netjit.gradient_clipping",
    "caffe2.python.modeling.net_modifier": "netjit.gradient_clipping",
}


def _target(fullname: str) -> str | None:
    if fullname in _RENAMED:
        return _RENAMED[fullname]
    parts = fullname.split(".")
    # caffe2.python.predictor is a real package (its own directory): aliasing it to the module
    # netjit.predictor would make its submodules (predictor_exporter, ...) unimportable.
    if parts[:2] == ["caffe2", "python"] and len(parts) == 3 and parts[2] != "predictor":
        return "netjit." + parts[2]
    # Submodules of an aliased package (caffe2.python.models.resnet -> netjit.models.resnet): the
    # same module objects, not second copies found on the package's __path__.
    if parts[:2] == ["caffe2", "python"] and len(parts) > 3 and parts[2] not in ("predictor", "modeling"):
        return "netjit." + ".".join(parts[2:])
    if parts[:3] == ["caffe2", "python", "predictor"] and len(parts) == 4:
        return "netjit." + parts[3]
    if parts[:2] == ["caffe2", "proto"] and len(parts) == 3:
        return "netjit.proto." + parts[2]
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        pass  # the target module is already executed


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        name = _target(fullname)
        if name is None or importlib.util.find_spec(name) is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(name))


if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder())
