#!/usr/bin/env bash
# The one GPU check, for a session that has a GPU machine (see README "GPU"). It installs nothing;
# it runs tests/cuda on the real GPU (no simulator), then examples/benchmarks/bench_gpu.py, each stage
# under its own time limit, in under 8 minutes in all.
#
#   bash examples/benchmarks/gpu_check.sh     # everything also goes to $OUT/gpu_check.log when $OUT
#                                             # is set (and each stage to $OUT/gpu_tests.txt, bench_gpu.txt)
#   GPU_CHECK_ENV_ONLY=1 ...                  # only the environment report and the smoke kernels
#   GPU_CHECK_SIMULATE=1 ...                  # a dry run of this script under numba's CUDA simulator
#   GPU_CHECK_PYTEST_ARGS="-k softmax" ...    # narrow the test stage
#   GPU_CHECK_TEST_S=200 GPU_CHECK_BENCH_S=160 ...   # the stages' limits in seconds (the defaults)
#
# Needs numba with a CUDA target (numba-cuda, or numba's built-in numba.cuda), numpy, protobuf and
# pytest. PyTorch (+torchvision) fills the PyTorch column and cupy the cuBLAS one; without them those
# cells say so. netjit itself is imported from this checkout (no pip install), the zoo's ResNet-50
# from shared/models/zoo in this tree or ../shared when either is there (else the bench builds
# ResNet-50 with caffe2.python.models.resnet). Exit status: 0 all passed, 1 a stage failed,
# 3 the environment cannot run CUDA kernels (nothing else was run).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
T0=$(date +%s)
OUT_DIR="${OUT:-}"
if [ -n "$OUT_DIR" ]; then
    mkdir -p "$OUT_DIR"
    exec > >(tee -a "$OUT_DIR/gpu_check.log") 2>&1
    TEE_PID=$!
    trap 'exec 1>&- 2>&-; wait "$TEE_PID" 2>/dev/null' EXIT    # the log complete before we return
fi
say() { echo "[gpu_check +$(( $(date +%s) - T0 ))s] $*"; }
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export NETJIT_CACHE_DIR="${NETJIT_CACHE_DIR:-${TMPDIR:-/tmp}/netjit-cache}"
TEST_S=${GPU_CHECK_TEST_S:-200}
BENCH_S=${GPU_CHECK_BENCH_S:-160}
if [ -n "${GPU_CHECK_SIMULATE:-}" ]; then
    export NUMBA_ENABLE_CUDASIM=1
    BENCH_ARGS=(--tiny --repeat 1)
    say "dry run under the CUDA simulator"
else
    unset NUMBA_ENABLE_CUDASIM
    export NETJIT_CUDA_PROBE=1        # ask the driver even where /dev/nvidia* is not visible
    # numba-cuda's advice on small grids and implicit host copies (the tests' tiny shapes) is noise here.
    export NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0 NUMBA_CUDA_WARN_ON_IMPLICIT_COPY=0
    BENCH_ARGS=()
fi

# --- Python: the first that imports numba and numpy ($PYTHON first; a .venv carried from another
# machine may point at an interpreter that is not here).
PY=""
for c in ${PYTHON:-} .venv/bin/python python3 python; do
    if { [ -x "$c" ] || command -v "$c" >/dev/null 2>&1; } && "$c" -c "import numba, numpy" >/dev/null 2>&1; then
        PY=$c; break
    fi
    say "python candidate '$c': missing or cannot import numba and numpy"
done
if [ -z "$PY" ]; then say "no Python with numba and numpy: nothing can run"; exit 3; fi
say "python: $(command -v "$PY" || echo "$PY") ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"

# --- CUDA toolkit: numba-cuda finds NVVM/libdevice in pip wheels or under CUDA_HOME.
if [ -z "${CUDA_HOME:-}" ] && [ -z "${NUMBA_ENABLE_CUDASIM:-}" ]; then
    if command -v nvcc >/dev/null 2>&1; then
        export CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
    elif [ -d /usr/local/cuda ]; then
        export CUDA_HOME=/usr/local/cuda
    fi
fi
say "CUDA_HOME=${CUDA_HOME:-unset}"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>&1 | head -4

