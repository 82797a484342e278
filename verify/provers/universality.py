"""Theorem U, measured: d_p(g([P_f, .])_{:, m_p:}, f) <= epsilon with a rigorous upper bound.

The bound (``proofs/universality.md``):

* [0,1]^{d n} is split into the flat boxes ``B_c = prod_e [k_e/K, (k_e+1)/K - w]`` (the last step
  of a coordinate reaches 1) and the ramp region R, their complement.
* On each box the network is evaluated exactly: the token-wise layers (attention that is exactly
  zero) as affine functions of the input whose ReLUs are shown sign-stable on the box, so the
  tokens are constants there; the later layers exactly in rationals (rank-1 hardmax heads: the
  arg-max depends only on the sign of the query; for the hardmax network, windowed: O(log m_p)
  per cell by binary search over the sorted prompt rows, see :class:`_Window`).  The softmax
  version adds a rigorous perturbation radius ``eta`` (score margins,
  exp(-G) <= 2^-floor(10 G / 7), Lipschitz constants of MLPs).
* With X_0 the centre of B_c and c its output:
  ||f(X) - g(X)||_p <= ||f(X_0) - c||_p + Lip(f) ||X - X_0||_p + (dn)^{1/p} eta.
* On R, f and g both lie in [0,1] (the last MLP clips), so ||f - g||_p^p <= d n.

Everything is exact rational arithmetic (p-th roots rounded outward on a 2^-64 grid);
"verified" only when the upper bound on d_p^p is at most eps^p, "refuted" only when the lower
bound exceeds it (both decided exactly).  The result (``ptverify-result/2``) carries the network
and the prompt as inputs and a ``universality-dp-bound`` certificate that the trusted checker
(``verify/checker/universality.py``) re-derives with its own evaluator.  The measured error is a
Monte Carlo estimate in float64 (``forward_torch``) with a Hoeffding 95% bound, reported under
``info``, never used for the verdict.
"""
from __future__ import annotations

import bisect
import json
import math
import os
import time
from fractions import Fraction
from typing import Optional

import numpy as np

from constructions.model import InputError, model_to_json
from constructions.universality import (UniversalNetwork, build_network, build_prompt, build_target,
                                        cell_digits, default_temperature, delta_K, forward_float,
                                        quantized_function, ramp_width, TARGETS)
from verify.checker import canonical_sha256
from verify.provers.exact import fmt
from verify.result import Result, Status, certificate, embed

__all__ = ["CERT_KIND", "NETWORK_FORMAT", "PROMPT_FORMAT", "certify", "evaluate_cells", "run_universality",
           "parse_number", "rpow_up", "rpow_down", "sweep", "setup", "universality_question", "NotCertified",
           "check_output_range", "exp_neg_upper", "TARGETS"]

CERT_KIND = "universality-dp-bound"
NETWORK_FORMAT = "ptverify-universal-network/1"
PROMPT_FORMAT = "ptverify-universal-prompt/1"
ROOT_BITS = 64
EXP2_CAP = 1024
#: grid cells K^(dn): the hardmax network is evaluated cell by cell in O(log m_p) (:class:`_Window`);
#: the softmax version only by the full evaluation, O(m_p) per cell
MAX_CELLS = 1 << 16
MAX_CELLS_SOFTMAX = 20000
MAX_SUBBOXES = 20000
MAX_SUB = 16


def exp_neg_upper(G: Fraction) -> Fraction:
    """A rational >= exp(-G) for G > 0: e^-G <= 2^(-10 G / 7) because 10 ln 2 <= 7, and then
    2^-floor(10 G / 7), capped at 2^-1024 (capping only weakens the bound)."""
    return Fraction(1, 1 << min(math.floor(10 * Fraction(G) / 7), EXP2_CAP))


# =========================================================================== exact powers and roots

