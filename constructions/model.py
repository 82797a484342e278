"""Transformer models, datasets and their file formats.

A model is a stack of layers ``tau(X) = MLP(X + Att(X, X))`` (THEORY.md section 1).  Tokens are
stored as *rows* here: a sequence is an array of shape ``(m, d)``.

Every matrix is kept either as a ``float64`` array (each entry meaning exactly that binary64
value) or, when the file gave exact rationals as strings, as an ``object`` array of
:class:`fractions.Fraction`.  :func:`as_fraction` and :func:`as_scaled_int` turn either into exact
arithmetic without rounding; :func:`as_float` is for numerics only.

Files are validated once, here (:func:`load_model`, :func:`load_dataset`).  Errors are
:class:`InputError` and name the field, the expected shape and what was found.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterable, Optional, Sequence

import numpy as np

__all__ = [
    "InputError", "Head", "Layer", "Model", "Example", "Dataset",
    "as_float", "as_fraction", "as_scaled_int", "is_float_array", "IntMatrix",
    "load_model", "save_model", "load_dataset", "save_dataset",
    "model_to_json", "dataset_to_json", "number_to_json", "sha256_file", "sha256_json",
    "atomic_write_text",
]

MODEL_FORMAT = "ptverify-model/1"
DATASET_FORMAT = "ptverify-dataset/1"


class InputError(ValueError):
    """Bad input: a file or an argument that does not meet the documented format.

    ``field`` names the offending field (``layers[0].attention.heads[1].W_q``)."""

    def __init__(self, field: str, expected: str, found: str, hint: str = ""):
        self.field = field
        msg = f"{field}: expected {expected}, found {found}"
        if hint:
            msg += f". {hint}"
        super().__init__(msg)


# --------------------------------------------------------------------------- numbers / arrays

#: limits on one number in a model or dataset file.  The trusted checker reads the same files,
#: so these are no looser than its own: rational strings of at most 20000 characters, decimal
#: exponents of at most 400; every value must also be finite as a binary64 number (the provers'
#: numerics run in floats), i.e. of magnitude below 2**1024.
MAX_RATIONAL_CHARS = 20000
MAX_D = 1 << 20
MAX_DECIMAL_EXPONENT = 400
_MAGNITUDE = Fraction(2) ** 1024
_RATIONAL_HELP = "a rational string such as \"3/8\", \"-2\", \"0.125\" or \"1e-9\""


def _parse_rational_string(v: str, fld: str) -> Fraction:
    t = v.strip().lower()
    if len(t) > MAX_RATIONAL_CHARS:
        raise InputError(fld, f"a rational string of at most {MAX_RATIONAL_CHARS} characters",
                         f"{len(t)} characters")
    if "e" in t:
        mant, _, ex = t.partition("e")
        try:
            big = abs(int(ex)) > MAX_DECIMAL_EXPONENT
        except ValueError:
            big = False                  # not a decimal exponent: Fraction() rejects it below
        if big or "/" in mant:
            raise InputError(fld, f"{_RATIONAL_HELP} (decimal exponent at most {MAX_DECIMAL_EXPONENT})", repr(v[:40]))
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        raise InputError(fld, _RATIONAL_HELP, repr(v[:40])) from None


def _parse_number(v: Any, fld: str):
    """A JSON number (exact binary64) or a string holding an exact rational, of magnitude < 2**1024."""
    if isinstance(v, bool):
        raise InputError(fld, "a number or a rational string such as \"3/8\"", f"{v!r}")
    if isinstance(v, int):
        if abs(v) >= _MAGNITUDE:
            raise InputError(fld, "a number of magnitude below 2**1024 (about 1.8e308)", f"an integer of {v.bit_length()} bits")
        return float(v) if float(v) == v else Fraction(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise InputError(fld, "a finite number", repr(v))
        return v
    if isinstance(v, str):
        q = _parse_rational_string(v, fld)
        if abs(q) >= _MAGNITUDE:
            raise InputError(fld, "a number of magnitude below 2**1024 (about 1.8e308)", repr(v[:40]))
        return q
    raise InputError(fld, "a number or a rational string", f"{type(v).__name__} {v!r}"[:80])


def _array(values: Any, fld: str, shape: Sequence[Optional[int]]) -> np.ndarray:
    """Parse a nested list of numbers with the given shape (None = any length)."""
    if isinstance(values, np.ndarray):
        arr = values
        if arr.dtype.kind in "iu":
            arr = arr.astype(object)
            arr = np.vectorize(Fraction, otypes=[object])(arr) if arr.size else arr
        elif arr.dtype.kind == "f":
            arr = arr.astype(np.float64)
            if not np.all(np.isfinite(arr)):
                bad = np.argwhere(~np.isfinite(arr))[0]
                raise InputError(f"{fld}[{', '.join(map(str, bad))}]", "a finite number", str(arr[tuple(bad)]))
        elif arr.dtype != object:
            raise InputError(fld, "a numeric array", f"dtype {arr.dtype}")
        _check_shape(arr.shape, fld, shape)
        return arr
    flat: list = []

    def walk(v, depth, path):
        if depth == len(shape):
            flat.append(_parse_number(v, fld + path))
            return
        if not isinstance(v, (list, tuple)):
            raise InputError(fld + path, f"a list (nesting depth {len(shape)})", f"{type(v).__name__} {v!r}"[:80])
        want = shape[depth]
        if want is not None and len(v) != want:
            raise InputError(fld + path, f"{want} entries (shape {_shape_str(shape)})", f"{len(v)} entries")
        for k, item in enumerate(v):
            walk(item, depth + 1, f"{path}[{k}]")

    walk(values, 0, "")
    # infer actual shape
    dims = []
    v = values
    for _ in shape:
        dims.append(len(v))
        v = v[0] if len(v) else []
    # ragged inner lists with shape None
    n_expected = int(np.prod(dims)) if dims else 1
    if len(flat) != n_expected:
        raise InputError(fld, f"a rectangular array of shape {_shape_str(shape)}", "rows of different lengths")
    if all(isinstance(x, float) for x in flat):
        return np.array(flat, dtype=np.float64).reshape(dims)
    out = np.empty(len(flat), dtype=object)
    out[:] = [x if isinstance(x, Fraction) else Fraction(x) for x in flat]
    return out.reshape(dims)


def _shape_str(shape):
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def _check_shape(found, fld, shape):
    if len(found) != len(shape) or any(w is not None and w != f for w, f in zip(shape, found)):
        raise InputError(fld, f"shape {_shape_str(shape)}", f"shape {tuple(found)}")


def is_float_array(a: np.ndarray) -> bool:
    return a.dtype == np.float64


def as_float(a: np.ndarray) -> np.ndarray:
    """Nearest float64 array (for numerics only)."""
    if a.dtype == np.float64:
        return a
    return np.vectorize(float, otypes=[np.float64])(a) if a.size else np.zeros(a.shape)


def as_fraction(a: np.ndarray) -> np.ndarray:
    """Exact object array of Fractions (a float64 entry becomes exactly its binary64 value)."""
    if a.dtype == object:
        return a
    out = np.empty(a.shape, dtype=object)
    flat = out.reshape(-1)
    flat[:] = [Fraction(x) for x in a.reshape(-1).tolist()]
    return out


def _dyadic_int64(a: np.ndarray):
    """(N, E) with a == N / 2**E exactly and N int64 (|N| < 2**62), or None."""
    if a.size == 0:
        return np.zeros(a.shape, dtype=np.int64), 0
    amax = float(np.max(np.abs(a)))
    top = math.frexp(amax)[1]            # amax < 2**top
    for e in range(0, 1075):
        if top + e > 62:                 # |N| would reach 2**62 (checked before scaling: no overflow)
            return None
        b = np.ldexp(a, e)               # exact: scaling by a power of two
        if np.all(b == np.floor(b)):
            return b.astype(np.int64), e
    return None


def as_scaled_int(a: np.ndarray) -> tuple[np.ndarray, int]:
    """Exact integer form: returns ``(N, D)`` with ``a == N / D`` entry-wise, N an object
    array of Python ints and D a positive int (a power of two for float arrays)."""
    if a.dtype == np.float64:
        if a.size == 0:
            return np.zeros(a.shape, dtype=object), 1
        fast = _dyadic_int64(a)
        if fast is not None:
            return fast[0].astype(object), 1 << fast[1]
        m, e = np.frexp(a)
        mant = (m * 2.0 ** 53).astype(np.int64)  # exact: |m| < 1
        e = e.astype(np.int64) - 53
        nz = mant != 0
        emin = int(e[nz].min()) if nz.any() else 0
        shift = np.where(nz, e - emin, 0)
        out = np.empty(a.shape, dtype=object)
        flat = out.reshape(-1)
        flat[:] = [int(mm) << int(s) for mm, s in zip(mant.reshape(-1).tolist(), shift.reshape(-1).tolist())]
        if emin >= 0:
            return out * (1 << emin), 1
        return out, 1 << (-emin)
    den = 1
    for x in a.reshape(-1):
        den = den * x.denominator // math.gcd(den, x.denominator)
    out = np.empty(a.shape, dtype=object)
    flat = out.reshape(-1)
    flat[:] = [int(x.numerator * (den // x.denominator)) for x in a.reshape(-1)]
    return out, den


class IntMatrix:
    """An exact rational matrix N / D with integer N, with fast exact products.

    When N fits in 32 bits, products with big-integer vectors split the vector into 16-bit
    limbs and use int64 matrix products (no overflow: n * 2**32 * 2**16 < 2**63 for n < 2**15)."""

    def __init__(self, a: np.ndarray):
        self.N, self.D = as_scaled_int(np.asarray(a))
        self.shape = self.N.shape
        self.N64 = None
        if self.N.size and self.shape[1] < (1 << 15):
            big = max(abs(int(v)) for v in (self.N.max(), self.N.min()))
            if big < (1 << 32):
                self.N64 = self.N.astype(np.int64)

    def _prod(self, M64, Mobj, xi: list[int]) -> list[int]:
        if M64 is None or not xi:
            v = np.empty(len(xi), dtype=object)
            v[:] = xi
            return [int(t) for t in Mobj.dot(v)] if len(xi) else [0] * Mobj.shape[0]
        nb = max(abs(v).bit_length() for v in xi)
        nch = max(1, (nb + 15) // 16)
        X = np.zeros((len(xi), nch), dtype=np.int64)
        for k, v in enumerate(xi):
            sgn, m = (1, v) if v >= 0 else (-1, -v)
            for c in range(nch):
                X[k, c] = sgn * ((m >> (16 * c)) & 0xFFFF)
        R = M64 @ X
        return [sum(int(R[r, c]) << (16 * c) for c in range(nch)) for r in range(R.shape[0])]

    @staticmethod
    def _ints(x) -> tuple[list[int], int]:
        L = 1
        for v in x:
            L = L * v.denominator // math.gcd(L, v.denominator)
        return [int(v * L) for v in x], L

    def mv(self, x) -> list[Fraction]:
        """Exact (N / D) @ x for a rational vector x."""
        xi, L = self._ints([Fraction(v) for v in x])
        return [Fraction(v, self.D * L) for v in self._prod(self.N64, self.N, xi)]

    def vm(self, y) -> list[Fraction]:
        """Exact y^T (N / D)."""
        yi, L = self._ints([Fraction(v) for v in y])
        NT64 = None if self.N64 is None else np.ascontiguousarray(self.N64.T)
        return [Fraction(v, self.D * L) for v in self._prod(NT64, self.N.T, yi)]


def number_to_json(x):
    """A float stays a JSON number; a Fraction that is not a float becomes "p/q"."""
    if isinstance(x, float):
        return x
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, Fraction):
        if x.denominator == 1:
            return str(x.numerator)
        f = float(x)
        if Fraction(f) == x:
            return f
        return f"{x.numerator}/{x.denominator}"
    if isinstance(x, np.floating):
        return float(x)
    raise TypeError(f"not a number: {x!r}")


def _array_to_json(a: np.ndarray):
    if a.dtype == np.float64:
        return a.tolist()
    return np.vectorize(number_to_json, otypes=[object])(a).tolist() if a.size else a.tolist()


# --------------------------------------------------------------------------- the model

@dataclass
class Head:
    W_q: np.ndarray  # (s, d)
    W_k: np.ndarray  # (s, d)
    W_v: np.ndarray  # (s, d)
    W_o: np.ndarray  # (d, s)

    @property
    def s(self) -> int:
        return self.W_q.shape[0]


@dataclass
class Layer:
    kind: str                 # "softmax" | "hardmax"
    heads: list[Head]
    W_1: np.ndarray           # (r, d)
    b_1: np.ndarray           # (r,)
    W_2: np.ndarray           # (d, r)
    b_2: np.ndarray           # (d,)

    @property
    def r(self) -> int:
        return self.W_1.shape[0]


@dataclass
class Model:
    d: int
    layers: list[Layer]
    causal: bool = False
    meta: dict = field(default_factory=dict)

    @property
    def is_exact(self) -> bool:
        """True when no softmax exponential of a non-constant score can appear: every layer is
        hardmax.  (Zero-score softmax heads are handled per head by the encodings.)"""
        return all(layer.kind == "hardmax" for layer in self.layers)

    def arrays(self) -> Iterable[tuple[str, np.ndarray]]:
        for li, layer in enumerate(self.layers):
            for hj, h in enumerate(layer.heads):
                for name in ("W_q", "W_k", "W_v", "W_o"):
                    yield f"layers.{li}.attention.heads.{hj}.{name}", getattr(h, name)
            for name in ("W_1", "b_1", "W_2", "b_2"):
                yield f"layers.{li}.mlp.{name}", getattr(layer, name)

    def n_parameters(self) -> int:
        return sum(a.size for _, a in self.arrays())


def _validate_model_dict(obj: Any, get_array) -> Model:
    """Build a Model from a parsed JSON object; get_array(key, fld, shape) fetches arrays."""
    if not isinstance(obj, dict):
        raise InputError("model", "a JSON object", type(obj).__name__)
    fmt = obj.get("format")
    if fmt != MODEL_FORMAT:
        raise InputError("format", f"\"{MODEL_FORMAT}\"", repr(fmt))
    d = obj.get("d")
    if not isinstance(d, int) or isinstance(d, bool) or not 1 <= d <= MAX_D:
        raise InputError("d", f"a positive integer of at most {MAX_D}", repr(d)[:40])
    causal = obj.get("causal", False)
    if not isinstance(causal, bool):
        raise InputError("causal", "true or false", repr(causal))
    layers_obj = obj.get("layers")
    if not isinstance(layers_obj, list) or not layers_obj:
        raise InputError("layers", "a non-empty list of layers", repr(layers_obj)[:60])
    layers = []
    for li, lo in enumerate(layers_obj):
        lf = f"layers[{li}]"
        if not isinstance(lo, dict):
            raise InputError(lf, "an object with \"attention\" and \"mlp\"", type(lo).__name__)
        att = lo.get("attention")
        if not isinstance(att, dict):
            raise InputError(f"{lf}.attention", "an object", repr(att)[:60])
        kind = att.get("kind", "softmax")
        if kind not in ("softmax", "hardmax"):
            raise InputError(f"{lf}.attention.kind", "\"softmax\" or \"hardmax\"", repr(kind))
        heads_obj = att.get("heads")
        if not isinstance(heads_obj, list) or not heads_obj:
            raise InputError(f"{lf}.attention.heads", "a non-empty list of heads", repr(heads_obj)[:60])
        heads = []
        for hj, ho in enumerate(heads_obj):
            hf = f"{lf}.attention.heads[{hj}]"
            if not isinstance(ho, dict):
                raise InputError(hf, "an object with W_q, W_k, W_v, W_o", type(ho).__name__)
            W_q = get_array(ho, "W_q", f"{hf}.W_q", (None, d), (li, "attention", hj))
            s = W_q.shape[0]
            if s < 1:
                raise InputError(f"{hf}.W_q", "at least one row (head size s >= 1)", "0 rows")
            W_k = get_array(ho, "W_k", f"{hf}.W_k", (s, d), (li, "attention", hj))
            W_v = get_array(ho, "W_v", f"{hf}.W_v", (s, d), (li, "attention", hj))
            W_o = get_array(ho, "W_o", f"{hf}.W_o", (d, s), (li, "attention", hj))
            heads.append(Head(W_q, W_k, W_v, W_o))
        mlp = lo.get("mlp")
        if not isinstance(mlp, dict):
            raise InputError(f"{lf}.mlp", "an object with W_1, b_1, W_2, b_2", repr(mlp)[:60])
        W_1 = get_array(mlp, "W_1", f"{lf}.mlp.W_1", (None, d), (li, "mlp", None))
        r = W_1.shape[0]
        if r < 1 or W_1.shape != (r, d):
            raise InputError(f"{lf}.mlp.W_1", f"at least one row of {d} entries (MLP width r >= 1; "
                             "a zero MLP is one zero row)", f"shape {tuple(W_1.shape)}")
        b_1 = get_array(mlp, "b_1", f"{lf}.mlp.b_1", (r,), (li, "mlp", None))
        W_2 = get_array(mlp, "W_2", f"{lf}.mlp.W_2", (d, r), (li, "mlp", None))
        b_2 = get_array(mlp, "b_2", f"{lf}.mlp.b_2", (d,), (li, "mlp", None))
        layers.append(Layer(kind, heads, W_1, b_1, W_2, b_2))
    return Model(d=d, layers=layers, causal=causal, meta=dict(obj.get("meta", {})) if isinstance(obj.get("meta", {}), dict) else {})


def model_to_json(model: Model, include_arrays: bool = True) -> dict:
    out: dict = {"format": MODEL_FORMAT, "d": model.d}
    if model.causal:
        out["causal"] = True
    layers = []
    for layer in model.layers:
        heads = []
        for h in layer.heads:
            heads.append({k: _array_to_json(getattr(h, k)) if include_arrays else None
                          for k in ("W_q", "W_k", "W_v", "W_o")})
        layers.append({"attention": {"kind": layer.kind, "heads": heads},
                       "mlp": {k: _array_to_json(getattr(layer, k)) if include_arrays else None
                               for k in ("W_1", "b_1", "W_2", "b_2")}})
    out["layers"] = layers
    if model.meta:
        out["meta"] = model.meta
    return out


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def atomic_write_text(path: str, text: str) -> None:
    """Write a file so that a reader never sees it half-written."""
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_model(model: Model, path: str) -> None:
    """Write ``.json`` (exact: rationals as strings) or ``.npz`` (float64 only)."""
    if path.endswith(".npz"):
        arrays = {}
        for key, a in model.arrays():
            if a.dtype != np.float64:
                fa = as_float(a)
                if any(Fraction(float(x)) != x for x in a.reshape(-1)):
                    raise InputError(key, "binary64 values for .npz", "exact rationals; save as .json")
                a = fa
            arrays[key] = a
        header = json.dumps({"format": MODEL_FORMAT, "d": model.d, "causal": model.causal,
                             "kinds": [layer.kind for layer in model.layers],
                             "heads": [len(layer.heads) for layer in model.layers]})
        arrays["__header__"] = np.frombuffer(header.encode(), dtype=np.uint8)
        d = os.path.dirname(os.path.abspath(path)) or "."
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".npz")
        os.close(fd)
        try:
            np.savez(tmp, **arrays)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    atomic_write_text(path, json.dumps(model_to_json(model)))


def load_model(path: str) -> Model:
    """Load and validate a ``ptverify-model/1`` file (``.json`` or ``.npz``)."""
    if not os.path.exists(path):
        raise InputError("--model", "an existing file", f"no file {path!r}")
    if path.endswith(".npz"):
        try:
            z = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise InputError("--model", "a readable .npz archive", str(exc)) from None
        if "__header__" not in z.files:
            raise InputError("__header__", "a JSON header entry in the .npz", "none")
        try:
            hdr = json.loads(bytes(z["__header__"]).decode())
        except Exception:  # noqa: BLE001
            raise InputError("__header__", "a JSON header", "unreadable bytes") from None
        obj = {"format": hdr.get("format"), "d": hdr.get("d"), "causal": hdr.get("causal", False),
               "layers": [{"attention": {"kind": k, "heads": [{} for _ in range(nh)]}, "mlp": {}}
                          for k, nh in zip(hdr.get("kinds", []), hdr.get("heads", []))]}

        def get_array(_parent, name, fld, shape, where):
            li, part, hj = where
            key = (f"layers.{li}.attention.heads.{hj}.{name}" if part == "attention"
                   else f"layers.{li}.mlp.{name}")
            if key not in z.files:
                raise InputError(fld, f"an array {key!r} in the .npz", "none")
            return _array(np.asarray(z[key]), fld, shape)
        return _validate_model_dict(obj, get_array)
    if not path.endswith(".json"):
        raise InputError("--model", "a .json or .npz file", repr(os.path.basename(path)))
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except json.JSONDecodeError as exc:
        raise InputError("--model", "valid JSON", f"a parse error: {exc}") from None
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:  # e.g. an integer of > 4300 digits
        raise InputError("--model", "valid JSON with numbers of at most 4300 digits", str(exc)[:120]) from None

    def get_array(parent, name, fld, shape, _where):
        if name not in parent:
            raise InputError(fld, f"a matrix of shape {_shape_str(shape)}", "nothing (missing)")
        return _array(parent[name], fld, shape)
    return _validate_model_dict(obj, get_array)


# --------------------------------------------------------------------------- datasets

@dataclass
class Example:
    input: np.ndarray                      # (m, d)
    output: list                           # m entries: array (d,) or None


@dataclass
class Dataset:
    examples: list[Example]
    meta: dict = field(default_factory=dict)

    @property
    def d(self) -> int:
        return self.examples[0].input.shape[1]


def _validate_dataset_dict(obj: Any, d: Optional[int]) -> Dataset:
    if not isinstance(obj, dict):
        raise InputError("dataset", "a JSON object", type(obj).__name__)
    if obj.get("format") != DATASET_FORMAT:
        raise InputError("format", f"\"{DATASET_FORMAT}\"", repr(obj.get("format")))
    exs = obj.get("examples")
    if not isinstance(exs, list) or not exs:
        raise InputError("examples", "a non-empty list", repr(exs)[:60])
    out = []
    for i, ex in enumerate(exs):
        ef = f"examples[{i}]"
        if not isinstance(ex, dict):
            raise InputError(ef, "an object with \"input\" and \"output\"", type(ex).__name__)
        X = _array(ex.get("input"), f"{ef}.input", (None, d))
        if X.shape[0] < 1:
            raise InputError(f"{ef}.input", "at least one token", "none")
        if d is None:
            d = X.shape[1]
        Y = ex.get("output")
        if not isinstance(Y, list) or len(Y) != X.shape[0]:
            raise InputError(f"{ef}.output", f"a list of {X.shape[0]} tokens (or nulls), one per input token",
                             f"{len(Y) if isinstance(Y, list) else type(Y).__name__}")
        ys = []
        for t, y in enumerate(Y):
            ys.append(None if y is None else _array(y, f"{ef}.output[{t}]", (d,)))
        out.append(Example(X, ys))
    meta = obj.get("meta", {})
    return Dataset(out, meta if isinstance(meta, dict) else {})


def load_dataset(path: str, d: Optional[int] = None) -> Dataset:
    """Load and validate a ``ptverify-dataset/1`` JSON file; ``d`` checks the token size."""
    if not os.path.exists(path):
        raise InputError("--dataset", "an existing file", f"no file {path!r}")
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except json.JSONDecodeError as exc:
        raise InputError("--dataset", "valid JSON", f"a parse error: {exc}") from None
    except UnicodeDecodeError:
        raise InputError("--dataset", "a UTF-8 JSON file", "binary data") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise InputError("--dataset", "valid JSON with numbers of at most 4300 digits", str(exc)[:120]) from None
    return _validate_dataset_dict(obj, d)


def dataset_from_json(obj: Any, d: Optional[int] = None) -> Dataset:
    return _validate_dataset_dict(obj, d)


def dataset_to_json(ds: Dataset) -> dict:
    out = {"format": DATASET_FORMAT,
           "examples": [{"input": _array_to_json(ex.input),
                         "output": [None if y is None else _array_to_json(y) for y in ex.output]}
                        for ex in ds.examples]}
    if ds.meta:
        out["meta"] = ds.meta
    return out


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
