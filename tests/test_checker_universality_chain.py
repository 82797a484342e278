"""The trusted checker's chain evaluation of Theorem U networks with d = 1 (any number of hardmax
attention layers after the token-wise prefix): exactly equal to its full evaluation, refused
past its work and size limits, and routed to by "auto" only where the windowed one does not run."""
from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.model import Head, Layer
from verify.checker import universality as cu
from verify.checker.numbers import Reject
from verify.checker.questions import parse_question
from verify.provers.universality import _inputs, evaluate_cells, outputs_sha256, setup, universality_question

SMALL = st.sampled_from([Fraction(k, 2) for k in (-4, -3, -2, -1, 1, 2, 3, 4)])      # nonzero


def _arr(rows) -> np.ndarray:
    return np.array([[Fraction(x) for x in r] for r in rows], dtype=object)


def _layer(heads: list, units: list, b2=0) -> Layer:
    """A d = 1 hardmax layer: heads (q, k, v, o) as 1x1 matrices (score q k z_query z_key, W_ov = o v),
    the residual MLP z + b2 + sum co relu(w z + b) from units (w, b, co)."""
    units = units or [(0, 0, 0)]
    heads = heads or [(0, 0, 0, 0)]         # the file format needs a head: one that adds nothing
    hs = [Head(_arr([[q]]), _arr([[k]]), _arr([[v]]), _arr([[o]])) for q, k, v, o in heads]
    return Layer("hardmax", hs, _arr([[w] for w, _, _ in units]), np.array([Fraction(b) for _, b, _ in units],
                 dtype=object), _arr([[co for _, _, co in units]]), np.array([Fraction(b2)], dtype=object))


def _dead_zone(a) -> list:
    """Units of z -> z - clip(z, -a, a) (every |z| <= a goes to exactly 0), with b2 = a."""
    return [(1, a, -1), (1, -a, 1)]


def _probe(lo, s, heads: list) -> Layer:
    """A last layer whose MLP is clip((z - lo) / s, 0, 1) (certified into [0, 1]): outputs that
    resolve the states instead of the construction's lookup values."""
    return _layer(heads, [(1, 0, -1), (-1, 0, 1), (1, -lo, Fraction(1) / s), (1, -(lo + s), -Fraction(1) / s)])


def _parsed(net, P, params) -> tuple:
    """(instance, model, input positions, prompt positions) as the checker reads them."""
    inst = cu.instance(parse_question(universality_question(params))[1])
    return (inst, *cu._network(_inputs(net, P, params)["network"]["embedded"], inst))


def _cells(net, P, params, method):
    """The checker's evaluation of every cell of the (possibly edited) network with prompt P."""
    inst, model, pin, ppr = _parsed(net, P, params)
    rows = [[Fraction(x) for x in r] for r in P.tolist()]
    return cu.evaluate_cells(model, pin, ppr, rows, inst, method=method)


def _attend_rows(pr: dict, z: list, queries) -> list:
    """Hardmax attention of a d = 1 layer row by row (the reference for the traces): a query of
    sign sign(v z) reads the mean state of the rows with the largest (+1) or smallest (-1) key
    u z, or of all rows (0); every head reads the states before any addition."""
    add = [Fraction(0)] * len(z)
    for h in pr["heads"]:
        u, v, wov = h["u"][0], h["v"][0], h["Wov"][0][0]
        keys = [u * x for x in z]
        for a in queries:
            q = (v * z[a] > 0) - (v * z[a] < 0)
            rows = (range(len(z)) if q == 0 else
                    [b for b, k in enumerate(keys) if k == (max(keys) if q > 0 else min(keys))])
            add[a] += wov * sum((z[b] for b in rows), Fraction(0)) / len(rows)
    return [x + y for x, y in zip(z, add)]


