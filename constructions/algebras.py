"""The scalar algebras the one generic forward pass (:mod:`constructions.forward`) runs in.

An algebra says what a constant is, how ReLU is written, whether a value is a known rational,
and how attention weights come from scores.  The combinatorics (masking, prompt placement,
hardmax ties, equal-score softmax) are the forward pass's and shared by all of them:

* :class:`RationalAlgebra` -- exact Fractions, nothing rounded; attention must be rational
  (hardmax, or softmax whose scores at a query are all equal), else :class:`NotExact`.
* :class:`IntervalAlgebra` -- :class:`~constructions.intervals.Iv` enclosures; each exponential
  is enclosed rigorously, so the output of a rational model is enclosed rigorously.
* :class:`SympyAlgebra` -- sympy expressions, exponentials kept symbolic.
* :class:`Z3Algebra` -- Z3 terms, each exponential a fresh positive real with sound side
  conditions.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Optional, Sequence

from .intervals import Iv, exp_enclosure

__all__ = ["Algebra", "NotExact", "RationalAlgebra", "IntervalAlgebra", "SympyAlgebra", "Z3Algebra"]


class NotExact(ValueError):
    """The forward pass is not a rational function of the inputs (softmax with unequal scores)."""


class Algebra:
    """Scalar operations an encoding supplies (values support ``+``, ``-``, ``*`` and ``/``)."""

    def const(self, q: Fraction):  # pragma: no cover - interface
        raise NotImplementedError

    def relu(self, x):  # pragma: no cover - interface
        raise NotImplementedError

    def const_value(self, x) -> Optional[Fraction]:  # pragma: no cover - interface
        """The exact rational value of x when it is a known constant, else None."""
        raise NotImplementedError

    def softmax_weights(self, scores: list) -> list:  # pragma: no cover - interface
        raise NotImplementedError

    def hardmax_weights(self, scores: list) -> list:  # pragma: no cover - interface
        raise NotImplementedError

    def uniform_if_equal(self, scores: list) -> Optional[list]:
        """Weights 1/n each when every score is the same known constant (no exponential), else None."""
        vals = [self.const_value(s) for s in scores]
        if all(v is not None for v in vals) and len(set(vals)) == 1:
            return [self.const(Fraction(1, len(scores))) for _ in scores]
        return None

    def exact_hardmax(self, scores: list) -> Optional[list]:
        """Hardmax weights (ties share equally) when every score is a known constant, else None."""
        vals = [self.const_value(s) for s in scores]
        if all(v is not None for v in vals):
            m = max(vals)
            n = sum(1 for v in vals if v == m)
            return [self.const(Fraction(1, n) if v == m else Fraction(0)) for v in vals]
        return None


class RationalAlgebra(Algebra):
    """Exact Fractions.  Softmax with unequal scores raises :class:`NotExact`."""

    def const(self, q):
        return q

    def relu(self, x):
        return x if x > 0 else Fraction(0)

    def const_value(self, x):
        return x

    def softmax_weights(self, scores):
        w = self.uniform_if_equal(scores)
        if w is None:
            raise NotExact("softmax head with unequal scores: its output involves exp and is not rational; "
                           "use a hardmax or zero-score model")
        return w

    def hardmax_weights(self, scores):
        return self.exact_hardmax(scores)


class IntervalAlgebra(Algebra):
    """Rigorous :class:`Iv` enclosures; exact points wherever no exponential is needed."""

    def const(self, q):
        return Iv(q)

    def relu(self, x):
        return x.relu()

    def const_value(self, x):
        return x.lo if x.is_point else None

    def softmax_weights(self, scores):
        u = self.uniform_if_equal(scores)
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
        w = self.exact_hardmax(scores)
        if w is None:
            raise ValueError("hardmax over interval scores is not supported")
        return w


class SympyAlgebra(Algebra):
    """Exact sympy expressions; every exponential kept symbolic (``exp(...)``)."""

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
        u = self.uniform_if_equal(scores)
        if u is not None:
            return u
        es = [self.sp.exp(s) for s in scores]
        tot = sum(es)
        return [e / tot for e in es]

    def hardmax_weights(self, scores):
        w = self.exact_hardmax(scores)
        if w is None:
            raise ValueError("sympy hardmax needs constant scores")
        return w


class Z3Algebra(Algebra):
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

    def _variable_exp_cuts(self, E, s) -> None:
        """Sound cuts linking E = exp(s) for a variable score s: tangents below, a chord above."""
        self.constraints.append(E > 0)
        for t in self.tangents:
            lo, _ = exp_enclosure(t)
            self.constraints.append(E >= self.const(lo) * (1 + s - self.const(t)))
        if self.score_box is not None:
            a, b = (Fraction(x) for x in self.score_box)
            _, ea = exp_enclosure(a)
            _, eb = exp_enclosure(b)
            c = self.const
            self.constraints += [s >= c(a), s <= c(b), E <= c(ea) + (c(eb) - c(ea)) * (s - c(a)) / c(b - a)]

    def _exp(self, s):
        E = self.z3.Real(f"{self.prefix}{len(self.exp_vars)}")
        self.exp_vars.append((E, s))
        v = self.const_value(s)
        if v is not None:
            lo, hi = exp_enclosure(v)
            self.constraints += [E >= self.const(lo), E <= self.const(hi)]
        else:
            self._variable_exp_cuts(E, s)
        return E

    def softmax_weights(self, scores):
        u = self.uniform_if_equal(scores)
        if u is not None:
            return u
        es = [self._exp(s) for s in scores]
        tot = es[0]
        for e in es[1:]:
            tot = tot + e
        return [e / tot for e in es]

    def hardmax_weights(self, scores):
        w = self.exact_hardmax(scores)
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
