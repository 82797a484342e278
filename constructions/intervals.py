"""Rigorous interval arithmetic on rationals: :class:`Iv` and enclosures of ``exp``, ``sqrt``,
``tanh`` and ``erf`` (and through them GELU, both forms; proofs/real_layers_forward.md).

Intervals whose ends are equal stay exact rational points under ``+``, ``-``, ``*`` and ``/``;
other results are rounded outward on a grid of 2**-120 relative, so every enclosure is rigorous.
"""
from __future__ import annotations

import functools
import math
from fractions import Fraction

__all__ = ["Iv", "exp_enclosure", "EXP_LIMIT", "round_down", "round_up", "sqrt_enclosure", "tanh_enclosure",
           "erf_enclosure", "PI_LO", "PI_HI", "iv_sqrt", "iv_inv_sqrt", "iv_exp", "iv_tanh", "iv_erf",
           "iv_gelu", "iv_gelu_tanh", "GELU_TANH_KAPPA"]

_ROUND_BITS = 120  # outward rounding grid for intervals: 2**-120 relative


# --------------------------------------------------------------------------- intervals

def round_down(q: Fraction, bits: int = _ROUND_BITS) -> Fraction:
    """The largest multiple of a power of two near ``q``'s scale that is <= q (``q`` itself when
    its denominator is already small): about ``bits`` significant bits."""
    if q == 0 or q.denominator.bit_length() <= bits + 8:
        return q
    e = bits - (abs(q).numerator.bit_length() - q.denominator.bit_length())
    scale = 1 << e if e >= 0 else None
    if scale is not None:
        return Fraction(math.floor(q * scale), scale)
    s = 1 << (-e)
    return Fraction(math.floor(q / s) * s)


def round_up(q: Fraction, bits: int = _ROUND_BITS) -> Fraction:
    """The counterpart of :func:`round_down`: a grid point >= q."""
    return -round_down(-q, bits)


class Iv:
    """A closed interval [lo, hi] of rationals with outward-rounded arithmetic."""

    __slots__ = ("lo", "hi")

    def __init__(self, lo, hi=None):
        lo = Fraction(lo)
        hi = lo if hi is None else Fraction(hi)
        if lo > hi:
            raise ValueError(f"empty interval [{lo}, {hi}]")
        self.lo, self.hi = lo, hi

    @staticmethod
    def of(x) -> "Iv":
        return x if isinstance(x, Iv) else Iv(x)

    @property
    def is_point(self) -> bool:
        return self.lo == self.hi

    @property
    def mid(self) -> Fraction:
        return (self.lo + self.hi) / 2

    def width(self) -> Fraction:
        return self.hi - self.lo

    def __add__(self, o):
        o = Iv.of(o)
        if self.is_point and o.is_point:  # exact: points stay exact rationals
            return Iv(self.lo + o.lo)
        return Iv(round_down(self.lo + o.lo), round_up(self.hi + o.hi))

    __radd__ = __add__

    def __neg__(self):
        return Iv(-self.hi, -self.lo)

    def __sub__(self, o):
        return self + (-Iv.of(o))

    def __rsub__(self, o):
        return Iv.of(o) + (-self)

    def __mul__(self, o):
        o = Iv.of(o)
        if self.is_point and o.is_point:
            return Iv(self.lo * o.lo)
        c = [self.lo * o.lo, self.lo * o.hi, self.hi * o.lo, self.hi * o.hi]
        return Iv(round_down(min(c)), round_up(max(c)))

    __rmul__ = __mul__

    def __truediv__(self, o):
        o = Iv.of(o)
        if o.lo <= 0 <= o.hi:
            raise ZeroDivisionError("interval division by an interval containing 0")
        if o.is_point:
            return self * Iv(1 / o.lo)
        return self * Iv(round_down(1 / o.hi), round_up(1 / o.lo))

    def __rtruediv__(self, o):
        return Iv.of(o) / self

    def relu(self) -> "Iv":
        return Iv(max(self.lo, 0), max(self.hi, 0))

    def sqr(self) -> "Iv":
        """``{x * x : x in self}`` (never below 0, unlike ``self * self``)."""
        if self.is_point:
            return Iv(self.lo * self.lo)
        lo2, hi2 = self.lo * self.lo, self.hi * self.hi
        lo = 0 if self.lo <= 0 <= self.hi else min(lo2, hi2)
        return Iv(round_down(Fraction(lo)), round_up(max(lo2, hi2)))

    def contains(self, x) -> bool:
        return self.lo <= Fraction(x) <= self.hi

    def __repr__(self):
        return f"Iv({float(self.lo):.17g}, {float(self.hi):.17g})"


