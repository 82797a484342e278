"""A certified lower bound on the loss of every prompt (THEORY.md section 3, "Certified loss lower
bound"), with its certificate and the checker that replays it.

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
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional

import numpy as np

from constructions.datasets import cheap_norm_bound, mlp_exact, mlp_inverse_float
from constructions.forward import Iv, exp_enclosure
from constructions.lora import column_basis_exact, constrained_positions, rank_exact, solve_exact
from constructions.model import (Dataset, InputError, Model, as_float, as_fraction, dataset_from_json,
                                 dataset_to_json, model_to_json, sha256_json)

__all__ = ["certified_min_loss", "CertifiedLoss", "AssumptionViolated", "replay_certified_loss",
           "head_objective", "model_from_json", "mlp_k", "check_norm_bound", "CERT_KIND"]

CERT_KIND = "certified-loss-bound"


class AssumptionViolated(ValueError):
    """A hypothesis of the bound does not hold on the given model; ``name`` says which."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(f"assumption {name!r} violated: {message}")


# --------------------------------------------------------------------------- small exact helpers

def model_from_json(obj: dict) -> Model:
    """A validated model from a parsed ``ptverify-model/1`` object."""
    from constructions.model import _array, _shape_str, _validate_model_dict  # noqa: PLC2701

    def get_array(parent, name, fld, shape, _where):
        if name not in parent:
            raise InputError(fld, f"a matrix of shape {_shape_str(shape)}", "nothing (missing)")
        return _array(parent[name], fld, shape)
    return _validate_model_dict(obj, get_array)


def _q(x) -> str:
    x = Fraction(x)
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def _sq(a: Iv) -> Iv:
    """Tight enclosure of a^2."""
    if a.lo >= 0:
        return a * a
    if a.hi <= 0:
        return (-a) * (-a)
    m = max(-a.lo, a.hi)
    return Iv(0, (Iv(m) * Iv(m)).hi)


def _dotq(u, v) -> Fraction:
    return sum((a * b for a, b in zip(u, v)), Fraction(0))


def check_norm_bound(W: np.ndarray, b: Fraction) -> bool:
    """Exact test that ``b >= ||W||_2``: via the Frobenius norm, sqrt(||W||_1 ||W||_inf), or an
    exact LDL^T test that ``b^2 I - W^T W`` is positive semidefinite (positive definite here)."""
    b = Fraction(b)
    if b < 0:
        return False
    Wq = as_fraction(np.asarray(W))
    b2 = b * b
    if sum((x * x for x in Wq.reshape(-1)), Fraction(0)) <= b2:
        return True
    if cheap_norm_bound(W) <= b:
        return True
    if min(Wq.shape) <= 64:
        from verify.provers.assumptions import ldl_positive_definite
        G = Wq.T.dot(Wq) if Wq.shape[1] <= Wq.shape[0] else Wq.dot(Wq.T)
        A = [[(b2 if i == j else 0) - G[i, j] for j in range(G.shape[1])] for i in range(G.shape[0])]
        return ldl_positive_definite(A)
    return False


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
    heads: list                     # _HeadData per head (None when heads are not separable)


@dataclass
class _Prepared:
    k: Fraction
    b1: Fraction
    b2: Fraction
    k_method: str
    groups: list
    combine: str                    # "orthogonal" | "oblique" | "perp-only"
    pi_norm_sq: list                # upper bounds on ||Pi_j||_2^2
    delta_sq: Fraction              # sum_t ||z~_t - z*_t||^2 upper bound
    rank_V: int


