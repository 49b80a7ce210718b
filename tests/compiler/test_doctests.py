"""The ``>>>`` examples in netjit's docstrings run, one test per module that has any.

Collected here (not with ``--doctest-modules``) because the package directories are mapped onto
import names (``compiler/`` is ``netjit.compiler``): pytest would import the files a second time
under their folder names, and the op registry would register every op twice.
"""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("netjit", "netjit.compiler", "netjit.runtime", "netjit.proto")
# The caffe2.* spellings are aliases of netjit's own modules: their docstrings run under netjit.*.
SKIP_PREFIXES = ("netjit.caffe2",)
OPTIONAL = ("mpi4py", "lmdb", "graphviz", "onnx", "torch", "onnxruntime")


def _module_names() -> list[str]:
    names: list[str] = []
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.walk_packages(pkg.__path__, package + "."):
            if not info.name.startswith(SKIP_PREFIXES) and info.name not in names:
                names.append(info.name)
    return sorted(set(names))


def _with_examples(names: list[str]) -> list[str]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            if (err.name or "").split(".")[0] in OPTIONAL:
                continue   # an optional dependency's module; its own tests say what is missing
            raise
        if any(t.examples for t in finder.find(module)):
            found.append(name)
    return found


MODULES = _with_examples(_module_names())


def test_docstring_examples_were_found():
    # The registry's and the compiler's examples at least: a collection bug must not pass silently.
    assert {"netjit.compiler.ops.registry", "netjit.compiler.api", "netjit.compiler.strict"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=False,
                             verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed " \
                               f"(run: python -m doctest -v on it, or pytest -s for the report above)"
