"""Transformer models and datasets: their types, and the one reader and writer of their files.

A model is a stack of layers ``tau(X) = MLP(X + Att(X, X))`` (docs/theory.md, "Setting and notation").  Tokens are
stored as *rows* here: a sequence is an array of shape ``(m, d)``.  Numbers and arrays are those
of :mod:`constructions.arrays` (float64 arrays, or object arrays of exact Fractions).

Models and datasets are validated once, here: :func:`model_from_json` and
:func:`dataset_from_json` check a parsed object (a dict), and :func:`load_model` /
:func:`load_dataset` only read a file into such an object (a ``.npz`` model becomes a dict whose
arrays are ndarrays) and hand it to them.  Errors are :class:`InputError` and name the field, the
expected shape and what was found.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterable, Optional

import numpy as np

from .arrays import (InputError, IntMatrix, array_to_json, as_float, as_fraction, as_scaled_int, json_float,
                     is_float_array, number_to_json, parse_array, parse_number, shape_str)

__all__ = [
    "MODEL_FORMAT", "MODEL_FORMAT_2", "DATASET_FORMAT", "LayerNorm", "TARGET_SITES", "INV_SQRT_HEAD_SIZE", "ACTIVATIONS", "NORM_PLACEMENTS", "MAX_D", "MAX_FILE_BYTES", "HEAD_ARRAYS", "HEAD_BIASES", "MLP_ARRAYS", "Head", "Layer", "Model", "Example", "Dataset",
    "model_from_json", "model_to_json", "load_model", "save_model",
    "dataset_from_json", "dataset_to_json", "load_dataset", "save_dataset",
    "sha256_file", "sha256_json", "atomic_write", "atomic_write_text",
    # the numbers and arrays the types hold (defined in constructions.arrays)
    "InputError", "IntMatrix", "as_float", "as_fraction", "as_scaled_int", "is_float_array",
    "number_to_json",
]

MODEL_FORMAT = "ptverify-model/1"
MODEL_FORMAT_2 = "ptverify-model/2"
DATASET_FORMAT = "ptverify-dataset/1"
MAX_D = 1 << 20
HEAD_ARRAYS = ("W_q", "W_k", "W_v", "W_o")
MLP_ARRAYS = ("W_1", "b_1", "W_2", "b_2")
HEAD_BIASES = ("b_q", "b_k", "b_v")


# --------------------------------------------------------------------------- the types

@dataclass
class Head:
    W_q: np.ndarray  # (s, d)
    W_k: np.ndarray  # (s, d)
    W_v: np.ndarray  # (s, d)
    W_o: np.ndarray  # (d, s)
    # ptverify-model/2: optional biases of the query, key and value projections, each (s,)
    b_q: Optional[np.ndarray] = None
    b_k: Optional[np.ndarray] = None
    b_v: Optional[np.ndarray] = None

    @property
    def s(self) -> int:
        return self.W_q.shape[0]

    @property
    def has_bias(self) -> bool:
        return any(b is not None for b in (self.b_q, self.b_k, self.b_v))


#: ``Layer.scale`` value meaning 1 / sqrt(head size), as in BERT and GPT-2
INV_SQRT_HEAD_SIZE = "1/sqrt(head_size)"
ACTIVATIONS = ("relu", "gelu", "gelu_tanh")
NORM_PLACEMENTS = ("pre", "post")


@dataclass
class LayerNorm:
    """``LN(u) = gamma * (u - mean(u)) / sqrt(var(u) + eps) + beta`` (biased variance, over the
    d entries of one token)."""
    gamma: np.ndarray          # (d,)
    beta: np.ndarray           # (d,)
    eps: Any                   # a number > 0 (float or Fraction)


@dataclass
class Layer:
    """One layer.  ``ptverify-model/1`` layers use only the first six fields:
    ``z = x + Att(X)``, ``y = z + W_2 relu(W_1 z + b_1) + b_2``.  The ``ptverify-model/2`` fields
    (all optional, defaults meaning "absent") make real layers:

    * ``b_o`` (d,): the attention output bias, ``Att(X)_a = b_o + sum_j W_o^j sum_b w_ab^j
      (W_v^j s_b + b_v^j)``, scores ``scale * (W_q^j s_a + b_q^j) . (W_k^j s_b + b_k^j)``;
    * ``scale``: 1 (default), a positive number, or :data:`INV_SQRT_HEAD_SIZE`;
    * ``activation``: ``"relu"`` (default), ``"gelu"`` (erf form), ``"gelu_tanh"``;
    * ``norm``: None, ``"post"`` (BERT: ``h = LN1(x + Att(X))``, ``y = LN2(h + W_2 act(W_1 h +
      b_1) + b_2)``) or ``"pre"`` (GPT-2: ``z = x + Att(LN1(X))``, ``y = z + W_2 act(W_1 LN2(z) +
      b_1) + b_2``; the attention reads LN1 of every token, prompt tokens included), with
      ``ln1`` and ``ln2`` its two :class:`LayerNorm`.
    """
    kind: str                 # "softmax" | "hardmax"
    heads: list[Head]
    W_1: np.ndarray           # (r, d)
    b_1: np.ndarray           # (r,)
    W_2: np.ndarray           # (d, r)
    b_2: np.ndarray           # (d,)
    b_o: Optional[np.ndarray] = None
    scale: Any = 1
    activation: str = "relu"
    norm: Optional[str] = None
    ln1: Optional[LayerNorm] = None
    ln2: Optional[LayerNorm] = None

    @property
    def r(self) -> int:
        return self.W_1.shape[0]

    @property
    def is_plain(self) -> bool:
        """True for a ``ptverify-model/1`` layer: no attention biases, score scale 1, ReLU, no
        LayerNorm.  Provers and checker kinds written for the textbook layer refuse other layers."""
        return (self.b_o is None and not any(h.has_bias for h in self.heads) and self.activation == "relu"
                and self.norm is None and (not isinstance(self.scale, str) and self.scale == 1))


@dataclass
class Model:
    d: int
    layers: list[Layer]
    causal: bool = False
    meta: dict = field(default_factory=dict)

    @property
    def is_plain(self) -> bool:
        """True when every layer is a ``ptverify-model/1`` layer (:attr:`Layer.is_plain`)."""
        return all(layer.is_plain for layer in self.layers)

    @property
    def is_exact(self) -> bool:
        """True when no softmax exponential of a non-constant score can appear: every layer is
        hardmax.  (Zero-score softmax heads are handled per head by the encodings.)"""
        return all(layer.kind == "hardmax" for layer in self.layers)

    def arrays(self) -> Iterable[tuple[str, np.ndarray]]:
        """Every weight array with its ``.npz`` member name (the ``ptverify-model/2`` arrays only
        where present: biases, ``b_o``, the LayerNorms' gamma and beta)."""
        for li, layer in enumerate(self.layers):
            for hj, h in enumerate(layer.heads):
                for name in HEAD_ARRAYS + HEAD_BIASES:
                    if getattr(h, name) is not None:
                        yield f"layers.{li}.attention.heads.{hj}.{name}", getattr(h, name)
            if layer.b_o is not None:
                yield f"layers.{li}.attention.b_o", layer.b_o
            for name in MLP_ARRAYS:
                yield f"layers.{li}.mlp.{name}", getattr(layer, name)
            if layer.norm is not None:
                for ln_name in ("ln1", "ln2"):
                    ln = getattr(layer, ln_name)
                    if ln is not None:
                        yield f"layers.{li}.norm.{ln_name}.gamma", ln.gamma
                        yield f"layers.{li}.norm.{ln_name}.beta", ln.beta

    def n_parameters(self) -> int:
        return sum(a.size for _, a in self.arrays())


@dataclass
class Example:
    input: np.ndarray                      # (m, d)
    output: list                           # m entries: array (d,) or None


#: where a dataset's targets are taken: the layer's output (default), or the attention block's
#: output (post-LN: ``LN1(x + Att(X))``; pre-LN and no norm: the residual ``x + Att(...)``)
TARGET_SITES = ("output", "attention")


@dataclass
class Dataset:
    examples: list[Example]
    meta: dict = field(default_factory=dict)
    at: str = "output"        # one of TARGET_SITES (the dataset field "at"; "output" when absent)

    @property
    def d(self) -> int:
        return self.examples[0].input.shape[1]


# --------------------------------------------------------------------------- validation

def _matrix(parent: dict, name: str, fld: str, shape) -> np.ndarray:
    if name not in parent:
        raise InputError(fld, f"a matrix of shape {shape_str(shape)}", "nothing (missing)")
    return parse_array(parent[name], fld, shape)


def _known_fields(obj: dict, where: str, allowed, v2_only=()) -> None:
    """Refuse a field the format does not define (the trusted checker's reader refuses it too),
    so that a misspelt field is not silently ignored.  ``v2_only``: fields that a
    ``ptverify-model/1`` object may not hold but a ``/2`` one may (the message says so)."""
    for k in obj:
        if k in v2_only:
            raise InputError(f"{where}.{k}", f"no such field in \"{MODEL_FORMAT}\" (a \"{MODEL_FORMAT_2}\" field: "
                             f"set \"format\": \"{MODEL_FORMAT_2}\")", repr(k)[:60])
        if k not in allowed:
            raise InputError(f"{where}.{k}" if where else str(k), "no field of that name (the format defines "
                             + ", ".join(sorted(allowed)) + ")", repr(k)[:60])


def _meta(obj: dict) -> dict:
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise InputError("meta", "a JSON object", f"{type(meta).__name__} {meta!r}"[:60])
    return dict(meta)


def _head_from_json(ho: Any, hf: str, d: int, v2: bool = False) -> Head:
    if not isinstance(ho, dict):
        raise InputError(hf, "an object with W_q, W_k, W_v, W_o", type(ho).__name__)
    _known_fields(ho, hf, HEAD_ARRAYS + (HEAD_BIASES if v2 else ()), () if v2 else HEAD_BIASES)
    W_q = _matrix(ho, "W_q", f"{hf}.W_q", (None, d))
    s = W_q.shape[0]
    if s < 1:
        raise InputError(f"{hf}.W_q", "at least one row (head size s >= 1)", "0 rows")
    W_k = _matrix(ho, "W_k", f"{hf}.W_k", (s, d))
    W_v = _matrix(ho, "W_v", f"{hf}.W_v", (s, d))
    W_o = _matrix(ho, "W_o", f"{hf}.W_o", (d, s))
    biases = {n: _matrix(ho, n, f"{hf}.{n}", (s,)) for n in HEAD_BIASES if ho.get(n) is not None}
    return Head(W_q, W_k, W_v, W_o, **biases)


def _positive(v: Any, fld: str, expected: str):
    """A number > 0 (a float, or a Fraction when not a binary64 value)."""
    try:
        x = parse_number(v, fld)
    except InputError:
        raise InputError(fld, expected, repr(v)[:60]) from None
    if not x > 0:
        raise InputError(fld, expected, repr(v)[:60])
    return x


def _choice(v: Any, fld: str, allowed) -> str:
    if not isinstance(v, str) or v not in allowed:
        raise InputError(fld, " or ".join(f"\"{a}\"" for a in allowed), repr(v)[:60])
    return v


def _scale_from_json(v: Any, fld: str):
    if isinstance(v, str) and v == INV_SQRT_HEAD_SIZE:
        return INV_SQRT_HEAD_SIZE
    return _positive(v, fld, f"a number > 0 or \"{INV_SQRT_HEAD_SIZE}\"")


def _layer_norm_from_json(o: Any, fld: str, d: int) -> LayerNorm:
    if not isinstance(o, dict):
        raise InputError(fld, "an object with gamma, beta, eps", repr(o)[:60])
    _known_fields(o, fld, ("gamma", "beta", "eps"))
    gamma = _matrix(o, "gamma", f"{fld}.gamma", (d,))
    beta = _matrix(o, "beta", f"{fld}.beta", (d,))
    if "eps" not in o:
        raise InputError(f"{fld}.eps", "a number > 0", "nothing (missing)")
    return LayerNorm(gamma, beta, _positive(o["eps"], f"{fld}.eps", "a number > 0"))


def _mlp_from_json(mlp: Any, mf: str, d: int, v2: bool = False) -> tuple:
    if not isinstance(mlp, dict):
        raise InputError(mf, "an object with W_1, b_1, W_2, b_2", repr(mlp)[:60])
    _known_fields(mlp, mf, MLP_ARRAYS + (("activation",) if v2 else ()), () if v2 else ("activation",))
    W_1 = _matrix(mlp, "W_1", f"{mf}.W_1", (None, d))
    r = W_1.shape[0]
    if r < 1 or W_1.shape != (r, d):
        raise InputError(f"{mf}.W_1", f"at least one row of {d} entries (MLP width r >= 1; "
                         "a zero MLP is one zero row)", f"shape {tuple(W_1.shape)}")
    b_1 = _matrix(mlp, "b_1", f"{mf}.b_1", (r,))
    W_2 = _matrix(mlp, "W_2", f"{mf}.W_2", (d, r))
    b_2 = _matrix(mlp, "b_2", f"{mf}.b_2", (d,))
    return W_1, b_1, W_2, b_2


def _layer_from_json(lo: Any, lf: str, d: int, v2: bool = False) -> Layer:
    if not isinstance(lo, dict):
        raise InputError(lf, "an object with \"attention\" and \"mlp\"", type(lo).__name__)
    _known_fields(lo, lf, ("attention", "mlp") + (("norm",) if v2 else ()), () if v2 else ("norm",))
    att = lo.get("attention")
    if not isinstance(att, dict):
        raise InputError(f"{lf}.attention", "an object", repr(att)[:60])
    _known_fields(att, f"{lf}.attention", ("kind", "heads") + (("b_o", "scale") if v2 else ()),
                  () if v2 else ("b_o", "scale"))
    kind = att.get("kind", "softmax")
    if kind not in ("softmax", "hardmax"):
        raise InputError(f"{lf}.attention.kind", "\"softmax\" or \"hardmax\"", repr(kind))
    heads_obj = att.get("heads")
    if not isinstance(heads_obj, list) or not heads_obj:
        raise InputError(f"{lf}.attention.heads", "a non-empty list of heads", repr(heads_obj)[:60])
    heads = [_head_from_json(ho, f"{lf}.attention.heads[{hj}]", d, v2) for hj, ho in enumerate(heads_obj)]
    layer = Layer(kind, heads, *_mlp_from_json(lo.get("mlp"), f"{lf}.mlp", d, v2))
    if not v2:
        return layer
    if att.get("b_o") is not None:
        layer.b_o = _matrix(att, "b_o", f"{lf}.attention.b_o", (d,))
    if "scale" in att:
        layer.scale = _scale_from_json(att["scale"], f"{lf}.attention.scale")
    if "activation" in lo["mlp"]:
        layer.activation = _choice(lo["mlp"]["activation"], f"{lf}.mlp.activation", ACTIVATIONS)
    norm = lo.get("norm")
    if norm is not None:
        nf = f"{lf}.norm"
        if not isinstance(norm, dict):
            raise InputError(nf, "an object with placement, ln1, ln2", repr(norm)[:60])
        _known_fields(norm, nf, ("placement", "ln1", "ln2"))
        layer.norm = _choice(norm.get("placement"), f"{nf}.placement", NORM_PLACEMENTS)
        layer.ln1 = _layer_norm_from_json(norm.get("ln1"), f"{nf}.ln1", d)
        layer.ln2 = _layer_norm_from_json(norm.get("ln2"), f"{nf}.ln2", d)
    return layer


def model_from_json(obj: Any) -> Model:
    """Validate a ``ptverify-model/1`` or ``ptverify-model/2`` object (parsed JSON; arrays may
    also be ndarrays) into a :class:`Model`; raises :class:`InputError` naming the first bad
    field.  A ``/1`` object may not hold the ``/2`` fields."""
    if not isinstance(obj, dict):
        raise InputError("model", "a JSON object", type(obj).__name__)
    fmt = obj.get("format")
    if fmt not in (MODEL_FORMAT, MODEL_FORMAT_2):
        raise InputError("format", f"\"{MODEL_FORMAT}\" or \"{MODEL_FORMAT_2}\"", repr(fmt)[:60])
    v2 = fmt == MODEL_FORMAT_2
    _known_fields(obj, "", ("format", "d", "causal", "layers", "meta"))
    d = obj.get("d")
    if not isinstance(d, int) or isinstance(d, bool) or not 1 <= d <= MAX_D:
        raise InputError("d", f"a positive integer of at most {MAX_D}", repr(d)[:40])
    causal = obj.get("causal", False)
    if not isinstance(causal, bool):
        raise InputError("causal", "true or false", repr(causal))
    layers_obj = obj.get("layers")
    if not isinstance(layers_obj, list) or not layers_obj:
        raise InputError("layers", "a non-empty list of layers", repr(layers_obj)[:60])
    layers = [_layer_from_json(lo, f"layers[{li}]", d, v2) for li, lo in enumerate(layers_obj)]
    return Model(d=d, layers=layers, causal=causal, meta=_meta(obj))


def _example_from_json(ex: Any, ef: str, d: Optional[int]) -> Example:
    if not isinstance(ex, dict):
        raise InputError(ef, "an object with \"input\" and \"output\"", type(ex).__name__)
    _known_fields(ex, ef, ("input", "output"))
    X = parse_array(ex.get("input"), f"{ef}.input", (None, d))
    if X.shape[0] < 1:
        raise InputError(f"{ef}.input", "at least one token", "none")
    d = X.shape[1]
    Y = ex.get("output")
    if not isinstance(Y, list) or len(Y) != X.shape[0]:
        raise InputError(f"{ef}.output", f"a list of {X.shape[0]} tokens (or nulls), one per input token",
                         f"{len(Y) if isinstance(Y, list) else type(Y).__name__}")
    return Example(X, [None if y is None else parse_array(y, f"{ef}.output[{t}]", (d,)) for t, y in enumerate(Y)])


def dataset_from_json(obj: Any, d: Optional[int] = None) -> Dataset:
    """Validate a ``ptverify-dataset/1`` object into a :class:`Dataset`; ``d`` (else the first
    example's) is the token size every token must have."""
    if not isinstance(obj, dict):
        raise InputError("dataset", "a JSON object", type(obj).__name__)
    if obj.get("format") != DATASET_FORMAT:
        raise InputError("format", f"\"{DATASET_FORMAT}\"", repr(obj.get("format")))
    _known_fields(obj, "", ("format", "examples", "meta", "at"))
    at = obj.get("at", "output")
    if at not in TARGET_SITES:
        raise InputError("at", " or ".join(f"\"{a}\"" for a in TARGET_SITES), repr(at)[:60])
    exs = obj.get("examples")
    if not isinstance(exs, list) or not exs:
        raise InputError("examples", "a non-empty list", repr(exs)[:60])
    out = []
    for i, ex in enumerate(exs):
        out.append(_example_from_json(ex, f"examples[{i}]", d))
        d = out[-1].input.shape[1]
    return Dataset(out, _meta(obj), at=at)


# --------------------------------------------------------------------------- reading files

#: the largest model or dataset file read (a BERT-size model as JSON is about 150 MB)
MAX_FILE_BYTES = 1 << 30


def _existing_file(path: str, flag: str) -> None:
    if not os.path.exists(path):
        raise InputError(flag, "an existing file", f"no file {path!r}")
    if not os.path.isfile(path):
        raise InputError(flag, "a file", f"{path!r} is a folder" if os.path.isdir(path) else f"{path!r} is not a regular file")
    if os.path.getsize(path) > MAX_FILE_BYTES:
        raise InputError(flag, f"a file of at most {MAX_FILE_BYTES >> 20} MiB", f"{os.path.getsize(path) >> 20} MiB")


def _unique_keys(pairs) -> dict:
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise InputError(str(k)[:60], "a key given once per object", "it repeated")
        obj[k] = v
    return obj


def _read_json(path: str, flag: str) -> Any:
    """The parsed JSON of an existing file (UTF-8, every key once); errors name the command-line flag."""
    _existing_file(path, flag)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        if not text.strip():
            raise InputError(flag, "a JSON file", "an empty file")
        return json.loads(text, object_pairs_hook=_unique_keys, parse_float=json_float)
    except InputError:
        raise
    except json.JSONDecodeError as exc:
        raise InputError(flag, "valid JSON", f"a parse error: {' '.join(str(exc).split())[:120]}") from None
    except UnicodeDecodeError:
        raise InputError(flag, "a UTF-8 JSON file", "bytes that are not UTF-8 (binary data or another encoding)") from None
    except RecursionError:
        raise InputError(flag, "JSON nested at most a few hundred levels deep", "deeper nesting") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise InputError(flag, "valid JSON with numbers of at most 4300 digits", " ".join(str(exc).split())[:120]) from None
    except OSError as exc:
        raise InputError(flag, "a readable file", f"{type(exc).__name__}: {exc.strerror or exc}") from None


def _npy_header_ok(z, key: str, fld: str) -> None:
    """Refuse a member whose declared shape would not fit, or that holds objects, before reading it."""
    name = key if key in z.zip.namelist() else key + ".npy"
    with z.zip.open(name) as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(fh)
    if dtype.hasobject:
        raise InputError(fld, "a numeric array stored without pickling", "an object array")
    size = dtype.itemsize
    for n in shape:
        size *= n
    if size > 4 * MAX_FILE_BYTES:
        raise InputError(fld, f"an array of at most {4 * MAX_FILE_BYTES >> 20} MiB", f"shape {tuple(shape)} of {dtype}")


def _npz_object(path: str, flag: str = "--model") -> dict:
    """A ``.npz`` model as the object :func:`model_from_json` validates (arrays as ndarrays)."""
    _existing_file(path, flag)
    try:
        z = np.load(path, allow_pickle=False)
        if not hasattr(z, "files"):
            raise InputError(flag, "a .npz archive", "a single .npy array")
        files = set(z.files)
        expanded = sum(i.file_size for i in z.zip.infolist())
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable archive is bad input
        raise InputError(flag, "a readable .npz archive", " ".join(str(exc).split())[:120] or type(exc).__name__) from None
    if expanded > 4 * MAX_FILE_BYTES:
        raise InputError(flag, f"a .npz archive of at most {4 * MAX_FILE_BYTES >> 20} MiB expanded",
                         f"{expanded >> 20} MiB")
    if "__header__" not in files:
        raise InputError("__header__", "a JSON header entry in the .npz", "none")
    try:
        hdr = json.loads(bytes(np.asarray(z["__header__"], dtype=np.uint8)).decode(), object_pairs_hook=_unique_keys,
                         parse_float=json_float)
    except InputError:
        raise
    except Exception:  # noqa: BLE001
        raise InputError("__header__", "a JSON header", "unreadable bytes") from None
    kinds, heads = (hdr.get("kinds"), hdr.get("heads")) if isinstance(hdr, dict) else (None, None)
    if not (isinstance(kinds, list) and isinstance(heads, list) and len(kinds) == len(heads)
            and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= len(files) for n in heads)):
        raise InputError("__header__", "a JSON object with lists \"kinds\" and \"heads\" (integers no larger than "
                         "the archive's number of arrays) of one entry per layer", repr(hdr)[:80])

    def read(key: str, fld: str) -> np.ndarray:
        try:
            _npy_header_ok(z, key, fld)
            a = np.asarray(z[key])
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - pickled objects, truncated or corrupt members
            raise InputError(fld, "a numeric array stored without pickling", " ".join(str(exc).split())[:100]) from None
        if a.dtype.kind == "f" and a.dtype.itemsize > 8:
            with np.errstate(all="ignore"):
                if not np.array_equal(a.astype(np.float64).astype(a.dtype), a, equal_nan=True):
                    raise InputError(fld, "float64 (or narrower) values", f"dtype {a.dtype} values that float64 would round")
        return a

    def present(prefix: str, fprefix: str, names) -> dict:
        return {n: read(prefix + n, fprefix + n) for n in names if prefix + n in files}
    return {"format": hdr.get("format"), "d": hdr.get("d"), "causal": hdr.get("causal", False),
            "layers": _npz_layers(hdr, kinds, heads, files, present)}


