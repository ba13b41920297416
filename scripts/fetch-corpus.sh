#!/usr/bin/env bash
# Builds the odd-and-bad image corpus for the cleaning-stage tests (crates/vision/tests/corpus.rs and
# tests/corpus.rs) from two registry packages, pinned by version and SHA-256:
#
#   Pillow 13.0.0 sdist (pip download)     Tests/images/: orientations, CMYK, 16-bit, APNG, MPO, AVIF
#                                          (every one: irot/imir, alpha, a sequence), HEIF, truncated and
#                                          broken files, decompression bombs
#   Debian libjxl-testdata (apt-get download + dpkg-deb, no install, no root unless the package lists
#                                          need an update): flower JPEG variants, 16-bit PNG, wide-gamut ICC
#                                          PNGs, PngSuite, a JPEG XL file
#
#   scripts/fetch-corpus.sh [--out DIR]
#
# Writes DIR/good/<file> (valid, if odd, images) and DIR/bad/<file> (must be rejected), flat names.
# DIR defaults to ${LOOKALIKE_CORPUS:-<repo>/.lookalike/corpus}; downloads are cached in
# ${LOOKALIKE_CACHE:-~/.cache/lookalike}. A corpus whose DIR/.complete matches this script's pins and lists
# is left alone (well under a second); otherwise it is rebuilt in a temporary folder and renamed into place.
# The tests generate a few more cases themselves (empty file, HTML, a cut JPEG, a 20000x20000 PNG header).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${LOOKALIKE_CORPUS:-$ROOT/.lookalike/corpus}
CACHE=${LOOKALIKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lookalike}

