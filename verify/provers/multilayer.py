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
that the checker re-verifies without searching; every other number is an exact rational.

Results are ``ptverify-result/2``: the model and dataset are embedded inputs; a proof carries a
``multilayer-injectivity`` certificate (condition, grid norms, the pair), a memorization a
``prompt-witness``.  The trusted checker (``verify/checker/multilayer.py``, ``witness.py``) is the
only replay: every result is run through it before it is returned.  The command is in
``verify/cli/multilayer.py``, the claims in ``verify/claims/multilayer.py``.
"""
from __future__ import annotations

import math
import time
from fractions import Fraction
from typing import Optional

import numpy as np

from constructions.model import (Dataset, InputError, Model, as_fraction, as_scaled_int, dataset_to_json,
                                 model_to_json)

from verify.provers.exact import fmt, norm2_up, positive_definite, sqrt_up
from verify.result import Result, Status, certificate, embed, memorization_question

__all__ = ["check_multilayer", "certify", "z3_crosscheck", "crosscheck", "nonvacuity", "encoder_example",
           "prove_multilayer", "witness_result", "norm_grid", "norm_grid_holds", "GRID_BITS"]

GRID_BITS = 20
GRID = 1 << GRID_BITS
EXACT_GRAM_MAX = 96      # spectral norms by the exact Gram test up to this size, else sqrt(||W||_1 ||W||_inf)
CERT_KIND = "multilayer-injectivity"
WITNESS_KIND = "prompt-witness"


# =========================================================================== exact helpers
# (the prover's own; the trusted checker keeps independent copies in verify/checker/multilayer.py)

def _gram(W: np.ndarray) -> tuple[list, int]:
    """(G, D) with G integer and W W^T (or W^T W, the smaller) = G / D^2."""
    N, D = as_scaled_int(np.asarray(W))
    rows = [[int(v) for v in r] for r in (N if N.shape[0] <= N.shape[1] else N.T)]
    G = [[sum(a * b for a, b in zip(r1, r2)) for r2 in rows] for r1 in rows]
    return G, D


def _pd_at(G: list, D: int, k: int) -> bool:
    """Is (k / 2^g)^2 I - G / D^2 positive definite?"""
    s, c = k * k * D * D, GRID * GRID
    return positive_definite([[(s if i == j else 0) - c * g for j, g in enumerate(row)] for i, row in enumerate(G)])


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
    """ceil(2^20 ||v||_2) / 2^20, exactly (v: any array of exact numbers)."""
    return norm2_up([Fraction(x) for x in np.asarray(v).reshape(-1)], GRID_BITS)


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
        # the bias norms are used by condition 2's state bounds; reported for both, so a result
        # pins every layer's biases (a changed bias is rejected even where condition 1 ignores it)
        row = {"mlp_contraction": k_mlp, "b_1_norm": _vec_norm_up(layer.b_1), "b_2_norm": _vec_norm_up(layer.b_2)}
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
        rows.append({k: fmt(v) for k, v in row.items()})
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
    rhs = _vec_norm_up(dy) + 2 * tol * sqrt_up(Fraction(len(dy)), GRID_BITS)
    return c * c * dx2 - rhs * rhs


def _first_pair(ds: Dataset, causal: bool, c: Fraction, tol: Fraction, kinds=("conflict", "injective")):
    for i, i2, t, kind in _pairs(ds, causal):
        if kind in kinds:
            margin = _pair_margin(ds, i, i2, t, kind, c, tol)
            if margin > 0:
                return {"examples": [i, i2], "position": t, "kind": kind, "margin": fmt(margin)}
    return None


# =========================================================================== the prover

METHODS = {0: "multilayer: conflicting targets", 1: "multilayer condition 1 (query-independent scores)",
           2: "multilayer condition 2 (bounded prompts, Lipschitz attention)"}


def _found(cond: int, norms: dict, pair: dict, rows: list, c: Fraction, Rx: Optional[Fraction]) -> dict:
    """What :func:`certify` returns: the certificate body (hints only) and the numbers to report."""
    reported = {"condition": cond, "lower_lipschitz": fmt(c), "margin": pair["margin"], "pair_kind": pair["kind"]}
    if cond:
        reported["layers"] = rows
    if Rx is not None:
        reported["input_norm"] = fmt(Rx)
    body = {"condition": cond, "norms": norms, "pair": {"examples": pair["examples"], "position": pair["position"]}}
    return {"body": body, "reported": reported}


def _reported_norms(model: Model, cond: int, clock=None) -> dict:
    """:func:`norm_grid` of every matrix of :func:`_layer_matrices`, reporting layer by layer to
    the current progress reporter (verify/progress.py); with a ``clock`` (its deadline), before
    each stage and each matrix (OutOfTime names the stage)."""
    from verify.progress import current
    progress = current()
    tick = clock.check if clock is not None else progress.stage
    tick(f"condition {cond}: exact layer products")
    mats = _layer_matrices(model, cond)
    stage = f"condition {cond}: spectral norm bounds"
    out = {}
    for name, W in mats.items():
        if clock is not None:
            clock.check(stage)
        elif not out:
            progress.stage(stage)
        progress.step(int(name.split("]")[0].split("[")[1]) + 1, len(model.layers), "layer")
        out[name] = norm_grid(W)
    return out


def _try_condition(model: Model, dataset: Dataset, cond: int, R: Optional[Fraction], tol: Fraction, clock=None):
    """(found or None, failures) for condition 1 or 2."""
    if cond == 2 and R is None:
        return None, ["condition 2: needs a bound on the prompt tokens' 2-norm (--prompt-norm); none given"]
    Rx = _input_norm(dataset) if cond == 2 else None
    norms = _reported_norms(model, cond, clock)
    if clock is not None:
        clock.check(f"condition {cond}: per-layer bounds and the colliding pair")
    rows, fails, c = _layer_bounds(model, cond, norms, R, Rx)
    if fails:
        return None, [f"condition {cond}: {f}" for f in fails]
    pair = _first_pair(dataset, True, c, tol)
    if pair is None:
        return None, [f"condition {cond} holds (lower Lipschitz constant c = {float(c):.6g}) but no pair "
                      f"has c ||x - x'|| > ||y - y'|| + 2 tol sqrt(d)"]
    return _found(cond, norms, pair, rows, c, Rx), []


def certify(model: Model, dataset: Dataset, condition: Optional[int] = None, prompt_norm=None,
            tolerance=Fraction(0), clock=None) -> tuple[Optional[dict], list[str]]:
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
        Bound R > 0 on the 2-norm of every prompt token (condition 2 only).
    tolerance : rational
        Memorization within this much per output entry.
    clock : verify.provers.limitation.clock.Clock or None
        A deadline, checked before each stage and each matrix norm (OutOfTime names the stage).

    Returns
    -------
    (found or None, failures)
        ``found = {"body": certificate body, "reported": numbers the checker re-derives}``;
        ``failures`` names every bound that failed and by how much."""
    tol = Fraction(tolerance)
    R = None if prompt_norm is None else Fraction(prompt_norm)
    if condition is None:
        pair = _first_pair(dataset, model.causal, Fraction(0), tol, ("conflict",))
        if pair is not None:
            return _found(0, {}, pair, [], Fraction(0), None), []
    if not model.causal:
        return None, ["the model is not causal (\"causal\": false, an encoder): prompt states depend on the input, "
                      "which conditions 1 and 2 do not cover (proofs/multilayer.md gives an encoder meeting condition "
                      "1's bounds that is not injective); set \"causal\": true for a decoder"]
    if not any(k == "injective" for *_, k in _pairs(dataset, True)):
        return None, ["no two examples share a prefix and differ in the next token with both targets given there: "
                      "Theorem M rules nothing out for this dataset"]
    failures: list[str] = []
    for cond in ([condition] if condition is not None else [1, 2]):
        found, fails = _try_condition(model, dataset, cond, R, tol, clock)
        if found is not None:
            return found, []
        failures += fails
    return None, failures


