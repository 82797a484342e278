"""Theorem U: the lookup-table construction, its exact evaluation and the rigorous d_p bound."""
from __future__ import annotations

import json
import math
import os
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.forward import forward_exact
from constructions.universality import (TARGETS, build_network, build_prompt, build_target, cell_digits,
                                        decode_prompt, delta_K, pl_eval, pl_units, quantized_function,
                                        ramp_width)
from verify.checker import check_result
from verify.claims.universality import CLAIMS
from verify.provers.universality import evaluate_cells, run_universality, rpow_down, rpow_up, setup, sweep

SMALL = [(1, 2), (2, 1), (1, 1)]


@st.composite
def lipschitz_targets(draw, shapes=SMALL):
    """A random target in F_L: a registered family with random L, shape and seed (random ReLU
    networks rescaled to a certified constant among them)."""
    d, n = draw(st.sampled_from(shapes))
    name = draw(st.sampled_from(sorted(TARGETS)))
    L = Fraction(draw(st.integers(1, 12)), 4)
    seed = draw(st.integers(0, 10_000))
    return build_target(name, d, n, L, seed=seed)


def _grid_point(c, K, d, n):
    dig = cell_digits(c, K, d * n)
    return np.array([[Fraction(dig[s * d + i], K) for i in range(d)] for s in range(n)], dtype=object)


@settings(max_examples=6)
@given(lipschitz_targets())
def test_hardmax_network_reproduces_fbar_on_every_grid_point(tgt):
    K = 3
    d, n = tgt.d, tgt.n
    net = build_network(d, n, K, ramp_width(Fraction(2), Fraction(2), d, n, K))
    fbar = quantized_function(tgt, K)
    P = build_prompt(fbar, d, n, K)
    Pe = net.encode_prompt(P)
    fast, eta = evaluate_cells(net, P)
    assert evaluate_cells(net, P, method="full") == (fast, eta)     # the reference: all rows per cell
    for c in range(net.N):
        out = forward_exact(net.model, net.encode_input(_grid_point(c, K, d, n)), Pe)
        got = [out[s, i] for s in range(n) for i in range(d)]
        assert all(v.is_point for v in got)
        want = [Fraction(v, K) for v in fbar[c]]
        assert [v.lo for v in got] == want          # the generic exact forward pass
        assert fast[c] == want                      # the fast box evaluator used by the bound
    assert all(e == 0 for e in eta)


@settings(max_examples=10)
@given(st.sampled_from(SMALL), st.integers(2, 4), st.data())
def test_distinct_quantized_functions_get_distinct_prompts(shape, K, data):
    d, n = shape
    N = K ** (d * n)
    table = st.lists(st.lists(st.integers(0, K - 1), min_size=d * n, max_size=d * n), min_size=N, max_size=N)
    f1, f2 = data.draw(table), data.draw(table)
    P1, P2 = build_prompt(f1, d, n, K), build_prompt(f2, d, n, K)
    assert P1.shape == (n * N, d)
    assert decode_prompt(P1, d, n, K) == f1
    assert all(Fraction(0) <= x < 1 and (x * K).denominator == 1 for x in P1.reshape(-1))  # grid tokens
    assert (f1 == f2) == bool(np.all(P1 == P2))


@settings(max_examples=25)
@given(lipschitz_targets(shapes=[(1, 2), (2, 1), (2, 2), (3, 1)]), st.data())
def test_targets_are_in_F_L_with_their_certified_constant(tgt, data):
    dn = tgt.d * tgt.n
    pt = st.lists(st.fractions(0, 1, max_denominator=64), min_size=dn, max_size=dn)
    x, y = data.draw(pt), data.draw(pt)
    fx, fy = tgt.f_exact(x), tgt.f_exact(y)
    assert all(0 <= v <= 1 for v in fx)
    assert tgt.lipschitz <= tgt.L
    for p in (1, 2):
        lhs = sum(abs(a - b) ** p for a, b in zip(fx, fy))
        rhs = tgt.lipschitz ** p * sum(abs(a - b) ** p for a, b in zip(x, y))
        assert lhs <= rhs
    assert np.allclose(tgt.f_float(np.array([[float(v) for v in x]])), [[float(v) for v in fx]], atol=1e-12)


@settings(max_examples=25)
@given(st.lists(st.tuples(st.integers(-20, 20), st.integers(-9, 9)), min_size=1, max_size=6, unique_by=lambda t: t[0]),
       st.integers(-2, 2), st.integers(-2, 2))
