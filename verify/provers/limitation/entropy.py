"""Proposition E, g = W_k^T W_q x != 0: relaxation R plus the entropy relation, piecewise in alpha.

For a single head, the prompt's attention weights w satisfy g^T pi = alpha log alpha - alpha H(w)
with 0 <= H <= log m_p.  R bounds alpha to [lo, hi]; outside (padded to [a1, a2]) R alone is
infeasible on [0, a1] and [a2, inf); on [a1, a2] (bisected if needed) the inequalities
g^T pi <= alpha log a_hi (every length) and, for a fixed length K, g^T pi >= alpha (log a_lo - log K)
are added.  The logarithms are the trusted checker's own bounds (the certificate carries none).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

from verify.provers.exact import ExpRangeError, approx
from verify.provers.limitation.blocks import Block, head_blocks
from verify.provers.limitation.context import Check
from verify.provers.limitation.farkas import EntropyIneq, EntropyPiece, Proof, dual_block
from verify.provers.limitation.groups import Group, radii
from verify.provers.limitation.relaxation import alpha_range

__all__ = ["entropy_proof", "entropy_pieces"]

_MAX_DEPTH = 4     # bisections of [a1, a2]


def entropy_proof(c: Check) -> Optional[Proof]:
    """The stage: the first group of two or more members whose head block the entropy relation
    makes infeasible for every alpha."""
    for g in c.groups:
        if len(g.members) < 2:
            continue
        rh = radii(c.k, c.model.d, c.tol, g.members)
        blks = head_blocks(c.model, c.ex, g, None, rh)
        if not blks:
            continue
        try:
            pieces = entropy_pieces(c, g, blks[0], rh)
        except ExpRangeError as exc:
            c.log.append(f"entropy relation: not tried, {exc}")
            continue
        if pieces is not None:
            return Proof(g, blks[0], rh, entropy_pieces=pieces)
    return None


def _log_lo(a: Fraction) -> Fraction:
    """The trusted checker's own lower bound on log a (the certificate carries no logarithms)."""
    from verify.checker.limitation import log_below
    return log_below(a)


def _log_hi(b: Fraction) -> Fraction:
    """The trusted checker's own upper bound on log b."""
    from verify.checker.limitation import log_above
    return log_above(b)


@dataclass
class _Relation:
    """The dual of one block with (or without) the entropy inequalities, per alpha range."""
    c: Check
    g: Group
    blk: Block
    rhos: list
    gvec: list[Fraction]
    K: Optional[Fraction]            # the question's prompt length (None: any)
    lK: Optional[Fraction]           # an upper bound on log K

    def piece(self, a_lo: Fraction, a_hi: Optional[Fraction], use_ineq: bool) -> Optional[EntropyPiece]:
        ineq = None
        if use_ineq:
            c_lo = (_log_lo(a_lo) - self.lK) if (self.K is not None and a_lo > 0) else None
            c_hi = _log_hi(a_hi) if a_hi is not None else None
            ineq = EntropyIneq(self.gvec, c_lo, c_hi)
        dual = dual_block(self.c.z3, self.blk, self.g.members, self.c.clock, False, alpha_lo=a_lo, alpha_hi=a_hi,
                          ineq=ineq, rhos=self.rhos, stage="entropy relation")
        if dual is None:
            return None
        return EntropyPiece(a_lo, a_hi, dual.lam, dual.mu_lo, dual.mu_hi)


def entropy_pieces(c: Check, g: Group, blk: Block, rhos) -> Optional[list[EntropyPiece]]:
    """Farkas pieces covering every alpha >= 0 for one head block, or None."""
    j = blk.head
    gvec = c.ex.heads[j]["W_k"].vm(c.ex.heads[j]["W_q"].mv(g.x))
    if not any(gvec):
        return None
    rng = alpha_range(c.z3, blk, g.members, False, c.clock, rhos, stage="entropy relation")
    if rng is None or rng.hi is None or rng.hi <= 0:
        return None
    a1, a2 = _padded(rng.lo, rng.hi)
    K = None if c.prompt_length == "any" else Fraction(c.prompt_length)
    rel = _Relation(c, g, blk, rhos, gvec, K, _log_hi(K) if K is not None else None)
    outer = _outer_pieces(rel, a1, a2)
    inner = _inner_pieces(rel, a1, a2) if outer is not None else None
    if inner is None:
        return None
    c.log.append(f"entropy relation excludes every alpha in [{approx(a1)}, {approx(a2)}] "
                 f"({'every length' if K is None else f'length {K}'}); R excludes the rest")
    return outer + inner


def _padded(lo: Fraction, hi: Fraction) -> tuple[Fraction, Fraction]:
    """[a1, a2] around R's range [lo, hi], with short endpoints."""
    pad = max((hi - lo), (lo + hi) / 2 * Fraction(1, 10 ** 6))
    a1 = max(Fraction(lo - pad).limit_denominator(1 << 40), Fraction(0))
    a2 = Fraction(hi + pad).limit_denominator(1 << 40)
    a1 = min(a1, lo) if a1 > lo else a1
    return a1, max(a2, hi)


def _outer_pieces(rel: _Relation, a1: Fraction, a2: Fraction) -> Optional[list[EntropyPiece]]:
    """[0, a1] (when a1 > 0) and [a2, inf): R alone, else with the entropy inequalities."""
    pieces = []
    spans = ([(Fraction(0), a1)] if a1 > 0 else []) + [(a2, None)]
    for a_lo, a_hi in spans:
        pc = rel.piece(a_lo, a_hi, False) or rel.piece(a_lo, a_hi, True)
        if pc is None:
            rel.c.log.append(f"entropy pieces: no certificate for alpha in [{approx(a_lo)}, "
                             f"{'inf' if a_hi is None else approx(a_hi)}]")
            return None
        pieces.append(pc)
    return pieces


def _inner_pieces(rel: _Relation, a1: Fraction, a2: Fraction) -> Optional[list[EntropyPiece]]:
    """[a1, a2] with the entropy inequalities, bisected up to _MAX_DEPTH times where needed."""
    pieces = []
    todo = [(a1, a2, 0)]
    while todo:
        a_lo, a_hi, depth = todo.pop()
        pc = rel.piece(a_lo, a_hi, True)
        if pc is not None:
            pieces.append(pc)
            continue
        if depth >= _MAX_DEPTH:
            rel.c.log.append(f"entropy pieces: alpha in [{approx(a_lo)}, {approx(a_hi)}] stays feasible")
            return None
        mid = ((a_lo + a_hi) / 2).limit_denominator(1 << 40)
        todo += [(a_lo, mid, depth + 1), (mid, a_hi, depth + 1)]
    return pieces
