"""Theorem U for d = 1 and n >= 3: the broadcast construction (``proofs/universality.md``,
"n >= 3 (d = 1): the broadcast construction")."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.forward import forward_exact
from constructions.model import InputError
from constructions.universality import (TARGETS, region_points, broadcast_spacing, build_network, build_prompt,
                                        build_target, cell_digits, forward_float, pl_eval, pl_units_left,
                                        quantized_function, ramp_width)
from verify.provers.universality import RankOneFloat, cell_box, evaluate_cells


def _net(n, K, target="relu-net", seed=1, L=Fraction(1), kind="hardmax", T=None):
    w = ramp_width(Fraction(1), Fraction(2), 1, n, K)
    net = build_network(1, n, K, w, kind=kind, temperature=T)
    tgt = build_target(target, 1, n, L, seed=seed)
    fbar = quantized_function(tgt, K)
    return net, build_prompt(fbar, 1, n, K), fbar


def _fbar_values(fbar, K):
    return [[Fraction(v, K) for v in row] for row in fbar]


def _grid_point(c, K, n):
    return np.array([[Fraction(k, K)] for k in cell_digits(c, K, n)], dtype=object)


@pytest.mark.parametrize("n,K,target", [(3, 2, "smooth"), (3, 3, "relu-net"), (3, 5, "token-mix"),
                                        (4, 2, "token-mix"), (4, 3, "relu-net"), (5, 2, "smooth")])
def test_outputs_equal_fbar_on_every_flat_box(n, K, target):
    """The full evaluation (all m_p + n rows through every layer, exact) gives fbar on every cell."""
    net, P, fbar = _net(n, K, target)
    values, etas = evaluate_cells(net, P, method="full")
    assert values == _fbar_values(fbar, K)
    assert all(e == 0 for e in etas)
    counts = net.counts()
    assert counts["depth"] == 2 * n + 1 == len(net.model.layers)
    assert counts["heads_per_layer"] == [1] * (2 * n + 1)
    assert net.m_p == n * K ** n
    assert net.layout["S"] == broadcast_spacing(n) == 2 ** (n - 1) + 2


def _generic_forward_gives_fbar(n, K, name, seed, L):
    net, P, fbar = _net(n, K, name, seed, L)
    Pe = net.encode_prompt(P)
    for c in range(net.N):
        out = forward_exact(net.model, net.encode_input(_grid_point(c, K, n)), Pe)
        got = [out[s, 0] for s in range(n)]
        assert all(v.is_point for v in got)
        assert [v.lo for v in got] == [Fraction(v, K) for v in fbar[c]]


@settings(max_examples=3, deadline=None)
@given(st.sampled_from(sorted(TARGETS)), st.integers(1, 12), st.integers(0, 10_000))
def test_generic_exact_forward_pass_gives_fbar_at_every_grid_point(name, L4, seed):
    """The generic exact forward pass of ``constructions.forward`` (no rank-1 shortcut) agrees."""
    _generic_forward_gives_fbar(3, 2, name, seed, Fraction(L4, 4))


@pytest.mark.slow
def test_generic_exact_forward_pass_at_K3():
    _generic_forward_gives_fbar(3, 3, "relu-net", 7, Fraction(3, 2))


def _trace(net, P, X):
    """Every row's exact state before each attention layer (a plain loop over rows: one more
    reference, sharing no code with either evaluator)."""
    rows = [Fraction(x) for x in net.encode_prompt(P)[:, 0]] + [Fraction(x) for x in net.encode_input(X)[:, 0]]
    seen, pre = [], []
    for li, la in enumerate(net.model.layers):
        if li > 0:
            seen.append(list(rows))
            h = la.heads[0]
            a = Fraction(h.W_q[0, 0]) * Fraction(h.W_k[0, 0])
            wov = Fraction(h.W_o[0, 0]) * Fraction(h.W_v[0, 0])
            top = max(rows)
            assert a > 0 and all(z * a > 0 for z in rows)      # every query attends to the maximum
            rows = [z + wov * top for z in rows]
            pre.append(list(rows))
        W1, b1, W2, b2 = la.W_1, la.b_1, la.W_2, la.b_2
        rows = [z + Fraction(b2[0]) + sum(Fraction(W2[0, k]) * max(Fraction(W1[k, 0]) * z + Fraction(b1[k]), 0)
                                         for k in range(W1.shape[0])) for z in rows]
    _trace.pre = pre
    return seen, rows[-net.n:]


@pytest.mark.parametrize("n,K", [(3, 3), (4, 2)])
def test_every_attention_layer_reads_one_row_and_every_row_stays_positive(n, K):
    """The invariants the proof relies on, on every cell's flat-box corner: at every attention
    layer all rows are >= 1 (so every query reads the maximum) and the maximum is attained by one
    row only (no tie: the softmax version has a positive gap); the gather's rows are the input
    tokens n-1, ..., 0 in turn, the lookup's the prompt row of position s of the cell."""
    net, P, fbar = _net(n, K, "relu-net", seed=4)
    m_p = net.m_p
    for c in range(net.N):
        seen, out = _trace(net, P, _grid_point(c, K, n))
        assert out == [Fraction(v, K) for v in fbar[c]]
        for li, rows in enumerate(seen):
            assert min(rows) >= 1
            top = max(rows)
            who = [j for j, z in enumerate(rows) if z == top]
            assert len(who) == 1
            want = m_p + (n - 1 - li) if li < n else n * c + (li - n)
            assert who[0] == want, (c, li, who)
        # every row meets each MLP inside one of the regions the builder mapped affinely (the
        # last MLP maps only the input rows: prompt rows there are discarded)
        for li, (rows, regs) in enumerate(zip(_trace.pre, net.layout["regions"])):
            last = li == 2 * n - 1
            for j, z in enumerate(rows):
                if last and j < m_p:
                    continue
                assert any(lo <= z <= hi for lo, hi, _, _ in regs), (c, li + 1, j, z)


