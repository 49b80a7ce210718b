"""Keep numba's start-up from importing ``scipy.linalg`` on netjit's behalf.

When numba first loads a compiled function (from its disk cache too), its CPU target imports
``numba.np.arraymath``, whose module body probes for a BLAS with ``import scipy.linalg.cython_blas``.
Importing ``scipy.linalg`` costs 0.22 s on the 2-core test VM: most of a warm start's budget
(issue 12 asks for <= 0.3 s beyond ``import netjit``). netjit's kernels never use numba's BLAS
binding (they call numpy's OpenBLAS through compiler/codegen/blas.py), and the probe's answer only
picks how numba's own ``cov``/``corrcoef`` form inner products. numba's dot products and
linear algebra still import scipy themselves when something compiles them.

``install()`` puts a finder first on ``sys.meta_path`` that refuses ``scipy.linalg`` to that one
probe (recognised by its caller, ``_check_blas`` in ``numba.np.arraymath``) and to nothing else,
then removes itself. The answer is put right afterwards: the first netjit module that needs numba's
target calls ``settle()``, which sets the probe's flag to whether scipy is importable.
``NETJIT_SCIPY_PROBE=1`` leaves numba's probe alone.

>>> install()   # before numba loads its target; cheap, imports nothing
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from typing import Any

_PROBE_MODULE = "numba.np.arraymath"


class _SkipBlasProbe(importlib.abc.MetaPathFinder):
    """Refuses ``scipy.linalg`` while numba's arraymath module body probes for it."""

    refused = False

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname != "scipy.linalg":
            return None
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_name == "_check_blas" and frame.f_globals.get("__name__") == _PROBE_MODULE:
                type(self).refused = True
                _remove()
                raise ImportError("scipy.linalg skipped by netjit for numba's start-up BLAS probe")
            frame = frame.f_back
        return None


_FINDER = _SkipBlasProbe()


def _remove() -> None:
    try:
        sys.meta_path.remove(_FINDER)
    except ValueError:
        pass


def install() -> None:
    """Arm the finder unless numba's probe already ran, scipy.linalg is loaded, or it is disabled."""
    if os.environ.get("NETJIT_SCIPY_PROBE") == "1":
        return
    if _PROBE_MODULE in sys.modules or "scipy.linalg" in sys.modules or _FINDER in sys.meta_path:
        return
    sys.meta_path.insert(0, _FINDER)


def settle() -> None:
    """After numba's target loaded: give the probe's flag the answer scipy's presence implies."""
    module = sys.modules.get(_PROBE_MODULE)
    if module is None:
        return
    _remove()
    if _SkipBlasProbe.refused:
        module._HAVE_BLAS = importlib.util.find_spec("scipy") is not None
