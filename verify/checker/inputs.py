"""The checker's own reader of a result's inputs: models and datasets, embedded in the result or
in content-addressed side files next to it, each with its sha256 recomputed.

Independent of ``constructions/model.py`` on purpose: the checker validates every field itself.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Optional

import numpy as np

from .numbers import Mat, Reject, fields, fmt, integer, matrix, rat

__all__ = ["CModel", "CLayer", "CLayerNorm", "CDataset", "canonical_sha256", "canonical_bytes", "load_input",
           "model_from_obj", "dataset_from_obj", "require_plain", "MODEL_FORMAT", "MODEL_FORMAT_2",
           "DATASET_FORMAT", "INV_SQRT_HEAD_SIZE", "ACTIVATIONS", "NORM_PLACEMENTS", "TARGET_SITES"]

MODEL_FORMAT = "ptverify-model/1"
MODEL_FORMAT_2 = "ptverify-model/2"
DATASET_FORMAT = "ptverify-dataset/1"
MAX_SIDE_FILE_BYTES = 1 << 32
#: bits of a model matrix's common denominator and of its numerators (binary64 needs < 2200)
MAX_WEIGHT_BITS = 1 << 13
#: the score scale meaning 1/sqrt(head size) (BERT, GPT-2)
INV_SQRT_HEAD_SIZE = "1/sqrt(head_size)"
ACTIVATIONS = ("relu", "gelu", "gelu_tanh")
NORM_PLACEMENTS = ("pre", "post")
TARGET_SITES = ("output", "attention")


def canonical_bytes(obj: Any) -> bytes:
    """The bytes an embedded input's sha256 is taken of: sorted keys, no spaces, ASCII, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def canonical_sha256(obj: Any) -> str:
    return hashlib.sha256(canonical_bytes(obj)).hexdigest()


@dataclass
class CLayerNorm:
    """``LN(u) = gamma * (u - mean u) / sqrt(var u + eps) + beta`` (biased variance over d entries)."""
    gamma: list               # d Fractions
    beta: list                # d Fractions
    eps: Fraction             # > 0


@dataclass
class CLayer:
    """A layer.  ``ptverify-model/1`` layers use the first six fields; the ``ptverify-model/2``
    fields default to "absent" (a head dict holds ``b_q``, ``b_k``, ``b_v``, each a list of s
    Fractions, only when the file gives them: read them with ``h.get("b_q")``)."""
    kind: str                 # "softmax" or "hardmax"
    heads: list               # [{"W_q": Mat, "W_k": Mat, "W_v": Mat, "W_o": Mat[, "b_q", "b_k", "b_v"]}]
    W_1: Mat
    b_1: list
    W_2: Mat
    b_2: list
    b_o: Optional[list] = None            # d Fractions
    scale: Any = Fraction(1)              # a Fraction > 0, or INV_SQRT_HEAD_SIZE
    activation: str = "relu"              # one of ACTIVATIONS
    norm: Optional[str] = None            # None, "pre" or "post"
    ln1: Optional[CLayerNorm] = None
    ln2: Optional[CLayerNorm] = None

    @property
    def is_plain(self) -> bool:
        """A ``ptverify-model/1`` layer: no biases in attention, scale 1, ReLU, no LayerNorm."""
        return (self.b_o is None and self.scale == Fraction(1) and self.activation == "relu" and self.norm is None
                and all(h.get(b) is None for h in self.heads for b in ("b_q", "b_k", "b_v")))


@dataclass
class CModel:
    d: int
    causal: bool
    layers: list

    @property
    def is_plain(self) -> bool:
        return all(layer.is_plain for layer in self.layers)


@dataclass
class CDataset:
    inputs: list              # per example: list of token vectors (Fractions)
    outputs: list             # per example: list of (vector | None)
    at: str = "output"        # where the targets are taken: "output" or "attention"


def require_plain(model: CModel, dataset: Optional[CDataset] = None, kind: str = "this certificate kind") -> None:
    """Refuse a model with a ``ptverify-model/2`` layer, or a dataset whose targets are not the
    layer outputs: the certificate kinds written for the textbook layer say nothing about them."""
    if model is not None:
        for li, layer in enumerate(model.layers):
            if not layer.is_plain:
                raise Reject(f"model.layers[{li}]: {kind} is for plain (ptverify-model/1) layers; this layer has "
                             f"{_real_features(layer)}, which its certificate does not cover")
    if dataset is not None and dataset.at != "output":
        raise Reject(f"dataset.at: {kind} is for targets at the layer output; found {dataset.at!r}")


