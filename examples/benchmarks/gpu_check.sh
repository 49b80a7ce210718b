#!/usr/bin/env bash
# The one GPU check, for a session that has a GPU machine (see README "GPU"): installs nothing, runs
# tests/cuda on the real GPU (no simulator), then examples/benchmarks/bench_gpu.py; under 8 minutes.
#
#   bash examples/benchmarks/gpu_check.sh            # prints both; with $OUT set, also writes
#                                                    # $OUT/gpu_tests.txt and $OUT/bench_gpu.txt
#   GPU_CHECK_ENV_ONLY=1 bash examples/benchmarks/gpu_check.sh   # only the import check
# The machine needs numba (numba-cuda), numpy, protobuf and pytest; PyTorch (+torchvision) for the
# PyTorch column, cupy only if NETJIT_CUDA_CUBLAS=1. netjit itself is imported from this checkout.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT_DIR="${OUT:-}"
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
unset NUMBA_ENABLE_CUDASIM
export NETJIT_CACHE_DIR="${NETJIT_CACHE_DIR:-${TMPDIR:-/tmp}/netjit-cache}"

# netjit importable without installing it: a temporary folder that lays the package out as
# pyproject.toml's package-dir does (netjit = frontend/ + compiler, runtime, proto; caffe2).
if [ -n "${NETJIT_FORCE_SHIM:-}" ] || ! "$PY" -c "import netjit" 2>/dev/null; then
    SHIM=$(mktemp -d)
    mkdir "$SHIM/netjit"
    for f in "$ROOT"/frontend/*; do ln -s "$f" "$SHIM/netjit/$(basename "$f")"; done
    for d in compiler runtime proto; do ln -s "$ROOT/$d" "$SHIM/netjit/$d"; done
    ln -s "$ROOT/frontend/caffe2" "$SHIM/caffe2"
    export PYTHONPATH="$SHIM:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
# The zoo nets (ResNet-50) from shared/ in this tree or ../shared beside it, when present.
for z in "$ROOT/shared/models/zoo" "$ROOT/../shared/models/zoo"; do
    if [ -z "${NETJIT_ZOO_DIR:-}" ] && [ -d "$z" ]; then export NETJIT_ZOO_DIR=$z; fi
done

"$PY" - <<'PY'
import numba, numpy, netjit
from netjit.runtime import device
print(f"netjit from {netjit.__file__}; numba {numba.__version__}, numpy {numpy.__version__}; "
      f"CUDA devices: {device.num_cuda_devices()}")
PY
[ -n "${GPU_CHECK_ENV_ONLY:-}" ] && exit 0   # only check that netjit and numba import

run() {   # run NAME SECONDS CMD...: tee to $OUT/NAME.txt when $OUT is set
    local name=$1 secs=$2; shift 2
    echo "=== $name ==="
    if [ -n "$OUT_DIR" ]; then timeout "$secs" "$@" 2>&1 | tee "$OUT_DIR/$name.txt"; return "${PIPESTATUS[0]}"
    else timeout "$secs" "$@" 2>&1; fi
}
run gpu_tests 270 "$PY" -m pytest -q -ra -p no:cacheprovider tests/cuda --durations=10
tests_rc=$?
run bench_gpu 180 "$PY" examples/benchmarks/bench_gpu.py
bench_rc=$?
echo "gpu_check: tests exit $tests_rc, bench exit $bench_rc"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
