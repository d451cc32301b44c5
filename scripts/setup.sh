#!/usr/bin/env bash
# Create .venv and install factcap with its test dependencies. Idempotent.
# torch is installed first, pinned to the CPU build (2.13.0): a bare `torch` requirement
# would pull a CUDA build of several GB. Real users can install any torch >= 2.1 first.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
python -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import factcap, torch, transformers; print('factcap', factcap.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
