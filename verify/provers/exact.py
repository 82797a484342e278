"""The producers' exact arithmetic: rational formatting, roots, logarithms, exponential
enclosures, norm bounds, positive-definiteness and exact linear solves.

One copy for the provers.  The trusted checker keeps its own, deliberately separate copy
(``verify/checker/numbers.py``); where a prover must predict what the checker will accept (the
MLP norm bound, the exponential enclosures of attention scores) the functions here follow the
checker's documented rules, and the prover then submits its result to the checker anyway.

Floats only *propose* (a singular value, a logarithm); every returned bound is proved with
Python integers and :class:`fractions.Fraction`.
"""
from __future__ import annotations

import math
import sys
from fractions import Fraction
from functools import lru_cache
from typing import Iterable, Optional, Sequence

import numpy as np

from constructions.forward import exp_enclosure as _exp_tight
from constructions.model import as_float, as_scaled_int

__all__ = ["ZERO", "EXP_ARG_LIMIT", "ExpRangeError", "fmt", "fmt_vec", "frac_vec", "dot", "sqrt_up",
           "sqrt_down", "norm2_up", "approx", "int_str", "z3_numeral", "up_bits", "down_bits", "exp_enclosure", "exp_score", "exp_box", "log_below",
           "log_above", "positive_definite", "norm_bound", "solve", "left_null_basis",
           "project_onto_span"]

ZERO = Fraction(0)
#: |s| above which the checker refuses exp(s); the producers refuse it too (never guessed)
EXP_ARG_LIMIT = 1 << 16
#: the checker rounds exponential arguments outward to this absolute grid (bits)
ARG_BITS = 128
#: relative widening that makes a producer's enclosure contain the checker's
_WIDEN = Fraction(1, 1 << 96)
#: below this argument a solver box for exp is [0, 2^-_TINY_BITS] (keeps solver constants short)
_TINY_ARG = -2000
_TINY_BITS = 2880          # 2^-2880 > exp(-2000) (= 2^-2885.4)
#: largest argument whose exp a solver box may hold (2^1443: 435 digits)
_BOX_ARG_LIMIT = 1000


class ExpRangeError(ValueError):
    """An exponential argument beyond what the checker encloses (|s| > EXP_ARG_LIMIT), or beyond
    what a solver constant can hold."""


# --------------------------------------------------------------------------- formatting

#: decimal digits beyond which a number is refused rather than written (a million digits)
MAX_DIGITS = 1_000_000


def int_str(n: int) -> str:
    """Decimal digits of an integer of any size up to MAX_DIGITS.  Python refuses int -> str past
    4300 digits (a guard against parsing untrusted text); numbers the provers computed themselves
    are written anyway, and one beyond MAX_DIGITS raises OverflowError."""
    if n.bit_length() <= 14000:
        return str(n)
    if n.bit_length() > 3.33 * MAX_DIGITS:
        raise OverflowError(f"a number of {n.bit_length()} bits is too large to write")
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return str(n)
    finally:
        sys.set_int_max_str_digits(old)


def fmt(q) -> str:
    """The exact string form used in result files: ``"p"`` or ``"p/q"``."""
    q = Fraction(q)
    return int_str(q.numerator) if q.denominator == 1 else f"{int_str(q.numerator)}/{int_str(q.denominator)}"


def z3_numeral(q) -> str:
    """A rational as a solver numeral string (``"p/q"``, any size up to MAX_DIGITS)."""
    q = Fraction(q)
    return f"{int_str(q.numerator)}/{int_str(q.denominator)}"


def fmt_vec(v: Iterable) -> list[str]:
    return [fmt(x) for x in v]


def frac_vec(v) -> list[Fraction]:
    """A list of Fractions from a sequence or array of exact numbers (floats: their exact value)."""
    items = v.tolist() if hasattr(v, "tolist") else v
    return [x if isinstance(x, Fraction) else Fraction(x) for x in items]


def approx(q) -> str:
    """A short decimal form of a rational of any size, for messages (never overflows)."""
    q = Fraction(q)
    if q == 0 or abs(q) < Fraction(10) ** 300 and abs(q) > Fraction(1, 10 ** 300):
        return f"{float(q):.4g}"
    e = _exponent(q)
    return f"{'-' if q < 0 else ''}~2^{e}"


def dot(a: Sequence[Fraction], b: Sequence[Fraction]) -> Fraction:
    return sum((x * y for x, y in zip(a, b)), ZERO)