def _traced(net, P, params) -> int:
    """Every cell through the chain evaluation with its trace: after every layer but the last the
    pieces must be non-empty, disjoint, in order, cover all prompt rows, no two neighbours with the
    same affine map, and give every prompt row (in the sorted order) the state that a row-by-row
    evaluation gives it; the input rows too, and the outputs. Returns the number of pieces seen."""
    inst, model, pin, ppr = _parsed(net, P, params)
    preps, npref = cu._split(model, None)
    Zp, Dp = cu._to_int([[Fraction(a) + b for a, b in zip(t, q)] for t, q in zip(P.tolist(), ppr)])
    for pr in preps[:npref]:
        Zp, Dp = cu._mlp_int(pr, Zp, Dp)
    C = cu._chain_facts(preps, npref, Zp, Dp, 0)
    xs, seen = C["xs"], 0
    for c in range(inst.N):
        box = cu.cell_box(c, inst)
        toks = [cu._input_token(preps[:npref], pin[t], [box[t]]) for t in range(inst.n)]
        trace: list = []
        outs = cu._chain_cell(C, toks, trace)
        z = [Fraction(x, Dp) for x in xs] + [t[0] for t in toks]
        for pr, (pieces, zin) in zip(preps[npref:-1], trace):
            z = [cu._mlp_frac(pr, [x])[0] for x in _attend_rows(pr, z, range(len(z)))]
            assert pieces[0][0] == 0 and pieces[-1][1] == len(xs)
            assert all(lo < hi for lo, hi, _, _ in pieces)
            assert all(p[1] == q[0] and p[2:] != q[2:] for p, q in zip(pieces, pieces[1:]))
            assert [a * xs[i] + b for lo, hi, a, b in pieces for i in range(lo, hi)] == z[:len(xs)]
            assert zin == z[len(xs):]
            seen += len(pieces)
        last = _attend_rows(preps[-1], z, range(len(xs), len(z)))[len(xs):]
        assert outs == [cu._mlp_frac(preps[-1], [x])[0] for x in last]
    return seen


def _same(a, b) -> bool:
    return outputs_sha256(a[0]) == outputs_sha256(b[0]) and a[0] == b[0] and a[1] == b[1]


@st.composite
def _heads(draw, max_heads=3):
    """0 to max_heads rank-1 heads: keys of either sign (q k < 0 reads the smallest state for a
    positive query), W_ov of either sign or 0 (a head that adds nothing)."""
    out = []
    for _ in range(draw(st.integers(0, max_heads))):
        v = draw(st.sampled_from([Fraction(0), Fraction(1), Fraction(-1, 2), Fraction(2)]))
        out.append((draw(SMALL), draw(SMALL), v, draw(SMALL)))
    return out


@st.composite
def _units(draw, lo=-60, hi=900):
    """A random piecewise-linear residual MLP: breakpoints in [lo, hi] (where the states are),
    slopes of either sign, units of weight 0 (a constant), sometimes a dead zone around 0."""
    units, b2 = [], Fraction(0)
    for _ in range(draw(st.integers(0, 5))):
        w = draw(st.sampled_from([Fraction(k, 2) for k in (-2, -1, 0, 1, 2)]))
        t = Fraction(draw(st.integers(2 * lo, 2 * hi)), 2)
        co = draw(st.sampled_from([Fraction(k, 4) for k in (-6, -4, -3, -2, -1, 1, 2, 3, 4)]))
        units.append((w, -w * t if w else t, co))
    if draw(st.booleans()):
        a = Fraction(draw(st.integers(1, 400)))
        units += _dead_zone(a)
        b2 += a
    return units, b2


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([1, 2]), st.sampled_from(["smooth", "token-mix", "relu-net"]), st.integers(0, 1000),
       st.integers(1, 3), st.booleans(), st.data())
