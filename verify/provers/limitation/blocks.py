"""Relaxation R's blocks: the coordinates in which one group's system is linear.

For one group (query token x, members with attention inputs z_i) a :class:`Block` is one of

* ``subspace`` (Theorem L3): a functional phi with phi^T W_o^j W_v^j = 0 for every head and
  phi^T (z_i - x) != 0 (:func:`try_subspace`);
* ``annihilator`` (Theorems L1/L2): for head j, a functional block Phi annihilating every other
  head's W_o W_v; then V = Phi W_o^j W_v^j and tau_i = Phi (z_i - x);
* ``direct-sum``: when the stacked W_o = [W_o^1 ... W_o^h] has full column rank, the exact head
  coordinates gamma_i with W_o gamma_i = z_i - x; then V = W_v^j and tau_i = gamma_i's j-th part.

In those coordinates Lemma D gives V (sum_t e_it X_i[t] + pi) = (Z_i + alpha) tau_i for every
member: a linear system in (e, alpha, pi) (:mod:`.relaxation`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional

import numpy as np

from constructions.model import IntMatrix, Model, as_float, as_fraction
from verify.provers.assumptions import rank_certificate
from verify.provers.exact import EXP_ARG_LIMIT, dot, left_null_basis, project_onto_span, sqrt_up
from verify.provers.limitation.groups import Group
from verify.provers.limitation.layer import ExactLayer, LazyRows, flt, head_product, hstack, matmul, rational_candidates

__all__ = ["Block", "DirectSum", "SMALL_D", "direct_sum", "head_blocks", "try_subspace", "v_full_row_rank"]

SMALL_D = 48      # up to this d, exact annihilators (which support tolerance) are preferred
_NULL_SPACE_MAX_D = 96   # beyond this d, no exact null spaces (annihilators, subspace functionals)


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
            self.V = LazyRows(self.Vmat)

    def lamV(self, lam_total: list[Fraction]) -> list[Fraction]:
        """lam^T V, exactly."""
        if self.Vmat is not None:
            return self.Vmat.vm(lam_total)
        d = len(self.V[0])
        return [sum((lam_total[r] * self.V[r][c] for r in range(len(self.V)) if lam_total[r]), Fraction(0)) for c in range(d)]

    def set_shift(self) -> None:
        """Scale the solver's exponentials by exp(-largest score), at least exp(-EXP_ARG_LIMIT)."""
        self.shift = max(max((s_ for row in self.scores for s_ in row), default=Fraction(0)), Fraction(-EXP_ARG_LIMIT))


@dataclass
class DirectSum:
    """The stacked W_o = [W_o^1 ... W_o^h] with a certificate of full column rank."""
    W: np.ndarray            # exact entries (float64 or object)
    Wf: np.ndarray           # float64 copy (proposes head coordinates)
    rank: dict               # :func:`rank_certificate`
    Wint: IntMatrix


def direct_sum(model: Model) -> Optional[DirectSum]:
    """The stacked W_o when it has certified full column rank (the heads' outputs decouple), else None."""
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
    if Wf.shape[1] == Wf.shape[0] and Wf.shape[0] > _NULL_SPACE_MAX_D:
        # large square: a float test only proposes; the trusted checker certifies the rank itself
        # (a wrong guess only costs a rejected certificate, never a wrong verdict)
        sign, logdet = np.linalg.slogdet(Wf)
        if sign == 0 or not np.isfinite(logdet):
            return None
        return DirectSum(W, Wf, {"float": True}, IntMatrix(W))
    cert = rank_certificate(W)
    if cert is None:
        return None
    return DirectSum(W, Wf, cert, IntMatrix(W))


def _solve_gammas(ds: DirectSum, cs: list[list[Fraction]]) -> Optional[list[list[Fraction]]]:
    """Exact head coordinates gamma with W_o gamma = c: float solve, simplest rationals, exact check."""
    Wf = ds.Wf
    C = np.array([[flt(v) for v in c] for c in cs]).T
    try:
        with np.errstate(all="ignore"):
            sol = np.linalg.solve(Wf, C) if Wf.shape[0] == Wf.shape[1] else np.linalg.lstsq(Wf, C, rcond=None)[0]
    except (np.linalg.LinAlgError, ValueError):
        return None
    out = []
    for col, c in zip(sol.T, cs):
        found = None
        cf = np.array([flt(v) for v in c])
        for g in rational_candidates(col, lambda gr: np.max(np.abs(Wf @ gr - cf)) <= 1e-10 * (1 + np.max(np.abs(cf)))):
            if ds.Wint.mv(g) == c:
                found = g
                break
        if found is None:
            found = _flint_solve(ds, c)
        if found is None:
            return None
        out.append(found)
    return out


def _flint_solve(ds: DirectSum, c: list[Fraction]) -> Optional[list[Fraction]]:
    try:
        import flint  # optional exact solver (pip install "ptverify[exact]")
    except ImportError:
        return None
    Wq = as_fraction(ds.W)
    if Wq.shape[0] != Wq.shape[1]:
        return None
    A = flint.fmpq_mat([[flint.fmpq(v.numerator, v.denominator) for v in row] for row in Wq.tolist()])
    b = flint.fmpq_mat([[flint.fmpq(v.numerator, v.denominator)] for v in c])
    x = A.solve(b)
    g = [Fraction(int(x[r, 0].p), int(x[r, 0].q)) for r in range(x.nrows())]
    return g if ds.Wint.mv(g) == c else None


