"""Real (``ptverify-model/2``) layers: biases, score scale, GELU (erf and tanh), LayerNorm pre and
post, causal or not, prompt prepended, ``at="attention"``.

* the torch forward equals an independent computation written here with
  ``torch.nn.functional`` (``layer_norm``, ``gelu``, ``scaled_dot_product_attention``,
  ``linear``), and the numpy forward equals the torch one;
* the rigorous interval forwards (exact rationals, and Arb balls) enclose a 60-digit mpmath
  computation written here, and are narrow;
* the enclosures of sqrt, erf, tanh and GELU contain mpmath's values; the Z3 relaxation of GELU
  admits the true value and refuses one outside its bounds;
* the replay of a witness within a tolerance; features an encoding cannot handle are refused.
"""
from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as Fn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from constructions.forward import (NotExact, attention_scores_exact, check_layer, forward_exact, forward_float,
                                   forward_rational, forward_torch, forward_z3, mlp_exact, mlp_float)
from constructions.intervals import (Iv, erf_enclosure, iv_gelu, iv_gelu_tanh, sqrt_enclosure, tanh_enclosure)
from constructions.model import INV_SQRT_HEAD_SIZE, Head, InputError, Layer, LayerNorm, Model
from constructions.realforward import forward_interval, have_arb, replay_bound, replay_within

NORMS = (None, "pre", "post")
ACTS = ("relu", "gelu", "gelu_tanh")
SCALES = (1, 0.5, INV_SQRT_HEAD_SIZE)


def real_model(seed: int, d: int = 4, s: int = 2, n_heads: int = 2, r: int = 3, norm=None, activation="gelu",
               scale=INV_SQRT_HEAD_SIZE, bias: bool = True, causal: bool = False, n_layers: int = 1,
               w: float = 0.6) -> Model:
    rng = np.random.default_rng(seed)

    def g(*shape):
        return rng.normal(0, w, shape)
    layers = []
    for _ in range(n_layers):
        heads = [Head(g(s, d), g(s, d), g(s, d), g(d, s), *((g(s), g(s), g(s)) if bias else (None, None, None)))
                 for _ in range(n_heads)]
        lns = (LayerNorm(1 + g(d), g(d), 1e-5), LayerNorm(1 + g(d), g(d), 0.01)) if norm else (None, None)
        layers.append(Layer("softmax", heads, g(r, d), g(r), g(d, r), g(d), g(d) if bias else None, scale,
                            activation, norm, *lns))
    return Model(d, layers, causal)


# --------------------------------------------------------------------------- independent references

def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def reference_torch(model: Model, X, P, at: str = "output") -> np.ndarray:
    """The layers written with torch.nn.functional: layer_norm, gelu, scaled_dot_product_attention."""
    S = _t(np.vstack([P, X]) if P is not None and len(P) else X)
    act = {"relu": Fn.relu, "gelu": lambda x: Fn.gelu(x, approximate="none"),
           "gelu_tanh": lambda x: Fn.gelu(x, approximate="tanh")}
    for li, L in enumerate(model.layers):
        def ln(u, norm):
            return Fn.layer_norm(u, (model.d,), _t(norm.gamma), _t(norm.beta), float(norm.eps))
        R = ln(S, L.ln1) if L.norm == "pre" else S
        att = torch.zeros_like(S) if L.b_o is None else _t(L.b_o).expand_as(S)
        for h in L.heads:
            q, k, v = (Fn.linear(R, _t(W), None if b is None else _t(b))
                       for W, b in ((h.W_q, h.b_q), (h.W_k, h.b_k), (h.W_v, h.b_v)))
            sc = 1 / math.sqrt(h.s) if isinstance(L.scale, str) else float(L.scale)
            o = Fn.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=model.causal, scale=sc)[0]
            att = att + Fn.linear(o, _t(h.W_o))
        Z = ln(S + att, L.ln1) if L.norm == "post" else S + att
        if at == "attention" and li == len(model.layers) - 1:
            S = Z
            break
        x = ln(Z, L.ln2) if L.norm == "pre" else Z
        Y = Z + Fn.linear(act[L.activation](Fn.linear(x, _t(L.W_1), _t(L.b_1))), _t(L.W_2), _t(L.b_2))
        S = ln(Y, L.ln2) if L.norm == "post" else Y
    m_p = 0 if P is None else len(P)
    return S[m_p:].numpy()


