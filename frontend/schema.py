"""Caffe2's ``schema``: typed, nested record descriptions laid out as flat lists of columns (blobs).

A record is a tree: ``Struct`` (named children), ``List`` (a ``lengths`` column plus the children's
values), and ``Scalar`` leaves, each leaf one column. Readers, writers, datasets and the layers
library pass records around and talk to nets through the flat column list.

    from caffe2.python import core, schema, workspace
    rec = schema.Struct(("label", schema.Scalar(np.int32)),
                        ("ids", schema.List(np.int64)))
    rec.field_names()                  # ['label', 'ids:lengths', 'ids:values']
    net = core.Net("n")
    blobs = schema.NewRecord(net, rec) # same schema, one fresh BlobReference per column
    schema.FeedRecord(blobs, [np.array([1], np.int32), np.array([2], np.int32), np.arange(2)])
    schema.FetchRecord(blobs).ids.lengths()   # array([2], dtype=int32)
"""
from __future__ import annotations

import logging
from collections import OrderedDict, namedtuple
from typing import Any, Iterable, Sequence

import numpy as np

from netjit import core, workspace
from netjit.core import BlobReference

log = logging.getLogger(__name__)

FIELD_SEPARATOR = ":"

FeatureSpec = namedtuple("FeatureSpec", ["feature_type", "feature_names", "feature_ids",
                                         "feature_is_request_only", "desired_hash_size"])
FeatureSpec.__new__.__defaults__ = (None,) * 5


class Metadata(namedtuple("Metadata", ["categorical_limit", "expected_value", "feature_specs"])):
    """Extra facts about a Scalar column.

    ``categorical_limit``: for non-negative integer columns, the largest value plus one (the size of
    an embedding table); ``expected_value``: the typical value (e.g. a list's average length);
    ``feature_specs``: a ``FeatureSpec`` describing the features the column holds.

        schema.Scalar(np.int64, metadata=schema.Metadata(categorical_limit=1000))
    """
    __slots__ = ()


Metadata.__new__.__defaults__ = (None, None, None)


def _join(prefix: str, suffix: str) -> str:
    return FIELD_SEPARATOR.join(p for p in (prefix, suffix) if p)


def _normalize_field(value: Any, keep_blobs: bool = True) -> "Field":
    """What a container stores for a child given as a Field (copied), a type, or a blob."""
    if isinstance(value, Field):
        return value.clone(keep_blobs=keep_blobs)
    if isinstance(value, (type, np.dtype)) or (isinstance(value, tuple) and value and
                                               isinstance(value[0], (type, np.dtype))):
        return Scalar(dtype=value)
    return Scalar(blob=value)


class Field:
    """Abstract node of a schema tree. Subclasses call ``Field.__init__(self, children)`` last."""

    def __init__(self, children: Iterable["Field"]):
        self._parent: tuple[Field | None, int] = (None, 0)
        # Column offset of each child inside this field's flat column list (plus the total).
        self._field_offsets = [0]
        for child in children:
            self._field_offsets.append(self._field_offsets[-1] + len(child.field_names()))

    def clone_schema(self) -> "Field":
        """The same schema without any blobs attached."""
        return self.clone(keep_blobs=False)

    def field_names(self) -> list[str]:
        raise NotImplementedError(f"{type(self).__name__} must define field_names")

    def field_types(self) -> list[np.dtype]:
        raise NotImplementedError(f"{type(self).__name__} must define field_types")

    def field_metadata(self) -> list[Metadata | None]:
        raise NotImplementedError(f"{type(self).__name__} must define field_metadata")

    def field_blobs(self) -> list[Any]:
        raise NotImplementedError(f"{type(self).__name__} must define field_blobs")

    def all_scalars(self) -> list["Scalar"]:
        raise NotImplementedError(f"{type(self).__name__} must define all_scalars")

    def has_blobs(self) -> bool:
        raise NotImplementedError(f"{type(self).__name__} must define has_blobs")

    def clone(self, keep_blobs: bool = True) -> "Field":
        raise NotImplementedError(f"{type(self).__name__} must define clone")

    def _set_parent(self, parent: "Field", relative_id: int) -> None:
        self._parent = (parent, relative_id)

    def _child_base_id(self, child_index: int | None = None) -> int:
        parent, index = self._parent
        pos = 0 if child_index is None else self._field_offsets[child_index]
        if parent is not None:
            pos += parent._child_base_id(index)
        return pos

    def slice(self) -> slice:
        """The range of this field's columns inside the root record's flat column list.

            columns = root.field_blobs(); columns[root.b.slice()]   # b's columns only
        """
        base = self._child_base_id()
        return slice(base, base + len(self.field_names()))

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Field):
            return NotImplemented
        return (self.field_names() == other.field_names() and self.field_types() == other.field_types()
                and self.field_metadata() == other.field_metadata())

    __hash__ = object.__hash__


