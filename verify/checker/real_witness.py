"""Replay of a prompt witness on a real layer (kind ``real-prompt-witness``, status ``memorized``).

The model is one ``ptverify-model/2`` softmax layer (attention biases, score scale, LayerNorm
"pre", "post" or none) and the dataset's targets are taken at the attention block
(``"at": "attention"``): post-LN ``LN1(x + Att)``, otherwise the residual ``x + Att`` (with a
pre-LN the attention reads LN1 of every row, the prompt rows included).  The prompt's rows are
prepended to every example; causal masks as the model says.

Body: ``{"prompt": [[d exact numbers], ...]}``; its length must equal ``question.prompt_length``
unless that is ``"any"``, and with ``question.prompt_norm = R`` every row's 2-norm is at most R.

The checker recomputes every constrained output with exact rationals and rigorous intervals only:
projections of the rows are exact (a pre-LN row reads ``kappa * g + beta`` with ``g = gamma * (s -
mean s)`` exact and ``kappa = 1/sqrt(var s + eps)`` an interval from :func:`numbers.sqrt_down` /
:func:`numbers.sqrt_up`), scores are intervals, softmax weights come from rigorous ``exp``
enclosures divided as intervals (the weights' exact sum 1 multiplies the value bias exactly),
the post-LN LayerNorm encloses its mean, variance and inverse square root.  The witness holds only
if every constrained entry's WHOLE enclosure lies within the tolerance of the target.  With a
softmax the enclosures have a positive width (exponentials and square roots are irrational), so
tolerance 0 is in practice never accepted; tolerances of 1e-12 and above are (the enclosures are
about 2^-200 wide).  Hardmax layers are refused.
"""
from __future__ import annotations

from fractions import Fraction

from .envelope import Context, Outcome
from .numbers import Reject, fields, fmt
from .real import INV_SQRT_HEAD_SIZE, Iv, _dot, _inv_sqrt, _normed, _out, exp_iv, single_attention_layer
from .witness import _prompt

__all__ = ["KIND", "check", "attention_site"]

KIND = "real-prompt-witness"
ZERO = Fraction(0)
ONE = Fraction(1)


def _scale(L, s_head: int) -> Iv:
    if L.scale == INV_SQRT_HEAD_SIZE:
        import math
        r = math.isqrt(s_head)
        return Iv(Fraction(1, r)) if r * r == s_head else _inv_sqrt(Fraction(s_head))
    if L.scale <= 0:
        raise Reject("model: the score scale must be > 0")
    return Iv(L.scale)


def _weights(scores: list) -> list:
    """Rigorous softmax weights from score intervals."""
    g = Fraction(1, 1 << 32)
    M = (max(s.hi for s in scores) / g).__floor__() * g
    E = [exp_iv(s - M) for s in scores]
    lo_sum, hi_sum = sum((e.lo for e in E), ZERO), sum((e.hi for e in E), ZERO)
    out = []
    for e in E:
        w_lo = _out(e.lo / (e.lo + hi_sum - e.hi), False) if e.lo > 0 else ZERO
        w_hi = min(ONE, _out(e.hi / (e.hi + lo_sum - e.lo), True))
        out.append(Iv(w_lo, w_hi))
    return out


def _layer_norm(u: list, gamma: list, beta: list, eps: Fraction) -> list:
    """Enclosures of LN(u) for an interval vector u."""
    d = len(u)
    mean = sum(u, Iv(ZERO)) * Fraction(1, d)
    c = [v - mean for v in u]
    sq = []
    for v in c:
        if v.lo >= 0 or v.hi <= 0:
            sq.append(v * v)
        else:
            sq.append(Iv(ZERO, _out(max(v.lo * v.lo, v.hi * v.hi), True)))
    var = sum(sq, Iv(ZERO)) * Fraction(1, d)
    lo, hi = max(var.lo, ZERO) + eps, var.hi + eps
    inv = Iv(_inv_sqrt(hi).lo, _inv_sqrt(lo).hi)
    return [(cv * inv) * gk + bk for cv, gk, bk in zip(c, gamma, beta)]


