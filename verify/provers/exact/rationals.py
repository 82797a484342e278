"""Exact numbers: rational formatting, roots and rounding, exponential enclosures, logarithms.

Part of :mod:`verify.provers.exact` (the provers' one copy of exact arithmetic); floats only
propose (a logarithm), every returned bound is proved with integers and Fractions.
"""
from __future__ import annotations

import math
import sys
from fractions import Fraction
from functools import lru_cache
from typing import Iterable, Sequence

from constructions.forward import exp_enclosure as _exp_tight

__all__ = ["ZERO", "EXP_ARG_LIMIT", "ARG_BITS", "ONE_PAD", "MAX_DIGITS", "ExpRangeError", "fmt", "fmt_vec",
           "frac_vec", "dot", "sqrt_up", "sqrt_down", "norm2_up", "approx", "int_str", "z3_numeral", "exponent",
           "up_bits", "down_bits", "exp_enclosure", "exp_score", "exp_box", "log_below", "log_above"]

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
    e = exponent(q)
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


def exponent(q: Fraction) -> int:
    """e with 2^(e-1) <= |q| < 2^(e+1), roughly: the bit-length difference (q != 0)."""
    return abs(q.numerator).bit_length() - q.denominator.bit_length()


def up_bits(q, bits: int) -> Fraction:
    """q rounded up to about ``bits`` significant bits (exact zero stays zero)."""
    q = Fraction(q)
    if q == 0:
        return q
    g = Fraction(2) ** (exponent(q) - bits)
    return math.ceil(q / g) * g


def down_bits(q, bits: int) -> Fraction:
    """q rounded down to about ``bits`` significant bits."""
    q = Fraction(q)
    if q == 0:
        return q
    g = Fraction(2) ** (exponent(q) - bits)
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
    e = exponent(a)
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
