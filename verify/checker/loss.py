"""Checks of the certified loss lower bound (``loss-bound``) and of the prompt-tuning experiment's
consistency with it (``experiment-consistency``).  The argument is ``proofs/loss_bound.md``.

The loss of a prompt P is ``sum ||g([P, X_i])_t - y_it||^2`` over the constrained outputs (not
null).  For one softmax layer the checker recomputes, from the result's model and dataset only:
the MLP contraction ``k = b1 b2 < 1`` (the norm bounds are proposed by the body and re-proved),
the preimages' exact residuals, the query groups, the subspace split (the constant off-V part,
the oblique projections, their norms), every head's softmax enclosures, and for every box of the
substitute ``tau = alpha / (zref + alpha)`` in [0, 1] the interval lower bound of the one-head
least-squares objective ``G`` with its own interval arithmetic.  Body of ``loss-bound``::

    {"bound_W1": r, "bound_W2": r,        # proposed ||W_1||_2 and ||W_2||_2 bounds (re-proved)
     "preimages": [[d r], ...],           # z~ per constrained output, in dataset order
     "epsilon": r,                        # 0 when every preimage is exact, else in (0, 1)
     "groups": [{"heads": [{"zref": r, "breakpoints": [r, ...], "lows": [r, ...]}, ...]}, ...]}

Groups are the distinct query tokens of the constrained outputs, in order of first appearance;
a group lists one entry per head when the heads' output spaces form a direct sum and it has at
least two positions, else none (its head part is 0).  Each head's boxes tile [0, 1] (or are the
single point ``tau = K / (K + zref)`` for a zero-score head and an integer prompt length K:
alpha = K exactly).  Every stated low must be at most the checker's own interval lower bound of
its box (soundness) and at least that bound minus ``2^-32`` relative (canonical form: the low is
the evaluation's lower end rounded down, so no low can be weakened unnoticed).  The certified
bound is then ``(1 - k)^2 S`` (or ``(1 - k)^2 [(1 - eps) S - (1/eps - 1) delta^2]`` with inexact
preimages), ``S`` the sum over groups of the off-V part and the combined head lows; it must be > 0.
Derived: ``certified_min_loss`` and ``mlp_lipschitz_bound`` (k).

Body of ``experiment-consistency`` (question ``experiment``, inputs model and dataset)::

    {"bound": <loss-bound body, for prompts of every length>,
     "runs": [{"prompt": [[d numbers], ...], "final_loss": number}, ...]}

What it checks: the nested bound B as above; for every run, the loss of its recorded prompt
(floats taken at their exact values), enclosed by an interval forward pass with rigorous
exponentials, has its lower end >= B; the recorded float loss is >= B and lies within
``1e-9 (1 + |loss|)`` of that enclosure (it is the measurement of that very prompt).  Nothing
about the optimizer or about LoRA runs is checked.  Derived: ``certified_min_loss``, ``runs``.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from .envelope import Context, Outcome
from .inputs import CDataset, CLayer, CModel, exact_mlp, require_plain
from .numbers import (EXP_ARG_LIMIT, Reject, dot, exp_bounds, fields, fmt, matrix, nonneg, norm_bound_holds,
                      positive, rat, vector)

__all__ = ["check_bound", "check_experiment", "bound_value", "run_loss_enclosure", "head_objective",
           "TIGHTNESS", "RUN_TOLERANCE"]

#: a stated box low may lie at most this far (relative, plus TIGHTNESS^2 absolute) below the own one
TIGHTNESS = Fraction(1, 1 << 32)
#: a recorded run loss must lie within RUN_TOLERANCE (1 + |loss|) of the rigorous enclosure
RUN_TOLERANCE = Fraction(1, 10 ** 9)
MAX_BOXES = 1 << 17
MAX_PROMPT_TOKENS = 1 << 12
_BITS = 160


# --------------------------------------------------------------------------- intervals

def _down(q: Fraction) -> Fraction:
    """q rounded down to about _BITS significant bits (unchanged when its denominator is small)."""
    if q.denominator.bit_length() <= _BITS + 8:
        return q
    e = _BITS - (abs(q.numerator).bit_length() - q.denominator.bit_length())
    if e >= 0:
        return Fraction((q.numerator << e) // q.denominator, 1 << e)
    return Fraction((q.numerator // (q.denominator << -e)) << -e)


def _up(q: Fraction) -> Fraction:
    return -_down(-q)


class _I:
    """A closed interval of rationals, rounded outward; operations on two points stay exact."""

    __slots__ = ("lo", "hi")

    def __init__(self, lo, hi=None):
        self.lo = lo if type(lo) is Fraction else Fraction(lo)
        self.hi = self.lo if hi is None else hi if type(hi) is Fraction else Fraction(hi)

    def point(self) -> bool:
        return self.lo == self.hi

    def __add__(self, o):
        o = _iv(o)
        if self.point() and o.point():
            return _I(self.lo + o.lo)
        return _I(_down(self.lo + o.lo), _up(self.hi + o.hi))

    __radd__ = __add__

    def __neg__(self):
        return _I(-self.hi, -self.lo)

    def __sub__(self, o):
        return self + (-_iv(o))

    def __rsub__(self, o):
        return _iv(o) + (-self)

    def __mul__(self, o):
        o = _iv(o)
        if self.point() and o.point():
            return _I(self.lo * o.lo)
        c = (self.lo * o.lo, self.lo * o.hi, self.hi * o.lo, self.hi * o.hi)
        return _I(_down(min(c)), _up(max(c)))

    __rmul__ = __mul__

    def __truediv__(self, o):
        o = _iv(o)
        if o.lo <= 0 <= o.hi:
            raise Reject("interval arithmetic: division by an enclosure that contains 0")
        if o.point():
            return self * _I(1 / o.lo)
        return self * _I(_down(1 / o.hi), _up(1 / o.lo))

    def __rtruediv__(self, o):
        return _iv(o) / self

    def sq(self) -> "_I":
        if self.lo >= 0:
            return self * self
        if self.hi <= 0:
            return (-self) * (-self)
        m = max(-self.lo, self.hi)
        return _I(0, _up(m * m))

    def relu(self) -> "_I":
        return _I(max(self.lo, 0), max(self.hi, 0))


def _iv(x) -> _I:
    return x if isinstance(x, _I) else _I(x)


def _exp_le0(s: Fraction) -> _I:
    """Enclosure of exp(s) for s <= 0 (below -EXP_ARG_LIMIT: [0, exp(-EXP_ARG_LIMIT)])."""
    if s == 0:
        return _I(1)
    if s < -EXP_ARG_LIMIT:
        return _I(0, exp_bounds(Fraction(-EXP_ARG_LIMIT))[1])
    lo, hi = exp_bounds(s)
    return _I(lo, hi)


# --------------------------------------------------------------------------- exact linear algebra

def _pivots(cols: list, d: int) -> list:
    """Indices of a maximal independent subset of the vectors ``cols`` (greedy, exact)."""
    basis, piv = [], []             # basis: reduced vectors with their leading index
    for j, v in enumerate(cols):
        w = list(v)
        for lead, b in basis:
            if w[lead]:
                f = w[lead] / b[lead]
                w = [x - f * y for x, y in zip(w, b)]
        lead = next((i for i in range(d) if w[i]), None)
        if lead is not None:
            basis.append((lead, w))
            piv.append(j)
    return piv


def _inverse(G: list) -> list:
    """Exact inverse of a nonsingular square matrix (Gauss-Jordan)."""
    n = len(G)
    A = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(G)]
    for c in range(n):
        r = next((r for r in range(c, n) if A[r][c]), None)
        if r is None:
            raise Reject("subspace split: singular Gram matrix")
        A[c], A[r] = A[r], A[c]
        p = A[c][c]
        A[c] = [x / p for x in A[c]]
        for r2 in range(n):
            if r2 != c and A[r2][c]:
                f = A[r2][c]
                A[r2] = [x - f * y for x, y in zip(A[r2], A[c])]
    return [row[n:] for row in A]


def _head_matrix(h: dict) -> list:
    """Columns of M = W_o W_v."""
    return [h["W_o"].mv(h["W_v"].col(c)) for c in range(h["W_v"].shape[1])]


@dataclass
class _Split:
    """V = sum_j col(M_j): a basis, its inverse Gram matrix, and (direct sum) the projections."""
    basis: list
    ginv: list
    combine: str                  # "orthogonal" | "oblique" | "perp-only"
    pis: list                     # Pi_j as lists of rows (direct sum only)
    pi_norm_sq: list              # min(||Pi_j||_F^2, ||Pi_j||_1 ||Pi_j||_inf)

    def perp(self, c: list) -> Fraction:
        """||(I - P_V) c||^2, exactly."""
        if not self.basis:
            return dot(c, c)
        y = [dot(row, [dot(b, c) for b in self.basis]) for row in self.ginv]
        w = [ci - sum((yi * b[i] for yi, b in zip(y, self.basis)), Fraction(0)) for i, ci in enumerate(c)]
        return dot(w, w)


def _split(layer: CLayer, d: int) -> _Split:
    blocks = []
    for h in layer.heads:
        cols = _head_matrix(h)
        blocks.append([cols[p] for p in _pivots(cols, d)])
    allc = [c for B in blocks for c in B]
    basis = [allc[p] for p in _pivots(allc, d)]
    ginv = _inverse([[dot(a, b) for b in basis] for a in basis]) if basis else []
    if not allc or len(basis) != len(allc):
        return _Split(basis, ginv, "perp-only", [], [])
    coords = [[sum((g * b[i] for g, b in zip(row, basis)), Fraction(0)) for i in range(d)] for row in ginv]
    pis, off = [], 0
    for B in blocks:
        L = coords[off:off + len(B)]
        off += len(B)
        pis.append([[sum((B[k][r] * L[k][c] for k in range(len(B))), Fraction(0)) for c in range(d)]
                    for r in range(d)])
    if all(P[r][c] == P[c][r] for P in pis for r in range(d) for c in range(d)):
        return _Split(basis, ginv, "orthogonal", pis, [Fraction(1)] * len(pis))
    norms = []
    for P in pis:
        fro = sum((x * x for row in P for x in row), Fraction(0))
        n1 = max(sum(abs(P[r][c]) for r in range(d)) for c in range(d))
        ninf = max(sum(abs(x) for x in row) for row in P)
        norms.append(min(fro, n1 * ninf))
    return _Split(basis, ginv, "oblique", pis, norms)


# --------------------------------------------------------------------------- one head, one group

@dataclass
class HeadData:
    """One head at one query group: per position the enclosures Z_t (softmax denominator over the
    input keys, shifted by the group's largest score) and A_t (prompt-free head output), and the
    target part c_t = Pi_j (z~_t - x) in col(M_j); ``zero``: the score vector W_k^T W_q x is 0."""
    Z: list
    A: list
    c: list
    zero: bool
    zref: Fraction = Fraction(1)


def head_objective(hd: HeadData, a: Fraction, b: Fraction) -> _I:
    """Enclosure of G(tau) = sum_{t<s} ||rho_t e_s - rho_s e_t||^2 / sum_t rho_t^2 for tau in
    [a, b], with rho_t = zref / (Z_t + (zref - Z_t) tau), e_t = c_t - lambda_t A_t and
    lambda_t = 1 - tau rho_t; clipped below at 0."""
    tau, zr = _I(a, b), _I(hd.zref)
    rho, lam = [], []
    for Z in hd.Z:
        r = zr / (Z + (zr - Z) * tau)
        rho.append(r)
        lam.append(_I(1) - tau * r)
    num = _I(0)
    T, d = len(hd.Z), len(hd.c[0])
    for t in range(T):
        for s in range(t + 1, T):
            for i in range(d):
                w = rho[t] * (hd.c[s][i] - lam[s] * hd.A[s][i]) - rho[s] * (hd.c[t][i] - lam[t] * hd.A[t][i])
                num = num + w.sq()
    den = _I(0)
    for r in rho:
        den = den + r.sq()
    out = num / den
    return _I(max(out.lo, Fraction(0)), max(out.hi, Fraction(0)))


def _softmax_parts(es: list, values: list, d: int) -> tuple[_I, list]:
    """(Z, A): the sum of the exponentials and the weighted sum of the value vectors, the weight
    of key b enclosed as 1 / (1 + rest_b / e_b)."""
    Z = _I(0)
    for e in es:
        Z = Z + e
    A = [_I(0)] * d
    for b, (e, v) in enumerate(zip(es, values)):
        rest = _I(0)
        for c, e2 in enumerate(es):
            if c != b:
                rest = rest + e2
        if e.lo <= 0:
            raise Reject("softmax: a score lies more than the checker's exponent limit below the largest")
        w = _I(1) / (_I(1) + rest / e) if rest.hi > 0 else _I(1)
        A = [x + w * vi for x, vi in zip(A, v)]
    return Z, A


def _head_data(model: CModel, ds: CDataset, j: int, x: list, positions: list, chat: list) -> HeadData:
    h = model.layers[0].heads[j]
    g = h["W_k"].vm(h["W_q"].mv(x))
    zero = not any(g)
    per = []
    for i, t in positions:
        X = ds.inputs[i]
        keys = X[:t + 1] if model.causal else X
        per.append([(Fraction(0) if zero else dot(xb, g), h["W_o"].mv(h["W_v"].mv(xb))) for xb in keys])
    shift = max(s for p in per for s, _ in p)
    Zs, As = [], []
    for p in per:
        Z, A = _softmax_parts([_exp_le0(s - shift) for s, _ in p], [v for _, v in p], model.d)
        Zs.append(Z)
        As.append(A)
    return HeadData(Zs, As, chat, zero)


# --------------------------------------------------------------------------- the bound

def _single_softmax_layer(model: CModel) -> CLayer:
    if len(model.layers) != 1:
        raise Reject(f"inputs.model: the loss bound is for one layer; the model has {len(model.layers)}")
    layer = model.layers[0]
    if layer.kind != "softmax":
        raise Reject(f"inputs.model: the loss bound is for softmax attention; the layer is {layer.kind!r}")
    return layer


def _contraction(layer: CLayer, body: dict, where: str) -> Fraction:
    """k = b1 b2 with b1 >= ||W_1||_2 and b2 >= ||W_2||_2 re-proved; k < 1 required."""
    b1, b2 = nonneg(body["bound_W1"], f"{where}.bound_W1"), nonneg(body["bound_W2"], f"{where}.bound_W2")
    if not norm_bound_holds(layer.W_1, b1):
        raise Reject(f"{where}.bound_W1: {fmt(b1)[:40]} is not proved to bound ||W_1||_2")
    if not norm_bound_holds(layer.W_2, b2):
        raise Reject(f"{where}.bound_W2: {fmt(b2)[:40]} is not proved to bound ||W_2||_2")
    if b1 * b2 >= 1:
        raise Reject(f"{where}: k = bound_W1 bound_W2 = {float(b1 * b2):.6g} is not < 1 (the MLP must be injective)")
    return b1 * b2


def _positions(ds: CDataset) -> list:
    return [(i, t) for i, outs in enumerate(ds.outputs) for t, y in enumerate(outs) if y is not None]


def _preimages(layer: CLayer, ds: CDataset, body: dict, where: str, positions: list) -> tuple[dict, Fraction]:
    """c_t = z~_t - x_t per position and sum ||MLP(z~_t) - y_t||^2 (exact)."""
    pre = body["preimages"]
    if not isinstance(pre, list) or len(pre) != len(positions):
        raise Reject(f"{where}.preimages: expected one vector per constrained output ({len(positions)})")
    cs, res = {}, Fraction(0)
    for n, (i, t) in enumerate(positions):
        z = vector(pre[n], f"{where}.preimages[{n}]", len(ds.inputs[i][t]))
        r = [a - b for a, b in zip(exact_mlp(layer, z), ds.outputs[i][t])]
        res += dot(r, r)
        cs[(i, t)] = [a - b for a, b in zip(z, ds.inputs[i][t])]
    return cs, res


def _groups(ds: CDataset, positions: list) -> list:
    """(query token, its positions), queries in order of first appearance."""
    out: dict = {}
    for i, t in positions:
        out.setdefault(tuple(ds.inputs[i][t]), []).append((i, t))
    return [(list(x), pos) for x, pos in out.items()]


def _tight(stated: Fraction, own: Fraction, where: str) -> None:
    if stated > own:
        raise Reject(f"{where}: {float(stated):.9g} exceeds the interval lower bound {float(own):.9g} of its box")
    if own - stated > own * TIGHTNESS + TIGHTNESS * TIGHTNESS:
        raise Reject(f"{where}: {float(stated):.9g} is not the interval lower bound {float(own):.9g} of its box "
                     "rounded down (more than 2^-32 relative below it)")


def _head_low(hd: HeadData, entry, K, where: str) -> tuple[Fraction, int]:
    """The head's certified low: every box's stated low checked against the own interval bound."""
    fields(entry, where, {"zref", "breakpoints", "lows"})
    hd.zref = positive(entry["zref"], f"{where}.zref")
    bps = vector(entry["breakpoints"], f"{where}.breakpoints")
    if not isinstance(entry["lows"], list) or len(entry["lows"]) != len(bps) - 1 or not entry["lows"]:
        raise Reject(f"{where}.lows: expected one low per box ({max(len(bps) - 1, 1)})")
    if len(bps) > MAX_BOXES + 1:
        raise Reject(f"{where}.breakpoints: more than {MAX_BOXES} boxes")
    lows = [nonneg(v, f"{where}.lows[{n}]") for n, v in enumerate(entry["lows"])]
    if K != "any" and hd.zero:
        tk = Fraction(K) / (K + hd.zref)
        if bps != [tk, tk]:
            raise Reject(f"{where}.breakpoints: a zero-score head at prompt length {K} is the point "
                         f"tau = K / (K + zref) = {fmt(tk)[:40]} (alpha = K)")
    elif bps[0] != 0 or bps[-1] != 1 or any(a >= b for a, b in zip(bps, bps[1:])):
        raise Reject(f"{where}.breakpoints: expected increasing values from 0 to 1 (boxes tiling tau in [0, 1])")
    for n, (a, b, low) in enumerate(zip(bps, bps[1:], lows)):
        _tight(low, head_objective(hd, a, b).lo, f"{where}.lows[{n}]")
    return min(lows), len(lows)


def _group_low(sp: _Split, lows: list) -> Fraction:
    if sp.combine == "orthogonal":
        return sum(lows, Fraction(0))
    if sp.combine == "oblique":
        per = [m / n for m, n in zip(lows, sp.pi_norm_sq) if n > 0]
        tot = sum(lows, Fraction(0)) / sum(sp.pi_norm_sq, Fraction(0))
        return max(per + [tot])
    return Fraction(0)


def _sum_lower(model: CModel, ds: CDataset, groups_body, cs: dict, K, where: str) -> tuple[Fraction, int, str]:
    """S = sum over query groups of the off-V part and the combined head lows."""
    sp = _split(model.layers[0], model.d)
    groups = _groups(ds, list(cs))
    if not isinstance(groups_body, list) or len(groups_body) != len(groups):
        raise Reject(f"{where}.groups: expected one entry per distinct query token ({len(groups)})")
    S, boxes = Fraction(0), 0
    for n, ((x, pos), gb) in enumerate(zip(groups, groups_body)):
        gw = f"{where}.groups[{n}]"
        fields(gb, gw, {"heads"})
        S += sum((sp.perp(cs[p]) for p in pos), Fraction(0))
        nheads = len(model.layers[0].heads) if sp.combine != "perp-only" and len(pos) >= 2 else 0
        if not isinstance(gb["heads"], list) or len(gb["heads"]) != nheads:
            raise Reject(f"{gw}.heads: expected {nheads} entries (one per head when the head output spaces "
                         "form a direct sum and the group has two or more positions)")
        lows = []
        for j, entry in enumerate(gb["heads"]):
            chat = [[dot(row, cs[p]) for row in sp.pis[j]] for p in pos]
            low, nb = _head_low(_head_data(model, ds, j, x, pos, chat), entry, K, f"{gw}.heads[{j}]")
            lows.append(low)
            boxes += nb
        S += _group_low(sp, lows) if lows else Fraction(0)
    return S, boxes, sp.combine


def bound_value(model: CModel, ds: CDataset, body, K, where: str = "certificate.body") -> tuple[Fraction, Fraction, str]:
    """(B, k, account): the certified lower bound on the loss of every prompt of length K ("any":
    every length), re-derived from the model, the dataset and the body's hints; B > 0 required."""
    fields(body, where, {"bound_W1", "bound_W2", "preimages", "epsilon", "groups"})
    layer = _single_softmax_layer(model)
    k = _contraction(layer, body, where)
    positions = _positions(ds)
    cs, res = _preimages(layer, ds, body, where, positions)
    one_mk_sq = (1 - k) ** 2
    delta_sq = res / one_mk_sq
    eps = nonneg(body["epsilon"], f"{where}.epsilon")
    if delta_sq == 0 and eps != 0:
        raise Reject(f"{where}.epsilon: every preimage is exact, so epsilon must be 0")
    if delta_sq > 0 and not 0 < eps < 1:
        raise Reject(f"{where}.epsilon: the preimages are inexact, so epsilon must lie in (0, 1)")
    S, boxes, combine = _sum_lower(model, ds, body["groups"], cs, K, where)
    B = one_mk_sq * S if delta_sq == 0 else max(Fraction(0), one_mk_sq * ((1 - eps) * S - (1 / eps - 1) * delta_sq))
    if B <= 0:
        raise Reject(f"{where}: the certified bound is {float(B):.6g}; a bound of 0 states nothing")
    account = (f"k = {float(k):.4g}, {len(positions)} constrained outputs, heads combined {combine}, "
               f"{boxes} boxes re-evaluated")
    return B, k, account


def check_bound(ctx: Context) -> Outcome:
    """``loss-bound``: every prompt of the question's length has loss >= the derived bound > 0."""
    require_plain(ctx.inputs["model"], ctx.inputs["dataset"], "loss-bound")
    K = ctx.question["prompt_length"]
    B, k, account = bound_value(ctx.inputs["model"], ctx.inputs["dataset"], ctx.body, K)
    length = "every length" if K == "any" else f"length {K}"
    return Outcome(f"every prompt of {length} has loss >= {float(B):.6g} (certified; {account})",
                   {"certified_min_loss": fmt(B), "mlp_lipschitz_bound": fmt(k)})


# --------------------------------------------------------------------------- the experiment

def _head_output(h: dict, x: list, keys: list, memo: dict) -> list:
    """Enclosure of one head's output at query x over the keys (prompt included); ``memo`` keeps
    exponentials and value vectors already computed for this head (keyed by exact argument)."""
    kq = h["W_k"].vm(h["W_q"].mv(x))
    scores = [dot(kb, kq) for kb in keys]
    shift = max(scores)
    Z, num = _I(0), [_I(0)] * h["W_o"].shape[0]
    for s, kb in zip(scores, keys):
        if s - shift not in memo["exp"]:
            memo["exp"][s - shift] = _exp_le0(s - shift)
        if tuple(kb) not in memo["value"]:
            memo["value"][tuple(kb)] = h["W_o"].mv(h["W_v"].mv(kb))
        e, v = memo["exp"][s - shift], memo["value"][tuple(kb)]
        Z = Z + e
        num = [a + e * vi for a, vi in zip(num, v)]
    return [a / Z for a in num]


def _mlp_enclosure(layer: CLayer, z: list) -> list:
    pre = [sum((zc * w for zc, w in zip(z, row)), _I(0)) + b for row, b in zip(layer.W_1.rows(), layer.b_1)]
    hid = [p.relu() for p in pre]
    post = [sum((hc * w for hc, w in zip(hid, row)), _I(0)) for row in layer.W_2.rows()]
    return [a + p + b for a, p, b in zip(z, post, layer.b_2)]


def run_loss_enclosure(model: CModel, ds: CDataset, prompt: list) -> _I:
    """Rigorous enclosure of sum ||g([P, X_i])_t - y_it||^2 over the constrained outputs."""
    layer = _single_softmax_layer(model)
    tot, memos = _I(0), [{"exp": {}, "value": {}} for _ in layer.heads]
    for X, Y in zip(ds.inputs, ds.outputs):
        seq = prompt + X
        for t, y in enumerate(Y):
            if y is None:
                continue
            a = len(prompt) + t
            keys = seq[:a + 1] if model.causal else seq
            z = [_I(v) for v in seq[a]]
            for h, memo in zip(layer.heads, memos):
                z = [zi + o for zi, o in zip(z, _head_output(h, seq[a], keys, memo))]
            for o, yv in zip(_mlp_enclosure(layer, z), y):
                tot = tot + (o - yv).sq()
    return tot


def _check_run(model: CModel, ds: CDataset, run, B: Fraction, where: str) -> Fraction:
    fields(run, where, {"prompt", "final_loss"})
    P = matrix(run["prompt"], f"{where}.prompt", cols=model.d)
    if not P or len(P) > MAX_PROMPT_TOKENS:
        raise Reject(f"{where}.prompt: expected 1 to {MAX_PROMPT_TOKENS} tokens of {model.d} entries")
    rec = rat(run["final_loss"], f"{where}.final_loss")
    if rec < B:
        raise Reject(f"{where}.final_loss: the recorded loss {float(rec):.9g} is below the certified bound {float(B):.9g}")
    enc = run_loss_enclosure(model, ds, P)
    if enc.lo < B:
        raise Reject(f"{where}.prompt: its loss is enclosed in [{float(enc.lo):.9g}, {float(enc.hi):.9g}], "
                     f"not above the certified bound {float(B):.9g}")
    tol = RUN_TOLERANCE * (1 + abs(rec))
    if not enc.lo - tol <= rec <= enc.hi + tol:
        raise Reject(f"{where}.final_loss: the recorded {float(rec):.12g} is not the loss of its prompt "
                     f"(rigorously [{float(enc.lo):.12g}, {float(enc.hi):.12g}], tolerance 1e-9 (1 + loss))")
    return enc.lo


def check_experiment(ctx: Context) -> Outcome:
    """``experiment-consistency``: every recorded prompt run's loss is >= the certified bound."""
    model, ds = ctx.inputs["model"], ctx.inputs["dataset"]
    require_plain(model, ds, "experiment-consistency")
    fields(ctx.body, "certificate.body", {"bound", "runs"})
    runs = ctx.body["runs"]
    if not isinstance(runs, list) or not runs:
        raise Reject("certificate.body.runs: expected a non-empty list of runs")
    B, _, account = bound_value(model, ds, ctx.body["bound"], "any", "certificate.body.bound")
    least = min(_check_run(model, ds, r, B, f"certificate.body.runs[{n}]") for n, r in enumerate(runs))
    return Outcome(f"all {len(runs)} recorded prompt runs have loss >= the certified bound {float(B):.6g} "
                   f"(least rigorous enclosure {float(least):.6g}; recorded losses within 1e-9 (1 + loss) of "
                   f"their replay; bound: {account})", {"certified_min_loss": fmt(B), "runs": len(runs)})