class List(Field):
    """A variable-length list per row: a ``lengths`` column (int32) then the values' columns.

        schema.List(np.float32).field_names()        # ['lengths', 'values']
    """

    def __init__(self, values: Any, lengths_blob: Any = None):
        if isinstance(lengths_blob, Field):
            if not isinstance(lengths_blob, Scalar):
                raise TypeError(f"List lengths must be a Scalar, got {type(lengths_blob).__name__}")
            self.lengths = _normalize_field(lengths_blob)
        else:
            self.lengths = Scalar(np.int32, lengths_blob)
        self._items = _normalize_field(values)
        self.lengths._set_parent(self, 0)
        self._items._set_parent(self, 1)
        Field.__init__(self, [self.lengths, self._items])

    def _children(self) -> list[Field]:
        return [self.lengths, self._items]

    def field_names(self) -> list[str]:
        return ["lengths"] + [_join("values", n) for n in self._items.field_names()]

    def field_types(self) -> list[np.dtype]:
        return [t for c in self._children() for t in c.field_types()]

    def field_metadata(self) -> list[Metadata | None]:
        return [m for c in self._children() for m in c.field_metadata()]

    def field_blobs(self) -> list[Any]:
        return [b for c in self._children() for b in c.field_blobs()]

    def all_scalars(self) -> list["Scalar"]:
        return [s for c in self._children() for s in c.all_scalars()]

    def has_blobs(self) -> bool:
        return all(c.has_blobs() for c in self._children())

    def clone(self, keep_blobs: bool = True) -> "List":
        return List(_normalize_field(self._items, keep_blobs), _normalize_field(self.lengths, keep_blobs))

    def __repr__(self) -> str:
        return f"List(lengths={self.lengths!r}, _items={self._items!r})"

    def __getattr__(self, item: str) -> Any:
        # A list of structs exposes the struct's fields directly (rec.ids.some_field).
        if item.startswith("__") or item in ("_items", "lengths"):
            raise AttributeError(item)
        items = self.__dict__.get("_items")
        if item in ("value", "items"):
            return items
        if isinstance(items, Struct):
            return getattr(items, item)
        raise AttributeError(f"Field not found in list: {item}")

    def __getitem__(self, item: str) -> Field:
        if item == "lengths":
            return self.lengths
        if item in ("value", "items", "values"):
            return self._items
        if isinstance(self._items, Struct):
            return self._items[item]
        raise KeyError(f"Field not found in list: {item}")