def _npz_layers(hdr: dict, kinds: list, heads: list, files: set, present) -> list:
    """The layer objects of a ``.npz`` model: its arrays (``present(prefix, field prefix, names)``
    reads those there are) and, for ``/2``, the header's per-layer scalars and strings."""
    v2 = hdr.get("format") == MODEL_FORMAT_2
    _known_fields(hdr, "__header__", ("format", "d", "causal", "kinds", "heads") + (("layers",) if v2 else ()),
                  () if v2 else ("layers",))
    extras = hdr.get("layers", [{}] * len(kinds))
    if not (isinstance(extras, list) and len(extras) == len(kinds) and all(isinstance(e, dict) for e in extras)):
        raise InputError("__header__.layers", f"a list of {len(kinds)} objects (one per layer: scale, activation, "
                         "norm)", repr(extras)[:80])
    optional = {f"layers.{li}.attention.heads.{hj}.{n}" for li, nh in enumerate(heads) for hj in range(nh)
                for n in HEAD_BIASES} | {f"layers.{li}.attention.b_o" for li in range(len(kinds))} | {
                f"layers.{li}.norm.{ln}.{n}" for li in range(len(kinds)) for ln in ("ln1", "ln2")
                for n in ("gamma", "beta")}
    expected = {"__header__"} | {f"layers.{li}.mlp.{n}" for li in range(len(kinds)) for n in MLP_ARRAYS} | {
        f"layers.{li}.attention.heads.{hj}.{n}" for li, nh in enumerate(heads) for hj in range(nh) for n in HEAD_ARRAYS}
    extra = sorted(files - expected - (optional if v2 else set()))
    if extra:
        raise InputError(extra[0], "no array of that name (the header's format, kinds and heads give the arrays; "
                         "docs/formats.md, .npz models)", f"{len(extra)} array(s) the header does not call for")
    return [_npz_layer(li, kind, nh, extras[li], present) for li, (kind, nh) in enumerate(zip(kinds, heads))]


