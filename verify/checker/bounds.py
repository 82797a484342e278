"""Checks of LoRA witnesses (Theorem L5) and of the prompt-vs-LoRA parameter table (Theorems L4
and L5 with the rows of L1 and L3), from the question, the result's inputs and nested results.

``lora-witness`` answers a ``lora-memorization`` question.  Body ``{"B": d x k, "A": k x r}``
(exact rationals).  The model and dataset come only from the result's inputs, the target weight
and the tolerance only from the question.  The checker applies ``W_2 + B A`` to the (single-layer)
model and replays every example exactly, with no prompt: hardmax heads, or softmax heads whose
scores are all equal at each constrained query (anything else involves exp and is refused).  Every
non-null output must lie within the tolerance of its target.  It also requires k = rank(B A) and
that B A is the minimum-norm update: every row of B A lies in the span of the post-ReLU features
of the constrained tokens.  With the features fixed (only W_2 changes), B A is then unique, so no
entry of B or A can change without breaking the check.  Derived: ``rank``, ``params`` = rank (d + r),
``max_error`` and ``constrained_outputs``.  Ranks are exact (fraction-free elimination on integer
rows; rank(B A) = k is checked as rank(B) = rank(A) = k); eliminations whose estimated cost exceeds
MAX_RANK_COST are refused rather than run.

``bounds-table`` answers a ``bounds`` question (sizes d, m, N, h, s, r; no inputs).  Body::

    {"L4": {"fit": R},
     "L5": {"hardmax": R, "zero-score": R} | null,   # null exactly when N m > r
     "L1": {"prompt": R, "lora": R},
     "L3": {"prompt": R, "lora": R} | null}          # null exactly when h s >= d

where every R is a complete nested ``ptverify-result/2`` without ``info``, with embedded inputs and
a fixed claim label.  Each one is re-checked by :func:`check_result`.  The formulas of the table
(L4: m_p >= m N, d m N parameters; L5: rank min(d, N m), min(d, N m)(d + r) parameters; L3:
rank 1, d + r parameters; crossover) are recomputed from the question.  Each row's instance must
have the question's sizes (L4's fit: head size ceil(d / h) when h s < d, see proofs/L4.md).  What
each row establishes is in proofs/L4.md and proofs/L5.md.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional

from .envelope import Context, Outcome, check_result
from .inputs import CDataset, CLayer, CModel, load_input, require_plain
from .numbers import Reject, dot, fields, fmt, integer, matrix, rat
from .questions import parse_question

__all__ = ["check_lora", "check_table", "table_numbers", "FIT_TOLERANCE", "NESTED_LABELS"]

#: the tolerance of the L4 row's fit at m_p = m N
FIT_TOLERANCE = Fraction(1, 10 ** 9)
NESTED_REQUIRED = frozenset({"format", "claim", "question", "status", "statement", "inputs", "certificate"})
LORA_REPORTED = frozenset({"rank", "params", "max_error", "constrained_outputs"})
#: (row, part) -> (claim label, question kind, status, certificate kind)
NESTED_LABELS = {
    ("L4", "fit"): ("L4L5/L4-fit", "memorization", "memorized", "prompt-witness"),
    ("L5", "hardmax"): ("L4L5/L5-hardmax", "lora-memorization", "memorized", "lora-witness"),
    ("L5", "zero-score"): ("L4L5/L5-zero-score", "lora-memorization", "memorized", "lora-witness"),
    ("L1", "prompt"): ("L4L5/L1-prompt", "memorization", "proved", "limitation-farkas"),
    ("L1", "lora"): ("L4L5/L1-lora", "lora-memorization", "memorized", "lora-witness"),
    ("L3", "prompt"): ("L4L5/L3-prompt", "memorization", "proved", "limitation-farkas"),
    ("L3", "lora"): ("L4L5/L3-lora", "lora-memorization", "memorized", "lora-witness"),
}


# --------------------------------------------------------------------------- exact linear algebra

#: the estimated cost (rows x cols x rank x w^1.5, w = 1 + rank x bits / 64) of the exact rank
#: eliminations one check may spend (about 10 s); beyond it the check is refused, never run for hours
MAX_RANK_COST = 1 << 31


def _rank(rows: list, budget: Optional[list] = None) -> int:
    """Exact rank of a list of rational row vectors: each row scaled to integers (which keeps the
    rank), then fraction-free (Bareiss) elimination with row pivoting, whose divisions are exact
    and whose entries stay minors of the matrix (no rational growth).  ``budget`` ([units left])
    is charged the estimated cost first; beyond it the check is refused (Reject)."""
    R = []
    for r in rows:
        if any(r):
            L = math.lcm(*(Fraction(x).denominator for x in r))
            R.append([int(Fraction(x) * L) for x in r])
    if not R:
        return 0
    m, n = len(R), len(R[0])
    if budget is not None:
        b = max(abs(x).bit_length() for row in R for x in row)
        w = 1 + min(m, n) * b // 64
        budget[0] -= m * n * min(m, n) * w * math.isqrt(w)
        if budget[0] < 0:
            raise Reject(f"certificate.body: an exact rank of a {m} x {n} matrix of {b}-bit integers is beyond the "
                         "checker's limit")
    rank, prev = 0, 1
    for c in range(n):
        p = next((i for i in range(rank, m) if R[i][c] != 0), None)
        if p is None:
            continue
        R[rank], R[p] = R[p], R[rank]
        piv = R[rank][c]
        for i in range(rank + 1, m):
            a = R[i][c]
            R[i] = [0] * (c + 1) + [(piv * R[i][j] - a * R[rank][j]) // prev for j in range(c + 1, n)]
        prev, rank = piv, rank + 1
    return rank


# --------------------------------------------------------------------------- exact replay (no prompt)

def _attention_at(layer: CLayer, seq: list, a: int, causal: bool, where: str) -> list:
    """seq[a] + Att(seq[a], seq), exactly: hardmax, or softmax with equal scores at this query."""
    out = list(seq[a])
    keys = range(a + 1) if causal else range(len(seq))
    for j, h in enumerate(layer.heads):
        q = h["W_q"].mv(seq[a])
        sc = [dot(h["W_k"].mv(seq[b]), q) for b in keys]
        top = max(sc)
        if layer.kind == "softmax" and any(s != top for s in sc):
            raise Reject(f"{where}: softmax head {j} has unequal scores at position {a}; its output involves "
                         "exp and cannot be replayed exactly (only hardmax or equal-score heads can)")
        sel = [b for b, s in zip(keys, sc) if s == top]
        vals = [h["W_v"].mv(seq[b]) for b in sel]
        mix = [sum(col, Fraction(0)) / len(sel) for col in zip(*vals)]
        out = [x + y for x, y in zip(out, h["W_o"].mv(mix))]
    return out


def _replay_lora(model: CModel, ds: CDataset, B: list, A: list) -> tuple[Fraction, list, int]:
    """Max |output - target| over every non-null output of W_2 + B A, the features of the
    constrained tokens, and their number."""
    layer = model.layers[0]
    worst, feats = Fraction(0), []
    for i, (X, Y) in enumerate(zip(ds.inputs, ds.outputs)):
        for t, y in enumerate(Y):
            if y is None:
                continue
            z = _attention_at(layer, X, t, model.causal, f"dataset.examples[{i}]")
            hid = [max(p + b, Fraction(0)) for p, b in zip(layer.W_1.mv(z), layer.b_1)]
            low = [dot(a, hid) for a in A]
            upd = [dot(brow, low) for brow in B] if A else [Fraction(0)] * model.d
            out = [zz + w + u + c for zz, w, u, c in zip(z, layer.W_2.mv(hid), upd, layer.b_2)]
            worst = max([worst] + [abs(o - v) for o, v in zip(out, y)])
            feats.append(hid)
    return worst, feats, len(feats)


def _factors(body, d: int, r: int, budget: list) -> tuple[list, list, int]:
    fields(body, "certificate.body", {"B", "A"})
    A = matrix(body["A"], "certificate.body.A", cols=r)
    k = len(A)
    B = matrix(body["B"], "certificate.body.B", rows=d, cols=k)
    if k > min(d, r):
        raise Reject(f"certificate.body.A: {k} rows, more than min(d, r) = {min(d, r)}")
    # rank(B A) = k iff rank(B) = rank(A) = k (B is d x k, A is k x r): no product is formed
    if k and (_rank([list(c) for c in zip(*B)], budget) != k or _rank(A, budget) != k):
        raise Reject(f"certificate.body: B A does not have rank {k} (B has {k} columns): not a rank-{k} factorization")
    return B, A, k


def check_lora(ctx: Context) -> Outcome:
    """A LoRA update of W_2 memorizes ``inputs.dataset`` on ``inputs.model`` (exact replay)."""
    q, model, ds = ctx.question, ctx.inputs["model"], ctx.inputs["dataset"]
    require_plain(model, ds, "lora-witness")
    if q["target"] != "W_2":
        raise Reject(f"question.target: only 'W_2' (Theorem L5's update) can be checked, found {q['target']!r}"[:200])
    if len(model.layers) != 1:
        raise Reject(f"inputs.model: a LoRA update of W_2 is checked on single-layer models, found "
                     f"{len(model.layers)} layers")
    d, r = model.d, model.layers[0].W_1.shape[0]
    budget = [MAX_RANK_COST]
    B, A, k = _factors(ctx.body, d, r, budget)
    worst, feats, n = _replay_lora(model, ds, B, A)
    if n == 0:
        raise Reject("inputs.dataset: constrains no output; there is nothing to memorize")
    if worst > q["tolerance"]:
        raise Reject(f"certificate.body: an output of W_2 + B A is {fmt(worst)[:60]} from its target, more than "
                     f"the tolerance {fmt(q['tolerance'])}")
    if k and _rank(feats + A, budget) != _rank(feats, budget):
        raise Reject("certificate.body.A: a row of B A is outside the span of the constrained tokens' features "
                     "(only the minimum-norm update is accepted)")
    return Outcome(f"rank-{k} update of W_2 ({k * (d + r)} parameters) memorizes all {n} constrained outputs "
                   f"(max error {fmt(worst)[:40]}, exact replay)",
                   {"rank": k, "params": k * (d + r), "max_error": fmt(worst), "constrained_outputs": n})


# --------------------------------------------------------------------------- the table's formulas

def _sizes(q: dict) -> tuple[int, int, int, int, int, int]:
    return q["d"], q["m"], q["N"], q["heads"], q["head_size"], q["mlp_width"]


def _crossover(d: int, m: int, N: int, r: int):
    """The smallest N' <= max(2 N, r // m + 2, ceil(d / m) + 2) with N' m <= r at which the L5 count
    min(d, N' m)(d + r) is at most the L4 count d m N', in closed form (the sizes may be 2^30, so
    no search): for N' m <= d the condition reads d + r <= d, false as r >= 1; for N' m > d it
    reads N' m >= d + r."""
    top = min(max(2 * N, r // m + 2, -(-d // m) + 2), r // m)
    n = max(d // m + 1, -(-(d + r) // m))
    return n if n <= top else None


def table_numbers(q: dict) -> dict:
    """Every number of the table, from the question's sizes alone (the checker's own copy)."""
    d, m, N, h, s, r = _sizes(q)
    nm, l5, l3 = N * m, N * m <= r, h * s < d
    return {"L4_min_prompt_length": nm, "L4_min_prompt_params": d * nm, "L4_short_prompt_params": d * (nm - 1),
            "L4_output_dimension": d * nm, "L4_fit_head_size": s if h * s >= d else -(-d // h),
            "L4_fit_tolerance": fmt(FIT_TOLERANCE),
            "L5_rank_bound": min(d, nm) if l5 else None, "L5_params_bound": min(d, nm) * (d + r) if l5 else None,
            "L3_lora_rank": 1 if l3 else None, "L3_lora_params": d + r if l3 else None,
            "crossover_N": _crossover(d, m, N, r)}


# --------------------------------------------------------------------------- nested results

def _nested(obj, where: str, key: tuple, base_dir: str) -> tuple[dict, CModel, CDataset]:
    """Structural checks of a nested result (its full check is :func:`check_result`, run later);
    returns its parsed question and its inputs, loaded and hash-checked."""
    label, qkind, status, kind = NESTED_LABELS[key]
    fields(obj, where, NESTED_REQUIRED, {"reported"})
    if obj["claim"] != label:
        raise Reject(f"{where}.claim: expected {label!r}, found {str(obj['claim'])[:60]!r}")
    if obj["status"] != status:
        raise Reject(f"{where}.status: expected {status!r}, found {str(obj['status'])[:30]!r}")
    cert = fields(obj["certificate"], f"{where}.certificate", {"format", "kind", "body"})
    if cert["kind"] != kind:
        raise Reject(f"{where}.certificate.kind: expected {kind!r}, found {str(cert['kind'])[:40]!r}")
    found, q = parse_question(obj["question"])
    if found != qkind:
        raise Reject(f"{where}.question.kind: expected {qkind!r}, found {found!r}")
    refs = obj["inputs"]
    if not isinstance(refs, dict) or set(refs) != {"model", "dataset"}:
        raise Reject(f"{where}.inputs: expected exactly a model and a dataset")
    for name in ("model", "dataset"):
        if not isinstance(refs[name], dict) or "embedded" not in refs[name]:
            raise Reject(f"{where}.inputs.{name}: a nested result embeds its inputs")
    model = load_input("model", refs["model"], base_dir)
    ds = load_input("dataset", refs["dataset"], base_dir, model.d)
    require_plain(model, ds, f"{where} (a bounds-table row)")
    return q, model, ds


def _shape(model: CModel, where: str, d: int, h: int, s: int, r: int, kind) -> None:
    """The instance has the question's sizes: one layer, d, h heads of size s, width r."""
    layer = model.layers[0]
    got = (model.d, len(model.layers), len(layer.heads), {hd["W_q"].shape[0] for hd in layer.heads},
           layer.W_1.shape[0])
    if got != (d, 1, h, {s}, r):
        raise Reject(f"{where}: expected one layer with d = {d}, {h} heads of size {s}, MLP width {r}; found "
                     f"d = {got[0]}, {got[1]} layers, {got[2]} heads of sizes {sorted(got[3])}, width {got[4]}")
    if kind is not None and layer.kind != kind:
        raise Reject(f"{where}: expected {kind} attention, found {layer.kind}")


def _generic(ds: CDataset, where: str, N: int, m: int) -> None:
    """N examples of m tokens, every output constrained (the L4/L5 setting)."""
    if len(ds.inputs) != N or any(len(X) != m for X in ds.inputs) or any(y is None for Y in ds.outputs for y in Y):
        raise Reject(f"{where}: expected {N} examples of {m} tokens with every output constrained")


def _lora_numbers(obj: dict, where: str, d: int, r: int) -> int:
    """The rank a nested LoRA result reports (check_result later compares it with the derived one)."""
    rep = fields(obj.get("reported"), f"{where}.reported", LORA_REPORTED)
    k = integer(rep["rank"], f"{where}.reported.rank", 0, d)
    if integer(rep["params"], f"{where}.reported.params", 0) != k * (d + r):
        raise Reject(f"{where}.reported.params: expected rank (d + r) = {k * (d + r)}")
    if rat(rep["max_error"], f"{where}.reported.max_error") != 0:
        raise Reject(f"{where}.reported.max_error: expected 0 (exact memorization)")
    return k


def _lora_question(q: dict, where: str) -> None:
    if q["target"] != "W_2" or q["tolerance"] != 0:
        raise Reject(f"{where}.question: expected target 'W_2' and tolerance 0")


# --------------------------------------------------------------------------- rows

def _row_l4(body, q: dict, base: str) -> tuple[list, dict]:
    d, m, N, h, s, r = _sizes(q)
    where = "certificate.body.L4"
    fields(body, where, {"fit"})
    fq, model, ds = _nested(body["fit"], f"{where}.fit", ("L4", "fit"), base)
    if (fq["prompt_length"], fq["tolerance"], fq["prompt_norm"]) != (m * N, FIT_TOLERANCE, None):
        raise Reject(f"{where}.fit.question: expected prompt length m N = {m * N}, tolerance {fmt(FIT_TOLERANCE)} "
                     "and no norm bound")
    _shape(model, f"{where}.fit.inputs.model", d, h, table_numbers(q)["L4_fit_head_size"], r, "softmax")
    _generic(ds, f"{where}.fit.inputs.dataset", N, m)
    return [(f"{where}.fit", body["fit"])], {}


def _row_l5(body, q: dict, base: str) -> tuple[list, dict]:
    d, m, N, h, s, r = _sizes(q)
    where = "certificate.body.L5"
    if N * m > r:
        if body is not None:
            raise Reject(f"{where}: expected null (L5 does not apply: N m = {N * m} > r = {r})")
        return [], {"L5_hardmax_rank": None, "L5_zero_score_rank": None}
    fields(body, where, {"hardmax", "zero-score"})
    derived = {}
    for part, kind in (("hardmax", "hardmax"), ("zero-score", "softmax")):
        w = f"{where}.{part}"
        lq, model, ds = _nested(body[part], w, ("L5", part), base)
        _lora_question(lq, w)
        _shape(model, f"{w}.inputs.model", d, h, s, r, kind)
        _generic(ds, f"{w}.inputs.dataset", N, m)
        derived[f"L5_{part.replace('-', '_')}_rank"] = _lora_numbers(body[part], w, d, r)
    return [(f"{where}.{p}", body[p]) for p in ("hardmax", "zero-score")], derived


def _row_pair(body, row: str, q: dict, base: str) -> tuple[list, dict]:
    """L1 / L3: no prompt of any length memorizes (proved), a LoRA update of W_2 does, same instance."""
    d, m, N, h, s, r = _sizes(q)
    where = f"certificate.body.{row}"
    fields(body, where, {"prompt", "lora"})
    pq, pm, _ = _nested(body["prompt"], f"{where}.prompt", (row, "prompt"), base)
    if (pq["prompt_length"], pq["tolerance"], pq["prompt_norm"]) != ("any", 0, None):
        raise Reject(f"{where}.prompt.question: expected prompt length 'any', tolerance 0, no norm bound")
    lq, _, lds = _nested(body["lora"], f"{where}.lora", (row, "lora"), base)
    _lora_question(lq, f"{where}.lora")
    if any(body["prompt"]["inputs"][n]["sha256"] != body["lora"]["inputs"][n]["sha256"] for n in ("model", "dataset")):
        raise Reject(f"{where}: the prompt and LoRA results must be about the same model and dataset")
    _shape(pm, f"{where}.prompt.inputs.model", d, h, s, r, None)
    k = _lora_numbers(body["lora"], f"{where}.lora", d, r)
    n = sum(y is not None for Y in lds.outputs for y in Y)
    if row == "L3" and k != 1:
        raise Reject(f"{where}.lora: L3's update has rank 1, found rank {k}")
    if k > min(d, n):
        raise Reject(f"{where}.lora: rank {k} exceeds min(d, n) = {min(d, n)}")
    return [(f"{where}.lora", body["lora"]), (f"{where}.prompt", body["prompt"])], {f"{row}_lora_rank": k}


def check_table(ctx: Context) -> Outcome:
    """Every row of the table on its instance (nested results), the formulas from the question."""
    q = ctx.question
    d, m, N, h, s, r = _sizes(q)
    body = fields(ctx.body, "certificate.body", {"L4", "L5", "L1", "L3"})
    nested, derived = [], table_numbers(q)
    for rows, extra in (_row_l4(body["L4"], q, ctx.base_dir), _row_l5(body["L5"], q, ctx.base_dir),
                        _row_pair(body["L1"], "L1", q, ctx.base_dir)):
        nested += rows
        derived.update(extra)
    if h * s < d:
        rows, extra = _row_pair(body["L3"], "L3", q, ctx.base_dir)
        nested, derived = nested + rows, dict(derived, **extra)
    elif body["L3"] is not None:
        raise Reject(f"certificate.body.L3: expected null (h s = {h * s} >= d = {d}: L3 does not apply)")
    else:
        derived["L3_lora_rank"] = None
    for where, obj in sorted(nested, key=lambda p: "fit" in p[0]):     # the interval replay last
        ok, msg = check_result(obj, ctx.base_dir)
        if not ok:
            raise Reject(f"{where}: {msg}"[:400])
    return Outcome(f"table recomputed from d={d}, m={m}, N={N}, h={h}, s={s}, r={r}; {len(nested)} nested results "
                   "re-checked (L4 fit at m_p = m N, L5 exact LoRA, L1/L3 no prompt and LoRA)", derived)
