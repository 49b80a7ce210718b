"""Reading and writing Caffe2 protobuf files: binary ``.pb`` and text ``.pbtxt``.

Reading auto-detects the format: the file extension says which to try first, the content decides
when the extension says nothing, and the other format is tried before giving up. A file that is
neither raises :class:`ProtoFormatError` naming the file and the first thing wrong with it (for a
binary file: which field, at which byte, is cut off or corrupt). Writes are atomic: the bytes go
to a temporary file in the same directory that then replaces the target, so a failed write never
leaves a half-written model behind.

>>> from netjit.proto import caffe2_pb2
>>> net = caffe2_pb2.NetDef(name="tiny")
>>> net.op.add(type="Relu", input=["X"], output=["Y"]).type
'Relu'
>>> parse_net_bytes(net.SerializeToString()) == net
True
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from netjit.proto import caffe2_pb2
from netjit.runtime.errors import BadNameError, NetJitError

M = TypeVar("M", bound=Message)
PathLike = str | os.PathLike

#: Extensions read and written as protobuf text format; everything else is binary.
TEXT_SUFFIXES = frozenset({".pbtxt", ".prototxt", ".pbtext", ".textproto", ".txtpb", ".txt"})
BINARY_SUFFIXES = frozenset({".pb", ".bin", ".binpb", ".protobin"})


class ProtoFormatError(NetJitError, DecodeError, ValueError):
    """A file or byte string that is not a valid serialized message of the expected type.

    Subclasses protobuf's ``DecodeError`` so code written against plain protobuf still catches it,
    and netjit's error base (a ``RuntimeError``) like every error a user's file can cause.
    """

    def __init__(self, source: str, type_name: str, reason: str) -> None:
        self.source = source
        self.type_name = type_name
        self.reason = reason
        super().__init__(f"{source}: not a valid {type_name}: {reason}")


def is_text_path(path: PathLike) -> bool:
    """Whether ``path``'s extension names the protobuf text format.

    >>> is_text_path("predict_net.pbtxt"), is_text_path("init_net.pb")
    (True, False)
    """
    return Path(path).suffix.lower() in TEXT_SUFFIXES


def _format_hint(path: PathLike | None) -> str | None:
    if path is None:
        return None
    suffix = Path(path).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in BINARY_SUFFIXES:
        return "binary"
    return None


_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")


def _looks_like_text(data: bytes) -> bool:
    # Binary protobuf almost always holds control bytes (tags and lengths below 0x20); valid text
    # format is UTF-8 with no control characters besides whitespace (\t \n \v \f \r).
    if not data or _CONTROL_BYTES.search(data):
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _has_unknown_fields(message: Message) -> bool:
    # Comparing sizes before and after discarding finds unknown fields at any depth.
    stripped = type(message)()
    stripped.CopyFrom(message)
    stripped.DiscardUnknownFields()
    return stripped.ByteSize() != message.ByteSize()


# --- binary diagnosis: only run after a parse failed, to say what is wrong and where -------------

class _WireProblem(Exception):
    pass


def _read_varint(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    start, value, shift = pos, 0, 0
    while True:
        if pos >= end:
            raise _WireProblem(f"truncated: {what} at byte {start} is cut off")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise _WireProblem(f"corrupt: {what} at byte {start} is a varint longer than 10 bytes")


def _check_wire(data: bytes, descriptor: Descriptor, pos: int, end: int, prefix: str) -> None:
    counts: dict[int, int] = {}
    while pos < end:
        tag_pos = pos
        tag, pos = _read_varint(data, pos, end, f"a field tag inside {prefix or 'the message'}")
        number, wire = tag >> 3, tag & 7
        field = descriptor.fields_by_number.get(number)
        label = f"{prefix}{field.name if field else f'<unknown field {number}>'}"
        if field is not None and field.is_repeated:
            label += f"[{counts.get(number, 0)}]"
        counts[number] = counts.get(number, 0) + 1
        if number == 0:
            raise _WireProblem(f"corrupt: field number 0 at byte {tag_pos}")
        if wire == 0:
            _, pos = _read_varint(data, pos, end, f"the value of {label}")
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise _WireProblem(f"truncated: {label} at byte {tag_pos} needs {size} bytes, "
                                   f"only {end - pos} remain")
            pos += size
        elif wire == 2:
            length, pos = _read_varint(data, pos, end, f"the length of {label}")
            if pos + length > end:
                raise _WireProblem(f"truncated: {label} at byte {tag_pos} declares {length} bytes, "
                                   f"only {end - pos} remain")
            if field is not None and field.type == FieldDescriptor.TYPE_MESSAGE:
                _check_wire(data, field.message_type, pos, pos + length, label + ".")
            pos += length
        elif wire in (3, 4):
            raise _WireProblem(f"corrupt: {label} at byte {tag_pos} uses the group encoding, "
                               f"which no Caffe2 message has")
        else:
            raise _WireProblem(f"corrupt: {label} at byte {tag_pos} has invalid wire type {wire}")


def _binary_reason(data: bytes, message_type: type[Message], error: Exception) -> str:
    try:
        _check_wire(data, message_type.DESCRIPTOR, 0, len(data), "")
    except _WireProblem as problem:
        return f"{problem} ({len(data)} bytes in all)"
    return str(error)


# --- parsing ----------------------------------------------------------------------------------

class _FormatFailure(Exception):
    pass


def _parse_binary(data: bytes, message_type: type[M]) -> M:
    message = message_type()
    try:
        message.ParseFromString(data)
    except DecodeError as error:
        raise _FormatFailure(_binary_reason(data, message_type, error)) from error
    missing = message.FindInitializationErrors()
    if missing:
        # Caffe2's C++ parser rejects these; say so here rather than at first use.
        raise _FormatFailure(f"missing required field(s): {', '.join(missing)}")
    return message


def _parse_text(data: bytes, message_type: type[M]) -> M:
    message = message_type()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _FormatFailure(f"not UTF-8 text (byte {error.start})") from error
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        # str(error) starts with "line:column : "; say it in words.
        detail = str(error)
        if error.GetLine() is not None and detail.startswith(f"{error.GetLine()}:"):
            detail = detail.split(" : ", 1)[-1]
            detail = f"line {error.GetLine()}, column {error.GetColumn()}: {detail}"
        raise _FormatFailure(detail) from error
    return message


_PARSERS = {"binary": _parse_binary, "text": _parse_text}
_FORMAT_WORDS = {"binary": "binary protobuf", "text": "protobuf text format"}


def parse_message(data: bytes | str, message_type: type[M], source: str = "<bytes>",
                  path_hint: PathLike | None = None) -> M:
    """Parse ``data`` as ``message_type`` in whichever encoding it is in (binary or text).

    ``source`` names the data in errors; ``path_hint``'s extension, if any, picks the format tried
    first. Raises :class:`ProtoFormatError` when neither encoding fits.

    >>> parse_message('name: "n" op { type: "Relu" }', caffe2_pb2.NetDef).op[0].type
    'Relu'
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    looks_text = _looks_like_text(data)
    first = _format_hint(path_hint) or ("text" if looks_text else "binary")
    other = "binary" if first == "text" else "text"
    failures: dict[str, str] = {}
    fallback: M | None = None
    for fmt in (first, other):
        try:
            message = _PARSERS[fmt](data, message_type)
        except _FormatFailure as failure:
            failures[fmt] = str(failure)
            continue
        if fmt == "binary" and looks_text and "text" not in failures and _has_unknown_fields(message):
            # Text that happens to decode as binary yields only unknown fields: prefer the text
            # reading if it works, and keep this one in case it does not.
            fallback = message
            continue
        return message
    if fallback is not None:
        return fallback
    reason = f"as {_FORMAT_WORDS[first]}: {failures[first]}"
    # The other format's complaint helps only when the content could plausibly be in it.
    if (other == "text") == looks_text:
        reason += f"; as {_FORMAT_WORDS[other]}: {failures[other]}"
    raise ProtoFormatError(source, message_type.DESCRIPTOR.full_name, reason)


