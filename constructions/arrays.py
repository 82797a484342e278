"""Numbers and arrays of the file formats, and exact arithmetic on them.

Every matrix is kept either as a ``float64`` array (each entry meaning exactly that binary64
value) or, when a file gave exact rationals as strings, as an ``object`` array of
:class:`fractions.Fraction`.  :func:`as_fraction` and :func:`as_scaled_int` turn either into exact
arithmetic without rounding; :func:`as_float` is for numerics only.  :func:`parse_array` is the
one parser of a number array in a model or dataset; its errors are :class:`InputError` and name
the field, what was expected and what was found.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Optional, Sequence

import numpy as np

__all__ = [
    "InputError", "MAX_RATIONAL_CHARS", "MAX_DECIMAL_EXPONENT", "parse_number", "parse_array", "json_float", "NoBinary64",
    "shape_str", "is_float_array", "as_float", "as_fraction", "as_scaled_int", "dyadic_int64", "IntMatrix",
    "number_to_json", "array_to_json", "blas_threads",
]


class InputError(ValueError):
    """Bad input: a file or an argument that does not meet the documented format.

    ``field`` names the offending field (``layers[0].attention.heads[1].W_q``)."""

    def __init__(self, field: str, expected: str, found: str, hint: str = ""):
        self.field = field
        msg = f"{field}: expected {expected}, found {found}"
        if hint:
            msg += f". {hint}"
        super().__init__(msg)


# --------------------------------------------------------------------------- parsing

#: limits on one number in a model or dataset file.  The trusted checker reads the same files,
#: so these are no looser than its own: rational strings of at most 20000 characters, decimal
#: exponents of at most 400; every value must also be finite as a binary64 number (the provers'
#: numerics run in floats), i.e. of magnitude below 2**1024.
MAX_RATIONAL_CHARS = 20000
MAX_DECIMAL_EXPONENT = 400
_MAGNITUDE = Fraction(2) ** 1024
_RATIONAL_HELP = "a rational string such as \"3/8\", \"-2\", \"0.125\" or \"1e-9\""
_MAGNITUDE_HELP = "a number of magnitude below 2**1024 (about 1.8e308)"


def _parse_rational_string(v: str, fld: str) -> Fraction:
    t = v.strip().lower()
    if len(t) > MAX_RATIONAL_CHARS:
        raise InputError(fld, f"a rational string of at most {MAX_RATIONAL_CHARS} characters",
                         f"{len(t)} characters")
    if not t.isascii() or "_" in t:      # Fraction() also takes "1_000" and non-ASCII digits
        raise InputError(fld, _RATIONAL_HELP, repr(v[:40]))
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
    except ValueError as exc:
        if "digits" in str(exc):         # Python's limit on the digits of one integer (4300)
            raise InputError(fld, "a rational string whose integers have at most 4300 digits",
                             f"{len(t)} characters") from None
        raise InputError(fld, _RATIONAL_HELP, repr(v[:40])) from None
    except ZeroDivisionError:
        raise InputError(fld, _RATIONAL_HELP, repr(v[:40])) from None


class NoBinary64(str):
    """A JSON number literal with no binary64 value, kept as its text by :func:`json_float` so that
    the field holding it is named: one that underflows to 0 although it is not zero (``1e-400``)."""


def json_float(text: str):
    """``parse_float`` of the JSON readers: the literal's binary64 value, or :class:`NoBinary64`
    for a nonzero literal that rounds to 0 (the trusted checker refuses those too)."""
    v = float(text)
    if v == 0 and any(c in "123456789" for c in text.lower().partition("e")[0]):
        return NoBinary64(text)
    return v


def parse_number(v: Any, fld: str):
    """A JSON number (exact binary64) or a string holding an exact rational, of magnitude < 2**1024.

    Returns a float (a JSON float, or an integer that is a binary64 value) or a Fraction."""
    if isinstance(v, NoBinary64):
        raise InputError(fld, "a JSON number with a binary64 value (write \"%s\" as a string for that exact value)"
                         % v[:40], f"{v[:40]}, which rounds to 0")
    if isinstance(v, bool):
        raise InputError(fld, "a number or a rational string such as \"3/8\"", f"{v!r}")
    if isinstance(v, int):
        if abs(v) >= _MAGNITUDE:
            raise InputError(fld, _MAGNITUDE_HELP, f"an integer of {v.bit_length()} bits")
        return float(v) if float(v) == v else Fraction(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise InputError(fld, "a finite number", repr(v))
        return v
    if isinstance(v, str):
        q = _parse_rational_string(v, fld)
        if abs(q) >= _MAGNITUDE:
            raise InputError(fld, _MAGNITUDE_HELP, repr(v[:40]))
        return q
    raise InputError(fld, "a number or a rational string", f"{type(v).__name__} {v!r}"[:80])


def shape_str(shape: Sequence[Optional[int]]) -> str:
    """``(*, 3)`` for the shape ``(None, 3)``."""
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def _check_shape(found, fld, shape):
    if len(found) != len(shape) or any(w is not None and w != f for w, f in zip(shape, found)):
        raise InputError(fld, f"shape {shape_str(shape)}", f"shape {tuple(found)}")


def _numpy_array(arr: np.ndarray, fld: str, shape) -> np.ndarray:
    """An ndarray (from a .npz): integers become Fractions, floats must be finite."""
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


def _flatten(values: Any, fld: str, shape) -> list:
    """The parsed entries of a nested list, checking nesting and the fixed lengths of ``shape``."""
    flat: list = []

    def walk(v, depth, path):
        if depth == len(shape):
            flat.append(parse_number(v, fld + path))
            return
        if not isinstance(v, (list, tuple)):
            raise InputError(fld + path, f"a list (nesting depth {len(shape)})", f"{type(v).__name__} {v!r}"[:80])
        want = shape[depth]
        if want is not None and len(v) != want:
            raise InputError(fld + path, f"{want} entries (shape {shape_str(shape)})", f"{len(v)} entries")
        for k, item in enumerate(v):
            walk(item, depth + 1, f"{path}[{k}]")

    walk(values, 0, "")
    return flat


def parse_array(values: Any, fld: str, shape: Sequence[Optional[int]]) -> np.ndarray:
    """Parse a nested list of numbers (or an ndarray) with the given shape (None = any length).

    Returns a float64 array when every entry is a binary64 value, else an object array of
    Fractions.  Raises :class:`InputError` naming ``fld`` (and the entry) on any defect."""
    if isinstance(values, np.ndarray):
        return _numpy_array(values, fld, shape)
    flat = _flatten(values, fld, shape)
    dims = []
    v = values
    for _ in shape:
        dims.append(len(v))
        v = v[0] if len(v) else []
    if len(flat) != (int(np.prod(dims)) if dims else 1):      # ragged inner lists of free length
        raise InputError(fld, f"a rectangular array of shape {shape_str(shape)}", "rows of different lengths")
    if all(isinstance(x, float) for x in flat):
        return np.array(flat, dtype=np.float64).reshape(dims)
    out = np.empty(len(flat), dtype=object)
    out[:] = [x if isinstance(x, Fraction) else Fraction(x) for x in flat]
    return out.reshape(dims)


# --------------------------------------------------------------------------- exact views

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


def _least_exponent(a: np.ndarray) -> int:
    """The least e >= 0 making a * 2**e integral (a finite, not all zero)."""
    m, ex = np.frexp(a)
    mant = (m * 2.0 ** 53).astype(np.int64)  # exact: |m| < 1
    nz = mant != 0
    am = np.abs(mant)
    tz = np.frexp((am & -am).astype(np.float64))[1] - 1      # trailing zero bits of the mantissa
    return max(0, int((53 - ex.astype(np.int64) - tz)[nz].max()))


def dyadic_int64(a: np.ndarray):
    """(N, E) with a == N / 2**E exactly and N int64 (|N| < 2**62), or None."""
    if a.size == 0:
        return np.zeros(a.shape, dtype=np.int64), 0
    amax = float(max(np.max(a), -np.min(a)))
    top = math.frexp(amax)[1]            # amax < 2**top
    if amax > 0 and a.size > 8192 and np.isfinite(amax):
        # fast path: the least exponent of a sample is at most the least exponent of a; if a is
        # integral at the sample's, that one is the least for a as well
        flat = a.reshape(-1)
        e = _least_exponent(flat[:: max(1, flat.size // 4096)]) if np.any(flat[:: max(1, flat.size // 4096)]) else 0
        if top + e <= 62 and e <= 1000:
            y = a * (2.0 ** e)           # exact: a power-of-two scaling, |y| < 2**62
            if np.array_equal(np.floor(y), y):
                return y.astype(np.int64), e
    m, ex = np.frexp(a)
    mant = (m * 2.0 ** 53).astype(np.int64)  # exact: |m| < 1
    nz = mant != 0
    if not nz.any():
        return np.zeros(a.shape, dtype=np.int64), 0
    am = np.abs(mant)
    tz = np.frexp((am & -am).astype(np.float64))[1] - 1      # trailing zero bits of the mantissa
    e = max(0, int((53 - ex.astype(np.int64) - tz)[nz].max()))  # least e >= 0 making a * 2**e integral
    if top + e > 62 or e >= 1075:        # |N| would reach 2**62 (checked before scaling: no overflow)
        return None
    return np.ldexp(a, e).astype(np.int64), e


def _float_scaled_int(a: np.ndarray) -> tuple[np.ndarray, int]:
    """:func:`as_scaled_int` of a float64 array: mantissas shifted onto the smallest exponent."""
    if a.size == 0:
        return np.zeros(a.shape, dtype=object), 1
    fast = dyadic_int64(a)
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


def as_scaled_int(a: np.ndarray) -> tuple[np.ndarray, int]:
    """Exact integer form: returns ``(N, D)`` with ``a == N / D`` entry-wise, N an object
    array of Python ints and D a positive int (a power of two for float arrays)."""
    if a.dtype == np.float64:
        return _float_scaled_int(a)
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
        a = np.asarray(a)
        fast = dyadic_int64(a) if a.dtype == np.float64 else None
        if fast is not None:          # the same N and D as as_scaled_int, N built only when used
            self._N, self._int64, self.D = None, fast[0], 1 << fast[1]
        else:
            (self._N, self.D), self._int64 = as_scaled_int(a), None
        self.shape = a.shape
        self.N64 = None
        if a.size and self.shape[1] < (1 << 15):
            src = self._int64 if self._int64 is not None else self._N
            big = max(abs(int(v)) for v in (src.max(), src.min()))
            if big < (1 << 32):
                self.N64 = src.astype(np.int64, copy=False)

    @property
    def N(self) -> np.ndarray:
        if self._N is None:
            self._N = self._int64.astype(object)
        return self._N

    def _prod(self, M64, Mobj, xi: list[int], transpose: bool = False) -> list[int]:
        if M64 is None or not xi:
            if Mobj is None:
                Mobj = self.N.T if transpose else self.N
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
        return [Fraction(v, self.D * L) for v in self._prod(self.N64, None, xi)]

    def vm(self, y) -> list[Fraction]:
        """Exact y^T (N / D)."""
        yi, L = self._ints([Fraction(v) for v in y])
        NT64 = None if self.N64 is None else np.ascontiguousarray(self.N64.T)
        return [Fraction(v, self.D * L) for v in self._prod(NT64, None, yi, transpose=True)]


# --------------------------------------------------------------------------- writing

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


def array_to_json(a: np.ndarray):
    """Nested lists: float64 arrays as JSON numbers, exact arrays through :func:`number_to_json`."""
    if a.dtype == np.float64:
        return a.tolist()
    return np.vectorize(number_to_json, otypes=[object])(a).tolist() if a.size else a.tolist()


# --------------------------------------------------------------------------- BLAS threads

def _openblas_controls():
    """(get, set) of the OpenBLAS bundled with numpy, or None (another BLAS, not found)."""
    import ctypes
    import glob
    import os
    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in glob.glob(os.path.join(libs, "*openblas*.so*")):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get, put in (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                         ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                         ("openblas_get_num_threads", "openblas_set_num_threads")):
            if hasattr(lib, get) and hasattr(lib, put):
                g, s = getattr(lib, get), getattr(lib, put)
                g.restype, s.argtypes = ctypes.c_int, [ctypes.c_int]
                return g, s
    return None


class blas_threads:
    """``with blas_threads(1):`` runs numpy's float linear algebra on that many BLAS threads.

    The solves and factorizations here are of size d (a few hundred to a few thousand): a
    threaded LU on a 2-core machine whose other core is busy waits for it and runs about ten
    times slower than one thread.  Best effort: without a bundled OpenBLAS it does nothing."""

    def __init__(self, n: int = 1):
        self.n, self.old, self.ctl = n, None, None

    def __enter__(self):
        try:
            self.ctl = _openblas_controls()
            if self.ctl is not None:
                self.old = self.ctl[0]()
                self.ctl[1](self.n)
        except Exception:   # a BLAS control that misbehaves only costs speed
            self.ctl = None
        return self

    def __exit__(self, *exc):
        if self.ctl is not None and self.old:
            try:
                self.ctl[1](self.old)
            except Exception:
                pass
        return False
