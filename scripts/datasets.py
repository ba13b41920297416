#!/usr/bin/env python3
"""Builds the labelled image folders for scripts/fetch-datasets.sh (python3 standard library only).

The shell script downloads the packages; this helper turns them into DIR/<set>/<category>/<file>:

  datasets.py fashion-mnist --src /usr/share/datasets/fashion-mnist --split t10k --per-class 300 --out DIR/fashion-mnist
  datasets.py vendure --tgz vendure-create-3.7.3.tgz --out DIR/vendure
  datasets.py saleor  --wheel saleor-2.10.1-py3-none-any.whl --out DIR/saleor
  datasets.py verify  SET DIR/<set> [--per-class N]    # exit 1 when the counts are not the expected ones
  datasets.py summary DIR SET...                       # prints the set / category / count table

Each builder writes into the folder it is given and then checks the counts; the shell script builds into a
temporary folder and renames it into place, so a half-built set never looks complete.
"""
import argparse
import collections
import csv
import gzip
import io
import json
import os
import re
import struct
import sys
import tarfile
import zipfile
import zlib

FASHION_CLASSES = ["tshirt_top", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt", "sneaker", "bag", "ankle_boot"]

EXPECTED = {
    "vendure": {"computers": 11, "furniture": 11, "photo": 9, "plants": 9, "equipment": 8, "footwear": 6},
    "saleor": {"t_shirts": 9, "footwear": 8, "alcohol": 6, "juices": 6, "hoodies": 5, "paints": 5,
               "polo_shirts": 4, "homewares": 2},
}

IMAGE_EXT = (".png", ".jpg", ".jpeg")


class DataError(Exception):
    pass


def snake(name):
    """'Sports & Outdoor' -> 'sports_outdoor', 'T-shirts' -> 't_shirts'."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


# ---------------------------------------------------------------- PNG writer

def png_grey(width, height, pixels):
    """8-bit greyscale PNG from row-major bytes."""
    if len(pixels) != width * height:
        raise ValueError("pixel count does not match the size")
    raw = b"".join(b"\x00" + pixels[y * width:(y + 1) * width] for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def write_file(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- Fashion-MNIST

def read_idx(path, magic):
    with gzip.open(path, "rb") as f:
        data = f.read()
    got, = struct.unpack(">I", data[:4])
    if got != magic:
        raise DataError(f"{path}: IDX magic {got:#010x}, expected {magic:#010x}")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    body = data[4 + 4 * ndim:]
    size = 1
    for d in dims:
        size *= d
    if len(body) != size:
        raise DataError(f"{path}: {len(body)} data bytes, header says {size}")
    return dims, body


def build_fashion(args):
    images = os.path.join(args.src, f"{args.split}-images-idx3-ubyte.gz")
    labels = os.path.join(args.src, f"{args.split}-labels-idx1-ubyte.gz")
    (n_img, rows, cols), pix = read_idx(images, 0x00000803)
    (n_lab,), lab = read_idx(labels, 0x00000801)
    if n_img != n_lab:
        raise DataError(f"{n_img} images but {n_lab} labels")
    per_class = collections.Counter()
    size = rows * cols
    for i in range(n_img):
        c = lab[i]
        if c >= len(FASHION_CLASSES):
            raise DataError(f"label {c} out of range at index {i}")
        if per_class[c] >= args.per_class:
            continue
        per_class[c] += 1
        name = f"{args.split}-{i:06d}.png"
        write_file(os.path.join(args.out, FASHION_CLASSES[c], name), png_grey(cols, rows, pix[i * size:(i + 1) * size]))
        if len(per_class) == len(FASHION_CLASSES) and all(v >= args.per_class for v in per_class.values()):
            break
    short = {FASHION_CLASSES[c]: per_class[c] for c in range(len(FASHION_CLASSES)) if per_class[c] < args.per_class}
    if short:
        raise DataError(f"the {args.split} split has fewer than {args.per_class} images for {short}")


# ---------------------------------------------------------------- Vendure

def build_vendure(args):
    with tarfile.open(args.tgz, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        csv_member = members.get("package/assets/products.csv")
        if csv_member is None:
            raise DataError("package/assets/products.csv is not in the npm package")
        text = tar.extractfile(csv_member).read().decode("utf-8")
        # The CSV pads its header and cells with spaces for alignment: strip them.
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()}
                for row in csv.DictReader(io.StringIO(text))]
        images = {os.path.basename(n): m for n, m in members.items()
                  if n.startswith("package/assets/images/") and n.lower().endswith(IMAGE_EXT)}
        label = {}
        for row in rows:
            if not row.get("name"):
                continue  # continuation rows of a product carry only variant data
            # facets look like "category:Electronics|category:Computers|brand:Apple": the category facets go
            # from the top level down, so the last one is the product's own (most specific) category.
            cats = [f.split(":", 1)[1] for f in row.get("facets", "").split("|") if f.startswith("category:")]
            if not cats:
                raise DataError(f"product {row['name']!r} has no category facet")
            for asset in filter(None, row.get("assets", "").split("|") + row.get("variantAssets", "").split("|")):
                asset = asset.strip()
                cat = snake(cats[-1])
                if label.get(asset, cat) != cat:
                    raise DataError(f"{asset} is used by products of two categories ({label[asset]}, {cat})")
                label[asset] = cat
        unlabelled = sorted(set(images) - set(label))
        missing = sorted(set(label) - set(images))
        if unlabelled or missing:
            raise DataError(f"images without a product: {unlabelled}; products without an image file: {missing}")
        for name, member in sorted(images.items()):
            write_file(os.path.join(args.out, label[name], name), tar.extractfile(member).read())


# ---------------------------------------------------------------- Saleor

def build_saleor(args):
    with zipfile.ZipFile(args.wheel) as whl:
        prefix = "saleor/static/placeholders/"
        placeholders = {n[len(prefix):]: n for n in whl.namelist()
                        if n.startswith(prefix + "saleordemoproduct_") and n.endswith(".png")}
        fixture = json.loads(whl.read("saleor/static/populatedb_data.json"))
        by_model = collections.defaultdict(dict)
        for obj in fixture:
            by_model[obj["model"]][obj["pk"]] = obj["fields"]
        categories = by_model["product.category"]
        products = by_model["product.product"]
        images = collections.defaultdict(list)  # product pk -> [(sort_order, image pk, placeholder name)]
        for pk, img in by_model["product.productimage"].items():
            # "products/saleordemoproduct_paints_01_stdygda.png": Django added a 7-character suffix on upload.
            m = re.fullmatch(r"products/(saleordemoproduct_.+)_[A-Za-z0-9]{7}\.png", img["image"])
            if not m or m.group(1) + ".png" not in placeholders:
                raise DataError(f"product image {img['image']!r} has no placeholder file")
            images[img["product"]].append((img["sort_order"] or 0, pk, m.group(1) + ".png"))

        # Some products reuse another product's pictures (e.g. orange and apple juice share fd_juice_06,
        # t-shirt-3 and t-shirt-4 share cl_boot06_1/_2). Each file is written once, for the first product
        # (lowest pk) that uses it, so every file has exactly one product and one category.
        owner = {}
        for ppk in sorted(images):
            for _, _, name in sorted(images[ppk]):
                owner.setdefault(name, ppk)
        unused = sorted(set(placeholders) - set(owner))
        if unused:
            raise DataError(f"placeholders that no product uses: {unused}")

        mapping = {}
        for ppk in sorted(images):
            mine = [name for _, _, name in sorted(images[ppk]) if owner[name] == ppk]
            if not mine:
                continue
            product = products[ppk]
            category = snake(categories[product["category"]]["slug"])
            for view, name in enumerate(mine, 1):
                rel = f"{category}/{product['slug']}__{view}.png"
                write_file(os.path.join(args.out, rel), whl.read(placeholders[name]))
                mapping[rel] = product["slug"]
        with open(os.path.join(args.out, "products.json"), "w") as f:
            json.dump(mapping, f, indent=1, sort_keys=True)
            f.write("\n")


# ---------------------------------------------------------------- verify / summary

def count(set_dir):
    counts = collections.Counter()
    for entry in sorted(os.listdir(set_dir)):
        path = os.path.join(set_dir, entry)
        if os.path.isdir(path):
            counts[entry] = sum(1 for f in os.listdir(path) if f.lower().endswith(IMAGE_EXT))
    return counts


def expected(set_name, per_class):
    if set_name == "fashion-mnist":
        return {c: per_class for c in FASHION_CLASSES}
    return EXPECTED[set_name]


def verify(set_name, set_dir, per_class):
    got = dict(count(set_dir))
    want = expected(set_name, per_class)
    if got != want:
        diff = {k: (got.get(k, 0), want.get(k, 0)) for k in sorted(set(got) | set(want)) if got.get(k, 0) != want.get(k, 0)}
        raise DataError(f"{set_name}: unexpected counts (category: got, expected) {diff}")
    if set_name == "saleor":
        with open(os.path.join(set_dir, "products.json")) as f:
            mapping = json.load(f)
        files = {f"{c}/{n}" for c in got for n in os.listdir(os.path.join(set_dir, c))}
        if set(mapping) != files:
            raise DataError("saleor: products.json does not list exactly the image files")


def summary(root, sets):
    print(f"{'set':<14} {'category':<12} {'count':>6}")
    print(f"{'-' * 14} {'-' * 12} {'-' * 6}")
    for s in sets:
        d = os.path.join(root, s)
        counts = count(d) if os.path.isdir(d) else {}
        for cat, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"{s:<14} {cat:<12} {n:>6}")
        print(f"{s:<14} {'(total)':<12} {sum(counts.values()):>6}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fashion-mnist")
    f.add_argument("--src", required=True)
    f.add_argument("--split", choices=["t10k", "train"], default="t10k")
    f.add_argument("--per-class", type=int, default=300)
    f.add_argument("--out", required=True)
    v = sub.add_parser("vendure")
    v.add_argument("--tgz", required=True)
    v.add_argument("--out", required=True)
    s = sub.add_parser("saleor")
    s.add_argument("--wheel", required=True)
    s.add_argument("--out", required=True)
    c = sub.add_parser("verify")
    c.add_argument("set", choices=["fashion-mnist", "vendure", "saleor"])
    c.add_argument("dir")
    c.add_argument("--per-class", type=int, default=300)
    m = sub.add_parser("summary")
    m.add_argument("root")
    m.add_argument("sets", nargs="+")
    a = p.parse_args()
    try:
        if a.cmd == "fashion-mnist":
            build_fashion(a)
            verify("fashion-mnist", a.out, a.per_class)
        elif a.cmd == "vendure":
            build_vendure(a)
            verify("vendure", a.out, 0)
        elif a.cmd == "saleor":
            build_saleor(a)
            verify("saleor", a.out, 0)
        elif a.cmd == "verify":
            verify(a.set, a.dir, a.per_class)
        elif a.cmd == "summary":
            summary(a.root, a.sets)
    except (DataError, OSError, KeyError, ValueError, tarfile.TarError, zipfile.BadZipFile) as e:
        print(f"datasets.py: {a.cmd}: {type(e).__name__ + ': ' if not isinstance(e, DataError) else ''}{e}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
