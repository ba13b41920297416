"""The prototype's ingest stack, timed on the URLs the Rust ingest benchmark serves (benches/ingest.rs runs
this with the pinned environment of scripts/pyenv.sh; it can also be run by hand):

    PY=$(scripts/pyenv.sh)
    "$PY" benches/python/ingest.py --urls URLS.txt --model .lookalike/models/clip_vitb16_visual_int8.onnx \
        --threads 4 [--draft] [--threads 2,4,8]

requests downloads each URL, Pillow decodes it, resizes the shorter side to 224 (bicubic) and crops the
centre 224x224, numpy applies CLIP's mean/std, and onnxruntime embeds batches of 16 (intra-op threads =
cores). A pool of --threads threads downloads and preprocesses while the main thread runs the model: the
prototype's shape. --draft adds Pillow's `Image.draft('RGB', (224, 224))` before resizing, so a JPEG is
decoded at 1/2, 1/4 or 1/8 scale in the DCT domain when that still leaves the shorter side >= 224.

The clock runs from the first download to the last embedding (the session is loaded and warmed up first,
as the Rust rows start the service first). With several --threads values, each is one full pass over the
URLs. Prints one JSON object: {"runs": [{"threads", "draft", "images", "seconds", "images_per_s"}, ...]}.
"""

import argparse
import io
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import requests
from PIL import Image

SIZE = 224
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def to_rgb(im):
    """First frame, alpha composited over white, 8-bit RGB (MODELS.md)."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


def preprocess(body, draft):
    im = Image.open(io.BytesIO(body))
    if draft:
        # JPEG only (other formats ignore it): the smallest DCT scale that keeps both sides >= 224.
        im.draft("RGB", (SIZE, SIZE))
    im = to_rgb(im)
    w, h = im.size
    if w <= h:
        nw, nh = SIZE, int(round(SIZE * h / w))
    else:
        nw, nh = int(round(SIZE * w / h)), SIZE
    im = im.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - SIZE) // 2, (nh - SIZE) // 2
    im = im.crop((left, top, left + SIZE, top + SIZE))
    a = (np.asarray(im, dtype=np.float32) / 255.0 - MEAN) / STD
    return a.transpose(2, 0, 1)


_local = threading.local()


def fetch(url):
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    r = session.get(url, timeout=60)
    r.raise_for_status()
    return r.content


def run(session, input_name, output_name, urls, threads, batch, draft):
    def load(url):
        return preprocess(fetch(url), draft)

    done = 0
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending = []
        for tensor in pool.map(load, urls):
            pending.append(tensor)
            if len(pending) == batch:
                session.run([output_name], {input_name: np.stack(pending)})
                done += len(pending)
                pending = []
        if pending:
            session.run([output_name], {input_name: np.stack(pending)})
            done += len(pending)
    seconds = time.perf_counter() - start
    return {
        "threads": threads,
        "draft": draft,
        "images": done,
        "seconds": round(seconds, 3),
        "images_per_s": done / seconds,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--urls", required=True, help="file with one image URL per line")
    p.add_argument("--model", required=True, help="the CLIP ONNX file")
    p.add_argument("--threads", default="4", help="download/decode threads; a comma list runs each")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--intra-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--draft", action="store_true", help="Image.draft('RGB', (224, 224)) before resizing")
    args = p.parse_args()

    with open(args.urls) as f:
        urls = [line.strip() for line in f if line.strip()]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.intra_threads
    session = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_name = "image_embeds"
    # Warm-up: the first runs of a fresh session are slow.
    warm = np.zeros((args.batch, 3, SIZE, SIZE), dtype=np.float32)
    for _ in range(2):
        session.run([output_name], {input_name: warm})

    runs = []
    for threads in [int(t) for t in args.threads.split(",")]:
        r = run(session, input_name, output_name, urls, threads, args.batch, args.draft)
        print(
            f"python: {r['images']} images in {r['seconds']:.2f}s, {threads} threads, "
            f"draft={'on' if args.draft else 'off'}: {r['images_per_s']:.1f} images/s",
            file=sys.stderr,
        )
        runs.append(r)
    print(json.dumps({"runs": runs, "batch": args.batch, "intra_threads": args.intra_threads,
                      "onnxruntime": ort.__version__, "pillow": Image.__version__}))


if __name__ == "__main__":
    main()