def _inputs(model: Model, dataset: Dataset) -> dict:
    return {"model": embed(model_to_json(model)), "dataset": embed(dataset_to_json(dataset))}


def _positive_norm(prompt_norm, field: str = "--prompt-norm") -> Optional[Fraction]:
    if prompt_norm is None:
        return None
    try:
        R = Fraction(str(prompt_norm))
    except (ValueError, ZeroDivisionError):
        raise InputError(field, "a positive number", repr(prompt_norm)) from None
    if R <= 0:
        raise InputError(field, "a positive number", repr(prompt_norm))
    return R


def self_check(res: Result) -> tuple[bool, str]:
    """Run the trusted checker on a result before it is returned (it is the only replay)."""
    from verify.checker import check_result
    return check_result(res.to_json())


def check_multilayer(model: Model, dataset: Dataset, prompt_length="any", tolerance=Fraction(0),
                     timeout: float = math.inf, prompt_norm=None, condition: Optional[int] = None,
                     claim: str = "M", progress=None) -> Result:
    """Decide what Theorem M says about a (multi-layer) model and dataset.

    Returns "proved" with a ``multilayer-injectivity`` certificate (accepted by the trusted checker)
    when targets conflict or condition 1 or 2 holds and two examples collide; "unknown" with a
    message naming each bound that failed and by how much otherwise.  ``prompt_norm`` (or
    ``model.meta["prompt_norm"]``) enables condition 2 and is part of the question.  A proof for any
    length covers ``prompt_length``.  Past ``timeout`` seconds (checked before each stage and each
    matrix norm) the result is "timeout" with the stage named, and nothing is claimed.  Bad input
    raises :class:`InputError`."""
    t0 = time.perf_counter()
    if dataset.d != model.d:
        raise InputError("examples[0].input", f"tokens of size d = {model.d} (the model's d)", f"size {dataset.d}")
    if prompt_norm is None and "prompt_norm" in model.meta:
        prompt_norm = model.meta["prompt_norm"]
    R = _positive_norm(prompt_norm)
    tol = Fraction(tolerance)
    if tol < 0:
        raise InputError("--tolerance", "a number >= 0", str(tol))
    from verify.provers.limitation.clock import Clock, OutOfTime
    try:
        found, failures = certify(model, dataset, condition, R, tol, clock=Clock(timeout, progress))
    except OutOfTime as exc:
        res = Result(claim=claim, status=Status.TIMEOUT, method=f"time limit reached in stage '{exc.stage}'",
                     question=memorization_question(prompt_length, fmt(tol), None if R is None else fmt(R)),
                     inputs=_inputs(model, dataset), seconds={"solve": time.perf_counter() - t0})
        res.extra["stage"] = exc.stage
        res.message = f"ran out of time (--timeout {timeout:g} s) in stage '{exc.stage}'; nothing is claimed"
        return res
    t1 = time.perf_counter()
    res = Result(claim=claim, status=Status.UNKNOWN, method="multilayer conditions 1-2",
                 question=memorization_question(prompt_length, fmt(tol), None if R is None else fmt(R)),
                 inputs=_inputs(model, dataset), seconds={"solve": t1 - t0})
    if found is None:
        res.message, res.checks = "not certified: " + "; ".join(failures), {"certificate_checked": False}
        return res
    cond = found["body"]["condition"]
    res.status, res.method, res.reported = Status.PROVED, METHODS[cond], found["reported"]
    res.certificate = certificate(CERT_KIND, found["body"])
    ok, msg = self_check(res)
    res.seconds["check"] = time.perf_counter() - t1
    res.checks = {"certificate_checked": ok}
    if not ok:
        res.status, res.certificate, res.reported = Status.ERROR, None, {}
        res.message = f"internal error: the trusted checker rejected the certificate ({msg})"
        return res
    res.message = msg if cond == 0 else (f"{msg}; per-layer attention bounds " + ", ".join(
        f"{float(Fraction(r['attention_lipschitz'])):.4g}" for r in found["reported"]["layers"]))
    return res


