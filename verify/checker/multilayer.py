"""Theorem M certificates (kind ``multilayer-injectivity``): no prompt memorizes two examples that a
causal model provably separates (proofs/multilayer.md).

Body (nothing else; the model and dataset come from the result's inputs, the tolerance and the
prompt norm from its question)::

    {"condition": 0 | 1 | 2,
     "norms": {"layers[0].mlp.W_1": k, ...},     # grid bounds k / 2^20 (empty for condition 0)
     "pair": {"examples": [i, i2], "position": t}}

What a passed check establishes, for the question's tolerance ``tol`` and every prompt of every
length (so for the question's prompt length, "any" or K):

* condition 0: examples i < i2 see the same tokens (positions <= t for a causal model, the whole
  input otherwise) and max_e |y_e - y'_e| > 2 tol: no model output is within tol of both targets.
* condition 1 (causal; any prompt norm, so the question's ``prompt_norm`` may be absent or any R):
  every head has W_k^T W_q = 0 exactly, and per layer a_l = ||sum_j W_o^j W_v^j|| < 1,
  k_l = ||W_1|| ||W_2|| < 1.
* condition 2 (causal; the question's ``prompt_norm`` R is required): with B_0 = max(R, R_x)
  (R_x: the largest input-token norm of the dataset) and Lemma 2's recursion B_l, per layer
  L_l = sum_j ||W_o^j W_v^j|| (1 + 2 ||W_k^j^T W_q^j|| B_l^2) < 1 and k_l < 1; hardmax heads need
  W_k^T W_q = 0.

For conditions 1 and 2, c = prod_l (1 - a_l)(1 - k_l) is a lower Lipschitz constant of the prompted
network in the token at position t (shared prefix fixed), and the pair (same tokens before t,
targets given at t) has margin c^2 ||x - x'||^2 - (||y - y'|| + 2 tol sqrt(d))^2 > 0 (norms rounded
up to the grid), so no prompt memorizes both within tol.

Every spectral norm is the canonical grid bound: k = 0 iff W = 0, else the least k >= 1 with
(k / 2^20)^2 I - W W^T positive definite; for matrices with both sides > 96,
k = ceil(2^20 sqrt(||W||_1 ||W||_inf)).  The body's k must be that value, so no other number is
accepted.  Positive definiteness is decided exactly: by a certificate that floats only find (an
integer L with M - L L^T strictly diagonally dominant, or an integer v with v^T M v <= 0), else by
Sylvester's test with fraction-free Bareiss pivots.  Everything else is recomputed in exact
rationals.  Models whose exact products or eliminations would exceed the limits below are refused
(entries of more than MAX_ENTRY_BITS bits, about MAX_PRODUCT_MULTS word multiplications, an
elimination budget), so a small hostile file cannot keep the checker busy for hours.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional

import numpy as np

from .envelope import Context, Outcome
from .inputs import CDataset, CModel, require_plain
from .numbers import Mat, Reject, fields, fmt, integer

__all__ = ["check", "grid_norm_holds", "layer_matrices", "GRID_BITS"]

GRID_BITS = 20
GRID = 1 << GRID_BITS
EXACT_GRAM_MAX = 96
MAX_GRID_K = 1 << 200
#: limits that make the checker refuse rather than hang on a small hostile file: the bits of any
#: weight's numerator or common denominator (every binary64 value needs < 2200), the integer
#: multiplications spent forming products and Gram matrices, and the estimated cost (n^4 b^1.5,
#: about 1.6e-10 s each) of the fraction-free eliminations that float-guided certificates did not settle
MAX_ENTRY_BITS = 4096
MAX_PRODUCT_MULTS = 1 << 26
MAX_ELIMINATION_COST = 1 << 37


# --------------------------------------------------------------------------- exact matrices

def _mul(A: Mat, B: Mat) -> Mat:
    return Mat(A.N.dot(B.N), A.D * B.D)


def _transpose(A: Mat) -> Mat:
    return Mat(A.N.T.copy(), A.D)


def _add(A: Mat, B: Mat) -> Mat:
    L = A.D * B.D // math.gcd(A.D, B.D)
    return Mat(A.N * (L // A.D) + B.N * (L // B.D), L)


def _bits(M: np.ndarray) -> int:
    return max((int(v).bit_length() for v in np.abs(M).reshape(-1)), default=0)


def _float_guided(M: np.ndarray) -> Optional[bool]:
    """Positive definiteness of a symmetric integer matrix settled by an exact certificate that
    floats only find: True when M = P + E with P = L L^T (L an integer matrix, so P is PSD) and E
    strictly diagonally dominant with a positive diagonal (so E is PD), up to a power-of-two
    scale; False when an integer vector v has v^T M v <= 0; None when neither was found."""
    n = M.shape[0]
    shift = max(_bits(M) - 64, 0)
    Mf = np.array([[float(int(v) >> shift) for v in row] for row in M])
    try:
        lam, vecs = np.linalg.eigh(Mf)
    except np.linalg.LinAlgError:
        return None
    if not (np.all(np.isfinite(lam)) and np.all(np.isfinite(vecs))):
        return None
    if lam[0] <= 0:
        v = np.empty(n, dtype=object)
        v[:] = [int(round(x * 2.0 ** 52)) for x in vecs[:, 0]]
        return False if any(v) and int(v.dot(M.dot(v))) <= 0 else None
    try:
        L = np.linalg.cholesky(Mf - (lam[0] / 2) * np.eye(n))
    except np.linalg.LinAlgError:
        return None
    t = 52 - math.frexp(float(np.max(np.abs(L))))[1]       # L 2^t has entries below 2^52
    Lq = np.empty((n, n), dtype=object)
    Lq[:, :] = [[int(round(math.ldexp(float(x), t))) for x in row] for row in L]
    P, c = Lq.dot(Lq.T), shift - 2 * t                      # M ~ P 2^c
    E = M - P * (1 << c) if c >= 0 else M * (1 << -c) - P
    A = np.abs(E)
    diag = [int(E[i, i]) for i in range(n)]
    off = [int(v) for v in A.sum(axis=1)]
    return True if all(dv > 0 and 2 * dv > o for dv, o in zip(diag, off)) else None


def _is_pd(M: np.ndarray, budget: Optional[list] = None) -> bool:
    """Exact positive definiteness of a symmetric integer matrix: a float-guided exact certificate
    when one is found, else Sylvester's criterion, with the leading principal minors taken as the
    pivots of fraction-free (Bareiss) elimination.  ``budget`` ([units left]) is charged the
    elimination's estimated cost; beyond it the check is refused (Reject), never run for hours."""
    if M.shape[0] == 0 or any(int(M[i, i]) <= 0 for i in range(M.shape[0])):
        return M.shape[0] == 0
    found = _float_guided(M)
    if found is not None:
        return found
    if budget is not None:
        n, b = M.shape[0], max(_bits(M), 1)
        budget[0] -= n ** 4 * b * math.isqrt(b)
        if budget[0] < 0:
            raise Reject(f"certificate.body.norms: an exact {n} x {n} positive-definiteness test on {b}-bit "
                         "integers is beyond the checker's limit")
    A = M.copy()
    n, prev = A.shape[0], 1
    for k in range(n):
        p = int(A[k, k])
        if p <= 0:
            return False
        if k + 1 < n:
            A[k + 1:, k + 1:] = (A[k + 1:, k + 1:] * p - np.outer(A[k + 1:, k], A[k, k + 1:])) // prev
        prev = p
    return True