def _real_features(layer: CLayer) -> str:
    feats = []
    if any(h.get(b) is not None for h in layer.heads for b in ("b_q", "b_k", "b_v")):
        feats.append("query/key/value biases")
    if layer.b_o is not None:
        feats.append("an attention output bias")
    if layer.scale != Fraction(1):
        feats.append(f"score scale {layer.scale if isinstance(layer.scale, str) else fmt(layer.scale)}")
    if layer.activation != "relu":
        feats.append(f"activation {layer.activation}")
    if layer.norm is not None:
        feats.append(f"{layer.norm}-LayerNorm")
    return ", ".join(feats)


# --------------------------------------------------------------------------- models

def _check_shape(M: Mat, rows: int, cols: int, where: str) -> Mat:
    if M.shape != (rows, cols):
        raise Reject(f"{where}: expected shape ({rows}, {cols}), found {M.shape}")
    return M


def _layer(get, li: int, kind: Any, nheads: int, d: int, has=None, extra: Optional[dict] = None) -> CLayer:
    """One layer from ``get((part, index, name), where)`` (a Mat; part "attention", "mlp" or
    "norm").  ``has(key)`` says whether an optional /2 array is present (None: a /1 layer) and
    ``extra`` holds the /2 scalars and strings: scale, activation, norm {placement, ln1.eps, ln2.eps}."""
    where = f"layers[{li}]"
    if kind not in ("softmax", "hardmax"):
        raise Reject(f"{where}.attention.kind: expected \"softmax\" or \"hardmax\", found {kind!r}")
    if nheads < 1:
        raise Reject(f"{where}.attention.heads: expected at least one head")
    v2 = has is not None

    def vec(key, n, w):
        return _check_shape(get(key, w), 1, n, w).rows()[0]

    heads = []
    for j in range(nheads):
        hw = f"{where}.attention.heads[{j}]"
        Wq = get(("attention", j, "W_q"), f"{hw}.W_q")
        s = Wq.shape[0]
        if s < 1:
            raise Reject(f"{hw}.W_q: expected at least one row")
        h = {"W_q": _check_shape(Wq, s, d, f"{hw}.W_q"),
             "W_k": _check_shape(get(("attention", j, "W_k"), f"{hw}.W_k"), s, d, f"{hw}.W_k"),
             "W_v": _check_shape(get(("attention", j, "W_v"), f"{hw}.W_v"), s, d, f"{hw}.W_v"),
             "W_o": _check_shape(get(("attention", j, "W_o"), f"{hw}.W_o"), d, s, f"{hw}.W_o")}
        for b in ("b_q", "b_k", "b_v"):       # a key only when given (plain heads keep their four)
            if v2 and has(("attention", j, b)):
                h[b] = vec(("attention", j, b), s, f"{hw}.{b}")
        heads.append(h)
    W1 = get(("mlp", None, "W_1"), f"{where}.mlp.W_1")
    r = W1.shape[0]
    if r < 1:
        raise Reject(f"{where}.mlp.W_1: expected at least one row")
    _check_shape(W1, r, d, f"{where}.mlp.W_1")
    W2 = _check_shape(get(("mlp", None, "W_2"), f"{where}.mlp.W_2"), d, r, f"{where}.mlp.W_2")
    b1 = get(("mlp", None, "b_1"), f"{where}.mlp.b_1")
    b2 = get(("mlp", None, "b_2"), f"{where}.mlp.b_2")
    _check_shape(b1, 1, r, f"{where}.mlp.b_1")
    _check_shape(b2, 1, d, f"{where}.mlp.b_2")
    layer = CLayer(kind, heads, W1, b1.rows()[0], W2, b2.rows()[0])
    if v2:
        _real_fields(layer, vec, has, extra or {}, where, d)
    return layer