def _shown(text: Any) -> str:
    return text.decode("utf-8", "backslashreplace") if isinstance(text, bytes) else str(text)


def check_net_names(net: caffe2_pb2.NetDef) -> None:
    """Raise :class:`BadNameError` (naming the net, op index and type) when a name field of ``net``
    or of a net nested in an argument is not valid UTF-8: protobuf returns such fields as bytes,
    which no blob name can be.

    >>> check_net_names(caffe2_pb2.NetDef(name="fine"))
    """
    name = _shown(net.name)

    def bad(what: str, value: Any, index: int | None = None, op_type: Any = None) -> BadNameError:
        return BadNameError(f"{what} {value!r} is not valid UTF-8 text", net=name, index=index,
                            op_type=None if op_type is None else _shown(op_type))

    for what in ("name", "type"):
        if isinstance(getattr(net, what), bytes):
            raise bad(f"the net's {what}", getattr(net, what))
    for what in ("external_input", "external_output"):
        for blob in getattr(net, what):
            if isinstance(blob, bytes):
                raise bad(f"{what} blob name", blob)
    for index, op in enumerate(net.op):
        check_op_names(op, index, name)


def check_op_names(op: caffe2_pb2.OperatorDef, index: int | None = None, net_name: str | None = None) -> None:
    """:func:`check_net_names` for one OperatorDef (``RunOperatorOnce``)."""
    def bad(what: str, value: Any) -> BadNameError:
        return BadNameError(f"{what} {value!r} is not valid UTF-8 text", net=net_name, index=index,
                            op_type=_shown(op.type))

    for what in ("type", "name", "engine"):
        if isinstance(getattr(op, what), bytes):
            raise bad(f"the op's {what}", getattr(op, what))
    for what in ("input", "output", "control_input"):
        for blob in getattr(op, what):
            if isinstance(blob, bytes):
                raise bad(f"{what} blob name", blob)
    for argument in op.arg:
        if isinstance(argument.name, bytes):
            raise bad("argument name", argument.name)
        if argument.HasField("n"):
            check_net_names(argument.n)
        for sub in argument.nets:
            check_net_names(sub)