# --------------------------------------------------------------------------- roots and rounding

def sqrt_up(q, bits: int = 64) -> Fraction:
    """The least point of the 2^-bits grid that is >= sqrt(q); 0 for q <= 0."""
    q = Fraction(q)
    if q <= 0:
        return ZERO
    s = 1 << bits
    r = math.isqrt(q.numerator * s * s // q.denominator)
    while Fraction(r * r, s * s) < q:
        r += 1
    return Fraction(r, s)


def sqrt_down(q, bits: int = 64) -> Fraction:
    """The largest point of the 2^-bits grid that is <= sqrt(q); 0 for q <= 0."""
    q = Fraction(q)
    if q <= 0:
        return ZERO
    s = 1 << bits
    r = math.isqrt(q.numerator * s * s // q.denominator)
    while r > 0 and Fraction(r * r, s * s) > q:
        r -= 1
    return Fraction(r, s)


def norm2_up(v: Sequence[Fraction], bits: int = 64) -> Fraction:
    """The least point of the 2^-bits grid that is >= ||v||_2."""
    return sqrt_up(dot(v, v), bits)


def _exponent(q: Fraction) -> int:
    """e with 2^(e-1) <= |q| < 2^(e+1), roughly: the bit-length difference (q != 0)."""
    return abs(q.numerator).bit_length() - q.denominator.bit_length()


def up_bits(q, bits: int) -> Fraction:
    """q rounded up to about ``bits`` significant bits (exact zero stays zero)."""
    q = Fraction(q)
    if q == 0:
        return q
    g = Fraction(2) ** (_exponent(q) - bits)
    return math.ceil(q / g) * g


def down_bits(q, bits: int) -> Fraction:
    """q rounded down to about ``bits`` significant bits."""
    q = Fraction(q)
    if q == 0:
        return q
    g = Fraction(2) ** (_exponent(q) - bits)
    return math.floor(q / g) * g


# --------------------------------------------------------------------------- exponentials

@lru_cache(maxsize=1 << 16)
def exp_enclosure(s) -> tuple[Fraction, Fraction]:
    """Rigorous lo <= exp(s) <= hi (about 100 significant bits); |s| > EXP_ARG_LIMIT is refused
    (:class:`ExpRangeError`) instead of computing a number with millions of digits."""
    s = Fraction(s)
    if abs(s) > EXP_ARG_LIMIT:
        raise ExpRangeError(f"exp({approx(s)}): the argument is beyond the limit {EXP_ARG_LIMIT}")
    return _exp_tight(s)


@lru_cache(maxsize=1 << 16)
def exp_score(s) -> tuple[Fraction, Fraction]:
    """Enclosure of exp(s) that contains the checker's for the same attention score.

    Follows the checker's rules: the argument is rounded outward to a 2^-128 grid; below
    -EXP_ARG_LIMIT the enclosure is [0, exp(-EXP_ARG_LIMIT)]; above +EXP_ARG_LIMIT it is refused
    (:class:`ExpRangeError`).  The checker rounds values below 1 to an absolute 2^-200 grid after
    each of its at most 17 squarings, so its ends lie within 2^-182 (absolute) and 2^-182 (relative)
    of the true ones: the tight enclosure is widened by :func:`_pad` to contain it."""
    s = Fraction(s)
    g = Fraction(1, 1 << ARG_BITS)
    a_lo, a_hi = math.floor(s / g) * g, math.ceil(s / g) * g
    if a_hi > EXP_ARG_LIMIT:
        raise ExpRangeError(f"attention score {approx(s)} is beyond the checker's exponential range "
                            f"(|s| <= {EXP_ARG_LIMIT})")
    hi = _exp_tight(max(a_hi, Fraction(-EXP_ARG_LIMIT)))[1]
    lo = ZERO if a_lo < -EXP_ARG_LIMIT else _exp_tight(a_lo)[0]
    return _pad(lo, hi, ONE_PAD)


#: absolute slack of the checker's exponential enclosures (see :func:`exp_score`)
ONE_PAD = Fraction(1, 1 << 180)


def _pad(lo: Fraction, hi: Fraction, absolute: Fraction, bits: int = 110) -> tuple[Fraction, Fraction]:
    """[lo, hi] widened by 2^-96 relative and ``absolute``, rounded outward to ``bits`` bits."""
    lo = max(lo * (1 - _WIDEN) - absolute, ZERO)
    return down_bits(lo, bits), up_bits(hi * (1 + _WIDEN) + absolute, bits)


def exp_box(s, shift=ZERO) -> tuple[Fraction, Fraction]:
    """A short-rational box [L, H] containing exp(-shift) * (the checker's enclosure of exp(s)),
    for solver constants.

    The linear systems of relaxation R are homogeneous in (exponentials, alpha, pi), so a block
    may be solved with every exponential scaled by exp(-shift) (shift = its largest score): a
    Farkas vector for the scaled, wider box is one for the checker's box.  L and H carry 64
    significant bits; exp(t) for t < -2000 counts as 0; t > 1000, or an absolute slack
    exp(-shift) 2^-180 beyond 2^1000, is refused (:class:`ExpRangeError`)."""
    s, c = Fraction(s), Fraction(shift)
    if s > EXP_ARG_LIMIT:
        raise ExpRangeError(f"attention score {approx(s)} is beyond the checker's exponential range "
                            f"(|s| <= {EXP_ARG_LIMIT})")
    t_hi = max(s, Fraction(-EXP_ARG_LIMIT)) - c      # the checker's upper end sits at max(s, -LIMIT)
    if t_hi > _BOX_ARG_LIMIT or -c > _BOX_ARG_LIMIT:
        raise ExpRangeError(f"exp({approx(max(t_hi, -c))}) is too large for a solver constant "
                            f"(attention score {approx(s)}, shift {approx(c)})")
    absolute = ONE_PAD * (_exp_tight(-c)[1] if -c >= _TINY_ARG else ZERO)
    hi = _exp_tight(t_hi)[1] if t_hi >= _TINY_ARG else Fraction(1, 1 << _TINY_BITS)
    t_lo = s - c
    lo = ZERO if s < -EXP_ARG_LIMIT or t_lo < _TINY_ARG else _exp_tight(t_lo)[0]
    L, H = _pad(lo, hi, absolute + (Fraction(1, 1 << _TINY_BITS) if -c < _TINY_ARG else ZERO), 64)
    return L, H


# --------------------------------------------------------------------------- logarithms

def _log_float(a: Fraction) -> float:
    """log(a) in floats without overflow (a > 0)."""
    e = _exponent(a)
    return math.log(float(a / Fraction(2) ** e)) + e * math.log(2)


def log_below(a, grid_bits: int = 80) -> Fraction:
    """A rational l <= log(a) on a 2^-grid_bits grid, proved by exp(l) <= a (a > 0)."""
    a = Fraction(a)
    if a <= 0:
        raise ValueError(f"log of a non-positive number {a}")
    g = Fraction(1, 1 << grid_bits)
    step = Fraction(1, 1 << 40)
    f = _log_float(a)
    l_ = math.floor(Fraction(f - 2.0 ** -40 * (1 + abs(f))) / g) * g
    while _exp_tight(l_)[1] > a:
        l_ -= step
    return l_


def log_above(a, grid_bits: int = 80) -> Fraction:
    """A rational l >= log(a) on a 2^-grid_bits grid, proved by exp(l) >= a (a > 0)."""
    a = Fraction(a)
    if a <= 0:
        raise ValueError(f"log of a non-positive number {a}")
    g = Fraction(1, 1 << grid_bits)
    step = Fraction(1, 1 << 40)
    f = _log_float(a)
    l_ = math.ceil(Fraction(f + 2.0 ** -40 * (1 + abs(f))) / g) * g
    while _exp_tight(l_)[0] < a:
        l_ += step
    return l_


# --------------------------------------------------------------------------- norms

def positive_definite(A: Sequence[Sequence]) -> bool:
    """Exact test that the symmetric rational (or integer) matrix A, given by rows, is positive
    definite: Sylvester's criterion, the leading principal minors being the pivots of fraction-free
    (Bareiss) elimination on A scaled to integers (every division is exact)."""
    n = len(A)
    if not all(type(v) is int for row in A for v in row):
        L = math.lcm(*[Fraction(v).denominator for row in A for v in row])
        A = [[int(Fraction(v) * L) for v in row] for row in A]
    M = np.array(A, dtype=object).reshape(n, n)
    prev = 1
    for k in range(n):
        p = M[k, k]
        if p <= 0:
            return False
        if k + 1 < n:
            M[k + 1:, k + 1:] = (M[k + 1:, k + 1:] * p - np.outer(M[k + 1:, k], M[k, k + 1:])) // prev
        prev = p
    return True


def _gram_ok(N: np.ndarray, D: int, b: Fraction) -> bool:
    """Is b^2 I - W^T W (or W W^T, the smaller) positive definite?  W = N / D, exactly: the test
    runs on (p D)^2 I - q^2 N^T N for b = p / q, the same matrix times q^2 D^2 > 0."""
    R = [[int(v) for v in row] for row in N]
    if N.shape[1] > N.shape[0]:
        R = [list(c) for c in zip(*R)]
    n = len(R[0])
    s, c = (b.numerator * D) ** 2, b.denominator ** 2
    G = [[(s if i == j else 0) - c * sum(R[k][i] * R[k][j] for k in range(len(R))) for j in range(n)]
         for i in range(n)]
    return positive_definite(G)


def norm_bound(W: np.ndarray, exact_max: int = 48) -> tuple[Fraction, str]:
    """A rigorous rational upper bound on ||W||_2 and the name of the method that gave it.

    The smaller of sqrt(||W||_1 ||W||_inf) and the Frobenius norm (exact integer arithmetic), and
    for small matrices a float singular value, rounded up to 24 bits with a little slack, proved
    by an exact test that b^2 I - W^T W is positive definite (method name "gram-ldl", as the
    checker's).  This is the rule the checker uses to derive the MLP's Lipschitz bound k, so a
    prover that uses it predicts the checker's k."""
    N, D = as_scaled_int(np.asarray(W))
    if N.size == 0 or not any(int(v) for v in N.reshape(-1)):
        return ZERO, "zero"
    A = np.abs(N)
    n1 = max(int(v) for v in A.sum(axis=0))
    ninf = max(int(v) for v in A.sum(axis=1))
    fro = sum(int(v) * int(v) for v in N.reshape(-1))
    best = min((sqrt_up(Fraction(n1 * ninf, D * D)), "l1-linf"), (sqrt_up(Fraction(fro, D * D)), "frobenius"),
               key=lambda c: c[0])
    if min(N.shape) > exact_max:
        return best
    try:
        with np.errstate(all="ignore"):
            Wf = as_float(np.asarray(W))
            smax = float(np.linalg.svd(Wf, compute_uv=False).max()) if np.all(np.isfinite(Wf)) else math.inf
    except np.linalg.LinAlgError:
        return best
    if not math.isfinite(smax) or smax <= 0:
        return best
    def holds(b: Fraction) -> bool:      # the checker's test: any of the three bounds
        bb = b * b * D * D
        return n1 * ninf <= bb or fro <= bb or _gram_ok(N, D, b)
    b = _grid_min(holds, Fraction(smax), 24)
    if b is not None and b < best[0]:
        return b, "gram-ldl"
    return best


def _grid_min(holds, start: Fraction, bits: int, max_steps: int = 64) -> Optional[Fraction]:
    """The smallest point of the ``bits``-significant-bit grid where the monotone test ``holds``,
    stepping from ``start`` rounded up (the checker's canonical norm bound, found the same way)."""
    b = up_bits(start, bits)
    ok = holds(b)
    for _ in range(max_steps):
        g = Fraction(2) ** (_exponent(b) - bits)
        if not ok:
            nxt = up_bits(b + g, bits)
        else:
            nxt = up_bits(b - (g / 2 if b - g < Fraction(2) ** _exponent(b) else g), bits)
        nxt_ok = holds(nxt)
        if ok and not nxt_ok:
            return b
        if not ok and nxt_ok:
            return nxt
        b, ok = nxt, nxt_ok
    return None


# --------------------------------------------------------------------------- exact linear algebra

def _int_rows(A: list[list[Fraction]]) -> list[list[int]]:
    """Each row scaled by the lcm of its denominators (the row space is unchanged)."""
    out = []
    for row in A:
        L = math.lcm(*[Fraction(v).denominator for v in row]) if row else 1
        out.append([int(Fraction(v) * L) for v in row])
    return out


def _echelon(R: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """Fraction-free (Bareiss) row echelon form of an integer matrix (in place): every division is
    exact and entries stay minors of the input.  Returns the nonzero rows and their pivot columns."""
    rows = len(R)
    cols = len(R[0]) if R else 0
    piv, r, prev = [], 0, 1
    for c in range(cols):
        p = next((i for i in range(r, rows) if R[i][c] != 0), None)
        if p is None:
            continue
        R[r], R[p] = R[p], R[r]
        pr, a = R[r], R[r][c]
        for i in range(r + 1, rows):
            b = R[i][c]
            R[i] = [(a * x - b * y) // prev for x, y in zip(R[i], pr)]
        prev = a
        piv.append(c)
        r += 1
        if r == rows:
            break
    return R[:r], piv


def _null_int(A: list[list[int]], n: int) -> list[list[Fraction]]:
    """Basis of {x : A x = 0} (A integer, n columns), as coprime integer vectors.  With D the last
    Bareiss pivot (+-det of the pivot minor), D x is integral (Cramer), so the back-substitution
    runs in integers with exact divisions."""
    U, piv = _echelon([row[:] for row in A])
    out, pset = [], set(piv)
    D = U[-1][piv[-1]] if piv else 1
    for f in (c for c in range(n) if c not in pset):
        x = [0] * n
        x[f] = D
        for k in range(len(piv) - 1, -1, -1):
            row, c = U[k], piv[k]
            q, rem = divmod(-sum(row[j] * x[j] for j in range(c + 1, n) if x[j]), row[c])
            if rem:
                raise ArithmeticError("fraction-free back-substitution: inexact division")
            x[c] = q
        g = math.gcd(*x) or 1
        out.append([Fraction(v // g) for v in x])
    return out


_PRIME = 2147483629


def _rows_independent_mod_p(A: list[list[int]], n: int) -> list[int]:
    """Indices of rows of the integer matrix A that are linearly independent modulo a prime (then
    also over Q); as many as the rank of A mod p."""
    M = np.array([[v % _PRIME for v in row] for row in A], dtype=np.int64).reshape(len(A), n)
    basis: list = []                   # (pivot column, reduced row)
    chosen = []
    for i in range(M.shape[0]):
        v = M[i].copy()
        for c, b in basis:
            if v[c]:
                v = (v - (v[c] * b) % _PRIME) % _PRIME
        nz = np.nonzero(v)[0]
        if nz.size:
            c = int(nz[0])
            v = (v * pow(int(v[c]), _PRIME - 2, _PRIME)) % _PRIME
            basis.append((c, v))
            chosen.append(i)
            if len(chosen) == n:
                break
    return chosen


def solve(A: list[list[Fraction]], b: Sequence[Fraction]) -> Optional[list[Fraction]]:
    """One exact solution x of A x = b (free variables set to 0), or None when there is none."""
    if not A:
        return None
    n = len(A[0])
    U, piv = _echelon(_int_rows([list(row) + [Fraction(v)] for row, v in zip(A, b)]))
    if n in piv:
        return None                      # a row 0 = nonzero
    x = [ZERO] * n
    for k in range(len(piv) - 1, -1, -1):
        row, c = U[k], piv[k]
        x[c] = (row[n] - sum((row[j] * x[j] for j in range(c + 1, n) if x[j]), ZERO)) / row[c]
    return x


def left_null_basis(A: list[list[Fraction]], d: Optional[int] = None) -> list[list[Fraction]]:
    """A basis of {phi : phi^T A = 0} for a rational d x n matrix A (rows as lists), each vector
    scaled to coprime integers.  An empty A (n = 0) gives the standard basis of R^d.

    The equations phi^T a_j = 0 (one per column a_j) are first thinned to a set independent modulo
    a prime; rank d there means rank d over Q (no phi).  The basis from the thinned set is checked
    against every equation, and recomputed from all of them if the thinning lost one."""
    d = len(A) if d is None else d
    if not A or not A[0]:
        return [[Fraction(int(i == k)) for k in range(d)] for i in range(d)]
    eqs = _int_rows([list(col) for col in zip(*A)])       # n x d
    sel = _rows_independent_mod_p(eqs, d)
    if len(sel) == d:
        return []
    basis = _null_int([eqs[i] for i in sel], d)
    if all(not sum(int(p) * v for p, v in zip(phi, row)) for phi in basis for row in eqs):
        return basis
    return _null_int(eqs, d)


def project_onto_span(basis: list[list[Fraction]], c: Sequence[Fraction]) -> Optional[list[Fraction]]:
    """The orthogonal projection of c onto span(basis), exactly (None if the basis is empty or
    the Gram system is singular)."""
    if not basis:
        return None
    G = [[dot(u, v) for v in basis] for u in basis]
    a = solve(G, [dot(u, c) for u in basis])
    if a is None:
        return None
    return [sum((a[k] * basis[k][i] for k in range(len(basis))), ZERO) for i in range(len(c))]
