#!/usr/bin/env bash
# Packs what scripts/device-check.sh needs on a lent GPU machine (CUDA 13, CMake, Ninja, PyTorch,
# but none of Peng's Debian libraries and no network) into ignored folders, each under the
# device tool's 64 MiB carry limit:
#
#   device-bundle/        bundle.tar.xz: bin/ (peng, the CUDA test binaries, the attention
#                         bench) and lib/ (every shared library they load except the C runtime
#                         and the CUDA driver/runtime/cuBLAS, which the device machine has);
#                         models/tiny*.gguf (tests/fixtures/tiny_model.py); the scripts.
#   device-model-1/, device-model-2/
#                         SmolLM2-135M-Instruct.Q4_1.gguf (~94 MiB) split in two plus its
#                         SHA-256: the model alone is over the carry limit. Part 1 (60 MiB)
#                         travels in a first call that stashes it on the warm machine; part 2
#                         (the rest) travels with device-bundle/ in the check's own call.
#
# Usage (here, after building build-device as docs/DEVICE_CHECK.md says):
#   scripts/device-bundle.sh [BUILD_DIR]
# Then run on the device (docs/DEVICE_CHECK.md):  scripts/device-check.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-device}
OUT=$ROOT/device-bundle
MODEL=$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf
LIMIT=$((64 * 1024 * 1024))

die() { echo "device-bundle: $*" >&2; exit 1; }

# The binaries: peng, every CUDA gtest binary, the attention bench.
BINS=("$BUILD/peng" "$BUILD/engine/cuda/engine_cuda_test" "$BUILD/engine/cuda/cuda_attention_bench")
while IFS= read -r f; do BINS+=("$f"); done < <(find "$BUILD/kernels" -maxdepth 2 -type f -name '*cuda*_test' -perm -u+x 2>/dev/null)
for b in "${BINS[@]}"; do
  [[ -x "$b" ]] || die "missing $b (build it: ninja -C $BUILD peng engine_cuda_test cuda_attention_bench kernels_cuda_attention_test)"
done

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/lib"
cp "${BINS[@]}" "$STAGE/bin/"

# Shared libraries from ldd, minus what the device machine provides itself: the C runtime
# (glibc pieces, the loader) and CUDA (driver, runtime, cuBLAS/cuBLASLt come with CUDA 13 there).
# libstdc++ / libgcc_s travel (GCC 12's may be newer than the device's).
SKIP='^(linux-vdso|libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|ld-linux|libcuda\.so|libcudart\.so|libcublas|libcublasLt|libnvidia)'
for b in "${BINS[@]}"; do
  ldd "$b" | awk '/=> \// {print $1, $3}'
done | sort -u | while read -r name path; do
  if [[ "$name" =~ $SKIP ]]; then continue; fi
  cp -L "$path" "$STAGE/lib/$name"
done
# Fail here, not on the device, if something is unresolved.
if ldd "${BINS[@]}" | grep -q 'not found'; then
  ldd "${BINS[@]}" | grep 'not found' >&2
  die "unresolved libraries (above)"
fi
# peng keeps its symbol table (no debug info): a crash's stack trace names the functions.
strip --strip-debug "$STAGE/bin/peng" 2>/dev/null || true
find "$STAGE"/bin "$STAGE"/lib -type f ! -name peng -exec strip --strip-unneeded {} + 2>/dev/null || true

rm -rf "$OUT" "$ROOT/device-model-1" "$ROOT/device-model-2"
mkdir -p "$OUT/models"
tar -C "$STAGE" -cf - bin lib | xz -9 -T0 > "$OUT/bundle.tar.xz"

# Tiny fixture models (GGUF, random weights): the forward test and generation always have a model.
PY=$ROOT/.venv/bin/python
[[ -x "$PY" ]] || PY=python3
"$PY" "$ROOT/tests/fixtures/tiny_model.py" "$STAGE/tiny" --types Q8_0,Q4_1 >/dev/null
cp "$STAGE/tiny/tiny.gguf" "$STAGE/tiny/tiny-Q8_0.gguf" "$STAGE/tiny/tiny-Q4_1.gguf" "$OUT/models/"
(cd "$ROOT" && git rev-parse HEAD 2>/dev/null || echo unknown) > "$OUT/COMMIT"
date -u +%FT%TZ > "$OUT/BUILT"

bytes=$(du -sb "$OUT" | cut -f1)
(( bytes < LIMIT )) || die "device-bundle/ is $bytes bytes, over the 64 MiB carry limit"
echo "device-bundle/: $((bytes / 1024 / 1024)) MiB ($(tar -tJf "$OUT/bundle.tar.xz" | grep -c '^lib/.') libraries)"

# SmolLM2 in two parts: 60 MiB alone in the first call, the rest beside the bundle.
if [[ -f "$MODEL" ]]; then
  size=$(stat -c %s "$MODEL")
  first=$((60 * 1024 * 1024))
  (( first < size )) || first=$(( (size + 1) / 2 ))
  sum=$(sha256sum "$MODEL" | cut -d' ' -f1)
  for i in 1 2; do
    mkdir -p "$ROOT/device-model-$i"
    if (( i == 1 )); then skip=0 count=$first; else skip=$first count=$((size - first)); fi
    dd if="$MODEL" of="$ROOT/device-model-$i/part" bs=1M iflag=skip_bytes,count_bytes \
       skip=$skip count=$count status=none
    echo "$sum" > "$ROOT/device-model-$i/SHA256"
    echo "$i" > "$ROOT/device-model-$i/INDEX"
    b=$(du -sb "$ROOT/device-model-$i" | cut -f1)
    (( b < LIMIT )) || die "device-model-$i is $b bytes, over the carry limit"
  done
  total=$(( $(du -sb "$ROOT/device-model-2" | cut -f1) + bytes ))
  (( total < LIMIT - 4 * 1024 * 1024 )) || die "device-bundle/ + device-model-2/ = $total bytes: too close to the carry limit with the working tree"
  echo "device-model-1/, device-model-2/: SmolLM2 in two parts ($((size / 1024 / 1024)) MiB, sha256 ${sum:0:12}...)"
else
  echo "note: $MODEL not found; the device check will use the tiny models only (scripts/fetch_model.sh fetches it)"
fi