class ListWithEvicted(List):
    """A List that also carries the rows evicted from it (a ``_evicted_values`` column)."""

    def __init__(self, values: Any, lengths_blob: Any = None, evicted_values: Any = None):
        if isinstance(evicted_values, Field):
            self._evicted_values = _normalize_field(evicted_values)
        else:
            self._evicted_values = Scalar(np.int64, evicted_values)
        super().__init__(values, lengths_blob=lengths_blob)
        self._evicted_values._set_parent(self, 2)
        Field.__init__(self, [self.lengths, self._items, self._evicted_values])

    def _children(self) -> list[Field]:
        return [self.lengths, self._items, self._evicted_values]

    def field_names(self) -> list[str]:
        return super().field_names() + ["_evicted_values"]

    def clone(self, keep_blobs: bool = True) -> "ListWithEvicted":
        return ListWithEvicted(_normalize_field(self._items, keep_blobs),
                               _normalize_field(self.lengths, keep_blobs),
                               _normalize_field(self._evicted_values, keep_blobs))

    def __repr__(self) -> str:
        return (f"ListWithEvicted(lengths={self.lengths!r}, _items={self._items!r}, "
                f"_evicted_values={self._evicted_values!r})")

    def __getattr__(self, item: str) -> Any:
        if item == "_evicted_values":
            raise AttributeError(item)
        return super().__getattr__(item)

    def __getitem__(self, item: str) -> Field:
        if item == "_evicted_values":
            return self._evicted_values
        return super().__getitem__(item)


class Struct(Field):
    """Named children sharing one domain (the same number of rows).

    Names may be nested with ``:``; entries with the same prefix merge:

        s = schema.Struct(("a", schema.Scalar()), ("b:c", schema.Scalar()), ("b:d", schema.Scalar()))
        s.field_names()      # ['a', 'b:c', 'b:d'];  s.b.c, s["b:c"] and s["b"]["c"] are one field
    """

    def __init__(self, *fields: tuple[str, Any]):
        for entry in fields:
            if len(entry) != 2:
                raise ValueError(f"Struct fields are (name, field) pairs, got {entry!r}")
            if not entry[0]:
                raise ValueError("Field names cannot be empty")
            if entry[0] == "lengths":
                raise ValueError("Struct cannot contain a field named `lengths` (it is List's column)")
        children: OrderedDict[str, Field] = OrderedDict()
        for name, value in fields:
            field = _normalize_field(value)
            if FIELD_SEPARATOR in name:
                head, rest = name.split(FIELD_SEPARATOR, 1)
                name, field = head, Struct((rest, field))
            if name not in children:
                children[name] = field
            elif isinstance(field, Struct) and isinstance(children[name], Struct):
                children[name] = children[name] + field
            else:
                raise ValueError(f"Duplicate field name: {name}")
        self.fields = children
        for i, field in enumerate(children.values()):
            field._set_parent(self, i)
        Field.__init__(self, children.values())
        self._frozen = True

    def get_children(self) -> list[tuple[str, Field]]:
        return list(self.fields.items())

    def field_names(self) -> list[str]:
        return [_join(name, sub) for name, f in self.fields.items() for sub in f.field_names()]

    def field_types(self) -> list[np.dtype]:
        return [t for f in self.fields.values() for t in f.field_types()]

    def field_metadata(self) -> list[Metadata | None]:
        return [m for f in self.fields.values() for m in f.field_metadata()]

    def field_blobs(self) -> list[Any]:
        return [b for f in self.fields.values() for b in f.field_blobs()]

    def all_scalars(self) -> list["Scalar"]:
        return [s for f in self.fields.values() for s in f.all_scalars()]

    def has_blobs(self) -> bool:
        return all(f.has_blobs() for f in self.fields.values())

    def clone(self, keep_blobs: bool = True) -> "Struct":
        return Struct(*[(k, _normalize_field(v, keep_blobs)) for k, v in self.fields.items()])

    def _get_field_by_nested_name(self, nested_name: str) -> Field | None:
        head, _, rest = nested_name.partition(FIELD_SEPARATOR)
        field = self.fields.get(head)
        if field is None or not rest:
            return field
        try:
            return field[rest]
        except (KeyError, TypeError):
            return None

    def get(self, item: str, default_value: Any = None) -> Any:
        """``self[item]`` or ``default_value`` when there is no such (nested) field."""
        field = self._get_field_by_nested_name(item)
        return default_value if field is None else field

    def __repr__(self) -> str:
        return "Struct({})".format(", ".join(f"{k}={v!r}" for k, v in self.fields.items()))

    def __contains__(self, item: str) -> bool:
        return self._get_field_by_nested_name(item) is not None

    def __len__(self) -> int:
        return len(self.fields)

    def __getitem__(self, item: Any) -> Field:
        """A field by (nested) name or top-level index; a list/tuple of those gives a sub-Struct."""
        if isinstance(item, (list, tuple)):
            names = list(self.fields)
            return Struct(*[(names[k] if isinstance(k, int) else k, self[k]) for k in item])
        if isinstance(item, int):
            return list(self.fields.values())[item]
        field = self._get_field_by_nested_name(item)
        if field is None:
            raise KeyError(f'field "{item}" not found')
        return field

    def __getattr__(self, item: str) -> Any:
        if item.startswith("__"):
            raise AttributeError(item)
        try:
            return self.__dict__["fields"][item]
        except KeyError:
            raise AttributeError(item) from None

    def __setattr__(self, key: str, value: Any) -> None:
        # Fields are fixed once built: assigning one would silently desync the column offsets.
        if getattr(self, "_frozen", False) and not key.startswith("_"):
            raise TypeError("Struct.__setattr__() is disabled after __init__()")
        super().__setattr__(key, value)

    def __add__(self, other: Any) -> "Struct":
        """Merge two Structs; children with the same name merge recursively."""
        if not isinstance(other, Struct):
            return NotImplemented
        merged = OrderedDict(self.get_children())
        for name, right in other.get_children():
            merged[name] = merged[name] + right if name in merged else right
        return Struct(*merged.items())

    def __sub__(self, other: Any) -> "Struct":
        """Remove ``other``'s fields (recursively for nested Structs) from this Struct."""
        if not isinstance(other, Struct):
            return NotImplemented
        kept = OrderedDict(self.get_children())
        for name, right in other.get_children():
            if name not in kept:
                continue
            left = kept[name]
            if isinstance(left, Struct) and isinstance(right, Struct):
                rest = left - right
                if len(rest):
                    kept[name] = rest
                else:
                    del kept[name]
            else:
                del kept[name]
        return Struct(*kept.items())


