#!/usr/bin/env bash
# The serving benchmark's peer: llama-cpp-python's OpenAI server (`python -m llama_cpp.server`,
# from `llama-cpp-python[server]`) on the same GGUF and thread count as Peng.
#
#   tests/bench/serve_peer.sh                      # serve until Ctrl-C / SIGTERM
#   tests/bench/serve_peer.sh -- CMD [ARGS...]     # start, wait until ready, run CMD, stop
#
# Environment (defaults): PEER_HOST=127.0.0.1 PEER_PORT=8001 PEER_THREADS=2 PEER_CTX=8192
# PEER_MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf PEER_ALIAS=SmolLM2-135M-Instruct (the id
# Peng's configs/default.yaml serves, so both take the same "model") PENG_VENV=<repo>/.venv
# PEER_LOG=<file> (server output; default: a temporary file, printed if start-up fails).
#
# What the peer can do with concurrent requests: llama-cpp-python's server holds one
# llama_context with one sequence and serializes every completion behind a global lock (no
# continuous batching, no parallel slots; it has no n_parallel setting). By default
# (interrupt_requests=True) a newly arriving request *cancels* the one being streamed; we set
# --interrupt_requests False so that concurrent requests queue and all complete. Its best
# configuration for parallel requests is therefore FIFO queueing: throughput stays at
# single-stream speed and TTFT grows with the queue. It sends no usage in streams, so
# serve_bench.py re-tokenizes its output to count tokens. It reuses the KV of the longest
# common prefix with the previous request (no --cache needed for that).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${repo_root}"
venv="${PENG_VENV:-${repo_root}/.venv}"
python="${venv}/bin/python"
host="${PEER_HOST:-127.0.0.1}"
port="${PEER_PORT:-8001}"
threads="${PEER_THREADS:-2}"
ctx="${PEER_CTX:-8192}"
model="${PEER_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
alias="${PEER_ALIAS:-SmolLM2-135M-Instruct}"

if [[ "${1:-}" == "--" ]]; then shift; fi

if ! "${python}" -c 'import llama_cpp.server.app, sse_starlette, starlette_context, uvicorn' 2>/dev/null; then
  echo "serve_peer: llama-cpp-python[server] is not installed in ${venv};" \
       "run tests/bench/install_peer.sh" >&2
  exit 1
fi
if [[ ! -f "${model}" ]]; then
  echo "serve_peer: no model at ${model} (scripts/fetch_model.sh)" >&2
  exit 1
fi
if "${python}" - "$host" "$port" <<'EOF' 2>/dev/null; then
import socket, sys
s = socket.socket(); s.settimeout(1)
sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)
EOF
  echo "serve_peer: ${host}:${port} is already in use" >&2
  exit 1
fi

log="${PEER_LOG:-$(mktemp -t serve_peer.XXXXXX.log)}"
"${python}" -m llama_cpp.server --model "${model}" --model_alias "${alias}" \
  --host "${host}" --port "${port}" --n_ctx "${ctx}" --n_batch 512 \
  --n_threads "${threads}" --n_threads_batch "${threads}" \
  --interrupt_requests False --verbose False >"${log}" 2>&1 &
pid=$!

stop() {
  if kill -0 "${pid}" 2>/dev/null; then
    kill -TERM "${pid}" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "${pid}" 2>/dev/null || true
  fi
  wait "${pid}" 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ready=0
for _ in $(seq 600); do
  if ! kill -0 "${pid}" 2>/dev/null; then break; fi
  if "${python}" - "http://${host}:${port}/v1/models" <<'EOF' 2>/dev/null; then
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
EOF
    ready=1; break
  fi
  sleep 0.2
done
if [[ "${ready}" != 1 ]]; then
  echo "serve_peer: the server did not become ready; its log (${log}):" >&2
  tail -n 40 "${log}" >&2
  exit 1
fi
version="$("${python}" -c 'import llama_cpp; print(llama_cpp.__version__)')"
echo "serve_peer: llama_cpp.server (llama-cpp-python ${version}) ready on http://${host}:${port}" \
     "model=${alias} threads=${threads} n_ctx=${ctx} pid=${pid} log=${log}" >&2

if [[ $# -gt 0 ]]; then
  "$@"
else
  wait "${pid}"
fi
