"""Pillow's decode of AVIF files, summarised, for crates/vision/tests/avif.rs.

    PY=$(scripts/pyenv.sh) && "$PY" scripts/avif_reference.py   # rewrites tests/fixtures/avif_reference.json

Each AVIF file of the corpus (`scripts/fetch-corpus.sh`: good/*.avif and *.avifs, Pillow's test images) and
of tests/fixtures/avif (`scripts/avif_fixtures.sh`: the bit depths, subsamplings, ranges and matrices the
corpus lacks) is decoded by Pillow 13 (libavif with dav1d, from its wheel), made upright and composited
over white the way lookalike's cleaner does it, then summarised: its upright size, its mean colour and the
mean colour of each cell of a 4x4 grid (enough to catch a wrong matrix, range, bit depth, chroma position,
rotation or mirror, and small enough to keep in the repository).

Upright means the `irot`/`imir` boxes applied (Pillow hands them over as an EXIF orientation). The EXIF and
XMP orientations inside an AVIF are not applied: HEIF makes irot/imir the only ones that count, and so do
libavif and the browsers (Pillow's `ImageOps.exif_transpose` would also read the XMP tag, which is why it is
not used here). Sequences (`.avifs`) give their first frame.
"""

import argparse
import json
import pathlib
import re
import sys

import numpy as np
import PIL
from PIL import AvifImagePlugin, Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
GRID = 4

# EXIF orientation -> the transposition that makes the picture upright (as ImageOps.exif_transpose).
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def irot_imir_orientation(im: Image.Image) -> int:
    """The orientation Pillow's AVIF plugin derived from irot/imir: it writes it into info["exif"] whenever
    there is a transform or an EXIF block; without either there is nothing to undo."""
    raw = im.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    exif.load(raw)
    return int(exif.get(0x0112, 1))


def over_white(rgba: np.ndarray) -> np.ndarray:
    """Exactly the cleaner's compositing: round((c*a + 255*(255-a)) / 255)."""
    c = rgba[..., :3].astype(np.uint32)
    a = rgba[..., 3:4].astype(np.uint32)
    x = c * a + 255 * (255 - a) + 128
    return ((x + (x >> 8)) >> 8).astype(np.uint8)


def summarise(path: pathlib.Path) -> dict:
    with Image.open(path) as im:
        im.seek(0)
        orientation = irot_imir_orientation(im)
        im.load()
        mode = im.mode
        if orientation in TRANSPOSE:
            im = im.transpose(TRANSPOSE[orientation])
        pixels = np.asarray(im.convert("RGBA" if "A" in mode else "RGB"))
    rgb = over_white(pixels) if pixels.shape[2] == 4 else pixels
    h, w = rgb.shape[:2]
    f = rgb.astype(np.float64)
    grid = []
    for gy in range(GRID):
        for gx in range(GRID):
            cell = f[gy * h // GRID : (gy + 1) * h // GRID, gx * w // GRID : (gx + 1) * w // GRID]
            grid.append([round(float(v), 3) for v in cell.reshape(-1, 3).mean(axis=0)])
    return {
        "width": w,
        "height": h,
        "mode": mode,
        "orientation": orientation,
        "mean": [round(float(v), 3) for v in f.reshape(-1, 3).mean(axis=0)],
        "grid": grid,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=pathlib.Path, default=ROOT / ".lookalike/corpus")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "tests/fixtures/avif_reference.json")
    args = ap.parse_args()
    if PIL.__version__ != "13.0.0":
        sys.exit(f"avif_reference: Pillow {PIL.__version__}, want 13.0.0 (scripts/pyenv.sh)")
    files = sorted(p for p in (args.corpus / "good").iterdir() if p.suffix in (".avif", ".avifs"))
    if not files:
        sys.exit(f"avif_reference: no AVIF files in {args.corpus}/good: run scripts/fetch-corpus.sh")
    fixtures = sorted((ROOT / "tests/fixtures/avif").glob("*.avif"))
    out = {
        "made_by": "scripts/avif_reference.py",
        "pillow": PIL.__version__,
        "dav1d": AvifImagePlugin.get_codec_version("dav1d"),
        "grid": GRID,
        "corpus": {p.name: summarise(p) for p in files},
        "fixtures": {p.name: summarise(p) for p in fixtures},
    }
    # One line per list of numbers: a diff of the file then shows which colour moved.
    text = json.dumps(out, indent=1)
    flat = lambda m: "[" + ", ".join(v.strip(",") for v in m.group(1).split()) + "]"  # noqa: E731
    text = re.sub(r"\[\s+([-0-9.,\s]+?)\s+\]", flat, text)
    args.out.write_text(text + "\n")
    print(f"avif_reference: {len(files)} + {len(fixtures)} files -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
