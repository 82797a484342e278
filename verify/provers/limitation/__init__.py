"""The single-layer prover: relaxation R (Lemma D) in Z3, exact Farkas certificates, Theorems
L1/L2/L3 and Proposition E.

For every query token x that carries constrained outputs (a *group*; several examples sharing x is
the L1/L2 situation) the prover looks for one *block* whose linear system has no solution:

* ``subspace`` (Theorem L3): a functional phi with phi^T W_o^j W_v^j = 0 for every head and
  phi^T (z_i - x) != 0, where z_i = MLP^{-1}(y_i) is the attention input the target needs;
* ``head`` (Theorems L1/L2): for one head j, coordinates in which only head j is seen -- either a
  functional block Phi annihilating every other head's W_o W_v ("annihilator" form), or, when the
  stacked W_o = [W_o^1 ... W_o^h] has full column rank, the exact head coordinates gamma_i with
  W_o gamma_i = z_i - x ("direct-sum" form).  In those coordinates Lemma D gives, for every
  example i of the group, V (sum_t e_it X_i[t] + pi) = (Z_i + alpha) tau_i with unknowns alpha >= 0,
  pi in R^d and every fixed-token exponential e inside a rigorous enclosure: a *linear* system.
  Z3 decides it (LRA); when it is infeasible, Z3 also solves the dual and returns an exact Farkas
  vector, which :mod:`verify.checker.limitation` re-verifies without any solver.

Tolerance EPS (max-norm) and inexact preimages are carried to the attention input through the
inverse-Lipschitz bound ||z - z'|| <= ||MLP(z) - MLP(z')|| / (1 - k), and the Farkas inequality must
hold with that slack (see proofs/tolerance.md).
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional

import numpy as np

from constructions.forward import forward_torch
from constructions.model import (Dataset, InputError, IntMatrix, Model, as_float, as_fraction, as_scaled_int,
                                 dataset_to_json, model_to_json, save_model)

from verify.provers.assumptions import certify_mlp, rank_certificate
from verify.provers.exact import (EXP_ARG_LIMIT, ExpRangeError, dot, exp_box, exp_score, fmt, frac_vec,
                                  approx, left_null_basis, project_onto_span, solve, sqrt_up, z3_numeral)
from verify.result import Result, Status, certificate, embed, memorization_question, solver_info

__all__ = ["check_memorization", "prove_limitation", "ExactLayer", "CERT_KIND", "WITNESS_KIND"]

CERT_KIND = "limitation-farkas"
WITNESS_KIND = "prompt-witness"
_SMALL_D = 48      # up to this d, exact annihilators (which support tolerance) are preferred
_INLINE_LIMIT = 200_000  # numbers; larger models/datasets are written next to the result


# --------------------------------------------------------------------------- exact helpers

_frac_vec, _dotq, _rat_str = frac_vec, dot, fmt      # verify.provers.exact: the one copy


def _vec_str(v) -> list[str]:
    return [_rat_str(Fraction(x)) for x in v]


class ExactLayer:
    """Integer-scaled copies of one layer's matrices for fast exact arithmetic."""

    def __init__(self, model: Model, index: int = 0):
        layer = model.layers[index]
        self.layer = layer
        self.kind = layer.kind
        self.d = model.d
        self.W1, self.W2 = IntMatrix(layer.W_1), IntMatrix(layer.W_2)
        self.b1, self.b2 = _frac_vec(as_fraction(layer.b_1)), _frac_vec(as_fraction(layer.b_2))
        self.heads = [{n: IntMatrix(getattr(h, n)) for n in ("W_q", "W_k", "W_v", "W_o")} for h in layer.heads]

    def mlp(self, z: list[Fraction]) -> list[Fraction]:
        pre = self.W1.mv(z)
        hid = [max(p + b, Fraction(0)) for p, b in zip(pre, self.b1)]
        post = self.W2.mv(hid)
        return [a + b + c for a, b, c in zip(z, post, self.b2)]

    def scores(self, j: int, x: list[Fraction], keys: list[list[Fraction]]) -> list[Fraction]:
        q = self.heads[j]["W_q"].mv(x)
        return [_dotq(self.heads[j]["W_k"].mv(k), q) for k in keys]


def _left_null_exact(A: list[list[Fraction]]) -> list[list[Fraction]]:
    """Exact basis of {phi : phi^T A = 0} for a rational d x n matrix A (rows as lists)."""
    return left_null_basis(A)


# --------------------------------------------------------------------------- data of a check

@dataclass
class Member:
    example: int
    position: int
    y: list[Fraction]
    z: list[Fraction]                # claimed attention input (exact rational)
    exact: bool                      # MLP(z) == y exactly
    resid2: Fraction                 # ||y - MLP(z)||_2^2
    keys: list[list[Fraction]]       # visible input tokens (the attended part of X_i)


@dataclass
class Group:
    x: list[Fraction]
    members: list[Member] = field(default_factory=list)


class _LazyRows:
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


@dataclass
class Block:
    """A linear system V (sum_t e_t X[t] + pi) = (Z + alpha) tau_i for one head (or V = 0 for the
    subspace form), with its certificate data."""
    form: str                        # "subspace" | "annihilator" | "direct-sum"
    head: Optional[int]
    V: list[list[Fraction]]          # q x d
    taus: list[list[Fraction]]
    Phi: Optional[list[list[Fraction]]] = None
    gammas: Optional[list[list[Fraction]]] = None
    scores: list[list[Fraction]] = field(default_factory=list)   # per member, per visible key
    VX: list = field(default_factory=list)                        # per member, per key: V key
    Vmat: Optional[IntMatrix] = None                              # V as an integer matrix (direct-sum)
    shift: Fraction = Fraction(0)    # solver boxes hold exp(s - shift): the system is homogeneous

    def __post_init__(self):
        if self.V is None:  # direct-sum: V = W_v^j, materialised as Fractions only on demand
            self.V = _LazyRows(self.Vmat)

    def lamV(self, lam_total: list[Fraction]) -> list[Fraction]:
        """lam^T V, exactly."""
        if self.Vmat is not None:
            return self.Vmat.vm(lam_total)
        d = len(self.V[0])
        return [sum((lam_total[r] * self.V[r][c] for r in range(len(self.V)) if lam_total[r]), Fraction(0)) for c in range(d)]


def _weights(k: Fraction, d: int, tol: Fraction, members: list[Member]) -> list[Fraction]:
    """rho_i: radius (2-norm) around z_i that the true attention input may lie in."""
    if k >= 1:
        raise ValueError("k >= 1")
    sd = sqrt_up(Fraction(d))
    return [(sqrt_up(m.resid2) + sd * tol) / (1 - k) for m in members]


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
        g_alpha -= _dotq(lam[i], block.taus[i])
        w_alpha += w
        for t, key in enumerate(m.keys):
            vx = block.VX[i][t]
            coef = _dotq(lam[i], [a - b for a, b in zip(vx, block.taus[i])])
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


# --------------------------------------------------------------------------- time and solver answers

class OutOfTime(Exception):
    """The check's time ran out during ``stage`` (reported as status "timeout", ``info.stage``)."""

    def __init__(self, stage: str):
        super().__init__(stage)
        self.stage = stage


class _Clock:
    """The one deadline of a check, honoured by every stage: ``ms(stage)`` is a solver's time
    limit (what is left) and raises :class:`OutOfTime` when nothing is left."""

    def __init__(self, seconds: float):
        self.start = time.perf_counter()
        self.end = self.start + seconds
        self.res: Optional[Result] = None    # the result being built (status "timeout" on OutOfTime)

    def left(self) -> float:
        return self.end - time.perf_counter()

    def check(self, stage: str) -> None:
        if self.left() <= 0:
            raise OutOfTime(stage)

    def ms(self, stage: str) -> int:
        self.check(stage)
        return max(1, int(min(self.left(), 1e6) * 1000))   # Z3 takes an unsigned 32-bit count


def z3_outcome(solver, answer) -> str:
    """The one map from a Z3 answer to the prover's outcomes: "sat", "unsat", "timeout" (unknown
    because the time limit struck: reason "timeout" or "canceled"), else "unknown" (incomplete
    theory, resource limit, ...)."""
    a = str(answer)
    if a in ("sat", "unsat"):
        return a
    return "timeout" if solver.reason_unknown() in ("timeout", "canceled") else "unknown"


def _solve(solver, clock: _Clock, stage: str) -> str:
    """solver.check() within the clock: "sat", "unsat" or "unknown"; OutOfTime on a timeout."""
    solver.set("timeout", clock.ms(stage))
    ans = z3_outcome(solver, solver.check())
    if ans == "timeout":
        raise OutOfTime(stage)
    return ans


# --------------------------------------------------------------------------- Z3 encodings

