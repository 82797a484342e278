"""Theorem U: one frozen transformer that a prompt turns into any Lipschitz function.

The network ``g`` reads the prompt as a lookup table.  With ``K = 1/delta`` grid steps per
coordinate and ``N = K^(d n)`` grid cells, the prompt has ``m_p = n N`` tokens: token
``n c + s`` holds ``fbar(c)_s``, the quantized value of ``f`` at output position ``s`` on cell
``c``.  Tokens are rows of ``d`` numbers; every layer is ``tau(Z) = MLP(Z + Att(Z, Z))``.

Layers (``proofs/universality.md`` gives the argument):

``Q1`` (MLP only)
    ReLU staircases with ramps of width ``w`` just left of each threshold ``j/K``: coordinate
    ``i >= 1`` of every token becomes its grid index, coordinate 0 of input token ``t`` becomes
    ``E_t + S n K^(t d) k_{t,0}``; the prompt region of coordinate 0 is left unchanged.
``Q2`` (MLP only, only when ``d >= 2``)
    Gated units (``relu(L + M(z_0 - theta)) - relu(M(z_0 - theta))``) add the other grid indices
    of an input token into its coordinate 0 and erase its coordinates ``i >= 1``; prompt tokens are
    gated off.  Input token ``t`` then holds ``V_t = E_t + S n sum_i k_{t,i} K^(t d + i)``.
``G`` (rank-1 attention, then a scalar piecewise-linear MLP on coordinate 0)
    A head whose score is ``key_0 * query_0`` adds the largest coordinate 0 of the sequence (the
    top input token); for ``n = 2`` a second head adds the smallest (the bottom input token).
    Every token, prompt tokens included, gains ``A = S n c``.  The MLP (a "tent") then maps the
    prompt token of cell ``c`` and position 0 to ``H + y_0`` (the largest value), that of position
    1 to ``-H - y_0`` (the smallest) and every other token to a fixed level.
``F`` (rank-1 attention that copies whole tokens, then a clipping MLP)
    Input position 0 has query ``+Q`` and reads the largest key, position 1 has ``-Q`` and reads
    the smallest: each copies its prompt token; the MLP removes the offsets, rescales the grid
    indices by ``1/K`` and clips every coordinate to ``[0, 1]``.

Positional encodings (added to coordinate 0 only) are part of ``g``: ``E_t`` for input position
``t`` and ``E^P_j`` for prompt position ``j``.  The "exact" version uses hardmax attention; the
"standard" one softmax, with the scores divided by a temperature ``T`` (folded into ``W_k``).
Supported sizes: any ``d >= 1`` with ``n in {1, 2}`` (the layers above), and ``d = 1`` with any
``n >= 3``: the broadcast construction (:func:`_build_broadcast`, 2n + 1 layers), in which every
attention layer adds the row with the largest coordinate 0 to every row, and the MLPs choose which
row that is: the input tokens one by one (the gather), then the prompt token of each output
position one by one (the lookup).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional, Sequence

import numpy as np

from .model import Head, InputError, Layer, Model
from .targets import TARGETS, Target, build_target

__all__ = [
    "UniversalNetwork", "build_network", "build_prompt",
    "quantized_function", "decode_prompt", "grid_index", "cell_index", "cell_digits", "delta_K",
    "ramp_width", "default_temperature", "pl_units", "pl_units_left", "pl_eval", "forward_float",
    "broadcast_spacing", "region_points",
    "S_SPACING", "H_LEVEL", "Q_LEVEL",
    # the targets (defined in constructions.targets)
    "Target", "TARGETS", "build_target",
]

S_SPACING = 4          # distance between consecutive prompt windows on coordinate 0
H_LEVEL = 2            # level of the matching prompt token after the tent
Q_LEVEL = 1            # query level of the input tokens in the lookup layer


# =========================================================================== sizes

def delta_K(eps: Fraction, L: Fraction, d: int, n: int, p: Fraction) -> int:
    """Smallest integer K with 1/K <= eps / (2 (L + 1) (d n)^(1/p)) (docs/theory.md, "Theorem U").

    Decided exactly: K >= 2 (L + 1) (d n)^(1/p) / eps  iff  (K eps / (2 (L + 1)))^p >= d n."""
    eps, L, p = Fraction(eps), Fraction(L), Fraction(p)
    base = 2 * (L + 1) / eps
    guess = max(1, int(math.floor(float(base) * float(d * n) ** (1.0 / float(p)))) - 2)

    def ok(K: int) -> bool:
        q = K / base  # (q)^p >= dn  with p = u/v:  q^u >= (dn)^v
        return q ** p.numerator >= Fraction(d * n) ** p.denominator
    K = guess
    while not ok(K):
        K += 1
    while K > 1 and ok(K - 1):
        K -= 1
    return max(K, 2)


def ramp_width(eps: Fraction, p: Fraction, d: int, n: int, K: int) -> Fraction:
    """Ramp width ``w = 1 / (K 2^k)``, the largest such with ``(dn)^2 (K - 1) w <= (eps/4)^p``,
    so that the ramp region costs at most eps/4 of d_p (its measure is at most dn (K-1) w and
    there the error is at most (dn)^(1/p))."""
    eps, p = Fraction(eps), Fraction(p)
    k = 1
    while True:
        w = Fraction(1, K * (1 << k))
        lhs = Fraction((d * n) ** 2 * (K - 1)) * w   # compare lhs <= (eps/4)^p exactly
        if (lhs ** p.denominator) <= (eps / 4) ** p.numerator:
            return w
        k += 1


def default_temperature() -> Fraction:
    """The softmax temperature reported for the standard version (scores divided by T)."""
    return Fraction(1, 64)


# =========================================================================== PL helpers

def _pl_slopes(points: Sequence[tuple], left_slope, right_slope) -> tuple[list, list]:
    """``(points as Fractions, slopes)``: the left tail's slope, each segment's, the right tail's
    (the abscissae must increase strictly)."""
    pts = [(Fraction(a), Fraction(b)) for a, b in points]
    for (a0, _), (a1, _) in zip(pts, pts[1:]):
        if not a1 > a0:
            raise ValueError(f"breakpoints must increase: {a0} then {a1}")
    inner = [(v1 - v0) / (a1 - a0) for (a0, v0), (a1, v1) in zip(pts, pts[1:])]
    return pts, [Fraction(left_slope)] + inner + [Fraction(right_slope)]


def pl_units(points: Sequence[tuple], left_slope, right_slope) -> tuple[list, Fraction]:
    """Residual form of a continuous piecewise-linear map ``F`` of one coordinate.

    ``F`` passes through ``points`` (strictly increasing abscissae) and has the given tail slopes.
    Returns ``(units, c)`` with ``F(z) = z + c + sum coef * relu(sign * (z - b))`` for
    ``units = [(sign, b, coef)]``."""
    pts, all_slopes = _pl_slopes(points, left_slope, right_slope)
    sl, slopes = all_slopes[0], all_slopes[1:]
    b0, v0 = pts[0]
    units = []
    if sl - 1 != 0:
        units.append((-1, b0, -(sl - 1)))
    prev = Fraction(0)  # the left unit contributes slope sl - 1 before b0 and 0 after it
    for (a, _), s in zip(pts, slopes):
        delta = (s - 1) - prev
        if delta != 0:
            units.append((1, a, delta))
        prev = s - 1
    return units, v0 - b0


def pl_units_left(points: Sequence[tuple], left_slope, right_slope) -> tuple[list, Fraction]:
    """As :func:`pl_units`, with units ``relu(b - z)`` that vanish right of their breakpoint (and
    one ``relu(z - b)`` unit for a right tail slope other than 1): every unit is 0 on tokens right
    of the last point, where ``F(z) = z + c``.  In float64 a token then sees only the units whose
    breakpoints lie to its right, so tokens far right of steep units keep their exact value."""
    pts, slopes = _pl_slopes(points, left_slope, right_slope)
    sr = slopes[-1]
    bN, vN = pts[-1]
    units = []
    if sr - 1 != 0:
        units.append((1, bN, sr - 1))
    # crossing breakpoint a_k leftwards changes the slope from slopes[k + 1] to slopes[k]; a unit
    # coef relu(a_k - z) adds slope -coef left of a_k
    for k, (a, _) in enumerate(pts):
        coef = slopes[k + 1] - slopes[k] if k < len(pts) - 1 else 1 - slopes[k]
        if coef != 0:
            units.append((-1, a, coef))
    return units, vN - bN


def pl_eval(points, left_slope, right_slope, z: Fraction) -> Fraction:
    """Direct evaluation of the piecewise-linear map of :func:`pl_units` (its reference)."""
    pts = [(Fraction(a), Fraction(b)) for a, b in points]
    if z <= pts[0][0]:
        return pts[0][1] + Fraction(left_slope) * (z - pts[0][0])
    for (a0, v0), (a1, v1) in zip(pts, pts[1:]):
        if z <= a1:
            return v0 + (v1 - v0) * (z - a0) / (a1 - a0)
    return pts[-1][1] + Fraction(right_slope) * (z - pts[-1][0])


class _MLPBuilder:
    """Collects hidden units for one residual MLP on d coordinates."""

    def __init__(self, d: int):
        self.d = d
        self.rows: list = []      # (W_1 row as dict {coord: weight}, bias, {coord: out weight})
        self.b2 = [Fraction(0)] * d

    def add_pl(self, coord: int, points, left_slope, right_slope, left_active: bool = False) -> None:
        units, c = (pl_units_left if left_active else pl_units)(points, left_slope, right_slope)
        for sign, b, coef in units:
            self.rows.append(({coord: Fraction(sign)}, Fraction(-sign) * b, {coord: coef}))
        self.b2[coord] += c

    def add_unit(self, w_in: dict, bias, w_out: dict) -> None:
        self.rows.append(({k: Fraction(v) for k, v in w_in.items()}, Fraction(bias),
                          {k: Fraction(v) for k, v in w_out.items()}))

    def arrays(self):
        r = max(1, len(self.rows))
        W1 = np.full((r, self.d), Fraction(0), dtype=object)
        b1 = np.full(r, Fraction(0), dtype=object)
        W2 = np.full((self.d, r), Fraction(0), dtype=object)
        for k, (wi, b, wo) in enumerate(self.rows):
            for j, v in wi.items():
                W1[k, j] = v
            b1[k] = b
            for i, v in wo.items():
                W2[i, k] = v
        b2 = np.array(self.b2, dtype=object)
        return W1, b1, W2, b2


def _zeros(shape) -> np.ndarray:
    return np.full(shape, Fraction(0), dtype=object)


def _zero_head(d: int) -> Head:
    return Head(_zeros((1, d)), _zeros((1, d)), _zeros((1, d)), _zeros((d, 1)))


# =========================================================================== the network

@dataclass
class UniversalNetwork:
    """The frozen network g: positional encodings plus a :class:`Model` on tokens of size d."""

    d: int
    n: int
    K: int
    w: Fraction
    kind: str                          # "hardmax" (exact version) or "softmax" (standard)
    temperature: Optional[Fraction]    # softmax only: scores divided by T
    model: Model
    pos_input: np.ndarray              # (n, d) Fractions added to the input tokens
    pos_prompt: np.ndarray             # (m_p, d) Fractions added to the prompt tokens
    layout: dict = field(default_factory=dict)

    @property
    def N(self) -> int:
        return self.K ** (self.d * self.n)

    @property
    def m_p(self) -> int:
        return self.n * self.N

    def encode_input(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=object)
        return X + self.pos_input

    def encode_prompt(self, P) -> np.ndarray:
        return np.asarray(P, dtype=object) + self.pos_prompt

    def counts(self) -> dict:
        """Depth, heads, widths and parameter counts (positional encodings counted apart)."""
        layers = self.model.layers
        arrays = list(self.model.arrays())
        return {
            "depth": len(layers),
            "heads_per_layer": [len(la.heads) for la in layers],
            "heads_total": sum(len(la.heads) for la in layers),
            "head_sizes": [[h.s for h in la.heads] for la in layers],
            "mlp_widths": [la.r for la in layers],
            "mlp_width": max(la.r for la in layers),
            "parameters": int(sum(a.size for _, a in arrays)),
            "nonzero_parameters": int(sum(int(np.count_nonzero(a != 0)) for _, a in arrays)),
            "positional_encoding_entries": int((self.n + self.m_p) * self.d),
        }


def _checked_sizes(d: int, n: int, K: int, w, kind: str, temperature) -> tuple[Fraction, Fraction]:
    """``(w, T)`` after checking every argument of :func:`build_network` (T = 1 for hardmax)."""
    if d < 1:
        raise InputError("--d", "a positive integer", str(d))
    if n < 1 or (n >= 3 and d != 1):
        raise InputError("--n", "1 or 2, or any n >= 3 with d = 1 (the broadcast construction stores one "
                         "number per token)", f"n = {n} with d = {d}")
    if K < 2:
        raise InputError("delta", "1/K with K >= 2", f"K = {K}")
    w = Fraction(w)
    if not 0 < w < Fraction(1, K):
        raise InputError("ramp width", f"0 < w < 1/K = 1/{K}", str(w))
    if kind not in ("hardmax", "softmax"):
        raise InputError("kind", "\"hardmax\" or \"softmax\"", repr(kind))
    T = Fraction(1) if kind == "hardmax" else Fraction(temperature if temperature is not None else default_temperature())
    if T <= 0:
        raise InputError("--softmax-temperature", "a positive number", str(T))
    return w, T


@dataclass
class _Plan:
    """Sizes and the layout of coordinate 0 shared by the layers of :func:`build_network`."""

    d: int
    n: int
    K: int
    kind: str
    N: int
    span: int           # room for an input token after the gather
    E: list             # positional encoding of input position t (coordinate 0)
    P0: int             # start of the prompt windows
    bottom: list        # input positions read by the min head
    top: list           # input positions read by the max head
    mult: list          # coordinate-0 multiplier of token t's digit 0


def _plan(d: int, n: int, K: int, kind: str) -> _Plan:
    N = K ** (d * n)
    span = 2 * S_SPACING * n * N
    if n == 2:
        P0 = 1 + span + 4
        E = [1, P0 + span + 5]
        bottom, top = [0], [1]
    else:
        P0 = 1
        E = [P0 + span + 5]
        bottom, top = [], [0]
    mult = [S_SPACING * n * K ** (t * d) for t in range(n)]
    return _Plan(d, n, K, kind, N, span, E, P0, bottom, top, mult)


def _positional(pl: _Plan) -> tuple[np.ndarray, np.ndarray]:
    """``(pos_input, pos_prompt)``: the encodings added to coordinate 0."""
    d, n, N = pl.d, pl.n, pl.N
    pos_input = _zeros((n, d))
    for t in range(n):
        pos_input[t, 0] = Fraction(pl.E[t])
    pos_prompt = _zeros((n * N, d))
    for c in range(N):
        for s in range(n):
            pos_prompt[n * c + s, 0] = Fraction(pl.P0 + S_SPACING * (n * (N - 1) - n * c + s))
    return pos_input, pos_prompt


def _mlp_layer(pl: _Plan, heads: list, mlp: _MLPBuilder) -> Layer:
    W1, b1, W2, b2 = mlp.arrays()
    return Layer(pl.kind, heads, W1, b1, W2, b2)


def _staircase_layer(pl: _Plan, w: Fraction) -> Layer:
    """Q1: coordinate i >= 1 becomes its grid index; coordinate 0 of input token t becomes
    E_t + S n K^(t d) k_{t,0} (ramps of width w left of each threshold j/K)."""
    K = pl.K
    q1 = _MLPBuilder(pl.d)
    pts0 = []
    for t in sorted(range(pl.n), key=lambda t: pl.E[t]):
        e = Fraction(pl.E[t])
        pts0.append((e, e))
        for j in range(1, K):
            pts0.append((e + Fraction(j, K) - w, e + pl.mult[t] * (j - 1)))
            pts0.append((e + Fraction(j, K), e + pl.mult[t] * j))
        pts0.append((e + 1, e + pl.mult[t] * (K - 1)))
        pts0.append((e + 2, e + 2))
    q1.add_pl(0, pts0, 1, 1)
    stair = []
    for j in range(1, K):
        stair.append((Fraction(j, K) - w, j - 1))
        stair.append((Fraction(j, K), j))
    for i in range(1, pl.d):
        q1.add_pl(i, stair, 0, 0)
    return _mlp_layer(pl, [_zero_head(pl.d)], q1)


def _gate_layer(pl: _Plan) -> Layer:
    """Q2 (d >= 2): gated units add the other grid indices of an input token into its
    coordinate 0 and erase its coordinates i >= 1; prompt tokens are gated off."""
    d, n, K, S = pl.d, pl.n, pl.K, S_SPACING
    q2 = _MLPBuilder(d)
    for t in range(n):
        coef = {i: S * n * K ** (t * d + i) for i in range(1, d)}
        Lmax = sum(c * (K - 1) for c in coef.values())
        M = max(Lmax, K) // 2 + 1
        if t in pl.top:
            theta = Fraction(pl.E[t]) - Fraction(1, 2)
            g_in, g_b = {0: M}, -M * theta
        else:
            theta = Fraction(pl.E[t]) + pl.mult[t] * (K - 1) + Fraction(1, 2)
            g_in, g_b = {0: -M}, M * theta
        # coordinate 0 += relu(L + g) - relu(g) = L when the gate g >= 0 is open, 0 when
        # g <= -max(L, z_i) is closed; coordinate i -= relu(z_i + g) - relu(g) likewise
        q2.add_unit({**g_in, **coef}, g_b, {0: 1})
        q2.add_unit(g_in, g_b, {0: -1, **{i: 1 for i in range(1, d)}})
        for i in range(1, d):
            q2.add_unit({**g_in, i: 1}, g_b, {i: -1})
    return _mlp_layer(pl, [_zero_head(d)], q2)


def _rank1_head(d: int, sign: int, T: Fraction) -> Head:
    """Score ``sign * key_0 * query_0 / T``, value and output on coordinate 0."""
    W_q = _zeros((1, d)); W_q[0, 0] = Fraction(sign)
    W_k = _zeros((1, d)); W_k[0, 0] = 1 / T
    W_v = _zeros((1, d)); W_v[0, 0] = Fraction(1)
    W_o = _zeros((d, 1)); W_o[0, 0] = Fraction(1)
    return Head(W_q, W_k, W_v, W_o)


def _tent_points(pl: _Plan) -> tuple[list, int]:
    """The breakpoints of the gather layer's tent on coordinate 0, and the window of the matching
    prompt token (before the constant shift the heads add)."""
    n, N, S, H, Q, E = pl.n, pl.N, S_SPACING, H_LEVEL, Q_LEVEL, pl.E
    Zs = pl.P0 + S * n * (N - 1)                  # window of the matching prompt token (s = 0)
    p_end = pl.P0 + S * (n * N - 1) + 1 + S * n * (N - 1)
    tent = []
    if n == 2:
        tent += [(E[0], Q), (E[0] + pl.span, Q), (E[0] + pl.span + 1, 0)]
    tent += [(Zs - 1, 0), (Zs, H), (Zs + 1, H + 1), (Zs + 2, 0)]
    if n == 2:
        tent += [(Zs + S - 1, 0), (Zs + S, -H), (Zs + S + 1, -H - 1), (Zs + S + 2, 0)]
    last = tent[-1][0]
    top_level = -Q if n == 2 else Q
    top = E[pl.top[0]]
    tent += [(max(p_end + 1, last + 1), 0), (top - 1, 0), (top, top_level), (top + pl.span, top_level)]
    return tent, Zs


def _gather_layer(pl: _Plan, T: Fraction) -> tuple[Layer, int]:
    """G: the max head (and the min head for n = 2) add A = S n c to every token; the tent then
    marks the prompt tokens of the cell.  Returns the layer and the shifted window."""
    heads = [_rank1_head(pl.d, sign, T) for sign in ([1, -1] if pl.n == 2 else [1])]
    shift = sum(pl.E)                             # constant part of what the heads add
    tent, Zs = _tent_points(pl)
    gm = _MLPBuilder(pl.d)
    gm.add_pl(0, [(Fraction(a) + shift, Fraction(v)) for a, v in tent], 0, 0)
    return _mlp_layer(pl, heads, gm), Zs + shift


def _lookup_layer(pl: _Plan, T: Fraction) -> Layer:
    """F: input positions copy the marked prompt tokens; the MLP removes the offsets, rescales
    the grid indices by 1/K and clips every coordinate to [0, 1]."""
    d = pl.d
    W_q = _zeros((d, d)); W_q[0, 0] = Fraction(1)
    W_k = _zeros((d, d)); W_k[0, 0] = 1 / T
    W_v = _zeros((d, d)); W_o = _zeros((d, d))
    for i in range(d):
        W_v[i, i] = Fraction(1)
        W_o[i, i] = Fraction(1)
    fm = _MLPBuilder(d)
    off = Q_LEVEL + H_LEVEL
    fm.add_pl(0, [(-off - 1, 1), (-off, 0), (off, 0), (off + 1, 1)], 0, 0)
    for i in range(1, d):
        fm.add_pl(i, [(0, 0), (pl.K, 1)], 0, 0)
    return _mlp_layer(pl, [Head(W_q, W_k, W_v, W_o)], fm)


# =========================================================================== n >= 3, d = 1: broadcasts

def broadcast_spacing(n: int) -> int:
    """S of the broadcast construction (n >= 3): 2^(n-1) + 2.  A prompt row's offset in its window
    (its grid value plus what the lookups added) stays below 2^(n-1), so windows S apart keep a gap
    of 2."""
    return (1 << (n - 1)) + 2


def region_points(regions: list) -> list:
    """Points of a continuous piecewise-linear map that is affine on each region.

    ``regions``: (lo, hi, value at lo, slope) with lo < hi, disjoint, at least 1/2 apart (the map
    interpolates linearly between them: the builder's bounds say no token ever lies there)."""
    pts: list = []
    for lo, hi, v, sl in sorted(regions, key=lambda r: Fraction(r[0])):
        lo, hi, v, sl = Fraction(lo), Fraction(hi), Fraction(v), Fraction(sl)
        if not hi > lo or (pts and lo - pts[-1][0] < Fraction(1, 2)):
            raise ValueError(f"broadcast layout: region [{lo}, {hi}] overlaps or touches its neighbour")
        pts += [(lo, v), (hi, v + sl * (hi - lo))]
    return pts


def _pl_layer(kind: str, T: Fraction, regions: list) -> Layer:
    """One broadcast layer: the head adds the row with the largest coordinate 0 to every row
    (every row's coordinate 0 is positive), then the scalar map of ``regions``."""
    mlp = _MLPBuilder(1)
    mlp.add_pl(0, region_points(regions), 0, 0)
    W1, b1, W2, b2 = mlp.arrays()
    return Layer(kind, [_rank1_head(1, 1, T)], W1, b1, W2, b2)


_HALF = Fraction(1, 2)


@dataclass
class _Broadcast:
    """Sizes and levels of the broadcast construction (``proofs/universality.md``, "n >= 3")."""

    n: int
    K: int
    kind: str
    T: Fraction

    def __post_init__(self):
        n, K = self.n, self.K
        self.N, self.S = K ** n, broadcast_spacing(n)
        S, N = self.S, self.N
        self.J = 1 << n                          # bound on the offsets lookups add (< 2^n)
        self.off = 1 << (n - 1)                  # bound on a prompt row's offset in its window
        self.B = K * (self.J + 2)                # scale of a stored output
        self.D = [Fraction(S * n * K ** t, 2 ** t) for t in range(n)]
        self.W = [Dt * (K - 1) for Dt in self.D]
        self.Amax = A = S * n * (N - 1)
        self.spanP = S * n * N + 1               # raw prompt rows lie in [P0, P0 + spanP]
        self.uspan = 2 * S * n * N + self.J      # and after the gather in [P0, P0 + uspan]
        # levels as low as the regions allow (stored rows need B + J, parked rows A_max + J, input
        # tokens 2 A_max, the prompt rows spanP + A_max), parked rows and input tokens with A_max
        # more, so that the map between two regions has a slope of a few units: small numbers and
        # gentle slopes keep float64 passes through g accurate
        self.DEAD = 1
        self.store = [self.DEAD + self.off + 4 + s * (self.B + self.J + 4) for s in range(n)]
        self.park = [self.store[-1] + self.B + self.J + 4 + t * (2 * A + self.J + 4) for t in range(n)]
        self.P0 = self.park[-1] + 2 * A + self.J + 4
        self.E = [self.P0 + self.spanP + 2 * A + 4 + t * (3 * A + 4) for t in range(n)]
        self.TOP = self.P0 + self.uspan + 4      # above every state of the lookup but the marked row
        self.Zs = self.P0 + S * n * (N - 1)      # a prompt row holds Zs + S k + y after the gather
        self.raw = [2 + 3 * t for t in range(n)]  # input token t enters at raw[t] + x, below the prompt

    def q1(self, w: Fraction) -> Layer:
        """Input token t's staircase on [raw_t, raw_t + 1] lands on E_t + D_t k (ramps of width w
        left of each threshold j/K); identity from P0 - 1 on.  Units relu(b - z): they vanish on
        every row right of their breakpoint, so the prompt rows never see the steep ramps."""
        pts = []
        for t in range(self.n):
            e, Et, Dt = Fraction(self.raw[t]), self.E[t], self.D[t]
            pts.append((e, Fraction(Et)))
            for j in range(1, self.K):
                pts += [(e + Fraction(j, self.K) - w, Et + Dt * (j - 1)), (e + Fraction(j, self.K), Et + Dt * j)]
            pts.append((e + 1, Et + self.W[t]))
        pts.append((Fraction(self.P0 - 1), Fraction(self.P0 - 1)))
        q1 = _MLPBuilder(1)
        q1.add_pl(0, pts, 0, 1, left_active=True)
        W1, b1, W2, b2 = q1.arrays()
        return Layer(self.kind, [_zero_head(1)], W1, b1, W2, b2)

    def prompt_map(self, shift, s: int) -> list:
        """Prompt rows (state shift + u, u in [P0, P0 + uspan]): window k = s to TOP + offset,
        every other row to u."""
        P0, lo_w, off = self.P0, self.Zs + self.S * s, self.off
        return [(shift + P0 - _HALF, shift + lo_w - 1, P0 - _HALF, 1),
                (shift + lo_w - _HALF, shift + lo_w + off + _HALF, self.TOP - _HALF, 1),
                (shift + lo_w + off + 1, shift + P0 + self.uspan + _HALF, lo_w + off + 1, 1)]

    def gather_regions(self) -> list:
        """The region lists of layers 1..n: token t = n-1, ..., 0 is the top row, added to every
        row, then parked."""
        out, amax, park, E, W = [], Fraction(0), self.park, self.E, self.W
        for t in range(self.n - 1, -1, -1):
            Et, add_hi = E[t], W[t] + amax       # the head adds V_t + a in [E_t, E_t + add_hi]
            regs = [(park[q] + Et - _HALF, park[q] + Et + add_hi + _HALF, park[q], 0) for q in range(t + 1, self.n)]
            regs.append((2 * Et - _HALF, 2 * Et + 2 * add_hi + _HALF, park[t], 0))    # row t read itself
            regs += [(E[q] + Et - _HALF, E[q] + Et + W[q] + add_hi + amax + _HALF, E[q] - _HALF, 1) for q in range(t)]
            if t > 0:
                regs.append((self.P0 + Et - _HALF, self.P0 + self.spanP + Et + add_hi + amax + _HALF, self.P0 - _HALF, 1))
            else:
                regs += self.prompt_map(Et, 0)
            out.append(regs)
            amax = 2 * amax + W[t]
        assert amax == self.Amax
        return out

    def lookup_regions(self, s: int) -> list:
        """The region list of layer n + 1 + s: output position s read by input row s."""
        TOP, J, B, park, store, last = self.TOP, self.J, self.B, self.park, self.store, s == self.n - 1
        reader = park[s] + (J if s else 0)       # the reader holds reader - nu_s before its lookup
        if last:
            regs = [(reader + TOP, reader + TOP + 1, 0, 1)]
            for q in range(s):                   # stored outputs: store + B m / K + (less than J)
                lo = store[q] + TOP
                regs += [(lo + m * (J + 2) - _HALF, lo + m * (J + 2) + J + _HALF, Fraction(m, self.K), 0)
                         for m in range(self.K)]
            return regs
        regs = [(self.DEAD + TOP - _HALF, self.DEAD + TOP + self.off + _HALF, self.DEAD, 0),
                (2 * TOP - _HALF, 2 * TOP + 2 * self.off + _HALF, self.DEAD, 0)] + self.prompt_map(TOP, s + 1)
        for q in range(s + 1, self.n):          # the next reader gets park + J - nu, the others park + nu
            nxt = q == s + 1
            regs.append((park[q] + TOP - _HALF, park[q] + TOP + J + _HALF, park[q] + (J if nxt else 0)
                         + (_HALF if nxt else -_HALF), -1 if nxt else 1))
        regs.append((reader + TOP - _HALF, reader + TOP + 1 + _HALF, store[s] - B * _HALF, B))
        regs += [(store[q] + TOP - _HALF, store[q] + TOP + B + J + _HALF, store[q] - _HALF, 1) for q in range(s)]
        return regs

    def regions(self) -> list:
        """The region list of every layer after Q1, in order (tests trace every row into them)."""
        return self.gather_regions() + [self.lookup_regions(s) for s in range(self.n)]

    def positions(self) -> tuple:
        n, N, S = self.n, self.N, self.S
        pos_input = _zeros((n, 1))
        for t in range(n):
            pos_input[t, 0] = Fraction(self.raw[t])
        pos_prompt = _zeros((n * N, 1))
        for c in range(N):
            for s in range(n):
                pos_prompt[n * c + s, 0] = Fraction(self.P0 + S * (n * (N - 1) - n * c + s))
        return pos_input, pos_prompt


def _build_broadcast(n: int, K: int, w: Fraction, kind: str, T: Fraction) -> "UniversalNetwork":
    """g for d = 1 and n >= 3 tokens (``proofs/universality.md``, "n >= 3 (d = 1): the broadcast
    construction").  Every attention layer after Q1 has one head that adds the row with the
    largest coordinate 0 to every row (all rows stay positive, so every query reads the maximum);
    the MLPs choose that row.

    Gather (layers 1..n): input token t = n-1, ..., 0 in turn is the top row and is added to every
    row, then parked at a constant level; the drift a doubles at each step, so token t's digit
    multiplier is S n K^t / 2^t and every prompt row gains A = S n c.  Lookup (layers n+1..2n):
    output position s is read from the row of window k = s (folded to the top), which is then
    dead; what a lookup adds to every row (TOP plus the read row's offset) is cancelled on the
    reader by the slope -1 its region gets one layer before; readers s < n-1 store their value
    at the scale B = K (2^n + 2), decoded exactly by a staircase in the last MLP."""
    bc = _Broadcast(n, K, kind, T)
    layers = [bc.q1(w)] + [_pl_layer(kind, T, regs) for regs in bc.regions()]
    model = Model(d=1, layers=layers, causal=False,
                  meta={"builder": "universality", "construction": "broadcast", "d": 1, "n": n, "K": K,
                        "w": str(w), "kind": kind, "temperature": None if kind == "hardmax" else str(T)})
    layout = {"construction": "broadcast", "raw_input": bc.raw, "E_input": bc.E, "P0": bc.P0, "S": bc.S,
              "TOP": bc.TOP, "park": bc.park, "store": bc.store, "B": bc.B, "window": bc.Zs,
              "regions": bc.regions()}
    return UniversalNetwork(1, n, K, w, kind, None if kind == "hardmax" else T, model, *bc.positions(), layout)


def build_network(d: int, n: int, K: int, w: Fraction, kind: str = "hardmax",
                  temperature: Optional[Fraction] = None) -> UniversalNetwork:
    """Build the frozen network g of Theorem U (module docstring) for ``delta = 1/K``.

    Parameters
    ----------
    d, n : token size and number of input tokens (``n`` in {1, 2}, or ``n >= 3`` with ``d = 1``).
    K : grid steps per coordinate (``delta = 1/K``).
    w : ramp width of the ReLU staircases, ``0 < w < 1/K``.
    kind : ``"hardmax"`` (exact version) or ``"softmax"`` (standard version).
    temperature : softmax temperature T > 0 (scores are divided by T); ignored for hardmax.
    """
    w, T = _checked_sizes(d, n, K, w, kind, temperature)
    if n >= 3:
        return _build_broadcast(n, K, w, kind, T)
    pl = _plan(d, n, K, kind)
    layers = [_staircase_layer(pl, w)] + ([_gate_layer(pl)] if d >= 2 else [])
    gather, window = _gather_layer(pl, T)
    layers += [gather, _lookup_layer(pl, T)]
    model = Model(d=d, layers=layers, causal=False,
                  meta={"builder": "universality", "d": d, "n": n, "K": K, "w": str(w), "kind": kind,
                        "temperature": None if kind == "hardmax" else str(T)})
    layout = {"E_input": pl.E, "P0": pl.P0, "S": S_SPACING, "H": H_LEVEL, "Q": Q_LEVEL, "span": pl.span,
              "window": window, "bottom": pl.bottom, "top": pl.top}
    return UniversalNetwork(d, n, K, w, kind, None if kind == "hardmax" else T, model,
                            *_positional(pl), layout)


# =========================================================================== cells and prompts

def grid_index(v: Fraction, K: int) -> int:
    """Index of the grid cell [k/K, (k+1)/K) holding v in [0, 1] (1 goes to K - 1)."""
    return min(int(math.floor(Fraction(v) * K)), K - 1)


def cell_index(digits: Sequence[int], K: int) -> int:
    """c = sum_e k_e K^e over the flattened entries e = t d + i."""
    return sum(int(k) * K ** e for e, k in enumerate(digits))


def cell_digits(c: int, K: int, dn: int) -> list[int]:
    out = []
    for _ in range(dn):
        out.append(c % K)
        c //= K
    return out


def quantized_function(target: Target, K: int) -> list[list[int]]:
    """fbar on every cell, as grid indices: fbar(c) = quant(f(quant X)) with quant = floor(K .)
    (clipped to K - 1); entry e of cell c is ``out[c][e]`` (the value is ``out[c][e] / K``)."""
    dn = target.d * target.n
    out = []
    for c in range(K ** dn):
        corner = [Fraction(k, K) for k in cell_digits(c, K, dn)]
        out.append([grid_index(v, K) for v in target.f_exact(corner)])
    return out


def build_prompt(fbar: list[list[int]], d: int, n: int, K: int) -> np.ndarray:
    """The prompt P_f (m_p x d grid values, before positional encodings): token n c + s holds
    fbar(c) at output position s."""
    N = len(fbar)
    P = _zeros((n * N, d))
    for c, vals in enumerate(fbar):
        for s in range(n):
            for i in range(d):
                P[n * c + s, i] = Fraction(vals[s * d + i], K)
    return P


def decode_prompt(P: np.ndarray, d: int, n: int, K: int) -> list[list[int]]:
    """Inverse of :func:`build_prompt` (so distinct fbar give distinct prompts)."""
    N = P.shape[0] // n
    return [[int(P[n * c + s, i] * K) for s in range(n) for i in range(d)] for c in range(N)]


# =========================================================================== float evaluation

def forward_float(net: UniversalNetwork, P: np.ndarray, X: np.ndarray, batch: int = 8) -> np.ndarray:
    """g([P_f, X])_{:, m_p:} in float64 with :func:`constructions.forward.forward_torch`;
    ``X`` has shape (B, n, d).  Returns (B, n, d)."""
    import torch
    from .forward import forward_torch
    Pe = np.vectorize(float, otypes=[np.float64])(net.encode_prompt(P))
    pe = np.vectorize(float, otypes=[np.float64])(net.pos_input)
    out = []
    X = np.asarray(X, dtype=np.float64)
    for b in range(0, X.shape[0], batch):
        xb = torch.as_tensor(X[b:b + batch] + pe[None], dtype=torch.float64)
        with torch.no_grad():
            out.append(forward_torch(net.model, xb, torch.as_tensor(Pe)).numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0, net.n, net.d))
