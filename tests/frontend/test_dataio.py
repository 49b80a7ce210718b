"""caffe2.python.dataio: readers and writers driven by read loops (execution steps on a stop blob)."""
from __future__ import annotations

import numpy as np
import pytest

from caffe2.python import core, dataio, schema, workspace


@pytest.fixture(params=["reference", "compiled"])
def executor(request, monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", request.param)
    return request.param


class _RowsReader(dataio.Reader):
    """Test reader over an in-workspace table: row i of ``table`` per read, stopping once every row
    was read (CountUp gives the row index, Gather the row, GE the end-of-data flag)."""

    def __init__(self, table: str, num_rows: int, start: int = 0):
        super().__init__(schema.Struct(("value", schema.Scalar((np.float32, 2)))))
        self.table, self.num_rows, self.start = table, num_rows, start
        self.counter = None

    def setup_ex(self, init_net, finish_net):
        self.counter = init_net.CreateCounter([], init_count=self.start)
        self.ones = init_net.ConstantFill([], 1, shape=[self.num_rows], value=1, dtype=core.DataType.INT32)

    def read(self, read_net):
        index = read_net.CountUp([self.counter], 1)
        last = read_net.ConstantFill([], 1, shape=[], value=self.num_rows, dtype=core.DataType.INT64)
        should_stop = read_net.GE([index, last])
        # Clamp so the read past the end (whose batch is never consumed) still indexes a real row.
        safe = read_net.Clip([read_net.Cast([index], 1, to=core.DataType.FLOAT)], 1,
                             min=0.0, max=float(self.num_rows - 1))
        indices = read_net.ExpandDims([read_net.Cast([safe], 1, to=core.DataType.INT64)], 1, dims=[0])
        row = read_net.LengthsGather([self.table, self.ones, indices], 1)     # a batch of one row
        return should_stop, [row]


class _SumWriter(dataio.Writer):
    """Test writer: adds every batch into an accumulator blob."""

    def __init__(self, accumulator: str):
        self.accumulator = accumulator

    def write(self, writer_net, fields):
        writer_net.Add([self.accumulator, fields[0]], self.accumulator)


def _run_loop(reader, consume=None):
    """Set the reader up, loop its read nets (plus ``consume(fields)`` nets) until it stops."""
    init, finish = core.Net("init"), core.Net("finish")
    reader.setup_ex(init, finish)
    nets, should_stop, fields = reader.read_record_ex(init, finish)
    extra = consume(init, fields) if consume else []
    plan = core.Plan("read_loop")
    plan.AddStep(core.execution_step("init", init))
    plan.AddStep(core.execution_step("loop", nets + extra, should_stop_blob=should_stop))
    plan.AddStep(core.execution_step("finish", finish))
    workspace.RunPlan(plan)
    return fields


def _collector(init, fields):
    """A consumer net summing the counter values and counting the batches it saw."""
    total = init.ConstantFill([], "total", shape=[1], value=0, dtype=core.DataType.INT64)
    seen = init.ConstantFill([], "seen", shape=[1], value=0, dtype=core.DataType.INT64)
    one = init.ConstantFill([], "one", shape=[1], value=1, dtype=core.DataType.INT64)
    net = core.Net("consume")
    net.Add([total, fields.iter()], total)
    net.Add([seen, one], seen)
    return [net]


def test_count_until_reads_each_value_once(executor):
    reader = dataio.CountUntil(4)
    fields = _run_loop(reader, _collector)
    assert isinstance(fields, schema.Struct) and fields.field_names() == ["iter"]
    assert reader.schema() == schema.Struct(("iter", np.int64))
    assert int(workspace.FetchBlob("seen")[0]) == 4
    assert int(workspace.FetchBlob("total")[0]) == 0 + 1 + 2 + 3
    assert not bool(workspace.FetchBlob(reader.data_finished()))     # stopped by the limit


def test_limit_larger_than_data_reports_data_finished(executor):
    workspace.FeedBlob("table", np.arange(6, dtype=np.float32).reshape(3, 2))
    workspace.FeedBlob("acc", np.zeros((1, 2), np.float32))
    reader = dataio.ReaderWithLimit(_RowsReader("table", 3), num_iter=10)
    writer = _SumWriter("acc")

    def consume(init, fields):
        net = core.Net("write")
        writer.write_record(net, fields)
        return [net]

    _run_loop(reader, consume)
    np.testing.assert_allclose(workspace.FetchBlob("acc"), np.array([[0 + 2 + 4, 1 + 3 + 5]], np.float32))
    assert bool(workspace.FetchBlob(reader.data_finished()))        # the table ran out first
    assert writer.schema().field_names() == ["value"]


def test_reader_execution_step_with_external_stop(executor):
    workspace.FeedBlob("table", np.ones((5, 2), np.float32))
    workspace.FeedBlob("acc", np.zeros((1, 2), np.float32))
    workspace.FeedBlob("never", np.array(False))
    reader = _RowsReader("table", 5, start=2)
    init = core.Net("rows_init")
    reader.setup_ex(init, core.Net("rows_finish"))
    step, fields = reader.execution_step("rows", external_should_stop="never")
    consume = core.Net("consume")
    consume.Add(["acc", fields.value()], "acc")
    step.AddNet(consume)            # Caffe2's pattern: consumers join the read step's loop
    workspace.RunNetOnce(init)
    workspace.RunPlan(core.Plan(step))
    # Rows 2, 3, 4 are read and consumed; the read past the end stops the step before the consumer.
    np.testing.assert_allclose(workspace.FetchBlob("acc"), np.array([[3.0, 3.0]], np.float32))
    assert isinstance(fields, schema.Struct)


def test_composite_reader_stops_with_its_shortest_reader(executor):
    reader = dataio.CompositeReader(["a", "b"], [dataio.CountUntil(5), dataio.CountUntil(2)])
    assert reader.schema().field_names() == ["a:iter", "b:iter"]

    def consume(init, fields):
        seen = init.ConstantFill([], "seen", shape=[1], value=0, dtype=core.DataType.INT64)
        one = init.ConstantFill([], "one", shape=[1], value=1, dtype=core.DataType.INT64)
        net = core.Net("consume")
        net.Add([seen, one], seen)
        net.Copy(fields.b.iter(), "last_b")
        return [net]

    _run_loop(reader, consume)
    assert int(workspace.FetchBlob("seen")[0]) == 2
    assert int(workspace.FetchBlob("last_b")) == 1         # b yielded 0, 1


def test_base_classes_and_builders():
    with pytest.raises(TypeError):
        dataio.Reader(schema="not a schema")
    with pytest.raises(ValueError):
        dataio.Reader().schema()
    with pytest.raises(NotImplementedError):
        dataio.Reader().read(core.Net("r"))
    with pytest.raises(NotImplementedError):
        dataio.Writer().write(core.Net("w"), [])

    class _Builder(dataio.ReaderBuilder):
        def schema(self):
            return schema.Struct(("iter", np.int64))

        def new_reader(self, split_reader=None, **kwargs):
            return dataio.CountUntil(3)

    piped = dataio.PipedReaderBuilder(_Builder(), lambda r: dataio.ReaderWithLimit(r, num_iter=1))
    made = piped.new_reader()
    assert isinstance(made, dataio.ReaderWithLimit) and made.num_iter == 1
    assert piped.schema() == schema.Struct(("iter", np.int64))

    pipe = dataio.Pipe(obj_key="my_pipe")
    net = core.Net("pipe_init")
    pipe._new_writer(schema.Struct(("x", np.float32)), net)
    pipe._new_reader(net)
    assert (pipe.num_writers(), pipe.num_readers()) == (1, 1)
    assert pipe.schema().field_names() == ["x"] and net.get_attributes("my_pipe") == [pipe, pipe]
