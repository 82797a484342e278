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
(:func:`torch_weights`).  Numpy: :func:`forward_float` -- float64, written independently of the
torch one (the tests hold them against each other).

Real layers (``ptverify-model/2``: biases, score scale, GELU, LayerNorm pre or post; see
:class:`~constructions.model.Layer`) are computed by every one of them; where an encoding cannot
represent a part exactly it says so (:class:`NotExact` for the rational one) or relaxes it soundly
(Z3).  ``at="attention"`` gives the last layer's attention-block output instead of its output.

Sequences are arrays of shape ``(m, d)`` (tokens as rows); outputs are at the input positions
only.  :func:`mlp_exact` and :func:`mlp_float` evaluate one layer's MLP block on one token.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional, Sequence

import numpy as np

from .algebras import Algebra, IntervalAlgebra, NotExact, RationalAlgebra, SympyAlgebra, Z3Algebra
from .arrays import IntMatrix, as_float, as_fraction
from .arrays import InputError
from .intervals import EXP_LIMIT, Iv, exp_enclosure
from .model import ACTIVATIONS, INV_SQRT_HEAD_SIZE, NORM_PLACEMENTS, TARGET_SITES, Layer, Model

__all__ = [
    "generic_forward", "forward_rational", "forward_exact", "forward_sympy", "forward_z3",
    "forward_torch", "torch_weights", "mlp_exact", "mlp_float", "attention_scores_exact",
    "forward_float", "layer_norm_float", "activation_float", "check_layer", "check_at",
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


def _affine(W: np.ndarray, b, x: Sequence, alg: Algebra) -> list:
    """W x (+ b when b is not None)."""
    out = _matvec(W, x, alg)
    return out if b is None else [o + alg.const(c) for o, c in zip(out, as_fraction(np.asarray(b)))]


def check_layer(layer: Layer, li: int = 0) -> None:
    """Refuse a layer whose real-layer fields (``ptverify-model/2``) hold values no forward pass
    knows, naming the field (:class:`InputError`); a layer built by the file reader passes."""
    f = f"layers[{li}]"
    if layer.activation not in ACTIVATIONS:
        raise InputError(f"{f}.mlp.activation", " or ".join(f"\"{a}\"" for a in ACTIVATIONS), repr(layer.activation)[:40])
    if layer.norm not in (None,) + NORM_PLACEMENTS:
        raise InputError(f"{f}.norm.placement", "\"pre\", \"post\" or no norm", repr(layer.norm)[:40])
    if layer.norm is not None and (layer.ln1 is None or layer.ln2 is None):
        raise InputError(f"{f}.norm", "both LayerNorms ln1 and ln2", "a missing one")
    sc = layer.scale
    try:
        ok = sc == INV_SQRT_HEAD_SIZE if isinstance(sc, str) else Fraction(sc) > 0
    except (TypeError, ValueError, OverflowError):  # not a number, nan, inf
        ok = False
    if not ok:
        raise InputError(f"{f}.attention.scale", f"a number > 0 or \"{INV_SQRT_HEAD_SIZE}\"", repr(sc)[:40])


def _score_scale(layer: Layer, s: int, alg: Algebra):
    """The head's score scale as an algebra value, or None when it is 1 (nothing multiplied)."""
    if isinstance(layer.scale, str):
        return alg.inv_sqrt(alg.const(Fraction(s)))
    sc = Fraction(layer.scale)
    return None if sc == 1 else alg.const(sc)


def _head_projections(layer: Layer, read: list[list], alg: Algebra) -> list[tuple]:
    """Per head ``(queries, keys, values, W_o, scale)`` of the rows ``read``."""
    out = []
    for h in layer.heads:
        Wq, Wk, Wv, Wo = (as_fraction(w) for w in (h.W_q, h.W_k, h.W_v, h.W_o))
        out.append(([_affine(Wq, h.b_q, t, alg) for t in read], [_affine(Wk, h.b_k, t, alg) for t in read],
                    [_affine(Wv, h.b_v, t, alg) for t in read], Wo, _score_scale(layer, h.s, alg)))
    return out


def _attention_rows(layer: Layer, seq: list[list], alg: Algebra, causal: bool,
                    read: Optional[list[list]] = None) -> list[list]:
    """``z_a = s_a + b_o + sum_j W_o^j sum_b w_ab^j (W_v^j r_b + b_v^j)`` at every position a
    (keys b <= a when causal), heads in order, position by position; the heads read the rows
    ``read`` (LN1 of ``seq`` for a pre-LN layer; ``seq`` itself by default), scores
    ``scale * (W_q r_a + b_q) . (W_k r_b + b_k)``."""
    proj = _head_projections(layer, seq if read is None else read, alg)
    b_o = None if layer.b_o is None else [alg.const(v) for v in as_fraction(np.asarray(layer.b_o))]
    out = []
    for a in range(len(seq)):
        z = list(seq[a])
        keys = range(a + 1) if causal else range(len(seq))
        for q, k, v, Wo, sc in proj:
            scores = [_dot(k[b], q[a], alg) for b in keys]
            if sc is not None:
                scores = [sc * x for x in scores]
            w = alg.hardmax_weights(scores) if layer.kind == "hardmax" else alg.softmax_weights(scores)
            mix = [_sum([wb * v[b][c] for wb, b in zip(w, keys)]) for c in range(len(v[0]))]
            z = [zi + ai for zi, ai in zip(z, _matvec(Wo, mix, alg))]
        if b_o is not None:
            z = [zi + bi for zi, bi in zip(z, b_o)]
        out.append(z)
    return out


def _layer_norm(ln, row: list, alg: Algebra) -> list:
    return alg.layer_norm(row, as_fraction(np.asarray(ln.gamma)), as_fraction(np.asarray(ln.beta)), Fraction(ln.eps))


def _mlp_rows(layer: Layer, Z: list[list], alg: Algebra) -> tuple[list[list], list[list]]:
    """``(MLP(z), act(W_1 z' + b_1))`` for every row z of Z (z' = LN2(z) for a pre-LN layer, else
    z; a post-LN layer's output is LN2 of the sum)."""
    W1, b1, W2, b2 = (as_fraction(a) for a in (layer.W_1, layer.b_1, layer.W_2, layer.b_2))
    outs, hids = [], []
    for z in Z:
        x = _layer_norm(layer.ln2, z, alg) if layer.norm == "pre" else z
        if layer.activation == "relu":
            hid = [alg.relu(p + alg.const(b)) for p, b in zip(_matvec(W1, x, alg), b1)]
        else:
            hid = [alg.activation(p + alg.const(b), layer.activation) for p, b in zip(_matvec(W1, x, alg), b1)]
        out = [zi + pi + alg.const(b) for zi, pi, b in zip(z, _matvec(W2, hid, alg), b2)]
        outs.append(_layer_norm(layer.ln2, out, alg) if layer.norm == "post" else out)
        hids.append(hid)
    return outs, hids


def _layer_rows(layer: Layer, seq: list[list], alg: Algebra, causal: bool, attention_only: bool) -> tuple:
    """``(output rows, attention-block rows, activations)`` of one layer at every position; with
    ``attention_only`` the output rows are the attention block's (and no activations)."""
    read = [_layer_norm(layer.ln1, t, alg) for t in seq] if layer.norm == "pre" else None
    U = _attention_rows(layer, seq, alg, causal, read)
    Z = [_layer_norm(layer.ln1, u, alg) for u in U] if layer.norm == "post" else U
    if attention_only:
        return Z, Z, []
    out, H = _mlp_rows(layer, Z, alg)
    return out, Z, H


def check_at(at: str) -> None:
    if at not in TARGET_SITES:
        raise InputError("at", " or ".join(f"\"{a}\"" for a in TARGET_SITES), repr(at)[:40])


def _is_number(v) -> bool:
    return isinstance(v, (Fraction, float, int))


def generic_forward(model: Model, X: np.ndarray, prompt: Optional[Sequence], alg: Algebra,
                    layers: Optional[Sequence[Layer]] = None, trace: Optional[list] = None,
                    at: str = "output") -> list[list]:
    """Run the model on ``[P, X]`` in the algebra ``alg``; returns the rows at input positions.

    ``prompt`` rows may hold numbers (made constants) or the algebra's own values (variables).
    ``layers`` replaces the model's layers; ``trace``, when a list, receives per layer the pair
    (pre-MLP rows, post-activation features), both at the input positions.  ``at="attention"``
    returns the last layer's attention-block output instead (post-LN: ``LN1(x + Att)``; pre-LN
    and no norm: the residual ``x + Att(...)``), earlier layers run whole."""
    check_at(at)
    layers = list(layers if layers is not None else model.layers)
    for li, layer in enumerate(layers):
        check_layer(layer, li)
    seq = [[alg.const(Fraction(v)) if _is_number(v) else v for v in p]
           for p in (prompt if prompt is not None and len(prompt) else [])]
    m_p = len(seq)
    seq += [[alg.const(v) for v in x] for x in as_fraction(np.asarray(X))]
    for li, layer in enumerate(layers):
        seq, Z, H = _layer_rows(layer, seq, alg, model.causal, at == "attention" and li == len(layers) - 1)
        if trace is not None:
            trace.append((Z[m_p:], H[m_p:]))
    return seq[m_p:]


def _object_array(rows: list, width: int) -> np.ndarray:
    out = np.empty((len(rows), width), dtype=object)
    for i, r in enumerate(rows):
        out[i, :] = r
    return out


def forward_rational(model: Model, X: np.ndarray, prompt: Optional[np.ndarray] = None,
                     return_features: bool = False, at: str = "output"):
    """Exact forward pass in Fractions, nothing rounded, for models whose attention is rational:
    hardmax layers, or softmax heads whose scores at each query are all equal.

    Returns the ``(m, d)`` object array of outputs at the input positions (with
    ``return_features`` also the last layer's pre-MLP rows and post-ReLU features, both at the
    input positions).  Raises :class:`NotExact` otherwise (also for LayerNorm, GELU and an
    irrational score scale of real layers, unless the values happen to be rational).  ``at``:
    see :func:`generic_forward`."""
    trace: list = []
    P = None if prompt is None else as_fraction(np.asarray(prompt))
    out = _object_array(generic_forward(model, X, P, RationalAlgebra(), trace=trace, at=at), model.d)
    if not return_features:
        return out
    Z, H = trace[-1]
    return out, _object_array(Z, model.d), _object_array(H, model.layers[-1].r)


def forward_exact(model: Model, X: np.ndarray, prompt: Optional[np.ndarray] = None, at: str = "output") -> np.ndarray:
    """Exact/rigorous forward pass: an ``(m, d)`` object array of :class:`Iv` enclosures (real
    layers too: LayerNorm's sqrt, GELU's erf/tanh and softmax's exp enclosed rigorously).
    ``at``: see :func:`generic_forward`."""
    P = None if prompt is None else as_fraction(np.asarray(prompt))
    return _object_array(generic_forward(model, X, P, IntervalAlgebra(), at=at), model.d)


def forward_sympy(model: Model, X: np.ndarray, prompt: Optional[np.ndarray] = None, at: str = "output"):
    """Exact symbolic forward pass (sympy ``Matrix`` of shape (m, d)); exponentials symbolic.
    ``prompt`` may hold numbers or sympy expressions."""
    import sympy
    alg = SympyAlgebra()
    P = None
    if prompt is not None:
        P = [[v if isinstance(v, sympy.Basic) else alg.const(Fraction(v)) for v in row]
             for row in np.asarray(prompt, dtype=object)]
    return sympy.Matrix(generic_forward(model, X, P, alg, at=at))


def forward_z3(model: Model, X: np.ndarray, prompt=None, alg: Optional[Z3Algebra] = None, at: str = "output"):
    """Z3 terms for the outputs at input positions; returns ``(rows, algebra)``.

    ``prompt`` may hold numbers or Z3 terms (prompt tokens as variables).  Real layers: biases
    and scales are exact; ``1/sqrt`` (LayerNorm, scale 1/sqrt(head size)) is a fresh ``k > 0``
    with ``k*k*x = 1`` (exact, nonlinear); GELU is a fresh variable within a proved distance
    below ReLU (a sound relaxation: ``unsat`` proves, ``sat`` is no witness)."""
    alg = alg or Z3Algebra()
    return generic_forward(model, X, prompt, alg, at=at), alg


def attention_scores_exact(model: Model, layer_index: int, head_index: int, query, keys) -> list[Fraction]:
    """Exact scores ``scale * <W_k key + b_k, W_q query + b_q>`` for rational tokens (the rows
    the head reads).  A scale 1/sqrt(head size) that is not rational raises :class:`NotExact`;
    a pre-LN layer raises :class:`InputError` (its heads read LN1 of the tokens: irrational)."""
    layer = model.layers[layer_index]
    if layer.norm == "pre":
        raise InputError(f"layers[{layer_index}].norm.placement", "no pre-LN for exact scores "
                         "(the heads read LN1 of the tokens)", "\"pre\"")
    h = layer.heads[head_index]
    alg = RationalAlgebra()
    sc = _score_scale(layer, h.s, alg)
    Wq, Wk = as_fraction(h.W_q), as_fraction(h.W_k)
    qv = _affine(Wq, h.b_q, list(as_fraction(np.asarray(query))), alg)
    out = [Fraction(sum(a * b for a, b in zip(_affine(Wk, h.b_k, list(as_fraction(np.asarray(k))), alg), qv)))
           for k in keys]
    return out if sc is None else [sc * x for x in out]


# --------------------------------------------------------------------------- one MLP block

def mlp_exact(layer: Layer, z, scaled: Optional[tuple] = None) -> np.ndarray:
    """Exact MLP(z) = z + W_2 relu(W_1 z + b_1) + b_2 for a rational vector z (object array).

    Uses integer matrices (:class:`IntMatrix`; ``scaled`` = (W_1, W_2) as IntMatrix, reused
    across calls), so it is fast even for BERT-sized layers.  A real layer's MLP block with GELU
    or a LayerNorm is not rational: :class:`InputError` naming the field (attention biases and
    scale do not enter the MLP block)."""
    if layer.activation != "relu":
        raise InputError("mlp.activation", "relu for the exact MLP block (GELU is not rational; use "
                         "forward_exact)", repr(layer.activation)[:40])
    if layer.norm is not None:
        raise InputError("norm", "no LayerNorm for the exact MLP block (its 1/sqrt is not rational; use "
                         "forward_exact)", repr(layer.norm)[:40])
    z = list(as_fraction(np.asarray(z)))
    W1, W2 = scaled or (IntMatrix(layer.W_1), IntMatrix(layer.W_2))
    pre = W1.mv(z)
    hid = [max(p + b, Fraction(0)) for p, b in zip(pre, as_fraction(layer.b_1))]
    post = W2.mv(hid)
    out = np.empty(len(z), dtype=object)
    out[:] = [a + b + c for a, b, c in zip(z, post, as_fraction(layer.b_2))]
    return out


def mlp_float(layer: Layer, z: np.ndarray) -> np.ndarray:
    """MLP(z) in float64 (inf/nan where huge weights or tokens overflow; no warnings).  ``z`` is
    one token (d,) or tokens as rows (m, d).  Real layers: the activation, and LN2 before
    (pre-LN) or after (post-LN) the block."""
    W1, b1, W2, b2 = (as_float(a) for a in (layer.W_1, layer.b_1, layer.W_2, layer.b_2))
    with np.errstate(all="ignore"):
        if layer.is_plain:
            return z + W2 @ np.maximum(W1 @ z + b1, 0) + b2 if np.ndim(z) == 1 else (
                z + np.maximum(z @ W1.T + b1, 0) @ W2.T + b2)
        x = layer_norm_float(layer.ln2, z) if layer.norm == "pre" else z
        y = z + activation_float(x @ W1.T + b1, layer.activation) @ W2.T + b2
        return layer_norm_float(layer.ln2, y) if layer.norm == "post" else y


def layer_norm_float(ln, U: np.ndarray) -> np.ndarray:
    """LayerNorm of each row (or of the one vector) of ``U`` in float64."""
    U = np.asarray(U, dtype=np.float64)
    c = U - U.mean(axis=-1, keepdims=True)
    var = (c * c).mean(axis=-1, keepdims=True)
    return as_float(np.asarray(ln.gamma)) * c / np.sqrt(var + float(ln.eps)) + as_float(np.asarray(ln.beta))


_erf = np.vectorize(math.erf, otypes=[np.float64])


def activation_float(x: np.ndarray, name: str) -> np.ndarray:
    """relu, gelu (erf form, ``math.erf``) or gelu_tanh elementwise in float64."""
    if name == "relu":
        return np.maximum(x, 0)
    if name == "gelu":
        return 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    if name == "gelu_tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    raise InputError("mlp.activation", " or ".join(f"\"{a}\"" for a in ACTIVATIONS), repr(name)[:40])


