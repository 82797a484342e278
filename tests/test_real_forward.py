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


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


# --------------------------------------------------------------------------- rigorous forwards

def _mpf(q: Fraction):
    return mpmath.mpf(q.numerator) / q.denominator


def _assert_encloses(G: np.ndarray, ref: list, width: float) -> None:
    """Every enclosure contains the 60-digit value (up to that value's own error, 1e-45 here, far
    below the enclosures' widths of about 1e-35) and is narrower than ``width``."""
    slack = mpmath.mpf("1e-45")
    with mpmath.workdps(60):
        for g_row, r_row in zip(G, ref):
            for g, r in zip(g_row, r_row):
                assert _mpf(g.lo) - slack <= r <= _mpf(g.hi) + slack, (g, r)
                assert g.hi - g.lo < width


BACKENDS = ["rational", "intmatrix"] + (["arb"] if have_arb() else [])


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_interval_forward_encloses_a_60_digit_computation_and_the_float_one(backend, case):
    model, X, P, at = case
    G = forward_interval(model, X, P, at=at, backend=backend)
    _assert_encloses(G, reference_mpmath(model, X, P, at), 1e-25)
    fl = forward_torch(model, X, P, at=at).numpy()
    lo = np.vectorize(lambda v: float(v.lo))(G)
    hi = np.vectorize(lambda v: float(v.hi))(G)
    assert np.all(lo - 1e-9 * (1 + abs(fl)) <= fl) and np.all(fl <= hi + 1e-9 * (1 + abs(fl)))


@pytest.mark.parametrize("norm", NORMS)
def test_both_backends_enclose_the_same_values_on_pre_and_post_ln_layers(norm):
    model = real_model(11, d=6, s=3, n_heads=2, r=5, norm=norm, activation="gelu", causal=norm == "pre")
    rng = np.random.default_rng(5)
    X, P = rng.normal(size=(2, 6)), rng.normal(size=(2, 6))
    ref = reference_mpmath(model, X, P)
    for backend in BACKENDS:
        _assert_encloses(forward_interval(model, X, P, backend=backend), ref, 1e-25)


def test_replay_within_a_tolerance_is_sound_and_has_teeth():
    model = real_model(2, d=5, norm="post", activation="gelu")
    rng = np.random.default_rng(8)
    X, P = rng.normal(size=(3, 5)), rng.normal(size=(2, 5))
    Y = forward_float(model, X, P, at="attention")
    targets = [Y[0], None, Y[2]]
    ok, bound = replay_within(model, X, P, targets, Fraction(1, 10 ** 9), at="attention")
    assert ok and bound < Fraction(1, 10 ** 12)
    off = [Y[0] + np.array([0, 0, 1e-3, 0, 0]), None, Y[2]]
    ok, bound = replay_within(model, X, P, off, Fraction(1, 10 ** 6), at="attention")
    assert not ok and Fraction(999, 10 ** 6) < bound < Fraction(1001, 10 ** 6)
    assert replay_bound(model, X, P, [None, Y[1], None], at="attention", backend="rational") < Fraction(1, 10 ** 12)


def test_arb_backend_is_fast_on_a_bert_size_attention_block():
    pytest.importorskip("flint")
    model = real_model(4, d=96, s=8, n_heads=12, r=8, norm="post", w=0.1)
    rng = np.random.default_rng(0)
    X, P = rng.normal(size=(4, 96)), rng.normal(size=(2, 96))
    G = forward_interval(model, X, P, at="attention", backend="arb")
    fl = forward_float(model, X, P, at="attention")
    mid = np.vectorize(lambda v: float(v.mid))(G)
    np.testing.assert_allclose(mid, fl, rtol=1e-12, atol=1e-12)
    assert max(float(v.hi - v.lo) for v in G.ravel()) < 1e-25


# --------------------------------------------------------------------------- enclosures

