"""The random-filler fast paths give the reference's values bit for bit from the same generator."""
import numpy as np
import pytest

from netjit.compiler.codegen.numba_cpu import fill_for
from netjit.compiler.ir import import_netdef
from netjit.compiler.ops.registry import lookup
from netjit.compiler.passes.infer import infer_types
from netjit.runtime.context import OpContext
from tests.compiler.helpers import netdef, op

CASES = [
    ("GaussianFill", dict(shape=[3, 4], mean=0.0, std=1.0)),
    ("GaussianFill", dict(shape=[5], mean=1.5, std=0.25)),
    ("GaussianFill", dict(shape=[2, 2], mean=0.0, std=3.0)),
    ("UniformFill", dict(shape=[4, 3], min=-2.0, max=5.0)),
    ("UniformFill", dict(shape=[7], min=0.0, max=1.0)),
    ("XavierFill", dict(shape=[6, 4])),
    ("MSRAFill", dict(shape=[3, 5, 2])),
    ("GaussianFill", dict(shape=[40, 50], mean=0.5, std=2.0)),     # too big to pool
]


@pytest.mark.parametrize("op_type,args", CASES)
def test_fast_path_matches_reference(op_type, args):
    net = netdef("fill", [op(op_type, [], ["Y"], **args)])
    g, _ = infer_types(import_netdef(net), {})
    node = g.nodes[0]
    maker = fill_for(node, g.values)
    assert maker is not None
    draw = maker(np.random.default_rng(1234))
    ctx = OpContext(args=node.attrs, op=node.proto, rng=np.random.default_rng(1234))
    previous = None
    for _ in range(150):   # the stream continues identically across runs (and pool refills)
        want = lookup(op_type).reference(ctx)
        got = draw()
        assert previous is None or not np.shares_memory(got, previous)
        previous = got
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_invalid_args_leave_it_to_the_reference():
    net = netdef("fill", [op("UniformFill", [], ["Y"], shape=[2], min=3.0, max=1.0),
                          op("GaussianFill", [], ["Z"], shape=[2], std=-1.0)])
    g, _ = infer_types(import_netdef(net), {})
    assert all(fill_for(n, g.values) is None for n in g.nodes)
