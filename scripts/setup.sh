#!/usr/bin/env bash
# Create .venv and install factcap with everything its tests use. Idempotent; says what it
# does and how long each step takes.
# torch is installed first, pinned to the CPU build (2.13.0): a bare `torch` requirement
# would pull a CUDA build of several GB. Real users can install any torch >= 2.1 first.
# As root (or with passwordless sudo), Debian's wordnet-base (CAPTURE's synonyms) and chromium
# (the report's real-browser tests) are installed too; without them those tests skip and say
# why.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
start=$SECONDS
step() {  # step "what" command...: run it, then say how long it took
  local what=$1 t0=$SECONDS
  shift
  echo "setup: $what ..."
  "$@"
  echo "setup: $what: done in $((SECONDS - t0)) s"
}
quiet_pip() { python -m pip install -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }

[ -x .venv/bin/python ] || step "create .venv" "$PYTHON" -m venv .venv
. .venv/bin/activate
step "upgrade pip" quiet_pip --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  step "install torch 2.13.0 (CPU build)" quiet_pip "torch==2.13.0"
fi
step "install factcap and its test dependencies (pip install -e '.[dev]')" quiet_pip -e ".[dev]"

debian_packages=()
[ -d /usr/share/wordnet ] || debian_packages+=(wordnet-base)
[ -x /usr/bin/chromium ] || debian_packages+=(chromium)
if [ ${#debian_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo -n); fi
  if command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then
    apt_install() {
      "${sudo[@]}" apt-get update -qq >/dev/null &&
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
          --no-install-recommends "${debian_packages[@]}" >/dev/null
    }
    step "install Debian packages: ${debian_packages[*]}" apt_install ||
      echo "setup: could not install ${debian_packages[*]}; their tests will skip and say why"
  else
    echo "setup: not root and no passwordless sudo: skipping ${debian_packages[*]}" \
      "(apt-get install ${debian_packages[*]}); their tests will skip and say why"
  fi
fi
python -c "import factcap, torch, transformers; print('setup: factcap', factcap.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
echo "setup: ready in $((SECONDS - start)) s"