def _z3q(z3, q: Fraction):
    return z3.RealVal(z3_numeral(q))


def _primal_constraints(z3, block: Block, members: list[Member], v_free: bool, rhos: Optional[list] = None):
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
        vv = [z3.Sum([_z3q(z3, block.V[r][c]) * pi[c] for c in range(d) if block.V[r][c]] or [z3.RealVal(0)]) for r in range(q)]
    evars: dict = {}
    for i, m in enumerate(members):
        for t, sc in enumerate(block.scores[i]):
            if sc not in evars:
                e = z3.Real(f"e{len(evars)}")
                lo, hi = exp_box(sc, block.shift)
                cons += [e >= _z3q(z3, lo), e <= _z3q(z3, hi)]
                evars[sc] = e
    for i, m in enumerate(members):
        Z = z3.Sum([evars[sc] for sc in block.scores[i]])
        for r in range(q):
            lhs = z3.Sum([evars[sc] * _z3q(z3, vx[r]) for sc, vx in zip(block.scores[i], block.VX[i])]) + vv[r]
            rhs = (Z + alpha) * _z3q(z3, block.taus[i][r])
            if rhos is not None and rhos[i] and block.Phi is not None:
                rad = sqrt_up(sum((v * v for v in block.Phi[r]), Fraction(0))) * rhos[i]
                cons += [lhs - rhs <= (Z + alpha) * _z3q(z3, rad), rhs - lhs <= (Z + alpha) * _z3q(z3, rad)]
            else:
                cons.append(lhs == rhs)
    return cons, alpha


def _primal_block(z3, block: Block, members: list[Member], clock: _Clock, v_free: bool):
    """Relaxation R restricted to one block: is there alpha > 0, pi, e in enclosures with
    V(sum_t e_t X[t] + pi) = (Z + alpha) tau_i for all members?  Returns (answer, solver)."""
    s = z3.SolverFor("QF_LRA")
    cons, alpha = _primal_constraints(z3, block, members, v_free)
    s.add(alpha > 0, *cons)
    return _solve(s, clock, "relaxation R"), s


def _alpha_range(z3, block: Block, members: list[Member], v_free: bool, clock: _Clock, rhos=None,
                 stage: str = "Proposition E"):
    """[min, max] of alpha >= 0 over R restricted to a block (max None when unbounded)."""
    out = []
    for sense in ("min", "max"):
        o = z3.Optimize()
        cons, alpha = _primal_constraints(z3, block, members, v_free, rhos)
        o.add(alpha >= 0, *cons)
        h = o.minimize(alpha) if sense == "min" else o.maximize(alpha)
        if _solve(o, clock, stage) != "sat":
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
    return out


def _dual_block(z3, block: Block, members: list[Member], clock: _Clock, v_free: bool,
                alpha_lo: Fraction = Fraction(0), alpha_hi: Optional[Fraction] = None,
                ineq: Optional[tuple] = None, rhos: Optional[list] = None, stage: str = "Farkas dual"):
    """Exact Farkas vector for an infeasible block via Z3 (LRA), or None.

    ``ineq = (g, c_lo, c_hi)`` adds the entropy inequalities g^T pi >= c_lo alpha (c_lo not None)
    and g^T pi <= c_hi alpha (c_hi not None); then (lambda, mu_lo, mu_hi) is returned.  With radii
    ``rhos`` (annihilator form) the multipliers must also beat the slack of inexact targets."""
    q = len(block.V)
    d = len(block.V[0])
    K = len(members)
    s = z3.SolverFor("QF_LRA")
    lam = [[z3.Real(f"l{i}_{r}") for r in range(q)] for i in range(K)]
    mus = [z3.Real("mu_lo"), z3.Real("mu_hi")]
    s.add(mus[0] >= 0, mus[1] >= 0)
    if ineq is None or ineq[1] is None:
        s.add(mus[0] == 0)
    if ineq is None or ineq[2] is None:
        s.add(mus[1] == 0)
    if ineq is not None:
        gv = ineq[0]
        for c in range(d):
            terms = [lam[i][r] * _z3q(z3, block.V[r][c]) for i in range(K) for r in range(q) if block.V[r][c]]
            if gv[c]:
                terms.append((mus[1] - mus[0]) * _z3q(z3, gv[c]))
            if terms:
                s.add(z3.Sum(terms) == 0)
    elif v_free:
        for r in range(q):
            s.add(z3.Sum([lam[i][r] for i in range(K)]) == 0)
    else:
        for c in range(d):
            terms = [lam[i][r] * _z3q(z3, block.V[r][c]) for i in range(K) for r in range(q) if block.V[r][c]]
            if terms:
                s.add(z3.Sum(terms) == 0)
    g_alpha = -z3.Sum([lam[i][r] * _z3q(z3, block.taus[i][r]) for i in range(K) for r in range(q) if block.taus[i][r]] or [z3.RealVal(0)])
    if ineq is not None:
        if ineq[1] is not None:
            g_alpha = g_alpha + mus[0] * _z3q(z3, ineq[1])
        if ineq[2] is not None:
            g_alpha = g_alpha - mus[1] * _z3q(z3, ineq[2])
    ws = [z3.RealVal(0)] * K
    if rhos is not None and block.Phi is not None and any(rhos):
        # w_i >= rho_i ||Phi^T lambda_i||_1 >= rho_i ||Phi^T lambda_i||_2 (the checker uses the 2-norm)
        ws = []
        for i in range(K):
            ts = []
            for c in range(d):
                v = z3.Sum([lam[i][r] * _z3q(z3, block.Phi[r][c]) for r in range(q) if block.Phi[r][c]] or [z3.RealVal(0)])
                t = z3.Real(f"t{i}_{c}")
                s.add(t >= v, t >= -v)
                ts.append(t)
            ws.append(_z3q(z3, rhos[i]) * z3.Sum(ts))
        g_alpha = g_alpha - z3.Sum(ws)
    m_alpha = z3.Real("m_alpha")
    s.add(m_alpha <= g_alpha * _z3q(z3, Fraction(alpha_lo)))
    if alpha_hi is None:
        s.add(g_alpha >= 0)
    else:
        s.add(m_alpha <= g_alpha * _z3q(z3, Fraction(alpha_hi)))
    g: dict = {}
    for i, m in enumerate(members):
        for t, key in enumerate(m.keys):
            vx = block.VX[i][t]
            coefs = [a - b for a, b in zip(vx, block.taus[i])]
            term = z3.Sum([lam[i][r] * _z3q(z3, coefs[r]) for r in range(q) if coefs[r]] or [z3.RealVal(0)])
            sc = block.scores[i][t]
            g[sc] = g[sc] + term if sc in g else term
    ms = []
    for n, (sc, expr) in enumerate(g.items()):
        lo, hi = exp_box(sc, block.shift)
        cnt = [sum(1 for t in block.scores[i] if t == sc) for i in range(K)]
        expr = expr - z3.Sum([ws[i] * cnt[i] for i in range(K) if cnt[i]] or [z3.RealVal(0)])
        mv = z3.Real(f"m{n}")
        s.add(mv <= expr * _z3q(z3, lo), mv <= expr * _z3q(z3, hi))
        ms.append(mv)
    s.add(z3.Sum(ms) + m_alpha >= 1)
    if _solve(s, clock, stage) != "sat":
        return None
    mdl = s.model()

    def val(v):
        r = mdl.eval(v, model_completion=True)
        return Fraction(r.numerator_as_long(), r.denominator_as_long())
    out = [[val(lam[i][r]) for r in range(q)] for i in range(K)]
    mu = [val(mus[0]), val(mus[1])]
    # a positive multiple of a Farkas vector is one: scale the largest entry to 1 (short numbers)
    top = max([abs(v) for row in out for v in row] + [abs(v) for v in mu])
    if top:
        out, mu = [[v / top for v in row] for row in out], [v / top for v in mu]
    if ineq is not None:
        return out, mu[0], mu[1]
    return out


# --------------------------------------------------------------------------- the prover

def _preimage(ex: ExactLayer, y: list[Fraction]) -> tuple[list[Fraction], bool, Fraction]:
    """z with MLP(z) = y: a float fixed point, rounded to the simplest rationals that pass a float
    residual test, then checked exactly.  Returns (z, exact, ||y - MLP(z)||^2)."""
    from constructions.datasets import mlp_float, mlp_inverse_float
    yf = np.array([float(v) for v in y])
    zf = mlp_inverse_float(ex.layer, yf)
    z, r2 = None, None
    for z in _rational_candidates(zf, lambda zr: np.max(np.abs(mlp_float(ex.layer, zr) - yf)) <= 1e-10 * (1.0 + float(np.max(np.abs(yf))))):
        r = [a - b for a, b in zip(y, ex.mlp(z))]
        r2 = sum((v * v for v in r), Fraction(0))
        if r2 == 0:
            return z, True, r2
    if len(y) <= 64:
        z = _pattern_preimage(ex, y, zf)
        if z is not None:
            return z, True, Fraction(0)
    z = [Fraction(float(v)) for v in zf]
    r = [a - b for a, b in zip(y, ex.mlp(z))]
    return z, False, sum((v * v for v in r), Fraction(0))


