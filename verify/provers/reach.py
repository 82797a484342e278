"""``ptverify reach``: the certified range of what any admissible prompt can do to each
attention-block coordinate of one real layer, next to what a witness search reaches
(proofs/reach.md).

The bounds are computed here in float64 and written outward-rounded with a generous margin; they
stand (status ``verified``, kind ``reach-support``) only once the trusted checker
(``verify/checker/reach.py``) has recomputed every one of them with exact rationals and rigorous
enclosures and found each reported range at least as wide as its own.  The witness search
(projected gradient ascent over one or a few prompt rows, float64, torch) gives inner points: its
numbers are measurements, written under the result's ``info`` and never read by the checker.
"""
from __future__ import annotations

import math
import time
from fractions import Fraction
from typing import Optional

import numpy as np

from constructions.model import Dataset, InputError, Model
from verify import progress as _progress
from verify.provers.real.forward import pre_norm_sum
from verify.result import Result, Status, certificate, solver_info

__all__ = ["CERT_KIND", "reach_question", "float_bounds", "site_u", "witness_reach", "run_reach",
           "format_table", "unsupported_reason"]

CERT_KIND = "reach-support"
#: relative margin added to every float bound before it is written (float64 errors are ~1e-13)
MARGIN = 1e-9


def reach_question(prompt_norm=None) -> dict:
    q = {"kind": "reach"}
    if prompt_norm is not None:
        q["prompt_norm"] = _fmt(Fraction(prompt_norm))
    return q


def _fmt(q: Fraction) -> str:
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


def unsupported_reason(model: Model, dataset: Dataset) -> Optional[tuple]:
    """(field, expected, found) when the command cannot run on these inputs (None when it can)."""
    if len(model.layers) != 1:
        return "--model", "a single-layer model", f"{len(model.layers)} layers"
    if model.layers[0].kind != "softmax":
        return "--model", "a softmax layer", "a hardmax layer"
    if dataset.at != "attention":
        return "--dataset", "targets at the attention block (\"at\": \"attention\")", f"\"at\": {dataset.at!r}"
    if not any(y is not None for ex in dataset.examples for y in ex.output):
        return "--dataset", "at least one constrained output", "every target null"
    return None


def _members(dataset: Dataset) -> list:
    return [(i, t) for i, ex in enumerate(dataset.examples) for t, y in enumerate(ex.output) if y is not None]


# --------------------------------------------------------------------------- float bounds

def _heads(fl, d: int, R: Optional[float]):
    """Per head: G = W_o W_v (d, d), c (d), n (d): ||P g_k||, and rho (inf when unbounded)."""
    pre = fl.norm == "pre"
    out = []
    if pre:
        gamma, beta, eps = fl.ln1
        rho = math.sqrt(d) if R is None else math.sqrt(R * R * d / (R * R + d * eps))
    else:
        rho = math.inf if R is None else float(R)
    for h in fl.heads:
        G = h["W_o"] @ h["W_v"]
        bv = h["b_v"] + (h["W_v"] @ beta if pre else 0.0)
        c = h["W_o"] @ bv
        if pre:
            Pg = G * gamma[None, :]
            Pg = Pg - Pg.mean(axis=1, keepdims=True)
            n = np.linalg.norm(Pg, axis=1)
        else:
            n = np.linalg.norm(G, axis=1)
            if R is None:
                n = _exact_zero_rows(h, n)
        out.append((G, c, n))
    return out, rho


def _exact_zero_rows(h, n: np.ndarray) -> np.ndarray:
    """Rows of W_o W_v that are exactly zero (the checker's test) get n = 0; others n > 0."""
    n = n.copy()
    scale = np.linalg.norm(h["W_o"], axis=1) * np.linalg.norm(h["W_v"]) + 1e-300
    for k in np.nonzero(n <= 1e-10 * scale)[0]:
        o = [Fraction(float(v)) for v in h["W_o"][k]]
        zero = all(sum((a * Fraction(float(w)) for a, w in zip(o, col)), Fraction(0)) == 0
                   for col in h["W_v"].T)
        n[k] = 0.0 if zero else max(n[k], 1e-300)
    return n


