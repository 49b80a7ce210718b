#!/usr/bin/env bash
# Create .venv in the checkout (once) and install netjit into it with every optional extra.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[all]"
# Compile netjit's library kernels now, on this machine, in parallel (a few minutes once; skipped
# when already done for this code, numba and CPU), so the first net runs in seconds.
# NETJIT_WARMUP=0 skips it (kernels then compile on first use).
if [ "${NETJIT_WARMUP:-1}" != 0 ]; then
  .venv/bin/netjit warmup --if-needed || echo "netjit warmup failed (see above): kernels will compile on first use"
fi
