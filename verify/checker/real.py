"""Real-layer pair certificates (kind ``limitation-real-pair``, status ``proved``).

The theorem is proofs/real_layers.md.  A single softmax layer, possibly with attention biases, a
score scale, and LayerNorms placed "post" (BERT) or "pre" (GPT-2); the dataset's targets are taken
at the attention block (``"at": "attention"``).  Two constrained members share the query token x;
the certificate names them and one head j and gives an exact vector z.  The checker verifies, with
exact rationals and rigorous enclosures (exp, square roots) only:

1. ``(W_o^k)^T z = 0`` for every head k != j; post-LN also ``1.z = 0`` and ``z_k = 0`` wherever
   LN1's gamma_k = 0;
2. with ``y = (W_o^j)^T z``, the quantities of the theorem as intervals over the tolerance box:
   post-LN ``A_i = z.n_i`` (``n_i = (h_i - beta) / gamma``), ``E = -z.(x + b_o)`` (the same for both);
   pre-LN / no norm ``A_i = 0``, ``E_i = z.(r_i - x - b_o)``;
   ``D = sum_b w1_b (E_1 - y.v1_b) - sum_b w2_b (E_2 - y.v2_b)`` over each example's attended
   tokens b, ``w_b = exp(score_b - M)`` (one common shift M), ``v_b`` head j's value of token b;
3. for one sign sig: ``sig A_1 >= 0``, ``-sig A_2 >= 0``, ``sig (E_1 - E_2) >= 0``, ``sig D >= 0``,
   and at least one of the four > 0.

Then no prompt of any length >= 1 (and any norm) reaches both targets.  Body fields:
``examples`` [e1, e2], ``positions`` [p1, p2], ``head`` j, ``z`` (d exact numbers, integers
possibly written in hexadecimal ``"-0x1f"``; integers are cheapest, the conditions are invariant
under positive scaling).  Nothing is reported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Optional

from .envelope import Context, Outcome
from .numbers import EXP_ARG_LIMIT, Mat, Reject, exp_bounds, fields, integer, sqrt_down, sqrt_up, vector

__all__ = ["KIND", "check", "RealHead", "RealLayer", "view", "single_attention_layer", "check_pair", "Iv"]

KIND = "limitation-real-pair"
B = "certificate.body"
ZERO = Fraction(0)
ONE = Fraction(1)
INV_SQRT_HEAD_SIZE = "1/sqrt(head_size)"
#: interval endpoints are rounded outward to about this many significant bits
BITS = 256
#: exponential arguments are rounded outward to this absolute grid (bits)
ARG_BITS = 128


# --------------------------------------------------------------------------- intervals

def _out(q: Fraction, up: bool) -> Fraction:
    """q rounded outward (up or down) to about BITS significant bits."""
    if q == 0 or q.denominator == 1:
        return q
    e = q.numerator.bit_length() - q.denominator.bit_length()
    sh = BITS - e
    v = q * (1 << sh) if sh >= 0 else q / (1 << -sh)
    n = math.ceil(v) if up else math.floor(v)
    return Fraction(n << -sh) if sh < 0 else Fraction(n, 1 << sh)


class Iv:
    """A closed interval [lo, hi] of rationals (rounded outward after each product)."""
    __slots__ = ("lo", "hi")

    def __init__(self, lo: Fraction, hi: Optional[Fraction] = None):
        self.lo, self.hi = Fraction(lo), Fraction(lo if hi is None else hi)
        if self.lo > self.hi:
            raise ArithmeticError("empty interval")

    @staticmethod
    def of(v) -> "Iv":
        return v if isinstance(v, Iv) else Iv(v)

    def __add__(self, o):
        o = Iv.of(o)
        return Iv(self.lo + o.lo, self.hi + o.hi)

    __radd__ = __add__

    def __neg__(self):
        return Iv(-self.hi, -self.lo)

    def __sub__(self, o):
        return self + (-Iv.of(o))

    def __rsub__(self, o):
        return Iv.of(o) - self

    def __mul__(self, o):
        o = Iv.of(o)
        ps = (self.lo * o.lo, self.lo * o.hi, self.hi * o.lo, self.hi * o.hi)
        return Iv(_out(min(ps), False), _out(max(ps), True))

    __rmul__ = __mul__

    def widen(self, r: Fraction) -> "Iv":
        return Iv(self.lo - r, self.hi + r)


def exp_iv(s: Iv) -> Iv:
    """Rigorous enclosure of exp over s (arguments rounded outward to a 2^-ARG_BITS grid)."""
    g = Fraction(1, 1 << ARG_BITS)
    lo, hi = math.floor(s.lo / g) * g, math.ceil(s.hi / g) * g
    if hi > EXP_ARG_LIMIT:
        raise Reject(f"exponential argument {float(hi):.3g} beyond the checker's limit {EXP_ARG_LIMIT}")
    top = exp_bounds(max(hi, Fraction(-EXP_ARG_LIMIT)))[1]
    if lo < -EXP_ARG_LIMIT:
        return Iv(ZERO, top)
    return Iv(exp_bounds(lo)[0], top)


def _inv_sqrt(v: Fraction) -> Iv:
    """Enclosure of 1/sqrt(v), v > 0."""
    lo_root = sqrt_down(v)
    if lo_root <= 0:
        raise Reject("a LayerNorm variance plus eps is too small for the checker's square-root enclosure")
    return Iv(1 / sqrt_up(v), 1 / lo_root)


# --------------------------------------------------------------------------- the layer's view

@dataclass
class RealHead:
    W_q: Mat
    W_k: Mat
    W_v: Mat
    W_o: Mat
    b_q: Optional[list] = None
    b_k: Optional[list] = None
    b_v: Optional[list] = None


@dataclass
class RealLayer:
    kind: str
    heads: list
    b_o: Optional[list] = None
    scale: Any = ONE                  # a Fraction > 0 or INV_SQRT_HEAD_SIZE
    norm: Optional[str] = None        # None, "pre" or "post"
    ln1: Optional[tuple] = None       # (gamma list, beta list, eps Fraction)


def _get(obj, name, default=None):
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _vec_of(v) -> Optional[list]:
    """A bias as a list of Fractions (None when absent): a Mat of one row, or a list."""
    if v is None:
        return None
    if isinstance(v, Mat):
        return v.rows()[0] if v.shape[0] == 1 else [r[0] for r in v.rows()]
    return [Fraction(x) for x in v]


def view(layer) -> RealLayer:
    """The fields this kind reads, from the checker reader's layer (CLayer)."""
    heads = [RealHead(_get(h, "W_q"), _get(h, "W_k"), _get(h, "W_v"), _get(h, "W_o"),
                      _vec_of(_get(h, "b_q")), _vec_of(_get(h, "b_k")), _vec_of(_get(h, "b_v")))
             for h in _get(layer, "heads")]
    scale = _get(layer, "scale", ONE)
    scale = INV_SQRT_HEAD_SIZE if scale == INV_SQRT_HEAD_SIZE else Fraction(scale)
    norm = _get(layer, "norm")
    ln1 = None
    if norm is not None:
        ln = _get(layer, "ln1")
        ln1 = (_vec_of(_get(ln, "gamma")), _vec_of(_get(ln, "beta")), Fraction(_get(ln, "eps")))
    return RealLayer(_get(layer, "kind"), heads, _vec_of(_get(layer, "b_o")), scale, norm, ln1)


