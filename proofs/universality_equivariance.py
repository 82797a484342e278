"""Exact integrals for proofs/universality.md, "Why positional encodings are needed".

Run ``python proofs/universality_equivariance.py``; it prints each check and exits non-zero if any
fails.  Setting: d = 1, n = 2, X = (u, v) uniform on [0, 1]^2, f(u, v) = (u, u), and a
permutation-equivariant g(u, v) = (h(u, v), h(v, u)).  Then

    d_p(g, f)^p = E |h(u, v) - u|^p + E |h(v, u) - u|^p = E [ |h - u|^p + |h - v|^p ]  (h = h(u, v))
                >= E [ 2 |(u - v) / 2|^p ] = 2^(1 - p) E |u - v|^p = 2^(2 - p) / ((p + 1)(p + 2)),

with equality for h between u and v when p = 1 (e.g. the identity g(u, v) = (u, v)) and for the
midpoint h = (u + v) / 2 when p > 1.  The integrals are computed exactly with sympy on the two
triangles u > v and u < v, where every absolute value below has a fixed sign.
"""
from __future__ import annotations

import sys

import sympy as sp

FAILURES: list[str] = []
u, v = sp.symbols("u v", real=True)


def check(name: str, ok: bool) -> None:
    print(("ok      " if ok else "FAILED  ") + name)
    if not ok:
        FAILURES.append(name)


def on_triangles(expr_hi, expr_lo):
    """Integral over [0,1]^2 of a function equal to expr_hi on u > v and expr_lo on u < v."""
    a = sp.integrate(sp.integrate(expr_hi, (v, 0, u)), (u, 0, 1))
    b = sp.integrate(sp.integrate(expr_lo, (v, u, 1)), (u, 0, 1))
    return sp.nsimplify(a + b)


def main() -> int:
    for p in range(1, 5):
        e = on_triangles((u - v) ** p, (v - u) ** p)
        check(f"p={p}: E|u - v|^p = 2/((p+1)(p+2)) = {e}", e == sp.Rational(2, (p + 1) * (p + 2)))
        lb = sp.Rational(2, 1) ** (1 - p) * e
        check(f"p={p}: lower bound d_p^p >= 2^(1-p) E|u-v|^p = {lb}", lb == sp.Rational(2) ** (2 - p) / ((p + 1) * (p + 2)))
        mid = on_triangles(2 * ((u - v) / 2) ** p, 2 * ((v - u) / 2) ** p)
        check(f"p={p}: the midpoint map attains it (d_p^p = {mid})", mid == lb)
    ident = on_triangles(u - v, v - u)  # |u - u| + |v - u|
    check("p=1: the identity g(u, v) = (u, v) has d_1 = 1/3", ident == sp.Rational(1, 3))
    swap = on_triangles(u - v, v - u)  # g = (v, u): |v - u| + |u - u|
    check("p=1: the swap g(u, v) = (v, u) has d_1 = 1/3", swap == sp.Rational(1, 3))
    mx = on_triangles(2 * (u - u), 2 * (v - u))  # h = max(u, v): |max - u| twice
    check("p=1: g = (max, max) has d_1 = 1/3", mx == sp.Rational(1, 3))
    # h(u, v) = u^2: |u^2 - u| = u - u^2; |v^2 - u| integrated over the square directly
    sq = sp.integrate(u - u ** 2, (u, 0, 1), (v, 0, 1))
    sq += sp.integrate(sp.integrate(u - v ** 2, (u, v ** 2, 1)) + sp.integrate(v ** 2 - u, (u, 0, v ** 2)), (v, 0, 1))
    check(f"p=1: g = (u^2, v^2) has d_1 = {sq} >= 1/3", sq == sp.Rational(8, 15) and sq >= sp.Rational(1, 3))
    print(f"{len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
