"""LoRA updates and the exact construction of Theorem L5.

A LoRA update replaces a weight ``W`` by ``W + B A`` with ``B`` of shape ``(rows, k)`` and ``A`` of
shape ``(k, cols)``; ``k`` is the rank and ``k (rows + cols)`` the number of trained parameters.

Theorem L5 (single layer): with ``H`` the post-ReLU features of the constrained tokens (attention
frozen, no prompt), ``E = Y - Yhat`` the residuals and ``H`` of full column rank,
``Delta W_2 = E H^+`` memorizes the dataset exactly.  :func:`lora_w2_exact` builds it in exact
rational arithmetic and factors it as ``B A`` with ``k = rank(E) <= min(d, n)``.

Exact linear algebra on object arrays of :class:`fractions.Fraction` (:func:`rref`,
:func:`rank_exact`, :func:`solve_exact`, :func:`column_basis_exact`) is kept here so that both the
builders and the checkers can use it without floating point.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Sequence

import numpy as np

from .arrays import as_fraction
from .forward import NotExact, forward_rational
from .model import Dataset, Model

__all__ = [
    "LoRAUpdate", "apply_lora", "rref", "rank_exact", "solve_exact", "column_basis_exact",
    "rank_factorization", "features_exact", "lora_w2_exact", "LoRAConstruction",
    "constrained_positions", "frac_matrix", "LORA_TARGETS",
    "NotExact",   # raised by features_exact / lora_w2_exact (defined in constructions.algebras)
]

#: weights a LoRA update may target
LORA_TARGETS = ("W_q", "W_k", "W_v", "W_o", "W_1", "W_2")


# --------------------------------------------------------------------------- exact linear algebra

def frac_matrix(a) -> np.ndarray:
    """An exact 2-D object array of Fractions (floats become exactly their binary64 value)."""
    a = np.asarray(a)
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    return as_fraction(a) if a.dtype != object else np.vectorize(Fraction, otypes=[object])(a) if a.size else a


def rref(A: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Reduced row echelon form of a Fraction matrix; returns ``(R, pivot_columns)``."""
    R = np.array(frac_matrix(A), dtype=object, copy=True)
    rows, cols = R.shape
    pivots: list[int] = []
    r = 0
    for c in range(cols):
        if r == rows:
            break
        p = next((i for i in range(r, rows) if R[i, c] != 0), None)
        if p is None:
            continue
        if p != r:
            R[[r, p]] = R[[p, r]]
        piv = R[r, c]
        R[r] = np.array([x / piv for x in R[r]], dtype=object)
        for i in range(rows):
            if i != r and R[i, c] != 0:
                f = R[i, c]
                R[i] = np.array([x - f * y for x, y in zip(R[i], R[r])], dtype=object)
        pivots.append(c)
        r += 1
    return R, pivots


def rank_exact(A: np.ndarray) -> int:
    """Exact rank of a rational matrix."""
    return len(rref(A)[1])