def single_attention_layer(model, ds, what: str, softmax: bool = False) -> RealLayer:
    """The view of the one layer of a question about a single real layer with targets at the
    attention block (``what`` names the certificates, for the messages); with ``softmax`` also a
    softmax layer whose LayerNorm is pre, post or absent."""
    if len(model.layers) != 1:
        raise Reject(f"model: {what} are for single-layer models, found {len(model.layers)} layers")
    if _get(ds, "at", "output") != "attention":
        raise Reject(f"dataset.at: {what} need targets at the attention block (\"at\": \"attention\")")
    L = view(model.layers[0])
    if softmax and L.kind != "softmax":
        raise Reject(f"model: {what} are implemented for softmax layers only")
    if softmax and L.norm not in (None, "pre", "post"):
        raise Reject(f"model: unknown LayerNorm placement {L.norm!r}")
    return L


# --------------------------------------------------------------------------- the check

def check(ctx: Context) -> Outcome:
    """Check a ``limitation-real-pair`` certificate against the question and the inputs."""
    q, model, ds = ctx.question, ctx.inputs["model"], ctx.inputs["dataset"]
    L = single_attention_layer(model, ds, "real-layer pair certificates")
    body = ctx.body
    fields(body, B, {"examples", "positions", "head", "z"})
    if not (isinstance(body["examples"], list) and len(body["examples"]) == 2
            and isinstance(body["positions"], list) and len(body["positions"]) == 2):
        raise Reject(f"{B}.examples, positions: expected two entries each")
    e = [integer(v, f"{B}.examples[{i}]", 0, len(ds.inputs) - 1) for i, v in enumerate(body["examples"])]
    p = [integer(v, f"{B}.positions[{i}]", 0, len(ds.inputs[e[i]]) - 1) for i, v in enumerate(body["positions"])]
    if (e[0], p[0]) == (e[1], p[1]):
        raise Reject(f"{B}: the two members must differ")
    j = integer(body["head"], f"{B}.head", 0, len(L.heads) - 1)
    z = _z(body["z"], model.d)
    targets = [ds.outputs[e[i]][p[i]] for i in range(2)]
    if any(t is None for t in targets):
        raise Reject(f"{B}: a member names an unconstrained output (null target)")
    toks = [ds.inputs[e[i]] for i in range(2)]
    if toks[0][p[0]] != toks[1][p[1]]:
        raise Reject(f"{B}: the two members' query tokens differ (the theorem needs one shared query token)")
    attended = [toks[i][: p[i] + 1] if model.causal else toks[i] for i in range(2)]
    sig = check_pair(L, toks[0][p[0]], attended, targets, j, z, q["tolerance"])
    return Outcome(f"real-layer pair theorem: examples {e[0]} and {e[1]} (positions {p[0]}, {p[1]}) share the "
                   f"query token; head {j}, sign {sig:+d}: no prompt of any length reaches both targets")


