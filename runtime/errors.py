"""Errors a run raises. Each names the net, the op index and type, and the blob involved.

Every netjit error is a ``RuntimeError``, as Caffe2's enforce failures were, so Caffe2 scripts that
``except RuntimeError`` keep working; errors that Caffe2 scripts catch as ``KeyError`` (a missing
blob) are ``KeyError`` too.

>>> issubclass(OpError, RuntimeError) and issubclass(MissingBlobError, KeyError)
True
"""
from __future__ import annotations


class NetJitError(RuntimeError):
    """Base class of netjit's own errors."""


class InternalError(NetJitError):
    """An internal invariant did not hold (a netjit bug, not the user's): the message says what and
    where, and asks for a report instead of surfacing as a bare AssertionError."""


class OpError(NetJitError):
    """An op failed (construction or run). ``str()`` reads as one sentence a user can act on."""

    def __init__(self, message: str, *, net: str | None = None, index: int | None = None,
                 op_type: str | None = None, blob: str | None = None):
        self.net, self.index, self.op_type, self.blob = net, index, op_type, blob
        self.detail = message
        where = []
        if net is not None:
            where.append(f"net {net!r}")
        if index is not None:
            where.append(f"op #{index}")
        if op_type is not None:
            where.append(f"({op_type})")
        head = " ".join(where)
        tail = f" [blob {blob!r}]" if blob is not None and f"{blob!r}" not in message else ""
        super().__init__(f"{head}: {message}{tail}" if head else f"{message}{tail}")


class BadNameError(OpError, ValueError):
    """A net, blob or op name that is not valid UTF-8 text (protobuf hands such fields back as bytes)."""


class PickledCodeError(OpError):
    """A model file holds code (a pickled Python-op builder) and the user has not opted in."""


class MissingBlobError(OpError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return Exception.__str__(self)


class BlobNotFound(NetJitError, KeyError):
    """FetchBlob of a name the workspace does not hold."""

    def __str__(self) -> str:
        return Exception.__str__(self)
