"""Exact checks for proofs/L1.md: the ray conditions in R^d, and the W_o = 0 counterexample.

Run ``python proofs/l1_rays_check.py``; it prints each check and exits non-zero if any fails.

Part 1.  For the datasets built by ``constructions.datasets.l1_dataset`` (one head, and two heads
whose W_o column spaces form a direct sum) the separation conditions of L1.md are checked in exact
rational arithmetic, the exponentials of the fixed tokens enclosed rigorously:

    (i)   <c_1 - a_1, w> < 0,   (ii)  <c_2 - a_2, w> > 0,   (iii) <c_2 - c_1, w> > 0,

with c_i = W_o gamma_i (the rounded rational head targets, captured from the builder), a_i the
prompt-free head output M softmax-mean(X_i) at x_0 in R^d, and w = c_2 - c_1.  They hold for every
value in the enclosures, so the rounding of gamma_i to the 2^-10 grid and the float computation of
A_i inside the builder did not destroy the separation on these instances.

Part 2.  With W_o = 0 the same builder returns two examples whose targets both equal MLP(x_0), and
every prompt reproduces them exactly: condition (iii) fails and the dataset is memorized.
"""
from __future__ import annotations

import sys
from fractions import Fraction

import numpy as np
import sympy as sp

import constructions.datasets as cds
from constructions.forward import Iv, exp_enclosure, forward_exact
from constructions.model import as_fraction

FAILURES: list[str] = []


def check(name: str, ok: bool) -> None:
    print(("ok      " if ok else "FAILED  ") + name)
    if not ok:
        FAILURES.append(name)


def build_with_gammas(model, seed: int):
    """l1_dataset, recording the rational gamma vectors it rounds (per head, per example)."""
    seen: list = []
    orig = cds._rational_vector

    def spy(v, den):
        out = orig(v, den)
        seen.append(out)
        return out
    cds._rational_vector = spy
    try:
        ds = cds.l1_dataset(model, seed=seed)
    finally:
        cds._rational_vector = orig
    k = len(ds.examples)
    return ds, [seen[j * k:(j + 1) * k] for j in range(len(model.layers[0].heads))]


def matvec(A, x):
    return [sum((A[r][c] * x[c] for c in range(len(x))), Fraction(0)) for r in range(len(A))]


def dot_iv(u, w) -> Iv:
    out = Iv(0)
    for a, b in zip(u, w):
        out = out + Iv.of(a) * Iv.of(b)
    return out


def head_output(head, X, x0) -> list:
    """Rigorous enclosure of W_o W_v softmax-mean(X) at query x0 (R^d)."""
    Wq, Wk, Wv, Wo = (as_fraction(w).tolist() for w in (head.W_q, head.W_k, head.W_v, head.W_o))
    q = matvec(Wq, x0)
    es = [Iv(*exp_enclosure(sum((a * b for a, b in zip(matvec(Wk, key), q)), Fraction(0)))) for key in X]
    Z = es[0] + es[1]
    mean = [(es[0] * X[0][c] + es[1] * X[1][c]) / Z for c in range(len(x0))]
    v = [sum((Iv.of(Wv[r][c]) * mean[c] for c in range(len(mean))), Iv(0)) for r in range(len(Wv))]
    return [sum((Iv.of(Wo[r][c]) * v[c] for c in range(len(v))), Iv(0)) for r in range(len(Wo))]


def ray_conditions(model, ds, gammas, j) -> tuple[bool, bool, bool]:
    head = model.layers[0].heads[j]
    Wo = as_fraction(head.W_o).tolist()
    x0 = as_fraction(ds.examples[0].input[1]).tolist()
    c = [matvec(Wo, list(g)) for g in gammas[j][:2]]
    a = [head_output(head, as_fraction(ds.examples[i].input).tolist(), x0) for i in range(2)]
    w = [p - q for p, q in zip(c[1], c[0])]
    e1 = dot_iv([p - q for p, q in zip(c[0], a[0])], w)
    e2 = dot_iv([p - q for p, q in zip(c[1], a[1])], w)
    return e1.hi < 0, e2.lo > 0, sum((x * x for x in w), Fraction(0)) > 0


def direct_sum(model) -> bool:
    Ws = [sp.Matrix(as_fraction(h.W_o).tolist()) for h in model.layers[0].heads]
    return sp.Matrix.hstack(*Ws).rank() == sum(W.rank() for W in Ws)


def part1() -> None:
    cases = [(3, 1, s) for s in range(10)] + [(4, 2, s) for s in range(3)] + [(8, 1, 0)]
    for d, h, seed in cases:
        model = cds.random_model(d, heads=h, seed=seed)
        ds, gammas = build_with_gammas(model, seed)
        check(f"d={d} h={h} seed={seed}: two examples, W_o column spaces form a direct sum",
              len(ds.examples) == 2 and direct_sum(model))
        for j in range(h):
            i_, ii, iii = ray_conditions(model, ds, gammas, j)
            check(f"d={d} h={h} seed={seed} head {j}: (i) {i_}, (ii) {ii}, (iii) {iii}", i_ and ii and iii)


def part2() -> None:
    model = cds.random_model(3, seed=0)
    for hd in model.layers[0].heads:
        hd.W_o[:] = 0.0
    ds, gammas = build_with_gammas(model, 0)
    layer = model.layers[0]
    x0 = as_fraction(ds.examples[0].input[1])
    y = [list(e.output[1]) for e in ds.examples]
    check("W_o = 0: both targets equal MLP(x_0) exactly", y[0] == y[1] == list(cds.mlp_exact(layer, x0)))
    check("W_o = 0: condition (iii) fails (c_1 = c_2)", not ray_conditions(model, ds, gammas, 0)[2])
    prompts = [np.array([[0.5, -0.25, 1.0]]), np.array([[1.0, 2.0, -3.0], [0.125, 0.0, 4.0], [-1.0, -1.0, 0.5]])]
    for P in prompts:
        ok = True
        for e in ds.examples:
            out = forward_exact(model, e.input, P)[1]
            ok = ok and all(v.lo == v.hi == t for v, t in zip(out, e.output[1]))
        check(f"W_o = 0: a prompt of length {len(P)} reproduces every target exactly", ok)


def main() -> int:
    part1()
    part2()
    print(f"{len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
