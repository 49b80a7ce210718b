"""caffe2.python.utils as scripts use it."""
import numpy as np
import pytest
from google.protobuf import text_format
from google.protobuf.message import DecodeError

from caffe2.proto import caffe2_pb2
from caffe2.python import core, model_helper, utils, workspace


@pytest.mark.parametrize("arr", [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1.5, -2.0]),
                                 np.array([[1, 2]], np.int32), np.array([7], np.int64),
                                 np.array([True, False]), np.array([1.0, 2.0], np.float16),
                                 np.array([3, 4], np.uint8)])
def test_tensor_round_trip(arr):
    tp = utils.NumpyArrayToCaffe2Tensor(arr, "t")
    assert tp.name == "t" and list(tp.dims) == list(arr.shape)
    back = utils.Caffe2TensorToNumpyArray(tp)
    assert back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)
    assert tp.data_type == {np.dtype(np.float32): caffe2_pb2.TensorProto.FLOAT,
                            np.dtype(np.float64): caffe2_pb2.TensorProto.DOUBLE}.get(arr.dtype, tp.data_type)


def test_caffe_blob_to_numpy():
    class Shape:
        dim = [2, 2]

    class Blob:   # the fields of a Caffe (1) BlobProto this function reads
        def __init__(self, num):
            self.num, self.channels, self.height, self.width = num, 1, 2, 2
            self.data, self.shape = [1, 2, 3, 4], Shape()
    assert utils.CaffeBlobToNumpyArray(Blob(1)).shape == (1, 1, 2, 2)
    assert utils.CaffeBlobToNumpyArray(Blob(0)).shape == (2, 2)


def test_make_argument_fields():
    assert utils.MakeArgument("f", 0.5).f == 0.5
    assert utils.MakeArgument("b", True).i == 1
    assert utils.MakeArgument("s", "NCHW").s == b"NCHW"
    assert list(utils.MakeArgument("ints", np.array([1, 2])).ints) == [1, 2]
    assert list(utils.MakeArgument("floats", [0.5, 1]).floats) == [0.5, 1.0]
    assert list(utils.MakeArgument("strs", ["a", b"b"]).strings) == [b"a", b"b"]
    dev = core.DeviceOption(caffe2_pb2.CPU)
    assert utils.MakeArgument("msg", dev).s == dev.SerializeToString()
    assert utils.MakeArgument("msgs", [dev, dev]).strings[1] == dev.SerializeToString()
    net = core.Net("inner").Proto()
    assert utils.MakeArgument("net", net).n.name == "inner"
    with pytest.raises(ValueError, match="Unknown argument type"):
        utils.MakeArgument("bad", object())
    assert utils.ArgsToDict([utils.MakeArgument("a", 1), utils.MakeArgument("b", [1.0])]) == {"a": 1, "b": [1.0]}


def test_read_proto_text_or_binary(tmp_path):
    net = core.Net("proto_read")     # core.Net may make the name unique: compare with Proto().name
    net.Relu(["x"], ["y"])
    name = net.Proto().name
    text, binary = text_format.MessageToString(net.Proto()), net.Proto().SerializeToString()
    assert utils.TryReadProtoWithClass(caffe2_pb2.NetDef, text) == net.Proto()
    assert utils.TryReadProtoWithClass(caffe2_pb2.NetDef, binary) == net.Proto()
    funcs = {caffe2_pb2.NetDef: lambda p: ("net", p.name), caffe2_pb2.TensorProto: lambda p: ("tensor", p.name)}
    assert utils.GetContentFromProto(net.Proto(), funcs) == ("net", name)
    assert utils.GetContentFromProto(caffe2_pb2.DeviceOption(), funcs) is None
    assert utils.GetContentFromProtoString(binary, funcs) == ("net", name)
    with pytest.raises(DecodeError):
        utils.GetContentFromProtoString(b"\xff\xff\xff", {caffe2_pb2.NetDef: lambda p: p})
    (tmp_path / "n.pbtxt").write_text(text)
    utils.ConvertProtoToBinary(caffe2_pb2.NetDef, str(tmp_path / "n.pbtxt"), str(tmp_path / "n.pb"))
    assert caffe2_pb2.NetDef.FromString((tmp_path / "n.pb").read_bytes()) == net.Proto()


def test_build_unique_mutex_iter_counts():
    model = model_helper.ModelHelper(name="it")
    it = utils.BuildUniqueMutexIter(model.param_init_net, model.net, iter_val=5)
    assert utils.BuildUniqueMutexIter(model.param_init_net, model.net) == it   # created once
    assert [op.type for op in model.net.Proto().op] == ["AtomicIter"]
    workspace.ResetWorkspace()
    workspace.RunNetOnce(model.param_init_net)
    workspace.CreateNet(model.net)
    workspace.RunNet(model.net.Proto().name, num_iter=3)
    assert workspace.FetchBlob(str(it)).tolist() == [8]


def test_reset_blobs_and_gpu_stats():
    workspace.ResetWorkspace()
    workspace.FeedBlob("a", np.ones(3, np.float32))
    utils.ResetBlobs(["a"])
    assert workspace.HasBlob("a")
    with pytest.raises(RuntimeError, match="does not exist"):
        utils.ResetBlobs(["missing"])
    with pytest.raises(RuntimeError, match="no GPU memory"):
        utils.GetGPUMemoryUsageStats()


def test_enum_class_key_vals():
    class Mode:
        TRAIN = "train"
        EVAL = "eval"
        lower = "ignored"
        COUNT = 3

    assert utils.EnumClassKeyVals(Mode) == {"TRAIN": "train", "EVAL": "eval"}

    class Dup:
        A = "x"
        B = "x"
    with pytest.raises(ValueError, match="duplicate"):
        utils.EnumClassKeyVals(Dup)


def test_debug_mode_passes_results_and_enters_pdb_on_error(monkeypatch):
    assert utils.DebugMode.run(lambda: 42) == 42
    seen = []
    monkeypatch.setattr(utils.pdb, "post_mortem", lambda tb: seen.append(tb))

    @utils.debug
    def broken():
        raise ValueError("boom")
    with pytest.raises(SystemExit):
        broken()
    assert seen and seen[0] is not None