def test_piecewise_linear_units_match_the_map(pts, sl, sr):
    pts = sorted(pts)
    units, c = pl_units(pts, sl, sr)
    for z in [Fraction(k, 3) for k in range(-75, 76)]:
        v = z + c + sum(co * max(s * (z - b), 0) for s, b, co in units)
        assert v == pl_eval(pts, sl, sr, z)


def test_exact_powers_and_roots_bracket():
    for x in [Fraction(2), Fraction(1, 3), Fraction(10, 7)]:
        for p in [Fraction(1), Fraction(2), Fraction(3, 2), Fraction(1, 2), Fraction(1, 3)]:
            assert rpow_down(x, p) <= Fraction(float(x) ** float(p)) * (1 + Fraction(1, 10 ** 12))
            assert rpow_up(x, p) >= Fraction(float(x) ** float(p)) * (1 - Fraction(1, 10 ** 12))
            assert rpow_down(x, p) <= rpow_up(x, p)
            if p.denominator == 1:
                assert rpow_up(x, p) == x ** p


@pytest.mark.parametrize("d,n,eps", [(1, 2, "1"), (2, 1, "1"), (1, 1, "1/2")])
def test_reported_counts_equal_the_formulas(d, n, eps):
    res = run_universality(d, n, "1", "2", eps, "token-mix", samples=0)
    rep = res.extra["report"]
    K = rep["K"]
    e, L, p = Fraction(eps), Fraction(1), 2
    # delta = 1/K is the largest 1/K with delta <= eps / (2 (L + 1) (dn)^(1/p))
    assert (K * e / (2 * (L + 1))) ** p >= d * n
    assert ((K - 1) * e / (2 * (L + 1))) ** p < d * n
    assert K == delta_K(e, L, d, n, Fraction(p))
    assert rep["m_p"] == rep["m_p_formula"] == n * K ** (d * n) == res.reported["m_p"]
    assert rep["C"] == f"{K ** (d * n)}^{K ** (d * n)}"
    assert math.isclose(rep["log10_C"], K ** (d * n) * (d * n) * math.log10(K))
    net, P, *_ = setup(d, n, "1", "2", eps, "token-mix")
    assert rep["depth"] == len(net.model.layers) == (3 if d == 1 else 4)
    assert rep["parameters"] == net.model.n_parameters()
    assert rep["mlp_width"] == max(la.r for la in net.model.layers)
    assert rep["heads_per_layer"][-2] == n


def _checked(res) -> dict:
    obj = json.loads(json.dumps(res.to_json(), allow_nan=False))
    ok, msg = check_result(obj)
    assert ok, msg
    return obj


def test_bound_verified_and_checked(tmp_out):
    res = run_universality(1, 2, "1", "2", "1", "relu-net", seed=3, samples=16)
    assert res.status.value == "verified"
    rep = res.reported
    assert Fraction(rep["bound"]) <= 1
    assert rep["cells_equal_fbar"] == rep["cells"]
    path = os.path.join(tmp_out, "u.json")
    res.write(path)
    with open(path) as fh:
        obj = json.load(fh)
    assert obj["question"]["seed"] == 3 and "temperature" not in obj["question"]
    assert "verdict" not in obj["certificate"]["body"]
    _checked(res)
    # every reported number is re-derived by the checker: changing any one is caught
    for key, v in obj["reported"].items():
        bad = json.loads(json.dumps(obj))
        bad["reported"][key] = (v + 1) if isinstance(v, int) else str(Fraction(v) + Fraction(1, 1 << 70))
        assert not check_result(bad)[0], f"tampering with reported.{key} was not detected"
    assert obj["info"]["report"]["measured"]["samples"] == 16


