#!/usr/bin/env bash
# Device check for the CUDA backend, run on a lent GPU machine through the device tool (full
# procedure: docs/DEVICE_CHECK.md). The binaries come prebuilt from scripts/device-bundle.sh
# (the device machine has CUDA 13 and PyTorch but none of Peng's Debian libraries).
#
#   scripts/device-check.sh stash   (carry device-model-1 or device-model-2): keeps that half of
#                                   SmolLM2 in device-cache/ on the warm machine
#   scripts/device-check.sh [all]   (carry device-bundle): the check itself
#
# The check: (1) every CUDA gtest binary (generated attention variants vs the CPU reference; the
# CUDA worker vs the CPU worker on the tiny models and on SmolLM2 when both halves were
# stashed), (2) greedy generation on the GPU worker vs the CPU worker (token ids compared),
# (3) the attention benchmark: paged decode GB/s vs device-to-device copy, prefill TFLOP/s vs
# PyTorch SDPA on the same shapes. A summary table goes to stdout and $OUT/device-check.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
MODE=${1:-all}
CACHE=$ROOT/device-cache
OUTDIR=${OUT:-$ROOT/device-check-out}
mkdir -p "$OUTDIR" "$CACHE"
REPORT=$OUTDIR/device-check.md
SMOL=$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf

log() { echo "[device-check $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ "$MODE" == stash ]]; then
  found=0
  for i in 1 2; do
    d=$ROOT/device-model-$i
    [[ -f $d/part ]] || continue
    cp "$d/part" "$CACHE/smollm2.part$i"
    cp "$d/SHA256" "$CACHE/smollm2.sha256"
    log "stashed SmolLM2 half $i ($(stat -c %s "$d/part") bytes)"
    found=1
  done
  (( found )) || die "no device-model-N/part here: run with carry [\"device-model-1\"] (then 2)"
  if [[ -f $CACHE/smollm2.part1 && -f $CACHE/smollm2.part2 ]]; then
    cat "$CACHE/smollm2.part1" "$CACHE/smollm2.part2" > "$SMOL.tmp"
    if [[ "$(sha256sum "$SMOL.tmp" | cut -d' ' -f1)" == "$(cat "$CACHE/smollm2.sha256")" ]]; then
      mv "$SMOL.tmp" "$SMOL"
      log "SmolLM2 assembled and checked: $SMOL"
    else
      rm -f "$SMOL.tmp"
      die "SmolLM2 halves do not match the SHA-256 (were they from the same bundle?)"
    fi
  fi
  exit 0
fi
[[ "$MODE" == all ]] || die "unknown mode '$MODE' (all | stash)"

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
row() { ROWS+=("| $1 | $2 | $3 |"); [[ "$2" == FAIL ]] && FAILED=1 || true; }

# ---- (1) CUDA tests ----
run_test() {  # name, binary, env...
  local name=$1 bin=$2; shift 2
  local logf=$OUTDIR/$name.log
  if env "$@" timeout 300 "$bin" --gtest_brief=1 > "$logf" 2>&1; then
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
  timeout 300 "$X/bin/peng" generate --model "$1" --device "$2" --prompt "$3" --temperature 0 \
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

# ---- (3) attention benchmark ----
BENCH_JSON=$OUTDIR/attention_bench.jsonl
BENCH_MD=$OUTDIR/attention_bench.md
if timeout 300 "$X/bin/cuda_attention_bench" --json "$BENCH_JSON" > "$OUTDIR/attention_bench.log" 2>&1; then
  if timeout 300 python3 "$ROOT/scripts/device_attention_peer.py" "$BENCH_JSON" > "$BENCH_MD" 2>"$OUTDIR/attention_peer.log"; then
    row "attention benchmark" PASS "table below (PyTorch SDPA as the peer)"
  else
    cat "$OUTDIR/attention_bench.log" > "$BENCH_MD"
    row "attention benchmark" WARN "PyTorch peer failed (attention_peer.log); Peng-only table below"
  fi
else
  row "attention benchmark" FAIL "see attention_bench.log: $(tail -2 "$OUTDIR/attention_bench.log" | tr '\n' ' ')"
fi

{
  echo "# Peng device check — $GPU — $(date -u +%F)"
  echo
  echo "| check | result | detail |"
  echo "|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  [[ -f $BENCH_MD ]] && cat "$BENCH_MD"
} | tee "$REPORT"
exit $FAILED