#: longest hexadecimal integer accepted in ``z`` (characters)
MAX_HEX_CHARS = 1 << 18


def _z(raw, d: int) -> list:
    """``z``: d entries, each an exact number, or an integer in hexadecimal (``"0x1f"``,
    ``"-0x1f"``; exact kernel vectors have thousands of digits, beyond Python's decimal limit)."""
    if not isinstance(raw, list) or len(raw) != d:
        raise Reject(f"{B}.z: expected a list of {d} numbers")
    out = []
    for k, v in enumerate(raw):
        if isinstance(v, str) and v.lstrip("-").startswith("0x"):
            digits = v[3:] if v.startswith("-") else v[2:]
            if not digits or len(digits) > MAX_HEX_CHARS or any(c not in "0123456789abcdef" for c in digits):
                raise Reject(f"{B}.z[{k}]: expected a hexadecimal integer such as \"-0x1f\" (lower case, at most "
                             f"{MAX_HEX_CHARS} digits), found {v[:40]!r}")
            n = int(digits, 16)
            out.append(Fraction(-n if v.startswith("-") else n))
        else:
            out.append(vector([v], f"{B}.z[{k}]", 1)[0])
    return out


def check_pair(L: RealLayer, x: list, attended: list, targets: list, j: int, z: list, tol: Fraction) -> int:
    """The conditions of the theorem for one pair; returns the sign, or raises Reject."""
    if L.kind != "softmax":
        raise Reject("model: the real-layer pair theorem needs a softmax layer")
    if L.norm not in (None, "pre", "post"):
        raise Reject(f"model: unknown LayerNorm placement {L.norm!r}")
    d = len(z)
    if not any(z):
        raise Reject(f"{B}.z: the zero vector certifies nothing")
    for k, h in enumerate(L.heads):
        if k != j and any(h.W_o.vm(z)):
            raise Reject(f"{B}.z: (W_o^{k})^T z != 0 (z must annihilate every other head's output space)")
    gamma = beta = None
    if L.norm is not None:
        gamma, beta, eps = L.ln1
        if eps <= 0:
            raise Reject("model: LayerNorm eps must be > 0")
    if L.norm == "post":
        if sum(z) != 0:
            raise Reject(f"{B}.z: 1.z != 0 (needed with a post-LayerNorm: the mean is unknown)")
        if any(z[k] != 0 and gamma[k] == 0 for k in range(d)):
            raise Reject(f"{B}.z: nonzero where LN1's gamma is 0 (that target entry carries no information)")
    h = L.heads[j]
    y = h.W_o.vm(z)
    b_o = L.b_o or [ZERO] * d
    xb = [a + b for a, b in zip(x, b_o)]
    A, E = [], []
    for t in targets:
        if L.norm == "post":
            c = ZERO
            r = ZERO
            for k in range(d):
                if z[k] != 0:
                    c += z[k] * (t[k] - beta[k]) / gamma[k]
                    r += abs(z[k] / gamma[k])
            A.append(Iv(c).widen(tol * r))
            E.append(Iv(-sum(zk * v for zk, v in zip(z, xb))))
        else:
            A.append(Iv(ZERO))
            E.append(Iv(sum(zk * (tk - v) for zk, tk, v in zip(z, t, xb))).widen(tol * sum(abs(zk) for zk in z)))
    D = _D(L, h, x, attended, y, E, d)
    for sig in (1, -1):
        terms = [sig * A[0], -sig * A[1], sig * (E[0] - E[1]), sig * D]
        if all(tm.lo >= 0 for tm in terms) and any(tm.lo > 0 for tm in terms):
            return sig
    raise Reject("the sign conditions of the real-layer pair theorem fail for both signs "
                 f"(A_1 {_sign(A[0])}, A_2 {_sign(A[1])}, E_1 - E_2 {_sign(E[0] - E[1])}, D {_sign(D)})")


