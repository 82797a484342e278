"""Checks for proofs/prop_E.md (sympy and exact rationals).

Run ``python proofs/prop_e_checks.py``; it prints each check and exits non-zero if any fails.

Part (b).  For m_p = 3 with symbolic weights w_1, w_2 > 0, w_3 = 1 - w_1 - w_2 > 0, the prompt with
scores s_k = kappa.u + a_k, a_k = log w_k + H(w), has softmax weights exactly w, mean
sum_k w_k a_k = 0 (so u is attained), and alpha = exp(kappa.u + H(w)); and the identity
log alpha = sum_k w_k s_k + H(w) holds for any scores.

Part (c).  A zero-score one-head model, two one-token examples with different query tokens, and
attention targets z_i produced by a prompt of length 6.  Every prompt of length m gives alpha = m and
pi = sum of its tokens at both queries, so memorization <=> the joint linear system
M (x_i + pi) = (1 + m) (z_i - x_i), i = 1, 2, has a solution with m a positive integer.  Checked:
(1) for each group alone the system is solvable for every m (relaxation R of one group allows all
alpha >= 0, so the prover's candidate window is m in {1, 2, 3, 4}); (2) the joint system has the
single solution m = 6, outside that window; (3) after moving one target the joint system has no
solution at all (no prompt of any length memorizes) while each group alone still allows every m.
"""
from __future__ import annotations

import sys
from fractions import Fraction

import numpy as np
import sympy as sp

from constructions.datasets import random_model
from constructions.model import as_fraction

FAILURES: list[str] = []


def check(name: str, ok: bool) -> None:
    print(("ok      " if ok else "FAILED  ") + name)
    if not ok:
        FAILURES.append(name)


def part_b() -> None:
    w1, w2, ku = sp.symbols("w1 w2 ku", positive=True)
    w = [w1, w2, 1 - w1 - w2]
    H = -sum(x * sp.log(x) for x in w)
    a = [sp.log(x) + H for x in w]
    s = [ku + x for x in a]
    alpha = sum(sp.exp(x) for x in s)
    soft = [sp.exp(x) / alpha for x in s]
    check("(b) softmax of the constructed scores is w", all(sp.simplify(p - q) == 0 for p, q in zip(soft, w)))
    check("(b) the constructed scores have w-mean kappa.u (so the mean of M p_k is u)",
          sp.simplify(sum(x * y for x, y in zip(w, a))) == 0)
    check("(b) alpha = exp(kappa.u + H(w))", sp.simplify(alpha - sp.exp(ku + H)) == 0)
    t = sp.symbols("t1:4", real=True)
    al = sum(sp.exp(x) for x in t)
    ww = [sp.exp(x) / al for x in t]
    ident = sum(p * x for p, x in zip(ww, t)) - sum(p * sp.log(p) for p in ww) - sp.log(al)
    check("(b) log alpha = sum_k w_k s_k + H(w) for any scores", sp.simplify(sp.expand_log(ident, force=True)) == 0)


def _systems(M, xs, zs):
    pi = sp.symbols("pi0:%d" % M.shape[0])
    m = sp.symbols("m")
    P = sp.Matrix(pi)
    eqs = [M * (sp.Matrix(x) + P) - (1 + m) * (sp.Matrix(z) - sp.Matrix(x)) for x, z in zip(xs, zs)]
    return eqs, list(pi), m


def part_c() -> None:
    model = random_model(2, seed=0, zero_scores=True)
    hd = model.layers[0].heads[0]
    M = sp.Matrix(as_fraction(hd.W_o).tolist()) * sp.Matrix(as_fraction(hd.W_v).tolist())
    check("(c) zero-score head: W_k^T W_q = 0", not np.any(hd.W_k.T @ hd.W_q))
    check("(c) M = W_o W_v is invertible (so one group alone fixes pi for any m)", M.det() != 0)
    xs = [[Fraction(1, 2), Fraction(-1, 4)], [Fraction(3, 4), Fraction(1, 8)]]
    prompt = [[Fraction(k, 8), Fraction(3 - k, 16)] for k in range(6)]
    S = sp.Matrix([sum((p[c] for p in prompt), Fraction(0)) for c in range(2)])
    zs = [list(sp.Matrix(x) + M * (sp.Matrix(x) + S) / (1 + len(prompt))) for x in xs]
    eqs, pi, m = _systems(M, xs, zs)
    for i in range(2):
        sol = sp.linsolve(list(eqs[i]), pi + [m])
        check(f"(c) group {i + 1} alone: solvable for every m (m stays free)",
              len(sol) == 1 and all(v.free_symbols <= {m} for v in next(iter(sol))))
    sol = sp.linsolve(list(eqs[0]) + list(eqs[1]), pi + [m])
    check("(c) joint system: the single solution m = 6, pi = sum of the prompt",
          sol == sp.FiniteSet(tuple(list(S) + [6])))
    zs2 = [zs[0], [zs[1][0] + sp.Rational(1, 64), zs[1][1]]]
    eqs2, pi, m = _systems(M, xs, zs2)
    sol2 = sp.linsolve(list(eqs2[0]) + list(eqs2[1]), pi + [m])
    alone = [sp.linsolve(list(e), pi + [m]) for e in eqs2]
    check("(c) moved target: the joint system has no solution (no prompt memorizes)", sol2 == sp.EmptySet)
    check("(c) moved target: each group alone still solvable for every m",
          all(len(a_) == 1 and all(v.free_symbols <= {m} for v in next(iter(a_))) for a_ in alone))


def main() -> int:
    part_b()
    part_c()
    print(f"{len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
