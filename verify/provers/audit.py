"""``ptverify audit``: certified per-layer quantities of a model and which theorem's hypotheses
hold on it (proofs/audit.md).

Every number called an *upper bound* here is rigorous:

* ``checker``: the trusted checker's own bound :func:`verify.checker.limitation.norm_upper`
  (the one it uses in certificates: ``sqrt(||W||_1 ||W||_inf)``, the Frobenius norm, or for
  small matrices an exact positive-definiteness test);
* ``gram``: a tighter bound ``b`` proved in exact integer arithmetic (python-flint): with W = N/D,
  a float Cholesky factor L of ``b'^2 I - W^T W`` (slightly smaller ``b'``) is rounded to an integer
  matrix, and the exact residual ``R = (b^2 D^2 I - N^T N) c - L L^T`` (c a power of 4) is checked to
  be diagonally dominant with a nonnegative diagonal (Gershgorin: ``R`` is positive semidefinite),
  so ``b^2 I - W^T W = (L L^T + R) / (c D^2)`` is positive semidefinite and ``||W||_2 <= b``;
* ``congruence`` (for ``||W_o W_v||_2`` with ``W_o`` of full column rank s): with ``G = W_o^T W_o``
  and ``H = W_v W_v^T`` (s x s), ``K = b^2 G - G H G`` positive definite (the same exact
  ``L L^T + R`` test, strict) implies ``G`` invertible and ``H < b^2 G^{-1}``, hence
  ``||W_o W_v||_2^2 = lambda_max(G^{1/2} H G^{1/2}) < b^2``.

Floats only *find* ``b`` and ``L``; nothing is claimed that the exact test did not confirm.
Estimates (float singular values, principal angles) are labelled ``estimate``.
Ranks: the checker's :func:`verify.checker.limitation.full_column_rank` (a pivot in every column
modulo a prime, which implies full rank over the rationals).

Activation constants: ReLU 1; GELU (erf) ``sup |gelu'| = gelu'(sqrt 2) = 1/2 + (S + e^-1)/sqrt(pi)``
with ``S = sum_n (-1)^n / (n! (2n + 1))`` (``erf 1 = 2 S / sqrt(pi)``), bounded above rationally
(:func:`gelu_slope_bound`, 1.12890...); tanh-GELU ``1 + (27/32) sqrt(2/3)`` (1.689, loose but
rigorous; proofs/audit.md).  LayerNorm: ``max|gamma| / sqrt(eps)``, its global Lipschitz constant in
the worst case (tokens of zero variance); at tokens of variance ``v`` it is at most
``max|gamma| / sqrt(v + eps)``.
"""
from __future__ import annotations

import math
import time
from fractions import Fraction
from typing import Optional

import numpy as np

from constructions.model import INV_SQRT_HEAD_SIZE, InputError, Layer, Model, as_float, is_float_array
from verify.checker.limitation import full_column_rank, norm_upper
from verify.checker.numbers import Mat, exp_bounds, one_blas_thread, sqrt_down, sqrt_up

__all__ = ["AUDIT_FORMAT", "audit_model", "audit_layer", "spectral_upper", "product_norm_upper",
           "gelu_slope_bound", "gelu_tanh_slope_bound", "activation_slope_bound", "format_table",
           "parse_layers", "flint_available"]

AUDIT_FORMAT = "ptverify-audit/1"
ZERO = Fraction(0)


# --------------------------------------------------------------------------- exact helpers

def flint_available() -> bool:
    try:
        import flint  # noqa: F401
        return True
    except ImportError:  # pragma: no cover - depends on the environment
        return False


def _mat(a: np.ndarray) -> Mat:
    """The exact value of an array (binary64 or Fractions) as the checker's :class:`Mat`."""
    a = np.asarray(a)
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if is_float_array(a):
        return Mat.from_float(a)
    return Mat.from_fractions([[Fraction(v) for v in row] for row in a], a.shape[1])


def _fmpz(N: np.ndarray):
    import flint
    rows, cols = N.shape
    return flint.fmpz_mat(rows, cols, [int(v) for v in N.reshape(-1)])