def _npz_layer(li: int, kind: Any, nh: int, e: dict, present) -> dict:
    _known_fields(e, f"__header__.layers[{li}]", ("scale", "activation", "norm"))
    att = {"kind": kind, "heads": [present(f"layers.{li}.attention.heads.{hj}.", f"layers[{li}].attention.heads[{hj}].",
                                           HEAD_ARRAYS + HEAD_BIASES) for hj in range(nh)]}
    att.update(present(f"layers.{li}.attention.", f"layers[{li}].attention.", ("b_o",)))
    mlp = present(f"layers.{li}.mlp.", f"layers[{li}].mlp.", MLP_ARRAYS)
    lo = {"attention": att, "mlp": mlp}
    if "scale" in e:
        att["scale"] = e["scale"]
    if "activation" in e:
        mlp["activation"] = e["activation"]
    norm_arrays = {ln: present(f"layers.{li}.norm.{ln}.", f"layers[{li}].norm.{ln}.", ("gamma", "beta"))
                   for ln in ("ln1", "ln2")}
    if "norm" in e or any(norm_arrays.values()):
        hf = f"__header__.layers[{li}].norm"
        norm = e.get("norm")
        if not isinstance(norm, dict):
            raise InputError(hf, "an object with placement, ln1: {eps}, ln2: {eps}", repr(norm)[:60])
        _known_fields(norm, hf, ("placement", "ln1", "ln2"))
        lo["norm"] = {"placement": norm.get("placement")}
        for ln in ("ln1", "ln2"):
            sc = norm.get(ln, {})
            if not isinstance(sc, dict):
                raise InputError(f"{hf}.{ln}", "an object {\"eps\": number}", repr(sc)[:60])
            _known_fields(sc, f"{hf}.{ln}", ("eps",))
            lo["norm"][ln] = {**norm_arrays[ln], **sc}
    return lo