def _prepare(model: Model, dataset: Dataset, k_override: Optional[tuple] = None) -> _Prepared:
    if len(model.layers) != 1:
        raise AssumptionViolated("single layer", f"the bound is for one layer; the model has {len(model.layers)}")
    layer = model.layers[0]
    if layer.kind != "softmax":
        raise AssumptionViolated("softmax attention", f"layers[0].attention.kind is {layer.kind!r}; Lemma D "
                                 "(the prompt enters through alpha, beta) is for softmax heads")
    for i, ex in enumerate(dataset.examples):
        if ex.input.shape[1] != model.d:
            raise InputError(f"examples[{i}].input", f"tokens of d = {model.d} entries", f"{ex.input.shape[1]}")
    if k_override is None:
        k, b1, b2, method = mlp_k(layer)
    else:
        b1, b2, method = k_override
        k = b1 * b2
    if k >= 1:
        raise AssumptionViolated("injective MLP", f"certified Lipschitz bound k = {float(k):.6g} of the MLP residual "
                                 "branch is not < 1")
    one_mk_sq = (1 - k) ** 2
    d = model.d
    Ms, Bs = [], []
    for h in layer.heads:
        M = as_fraction(h.W_o).dot(as_fraction(h.W_v))
        Ms.append(M)
        Bs.append(column_basis_exact(M))
    Ball = np.concatenate(Bs, axis=1)
    rho_tot = Ball.shape[1]
    rank_V = rank_exact(Ball) if rho_tot else 0
    if rank_V:
        BV = column_basis_exact(Ball)
        PV = BV.dot(solve_exact(BV.T.dot(BV), BV.T))
    else:
        PV = np.zeros((d, d), dtype=object) + Fraction(0)
    direct = rank_V == rho_tot and rho_tot > 0
    Pis, pi_norm_sq = [], []
    combine = "perp-only"
    if direct:
        Lall = solve_exact(Ball.T.dot(Ball), Ball.T)   # (rho, d), L x = coordinates of P_V x
        off = 0
        for B in Bs:
            Pi = B.dot(Lall[off:off + B.shape[1]])
            off += B.shape[1]
            Pis.append(Pi)
        if all(np.array_equal(Pi, Pi.T) for Pi in Pis):
            combine = "orthogonal"
            pi_norm_sq = [Fraction(1)] * len(Pis)
        else:
            combine = "oblique"
            for Pi in Pis:
                fro = sum((x * x for x in Pi.reshape(-1)), Fraction(0))
                cb = cheap_norm_bound(Pi)
                pi_norm_sq.append(min(fro, cb * cb))
    # group constrained positions by query token
    groups: dict = {}
    delta_sq = Fraction(0)
    for i, t in constrained_positions(dataset):
        X = as_fraction(dataset.examples[i].input)
        key = tuple(X[t])
        groups.setdefault(key, []).append((i, t))
    out_groups = []
    for key, pos in groups.items():
        x = np.array(key, dtype=object)
        cs = []
        for i, t in pos:
            z, r2 = _preimage(layer, dataset.examples[i].output[t])
            delta_sq += r2 / one_mk_sq
            cs.append(z - x)
        perp = Fraction(0)
        for c in cs:
            w = c - PV.dot(c)
            perp += _dotq(w, w)
        heads = None
        if combine != "perp-only":
            heads = []
            for j, h in enumerate(layer.heads):
                Wq, Wk = as_fraction(h.W_q), as_fraction(h.W_k)
                qv = Wq.dot(x)
                g = Wk.T.dot(qv)
                zero = all(v == 0 for v in g)
                per = []
                for i, t in pos:
                    X = as_fraction(dataset.examples[i].input)
                    keys = range(t + 1) if model.causal else range(X.shape[0])
                    per.append([(X[b].dot(g) if not zero else Fraction(0), Ms[j].dot(X[b])) for b in keys])
                shift = max(s for p in per for s, _ in p)
                Zs, As = [], []
                for p in per:
                    es = []
                    for s, _ in p:
                        if s == shift:
                            es.append(Iv(1))
                        else:
                            lo_, hi_ = exp_enclosure(s - shift)
                            es.append(Iv(lo_, hi_))
                    Zt = Iv(0)
                    for e in es:
                        Zt = Zt + e
                    At = [Iv(0)] * d
                    for b, (e, (_, mv)) in enumerate(zip(es, p)):
                        rest = Iv(0)
                        for c_, e2 in enumerate(es):
                            if c_ != b:
                                rest = rest + e2
                        wb = Iv(1) / (Iv(1) + rest / e) if rest.hi > 0 else Iv(1)
                        At = [a + wb * v for a, v in zip(At, mv)]
                    Zs.append(Zt)
                    As.append(At)
                chat = [list(Pis[j].dot(c)) for c in cs]
                zref = Zs[0].mid
                heads.append(_HeadData(Zs, As, chat, zero, zref if zref > 0 else Fraction(1)))
        out_groups.append(_Group(x, pos, perp, heads))
    return _Prepared(k, b1, b2, method, out_groups, combine, pi_norm_sq, delta_sq, rank_V)


