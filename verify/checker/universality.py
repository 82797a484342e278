"""Check a Theorem U certificate (kind ``universality-dp-bound``): a rigorous bound on
d_p(g([P_f, .])_{:, m_p:}, f) for the network g and prompt P_f given as inputs.

Everything is re-derived here, from the question and the inputs only (``proofs/universality.md``,
section "The trusted check"):

* the grid ``K`` (from eps, L, d, n, p, or the question's ``delta``), the ramp width ``w`` and the
  flat boxes ``B_c = prod_e [k_e/K, (k_e+1)/K - w]`` (the last step reaches 1);
* the target f (this module's own copies of ``token-mix``, ``smooth``, ``relu-net``, with their
  Lipschitz constants), its quantization fbar and the lookup prompt P_f, which the ``prompt``
  input must equal;
* g on every flat box, with this module's own evaluator: the leading token-wise layers (every head
  has W_o W_v = 0) as affine forms of the input over the box, every ReLU shown sign-stable, so the
  input tokens are constant there; the later layers exactly in rationals, each head with a rank-1
  score matrix W_q^T W_k = v u^T (so hardmax picks the largest or smallest key u.z); the softmax
  version (scores divided by the question's temperature) adds a radius eta from score margins and
  exp(-G) <= 2^-floor(10 G / 7) (valid because e^7 >= 2^10, checked with a rigorous enclosure);
  for a hardmax network of the construction's shape the attention layers are evaluated
  "windowed" (:func:`_window_facts`, :func:`_window_cell`): facts established here once per run
  (one query sign per gather head on the prompt rows, a scalar piecewise-linear tent, lookup keys
  on coordinate 0) let one cell cost O(log m_p) binary searches instead of O(m_p) rows, with the
  same exact outputs; otherwise, for d = 1 (scalar tokens) and hardmax with any number of attention
  layers after the prefix, the "chain" evaluation (:func:`_chain_facts`, :func:`_chain_cell`):
  the prompt rows' states, sorted once, are kept as pieces of the sorted order on which the state
  is affine in the row's state after the prefix, cut at 0 (the query sign) and at the MLPs'
  breakpoints by binary search, so one cell costs O(pieces log m_p) instead of O(m_p) rows, with
  the same exact outputs; for other networks the full evaluation runs, within its own limit;
* the last MLP maps every input into [0, 1] (coordinate-wise, flat tails), so on the ramp region
  ||f - g||_p^p <= d n;
* the bound: sum over boxes of vol (||f(X_0) - c||_p + Lip(f) r + (dn)^(1/p) eta)^p plus
  d n measure(ramps), p-th powers and roots rounded outward on a 2^-64 grid.  ``verified`` needs
  bound^p <= eps^p, ``refuted`` needs lower^p > eps^p, both decided exactly.

The body is ``{"outputs_sha256": H}``: the sha256 of the per-cell outputs (canonical JSON of
``[[exact strings, entry e = t d + i] per cell]``), which the evaluation here must reproduce.

Instances beyond the limits are refused, never run: more than MAX_CELLS grid cells, more than
MAX_STATE_BITS bits in the evaluation's integers (in the chain evaluation: in a numerator or
denominator of a state), more than MAX_WORK work units for the full evaluation (cells x rows x
layer sizes), MAX_WINDOW_WORK for the windowed one or MAX_CHAIN_WORK for the chain (a running
count, refused as soon as it passes the limit), more than MAX_POWER_WORK word operations in the
bound's powers and roots (see the constants).
"""
from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

import numpy as np

from .envelope import Context, Outcome
from .inputs import canonical_sha256, model_from_obj, require_plain
from .numbers import Reject, exp_bounds, fields, fmt, matrix

__all__ = ["check", "Instance", "instance", "target_values", "rpow_up", "rpow_down", "evaluate_cells",
           "NETWORK_FORMAT", "PROMPT_FORMAT", "TARGET_NAMES"]

NETWORK_FORMAT = "ptverify-universal-network/1"
PROMPT_FORMAT = "ptverify-universal-prompt/1"
MAX_CELLS = 1 << 16
MAX_SUBBOXES = 20000
MAX_SUB = 16
ROOT_BITS = 64
EXP2_CAP = 1024          # exp(-G) <= 2^-min(floor(10 G / 7), EXP2_CAP)
MAX_RAMP_HALVINGS = 2000
#: limits that make the checker refuse rather than hang on a small hostile file: the bits of the
#: integers of the exact evaluation, its work units (:func:`_work`; the limit is about 10 s), and
#: the word operations (bits / 64)^2 spent on the powers and roots of the bound (about 1 ns each)
MAX_STATE_BITS = 256
MAX_WORK = 1 << 28
#: the windowed evaluation (one binary search per piece of the gather layer's tent per cell, so
#: O(log m_p) per cell) is charged WINDOW_CELL_UNITS per piece, unit and head, per input row and
#: coordinate; its limit admits the largest grid (K^(dn) = MAX_CELLS) with this construction
WINDOW_CELL_UNITS = 64
MAX_WINDOW_WORK = 1 << 31
#: the chain evaluation (d = 1, any number of attention layers) keeps a running count of its work
#: (same scale, about 30-50 ns a unit): CHAIN_PIECE_UNITS per piece of the prompt rows' states per
#: layer, and again times the bits of the number of the MLP's breakpoints (its search among them);
#: CHAIN_CUT_UNITS per bit of m_p for each cut of a piece (a binary search on the sorted prompt
#: rows with an exact ceiling or floor); CHAIN_ROW_UNITS per input row, layer and head, plus the
#: bits of the breakpoints; before any cell, the prompt rows' sort and the layers' tables. It is
#: refused as soon as the count passes MAX_CHAIN_WORK (the number of pieces is only known as the
#: cells run), or before any cell when one piece per layer would already pass it
CHAIN_PIECE_UNITS = 96
CHAIN_CUT_UNITS = 32
CHAIN_ROW_UNITS = 64
MAX_CHAIN_WORK = 1 << 31
MAX_POWER_WORK = 1 << 33
TARGET_NAMES = ("token-mix", "smooth", "relu-net")