def load_model(path: str, flag: str = "--model") -> Model:
    """Load and validate a ``ptverify-model/1`` or ``/2`` file (``.json`` or ``.npz``); errors about
    the file itself name ``flag`` (the option or argument that gave it)."""
    _existing_file(path, flag)
    if path.endswith(".npz"):
        return model_from_json(_npz_object(path, flag))
    if not path.endswith(".json"):
        raise InputError(flag, "a .json or .npz file", repr(os.path.basename(path)))
    return model_from_json(_read_json(path, flag))


def load_dataset(path: str, d: Optional[int] = None) -> Dataset:
    """Load and validate a ``ptverify-dataset/1`` JSON file; ``d`` checks the token size."""
    return dataset_from_json(_read_json(path, "--dataset"), d)


# --------------------------------------------------------------------------- writing files

def _layer_norm_to_json(ln: LayerNorm, include_arrays: bool) -> dict:
    return {"gamma": array_to_json(ln.gamma) if include_arrays else None,
            "beta": array_to_json(ln.beta) if include_arrays else None, "eps": number_to_json(ln.eps)}


def _scale_to_json(scale):
    return scale if isinstance(scale, str) else number_to_json(scale)


def model_to_json(model: Model, include_arrays: bool = True) -> dict:
    """The model's object (exact: rationals that are not binary64 as strings):
    ``ptverify-model/1`` when every layer is plain (:attr:`Model.is_plain`), else
    ``ptverify-model/2`` with the real-layer fields that differ from their defaults."""
    def arrays(obj, names) -> dict:
        return {k: array_to_json(getattr(obj, k)) if include_arrays else None for k in names
                if getattr(obj, k) is not None}
    plain = model.is_plain
    out: dict = {"format": MODEL_FORMAT if plain else MODEL_FORMAT_2, "d": model.d}
    if model.causal:
        out["causal"] = True
    layers = []
    for layer in model.layers:
        att: dict = {"kind": layer.kind, "heads": [arrays(h, HEAD_ARRAYS + HEAD_BIASES) for h in layer.heads]}
        mlp = arrays(layer, MLP_ARRAYS)
        lo: dict = {"attention": att, "mlp": mlp}
        if not plain:
            if layer.b_o is not None:
                att["b_o"] = array_to_json(layer.b_o) if include_arrays else None
            if isinstance(layer.scale, str) or layer.scale != 1:
                att["scale"] = _scale_to_json(layer.scale)
            if layer.activation != "relu":
                mlp["activation"] = layer.activation
            if layer.norm is not None:
                lo["norm"] = {"placement": layer.norm, "ln1": _layer_norm_to_json(layer.ln1, include_arrays),
                              "ln2": _layer_norm_to_json(layer.ln2, include_arrays)}
        layers.append(lo)
    out["layers"] = layers
    if model.meta:
        out["meta"] = model.meta
    return out


