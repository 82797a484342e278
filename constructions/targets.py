"""Targets of Theorem U: functions f in F_L on [0, 1]^(d n) with certified Lipschitz constants.

Each :class:`Target` has an exact version (lists of Fractions, used to quantize f on the grid) and
a float version (batched numpy, used by Monte Carlo estimates).  :data:`TARGETS` registers the
builders by name; :func:`build_target` checks the certified constant against L.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

from .arrays import InputError

__all__ = ["Target", "TARGETS", "build_target"]


def _clip01(v: Fraction) -> Fraction:
    return min(max(v, Fraction(0)), Fraction(1))


def _op_norm_bound(W: np.ndarray) -> Fraction:
    """max(||W||_1, ||W||_inf): an upper bound on ||W||_{p -> p} for every p >= 1 (Riesz-Thorin)."""
    A = np.vectorize(lambda x: abs(Fraction(x)), otypes=[object])(W)
    return max(max(sum(A[:, j]) for j in range(A.shape[1])), max(sum(A[i, :]) for i in range(A.shape[0])))


@dataclass
class Target:
    """A target f in F_L with a certified Lipschitz constant ``lipschitz`` <= L (entry-wise p-norm,
    valid for every p >= 1).  ``f_exact`` maps a list of dn Fractions (entry e = t d + i) to dn
    Fractions in [0, 1]; ``f_float`` maps an array (B, dn) to (B, dn)."""

    name: str
    d: int
    n: int
    L: Fraction
    lipschitz: Fraction
    f_exact: Callable
    f_float: Callable
    params: dict
    description: str


def _token_mix(d: int, n: int, L: Fraction, seed: int) -> Target:
    dn = d * n
    if n >= 2:
        perm = [((e // d + 1) % n) * d + e % d for e in range(dn)]   # next token, same coordinate
    else:
        perm = [(e + 1) % dn for e in range(dn)]                      # next coordinate
    half = Fraction(1, 2)

    def fe(x):
        return [_clip01(half + L * ((x[e] + x[perm[e]]) / 2 - half)) for e in range(dn)]

    def ff(X):
        X = np.asarray(X, dtype=np.float64)
        return np.clip(0.5 + float(L) * ((X + X[:, perm]) / 2 - 0.5), 0, 1)
    # f = clip(1/2 + L (M x - 1/2)), M doubly stochastic: ||M||_1 = ||M||_inf = 1
    return Target("token-mix", d, n, L, L, fe, ff, {"perm": perm},
                  "clip(1/2 + L((X_t + X_{t+1})/2 - 1/2)): a token-mixing average")


def _smooth(d: int, n: int, L: Fraction, seed: int) -> Target:
    dn = d * n
    perm = [(e + d) % dn if n >= 2 else (e + 1) % dn for e in range(dn)]
    half = Fraction(1, 2)
    a = 2 * L / 3   # smoothstep s(x) = 3x^2 - 2x^3 has |s'| <= 3/2 on [0, 1]

    def fe(x):
        out = []
        for e in range(dn):
            v = min(max(x[perm[e]], Fraction(0)), Fraction(1))
            out.append(_clip01(half + a * (3 * v * v - 2 * v * v * v - half)))
        return out

    def ff(X):
        V = np.clip(np.asarray(X, dtype=np.float64)[:, perm], 0, 1)
        return np.clip(0.5 + float(a) * (3 * V ** 2 - 2 * V ** 3 - 0.5), 0, 1)
    return Target("smooth", d, n, L, L, fe, ff, {"perm": perm},
                  "clip(1/2 + (2L/3)(smoothstep(X_perm) - 1/2)): a clipped smooth map")


def _relu_net(d: int, n: int, L: Fraction, seed: int, hidden: int = 8, bits: int = 4) -> Target:
    dn = d * n
    rng = np.random.default_rng(seed)

    def dy(shape, scale):
        return np.vectorize(lambda v: Fraction(int(round(v * (1 << bits))), 1 << bits), otypes=[object])(
            rng.normal(0, scale, shape))
    W1 = dy((hidden, dn), 1.5)
    b1 = dy((hidden,), 0.5)
    W2 = dy((dn, hidden), 1.0)
    lam = _op_norm_bound(W1) * _op_norm_bound(W2)
    if lam == 0:
        lam = Fraction(1)
    scale = L / lam
    half = Fraction(1, 2)

    def net(x):
        h = [max(sum(W1[k, j] * x[j] for j in range(dn)) + b1[k], Fraction(0)) for k in range(hidden)]
        return [sum(W2[e, k] * h[k] for k in range(hidden)) for e in range(dn)]
    ref = net([half] * dn)

    def fe(x):
        y = net(list(x))
        return [_clip01(half + scale * (y[e] - ref[e])) for e in range(dn)]
    W1f, b1f, W2f = (np.vectorize(float)(a) for a in (W1, b1, W2))
    reff = np.array([float(v) for v in ref])

    def ff(X):
        X = np.asarray(X, dtype=np.float64)
        Y = np.maximum(X @ W1f.T + b1f, 0) @ W2f.T
        return np.clip(0.5 + float(scale) * (Y - reff), 0, 1)
    return Target("relu-net", d, n, L, scale * lam, fe, ff,
                  {"hidden": hidden, "seed": seed, "bits": bits, "network_lipschitz": str(lam)},
                  "clip(1/2 + (L/Lambda)(net(X) - net(1/2))), net a random ReLU network with "
                  "certified Lambda = prod_l max(||W_l||_1, ||W_l||_inf)")


#: registry of target builders: name -> builder(d, n, L, seed) -> Target
TARGETS: dict = {"token-mix": _token_mix, "smooth": _smooth, "relu-net": _relu_net}


def build_target(name: str, d: int, n: int, L, seed: int = 0) -> Target:
    """A registered target in F_L (certified Lipschitz constant <= L)."""
    if name not in TARGETS:
        raise InputError("--target", f"one of {sorted(TARGETS)}", repr(name))
    L = Fraction(L)
    if L <= 0:
        raise InputError("--lipschitz", "a positive number", str(L))
    t = TARGETS[name](d, n, L, seed)
    if t.lipschitz > L:  # pragma: no cover - a builder bug
        raise AssertionError(f"target {name}: certified constant {t.lipschitz} exceeds L = {L}")
    return t