def _pattern_preimage(ex: ExactLayer, y: list[Fraction], zf: np.ndarray) -> Optional[list[Fraction]]:
    """Exact z with MLP(z) = y: fix the ReLU pattern D of the float solution and solve
    (I + W_2 D W_1) z = y - b_2 - W_2 D b_1 in rationals; accepted only if MLP(z) == y exactly."""
    layer = ex.layer
    W1, W2 = as_fraction(layer.W_1), as_fraction(layer.W_2)
    with np.errstate(all="ignore"):
        act = (as_float(layer.W_1) @ zf + as_float(layer.b_1)) > 0
    d = len(y)
    A = [[Fraction(int(r == c)) for c in range(d)] for r in range(d)]
    rhs = [y[r] - ex.b2[r] for r in range(d)]
    for k in np.nonzero(act)[0]:
        for r in range(d):
            w2 = W2[r, k]
            if w2:
                rhs[r] -= w2 * ex.b1[k]
                for c in range(d):
                    A[r][c] += w2 * W1[k, c]
    for c in range(d):  # Gauss-Jordan elimination in rationals
        piv = next((r for r in range(c, d) if A[r][c] != 0), None)
        if piv is None:
            return None
        A[c], A[piv], rhs[c], rhs[piv] = A[piv], A[c], rhs[piv], rhs[c]
        for r in range(d):
            if r != c and A[r][c] != 0:
                f = A[r][c] / A[c][c]
                A[r] = [a - f * b for a, b in zip(A[r], A[c])]
                rhs[r] -= f * rhs[c]
    z = [rhs[r] / A[r][r] for r in range(d)]
    return z if ex.mlp(z) == y else None


def _flt(q) -> float:
    """float(q), or +-inf where q is beyond the binary64 range (numerics only propose)."""
    try:
        return float(q)
    except OverflowError:
        return math.inf if q > 0 else -math.inf


def _dyadic(v: float, k: int) -> Fraction:
    """The finite float v rounded to a multiple of 2^-k (exactly, however large v is)."""
    if abs(v) >= 2.0 ** 900:
        return Fraction(round(Fraction(v) * (1 << k)), 1 << k)
    return Fraction(round(v * (1 << k)), 1 << k)


def _rational_candidates(vf: np.ndarray, ok, limit: int = 3):
    """Rational vectors near the float vector vf, simplest first: dyadic roundings 2^-k (cheap
    exact arithmetic), then continued-fraction roundings (small vectors only), then vf itself.
    ``ok`` is a float pre-test; at most ``limit`` candidates are yielded."""
    n = 0
    seen = set()
    if not np.all(np.isfinite(vf)):
        return
    gens = [[_dyadic(float(v), k) for v in vf] for k in range(4, 62, 2)]
    if len(vf) <= 64:
        gens += [[Fraction(float(v)).limit_denominator(1 << k) for v in vf] for k in (6, 10, 16, 24, 32)]
    gens.append([Fraction(float(v)) for v in vf])
    for z in gens:
        key = tuple(z)
        if key in seen:
            continue
        seen.add(key)
        if ok(np.array([float(v) for v in z])):
            yield z
            n += 1
            if n >= limit:
                return


def _groups(model: Model, ds: Dataset, ex: ExactLayer, clock: Optional[_Clock] = None) -> list[Group]:
    groups: dict = {}
    for i, e in enumerate(ds.examples):
        Xq = [_frac_vec(as_fraction(row)) for row in e.input]
        for t, y in enumerate(e.output):
            if y is None:
                continue
            if clock is not None:
                clock.check("MLP preimages")
            key = tuple(Xq[t])
            g = groups.setdefault(key, Group(x=list(key)))
            keys = Xq[: t + 1] if model.causal else Xq
            yq = _frac_vec(as_fraction(y))
            z, exact, r2 = _preimage(ex, yq)
            g.members.append(Member(i, t, yq, z, exact, r2, keys))
    return sorted(groups.values(), key=lambda g: -len(g.members))


def _direct_sum(ex: ExactLayer, model: Model) -> Optional[dict]:
    layer = model.layers[0]
    Wf = np.concatenate([as_float(h.W_o) for h in layer.heads], axis=1)
    if Wf.shape[1] > Wf.shape[0]:
        return None
    try:
        if Wf.shape[1] < Wf.shape[0] and np.linalg.matrix_rank(Wf) < Wf.shape[1]:
            return None
    except np.linalg.LinAlgError:       # float SVD failed (huge weights): the exact test decides
        pass
    W = np.concatenate([h.W_o for h in layer.heads], axis=1)
    if W.dtype != np.float64:
        W = W.astype(object)
    cert = rank_certificate(W)
    if cert is None:
        return None
    return {"W": W, "Wf": Wf, "rank": cert, "Wint": IntMatrix(W)}


def _solve_gammas(ds_info: dict, cs: list[list[Fraction]]) -> Optional[list[list[Fraction]]]:
    """Exact head coordinates gamma with W_o gamma = c: float solve, simplest rationals, exact check."""
    Wf = ds_info["Wf"]
    C = np.array([[_flt(v) for v in c] for c in cs]).T
    try:
        with np.errstate(all="ignore"):
            sol = np.linalg.solve(Wf, C) if Wf.shape[0] == Wf.shape[1] else np.linalg.lstsq(Wf, C, rcond=None)[0]
    except (np.linalg.LinAlgError, ValueError):
        return None
    out = []
    for col, c in zip(sol.T, cs):
        found = None
        cf = np.array([_flt(v) for v in c])
        for g in _rational_candidates(col, lambda gr: np.max(np.abs(Wf @ gr - cf)) <= 1e-10 * (1 + np.max(np.abs(cf)))):
            if ds_info["Wint"].mv(g) == c:
                found = g
                break
        if found is None:
            found = _flint_solve(ds_info, c)
        if found is None:
            return None
        out.append(found)
    return out


def _flint_solve(ds_info: dict, c: list[Fraction]) -> Optional[list[Fraction]]:
    try:
        import flint  # optional exact solver (pip install "ptverify[exact]")
    except ImportError:
        return None
    Wq = as_fraction(ds_info["W"])
    if Wq.shape[0] != Wq.shape[1]:
        return None
    A = flint.fmpq_mat([[flint.fmpq(v.numerator, v.denominator) for v in row] for row in Wq.tolist()])
    b = flint.fmpq_mat([[flint.fmpq(v.numerator, v.denominator)] for v in c])
    x = A.solve(b)
    g = [Fraction(int(x[r, 0].p), int(x[r, 0].q)) for r in range(x.nrows())]
    return g if ds_info["Wint"].mv(g) == c else None


def _M_exact(model: Model, j: int) -> list[list[Fraction]]:
    h = model.layers[0].heads[j]
    return as_fraction(h.W_o).dot(as_fraction(h.W_v)).tolist()


def _matmul(A, B):
    return [[sum((A[i][k] * B[k][j] for k in range(len(B))), Fraction(0)) for j in range(len(B[0]))] for i in range(len(A))]


def _hstack(mats):
    return [sum((m[r] for m in mats), []) for r in range(len(mats[0]))]


def _v_full_row_rank(V) -> bool:
    """Is V of full row rank (certified)?  Then pi may be replaced by free v = V pi.  False is
    always safe (pi stays explicit)."""
    try:
        if isinstance(V, _LazyRows):
            Vf = V.M.N.astype(np.float64) / V.M.D
            if not np.all(np.isfinite(Vf)) or np.linalg.matrix_rank(Vf) < Vf.shape[0]:
                return False
            return rank_certificate(np.ascontiguousarray(Vf.T)) is not None
        Vf = np.array([[_flt(x) for x in row] for row in V])
        if Vf.shape[0] > Vf.shape[1] or not np.all(np.isfinite(Vf)) or np.linalg.matrix_rank(Vf) < Vf.shape[0]:
            return False
    except (OverflowError, np.linalg.LinAlgError):
        return False
    return rank_certificate(np.array(V, dtype=object).T) is not None


