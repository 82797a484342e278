"""Farkas certificates: the dual LP of an infeasible block, exact margins, and the proofs they make.

When relaxation R restricted to a block is infeasible, Z3 (LRA) also solves the dual and returns
an exact Farkas vector lambda (:func:`dual_block`): lambda^T V = 0 and, for every alpha in the
range and every exponential in its enclosure, the combination of the equations is > 0.  With
Proposition E's entropy inequalities g^T pi >= c_lo alpha, g^T pi <= c_hi alpha the dual has two
more multipliers mu_lo, mu_hi.  :func:`farkas_margin` evaluates a vector exactly, as the trusted
checker (:mod:`verify.checker.limitation`) does.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

from verify.provers.exact import dot, exp_box, exp_score, sqrt_up
from verify.provers.limitation.blocks import Block
from verify.provers.limitation.clock import Clock, model_value, solve, z3q
from verify.provers.limitation.groups import Group, Member

__all__ = ["Proof", "AlphaPiece", "EntropyPiece", "Dual", "EntropyIneq", "farkas_margin", "dual_block"]


@dataclass
class AlphaPiece:
    """Farkas multipliers valid for alpha in [lo, hi] (hi None: no upper end)."""
    lo: Fraction
    hi: Optional[Fraction]
    lam: list


@dataclass
class EntropyPiece(AlphaPiece):
    """Farkas multipliers with the entropy inequalities' multipliers mu_lo, mu_hi."""
    mu_lo: Fraction = Fraction(0)
    mu_hi: Fraction = Fraction(0)


@dataclass
class Proof:
    """A block of a group shown infeasible: by one Farkas vector ``lam`` for every alpha >= 0, by
    ``alpha_pieces`` (Proposition E, zero-score query), by ``entropy_pieces`` (Proposition E with
    the entropy relation), or by the block's functional alone (subspace form)."""
    group: Group
    block: Block
    rhos: list[Fraction]
    lam: Optional[list] = None
    alpha_pieces: Optional[list[AlphaPiece]] = None
    entropy_pieces: Optional[list[EntropyPiece]] = None

    def multipliers(self) -> list:
        """Every Farkas vector of the proof (one per piece)."""
        if self.lam is not None:
            return [self.lam]
        return [pc.lam for pc in self.alpha_pieces or self.entropy_pieces or []]


@dataclass
class Dual:
    """An exact Farkas vector (per member, per row of V), scaled so its largest entry is 1."""
    lam: list[list[Fraction]]
    mu_lo: Fraction = Fraction(0)
    mu_hi: Fraction = Fraction(0)


@dataclass
class EntropyIneq:
    """g^T pi >= c_lo alpha (c_lo not None) and g^T pi <= c_hi alpha (c_hi not None)."""
    g: list[Fraction]
    c_lo: Optional[Fraction] = None
    c_hi: Optional[Fraction] = None


def farkas_margin(block: Block, members: list[Member], lam: list[list[Fraction]], rhos: list[Fraction],
                  alpha_lo: Fraction = Fraction(0), alpha_hi: Optional[Fraction] = None) -> Optional[Fraction]:
    """Exact evaluation of a Farkas vector for alpha in [alpha_lo, alpha_hi] (None: no upper end):
    returns the certified margin (> 0 proves the block infeasible) or None when the vector is not
    a valid certificate.  Mirrors the checker."""
    q = len(block.V)
    if block.form == "subspace" or (block.form == "direct-sum" and any(rhos)):
        return None  # subspace blocks have no multipliers; head coordinates need exact targets
    lam_total = [sum((lam[i][r] for i in range(len(members))), Fraction(0)) for r in range(q)]
    if any(block.lamV(lam_total)):
        return None
    g: dict = {}
    g_alpha = Fraction(0)
    w_alpha = Fraction(0)
    for i, m in enumerate(members):
        w = _kappa(block, lam[i]) * rhos[i] if rhos[i] else Fraction(0)
        g_alpha -= dot(lam[i], block.taus[i])
        w_alpha += w
        for t, key in enumerate(m.keys):
            vx = block.VX[i][t]
            coef = dot(lam[i], [a - b for a, b in zip(vx, block.taus[i])])
            s = block.scores[i][t]
            c0, w0 = g.get(s, (Fraction(0), Fraction(0)))
            g[s] = (c0 + coef, w0 + w)
    ga = g_alpha - w_alpha
    if ga < 0 and alpha_hi is None:
        return None
    total = ga * alpha_lo if ga >= 0 else ga * alpha_hi
    for s, (coef, w) in g.items():
        lo, hi = exp_score(s)            # the checker's enclosure (ExpRangeError beyond its limit)
        h = coef - w
        total += h * lo if h > 0 else h * hi
    return total if total > 0 else None


