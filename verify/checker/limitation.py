"""Single-layer limitation certificates (kind ``limitation-farkas``, status ``proved``).

Everything is re-derived from the question and the inputs; the body carries only hints that are
verified (proofs/soundness_R.md, proofs/tolerance.md, proofs/prop_E.md):

1. the MLP's residual branch has Lipschitz constant <= k < 1: the checker derives k itself
   (:func:`mlp_lipschitz`; the body carries no norm bound);
2. every member ``{"example", "position", "z"}`` names a constrained output whose input token
   equals ``query``; with the question's tolerance EPS, the true attention input lies within
   rho_i = (||y_i - MLP(z_i)|| + sqrt(d) EPS) / (1 - k) of z_i;
3. form ``subspace`` (``phi``): phi^T W_o^j W_v^j = 0 for every head and |phi^T (z_i - x)| >
   ||phi|| rho_i for some member (the only form for hardmax layers);
4. form ``annihilator`` (``head``, ``Phi`` when there are several heads): Phi W_o^o W_v^o = 0 for
   every other head o; V = Phi W_o^j W_v^j, tau_i = Phi (z_i - x);
5. form ``direct-sum`` (``head``, ``gammas``): the stacked W_o = [W_o^1 ... W_o^h] has full column
   rank (the checker finds a prime for which it does), W_o gamma_i = z_i - x exactly, rho_i = 0;
   V = W_v^j, tau_i = gamma_i^j;
6. forms 4 and 5 then need one Farkas combination (``multipliers``: alpha >= 0), or for a head
   with W_k^T W_q x = 0 (alpha = the prompt length) ``alpha_pieces`` that tile exactly the lengths
   the question admits, or ``entropy_pieces`` that tile alpha in [0, oo) with the entropy relation
   (the log terms are the checker's own bounds; a lower entropy inequality needs a fixed length).

Every member must be used (a nonzero multiplier row somewhere; the subspace form names exactly
one member), so no part of the body is a dead hint.  Derived for ``reported``: ``mlp_lipschitz_bound``
(k), and ``certified_min_error`` (subspace and plain annihilator forms): every prompt of any length
has max-norm error at least this number on the members' outputs (proofs/tolerance.md).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Optional

import numpy as np

from .envelope import Context, Outcome
from .inputs import CDataset, CLayer, CModel, exact_mlp, require_plain
from .numbers import (EXP_ARG_LIMIT, LIMB_MIN_SIZE, Mat, Reject, dot, exp_bounds, fields, fmt, integer, matrix, nonneg, norm_bound_holds,
                      rat, sqrt_up, vector)

__all__ = ["check", "mlp_lipschitz", "norm_upper", "log_below", "log_above", "full_column_rank", "PRIMES"]

ZERO = Fraction(0)
#: primes (< 2^27, so that blocked elimination sums stay in int64) for the full-column-rank test, tried in this order
PRIMES = (134217689, 134217649, 134217617, 134217613)
#: exponential arguments are rounded outward to this absolute grid (bits)
ARG_BITS = 128
#: the reported certified_min_error is rounded down to this many significant bits
REPORT_BITS = 64
FORMS = {"attention-free": ({"form", "example", "position"}, set()),
         "subspace": ({"form", "query", "members", "phi"}, set()),
         "annihilator": ({"form", "query", "members", "head"},
                         {"Phi", "multipliers", "alpha_pieces", "entropy_pieces"}),
         "direct-sum": ({"form", "query", "members", "head", "gammas", "multipliers"}, set())}
B = "certificate.body"


# --------------------------------------------------------------------------- norms and logs

def norm_upper(W: Mat) -> Fraction:
    """The checker's own rational upper bound on ||W||_2 (>= 0): the smaller of
    sqrt(||W||_1 ||W||_inf), the Frobenius norm and, for small matrices, a float singular value
    rounded up and proved by exact elimination (b^2 I - W^T W positive definite).  Matrices of at
    least ``LIMB_MIN_SIZE`` entries take the first two from entries rounded up to a fixed-point
    grid (:func:`_grid_sums`).  Remembered by the matrix's full content (a pure function of it)."""
    if W.F is not None:
        key = ("f", W.shape, hashlib.sha256(np.ascontiguousarray(W.F).tobytes()).hexdigest())
    else:
        key = (W.shape, W.D, tuple(int(v) for v in W.N.reshape(-1)))
    if key not in _NORMS:
        if len(_NORMS) > 64:
            _NORMS.clear()
        _NORMS[key] = _norm_upper(W)
    return _NORMS[key]


_NORMS: dict = {}


