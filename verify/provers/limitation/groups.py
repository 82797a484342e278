"""Grouping: the constrained outputs of a dataset, by query token, with their MLP preimages.

Every non-null output y at position t of an example is a *member* of the group of its query token
x = X[t] (several examples sharing x is the L1/L2 situation).  The member carries the attention
input z = MLP^{-1}(y) the target needs (exact when MLP(z) == y, else the float preimage with its
exact residual) and the visible keys of its example.  Tolerance and inexact preimages become a
radius rho around z (:func:`radii`) through the inverse-Lipschitz bound of the MLP.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional

import numpy as np

from constructions.model import Dataset, Model, as_float, as_fraction
from verify.provers.exact import frac_vec, sqrt_up
from verify.provers.limitation.clock import Clock
from verify.provers.limitation.layer import ExactLayer, rational_candidates

__all__ = ["Member", "Group", "Preimage", "build_groups", "preimage", "radii"]


@dataclass
class Member:
    example: int
    position: int
    y: list[Fraction]
    z: list[Fraction]                # claimed attention input (exact rational)
    exact: bool                      # MLP(z) == y exactly
    resid2: Fraction                 # ||y - MLP(z)||_2^2
    keys: list[list[Fraction]]       # visible input tokens (the attended part of X_i)


@dataclass
class Group:
    x: list[Fraction]
    members: list[Member] = field(default_factory=list)


@dataclass
class Preimage:
    """z with MLP(z) close to y: ``exact`` when MLP(z) == y, ``resid2`` = ||y - MLP(z)||^2."""
    z: list[Fraction]
    exact: bool
    resid2: Fraction


def build_groups(model: Model, ds: Dataset, ex: ExactLayer, clock: Optional[Clock] = None) -> list[Group]:
    """The groups of ``ds``'s constrained outputs by query token, largest first."""
    groups: dict = {}
    for i, e in enumerate(ds.examples):
        Xq = [frac_vec(as_fraction(row)) for row in e.input]
        for t, y in enumerate(e.output):
            if y is None:
                continue
            if clock is not None:
                clock.check("MLP preimages")
            key = tuple(Xq[t])
            g = groups.setdefault(key, Group(x=list(key)))
            keys = Xq[: t + 1] if model.causal else Xq
            yq = frac_vec(as_fraction(y))
            pre = preimage(ex, yq)
            g.members.append(Member(i, t, yq, pre.z, pre.exact, pre.resid2, keys))
    return sorted(groups.values(), key=lambda g: -len(g.members))


def preimage(ex: ExactLayer, y: list[Fraction]) -> Preimage:
    """z with MLP(z) = y: a float fixed point, rounded to the simplest rationals that pass a float
    residual test, then checked exactly; else the exact solve on the float ReLU pattern; else the
    float preimage itself with its exact residual."""
    from constructions.datasets import mlp_inverse_float
    from constructions.forward import mlp_float
    yf = np.array([float(v) for v in y])
    zf = mlp_inverse_float(ex.layer, yf)
    for z in rational_candidates(zf, lambda zr: np.max(np.abs(mlp_float(ex.layer, zr) - yf)) <= 1e-10 * (1.0 + float(np.max(np.abs(yf))))):
        r = [a - b for a, b in zip(y, ex.mlp(z))]
        r2 = sum((v * v for v in r), Fraction(0))
        if r2 == 0:
            return Preimage(z, True, r2)
    if len(y) <= 64:
        z = _pattern_preimage(ex, y, zf)
        if z is not None:
            return Preimage(z, True, Fraction(0))
    z = [Fraction(float(v)) for v in zf]
    r = [a - b for a, b in zip(y, ex.mlp(z))]
    return Preimage(z, False, sum((v * v for v in r), Fraction(0)))


def _pattern_preimage(ex: ExactLayer, y: list[Fraction], zf: np.ndarray) -> Optional[list[Fraction]]:
    """Exact z with MLP(z) = y: fix the ReLU pattern D of the float solution and solve
    (I + W_2 D W_1) z = y - b_2 - W_2 D b_1 in rationals; accepted only if MLP(z) == y exactly."""
    layer = ex.layer
    W1, W2 = as_fraction(layer.W_1), as_fraction(layer.W_2)
    with np.errstate(all="ignore"):
        act = (as_float(layer.W_1) @ zf + as_float(layer.b_1)) > 0
    d = len(y)
    A = [[Fraction(int(r == c)) for c in range(d)] for r in range(d)]
    rhs = [y[r] - ex.b2[r] for r in range(d)]
    for k in np.nonzero(act)[0]:
        for r in range(d):
            w2 = W2[r, k]
            if w2:
                rhs[r] -= w2 * ex.b1[k]
                for c in range(d):
                    A[r][c] += w2 * W1[k, c]
    for c in range(d):  # Gauss-Jordan elimination in rationals
        piv = next((r for r in range(c, d) if A[r][c] != 0), None)
        if piv is None:
            return None
        A[c], A[piv], rhs[c], rhs[piv] = A[piv], A[c], rhs[piv], rhs[c]
        for r in range(d):
            if r != c and A[r][c] != 0:
                f = A[r][c] / A[c][c]
                A[r] = [a - f * b for a, b in zip(A[r], A[c])]
                rhs[r] -= f * rhs[c]
    z = [rhs[r] / A[r][r] for r in range(d)]
    return z if ex.mlp(z) == y else None


def radii(k: Fraction, d: int, tol: Fraction, members: list[Member]) -> list[Fraction]:
    """rho_i: radius (2-norm) around z_i that the true attention input may lie in."""
    if k >= 1:
        raise ValueError("k >= 1")
    sd = sqrt_up(Fraction(d))
    return [(sqrt_up(m.resid2) + sd * tol) / (1 - k) for m in members]