def _kappa(block: Block, lam_i: list[Fraction]) -> Fraction:
    """A rational upper bound on ||Phi^T lambda_i||_2 (annihilator form)."""
    Phi = block.Phi
    d = len(Phi[0])
    v = [sum((lam_i[r] * Phi[r][c] for r in range(len(Phi))), Fraction(0)) for c in range(d)]
    return sqrt_up(sum((x * x for x in v), Fraction(0)))


# --------------------------------------------------------------------------- the dual LP in Z3

def dual_block(z3, block: Block, members: list[Member], clock: Clock, v_free: bool,
               alpha_lo: Fraction = Fraction(0), alpha_hi: Optional[Fraction] = None,
               ineq: Optional[EntropyIneq] = None, rhos: Optional[list] = None,
               stage: str = "Farkas dual", rows: Optional[list[int]] = None) -> Optional[Dual]:
    """Exact Farkas vector for an infeasible block via Z3 (LRA), or None.

    ``ineq`` adds the entropy inequalities (then mu_lo, mu_hi may be nonzero).  With radii
    ``rhos`` (annihilator form) the multipliers must also beat the slack of inexact targets.
    ``rows`` restricts the multipliers to those rows of V (the others are 0): a much smaller LP
    whose solutions are Farkas vectors of the whole block as well."""
    q = len(block.V)
    K = len(members)
    s = z3.SolverFor("QF_LRA")
    keep = set(range(q)) if rows is None else set(rows)
    lam = [[z3.Real(f"l{i}_{r}") if r in keep else None for r in range(q)] for i in range(K)]
    mus = _entropy_multipliers(z3, s, ineq)
    _stationarity(z3, s, block, lam, mus, ineq, v_free)
    g_alpha = _alpha_coefficient(z3, block, lam, mus, ineq)
    if rhos is not None and block.Phi is not None and any(rhos):
        ws = _slack_weights(z3, s, block, lam, rhos)
        g_alpha = g_alpha - z3.Sum(ws)
    else:
        ws = [z3.RealVal(0)] * K
    m_alpha = _alpha_term(z3, s, g_alpha, alpha_lo, alpha_hi)
    ms = _score_terms(z3, s, block, members, lam, ws)
    s.add(z3.Sum(ms) + m_alpha >= 1)
    if solve(s, clock, stage) != "sat":
        return None
    return _read_dual(s.model(), lam, mus)


def _entropy_multipliers(z3, s, ineq: Optional[EntropyIneq]) -> list:
    """mu_lo, mu_hi >= 0, each fixed to 0 when its inequality is absent."""
    mus = [z3.Real("mu_lo"), z3.Real("mu_hi")]
    s.add(mus[0] >= 0, mus[1] >= 0)
    if ineq is None or ineq.c_lo is None:
        s.add(mus[0] == 0)
    if ineq is None or ineq.c_hi is None:
        s.add(mus[1] == 0)
    return mus


def _stationarity(z3, s, block: Block, lam, mus, ineq: Optional[EntropyIneq], v_free: bool) -> None:
    """pi (or v = V pi) is free: sum_i lambda_i^T V (+ (mu_hi - mu_lo) g^T) = 0."""
    q, d, K = len(block.V), len(block.V[0]), len(lam)
    if ineq is not None:
        gv = ineq.g
        for c in range(d):
            terms = [lam[i][r] * z3q(z3, block.V[r][c]) for i in range(K) for r in range(q) if lam[i][r] is not None and block.V[r][c]]
            if gv[c]:
                terms.append((mus[1] - mus[0]) * z3q(z3, gv[c]))
            if terms:
                s.add(z3.Sum(terms) == 0)
    elif v_free:
        for r in range(q):
            if lam[0][r] is not None:
                s.add(z3.Sum([lam[i][r] for i in range(K)]) == 0)
    else:
        for c in range(d):
            terms = [lam[i][r] * z3q(z3, block.V[r][c]) for i in range(K) for r in range(q) if lam[i][r] is not None and block.V[r][c]]
            if terms:
                s.add(z3.Sum(terms) == 0)