def check_memorization(model: Model, dataset: Dataset, prompt_length="any", tolerance=Fraction(0),
                       timeout: float = 60.0, artifacts: Optional[str] = None, claim: str = "L1",
                       search_witness: bool = True, inputs_extra: Optional[dict] = None,
                       side_files: Optional[str] = None, nonlinear: bool = True) -> Result:
    """Decide whether some prompt memorizes ``dataset`` (see :func:`_check_memorization`) within
    ``timeout`` seconds for everything but the trusted checker's final check: when a stage runs out
    of time the status is "timeout" and ``info.stage`` names that stage."""
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise InputError("--timeout", "a finite number of seconds > 0", repr(timeout)[:40])
    clock = _Clock(timeout)
    try:
        return _check_memorization(model, dataset, prompt_length, tolerance, timeout, artifacts, claim,
                                   search_witness, inputs_extra, side_files, nonlinear, clock)
    except OutOfTime as exc:
        res = clock.res
        res.status, res.certificate, res.reported = Status.TIMEOUT, None, {}
        res.extra["stage"] = exc.stage
        res.message = f"ran out of time (--timeout {timeout:g} s) in stage '{exc.stage}'; nothing is claimed"
        res.seconds["solve"] = time.perf_counter() - clock.start - res.seconds.get("build", 0.0)
        return res


def _check_memorization(model: Model, dataset: Dataset, prompt_length, tolerance, timeout: float,
                        artifacts: Optional[str], claim: str, search_witness: bool, inputs_extra: Optional[dict],
                        side_files: Optional[str], nonlinear: bool, clock: _Clock) -> Result:
    """Decide whether some prompt memorizes ``dataset`` (single-layer ``model``).

    Returns "proved" only with a certificate the trusted checker (:mod:`verify.checker`) accepts,
    "memorized" only with a witness it replays; otherwise "unknown".  The result is a
    ``ptverify-result/2`` envelope (question, inputs, certificate).  Models and datasets too large
    to embed are written as content-addressed side files (``<sha256 prefix>.npz`` / ``.json``) in
    the folder of ``side_files`` (default: a temporary folder), where the result file must be
    written for ``ptverify replay`` to find them.  ``inputs_extra`` goes to ``info``."""
    import z3
    t0 = time.perf_counter()
    tol = Fraction(tolerance)
    if tol < 0:
        raise InputError("--tolerance", "a number >= 0", str(tolerance))
    if prompt_length != "any" and (not isinstance(prompt_length, int) or not 1 <= prompt_length <= 1 << 40):
        raise InputError("--prompt-length", "a positive integer of at most 2**40, or 'any'", repr(prompt_length)[:40])
    for i, e in enumerate(dataset.examples):
        if e.input.shape[1] != model.d:
            raise InputError(f"examples[{i}].input", f"tokens of d = {model.d} entries (the model's d)",
                             f"{e.input.shape[1]} entries")
    if len(model.layers) > 1:
        import verify.provers.multilayer as multilayer
        fn = getattr(multilayer, "check_multilayer", None)
        if fn is None:
            return Result(claim=claim, status=Status.UNKNOWN, message="multi-layer models are not supported by this build")
        return fn(model, dataset, prompt_length=prompt_length, tolerance=tol, timeout=timeout)
    res = _new_result(model, dataset, claim, prompt_length, tol, side_files, inputs_extra)
    clock.res = res
    log: list = []
    res.extra["log"] = log
    layer = model.layers[0]
    mlpc = _mlp_certificate(layer)
    res.checks["mlp_injective"] = bool(mlpc["injective"])
    res.extra["assumptions"] = {"mlp_lipschitz_bound": approx(mlpc["k"]), "mlp_bound_methods": mlpc["methods"]}
    ex = ExactLayer(model)
    groups = _groups(model, dataset, ex, clock)
    res.seconds["build"] = time.perf_counter() - t0
    if not groups:
        res.message = "the dataset constrains no output; every prompt memorizes it"
        if _witness_length_ok(prompt_length, log):
            _with_witness(res, model, dataset, [[0] * model.d] * (1 if prompt_length == "any" else prompt_length), tol)
        return res
    if _attention_free(model) and _attention_free_witness(res, model, dataset, ex, groups, tol, prompt_length, log):
        return res
    if not mlpc["injective"]:
        res.message = (f"assumption 'injective MLP' not certified: the rigorous bound ||W_1|| ||W_2|| <= "
                       f"{approx(mlpc['k'])} is not < 1; no limitation is claimed")
        res.checks["assumption_failed"] = "injective MLP"
        if search_witness:
            _timed_search(res, model, dataset, tol, prompt_length, clock)
        return res
    t1 = time.perf_counter()
    k = mlpc["k"]
    h = len(layer.heads)
    # head coordinates: needed for several heads, and for one large head (no exact Phi there)
    ds_info = _direct_sum(ex, model) if (h > 1 or model.d > _SMALL_D) and layer.kind == "softmax" else None
    res.extra["assumptions"]["direct_sum"] = (ds_info is not None) if h > 1 else "single head"
    found = None
    refused: list = []          # blocks whose scores lie beyond the checker's exponential range
    for g in groups:
        clock.check("subspace functional")
        rhos = _weights(k, model.d, tol, g.members)
        blk = _try_subspace(model, g, rhos, ex)
        if blk is not None:
            found = (g, blk, None, rhos)
            log.append("subspace functional found")
            break
        clock.check("head blocks")
        blocks = _head_blocks(model, ex, g, ds_info, rhos) if layer.kind == "softmax" else []
        for blk in blocks:
            clock.check("relaxation R")
            v_free = _v_full_row_rank(blk.V)
            blk.shift = max(max((s_ for row in blk.scores for s_ in row), default=Fraction(0)), Fraction(-EXP_ARG_LIMIT))
            try:
                ans, solver = _primal_block(z3, blk, g.members, clock, v_free)
            except ExpRangeError as exc:
                refused.append(blk.shift)
                log.append(f"group x={_short(g.x)} head {blk.head}: not tried, {exc}")
                continue
            inexact = "" if all(r == 0 for r in rhos) else " at rounded preimages (slack checked below)"
            log.append(f"group x={_short(g.x)} head {blk.head} ({blk.form}): R {ans}{inexact}")
            if artifacts:
                os.makedirs(artifacts, exist_ok=True)
                with open(os.path.join(artifacts, f"R_group{groups.index(g)}_head{blk.head}.smt2"), "w") as fh:
                    fh.write(solver.to_smt2())
            if ans != "unsat":
                continue
            lam = _dual_block(z3, blk, g.members, clock, v_free, rhos=rhos)
            if lam is None:
                log.append("  no Farkas vector found")
                continue
            if farkas_margin(blk, g.members, lam, rhos) is None:
                log.append("  Farkas vector does not survive the tolerance slack")
                continue
            found = (g, blk, lam, rhos)
            break
        if found:
            break
    if found is None and h == 1 and layer.kind == "softmax" and tol == 0:
        found = _prop_e_zero_score(z3, model, ex, groups, dataset, res, log, clock, prompt_length)
        if res.status == Status.MEMORIZED:
            res.seconds["solve"] = time.perf_counter() - t1
            res.extra["log"] = log
            return res
    if found is None and h == 1 and layer.kind == "softmax":
        for g in groups:
            if len(g.members) < 2:
                continue
            rh = _weights(k, model.d, tol, g.members)
            blks = _head_blocks(model, ex, g, None, rh)
            if not blks:
                continue
            try:
                ent = _entropy_proof(z3, model, ex, g, blks[0], rh, prompt_length, clock, log)
            except ExpRangeError as exc:
                log.append(f"entropy relation: not tried, {exc}")
                continue
            if ent is not None:
                found = (g, blks[0], None, rh, None, ent)
                break
    if nonlinear and h > 1 and ds_info is None and model.d <= 6 and layer.kind == "softmax":
        try:
            ans = _nonlinear_R(z3, model, ex, groups, k, tol, clock, artifacts)
        except ExpRangeError as exc:
            ans = f"not tried ({exc})"
        except OutOfTime:
            if found is None:
                raise
            ans = "timeout"
        res.solver["nonlinear_R"] = ans
        log.append(f"nonlinear R (QF_NRA, all heads jointly): {ans}")
    res.seconds["solve"] = time.perf_counter() - t1
    res.extra["log"] = log
    if found is not None:
        g, blk, lam = found[:3]
        pieces = found[4] if len(found) > 4 else None
        ent = found[5] if len(found) > 5 else None
        res.certificate = certificate(CERT_KIND, _certificate(model, g, blk, lam, pieces, ent))
        res.method = _proof_method(blk, g, pieces, ent)
        if "nonlinear_R" in res.solver:
            res.method += f"; Z3 QF_NRA on R with all heads jointly: {res.solver['nonlinear_R']}"
        t2 = time.perf_counter()
        _vet_proof(res)
        res.seconds["check"] = time.perf_counter() - t2
        return res
    if search_witness:
        t3 = time.perf_counter()
        _timed_search(res, model, dataset, tol, prompt_length, clock)
        res.seconds["witness"] = time.perf_counter() - t3
    if res.status == Status.UNKNOWN and refused and not res.message:
        res.message = (f"attention scores up to {approx(max(refused))} lie beyond the trusted checker's "
                       f"exponential range (|s| <= {EXP_ARG_LIMIT}), so no head certificate it could check exists "
                       "for those blocks; nothing else decided the question")
    if res.status == Status.UNKNOWN and not res.message and res.solver.get("nonlinear_R") == "unsat":
        res.message = ("Z3 (QF_NRA) reports relaxation R infeasible with all heads jointly, but no exact "
                       "certificate was found (every head's output space lies in the span of the others, so no "
                       "projection isolates a head); 'proved' is not claimed without a certificate")
    if res.status == Status.UNKNOWN and not res.message:
        res.message = "relaxation R is feasible for every block tried and no witness prompt was found"
        if layer.kind == "hardmax":
            res.message += ("; for hardmax layers only the attention-subspace argument (L3) is implemented: "
                            "Lemma D's softmax relaxation does not apply")
    return res