def _up_bits(q: Fraction, bits: int = 30) -> Fraction:
    """q > 0 rounded up to ``bits`` significant bits (a dyadic rational)."""
    e = q.numerator.bit_length() - q.denominator.bit_length()
    g = Fraction(2) ** (e - bits)
    return math.ceil(q / g) * g


def _psd_by_cholesky(T, Tf: np.ndarray, scale: Fraction, strict: bool) -> bool:
    """Is the exact symmetric integer matrix ``T`` (fmpz_mat, n x n) positive semidefinite
    (definite if ``strict``)?  ``Tf`` is a float matrix with T ~ scale Tf (scale > 0 rational)
    where Tf is smaller by a small positive multiple of I (the caller's margin), used only to find
    a factor.  Sufficient test: L = round(chol(Tf) 2^h) (so L L^T ~ Tf 4^h), and the integer
    matrix R = T 4^h den(scale) - L L^T num(scale) diagonally dominant with a nonnegative
    (positive, if strict) diagonal: then R is positive semidefinite (definite) by Gershgorin, and
    T 4^h den(scale) = L L^T num(scale) + R is too."""
    import flint
    n = Tf.shape[0]
    try:
        Lf = np.linalg.cholesky(Tf)
    except np.linalg.LinAlgError:
        return False
    if not np.all(np.isfinite(Lf)):
        return False
    lmax = float(np.max(np.abs(Lf)))
    if not lmax > 0 or scale <= 0:
        return False
    h = 52 - int(math.frexp(lmax)[1])    # L 2^h has entries below 2^52
    LI = flint.fmpz_mat(n, n, [int(round(math.ldexp(float(v), h))) for v in Lf.reshape(-1)])
    LLt = LI * LI.transpose()
    left = scale.denominator << (2 * h) if h >= 0 else scale.denominator
    right = scale.numerator if h >= 0 else scale.numerator << (-2 * h)
    R = T * left - LLt * right
    rows = R.tolist()
    for i in range(n):
        ri = rows[i]
        di = int(ri[i])
        off = sum(abs(int(v)) for v in ri) - abs(di)
        if di < off or (strict and di <= off):
            return False
    return True


# --------------------------------------------------------------------------- spectral norms

def _gram_bound(W: Mat, Wf: np.ndarray, sigma: float) -> Optional[Fraction]:
    """A rational b >= ||W||_2 proved by the exact Gram test, or None."""
    return _gram_bound_int(_fmpz(np.ascontiguousarray(W.N)), W.D, Wf, sigma)


def _gram_bound_int(NI, D: int, Wf: np.ndarray, sigma: float) -> Optional[Fraction]:
    """b >= ||N / D||_2 for an exact integer matrix N (fmpz_mat) whose value is
    approximately the float matrix ``Wf``, proved by the exact Gram test, or None."""
    if Wf.shape[0] < Wf.shape[1]:
        NI, Wg = NI.transpose(), Wf.T
    else:
        Wg = Wf
    # ||W||_2^2 = lambda_max(N^T N) / D^2 with N of shape (m, n), m >= n: an n x n Gram matrix
    G = NI.transpose() * NI
    Gf = Wg.T @ Wg
    n = Gf.shape[0]
    D2 = Fraction(D) ** 2
    for rel in (2.0 ** -26, 2.0 ** -18, 2.0 ** -10, 2.0 ** -4):
        b = _up_bits(Fraction(sigma * (1 + rel)) if sigma > 0 else Fraction(1, 1 << 40))
        # T = den (b^2 D^2 I - N^T N) = den D^2 (b^2 I - W^T W), den the denominator of b^2 D^2
        bb = b * b * D2
        T = G * (-bb.denominator)
        for i in range(n):
            T[i, i] = T[i, i] + bb.numerator
        # its float image, less a margin (rel / 2) b^2 I for the rounding
        Tf = float(b * b) * (1 - rel / 2) * np.eye(n) - Gf
        if _psd_by_cholesky(T, Tf, bb.denominator * D2, strict=False):
            return b
    return None