def _mp_vec(M, x):
    return [mpmath.fsum(a * b for a, b in zip(row, x)) for row in M]


def _mp(a):
    return [[mpmath.mpf(float(v)) for v in row] for row in np.atleast_2d(np.asarray(a, dtype=np.float64))]


def _mp_ln(norm, u):
    d = len(u)
    mean = mpmath.fsum(u) / d
    c = [x - mean for x in u]
    k = 1 / mpmath.sqrt(mpmath.fsum(x * x for x in c) / d + mpmath.mpf(float(norm.eps)))
    return [x * k * mpmath.mpf(float(g)) + mpmath.mpf(float(b)) for x, g, b in zip(c, norm.gamma, norm.beta)]


def _mp_act(x, name):
    if name == "relu":
        return max(x, 0)
    if name == "gelu":
        return x / 2 * (1 + mpmath.erf(x / mpmath.sqrt(2)))
    return x / 2 * (1 + mpmath.tanh(mpmath.sqrt(2 / mpmath.pi) * (x + mpmath.mpf("0.044715") * x ** 3)))


def _mp_bias(b, n):
    return [mpmath.mpf(0)] * n if b is None else [mpmath.mpf(float(v)) for v in b]


def _mp_attention(L: Layer, S: list, causal: bool) -> list:
    R = [_mp_ln(L.ln1, s) for s in S] if L.norm == "pre" else S
    out = [[a + b for a, b in zip(s, _mp_bias(L.b_o, len(s)))] for s in S]
    for h in L.heads:
        q, k, v = ([[a + b for a, b in zip(_mp_vec(_mp(W), t), _mp_bias(bb, h.s))] for t in R]
                   for W, bb in ((h.W_q, h.b_q), (h.W_k, h.b_k), (h.W_v, h.b_v)))
        sc = 1 / mpmath.sqrt(h.s) if isinstance(L.scale, str) else mpmath.mpf(float(L.scale))
        for a in range(len(S)):
            keys = range(a + 1) if causal else range(len(S))
            e = [mpmath.exp(sc * mpmath.fsum(x * y for x, y in zip(q[a], k[b]))) for b in keys]
            mix = [mpmath.fsum(e[i] * v[b][c] for i, b in enumerate(keys)) / mpmath.fsum(e) for c in range(h.s)]
            out[a] = [o + x for o, x in zip(out[a], _mp_vec(_mp(h.W_o), mix))]
    return [_mp_ln(L.ln1, u) for u in out] if L.norm == "post" else out


def reference_mpmath(model: Model, X, P, at: str = "output") -> list:
    """A 60-digit forward pass written independently of the library."""
    with mpmath.workdps(60):
        S = _mp(np.vstack([P, X]) if P is not None and len(P) else X)
        for li, L in enumerate(model.layers):
            Z = _mp_attention(L, S, model.causal)
            if at == "attention" and li == len(model.layers) - 1:
                S = Z
                break
            S = []
            for z in Z:
                x = _mp_ln(L.ln2, z) if L.norm == "pre" else z
                hid = [_mp_act(a + b, L.activation) for a, b in zip(_mp_vec(_mp(L.W_1), x), _mp_bias(L.b_1, L.r))]
                y = [a + b + c for a, b, c in zip(z, _mp_vec(_mp(L.W_2), hid), _mp_bias(L.b_2, model.d))]
                S.append(_mp_ln(L.ln2, y) if L.norm == "post" else y)
        return S[0 if P is None else len(P):]


# --------------------------------------------------------------------------- float forwards

