"""What both sides of ``netjit aot`` share without importing the compiler: the error type, and
parsing of ``--input`` shapes and bundle names.

>>> parse_input("data=1,3,224,224")
('data', (1, 3, 224, 224), 'float32')
"""
from __future__ import annotations

import re

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
DTYPES = ("float32", "float64", "int32", "int64", "uint8", "int8", "bool")


class AotError(ValueError):
    """A net that cannot be compiled ahead of time (names the net, op index and type)."""


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` -> (1, 3, 224, 224)."""
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip() != "")
    except ValueError as err:
        raise AotError(f"bad shape {text!r}: write comma-separated sizes like 1,3,224,224") from err
    if any(d < 0 for d in dims):
        raise AotError(f"bad shape {text!r}: sizes must not be negative")
    return dims


def parse_input(text: str) -> tuple[str, tuple[int, ...], str]:
    """``NAME=D0,D1,...[:DTYPE]`` (dtype float32 unless given) -> (name, shape, dtype)."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise AotError(f"bad --input {text!r}: write NAME=D0,D1,... (e.g. data=1,1,28,28 or ids=4,16:int64)")
    shape_text, _, dtype = rest.partition(":")
    dtype = dtype or "float32"
    if dtype not in DTYPES:
        raise AotError(f"bad --input {text!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return name, parse_shape(shape_text), dtype


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise AotError(f"bundle name {name!r} must be a C identifier (letters, digits, _; not starting with "
                       f"a digit): it prefixes every symbol of {name}.so")
    return name
