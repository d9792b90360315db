#!/usr/bin/env bash
# The main job on a fresh machine: venv, install, run the default recipe (learns on CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/nexrl -m self-hosted -c recipe/arithmetic/arithmetic.yaml --run-nexrl "$@"