#: |s| beyond which exp(s) is not computed: exp(-s) for s below -EXP_LIMIT is enclosed by
#: [0, exp(-EXP_LIMIT)], and s above +EXP_LIMIT raises :class:`OverflowError` (its digits alone
#: would take megabytes; a score that large also lies beyond the trusted checker's limit)
EXP_LIMIT = 1 << 16


def exp_enclosure(s: Fraction, bits: int = 100) -> tuple[Fraction, Fraction]:
    """Rigorous rational bounds ``lo <= exp(s) <= hi`` for a rational ``s``.

    exp(s) = exp(s / 2^k)^(2^k) with |s / 2^k| <= 1/2, the inner value bounded by its Taylor
    polynomial and the Lagrange remainder (|R_N| <= |t|^N / N! * e^{1/2} < 2 |t|^N / N!).
    Arguments below -EXP_LIMIT give [0, exp(-EXP_LIMIT)]; above +EXP_LIMIT, OverflowError."""
    s = Fraction(s)
    if s == 0:
        return Fraction(1), Fraction(1)
    if s > EXP_LIMIT:
        raise OverflowError(f"exp({float(s):.4g}): argument beyond {EXP_LIMIT}")
    if s < -EXP_LIMIT:
        return Fraction(0), exp_enclosure(Fraction(-EXP_LIMIT), bits)[1]
    k = 0
    t = s
    while abs(t) > Fraction(1, 2):
        t /= 2
        k += 1
    term, total, n = Fraction(1), Fraction(1), 0
    eps = Fraction(1, 1 << (bits + 2 * k + 8))
    while True:
        n += 1
        term = term * t / n
        total += term
        if abs(term) * abs(t) * 2 < eps:  # bound on the remainder after this term
            rem = abs(term * t) * 2
            break
    lo, hi = round_down(total - rem, bits + 2 * k + 8), round_up(total + rem, bits + 2 * k + 8)
    lo = max(lo, Fraction(0))
    for _ in range(k):
        lo, hi = round_down(lo * lo, bits + 2 * k + 8), round_up(hi * hi, bits + 2 * k + 8)
    if lo <= 0:
        lo = Fraction(0)
    return round_down(lo, bits), round_up(hi, bits)


# --------------------------------------------------------------------------- sqrt, tanh, erf

#: rigorous rational bounds on pi (its first 60 decimals, truncated, and that plus 10**-60)
PI_LO = Fraction("3.141592653589793238462643383279502884197169399375105820974944")
PI_HI = PI_LO + Fraction(1, 10 ** 60)


def _is_square(n: int) -> bool:
    return n >= 0 and math.isqrt(n) ** 2 == n


def sqrt_enclosure(q, bits: int = 110) -> tuple[Fraction, Fraction]:
    """Rational bounds ``lo <= sqrt(q) <= hi`` (q >= 0) from integer square roots; exact when q
    is the square of a rational."""
    q = Fraction(q)
    if q < 0:
        raise ValueError(f"sqrt of a negative number {float(q):.4g}")
    if _is_square(q.numerator) and _is_square(q.denominator):
        r = Fraction(math.isqrt(q.numerator), math.isqrt(q.denominator))
        return r, r
    p = bits - (q.numerator.bit_length() - q.denominator.bit_length()) // 2 + 2
    scale = Fraction(4) ** p
    lo_int = math.isqrt(math.floor(q * scale))  # lo_int**2 <= q * 4**p
    hi_int = math.isqrt(math.ceil(q * scale)) + 1  # hi_int**2 > q * 4**p
    unit = Fraction(2) ** -p
    return lo_int * unit, hi_int * unit