def _float_scale(layer: Layer, s: int) -> float:
    return 1 / math.sqrt(s) if isinstance(layer.scale, str) else float(layer.scale)


def _attention_float(layer: Layer, S: np.ndarray, causal: bool) -> np.ndarray:
    """The attention block's output at every row of the sequence S (m, d), float64."""
    R = layer_norm_float(layer.ln1, S) if layer.norm == "pre" else S
    n = S.shape[0]
    U = S.copy() if layer.b_o is None else S + as_float(np.asarray(layer.b_o))
    for h in layer.heads:
        q, k, v = (R @ as_float(W).T + (0 if b is None else as_float(np.asarray(b)))
                   for W, b in ((h.W_q, h.b_q), (h.W_k, h.b_k), (h.W_v, h.b_v)))
        sc = _float_scale(layer, h.s) * (q @ k.T)
        if causal:
            sc = np.where(np.tril(np.ones((n, n), dtype=bool)), sc, -np.inf)
        mx = sc.max(axis=1, keepdims=True)
        if layer.kind == "hardmax":
            w = (sc == mx).astype(np.float64)
        else:
            w = np.exp(sc - mx)
        U = U + ((w / w.sum(axis=1, keepdims=True)) @ v) @ as_float(h.W_o).T
    return layer_norm_float(layer.ln1, U) if layer.norm == "post" else U


