"""``caffe2.python.test_util``: the base class and helpers of Caffe2's own test suites.

``TestCase`` gives each test a fresh global workspace and a private ``self.ws``
(a ``workspace.C.Workspace``), and clears engine preferences once per class, as Caffe2's did::

    from caffe2.python import core, test_util, workspace

    class TestRelu(test_util.TestCase):
        def test_relu(self):
            test_util.randBlobFloat32("X", 2, 3, offset=-0.5)
            workspace.RunOperatorOnce(core.CreateOperator("Relu", ["X"], ["Y"]))
            self.assertTrue((workspace.FetchBlob("Y") >= 0).all())

    >>> rand_array(2, 3).dtype, rand_array().shape
    (dtype('float32'), ())
"""
from __future__ import annotations

import os
import shutil
import tempfile
import unittest
from typing import Any, Callable, Iterable

import numpy as np

from netjit import core, workspace


def rand_array(*dims: int) -> np.ndarray:
    """float32 uniform in [-0.5, 0.5) of shape ``dims`` (0-d without dims)."""
    return np.array(np.random.rand(*dims) - 0.5).astype(np.float32)


def randBlob(name: str, type: Any, *dims: int, **kwargs: Any) -> None:
    """Feed blob ``name``: uniform [0, 1) values of ``type``, plus ``offset`` (default 0)."""
    offset = kwargs.get("offset", 0.0)
    workspace.FeedBlob(name, np.random.rand(*dims).astype(type) + offset)


def randBlobFloat32(name: str, *dims: int, **kwargs: Any) -> None:
    randBlob(name, np.float32, *dims, **kwargs)


def randBlobsFloat32(names: Iterable[str], *dims: int, **kwargs: Any) -> None:
    for name in names:
        randBlobFloat32(name, *dims, **kwargs)


def numOps(net: Any) -> int:
    """The number of ops of a core.Net or NetDef."""
    proto = net.Proto() if hasattr(net, "Proto") else net
    return len(proto.op)


def str_compare(a: Any, b: Any, encoding: str = "utf8") -> bool:
    """``a == b`` with bytes decoded first (blob names and strings come back as bytes)."""
    if isinstance(a, bytes):
        a = a.decode(encoding)
    if isinstance(b, bytes):
        b = b.decode(encoding)
    return a == b


def get_default_test_flags() -> list[str]:
    return ["caffe2", "--caffe2_log_level=0", "--caffe2_cpu_allocator_do_zero_fill=0",
            "--caffe2_cpu_allocator_do_junk_fill=1"]


def caffe2_flaky(test_method: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a test flaky: it runs only with CAFFE2_RUN_FLAKY_TESTS=1 (and the others then skip)."""
    test_method.__caffe2_flaky__ = True
    return test_method


def is_flaky_test_mode() -> bool:
    return os.getenv("CAFFE2_RUN_FLAKY_TESTS", "0") == "1"


class TestCase(unittest.TestCase):
    """A unittest.TestCase whose tests each start from an empty current workspace; ``self.ws`` is a
    fresh private ``workspace.C.Workspace()``."""

    @classmethod
    def setUpClass(cls) -> None:
        workspace.GlobalInit(get_default_test_flags())
        # Engine preferences a previous suite set must not leak into op tests.
        core.SetEnginePref({}, {})

    def setUp(self) -> None:
        method = getattr(self, self._testMethodName)
        flaky = getattr(method, "__caffe2_flaky__", False)
        if is_flaky_test_mode() and not flaky:
            raise unittest.SkipTest("Non-flaky tests are skipped in flaky test mode")
        if not is_flaky_test_mode() and flaky:
            raise unittest.SkipTest("Flaky tests run only with CAFFE2_RUN_FLAKY_TESTS=1")
        self.ws = workspace.C.Workspace()
        workspace.ResetWorkspace()

    def tearDown(self) -> None:
        workspace.ResetWorkspace()
        for folder in getattr(self, "_tempdirs", []):
            shutil.rmtree(folder, ignore_errors=True)

    def make_tempdir(self) -> str:
        """A temporary folder removed after the test."""
        folder = tempfile.mkdtemp(prefix="caffe2_test.")
        self.__dict__.setdefault("_tempdirs", []).append(folder)
        return folder
