"""The encodings of the forward pass agree, Lemma D holds, and exp enclosures are rigorous.

* Hardmax and zero-score softmax models are rational: ``forward_exact`` returns points, equal to
  the simplified ``forward_z3`` values and to torch float64 within 1e-12.
* General softmax models: the torch float64 output lies in the ``forward_exact`` enclosure widened
  by 1e-9, and sympy's symbolic output, evaluated, agrees with torch to 1e-9 (one layer and small
  sizes only: ``forward_sympy`` of a second softmax layer grows nested exponentials and takes
  seconds to minutes even for d = 2).
* Lemma D (docs/theory.md, "Lemma D"): Att^j(x, [P, X]) computed directly (through the encodings, on a
  one-head layer whose MLP is zero), as (N_X + N_P) / (Z_X + Z_P), and as
  lambda Att(x, X) + (1 - lambda) Att(x, P) with lambda in (0, 1) -- exactly for zero-score heads,
  with rigorous intervals and in float64 (1e-12) otherwise.
* ``exp_enclosure`` contains mpmath's high-precision interval for exp of random rationals.
* ``forward_rational`` (Fractions) equals ``forward_exact``'s points on rational models, its
  features satisfy the MLP's equations, and it refuses softmax heads with unequal scores.
* ``forward_torch`` with LoRA deltas equals, bit for bit, ``forward_torch`` of the model with the
  update applied; converted weights reused across calls change nothing.

Weights are random dyadic models from ``random_model``; tokens come from a seeded numpy generator
(hypothesis chooses the sizes, the seeds and the structure), so values are generic and near-ties
that float64 cannot resolve do not occur by accident.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import z3
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.datasets import random_model, random_tokens
from constructions.forward import (Iv, NotExact, attention_scores_exact, exp_enclosure, forward_exact,
                                   forward_rational, forward_sympy, forward_torch, forward_z3, torch_weights)
from constructions.lora import LoRAUpdate, apply_lora
from constructions.model import Layer, Model, as_float, as_fraction

ABS_FLOAT = 1e-12     # torch float64 vs exact, rational models
ENCLOSURE_PAD = 1e-9  # torch float64 vs rigorous enclosure, softmax models


# --------------------------------------------------------------------------- strategies

@st.composite
def instances(draw, kinds=("hardmax", "zero", "softmax"), max_layers=2, max_d=4, max_heads=3,
              max_input=3, max_prompt=3, min_prompt=0):
    """(model, X, P): a random small model, an input of 1..max_input tokens and a prompt."""
    kind = draw(st.sampled_from(kinds))
    d = draw(st.integers(1, max_d))
    heads = draw(st.integers(1, max_heads))
    layers = draw(st.integers(1, max_layers))
    causal = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    model = random_model(d, heads=heads, seed=seed, layers=layers, causal=causal,
                         kind="hardmax" if kind == "hardmax" else "softmax",
                         zero_scores=(kind == "zero"))
    rng = np.random.default_rng(seed + 1)
    n = draw(st.integers(1, max_input))
    m_p = draw(st.integers(min_prompt, max_prompt))
    X = random_tokens(rng, n, d)
    P = random_tokens(rng, m_p, d)
    if m_p and draw(st.booleans()):
        # a prompt token that repeats an input token: ties in every head
        P[0] = X[draw(st.integers(0, n - 1))]
    return model, X, P


def _z3_value(term) -> Fraction:
    v = z3.simplify(term)
    assert z3.is_rational_value(v), f"forward_z3 did not reduce to a rational constant: {v}"
    return Fraction(v.numerator_as_long(), v.denominator_as_long())


def _check_rational_agreement(model, X, P):
    E = forward_exact(model, X, P)
    assert E.shape == (len(X), model.d)
    assert all(v.is_point for v in E.reshape(-1)), "forward_exact is not a point on a rational model"
    rows, alg = forward_z3(model, X, P)
    assert alg.exp_vars == [], "a rational model needs no exponential variables"
    Z = np.array([[_z3_value(t) for t in row] for row in rows], dtype=object)
    exact = np.array([[v.lo for v in row] for row in E], dtype=object)
    assert (Z == exact).all(), "forward_z3 and forward_exact disagree"
    T = forward_torch(model, X, P).numpy()
    assert T.shape == exact.shape
    assert np.abs(T - as_float(exact)).max(initial=0.0) <= ABS_FLOAT
    _check_rational_forward(model, X, P, exact)


def _check_rational_forward(model, X, P, exact):
    """forward_rational gives the same Fractions, and its last layer's features obey
    H = relu(W_1 Z + b_1), out = Z + W_2 H + b_2 exactly."""
    out, Z, H = forward_rational(model, X, P, return_features=True)
    assert (out == exact).all() and all(isinstance(v, Fraction) for v in out.reshape(-1))
    assert (forward_rational(model, X, P) == out).all()
    layer = model.layers[-1]
    W1, b1, W2, b2 = (as_fraction(a) for a in (layer.W_1, layer.b_1, layer.W_2, layer.b_2))
    for z, h, o in zip(Z, H, out):
        assert list(h) == [max(v, Fraction(0)) for v in W1.dot(z) + b1]
        assert list(o) == list(z + W2.dot(h) + b2)


# --------------------------------------------------------------------------- rational models

@given(instances(kinds=("hardmax", "zero"), max_layers=1))
def test_rational_models_all_encodings_agree_exactly(inst):
    _check_rational_agreement(*inst)


@pytest.mark.parametrize("kind", ["hardmax", "zero"])
def test_rational_two_layer_models_stay_exact(kind):
    model = random_model(3, heads=2, seed=0, layers=2, kind="hardmax" if kind == "hardmax" else "softmax",
                         zero_scores=(kind == "zero"))
    rng = np.random.default_rng(1)
    _check_rational_agreement(model, random_tokens(rng, 2, 3), random_tokens(rng, 2, 3))


def test_rational_agreement_detects_a_wrong_value():
    """The comparison has teeth: perturbing one exact value by 2**-38 is noticed by torch."""
    model = random_model(3, heads=2, seed=5, kind="hardmax")
    X = random_tokens(np.random.default_rng(0), 2, 3)
    E = forward_exact(model, X, X[:1])
    T = forward_torch(model, X, X[:1]).numpy()
    exact = as_float(np.array([[v.lo for v in row] for row in E], dtype=object))
    assert np.abs(T - exact).max() <= ABS_FLOAT
    exact[1, 2] += 2.0 ** -38
    assert np.abs(T - exact).max() > ABS_FLOAT


# --------------------------------------------------------------------------- softmax models

@given(instances(kinds=("softmax",)))
def test_softmax_torch_lies_in_the_exact_enclosure(inst):
    model, X, P = inst
    E = forward_exact(model, X, P)
    T = forward_torch(model, X, P).numpy()
    assert T.shape == E.shape
    for v, t in zip(E.reshape(-1), T.reshape(-1)):
        assert v.hi - v.lo < Fraction(1, 10**15), f"enclosure too wide to be useful: {v}"
        assert float(v.lo) - ENCLOSURE_PAD <= t <= float(v.hi) + ENCLOSURE_PAD, (v, t)


@given(instances(kinds=("softmax",)))
@settings(max_examples=10)
def test_softmax_z3_constraints_admit_the_true_values(inst):
    """Every exp variable of forward_z3 is enclosed; fixing each at its enclosure's lower end,
    the Z3 output evaluates within the enclosure-derived tolerance of forward_exact."""
    model, X, P = inst
    if len(model.layers) > 1:
        return  # scores of layer 2 are Z3 terms, not constants: no fixed enclosure to substitute
    rows, alg = forward_z3(model, X, P)
    subs = []
    for E, score in alg.exp_vars:
        s = z3.simplify(score)
        assert z3.is_rational_value(s)
        lo, hi = exp_enclosure(Fraction(s.numerator_as_long(), s.denominator_as_long()))
        subs.append((E, z3.RealVal(f"{lo.numerator}/{lo.denominator}")))
    solver = z3.Solver()
    solver.add(*[c for c in alg.constraints])
    solver.add(*[E == v for E, v in subs])
    assert solver.check() == z3.sat
    Ex = forward_exact(model, X, P)
    for row_t, row_e in zip(rows, Ex):
        for t, e in zip(row_t, row_e):
            val = _z3_value(z3.substitute(t, *subs))
            assert abs(float(val - e.mid)) <= 1e-20 + float(e.hi - e.lo) + 1e-25


@given(instances(kinds=("softmax",), max_layers=1, max_d=3, max_heads=2, max_input=2, max_prompt=2))
@settings(max_examples=10)
def test_softmax_sympy_agrees_with_torch(inst):
    model, X, P = inst
    S = forward_sympy(model, X, P)
    T = forward_torch(model, X, P).numpy()
    Sv = np.array(S.evalf(30).tolist(), dtype=float).reshape(T.shape)
    assert np.abs(Sv - T).max() <= 1e-9


def test_forward_rational_refuses_unequal_softmax_scores():
    model = random_model(3, heads=2, seed=3)
    X = random_tokens(np.random.default_rng(2), 2, 3)
    with pytest.raises(NotExact):
        forward_rational(model, X)


@pytest.mark.parametrize("target, head", [("W_2", None), ("W_1", None), ("W_q", 0), ("W_v", 1)])
def test_torch_deltas_equal_the_applied_lora_update(target, head):
    """The torch forward's LoRA deltas are the update applied to the weight, bit for bit."""
    import torch
    for causal in (False, True):
        model = random_model(4, heads=2, head_size=2, mlp_width=6, seed=7, layers=2, causal=causal)
        rng = np.random.default_rng(3)
        X, P = random_tokens(rng, 3, 4), random_tokens(rng, 2, 4)
        W = getattr(model.layers[1], target) if head is None else getattr(model.layers[1].heads[head], target)
        B, A = rng.normal(size=(W.shape[0], 1)), rng.normal(size=(1, W.shape[1]))
        ref = forward_torch(apply_lora(model, [LoRAUpdate(target, B, A, layer=1, head=head)]), X, P)
        deltas = {(1, head, target): torch.as_tensor(B @ A)}
        assert torch.equal(forward_torch(model, X, P, deltas=deltas), ref)
        w = torch_weights(model)
        assert torch.equal(forward_torch(model, X, P, deltas=deltas, weights=w), ref)
        assert torch.equal(forward_torch(model, X, P, weights=w), forward_torch(model, X, P))


