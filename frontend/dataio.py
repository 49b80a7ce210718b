"""Caffe2's ``dataio``: the Reader / Writer interfaces data pipelines are built from.

A Reader adds ops to a net that produce the next batch (a list of blobs, or a ``schema`` record) and
a scalar bool ``should_stop`` blob that turns true at the end of the data; an execution step that
loops on that blob is a read loop. A Writer adds ops that consume batches.

    from caffe2.python import core, dataio, workspace
    reader = dataio.CountUntil(3)                 # yields 0, 1, 2, then stops
    init, finish = core.Net("init"), core.Net("finish")
    reader.setup_ex(init, finish)
    nets, should_stop, fields = reader.read_record_ex(init, finish)
    total = init.ConstantFill([], "total", shape=[], value=0, dtype=core.DataType.INT64)
    consume = core.Net("consume"); consume.Add([total, fields.iter()], total)
    plan = core.Plan("read_all")
    plan.AddStep(core.execution_step("init", init))
    plan.AddStep(core.execution_step("loop", nets + [consume], should_stop_blob=should_stop))
    workspace.RunPlan(plan)                       # FetchBlob("total") == 3

Ops used: CreateCounter, CountUp, CountDown, ConstantFill, Copy, Or (all in netjit's registry).
Caffe2's dataset readers (``dataset.py``: CreateTreeCursor, ReadNextBatch ...) are not here.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from netjit import core
from netjit.schema import Field, Struct, from_blob_list


class Reader:
    """Base class of readers. Subclasses define ``read(read_net) -> (should_stop, fields)`` (or the
    ``setup_ex``/``read_ex`` pair for readers with global state), optionally ``reset(net)``."""

    def __init__(self, schema: Field | None = None):
        if schema is not None and not isinstance(schema, Field):
            raise TypeError(f"a Reader's schema must be a schema.Field, got {type(schema).__name__}")
        self._schema = schema

    def schema(self) -> Field:
        if self._schema is None:
            raise ValueError(f"{type(self).__name__} was given no schema")
        return self._schema

    def _set_schema(self, schema: Field | None) -> None:
        self._schema = schema

    def setup_ex(self, init_net: core.Net, finish_net: core.Net) -> None:
        """Add ops run once before reading starts (``init_net``) and after it ends (``finish_net``)."""

    def read_ex(self, local_init_net: core.Net, local_finish_net: core.Net) -> tuple[list, Any, Any]:
        """``(nets, should_stop, fields)``: the nets to run per batch, in order."""
        read_net = core.Net("reader_body")
        should_stop, fields = self.read(read_net)
        return [read_net], should_stop, fields

    def read_record_ex(self, local_init_net: core.Net, local_finish_net: core.Net) -> tuple[list, Any, Any]:
        """``read_ex`` with the fields wrapped in this reader's schema (when it has one)."""
        nets, should_stop, fields = self.read_ex(local_init_net, local_finish_net)
        if self._schema is not None:
            fields = from_blob_list(self._schema, fields)
        return nets, should_stop, fields

    def read(self, read_net: core.Net) -> tuple[Any, Sequence[Any]]:
        """Add ops to ``read_net`` that read the next batch; return ``(should_stop, field_blobs)``."""
        raise NotImplementedError(f"{type(self).__name__} must define read() or read_ex()")

    def reset(self, net: core.Net) -> None:
        """Add ops to ``net`` that rewind the reader (for readers that can read again)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be reset")

    def read_record(self, read_net: core.Net) -> tuple[Any, Any]:
        should_stop, fields = self.read(read_net)
        if self._schema is not None:
            fields = from_blob_list(self._schema, fields)
        return should_stop, fields

    def execution_step(self, reader_net_name: str | None = None,
                       external_should_stop: Any = None) -> tuple[Any, Any]:
        """``(read_step, fields)``: a step looping a net of this reader's read ops until the data (or
        ``external_should_stop``) ends. Add consumer nets to the step: ``read_step.AddNet(net)``."""
        reader_net = core.Net(reader_net_name or "reader")
        should_stop, fields = self.read_record(reader_net)
        if external_should_stop is not None:
            should_stop = reader_net.Or([external_should_stop, should_stop])
        step = core.execution_step(f"{reader_net_name}_step", reader_net, should_stop_blob=should_stop)
        return step, fields


class Writer:
    """Base class of writers: ``write(net, fields)`` adds ops writing one batch; ``commit(finish_net)``
    adds ops that mark the end of the data."""

    _schema: Field | None = None

    def schema(self) -> Field | None:
        return self._schema

    def write(self, writer_net: core.Net, fields: Sequence[Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define write()")

    def write_record(self, writer_net: core.Net, fields: Any) -> None:
        if isinstance(fields, Field):
            self._schema = fields
            fields = fields.field_blobs()
        self.write(writer_net, fields)

    def setup_ex(self, init_net: core.Net, finish_net: core.Net) -> None:
        self.commit(finish_net)

    def write_ex(self, fields: Sequence[Any], local_init_net: core.Net, local_finish_net: core.Net,
                 stop_blob: Any) -> list[core.Net]:
        write_net = core.Net("write_net")
        self.write(write_net, fields)
        return [write_net]

    def write_record_ex(self, fields: Any, local_init_net: core.Net, local_finish_net: core.Net,
                        stop_blob: Any = None) -> tuple[list[core.Net], Any]:
        if isinstance(fields, Field):
            self._schema = fields
            fields = fields.field_blobs()
        if stop_blob is None:
            stop_blob = local_init_net.NextName("dequeue_status")
        return self.write_ex(fields, local_init_net, local_finish_net, stop_blob), stop_blob

    def commit(self, finish_net: core.Net) -> None:
        """Add end-of-data ops to ``finish_net``; nothing by default."""


class ReaderBuilder:
    """Makes readers for distributed reading: one per split of the data."""

    def schema(self) -> Field:
        raise NotImplementedError(f"{type(self).__name__} must define schema()")

    def setup(self, **kwargs: Any) -> Any:
        """Prepare the builder (e.g. open data sources); nothing by default."""

    def enqueue_splits(self, net: core.Net, split_queue: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define enqueue_splits()")

    def splits(self, net: core.Net) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define splits()")

    def new_reader(self, split_reader: Any = None, **kwargs: Any) -> Reader:
        raise NotImplementedError(f"{type(self).__name__} must define new_reader()")


class PipedReaderBuilder(ReaderBuilder):
    """Wraps another builder: each reader it makes is passed through ``piper`` (e.g. to append a
    processing pipeline), whose result is a Reader or has a ``reader()`` method."""

    def __init__(self, builder: ReaderBuilder, piper: Callable[[Reader], Any]):
        self._builder = builder
        self._piper = piper

    def schema(self) -> Field:
        return self._builder.schema()

    def setup(self, **kwargs: Any) -> Any:
        return self._builder.setup(**kwargs)

    def enqueue_splits(self, net: core.Net, split_queue: Any) -> Any:
        return self._builder.enqueue_splits(net, split_queue)

    def splits(self, net: core.Net) -> Any:
        return self._builder.splits(net)

    def new_reader(self, split_reader: Any = None, **kwargs: Any) -> Reader:
        output = self._piper(self._builder.new_reader(split_reader, **kwargs))
        return output if isinstance(output, Reader) else output.reader()


class Pipe:
    """Base of channels with a writer end and a reader end (queues); counts the ends handed out and,
    with ``obj_key``, records itself on the nets that set those ends up."""

    def __init__(self, schema: Field | None = None, obj_key: str | None = None):
        self._num_writers = 0
        self._num_readers = 0
        self._schema = schema
        self._obj_key = obj_key

    def schema(self) -> Field | None:
        return self._schema

    def setup(self, global_init_net: core.Net) -> None:
        """Add ops that create the channel; nothing by default."""

    def reader(self) -> Reader:
        raise NotImplementedError(f"{type(self).__name__} must define reader()")

    def writer(self) -> Writer:
        raise NotImplementedError(f"{type(self).__name__} must define writer()")

    def num_readers(self) -> int:
        return self._num_readers

    def num_writers(self) -> int:
        return self._num_writers

    def _new_writer(self, writer_schema: Field | None, writer_init_net: core.Net) -> None:
        if writer_schema is not None and self._schema is None:
            self._schema = writer_schema
        self._num_writers += 1
        if self._obj_key is not None:
            writer_init_net.add_attribute(self._obj_key, self)

    def _new_reader(self, reader_init_net: core.Net) -> None:
        self._num_readers += 1
        if self._obj_key is not None:
            reader_init_net.add_attribute(self._obj_key, self)


class CounterReader(Reader):
    """Yields 0, 1, 2, ... (schema ``Struct(('iter', np.int64))``) and never stops by itself."""

    def __init__(self) -> None:
        super().__init__(schema=Struct(("iter", np.int64)))
        self.counter: Any = None
        self.should_stop: Any = None

    def setup_ex(self, global_init_net: core.Net, global_finish_net: core.Net) -> None:
        if self.counter is None:
            self.counter = global_init_net.CreateCounter([], init_count=0)
            self.should_stop = global_init_net.ConstantFill([], shape=[], dtype=core.DataType.BOOL, value=False)

    def read_ex(self, local_init_net: core.Net, local_finish_net: core.Net) -> tuple[list, Any, Any]:
        if self.counter is None:
            raise RuntimeError("CounterReader: call setup_ex(init_net, finish_net) before read_ex")
        count_net = core.Net("limited_reader_counter")
        value = count_net.CountUp([self.counter], 1)
        return [count_net], self.should_stop, [value]


class ReaderWithLimit(Reader):
    """Reads at most ``num_iter`` batches of ``reader`` (``None``: no limit). After the loop,
    ``data_finished()`` is a bool blob: true when the inner reader ran out of data, false when the
    limit stopped it."""

    def __init__(self, reader: Reader, num_iter: int | None = 1):
        super().__init__(schema=reader._schema)
        self.reader = reader
        self.num_iter = num_iter
        net = core.Net("reader_with_limit")
        self._data_finished = net.AddExternalInput(net.NextName("data_finished"))
        self.counter = net.AddExternalInput(net.NextName("counter")) if num_iter is not None else None

    def setup_ex(self, global_init_net: core.Net, global_finish_net: core.Net) -> None:
        if self.counter is not None:
            global_init_net.CreateCounter([], [self.counter], init_count=int(self.num_iter))
        self.reader.setup_ex(global_init_net, global_finish_net)
        global_init_net.ConstantFill([], [self._data_finished], shape=[], value=False, dtype=core.DataType.BOOL)

    def read_ex(self, local_init_net: core.Net, local_finish_net: core.Net) -> tuple[list, Any, Any]:
        # The limit check runs first: CountDown turns true once num_iter batches were read, and the
        # step stops on it before the inner reader is asked for another batch.
        count_net = core.Net("limited_reader_counter")
        if self.counter is not None:
            should_stop = count_net.CountDown([self.counter], 1)
        else:
            should_stop = count_net.ConstantFill([], 1, shape=[], value=False, dtype=core.DataType.BOOL)
        nets, inner_stop, fields = self.reader.read_ex(local_init_net, local_finish_net)
        self._set_schema(self.reader._schema)
        # Writing the inner reader's flag into the same stop blob ends the loop when it runs dry.
        check_done = core.Net("limited_reader_post")
        check_done.Copy(inner_stop, should_stop)
        check_done.Or([self._data_finished, inner_stop], [self._data_finished])
        return [count_net] + nets + [check_done], should_stop, fields

    def data_finished(self) -> core.BlobReference:
        return self._data_finished


def CountUntil(num_iter: int) -> ReaderWithLimit:
    """A reader yielding 0 .. num_iter-1 (``Struct(('iter', np.int64))``)."""
    return ReaderWithLimit(CounterReader(), num_iter)


class CompositeReader(Reader):
    """Reads from several readers in lockstep; its schema is ``Struct((name, reader.schema()) ...)``
    and it stops as soon as any of them stops."""

    def __init__(self, names: Sequence[str], readers: Sequence[Reader]):
        if len(names) != len(readers):
            raise ValueError(f"CompositeReader: {len(names)} names for {len(readers)} readers")
        super().__init__(schema=Struct(*[(n, r.schema()) for n, r in zip(names, readers)]))
        self._names = list(names)
        self._readers = list(readers)

    def setup_ex(self, init_net: core.Net, finish_net: core.Net) -> None:
        for reader in self._readers:
            reader.setup_ex(init_net, finish_net)

    def read_ex(self, local_init_net: core.Net, local_finish_net: core.Net) -> tuple[list, Any, Any]:
        # Readers may rewrite their stop blob later in the same iteration (ReaderWithLimit copies
        # the inner reader's flag over its limit flag), relying on the step checking it after
        # every net. So fold each reader's flag into the common stop blob right after each of its
        # nets; the first net of an iteration clears it.
        should_stop = local_init_net.NextName("composite_should_stop")
        clear = core.Net("composite_reader_clear")
        clear.ConstantFill([], should_stop, shape=[], value=False, dtype=core.DataType.BOOL)
        nets: list[core.Net] = [clear]
        fields: list[Any] = []
        for reader in self._readers:
            sub_nets, stop, sub_fields = reader.read_ex(local_init_net, local_finish_net)
            fold = core.Net("composite_reader_fold")
            fold.Or([should_stop, stop], should_stop)
            for net in sub_nets:
                nets += [net, fold]
            fields += list(sub_fields.field_blobs() if isinstance(sub_fields, Field) else sub_fields)
        return nets, should_stop, fields
