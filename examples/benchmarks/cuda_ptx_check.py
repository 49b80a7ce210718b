"""Compile every CUDA kernel the test suite launches with the real CUDA compiler, on a machine
with no GPU: the check that catches what the simulator cannot (it runs kernels as Python, so a
construct numba's CUDA target rejects, say ``np.floor`` on a scalar, passes there).

Two steps, two processes (numba.cuda is either the simulator or the real target in a process):

    NUMBA_ENABLE_CUDASIM=1 python examples/benchmarks/cuda_ptx_check.py record launches.json
    python examples/benchmarks/cuda_ptx_check.py compile launches.json      # needs numba-cuda

``record`` runs tests/cuda under the simulator and writes each distinct (kernel, argument types)
it launched; ``compile`` rebuilds those kernels and compiles each to PTX for sm_90 (the H100/H200)
with ``cuda.compile_ptx``: it needs numba-cuda and NVVM (``pip install "numba-cuda[cu13]"``, in a
separate folder is enough; point ``LD_LIBRARY_PATH`` at its ``nvidia/cu13/lib``), not a driver.
It prints one line per failing kernel and exits 1 if any failed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RECORDS: dict[str, dict[str, Any]] = {}
OUT_ENV = "NETJIT_PTX_RECORD"


def _kernel_id(fn: Any) -> tuple[str, ...] | None:
    """("gen", source) for a generated kernel, ("lib", table, name) for a hand-written one."""
    from netjit.compiler.codegen import cuda_gemm, cuda_kernels, cuda_ops
    for source, k in cuda_kernels._KERNELS.items():
        if getattr(k, "fn", None) is fn:
            return ("gen", source)
    for table, ks in (("reduce", cuda_kernels._REDUCE), ("gemm", cuda_gemm._K), ("bn", cuda_ops._BN)):
        for name, k in ks.items():
            if getattr(k, "fn", None) is fn:
                return ("lib", table, name)
    return None


def _arg_type(arg: Any) -> list[Any]:
    import numpy as np
    inner = getattr(arg, "_ary", None)        # the simulator's device array wraps a numpy array
    if inner is None and isinstance(arg, np.ndarray):
        inner = arg
    if inner is not None:
        layout = "C" if inner.flags.c_contiguous else ("F" if inner.flags.f_contiguous else "A")
        return ["array", inner.dtype.str, inner.ndim, layout]
    if isinstance(arg, (bool, np.bool_)):
        return ["scalar", "bool"]
    if isinstance(arg, (np.generic,)):
        return ["scalar", arg.dtype.name]
    return ["scalar", "int64" if isinstance(arg, int) else "float64"]


def pytest_configure(config: Any) -> None:
    """(A pytest plugin under ``record``.) Note every kernel launch's kernel and argument types."""
    from numba.cuda.simulator import kernel as sim
    original = sim.FakeCUDAKernel.__call__

    def recording(self: Any, *args: Any) -> Any:
        if not self._device:
            kid = _kernel_id(self.fn)
            if kid is not None:
                sig = [_arg_type(a) for a in args]
                RECORDS.setdefault(json.dumps([kid, sig]), {"kernel": kid, "args": sig})
        return original(self, *args)
    sim.FakeCUDAKernel.__call__ = recording


def pytest_unconfigure(config: Any) -> None:
    Path(os.environ[OUT_ENV]).write_text(json.dumps(list(RECORDS.values()), indent=1))


def record(path: str, extra: list[str]) -> int:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", **{OUT_ENV: str(Path(path).resolve())})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "cuda_ptx_check",
           "tests/cuda", *extra]
    rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
    print(f"recorded {len(json.loads(Path(path).read_text()))} distinct launches into {path}")
    return rc


def _numba_type(spec: list[Any]) -> Any:
    import numba
    import numpy as np
    if spec[0] == "array":
        return numba.types.Array(numba.from_dtype(np.dtype(spec[1])), spec[2], spec[3])
    return {"bool": numba.types.boolean}.get(spec[1]) or getattr(numba.types, spec[1])


def compile_all(path: str, cc: tuple[int, int] = (9, 0)) -> int:
    try:
        import _numba_cuda_redirector  # noqa: F401 - numba-cuda installed with --target has no .pth run
    except ImportError:
        pass
    from numba import cuda
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        print("compile needs the real CUDA target: unset NUMBA_ENABLE_CUDASIM", file=sys.stderr)
        return 2
    # Device functions ask the current device for its compute capability; there is none here.
    for mod in ("numba.cuda.dispatcher",):
        m = sys.modules.get(mod) or __import__(mod, fromlist=["_"])
        m.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)
    from netjit.compiler.codegen import cuda_gemm, cuda_kernels, cuda_ops
    tables = {"reduce": cuda_kernels.reduce_kernels, "gemm": cuda_gemm.kernels, "bn": cuda_ops.bn_kernels}
    entries = json.loads(Path(path).read_text())
    failed = 0
    for e in entries:
        kid = e["kernel"]
        # Recorded sources were rendered for the simulator; render them as for a GPU.
        source = cuda_kernels._gpu_math(kid[1]) if kid[0] == "gen" else ""
        disp = cuda_kernels.compile_source(source) if kid[0] == "gen" else tables[kid[1]]()[kid[2]]
        sig = tuple(_numba_type(a) for a in e["args"])
        label = kid[2] if kid[0] == "lib" else "generated: " + kid[1].splitlines()[-3].strip()
        try:
            cuda.compile_ptx(disp.py_func, sig, cc=cc)
        except Exception as err:  # noqa: BLE001 - reported, counted
            failed += 1
            msg = str(err).strip().splitlines()
            print(f"FAIL {label} {sig}: {type(err).__name__}: {msg[0] if msg else ''}")
            if kid[0] == "gen":
                print("    " + source.replace("\n", "\n    "))
    print(f"compiled {len(entries) - failed} of {len(entries)} kernel signatures to PTX for sm_{cc[0]}{cc[1]}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] not in ("record", "compile"):
        print(__doc__)
        return 2
    return record(argv[1], argv[2:]) if argv[0] == "record" else compile_all(argv[1])


if __name__ == "__main__":
    sys.exit(main())
