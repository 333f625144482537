#!/usr/bin/env bash
# Idempotent set-up for Peng on a Debian 12 machine: system packages, the Python venv used by
# tests/references/benchmarks, and (with --model) the default model. Quick when all is present.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libabsl-dev libyaml-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libpcre2-dev libboost-dev libboost-system-dev
  libopenblas-dev libdnnl-dev libgloo-dev
  python3-venv python3-yaml python3-dev prometheus
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# What tests and references need; benchmark-only packages (the llama.cpp peer, its server, the
# ShareGPT data) are installed by tests/bench/install_peer.sh when a benchmark runs.
PY_PACKAGES=(pytest numpy gguf tokenizers openai grpcio grpcio-tools grpcio-reflection grpcio-health-checking pyyaml prometheus-client httpx aiohttp safetensors)
stamp=.venv/.peng-setup-$(printf '%s\n' "${PY_PACKAGES[@]}" | sha256sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "setup: creating .venv"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q "${PY_PACKAGES[@]}"
  touch "$stamp"
fi

if [ "${1:-}" = "--model" ]; then
  scripts/fetch_model.sh
fi
echo "setup: ok"