def test_chain_equals_the_full_evaluation_on_random_d1_networks(n, target, seed, extra, probe, data):
    """Random hardmax layers (rank-1 heads with keys of either sign, zero W_ov, several heads per
    layer; random piecewise-linear MLPs, dead zones that put states at exactly 0 so queries of sign
    0 read the mean of all rows) inserted after the token-wise prefix, a last layer that is the
    construction's lookup or a probe reading the states, random prompt values and positions
    (shuffled, jittered, colliding): the chain evaluation gives exactly the full one's outputs."""
    net, P, tgt, fbar, params = setup(1, n, "1", "2", "1", target, seed=seed, K=3)
    layers = list(net.model.layers)
    for _ in range(extra):
        units, b2 = data.draw(_units())
        at = data.draw(st.integers(1, len(layers) - 1))
        layers.insert(at, _layer(data.draw(_heads()), units, b2))
    if probe:
        lo = Fraction(data.draw(st.integers(-200, 600)))
        layers[-1] = _probe(lo, Fraction(data.draw(st.integers(1, 800))), data.draw(_heads(2)) or [(1, 1, 1, 1)])
    m_p = net.m_p
    vals = data.draw(st.lists(st.integers(-4, 16), min_size=m_p, max_size=m_p))
    P2 = np.array([[Fraction(v, 16)] for v in vals], dtype=object)
    perm = data.draw(st.permutations(range(m_p)))
    jit = data.draw(st.lists(st.integers(-8, 12), min_size=m_p, max_size=m_p))
    # an offset moves the prompt rows across 0 (pieces cut at 0, rows at exactly 0) and sometimes
    # below or above every input row (extremes at a piece's either end)
    off = data.draw(st.sampled_from([0, -150, -200, 200, 400]))
    pos = net.pos_prompt.copy()
    for j in range(m_p):
        pos[j, 0] = net.pos_prompt[perm[j], 0] + Fraction(jit[j], 2) + off
    net2 = dataclasses.replace(net, model=dataclasses.replace(net.model, layers=layers), pos_prompt=pos)
    try:
        full = _cells(net2, P2, params, "full")
    except Reject as e:      # a random network whose states outgrow the reference's integer limit
        assert "bits" in str(e), str(e)
        return
    chain = _cells(net2, P2, params, "chain")
    assert _same(full, chain)
    assert _same(_cells(net2, P2, params, "auto"), full)
    _traced(net2, P2, params)
    assert _same(evaluate_cells(net2, P2, method="full"), chain)        # the producer's reference too


def test_chain_equals_the_full_evaluation_with_zero_queries_and_negative_keys():
    """Fixed cases of what the random test draws: a dead zone that maps some prompt rows (and,
    for some cells, input rows) to exactly 0 before a layer of three heads, one reading the
    smallest state (q k < 0), one the largest and one adding nothing; pieces cut at 0 and at the
    breakpoints of the MLPs, merged again where a flat MLP piece makes them equal."""
    net, P, tgt, fbar, params = setup(1, 2, "1", "2", "1", "smooth", K=4)
    layers = list(net.model.layers)
    zone = _layer([(1, 1, 1, Fraction(-1, 1000))], _dead_zone(Fraction(300)), 300)
    mix = _layer([(1, -1, 1, Fraction(1, 3)), (2, 1, 1, Fraction(-1, 5)), (1, 1, 0, 1)],
                 [(1, -10, Fraction(1, 2)), (-1, 20, -1), (1, -200, Fraction(-3, 2)), (0, 7, 1)], 1)
    layers[-1:-1] = [zone, mix]
    for last in (layers[-1], _probe(Fraction(-100), Fraction(1000), [(1, 1, 1, 1), (-1, 1, 1, Fraction(1, 2))])):
        net2 = dataclasses.replace(net, model=dataclasses.replace(net.model, layers=layers[:-1] + [last]))
        full = _cells(net2, P, params, "full")
        assert _same(_cells(net2, P, params, "chain"), full)
        assert _same(evaluate_cells(net2, P, method="full"), full)


def test_chain_cuts_pieces_at_zero_and_reads_extremes_at_either_end():
    """Prompt rows at 40 (j - 6): one piece across 0 with a row at exactly 0 (its queries have
    sign 0 and read the mean of all rows), the largest and the smallest state both prompt rows,
    at the piece's two ends; heads with keys of both signs; then an MLP with a negative slope (a
    piece with a < 0, cut at breakpoints from the other side) and a flat part (merged pieces).
    Every prompt row's state after every layer equals the row-by-row evaluation's."""
    net, P, tgt, fbar, params = setup(1, 2, "1", "2", "1", "smooth", K=3)
    pos = net.pos_prompt.copy()
    for j in range(net.m_p):
        pos[j, 0] = Fraction(40 * (j - 6))
    P0 = np.array([[Fraction(0)] for _ in range(net.m_p)], dtype=object)
    first = _layer([(1, 1, 1, Fraction(1, 8)), (1, -1, 1, Fraction(-1, 4)), (2, 3, Fraction(1, 2), 1)],
                   [(-1, 0, 2), (1, -100, -1), (-1, -300, Fraction(1, 2))])
    second = _layer([(-1, 1, 1, Fraction(1, 5)), (1, 1, 2, Fraction(-1, 3))], _dead_zone(Fraction(60)), 60)
    probe = _probe(Fraction(-5000), Fraction(10000), [(1, 1, 1, 1), (1, -1, 1, Fraction(1, 2))])
    layers = [net.model.layers[0], first, second, probe]
    net2 = dataclasses.replace(net, model=dataclasses.replace(net.model, layers=layers), pos_prompt=pos)
    assert _traced(net2, P0, params) > 2 * net2.N * 2
    assert _same(_cells(net2, P0, params, "chain"), _cells(net2, P0, params, "full"))


