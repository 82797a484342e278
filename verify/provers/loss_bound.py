"""A certified lower bound on the loss of every prompt (proofs/loss_bound.md), written as a
``ptverify-result/2`` whose ``loss-bound`` certificate the trusted checker
(``verify/checker/loss.py``) re-derives from the model and dataset alone.

The loss is the sum, over every constrained output position (output not ``None``), of the squared
Euclidean error ``||g([P, X_i])_t - y_it||^2``.  For a single softmax layer whose MLP residual
branch has a certified Lipschitz constant ``k < 1``:

1. ``||MLP(z) - MLP(z')|| >= (1 - k) ||z - z'||``, so the loss is at least ``(1 - k)^2`` times the
   squared distance of the attention outputs ``att_t`` to ``c_t = MLP^{-1}(y_t) - x_t``.  The
   preimage is a rational ``z~`` with an exactly computed residual; ``||z~ - z*||^2 <= delta^2 =
   ||MLP(z~) - y||^2 / (1 - k)^2`` enters through ``(a - b)_+^2 >= (1 - eps) a^2 - (1/eps - 1) b^2``.
2. Positions are grouped by their query token (same vector).  By Lemma D every prompt enters a
   group's head ``j`` through one pair ``alpha^j > 0``, ``u^j = beta^j / alpha^j`` in col(M^j).
3. Split the residual orthogonally along V = sum_j col(M^j): the part off V is a constant (L3).
   When the col(M^j) form a direct sum, oblique projections ``Pi_j`` separate the heads:
   ``||r_V||^2 >= sum_j ||Pi_j r_V||^2 / sum_j ||Pi_j||^2`` and ``>= ||Pi_j r_V||^2 / ||Pi_j||^2``
   (equality ``= sum_j ||Pi_j r_V||^2`` when every ``Pi_j`` is orthogonal, e.g. one head).
4. One head: least squares in ``u`` leaves (Lagrange's identity)
   ``G(alpha) = sum_{t<t'} ||rho_t e_t' - rho_t' e_t||^2 / sum_t rho_t^2`` with
   ``rho_t = 1 / (Z_t + alpha)``, ``e_t = c_t - lambda_t A_t``, ``lambda_t = Z_t / (Z_t + alpha)``.
   With ``alpha = Zref tau / (1 - tau)``, ``tau`` in [0, 1] (the closure; the infimum over the
   open interval equals the minimum over the closed one by continuity), interval arithmetic on a
   partition of [0, 1] bounds ``min G`` from below rigorously.  ``Z_t`` and ``A_t`` hold
   exponentials, enclosed by :func:`constructions.forward.exp_enclosure`.

Per prompt length ``K``: a head whose score vector at the query is zero
(``W_k^T W_q x = 0``) has ``alpha = K`` exactly (Proposition E), so ``G`` is evaluated at one
point instead of minimized.  Other heads keep the any-length bound (still valid for length K).

Every box's lower bound is written rounded down (:func:`canonical_low`): the checker requires it
to be at most its own interval lower bound of the box and within 2^-32 relative of it.
"""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from constructions.datasets import cheap_norm_bound, mlp_inverse_float
from constructions.forward import Iv, exp_enclosure, mlp_exact
from constructions.lora import column_basis_exact, constrained_positions, rank_exact, solve_exact
from constructions.model import (Dataset, InputError, Model, as_float, as_fraction, dataset_to_json,
                                 model_to_json)
from verify.provers.exact import dot, fmt
from verify.result import Result, Status, certificate, embed

__all__ = ["certified_min_loss", "CertifiedLoss", "AssumptionViolated", "loss_bound_result", "loss_inputs",
           "head_objective", "mlp_k", "canonical_low", "CERT_KIND"]

CERT_KIND = "loss-bound"


