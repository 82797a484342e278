"""The prompt-vs-LoRA parameter table (Theorems L4, L5, with L1 and L3) and its verification on
seeded random instances: the producer side.  The command is in ``verify/cli/bounds.py``, the
claims in ``verify/claims/bounds.py``, the checks in ``verify/checker/bounds.py``.

Rows of the table, for d, m (tokens per example), N (examples), h, s, r:

* L4 (generic datasets): a prompt must have m_p >= m N tokens, d m N parameters.
* L5 (generic datasets, single layer, when N m <= r): a LoRA update of W_2 of rank min(d, N m)
  suffices, min(d, N m)(d + r) parameters.
* L1 (shared query token): no finite prompt; the exact L5 update memorizes (rank <= the number of
  constrained outputs).
* L3 (targets off the attention subspace, needs h s < d): no finite prompt; a rank-1 update.
* crossover: the smallest N at which the L5 count drops to the L4 count, within L5's hypothesis
  N m <= r.

``--verify`` checks each row on instances (:func:`verify_table`).  The result is a
``ptverify-result/2`` with a ``bounds-table`` certificate whose rows are nested results (a
``prompt-witness`` fit at m_p = m N, ``lora-witness`` updates, ``limitation-farkas`` proofs), each
re-checked by the trusted checker.
"""
from __future__ import annotations

import math
import time
from fractions import Fraction
from typing import Optional

import numpy as np

from constructions.datasets import l1_dataset, l3_dataset, random_model, random_tokens
from constructions.lora import NotExact, frac_matrix, lora_w2_exact
from constructions.model import Dataset, Example, InputError, Model, as_fraction, dataset_to_json, model_to_json

from verify.checker import check_result
from verify.checker.bounds import FIT_TOLERANCE
from verify.provers.exact import fmt
from verify.result import DECIDED, Result, Status, certificate, embed, memorization_question

__all__ = ["bounds_table", "verify_table", "run_bounds", "lora_result", "fit_result", "nested",
           "generic_exact_dataset"]


