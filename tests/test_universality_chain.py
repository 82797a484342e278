"""Theorem U: the chain evaluation (d = 1, hardmax, any number of attention layers after the
token-wise prefix) gives exactly the full evaluation's outputs."""
from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.model import Head, Layer, Model
from constructions.universality import TARGETS, pl_units
from verify.provers import universality as U
from verify.provers.universality import NotCertified, evaluate_cells, outputs_sha256, setup


def _same(a, b) -> bool:
    """Exactly equal outputs (as the certificate's hash sees them) and radii."""
    return a[0] == b[0] and outputs_sha256(a[0]) == outputs_sha256(b[0]) and a[1] == b[1]


def _arr(rows) -> np.ndarray:
    return np.array([[Fraction(x) for x in r] for r in rows], dtype=object)


def _head(q, k, v, o) -> Head:
    return Head(_arr([[q]]), _arr([[k]]), _arr([[v]]), _arr([[o]]))


def _mlp(points, left, right, extra=()):
    """(W_1, b_1, W_2, b_2) of the residual map through ``points`` with tail slopes left, right,
    plus raw units (w, b, co) (co relu(w z + b); w = 0 gives a constant)."""
    units, c = pl_units(points, left, right)
    rows = [(Fraction(s), -Fraction(s) * b, co) for s, b, co in units] + [tuple(map(Fraction, u)) for u in extra]
    rows = rows or [(Fraction(0), Fraction(0), Fraction(0))]
    W1 = _arr([[w] for w, _, _ in rows])
    b1 = np.array([b for _, b, _ in rows], dtype=object)
    W2 = _arr([[co for _, _, co in rows]])
    return W1, b1, W2, np.array([Fraction(c)], dtype=object)


def _with_layers(net, layers):
    model = Model(d=1, layers=layers, causal=False, meta=dict(net.model.meta))
    return dataclasses.replace(net, model=model)


GRID = [Fraction(k, 4) for k in range(-16, 17)]
SMALL = st.sampled_from([Fraction(x) for x in ("-2", "-1", "-1/2", "1/3", "1/2", "1", "3/2", "2")])
TINY = st.sampled_from([Fraction(x) for x in ("1/64", "-1/64", "1/256")])


@st.composite
def random_layer(draw, lo: Fraction, hi: Fraction, focus=()):
    """A random hardmax layer on scalar tokens whose states lie in [lo, hi]: 1-3 rank-1 heads or
    none (keys of either sign, W_o W_v of either sign, sometimes tiny so that the breakpoints
    below fall between the states) and a random continuous PL MLP with breakpoints where the
    states can be after the attention, flat pieces and zeros (queries of sign 0 next layer).
    ``focus``: states near which to put breakpoints too.  Returns (layer, lo', hi') with every
    state after it in [lo', hi']."""
    heads = [_head(draw(SMALL), draw(SMALL), draw(SMALL), draw(SMALL | TINY)) for _ in range(draw(st.integers(0, 3)))]
    heads = heads or [_head(1, 1, 1, 0)]            # W_o W_v = 0: an MLP-only layer after the prefix
    R = max(abs(lo), abs(hi))
    shift = R * sum(abs(h.W_o[0, 0] * h.W_v[0, 0]) for h in heads)
    a_lo, a_hi = lo - shift, hi + shift             # the states after the attention
    xs = draw(st.lists(st.integers(int(4 * a_lo) - 4, int(4 * a_hi) + 4), min_size=1, max_size=8, unique=True))
    if focus:
        near = st.tuples(st.sampled_from(sorted(focus)), st.integers(-8, 8))
        xs += [int(4 * f) + k for f, k in draw(st.lists(near, max_size=8))]
    xs = sorted({Fraction(x, 4) for x in xs})
    vals = [draw(st.sampled_from(GRID + [Fraction(0)] * 8)) for _ in xs]
    left, right = draw(SMALL | st.just(Fraction(0))), draw(SMALL | st.just(Fraction(0)))
    extra = draw(st.lists(st.tuples(st.sampled_from([0, 0, 1, -1, Fraction(3, 2)]), st.sampled_from(GRID),
                                    st.sampled_from([Fraction(1, 2), -1, 2])), max_size=2))
    layer = Layer("hardmax", heads, *_mlp(list(zip(xs, vals)), left, right, extra))
    ends = vals + [vals[0] + left * min(a_lo - xs[0], 0), vals[-1] + right * max(a_hi - xs[-1], 0)]
    err = sum(abs(co) * (abs(w) * max(abs(a_lo), abs(a_hi)) + abs(b)) for w, b, co in extra)
    return layer, min(ends) - err, max(ends) + err


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(TARGETS)), st.integers(0, 1000), st.integers(0, 2), st.integers(0, 3), st.integers(0, 2),
       st.data())
