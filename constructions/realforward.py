"""Rigorous forward passes of real (``ptverify-model/2``) layers, and the sound replay of a
witness prompt within a tolerance.

* :func:`forward_interval` -- an ``(m, d)`` object array of :class:`~constructions.intervals.Iv`
  enclosing ``g([P, X])`` at the input positions (or the last layer's attention block,
  ``at="attention"``).  Two backends compute the same mathematics:

  - ``"rational"``: :func:`constructions.forward.forward_exact` -- exact rationals, every
    ``exp``, ``sqrt``, ``erf`` and ``tanh`` enclosed by :mod:`constructions.intervals` (pure
    Python; slow for d in the hundreds);
  - ``"intmatrix"``: the same enclosures, the matrix products on integer matrices (exactly for
    point vectors, by midpoint and radius for interval vectors): pure Python, far faster than
    ``"rational"`` for large layers; softmax layers only;
  - ``"arb"``: ball arithmetic of python-flint's Arb (rigorous error bounds on every operation,
    including ``exp``, ``rsqrt``, ``erf``, ``tanh``); a BERT-size layer takes seconds.  Needs the
    ``exact`` extra (python-flint); softmax layers only (hardmax ties are not decidable on balls).

  ``"auto"`` takes ``"arb"`` when python-flint is importable and every layer is softmax, else
  ``"intmatrix"`` for softmax models, else ``"rational"``.
* :func:`replay_bound` -- a rigorous upper bound on ``max |g - y|`` over the target entries,
  and :func:`replay_within` -- whether that bound is at most the tolerance.

The enclosures' argument is in proofs/real_layers_forward.md.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Optional, Sequence

import numpy as np

from .algebras import IntervalAlgebra
from .arrays import InputError, IntMatrix, as_fraction
from .forward import check_at, check_layer, forward_exact
from .intervals import GELU_TANH_KAPPA, Iv, round_down, round_up
from .model import Layer, Model

__all__ = ["forward_interval", "forward_arb", "forward_intmatrix", "replay_bound", "replay_within", "have_arb",
           "BACKENDS"]

BACKENDS = ("auto", "arb", "intmatrix", "rational")


def have_arb() -> bool:
    """True when python-flint (Arb ball arithmetic) is importable."""
    try:
        import flint  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- Arb backend

def _arb(x):
    """An exact Arb number for a float or a Fraction (a ball around it when not dyadic)."""
    from flint import arb, fmpq
    if isinstance(x, Fraction):
        return arb(fmpq(x.numerator, x.denominator))
    return arb(float(x))


def _arb_rows(a: np.ndarray):
    """An ``arb_mat`` of a 2-D float or Fraction array."""
    from flint import arb_mat
    a = np.asarray(a)
    if a.dtype != object:
        return arb_mat(np.asarray(a, dtype=np.float64).tolist())
    return arb_mat([[_arb(v) for v in row] for row in a])


def _affine_map(W: np.ndarray, b) -> object:
    """``[W^T; b]`` as an ``arb_mat`` of shape (in + 1, out): rows of ``[x, 1]`` times it give
    ``W x + b`` (a zero last row when there is no bias)."""
    W = np.asarray(W)
    bias = np.zeros(W.shape[0]) if b is None else np.asarray(b)
    if W.dtype == object or bias.dtype == object:
        return _arb_rows(np.vstack([as_fraction(W).T, as_fraction(bias)[None, :]]))
    return _arb_rows(np.vstack([W.T, bias[None, :]]).astype(np.float64))


def _augment(rows: list[list]):
    """``[rows | 1]`` as an ``arb_mat``."""
    from flint import arb, arb_mat
    return arb_mat([list(r) + [arb(1)] for r in rows])


def _lists(M) -> list[list]:
    return [[M[i, j] for j in range(M.ncols())] for i in range(M.nrows())]


def _arb_layer_norm(ln, row: list) -> list:
    d = len(row)
    mean = sum(row[1:], row[0]) / d
    c = [v - mean for v in row]
    var = sum((v * v for v in c[1:]), c[0] * c[0]) / d
    k = (var + _arb(Fraction(ln.eps) if isinstance(ln.eps, Fraction) else ln.eps)).rsqrt()
    g = [_arb(v) for v in np.asarray(ln.gamma).tolist()]
    b = [_arb(v) for v in np.asarray(ln.beta).tolist()]
    return [ci * k * gi + bi for ci, gi, bi in zip(c, g, b)]


def _arb_activation(x, name: str):
    from flint import arb, fmpq
    if name == "relu":
        return x.max(arb(0))
    if name == "gelu":
        return x * (1 + (x * arb(2).rsqrt()).erf()) / 2
    c = (arb(2) / arb.pi()).sqrt()
    kappa = arb(fmpq(GELU_TANH_KAPPA.numerator, GELU_TANH_KAPPA.denominator))
    return x * (1 + (c * (x + kappa * x * x * x)).tanh()) / 2


def _arb_scale(layer: Layer, s: int):
    from flint import arb
    if isinstance(layer.scale, str):
        return arb(s).rsqrt()
    return _arb(layer.scale if isinstance(layer.scale, Fraction) else float(layer.scale))


def _arb_softmax_row(scores: list) -> list:
    """``exp(s_b - c) / sum exp(s_c - c)`` with c an exact shift (the largest midpoint)."""
    from flint import arb
    shift = arb(max(s.mid() for s in scores))
    e = [(s - shift).exp() for s in scores]
    total = sum(e[1:], e[0])
    return [x / total for x in e]


def _arb_attention(layer: Layer, seq: list[list], causal: bool) -> list[list]:
    """The attention block's output ``x + b_o + sum_j W_o^j ...`` (before LN1 for post-LN)."""
    from flint import arb, arb_mat
    read = [_arb_layer_norm(layer.ln1, r) for r in seq] if layer.norm == "pre" else seq
    A = _augment(read)
    n = len(seq)
    out = [list(r) for r in seq]
    if layer.b_o is not None:
        b_o = [_arb(v) for v in np.asarray(layer.b_o).tolist()]
        out = [[x + b for x, b in zip(r, b_o)] for r in out]
    for h in layer.heads:
        Q, K, V = (A * _affine_map(W, b) for W, b in ((h.W_q, h.b_q), (h.W_k, h.b_k), (h.W_v, h.b_v)))
        S = _lists(Q * K.transpose())
        sc = _arb_scale(layer, h.s)
        w = []
        for a in range(n):
            keys = range(a + 1) if causal else range(n)
            row = _arb_softmax_row([S[a][b] * sc for b in keys])
            w.append(row + [arb(0)] * (n - len(row)))
        H = _lists(arb_mat(w) * V * _arb_rows(np.asarray(h.W_o).T))
        out = [[x + y for x, y in zip(r, hr)] for r, hr in zip(out, H)]
    return out