def _real_fields(layer: CLayer, vec, has, extra: dict, where: str, d: int) -> None:
    """Set the ``ptverify-model/2`` fields of ``layer`` (``vec(key, n, where)`` reads a vector)."""
    if has(("attention", None, "b_o")):
        layer.b_o = vec(("attention", None, "b_o"), d, f"{where}.attention.b_o")
    if "scale" in extra:
        sc = extra["scale"]
        if sc != INV_SQRT_HEAD_SIZE:
            sc = rat(sc, f"model.{where}.attention.scale")
            if sc <= 0:
                raise Reject(f"model.{where}.attention.scale: expected a number > 0 or {INV_SQRT_HEAD_SIZE!r}, "
                             f"found {fmt(sc)[:40]}")
        layer.scale = sc
    if "activation" in extra:
        if extra["activation"] not in ACTIVATIONS:
            raise Reject(f"model.{where}.mlp.activation: expected one of {list(ACTIVATIONS)}, "
                         f"found {extra['activation']!r}"[:200])
        layer.activation = extra["activation"]
    if "placement" in extra:
        if extra["placement"] not in NORM_PLACEMENTS:
            raise Reject(f"model.{where}.norm.placement: expected \"pre\" or \"post\", found {extra['placement']!r}"[:200])
        layer.norm = extra["placement"]
        for ln in ("ln1", "ln2"):
            eps = rat(extra[f"{ln}.eps"], f"model.{where}.norm.{ln}.eps")
            if eps <= 0:
                raise Reject(f"model.{where}.norm.{ln}.eps: expected a number > 0, found {fmt(eps)[:40]}")
            setattr(layer, ln, CLayerNorm(vec(("norm", ln, "gamma"), d, f"{where}.norm.{ln}.gamma"),
                                          vec(("norm", ln, "beta"), d, f"{where}.norm.{ln}.beta"), eps))
    elif any(has(("norm", ln, n)) for ln in ("ln1", "ln2") for n in ("gamma", "beta")):
        raise Reject(f"model.{where}.norm: LayerNorm arrays without a placement")


def model_from_obj(obj: Any) -> CModel:
    """A model from a parsed ``ptverify-model/1`` or ``ptverify-model/2`` JSON object."""
    fields(obj, "model", {"format", "d", "layers"}, {"causal", "meta"})
    if obj["format"] not in (MODEL_FORMAT, MODEL_FORMAT_2):
        raise Reject(f"model.format: expected {MODEL_FORMAT!r} or {MODEL_FORMAT_2!r}, found {obj['format']!r}"[:200])
    v2 = obj["format"] == MODEL_FORMAT_2
    d = integer(obj["d"], "model.d", 1, 1 << 20)
    causal = obj.get("causal", False)
    if not isinstance(causal, bool):
        raise Reject(f"model.causal: expected true or false, found {causal!r}"[:200])
    if not isinstance(obj["layers"], list) or not obj["layers"]:
        raise Reject("model.layers: expected a non-empty list")
    layers = []
    for li, lo in enumerate(obj["layers"]):
        w = f"model.layers[{li}]"
        fields(lo, w, {"attention", "mlp"}, {"norm"} if v2 else set())
        att = fields(lo["attention"], f"{w}.attention", {"heads"}, {"kind", "b_o", "scale"} if v2 else {"kind"})
        mlp = fields(lo["mlp"], f"{w}.mlp", {"W_1", "b_1", "W_2", "b_2"}, {"activation"} if v2 else set())
        if not isinstance(att["heads"], list):
            raise Reject(f"{w}.attention.heads: expected a list")
        heads = [fields(h, f"{w}.attention.heads[{j}]", {"W_q", "W_k", "W_v", "W_o"},
                        {"b_q", "b_k", "b_v"} if v2 else set()) for j, h in enumerate(att["heads"])]
        extra: dict = {}
        norm = None
        if v2:
            if "scale" in att:
                extra["scale"] = att["scale"]
            if "activation" in mlp:
                extra["activation"] = mlp["activation"]
            if lo.get("norm") is not None:
                norm = fields(lo["norm"], f"{w}.norm", {"placement", "ln1", "ln2"})
                for ln in ("ln1", "ln2"):
                    fields(norm[ln], f"{w}.norm.{ln}", {"gamma", "beta", "eps"})
                extra.update({"placement": norm["placement"], "ln1.eps": norm["ln1"]["eps"],
                              "ln2.eps": norm["ln2"]["eps"]})

        def lookup(key, _att=att, _mlp=mlp, _heads=heads, _norm=norm):
            part, j, name = key
            if part == "attention":
                return _att.get(name) if j is None else _heads[j].get(name)
            if part == "norm":
                return None if _norm is None else _norm[j].get(name)
            return _mlp[name]

        def get(key, where, _lookup=lookup):
            val = _lookup(key)
            if key[2].startswith("b_") or key[0] == "norm":
                return _weights([[rat(v, f"model.{where}[{i}]") for i, v in enumerate(_list(val, where))]], where)
            return _weights(matrix(val, f"model.{where}"), where)

        has = (lambda key, _lookup=lookup: _lookup(key) is not None) if v2 else None
        layers.append(_layer(get, li, att.get("kind", "softmax"), len(heads), d, has, extra))
    return CModel(d, causal, layers)


