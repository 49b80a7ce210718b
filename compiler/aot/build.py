"""Build one bundle in this process: run the init net, plan, compile the entry, link, write the folder.

This runs in a child process started by :func:`netjit.compiler.aot.build_bundle` with numba set up
for ahead-of-time code (the target CPU, a cache of its own); see ``__init__.py``.
Everything that can fail because of the net (a host op, a missing input shape) fails before the
first file is written; the output folder is replaced only once the new bundle is complete.

    python -m netjit.compiler.aot.build REQUEST.json      # what build_bundle runs
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from netjit.compiler.aot import cpu as cpus
from netjit.compiler.aot.common import AotError, check_name
from netjit.compiler.aot.plan import AotPlan, make_plan, tensors_of
from netjit.proto import caffe2_pb2

FORMAT = 1


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("netjit")
    except Exception:  # noqa: BLE001 - a source tree that was never installed
        return "0.0.0+src"


def load_params(init_net: caffe2_pb2.NetDef) -> dict[str, np.ndarray]:
    """Every blob the init net writes (run by the reference executor: it runs once)."""
    from netjit.compiler.runner import make_runner
    from netjit.runtime.workspace import Workspace
    ws = Workspace("aot-init", tempfile.gettempdir())
    make_runner(init_net, ws, executor="reference").run()
    return {b: ws.get(b) for b in ws.blobs if isinstance(ws.get(b), np.ndarray)}


def progress_printer(stream: Any = None) -> Callable[[int, int, str], None]:
    """A per-kernel progress bar on a terminal, one line per kernel otherwise."""
    stream = stream or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    start = time.perf_counter()

    def report(done: int, total: int, what: str) -> None:
        elapsed = time.perf_counter() - start
        if tty:
            width = 30
            fill = width * done // max(total, 1)
            stream.write(f"\rcompiling kernels [{'#' * fill}{'.' * (width - fill)}] {done}/{total} "
                         f"{elapsed:5.1f}s {what[:40]:40s}")
            if done == total:
                stream.write("\n")
        elif done < total:
            stream.write(f"compiling kernel {done + 1}/{total}: {what} ({elapsed:.1f}s)\n")
        stream.flush()
    return report


def manifest(plan: AotPlan, target: str, blas: str | None, seconds: float) -> dict[str, Any]:
    cpu_name, _ = cpus.llvm_target(target)
    tensors = [{"name": label, "offset": slot.offset, "shape": list(slot.shape), "dtype": slot.dtype.name,
                "bytes": slot.nbytes} for label, slot in plan.weights]
    return {
        "format": FORMAT, "name": plan.name, "net": plan.net_name, "netjit_version": _version(),
        "source_hash": plan.source_hash,
        "target": target, "cpu": cpu_name, "cpu_features": cpus.required_flags(target),
        "library": f"{plan.name}.so", "header": f"{plan.name}.h", "blas": blas,
        "weights": {"file": f"{plan.name}.weights.bin", "bytes": plan.weights_bytes,
                    "sha256": hashlib.sha256(plan.weights_data).hexdigest(), "tensors": tensors},
        "scratch_bytes": plan.scratch_bytes,
        "inputs": tensors_of(plan.inputs), "outputs": tensors_of(plan.outputs),
        "steps": [{"op_index": s.index, "op": s.op_type, "kernel": s.description} for s in plan.steps],
        "build_seconds": round(seconds, 2),
    }


def build(init_net: caffe2_pb2.NetDef | Mapping[str, np.ndarray], predict_net: caffe2_pb2.NetDef,
          inputs: Mapping[str, tuple[tuple[int, ...], str]], name: str, out_dir: str | os.PathLike,
          target: str = "native", progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Build the bundle in this process (numba must already be set up for it); returns the manifest."""
    from netjit.compiler.aot import entry, native
    t0 = time.perf_counter()
    check_name(name)
    cpu_name, features = cpus.llvm_target(target)
    if isinstance(init_net, Mapping):
        params, init_proto = dict(init_net), None
    else:
        params, init_proto = load_params(init_net), init_net
    plan = make_plan(predict_net, params, {b: (tuple(s), np.dtype(d)) for b, (s, d) in inputs.items()}, name,
                     init_proto, progress)
    t1 = time.perf_counter()
    module, natives, _ = entry.compile_entry(plan, cpu_name)
    t2 = time.perf_counter()
    parts = [f"{name}_netjit_part{k}" for k in range(len(natives))]
    obj, undefined = entry.emit_object(module, natives, parts, cpu_name, features)
    t3 = time.perf_counter()
    if progress is not None:
        sys.stderr.write(f"planned and compiled kernels {t1 - t0:.1f}s, entry {t2 - t1:.1f}s, "
                         f"object code {t3 - t2:.1f}s\n")
    known = {"NRT_MemInfo_alloc_aligned", "NRT_MemInfo_call_dtor", "NRT_Free", "numba_attempt_nocopy_reshape",
             *native.THREAD_SYMBOLS}
    needs_blas = any(u.startswith(("netjit_cblas_", "netjit_blas_")) for u in undefined)
    threaded = any(u in native.POOL_SYMBOLS for u in undefined)
    unknown = [u for u in undefined if u not in known and not u.startswith(("netjit_cblas_", "netjit_blas_"))
               and not _libm(u)]
    if unknown:
        raise AotError(f"net {plan.net_name!r}: the compiled code needs {unknown}, which a bundle cannot "
                       f"provide (numba runtime or Python calls left in a kernel)")
    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        native.link(plan, obj, parts, staging, needs_blas, threaded=threaded)
        (staging / f"{name}.h").write_text(native.header(plan))
        (staging / f"{name}.weights.bin").write_bytes(plan.weights_data)
        blas = next((p.name for p in staging.iterdir() if "openblas" in p.name), None)
        info = manifest(plan, target, blas, time.perf_counter() - t0)
        info["threaded"] = threaded
        (staging / "bundle.json").write_text(json.dumps(info, indent=1) + "\n")
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info


_LIBM = re.compile(r"(exp|log|pow|sqrt|tanh|sin|cos|tan|erf|erfc|fmod|floor|ceil|round|trunc|atan2?|asin|acos|"
                   r"sinh|cosh|expm1|log1p|log2|log10|exp2|cbrt|hypot|lgamma|tgamma|fabs|copysign|nearbyint|"
                   r"rint|fmin|fmax|ldexp|frexp|modf|atanh|asinh|acosh)f?\Z|mem(cpy|set|move|cmp)\Z|"
                   r"(malloc|free|calloc|realloc|abort|printf|puts|fputs|fprintf)\Z|__.*")


def _libm(symbol: str) -> bool:
    return bool(_LIBM.match(symbol))


def _replace(staging: Path, out: Path) -> None:
    """Move the complete bundle into place; an existing folder goes only after that."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rmdir(old)
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    from netjit.proto.io import load_net
    result_path = Path(request["result"])
    try:
        predict_net = load_net(request["predict_net"])
        if request.get("param_names") is not None:
            with np.load(request["init_net"]) as saved:
                init_net = {b: saved[f"p{k}"] for k, b in enumerate(request["param_names"])}
        else:
            init_net = load_net(request["init_net"])
        inputs = {b: (tuple(s), d) for b, (s, d) in request["inputs"].items()}
        info = build(init_net, predict_net, inputs, request["name"], request["out"], request["target"],
                     progress_printer() if request.get("progress", True) else None)
        result_path.write_text(json.dumps({"ok": True, "manifest": info}))
        return 0
    except AotError as err:
        result_path.write_text(json.dumps({"ok": False, "error": str(err), "kind": "AotError"}))
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