@pytest.mark.parametrize("K", [2, 3])
def test_chain_on_the_n3_construction_equals_full_and_fbar(K):
    """The construction for n = 3 (d = 1: 2n + 1 layers, 2n attention layers after the prefix,
    beyond the windowed evaluation's two): chain == full == fbar on every cell."""
    net, P, tgt, fbar, params = setup(1, 3, "1", "2", "1", "smooth", K=K)
    assert len(net.model.layers) == 7
    full = _cells(net, P, params, "full")
    chain = _cells(net, P, params, "chain")
    assert _same(full, chain)
    assert chain[0] == [[Fraction(v, K) for v in row] for row in fbar]
    assert _same(_cells(net, P, params, "auto"), chain)


def _sawtooth(m_p: int) -> tuple:
    """A prefix-adjacent layer whose MLP gives every prompt row its own affine piece: a unit of
    slope 1/2 between every two consecutive prompt positions (so m_p pieces that never merge)."""
    return [(1, -Fraction(4 * j + 2), Fraction(1, 2)) for j in range(m_p)]


def test_chain_refuses_past_its_work_budget(monkeypatch):
    """A network whose pieces blow up (one per prompt row) is evaluated exactly within the default
    budget and refused, naming MAX_CHAIN_WORK, when the running count passes a smaller one that
    the up-front least estimate still admits; below that estimate it is refused before any cell."""
    net, P, tgt, fbar, params = setup(1, 2, "1", "2", "1", "smooth", K=4)
    layers = list(net.model.layers)
    lo = min(net.pos_prompt[:, 0])
    saw = [(w, b - lo, co) for w, b, co in _sawtooth(net.m_p)]
    layers[1:1] = [_layer([(1, 1, 1, Fraction(1, 1000))], saw), _layer([(1, -1, 1, Fraction(1, 7))], [])]
    net2 = dataclasses.replace(net, model=dataclasses.replace(net.model, layers=layers))
    full = _cells(net2, P, params, "full")
    pieces = []
    real = cu._chain_cell

    def counting(C, toks):
        left = C["left"][0]
        out = real(C, toks)
        pieces.append(left - C["left"][0])
        return out
    monkeypatch.setattr(cu, "_chain_cell", counting)
    assert _same(_cells(net2, P, params, "chain"), full)
    monkeypatch.setattr(cu, "_chain_cell", real)
    # the least estimate charges one piece per layer; these cells need several times that
    inst, model, *_ = _parsed(net2, P, params)
    preps, npref = cu._split(model, None)
    before, least = cu._chain_work(preps, npref, inst)
    assert sum(pieces) > 3 * least
    monkeypatch.setattr(cu, "MAX_CHAIN_WORK", before + 2 * least)
    with pytest.raises(Reject, match="MAX_CHAIN_WORK"):
        _cells(net2, P, params, "chain")
    with pytest.raises(Reject, match="MAX_CHAIN_WORK"):
        _cells(net2, P, params, "auto")
    monkeypatch.setattr(cu, "MAX_CHAIN_WORK", before + least - 1)
    with pytest.raises(Reject, match="needs at least"):
        _cells(net2, P, params, "chain")


def test_chain_refuses_states_beyond_the_bit_limit():
    """Layers that multiply the states by 2^60 each: past MAX_STATE_BITS the chain evaluation is
    refused by name (the full one refuses as well)."""
    net, P, tgt, fbar, params = setup(1, 2, "1", "2", "1", "smooth", K=3)
    layers = list(net.model.layers)
    big = (1 << 60) - 1
    grow = _layer([(1, 1, 1, Fraction(1, 2))], [(1, 0, big), (-1, 0, -big)])      # z -> 2^60 z
    layers[-1:-1] = [grow] * 5
    net2 = dataclasses.replace(net, model=dataclasses.replace(net.model, layers=layers))
    with pytest.raises(Reject, match="MAX_STATE_BITS"):
        _cells(net2, P, params, "chain")
    with pytest.raises(Reject, match="bits"):
        _cells(net2, P, params, "full")


