"""The generated modules match the Caffe2 wire schema (docs/caffe2-facts.md section 1) field by field."""
from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor as FD

from netjit.proto import caffe2_legacy_pb2, caffe2_pb2, metanet_pb2, predictor_consts_pb2

# message -> {number: (name, repeated, type, packed)}; types as FieldDescriptor.TYPE_*.
S, B, I32, I64, U32, F, D, BOOL, E, MSG = (FD.TYPE_STRING, FD.TYPE_BYTES, FD.TYPE_INT32, FD.TYPE_INT64,
                                          FD.TYPE_UINT32, FD.TYPE_FLOAT, FD.TYPE_DOUBLE, FD.TYPE_BOOL,
                                          FD.TYPE_ENUM, FD.TYPE_MESSAGE)
R, O = True, False
SCHEMA = {
    caffe2_pb2.TensorProto: {
        1: ("dims", R, I64, False), 2: ("data_type", O, E, False), 3: ("float_data", R, F, True),
        4: ("int32_data", R, I32, True), 5: ("byte_data", O, B, False), 6: ("string_data", R, B, False),
        7: ("name", O, S, False), 8: ("device_detail", O, MSG, False), 9: ("double_data", R, D, True),
        10: ("int64_data", R, I64, True), 11: ("segment", O, MSG, False)},
    caffe2_pb2.TensorProto.Segment: {1: ("begin", O, I64, False), 2: ("end", O, I64, False)},
    caffe2_pb2.QTensorProto: {
        1: ("dims", R, I64, False), 2: ("precision", O, I32, False), 3: ("scale", O, D, False),
        4: ("bias", O, D, False), 5: ("is_signed", O, BOOL, False), 6: ("data", R, I32, True),
        7: ("name", O, S, False)},
    caffe2_pb2.TensorProtos: {1: ("protos", R, MSG, False)},
    caffe2_pb2.TensorShape: {
        1: ("dims", R, I64, False), 2: ("data_type", O, E, False), 3: ("unknown_dims", R, I32, False),
        4: ("unknown_shape", O, BOOL, False), 5: ("name", O, S, False)},
    caffe2_pb2.TensorShapes: {1: ("shapes", R, MSG, False)},
    caffe2_pb2.Argument: {
        1: ("name", O, S, False), 2: ("f", O, F, False), 3: ("i", O, I64, False), 4: ("s", O, B, False),
        5: ("floats", R, F, False), 6: ("ints", R, I64, False), 7: ("strings", R, B, False),
        8: ("n", O, MSG, False), 9: ("nets", R, MSG, False)},
    caffe2_pb2.DeviceOption: {
        1: ("device_type", O, I32, False), 2: ("cuda_gpu_id", O, I32, False), 3: ("random_seed", O, U32, False),
        4: ("node_name", O, S, False), 5: ("numa_node_id", O, I32, False)},
    caffe2_pb2.OperatorDef: {
        1: ("input", R, S, False), 2: ("output", R, S, False), 3: ("name", O, S, False), 4: ("type", O, S, False),
        5: ("arg", R, MSG, False), 6: ("device_option", O, MSG, False), 7: ("engine", O, S, False),
        8: ("control_input", R, S, False), 9: ("is_gradient_op", O, BOOL, False), 10: ("debug_info", O, S, False)},
    caffe2_pb2.NetDef: {
        1: ("name", O, S, False), 2: ("op", R, MSG, False), 3: ("type", O, S, False),
        4: ("num_workers", O, I32, False), 5: ("device_option", O, MSG, False), 6: ("arg", R, MSG, False),
        7: ("external_input", R, S, False), 8: ("external_output", R, S, False)},
    caffe2_pb2.ExecutionStep: {
        1: ("name", O, S, False), 2: ("substep", R, MSG, False), 3: ("network", R, S, False),
        4: ("num_iter", O, I64, False), 5: ("criteria_network", O, S, False),
        6: ("concurrent_substeps", O, BOOL, False), 7: ("report_net", O, S, False),
        8: ("report_interval", O, I32, False), 9: ("should_stop_blob", O, S, False),
        10: ("only_once", O, BOOL, False), 11: ("run_every_ms", O, I64, False),
        12: ("create_workspace", O, BOOL, False), 13: ("num_concurrent_instances", O, I32, False)},
    caffe2_pb2.PlanDef: {1: ("name", O, S, False), 2: ("network", R, MSG, False), 3: ("execution_step", R, MSG, False)},
    caffe2_pb2.BlobProto: {
        1: ("name", O, S, False), 2: ("type", O, S, False), 3: ("tensor", O, MSG, False), 4: ("content", O, B, False),
        5: ("qtensor", O, MSG, False), 6: ("content_num_chunks", O, I32, False), 7: ("content_chunk_id", O, I32, False)},
    caffe2_pb2.DBReaderProto: {
        1: ("name", O, S, False), 2: ("source", O, S, False), 3: ("db_type", O, S, False), 4: ("key", O, S, False)},
    metanet_pb2.ModelInfo: {
        1: ("project", O, S, False), 2: ("modelClass", O, S, False), 3: ("version", O, S, False),
        4: ("predictorType", O, S, False), 5: ("modelId", O, S, False)},
    metanet_pb2.BlobsMap: {1: ("key", O, S, False), 2: ("value", R, S, False)},
    metanet_pb2.NetsMap: {1: ("key", O, S, False), 2: ("value", O, MSG, False)},
    metanet_pb2.PlansMap: {1: ("key", O, S, False), 2: ("value", O, MSG, False)},
    metanet_pb2.StringMap: {1: ("key", O, S, False), 2: ("value", O, S, False)},
    metanet_pb2.MetaNetDef: {
        1: ("blobs", R, MSG, False), 2: ("nets", R, MSG, False), 3: ("modelInfo", O, MSG, False),
        4: ("plans", R, MSG, False), 5: ("applicationSpecificInfo", R, MSG, False)},
}
REQUIRED = {
    caffe2_pb2.TensorProto.Segment: {"begin", "end"},
    caffe2_pb2.QTensorProto: {"precision", "scale", "bias", "is_signed"},
    metanet_pb2.BlobsMap: {"key"}, metanet_pb2.NetsMap: {"key", "value"},
    metanet_pb2.PlansMap: {"key", "value"}, metanet_pb2.StringMap: {"key", "value"},
}