def parse_net_bytes(data: bytes | str, source: str = "<bytes>") -> caffe2_pb2.NetDef:
    """A NetDef from binary or text-format bytes.

    >>> parse_net_bytes(b'name: "n"').name
    'n'
    """
    return parse_message(data, caffe2_pb2.NetDef, source=source)


def load_message(path: PathLike, message_type: type[M]) -> M:
    """Read ``path`` (binary or text, auto-detected) as ``message_type``.

    >>> from netjit.proto import metanet_pb2
    >>> load_message("model.pbtxt", metanet_pb2.MetaNetDef)  # doctest: +SKIP
    """
    data = Path(path).read_bytes()
    return parse_message(data, message_type, source=os.fspath(path), path_hint=path)


def load_net(path: PathLike) -> caffe2_pb2.NetDef:
    """Read a NetDef from a ``.pb`` or ``.pbtxt`` file (format auto-detected).

    >>> net = load_net("predict_net.pb")  # doctest: +SKIP
    """
    return load_message(path, caffe2_pb2.NetDef)


# --- writing ----------------------------------------------------------------------------------

def serialize_message(message: Message, text: bool = False) -> bytes:
    """The bytes of ``message`` in binary or text format (text is UTF-8)."""
    if text:
        return text_format.MessageToString(message).encode("utf-8")
    return message.SerializeToString()


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    The temporary file lives in the target's directory (``os.replace`` must not cross file
    systems); an existing file keeps its permission bits; a symlink's target is replaced, not the link.
    Temporary files of writers that were killed are removed by the next write (the DBs' naming and
    clean-up, runtime/db_base.py).
    """
    from netjit.runtime.db_base import clean_leftovers, release_temp, sibling_temp_path
    target = Path(os.path.realpath(path))
    clean_leftovers(str(target))
    while True:
        temp = sibling_temp_path(str(target), "tmp")
        try:
            # 0o666 through the umask, like a plain open(); mkstemp would force 0o600.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            release_temp(temp)
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():
            os.chmod(temp, stat.S_IMODE(target.stat().st_mode))
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    finally:
        release_temp(temp)


def _as_message(message: Any) -> Message:
    # core.Net and similar wrappers hand out their NetDef through .Proto().
    if not isinstance(message, Message) and hasattr(message, "Proto"):
        message = message.Proto()
    if not isinstance(message, Message):
        raise TypeError(f"expected a protobuf message or an object with .Proto(), got {type(message).__name__}")
    return message


def save_message(message: Any, path: PathLike, text: bool | None = None) -> None:
    """Write a message to ``path``; ``text=None`` picks text format for ``.pbtxt``-like names.

    >>> save_message(caffe2_pb2.PlanDef(name="p"), "plan.pbtxt")  # doctest: +SKIP
    """
    message = _as_message(message)
    if text is None:
        text = is_text_path(path)
    atomic_write_bytes(path, serialize_message(message, text=text))


def save_net(net: Any, path: PathLike, text: bool | None = None) -> None:
    """Write a NetDef (or a ``core.Net``) to ``path``, as text when the name ends in ``.pbtxt``.

    >>> save_net(caffe2_pb2.NetDef(name="n"), "net.pb")  # doctest: +SKIP
    """
    save_message(net, path, text=text)
