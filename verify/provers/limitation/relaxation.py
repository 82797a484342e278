"""Relaxation R (Lemma D) in Z3: per block (linear, QF_LRA), and with all heads jointly (QF_NRA).

Per block, for every member i: V (sum_t e_it X_i[t] + pi) = (Z_i + alpha) tau_i with unknowns
alpha >= 0, pi in R^d (or v = V pi when V has full row rank) and every exponential e inside a
rigorous enclosure (scaled by exp(-shift): the system is homogeneous).  :func:`relaxation_proof`
is the stage that tries, per group, the subspace functional and then every head block, and asks
for a Farkas vector (:mod:`.farkas`) where R is infeasible.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

from verify.provers.exact import ExpRangeError, dot, exp_box, sqrt_up
from verify.provers.limitation.blocks import Block, head_blocks, try_subspace, v_full_row_rank
from verify.provers.limitation.clock import Clock, solve, z3q
from verify.provers.limitation.context import Check
from verify.provers.limitation.farkas import Proof, dual_block, farkas_margin
from verify.provers.limitation.groups import Group, Member, radii
from verify.provers.limitation.layer import head_product, short

__all__ = ["AlphaRange", "primal_constraints", "primal_block", "alpha_range", "relaxation_proof", "nonlinear_R"]


@dataclass
class AlphaRange:
    """[lo, hi] of alpha over R restricted to a block (hi None: unbounded)."""
    lo: Fraction
    hi: Optional[Fraction]


def primal_constraints(z3, block: Block, members: list[Member], v_free: bool, rhos: Optional[list] = None):
    """Constraints of relaxation R restricted to one block, and the alpha variable.  With radii
    ``rhos`` (annihilator form) row r of member i may miss by (Z + alpha) ||Phi_r|| rho_i."""
    cons = []
    alpha = z3.Real("alpha")
    q = len(block.V)
    d = len(block.V[0])
    if v_free:
        vv = [z3.Real(f"v{r}") for r in range(q)]
    else:
        pi = [z3.Real(f"pi{c}") for c in range(d)]
        vv = [z3.Sum([z3q(z3, block.V[r][c]) * pi[c] for c in range(d) if block.V[r][c]] or [z3.RealVal(0)]) for r in range(q)]
    evars: dict = {}
    for i, m in enumerate(members):
        for t, sc in enumerate(block.scores[i]):
            if sc not in evars:
                e = z3.Real(f"e{len(evars)}")
                lo, hi = exp_box(sc, block.shift)
                cons += [e >= z3q(z3, lo), e <= z3q(z3, hi)]
                evars[sc] = e
    for i, m in enumerate(members):
        Z = z3.Sum([evars[sc] for sc in block.scores[i]])
        for r in range(q):
            lhs = z3.Sum([evars[sc] * z3q(z3, vx[r]) for sc, vx in zip(block.scores[i], block.VX[i])]) + vv[r]
            rhs = (Z + alpha) * z3q(z3, block.taus[i][r])
            if rhos is not None and rhos[i] and block.Phi is not None:
                rad = sqrt_up(sum((v * v for v in block.Phi[r]), Fraction(0))) * rhos[i]
                cons += [lhs - rhs <= (Z + alpha) * z3q(z3, rad), rhs - lhs <= (Z + alpha) * z3q(z3, rad)]
            else:
                cons.append(lhs == rhs)
    return cons, alpha


def primal_block(z3, block: Block, members: list[Member], clock: Clock, v_free: bool):
    """Relaxation R restricted to one block: is there alpha > 0, pi, e in enclosures with
    V(sum_t e_t X[t] + pi) = (Z + alpha) tau_i for all members?  Returns (answer, solver)."""
    s = z3.SolverFor("QF_LRA")
    cons, alpha = primal_constraints(z3, block, members, v_free)
    s.add(alpha > 0, *cons)
    return solve(s, clock, "relaxation R"), s


def alpha_range(z3, block: Block, members: list[Member], v_free: bool, clock: Clock, rhos=None,
                stage: str = "Proposition E") -> Optional[AlphaRange]:
    """[min, max] of alpha >= 0 over R restricted to a block (None when either is not found)."""
    out = []
    for sense in ("min", "max"):
        o = z3.Optimize()
        cons, alpha = primal_constraints(z3, block, members, v_free, rhos)
        o.add(alpha >= 0, *cons)
        h = o.minimize(alpha) if sense == "min" else o.maximize(alpha)
        if solve(o, clock, stage) != "sat":
            return None
        v = o.lower(h) if sense == "min" else o.upper(h)
        if z3.is_int_value(v):
            out.append(Fraction(v.as_long()))
        elif z3.is_rational_value(v):
            out.append(Fraction(v.numerator_as_long(), v.denominator_as_long()))
        elif sense == "max" and "oo" in str(v):
            out.append(None)
        else:
            return None
    return AlphaRange(out[0], out[1])


# --------------------------------------------------------------------------- the stage

def relaxation_proof(c: Check) -> Optional[Proof]:
    """Per group (largest first): the subspace functional (L3), else every head block's R, with a
    Farkas vector that survives the tolerance slack where R is infeasible."""
    for g in c.groups:
        c.clock.check("subspace functional")
        rhos = radii(c.k, c.model.d, c.tol, g.members)
        blk = try_subspace(c.model, g, rhos, c.ex)
        if blk is not None:
            c.log.append("subspace functional found")
            return Proof(g, blk, rhos)
        c.clock.check("head blocks")
        blocks = head_blocks(c.model, c.ex, g, c.direct_sum, rhos) if c.softmax else []
        for blk in blocks:
            lam = _block_farkas(c, g, blk, rhos)
            if lam is not None:
                return Proof(g, blk, rhos, lam=lam)
    return None


def _block_farkas(c: Check, g: Group, blk: Block, rhos: list[Fraction]) -> Optional[list]:
    """R on one head block; where it is infeasible, a Farkas vector with a positive margin."""
    c.clock.check("relaxation R")
    c.clock.progress.step((blk.head or 0) + 1, c.heads, "head")
    v_free = v_full_row_rank(blk.V)
    blk.set_shift()
    try:
        ans, solver = primal_block(c.z3, blk, g.members, c.clock, v_free)
        c.last_primal = solver
    except ExpRangeError as exc:
        c.refused.append(blk.shift)
        c.log.append(f"group x={short(g.x)} head {blk.head}: not tried, {exc}")
        return None
    inexact = "" if all(r == 0 for r in rhos) else " at rounded preimages (slack checked below)"
    c.log.append(f"group x={short(g.x)} head {blk.head} ({blk.form}): R {ans}{inexact}")
    if c.artifacts:
        _write_smt2(c.artifacts, f"R_group{c.groups.index(g)}_head{blk.head}.smt2", solver)
    if ans != "unsat":
        return None
    # first the dual restricted to one row of V (a tiny LP; any of its solutions is a Farkas
    # vector of the whole block), rows where the members' targets differ most first; then the
    # whole dual
    for rows in _row_supports(blk) + [None]:
        dual = dual_block(c.z3, blk, g.members, c.clock, v_free, rhos=rhos, rows=rows)
        if dual is None:
            if rows is None:
                c.log.append("  no Farkas vector found")
            continue
        if farkas_margin(blk, g.members, dual.lam, rhos) is None:
            if rows is None:
                c.log.append("  Farkas vector does not survive the tolerance slack")
            continue
        return dual.lam
    return None


_ROW_TRIES = 4
_ROW_MIN_MULTIPLIERS = 64     # smaller duals are solved whole (fast enough)


def _row_supports(blk) -> list:
    """Up to _ROW_TRIES single rows of V, by decreasing spread of the members' tau entries (only
    for duals with more than _ROW_MIN_MULTIPLIERS multipliers).  A one-row Farkas vector is often
    valid for other heads' blocks as well (then it proves the same verdict there too)."""
    q = len(blk.V)
    if q <= 1 or len(blk.taus) < 2 or q * len(blk.taus) <= _ROW_MIN_MULTIPLIERS:
        return []
    spread = [max(float(t[r]) for t in blk.taus) - min(float(t[r]) for t in blk.taus) for r in range(q)]
    order = sorted(range(q), key=lambda r: -spread[r])
    return [[r] for r in order[:_ROW_TRIES] if spread[r] > 0]


