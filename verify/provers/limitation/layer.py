"""Exact copies of the single layer, and the roundings by which floats propose rationals.

:class:`ExactLayer` holds integer-scaled copies of one layer's matrices, so that MLP(z), attention
scores and products like W_o W_v run in exact integer arithmetic, fast even at BERT size.  Floats
only propose: :func:`rational_candidates` turns a float vector into nearby rationals, simplest
first, which the callers then test exactly.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from constructions.model import IntMatrix, Model, as_fraction
from verify.provers.exact import dot, frac_vec

__all__ = ["ExactLayer", "LazyRows", "head_product", "matmul", "hstack", "flt", "dyadic", "rational_candidates",
           "short"]


class ExactLayer:
    """Integer-scaled copies of one layer's matrices for fast exact arithmetic."""

    def __init__(self, model: Model, index: int = 0):
        layer = model.layers[index]
        self.layer = layer
        self.kind = layer.kind
        self.d = model.d
        self.W1, self.W2 = IntMatrix(layer.W_1), IntMatrix(layer.W_2)
        self.b1, self.b2 = frac_vec(as_fraction(layer.b_1)), frac_vec(as_fraction(layer.b_2))
        self.heads = [{n: IntMatrix(getattr(h, n)) for n in ("W_q", "W_k", "W_v", "W_o")} for h in layer.heads]
        self._ints: dict = {}
        self._by_id: dict = {}

    def _int_form(self, v: list[Fraction]) -> tuple[list[int], int]:
        """v's integer form (numerators over one denominator), remembered per vector object (the
        entry keeps the object alive, so its id is not reused) and per value."""
        hit = self._by_id.get(id(v))
        if hit is not None and hit[0] is v:
            return hit[1]
        key = tuple(v)
        form = self._ints.get(key)
        if form is None:
            L = 1
            for t in v:
                L = L * t.denominator // math.gcd(L, t.denominator)
            form = self._ints[key] = ([t.numerator * (L // t.denominator) for t in v], L)
        self._by_id[id(v)] = (v, form)
        return form

    def mv(self, M: IntMatrix, v: list[Fraction]) -> list[Fraction]:
        """M v exactly, for a vector used many times (a token): its integer form is remembered."""
        xi, L = self._int_form(v)
        return [Fraction(int(t), M.D * L) for t in M._prod(M.N64, None, xi)]

    def int_mv(self, M: IntMatrix, v: list[Fraction]) -> tuple[list[int], int]:
        """M v as integers over one denominator (no Fraction per entry)."""
        xi, L = self._int_form(v)
        return [int(t) for t in M._prod(M.N64, None, xi)], M.D * L

    def mlp(self, z: list[Fraction]) -> list[Fraction]:
        """MLP(z) = z + W_2 relu(W_1 z + b_1) + b_2, exactly."""
        pre = self.W1.mv(z)
        hid = [max(p + b, Fraction(0)) for p, b in zip(pre, self.b1)]
        post = self.W2.mv(hid)
        return [a + b + c for a, b, c in zip(z, post, self.b2)]

    def scores(self, j: int, x: list[Fraction], keys: list[list[Fraction]]) -> list[Fraction]:
        """Head j's attention scores (W_k key)^T (W_q x) of the query x at every key, exactly."""
        q, qd = self.int_mv(self.heads[j]["W_q"], x)
        out = []
        for k in keys:
            kv, kd = self.int_mv(self.heads[j]["W_k"], k)
            out.append(Fraction(sum(a * b for a, b in zip(q, kv)), qd * kd))
        return out


class LazyRows:
    """Rows of an IntMatrix as Fractions, built on first use."""

    def __init__(self, M: IntMatrix):
        self.M, self._rows = M, None

    def _get(self):
        if self._rows is None:
            self._rows = [[Fraction(int(v), self.M.D) for v in row] for row in self.M.N]
        return self._rows

    def __len__(self):
        return self.M.shape[0]

    def __getitem__(self, i):
        return self._get()[i]

    def __iter__(self):
        return iter(self._get())


def head_product(model: Model, j: int) -> list[list[Fraction]]:
    """W_o^j W_v^j of the first layer, exactly (rows as lists)."""
    h = model.layers[0].heads[j]
    return as_fraction(h.W_o).dot(as_fraction(h.W_v)).tolist()


def matmul(A, B):
    """A B for rational matrices given as lists of rows."""
    return [[sum((A[i][k] * B[k][j] for k in range(len(B))), Fraction(0)) for j in range(len(B[0]))] for i in range(len(A))]


def hstack(mats):
    """[M_1 M_2 ...] for matrices (lists of rows) with the same number of rows."""
    return [sum((m[r] for m in mats), []) for r in range(len(mats[0]))]


def flt(q) -> float:
    """float(q), or +-inf where q is beyond the binary64 range (numerics only propose)."""
    try:
        return float(q)
    except OverflowError:
        return math.inf if q > 0 else -math.inf


def dyadic(v: float, k: int) -> Fraction:
    """The finite float v rounded to a multiple of 2^-k (exactly, however large v is)."""
    if abs(v) >= 2.0 ** 900:
        return Fraction(round(Fraction(v) * (1 << k)), 1 << k)
    return Fraction(round(v * (1 << k)), 1 << k)


def rational_candidates(vf: np.ndarray, ok, limit: int = 3):
    """Rational vectors near the float vector vf, simplest first: dyadic roundings 2^-k (cheap
    exact arithmetic), then continued-fraction roundings (small vectors only), then vf itself.
    ``ok`` is a float pre-test, run on a candidate's float values before its rationals are built
    (a dyadic rounding's float values are exactly its rationals); each distinct candidate is
    tried once, and at most ``limit`` candidates are yielded."""
    if not np.all(np.isfinite(vf)):
        return
    n, seen = 0, set()
    for make in _candidate_makers(vf):
        fl, key, exact = make()
        if key in seen:
            continue
        seen.add(key)
        if not ok(fl):
            continue
        yield exact()
        n += 1
        if n >= limit:
            return


def _key(fl: np.ndarray, z=None):
    """Candidates are the same iff their keys are: exact float values by bytes (-0.0 as 0.0),
    or the rationals themselves when some is not a float."""
    if z is not None and any(Fraction(float(q)) != q for q in z):
        return tuple(z)
    return (np.asarray(fl, dtype=np.float64) + 0.0).tobytes()


def _dyadic_maker(vf: np.ndarray, k: int):
    def make():
        if np.max(np.abs(vf), initial=0.0) >= 2.0 ** 900:
            z = [dyadic(float(v), k) for v in vf]
            fl = np.array([float(q) for q in z])
            return fl, _key(fl), lambda: z
        fl = np.round(vf * 2.0 ** k) / 2.0 ** k     # exact: the rationals' own values
        return fl, _key(fl), lambda: [dyadic(float(v), k) for v in vf]
    return make


def _rational_maker(build):
    def make():
        z = build()
        fl = np.array([float(q) for q in z])
        return fl, _key(fl, z), lambda: z
    return make


def _candidate_makers(vf: np.ndarray):
    for k in range(4, 62, 2):
        yield _dyadic_maker(vf, k)
    if len(vf) <= 64:
        for k in (6, 10, 16, 24, 32):
            yield _rational_maker(lambda k=k: [Fraction(float(v)).limit_denominator(1 << k) for v in vf])
    yield lambda: (np.asarray(vf, dtype=np.float64), _key(vf), lambda: [Fraction(float(v)) for v in vf])


def short(v) -> str:
    """The first entries of a vector, for log lines."""
    return "[" + ", ".join(f"{float(x):.3g}" for x in v[:4]) + (", ...]" if len(v) > 4 else "]")