class Scalar(Field):
    """A leaf: one column, a 1-D tensor of ``dtype`` (or N-D when the dtype has an inner shape).

        schema.Scalar(np.float32)                 # column of floats
        schema.Scalar((np.int32, 5))              # (rows, 5) int32 matrix
        schema.Scalar(np.int64, blob=[1, 2])      # the list becomes an int64 array
    """

    def __init__(self, dtype: Any = None, blob: Any = None, metadata: Metadata | None = None):
        self._metadata: Metadata | None = None
        self.set(dtype, blob, metadata, unsafe=True)
        Field.__init__(self, [])

    def field_names(self) -> list[str]:
        return [""]

    def field_type(self) -> np.dtype:
        return self.dtype

    def field_types(self) -> list[np.dtype]:
        return [self.dtype]

    def field_metadata(self) -> list[Metadata | None]:
        return [self._metadata]

    def has_blobs(self) -> bool:
        return self._blob is not None

    def field_blobs(self) -> list[Any]:
        return [self.get()]

    def all_scalars(self) -> list["Scalar"]:
        return [self]

    def clone(self, keep_blobs: bool = True) -> "Scalar":
        return Scalar(dtype=self._original_dtype, blob=self._blob if keep_blobs else None,
                      metadata=self._metadata)

    def get(self) -> Any:
        """This column's blob (a BlobReference or a numpy array)."""
        if self._blob is None:
            raise ValueError(f"Value is not set for this field (Scalar of {self.dtype})")
        return self._blob

    def __call__(self) -> Any:
        return self.get()

    @property
    def metadata(self) -> Metadata | None:
        return self._metadata

    def set_metadata(self, value: Metadata) -> None:
        if not isinstance(value, Metadata):
            raise TypeError(f"metadata must be Metadata, got {type(value).__name__}")
        self._metadata = value
        self._validate_metadata()

    def _validate_metadata(self) -> None:
        meta = self._metadata
        if meta is not None and meta.categorical_limit is not None and self.dtype is not None:
            if not np.issubdtype(self.dtype.base, np.integer):
                raise ValueError(f"`categorical_limit` needs an integer field, got {self.dtype}")

    def set_value(self, blob: Any, throw_on_type_mismatch: bool = False, unsafe: bool = False) -> None:
        """Attach ``blob``, keeping the declared dtype (checked when ``throw_on_type_mismatch``)."""
        if self.dtype.base != np.void and throw_on_type_mismatch:
            if not isinstance(blob, np.ndarray):
                raise TypeError(f"expected a numpy array of {self.dtype.base}, got {blob!r}")
            if blob.dtype.base != self.dtype.base:
                raise TypeError(f"Expected {self.dtype.base}, got {blob.dtype.base}")
        self.set(dtype=self._original_dtype, blob=blob, unsafe=unsafe)

    def set(self, dtype: Any = None, blob: Any = None, metadata: Metadata | None = None,
            unsafe: bool = False) -> None:
        """Set dtype and/or blob. ``blob`` is a BlobReference or array-like (made an ndarray of
        ``dtype``); a plain string is refused as ambiguous (wrap it in BlobReference or np.array)."""
        if not unsafe:
            log.warning("Scalar should be considered immutable; call Scalar.set() only on a new Scalar "
                        "with unsafe=True")
        if isinstance(blob, (str, bytes)):
            raise ValueError("Passing a str blob to Scalar.set() is ambiguous: pass "
                             "BlobReference(name) or np.array(text)")
        self._original_dtype = dtype
        dt = np.dtype(dtype) if dtype is not None else None
        if blob is not None and not isinstance(blob, BlobReference):
            was_array = isinstance(blob, np.ndarray)
            if dt is not None and dt != np.void:
                blob = np.array(blob, dtype=dt.base)
                if blob.size == 0 and not was_array:
                    blob = blob.reshape((0,) + dt.shape)
            elif not was_array:
                raise TypeError(f"Invalid blob type: {type(blob).__name__} (give a numpy array or a "
                                "BlobReference, or a dtype to convert to)")
            if blob.ndim == 0 and not was_array:
                blob = blob.reshape((1,))
            # As in Caffe2, an untyped Scalar stays np.void even with an array attached; a typed
            # one takes its rows' inner shape from the data.
            if dt is not None and dt != np.void and blob.ndim > 1:
                dt = np.dtype((dt.base, blob.shape[1:]))
        if dt is None:
            dt = np.dtype(np.void)
        if dt.fields:
            raise TypeError("Cannot create a Scalar with a structured dtype; use from_dtype instead")
        self.dtype = dt
        self._blob = blob
        if metadata is not None:
            self.set_metadata(metadata)
        self._validate_metadata()

    def set_type(self, dtype: Any) -> None:
        self._original_dtype = dtype
        self.dtype = np.dtype(dtype if dtype is not None else np.void)
        self._validate_metadata()

    def __repr__(self) -> str:
        return f"Scalar({self.dtype!r}, {self._blob!r}, {self._metadata!r})"

    def id(self) -> int:
        """This column's position in the root record's flat column list."""
        return self._child_base_id()