def _check_int(name: str, v, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise InputError(name, f"an integer >= {lo}", repr(v))
    return int(v)


# --------------------------------------------------------------------------- the table (formulas)

def bounds_table(d: int, m: int, N: int, heads: int, head_size: int, mlp_width: int) -> dict:
    """The parameter counts of L4 / L5 / L1 / L3 and the crossover analysis (pure arithmetic)."""
    d, m, N = _check_int("--d", d), _check_int("--m", m), _check_int("--examples", N)
    h, s, r = _check_int("--heads", heads), _check_int("--head-size", head_size), _check_int("--mlp-width", mlp_width)
    nm = N * m
    l5_ok = nm <= r
    k5 = min(d, nm)
    rows = [
        {"row": "L4", "dataset": f"generic, N={N} examples of m={m} tokens",
         "prompt": {"min_length": nm, "min_params": d * nm, "text": f"m_p >= m N = {nm} ({d * nm} parameters)"},
         "lora": None, "statement": "almost every target set needs m_p >= m N (image of R^{d m_p} has measure zero otherwise)"},
        {"row": "L5", "dataset": f"generic, N={N} examples of m={m} tokens",
         "prompt": None,
         "lora": ({"target": "W_2", "rank": k5, "params": k5 * (d + r), "text": f"rank min(d, N m) = {k5}, "
                   f"{k5 * (d + r)} parameters"} if l5_ok else
                  {"target": "W_2", "rank": None, "params": None,
                   "text": f"L5 does not apply: N m = {nm} > r = {r} (H cannot have full column rank)"}),
         "statement": "Delta W_2 = (Y - Yhat) H^+ memorizes when H has full column rank"},
        {"row": "L1", "dataset": "shared query token x_0 (Theorem L1), outputs at x_0 only",
         "prompt": {"min_length": None, "min_params": None, "text": "no finite prompt (any length fails)"},
         "lora": {"target": "W_2", "rank": "<= number of constrained outputs (2 when the heads form a direct sum)",
                  "params": None, "text": "exact L5 update; rank = rank(Y - Yhat)"},
         "statement": "no prompt of any length memorizes; LoRA does"},
        {"row": "L3", "dataset": "target off the attention subspace V",
         "prompt": ({"min_length": None, "min_params": None, "text": "no finite prompt (any length fails)"}
                    if h * s < d else {"min_length": None, "min_params": None,
                                       "text": f"not applicable: h s = {h * s} >= d = {d}, V may be all of R^d"}),
         "lora": {"target": "W_2", "rank": 1, "params": d + r, "text": f"rank 1, {d + r} parameters"},
         "statement": "no prompt of any length leaves V; a rank-1 LoRA update of W_2 does"},
    ]
    scan = []
    top = max(2 * N, (r // m) + 2, math.ceil(d / m) + 2)
    for n_ in range(1, top + 1):
        p = d * m * n_
        lo = min(d, n_ * m) * (d + r) if n_ * m <= r else None
        scan.append({"N": n_, "prompt_params_lower": p, "lora_params_upper": lo})
    cross = next((x["N"] for x in scan if x["lora_params_upper"] is not None and x["lora_params_upper"] <= x["prompt_params_lower"]), None)
    crossover = {
        "N": cross,
        "text": ("none: within L5's hypothesis N m <= r the LoRA count min(d, N m)(d + r) always exceeds the "
                 "prompt count d m N (if N m <= d: N m (d + r) > N m d; else d (d + r) > d r >= d N m)")
        if cross is None else f"from N = {cross} on, the L5 LoRA count is at most the L4 prompt count",
        "lora_saturates_at_N": math.ceil(d / m),
        "l5_applies_up_to_N": r // m,
        "note": "L4 is a lower bound for prompts and L5 an upper bound for LoRA on generic datasets, so the "
                "counts do not order the methods there; the separation is on L1/L3 datasets, where no finite "
                "prompt works and a low-rank update does.",
    }
    return {"d": d, "m": m, "N": N, "heads": h, "head_size": s, "mlp_width": r, "rows": rows,
            "crossover": crossover, "scan": scan}


# --------------------------------------------------------------------------- instances and results

def generic_exact_dataset(model: Model, N: int, m: int, seed: int) -> Dataset:
    """N examples of m random dyadic tokens, every output a random dyadic target (exact)."""
    rng = np.random.default_rng(50_000 + seed)
    exs = []
    for _ in range(N):
        X = random_tokens(rng, m, model.d)
        Y = random_tokens(rng, m, model.d)
        exs.append(Example(X, [as_fraction(y) for y in Y]))
    return Dataset(exs, meta={"builder": "generic_exact_dataset", "seed": seed})


def _rows(M) -> list:
    return [[fmt(v) for v in row] for row in frac_matrix(M)] if M.size else [[] for _ in range(M.shape[0])]


def _self_checked(res: Result) -> Result:
    """Run the trusted checker on a decided result; a rejected one is downgraded to unknown."""
    ok, msg = check_result(res.to_json())
    res.checks["checker"] = ok
    if not ok:
        res.message = f"the checker rejected the result: {msg}"
        res.status = Status.UNKNOWN
    return res


def nested(res: Result) -> Optional[dict]:
    """A decided result as it sits inside a table certificate (no ``info``), or None."""
    if Status(res.status) not in DECIDED:
        return None
    out = res.to_json()
    out.pop("info", None)
    return out


def lora_result(model: Model, ds: Dataset, claim: str = "L5", inputs: Optional[dict] = None) -> Result:
    """Theorem L5's exact update of W_2 as a ``lora-memorization`` result (``memorized`` with a
    ``lora-witness``, or ``unknown`` when L5 does not apply or the replay is not exact)."""
    t0 = time.perf_counter()
    q = {"kind": "lora-memorization", "target": "W_2", "tolerance": "0"}
    inputs = inputs or {"model": embed(model_to_json(model)), "dataset": embed(dataset_to_json(ds))}
    res = Result(claim, Status.UNKNOWN, question=q, inputs=inputs,
                 method="exact rational least squares (Delta W_2 = E H^+) and rank factorization")
    try:
        c = lora_w2_exact(model, ds)
    except NotExact as exc:
        res.message = str(exc)
        return res
    res.seconds["build"] = time.perf_counter() - t0
    res.checks.update(rank=c.rank, rank_bound=c.bound_rank, feature_rank=c.feature_rank, tokens=c.n_tokens)
    if c.update is None:
        res.message = c.message
        return res
    u = c.update
    res.status = Status.MEMORIZED
    res.certificate = certificate("lora-witness", {"B": _rows(u.B), "A": _rows(u.A)})
    res.reported = {"rank": u.rank, "params": u.n_parameters, "max_error": "0", "constrained_outputs": c.n_tokens}
    res.message = f"rank-{u.rank} update of W_2 ({u.n_parameters} parameters) memorizes {c.n_tokens} outputs exactly"
    t1 = time.perf_counter()
    _self_checked(res)
    res.seconds["check"] = time.perf_counter() - t1
    return res


def fit_result(model: Model, ds: Dataset, P: np.ndarray, claim: str = "L4L5/L4-fit") -> Result:
    """A float prompt as a ``memorization`` result at tolerance :data:`FIT_TOLERANCE` (a
    ``prompt-witness``, replayed by the checker with rigorous enclosures)."""
    q = memorization_question(prompt_length=int(len(P)), tolerance=fmt(FIT_TOLERANCE))
    body = {"prompt": [[fmt(Fraction(float(x))) for x in row] for row in np.asarray(P, dtype=np.float64)]}
    res = Result(claim, Status.MEMORIZED, question=q,
                 inputs={"model": embed(model_to_json(model)), "dataset": embed(dataset_to_json(ds))},
                 certificate=certificate("prompt-witness", body),
                 method="Gauss-Newton in float64; replayed with exact rationals and exp enclosures")
    t0 = time.perf_counter()
    _self_checked(res)
    res.seconds["check"] = time.perf_counter() - t0
    return res


# --------------------------------------------------------------------------- L4 measurements (float64)

def _jacobian_rank(model: Model, ds: Dataset, P0: np.ndarray) -> tuple[int, int, float]:
    """Numerical rank of d(outputs at constrained positions)/dP at P0: a float64 measurement,
    recorded under ``info``; no verdict rests on it (proofs/L4.md)."""
    import torch
    from verify.experiments.prompt_vs_lora import TorchLayerModel, dataset_tensors
    tm = TorchLayerModel(model)
    X, _, mask = dataset_tensors(ds)
    N = X.shape[0]
    sel = mask[..., 0].bool()

    def f(p):
        return tm(X, p.unsqueeze(0).expand(N, -1, -1))[sel].reshape(-1)
    J = torch.autograd.functional.jacobian(f, torch.as_tensor(P0, dtype=torch.float64)).reshape(-1, P0.size).numpy()
    sv = np.linalg.svd(J, compute_uv=False)
    rank = int((sv > 1e-9 * sv.max()).sum())
    return rank, J.shape[0], float(sv.min() / sv.max()) if sv.size else 0.0


def _newton_fit(model: Model, ds: Dataset, P0: np.ndarray, iters: int = 40) -> tuple[np.ndarray, float]:
    """Gauss-Newton (least-squares steps, backtracking) in float64 on the prompt; returns
    (prompt, max abs error at the constrained outputs)."""
    import torch
    from verify.experiments.prompt_vs_lora import TorchLayerModel, dataset_tensors
    tm = TorchLayerModel(model)
    X, Y, mask = dataset_tensors(ds)
    N = X.shape[0]
    sel = mask[..., 0].bool()
    y = Y[sel].reshape(-1)

    def g(p):
        return tm(X, p.unsqueeze(0).expand(N, -1, -1))[sel].reshape(-1)
    P = torch.as_tensor(P0, dtype=torch.float64).clone()
    res = g(P) - y
    for _ in range(iters):
        if float(res.abs().max()) < 1e-14:
            break
        J = torch.autograd.functional.jacobian(g, P).reshape(y.numel(), -1)
        step = torch.linalg.lstsq(J, res.unsqueeze(1)).solution.reshape(P.shape)
        t, e0 = 1.0, float(res.norm())
        while t > 1e-6:
            rn = g(P - t * step) - y
            if float(rn.norm()) < e0:
                break
            t /= 2
        if t <= 1e-6:
            break
        P, res = P - t * step, rn
    return P.numpy(), float(res.abs().max())


def _generic_softmax_dataset(model: Model, N: int, m: int, seed: int, P0: Optional[np.ndarray] = None,
                             noise: float = 1e-3) -> Dataset:
    """Generic targets: outputs at a random prompt P0 (when given) plus N(0, noise^2) noise, or
    random dyadic targets; every output constrained."""
    from constructions.forward import forward_torch
    rng = np.random.default_rng(60_000 + seed)
    exs = []
    for _ in range(N):
        X = random_tokens(rng, m, model.d)
        if P0 is None:
            Y = random_tokens(rng, m, model.d)
        else:
            Y = forward_torch(model, X, P0).numpy() + rng.normal(0, noise, (m, model.d))
        exs.append(Example(X, [np.asarray(y, dtype=np.float64) for y in Y]))
    return Dataset(exs, meta={"builder": "generic_softmax_dataset", "seed": seed, "noise": noise})


# --------------------------------------------------------------------------- rows on instances

def _l4_row(d, m, N, h, s, r, seed) -> tuple[Optional[dict], dict]:
    """L4: the necessary part is the dimension count (checked from the question); on an instance,
    a prompt of length m N that fits generic targets within FIT_TOLERANCE (the bound is attained).
    Jacobian ranks are float measurements for ``info``."""
    nm, rng = N * m, np.random.default_rng(70_000 + seed)
    info: dict = {"dimension_count": {"short_prompt_parameters": d * (nm - 1), "output_dimension": d * nm}}
    if nm > 1:
        model = random_model(d, heads=h, head_size=s, mlp_width=r, seed=seed)
        rk, rows, _ = _jacobian_rank(model, _generic_softmax_dataset(model, N, m, seed), random_tokens(rng, nm - 1, d))
        info["short_prompt_measurement"] = {"prompt_length": nm - 1, "jacobian_rank_float64": rk, "jacobian_rows": rows}
    s2 = s if h * s >= d else math.ceil(d / h)
    model2 = random_model(d, heads=h, head_size=s2, mlp_width=r, seed=seed)
    P0 = random_tokens(rng, nm, d)
    ds2 = _generic_softmax_dataset(model2, N, m, seed, P0, noise=1e-6)
    rk2, rows2, cond2 = _jacobian_rank(model2, ds2, P0)
    P, err = _newton_fit(model2, ds2, P0)
    fit = {"prompt_length": nm, "model_head_size": s2, "jacobian_rank_float64_at_P0": rk2, "jacobian_rows": rows2,
           "jacobian_condition_float64": cond2, "float_max_error": err,
           "targets": "outputs at a random prompt P0 of length m N plus N(0, 1e-12) noise"}
    info["fit"] = fit
    if err >= 1e-11:
        fit["status"] = f"no prompt found by Gauss-Newton (max error {err:.3g})"
        return None, info
    res = fit_result(model2, ds2, P)
    fit["status"], fit["message"] = Status(res.status).value, res.message
    return ({"fit": nested(res)} if nested(res) else None), info


def _l5_row(d, m, N, h, s, r, seed) -> tuple[Optional[dict], dict]:
    """L5 on generic exact datasets: a hardmax and a zero-score model."""
    out, info = {}, {}
    for part, kind, zero in (("hardmax", "hardmax", False), ("zero-score", "softmax", True)):
        model = random_model(d, heads=h, head_size=s, mlp_width=r, seed=seed, kind=kind, zero_scores=zero)
        res = lora_result(model, generic_exact_dataset(model, N, m, seed), f"L4L5/L5-{part}")
        info[part] = {"status": Status(res.status).value, "message": res.message, **res.checks}
        out[part] = nested(res)
    return (out if all(out.values()) else None), info


def _pair_row(row: str, d, h, s, r, seed, timeout) -> tuple[Optional[dict], dict]:
    """L1 / L3 on a zero-score model: the core prover (no prompt of any length) and the exact update."""
    from verify.provers.limitation import check_memorization
    model = random_model(d, heads=h, head_size=s, mlp_width=r, seed=seed, zero_scores=True)
    ds = l1_dataset(model, seed) if row == "L1" else l3_dataset(model, seed, examples=1)
    t0 = time.perf_counter()
    prompt = check_memorization(model, ds, prompt_length="any", timeout=timeout, claim=f"L4L5/{row}-prompt")
    secs = time.perf_counter() - t0
    lora = lora_result(model, ds, f"L4L5/{row}-lora", inputs=prompt.inputs or None)
    info = {"prompt": {"status": Status(prompt.status).value, "message": prompt.message[:300], "seconds": secs},
            "lora": {"status": Status(lora.status).value, "message": lora.message, **lora.checks}}
    parts = {"prompt": nested(prompt), "lora": nested(lora)}
    ok = Status(prompt.status) == Status.PROVED and all(parts.values())
    return (parts if ok else None), info


def verify_table(d, m, N, h, s, r, seed=0, timeout=30.0) -> tuple[dict, dict]:
    """Every row on seeded instances: (certificate body with None for rows that failed, info)."""
    body, info = {}, {}
    body["L4"], info["L4"] = _l4_row(d, m, N, h, s, r, seed)
    if N * m <= r:
        body["L5"], info["L5"] = _l5_row(d, m, N, h, s, r, seed)
    else:
        info["L5"] = {"not_applicable": f"N m = {N * m} > r = {r}: L5's hypothesis fails"}
    body["L1"], info["L1"] = _pair_row("L1", d, h, s, r, seed, timeout)
    if h * s < d:
        body["L3"], info["L3"] = _pair_row("L3", d, h, s, r, seed, timeout)
    else:
        info["L3"] = {"not_applicable": f"h s = {h * s} >= d = {d}: the attention subspace may be all of R^d"}
    return body, info


def _failed_rows(body: dict, d, m, N, h, s, r) -> list:
    need = {"L4": True, "L5": N * m <= r, "L1": True, "L3": h * s < d}
    return [k for k, v in need.items() if v and body.get(k) is None]


def _reported(table: dict, body: dict) -> dict:
    """The numbers the checker re-derives: the formulas (from the producer's table) and the ranks."""
    d, m, N, h, s, r = (table[k] for k in ("d", "m", "N", "heads", "head_size", "mlp_width"))
    rows = {row["row"]: row for row in table["rows"]}
    l3 = h * s < d
    rep = {"L4_min_prompt_length": rows["L4"]["prompt"]["min_length"],
           "L4_min_prompt_params": rows["L4"]["prompt"]["min_params"],
           "L4_short_prompt_params": d * (m * N - 1), "L4_output_dimension": d * m * N,
           "L4_fit_head_size": s if h * s >= d else math.ceil(d / h), "L4_fit_tolerance": fmt(FIT_TOLERANCE),
           "L5_rank_bound": rows["L5"]["lora"]["rank"], "L5_params_bound": rows["L5"]["lora"]["params"],
           "L3_lora_rank": rows["L3"]["lora"]["rank"] if l3 else None,
           "L3_lora_params": rows["L3"]["lora"]["params"] if l3 else None,
           "crossover_N": table["crossover"]["N"]}
    for row, part, key in (("L5", "hardmax", "L5_hardmax_rank"), ("L5", "zero-score", "L5_zero_score_rank"),
                           ("L1", "lora", "L1_lora_rank")):
        rep[key] = body[row][part]["reported"]["rank"] if body.get(row) else None
    return rep


def _timed_out(res: Result, info: dict, failed: list, timeout) -> None:
    """Status "timeout" (the stage named) when a row failed because its prover ran out of time."""
    import re
    for k in failed:
        prompt = (info.get(k) or {}).get("prompt") or {}
        if prompt.get("status") == "timeout":
            found = re.search(r"stage '([^']*)'", prompt.get("message", ""))
            res.status = Status.TIMEOUT
            res.extra["stage"] = f"row {k}, prompt check: {found.group(1) if found else 'core prover'}"
            res.extra.setdefault("log", []).append(f"row {k}: {prompt.get('message', 'timeout')}")
            res.message = (f"ran out of time (--timeout {timeout:g} s per core-prover call) in stage "
                           f"'{res.extra['stage']}'; {res.message}; nothing is claimed")
            return


def _verified(res: Result, d, m, N, h, s, r, seed, timeout) -> Result:
    body, info = verify_table(d, m, N, h, s, r, seed, timeout)
    res.extra["rows"] = info
    failed = _failed_rows(body, d, m, N, h, s, r)
    res.checks.update({f"{k}_verified": k not in failed for k in body})
    if failed:
        res.message = f"rows not verified on their instances: {', '.join(failed)} (see info.rows)"
        _timed_out(res, info, failed, timeout)
        return res
    res.status = Status.VERIFIED
    res.certificate = certificate("bounds-table", {"L4": body["L4"], "L5": body.get("L5"), "L1": body["L1"],
                                                   "L3": body.get("L3")})
    res.reported = _reported(res.extra["table"], body)
    res.message = _summary(res.extra["table"], info)
    return _self_checked(res)


def run_bounds(d, m, N, h, s, r, seed=0, verify=False, timeout=30.0, model_info: Optional[dict] = None) -> Result:
    """The table for these sizes; with ``verify`` every row is checked on seeded instances and the
    result carries a ``bounds-table`` certificate (nested results, one per instance)."""
    t0 = time.perf_counter()
    table = bounds_table(d, m, N, h, s, r)
    q = {"kind": "bounds", "d": table["d"], "m": table["m"], "N": table["N"], "heads": table["heads"],
         "head_size": table["head_size"], "mlp_width": table["mlp_width"]}
    res = Result(claim="L4L5", status=Status.UNKNOWN, question=q, inputs={},
                 method="parameter counting; exact rational LoRA construction; core prover; Gauss-Newton prompt "
                        "replayed with rigorous enclosures",
                 message="formulas only; run with --verify to check each row on instances",
                 extra={"table": table, "seed": seed, **({"model": model_info} if model_info else {})})
    res.seconds["table"] = time.perf_counter() - t0
    if verify:
        t1 = time.perf_counter()
        _verified(res, d, m, N, h, s, r, seed, timeout)
        res.seconds["verify"] = time.perf_counter() - t1
    return res


def _summary(table: dict, info: dict) -> str:
    lines = []
    l4 = info["L4"]
    fit = l4["fit"]
    lines.append(f"L4: m_p = m N - 1: {l4['dimension_count']['short_prompt_parameters']} parameters < "
                 f"{l4['dimension_count']['output_dimension']} outputs (measure zero); m_p = m N (head size "
                 f"{fit['model_head_size']}): {fit['status']} within {fmt(FIT_TOLERANCE)} (float Jacobian rank "
                 f"{fit['jacobian_rank_float64_at_P0']} of {fit['jacobian_rows']}, a measurement)")
    for row in ("L5", "L1", "L3"):
        r_ = info[row]
        if "not_applicable" in r_:
            lines.append(f"{row}: not applicable ({r_['not_applicable']})")
        elif row == "L5":
            lines.append("L5: " + "; ".join(f"{k}: {v['status']}, rank {v.get('rank')} <= {v.get('rank_bound')}"
                                            for k, v in r_.items()))
        else:
            lines.append(f"{row}: prompt (any length): {r_['prompt']['status']}; LoRA W_2: {r_['lora']['status']} "
                         f"with rank {r_['lora'].get('rank')}")
    lines.append(f"crossover: {table['crossover']['text']}")
    return "\n".join(lines)

