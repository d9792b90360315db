#!/usr/bin/env bash
# The whole test suite on a fresh machine: venv, install, ruff, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,operator,ray
.venv/bin/ruff check .
.venv/bin/pytest "$@"
