#!/usr/bin/env bash
# Benchmark-only venv with TRL (.venv-bench, gitignored): TRL is never a runtime dependency of NexRL.
# torch==2.13.0 goes in first (the CPU wheel on disk): an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-bench
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q -e . trl
"$VENV/bin/python" - <<'PY'
import torch
import trl

assert torch.__version__ == "2.13.0+cpu", f"torch drifted to {torch.__version__}"
print(f"{__import__('sys').prefix}: torch {torch.__version__}, trl {trl.__version__}")
PY