def forward_float(model: Model, X, prompt=None, at: str = "output") -> np.ndarray:
    """Float64 numpy forward pass of ``[P, X]`` (plain and real layers), rows at the input
    positions; ``at="attention"``: the last layer's attention-block output (see
    :func:`generic_forward`).  Independent of :func:`forward_torch` (used to cross-check it)."""
    check_at(at)
    X = as_float(np.asarray(X))
    m_p = 0 if prompt is None else len(prompt)
    S = X if not m_p else np.vstack([as_float(np.asarray(prompt)), X])
    with np.errstate(all="ignore"):
        for li, layer in enumerate(model.layers):
            check_layer(layer, li)
            S = _attention_float(layer, S, model.causal)
            if at == "attention" and li == len(model.layers) - 1:
                break
            S = mlp_float(layer, S)
    return S[m_p:]


# --------------------------------------------------------------------------- torch

def torch_weights(model: Model) -> list[tuple]:
    """The model's weights as float64 tensors, per layer ``(kind, [head dict], mlp dict, real)``
    with keys ``W_q, W_k, W_v, W_o`` (and ``b_q, b_k, b_v`` when present) and ``W_1, b_1, W_2,
    b_2``; ``real`` is None for a plain layer, else a dict of the real-layer fields (``scale`` per
    head as floats, ``activation``, ``norm``, ``ln1``/``ln2`` dicts of ``gamma, beta, eps``,
    ``b_o``).  Pass to :func:`forward_torch` to convert them once for many calls."""
    import torch

    def tensors(obj, names) -> dict:
        return {k: torch.as_tensor(as_float(np.asarray(getattr(obj, k))), dtype=torch.float64)
                for k in names if getattr(obj, k) is not None}
    out = []
    for li, layer in enumerate(model.layers):
        check_layer(layer, li)
        real = None
        if not layer.is_plain:
            real = {"scale": [_float_scale(layer, h.s) for h in layer.heads], "activation": layer.activation,
                    "norm": layer.norm, "b_o": tensors(layer, ("b_o",)).get("b_o")}
            for name in ("ln1", "ln2"):
                ln = getattr(layer, name)
                real[name] = None if ln is None else dict(tensors(ln, ("gamma", "beta")), eps=float(ln.eps))
        out.append((layer.kind, [tensors(h, ("W_q", "W_k", "W_v", "W_o", "b_q", "b_k", "b_v")) for h in layer.heads],
                    tensors(layer, ("W_1", "b_1", "W_2", "b_2")), real))
    return out


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


