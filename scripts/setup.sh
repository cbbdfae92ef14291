#!/usr/bin/env bash
# Set up everything on a fresh machine: system packages, the .venv and the project.
# Idempotent and quick when nothing changed (a stamp records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

# System packages: libmagic for content sniffing of documents with a misleading extension; a
# C++ toolchain and cmake to build llama.cpp (the local chat server of the serving tests);
# chromium for the chat page test.
missing=()
ldconfig -p 2>/dev/null | grep -q 'libmagic\.so\.1' || missing+=(libmagic1)
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
# Headless Chromium for the chat page test (Playwright drives this binary).
command -v chromium >/dev/null || missing+=(chromium)
# Node.js and npm for the pinned AWS CDK CLI of infra/ (npx cdk).
command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "installing system packages (${missing[*]})…"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# The pinned AWS CDK CLI (infra/package-lock.json): installed only when infra/node_modules is
# missing or the lock file changed.
lock_hash=$(sha256sum infra/package-lock.json | cut -d' ' -f1)
if [ "$(cat infra/node_modules/.lorechat-lock 2>/dev/null)" != "$lock_hash" ]; then
  npm ci --prefix infra --no-audit --no-fund --loglevel=error >/dev/null
  echo "$lock_hash" > infra/node_modules/.lorechat-lock
fi

stamp=.venv/.lorechat-setup
wanted=$(cat pyproject.toml scripts/setup.sh infra/package-lock.json | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
export CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"
# A portable llama.cpp build: the native one uses AMX/AVX-512 instructions that a VM may report
# but not allow (it dies with a general protection fault on the first token).
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF}"
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: pip then takes the CPU build; an unpinned torch pulls multi-GB CUDA.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
echo "$wanted" > "$stamp"
echo "setup complete: $(.venv/bin/python --version), lorechat at .venv/bin/lorechat"