def _weights(rows: list, where: str) -> Mat:
    """An exact weight matrix over one common denominator, refused when that denominator or an
    entry needs more than MAX_WEIGHT_BITS bits (a few thousand long coprime denominators would
    otherwise make a common denominator of millions of digits: a small file that never loads)."""
    D = 1
    for row in rows:
        for v in row:
            D = D * v.denominator // math.gcd(D, v.denominator)
            if D.bit_length() > MAX_WEIGHT_BITS or abs(v.numerator).bit_length() > MAX_WEIGHT_BITS:
                raise Reject(f"model.{where}: weights need more than {MAX_WEIGHT_BITS} bits over a common "
                             "denominator (beyond the checker's limit)")
    return Mat.from_fractions(rows, ncols=0)


def _list(v, where):
    if not isinstance(v, list):
        raise Reject(f"model.{where}: expected a list, found {type(v).__name__}")
    return v


#: an archive's members may expand to at most this many times its size, plus this many bytes
NPZ_EXPANSION, NPZ_SLACK = 16, 1 << 20
NPZ_ERRORS = (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError)


def _open_npz(path: str, where: str):
    """np.load of a ``.npz`` side file, refused when its members would expand far beyond the
    file's size (a compressed archive of zeros is a small file that fills the memory)."""
    try:
        with zipfile.ZipFile(path) as zf:
            expanded = sum(info.file_size for info in zf.infolist())
        if expanded > NPZ_EXPANSION * os.path.getsize(path) + NPZ_SLACK:
            raise Reject(f"{where}: the .npz members expand to {expanded} bytes, beyond the checker's limit "
                         f"for a file of {os.path.getsize(path)} bytes")
        return np.load(path, allow_pickle=False)
    except NPZ_ERRORS as exc:
        raise Reject(f"{where}: not a readable .npz archive ({exc})"[:300]) from None


def _npz_array(z, k: str) -> np.ndarray:
    """One member, read without pickles and converted to binary64 only where that is exact."""
    try:
        a = z[k]
    except NPZ_ERRORS as exc:
        raise Reject(f"model file: array {k!r} is not a readable plain numeric array ({exc})"[:300]) from None
    if a.dtype.kind == "f" and a.dtype.itemsize <= 8:
        return np.asarray(a, dtype=np.float64)           # float16/32/64: exact
    if a.dtype.kind in "iu" and a.dtype.itemsize <= 8:
        if a.size and max(abs(int(a.min())), abs(int(a.max()))) > 1 << 53:
            raise Reject(f"model file: array {k!r} holds integers beyond 2^53 (not exact in binary64)")
        return np.asarray(a, dtype=np.float64)
    raise Reject(f"model file: array {k!r} has dtype {a.dtype}, expected float64 (or a type that converts exactly)")