def _no_prompt(fl, X: np.ndarray, a: int, causal: bool) -> list:
    """Per head: (W_o a_j (d), logZ, q-projection w (d), s0): the no-prompt head output at row a,
    the log of its softmax normaliser, and a prompt row's score as w . r(p) + s0."""
    R_ = fl.reads(X)
    keys = slice(0, a + 1) if causal else slice(0, X.shape[0])
    out = []
    for h in fl.heads:
        q = fl.scale * (h["W_q"] @ R_[a] + h["b_q"])
        K = R_[keys] @ h["W_k"].T + h["b_k"]
        V = R_[keys] @ h["W_v"].T + h["b_v"]
        sc = K @ q
        mx = sc.max()
        w = np.exp(sc - mx)
        Z = w.sum()
        out.append((h["W_o"] @ (w @ V / Z), mx + math.log(Z), h["W_k"].T @ q, float(q @ h["b_k"])))
    return out


def float_bounds(fl, d: int, X: np.ndarray, a: int, causal: bool, heads, rho: float) -> dict:
    """Float64 bounds of u at row a (lo, hi with infinities) and the margin per coordinate."""
    npz = _no_prompt(fl, X, a, causal)
    base = X[a] + fl.b_o
    hi, lo = base.copy(), base.copy()
    scale = 1.0 + np.abs(base)
    for (A, _, _, _), (G, c, n) in zip(npz, heads):
        rad = np.where(n == 0, 0.0, math.inf) if math.isinf(rho) else rho * n
        hi = hi + np.maximum(A, c + rad)
        lo = lo + np.minimum(A, c - rad)
        scale = scale + np.abs(A) + np.abs(c) + np.where(np.isinf(rad), 0.0, rad)
    return {"lo": lo, "hi": hi, "margin": MARGIN * scale, "no_prompt": npz}


def h_bounds(fl, d: int, lo: np.ndarray, hi: np.ndarray) -> tuple:
    """Post-LN: float bounds of h = LN1(u) over the box, already widened (see the checker)."""
    gamma, beta, eps = fl.ln1
    root = math.sqrt(d - 1)
    univ = np.abs(gamma) * root
    tiny = 1e-12 * (np.abs(beta) + univ + 1e-300)
    h_lo, h_hi = beta - univ - tiny, beta + univ + tiny
    if np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)):
        mean_lo, mean_hi = lo.mean(), hi.mean()
        c_lo, c_hi = lo - mean_hi, hi - mean_lo
        straddle = (c_lo < 0) & (c_hi > 0)
        sq_lo = np.where(straddle, 0.0, np.minimum(c_lo ** 2, c_hi ** 2))
        sq_hi = np.maximum(c_lo ** 2, c_hi ** 2)
        var_lo, var_hi = sq_lo.mean(), sq_hi.mean()
        big = max(np.abs(lo).max(), np.abs(hi).max())
        if var_lo + eps >= 1e-6 * (1.0 + big * big):
            inv_lo, inv_hi = 1 / math.sqrt(var_hi + eps), 1 / math.sqrt(var_lo + eps)
            cands = np.stack([c_lo * inv_lo, c_lo * inv_hi, c_hi * inv_lo, c_hi * inv_hi])
            t_lo, t_hi = cands.min(axis=0), cands.max(axis=0)
            e_lo = np.minimum(gamma * t_lo, gamma * t_hi) + beta
            e_hi = np.maximum(gamma * t_lo, gamma * t_hi) + beta
            pad = 1e-7 * (np.abs(gamma) * np.maximum(np.abs(c_lo), np.abs(c_hi)) * inv_hi + np.abs(beta) + 1e-300)
            h_lo = np.maximum(h_lo, e_lo - pad)
            h_hi = np.minimum(h_hi, e_hi + pad)
    return h_lo, h_hi


def _word(v: float) -> str:
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(float(v))


# --------------------------------------------------------------------------- float forward (u)

def site_u(fl, X: np.ndarray, P: Optional[np.ndarray], causal: bool) -> np.ndarray:
    """u = x + b_o + sum_j W_o^j head_j at every input row (the pre-norm sum post-LN, the
    residual otherwise), float64, with the prompt P prepended."""
    return pre_norm_sum(fl, X, P, causal)


# --------------------------------------------------------------------------- witness search

