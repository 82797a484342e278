"""The forward pass ``g([P, X])[m_p:]`` of a model with a prompt prepended: one generic
implementation over scalar algebras, and one batched torch implementation.

Generic (:func:`generic_forward`, algebras in :mod:`constructions.algebras`):

* :func:`forward_rational` -- exact Fractions, nothing rounded, for models whose attention is
  rational (hardmax layers, softmax heads whose scores at each query are all equal); else
  :class:`~constructions.algebras.NotExact`.
* :func:`forward_exact` -- exact rationals; each exponential is a rigorous interval enclosure
  (:class:`Iv`), so the output of a rational model is enclosed rigorously.  For hardmax layers and
  for softmax heads whose scores at a query are all equal (zero-score heads) nothing is rounded
  and the intervals are points.
* :func:`forward_sympy` -- sympy expressions, every exponential kept symbolic (``exp(...)``).
* :func:`forward_z3` -- Z3 terms.  Each exponential is a fresh positive real: enclosed in
  ``[lo, hi]`` when its score is a constant, linked to a variable score by sound tangent and
  chord cuts otherwise (see :class:`Z3Algebra`).

All share the combinatorics (masking, prompt placement, hardmax ties) by construction and differ
only in how exponentials and ReLU are represented.

Torch: :func:`forward_torch` -- float64, batched, differentiable in the prompt and in optional
additive weight deltas (LoRA updates ``B A``), with the weights' tensors reusable across calls
(:func:`torch_weights`).

Sequences are arrays of shape ``(m, d)`` (tokens as rows); outputs are at the input positions
only.  :func:`mlp_exact` and :func:`mlp_float` evaluate one layer's MLP block on one token.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Optional, Sequence

import numpy as np

from .algebras import Algebra, IntervalAlgebra, NotExact, RationalAlgebra, SympyAlgebra, Z3Algebra
from .arrays import IntMatrix, as_float, as_fraction
from .intervals import EXP_LIMIT, Iv, exp_enclosure
from .model import Layer, Model

__all__ = [
    "generic_forward", "forward_rational", "forward_exact", "forward_sympy", "forward_z3",
    "forward_torch", "torch_weights", "mlp_exact", "mlp_float", "attention_scores_exact",
    # the algebras and intervals the encodings use (defined in constructions.algebras / .intervals)
    "Algebra", "NotExact", "Z3Algebra", "Iv", "exp_enclosure", "EXP_LIMIT",
]


# --------------------------------------------------------------------------- generic forward

def _sum(terms: list):
    acc = None
    for t in terms:
        acc = t if acc is None else acc + t
    return acc


def _matvec(A: np.ndarray, x: Sequence, alg: Algebra) -> list:
    """A x with the rational matrix A as constants (zero entries skipped)."""
    out = []
    for row in A:
        acc = _sum([xv * alg.const(a) for a, xv in zip(row, x) if a != 0])
        out.append(acc if acc is not None else alg.const(Fraction(0)))
    return out


def _dot(u: list, v: list, alg: Algebra):
    acc = _sum([a * b for a, b in zip(u, v)])
    return acc if acc is not None else alg.const(Fraction(0))


def _exact_heads(layer: Layer) -> list[tuple]:
    return [tuple(as_fraction(w) for w in (h.W_q, h.W_k, h.W_v, h.W_o)) for h in layer.heads]


def _attention_rows(layer: Layer, seq: list[list], alg: Algebra, causal: bool) -> list[list]:
    """``z_a = s_a + sum_j W_o^j sum_b w_ab^j W_v^j s_b`` at every position a (keys b <= a when
    causal), heads in order, position by position."""
    proj = [([_matvec(Wq, t, alg) for t in seq], [_matvec(Wk, t, alg) for t in seq],
             [_matvec(Wv, t, alg) for t in seq], Wo) for Wq, Wk, Wv, Wo in _exact_heads(layer)]
    out = []
    for a in range(len(seq)):
        z = list(seq[a])
        keys = range(a + 1) if causal else range(len(seq))
        for q, k, v, Wo in proj:
            scores = [_dot(k[b], q[a], alg) for b in keys]
            w = alg.hardmax_weights(scores) if layer.kind == "hardmax" else alg.softmax_weights(scores)
            mix = [_sum([wb * v[b][c] for wb, b in zip(w, keys)]) for c in range(len(v[0]))]
            z = [zi + ai for zi, ai in zip(z, _matvec(Wo, mix, alg))]
        out.append(z)
    return out


def _mlp_rows(layer: Layer, Z: list[list], alg: Algebra) -> tuple[list[list], list[list]]:
    """``(MLP(z), relu(W_1 z + b_1))`` for every row z of Z."""
    W1, b1, W2, b2 = (as_fraction(a) for a in (layer.W_1, layer.b_1, layer.W_2, layer.b_2))
    outs, hids = [], []
    for z in Z:
        hid = [alg.relu(p + alg.const(b)) for p, b in zip(_matvec(W1, z, alg), b1)]
        outs.append([zi + pi + alg.const(b) for zi, pi, b in zip(z, _matvec(W2, hid, alg), b2)])
        hids.append(hid)
    return outs, hids


def _is_number(v) -> bool:
    return isinstance(v, (Fraction, float, int))


def generic_forward(model: Model, X: np.ndarray, prompt: Optional[Sequence], alg: Algebra,
                    layers: Optional[Sequence[Layer]] = None, trace: Optional[list] = None) -> list[list]:
    """Run the model on ``[P, X]`` in the algebra ``alg``; returns the rows at input positions.

    ``prompt`` rows may hold numbers (made constants) or the algebra's own values (variables).
    ``layers`` replaces the model's layers; ``trace``, when a list, receives per layer the pair
    (pre-MLP rows, post-ReLU features), both at the input positions."""
    seq = [[alg.const(Fraction(v)) if _is_number(v) else v for v in p]
           for p in (prompt if prompt is not None and len(prompt) else [])]
    m_p = len(seq)
    seq += [[alg.const(v) for v in x] for x in as_fraction(np.asarray(X))]
    for layer in (layers if layers is not None else model.layers):
        Z = _attention_rows(layer, seq, alg, model.causal)
        seq, H = _mlp_rows(layer, Z, alg)
        if trace is not None:
            trace.append((Z[m_p:], H[m_p:]))
    return seq[m_p:]


def _object_array(rows: list, width: int) -> np.ndarray:
    out = np.empty((len(rows), width), dtype=object)
    for i, r in enumerate(rows):
        out[i, :] = r
    return out


def forward_rational(model: Model, X: np.ndarray, prompt: Optional[np.ndarray] = None,
                     return_features: bool = False):
    """Exact forward pass in Fractions, nothing rounded, for models whose attention is rational:
    hardmax layers, or softmax heads whose scores at each query are all equal.

    Returns the ``(m, d)`` object array of outputs at the input positions (with
    ``return_features`` also the last layer's pre-MLP rows and post-ReLU features, both at the
    input positions).  Raises :class:`NotExact` otherwise."""
    trace: list = []
    P = None if prompt is None else as_fraction(np.asarray(prompt))
    out = _object_array(generic_forward(model, X, P, RationalAlgebra(), trace=trace), model.d)
    if not return_features:
        return out
    Z, H = trace[-1]
    return out, _object_array(Z, model.d), _object_array(H, model.layers[-1].r)


def forward_exact(model: Model, X: np.ndarray, prompt: Optional[np.ndarray] = None) -> np.ndarray:
    """Exact/rigorous forward pass: an ``(m, d)`` object array of :class:`Iv` enclosures."""
    P = None if prompt is None else as_fraction(np.asarray(prompt))
    return _object_array(generic_forward(model, X, P, IntervalAlgebra()), model.d)


def forward_sympy(model: Model, X: np.ndarray, prompt: Optional[np.ndarray] = None):
    """Exact symbolic forward pass (sympy ``Matrix`` of shape (m, d)); exponentials symbolic.
    ``prompt`` may hold numbers or sympy expressions."""
    import sympy
    alg = SympyAlgebra()
    P = None
    if prompt is not None:
        P = [[v if isinstance(v, sympy.Basic) else alg.const(Fraction(v)) for v in row]
             for row in np.asarray(prompt, dtype=object)]
    return sympy.Matrix(generic_forward(model, X, P, alg))


def forward_z3(model: Model, X: np.ndarray, prompt=None, alg: Optional[Z3Algebra] = None):
    """Z3 terms for the outputs at input positions; returns ``(rows, algebra)``.

    ``prompt`` may hold numbers or Z3 terms (prompt tokens as variables)."""
    alg = alg or Z3Algebra()
    return generic_forward(model, X, prompt, alg), alg


def attention_scores_exact(model: Model, layer_index: int, head_index: int, query, keys) -> list[Fraction]:
    """Exact scores <W_k key, W_q query> for rational tokens."""
    h = model.layers[layer_index].heads[head_index]
    Wq, Wk = as_fraction(h.W_q), as_fraction(h.W_k)
    qv = Wq.dot(as_fraction(np.asarray(query)))
    return [Fraction(sum(a * b for a, b in zip(Wk.dot(as_fraction(np.asarray(k))), qv))) for k in keys]


# --------------------------------------------------------------------------- one MLP block

def mlp_exact(layer: Layer, z, scaled: Optional[tuple] = None) -> np.ndarray:
    """Exact MLP(z) = z + W_2 relu(W_1 z + b_1) + b_2 for a rational vector z (object array).

    Uses integer matrices (:class:`IntMatrix`; ``scaled`` = (W_1, W_2) as IntMatrix, reused
    across calls), so it is fast even for BERT-sized layers."""
    z = list(as_fraction(np.asarray(z)))
    W1, W2 = scaled or (IntMatrix(layer.W_1), IntMatrix(layer.W_2))
    pre = W1.mv(z)
    hid = [max(p + b, Fraction(0)) for p, b in zip(pre, as_fraction(layer.b_1))]
    post = W2.mv(hid)
    out = np.empty(len(z), dtype=object)
    out[:] = [a + b + c for a, b, c in zip(z, post, as_fraction(layer.b_2))]
    return out


def mlp_float(layer: Layer, z: np.ndarray) -> np.ndarray:
    """MLP(z) in float64 (inf/nan where huge weights or tokens overflow; no warnings)."""
    W1, b1, W2, b2 = (as_float(a) for a in (layer.W_1, layer.b_1, layer.W_2, layer.b_2))
    with np.errstate(all="ignore"):
        return z + W2 @ np.maximum(W1 @ z + b1, 0) + b2


# --------------------------------------------------------------------------- torch

def torch_weights(model: Model) -> list[tuple]:
    """The model's weights as float64 tensors, per layer ``(kind, [head dict], mlp dict)`` with
    keys ``W_q, W_k, W_v, W_o`` and ``W_1, b_1, W_2, b_2``; pass to :func:`forward_torch` to
    convert them once for many calls."""
    import torch

    def tensors(obj, names) -> dict:
        return {k: torch.as_tensor(as_float(getattr(obj, k)), dtype=torch.float64) for k in names}
    return [(layer.kind, [tensors(h, ("W_q", "W_k", "W_v", "W_o")) for h in layer.heads],
             tensors(layer, ("W_1", "b_1", "W_2", "b_2"))) for layer in model.layers]


def _torch_sequence(X, prompt):
    """``(S, m_p, squeeze)``: the batched float64 sequence [P, X] (B, m_p + m, d)."""
    import torch
    Xt = torch.as_tensor(np.asarray(as_float(np.asarray(X))) if not torch.is_tensor(X) else X, dtype=torch.float64)
    squeeze = Xt.dim() == 2
    if squeeze:
        Xt = Xt.unsqueeze(0)
    if prompt is None:
        return Xt, 0, squeeze
    Pt = prompt if torch.is_tensor(prompt) else torch.as_tensor(as_float(np.asarray(prompt)), dtype=torch.float64)
    Pt = Pt.to(torch.float64)
    if Pt.dim() == 2:
        Pt = Pt.unsqueeze(0).expand(Xt.shape[0], -1, -1)
    return torch.cat([Pt, Xt], dim=1), Pt.shape[1], squeeze


def _plus_deltas(W: dict, deltas: Optional[dict], li: int, hj: Optional[int]) -> dict:
    if not deltas:
        return W
    return {k: W[k] + deltas[(li, hj, k)] if (li, hj, k) in deltas else W[k] for k in W}


def _torch_head(S, W: dict, kind: str, mask):
    """One head's output ``W_o sum_b w_ab W_v s_b`` at every position, batched."""
    import torch
    q, k, v = S @ W["W_q"].T, S @ W["W_k"].T, S @ W["W_v"].T
    scores = q @ k.transpose(1, 2)  # [b, a(query), c(key)]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    if kind == "hardmax":
        mx = scores.max(dim=-1, keepdim=True).values
        ind = (scores == mx).to(torch.float64)
        w = ind / ind.sum(dim=-1, keepdim=True)
    else:
        w = torch.softmax(scores, dim=-1)
    return (w @ v) @ W["W_o"].T


