"""Ahead-of-time compiled predict nets: ``netjit aot`` writes a bundle folder that C and Python load
without numba or LLVM.

``build_bundle`` plans the predict net as a ``workspace.Predictor`` would (declared input shapes,
only the external outputs visible), compiles every step's kernel plus one entry that calls them in
plan order into a single object, and links ``NAME.so`` with the system C compiler (native.py).
The build runs in a child process because the numba settings it needs are read once per process:

- numba's threading layer must be OpenMP or TBB (not ``workqueue``) so netjit's kernels are built as
  their parallel variants (codegen/parallel.py). The bundle does not carry that layer: its C part
  brings a pthread pool of its own behind the same entry points (pool.c). Where neither layer
  exists the kernels are serial and so is the bundle;
- ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` make the kernels' IR for the target CPU (``--target``);
- native bundles share the JIT's numba cache (the same parallel kernels for the same CPU, so a net
  the JIT or ``netjit warmup`` compiled builds in seconds); ``--target`` builds get a
  ``NUMBA_CACHE_DIR`` of their own per target.

>>> # manifest = build_bundle("init_net.pb", "predict_net.pb", {"data": ((1, 1, 28, 28), "float32")},
>>> #                         name="lenet", out="build/lenet")
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

from netjit.compiler.aot.cpu import TARGETS
from netjit.compiler.aot.common import AotError, check_name, parse_shape

__all__ = ["AotError", "TARGETS", "build_bundle", "build_env", "parse_shape"]


def _cache_root() -> Path:
    root = os.environ.get("NETJIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "netjit")
    return Path(root)


def build_env(target: str) -> dict[str, str]:
    """The environment of the build process for ``target``."""
    from netjit.compiler.aot.cpu import llvm_target
    cpu, features = llvm_target(target) if target != "native" else ("", "")
    env = dict(os.environ)
    if env.get("NUMBA_THREADING_LAYER", "").lower() == "workqueue":
        env.pop("NUMBA_THREADING_LAYER")    # numba's default picks TBB or OpenMP where installed
    env.pop("NUMBA_NUM_THREADS", None)      # the bundle sets its own thread count at run time
    # Native: the same kernels, CPU and cache as the JIT's (both build numba's parallel variants),
    # so a bundle reuses whatever the JIT, `netjit warmup`'s prebuilt store or an earlier build
    # compiled; NUMBA_CACHE_DIR stays the caller's. (Measured: LeNet from an empty NETJIT_CACHE_DIR
    # took 50 s with a numba cache of the bundle's own.)
    if target != "native":
        env["NUMBA_CACHE_DIR"] = str(_cache_root() / "aot-numba-threads" / target)
    env.pop("NUMBA_CPU_NAME", None)
    env.pop("NUMBA_CPU_FEATURES", None)
    if cpu:
        env["NUMBA_CPU_NAME"] = cpu
        env["NUMBA_CPU_FEATURES"] = features
    return env


def _net_file(net: Any, folder: Path, label: str) -> str:
    if isinstance(net, (str, os.PathLike)):
        path = Path(net)
        if not path.exists():
            raise FileNotFoundError(2, "no such file", str(path))
        return str(path.resolve())
    from netjit.core_plan import as_net_def
    path = folder / f"{label}.pb"
    path.write_bytes(as_net_def(net).SerializeToString())
    return str(path)


# Caffe2's TensorProto.DataType codes, as the model zoo's value_info.json writes them.
_ELEM_TYPES = {1: "float32", 2: "int32", 5: "bool", 6: "uint8", 7: "int8", 10: "int64", 13: "float64"}


def _value_info(predict_net: Any) -> dict[str, tuple[list[int], str]]:
    """Input shapes a predict net file's folder states (the model zoo's ``value_info.json``:
    ``{blob: [elem_type, shape]}``), used where ``inputs`` does not give them."""
    if not isinstance(predict_net, (str, os.PathLike)):
        return {}
    path = Path(predict_net).parent / "value_info.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    found = {}
    for blob, entry in info.items() if isinstance(info, dict) else ():
        try:
            elem, shape = entry
            found[blob] = ([int(d) for d in shape], _ELEM_TYPES[int(elem)])
        except (TypeError, ValueError, KeyError):
            continue
    return found


def build_bundle(init_net: Any, predict_net: Any, inputs: Mapping[str, Any], name: str,
                 out: str | os.PathLike, target: str = "native", progress: bool = True,
                 timeout: float | None = None, db_type: str | None = None) -> dict[str, Any]:
    """Build the bundle ``out/`` (NAME.so, NAME.h, NAME.weights.bin, bundle.json) from an init
    and a predict net (paths to ``.pb``/``.pbtxt`` files, NetDefs or ``core.Net``s; the init net
    may also be a dict of parameter arrays, blob -> array). ``inputs``: blob -> shape, or
    (shape, dtype) (default float32); inputs it omits come from a ``value_info.json`` beside the
    predict net file where there is one (the model zoo's). With ``predict_net=None``, ``init_net``
    is a predictor export instead (export.py: a ``save_to_db`` DB of ``db_type``, default minidb,
    or a MetaNetDef ``.pb``): the parameters, predict net and input shapes come from it. Returns
    the manifest; raises :class:`AotError` for a net that cannot be bundled (nothing is written).

    >>> # build_bundle(init, predict, {"data": (1, 3, 224, 224)}, "resnet50", "build/resnet50")
    >>> # build_bundle("model.minidb", None, {}, "model", "build/model")
    """
    check_name(name)
    if target not in TARGETS:
        raise AotError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    declared: dict[str, tuple[list[int], str]] = {}
    if predict_net is None:
        from netjit.compiler.aot.export import read_export
        export = read_export(init_net, db_type)
        init_net, predict_net, declared = export.params, export.predict_net, export.inputs
    norm: dict[str, tuple[list[int], str]] = {}
    for blob, spec in inputs.items():
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], (tuple, list)):
            shape, dtype = spec
        else:
            shape, dtype = spec, "float32"
        if isinstance(shape, str):
            shape = parse_shape(shape)
        norm[blob] = ([int(d) for d in shape], str(dtype if isinstance(dtype, str) else getattr(dtype, "__name__", dtype)))
    for blob, spec in (*_value_info(predict_net).items(), *declared.items()):
        norm.setdefault(blob, spec)
    with tempfile.TemporaryDirectory(prefix="netjit-aot-") as tmp:
        folder = Path(tmp)
        if isinstance(init_net, Mapping):
            # Parameters given as arrays: saved once for the child (no init net to run).
            import numpy as np
            np.savez(folder / "params.npz", **{f"p{k}": np.asarray(v) for k, v in enumerate(init_net.values())})
            init_file, names = str(folder / "params.npz"), list(init_net)
        else:
            init_file, names = _net_file(init_net, folder, "init_net"), None
        request = {"init_net": init_file, "param_names": names,
                   "predict_net": _net_file(predict_net, folder, "predict_net"),
                   "inputs": norm, "name": name, "out": str(Path(out).resolve()), "target": target,
                   "progress": progress, "result": str(folder / "result.json")}
        (folder / "request.json").write_text(json.dumps(request))
        done = subprocess.run([sys.executable, "-m", "netjit.compiler.aot.build", str(folder / "request.json")],
                              env=build_env(target), stdout=None if progress else subprocess.DEVNULL,
                              stderr=None if progress else subprocess.PIPE, timeout=timeout)
        result_file = folder / "result.json"
        if not result_file.exists():
            detail = (done.stderr or b"").decode(errors="replace")[-4000:] if not progress else ""
            raise RuntimeError(f"the netjit aot build process failed (exit {done.returncode})"
                               + (f":\n{detail}" if detail else "; its traceback is above"))
        result = json.loads(result_file.read_text())
    if not result["ok"]:
        raise AotError(result["error"])
    return result["manifest"]
