"""Three encodings of one forward pass with a prompt prepended.

* :func:`forward_exact` -- exact rationals; each exponential is a rigorous interval enclosure
  (:class:`Iv`), so the output of a rational model is enclosed rigorously.  For hardmax layers and
  for softmax heads whose scores at a query are all equal (zero-score heads) nothing is rounded
  and the intervals are points.
* :func:`forward_sympy` -- sympy expressions, every exponential kept symbolic (``exp(...)``).
* :func:`forward_z3` -- Z3 terms.  Each exponential is a fresh positive real: enclosed in
  ``[lo, hi]`` when its score is a constant, linked to a variable score by sound tangent and
  chord cuts otherwise (see :class:`Z3Algebra`).
* :func:`forward_torch` -- torch float64, batched.

All share one generic implementation over a small "scalar algebra", so the three agree by
construction on the combinatorics (masking, prompt placement, hardmax ties) and differ only in how
exponentials and ReLU are represented.  Sequences are arrays of shape ``(m, d)`` (tokens as rows);
outputs are at the input positions only: ``g([P, X])[m_p:]``.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional, Sequence

import numpy as np

from .model import Layer, Model, as_fraction, as_float

__all__ = [
    "Iv", "exp_enclosure", "EXP_LIMIT", "forward_exact", "forward_sympy", "forward_z3", "forward_torch",
    "attention_scores_exact", "Z3Algebra", "generic_forward",
]

_ROUND_BITS = 120  # outward rounding grid for intervals: 2**-120 relative


# --------------------------------------------------------------------------- intervals

def _round_down(q: Fraction, bits: int = _ROUND_BITS) -> Fraction:
    if q == 0 or q.denominator.bit_length() <= bits + 8:
        return q
    e = bits - (abs(q).numerator.bit_length() - q.denominator.bit_length())
    scale = 1 << e if e >= 0 else None
    if scale is not None:
        return Fraction(math.floor(q * scale), scale)
    s = 1 << (-e)
    return Fraction(math.floor(q / s) * s)


def _round_up(q: Fraction, bits: int = _ROUND_BITS) -> Fraction:
    return -_round_down(-q, bits)


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
        return Iv(_round_down(self.lo + o.lo), _round_up(self.hi + o.hi))

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
        return Iv(_round_down(min(c)), _round_up(max(c)))

    __rmul__ = __mul__

    def __truediv__(self, o):
        o = Iv.of(o)
        if o.lo <= 0 <= o.hi:
            raise ZeroDivisionError("interval division by an interval containing 0")
        if o.is_point:
            return self * Iv(1 / o.lo)
        return self * Iv(_round_down(1 / o.hi), _round_up(1 / o.lo))

    def __rtruediv__(self, o):
        return Iv.of(o) / self

    def relu(self) -> "Iv":
        return Iv(max(self.lo, 0), max(self.hi, 0))

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
    lo, hi = _round_down(total - rem, bits + 2 * k + 8), _round_up(total + rem, bits + 2 * k + 8)
    lo = max(lo, Fraction(0))
    for _ in range(k):
        lo, hi = _round_down(lo * lo, bits + 2 * k + 8), _round_up(hi * hi, bits + 2 * k + 8)
    if lo <= 0:
        lo = Fraction(0)
    return _round_down(lo, bits), _round_up(hi, bits)


# --------------------------------------------------------------------------- generic forward

class _Algebra:
    """Scalar operations an encoding supplies."""

    def const(self, q: Fraction):  # pragma: no cover - interface
        raise NotImplementedError

    def relu(self, x):
        raise NotImplementedError

    def const_value(self, x) -> Optional[Fraction]:
        """The exact rational value of x when it is a known constant, else None."""
        raise NotImplementedError

    def softmax_weights(self, scores: list) -> list:
        raise NotImplementedError

    def hardmax_weights(self, scores: list) -> list:
        raise NotImplementedError


def _uniform_if_equal(alg: _Algebra, scores: list):
    vals = [alg.const_value(s) for s in scores]
    if all(v is not None for v in vals) and len(set(vals)) == 1:
        n = len(scores)
        return [alg.const(Fraction(1, n)) for _ in scores]
    return None


def _exact_hardmax(alg: _Algebra, scores: list):
    vals = [alg.const_value(s) for s in scores]
    if all(v is not None for v in vals):
        m = max(vals)
        n = sum(1 for v in vals if v == m)
        return [alg.const(Fraction(1, n) if v == m else Fraction(0)) for v in vals]
    return None


def _matvec(A: np.ndarray, x: Sequence, alg: _Algebra) -> list:
    out = []
    for row in A:
        acc = None
        for a, xv in zip(row, x):
            if a == 0:
                continue
            term = xv * alg.const(a)
            acc = term if acc is None else acc + term
        out.append(acc if acc is not None else alg.const(Fraction(0)))
    return out


def generic_forward(model: Model, X: np.ndarray, prompt: Optional[np.ndarray], alg: _Algebra,
                    layers: Optional[Sequence[Layer]] = None) -> list[list]:
    """Run the model on ``[P, X]`` in the given algebra; returns the rows at input positions."""
    Xq = as_fraction(np.asarray(X))
    seq: list[list] = []
    if prompt is not None and len(prompt):
        for p in prompt:
            seq.append([v if not isinstance(v, (Fraction, float, int)) else alg.const(Fraction(v)) for v in p])
    m_p = len(seq)
    for x in Xq:
        seq.append([alg.const(v) for v in x])
    for layer in (layers if layers is not None else model.layers):
        seq = _layer(layer, seq, alg, model.causal)
    return seq[m_p:]


def _layer(layer: Layer, seq: list[list], alg: _Algebra, causal: bool) -> list[list]:
    n = len(seq)
    heads = []
    for h in layer.heads:
        Wq, Wk, Wv, Wo = (as_fraction(h.W_q), as_fraction(h.W_k), as_fraction(h.W_v), as_fraction(h.W_o))
        q = [_matvec(Wq, t, alg) for t in seq]
        k = [_matvec(Wk, t, alg) for t in seq]
        v = [_matvec(Wv, t, alg) for t in seq]
        heads.append((q, k, v, Wo))
    out = []
    for a in range(n):
        z = list(seq[a])
        keys = range(a + 1) if causal else range(n)
        for (q, k, v, Wo) in heads:
            scores = [_dot(k[b], q[a], alg) for b in keys]
            if layer.kind == "hardmax":
                w = alg.hardmax_weights(scores)
            else:
                w = alg.softmax_weights(scores)
            s = len(v[0])
            mix = []
            for c in range(s):
                acc = None
                for wb, b in zip(w, keys):
                    term = wb * v[b][c]
                    acc = term if acc is None else acc + term
                mix.append(acc)
            att = _matvec(Wo, mix, alg)
            z = [zi + ai for zi, ai in zip(z, att)]
        out.append(_mlp(layer, z, alg))
    return out


def _dot(u: list, v: list, alg: _Algebra):
    acc = None
    for a, b in zip(u, v):
        t = a * b
        acc = t if acc is None else acc + t
    return acc if acc is not None else alg.const(Fraction(0))


def _mlp(layer: Layer, z: list, alg: _Algebra) -> list:
    W1, b1, W2, b2 = (as_fraction(layer.W_1), as_fraction(layer.b_1), as_fraction(layer.W_2),
                      as_fraction(layer.b_2))
    pre = _matvec(W1, z, alg)
    hid = [alg.relu(p + alg.const(b)) for p, b in zip(pre, b1)]
    post = _matvec(W2, hid, alg)
    return [zi + pi + alg.const(b) for zi, pi, b in zip(z, post, b2)]


# --------------------------------------------------------------------------- exact (intervals)

class _IvAlgebra(_Algebra):
    def const(self, q):
        return Iv(q)

    def relu(self, x):
        return x.relu()

    def const_value(self, x):
        return x.lo if x.is_point else None

    def softmax_weights(self, scores):
        u = _uniform_if_equal(self, scores)
        if u is not None:
            return u
        # subtract the largest lower end for stability; exp of an interval is monotone
        shift = max(s.lo for s in scores)
        es = []
        for s in scores:
            lo, _ = exp_enclosure(s.lo - shift)
            _, hi = exp_enclosure(s.hi - shift)
            es.append(Iv(lo, hi))
        # w_b = e_b / sum e ; use w_b = 1 / (1 + sum_{c != b} e_c / e_b) for a tighter enclosure
        out = []
        for b, eb in enumerate(es):
            rest = Iv(0)
            for c, ec in enumerate(es):
                if c != b:
                    rest = rest + ec
            out.append(Iv(1) / (Iv(1) + rest / eb))
        return out

    def hardmax_weights(self, scores):
        w = _exact_hardmax(self, scores)
        if w is None:
            raise ValueError("hardmax over interval scores is not supported")
        return w


def forward_exact(model: Model, X: np.ndarray, prompt: Optional[np.ndarray] = None) -> np.ndarray:
    """Exact/rigorous forward pass: an ``(m, d)`` object array of :class:`Iv` enclosures."""
    rows = generic_forward(model, X, None if prompt is None else as_fraction(np.asarray(prompt)), _IvAlgebra())
    out = np.empty((len(rows), model.d), dtype=object)
    for i, r in enumerate(rows):
        out[i, :] = r
    return out


# --------------------------------------------------------------------------- sympy

class _SympyAlgebra(_Algebra):
    def __init__(self):
        import sympy
        self.sp = sympy

    def const(self, q):
        return self.sp.Rational(q.numerator, q.denominator)

    def relu(self, x):
        return self.sp.Max(0, x)

    def const_value(self, x):
        x = self.sp.nsimplify(x) if not x.is_Rational else x
        return Fraction(int(x.p), int(x.q)) if x.is_Rational else None

    def softmax_weights(self, scores):
        u = _uniform_if_equal(self, scores)
        if u is not None:
            return u
        es = [self.sp.exp(s) for s in scores]
        tot = sum(es)
        return [e / tot for e in es]

    def hardmax_weights(self, scores):
        w = _exact_hardmax(self, scores)
        if w is None:
            raise ValueError("sympy hardmax needs constant scores")
        return w


def forward_sympy(model: Model, X: np.ndarray, prompt: Optional[np.ndarray] = None):
    """Exact symbolic forward pass (sympy ``Matrix`` of shape (m, d)); exponentials symbolic."""
    import sympy
    alg = _SympyAlgebra()
    P = None
    if prompt is not None:
        P = np.asarray(prompt, dtype=object)
        P = [[v if isinstance(v, sympy.Basic) else alg.const(Fraction(v)) for v in row] for row in P]
    rows = generic_forward(model, X, P, alg)
    return sympy.Matrix(rows)


# --------------------------------------------------------------------------- z3

class Z3Algebra(_Algebra):
    """Z3 terms.  ``constraints`` collects the side conditions on the exponential variables.

    A constant score s gives E with lo <= E <= hi (rigorous enclosure of exp(s)).  A variable
    score s gives E > 0 with tangent cuts E >= exp(t)(1 + s - t) at the points ``tangents`` and,
    when ``score_box`` = (a, b) bounds the score, the chord E <= chord(s) on [a, b]: both are
    sound because exp is convex."""

    def __init__(self, tangents: Sequence[Fraction] = (), score_box: Optional[tuple] = None, prefix: str = "e"):
        import z3
        self.z3 = z3
        self.constraints: list = []
        self.exp_vars: list = []
        self.tangents = [Fraction(t) for t in tangents]
        self.score_box = score_box
        self.prefix = prefix

    def const(self, q):
        return self.z3.RealVal(f"{q.numerator}/{q.denominator}")

    def relu(self, x):
        z3 = self.z3
        return z3.If(x > 0, x, z3.RealVal(0))

    def const_value(self, x):
        z3 = self.z3
        s = z3.simplify(x)
        if z3.is_rational_value(s):
            return Fraction(s.numerator_as_long(), s.denominator_as_long())
        return None

    def _exp(self, s):
        z3 = self.z3
        E = z3.Real(f"{self.prefix}{len(self.exp_vars)}")
        self.exp_vars.append((E, s))
        v = self.const_value(s)
        if v is not None:
            lo, hi = exp_enclosure(v)
            self.constraints += [E >= self.const(lo), E <= self.const(hi)]
        else:
            self.constraints.append(E > 0)
            for t in self.tangents:
                lo, _ = exp_enclosure(t)
                self.constraints.append(E >= self.const(lo) * (1 + s - self.const(t)))
            if self.score_box is not None:
                a, b = (Fraction(x) for x in self.score_box)
                _, ea = exp_enclosure(a)
                _, eb = exp_enclosure(b)
                self.constraints += [s >= self.const(a), s <= self.const(b),
                                     E <= self.const(ea) + (self.const(eb) - self.const(ea)) * (s - self.const(a)) / self.const(b - a)]
        return E

    def softmax_weights(self, scores):
        u = _uniform_if_equal(self, scores)
        if u is not None:
            return u
        es = [self._exp(s) for s in scores]
        tot = es[0]
        for e in es[1:]:
            tot = tot + e
        return [e / tot for e in es]

    def hardmax_weights(self, scores):
        w = _exact_hardmax(self, scores)
        if w is not None:
            return w
        z3 = self.z3
        mx = scores[0]
        for s in scores[1:]:
            mx = z3.If(s > mx, s, mx)
        ind = [z3.If(s == mx, z3.RealVal(1), z3.RealVal(0)) for s in scores]
        cnt = ind[0]
        for t in ind[1:]:
            cnt = cnt + t
        return [t / cnt for t in ind]


def forward_z3(model: Model, X: np.ndarray, prompt=None, alg: Optional[Z3Algebra] = None):
    """Z3 terms for the outputs at input positions; returns ``(rows, algebra)``.

    ``prompt`` may hold numbers or Z3 terms (prompt tokens as variables)."""
    alg = alg or Z3Algebra()
    P = None
    if prompt is not None:
        P = [[v if not isinstance(v, (int, float, Fraction)) else alg.const(Fraction(v)) for v in row] for row in prompt]
    return generic_forward(model, X, P, alg), alg


# --------------------------------------------------------------------------- torch

def forward_torch(model: Model, X, prompt=None):
    """Float64 forward pass.  ``X``: (m, d) or (B, m, d); ``prompt``: (m_p, d) or (B, m_p, d),
    numpy or torch (gradients flow through a torch prompt).  Returns a tensor of the input rows."""
    import torch
    Xt = torch.as_tensor(np.asarray(as_float(np.asarray(X))) if not torch.is_tensor(X) else X, dtype=torch.float64)
    squeeze = Xt.dim() == 2
    if squeeze:
        Xt = Xt.unsqueeze(0)
    B = Xt.shape[0]
    if prompt is not None:
        Pt = prompt if torch.is_tensor(prompt) else torch.as_tensor(as_float(np.asarray(prompt)), dtype=torch.float64)
        Pt = Pt.to(torch.float64)
        if Pt.dim() == 2:
            Pt = Pt.unsqueeze(0).expand(B, -1, -1)
        S = torch.cat([Pt, Xt], dim=1)
        m_p = Pt.shape[1]
    else:
        S, m_p = Xt, 0
    n = S.shape[1]
    mask = None
    if model.causal:
        mask = torch.ones(n, n, dtype=torch.bool).tril()
    for layer in model.layers:
        att = torch.zeros_like(S)
        for h in layer.heads:
            Wq, Wk, Wv, Wo = (torch.as_tensor(as_float(w)) for w in (h.W_q, h.W_k, h.W_v, h.W_o))
            q, k, v = S @ Wq.T, S @ Wk.T, S @ Wv.T
            scores = q @ k.transpose(1, 2)  # [b, a(query), c(key)]
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            if layer.kind == "hardmax":
                mx = scores.max(dim=-1, keepdim=True).values
                ind = (scores == mx).to(torch.float64)
                w = ind / ind.sum(dim=-1, keepdim=True)
            else:
                w = torch.softmax(scores, dim=-1)
            att = att + (w @ v) @ Wo.T
        Z = S + att
        W1, b1, W2, b2 = (torch.as_tensor(as_float(a)) for a in (layer.W_1, layer.b_1, layer.W_2, layer.b_2))
        S = Z + torch.relu(Z @ W1.T + b1) @ W2.T + b2
    out = S[:, m_p:]
    return out[0] if squeeze else out


def attention_scores_exact(model: Model, layer_index: int, head_index: int, query, keys) -> list[Fraction]:
    """Exact scores <W_k key, W_q query> for rational tokens."""
    h = model.layers[layer_index].heads[head_index]
    Wq, Wk = as_fraction(h.W_q), as_fraction(h.W_k)
    qv = Wq.dot(as_fraction(np.asarray(query)))
    return [Fraction(sum(a * b for a, b in zip(Wk.dot(as_fraction(np.asarray(k))), qv))) for k in keys]