def model_from_npz(path: str) -> CModel:
    """A model from a ``.npz`` side file (binary64 arrays, a JSON header; never pickles)."""
    z = _open_npz(path, f"model file {os.path.basename(path)}")
    try:
        files = set(z.files)
    except NPZ_ERRORS as exc:
        raise Reject(f"model file: not a readable .npz archive ({exc})"[:300]) from None
    if "__header__" not in files:
        raise Reject("model file: no __header__ entry")
    try:
        hdr = json.loads(bytes(np.asarray(z["__header__"], dtype=np.uint8)).decode(), parse_constant=_no_constant)
    except (UnicodeDecodeError, TypeError, RecursionError) + NPZ_ERRORS:
        raise Reject("model file: unreadable __header__") from None
    if not isinstance(hdr, dict) or hdr.get("format") not in (MODEL_FORMAT, MODEL_FORMAT_2):
        raise Reject(f"model file __header__.format: expected {MODEL_FORMAT!r} or {MODEL_FORMAT_2!r}")
    v2 = hdr["format"] == MODEL_FORMAT_2
    fields(hdr, "model file __header__", {"format", "d", "kinds", "heads"}, {"causal", "layers"} if v2 else {"causal"})
    d = integer(hdr["d"], "model file __header__.d", 1, 1 << 20)
    kinds, nh = hdr["kinds"], hdr["heads"]
    if not isinstance(kinds, list) or not isinstance(nh, list) or len(kinds) != len(nh) or not kinds:
        raise Reject("model file __header__: kinds and heads must be equal-length non-empty lists")
    causal = hdr.get("causal", False)
    if not isinstance(causal, bool):
        raise Reject("model file __header__.causal: expected true or false")
    per_layer = hdr.get("layers", [{}] * len(kinds))
    if not isinstance(per_layer, list) or len(per_layer) != len(kinds):
        raise Reject("model file __header__.layers: expected one object per layer")
    layers, used = [], set()
    for li, (kind, n) in enumerate(zip(kinds, nh)):
        integer(n, f"model file __header__.heads[{li}]", 1, 1 << 16)
        hw = f"model file __header__.layers[{li}]"
        lo = fields(per_layer[li], hw, set(), {"scale", "activation", "norm"})
        extra = {k: lo[k] for k in ("scale", "activation") if k in lo}
        if "norm" in lo:
            norm = fields(lo["norm"], f"{hw}.norm", {"placement", "ln1", "ln2"})
            extra["placement"] = norm["placement"]
            for ln in ("ln1", "ln2"):
                extra[f"{ln}.eps"] = fields(norm[ln], f"{hw}.norm.{ln}", {"eps"})["eps"]

        def name_of(key, _li=li):
            part, j, name = key
            if part == "attention":
                return f"layers.{_li}.attention.b_o" if j is None else f"layers.{_li}.attention.heads.{j}.{name}"
            return f"layers.{_li}.norm.{j}.{name}" if part == "norm" else f"layers.{_li}.mlp.{name}"

        def get(key, where, _name_of=name_of):
            k = _name_of(key)
            if k not in files:
                raise Reject(f"model file: missing array {k!r}")
            used.add(k)
            a = _npz_array(z, k)
            if a.ndim != (1 if key[2].startswith("b_") or key[0] == "norm" else 2):
                raise Reject(f"model file: array {k!r} has {a.ndim} dimensions")
            return Mat.from_float(a)

        has = (lambda key, _name_of=name_of: _name_of(key) in files) if v2 else None
        layers.append(_layer(get, li, kind, n, d, has, extra))
    extra_files = files - used - {"__header__"}
    if extra_files:
        raise Reject(f"model file: array(s) {sorted(extra_files)[:3]} are not part of the model its header describes")
    return CModel(d, causal, layers)


# --------------------------------------------------------------------------- datasets

def dataset_from_obj(obj: Any, d: Optional[int] = None) -> CDataset:
    fields(obj, "dataset", {"format", "examples"}, {"meta", "at"})
    if obj["format"] != DATASET_FORMAT:
        raise Reject(f"dataset.format: expected {DATASET_FORMAT!r}, found {obj['format']!r}"[:200])
    at = obj.get("at", "output")
    if not isinstance(at, str) or at not in TARGET_SITES:
        raise Reject(f"dataset.at: expected \"output\" or \"attention\", found {at!r}"[:200])
    exs = obj["examples"]
    if not isinstance(exs, list) or not exs:
        raise Reject("dataset.examples: expected a non-empty list")
    ins, outs = [], []
    for i, ex in enumerate(exs):
        w = f"dataset.examples[{i}]"
        fields(ex, w, {"input", "output"})
        X = matrix(ex["input"], f"{w}.input", cols=d)
        if not X:
            raise Reject(f"{w}.input: expected at least one token")
        if d is not None and any(len(t) != d for t in X):
            raise Reject(f"{w}.input: tokens must have {d} entries")
        Y = ex["output"]
        if not isinstance(Y, list) or len(Y) != len(X):
            raise Reject(f"{w}.output: expected {len(X)} entries (one per input token, null allowed)")
        ys = [None if y is None else _vec(y, f"{w}.output[{t}]", len(X[0])) for t, y in enumerate(Y)]
        ins.append(X)
        outs.append(ys)
    return CDataset(ins, outs, at)