#: longest witness prompt the prover writes (the checker replays every token of it)
_MAX_WITNESS_TOKENS = 4096


def _witness_length_ok(prompt_length, log: list) -> bool:
    if prompt_length == "any" or prompt_length <= _MAX_WITNESS_TOKENS:
        return True
    log.append(f"no witness of length {prompt_length} is built (at most {_MAX_WITNESS_TOKENS} tokens)")
    return False


def _timed_search(res: Result, model: Model, dataset: Dataset, tol: Fraction, prompt_length, clock: _Clock) -> None:
    """The witness search within what is left of the clock (at most 20 s); OutOfTime when the
    clock, not the search's own schedule, ended it without a witness."""
    if clock.left() < 0.5:               # torch's start-up alone takes longer than that
        raise OutOfTime("witness search")
    _search_witness(res, model, dataset, tol, prompt_length, budget=min(20.0, clock.left()))
    if res.status != Status.MEMORIZED and clock.left() <= 0:
        raise OutOfTime("witness search")


def _prop_e_zero_score(z3, model, ex, groups, dataset, res, log, clock: _Clock, prompt_length="any"):
    """Proposition E, case g = W_k^T W_q x = 0: every prompt gives alpha = m_p, its length.

    R restricted to the group bounds alpha to [lo, hi].  If an integer m lies there and every
    query is zero-score, one exact linear solve gives the prompt sum pi and the witness
    [pi, 0, ..., 0] (m tokens), replayed exactly.  If no integer lies there, a Farkas certificate
    for alpha in [1, floor(hi)] and one for alpha >= floor(hi) + 1 prove that no prompt of any
    length memorizes the dataset.  Returns the found tuple for a proof, else None."""
    head = ex.heads[0]

    def zero_score(x):
        return not any(head["W_k"].vm(head["W_q"].mv(x)))
    zs = [g for g in groups if zero_score(g.x) and all(m.exact for m in g.members)]
    if not zs:
        return None
    g = zs[0]
    rhos = [Fraction(0)] * len(g.members)
    blks = _head_blocks(model, ex, g, None, rhos)
    if not blks:                 # W_o W_v = 0: the head adds nothing, alpha is not constrained
        return None
    blk = blks[0]
    v_free = _v_full_row_rank(blk.V)
    rng = _alpha_range(z3, blk, g.members, v_free, clock)
    if rng is None:
        return None
    lo, hi = rng
    log.append(f"Proposition E (zero-score query): R allows alpha in [{approx(lo)}, "
               f"{'inf' if hi is None else approx(hi)}]")
    first = max(1, math.ceil(lo))
    if prompt_length != "any":
        fits = lo <= prompt_length and (hi is None or prompt_length <= hi)
        candidates = [prompt_length] if fits else []
    else:
        last = first + 3 if hi is None else min(math.floor(hi), first + 3)
        candidates = list(range(first, last + 1))
    if candidates:
        if len(zs) != len(groups) or not _witness_length_ok(max(candidates), log):
            return None
        for m_p in candidates:
            pi = _zero_score_prompt_sum(z3, model, ex, groups, m_p, clock)
            if pi is not None:
                prompt = [pi] + [[Fraction(0)] * model.d for _ in range(m_p - 1)]
                if _with_witness(res, model, dataset, prompt, Fraction(0)):
                    res.method = "Proposition E: zero-score head, exact witness prompt of length " + str(m_p)
                    log.append(f"exact witness of length {m_p}")
                    return None
        return None
    if prompt_length != "any":
        K = Fraction(prompt_length)
        ranges = [(K, K)]
    else:
        n = math.floor(hi)
        ranges = ([(Fraction(1), Fraction(n))] if n >= 1 else []) + [(Fraction(n + 1), None)]
    pieces = []
    for a_lo, a_hi in ranges:
        lam = _dual_block(z3, blk, g.members, clock, v_free, alpha_lo=a_lo, alpha_hi=a_hi, stage="Proposition E")
        if lam is None or farkas_margin(blk, g.members, lam, rhos, a_lo, a_hi) is None:
            log.append(f"no Farkas vector for alpha in [{a_lo}, {a_hi}]")
            return None
        pieces.append((a_lo, a_hi, lam))
    log.append("no admissible prompt length fits the range of alpha")
    return (g, blk, None, rhos, pieces)


def _log_lo(a: Fraction) -> Fraction:
    """The trusted checker's own lower bound on log a (the certificate carries no logarithms)."""
    from verify.checker.limitation import log_below
    return log_below(a)


def _log_hi(b: Fraction) -> Fraction:
    """The trusted checker's own upper bound on log b."""
    from verify.checker.limitation import log_above
    return log_above(b)


def _entropy_proof(z3, model, ex, g: Group, blk: Block, rhos, prompt_length, clock: _Clock, log):
    """Proposition E, g = W_k^T W_q x != 0: R plus the entropy relation
    g^T pi = alpha log alpha - alpha H(w), 0 <= H <= log m_p, decided piecewise in alpha.

    R bounds alpha to [lo, hi]; outside, R alone is infeasible on [0, a1] and [a2, inf); on
    [a1, a2] (split further if needed) the inequalities g^T pi <= alpha log a2 (every length) and,
    for length K, g^T pi >= alpha (log a1 - log K) are added.  Returns the pieces or None."""
    j = blk.head
    gvec = ex.heads[j]["W_k"].vm(ex.heads[j]["W_q"].mv(g.x))
    if not any(gvec):
        return None
    rng = _alpha_range(z3, blk, g.members, False, clock, rhos, stage="entropy relation")
    if rng is None or rng[1] is None or rng[1] <= 0:
        return None
    lo, hi = rng
    pad = max((hi - lo), (lo + hi) / 2 * Fraction(1, 10 ** 6))
    a1 = max(Fraction(lo - pad).limit_denominator(1 << 40), Fraction(0))
    a2 = Fraction(hi + pad).limit_denominator(1 << 40)
    a1 = min(a1, lo) if a1 > lo else a1
    a2 = max(a2, hi)
    K = None if prompt_length == "any" else Fraction(prompt_length)
    lK = _log_hi(K) if K is not None else None
    pieces = []

    def solve(a_lo, a_hi, use_ineq):
        ineq = None
        if use_ineq:
            c_lo = (_log_lo(a_lo) - lK) if (K is not None and a_lo > 0) else None
            c_hi = _log_hi(a_hi) if a_hi is not None else None
            ineq = (gvec, c_lo, c_hi)
        out = _dual_block(z3, blk, g.members, clock, False, alpha_lo=a_lo, alpha_hi=a_hi, ineq=ineq, rhos=rhos,
                          stage="entropy relation")
        if out is None:
            return None
        if ineq is None:
            return {"lo": a_lo, "hi": a_hi, "lam": out, "mu_lo": Fraction(0), "mu_hi": Fraction(0)}
        lam, mu_lo, mu_hi = out
        pc = {"lo": a_lo, "hi": a_hi, "lam": lam, "mu_lo": mu_lo, "mu_hi": mu_hi}
        if mu_lo:
            pc["log_lo"] = _log_lo(a_lo)
        if mu_hi:
            pc["log_hi"] = _log_hi(a_hi)
        return pc

    spans = ([(Fraction(0), a1)] if a1 > 0 else []) + [(a2, None)]
    for a_lo, a_hi in spans:
        pc = solve(a_lo, a_hi, False) or solve(a_lo, a_hi, True)
        if pc is None:
            log.append(f"entropy pieces: no certificate for alpha in [{approx(a_lo)}, "
                       f"{'inf' if a_hi is None else approx(a_hi)}]")
            return None
        pieces.append(pc)
    todo = [(a1, a2, 0)]
    while todo:
        a_lo, a_hi, depth = todo.pop()
        pc = solve(a_lo, a_hi, True)
        if pc is not None:
            pieces.append(pc)
            continue
        if depth >= 4:
            log.append(f"entropy pieces: alpha in [{approx(a_lo)}, {approx(a_hi)}] stays feasible")
            return None
        mid = ((a_lo + a_hi) / 2).limit_denominator(1 << 40)
        todo += [(a_lo, mid, depth + 1), (mid, a_hi, depth + 1)]
    log.append(f"entropy relation excludes every alpha in [{approx(a1)}, {approx(a2)}] "
               f"({'every length' if K is None else f'length {K}'}); R excludes the rest")
    return {"pieces": pieces, "log_K_hi": lK}