def test_prover_module_does_not_import_the_cli():
    import subprocess
    import sys
    code = ("import sys, verify.provers.universality; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'typer' or m.startswith('verify.cli')]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_output_range_is_certified_only_for_a_clipping_last_layer():
    from verify.provers.universality import NotCertified, check_output_range
    net, *_ = setup(2, 1, "1", "2", "1", "smooth")
    check_output_range(net.model.layers[-1])
    with pytest.raises(NotCertified):
        check_output_range(net.model.layers[-2])


def test_softmax_version_at_the_reported_temperature():
    res = run_universality(2, 1, "1", "2", "1", "smooth", temperature="1/64", samples=8)
    assert res.status.value == "verified"
    eta = Fraction(res.reported["eta_max"])
    assert 0 < eta < Fraction(1, 10 ** 12)
    assert _checked(res)["question"]["temperature"] == "1/64"
    # far too hot: the perturbation argument no longer applies and nothing is claimed
    hot = run_universality(2, 1, "1", "2", "1", "smooth", temperature="4", samples=0)
    assert hot.status.value != "verified"


def test_too_coarse_delta_is_caught():
    statuses = {}
    for name in sorted(TARGETS):
        r = run_universality(1, 2, "4", "2", "1/20", name, K=2, samples=0)
        statuses[name] = r.status.value
        assert r.status.value != "verified"
        if r.status.value == "refuted":
            assert _checked(r)["question"]["delta"] == "1/2"
    assert "refuted" in statuses.values()


def test_bad_input_exit_code_2_names_the_field():
    from typer.testing import CliRunner
    from verify.cli import app
    runner = CliRunner()
    for args, fld in [(["--d", "2", "--n", "3"], "--n"), (["--n", "0"], "--n"), (["--target", "nope"], "--target"), (["--eps", "0"], "--eps"),
                      (["--p", "1/2"], "--p"), (["--delta", "0.3"], "--delta"),
                      (["--softmax-temperature", "-1"], "--softmax-temperature"), (["--eps", "1e-3"], "--eps")]:
        r = runner.invoke(app, ["universality", "--samples", "0"] + args)
        assert r.exit_code == 2, (args, r.output)
        assert fld in (r.output + (r.stderr if r.stderr_bytes is not None else ""))


def test_cli_expect_and_json(tmp_out):
    from typer.testing import CliRunner
    from verify.cli import app
    out = os.path.join(tmp_out, "r.json")
    r = CliRunner().invoke(app, ["universality", "--d", "1", "--n", "1", "--eps", "1/2", "--target", "smooth",
                                 "--samples", "8", "--json", out, "--expect", "verified"])
    assert r.exit_code == 0, r.output
    assert "m_p" in r.output and "depth" in r.output
    r = CliRunner().invoke(app, ["replay", out])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["universality", "--n", "1", "--eps", "1/20", "--delta", "1/2", "--lipschitz", "4",
                                 "--samples", "0", "--expect", "verified"])
    assert r.exit_code == 1


def test_sweep_writes_plot_and_json(tmp_out):
    data = sweep(tmp_out, 1, 1, "1", "2", "token-mix", eps_values=("1", "1/2"), samples=8)
    assert os.path.getsize(os.path.join(tmp_out, "universality_sweep.png")) > 1000
    with open(os.path.join(tmp_out, "universality_sweep.json")) as fh:
        saved = json.load(fh)
    assert saved == json.loads(json.dumps(data))
    assert [r["status"] for r in saved["rows"]] == ["verified", "verified"]
    assert saved["rows"][1]["m_p"] > saved["rows"][0]["m_p"]


def test_claims_are_registered_with_quick_sizes():
    ids = [c.id for c in CLAIMS]
    assert ids == ["U-hardmax", "U-softmax", "U-d2", "U-n3"]
    for c in CLAIMS:
        assert c.expected.value == "verified" and c.quick and c.proof == "proofs/universality.md"


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("d,n", [(1, 2), (2, 1)])
def test_issue_instances_verified(target, d, n):
    r = run_universality(d, n, "1", "2", "1/4", target, samples=16)
    assert r.status.value == "verified"
    _checked(r)


def test_d2_n2_gates_on_both_sides_reproduce_fbar():
    """d >= 2 with n = 2 uses the mirrored gate for the bottom input token."""
    d, n, K = 2, 2, 2
    net = build_network(d, n, K, ramp_width(Fraction(2), Fraction(2), d, n, K))
    tgt = build_target("smooth", d, n, Fraction(3), seed=5)
    fbar = quantized_function(tgt, K)
    P = build_prompt(fbar, d, n, K)
    fast, _ = evaluate_cells(net, P)
    for c in range(net.N):
        out = forward_exact(net.model, net.encode_input(_grid_point(c, K, d, n)), net.encode_prompt(P))
        want = [Fraction(v, K) for v in fbar[c]]
        assert [out[s, i].lo for s in range(n) for i in range(d)] == want == fast[c]


