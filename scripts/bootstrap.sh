#!/usr/bin/env bash
# Set up everything ffnode needs in ./.venv, from nothing; safe to run again (it only adds what is missing).
# Needs python3 >= 3.11 with venv, gcc, libgmp-dev and the Python headers (libp2p builds fastecdsa).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[dev]"
