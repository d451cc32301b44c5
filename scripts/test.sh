#!/usr/bin/env bash
# Set up (if needed), lint, and run the whole test suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
ruff check . && ruff format --check .
python -m pytest -q --doctest-modules src/factcap tests "$@"