def test_zero_prompt_equals_no_prompt():
    model = random_model(3, heads=2, seed=2)
    X = random_tokens(np.random.default_rng(1), 2, 3)
    a = forward_exact(model, X, None)
    b = forward_exact(model, X, np.zeros((0, 3)))
    assert all(u.lo == v.lo and u.hi == v.hi for u, v in zip(a.reshape(-1), b.reshape(-1)))
    assert np.array_equal(forward_torch(model, X).numpy(), forward_torch(model, X, np.zeros((0, 3))).numpy())


# --------------------------------------------------------------------------- Lemma D

def _head_model(model: Model, j: int) -> Model:
    """Layer 0 of ``model`` with only head j and a zero MLP: its output minus the input is
    Att^j(x, [P, X])."""
    layer = model.layers[0]
    d = model.d
    zero = Layer(layer.kind, [layer.heads[j]], np.zeros((1, d)), np.zeros(1), np.zeros((d, 1)), np.zeros(d))
    return Model(d=d, layers=[zero], causal=model.causal)


def _keys_for(model: Model, X: np.ndarray, i: int) -> np.ndarray:
    """The input tokens the query at input position i attends to (besides the whole prompt)."""
    return X[: i + 1] if model.causal else X


def _parts_exact(model: Model, j: int, x, S) -> tuple[Iv, np.ndarray, bool]:
    """(Z_S(x), N_S(x)) of head j of layer 0 as intervals; the boolean says whether they are
    exact."""
    head = model.layers[0].heads[j]
    M = as_fraction(head.W_o).dot(as_fraction(head.W_v))
    Z = Iv(0)
    N = np.array([Iv(0) for _ in range(len(x))], dtype=object)
    exact = True
    for t, score in zip(S, attention_scores_exact(model, 0, j, x, S)):
        tq = as_fraction(np.asarray(t))
        lo, hi = exp_enclosure(score)
        e = Iv(lo, hi)
        exact = exact and e.is_point
        Z = Z + e
        Mt = M.dot(tq)
        N = np.array([n + e * Iv(v) for n, v in zip(N, Mt)], dtype=object)
    return Z, N, exact


