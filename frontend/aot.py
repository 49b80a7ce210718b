"""Load an ahead-of-time compiled bundle (``netjit aot``) with ctypes and numpy only.

A bundle folder holds ``NAME.so``, ``NAME.h``, ``NAME.weights.bin`` and ``bundle.json``. Loading
reads the manifest, refuses a bundle whose code needs CPU features this machine lacks, maps the
weights, and allocates the scratch arena once; ``run`` then calls ``NAME_run`` with the caller's
arrays. Neither numba nor llvmlite is imported (nor the compiler), so a serving process starts in
milliseconds.

>>> # p = netjit.aot.load("build/lenet"); probs, = p.run({"data": images})   # or p.run([images])
"""
from __future__ import annotations

import ctypes
import json
import os
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["Bundle", "BundleError", "load", "cpu_flags"]

FORMAT = 1
_ALIGN = 64


class BundleError(ValueError):
    """A bundle that cannot be loaded here, or a run given inputs it cannot take."""


def cpu_flags() -> set[str] | None:
    """This CPU's feature flags as /proc/cpuinfo lists them (None where that file is missing)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return set()


def _aligned_empty(nbytes: int) -> np.ndarray:
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    start = (-raw.ctypes.data) % _ALIGN
    return raw[start:start + nbytes]


class Bundle:
    """A loaded bundle with ``workspace.Predictor``'s shape: ``run(dict or list) -> list of arrays``.

    ``inputs``/``outputs``: the blob names in call order; ``manifest``: bundle.json.
    ``blas_threads``: OpenBLAS threads a run's GEMMs use (default 1, see NAME.h; 0: OpenBLAS's own
    setting). ``num_threads``: threads the bundle's kernels split their work over (0: the online
    CPUs; see :meth:`set_num_threads`).
    """

    def __init__(self, path: str | os.PathLike, blas_threads: int = 1, num_threads: int = 0):
        folder = Path(path)
        try:
            self.manifest: dict[str, Any] = json.loads((folder / "bundle.json").read_text())
        except FileNotFoundError as err:
            raise BundleError(f"{folder} is not a netjit bundle: no bundle.json in it") from err
        except json.JSONDecodeError as err:
            raise BundleError(f"{folder / 'bundle.json'} is not valid JSON: {err}") from err
        m = self.manifest
        if m.get("format") != FORMAT:
            raise BundleError(f"{folder}: bundle format {m.get('format')!r} is not the one this netjit "
                              f"reads ({FORMAT}); rebuild it with `netjit aot`")
        self.name: str = m["name"]
        self.path = folder
        self._check_cpu(m)
        weights_file = folder / m["weights"]["file"]
        size = weights_file.stat().st_size if weights_file.exists() else None
        if size != m["weights"]["bytes"]:
            raise BundleError(f"{weights_file}: expected {m['weights']['bytes']} bytes of weights, found "
                              f"{'no file' if size is None else f'{size} bytes'} (a truncated or foreign file?)")
        self._lib = ctypes.CDLL(str((folder / m["library"]).resolve()))
        fn = lambda suffix: getattr(self._lib, f"{self.name}_{suffix}")  # noqa: E731
        for suffix in ("weights_bytes", "scratch_bytes"):
            fn(suffix).restype = ctypes.c_size_t
        if fn("weights_bytes")() != m["weights"]["bytes"] or fn("scratch_bytes")() != m["scratch_bytes"]:
            raise BundleError(f"{folder}: {m['library']} does not match bundle.json (sizes differ); rebuild it")
        self._run = fn("run")
        self._run.restype = ctypes.c_int
        self._run.argtypes = [ctypes.c_void_p] * 4
        self._strerror = fn("strerror")
        self._strerror.restype = ctypes.c_char_p
        self._strerror.argtypes = [ctypes.c_int]
        fn("set_blas_threads").argtypes = [ctypes.c_int]
        fn("set_blas_threads")(int(blas_threads))
        self._set_threads = getattr(self._lib, f"{self.name}_set_num_threads", None)
        self._get_threads = getattr(self._lib, f"{self.name}_get_num_threads", None)
        if self._set_threads is not None:
            self._set_threads.argtypes = [ctypes.c_int]
            self._get_threads.restype = ctypes.c_int
            self._set_threads(int(num_threads))
        self.weights = _aligned_empty(size)
        with open(weights_file, "rb") as f:
            f.readinto(memoryview(self.weights))
        self.scratch = _aligned_empty(max(m["scratch_bytes"], 1))
        self.inputs = [t["name"] for t in m["inputs"]]
        self.outputs = [t["name"] for t in m["outputs"]]
        self._in_types = [(tuple(t["shape"]), np.dtype(t["dtype"])) for t in m["inputs"]]
        self._out_types = [(tuple(t["shape"]), np.dtype(t["dtype"])) for t in m["outputs"]]
        self._in_ptrs = (ctypes.c_void_p * max(len(self.inputs), 1))()
        self._out_ptrs = (ctypes.c_void_p * max(len(self.outputs), 1))()
        self._lock = threading.Lock()

    def set_num_threads(self, n: int) -> None:
        """Threads a run's kernels use (the caller plus n - 1 workers the bundle starts on its
        first run); n <= 0: the online CPUs. Shared by every ``Bundle`` of this library file."""
        if self._set_threads is not None:
            self._set_threads(int(n))

    @property
    def num_threads(self) -> int:
        """The thread count runs use now (1 for a bundle built without parallel kernels)."""
        return int(self._get_threads()) if self._get_threads is not None else 1

    def _check_cpu(self, m: Mapping[str, Any]) -> None:
        have = cpu_flags()
        if have is None:
            return      # not Linux: nothing to read, trust the builder
        lacking = sorted(set(m.get("cpu_features", [])) - have)
        if lacking:
            raise BundleError(f"bundle {self.name!r} was built for {m.get('target')} ({m.get('cpu')}) and needs "
                              f"CPU features this machine lacks: {', '.join(lacking)}. Rebuild it here, or with "
                              f"`netjit aot ... --target x86-64-v3` for a portable bundle")

    def _arrays(self, inputs: Sequence[Any] | Mapping[str, Any]) -> list[np.ndarray]:
        if isinstance(inputs, Mapping):
            unknown = [k for k in inputs if k not in self.inputs]
            if unknown:
                raise BundleError(f"bundle {self.name!r} has no input {unknown[0]!r} (inputs: {self.inputs})")
            missing = [k for k in self.inputs if k not in inputs]
            if missing:
                raise BundleError(f"bundle {self.name!r}: input {missing[0]!r} not given (inputs: {self.inputs})")
            values = [inputs[k] for k in self.inputs]
        else:
            values = list(inputs)
            if len(values) != len(self.inputs):
                raise BundleError(f"bundle {self.name!r} takes {len(self.inputs)} input(s) {self.inputs}, "
                                  f"got {len(values)}")
        arrays = []
        for name, value, (shape, dtype) in zip(self.inputs, values, self._in_types):
            arr = np.asarray(value)
            if arr.dtype != dtype:
                raise BundleError(f"bundle {self.name!r} input {name!r}: expected dtype {dtype}, got {arr.dtype} "
                                  f"(convert with .astype(np.{dtype.name}))")
            if arr.shape != shape:
                raise BundleError(f"bundle {self.name!r} input {name!r}: expected shape {list(shape)}, got "
                                  f"{list(arr.shape)} (the bundle was compiled for that shape; rebuild it with "
                                  f"--input {name}={','.join(str(d) for d in arr.shape)} for another)")
            arrays.append(np.ascontiguousarray(arr))
        return arrays

    def run(self, inputs: Sequence[Any] | Mapping[str, Any]) -> list[np.ndarray]:
        """Run on ``inputs`` (by name, or positionally in ``self.inputs`` order); returns the
        outputs in ``self.outputs`` order as new arrays."""
        arrays = self._arrays(inputs)
        outs = [np.empty(shape, dtype) for shape, dtype in self._out_types]
        with self._lock:
            for k, a in enumerate(arrays):
                self._in_ptrs[k] = a.ctypes.data
            for k, o in enumerate(outs):
                self._out_ptrs[k] = o.ctypes.data
            code = self._run(self.weights.ctypes.data, self.scratch.ctypes.data,
                             ctypes.addressof(self._in_ptrs), ctypes.addressof(self._out_ptrs))
        if code != 0:
            raise BundleError(f"bundle {self.name!r}: {self.name}_run returned {code} "
                              f"({self._strerror(code).decode()})")
        return outs

    def __repr__(self) -> str:
        return f"<netjit bundle {self.name!r} at {str(self.path)!r}: inputs {self.inputs}, outputs {self.outputs}>"


def load(path: str | os.PathLike, blas_threads: int = 1, num_threads: int = 0) -> Bundle:
    """Load the bundle folder ``path`` (what ``netjit aot -o`` wrote); see :class:`Bundle`.

    >>> # p = load("build/lenet", num_threads=2); p.run([np.zeros((1, 1, 28, 28), np.float32)])[0].shape
    """
    return Bundle(path, blas_threads, num_threads)
