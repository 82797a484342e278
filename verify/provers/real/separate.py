"""A target out of the certified reach (proofs/reach.md, "A target out of reach"): a rational
direction c along which every admissible prompt keeps the attention site strictly away from one
constrained target, beyond the tolerance (kind ``limitation-real-reach``).

The search is float64 (the bounds of :mod:`verify.provers.reach`): first c = +-e_k for every
coordinate, then (pre-LN, no LayerNorm) c = t_i minus the center of the certified box, rounded to
small rationals.  A candidate stands only once the trusted checker
(``verify/checker/real_reach.py``) has re-derived the bound exactly and found the separation.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Iterator, Optional

import numpy as np

__all__ = ["CERT_KIND", "candidates", "direction_sup"]

CERT_KIND = "limitation-real-reach"
#: the float separation must exceed this relative margin (the checker's exact bound differs by ~1e-13)
MARGIN = 1e-7
#: denominators of the rounded general direction
DENOM = 1000


def _fmt(q: Fraction) -> str:
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


def _projected(fl, heads) -> list:
    """Per head the (d, d) matrix M with ||P g|| = ||c @ M|| for g = G^T c."""
    out = []
    for G, _, _ in heads:
        if fl.norm == "pre":
            M = G * fl.ln1[0][None, :]
            M = M - M.mean(axis=1, keepdims=True)
        else:
            M = G
        out.append(M)
    return out


def direction_sup(fl, heads, rho: float, mats: list, npz: list, base: np.ndarray, c: np.ndarray) -> tuple:
    """Float (inf, sup, scale) of c.u over admissible prompts (infinite where unbounded)."""
    up = down = float(c @ base)
    scale = abs(up) + 1.0
    for (A, _, _, _), (_, cv, _), M in zip(npz, heads, mats):
        a = float(c @ A)
        cen = float(c @ cv)
        n = float(np.linalg.norm(c @ M))
        rad = (0.0 if n == 0 else math.inf) if math.isinf(rho) else rho * n
        up += max(a, cen + rad)
        down += min(a, cen - rad)
        scale += abs(a) + abs(cen) + (0.0 if math.isinf(rad) else rad)
    return down, up, scale


def _rounded(v: np.ndarray) -> Optional[list]:
    m = float(np.max(np.abs(v)))
    if not math.isfinite(m) or m == 0:
        return None
    out = [Fraction(float(x) / m).limit_denominator(DENOM) for x in v]
    return out if any(out) else None


def candidates(model, dataset, tol: Fraction, prompt_norm=None) -> Iterator[dict]:
    """Certificate bodies whose float separation exceeds the margin, best kinds first: every
    coordinate direction of every constrained output, then the rounded general directions."""
    from verify.provers.reach import _heads, _members, float_bounds, h_bounds
    from verify.provers.real.forward import FloatLayer
    d = model.d
    R = None if prompt_norm is None else float(Fraction(prompt_norm))
    fl = FloatLayer(model.layers[0], d)
    heads, rho = _heads(fl, d, R)
    ft = float(tol)
    post = fl.norm == "post"
    general = []
    for i, a in _members(dataset):
        X = np.asarray(dataset.examples[i].input, dtype=np.float64)
        T = np.asarray(dataset.examples[i].output[a], dtype=np.float64)
        fb = float_bounds(fl, d, X, a, model.causal, heads, rho)
        lo, hi = fb["lo"] - fb["margin"], fb["hi"] + fb["margin"]
        if post:
            lo, hi = h_bounds(fl, d, lo, hi)
        pad = MARGIN * (1.0 + np.abs(T) + np.where(np.isfinite(hi), np.abs(hi), 0.0)
                        + np.where(np.isfinite(lo), np.abs(lo), 0.0))
        for k in range(d):
            e = ["0"] * d
            if T[k] - ft > hi[k] + pad[k]:
                e[k] = "1"
                yield {"example": i, "position": a, "c": e, "side": "hi"}
            elif T[k] + ft < lo[k] - pad[k]:
                e[k] = "1"
                yield {"example": i, "position": a, "c": e, "side": "lo"}
        if not post and np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)):
            general.append((i, a, X, T, fb, (lo + hi) / 2))
    if not general:
        return
    mats = _projected(fl, heads)
    for i, a, X, T, fb, center in general:
        c = _rounded(T - center)
        if c is None:
            continue
        cf = np.array([float(v) for v in c])
        down, up, scale = direction_sup(fl, heads, rho, mats, fb["no_prompt"], X[a] + fl.b_o, cf)
        ct, slack = float(cf @ T), ft * float(np.abs(cf).sum())
        pad = MARGIN * (scale + abs(ct) + slack)
        if ct - slack > up + pad:
            yield {"example": i, "position": a, "c": [_fmt(v) for v in c], "side": "hi"}