def _intersect(a: Iv, b: Iv) -> bool:
    return max(a.lo, b.lo) <= min(a.hi, b.hi)


@given(instances(kinds=("zero",), max_layers=1, min_prompt=1))
def test_lemma_d_exact_for_zero_score_heads(inst):
    model, X, P = inst
    for j in range(len(model.layers[0].heads)):
        direct = forward_exact(_head_model(model, j), X, P)
        for i, x in enumerate(X):
            S = _keys_for(model, X, i)
            ZX, NX, ex = _parts_exact(model, j, x, S)
            ZP, NP, ep = _parts_exact(model, j, x, P)
            assert ex and ep and ZX.lo == len(S) and ZP.lo == len(P)
            zx, zp = ZX.lo, ZP.lo
            nx = np.array([v.lo for v in NX], dtype=object)
            np_ = np.array([v.lo for v in NP], dtype=object)
            att = np.array([v.lo for v in direct[i]], dtype=object) - as_fraction(x)
            assert all(v.is_point for v in direct[i])
            via_nz = (nx + np_) / (zx + zp)
            lam = zx / (zx + zp)
            assert 0 < lam < 1
            via_lam = lam * (nx / zx) + (1 - lam) * (np_ / zp)
            assert (att == via_nz).all()
            assert (via_nz == via_lam).all()


