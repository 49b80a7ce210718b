"""The ops added for Caffe2 conformance (issue 13) under malformed inputs: random shapes and dtypes
(0-d, empty, int, bool) give a netjit error or a result, never a raw numpy/Python exception, and
the compiled executor agrees with the reference (same result, or a netjit error as well)."""
import numpy as np
import pytest

from netjit.runtime.errors import NetJitError
from tests.compiler.helpers import assert_same_blobs, netdef, op, run_compiled, run_reference
from tests.ops.harness import run_op

# op -> (number of inputs, number of outputs)
OPS = {"Swish": (1, 1), "SwishGradient": (3, 1), "Softsign": (1, 1), "SoftsignGradient": (2, 1), "Sign": (1, 1),
       "Max": (3, 1), "Min": (2, 1), "MaxGradient": (4, 2), "MinGradient": (3, 1), "NanCheck": (1, 1),
       "Size": (1, 1), "DotProduct": (2, 1), "DotProductGradient": (3, 2), "L1Distance": (2, 1),
       "L1DistanceGradient": (3, 2), "CosineSimilarity": (2, 1), "CosineSimilarityGradient": (3, 2),
       "SigmoidCrossEntropyWithLogits": (2, 1), "SigmoidCrossEntropyWithLogitsGradient": (3, 1),
       "WeightedSigmoidCrossEntropyWithLogits": (3, 1), "WeightedSigmoidCrossEntropyWithLogitsGradient": (4, 1),
       "SpatialSoftmaxWithLoss": (2, 2), "SpatialSoftmaxWithLossGradient": (4, 1), "LengthsRangeFill": (1, 1),
       "LengthsToShape": (1, 1), "LengthsGather": (3, 1), "Range": (2, 1), "DiagonalFill": (0, 1),
       "LpPool": (1, 1), "LpPoolGradient": (3, 1), "FCTransposed": (3, 1), "FCTransposedGradient": (3, 3)}
SHAPES = [(), (0,), (3,), (2, 3), (2, 3, 2, 2), (1, 1, 3, 3), (2, 0)]
DTYPES = [np.float32, np.float64, np.int32, np.int64, np.bool_]
ARGS = [{}, {"kernel": 2}, {"shape": [3, 3], "value": 1.0}, {"p": 0.5, "kernel": 2}]


def _random_inputs(rng, n, well_formed):
    shape = SHAPES[rng.integers(1, len(SHAPES))]
    feeds = {}
    for i in range(n):
        if well_formed:
            feeds[f"i{i}"] = rng.standard_normal(shape).astype(np.float32)
            continue
        s, d = SHAPES[rng.integers(len(SHAPES))], DTYPES[rng.integers(len(DTYPES))]
        feeds[f"i{i}"] = rng.random(s) > 0.5 if d == np.bool_ else (rng.standard_normal(s) * 3).astype(d)
    return feeds


@pytest.mark.parametrize("name", sorted(OPS))
def test_reference_raises_only_netjit_errors(name):
    rng = np.random.default_rng(sorted(OPS).index(name))
    n_in, n_out = OPS[name]
    outcomes = set()
    with np.errstate(all="raise"):   # a numpy warning would surface as a raw FloatingPointError
        for trial in range(25):
            feeds = _random_inputs(rng, n_in, well_formed=trial % 3 == 0)
            try:
                run_op(name, list(feeds.values()), n_out, **ARGS[trial % len(ARGS)])
                outcomes.add("ran")
            except NetJitError:
                outcomes.add("error")
    assert outcomes


@pytest.mark.parametrize("name", sorted(OPS))
def test_compiled_agrees_with_reference(name):
    rng = np.random.default_rng(100 + sorted(OPS).index(name))
    n_in, n_out = OPS[name]
    for trial in range(4):
        feeds = _random_inputs(rng, n_in, well_formed=trial % 2 == 1)
        net = netdef("robust", [op(name, list(feeds), [f"o{k}" for k in range(n_out)], **ARGS[trial % len(ARGS)])])
        try:
            ref = run_reference(net, feeds)
        except NetJitError:
            with pytest.raises(NetJitError):
                run_compiled(net, feeds)
            continue
        ws, _ = run_compiled(net, feeds)
        assert_same_blobs(ref, ws, rtol=1e-5, atol=1e-6)
