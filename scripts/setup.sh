#!/usr/bin/env bash
# Create .venv and install NexRL with the extras given as arguments (e.g. dev,operator).
# torch==2.13.0 goes first: it is the CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet torch==2.13.0
.venv/bin/pip install --quiet -e ".[${extras}]"
