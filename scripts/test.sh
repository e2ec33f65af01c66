#!/usr/bin/env bash
# The project's test command: installs what is missing, then lint, format check, type check and the tests.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the soak and chaos runs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "== ruff check";  .venv/bin/ruff check .
echo "== ruff format"; .venv/bin/ruff format --check .
echo "== mypy";        .venv/bin/mypy
echo "== pytest";      .venv/bin/pytest "$@"