def Map(keys: Any, values: Any, keys_name: str = "keys", values_name: str = "values",
        lengths_blob: Any = None) -> List:
    """A List of ``Struct((keys_name, keys), (values_name, values))``.

        schema.Map(np.int64, np.float32).field_names()   # ['lengths', 'values:keys', 'values:values']
    """
    return List(Struct((keys_name, keys), (values_name, values)), lengths_blob=lengths_blob)


def NamedTuple(name_prefix: str, *fields: Any) -> Struct:
    return Struct(*[(f"{name_prefix}_{i}", f) for i, f in enumerate(fields)])


def Tuple(*fields: Any) -> Struct:
    """A Struct named ``field_0``, ``field_1``, ... : ``schema.Tuple(np.int32, np.float32)``."""
    return NamedTuple("field", *fields)


def RawTuple(num_fields: int, name_prefix: str = "field") -> Struct:
    """``num_fields`` untyped (np.void) scalars."""
    if not isinstance(num_fields, int) or num_fields < 0:
        raise ValueError(f"num_fields must be a non-negative int, got {num_fields!r}")
    return NamedTuple(name_prefix, *([np.void] * num_fields))


def from_dtype(dtype: Any, _outer_shape: tuple = ()) -> Field:
    """A schema from a numpy dtype: a Scalar, or a Struct for a structured dtype.

        schema.from_dtype(np.dtype([("a", np.int32), ("b", np.float32, 3)])).field_names()  # ['a', 'b']
    """
    dtype = np.dtype(dtype)
    shape = tuple(_outer_shape) + dtype.shape
    if not dtype.fields:
        return Scalar(np.dtype((dtype.base, shape)) if shape else dtype.base)
    children = []
    for name in dtype.names:
        sub, _offset = dtype.fields[name][:2]
        children.append((name, from_dtype(sub, _outer_shape=shape)))
    return Struct(*children)