def _gram(W: Mat) -> np.ndarray:
    """The integer matrix G with G / D^2 = W W^T (or W^T W, whichever is smaller)."""
    N = W.N if W.shape[0] <= W.shape[1] else W.N.T
    return N.dot(N.T)


def _pd_at(G: np.ndarray, D: int, k: int, budget: Optional[list] = None) -> bool:
    """Is (k / 2^20)^2 I - G / D^2 positive definite?  (Scaled by 2^40 D^2 > 0.)"""
    M = G * (-GRID * GRID)
    for i in range(M.shape[0]):
        M[i, i] += k * k * D * D
    return _is_pd(M, budget)


def _cheap_k(W: Mat) -> int:
    """ceil(2^20 r / D) with r = ceil(sqrt(n1 ninf)), n1, ninf the integer column and row sums."""
    A = np.abs(W.N)
    prod = max(int(v) for v in A.sum(axis=0)) * max(int(v) for v in A.sum(axis=1))
    r = math.isqrt(prod)
    r += r * r < prod
    return -(-(r * GRID) // W.D)


def grid_norm_holds(W: Mat, k: int, budget: Optional[list] = None) -> bool:
    """Is k the canonical grid bound of ||W||_2 (see the module docstring)?"""
    if W.is_zero():
        return k == 0
    if min(W.shape) > EXACT_GRAM_MAX:
        return k == _cheap_k(W)
    G = _gram(W)
    return k >= 1 and _pd_at(G, W.D, k, budget) and not _pd_at(G, W.D, k - 1, budget)


def _check_sizes(model: CModel) -> None:
    """Refuse models whose exact products would cost more than the checker's limits: entries of
    more than MAX_ENTRY_BITS bits, or more than MAX_PRODUCT_MULTS multiplications (each counted
    (b / 64)^1.6 times for b-bit integers) to form the products and their Gram matrices."""
    mults, bits = 0, 64
    for li, layer in enumerate(model.layers):
        mats = [("mlp.W_1", layer.W_1), ("mlp.W_2", layer.W_2)] + [
            (f"attention.heads[{j}].{name}", h[name]) for j, h in enumerate(layer.heads) for name in h]
        for name, W in mats:
            b = max(W.D.bit_length(), _bits(W.N))
            if b > MAX_ENTRY_BITS:
                raise Reject(f"inputs.model: layers[{li}].{name} has entries of {b} bits, more than the checker's "
                             f"limit {MAX_ENTRY_BITS}")
            bits = max(bits, b)
        d, r = model.d, layer.W_1.shape[0]
        mults += 2 * min(d, r) ** 2 * max(d, r)                          # Gram matrices of W_1, W_2
        for h in layer.heads:
            mults += 2 * d * d * h["W_q"].shape[0] + 2 * d * d * min(d, EXACT_GRAM_MAX)   # products, Grams
    cost = mults * math.ceil((bits / 64) ** 1.6)
    if cost > MAX_PRODUCT_MULTS:
        raise Reject(f"inputs.model: the exact products and Gram matrices need about {cost} word multiplications, "
                     f"beyond the checker's limit {MAX_PRODUCT_MULTS}")


def layer_matrices(model: CModel, condition: int) -> dict:
    """Every matrix whose norm the condition uses, by name: per layer W_1, W_2, each head's
    A_j = W_k^T W_q, and V = sum_j W_o W_v (condition 1) or each V_j = W_o W_v (condition 2)."""
    out = {}
    for li, layer in enumerate(model.layers):
        out[f"layers[{li}].mlp.W_1"] = layer.W_1
        out[f"layers[{li}].mlp.W_2"] = layer.W_2
        total = None
        for hj, h in enumerate(layer.heads):
            V = _mul(h["W_o"], h["W_v"])
            total = V if total is None else _add(total, V)
            if condition == 2:
                out[f"layers[{li}].heads[{hj}].W_o W_v"] = V
            out[f"layers[{li}].heads[{hj}].W_k^T W_q"] = _mul(_transpose(h["W_k"]), h["W_q"])
        if condition == 1:
            out[f"layers[{li}].sum_j W_o W_v"] = total
    return out


def _norms(obj, mats: dict) -> dict:
    """The body's grid norms, each verified canonical; returns name -> k / 2^20."""
    where = "certificate.body.norms"
    fields(obj, where, set(mats))
    out, budget = {}, [MAX_ELIMINATION_COST]
    for name, W in mats.items():
        k = integer(obj[name], f"{where}[{name!r}]", 0, MAX_GRID_K)
        if not grid_norm_holds(W, k, budget):
            raise Reject(f"{where}[{name!r}]: {k} is not the grid bound of the spectral norm "
                         f"(the least k with (k/2^{GRID_BITS})^2 I - W W^T positive definite)")
        out[name] = Fraction(k, GRID)
    return out


# --------------------------------------------------------------------------- grid roundings

def _sqrt_grid_up(q: Fraction) -> Fraction:
    """ceil(2^20 sqrt(q)) / 2^20, exactly (the least k with k^2 >= 2^40 q)."""
    p, d = q.numerator * GRID * GRID, q.denominator
    k = math.isqrt(p // d)
    while k * k * d < p:
        k += 1
    return Fraction(k, GRID)


def _vec_norm_up(v) -> Fraction:
    return _sqrt_grid_up(sum((x * x for x in v), Fraction(0)))


def _ceil_grid(q: Fraction) -> Fraction:
    return Fraction(math.ceil(q * GRID), GRID)


# --------------------------------------------------------------------------- the conditions

def _condition1_layer(li: int, layer, nb: dict) -> Fraction:
    for hj in range(len(layer.heads)):
        if nb[f"layers[{li}].heads[{hj}].W_k^T W_q"] != 0:
            raise Reject(f"condition 1: layers[{li}].attention.heads[{hj}]: W_k^T W_q is not 0")
    return nb[f"layers[{li}].sum_j W_o W_v"]


def _condition2_layer(li: int, layer, nb: dict, B: Fraction) -> Fraction:
    a = Fraction(0)
    for hj in range(len(layer.heads)):
        nA = nb[f"layers[{li}].heads[{hj}].W_k^T W_q"]
        if layer.kind == "hardmax" and nA != 0:
            raise Reject(f"condition 2: layers[{li}].attention.heads[{hj}]: hardmax with W_k^T W_q != 0 "
                         "is not Lipschitz")
        a += nb[f"layers[{li}].heads[{hj}].W_o W_v"] * (1 + 2 * nA * B * B)
    return a


def _next_state_bound(li: int, layer, nb: dict, B: Fraction, k_mlp: Fraction) -> Fraction:
    """Lemma 2: B_{l+1} = B_l (1 + sum_j ||V_j||)(1 + k_l) + ||W_2|| ||b_1|| + ||b_2||, on the grid."""
    att = sum((nb[f"layers[{li}].heads[{hj}].W_o W_v"] for hj in range(len(layer.heads))), Fraction(0))
    return _ceil_grid(B * (1 + att) * (1 + k_mlp) + nb[f"layers[{li}].mlp.W_2"] * _vec_norm_up(layer.b_1)
                      + _vec_norm_up(layer.b_2))


def _layer_bounds(model: CModel, condition: int, nb: dict, B) -> tuple[list, Fraction]:
    """Per-layer rows (rational strings) and c = prod_l (1 - a_l)(1 - k_l); rejects a bound >= 1."""
    rows, c = [], Fraction(1)
    for li, layer in enumerate(model.layers):
        k_mlp = nb[f"layers[{li}].mlp.W_1"] * nb[f"layers[{li}].mlp.W_2"]
        # bias norms: used by condition 2's state bounds, derived for both so the result pins them
        row = {"mlp_contraction": k_mlp, "b_1_norm": _vec_norm_up(layer.b_1), "b_2_norm": _vec_norm_up(layer.b_2)}
        if condition == 1:
            a = _condition1_layer(li, layer, nb)
        else:
            a = _condition2_layer(li, layer, nb, B)
            row["state_bound"] = B
            B = _next_state_bound(li, layer, nb, B, k_mlp)
        if a >= 1:
            raise Reject(f"condition {condition}: layers[{li}].attention: Lipschitz bound {fmt(a)} is not < 1")
        if k_mlp >= 1:
            raise Reject(f"condition {condition}: layers[{li}].mlp: ||W_1|| ||W_2|| <= {fmt(k_mlp)} is not < 1")
        row["attention_lipschitz"] = a
        row["lower_lipschitz"] = (1 - a) * (1 - k_mlp)
        c *= row["lower_lipschitz"]
        rows.append({k: fmt(v) for k, v in row.items()})
    return rows, c


# --------------------------------------------------------------------------- the pair

def _pair(obj, ds: CDataset) -> tuple[int, int, int]:
    where = "certificate.body.pair"
    fields(obj, where, {"examples", "position"})
    ex = obj["examples"]
    if not isinstance(ex, list) or len(ex) != 2:
        raise Reject(f"{where}.examples: expected two example indices")
    n = len(ds.inputs)
    i = integer(ex[0], f"{where}.examples[0]", 0, n - 1)
    i2 = integer(ex[1], f"{where}.examples[1]", 0, n - 1)
    if i >= i2:
        raise Reject(f"{where}.examples: expected two indices i < i2, found {ex}")
    m = min(len(ds.inputs[i]), len(ds.inputs[i2]))
    t = integer(obj["position"], f"{where}.position", 0, m - 1)
    if ds.outputs[i][t] is None or ds.outputs[i2][t] is None:
        raise Reject(f"{where}: examples {i} and {i2} do not both have a target at position {t}")
    return i, i2, t


def _conflict_margin(model: CModel, ds: CDataset, i: int, i2: int, t: int, tol: Fraction) -> Fraction:
    """Condition 0: the same visible tokens, targets more than 2 tol apart in some entry."""
    A, B = ds.inputs[i], ds.inputs[i2]
    same = A[:t + 1] == B[:t + 1] if model.causal else A == B
    if not same:
        seen = f"positions <= {t}" if model.causal else "the whole input (the model is not causal)"
        raise Reject(f"condition 0: examples {i} and {i2} differ in {seen}")
    return max(abs(u - v) for u, v in zip(ds.outputs[i][t], ds.outputs[i2][t])) - 2 * tol


def _injective_margin(ds: CDataset, i: int, i2: int, t: int, c: Fraction, tol: Fraction) -> Fraction:
    """c^2 ||x - x'||^2 - (||y - y'|| + 2 tol sqrt(d))^2, the norms rounded up to the grid."""
    if ds.inputs[i][:t] != ds.inputs[i2][:t]:
        raise Reject(f"certificate.body.pair: examples {i} and {i2} differ before position {t}")
    x, x2 = ds.inputs[i][t], ds.inputs[i2][t]
    if x == x2:
        raise Reject(f"certificate.body.pair: examples {i} and {i2} have the same token at position {t}")
    dx2 = sum(((u - v) ** 2 for u, v in zip(x, x2)), Fraction(0))
    dy = [u - v for u, v in zip(ds.outputs[i][t], ds.outputs[i2][t])]
    rhs = _vec_norm_up(dy) + 2 * tol * _sqrt_grid_up(Fraction(len(dy)))
    return c * c * dx2 - rhs * rhs


# --------------------------------------------------------------------------- the check

def _conditions(ctx: Context, model: CModel, ds: CDataset, cond: int, norms_obj) -> tuple[dict, Fraction]:
    """Conditions 1 and 2: (derived numbers, c)."""
    if not model.causal:
        raise Reject(f"condition {cond}: the model is not causal (\"causal\": true is required; Theorem M "
                     "does not cover encoders)")
    R = ctx.question.get("prompt_norm")
    if cond == 2 and R is None:
        raise Reject("condition 2: the question has no prompt_norm (it bounds the prompt tokens)")
    _check_sizes(model)
    nb = _norms(norms_obj, layer_matrices(model, cond))
    derived: dict = {}
    B = None
    if cond == 2:
        Rx = max(_vec_norm_up(x) for X in ds.inputs for x in X)
        derived["input_norm"] = fmt(Rx)
        B = _ceil_grid(max(R, Rx))
    rows, c = _layer_bounds(model, cond, nb, B)
    derived["layers"] = rows
    return derived, c


def check(ctx: Context) -> Outcome:
    """Check a ``multilayer-injectivity`` certificate; see the module docstring."""
    model, ds = ctx.inputs["model"], ctx.inputs["dataset"]
    require_plain(model, ds, "multilayer-injectivity")
    body = fields(ctx.body, "certificate.body", {"condition", "norms", "pair"})
    tol = ctx.question["tolerance"]
    cond = integer(body["condition"], "certificate.body.condition", 0, 2)
    i, i2, t = _pair(body["pair"], ds)
    if cond == 0:
        fields(body["norms"], "certificate.body.norms", set())
        derived, c = {}, Fraction(0)
        margin = _conflict_margin(model, ds, i, i2, t, tol)
    else:
        derived, c = _conditions(ctx, model, ds, cond, body["norms"])
        margin = _injective_margin(ds, i, i2, t, c, tol)
    if margin <= 0:
        raise Reject(f"certificate.body.pair: examples {i} and {i2} at position {t} are not separated "
                     f"(margin {fmt(margin)} <= 0)")
    derived.update(condition=cond, lower_lipschitz=fmt(c), margin=fmt(margin),
                   pair_kind="conflict" if cond == 0 else "injective")
    what = ("conflicting targets" if cond == 0 else
            f"condition {cond} holds on all {len(model.layers)} layers (c = {float(c):.6g})")
    return Outcome(f"{what}; examples {i} and {i2} at position {t} cannot both be memorized within "
                   f"{fmt(tol)} by any prompt", derived)