# --------------------------------------------------------------------------- the bound

@dataclass
class CertifiedLoss:
    """A certified lower bound on the loss of every prompt of the stated length."""

    value: Fraction
    prompt_length: object
    certificate: dict
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
        if prep.combine == "orthogonal":
            v = sum(lows, Fraction(0))
        elif prep.combine == "oblique":
            a = max(m / n for m, n in zip(lows, prep.pi_norm_sq))
            b = sum(lows, Fraction(0)) / sum(prep.pi_norm_sq, Fraction(0))
            v = max(a, b)
        else:
            v = Fraction(0)
        per.append(g.perp + v)
        S += g.perp + v
    return S, per


def _final(prep: _Prepared, S: Fraction) -> tuple[Fraction, Fraction]:
    """``((1 - k)^2 [(1 - eps) S - (1/eps - 1) delta^2], eps)``, clipped at 0."""
    c = (1 - prep.k) ** 2
    if prep.delta_sq == 0:
        return c * S, Fraction(0)
    if S <= 0:
        return Fraction(0), Fraction(1)
    eps = Fraction(min(0.5, max(1e-12, (float(prep.delta_sq) / float(S)) ** 0.5))).limit_denominator(1 << 40)
    v = c * ((1 - eps) * S - (1 / eps - 1) * prep.delta_sq)
    return max(v, Fraction(0)), eps


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
    CertifiedLoss with ``value`` (a Fraction) and a ``certificate`` that
    :func:`replay_certified_loss` re-verifies.

    Raises
    ------
    AssumptionViolated naming the hypothesis (single layer, softmax attention, injective MLP);
    InputError for a bad prompt length or token size.
    """
    if prompt_length != "any" and (isinstance(prompt_length, bool) or not isinstance(prompt_length, int)
                                   or prompt_length < 1):
        raise InputError("prompt_length", "a positive integer or 'any'", repr(prompt_length))
    prep = _prepare(model, dataset)
    lows_all, cert_groups, boxes = [], [], 0
    for g in prep.groups:
        lows, ch = [], []
        for hd in (g.heads or []):
            if prompt_length != "any" and hd.zero_score:
                tk = Fraction(prompt_length) / (prompt_length + hd.Zref)
                lo = head_objective(hd, tk, tk).lo if len(hd.Z) >= 2 else Fraction(0)
                bps, leaf = [tk, tk], [lo]
            else:
                bps, leaf, lo = _minimize(hd, rtol, max_boxes)
            boxes += len(leaf)
            lows.append(lo)
            ch.append({"breakpoints": [_q(b) for b in bps], "leaf_lower": [_q(v) for v in leaf], "lower": _q(lo)})
        lows_all.append(lows)
        cert_groups.append({"query": [_q(v) for v in g.query], "positions": [list(p) for p in g.positions],
                            "perp": _q(g.perp), "heads": ch})
    S, per = _combine(prep, lows_all)
    value, eps = _final(prep, S)
    mj, dj = model_to_json(model), dataset_to_json(dataset)
    cert = {"kind": CERT_KIND, "prompt_length": prompt_length, "model": mj, "dataset": dj,
            "model_sha256": sha256_json(mj), "dataset_sha256": sha256_json(dj),
            "k": _q(prep.k), "bound_W1": _q(prep.b1), "bound_W2": _q(prep.b2), "k_method": prep.k_method,
            "combine": prep.combine, "pi_norm_sq": [_q(v) for v in prep.pi_norm_sq],
            "delta_sq": _q(prep.delta_sq), "epsilon": _q(eps), "groups": cert_groups,
            "sum_lower": _q(S), "value": _q(value)}
    details = [{"query_group": gi, "positions": [list(p) for p in g.positions], "perp": float(g.perp),
                "head_lower": [float(v) for v in lows], "group_lower": float(v)}
               for gi, (g, lows, v) in enumerate(zip(prep.groups, lows_all, per))]
    return CertifiedLoss(value, prompt_length, cert, details, prep.k, prep.combine, boxes)


# --------------------------------------------------------------------------- replay

def replay_certified_loss(cert: dict) -> tuple[bool, str]:
    """Re-verify a ``certified-loss-bound`` certificate from the model and dataset it carries.

    Recomputes, in exact rationals and rigorous intervals (no floats decide anything): the norm
    bounds (checked by :func:`check_norm_bound`), the projections, every leaf's interval lower
    bound (must equal the stated one), that the leaves tile [0, 1] (or sit at alpha = K for a
    zero-score head), and the final value."""
    if cert.get("kind") != CERT_KIND:
        return False, f"certificate kind: expected {CERT_KIND!r}, found {cert.get('kind')!r}"
    model = model_from_json(cert["model"])
    dataset = dataset_from_json(cert["dataset"], model.d)
    if sha256_json(cert["model"]) != cert["model_sha256"] or sha256_json(cert["dataset"]) != cert["dataset_sha256"]:
        return False, "model or dataset does not match its recorded sha256"
    b1, b2 = Fraction(cert["bound_W1"]), Fraction(cert["bound_W2"])
    layer = model.layers[0]
    if not (check_norm_bound(layer.W_1, b1) and check_norm_bound(layer.W_2, b2)):
        return False, "bound_W1 or bound_W2 is not a valid upper bound on the spectral norm"
    if Fraction(cert["k"]) != b1 * b2:
        return False, "k != bound_W1 * bound_W2"
    try:
        prep = _prepare(model, dataset, k_override=(b1, b2, cert["k_method"]))
    except AssumptionViolated as exc:
        return False, str(exc)
    K = cert["prompt_length"]
    if prep.combine != cert["combine"] or [_q(v) for v in prep.pi_norm_sq] != cert["pi_norm_sq"]:
        return False, "head combination or projection norms differ from the recomputed ones"
    if _q(prep.delta_sq) != cert["delta_sq"]:
        return False, "preimage residual delta^2 differs from the recomputed one"
    if len(cert["groups"]) != len(prep.groups):
        return False, "number of query groups differs"
    lows_all = []
    for gi, (g, cg) in enumerate(zip(prep.groups, cert["groups"])):
        if cg["query"] != [_q(v) for v in g.query] or cg["positions"] != [list(p) for p in g.positions]:
            return False, f"group {gi}: query or positions differ"
        if cg["perp"] != _q(g.perp):
            return False, f"group {gi}: off-subspace part differs"
        heads = g.heads or []
        if len(cg["heads"]) != len(heads):
            return False, f"group {gi}: number of heads differs"
        lows = []
        for j, (hd, ch) in enumerate(zip(heads, cg["heads"])):
            bps = [Fraction(b) for b in ch["breakpoints"]]
            leaf = [Fraction(v) for v in ch["leaf_lower"]]
            if K != "any" and hd.zero_score:
                tk = Fraction(K) / (K + hd.Zref)
                if bps != [tk, tk]:
                    return False, f"group {gi} head {j}: zero-score head must be evaluated at alpha = K"
                got = [head_objective(hd, tk, tk).lo if len(hd.Z) >= 2 else Fraction(0)]
            elif len(hd.Z) < 2:
                got = [Fraction(0)]
                if bps != [0, 1]:
                    return False, f"group {gi} head {j}: breakpoints must be [0, 1]"
            else:
                if bps[0] != 0 or bps[-1] != 1 or any(a >= b for a, b in zip(bps, bps[1:])):
                    return False, f"group {gi} head {j}: breakpoints do not tile [0, 1] in increasing order"
                got = [head_objective(hd, a, b).lo for a, b in zip(bps, bps[1:])]
            if got != leaf:
                return False, f"group {gi} head {j}: a leaf lower bound differs from the recomputed one"
            if Fraction(ch["lower"]) != min(got):
                return False, f"group {gi} head {j}: stated lower bound is not the minimum over the leaves"
            lows.append(min(got))
        lows_all.append(lows)
    S, _ = _combine(prep, lows_all)
    if _q(S) != cert["sum_lower"]:
        return False, "sum of group bounds differs"
    eps = Fraction(cert["epsilon"])
    c = (1 - prep.k) ** 2
    if prep.delta_sq == 0:
        value = c * S
    else:
        if not (0 < eps < 1):
            return False, "epsilon must lie in (0, 1)"
        value = max(Fraction(0), c * ((1 - eps) * S - (1 / eps - 1) * prep.delta_sq))
    if _q(value) != cert["value"]:
        return False, f"value differs: recomputed {float(value):.6g}"
    return True, f"certified loss lower bound {float(value):.6g} re-verified ({sum(len(g['heads']) for g in cert['groups'])} head problems)"
