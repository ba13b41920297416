#!/usr/bin/env bash
# Makes tests/fixtures/avif/: small AVIF files in the layouts Pillow's test images lack (10- and 12-bit,
# 4:2:2, monochrome, limited range, the BT.709, BT.2020, identity, YCgCo and primaries-derived matrices,
# premultiplied and 10-bit alpha), encoded by Debian's avifenc (libavif-bin) from two corpus pictures
# cropped to odd sizes by the pinned Pillow of scripts/pyenv.sh. The files are kept in git, so the tests
# need neither tool; scripts/avif_reference.py then records Pillow's decode of them beside the corpus's.
#
#   scripts/avif_fixtures.sh && PY=$(scripts/pyenv.sh) && "$PY" scripts/avif_reference.py
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${LOOKALIKE_CORPUS:-$ROOT/.lookalike/corpus}
OUT=$ROOT/tests/fixtures/avif
command -v avifenc >/dev/null || { echo "avif_fixtures: needs avifenc (apt-get install libavif-bin)" >&2; exit 1; }
[ -f "$CORPUS/good/hopper.jpg" ] || { echo "avif_fixtures: run scripts/fetch-corpus.sh first" >&2; exit 1; }
PY=$("$ROOT/scripts/pyenv.sh")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Odd sizes, so that the last chroma column and row of 4:2:0 and 4:2:2 have no right or lower neighbour.
"$PY" - "$CORPUS/good" "$tmp" <<'PY'
import sys
from PIL import Image
src, tmp = sys.argv[1:]
Image.open(f"{src}/hopper.jpg").convert("RGB").crop((10, 20, 107, 87)).save(f"{tmp}/photo.png")
Image.open(f"{src}/transparent.png").convert("RGBA").resize((81, 61)).save(f"{tmp}/alpha.png")
PY

mkdir -p "$OUT"
rm -f "$OUT"/*.avif
enc() { # source output avifenc-options...
  local src=$1 out=$2; shift 2
  avifenc --jobs 1 --speed 6 --min 4 --max 16 "$@" "$tmp/$src" "$OUT/$out" >/dev/null
}
enc photo.png yuv420-10bit-bt709-limited.avif --depth 10 --yuv 420 --cicp 1/1/1 --range limited
enc photo.png yuv422-8bit-bt601-limited.avif --depth 8 --yuv 422 --cicp 1/13/6 --range limited
enc photo.png yuv444-12bit-bt2020-full.avif --depth 12 --yuv 444 --cicp 9/16/9 --range full
enc photo.png yuv400-10bit-full.avif --depth 10 --yuv 400 --cicp 1/13/6 --range full
enc photo.png yuv444-8bit-identity.avif --depth 8 --yuv 444 --cicp 1/13/0 --range full
enc photo.png yuv420-8bit-ycgco.avif --depth 8 --yuv 420 --cicp 1/13/8 --range full
enc photo.png yuv420-8bit-p3-from-primaries.avif --depth 8 --yuv 420 --cicp 12/13/12 --range full
enc photo.png yuv420-8bit-unspecified-limited.avif --depth 8 --yuv 420 --cicp 2/2/2 --range limited
enc alpha.png alpha-10bit-premultiplied.avif --depth 10 --yuv 444 --cicp 1/13/6 --premultiply
enc alpha.png alpha-8bit-420.avif --depth 8 --yuv 420 --cicp 1/13/6
echo "avif_fixtures: $(ls "$OUT" | wc -l) files, $(du -sk "$OUT" | cut -f1) KiB in $OUT" >&2
