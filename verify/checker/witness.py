"""Replay of a prompt witness (kind ``prompt-witness``): the model, run on every example with the
prompt prepended, must produce every constrained output within the question's tolerance.

Body: ``{"prompt": [[d rationals], ...]}`` (m_p >= 1 tokens).  The prompt's length must equal
``question.prompt_length`` when that is an integer, and every token's squared 2-norm must be at
most R^2 when ``question.prompt_norm = R`` is set.

The forward pass is the checker's own, for any number of layers (causal mask when the model says
so).  Every value is an enclosure ``centre +- radius`` of Fractions:

* while every attention weight is rational (hardmax with a determined maximum, or softmax whose
  scores at a query are all exactly equal) the radii stay zero and the pass is exact;
* otherwise exponentials are enclosed rigorously (:func:`numbers.exp_bounds`), softmax weights by
  interval division, products and sums by midpoint-radius arithmetic, and every non-exact value is
  rounded outward to :data:`BITS` significant bits.

The witness holds only if, for every constrained entry, the WHOLE enclosure lies within the
tolerance of the target: ``|centre - y| + radius <= tolerance``.  With tolerance 0 that needs an
exact replay with error exactly 0.  Floats never enter.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional

import numpy as np

from .envelope import Context, Outcome
from .inputs import CLayer, CModel, exact_mlp, require_plain
from .numbers import EXP_ARG_LIMIT, Mat, Reject, exp_bounds, fields, fmt, matrix

__all__ = ["check", "forward", "BITS"]

#: significant bits kept in the centre and radius of a non-exact value
BITS = 160
#: absolute grid (bits) to which exponential arguments are rounded outward
ARG_BITS = 128
ZERO = Fraction(0)

# An enclosure of a vector: (centres, radii); radii None when the vector is exact.
Vec = tuple


# --------------------------------------------------------------------------- scalar enclosures

def _tidy(c: Fraction, r: Fraction) -> tuple[Fraction, Fraction]:
    """Round c +- r outward to BITS significant bits (exact values are kept as they are)."""
    if r == 0:
        return c, r
    m = max(abs(c), r)
    e = m.numerator.bit_length() - m.denominator.bit_length()
    grid = Fraction(2) ** (e - BITS)
    c2 = math.floor(c / grid) * grid
    r2 = math.ceil((r + (c - c2)) / grid) * grid
    return Fraction(c2), Fraction(r2)


def _mul(a: tuple, b: tuple) -> tuple[Fraction, Fraction]:
    (ca, ra), (cb, rb) = a, b
    return ca * cb, abs(ca) * rb + abs(cb) * ra + ra * rb


def _exp(lo: Fraction, hi: Fraction) -> tuple[Fraction, Fraction]:
    """[l, h] containing exp(s) for every s in [lo, hi]."""
    g = Fraction(1, 1 << ARG_BITS)
    lo_r, hi_r = math.floor(lo / g) * g, math.ceil(hi / g) * g
    if hi_r > EXP_ARG_LIMIT:
        raise Reject(f"replay: an attention score difference {float(hi_r):.3g} is beyond the exponential's limit")
    upper = exp_bounds(max(hi_r, -EXP_ARG_LIMIT))[1]
    lower = ZERO if lo_r < -EXP_ARG_LIMIT else exp_bounds(lo_r)[0]
    return lower, upper


# --------------------------------------------------------------------------- vector enclosures

def _abs(W: Mat, cache: dict) -> Mat:
    key = ("abs", id(W))
    if key not in cache:
        cache[key] = (W, Mat(np.abs(W.N), W.D))
    return cache[key][1]


def _mv(W: Mat, v: Vec, cache: dict) -> Vec:
    """W v, exact centre, radius |W| r, rounded outward."""
    c, r = v
    out = W.mv(c)
    if r is None:
        return out, None
    rad = _abs(W, cache).mv(r)
    pairs = [_tidy(a, b) for a, b in zip(out, rad)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _add(u: Vec, v: Vec) -> Vec:
    c = [a + b for a, b in zip(u[0], v[0])]
    if u[1] is None and v[1] is None:
        return c, None
    ru = u[1] or [ZERO] * len(c)
    rv = v[1] or [ZERO] * len(c)
    return c, [a + b for a, b in zip(ru, rv)]


def _dot(u: Vec, v: Vec) -> tuple[Fraction, Fraction]:
    if u[1] is None and v[1] is None:
        return sum((a * b for a, b in zip(u[0], v[0])), ZERO), ZERO
    ru = u[1] or [ZERO] * len(u[0])
    rv = v[1] or [ZERO] * len(v[0])
    c = r = ZERO
    for pa in zip(zip(u[0], ru), zip(v[0], rv)):
        pc, pr = _mul(*pa)
        c, r = c + pc, r + pr
    return _tidy(c, r)


def _scale(w: tuple, v: Vec) -> Vec:
    """w v for a scalar enclosure w."""
    if w[1] == 0 and v[1] is None:
        return [w[0] * a for a in v[0]], None
    rv = v[1] or [ZERO] * len(v[0])
    pairs = [_tidy(*_mul(w, (a, b))) for a, b in zip(v[0], rv)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _mlp(layer: CLayer, z: Vec, cache: dict) -> Vec:
    if z[1] is None:
        return exact_mlp(layer, z[0]), None
    pc, pr = _mv(layer.W_1, z, cache)
    lo = [max(c - r + b, ZERO) for c, r, b in zip(pc, pr, layer.b_1)]
    hi = [max(c + r + b, ZERO) for c, r, b in zip(pc, pr, layer.b_1)]
    hid = ([(a + b) / 2 for a, b in zip(lo, hi)], [(b - a) / 2 for a, b in zip(lo, hi)])
    post = _mv(layer.W_2, hid, cache)
    return _add(_add(z, post), (list(layer.b_2), None))


# --------------------------------------------------------------------------- attention

def _weights(kind: str, scores: list) -> list[tuple[Fraction, Fraction]]:
    """Enclosures of the attention weights from enclosures of the scores at one query."""
    n = len(scores)
    if all(r == 0 for _, r in scores) and len({c for c, _ in scores}) == 1:
        return [(Fraction(1, n), ZERO)] * n
    if kind == "hardmax":
        best = max(c - r for c, r in scores)
        top = [i for i, (c, r) in enumerate(scores) if c + r >= best]
        if all(r == 0 for _, r in scores):
            return [(Fraction(1, len(top)) if i in top else ZERO, ZERO) for i in range(n)]
        if len(top) != 1:
            raise Reject("replay: a hardmax maximum is not determined by the score enclosures")
        return [(Fraction(int(i == top[0])), ZERO) for i in range(n)]
    m = max(c for c, _ in scores)
    E = [_exp(c - r - m, c + r - m) for c, r in scores]
    s_lo, s_hi = sum(e[0] for e in E), sum(e[1] for e in E)
    out = []
    for lo, hi in E:
        w_lo = lo / (lo + s_hi - hi) if lo > 0 else ZERO
        w_hi = hi / (hi + s_lo - lo)
        out.append(_tidy((w_lo + w_hi) / 2, (w_hi - w_lo) / 2))
    return out


def _ov(head: dict, cache: dict) -> Mat:
    """W_o W_v, exactly (Python integers over one denominator)."""
    key = ("ov", id(head["W_o"]), id(head["W_v"]))
    if key not in cache:
        Wo, Wv = head["W_o"], head["W_v"]
        cache[key] = (Wo, Wv, Mat(Wo.N.dot(Wv.N), Wo.D * Wv.D))
    return cache[key][2]


def _head(head: dict, kind: str, seq: list, causal: bool, cache: dict) -> list:
    """One head's output sum_b w_ab (W_o W_v) s_b at every position a.  The product W_o W_v is
    formed exactly first, so a head whose product vanishes adds an exact zero."""
    qs = [_mv(head["W_q"], s, cache) for s in seq]
    ks = [_mv(head["W_k"], s, cache) for s in seq]
    vs = [_mv(_ov(head, cache), s, cache) for s in seq]
    out = []
    for a in range(len(seq)):
        keys = range(a + 1) if causal else range(len(seq))
        w = _weights(kind, [_dot(qs[a], ks[b]) for b in keys])
        mix: Optional[Vec] = None
        for wb, b in zip(w, keys):
            if wb == (ZERO, ZERO):
                continue
            term = _scale(wb, vs[b])
            mix = term if mix is None else _add(mix, term)
        if mix is None:
            raise Reject("replay: attention weights vanish at a query")
        out.append(mix)
    return out


def forward(model: CModel, tokens: list) -> list:
    """Enclosures (centres, radii or None) of the model's outputs on the given tokens."""
    seq: list = [(list(t), None) for t in tokens]
    cache: dict = {}
    for layer in model.layers:
        att = [_head(h, layer.kind, seq, model.causal, cache) for h in layer.heads]
        new = []
        for a, s in enumerate(seq):
            z = s
            for per_head in att:
                z = _add(z, per_head[a])
            new.append(_mlp(layer, z, cache))
        seq = new
    return seq