def _torch_head(S, W: dict, kind: str, mask, scale: Optional[float] = None):
    """One head's output ``W_o sum_b w_ab (W_v s_b + b_v)`` at every position, batched; scores
    ``scale * (W_q s_a + b_q) . (W_k s_b + b_k)`` (biases and scale only when given)."""
    import torch
    q, k, v = S @ W["W_q"].T, S @ W["W_k"].T, S @ W["W_v"].T
    if "b_q" in W:
        q = q + W["b_q"]
    if "b_k" in W:
        k = k + W["b_k"]
    if "b_v" in W:
        v = v + W["b_v"]
    scores = q @ k.transpose(1, 2)  # [b, a(query), c(key)]
    if scale is not None and scale != 1:
        scores = scores * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    if kind == "hardmax":
        mx = scores.max(dim=-1, keepdim=True).values
        ind = (scores == mx).to(torch.float64)
        w = ind / ind.sum(dim=-1, keepdim=True)
    else:
        w = torch.softmax(scores, dim=-1)
    return (w @ v) @ W["W_o"].T


def _torch_layer_norm(U, ln: dict):
    """``gamma * (u - mean) / sqrt(var + eps) + beta`` over the last axis (biased variance)."""
    c = U - U.mean(dim=-1, keepdim=True)
    return ln["gamma"] * c / ((c * c).mean(dim=-1, keepdim=True) + ln["eps"]).sqrt() + ln["beta"]


