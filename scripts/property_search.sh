#!/usr/bin/env bash
# The wide property search: the test files with hypothesis properties, 5,000 random examples per
# property (new ones each run). CI runs the same properties derandomized (tests/conftest.py).
# A failure prints its example and a reproduction blob: keep the example as an @example regression.
# Extra arguments go to pytest, e.g. `bash scripts/property_search.sh -k admission`.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(grep -rl --include='test_*.py' '@given' tests)
HYPOTHESIS_PROFILE=wide .venv/bin/pytest -q "${files[@]}" "$@"
