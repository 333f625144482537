#!/usr/bin/env bash
# Device check for the CUDA backend, run on a lent GPU machine through the device tool (full
# procedure: docs/DEVICE_CHECK.md). The binaries come prebuilt from scripts/device-bundle.sh
# (the device machine has CUDA 13 and PyTorch but none of Peng's Debian libraries).
#
#   scripts/device-check.sh stash   (carry device-model-1): keeps that half of SmolLM2 in
#                                   device-cache/ on the warm machine
#   scripts/device-check.sh [all]   (carry device-bundle and device-model-2): stashes the second
#                                   half, assembles SmolLM2, then runs the check
#   scripts/device-check.sh serve   the same, serving step only, SERVE_ROUNDS times (default 1)
#                                   on the CUDA worker: a soak for serving failures
#
# The check: (1) every CUDA gtest binary (generated attention variants vs the CPU reference; the
# CUDA worker vs the CPU worker on the tiny models and on SmolLM2 when both halves were
# stashed), (2) greedy generation on the GPU worker vs the CPU worker (token ids compared),
# (3) the attention benchmark: paged decode GB/s vs device-to-device copy, prefill TFLOP/s vs
# PyTorch SDPA on the same shapes, (4) serving: `peng serve` on the GPU worker and on the host's
# CPU worker, closed-loop load at concurrency 1/16/64 (scripts/device_serve_load.py).
# The summary goes to stdout and $OUT/device-check.md, rewritten after every step (a run cut off
# by its time limit still returns what it finished); the per-step logs go to $OUT/logs.tar.gz.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
MODE=${1:-all}
CACHE=$ROOT/device-cache
RESULTS=${OUT:-$ROOT/device-check-out}
OUTDIR=$CACHE/logs   # per-step logs, packed into $RESULTS/logs.tar.gz (the tool returns 8 files)
mkdir -p "$RESULTS" "$CACHE"
rm -rf "$OUTDIR" && mkdir -p "$OUTDIR"
REPORT=$RESULTS/device-check.md
SMOL=$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf

log() { echo "[device-check $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

stash() {
  local found=0
  for i in 1 2; do
    d=$ROOT/device-model-$i
    [[ -f $d/part ]] || continue
    cp "$d/part" "$CACHE/smollm2.part$i"
    cp "$d/SHA256" "$CACHE/smollm2.sha256"
    log "stashed SmolLM2 half $i ($(stat -c %s "$d/part") bytes)"
    found=1
  done
  (( found )) || return 1
  if [[ -f $CACHE/smollm2.part1 && -f $CACHE/smollm2.part2 ]]; then
    cat "$CACHE/smollm2.part1" "$CACHE/smollm2.part2" > "$SMOL.tmp"
    if [[ "$(sha256sum "$SMOL.tmp" | cut -d' ' -f1)" == "$(cat "$CACHE/smollm2.sha256")" ]]; then
      mv "$SMOL.tmp" "$SMOL"
      log "SmolLM2 assembled and checked: $SMOL"
    else
      rm -f "$SMOL.tmp"
      log "SmolLM2 halves do not match the SHA-256 (were they from the same bundle?)"
    fi
  fi
}
if [[ "$MODE" == stash ]]; then
  stash || die "no device-model-N/part here: run with carry [\"device-model-1\"]"
  exit 0
fi
[[ "$MODE" == all || "$MODE" == serve ]] || die "unknown mode '$MODE' (all | serve | stash)"
stash || log "no SmolLM2 half carried in this call"

# ---- unpack the bundle ----
BUNDLE=$ROOT/device-bundle
[[ -f $BUNDLE/bundle.tar.xz ]] || die "device-bundle/bundle.tar.xz missing: run scripts/device-bundle.sh here and carry [\"device-bundle\"]"
X=$CACHE/x
rm -rf "$X" && mkdir -p "$X"
if command -v xz >/dev/null; then
  tar -C "$X" -xJf "$BUNDLE/bundle.tar.xz"
else  # Python's lzma is always there
  python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$BUNDLE/bundle.tar.xz" "$X"
fi
log "bundle from commit $(cat "$BUNDLE/COMMIT" 2>/dev/null || echo '?'), built $(cat "$BUNDLE/BUILT" 2>/dev/null || echo '?')"

# CUDA 13 runtime and cuBLAS(Lt) from the machine: the toolkit, else PyTorch's nvidia wheels.
CUDA_LIBS=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64; do
  [[ -d $d ]] && CUDA_LIBS="$CUDA_LIBS:$d"
done
PY_NV=$(python3 - <<'PY' 2>/dev/null || true
import glob, os, site
dirs = []
for s in site.getsitepackages():
    dirs += glob.glob(os.path.join(s, "nvidia", "*", "lib"))
print(":".join(dirs))
PY
)
export LD_LIBRARY_PATH="$X/lib${CUDA_LIBS}${PY_NV:+:$PY_NV}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
missing=$(for b in "$X"/bin/*; do ldd "$b" | grep 'not found' || true; done | sort -u)
[[ -z "$missing" ]] || die "libraries not found on this machine (LD_LIBRARY_PATH=$LD_LIBRARY_PATH):
$missing"
nvidia-smi -L >&2 || log "nvidia-smi failed (continuing)"
GPU=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 || echo unknown)

# Model files the tests look for: tests read $PENG_SOURCE_DIR/models/SmolLM2-135M-Instruct.Q4_1.gguf.
SRC=$CACHE/src
rm -rf "$SRC" && mkdir -p "$SRC/models"
[[ -f $SMOL ]] && ln -s "$SMOL" "$SRC/models/SmolLM2-135M-Instruct.Q4_1.gguf"
TINY=$BUNDLE/models/tiny-Q8_0.gguf

declare -a ROWS=()
FAILED=0
write_report() {  # after every step: a run cut off by its limit still returns what it finished
  {
    echo "# Peng device check — $GPU — $(date -u +%F)"
    echo
    echo "Bundle from commit $(cat "$BUNDLE/COMMIT" 2>/dev/null || echo '?')."
    echo
    echo "| check | result | detail |"
    echo "|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    for f in "$OUTDIR/serve_load.md" "$OUTDIR/attention_bench.md"; do
      if [[ -s $f ]]; then echo; cat "$f"; fi
    done
  } > "$REPORT.tmp"
  mv "$REPORT.tmp" "$REPORT"
  if tar -C "$OUTDIR" -czf "$RESULTS/logs.tar.gz.tmp" . 2>/dev/null; then
    mv "$RESULTS/logs.tar.gz.tmp" "$RESULTS/logs.tar.gz"
  fi
}
row() {
  ROWS+=("| $1 | $2 | $3 |"); [[ "$2" == FAIL ]] && FAILED=1 || true
  log "$1: $2 $3"
  write_report
}

if [[ "$MODE" == all ]]; then  # (1) and (2)
# ---- (1) CUDA tests ----
run_test() {  # name, binary, env...
  local name=$1 bin=$2; shift 2
  local logf=$OUTDIR/$name.log
  if env "$@" timeout "${TEST_TIMEOUT:-150}" "$bin" --gtest_brief=1 > "$logf" 2>&1; then
    local skipped; skipped=$(grep -c '^\[  SKIPPED \]' "$logf" || true)
    row "$name" PASS "$(grep -E '^\[  PASSED  \]' "$logf" | head -1 | sed 's/\[  PASSED  \] //'); $skipped skipped"
  else
    row "$name" FAIL "exit $? — see $name.log: $(grep -E 'Failure|FAILED|rror' "$logf" | head -3 | tr '\n' ' ')"
  fi
}
for bin in "$X"/bin/*_test; do
  name=$(basename "$bin")
  if [[ $name == engine_cuda_test ]]; then
    for m in "$BUNDLE"/models/tiny-Q8_0.gguf "$BUNDLE"/models/tiny-Q4_1.gguf; do
      run_test "engine_cuda_test[$(basename "$m")]" "$bin" PENG_SOURCE_DIR="$SRC" PENG_CUDA_TEST_MODEL="$m"
    done
    if [[ -f $SMOL ]]; then
      run_test "engine_cuda_test[SmolLM2]" "$bin" PENG_SOURCE_DIR="$SRC"
    else
      row "engine_cuda_test[SmolLM2]" SKIP "SmolLM2 not stashed (carry device-model-1, -2 with 'stash' first)"
    fi
  else
    run_test "$name" "$bin" PENG_SOURCE_DIR="$SRC"
  fi
done

# ---- (2) greedy generation: GPU worker vs CPU worker ----
generate() {  # model, device, prompt -> "[ids]" (CPU matmuls with float activations, as on the GPU)
  timeout 60 "$X/bin/peng" generate --model "$1" --device "$2" --prompt "$3" --temperature 0 \
    --max-tokens 48 --output-ids --threads 8 --activations f32 2>>"$OUTDIR/generate.log" | tail -1
}
compare_generation() {  # label, model
  local label=$1 model=$2 prompt
  for prompt in "The capital of France is" "def fibonacci(n):" "Once upon a time, in a small village,"; do
    local cpu gpu
    cpu=$(generate "$model" cpu "$prompt") || { row "generate $label" FAIL "cpu worker failed (generate.log)"; continue; }
    gpu=$(generate "$model" cuda "$prompt") || { row "generate $label" FAIL "cuda worker failed (generate.log)"; continue; }
    local same
    same=$(python3 -c "
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
n = 0
while n < min(len(a), len(b)) and a[n] == b[n]: n += 1
print(n, len(a), len(b))" "$cpu" "$gpu")
    read -r n la lb <<< "$same"
    if (( n == la && la == lb )); then
      row "generate $label: \"$prompt\"" PASS "$la tokens identical"
    elif (( n >= 8 )); then  # bf16 GEMMs may flip a near-tie late in a greedy run
      row "generate $label: \"$prompt\"" WARN "first $n of $la/$lb tokens identical (bf16 near-tie?)"
    else
      row "generate $label: \"$prompt\"" FAIL "diverged at token $n: cpu $cpu gpu $gpu"
    fi
  done
}
[[ -f $SMOL ]] && compare_generation SmolLM2 "$SMOL"
compare_generation tiny-Q8_0 "$TINY"

fi  # (1) and (2)

# ---- (3) serving: GPU worker, and the host's CPU worker as the peer in the same run ----
serve_load() {  # label, device, threads
  local label=$1 device=$2 threads=$3 port=8000 pid
  local slog=$OUTDIR/serve_$device.log
  echo "==== $label ====" >> "$slog"
  "$X/bin/peng" serve --config "$ROOT/configs/gpu.yaml" --model "$SMOL" --device "$device" \
    --threads "$threads" --http-port $port --grpc-port 0 >> "$slog" 2>&1 &
  pid=$!
  local ready=0
  for _ in $(seq 120); do
    if python3 -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:$port/ready', timeout=1)" 2>/dev/null; then
      ready=1; break
    fi
    kill -0 $pid 2>/dev/null || break
    sleep 0.5
  done
  if (( !ready )); then
    row "serve $label" FAIL "not ready (serve_$device.log: $(tail -2 "$slog" | tr '\n' ' '))"
    kill $pid 2>/dev/null || true
    wait $pid 2>/dev/null || true
    return
  fi
  if timeout 150 python3 "$ROOT/scripts/device_serve_load.py" --base-url http://127.0.0.1:$port \
      --label "$label" --concurrency 1,16,64 --requests 8,64,128 --prompt-tokens 128 \
      --max-tokens 128 --json "$OUTDIR/serve_load.jsonl" >> "$OUTDIR/serve_load.md" 2>>"$OUTDIR/serve_load.log"; then
    row "serve $label" PASS "c=1/16/64 table below"
  else
    local died=""
    if ! kill -0 $pid 2>/dev/null; then
      local rc=0
      wait $pid || rc=$?
      died="; the server died (exit $rc): $(grep -m1 -E '^\*\*\*|SIG|Check failed|terminate' "$slog" | cut -c1-200)"
    fi
    row "serve $label" FAIL "load failed or errors (serve_load.log, serve_$device.log)$died"
  fi
  echo >> "$OUTDIR/serve_load.md"
  kill -TERM $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
}
if [[ -f $SMOL && "$MODE" == serve ]]; then
  for round in $(seq "${SERVE_ROUNDS:-1}"); do serve_load "SmolLM2, CUDA worker, round $round" cuda 4; done
elif [[ -f $SMOL ]]; then
  serve_load "SmolLM2, CUDA worker" cuda 4
  serve_load "SmolLM2, CPU worker ($(nproc) host threads)" cpu "$(nproc)"
else
  row "serve" SKIP "SmolLM2 not stashed"
fi

if [[ "$MODE" == all ]]; then
# ---- (4) attention benchmark ----
BENCH_JSON=$OUTDIR/attention_bench.jsonl
BENCH_MD=$OUTDIR/attention_bench.md
if timeout 150 "$X/bin/cuda_attention_bench" --json "$BENCH_JSON" > "$OUTDIR/attention_bench.log" 2>&1; then
  if timeout 120 python3 "$ROOT/scripts/device_attention_peer.py" "$BENCH_JSON" > "$BENCH_MD.tmp" 2>"$OUTDIR/attention_peer.log"; then
    mv "$BENCH_MD.tmp" "$BENCH_MD"
    row "attention benchmark" PASS "table below (PyTorch SDPA as the peer)"
  else
    cp "$OUTDIR/attention_bench.log" "$BENCH_MD"
    row "attention benchmark" WARN "PyTorch peer failed (attention_peer.log); Peng-only table below"
  fi
else
  row "attention benchmark" FAIL "see attention_bench.log: $(tail -2 "$OUTDIR/attention_bench.log" | tr '\n' ' ')"
fi
fi  # (4)

write_report
cat "$REPORT"
exit $FAILED