class AssumptionViolated(ValueError):
    """A hypothesis of the bound does not hold on the given model; ``name`` says which."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(f"assumption {name!r} violated: {message}")


# --------------------------------------------------------------------------- small exact helpers

def _sq(a: Iv) -> Iv:
    """Tight enclosure of a^2."""
    if a.lo >= 0:
        return a * a
    if a.hi <= 0:
        return (-a) * (-a)
    m = max(-a.lo, a.hi)
    return Iv(0, (Iv(m) * Iv(m)).hi)


def canonical_low(x: Fraction) -> Fraction:
    """What a certificate states for a box whose interval lower bound is x: x (1 - 2^-48) rounded
    down to 56 significant bits (0 for x <= 0).  Short, and below any other rigorous evaluation
    of the same interval expression that agrees with this one to 2^-48 relative."""
    if x <= 0:
        return Fraction(0)
    y = Fraction(x) * (1 - Fraction(1, 1 << 48))
    e = 56 - (y.numerator.bit_length() - y.denominator.bit_length())
    if e >= 0:
        return Fraction((y.numerator << e) // y.denominator, 1 << e)
    return Fraction((y.numerator // (y.denominator << -e)) << -e)


def mlp_k(layer) -> tuple[Fraction, Fraction, Fraction, str]:
    """``(k, b1, b2, method)``: rigorous bounds ``b1 >= ||W_1||_2``, ``b2 >= ||W_2||_2``, k = b1 b2."""
    b1, b2 = cheap_norm_bound(layer.W_1), cheap_norm_bound(layer.W_2)
    method = "cheap_norm_bound"
    try:
        from verify.provers.assumptions import certify_mlp
        info = certify_mlp(layer)
        if Fraction(info["k"]) < b1 * b2 and "bound_W1" in info and "bound_W2" in info:
            b1, b2, method = Fraction(info["bound_W1"]), Fraction(info["bound_W2"]), "certify_mlp"
    except (ImportError, AttributeError, KeyError):
        pass
    return b1 * b2, b1, b2, method


def _preimage(layer, y: np.ndarray) -> tuple[np.ndarray, Fraction]:
    """A rational ``z~`` close to MLP^{-1}(y) and ``||MLP(z~) - y||^2`` exactly (0 when exact)."""
    yq = as_fraction(y)
    zf = mlp_inverse_float(layer, as_float(np.asarray(y)))
    best = None
    cands = [as_fraction(zf)]
    for bits in (8, 10, 12, 16, 20, 24, 32, 40, 48):
        cands.append(np.array([Fraction(round(float(v) * (1 << bits)), 1 << bits) for v in zf], dtype=object))
    for z in cands:
        res = mlp_exact(layer, z) - yq
        r2 = sum((v * v for v in res), Fraction(0))
        if best is None or r2 < best[1]:
            best = (z, r2)
        if r2 == 0:
            break
    return best


# --------------------------------------------------------------------------- the one-head objective

@dataclass
class _HeadData:
    """Exact/enclosed data of one head for one query group."""

    Z: list          # Iv per position: sum_b exp(s_b - shift) over visible keys
    A: list          # per position: list of d Iv, the prompt-free head output M X softmax
    c: list          # per position: list of d Fractions, the target component in col(M)
    zero_score: bool  # W_k^T W_q x == 0 (then alpha = K for a prompt of length K)
    Zref: Fraction


def head_objective(hd: _HeadData, lo: Fraction, hi: Fraction) -> Iv:
    """Interval enclosure of ``G(tau)`` for ``tau`` in [lo, hi] (see the module docstring)."""
    tau = Iv(lo, hi)
    Zr = Iv(hd.Zref)
    T = len(hd.Z)
    rho, lam = [], []
    for t in range(T):
        D = hd.Z[t] + (Zr - hd.Z[t]) * tau
        r = Zr / D
        rho.append(r)
        lam.append(Iv(1) - tau * r)
    num = Iv(0)
    d = len(hd.c[0])
    for t in range(T):
        for s in range(t + 1, T):
            for i in range(d):
                # rho_t e_s - rho_s e_t, e = c - lambda A
                w = rho[t] * (hd.c[s][i] - lam[s] * hd.A[s][i]) - rho[s] * (hd.c[t][i] - lam[t] * hd.A[t][i])
                num = num + _sq(w)
    den = Iv(0)
    for r in rho:
        den = den + _sq(r)
    out = num / den
    return Iv(max(out.lo, Fraction(0)), max(out.hi, Fraction(0)))


def _minimize(hd: _HeadData, rtol: float, max_boxes: int, init: int = 16) -> tuple[list, list, Fraction]:
    """Branch and bound on [0, 1]: returns (breakpoints, per-leaf lower bounds, min lower bound)."""
    if len(hd.Z) < 2:
        return [Fraction(0), Fraction(1)], [Fraction(0)], Fraction(0)
    heap = []
    upper = None
    for k in range(init):
        a, b = Fraction(k, init), Fraction(k + 1, init)
        heapq.heappush(heap, (head_objective(hd, a, b).lo, a, b))
        m = (a + b) / 2
        u = head_objective(hd, m, m).hi
        upper = u if upper is None else min(upper, u)
    n = init
    while n < max_boxes:
        lo, a, b = heap[0]
        if lo >= upper - Fraction(rtol) * upper:
            break
        heapq.heappop(heap)
        m = (a + b) / 2
        for x, y in ((a, m), (m, b)):
            heapq.heappush(heap, (head_objective(hd, x, y).lo, x, y))
            c = (x + y) / 2
            upper = min(upper, head_objective(hd, c, c).hi)
        n += 1
    leaves = sorted((a, b, lo) for lo, a, b in heap)
    bps = [leaves[0][0]] + [b for _, b, _ in leaves]
    lows = [lo for _, _, lo in leaves]
    return bps, lows, min(lows)


# --------------------------------------------------------------------------- preparation

@dataclass
class _Group:
    query: np.ndarray               # Fractions (d,)
    positions: list                 # (example, position)
    perp: Fraction                  # sum_t ||(I - P_V) c_t||^2
    heads: list                     # _HeadData per head ([] when heads are not separable or one position)


@dataclass
class _Prepared:
    k: Fraction
    b1: Fraction
    b2: Fraction
    k_method: str
    groups: list
    combine: str                    # "orthogonal" | "oblique" | "perp-only"
    pi_norm_sq: list                # min(||Pi_j||_F^2, ||Pi_j||_1 ||Pi_j||_inf)
    delta_sq: Fraction              # sum_t ||z~_t - z*_t||^2 upper bound
    rank_V: int
    preimages: dict                 # (example, position) -> z~


def _check_model(model: Model, dataset: Dataset):
    if len(model.layers) != 1:
        raise AssumptionViolated("single layer", f"the bound is for one layer; the model has {len(model.layers)}")
    layer = model.layers[0]
    if layer.kind != "softmax":
        raise AssumptionViolated("softmax attention", f"layers[0].attention.kind is {layer.kind!r}; Lemma D "
                                 "(the prompt enters through alpha, beta) is for softmax heads")
    for i, ex in enumerate(dataset.examples):
        if ex.input.shape[1] != model.d:
            raise InputError(f"examples[{i}].input", f"tokens of d = {model.d} entries", f"{ex.input.shape[1]}")
    return layer


def _pi_norm_sq(Pi: np.ndarray) -> Fraction:
    """min(||Pi||_F^2, ||Pi||_1 ||Pi||_inf) >= ||Pi||_2^2, exactly (the checker derives the same)."""
    A = [[abs(x) for x in row] for row in Pi]
    fro = sum((x * x for row in A for x in row), Fraction(0))
    n1 = max(sum(col, Fraction(0)) for col in zip(*A))
    ninf = max(sum(row, Fraction(0)) for row in A)
    return min(fro, n1 * ninf)


def _subspaces(layer, d: int) -> tuple:
    """(Ms, Pis, PV, combine, pi_norm_sq, rank_V) for V = sum_j col(M_j)."""
    Ms = [as_fraction(h.W_o).dot(as_fraction(h.W_v)) for h in layer.heads]
    Bs = [column_basis_exact(M) for M in Ms]
    Ball = np.concatenate(Bs, axis=1)
    rho_tot = Ball.shape[1]
    rank_V = rank_exact(Ball) if rho_tot else 0
    if rank_V:
        BV = column_basis_exact(Ball)
        PV = BV.dot(solve_exact(BV.T.dot(BV), BV.T))
    else:
        PV = np.zeros((d, d), dtype=object) + Fraction(0)
    if not (rank_V == rho_tot and rho_tot > 0):
        return Ms, [], PV, "perp-only", [], rank_V
    Lall = solve_exact(Ball.T.dot(Ball), Ball.T)   # (rho, d), L x = coordinates of P_V x
    Pis, off = [], 0
    for B in Bs:
        Pis.append(B.dot(Lall[off:off + B.shape[1]]))
        off += B.shape[1]
    if all(np.array_equal(Pi, Pi.T) for Pi in Pis):
        return Ms, Pis, PV, "orthogonal", [Fraction(1)] * len(Pis), rank_V
    return Ms, Pis, PV, "oblique", [_pi_norm_sq(Pi) for Pi in Pis], rank_V


def _softmax_parts(es: list, mvs: list, d: int) -> tuple[Iv, list]:
    Zt = Iv(0)
    for e in es:
        Zt = Zt + e
    At = [Iv(0)] * d
    for b, (e, mv) in enumerate(zip(es, mvs)):
        rest = Iv(0)
        for c_, e2 in enumerate(es):
            if c_ != b:
                rest = rest + e2
        wb = Iv(1) / (Iv(1) + rest / e) if rest.hi > 0 else Iv(1)
        At = [a + wb * v for a, v in zip(At, mv)]
    return Zt, At


def _head_data(model: Model, dataset: Dataset, h, M, Pi, x, pos: list, cs: list) -> "_HeadData":
    g = as_fraction(h.W_k).T.dot(as_fraction(h.W_q).dot(x))
    zero = all(v == 0 for v in g)
    per = []
    for i, t in pos:
        X = as_fraction(dataset.examples[i].input)
        keys = range(t + 1) if model.causal else range(X.shape[0])
        per.append([(X[b].dot(g) if not zero else Fraction(0), M.dot(X[b])) for b in keys])
    shift = max(s for p in per for s, _ in p)
    Zs, As = [], []
    for p in per:
        es = [Iv(1) if s == shift else Iv(*exp_enclosure(s - shift)) for s, _ in p]
        Zt, At = _softmax_parts(es, [mv for _, mv in p], model.d)
        Zs.append(Zt)
        As.append(At)
    chat = [list(Pi.dot(c)) for c in cs]
    zref = Fraction(float(Zs[0].mid))
    return _HeadData(Zs, As, chat, zero, zref if zref > 0 else Fraction(1))


def _prepare(model: Model, dataset: Dataset) -> _Prepared:
    layer = _check_model(model, dataset)
    k, b1, b2, method = mlp_k(layer)
    if k >= 1:
        raise AssumptionViolated("injective MLP", f"certified Lipschitz bound k = {float(k):.6g} of the MLP residual "
                                 "branch is not < 1")
    Ms, Pis, PV, combine, pi_norm_sq, rank_V = _subspaces(layer, model.d)
    groups: dict = {}
    for i, t in constrained_positions(dataset):
        groups.setdefault(tuple(as_fraction(dataset.examples[i].input)[t]), []).append((i, t))
    out_groups, delta_sq, pre = [], Fraction(0), {}
    for key, pos in groups.items():
        x = np.array(key, dtype=object)
        cs = []
        for i, t in pos:
            z, r2 = _preimage(layer, dataset.examples[i].output[t])
            pre[(i, t)] = z
            delta_sq += r2 / (1 - k) ** 2
            cs.append(z - x)
        perp = sum((dot(c - PV.dot(c), c - PV.dot(c)) for c in cs), Fraction(0))
        heads = []
        if combine != "perp-only" and len(pos) >= 2:
            heads = [_head_data(model, dataset, h, Ms[j], Pis[j], x, pos, cs) for j, h in enumerate(layer.heads)]
        out_groups.append(_Group(x, pos, perp, heads))
    return _Prepared(k, b1, b2, method, out_groups, combine, pi_norm_sq, delta_sq, rank_V, pre)


# --------------------------------------------------------------------------- the bound

@dataclass
class CertifiedLoss:
    """A certified lower bound on the loss of every prompt of the stated length, with the
    ``loss-bound`` certificate body that the checker re-derives it from."""

    value: Fraction
    prompt_length: object
    body: dict
    groups: list = field(default_factory=list)
    k: Fraction = Fraction(0)
    combine: str = ""
    boxes: int = 0

    def __float__(self) -> float:
        return float(self.value)


def _combine(prep: _Prepared, group_head_lows: list) -> tuple[Fraction, list]:
    S = Fraction(0)
    per = []
    for g, lows in zip(prep.groups, group_head_lows):
        if not lows:
            v = Fraction(0)
        elif prep.combine == "orthogonal":
            v = sum(lows, Fraction(0))
        else:
            a = [m / n for m, n in zip(lows, prep.pi_norm_sq) if n > 0]
            v = max(a + [sum(lows, Fraction(0)) / sum(prep.pi_norm_sq, Fraction(0))])
        per.append(g.perp + v)
        S += g.perp + v
    return S, per


def _final(prep: _Prepared, S: Fraction) -> tuple[Fraction, Fraction]:
    """``((1 - k)^2 [(1 - eps) S - (1/eps - 1) delta^2], eps)``, clipped at 0."""
    c = (1 - prep.k) ** 2
    if prep.delta_sq == 0:
        return c * S, Fraction(0)
    if S <= 0:
        return Fraction(0), Fraction(1, 2)
    eps = Fraction(min(0.5, max(1e-12, (float(prep.delta_sq) / float(S)) ** 0.5))).limit_denominator(1 << 40)
    v = c * ((1 - eps) * S - (1 / eps - 1) * prep.delta_sq)
    return max(v, Fraction(0)), eps


def _head_boxes(hd: _HeadData, prompt_length, rtol: float, max_boxes: int) -> tuple[list, list]:
    """(breakpoints, canonical lows) of one head: the point alpha = K for a zero-score head at a
    given length K, else the branch-and-bound partition of [0, 1]."""
    if prompt_length != "any" and hd.zero_score:
        tk = Fraction(prompt_length) / (prompt_length + hd.Zref)
        return [tk, tk], [canonical_low(head_objective(hd, tk, tk).lo)]
    bps, leaf, _ = _minimize(hd, rtol, max_boxes)
    return bps, [canonical_low(v) for v in leaf]


def certified_min_loss(model: Model, dataset: Dataset, prompt_length="any", rtol: float = 1e-3,
                       max_boxes: int = 2000) -> CertifiedLoss:
    """A rigorous lower bound on ``sum_t ||g([P, X_i])_t - y_it||^2`` over the constrained outputs,
    for every prompt ``P`` of every length (``prompt_length="any"``) or of length ``K``.

    Parameters
    ----------
    model : single-layer softmax :class:`Model` with a certified injective MLP (k < 1).
    dataset : :class:`Dataset`; ``None`` outputs are unconstrained and do not count.
    prompt_length : ``"any"`` or a positive int K (tighter for zero-score heads: alpha = K).
    rtol : relative gap at which the interval branch and bound stops (the result is rigorous
        whatever the gap; the gap only says how much could still be gained).
    max_boxes : limit on the partition size per (group, head).

    Returns
    -------
    CertifiedLoss with ``value`` (a Fraction, computed from the canonical box lows) and the
    ``loss-bound`` certificate ``body``.

    Raises
    ------
    AssumptionViolated naming the hypothesis (single layer, softmax attention, injective MLP);
    InputError for a bad prompt length or token size.
    """
    if prompt_length != "any" and (isinstance(prompt_length, bool) or not isinstance(prompt_length, int)
                                   or prompt_length < 1):
        raise InputError("prompt_length", "a positive integer or 'any'", repr(prompt_length))
    prep = _prepare(model, dataset)
    lows_all, body_groups, boxes = [], [], 0
    for g in prep.groups:
        lows, entries = [], []
        for hd in g.heads:
            bps, leaf = _head_boxes(hd, prompt_length, rtol, max_boxes)
            boxes += len(leaf)
            lows.append(min(leaf))
            entries.append({"zref": fmt(hd.Zref), "breakpoints": [fmt(b) for b in bps], "lows": [fmt(v) for v in leaf]})
        lows_all.append(lows)
        body_groups.append({"heads": entries})
    S, per = _combine(prep, lows_all)
    value, eps = _final(prep, S)
    body = {"bound_W1": fmt(prep.b1), "bound_W2": fmt(prep.b2),
            "preimages": [[fmt(v) for v in prep.preimages[p]] for p in constrained_positions(dataset)],
            "epsilon": fmt(eps), "groups": body_groups}
    details = [{"query_group": gi, "positions": [list(p) for p in g.positions], "perp": float(g.perp),
                "head_lower": [float(v) for v in lows], "group_lower": float(v)}
               for gi, (g, lows, v) in enumerate(zip(prep.groups, lows_all, per))]
    return CertifiedLoss(value, prompt_length, body, details, prep.k, prep.combine, boxes)


def loss_inputs(model: Model, dataset: Dataset) -> dict:
    """The result's inputs: the model and the dataset, embedded."""
    return {"model": embed(model_to_json(model)), "dataset": embed(dataset_to_json(dataset))}