# --------------------------------------------------------------------------- the check

def _prompt(raw, d: int, q: dict) -> list:
    P = matrix(raw, "certificate.body.prompt", cols=d)
    if not P:
        raise Reject("certificate.body.prompt: expected at least one token (m_p >= 1)")
    K = q["prompt_length"]
    if K != "any" and len(P) != K:
        raise Reject(f"certificate.body.prompt: expected {K} tokens (question.prompt_length), found {len(P)}")
    R = q.get("prompt_norm")
    if R is not None:
        for i, p in enumerate(P):
            if sum((v * v for v in p), ZERO) > R * R:
                raise Reject(f"certificate.body.prompt[{i}]: 2-norm above question.prompt_norm = {fmt(R)}")
    return P


def check(ctx: Context) -> Outcome:
    """Replay the witness; returns the largest error bound and whether the replay was exact."""
    model, ds = ctx.inputs["model"], ctx.inputs["dataset"]
    require_plain(model, ds, "prompt-witness")
    body = fields(ctx.body, "certificate.body", {"prompt"})
    P = _prompt(body["prompt"], model.d, ctx.question)
    tol = ctx.question["tolerance"]
    worst, exact, count = ZERO, True, 0
    for i, (X, Y) in enumerate(zip(ds.inputs, ds.outputs)):
        out = forward(model, P + X)[len(P):]
        for t, y in enumerate(Y):
            if y is None:
                continue
            c, r = out[t]
            exact = exact and (r is None or not any(r))
            for e, (ce, ye) in enumerate(zip(c, y)):
                err = abs(ce - ye) + (ZERO if r is None else r[e])
                count += 1
                if err > tol:
                    raise Reject(f"replay: example {i} position {t} entry {e}: error up to {float(err):.3g} "
                                 f"exceeds question.tolerance {fmt(tol)}")
                worst = max(worst, err)
    how = "exactly (rational arithmetic)" if exact else "with rigorous enclosures"
    return Outcome(f"witness prompt of length {len(P)} replays {how}: every one of {count} constrained entries "
                   f"is within {fmt(tol)} (largest error bound {float(worst):.3g})")