# =========================================================================== roots

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
    """ceil (up) or floor of 2^64 x^(1/k), over 2^64."""
    if k == 1 or x == 0:
        return x
    S = 1 << ROOT_BITS
    t = x * S ** k
    r = _iroot(t.numerator // t.denominator, k)
    if up and Fraction(r, S) ** k < x:
        r += 1
    return Fraction(r, S)


def rpow_up(x: Fraction, p: Fraction) -> Fraction:
    """The least multiple of 2^-64 >= x^p (x >= 0, p > 0 rational); exact when p is an integer."""
    return _root(Fraction(x) ** p.numerator, p.denominator, True)


def rpow_down(x: Fraction, p: Fraction) -> Fraction:
    """The greatest multiple of 2^-64 <= x^p; exact when p is an integer."""
    return _root(Fraction(x) ** p.numerator, p.denominator, False)


def _pow_le(x: Fraction, eps: Fraction, p: Fraction) -> bool:
    """Is x <= eps^p exactly (x, eps >= 0)?"""
    return x ** p.denominator <= eps ** p.numerator


# =========================================================================== the instance

@dataclass
class Instance:
    """The question's parameters and what follows from them."""
    d: int
    n: int
    L: Fraction
    p: Fraction
    eps: Fraction
    target: str
    seed: Optional[int]
    T: Optional[Fraction]      # None: hardmax; else softmax with scores divided by T
    K: int
    w: Fraction

    @property
    def dn(self) -> int:
        return self.d * self.n

    @property
    def N(self) -> int:
        return self.K ** self.dn

    @property
    def m_p(self) -> int:
        return self.n * self.N


def _grid_ok(K: int, eps: Fraction, L: Fraction, dn: int, p: Fraction) -> bool:
    """1/K <= eps / (2 (L + 1) (dn)^(1/p)), i.e. (K eps / (2 (L + 1)))^p >= dn."""
    return (K * eps / (2 * (L + 1))) ** p.numerator >= Fraction(dn) ** p.denominator


def _grid(q: dict, dn: int) -> int:
    """K = 1/delta: the question's delta, or the least K >= 2 of the formula (exact search)."""
    kmax = 1
    while (kmax + 1) ** dn <= MAX_CELLS:
        kmax += 1
    if q["delta"] is not None:
        dl = q["delta"]
        if dl.numerator != 1 or dl.denominator < 2:
            raise Reject(f"question.delta: expected 1/K with an integer K >= 2, found {fmt(dl)}")
        K = dl.denominator
    else:
        lo, hi = 2, kmax
        if not _grid_ok(hi, q["eps"], q["lipschitz"], dn, q["p"]):
            raise Reject(f"question: the grid for eps = {fmt(q['eps'])} has more than {MAX_CELLS} cells")
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if _grid_ok(mid, q["eps"], q["lipschitz"], dn, q["p"]) else (mid + 1, hi)
        K = lo
    if K > kmax:
        raise Reject(f"question: K^(dn) = {K}^{dn} cells exceeds the checker's limit {MAX_CELLS}")
    return K


def _ramp(eps: Fraction, p: Fraction, dn: int, K: int) -> Fraction:
    """w = 1/(K 2^k), the least k >= 1 with (dn)^2 (K - 1) w <= (eps/4)^p, i.e. with
    2^(k v) >= X = (dn^2 (K - 1) / K)^v / (eps/4)^u for p = u/v: k is found from the bit length of
    X and confirmed exactly (no search over k, whose powers of a huge eps would be slow)."""
    u, v = p.numerator, p.denominator
    X = Fraction(dn * dn * (K - 1), K) ** v / (eps / 4) ** u

    def ok(k: int) -> bool:
        return X <= 2 ** (k * v)
    j = X.numerator.bit_length() - X.denominator.bit_length()     # 2^(j-1) < X < 2^(j+1)
    k = max(1, -(-(j - 1) // v) - 1)                               # <= the least k, and >= it - 3
    while k <= MAX_RAMP_HALVINGS and not ok(k):
        k += 1
    while k > 1 and ok(k - 1):
        k -= 1
    if k > MAX_RAMP_HALVINGS:
        raise Reject(f"question.eps: the ramp width needs more than {MAX_RAMP_HALVINGS} halvings")
    return Fraction(1, K << k)


def instance(q: dict) -> Instance:
    """The instance a parsed ``universality`` question describes (limits checked)."""
    d, n, p = q["d"], q["n"], q["p"]
    if d * n > 16:
        raise Reject(f"question: d n = {d * n} gives more than {MAX_CELLS} cells for every K >= 2")
    if p < 1 or p.numerator > 64 or p.denominator > 16:
        raise Reject(f"question.p: expected a rational p = u/v >= 1 with u <= 64, v <= 16, found {fmt(p)}")
    if q["target"] not in TARGET_NAMES:
        raise Reject(f"question.target: expected one of {list(TARGET_NAMES)}, found {q['target']!r}"[:200])
    if (q["seed"] is None) != (q["target"] != "relu-net"):
        raise Reject("question.seed: required for the relu-net target and absent for the others")
    K = _grid(q, d * n)
    return Instance(d, n, q["lipschitz"], p, q["eps"], q["target"], q["seed"], q["temperature"], K,
                    _ramp(q["eps"], p, d * n, K))


# =========================================================================== targets

def _clip01(v: Fraction) -> Fraction:
    return min(max(v, Fraction(0)), Fraction(1))


def _op_norm(W: list) -> Fraction:
    """max(||W||_1, ||W||_inf) >= ||W||_{p -> p} for every p >= 1 (Riesz-Thorin)."""
    cols = max(sum(abs(r[j]) for r in W) for j in range(len(W[0])))
    return max(cols, max(sum(abs(x) for x in r) for r in W))


def _relu_net(inst: Instance):
    """clip(1/2 + (L / Lambda)(net(X) - net(1/2))), net = W2 relu(W1 x + b1) with dyadic weights
    drawn from numpy's default_rng(seed); Lipschitz (L / Lambda) Lambda."""
    dn, rng = inst.dn, np.random.default_rng(inst.seed)

    def draw(shape, scale):
        a = rng.normal(0, scale, shape)
        return [Fraction(int(round(float(v) * 16)), 16) for v in a.reshape(-1)], a.shape
    (w1, _), (b1, _), (w2, _) = draw((8, dn), 1.5), draw((8,), 0.5), draw((dn, 8), 1.0)
    W1 = [w1[k * dn:(k + 1) * dn] for k in range(8)]
    W2 = [w2[e * 8:(e + 1) * 8] for e in range(dn)]
    lam = _op_norm(W1) * _op_norm(W2)
    lam = lam if lam != 0 else Fraction(1)
    scale = inst.L / lam

    def net(x):
        h = [max(sum(a * b for a, b in zip(W1[k], x)) + b1[k], Fraction(0)) for k in range(8)]
        return [sum(a * b for a, b in zip(W2[e], h)) for e in range(dn)]
    ref = net([Fraction(1, 2)] * dn)

    def f(x):
        return [_clip01(Fraction(1, 2) + scale * (y - r)) for y, r in zip(net(x), ref)]
    return f, scale * lam


def target_values(inst: Instance):
    """(f, Lipschitz constant of f in the entry-wise p-norm, every p >= 1)."""
    dn, d, n, L, half = inst.dn, inst.d, inst.n, inst.L, Fraction(1, 2)
    if inst.target == "relu-net":
        return _relu_net(inst)
    if inst.target == "token-mix":
        # clip(1/2 + L (M x - 1/2)) with M doubly stochastic: ||M||_1 = ||M||_inf = 1
        perm = [((e // d + 1) % n) * d + e % d for e in range(dn)] if n >= 2 else [(e + 1) % dn for e in range(dn)]
        return (lambda x: [_clip01(half + L * ((x[e] + x[perm[e]]) / 2 - half)) for e in range(dn)]), L
    perm = [(e + d) % dn for e in range(dn)] if n >= 2 else [(e + 1) % dn for e in range(dn)]
    a = 2 * L / 3   # smoothstep 3v^2 - 2v^3 has slope <= 3/2 on [0, 1]

    def smooth(x):
        vs = [_clip01(x[perm[e]]) for e in range(dn)]
        return [_clip01(half + a * (3 * v * v - 2 * v * v * v - half)) for v in vs]
    return smooth, L


def _digits(c: int, K: int, dn: int) -> list:
    out = []
    for _ in range(dn):
        out.append(c % K)
        c //= K
    return out


def lookup_prompt(inst: Instance, f) -> list:
    """P_f: token n c + s holds fbar(c) at output position s, fbar = floor(K f(corner)) / K
    (clipped to K - 1)."""
    K, d, n, dn = inst.K, inst.d, inst.n, inst.dn
    P = []
    for c in range(inst.N):
        vals = f([Fraction(k, K) for k in _digits(c, K, dn)])
        idx = [min(math.floor(v * K), K - 1) for v in vals]
        P.extend([Fraction(idx[s * d + i], K) for i in range(d)] for s in range(n))
    return P


# =========================================================================== inputs

def _network(obj, inst: Instance):
    """(CModel, input positions n x d, prompt positions m_p x d) from the ``network`` input."""
    fields(obj, "inputs.network", {"format", "model", "pos_input", "pos_prompt"})
    if obj["format"] != NETWORK_FORMAT:
        raise Reject(f"inputs.network.format: expected {NETWORK_FORMAT!r}, found {obj['format']!r}"[:200])
    model = model_from_obj(obj["model"])
    require_plain(model, None, "universality-dp-bound")
    if model.d != inst.d:
        raise Reject(f"inputs.network.model.d: expected the question's d = {inst.d}, found {model.d}")
    if model.causal:
        raise Reject("inputs.network.model.causal: expected false (g reads the whole sequence)")
    kind = "hardmax" if inst.T is None else "softmax"
    for li, la in enumerate(model.layers):
        if la.kind != kind:
            raise Reject(f"inputs.network.model.layers[{li}]: expected {kind} attention (the question's "
                         f"temperature), found {la.kind}")
    pin = matrix(obj["pos_input"], "inputs.network.pos_input", inst.n, inst.d)
    ppr = matrix(obj["pos_prompt"], "inputs.network.pos_prompt", inst.m_p, inst.d)
    return model, pin, ppr


def _prompt(obj, inst: Instance, f) -> list:
    fields(obj, "inputs.prompt", {"format", "tokens"})
    if obj["format"] != PROMPT_FORMAT:
        raise Reject(f"inputs.prompt.format: expected {PROMPT_FORMAT!r}, found {obj['format']!r}"[:200])
    P = matrix(obj["tokens"], "inputs.prompt.tokens", inst.m_p, inst.d)
    want = lookup_prompt(inst, f)
    for j, (got, exp) in enumerate(zip(P, want)):
        if got != exp:
            raise Reject(f"inputs.prompt.tokens[{j}]: expected P_f's token {[fmt(x) for x in exp]} for the "
                         f"{inst.target} target, found {[fmt(x) for x in got]}"[:300])
    return P


# =========================================================================== layers

def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


def _den(vals) -> int:
    D = 1
    for v in vals:
        D = _lcm(D, Fraction(v).denominator)
        if D.bit_length() > MAX_STATE_BITS:
            raise Reject(f"evaluation: a common denominator of more than {MAX_STATE_BITS} bits (beyond the "
                         "checker's limit for the exact evaluation)")
    return D


def _ints(vals) -> tuple:
    D = _den(vals)
    return [int(Fraction(v) * D) for v in vals], D


def _matmul(A: list, B: list) -> list:
    return [[sum((a * B[k][j] for k, a in enumerate(row)), Fraction(0)) for j in range(len(B[0]))] for row in A]


def _head(h: dict, T: Optional[Fraction], where: str) -> Optional[dict]:
    """A head as its rank-1 score factors: score(a <- b) = (v . z_a)(u . z_b) (divided by T),
    with W_ov = W_o W_v; None when W_ov = 0 (the head adds nothing)."""
    Wov = _matmul(h["W_o"].rows(), h["W_v"].rows())
    if not any(x for r in Wov for x in r):
        return None
    M = _matmul([list(c) for c in zip(*h["W_q"].rows())], h["W_k"].rows())   # z_a^T M z_b
    nz = [(i, j) for i, r in enumerate(M) for j, x in enumerate(r) if x]
    if not nz:
        raise Reject(f"{where}: W_q^T W_k = 0 with W_o W_v != 0 (uniform attention) is not supported")
    i0, j0 = nz[0]
    u = [x / (T or 1) for x in M[i0]]
    v = [M[i][j0] / M[i0][j0] for i in range(len(M))]
    if any(M[i][j] != v[i] * M[i0][j] for i in range(len(M)) for j in range(len(M))):
        raise Reject(f"{where}: the score matrix W_q^T W_k has rank > 1 (not supported)")
    ui, du = _ints(u)
    vi, dv = _ints(v)
    return {"Wov": Wov, "u": u, "v": v, "ui": ui, "du": du, "vi": vi, "dv": dv,
            "wnorm": max(sum(abs(x) for x in r) for r in Wov)}


def _prep(layer, T: Optional[Fraction], li: int) -> dict:
    """Sparse MLP units (reading row, bias, written outputs), b_2, the heads, and the MLP's
    Lipschitz constant in the max-norm: 1 + max_i sum_k |W_2[i,k]| ||W_1[k,:]||_1."""
    W1, W2 = layer.W_1.rows(), layer.W_2.rows()
    units = []
    for k, row in enumerate(W1):
        outs = [(i, W2[i][k]) for i in range(len(W2)) if W2[i][k]]
        if outs:
            units.append(([(j, w) for j, w in enumerate(row) if w], layer.b_1[k], outs))
    d = len(W2)
    lip = 1 + max((sum(abs(co) * sum(abs(w) for _, w in row) for row, _, outs in units for i2, co in outs
                       if i2 == i) for i in range(d)), default=Fraction(0))
    heads = [_head(h, T, f"inputs.network.model.layers[{li}].heads[{j}]") for j, h in enumerate(layer.heads)]
    pr = {"units": units, "b2": list(layer.b_2), "heads": [h for h in heads if h], "lip": Fraction(lip), "d": d}
    pr["int_units"] = _mlp_units(pr)
    return pr


def _check_clipping(pr: dict) -> None:
    """Every output of the last MLP lies in [0, 1] for every input: each unit reads and writes
    one coordinate i, each coordinate's map z + b_2 + sum co relu(w z + b) has flat tails and
    values in [0, 1] at its breakpoints (so everywhere)."""
    per = {i: [] for i in range(pr["d"])}
    for row, b, outs in pr["units"]:
        if len(row) != 1 or len(outs) != 1 or row[0][0] != outs[0][0]:
            raise Reject("inputs.network: the last MLP is not coordinate-wise, so g's range [0, 1] is not certified")
        per[row[0][0]].append((row[0][1], b, outs[0][1]))
    for i, us in per.items():
        if any(w == 0 for w, _, _ in us):
            raise Reject(f"inputs.network: a unit of the last MLP reads coordinate {i} with weight 0")
        brk = sorted({-b / w for w, b, _ in us})
        left = 1 + sum(co * w for w, _, co in us if w < 0)
        right = 1 + sum(co * w for w, _, co in us if w > 0)
        vals = _values_at_breakpoints(us, brk, pr["b2"][i])
        if not brk or left != 0 or right != 0 or not all(0 <= v <= 1 for v in vals):
            raise Reject(f"inputs.network: output coordinate {i} of the last MLP is not certified to lie in [0, 1]")


def _values_at_breakpoints(us: list, brk: list, b2) -> list:
    """``z + b2 + sum co relu(w z + b)`` at each breakpoint z (ascending), exactly, in one sweep:
    the units active just left of z are those with w < 0 whose breakpoint is >= z and those with
    w > 0 whose breakpoint is < z; a unit whose breakpoint is z adds exactly 0 there either way."""
    slope = sum((co * w for w, _, co in us if w < 0), Fraction(0))
    icpt = sum((co * b for w, b, co in us if w < 0), Fraction(0))
    events: dict = {}
    for w, b, co in us:
        events.setdefault(-b / w, []).append((w, b, co))
    vals = []
    for z in brk:
        vals.append(z + b2 + slope * z + icpt)
        for w, b, co in events[z]:          # crossing z: w > 0 switch on, w < 0 switch off
            sg = 1 if w > 0 else -1
            slope += sg * co * w
            icpt += sg * co * b
    return vals


# =========================================================================== exact evaluation

def _affine_mlp(pr: dict, z: list, mid: list, half: list) -> list:
    """The residual MLP on affine forms [const, c_1..c_d] of one token's own coordinates over a
    box (centre ``mid``, half-widths ``half``); every ReLU must keep one sign on the box."""
    nv = len(mid)
    out = [list(f) for f in z]
    for i in range(pr["d"]):
        out[i][0] += pr["b2"][i]
    for row, b, outs in pr["units"]:
        pre = [b] + [Fraction(0)] * nv
        for j, w in row:
            pre = [a + w * c for a, c in zip(pre, z[j])]
        cen = pre[0] + sum(c * m for c, m in zip(pre[1:], mid))
        rad = sum(abs(c) * h for c, h in zip(pre[1:], half))
        if cen + rad <= 0:
            continue
        if cen - rad < 0:
            raise Reject("evaluation: a ReLU of a token-wise layer changes sign inside a flat box")
        for i, co in outs:
            out[i] = [a + co * c for a, c in zip(out[i], pre)]
    return out


def _input_token(preps: list, pos: list, box: list) -> list:
    """An input token (its box plus its positional vector) through the token-wise layers; it must
    come out constant on the box."""
    mid = [(lo + hi) / 2 for lo, hi in box]
    half = [(hi - lo) / 2 for lo, hi in box]
    d = len(box)
    tok = [[Fraction(pos[i])] + [Fraction(int(i == j)) for j in range(d)] for i in range(d)]
    for pr in preps:
        tok = _affine_mlp(pr, tok, mid, half)
    if any(any(f[1:]) for f in tok):
        raise Reject("evaluation: an input token is not constant on its flat box after the token-wise layers")
    return [f[0] for f in tok]


#: |integers| below this are computed in int64 (every result's magnitude is bounded first);
#: larger ones as Python integers (numpy object arrays): exact either way
INT64_SAFE = 1 << 62


def _typed(Z: np.ndarray, bound: int) -> np.ndarray:
    """Z as int64 when every value an operation produces is shown below 2^62, else as Python ints
    (refused beyond MAX_STATE_BITS bits)."""
    if bound < INT64_SAFE:
        return Z.astype(np.int64)
    if int(bound).bit_length() > MAX_STATE_BITS:
        raise Reject(f"evaluation: integers of more than {MAX_STATE_BITS} bits (beyond the checker's limit for "
                     "the exact evaluation)")
    return Z.astype(object)


def _absmax(Z: np.ndarray) -> int:
    return int(np.max(np.abs(Z))) if Z.size else 0


def _to_int(rows: list) -> tuple:
    D = _den(x for r in rows for x in r)
    Z = np.array([[int(x * D) for x in r] for r in rows], dtype=object)
    return _typed(Z, _absmax(Z)), D


def _mlp_units(pr: dict) -> tuple:
    """The MLP as integers: per unit (den, bias * den, [(j, w * den)], [(i, co * L / den)]), and L."""
    L, units = _den(pr["b2"]), []
    for row, b, outs in pr["units"]:
        den = _den([b] + [w for _, w in row])
        units.append([den, int(b * den), [(j, int(w * den)) for j, w in row], outs])
        for _, co in outs:
            L = _lcm(L, den * co.denominator)
    for u in units:
        u[3] = [(i, int(co * L / u[0])) for i, co in u[3]]
    return units, L


def _mlp_int(pr: dict, Z: np.ndarray, D: int) -> tuple:
    """The residual MLP exactly on every row of Z / D; returns (Z', D')."""
    units, L = pr["int_units"]
    B = _absmax(Z)
    pre_b = [abs(bn) * D + sum(abs(a) for _, a in row) * B for _, bn, row, _ in units]
    b2 = [int(x * D * L) for x in pr["b2"]]
    bound = B * L + max(abs(x) for x in b2) + sum(pb * sum(abs(c) for _, c in outs)
                                                  for pb, (_, _, _, outs) in zip(pre_b, units))
    coefs = [L] + [abs(a) for _, _, row, _ in units for _, a in row] + [abs(c) for *_, outs in units for _, c in outs]
    Z = _typed(Z, max([bound] + pre_b + coefs))
    out = Z * L
    for i in range(pr["d"]):
        out[:, i] += b2[i]
    for _, bn, row, outs in units:
        pre = np.full(Z.shape[0], bn * D, dtype=Z.dtype)
        for j, a in row:
            pre += a * Z[:, j]
        pre = np.where(pre > 0, pre, 0).astype(Z.dtype)
        for i, c in outs:
            out[:, i] += c * pre
    return out, D * L


def _lin(Z: np.ndarray, coef: list) -> np.ndarray:
    """Z . coef per row, exactly."""
    Z = _typed(Z, max(_absmax(Z) * sum(abs(c) for c in coef), max(abs(c) for c in coef)))
    return Z.dot(np.array(coef, dtype=Z.dtype))


def _exp2_neg(G: Fraction) -> Fraction:
    """An upper bound on exp(-G), G > 0: e^-G <= 2^(-10 G / 7) since 7 >= 10 ln 2."""
    return Fraction(1, 1 << min(math.floor(10 * G / 7), EXP2_CAP))


def _softmax_radius(hd: dict, kap: np.ndarray, lam: np.ndarray, best: dict, D: int, e: Fraction) -> Fraction:
    """How far softmax weights put a head's output from the hardmax one: the non-best weights sum
    to <= (m - 1) exp(-G), G = (|lambda| - ||v||_1 e)(key gap - 2 ||u||_1 e) (states within e)."""
    m = len(kap)
    n1u, n1v = sum(abs(x) for x in hd["u"]), sum(abs(x) for x in hd["v"])
    rho = Fraction(0)
    if np.any(lam == 0):
        raise Reject("evaluation: a softmax query with zero score (uniform weights) cannot be bounded")
    for sgn in (1, -1):
        qs = lam[np.sign(lam) == sgn]
        if not qs.size or m < 2:
            continue
        if len(best[sgn]) != 1:
            raise Reject("evaluation: a tie for the largest softmax score; the softmax error cannot be bounded")
        b0 = int(best[sgn][0])
        others = np.delete(kap, b0)
        gap = Fraction(abs(int(kap[b0]) - int(others.max() if sgn > 0 else others.min())), D * hd["du"])
        lmin = Fraction(int(np.min(np.abs(qs))), D * hd["dv"])
        if lmin - n1v * e <= 0 or gap - 2 * n1u * e <= 0:
            raise Reject("evaluation: a softmax score margin is too small for the perturbation bound")
        rho = max(rho, (m - 1) * _exp2_neg((lmin - n1v * e) * (gap - 2 * n1u * e)))
    return rho


def _attend(pr: dict, Z: np.ndarray, D: int, queries: list, e: Fraction, softmax: bool) -> tuple:
    """Hardmax attention of the rank-1 heads for the query rows: a list of (rows, vector added to
    each), and the radius added for softmax (0 for hardmax)."""
    m, d = Z.shape
    groups, err = [], Fraction(0)
    Zo = Z.astype(object)
    for hd in pr["heads"]:
        kap, lam = _lin(Z, hd["ui"]), _lin(Z[queries], hd["vi"])
        best = {1: np.flatnonzero(kap == kap.max()), -1: np.flatnonzero(kap == kap.min()), 0: np.arange(m)}
        sign = np.sign(lam)
        for sgn in (1, -1, 0):
            rows = [a for a, s in zip(queries, sign.tolist()) if s == sgn]
            if rows:
                keys = best[sgn]
                tot = Zo[keys].sum(axis=0)
                mean = [Fraction(int(tot[j]), D * len(keys)) for j in range(d)]
                groups.append((rows, [sum(a * x for a, x in zip(r, mean)) for r in hd["Wov"]]))
        if softmax:
            zmax = Fraction(_absmax(Z), D)
            rho = _softmax_radius(hd, kap, lam, best, D, e)
            err += hd["wnorm"] * e + rho * 2 * hd["wnorm"] * (zmax + e)
    return groups, err


def _add(Z: np.ndarray, D: int, groups: list) -> tuple:
    L = _den(x for _, vec in groups for x in vec)
    L //= math.gcd(L, D)
    D2 = D * L
    adds = [(np.array(rows), [int(x * D2) for x in vec]) for rows, vec in groups]
    Z = _typed(Z, max(_absmax(Z), 1) * L + sum(max(abs(x) for x in vec) for _, vec in adds))
    out = Z * L
    for idx, vec in adds:
        for i, x in enumerate(vec):
            if x:
                out[idx, i] += x
    return out, D2


def _mlp_frac(pr: dict, z: list) -> list:
    out = [a + b for a, b in zip(z, pr["b2"])]
    for row, b, outs in pr["units"]:
        pre = b + sum(w * z[j] for j, w in row)
        if pre > 0:
            for i, co in outs:
                out[i] += co * pre
    return out


def cell_box(c: int, inst: Instance) -> list:
    """The flat box of cell c: per entry e = t d + i, (lo, hi)."""
    K = inst.K
    return [(Fraction(k, K), Fraction(1) if k == K - 1 else Fraction(k + 1, K) - inst.w)
            for k in _digits(c, K, inst.dn)]


def _split(model, T) -> tuple:
    """(prepared layers, number of leading token-wise layers)."""
    preps = [_prep(la, T, li) for li, la in enumerate(model.layers)]
    npref = 0
    while npref < len(preps) and not preps[npref]["heads"]:
        npref += 1
    if npref == len(preps):
        raise Reject("inputs.network: no attention layer reads the prompt")
    if npref == 0:
        raise Reject("inputs.network: no token-wise layer makes the input constant on the flat boxes")
    return preps, npref


def _cell(preps: list, npref: int, Z: np.ndarray, D: int, m_p: int, n: int, softmax: bool) -> tuple:
    """Outputs at the n input positions (entry e = t d + i) and their radius eta for one cell,
    from the exact states Z / D after the token-wise layers."""
    e = Fraction(0)
    for li in range(npref, len(preps)):
        pr, last = preps[li], li == len(preps) - 1
        queries = list(range(m_p, m_p + n)) if last else list(range(m_p + n))
        groups, err = _attend(pr, Z, D, queries, e, softmax)
        e += err
        if not last:
            Z, D = _add(Z, D, groups)
            Z, D = _mlp_int(pr, Z, D)
            e *= pr["lip"]
    outs = []
    for a in queries:
        z = [Fraction(int(Z[a, i]), D) for i in range(pr["d"])]
        for rows, vec in groups:
            if a in rows:
                z = [x + y for x, y in zip(z, vec)]
        outs.extend(_mlp_frac(pr, z))
    return outs, e * pr["lip"]


# =========================================================================== windowed evaluation

def _sign(x) -> int:
    return (x > 0) - (x < 0)


def _dot(a: list, z: list) -> Fraction:
    return sum((x * y for x, y in zip(a, z) if x), Fraction(0))


def _window_shape(preps: list, npref: int, softmax: bool) -> bool:
    """Facts 1, 2 and 4 of :func:`_window_facts` (those that need no prompt row)."""
    if softmax or len(preps) != npref + 2:
        return False
    G, F = preps[npref], preps[-1]
    for row, _, outs in G["units"]:
        if len(row) != 1 or row[0][0] != 0 or len(outs) != 1 or outs[0][0] != 0:
            return False
    return bool(F["heads"]) and not any(h["u"][0] == 0 or any(h["u"][1:]) for h in F["heads"])


def _window_facts(preps: list, npref: int, Zp: np.ndarray, Dp: int, softmax: bool):
    """The facts under which one cell costs O(log m_p) instead of O(m_p) (``proofs/universality.md``,
    "The windowed evaluation"), established here exactly from the network and the prompt rows'
    states Zp / Dp after the token-wise layers; None when one fails (then the chain evaluation
    runs for d = 1, else the full one, each within its own work limit).

    1. hardmax, and after the token-wise layers exactly two attention layers: G, then the last F;
    2. every unit of G's MLP reads only coordinate 0 and writes only coordinate 0 (so on every
       row coordinate 0 becomes phi(z_0), phi(z) = z + b2_0 + sum co relu(w z + b), continuous and
       affine between consecutive breakpoints -b/w, and coordinate i >= 1 becomes z_i + b2_i);
    3. every head of G has the same query sign on every prompt row (so all prompt rows gain one
       vector a in a cell: the arg-max set of a head is shared by every query of one sign);
    4. every head of F has its key vector on coordinate 0 only (key = u_0 phi on prompt rows)."""
    if not _window_shape(preps, npref, softmax):
        return None
    G, F = preps[npref], preps[-1]
    d = G["d"]
    # the full evaluation's bound on denominators (MAX_STATE_BITS) holds here too, so that the
    # work estimate of a cell stays an estimate of its cost
    for h in G["heads"] + F["heads"]:
        _den(x for r in h["Wov"] for x in r)
    _den([x for row, b, outs in G["units"] for x in (row[0][1], b, outs[0][1])] + list(G["b2"]))
    Zo = [[int(x) for x in r] for r in Zp.astype(object).tolist()]
    heads = []
    for h in G["heads"]:
        lam = {_sign(sum(a * r[j] for j, a in enumerate(h["vi"]) if a)) for r in Zo}
        if len(lam) != 1:
            return None
        kap = [sum(a * r[j] for j, a in enumerate(h["ui"]) if a) for r in Zo]
        top, bot = max(kap), min(kap)
        ext = {}
        for sg, best in ((1, top), (-1, bot)):
            sel = [r for r, k in zip(Zo, kap) if k == best]
            ext[sg] = (Fraction(best, Dp * h["du"]), len(sel), [Fraction(sum(r[i] for r in sel), Dp) for i in range(d)])
        heads.append((h, lam.pop(), ext))
    order = sorted(range(len(Zo)), key=lambda j: Zo[j][0])
    xs = [Zo[j][0] for j in order]
    cum = [list(itertools.accumulate((Zo[j][i] for j in order), initial=0)) for i in range(d)]
    units = [(row[0][1], b, outs[0][1]) for row, b, outs in G["units"]]
    brk = sorted({-b / w for w, b, _ in units})
    inner = [brk[0] - 1] + [(a + b) / 2 for a, b in zip(brk, brk[1:])] + [brk[-1] + 1] if brk else [Fraction(0)]
    pieces = []            # phi(z) = c + s z on [brk[k - 1], brk[k]) (k-th piece)
    for z in inner:
        on = [(w, b, co) for w, b, co in units if w * z + b > 0]
        pieces.append((1 + sum((co * w for w, _, co in on), Fraction(0)),
                       G["b2"][0] + sum((co * b for _, b, co in on), Fraction(0))))
    return {"d": d, "Dp": Dp, "m_p": len(Zo), "G": G, "F": F, "heads": heads, "xs": xs, "cum": cum,
            "brk": brk, "pieces": pieces, "total": [Fraction(c[-1], Dp) for c in cum]}


def _window_best(W: dict, toks: list, kin: list, sg: int, prompt: tuple, total: list) -> tuple:
    """(count, sum of states) of the rows a query of sign sg attends to: the prompt rows'
    extreme ``prompt`` = (key, count, sum) joined with the input rows of the same key."""
    if sg == 0:
        return W["m_p"] + len(toks), [t + sum((z[i] for z in toks), Fraction(0)) for i, t in enumerate(total)]
    kp, cp, sp = prompt
    best = max([kp] + kin) if sg > 0 else min([kp] + kin)
    cnt, tot = (cp, list(sp)) if kp == best else (0, [Fraction(0)] * W["d"])
    for z, k in zip(toks, kin):
        if k == best:
            cnt += 1
            tot = [a + b for a, b in zip(tot, z)]
    return cnt, tot


def _window_cell(W: dict, toks: list) -> list:
    """One cell's outputs (entry e = t d + i) from its input rows' states after the token-wise
    layers, under the facts of :func:`_window_facts`; equal to :func:`_cell` (hardmax)."""
    d, G, F, Dp, xs, cum = W["d"], W["G"], W["F"], W["Dp"], W["xs"], W["cum"]
    zero = [Fraction(0)] * d
    shift, add_in = list(zero), [list(zero) for _ in toks]
    for h, psg, ext in W["heads"]:
        kin = [_dot(h["u"], z) for z in toks]
        qsg = [_sign(_dot(h["v"], z)) for z in toks]
        for sg in sorted({psg, *qsg}):
            cnt, tot = _window_best(W, toks, kin, sg, ext.get(sg), W["total"])
            vec = [_dot(r, tot) / cnt for r in h["Wov"]]
            if sg == psg:
                shift = [a + b for a, b in zip(shift, vec)]
            add_in = [[a + b for a, b in zip(ad, vec)] if q == sg else ad for ad, q in zip(add_in, qsg)]
    after = [_mlp_frac(G, [a + b for a, b in zip(z, ad)]) for z, ad in zip(toks, add_in)]
    s = shift[0]
    other = [shift[i] + G["b2"][i] for i in range(d)]
    # prompt row j (sorted by x_j) has x_j + s in the k-th piece of phi iff bnd[k] <= j < bnd[k + 1]
    bnd = [0] + [bisect.bisect_left(xs, math.ceil((b - s) * Dp)) for b in W["brk"]] + [W["m_p"]]
    rng = [(lo, hi, sl, c0) for lo, hi, (sl, c0) in zip(bnd, bnd[1:], W["pieces"]) if lo < hi]

    def span(lo: int, hi: int) -> list:
        return [Fraction(c[hi] - c[lo], Dp) for c in cum]
    phi_ext = {}
    for sg in (1, -1):
        best, runs = None, []
        for lo, hi, sl, c0 in rng:
            if sl == 0:
                val, run = c0, (lo, hi)
            elif (sl > 0) == (sg > 0):     # the extreme is at the largest x of the range
                x = xs[hi - 1]
                val, run = c0 + sl * (Fraction(x, Dp) + s), (bisect.bisect_left(xs, x, lo, hi), hi)
            else:
                x = xs[lo]
                val, run = c0 + sl * (Fraction(x, Dp) + s), (lo, bisect.bisect_right(xs, x, lo, hi))
            if best is None or (sg > 0 and val > best) or (sg < 0 and val < best):
                best, runs = val, [run]
            elif val == best:
                runs.append(run)
        cnt = sum(hi - lo for lo, hi in runs)
        sums = [sum((span(lo, hi)[i] for lo, hi in runs), Fraction(0)) for i in range(d)]
        phi_ext[sg] = (best, cnt, [best * cnt] + [sums[i] + cnt * other[i] for i in range(1, d)])
    total = list(zero)           # every prompt row's state after G, summed (for zero queries)
    for lo, hi, sl, c0 in rng:
        sm, k = span(lo, hi), hi - lo
        total = [total[0] + k * c0 + sl * (sm[0] + k * s)] + [total[i] + sm[i] + k * other[i] for i in range(1, d)]
    add_out = [list(zero) for _ in toks]
    for h in F["heads"]:
        kin = [_dot(h["u"], z) for z in after]
        qsg = [_sign(_dot(h["v"], z)) for z in after]
        u0 = h["u"][0]
        for sg in sorted(set(qsg)):
            prompt = None
            if sg:
                val, cnt, tot = phi_ext[sg if u0 > 0 else -sg]
                prompt = (u0 * val, cnt, tot)
            cnt, tot = _window_best(W, after, kin, sg, prompt, total)
            vec = [_dot(r, tot) / cnt for r in h["Wov"]]
            add_out = [[a + b for a, b in zip(ad, vec)] if q == sg else ad for ad, q in zip(add_out, qsg)]
    outs = []
    for z, ad in zip(after, add_out):
        outs.extend(_mlp_frac(F, [a + b for a, b in zip(z, ad)]))
    return outs


# =========================================================================== chain evaluation (d = 1)

def _chain_layer(pr: dict) -> dict:
    """A post-prefix layer of a d = 1 network as scalars: its heads (u, v, W_ov) and its MLP
    phi(z) = z + b2 + sum co relu(w z + b) as the sorted distinct breakpoints -b/w and, per piece
    k (z in [brk[k - 1], brk[k]), the two unbounded ends included), phi's slope and intercept there.
    The table comes from one sweep over the breakpoints (as :func:`_values_at_breakpoints`): left of
    every breakpoint the units with w < 0 are on; crossing a breakpoint switches its units with
    w > 0 on and those with w < 0 off; units with w = 0 add the constant co relu(b) everywhere. By
    continuity the affine formula of piece k also holds at its left end, where the switching units
    are 0, so phi equals that formula on the whole closed piece."""
    heads = [(h["u"][0], h["v"][0], h["Wov"][0][0]) for h in pr["heads"]]
    _den(x for hd in heads for x in hd)
    units = [(row[0][1] if row else Fraction(0), b, outs[0][1]) for row, b, outs in pr["units"]]
    _den([x for un in units for x in un] + list(pr["b2"]))
    events: dict = {}
    slope, icpt = Fraction(1), Fraction(pr["b2"][0])
    for w, b, co in units:
        if w < 0 or (w == 0 and b > 0):
            slope += co * w
            icpt += co * b
        if w:
            events.setdefault(-b / w, []).append((w, b, co))
    brk = sorted(events)
    table = [(slope, icpt)]
    for t in brk:
        for w, b, co in events[t]:
            sg = 1 if w > 0 else -1
            slope += sg * co * w
            icpt += sg * co * b
        table.append((slope, icpt))
    return {"heads": heads, "brk": brk, "table": table, "pr": pr,
            "lg": max(1, len(brk).bit_length()), "iunits": len(heads) + max(1, len(brk).bit_length()) + 2}


def _chain_facts(preps: list, npref: int, Zp: np.ndarray, Dp: int, work: int) -> dict:
    """What the chain evaluation needs once per run (``proofs/universality.md``, "The chain
    evaluation"): the prompt rows' scalar states x_j = Zp[j] / Dp after the token-wise layers,
    sorted as integers over Dp with prefix sums, and every later layer as :func:`_chain_layer`.
    ``work`` is what has been charged before any cell; the cells draw on the rest of
    MAX_CHAIN_WORK (:func:`_chain_charge`)."""
    xs = sorted(int(r[0]) for r in Zp.astype(object).tolist())
    return {"Dp": Dp, "m_p": len(xs), "xs": xs, "cum": list(itertools.accumulate(xs, initial=0)),
            "lgm": max(1, len(xs).bit_length()), "layers": [_chain_layer(pr) for pr in preps[npref:]],
            "left": [MAX_CHAIN_WORK - work]}


def _chain_charge(C: dict, units: int) -> None:
    """Draw ``units`` work units from the run's budget; past MAX_CHAIN_WORK the check is refused
    (the number of pieces is only known as the evaluation goes)."""
    C["left"][0] -= units
    if C["left"][0] < 0:
        raise Reject(f"evaluation: the chain evaluation needs more than the checker's limit of {MAX_CHAIN_WORK} "
                     "work units (MAX_CHAIN_WORK: the prompt rows' states split into too many pieces)")


def _chain_bits(q: Fraction) -> Fraction:
    """q, refused when its numerator or denominator has more than MAX_STATE_BITS bits (the full
    evaluation's limit on its integers, which keeps every rational operation of a cell bounded)."""
    if q.numerator.bit_length() > MAX_STATE_BITS or q.denominator.bit_length() > MAX_STATE_BITS:
        raise Reject(f"evaluation: a state of the chain evaluation has more than {MAX_STATE_BITS} bits (beyond "
                     "the checker's limit MAX_STATE_BITS for the exact evaluation)")
    return q


def _chain_pick(q: int, u: Fraction) -> int:
    """Which state a hardmax query of sign q (the sign of v z_query) reads through a head with key
    u z: 1 the largest z, -1 the smallest (the largest key is the largest z for u > 0 and the
    smallest for u < 0; with d = 1 every row attaining it has that state, which is their mean),
    0 the mean of all rows (sign 0, or u = 0: all keys equal)."""
    if q == 0 or u == 0:
        return 0
    return 1 if (q > 0) == (u > 0) else -1


def _chain_phi(L: dict, z: Fraction) -> Fraction:
    """The layer's MLP at z, exactly: the affine formula of the piece of z in its table."""
    sl, c0 = L["table"][bisect.bisect_right(L["brk"], z)]
    return sl * z + c0


def _chain_cell(C: dict, toks: list, trace: Optional[list] = None) -> list:
    """One cell's outputs (entry e = t, d = 1) from its input rows' states after the token-wise
    layers, equal to :func:`_cell` (hardmax) for every d = 1 network with rank-1 heads.

    The prompt rows' states are pieces (lo, hi, a, b): the rows lo <= i < hi of the sorted order
    have state a xs[i] + b (xs[i] = Dp x_i, an integer), non-empty, disjoint and covering all m_p
    rows; initially one piece (0, m_p, 1/Dp, 0). A state is monotone in i along a piece, so its
    extremes are at the piece's two ends and the rows where it crosses a value form one cut,
    found by binary search on xs with an exact ceiling or floor. ``trace``, when given, receives
    (pieces, input states) after every layer but the last (for tests)."""
    xs, cum, m_p, layers = C["xs"], C["cum"], C["m_p"], C["layers"]
    pieces = [(0, m_p, Fraction(1, C["Dp"]), Fraction(0))]
    zin = [_chain_bits(Fraction(t[0])) for t in toks]
    for li, L in enumerate(layers):
        last = li == len(layers) - 1
        _chain_charge(C, CHAIN_PIECE_UNITS * len(pieces) + CHAIN_ROW_UNITS * len(zin) * L["iunits"])
        if L["heads"]:
            # 1. extremes over every row (prompt pieces and input rows), each piece split where its
            #    state changes sign (the query sign of every head is sign(v) sign(z))
            ends, signed = [], []
            for lo, hi, a, b in pieces:
                za, zb = a * xs[lo] + b, a * xs[hi - 1] + b
                ends += (za, zb)
                if last:
                    continue
                sa, sb = _sign(za), _sign(zb)
                if sa == sb:
                    signed.append((lo, hi, a, b, sa))
                    continue
                r = -b / a                      # a != 0: the state is a (xs - r), zero at xs = r
                j0 = bisect.bisect_left(xs, math.ceil(r), lo, hi)
                j1 = bisect.bisect_right(xs, math.floor(r), lo, hi)
                _chain_charge(C, CHAIN_CUT_UNITS * C["lgm"])
                for s, t, sg in ((lo, j0, -_sign(a)), (j0, j1, 0), (j1, hi, _sign(a))):
                    if s < t:
                        signed.append((s, t, a, b, sg))
            # 2. a row whose state has sign sz gains sum_h W_ov (the state its query reads), every head
            #    reading the states before any addition
            need = {_sign(z) for z in zin} | {p[4] for p in signed}
            picks = {sz: [(wov, _chain_pick(_sign(v) * sz, u)) for u, v, wov in L["heads"]] for sz in need}
            ext = {1: max(ends + zin), -1: min(ends + zin)}
            if any(q == 0 for ps in picks.values() for _, q in ps):       # the mean of all m_p + n states
                tot = sum((a * (cum[hi] - cum[lo]) + b * (hi - lo) for lo, hi, a, b in pieces), Fraction(0))
                ext[0] = (tot + sum(zin, Fraction(0))) / (m_p + len(zin))
            add = {sz: sum((wov * ext[q] for wov, q in ps), Fraction(0)) for sz, ps in picks.items()}
            zin = [_chain_bits(z + add[_sign(z)]) for z in zin]
            if last:
                break
            pieces = [(lo, hi, a, _chain_bits(b + add[sg])) for lo, hi, a, b, sg in signed]
        elif last:
            break
        # 3. the MLP: split each piece where its state crosses a breakpoint of phi, compose the
        #    affine maps, merge neighbours with equal (a, b); the input rows by the same table
        brk, table = L["brk"], L["table"]
        _chain_charge(C, CHAIN_PIECE_UNITS * len(pieces) * L["lg"])
        out: list = []
        for lo, hi, a, b in pieces:
            ka = bisect.bisect_right(brk, a * xs[lo] + b)
            kb = bisect.bisect_right(brk, a * xs[hi - 1] + b)
            if ka == kb:
                parts = [(lo, hi, ka)]
            else:
                # a != 0; the rows with state >= t are a suffix (a > 0) or a prefix (a < 0)
                k0, k1 = min(ka, kb), max(ka, kb)
                _chain_charge(C, CHAIN_CUT_UNITS * C["lgm"] * (k1 - k0))
                if a > 0:
                    cuts = [bisect.bisect_left(xs, math.ceil((brk[k] - b) / a), lo, hi) for k in range(k0, k1)]
                    ks = range(k0, k1 + 1)
                else:
                    cuts = [bisect.bisect_right(xs, math.floor((brk[k] - b) / a), lo, hi)
                            for k in range(k1 - 1, k0 - 1, -1)]
                    ks = range(k1, k0 - 1, -1)
                bounds = [lo] + cuts + [hi]
                parts = [(s, t, k) for s, t, k in zip(bounds, bounds[1:], ks) if s < t]
            for s, t, k in parts:
                sl, c0 = table[k]
                na, nb = _chain_bits(sl * a), _chain_bits(sl * b + c0)
                if out and out[-1][2] == na and out[-1][3] == nb:
                    out[-1] = (out[-1][0], t, na, nb)
                else:
                    out.append((s, t, na, nb))
        pieces = out
        zin = [_chain_bits(_chain_phi(L, z)) for z in zin]
        if trace is not None:
            trace.append((list(pieces), list(zin)))
    return [_chain_phi(layers[-1], z) for z in zin]


def _work(preps: list, npref: int, inst: Instance) -> int:
    """The evaluation's work units (about 30-50 ns each): per cell a fixed 4096 and every row
    through every attention layer's heads and MLP units; per distinct input-token box (n K^d of
    them), its affine forms through the token-wise layers' units in rationals (256 each)."""
    rows = inst.m_p + inst.n
    att = sum(len(pr["units"]) + len(pr["heads"]) + 1 for pr in preps[npref:])
    pre = sum(len(pr["units"]) for pr in preps[:npref]) * (inst.d + 1) * 256
    return inst.N * (rows * att + 4096) + inst.n * inst.K ** inst.d * pre


def _window_work(preps: list, npref: int, inst: Instance) -> int:
    """The windowed evaluation's work units (same scale as :func:`_work`): per prompt row the
    token-wise layers' units, its sort, prefix sums and G's keys; per distinct input-token box its
    affine forms (as in :func:`_work`); once, the table of G's tent (every unit's sign at every
    piece, 2 WINDOW_CELL_UNITS per pair: a few microseconds in rationals); per cell
    WINDOW_CELL_UNITS for each piece of G's tent (a binary search and a few rational operations)
    and each unit and head of G and F (rational arithmetic on the n input rows)."""
    G, F = preps[npref], preps[-1]
    pieces = len({-b / row[0][1] for row, b, _ in G["units"]}) + 1
    table = pieces * len(G["units"]) * 2 * WINDOW_CELL_UNITS
    per_cell = (pieces + len(G["units"]) + len(F["units"]) + 4 * (len(G["heads"]) + len(F["heads"])))
    units = sum(len(pr["units"]) for pr in preps[:npref])
    rows = inst.m_p * (units + inst.d * (inst.m_p.bit_length() + 4) + 16 * len(G["heads"]))
    boxes = inst.n * inst.K ** inst.d * units * (inst.d + 1) * 256
    return inst.N * per_cell * inst.n * (inst.d + 1) * WINDOW_CELL_UNITS + rows + boxes + table


def _chain_work(preps: list, npref: int, inst: Instance) -> tuple:
    """The chain evaluation's work units (same scale as :func:`_work`): (before any cell, the
    least that the cells can need). Before: per prompt row the token-wise layers' units, its sort
    and prefix sums; per distinct input-token box its affine forms (as in :func:`_work`); each
    later layer's table (a sort of its units' breakpoints). Per cell at least one piece through
    every later layer, and the n input rows through its heads and units; the pieces beyond one
    and the cuts are charged as the cells run (:func:`_chain_cell`)."""
    units = sum(len(pr["units"]) for pr in preps[:npref])
    lg = max(1, inst.m_p.bit_length())
    rows = inst.m_p * (units + lg + 4)
    boxes = inst.n * inst.K ** inst.d * units * (inst.d + 1) * 256
    later = preps[npref:]
    table = sum((len(pr["units"]) + len(pr["heads"]) + 1) * (len(pr["units"]).bit_length() + 1)
                for pr in later) * CHAIN_ROW_UNITS
    per_cell = sum(CHAIN_PIECE_UNITS + CHAIN_ROW_UNITS * inst.n * (len(pr["heads"]) + 3) for pr in later)
    return rows + boxes + table, inst.N * per_cell


def evaluate_cells(model, pin: list, ppr: list, prompt: list, inst: Instance, method: str = "auto") -> tuple:
    """g([P, X]) on the flat box of every cell: (values per cell, eta per cell).  ``method``:
    "full" evaluates all m_p + n rows per cell (the reference); "window" the windowed evaluation
    (rejected when its facts fail); "chain" the chain evaluation (d = 1, hardmax, any number of
    attention layers; rejected otherwise); "auto" the windowed one when its facts hold, else the
    chain when d = 1 and hardmax, else the full one.  Each is refused beyond its own work limit
    (the chain's is a running count, since its number of pieces is only known as it goes)."""
    if method not in ("auto", "full", "window", "chain"):
        raise Reject(f"evaluation: unknown method {method!r}"[:200])
    preps, npref = _split(model, inst.T)
    _check_clipping(preps[-1])
    work = _work(preps, npref, inst)
    chain_ok = inst.d == 1 and inst.T is None
    if method == "chain" and not chain_ok:
        raise Reject("evaluation: the chain evaluation needs d = 1 and hardmax attention")
    shape = method in ("auto", "window") and _window_shape(preps, npref, inst.T is not None)
    if method == "window" and not shape:
        raise Reject("evaluation: the network does not have the shape of the windowed evaluation")
    chain = method == "chain" or (method == "auto" and chain_ok)     # when the window does not run
    wwork = _window_work(preps, npref, inst) if shape else None
    if not shape and not chain and work > MAX_WORK:
        raise Reject(f"evaluation: {inst.N} cells of {inst.m_p + inst.n} rows through this network need about "
                     f"{work} work units, beyond the checker's limit {MAX_WORK}")
    if shape and wwork > MAX_WINDOW_WORK:
        raise Reject(f"evaluation: the windowed evaluation of {inst.N} cells needs about {wwork} work units, "
                     f"beyond the checker's limit {MAX_WINDOW_WORK}")
    cwork = _chain_work(preps, npref, inst) if chain else None
    if chain and not shape and sum(cwork) > MAX_CHAIN_WORK:
        raise Reject(f"evaluation: the chain evaluation of {inst.N} cells needs at least {sum(cwork)} work units, "
                     f"beyond the checker's limit {MAX_CHAIN_WORK}")
    d, n = inst.d, inst.n
    Zp, Dp = _to_int([[a + b for a, b in zip(t, q)] for t, q in zip(prompt, ppr)])
    for pr in preps[:npref]:
        Zp, Dp = _mlp_int(pr, Zp, Dp)
    W = _window_facts(preps, npref, Zp, Dp, inst.T is not None) if shape else None
    if shape and W is None and not chain:
        if method == "window" or work > MAX_WORK:
            raise Reject("evaluation: a head of the gather layer gives the prompt rows different query signs, so "
                         f"the windowed evaluation does not apply, and the full one needs about {work} work units "
                         f"(the checker's limit is {MAX_WORK})")
    if W is None and chain and shape and sum(cwork) > MAX_CHAIN_WORK:
        raise Reject(f"evaluation: the windowed evaluation does not apply and the chain evaluation of {inst.N} "
                     f"cells needs at least {sum(cwork)} work units, beyond the checker's limit {MAX_CHAIN_WORK}")
    C = _chain_facts(preps, npref, Zp, Dp, cwork[0]) if W is None and chain else None
    cache: dict = {}
    values, etas = [], []
    for c in range(inst.N):
        box, toks = cell_box(c, inst), []
        for t in range(n):
            key = (t, tuple(box[t * d:(t + 1) * d]))
            if key not in cache:
                cache[key] = _input_token(preps[:npref], pin[t], list(key[1]))
            toks.append(cache[key])
        if W is not None:
            values.append(_window_cell(W, toks))
            etas.append(Fraction(0))
            continue
        if C is not None:
            values.append(_chain_cell(C, toks))
            etas.append(Fraction(0))
            continue
        Zi, Di = _to_int(toks)
        D = _lcm(Dp, Di)
        B = max(max(_absmax(Zp), 1) * (D // Dp), max(_absmax(Zi), 1) * (D // Di))
        Z = np.concatenate([_typed(Zp, B) * (D // Dp), _typed(Zi, B) * (D // Di)], axis=0)
        out, eta = _cell(preps, npref, Z, D, inst.m_p, n, inst.T is not None)
        values.append(out)
        etas.append(eta)
    return values, etas


# =========================================================================== the bound

def _subdivision(inst: Instance) -> int:
    """The refinement used when the plain bound fails: the largest s <= 16 with N s^(dn) <= 20000."""
    s = 1
    while s < MAX_SUB and inst.N * (s + 1) ** inst.dn <= MAX_SUBBOXES:
        s += 1
    return s


def _budgeted(budget: list):
    """rpow_up and rpow_down charged (bits of x^u / 64)^2 word operations each against budget[0];
    beyond it the check is refused."""
    def charge(x: Fraction, p: Fraction) -> None:
        x = Fraction(x)
        b = (x.numerator.bit_length() + x.denominator.bit_length()) * p.numerator + ROOT_BITS * p.denominator
        budget[0] -= (b // 64 + 1) ** 2
        if budget[0] < 0:
            raise Reject("bound: the exact powers and roots need more word operations than the checker's limit "
                         f"{MAX_POWER_WORK} (numbers of {b} bits)")

    def up(x, p):
        charge(x, p)
        return rpow_up(x, p)

    def down(x, p):
        charge(x, p)
        return rpow_down(x, p)
    return up, down


def _sums(inst: Instance, f, lip: Fraction, values: list, etas: list, sub: int,
          budget: Optional[list] = None) -> tuple:
    """Integrals over the flat boxes (each split into sub^(dn) equal sub-boxes) of upper bounds on
    ||f - g||_p^p with and without the softmax radius, of a lower bound, and the flat volume."""
    p, dn = inst.p, inst.dn
    rpow_up, rpow_down = _budgeted([MAX_POWER_WORK] if budget is None else budget)
    ip, dn_root = 1 / p, rpow_up(Fraction(dn), 1 / p)
    tot = totq = low = vol_sum = Fraction(0)
    radius: dict = {}
    for c in range(inst.N):
        box = cell_box(c, inst)
        widths = [(hi - lo) / sub for lo, hi in box]
        vol = math.prod(widths, start=Fraction(1))
        key = tuple(widths)
        if key not in radius:
            radius[key] = rpow_up(sum(rpow_up(wd / 2, p) for wd in widths), ip)
        r, et = radius[key], dn_root * etas[c]
        for j in range(sub ** dn):
            mid = [lo + (k + Fraction(1, 2)) * wd for (lo, _), k, wd in zip(box, _digits(j, sub, dn), widths)]
            diffs = [abs(a - b) for a, b in zip(f(mid), values[c])]
            a_up = rpow_up(sum(rpow_up(x, p) for x in diffs), ip)
            a_dn = rpow_down(sum(rpow_down(x, p) for x in diffs), ip)
            tot += vol * rpow_up(a_up + lip * r + et, p)
            totq += vol * rpow_up(a_up + lip * r, p)
            if a_dn - lip * r - et > 0:
                low += vol * rpow_down(a_dn - lip * r - et, p)
            vol_sum += vol
    return tot, totq, low, vol_sum


def derive_bounds(inst: Instance, f, lip: Fraction, values: list, etas: list) -> dict:
    """Upper and lower bounds on d_p and the split of the upper one (all exact rationals)."""
    p, dn, ip = inst.p, inst.dn, 1 / inst.p
    sub, budget = 1, [MAX_POWER_WORK]
    tot, totq, low, vol = _sums(inst, f, lip, values, etas, sub, budget)
    ramp_p = (1 - vol) * dn      # on the ramps f, g lie in [0, 1]^(dn)
    if not _pow_le(tot + ramp_p, inst.eps, p) and _subdivision(inst) > 1:
        sub = _subdivision(inst)
        tot, totq, low, _ = _sums(inst, f, lip, values, etas, sub, budget)
    B = tot + ramp_p
    bound = rpow_up(B, ip)
    soft = max(bound - rpow_down(totq + ramp_p, ip), Fraction(0)) if inst.T is not None else Fraction(0)
    return {"bound_p": B, "lower_p": low, "bound": bound, "lower": rpow_down(low, ip),
            "quantization": rpow_up(totq, ip), "ramps": rpow_up(ramp_p, ip), "softmax": soft,
            "ramp_measure": 1 - vol, "subdivision": sub}


# =========================================================================== the check

def outputs_sha256(values: list) -> str:
    """The commitment a certificate carries: sha256 of the canonical JSON of the per-cell outputs."""
    return canonical_sha256([[fmt(x) for x in row] for row in values])


def _body(body) -> str:
    fields(body, "certificate.body", {"outputs_sha256"})
    h = body["outputs_sha256"]
    if not isinstance(h, str) or len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise Reject("certificate.body.outputs_sha256: expected 64 lowercase hex digits")
    return h


def _exp2_constant_holds() -> None:
    """e^-G <= 2^(-10 G / 7) for G >= 0 needs 7 >= 10 ln 2, i.e. e^7 >= 2^10."""
    if not exp_bounds(Fraction(7))[0] >= 1024:   # pragma: no cover - a fact of arithmetic
        raise Reject("internal: e^7 >= 1024 could not be shown")


def _derived(inst: Instance, lip: Fraction, b: dict, values: list, etas: list, prompt: list) -> dict:
    K = inst.K
    fbar_cells = sum(1 for c, row in enumerate(values)
                     if row == [x for s in range(inst.n) for x in prompt[inst.n * c + s]])
    out = {k: fmt(b[k]) for k in ("bound", "lower", "quantization", "ramps", "softmax", "ramp_measure")}
    out.update({"K": K, "w": fmt(inst.w), "cells": inst.N, "m_p": inst.m_p, "subdivision": b["subdivision"],
                "cells_equal_fbar": fbar_cells, "eta_max": fmt(max(etas)), "target_lipschitz": fmt(lip)})
    return out


def check(ctx: Context) -> Outcome:
    """Check a ``universality-dp-bound`` certificate (module docstring)."""
    commit = _body(ctx.body)
    inst = instance(ctx.question)
    f, lip = target_values(inst)
    model, pin, ppr = _network(ctx.inputs["network"], inst)
    prompt = _prompt(ctx.inputs["prompt"], inst, f)
    if inst.T is not None:
        _exp2_constant_holds()
    values, etas = evaluate_cells(model, pin, ppr, prompt, inst)
    if outputs_sha256(values) != commit:
        raise Reject("certificate.body.outputs_sha256: differs from the hash of the outputs the network computes")
    b = derive_bounds(inst, f, lip, values, etas)
    eps = fmt(inst.eps)
    if ctx.status == "verified" and not _pow_le(b["bound_p"], inst.eps, inst.p):
        raise Reject(f"status verified: the derived upper bound {float(b['bound']):.6g} on d_p exceeds eps = {eps}")
    if ctx.status == "refuted" and _pow_le(b["lower_p"], inst.eps, inst.p):
        raise Reject(f"status refuted: the derived lower bound {float(b['lower']):.6g} on d_p does not exceed "
                     f"eps = {eps}")
    rel = (f"{float(b['bound']):.6g} <= eps = {eps}" if ctx.status == "verified"
           else f"{float(b['lower']):.6g} > eps = {eps}")
    msg = (f"d_p bound {rel} (p = {fmt(inst.p)}, {inst.target}), re-derived from an exact evaluation of g "
           f"on {inst.N} flat boxes (subdivision {b['subdivision']}), K = {inst.K}, m_p = {inst.m_p}")
    return Outcome(msg, _derived(inst, lip, b, values, etas, prompt))
