"""Proposition E, zero-score case: g = W_k^T W_q x = 0, so every prompt gives alpha = m_p.

With a single head and a query whose scores vanish, the prompt enters relaxation R only through
alpha (its length m_p) and its sum pi.  R restricted to the group bounds alpha to [lo, hi]:

* an integer length m in [lo, hi] (when every query is zero-score): one exact linear solve gives
  pi and the witness [pi, 0, ..., 0] of m tokens, replayed by the trusted checker;
* no integer there: Farkas certificates for alpha in [1, floor(hi)] and alpha >= floor(hi) + 1
  (or alpha = K for the fixed length K) prove that no prompt memorizes the dataset.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional

from verify.provers.exact import approx
from verify.provers.limitation.blocks import Block, head_blocks, v_full_row_rank
from verify.provers.limitation.clock import model_value, solve, z3q
from verify.provers.limitation.context import Check
from verify.provers.limitation.farkas import AlphaPiece, Proof, dual_block, farkas_margin
from verify.provers.limitation.groups import Group
from verify.provers.limitation.layer import head_product
from verify.provers.limitation.relaxation import AlphaRange, alpha_range
from verify.provers.limitation.witness import with_witness, witness_length_ok

__all__ = ["prop_e_zero_score"]


def prop_e_zero_score(c: Check) -> Optional[Proof]:
    """Proposition E, case g = 0: a proof by alpha pieces, or None.  A witness, when one is found,
    is kept in ``c.res`` (status "memorized") and None is returned."""
    zs = [g for g in c.groups if _zero_score(c, g.x) and all(m.exact for m in g.members)]
    if not zs:
        return None
    g = zs[0]
    rhos = [Fraction(0)] * len(g.members)
    blks = head_blocks(c.model, c.ex, g, None, rhos)
    if not blks:                 # W_o W_v = 0: the head adds nothing, alpha is not constrained
        return None
    blk = blks[0]
    v_free = v_full_row_rank(blk.V)
    rng = alpha_range(c.z3, blk, g.members, v_free, c.clock)
    if rng is None:
        return None
    c.log.append(f"Proposition E (zero-score query): R allows alpha in [{approx(rng.lo)}, "
                 f"{'inf' if rng.hi is None else approx(rng.hi)}]")
    lengths = _fitting_lengths(rng, c.prompt_length)
    if lengths:
        if len(zs) == len(c.groups) and witness_length_ok(max(lengths), c.log):
            _zero_score_witness(c, lengths)
        return None
    pieces = _alpha_pieces(c, g, blk, v_free, rhos, rng)
    return None if pieces is None else Proof(g, blk, rhos, alpha_pieces=pieces)


def _zero_score(c: Check, x) -> bool:
    head = c.ex.heads[0]
    return not any(head["W_k"].vm(head["W_q"].mv(x)))


def _fitting_lengths(rng: AlphaRange, prompt_length) -> list[int]:
    """The prompt lengths to try for a witness: the question's length if R admits it, else (any
    length) up to four integers in [lo, hi]."""
    lo, hi = rng.lo, rng.hi
    first = max(1, math.ceil(lo))
    if prompt_length != "any":
        fits = lo <= prompt_length and (hi is None or prompt_length <= hi)
        return [prompt_length] if fits else []
    last = first + 3 if hi is None else min(math.floor(hi), first + 3)
    return list(range(first, last + 1))


def _zero_score_witness(c: Check, lengths: list[int]) -> None:
    """The first length whose exact prompt sum exists and whose witness the checker accepts."""
    for m_p in lengths:
        pi = _zero_score_prompt_sum(c, m_p)
        if pi is not None:
            prompt = [pi] + [[Fraction(0)] * c.model.d for _ in range(m_p - 1)]
            if with_witness(c.res, c.model, c.dataset, prompt, Fraction(0)):
                c.res.method = "Proposition E: zero-score head, exact witness prompt of length " + str(m_p)
                c.log.append(f"exact witness of length {m_p}")
                return


def _alpha_pieces(c: Check, g: Group, blk: Block, v_free: bool, rhos, rng: AlphaRange) -> Optional[list[AlphaPiece]]:
    """Farkas certificates for every admissible alpha (no integer lies in [lo, hi])."""
    if c.prompt_length != "any":
        K = Fraction(c.prompt_length)
        ranges = [(K, K)]
    else:
        n = math.floor(rng.hi)
        ranges = ([(Fraction(1), Fraction(n))] if n >= 1 else []) + [(Fraction(n + 1), None)]
    pieces = []
    for a_lo, a_hi in ranges:
        dual = dual_block(c.z3, blk, g.members, c.clock, v_free, alpha_lo=a_lo, alpha_hi=a_hi, stage="Proposition E")
        if dual is None or farkas_margin(blk, g.members, dual.lam, rhos, a_lo, a_hi) is None:
            c.log.append(f"no Farkas vector for alpha in [{a_lo}, {a_hi}]")
            return None
        pieces.append(AlphaPiece(a_lo, a_hi, dual.lam))
    c.log.append("no admissible prompt length fits the range of alpha")
    return pieces


def _zero_score_prompt_sum(c: Check, m_p: int) -> Optional[list[Fraction]]:
    """Exact pi with x + M (sum_t X[t] + pi) / (n + m_p) = z for every constrained output."""
    z3, d = c.z3, c.model.d
    s = z3.SolverFor("QF_LRA")
    pi = [z3.Real(f"pi{c_}") for c_ in range(d)]
    M = head_product(c.model, 0)
    for g in c.groups:
        for m in g.members:
            tot = [sum((k[c_] for k in m.keys), Fraction(0)) for c_ in range(d)]
            n = len(m.keys)
            for r in range(d):
                lhs = z3.Sum([z3q(z3, M[r][c_]) * (pi[c_] + z3q(z3, tot[c_])) for c_ in range(d) if M[r][c_]] or [z3.RealVal(0)])
                s.add(lhs == z3q(z3, (n + m_p) * (m.z[r] - g.x[r])))
    if solve(s, c.clock, "Proposition E") != "sat":
        return None
    mdl = s.model()
    return [model_value(mdl, v) for v in pi]
