"""L4/L5 bounds, the exact LoRA construction and the certified loss lower bound."""
from __future__ import annotations

import copy
import json
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.datasets import l1_dataset, l3_dataset, random_model, random_tokens
from constructions.forward import Iv, forward_torch
from constructions.lora import apply_lora, forward_rational, lora_w2_exact, rank_exact, rref, solve_exact
from constructions.model import InputError, as_float, as_fraction
from verify.checker import check_result
from verify.provers.bounds import bounds_table, generic_exact_dataset, lora_result, run_bounds
from verify.provers.loss_bound import (AssumptionViolated, _HeadData, _minimize, certified_min_loss, head_objective,
                                       loss_bound_result)
from verify.result import Status


def _loss(model, ds, P) -> float:
    tot = 0.0
    for ex in ds.examples:
        out = forward_torch(model, ex.input, P).numpy()
        for t, y in enumerate(ex.output):
            if y is not None:
                tot += float(((out[t] - as_float(np.asarray(y))) ** 2).sum())
    return tot


# --------------------------------------------------------------------------- exact linear algebra

def test_exact_linear_algebra():
    A = as_fraction(np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]]))
    assert rank_exact(A) == 2
    R, piv = rref(A)
    assert piv == [0, 1]
    M = as_fraction(np.array([[2.0, 1.0], [1.0, 3.0]]))
    X = solve_exact(M, as_fraction(np.eye(2)))
    assert np.array_equal(M.dot(X), as_fraction(np.eye(2)))


# --------------------------------------------------------------------------- L5: exact LoRA

@settings(max_examples=10)
@given(seed=st.integers(0, 10_000), d=st.integers(2, 5), N=st.integers(1, 3), m=st.integers(1, 2),
       kind=st.sampled_from(["hardmax", "zero"]))
def test_lora_exact_memorizes(seed, d, N, m, kind):
    r = N * m + 3
    model = random_model(d, heads=1, head_size=2, mlp_width=r, seed=seed, kind="hardmax" if kind == "hardmax" else "softmax",
                         zero_scores=kind == "zero")
    ds = generic_exact_dataset(model, N, m, seed)
    c = lora_w2_exact(model, ds)
    if c.update is None:   # features linearly dependent (e.g. ReLU kills a token): L5 does not apply
        assert c.feature_rank < N * m
        return
    assert c.rank <= min(d, N * m)
    assert c.update.n_parameters == c.rank * (d + r)
    m2 = apply_lora(model, [c.update])
    for ex in ds.examples:
        out = forward_rational(m2, ex.input)
        for t, y in enumerate(ex.output):
            assert all(a == b for a, b in zip(out[t], y))   # exact equality, no tolerance
    res = lora_result(model, ds, "x")          # the same update, re-checked by the trusted checker
    assert res.status == Status.MEMORIZED and check_result(res.to_json())[0]
    assert res.reported["rank"] == c.rank and res.reported["params"] == c.update.n_parameters


def test_forward_rational_matches_torch():
    for kind, zero in (("hardmax", False), ("softmax", True)):
        model = random_model(4, heads=2, head_size=2, mlp_width=8, seed=3, kind=kind, zero_scores=zero)
        rng = np.random.default_rng(0)
        X, P = random_tokens(rng, 3, 4), random_tokens(rng, 2, 4)
        ex = forward_rational(model, X, P)
        fl = forward_torch(model, X, P).numpy()
        assert np.max(np.abs(as_float(ex) - fl)) < 1e-12


def test_lora_on_l1_and_l3_and_tamper():
    model = random_model(6, heads=2, head_size=2, mlp_width=12, seed=1, zero_scores=True)
    for ds, want_rank in ((l1_dataset(model, 1), None), (l3_dataset(model, 1), 1)):
        res = lora_result(model, ds, "x")
        assert res.status == Status.MEMORIZED, res.message
        if want_rank is not None:
            assert res.reported["rank"] == want_rank
        w = json.loads(json.dumps(res.to_json()))
        ok, msg = check_result(w)
        assert ok, msg
        bad = copy.deepcopy(w)
        bad["certificate"]["body"]["B"][0][0] = str(Fraction(bad["certificate"]["body"]["B"][0][0]) + Fraction(1, 1024))
        assert not check_result(bad)[0]
        bad = copy.deepcopy(w)
        bad["reported"]["rank"] += 1
        assert not check_result(bad)[0]
        bad = copy.deepcopy(w)
        bad["inputs"]["dataset"]["embedded"]["examples"][0]["input"][0][0] = "1/3"
        assert not check_result(bad)[0]


