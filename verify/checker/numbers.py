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
           "is_prime", "dot", "EXP_ARG_LIMIT", "fields", "fmt"]

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
    """An exact matrix as Python integers (numpy object array ``N``) over one denominator ``D``."""

    def __init__(self, N: np.ndarray, D: int):
        self.N, self.D = N, int(D)
        self.shape = N.shape

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
        """Exact value of a binary64 array."""
        a = np.asarray(a, dtype=np.float64)
        if a.ndim == 1:
            a = a.reshape(1, -1)
        if not np.all(np.isfinite(a)):
            raise Reject("non-finite weight in an array")
        m, e = np.frexp(a)
        mant = (m * 2.0 ** 53).astype(np.int64)      # exact: |m| < 1
        e = e.astype(np.int64) - 53
        nz = mant != 0
        if not np.any(nz):
            return Mat(np.zeros(a.shape, dtype=np.int64).astype(object), 1)
        emin = int(e[nz].min())
        shifts = np.where(nz, e - emin, 0)
        N = np.empty(a.shape, dtype=object)
        N.reshape(-1)[:] = [int(x) << int(sh) for x, sh in zip(mant.reshape(-1).tolist(), shifts.reshape(-1).tolist())]
        if emin >= 0:
            return Mat(N * (1 << emin), 1)
        # reduce the common power of two
        G = 0
        for v in N.reshape(-1):
            G = math.gcd(G, int(v))
        g = min((G & -G).bit_length() - 1, -emin)    # common factors of two, at most 2^-emin
        if g:
            N = N // (1 << g)
        return Mat(N, 1 << (-emin - g))

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
        L = 1
        for v in x:
            L = L * v.denominator // math.gcd(L, v.denominator)
        xi = np.empty(len(x), dtype=object)
        xi[:] = [v.numerator * (L // v.denominator) for v in x]
        r = self.N.dot(xi) if len(x) else np.zeros(self.shape[0], dtype=object)
        return [Fraction(int(v), self.D * L) for v in r]

    def vm(self, y: list[Fraction]) -> list[Fraction]:
        """y^T A."""
        if len(y) != self.shape[0]:
            raise Reject(f"vector-matrix product: a vector of size {len(y)} times {self.shape}")
        L = 1
        for v in y:
            L = L * v.denominator // math.gcd(L, v.denominator)
        yi = np.empty(len(y), dtype=object)
        yi[:] = [v.numerator * (L // v.denominator) for v in y]
        r = yi.dot(self.N) if len(y) else np.zeros(self.shape[1], dtype=object)
        return [Fraction(int(v), self.D * L) for v in r]

    def is_zero(self) -> bool:
        return not any(int(v) for v in self.N.reshape(-1))


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
