"""Theorem M (multi-layer limitation): certified conditions under which a prompted causal
transformer is injective in each input token, so no prompt memorizes colliding outputs.

Proofs: ``proofs/multilayer.md``.  Setting: a causal (decoder) model, ``"causal": true``; the prompt
comes first, so the prompt's states at every layer do not depend on the input.  For an input
token at position t whose prefix (the input tokens before it) is fixed, layer l acts on the
token's state h as  h -> MLP_l(h + Att_l(h, [S_l, h]))  with S_l the (fixed) prompt and prefix
states.  The two certified conditions:

* **condition 1** (any prompt length, any prompt norm): every head has W_k^T W_q = 0 (exact), so
  the attention is the uniform average; ||sum_j W_o^j W_v^j||_2 < 1 and ||W_1||_2 ||W_2||_2 < 1 in
  every layer.
* **condition 2** (prompt tokens of 2-norm <= R, any length; inputs of the dataset): every state
  has norm <= B_l (recursion below); the attention branch has Lipschitz constant
  L_l = sum_j ||W_o^j W_v^j|| (1 + 2 ||W_k^j^T W_q^j|| B_l^2) < 1 on the ball of radius B_l, and
  ||W_1|| ||W_2|| < 1.

Either way every layer is bi-Lipschitz on the reachable states with lower constant
c_l = (1 - a_l)(1 - k_l), so ||g(x) - g(x')|| >= c ||x - x'|| with c = prod_l c_l: two examples
with the same prefix, different tokens x != x' at position t and targets y, y' at t with
c ||x - x'|| > ||y - y'|| + 2 tol sqrt(d) are memorized (within tol per entry) by no prompt.

Rigour: every spectral norm is a grid number k / 2^20 with ``t^2 I - W W^T`` positive definite at
t = k / 2^20 and not at (k - 1) / 2^20 (exact integer Sylvester test), so k is a function of W
that the checker re-verifies without searching; every other number is an exact rational.  The
certificate embeds the model and dataset (with sha256) and the checker recomputes everything.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from fractions import Fraction
from typing import Optional

import numpy as np

from constructions.model import (Dataset, InputError, Model, as_fraction, as_scaled_int, dataset_to_json,
                                 load_dataset, load_model, model_to_json, sha256_json)

from verify.claims import Claim
from verify.result import Result, Status

__all__ = ["check_multilayer", "certify", "replay_injectivity", "replay_prompt", "z3_crosscheck",
           "norm_grid", "norm_grid_holds", "CLAIMS", "REPLAYERS", "register", "GRID_BITS"]

GRID_BITS = 20
GRID = 1 << GRID_BITS
EXACT_GRAM_MAX = 96      # spectral norms by the exact Gram test up to this size, else sqrt(||W||_1 ||W||_inf)
CERT_KIND = "multilayer-injectivity"
WITNESS_KIND = "multilayer-prompt"


# =========================================================================== exact helpers
# (shared by the prover and the checker: exact integer / rational arithmetic only)

def _is_pd(M: list) -> bool:
    """Exact positive-definiteness of a symmetric integer matrix (Sylvester's criterion; the
    pivots of fraction-free Bareiss elimination are the leading principal minors)."""
    A = np.array(M, dtype=object).reshape(len(M), len(M))
    n, prev = A.shape[0], 1
    for k in range(n):
        p = A[k, k]
        if p <= 0:
            return False
        if k + 1 < n:
            A[k + 1:, k + 1:] = (A[k + 1:, k + 1:] * p - np.outer(A[k + 1:, k], A[k, k + 1:])) // prev
        prev = p
    return True


def _gram(W: np.ndarray) -> tuple[list, int]:
    """(G, D) with G integer and W W^T (or W^T W, the smaller) = G / D^2."""
    N, D = as_scaled_int(np.asarray(W))
    rows = [[int(v) for v in r] for r in (N if N.shape[0] <= N.shape[1] else N.T)]
    G = [[sum(a * b for a, b in zip(r1, r2)) for r2 in rows] for r1 in rows]
    return G, D


def _pd_at(G: list, D: int, k: int) -> bool:
    """Is (k / 2^g)^2 I - G / D^2 positive definite?"""
    s, c = k * k * D * D, GRID * GRID
    return _is_pd([[(s if i == j else 0) - c * g for j, g in enumerate(row)] for i, row in enumerate(G)])


def _is_zero(W: np.ndarray) -> bool:
    return all(v == 0 for v in np.asarray(W).reshape(-1))


def _ceil_grid(q: Fraction) -> Fraction:
    return Fraction(math.ceil(Fraction(q) * GRID), GRID)


def _cheap_k(W: np.ndarray) -> int:
    from constructions.datasets import cheap_norm_bound
    return math.ceil(cheap_norm_bound(W) * GRID)


def _big(W: np.ndarray) -> bool:
    return min(np.asarray(W).shape) > EXACT_GRAM_MAX


def norm_grid_holds(W: np.ndarray, k: int) -> bool:
    """Check that k / 2^20 is *the* grid bound of ||W||_2: 0 iff W = 0, else the least k >= 1
    with (k / 2^20)^2 I - W W^T positive definite (for large W: ceil(2^20 sqrt(||W||_1 ||W||_inf)))."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        return False
    if _is_zero(W):
        return k == 0
    if _big(W):
        return k == _cheap_k(W)
    G, D = _gram(W)
    return k >= 1 and _pd_at(G, D, k) and not _pd_at(G, D, k - 1)


def norm_grid(W: np.ndarray) -> int:
    """Find the grid bound k of ||W||_2 (floats guess, exact tests decide; see norm_grid_holds)."""
    if _is_zero(W):
        return 0
    if _big(W):
        return _cheap_k(W)
    G, D = _gram(W)
    Wf = np.array([[float(v) for v in r] for r in np.asarray(W)], dtype=np.float64)
    k = max(1, math.ceil(float(np.linalg.norm(Wf, 2)) * GRID))
    step = 1
    while not _pd_at(G, D, k):
        k += step
        step *= 2
    lo = 0  # _pd_at(0) is false; bisect for the least k with _pd_at true
    if k > 1 and not _pd_at(G, D, k - 1):
        return k
    hi = k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if mid >= 1 and _pd_at(G, D, mid):
            hi = mid
        else:
            lo = mid
    return hi


