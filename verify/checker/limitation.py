"""The independent checker for single-layer limitation certificates and prompt witnesses.

This module is deliberately self-contained: it imports no solver, no torch and nothing else from
ptverify.  Every quantity is recomputed from the model and the dataset in exact rationals
(``fractions``; numpy only reads ``.npz`` files and does integer arithmetic modulo a prime), and
every exponential is a rigorous rational enclosure.  What it checks (proofs/soundness_R.md):

1. the MLP residual branch has Lipschitz constant <= k < 1 (claimed norm bounds re-proved);
2. each member's token at its position equals the query x, and rho_i bounds how far the true
   attention input can be from the claimed z_i: rho_i = (||y_i - MLP(z_i)|| + sqrt(d) EPS) / (1 - k);
3. form ``subspace``: phi^T W_o^j W_v^j = 0 for every head and |phi^T (z_i - x)| > ||phi|| rho_i;
4. form ``annihilator``: Phi W_o^j' W_v^j' = 0 for the other heads; with V = Phi W_o^j W_v^j and
   tau_i = Phi (z_i - x), the multipliers lambda_i satisfy sum_i lambda_i^T V = 0 and the combined
   equation sum_u g_u e_u + g_alpha alpha = (slack) has no solution with alpha >= 0 and each e_u in
   its enclosure;
5. form ``direct-sum``: W = [W_o^1 ... W_o^h] has full column rank (a nonzero minor mod p),
   W gamma_i = z_i - x exactly, rho_i = 0, and the same Farkas test with V = W_v^j,
   tau_i = gamma_i^j.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from fractions import Fraction

import numpy as np

__all__ = ["check_limitation_certificate", "replay_witness", "REPLAYERS", "exp_bounds"]


# --------------------------------------------------------------------------- numbers

def _q(v) -> Fraction:
    if isinstance(v, bool) or v is None:
        raise ValueError(f"not a number: {v!r}")
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"not finite: {v!r}")
    return Fraction(v)


def _sqrt_up(q: Fraction) -> Fraction:
    if q <= 0:
        return Fraction(0)
    s = 1 << 64
    r = math.isqrt(q.numerator * s * s // q.denominator)
    while Fraction(r * r, s * s) < q:
        r += 1
    return Fraction(r, s)


def exp_bounds(s: Fraction) -> tuple[Fraction, Fraction]:
    """Rigorous lo <= exp(s) <= hi.  exp(s) = exp(t)^(2^k) with t = s / 2^k in [-1/2, 1/2];
    exp(t) = sum_{m <= n} t^m / m! + R with |R| <= 2 |t|^(n+1) / n! (geometric tail, |t| <= 1/2);
    after each squaring lo is rounded down and hi up to multiples of 2^-200."""
    grid = 1 << 200
    k, t = 0, Fraction(s)
    while abs(t) > Fraction(1, 2):
        t, k = t / 2, k + 1
    term, total, n = Fraction(1), Fraction(1), 0
    while True:
        n += 1
        term = term * t / n
        total += term
        if 2 * abs(term * t) < Fraction(1, 1 << 230):
            break
    rem = 2 * abs(term * t)
    lo = max(Fraction(math.floor((total - rem) * grid), grid), Fraction(0))
    hi = Fraction(math.ceil((total + rem) * grid), grid)
    for _ in range(k):
        lo, hi = Fraction(math.floor(lo * lo * grid), grid), Fraction(math.ceil(hi * hi * grid), grid)
    return lo, hi


# --------------------------------------------------------------------------- model access

class _Mat:
    """An exact matrix as integers over a common denominator."""

    def __init__(self, N: np.ndarray, D: int):
        self.N, self.D = N, D
        self.shape = N.shape

    @staticmethod
    def from_rows(rows) -> "_Mat":
        qs = [[_q(v) for v in row] for row in rows]
        D = 1
        for row in qs:
            for v in row:
                D = D * v.denominator // math.gcd(D, v.denominator)
        N = np.empty((len(qs), len(qs[0]) if qs else 0), dtype=object)
        for i, row in enumerate(qs):
            N[i, :] = [int(v * D) for v in row]
        return _Mat(N, D)

    @staticmethod
    def from_float(a: np.ndarray) -> "_Mat":
        a = np.asarray(a, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError("non-finite weight")
        for e in range(0, 64):  # dyadic weights: a * 2^e integral and small -> exact int64
            b = a * 2.0 ** e
            if np.max(np.abs(b), initial=0) >= 2.0 ** 53:
                break
            if np.all(b == np.floor(b)):
                return _Mat(b.astype(np.int64).astype(object), 1 << e)
        m, e = np.frexp(a)
        mant = (m * 2.0 ** 53).astype(np.int64)
        e = e.astype(np.int64) - 53
        emin = int(e[mant != 0].min()) if np.any(mant != 0) else 0
        N = np.empty(a.shape, dtype=object)
        N.reshape(-1)[:] = [int(x) << int(s) for x, s in zip(mant.reshape(-1).tolist(), np.where(mant != 0, e - emin, 0).reshape(-1).tolist())]
        return _Mat(N * (1 << emin), 1) if emin >= 0 else _Mat(N, 1 << -emin)

    def col(self, j) -> list[Fraction]:
        return [Fraction(int(v), self.D) for v in self.N[:, j]]

    def rows(self) -> list[list[Fraction]]:
        return [[Fraction(int(v), self.D) for v in row] for row in self.N]

    def mv(self, x: list[Fraction]) -> list[Fraction]:
        L = 1
        for v in x:
            L = L * v.denominator // math.gcd(L, v.denominator)
        xi = np.array([int(v * L) for v in x] + [0], dtype=object)[:-1]
        r = self.N.dot(xi)
        return [Fraction(int(v), self.D * L) for v in r]

    def vm(self, y: list[Fraction]) -> list[Fraction]:
        """y^T A."""
        L = 1
        for v in y:
            L = L * v.denominator // math.gcd(L, v.denominator)
        yi = np.array([int(v * L) for v in y] + [0], dtype=object)[:-1]
        r = yi.dot(self.N)
        return [Fraction(int(v), self.D * L) for v in r]


def _load_model(obj_or_path, base_dir):
    """Returns dict(d, causal, layers=[{kind, heads:[{W_q..}], W_1, b_1, W_2, b_2}]) of _Mat."""
    if isinstance(obj_or_path, str):
        z = np.load(obj_or_path if os.path.isabs(obj_or_path) else os.path.join(base_dir, obj_or_path), allow_pickle=False)
        hdr = json.loads(bytes(z["__header__"]).decode())
        layers = []
        for li, (kind, nh) in enumerate(zip(hdr["kinds"], hdr["heads"])):
            g = lambda k: _Mat.from_float(np.atleast_2d(z[k]))  # noqa: E731
            heads = [{n: g(f"layers.{li}.attention.heads.{j}.{n}") for n in ("W_q", "W_k", "W_v", "W_o")} for j in range(nh)]
            layers.append({"kind": kind, "heads": heads, "W_1": g(f"layers.{li}.mlp.W_1"),
                           "b_1": [Fraction(float(v)) for v in z[f"layers.{li}.mlp.b_1"]],
                           "W_2": g(f"layers.{li}.mlp.W_2"), "b_2": [Fraction(float(v)) for v in z[f"layers.{li}.mlp.b_2"]]})
        return {"d": hdr["d"], "causal": bool(hdr.get("causal", False)), "layers": layers}
    obj = obj_or_path
    layers = []
    for lo in obj["layers"]:
        heads = [{n: _Mat.from_rows(h[n]) for n in ("W_q", "W_k", "W_v", "W_o")} for h in lo["attention"]["heads"]]
        m = lo["mlp"]
        layers.append({"kind": lo["attention"].get("kind", "softmax"), "heads": heads,
                       "W_1": _Mat.from_rows(m["W_1"]), "b_1": [_q(v) for v in m["b_1"]],
                       "W_2": _Mat.from_rows(m["W_2"]), "b_2": [_q(v) for v in m["b_2"]]})
    return {"d": obj["d"], "causal": bool(obj.get("causal", False)), "layers": layers}


def _mlp(L, z):
    pre = L["W_1"].mv(z)
    hid = [max(p + b, Fraction(0)) for p, b in zip(pre, L["b_1"])]
    post = L["W_2"].mv(hid)
    return [a + b + c for a, b, c in zip(z, post, L["b_2"])]


def _norm_ok(W: _Mat, b: Fraction) -> bool:
    """Is b >= ||W||_2?  Accepts sqrt(||W||_1 ||W||_inf), the Frobenius norm, or b^2 I - W^T W
    positive definite by exact elimination (small matrices)."""
    A = np.abs(W.N)
    n1 = max(int(v) for v in A.sum(axis=0))
    ninf = max(int(v) for v in A.sum(axis=1))
    bb = b * b * W.D * W.D
    if n1 * ninf <= bb or sum(int(v) * int(v) for v in W.N.reshape(-1)) <= bb:
        return True
    if min(W.shape) > 64:
        return False
    R = W.rows()
    if W.shape[1] > W.shape[0]:
        R = [list(c) for c in zip(*R)]
    n = len(R[0])
    G = [[b * b * (i == j) - sum(R[k][i] * R[k][j] for k in range(len(R))) for j in range(n)] for i in range(n)]
    for c in range(n):
        if G[c][c] <= 0:
            return False
        for r in range(c + 1, n):
            f = G[r][c] / G[c][c]
            for j in range(c + 1, n):
                G[r][j] -= f * G[c][j]
    return True


def _det_mod_p_nonzero(rows_int: list[list[int]], p: int) -> bool:
    A = np.array([[v % p for v in row] for row in rows_int], dtype=np.int64)
    n = A.shape[0]
    if A.shape[1] != n:
        return False
    for c in range(n):
        nz = np.nonzero(A[c:, c])[0]
        if nz.size == 0:
            return False
        r = c + int(nz[0])
        A[[c, r]] = A[[r, c]]
        inv = pow(int(A[c, c]), p - 2, p)
        f = (A[c + 1:, c] * inv) % p
        A[c + 1:, c:] = (A[c + 1:, c:] - (f[:, None] * A[c, c:][None, :]) % p) % p
    return True


def _is_prime(p: int) -> bool:
    if p < 2:
        return False
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if p % a == 0:
            return p == a
    d, s = p - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        x = pow(a, d, p)
        if x in (1, p - 1):
            continue
        for _ in range(s - 1):
            x = x * x % p
            if x == p - 1:
                break
        else:
            return False
    return True


def _dot(a, b):
    return sum((x * y for x, y in zip(a, b)), Fraction(0))


# --------------------------------------------------------------------------- the check

def check_limitation_certificate(model_obj, dataset_obj, cert: dict, base_dir: str = ".",
                                 res_prompt_length=None) -> tuple[bool, str]:
    """Re-verify a ``ptverify-limitation-farkas/1`` certificate.  Returns (ok, message)."""
    M = _load_model(model_obj, base_dir)
    if len(M["layers"]) != 1:
        return False, "limitation certificates are for single-layer models"
    L = M["layers"][0]
    if L["kind"] != "softmax" and cert["form"] != "subspace":
        # hardmax: Lemma D's form differs (see proofs/soundness_R.md); only L3 applies unchanged
        return False, "head certificates are for softmax layers"
    d = M["d"]
    eps = _q(cert["tolerance"])
    if eps < 0:
        return False, "negative tolerance"
    # 1. injective MLP
    b1, b2 = _q(cert["mlp_bound"]["b1"]), _q(cert["mlp_bound"]["b2"])
    if not (_norm_ok(L["W_1"], b1) and _norm_ok(L["W_2"], b2)):
        return False, "claimed bounds on ||W_1||, ||W_2|| are not proved"
    k = b1 * b2
    if k >= 1:
        return False, f"MLP not certified injective (k = {float(k):.4g} >= 1)"
    # 2. members
    x = [_q(v) for v in cert["query"]]
    if len(x) != d:
        return False, "query has the wrong size"
    exs = dataset_obj["examples"]
    members = []
    for mb in cert["members"]:
        ex = exs[int(mb["example"])]
        t = int(mb["position"])
        toks = [[_q(v) for v in tok] for tok in ex["input"]]
        if toks[t] != x:
            return False, f"example {mb['example']} position {t} is not the query token"
        if ex["output"][t] is None:
            return False, f"example {mb['example']} position {t} has no target"
        y = [_q(v) for v in ex["output"][t]]
        z = [_q(v) for v in mb["z"]]
        r = [a - b for a, b in zip(y, _mlp(L, z))]
        if mb.get("exact_preimage", False) and any(r):
            return False, f"example {mb['example']}: MLP(z) != y although the certificate says z is the exact preimage"
        rho = (_sqrt_up(_dot(r, r)) + _sqrt_up(Fraction(d)) * eps) / (1 - k)
        keys = toks[: t + 1] if M["causal"] else toks
        members.append({"z": z, "rho": rho, "keys": keys, "c": [a - b for a, b in zip(z, x)]})
    if not members:
        return False, "no members"
    heads = L["heads"]
    form = cert["form"]

    def phi_kills(phi, j):
        return not any(heads[j]["W_v"].vm(heads[j]["W_o"].vm(phi)))

    if form == "subspace":
        phi = [_q(v) for v in cert["phi"]]
        if not any(phi) or not all(phi_kills(phi, j) for j in range(len(heads))):
            return False, "phi does not annihilate every head's W_o W_v"
        nphi = _sqrt_up(_dot(phi, phi))
        for m in members:
            if abs(_dot(phi, m["c"])) > nphi * m["rho"]:
                return True, "target's attention part leaves the attention subspace (L3)"
        return False, "phi^T (z - x) is not separated from 0"
    j = int(cert["head"])
    lam = [[_q(v) for v in row] for row in cert.get("multipliers", [])]
    if form == "annihilator":
        if "Phi" not in cert and len(heads) == 1:  # a single head: the identity projection
            Phi = [[Fraction(int(r == c)) for c in range(d)] for r in range(d)]
        else:
            Phi = [[_q(v) for v in row] for row in cert["Phi"]]
        if any(len(row) != d for row in Phi):
            return False, "Phi has the wrong shape"
        for o in range(len(heads)):
            if o != j and not all(phi_kills(phi, o) for phi in Phi):
                return False, f"Phi does not annihilate head {o}"
        # V = Phi W_o^j W_v^j (rows), tau_i = Phi c_i, kappa_i >= ||Phi^T lambda_i||
        V = _Mat.from_rows([heads[j]["W_v"].vm(heads[j]["W_o"].vm(phi)) for phi in Phi])
        taus = [[_dot(phi, m["c"]) for phi in Phi] for m in members]
        if "alpha_pieces" in cert and any(m["rho"] != 0 for m in members):
            return False, "alpha pieces need exact preimages and tolerance 0"
    elif form == "direct-sum":
        if any(m["rho"] != 0 for m in members):
            return False, "direct-sum certificates need exact preimages and tolerance 0"
        Wo = [h["W_o"] for h in heads]
        sizes = [w.shape[1] for w in Wo]
        gam = [[_q(v) for v in row] for row in cert["gammas"]]
        for g, m in zip(gam, members):
            if len(g) != sum(sizes):
                return False, "gamma has the wrong size"
            acc = [Fraction(0)] * d
            off = 0
            for w, s in zip(Wo, sizes):
                acc = [a + b for a, b in zip(acc, w.mv(g[off:off + s]))]
                off += s
            if acc != m["c"]:
                return False, "W_o gamma != z - x"
        p, rows = int(cert["rank"]["prime"]), [int(r) for r in cert["rank"]["rows"]]
        if not _is_prime(p) or len(set(rows)) != sum(sizes) or p >= 1 << 31:
            return False, "bad rank certificate"
        D = math.lcm(*[w.D for w in Wo])  # one denominator for all blocks: rank is unchanged
        full = [sum(([int(v) * (D // w.D) for v in w.N[r]] for w in Wo), []) for r in rows]
        if not _det_mod_p_nonzero(full, p):
            return False, "stacked W_o is not certified to have full column rank"
        off = sum(sizes[:j])
        V = heads[j]["W_v"]
        taus = [g[off:off + sizes[j]] for g in gam]
    else:
        return False, f"unknown form {form!r}"
    # Farkas test: once for alpha >= 0, or once per piece of alpha's range (Proposition E)
    K = cert.get("prompt_length", "any")
    if res_prompt_length is not None and K != "any" and res_prompt_length != K:
        return False, "the certificate's prompt length differs from the result's"

    def slack(lam_):
        if form != "annihilator" or "alpha_pieces" in cert or len(lam_) != len(members):
            return [Fraction(0)] * len(members)
        out = []
        for lam_i, m in zip(lam_, members):
            v = [sum((lam_i[r] * Phi[r][c] for r in range(len(Phi))), Fraction(0)) for c in range(d)]
            out.append(_sqrt_up(_dot(v, v)) * m["rho"])
        return out
    pieces = [(Fraction(0), None, lam, None)]
    if "alpha_pieces" in cert:
        if len(heads) != 1 or any(heads[0]["W_k"].vm(heads[0]["W_q"].mv(x))):
            return False, "alpha pieces need one head with W_k^T W_q x = 0 (alpha = prompt length)"
        pieces = [(_q(pc["lo"]), None if pc["hi"] is None else _q(pc["hi"]),
                   [[_q(v) for v in row] for row in pc["multipliers"]], None) for pc in cert["alpha_pieces"]]
        # alpha = m_p is a positive integer: the pieces must cover 1, 2, 3, ... (or the stated K)
        if K != "any":
            if not any(lo <= int(K) and (hi is None or int(K) <= hi) for lo, hi, _, _ in pieces):
                return False, f"alpha pieces miss the prompt length {K}"
        else:
            nxt = 1
            for lo, hi, _, _ in sorted(pieces, key=lambda pc: pc[0]):
                if lo > nxt:
                    return False, f"alpha pieces miss the integer {nxt}"
                if hi is None:
                    nxt = None
                    break
                nxt = max(nxt, math.floor(hi) + 1)
            if nxt is not None:
                return False, "alpha pieces do not cover every prompt length"
    elif "entropy_pieces" in cert:
        # g^T pi = alpha log alpha - alpha H(w), 0 <= H <= log m_p (proofs/prop_E.md); on a piece
        # [a, b]: g^T pi <= alpha log b, and for length K: g^T pi >= alpha (log a - log K)
        gvec = heads[j]["W_k"].vm(heads[j]["W_q"].mv(x))
        lK = None
        if K != "any":
            lK = _q(cert["log_K_hi"])
            if exp_bounds(lK)[0] < int(K):
                return False, "log_K_hi is not an upper bound on log K"
        pieces = []
        for pc in cert["entropy_pieces"]:
            lo, hi = _q(pc["lo"]), None if pc["hi"] is None else _q(pc["hi"])
            mu_lo, mu_hi = _q(pc["mu_lo"]), _q(pc["mu_hi"])
            if mu_lo < 0 or mu_hi < 0 or (hi is not None and hi < lo):
                return False, "bad entropy piece"
            c_lo = c_hi = Fraction(0)
            if mu_lo:
                ll = _q(pc["log_lo"])
                if lK is None or lo <= 0 or exp_bounds(ll)[1] > lo:
                    return False, "log_lo is not a lower bound on log lo (or no prompt length)"
                c_lo = ll - lK
            if mu_hi:
                lh = _q(pc["log_hi"])
                if hi is None or exp_bounds(lh)[0] < hi:
                    return False, "log_hi is not an upper bound on log hi"
                c_hi = lh
            pieces.append((lo, hi, [[_q(v) for v in row] for row in pc["multipliers"]], (gvec, mu_lo, c_lo, mu_hi, c_hi)))
        reach = Fraction(0)
        for lo, hi, _, _ in sorted(pieces, key=lambda pc: pc[0]):
            if reach is None or lo > reach:
                return False, "entropy pieces do not cover alpha > 0"
            reach = None if hi is None else max(reach, hi)
        if reach is not None:
            return False, "entropy pieces do not cover alpha > 0"
    totals = []
    for a_lo, a_hi, lam_, ineq in pieces:
        ok, total = _farkas(V, taus, slack(lam_), members, lam_, heads[j], x, a_lo, a_hi, ineq)
        if not ok:
            return False, total
        totals.append(total)
    what = ("every alpha >= 0" if len(pieces) == 1 and pieces[0][3] is None and "alpha_pieces" not in cert else
            "every prompt length" if K == "any" else f"prompt length {K}")
    return True, (f"head {j}: Farkas combination > {float(min(totals)):.3g} > 0 for {what} and every "
                  f"exponential in its enclosure ({len(members)} examples share the query; k = {float(k):.4g})")


def _farkas(V, taus, ws, members, lam, head, x, a_lo, a_hi, ineq=None):
    """Is sum_i lambda_i^T [V(sum_t e_t X_i[t] + pi) - (Z_i + alpha) tau_i] - mu_lo (g^T pi - c_lo alpha)
    - mu_hi (c_hi alpha - g^T pi) positive, beyond the slack, for every pi, every e in the enclosures
    and alpha in [a_lo, a_hi]?  (At a feasible point it equals -mu . (inequalities) <= 0.)
    Returns (ok, margin|msg)."""
    q = V.shape[0]
    if len(lam) != len(members) or any(len(l_) != q for l_ in lam):
        return False, "one multiplier vector of size q per member is needed"
    gvec, mu_lo, c_lo, mu_hi, c_hi = ineq if ineq is not None else ([], 0, 0, 0, 0)
    pi_coef = V.vm([sum((l_[r] for l_ in lam), Fraction(0)) for r in range(q)])
    if gvec:
        pi_coef = [a - (mu_lo - mu_hi) * b for a, b in zip(pi_coef, gvec)]
    if any(pi_coef):
        return False, "the prompt term pi does not cancel"
    qx = head["W_q"].mv(x)
    g_alpha, slack_alpha, coef = Fraction(0), Fraction(0), {}
    for lam_i, tau, w, m in zip(lam, taus, ws, members):
        g_alpha -= _dot(lam_i, tau)
        slack_alpha += w
        for key in m["keys"]:
            s = _dot(head["W_k"].mv(key), qx)
            c = _dot(lam_i, [a - b for a, b in zip(V.mv(key), tau)])
            c0, w0 = coef.get(s, (Fraction(0), Fraction(0)))
            coef[s] = (c0 + c, w0 + w)
    ga = g_alpha - slack_alpha + mu_lo * c_lo - mu_hi * c_hi
    if ga < 0 and a_hi is None:
        return False, "the alpha coefficient has the wrong sign"
    total = ga * a_lo if ga >= 0 else ga * a_hi
    for s, (c, w) in coef.items():
        lo, hi = exp_bounds(s)
        h = c - w
        total += h * lo if h > 0 else h * hi
    if total <= 0:
        return False, "the combined equation is not separated from 0 on the exponential enclosures"
    return True, total


# --------------------------------------------------------------------------- witnesses

def _forward_float(M, X: np.ndarray, P: np.ndarray) -> np.ndarray:
    S = np.concatenate([P, X], axis=0) if len(P) else X
    n = S.shape[0]
    for L in M["layers"]:
        f = lambda m: np.array([[float(v) for v in row] for row in m.rows()])  # noqa: E731
        att = np.zeros_like(S)
        for h in L["heads"]:
            q, k, v = S @ f(h["W_q"]).T, S @ f(h["W_k"]).T, S @ f(h["W_v"]).T
            sc = q @ k.T
            if M["causal"]:
                sc = np.where(np.tril(np.ones((n, n), dtype=bool)), sc, -np.inf)
            if L["kind"] == "hardmax":
                w = (sc == sc.max(axis=1, keepdims=True)).astype(float)
            else:
                w = np.exp(sc - sc.max(axis=1, keepdims=True))
            w /= w.sum(axis=1, keepdims=True)
            att += (w @ v) @ f(h["W_o"]).T
        Z = S + att
        b1 = np.array([float(v) for v in L["b_1"]])
        b2 = np.array([float(v) for v in L["b_2"]])
        S = Z + np.maximum(Z @ f(L["W_1"]).T + b1, 0) @ f(L["W_2"]).T + b2
    return S[len(P):]


def _forward_exact(M, X: list, P: list):
    """Exact rational forward pass when every attention weight is rational (hardmax layers, or
    softmax heads whose scores at a query are all equal); None otherwise."""
    S = [list(t) for t in P] + [list(t) for t in X]
    n = len(S)
    for L in M["layers"]:
        new = []
        heads = [(h, [h["W_q"].mv(t) for t in S], [h["W_k"].mv(t) for t in S], [h["W_v"].mv(t) for t in S])
                 for h in L["heads"]]
        for a in range(n):
            z = list(S[a])
            keys = range(a + 1) if M["causal"] else range(n)
            for h, q, k, v in heads:
                sc = [_dot(k[b], q[a]) for b in keys]
                top = [b for b, s_ in zip(keys, sc) if s_ == max(sc)]
                if L["kind"] != "hardmax" and len(top) != len(sc):
                    return None
                mix = [sum((v[b][c] for b in top), Fraction(0)) / len(top) for c in range(len(v[0]))]
                z = [zi + oi for zi, oi in zip(z, h["W_o"].mv(mix))]
            new.append(_mlp(L, z))
        S = new
    return S[len(P):]


def replay_witness(model_obj, dataset_obj, witness: dict, base_dir: str = ".") -> tuple[bool, str, float]:
    """Replay a prompt: exactly when the model's attention weights are rational, otherwise in
    float64; the max-norm error over constrained outputs must be <= the stated tolerance."""
    M = _load_model(model_obj, base_dir)
    Pq = [[_q(v) for v in row] for row in witness["prompt"]]
    if any(len(row) != M["d"] for row in Pq):
        raise ValueError("prompt tokens have the wrong size")
    tol = _q(witness.get("tolerance", "0"))
    err, exact = Fraction(0), True
    for ex in dataset_obj["examples"]:
        Xq = [[_q(v) for v in tok] for tok in ex["input"]]
        out = _forward_exact(M, Xq, Pq) if exact else None
        if out is None:
            exact = False
            break
        for t, y in enumerate(ex["output"]):
            if y is not None:
                err = max([err] + [abs(a - _q(b)) for a, b in zip(out[t], y)])
    if not exact:
        P = np.array([[float(v) for v in row] for row in Pq], dtype=np.float64).reshape(-1, M["d"])
        errf = 0.0
        for ex in dataset_obj["examples"]:
            X = np.array([[float(_q(v)) for v in tok] for tok in ex["input"]])
            out = _forward_float(M, X, P)
            for t, y in enumerate(ex["output"]):
                if y is not None:
                    errf = max(errf, float(np.max(np.abs(out[t] - np.array([float(_q(v)) for v in y])))))
        ok = errf <= float(tol)
        return ok, (f"witness prompt of length {len(Pq)} replays in float64 with max error {errf:.3g} "
                    f"(tolerance {float(tol):g})"), errf
    ok = err <= tol
    return ok, (f"witness prompt of length {len(Pq)} replays exactly (rational arithmetic) with max error "
                f"{float(err):.3g} (tolerance {float(tol):g})"), float(err)


# --------------------------------------------------------------------------- replay entry points

def _inputs(res: dict, base_dir: str):
    inp = res["inputs"]
    if "model" in inp:
        model = inp["model"]
        if hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest() != inp["model_sha256"]:
            raise ValueError("inline model does not match model_sha256")
    else:
        model = inp["model_file"]
        with open(os.path.join(base_dir, model), "rb") as fh:
            if hashlib.sha256(fh.read()).hexdigest() != inp["model_file_sha256"]:
                raise ValueError("model file does not match model_file_sha256")
    if "dataset" in inp:
        ds = inp["dataset"]
    else:
        with open(os.path.join(base_dir, inp["dataset_file"])) as fh:
            ds = json.load(fh)
    if hashlib.sha256(json.dumps(ds, sort_keys=True).encode()).hexdigest() != inp["dataset_sha256"]:
        raise ValueError("dataset does not match dataset_sha256")
    return model, ds


def _replay_cert(res: dict, base_dir: str):
    model, ds = _inputs(res, base_dir)
    cert = res["certificate"]
    return check_limitation_certificate(model, ds, cert, base_dir, res_prompt_length=res.get("prompt_length"))


def _replay_witness(res: dict, base_dir: str):
    model, ds = _inputs(res, base_dir)
    ok, msg, _ = replay_witness(model, ds, res["witness"], base_dir)
    return ok, msg


REPLAYERS = {"ptverify-limitation-farkas/1": _replay_cert, "ptverify-prompt-witness/1": _replay_witness}
