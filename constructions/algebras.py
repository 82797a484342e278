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

Real (``ptverify-model/2``) layers also need ``1/sqrt`` (LayerNorm, the score scale
1/sqrt(head size)) and GELU: :meth:`Algebra.inv_sqrt`, :meth:`Algebra.activation` and
:meth:`Algebra.layer_norm`.  Rationals are exact only where the value is rational (else
:class:`NotExact`); intervals enclose them rigorously; sympy keeps them symbolic; Z3 encodes
``k = 1/sqrt(x)`` exactly as ``k > 0, k*k*x = 1`` and GELU by a sound relaxation (a fresh
variable within a proved distance of ReLU; proofs/real_layers_forward.md).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Optional, Sequence

from .arrays import InputError
from .intervals import Iv, exp_enclosure, iv_gelu, iv_gelu_tanh, iv_inv_sqrt, sqrt_enclosure

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

    # -- real layers (ptverify-model/2)
    def activation(self, x, name: str):
        """``relu``, ``gelu`` (erf form) or ``gelu_tanh`` of x."""
        if name == "relu":
            return self.relu(x)
        if name == "gelu":
            return self.gelu(x)
        if name == "gelu_tanh":
            return self.gelu_tanh(x)
        raise InputError("activation", "\"relu\", \"gelu\" or \"gelu_tanh\"", repr(name)[:40])

    def gelu(self, x):
        raise InputError("activation", f"relu for the {type(self).__name__} encoding", "gelu (not supported there)")

    def gelu_tanh(self, x):
        raise InputError("activation", f"relu for the {type(self).__name__} encoding", "gelu_tanh (not supported there)")

    def inv_sqrt(self, x):
        """``1 / sqrt(x)`` for x > 0 (LayerNorm, the score scale 1/sqrt(head size))."""
        raise InputError("norm", f"no LayerNorm or 1/sqrt scale for the {type(self).__name__} encoding",
                         "a 1/sqrt (not supported there)")

    def square(self, x):
        return x * x

    def layer_norm(self, u: list, gamma: Sequence[Fraction], beta: Sequence[Fraction], eps: Fraction) -> list:
        """``gamma * (u - mean u) / sqrt(var u + eps) + beta`` (biased variance over the entries)."""
        n = self.const(Fraction(1, len(u)))
        total = u[0]
        for v in u[1:]:
            total = total + v
        mean = total * n
        c = [v - mean for v in u]
        var = self.square(c[0])
        for v in c[1:]:
            var = var + self.square(v)
        k = self.inv_sqrt(var * n + self.const(Fraction(eps)))
        return [ci * k * self.const(Fraction(g)) + self.const(Fraction(b)) for ci, g, b in zip(c, gamma, beta)]

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

    def gelu(self, x):
        if x == 0:
            return Fraction(0)
        raise NotExact("GELU of a nonzero number is not rational; use forward_exact (intervals)")

    gelu_tanh = gelu

    def inv_sqrt(self, x):
        lo, hi = sqrt_enclosure(x)
        if lo != hi:
            raise NotExact(f"1/sqrt({x}) is not rational (LayerNorm or score scale); use forward_exact (intervals)")
        return 1 / lo


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

    def gelu(self, x):
        return iv_gelu(x)

    def gelu_tanh(self, x):
        return iv_gelu_tanh(x)

    def inv_sqrt(self, x):
        return iv_inv_sqrt(x)

    def square(self, x):
        return x.sqr()


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

    def gelu(self, x):
        sp = self.sp
        return x / 2 * (1 + sp.erf(x / sp.sqrt(2)))

    def gelu_tanh(self, x):
        sp = self.sp
        k = self.const(Fraction("0.044715"))
        return x / 2 * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (x + k * x ** 3)))

    def inv_sqrt(self, x):
        return 1 / self.sp.sqrt(x)


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

    # -- real layers: LayerNorm's 1/sqrt exactly, GELU by a sound relaxation
    #: proved bounds on ``relu(x) - gelu(x)`` (erf form: 1/sqrt(2 pi) < 2/5) and on
    #: ``relu(x) - gelu_tanh(x)`` (1 / (e 2 sqrt(2/pi)) < 1/4); both differences are >= 0
    GELU_GAP = {"gelu": Fraction(2, 5), "gelu_tanh": Fraction(1, 4)}

    def _fresh(self, name: str):
        return self.z3.Real(f"{self.prefix}_{name}{len(self.constraints)}")

    def inv_sqrt(self, x):
        """``k = 1/sqrt(x)`` as a fresh real with ``k > 0, k*k*x = 1`` (exact), and rational
        bounds on k when x is a known constant (a rational k when x is a square)."""
        v = self.const_value(x)
        if v is not None:
            lo, hi = sqrt_enclosure(v)
            if lo == hi:
                return self.const(1 / lo)
        k = self._fresh("k")
        self.constraints += [k > 0, k * k * x == 1]
        if v is not None:
            self.constraints += [k >= self.const(1 / hi), k <= self.const(1 / lo)]
        return k

    def _gelu(self, x, form: str):
        v = self.const_value(x)
        if v is not None:
            r = iv_gelu(Iv(v)) if form == "gelu" else iv_gelu_tanh(Iv(v))
            if r.is_point:
                return self.const(r.lo)
        g = self._fresh("g")
        relu = self.relu(x)
        self.constraints += [g <= relu, g >= relu - self.const(self.GELU_GAP[form])]
        if v is not None:
            self.constraints += [g >= self.const(r.lo), g <= self.const(r.hi)]
        return g

    def gelu(self, x):
        return self._gelu(x, "gelu")

    def gelu_tanh(self, x):
        return self._gelu(x, "gelu_tanh")
