"""Without mpi4py: CreateCommonWorld says which extra to install, and nothing else imports mpi4py.
Also: ranks on one machine split its cores between their compiled kernels."""
from __future__ import annotations

import subprocess
import sys

import pytest
from caffe2.python import core, workspace

from netjit.runtime.errors import OpError
from tests.mpi.launch import REPO


def test_create_common_world_without_mpi4py_names_the_extra(monkeypatch):
    # A None entry in sys.modules makes `import mpi4py` raise ImportError, as if it were not installed.
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)
    net = core.Net("needs_mpi")
    net.CreateCommonWorld([], ["cw"], engine="MPI")
    with pytest.raises(OpError) as err:
        workspace.RunNetOnce(net)
    msg = str(err.value)
    assert "pip install netjit[mpi]" in msg and "needs_mpi" in msg and "CreateCommonWorld" in msg, msg


def test_netjit_does_not_import_mpi4py():
    code = ("import sys, netjit, netjit.compiler.ops, netjit.data_parallel_model\n"
            "from caffe2.python import core, workspace, brew, model_helper, data_parallel_model\n"
            "net = core.Net('n'); net.Relu('x', 'y')\n"
            "import numpy as np; workspace.FeedBlob('x', np.ones(3, np.float32)); workspace.RunNetOnce(net)\n"
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_ranks_on_one_machine_share_the_cores(monkeypatch):
    import os

    import numba

    from netjit.runtime.mpi_world import share_cores
    before = numba.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2")
    try:
        assert share_cores() == min(before, max(1, cores // 2))
        numba.set_num_threads(before)
        monkeypatch.setenv("NUMBA_NUM_THREADS", str(before))   # the user's setting wins
        assert share_cores() == before
    finally:
        numba.set_num_threads(before)
