"""Reading and writing .pb/.pbtxt files: real Caffe2 files, both repeated encodings, bad input, atomic writes."""
from __future__ import annotations

import os
import stat
import struct

import pytest
from google.protobuf import text_format
from google.protobuf.message import DecodeError

from netjit.proto import caffe2_pb2, metanet_pb2
from netjit.proto.io import (ProtoFormatError, atomic_write_bytes, load_message, load_net, parse_message,
                             parse_net_bytes, save_message, save_net)
from tests.conftest import SHARED, shared_path

ZOO_NETS = sorted((SHARED / "models" / "zoo").glob("*/predict_net.pbtxt"))
ZOO_IDS = [p.parent.name for p in ZOO_NETS]


def _lenet(name: str) -> bytes:
    return shared_path("models", "lenet_pytorch_export", name).read_bytes()


def _zoo_or_skip() -> None:
    shared_path("models", "zoo")


# --- real files ---------------------------------------------------------------------------------

def test_zoo_is_complete():
    _zoo_or_skip()
    assert ZOO_IDS == ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "vgg19",
                       "zfnet512"]


def _empty_field_counts(net: caffe2_pb2.NetDef) -> tuple[int, int, int]:
    return (sum(op.HasField("name") and op.name == "" for op in net.op),
            sum(op.HasField("engine") and op.engine == "" for op in net.op),
            sum(op.HasField("device_option") and op.device_option.ByteSize() == 0 for op in net.op))


@pytest.mark.parametrize("path", ZOO_NETS, ids=ZOO_IDS)
def test_zoo_pbtxt_parses_and_keeps_present_empty_fields(path):
    net = load_net(path)
    assert net.name and len(net.op) > 5
    assert net.external_input and net.external_output
    # Some zoo nets write name: "", engine: "" and device_option {} on ops: present although empty.
    text = path.read_text()
    expected = (text.count('\n  name: ""'), text.count('\n  engine: ""'), text.count("\n  device_option {\n  }"))
    assert _empty_field_counts(net) == expected


def test_zoo_has_present_empty_fields():
    net = load_net(shared_path("models", "zoo", "resnet50", "predict_net.pbtxt"))
    assert all(count == len(net.op) for count in _empty_field_counts(net))


@pytest.mark.parametrize("model", ["resnet50", "zfnet512"])
def test_zoo_text_round_trip(model, tmp_path):
    net = load_net(shared_path("models", "zoo", model, "predict_net.pbtxt"))
    text = text_format.MessageToString(net)
    again = text_format.Parse(text, caffe2_pb2.NetDef())
    assert again == net
    assert 'name: ""' in text and 'engine: ""' in text and "device_option {\n" in text
    # Through our writer too, in both formats, and the binary bytes agree.
    save_net(net, tmp_path / "net.pbtxt")
    save_net(net, tmp_path / "net.pb")
    assert (tmp_path / "net.pbtxt").read_bytes().decode().startswith(f'name: "{net.name}"')
    assert load_net(tmp_path / "net.pbtxt") == net
    assert load_net(tmp_path / "net.pb") == net
    assert (tmp_path / "net.pb").read_bytes() == net.SerializeToString()
    assert load_net(tmp_path / "net.pb").op[0].HasField("engine")


@pytest.mark.parametrize("name", ["init_net.pb", "predict_net.pb"])
def test_lenet_binary_round_trips_byte_identically(name):
    data = _lenet(name)
    net = parse_net_bytes(data)
    assert net.SerializeToString() == data
    assert len(net.op) in (8, 11)


def test_lenet_predict_net_contents():
    net = parse_net_bytes(_lenet("predict_net.pb"))
    assert net.external_input[0] == "1" and list(net.external_output) == ["26"]
    conv = net.op[0]
    assert conv.type == "Conv"
    args = {a.name: a for a in conv.arg}
    assert list(args["kernels"].ints) == [5, 5] and list(args["pads"].ints) == [0, 0, 0, 0]
    init = parse_net_bytes(_lenet("init_net.pb"))
    assert {op.type for op in init.op} == {"GivenTensorFill"}
    assert sum(len(a.floats) for op in init.op for a in op.arg if a.name == "values") > 400_000


