#!/usr/bin/env bash
# Set up everything ffnode needs in ./.venv, from nothing; safe to run again (it only adds what is missing).
# Needs python3 >= 3.11 with venv, gcc, libgmp-dev and the Python headers (libp2p builds fastecdsa).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[dev,flower]"
# The NAT tests and `testnet.py --nat` firewall sites in network namespaces with nftables (root only; best effort:
# without it those tests skip and say why).
if [ "$(id -u)" = 0 ] && ! command -v nft >/dev/null && command -v apt-get >/dev/null; then
    apt-get install -y -q nftables >/dev/null 2>&1 || echo "note: could not install nftables; the NAT tests will skip"
fi
# The status page's test renders it in a real headless Chromium (Debian's package; best effort: without it that test
# skips and says why).
if [ "$(id -u)" = 0 ] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
    apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) \
        || echo "note: could not install chromium; the status page's browser test will skip"
fi