@settings(max_examples=100, deadline=None)
@given(st.fractions(min_value=-12, max_value=12, max_denominator=10 ** 12))
def test_erf_tanh_sqrt_enclosures_contain_the_true_values(x):
    with mpmath.workdps(60):
        xm = _mpf(x)
        for (lo, hi), true in ((erf_enclosure(x), mpmath.erf(xm)), (tanh_enclosure(x), mpmath.tanh(xm)),
                               (sqrt_enclosure(abs(x)), mpmath.sqrt(abs(xm)))):
            slack = mpmath.mpf("1e-50")  # the 60-digit value's own rounding (exact ends are possible)
            assert _mpf(lo) - slack <= true <= _mpf(hi) + slack
            assert hi - lo < Fraction(1, 2 ** 90)  # beyond |x| = 8, erf's enclosure is [1 - e^(-x^2), 1]


@settings(max_examples=60, deadline=None)
@given(st.fractions(min_value=-6, max_value=6, max_denominator=1000), st.fractions(min_value=0, max_value=3, max_denominator=100),
       st.floats(0, 1))
def test_gelu_enclosures_of_intervals_contain_gelu_at_every_point(a, w, t):
    x = a + w * Fraction(t)
    with mpmath.workdps(40):
        xm = _mpf(x)
        g = xm / 2 * (1 + mpmath.erf(xm / mpmath.sqrt(2)))
        gt = xm / 2 * (1 + mpmath.tanh(mpmath.sqrt(2 / mpmath.pi) * (xm + mpmath.mpf("0.044715") * xm ** 3)))
        for iv, true in ((iv_gelu(Iv(a, a + w)), g), (iv_gelu_tanh(Iv(a, a + w)), gt)):
            assert _mpf(iv.lo) - mpmath.mpf("1e-37") <= true <= _mpf(iv.hi) + mpmath.mpf("1e-37")


def test_sqrt_of_a_square_is_exact_and_the_score_scale_of_head_size_64_is_one_eighth():
    assert sqrt_enclosure(Fraction(9, 64)) == (Fraction(3, 8), Fraction(3, 8))
    lo, hi = sqrt_enclosure(2)
    assert lo < hi and lo * lo < 2 < hi * hi


def test_the_gelu_gaps_the_z3_relaxation_uses_hold_on_a_grid():
    """relu(x) - gelu(x) lies in [0, 2/5] and relu(x) - gelu_tanh(x) in [0, 1/4] (proved in
    proofs/real_layers_forward.md; checked here with the rigorous enclosures, near the maxima too)."""
    for k in range(-160, 161):
        x = Iv(Fraction(k, 20))
        relu = x.relu().lo
        for f, gap in ((iv_gelu, Fraction(2, 5)), (iv_gelu_tanh, Fraction(1, 4))):
            g = f(x)
            assert relu - g.hi >= 0 or k == 0
            assert relu - g.lo <= gap


# --------------------------------------------------------------------------- Z3 and refusals

def _z3_layer(norm):
    import z3
    model = real_model(6, d=2, s=1, n_heads=1, r=2, norm=norm, activation="gelu")
    P = [[z3.Real("p0"), z3.Real("p1")]]
    rows, alg = forward_z3(model, np.array([[0.5, -1.0]]), P, at="output")
    true = Fraction(float(forward_float(model, np.array([[0.5, -1.0]]), np.array([[0.25, 0.75]]))[0, 0]))
    solver = z3.Solver()
    solver.set("timeout", 60000)
    solver.add(*alg.constraints, P[0][0] == z3.RealVal("1/4"), P[0][1] == z3.RealVal("3/4"))
    return solver, rows[0][0], true


def _near(term, v: Fraction, tol: Fraction):
    import z3
    return z3.And(term >= z3.RealVal(str(v - tol)), term <= z3.RealVal(str(v + tol)))


@pytest.mark.parametrize("norm", [None, "post"])
def test_z3_encoding_of_a_real_layer_refuses_outputs_far_from_the_true_one(norm):
    import z3
    solver, y, true = _z3_layer(norm)
    solver.add(z3.Not(_near(y, true, Fraction(10))))  # GELU's gap and LN's bound keep it within 10
    assert solver.check() == z3.unsat


