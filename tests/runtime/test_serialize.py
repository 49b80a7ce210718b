"""TensorProto/BlobProto serialization: every DataType in Caffe2's field, chunking, merging, errors."""
from __future__ import annotations

import random

import numpy as np
import pytest

from netjit.proto import caffe2_pb2
from netjit.runtime import serialize as S
from netjit.runtime.serialize import SerializationError

DT = caffe2_pb2.TensorProto

# (array, DataType Caffe2 stores it as, the typed field that carries its values)
CASES = [
    (np.array([[1.5, -2.25], [3.0, np.inf]], np.float32), DT.FLOAT, "float_data"),
    (np.array([1e300, -0.5, np.pi], np.float64), DT.DOUBLE, "double_data"),
    (np.array([[-(2 ** 31), 2 ** 31 - 1]], np.int32), DT.INT32, "int32_data"),
    (np.array([-(2 ** 63), 2 ** 63 - 1, 7], np.int64), DT.INT64, "int64_data"),
    (np.array([-32768, 32767, 0], np.int16), DT.INT16, "int32_data"),
    (np.array([-128, 127, 5], np.int8), DT.INT8, "int32_data"),
    (np.array([0, 255, 17], np.uint8), DT.UINT8, "int32_data"),
    (np.array([0, 65535, 300], np.uint16), DT.UINT16, "int32_data"),
    (np.array([[True, False], [False, True]]), DT.BOOL, "int32_data"),
    (np.array([1.0, -0.0, 65504.0, 6e-8, np.inf], np.float16), DT.FLOAT16, "int32_data"),
    (np.array([b"ab", b"", b"\x00\xff"], dtype=object), DT.STRING, "string_data"),
    (np.array(3.5, np.float32), DT.FLOAT, "float_data"),                  # 0-d
    (np.zeros((0, 3), np.int64), DT.INT64, "int64_data"),                 # empty
]


@pytest.mark.parametrize("arr,data_type,field", CASES, ids=lambda v: getattr(v, "dtype", v).__str__()[:12])
def test_tensor_proto_roundtrip_every_dtype(arr, data_type, field):
    tp = S.array_to_tensor_proto(arr, "t")
    assert tp.data_type == data_type
    assert list(tp.dims) == list(arr.shape)
    assert (tp.segment.begin, tp.segment.end) == (0, arr.size)
    assert len(getattr(tp, field)) == arr.size
    # Nothing leaks into the other typed fields.
    others = {"float_data", "double_data", "int32_data", "int64_data", "string_data"} - {field}
    assert all(len(getattr(tp, f)) == 0 for f in others) and not tp.byte_data
    back = S.tensor_proto_to_array(caffe2_pb2.TensorProto.FromString(tp.SerializeToString()))
    assert back.dtype == arr.dtype and back.shape == arr.shape
    if arr.dtype == object:
        assert back.tolist() == arr.tolist()
    else:
        np.testing.assert_array_equal(back, arr)


def test_values_are_stored_as_caffe2_stores_them():
    tp = S.array_to_tensor_proto(np.array([True, False, True]))
    assert list(tp.int32_data) == [1, 0, 1]
    # float16 travels as its raw bit pattern: 1.0 is 0x3C00, -2.0 is 0xC000.
    tp = S.array_to_tensor_proto(np.array([1.0, -2.0], np.float16))
    assert list(tp.int32_data) == [0x3C00, 0xC000]
    # numpy uint8 maps to UINT8 (int32_data), never to BYTE.
    tp = S.array_to_tensor_proto(np.array([200], np.uint8))
    assert tp.data_type == DT.UINT8 and list(tp.int32_data) == [200]
    # Text arrays become string tensors of UTF-8 bytes.
    tp = S.array_to_tensor_proto(np.array(["é", "x"]))
    assert tp.data_type == DT.STRING and list(tp.string_data) == ["é".encode(), b"x"]


