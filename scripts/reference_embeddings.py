"""Reference embeddings for tests/fixtures/reference, made the way the prototype's Python stack
would make them, for the parity tests of crates/vision (tests/parity.rs).

    PY=$(scripts/pyenv.sh)
    "$PY" scripts/reference_embeddings.py --draft --features --models .lookalike/models \
        --out tests/fixtures/reference/expected_draft.json

With --draft, JPEGs are decoded with Pillow's Image.draft("RGB", (S, S)), S = the model's resize
size (224 for CLIP, 256 for Lite0): libjpeg's DCT scaling to 1/2, 1/4 or 1/8, what lookalike does with
model.reduced_decode on. Everything else is the recipe of expected.json (MODELS.md): first frame, EXIF
orientation, alpha over white, shorter side resized (bicubic, long side rounded to nearest), centre crop
224, normalised, L2-normalised embedding; Lite0's top-5 classes too.
"""

import argparse
import hashlib
import json
import pathlib

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

MODELS = {
    "clip_vitb16_visual_int8": {
        "file": "clip_vitb16_visual_int8.onnx",
        "input": "pixel_values",
        "output": "image_embeds",
        "shorter": 224,
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "logits": None,
        # The last hidden state [N, 197, 768]: with --features, its patch tokens averaged and
        # layer-normalised (lookalike's model.features_output, what the classifier head reads).
        "tokens": "onnx::Gather_1524",
    },
    "efficientnet_lite0_imagenet": {
        "file": "efficientnet_lite0_imagenet.onnx",
        "input": "input",
        "output": "embedding",
        "shorter": 256,
        "mean": [127.0 / 255.0] * 3,
        "std": [128.0 / 255.0] * 3,
        "logits": "logits",
        "tokens": None,
    },
}


def load(path, draft_size):
    im = Image.open(path)
    if draft_size and im.format == "JPEG":
        im.draft("RGB", (draft_size, draft_size))
    im.seek(0)
    im = ImageOps.exif_transpose(im)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    return im.convert("RGB")


def tensor(im, spec):
    w, h = im.size
    s = spec["shorter"]
    if w <= h:
        nw, nh = s, (s * h + w // 2) // w
    else:
        nw, nh = (s * w + h // 2) // h, s
    im = im.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - 224) // 2, (nh - 224) // 2
    im = im.crop((left, top, left + 224, top + 224))
    a = np.asarray(im, np.float32) / 255.0
    a = (a - np.array(spec["mean"], np.float32)) / np.array(spec["std"], np.float32)
    return a.transpose(2, 0, 1)[None]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default="tests/fixtures/reference")
    ap.add_argument("--models", default=".lookalike/models")
    ap.add_argument("--out", required=True)
    ap.add_argument("--draft", action="store_true")
    ap.add_argument("--features", action="store_true", help="also the pooled tokens (CLIP)")
    args = ap.parse_args()
    sessions = {}
    for key, spec in MODELS.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        sessions[key] = ort.InferenceSession(
            str(pathlib.Path(args.models) / spec["file"]), opts, providers=["CPUExecutionProvider"]
        )
    images = {}
    for path in sorted(pathlib.Path(args.images).iterdir()):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        full = Image.open(path)
        entry = {
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "size": list(ImageOps.exif_transpose(full).size),
        }
        for key, spec in MODELS.items():
            im = load(path, spec["shorter"] if args.draft else None)
            tokens = spec["tokens"] if args.features else None
            outputs = [spec["output"]] + [o for o in (spec["logits"], tokens) if o]
            result = dict(zip(outputs, sessions[key].run(outputs, {spec["input"]: tensor(im, spec)})))
            v = result[spec["output"]][0].astype(np.float64)
            out = {"decoded_size": list(im.size), "embedding_l2": (v / np.linalg.norm(v)).tolist()}
            if spec["logits"]:
                logits = result[spec["logits"]][0]
                top = np.argsort(-logits)[:5]
                out["top5"] = [[int(i), float(logits[i])] for i in top]
            if tokens:
                pooled = result[tokens][0, 1:].astype(np.float64).mean(0)
                out["features"] = ((pooled - pooled.mean()) / pooled.std()).tolist()
            entry[key] = out
        images[path.name] = entry
    note = (
        "Reference outputs computed with Python onnxruntime %s + Pillow %s bicubic resize; alpha "
        "composited over white; first frame only; %s. Made by scripts/reference_embeddings.py."
        % (
            ort.__version__,
            Image.__version__,
            "JPEGs decoded with Image.draft('RGB', (S, S)), S = the model's resize size"
            if args.draft
            else "full decode",
        )
    )
    pathlib.Path(args.out).write_text(json.dumps({"note": note, "images": images}, indent=1) + "\n")


if __name__ == "__main__":
    main()