def stacked_product_upper(W_o: np.ndarray, W_v: np.ndarray, tight: bool = True) -> dict:
    """Certified upper bound on ``||W_O W_V||_2`` for large inner dimension (the whole layer's
    sum over heads of W_o^j W_v^j): the product formed exactly in integers, then the Gram test;
    else the product of the two norms' bounds."""
    Of, Vf = as_float(np.asarray(W_o)), as_float(np.asarray(W_v))
    Mf = Of @ Vf
    est = _sigma_max(Mf)
    if tight and flint_available() and Mf.size:
        O, V = _mat(W_o), _mat(W_v)
        b = _gram_bound_int(_fmpz(O.N) * _fmpz(V.N), O.D * V.D, Mf, est)
        if b is not None:
            return {"upper": b, "method": "gram", "estimate": est}
    bo, bv = spectral_upper(W_o, tight)["upper"], spectral_upper(W_v, tight)["upper"]
    return {"upper": bo * bv, "method": "product", "estimate": est}


def _sigma_max(Wf: np.ndarray) -> float:
    """The largest singular value, in floats (an estimate), from the smaller Gram matrix."""
    if Wf.size == 0:
        return 0.0
    G = Wf.T @ Wf if Wf.shape[0] >= Wf.shape[1] else Wf @ Wf.T
    return math.sqrt(max(float(np.linalg.eigvalsh(G).max()), 0.0))


def _plain_bound(W: Mat) -> Fraction:
    """min(sqrt(||W||_1 ||W||_inf), ||W||_F) rounded up, from the exact integers of W."""
    if W.is_zero():
        return ZERO
    A = np.abs(W.N)
    n1 = max(int(v) for v in A.sum(axis=0))
    ninf = max(int(v) for v in A.sum(axis=1))
    fro = sum(int(v) * int(v) for v in W.N.reshape(-1))
    return sqrt_up(Fraction(min(n1 * ninf, fro), W.D * W.D))


def spectral_upper(a: np.ndarray, tight: bool = True) -> dict:
    """Certified upper bounds on ``||a||_2``: ``{"upper": Fraction, "method": ..., "checker":
    Fraction, "estimate": float}``.  ``checker`` is the trusted checker's
    :func:`~verify.checker.limitation.norm_upper` (for a matrix with at most 48 rows or columns and
    more than 2048 entries, where that runs an exact test on a Gram matrix of Fractions, the
    cheaper ``min(sqrt(||W||_1 ||W||_inf), ||W||_F)`` instead: method ``norms``); ``upper`` is the
    smaller of it and (with ``tight`` and python-flint) the exact Gram test's bound."""
    W = _mat(a)
    Wf = as_float(np.asarray(a)).reshape(W.shape)
    if min(W.shape) > 48 or W.shape[0] * W.shape[1] <= 2048:
        checker, method = norm_upper(W), "checker"
    else:
        checker, method = _plain_bound(W), "norms"
    est = _sigma_max(Wf)
    out = {"upper": checker, "method": method, "checker": checker, "estimate": est}
    if tight and flint_available() and Wf.size and not W.is_zero():
        b = _gram_bound(W, Wf, est)
        if b is not None and b < checker:
            out.update(upper=b, method="gram")
    return out


def product_norm_upper(W_o: np.ndarray, W_v: np.ndarray, tight: bool = True) -> dict:
    """Certified upper bound on ``||W_o W_v||_2`` (W_o: d x s, W_v: s x d): the congruence test
    on s x s matrices, else the product of the two norms' bounds (method ``product``)."""
    Of, Vf = as_float(np.asarray(W_o)), as_float(np.asarray(W_v))
    M = Of @ Vf
    est = _sigma_max(M)
    found = _congruence_bound(W_o, W_v, Of, Vf, est) if (tight and flint_available() and M.size) else None
    if found is not None:
        return {"upper": found, "method": "congruence", "estimate": est}
    bo, bv = spectral_upper(W_o, tight)["upper"], spectral_upper(W_v, tight)["upper"]
    return {"upper": bo * bv, "method": "product", "estimate": est}


