"""``netjit warmup`` writes the bytecode of netjit's own modules (prebuild.byte_compile)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from netjit.compiler.codegen import prebuild


def test_byte_compile_writes_current_bytecode():
    import netjit.compiler.ops.registry as registry

    source = Path(registry.__file__)
    if not os.access(source.parent, os.W_OK):
        pytest.skip("netjit is installed read-only here")
    cached = Path(importlib.util.cache_from_source(str(source)))
    assert prebuild.byte_compile() >= 1
    assert cached.exists()
    # The pyc records the source's mtime and size: importlib uses it instead of recompiling.
    header = cached.read_bytes()[:16]
    assert int.from_bytes(header[8:12], "little") == int(source.stat().st_mtime) & 0xFFFFFFFF
    assert int.from_bytes(header[12:16], "little") == source.stat().st_size & 0xFFFFFFFF
