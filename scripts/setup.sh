#!/usr/bin/env bash
# Create .venv and install factcap with everything its tests use. Idempotent; says what it
# does and how long each step takes.
# torch is installed first, pinned to the CPU build (2.13.0): a bare `torch` requirement
# would pull a CUDA build of several GB. Real users can install any torch >= 2.1 first.
# As root (or with passwordless sudo), the Debian packages the tests use are installed too when
# missing: wordnet-base (CAPTURE's synonyms), chromium (the report's and the study's browser
# tests), default-jre-headless (pycocoevalcap's Java tokenizer, which factcap's is checked
# against) and Mesa's EGL (3D assets render offscreen through it). Without them those tests
# skip and say why.
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

not_installed() {  # not_installed PACKAGE...: those dpkg does not list as installed
  command -v dpkg-query >/dev/null || return 0
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q " installed$" || echo "$pkg"
  done
}
debian_packages=()
[ -d /usr/share/wordnet ] || debian_packages+=(wordnet-base)
[ -x /usr/bin/chromium ] || debian_packages+=(chromium)
command -v java >/dev/null || debian_packages+=(default-jre-headless)
mapfile -t gl_packages < <(not_installed libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri)
debian_packages+=("${gl_packages[@]}")
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