def _vec_norm_up(v) -> Fraction:
    """ceil(2^20 ||v||_2) / 2^20, exactly."""
    s = sum((Fraction(x) ** 2 for x in np.asarray(v).reshape(-1)), Fraction(0))
    p, q = s.numerator * GRID * GRID, s.denominator
    k = math.isqrt(p // q)
    while k * k * q < p:
        k += 1
    return Fraction(k, GRID)


def _sqrt_up_exact(q: Fraction) -> Fraction:
    p, d = q.numerator * GRID * GRID, q.denominator
    k = math.isqrt(p // d)
    while k * k * d < p:
        k += 1
    return Fraction(k, GRID)


def _matmul(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Exact A @ B as an object array of Fractions (integer arithmetic on a common denominator)."""
    NA, DA = as_scaled_int(np.asarray(A))
    NB, DB = as_scaled_int(np.asarray(B))
    P = NA.dot(NB)
    D = DA * DB
    out = np.empty(P.shape, dtype=object)
    out.reshape(-1)[:] = [Fraction(int(v), D) for v in P.reshape(-1)]
    return out


def _layer_matrices(model: Model, condition: int) -> dict:
    """Every matrix whose spectral norm the condition uses, by name: per layer W_1, W_2, the
    heads' A_j = W_k^j^T W_q^j, and V = sum_j V_j (condition 1) or the heads' V_j = W_o^j W_v^j
    (condition 2).  Exact products."""
    out = {}
    for li, layer in enumerate(model.layers):
        out[f"layers[{li}].mlp.W_1"] = layer.W_1
        out[f"layers[{li}].mlp.W_2"] = layer.W_2
        Vs = []
        for hj, h in enumerate(layer.heads):
            V = _matmul(h.W_o, h.W_v)
            Vs.append(V)
            if condition == 2:
                out[f"layers[{li}].heads[{hj}].W_o W_v"] = V
            out[f"layers[{li}].heads[{hj}].W_k^T W_q"] = _matmul(np.asarray(h.W_k).T, h.W_q)
        if condition == 1:
            out[f"layers[{li}].sum_j W_o W_v"] = sum(Vs[1:], Vs[0])
    return out


def _fmt(q: Fraction) -> str:
    return f"{q.numerator}/{q.denominator}" if q.denominator != 1 else str(q.numerator)


def _layer_bounds(model: Model, condition: int, norms: dict, R: Optional[Fraction],
                  Rx: Optional[Fraction]) -> tuple[list, list, Fraction]:
    """The exact per-layer numbers of condition 1 or 2 from the grid norms.

    Returns (rows, failures, c): rows[l] = {name: rational string}, failures = messages naming the
    bound that is not < 1 and by how much, c = prod_l (1 - a_l)(1 - k_l) (0 if anything failed)."""
    nb = {name: Fraction(k, GRID) for name, k in norms.items()}
    rows, failures, c = [], [], Fraction(1)
    B = None
    if condition == 2:
        B = _ceil_grid(max(R, Rx))
    for li, layer in enumerate(model.layers):
        k_mlp = nb[f"layers[{li}].mlp.W_1"] * nb[f"layers[{li}].mlp.W_2"]
        row = {"mlp_contraction": k_mlp}
        if condition == 1:
            for hj in range(len(layer.heads)):
                if nb[f"layers[{li}].heads[{hj}].W_k^T W_q"] != 0:
                    failures.append(f"layers[{li}].attention.heads[{hj}]: W_k^T W_q is not 0 (spectral norm in "
                                    f"({float(nb[f'layers[{li}].heads[{hj}].W_k^T W_q'] - Fraction(1, GRID)):.6g}, "
                                    f"{float(nb[f'layers[{li}].heads[{hj}].W_k^T W_q']):.6g}]): scores depend on the query")
            a = nb[f"layers[{li}].sum_j W_o W_v"]
            row["attention_lipschitz"] = a
            what = f"layers[{li}].attention: ||sum_j W_o^j W_v^j||_2"
        else:
            a = Fraction(0)
            for hj, h in enumerate(layer.heads):
                nA = nb[f"layers[{li}].heads[{hj}].W_k^T W_q"]
                if layer.kind == "hardmax" and nA != 0:
                    failures.append(f"layers[{li}].attention.heads[{hj}]: hardmax with W_k^T W_q != 0 is not "
                                    "Lipschitz (condition 2 needs softmax or zero scores)")
                a += nb[f"layers[{li}].heads[{hj}].W_o W_v"] * (1 + 2 * nA * B * B)
            row["state_bound"] = B
            row["attention_lipschitz"] = a
            what = (f"layers[{li}].attention: Lipschitz bound sum_j ||W_o^j W_v^j|| (1 + 2 ||W_k^j^T W_q^j|| "
                    f"B^2) with B = {float(B):.6g}")
            att = sum((nb[f"layers[{li}].heads[{hj}].W_o W_v"] for hj in range(len(layer.heads))), Fraction(0))
            B = _ceil_grid(B * (1 + att) * (1 + k_mlp) + nb[f"layers[{li}].mlp.W_2"] * _vec_norm_up(layer.b_1)
                           + _vec_norm_up(layer.b_2))
        if a >= 1:
            failures.append(f"{what} <= {float(a):.6g} (rigorous upper bound) is not < 1: exceeds 1 by {float(a - 1):.6g}")
        if k_mlp >= 1:
            failures.append(f"layers[{li}].mlp: ||W_1||_2 ||W_2||_2 <= {float(k_mlp):.6g} is not < 1: exceeds 1 by "
                            f"{float(k_mlp - 1):.6g} (the MLP may not be injective)")
        c_l = (1 - a) * (1 - k_mlp) if a < 1 and k_mlp < 1 else Fraction(0)
        row["lower_lipschitz"] = c_l
        c *= c_l
        rows.append({k: _fmt(v) for k, v in row.items()})
    if failures:
        c = Fraction(0)
    return rows, failures, c


def _input_norm(ds: Dataset) -> Fraction:
    return max(_vec_norm_up(x) for ex in ds.examples for x in ex.input)


def _same(a, b) -> bool:
    return all(Fraction(u) == Fraction(v) for u, v in zip(np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)))


def _pairs(ds: Dataset, causal: bool):
    """Candidate pairs (i, i2, t, kind), in order: kind "conflict" (the same visible input --
    the prefix up to t for a causal model, the whole input otherwise -- and both targets at t
    given) or "injective" (causal only: the same tokens before t, different tokens at t)."""
    for i in range(len(ds.examples)):
        for i2 in range(i + 1, len(ds.examples)):
            A, B = ds.examples[i], ds.examples[i2]
            if causal:
                for t in range(min(len(A.input), len(B.input))):
                    if t > 0 and not _same(A.input[t - 1], B.input[t - 1]):
                        break
                    if A.output[t] is not None and B.output[t] is not None:
                        yield i, i2, t, "conflict" if _same(A.input[t], B.input[t]) else "injective"
            elif A.input.shape == B.input.shape and _same(A.input, B.input):
                for t in range(len(A.input)):
                    if A.output[t] is not None and B.output[t] is not None:
                        yield i, i2, t, "conflict"


def _pair_margin(ds: Dataset, i: int, i2: int, t: int, kind: str, c: Fraction, tol: Fraction) -> Fraction:
    """The pair rules out memorization (within tol per entry) iff this margin is > 0:
    max_e |y_e - y'_e| - 2 tol for a conflict, c^2 ||x - x'||^2 - (||y - y'|| + 2 tol sqrt(d))^2
    (norms rounded up) for an injective pair."""
    A, B = ds.examples[i], ds.examples[i2]
    dy = [Fraction(u) - Fraction(v) for u, v in zip(A.output[t], B.output[t])]
    if kind == "conflict":
        return max(abs(v) for v in dy) - 2 * tol
    dx2 = sum((Fraction(u) - Fraction(v)) ** 2 for u, v in zip(A.input[t], B.input[t]))
    rhs = _vec_norm_up(dy) + 2 * tol * _sqrt_up_exact(Fraction(len(dy)))
    return c * c * dx2 - rhs * rhs


def _first_pair(ds: Dataset, causal: bool, c: Fraction, tol: Fraction, kinds=("conflict", "injective")):
    for i, i2, t, kind in _pairs(ds, causal):
        if kind in kinds:
            margin = _pair_margin(ds, i, i2, t, kind, c, tol)
            if margin > 0:
                return {"examples": [i, i2], "position": t, "kind": kind, "margin": _fmt(margin)}
    return None


# =========================================================================== the checker

def _model_from_json(obj: dict) -> Model:
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "model.json")
        with open(p, "w") as fh:
            json.dump(obj, fh)
        return load_model(p)


def _dataset_from_json(obj: dict) -> Dataset:
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "dataset.json")
        with open(p, "w") as fh:
            json.dump(obj, fh)
        return load_dataset(p)


def replay_injectivity(res: dict, base_dir: str = ".") -> tuple[bool, str]:
    """Re-verify a ``multilayer-injectivity`` certificate from the embedded model and dataset.

    Every grid norm is re-tested exactly, every bound recomputed and compared with the
    certificate (so a changed number fails), and the colliding pair re-derived."""
    cert = res["certificate"]
    if sha256_json(cert["model"]) != cert["model_sha256"] or sha256_json(cert["dataset"]) != cert["dataset_sha256"]:
        return False, "embedded model or dataset does not match its sha256"
    model, ds = _model_from_json(cert["model"]), _dataset_from_json(cert["dataset"])
    cond, tol = cert["condition"], Fraction(cert["tolerance"])
    if cert["grid_bits"] != GRID_BITS:
        return False, f"grid_bits must be {GRID_BITS}"
    if model.causal is not True and cond != 0:
        return False, "conditions 1 and 2 need a causal model (\"causal\": true)"
    if tol < 0:
        return False, "negative tolerance"
    c = Fraction(0)
    if cond in (1, 2):
        mats = _layer_matrices(model, cond)
        if set(cert["norms"]) != set(mats):
            return False, "the certificate's norm list does not match the model's matrices"
        for name, W in mats.items():
            if not norm_grid_holds(W, cert["norms"][name]):
                return False, f"grid norm of {name} is not {cert['norms'][name]} / 2^{GRID_BITS}"
        R = Fraction(cert["prompt_norm"]) if cond == 2 else None
        Rx = _input_norm(ds) if cond == 2 else None
        if cond == 2 and (R < 0 or _fmt(Rx) != cert["input_norm"]):
            return False, "prompt or input norm bound does not hold"
        rows, failures, c = _layer_bounds(model, cond, cert["norms"], R, Rx)
        if failures:
            return False, "condition fails: " + "; ".join(failures)
        if rows != cert["layers"] or _fmt(c) != cert["lower_lipschitz"]:
            return False, "the certificate's per-layer bounds differ from the recomputed ones"
    elif cond != 0:
        return False, f"unknown condition {cond!r}"
    elif cert["norms"] or cert["layers"] or cert["lower_lipschitz"] != "0":
        return False, "a conflict certificate carries no bounds"
    if cond != 2 and (cert["prompt_norm"] is not None or cert["input_norm"] is not None):
        return False, "norm bounds are only part of a condition 2 certificate"
    pair = _first_pair(ds, model.causal, c, tol, ("conflict",) if cond == 0 else ("conflict", "injective"))
    if pair is None or pair != cert["pair"]:
        return False, f"the colliding pair does not re-derive (recomputed {pair}, certificate {cert['pair']})"
    return True, (f"condition {cond} holds on all {len(model.layers)} layers (c = {float(c):.6g}); examples "
                  f"{pair['examples']} at position {pair['position']} ({pair['kind']}) cannot both be memorized")


def replay_prompt(res: dict, base_dir: str = ".") -> tuple[bool, str]:
    """Replay a ``multilayer-prompt`` witness: the prompt's exact forward pass reproduces every
    given target (exact for zero-score models; else the rigorous enclosures within tolerance)."""
    from constructions.forward import forward_exact
    from constructions.multilayer import forward_uniform_exact, has_zero_scores
    w = res["witness"]
    if sha256_json(w["model"]) != w["model_sha256"] or sha256_json(w["dataset"]) != w["dataset_sha256"]:
        return False, "embedded model or dataset does not match its sha256"
    model, ds = _model_from_json(w["model"]), _dataset_from_json(w["dataset"])
    P = np.array([[Fraction(v) for v in row] for row in w["prompt"]], dtype=object).reshape(-1, model.d)
    tol = Fraction(w.get("tolerance", "0"))
    exact = has_zero_scores(model)
    for i, ex in enumerate(ds.examples):
        out = forward_uniform_exact(model, ex.input, P) if exact else forward_exact(model, ex.input, P)
        for t, y in enumerate(ex.output):
            if y is None:
                continue
            for e, (o, yv) in enumerate(zip(out[t], y)):
                yv = Fraction(yv)
                if exact and abs(o - yv) > tol:
                    return False, f"examples[{i}].output[{t}][{e}]: prompt gives {float(o)!r}, target {float(yv)!r}"
                if not exact and (o.lo < yv - tol or o.hi > yv + tol):
                    return False, f"examples[{i}].output[{t}][{e}]: enclosure {o} not within {float(tol)} of target"
    return True, (f"the {len(P)}-token prompt reproduces every target "
                  f"({'exactly' if tol == 0 and exact else f'within {float(tol)}'})")


REPLAYERS = {CERT_KIND: replay_injectivity, WITNESS_KIND: replay_prompt}


# =========================================================================== the prover

def _statement(cond: int, R: Optional[Fraction]) -> str:
    if cond == 0:
        return "no model and no prompt memorizes the dataset: two examples see the same input and need different outputs"
    if cond == 1:
        return "no prompt of any length (and any norm) memorizes the dataset"
    return f"no prompt of any length whose tokens have 2-norm <= {float(R):g} memorizes the dataset"


METHODS = {0: "multilayer: conflicting targets", 1: "multilayer condition 1 (query-independent scores)",
           2: "multilayer condition 2 (bounded prompts, Lipschitz attention)"}


def certify(model: Model, dataset: Dataset, condition: Optional[int] = None, prompt_norm=None,
            tolerance=Fraction(0)) -> tuple[Optional[dict], list[str]]:
    """Try to certify Theorem M's conclusion for a dataset.

    Parameters
    ----------
    model : Model
        Any number of layers; conditions 1 and 2 need ``model.causal``.
    dataset : Dataset
        Tokens of size ``model.d``.
    condition : {None, 1, 2}
        None tries conflicting targets, then condition 1, then condition 2 (if ``prompt_norm``).
    prompt_norm : rational or None
        Bound R on the 2-norm of every prompt token (condition 2 only).
    tolerance : rational
        Memorization within this much per output entry.

    Returns
    -------
    (certificate or None, failures)
        ``failures`` names every bound that failed and by how much."""
    tol = Fraction(tolerance)
    R = None if prompt_norm is None else Fraction(prompt_norm)
    failures: list[str] = []
    base = {"kind": CERT_KIND, "tolerance": _fmt(tol), "grid_bits": GRID_BITS,
            "model": model_to_json(model), "dataset": dataset_to_json(dataset)}
    base["model_sha256"], base["dataset_sha256"] = sha256_json(base["model"]), sha256_json(base["dataset"])
    if condition is None:
        pair = _first_pair(dataset, model.causal, Fraction(0), tol, ("conflict",))
        if pair is not None:
            return dict(base, condition=0, norms={}, prompt_norm=None, input_norm=None, layers=[],
                        lower_lipschitz="0", pair=pair), []
    conds = [condition] if condition is not None else [1, 2]
    if not model.causal:
        return None, ["the model is not causal (\"causal\": false, an encoder): prompt states depend on the input, "
                      "which conditions 1 and 2 do not cover (proofs/multilayer.md gives an encoder meeting condition "
                      "1's bounds that is not injective); set \"causal\": true for a decoder"]
    if not any(k == "injective" for *_, k in _pairs(dataset, True)):
        return None, ["no two examples share a prefix and differ in the next token with both targets given there: "
                      "Theorem M rules nothing out for this dataset"]
    for cond in conds:
        if cond == 2 and R is None:
            failures.append("condition 2: needs a bound on the prompt tokens' 2-norm (--prompt-norm); none given")
            continue
        if cond == 2 and R < 0:
            raise InputError("--prompt-norm", "a number >= 0", str(R))
        Rx = _input_norm(dataset) if cond == 2 else None
        norms = {name: norm_grid(W) for name, W in _layer_matrices(model, cond).items()}
        rows, fails, c = _layer_bounds(model, cond, norms, R, Rx)
        if fails:
            failures += [f"condition {cond}: {f}" for f in fails]
            continue
        pair = _first_pair(dataset, True, c, tol)
        if pair is None:
            failures.append(f"condition {cond} holds (lower Lipschitz constant c = {float(c):.6g}) but no pair "
                            f"has c ||x - x'|| > ||y - y'|| + 2 tol sqrt(d)")
            continue
        return dict(base, condition=cond, norms=norms, prompt_norm=None if R is None or cond == 1 else _fmt(R),
                    input_norm=None if Rx is None else _fmt(Rx), layers=rows, lower_lipschitz=_fmt(c),
                    pair=pair), []
    return None, failures


def check_multilayer(model: Model, dataset: Dataset, prompt_length="any", tolerance=Fraction(0),
                     timeout: float = 60.0, prompt_norm=None, condition: Optional[int] = None,
                     claim: str = "M") -> Result:
    """Decide what Theorem M says about a (multi-layer) model and dataset.

    Returns "proved" with a ``multilayer-injectivity`` certificate (already replayed) when targets
    conflict or condition 1 or 2 holds and two examples collide; "unknown" with a message naming
    each bound that failed and by how much otherwise.  ``prompt_norm`` (or ``model.meta
    ["prompt_norm"]``) enables condition 2.  A proof for any length covers ``prompt_length``.
    ``timeout`` is accepted for the common interface; certification is exact and fast (no search).
    Bad input (token size, negative tolerance) raises :class:`InputError`."""
    t0 = time.perf_counter()
    if dataset.d != model.d:
        raise InputError("examples[0].input", f"tokens of size d = {model.d} (the model's d)", f"size {dataset.d}")
    if prompt_norm is None and "prompt_norm" in model.meta:
        prompt_norm = Fraction(str(model.meta["prompt_norm"]))
    tol = Fraction(tolerance)
    if tol < 0:
        raise InputError("--tolerance", "a number >= 0", str(tol))
    cert, failures = certify(model, dataset, condition, prompt_norm, tol)
    t1 = time.perf_counter()
    inputs = {"model_sha256": sha256_json(model_to_json(model)), "dataset_sha256": sha256_json(dataset_to_json(dataset)),
              "seed": model.meta.get("seed")}
    if cert is None:
        return Result(claim=claim, status=Status.UNKNOWN, statement="Theorem M: no prompt memorizes the dataset",
                      method="multilayer conditions 1-2", prompt_length=prompt_length, inputs=inputs,
                      seconds={"solve": t1 - t0}, message="not certified: " + "; ".join(failures),
                      checks={"certificate_checked": False})
    cond = cert["condition"]
    res = Result(claim=claim, status=Status.PROVED, statement=_statement(cond, prompt_norm),
                 method=METHODS[cond], prompt_length=prompt_length, certificate=cert, inputs=inputs)
    ok, msg = replay_injectivity(res.to_json())
    t2 = time.perf_counter()
    res.seconds = {"solve": t1 - t0, "check": t2 - t1}
    res.checks = {"certificate_checked": ok}
    if not ok:
        res.status, res.certificate = Status.ERROR, None
        res.message = f"internal error: the certificate did not replay ({msg})"
        return res
    res.message = (msg if cond == 0 else
                   f"{msg}; per-layer attention bounds " +
                   ", ".join(f"{float(Fraction(r['attention_lipschitz'])):.4g}" for r in cert["layers"]))
    return res


# =========================================================================== Z3 cross-check

def _z3_encode(model: Model, dataset: Dataset, m_p: int, prompt_norm=None, tolerance=Fraction(0),
               tangents: int = 9, logic: Optional[str] = "QF_NRA", relax: str = "exp"):
    """Encode "some prompt of length m_p memorizes the dataset" for a causal model in Z3.

    Zero-score heads (and a key set of size 1) are encoded exactly: uniform weights, so the
    encoding is linear with ReLU case splits.  Other heads, without a prompt norm: one positive
    variable E per exponential with tangent cuts E >= e^t (1 + s - t) and exact products
    (nonlinear).  With a prompt norm R everything is linear and sound for "unsat": prompts range
    over a polytope containing the ball, every state over its certified box |entry| <= B_l,
    every score over |s| <= ||A|| B_l^2, each product of two variables is replaced by its
    McCormick envelope, ReLUs that are stable on the box become linear, and either
    ``relax="exp"``: E in [tangents, chord of exp on the score range] linked to the score, or
    ``relax="weights"``: the softmax weights w_b in [E_lo / (E_lo + (n-1) E_hi), E_hi / (E_hi +
    (n-1) E_lo)] (E_lo, E_hi rigorous bounds of exp on the score range) with sum 1.  Every state
    is a fresh variable equal to its layer's expression.  Returns (solver, prompt variables)."""
    import z3

    def val(q):
        q = Fraction(q)
        return z3.RealVal(f"{q.numerator}/{q.denominator}")

    def lin(M, v):  # exact rational matrix times a vector of terms
        out = []
        for row in M:
            terms = [val(a) * x for a, x in zip(row, v) if a != 0]
            out.append(z3.Sum(terms) if terms else val(0))
        return out

    R = None if prompt_norm is None else Fraction(prompt_norm)
    nonlinear = R is None and not _all_zero_scores(model)
    solver = z3.SolverFor(logic) if logic and nonlinear else z3.SolverFor("QF_LRA")
    P = [[z3.Real(f"p_{b}_{i}") for i in range(model.d)] for b in range(m_p)]
    if R is not None:  # a polytope containing the ball ||p|| <= R (sound for "unsat"); linear
        r2 = _sqrt_up_exact(Fraction(2)) * R
        for p in P:
            solver.add([z3.And(x >= val(-R), x <= val(R)) for x in p])
            for i in range(model.d):
                for j in range(i + 1, model.d):
                    solver.add(z3.And(p[i] + p[j] <= val(r2), p[i] + p[j] >= val(-r2),
                                      p[i] - p[j] <= val(r2), p[i] - p[j] >= val(-r2)))
    boxes = None
    if R is not None:
        norms = {name: norm_grid(W) for name, W in _layer_matrices(model, 2).items()}
        B = _ceil_grid(max(R, _input_norm(dataset)))
        boxes, state_bounds = [], [B]  # boxes[l][j]: |score| <= ||A_j|| B_l^2
        for li, layer in enumerate(model.layers):
            boxes.append([Fraction(norms[f"layers[{li}].heads[{hj}].W_k^T W_q"], GRID) * B * B
                          for hj in range(len(layer.heads))])
            att = sum(Fraction(norms[f"layers[{li}].heads[{hj}].W_o W_v"], GRID) for hj in range(len(layer.heads)))
            k_mlp = Fraction(norms[f"layers[{li}].mlp.W_1"] * norms[f"layers[{li}].mlp.W_2"], GRID * GRID)
            B = _ceil_grid(B * (1 + att) * (1 + k_mlp) + Fraction(norms[f"layers[{li}].mlp.W_2"], GRID)
                           * _vec_norm_up(layer.b_1) + _vec_norm_up(layer.b_2))
            state_bounds.append(B)
    counter = [0]

    def fresh(name, exprs, li=None):
        counter[0] += 1
        vs = [z3.Real(f"{name}{counter[0]}_{i}") for i in range(len(exprs))]
        solver.add([v == e for v, e in zip(vs, exprs)])
        if boxes is not None and li is not None:  # ||state|| <= B_l, so every entry is in [-B_l, B_l]
            solver.add([z3.And(v >= val(-state_bounds[li]), v <= val(state_bounds[li])) for v in vs])
        return vs

    tpts = [Fraction(k, 2) for k in range(-(tangents // 2), tangents // 2 + 1)]

    def is_const(x):
        return z3.is_rational_value(z3.simplify(x))

    def prod(x, xb, y, yb):
        """x * y: exact when a factor is constant, else a fresh w in the McCormick envelope of
        the boxes |x| <= xb, |y| <= yb (xb, yb as (lo, hi)): sound, and linear."""
        if is_const(x) or is_const(y):
            return x * y
        counter[0] += 1
        w = z3.Real(f"w{counter[0]}")
        (xl, xu), (yl, yu) = (tuple(val(v) for v in xb), tuple(val(v) for v in yb))
        solver.add(w >= xl * y + x * yl - xl * yl, w >= xu * y + x * yu - xu * yu,
                   w <= xu * y + x * yl - xu * yl, w <= xl * y + x * yu - xl * yu)
        return w

    def attend(li, layer, keys, h):
        """Attention output at state h over key states ``keys`` (h is the last key)."""
        total = [val(0)] * model.d
        for hj, head in enumerate(layer.heads):
            V = as_fraction(head.W_o).dot(as_fraction(head.W_v))
            A = as_fraction(head.W_k).T.dot(as_fraction(head.W_q))
            vals = [lin(V, s) for s in keys]
            n = len(keys)
            if _is_zero(A) or n == 1:  # uniform weights (exactly 1 / n)
                o = [z3.Sum([v[i] for v in vals]) / n for i in range(model.d)]
            elif boxes is not None and relax == "weights":  # weights in the box exp bounds give
                Bl = state_bounds[li]
                nV = Fraction(norms[f"layers[{li}].heads[{hj}].W_o W_v"], GRID)
                a = boxes[li][hj]
                Elo, Ehi = _exp_enc(-a)[0], _exp_enc(a)[1]
                wlo, whi = Elo / (Elo + (n - 1) * Ehi), Ehi / (Ehi + (n - 1) * Elo)
                ws = [z3.Real(f"w{counter[0]}_{b}") for b in range(n)]
                counter[0] += 1
                solver.add([z3.And(w >= val(wlo), w <= val(whi)) for w in ws] + [z3.Sum(ws) == 1])
                vb = nV * Bl
                o = [z3.Sum([prod(w, (wlo, whi), v[i], (-vb, vb)) for w, v in zip(ws, vals)])
                     for i in range(model.d)]
            elif boxes is not None:  # linear relaxation: McCormick products over certified boxes
                Bl = state_bounds[li]
                nV, nA = (Fraction(norms[f"layers[{li}].heads[{hj}].{k}"], GRID) for k in ("W_o W_v", "W_k^T W_q"))
                a = boxes[li][hj]
                Elo, Ehi = _exp_enc(-a)[0], _exp_enc(a)[1]
                Ah = lin(A, h)
                if not all(is_const(u) for u in Ah):
                    Ah = fresh("u", Ah)
                    solver.add([z3.And(u >= val(-nA * Bl), u <= val(nA * Bl)) for u in Ah])
                Es = []
                for s in keys:
                    sc = z3.Sum([prod(si, (-Bl, Bl), ui, (-nA * Bl, nA * Bl)) for si, ui in zip(s, Ah)])
                    counter[0] += 1
                    E = z3.Real(f"E{counter[0]}")
                    solver.add(sc >= val(-a), sc <= val(a), E >= val(Elo), E <= val(Ehi))
                    for t in tpts:
                        if -a <= t <= a:
                            solver.add(E >= val(_exp_enc(t)[0]) * (1 + sc - val(t)))
                    if a > 0:  # chord through upper enclosures of exp(-a) and exp(a): above exp on [-a, a]
                        Eup_left = _exp_enc(-a)[1]
                        solver.add(E <= val(Eup_left) + val((Ehi - Eup_left) / (2 * a)) * (sc + val(a)))
                    Es.append(E)
                o = [z3.Real(f"o{counter[0]}_{i}") for i in range(model.d)]
                counter[0] += 1
                T = z3.Sum(Es)
                vb = nV * Bl
                for i in range(model.d):
                    solver.add(o[i] >= val(-vb), o[i] <= val(vb))
                    lhs = prod(o[i], (-vb, vb), T, (n * Elo, n * Ehi))
                    solver.add(lhs == z3.Sum([prod(E, (Elo, Ehi), v[i], (-vb, vb)) for E, v in zip(Es, vals)]))
            else:  # exact products (nonlinear real arithmetic)
                Ah = lin(A, h)
                Es = []
                for s in keys:
                    sc = z3.Sum([a_ * b_ for a_, b_ in zip(s, Ah)])
                    counter[0] += 1
                    E = z3.Real(f"E{counter[0]}")
                    solver.add(E > 0)
                    for t in tpts:
                        solver.add(E >= val(_exp_enc(t)[0]) * (1 + sc - val(t)))
                    Es.append(E)
                o = [z3.Real(f"o{counter[0]}_{i}") for i in range(model.d)]
                counter[0] += 1
                tot = z3.Sum(Es)
                for i in range(model.d):
                    solver.add(tot * o[i] == z3.Sum([E * v[i] for E, v in zip(Es, vals)]))
            total = [x + y for x, y in zip(total, o)]
        return total

    def mlp(layer, z, li):
        W1 = as_fraction(layer.W_1)
        pre = lin(W1, z)
        hid = []
        for i, (p, b) in enumerate(zip(pre, as_fraction(layer.b_1))):
            if boxes is not None:  # |W_1[i] z| <= ||W_1[i]|| ||z||: a ReLU that is stable on the domain is linear
                Bz = state_bounds[li] * (1 + sum(Fraction(norms[f"layers[{li}].heads[{hj}].W_o W_v"], GRID)
                                                 for hj in range(len(layer.heads))))
                m = _vec_norm_up(W1[i]) * Bz
                if b - m >= 0:
                    hid.append(p + val(b))
                    continue
                if b + m <= 0:
                    hid.append(val(0))
                    continue
            hid.append(z3.If(p + val(b) > 0, p + val(b), val(0)))
        post = lin(as_fraction(layer.W_2), hid)
        return [zi + pi + val(b) for zi, pi, b in zip(z, post, as_fraction(layer.b_2))]

    # prompt states layer by layer (causal: they do not depend on the input)
    prompt_states = [P]
    S = P
    for li, layer in enumerate(model.layers):
        nxt = []
        for a in range(m_p):
            att = attend(li, layer, S[: a + 1], S[a])
            nxt.append(fresh("ps", mlp(layer, [x + y for x, y in zip(S[a], att)], li), li + 1))
        S = nxt
        prompt_states.append(S)
    for ei, ex in enumerate(dataset.examples):
        H = [[val(v) for v in as_fraction(x)] for x in ex.input]
        for li, layer in enumerate(model.layers):
            nxt = []
            for t in range(len(H)):
                keys = prompt_states[li] + H[: t + 1]
                att = attend(li, layer, keys, H[t])
                nxt.append(fresh("h", mlp(layer, [x + y for x, y in zip(H[t], att)], li), li + 1))
            H = nxt
        for t, y in enumerate(ex.output):
            if y is None:
                continue
            for i, yv in enumerate(as_fraction(np.asarray(y))):
                if tolerance == 0:
                    solver.add(H[t][i] == val(yv))
                else:
                    solver.add(H[t][i] >= val(yv - tolerance), H[t][i] <= val(yv + tolerance))
    return solver, P


def _exp_enc(t: Fraction, bits: int = 24):
    """Rigorous [lo, hi] around exp(t), rounded outward to multiples of 2^-bits (small numbers
    keep the solver's simplex fast)."""
    from constructions.forward import exp_enclosure
    lo, hi = exp_enclosure(Fraction(t))
    return Fraction(math.floor(lo * (1 << bits)), 1 << bits), Fraction(math.ceil(hi * (1 << bits)), 1 << bits)


def _all_zero_scores(model: Model) -> bool:
    from constructions.multilayer import has_zero_scores
    return has_zero_scores(model)


def z3_crosscheck(model: Model, dataset: Dataset, prompt_length: int, prompt_norm=None,
                  tolerance=Fraction(0), timeout: float = 60.0, logic: Optional[str] = "QF_NRA",
                  relax: str = "exp") -> dict:
    """Ask Z3 whether a prompt of length ``prompt_length`` memorizes the dataset (causal model).

    Returns {"prompt_length", "answer": "unsat" | "sat" | "unknown", "seconds", "prompt"} where
    "prompt" (rational strings) is Z3's model on "sat".  "unsat" is sound (the encoding relaxes
    only the exponentials); "sat" of a relaxed encoding is a candidate to replay, not a verdict."""
    import z3
    if not model.causal:
        raise InputError("causal", "true (the Z3 encoding is for causal models)", "false")
    t0 = time.perf_counter()
    solver, P = _z3_encode(model, dataset, prompt_length, prompt_norm, Fraction(tolerance), logic=logic,
                           relax=relax)
    if prompt_norm is not None or _all_zero_scores(model):  # linear: eliminate the state equations first
        tactic = z3.Then("simplify", "propagate-values", "solve-eqs", "elim-uncnstr", "simplify", "qflra")
        linear = tactic.solver()
        linear.add(solver.assertions())
        solver = linear
    solver.set("timeout", int(timeout * 1000))
    ans = solver.check()
    out = {"prompt_length": prompt_length, "answer": str(ans), "seconds": round(time.perf_counter() - t0, 3),
           "prompt": None}
    if ans == z3.sat:
        mdl = solver.model()
        rows = []
        for p in P:
            row = []
            for x in p:
                v = mdl.eval(x, model_completion=True)
                if not z3.is_rational_value(v):
                    v = z3.RealVal(v.as_decimal(40).rstrip("?")) if hasattr(v, "as_decimal") else z3.RealVal(0)
                row.append(_fmt(Fraction(v.numerator_as_long(), v.denominator_as_long())))
            rows.append(row)
        out["prompt"] = rows
    return out


# =========================================================================== commands and claims

def _check_int(name: str, v, lo: int, hi: Optional[int] = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
        raise InputError(name, rng, repr(v))
    return v


def _build(layers: int, d: int, heads: int, condition: int, prompt_norm, seed: int, mlp_width=None,
           claim: Optional[str] = None):
    """A model meeting the condition (shrinking the float targets until it certifies), the
    collision dataset and Theorem M's result on them; returns (model, dataset, R, result)."""
    from constructions.multilayer import collision_dataset, condition1_model, condition2_model
    R = Fraction(str(prompt_norm)) if condition == 2 else None
    for attempt in range(6):
        shrink = 0.5 ** attempt
        if condition == 1:
            model = condition1_model(d, heads=heads, layers=layers, seed=seed, value_norm=0.5 * shrink,
                                     mlp_width=mlp_width)
        else:
            model = condition2_model(d, heads=heads, layers=layers, seed=seed, value_norm=0.25 * shrink,
                                     score_norm=0.05 * shrink / max(1.0, float(R)) ** 2, mlp_width=mlp_width,
                                     bias_scale=1.0 if mlp_width else 0.1)
        ds, _ = collision_dataset(model, seed=seed, prompt_length=1 + seed % 3,
                                  prompt_norm=float(R) if R else 1.0, input_norm=float(R) if R else 1.0)
        res = check_multilayer(model, ds, prompt_norm=R, condition=condition, claim=claim or f"M{condition}")
        if Status(res.status) == Status.PROVED:
            break
    return model, ds, R, res


def prove_multilayer(layers: int = 4, d: int = 16, heads: int = 2, condition: int = 1, prompt_norm=None,
                     seed: int = 0, claim: Optional[str] = None) -> Result:
    """``ptverify prove multilayer``: a random causal model meeting the condition, the dataset
    {([x], [y]), ([x'], [y])} (y produced by a random prompt from x), and Theorem M's proof."""
    _check_int("--layers", layers, 1, 64)
    _check_int("--d", d, 1, 512)
    _check_int("--heads", heads, 1, 64)
    _check_int("--condition", condition, 1, 2)
    _check_int("--seed", seed, 0)
    if condition == 2:
        prompt_norm = 1 if prompt_norm is None else prompt_norm
        try:
            Rq = Fraction(str(prompt_norm))
        except (ValueError, ZeroDivisionError):
            raise InputError("--prompt-norm", "a positive number", repr(prompt_norm)) from None
        if Rq <= 0:
            raise InputError("--prompt-norm", "a positive number", repr(prompt_norm))
    t0 = time.perf_counter()
    model, ds, R, res = _build(layers, d, heads, condition, prompt_norm, seed, claim=claim)
    res.seconds = {"build": time.perf_counter() - t0 - sum(res.seconds.values()), **res.seconds}
    res.inputs["seed"] = seed
    res.extra["instance"] = {"layers": layers, "d": d, "heads": heads, "condition": condition,
                             "prompt_norm": None if R is None else _fmt(R)}
    return res


def _crosscheck_instance(condition: int, seed: int, claim: Optional[str] = None):
    """The 2-layer, d = 2 instance of the Z3 cross-check (one head, MLP width 2)."""
    return _build(2, 2, 1, condition, 1 if condition == 2 else None, seed, mlp_width=2, claim=claim)


def crosscheck(condition: int = 1, lengths=(1, 2, 3), seed: int = 0, timeout: float = 60.0,
               claim: Optional[str] = None, relax: str = "weights") -> Result:
    """Theorem M's certificate on a 2-layer d = 2 instance, and Z3 deciding the same dataset for
    each prompt length: "proved" only if the certificate replays and Z3 answers "unsat" for every
    length; a Z3 prompt that replays would refute the theorem ("refuted")."""
    t0 = time.perf_counter()
    model, ds, R, res = _crosscheck_instance(condition, seed, claim=claim or f"M{condition}-z3")
    if Status(res.status) != Status.PROVED:
        return res
    t1 = time.perf_counter()
    answers = [z3_crosscheck(model, ds, m, prompt_norm=R, timeout=timeout, relax=relax) for m in lengths]
    t2 = time.perf_counter()
    res.seconds = {"build": t1 - t0, "z3": t2 - t1}
    res.checks["z3_answers"] = {str(a["prompt_length"]): a["answer"] for a in answers}
    res.extra["z3"] = answers
    from verify.result import solver_info
    res.solver = solver_info()
    res.method += "; cross-checked by Z3" + (" (exact encoding)" if condition == 1 else
                                             f" (sound linear relaxation '{relax}', see proofs/multilayer.md)")
    sats = [a for a in answers if a["answer"] == "sat"]
    if sats:
        wit = _witness(model, ds, sats[0]["prompt"])
        ok, msg = replay_prompt({"witness": wit})
        res.status = Status.REFUTED if ok else Status.UNKNOWN
        res.message = (f"Z3 found a prompt of length {sats[0]['prompt_length']} "
                       + ("that replays: the theorem's certificate is wrong" if ok else f"that does not replay ({msg})"))
        if ok:
            res.witness = wit
        return res
    if any(a["answer"] != "unsat" for a in answers):
        res.status = Status.UNKNOWN
        res.message = ("the certificate holds but Z3 did not decide every prompt length within the time limit: "
                       + ", ".join(f"m_p={a['prompt_length']}: {a['answer']} ({a['seconds']} s)" for a in answers))
        return res
    res.message = ("Z3 agrees: unsat for prompt lengths " + ", ".join(
        f"{a['prompt_length']} ({a['seconds']} s)" for a in answers) + "; " + res.message)
    return res


def _witness(model: Model, ds: Dataset, prompt) -> dict:
    mj, dj = model_to_json(model), dataset_to_json(ds)
    return {"kind": WITNESS_KIND, "prompt": prompt, "tolerance": "0", "model": mj, "dataset": dj,
            "model_sha256": sha256_json(mj), "dataset_sha256": sha256_json(dj)}


def nonvacuity(seed: int = 0, lengths=(1, 2, 3), timeout: float = 60.0, claim: str = "M-nonvacuous") -> Result:
    """A causal 2-layer d = 2 model violating condition 1 (||W_o W_v|| = 2 in layer 1, an
    eigenvalue -2 making I + W_o W_v / 2 singular) whose non-injective dataset Z3 memorizes
    with a one-token prompt, replayed exactly ("memorized")."""
    from constructions.multilayer import violating_dataset, violating_model
    t0 = time.perf_counter()
    model = violating_model(2, seed=seed)
    ds = violating_dataset(model, seed=seed)
    cert, failures = certify(model, ds, 1)
    t1 = time.perf_counter()
    from verify.result import solver_info
    res = Result(claim=claim, status=Status.UNKNOWN, statement="some prompt memorizes a non-injective dataset "
                 "when the conditions fail (the conditions are not vacuous)", method="Z3 (exact encoding) + exact replay",
                 prompt_length="any", solver=solver_info(),
                 inputs={"model_sha256": sha256_json(model_to_json(model)),
                         "dataset_sha256": sha256_json(dataset_to_json(ds)), "seed": seed})
    res.checks["condition_1_certified"] = cert is not None
    answers = []
    for m in lengths:
        a = z3_crosscheck(model, ds, m, timeout=timeout)
        answers.append(a)
        if a["answer"] == "sat":
            wit = _witness(model, ds, a["prompt"])
            ok, msg = replay_prompt({"witness": wit})
            res.checks["witness_replayed"] = ok
            if ok and cert is None:
                res.status, res.witness, res.prompt_length = Status.MEMORIZED, wit, m
                res.message = (f"condition 1 fails ({'; '.join(failures)}); Z3 found a {m}-token prompt "
                               f"{a['prompt']} memorizing both examples; {msg}")
            break
    res.extra["z3"] = answers
    res.seconds = {"build": t1 - t0, "z3": time.perf_counter() - t1}
    if Status(res.status) != Status.MEMORIZED and not res.message:
        res.message = "no replayable prompt found: " + ", ".join(f"m_p={a['prompt_length']}: {a['answer']}" for a in answers)
    return res


def encoder_example(seed: int = 0, claim: str = "M-encoder") -> Result:
    """The encoder is not covered: a 4-layer encoder whose weights meet condition 1's bounds
    (zero scores, ||W_o W_v|| <= sqrt(4/5), identity MLPs) maps every input x to -p under a
    one-token prompt p, so p = -y memorizes {(x, y), (x', y)}; replayed exactly.  The causal
    version of the same weights is certified by condition 1."""
    from constructions.model import Example
    from constructions.multilayer import encoder_counterexample
    t0 = time.perf_counter()
    rng = np.random.default_rng(60_000 + seed)
    model = encoder_counterexample(causal=False)
    x, x2, y = (np.array([Fraction(int(v), 64) for v in rng.integers(-128, 128, 2)], dtype=object) for _ in range(3))
    ds = Dataset([Example(x[None, :], [y]), Example(x2[None, :], [y.copy()])])
    wit = _witness(model, ds, [[_fmt(-v) for v in y]])
    ok, msg = replay_prompt({"witness": wit})
    causal = encoder_counterexample(causal=True)
    proved = check_multilayer(causal, ds)
    enc = check_multilayer(model, ds)
    res = Result(claim=claim, status=Status.MEMORIZED if ok else Status.UNKNOWN,
                 statement="in the encoder setting (no causal mask) condition 1's bounds do not make the network "
                           "injective: a one-token prompt memorizes {(x, y), (x', y)}",
                 method="construction + exact replay", prompt_length=1, witness=wit if ok else None,
                 inputs={"model_sha256": wit["model_sha256"], "dataset_sha256": wit["dataset_sha256"], "seed": seed},
                 checks={"witness_replayed": ok, "causal_version_proved": Status(proved.status) == Status.PROVED,
                         "encoder_certified": Status(enc.status) == Status.PROVED},
                 seconds={"build": time.perf_counter() - t0},
                 message=f"prompt p = -y; {msg}; the same weights with \"causal\": true: {proved.status}")
    return res


def _run_prove(p: dict, outdir: str) -> Result:
    return prove_multilayer(p.get("layers", 4), p.get("d", 16), p.get("heads", 2), p.get("condition", 1),
                            p.get("prompt_norm"), p.get("seed", 0))


def _run_cross(p: dict, outdir: str) -> Result:
    return crosscheck(p["condition"], tuple(p.get("lengths", (1, 2, 3))), p.get("seed", 0),
                      p.get("timeout", 60.0), claim=f"M{p['condition']}-z3")


def _run_nonvac(p: dict, outdir: str) -> Result:
    return nonvacuity(p.get("seed", 0))


def _run_encoder(p: dict, outdir: str) -> Result:
    return encoder_example(p.get("seed", 0))


_CMD = "ptverify prove multilayer"
CLAIMS = [
    Claim("M1", "Theorem M, condition 1 (query-independent scores)",
          "a causal model with W_k^T W_q = 0, ||sum_j W_o^j W_v^j|| < 1 and contractive MLPs is injective in "
          "each input token for every prompt: no prompt of any length memorizes {(x, y), (x', y)}",
          Status.PROVED, _run_prove, default={"layers": 4, "d": 16, "heads": 2, "condition": 1},
          quick={"layers": 2, "d": 4, "heads": 2, "condition": 1},
          command=f"{_CMD} --layers 4 --d 16 --heads 2 --condition 1 --seed 0 --json r.json && ptverify replay r.json",
          proof="proofs/multilayer.md", test="tests/test_multilayer.py::test_prove_condition1_replays"),
    Claim("M2", "Theorem M, condition 2 (bounded prompts, Lipschitz attention)",
          "with prompt tokens of norm <= 1, a causal softmax model whose per-layer attention Lipschitz bound "
          "and MLP contraction are < 1 on the reachable states: no prompt of any length memorizes {(x, y), (x', y)}",
          Status.PROVED, _run_prove,
          default={"layers": 4, "d": 16, "heads": 2, "condition": 2, "prompt_norm": 1},
          quick={"layers": 2, "d": 4, "heads": 2, "condition": 2, "prompt_norm": 1},
          command=f"{_CMD} --layers 4 --d 16 --heads 2 --condition 2 --prompt-norm 1 --seed 0 --json r.json",
          proof="proofs/multilayer.md", test="tests/test_multilayer.py::test_prove_condition2_replays"),
    Claim("M1-z3", "Theorem M, condition 1, cross-checked by Z3 (2 layers, d = 2, prompt lengths 1..3)",
          "Z3, encoding the prompted network exactly, answers unsat on the dataset the certificate rules out",
          Status.PROVED, _run_cross, default={"condition": 1, "lengths": [1, 2, 3]},
          quick={"condition": 1, "lengths": [1, 2, 3]},
          command="ptverify reproduce --only M1-z3", proof="proofs/multilayer.md",
          test="tests/test_multilayer.py::test_z3_agrees_condition1"),
    Claim("M2-z3", "Theorem M, condition 2, cross-checked by Z3 (2 layers, d = 2, prompt lengths 1..3)",
          "Z3, on a sound linear relaxation of the prompted network (prompt norm <= 1), answers unsat on the "
          "dataset the certificate rules out",
          Status.PROVED, _run_cross, default={"condition": 2, "lengths": [1, 2, 3]},
          quick={"condition": 2, "lengths": [1, 2]},
          command="ptverify reproduce --only M2-z3", proof="proofs/multilayer.md",
          test="tests/test_multilayer.py::test_z3_agrees_condition2"),
    Claim("M-nonvacuous", "Theorem M's conditions are not vacuous",
          "a 2-layer model with ||W_o W_v|| = 2 in layer 1 (violating condition 1) memorizes a non-injective "
          "dataset with a one-token prompt found by Z3 and replayed exactly",
          Status.MEMORIZED, _run_nonvac, default={}, quick={},
          command="ptverify reproduce --only M-nonvacuous", proof="proofs/multilayer.md",
          test="tests/test_multilayer.py::test_nonvacuity_replays"),
    Claim("M-encoder", "The encoder setting is not covered by condition 1",
          "a 4-layer encoder (no causal mask) with zero scores, ||W_o W_v|| < 1 and identity MLPs maps every "
          "input to -p under a one-token prompt p: it memorizes {(x, y), (x', y)}, replayed exactly",
          Status.MEMORIZED, _run_encoder, default={}, quick={},
          command="ptverify reproduce --only M-encoder", proof="proofs/multilayer.md",
          test="tests/test_multilayer.py::test_encoder_counterexample"),
]


def register(apps) -> None:
    """Add ``ptverify prove multilayer``."""
    import typer

    @apps["prove"].command("multilayer")
    def prove_multilayer_cmd(
            layers: int = typer.Option(4, "--layers", help="number of layers L"),
            d: int = typer.Option(16, "--d", help="token size d"),
            heads: int = typer.Option(2, "--heads", help="heads per layer"),
            condition: int = typer.Option(1, "--condition", help="1: query-independent scores (any prompt); "
                                          "2: bounded prompts with a Lipschitz bound < 1"),
            prompt_norm: Optional[str] = typer.Option(None, "--prompt-norm", help="condition 2: bound R on every "
                                                      "prompt token's 2-norm (default 1)"),
            seed: int = typer.Option(0, "--seed", help="random seed"),
            json_out: Optional[str] = typer.Option(None, "--json", help="write the result file here"),
            expect: Optional[str] = typer.Option(None, "--expect", help="exit 1 unless the verdict is this")):
        """Theorem M: build a random causal L-layer model meeting the condition and a dataset
        {(x, y), (x', y)}, certify the condition exactly and prove no prompt memorizes it."""
        from verify.cli import emit, fail_input
        try:
            res = prove_multilayer(layers, d, heads, condition, prompt_norm, seed)
        except InputError as exc:
            fail_input(exc)
        emit(res, json_out, expect)
