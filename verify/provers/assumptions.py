"""Certification of the assumptions the limitation theorems need, on a given model.

* injective MLP: a rigorous rational upper bound ``k`` on ||W_2||_2 ||W_1||_2 (the Lipschitz
  constant of the residual branch z -> W_2 relu(W_1 z + b_1)); ``k < 1`` makes MLP injective with
  ||MLP(a) - MLP(b)|| >= (1 - k) ||a - b||.  The norm bounds are :func:`verify.provers.exact.norm_bound`
  (the rule the checker uses to derive k itself).
* full column rank (direct sum of head output spaces): a nonzero maximal minor modulo a prime.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from constructions.model import Layer, as_scaled_int
from verify.provers.exact import norm_bound

__all__ = ["certify_mlp", "rank_certificate", "det_mod_p", "PRIMES"]

PRIMES = [2147483629, 2147483587, 2147483579, 2147483563]  # primes below 2**31


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