def head_blocks(model: Model, ex: ExactLayer, g: Group, ds: Optional[DirectSum], rhos) -> list[Block]:
    """The group's head blocks: direct-sum coordinates for large d with exact targets (when the
    stacked W_o decouples the heads), else annihilator blocks up to d = 96."""
    h = len(model.layers[0].heads)
    scores_all = [[ex.scores(j, g.x, m.keys) for m in g.members] for j in range(h)]
    if ds is not None and all(r == 0 for r in rhos) and model.d > SMALL_D:
        out = _direct_sum_blocks(model, ex, g, ds, scores_all)
        if out is not None:
            return out
    if model.d > _NULL_SPACE_MAX_D:
        return []
    return _annihilator_blocks(model, g, scores_all)


def _direct_sum_blocks(model: Model, ex: ExactLayer, g: Group, ds: DirectSum, scores_all) -> Optional[list[Block]]:
    """One block per head in exact head coordinates (None when they are not found)."""
    gammas = _solve_gammas(ds, [[a - b for a, b in zip(m.z, g.x)] for m in g.members])
    if gammas is None:
        return None
    out, off = [], 0
    for j, hd in enumerate(model.layers[0].heads):
        s = hd.s
        Wv = ex.heads[j]["W_v"]
        VX = [[ex.mv(Wv, key) for key in m.keys] for m in g.members]
        out.append(Block("direct-sum", j, None,
                         [gm[off:off + s] for gm in gammas], gammas=gammas,
                         scores=scores_all[j], VX=VX, Vmat=Wv))
        off += s
    return out


def _annihilator_blocks(model: Model, g: Group, scores_all) -> list[Block]:
    """Per head j: Phi = an exact basis of the left null space of the other heads' W_o W_v (the
    identity for one head), V = Phi W_o^j W_v^j; heads with V = 0 give no block."""
    h = len(model.layers[0].heads)
    out = []
    Ms = [head_product(model, j) for j in range(h)]
    for j in range(h):
        others = [Ms[o] for o in range(h) if o != j]
        if others:
            Phi = left_null_basis(hstack(others))
        else:
            Phi = [[Fraction(int(r == c)) for c in range(model.d)] for r in range(model.d)]
        if not Phi:
            continue
        V = matmul(Phi, Ms[j])
        if not any(any(row) for row in V):
            continue
        taus = [[dot(phi, [a - b for a, b in zip(m.z, g.x)]) for phi in Phi] for m in g.members]
        VX = [[[dot(row, key) for row in V] for key in m.keys] for m in g.members]
        out.append(Block("annihilator", j, V, taus, Phi=Phi, scores=scores_all[j], VX=VX))
    return out


def try_subspace(model: Model, g: Group, rhos: list[Fraction], ex: ExactLayer) -> Optional[Block]:
    """Theorem L3: phi with phi^T W_o^j W_v^j = 0 for every head and |phi^T (z_i - x)| > ||phi|| rho_i
    for some member.  Tried first, at any d: phi = z_i - x itself, tested exactly against every head
    (this decides layers whose attention adds nothing, W_o W_v = 0); then, for d <= 96, the
    projection of z_i - x onto the exact left null space of [W_o^1 W_v^1 ... W_o^h W_v^h] (the best
    phi there) and that space's basis vectors."""
    cs = [[a - b for a, b in zip(m.z, g.x)] for m in g.members]

    def holds(phi, i):
        return any(phi) and abs(dot(phi, cs[i])) > sqrt_up(dot(phi, phi)) * rhos[i]

    def kills(phi):
        return all(not any(hd["W_v"].vm(hd["W_o"].vm(phi))) for hd in ex.heads)

    for i, c in enumerate(cs):
        if holds(c, i) and kills(c):
            return Block("subspace", None, [], [c], Phi=[c], scores=[[]])
    if model.d > _NULL_SPACE_MAX_D or _stacked_full_rank(model):
        return None
    basis = left_null_basis(hstack([head_product(model, j) for j in range(len(ex.heads))]))
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


def v_full_row_rank(V) -> bool:
    """Is V of full row rank (certified)?  Then pi may be replaced by free v = V pi.  False is
    always safe (pi stays explicit)."""
    try:
        if isinstance(V, LazyRows):
            Vf = V.M.N.astype(np.float64) / V.M.D
            if not np.all(np.isfinite(Vf)) or np.linalg.matrix_rank(Vf) < Vf.shape[0]:
                return False
            if Vf.shape[1] > _NULL_SPACE_MAX_D:   # proposes the prover's system only; the checker
                return True                        # re-verifies every certificate found with it
            return rank_certificate(np.ascontiguousarray(Vf.T)) is not None
        Vf = np.array([[flt(x) for x in row] for row in V])
        if Vf.shape[0] > Vf.shape[1] or not np.all(np.isfinite(Vf)) or np.linalg.matrix_rank(Vf) < Vf.shape[0]:
            return False
    except (OverflowError, np.linalg.LinAlgError):
        return False
    return rank_certificate(np.array(V, dtype=object).T) is not None