# --- netjit importable without installing it: a temporary folder that lays the package out as
# pyproject.toml's package-dir does (netjit = frontend/ + compiler, runtime, proto; caffe2).
if [ -n "${NETJIT_FORCE_SHIM:-}" ] || ! "$PY" -c "import netjit" >/dev/null 2>&1; then
    SHIM=$(mktemp -d)
    mkdir "$SHIM/netjit"
    for f in "$ROOT"/frontend/*; do ln -s "$f" "$SHIM/netjit/$(basename "$f")"; done
    for d in compiler runtime proto; do ln -s "$ROOT/$d" "$SHIM/netjit/$d"; done
    ln -s "$ROOT/frontend/caffe2" "$SHIM/caffe2"
    export PYTHONPATH="$SHIM:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    say "netjit from this checkout through $SHIM"
fi
# protobuf: the generated caffe2_pb2 asks for a runtime at least as new as the protoc that made it;
# an older runtime reads these plain messages fine once told to skip that check.
if ! err=$("$PY" -c "import netjit.proto.caffe2_pb2" 2>&1); then
    if grep -qi "gencode\|runtime version\|VersionError" <<<"$err"; then
        export TEMPORARILY_DISABLE_PROTOBUF_VERSION_CHECK=true
        say "protobuf runtime older than the generated code: version check skipped ($(tail -1 <<<"$err"))"
    fi
    if ! err=$("$PY" -c "import netjit.proto.caffe2_pb2" 2>&1); then
        say "netjit does not import:"; echo "$err"; exit 3
    fi
fi
for z in "$ROOT/shared/models/zoo" "$ROOT/../shared/models/zoo"; do
    if [ -z "${NETJIT_ZOO_DIR:-}" ] && [ -f "$z/resnet50/predict_net.pbtxt" ]; then export NETJIT_ZOO_DIR=$z; fi
done
say "zoo: ${NETJIT_ZOO_DIR:-none (bench_gpu builds ResNet-50 with the brew builder)}"

# --- Environment report and smoke kernels: a generated elementwise kernel and a shared-memory
# reduction compiled and run through netjit, checked against numpy. If these fail, stop here.
say "=== environment and smoke kernels ==="
SMOKE=$(mktemp)
cat >"$SMOKE" <<'PY'
import importlib.metadata as md, sys, time
for dist in ("numba", "numba-cuda", "llvmlite", "numpy", "protobuf", "pytest", "cuda-bindings", "cupy-cuda13x",
             "cupy-cuda12x", "torch", "torchvision", "onnxruntime"):
    try:
        print(f"  {dist} {md.version(dist)}")
    except md.PackageNotFoundError:
        print(f"  {dist}: not installed")
import numpy as np
import netjit
from netjit.runtime import device
n = device.num_cuda_devices()
print(f"netjit from {netjit.__file__}; CUDA devices: {n} {device.unavailable_reason()}")
if n == 0:
    from numba import cuda
    try:
        cuda.detect()
    except Exception as err:  # noqa: BLE001
        print("numba.cuda.detect() failed:", err)
    sys.exit(3)
from numba import cuda
print("numba.cuda module:", cuda.__name__, getattr(cuda, "__file__", "?"))
if not device.simulator_enabled():
    d = cuda.get_current_device()
    print("device:", d.name, "compute capability", d.compute_capability)
from netjit import core, workspace
from netjit.proto import caffe2_pb2
gpu = core.DeviceOption(caffe2_pb2.CUDA, 0)
net = core.Net("smoke")
net.Scale(["x"], ["y"], scale=2.0)
net.Relu(["y"], ["y"])
net.Softmax(["y"], ["p"])
net.RunAllOnGPU()
x = np.random.default_rng(0).standard_normal((4, 300)).astype(np.float32)
workspace.FeedBlob("x", x, gpu)
t = time.perf_counter()
workspace.CreateNet(net)
workspace.RunNet("smoke")
y = np.maximum(2 * x, 0)
e = np.exp(y - y.max(1, keepdims=True))
np.testing.assert_allclose(workspace.FetchBlob("p"), e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)
compiled = workspace._ws().nets["smoke"].compiled
assert not compiled.fallbacks(), compiled.fallbacks()
print(f"smoke kernels compiled, ran and matched numpy in {time.perf_counter() - t:.1f} s")
print(compiled.explain(sources=False))
PY
SMOKE_LOG=$(mktemp)
timeout 80 "$PY" "$SMOKE" 2>&1 | tee "$SMOKE_LOG"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ] && grep -qiE "ptx|nvjitlink|linker|unsupported toolchain" "$SMOKE_LOG"; then
    # A toolkit newer than the driver: numba-cuda links through nvJitLink instead of the driver's JIT.
    say "retrying the smoke kernels with NUMBA_CUDA_ENABLE_MINOR_VERSION_COMPATIBILITY=1"
    export NUMBA_CUDA_ENABLE_MINOR_VERSION_COMPATIBILITY=1
    timeout 80 "$PY" "$SMOKE" 2>&1
    rc=$?
fi
if [ "$rc" -ne 0 ]; then say "the environment cannot run netjit's CUDA kernels (exit $rc): stopping"; exit 3; fi
[ -n "${GPU_CHECK_ENV_ONLY:-}" ] && exit 0

run() {   # run NAME SECONDS CMD...: tee to $OUT/NAME.txt when $OUT is set
    local name=$1 secs=$2; shift 2
    say "=== $name (limit ${secs}s) ==="
    if [ -n "$OUT_DIR" ]; then timeout -k 10 "$secs" "$@" 2>&1 | tee "$OUT_DIR/$name.txt"; return "${PIPESTATUS[0]}"
    else timeout -k 10 "$secs" "$@" 2>&1; fi
}
PYTEST_EXTRA=()
if "$PY" -c "import pytest_timeout" >/dev/null 2>&1; then PYTEST_EXTRA+=(--timeout=150); fi
# Compiling ~100 kernels is most of the test stage and runs on the CPU: 4 pytest workers share the GPU.
if [ -z "${NUMBA_ENABLE_CUDASIM:-}" ] && "$PY" -c "import xdist" >/dev/null 2>&1; then PYTEST_EXTRA+=(-n 4); fi
# Strict: a kernel that fails to compile on this GPU fails its test instead of running on the host.
# shellcheck disable=SC2086 # GPU_CHECK_PYTEST_ARGS is split on purpose
# -v: one line per test as it finishes, so a stage stopped by its limit still shows what passed.
NETJIT_STRICT=1 run gpu_tests "$TEST_S" "$PY" -m pytest -v -rfE -p no:cacheprovider tests/cuda --durations=15 \
    ${PYTEST_EXTRA[@]+"${PYTEST_EXTRA[@]}"} ${GPU_CHECK_PYTEST_ARGS:-}
tests_rc=$?
[ "$tests_rc" -eq 124 ] && say "gpu_tests ran past ${TEST_S}s and was stopped"
run bench_gpu "$BENCH_S" "$PY" examples/benchmarks/bench_gpu.py --budget $(( BENCH_S - 40 )) \
    ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"}
bench_rc=$?
[ "$bench_rc" -eq 124 ] && say "bench_gpu ran past ${BENCH_S}s and was stopped (rows printed so far are above)"
say "done: tests exit $tests_rc, bench exit $bench_rc"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