die() { echo "fetch-corpus: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1'" ;;
  esac
done

PILLOW_VERSION=13.0.0
PILLOW_SDIST="$CACHE/sdist/pillow-$PILLOW_VERSION.tar.gz"
PILLOW_SHA=cdcd1ba258178f7356d74170c9a81ba4eab6a5d55748bc402a5a2a6fe6be3510
JXL_VERSION=0.0~git20230110.d6168ff-1
JXL_DEB="$CACHE/deb/libjxl-testdata_${JXL_VERSION}_all.deb"
JXL_SHA=a58523413f486760a0f3cbc931142a27e3aa25f77315b862046f089ed34aa2c7
FORMAT=1  # bump when the layout changes

# <good|bad> <path in the package>. The file keeps its base name; Pillow's apng/ files get an apng_ prefix
# (their names alone say nothing). Expected outcomes per file live in the tests, not here.
PILLOW_FILES=(
  good/pil_sample_cmyk.jpg good/hopper_gray.jpg good/app13-multiple.jpg good/hopper.jpg
  good/hopper_orientation_2.jpg good/hopper_orientation_3.jpg good/hopper_orientation_4.jpg
  good/hopper_orientation_5.jpg good/hopper_orientation_6.jpg good/hopper_orientation_7.jpg
  good/hopper_orientation_8.jpg
  good/hopper.webp good/hopper_orientation_3.webp good/hopper_orientation_6.webp good/hopper_orientation_8.webp
  good/transparent.png good/pil123rgba.png good/p_trns_single.png good/pil123p.png good/i_trns.png
  good/apng/mode_16bit.png good/iss634.apng good/iss634.gif good/transparent.webp good/iss634.webp
  good/sugarshack.mpo good/frozenpond.mpo good/hopper.tif good/tiff_16bit_RGB.tiff good/hopper.bmp
  good/hopper_16bit.pgm good/hopper_16bit_qtables.jpg good/hopper_bad_exif.jpg good/invalid-exif.jpg
  good/truncated_app14.jpg good/hopper_zero_comment_subblocks.gif
  good/avif/hopper.avif good/avif/hopper-missing-pixi.avif good/avif/exif.avif good/avif/icc_profile.avif
  good/avif/icc_profile_none.avif good/avif/transparency.avif good/avif/star.avifs
  good/avif/xmp_tags_orientation.avif good/avif/rot0mir0.avif good/avif/rot0mir1.avif good/avif/rot1mir0.avif
  good/avif/rot1mir1.avif good/avif/rot2mir0.avif good/avif/rot2mir1.avif good/avif/rot3mir0.avif
  good/avif/rot3mir1.avif
  bad/truncated_jpeg.jpg bad/truncated_image.png bad/truncated_end_chunk.png bad/broken.png
  bad/broken_data_stream.png bad/decompression_bomb.gif bad/decompression_bomb_extents.gif
  bad/decompression_bomb.ico bad/negative_size.ppm bad/zero_width.gif
  bad/oom-225817ca0f8c663be7ab4b9e717b02c661e66834.tif bad/avif/hopper.heif
)
JXL_FILES=(
  good/jxl/flower/flower.png.im_q85_420.jpg good/jxl/flower/flower.png.im_q85_420_R13B.jpg
  good/jxl/flower/flower.png.im_q85_420_progr.jpg good/jxl/flower/flower.png.im_q85_422.jpg
  good/jxl/flower/flower.png.im_q85_440.jpg good/jxl/flower/flower.png.im_q85_444.jpg
  good/jxl/flower/flower.png.im_q85_444_1x2.jpg good/jxl/flower/flower.png.im_q85_asymmetric.jpg
  good/jxl/flower/flower.png.im_q85_gray.jpg good/jxl/flower/flower.png.im_q85_luma_subsample.jpg
  good/jxl/flower/flower.png.im_q85_rgb.jpg good/jxl/flower/flower.png.im_q85_rgb_subsample_blue.jpg
  good/jxl/flower/flower_small.q85_420_non_interleaved.jpg
  good/jxl/flower/flower_small.q85_444_partially_interleaved.jpg
  good/jxl/flower/flower_alpha.png good/jxl/flower/flower_small.g.depth16.pgm
  good/jxl/hdr_room.png good/jxl/traffic_light.gif
  good/external/wide-gamut-tests/P3-sRGB-color-bars.png good/external/wide-gamut-tests/P3-sRGB-color-ring.png
  good/external/wide-gamut-tests/R2020-sRGB-color-bars.png
  good/external/wide-gamut-tests/R2020-sRGB-color-ring.png
  good/external/pngsuite/ccwn2c08.png good/external/pngsuite/ccwn3p08.png good/external/pngsuite/ct1n0g04.png
  good/external/pngsuite/ctjn0g04.png good/external/pngsuite/ctzn0g04.png good/external/pngsuite/exif2c08.png
  good/external/pngsuite/g04n2c08.png good/external/pngsuite/g10n3p04.png
  good/external/raw.pixls/Nikon-D300-12bit_2020_g1_dt.png
  bad/jxl/pq_gradient.jxl
)

sha_ok() { [ -s "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root for: $*"; fi
}
dest_name() { # path-in-package -> flat file name
  case "$1" in
    apng/*) echo "apng_${1#apng/}" ;;
    *) basename "$1" ;;
  esac
}

stamp() {
  echo "format=$FORMAT pillow=$PILLOW_VERSION:$PILLOW_SHA libjxl-testdata=$JXL_VERSION:$JXL_SHA" \
    "files=$(printf '%s\n' "${PILLOW_FILES[@]}" "${JXL_FILES[@]}" | sha256sum | cut -c1-16)"
}

want=$(stamp)
if [ -f "$OUT/.complete" ] && [ "$(cat "$OUT/.complete")" = "$want" ]; then
  echo "fetch-corpus: corpus in $OUT is complete, skipped" >&2
  exit 0
fi

fetch_pillow() {
  sha_ok "$PILLOW_SDIST" "$PILLOW_SHA" && return
  echo "fetch-corpus: downloading the pillow==$PILLOW_VERSION sdist (pip download)" >&2
  local tmp; tmp=$(mktemp -d)
  # --no-binary only for pillow: its build requirements (needed by pip to read the sdist's metadata)
  # then come as wheels in seconds, instead of being built from source themselves.
  python3 -m pip download --quiet --no-deps --no-binary pillow -d "$tmp" "pillow==$PILLOW_VERSION" >&2 \
    || { rm -rf "$tmp"; die "pip download pillow==$PILLOW_VERSION failed"; }
  sha_ok "$tmp/pillow-$PILLOW_VERSION.tar.gz" "$PILLOW_SHA" \
    || { rm -rf "$tmp"; die "checksum mismatch for the pillow==$PILLOW_VERSION sdist"; }
  mkdir -p "$(dirname "$PILLOW_SDIST")"
  mv "$tmp/pillow-$PILLOW_VERSION.tar.gz" "$PILLOW_SDIST"
  rm -rf "$tmp"
}

fetch_jxl() {
  sha_ok "$JXL_DEB" "$JXL_SHA" && return
  echo "fetch-corpus: downloading libjxl-testdata=$JXL_VERSION (apt-get download)" >&2
  local tmp; tmp=$(mktemp -d)
  chmod 755 "$tmp"  # apt's download user must be able to write here
  if ! (cd "$tmp" && apt-get download -qq "libjxl-testdata=$JXL_VERSION" >/dev/null 2>&1); then
    # A fresh machine may not have the package lists yet.
    as_root apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed"
    (cd "$tmp" && apt-get download -qq "libjxl-testdata=$JXL_VERSION" >/dev/null 2>&1) \
      || { rm -rf "$tmp"; die "apt-get download libjxl-testdata=$JXL_VERSION failed"; }
  fi
  local deb; deb=$(ls "$tmp"/libjxl-testdata_*_all.deb)
  sha_ok "$deb" "$JXL_SHA" || { rm -rf "$tmp"; die "checksum mismatch for libjxl-testdata=$JXL_VERSION"; }
  mkdir -p "$(dirname "$JXL_DEB")"
  mv "$deb" "$JXL_DEB"
  rm -rf "$tmp"
}

fetch_pillow
fetch_jxl

mkdir -p "$(dirname "$OUT")"
TMP_DIR=$(mktemp -d "$(dirname "$OUT")/.corpus.tmp.XXXXXX")
trap 'rm -rf "$TMP_DIR"' EXIT
mkdir -p "$TMP_DIR/src" "$TMP_DIR/good" "$TMP_DIR/bad"

# Only the listed members are extracted: one pass over each archive, no install.
pillow_prefix="pillow-$PILLOW_VERSION/Tests/images"
tar -xzf "$PILLOW_SDIST" -C "$TMP_DIR/src" \
  $(for e in "${PILLOW_FILES[@]}"; do echo "$pillow_prefix/${e#*/}"; done) \
  || die "the pillow sdist lacks a listed file"
jxl_prefix="./usr/share/libjxl-testdata"
dpkg-deb --fsys-tarfile "$JXL_DEB" | tar -x -C "$TMP_DIR/src" \
  $(for e in "${JXL_FILES[@]}"; do echo "$jxl_prefix/${e#*/}"; done) \
  || die "libjxl-testdata lacks a listed file"

place() { # prefix entries...
  local prefix=$1 entry kind path name; shift
  for entry in "$@"; do
    kind=${entry%%/*}; path=${entry#*/}; name=$(dest_name "$path")
    [ ! -e "$TMP_DIR/$kind/$name" ] || die "two listed files are both named $name"
    mv "$TMP_DIR/src/$prefix/$path" "$TMP_DIR/$kind/$name"
  done
}
place "$pillow_prefix" "${PILLOW_FILES[@]}"
place "$jxl_prefix" "${JXL_FILES[@]}"
rm -rf "$TMP_DIR/src"
chmod -R u+rwX,go+rX "$TMP_DIR"

echo "$want" > "$TMP_DIR/.complete"
rm -rf "$OUT"
mv "$TMP_DIR" "$OUT"
trap - EXIT
echo "fetch-corpus: $(ls "$OUT/good" | wc -l) good and $(ls "$OUT/bad" | wc -l) bad files in $OUT" >&2
