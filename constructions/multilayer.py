"""Builders for Theorem M (multi-layer limitation): causal models meeting condition 1 or 2, the
non-injective datasets the theorem rules out, and a model that violates the conditions.

Condition 1: every head has W_k^T W_q = 0 (query-independent, in fact all-zero scores), the heads'
sum_j W_o^j W_v^j has spectral norm < 1 and every MLP residual branch is a contraction.
Condition 2: bounded prompts and inputs, small scores and values, contractive MLPs (the exact
bounds are certified in ``verify.provers.multilayer``; the builders only aim for them in floats).

All weights are dyadic rationals, so the models are exact and cheap in exact arithmetic.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Optional

import numpy as np

from .arrays import as_float, as_scaled_int
from .datasets import random_model, random_tokens
from .forward import forward_rational, forward_torch
from .model import Dataset, Example, Head, Layer, Model

__all__ = ["condition1_model", "condition2_model", "collision_dataset", "violating_model",
           "violating_dataset", "has_zero_scores", "forward_uniform_exact", "forward_float",
           "encoder_counterexample"]


def _dyadic(a: np.ndarray, bits: int) -> np.ndarray:
    return np.round(np.asarray(a, dtype=np.float64) * (1 << bits)) / (1 << bits)


def condition1_model(d: int, heads: int = 1, layers: int = 2, seed: int = 0, value_norm: float = 0.5,
                     head_size: Optional[int] = None, mlp_width: Optional[int] = None,
                     mlp_contraction: float = 0.5, causal: bool = True, bits: int = 12) -> Model:
    """A causal model with W_k^T W_q = 0 in every head and ||sum_j W_o^j W_v^j||_2 ~ value_norm.

    With head size s >= 2 the query and key maps are nonzero: W_q uses the first half of the head
    coordinates and W_k the second half, so every score <W_k a, W_q b> is exactly 0 while neither
    matrix is.  Value maps are rescaled (in floats, then made dyadic) to the target norm."""
    base = random_model(d, heads=heads, head_size=head_size, mlp_width=mlp_width, seed=seed,
                        layers=layers, bits=bits, mlp_contraction=mlp_contraction, causal=causal)
    out_layers = []
    for layer in base.layers:
        hs = []
        for h in layer.heads:
            s = h.s
            W_q, W_k = as_float(h.W_q).copy(), as_float(h.W_k).copy()
            if s >= 2:
                W_q[s // 2:, :] = 0.0
                W_k[: s // 2, :] = 0.0
            else:
                W_q[:] = 0.0
            hs.append(Head(W_q, W_k, as_float(h.W_v).copy(), as_float(h.W_o).copy()))
        V = sum(as_float(h.W_o) @ as_float(h.W_v) for h in hs)
        nv = float(np.linalg.norm(V, 2))
        if nv > 0:
            scale = value_norm / nv
            for h in hs:
                h.W_v = _dyadic(h.W_v * scale, bits + 4)
        out_layers.append(Layer(layer.kind, hs, layer.W_1, layer.b_1, layer.W_2, layer.b_2))
    meta = dict(base.meta, builder="condition1_model", value_norm=value_norm)
    return Model(d=d, layers=out_layers, causal=causal, meta=meta)


def condition2_model(d: int, heads: int = 1, layers: int = 2, seed: int = 0, value_norm: float = 0.25,
                     score_norm: float = 0.01, bias_scale: float = 0.1,
                     head_size: Optional[int] = None, mlp_width: Optional[int] = None,
                     mlp_contraction: float = 0.5, causal: bool = True, bits: int = 16) -> Model:
    """A causal softmax model with small scores and values, for condition 2 (bounded domains).

    Per head, W_v is rescaled so that ||W_o^j W_v^j||_2 ~ value_norm / heads and W_q so that
    ||W_k^j^T W_q^j||_2 ~ score_norm (floats); the MLP biases are scaled by ``bias_scale`` so the
    state norms stay moderate over the layers."""
    base = random_model(d, heads=heads, head_size=head_size, mlp_width=mlp_width, seed=seed,
                        layers=layers, bits=bits, mlp_contraction=mlp_contraction, causal=causal)
    out_layers = []
    for layer in base.layers:
        hs = []
        for h in layer.heads:
            W_q, W_k, W_v, W_o = (as_float(w).copy() for w in (h.W_q, h.W_k, h.W_v, h.W_o))
            nv = float(np.linalg.norm(W_o @ W_v, 2))
            na = float(np.linalg.norm(W_k.T @ W_q, 2))
            if nv > 0:
                W_v = _dyadic(W_v * (value_norm / heads / nv), bits + 4)
            if na > 0:
                W_q = _dyadic(W_q * (score_norm / na), bits + 8)
            hs.append(Head(W_q, W_k, W_v, W_o))
        b_1 = _dyadic(as_float(layer.b_1) * bias_scale, bits)
        b_2 = _dyadic(as_float(layer.b_2) * bias_scale, bits)
        out_layers.append(Layer(layer.kind, hs, layer.W_1, b_1, layer.W_2, b_2))
    meta = dict(base.meta, builder="condition2_model", value_norm=value_norm, score_norm=score_norm)
    return Model(d=d, layers=out_layers, causal=causal, meta=meta)


def has_zero_scores(model: Model) -> bool:
    """True when every head has W_k^T W_q = 0 exactly (all attention scores are 0)."""
    for layer in model.layers:
        for h in layer.heads:
            Nk, _ = as_scaled_int(np.asarray(h.W_k))
            Nq, _ = as_scaled_int(np.asarray(h.W_q))
            if any(a != 0 for a in Nk.T.dot(Nq).reshape(-1)):
                return False
    return True


def forward_uniform_exact(model: Model, X: np.ndarray, prompt: Optional[np.ndarray] = None) -> np.ndarray:
    """Exact forward pass (Fractions, no rounding) of a model whose scores are all zero: every
    attention is then the uniform average over the visible keys, for softmax and hardmax alike.
    Returns the ``(m, d)`` object array of the rows at the input positions
    (:func:`constructions.forward.forward_rational`, after checking the zero scores)."""
    if not has_zero_scores(model):
        raise ValueError("forward_uniform_exact needs W_k^T W_q = 0 in every head")
    return forward_rational(model, X, prompt)


def forward_float(model: Model, X: np.ndarray, prompt: Optional[np.ndarray] = None) -> np.ndarray:
    """Float64 forward pass (softmax or hardmax, causal or not) as a numpy array of the rows at
    the inputs (:func:`constructions.forward.forward_torch`)."""
    return forward_torch(model, X, prompt).detach().numpy()


def _ball(rng: np.random.Generator, n: int, d: int, radius: float, bits: int = 10) -> np.ndarray:
    """n dyadic tokens of 2-norm at most ``radius`` (rounded toward zero after scaling)."""
    t = rng.normal(0, 1, (n, d))
    norms = np.linalg.norm(t, axis=1, keepdims=True)
    t = t / np.maximum(norms, 1e-12) * radius * rng.uniform(0.3, 0.95, (n, 1))
    return np.trunc(t * (1 << bits)) / (1 << bits)


def collision_dataset(model: Model, seed: int = 0, prompt_length: int = 1, prompt_norm: float = 1.0,
                      input_norm: float = 1.0) -> tuple[Dataset, np.ndarray]:
    """The dataset Theorem M rules out: {([x], [y]), ([x'], [y])} with x != x'.

    y = g([P0, x]) for a random prompt P0 of the given length (token norms <= prompt_norm), so each
    example alone is memorized by P0; the pair is not, by injectivity.  y is exact when the forward
    pass is exact (zero-score heads), else the float64 value.  Returns (dataset, P0)."""
    rng = np.random.default_rng(40_000 + seed)
    d = model.d
    P0 = _ball(rng, prompt_length, d, prompt_norm)
    x, x2 = _ball(rng, 2, d, input_norm)
    if has_zero_scores(model):
        y = forward_uniform_exact(model, x[None, :], P0)[0]
    else:
        y = forward_float(model, x[None, :], P0)[0]
    exs = [Example(input=x[None, :], output=[y]), Example(input=x2[None, :], output=[y.copy()])]
    return Dataset(exs, meta={"builder": "collision_dataset", "seed": seed,
                              "prompt_length": prompt_length}), P0


def violating_model(d: int = 2, seed: int = 0, eigenvalue: int = -2, mlp_contraction: float = 0.5) -> Model:
    """A causal 2-layer model with zero scores that violates condition 1 in its first layer.

    Layer 1 has W_v = I and W_o = diag(eigenvalue, 3/10, ...), so ||W_o W_v||_2 = |eigenvalue| > 1
    and I + W_o W_v / n is singular for n = -eigenvalue: with a prompt of length -eigenvalue - 1
    every input x and x + t e_1 give the same output.  Layer 2 meets condition 1."""
    if eigenvalue > -1:
        raise ValueError(f"eigenvalue: expected an integer <= -1, found {eigenvalue}")
    m = condition1_model(d, heads=1, layers=2, seed=seed, head_size=d, mlp_contraction=mlp_contraction)
    first = m.layers[0]
    W_o = np.diag([float(eigenvalue)] + [0.3] * (d - 1))
    W_o = _dyadic(W_o, 10)
    m.layers[0] = Layer(first.kind, [Head(np.zeros((d, d)), np.zeros((d, d)), np.eye(d), W_o)],
                        first.W_1, first.b_1, first.W_2, first.b_2)
    m.meta = dict(m.meta, builder="violating_model", eigenvalue=eigenvalue)
    return m


def violating_dataset(model: Model, seed: int = 0, shift: float = 0.5) -> Dataset:
    """{([x], [y]), ([x + shift e_1], [y])} with y = g([P0, x]) for a random one-token prompt P0
    (exact rationals: the model has zero scores)."""
    rng = np.random.default_rng(50_000 + seed)
    d = model.d
    P0 = random_tokens(rng, -model.meta.get("eigenvalue", -2) - 1, d)
    x = random_tokens(rng, 1, d)[0]
    x2 = x.copy()
    x2[0] += shift
    y = forward_uniform_exact(model, x[None, :], P0)[0]
    return Dataset([Example(input=x[None, :], output=[y]), Example(input=x2[None, :], output=[y.copy()])],
                   meta={"builder": "violating_dataset", "seed": seed})


def encoder_counterexample(causal: bool = False) -> Model:
    """A 4-layer d = 2 model meeting condition 1 whose *encoder* version is not injective.

    Zero scores, identity MLPs (W_1 = W_2 = 0, zero biases) and W_o^l W_v^l = R(theta_l) - I with
    rational rotations: theta_1 = theta_2 = theta_3 = arccos(3/5) and theta_4 with cos = 117/125,
    sin = 44/125, so the angles sum to pi and ||R(theta) - I||_2 = sqrt(2 - 2 cos theta) <= sqrt(4/5).
    Without causal masking every token receives the same update M_l mu_l (mu_l the mean state), so
    after 4 layers h = x + (R(pi) - I)(p + x) / 2 = -p for a one-token prompt p: the output does not
    depend on the input.  With ``causal=True`` the same weights are injective (condition 1)."""
    def rot(c: Fraction, s_: Fraction) -> np.ndarray:
        return np.array([[c, -s_], [s_, c]], dtype=object)
    one, zero = Fraction(1), Fraction(0)
    eye = np.array([[one, zero], [zero, one]], dtype=object)
    rots = [rot(Fraction(3, 5), Fraction(4, 5))] * 3 + [rot(Fraction(117, 125), Fraction(44, 125))]
    layers = []
    for R in rots:
        z22 = np.array([[zero, zero], [zero, zero]], dtype=object)
        head = Head(z22.copy(), z22.copy(), eye.copy(), R - eye)
        layers.append(Layer("softmax", [head], z22.copy(), np.array([zero, zero], dtype=object), z22.copy(),
                            np.array([zero, zero], dtype=object)))
    return Model(d=2, layers=layers, causal=causal, meta={"builder": "encoder_counterexample"})