def dataset_to_json(ds: Dataset) -> dict:
    out = {"format": DATASET_FORMAT,
           "examples": [{"input": array_to_json(ex.input),
                         "output": [None if y is None else array_to_json(y) for y in ex.output]}
                        for ex in ds.examples]}
    if ds.meta:
        out["meta"] = ds.meta
    if ds.at != "output":
        out["at"] = ds.at
    return out


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def atomic_write(path: str, suffix: str, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then move it into place."""
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Write a file so that a reader never sees it half-written."""
    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write(text)
    atomic_write(path, os.path.basename(path), write)


def _npz_arrays(model: Model) -> dict:
    arrays = {}
    for key, a in model.arrays():
        if a.dtype != np.float64:
            fa = as_float(a)
            if any(Fraction(float(x)) != x for x in a.reshape(-1)):
                raise InputError(key, "binary64 values for .npz", "exact rationals; save as .json")
            a = fa
        arrays[key] = a
    hdr: dict = {"format": MODEL_FORMAT, "d": model.d, "causal": model.causal,
                 "kinds": [layer.kind for layer in model.layers],
                 "heads": [len(layer.heads) for layer in model.layers]}
    if not model.is_plain:      # the scalars and strings of the /2 fields go in the header
        hdr["format"] = MODEL_FORMAT_2
        hdr["layers"] = []
        for layer in model.layers:
            lo: dict = {}
            if isinstance(layer.scale, str) or layer.scale != 1:
                lo["scale"] = _scale_to_json(layer.scale)
            if layer.activation != "relu":
                lo["activation"] = layer.activation
            if layer.norm is not None:
                lo["norm"] = {"placement": layer.norm, "ln1": {"eps": number_to_json(layer.ln1.eps)},
                              "ln2": {"eps": number_to_json(layer.ln2.eps)}}
            hdr["layers"].append(lo)
    header = json.dumps(hdr)
    arrays["__header__"] = np.frombuffer(header.encode(), dtype=np.uint8)
    return arrays


def save_model(model: Model, path: str) -> None:
    """Write ``.json`` (exact: rationals as strings) or ``.npz`` (float64 only)."""
    if path.endswith(".npz"):
        arrays = _npz_arrays(model)
        atomic_write(path, ".npz", lambda tmp: np.savez(tmp, **arrays))
        return
    atomic_write_text(path, json.dumps(model_to_json(model)))


def save_dataset(ds: Dataset, path: str) -> None:
    atomic_write_text(path, json.dumps(dataset_to_json(ds)))


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