def _vec(v, where, n):
    from .numbers import vector
    return vector(v, where, n)


# --------------------------------------------------------------------------- the inputs block

def _sha_field(ref: dict, where: str) -> str:
    h = ref.get("sha256")
    if not isinstance(h, str) or len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise Reject(f"{where}.sha256: expected 64 lowercase hex digits")
    return h


def _side_path(name: Any, base_dir: str, where: str) -> str:
    if (not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", "..")
            or name.startswith(".") or "\x00" in name):
        raise Reject(f"{where}.file: expected a plain file name next to the result, found {name!r}"[:200])
    path = os.path.join(base_dir, name)
    if os.path.islink(path):
        raise Reject(f"{where}.file: side file {name!r} is a symbolic link (a side file sits next to the result)")
    if not os.path.isfile(path):
        raise Reject(f"{where}.file: side file {name!r} not found next to the result (move the side files "
                     "along with the result, or write it with --self-contained)")
    if os.path.getsize(path) > MAX_SIDE_FILE_BYTES:
        raise Reject(f"{where}.file: side file {name!r} is too large")
    return path


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_input(name: str, ref: Any, base_dir: str, d: Optional[int] = None):
    """Load one input by its reference ``{"sha256": ..., "embedded": obj}`` or
    ``{"sha256": ..., "file": NAME}``; the hash is recomputed.  ``model`` and ``dataset`` are
    parsed into :class:`CModel` / :class:`CDataset`; any other input is returned as parsed JSON
    (embedded) or as a dict of numpy arrays (``.npz`` side file)."""
    where = f"inputs.{name}"
    fields(ref, where, {"sha256"}, {"embedded", "file"})
    if ("embedded" in ref) == ("file" in ref):
        raise Reject(f"{where}: expected exactly one of 'embedded' and 'file'")
    sha = _sha_field(ref, where)
    if "embedded" in ref:
        obj = ref["embedded"]
        if canonical_sha256(obj) != sha:
            raise Reject(f"{where}: embedded content does not match its sha256")
        if name == "model":
            return model_from_obj(obj)
        if name == "dataset":
            return dataset_from_obj(obj, d)
        return obj
    path = _side_path(ref["file"], base_dir, where)
    if _file_sha256(path) != sha:
        raise Reject(f"{where}: side file {ref['file']!r} does not match its sha256")
    if path.endswith(".npz"):
        if name == "model":
            return model_from_npz(path)
        z = _open_npz(path, where)
        try:
            return {k: z[k] for k in z.files}
        except NPZ_ERRORS:
            raise Reject(f"{where}: side file is not a readable .npz archive") from None
    try:
        with open(path, encoding="utf-8") as fh:
            obj = load_json_strict(fh)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Reject(f"{where}: side file is not UTF-8 JSON") from None
    if name == "model":
        return model_from_obj(obj)
    if name == "dataset":
        return dataset_from_obj(obj, d)
    return obj


def _no_constant(c):
    raise ValueError(f"{c} is not a number JSON allows")


def _no_duplicates(pairs):
    """An object whose keys are all distinct (a repeated key would let the file show one value
    and the checker read another)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = [k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i])]
        raise ValueError(f"repeated key {str(seen[0])[:40]!r} in an object")
    return obj


def _binary64(text: str) -> float:
    """A JSON number with a fraction or exponent is its binary64 value, but never one that
    overflows, or one that underflows to zero from a nonzero literal (1e-400 would read as 0)."""
    v = float(text)
    if not math.isfinite(v) or (v == 0 and any(c in "123456789" for c in text.lower().partition("e")[0])):
        raise ValueError(f"the number {text[:40]} has no binary64 value (it overflows or underflows to 0)")
    return v


def load_json_strict(fh):
    """json.load rejecting NaN/Infinity, numbers that overflow or underflow binary64, and repeated keys."""
    return json.load(fh, parse_constant=_no_constant, object_pairs_hook=_no_duplicates, parse_float=_binary64)


def exact_mlp(layer: CLayer, z: list) -> list:
    """MLP(z) = z + W_2 ReLU(W_1 z + b_1) + b_2, exactly."""
    pre = layer.W_1.mv(z)
    hid = [max(p + b, Fraction(0)) for p, b in zip(pre, layer.b_1)]
    post = layer.W_2.mv(hid)
    return [a + b + c for a, b, c in zip(z, post, layer.b_2)]
