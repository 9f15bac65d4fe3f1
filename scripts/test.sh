#!/usr/bin/env bash
# Set up ./.venv if needed, then run the test suite (CPU, offline, tiny models).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