def attention_site(L, d: int, seq: list, mp: int, causal: bool, wanted: list) -> dict:
    """Enclosures (lists of :class:`Iv`) of the attention-site outputs at the input positions
    ``wanted`` (indices after the prompt's ``mp`` rows) of the rows ``seq`` (prompt first)."""
    if L.kind != "softmax":
        raise Reject("model: real-layer witness replay is implemented for softmax layers only")
    if L.norm not in (None, "pre", "post"):
        raise Reject(f"model: unknown LayerNorm placement {L.norm!r}")
    if L.norm is not None and L.ln1[2] <= 0:
        raise Reject("model: LayerNorm eps must be > 0")
    pre = L.norm == "pre"
    beta = L.ln1[1] if pre else None
    normed = _normed(L, seq)
    kaps, gs = [k for k, _ in normed], [g for _, g in normed]
    n = len(seq)
    b_o = L.b_o or [ZERO] * d
    acc = {a: [Iv(seq[mp + a][k] + b_o[k]) for k in range(d)] for a in wanted}
    for h in L.heads:
        s_head = h.W_q.shape[0]
        scale = _scale(L, s_head)
        Q1, K1, V1 = h.W_q.mv_many(gs), h.W_k.mv_many(gs), h.W_v.mv_many(gs)
        if pre:
            Q0 = _plus(h.W_q.mv(beta), h.b_q)
            K0 = _plus(h.W_k.mv(beta), h.b_k)
            V0 = _plus(h.W_v.mv(beta), h.b_v)
        else:
            Q0, K0, V0 = (b or [ZERO] * s_head for b in (h.b_q, h.b_k, h.b_v))
        U = h.W_o.mv_many(V1)                      # W_o V1_b, exact
        U0 = h.W_o.mv(V0)                          # W_o V0: weights sum to 1 exactly
        q0k0 = _dot(Q0, K0)
        k_terms = [_dot(Q0, k) for k in K1]
        for a in wanted:
            qa = mp + a
            keys = range(qa + 1) if causal else range(n)
            q1k0 = _dot(Q1[qa], K0)
            scores = [scale * (kaps[qa] * kaps[b] * _dot(Q1[qa], K1[b]) + kaps[qa] * q1k0 + kaps[b] * k_terms[b]
                               + q0k0) for b in keys]
            w = _weights(scores)
            coef = [wb * kaps[b] for wb, b in zip(w, keys)]
            # midpoint-radius: centre sum mid_b U_b, radius sum rad_b |U_b|
            mids = [_out((c.lo + c.hi) / 2, False) for c in coef]
            rads = [c.hi - m if c.hi - m >= m - c.lo else m - c.lo for c, m in zip(coef, mids)]
            row = acc[a]
            for k in range(d):
                cen = U0[k]
                rad = ZERO
                for m_b, r_b, b in zip(mids, rads, keys):
                    u = U[b][k]
                    cen += m_b * u
                    rad += r_b * abs(u)
                lo, hi = _out(cen - rad, False), _out(cen + rad, True)
                row[k] = row[k] + Iv(lo, hi)
    if L.norm == "post":
        gamma, lbeta, eps = L.ln1
        return {a: _layer_norm(acc[a], gamma, lbeta, eps) for a in wanted}
    return acc


def _plus(a: list, b) -> list:
    return a if b is None else [u + v for u, v in zip(a, b)]


def check(ctx: Context) -> Outcome:
    """Replay the witness at the attention site; accepted only if every enclosure is within the tolerance."""
    model, ds = ctx.inputs["model"], ctx.inputs["dataset"]
    L = single_attention_layer(model, ds, "real-layer witnesses")
    body = fields(ctx.body, "certificate.body", {"prompt"})
    P = _prompt(body["prompt"], model.d, ctx.question)
    tol = ctx.question["tolerance"]
    worst, count = ZERO, 0
    for i, (X, Y) in enumerate(zip(ds.inputs, ds.outputs)):
        wanted = [t for t, y in enumerate(Y) if y is not None]
        if not wanted:
            continue
        out = attention_site(L, model.d, P + X, len(P), model.causal, wanted)
        for t in wanted:
            for e, (iv, ye) in enumerate(zip(out[t], Y[t])):
                err = max(iv.hi - ye, ye - iv.lo)
                count += 1
                if err > tol:
                    raise Reject(f"replay: example {i} position {t} entry {e}: error up to {float(err):.3g} "
                                 f"exceeds question.tolerance {fmt(tol)}")
                worst = max(worst, err)
    return Outcome(f"witness prompt of length {len(P)} replays at the attention block with rigorous enclosures: "
                   f"every one of {count} constrained entries is within {fmt(tol)} "
                   f"(largest error bound {float(worst):.3g})")
