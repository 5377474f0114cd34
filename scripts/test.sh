#!/usr/bin/env bash
# Set up the environment and run the test suite. Extra arguments go to pytest,
# for example: bash scripts/test.sh --runslow
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
