"""Finding a real-layer pair certificate (proofs/real_layers.md): for two constrained members that
share the query token and one head j, a float LP finds a direction z in the annihilator of the
other heads' output spaces (and of 1 with a post-LayerNorm) with the theorem's sign conditions
and a margin; an exact rational solve (python-flint) then makes the equalities hold exactly.
Only the trusted checker's acceptance makes a verdict.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import gcd
from typing import Iterator, Optional

import numpy as np

from verify.provers.real.forward import FloatLayer

__all__ = ["Member", "pairs", "functionals", "find_direction", "exact_z", "MARGIN"]

#: least LP margin (relative to the functionals' norms) worth an exact solve
MARGIN = 1e-7
#: free coordinates of z are rounded to this many bits after scaling z to max-norm 1
ROUND_BITS = 40


@dataclass
class Member:
    example: int
    position: int


def pairs(dataset, causal: bool) -> Iterator[tuple[Member, Member]]:
    """Pairs of constrained members whose query tokens are equal (as float64 rows)."""
    by_token: dict = {}
    for i, ex in enumerate(dataset.examples):
        X = np.asarray(ex.input)
        for p, t in enumerate(ex.output):
            if t is not None:
                by_token.setdefault(tuple(X[p].tolist()), []).append(Member(i, p))  # exact values
    for members in by_token.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                yield members[a], members[b]


def _as64(a) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(np.float64) if a.dtype != object else np.vectorize(float, otypes=[np.float64])(a)


@dataclass
class Functionals:
    """Linear functionals f (z -> f.z) of the theorem with their tolerance weights w: the lower
    end of each quantity over the target box is f.z - tol * w.|z|."""
    rows: list            # [(f, w)]
    constraints: np.ndarray   # C with C z = 0 required


def functionals(fl: FloatLayer, dataset, m1: Member, m2: Member, j: int, causal: bool) -> Functionals:
    d = fl.b_o.shape[0]
    h = fl.heads[j]
    x = _as64(dataset.examples[m1.example].input)[m1.position]
    ts = [_as64(dataset.examples[m.example].output[m.position]) for m in (m1, m2)]
    qx = fl.reads(x[None, :])[0] @ h["W_q"].T + h["b_q"]
    scs, Vs = [], []
    for m in (m1, m2):
        X = _as64(dataset.examples[m.example].input)
        S = X[: m.position + 1] if causal else X
        R = fl.reads(S)
        scs.append(fl.scale * ((R @ h["W_k"].T + h["b_k"]) @ qx))
        Vs.append(R @ h["W_v"].T + h["b_v"])
    top = max(float(sc.max()) for sc in scs)
    ws = [np.exp(sc - top) for sc in scs]
    Zs = [float(w.sum()) for w in ws]
    wv = [w @ V for w, V in zip(ws, Vs)]
    xb = x + fl.b_o
    Woj = h["W_o"]
    rows = []
    others = [fl.heads[k]["W_o"].T for k in range(len(fl.heads)) if k != j]
    C = np.vstack(others) if others else np.zeros((0, d))
    if fl.norm == "post":
        gamma, beta, _ = fl.ln1
        nz = gamma != 0
        inv = np.where(nz, 1.0 / np.where(nz, gamma, 1.0), 0.0)
        n1, n2 = (ts[0] - beta) * inv, (ts[1] - beta) * inv
        rows.append((n1, np.abs(inv)))
        rows.append((-n2, np.abs(inv)))
        rows.append((-xb * (Zs[0] - Zs[1]) - Woj @ (wv[0] - wv[1]), np.zeros(d)))
        extra = [np.ones((1, d))] + [np.eye(d)[k][None, :] for k in np.flatnonzero(~nz)]
        C = np.vstack([C] + extra)
    else:
        one = np.ones(d)
        rows.append((ts[0] - ts[1], 2 * one))
        rows.append(((ts[0] - xb) * Zs[0] - (ts[1] - xb) * Zs[1] - Woj @ (wv[0] - wv[1]), (Zs[0] + Zs[1]) * one))
    return Functionals(rows, C)


def _kernel(C: np.ndarray, d: int) -> np.ndarray:
    if C.shape[0] == 0:
        return np.eye(d)
    _, sv, Vt = np.linalg.svd(C, full_matrices=True)
    rank = int(np.sum(sv > sv[0] * d * 1e-13)) if sv.size else 0
    return Vt[rank:].T


def find_direction(F: Functionals, tol: float, d: int) -> Optional[tuple[np.ndarray, float]]:
    """max t s.t. f.z - tol w.|z| >= t ||N^T f|| for every functional, z = N c, |c| <= 1; returns
    (z, t) when t > MARGIN.  The LP without the tolerance terms is solved first (k variables);
    only when its optimum loses the margin to them is the LP with |z| (d more variables) solved."""
    N = _kernel(F.constraints, d)
    if N.shape[1] == 0:
        return None
    found = _lp(F, N, 0.0, d)
    if found is None or tol == 0:
        return found
    z, _ = found
    t = min((float(f @ z) - tol * float(w @ np.abs(z))) / float(np.linalg.norm(N.T @ f)) for f, w in F.rows)
    if t > MARGIN:
        return z, t
    return _lp(F, N, tol, d)


def _lp(F: Functionals, N: np.ndarray, tol: float, d: int) -> Optional[tuple[np.ndarray, float]]:
    from scipy.optimize import linprog
    k = N.shape[1]
    use_u = tol > 0
    nv = k + (d if use_u else 0) + 1
    A, b = [], []
    for f, w in F.rows:
        g = N.T @ f
        nrm = float(np.linalg.norm(g))
        if nrm == 0 or not np.isfinite(nrm):
            return None
        row = np.zeros(nv)
        row[:k] = -g / nrm
        if use_u:
            row[k:k + d] = tol * w / nrm
        row[-1] = 1.0
        A.append(row)
        b.append(0.0)
    if use_u:   # u >= |N c|
        for sgn in (1, -1):
            blk = np.zeros((d, nv))
            blk[:, :k] = sgn * N
            blk[:, k:k + d] = -np.eye(d)
            A.extend(blk)
            b.extend([0.0] * d)
    cost = np.zeros(nv)
    cost[-1] = -1.0
    bounds = [(-1, 1)] * k + ([(0, None)] * d if use_u else []) + [(None, 1)]
    res = linprog(cost, A_ub=np.array(A), b_ub=np.array(b), bounds=bounds, method="highs")
    if res.status != 0 or res.x is None:
        return None
    t = float(res.x[-1])
    if t <= MARGIN:
        return None
    return N @ res.x[:k], t


def _int_matrix(a: np.ndarray) -> list[list[int]]:
    """Each row of a times its own power of two, as the least integers that are exact (rows may be
    scaled freely: the kernel does not change).  Smaller integers make the exact solve faster."""
    from math import gcd as _gcd

    from constructions.arrays import dyadic_int64
    out = []
    for row in np.asarray(a, dtype=np.float64):
        fast = dyadic_int64(row)
        if fast is not None:                     # row == N / 2**e exactly, N in int64
            n = fast[0]
            g = int(np.gcd.reduce(np.abs(n))) if n.size else 0
            out.append([int(v) for v in (n // g if g > 1 else n)])
            continue
        fr = [Fraction(float(v)) for v in row]
        den = 1
        for v in fr:
            den = max(den, v.denominator)           # powers of two: the largest is the lcm
        ints = [v.numerator * (den // v.denominator) for v in fr]
        g = 0
        for v in ints:
            g = _gcd(g, v)
        out.append([v // g for v in ints] if g > 1 else ints)
    return out


def exact_z(C: np.ndarray, z: np.ndarray) -> Optional[list[int]]:
    """An integer vector Z with C Z = 0 exactly (C read exactly as binary64), close to a positive
    multiple of z: the free coordinates are z's, rounded; the pivots are solved exactly."""
    import flint
    from scipy.linalg import qr
    d = z.shape[0]
    z = z / np.max(np.abs(z))
    if C.shape[0] == 0:
        Z = [int(round(v * 2.0 ** ROUND_BITS)) for v in z]
        return Z if any(Z) else None
    # independent constraint rows, then pivot columns (QR with column pivoting)
    _, R, prow = qr(C.T, mode="economic", pivoting=True)
    diag = np.abs(np.diag(R))
    rank = int(np.sum(diag > diag[0] * max(C.shape) * 1e-13))
    Cr = C[np.sort(prow[:rank])]
    _, _, pcol = qr(Cr, mode="economic", pivoting=True)
    piv, free = np.sort(pcol[:rank]), np.sort(pcol[rank:])
    Ci = _int_matrix(Cr)
    Zf = [int(round(v * 2.0 ** ROUND_BITS)) for v in z[free]]
    A = flint.fmpz_mat([[row[c] for c in piv] for row in Ci])
    Bm = [[row[c] for c in free] for row in Ci]
    rhs = flint.fmpz_mat([[-sum(bi * zi for bi, zi in zip(brow, Zf))] for brow in Bm])
    try:
        sol = flint.fmpq_mat(A).solve(flint.fmpq_mat(rhs))
    except (ZeroDivisionError, ValueError):
        return None
    vals = [Fraction(int(sol[i, 0].p), int(sol[i, 0].q)) for i in range(rank)]
    den = 1
    for v in vals:
        den = den * v.denominator // gcd(den, v.denominator)
    Z = [0] * d
    for i, c in enumerate(piv):
        Z[int(c)] = vals[i].numerator * (den // vals[i].denominator)
    for i, c in enumerate(free):
        Z[int(c)] = Zf[i] * den
    g = 0
    for v in Z:
        g = gcd(g, v)
    if g == 0:
        return None
    return [v // g for v in Z]