def test_lenet_text_round_trip(tmp_path):
    full = parse_net_bytes(_lenet("init_net.pb"))
    # The small weight tensors only: text-formatting all 430k floats takes seconds.
    net = caffe2_pb2.NetDef()
    net.CopyFrom(full)
    del net.op[:]
    net.op.extend(op for op in full.op if op.ByteSize() < 200_000)
    assert len(net.op) >= 4
    save_net(net, tmp_path / "init.pbtxt")
    assert load_net(tmp_path / "init.pbtxt") == net  # float32 values survive shortest-repr printing


# --- encodings ----------------------------------------------------------------------------------

def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _len_field(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def test_packed_and_unpacked_repeated_fields_parse_alike():
    floats, ints64, ints32, dims = [1.5, -2.0, 3.25], [7, -1, 1 << 40], [3, -4], [2, 3]
    unpacked = b"".join([
        *(_key(1, 0) + _varint(d) for d in dims),
        *(_key(3, 5) + struct.pack("<f", f) for f in floats),
        *(_key(4, 0) + _varint(i) for i in ints32),
        *(_key(10, 0) + _varint(i) for i in ints64),
    ])
    packed = b"".join([
        _len_field(1, b"".join(_varint(d) for d in dims)),
        _len_field(3, struct.pack("<3f", *floats)),
        _len_field(4, b"".join(_varint(i) for i in ints32)),
        _len_field(10, b"".join(_varint(i) for i in ints64)),
    ])
    a = parse_message(unpacked, caffe2_pb2.TensorProto)
    b = parse_message(packed, caffe2_pb2.TensorProto)
    assert a == b
    assert list(a.dims) == dims and list(a.float_data) == floats
    assert list(a.int32_data) == ints32 and list(a.int64_data) == ints64
    # We write Caffe2's own choice: packed data, unpacked dims.
    assert a.SerializeToString() == b"".join([*(_key(1, 0) + _varint(d) for d in dims), packed[len(
        _len_field(1, b"".join(_varint(d) for d in dims))):]])


def test_argument_lists_accept_both_encodings():
    # Argument.ints/floats are unpacked in Caffe2's schema, but a packed writer must still be readable.
    name = _len_field(1, b"kernels")
    unpacked = name + _key(6, 0) + _varint(5) + _key(6, 0) + _varint(5) + _key(5, 5) + struct.pack("<f", 0.5)
    packed = name + _len_field(6, _varint(5) + _varint(5)) + _len_field(5, struct.pack("<f", 0.5))
    a, b = (parse_message(d, caffe2_pb2.Argument) for d in (unpacked, packed))
    assert a == b and list(a.ints) == [5, 5] and list(a.floats) == [0.5]
    assert a.SerializeToString() == name + _key(5, 5) + struct.pack("<f", 0.5) + (_key(6, 0) + _varint(5)) * 2


# --- bad input ----------------------------------------------------------------------------------

# Each cut lands inside a field (a cut at a field boundary leaves a shorter valid message, which no
# format can detect).
@pytest.mark.parametrize("cut", [1, 6, 100, 400])
def test_truncated_binary_names_file_and_field(tmp_path, cut):
    data = _lenet("predict_net.pb")
    path = tmp_path / "predict_net.pb"
    path.write_bytes(data[:-cut])
    with pytest.raises(ProtoFormatError) as info:
        load_net(path)
    message = str(info.value)
    assert str(path) in message and "caffe2.NetDef" in message and "truncated" in message
    assert "binary protobuf" in message
    assert isinstance(info.value, DecodeError) and isinstance(info.value, ValueError)


def test_truncated_nested_field_is_located():
    data = _lenet("predict_net.pb")
    net = parse_net_bytes(data)
    first_op = len(_len_field(1, net.name.encode()))  # ops follow the name
    with pytest.raises(ProtoFormatError, match=r"truncated: op\[0\]"):
        parse_net_bytes(data[:first_op + 20], source="x.pb")


def test_corrupt_binary(tmp_path):
    path = tmp_path / "bad.pb"
    path.write_bytes(b"\x0a\x03abc\x17\x00\x01")  # field 2 with wire type 7
    with pytest.raises(ProtoFormatError, match=r"bad\.pb.*op\[0\] at byte 5 has invalid wire type 7"):
        load_net(path)


def test_malformed_text_reports_line_and_column(tmp_path):
    path = tmp_path / "net.pbtxt"
    path.write_text('name: "n"\nop {\n  type: "Relu"\n  bogus: 3\n}\n')
    with pytest.raises(ProtoFormatError) as info:
        load_net(path)
    message = str(info.value)
    assert str(path) in message and "line 4, column 3" in message and "bogus" in message
    assert "binary" not in message  # a text file is not also blamed for being bad binary


def test_text_under_binary_name_and_binary_under_text_name(tmp_path):
    net = parse_net_bytes(_lenet("predict_net.pb"))
    (tmp_path / "looks_binary.pb").write_text(text_format.MessageToString(net))
    (tmp_path / "looks_text.pbtxt").write_bytes(net.SerializeToString())
    assert load_net(tmp_path / "looks_binary.pb") == net
    assert load_net(tmp_path / "looks_text.pbtxt") == net
    (tmp_path / "noext").write_bytes(net.SerializeToString())
    assert load_net(tmp_path / "noext") == net


def test_text_that_also_decodes_as_binary_prefers_text():
    # "\n(" + 40 letters is a valid binary NetDef (name of 40 bytes) and looks like text, but is not
    # valid text format: binary wins. A real text net never reads as binary without unknown fields.
    odd = b"\n(" + b"a" * 40
    assert parse_net_bytes(odd).name == "a" * 40
    assert parse_net_bytes(b'external_input: "x"').external_input == ["x"]


def test_missing_required_fields_are_reported():
    broken = metanet_pb2.NetsMap()
    broken.value.name = "n"
    with pytest.raises(ProtoFormatError, match="missing required field.*key"):
        parse_message(broken.SerializePartialToString(), metanet_pb2.NetsMap, source="meta")


def test_missing_file_is_a_plain_file_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_net(tmp_path / "absent.pb")


def test_empty_file_is_an_empty_net(tmp_path):
    # An empty NetDef serializes to zero bytes, so zero bytes must read back as one.
    save_net(caffe2_pb2.NetDef(), tmp_path / "empty.pb")
    assert (tmp_path / "empty.pb").read_bytes() == b""
    assert load_net(tmp_path / "empty.pb") == caffe2_pb2.NetDef()


# --- other messages, writing ----------------------------------------------------------------------

def test_any_message_type(tmp_path):
    plan = caffe2_pb2.PlanDef(name="plan")
    plan.network.add(name="train").op.add(type="Relu", input=["x"], output=["y"])
    plan.execution_step.add(name="step", network=["train"], num_iter=10)
    protos = caffe2_pb2.TensorProtos()
    protos.protos.add(dims=[1, 28, 28], data_type=caffe2_pb2.TensorProto.BYTE, byte_data=bytes(784))
    protos.protos.add(data_type=caffe2_pb2.TensorProto.INT32, int32_data=[7])
    meta = metanet_pb2.MetaNetDef()
    meta.nets.add(key="PREDICT_NET_TYPE").value.CopyFrom(plan.network[0])
    meta.blobs.add(key="INPUTS_BLOB_TYPE", value=["x"])
    for message, stem in ((plan, "plan"), (protos, "protos"), (meta, "meta")):
        for suffix in (".pb", ".pbtxt"):
            path = tmp_path / (stem + suffix)
            save_message(message, path)
            assert load_message(path, type(message)) == message
    assert (tmp_path / "meta.pbtxt").read_text().startswith("blobs {")


def test_save_accepts_objects_with_proto_and_explicit_format(tmp_path):
    class Wrapper:
        def Proto(self):
            return caffe2_pb2.NetDef(name="wrapped")

    save_net(Wrapper(), tmp_path / "w.bin", text=True)
    assert (tmp_path / "w.bin").read_text() == 'name: "wrapped"\n'
    assert load_net(tmp_path / "w.bin").name == "wrapped"
    with pytest.raises(TypeError):
        save_net(object(), tmp_path / "x.pb")


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "net.pb"
    save_net(caffe2_pb2.NetDef(name="old"), path)
    os.chmod(path, 0o640)
    # Serialization failure (missing required field): nothing is written at all.
    with pytest.raises(Exception):
        save_message(metanet_pb2.NetsMap(), path)
    # Failure at the last moment: the temp file is cleaned up and the original is intact.
    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_net(caffe2_pb2.NetDef(name="new"), path)
    monkeypatch.undo()
    assert load_net(path).name == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pb"]
    save_net(caffe2_pb2.NetDef(name="new"), path)
    assert load_net(path).name == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # permissions of the replaced file are kept


def test_atomic_write_through_symlink_replaces_target(tmp_path):
    target = tmp_path / "real.pb"
    target.write_bytes(b"old")
    link = tmp_path / "link.pb"
    link.symlink_to(target)
    atomic_write_bytes(link, b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
