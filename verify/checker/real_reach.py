"""Separating-direction certificates on one real layer (kind ``limitation-real-reach``, question
``memorization``, status ``proved``).

The theorem is in proofs/reach.md ("A target out of reach").  One ``ptverify-model/2`` softmax
layer and a dataset with targets at the attention block (``"at": "attention"``).  For a constrained
output (example i, position t) and a rational direction c, every admissible prompt (any length;
rows of 2-norm at most ``question.prompt_norm`` when given) gives, with the support functions of
:mod:`.reach` generalized from e_k to c,

    c.u <= c.(x + b_o) + sum_j max(sup c.W_o^j a_j, c.W_o^j v0_j + sqrt(r2_j))   (and the inf side)

where ``u = x + b_o + sum_j W_o^j head_j`` is the attention block's pre-norm sum.

* pre-LN and no LayerNorm: the site is u itself; memorizing needs ``|u - t_i|_inf <= tol``, hence
  ``c.u >= c.t_i - tol ||c||_1`` (side ``"hi"``: shown impossible when ``c.t_i - tol ||c||_1 > sup
  c.u``) or ``c.u <= c.t_i + tol ||c||_1`` (side ``"lo"``: impossible when ``c.t_i + tol ||c||_1 <
  inf c.u``).
* post-LN: the site is ``h = LN1(u)``, which lies in the box of :func:`.reach.site_bounds`
  (``beta_k +- |gamma_k| sqrt(d - 1)`` always, and the interval LayerNorm of u's box when that is
  finite); the same two conditions are checked against that box's support function
  ``sum_k max(c_k h_lo_k, c_k h_hi_k)``.

Body: ``{"example": i, "position": t, "c": [d exact numbers, not all 0], "side": "hi" | "lo"}``.
Everything is recomputed with exact rationals and rigorous enclosures (exp, square roots); the
separation must be strict.  Nothing is reported.
"""
from __future__ import annotations

from fractions import Fraction

from .envelope import Context, Outcome
from .numbers import Reject, fields, integer, rat, sqrt_up
from .reach import member_bounds, no_prompt_heads, site_bounds, support_direction, support_terms
from .real import single_attention_layer

__all__ = ["KIND", "check", "direction_bounds"]

KIND = "limitation-real-reach"
B = "certificate.body"
ZERO = Fraction(0)
#: the largest numerator or denominator (bits) accepted in ``c``: small rationals suffice
MAX_BITS = 256


def _dot(a: list, b: list) -> Fraction:
    return sum((x * y for x, y in zip(a, b)), ZERO)


def direction_bounds(L, d: int, x: list, heads_a: list, terms: list, c: list) -> tuple:
    """(inf, sup) of c.u over every admissible prompt (None for an infinite bound): ``heads_a``
    from :func:`.reach.no_prompt_heads`, ``terms`` from :func:`.reach.support_direction`."""
    b_o = L.b_o or [ZERO] * d
    base = _dot(c, [a + b for a, b in zip(x, b_o)])
    down = up = base
    for A, (center, r2) in zip(heads_a, terms):
        if r2 is None:
            return None, None
        rad = sqrt_up(r2) if r2 else ZERO
        a_hi = sum((max(ck * iv.lo, ck * iv.hi) for ck, iv in zip(c, A) if ck), ZERO)
        a_lo = sum((min(ck * iv.lo, ck * iv.hi) for ck, iv in zip(c, A) if ck), ZERO)
        up += max(a_hi, center + rad)
        down += min(a_lo, center - rad)
    return down, up


def _direction(raw, d: int) -> list:
    if not isinstance(raw, list) or len(raw) != d:
        raise Reject(f"{B}.c: expected a list of {d} exact numbers")
    c = []
    for k, v in enumerate(raw):
        q = rat(v, f"{B}.c[{k}]")
        if q.numerator.bit_length() > MAX_BITS or q.denominator.bit_length() > MAX_BITS:
            raise Reject(f"{B}.c[{k}]: numerator or denominator beyond {MAX_BITS} bits")
        c.append(q)
    if not any(c):
        raise Reject(f"{B}.c: the zero direction separates nothing")
    return c


def check(ctx: Context) -> Outcome:
    """Re-derive the bound on c.(site) and check the strict separation from the target."""
    q, model, ds = ctx.question, ctx.inputs["model"], ctx.inputs["dataset"]
    L = single_attention_layer(model, ds, "separating-direction certificates", softmax=True)
    d = model.d
    body = fields(ctx.body, B, {"example", "position", "c", "side"})
    i = integer(body["example"], f"{B}.example", 0, len(ds.inputs) - 1)
    t = integer(body["position"], f"{B}.position", 0, len(ds.inputs[i]) - 1)
    target = ds.outputs[i][t]
    if target is None:
        raise Reject(f"{B}: example {i} position {t} is unconstrained (null target)")
    c = _direction(body["c"], d)
    side = body["side"]
    if side not in ("hi", "lo"):
        raise Reject(f"{B}.side: expected \"hi\" or \"lo\", found {str(side)[:40]!r}")
    tol, R = q["tolerance"], q.get("prompt_norm")
    seq = ds.inputs[i]
    heads_a = no_prompt_heads(L, d, seq, model.causal, t)
    if L.norm == "post":
        lo, hi = member_bounds(L, d, seq[t], heads_a, support_terms(L, d, R))
        h_lo, h_hi = site_bounds(L, d, lo, hi)
        inf = sum((min(ck * a, ck * b) for ck, a, b in zip(c, h_lo, h_hi)), ZERO)
        sup = sum((max(ck * a, ck * b) for ck, a, b in zip(c, h_lo, h_hi)), ZERO)
        site = "h = LN1(u)"
    else:
        inf, sup = direction_bounds(L, d, seq[t], heads_a, support_direction(L, d, R, c), c)
        if sup is None:
            raise Reject(f"{B}.c: the prompt set is unbounded along c (no LayerNorm, no question.prompt_norm, "
                         "and some head's values move c.u): there is no finite bound")
        site = "u"
    ct = _dot(c, target)
    slack = tol * sum((abs(v) for v in c), ZERO)
    if side == "hi":
        need, bound, ok = ct - slack, sup, ct - slack > sup
        rel = ">"
    else:
        need, bound, ok = ct + slack, inf, ct + slack < inf
        rel = "<"
    if not ok:
        which = "sup" if side == "hi" else "inf"
        raise Reject(f"{B}: no separation: c.t {'-' if side == 'hi' else '+'} tol ||c||_1 = {float(need):.9g} is not "
                     f"{rel} the certified {which} of c.{site} = {float(bound):.9g}")
    pset = "any prompt rows" if R is None else f"prompt rows of 2-norm at most {float(R):.6g}"
    return Outcome(f"separating direction at example {i} position {t} (side {side}, {pset}): c.t "
                   f"{'-' if side == 'hi' else '+'} tol ||c||_1 = {float(need):.9g} {rel} the certified "
                   f"{'sup' if side == 'hi' else 'inf'} of c.{site} = {float(bound):.9g}: no prompt of any length "
                   "reaches this target")