def loss_bound_result(model: Model, dataset: Dataset, prompt_length="any", claim: str = "LB", **kw) -> Result:
    """The ``loss-bound`` result: status ``verified`` when the bound is > 0 and the trusted checker
    accepts the result, ``unknown`` otherwise; ``error`` naming a violated assumption."""
    from verify.checker import check_result
    t0 = time.perf_counter()
    question = {"kind": "loss-bound", "prompt_length": prompt_length}
    try:
        cb = certified_min_loss(model, dataset, prompt_length, **kw)
    except AssumptionViolated as exc:
        return Result(claim, Status.ERROR, question=question, message=str(exc),
                      seconds={"solve": time.perf_counter() - t0})
    t1 = time.perf_counter()
    res = Result(claim, Status.VERIFIED if cb.value > 0 else Status.UNKNOWN, question=question,
                 inputs=loss_inputs(model, dataset), certificate=certificate(CERT_KIND, cb.body),
                 reported={"certified_min_loss": fmt(cb.value)},
                 method="least squares in u, interval branch and bound in alpha",
                 checks={"positive": cb.value > 0, "boxes": cb.boxes, "combine": cb.combine},
                 message=f"certified_min_loss = {float(cb.value):.6g} (k = {float(cb.k):.4g}, {cb.boxes} boxes)",
                 extra={"certified_min_loss": float(cb.value), "groups": cb.groups})
    if res.status == Status.VERIFIED:
        ok, msg = check_result(res.to_json())
        res.checks["checker"] = ok
        if not ok:
            res.status, res.message = Status.UNKNOWN, f"{res.message}; the checker rejects it: {msg}"
    res.seconds = {"solve": t1 - t0, "check": time.perf_counter() - t1}
    return res
