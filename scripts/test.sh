#!/usr/bin/env bash
# The one test command: lint, layer contracts, then every test (slow and e2e included).
# Pass pytest arguments through, e.g. `scripts/test.sh -m "not slow"` for the fast loop.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks
.venv/bin/lint-imports
.venv/bin/python -m pytest "$@"