def witness_reach(fl, d: int, X: np.ndarray, a: int, causal: bool, heads, npz: list, R: Optional[float],
                  steps: int, rows: int = 1, seed: int = 0, deadline: float = math.inf) -> dict:
    """Projected gradient ascent (Adam) of +-u_k over ``rows`` prompt rows, for every coordinate k
    and both signs at once, from a directed and a random start; the best prompts are then
    re-evaluated with :func:`site_u`.  Returns float arrays ``max``, ``min`` (measurements)."""
    import torch
    rng = np.random.default_rng(seed)
    H = len(fl.heads)
    pre = fl.norm == "pre"
    norms = np.linalg.norm(X, axis=1)
    r0 = float(R) if R is not None else float(np.median(norms)) or 1.0
    G = np.stack([g for g, _, _ in heads])                       # (H, d, d)
    C = np.stack([c for _, c, _ in heads])                       # (H, d)
    A = np.stack([t[0] for t in npz])                            # (H, d)
    logZ = np.array([t[1] for t in npz])
    Wsc = np.stack([t[2] for t in npz], axis=1)                  # (d, H)
    s0 = np.array([t[3] for t in npz])
    base = X[a] + fl.b_o
    ks = np.tile(np.arange(d), 4)                                # (start, sign) blocks of d
    sig = np.concatenate([np.ones(d), -np.ones(d), np.ones(d), -np.ones(d)])
    Bn = ks.size
    direc = G.sum(axis=0)                                        # (d, d): row k is sum_j G_j[k]
    if pre:
        direc = direc * fl.ln1[0][None, :]
        direc = direc - direc.mean(axis=1, keepdims=True)
    P0 = rng.normal(size=(Bn, rows, d))
    for b in range(2 * d):                                       # directed starts
        v = sig[b] * direc[ks[b]]
        nv = np.linalg.norm(v)
        if nv > 0:
            P0[b] = v / nv + 0.05 * P0[b] / math.sqrt(d)
    P0 *= r0 / np.maximum(np.linalg.norm(P0, axis=2, keepdims=True), 1e-300)
    t = torch.float32                 # the search only: its best prompts are re-evaluated in float64
    Gk = torch.tensor(np.transpose(G[:, ks, :], (1, 0, 2)), dtype=t)      # (B, H, d)
    Ck = torch.tensor(C[:, ks].T, dtype=t)                                # (B, H)
    Ak = torch.tensor(A[:, ks].T, dtype=t)
    baseK = torch.tensor(base[ks], dtype=t)
    sgn = torch.tensor(sig, dtype=t)
    Wt, s0t = torch.tensor(Wsc, dtype=t), torch.tensor(s0, dtype=t)
    lz = torch.tensor(logZ, dtype=t).expand(Bn, 1, H)
    if pre:
        gam, bet, eps = (torch.tensor(fl.ln1[0], dtype=t), torch.tensor(fl.ln1[1], dtype=t), fl.ln1[2])

    def objective(P):
        if pre:
            mu = P.mean(-1, keepdim=True)
            var = ((P - mu) ** 2).mean(-1, keepdim=True)
            r = gam * (P - mu) / torch.sqrt(var + eps) + bet
        else:
            r = P
        S = r @ Wt + s0t                                              # (B, m, H)
        V = torch.einsum("bmd,bhd->bmh", r, Gk) + Ck[:, None, :]
        w = torch.softmax(torch.cat([lz, S], dim=1), dim=1)
        vals = torch.cat([Ak[:, None, :], V], dim=1)
        return sgn * (baseK + (w * vals).sum(1).sum(-1))

    def project(P):
        if R is not None:
            with torch.no_grad():
                nr = P.norm(dim=-1, keepdim=True)
                P.mul_(torch.clamp(R / nr.clamp_min(1e-300), max=1.0))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # one thread: on a shared machine more only contend
    try:
        P = torch.tensor(P0, dtype=t, requires_grad=True)
        project(P)
        opt = torch.optim.Adam([P], lr=0.05 * r0)
        best = torch.full((Bn,), -math.inf, dtype=t)
        bestP = P.detach().clone()
        done = 0
        for step in range(steps + 1):
            last = step == steps or time.perf_counter() > deadline
            opt.zero_grad()
            f = objective(P)                      # at the current (projected) point
            with torch.no_grad():
                better = f > best
                best = torch.where(better, f.detach(), best)
                bestP[better] = P.detach()[better]
            if last:
                break
            (-f.sum()).backward()
            opt.step()
            project(P)
            done += 1
    finally:
        torch.set_num_threads(threads)
    best = best.detach().numpy()
    bP = bestP.numpy().astype(np.float64)
    wmax, wmin = np.full(d, -np.inf), np.full(d, np.inf)
    for k in range(d):
        for s_, blocks in ((1, (k, 2 * d + k)), (-1, (d + k, 3 * d + k))):
            b = max(blocks, key=lambda i: best[i])
            u = site_u(fl, X, bP[b], causal)[a, k]
            if s_ > 0:
                wmax[k] = u
            else:
                wmin[k] = u
    return {"max": wmax, "min": wmin, "steps": done, "rows": rows, "start_norm": r0}