def test_hand_written_protos_decode():
    byte = caffe2_pb2.TensorProto(dims=[2, 2], data_type=DT.BYTE, byte_data=bytes([1, 2, 3, 250]))
    out = S.tensor_proto_to_array(byte)
    assert out.dtype == np.uint8 and out.tolist() == [[1, 2], [3, 250]]
    # No segment, default data_type FLOAT.
    flt = caffe2_pb2.TensorProto(dims=[3], float_data=[1, 2, 3])
    assert S.tensor_proto_to_array(flt).tolist() == [1.0, 2.0, 3.0]
    # float16 written with Caffe2's fp16-as-bytes flag: bits in byte_data.
    half = np.array([0.5, -4.0], np.float16)
    fp16 = caffe2_pb2.TensorProto(dims=[2], data_type=DT.FLOAT16, byte_data=half.tobytes())
    np.testing.assert_array_equal(S.tensor_proto_to_array(fp16), half)
    # UNDEFINED: each element is a serialized BlobProto.
    undef = caffe2_pb2.TensorProto(dims=[2], data_type=DT.UNDEFINED,
                                   string_data=[S.serialize_blob("a", b"x"), S.serialize_blob("b", b"yz")])
    assert S.tensor_proto_to_array(undef).tolist() == [b"x", b"yz"]


def test_chunked_records_keys_segments_and_merge_in_any_order():
    arr = np.arange(14, dtype=np.float32).reshape(7, 2)
    records = S.serialize_blob_records("w", arr, chunk_size=3)
    assert [k for k, _ in records] == [f"w#%{i}" for i in range(5)]
    protos = [S.parse_blob_proto(v) for _, v in records]
    assert [(p.tensor.segment.begin, p.tensor.segment.end) for p in protos] == \
        [(0, 3), (3, 6), (6, 9), (9, 12), (12, 14)]
    for p in protos:
        assert p.name == "w" and p.type == "Tensor" and p.tensor.name == "w"
        assert list(p.tensor.dims) == [7, 2] and not p.tensor.HasField("device_detail")
    random.Random(0).shuffle(records)
    asm = S.BlobAssembler()
    done = [asm.add(S.blob_name_from_key(k), S.parse_blob_proto(v)) for k, v in records]
    assert done == [False] * 4 + [True]
    np.testing.assert_array_equal(asm.finish()["w"], arr)


def test_default_chunk_size_and_single_record_forms():
    assert S.CHUNK_SIZE == 1_000_000
    (key, value), = S.serialize_blob_records("b", np.ones(5, np.int32))
    assert key == "b#%0"
    one = S.parse_blob_proto(S.serialize_blob("b", np.ones(5, np.int32)))
    assert (one.tensor.segment.begin, one.tensor.segment.end) == (0, 5)
    assert len(S.serialize_blob_records("b", np.ones(5), chunk_size=S.NO_CHUNKING)) == 1
    # An empty tensor is still one record, segment [0, 0), with its dims.
    (key, value), = S.serialize_blob_records("e", np.zeros((0, 4), np.float32), chunk_size=3)
    proto = S.parse_blob_proto(value)
    assert key == "e#%0" and list(proto.tensor.dims) == [0, 4]
    assert S.deserialize_blob(value).shape == (0, 4)


def test_string_blob_and_deserialize_helpers():
    (key, value), = S.serialize_blob_records("s", b"hello\x00")
    proto = S.parse_blob_proto(value)
    assert key == "s" and proto.type == "std::string" and proto.content == b"hello\x00"
    assert S.deserialize_blob(value) == b"hello\x00"
    assert S.deserialize_blob(S.serialize_blob("u", "ü")) == "ü".encode()
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    np.testing.assert_array_equal(S.deserialize_blob(S.serialize_blob("x", arr)), arr)


def test_blob_name_from_key():
    assert S.blob_name_from_key("a/b#%12") == "a/b"
    assert S.blob_name_from_key(b"plain") == "plain"
    assert S.blob_name_from_key("x#%1#%2") == "x"


def _records(arr, chunk):
    return [(k, S.parse_blob_proto(v)) for k, v in S.serialize_blob_records("w", arr, chunk_size=chunk)]


def test_incomplete_tensor_is_an_error_unless_allowed():
    recs = _records(np.arange(10, dtype=np.int64), 4)
    asm = S.BlobAssembler()
    for k, p in recs[:2]:
        asm.add("w", p)
    assert asm.incomplete() == {"w": (8, 10)}
    with pytest.raises(SerializationError, match=r"'w' \(8 of 10 elements\)"):
        asm.finish()
    lenient = S.BlobAssembler(allow_incomplete=True)
    for k, p in recs[:2]:
        lenient.add("w", p)
    assert lenient.finish()["w"].tolist() == list(range(8)) + [0, 0]