@pytest.mark.parametrize("message", list(SCHEMA), ids=lambda m: m.DESCRIPTOR.full_name)
def test_fields_match_the_caffe2_schema(message):
    fields = {f.number: f for f in message.DESCRIPTOR.fields}
    assert sorted(fields) == sorted(SCHEMA[message])
    for number, (name, repeated, ftype, packed) in SCHEMA[message].items():
        field = fields[number]
        assert (field.name, field.is_repeated, field.type, field.is_packed) == (name, repeated, ftype, packed), number
    required = {f.name for f in message.DESCRIPTOR.fields if f.is_required}
    assert required == REQUIRED.get(message, set())


def test_enums_and_defaults():
    data_type = caffe2_pb2.TensorProto.DataType
    assert {data_type.Name(v): v for v in data_type.values()} == {
        "UNDEFINED": 0, "FLOAT": 1, "INT32": 2, "BYTE": 3, "STRING": 4, "BOOL": 5, "UINT8": 6, "INT8": 7,
        "UINT16": 8, "INT16": 9, "INT64": 10, "FLOAT16": 12, "DOUBLE": 13}
    assert {caffe2_pb2.DeviceType.Name(v): v for v in caffe2_pb2.DeviceType.values()} == {
        "CPU": 0, "CUDA": 1, "MKLDNN": 2, "OPENGL": 3, "COMPILE_TIME_MAX_DEVICE_TYPES": 4,
        "ONLY_FOR_TEST": 20901701}
    legacy = caffe2_legacy_pb2.LegacyPadding
    assert {legacy.Name(v): v for v in legacy.values()} == {
        "NOTSET": 0, "VALID": 1, "SAME": 2, "CAFFE_LEGACY_POOLING": 3}
    assert caffe2_pb2.TensorProto().data_type == caffe2_pb2.TensorProto.FLOAT
    assert caffe2_pb2.TensorShape().data_type == caffe2_pb2.TensorProto.FLOAT
    assert caffe2_pb2.DeviceOption().numa_node_id == -1
    assert caffe2_pb2.DeviceOption().device_type == 0
    assert metanet_pb2.ModelInfo().predictorType == "SINGLE_PREDICTOR"


def test_predictor_consts_defaults():
    consts = predictor_consts_pb2.PredictorConsts()
    names = [f.name for f in sorted(consts.DESCRIPTOR.fields, key=lambda f: f.number)]
    assert names == ["META_NET_DEF", "PREDICTOR_DBREADER", "PARAMETERS_BLOB_TYPE", "INPUTS_BLOB_TYPE",
                     "OUTPUTS_BLOB_TYPE", "GLOBAL_INIT_NET_TYPE", "PREDICT_INIT_NET_TYPE", "PREDICT_NET_TYPE",
                     "SINGLE_PREDICTOR", "MULTI_PREDICTOR", "TRAIN_INIT_PLAN_TYPE", "TRAIN_PLAN_TYPE"]
    assert consts.META_NET_DEF == "!!META_NET_DEF"
    assert consts.PREDICTOR_DBREADER == "!!PREDICTOR_DBREADER"
    for name in names[2:]:
        assert getattr(consts, name) == name
    # The defaults are not "set": an empty PredictorConsts serializes to nothing.
    assert consts.SerializeToString() == b""


def test_modules_live_inside_the_package():
    assert caffe2_pb2.NetDef.__module__ == "netjit.proto.caffe2_pb2"
    assert metanet_pb2.MetaNetDef.__module__ == "netjit.proto.metanet_pb2"
    # metanet refers to the very NetDef class of caffe2_pb2, not a second copy.
    nets_map = metanet_pb2.NetsMap(key="k", value=caffe2_pb2.NetDef(name="n"))
    assert isinstance(nets_map.value, caffe2_pb2.NetDef)
    assert metanet_pb2.DESCRIPTOR.dependencies[0] is caffe2_pb2.DESCRIPTOR