def _alpha_coefficient(z3, block: Block, lam, mus, ineq: Optional[EntropyIneq]):
    """The combination's coefficient of alpha: -sum_i lambda_i^T tau_i (+ the entropy terms)."""
    q, K = len(block.V), len(lam)
    g_alpha = -z3.Sum([lam[i][r] * z3q(z3, block.taus[i][r]) for i in range(K) for r in range(q) if lam[i][r] is not None and block.taus[i][r]] or [z3.RealVal(0)])
    if ineq is not None:
        if ineq.c_lo is not None:
            g_alpha = g_alpha + mus[0] * z3q(z3, ineq.c_lo)
        if ineq.c_hi is not None:
            g_alpha = g_alpha - mus[1] * z3q(z3, ineq.c_hi)
    return g_alpha


def _slack_weights(z3, s, block: Block, lam, rhos) -> list:
    """w_i >= rho_i ||Phi^T lambda_i||_1 >= rho_i ||Phi^T lambda_i||_2 (the checker uses the 2-norm)."""
    q, d = len(block.V), len(block.V[0])
    ws = []
    for i in range(len(lam)):
        ts = []
        for c in range(d):
            v = z3.Sum([lam[i][r] * z3q(z3, block.Phi[r][c]) for r in range(q) if lam[i][r] is not None and block.Phi[r][c]] or [z3.RealVal(0)])
            t = z3.Real(f"t{i}_{c}")
            s.add(t >= v, t >= -v)
            ts.append(t)
        ws.append(z3q(z3, rhos[i]) * z3.Sum(ts))
    return ws


def _alpha_term(z3, s, g_alpha, alpha_lo: Fraction, alpha_hi: Optional[Fraction]):
    """m_alpha <= g_alpha alpha for every alpha in [alpha_lo, alpha_hi] (g_alpha >= 0 without hi)."""
    m_alpha = z3.Real("m_alpha")
    s.add(m_alpha <= g_alpha * z3q(z3, Fraction(alpha_lo)))
    if alpha_hi is None:
        s.add(g_alpha >= 0)
    else:
        s.add(m_alpha <= g_alpha * z3q(z3, Fraction(alpha_hi)))
    return m_alpha


def _score_terms(z3, s, block: Block, members: list[Member], lam, ws) -> list:
    """Per distinct score s: m_s <= (its coefficient, less the slack) e for both ends of e's box."""
    q, K = len(block.V), len(members)
    g: dict = {}
    for i, m in enumerate(members):
        for t, key in enumerate(m.keys):
            vx = block.VX[i][t]
            coefs = [a - b for a, b in zip(vx, block.taus[i])]
            term = z3.Sum([lam[i][r] * z3q(z3, coefs[r]) for r in range(q) if lam[i][r] is not None and coefs[r]] or [z3.RealVal(0)])
            sc = block.scores[i][t]
            g[sc] = g[sc] + term if sc in g else term
    ms = []
    for n, (sc, expr) in enumerate(g.items()):
        lo, hi = exp_box(sc, block.shift)
        cnt = [sum(1 for t in block.scores[i] if t == sc) for i in range(K)]
        expr = expr - z3.Sum([ws[i] * cnt[i] for i in range(K) if cnt[i]] or [z3.RealVal(0)])
        mv = z3.Real(f"m{n}")
        s.add(mv <= expr * z3q(z3, lo), mv <= expr * z3q(z3, hi))
        ms.append(mv)
    return ms


def _read_dual(mdl, lam, mus) -> Dual:
    """The model's multipliers; a positive multiple of a Farkas vector is one, so the largest
    entry is scaled to 1 (short numbers)."""
    out = [[model_value(mdl, v) if v is not None else Fraction(0) for v in row] for row in lam]
    mu = [model_value(mdl, mus[0]), model_value(mdl, mus[1])]
    top = max([abs(v) for row in out for v in row] + [abs(v) for v in mu])
    if top:
        out, mu = [[v / top for v in row] for row in out], [v / top for v in mu]
    return Dual(out, mu[0], mu[1])