def test_softmax_outputs_lie_within_eta_of_fbar():
    """The float forward pass agrees with fbar up to the certified eta (plus float rounding).

    (The generic interval pass is not used here: its exp enclosures of score gaps near 1e9 are
    far too slow.)"""
    from constructions.universality import forward_float
    d, n, K = 2, 1, 3
    net = build_network(d, n, K, ramp_width(Fraction(2), Fraction(2), d, n, K), kind="softmax",
                        temperature=Fraction(1, 64))
    tgt = build_target("relu-net", d, n, Fraction(2), seed=11)
    fbar = quantized_function(tgt, K)
    P = build_prompt(fbar, d, n, K)
    vals, eta = evaluate_cells(net, P)
    assert all(0 < e < Fraction(1, 10 ** 9) for e in eta)
    for c in range(net.N):
        X = _grid_point(c, K, d, n)
        want = [Fraction(v, K) for v in fbar[c]]
        assert vals[c] == want
        g = forward_float(net, P, np.array([[[float(v) for v in row] for row in X]]))
        assert np.allclose(g.reshape(-1), [float(v) for v in want], atol=1e-6)


# =========================================================================== the windowed evaluation

def _checker_cells(net, P, params, method, prompt=None):
    """The trusted checker's evaluation of g on every flat box (its own parse of the network)."""
    from verify.checker import universality as cu
    from verify.checker.questions import parse_question
    from verify.provers.universality import _inputs, universality_question
    inst = cu.instance(parse_question(universality_question(params))[1])
    model, pin, ppr = cu._network(_inputs(net, P, params)["network"]["embedded"], inst)
    rows = [[Fraction(x) for x in r] for r in (P if prompt is None else prompt).tolist()]
    return cu.evaluate_cells(model, pin, ppr, rows, inst, method=method)


def _same_cells(a, b) -> bool:
    """Exactly equal outputs (as the certificate's hash sees them) and radii."""
    from verify.provers.universality import outputs_sha256
    return outputs_sha256(a[0]) == outputs_sha256(b[0]) and a[1] == b[1]


@pytest.mark.parametrize("d,n,K,target", [(1, 2, 5, "relu-net"), (1, 1, 6, "smooth"), (2, 1, 4, "token-mix"),
                                          (2, 2, 2, "smooth"), (2, 2, 3, "relu-net"), (3, 1, 3, "relu-net")])
def test_windowed_evaluation_equals_the_full_one(d, n, K, target):
    net, P, tgt, fbar, params = setup(d, n, "1", "2", "1/2", target, seed=2, K=K)
    full = evaluate_cells(net, P, method="full")
    win = evaluate_cells(net, P, method="window")
    assert _same_cells(full, win)
    assert all(isinstance(x, Fraction) for row in win[0] for x in row)
    assert win[0] == [[Fraction(v, K) for v in row] for row in fbar]
    assert _same_cells(_checker_cells(net, P, params, "full"), win)
    assert _same_cells(_checker_cells(net, P, params, "window"), win)


@settings(max_examples=12, deadline=None)
@given(st.sampled_from([(1, 1, 3), (1, 2, 3), (2, 1, 3), (2, 2, 2)]), st.sampled_from(sorted(TARGETS)),
       st.integers(0, 1000), st.data())
def test_windowed_evaluation_equals_the_full_one_for_any_prompt(shape, target, seed, data):
    """Not only P_f in its sorted windows: any prompt values and any prompt positions (shuffled,
    jittered, colliding) give the same exact outputs with both evaluators, producer and checker;
    the windowed one only needs the facts it establishes (two attention layers after the prefix,
    a scalar tent, one query sign per head on the prompt rows, keys on coordinate 0)."""
    import dataclasses
    d, n, K = shape
    net, P, tgt, fbar, params = setup(d, n, "1", "2", "1", target, seed=seed, K=K)
    m_p = net.m_p
    vals = data.draw(st.lists(st.integers(0, 16), min_size=m_p * d, max_size=m_p * d))
    P2 = np.array([[Fraction(vals[j * d + i], 16) for i in range(d)] for j in range(m_p)], dtype=object)
    perm = data.draw(st.permutations(range(m_p)))
    jit = data.draw(st.lists(st.integers(0, 12), min_size=m_p, max_size=m_p))
    pos = net.pos_prompt.copy()
    for j in range(m_p):
        pos[j, 0] = net.pos_prompt[perm[j], 0] + Fraction(jit[j], 2)
    net2 = dataclasses.replace(net, pos_prompt=pos)
    full = evaluate_cells(net2, P2, method="full")
    win = evaluate_cells(net2, P2, method="window")
    assert _same_cells(full, win)
    assert _same_cells(_checker_cells(net2, P2, params, "window", P2), win)
    assert _same_cells(_checker_cells(net2, P2, params, "full", P2), win)