# =========================================================================== Z3 cross-check

class _Z3Encoder:
    """The Z3 query of :func:`_z3_encode`, built piece by piece (one instance per query)."""

    def __init__(self, model: Model, R: Optional[Fraction], relax: str, logic: Optional[str], tangents: int):
        import z3
        self.z3, self.model, self.R, self.relax = z3, model, R, relax
        nonlinear = R is None and not _all_zero_scores(model)
        self.solver = z3.SolverFor(logic) if logic and nonlinear else z3.SolverFor("QF_LRA")
        self.counter = 0
        self.tpts = [Fraction(k, 2) for k in range(-(tangents // 2), tangents // 2 + 1)]
        self.norms = self.boxes = self.state_bounds = None

    # ----------------------------------------------------------------- terms
    def val(self, q):
        q = Fraction(q)
        return self.z3.RealVal(f"{q.numerator}/{q.denominator}")

    def lin(self, M, v) -> list:
        """Exact rational matrix times a vector of terms."""
        out = []
        for row in M:
            terms = [self.val(a) * x for a, x in zip(row, v) if a != 0]
            out.append(self.z3.Sum(terms) if terms else self.val(0))
        return out

    def next_id(self) -> int:
        self.counter += 1
        return self.counter

    def is_const(self, x) -> bool:
        return self.z3.is_rational_value(self.z3.simplify(x))

    def fresh(self, name: str, exprs: list, li: Optional[int] = None) -> list:
        """Fresh variables equal to ``exprs``; with state bounds, boxed by |entry| <= B_li."""
        c = self.next_id()
        vs = [self.z3.Real(f"{name}{c}_{i}") for i in range(len(exprs))]
        self.solver.add([v == e for v, e in zip(vs, exprs)])
        if self.boxes is not None and li is not None:
            B = self.state_bounds[li]
            self.solver.add([self.z3.And(v >= self.val(-B), v <= self.val(B)) for v in vs])
        return vs

    def prod(self, x, xb, y, yb):
        """x * y: exact when a factor is constant, else a fresh w in the McCormick envelope of
        the boxes xb, yb ((lo, hi) pairs): sound, and linear."""
        if self.is_const(x) or self.is_const(y):
            return x * y
        w = self.z3.Real(f"w{self.next_id()}")
        (xl, xu), (yl, yu) = (tuple(self.val(v) for v in xb), tuple(self.val(v) for v in yb))
        self.solver.add(w >= xl * y + x * yl - xl * yl, w >= xu * y + x * yu - xu * yu,
                        w <= xu * y + x * yl - xu * yl, w <= xl * y + x * yu - xl * yu)
        return w

    def nrm(self, li: int, name: str) -> Fraction:
        return Fraction(self.norms[f"layers[{li}].{name}"], GRID)

    # ----------------------------------------------------------------- domain
    def prompt(self, m_p: int) -> list:
        """The prompt variables; with R, in a polytope containing the ball ||p|| <= R."""
        z3, d = self.z3, self.model.d
        P = [[z3.Real(f"p_{b}_{i}") for i in range(d)] for b in range(m_p)]
        if self.R is not None:
            R, r2 = self.R, sqrt_up(Fraction(2), GRID_BITS) * self.R
            for p in P:
                self.solver.add([z3.And(x >= self.val(-R), x <= self.val(R)) for x in p])
                for i in range(d):
                    for j in range(i + 1, d):
                        self.solver.add(z3.And(p[i] + p[j] <= self.val(r2), p[i] + p[j] >= self.val(-r2),
                                               p[i] - p[j] <= self.val(r2), p[i] - p[j] >= self.val(-r2)))
        return P

    def set_boxes(self, dataset: Dataset) -> None:
        """Lemma 2's state bounds B_l and the score boxes |s| <= ||A_j|| B_l^2 (condition 2)."""
        self.norms = {name: norm_grid(W) for name, W in _layer_matrices(self.model, 2).items()}
        B = _ceil_grid(max(self.R, _input_norm(dataset)))
        self.boxes, self.state_bounds = [], [B]
        for li, layer in enumerate(self.model.layers):
            hs = range(len(layer.heads))
            self.boxes.append([self.nrm(li, f"heads[{hj}].W_k^T W_q") * B * B for hj in hs])
            att = sum(self.nrm(li, f"heads[{hj}].W_o W_v") for hj in hs)
            k_mlp = self.nrm(li, "mlp.W_1") * self.nrm(li, "mlp.W_2")
            B = _ceil_grid(B * (1 + att) * (1 + k_mlp) + self.nrm(li, "mlp.W_2") * _vec_norm_up(layer.b_1)
                           + _vec_norm_up(layer.b_2))
            self.state_bounds.append(B)

    # ----------------------------------------------------------------- attention heads
    def head_weights(self, li: int, hj: int, vals: list) -> list:
        """Softmax weights boxed by the exp bounds on the score range, summing to 1."""
        z3, n = self.z3, len(vals)
        vb = self.nrm(li, f"heads[{hj}].W_o W_v") * self.state_bounds[li]
        a = self.boxes[li][hj]
        Elo, Ehi = _exp_enc(-a)[0], _exp_enc(a)[1]
        wlo, whi = Elo / (Elo + (n - 1) * Ehi), Ehi / (Ehi + (n - 1) * Elo)
        c, _ = self.counter, self.next_id()  # (names as before the refactor: Z3's search depends on them)
        ws = [z3.Real(f"w{c}_{b}") for b in range(n)]
        self.solver.add([z3.And(w >= self.val(wlo), w <= self.val(whi)) for w in ws] + [z3.Sum(ws) == 1])
        return [z3.Sum([self.prod(w, (wlo, whi), v[i], (-vb, vb)) for w, v in zip(ws, vals)])
                for i in range(self.model.d)]

    def _exp_var(self, sc, a: Fraction, Elo: Fraction, Ehi: Fraction):
        """E ~ exp(sc) on |sc| <= a: tangents below, the chord through outer enclosures above."""
        E = self.z3.Real(f"E{self.next_id()}")
        self.solver.add(sc >= self.val(-a), sc <= self.val(a), E >= self.val(Elo), E <= self.val(Ehi))
        for t in self.tpts:
            if -a <= t <= a:
                self.solver.add(E >= self.val(_exp_enc(t)[0]) * (1 + sc - self.val(t)))
        if a > 0:
            left = _exp_enc(-a)[1]
            self.solver.add(E <= self.val(left) + self.val((Ehi - left) / (2 * a)) * (sc + self.val(a)))
        return E

    def head_exp(self, li: int, hj: int, A, keys: list, h: list, vals: list) -> list:
        """Linear relaxation: McCormick products over the certified boxes, E per exponential."""
        z3, Bl = self.z3, self.state_bounds[li]
        nV, nA = self.nrm(li, f"heads[{hj}].W_o W_v"), self.nrm(li, f"heads[{hj}].W_k^T W_q")
        a = self.boxes[li][hj]
        Elo, Ehi = _exp_enc(-a)[0], _exp_enc(a)[1]
        Ah = self.lin(A, h)
        if not all(self.is_const(u) for u in Ah):
            Ah = self.fresh("u", Ah)
            self.solver.add([z3.And(u >= self.val(-nA * Bl), u <= self.val(nA * Bl)) for u in Ah])
        Es = [self._exp_var(z3.Sum([self.prod(si, (-Bl, Bl), ui, (-nA * Bl, nA * Bl)) for si, ui in zip(s, Ah)]),
                            a, Elo, Ehi) for s in keys]
        c, _ = self.counter, self.next_id()
        o = [z3.Real(f"o{c}_{i}") for i in range(self.model.d)]
        T, vb, n = z3.Sum(Es), nV * Bl, len(keys)
        for i in range(self.model.d):
            self.solver.add(o[i] >= self.val(-vb), o[i] <= self.val(vb))
            lhs = self.prod(o[i], (-vb, vb), T, (n * Elo, n * Ehi))
            self.solver.add(lhs == z3.Sum([self.prod(E, (Elo, Ehi), v[i], (-vb, vb)) for E, v in zip(Es, vals)]))
        return o

    def head_exact(self, A, keys: list, h: list, vals: list) -> list:
        """Exact products (nonlinear real arithmetic), one E > 0 per exponential with tangent cuts."""
        z3 = self.z3
        Ah = self.lin(A, h)
        Es = []
        for s in keys:
            sc = z3.Sum([a_ * b_ for a_, b_ in zip(s, Ah)])
            E = z3.Real(f"E{self.next_id()}")
            self.solver.add(E > 0)
            for t in self.tpts:
                self.solver.add(E >= self.val(_exp_enc(t)[0]) * (1 + sc - self.val(t)))
            Es.append(E)
        c, _ = self.counter, self.next_id()
        o = [z3.Real(f"o{c}_{i}") for i in range(self.model.d)]
        tot = z3.Sum(Es)
        for i in range(self.model.d):
            self.solver.add(tot * o[i] == z3.Sum([E * v[i] for E, v in zip(Es, vals)]))
        return o

    def attend(self, li: int, layer, keys: list, h: list) -> list:
        """Attention output at state h over the key states ``keys`` (h is the last key)."""
        total = [self.val(0)] * self.model.d
        for hj, head in enumerate(layer.heads):
            V = as_fraction(head.W_o).dot(as_fraction(head.W_v))
            A = as_fraction(head.W_k).T.dot(as_fraction(head.W_q))
            vals = [self.lin(V, s) for s in keys]
            if _is_zero(A) or len(keys) == 1:  # uniform weights (exactly 1 / n)
                o = [self.z3.Sum([v[i] for v in vals]) / len(keys) for i in range(self.model.d)]
            elif self.boxes is not None and self.relax == "weights":
                o = self.head_weights(li, hj, vals)
            elif self.boxes is not None:
                o = self.head_exp(li, hj, A, keys, h, vals)
            else:
                o = self.head_exact(A, keys, h, vals)
            total = [x + y for x, y in zip(total, o)]
        return total

    # ----------------------------------------------------------------- MLP and layers
    def _stable_relu(self, li: int, layer, row, b: Fraction):
        """The ReLU of W_1[i] z + b on the certified domain: "+" (always >= 0), "0" (always <= 0) or None."""
        if self.boxes is None:
            return None
        Bz = self.state_bounds[li] * (1 + sum(self.nrm(li, f"heads[{hj}].W_o W_v") for hj in range(len(layer.heads))))
        m = _vec_norm_up(row) * Bz  # |W_1[i] z| <= ||W_1[i]|| ||z||
        return "+" if b - m >= 0 else "0" if b + m <= 0 else None

    def mlp(self, layer, z: list, li: int) -> list:
        W1 = as_fraction(layer.W_1)
        hid = []
        for row, p, b in zip(W1, self.lin(W1, z), as_fraction(layer.b_1)):
            sign = self._stable_relu(li, layer, row, b)
            pre = p + self.val(b)
            hid.append(pre if sign == "+" else self.val(0) if sign == "0" else
                       self.z3.If(pre > 0, pre, self.val(0)))
        post = self.lin(as_fraction(layer.W_2), hid)
        return [zi + pi + self.val(b) for zi, pi, b in zip(z, post, as_fraction(layer.b_2))]

    def layer_step(self, li: int, layer, keys: list, H: list, name: str) -> list:
        """The next states of the rows H (the visible keys of row t: keys + H[: t + 1])."""
        out = []
        for t in range(len(H)):
            att = self.attend(li, layer, keys + H[: t + 1], H[t])
            out.append(self.fresh(name, self.mlp(layer, [x + y for x, y in zip(H[t], att)], li), li + 1))
        return out

    def targets(self, H: list, outputs: list, tolerance: Fraction) -> None:
        for t, y in enumerate(outputs):
            if y is None:
                continue
            for i, yv in enumerate(as_fraction(np.asarray(y))):
                if tolerance == 0:
                    self.solver.add(H[t][i] == self.val(yv))
                else:
                    self.solver.add(H[t][i] >= self.val(yv - tolerance), H[t][i] <= self.val(yv + tolerance))


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
    R = None if prompt_norm is None else Fraction(prompt_norm)
    enc = _Z3Encoder(model, R, relax, logic, tangents)
    P = enc.prompt(m_p)
    if R is not None:
        enc.set_boxes(dataset)
    prompt_states, S = [P], P  # causal: the prompt's states do not depend on the input
    for li, layer in enumerate(model.layers):
        S = enc.layer_step(li, layer, [], S, "ps")
        prompt_states.append(S)
    for ex in dataset.examples:
        H = [[enc.val(v) for v in as_fraction(x)] for x in ex.input]
        for li, layer in enumerate(model.layers):
            H = enc.layer_step(li, layer, prompt_states[li], H, "h")
        enc.targets(H, ex.output, tolerance)
    return enc.solver, P


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
                row.append(fmt(Fraction(v.numerator_as_long(), v.denominator_as_long())))
            rows.append(row)
        out["prompt"] = rows
    return out



# =========================================================================== the claims' instances

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
        _positive_norm(1 if prompt_norm is None else prompt_norm)
        prompt_norm = 1 if prompt_norm is None else prompt_norm
    t0 = time.perf_counter()
    model, ds, R, res = _build(layers, d, heads, condition, prompt_norm, seed, claim=claim)
    res.seconds = {"build": time.perf_counter() - t0 - sum(res.seconds.values()), **res.seconds}
    res.extra["instance"] = {"layers": layers, "d": d, "heads": heads, "condition": condition,
                             "prompt_norm": None if R is None else fmt(R), "seed": seed}
    return res


def _crosscheck_instance(condition: int, seed: int, claim: Optional[str] = None):
    """The 2-layer, d = 2 instance of the Z3 cross-check (one head, MLP width 2)."""
    return _build(2, 2, 1, condition, 1 if condition == 2 else None, seed, mlp_width=2, claim=claim)


def witness_result(claim: str, model: Model, ds: Dataset, prompt: list, method: str) -> tuple[Result, bool, str]:
    """A ``prompt-witness`` result (tolerance 0, the prompt's length) replayed by the trusted
    checker: "memorized" if it holds, else "unknown".  Returns (result, holds, message)."""
    res = Result(claim=claim, status=Status.MEMORIZED, method=method, inputs=_inputs(model, ds),
                 question=memorization_question(len(prompt), "0"),
                 certificate=certificate(WITNESS_KIND, {"prompt": prompt}))
    ok, msg = self_check(res)
    res.checks["witness_replayed"] = ok
    if not ok:
        res.status = Status.UNKNOWN
    return res, ok, msg


def _z3_found_prompt(res: Result, model: Model, ds: Dataset, sat: dict) -> Result:
    """Z3 claims a prompt memorizes what the certificate rules out: replay it."""
    wit, ok, msg = witness_result(res.claim, model, ds, sat["prompt"], res.method)
    wit.extra, wit.solver, wit.seconds = res.extra, res.solver, res.seconds
    wit.checks.update(res.checks)
    wit.message = (f"Z3 found a prompt of length {sat['prompt_length']} "
                   + ("that replays: the theorem's certificate is wrong" if ok else f"that does not replay ({msg})"))
    return wit


def crosscheck(condition: int = 1, lengths=(1, 2, 3), seed: int = 0, timeout: float = 60.0,
               claim: Optional[str] = None, relax: str = "weights") -> Result:
    """Theorem M's certificate on a 2-layer d = 2 instance, and Z3 deciding the same dataset for
    each prompt length.  "proved" (with the certificate the trusted checker accepted; Z3's unsat is
    supporting information in ``info.z3``) only if Z3 also answers unsat for every length; a Z3
    prompt that replays would contradict the theorem ("memorized", an unexpected verdict)."""
    from verify.result import solver_info
    t0 = time.perf_counter()
    model, ds, R, res = _crosscheck_instance(condition, seed, claim=claim or f"M{condition}-z3")
    res.extra["instance"] = {"layers": 2, "d": 2, "heads": 1, "mlp_width": 2, "condition": condition, "seed": seed}
    if Status(res.status) != Status.PROVED:
        return res
    t1 = time.perf_counter()
    answers = [z3_crosscheck(model, ds, m, prompt_norm=R, timeout=timeout, relax=relax) for m in lengths]
    res.seconds = {"build": t1 - t0, "z3": time.perf_counter() - t1}
    res.checks["z3_answers"] = {str(a["prompt_length"]): a["answer"] for a in answers}
    res.extra["z3"] = answers
    res.solver = solver_info()
    res.method += "; cross-checked by Z3" + (" (exact encoding)" if condition == 1 else
                                             f" (sound linear relaxation '{relax}', see proofs/multilayer.md)")
    sats = [a for a in answers if a["answer"] == "sat"]
    if sats:
        return _z3_found_prompt(res, model, ds, sats[0])
    if any(a["answer"] != "unsat" for a in answers):
        res.status = Status.UNKNOWN
        res.message = ("the certificate holds but Z3 did not decide every prompt length within the time limit: "
                       + ", ".join(f"m_p={a['prompt_length']}: {a['answer']} ({a['seconds']} s)" for a in answers))
        return res
    res.message = ("Z3 agrees: unsat for prompt lengths " + ", ".join(
        f"{a['prompt_length']} ({a['seconds']} s)" for a in answers) + "; " + res.message)
    return res


def nonvacuity(seed: int = 0, lengths=(1, 2, 3), timeout: float = 60.0, claim: str = "M-nonvacuous") -> Result:
    """A causal 2-layer d = 2 model violating condition 1 (||W_o W_v|| = 2 in layer 1, an
    eigenvalue -2 making I + W_o W_v / 2 singular) whose non-injective dataset Z3 memorizes
    with a one-token prompt, replayed exactly by the trusted checker ("memorized")."""
    from constructions.multilayer import violating_dataset, violating_model
    from verify.result import solver_info
    t0 = time.perf_counter()
    model = violating_model(2, seed=seed)
    ds = violating_dataset(model, seed=seed)
    found, failures = certify(model, ds, 1)
    t1 = time.perf_counter()
    res = Result(claim=claim, status=Status.UNKNOWN, method="Z3 (exact encoding) + exact replay",
                 question=memorization_question("any", "0"), inputs=_inputs(model, ds))
    answers = []
    for m in lengths:
        answers.append(z3_crosscheck(model, ds, m, timeout=timeout))
        if answers[-1]["answer"] == "sat":
            res, ok, msg = witness_result(claim, model, ds, answers[-1]["prompt"], res.method)
            if not ok:
                res.message = f"Z3's {m}-token prompt does not replay ({msg})"
            elif found is not None:
                res.status = Status.ERROR
                res.message = "the model meets condition 1 yet a prompt memorizes: the instance is wrong"
            else:
                res.message = (f"condition 1 fails ({'; '.join(failures)}); Z3 found a {m}-token prompt "
                               f"{answers[-1]['prompt']} memorizing both examples; {msg}")
            break
    res.checks["condition_1_certified"] = found is not None
    res.solver, res.extra["z3"], res.extra["instance"] = solver_info(), answers, {"seed": seed}
    res.seconds = {"build": t1 - t0, "z3": time.perf_counter() - t1}
    if Status(res.status) != Status.MEMORIZED and not res.message:
        res.message = "no replayable prompt found: " + ", ".join(f"m_p={a['prompt_length']}: {a['answer']}" for a in answers)
    return res


def encoder_example(seed: int = 0, claim: str = "M-encoder") -> Result:
    """The encoder is not covered: a 4-layer encoder whose weights meet condition 1's bounds
    (zero scores, ||W_o W_v|| <= sqrt(4/5), identity MLPs) maps every input x to -p under a
    one-token prompt p, so p = -y memorizes {(x, y), (x', y)}; replayed exactly by the trusted
    checker.  The causal version of the same weights is certified by condition 1."""
    from constructions.model import Example
    from constructions.multilayer import encoder_counterexample
    t0 = time.perf_counter()
    rng = np.random.default_rng(60_000 + seed)
    model = encoder_counterexample(causal=False)
    x, x2, y = (np.array([Fraction(int(v), 64) for v in rng.integers(-128, 128, 2)], dtype=object) for _ in range(3))
    ds = Dataset([Example(x[None, :], [y]), Example(x2[None, :], [y.copy()])])
    res, ok, msg = witness_result(claim, model, ds, [[fmt(-v) for v in y]], "construction + exact replay")
    proved = check_multilayer(encoder_counterexample(causal=True), ds)
    enc = check_multilayer(model, ds)
    res.checks.update(causal_version_proved=Status(proved.status) == Status.PROVED,
                      encoder_certified=Status(enc.status) == Status.PROVED)
    res.seconds = {"build": time.perf_counter() - t0}
    res.extra["instance"] = {"seed": seed}
    res.message = f"prompt p = -y; {msg}; the same weights with \"causal\": true: {proved.status}"
    return res
