"""Certification of the assumptions the limitation theorems need, on a given model.

* injective MLP: a rigorous rational upper bound ``k`` on ||W_2||_2 ||W_1||_2 (the Lipschitz
  constant of the residual branch z -> W_2 relu(W_1 z + b_1)); ``k < 1`` makes MLP injective with
  ||MLP(a) - MLP(b)|| >= (1 - k) ||a - b||.  Bounds: sqrt(||W||_1 ||W||_inf) and the Frobenius norm
  (exact integer arithmetic), and for small matrices the exact spectral test mu I - W^T W > 0 by
  an exact LDL^T factorisation in rationals.  A float SVD only *proposes* mu.
* full column rank (direct sum of head output spaces): a nonzero maximal minor modulo a prime.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional

import numpy as np

from constructions.model import Layer, as_float, as_fraction, as_scaled_int

__all__ = ["norm_bound", "certify_mlp", "rank_certificate", "det_mod_p", "sqrt_up", "PRIMES",
           "ldl_positive_definite"]

PRIMES = [2147483629, 2147483587, 2147483579, 2147483563]  # primes below 2**31
_EXACT_GRAM_MAX = 48


def sqrt_up(q: Fraction) -> Fraction:
    """A rational upper bound on sqrt(q) (q >= 0), tight to about 2**-60 relative."""
    q = Fraction(q)
    if q <= 0:
        return Fraction(0)
    scale = 1 << 64
    n = q.numerator * scale * scale
    r = math.isqrt(n // q.denominator)
    while Fraction(r * r, scale * scale) < q:
        r += 1
    return Fraction(r, scale)


def ldl_positive_definite(A: list[list[Fraction]]) -> bool:
    """Exact test that the symmetric rational matrix A is positive definite (all LDL^T pivots > 0)."""
    n = len(A)
    A = [row[:] for row in A]
    for k in range(n):
        piv = A[k][k]
        if piv <= 0:
            return False
        Ak = A[k]
        for i in range(k + 1, n):
            f = A[i][k] / piv
            if f:
                Ai = A[i]
                for j in range(k + 1, n):
                    Ai[j] -= f * Ak[j]
    return True


def _gram_bound(W: np.ndarray) -> Optional[Fraction]:
    """Exact spectral bound via mu I - G > 0 (G = W^T W or W W^T, the smaller)."""
    Wf = as_float(W)
    if min(Wf.shape) > _EXACT_GRAM_MAX or Wf.size == 0:
        return None
    smax = float(np.linalg.svd(Wf, compute_uv=False).max())
    Wq = as_fraction(W)
    G = Wq.T.dot(Wq) if Wq.shape[1] <= Wq.shape[0] else Wq.dot(Wq.T)
    for slack in (1e-9, 1e-6, 1e-3):
        mu = Fraction(smax * smax * (1 + slack) + 1e-300).limit_denominator(1 << 40)
        mu = max(mu, Fraction(smax * smax) + Fraction(1, 1 << 60))
        A = [[(mu if i == j else 0) - G[i, j] for j in range(G.shape[1])] for i in range(G.shape[0])]
        if ldl_positive_definite(A):
            return sqrt_up(mu)
    return None


def norm_bound(W: np.ndarray) -> tuple[Fraction, str]:
    """Rigorous rational upper bound on ||W||_2 and the name of the method that gave it."""
    N, D = as_scaled_int(np.asarray(W))
    A = np.abs(N)
    n1 = max((int(v) for v in A.sum(axis=0)), default=0)
    ninf = max((int(v) for v in A.sum(axis=1)), default=0)
    cands = [(sqrt_up(Fraction(n1 * ninf, D * D)), "l1-linf")]
    fro = int(sum(int(v) * int(v) for v in N.reshape(-1)))
    cands.append((sqrt_up(Fraction(fro, D * D)), "frobenius"))
    g = _gram_bound(W)
    if g is not None:
        cands.append((g, "gram-ldl"))
    return min(cands, key=lambda c: c[0])


def certify_mlp(layer: Layer) -> dict:
    """Certify injectivity of ``MLP(z) = z + W_2 relu(W_1 z + b_1) + b_2``.

    Returns ``{"k": Fraction, "injective": bool, "bound_W1": .., "bound_W2": .., "methods": ..}``
    with k a rigorous upper bound on the Lipschitz constant of the residual branch."""
    b1, m1 = norm_bound(layer.W_1)
    b2, m2 = norm_bound(layer.W_2)
    k = b1 * b2
    return {"k": k, "injective": k < 1, "bound_W1": b1, "bound_W2": b2, "methods": [m1, m2]}


def det_mod_p(M: np.ndarray, p: int) -> int:
    """Determinant of an integer matrix modulo a prime p < 2**31 (int64 elimination)."""
    A = np.array([[int(x) % p for x in row] for row in M], dtype=np.int64) if M.dtype == object else (M % p).astype(np.int64)
    n = A.shape[0]
    det = 1
    for c in range(n):
        nz = np.nonzero(A[c:, c])[0]
        if nz.size == 0:
            return 0
        r = c + int(nz[0])
        if r != c:
            A[[c, r]] = A[[r, c]]
            det = (-det) % p
        piv = int(A[c, c])
        det = (det * piv) % p
        inv = pow(piv, p - 2, p)
        if c + 1 < n:
            f = (A[c + 1:, c] * inv) % p
            A[c + 1:, c:] = (A[c + 1:, c:] - (f[:, None] * A[c, c:][None, :]) % p) % p
    return det % p


def rank_certificate(W: np.ndarray) -> Optional[dict]:
    """Certificate that W (n x k, n >= k) has full column rank: k row indices and a prime p with
    det(W[rows] * D) != 0 mod p.  None if no such certificate was found."""
    n, k = W.shape
    if k > n:
        return None
    N, _ = as_scaled_int(np.asarray(W))
    for p in PRIMES:
        if n == k:
            if det_mod_p(N, p) != 0:
                return {"prime": p, "rows": list(range(n))}
            continue
        A = np.array([[int(x) % p for x in row] for row in N], dtype=np.int64)
        # pick k independent rows mod p by elimination on the transpose
        rows = []
        R = A.T.copy()
        r = 0
        for c in range(n):
            if r == k:
                break
            nz = np.nonzero(R[r:, c])[0]
            if nz.size == 0:
                continue
            pr = r + int(nz[0])
            if pr != r:
                R[[r, pr]] = R[[pr, r]]
            inv = pow(int(R[r, c]), p - 2, p)
            if r + 1 < k:
                f = (R[r + 1:, c] * inv) % p
                R[r + 1:, :] = (R[r + 1:, :] - (f[:, None] * R[r, :][None, :]) % p) % p
            rows.append(c)
            r += 1
        if len(rows) == k and det_mod_p(N[rows, :], p) != 0:
            return {"prime": p, "rows": rows}
    return None