def _sign(iv: Iv) -> str:
    if iv.lo > 0:
        return "> 0"
    if iv.hi < 0:
        return "< 0"
    return "= 0" if iv.lo == iv.hi == 0 else "of unknown sign"


def _normed(L: RealLayer, toks: list):
    """Per token (kappa interval, g vector): the layer reads kappa * g + beta (pre-LN: g = gamma *
    (s - mean s), kappa = 1/sqrt(var s + eps)); otherwise kappa = 1, g = s, no beta."""
    if L.norm != "pre":
        return [(Iv(ONE), list(s)) for s in toks]
    gamma, _beta, eps = L.ln1
    out = []
    for s in toks:
        n = len(s)
        mean = sum(s, ZERO) / n
        c = [v - mean for v in s]
        var = sum((v * v for v in c), ZERO) / n
        out.append((_inv_sqrt(var + eps), [g * v for g, v in zip(gamma, c)]))
    return out


def _add(a: list, b: Optional[list]) -> list:
    return a if b is None else [u + v for u, v in zip(a, b)]


def _dot(a: list, b: list) -> Fraction:
    return sum((u * v for u, v in zip(a, b)), ZERO)


def _D(L: RealLayer, h: RealHead, x: list, attended: list, y: list, E: list, d: int) -> Iv:
    """sum_b w1_b (E_1 - y.v1_b) - sum_b w2_b (E_2 - y.v2_b), w_b = exp(score_b - M)."""
    s_head = h.W_q.shape[0]
    if L.scale == INV_SQRT_HEAD_SIZE:
        r = math.isqrt(s_head)
        scale = Iv(Fraction(1, r)) if r * r == s_head else _inv_sqrt(Fraction(s_head))
    else:
        if L.scale <= 0:
            raise Reject("model: the score scale must be > 0")
        scale = Iv(L.scale)
    pre = L.norm == "pre"
    beta = L.ln1[1] if pre else None
    qx = _normed(L, [x])[0]
    Q1 = h.W_q.mv(qx[1])
    Q0 = _add(h.W_q.mv(beta), h.b_q) if pre else (h.b_q or [ZERO] * s_head)
    if pre:
        K0 = _add(h.W_k.mv(beta), h.b_k)
        V0 = _add(h.W_v.mv(beta), h.b_v)
    else:
        K0 = h.b_k or [ZERO] * s_head
        V0 = h.b_v or [ZERO] * s_head
    yV0 = _dot(y, V0)
    q1k0, q0k0 = _dot(Q1, K0), _dot(Q0, K0)
    scores, vals = [], []
    for toks in attended:
        normed = _normed(L, toks)
        gs = [g for _, g in normed]
        K1s, V1s = h.W_k.mv_many(gs), h.W_v.mv_many(gs)
        sc, vl = [], []
        for (kap, _g), K1, V1 in zip(normed, K1s, V1s):
            raw = qx[0] * kap * _dot(Q1, K1) + qx[0] * q1k0 + kap * _dot(Q0, K1) + q0k0
            sc.append(scale * raw)
            vl.append(kap * _dot(y, V1) + yV0)
        scores.append(sc)
        vals.append(vl)
    g = Fraction(1, 1 << 32)
    M = math.floor(max(s.hi for sc in scores for s in sc) / g) * g
    D = Iv(ZERO)
    for i, sgn in ((0, 1), (1, -1)):
        part = Iv(ZERO)
        for s, v in zip(scores[i], vals[i]):
            part = part + exp_iv(s - M) * (E[i] - v)
        D = D + part if sgn > 0 else D - part
    return D
