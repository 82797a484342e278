"""The checker's own exact arithmetic: strict number parsing, rigorous roots, exponentials and
logarithms, exact matrices, norm and rank tests.

Deliberately separate from the producers' arithmetic (``verify/provers/exact/``): the trusted
base shares no code with what it checks.  Everything here is Python integers and
``fractions.Fraction``; numpy is used only for object arrays of Python integers (no overflow) and
for reading binary64 arrays, which are converted exactly.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

__all__ = ["Reject", "rat", "nonneg", "positive", "integer", "vector", "matrix", "sqrt_up", "sqrt_down",
           "exp_bounds", "log_upper_ok", "log_lower_ok", "Mat", "norm_bound_holds", "det_mod_p_nonzero",
           "is_prime", "dot", "EXP_ARG_LIMIT", "fields", "fmt", "LIMB_MIN_SIZE", "one_blas_thread"]

#: |s| above which exp(s) is not enclosed (the check is refused, never guessed)
EXP_ARG_LIMIT = 1 << 16
#: longest rational string accepted (digits of numerator and denominator together)
MAX_RATIONAL_CHARS = 20000


class Reject(Exception):
    """The result does not hold, or is malformed; the message says where and why."""


# --------------------------------------------------------------------------- parsing

def rat(v, where: str) -> Fraction:
    """An exact rational from a JSON value: an int, a finite binary64 float (its exact value), or
    a string such as ``"3/8"``, ``"-2"``, ``"0.125"``.  Anything else is rejected."""
    if isinstance(v, bool) or v is None:
        raise Reject(f"{where}: expected a number, found {v!r}")
    if isinstance(v, int):
        return Fraction(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise Reject(f"{where}: expected a finite number, found {v!r}")
        return Fraction(v)
    if isinstance(v, str):
        if len(v) > MAX_RATIONAL_CHARS:
            raise Reject(f"{where}: rational string longer than {MAX_RATIONAL_CHARS} characters")
        s = v.strip().lower()
        if any(w in s for w in ("nan", "inf", "e")) and not _is_decimal_exp(s):
            raise Reject(f"{where}: expected an exact rational string, found {v[:40]!r}")
        try:
            return Fraction(s)
        except (ValueError, ZeroDivisionError):
            raise Reject(f"{where}: expected an exact rational string, found {v[:40]!r}") from None
    raise Reject(f"{where}: expected a number, found {type(v).__name__}")


def _is_decimal_exp(s: str) -> bool:
    """'1e-9'-style decimals are exact rationals too; exponents are bounded."""
    if "nan" in s or "inf" in s:
        return False
    mant, _, ex = s.partition("e")
    try:
        return bool(mant) and abs(int(ex)) <= 400 and "/" not in s
    except ValueError:
        return False


def nonneg(v, where: str) -> Fraction:
    q = rat(v, where)
    if q < 0:
        raise Reject(f"{where}: expected a number >= 0, found {q}")
    return q


def positive(v, where: str) -> Fraction:
    q = rat(v, where)
    if q <= 0:
        raise Reject(f"{where}: expected a number > 0, found {q}")
    return q


def integer(v, where: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise Reject(f"{where}: expected an integer, found {v!r}"[:200])
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise Reject(f"{where}: expected an integer in [{lo}, {hi}], found {v}")
    return v


def vector(v, where: str, n: int | None = None) -> list[Fraction]:
    if not isinstance(v, list):
        raise Reject(f"{where}: expected a list of numbers, found {type(v).__name__}")
    if n is not None and len(v) != n:
        raise Reject(f"{where}: expected {n} entries, found {len(v)}")
    return [rat(x, f"{where}[{i}]") for i, x in enumerate(v)]


def matrix(v, where: str, rows: int | None = None, cols: int | None = None) -> list[list[Fraction]]:
    if not isinstance(v, list):
        raise Reject(f"{where}: expected a list of rows, found {type(v).__name__}")
    if rows is not None and len(v) != rows:
        raise Reject(f"{where}: expected {rows} rows, found {len(v)}")
    out = [vector(r, f"{where}[{i}]", cols) for i, r in enumerate(v)]
    if out and cols is None and len({len(r) for r in out}) != 1:
        raise Reject(f"{where}: rows of different lengths")
    return out


def fields(obj, where: str, required: set | frozenset, optional: set | frozenset = frozenset()) -> dict:
    """Check that ``obj`` is a dict with exactly the required keys and perhaps the optional ones."""
    if not isinstance(obj, dict):
        raise Reject(f"{where}: expected an object, found {type(obj).__name__}")
    missing = set(required) - set(obj)
    if missing:
        raise Reject(f"{where}: missing field(s) {sorted(missing)}")
    unknown = set(obj) - set(required) - set(optional)
    if unknown:
        raise Reject(f"{where}: unknown field(s) {sorted(unknown)[:5]}")
    return obj


def fmt(q: Fraction) -> str:
    """The exact string form used in result files."""
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


# --------------------------------------------------------------------------- roots, exp, log

def sqrt_up(q: Fraction) -> Fraction:
    """A rational >= sqrt(q) (within 2^-64 relative-ish; exact zero for q <= 0)."""
    if q <= 0:
        return Fraction(0)
    s = 1 << 64
    r = math.isqrt(q.numerator * s * s // q.denominator)
    while Fraction(r * r, s * s) < q:
        r += 1
    return Fraction(r, s)


def sqrt_down(q: Fraction) -> Fraction:
    """A rational <= sqrt(q)."""
    if q <= 0:
        return Fraction(0)
    s = 1 << 64
    r = math.isqrt(q.numerator * s * s // q.denominator)
    while r > 0 and Fraction(r * r, s * s) > q:
        r -= 1
    return Fraction(r, s)


def exp_bounds(s: Fraction) -> tuple[Fraction, Fraction]:
    """Rigorous lo <= exp(s) <= hi.  exp(s) = exp(t)^(2^k) with t = s / 2^k in [-1/2, 1/2];
    exp(t) = sum_{m <= n} t^m / m! + R with |R| <= 2 |t|^(n+1) / n! (geometric tail, |t| <= 1/2);
    after each squaring lo is rounded down and hi up to multiples of 2^-200 (relative to the
    result's size, so large arguments stay cheap).  |s| > EXP_ARG_LIMIT is refused."""
    s = Fraction(s)
    if abs(s) > EXP_ARG_LIMIT:
        raise Reject(f"exponential argument {float(s):.3g} is beyond the checker's limit {EXP_ARG_LIMIT}")
    k, t = 0, s
    while abs(t) > Fraction(1, 2):
        t, k = t / 2, k + 1
    term, total, n = Fraction(1), Fraction(1), 0
    while True:
        n += 1
        term = term * t / n
        total += term
        if 2 * abs(term * t) < Fraction(1, 1 << 230):
            break
    rem = 2 * abs(term * t)
    lo, hi = _round(total - rem, False), _round(total + rem, True)
    lo = max(lo, Fraction(0))
    for _ in range(k):
        lo, hi = _round(lo * lo, False), _round(hi * hi, True)
    return lo, hi


def _round(q: Fraction, up: bool, bits: int = 200) -> Fraction:
    """Round q to about ``bits`` significant bits, down or up."""
    if q == 0:
        return q
    e = max(q.numerator.bit_length() - q.denominator.bit_length(), 0)
    grid = Fraction(1 << bits, 1 << e) if e <= bits else Fraction(1, 1 << (e - bits))
    v = q * grid
    n = math.ceil(v) if up else math.floor(v)
    return n / grid


def log_upper_ok(x: Fraction, claimed: Fraction) -> bool:
    """Is ``claimed`` >= log(x)?  (x > 0; i.e. exp(claimed) >= x.)"""
    return x > 0 and exp_bounds(claimed)[0] >= x


def log_lower_ok(x: Fraction, claimed: Fraction) -> bool:
    """Is ``claimed`` <= log(x)?  (x > 0; i.e. exp(claimed) <= x.)"""
    return x > 0 and exp_bounds(claimed)[1] <= x


def dot(a, b) -> Fraction:
    return sum((x * y for x, y in zip(a, b)), Fraction(0))


# --------------------------------------------------------------------------- exact matrices

class Mat:
    """An exact matrix as Python integers (numpy object array ``N``) over one denominator ``D``.

    A matrix read from binary64 values also keeps them (``F``) with their exact decomposition
    ``N = sign * odd << shift`` (int64 arrays): ``N`` is then built only when first used, and
    products with vectors run on 24-bit limbs in int64 (:func:`_limb_product`), exact and without
    a Python integer per entry."""

    def __init__(self, N, D: int, F: np.ndarray | None = None, parts=None):
        self._N, self.D = N, int(D)
        self.F, self._parts = F, parts
        self.shape = N.shape if N is not None else F.shape

    @property
    def N(self) -> np.ndarray:
        if self._N is None:
            sgn, odd, shift = self._parts
            pow2 = np.array([1 << int(s) for s in range(int(shift.max(initial=0)) + 1)], dtype=object)
            self._N = (sgn * odd).astype(object) * pow2[shift]
        return self._N

    @staticmethod
    def from_fractions(rows: list[list[Fraction]], ncols: int | None = None) -> "Mat":
        D = 1
        for row in rows:
            for v in row:
                D = D * v.denominator // math.gcd(D, v.denominator)
        N = np.empty((len(rows), len(rows[0]) if rows else (ncols or 0)), dtype=object)
        for i, row in enumerate(rows):
            N[i, :] = [v.numerator * (D // v.denominator) for v in row]
        return Mat(N, D)

    @staticmethod
    def from_float(a: np.ndarray) -> "Mat":
        """Exact value of a binary64 array: each entry is sign * odd * 2^e exactly (``frexp``
        then integers), and with ``emin`` the least e, N = sign * odd * 2^(e - min(emin, 0)),
        D = 2^max(-emin, 0): the least power-of-two denominator."""
        a = np.ascontiguousarray(a, dtype=np.float64)
        if a.ndim == 1:
            a = a.reshape(1, -1)
        if not np.all(np.isfinite(a)):
            raise Reject("non-finite weight in an array")
        sgn, odd, ex = _decompose(a)
        nz = odd != 0
        if not np.any(nz):
            return Mat(np.zeros(a.shape, dtype=np.int64).astype(object), 1)
        base = min(int(ex.min(where=nz, initial=1 << 14)), 0)
        ex -= base                                   # int16: exponents lie in [-1126, 1023]
        np.putmask(ex, ~nz, 0)
        return Mat(None, 1 << -base, F=a, parts=(sgn, odd, ex))

    def entry(self, i: int, j: int) -> Fraction:
        return Fraction(int(self.N[i, j]), self.D)

    def col(self, j: int) -> list[Fraction]:
        return [Fraction(int(v), self.D) for v in self.N[:, j]]

    def rows(self) -> list[list[Fraction]]:
        return [[Fraction(int(v), self.D) for v in row] for row in self.N]

    def mv(self, x: list[Fraction]) -> list[Fraction]:
        """A x."""
        if len(x) != self.shape[1]:
            raise Reject(f"matrix-vector product: {self.shape} times a vector of size {len(x)}")
        return self.mv_many([x])[0]

    def mv_many(self, xs: list[list[Fraction]]) -> list[list[Fraction]]:
        """[A x for x in xs], exactly (one pass over the matrix for all of them)."""
        return self._products(xs, transpose=False)

    def vm(self, y: list[Fraction]) -> list[Fraction]:
        """y^T A."""
        if len(y) != self.shape[0]:
            raise Reject(f"vector-matrix product: a vector of size {len(y)} times {self.shape}")
        return self._products([y], transpose=True)[0]

    def _products(self, xs: list, transpose: bool) -> list[list[Fraction]]:
        n = self.shape[0] if transpose else self.shape[1]
        ints, dens = [], []
        for x in xs:
            if len(x) != n:
                raise Reject(f"matrix-vector product: {self.shape} times a vector of size {len(x)}")
            L = 1
            for v in x:
                L = L * v.denominator // math.gcd(L, v.denominator)
            ints.append([v.numerator * (L // v.denominator) for v in x])
            dens.append(L)
        if not xs:
            return []
        if n == 0:
            rows = [[0] * (self.shape[1] if transpose else self.shape[0]) for _ in xs]
        elif self._parts is not None and self.F.size >= LIMB_MIN_SIZE:
            rows = _limb_product(self._parts, ints, transpose, self.F, self.D)
        else:
            X = np.empty((n, len(xs)), dtype=object)
            for c, xi in enumerate(ints):
                X[:, c] = xi
            R = (self.N.T if transpose else self.N).dot(X)
            rows = [R[:, c].tolist() for c in range(len(xs))]
        return [[Fraction(int(v), self.D * L) for v in r] for r, L in zip(rows, dens)]

    def is_zero(self) -> bool:
        if self._parts is not None:
            return not np.any(self._parts[1])
        return not any(int(v) for v in self.N.reshape(-1))


def _decompose(a: np.ndarray):
    """Per entry of a finite binary64 array: sign (int8), odd mantissa (int64, 0 for zeros) and
    the exponent of its lowest bit (int16), with a == sign * odd * 2^exponent exactly.  Works on
    blocks of 2^20 entries, so its temporaries stay small."""
    flat = a.reshape(-1)
    sgn = np.empty(flat.shape, dtype=np.int8)
    odd = np.empty(flat.shape, dtype=np.int64)
    ex = np.empty(flat.shape, dtype=np.int16)
    for i in range(0, flat.size, LIMB_CHUNK):
        m, e = np.frexp(flat[i:i + LIMB_CHUNK])
        m *= 2.0 ** 53                                   # exact: |m| < 1, a power-of-two scaling
        mant = m.astype(np.int64)
        sgn[i:i + LIMB_CHUNK] = np.sign(mant)
        np.abs(mant, out=mant)
        low = (mant & -mant).astype(np.float64)          # the lowest set bit, a power of two (exact)
        tz = (low.view(np.int64) >> 52) - 1023           # its exponent; -1023 for zero entries
        np.maximum(tz, 0, out=tz)
        odd[i:i + LIMB_CHUNK] = mant >> tz
        ex[i:i + LIMB_CHUNK] = e + tz - 53
    return sgn.reshape(a.shape), odd.reshape(a.shape), ex.reshape(a.shape)


#: matrices read from binary64 with at least this many entries use the int64 limb products
LIMB_MIN_SIZE = 4096
#: a limb product is refused (object arithmetic instead) beyond this many limbs per number
MAX_LIMBS = 48
#: matrix entries per row block of a limb product
LIMB_CHUNK = 1 << 20


def _limb_bits(n: int) -> int:
    """Limb width b such that a sum of n products of two b-bit limbs stays below 2^62 in int64."""
    return min(24, (62 - n.bit_length()) // 2)


def _int_limbs(vals: list[int], b: int) -> np.ndarray:
    """Signed b-bit limbs of Python integers: v = sum_l out[., l] 2^(b l), |out| < 2^b."""
    L = max(1, -(-max(abs(v).bit_length() for v in vals) // b))
    mask = (1 << b) - 1
    out = np.zeros((len(vals), L), dtype=np.int64)
    for i, v in enumerate(vals):
        a, s = abs(v), (-1 if v < 0 else 1)
        for l in range(L):
            if not a:
                break
            out[i, l] = s * (a & mask)
            a >>= b
    return out


def _mat_limb(parts, k: int, b: int) -> np.ndarray:
    """Limb k (bits [b k, b k + b)) of |N| = odd << shift, with N's sign, as int64."""
    sgn, odd, shift = parts
    u = odd.astype(np.uint64)
    r = b * k - shift.astype(np.int64)    # right shift when >= 0, else left shift by -r
    right = np.where((r >= 0) & (r < 64), u >> np.clip(r, 0, 63).astype(np.uint64), np.uint64(0))
    left = np.where((r < 0) & (r > -b), u << np.clip(-r, 0, 63).astype(np.uint64), np.uint64(0))
    limb = np.where(r >= 0, right, left) & np.uint64((1 << b) - 1)
    return sgn * limb.astype(np.int64)


def _float_limbs(G: np.ndarray, sgn: np.ndarray, b: int, K: int):
    """Limbs 0..K-1 of |N| (given exactly as the float array G of integers, each < 2^(b K)) with
    N's sign (``sgn``: -1, 0, 1), as float64 integers below 2^b in magnitude.  With F_k = floor(G / 2^(b k)) (exact: a power-of-two scaling, then floor
    of a float), limb k = F_k - 2^b F_(k+1), a difference of two floats within a factor of two of
    each other or with F_(k+1) = 0, hence exact (Sterbenz), and in [0, 2^b)."""
    two = float(1 << b)
    cur = G.copy()
    nxt = np.empty_like(G)
    for k in range(K):
        np.multiply(G, 2.0 ** (-b * (k + 1)), out=nxt)   # exact unless below 2^-1022 (then < 1)
        np.floor(nxt, out=nxt)
        cur -= two * nxt
        yield sgn * cur
        cur, nxt = nxt, cur


def _limb_product(parts, ints: list[list[int]], transpose: bool, F: np.ndarray | None = None,
                  D: int = 0) -> list[list[int]]:
    """N x for integer vectors x (columns of ``ints``), exactly: N and x split into b-bit signed
    limbs, every limb product a matrix product whose sums stay exact (int64: below 2^62; binary64
    from the matrix's float values: below 2^53), then recombined in Python integers.  Falls back to object arithmetic when the
    numbers need more than :data:`MAX_LIMBS` limbs."""
    sgn, odd, shift = (p.T if transpose else p for p in parts)
    n = odd.shape[1]
    # |N| = |F| D exactly as floats when every |N| < 2^1000: then the limbs come from the floats
    # and the limb products run in binary64 with b <= (53 - bitlength(n)) / 2, so that every
    # partial sum is an integer below n 2^(2b) <= 2^53 in magnitude (exact in any order)
    use_float = F is not None and D > 0 and 53 + int(shift.max(initial=0)) < 1000 and n.bit_length() <= 37
    b = min(_limb_bits(n), (53 - n.bit_length()) // 2) if use_float else _limb_bits(n)
    K = -(-(53 + int(shift.max(initial=0))) // b)
    flat = [v for xi in ints for v in xi]
    nb = max((abs(v).bit_length() for v in flat), default=0)
    if K > MAX_LIMBS or -(-nb // b) > MAX_LIMBS:
        pow2 = np.array([1 << int(s) for s in range(int(shift.max(initial=0)) + 1)], dtype=object)
        N = (sgn * odd).astype(object) * pow2[shift]
        X = np.array(ints, dtype=object).T
        R = N.dot(X)
        return [R[:, c].tolist() for c in range(len(ints))]
    cols = [_int_limbs(xi, b) for xi in ints]          # per vector: n x L_c
    Xl = np.concatenate(cols, axis=1)                    # n x sum L_c
    acc = np.zeros((odd.shape[0], Xl.shape[1]), dtype=object)
    step = max(1, LIMB_CHUNK // max(n, 1))               # rows at a time: bounded temporaries
    if use_float:
        F = F.T if transpose else F
        Xf = Xl.astype(np.float64)                       # |limbs| < 2^b: exact
    for r0 in range(0, odd.shape[0], step):
        part = (sgn[r0:r0 + step], odd[r0:r0 + step], shift[r0:r0 + step])
        if use_float:
            G = np.abs(F[r0:r0 + step]) * float(D)      # exact: a power-of-two scaling, no overflow
            for k, limb in enumerate(_float_limbs(G, part[0].astype(np.float64), b, K)):
                P = (limb @ Xf).astype(np.int64)            # |partial sums| < n 2^(2b) <= 2^53: exact
                acc[r0:r0 + step] += P.astype(object) * (1 << (b * k))
            continue
        for k in range(K):
            P = _mat_limb(part, k, b) @ Xl                  # |entries| < n 2^(2b) <= 2^62
            acc[r0:r0 + step] += P.astype(object) * (1 << (b * k))
    out, off = [], 0
    for C in cols:
        L = C.shape[1]
        w = np.array([1 << (b * l) for l in range(L)], dtype=object)
        out.append(acc[:, off:off + L].dot(w).tolist())
        off += L
    return out


def norm_bound_holds(W: Mat, b: Fraction, exact_max: int = 64) -> bool:
    """Is b >= ||W||_2?  Accepts b >= 0 with b^2 >= ||W||_1 ||W||_inf, or b^2 >= ||W||_F^2, or (small
    matrices) b^2 I - W^T W positive semidefinite by exact elimination."""
    if b < 0:
        return False
    if W.N.size == 0 or W.is_zero():
        return True
    A = np.abs(W.N)
    n1 = max(int(v) for v in A.sum(axis=0))
    ninf = max(int(v) for v in A.sum(axis=1))
    bb = b * b * W.D * W.D
    if n1 * ninf <= bb or sum(int(v) * int(v) for v in W.N.reshape(-1)) <= bb:
        return True
    if min(W.shape) > exact_max:
        return False
    R = W.rows()
    if W.shape[1] > W.shape[0]:
        R = [list(c) for c in zip(*R)]
    n = len(R[0])
    G = [[b * b * (i == j) - sum(R[k][i] * R[k][j] for k in range(len(R))) for j in range(n)] for i in range(n)]
    for c in range(n):  # strict positive definiteness (sufficient)
        if G[c][c] <= 0:
            return False
        for r in range(c + 1, n):
            f = G[r][c] / G[c][c]
            for j in range(c + 1, n):
                G[r][j] -= f * G[c][j]
    return True


def det_mod_p_nonzero(rows_int: list[list[int]], p: int) -> bool:
    """Is the square integer matrix nonsingular modulo the prime p (p < 2^31)?"""
    n = len(rows_int)
    if n == 0 or any(len(r) != n for r in rows_int) or not (2 <= p < 1 << 31):
        return False
    A = np.array([[v % p for v in row] for row in rows_int], dtype=np.int64)
    for c in range(n):
        nz = np.nonzero(A[c:, c])[0]
        if nz.size == 0:
            return False
        r = c + int(nz[0])
        A[[c, r]] = A[[r, c]]
        inv = pow(int(A[c, c]), p - 2, p)
        f = (A[c + 1:, c] * inv) % p
        A[c + 1:, c:] = (A[c + 1:, c:] - (f[:, None] * A[c, c:][None, :]) % p) % p
    return True


def is_prime(p: int) -> bool:
    """Deterministic Miller-Rabin for p < 3.3e24."""
    if p < 2:
        return False
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41):
        if p % a == 0:
            return p == a
    d, s = p - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41):
        x = pow(a, d, p)
        if x in (1, p - 1):
            continue
        for _ in range(s - 1):
            x = x * x % p
            if x == p - 1:
                break
        else:
            return False
    return True


# --------------------------------------------------------------------------- BLAS threads

class one_blas_thread:
    """``with one_blas_thread():`` runs numpy's float products on one OpenBLAS thread (a threaded
    product of this size on a 2-core machine with a busy core waits for it, several times slower).
    Only speed depends on it; without a bundled OpenBLAS it does nothing."""

    def __init__(self):
        self.ctl, self.old = None, 0

    def __enter__(self):
        try:
            import ctypes
            import glob
            import os
            libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
            for path in glob.glob(os.path.join(libs, "*openblas*.so*")):
                lib = ctypes.CDLL(path)
                for get, put in (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                                 ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                                 ("openblas_get_num_threads", "openblas_set_num_threads")):
                    if hasattr(lib, get) and hasattr(lib, put):
                        g, st = getattr(lib, get), getattr(lib, put)
                        g.restype, st.argtypes = ctypes.c_int, [ctypes.c_int]
                        self.old = g()
                        st(1)
                        self.ctl = st
                        return self
        except Exception:   # noqa: BLE001 - a thread control that misbehaves only costs speed
            self.ctl = None
        return self

    def __exit__(self, *exc):
        if self.ctl is not None and self.old > 0:
            try:
                self.ctl(self.old)
            except Exception:   # noqa: BLE001
                pass
        return False