@given(instances(kinds=("softmax",), max_layers=1, min_prompt=1))
def test_lemma_d_rigorous_for_softmax_heads(inst):
    model, X, P = inst
    for j, head in enumerate(model.layers[0].heads):
        hm = _head_model(model, j)
        direct = forward_exact(hm, X, P)
        direct_f = forward_torch(hm, X, P).numpy() - as_float(X)
        M = as_float(head.W_o) @ as_float(head.W_v)
        for i, x in enumerate(X):
            S = _keys_for(model, X, i)
            ZX, NX, _ = _parts_exact(model, j, x, S)
            ZP, NP, _ = _parts_exact(model, j, x, P)
            lam = ZX / (ZX + ZP)
            assert lam.lo > 0 and lam.hi < 1, f"lambda = {lam} not inside (0, 1)"
            att = [v - Iv(xv) for v, xv in zip(direct[i], as_fraction(x))]
            via_nz = [(a + b) / (ZX + ZP) for a, b in zip(NX, NP)]
            via_lam = [lam * (a / ZX) + (Iv(1) - lam) * (b / ZP) for a, b in zip(NX, NP)]
            for u, v, w in zip(att, via_nz, via_lam):
                assert u.width() < Fraction(1, 10**20) and v.width() < Fraction(1, 10**20)
                assert _intersect(u, v), (u, v)
                assert _intersect(v, w), (v, w)
            # the same identity in float64
            q = as_float(head.W_q) @ as_float(np.asarray(x))
            sX, sP = (as_float(T) @ as_float(head.W_k).T @ q for T in (S, P))
            shift = max(sX.max(), sP.max())
            eX, eP = np.exp(sX - shift), np.exp(sP - shift)
            zx, zp = eX.sum(), eP.sum()
            nx, np_ = (eX @ as_float(S)) @ M.T, (eP @ as_float(P)) @ M.T
            lam_f = zx / (zx + zp)
            assert 0 <= lam_f <= 1  # strictly inside in exact arithmetic (above); float64 may round to 1
            assert np.abs(direct_f[i] - (nx + np_) / (zx + zp)).max() <= ABS_FLOAT
            assert np.abs(direct_f[i] - (lam_f * nx / zx + (1 - lam_f) * np_ / zp)).max() <= ABS_FLOAT


def test_lemma_d_check_detects_a_wrong_lambda():
    """With lambda replaced by Z_P / (Z_X + Z_P) the identity fails on a generic instance."""
    model = random_model(3, heads=1, seed=3, zero_scores=True)
    rng = np.random.default_rng(4)
    X, P = random_tokens(rng, 2, 3), random_tokens(rng, 3, 3)
    ZX, NX, _ = _parts_exact(model, 0, X[1], X)
    ZP, NP, _ = _parts_exact(model, 0, X[1], P)
    zx, zp = ZX.lo, ZP.lo
    nx, np_ = (np.array([v.lo for v in N], dtype=object) for N in (NX, NP))
    wrong = zp / (zx + zp)
    assert not (((nx + np_) / (zx + zp)) == wrong * (nx / zx) + (1 - wrong) * (np_ / zp)).all()


# --------------------------------------------------------------------------- exp enclosures

@given(st.fractions(min_value=-60, max_value=60, max_denominator=10**9))
def test_exp_enclosure_contains_mpmath_exp(q):
    import mpmath
    from mpmath import libmp
    lo, hi = exp_enclosure(q)
    assert 0 < lo <= hi
    old = mpmath.iv.prec
    mpmath.iv.prec = 600
    try:
        e = mpmath.iv.exp(mpmath.iv.mpf(q.numerator) / mpmath.iv.mpf(q.denominator))
        a, b = (Fraction(*libmp.to_rational(end)) for end in e._mpi_)
    finally:
        mpmath.iv.prec = old
    assert a <= b and b - a < hi * Fraction(1, 2**500)
    assert lo <= a and b <= hi, f"exp({q}) in [{float(a)}, {float(b)}] not inside [{float(lo)}, {float(hi)}]"
    assert hi - lo <= hi * Fraction(1, 2**90), "enclosure much wider than the requested 100 bits"


def test_exp_enclosure_at_zero_and_one():
    assert exp_enclosure(Fraction(0)) == (1, 1)
    lo, hi = exp_enclosure(Fraction(1))
    # 2.718281828459045235360 < e < 2.718281828459045235361
    assert lo < Fraction(2718281828459045235361, 10**21) and hi > Fraction(2718281828459045235360, 10**21)
    assert hi - lo < Fraction(1, 10**25)


def test_lemma_d_sympy_script_passes():
    """proofs/lemma_d_sympy.py proves the identity symbolically and exits 0."""
    import pathlib
    import subprocess
    import sys
    script = pathlib.Path(__file__).resolve().parent.parent / "proofs" / "lemma_d_sympy.py"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAILED" not in proc.stdout and "all checks passed" in proc.stdout