def _congruence_bound(W_o, W_v, Of: np.ndarray, Vf: np.ndarray, est: float) -> Optional[Fraction]:
    """b >= ||W_o W_v||_2 by the exact congruence test, or None."""
    O, V = _mat(W_o), _mat(W_v)
    OI, VI = _fmpz(O.N), _fmpz(V.N)
    G = OI.transpose() * OI          # = D_o^2 W_o^T W_o
    H = VI * VI.transpose()          # = D_v^2 W_v W_v^T
    GHG = G * H * G                  # = D_o^4 D_v^2 G H G
    Gf, Hf = Of.T @ Of, Vf @ Vf.T
    ev = np.linalg.eigvalsh(Gf)
    if not ev.min() > 0:
        return None
    GHGf = Gf @ Hf @ Gf
    for rel in (2.0 ** -26, 2.0 ** -18, 2.0 ** -10, 2.0 ** -4):
        b = _up_bits(Fraction(est * (1 + rel)) if est > 0 else Fraction(1, 1 << 40))
        # K = b^2 G - G H G (exact) times den D_o^4 D_v^2, den the denominator of b^2 D_o^2 D_v^2
        bb = b * b * (O.D * O.D) * (V.D * V.D)
        K = G * bb.numerator - GHG * bb.denominator
        # its float image less a margin: K >= (b^2 - est^2) G >= (b^2 - est^2) lambda_min(G) I
        delta = 0.5 * (float(b * b) - est * est) * float(ev.min())
        Kf = float(b * b) * Gf - GHGf - delta * np.eye(Gf.shape[0])
        if _psd_by_cholesky(K, Kf, bb.denominator * O.D ** 4 * V.D ** 2, strict=True):
            return b
    return None


# --------------------------------------------------------------------------- activations

#: a rational below pi (a convergent of its continued fraction: 3.14159265301...)
_PI_LOW = Fraction(103993, 33102)


def gelu_slope_bound() -> Fraction:
    """A rational upper bound on sup_x |gelu'(x)| for the erf GELU x Phi(x) (1.12890...).

    gelu'' = phi (2 - x^2): gelu' rises on [-sqrt 2, sqrt 2] and falls outside it, with limits 0
    and 1, and gelu'(-x) = 1 - gelu'(x); so sup |gelu'| = gelu'(sqrt 2) = Phi(sqrt 2) + sqrt 2
    phi(sqrt 2) = 1/2 + (S + e^-1)/sqrt(pi), S = sum_n (-1)^n / (n! (2n+1)) (alternating with
    decreasing terms: a partial sum ending on a positive term is an upper bound)."""
    S, term_sign, n_fact = ZERO, 1, 1
    for n in range(0, 25):
        if n > 0:
            n_fact *= n
        S += Fraction(term_sign, n_fact * (2 * n + 1))
        term_sign = -term_sign
    # n = 24 is the last term added, with sign +: an upper bound
    e_inv_hi = exp_bounds(Fraction(-1))[1]
    inv_sqrt_pi_hi = 1 / sqrt_down(_PI_LOW)
    return _up_bits(Fraction(1, 2) + (S + e_inv_hi) * inv_sqrt_pi_hi, 40)


def gelu_tanh_slope_bound() -> Fraction:
    """A rational upper bound on sup_x |f'(x)| for f(x) = x (1 + tanh(c (x + a x^3))) / 2
    (c = sqrt(2/pi), a = 0.044715): 1 + (27/32) sqrt(2/3) (proofs/audit.md: loose, rigorous)."""
    return _up_bits(1 + Fraction(27, 32) * sqrt_up(Fraction(2, 3)), 40)


def activation_slope_bound(activation: str) -> Fraction:
    if activation == "relu":
        return Fraction(1)
    if activation == "gelu":
        return gelu_slope_bound()
    if activation == "gelu_tanh":
        return gelu_tanh_slope_bound()
    raise InputError("activation", "relu, gelu or gelu_tanh", repr(activation))


# --------------------------------------------------------------------------- one layer

def _num(q: Fraction) -> dict:
    """A certified upper bound as its exact value and a float rounded up (for reading)."""
    f = float(q)
    if Fraction(f) < q:
        f = math.nextafter(f, math.inf)
    return {"exact": str(q), "value": f}