def test_lora_not_exact_on_generic_softmax():
    from constructions.lora import NotExact
    model = random_model(4, heads=1, head_size=2, mlp_width=8, seed=0)
    with pytest.raises(NotExact):
        lora_w2_exact(model, l1_dataset(model, 0))
    res = lora_result(model, l1_dataset(model, 0), "x")
    assert res.status == Status.UNKNOWN and "not rational" in res.message


# --------------------------------------------------------------------------- the certified bound

def _closed_form_head(rng, d):
    """Two positions with equal Z: G = min over lambda in [0, 1] of ||dc - lambda dA||^2 / 2."""
    c1, c2, A1, A2 = (np.round(rng.normal(size=d) * 64) / 64 for _ in range(4))
    Z = Fraction(int(rng.integers(1, 5)))
    hd = _HeadData(Z=[Iv(Z), Iv(Z)], A=[[Iv(Fraction(v)) for v in A1], [Iv(Fraction(v)) for v in A2]],
                   c=[[Fraction(v) for v in c1], [Fraction(v) for v in c2]], zero_score=True, Zref=Fraction(3))
    dc, dA = c2 - c1, A2 - A1
    lam = float(np.clip(dc @ dA / (dA @ dA), 0, 1)) if dA @ dA > 0 else 0.0
    true_min = float(((dc - lam * dA) ** 2).sum() / 2)
    return hd, true_min


@settings(max_examples=15)
@given(seed=st.integers(0, 100_000), d=st.integers(1, 5))
def test_interval_minimization_encloses_closed_form(seed, d):
    hd, true_min = _closed_form_head(np.random.default_rng(seed), d)
    bps, lows, lo = _minimize(hd, rtol=1e-3, max_boxes=300)
    assert float(lo) <= true_min + 1e-12                       # rigorous: never above the true minimum
    assert float(lo) >= true_min - 3e-2 * (1 + true_min)      # and close to it (300 boxes)
    # the enclosure contains the pointwise value at a few tau
    for tau in (Fraction(1, 7), Fraction(1, 2), Fraction(5, 6)):
        lam = float(hd.Z[0].lo * (1 - tau) / (hd.Z[0].lo * (1 - tau) + hd.Zref * tau))
        c1, c2 = (np.array([float(v) for v in c]) for c in hd.c)
        A1, A2 = (np.array([float(v.lo) for v in a]) for a in hd.A)
        val = float((((c2 - c1) - lam * (A2 - A1)) ** 2).sum() / 2)
        enc = head_objective(hd, tau, tau)
        assert float(enc.lo) - 1e-12 <= val <= float(enc.hi) + 1e-12