def _zero_score_prompt_sum(z3, model, ex, groups, m_p, clock: _Clock):
    """Exact pi with x + M (sum_t X[t] + pi) / (n + m_p) = z for every constrained output."""
    s = z3.SolverFor("QF_LRA")
    d = model.d
    pi = [z3.Real(f"pi{c}") for c in range(d)]
    M = _M_exact(model, 0)
    for g in groups:
        for m in g.members:
            tot = [sum((k[c] for k in m.keys), Fraction(0)) for c in range(d)]
            n = len(m.keys)
            for r in range(d):
                lhs = z3.Sum([_z3q(z3, M[r][c]) * (pi[c] + _z3q(z3, tot[c])) for c in range(d) if M[r][c]] or [z3.RealVal(0)])
                s.add(lhs == _z3q(z3, (n + m_p) * (m.z[r] - g.x[r])))
    if _solve(s, clock, "Proposition E") != "sat":
        return None
    mdl = s.model()
    out = []
    for v in pi:
        r = mdl.eval(v, model_completion=True)
        out.append(Fraction(r.numerator_as_long(), r.denominator_as_long()))
    return out


def _short(v) -> str:
    return "[" + ", ".join(f"{float(x):.3g}" for x in v[:4]) + (", ...]" if len(v) > 4 else "]")


def _try_subspace(model: Model, g: Group, rhos: list[Fraction], ex: ExactLayer) -> Optional[Block]:
    """Theorem L3: phi with phi^T W_o^j W_v^j = 0 for every head and |phi^T (z_i - x)| > ||phi|| rho_i
    for some member.  Tried first, at any d: phi = z_i - x itself, tested exactly against every head
    (this decides layers whose attention adds nothing, W_o W_v = 0); then, for d <= 96, the
    projection of z_i - x onto the exact left null space of [W_o^1 W_v^1 ... W_o^h W_v^h] (the best
    phi there) and that space's basis vectors."""
    cs = [[a - b for a, b in zip(m.z, g.x)] for m in g.members]

    def holds(phi, i):
        return any(phi) and abs(_dotq(phi, cs[i])) > sqrt_up(_dotq(phi, phi)) * rhos[i]

    def kills(phi):
        return all(not any(hd["W_v"].vm(hd["W_o"].vm(phi))) for hd in ex.heads)

    for i, c in enumerate(cs):
        if holds(c, i) and kills(c):
            return Block("subspace", None, [], [c], Phi=[c], scores=[[]])
    if model.d > 96 or _stacked_full_rank(model):
        return None
    basis = _left_null_exact(_hstack([_M_exact(model, j) for j in range(len(ex.heads))]))
    for i, c in enumerate(cs):
        proj = project_onto_span(basis, c)
        for phi in ([proj] if proj else []) + basis:
            if holds(phi, i):
                return Block("subspace", None, [], [c], Phi=[phi], scores=[[]])
    return None


def _stacked_full_rank(model: Model) -> bool:
    """Float pre-test: has [W_o^1 W_v^1 ... W_o^h W_v^h] rank d (then no phi exists)?  A wrong
    answer only skips the exact null-space computation."""
    with np.errstate(all="ignore"):
        M = np.concatenate([as_float(h.W_o) @ as_float(h.W_v) for h in model.layers[0].heads], axis=1)
        if not np.all(np.isfinite(M)):
            return False
        return int(np.linalg.matrix_rank(M)) == model.d


def _attention_free(model: Model) -> bool:
    """Does every head have W_o W_v = 0 exactly (attention adds nothing to any token)?  A float
    product clearly away from 0 answers no at once; otherwise W_o (W_v e_c) is computed exactly."""
    for h in model.layers[0].heads:
        Wo, Wv = as_float(h.W_o), as_float(h.W_v)
        with np.errstate(all="ignore"):
            P = np.abs(Wo @ Wv)
            scale = float(np.max(np.abs(Wo))) * float(np.max(np.abs(Wv))) * Wv.shape[0]
        if np.all(np.isfinite(P)) and np.isfinite(scale) and float(np.max(P)) > 1e-6 * scale:
            return False
        Mo, Wvq = IntMatrix(h.W_o), as_fraction(h.W_v)
        if any(any(Mo.mv(list(Wvq[:, c]))) for c in range(model.d)):
            return False
    return True


def _equal_score_token(model: Model, ex: ExactLayer, dataset: Dataset) -> Optional[list[Fraction]]:
    """A token p whose score at every constrained query equals the scores of that query's visible
    input tokens (when those are all equal), for every head: a prompt of copies of p gets exactly
    uniform attention weights, so the checker's replay stays exact.  None if there is none."""
    rows, rhs = [], []
    for e in dataset.examples:
        X = [_frac_vec(as_fraction(r)) for r in e.input]
        for a, y in enumerate(e.output):
            if y is None:
                continue
            keys = X[: a + 1] if model.causal else X
            for j, hd in enumerate(ex.heads):
                sc = set(ex.scores(j, X[a], keys))
                if len(sc) != 1:
                    return None
                rows.append(hd["W_k"].vm(hd["W_q"].mv(X[a])))
                rhs.append(sc.pop())
    return solve(rows, rhs) if rows else [Fraction(0)] * model.d


def _attention_free_witness(res: Result, model: Model, dataset: Dataset, ex: ExactLayer, groups: list[Group],
                            tol: Fraction, prompt_length, log: list) -> bool:
    """Every head has W_o W_v = 0, so the output at an input token x is MLP(x) whatever the prompt:
    the dataset is memorized iff every target is within tol of MLP(x).  Then any prompt is a
    witness; tried: zero tokens, then copies of :func:`_equal_score_token` (exact replay).  When a
    target is farther, the subspace functional phi = z - x proves it (when the MLP is certified
    injective), found by :func:`_try_subspace`.  Returns True when nothing more can be done: a
    witness was accepted, or every prompt memorizes but the checker cannot replay one exactly."""
    worst, far = max((max(abs(a - b) for a, b in zip(ex.mlp(g.x), m.y)), (m.example, m.position))
                     for g in groups for m in g.members)
    log.append(f"attention adds nothing (W_o W_v = 0 for every head): largest |MLP(x) - y| = {approx(worst)}")
    if worst > tol:
        # every prompt gives MLP(x) there: proved, whatever the MLP (no injectivity needed)
        res.certificate = certificate(CERT_KIND, {"form": "attention-free", "example": far[0], "position": far[1]})
        res.method = "attention adds nothing (W_o W_v = 0 for every head): a target is not MLP(x)"
        _vet_proof(res)
        return res.status == Status.PROVED
    if not _witness_length_ok(prompt_length, log):
        return False
    K = 1 if prompt_length == "any" else prompt_length
    cands = [[[Fraction(0)] * model.d for _ in range(K)]]
    p = _equal_score_token(model, ex, dataset)
    if p is not None:
        cands.append([p] * K)
    for P in cands:
        if _with_witness(res, model, dataset, P, tol):
            res.method = "attention adds nothing (W_o W_v = 0 for every head): every target is MLP(x); any prompt"
            return True
    res.message = ("attention adds nothing here (W_o W_v = 0 for every head), so the output at a token x is "
                   "MLP(x) for every prompt, and every target is within the tolerance of it: every prompt "
                   "memorizes the dataset.  'memorized' is not claimed: the trusted checker replays a softmax "
                   "witness exactly only when the scores at each query are equal, which this dataset's tokens "
                   "prevent, and the question's tolerance leaves no room for its rigorous enclosures")
    return True