def test_chain_evaluation_equals_the_full_one_on_random_networks(target, seed, prompt, before_g, after_g, data):
    """Random d = 1 hardmax networks: the n = 2 construction (K = 3) with random layers inserted
    before the gather layer and before the last layer (whose MLP maps into [0, 1]), and with
    random prompt values and shuffled, jittered, colliding prompt positions (prompt = 1) or
    positions anywhere in [-400, 400] (prompt = 2: rows of both signs, spread among the input
    rows)."""
    net, P, tgt, fbar, params = setup(1, 2, "1", "2", "1", target, seed=seed, K=3)
    m_p = net.m_p
    if prompt:
        vals = data.draw(st.lists(st.integers(0, 16), min_size=m_p, max_size=m_p))
        P = _arr([[Fraction(v, 16)] for v in vals])
        perm = data.draw(st.permutations(range(m_p)))
        jit = data.draw(st.lists(st.integers(0, 12), min_size=m_p, max_size=m_p))
        pos = net.pos_prompt.copy()
        for j in range(m_p):
            pos[j, 0] = net.pos_prompt[perm[j], 0] + Fraction(jit[j], 2)
        if prompt == 2:
            wild = data.draw(st.lists(st.integers(-800, 800), min_size=m_p, max_size=m_p))
            pos = _arr([[Fraction(x, 2)] for x in wild])
        net = dataclasses.replace(net, pos_prompt=pos)
    Q1, G, F = net.model.layers
    states = [Fraction(x) for x in net.encode_prompt(P).reshape(-1)]
    lo, hi = min(min(states), 0), max(max(states) + 1, 300)     # the input rows lie in [1, 299] after Q1
    layers = [Q1]
    for i in range(before_g):
        la, lo, hi = data.draw(random_layer(lo, hi, states if i == 0 else ()))
        layers.append(la)
    layers.append(G)
    lo, hi = Fraction(-3), Fraction(3)          # G's tent is flat outside these values
    for _ in range(after_g):
        la, lo, hi = data.draw(random_layer(lo, hi))
        layers.append(la)
    net2 = _with_layers(net, layers + [F])
    full = evaluate_cells(net2, P, method="full")
    chain = evaluate_cells(net2, P, method="chain")
    assert _same(full, chain)
    assert all(isinstance(x, Fraction) for row in chain[0] for x in row)
    if before_g + after_g:
        assert _same(evaluate_cells(net2, P), chain)        # "auto": the window's facts fail, the chain


@pytest.mark.parametrize("d,n,K,target", [(1, 2, 5, "relu-net"), (1, 1, 6, "smooth"), (1, 2, 3, "token-mix")])
def test_chain_evaluation_equals_the_full_one_and_fbar_on_the_construction(d, n, K, target):
    net, P, tgt, fbar, params = setup(d, n, "1", "2", "1/2", target, seed=2, K=K)
    chain = evaluate_cells(net, P, method="chain")
    assert _same(chain, evaluate_cells(net, P, method="full"))
    assert _same(chain, evaluate_cells(net, P, method="window"))
    assert chain[0] == [[Fraction(v, K) for v in row] for row in fbar]


@pytest.mark.parametrize("K", [2, 3])
def test_chain_evaluation_on_n3(K):
    """The d = 1, n = 3 network (2 n + 1 layers: more attention layers than the window covers)."""
    net, P, tgt, fbar, params = setup(1, 3, "1", "2", "1", "smooth", K=K)
    assert len(net.model.layers) == 2 * 3 + 1
    chain = evaluate_cells(net, P, method="chain")
    assert _same(chain, evaluate_cells(net, P, method="full"))
    assert _same(chain, evaluate_cells(net, P))
    assert chain[0] == [[Fraction(v, K) for v in row] for row in fbar]


def _sawtooth_net():
    """The n = 2 network (K = 3) with a layer before the last whose MLP zig-zags with slope +-1
    between every two consecutive prompt states (before the head's shift), so the prompt rows fall
    into many pieces (9 for 18 rows)."""
    net, P, tgt, fbar, params = setup(1, 2, "1", "2", "1", "smooth", K=3)
    Q1, G, F = net.model.layers
    xs = sorted({Fraction(x) for x in net.encode_prompt(P).reshape(-1)})
    pts = [(x, Fraction(k % 2)) for k, x in enumerate(xs)]
    saw = Layer("hardmax", [_head(1, 1, 1, Fraction(1, 8))], *_mlp(pts, 0, 0))
    return _with_layers(net, [Q1, saw, G, F]), P


def test_chain_work_limit_refuses_a_network_whose_pieces_blow_up(monkeypatch):
    net, P = _sawtooth_net()
    ref = evaluate_cells(net, P, method="full")
    assert _same(evaluate_cells(net, P, method="chain"), ref)
    monkeypatch.setattr(U, "MAX_CHAIN_WORK", 400)
    with pytest.raises(NotCertified, match="MAX_CHAIN_WORK"):
        evaluate_cells(net, P, method="chain")
    with pytest.raises(NotCertified, match="MAX_CHAIN_WORK"):
        evaluate_cells(net, P)
    assert _same(evaluate_cells(net, P, method="full"), ref)          # the full evaluation has no such limit
    monkeypatch.setattr(U, "MAX_CHAIN_WORK", 1 << 30)
    monkeypatch.setattr(U, "MAX_CHAIN_DEN_BITS", 2)
    with pytest.raises(NotCertified, match="MAX_CHAIN_DEN_BITS"):
        evaluate_cells(net, P, method="chain")


def test_chain_evaluation_routing(monkeypatch):
    # d = 2 and softmax: no chain; "auto" keeps the full evaluation there
    net, P, *_ = setup(2, 1, "1", "2", "1", "smooth", K=3)
    with pytest.raises(NotCertified):
        evaluate_cells(net, P, method="chain")
    net, P, *_ = setup(1, 2, "1", "2", "1", "smooth", temperature="1/64", K=3)
    with pytest.raises(NotCertified):
        evaluate_cells(net, P, method="chain")
    auto = evaluate_cells(net, P)
    assert auto == evaluate_cells(net, P, method="full") and all(e > 0 for e in auto[1])
    with pytest.raises(ValueError):
        evaluate_cells(net, P, method="nope")
    # where the window's facts hold, "auto" still uses the window and never builds the chain
    net, P, *_ = setup(1, 2, "1", "2", "1", "relu-net", K=4)

    def no_chain(*a, **k):
        raise AssertionError("the chain was built where the window applies")
    monkeypatch.setattr(U._Chain, "build", staticmethod(no_chain))
    assert _same(evaluate_cells(net, P), evaluate_cells(net, P, method="window"))
