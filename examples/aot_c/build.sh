#!/usr/bin/env bash
# Build the LeNet bundle (unless BUNDLE_DIR already holds one), compile the C example against it,
# and run it on the real MNIST test digits.
#
#   bash examples/aot_c/build.sh [BUNDLE_DIR]        # default: build/lenet in the checkout
#
# Needs: cc, and `netjit` (the checkout's .venv) when the bundle must be built first.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
shared="${NETJIT_SHARED:-$repo/../shared}"
bundle="$(mkdir -p "${1:-$repo/build/lenet}" && cd "${1:-$repo/build/lenet}" && pwd)"
name=lenet
netjit="${NETJIT:-$repo/.venv/bin/netjit}"
if [ ! -f "$bundle/bundle.json" ]; then
    "$netjit" aot "$shared/models/lenet_pytorch_export/init_net.pb" \
        "$shared/models/lenet_pytorch_export/predict_net.pb" --input 1=100,1,28,28 --name "$name" -o "$bundle"
fi
# The executable finds lenet.so (and the OpenBLAS beside it) through its rpath: no LD_LIBRARY_PATH.
cc -O2 -std=c11 -Wall -DBUNDLE="$name" -include "$bundle/$name.h" -o "$bundle/mnist_aot" "$here/mnist_aot.c" \
    -L"$bundle" -l:"$name.so" -Wl,-rpath,"$bundle"
data="$(mktemp -d)"
trap 'rm -rf "$data"' EXIT
gunzip -c "$shared/data/mnist/t10k-images-idx3-ubyte.gz" > "$data/images.idx"
gunzip -c "$shared/data/mnist/t10k-labels-idx1-ubyte.gz" > "$data/labels.idx"
"$bundle/mnist_aot" "$data/images.idx" "$data/labels.idx" "$bundle/$name.weights.bin" ${LOGITS_OUT:+"$LOGITS_OUT"}