def _norm_upper(W: Mat) -> Fraction:
    if W.shape[0] * W.shape[1] == 0 or W.is_zero():
        return ZERO
    if W.shape[0] * W.shape[1] >= LIMB_MIN_SIZE:
        n1, ninf, fro = _grid_sums(W)
        best = min(sqrt_up(n1 * ninf), sqrt_up(fro))
    else:
        A = np.abs(W.N)
        n1 = max(int(v) for v in A.sum(axis=0))
        ninf = max(int(v) for v in A.sum(axis=1))
        fro = sum(int(v) * int(v) for v in W.N.reshape(-1))
        best = min(sqrt_up(Fraction(n1 * ninf, W.D * W.D)), sqrt_up(Fraction(fro, W.D * W.D)))
    if min(W.shape) <= 48:
        b = _grid_norm(W)
        if b is not None and b < best:
            return b
    return best


def _grid_sums_float(F: np.ndarray) -> tuple[Fraction, Fraction, Fraction]:
    """:func:`_grid_sums` of a binary64 matrix, on blocks of rows (small temporaries)."""
    E = int(np.frexp(max(float(F.max()), -float(F.min())))[1])     # max |W| < 2^E
    t = GRID_BITS - E
    cols = np.zeros(F.shape[1], dtype=np.int64)
    row_max, hi, lo = 0, 0, 0
    step = max(1, LIMB_MIN_SIZE * 256 // max(F.shape[1], 1))
    for r0 in range(0, F.shape[0], step):
        A = np.abs(F[r0:r0 + step])
        c = np.ceil(np.ldexp(A, t))
        c = np.where(A > 0, np.maximum(c, 1.0), 0.0).astype(np.int64)    # c <= 2^30
        cols += c.sum(axis=0)
        row_max = max(row_max, int(c.sum(axis=1).max()))
        sq = c * c                                                       # < 2^61
        hi += int((sq >> 30).sum())
        lo += int((sq & ((1 << 30) - 1)).sum())
    scale = Fraction(2) ** -t
    return int(cols.max()) * scale, row_max * scale, ((hi << 30) + lo) * scale * scale


#: entries are rounded up to multiples of 2^-t with max |W| 2^t < 2^GRID_BITS
GRID_BITS = 30


def _grid_sums(W: Mat) -> tuple[Fraction, Fraction, Fraction]:
    """Upper bounds on ||W||_1, ||W||_inf and ||W||_F^2 from c_ij = ceil(|W_ij| 2^t), the integer
    t chosen with max |W| 2^t < 2^GRID_BITS: |W_ij| <= c_ij 2^-t, so the column, row and square
    sums of c (exact int64 sums: every c_ij < 2^30, every c_ij^2 split into 30-bit halves) bound
    the exact ones.  A function of W's values alone: binary64 matrices compute c with ``ldexp``
    and ``ceil`` (exact: scaling by a power of two; a result that underflows is raised to 1), any
    other matrix in Python integers, with the same c."""
    if W.F is not None:
        return _grid_sums_float(W.F)
    else:
        Nabs = [[abs(int(v)) for v in row] for row in W.N]
        M = Fraction(max(max(r) for r in Nabs), W.D)
        E = M.numerator.bit_length() - M.denominator.bit_length()
        while Fraction(2) ** E <= M:
            E += 1
        while Fraction(2) ** (E - 1) > M:
            E -= 1
        t = GRID_BITS - E
        num, den = (1 << t, W.D) if t >= 0 else (1, W.D << -t)
        c = np.array([[-((-v * num) // den) for v in row] for row in Nabs], dtype=np.int64)
    scale = Fraction(2) ** -t
    n1 = int(c.sum(axis=0).max()) * scale
    ninf = int(c.sum(axis=1).max()) * scale
    sq = c * c                                   # < 2^60
    fro = ((int((sq >> 30).sum()) << 30) + int((sq & ((1 << 30) - 1)).sum())) * scale * scale
    return n1, ninf, fro


def _grid_norm(W: Mat, bits: int = 24, max_steps: int = 64):
    """The smallest b on the ``bits``-significant-bit grid with b^2 I - W^T W positive definite,
    found by exact tests only: a float singular value merely picks where to start, so the
    answer is a function of W alone (the same on every machine).  None if not found nearby."""
    Wf = np.array([[int(v) / W.D for v in row] for row in W.N], dtype=np.float64)
    smax = float(np.linalg.svd(Wf, compute_uv=False).max())
    if not (smax > 0 and np.isfinite(smax)):
        return None
    b = _up_bits(Fraction(smax), bits)
    holds = norm_bound_holds(W, b)
    for _ in range(max_steps):
        nxt = _step(b, bits, -1 if holds else +1)
        nxt_holds = norm_bound_holds(W, nxt)
        if holds and not nxt_holds:
            return b
        if not holds and nxt_holds:
            return nxt
        b, holds = nxt, nxt_holds
    return None


def _step(b: Fraction, bits: int, direction: int) -> Fraction:
    """The neighbour of grid point b > 0 on the ``bits``-significant-bit grid."""
    e = b.numerator.bit_length() - b.denominator.bit_length()
    g = Fraction(2) ** (e - bits)
    if direction < 0 and b - g < Fraction(2) ** e:   # crossing a power of two: finer grid below
        g = g / 2
    return _up_bits(b + direction * g, bits)


def _up_bits(q: Fraction, bits: int) -> Fraction:
    """q rounded up to ``bits`` significant bits (q > 0)."""
    e = q.numerator.bit_length() - q.denominator.bit_length()
    g = Fraction(2) ** (e - bits)
    return math.ceil(q / g) * g


def _down_bits(q: Fraction, bits: int) -> Fraction:
    if q <= 0:
        return math.floor(q) if q < 0 else ZERO
    e = q.numerator.bit_length() - q.denominator.bit_length()
    g = Fraction(2) ** (e - bits)
    return Fraction(math.floor(q / g)) * g


def mlp_lipschitz(layer: CLayer) -> Fraction:
    """k = norm_upper(W_1) norm_upper(W_2): a rigorous Lipschitz bound of z -> W_2 ReLU(W_1 z + b_1)."""
    return norm_upper(layer.W_1) * norm_upper(layer.W_2)


def _atanh2(u: Fraction) -> tuple[Fraction, Fraction]:
    """[lo, hi] containing 2 atanh(u) = log((1 + u) / (1 - u)) for 0 <= u <= 1/3."""
    total, term, n, u2 = ZERO, u, 0, u * u
    while True:
        total += term / (2 * n + 1)
        n += 1
        term *= u2
        if term < Fraction(1, 1 << 110):
            break
    tail = term / ((2 * n + 1) * (1 - u2))
    return 2 * total, 2 * (total + tail)


def _log_enclosure(a: Fraction) -> tuple[Fraction, Fraction]:
    """[lo, hi] containing log(a) for a rational a > 0 (pure rational arithmetic)."""
    if a <= 0:
        raise Reject(f"logarithm of a non-positive number {a}")
    e = a.numerator.bit_length() - a.denominator.bit_length()
    m = a / Fraction(2) ** e
    while m >= 2:
        m, e = m / 2, e + 1
    while m < 1:
        m, e = m * 2, e - 1
    l2 = _atanh2(Fraction(1, 3))
    lm = _atanh2((m - 1) / (m + 1))
    lo = lm[0] + (e * l2[0] if e >= 0 else e * l2[1])
    hi = lm[1] + (e * l2[1] if e >= 0 else e * l2[0])
    return lo, hi


def log_below(a: Fraction) -> Fraction:
    """The checker's canonical lower bound on log(a) (a 2^-80 grid point)."""
    g = Fraction(1, 1 << 80)
    return math.floor(_log_enclosure(Fraction(a))[0] / g) * g


def log_above(a: Fraction) -> Fraction:
    """The checker's canonical upper bound on log(a) (a 2^-80 grid point)."""
    g = Fraction(1, 1 << 80)
    return math.ceil(_log_enclosure(Fraction(a))[1] / g) * g


def _exp_score(s: Fraction) -> tuple[Fraction, Fraction]:
    """Enclosure of exp(s), the argument first rounded outward to a 2^-ARG_BITS grid."""
    g = Fraction(1, 1 << ARG_BITS)
    lo, hi = math.floor(s / g) * g, math.ceil(s / g) * g
    if lo < -EXP_ARG_LIMIT:
        return ZERO, exp_bounds(max(hi, Fraction(-EXP_ARG_LIMIT)))[1]
    return exp_bounds(lo)[0], exp_bounds(hi)[1]


# --------------------------------------------------------------------------- rank modulo a prime

def _full_rank_mod_p(A: np.ndarray, p: int, b: int = 64) -> bool:
    """Does A (entries in [0, p), int64, p < 2^27) have a pivot in every column modulo p?
    Blocked LU with row pivoting: each panel of b <= 64 columns is eliminated column by column,
    its rows to the right are solved with the panel's unit lower triangle (its inverse applied by
    one product) and the trailing block is updated by one product, both by :func:`_matmul_mod`.
    A column without a pivot means the columns so far are dependent."""
    A = A.copy()
    m, n = A.shape
    b = max(1, min(b, 64))
    for k0 in range(0, n, b):
        k1 = min(k0 + b, n)
        for c in range(k0, k1):
            nz = np.flatnonzero(A[c:, c])
            if nz.size == 0:
                return False
            r = c + int(nz[0])
            if r != c:
                A[[c, r]] = A[[r, c]]
            f = (A[c + 1:, c] * pow(int(A[c, c]), p - 2, p)) % p
            A[c + 1:, c] = f
            if c + 1 < k1:
                # products below p^2 < 2^54, differences above -2^54: exact in int64, and numpy's
                # % of a negative integer by p > 0 lies in [0, p)
                A[c + 1:, c + 1:k1] = (A[c + 1:, c + 1:k1] - f[:, None] * A[c, c + 1:k1]) % p
        if k1 < n:
            w = k1 - k0
            Linv = np.eye(w, dtype=np.int64)     # the panel's row operations, applied to I
            for c in range(w - 1):
                Linv[c + 1:] = (Linv[c + 1:] - A[k0 + c + 1:k1, k0 + c][:, None] * Linv[c]) % p
            A[k0:k1, k1:] = _matmul_mod(Linv, A[k0:k1, k1:], p)
            A[k1:, k1:] = (A[k1:, k1:] - _matmul_mod(A[k1:, k0:k1], A[k0:k1, k1:], p)) % p
    return True


def _matmul_mod(X: np.ndarray, Y: np.ndarray, p: int) -> np.ndarray:
    """(X Y) mod p for int64 X (m x k), Y (k x n) with entries in [0, p), k <= 64, p < 2^27.
    X = X_hi 2^20 + X_lo with X_lo < 2^20, X_hi < 2^7; each float64 product X_lo Y, X_hi Y has
    entries that are sums of k <= 2^6 products of integers below 2^20 and 2^27, every partial sum
    an integer below 2^53 in magnitude, hence computed exactly (binary64, any summation order)."""
    if X.shape[1] > 64 or p >= 1 << 27:
        raise ValueError("_matmul_mod: k <= 64 and p < 2^27 required")
    Yf = Y.astype(np.float64)
    lo = (np.bitwise_and(X, (1 << 20) - 1).astype(np.float64) @ Yf).astype(np.int64) % p
    hi = (np.right_shift(X, 20).astype(np.float64) @ Yf).astype(np.int64) % p
    return (hi * (1 << 20) + lo) % p


def _mod_p(M: Mat, p: int) -> np.ndarray:
    """The numerators N of M modulo p, as int64 in [0, p)."""
    if M._parts is not None:
        sgn, odd, shift = M._parts
        pw = np.array([pow(2, s, p) for s in range(int(shift.max(initial=0)) + 1)], dtype=np.int64)
        return (sgn * (((odd % p) * pw[shift]) % p)) % p
    return (M.N % p).astype(np.int64) if M.N.size else np.zeros(M.shape, dtype=np.int64)


def _hstack(blocks: list) -> Mat:
    """[B_1 ... B_h] as one exact Mat (binary64 blocks: their decompositions put over the largest
    power-of-two denominator, each shift raised by the block's missing factor of two)."""
    if all(b._parts is not None for b in blocks):
        D = max(b.D for b in blocks)
        sh = [b._parts[2].astype(np.int64) + ((D // b.D).bit_length() - 1) for b in blocks]
        return Mat(None, D, F=np.concatenate([b.F for b in blocks], axis=1),
                   parts=(np.concatenate([b._parts[0] for b in blocks], axis=1),
                          np.concatenate([b._parts[1] for b in blocks], axis=1), np.concatenate(sh, axis=1)))
    D = math.lcm(*[b.D for b in blocks])
    return Mat(np.concatenate([b.N * (D // b.D) for b in blocks], axis=1), D)


def full_column_rank(blocks: list) -> bool:
    """Has [B_1 ... B_h] (exact Mats with equal row counts) full column rank?  Sufficient test:
    [N_1 ... N_h] (each block's numerators: its columns scaled by D_i, which leaves the rank
    alone) has a pivot in every column modulo one of :data:`PRIMES`."""
    cols = sum(b.shape[1] for b in blocks)
    if cols > blocks[0].shape[0]:
        return False
    for p in PRIMES:
        A = np.concatenate([_mod_p(b, p) for b in blocks], axis=1)
        if _full_rank_mod_p(A, p):
            return True
    return False


# --------------------------------------------------------------------------- members

@dataclass
class Member:
    example: int
    position: int
    c: list                  # z - x
    keys: list               # visible input tokens
    resid: Fraction          # upper bound on ||y - MLP(z)||_2
    rho0: Fraction = ZERO    # rho_i = rho0 + rho1 EPS (set once k is known)
    rho1: Fraction = ZERO


def _members(raw, ds: CDataset, model: CModel, x: list) -> list:
    if not isinstance(raw, list) or not raw:
        raise Reject(f"{B}.members: expected a non-empty list")
    layer, d, seen, parsed = model.layers[0], model.d, set(), []
    for n, mb in enumerate(raw):
        w = f"{B}.members[{n}]"
        fields(mb, w, {"example", "position", "z"})
        i = integer(mb["example"], f"{w}.example", 0, len(ds.inputs) - 1)
        t = integer(mb["position"], f"{w}.position", 0, len(ds.inputs[i]) - 1)
        if (i, t) in seen:
            raise Reject(f"{w}: example {i} position {t} appears twice")
        seen.add((i, t))
        X, y = ds.inputs[i], ds.outputs[i][t]
        if X[t] != x:
            raise Reject(f"{w}: the input token at example {i} position {t} is not {B}.query")
        if y is None:
            raise Reject(f"{w}: example {i} position {t} has no target (null output)")
        parsed.append((i, t, X, y, vector(mb["z"], f"{w}.z", d)))
    out = []
    for (i, t, X, y, z), mz in zip(parsed, _mlp_many(layer, [p[4] for p in parsed])):
        r = [a - b for a, b in zip(y, mz)]
        keys = X[: t + 1] if model.causal else X
        out.append(Member(i, t, [a - b for a, b in zip(z, x)], keys, sqrt_up(dot(r, r))))
    return out


def _mlp_many(layer: CLayer, zs: list) -> list:
    """[MLP(z) for z in zs] = z + W_2 ReLU(W_1 z + b_1) + b_2, exactly (one pass per matrix)."""
    pres = layer.W_1.mv_many(zs)
    hids = [[max(p + b, ZERO) for p, b in zip(pre, layer.b_1)] for pre in pres]
    posts = layer.W_2.mv_many(hids)
    return [[a + b + c for a, b, c in zip(z, post, layer.b_2)] for z, post in zip(zs, posts)]


def _radii(members: list, k: Fraction, d: int) -> None:
    """rho_i(EPS) = (||y_i - MLP(z_i)|| + sqrt(d) EPS) / (1 - k)."""
    sd = sqrt_up(Fraction(d))
    for m in members:
        m.rho0, m.rho1 = m.resid / (1 - k), sd / (1 - k)


# --------------------------------------------------------------------------- subspace form

def _subspace(layer: CLayer, body: dict, members: list, tol: Fraction, d: int) -> Outcome:
    if len(members) != 1:
        raise Reject(f"{B}.members: the subspace form names exactly one member, found {len(members)}")
    phi = vector(body["phi"], f"{B}.phi", d)
    if not any(phi):
        raise Reject(f"{B}.phi: expected a nonzero functional")
    for j, h in enumerate(layer.heads):
        if any(h["W_v"].vm(h["W_o"].vm(phi))):
            raise Reject(f"{B}.phi: phi^T W_o W_v != 0 for head {j}")
    nphi = sqrt_up(dot(phi, phi))
    # it holds at EPS iff |phi^T c| > nphi (rho0 + rho1 EPS), i.e. EPS < E
    m = members[0]
    E = (abs(dot(phi, m.c)) / nphi - m.rho0) / m.rho1
    if not tol < E:
        raise Reject(f"{B}.phi: |phi^T (z - x)| <= ||phi|| rho at tolerance {fmt(tol)}")
    return Outcome(f"the target's attention part leaves the attention subspace (L3); every prompt has "
                   f"error >= {float(E):.4g}", {"certified_min_error": fmt(_down_bits(E, REPORT_BITS))})


# --------------------------------------------------------------------------- attention-free form

def _attention_free(model: CModel, ds: CDataset, body: dict, tol: Fraction) -> Outcome:
    """Every head of every layer has W_o W_v = 0 exactly, so attention adds nothing: the output at
    a token is the composition of the layers' MLPs applied to that token alone, for every prompt of
    every length.  A target farther than the tolerance from it is reached by no prompt.  Needs no
    injectivity and no exponential.  Body: ``{"form", "example", "position"}``."""
    fields(body, B, {"form", "example", "position"})
    for li, layer in enumerate(model.layers):
        for j, h in enumerate(layer.heads):
            if any(int(v) for v in h["W_o"].N.dot(h["W_v"].N).reshape(-1)):
                raise Reject(f"{B}.form: W_o W_v != 0 for layer {li} head {j}; attention is not inert")
    i = integer(body["example"], f"{B}.example", 0, len(ds.inputs) - 1)
    t = integer(body["position"], f"{B}.position", 0, len(ds.inputs[i]) - 1)
    y = ds.outputs[i][t]
    if y is None:
        raise Reject(f"{B}: example {i} position {t} has no target (null output)")
    out = list(ds.inputs[i][t])
    for layer in model.layers:
        out = exact_mlp(layer, out)
    E = max(abs(a - b) for a, b in zip(out, y))
    if not E > tol:
        raise Reject(f"{B}: the target at example {i} position {t} is within question.tolerance of the "
                     f"prompt-independent output")
    return Outcome(f"attention adds nothing (W_o W_v = 0 in every head), and the target at example {i} "
                   f"position {t} is {float(E):.4g} away from the output every prompt gives",
                   {"certified_min_error": fmt(_down_bits(E, REPORT_BITS))})


# --------------------------------------------------------------------------- head blocks

@dataclass
class Block:
    head: int
    hmat: dict               # the head's matrices
    V: Mat                   # q x d
    taus: list               # per member, q entries
    kappa: Callable          # lam_i -> upper bound on ||Phi^T lam_i|| (0 when rho = 0 is required)


def _heads_kill(layer: CLayer, phi: list, skip: int) -> Optional[int]:
    for o, h in enumerate(layer.heads):
        if o != skip and any(h["W_v"].vm(h["W_o"].vm(phi))):
            return o
    return None


def _annihilator(layer: CLayer, body: dict, members: list, d: int) -> Block:
    j = integer(body["head"], f"{B}.head", 0, len(layer.heads) - 1)
    if len(layer.heads) == 1:
        if "Phi" in body:
            raise Reject(f"{B}.Phi: with one head Phi is the identity and is not written")
        Phi = [[Fraction(int(r == c)) for c in range(d)] for r in range(d)]
    else:
        if "Phi" not in body:
            raise Reject(f"{B}.Phi: missing (several heads)")
        Phi = matrix(body["Phi"], f"{B}.Phi", cols=d)
        if not Phi:
            raise Reject(f"{B}.Phi: expected at least one row")
        for n, phi in enumerate(Phi):
            o = _heads_kill(layer, phi, j)
            if o is not None:
                raise Reject(f"{B}.Phi[{n}]: does not annihilate head {o}'s W_o W_v")
    h = layer.heads[j]
    V = Mat.from_fractions([h["W_v"].vm(h["W_o"].vm(phi)) for phi in Phi])
    taus = [[dot(phi, m.c) for phi in Phi] for m in members]

    def kappa(lam_i):
        v = [sum((lam_i[r] * Phi[r][c] for r in range(len(Phi)) if lam_i[r]), ZERO) for c in range(d)]
        return sqrt_up(dot(v, v))
    return Block(j, h, V, taus, kappa)


def _direct_sum(layer: CLayer, body: dict, members: list, tol: Fraction) -> Block:
    j = integer(body["head"], f"{B}.head", 0, len(layer.heads) - 1)
    if tol != 0 or any(m.rho0 for m in members):
        raise Reject(f"{B}: the direct-sum form needs exact preimages (MLP(z) = y) and tolerance 0")
    Wo = [h["W_o"] for h in layer.heads]
    sizes = [w.shape[1] for w in Wo]
    if not full_column_rank(Wo):
        raise Reject("model: the stacked W_o is not certified to have full column rank (no direct sum)")
    G = matrix(body["gammas"], f"{B}.gammas", rows=len(members), cols=sum(sizes))
    off = [sum(sizes[:o]) for o in range(len(sizes))]
    for n, (wg, m) in enumerate(zip(_hstack(Wo).mv_many(G), members)):
        if wg != m.c:
            raise Reject(f"{B}.gammas[{n}]: W_o gamma != z - x")
    h = layer.heads[j]
    return Block(j, h, h["W_v"], [g[off[j]:off[j] + sizes[j]] for g in G], lambda lam_i: ZERO)


# --------------------------------------------------------------------------- the Farkas combination

@dataclass
class Terms:
    """The combination's lower bound, affine in EPS: alpha coefficient ga0 - ga1 EPS, and per
    distinct score s a coefficient h0 - h1 EPS of exp(s)."""
    ga0: Fraction
    ga1: Fraction
    per_score: dict


def _multipliers(raw, where: str, members: list, blk: Block, used: set) -> list:
    """One row of q multipliers per member; rows that are not all zero mark their member used."""
    lam = matrix(raw, where, rows=len(members), cols=blk.V.shape[0])
    used.update(i for i, row in enumerate(lam) if any(row))
    return lam


def _all_used(members: list, used: set) -> None:
    for i in range(len(members)):
        if i not in used:
            raise Reject(f"{B}.members[{i}]: its multipliers are zero everywhere (an unused member is not allowed)")


def _terms(blk: Block, members: list, lam: list, x: list, ineq=None) -> Terms:
    """ineq = (g, mu_lo, c_lo, mu_hi, c_hi): the entropy inequalities' multipliers."""
    q = blk.V.shape[0]
    total = [sum((l_[r] for l_ in lam), ZERO) for r in range(q)]
    pi = blk.V.vm(total)
    if ineq is not None:
        g, mu_lo, c_lo, mu_hi, c_hi = ineq
        pi = [a - (mu_lo - mu_hi) * b for a, b in zip(pi, g)]
    if any(pi):
        raise Reject(f"{B}: the multipliers do not cancel the prompt term pi (sum_i lambda_i^T V != 0)")
    qx = blk.hmat["W_q"].mv(x)
    ga0, ga1, per = ZERO, ZERO, {}
    for lam_i, tau, m in zip(lam, blk.taus, members):
        kap = blk.kappa(lam_i) if any(lam_i) else ZERO
        w0, w1 = kap * m.rho0, kap * m.rho1
        ga0 -= dot(lam_i, tau) + w0
        ga1 += w1
        for key in m.keys:
            s = dot(blk.hmat["W_k"].mv(key), qx)
            c = dot(lam_i, [a - b for a, b in zip(blk.V.mv(key), tau)])
            h0, h1 = per.get(s, (ZERO, ZERO))
            per[s] = (h0 + c - w0, h1 + w1)
    if ineq is not None:
        ga0 += mu_lo * c_lo - mu_hi * c_hi
    return Terms(ga0, ga1, {s: (h0, h1, _exp_score(s)) for s, (h0, h1) in per.items()})


def _value(t: Terms, eps: Fraction, a_lo: Fraction, a_hi: Optional[Fraction]) -> Optional[Fraction]:
    """The combination's lower bound at tolerance eps, alpha in [a_lo, a_hi]; None if unbounded below."""
    ga = t.ga0 - t.ga1 * eps
    if ga < 0 and a_hi is None:
        return None
    return (ga * a_lo if ga >= 0 else ga * a_hi) + _F(t, eps)


def _holds(t: Terms, eps: Fraction, a_lo: Fraction, a_hi: Optional[Fraction], what: str) -> Fraction:
    v = _value(t, eps, a_lo, a_hi)
    if v is None:
        raise Reject(f"{what}: the alpha coefficient is negative on an unbounded range of alpha")
    if v <= 0:
        raise Reject(f"{what}: the combination is not separated from 0 on the exponential enclosures")
    return v


def _F(t: Terms, eps: Fraction) -> Fraction:
    total = ZERO
    for h0, h1, (lo, hi) in t.per_score.values():
        h = h0 - h1 * eps
        total += h * lo if h > 0 else h * hi
    return total


def _min_error(t: Terms) -> Optional[Fraction]:
    """sup{EPS >= 0 : the plain combination (alpha >= 0) holds at EPS}, exactly; None when
    unbounded.  It holds iff ga0 - ga1 EPS >= 0 and F(EPS) > 0, where F (the exponential terms) is
    concave, piecewise linear and non-increasing in EPS: its root is found on its linear pieces."""
    ends = [t.ga0 / t.ga1] if t.ga1 > 0 else []
    prev = ZERO
    for p in sorted({h0 / h1 for h0, h1, _ in t.per_score.values() if h1 > 0 and h0 > 0}):
        f0, f1 = _F(t, prev), _F(t, p)
        if f1 <= 0:
            ends.append(prev + f0 * (p - prev) / (f0 - f1))
            break
        prev = p
    else:
        f0 = _F(t, prev)
        slope = _F(t, prev + 1) - f0       # F is linear beyond its last breakpoint
        if slope < 0:
            ends.append(prev + f0 / -slope)
    return min(ends) if ends else None


# --------------------------------------------------------------------------- alpha ranges

def _alpha_pieces(raw, K, blk: Block, members: list, x: list, eps: Fraction, used: set) -> str:
    g = blk.hmat["W_k"].vm(blk.hmat["W_q"].mv(x))
    if any(g):
        raise Reject(f"{B}.alpha_pieces: need W_k^T W_q x = 0 for head {blk.head} (then alpha = the prompt length)")
    if not isinstance(raw, list) or not raw:
        raise Reject(f"{B}.alpha_pieces: expected a non-empty list")
    nxt = 1 if K == "any" else K
    for n, pc in enumerate(raw):
        w = f"{B}.alpha_pieces[{n}]"
        fields(pc, w, {"from", "to", "multipliers"})
        lo = integer(pc["from"], f"{w}.from", 1)
        hi = None if pc["to"] is None else integer(pc["to"], f"{w}.to", lo)
        if lo != nxt:
            raise Reject(f"{w}.from: expected {nxt} (the pieces must tile the admissible prompt lengths)")
        if (hi is None) != (n == len(raw) - 1) and K == "any":
            raise Reject(f"{w}.to: only the last piece is unbounded, and it must be")
        if K != "any" and (hi != K or len(raw) != 1):
            raise Reject(f"{B}.alpha_pieces: for question.prompt_length {K} expected one piece from {K} to {K}")
        lam = _multipliers(pc["multipliers"], f"{w}.multipliers", members, blk, used)
        _holds(_terms(blk, members, lam, x), eps, Fraction(lo), None if hi is None else Fraction(hi), w)
        nxt = None if hi is None else hi + 1
    return "every prompt length" if K == "any" else f"prompt length {K}"


def _entropy_piece(pc, w: str, K, blk, members, x, eps, g, used: set) -> Optional[Fraction]:
    fields(pc, w, {"from", "to", "mu_lo", "mu_hi", "multipliers"})
    lo = nonneg(pc["from"], f"{w}.from")
    hi = None if pc["to"] is None else rat(pc["to"], f"{w}.to")
    if hi is not None and hi <= lo:
        raise Reject(f"{w}.to: expected a number > from")
    mu_lo, mu_hi = nonneg(pc["mu_lo"], f"{w}.mu_lo"), nonneg(pc["mu_hi"], f"{w}.mu_hi")
    c_lo = c_hi = ZERO
    if mu_lo:
        if K == "any" or lo == 0:
            raise Reject(f"{w}.mu_lo: the lower entropy inequality needs a fixed prompt length and from > 0")
        c_lo = log_below(lo) - log_above(Fraction(K))
    if mu_hi:
        if hi is None:
            raise Reject(f"{w}.mu_hi: the upper entropy inequality needs a bounded piece")
        c_hi = log_above(hi)
    lam = _multipliers(pc["multipliers"], f"{w}.multipliers", members, blk, used)
    _holds(_terms(blk, members, lam, x, (g, mu_lo, c_lo, mu_hi, c_hi)), eps, lo, hi, w)
    return hi


def _entropy_pieces(raw, K, blk: Block, members: list, x: list, eps: Fraction, used: set) -> str:
    g = blk.hmat["W_k"].vm(blk.hmat["W_q"].mv(x))
    if not isinstance(raw, list) or not raw:
        raise Reject(f"{B}.entropy_pieces: expected a non-empty list")
    nxt = ZERO
    for n, pc in enumerate(raw):
        w = f"{B}.entropy_pieces[{n}]"
        if not isinstance(pc, dict) or rat(pc.get("from"), f"{w}.from") != nxt:
            raise Reject(f"{w}.from: expected {fmt(nxt)} (the pieces must tile alpha in [0, oo))")
        nxt = _entropy_piece(pc, w, K, blk, members, x, eps, g, used)
        if (nxt is None) != (n == len(raw) - 1):
            raise Reject(f"{w}.to: only the last piece is unbounded, and it must be")
    return "every prompt length" if K == "any" else f"prompt length {K}"


# --------------------------------------------------------------------------- the check

def _decide(blk: Block, body: dict, q: dict, members: list, x: list, k: Fraction) -> Outcome:
    eps, K = q["tolerance"], q["prompt_length"]
    alphas = [n for n in ("multipliers", "alpha_pieces", "entropy_pieces") if n in body]
    if len(alphas) != 1:
        raise Reject(f"{B}: expected exactly one of multipliers, alpha_pieces, entropy_pieces; found {alphas}")
    derived, how, used = {}, f"head {blk.head}: Farkas combination > 0 ", set()
    if alphas[0] == "alpha_pieces":
        how += "for " + _alpha_pieces(body["alpha_pieces"], K, blk, members, x, eps, used) + " (alpha = m_p)"
    elif alphas[0] == "entropy_pieces":
        how += "for " + _entropy_pieces(body["entropy_pieces"], K, blk, members, x, eps, used) + " (entropy relation)"
    else:
        lam = _multipliers(body["multipliers"], f"{B}.multipliers", members, blk, used)
        t = _terms(blk, members, lam, x)
        _holds(t, eps, ZERO, None, f"{B}.multipliers")
        how += "for every alpha >= 0"
        E = _min_error(t) if body["form"] == "annihilator" else None
        if E is not None and _down_bits(E, REPORT_BITS) > 0:   # 0 would say nothing
            derived["certified_min_error"] = fmt(_down_bits(E, REPORT_BITS))
            how += f"; every prompt has error >= {float(E):.4g}"
    _all_used(members, used)
    return Outcome(f"{how} ({len(members)} examples share the query; k = {float(k):.4g})", derived)


def check(ctx: Context) -> Outcome:
    """Check a ``limitation-farkas`` certificate against the question and the inputs."""
    q, model, ds = ctx.question, ctx.inputs["model"], ctx.inputs["dataset"]
    require_plain(model, ds, "limitation-farkas")
    if q.get("prompt_norm") is not None:
        raise Reject("question.prompt_norm: limitation certificates cover prompts of every norm; expected none")
    if isinstance(ctx.body, dict) and ctx.body.get("form") == "attention-free":
        return _attention_free(model, ds, ctx.body, q["tolerance"])
    if len(model.layers) != 1:
        raise Reject(f"model: limitation certificates are for single-layer models, found {len(model.layers)} layers")
    layer, body = model.layers[0], ctx.body
    form = body.get("form") if isinstance(body, dict) else None
    if form not in FORMS:
        raise Reject(f"{B}.form: expected one of {sorted(FORMS)}, found {str(form)[:40]!r}")
    fields(body, B, *FORMS[form])
    if layer.kind != "softmax" and form != "subspace":
        raise Reject(f"{B}.form: for a hardmax layer only the subspace form (L3) applies")
    x = vector(body["query"], f"{B}.query", model.d)
    members = _members(body["members"], ds, model, x)
    k = mlp_lipschitz(layer)
    if k >= 1:
        raise Reject(f"model: the MLP is not certified injective (k = {float(k):.4g} >= 1)")
    _radii(members, k, model.d)
    if form == "subspace":
        out = _subspace(layer, body, members, q["tolerance"], model.d)
    else:
        if form == "annihilator":
            blk = _annihilator(layer, body, members, model.d)
        else:
            blk = _direct_sum(layer, body, members, q["tolerance"])
        out = _decide(blk, body, q, members, x, k)
    out.derived["mlp_lipschitz_bound"] = fmt(k)
    return out
