"""The reference and compiled executors share construction checks, the reference calling convention
and error location: a bad net fails with the same error, word for word, under either."""
from __future__ import annotations

import numpy as np
import pytest

from netjit.compiler.runner import default_executor, make_runner
from netjit.runtime.errors import MissingBlobError, OpError
from tests.compiler.helpers import netdef, op, workspace_with

F = np.float32
CASES = {
    # construction: an input that is nowhere, one not declared, a declared output nobody makes
    "missing_input": (netdef("agree_missing", [op("Relu", ["nowhere"], ["y"])]), {}, MissingBlobError),
    "undeclared": (netdef("agree_undeclared", [op("Relu", ["x"], ["y"])], external_input=["other"]),
                   {"x": np.ones(2, F), "other": np.ones(2, F)}, OpError),
    "external_output": (netdef("agree_ext", [op("Relu", ["x"], ["y"])], external_output=["ghost"]),
                        {"x": np.ones(2, F)}, OpError),
    # schema: wrong input count, wrong argument type
    "counts": (netdef("agree_counts", [op("Relu", ["x", "x"], ["y"])]), {"x": np.ones(2, F)}, OpError),
    "arg_type": (netdef("agree_arg", [op("Scale", ["x"], ["y"], scale=2)]), {"x": np.ones(2, F)}, OpError),
    # run time: an op's own check, located at its index
    "run_time": (netdef("agree_run", [op("Relu", ["x"], ["a"]), op("FC", ["a", "w", "b"], ["y"])]),
                 {"x": np.ones((2, 3), F), "w": np.ones((4, 3), F), "b": np.ones(5, F)}, OpError),
}


def _error(executor: str, net, feeds) -> BaseException:
    ws = workspace_with(feeds, "agree")
    with pytest.raises(OpError) as info:
        make_runner(net, ws, executor=executor).run()
    return info.value


@pytest.mark.parametrize("case", sorted(CASES))
def test_both_executors_fail_alike(case):
    net, feeds, kind = CASES[case]
    ref, got = _error("reference", net, feeds), _error("compiled", net, feeds)
    assert type(ref) is type(got) and isinstance(got, kind)
    assert str(ref) == str(got)
    assert (got.net, got.op_type) == (net.name, "FC" if case == "run_time" else got.op_type)
    if case == "run_time":
        assert got.index == 1 and "bias has 5 elements" in str(got)


def test_an_empty_executor_setting_means_the_default(monkeypatch):
    monkeypatch.setenv("NETJIT_EXECUTOR", "")
    assert default_executor() == "compiled"
    monkeypatch.setenv("NETJIT_EXECUTOR", " Reference ")
    assert default_executor() == "reference"
    monkeypatch.setenv("NETJIT_EXECUTOR", "fast")
    with pytest.raises(ValueError, match="NETJIT_EXECUTOR"):
        default_executor()
