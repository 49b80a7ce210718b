"""The operator registry. Importing this package registers every op module in it.

Modules other than the helpers below each hold a family of ops (one ``defop`` block per op), so a
new op is one block in one file and nothing else changes.
"""
from __future__ import annotations

import importlib
import pkgutil

_HELPERS = {"registry", "gradients", "common"}


def _load_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name not in _HELPERS and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_load_all()

from netjit.compiler.ops.registry import all_ops, has_op, lookup  # noqa: E402

__all__ = ["all_ops", "has_op", "lookup"]