def test_duplicate_and_inconsistent_chunks_are_errors():
    recs = _records(np.arange(10, dtype=np.float32), 4)
    asm = S.BlobAssembler()
    asm.add("w", recs[0][1])
    with pytest.raises(SerializationError, match="occurs twice"):
        asm.add("w", recs[0][1])
    other = _records(np.arange(12, dtype=np.float32), 4)[1][1]
    with pytest.raises(SerializationError, match=r"dims \[12\].*earlier chunk said \[10\]"):
        asm.add("w", other)


@pytest.mark.parametrize("mutate,message", [
    (lambda tp: tp.float_data.pop(), "float_data holds 2 value.*needs 3"),
    (lambda tp: setattr(tp.segment, "end", 9), r"segment \[0, 9\) lies outside"),
    (lambda tp: tp.dims.append(-1), "negative dimension"),
    (lambda tp: setattr(tp, "data_type", DT.BYTE), r"byte_data holds 0 value"),
])
def test_corrupt_tensor_protos_give_clear_errors(mutate, message):
    tp = S.array_to_tensor_proto(np.array([1, 2, 3], np.float32), "v")
    mutate(tp)
    with pytest.raises(SerializationError, match=message):
        S.tensor_proto_to_array(tp)


def test_unknown_data_type_on_the_wire_is_named():
    # dims=[3], data_type=11 (unused by Caffe2): proto2 keeps 11 as an unknown field.
    tp = caffe2_pb2.TensorProto.FromString(b"\x08\x03\x10\x0b")
    with pytest.raises(SerializationError, match="unknown data_type 11"):
        S.tensor_proto_to_array(tp)


def test_corrupt_record_bytes_and_unknown_types():
    with pytest.raises(SerializationError, match=r"key 'w#%0'.*not a valid BlobProto"):
        S.parse_blob_proto(b"\xff\xff\xff\xff\x0f", where="key 'w#%0'")
    with pytest.raises(SerializationError, match="no deserializer for blob type 'Mystery'"):
        S.deserialize_blob(caffe2_pb2.BlobProto(name="m", type="Mystery", content=b"?").SerializeToString())
    half = S.array_to_tensor_proto(np.arange(4, dtype=np.float32), "p", 0, 2)
    with pytest.raises(SerializationError, match=r"only elements \[0, 2\) of 4"):
        S.tensor_proto_to_array(half)


@pytest.mark.parametrize("value,message", [
    (None, "never written"),
    (object(), "no serializer for a object"),
    (np.zeros(2, np.complex64), "complex64 has no Caffe2 DataType"),
    (np.array([1, "a"], dtype=object), "may only hold str/bytes"),
])
def test_unserializable_blobs(value, message):
    with pytest.raises(SerializationError, match=message):
        S.serialize_blob_records("bad", value)


def test_dbreader_blob_roundtrip(tmp_path):
    from netjit.runtime.db import DBReader, open_db
    path = str(tmp_path / "r.lmdb")
    with open_db(path, "lmdb", "new") as db:
        txn = db.new_transaction()
        for i in range(4):
            txn.put(f"k{i}", b"v%d" % i)
        txn.commit()
    reader = DBReader("lmdb", path)
    reader.read()
    reader.read()
    data = S.serialize_blob("reader", reader)
    proto = S.parse_blob_proto(data)
    assert proto.type == "DBReader"
    inner = caffe2_pb2.DBReaderProto.FromString(proto.content)
    assert (inner.name, inner.source, inner.db_type, inner.key) == ("reader", path, "lmdb", "k2")
    again = S.deserialize_blob(data)
    assert again.read() == (b"k2", b"v2")
    reader.close()
    again.close()


@pytest.mark.parametrize("dtype,field", [(np.float32, "float_data"), (np.float64, "double_data")])
def test_packed_float_fast_path_matches_plain_protobuf(dtype, field):
    arr = np.array([1.5, -0.0, np.nan, np.inf, 3e-39, 7.0], dtype)
    ours = S.array_to_tensor_proto(arr, "f", 1, 5)
    plain = caffe2_pb2.TensorProto(dims=[6], data_type=S.DATATYPE_OF[np.dtype(dtype)], name="f")
    getattr(plain, field).extend(arr[1:5].tolist())
    plain.segment.begin, plain.segment.end = 1, 5
    assert ours.SerializeToString() == plain.SerializeToString()