def test_windowed_evaluation_is_not_used_where_its_facts_fail():
    from verify.checker.numbers import Reject
    from verify.provers.universality import NotCertified
    # softmax: the full evaluation (with its perturbation radius) only
    net, P, tgt, fbar, params = setup(2, 1, "1", "2", "1", "smooth", temperature="1/64", K=3)
    with pytest.raises(NotCertified):
        evaluate_cells(net, P, method="window")
    with pytest.raises(Reject):
        _checker_cells(net, P, params, "window")
    auto = evaluate_cells(net, P)
    assert auto == evaluate_cells(net, P, method="full") and all(e > 0 for e in auto[1])
    # a prompt row whose coordinate 0 is negative gets the other query sign in the gather heads
    net, P, tgt, fbar, params = setup(1, 2, "1", "2", "1", "smooth", K=3)
    pos = net.pos_prompt.copy()
    pos[0, 0] = Fraction(-50)
    import dataclasses
    net2 = dataclasses.replace(net, pos_prompt=pos)
    with pytest.raises(NotCertified):
        evaluate_cells(net2, P, method="window")
    with pytest.raises(Reject):
        _checker_cells(net2, P, params, "window")
    assert _same_cells(evaluate_cells(net2, P), evaluate_cells(net2, P, method="full"))
    assert _same_cells(_checker_cells(net2, P, params, "auto"), evaluate_cells(net2, P, method="full"))


def test_rank_one_float_pass_agrees_with_forward_torch():
    from constructions.universality import forward_float
    from verify.provers.universality import RankOneFloat
    for d, n, K in [(1, 2, 5), (2, 2, 3), (2, 1, 4)]:
        net, P, *_ = setup(d, n, "1", "2", "1/2", "relu-net", seed=1, K=K)
        X = np.random.default_rng(K).random((12, n, d))
        X[:4] = np.floor(X[:4] * K) / K + 1 / K - float(net.w) / 2     # inside the ramps
        assert np.max(np.abs(forward_float(net, P, X) - RankOneFloat(net, P)(X))) < 1e-6


@pytest.mark.slow
def test_d2_n2_at_the_formula_grid_verified_and_checked():
    """Theorem U at d = 2, n = 2, eps = 1/2: K = 16, N = 65,536 cells, m_p = 131,072 (minutes)."""
    r = run_universality(2, 2, "1", "2", "1/2", "relu-net", samples=256)
    rep = r.extra["report"]
    assert r.status.value == "verified"
    assert (rep["K"], rep["m_p"], r.reported["cells"]) == (16, 131072, 65536)
    assert rep["m_p"] == rep["m_p_formula"] == 2 * 16 ** 4
    assert (rep["depth"], rep["heads_per_layer"]) == (4, [1, 1, 2, 1])
    assert r.reported["cells_equal_fbar"] == 65536
    assert rep["measured"]["forward_torch_samples"] > 0
    _checked(r)


def test_windowed_evaluation_equals_the_full_one_for_zero_queries():
    """Queries of sign 0 (attention to the mean of all rows): the gather's max head and the
    lookup head made to query coordinate 1, which is 0 on the input rows after Q2 and, with this
    prompt, on every prompt row."""
    net, P, tgt, fbar, params = setup(2, 2, "1", "2", "1", "smooth", K=2)
    P0 = P.copy()
    P0[:, 1] = Fraction(0)
    G, F = net.model.layers[-2], net.model.layers[-1]
    G.heads[0].W_q[0, 0], G.heads[0].W_q[0, 1] = Fraction(0), Fraction(1)
    F.heads[0].W_q[0, 0], F.heads[0].W_q[0, 1] = Fraction(0), Fraction(1)
    for prompt in (P0, P):          # P: the prompt rows' query signs differ, so no windowed evaluation
        full = evaluate_cells(net, prompt, method="full")
        assert _same_cells(_checker_cells(net, prompt, params, "full", prompt), full)
        assert _same_cells(_checker_cells(net, prompt, params, "auto", prompt), full)
        assert _same_cells(evaluate_cells(net, prompt), full)
    win = evaluate_cells(net, P0, method="window")
    assert _same_cells(win, evaluate_cells(net, P0, method="full"))
    assert _same_cells(_checker_cells(net, P0, params, "window", P0), win)