def _torch_activation(x, name: str):
    import torch
    if name == "relu":
        return torch.relu(x)
    if name == "gelu":
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _torch_real_layer(S, heads: list, M: dict, kind: str, mask, real: dict, deltas, li: int,
                      attention_only: bool):
    """One real layer (``real`` from :func:`torch_weights`) on the batched sequence S."""
    import torch
    R = _torch_layer_norm(S, real["ln1"]) if real["norm"] == "pre" else S
    att = torch.zeros_like(S) if real["b_o"] is None else real["b_o"].expand_as(S)
    for hj, h in enumerate(heads):
        att = att + _torch_head(R, _plus_deltas(h, deltas, li, hj), kind, mask, real["scale"][hj])
    Z = S + att
    if real["norm"] == "post":
        Z = _torch_layer_norm(Z, real["ln1"])
    if attention_only:
        return Z
    x = _torch_layer_norm(Z, real["ln2"]) if real["norm"] == "pre" else Z
    Y = Z + _torch_activation(x @ M["W_1"].T + M["b_1"], real["activation"]) @ M["W_2"].T + M["b_2"]
    return _torch_layer_norm(Y, real["ln2"]) if real["norm"] == "post" else Y


def forward_torch(model: Model, X, prompt=None, deltas: Optional[dict] = None, weights: Optional[list] = None,
                  at: str = "output"):
    """Float64 forward pass.  ``X``: (m, d) or (B, m, d); ``prompt``: (m_p, d) or (B, m_p, d),
    numpy or torch (gradients flow through a torch prompt).  Returns a tensor of the input rows.

    ``deltas`` maps ``(layer, head, name)`` (``head`` None for ``W_1, b_1, W_2, b_2``) to a tensor
    added to that weight (gradients flow into it: LoRA's ``B A``); ``weights`` is
    :func:`torch_weights` of the model, converted once by the caller.  Real layers
    (``ptverify-model/2``) are computed with their biases, scale, GELU and LayerNorms;
    ``at="attention"``: the last layer's attention-block output (see :func:`generic_forward`)."""
    import torch
    check_at(at)
    S, m_p, squeeze = _torch_sequence(X, prompt)
    n = S.shape[1]
    mask = torch.ones(n, n, dtype=torch.bool).tril() if model.causal else None
    ws = weights if weights is not None else torch_weights(model)
    for li, (kind, heads, mlp, real) in enumerate(ws):
        last = at == "attention" and li == len(ws) - 1
        M = _plus_deltas(mlp, deltas, li, None)
        if real is not None:
            S = _torch_real_layer(S, heads, M, kind, mask, real, deltas, li, last)
            continue
        att = torch.zeros_like(S)
        for hj, h in enumerate(heads):
            att = att + _torch_head(S, _plus_deltas(h, deltas, li, hj), kind, mask)
        Z = S + att
        if last:
            S = Z
            break
        S = Z + torch.relu(Z @ M["W_1"].T + M["b_1"]) @ M["W_2"].T + M["b_2"]
    out = S[:, m_p:]
    return out[0] if squeeze else out