def _write_smt2(folder: str, name: str, solver) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "w") as fh:
        fh.write(solver.to_smt2())


# --------------------------------------------------------------------------- all heads jointly

def nonlinear_R(c: Check) -> str:
    """Relaxation R with all heads jointly (bilinear): decided by Z3's nonlinear arithmetic.  Per
    head j its own alpha_j, pi_j and exponentials, scaled by exp(-largest score of the group) (each
    head's equations are homogeneous in them: short solver constants); the heads' outputs q_j sum
    to z - x (within rho where the target is inexact)."""
    z3, model, ex = c.z3, c.model, c.ex
    s = z3.SolverFor("QF_NRA")
    layer = model.layers[0]
    d = model.d
    for gi, g in enumerate(c.groups):
        rhos = radii(c.k, d, c.tol, g.members)
        alphas, betas = [], []
        for j, hd in enumerate(layer.heads):
            a = z3.Real(f"alpha_{gi}_{j}")
            s.add(a > 0)
            pi = [z3.Real(f"pi_{gi}_{j}_{i}") for i in range(d)]
            M = head_product(model, j)
            betas.append([z3.Sum([z3q(z3, M[r][i]) * pi[i] for i in range(d) if M[r][i]] or [z3.RealVal(0)]) for r in range(d)])
            alphas.append(a)
        shifts = [max(max(ex.scores(j, g.x, m.keys)) for m in g.members) for j in range(len(layer.heads))]
        for mi, m in enumerate(g.members):
            qs = []
            for j, hd in enumerate(layer.heads):
                scores = ex.scores(j, g.x, m.keys)
                es = []
                for n, sc in enumerate(scores):
                    e = z3.Real(f"e_{gi}_{mi}_{j}_{n}")
                    lo, hi = exp_box(sc, shifts[j])
                    s.add(e >= z3q(z3, lo), e <= z3q(z3, hi))
                    es.append(e)
                M = head_product(model, j)
                qv = [z3.Real(f"q_{gi}_{mi}_{j}_{r}") for r in range(d)]
                Z = z3.Sum(es)
                for r in range(d):
                    N = z3.Sum([es[n] * z3q(z3, dot(M[r], key)) for n, key in enumerate(m.keys)])
                    s.add((Z + alphas[j]) * qv[r] == N + betas[j][r])
                qs.append(qv)
            for r in range(d):
                target = z3q(z3, m.z[r] - g.x[r])
                tot = z3.Sum([qv[r] for qv in qs])
                if rhos[mi] == 0:
                    s.add(tot == target)
                else:
                    s.add(tot >= target - z3q(z3, rhos[mi]), tot <= target + z3q(z3, rhos[mi]))
    if c.artifacts:
        _write_smt2(c.artifacts, "R_nonlinear.smt2", s)
    return solve(s, c.clock, "nonlinear R")
