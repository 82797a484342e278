"""The hardmax example of proofs/L4.md, step 3: the prompt-to-output map jumps, so it is not locally
Lipschitz (exact rational forward pass).

Run ``python proofs/l4_hardmax_jump.py``; it prints each check and exits non-zero if any fails.
One hardmax head in d = 2 with score key_0 * query_0, value = coordinate 1 copied to coordinate 1,
zero MLP branch; input X = [(1, 0)], prompt P = [(a, b)], b = 1/2.  The output at the input token
is (1, 0) for a < 1, (1, b/2) at a = 1 and (1, b) for a > 1, however close a is to 1.
"""
from __future__ import annotations

import sys
from fractions import Fraction

import numpy as np

from constructions.forward import forward_exact
from constructions.model import Head, Layer, Model

FAILURES: list[str] = []


def check(name: str, ok: bool) -> None:
    print(("ok      " if ok else "FAILED  ") + name)
    if not ok:
        FAILURES.append(name)


def main() -> int:
    head = Head(W_q=np.array([[1.0, 0.0]]), W_k=np.array([[1.0, 0.0]]), W_v=np.array([[0.0, 1.0]]),
                W_o=np.array([[0.0], [1.0]]))
    layer = Layer("hardmax", [head], np.zeros((1, 2)), np.zeros(1), np.zeros((2, 1)), np.zeros(2))
    model = Model(d=2, layers=[layer])
    X = np.array([[1.0, 0.0]])
    b = Fraction(1, 2)
    for k in (10, 30, 50):
        eps = 2.0 ** -k
        for a, want in ((1.0 - eps, (1, 0)), (1.0, (1, b / 2)), (1.0 + eps, (1, b))):
            out = forward_exact(model, X, np.array([[a, float(b)]]))[-1]
            got = tuple(v.lo for v in out)
            check(f"a = 1 {'-' if a < 1 else '+' if a > 1 else ''}{'2^-%d' % k if a != 1 else ''}: output {got} "
                  f"(expected {want})", all(v.lo == v.hi for v in out) and got == tuple(Fraction(w) for w in want))
    print(f"{len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