def test_flat_box_interior_points_float_and_rank_one_pass_agree():
    """Float64 passes (forward_torch and the rank-1 pass) agree with each other and with fbar at
    points inside the flat boxes (a measurement: the certificate never uses them)."""
    n, K = 3, 3
    net, P, fbar = _net(n, K, "smooth")
    rng = np.random.default_rng(0)
    cells = rng.integers(0, net.N, 24)
    X = np.zeros((len(cells), n, 1))
    for b, c in enumerate(cells):
        for t, (lo, hi) in enumerate(cell_box(int(c), K, net.w, n)):
            X[b, t, 0] = float(lo) + rng.random() * float(hi - lo)
    ff, r1 = forward_float(net, P, X), RankOneFloat(net, P)(X)
    assert np.max(np.abs(ff - r1)) < 1e-6
    want = np.array([[[v / K] for v in fbar[int(c)]] for c in cells])
    assert np.max(np.abs(ff - want)) < 1e-6


def test_softmax_version_is_within_its_radius_of_fbar():
    net, P, fbar = _net(3, 3, "token-mix", kind="softmax", T=Fraction(1, 64))
    values, etas = evaluate_cells(net, P, method="full")
    assert values == _fbar_values(fbar, 3)
    assert 0 < max(etas) < Fraction(1, 10 ** 100)


def test_d_above_1_with_three_tokens_is_refused():
    with pytest.raises(InputError) as e:
        build_network(2, 3, 3, Fraction(1, 48))
    assert e.value.field == "--n"
    with pytest.raises(InputError):
        build_network(1, 0, 3, Fraction(1, 48))


def test_overlapping_regions_are_refused_when_the_map_is_built():
    assert region_points([(0, 1, 5, 0), (2, 3, 7, 1)]) == [(0, 5), (1, 5), (2, 7), (3, 8)]
    with pytest.raises(ValueError):
        region_points([(0, 1, 5, 0), (Fraction(5, 4), 3, 7, 1)])
    with pytest.raises(ValueError):
        region_points([(0, 2, 5, 0), (1, 3, 7, 1)])


@settings(max_examples=25)
@given(st.lists(st.tuples(st.integers(-20, 20), st.integers(-9, 9)), min_size=1, max_size=6, unique_by=lambda t: t[0]),
       st.integers(-2, 2), st.integers(-2, 2))
def test_left_active_units_match_the_map_and_vanish_right_of_the_points(pts, sl, sr):
    pts = sorted(pts)
    units, c = pl_units_left(pts, sl, sr)
    for z in [Fraction(k, 3) for k in range(-75, 76)]:
        terms = [co * max(s * (z - b), 0) for s, b, co in units]
        assert z + c + sum(terms) == pl_eval(pts, sl, sr, z)
        if z >= pts[-1][0]:
            assert all(t == 0 for (s, _, _), t in zip(units, terms) if s < 0)
    assert sum(1 for s, _, _ in units if s > 0) == (sr != 1)


@pytest.mark.slow
def test_d1_n3_at_the_formula_grid_verified_and_checked():
    """Theorem U at d = 1, n = 3, eps = 1/4: K = 28, N = 21,952 cells, m_p = 65,856 (minutes)."""
    import json

    from verify.checker import check_result
    from verify.provers.universality import run_universality
    r = run_universality(1, 3, "1", "2", "1/4", "relu-net", samples=256)
    rep = r.extra["report"]
    assert r.status.value == "verified"
    assert (rep["K"], rep["m_p"], r.reported["cells"]) == (28, 65856, 21952)
    assert rep["m_p"] == rep["m_p_formula"] == 3 * 28 ** 3
    assert (rep["depth"], rep["heads_per_layer"]) == (7, [1] * 7)
    assert r.reported["cells_equal_fbar"] == 21952
    ok, msg = check_result(json.loads(json.dumps(r.to_json(), allow_nan=False)))
    assert ok, msg


def test_the_exact_evaluation_reports_its_stage_and_cells():
    """The universality run reports the stage "exact cell values" and cell i of N (every 16th) to
    the current progress reporter (the CLI shows them on a terminal)."""
    from test_cli_ux import Recorder
    from verify.progress import use
    from verify.provers.universality import run_universality
    rep = Recorder(True, False)
    with use(rep):
        res = run_universality(1, 3, "1", "2", "1", "token-mix", K=3, samples=0)
    assert res.status.value == "verified"
    assert ("stage", "exact cell values") in rep.calls
    steps = [c for c in rep.calls if c[0] == "step"]
    assert steps and all(c[2] == 27 and c[3] == "cell" for c in steps)
    assert [c[1] for c in steps] == list(range(1, 28, 16))