def _iroot(x: int, k: int) -> int:
    """floor(x^(1/k)) for an integer x >= 0."""
    if x < 2:
        return x
    r = 1 << ((x.bit_length() + k - 1) // k)
    while True:
        y = ((k - 1) * r + x // r ** (k - 1)) // k
        if y >= r:
            break
        r = y
    while r ** k > x:
        r -= 1
    while (r + 1) ** k <= x:
        r += 1
    return r


def _root(x: Fraction, k: int, up: bool) -> Fraction:
    if k == 1 or x == 0:
        return x
    S = 1 << ROOT_BITS
    t = x * S ** k
    r = _iroot(t.numerator // t.denominator, k)
    if up and Fraction(r, S) ** k < x:
        r += 1
    return Fraction(r, S)


def rpow_up(x: Fraction, p: Fraction) -> Fraction:
    """A rational >= x^p (x >= 0, p > 0 rational)."""
    x, p = Fraction(x), Fraction(p)
    return _root(x ** p.numerator, p.denominator, True)


def rpow_down(x: Fraction, p: Fraction) -> Fraction:
    """A rational <= x^p (x >= 0, p > 0 rational)."""
    x, p = Fraction(x), Fraction(p)
    return _root(x ** p.numerator, p.denominator, False)


# =========================================================================== exact cell evaluation

class NotCertified(Exception):
    """The exact evaluation could not certify a box (unstable ReLU, tie, zero query, ...)."""


def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


def _prep(layer) -> dict:
    """Sparse rational views of a layer's MLP and the rank-1 factors of its heads."""
    W1, b1, W2, b2 = layer.W_1, layer.b_1, layer.W_2, layer.b_2
    r, d = W1.shape
    units = []
    for k in range(r):
        row = [(j, Fraction(W1[k, j])) for j in range(d) if W1[k, j] != 0]
        outs = [(i, Fraction(W2[i, k])) for i in range(d) if W2[i, k] != 0]
        if outs:
            units.append((row, Fraction(b1[k]), outs))
    heads = []
    for h in layer.heads:
        Wov = np.dot(h.W_o, h.W_v)
        if not np.any(Wov != 0):
            continue
        B = np.dot(h.W_k.T, h.W_q)  # score(a <- b) = z_b^T B z_a
        nz = np.argwhere(B != 0)
        if len(nz) == 0:
            raise NotCertified("a head with zero scores (uniform attention) is not supported")
        i0, j0 = nz[0]
        v = [Fraction(x) for x in B[i0, :]]
        u = [Fraction(B[i, j0]) / Fraction(B[i0, j0]) for i in range(B.shape[0])]
        if any(Fraction(B[i, j]) != u[i] * v[j] for i in range(B.shape[0]) for j in range(B.shape[1])):
            raise NotCertified("a head whose score matrix W_k^T W_q has rank > 1")
        heads.append({"u": u, "v": v, "Wov": [[Fraction(x) for x in row] for row in Wov]})
    lip = 1 + max(sum(abs(co) * sum(abs(w) for _, w in row) for row, _, outs in units for i2, co in outs if i2 == i)
                  for i in range(d)) if units else Fraction(1)
    return {"units": units, "b2": [Fraction(x) for x in b2], "heads": heads, "lip": Fraction(lip), "d": d}


def _scaled(vals: list, D: int):
    """Integer numerators of rationals over the common denominator D."""
    return [int(Fraction(v) * D) for v in vals]


def _mlp_int(pr: dict, Zn: np.ndarray, D: int):
    """Exact residual MLP on integer numerators: values Zn / D.  Returns (Zn', D')."""
    d = pr["d"]
    acts = []
    Lc = 1
    for row, b, outs in pr["units"]:
        den = b.denominator
        for _, w in row:
            den = _lcm(den, w.denominator)
        pre = Zn[:, 0] * 0 + int(b * den) * D
        for j, w in row:
            pre = pre + int(w * den) * Zn[:, j]
        h = np.where(pre > 0, pre, 0)
        acts.append((h, den, outs))
        for _, co in outs:
            Lc = _lcm(Lc, den * co.denominator)
    for bb in pr["b2"]:
        Lc = _lcm(Lc, bb.denominator)
    out = Zn * Lc
    for i in range(d):
        out[:, i] = out[:, i] + int(pr["b2"][i] * D * Lc)
    for h, den, outs in acts:
        for i, co in outs:
            out[:, i] = out[:, i] + int(co * Lc / den) * h
    D2 = D * Lc
    g = D2
    for x in out.reshape(-1):
        g = math.gcd(g, int(x))
        if g == 1:
            break
    return (out // g if g > 1 else out), D2 // g


def _mlp_frac(pr: dict, z: list) -> list:
    out = list(z)
    for i in range(pr["d"]):
        out[i] += pr["b2"][i]
    for row, b, outs in pr["units"]:
        pre = b + sum(w * z[j] for j, w in row)
        if pre > 0:
            for i, co in outs:
                out[i] += co * pre
    return out


def _affine_mlp(pr: dict, z: list, mid: list, half: list) -> list:
    """The MLP on affine forms [const, c_0, ..., c_{nv-1}] over a box; raises NotCertified when a
    ReLU changes sign on the box."""
    nv = len(mid)
    out = [list(f) for f in z]
    for i in range(pr["d"]):
        out[i][0] += pr["b2"][i]
    for row, b, outs in pr["units"]:
        pre = [b] + [Fraction(0)] * nv
        for j, w in row:
            zj = z[j]
            for q in range(nv + 1):
                if zj[q]:
                    pre[q] += w * zj[q]
        cen = pre[0] + sum(pre[q + 1] * mid[q] for q in range(nv) if pre[q + 1])
        rad = sum(abs(pre[q + 1]) * half[q] for q in range(nv) if pre[q + 1])
        if cen - rad >= 0:
            for i, co in outs:
                for q in range(nv + 1):
                    if pre[q]:
                        out[i][q] += co * pre[q]
        elif cen + rad <= 0:
            continue
        else:
            raise NotCertified("a ReLU changes sign inside a flat box")
    return out


def _attend(pr: dict, Zn: np.ndarray, D: int, queries: list, e: Fraction, softmax: bool):
    """Exact hardmax attention of rank-1 heads for the given query rows, plus the softmax
    perturbation bound.  Returns (groups, error radius added): ``groups`` is a list of
    (query rows, d-vector of Fractions added to each of them), one per head and query sign."""
    m, d = Zn.shape
    groups = []
    err = Fraction(0)
    zmax = Fraction(max(abs(int(x)) for x in Zn.reshape(-1)), D)
    for hd in pr["heads"]:
        u, v, Wov = hd["u"], hd["v"], hd["Wov"]
        du = 1
        for x in u:
            du = _lcm(du, x.denominator)
        dv = 1
        for x in v:
            dv = _lcm(dv, x.denominator)
        ui, vi = [int(x * du) for x in u], [int(x * dv) for x in v]
        kap = sum(Zn[:, j] * ui[j] for j in range(d) if ui[j])
        kl = [int(x) for x in kap]
        kmax, kmin = max(kl), min(kl)
        amax = [b for b in range(m) if kl[b] == kmax]
        amin = [b for b in range(m) if kl[b] == kmin]

        def value(rows):
            vec = [Fraction(sum(int(Zn[b, j]) for b in rows), D * len(rows)) for j in range(d)]
            return [sum(Wov[i][j] * vec[j] for j in range(d) if Wov[i][j]) for i in range(d)]
        qarr = Zn[queries]
        lam = [int(x) for x in sum(qarr[:, j] * vi[j] for j in range(d) if vi[j])] if any(vi) else [0] * len(queries)
        for sgn in (1, -1, 0):
            rows = [a for a, lq in zip(queries, lam) if (lq > 0) - (lq < 0) == sgn]
            if rows:
                groups.append((rows, value(amax if sgn > 0 else amin if sgn < 0 else list(range(m)))))
        if softmax:
            wnorm = max(sum(abs(x) for x in row) for row in Wov)
            n1u, n1v = sum(abs(x) for x in u), sum(abs(x) for x in v)
            dk, dl = n1u * e, n1v * e
            rho = Fraction(0)
            for sgn in (1, -1):
                qs = [abs(Fraction(lq, D * dv)) for lq in lam if (lq > 0) - (lq < 0) == sgn]
                if not qs:
                    continue
                best = amax if sgn > 0 else amin
                if len(best) != 1:
                    raise NotCertified("a tie for the largest score: the softmax error cannot be bounded")
                others = [kl[b] for b in range(m) if b != best[0]]
                if not others:
                    continue
                gap_k = Fraction(abs(kl[best[0]] - (max(others) if sgn > 0 else min(others))), D * du)
                lmin = min(qs)
                if lmin - dl <= 0 or gap_k - 2 * dk <= 0:
                    raise NotCertified("softmax score margin too small for the perturbation bound")
                rho = max(rho, (m - 1) * exp_neg_upper((lmin - dl) * (gap_k - 2 * dk)))
            if any(x == 0 for x in lam):
                raise NotCertified("a query with zero score (uniform softmax) cannot be bounded")
            err += wnorm * e + rho * 2 * wnorm * (zmax + e)
    return groups, err


def _add_att(Zn: np.ndarray, D: int, groups: list):
    den = 1
    for _, vec in groups:
        for x in vec:
            den = _lcm(den, Fraction(x).denominator)
    L = den // math.gcd(den, D)
    out = Zn * L
    D2 = D * L
    for rows, vec in groups:
        idx = np.array(rows)
        for i, x in enumerate(vec):
            if x:
                out[idx, i] = out[idx, i] + int(Fraction(x) * D2)
    return out, D2


def _to_int(rows: list, d: int):
    D = 1
    for r in rows:
        for x in r:
            D = _lcm(D, Fraction(x).denominator)
    Zn = np.empty((len(rows), d), dtype=object)
    for a, r in enumerate(rows):
        for i, x in enumerate(r):
            Zn[a, i] = int(Fraction(x) * D)
    return Zn, D


def _prefix_token(preps: list, pos, box: tuple) -> list:
    """One input token through the token-wise layers, as affine forms of its own d coordinates
    over their box; returns its (constant) state or raises NotCertified."""
    d = len(box)
    mid = [(lo + hi) / 2 for lo, hi in box]
    half = [(hi - lo) / 2 for lo, hi in box]
    tok = []
    for i in range(d):
        f = [Fraction(pos[i])] + [Fraction(0)] * d
        f[1 + i] = Fraction(1)
        tok.append(f)
    for pr in preps:
        tok = _affine_mlp(pr, tok, mid, half)
    if any(any(f[1:]) for f in tok):
        raise NotCertified("an input token is not constant on its flat box")
    return [f[0] for f in tok]


def cell_box(c: int, K: int, w: Fraction, dn: int) -> list:
    """The flat box of cell c: per entry (lo, hi)."""
    out = []
    for k in cell_digits(c, K, dn):
        lo = Fraction(k, K)
        hi = Fraction(1) if k == K - 1 else Fraction(k + 1, K) - w
        out.append((lo, hi))
    return out


def check_output_range(layer) -> None:
    """Certify that the last layer maps every input into [0, 1]^d: its attention output is
    followed by an MLP that acts coordinate-wise (each unit reads and writes one coordinate i) as
    a piecewise-linear map with flat tails whose values at the breakpoints lie in [0, 1]."""
    pr = _prep(layer)
    per = {i: [] for i in range(pr["d"])}
    for row, b, outs in pr["units"]:
        if len(row) != 1 or len(outs) != 1 or row[0][0] != outs[0][0]:
            raise NotCertified("the last MLP is not coordinate-wise: output range [0, 1] not certified")
        (j, w), (_, co) = row[0], outs[0]
        per[j].append((w, b, co))
    for i, units in per.items():
        def F(z):
            return z + pr["b2"][i] + sum(co * max(w * z + b, 0) for w, b, co in units)
        brk = sorted({-b / w for w, b, _ in units})
        slope_left = 1 + sum(co * w for w, b, co in units if w < 0)
        slope_right = 1 + sum(co * w for w, b, co in units if w > 0)
        if not brk or slope_left != 0 or slope_right != 0 or not all(0 <= F(z) <= 1 for z in brk):
            raise NotCertified(f"output coordinate {i} of the last MLP is not certified to lie in [0, 1]")


def _cell_outputs(preps: list, npref: int, Zn: np.ndarray, D: int, m_p: int, n: int, softmax: bool):
    """The outputs at the input positions (entry e = t d + i) and their softmax radius, from the
    exact states Zn / D after the token-wise layers."""
    e = Fraction(0)
    for li in range(npref, len(preps)):
        pr = preps[li]
        last = li == len(preps) - 1
        queries = list(range(m_p, m_p + n)) if last else list(range(m_p + n))
        groups, err = _attend(pr, Zn, D, queries, e, softmax)
        e = e + err
        if not last:
            Zn, D = _add_att(Zn, D, groups)
            Zn, D = _mlp_int(pr, Zn, D)
            e = e * pr["lip"]
    outs = []
    for a in queries:
        z = [Fraction(int(Zn[a, i]), D) for i in range(pr["d"])]
        for rows, vec in groups:
            if a in rows:
                z = [zi + vi for zi, vi in zip(z, vec)]
        outs.extend(_mlp_frac(pr, z))
    return outs, e * pr["lip"]


# =========================================================================== windowed evaluation

def _sgn(x) -> int:
    return (x > 0) - (x < 0)


def _ceil_frac(q: Fraction) -> int:
    return -((-q.numerator) // q.denominator)



def _arg_extreme(sg: int, kp, cp: int, sp: list, rows: list, keys: list, d: int) -> tuple:
    """(count, sum) of the rows a hardmax query of sign ``sg`` attends to: the prompt rows' extreme
    group (key ``kp``, ``cp`` rows summing to ``sp``) and the input rows whose key ties the extreme."""
    best = max([kp] + keys) if sg > 0 else min([kp] + keys)
    cnt, tot = (cp, list(sp)) if kp == best else (0, [Fraction(0)] * d)
    for z, k in zip(rows, keys):
        if k == best:
            cnt += 1
            tot = [a + b for a, b in zip(tot, z)]
    return cnt, tot


def _wov_mean(Wov: list, tot: list, cnt: int, d: int) -> list:
    """W_o W_v applied to the mean of ``cnt`` attended rows summing to ``tot``."""
    return [sum((Wov[i][j] * tot[j] for j in range(d) if Wov[i][j]), Fraction(0)) / cnt for i in range(d)]

class _Window:
    """Facts about g and the prompt, established once, under which one cell costs O(log m_p):

    * after the token-wise prefix there are exactly two attention layers, G and the last one F,
      and the network is hardmax;
    * every head of G gives every prompt row the same query sign (so every prompt row gains the
      same vector a(c) in cell c);
    * every unit of G's MLP reads and writes coordinate 0 only, so on a prompt row coordinate 0
      becomes phi(x_j + a_0(c)) with phi continuous piecewise-linear (affine between its
      breakpoints) and coordinates i >= 1 become z_i + a_i(c) + b2_i;
    * every head of F has a key vector on coordinate 0 only.

    The prompt rows are sorted by x_j (their coordinate 0 after the prefix) with prefix sums of
    every coordinate; per cell the rows falling between consecutive breakpoints of phi form a
    contiguous range (binary search), on which phi is affine, so its extremes over the range are
    at the range's ends.  ``build`` returns None when a fact fails (then the full evaluation is
    used)."""

    @staticmethod
    def build(preps: list, npref: int, Zp: np.ndarray, Dp: int, softmax: bool):
        if softmax or len(preps) != npref + 2:
            return None
        G, F = preps[npref], preps[npref + 1]
        d = G["d"]
        if any([j for j, _ in row] != [0] or [i for i, _ in outs] != [0] for row, _, outs in G["units"]):
            return None
        if not F["heads"] or any(hd["u"][0] == 0 or any(hd["u"][1:]) for hd in F["heads"]):
            return None
        w = _Window()
        w.d, w.Dp, w.m_p = d, Dp, Zp.shape[0]
        rows = [[int(x) for x in r] for r in Zp.tolist()]
        w.total = [Fraction(sum(r[i] for r in rows), Dp) for i in range(d)]
        w.g_heads = []
        for hd in G["heads"]:
            signs = {_sgn(sum(hd["v"][j] * r[j] for j in range(d) if hd["v"][j])) for r in rows}
            if len(signs) != 1:
                return None
            keys = [sum(hd["u"][j] * r[j] for j in range(d) if hd["u"][j]) for r in rows]
            ext = {}
            for sg, best in ((1, max(keys)), (-1, min(keys))):
                sel = [r for r, k in zip(rows, keys) if k == best]
                ext[sg] = (best / Dp, len(sel), [Fraction(sum(r[i] for r in sel), Dp) for i in range(d)])
            w.g_heads.append((hd, signs.pop(), ext))
        order = sorted(range(len(rows)), key=lambda j: rows[j][0])
        w.xs = [rows[j][0] for j in order]
        w.cum = []
        for i in range(d):
            acc, c = [0], 0
            for j in order:
                c += rows[j][i]
                acc.append(c)
            w.cum.append(acc)
        # phi(z) = z + b2_0 + sum co relu(wt z + b): its breakpoints and its affine pieces
        units = [(row[0][1], b, outs[0][1]) for row, b, outs in G["units"]]
        w.brk = sorted({-b / wt for wt, b, _ in units})
        tests = ([w.brk[0] - 1] + [(a + b) / 2 for a, b in zip(w.brk, w.brk[1:])] + [w.brk[-1] + 1]
                 if w.brk else [Fraction(0)])
        w.pieces = []
        for z in tests:
            act = [(wt, b, co) for wt, b, co in units if wt * z + b > 0]
            w.pieces.append((1 + sum(co * wt for wt, _, co in act), G["b2"][0] + sum(co * b for _, b, co in act)))
        w.G, w.F = G, F
        return w

    def _sum(self, lo: int, hi: int) -> list:
        return [Fraction(c[hi] - c[lo], self.Dp) for c in self.cum]

    def cell(self, toks: list) -> list:
        """The outputs (entry e = t d + i) for input tokens ``toks`` (states after the prefix)."""
        d, G, F, m = self.d, self.G, self.F, self.m_p + len(toks)
        a_p = [Fraction(0)] * d
        a_in = [[Fraction(0)] * d for _ in toks]
        for hd, psign, ext in self.g_heads:
            u, v, Wov = hd["u"], hd["v"], hd["Wov"]
            kin = [sum(u[j] * z[j] for j in range(d) if u[j]) for z in toks]
            qs = [_sgn(sum(v[j] * z[j] for j in range(d) if v[j])) for z in toks]
            for sg in {psign, *qs}:
                if sg == 0:
                    cnt = m
                    tot = [self.total[i] + sum(z[i] for z in toks) for i in range(d)]
                else:
                    kp, cp, sp = ext[sg]
                    cnt, tot = _arg_extreme(sg, kp, cp, sp, toks, kin, d)
                vec = _wov_mean(Wov, tot, cnt, d)
                if sg == psign:
                    a_p = [a + b for a, b in zip(a_p, vec)]
                for t, q in enumerate(qs):
                    if q == sg:
                        a_in[t] = [a + b for a, b in zip(a_in[t], vec)]
        z1 = [_mlp_frac(G, [a + b for a, b in zip(z, ad)]) for z, ad in zip(toks, a_in)]
        s = a_p[0]
        rest = [a_p[i] + G["b2"][i] for i in range(d)]
        # the prompt rows between consecutive breakpoints of phi: [idx[k], idx[k + 1])
        idx = [0] + [bisect.bisect_left(self.xs, _ceil_frac((b - s) * self.Dp)) for b in self.brk] + [self.m_p]
        ranges = [(lo, hi, sl, ic) for lo, hi, (sl, ic) in zip(idx, idx[1:], self.pieces) if hi > lo]
        ext = {}
        for sg in (1, -1):
            best, runs = None, []
            for lo, hi, sl, ic in ranges:
                if sl == 0:
                    val, run = ic, (lo, hi)
                else:
                    at_end = (sl > 0) == (sg > 0)
                    x = self.xs[hi - 1] if at_end else self.xs[lo]
                    val = ic + sl * (Fraction(x, self.Dp) + s)
                    run = ((bisect.bisect_left(self.xs, x, lo, hi), hi) if at_end
                           else (lo, bisect.bisect_right(self.xs, x, lo, hi)))
                if best is None or (val > best if sg > 0 else val < best):
                    best, runs = val, [run]
                elif val == best:
                    runs.append(run)
            cnt = sum(hi - lo for lo, hi in runs)
            tot = [Fraction(0)] * d
            for lo, hi in runs:
                tot = [a + b for a, b in zip(tot, self._sum(lo, hi))]
            tot = [best * cnt] + [tot[i] + cnt * rest[i] for i in range(1, d)]
            ext[sg] = (best, cnt, tot)
        outs = []
        adds = [[Fraction(0)] * d for _ in toks]
        for hd in F["heads"]:
            u, v, Wov = hd["u"], hd["v"], hd["Wov"]
            kin = [sum(u[j] * z[j] for j in range(d) if u[j]) for z in z1]
            qs = [_sgn(sum(v[j] * z[j] for j in range(d) if v[j])) for z in z1]
            for sg in set(qs):
                if sg == 0:
                    cnt, tot = m, self._all(ranges, s, rest)
                    for z in z1:
                        tot = [a + b for a, b in zip(tot, z)]
                else:
                    pv, cp, sp = ext[sg if u[0] > 0 else -sg]      # key = u_0 phi
                    cnt, tot = _arg_extreme(sg, u[0] * pv, cp, sp, z1, kin, d)
                vec = _wov_mean(Wov, tot, cnt, d)
                for t, q in enumerate(qs):
                    if q == sg:
                        adds[t] = [a + b for a, b in zip(adds[t], vec)]
        for z, ad in zip(z1, adds):
            outs.extend(_mlp_frac(F, [a + b for a, b in zip(z, ad)]))
        return outs

    def _all(self, ranges: list, s: Fraction, rest: list) -> list:
        """The sum of every prompt row's state after G."""
        d = self.d
        tot = [Fraction(0)] * d
        for lo, hi, sl, ic in ranges:
            sm = self._sum(lo, hi)
            cnt = hi - lo
            tot[0] += cnt * ic + sl * (sm[0] + cnt * s)
            for i in range(1, d):
                tot[i] += sm[i] + cnt * rest[i]
        return tot


#: the chain evaluation (:class:`_Chain`) stops with NotCertified beyond this many work units (one
#: unit: a bounded number of rational operations on one piece, or one step of a binary search) in
#: a whole run, or when a state's denominator passes MAX_CHAIN_DEN_BITS bits
MAX_CHAIN_WORK = 1 << 30
MAX_CHAIN_DEN_BITS = 256


def _floor_frac(q: Fraction) -> int:
    return q.numerator // q.denominator


class _Chain:
    """The exact evaluation of a d = 1 hardmax network with any number of attention layers after
    the token-wise prefix, in time proportional to the number of *pieces* rather than m_p.

    The prompt rows are sorted once by their state x_j after the prefix (integer numerators over
    Dp, with prefix sums).  In a cell their current states are kept as pieces (lo, hi, a, b):
    the rows lo <= i < hi of the sorted order have state a * xs[i] + b (a = alpha / Dp), the
    pieces non-empty, disjoint and covering every row in order.  A rank-1 head with d = 1 has key
    u z and query v z, so a query of sign +1 (v z_q > 0) reads the rows with the largest u z,
    i.e. their common state max z (u > 0) or min z (u < 0), -1 the other one, 0 the mean of all
    rows.  Per layer:

    * the largest and smallest state over all rows is at a piece's end (states are affine, hence
      monotone, in x on a piece) or an input row; the sum of all states is
      sum (a * (sum of xs) + b * count) over pieces plus the input rows;
    * the query sign of a row is sign(v) sign(z) for every head, so each piece is split where its
      state changes sign (binary search) and gains the sum over heads of W_ov times the value its
      sign reads; input rows likewise;
    * the MLP phi(z) = z + b2 + sum co relu(w z + b) is affine between consecutive breakpoints
      -b / w (slope and intercept read at an interior point; by continuity also at the ends), so
      a piece is split where its state crosses a breakpoint (binary search with exact ceil/floor)
      and the affine maps compose; adjacent pieces with equal (a, b) merge.

    In the last layer only the n input rows are queries; their outputs go through the MLP
    exactly.  Every value is the same rational as in the full evaluation (:func:`_cell_outputs`),
    so the outputs are equal.  ``build`` returns None unless d = 1 and the network is hardmax."""

    @staticmethod
    def build(preps: list, npref: int, Zp: np.ndarray, Dp: int, softmax: bool):
        if softmax or preps[0]["d"] != 1:
            return None
        ch = _Chain()
        rows = sorted(int(r[0]) for r in Zp.tolist())
        ch.xs, ch.m_p, ch.Dp = rows, len(rows), Dp
        ch.cum = [0]
        for x in rows:
            ch.cum.append(ch.cum[-1] + x)
        ch.lg = max(1, len(rows).bit_length())
        ch.work = len(rows) * ch.lg
        ch.layers = []
        for pr in preps[npref:]:
            heads = [(_sgn(hd["u"][0]), _sgn(hd["v"][0]), hd["Wov"][0][0]) for hd in pr["heads"]]
            units = [(row[0][1] if row else Fraction(0), b, outs[0][1]) for row, b, outs in pr["units"]]
            # slope and intercept of phi left of every breakpoint (the units active as z -> -inf:
            # w < 0, or w = 0 with b > 0), then one sorted sweep: at -b/w a unit with w > 0 switches
            # on and one with w < 0 switches off
            sl = 1 + sum((co * wt for wt, _, co in units if wt < 0), Fraction(0))
            ic = pr["b2"][0] + sum((co * b for wt, b, co in units if wt < 0 or (wt == 0 and b > 0)), Fraction(0))
            events: dict = {}
            for wt, b, co in units:
                if wt:
                    e = events.setdefault(-b / wt, [Fraction(0), Fraction(0)])
                    sg = 1 if wt > 0 else -1
                    e[0] += sg * co * wt
                    e[1] += sg * co * b
            brk, aff = sorted(events), [(sl, ic)]
            for z in brk:
                sl, ic = sl + events[z][0], ic + events[z][1]
                aff.append((sl, ic))
            ch.layers.append({"pr": pr, "heads": heads, "brk": brk, "aff": aff})
        ch._charge(0)
        return ch

    def _charge(self, units: int) -> None:
        self.work += units
        if self.work > MAX_CHAIN_WORK:
            raise NotCertified(f"the chain evaluation needs more than MAX_CHAIN_WORK = {MAX_CHAIN_WORK} "
                               "work units (too many pieces)")

    def _reads(self, lay: dict, pieces: list, zin: list) -> dict:
        """Per state sign s of a query row: the sum over heads of W_ov times the value it reads."""
        add = {1: Fraction(0), -1: Fraction(0), 0: Fraction(0)}
        if not lay["heads"]:
            return add
        xs, cum = self.xs, self.cum
        zmax = zmin = None
        tot = sum(zin, Fraction(0))
        for lo, hi, a, b in pieces:
            if a:
                y1, y2 = a * xs[lo] + b, a * xs[hi - 1] + b
                lo_v, hi_v = (y1, y2) if a > 0 else (y2, y1)
                tot += a * (cum[hi] - cum[lo]) + b * (hi - lo)
            else:
                lo_v = hi_v = b
                tot += b * (hi - lo)
            if zmax is None or hi_v > zmax:
                zmax = hi_v
            if zmin is None or lo_v < zmin:
                zmin = lo_v
        for z in zin:
            if zmax is None or z > zmax:
                zmax = z
            if zmin is None or z < zmin:
                zmin = z
        mean = tot / (self.m_p + len(zin))
        for su, sv, wov in lay["heads"]:
            for s in (1, -1, 0):
                q = sv * s
                val = mean if q == 0 or su == 0 else (zmax if q == su else zmin)
                add[s] += wov * val
        return add

    def _attend(self, pieces: list, add: dict) -> list:
        """Split the pieces where the state changes sign; each part gains add[its sign]."""
        xs, out = self.xs, []
        for lo, hi, a, b in pieces:
            if not a:
                out.append((lo, hi, a, b + add[_sgn(b)]))
                continue
            y1, y2 = a * xs[lo] + b, a * xs[hi - 1] + b
            s1, s2 = _sgn(y1), _sgn(y2)
            if s1 == s2:
                out.append((lo, hi, a, b + add[s1]))
                continue
            t = -b / a
            i1 = bisect.bisect_left(xs, _ceil_frac(t), lo, hi)      # first x >= t
            i2 = bisect.bisect_right(xs, _floor_frac(t), lo, hi)    # first x > t
            self._charge(2 * self.lg)
            for p, q, s in ((lo, i1, -_sgn(a)), (i1, i2, 0), (i2, hi, _sgn(a))):
                if q > p:
                    out.append((p, q, a, b + add[s]))
        return out

    def _mlp(self, lay: dict, pieces: list) -> list:
        """The MLP on every piece: split at the breakpoints its states cross, compose, merge."""
        xs, brk, aff, out = self.xs, lay["brk"], lay["aff"], []

        def emit(p, q, a, b, k):
            sl, ic = aff[k]
            a2, b2 = sl * a, sl * b + ic
            if out and out[-1][1] == p and out[-1][2] == a2 and out[-1][3] == b2:
                out[-1] = (out[-1][0], q, a2, b2)
            else:
                out.append((p, q, a2, b2))
        for lo, hi, a, b in pieces:
            if not a:
                emit(lo, hi, a, b, bisect.bisect_right(brk, b))
                continue
            y1, y2 = a * xs[lo] + b, a * xs[hi - 1] + b
            k1, k2 = bisect.bisect_right(brk, y1), bisect.bisect_right(brk, y2)
            if k1 == k2:
                emit(lo, hi, a, b, k1)
                continue
            kmin, kmax = min(k1, k2), max(k1, k2)
            self._charge((kmax - kmin) * self.lg)
            if a > 0:       # rows with a x + b >= brk[k]: x >= (brk[k] - b) / a, a suffix
                cuts = [bisect.bisect_left(xs, _ceil_frac((brk[k] - b) / a), lo, hi) for k in range(kmin, kmax)]
                ks = range(kmin, kmax + 1)
            else:           # a prefix: x <= (brk[k] - b) / a
                cuts = [bisect.bisect_right(xs, _floor_frac((brk[k] - b) / a), lo, hi)
                        for k in range(kmax - 1, kmin - 1, -1)]
                ks = range(kmax, kmin - 1, -1)
            for p, q, k in zip([lo] + cuts, cuts + [hi], ks):
                if q > p:
                    emit(p, q, a, b, k)
        return out

    def _check_den(self, pieces: list, zin: list) -> None:
        for v in zin + [x for _, _, a, b in pieces for x in (a, b)]:
            if v.denominator.bit_length() > MAX_CHAIN_DEN_BITS:
                raise NotCertified(f"a state's denominator exceeds MAX_CHAIN_DEN_BITS = {MAX_CHAIN_DEN_BITS} bits "
                                   "in the chain evaluation")

    def cell(self, toks: list) -> list:
        """The outputs (entry e = t, d = 1) for input tokens ``toks`` (states after the prefix)."""
        pieces = [(0, self.m_p, Fraction(1, self.Dp), Fraction(0))] if self.m_p else []
        zin = [Fraction(z[0]) for z in toks]
        last = len(self.layers) - 1
        for li, lay in enumerate(self.layers):
            self._charge(len(pieces) * (2 + len(lay["heads"])) + len(zin))
            add = self._reads(lay, pieces, zin)
            zin = [_mlp_frac(lay["pr"], [z + add[_sgn(z)]])[0] for z in zin]
            if li == last:
                return zin
            pieces = self._mlp(lay, self._attend(pieces, add) if lay["heads"] else pieces)
            self._check_den(pieces, zin)
        return zin


def evaluate_cells(net: UniversalNetwork, P: np.ndarray, cells=None, method: str = "auto"):
    """Exact outputs of g([P, X]) on the flat box of every cell.

    Returns ``(values, eta)``: ``values[c]`` is the list of d n exact outputs (entry e = t d + i)
    on the whole box of cell c, and ``eta[c]`` an upper bound on the distance (per entry) of the
    softmax network's outputs from them (0 for hardmax).  Raises :class:`NotCertified` when a box
    cannot be certified.  ``method``: "full" pushes all m_p + n rows through the attention layers
    per cell (the reference, O(m_p) per cell); "window" uses :class:`_Window` (O(log m_p) per
    cell; NotCertified when its facts fail); "chain" uses :class:`_Chain` (d = 1 and hardmax,
    any number of attention layers; NotCertified otherwise or beyond its work and denominator
    limits); "auto" the window when its facts hold, else the chain when d = 1 and hardmax, else
    the full evaluation."""
    if method not in ("auto", "full", "window", "chain"):
        raise ValueError(f"unknown evaluation method {method!r}")
    model, d, n = net.model, net.d, net.n
    preps = [_prep(la) for la in model.layers]
    npref = 0
    while npref < len(preps) and not preps[npref]["heads"]:
        npref += 1
    if npref == len(preps):
        raise NotCertified("no attention layer: the prompt cannot reach the outputs")
    check_output_range(model.layers[-1])
    softmax = net.kind == "softmax"
    Pe = net.encode_prompt(P)
    Zp, Dp = _to_int([list(r) for r in Pe], d)
    for li in range(npref):
        Zp, Dp = _mlp_int(preps[li], Zp, Dp)
    m_p = Pe.shape[0]
    dn = d * n
    win = _Window.build(preps, npref, Zp, Dp, softmax) if method in ("auto", "window") else None
    if win is None and method == "window":
        raise NotCertified("the windowed evaluation's facts do not hold for this network")
    chain = None
    if method == "chain" or (method == "auto" and win is None):
        chain = _Chain.build(preps, npref, Zp, Dp, softmax)
        if chain is None and method == "chain":
            raise NotCertified("the chain evaluation needs d = 1 and a hardmax network")
    values, etas = [], []
    prefix_cache: dict = {}
    cells = range(net.N) if cells is None else cells
    from verify.progress import current
    progress = current()
    progress.stage("exact cell values")
    total = len(cells) if hasattr(cells, "__len__") else 0
    for ci, c in enumerate(cells):
        if ci % 16 == 0 and total:
            progress.step(ci + 1, total, "cell")
        box = cell_box(c, net.K, net.w, dn)
        pts = []
        for t in range(n):
            own = tuple(box[t * d:(t + 1) * d])
            if (t, own) not in prefix_cache:
                prefix_cache[(t, own)] = _prefix_token(preps[:npref], net.pos_input[t], own)
            pts.append(prefix_cache[(t, own)])
        fast = win if win is not None else chain
        if fast is not None:
            values.append(fast.cell(pts))
            etas.append(Fraction(0))
            continue
        Zi, Di = _to_int(pts, d)
        D = _lcm(Dp, Di)
        Zn = np.concatenate([Zp * (D // Dp), Zi * (D // Di)], axis=0)
        out, e = _cell_outputs(preps, npref, Zn, D, m_p, n, softmax)
        values.append(out)
        etas.append(e)
    return values, etas


# =========================================================================== float64 rank-1 pass

#: above this many rows the Monte Carlo pass of the hardmax network uses :class:`RankOneFloat`
#: instead of forward_torch
#: (whose (m_p + n)^2 score matrices per head would not fit in memory at the largest grids)
TORCH_MAX_ROWS = 4096


class RankOneFloat:
    """g([P, X])_{:, m_p:} in float64 for a hardmax network whose heads have rank-1 scores, in
    O(m_p) per sample: a head's arg-max set for a query depends only on the sign of v . z_query,
    so it needs the keys u . z of all rows, never the (m_p + n)^2 score matrix.  The prompt rows
    go through the token-wise prefix once, exactly (then rounded); the input rows and every later
    layer in float64.  A float measurement, never a certificate."""

    def __init__(self, net: UniversalNetwork, P: np.ndarray):
        if net.kind != "hardmax":
            raise NotCertified("the rank-1 float pass is for the hardmax network only")
        self.n, self.d = net.n, net.d
        preps = [_prep(la) for la in net.model.layers]
        self.npref = next((i for i, pr in enumerate(preps) if pr["heads"]), len(preps))
        Zp, Dp = _to_int([list(r) for r in net.encode_prompt(P)], net.d)
        for pr in preps[:self.npref]:
            Zp, Dp = _mlp_int(pr, Zp, Dp)
        self.Zp = np.array([[float(Fraction(int(x), Dp)) for x in r] for r in Zp.tolist()])
        self.pos = np.vectorize(float, otypes=[np.float64])(net.pos_input)
        f = lambda a: np.vectorize(float, otypes=[np.float64])(np.asarray(a, dtype=object))  # noqa: E731
        self.layers = []
        for la, pr in zip(net.model.layers, preps):
            heads = [(np.array([float(x) for x in h["u"]]), np.array([float(x) for x in h["v"]]),
                      np.array([[float(x) for x in r] for r in h["Wov"]])) for h in pr["heads"]]
            self.layers.append((heads, f(la.W_1), f(la.b_1), f(la.W_2), f(la.b_2)))

    @staticmethod
    def _mlp(layer, Z):
        _, W1, b1, W2, b2 = layer
        return Z + np.maximum(Z @ W1.T + b1, 0.0) @ W2.T + b2

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        out = np.zeros((X.shape[0], self.n, self.d))
        for b in range(X.shape[0]):
            zi = X[b] + self.pos
            for layer in self.layers[:self.npref]:
                zi = self._mlp(layer, zi)
            Z = np.concatenate([self.Zp, zi], axis=0)
            for li in range(self.npref, len(self.layers)):
                last = li == len(self.layers) - 1
                q = np.arange(Z.shape[0] - self.n, Z.shape[0]) if last else np.arange(Z.shape[0])
                add = np.zeros((len(q), self.d))
                for u, v, Wov in self.layers[li][0]:
                    kap, lam = Z @ u, Z[q] @ v
                    for sg, rows in ((1, kap == kap.max()), (-1, kap == kap.min()), (0, slice(None))):
                        sel = np.sign(lam) == sg
                        if sel.any():
                            add[sel] += Wov @ Z[rows].mean(axis=0)
                Z = self._mlp(self.layers[li], (Z[q] if last else Z) + add)
            out[b] = Z
        return out


# =========================================================================== the bound

def parse_number(text, field: str, positive: bool = True) -> Fraction:
    """A decimal or rational string ("0.25", "1/4") as an exact Fraction."""
    try:
        q = Fraction(str(text).strip())
    except (ValueError, ZeroDivisionError):
        raise InputError(field, "a number such as 0.25 or a rational such as 1/4", repr(text)) from None
    if positive and q <= 0:
        raise InputError(field, "a positive number", str(q))
    return q


def _check_sizes(d: int, n: int, p: Fraction) -> None:
    if not isinstance(d, int) or d < 1:
        raise InputError("--d", "a positive integer", repr(d))
    if not isinstance(n, int) or n < 1:
        raise InputError("--n", "a positive integer", repr(n))
    if n >= 3 and d != 1:
        raise InputError("--n", "1 or 2, or any n >= 3 with --d 1 (the broadcast construction for n >= 3 stores "
                         "one number per token)", f"n = {n} with d = {d}")
    if p < 1:
        raise InputError("--p", "a number p >= 1", str(p))
    if p.numerator > 64 or p.denominator > 16:
        raise InputError("--p", "a rational p = u/v with u <= 64 and v <= 16", str(p))


def setup(d: int, n: int, L, p, eps, target: str, seed: int = 0, temperature=None, K: Optional[int] = None):
    """Validate the inputs and build (net, prompt, target, fbar, params)."""
    L, p = parse_number(L, "--lipschitz"), parse_number(p, "--p")
    _check_sizes(d, n, p)
    eps = parse_number(eps, "--eps")
    Kf = delta_K(eps, L, d, n, p)
    override = K is not None
    if override and (not isinstance(K, int) or K < 2):
        raise InputError("--delta", "1/K with an integer K >= 2", repr(K))
    K = K if override else Kf
    limit = MAX_CELLS if temperature is None else MAX_CELLS_SOFTMAX
    if K ** (d * n) > limit:
        what = "" if temperature is None else " for the softmax version"
        cells = K ** (d * n)
        shown = f"{cells} cells" if cells < 10 ** 15 else f"{K}^{d * n} cells"
        raise InputError("--delta" if override else "--eps", f"a size with at most {limit} grid cells K^(dn){what}",
                         f"K = {K}, dn = {d * n}: {shown}",
                         "Use a larger --delta or smaller --d/--n." if override else
                         "Use a larger --eps or smaller --d/--n.")
    if target not in TARGETS:
        raise InputError("--target", f"one of {sorted(TARGETS)}", repr(target))
    kind = "hardmax" if temperature is None else "softmax"
    T = None if temperature is None else parse_number(temperature, "--softmax-temperature")
    w = ramp_width(eps, p, d, n, K)
    net = build_network(d, n, K, w, kind=kind, temperature=T)
    tgt = build_target(target, d, n, L, seed=seed)
    fbar = quantized_function(tgt, K)
    P = build_prompt(fbar, d, n, K)
    params = {"d": d, "n": n, "lipschitz": fmt(L), "p": fmt(p), "eps": fmt(eps), "target": target,
              "seed": int(seed), "kind": kind, "temperature": None if T is None else fmt(T),
              "K": int(K), "delta_override": bool(override), "K_formula": int(Kf), "w": fmt(w)}
    return net, P, tgt, fbar, params


def _sums(net: UniversalNetwork, tgt, values: list, etas: list, p: Fraction, Lf: Fraction, sub: int):
    """Upper (with and without the softmax term) and lower bounds on the integral of
    ||f - g||_p^p over the flat boxes, each box split into sub^(dn) equal sub-boxes; and the total
    flat volume."""
    d, n, K = net.d, net.n, net.K
    dn = d * n
    ip = 1 / p
    dn_root = rpow_up(Fraction(dn), ip)
    tot, totq, low, vol_sum = Fraction(0), Fraction(0), Fraction(0), Fraction(0)
    radius_cache: dict = {}
    for c in range(net.N):
        box = cell_box(c, K, net.w, dn)
        widths = [(hi - lo) / sub for lo, hi in box]
        vol = math.prod(widths, start=Fraction(1))
        key = tuple(widths)
        if key not in radius_cache:
            radius_cache[key] = rpow_up(sum(rpow_up(wd / 2, p) for wd in widths), ip)
        r = radius_cache[key]
        et = dn_root * etas[c]
        for j in range(sub ** dn):
            idx = cell_digits(j, sub, dn)
            mid = [lo + (k + Fraction(1, 2)) * wd for (lo, _), k, wd in zip(box, idx, widths)]
            diffs = [abs(a - b) for a, b in zip(tgt.f_exact(mid), values[c])]
            a_up = rpow_up(sum(rpow_up(x, p) for x in diffs), ip)
            a_dn = rpow_down(sum(rpow_down(x, p) for x in diffs), ip)
            tot += vol * rpow_up(a_up + Lf * r + et, p)
            totq += vol * rpow_up(a_up + Lf * r, p)
            lo_term = a_dn - Lf * r - et
            if lo_term > 0:
                low += vol * rpow_down(lo_term, p)
            vol_sum += vol
    return tot, totq, low, vol_sum


def _le_pow(x: Fraction, eps: Fraction, p: Fraction) -> bool:
    """x <= eps^p, exactly."""
    return x ** p.denominator <= eps ** p.numerator


def _subdivision(N: int, dn: int) -> int:
    s = 1
    while s < MAX_SUB and N * (s + 1) ** dn <= MAX_SUBBOXES:
        s += 1
    return s


def certify(net: UniversalNetwork, P: np.ndarray, tgt, fbar: list, params: dict,
            values_out: Optional[list] = None) -> tuple[str, dict]:
    """(status, numbers): the exact bounds on d_p and their split; status is "verified",
    "refuted" or "unknown".  Raises :class:`NotCertified` when a box cannot be evaluated."""
    p, eps, Lf = Fraction(params["p"]), Fraction(params["eps"]), tgt.lipschitz
    dn = net.d * net.n
    values, etas = evaluate_cells(net, P)
    if values_out is not None:
        values_out.extend(values)
    ip, sub = 1 / p, 1
    tot, totq, low, vol_sum = _sums(net, tgt, values, etas, p, Lf, sub)
    ramp_p = (1 - vol_sum) * dn
    if not _le_pow(tot + ramp_p, eps, p) and _subdivision(net.N, dn) > 1:
        sub = _subdivision(net.N, dn)     # the network is constant on each box: split only f's side
        tot, totq, low, _ = _sums(net, tgt, values, etas, p, Lf, sub)
    B_p = tot + ramp_p
    status = "verified" if _le_pow(B_p, eps, p) else ("unknown" if _le_pow(low, eps, p) else "refuted")
    bound = rpow_up(B_p, ip)
    soft = max(bound - rpow_down(totq + ramp_p, ip), Fraction(0)) if net.kind == "softmax" else Fraction(0)
    K = net.K
    nums = {"bound": fmt(bound), "lower": fmt(rpow_down(low, ip)), "quantization": fmt(rpow_up(totq, ip)),
            "ramps": fmt(rpow_up(ramp_p, ip)), "softmax": fmt(soft), "ramp_measure": fmt(1 - vol_sum),
            "K": K, "w": fmt(net.w), "cells": net.N, "m_p": net.m_p, "subdivision": sub,
            "cells_equal_fbar": sum(1 for c in range(net.N) if values[c] == [Fraction(v, K) for v in fbar[c]]),
            "eta_max": fmt(max(etas)), "target_lipschitz": fmt(Lf)}
    return status, nums


def outputs_sha256(values: list) -> str:
    """sha256 of the canonical JSON of the per-cell outputs (the certificate's commitment)."""
    return canonical_sha256([[fmt(x) for x in row] for row in values])


# =========================================================================== measurement

def measure_mc(net: UniversalNetwork, P: np.ndarray, tgt, p: Fraction, samples: int, seed: int,
               values: Optional[list] = None, crosscheck: int = 16) -> dict:
    """Monte Carlo estimate of d_p in float64, with a one-sided Hoeffding 95% bound.

    X is drawn uniformly.  Where X lies in a flat box and ``values`` (the certified constant
    outputs of the boxes) are given, g(X) is that value; elsewhere, and for the first
    ``crosscheck`` samples in any case, g(X) is computed in float64 (``forward_torch``, or above
    TORCH_MAX_ROWS rows :class:`RankOneFloat`, reported as ``float_pass``); the largest difference
    between the two on flat boxes is reported as ``float_crosscheck_max_diff``."""
    if samples <= 0:
        return {"samples": 0}
    rng = np.random.default_rng(seed + 7919)
    dn, K = net.d * net.n, net.K
    X = rng.random((samples, net.n, net.d))
    Xf = X.reshape(samples, dn)
    dig = np.minimum(np.floor(Xf * K).astype(np.int64), K - 1)
    upper = np.where(dig == K - 1, 1.0, (dig + 1) / K - float(net.w))
    flat = np.all(Xf <= upper, axis=1)
    cells = (dig * (K ** np.arange(dn))[None, :]).sum(axis=1)
    G, diff, used = _mc_values(net, P, X, flat, cells, values, crosscheck)
    vals = (np.abs(G - tgt.f_float(Xf)) ** float(p)).sum(axis=1)
    mean = float(vals.mean())
    half = dn * math.sqrt(math.log(1 / 0.05) / (2 * samples))
    return {"samples": samples, "estimate": mean ** (1 / float(p)),
            "upper_95": min(mean + half, dn) ** (1 / float(p)),
            "forward_torch_samples": used, "float_pass": _float_pass(net),
            "float_crosscheck_max_diff": diff,
            "note": (f"Monte Carlo in float64: g = the certified box value on flat boxes, {_float_pass(net)} "
                     "elsewhere; one-sided Hoeffding bound for values in [0, dn]")}


def _float_pass(net: UniversalNetwork) -> str:
    return "rank-1 float64 pass" if net.kind == "hardmax" and net.m_p + net.n > TORCH_MAX_ROWS else "forward_torch"


def _mc_values(net, P, X, flat, cells, values, crosscheck):
    samples, dn = X.shape[0], net.d * net.n
    G = np.zeros((samples, dn))
    diff = 0.0
    if values is not None:
        table = np.array([[float(v) for v in row] for row in values])
        G[flat] = table[cells[flat]]
        need, check = np.where(~flat)[0].tolist(), list(range(min(crosscheck, samples)))
    else:
        need, check = list(range(samples)), []
    todo = sorted(set(need) | set(check))
    if todo:
        if _float_pass(net) != "forward_torch":
            Gt = RankOneFloat(net, P)(X[todo]).reshape(len(todo), dn)
        else:
            Gt = forward_float(net, P, X[todo]).reshape(len(todo), dn)
        for r, b in enumerate(todo):
            if b in check and flat[b] and values is not None:
                diff = max(diff, float(np.max(np.abs(Gt[r] - G[b]))))
            if b in need:
                G[b] = Gt[r]
    return G, diff, len(todo)


# =========================================================================== the result

def universality_question(params: dict) -> dict:
    """The ``universality`` question of a run (questions.py): seed only for relu-net, delta only
    when K was overridden, temperature only for softmax."""
    q = {"kind": "universality", "d": params["d"], "n": params["n"], "lipschitz": params["lipschitz"],
         "p": params["p"], "eps": params["eps"], "target": params["target"]}
    if params["temperature"] is not None:
        q["temperature"] = params["temperature"]
    if params["target"] == "relu-net":
        q["seed"] = params["seed"]
    if params["delta_override"]:
        q["delta"] = f"1/{params['K']}"
    return q


def _inputs(net: UniversalNetwork, P: np.ndarray, params: dict) -> dict:
    """The network (softmax weights unscaled: the checker divides scores by the question's
    temperature) and the prompt, embedded."""
    written = net
    if net.kind == "softmax":
        written = build_network(net.d, net.n, net.K, net.w, kind="softmax", temperature=Fraction(1))
    model = model_to_json(written.model)
    model.pop("meta", None)

    def rows(a):
        return [[fmt(x) for x in row] for row in a.tolist()]
    network = {"format": NETWORK_FORMAT, "model": model, "pos_input": rows(written.pos_input),
               "pos_prompt": rows(written.pos_prompt)}
    return {"network": embed(network), "prompt": embed({"format": PROMPT_FORMAT, "tokens": rows(P)})}


def _message(nums: dict, params: dict, mc: dict, report: dict) -> str:
    f = lambda k: float(Fraction(nums[k]))  # noqa: E731
    return (f"bound {f('bound'):.5g} vs eps {float(Fraction(params['eps'])):.5g} (quantization "
            f"{f('quantization'):.4g}, ramps {f('ramps'):.4g}, softmax {f('softmax'):.3g}); lower bound "
            f"{f('lower'):.4g}; measured {mc.get('estimate', float('nan')):.4g}; delta = 1/{nums['K']}, "
            f"m_p = {nums['m_p']} (formula n (1/delta)^(dn) = {report['m_p_formula']}), depth {report['depth']}, "
            f"MLP width {report['mlp_width']}, {report['parameters']} parameters")


def run_universality(d: int = 1, n: int = 2, L="1", p="2", eps="1/4", target: str = "token-mix",
                     seed: int = 0, temperature=None, K: Optional[int] = None, samples: int = 4096,
                     claim: str = "U") -> Result:
    """Build g and P_f, certify the d_p bound exactly, measure it by Monte Carlo; a Result."""
    t0 = time.perf_counter()
    net, P, tgt, fbar, params = setup(d, n, L, p, eps, target, seed, temperature, K)
    question, inputs = universality_question(params), _inputs(net, P, params)
    method = ("exact box evaluation (hardmax)" if net.kind == "hardmax" else
              f"exact box evaluation + softmax perturbation bound (T = {params['temperature']})")
    t1 = time.perf_counter()
    values: list = []
    try:
        status, nums = certify(net, P, tgt, fbar, params, values)
    except NotCertified as exc:
        return Result(claim=claim, status=Status.UNKNOWN, question=question, inputs=inputs, method=method,
                      seconds={"build": t1 - t0, "certify": time.perf_counter() - t1},
                      message=f"not certified: {exc}")
    t2 = time.perf_counter()
    mc = measure_mc(net, P, tgt, Fraction(params["p"]), samples, seed, values)
    t3 = time.perf_counter()
    report = _report(net, nums, params, mc, tgt)
    msg = _message(nums, params, mc, report)
    if status == "unknown":
        msg = "the rigorous upper bound exceeds eps and the lower bound does not: " + msg
    decided = status != "unknown"
    return Result(claim=claim, status=Status(status), question=question, inputs=inputs,
                  certificate=certificate(CERT_KIND, {"outputs_sha256": outputs_sha256(values)}) if decided else None,
                  reported=nums if decided else {}, method=method, message=msg,
                  checks={"cells_equal_fbar": f"{nums['cells_equal_fbar']}/{nums['cells']}"},
                  seconds={"build": t1 - t0, "certify": t2 - t1, "measure": t3 - t2},
                  extra={"report": report})


def _report(net: UniversalNetwork, nums: dict, params: dict, mc: dict, tgt) -> dict:
    cnt = net.counts()
    d, n, K = net.d, net.n, net.K
    N = K ** (d * n)
    return {
        "delta": f"1/{K}", "K": K, "K_formula": params["K_formula"],
        "delta_formula": "delta <= eps / (2 (L + 1) (d n)^(1/p))",
        "ramp_width": params["w"],
        "softmax_temperature": params["temperature"],
        "recommended_softmax_temperature": fmt(default_temperature()),
        "C": f"{N}^{N}", "log10_C": N * math.log10(N),
        "C_formula": "((1/delta)^(dn))^((1/delta)^(dn))",
        "m_p": net.m_p, "m_p_formula": n * K ** (d * n), "m_p_formula_text": "m_p >= n (1/delta)^(dn)",
        "depth": cnt["depth"], "heads_per_layer": cnt["heads_per_layer"], "heads": cnt["heads_total"],
        "head_sizes": cnt["head_sizes"], "mlp_widths": cnt["mlp_widths"], "mlp_width": cnt["mlp_width"],
        "parameters": cnt["parameters"], "nonzero_parameters": cnt["nonzero_parameters"],
        "positional_encoding_entries": cnt["positional_encoding_entries"],
        "prompt_parameters": net.m_p * d,
        "target": tgt.name, "target_description": tgt.description, "target_lipschitz": nums["target_lipschitz"],
        "bound": float(Fraction(nums["bound"])), "lower_bound": float(Fraction(nums["lower"])),
        "eps": float(Fraction(params["eps"])),
        "split": {k: float(Fraction(nums[k])) for k in ("quantization", "ramps", "softmax")},
        "measured": mc,
    }


# =========================================================================== sweep

def sweep(out: str, d: int = 1, n: int = 2, L="1", p="2", target: str = "token-mix",
          eps_values=("1", "3/4", "1/2", "3/8", "1/4"), seed: int = 0, temperature=None,
          samples: int = 4096) -> dict:
    """Run the measurement for several eps; write universality_sweep.json and .png into ``out``."""
    from constructions.model import atomic_write_text
    rows = []
    for e in eps_values:
        r = run_universality(d, n, L, p, e, target, seed, temperature, None, samples, claim="U-sweep")
        rep = r.extra.get("report", {})
        rows.append({"eps": float(Fraction(e)), "eps_exact": str(e), "status": Status(r.status).value,
                     "bound": rep.get("bound"), "measured": rep.get("measured", {}).get("estimate"),
                     "measured_upper_95": rep.get("measured", {}).get("upper_95"),
                     "m_p": rep.get("m_p"), "m_p_formula": rep.get("m_p_formula"), "K": rep.get("K"),
                     "seconds": r.total_seconds})
    os.makedirs(out, exist_ok=True)
    data = {"format": "ptverify-universality-sweep/1", "d": d, "n": n, "lipschitz": str(L), "p": str(p),
            "target": target, "kind": "hardmax" if temperature is None else "softmax", "rows": rows}
    atomic_write_text(os.path.join(out, "universality_sweep.json"), json.dumps(data, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    es = [r["eps"] for r in rows]
    ax1.plot(es, es, "k--", label="epsilon (the target: error <= epsilon)")
    ax1.plot(es, [r["bound"] for r in rows], "o-", color="C0", label="rigorous upper bound on d_p")
    ax1.plot(es, [r["measured"] for r in rows], "s-", color="C1", label="measured d_p (Monte Carlo)")
    ax1.set_xscale("log"); ax1.set_yscale("log")
    ax1.set_xlabel("epsilon"); ax1.set_ylabel(f"d_p error (p = {p})")
    ax1.set_title(f"Theorem U: error vs epsilon ({target}, d={d}, n={n}, L={L})")
    ax1.legend(fontsize=8); ax1.grid(True, which="both", alpha=0.3)
    ax2.plot(es, [r["m_p"] for r in rows], "o-", color="C2", label="m_p used")
    ax2.plot(es, [r["m_p_formula"] for r in rows], "x--", color="k", label="n (1/delta)^(dn)")
    ax2.set_xscale("log"); ax2.set_yscale("log")
    ax2.set_xlabel("epsilon"); ax2.set_ylabel("prompt length m_p")
    ax2.set_title("required prompt length"); ax2.legend(fontsize=8); ax2.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    png = os.path.join(out, "universality_sweep.png")
    tmp = png + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, png)
    return data