@st.composite
def cases(draw):
    d = draw(st.integers(2, 5))
    model = real_model(draw(st.integers(0, 10 ** 6)), d=d, s=draw(st.integers(1, 3)), n_heads=draw(st.integers(1, 2)),
                       r=draw(st.integers(1, 4)), norm=draw(st.sampled_from(NORMS)), activation=draw(st.sampled_from(ACTS)),
                       scale=draw(st.sampled_from(SCALES)), bias=draw(st.booleans()), causal=draw(st.booleans()),
                       n_layers=draw(st.integers(1, 2)))
    rng = np.random.default_rng(draw(st.integers(0, 10 ** 6)))
    m_p = draw(st.integers(0, 2))
    P = rng.normal(size=(m_p, d)) if m_p else None
    return model, rng.normal(size=(draw(st.integers(1, 3)), d)), P, draw(st.sampled_from(("output", "attention")))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_torch_forward_equals_torch_functional_and_numpy(case):
    model, X, P, at = case
    ref = reference_torch(model, X, P, at)
    got = forward_torch(model, X, P, at=at).numpy()
    assert got.shape == (X.shape[0], model.d)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(forward_float(model, X, P, at=at), got, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("activation", ACTS)
def test_pre_and_post_ln_layers_with_biases_agree(norm, activation):
    """A BERT-like (post) and a GPT-2-like (pre, causal) layer, d 8, two heads, biases: torch =
    torch.nn.functional, and the result depends on every new part (changing it changes it)."""
    model = real_model(7, d=8, s=4, n_heads=2, r=6, norm=norm, activation=activation, causal=norm == "pre")
    rng = np.random.default_rng(3)
    X, P = rng.normal(size=(4, 8)), rng.normal(size=(2, 8))
    for at in ("output", "attention"):
        ref = reference_torch(model, X, P, at)
        np.testing.assert_allclose(forward_torch(model, X, P, at=at).numpy(), ref, rtol=1e-11, atol=1e-11)
    base = forward_torch(model, X, P).numpy()
    layer = model.layers[0]
    layer.b_o = layer.b_o + 0.1 * np.arange(8)  # not a constant: post-LN would remove that
    assert not np.allclose(forward_torch(model, X, P).numpy(), base)


def test_forward_torch_is_differentiable_in_the_prompt_of_a_real_layer():
    model = real_model(3, d=5, norm="pre", activation="gelu_tanh")
    P = torch.zeros((2, 5), dtype=torch.float64, requires_grad=True)
    X = np.random.default_rng(0).normal(size=(3, 5))
    forward_torch(model, X, P, at="attention").sum().backward()
    assert P.grad is not None and torch.isfinite(P.grad).all() and P.grad.abs().sum() > 0


def test_plain_layers_are_unchanged_and_zero_extras_change_nothing():
    plain = real_model(5, d=4, norm=None, activation="relu", scale=1, bias=False)
    assert plain.is_plain
    rng = np.random.default_rng(1)
    X, P = rng.normal(size=(3, 4)), rng.normal(size=(1, 4))
    out = forward_torch(plain, X, P).numpy()
    L = plain.layers[0]
    z = np.vstack([P, X])
    att = np.zeros_like(z)
    for h in L.heads:  # the textbook layer, written out
        sc = (z @ h.W_q.T) @ (z @ h.W_k.T).T
        w = np.exp(sc - sc.max(axis=1, keepdims=True))
        att += (w / w.sum(axis=1, keepdims=True)) @ (z @ h.W_v.T) @ h.W_o.T
    Z = z + att
    np.testing.assert_allclose(out, (Z + np.maximum(Z @ L.W_1.T + L.b_1, 0) @ L.W_2.T + L.b_2)[1:], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(forward_float(plain, X, P), out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.array([mlp_float(L, r) for r in X]), X + np.maximum(X @ L.W_1.T + L.b_1, 0) @ L.W_2.T + L.b_2)
    L.b_o = np.zeros(4)
    for h in L.heads:
        h.b_q, h.b_k, h.b_v = np.zeros(h.s), np.zeros(h.s), np.zeros(h.s)
    assert not plain.is_plain
    np.testing.assert_allclose(forward_torch(plain, X, P).numpy(), out, rtol=1e-12, atol=1e-12)