def _head_blocks(model: Model, ex: ExactLayer, g: Group, ds_info: Optional[dict], rhos) -> list[Block]:
    layer = model.layers[0]
    h = len(layer.heads)
    out = []
    xs = g.x
    scores_all = [[ex.scores(j, xs, m.keys) for m in g.members] for j in range(h)]
    if ds_info is not None and all(r == 0 for r in rhos) and model.d > _SMALL_D:
        gammas = _solve_gammas(ds_info, [[a - b for a, b in zip(m.z, xs)] for m in g.members])
        if gammas is not None:
            off = 0
            for j, hd in enumerate(layer.heads):
                s = hd.s
                Wv = ex.heads[j]["W_v"]
                VX = [[Wv.mv(key) for key in m.keys] for m in g.members]
                out.append(Block("direct-sum", j, None,
                                 [gm[off:off + s] for gm in gammas], gammas=gammas,
                                 scores=scores_all[j], VX=VX, Vmat=Wv))
                off += s
            return out
    if model.d > 96:
        return out
    Ms = [_M_exact(model, j) for j in range(h)]
    for j in range(h):
        others = [Ms[o] for o in range(h) if o != j]
        if others:
            Phi = _left_null_exact(_hstack(others))
        else:
            Phi = [[Fraction(int(r == c)) for c in range(model.d)] for r in range(model.d)]
        if not Phi:
            continue
        V = _matmul(Phi, Ms[j])
        if not any(any(row) for row in V):
            continue
        taus = [[_dotq(phi, [a - b for a, b in zip(m.z, xs)]) for phi in Phi] for m in g.members]
        VX = [[[_dotq(row, key) for row in V] for key in m.keys] for m in g.members]
        out.append(Block("annihilator", j, V, taus, Phi=Phi, scores=scores_all[j], VX=VX))
    return out


def _nonlinear_R(z3, model: Model, ex: ExactLayer, groups: list[Group], k, tol, clock: _Clock, artifacts) -> str:
    """Relaxation R with all heads jointly (bilinear): decided by Z3's nonlinear arithmetic.  Each
    head's equations are homogeneous in its (exponentials, alpha, pi), so its exponentials are
    scaled by exp(-largest score of the group) (short solver constants)."""
    s = z3.SolverFor("QF_NRA")
    layer = model.layers[0]
    d = model.d
    for gi, g in enumerate(groups):
        rhos = _weights(k, d, tol, g.members)
        alphas, betas = [], []
        for j, hd in enumerate(layer.heads):
            a = z3.Real(f"alpha_{gi}_{j}")
            s.add(a > 0)
            pi = [z3.Real(f"pi_{gi}_{j}_{c}") for c in range(d)]
            M = _M_exact(model, j)
            betas.append([z3.Sum([_z3q(z3, M[r][c]) * pi[c] for c in range(d) if M[r][c]] or [z3.RealVal(0)]) for r in range(d)])
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
                    s.add(e >= _z3q(z3, lo), e <= _z3q(z3, hi))
                    es.append(e)
                M = _M_exact(model, j)
                qv = [z3.Real(f"q_{gi}_{mi}_{j}_{r}") for r in range(d)]
                Z = z3.Sum(es)
                for r in range(d):
                    N = z3.Sum([es[n] * _z3q(z3, _dotq(M[r], key)) for n, key in enumerate(m.keys)])
                    s.add((Z + alphas[j]) * qv[r] == N + betas[j][r])
                qs.append(qv)
            for r in range(d):
                target = _z3q(z3, m.z[r] - g.x[r])
                tot = z3.Sum([qv[r] for qv in qs])
                if rhos[mi] == 0:
                    s.add(tot == target)
                else:
                    s.add(tot >= target - _z3q(z3, rhos[mi]), tot <= target + _z3q(z3, rhos[mi]))
    if artifacts:
        os.makedirs(artifacts, exist_ok=True)
        with open(os.path.join(artifacts, "R_nonlinear.smt2"), "w") as fh:
            fh.write(s.to_smt2())
    return _solve(s, clock, "nonlinear R")


# --------------------------------------------------------------------------- results

def _mlp_certificate(layer) -> dict:
    """:func:`certify_mlp`, with k raised to the trusted checker's own bound when that is larger:
    the checker derives k itself, and the certificate's slack must hold with its k."""
    from verify.checker.limitation import norm_upper
    from verify.checker.numbers import Mat
    mlpc = certify_mlp(layer)
    kc = norm_upper(Mat(*as_scaled_int(np.asarray(layer.W_1)))) * norm_upper(Mat(*as_scaled_int(np.asarray(layer.W_2))))
    return dict(mlpc, k=kc, injective=kc < 1) if kc > mlpc["k"] else mlpc


def _new_result(model: Model, dataset: Dataset, claim: str, prompt_length, tol: Fraction,
                side_files: Optional[str], extra: Optional[dict]) -> Result:
    """An "unknown" result with its question and inputs; ``res._base_dir`` is the folder of its
    side files (the result file must be written there)."""
    base = os.path.dirname(os.path.abspath(side_files)) if side_files else None
    inputs, base = _inputs(model, dataset, base)
    res = Result(claim=claim, status=Status.UNKNOWN, question=memorization_question(prompt_length, _rat_str(tol)),
                 inputs=inputs, solver=solver_info())
    res.extra.update(extra or {})
    res._base_dir = base
    return res


def _inputs(model: Model, dataset: Dataset, base: Optional[str]) -> tuple[dict, str]:
    """``{"model", "dataset"}`` embedded when small, else content-addressed side files in ``base``
    (a new temporary folder when None); returns them and the folder."""
    small_model = model.n_parameters() <= _INLINE_LIMIT
    small_data = sum(e.input.size for e in dataset.examples) * 2 <= _INLINE_LIMIT
    if not (small_model and small_data) and base is None:
        import tempfile
        base = tempfile.mkdtemp(prefix="ptverify-")
    dj = dataset_to_json(dataset)
    refs = {"model": embed(model_to_json(model)) if small_model else _write_side_model(model, base),
            "dataset": embed(dj) if small_data else _write_side_json(dj, base)}
    return refs, base or "."


def _write_side_model(model: Model, base: str) -> dict:
    """The model as ``<sha256 prefix>.npz`` in ``base`` (``.json`` when a weight is not binary64)."""
    import tempfile
    from verify.result import side_file
    os.makedirs(base, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=base, prefix=".tmp-", suffix=".npz")
    os.close(fd)
    try:
        save_model(model, tmp)
    except InputError:
        os.unlink(tmp)
        return _write_side_json(model_to_json(model), base)
    ref = side_file(tmp)
    final = os.path.join(base, ref["sha256"][:16] + ".npz")
    os.replace(tmp, final)
    return {"sha256": ref["sha256"], "file": os.path.basename(final)}


def _write_side_json(obj: dict, base: str) -> dict:
    """``obj`` as ``<sha256 prefix>.json`` (its canonical bytes) in ``base``."""
    from constructions.model import atomic_write_text
    from verify.checker.inputs import canonical_bytes
    data = canonical_bytes(obj)
    sha = hashlib.sha256(data).hexdigest()
    atomic_write_text(os.path.join(base, sha[:16] + ".json"), data.decode("ascii"))
    return {"sha256": sha, "file": sha[:16] + ".json"}


def _base_dir(res: Result) -> str:
    return getattr(res, "_base_dir", ".")


def _certificate(model: Model, g: Group, blk: Block, lam, pieces=None, ent=None) -> dict:
    """The ``limitation-farkas`` body: hints only (the checker re-derives tolerance, prompt
    length, k, logarithms and ranks from the question and the inputs).  Members whose multipliers
    are zero everywhere are left out (the checker refuses unused members)."""
    lams = [lam] if lam is not None else [lm for _, _, lm in pieces] if pieces is not None else \
        [pc["lam"] for pc in ent["pieces"]] if ent is not None else []
    if blk.form == "subspace":   # the one member that leaves the subspace
        keep = [next(i for i, m in enumerate(g.members) if [a - b for a, b in zip(m.z, g.x)] == blk.taus[0])]
    else:
        keep = [i for i in range(len(g.members)) if any(any(lm[i]) for lm in lams)]

    def rows(lm):
        return [_vec_str(lm[i]) for i in keep]
    body = {"form": blk.form, "query": _vec_str(g.x),
            "members": [{"example": g.members[i].example, "position": g.members[i].position,
                         "z": _vec_str(g.members[i].z)} for i in keep]}
    if blk.form == "subspace":
        body["phi"] = _vec_str(blk.Phi[0])
        return body
    body["head"] = blk.head
    if blk.form == "direct-sum":
        body["gammas"] = [_vec_str(blk.gammas[i]) for i in keep]
    elif len(model.layers[0].heads) > 1:  # one head: Phi is the identity and is not written
        body["Phi"] = [_vec_str(r) for r in blk.Phi]
    if pieces is not None:
        body["alpha_pieces"] = [{"from": int(lo), "to": None if hi is None else int(hi), "multipliers": rows(lm)}
                                for lo, hi, lm in pieces]
    elif ent is not None:
        body["entropy_pieces"] = [{"from": _rat_str(pc["lo"]), "to": None if pc["hi"] is None else _rat_str(pc["hi"]),
                                   "mu_lo": _rat_str(pc["mu_lo"]), "mu_hi": _rat_str(pc["mu_hi"]),
                                   "multipliers": rows(pc["lam"])} for pc in sorted(ent["pieces"], key=lambda pc: pc["lo"])]
    else:
        body["multipliers"] = rows(lam)
    return body


