#!/usr/bin/env bash
# The main demo on a fresh machine: set up .venv (once), then run examples/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash examples/setup_env.sh
exec .venv/bin/python examples/demo.py "$@"
