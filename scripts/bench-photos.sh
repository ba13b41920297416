#!/usr/bin/env bash
# The real-photo set of the ingest benchmark: 297 distinct JPEGs (median 1.26 megapixels, 0.80-2.30)
# made from the 54 Vendure photos and the 45 Saleor renders (scripts/fetch-datasets.sh), three variants
# of each: a crop of 85-95% of each side at a random offset (never below 0.8 megapixels), re-encoded as
# JPEG at quality 85-92, alpha composited over white. Fixed seed: the same bytes on every machine with
# the pinned Pillow (scripts/pyenv.sh); manifest.json lists each file's source, size, crop, quality and
# SHA-256. Every file's bytes are distinct, so the service's reuse of identical images cannot help.
# Prints the folder.
#
#   scripts/bench-photos.sh            # -> $LOOKALIKE_CACHE/bench-photos-v1 (default ~/.cache/lookalike)
#
# Made once; a folder whose .complete stamp matches the recipe is reused as it is.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${LOOKALIKE_CACHE:-$HOME/.cache/lookalike}
DATA=${LOOKALIKE_DATA:-$ROOT/.lookalike/datasets}
RECIPE="bench-photos v1: vendure+saleor, 3 variants, crop 0.85-0.95, >=0.8MP, jpeg q85-92, seed 14, manifest"
OUT=$CACHE/bench-photos-v1

if [ "$(cat "$OUT/.complete" 2>/dev/null)" = "$RECIPE" ]; then
  echo "$OUT"
  exit 0
fi
"$ROOT/scripts/fetch-datasets.sh" --out "$DATA" vendure saleor >&2
PY=$("$ROOT/scripts/pyenv.sh")
TMP=$(mktemp -d "$CACHE/bench-photos.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
"$PY" - "$DATA" "$TMP" <<'EOF'
import hashlib, io, json, random, statistics, sys
from pathlib import Path
from PIL import Image

data, out = Path(sys.argv[1]), Path(sys.argv[2])
SEED, VARIANTS, MIN_PIXELS = 14, 3, 800_000
sources = sorted(p for s in ("vendure", "saleor") for p in (data / s).glob("*/*")
                 if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
assert len(sources) == 99, f"expected the 54 Vendure and 45 Saleor images, found {len(sources)}"
digests, pixels, manifest = {}, [], []
for src in sources:
    with Image.open(src) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            base = Image.new("RGB", rgba.size, (255, 255, 255))
            base.paste(rgba, mask=rgba.getchannel("A"))
            im = base
        else:
            im = im.convert("RGB")
    w, h = im.size
    rel = src.relative_to(data)
    for k in range(VARIANTS):
        rng = random.Random(f"{SEED}:{rel.as_posix()}:{k}")
        # Same fraction on both sides keeps the aspect; raised when needed to stay >= 0.8 MP.
        f = max(rng.uniform(0.85, 0.95), (MIN_PIXELS / (w * h)) ** 0.5)
        cw, ch = min(w, round(w * f)), min(h, round(h * f))
        while cw * ch < MIN_PIXELS and (cw < w or ch < h):
            cw, ch = min(w, cw + 1), min(h, ch + 1)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        quality = rng.randint(85, 92)
        buf = io.BytesIO()
        im.crop((x, y, x + cw, y + ch)).save(buf, "JPEG", quality=quality)
        body = buf.getvalue()
        digest = hashlib.sha256(body).hexdigest()
        assert digest not in digests, f"{rel} variant {k}: bytes repeat {digests.get(digest)}"
        digests[digest] = (rel, k, x, y, cw, quality)
        pixels.append(cw * ch)
        name = f"{rel.parts[0]}-{rel.parts[1]}-{src.stem}-v{k}.jpg"
        (out / name).write_bytes(body)
        manifest.append({"file": name, "source": rel.as_posix(), "width": cw, "height": ch,
                         "crop": [x, y], "quality": quality, "bytes": len(body), "sha256": digest})
median = statistics.median(pixels) / 1e6
assert median >= 0.8, f"median {median:.2f} MP"
(out / "manifest.json").write_text(json.dumps({"files": manifest}, indent=1) + "\n")
print(f"bench-photos: {len(pixels)} distinct JPEGs, median {median:.2f} MP, "
      f"smallest {min(pixels) / 1e6:.2f} MP, largest {max(pixels) / 1e6:.2f} MP", file=sys.stderr)
EOF
echo "$RECIPE" >"$TMP/.complete"
rm -rf "$OUT"
mv "$TMP" "$OUT"
trap - EXIT
echo "$OUT"