def _proof_method(blk: Block, g: Group, pieces, ent) -> str:
    if pieces is not None:
        m = "Proposition E: zero-score head, alpha = prompt length is an integer; Farkas certificate per alpha range"
    elif ent is not None:
        m = ("Proposition E: relaxation R plus the entropy relation g^T pi = alpha (log alpha - H), "
             "Farkas certificate per alpha range")
    else:
        m = {"subspace": "attention-subspace functional (L3)",
             "annihilator": "relaxation R, projected head system, Farkas certificate",
             "direct-sum": "relaxation R in head coordinates (stacked W_o of full column rank: heads decouple), "
                           "Farkas certificate"}[blk.form]
    if len(g.members) >= 2 and blk.form != "subspace":
        m += f"; {len(g.members)} examples share the query token (L1/L2)"
    return m


_CHECK_ERRORS = (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, AttributeError, ArithmeticError)


def _outcome(res: Result):
    """The trusted checker's own Outcome for this result's limitation certificate (raises Reject)."""
    from verify.checker import Context
    from verify.checker import limitation as trusted
    from verify.checker.inputs import load_input
    from verify.checker.questions import parse_question
    _, q = parse_question(res.question)
    model = load_input("model", res.inputs["model"], _base_dir(res))
    ds = load_input("dataset", res.inputs["dataset"], _base_dir(res), model.d)
    return trusted.check(Context(q, "proved", {"model": model, "dataset": ds}, res.certificate["body"], _base_dir(res)))


def _vet_proof(res: Result) -> None:
    """"proved" only if the trusted checker accepts the whole result; ``reported`` holds what it
    derives (certified_min_error).  Otherwise "unknown", naming the checker's objection."""
    from verify.checker import Reject, check_result
    res.status = Status.PROVED
    try:
        res.reported = dict(_outcome(res).derived)
        ok, msg = check_result(res.to_json(), _base_dir(res))
    except (Reject, *_CHECK_ERRORS) as exc:
        ok, msg = False, str(exc)
    res.checks["certificate_checked"] = ok
    if ok:
        res.message = f"certificate accepted by the trusted checker: {msg}"
        return
    res.status, res.certificate, res.reported = Status.UNKNOWN, None, {}
    res.message = f"a certificate was found but the trusted checker rejected it: {msg}"


# --------------------------------------------------------------------------- witnesses

def _witness_dict(prompt) -> dict:
    """The ``prompt-witness`` body: exact rationals (a float becomes its exact binary64 value)."""
    return {"prompt": [[_rat_str(Fraction(v)) for v in row] for row in prompt]}


def _with_witness(res: Result, model, dataset, prompt, tol: Optional[Fraction] = None) -> bool:
    """Keep ``prompt`` as the witness, and set "memorized", only if the trusted checker accepts it
    for the result's own question (the tolerance is the question's; ``tol`` is not used)."""
    from verify.checker import check_result
    before = (res.status, res.certificate, res.reported)
    res.status, res.certificate, res.reported = Status.MEMORIZED, certificate(WITNESS_KIND, _witness_dict(prompt)), {}
    ok, msg = check_result(res.to_json(), _base_dir(res))
    if not ok:
        res.status, res.certificate, res.reported = before
        res.extra.setdefault("rejected_witnesses", []).append(msg[:300])
        return False
    res.checks["witness_replayed"] = True
    res.method = res.method or "witness prompt (replayed by the trusted checker)"
    res.message = msg
    return True


def _search_witness(res: Result, model: Model, dataset: Dataset, tol: Fraction, prompt_length,
                    budget: float = 20.0) -> None:
    """Gradient prompt tuning in float64 (L-BFGS) within a time budget.  A prompt counts only if
    the trusted checker replays it within the tolerance (exactly, or with rigorous enclosures)."""
    if model.d > 64 or len(dataset.examples) > 64 or not _witness_length_ok(prompt_length, []):
        return
    import torch
    t_end = time.perf_counter() + budget
    batches = _batches(model, dataset)
    lengths = [prompt_length] if prompt_length != "any" else [1, 2, 4]
    best = None
    for L in lengths:
        for seed in range(2):
            if time.perf_counter() > t_end:
                break
            P = torch.randn(L, model.d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64,
                            requires_grad=True)
            err = _tune(model, batches, P, t_end)
            if not math.isfinite(err):    # float64 overflows on this model: the search cannot help
                res.extra["witness_search"] = {"best_squared_error": None, "note": "float64 loss not finite"}
                return
            if best is None or err < best[0]:
                best = (err, P.detach().numpy().copy())
            if err <= max(float(tol) ** 2, 1e-24) and _replay_candidates(res, model, dataset, best[1], tol, t_end):
                res.extra["witness_search"] = {"best_squared_error": err}
                return
    if best is not None:
        res.extra["witness_search"] = {"best_squared_error": best[0]}
        _replay_candidates(res, model, dataset, best[1], tol, t_end)


def _batches(model: Model, dataset: Dataset) -> list:
    import torch
    by_len: dict = {}
    for e in dataset.examples:
        by_len.setdefault(e.input.shape[0], []).append(e)
    batches = []
    for exs in by_len.values():
        X = torch.tensor(np.stack([as_float(np.asarray(e.input)) for e in exs]))
        mask = torch.tensor([[y is not None for y in e.output] for e in exs])
        Y = torch.tensor(np.stack([np.stack([np.zeros(model.d) if y is None else as_float(np.asarray(y))
                                             for y in e.output]) for e in exs]))
        batches.append((X, Y, mask))
    return batches


def _tune(model: Model, batches: list, P, t_end: float) -> float:
    """A few L-BFGS rounds on the squared error; returns the final squared error (float64)."""
    import torch
    opt = torch.optim.LBFGS([P], max_iter=100, line_search_fn="strong_wolfe", tolerance_grad=1e-16,
                            tolerance_change=1e-20)

    def objective():
        loss = torch.zeros((), dtype=torch.float64)
        for X, Y, mask in batches:
            out = forward_torch(model, X, P)
            loss = loss + (((out - Y) ** 2).sum(-1) * mask).sum()
        return loss

    def closure():
        if time.perf_counter() > t_end:
            raise _TimeUp
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss
    for _ in range(4):
        if time.perf_counter() > t_end:
            break
        try:
            opt.step(closure)
        except _TimeUp:
            break
    with torch.no_grad():
        return float(objective())


class _TimeUp(Exception):
    """The witness search's budget ran out inside an L-BFGS step."""


def _replay_candidates(res, model, dataset, Pf: np.ndarray, tol: Fraction, t_end: Optional[float] = None) -> bool:
    """The float prompt's exact value, then its dyadic roundings (simpler rationals, which replay
    exactly where the model allows): the first the trusted checker accepts is kept.  No new
    candidate is tried after ``t_end``."""
    if not np.all(np.isfinite(Pf)):      # L-BFGS diverged (huge scores): nothing to replay
        return False
    cands = [[[Fraction(float(v)) for v in row] for row in Pf]]
    cands += [[[_dyadic(float(v), k) for v in row] for row in Pf] for k in range(6, 54, 4)]
    for n, cand in enumerate(cands):
        if n and t_end is not None and time.perf_counter() > t_end:
            return False
        if _with_witness(res, model, dataset, cand, tol):
            return True
    return False



# --------------------------------------------------------------------------- prove limitation

def prove_limitation(d: int = 3, heads: int = 1, head_size: Optional[int] = None, mlp_width: Optional[int] = None,
                     seed: int = 0, kind: str = "softmax", margin: float = 0.5, artifacts: Optional[str] = None,
                     timeout: float = 60.0, examples: Optional[int] = None,
                     side_files: Optional[str] = None, nonlinear: bool = True) -> tuple[Result, Model, Dataset]:
    """Build a random single-layer model meeting the assumptions and the L1 dataset, and prove it."""
    from constructions.datasets import l1_dataset, random_model
    t0 = time.perf_counter()
    model = random_model(d, heads=heads, head_size=head_size, mlp_width=mlp_width, seed=seed, kind=kind)
    ds = l1_dataset(model, seed=seed, margin=margin, examples=examples)
    tb = time.perf_counter() - t0
    extra = {"seed": seed, "builder": {"d": d, "heads": heads, "head_size": model.meta["head_size"],
                                       "mlp_width": model.meta["mlp_width"], "kind": kind, "margin": margin}}
    res = check_memorization(model, ds, artifacts=artifacts, timeout=timeout, claim="L1",
                             search_witness=False, inputs_extra=extra, side_files=side_files, nonlinear=nonlinear)
    res.seconds["build"] = res.seconds.get("build", 0.0) + tb
    return res, model, ds