def test_methods_route_as_documented(monkeypatch):
    """Method "chain" needs d = 1 and hardmax; "auto" keeps the windowed evaluation wherever its
    facts hold and takes the chain (not the full evaluation) for other d = 1 hardmax networks."""
    net, P, tgt, fbar, params = setup(2, 1, "1", "2", "1", "smooth", K=3)
    with pytest.raises(Reject, match="d = 1 and hardmax"):
        _cells(net, P, params, "chain")
    net, P, tgt, fbar, params = setup(1, 2, "1", "2", "1", "smooth", temperature="1/64", K=3)
    with pytest.raises(Reject, match="d = 1 and hardmax"):
        _cells(net, P, params, "chain")
    net, P, tgt, fbar, params = setup(1, 2, "1", "2", "1", "relu-net", seed=4, K=4)
    win = _cells(net, P, params, "window")
    assert _same(_cells(net, P, params, "chain"), win)

    def refuse(*a, **k):
        raise AssertionError("not this evaluator")
    monkeypatch.setattr(cu, "_chain_cell", refuse)
    assert _same(_cells(net, P, params, "auto"), win)            # the window's facts hold: unchanged
    monkeypatch.undo()
    # a prompt row at a negative position: the gather heads' query signs differ, no window
    pos = net.pos_prompt.copy()
    pos[0, 0] = Fraction(-50)
    net2 = dataclasses.replace(net, pos_prompt=pos)
    full = _cells(net2, P, params, "full")
    monkeypatch.setattr(cu, "_cell", refuse)
    assert _same(_cells(net2, P, params, "auto"), full)
    assert _same(_cells(net2, P, params, "chain"), full)
    with pytest.raises(Reject):
        _cells(net2, P, params, "window")
    with pytest.raises(Reject, match="unknown method"):
        _cells(net2, P, params, "fast")


def _rows_reference(xs: list, layers: list, zin: Fraction) -> Fraction:
    """Row by row: every head reads the rows' states before any head adds (query sign of z times
    the key sign u: the largest, the smallest or the mean of all), then the layer's MLP (here a
    shift b2); the last layer's output at the input row."""
    rows = [Fraction(x) for x in xs] + [zin]
    for li, (heads, b2) in enumerate(layers):
        new = []
        for z in rows:
            add = Fraction(0)
            for u, wov in heads:
                sg = (z > 0) - (z < 0)
                sg = sg * ((u > 0) - (u < 0))
                pick = max(rows) if sg > 0 else min(rows) if sg < 0 else sum(rows) / len(rows)
                add += wov * pick
            new.append(z + add + b2)
        rows = new
    return rows[-1]


def test_chain_query_sign_just_above_a_fractional_zero_crossing():
    """A piece whose state crosses 0 between two prompt rows (alpha x + beta = 0 at x = 1/3): the
    row just above the crossing has query sign +1, not 0.  Fed to the chain directly (prompt rows
    -2, -1, 1, 2 over the denominator 1), against a row-by-row reference; a cut that rounds the
    crossing the wrong way gives 4/15 instead of -7/30."""
    import itertools
    import verify.checker.universality as cu
    spec = [([(1, 0)], Fraction(-1, 3)), ([(1, -1)], Fraction(0)), ([(-1, Fraction(1, 2))], Fraction(0))]
    layers = [cu._chain_layer({"heads": [{"u": [Fraction(u)], "v": [Fraction(1)], "Wov": [[Fraction(o)]]}
                                         for u, o in heads], "units": [], "b2": [b2]}) for heads, b2 in spec]
    xs = [-2, -1, 1, 2]
    zin = Fraction(1, 3)
    facts = {"Dp": 1, "m_p": len(xs), "xs": xs, "cum": list(itertools.accumulate(xs, initial=0)), "lgm": 3,
             "layers": layers, "left": [1 << 40]}
    want = _rows_reference(xs, spec, zin)
    assert want == Fraction(-7, 30)
    assert cu._chain_cell(facts, [[zin]]) == [want]
