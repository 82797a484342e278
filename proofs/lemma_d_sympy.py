"""Symbolic proof of Lemma D (proofs/lemma_d.md) with sympy.

Run ``python proofs/lemma_d_sympy.py``; it prints each check and exits non-zero if any fails.

Part 1, the general argument.  For any lengths, Att^j(x, [P, X]) is a finite sum over the columns
of [P, X] divided by another; a finite sum over a concatenation is the sum over P plus the sum
over X (checked symbolically with symbolic lengths m_p and n below), so

    Att^j(x, [P, X]) = (N_X + N_P) / (Z_X + Z_P).

The remaining identity

    (N_X + N_P) / (Z_X + Z_P) = lambda N_X / Z_X + (1 - lambda) N_P / Z_P,
    lambda = Z_X / (Z_X + Z_P),

is a rational-function identity in four quantities Z_X, Z_P > 0 and N_X, N_P (vectors; checked
coordinate-wise with free symbols), and 0 < lambda < 1 follows from Z_X, Z_P > 0.

Part 2, concrete lengths.  For m_p, n in 1..3 and d = 2 the full softmax expression with symbolic
scores (exp kept symbolic), symbolic value matrix M = W_o W_v and symbolic tokens is compared with
both right-hand sides: ``simplify(lhs - rhs) == 0``.
"""
from __future__ import annotations

import sys

import sympy as sp

FAILURES: list[str] = []


def check(name: str, ok: bool) -> None:
    print(("ok      " if ok else "FAILED  ") + name)
    if not ok:
        FAILURES.append(name)


def lam_of(ZX, ZP):
    return ZX / (ZX + ZP)


def general_identity(lam_fn=lam_of) -> bool:
    """(N_X + N_P)/(Z_X + Z_P) == lam N_X/Z_X + (1 - lam) N_P/Z_P for free Z_X, Z_P > 0, N_X, N_P."""
    ZX, ZP = sp.symbols("Z_X Z_P", positive=True)
    NX, NP = sp.symbols("N_X N_P", real=True)
    lam = lam_fn(ZX, ZP)
    return sp.simplify((NX + NP) / (ZX + ZP) - (lam * NX / ZX + (1 - lam) * NP / ZP)) == 0


def lambda_in_open_unit_interval(lam_fn=lam_of) -> bool:
    ZX, ZP = sp.symbols("Z_X Z_P", positive=True)
    lam = sp.together(lam_fn(ZX, ZP))
    return bool(lam.is_positive) and bool(sp.together(1 - lam).is_positive)


def sum_splits_over_concatenation() -> bool:
    """sum_{t=1}^{m+n} w_t = sum_{t=1}^{m} w_t + sum_{t=1}^{n} w_{m+t}, symbolic m, n >= 1."""
    m, n, t = sp.symbols("m_p n t", integer=True, positive=True)
    w = sp.Function("w")
    whole = sp.Sum(w(t), (t, 1, m + n))
    parts = sp.Sum(w(t), (t, 1, m)) + sp.Sum(w(t + m), (t, 1, n))
    # Sum.split-like step: shift the second range of the whole sum back by m
    split = sp.Sum(w(t), (t, 1, m)) + sp.Sum(w(t), (t, m + 1, m + n)).change_index(t, t - m, t)
    return sp.simplify(split - parts) == 0 and sp.simplify(
        (sp.Sum(w(t), (t, 1, m)) + sp.Sum(w(t), (t, m + 1, m + n))) - whole) == 0


def concrete(m_p: int, n: int, d: int = 2, lam_fn=lam_of) -> bool:
    """The full softmax expression for symbolic scores, tokens and M = W_o W_v."""
    a = sp.symbols(f"a1:{n + 1}", real=True)          # scores of the input tokens
    b = sp.symbols(f"b1:{m_p + 1}", real=True)        # scores of the prompt tokens
    X = sp.Matrix(d, n, lambda i, j: sp.Symbol(f"x_{i}{j}", real=True))
    P = sp.Matrix(d, m_p, lambda i, j: sp.Symbol(f"p_{i}{j}", real=True))
    M = sp.Matrix(d, d, lambda i, j: sp.Symbol(f"M_{i}{j}", real=True))
    S = P.row_join(X)                                   # [P, X]
    scores = list(b) + list(a)
    Z = sum(sp.exp(s) for s in scores)
    direct = M * sum((sp.exp(s) * S[:, k] for k, s in enumerate(scores)), sp.zeros(d, 1)) / Z
    ZX = sum(sp.exp(s) for s in a)
    ZP = sum(sp.exp(s) for s in b)
    NX = M * sum((sp.exp(s) * X[:, k] for k, s in enumerate(a)), sp.zeros(d, 1))
    NP = M * sum((sp.exp(s) * P[:, k] for k, s in enumerate(b)), sp.zeros(d, 1))
    via_nz = (NX + NP) / (ZX + ZP)
    lam = lam_fn(ZX, ZP)
    via_lam = lam * NX / ZX + (1 - lam) * NP / ZP
    ok1 = all(sp.simplify(e) == 0 for e in (direct - via_nz))
    ok2 = all(sp.simplify(e) == 0 for e in (via_nz - via_lam))
    return ok1 and ok2


def main() -> int:
    check("a finite sum over [P, X] splits into the sums over P and over X (symbolic m_p, n)",
          sum_splits_over_concatenation())
    check("(N_X + N_P)/(Z_X + Z_P) = lambda Att(x, X) + (1 - lambda) Att(x, P) for all Z_X, Z_P > 0",
          general_identity())
    check("0 < lambda = Z_X / (Z_X + Z_P) < 1", lambda_in_open_unit_interval())
    for m_p in (1, 2, 3):
        for n in (1, 2, 3):
            check(f"softmax form, m_p = {m_p}, n = {n}, d = 2", concrete(m_p, n))
    # the checks have teeth: the swapped weight Z_P / (Z_X + Z_P) is rejected
    wrong = lambda ZX, ZP: ZP / (ZX + ZP)  # noqa: E731
    check("a wrong lambda (Z_P / (Z_X + Z_P)) is rejected", not general_identity(wrong) and not concrete(1, 2, lam_fn=wrong))
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed", file=sys.stderr)
        return 1
    print("Lemma D: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