def forward_torch(model: Model, X, prompt=None, deltas: Optional[dict] = None, weights: Optional[list] = None):
    """Float64 forward pass.  ``X``: (m, d) or (B, m, d); ``prompt``: (m_p, d) or (B, m_p, d),
    numpy or torch (gradients flow through a torch prompt).  Returns a tensor of the input rows.

    ``deltas`` maps ``(layer, head, name)`` (``head`` None for ``W_1, b_1, W_2, b_2``) to a tensor
    added to that weight (gradients flow into it: LoRA's ``B A``); ``weights`` is
    :func:`torch_weights` of the model, converted once by the caller."""
    import torch
    S, m_p, squeeze = _torch_sequence(X, prompt)
    n = S.shape[1]
    mask = torch.ones(n, n, dtype=torch.bool).tril() if model.causal else None
    for li, (kind, heads, mlp) in enumerate(weights if weights is not None else torch_weights(model)):
        att = torch.zeros_like(S)
        for hj, h in enumerate(heads):
            att = att + _torch_head(S, _plus_deltas(h, deltas, li, hj), kind, mask)
        Z = S + att
        M = _plus_deltas(mlp, deltas, li, None)
        S = Z + torch.relu(Z @ M["W_1"].T + M["b_1"]) @ M["W_2"].T + M["b_2"]
    out = S[:, m_p:]
    return out[0] if squeeze else out