@settings(max_examples=5)
@given(seed=st.integers(0, 1000), heads=st.sampled_from([1, 2]))
def test_bound_below_random_prompts(seed, heads):
    d = 4
    model = random_model(d, heads=heads, head_size=d // heads, mlp_width=8, seed=seed)
    ds = l1_dataset(model, seed)
    cb = certified_min_loss(model, ds)
    assert cb.value >= 0
    res = loss_bound_result(model, ds)
    assert res.status in (Status.VERIFIED, Status.UNKNOWN), res.message
    if res.status == Status.VERIFIED:
        ok, msg = check_result(res.to_json())
        assert ok, msg
    rng = np.random.default_rng(seed)
    for L in (1, 3, 9):
        for scale in (0.5, 4.0):
            assert _loss(model, ds, rng.normal(0, scale, (L, d))) >= float(cb.value)


def test_bound_below_optimized_prompt():
    torch.manual_seed(0)
    model = random_model(4, heads=1, head_size=4, mlp_width=8, seed=2)
    ds = l1_dataset(model, 2)
    cb = certified_min_loss(model, ds)
    assert cb.value > 0
    from verify.experiments.prompt_vs_lora import TorchLayerModel
    tm = TorchLayerModel(model)
    X = torch.as_tensor(np.stack([as_float(ex.input) for ex in ds.examples]))
    Y = torch.as_tensor(np.stack([as_float(ex.output[1]) for ex in ds.examples]))
    for L in (3,):
        P = torch.randn(1, L, 4, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([P], lr=0.05)
        for _ in range(120):
            opt.zero_grad()
            loss = ((tm(X, P.expand(2, L, 4))[:, 1] - Y) ** 2).sum()
            loss.backward()
            opt.step()
        assert float(loss.detach()) >= float(cb.value)


def test_per_length_bound_zero_score():
    model = random_model(4, heads=1, head_size=4, mlp_width=8, seed=0, zero_scores=True)
    ds = l1_dataset(model, 0)
    anyb = certified_min_loss(model, ds)
    rng = np.random.default_rng(0)
    for K in (1, 3):
        cb = certified_min_loss(model, ds, prompt_length=K)
        assert cb.value >= anyb.value
        assert cb.prompt_length == K
        for _ in range(5):
            assert _loss(model, ds, rng.normal(0, 2, (K, 4))) >= float(cb.value)


def test_assumptions_named():
    m = random_model(4, heads=1, head_size=2, mlp_width=8, seed=0, kind="hardmax")
    with pytest.raises(AssumptionViolated, match="softmax"):
        certified_min_loss(m, l1_dataset(random_model(4, heads=1, head_size=2, mlp_width=8, seed=0), 0))
    m = random_model(4, heads=1, head_size=2, mlp_width=8, seed=0)
    ds = l1_dataset(m, 0)
    big = copy.deepcopy(m)
    big.layers[0].W_2 = as_float(big.layers[0].W_2) * 8
    with pytest.raises(AssumptionViolated, match="injective MLP"):
        certified_min_loss(big, ds)
    with pytest.raises(InputError, match="prompt_length"):
        certified_min_loss(m, ds, prompt_length=0)


# --------------------------------------------------------------------------- the table

def test_bounds_table_formulas():
    t = bounds_table(8, 2, 4, 2, 2, 16)
    rows = {r["row"]: r for r in t["rows"]}
    assert rows["L4"]["prompt"]["min_length"] == 8 and rows["L4"]["prompt"]["min_params"] == 64
    assert rows["L5"]["lora"]["rank"] == 8 and rows["L5"]["lora"]["params"] == 8 * (8 + 16)
    assert rows["L3"]["lora"]["params"] == 24
    assert t["crossover"]["N"] is None
    t2 = bounds_table(4, 2, 10, 1, 2, 8)
    assert t2["rows"][1]["lora"]["rank"] is None      # N m = 20 > r = 8
    with pytest.raises(InputError, match="--d"):
        bounds_table(0, 2, 4, 2, 2, 16)


@settings(max_examples=30)
@given(d=st.integers(1, 40), m=st.integers(1, 6), N=st.integers(1, 10), r=st.integers(1, 64))
def test_no_crossover_in_l5_regime(d, m, N, r):
    t = bounds_table(d, m, N, 1, 1, r)
    assert t["crossover"]["N"] is None
    for row in t["scan"]:
        if row["lora_params_upper"] is not None:
            assert row["lora_params_upper"] > row["prompt_params_lower"]


def test_bounds_verify_small(tmp_out):
    res = run_bounds(4, 2, 2, 2, 1, 8, seed=0, verify=True, timeout=20)
    assert res.status == Status.VERIFIED, res.message
    rj = json.loads(json.dumps(res.to_json()))
    ok, msg = check_result(rj)
    assert ok, msg
    assert set(rj["certificate"]["body"]) == {"L4", "L5", "L1", "L3"}
    bad = copy.deepcopy(rj)
    A = bad["certificate"]["body"]["L5"]["hardmax"]["certificate"]["body"]["A"]
    A[0][0] = str(Fraction(A[0][0]) + 1)
    assert not check_result(bad)[0]
    bad = copy.deepcopy(rj)
    bad["reported"]["L4_min_prompt_length"] += 1
    assert not check_result(bad)[0]
    plain = run_bounds(4, 2, 2, 2, 1, 8)
    assert plain.status == Status.UNKNOWN and plain.certificate is None
    assert not check_result(plain.to_json())[0]       # an undecided result claims nothing


def test_cli_bad_input_exit_2():
    from typer.testing import CliRunner

    from verify.cli import app
    r = CliRunner().invoke(app, ["bounds", "--d", "0"])
    assert r.exit_code == 2
    r = CliRunner().invoke(app, ["bounds", "--model", "/nonexistent.json"])
    assert r.exit_code == 2