# --------------------------------------------------------------------------- the command

def run_reach(model: Model, dataset: Dataset, prompt_norm=None, witness_steps: int = 300, witness_rows: int = 1,
              claim: str = "reach", seed: int = 0, progress=None, vet: bool = True,
              witness_seconds: float = 30.0) -> Result:
    """Certified reach bounds (vetted by the trusted checker) and the witness search's reach."""
    from constructions.arrays import blas_threads
    from verify.provers.limitation.results import _inputs
    from verify.provers.real.forward import FloatLayer
    rep = _progress.ensure(progress)
    bad = unsupported_reason(model, dataset)
    if bad is not None:
        raise InputError(*bad)
    t0 = time.perf_counter()
    inputs, base = _inputs(model, dataset, None)
    res = Result(claim=claim, status=Status.UNKNOWN, question=reach_question(prompt_norm), inputs=inputs,
                 solver=solver_info())
    res._base_dir = base
    res.seconds["build"] = time.perf_counter() - t0
    d = model.d
    R = None if prompt_norm is None else float(Fraction(prompt_norm))
    fl = FloatLayer(model.layers[0], d)
    post = fl.norm == "post"
    t1 = time.perf_counter()
    rep.stage("support functions")
    with blas_threads(1):
        heads, rho = _heads(fl, d, R)
        ranges, members = [], []
        mem = _members(dataset)
        for n_, (i, a) in enumerate(mem):
            rep.step(n_ + 1, len(mem), "constrained output")
            X = np.asarray(dataset.examples[i].input, dtype=np.float64)
            fb = float_bounds(fl, d, X, a, model.causal, heads, rho)
            lo, hi = fb["lo"] - fb["margin"], fb["hi"] + fb["margin"]
            ent = {"example": i, "position": a, "lo": [_word(v) for v in lo], "hi": [_word(v) for v in hi]}
            info = {"example": i, "position": a, "lo": lo, "hi": hi, "npz": fb["no_prompt"], "X": X,
                    "target": np.asarray(dataset.examples[i].output[a], dtype=np.float64),
                    "no_prompt_u": site_u(fl, X, None, model.causal)[a]}
            if post:
                h_lo, h_hi = h_bounds(fl, d, lo, hi)
                ent["h_lo"], ent["h_hi"] = [_word(v) for v in h_lo], [_word(v) for v in h_hi]
                info["h_lo"], info["h_hi"] = h_lo, h_hi
            ranges.append(ent)
            members.append(info)
        res.seconds["bounds"] = time.perf_counter() - t1
        if witness_steps > 0:
            t2 = time.perf_counter()
            rep.stage("witness search")
            for n_, m in enumerate(members):
                rep.step(n_ + 1, len(members), "constrained output")
                m["witness"] = witness_reach(fl, d, m["X"], m["position"], model.causal, heads, m["npz"], R,
                                             witness_steps, witness_rows, seed + n_,
                                             deadline=time.perf_counter() + witness_seconds)
            res.seconds["witness"] = time.perf_counter() - t2
    res.certificate = certificate(CERT_KIND, {"ranges": ranges})
    res.method = ("reach bounds: head-wise support functions of the prompt's value set (proofs/reach.md); "
                  "an outer bound, heads decoupled")
    res.extra["reach"] = _summary(d, members, R, post)
    if vet:
        rep.stage("trusted check")
        _vet(res)
    return res


