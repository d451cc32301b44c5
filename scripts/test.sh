#!/usr/bin/env bash
# Set up (if needed), lint, and run the whole test suite offline. The summary lists every
# skipped test with its reason (-rs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
start=$SECONDS
ruff check . && ruff format --check .
python -m pytest -q -rs "$@"  # testpaths and --doctest-modules: pyproject.toml
echo "test: finished in $((SECONDS - start)) s"