def _layer_norm_info(ln) -> Optional[dict]:
    if ln is None:
        return None
    g = np.asarray(ln.gamma)
    gf = as_float(g)
    zeros = [int(i) for i in np.flatnonzero(np.array([Fraction(v) == 0 for v in g.reshape(-1)]))] \
        if not is_float_array(g) else [int(i) for i in np.flatnonzero(gf == 0)]
    gmax = max((abs(Fraction(float(v)) if is_float_array(g) else abs(Fraction(v))) for v in g.reshape(-1)),
               default=ZERO)
    eps = Fraction(ln.eps)
    lip = gmax / sqrt_down(eps) if eps > 0 else None
    nz = np.abs(gf)[np.abs(gf) > 0]
    return {"zero_gamma": len(zeros), "zero_gamma_entries": zeros[:32], "max_abs_gamma": _num(gmax),
            "min_abs_nonzero_gamma": float(nz.min()) if nz.size else None, "eps": float(eps),
            "lipschitz_worst_case": _num(_up_bits(lip, 40)) if lip is not None else None}


def _overlaps(layer: Layer, d: int) -> dict:
    """Certified direct sums of head output spaces (stacked W_o and pairs) and the largest
    principal-angle cosine between two heads' output spaces (a float estimate)."""
    heads = layer.heads
    mats = [_mat(h.W_o) for h in heads]
    stacked = full_column_rank(mats) if heads else False
    pairs_direct = None
    if stacked:
        pairs_direct = len(heads) * (len(heads) - 1) // 2
        not_certified = []
    else:
        not_certified = [[j, k] for j in range(len(heads)) for k in range(j + 1, len(heads))
                         if not full_column_rank([mats[j], mats[k]])]
        pairs_direct = len(heads) * (len(heads) - 1) // 2 - len(not_certified)
    qs = []
    for h in heads:
        O = as_float(np.asarray(h.W_o))
        u, sv, _ = np.linalg.svd(O, full_matrices=False)
        r = int(np.sum(sv > sv.max() * 1e-10)) if sv.size and sv.max() > 0 else 0
        qs.append(u[:, :r])
    max_cos = 0.0
    for j in range(len(qs)):
        for k in range(j + 1, len(qs)):
            if qs[j].shape[1] and qs[k].shape[1]:
                max_cos = max(max_cos, float(np.linalg.svd(qs[j].T @ qs[k], compute_uv=False).max()))
    return {"stacked_W_o_full_column_rank": bool(stacked), "stacked_W_o_shape": [d, sum(h.s for h in heads)],
            "pairs_direct_certified": pairs_direct, "pairs_not_certified": not_certified[:64],
            "max_principal_cosine_estimate": max_cos}


def _scores_vanish(layer: Layer) -> bool:
    """A^j = W_k^T W_q = 0 exactly for every head, and no query/key bias."""
    for h in layer.heads:
        if h.b_q is not None or h.b_k is not None:
            return False
        K, Q = _mat(h.W_k), _mat(h.W_q)
        if not (K.is_zero() or Q.is_zero()) and not _exact_zero_product(h.W_k, h.W_q):
            return False
    return True


def _exact_zero_product(W_k, W_q) -> bool:
    K, Q = _mat(W_k), _mat(W_q)
    if flint_available():
        P = _fmpz(K.N).transpose() * _fmpz(Q.N)
        return P.is_zero()
    P = K.N.T.dot(Q.N)
    return not any(int(v) for v in P.reshape(-1))


