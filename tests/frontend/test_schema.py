"""caffe2.python.schema: record trees, their flat columns, and records of blobs run through nets."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from caffe2.python import core, schema, workspace


@pytest.fixture(params=["reference", "compiled"])
def executor(request, monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", request.param)
    return request.param


def _nested() -> schema.Struct:
    return schema.Struct(("a", schema.Scalar()),
                         ("b", schema.Struct(("c", schema.Struct(("d", schema.Scalar())),)),))


def test_pickle_round_trip_keeps_field_kinds():
    s = schema.Struct(("f1", schema.Scalar(dtype=np.int32)), ("f2", schema.List(schema.Scalar(dtype=str))))
    for r in (s, pickle.loads(pickle.dumps(s))):
        assert isinstance(r.f1, schema.Scalar) and isinstance(r.f2, schema.List)
        assert getattr(r, "missing", None) is None
        assert r == s


def test_types_become_scalars_and_tuples_are_positional():
    assert schema.Struct(("x", np.int32), ("y", str)) == schema.Struct(
        ("x", schema.Scalar(dtype=np.int32)), ("y", schema.Scalar(dtype=str)))
    t = schema.Tuple(np.int32, str, np.float32)
    assert t.field_names() == ["field_0", "field_1", "field_2"]
    assert t[2] == schema.Scalar(np.float32)
    assert t[2, 0] == schema.Struct(("field_2", schema.Scalar(np.float32)), ("field_0", schema.Scalar(np.int32)))
    assert [f.field_types()[0] for f in t] == [np.dtype(np.int32), np.dtype(str), np.dtype(np.float32)]
    raw = schema.RawTuple(2)
    assert raw == schema.Struct(("field_0", schema.Scalar()), ("field_1", schema.Scalar()))
    assert raw.field_types() == [np.dtype(np.void)] * 2


def test_list_and_map_columns_and_indexing():
    items = schema.List(schema.Scalar(dtype=str))
    m = schema.Map(schema.Scalar(np.int32), schema.Scalar(np.float32))
    s = schema.Struct(("f1", schema.Scalar(np.int32)), ("f2", items), ("f3", m), ("f4", schema.Struct()))
    assert s.field_names() == ["f1", "f2:lengths", "f2:values", "f3:lengths", "f3:values:keys",
                               "f3:values:values", ]
    assert s.field_types()[1] == np.dtype(np.int32)            # lengths are int32
    assert s["f2"] == s.f2 == items and s["f4"] == schema.Struct()
    assert s["f2:lengths"] == items.lengths and s["f2:items"] == items.items
    assert s["f3:keys"] == m.keys and s.f3.values == schema.Scalar(np.float32)
    for bad in ("f2x:items", "f3:keys:x", "", "f1:x"):
        with pytest.raises(KeyError):
            s[bad]
    assert s["f2", "f1"].field_names() == ["f2:lengths", "f2:values", "f1"]
    assert s.f3.values.slice() == slice(5, 6) and s.f3.keys.id() == 4


def test_nested_names_merge_and_conflicts_fail():
    f_a = schema.Scalar(blob=core.BlobReference("blob1"))
    f_b = schema.Struct(("c", schema.Struct(("d", schema.Scalar(blob=core.BlobReference("blob2"))),)),)
    f_x = schema.Struct(("x", schema.Scalar(blob=core.BlobReference("blob3"))),)
    st = schema.Struct(("a", f_a), ("b:c:e", f_x), ("b", f_b))
    assert st.field_names() == ["a", "b:c:e:x", "b:c:d"]
    assert [str(b) for b in st.field_blobs()] == ["blob1", "blob3", "blob2"]
    st = schema.Struct(("a:a1", f_a), ("b:b1", f_b), ("a", f_x))
    assert st.field_names() == ["a:a1", "a:x", "b:b1:c:d"]
    with pytest.raises(TypeError):          # b:c:d is a Scalar: a Struct cannot merge into it
        schema.Struct(("a", f_a), ("b", f_b), ("b:c:d", f_x))
    with pytest.raises(ValueError):
        schema.Struct(("a", schema.Scalar()), ("a", schema.Scalar()))
    with pytest.raises(TypeError):
        _nested().a = schema.Scalar()


def test_struct_addition_subtraction_contains():
    s1 = schema.Struct(("a", schema.Scalar()), ("b", schema.Struct(("c", schema.Scalar()))))
    s2 = schema.Struct(("b", schema.Struct(("d", schema.Scalar()))))
    assert (s1 + s2).field_names() == ["a", "b:c", "b:d"]
    assert (s1 + s2 - s2).field_names() == ["a", "b:c"]
    with pytest.raises(TypeError):
        s1 + s1
    with pytest.raises(TypeError):
        s1 + schema.Scalar()
    st = _nested()
    assert "a" in st and "b:c" in st and "b:c:d" in st
    assert not any(k in st for k in ("", "x", "b:c:x", "b:c:d:x"))
    assert st.get("b:c:x", 7) == 7 and isinstance(st["b:c:d"], schema.Scalar)


def test_metadata_survives_clone_and_blob_list():
    s = schema.Struct(("a", schema.Scalar(np.float32)),
                      ("b", schema.Scalar(np.int32, metadata=schema.Metadata(categorical_limit=5))),
                      ("c", schema.List(schema.Scalar(np.int32, metadata=schema.Metadata(categorical_limit=6)))))
    s.c.lengths.set_metadata(schema.Metadata(categorical_limit=7))
    sv = schema.from_blob_list(s, [np.array([3.4]), np.array([2]), np.array([3]), np.array([1, 2, 3])])
    for r in (s, s.clone(), sv):
        assert r.a.metadata is None and r.b.metadata.categorical_limit == 5
        assert r.c.value.metadata.categorical_limit == 6 and r.c.lengths.metadata.categorical_limit == 7
    assert sv.a().dtype == np.float32 and sv.c.value().tolist() == [1, 2, 3]
    assert schema.get_categorical_limit(s.b) == 5 and schema.get_categorical_limit(s.c) == 6
    m = schema.Map(schema.Scalar(np.int64, metadata=schema.Metadata(categorical_limit=9)), np.float32)
    assert schema.get_categorical_limit(m) == 9
    with pytest.raises(ValueError):          # categorical limits belong to integer fields
        schema.Scalar(np.float32, metadata=schema.Metadata(categorical_limit=3))
    assert schema.equal_schemas(s, sv, check_field_metas=True)
    other = s.clone()
    other.b.set_metadata(schema.Metadata(categorical_limit=50))
    assert schema.equal_schemas(s, other) and not schema.equal_schemas(s, other, check_field_metas=True)
    assert not schema.equal_schemas(s, s[["a", "b"]])
    assert schema.is_schema_subset(s[["a", "b"]], s) and not schema.is_schema_subset(s, s["a", "b"])


def test_empty_struct_fields_survive():
    s = schema.Struct(("a", schema.Scalar(np.float32)), ("b", schema.Struct()))
    sv = schema.from_blob_list(s, [np.array([3.4])])
    assert "b" in s.clone().fields and len(sv.b.fields) == 0


def test_scalar_blobs_and_shapes():
    sc = schema.Scalar((np.int32, 5))
    assert sc.field_type() == np.dtype((np.int32, (5,)))
    v = schema.Scalar(np.float32, blob=[[1, 2, 3], [4, 5, 6]])   # inner shape taken from the data
    assert v.field_type().shape == (3,) and v().dtype == np.float32
    assert schema.Scalar(np.int64, blob=7)().shape == (1,)
    assert schema.Scalar(np.int64, blob=[])().shape == (0,)
    with pytest.raises(ValueError):
        schema.Scalar(blob="ambiguous")
    with pytest.raises(ValueError):
        schema.Scalar(np.int32).get()
    with pytest.raises(TypeError):
        schema.Scalar(np.int32).set_value(np.zeros(2, np.float32), throw_on_type_mismatch=True)


def test_column_list_and_dtype_round_trips():
    rec = schema.Struct(("a", np.float32), ("ids", schema.List(np.int64)),
                        ("kv", schema.Map(np.int32, np.float64)))
    back = schema.from_column_list(rec.field_names(), rec.field_types())
    assert back == rec
    assert isinstance(back.ids, schema.List) and back.kv.keys.field_type() == np.int32
    odd = schema.from_column_list(["m:lengths", "m:keys", "m:values"], [np.int32, np.int64, np.float32])
    assert odd.m.field_names() == ["lengths", "values:keys", "values:values"]
    with pytest.raises(ValueError):
        schema.from_column_list(["a", "b"], [np.int32])
    d = schema.from_dtype(np.dtype([("x", np.int32), ("y", np.float32, (3,))]))
    assert d.field_names() == ["x", "y"] and d.y.field_type() == np.dtype((np.float32, (3,)))
    assert schema.as_record({"p": np.int32}) == schema.Struct(("p", np.int32))
    assert schema.as_record([("p", np.int32), ("q", np.float32)]).field_names() == ["p", "q"]
    assert schema.as_record([np.int32, np.int64]).field_names() == ["field_0", "field_1"]
    assert schema.data_type_for_dtype(np.dtype(np.int64)) == core.DataType.INT64
    assert schema.dtype_for_core_type(core.DataType.FLOAT) is np.float32
    with pytest.raises(TypeError):
        schema.data_type_for_dtype(np.dtype(np.void))


def test_list_with_evicted_has_extra_column():
    lwe = schema.ListWithEvicted(schema.Scalar(np.int64))
    assert lwe.field_names() == ["lengths", "values", "_evicted_values"]
    assert lwe.clone_schema() == lwe and lwe["_evicted_values"].field_type() == np.int64


def test_records_of_blobs_through_a_net(executor):
    rec = schema.Struct(("label", schema.Scalar(np.int32)), ("feat", schema.Scalar((np.float32, 2))),
                        ("ids", schema.List(np.int64)))
    net = core.Net("records")
    blobs = schema.NewRecord(net, rec)
    assert [str(b) for b in blobs.field_blobs()] == ["label", "feat", "ids:lengths", "ids:values"]
    arrays = [np.array([1, 0], np.int32), np.arange(4, dtype=np.float32).reshape(2, 2),
              np.array([2, 1], np.int32), np.array([5, 6, 7], np.int64)]
    schema.FeedRecord(blobs, arrays)
    doubled = net.Add([blobs.feat(), blobs.feat()], "doubled")
    workspace.RunNetOnce(net)
    got = schema.FetchRecord(blobs, throw_on_type_mismatch=True)
    for have, want in zip(got.field_blobs(), arrays):
        np.testing.assert_array_equal(have, want)
    np.testing.assert_array_equal(workspace.FetchBlob(doubled), 2 * arrays[1])
    with pytest.raises(ValueError):
        schema.FeedRecord(blobs, arrays[:2])
    with pytest.raises(TypeError):           # a record of arrays is not a record of blobs
        schema.FetchRecord(got)


def test_const_and_empty_records(executor):
    values = schema.Struct(("x", schema.Scalar(np.float32, blob=[1.5, 2.5])),
                           ("n", schema.Scalar(np.int32, blob=[3, 4])))
    init = core.Net("init_records")
    const = schema.ConstRecord(init, values)
    empty = schema.InitEmptyRecord(init, schema.Struct(("i", np.int64), ("m", (np.float32, 3)),
                                                       ("u", schema.Scalar())))
    workspace.RunNetOnce(init)
    fetched = schema.FetchRecord(const)
    np.testing.assert_array_equal(fetched.x(), np.array([1.5, 2.5], np.float32))
    assert fetched.n().dtype == np.int32 and fetched.n().tolist() == [3, 4]
    got = schema.FetchRecord(empty)
    assert got.i().shape == (0,) and got.i().dtype == np.int64
    assert got.m().shape == (0, 3) and got.m().dtype == np.float32
    assert got.u().shape == (0,)
    with pytest.raises(TypeError):
        schema.InitEmptyRecord(core.Net("strict"), schema.Struct(("u", schema.Scalar())), enforce_types=True)