def _arb_layer(layer: Layer, seq: list[list], causal: bool, attention_only: bool) -> list[list]:
    U = _arb_attention(layer, seq, causal)
    Z = [_arb_layer_norm(layer.ln1, u) for u in U] if layer.norm == "post" else U
    if attention_only:
        return Z
    x = [_arb_layer_norm(layer.ln2, z) for z in Z] if layer.norm == "pre" else Z
    Hd = [[_arb_activation(v, layer.activation) for v in r] for r in _lists(_augment(x) * _affine_map(layer.W_1, layer.b_1))]
    M = _lists(_augment(Hd) * _affine_map(layer.W_2, layer.b_2))
    Y = [[zi + mi for zi, mi in zip(z, m)] for z, m in zip(Z, M)]
    return [_arb_layer_norm(layer.ln2, y) for y in Y] if layer.norm == "post" else Y


def _iv_of_arb(x) -> Iv:
    if not x.is_finite():
        raise ArithmeticError("an Arb enclosure is not finite (overflow or a nonpositive LayerNorm variance)")
    (lm, le), (hm, he) = x.lower().man_exp(), x.upper().man_exp()
    return Iv(Fraction(int(lm)) * Fraction(2) ** int(le), Fraction(int(hm)) * Fraction(2) ** int(he))