class _ColumnNode:
    """One name segment while rebuilding a schema from column names (see from_column_list)."""

    def __init__(self, name: str):
        self.name = name
        self.children: OrderedDict[str, _ColumnNode] = OrderedDict()
        self.field: Field | None = None

    def to_field(self) -> Field:
        if self.field is not None:
            if self.children:
                raise ValueError(f"column {self.name!r} is both a leaf and a parent of other columns")
            return self.field
        names = set(self.children)
        # Lengths are always int32 in Caffe2's lists; only the column's blob carries over.
        lengths = self.children.get("lengths")
        lengths_blob = lengths.field._blob if lengths is not None and lengths.field is not None else None
        if names == {"lengths", "values"}:
            return List(self.children["values"].to_field(), lengths_blob=lengths_blob)
        if names == {"lengths", "keys", "values"}:
            return Map(self.children["keys"].to_field(), self.children["values"].to_field(),
                       lengths_blob=lengths_blob)
        return Struct(*[(n, c.to_field()) for n, c in self.children.items()])


def from_column_list(col_names: Sequence[str], col_types: Sequence[Any] | None = None,
                     col_blobs: Sequence[Any] | None = None,
                     col_metadata: Sequence[Any] | None = None) -> Field:
    """Rebuild a schema from flat column names (``a``, ``b:lengths``, ``b:values`` ...): the inverse
    of ``field_names()``; ``lengths``+``values`` siblings become a List.

        schema.from_column_list(["a", "b:lengths", "b:values"]) == \\
            schema.Struct(("a", schema.Scalar()), ("b", schema.List(np.void)))
    """
    n = len(col_names)
    col_types = [None] * n if col_types is None else list(col_types)
    col_blobs = [None] * n if col_blobs is None else list(col_blobs)
    col_metadata = [None] * n if col_metadata is None else list(col_metadata)
    for what, seq in (("col_types", col_types), ("col_blobs", col_blobs), ("col_metadata", col_metadata)):
        if len(seq) != n:
            raise ValueError(f"col_names and {what} must have the same length ({n} vs {len(seq)})")
    root = _ColumnNode("")
    for name, dtype, blob, meta in zip(col_names, col_types, col_blobs, col_metadata):
        node = root
        for part in name.split(FIELD_SEPARATOR):
            node = node.children.setdefault(part, _ColumnNode(part))
        if node.field is not None:
            raise ValueError(f"column {name!r} appears twice")
        node.field = Scalar(dtype=dtype, blob=blob, metadata=meta)
    return root.to_field()


def from_blob_list(schema: Field, values: Any, throw_on_type_mismatch: bool = False) -> Field:
    """A copy of ``schema`` whose columns hold ``values`` (one per column, in field_names order)."""
    if not isinstance(schema, Field):
        raise TypeError(f"Argument `schema` must be a Field, got {type(schema).__name__}")
    if isinstance(values, BlobReference):
        values = [values]
    record = schema.clone_schema()
    scalars = record.all_scalars()
    if len(scalars) != len(values):
        raise ValueError(f"Values must have {len(scalars)} elements, got {len(values)}")
    for scalar, value in zip(scalars, values):
        scalar.set_value(value, throw_on_type_mismatch, unsafe=True)
    return record