@pytest.mark.parametrize("norm", [None, pytest.param("post", marks=pytest.mark.slow)])
def test_z3_encoding_of_a_real_layer_admits_the_true_output(norm):
    import z3
    solver, y, true = _z3_layer(norm)
    solver.add(_near(y, true, Fraction(1, 10 ** 6)))
    assert solver.check() == z3.sat


def test_z3_gelu_relaxation_and_inv_sqrt_are_sound_and_tight_where_constant():
    import z3
    from constructions.algebras import Z3Algebra
    alg = Z3Algebra()
    x = z3.Real("x")
    g = alg.gelu(x)
    k = alg.inv_sqrt(x)
    s = z3.Solver()
    s.add(*alg.constraints, x == 2)
    true = Fraction(math.erf(math.sqrt(2)) + 1)  # gelu(2) = 1 + erf(sqrt 2) ~ 1.9545
    s.push()
    s.add(g == z3.RealVal(str(true)))
    assert s.check() == z3.sat
    s.pop()
    s.add(z3.Or(g > 2, g < z3.RealVal("1.5"), k < z3.RealVal("0.7"), k > z3.RealVal("0.71")))
    assert s.check() == z3.unsat
    c = Z3Algebra()
    assert c.const_value(c.inv_sqrt(c.const(Fraction(64)))) == Fraction(1, 8)
    gc = c.gelu(c.const(Fraction(2)))  # a constant argument: the enclosure, a point at this precision
    s2 = z3.Solver()
    s2.add(*c.constraints, z3.Or(gc < z3.RealVal("1.9544"), gc > z3.RealVal("1.9546")))
    assert s2.check() == z3.unsat


def test_features_an_encoding_cannot_handle_are_refused_by_name():
    model = real_model(1, d=3, norm="post", activation="gelu")
    X = np.eye(3)[:2]
    with pytest.raises(NotExact):
        forward_rational(model, X)
    with pytest.raises(InputError) as e:
        mlp_exact(model.layers[0], X[0])
    assert e.value.field == "mlp.activation"
    pre = real_model(1, d=3, norm="pre")
    with pytest.raises(InputError):
        attention_scores_exact(pre, 0, 0, X[0], [X[1]])
    bad = real_model(1, d=3, activation="swish")
    for f in (lambda: check_layer(bad.layers[0], 0), lambda: forward_torch(bad, X), lambda: forward_float(bad, X),
              lambda: forward_exact(bad, X)):
        with pytest.raises(InputError) as e:
            f()
        assert e.value.field == "layers[0].mlp.activation"
    with pytest.raises(InputError) as e:
        forward_torch(model, X, at="middle")
    assert e.value.field == "at"
    for scale in (0, -1.0, float("nan"), None, "1/sqrt(d)"):
        bad = real_model(1, d=3, scale=scale)
        with pytest.raises(InputError) as e:
            forward_float(bad, X)
        assert e.value.field == "layers[0].attention.scale"


def test_rational_forward_stays_exact_on_a_real_layer_whose_values_are_rational():
    """Biases and a scale 1/sqrt(4) = 1/2 with a hardmax layer and ReLU: exact Fractions."""
    model = real_model(9, d=3, s=4, n_heads=1, r=2, norm=None, activation="relu", scale=INV_SQRT_HEAD_SIZE)
    model.layers[0].kind = "hardmax"
    X = np.array([[1.0, 0.5, -2.0], [0.25, 1.0, 0.0]])
    out = forward_rational(model, X, np.array([[0.5, 0.5, 0.5]]))
    assert all(isinstance(v, Fraction) for v in out.ravel())
    np.testing.assert_allclose(out.astype(float), forward_float(model, X, np.array([[0.5, 0.5, 0.5]])), atol=1e-12)
    scores = attention_scores_exact(model, 0, 0, X[0], [X[0], X[1]])
    h = model.layers[0].heads[0]
    q, k = h.W_q @ X[0] + h.b_q, [h.W_k @ x + h.b_k for x in X]
    np.testing.assert_allclose([float(v) for v in scores], [q @ kk / 2 for kk in k], rtol=1e-12)