def forward_arb(model: Model, X, prompt=None, at: str = "output", prec: int = 128) -> np.ndarray:
    """The ``"arb"`` backend of :func:`forward_interval` (python-flint, Arb balls of ``prec``
    bits); softmax layers only."""
    from flint import ctx
    check_at(at)
    for li, layer in enumerate(model.layers):
        check_layer(layer, li)
        if layer.kind != "softmax":
            raise InputError(f"layers[{li}].attention.kind", "softmax for the arb backend (use backend=\"rational\")",
                             repr(layer.kind))
    rows = ([] if prompt is None else list(np.asarray(prompt))) + list(np.asarray(X))
    m_p = 0 if prompt is None else len(prompt)
    old = ctx.prec
    ctx.prec = prec
    try:
        seq = [[_arb(v) for v in (r.tolist() if np.asarray(r).dtype != object else list(r))] for r in rows]
        for li, layer in enumerate(model.layers):
            seq = _arb_layer(layer, seq, model.causal, at == "attention" and li == len(model.layers) - 1)
        out = np.empty((len(rows) - m_p, model.d), dtype=object)
        for i, r in enumerate(seq[m_p:]):
            out[i, :] = [_iv_of_arb(v) for v in r]
        return out
    finally:
        ctx.prec = old


# --------------------------------------------------------------------------- integer-matrix backend

class _IntAffine:
    """``x -> W x + b`` on interval vectors without Arb: a point vector exactly (integer matrix
    products, :class:`IntMatrix`); an interval vector by midpoint and radius, ``W c +- |W| r``
    with ``c`` a grid point near the midpoint and ``r = max(hi - c, c - lo)`` (exact)."""

    def __init__(self, W, b=None):
        W = np.asarray(W)
        self.W, self.A = IntMatrix(W), IntMatrix(np.abs(W))
        self.b = None if b is None else list(as_fraction(np.asarray(b)))

    def __call__(self, x: list) -> list:
        if all(v.is_point for v in x):
            out = [Iv(v) for v in self.W.mv([v.lo for v in x])]
        else:
            c = [round_down(v.mid) for v in x]
            r = [max(v.hi - ci, ci - v.lo) for v, ci in zip(x, c)]
            out = [Iv(round_down(m - e), round_up(m + e)) for m, e in zip(self.W.mv(c), self.A.mv(r))]
        return out if self.b is None else [o + bi for o, bi in zip(out, self.b)]


def _int_attention(layer: Layer, seq: list, causal: bool, alg) -> list:
    read = [alg.layer_norm(t, *_ln_args(layer.ln1)) for t in seq] if layer.norm == "pre" else seq
    out = [list(t) for t in seq]
    for h in layer.heads:
        q, k, v = ([f(t) for t in read] for f in (_IntAffine(h.W_q, h.b_q), _IntAffine(h.W_k, h.b_k),
                                                   _IntAffine(h.W_v, h.b_v)))
        sc = alg.inv_sqrt(Iv(h.s)) if isinstance(layer.scale, str) else Iv(Fraction(layer.scale))
        Wo = _IntAffine(h.W_o)
        for a in range(len(seq)):
            keys = range(a + 1) if causal else range(len(seq))
            w = alg.softmax_weights([sum((x * y for x, y in zip(q[a], k[b])), Iv(0)) * sc for b in keys])
            mix = [sum((wb * v[b][c] for wb, b in zip(w, keys)), Iv(0)) for c in range(h.s)]
            out[a] = [x + y for x, y in zip(out[a], Wo(mix))]
    if layer.b_o is not None:
        out = [[x + b for x, b in zip(t, as_fraction(np.asarray(layer.b_o)))] for t in out]
    return [alg.layer_norm(u, *_ln_args(layer.ln1)) for u in out] if layer.norm == "post" else out