def audit_layer(layer: Layer, d: int, causal: bool = False, tight: bool = True) -> dict:
    """The audit of one layer (a JSON-ready dict; see proofs/audit.md for every field)."""
    t0 = time.perf_counter()
    w1 = spectral_upper(layer.W_1, tight)
    w2 = spectral_upper(layer.W_2, tight)
    act = activation_slope_bound(layer.activation)
    k_relu = w1["upper"] * w2["upper"]              # ||W_1|| ||W_2||
    k_branch = act * k_relu                           # Lipschitz of z -> W_2 act(W_1 z + b_1)
    ln1, ln2 = _layer_norm_info(layer.ln1), _layer_norm_info(layer.ln2)
    lip_ln2 = Fraction(ln2["lipschitz_worst_case"]["exact"]) if ln2 and ln2["lipschitz_worst_case"] else None
    if layer.norm == "post":
        block = lip_ln2 * (1 + k_branch)
        block_what = "h -> LN2(h + W_2 act(W_1 h + b_1) + b_2): (max|gamma2|/sqrt(eps)) (1 + k)"
    elif layer.norm == "pre":
        block = 1 + k_branch * lip_ln2
        block_what = "z -> z + W_2 act(W_1 LN2(z) + b_1) + b_2: 1 + k max|gamma2|/sqrt(eps)"
    else:
        block = 1 + k_branch
        block_what = "z -> z + W_2 act(W_1 z + b_1) + b_2: 1 + k"
    heads = []
    for j, h in enumerate(layer.heads):
        p = product_norm_upper(h.W_o, h.W_v, tight)
        heads.append({"head": j, "W_oW_v": {**_num(_up_bits(p["upper"], 40)), "method": p["method"],
                                            "estimate": p["estimate"]}})
    if layer.heads:
        pall = stacked_product_upper(np.hstack([np.asarray(h.W_o) for h in layer.heads]),
                                     np.vstack([np.asarray(h.W_v) for h in layer.heads]), tight)
    else:
        pall = {"upper": ZERO, "method": "none", "estimate": 0.0}
    pall_num = _num(_up_bits(pall["upper"], 40)) if pall["upper"] > 0 else _num(ZERO)
    ov = _overlaps(layer, d)
    s = layer.heads[0].s if layer.heads else 0
    hs = sum(h.s for h in layer.heads)
    hyp = _hypotheses(layer, d, causal, k_relu, k_branch, ov, ln1, s, hs)
    return {
        "kind": layer.kind, "norm": layer.norm, "activation": layer.activation,
        "scale": layer.scale if isinstance(layer.scale, str) else str(Fraction(layer.scale)),
        "plain": layer.is_plain, "heads": len(layer.heads), "head_size": s, "mlp_width": layer.r,
        "W_1": {**_num(_up_bits(w1["upper"], 40)), "method": w1["method"], "checker": _num(_up_bits(w1["checker"], 40)),
                "estimate": w1["estimate"]},
        "W_2": {**_num(_up_bits(w2["upper"], 40)), "method": w2["method"], "checker": _num(_up_bits(w2["checker"], 40)),
                "estimate": w2["estimate"]},
        "W1_W2": {**_num(_up_bits(k_relu, 40)), "estimate": w1["estimate"] * w2["estimate"],
                  "checker": _num(_up_bits(w1["checker"] * w2["checker"], 40))},
        "activation_slope": _num(act),
        "mlp_branch_lipschitz": _num(_up_bits(k_branch, 40)),
        "mlp_block_lipschitz": {**_num(_up_bits(block, 40)), "what": block_what,
                                "worst_case": layer.norm is not None},
        "ln1": ln1, "ln2": ln2,
        "heads_detail": heads,
        "W_OW_V": {**pall_num, "method": pall["method"], "estimate": pall["estimate"],
                   "what": "||sum_j W_o^j W_v^j||_2 (the whole layer's value-output map)"},
        "W_oW_v_max": max((h["W_oW_v"]["value"] for h in heads), default=0.0),
        "W_oW_v_min": min((h["W_oW_v"]["value"] for h in heads), default=0.0),
        "output_spaces": ov,
        "hypotheses": hyp,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _verdict(holds, detail: str, by=None) -> dict:
    out = {"status": "holds" if holds is True else ("fails" if holds is False else "unknown"), "detail": detail}
    if by is not None:
        out["by"] = by
    return out


def _hypotheses(layer: Layer, d: int, causal: bool, k_relu: Fraction, k_branch: Fraction, ov: dict,
                ln1: Optional[dict], s: int, hs: int) -> dict:
    softmax = layer.kind == "softmax"
    direct = ov["stacked_W_o_full_column_rank"]
    kb = float(k_branch)
    out = {}
    # textbook L1/L2: a ptverify-model/1 softmax layer with k = ||W_1|| ||W_2|| < 1
    if layer.is_plain:
        ok = True
        parts = []
        if not softmax:
            parts.append("hardmax layer (L1/L2 need softmax)")
        parts.append(f"k = ||W_1|| ||W_2|| <= {float(k_relu):.6g} ({'< 1' if k_relu < 1 else 'not < 1'})")
        if len(layer.heads) > 1:
            parts.append("stacked W_o full column rank certified" if direct
                         else "direct sum of head outputs not certified")
        if not softmax or k_relu >= 1:
            ok = False
        elif len(layer.heads) > 1 and not direct:
            ok = None
        out["L1"] = _verdict(ok, "; ".join(parts),
                             None if k_relu < 1 else f"k exceeds 1 by a factor {kb:.4g}")
        out["L2"] = _verdict(softmax and k_relu < 1, f"injective MLP: k <= {float(k_relu):.6g}",
                             None if k_relu < 1 else f"k exceeds 1 by a factor {kb:.4g}")
    else:
        why = ("not a ptverify-model/1 layer (" + ", ".join(
            w for w, c in (("LayerNorm " + str(layer.norm), layer.norm is not None),
                           ("activation " + layer.activation, layer.activation != "relu"),
                           ("attention biases", layer.b_o is not None or any(h.has_bias for h in layer.heads)),
                           ("score scale " + str(layer.scale),
                            isinstance(layer.scale, str) or layer.scale != 1)) if c)
               + f"); the analogous condition, residual branch Lipschitz < 1, gives {kb:.6g}")
        if layer.norm == "post":
            why += "; LN2 is not injective (u and u + c 1 have the same image), so no post-LN MLP block is"
        out["L1"] = _verdict(False, why, f"residual branch Lipschitz bound exceeds 1 by a factor {kb:.4g}"
                             if k_branch >= 1 else "the layer is not of the textbook form")
        out["L2"] = _verdict(False, why, out["L1"]["by"])
    # L3: a textbook layer with k < 1, nontrivial only when the attention subspace can miss a
    # direction (the heads' ranks sum to less than d)
    l3_parts = [f"h s = {hs} vs d = {d}" + ("" if hs < d else
                " (attention outputs may span all of R^d: no subspace certificate exists)")]
    if not layer.is_plain:
        l3_parts.append("not a textbook layer")
    elif k_relu >= 1:
        l3_parts.append(f"MLP not certified injective: k <= {float(k_relu):.6g}")
    l3_ok = hs < d and layer.is_plain and k_relu < 1
    out["L3"] = _verdict(l3_ok, "; ".join(l3_parts), None if hs < d else f"h s - d + 1 = {hs - d + 1}")
    out["PropE"] = _verdict(len(layer.heads) == 1 and softmax and layer.is_plain,
                            f"{len(layer.heads)} head(s), {layer.kind}"
                            + ("" if layer.is_plain else ", not a textbook layer"))
    # Theorem M (causal only)
    if not causal:
        out["M"] = _verdict(False, "the model is not causal: Theorem M covers causal models only")
    elif not layer.is_plain:
        out["M"] = _verdict(False, "not a textbook layer (LayerNorm / GELU / biases are outside Theorem M)")
    else:
        zero_scores = _scores_vanish(layer)
        out["M"] = _verdict(k_relu < 1, "condition (c) k < 1: " + ("holds" if k_relu < 1 else "fails")
                            + "; condition 1(a) A_j = 0: " + ("holds" if zero_scores else "fails")
                            + "; condition 1(b) and condition 2 are per-model (ptverify prove multilayer / check)",
                            None if k_relu < 1 else f"k exceeds 1 by a factor {float(k_relu):.4g}")
    # the real-layer pair theorem (proofs/real_layers.md)
    parts, ok = [], True
    if not softmax:
        ok = False
        parts.append("hardmax (the pair theorem needs softmax)")
    else:
        parts.append("softmax")
    if layer.norm == "post" and ln1 is not None:
        if ln1["zero_gamma"]:
            parts.append(f"LN1 gamma has {ln1['zero_gamma']} zero entries (z must vanish there)")
        else:
            parts.append("LN1 gamma has no zero entry")
    need = s - 1 if layer.norm == "post" else s
    if direct and need >= 1:
        parts.append(f"stacked W_o of full column rank: for every head j the vectors z with (W_o^k)^T z = 0 "
                     f"(k != j){' and 1.z = 0' if layer.norm == 'post' else ''} give y = (W_o^j)^T z in a space "
                     f"of dimension >= {need}")
        ann = True
    elif direct:
        parts.append("head size 1 with post-LN: the annihilator may be zero")
        ann = None
    else:
        parts.append("stacked W_o not certified of full column rank: annihilators not certified")
        ann = None
    status = (ok and ann) if ok else False
    out["pair"] = _verdict(status if status is not None else None, "; ".join(parts))
    return out


# --------------------------------------------------------------------------- the model

def parse_layers(spec: Optional[str], n: int) -> list[int]:
    """``None``/``all`` (every layer), ``I`` or ``I:J`` (half-open), or a comma list of those."""
    if spec is None or spec.strip() == "all":
        return list(range(n))
    out: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if ":" in part:
                a, b = part.split(":", 1)
                lo, hi = int(a) if a else 0, int(b) if b else n
                out.extend(range(lo, hi))
                if not 0 <= lo < hi <= n:
                    raise ValueError
            else:
                out.append(int(part))
    except ValueError:
        raise InputError("--layers", f"all, I, I:J or a comma list of those with layer numbers in [0, {n})",
                         repr(spec)[:60]) from None
    if not out or any(not 0 <= i < n for i in out):
        raise InputError("--layers", f"all, I, I:J or a comma list of those with layer numbers in [0, {n})",
                         repr(spec)[:60])
    return sorted(set(out))


def audit_model(model: Model, layers: Optional[list[int]] = None, tight: bool = True, progress=None) -> dict:
    """Audit the given layers (default all) of a model; a JSON-ready ``ptverify-audit/1`` dict.
    ``progress`` (verify/progress.py; default the current reporter) hears one step per layer."""
    from verify.progress import ensure
    progress = ensure(progress)
    idx = list(range(len(model.layers))) if layers is None else list(layers)
    t0 = time.perf_counter()
    rows = []
    progress.stage("audit")
    for n, i in enumerate(idx):
        progress.step(n + 1, len(idx), f"layer {i}")
        with one_blas_thread():
            rows.append({"layer": i, **audit_layer(model.layers[i], model.d, model.causal, tight)})
    return {"format": AUDIT_FORMAT, "d": model.d, "causal": model.causal, "n_layers": len(model.layers),
            "tight_bounds": bool(tight and flint_available()), "layers": rows,
            "seconds": round(time.perf_counter() - t0, 3)}


def format_table(report: dict) -> str:
    """The terminal table: one row per layer, then the hypotheses."""
    hdr = ("layer", "norm/act", "||W1||<=", "||W2||<=", "k<=", "act'", "branch<=", "block<=",
           "||WoWv||<=", "||WOWV||<=", "Wo rank", "LN1 0s", "s")
    lines = []
    rows = []
    for r in report["layers"]:
        rows.append((str(r["layer"]), f"{r['norm'] or '-'}/{r['activation']}", f"{r['W_1']['value']:.4g}",
                     f"{r['W_2']['value']:.4g}", f"{r['W1_W2']['value']:.4g}", f"{r['activation_slope']['value']:.5g}",
                     f"{r['mlp_branch_lipschitz']['value']:.4g}", f"{r['mlp_block_lipschitz']['value']:.3g}",
                     f"{r['W_oW_v_min']:.3g}-{r['W_oW_v_max']:.3g}", f"{r['W_OW_V']['value']:.4g}",
                     "full" if r["output_spaces"]["stacked_W_o_full_column_rank"] else "?",
                     "-" if r["ln1"] is None else str(r["ln1"]["zero_gamma"]), f"{r['seconds']:.1f}"))
    widths = [max(len(h), *(len(row[c]) for row in rows)) for c, h in enumerate(hdr)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(hdr, widths)))
    for row in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    lines.append("")
    names = ("L1", "L2", "L3", "PropE", "M", "pair")
    lines.append("hypotheses  " + "  ".join(n.ljust(7) for n in names))
    for r in report["layers"]:
        lines.append(f"layer {r['layer']:<5} " + "  ".join(r["hypotheses"][n]["status"].ljust(7) for n in names))
    seen = set()
    for r in report["layers"]:
        for n in names:
            hyp = r["hypotheses"][n]
            key = (n, hyp["detail"].split("gives")[0], hyp["status"])
            if hyp["status"] != "holds" and key not in seen:
                seen.add(key)
                by = f" [{hyp['by']}]" if "by" in hyp else ""
                lines.append(f"  {n} (layer {r['layer']}): {hyp['detail']}{by}")
    return "\n".join(lines)
