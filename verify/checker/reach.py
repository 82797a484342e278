"""Certified reach of prompts on one real layer (kind ``reach-support``, question ``reach``, status
``verified``).

The theorem is proofs/reach.md.  One ``ptverify-model/2`` softmax layer (attention biases, score
scale, LayerNorm "pre", "post" or none) and a dataset with targets at the attention block
(``"at": "attention"``).  At a query position, with a prompt of m >= 1 rows prepended, head j's
output is ``(1 - lam_j) a_j + lam_j w_j`` with ``a_j`` the no-prompt output, ``lam_j`` in (0, 1)
and ``w_j`` in ``W_j = conv{W_v^j r(p) + b_v^j : p an admissible row}`` (``r(p) = p``, or
``LN1(p)`` with a pre-LayerNorm).  So every coordinate k of the attention block's pre-norm sum
``u = x + b_o + sum_j W_o^j head_j`` satisfies

    u_k <= x_k + b_o,k + sum_j max((W_o^j a_j)_k, c_jk + rho ||P g_jk||_2)
    u_k >= x_k + b_o,k + sum_j min((W_o^j a_j)_k, c_jk - rho ||P g_jk||_2)

with ``g_jk = (W_v^j)^T (W_o^j)^T e_k`` and, by prompt set:

* no pre-LN, any row: ``c_jk = (W_o^j b_v^j)_k``; unbounded (both ways) unless ``g_jk = 0``;
* no pre-LN, rows of 2-norm <= R (``question.prompt_norm``): the same ``c_jk``, ``P = I``, ``rho = R``;
* pre-LN: ``c_jk = (W_o^j (W_v^j beta + b_v^j))_k``, ``P g = P0(gamma * g)`` (P0 removes the mean),
  ``rho^2 = d``, or ``rho^2 = R^2 d / (R^2 + d eps)`` with a norm bound R.

With a post-LayerNorm the site is ``h = LN1(u)``; every ``h_k`` lies in ``beta_k +- |gamma_k|
sqrt(d - 1)`` whatever u is, and when u's box is finite also in the interval LayerNorm of that box.

Body: ``{"ranges": [{"example", "position", "lo", "hi"[, "h_lo", "h_hi"]}, ...]}``: one entry per
constrained output, in dataset order; ``lo``, ``hi`` (and, post-LN only, ``h_lo``, ``h_hi``) are d
numbers each (exact rationals, or the strings ``"inf"`` / ``"-inf"``).  The checker recomputes
every bound with exact rationals and rigorous enclosures (exp, square roots) and accepts only if
each reported ``lo`` is at most its own lower bound and each ``hi`` at least its own upper bound;
``"inf"`` / ``"-inf"`` only where its own bound is infinite.  Nothing is reported.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .envelope import Context, Outcome
from .numbers import Reject, fields, integer, rat, sqrt_up
from .real import Iv, _dot, _normed, _out, single_attention_layer
from .real_witness import _layer_norm, _scale, _weights

__all__ = ["KIND", "check", "support_terms", "support_direction", "no_prompt_heads", "member_bounds",
           "site_bounds", "INF"]

KIND = "reach-support"
B = "certificate.body"
ZERO = Fraction(0)
ONE = Fraction(1)
#: the infinite bound, written as the strings "inf" / "-inf"
INF = None


def _ints(vals: list) -> tuple:
    """Integer numerators over one common denominator."""
    D = 1
    for v in vals:
        D = D * v.denominator // math.gcd(D, v.denominator)
    return [v.numerator * (D // v.denominator) for v in vals], D


def _forms(L, d: int, R) -> list:
    """Per head: (cvec, K, No, den, rho2): the support set's center ``cvec = W_o^j v0_j`` (d
    Fractions), and ``rho^2 ||P g||^2 = rho2 (o^T K o) / den`` for ``g = (W_v^j)^T (W_o^j)^T c``
    with ``o = No^T cN`` (cN = c's integer numerators; divide by c's denominator squared);
    ``rho2`` is None when the prompt set is unbounded."""
    pre = L.norm == "pre"
    if pre:
        gamma, beta, eps = L.ln1
        if eps <= 0:
            raise Reject("model: LayerNorm eps must be > 0")
        rho2 = Fraction(d) if R is None else R * R * d / (R * R + d * eps)
        gN, gD = _ints(gamma)
        gN = np.array(gN, dtype=object)
    else:
        rho2 = None if R is None else R * R
    out = []
    for h in L.heads:
        s = h.W_v.shape[0]
        bv = list(h.b_v) if h.b_v is not None else [ZERO] * s
        if pre:
            bv = [a + b for a, b in zip(bv, h.W_v.mv(beta))]
        c = h.W_o.mv(bv)
        Nv, Dv = h.W_v.N, h.W_v.D
        No, Do = h.W_o.N, h.W_o.D
        if pre:
            # d ||P0(gamma * g)||^2 (gD Dv Do)^2 = o^T K o with K = d Nv diag(gN^2) Nv^T - (Nv gN)(Nv gN)^T
            vg = Nv.dot(gN)
            K = (Nv * (gN * gN)[None, :]).dot(Nv.T) * d - np.outer(vg, vg)
            den = d * (gD * Dv * Do) ** 2
        else:
            K = Nv.dot(Nv.T)
            den = (Dv * Do) ** 2
        out.append((c, K, No, den, rho2))
    return out


def support_terms(L, d: int, R) -> list:
    """Per head j and coordinate k: (c_jk, r2_jk) with the support bounds c_jk +- sqrt(r2_jk)
    (r2 = rho^2 ||P g_jk||^2, exact), or (c_jk, None) when the set is unbounded along e_k."""
    out = []
    for c, K, No, den, rho2 in _forms(L, d, R):
        q = (No.dot(K) * No).sum(axis=1)
        row = []
        for k in range(d):
            qk = int(q[k])
            if qk < 0:
                raise Reject("internal: a negative squared norm")
            if rho2 is None:
                row.append((c[k], None if qk else ZERO))
            else:
                row.append((c[k], rho2 * Fraction(qk, den)))
        out.append(row)
    return out


def support_direction(L, d: int, R, cdir: list) -> list:
    """:func:`support_terms` along any rational direction ``cdir`` (d Fractions): per head j,
    (c.W_o^j v0_j, r2_j) with the support bounds of ``c.W_o^j w`` over the head's value set
    ``c.W_o^j v0_j +- sqrt(r2_j)``, ``r2_j = rho^2 ||P g_j||^2`` (exact), ``g_j = (W_v^j)^T
    (W_o^j)^T c``; r2_j is None when the set is unbounded along c."""
    cN, cD = _ints(cdir)
    cN = np.array(cN, dtype=object)
    out = []
    for cvec, K, No, den, rho2 in _forms(L, d, R):
        o = cN.dot(No)
        q = int(o.dot(K).dot(o))
        if q < 0:
            raise Reject("internal: a negative squared norm")
        center = sum((a * b for a, b in zip(cdir, cvec)), ZERO)
        if rho2 is None:
            out.append((center, None if q else ZERO))
        else:
            out.append((center, rho2 * Fraction(q, den * cD * cD)))
    return out


def no_prompt_heads(L, d: int, seq: list, causal: bool, a: int) -> list:
    """Enclosures (per head, d :class:`Iv`) of ``W_o^j a_j`` at position ``a`` of ``seq`` without a
    prompt (value bias included: the weights sum to 1 exactly)."""
    if L.kind != "softmax":
        raise Reject("model: reach bounds are implemented for softmax layers only")
    pre = L.norm == "pre"
    beta = L.ln1[1] if pre else None
    normed = _normed(L, seq)
    kaps, gs = [k for k, _ in normed], [g for _, g in normed]
    keys = range(a + 1) if causal else range(len(seq))
    res = []
    for h in L.heads:
        s_head = h.W_q.shape[0]
        scale = _scale(L, s_head)
        Q1, K1, V1 = h.W_q.mv_many(gs), h.W_k.mv_many(gs), h.W_v.mv_many(gs)
        zero = [ZERO] * s_head
        if pre:
            Q0 = _plus(h.W_q.mv(beta), h.b_q)
            K0 = _plus(h.W_k.mv(beta), h.b_k)
            V0 = _plus(h.W_v.mv(beta), h.b_v)
        else:
            Q0, K0, V0 = (b if b is not None else zero for b in (h.b_q, h.b_k, h.b_v))
        U = h.W_o.mv_many([V1[b] for b in keys])
        U0 = h.W_o.mv(V0)
        q1k0, q0k0 = _dot(Q1[a], K0), _dot(Q0, K0)
        scores = [scale * (kaps[a] * kaps[b] * _dot(Q1[a], K1[b]) + kaps[a] * q1k0 + kaps[b] * _dot(Q0, K1[b])
                           + q0k0) for b in keys]
        w = _weights(scores)
        coef = [wb * kaps[b] for wb, b in zip(w, keys)]
        mids = [_out((cf.lo + cf.hi) / 2, False) for cf in coef]
        rads = [max(cf.hi - m, m - cf.lo) for cf, m in zip(coef, mids)]
        vec = []
        for k in range(d):
            cen, rad = U0[k], ZERO
            for m_b, r_b, u in zip(mids, rads, U):
                cen += m_b * u[k]
                rad += r_b * abs(u[k])
            vec.append(Iv(_out(cen - rad, False), _out(cen + rad, True)))
        res.append(vec)
    return res


def _plus(a: list, b) -> list:
    return a if b is None else [u + v for u, v in zip(a, b)]


def member_bounds(L, d: int, x: list, heads_a: list, terms: list) -> tuple:
    """(lo, hi) of u: lists of d Fractions, None for an infinite bound."""
    b_o = L.b_o or [ZERO] * d
    lo, hi = [], []
    for k in range(d):
        base = x[k] + b_o[k]
        up, down = base, base
        for A, row in zip(heads_a, terms):
            c, r2 = row[k]
            if r2 is None:
                up = down = None
                break
            rad = sqrt_up(r2) if r2 else ZERO
            up = up + max(A[k].hi, c + rad)
            down = down + min(A[k].lo, c - rad)
        lo.append(down)
        hi.append(up)
    return lo, hi


def site_bounds(L, d: int, lo: list, hi: list) -> tuple:
    """Post-LN: (lo, hi) enclosing h = LN1(u) for every u in the box (finite everywhere)."""
    gamma, beta, eps = L.ln1
    if eps <= 0:
        raise Reject("model: LayerNorm eps must be > 0")
    root = sqrt_up(Fraction(d - 1))
    h_lo = [beta[k] - abs(gamma[k]) * root for k in range(d)]
    h_hi = [beta[k] + abs(gamma[k]) * root for k in range(d)]
    if all(v is not None for v in lo + hi):
        enc = _layer_norm([Iv(a, b) for a, b in zip(lo, hi)], gamma, beta, eps)
        h_lo = [max(a, e.lo) for a, e in zip(h_lo, enc)]
        h_hi = [min(b, e.hi) for b, e in zip(h_hi, enc)]
    return h_lo, h_hi


def _bound(v, where: str):
    """A reported bound: a Fraction, or "inf" / "-inf" (returned as the string)."""
    if v in ("inf", "-inf"):
        return v
    return rat(v, where)


def _compare(rep_lo: list, rep_hi: list, own_lo: list, own_hi: list, where: str) -> int:
    """Accept only reported lo <= own lo and reported hi >= own hi; returns the finite count."""
    finite = 0
    for k, (rl, rh, ol, oh) in enumerate(zip(rep_lo, rep_hi, own_lo, own_hi)):
        for side, rv, ov in (("lo", rl, ol), ("hi", rh, oh)):
            inf_word = "-inf" if side == "lo" else "inf"
            if ov is None:
                if rv != inf_word:
                    raise Reject(f"{where}.{side}[{k}]: the checker's own bound is infinite (the prompt set is "
                                 f"unbounded along this coordinate); expected {inf_word!r}")
                continue
            if isinstance(rv, str):
                if rv != inf_word:
                    raise Reject(f"{where}.{side}[{k}]: {rv!r} is not a {side} bound")
                raise Reject(f"{where}.{side}[{k}]: {rv!r}, but the checker's own bound is finite "
                             f"({float(ov):.6g}): an infinite bound is accepted only where the set is unbounded")
            if (side == "lo" and rv > ov) or (side == "hi" and rv < ov):
                raise Reject(f"{where}.{side}[{k}]: the reported {float(rv):.9g} is tighter than the checker's "
                             f"own certified bound {float(ov):.9g}")
        if ol is not None and oh is not None:
            finite += 1
    return finite


def check(ctx: Context) -> Outcome:
    """Recompute every bound and compare it with the reported ranges."""
    model, ds = ctx.inputs["model"], ctx.inputs["dataset"]
    L = single_attention_layer(model, ds, "reach bounds", softmax=True)
    d = model.d
    R = ctx.question.get("prompt_norm")
    body = fields(ctx.body, B, {"ranges"})
    ranges = body["ranges"]
    members = [(i, t) for i, Y in enumerate(ds.outputs) for t, y in enumerate(Y) if y is not None]
    if not members:
        raise Reject("dataset: no constrained output (every target is null): there is nothing to bound")
    if not isinstance(ranges, list) or len(ranges) != len(members):
        raise Reject(f"{B}.ranges: expected one entry per constrained output ({len(members)}), in dataset order")
    post = L.norm == "post"
    keys = {"example", "position", "lo", "hi"} | ({"h_lo", "h_hi"} if post else set())
    terms = support_terms(L, d, R)
    finite_u = finite_h = 0
    for n, ((i, t), ent) in enumerate(zip(members, ranges)):
        where = f"{B}.ranges[{n}]"
        fields(ent, where, keys)
        e = integer(ent["example"], f"{where}.example", 0, len(ds.inputs) - 1)
        p = integer(ent["position"], f"{where}.position", 0, len(ds.inputs[e]) - 1)
        if (e, p) != (i, t):
            raise Reject(f"{where}: names example {e} position {p}; the constrained outputs in dataset order "
                         f"need example {i} position {t} here")
        rep = {}
        for name in keys - {"example", "position"}:
            if not isinstance(ent[name], list) or len(ent[name]) != d:
                raise Reject(f"{where}.{name}: expected a list of {d} bounds")
            rep[name] = [_bound(v, f"{where}.{name}[{k}]") for k, v in enumerate(ent[name])]
        seq = ds.inputs[i]
        heads_a = no_prompt_heads(L, d, seq, model.causal, t)
        lo, hi = member_bounds(L, d, seq[t], heads_a, terms)
        finite_u += _compare(rep["lo"], rep["hi"], lo, hi, where)
        if post:
            h_lo, h_hi = site_bounds(L, d, lo, hi)
            finite_h += _compare(rep["h_lo"], rep["h_hi"], h_lo, h_hi, where + ".h")
    total = d * len(members)
    pset = "any prompt rows" if R is None else f"prompt rows of 2-norm at most {float(R):.6g}"
    tail = f"; post-LN site h = LN1(u): {finite_h} of {total} finite" if post else ""
    return Outcome(f"reach bounds ({pset}) recomputed with exact rationals and rigorous enclosures for "
                   f"{len(members)} constrained output(s): every reported range contains the certified one; "
                   f"u finite in {finite_u} of {total} coordinates{tail}")