def _ln_args(ln) -> tuple:
    return as_fraction(np.asarray(ln.gamma)), as_fraction(np.asarray(ln.beta)), Fraction(ln.eps)


def _int_layer(layer: Layer, seq: list, causal: bool, attention_only: bool) -> list:
    alg = IntervalAlgebra()
    Z = _int_attention(layer, seq, causal, alg)
    if attention_only:
        return Z
    up, down = _IntAffine(layer.W_1, layer.b_1), _IntAffine(layer.W_2, layer.b_2)
    out = []
    for z in Z:
        x = alg.layer_norm(z, *_ln_args(layer.ln2)) if layer.norm == "pre" else z
        y = [zi + mi for zi, mi in zip(z, down([alg.activation(p, layer.activation) for p in up(x)]))]
        out.append(alg.layer_norm(y, *_ln_args(layer.ln2)) if layer.norm == "post" else y)
    return out


def forward_intmatrix(model: Model, X, prompt=None, at: str = "output") -> np.ndarray:
    """The ``"intmatrix"`` backend of :func:`forward_interval`: exact rationals and
    :mod:`constructions.intervals` enclosures like ``"rational"``, with the matrix products done
    on integer matrices (midpoint and radius for interval vectors); softmax layers only."""
    check_at(at)
    for li, layer in enumerate(model.layers):
        check_layer(layer, li)
        if layer.kind != "softmax":
            raise InputError(f"layers[{li}].attention.kind", "softmax for the intmatrix backend "
                             "(use backend=\"rational\")", repr(layer.kind))
    m_p = 0 if prompt is None else len(prompt)
    rows = ([] if prompt is None else list(as_fraction(np.asarray(prompt)))) + list(as_fraction(np.asarray(X)))
    seq = [[Iv(v) for v in r] for r in rows]
    for li, layer in enumerate(model.layers):
        seq = _int_layer(layer, seq, model.causal, at == "attention" and li == len(model.layers) - 1)
    out = np.empty((len(rows) - m_p, model.d), dtype=object)
    for i, r in enumerate(seq[m_p:]):
        out[i, :] = r
    return out


# --------------------------------------------------------------------------- the public entry

def forward_interval(model: Model, X, prompt=None, at: str = "output", backend: str = "auto") -> np.ndarray:
    """Rigorous enclosure of the forward pass: an ``(m, d)`` object array of :class:`Iv` (see the
    module docstring for the backends)."""
    if backend not in BACKENDS:
        raise InputError("backend", " or ".join(f"\"{b}\"" for b in BACKENDS), repr(backend)[:40])
    if backend == "auto":
        softmax = all(layer.kind == "softmax" for layer in model.layers)
        backend = ("arb" if have_arb() else "intmatrix") if softmax else "rational"
    if backend == "arb":
        return forward_arb(model, X, prompt, at)
    if backend == "intmatrix":
        return forward_intmatrix(model, X, prompt, at)
    return forward_exact(model, X, prompt, at=at)


def replay_bound(model: Model, X, prompt, targets: Sequence, at: str = "output", backend: str = "auto") -> Fraction:
    """A rigorous upper bound on ``max_{t, k} |g([P, X])_{t,k} - y_{t,k}|`` over the target rows
    ``targets`` (one per input token, ``None`` for no target)."""
    G = forward_interval(model, X, prompt, at=at, backend=backend)
    worst = Fraction(0)
    for t, y in enumerate(targets):
        if y is None:
            continue
        for g, v in zip(G[t], as_fraction(np.asarray(y))):
            worst = max(worst, g.hi - v, v - g.lo)
    return worst


def replay_within(model: Model, X, prompt, targets: Sequence, tol, at: str = "output",
                  backend: str = "auto") -> tuple[bool, Fraction]:
    """``(ok, bound)``: ``bound`` from :func:`replay_bound`, ``ok`` when ``bound <= tol`` (then
    every target entry is met within ``tol``, rounding included)."""
    bound = replay_bound(model, X, prompt, targets, at=at, backend=backend)
    return bound <= Fraction(tol), bound