def solve_exact(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """The unique X with ``A X = B`` for a square invertible rational ``A`` (raises if singular)."""
    A = frac_matrix(A)
    B = frac_matrix(B)
    n = A.shape[0]
    if A.shape != (n, n):
        raise ValueError(f"solve_exact: A must be square, found shape {A.shape}")
    R, piv = rref(np.concatenate([A, B], axis=1))
    if piv[:n] != list(range(n)):
        raise np.linalg.LinAlgError("solve_exact: singular matrix")
    return R[:, n:]


def column_basis_exact(A: np.ndarray) -> np.ndarray:
    """The pivot columns of ``A``: an exact basis of col(A), shape ``(rows, rank)``."""
    A = frac_matrix(A)
    _, piv = rref(A)
    return A[:, piv]


def rank_factorization(D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``D = B A`` with ``B`` (rows, k) the pivot columns of D and ``A`` (k, cols) the
    nonzero rows of its RREF; ``k = rank(D)``."""
    D = frac_matrix(D)
    R, piv = rref(D)
    k = len(piv)
    return D[:, piv], R[:k, :]


# --------------------------------------------------------------------------- LoRA updates

@dataclass
class LoRAUpdate:
    """``W <- W + B A`` on ``layers[layer]`` (``.heads[head]`` for attention weights)."""

    target: str
    B: np.ndarray
    A: np.ndarray
    layer: int = 0
    head: Optional[int] = None

    @property
    def rank(self) -> int:
        return self.B.shape[1]

    @property
    def n_parameters(self) -> int:
        return int(self.B.size + self.A.size)

    def delta(self) -> np.ndarray:
        if self.B.dtype == object or self.A.dtype == object:
            return frac_matrix(self.B).dot(frac_matrix(self.A))
        return self.B @ self.A


def _add(W: np.ndarray, D: np.ndarray, fld: str) -> np.ndarray:
    if W.shape != D.shape:
        raise ValueError(f"{fld}: LoRA update of shape {D.shape} does not match the weight's shape {W.shape}")
    if W.dtype == np.float64 and D.dtype == np.float64:
        return W + D
    return as_fraction(W) + frac_matrix(D)


def apply_lora(model: Model, updates: Sequence[LoRAUpdate]) -> Model:
    """A new model with every update applied (exact when either side is rational)."""
    out = copy.deepcopy(model)
    for u in updates:
        if u.target not in LORA_TARGETS:
            raise ValueError(f"LoRA target: expected one of {LORA_TARGETS}, found {u.target!r}")
        layer = out.layers[u.layer]
        if u.target in ("W_1", "W_2"):
            setattr(layer, u.target, _add(getattr(layer, u.target), u.delta(), f"layers[{u.layer}].mlp.{u.target}"))
        else:
            heads = range(len(layer.heads)) if u.head is None else [u.head]
            for hj in heads:
                h = layer.heads[hj]
                setattr(h, u.target, _add(getattr(h, u.target), u.delta(),
                                          f"layers[{u.layer}].attention.heads[{hj}].{u.target}"))
    out.meta = dict(out.meta, lora=[{"target": u.target, "layer": u.layer, "head": u.head, "rank": u.rank}
                                    for u in updates])
    return out


# --------------------------------------------------------------------------- the L5 construction

def constrained_positions(dataset: Dataset) -> list[tuple[int, int]]:
    """``(example, position)`` of every output that is not ``None``, in order."""
    return [(i, t) for i, ex in enumerate(dataset.examples) for t, y in enumerate(ex.output) if y is not None]


def features_exact(model: Model, dataset: Dataset) -> tuple[np.ndarray, np.ndarray, list]:
    """Pre-MLP tokens ``z`` and post-ReLU features ``h = relu(W_1 z + b_1)`` at the constrained
    positions, in exact rationals.

    Returns ``(Z, H, positions)`` with ``Z`` of shape (d, n), ``H`` of shape (r, n).  Raises
    :class:`NotExact` when the attention output is not rational (softmax heads with unequal
    scores): then there is no exact construction."""
    if len(model.layers) != 1:
        raise ValueError(f"model.layers: expected 1 layer for the L5 construction, found {len(model.layers)}")
    pos = constrained_positions(dataset)
    cache: dict[int, tuple] = {}
    zs, hs = [], []
    for i, t in pos:
        if i not in cache:
            _, Zr, Hr = forward_rational(model, dataset.examples[i].input, return_features=True)
            cache[i] = (Zr, Hr)
        zs.append(cache[i][0][t])
        hs.append(cache[i][1][t])
    r = model.layers[0].W_1.shape[0]
    Z = np.stack(zs, axis=1) if zs else np.zeros((model.d, 0), dtype=object)
    H = np.stack(hs, axis=1) if hs else np.zeros((r, 0), dtype=object)
    return Z, H, pos


@dataclass
class LoRAConstruction:
    """Result of :func:`lora_w2_exact`."""

    update: Optional[LoRAUpdate]   # None when H lacks full column rank
    rank: int                      # rank(E) = rank of Delta W_2
    n_tokens: int                  # number of constrained tokens n
    feature_rank: int              # rank(H)
    residual_rank: int             # rank(E)
    bound_rank: int                # min(d, n), the rank L5 allows
    message: str = ""


def lora_w2_exact(model: Model, dataset: Dataset) -> LoRAConstruction:
    """Theorem L5: ``Delta W_2 = (Y - Yhat) H^+`` in exact rationals, factored as ``B A``.

    ``H`` holds the post-ReLU features of the constrained tokens; when it has full column rank,
    ``H^+ = (H^T H)^{-1} H^T`` and ``Delta W_2 H = E`` exactly, so the updated model outputs the
    targets (the attention is frozen: in one layer W_2 acts after it).  ``B`` is the pivot columns
    of ``E`` and ``A = R (H^T H)^{-1} H^T`` with ``R`` the nonzero rows of rref(E), so the rank is
    ``rank(E) <= min(d, n)``."""
    Z, H, pos = features_exact(model, dataset)
    layer = model.layers[0]
    d, n = model.d, len(pos)
    W2, b2 = as_fraction(layer.W_2), as_fraction(layer.b_2)
    cols = []
    for c, (i, t) in enumerate(pos):
        yhat = Z[:, c] + W2.dot(H[:, c]) + b2
        cols.append(as_fraction(np.asarray(dataset.examples[i].output[t])) - yhat)
    E = np.stack(cols, axis=1) if cols else np.zeros((d, 0), dtype=object)
    hrank = rank_exact(H) if n else 0
    erank = rank_exact(E) if n else 0
    bound = min(d, n)
    if hrank < n:
        return LoRAConstruction(None, erank, n, hrank, erank, bound,
                                f"H has rank {hrank} < {n} columns (needs full column rank; n <= r = {H.shape[0]} "
                                "and linearly independent features): L5 does not apply")
    if erank == 0:
        upd = LoRAUpdate("W_2", np.zeros((d, 0), dtype=object), np.zeros((0, H.shape[0]), dtype=object))
        return LoRAConstruction(upd, 0, n, hrank, 0, bound, "targets already met; the zero update")
    G = H.T.dot(H)                      # (n, n), invertible
    Bm, R = rank_factorization(E)       # E = Bm R, R (k, n)
    # A = R G^{-1} H^T  computed as (G^{-1} R^T)^T H^T  (G symmetric)
    X = solve_exact(G, R.T)             # (n, k)
    A = X.T.dot(H.T)                    # (k, r)
    upd = LoRAUpdate("W_2", Bm, A)
    return LoRAConstruction(upd, erank, n, hrank, erank, bound, "")
