"""Blobs <-> Caffe2's wire records (TensorProto, BlobProto), byte-compatible with real Caffe2.

A tensor is stored as TensorProto with its values in the typed field Caffe2 uses for its
DataType (bool/int8/int16/uint8/uint16 and the raw bits of float16 all go to ``int32_data``;
BYTE to ``byte_data``; strings to ``string_data``). Saving a blob to a DB splits a tensor into
records of ``chunk_size`` elements keyed ``<name>#%<chunk>``, each carrying the full dims and a
``segment`` saying which flat range it holds; loading merges them back by segment.

>>> import numpy as np
>>> recs = serialize_blob_records("w", np.arange(5, dtype=np.float32), chunk_size=2)
>>> [k for k, _ in recs]
['w#%0', 'w#%1', 'w#%2']
>>> asm = BlobAssembler()
>>> [asm.add(blob_name_from_key(k), parse_blob_proto(v)) for k, v in recs]   # True: the blob is complete
[False, False, True]
>>> asm.finish()["w"]
array([0., 1., 2., 3., 4.], dtype=float32)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError

from netjit.proto import caffe2_pb2
from netjit.runtime.errors import NetJitError

DT = caffe2_pb2.TensorProto
CHUNK_SIZE = 1_000_000          # Caffe2's caffe2_tensor_chunk_size default, in elements
NO_CHUNKING = -1                # chunk_size value meaning "one record, whatever the size"
CHUNK_ID_SEPARATOR = "#%"
TENSOR_TYPE = "Tensor"
STRING_TYPE = "std::string"
DBREADER_TYPE = "DBReader"

# DataType -> numpy dtype of the deserialized tensor (BYTE reads back as uint8; STRING as bytes objects).
DTYPE_OF: dict[int, np.dtype] = {
    DT.FLOAT: np.dtype(np.float32), DT.INT32: np.dtype(np.int32), DT.BYTE: np.dtype(np.uint8),
    DT.STRING: np.dtype(object), DT.BOOL: np.dtype(np.bool_), DT.UINT8: np.dtype(np.uint8),
    DT.INT8: np.dtype(np.int8), DT.UINT16: np.dtype(np.uint16), DT.INT16: np.dtype(np.int16),
    DT.INT64: np.dtype(np.int64), DT.FLOAT16: np.dtype(np.float16), DT.DOUBLE: np.dtype(np.float64),
    DT.UNDEFINED: np.dtype(object),
}
# numpy dtype -> DataType when serializing. uint8 is UINT8 (Caffe2's type map), never BYTE.
DATATYPE_OF: dict[np.dtype, int] = {
    np.dtype(np.float32): DT.FLOAT, np.dtype(np.int32): DT.INT32, np.dtype(np.bool_): DT.BOOL,
    np.dtype(np.uint8): DT.UINT8, np.dtype(np.int8): DT.INT8, np.dtype(np.uint16): DT.UINT16,
    np.dtype(np.int16): DT.INT16, np.dtype(np.int64): DT.INT64, np.dtype(np.float16): DT.FLOAT16,
    np.dtype(np.float64): DT.DOUBLE, np.dtype(object): DT.STRING,
}
# DataTypes whose values travel in int32_data.
_INT32_CARRIED = frozenset({DT.INT32, DT.BOOL, DT.UINT8, DT.INT8, DT.UINT16, DT.INT16})


class SerializationError(NetJitError):
    """A blob that cannot be serialized, or a record that does not decode to a valid blob."""


def _type_name(data_type: int) -> str:
    try:
        return DT.DataType.Name(data_type)
    except ValueError:
        return str(data_type)


# --------------------------------------------------------------------------------------------
# numpy <-> TensorProto
# --------------------------------------------------------------------------------------------
def _as_tensor_array(value: Any, name: str) -> np.ndarray:
    """The numpy array a tensor blob holds; text arrays become arrays of bytes objects."""
    if hasattr(value, "copy_to_host") and not isinstance(value, np.ndarray):
        value = value.copy_to_host()   # a device array (numba.cuda): serialize its host copy
    arr = np.asarray(value)
    if arr.dtype.kind in "SU":
        flat = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in arr.reshape(-1).tolist()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        arr = out.reshape(arr.shape)
    if arr.dtype not in DATATYPE_OF:
        raise SerializationError(f"blob {name!r}: dtype {arr.dtype} has no Caffe2 DataType "
                                 f"(supported: {', '.join(sorted(str(d) for d in DATATYPE_OF))})")
    return arr


def _string_items(flat: np.ndarray, name: str) -> list[bytes]:
    items = []
    for s in flat.tolist():
        if isinstance(s, bytes):
            items.append(s)
        elif isinstance(s, str):
            items.append(s.encode("utf-8"))
        else:
            raise SerializationError(f"blob {name!r}: an object tensor may only hold str/bytes "
                                     f"(found {type(s).__name__})")
    return items


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _merge_packed_fixed(tp: caffe2_pb2.TensorProto, field_number: int, values: np.ndarray, wire: str) -> None:
    # Packed fixed-width fields (float, double) are the raw little-endian values on the wire, so
    # parsing them in is several times faster than appending a Python list element by element.
    raw = values.astype(wire, copy=False).tobytes()
    tp.MergeFromString(_varint(field_number << 3 | 2) + _varint(len(raw)) + raw)


def array_to_tensor_proto(value: Any, name: str = "", begin: int = 0, end: int | None = None,
                          set_segment: bool = True) -> caffe2_pb2.TensorProto:
    """A TensorProto holding elements [begin, end) of ``value`` (flat order) with its full dims.

    >>> array_to_tensor_proto(np.array([True, False])).int32_data[:]
    [1, 0]
    """
    arr = _as_tensor_array(value, name)
    size = arr.size
    end = size if end is None else min(end, size)
    if not 0 <= begin <= end:
        raise SerializationError(f"blob {name!r}: bad chunk [{begin}, {end}) of a {size}-element tensor")
    tp = caffe2_pb2.TensorProto()
    tp.dims.extend(int(d) for d in arr.shape)
    data_type = DATATYPE_OF[arr.dtype]
    tp.data_type = data_type
    if set_segment:
        tp.segment.begin = begin
        tp.segment.end = end
    chunk = np.ascontiguousarray(arr).reshape(-1)[begin:end]
    if data_type == DT.FLOAT and chunk.size:
        _merge_packed_fixed(tp, DT.FLOAT_DATA_FIELD_NUMBER, chunk, "<f4")
    elif data_type == DT.DOUBLE and chunk.size:
        _merge_packed_fixed(tp, DT.DOUBLE_DATA_FIELD_NUMBER, chunk, "<f8")
    elif data_type in (DT.FLOAT, DT.DOUBLE):
        pass            # an empty chunk has no values to carry
    elif data_type == DT.INT64:
        tp.int64_data.extend(chunk.tolist())
    elif data_type == DT.FLOAT16:
        # Caffe2 stores a half's raw 16-bit pattern in int32_data (fp16-as-bytes flag off).
        tp.int32_data.extend(chunk.view(np.uint16).astype(np.int32).tolist())
    elif data_type in _INT32_CARRIED:
        tp.int32_data.extend(chunk.astype(np.int32).tolist())
    else:  # STRING
        tp.string_data.extend(_string_items(chunk, name))
    if name:
        tp.name = name
    return tp


@dataclass
class TensorChunk:
    """One decoded TensorProto: the full tensor's shape and dtype, and the flat range it carries."""
    shape: tuple[int, ...]
    dtype: np.dtype
    begin: int
    end: int
    values: np.ndarray          # 1-D, end - begin elements

    @property
    def total(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def _expect(count: int, want: int, field_name: str, what: str) -> None:
    if count != want:
        raise SerializationError(f"{what}: {field_name} holds {count} value(s) but the segment needs {want}")


def decode_tensor_chunk(tp: caffe2_pb2.TensorProto, what: str = "tensor") -> TensorChunk:
    """Decode one TensorProto (a whole tensor or a segment of one), checking every count."""
    if any(d < 0 for d in tp.dims):
        raise SerializationError(f"{what}: negative dimension in dims {list(tp.dims)}")
    shape = tuple(int(d) for d in tp.dims)
    total = int(np.prod(shape, dtype=np.int64))
    data_type = tp.data_type
    if not tp.HasField("data_type"):
        # proto2 enums are closed: a DataType this schema lacks parses as an unknown field and
        # data_type reads as the default FLOAT. Name the real value instead of misreading it.
        for unknown in unknown_fields.UnknownFieldSet(tp):
            if unknown.field_number == 2:
                raise SerializationError(f"{what}: unknown data_type {unknown.data}")
    if data_type not in DTYPE_OF:
        raise SerializationError(f"{what}: unknown data_type {data_type}")
    if tp.HasField("segment"):
        begin, end = int(tp.segment.begin), int(tp.segment.end)
        if not 0 <= begin <= end <= total:
            raise SerializationError(f"{what}: segment [{begin}, {end}) lies outside a {total}-element "
                                     f"tensor of dims {list(shape)}")
    else:
        begin, end = 0, total
    n = end - begin
    dtype = DTYPE_OF[data_type]
    label = f"{what} ({_type_name(data_type)})"
    if data_type == DT.FLOAT:
        _expect(len(tp.float_data), n, "float_data", label)
        values = np.array(tp.float_data, dtype=np.float32)
    elif data_type == DT.DOUBLE:
        _expect(len(tp.double_data), n, "double_data", label)
        values = np.array(tp.double_data, dtype=np.float64)
    elif data_type == DT.INT64:
        _expect(len(tp.int64_data), n, "int64_data", label)
        values = np.array(tp.int64_data, dtype=np.int64)
    elif data_type == DT.FLOAT16:
        if len(tp.int32_data) == 0 and n > 0 and len(tp.byte_data) == 2 * n:
            # Written with Caffe2's fp16-as-bytes flag: native-order 16-bit patterns in byte_data.
            values = np.frombuffer(tp.byte_data, dtype=np.uint16).view(np.float16).copy()
        else:
            _expect(len(tp.int32_data), n, "int32_data", label)
            values = np.array(tp.int32_data, dtype=np.int32).astype(np.uint16).view(np.float16)
    elif data_type in _INT32_CARRIED:
        _expect(len(tp.int32_data), n, "int32_data", label)
        values = np.array(tp.int32_data, dtype=np.int32).astype(dtype)
    elif data_type == DT.BYTE:
        _expect(len(tp.byte_data), n, "byte_data", label)
        values = np.frombuffer(tp.byte_data, dtype=np.uint8).copy()
    elif data_type == DT.STRING:
        _expect(len(tp.string_data), n, "string_data", label)
        values = np.empty(n, dtype=object)
        values[:] = list(tp.string_data)
    else:  # UNDEFINED: each element is itself a serialized BlobProto
        _expect(len(tp.string_data), n, "string_data", label)
        values = np.empty(n, dtype=object)
        values[:] = [deserialize_blob(s) for s in tp.string_data]
    return TensorChunk(shape, dtype, begin, end, values)


def tensor_proto_to_array(tp: caffe2_pb2.TensorProto) -> np.ndarray:
    """A whole tensor from one TensorProto (its segment, if any, must cover every element).

    >>> tensor_proto_to_array(array_to_tensor_proto(np.eye(2, dtype=np.int8))).tolist()
    [[1, 0], [0, 1]]
    """
    what = f"tensor {tp.name!r}" if tp.name else "tensor"
    chunk = decode_tensor_chunk(tp, what)
    if (chunk.begin, chunk.end) != (0, chunk.total):
        raise SerializationError(f"{what}: holds only elements [{chunk.begin}, {chunk.end}) of "
                                 f"{chunk.total}; merge its chunks with BlobAssembler")
    return chunk.values.reshape(chunk.shape)


# --------------------------------------------------------------------------------------------
# blob <-> BlobProto records
# --------------------------------------------------------------------------------------------
def _is_dbreader(value: Any) -> bool:
    return hasattr(value, "to_dbreader_proto")


def serialize_blob_records(name: str, value: Any, chunk_size: int = CHUNK_SIZE) -> list[tuple[str, bytes]]:
    """The (key, BlobProto bytes) records Caffe2's Save writes for blob ``name``.

    A tensor gives one record per ``chunk_size`` elements (at least one, even when empty), keyed
    ``<name>#%<chunk index>``; a string gives one record keyed ``<name>``; a DB reader one record
    holding a DBReaderProto. ``chunk_size=NO_CHUNKING`` (-1) writes a tensor as a single record.
    """
    if value is None:
        raise SerializationError(f"blob {name!r} has no value yet (it was created but never written)")
    if isinstance(value, (bytes, str)):
        content = value.encode("utf-8") if isinstance(value, str) else value
        proto = caffe2_pb2.BlobProto(name=name, type=STRING_TYPE, content=content)
        return [(name, proto.SerializeToString())]
    if _is_dbreader(value):
        proto = caffe2_pb2.BlobProto(name=name, type=DBREADER_TYPE,
                                     content=value.to_dbreader_proto(name).SerializeToString())
        return [(name, proto.SerializeToString())]
    if not isinstance(value, (np.ndarray, np.generic)) and not hasattr(value, "copy_to_host"):
        raise SerializationError(f"blob {name!r}: no serializer for a {type(value).__name__} "
                                 f"(only tensors, strings and DB readers can be saved)")
    arr = _as_tensor_array(value, name)
    if chunk_size == NO_CHUNKING or chunk_size == 0:
        chunk_size = arr.size + 1
    if chunk_size < 0:
        raise SerializationError(f"blob {name!r}: chunk size must be positive or -1, got {chunk_size}")
    records = []
    for begin in range(0, max(arr.size, 1), chunk_size):
        proto = caffe2_pb2.BlobProto(name=name, type=TENSOR_TYPE)
        proto.tensor.CopyFrom(array_to_tensor_proto(arr, name, begin, begin + chunk_size))
        records.append((f"{name}{CHUNK_ID_SEPARATOR}{begin // chunk_size}", proto.SerializeToString()))
    return records


def serialize_blob(name: str, value: Any) -> bytes:
    """``workspace.SerializeBlob``: one BlobProto, a tensor in a single segment [0, numel)."""
    return serialize_blob_records(name, value, chunk_size=NO_CHUNKING)[0][1]


def parse_blob_proto(data: bytes, where: str = "record") -> caffe2_pb2.BlobProto:
    """Parse BlobProto bytes, with an error that says which record was corrupt."""
    proto = caffe2_pb2.BlobProto()
    try:
        proto.ParseFromString(bytes(data))
    except DecodeError as err:
        raise SerializationError(f"{where}: not a valid BlobProto ({len(data)} bytes): {err}") from None
    return proto


def deserialize_blob(data: bytes | caffe2_pb2.BlobProto, where: str = "record") -> Any:
    """``workspace.DeserializeBlob``: the value of one complete BlobProto record."""
    proto = data if isinstance(data, caffe2_pb2.BlobProto) else parse_blob_proto(data, where)
    asm = BlobAssembler()
    asm.add(proto.name, proto, where=where)
    return asm.finish()[proto.name]


def blob_name_from_key(key: str | bytes) -> str:
    """A DB key's blob name: everything before the first ``#%`` (``w#%3`` -> ``w``)."""
    if isinstance(key, bytes):
        key = key.decode("utf-8", errors="surrogateescape")
    cut = key.find(CHUNK_ID_SEPARATOR)
    return key if cut < 0 else key[:cut]


def _dbreader_from_content(content: bytes, where: str) -> Any:
    from netjit.runtime.db import DBReader   # db imports nothing from here; import late anyway
    proto = caffe2_pb2.DBReaderProto()
    try:
        proto.ParseFromString(content)
    except DecodeError as err:
        raise SerializationError(f"{where}: DBReader content is not a DBReaderProto: {err}") from None
    return DBReader.from_dbreader_proto(proto)


@dataclass
class _TensorState:
    shape: tuple[int, ...]
    dtype: np.dtype
    data: np.ndarray
    filled: int = 0
    seen: set[int] = field(default_factory=set)


class BlobAssembler:
    """Merges the records of one or more blobs back into values (what Load does per DB).

    Tensor chunks may arrive in any order; each must agree on dims and data type, no segment may
    arrive twice, and ``finish()`` requires every element unless ``allow_incomplete``.
    """

    def __init__(self, allow_incomplete: bool = False):
        self.allow_incomplete = allow_incomplete
        self._tensors: dict[str, _TensorState] = {}
        self._values: dict[str, Any] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._tensors or name in self._values

    def is_complete(self, name: str) -> bool:
        if name in self._values:
            return True
        state = self._tensors.get(name)
        return state is not None and state.filled == state.data.size

    def add(self, name: str, proto: caffe2_pb2.BlobProto, where: str = "record") -> bool:
        """Add one record for blob ``name``; True when that blob is now complete."""
        if proto.HasField("tensor") and proto.type in ("", TENSOR_TYPE):
            self._add_tensor(name, proto.tensor, f"{where} of blob {name!r}")
            return self.is_complete(name)
        if proto.type == TENSOR_TYPE:
            raise SerializationError(f"{where} of blob {name!r}: type 'Tensor' but no tensor field")
        if proto.HasField("content_num_chunks") and proto.content_num_chunks > 1:
            raise SerializationError(f"{where} of blob {name!r}: chunked '{proto.type}' content "
                                     f"({proto.content_num_chunks} chunks) is not supported")
        if name in self:
            raise SerializationError(f"{where}: blob {name!r} appears twice")
        if proto.type == STRING_TYPE:
            self._values[name] = bytes(proto.content)
        elif proto.type == DBREADER_TYPE:
            self._values[name] = _dbreader_from_content(proto.content, f"{where} of blob {name!r}")
        elif proto.HasField("qtensor"):
            raise SerializationError(f"{where} of blob {name!r}: quantized tensors (QTensorProto) "
                                     f"are not supported")
        else:
            kind = proto.type or "(no type, no tensor)"
            raise SerializationError(f"{where} of blob {name!r}: no deserializer for blob type {kind!r}")
        return True

    def _add_tensor(self, name: str, tp: caffe2_pb2.TensorProto, where: str) -> None:
        if name in self._values:
            raise SerializationError(f"{where}: blob {name!r} appears twice")
        chunk = decode_tensor_chunk(tp, where)
        state = self._tensors.get(name)
        if state is None:
            fill: Any = b"" if chunk.dtype == object else 0
            data = np.full(chunk.total, fill, dtype=chunk.dtype)
            state = self._tensors[name] = _TensorState(chunk.shape, chunk.dtype, data)
        elif (state.shape, state.dtype) != (chunk.shape, chunk.dtype):
            raise SerializationError(f"{where}: chunk says dims {list(chunk.shape)} {chunk.dtype}, but an "
                                     f"earlier chunk said {list(state.shape)} {state.dtype}")
        if chunk.begin in state.seen:
            raise SerializationError(f"{where}: the chunk starting at element {chunk.begin} occurs twice")
        state.seen.add(chunk.begin)
        state.data[chunk.begin:chunk.end] = chunk.values
        state.filled += chunk.end - chunk.begin
        if state.filled > state.data.size:
            raise SerializationError(f"{where}: chunks hold {state.filled} elements but the tensor "
                                     f"has only {state.data.size}")

    def incomplete(self) -> dict[str, tuple[int, int]]:
        """Tensors still missing elements: name -> (elements received, elements expected)."""
        return {n: (s.filled, s.data.size) for n, s in self._tensors.items() if s.filled != s.data.size}

    def finish(self) -> dict[str, Any]:
        """Every blob seen, by name; raises if a tensor is incomplete (unless allowed)."""
        missing = self.incomplete()
        if missing and not self.allow_incomplete:
            desc = ", ".join(f"{n!r} ({got} of {want} elements)" for n, (got, want) in missing.items())
            raise SerializationError(f"incomplete tensor data for blob(s) {desc}; "
                                     f"a chunk record is missing (use allow_incomplete=1 to accept)")
        out = dict(self._values)
        for name, state in self._tensors.items():
            out[name] = state.data.reshape(state.shape)
        return out


# Names the front end uses (FeedBlob of a TensorProto, utils.NumpyArrayToCaffe2Tensor).
tensor_proto_to_numpy = tensor_proto_to_array
numpy_to_tensor_proto = array_to_tensor_proto