def as_record(value: Any) -> Field:
    """A Field from a Field, a dict / list of (name, value) pairs (Struct), a list (Tuple), a dtype
    or a blob (Scalar)."""
    if isinstance(value, Field):
        return value
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(f, tuple) and len(f) == 2 and isinstance(f[0], str) for f in value):
            return Struct(*[(k, as_record(v)) for k, v in value])
        return Tuple(*[as_record(f) for f in value])
    if isinstance(value, dict):
        return Struct(*[(k, as_record(v)) for k, v in value.items()])
    return _normalize_field(value)


def _check_blob_refs(record: Field, what: str) -> list[BlobReference]:
    if not isinstance(record, Field):
        raise TypeError(f"{what} needs a schema.Field, got {type(record).__name__}")
    blobs = record.field_blobs()
    for name, blob in zip(record.field_names(), blobs):
        if not isinstance(blob, BlobReference):
            raise TypeError(f"{what}: field {name!r} holds {type(blob).__name__}, not a BlobReference")
    return blobs


def FetchRecord(blob_record: Field, ws: Any = None, throw_on_type_mismatch: bool = False) -> Field:
    """The same record with each BlobReference replaced by the blob's current value.

        values = schema.FetchRecord(blob_record); values.label()   # a numpy array
    """
    blobs = _check_blob_refs(blob_record, "FetchRecord")
    if ws is None:
        arrays = [workspace.FetchBlob(str(b)) for b in blobs]
    else:
        arrays = [ws.blobs[str(b)].fetch() for b in blobs]
    return from_blob_list(blob_record, arrays, throw_on_type_mismatch)


def FeedRecord(blob_record: Field, arrays: Any, ws: Any = None) -> None:
    """Feed ``arrays`` (a list, one per column, or a record of arrays) into the record's blobs."""
    blobs = _check_blob_refs(blob_record, "FeedRecord")
    if isinstance(arrays, Field):
        arrays = arrays.field_blobs()
    if len(arrays) != len(blobs):
        raise ValueError(f"FeedRecord: the record has {len(blobs)} columns "
                         f"({blob_record.field_names()}) but {len(arrays)} arrays were given")
    for blob, array in zip(blobs, arrays):
        if ws is None:
            workspace.FeedBlob(str(blob), array)
        else:
            ws.create_blob(str(blob)).feed(array)


def NewRecord(net: Any, schema: Field) -> Field:
    """The schema with a fresh, net-unique BlobReference per column (named after the column)."""
    if isinstance(schema, Scalar):
        result = schema.clone()
        result.set_value(blob=net.NextScopedBlob("unnamed_scalar"), unsafe=True)
        return result
    if not isinstance(schema, Field):
        raise TypeError(f"NewRecord needs a schema.Field, got {type(schema).__name__}")
    return from_blob_list(schema, [net.NextScopedBlob(prefix=name) for name in schema.field_names()])


def ConstRecord(net: Any, array_record: Field) -> Field:
    """A record of blobs that ``net`` fills with the record's arrays (``net.Const``)."""
    blob_record = NewRecord(net, array_record)
    for blob, array in zip(blob_record.field_blobs(), array_record.field_blobs()):
        net.Const(array, blob)
    return blob_record


def InitEmptyRecord(net: Any, schema_or_record: Field, enforce_types: bool = False) -> Field:
    """Add ConstantFill ops to ``net`` that make every column an empty (0-row) tensor of its type.
    Columns whose dtype has no Caffe2 DataType (np.void) get an empty float tensor, unless
    ``enforce_types`` (then TypeError)."""
    record = schema_or_record if schema_or_record.has_blobs() else NewRecord(net, schema_or_record)
    for dtype, blob in zip(record.field_types(), record.field_blobs()):
        try:
            data_type = data_type_for_dtype(dtype)
        except TypeError:
            if enforce_types:
                raise
            net.ConstantFill([], blob, shape=[0])
            continue
        net.ConstantFill([], blob, shape=[0] + list(dtype.shape), dtype=data_type)
    return record