def _vet(res: Result) -> None:
    from verify.checker import check_result
    t = time.perf_counter()
    res.status = Status.VERIFIED
    ok, msg = check_result(res.to_json(), getattr(res, "_base_dir", "."))
    res.seconds["check"] = time.perf_counter() - t
    res.checks["bounds_checked"] = ok
    if ok:
        res.message = f"bounds accepted by the trusted checker: {msg}"
    else:
        res.status, res.certificate = Status.UNKNOWN, None
        res.message = f"the trusted checker rejected the bounds: {msg}; nothing is claimed"


def _f(v) -> Optional[float]:
    v = float(v)
    return None if not math.isfinite(v) else v


def _summary(d: int, members: list, R, post: bool) -> dict:
    """The ``info.reach`` block: per member, per coordinate floats (certified bounds as written,
    target, the witness search's measured reach), and the summary numbers."""
    out = {"site": "h = LN1(u) (post-LN); u = x + b_o + sum_j W_o^j head_j is LN1's input" if post else
           "u = x + Att, the residual (the attention block's output)",
           "prompt_set": "any prompt rows" if R is None else f"prompt rows of 2-norm at most {R:.9g}",
           "bounded": "outer bound: heads decoupled; the witness search gives inner points (measured, not certified)",
           "members": []}
    for m in members:
        lo, hi, tgt = m["lo"], m["hi"], m["target"]
        finite = np.isfinite(lo) & np.isfinite(hi)
        slo, shi = (m["h_lo"], m["h_hi"]) if post else (lo, hi)
        inside = (slo <= tgt) & (tgt <= shi)
        ent = {"example": m["example"], "position": m["position"], "d": d,
               "finite": int(finite.sum()), "targets_inside": int(inside.sum()),
               "median_width": _f(np.median((hi - lo)[finite])) if finite.any() else None,
               "u_lo": [_f(v) for v in lo], "u_hi": [_f(v) for v in hi], "target": [float(v) for v in tgt],
               "no_prompt_u": [float(v) for v in m["no_prompt_u"]]}
        if post:
            ent["h_lo"], ent["h_hi"] = [float(v) for v in slo], [float(v) for v in shi]
            ent["median_h_width"] = float(np.median(shi - slo))
        w = m.get("witness")
        if w is not None:
            gap = np.maximum(hi - w["max"], w["min"] - lo)
            fin = np.isfinite(gap)
            ent["witness"] = {"measured": "float64 witness search (projected gradient ascent, Adam); a measurement, "
                                          "not a certificate",
                              "steps": w["steps"], "rows": w["rows"], "start_norm": w["start_norm"],
                              "u_max": [float(v) for v in w["max"]], "u_min": [float(v) for v in w["min"]],
                              "outside_certified": int(np.sum((w["max"] > hi) | (w["min"] < lo)))}
            if fin.any():
                g = gap[fin]
                idx = np.nonzero(fin)[0]
                ent["gap"] = {"median": float(np.median(g)), "widest": float(g.max()),
                              "widest_coordinate": int(idx[np.argmax(g)]), "tightest": float(g.min()),
                              "tightest_coordinate": int(idx[np.argmin(g)])}
            else:
                ent["gap"] = None
        out["members"].append(ent)
    return out


def format_table(data: dict) -> str:
    """A readable summary table per constrained output (coordinates summarized)."""
    info = (data.get("info") or {}).get("reach") or {}
    lines = [f"reach ({info.get('prompt_set', '?')}); site: {info.get('site', '?')}",
             f"{'example':>7} {'pos':>3} {'finite u':>9} {'targets in':>10} {'median width':>13} "
             f"{'gap median':>11} {'widest (k)':>17} {'tightest (k)':>17}"]
    for m in info.get("members", []):
        d = m["d"]
        mw = "-" if m["median_width"] is None else f"{m['median_width']:.4g}"
        g = m.get("gap")
        if g:
            gm, gw, gt = f"{g['median']:.4g}", f"{g['widest']:.4g} ({g['widest_coordinate']})", \
                f"{g['tightest']:.4g} ({g['tightest_coordinate']})"
        else:
            gm = gw = gt = "-"
        lines.append(f"{m['example']:>7} {m['position']:>3} {m['finite']:>4}/{d:<4} {m['targets_inside']:>5}/{d:<4} "
                     f"{mw:>13} {gm:>11} {gw:>17} {gt:>17}")
    lines.append("bounds: certified (trusted checker) when the status is verified; gaps: certified bound minus the "
                 "witness search's measured reach (float64, not certified)")
    return "\n".join(lines)