def iv_sqrt(x: Iv) -> Iv:
    """sqrt over an interval (sqrt is increasing); the interval must not reach below 0."""
    if x.lo < 0:
        raise ValueError(f"sqrt of an interval reaching {float(x.lo):.4g} < 0")
    lo, _ = sqrt_enclosure(x.lo)
    if x.is_point:
        return Iv(lo, sqrt_enclosure(x.lo)[1])
    return Iv(lo, sqrt_enclosure(x.hi)[1])


def iv_inv_sqrt(x: Iv) -> Iv:
    """``1 / sqrt(x)`` over an interval of positive numbers."""
    return Iv(1) / iv_sqrt(x)


def iv_exp(x: Iv) -> Iv:
    """exp over an interval (increasing)."""
    lo, hi = exp_enclosure(x.lo)
    if not x.is_point:
        hi = exp_enclosure(x.hi)[1]
    return Iv(lo, hi)


#: beyond this argument tanh is enclosed by [tanh(_TANH_CLAMP), 1] and erf by [erf(_ERF_CLAMP), 1]
_TANH_CLAMP = 64
_ERF_CLAMP = 8


def _exp_fixed(x: Fraction, p: int) -> tuple[int, int]:
    """``(L, H)`` with ``L / 2**p <= exp(x) <= H / 2**p`` for ``0 <= x <= 2 * _TANH_CLAMP``, in
    integers: x = t 2**k with t <= 1/2; exp(t) between the Taylor sums of rounded-down terms
    (all positive) and of rounded-up terms plus twice the last (the remainder for t <= 1/2); then
    k squarings rounded outward (squaring is increasing on positive numbers)."""
    k = max(0, math.ceil(math.log2(float(x))) + 1) if x > 0 else 0
    t = x / (1 << k)
    lo_t, hi_t = math.floor(t * (1 << p)), math.ceil(t * (1 << p))
    one = 1 << p
    lo_sum, term, n = one, one, 0
    while term:
        n += 1
        term = term * lo_t // (n << p)
        lo_sum += term
    hi_sum, term, n = one, one, 0
    while term > 1 or n < 2:
        n += 1
        term = -(-term * hi_t // (n << p))
        hi_sum += term
    lo, hi = lo_sum, hi_sum + 2 * term + 1
    for _ in range(k):
        lo, hi = lo * lo >> p, -(-(hi * hi) >> p)
    return lo, hi


def tanh_enclosure(x, bits: int = 110) -> tuple[Fraction, Fraction]:
    """Rational bounds on tanh(x): ``tanh x = 1 - 2 / (exp(2x) + 1)`` is increasing in exp(2x),
    so an enclosure of exp (:func:`_exp_fixed`) gives one of tanh; tanh is odd and increasing, so
    arguments beyond ``_TANH_CLAMP`` get ``[tanh(_TANH_CLAMP), 1]``."""
    x = Fraction(x)
    if x == 0:
        return Fraction(0), Fraction(0)
    if x < 0:
        lo, hi = tanh_enclosure(-x, bits)
        return -hi, -lo
    if x > _TANH_CLAMP:
        return tanh_enclosure(Fraction(_TANH_CLAMP), bits)[0], Fraction(1)
    p = bits + 24
    elo, ehi = _exp_fixed(2 * x, p)
    one = 1 << p
    return (round_down(1 - Fraction(2 * one, elo + one), bits),
            min(Fraction(1), round_up(1 - Fraction(2 * one, ehi + one), bits)))


def _erf_series(y_int: int, p: int) -> tuple[int, int]:
    """``(S, E)`` with ``|S - 2**p * sum_n (-1)^n y^(2n+1) / (n! (2n+1))| <= E`` for
    ``y = y_int / 2**p >= 0`` (fixed-point Taylor series of ``erf(y) * sqrt(pi) / 2``).

    ``T_n`` approximates ``2**p * y^(2n+1) / n!`` with error at most ``e_n`` (each floor adds at
    most 1; ``e_n <= e_(n-1) y^2 / n + 1``); once ``n >= y^2`` the terms decrease, and the series
    alternates, so the remainder is at most the last term's bound, at most 1 unit at the stop."""
    yy = y_int * y_int
    den = 1 << (2 * p)
    T, e, S, E, n = y_int, 0, y_int, 0, 0
    while True:
        n += 1
        T = T * yy // (n * den)
        e = -(-e * yy // (n * den)) + 1
        term = T // (2 * n + 1)
        S += -term if n % 2 else term
        E += e // (2 * n + 1) + 2
        if n * den >= yy and (T + e) // (2 * n + 1) + 1 <= 1:
            return S, E + 1


def erf_enclosure(x, bits: int = 110) -> tuple[Fraction, Fraction]:
    """Rational bounds on erf(x).  ``x`` is rounded down to a grid of 2**-p (erf is
    2/sqrt(pi)-Lipschitz: 2 more units cover the rounding), the series of :func:`_erf_series` is
    summed in integers, and multiplied by an enclosure of 2/sqrt(pi); for x > ``_ERF_CLAMP``,
    ``1 - erf(x) = erfc(x) < exp(-x^2) / (x sqrt(pi)) < exp(-x^2)``.  erf is odd."""
    x = Fraction(x)
    if x == 0:
        return Fraction(0), Fraction(0)
    if x < 0:
        lo, hi = erf_enclosure(-x, bits)
        return -hi, -lo
    if x > _ERF_CLAMP:
        return round_down(1 - exp_enclosure(-x * x, bits + 8)[1], bits), Fraction(1)
    p = bits + 24 + math.ceil(float(x * x) * 1.4427)  # the series' cancellation: terms up to e^(x^2)
    y_int = math.floor(x * (1 << p))
    S, E = _erf_series(y_int, p)
    E += 0 if Fraction(y_int, 1 << p) == x else 2
    c = _constant("2/sqrt(pi)")
    r = c * Iv(Fraction(S - E, 1 << p), Fraction(S + E, 1 << p))
    return round_down(max(r.lo, Fraction(-1)), bits), round_up(min(r.hi, Fraction(1)), bits)


@functools.lru_cache(maxsize=None)
def _constant(name: str) -> Iv:
    """Enclosures of the constants GELU uses (computed once)."""
    pi = Iv(PI_LO, PI_HI)
    return {"2/sqrt(pi)": lambda: Iv(2) / iv_sqrt(pi), "1/sqrt(2)": lambda: iv_inv_sqrt(Iv(2)),
            "sqrt(2/pi)": lambda: iv_sqrt(Iv(2) / pi)}[name]()


def iv_tanh(x: Iv) -> Iv:
    """tanh over an interval (increasing)."""
    lo, hi = tanh_enclosure(x.lo)
    return Iv(lo, hi if x.is_point else tanh_enclosure(x.hi)[1])


def iv_erf(x: Iv) -> Iv:
    """erf over an interval (increasing)."""
    lo, hi = erf_enclosure(x.lo)
    return Iv(lo, hi if x.is_point else erf_enclosure(x.hi)[1])


def iv_gelu(x: Iv) -> Iv:
    """GELU (erf form) ``x/2 * (1 + erf(x / sqrt 2))`` by interval arithmetic: sound by the
    inclusion property (erf increasing), tight for narrow intervals."""
    return x * Iv(Fraction(1, 2)) * (Iv(1) + iv_erf(x * _constant("1/sqrt(2)")))


#: the cubic coefficient of the tanh form of GELU, exactly the decimal 0.044715
GELU_TANH_KAPPA = Fraction("0.044715")


def iv_gelu_tanh(x: Iv) -> Iv:
    """GELU (tanh form) ``x/2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` by interval
    arithmetic; the inner cubic is increasing, so it is evaluated at the two ends."""
    c = _constant("sqrt(2/pi)")
    k = GELU_TANH_KAPPA
    inner = Iv(x.lo + k * x.lo ** 3, x.hi + k * x.hi ** 3)
    inner = Iv(round_down(inner.lo), round_up(inner.hi))
    return x * Iv(Fraction(1, 2)) * (Iv(1) + iv_tanh(c * inner))