_DATA_TYPE_FOR_DTYPE = [
    (np.str_, core.DataType.STRING),
    (np.object_, core.DataType.STRING),
    (np.float16, core.DataType.FLOAT16),
    (np.float32, core.DataType.FLOAT),
    (np.float64, core.DataType.DOUBLE),
    (np.bool_, core.DataType.BOOL),
    (np.int8, core.DataType.INT8),
    (np.int16, core.DataType.INT16),
    (np.int32, core.DataType.INT32),
    (np.int64, core.DataType.INT64),
    (np.uint8, core.DataType.UINT8),
    (np.uint16, core.DataType.UINT16),
]


def data_type_for_dtype(dtype: Any) -> int:
    """The ``core.DataType`` for a numpy dtype: ``data_type_for_dtype(np.dtype(np.int32))`` is INT32."""
    base = np.dtype(dtype).base
    for np_type, data_type in _DATA_TYPE_FOR_DTYPE:
        if base == np_type:
            return data_type
    raise TypeError(f"Unknown dtype: {base} (no Caffe2 DataType for it)")


def dtype_for_core_type(core_type: int) -> type:
    """The numpy type for a ``core.DataType`` (the inverse of data_type_for_dtype)."""
    for np_type, data_type in _DATA_TYPE_FOR_DTYPE:
        if data_type == core_type:
            return np_type
    raise TypeError(f"Unknown core type: {core_type}")


def is_schema_subset(schema: Field, original_schema: Field) -> bool:
    """True when every column name of ``schema`` is also in ``original_schema``."""
    return set(schema.field_names()) <= set(original_schema.field_names())


def equal_schemas(schema: Field, original_schema: Field, check_field_names: bool = True,
                  check_field_types: bool = True, check_field_metas: bool = False) -> bool:
    """Compare two schemas' column names, dtypes and (optionally) metadata."""
    if not isinstance(schema, Field) or not isinstance(original_schema, Field):
        raise TypeError("equal_schemas compares two schema.Field objects")
    if check_field_names and schema.field_names() != original_schema.field_names():
        return False
    if check_field_types and schema.field_types() != original_schema.field_types():
        return False
    if check_field_metas and schema.field_metadata() != original_schema.field_metadata():
        return False
    return True


def schema_check(schema: Any, previous: Field | None = None) -> Field:
    """``as_record(schema)``, asserting it equals ``previous`` when given."""
    record = as_record(schema)
    if previous is not None and not equal_schemas(record, previous):
        raise ValueError(f"schema {record!r} differs from the expected {previous!r}")
    return record


def attach_metadata_to_scalars(field: Field, metadata: Metadata) -> None:
    for scalar in field.all_scalars():
        scalar.set_metadata(metadata)


def get_categorical_limit(record: Field) -> int | None:
    """The ``categorical_limit`` of a Scalar, a List's values, or a Map's keys."""
    if isinstance(record, List):
        items = record.items
        key = items["keys"] if isinstance(items, Struct) and "keys" in items else items
    else:
        key = record
    if not isinstance(key, Scalar):
        raise TypeError(f"get_categorical_limit needs a Scalar, List or Map, got {record!r}")
    if key.metadata is None:
        raise ValueError(f"field {key!r} has no metadata")
    return key.metadata.categorical_limit


# Caffe2 spelled these as free functions too (some scripts call them that way).
def field_names(record: Field) -> list[str]:
    return record.field_names()


def field_types(record: Field) -> list[np.dtype]:
    return record.field_types()


def field_blobs(record: Field) -> list[Any]:
    return record.field_blobs()


def clone_schema(record: Field) -> Field:
    return record.clone_schema()
